//! In-memory auth (to be written).
