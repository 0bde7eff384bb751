//! Upgrade (`PUT/PATCH /instances/{id}` with `datastore_version`), mgmt migrate and mgmt rebuild: validation and
//! the one store commit that sets the task and inserts the workflow ([`crate::taskmanager`] runs it).

use super::ApiService;
use crate::error::{Error, Result};
use crate::model::Instance;
use crate::ports::{migration_target, RequestContext};
use crate::state::{Operation, TaskStatus};
use crate::taskmanager::{MigrateParams, RebuildParams, UpgradeParams};

/// Longest host name accepted in a migrate request.
const MAX_HOST_LEN: usize = 255;

impl ApiService {
    /// Upgrade: the target (a name or id of a version of the instance's own datastore) must exist (404), be active,
    /// have the instance's manager, allow the instance's flavor and differ from the current version (400); the
    /// instance must be free for an action (422). Then, in one commit: task UPGRADING (API status UPGRADE),
    /// `datastore_version_id` set to the target (as upstream does; a failed upgrade rolls it back), and the
    /// `upgrade` workflow recording both versions.
    pub(super) async fn upgrade_instance(
        &self,
        _ctx: &RequestContext,
        mut inst: Instance,
        version: &str,
    ) -> Result<()> {
        let id = inst.id;
        let (current, target) = self
            .upgrade_target(
                inst.datastore_version_id,
                version,
                &format!("Instance {id}"),
            )
            .await?;
        if !target.flavor_ids.is_empty() && !target.flavor_ids.contains(&inst.flavor_id) {
            return Err(Error::bad_request(format!(
                "Flavor {} is not allowed for datastore version '{}'.",
                inst.flavor_id, target.name
            )));
        }
        self.gate(&inst, Operation::Upgrade).await?;
        inst.datastore_version_id = target.id;
        let params = UpgradeParams {
            old_version: current,
            new_version: target,
        };
        self.start_workflow(inst, &params, TaskStatus::Upgrading, vec![], None)
            .await?;
        Ok(())
    }

    /// The version an upgrade of `subject` (an instance or a cluster, named so in messages) running version
    /// `current_id` goes to: `version` (a name or id) must name a version of the same datastore (404; 400 when it
    /// is another datastore's), be unambiguous, active, of the same manager and differ from the current one
    /// (400). Answers the current and the target version.
    pub(super) async fn upgrade_target(
        &self,
        current_id: uuid::Uuid,
        version: &str,
        subject: &str,
    ) -> Result<(
        crate::model::DatastoreVersion,
        crate::model::DatastoreVersion,
    )> {
        let version = version.trim();
        if version.is_empty() {
            return Err(Error::bad_request(
                "datastore_version must name a datastore version (name or id).",
            ));
        }
        let (current, ds) = self.version_and_datastore(current_id).await?;
        let mut matching: Vec<_> = self
            .store
            .list_datastore_versions(Some(ds.id))
            .await?
            .into_iter()
            .filter(|v| v.id.to_string() == version || v.name == version)
            .collect();
        if matching.is_empty() {
            let elsewhere = self
                .store
                .list_datastore_versions(None)
                .await?
                .into_iter()
                .find(|v| v.id.to_string() == version || v.name == version);
            if let Some(v) = elsewhere {
                let other = self
                    .store
                    .get_datastore(&v.datastore_id.to_string())
                    .await?
                    .map_or_else(|| v.datastore_id.to_string(), |d| d.name);
                return Err(Error::bad_request(format!(
                    "Datastore version '{}' belongs to datastore '{other}'; {subject} runs datastore '{}' and \
                     can only be upgraded to another version of it.",
                    version.escape_default(),
                    ds.name
                )));
            }
            return Err(Error::not_found(
                "Datastore version",
                version.escape_default(),
            ));
        }
        if matching.len() > 1 {
            return Err(Error::bad_request(format!(
                "Datastore version '{}' is ambiguous in datastore '{}'; give its id.",
                version.escape_default(),
                ds.name
            )));
        }
        let target = matching.remove(0);
        if target.id == current.id {
            return Err(Error::bad_request(format!(
                "{subject} already runs datastore version '{}'.",
                current.name
            )));
        }
        if !target.active {
            return Err(Error::bad_request(format!(
                "Datastore version '{}' is not active.",
                target.name
            )));
        }
        if target.manager != current.manager {
            return Err(Error::bad_request(format!(
                "Datastore version '{}' uses manager {}, {subject} uses {}: an upgrade keeps the \
                 manager.",
                target.name, target.manager, current.manager
            )));
        }
        Ok((current, target))
    }

