//! The configuration part of the strategy suite (strategies offering [`crate::ports::ConfigurationFacet`]).

use serde_json::{json, Map};

use super::DynStrategy;

/// A parameter name that cannot be rendered safely is a 400; applying the set in force again (none, after the
/// suite's prepare) changes nothing and needs no restart.
pub async fn overrides_are_checked_and_idempotent(strategy: &DynStrategy) {
    let conf = strategy
        .configuration()
        .expect("the strategy offers the configuration facet");
    let mut bad = Map::new();
    bad.insert("max_connections\nevil".into(), json!(5));
    let e = conf
        .apply_overrides(&bad)
        .await
        .expect_err("a parameter name with a line break");
    assert_eq!(e.fault().status, 400, "{e}");
    let mut nested = Map::new();
    nested.insert("timeout".into(), json!({"a": 1}));
    let e = conf
        .apply_overrides(&nested)
        .await
        .expect_err("a value that is not a scalar");
    assert_eq!(e.fault().status, 400, "{e}");
    let restart = conf
        .apply_overrides(&Map::new())
        .await
        .expect("apply the overrides in force");
    assert!(
        !restart,
        "applying the set in force needs no restart ({})",
        strategy.manager()
    );
}

/// Every check of the configuration part.
pub async fn run(strategy: &DynStrategy) {
    overrides_are_checked_and_idempotent(strategy).await;
}
