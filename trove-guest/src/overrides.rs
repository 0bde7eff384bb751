//! Applying configuration-group overrides to a running engine (`apply_overrides`).
//!
//! Every engine keeps the overrides in its guest state and renders them into its config file first, so a restart
//! always runs the new values. Then each *changed* parameter (set, changed or removed compared with the overrides
//! applied before) is brought into effect live where both the shipped parameter rules and the engine allow it:
//!
//! | engine | live change | a restart is needed when |
//! |---|---|---|
//! | MariaDB | `SET GLOBAL name = value` (`= DEFAULT` or the rendered base value on removal) | the rules say `restart_required`, or the variable is read-only (error 1238) |
//! | PostgreSQL | the rendered file is reloaded (`pg_reload_conf()`; waits until the reload is seen) | the rules say `restart_required`, or `pg_settings.context` is `postmaster`/`internal` |
//! | Redis | `CONFIG SET name value` (the rendered base value or the engine's default on removal) | the rules say `restart_required`, the default of a removed key is unknown, or the key is immutable |
//!
//! The answer is `true` while some changed parameter waits for a restart. An engine that does not answer is not
//! changed live: the rendered file takes effect at its next start, so the answer is `true`. Parameters waiting
//! for a restart are kept in `<server_dir>/guest/overrides-pending.json` with the pid of the engine process
//! they wait on, so a repeated request (a task manager resuming after a crash finds nothing changed) still answers
//! `true` until the engine was started again.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::mysql::{MySqlConnection, MySqlDatabaseError};
use sqlx::postgres::PgConnection;
use sqlx::Row;
use trove_core::model::Manager;
use trove_core::{Error, Result};

use crate::base::Base;
use crate::common::{check_override_key, override_value};

/// MariaDB error: the variable is read-only (set only at startup).
const ER_INCORRECT_GLOBAL_LOCAL_VAR: u16 = 1238;

/// Redis defaults (compiled into the server) of parameters the rendered base config does not set. `maxclients`
/// is not here: the server lowers its default to what its file limit allows at start.
const REDIS_DEFAULTS: &[(&str, &str)] = &[
    ("timeout", "0"),
    ("slowlog-log-slower-than", "10000"),
    ("slowlog-max-len", "128"),
    ("appendfsync", "everysec"),
];

/// Validates every key and value of an override set.
pub(crate) fn validate(overrides: &Map<String, Value>) -> Result<()> {
    for (k, v) in overrides {
        check_override_key(k)?;
        override_value(k, v)?;
    }
    Ok(())
}

/// Validates `overrides`, stores them in the guest state (the engine's config is rendered from it) and answers
/// the keys that changed.
pub(crate) fn begin(base: &Base, overrides: &Map<String, Value>) -> Result<Vec<String>> {
    validate(overrides)?;
    let old = base.layout.state()?.overrides;
    base.layout
        .update_state(|s| s.overrides = overrides.clone())?;
    Ok(changed_keys(&old, overrides))
}

/// Parameters waiting for a restart of one engine process.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Pending {
    pid: Option<u32>,
    keys: BTreeSet<String>,
}

fn pending_path(base: &Base) -> PathBuf {
    base.layout.guest_dir.join("overrides-pending.json")
}

/// Records `restart_keys` as waiting for a restart of the current engine process and answers whether any
/// parameter waits (those recorded for an earlier process took effect when it was started again).
pub(crate) fn finish(base: &Base, restart_keys: Vec<String>) -> Result<bool> {
    let path = pending_path(base);
    let pid = base.layout.state()?.pid;
    let mut pending: Pending = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if pending.pid != pid {
        pending = Pending {
            pid,
            keys: BTreeSet::new(),
        };
    }
    pending.keys.extend(restart_keys);
    let text = serde_json::to_vec(&pending).map_err(|e| {
        Error::backend(
            "guest",
            format!("encoding the pending parameters failed: {e}"),
            false,
        )
    })?;
    std::fs::write(&path, text).map_err(|e| {
        Error::backend(
            "guest",
            format!("writing {} failed: {e}", path.display()),
            false,
        )
    })?;
    Ok(!pending.keys.is_empty())
}

