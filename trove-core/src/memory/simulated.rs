//! In-memory simulated (to be written).
