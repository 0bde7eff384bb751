#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod error;
pub mod model;
pub mod ports;
pub mod rpc;
pub mod state;

pub use config::CoreConfig;
pub use error::{Error, Fault, Result};