/// Keys whose value differs between two override sets (set, changed or removed), sorted.
pub(crate) fn changed_keys(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<String> {
    old.keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Whether the rules shipped for `manager` mark `key` as needing a restart.
pub(crate) fn rules_need_restart(manager: Manager, key: &str) -> bool {
    let Some(text) = trove_core::manage::default_validation_rules(manager) else {
        return false;
    };
    trove_core::manage::parse_validation_rules(text, uuid::Uuid::nil())
        .map(|rules| {
            rules
                .iter()
                .any(|r| r.restart_required && norm(&r.name) == norm(key))
        })
        .unwrap_or(false)
}

fn norm(key: &str) -> String {
    key.to_ascii_lowercase().replace('-', "_")
}

/// The last value a rendered config text gives `key` (`key = value` or `key value` lines, quotes removed;
/// dashes and underscores in names are the same).
pub(crate) fn rendered_value(text: &str, key: &str) -> Option<String> {
    let want = norm(key);
    text.lines().rev().find_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            return None;
        }
        let (k, v) = match line.split_once('=') {
            Some((k, v)) if !k.trim().contains(' ') => (k.trim(), v.trim()),
            _ => line
                .split_once(char::is_whitespace)
                .map(|(k, v)| (k, v.trim()))?,
        };
        (norm(k) == want).then(|| v.trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

/// A MariaDB value expression: numbers (with a K/M/G suffix turned into bytes) bare, anything else quoted.
fn mysql_value(v: &str) -> String {
    if v.parse::<i64>().is_ok() || v.parse::<u64>().is_ok() || v.parse::<f64>().is_ok() {
        return v.to_string();
    }
    let (num, mult) = match v.char_indices().last() {
        Some((i, c)) => match c.to_ascii_uppercase() {
            'K' => (&v[..i], 1u64 << 10),
            'M' => (&v[..i], 1 << 20),
            'G' => (&v[..i], 1 << 30),
            _ => ("", 0),
        },
        None => ("", 0),
    };
    if let Some(n) = num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)) {
        return n.to_string();
    }
    // Values were checked by `override_value`: no quotes, backslashes or control characters.
    format!("'{v}'")
}

/// MariaDB: sets each changed variable live; `cnf` is the config text rendered with the new overrides.
pub(crate) async fn mysql_live(
    conn: &mut MySqlConnection,
    cnf: &str,
    changed: &[String],
) -> Result<Vec<String>> {
    let mut restart = Vec::new();
    for key in changed {
        let var = key.replace('-', "_");
        if rules_need_restart(Manager::Mariadb, key)
            || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            restart.push(key.clone());
            continue;
        }
        let value =
            rendered_value(cnf, key).map_or_else(|| "DEFAULT".to_string(), |v| mysql_value(&v));
        let sql = format!("SET GLOBAL {var} = {value}");
        match sqlx::Executor::execute(&mut *conn, sql.as_str()).await {
            Ok(_) => tracing::info!(parameter = %var, "configuration parameter applied live"),
            Err(sqlx::Error::Database(e))
                if e.try_downcast_ref::<MySqlDatabaseError>()
                    .is_some_and(|m| m.number() == ER_INCORRECT_GLOBAL_LOCAL_VAR) =>
            {
                restart.push(key.clone());
            }
            Err(e) => {
                return Err(Error::backend(
                    "mysql",
                    format!("the configuration parameter '{var}' could not be applied: {e}"),
                    false,
                ))
            }
        }
    }
    Ok(restart)
}

