//! Configuration keys overridden by environment variables: `TROVE_<SECTION>__<KEY>` (upper case, `__` between
//! levels) sets `key` of `[section]`, with the type the key already has (a string stays a string, so a password of
//! digits is fine). The distributed roles read every section this way ([`crate::service_config`]); the all-in-one
//! reads the control plane's `[core]` section ([`core_config`]), e.g. `TROVE_CORE__AUTO_FAILOVER=false`.
//!
//! ```
//! # fn demo() -> trove::core::Result<()> {
//! let env = [("TROVE_CORE__AGENT_HEARTBEAT_EXPIRY".to_string(), "20".to_string())];
//! let core = trove::env_overrides::core_config(env)?;
//! assert_eq!(core.agent_heartbeat_expiry.as_secs(), 20);
//! # Ok(())
//! # }
//! ```

use trove_core::{CoreConfig, Error, Result};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "TROVE_";

/// A configuration error naming what is wrong (a 400: the operator's input).
pub(crate) fn config_err(msg: impl std::fmt::Display) -> Error {
    Error::bad_request(format!("Configuration: {msg}"))
}

/// Turns an override's text into a value of the type the key has (strings stay strings, so a password of
/// digits is fine); keys without a current value take TOML syntax when it parses, else the text.
fn coerce(raw: &str, current: Option<&toml::Value>, var: &str) -> Result<toml::Value> {
    use toml::Value as V;
    let bad = |what: &str| config_err(format!("{var}: '{raw}' is not {what}"));
    Ok(match current {
        Some(V::String(_)) => V::String(raw.into()),
        Some(V::Integer(_)) => V::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?),
        Some(V::Float(_)) => V::Float(raw.trim().parse().map_err(|_| bad("a number"))?),
        Some(V::Boolean(_)) => V::Boolean(raw.trim().parse().map_err(|_| bad("true or false"))?),
        _ => match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            Ok(mut t) => t.remove("v").unwrap_or_else(|| V::String(raw.into())),
            Err(_) => V::String(raw.into()),
        },
    })
}

/// Applies the overrides among `env` (`(name, value)` pairs; only names `TROVE_<SECTION>__<KEY>` count, and only
/// those under `TROVE_<SECTION>__` when `section` is given) to the configuration document `doc`, in name order.
pub fn apply(
    doc: &mut toml::Value,
    env: impl IntoIterator<Item = (String, String)>,
    section: Option<&str>,
) -> Result<()> {
    let wanted = section.map(|s| format!("{ENV_PREFIX}{}__", s.to_ascii_uppercase()));
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
        .filter(|(k, _)| wanted.as_ref().is_none_or(|w| k.starts_with(w.as_str())))
        .collect();
    overrides.sort();
    for (var, raw) in overrides {
        let path: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(config_err(format!("{var}: empty key in the name")));
        }
        let mut node = &mut *doc;
        for (i, part) in path.iter().enumerate() {
            let table = node
                .as_table_mut()
                .ok_or_else(|| config_err(format!("{var}: '{part}' is not under a section")))?;
            if i + 1 == path.len() {
                let v = coerce(&raw, table.get(part.as_str()), &var)?;
                table.insert(part.clone(), v);
                break;
            }
            node = table
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        }
    }
    Ok(())
}

/// The first key of `given` that `known` does not have (dotted path), if any.
pub(crate) fn unknown_key(
    given: &toml::Value,
    known: &toml::Value,
    prefix: &str,
) -> Option<String> {
    let (toml::Value::Table(g), toml::Value::Table(k)) = (given, known) else {
        return None;
    };
    for (name, v) in g {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match k.get(name) {
            None => return Some(path),
            Some(kv) => {
                if let Some(u) = unknown_key(v, kv, &path) {
                    return Some(u);
                }
            }
        }
    }
    None
}

/// The control plane's settings: the defaults with the `TROVE_CORE__<KEY>` variables among `env` applied. An
/// unknown key or an ill-typed value is an error naming the variable.
pub fn core_config(env: impl IntoIterator<Item = (String, String)>) -> Result<CoreConfig> {
    let mut doc = toml::Value::Table(toml::Table::new());
    let defaults = toml::Value::try_from(CoreConfig::default())
        .map_err(|e| config_err(format!("defaults: {e}")))?;
    doc.as_table_mut()
        .expect("a table")
        .insert("core".into(), defaults);
    apply(&mut doc, env, Some("core"))?;
    let core = doc.get("core").cloned().expect("the core section");
    let cfg: CoreConfig = core
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| config_err(format!("[core]: {}", e.message())))?;
    let back = toml::Value::try_from(&cfg).map_err(config_err)?;
    if let Some(key) = unknown_key(&core, &back, "core") {
        return Err(config_err(format!(
            "unknown key '{key}' (TROVE_CORE__{})",
            key.trim_start_matches("core.").to_ascii_uppercase()
        )));
    }
    Ok(cfg)
}

/// `(name, value)` pairs as an environment, for tests.
#[cfg(test)]
pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_keys_come_from_the_environment() {
        let c = core_config(env(&[
            ("TROVE_CORE__AGENT_HEARTBEAT_EXPIRY", "7.5"),
            ("TROVE_CORE__AUTO_FAILOVER", "false"),
            ("TROVE_CORE__REGION", "1234"),
            ("TROVE_AMQP__PORT", "x"),
            ("PATH", "/bin"),
        ]))
        .expect("config");
        assert_eq!(c.agent_heartbeat_expiry.as_secs_f64(), 7.5);
        assert!(!c.auto_failover);
        assert_eq!(c.region, "1234");
        assert_eq!(
            core_config(env(&[])).expect("defaults"),
            CoreConfig::default()
        );
    }

    #[test]
    fn bad_core_keys_are_named() {
        let e = core_config(env(&[("TROVE_CORE__AUTO_FAILOVER", "maybe")])).unwrap_err();
        assert!(e.to_string().contains("TROVE_CORE__AUTO_FAILOVER"), "{e}");
        let e = core_config(env(&[("TROVE_CORE__NO_SUCH_KEY", "1")])).unwrap_err();
        assert!(e.to_string().contains("TROVE_CORE__NO_SUCH_KEY"), "{e}");
        let e = core_config(env(&[("TROVE_CORE__REPORT_INTERVAL", "-1")])).unwrap_err();
        assert!(e.to_string().contains("non-negative"), "{e}");
    }
}
