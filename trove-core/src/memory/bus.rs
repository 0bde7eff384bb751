//! In-memory bus (to be written).
