//! guest_agent (to be written).
