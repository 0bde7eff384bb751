//! The MySQL family's configuration: `my.cnf` rendered from the recorded state, and changed parameters applied
//! live with `SET GLOBAL` (see [`crate::overrides`]).

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnection, MySqlDatabaseError};
use sqlx::Connection;

use trove_core::model::Manager;
use trove_core::{Error, Result};

use super::Mysql;
use crate::common::{override_value, share_mb, write_engine_file};
use crate::engine::Engine;
use crate::overrides::{read_rendered, rendered_value, rules_need_restart, Configurable};

/// MariaDB error: the variable is read-only (set only at startup).
const ER_INCORRECT_GLOBAL_LOCAL_VAR: u16 = 1238;

#[async_trait]
impl Configurable for Mysql {
    fn render_config(&self) -> Result<()> {
        let st = self.base.layout.state()?;
        let l = &self.base.layout;
        let pool_mb = share_mb(st.memory_mb, 0.5, 16);
        let max_conn = (st.memory_mb / 4).clamp(20, 1000);
        // Temporary files (large sorts, and the state transfer scripts of a Galera member, which read it too) go to
        // a directory of this instance's, never the machine's shared one, where two members' state transfers
        // could meet.
        let tmp = l.engine_dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| crate::common::io_err("create", &tmp, e))?;
        crate::common::set_mode(&tmp, 0o700)?;
        self.base.run_as.own(&tmp)?;
        let mut cnf = format!(
            "# Rendered by trove-guest for {mem} MB of RAM; do not edit (apply a configuration group instead).\n\
             [mysqld]\n\
             datadir = {data}\n\
             port = {port}\n\
             bind-address = {bind}\n\
             socket = {sock}\n\
             tmpdir = {tmp}\n\
             pid-file = {pid}\n\
             log-error = {log}\n\
             skip-name-resolve\n\
             character-set-server = utf8mb4\n\
             collation-server = utf8mb4_general_ci\n\
             # 50 % of the flavor RAM\n\
             innodb_buffer_pool_size = {pool_mb}M\n\
             max_connections = {max_conn}\n",
            mem = st.memory_mb,
            data = l.data_dir.display(),
            port = self.base.ctx.port,
            bind = if self.base.ctx.bind_address.is_empty() { "127.0.0.1" } else { &self.base.ctx.bind_address },
            sock = self.socket.display(),
            tmp = tmp.display(),
            pid = self.pid_file().display(),
            log = self.log_file().display(),
        );
        if !st.overrides.is_empty() {
            cnf.push_str("# configuration overrides\n");
            for (k, v) in &st.overrides {
                cnf.push_str(&format!("{k} = {}\n", override_value(k, v)?));
            }
        }
        cnf.push_str(&self.binlog_cnf()?);
        cnf.push_str(&self.galera_cnf()?);
        if st.read_only {
            cnf.push_str(
                "# a replica (or a fenced source): only the guest writes\nread_only = ON\n",
            );
        }
        cnf.push_str(&self.tls_cnf()?);
        cnf.push_str(&crate::logs::mysql_cnf(&self.base.layout)?);
        // Another option group: last, so that nothing above lands in it.
        cnf.push_str(&self.galera_sst_cnf()?);
        write_engine_file(&self.cnf_path(), &cnf, self.base.run_as)
    }

    async fn apply_changes(&self, changed: Vec<String>) -> Result<Vec<String>> {
        let cnf = read_rendered(&self.cnf_path(), "mysql")?;
        // An engine that does not answer starts with the rendered file.
        match self.connect_admin().await {
            Ok(mut c) => {
                let r = set_global(&mut c, &cnf, &changed).await;
                let _ = c.close().await;
                r
            }
            Err(_) => Ok(changed),
        }
    }
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

/// Sets each changed variable live; `cnf` is the config text rendered with the new overrides.
async fn set_global(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_values_are_numbers_or_quoted() {
        assert_eq!(mysql_value("120"), "120");
        assert_eq!(mysql_value("0.5"), "0.5");
        assert_eq!(mysql_value("16M"), "16777216");
        assert_eq!(mysql_value("STRICT_TRANS_TABLES"), "'STRICT_TRANS_TABLES'");
    }
}
