//! TLS for the MySQL family (MariaDB): `ssl_cert`/`ssl_key`/`ssl_ca` in `my.cnf`, `require_secure_transport`
//! for `enforced` (unix-socket connections, the guest's own, stay allowed).
//!
//! MariaDB cannot start or stop serving TLS without a restart (its certificate paths are read-only), so turning
//! TLS on or off answers `restart_required`; while it serves TLS, a new certificate (`FLUSH SSL`) and the mode
//! (`SET GLOBAL require_secure_transport`) apply live. `mtls` is refused: MariaDB requires client certificates
//! per account (`REQUIRE X509`), not server-wide.

use async_trait::async_trait;
use sqlx::{Connection, Row};

use trove_core::model::SslMode;
use trove_core::{Error, Result};

use super::{exec_sql, Mysql};
use crate::tls::{engine_files, state, TlsEngine, TlsSetting};

impl Mysql {
    /// The `[mysqld]` lines of the recorded TLS setting (empty when off).
    pub(super) fn tls_cnf(&self) -> Result<String> {
        let st = state(&self.base)?;
        let Some(mode) = st.current.mode else {
            return Ok(String::new());
        };
        let (cert, key, ca) = engine_files(&self.base);
        Ok(format!(
            "# TLS ({mode})\nssl_cert = {}\nssl_key = {}\nssl_ca = {}\nrequire_secure_transport = {}\n",
            cert.display(),
            key.display(),
            ca.display(),
            if mode.refuses_plain() { "ON" } else { "OFF" }
        ))
    }
}

#[async_trait]
impl TlsEngine for Mysql {
    fn check_mode(&self, mode: SslMode) -> Result<()> {
        match mode {
            SslMode::Basic | SslMode::Enforced => Ok(()),
            SslMode::Mtls => Err(Error::bad_request(format!(
                "SSL mode mtls is not supported for datastore {}: it requires client certificates per account, \
                 not server-wide; use basic or enforced.",
                self.base.manager
            ))),
        }
    }

    async fn apply_live(&self, _old: &TlsSetting, new: &TlsSetting) -> Result<bool> {
        let mut c = self.connect_admin().await?;
        let row = sqlx::query("SELECT CAST(@@have_ssl AS CHAR)")
            .fetch_one(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let have: String = row.try_get(0).map_err(|e| self.err(e))?;
        let serving = have.eq_ignore_ascii_case("YES");
        let restart = match (new.mode, serving) {
            (Some(mode), true) => {
                exec_sql(&mut c, "FLUSH SSL")
                    .await
                    .map_err(|e| self.err(e))?;
                let enforce = if mode.refuses_plain() { "ON" } else { "OFF" };
                exec_sql(
                    &mut c,
                    &format!("SET GLOBAL require_secure_transport = {enforce}"),
                )
                .await
                .map_err(|e| self.err(e))?;
                false
            }
            (Some(_), false) => true,
            (None, true) => {
                exec_sql(&mut c, "SET GLOBAL require_secure_transport = OFF")
                    .await
                    .map_err(|e| self.err(e))?;
                true
            }
            (None, false) => false,
        };
        let _ = c.close().await;
        Ok(restart)
    }
}
