//! The ControlPlane builder (to be written).
