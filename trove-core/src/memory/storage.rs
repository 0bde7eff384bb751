//! In-memory storage (to be written).