    /// Mgmt migrate: the instance must be free for an action (422, upstream `validate_can_perform_action`); a
    /// named host must be another host of the compute, and without a name the compute must have another host
    /// (400; checked here when the API was given the compute, else by the task manager). Task MIGRATING.
    pub(super) async fn mgmt_migrate(&self, inst: Instance, host: Option<String>) -> Result<()> {
        let id = inst.id;
        self.gate(&inst, Operation::Migrate).await?;
        let host = host.map(|h| h.trim().to_string());
        if let Some(h) = &host {
            if h.is_empty() || h.len() > MAX_HOST_LEN || h.chars().any(char::is_control) {
                return Err(Error::bad_request(format!(
                    "'{}' is not a valid host name.",
                    h.escape_default()
                )));
            }
        }
        if let Some(compute) = &self.compute {
            let hosts = compute.hosts().await?;
            let current = match compute.get_server(id).await? {
                Some(s) => s.host,
                None => inst.host.clone().unwrap_or_default(),
            };
            migration_target(&hosts, &current, host.as_deref(), |_| 0)?;
        } else if host.is_some() && host == inst.host {
            return Err(Error::bad_request(format!(
                "Instance {id} is already on host '{}'.",
                inst.host.as_deref().unwrap_or_default()
            )));
        }
        self.start_workflow(
            inst,
            &MigrateParams { host },
            TaskStatus::Migrating,
            vec![],
            None,
        )
        .await?;
        Ok(())
    }

    /// Mgmt rebuild: `image_id` must be a UUID (400); the instance must have a server and no running task
    /// (422; an error task or a broken guest does not refuse it: rebuild is how they are repaired). Task
    /// REBUILDING (API status BUILD).
    pub(super) async fn mgmt_rebuild(&self, inst: Instance, image_id: String) -> Result<()> {
        let image = image_id.trim();
        if uuid::Uuid::parse_str(image).is_err() {
            return Err(Error::bad_request(format!(
                "image_id '{}' is not a UUID.",
                image.escape_default()
            )));
        }
        self.gate(&inst, Operation::Rebuild).await?;
        self.start_workflow(
            inst,
            &RebuildParams {
                image_id: image.to_string(),
            },
            TaskStatus::Rebuilding,
            vec![],
            None,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::ports::migration_target;

    #[test]
    fn migration_target_refuses_unknown_same_and_lonely_hosts() {
        let hosts = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let load = |h: &str| if h == "b" { 5 } else { 1 };
        assert_eq!(migration_target(&hosts, "a", None, load).unwrap(), "c");
        assert_eq!(migration_target(&hosts, "a", Some("b"), load).unwrap(), "b");
        let e = migration_target(&hosts, "a", Some("a"), load).unwrap_err();
        assert_eq!(e.fault().status, 400);
        let e = migration_target(&hosts, "a", Some("zz"), load).unwrap_err();
        assert_eq!(e.fault().status, 400);
        assert!(e.to_string().contains("not a host"), "{e}");
        let one = vec!["a".to_string()];
        let e = migration_target(&one, "a", None, |_| 0).unwrap_err();
        assert_eq!(e.fault().status, 400);
        assert!(e.to_string().contains("no other host"), "{e}");
    }
}
