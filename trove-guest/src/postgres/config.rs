//! PostgreSQL's configuration: `trove.conf` (included by `postgresql.conf`) rendered from the recorded state,
//! and changed parameters applied with a reload (see [`crate::overrides`]).

use async_trait::async_trait;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};
use std::time::Duration;

use trove_core::model::Manager;
use trove_core::{Error, Result};

use super::{Postgres, ADMIN_DB};
use crate::common::{override_value, share_mb, write_engine_file};
use crate::overrides::{rules_need_restart, Configurable};

#[async_trait]
impl Configurable for Postgres {
    fn render_config(&self) -> Result<()> {
        let st = self.base.layout.state()?;
        let bind = if self.base.ctx.bind_address.is_empty() {
            "127.0.0.1"
        } else {
            &self.base.ctx.bind_address
        };
        let mut conf = format!(
            "# Rendered by trove-guest for {mem} MB of RAM; do not edit (apply a configuration group instead).\n\
             listen_addresses = '{bind}'\n\
             port = {port}\n\
             unix_socket_directories = '{sock}'\n\
             unix_socket_permissions = 0700\n\
             # 25 % of the flavor RAM\n\
             shared_buffers = {sb}MB\n\
             # 75 % of the flavor RAM\n\
             effective_cache_size = {ecs}MB\n\
             max_connections = {mc}\n\
             standard_conforming_strings = on\n\
             password_encryption = 'scram-sha-256'\n",
            mem = st.memory_mb,
            port = self.base.ctx.port,
            sock = self.socket_dir.display(),
            sb = share_mb(st.memory_mb, 0.25, 16),
            ecs = share_mb(st.memory_mb, 0.75, 32),
            mc = (st.memory_mb / 8).clamp(20, 500),
        );
        if !st.overrides.is_empty() {
            conf.push_str("# configuration overrides\n");
            for (k, v) in &st.overrides {
                conf.push_str(&format!("{k} = '{}'\n", override_value(k, v)?));
            }
        }
        // WAL archiving for incremental backups and point-in-time restore (last: no override replaces it).
        conf.push_str(&format!(
            "# WAL archive for backups (see the guest's postgres::wal)\narchive_mode = on\narchive_command = {}\n",
            super::wal::archive_command(&self.wal_spool())
        ));
        conf.push_str(&self.replication_conf()?);
        conf.push_str(&self.tls_conf()?);
        write_engine_file(&self.conf_path(), &conf, self.base.run_as)
    }

    async fn apply_changes(&self, changed: Vec<String>) -> Result<Vec<String>> {
        // An engine that does not answer starts with the rendered file.
        match self.connect_admin(ADMIN_DB).await {
            Ok(mut c) => {
                let r = reload(&mut c, &changed).await;
                let _ = c.close().await;
                r
            }
            Err(_) => Ok(changed),
        }
    }
}

/// Reloads the (already rendered) config file and waits until this session has seen the reload;
/// a restart is needed when a changed parameter can only be set at server start.
pub(super) async fn reload(conn: &mut PgConnection, changed: &[String]) -> Result<Vec<String>> {
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
