//! In-memory store (to be written).
