#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod control_plane;
pub mod http;

pub use control_plane::{ControlPlane, ControlPlaneBuilder, InMemoryParts};
pub use trove_core as core;
pub use trove_backends as backends;
