//! Adapters for trove-rs ports: infrastructure stores (SQLite, PostgreSQL), local-process compute, directory
//! volumes, filesystem and object-store (Swift, S3) backup storage and authenticators.
#![forbid(unsafe_code)]

pub mod auth;
#[cfg(feature = "local")]
pub mod local;
#[cfg(feature = "objstore")]
pub mod objstore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
