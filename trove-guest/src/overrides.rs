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

use async_trait::async_trait;
use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use trove_core::model::Manager;
use trove_core::{Error, Result};

use crate::base::Base;
use crate::common::{check_override_key, override_value};

/// An engine's configuration: rendered from the recorded state, and changed parameters applied live.
#[async_trait]
pub(crate) trait Configurable: Send + Sync {
    /// Renders the engine's configuration file(s) from the recorded guest state (what the next start reads).
    fn render_config(&self) -> Result<()>;
    /// Brings the `changed` parameters (already rendered) into effect in the running engine where it can;
    /// answers those that wait for a restart (all of them when the engine does not answer).
    async fn apply_changes(&self, changed: Vec<String>) -> Result<Vec<String>>;
}

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

/// The rendered configuration text at `path` (the values live changes set come from it).
pub(crate) fn read_rendered(path: &std::path::Path, backend: &'static str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::backend(
            backend,
            format!("reading the rendered config failed: {e}"),
            false,
        )
    })
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
