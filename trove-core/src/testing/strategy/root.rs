//! The root part of the strategy suite (strategies offering [`crate::ports::RootFacet`]).

use super::DynStrategy;
use crate::model::Secret;

/// Root: enable with a generated or given password, disable (twice: it is idempotent).
pub async fn root_enable_disable(strategy: &DynStrategy) {
    let root = strategy.root().expect("the strategy offers the root facet");
    let generated = root.enable_root(None).await.expect("enable_root");
    assert!(
        !generated.is_empty(),
        "enable_root without a password generates one"
    );
    let given = root
        .enable_root(Some(Secret::new("Conformance-root1")))
        .await
        .expect("enable_root again");
    assert_eq!(
        given.expose(),
        "Conformance-root1",
        "enable_root uses the given password"
    );
    root.disable_root().await.expect("disable_root");
    root.disable_root().await.expect("disable_root again");
}

/// Every check of the root part.
pub async fn run(strategy: &DynStrategy) {
    root_enable_disable(strategy).await;
}
