//! conductor (to be written).
