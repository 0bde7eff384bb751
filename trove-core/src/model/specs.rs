use serde::{Deserialize, Serialize};

use super::{Manager, Secret};
use crate::error::{Error, Result};

/// A database to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSpec {
    /// Database name.
    pub name: String,
    /// Character set (MySQL family; PostgreSQL encoding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub character_set: Option<String>,
    /// Collation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collate: Option<String>,
}

/// A user to create, or whose password to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    /// User name.
    pub name: String,
    /// Password.
    pub password: Secret,
    /// Host pattern (MySQL family); `%` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Databases to grant access to.
    #[serde(default)]
    pub databases: Vec<String>,
}

/// Changes to a user's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserUpdate {
    /// New name.
    pub name: Option<String>,
    /// New password.
    pub password: Option<Secret>,
    /// New host.
    pub host: Option<String>,
}

fn check_chars(kind: &str, name: &str, max: usize, extra: &[char]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::bad_request(format!(
            "The {kind} name must not be empty."
        )));
    }
    if name.chars().count() > max {
        return Err(Error::bad_request(format!(
            "The {kind} name '{name}' is longer than {max} characters."
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || extra.contains(c)))
    {
        return Err(Error::bad_request(format!(
            "The {kind} name '{}' contains the character {c:?}, which is not allowed; use letters, digits and '_'{}.",
            name.escape_default(),
            if extra.is_empty() { String::new() } else { format!(" or {extra:?}") }
        )));
    }
    Ok(())
}

/// Validates a database name for an engine. Names that could smuggle SQL are refused with a 400 before they
/// reach a guest; strategies quote identifiers as well.
pub fn validate_database_name(manager: Manager, name: &str) -> Result<()> {
    match manager {
        Manager::Mysql | Manager::Mariadb => check_chars("database", name, 64, &['-', '$']),
        Manager::Postgresql => {
            check_chars("database", name, 63, &['-', '$'])?;
            if name.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(Error::bad_request(format!(
                    "The database name '{name}' must not start with a digit."
                )));
            }
            Ok(())
        }
        Manager::Redis | Manager::Mongodb | Manager::Cassandra => {
            check_chars("database", name, 48, &['-'])
        }
    }
}

/// Validates a user name for an engine (see [`validate_database_name`]).
pub fn validate_user_name(manager: Manager, name: &str) -> Result<()> {
    match manager {
        Manager::Mysql | Manager::Mariadb => check_chars("user", name, 80, &['-', '.']),
        Manager::Postgresql => {
            check_chars("user", name, 63, &['-', '.'])?;
            if name.starts_with("pg_") {
                return Err(Error::bad_request(format!(
                    "The user name '{name}' is reserved (pg_ prefix)."
                )));
            }
            Ok(())
        }
        Manager::Redis | Manager::Mongodb | Manager::Cassandra => {
            check_chars("user", name, 64, &['-', '.'])
        }
    }
}

/// Validates a MySQL host pattern (upstream `^[%]?[\w(-).]*[%]?$`).
pub fn validate_host(host: &str) -> Result<()> {
    let inner = host.strip_prefix('%').unwrap_or(host);
    let inner = inner.strip_suffix('%').unwrap_or(inner);
    if host.len() > 255
        || !inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.()".contains(c))
    {
        return Err(Error::bad_request(format!(
            "The host '{}' is not a valid host pattern (letters, digits, '.', '-', '_' and a leading or trailing '%').",
            host.escape_default()
        )));
    }
    Ok(())
}

/// Validates a password: non-empty, at most 255 characters, no NUL.
pub fn validate_password(password: &Secret) -> Result<()> {
    let p = password.expose();
    if p.is_empty() || p.chars().count() > 255 || p.contains('\0') {
        return Err(Error::bad_request(
            "A password must be 1 to 255 characters long and contain no NUL.",
        ));
    }
    Ok(())
}

/// Validates an instance name (upstream: non-empty, at most 255 characters, contains an alphanumeric).
pub fn validate_instance_name(name: &str) -> Result<()> {
    if name.trim().is_empty()
        || name.chars().count() > 255
        || !name.chars().any(char::is_alphanumeric)
    {
        return Err(Error::validation(format!(
            "instance name '{}' must be 1 to 255 characters and contain a letter or digit",
            name.escape_default()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_attempts_are_bad_requests() {
        for m in Manager::ALL {
            for bad in ["a;drop", "x' OR '1", "a b", "`x`", "\"x\"", "", "a\0b"] {
                let e = validate_database_name(m, bad).unwrap_err();
                assert_eq!(e.fault().status, 400, "{m} {bad:?}");
                assert!(validate_user_name(m, bad).is_err());
            }
        }
        assert!(validate_database_name(Manager::Mysql, "my_db-1").is_ok());
        assert!(validate_user_name(Manager::Postgresql, "bob").is_ok());
        assert!(validate_user_name(Manager::Postgresql, "pg_x").is_err());
    }

    #[test]
    fn host_patterns() {
        assert!(validate_host("%").is_ok());
        assert!(validate_host("10.0.%").is_ok());
        assert!(validate_host("a'b").is_err());
    }
}
