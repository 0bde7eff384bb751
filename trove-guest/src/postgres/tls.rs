//! TLS for PostgreSQL: `ssl`, `ssl_cert_file`, `ssl_key_file` (and `ssl_ca_file` for `mtls`) in `trove.conf`;
//! the `host` lines of `pg_hba.conf` become `hostssl` for `enforced` and `mtls` (with `clientcert=verify-ca` for
//! `mtls`); the guest's own unix-socket (`local`) access is untouched. Everything applies with a configuration
//! reload, so no change needs a restart.

use async_trait::async_trait;
use sqlx::{Connection, Row};
use std::time::{Duration, Instant};

use trove_core::model::SslMode;
use trove_core::{Error, Result};

use super::{exec_sql, Postgres, ADMIN_DB};
use crate::common::{io_err, log_tail, write_engine_file, BACKEND};
use crate::engine::Engine;
use crate::overrides::Configurable;
use crate::tls::{engine_files, state, TlsEngine, TlsSetting};

/// `pg_hba.conf` with every `host`/`hostssl`/`hostnossl` line turned into what `mode` needs.
pub(crate) fn rewrite_hba(text: &str, mode: Option<SslMode>) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        let trimmed = line.trim_start();
        let mut words = trimmed.split_whitespace();
        let first = words.next().unwrap_or("");
        if matches!(first, "host" | "hostssl" | "hostnossl") {
            let kind = match mode {
                Some(m) if m.refuses_plain() => "hostssl",
                _ => "host",
            };
            let mut fields: Vec<&str> = words.filter(|w| !w.starts_with("clientcert=")).collect();
            if mode == Some(SslMode::Mtls) {
                fields.push("clientcert=verify-ca");
            }
            out.push_str(kind);
            for f in fields {
                out.push_str("    ");
                out.push_str(f);
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

impl Postgres {
    /// The `trove.conf` lines of the recorded TLS setting.
    pub(super) fn tls_conf(&self) -> Result<String> {
        let st = state(&self.base)?;
        let Some(mode) = st.current.mode else {
            return Ok("ssl = off\n".into());
        };
        let (cert, key, ca) = engine_files(&self.base);
        let ca = if mode == SslMode::Mtls {
            ca.display().to_string()
        } else {
            String::new()
        };
        Ok(format!(
            "# TLS ({mode})\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{ca}'\n",
            cert.display(),
            key.display(),
        ))
    }

    fn render_hba(&self, mode: Option<SslMode>) -> Result<()> {
        let hba = self.base.layout.data_dir.join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba).map_err(|e| io_err("read", &hba, e))?;
        let new = rewrite_hba(&text, mode);
        if new != text {
            write_engine_file(&hba, &new, self.base.run_as)?;
        }
        Ok(())
    }

    async fn conf_load_time(&self) -> Result<(String, String)> {
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let row = sqlx::query("SELECT pg_conf_load_time()::text, current_setting('ssl')")
            .fetch_one(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        Ok((
            row.try_get(0).map_err(|e| self.err(e))?,
            row.try_get(1).map_err(|e| self.err(e))?,
        ))
    }
}

#[async_trait]
impl TlsEngine for Postgres {
    fn render_tls(&self) -> Result<()> {
        self.render_config()?;
        let mode = state(&self.base)?.current.mode;
        self.render_hba(mode)
    }

    async fn apply_live(&self, _old: &TlsSetting, new: &TlsSetting) -> Result<bool> {
        let (before, _) = self.conf_load_time().await?;
        let mut c = self.connect_admin(ADMIN_DB).await?;
        exec_sql(&mut c, "SELECT pg_reload_conf()")
            .await
            .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        // A new session sees the postmaster's load time once it has re-read its files.
        let want = if new.is_on() { "on" } else { "off" };
        let start = Instant::now();
        loop {
            let (t, ssl) = self.conf_load_time().await?;
            if t != before {
                if ssl == want {
                    return Ok(false);
                }
                return Err(Error::backend(
                    BACKEND,
                    format!(
                        "PostgreSQL did not take the TLS settings (ssl is {ssl}): {}",
                        log_tail(&self.log_file(), 400)
                    ),
                    false,
                ));
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(Error::backend(
                    BACKEND,
                    "PostgreSQL did not reload its configuration within 10 s",
                    true,
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hba_lines_follow_the_mode() {
        let text = "# comment host\nlocal all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n\
                    hostssl all all all scram-sha-256 clientcert=verify-ca\n";
        let enforced = rewrite_hba(text, Some(SslMode::Enforced));
        assert!(enforced.contains("# comment host\nlocal all all scram-sha-256\n"));
        assert_eq!(
            enforced
                .lines()
                .filter(|l| l.starts_with("hostssl"))
                .count(),
            2
        );
        assert!(!enforced.contains("clientcert"));
        let mtls = rewrite_hba(text, Some(SslMode::Mtls));
        assert_eq!(mtls.matches("clientcert=verify-ca").count(), 2);
        for m in [None, Some(SslMode::Basic)] {
            let plain = rewrite_hba(&mtls, m);
            assert!(!plain.contains("hostssl") && !plain.contains("clientcert"));
            assert_eq!(plain.lines().filter(|l| l.starts_with("host ")).count(), 2);
        }
    }
}
