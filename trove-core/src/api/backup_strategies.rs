//! Backup strategies (`/backup_strategies`): where a tenant's backups go unless a backup names its own container.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{forbidden, ApiService};
use crate::error::{Error, Result};
use crate::model::{BackupStrategy, BackupStrategyFilter};
use crate::policy::rules;
use crate::ports::{ChangeSet, RequestContext, Write};

/// Container backups go to when neither the backup nor a strategy names one (upstream `backup_swift_container`).
pub const DEFAULT_BACKUP_CONTAINER: &str = "database_backups";

/// The backend every strategy reports (upstream always answers `swift`; here backups go to the deployment's backup
/// store), so it is not stored.
pub const BACKUP_STRATEGY_BACKEND: &str = "swift";

/// `POST /backup_strategies`, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateBackupStrategy {
    /// The instance it applies to; `None`: every instance of the tenant.
    pub instance_id: Option<Uuid>,
    /// Container backups are written to.
    pub container: String,
}

/// `GET`/`DELETE /backup_strategies` query, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStrategyQuery {
    /// Only (or, for delete, exactly) this instance's strategy.
    pub instance_id: Option<Uuid>,
    /// Another tenant's strategies (admin only).
    pub project_id: Option<String>,
}

/// Checks a container name: 1 to 255 characters, no `/`, no control characters, not `.` or `..`.
pub fn validate_container(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= 255
        && !name.contains('/')
        && !name.chars().any(char::is_control)
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "Invalid container name '{}': use 1 to 255 characters without '/' or control characters.",
            name.escape_default()
        )))
    }
}

impl ApiService {
    /// The tenant a strategy request works on: the caller's own, or (admin only) `project_id`.
    fn strategy_tenant(&self, ctx: &RequestContext, project_id: Option<String>) -> Result<String> {
        match project_id {
            Some(p) if p != ctx.tenant_id => {
                if self.is_admin(ctx) {
                    Ok(p)
                } else {
                    Err(forbidden(format!(
                        "Only an admin may act on the backup strategies of project {p}."
                    )))
                }
            }
            _ => Ok(ctx.tenant_id.clone()),
        }
    }

    /// `POST /backup_strategies`: creates or replaces the strategy of the caller's tenant (or one instance of it);
    /// answers 202 with the stored strategy.
    pub async fn create_backup_strategy(
        &self,
        ctx: &RequestContext,
        req: CreateBackupStrategy,
    ) -> Result<BackupStrategy> {
        self.authorize_on_tenant(ctx, rules::BACKUP_STRATEGY_CREATE)?;
        validate_container(&req.container)?;
        if let Some(id) = req.instance_id {
            // 404 for another tenant's or a deleted instance, like every instance route.
            self.load_instance(ctx, id).await?;
        }
        let strategy = BackupStrategy {
            tenant_id: ctx.tenant_id.clone(),
            instance_id: req.instance_id,
            container: req.container,
            created: self.clock.now(),
        };
        self.store
            .commit(ChangeSet::new().with(Write::BackupStrategy(strategy.clone())))
            .await?;
        Ok(strategy)
    }

    /// `GET /backup_strategies`.
    pub async fn list_backup_strategies(
        &self,
        ctx: &RequestContext,
        query: BackupStrategyQuery,
    ) -> Result<Vec<BackupStrategy>> {
        let tenant = self.strategy_tenant(ctx, query.project_id)?;
        self.authorize_on_tenant(ctx, rules::BACKUP_STRATEGY_INDEX)?;
        self.store
            .list_backup_strategies(&BackupStrategyFilter {
                tenant_id: Some(tenant),
                instance_id: query.instance_id,
            })
            .await
    }

    /// `DELETE /backup_strategies`: removes the strategy of `instance_id`, or the tenant-wide one when none is
    /// given. Removing a strategy that does not exist succeeds (upstream answers 202 as well).
    pub async fn delete_backup_strategy(
        &self,
        ctx: &RequestContext,
        query: BackupStrategyQuery,
    ) -> Result<()> {
        let tenant_id = self.strategy_tenant(ctx, query.project_id)?;
        self.authorize_on_tenant(ctx, rules::BACKUP_STRATEGY_DELETE)?;
        self.store
            .commit(ChangeSet::new().with(Write::DeleteBackupStrategy {
                tenant_id,
                instance_id: query.instance_id,
            }))
            .await
    }

