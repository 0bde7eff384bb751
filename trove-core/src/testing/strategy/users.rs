//! The users part of the strategy suite (strategies offering [`crate::ports::UsersFacet`]).

use super::{offers, DynStrategy, PREPARED_DB};
use crate::model::{Facet, Secret, UserSpec, UserUpdate};
use crate::ports::UsersFacet;

fn facet(strategy: &DynStrategy) -> &dyn UsersFacet {
    strategy
        .users()
        .expect("the strategy offers the users facet")
}

async fn names(users: &dyn UsersFacet) -> Vec<String> {
    users
        .list_users()
        .await
        .expect("list_users")
        .into_iter()
        .map(|u| u.name)
        .collect()
}

/// Users: create, list with host and databases, refuse duplicates, change password, rename, delete, 404s.
pub async fn users_lifecycle(strategy: &DynStrategy) {
    let users = facet(strategy);
    let with_dbs = offers(strategy, Facet::Databases);
    let user = UserSpec {
        name: "conf_user2".into(),
        password: Secret::new("Conformance-pw2"),
        host: None,
        databases: if with_dbs {
            vec![PREPARED_DB.into()]
        } else {
            vec![]
        },
    };
    users
        .create_users(std::slice::from_ref(&user))
        .await
        .expect("create_users");
    let listed = users.list_users().await.expect("list_users");
    let u = listed
        .iter()
        .find(|u| u.name == "conf_user2")
        .expect("created user is listed");
    assert_eq!(u.host, "%", "a user created without host has host %");
    if with_dbs {
        assert!(
            u.databases.contains(&PREPARED_DB.to_string()),
            "the user's grants are listed: {u:?}"
        );
    }
    let e = users
        .create_users(std::slice::from_ref(&user))
        .await
        .expect_err("a duplicate user is refused");
    assert_eq!(e.fault().status, 400, "duplicate user: {e}");
    let changed = UserSpec {
        password: Secret::new("Conformance-pw3"),
        ..user.clone()
    };
    users
        .change_passwords(&[changed])
        .await
        .expect("change_passwords");
    let rename = UserUpdate {
        name: Some("conf_user3".into()),
        ..UserUpdate::default()
    };
    users
        .update_user("conf_user2", "%", &rename)
        .await
        .expect("update_user");
    let n = names(users).await;
    assert!(
        n.contains(&"conf_user3".to_string()) && !n.contains(&"conf_user2".to_string()),
        "{n:?}"
    );
    users
        .delete_user("conf_user3", "%")
        .await
        .expect("delete_user");
    assert!(
        !names(users).await.contains(&"conf_user3".to_string()),
        "deleted user is not listed"
    );
    let e = users
        .delete_user("conf_user_missing", "%")
        .await
        .expect_err("deleting a missing user fails");
    assert_eq!(e.fault().status, 404, "missing user: {e}");
    let missing = UserSpec {
        name: "conf_user_missing".into(),
        ..user
    };
    let e = users
        .change_passwords(&[missing])
        .await
        .expect_err("changing a missing user's password fails");
    assert_eq!(e.fault().status, 404, "missing user: {e}");
}

/// Without the databases facet, a user with databases is refused (422).
pub async fn users_without_databases_facet_have_none(strategy: &DynStrategy) {
    if offers(strategy, Facet::Databases) {
        return;
    }
    let e = facet(strategy)
        .create_users(&[UserSpec {
            name: "conf_user4".into(),
            password: Secret::new("Conformance-pw4"),
            host: None,
            databases: vec!["conf_db_x".into()],
        }])
        .await
        .expect_err("a user with databases on an engine without databases");
    assert_eq!(e.fault().status, 422, "{e}");
}

/// Every check of the users part.
pub async fn run(strategy: &DynStrategy) {
    users_lifecycle(strategy).await;
    users_without_databases_facet_have_none(strategy).await;
}
