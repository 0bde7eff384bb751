#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod api;
pub mod conductor;
pub mod config;
pub mod error;
pub mod guest_agent;
pub mod guest_log;
pub mod health;
pub mod manage;
pub mod memory;
pub mod model;
pub mod policy;
pub mod ports;
pub mod rpc;
pub mod seal;
pub mod state;
pub mod taskmanager;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::CoreConfig;
pub use error::{Error, Fault, Result};
