//! The databases part of the strategy suite (strategies offering [`crate::ports::DatabasesFacet`]).

use super::{db, db_names, offers, DynStrategy, PREPARED_USER};
use crate::model::Facet;
use crate::ports::{DatabasesFacet, UserInfo};

fn facet(strategy: &DynStrategy) -> &dyn DatabasesFacet {
    strategy
        .databases()
        .expect("the strategy offers the databases facet")
}

/// Databases: create, list, refuse duplicates, delete, and 404 for a missing one.
pub async fn databases_lifecycle(strategy: &DynStrategy) {
    let dbs = facet(strategy);
    dbs.create_databases(&[db("conf_db2"), db("conf_db3")])
        .await
        .expect("create_databases");
    let names = db_names(strategy).await;
    for n in ["conf_db2", "conf_db3"] {
        assert!(
            names.contains(&n.to_string()),
            "created database {n} is listed: {names:?}"
        );
    }
    let e = dbs
        .create_databases(&[db("conf_db2")])
        .await
        .expect_err("a duplicate database is refused");
    assert_eq!(e.fault().status, 400, "duplicate database: {e}");
    dbs.delete_database("conf_db3")
        .await
        .expect("delete_database");
    assert!(
        !db_names(strategy).await.contains(&"conf_db3".to_string()),
        "deleted database is not listed"
    );
    let e = dbs
        .delete_database("conf_db_missing")
        .await
        .expect_err("deleting a missing database fails");
    assert_eq!(e.fault().status, 404, "missing database: {e}");
}

/// Grants (with the users facet): grant, list, revoke; unknown user or database is a 404.
pub async fn grant_and_revoke(strategy: &DynStrategy) {
    let dbs = facet(strategy);
    let users = strategy.users().expect("the users facet");
    dbs.create_databases(&[db("conf_db4")])
        .await
        .expect("create_databases");
    dbs.grant_access(PREPARED_USER, "%", &["conf_db4".to_string()])
        .await
        .expect("grant_access");
    let grants = |users: Vec<UserInfo>| {
        users
            .into_iter()
            .find(|u| u.name == PREPARED_USER)
            .map(|u| u.databases)
            .unwrap_or_default()
    };
    let g = grants(users.list_users().await.expect("list_users"));
    assert!(
        g.contains(&"conf_db4".to_string()),
        "granted database is listed: {g:?}"
    );
    dbs.revoke_access(PREPARED_USER, "%", "conf_db4")
        .await
        .expect("revoke_access");
    let g = grants(users.list_users().await.expect("list_users"));
    assert!(
        !g.contains(&"conf_db4".to_string()),
        "revoked database is not listed: {g:?}"
    );
    let e = dbs
        .grant_access("conf_user_missing", "%", &["conf_db4".to_string()])
        .await
        .expect_err("granting to a missing user fails");
    assert_eq!(e.fault().status, 404, "missing user: {e}");
    let e = dbs
        .grant_access(PREPARED_USER, "%", &["conf_db_missing".to_string()])
        .await
        .expect_err("granting a missing database fails");
    assert_eq!(e.fault().status, 404, "missing database: {e}");
    dbs.delete_database("conf_db4")
        .await
        .expect("delete_database");
}

/// Every check of the databases part (grants only with the users facet).
pub async fn run(strategy: &DynStrategy) {
    databases_lifecycle(strategy).await;
    if offers(strategy, Facet::Users) {
        grant_and_revoke(strategy).await;
    }
}
