//! The [`InfraStore`](trove_core::ports::InfraStore) implementation shared by SQLite and PostgreSQL.
//!
//! The SQL is the same on both (positional `$N` parameters, `ON CONFLICT` upserts, byte-order text columns);
//! what differs is how a write transaction starts (`begin_write`) and the row-lock suffix (`FOR_UPDATE`).
//! The macro stamps the implementation out for each concrete store type, which keeps sqlx's
//! generic bounds out of the way.

use tokio::sync::OwnedMutexGuard;
use trove_core::Result;

/// A write transaction, plus (SQLite) the in-process writer gate it holds.
pub(crate) struct WriteTx<DB: sqlx::Database> {
    pub(crate) tx: sqlx::Transaction<'static, DB>,
    pub(crate) _gate: Option<OwnedMutexGuard<()>>,
    pub(crate) backend: &'static str,
}

impl<DB: sqlx::Database> WriteTx<DB> {
    /// Commits; the gate is released afterwards.
    pub(crate) async fn commit(self) -> Result<()> {
        let backend = self.backend;
        self.tx
            .commit()
            .await
            .map_err(|e| super::db_error(backend, e))
    }
}

/// Rows per statement of a batched upsert or an `IN (...)` lookup.
pub(crate) const CHUNK: usize = 400;

/// `($1, $2), ($3, $4), ...`: placeholders for `rows` rows of `cols` columns.
pub(crate) fn values_placeholders(rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(r * cols + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

/// `$1, $2, ...`.
pub(crate) fn list_placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `WHERE` part of a list query: conditions joined by `AND`, with their text parameters in order.
#[derive(Default)]
pub(crate) struct Where {
    conds: Vec<String>,
    pub(crate) binds: Vec<String>,
}

impl Where {
    /// `column = $N` with `value`, when there is a value.
    pub(crate) fn eq(&mut self, column: &str, value: Option<String>) -> &mut Where {
        if let Some(v) = value {
            self.binds.push(v);
            self.conds.push(format!("{column} = ${}", self.binds.len()));
        }
        self
    }
    /// A condition without parameters, when `on`.
    pub(crate) fn cond(&mut self, on: bool, cond: &str) -> &mut Where {
        if on {
            self.conds.push(cond.to_string());
        }
        self
    }
    /// `select` + `WHERE ...` (when any condition) + ` ORDER BY order`.
    pub(crate) fn sql(&self, select: &str, order: &str) -> String {
        let mut sql = String::from(select);
        if !self.conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.conds.join(" AND "));
        }
        sql.push_str(" ORDER BY ");
        sql.push_str(order);
        sql
    }
}

