//! In-memory clock (to be written).