    /// The container a new backup of `instance_id` goes to: the one the request named (validated), else the
    /// instance's strategy, else the tenant's, else [`DEFAULT_BACKUP_CONTAINER`].
    pub async fn backup_container(
        &self,
        tenant_id: &str,
        instance_id: Uuid,
        requested: Option<String>,
    ) -> Result<String> {
        if let Some(c) = requested {
            validate_container(&c)?;
            return Ok(c);
        }
        let strategies = self
            .store
            .list_backup_strategies(&BackupStrategyFilter {
                tenant_id: Some(tenant_id.to_string()),
                instance_id: None,
            })
            .await?;
        let pick = |target: Option<Uuid>| {
            strategies
                .iter()
                .find(|s| s.instance_id == target)
                .map(|s| s.container.clone())
        };
        Ok(pick(Some(instance_id))
            .or_else(|| pick(None))
            .unwrap_or_else(|| DEFAULT_BACKUP_CONTAINER.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CoreConfig;
    use crate::memory::{ManualClock, MemoryBus, MemoryStore};
    use std::sync::Arc;

    fn api() -> ApiService {
        ApiService::new(
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryBus::new()),
            Arc::new(ManualClock::new()),
            CoreConfig::default(),
        )
    }

    #[tokio::test]
    async fn containers_come_from_the_request_then_the_instance_then_the_tenant() {
        let api = api();
        let (i1, i2) = (Uuid::new_v4(), Uuid::new_v4());
        let pick = |iid, req: Option<&str>| {
            let api = &api;
            let req = req.map(str::to_string);
            async move {
                api.backup_container("t", iid, req)
                    .await
                    .expect("container")
            }
        };
        assert_eq!(pick(i1, None).await, DEFAULT_BACKUP_CONTAINER);
        // Strategies written straight to the store (the instances need not exist for the choice itself).
        let put = |instance_id, container: &str| {
            Write::BackupStrategy(BackupStrategy {
                tenant_id: "t".into(),
                instance_id,
                container: container.into(),
                created: chrono::Utc::now(),
            })
        };
        api.store
            .commit(
                ChangeSet::new()
                    .with(put(None, "tenant-wide"))
                    .with(put(Some(i1), "for-i1")),
            )
            .await
            .expect("commit");
        assert_eq!(
            pick(i1, None).await,
            "for-i1",
            "the instance's own strategy"
        );
        assert_eq!(
            pick(i2, None).await,
            "tenant-wide",
            "the tenant-wide strategy"
        );
        assert_eq!(pick(i1, Some("asked")).await, "asked", "the request wins");
        assert_eq!(
            api.backup_container("other", i1, None)
                .await
                .expect("other"),
            DEFAULT_BACKUP_CONTAINER,
            "another tenant's strategies are not used"
        );
        let bad = api.backup_container("t", i1, Some("a/b".into())).await;
        assert_eq!(bad.expect_err("slash").fault().status, 400);
    }

    #[tokio::test]
    async fn other_projects_need_the_admin_role_and_bad_names_are_refused() {
        let api = api();
        let user = RequestContext::tenant("t");
        let other = BackupStrategyQuery {
            project_id: Some("u".into()),
            ..Default::default()
        };
        let e = api
            .list_backup_strategies(&user, other.clone())
            .await
            .expect_err("non-admin on another project");
        assert_eq!(e.fault().status, 403);
        let e = api
            .delete_backup_strategy(&user, other.clone())
            .await
            .expect_err("non-admin delete");
        assert_eq!(e.fault().status, 403);
        let own = BackupStrategyQuery {
            project_id: Some("t".into()),
            ..Default::default()
        };
        assert!(api
            .list_backup_strategies(&user, own)
            .await
            .expect("own")
            .is_empty());
        let admin = RequestContext::admin("ops");
        assert!(api
            .list_backup_strategies(&admin, other)
            .await
            .expect("admin")
            .is_empty());
        for name in ["", ".", "..", "a/b", "x\ny", &"c".repeat(256)] {
            let e = api
                .create_backup_strategy(
                    &user,
                    CreateBackupStrategy {
                        instance_id: None,
                        container: name.to_string(),
                    },
                )
                .await
                .expect_err("bad container");
            assert_eq!(e.fault().status, 400, "{name:?}");
        }
        let e = api
            .create_backup_strategy(
                &user,
                CreateBackupStrategy {
                    instance_id: Some(Uuid::new_v4()),
                    container: "c".into(),
                },
            )
            .await
            .expect_err("unknown instance");
        assert_eq!(e.fault().status, 404);
        let st = api
            .create_backup_strategy(
                &user,
                CreateBackupStrategy {
                    instance_id: None,
                    container: "c".into(),
                },
            )
            .await
            .expect("tenant-wide");
        assert_eq!(st.tenant_id, "t");
        let listed = api
            .list_backup_strategies(&user, BackupStrategyQuery::default())
            .await
            .expect("list");
        assert_eq!(listed, vec![st]);
        api.delete_backup_strategy(&user, BackupStrategyQuery::default())
            .await
            .expect("delete");
        assert!(api
            .list_backup_strategies(&user, BackupStrategyQuery::default())
            .await
            .expect("list")
            .is_empty());
    }
}
