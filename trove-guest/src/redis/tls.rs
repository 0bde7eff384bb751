//! TLS for Redis: `tls-cert-file`, `tls-key-file`, `tls-ca-cert-file` and `tls-auth-clients` (yes only for
//! `mtls`). Redis serves TLS and plain text on different ports: `enforced` and `mtls` move the instance's port
//! to TLS (`port 0`, `tls-port <port>`); `basic` keeps plain text on the instance's port and serves TLS on a
//! second port the guest picks (shown as `port` in the SSL view). Everything applies live with `CONFIG SET`;
//! the guest itself talks to Redis over a unix socket (`unixsocket`, mode 0700), which TLS leaves alone.

use async_trait::async_trait;
use std::path::PathBuf;

use trove_core::model::SslMode;
use trove_core::Result;

use super::Redis;
use crate::common::socket_path;
use crate::engine::Engine;
use crate::tls::{engine_generation_files, free_port, save_state, state, TlsEngine, TlsSetting};

impl Redis {
    /// The unix socket of the engine (the guest's admin connection).
    pub(super) fn admin_socket(&self) -> PathBuf {
        socket_path(
            &self.base.layout.engine_dir,
            "redis.sock",
            self.base.ctx.instance_id,
        )
    }

    /// (plain port, TLS port) of a setting; 0 = closed.
    fn ports(&self, setting: &TlsSetting) -> (u16, u16) {
        let p = self.base.ctx.port;
        match setting.mode {
            None => (p, 0),
            Some(SslMode::Basic) => (p, setting.tls_port.unwrap_or(0)),
            Some(SslMode::Enforced | SslMode::Mtls) => (0, p),
        }
    }

    /// The `redis.conf` lines: the admin socket, and TLS per the recorded setting (later lines win over the
    /// `port` line above them).
    pub(super) fn tls_conf(&self) -> Result<String> {
        let mut out = format!(
            "unixsocket \"{}\"\nunixsocketperm 700\n",
            self.admin_socket().display()
        );
        let mut st = state(&self.base)?;
        // About to start the engine: a `basic` TLS port taken by someone else meanwhile is replaced (the view
        // shows the new one), so the engine does not fail to start.
        if let Some(p) = st.current.tls_port {
            let engine_down = self.running_pid().is_none();
            if engine_down && std::net::TcpListener::bind((self.base.connect_host(), p)).is_err() {
                let fresh = free_port(&self.base.connect_host(), None)?;
                tracing::warn!(instance = %self.base.ctx.instance_id, old = p, new = fresh, "the TLS port is taken; moving TLS to another port");
                st.current.tls_port = Some(fresh);
                save_state(&self.base, &st)?;
            }
        }
        if let (Some(mode), Some(g)) = (st.current.mode, st.current.generation.as_deref()) {
            let (cert, key, ca) = engine_generation_files(&self.base, g);
            let (port, tls_port) = self.ports(&st.current);
            out.push_str(&format!(
                "# TLS ({mode})\ntls-cert-file \"{}\"\ntls-key-file \"{}\"\ntls-ca-cert-file \"{}\"\n\
                 tls-auth-clients {}\nport {port}\ntls-port {tls_port}\n",
                cert.display(),
                key.display(),
                ca.display(),
                if mode == SslMode::Mtls { "yes" } else { "no" },
            ));
        }
        Ok(out)
    }

    async fn config_set(
        &self,
        c: &mut redis::aio::MultiplexedConnection,
        pairs: &[(&str, String)],
    ) -> Result<()> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET");
        for (k, v) in pairs {
            cmd.arg(*k).arg(v);
        }
        cmd.query_async::<()>(c).await.map_err(|e| self.err(e))
    }
}

#[async_trait]
impl TlsEngine for Redis {
    fn needs_tls_port(&self, mode: SslMode) -> bool {
        mode == SslMode::Basic
    }

    async fn apply_live(&self, old: &TlsSetting, new: &TlsSetting) -> Result<bool> {
        let (port, tls_port) = self.ports(new);
        if port == 0 && !self.admin_socket().exists() {
            // An engine started before the admin socket existed: closing its plain port would lock the guest
            // out, so the change waits for a restart.
            return Ok(true);
        }
        let mut c = self.connect_admin().await?;
        if let (Some(mode), Some(g)) = (new.mode, new.generation.as_deref()) {
            let (cert, key, ca) = engine_generation_files(&self.base, g);
            self.config_set(
                &mut c,
                &[
                    ("tls-cert-file", cert.display().to_string()),
                    ("tls-key-file", key.display().to_string()),
                    ("tls-ca-cert-file", ca.display().to_string()),
                    (
                        "tls-auth-clients",
                        if mode == SslMode::Mtls { "yes" } else { "no" }.to_string(),
                    ),
                ],
            )
            .await?;
        }
        let (old_port, old_tls) = self.ports(old);
        // Free the ports first, so a port moving between plain and TLS is never bound twice.
        if old_tls != tls_port && old_tls != 0 {
            self.config_set(&mut c, &[("tls-port", "0".into())]).await?;
        }
        if old_port != port {
            self.config_set(&mut c, &[("port", port.to_string())])
                .await?;
        }
        if tls_port != 0 {
            self.config_set(&mut c, &[("tls-port", tls_port.to_string())])
                .await?;
        }
        Ok(false)
    }
}
