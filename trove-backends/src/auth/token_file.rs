//! A static token file: one token per line, mapped to a project, a user and roles.
//!
//! ```text
//! # token              project     user     roles (comma separated, optional)
//! 0f1e2d3c4b5a69788796  projA       alice    admin,member
//! a1b2c3d4e5f60718293a  projB       bob
//! ```
//!
//! Blank lines and lines starting with `#` are ignored; fields are separated by whitespace. A token may appear
//! only once. Keep the file readable by the service only: it holds credentials.

use std::path::Path;

use trove_core::error::{Error, Result};
use trove_core::memory::StaticTokens;
use trove_core::ports::RequestContext;

/// Parses the text of a token file into `(token, context)` pairs.
pub fn parse_token_file(text: &str) -> Result<Vec<(String, RequestContext)>> {
    let mut out: Vec<(String, RequestContext)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !(3..=4).contains(&fields.len()) {
            return Err(Error::bad_request(format!(
                "token file line {}: expected 'TOKEN PROJECT USER [ROLE,ROLE...]', found {} fields",
                n + 1,
                fields.len()
            )));
        }
        let token = fields[0].to_string();
        if out.iter().any(|(t, _)| *t == token) {
            return Err(Error::bad_request(format!(
                "token file line {}: the token appears twice",
                n + 1
            )));
        }
        let roles = fields
            .get(3)
            .map(|r| {
                r.split(',')
                    .filter(|r| !r.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            token,
            RequestContext {
                tenant_id: fields[1].into(),
                user_id: fields[2].into(),
                roles,
            },
        ));
    }
    Ok(out)
}

/// Loads a token file into a [`StaticTokens`] authenticator.
pub fn load_token_file(path: &Path) -> Result<StaticTokens> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::backend(
            "token-file",
            format!("cannot read {}: {e}", path.display()),
            false,
        )
    })?;
    let tokens = StaticTokens::new();
    for (t, ctx) in parse_token_file(&text)? {
        tokens.insert(t, ctx);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use trove_core::testing::auth::{run_all, AuthCase};

    #[test]
    fn parses_the_documented_format() {
        let v =
            parse_token_file("# c\n\ntok1 projA alice admin,member\n  tok2\tprojB bob\n").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].1.roles, vec!["admin", "member"]);
        assert!(v[0].1.is_admin());
        assert_eq!(v[1].1.tenant_id, "projB");
        assert!(v[1].1.roles.is_empty());
        assert!(parse_token_file("tok1 projA").is_err());
        assert!(parse_token_file("t p u r extra").is_err());
        assert!(parse_token_file("t p u\nt q v").is_err());
    }

    #[tokio::test]
    async fn loaded_file_passes_the_authenticator_suite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "tok-a projA alice member\n").unwrap();
        let auth = Arc::new(load_token_file(&path).unwrap());
        let a = auth.clone();
        let revoke = move || a.revoke("tok-a");
        run_all(
            auth,
            AuthCase {
                valid_token: "tok-a",
                tenant: "projA",
                revoke: Some((&revoke, std::time::Duration::ZERO)),
            },
        )
        .await;
        assert!(load_token_file(&dir.path().join("missing")).is_err());
    }
}