macro_rules! impl_infra_store {
    ($Store:ty, $Db:ty) => {
        mod infra_store_impl {
            use super::*;
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use sqlx::Row;
            use std::collections::HashMap;
            use trove_core::model::{
                Backup, BackupFilter, BackupSchedule, BackupStrategy, BackupStrategyFilter, ConfigParam, Configuration, Datastore, DatastoreVersion, Flavor, Instance,
                InstanceFilter, JournalEntry, QuotaLimits, QuotaUsage, RootHistory, ServiceStatusRecord, Workflow,
            };
            use trove_core::ports::{
                workflow_claim_renews, workflow_claimable, ChangeSet, Expect, InfraStore, Write, STICKY_STATUSES,
            };
            use trove_core::{Error, Result};
            use $crate::sql::imp::{list_placeholders, values_placeholders, Where, WriteTx, CHUNK};
            use $crate::sql::{db_error, from_body, is_unique_violation, nanos, to_body};

            const B: &str = <$Store>::BACKEND;

            fn err(e: sqlx::Error) -> Error {
                db_error(B, e)
            }

            fn body_of(row: &<$Db as sqlx::Database>::Row) -> Result<String> {
                row.try_get::<String, _>("body").map_err(err)
            }

            fn version_of(row: &<$Db as sqlx::Database>::Row) -> Result<u64> {
                let v = row.try_get::<i64, _>("version").map_err(err)?;
                Ok(u64::try_from(v).unwrap_or_default())
            }

            fn instance_of(row: &<$Db as sqlx::Database>::Row) -> Result<Instance> {
                let mut i: Instance = from_body(B, "instances", &body_of(row)?)?;
                i.version = version_of(row)?;
                Ok(i)
            }

            fn workflow_of(row: &<$Db as sqlx::Database>::Row) -> Result<Workflow> {
                let mut w: Workflow = from_body(B, "workflows", &body_of(row)?)?;
                w.version = version_of(row)?;
                Ok(w)
            }

            fn bodies<T: serde::de::DeserializeOwned>(
                table: &str,
                rows: &[<$Db as sqlx::Database>::Row],
            ) -> Result<Vec<T>> {
                rows.iter().map(|r| from_body(B, table, &body_of(r)?)).collect()
            }

            fn conflict_on_unique(e: sqlx::Error, message: impl FnOnce() -> String) -> Error {
                if is_unique_violation(&e) {
                    Error::conflict(message())
                } else {
                    err(e)
                }
            }

            type Tx = WriteTx<$Db>;

            async fn write_instance(tx: &mut Tx, i: &Instance, expect: Expect) -> Result<()> {
                let body = to_body(B, i)?;
                let cols = (
                    i.id.to_string(),
                    i.tenant_id.clone(),
                    i.deleted,
                    i.cluster_id.is_some(),
                    i.replica_of.map(|u| u.to_string()),
                    i.configuration_id.map(|u| u.to_string()),
                    i64::from(i.ram_mb),
                    i64::from(i.volume_size.unwrap_or(0)),
                    nanos(i.created),
                );
                match expect {
                    Expect::Absent | Expect::Any => {
                        let on_conflict = if expect == Expect::Any {
                            " ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, \
                             deleted = excluded.deleted, clustered = excluded.clustered, \
                             replica_of = excluded.replica_of, configuration_id = excluded.configuration_id, \
                             ram_mb = excluded.ram_mb, volume_size = excluded.volume_size, \
                             created = excluded.created, version = instances.version + 1, body = excluded.body"
                        } else {
                            ""
                        };
                        let sql = format!(
                            "INSERT INTO instances (id, tenant_id, deleted, clustered, replica_of, configuration_id, \
                             ram_mb, volume_size, created, version, body) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10){on_conflict}"
                        );
                        sqlx::query(&sql)
                            .bind(cols.0)
                            .bind(cols.1)
                            .bind(cols.2)
                            .bind(cols.3)
                            .bind(cols.4)
                            .bind(cols.5)
                            .bind(cols.6)
                            .bind(cols.7)
                            .bind(cols.8)
                            .bind(body)
                            .execute(&mut *tx.tx)
                            .await
                            .map_err(|e| conflict_on_unique(e, || format!("Instance {} already exists.", i.id)))?;
                    }
                    Expect::Version(v) => {
                        let expected = i64::try_from(v).unwrap_or(i64::MAX);
                        let done = sqlx::query(
                            "UPDATE instances SET tenant_id = $2, deleted = $3, clustered = $4, replica_of = $5, \
                             configuration_id = $6, ram_mb = $7, volume_size = $8, created = $9, \
                             version = version + 1, body = $10 WHERE id = $1 AND version = $11",
                        )
                        .bind(cols.0)
                        .bind(cols.1)
                        .bind(cols.2)
                        .bind(cols.3)
                        .bind(cols.4)
                        .bind(cols.5)
                        .bind(cols.6)
                        .bind(cols.7)
                        .bind(cols.8)
                        .bind(body)
                        .bind(expected)
                        .execute(&mut *tx.tx)
                        .await
                        .map_err(err)?;
                        if done.rows_affected() != 1 {
                            let cur = current_version(tx, "instances", i.id).await?;
                            return Err(Expect::Version(v)
                                .next_version("Instance", i.id, cur)
                                .err()
                                .unwrap_or_else(|| Error::conflict(format!("Instance {} changed concurrently.", i.id))));
                        }
                    }
                }
                Ok(())
            }

            async fn write_workflow(tx: &mut Tx, w: &Workflow, expect: Expect) -> Result<()> {
                let body = to_body(B, w)?;
                match expect {
                    Expect::Absent | Expect::Any => {
                        let on_conflict = if expect == Expect::Any {
                            " ON CONFLICT (id) DO UPDATE SET is_open = excluded.is_open, created = excluded.created, \
                             version = workflows.version + 1, body = excluded.body"
                        } else {
                            ""
                        };
                        let sql = format!(
                            "INSERT INTO workflows (id, is_open, created, version, body) \
                             VALUES ($1, $2, $3, 0, $4){on_conflict}"
                        );
                        sqlx::query(&sql)
                            .bind(w.id.to_string())
                            .bind(w.state.is_open())
                            .bind(nanos(w.created))
                            .bind(body)
                            .execute(&mut *tx.tx)
                            .await
                            .map_err(|e| conflict_on_unique(e, || format!("Workflow {} already exists.", w.id)))?;
                    }
                    Expect::Version(v) => {
                        let expected = i64::try_from(v).unwrap_or(i64::MAX);
                        let done = sqlx::query(
                            "UPDATE workflows SET is_open = $2, created = $3, version = version + 1, body = $4 \
                             WHERE id = $1 AND version = $5",
                        )
                        .bind(w.id.to_string())
                        .bind(w.state.is_open())
                        .bind(nanos(w.created))
                        .bind(body)
                        .bind(expected)
                        .execute(&mut *tx.tx)
                        .await
                        .map_err(err)?;
                        if done.rows_affected() != 1 {
                            let cur = current_version(tx, "workflows", w.id).await?;
                            return Err(Expect::Version(v)
                                .next_version("Workflow", w.id, cur)
                                .err()
                                .unwrap_or_else(|| Error::conflict(format!("Workflow {} changed concurrently.", w.id))));
                        }
                    }
                }
                Ok(())
            }

            async fn write_schedule(tx: &mut Tx, s: &BackupSchedule, expect: Expect) -> Result<()> {
                let body = to_body(B, s)?;
                match expect {
                    Expect::Absent | Expect::Any => {
                        let on_conflict = if expect == Expect::Any {
                            " ON CONFLICT (id) DO UPDATE SET instance_id = excluded.instance_id, \
                             version = backup_schedules.version + 1, body = excluded.body"
                        } else {
                            ""
                        };
                        let sql = format!(
                            "INSERT INTO backup_schedules (id, instance_id, version, body) \
                             VALUES ($1, $2, 0, $3){on_conflict}"
                        );
                        sqlx::query(&sql)
                            .bind(s.id.to_string())
                            .bind(s.instance_id.to_string())
                            .bind(body)
                            .execute(&mut *tx.tx)
                            .await
                            .map_err(|e| conflict_on_unique(e, || format!("Backup schedule {} already exists.", s.id)))?;
                    }
                    Expect::Version(v) => {
                        let expected = i64::try_from(v).unwrap_or(i64::MAX);
                        let done = sqlx::query(
                            "UPDATE backup_schedules SET instance_id = $2, version = version + 1, body = $3 \
                             WHERE id = $1 AND version = $4",
                        )
                        .bind(s.id.to_string())
                        .bind(s.instance_id.to_string())
                        .bind(body)
                        .bind(expected)
                        .execute(&mut *tx.tx)
                        .await
                        .map_err(err)?;
                        if done.rows_affected() != 1 {
                            let cur = current_version(tx, "backup_schedules", s.id).await?;
                            return Err(Expect::Version(v)
                                .next_version("Backup schedule", s.id, cur)
                                .err()
                                .unwrap_or_else(|| Error::conflict(format!("Backup schedule {} changed concurrently.", s.id))));
                        }
                    }
                }
                Ok(())
            }

            async fn write_cluster(tx: &mut Tx, c: &trove_core::model::Cluster, expect: Expect) -> Result<()> {
                let body = to_body(B, c)?;
                match expect {
                    Expect::Absent | Expect::Any => {
                        let on_conflict = if expect == Expect::Any {
                            " ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, \
                             deleted = excluded.deleted, created = excluded.created, \
                             version = clusters.version + 1, body = excluded.body"
                        } else {
                            ""
                        };
                        let sql = format!(
                            "INSERT INTO clusters (id, tenant_id, deleted, created, version, body) \
                             VALUES ($1, $2, $3, $4, 0, $5){on_conflict}"
                        );
                        sqlx::query(&sql)
                            .bind(c.id.to_string())
                            .bind(c.tenant_id.as_str())
                            .bind(c.deleted)
                            .bind(nanos(c.created))
                            .bind(body)
                            .execute(&mut *tx.tx)
                            .await
                            .map_err(|e| conflict_on_unique(e, || format!("Cluster {} already exists.", c.id)))?;
                    }
                    Expect::Version(v) => {
                        let expected = i64::try_from(v).unwrap_or(i64::MAX);
                        let done = sqlx::query(
                            "UPDATE clusters SET tenant_id = $2, deleted = $3, created = $4, version = version + 1, \
                             body = $5 WHERE id = $1 AND version = $6",
                        )
                        .bind(c.id.to_string())
                        .bind(c.tenant_id.as_str())
                        .bind(c.deleted)
                        .bind(nanos(c.created))
                        .bind(body)
                        .bind(expected)
                        .execute(&mut *tx.tx)
                        .await
                        .map_err(err)?;
                        if done.rows_affected() != 1 {
                            let cur = current_version(tx, "clusters", c.id).await?;
                            return Err(Expect::Version(v)
                                .next_version("Cluster", c.id, cur)
                                .err()
                                .unwrap_or_else(|| Error::conflict(format!("Cluster {} changed concurrently.", c.id))));
                        }
                    }
                }
                Ok(())
            }

            async fn current_version(tx: &mut Tx, table: &str, id: uuid::Uuid) -> Result<Option<u64>> {
                let sql = format!("SELECT version FROM {table} WHERE id = $1");
                let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&mut *tx.tx).await.map_err(err)?;
                row.map(|r| version_of(&r)).transpose()
            }

            /// Upserts service statuses, the last record per instance winning. A heartbeat batch (`heartbeat`)
            /// leaves rows whose stored status is sticky alone, in the same statement; a commit's write does not.
            async fn upsert_statuses(tx: &mut Tx, batch: &[ServiceStatusRecord], heartbeat: bool) -> Result<()> {
                // Keep the last record per instance: one statement may not touch a row twice.
                let mut last: HashMap<uuid::Uuid, &ServiceStatusRecord> = HashMap::with_capacity(batch.len());
                let mut order = Vec::with_capacity(batch.len());
                for s in batch {
                    if last.insert(s.instance_id, s).is_none() {
                        order.push(s.instance_id);
                    }
                }
                let rows: Vec<(String, String, String)> = order
                    .iter()
                    .filter_map(|id| last.get(id))
                    .map(|s| Ok((s.instance_id.to_string(), status_text(s.status)?, to_body(B, s)?)))
                    .collect::<Result<_>>()?;
                let sticky: Vec<String> = STICKY_STATUSES
                    .iter()
                    .map(|s| status_text(*s))
                    .collect::<Result<_>>()?;
                for chunk in rows.chunks(CHUNK) {
                    let mut sql = format!(
                        "INSERT INTO service_statuses (instance_id, status, body) VALUES {} \
                         ON CONFLICT (instance_id) DO UPDATE SET status = excluded.status, body = excluded.body",
                        values_placeholders(chunk.len(), 3)
                    );
                    if heartbeat {
                        let first = chunk.len() * 3 + 1;
                        let params: Vec<String> = (first..first + sticky.len()).map(|i| format!("${i}")).collect();
                        sql.push_str(&format!(
                            " WHERE service_statuses.status IS NULL OR service_statuses.status NOT IN ({})",
                            params.join(", ")
                        ));
                    }
                    let mut q = sqlx::query(&sql);
                    for (id, status, body) in chunk {
                        q = q.bind(id.as_str()).bind(status.as_str()).bind(body.as_str());
                    }
                    if heartbeat {
                        for s in &sticky {
                            q = q.bind(s.as_str());
                        }
                    }
                    q.execute(&mut *tx.tx).await.map_err(err)?;
                }
                Ok(())
            }

            /// The stored text of a status (its serde name, as in the body).
            fn status_text(s: trove_core::state::ServiceStatus) -> Result<String> {
                match serde_json::to_value(s) {
                    Ok(serde_json::Value::String(t)) => Ok(t),
                    _ => Err(Error::backend(B, format!("service status {s:?} has no text form"), false)),
                }
            }

            async fn upsert_backup(tx: &mut Tx, b: &Backup) -> Result<()> {
                sqlx::query(
                    "INSERT INTO backups (id, tenant_id, instance_id, deleted, updated, body) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, \
                     instance_id = excluded.instance_id, deleted = excluded.deleted, updated = excluded.updated, \
                     body = excluded.body",
                )
                .bind(b.id.to_string())
                .bind(b.tenant_id.as_str())
                .bind(b.instance_id.map(|u| u.to_string()))
                .bind(b.deleted)
                .bind(nanos(b.updated))
                .bind(to_body(B, b)?)
                .execute(&mut *tx.tx)
                .await
                .map_err(err)?;
                Ok(())
            }

            async fn upsert_configuration(tx: &mut Tx, c: &Configuration) -> Result<()> {
                sqlx::query(
                    "INSERT INTO configurations (id, tenant_id, deleted, created, body) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, deleted = excluded.deleted, \
                     created = excluded.created, body = excluded.body",
                )
                .bind(c.id.to_string())
                .bind(c.tenant_id.as_str())
                .bind(c.deleted)
                .bind(nanos(c.created))
                .bind(to_body(B, c)?)
                .execute(&mut *tx.tx)
                .await
                .map_err(err)?;
                Ok(())
            }

            /// The `instance_id` key column of a backup strategy: '' for the tenant-wide one.
            fn strategy_key(instance_id: Option<uuid::Uuid>) -> String {
                instance_id.map(|i| i.to_string()).unwrap_or_default()
            }

            async fn apply(tx: &mut Tx, w: &Write) -> Result<()> {
                match w {
                    Write::Instance { instance, expect } => write_instance(tx, instance, *expect).await,
                    Write::Workflow { workflow, expect } => write_workflow(tx, workflow, *expect).await,
                    Write::ServiceStatus(s) => upsert_statuses(tx, std::slice::from_ref(s), false).await,
                    Write::Backup(b) => upsert_backup(tx, b).await,
                    Write::Configuration(c) => upsert_configuration(tx, c).await,
                    Write::RootHistory(r) => {
                        sqlx::query(
                            "INSERT INTO root_history (instance_id, body) VALUES ($1, $2) \
                             ON CONFLICT (instance_id) DO NOTHING",
                        )
                        .bind(r.instance_id.to_string())
                        .bind(to_body(B, r)?)
                        .execute(&mut *tx.tx)
                        .await
                        .map_err(err)?;
                        Ok(())
                    }
                    Write::DeleteRootHistory(id) => {
                        sqlx::query("DELETE FROM root_history WHERE instance_id = $1")
                            .bind(id.to_string())
                            .execute(&mut *tx.tx)
                            .await
                            .map_err(err)?;
                        Ok(())
                    }
                    Write::BackupStrategy(st) => {
                        sqlx::query(
                            "INSERT INTO backup_strategies (tenant_id, instance_id, body) VALUES ($1, $2, $3) \
                             ON CONFLICT (tenant_id, instance_id) DO UPDATE SET body = excluded.body",
                        )
                        .bind(st.tenant_id.as_str())
                        .bind(strategy_key(st.instance_id))
                        .bind(to_body(B, st)?)
                        .execute(&mut *tx.tx)
                        .await
                        .map_err(err)?;
                        Ok(())
                    }
                    Write::BackupSchedule { schedule, expect } => write_schedule(tx, schedule, *expect).await,
                    Write::DeleteBackupSchedule(id) => {
                        sqlx::query("DELETE FROM backup_schedules WHERE id = $1")
                            .bind(id.to_string())
                            .execute(&mut *tx.tx)
                            .await
                            .map_err(err)?;
                        Ok(())
                    }
                    Write::Cluster { cluster, expect } => write_cluster(tx, cluster, *expect).await,
                    Write::Event(e) => {
                        sqlx::query(
                            "INSERT INTO events (id, tenant_id, at, body) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, at = excluded.at, \
                             body = excluded.body",
                        )
                        .bind(e.id.to_string())
                        .bind(e.tenant_id.as_str())
                        .bind(e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                        .bind(to_body(B, e)?)
                        .execute(&mut *tx.tx)
                        .await
                        .map_err(err)?;
                        Ok(())
                    }
                    Write::DeleteBackupStrategy { tenant_id, instance_id } => {
                        sqlx::query("DELETE FROM backup_strategies WHERE tenant_id = $1 AND instance_id = $2")
                            .bind(tenant_id.as_str())
                            .bind(strategy_key(*instance_id))
                            .execute(&mut *tx.tx)
                            .await
                            .map_err(err)?;
                        Ok(())
                    }
                }
            }

            async fn usage_with(
                conn: &mut <$Db as sqlx::Database>::Connection,
                tenant_id: &str,
            ) -> Result<QuotaUsage> {
                let i = sqlx::query(
                    "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(ram_mb), 0) AS BIGINT) AS ram, \
                     CAST(COALESCE(SUM(volume_size), 0) AS BIGINT) AS vol \
                     FROM instances WHERE tenant_id = $1 AND NOT deleted",
                )
                .bind(tenant_id)
                .fetch_one(&mut *conn)
                .await
                .map_err(err)?;
                let b = sqlx::query("SELECT COUNT(*) AS n FROM backups WHERE tenant_id = $1 AND NOT deleted")
                    .bind(tenant_id)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(err)?;
                Ok(QuotaUsage {
                    instances: i.try_get::<i64, _>("n").map_err(err)?,
                    ram: i.try_get::<i64, _>("ram").map_err(err)?,
                    volumes: i.try_get::<i64, _>("vol").map_err(err)?,
                    backups: b.try_get::<i64, _>("n").map_err(err)?,
                })
            }

            async fn limits_with<'c, E>(exec: E, tenant_id: &str) -> Result<QuotaLimits>
            where
                E: sqlx::Executor<'c, Database = $Db>,
            {
                let row = sqlx::query("SELECT body FROM quotas WHERE tenant_id = $1")
                    .bind(tenant_id)
                    .fetch_optional(exec)
                    .await
                    .map_err(err)?;
                match row {
                    Some(r) => from_body(B, "quotas", &body_of(&r)?),
                    None => Ok(QuotaLimits::default()),
                }
            }

            #[async_trait]
            impl InfraStore for $Store {
                fn catalog_generation(&self) -> u64 {
                    self.catalog.get()
                }

                async fn put_datastore(&self, ds: &Datastore) -> Result<()> {
                    let _bump = self.catalog.write();
                    let mut tx = self.begin_write(None).await?;
                    sqlx::query(
                        "INSERT INTO datastores (id, name, default_version_id, body) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                         default_version_id = excluded.default_version_id, body = excluded.body",
                    )
                    .bind(ds.id.to_string())
                    .bind(ds.name.as_str())
                    .bind(ds.default_version_id.map(|u| u.to_string()))
                    .bind(to_body(B, ds)?)
                    .execute(&mut *tx.tx)
                    .await
                    .map_err(|e| {
                        conflict_on_unique(e, || format!("A datastore named '{}' already exists.", ds.name))
                    })?;
                    tx.commit().await
                }

                async fn get_datastore(&self, id_or_name: &str) -> Result<Option<Datastore>> {
                    if let Ok(id) = uuid::Uuid::parse_str(id_or_name) {
                        let row = sqlx::query("SELECT body FROM datastores WHERE id = $1")
                            .bind(id.to_string())
                            .fetch_optional(self.pool())
                            .await
                            .map_err(err)?;
                        if let Some(r) = row {
                            return Ok(Some(from_body(B, "datastores", &body_of(&r)?)?));
                        }
                    }
                    let row = sqlx::query("SELECT body FROM datastores WHERE name = $1")
                        .bind(id_or_name)
                        .fetch_optional(self.pool())
                        .await
                        .map_err(err)?;
                    row.map(|r| from_body(B, "datastores", &body_of(&r)?)).transpose()
                }

                async fn list_datastores(&self) -> Result<Vec<Datastore>> {
                    let rows = sqlx::query("SELECT body FROM datastores ORDER BY name, id")
                        .fetch_all(self.pool())
                        .await
                        .map_err(err)?;
                    bodies("datastores", &rows)
                }

                async fn delete_datastore(&self, id: uuid::Uuid) -> Result<()> {
                    let _bump = self.catalog.write();
                    let id = id.to_string();
                    let mut tx = self.begin_write(None).await?;
                    for sql in [
                        "DELETE FROM config_params WHERE datastore_version_id IN \
                         (SELECT id FROM datastore_versions WHERE datastore_id = $1)",
                        "DELETE FROM datastore_versions WHERE datastore_id = $1",
                        "DELETE FROM datastores WHERE id = $1",
                    ] {
                        sqlx::query(sql).bind(id.as_str()).execute(&mut *tx.tx).await.map_err(err)?;
                    }
                    tx.commit().await
                }

                async fn put_datastore_version(&self, v: &DatastoreVersion) -> Result<()> {
                    let _bump = self.catalog.write();
                    let mut tx = self.begin_write(None).await?;
                    let ds = sqlx::query("SELECT id FROM datastores WHERE id = $1")
                        .bind(v.datastore_id.to_string())
                        .fetch_optional(&mut *tx.tx)
                        .await
                        .map_err(err)?;
                    if ds.is_none() {
                        return Err(Error::not_found("Datastore", v.datastore_id));
                    }
                    sqlx::query(
                        "INSERT INTO datastore_versions (id, datastore_id, name, body) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (id) DO UPDATE SET datastore_id = excluded.datastore_id, \
                         name = excluded.name, body = excluded.body",
                    )
                    .bind(v.id.to_string())
                    .bind(v.datastore_id.to_string())
                    .bind(v.name.as_str())
                    .bind(to_body(B, v)?)
                    .execute(&mut *tx.tx)
                    .await
                    .map_err(|e| {
                        conflict_on_unique(e, || format!("The datastore already has a version named '{}'.", v.name))
                    })?;
                    tx.commit().await
                }

                async fn get_datastore_version(&self, id: uuid::Uuid) -> Result<Option<DatastoreVersion>> {
                    let row = sqlx::query("SELECT body FROM datastore_versions WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(self.pool())
                        .await
                        .map_err(err)?;
                    row.map(|r| from_body(B, "datastore_versions", &body_of(&r)?)).transpose()
                }

                async fn list_datastore_versions(
                    &self,
                    datastore_id: Option<uuid::Uuid>,
                ) -> Result<Vec<DatastoreVersion>> {
                    let rows = match datastore_id {
                        Some(d) => {
                            sqlx::query("SELECT body FROM datastore_versions WHERE datastore_id = $1 ORDER BY name, id")
                                .bind(d.to_string())
                                .fetch_all(self.pool())
                                .await
                        }
                        None => {
                            sqlx::query("SELECT body FROM datastore_versions ORDER BY name, id")
                                .fetch_all(self.pool())
                                .await
                        }
                    }
                    .map_err(err)?;
                    bodies("datastore_versions", &rows)
                }

                async fn delete_datastore_version(&self, id: uuid::Uuid) -> Result<()> {
                    let _bump = self.catalog.write();
                    let sid = id.to_string();
                    let mut tx = self.begin_write(None).await?;
                    for sql in [
                        "DELETE FROM config_params WHERE datastore_version_id = $1",
                        "DELETE FROM datastore_versions WHERE id = $1",
                    ] {
                        sqlx::query(sql).bind(sid.as_str()).execute(&mut *tx.tx).await.map_err(err)?;
                    }
                    let rows = sqlx::query("SELECT body FROM datastores WHERE default_version_id = $1")
                        .bind(sid.as_str())
                        .fetch_all(&mut *tx.tx)
                        .await
                        .map_err(err)?;
                    for r in rows {
                        let mut ds: Datastore = from_body(B, "datastores", &body_of(&r)?)?;
                        ds.default_version_id = None;
                        sqlx::query("UPDATE datastores SET default_version_id = NULL, body = $2 WHERE id = $1")
                            .bind(ds.id.to_string())
                            .bind(to_body(B, &ds)?)
                            .execute(&mut *tx.tx)
                            .await
                            .map_err(err)?;
                    }
                    tx.commit().await
                }

                async fn put_flavor(&self, f: &Flavor) -> Result<()> {
                    let _bump = self.catalog.write();
                    let mut tx = self.begin_write(None).await?;
                    sqlx::query(
                        "INSERT INTO flavors (id, body) VALUES ($1, $2) \
                         ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    )
                    .bind(f.id.as_str())
                    .bind(to_body(B, f)?)
                    .execute(&mut *tx.tx)
                    .await
                    .map_err(err)?;
                    tx.commit().await
                }

                async fn get_flavor(&self, id: &str) -> Result<Option<Flavor>> {
                    let row = sqlx::query("SELECT body FROM flavors WHERE id = $1")
                        .bind(id)
                        .fetch_optional(self.pool())
                        .await
                        .map_err(err)?;
                    row.map(|r| from_body(B, "flavors", &body_of(&r)?)).transpose()
                }

                async fn list_flavors(&self) -> Result<Vec<Flavor>> {
                    let rows =
                        sqlx::query("SELECT body FROM flavors ORDER BY id").fetch_all(self.pool()).await.map_err(err)?;
                    bodies("flavors", &rows)
                }

                async fn delete_flavor(&self, id: &str) -> Result<()> {
                    let _bump = self.catalog.write();
                    let mut tx = self.begin_write(None).await?;
                    sqlx::query("DELETE FROM flavors WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx.tx)
                        .await
                        .map_err(err)?;
                    tx.commit().await
                }

                async fn put_config_params(&self, params: &[ConfigParam]) -> Result<()> {
                    let mut tx = self.begin_write(None).await?;
                    for p in params {
                        sqlx::query(
                            "INSERT INTO config_params (datastore_version_id, name, body) VALUES ($1, $2, $3) \
                             ON CONFLICT (datastore_version_id, name) DO UPDATE SET body = excluded.body",
                        )
                        .bind(p.datastore_version_id.to_string())
                        .bind(p.name.as_str())
                        .bind(to_body(B, p)?)
                        .execute(&mut *tx.tx)
                        .await
                        .map_err(err)?;
                    }
                    tx.commit().await
                }

                async fn list_config_params(&self, datastore_version_id: uuid::Uuid) -> Result<Vec<ConfigParam>> {
                    let rows =
                        sqlx::query("SELECT body FROM config_params WHERE datastore_version_id = $1 ORDER BY name")
                            .bind(datastore_version_id.to_string())
                            .fetch_all(self.pool())
                            .await
                            .map_err(err)?;
                    bodies("config_params", &rows)
                }

                async fn delete_config_param(&self, datastore_version_id: uuid::Uuid, name: &str) -> Result<bool> {
                    let mut tx = self.begin_write(None).await?;
                    let done = sqlx::query("DELETE FROM config_params WHERE datastore_version_id = $1 AND name = $2")
                        .bind(datastore_version_id.to_string())
                        .bind(name)
                        .execute(&mut *tx.tx)
                        .await
                        .map_err(err)?;
                    tx.commit().await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn get_configuration(&self, id: uuid::Uuid) -> Result<Option<Configuration>> {
                    let row = sqlx::query("SELECT body FROM configurations WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(self.pool())
                        .await
                        .map_err(err)?;
                    row.map(|r| from_body(B, "configurations", &body_of(&r)?)).transpose()
                }

                async fn list_configurations(&self, tenant_id: &str) -> Result<Vec<Configuration>> {
                    let rows = sqlx::query(
                        "SELECT body FROM configurations WHERE tenant_id = $1 AND NOT deleted ORDER BY created DESC, id",
                    )
                    .bind(tenant_id)
                    .fetch_all(self.pool())
                    .await
                    .map_err(err)?;
                    bodies("configurations", &rows)
                }

                async fn get_instance(&self, id: uuid::Uuid) -> Result<Option<Instance>> {
                    let row = sqlx::query("SELECT body, version FROM instances WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(self.pool())
                        .await
                        .map_err(err)?;
                    row.map(|r| instance_of(&r)).transpose()
                }

                async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
                    let mut w = Where::default();
                    w.eq("tenant_id", filter.tenant_id.clone())
                        .cond(!filter.include_deleted, "NOT deleted")
                        .cond(!filter.include_clustered && filter.cluster_id.is_none(), "NOT clustered")
                        .cond(filter.cluster_id.is_some(), "clustered")
                        .eq("replica_of", filter.replica_of.map(|r| r.to_string()))
                        .eq("configuration_id", filter.configuration_id.map(|c| c.to_string()));
                    let sql = w.sql("SELECT body, version FROM instances", "created DESC, id");
                    let mut q = sqlx::query(&sql);
                    for b in &w.binds {
                        q = q.bind(b.as_str());
                    }
                    let rows = q.fetch_all(self.pool()).await.map_err(err)?;
                    let all: Vec<Instance> = rows.iter().map(instance_of).collect::<Result<_>>()?;
                    // Members of one cluster: the `clustered` rows, narrowed by the body's cluster id.
                    Ok(match filter.cluster_id {
                        Some(_) => all.into_iter().filter(|i| filter.matches(i)).collect(),
                        None => all,
                    })
                }

                async fn list_replica_ids(&self, sources: &[uuid::Uuid]) -> Result<Vec<(uuid::Uuid, uuid::Uuid)>> {
                    let mut out = Vec::new();
                    for chunk in sources.chunks(CHUNK) {
                        let sql = format!(
                            "SELECT replica_of, id FROM instances WHERE NOT deleted AND replica_of IN ({}) ORDER BY created DESC, id",
                            list_placeholders(chunk.len())
                        );
                        let mut q = sqlx::query(&sql);
                        for id in chunk {
                            q = q.bind(id.to_string());
                        }
                        for row in q.fetch_all(self.pool()).await.map_err(err)? {
                            let parse = |col: &str| -> Result<uuid::Uuid> {
                                let s = row.try_get::<String, _>(col).map_err(err)?;
                                uuid::Uuid::parse_str(&s).map_err(|e| {
                                    Error::backend(B, format!("instances.{col} is not a UUID: {e}"), false)
                                })
                            };
                            out.push((parse("replica_of")?, parse("id")?));
                        }
                    }
                    Ok(out)
                }

                async fn get_service_status(&self, instance_id: uuid::Uuid) -> Result<Option<ServiceStatusRecord>> {
                    let row = sqlx::query("SELECT body FROM service_statuses WHERE instance_id = $1")
                        .bind(instance_id.to_string())
                        .fetch_optional(self.pool())
                        .await
                        .map_err(err)?;
                    row.map(|r| from_body(B, "service_statuses", &body_of(&r)?)).transpose()
                }

                async fn get_service_statuses(&self, instance_ids: &[uuid::Uuid]) -> Result<Vec<ServiceStatusRecord>> {
                    let mut out = Vec::with_capacity(instance_ids.len());
                    for chunk in instance_ids.chunks(CHUNK) {
                        let sql = format!(
                            "SELECT body FROM service_statuses WHERE instance_id IN ({})",
                            list_placeholders(chunk.len())
                        );
                        let mut q = sqlx::query(&sql);
                        for id in chunk {
                            q = q.bind(id.to_string());
                        }
                        let rows = q.fetch_all(self.pool()).await.map_err(err)?;
                        out.extend(bodies::<ServiceStatusRecord>("service_statuses", &rows)?);
                    }
                    Ok(out)
                }

                async fn put_service_statuses(&self, batch: &[ServiceStatusRecord]) -> Result<()> {
                    if batch.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self.begin_write(None).await?;
                    upsert_statuses(&mut tx, batch, true).await?;
                    tx.commit().await
                }

                async fn get_backup(&self, id: uuid::Uuid) -> Result<Option<Backup>> {
                    let row = sqlx::query("SELECT body FROM backups WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(self.pool())
                        .await
                        .map_err(err)?;
                    row.map(|r| from_body(B, "backups", &body_of(&r)?)).transpose()
                }

                async fn list_events(&self, filter: &trove_core::model::EventFilter) -> Result<Vec<trove_core::model::Event>> {
                    let rows = match &filter.tenant_id {
                        Some(t) => sqlx::query("SELECT body FROM events WHERE tenant_id = $1 ORDER BY at, id")
                            .bind(t.as_str())
                            .fetch_all(self.pool())
                            .await,
                        None => sqlx::query("SELECT body FROM events ORDER BY at, id")
                            .fetch_all(self.pool())
                            .await,
                    }
                    .map_err(err)?;
                    let mut out = Vec::with_capacity(rows.len());
                    for r in &rows {
                        let e: trove_core::model::Event = from_body(B, "events", &body_of(r)?)?;
                        if filter.matches(&e) {
                            out.push(e);
                        }
                    }
                    Ok(out)
                }

                async fn list_backup_schedules(&self, instance_id: Option<uuid::Uuid>) -> Result<Vec<BackupSchedule>> {
                    let rows = match instance_id {
                        Some(i) => sqlx::query("SELECT body, version FROM backup_schedules WHERE instance_id = $1 ORDER BY id")
                            .bind(i.to_string())
                            .fetch_all(self.pool())
                            .await,
                        None => sqlx::query("SELECT body, version FROM backup_schedules ORDER BY id")
                            .fetch_all(self.pool())
                            .await,
                    }
                    .map_err(err)?;
                    let mut out = rows
                        .iter()
                        .map(|r| {
                            let mut s: BackupSchedule = from_body(B, "backup_schedules", &body_of(r)?)?;
                            s.version = version_of(r)?;
                            Ok(s)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
                    Ok(out)
                }

                async fn list_backup_strategies(
                    &self,
                    filter: &BackupStrategyFilter,
                ) -> Result<Vec<BackupStrategy>> {
                    let mut w = Where::default();
                    w.eq("tenant_id", filter.tenant_id.clone())
                        .eq("instance_id", filter.instance_id.map(|i| i.to_string()));
                    let sql = w.sql("SELECT body FROM backup_strategies", "tenant_id, instance_id");
                    let mut q = sqlx::query(&sql);
                    for b in &w.binds {
                        q = q.bind(b.as_str());
                    }
                    let rows = q.fetch_all(self.pool()).await.map_err(err)?;
                    bodies("backup_strategies", &rows)
                }

                async fn list_backups(&self, filter: &BackupFilter) -> Result<Vec<Backup>> {
                    let mut w = Where::default();
                    w.eq("tenant_id", filter.tenant_id.clone())
                        .eq("instance_id", filter.instance_id.map(|i| i.to_string()))
                        .cond(!filter.include_deleted, "NOT deleted");
                    let sql = w.sql("SELECT body FROM backups", "updated DESC, id");
                    let mut q = sqlx::query(&sql);
                    for b in &w.binds {
                        q = q.bind(b.as_str());
                    }
                    let rows = q.fetch_all(self.pool()).await.map_err(err)?;
                    bodies("backups", &rows)
                }

                async fn get_quota_limits(&self, tenant_id: &str) -> Result<QuotaLimits> {
                    limits_with(self.pool(), tenant_id).await
                }

                async fn set_quota_limits(&self, tenant_id: &str, limits: &QuotaLimits) -> Result<()> {
                    let mut tx = self.begin_write(None).await?;
                    sqlx::query(
                        "INSERT INTO quotas (tenant_id, body) VALUES ($1, $2) \
                         ON CONFLICT (tenant_id) DO UPDATE SET body = excluded.body",
                    )
                    .bind(tenant_id)
                    .bind(to_body(B, limits)?)
                    .execute(&mut *tx.tx)
                    .await
                    .map_err(err)?;
                    tx.commit().await
                }

                async fn quota_usage(&self, tenant_id: &str) -> Result<QuotaUsage> {
                    let mut conn = self.pool().acquire().await.map_err(err)?;
                    usage_with(&mut conn, tenant_id).await
                }

                async fn get_cluster(&self, id: uuid::Uuid) -> Result<Option<trove_core::model::Cluster>> {
                    let row = sqlx::query("SELECT body, version FROM clusters WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(self.pool())
                        .await
                        .map_err(err)?;
                    row.map(|r| {
                        let mut c: trove_core::model::Cluster = from_body(B, "clusters", &body_of(&r)?)?;
                        c.version = version_of(&r)?;
                        Ok(c)
                    })
                    .transpose()
                }

                async fn list_clusters(&self, tenant_id: Option<&str>) -> Result<Vec<trove_core::model::Cluster>> {
                    let rows = match tenant_id {
                        Some(t) => sqlx::query(
                            "SELECT body, version FROM clusters WHERE tenant_id = $1 AND NOT deleted ORDER BY created, id",
                        )
                        .bind(t)
                        .fetch_all(self.pool())
                        .await,
                        None => sqlx::query("SELECT body, version FROM clusters WHERE NOT deleted ORDER BY created, id")
                            .fetch_all(self.pool())
                            .await,
                    }
                    .map_err(err)?;
                    rows.iter()
                        .map(|r| {
                            let mut c: trove_core::model::Cluster = from_body(B, "clusters", &body_of(r)?)?;
                            c.version = version_of(r)?;
                            Ok(c)
                        })
                        .collect()
                }

                async fn get_root_history(&self, instance_id: uuid::Uuid) -> Result<Option<RootHistory>> {
                    let row = sqlx::query("SELECT body FROM root_history WHERE instance_id = $1")
                        .bind(instance_id.to_string())
                        .fetch_optional(self.pool())
                        .await
                        .map_err(err)?;
                    row.map(|r| from_body(B, "root_history", &body_of(&r)?)).transpose()
                }

                async fn commit(&self, change: ChangeSet) -> Result<()> {
                    let tenant = change.quota.as_ref().map(|q| q.tenant_id.as_str());
                    let mut tx = self.begin_write(tenant).await?;
                    for w in &change.writes {
                        // On error the transaction is dropped, which rolls it back.
                        apply(&mut tx, w).await?;
                    }
                    if let Some(q) = &change.quota {
                        let usage = usage_with(&mut *tx.tx, &q.tenant_id).await?;
                        let limits = limits_with(&mut *tx.tx, &q.tenant_id).await?;
                        let over = usage.over(&limits, &q.resources);
                        if !over.is_empty() {
                            return Err(Error::QuotaExceeded {
                                resources: over.iter().map(|r| r.as_str().to_string()).collect(),
                            });
                        }
                    }
                    tx.commit().await
                }

                async fn get_workflow(&self, id: uuid::Uuid) -> Result<Option<Workflow>> {
                    let row = sqlx::query("SELECT body, version FROM workflows WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(self.pool())
                        .await
                        .map_err(err)?;
                    row.map(|r| workflow_of(&r)).transpose()
                }

                async fn list_open_workflows(&self) -> Result<Vec<Workflow>> {
                    let rows = sqlx::query("SELECT body, version FROM workflows WHERE is_open ORDER BY created, id")
                        .fetch_all(self.pool())
                        .await
                        .map_err(err)?;
                    rows.iter().map(workflow_of).collect()
                }

                async fn claim_workflow(
                    &self,
                    id: uuid::Uuid,
                    worker: &str,
                    now: DateTime<Utc>,
                    lease_until: DateTime<Utc>,
                ) -> Result<Option<Workflow>> {
                    let mut tx = self.begin_write(None).await?;
                    let sql = format!("SELECT body, version FROM workflows WHERE id = $1{}", <$Store>::FOR_UPDATE);
                    let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&mut *tx.tx).await.map_err(err)?;
                    let Some(row) = row else { return Ok(None) };
                    let mut w = workflow_of(&row)?;
                    if !workflow_claimable(&w, worker, now) {
                        return Ok(None);
                    }
                    if !workflow_claim_renews(&w, worker, now) {
                        w.attempts = w.attempts.saturating_add(1);
                    }
                    let old = w.version;
                    w.owner = Some(worker.to_string());
                    w.lease_until = Some(lease_until);
                    w.updated = now;
                    w.version = old + 1;
                    let done = sqlx::query(
                        "UPDATE workflows SET version = version + 1, body = $2 WHERE id = $1 AND version = $3",
                    )
                    .bind(id.to_string())
                    .bind(to_body(B, &w)?)
                    .bind(i64::try_from(old).unwrap_or(i64::MAX))
                    .execute(&mut *tx.tx)
                    .await
                    .map_err(err)?;
                    if done.rows_affected() != 1 {
                        return Ok(None);
                    }
                    tx.commit().await?;
                    Ok(Some(w))
                }

                async fn append_journal(&self, entry: &JournalEntry) -> Result<()> {
                    let mut tx = self.begin_write(None).await?;
                    sqlx::query("INSERT INTO journal (workflow_id, body) VALUES ($1, $2)")
                        .bind(entry.workflow_id.to_string())
                        .bind(to_body(B, entry)?)
                        .execute(&mut *tx.tx)
                        .await
                        .map_err(err)?;
                    tx.commit().await
                }

                async fn journal(&self, workflow_id: uuid::Uuid) -> Result<Vec<JournalEntry>> {
                    let rows = sqlx::query("SELECT body FROM journal WHERE workflow_id = $1 ORDER BY seq")
                        .bind(workflow_id.to_string())
                        .fetch_all(self.pool())
                        .await
                        .map_err(err)?;
                    bodies("journal", &rows)
                }
            }
        }
    };
}
