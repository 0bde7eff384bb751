#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod control_plane;
#[cfg(all(feature = "engines", any(feature = "sqlite", feature = "postgres")))]
pub mod embedded;
pub mod env_overrides;
pub mod http;
pub mod secrets;
pub mod serve;
#[cfg(all(feature = "amqp", feature = "engines", feature = "postgres"))]
pub mod service_config;

pub use control_plane::{load_policy_file, ControlPlane, ControlPlaneBuilder, InMemoryParts};
pub use trove_backends as backends;
pub use trove_core as core;
