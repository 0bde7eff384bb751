//! The logic of `trove-manage`: operator commands over an [`InfraStore`], with upstream's names and argument
//! order (see `examples/trove-manage.rs` for the command line).
//!
//! Every command is idempotent: running it again with the same arguments changes nothing and succeeds (the
//! [`Outcome`] says whether anything changed). Refusals are typed [`Error`]s: [`Error::BadRequest`] for bad
//! arguments (a CLI answers them with exit status 2), [`Error::NotFound`] for a datastore, version or flavor that
//! does not exist, [`Error::Conflict`] for an impossible change.
//!
//! ```ignore
//! let manage = Manage::new(store);
//! manage.datastore_update("mysql", "").await?;
//! manage.datastore_version_update(&VersionUpdate::new("mysql", "5.6", "mysql", "", "", "1")?).await?;
//! manage.datastore_update("mysql", "5.6").await?;
//! ```

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Number;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{
    ConfigParam, Datastore, DatastoreVersion, Flavor, Manager, ParamType, QuotaLimits, QuotaUsage,
    Resource,
};
use crate::ports::InfraStore;

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the store changed (false when the command had already been applied).
    pub changed: bool,
    /// One line for the operator.
    pub message: String,
}

impl Outcome {
    fn changed(message: impl Into<String>) -> Outcome {
        Outcome {
            changed: true,
            message: message.into(),
        }
    }
    fn unchanged(message: impl Into<String>) -> Outcome {
        Outcome {
            changed: false,
            message: message.into(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Arguments of `datastore_version_update DATASTORE VERSION MANAGER IMAGE PACKAGES ACTIVE [--version N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionUpdate {
    /// Datastore name (created when missing).
    pub datastore: String,
    /// Version name.
    pub version_name: String,
    /// Guest manager.
    pub manager: Manager,
    /// Image; for local-process compute the directory of the engine's binaries ("" = autodetect).
    pub image: String,
    /// Packages, comma separated ("" = none).
    pub packages: String,
    /// Whether new instances may use the version.
    pub active: bool,
    /// Version number (`--version`); defaults to the version name.
    pub version_number: Option<String>,
}

impl VersionUpdate {
    /// Parses the positional arguments as given on the command line (`active` is `0` or `1`).
    pub fn new(
        datastore: &str,
        version_name: &str,
        manager: &str,
        image: &str,
        packages: &str,
        active: &str,
    ) -> Result<VersionUpdate> {
        Ok(VersionUpdate {
            datastore: non_empty("datastore name", datastore)?,
            version_name: non_empty("version name", version_name)?,
            manager: Manager::parse(manager)?,
            image: image.to_string(),
            packages: packages.to_string(),
            active: parse_active(active)?,
            version_number: None,
        })
    }

    /// Sets `--version`.
    pub fn with_version_number(mut self, number: Option<String>) -> Result<VersionUpdate> {
        self.version_number = match number {
            Some(n) => Some(non_empty("--version", &n)?),
            None => None,
        };
        Ok(self)
    }
}

/// Parses upstream's ACTIVE argument: `1`/`0` (also `true`/`false`).
pub fn parse_active(s: &str) -> Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(Error::bad_request(format!(
            "ACTIVE must be 1 or 0, not '{}'.",
            s.escape_default()
        ))),
    }
}

fn non_empty(what: &str, s: &str) -> Result<String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(Error::bad_request(format!("The {what} must not be empty.")));
    }
    if t.len() > 255 || t.chars().any(char::is_control) {
        return Err(Error::bad_request(format!(
            "The {what} '{}' must be at most 255 printable characters.",
            t.escape_default()
        )));
    }
    Ok(t.to_string())
}

#[derive(Deserialize)]
struct RulesFile {
    #[serde(rename = "configuration-parameters")]
    parameters: Vec<RuleEntry>,
}

#[derive(Deserialize)]
struct RuleEntry {
    name: String,
    restart_required: bool,
    #[serde(rename = "type")]
    data_type: ParamType,
    #[serde(default)]
    min: Option<Number>,
    #[serde(default)]
    max: Option<Number>,
}

/// Parses upstream's validation-rules JSON (`{"configuration-parameters": [{name, restart_required, type, min?,
/// max?}, ...]}`) into rules of `datastore_version_id`. A name given twice keeps its last rule.
pub fn parse_validation_rules(text: &str, datastore_version_id: Uuid) -> Result<Vec<ConfigParam>> {
    let file: RulesFile = serde_json::from_str(text).map_err(|e| {
        Error::bad_request(format!("The validation-rules file is not valid ({e}); expected {{\"configuration-parameters\": [{{\"name\", \"restart_required\", \"type\", \"min\"?, \"max\"?}}]}}."))
    })?;
    let mut out: Vec<ConfigParam> = Vec::with_capacity(file.parameters.len());
    for e in file.parameters {
        let name = non_empty("parameter name", &e.name)?;
        if let (Some(min), Some(max)) = (
            e.min.as_ref().and_then(Number::as_f64),
            e.max.as_ref().and_then(Number::as_f64),
        ) {
            if min > max {
                return Err(Error::bad_request(format!(
                    "Parameter {name}: min {min} is greater than max {max}."
                )));
            }
        }
        let rule = ConfigParam {
            datastore_version_id,
            name,
            restart_required: e.restart_required,
            data_type: e.data_type,
            min: e.min,
            max: e.max,
        };
        match out.iter_mut().find(|r| r.name == rule.name) {
            Some(existing) => *existing = rule,
            None => out.push(rule),
        }
    }
    Ok(out)
}

/// Limits and usage of a tenant, as `quota show` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaReport {
    /// Limits (defaults when none are stored).
    pub limits: QuotaLimits,
    /// Usage derived from live rows.
    pub usage: QuotaUsage,
}

impl fmt::Display for QuotaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<10} {:>10} {:>10}", "resource", "in use", "limit")?;
        for r in Resource::ALL {
            let limit = self.limits.get(r);
            let limit = if limit < 0 {
                "unlimited".to_string()
            } else {
                limit.to_string()
            };
            writeln!(
                f,
                "{:<10} {:>10} {:>10}",
                r.as_str(),
                self.usage.get(r),
                limit
            )?;
        }
        Ok(())
    }
}

/// Formats flavors as a table (`flavor list`).
pub fn flavor_table(flavors: &[Flavor]) -> String {
    let mut s = format!(
        "{:<12} {:<20} {:>8} {:>6} {:>8} {:>10}\n",
        "id", "name", "ram_mb", "vcpus", "disk_gb", "ephemeral"
    );
    for f in flavors {
        s.push_str(&format!(
            "{:<12} {:<20} {:>8} {:>6} {:>8} {:>10}\n",
            f.id, f.name, f.ram_mb, f.vcpus, f.disk_gb, f.ephemeral_gb
        ));
    }
    s
}

/// Rules are written in batches of this many; progress is reported after each.
pub const CONFIG_PARAM_BATCH: usize = 25;

/// The operator commands, over any [`InfraStore`].
#[derive(Clone)]
pub struct Manage {
    store: Arc<dyn InfraStore>,
}

impl Manage {
    /// Commands against `store`.
    pub fn new(store: Arc<dyn InfraStore>) -> Manage {
        Manage { store }
    }

    async fn datastore(&self, name: &str) -> Result<Datastore> {
        self.store
            .get_datastore(name)
            .await?
            .ok_or_else(|| Error::not_found("Datastore", name))
    }

    /// The version `name` of datastore `ds` (and, when given, with version number `number`).
    pub async fn find_version(
        &self,
        ds: &str,
        name: &str,
        number: Option<&str>,
    ) -> Result<DatastoreVersion> {
        let datastore = self.datastore(ds).await?;
        self.store
            .list_datastore_versions(Some(datastore.id))
            .await?
            .into_iter()
            .find(|v| v.name == name && number.is_none_or(|n| v.version == n))
            .ok_or_else(|| {
                let id = match number {
                    Some(n) => format!("'{name}' (version {n}) of datastore '{ds}'"),
                    None => format!("'{name}' of datastore '{ds}'"),
                };
                Error::not_found("Datastore version", id)
            })
    }

    /// `datastore_update NAME DEFAULT_VERSION`: creates the datastore when missing and sets its default version
    /// (`""`: none). The default version must exist and be active.
    pub async fn datastore_update(&self, name: &str, default_version: &str) -> Result<Outcome> {
        let name = non_empty("datastore name", name)?;
        let existing = self
            .store
            .get_datastore(&name)
            .await?
            .filter(|d| d.name == name);
        let mut ds = existing.clone().unwrap_or(Datastore {
            id: Uuid::new_v4(),
            name: name.clone(),
            default_version_id: None,
        });
        let default_version = default_version.trim();
        ds.default_version_id = if default_version.is_empty() {
            None
        } else {
            let v = self.find_version(&name, default_version, None).await?;
            if !v.active {
                return Err(Error::bad_request(format!(
                    "Datastore version '{default_version}' is not active; activate it before making it the default."
                )));
            }
            Some(v.id)
        };
        if existing.as_ref() == Some(&ds) {
            return Ok(Outcome::unchanged(format!(
                "Datastore '{name}' is already up to date."
            )));
        }
        self.store.put_datastore(&ds).await?;
        Ok(Outcome::changed(format!("Datastore '{name}' updated.")))
    }

    /// `datastore_version_update ...`: creates or updates a version (and its datastore when missing). The
    /// version's id and flavor list are kept on update.
    pub async fn datastore_version_update(&self, req: &VersionUpdate) -> Result<Outcome> {
        let ds = match self
            .store
            .get_datastore(&req.datastore)
            .await?
            .filter(|d| d.name == req.datastore)
        {
            Some(ds) => ds,
            None => {
                let ds = Datastore {
                    id: Uuid::new_v4(),
                    name: req.datastore.clone(),
                    default_version_id: None,
                };
                self.store.put_datastore(&ds).await?;
                ds
            }
        };
        let existing = self
            .store
            .list_datastore_versions(Some(ds.id))
            .await?
            .into_iter()
            .find(|v| v.name == req.version_name);
        let v = DatastoreVersion {
            id: existing.as_ref().map_or_else(Uuid::new_v4, |v| v.id),
            datastore_id: ds.id,
            name: req.version_name.clone(),
            manager: req.manager,
            image: req.image.clone(),
            packages: req.packages.clone(),
            active: req.active,
            version: req
                .version_number
                .clone()
                .unwrap_or_else(|| req.version_name.clone()),
            flavor_ids: existing
                .as_ref()
                .map(|v| v.flavor_ids.clone())
                .unwrap_or_default(),
        };
        if existing.as_ref() == Some(&v) {
            return Ok(Outcome::unchanged(format!(
                "Datastore version '{}' is already up to date.",
                v.name
            )));
        }
        self.store.put_datastore_version(&v).await?;
        Ok(Outcome::changed(format!(
            "Datastore version '{}' updated.",
            v.name
        )))
    }

    /// `datastore_version_flavor_add DS VERSION FLAVOR_IDS [--version N]`: allows the comma-separated flavors
    /// (which must exist) for the version.
    pub async fn datastore_version_flavor_add(
        &self,
        ds: &str,
        version: &str,
        flavor_ids: &str,
        number: Option<&str>,
    ) -> Result<Outcome> {
        let ids: Vec<String> = flavor_ids
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if ids.is_empty() {
            return Err(Error::bad_request(
                "Name at least one flavor id (comma separated).",
            ));
        }
        let mut v = self.find_version(ds, version, number).await?;
        for id in &ids {
            if self.store.get_flavor(id).await?.is_none() {
                return Err(Error::not_found("Flavor", id));
            }
        }
        let before = v.flavor_ids.len();
        for id in ids {
            if !v.flavor_ids.contains(&id) {
                v.flavor_ids.push(id);
            }
        }
        if v.flavor_ids.len() == before {
            return Ok(Outcome::unchanged(format!(
                "The flavors are already allowed for version '{version}'."
            )));
        }
        self.store.put_datastore_version(&v).await?;
        Ok(Outcome::changed(format!(
            "Added flavors to datastore version '{version}'."
        )))
    }

    /// `datastore_version_flavor_delete DS VERSION FLAVOR_ID [--version N]`.
    pub async fn datastore_version_flavor_delete(
        &self,
        ds: &str,
        version: &str,
        flavor_id: &str,
        number: Option<&str>,
    ) -> Result<Outcome> {
        let mut v = self.find_version(ds, version, number).await?;
        let before = v.flavor_ids.len();
        v.flavor_ids.retain(|f| f != flavor_id.trim());
        if v.flavor_ids.len() == before {
            return Ok(Outcome::unchanged(format!(
                "Flavor {flavor_id} is not listed for version '{version}'."
            )));
        }
        self.store.put_datastore_version(&v).await?;
        Ok(Outcome::changed(format!(
            "Removed flavor {flavor_id} from datastore version '{version}'."
        )))
    }

    /// `db_load_datastore_config_parameters DS VERSION FILE [--version N]`: loads the rules in `rules_json`
    /// (upstream's validation-rules format), reporting `(done, total)` to `progress` after each batch.
    pub async fn db_load_datastore_config_parameters(
        &self,
        ds: &str,
        version: &str,
        rules_json: &str,
        number: Option<&str>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Outcome> {
        let v = self.find_version(ds, version, number).await?;
        let rules = parse_validation_rules(rules_json, v.id)?;
        let current = self.store.list_config_params(v.id).await?;
        let total = rules.len();
        let changed: Vec<ConfigParam> =
            rules.into_iter().filter(|r| !current.contains(r)).collect();
        let mut done = total - changed.len();
        progress(done, total);
        for batch in changed.chunks(CONFIG_PARAM_BATCH) {
            self.store.put_config_params(batch).await?;
            done += batch.len();
            progress(done, total);
        }
        let msg = format!(
            "Loaded {total} configuration parameters for datastore version '{version}' ({} new or changed).",
            changed.len()
        );
        Ok(if changed.is_empty() {
            Outcome::unchanged(msg)
        } else {
            Outcome::changed(msg)
        })
    }

    /// `db_remove_datastore_config_parameters DS VERSION [--version N]`: removes every rule of the version.
    pub async fn db_remove_datastore_config_parameters(
        &self,
        ds: &str,
        version: &str,
        number: Option<&str>,
    ) -> Result<Outcome> {
        let v = self.find_version(ds, version, number).await?;
        let mut removed = 0;
        for p in self.store.list_config_params(v.id).await? {
            if self.store.delete_config_param(v.id, &p.name).await? {
                removed += 1;
            }
        }
        let msg =
            format!("Removed {removed} configuration parameters of datastore version '{version}'.");
        Ok(if removed == 0 {
            Outcome::unchanged(msg)
        } else {
            Outcome::changed(msg)
        })
    }

    /// `flavor create ID NAME RAM_MB VCPUS DISK_GB [--ephemeral GB]`: creates or updates a flavor.
    pub async fn flavor_create(&self, flavor: &Flavor) -> Result<Outcome> {
        let id = non_empty("flavor id", &flavor.id)?;
        let name = non_empty("flavor name", &flavor.name)?;
        if flavor.ram_mb == 0 || flavor.vcpus == 0 {
            return Err(Error::bad_request(
                "A flavor needs at least 1 MB of RAM and 1 vCPU.",
            ));
        }
        let f = Flavor {
            id: id.clone(),
            name,
            ..flavor.clone()
        };
        if self.store.get_flavor(&id).await?.as_ref() == Some(&f) {
            return Ok(Outcome::unchanged(format!(
                "Flavor {id} already exists with these values."
            )));
        }
        self.store.put_flavor(&f).await?;
        Ok(Outcome::changed(format!("Flavor {id} saved.")))
    }

    /// `flavor list`.
    pub async fn flavor_list(&self) -> Result<Vec<Flavor>> {
        self.store.list_flavors().await
    }

    /// `flavor delete ID`.
    pub async fn flavor_delete(&self, id: &str) -> Result<Outcome> {
        if self.store.get_flavor(id).await?.is_none() {
            return Ok(Outcome::unchanged(format!("Flavor {id} does not exist.")));
        }
        self.store.delete_flavor(id).await?;
        Ok(Outcome::changed(format!("Flavor {id} deleted.")))
    }

    /// `quota show TENANT`.
    pub async fn quota_show(&self, tenant: &str) -> Result<QuotaReport> {
        let tenant = non_empty("tenant", tenant)?;
        Ok(QuotaReport {
            limits: self.store.get_quota_limits(&tenant).await?,
            usage: self.store.quota_usage(&tenant).await?,
        })
    }

    /// `quota update TENANT [--instances N] [--ram MB] [--volumes GB] [--backups N]` (`-1`: unlimited).
    pub async fn quota_update(&self, tenant: &str, changes: &[(Resource, i64)]) -> Result<Outcome> {
        let tenant = non_empty("tenant", tenant)?;
        if changes.is_empty() {
            return Err(Error::bad_request(
                "Give at least one of --instances, --ram, --volumes, --backups.",
            ));
        }
        let mut limits = self.store.get_quota_limits(&tenant).await?;
        let before = limits;
        for (r, v) in changes {
            if *v < -1 {
                return Err(Error::bad_request(format!(
                    "The {} limit must be -1 (unlimited) or more.",
                    r.as_str()
                )));
            }
            limits.set(*r, *v);
        }
        if limits == before {
            return Ok(Outcome::unchanged(format!(
                "Quotas of {tenant} are already set."
            )));
        }
        self.store.set_quota_limits(&tenant, &limits).await?;
        Ok(Outcome::changed(format!("Quotas of {tenant} updated.")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;

    fn manage() -> Manage {
        Manage::new(Arc::new(MemoryStore::new()))
    }

    #[tokio::test]
    async fn the_upstream_seed_sequence_works_and_is_idempotent() {
        let m = manage();
        // Each command twice in a row: the second run changes nothing.
        for first in [true, false] {
            assert_eq!(
                m.datastore_update("mysql", "").await.unwrap().changed,
                first
            );
        }
        let req = VersionUpdate::new("mysql", "5.6", "mysql", "IMAGE", "", "1").unwrap();
        for first in [true, false] {
            assert_eq!(
                m.datastore_version_update(&req).await.unwrap().changed,
                first
            );
        }
        for first in [true, false] {
            assert_eq!(
                m.datastore_update("mysql", "5.6").await.unwrap().changed,
                first
            );
        }
        let ds = m.store.get_datastore("mysql").await.unwrap().unwrap();
        let versions = m.store.list_datastore_versions(Some(ds.id)).await.unwrap();
        assert_eq!(versions.len(), 1);
        let v = &versions[0];
        assert_eq!(ds.default_version_id, Some(v.id));
        assert_eq!(
            (
                v.name.as_str(),
                v.manager,
                v.image.as_str(),
                v.active,
                v.version.as_str()
            ),
            ("5.6", Manager::Mysql, "IMAGE", true, "5.6")
        );
        // Clearing the default again.
        assert!(m.datastore_update("mysql", "").await.unwrap().changed);
        assert_eq!(
            m.store
                .get_datastore("mysql")
                .await
                .unwrap()
                .unwrap()
                .default_version_id,
            None
        );
    }

    #[tokio::test]
    async fn version_update_creates_the_datastore_and_keeps_ids() {
        let m = manage();
        let req = VersionUpdate::new("postgresql", "16", "postgresql", "", "", "0")
            .unwrap()
            .with_version_number(Some("16.4".into()))
            .unwrap();
        m.datastore_version_update(&req).await.unwrap();
        let v1 = m
            .find_version("postgresql", "16", Some("16.4"))
            .await
            .unwrap();
        assert!(!v1.active);
        let err = m.datastore_update("postgresql", "16").await.unwrap_err();
        assert!(matches!(err, Error::BadRequest { .. }), "{err:?}");
        let active = VersionUpdate {
            active: true,
            ..req.clone()
        };
        m.datastore_version_update(&active).await.unwrap();
        assert_eq!(
            m.find_version("postgresql", "16", None).await.unwrap().id,
            v1.id
        );
        assert!(matches!(
            m.find_version("postgresql", "16", Some("15")).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            m.datastore_update("postgresql", "17").await,
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn bad_arguments_are_bad_requests() {
        for (m, a) in [("nosuch", "1"), ("mysql", "yes"), ("mysql", "2")] {
            let e = VersionUpdate::new("mysql", "5.6", m, "", "", a).unwrap_err();
            assert_eq!(e.fault().status, 400, "{m} {a}");
        }
        assert!(VersionUpdate::new("", "5.6", "mysql", "", "", "1").is_err());
        assert!(VersionUpdate::new("mysql", "5.6", "mysql", "", "", "1")
            .unwrap()
            .with_version_number(Some(" ".into()))
            .is_err());
    }

    #[tokio::test]
    async fn flavors_on_versions() {
        let m = manage();
        m.datastore_version_update(
            &VersionUpdate::new("mysql", "8.0", "mysql", "", "", "1").unwrap(),
        )
        .await
        .unwrap();
        for id in ["1", "2"] {
            let f = Flavor {
                id: id.into(),
                name: format!("f{id}"),
                ram_mb: 512,
                vcpus: 1,
                disk_gb: 5,
                ephemeral_gb: 0,
            };
            assert!(m.flavor_create(&f).await.unwrap().changed);
            assert!(!m.flavor_create(&f).await.unwrap().changed);
        }
        assert!(matches!(
            m.datastore_version_flavor_add("mysql", "8.0", "1,9", None)
                .await,
            Err(Error::NotFound { .. })
        ));
        assert!(
            m.datastore_version_flavor_add("mysql", "8.0", "1, 2", None)
                .await
                .unwrap()
                .changed
        );
        assert!(
            !m.datastore_version_flavor_add("mysql", "8.0", "2", None)
                .await
                .unwrap()
                .changed
        );
        assert_eq!(
            m.find_version("mysql", "8.0", None)
                .await
                .unwrap()
                .flavor_ids,
            vec!["1", "2"]
        );
        assert!(
            m.datastore_version_flavor_delete("mysql", "8.0", "1", None)
                .await
                .unwrap()
                .changed
        );
        assert!(
            !m.datastore_version_flavor_delete("mysql", "8.0", "1", None)
                .await
                .unwrap()
                .changed
        );
        assert!(m.flavor_delete("1").await.unwrap().changed);
        assert!(!m.flavor_delete("1").await.unwrap().changed);
        assert_eq!(m.flavor_list().await.unwrap().len(), 1);
        assert!(flavor_table(&m.flavor_list().await.unwrap()).contains("f2"));
        let bad = Flavor {
            id: "x".into(),
            name: "x".into(),
            ram_mb: 0,
            vcpus: 1,
            disk_gb: 0,
            ephemeral_gb: 0,
        };
        assert!(matches!(
            m.flavor_create(&bad).await,
            Err(Error::BadRequest { .. })
        ));
    }

    #[tokio::test]
    async fn config_parameters_load_with_progress() {
        let m = manage();
        m.datastore_version_update(
            &VersionUpdate::new("mysql", "8.0", "mysql", "", "", "1").unwrap(),
        )
        .await
        .unwrap();
        let mut params = Vec::new();
        for n in 0..60 {
            params.push(serde_json::json!({"name": format!("p{n:02}"), "restart_required": n % 2 == 0, "type": "integer", "min": 0, "max": 18446744073709551615u64}));
        }
        params.push(serde_json::json!({"name": "long_query_time", "restart_required": false, "type": "float", "min": 0}));
        params.push(serde_json::json!({"name": "performance_schema", "restart_required": true, "type": "boolean"}));
        let text = serde_json::json!({"configuration-parameters": params}).to_string();
        let mut seen = Vec::new();
        let out = m
            .db_load_datastore_config_parameters("mysql", "8.0", &text, None, |d, t| {
                seen.push((d, t))
            })
            .await
            .unwrap();
        assert!(out.changed);
        assert_eq!(seen.first(), Some(&(0, 62)));
        assert_eq!(seen.last(), Some(&(62, 62)));
        assert!(seen.len() > 2, "progress after each batch: {seen:?}");
        let v = m.find_version("mysql", "8.0", None).await.unwrap();
        let stored = m.store.list_config_params(v.id).await.unwrap();
        assert_eq!(stored.len(), 62);
        let p = stored.iter().find(|p| p.name == "p00").unwrap();
        assert_eq!(p.max.as_ref().and_then(Number::as_u64), Some(u64::MAX));
        assert!(p.restart_required);
        let again = m
            .db_load_datastore_config_parameters("mysql", "8.0", &text, None, |_, _| {})
            .await
            .unwrap();
        assert!(!again.changed);
        for bad in [
            "{}",
            "[]",
            r#"{"configuration-parameters":[{"name":"x","restart_required":false,"type":"weird"}]}"#,
            r#"{"configuration-parameters":[{"name":"x","restart_required":false,"type":"integer","min":5,"max":1}]}"#,
        ] {
            let e = m
                .db_load_datastore_config_parameters("mysql", "8.0", bad, None, |_, _| {})
                .await
                .unwrap_err();
            assert_eq!(e.fault().status, 400, "{bad}");
        }
        assert!(
            m.db_remove_datastore_config_parameters("mysql", "8.0", None)
                .await
                .unwrap()
                .changed
        );
        assert!(m.store.list_config_params(v.id).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn quotas() {
        let m = manage();
        let r = m.quota_show("t1").await.unwrap();
        assert_eq!(r.limits, QuotaLimits::default());
        assert!(r.to_string().contains("unlimited"));
        assert!(
            m.quota_update("t1", &[(Resource::Instances, 3), (Resource::Ram, -1)])
                .await
                .unwrap()
                .changed
        );
        assert!(
            !m.quota_update("t1", &[(Resource::Instances, 3)])
                .await
                .unwrap()
                .changed
        );
        assert_eq!(m.quota_show("t1").await.unwrap().limits.instances, 3);
        assert!(matches!(
            m.quota_update("t1", &[(Resource::Backups, -5)]).await,
            Err(Error::BadRequest { .. })
        ));
        assert!(matches!(
            m.quota_update("t1", &[]).await,
            Err(Error::BadRequest { .. })
        ));
    }
}

/// Validation rules shipped with trove-rs for a manager, in upstream's validation-rules format (a curated set of
/// the most used parameters; load a fuller file with `db_load_datastore_config_parameters`).
pub fn default_validation_rules(manager: Manager) -> Option<&'static str> {
    match manager {
        Manager::Mysql | Manager::Mariadb => Some(include_str!("../rules/mysql.json")),
        Manager::Postgresql => Some(include_str!("../rules/postgresql.json")),
        Manager::Redis => Some(include_str!("../rules/redis.json")),
        Manager::Mongodb | Manager::Cassandra => None,
    }
}

#[cfg(test)]
mod shipped_rules {
    use super::*;

    #[test]
    fn every_shipped_rules_file_parses() {
        for m in Manager::ALL {
            if let Some(text) = default_validation_rules(m) {
                let rules = parse_validation_rules(text, Uuid::nil()).expect("shipped rules parse");
                assert!(rules.len() >= 5, "{m}: {} rules", rules.len());
            }
        }
    }
}
