//! Adapters for trove-rs ports: infrastructure stores (SQLite, PostgreSQL), local-process compute, directory
//! volumes, filesystem backup storage and authenticators.
#![forbid(unsafe_code)]

pub mod auth;
#[cfg(feature = "local")]
pub mod local;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
