//! In-memory compute (to be written).