/// PostgreSQL: reloads the (already rendered) config file and waits until this session has seen the reload;
/// a restart is needed when a changed parameter can only be set at server start.
pub(crate) async fn postgres_live(
    conn: &mut PgConnection,
    changed: &[String],
) -> Result<Vec<String>> {
    let err = |e: sqlx::Error| {
        Error::backend(
            "postgresql",
            format!("reloading the configuration failed: {e}"),
            true,
        )
    };
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let before: chrono::DateTime<chrono::Utc> = sqlx::query("SELECT pg_conf_load_time()")
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(err)?;
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut *conn)
        .await
        .map_err(err)?;
    // Each statement lets the session process a pending reload; its load time moves once the postmaster (which
    // forks new sessions with the new values) has re-read the file.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now: chrono::DateTime<chrono::Utc> = sqlx::query("SELECT pg_conf_load_time()")
            .fetch_one(&mut *conn)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(err)?;
        if now > before {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::backend(
                "postgresql",
                "the engine did not reload its configuration in time",
                true,
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut restart = Vec::new();
    for key in changed {
        if rules_need_restart(Manager::Postgresql, key) {
            restart.push(key.clone());
            continue;
        }
        let context: Option<String> =
            sqlx::query("SELECT context FROM pg_settings WHERE lower(name) = lower($1)")
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(err)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(err)?;
        match context.as_deref() {
            Some("postmaster") | Some("internal") => restart.push(key.clone()),
            Some(_) => tracing::info!(parameter = %key, "configuration parameter applied live"),
            // Not a setting the server knows (yet): it can only be picked up at start.
            None => restart.push(key.clone()),
        }
    }
    Ok(restart)
}

/// Redis: `CONFIG SET` of each changed parameter; `conf` is the config text rendered with the new overrides.
pub(crate) async fn redis_live(
    conn: &mut redis::aio::MultiplexedConnection,
    conf: &str,
    changed: &[String],
) -> Result<Vec<String>> {
    let mut restart = Vec::new();
    for key in changed {
        if rules_need_restart(Manager::Redis, key) {
            restart.push(key.clone());
            continue;
        }
        let value = rendered_value(conf, key).or_else(|| {
            REDIS_DEFAULTS
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.to_string())
        });
        let Some(value) = value else {
            restart.push(key.clone());
            continue;
        };
        let r: redis::RedisResult<redis::Value> = redis::cmd("CONFIG")
            .arg("SET")
            .arg(key)
            .arg(&value)
            .query_async(conn)
            .await;
        match r {
            Ok(_) => tracing::info!(parameter = %key, "configuration parameter applied live"),
            Err(e) => {
                let text = e.to_string();
                if text.contains("immutable")
                    || text.contains("Unsupported CONFIG parameter")
                    || text.contains("Unknown option")
                {
                    restart.push(key.clone());
                } else {
                    return Err(Error::backend(
                        "redis",
                        format!("the configuration parameter '{key}' could not be applied: {text}"),
                        false,
                    ));
                }
            }
        }
    }
    Ok(restart)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_keys_cover_set_changed_and_removed() {
        let old = json!({"a": 1, "b": 2, "c": 3}).as_object().unwrap().clone();
        let new = json!({"a": 1, "b": 5, "d": 4}).as_object().unwrap().clone();
        assert_eq!(changed_keys(&old, &new), vec!["b", "c", "d"]);
        assert!(changed_keys(&new, &new).is_empty());
    }

    #[test]
    fn rendered_values_are_found_in_both_syntaxes() {
        let cnf = "[mysqld]\ncharacter-set-server = utf8mb4\nmax_connections = 20\n# x = 1\nmax_connections = 77\n";
        assert_eq!(
            rendered_value(cnf, "max_connections").as_deref(),
            Some("77")
        );
        assert_eq!(
            rendered_value(cnf, "character_set_server").as_deref(),
            Some("utf8mb4")
        );
        assert_eq!(rendered_value(cnf, "x"), None);
        let conf = "maxmemory-policy noeviction\ntimeout \"30\"\n";
        assert_eq!(rendered_value(conf, "timeout").as_deref(), Some("30"));
        assert_eq!(
            rendered_value(conf, "maxmemory-policy").as_deref(),
            Some("noeviction")
        );
        let pg = "work_mem = '8MB'\n";
        assert_eq!(rendered_value(pg, "work_mem").as_deref(), Some("8MB"));
    }

    #[test]
    fn mysql_values_are_numbers_or_quoted() {
        assert_eq!(mysql_value("120"), "120");
        assert_eq!(mysql_value("0.5"), "0.5");
        assert_eq!(mysql_value("16M"), "16777216");
        assert_eq!(mysql_value("STRICT_TRANS_TABLES"), "'STRICT_TRANS_TABLES'");
    }

    #[test]
    fn shipped_rules_decide_restarts() {
        assert!(rules_need_restart(
            Manager::Mariadb,
            "innodb_buffer_pool_size"
        ));
        assert!(!rules_need_restart(Manager::Mariadb, "max_connections"));
        assert!(rules_need_restart(Manager::Postgresql, "max_connections"));
        assert!(!rules_need_restart(Manager::Redis, "timeout"));
    }
}
