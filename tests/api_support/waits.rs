//! Bounded waits for an observed condition (never a sleep followed by an assertion): the cross-crate ones of
//! `trove_core::testing::fixtures`.

pub use trove_core::testing::fixtures::{eventually, idle_healthy, wait_view};
