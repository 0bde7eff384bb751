//! Conformance suite for [`crate::ports::Authenticator`].

use std::time::Duration;

use crate::ports::DynAuthenticator;

/// What the suite needs to know about the authenticator under test.
pub struct AuthCase<'a> {
    /// A token the authenticator accepts.
    pub valid_token: &'a str,
    /// The project (tenant) of that token.
    pub tenant: &'a str,
    /// Revokes `valid_token` (where the implementation can), with the cache lifetime after which it must stop
    /// working.
    pub revoke: Option<(&'a (dyn Fn() + Sync), Duration)>,
}

/// A valid token for its own tenant gives that tenant's context.
pub async fn valid_token_is_accepted(auth: &DynAuthenticator, case: &AuthCase<'_>) {
    let ctx = auth
        .authenticate(Some(case.valid_token), case.tenant)
        .await
        .expect("a valid token is accepted");
    assert_eq!(
        ctx.tenant_id, case.tenant,
        "the context names the token's project"
    );
    assert!(!ctx.user_id.is_empty(), "the context names a user");
}

/// A missing or unknown token is a 401.
pub async fn bad_tokens_are_unauthorized(auth: &DynAuthenticator, case: &AuthCase<'_>) {
    for token in [None, Some(""), Some("conformance-not-a-token")] {
        let e = auth
            .authenticate(token, case.tenant)
            .await
            .expect_err("a bad token is refused");
        assert_eq!(
            e.fault().status,
            401,
            "token {token:?} must be a 401, got {e}"
        );
    }
}

/// A valid token used on another tenant's URL is a 403.
pub async fn other_tenant_is_forbidden(auth: &DynAuthenticator, case: &AuthCase<'_>) {
    let other = format!("{}-other", case.tenant);
    let e = auth
        .authenticate(Some(case.valid_token), &other)
        .await
        .expect_err("another tenant's URL is refused");
    assert_eq!(
        e.fault().status,
        403,
        "a foreign tenant must be a 403, got {e}"
    );
}

/// A revoked token stops working within the cache lifetime.
pub async fn revoked_token_stops_working(auth: &DynAuthenticator, case: &AuthCase<'_>) {
    let Some((revoke, lifetime)) = case.revoke else {
        panic!("revoked_token_stops_working needs AuthCase::revoke");
    };
    revoke();
    let deadline = std::time::Instant::now() + lifetime + Duration::from_secs(1);
    loop {
        match auth.authenticate(Some(case.valid_token), case.tenant).await {
            Err(e) if e.fault().status == 401 => return,
            Err(e) => panic!("a revoked token must be a 401, got {e}"),
            Ok(_) if std::time::Instant::now() > deadline => {
                panic!("a revoked token still works after the cache lifetime {lifetime:?}")
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs every check of the Authenticator contract (revocation last, when the case can revoke).
pub async fn run_all(auth: DynAuthenticator, case: AuthCase<'_>) {
    valid_token_is_accepted(&auth, &case).await;
    bad_tokens_are_unauthorized(&auth, &case).await;
    other_tenant_is_forbidden(&auth, &case).await;
    if case.revoke.is_some() {
        revoked_token_stops_working(&auth, &case).await;
    }
}

/// The no-authentication mode: any token or none is accepted for the URL's tenant, with the configured roles.
pub async fn run_no_auth(auth: DynAuthenticator, expect_admin: bool) {
    for token in [None, Some(""), Some("anything")] {
        let ctx = auth
            .authenticate(token, "conformance-tenant")
            .await
            .expect("any token is accepted");
        assert_eq!(
            ctx.tenant_id, "conformance-tenant",
            "the tenant is the URL's"
        );
        assert_eq!(ctx.is_admin(), expect_admin, "roles as configured");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{NoAuth, StaticTokens};
    use crate::ports::RequestContext;
    use std::sync::Arc;

    #[tokio::test]
    async fn static_tokens_pass_the_suite() {
        let auth = Arc::new(StaticTokens::new().with("tok-1", RequestContext::tenant("p1")));
        let a = auth.clone();
        let revoke = move || a.revoke("tok-1");
        run_all(
            auth,
            AuthCase {
                valid_token: "tok-1",
                tenant: "p1",
                revoke: Some((&revoke, Duration::ZERO)),
            },
        )
        .await;
    }

    #[tokio::test]
    async fn no_auth_passes_its_suite() {
        run_no_auth(Arc::new(NoAuth::new()), false).await;
        run_no_auth(Arc::new(NoAuth::admin()), true).await;
    }
}
