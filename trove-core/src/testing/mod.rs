//! Conformance suites, one per port. Every implementation (in-memory ones included) runs its suite from its own
//! tests; a backend is done when it passes, not when it compiles.

pub mod store;
