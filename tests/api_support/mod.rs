//! What the root crate's integration tests share, once: processes (Python virtual environments with the real
//! OpenStack client and a real Keystone, the all-in-one and example binaries), engine tests (the cross-process
//! lock, the embedded deployment on real engines, finding and killing engine processes), in-memory fixtures
//! (contexts, catalogue, the hand-driven control plane on a manual clock), HTTP clients of an API server (HTTPS
//! too, with TLS material the `openssl` command makes), and bounded waits for an observed condition.
//!
//! Each test binary declares `mod api_support;` and uses a subset; everything is re-exported here.
#![allow(dead_code, unused_imports)]

pub mod clients;
pub mod engines;
pub mod fixtures;
pub mod http;
pub mod leaks;
/// A fresh PostgreSQL database per test: the store tests' helper, shared as it is.
#[path = "../../trove-backends/tests/store_support/mod.rs"]
pub mod pg;
pub mod processes;
pub mod tls;
pub mod waits;

pub use clients::*;
pub use engines::*;
pub use fixtures::*;
pub use http::*;
pub use leaks::*;
pub use pg::{with_fresh_pg, FreshPg};
pub use processes::*;
pub use tls::*;
pub use waits::*;
