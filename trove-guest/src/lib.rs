//! Guest agent strategies for real engines (to be written).
