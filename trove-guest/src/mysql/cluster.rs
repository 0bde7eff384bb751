//! MariaDB Galera ([`ClusterFacet`]): every member holds everything, so membership is all there is.
//!
//! # Membership and configuration
//! A member's membership (its cluster, its own group address, its peers) is recorded in
//! `<server_dir>/guest/galera.json`; only then does [`Mysql::galera_cnf`] render a Galera section into `my.cnf`
//! (standalone instances and replicas never get one). Ports are fixed by the contract: the group (gcomm) listens
//! on the engine port + 1, IST on + 2, SST on + 3, all on the member's own host, so several members can share
//! one address. `wsrep_cluster_name` is `trove-` and the cluster id's first 96 bits, so members of two clusters never merge.
//!
//! # Starting, joining, restarting
//! The first member of a new cluster (`members[0]`, no other member's group port answering) starts with
//! `--wsrep-new-cluster`, passed on the command line of that one start only (never rendered, so no restart ever
//! bootstraps a second primary component). Every other member restarts with the Galera section and receives a full
//! state transfer (`mariabackup`, through `socat`) from a donor. A member killed and started again (the guest's
//! `start`, its supervisor) starts normally: `mariadbd` recovers its position from storage and catches up by IST
//! when the donor's gcache still has what it missed, else by SST.
//!
//! # Credentials after a state transfer
//! A joiner's data directory is replaced by its donor's, accounts included: the guest's own `os_admin` would have
//! the donor's password, not the one the joiner's guest keeps. So every member of a cluster uses the same admin
//! password, derived from the cluster's secret and id (SHA-256, never stored in the engine's configuration): on
//! `join`, while the member is still standalone, the guest gives its `os_admin` that password (kept out of the
//! binary log) and keeps it as its admin secret; the state transfer then brings the same password. The engine
//! user, who can read `my.cnf` (and with it the SST secret), could derive it, but it owns the data files anyway.
//!
//! The state transfer account `os_sst@localhost` (what `mariabackup` needs on a donor: `RELOAD`, `PROCESS`,
//! `LOCK TABLES`, `BINLOG MONITOR`) is made on the first member before it bootstraps, with the cluster's secret
//! as its password; every member gets it with its first state transfer. `wsrep_sst_auth` carries that secret in
//! `my.cnf`, which is mode 0600 and the engine user's; the guest never logs it.
//!
//! # Members, shrinking
//! `set_members` rewrites the persisted `wsrep_cluster_address` only: a running member already knows the group
//! (gcomm learns members as they come and go), and `SET GLOBAL wsrep_cluster_address` would make it leave and
//! rejoin the group, so it is not used. The address matters at the member's next start.
//!
//! `drain` refuses only when no member would stay: every Galera member holds everything, so nothing moves, and a
//! member that leaves cleanly (stopped by the control plane) lowers the quorum with it. Fewer than three members
//! do not survive a member's crash (two lose quorum when one dies); keeping three is the control plane's policy
//! at create time, not a refusal here.
//!
//! # After every member stopped
//! [`ClusterFacet::recovery_position`] reads `grastate.dat`'s `seqno`, or, after a crash (`-1`), runs
//! `mariadbd --wsrep-recover` on the member's configuration; [`ClusterFacet::bootstrap`] marks the most advanced
//! member `safe_to_bootstrap: 1` and starts it with `--wsrep-new-cluster`; the others are `join`ed, which starts
//! them normally.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{ConnectOptions, Connection};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

use trove_core::model::Secret;
use trove_core::ports::{
    ClusterFacet, ClusterMember, ClusterMemberStatus, ClusterSpec, LoadMetrics, Moved,
};
use trove_core::{Error, Result};

use super::admin::{account, identified_by};
use super::binlog::text;
use super::{exec_sql, Mysql};
use crate::common::{
    io_err, run_as_user, spawn_detached, wait_ready, write_engine_file, write_private,
};
use crate::engine::{stop_engine, Engine};
use crate::overrides::Configurable;

/// The state transfer account.
const SST_USER: &str = "os_sst";
/// The membership record in the guest's directory.
const MEMBERSHIP: &str = "galera.json";
/// The state transfer password, kept by the guest beside the admin's (0600).
const SST_SECRET: &str = "galera_sst.secret";
/// Where Debian's `galera-4` (and other distributions) put the provider.
const PROVIDERS: &[&str] = &[
    "/usr/lib/galera/libgalera_smm.so",
    "/usr/lib/galera-4/libgalera_smm.so",
    "/usr/lib/libgalera_smm.so",
    "/usr/lib64/galera-4/libgalera_smm.so",
    "/usr/lib64/galera/libgalera_smm.so",
];
/// How long a start may take to answer when it may receive a full state transfer first (the joiner's server
/// answers only once the transfer is done).
const SST_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long a member that answers may take to be `Synced` (an IST, applying the donor's queue).
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a peer's group port may take to accept a connection for it to count as running.
const PEER_PROBE: Duration = Duration::from_millis(700);

/// This member's membership, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Membership {
    /// The cluster.
    pub cluster_id: Uuid,
    /// The address the other members reach this one at.
    pub host: String,
    /// The other members' group addresses (`host:port+1`).
    pub peers: Vec<String>,
    /// Whether the member was `Synced` once (a join cut short is done again from the start).
    pub joined: bool,
}

/// Where the engine port's derived ports are: the group (+1), IST (+2), SST (+3).
fn derived_port(port: u16, offset: u16) -> Result<u16> {
    port.checked_add(offset).ok_or_else(|| {
        Error::bad_request(format!(
            "The port {port} leaves no room for the Galera ports (port + 1 to port + 3)."
        ))
    })
}

/// `host:port`, with an IPv6 host in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A member's group address.
fn group_address(m: &ClusterMember) -> Result<String> {
    Ok(host_port(&m.host, derived_port(m.port, 1)?))
}

/// The cluster's name: from its id, so two clusters never merge. Galera's group protocol carries names of fewer
/// than 32 bytes (a longer one makes every handshake fail), so it holds the id's first 96 bits.
pub(super) fn cluster_name(id: Uuid) -> String {
    format!("trove-{}", hex::encode(&id.as_bytes()[..12]))
}

/// The Galera provider library; the error names the package that has it.
fn provider() -> Result<PathBuf> {
    PROVIDERS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::backend(
                "mysql",
                format!(
                    "the Galera provider libgalera_smm.so is not installed (looked in {}); install the package 'galera-4'",
                    PROVIDERS.join(", ")
                ),
                false,
            )
        })
}

/// Refuses a secret that cannot go into `my.cnf` as a quoted value (the secret itself is never in the message).
fn check_secret(secret: &Secret) -> Result<()> {
    let s = secret.expose();
    if s.len() < 8
        || s.len() > 128
        || !s
            .chars()
            .all(|c| c.is_ascii_graphic() && !"\"'\\".contains(c))
    {
        return Err(Error::bad_request(
            "The cluster secret must be 8 to 128 printable ASCII characters without quotes or backslashes.",
        ));
    }
    Ok(())
}

/// The admin password every member of `cluster` shares (see the module's documentation).
fn cluster_admin_secret(cluster: &ClusterSpec) -> Secret {
    let mut h = Sha256::new();
    h.update(b"trove-guest galera os_admin\0");
    h.update(cluster.cluster_id.as_bytes());
    h.update(cluster.secret.expose().as_bytes());
    Secret::new(hex::encode(h.finalize()))
}

/// The `seqno` of a `grastate.dat` (`None`: no file, or `-1`, unknown after a crash).
fn grastate_seqno(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("seqno:"))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .and_then(|n| u64::try_from(n).ok())
}

/// `grastate.dat` with `safe_to_bootstrap: 1`.
fn safe_to_bootstrap(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut found = false;
    for l in text.lines() {
        if l.starts_with("safe_to_bootstrap:") {
            out.push("safe_to_bootstrap: 1".into());
            found = true;
        } else {
            out.push(l.to_string());
        }
    }
    if !found {
        out.push("safe_to_bootstrap: 1".into());
    }
    out.join("\n") + "\n"
}

/// The seqno of `WSREP: Recovered position: <uuid>:<seqno>` in a `--wsrep-recover` log (the last one).
fn recovered_seqno(log: &str) -> Option<i64> {
    log.lines()
        .filter_map(|l| l.split("WSREP: Recovered position:").nth(1))
        .filter_map(|p| p.trim().rsplit(':').next()?.trim().parse::<i64>().ok())
        .next_back()
}

/// CPU ticks (user + system) of a process, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and the state.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Linux's clock ticks per second for `/proc` times (`USER_HZ`, 100 on every architecture it runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// The previous load reading (for per-second rates).
#[derive(Debug, Clone, Copy)]
pub(super) struct LoadReading {
    at: Instant,
    questions: u64,
    cpu_ticks: Option<u64>,
}

impl Mysql {
    fn membership_path(&self) -> PathBuf {
        self.base.layout.guest_dir.join(MEMBERSHIP)
    }

    /// This member's recorded membership, if it is one.
    pub(super) fn membership(&self) -> Result<Option<Membership>> {
        let p = self.membership_path();
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Error::backend("guest", format!("corrupt {}: {e}", p.display()), false)
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &p, e)),
        }
    }

    fn save_membership(&self, m: &Membership) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(m).map_err(|e| Error::backend("guest", e, false))?;
        write_private(&self.membership_path(), &bytes)
    }

    /// The `my.cnf` lines of a Galera member; empty for an instance that is not one.
    pub(super) fn galera_cnf(&self) -> Result<String> {
        let Some(m) = self.membership()? else {
            return Ok(String::new());
        };
        let sst = self.base.layout.stored_secret(SST_SECRET)?.ok_or_else(|| {
            Error::backend(
                "guest",
                "the Galera member has no state transfer secret",
                false,
            )
        })?;
        let port = self.base.ctx.port;
        let (group, ist, sst_port) = (
            derived_port(port, 1)?,
            derived_port(port, 2)?,
            derived_port(port, 3)?,
        );
        let st = self.base.layout.state()?;
        // The write-set cache: what a member that was away for a while catches up from (IST); a quarter of the
        // flavor RAM, 32 MB to 1 GB, on the volume.
        let gcache_mb = crate::common::share_mb(st.memory_mb, 0.25, 32).min(1024);
        Ok(format!(
            "# Galera cluster member (see the guest's mysql::cluster)\n\
             wsrep_on = ON\n\
             wsrep_provider = {provider}\n\
             wsrep_cluster_name = {name}\n\
             wsrep_cluster_address = gcomm://{peers}\n\
             wsrep_node_name = {node}\n\
             wsrep_node_address = {node_addr}\n\
             wsrep_provider_options = \"gmcast.listen_addr=tcp://{node_addr}; ist.recv_addr={ist}; gcache.size={gcache_mb}M\"\n\
             wsrep_sst_receive_address = {sst}\n\
             wsrep_sst_method = mariabackup\n\
             wsrep_sst_auth = \"{user}:{secret}\"\n\
             binlog_format = ROW\n\
             innodb_autoinc_lock_mode = 2\n\
             default_storage_engine = InnoDB\n",
            provider = provider()?.display(),
            name = cluster_name(m.cluster_id),
            peers = m.peers.join(","),
            node = self.base.ctx.instance_id,
            node_addr = host_port(&m.host, group),
            ist = host_port(&m.host, ist),
            sst = host_port(&m.host, sst_port),
            user = SST_USER,
            secret = sst.expose(),
        ))
    }

    /// The `[sst]` group of a Galera member's `my.cnf` (last in the file; empty for an instance that is not one):
    /// the state transfer script's `socat` listens on the member's own address. Without it the joiner's `socat`
    /// listens on every address of the host, so two members joining at once on one host (each on its own address,
    /// with the same engine port) collide on the SST port: seen as "Address already in use" and a joiner leaving
    /// its group, when two clusters were created side by side.
    pub(super) fn galera_sst_cnf(&self) -> Result<String> {
        let Some(m) = self.membership()? else {
            return Ok(String::new());
        };
        let host = if m.host.contains(':') {
            format!("[{}]", m.host)
        } else {
            m.host.clone()
        };
        Ok(format!(
            "# the Galera state transfer script's own group (see the guest's mysql::cluster)\n[sst]\n\
             sockopt = bind={host}\n"
        ))
    }

    /// This instance in `cluster`; refused when it is not listed.
    fn me<'a>(&self, cluster: &'a ClusterSpec) -> Result<&'a ClusterMember> {
        cluster.member(self.base.ctx.instance_id).ok_or_else(|| {
            Error::bad_request(format!(
                "The instance '{}' is not a member of the cluster '{}'.",
                self.base.ctx.instance_id, cluster.cluster_id
            ))
        })
    }

    /// The other members' group addresses.
    fn peers(&self, cluster: &ClusterSpec) -> Result<Vec<String>> {
        cluster
            .members
            .iter()
            .filter(|m| m.instance_id != self.base.ctx.instance_id)
            .map(group_address)
            .collect()
    }

    /// The server's status variables named `names` or starting with `wsrep_`.
    async fn global_status(&self, names: &[&str]) -> Result<HashMap<String, String>> {
        let mut c = self.connect_admin().await?;
        let mut sql = "SHOW GLOBAL STATUS WHERE Variable_name LIKE 'wsrep\\_%'".to_string();
        if !names.is_empty() {
            let list = names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>();
            sql.push_str(&format!(" OR Variable_name IN ({})", list.join(", ")));
        }
        let rows = sqlx::query(&sql)
            .fetch_all(&mut c)
            .await
            .map_err(|e| self.err(e));
        let _ = c.close().await;
        Ok(rows?
            .iter()
            .filter_map(|r| {
                Some((
                    text(r, 0)?.to_ascii_lowercase(),
                    text(r, 1).unwrap_or_default(),
                ))
            })
            .collect())
    }

    async fn member_status(&self) -> Result<ClusterMemberStatus> {
        let s = self.global_status(&[]).await?;
        let state = s
            .get("wsrep_local_state_comment")
            .cloned()
            .unwrap_or_default();
        let ready = state == "Synced" && s.get("wsrep_ready").is_some_and(|v| v == "ON");
        Ok(ClusterMemberStatus {
            ready,
            members_seen: s
                .get("wsrep_cluster_size")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            slots: None,
            keys: None,
            state,
            replica_of: None,
        })
    }

    /// Refuses (retryable) when this member is not `Synced`.
    async fn require_synced(&self) -> Result<ClusterMemberStatus> {
        let st = self.member_status().await?;
        if st.ready {
            Ok(st)
        } else {
            Err(Error::backend(
                "mysql",
                format!("the Galera member is not synced (state '{}')", st.state),
                true,
            ))
        }
    }

    /// Waits until the member is `Synced` and ready; fails when its server dies or the wait is too long.
    async fn wait_synced(&self) -> Result<ClusterMemberStatus> {
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            let last = match self.member_status().await {
                Ok(st) if st.ready => return Ok(st),
                Ok(st) => format!("state '{}'", st.state),
                Err(e) => e.to_string(),
            };
            if self.running_pid().is_none() {
                return Err(Error::backend(
                    "mysql",
                    format!(
                        "mariadbd exited before the member was synced: {}",
                        crate::common::log_tail(&self.log_file(), 600)
                    ),
                    false,
                ));
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("the Galera member to be synced ({last})"),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether any other member's group port accepts connections.
    async fn any_peer_runs(&self, cluster: &ClusterSpec) -> Result<bool> {
        for addr in self.peers(cluster)? {
            let addr = addr.trim_start_matches('[').replace("]:", ":");
            let (host, port) = addr.rsplit_once(':').unwrap_or((&addr, "0"));
            let port: u16 = port.parse().unwrap_or(0);
            if let Ok(Ok(_)) =
                tokio::time::timeout(PEER_PROBE, tokio::net::TcpStream::connect((host, port))).await
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Starts the server (bootstrapping a new primary component when `new_cluster`), waiting until it answers
    /// long enough for a full state transfer to arrive first.
    async fn start_member(&self, new_cluster: bool) -> Result<()> {
        let base = &self.base;
        base.layout.update_state(|s| s.running = true)?;
        if self.running_pid().is_some() {
            return Ok(());
        }
        let _ = std::fs::remove_file(self.pid_file());
        self.render_config()?;
        let mut spawn = self.spawn()?;
        if new_cluster {
            spawn.args.push(OsString::from("--wsrep-new-cluster"));
        }
        let args: Vec<&OsStr> = spawn.args.iter().map(OsString::as_os_str).collect();
        let pid = spawn_detached(
            &spawn.program,
            &args,
            base.run_as,
            &base.layout.engine_dir,
            &spawn.output,
        )?;
        base.record_pid(pid)?;
        wait_ready(
            Self::PROCESS,
            SST_TIMEOUT.max(base.cfg.ready_timeout),
            || Some(pid),
            &self.log_file(),
            || self.answers(),
        )
        .await
    }

    /// Gives `os_admin` the password every member of `cluster` shares and keeps it as the admin secret. The
    /// statements stay out of the binary log and, on a running member, out of the group (`wsrep_on = OFF` for the
    /// session): each member sets its own.
    async fn adopt_cluster_admin(&self, cluster: &ClusterSpec) -> Result<()> {
        let shared = cluster_admin_secret(cluster);
        let layout = &self.base.layout;
        if layout
            .admin_secret()?
            .is_some_and(|s| s.expose() == shared.expose())
        {
            return Ok(());
        }
        let mut c = match self.connect_admin().await {
            Ok(c) => c,
            Err(e) => {
                // A join cut short after the password was set: the server already has the shared one.
                let c = self
                    .options("os_admin", shared.expose())
                    .connect()
                    .await
                    .map_err(|_| e)?;
                let _ = c.close().await;
                return layout.store_admin_secret(&shared);
            }
        };
        let pw = identified_by(shared.expose());
        let mut stmts = vec!["SET SESSION sql_log_bin = 0".to_string()];
        if self.membership()?.is_some() {
            stmts.push("SET SESSION wsrep_on = OFF".into());
        }
        for host in ["localhost", "127.0.0.1", "::1"] {
            stmts.push(format!(
                "ALTER USER IF EXISTS {} {pw}",
                account("os_admin", host)
            ));
        }
        for s in &stmts {
            if let Err(e) = exec_sql(&mut c, s).await {
                let _ = c.close().await;
                return Err(self.err(e));
            }
        }
        let _ = c.close().await;
        layout.store_admin_secret(&shared)
    }

    /// Makes the state transfer account (on the first member, before it bootstraps; kept out of the binary log).
    async fn make_sst_account(&self, secret: &Secret) -> Result<()> {
        let acct = account(SST_USER, "localhost");
        let pw = identified_by(secret.expose());
        self.exec(&[
            "SET SESSION sql_log_bin = 0".to_string(),
            format!("CREATE USER IF NOT EXISTS {acct} {pw}"),
            format!("ALTER USER {acct} {pw}"),
            format!("GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO {acct}"),
        ])
        .await
    }

    fn grastate_path(&self) -> PathBuf {
        self.base.layout.data_dir.join("grastate.dat")
    }

    /// Runs `mariadbd --wsrep-recover` on the member's configuration and answers the recovered seqno.
    async fn wsrep_recover(&self) -> Result<i64> {
        self.render_config()?;
        let dir = &self.base.layout.engine_dir;
        let log = dir.join("wsrep-recover.log");
        let _ = std::fs::remove_file(&log);
        let args: Vec<OsString> = vec![
            OsString::from(format!("--defaults-file={}", self.cnf_path().display())),
            OsString::from("--wsrep-recover"),
            OsString::from(format!("--log-error={}", log.display())),
            OsString::from(format!(
                "--pid-file={}",
                dir.join("wsrep-recover.pid").display()
            )),
            OsString::from("--skip-networking"),
        ];
        let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        run_as_user(&self.bins.server, &args, self.base.run_as, dir).await?;
        let text = std::fs::read_to_string(&log).map_err(|e| io_err("read", &log, e))?;
        recovered_seqno(&text).ok_or_else(|| {
            Error::backend(
                "mysql",
                format!(
                    "mariadbd --wsrep-recover found no position: {}",
                    crate::common::log_tail(&log, 600)
                ),
                false,
            )
        })
    }
}

/// Sets `safe_to_bootstrap: 1` in the member's `grastate.dat` (kept the engine user's).
fn mark_safe_to_bootstrap(path: &Path, run_as: crate::common::RunAs) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read", path, e)),
    };
    write_engine_file(path, &safe_to_bootstrap(&text), run_as)
}

#[async_trait]
impl ClusterFacet for Mysql {
    async fn join(&self, cluster: &ClusterSpec) -> Result<()> {
        let me = self.me(cluster)?;
        check_secret(&cluster.secret)?;
        provider()?;
        let id = self.base.ctx.instance_id;
        let peers = self.peers(cluster)?;
        let current = self.membership()?;
        if let Some(m) = &current {
            if m.cluster_id != cluster.cluster_id {
                return Err(Error::conflict(format!(
                    "The instance '{id}' is a member of another cluster ('{}').",
                    m.cluster_id
                )));
            }
            if m.joined {
                // Already a member: started normally when stopped (after a full stop, once another member was
                // bootstrapped), and answered once synced.
                let t = Instant::now();
                self.start_member(false).await?;
                let st = self.wait_synced().await?;
                tracing::info!(instance = %id, cluster = %cluster.cluster_id, members = st.members_seen,
                    ms = t.elapsed().as_millis() as u64, "Galera member synced");
                return Ok(());
            }
        }
        let t = Instant::now();
        let first = cluster.members.first().is_some_and(|m| m.instance_id == id);
        let peer_runs = self.any_peer_runs(cluster).await?;
        if !first && !peer_runs {
            return Err(Error::backend(
                "mysql",
                format!(
                    "no other member of the cluster '{}' runs: there is nothing to join",
                    cluster.cluster_id
                ),
                true,
            ));
        }
        let new_cluster = first && !peer_runs;
        // Still standalone: the shared admin password, and on the first member the state transfer account.
        self.start_member(false).await?;
        self.adopt_cluster_admin(cluster).await?;
        if new_cluster {
            self.make_sst_account(&cluster.secret).await?;
        }
        write_private(
            &self.base.layout.secret_file(SST_SECRET),
            cluster.secret.expose().as_bytes(),
        )?;
        let mut m = Membership {
            cluster_id: cluster.cluster_id,
            host: me.host.clone(),
            peers,
            joined: false,
        };
        self.save_membership(&m)?;
        stop_engine(self).await?;
        self.start_member(new_cluster).await?;
        let st = self.wait_synced().await?;
        m.joined = true;
        self.save_membership(&m)?;
        tracing::info!(instance = %id, cluster = %cluster.cluster_id, bootstrapped = new_cluster,
            members = st.members_seen, ms = t.elapsed().as_millis() as u64, "joined the Galera cluster");
        Ok(())
    }

    async fn set_members(&self, cluster: &ClusterSpec) -> Result<()> {
        self.me(cluster)?;
        let mut m = self
            .membership()?
            .filter(|m| m.cluster_id == cluster.cluster_id)
            .ok_or_else(|| {
                Error::bad_request(format!(
                    "The instance '{}' has not joined the cluster '{}'.",
                    self.base.ctx.instance_id, cluster.cluster_id
                ))
            })?;
        m.peers = self.peers(cluster)?;
        self.save_membership(&m)?;
        self.render_config()
    }

    async fn rebalance(&self, cluster: &ClusterSpec) -> Result<Moved> {
        self.me(cluster)?;
        self.require_synced().await?;
        Ok(Moved::default())
    }

    async fn drain(&self, cluster: &ClusterSpec, leaving: &[Uuid]) -> Result<Moved> {
        self.me(cluster)?;
        if let Some(u) = leaving.iter().find(|u| cluster.member(**u).is_none()) {
            return Err(Error::bad_request(format!(
                "The instance '{u}' is not a member of the cluster '{}'.",
                cluster.cluster_id
            )));
        }
        if leaving.contains(&self.base.ctx.instance_id) {
            return Err(Error::bad_request(
                "A drain is asked of a member that stays, not of one that leaves.",
            ));
        }
        if cluster
            .members
            .iter()
            .all(|m| leaving.contains(&m.instance_id))
        {
            return Err(Error::bad_request(
                "At least one member of a Galera cluster must stay.",
            ));
        }
        self.require_synced().await?;
        Ok(Moved::default())
    }

    async fn status(&self) -> Result<ClusterMemberStatus> {
        self.member_status().await
    }

    async fn load(&self) -> Result<LoadMetrics> {
        let s = self
            .global_status(&["Threads_connected", "Questions"])
            .await?;
        let num = |k: &str| {
            s.get(&k.to_ascii_lowercase())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let now = LoadReading {
            at: Instant::now(),
            questions: num("Questions").unwrap_or(0),
            cpu_ticks: self.running_pid().and_then(cpu_ticks),
        };
        let prev = self
            .last_load
            .lock()
            .map_err(|_| Error::backend("guest", "load reading lock poisoned", false))?
            .replace(now);
        let (ops, cpu) = match prev {
            Some(p) => {
                let secs = now.at.duration_since(p.at).as_secs_f64();
                if secs > 0.0 {
                    let ops = now.questions.saturating_sub(p.questions) as f64 / secs;
                    let cpu = match (p.cpu_ticks, now.cpu_ticks) {
                        (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / TICKS_PER_SEC / secs),
                        _ => None,
                    };
                    (Some(ops), cpu)
                } else {
                    (None, None)
                }
            }
            None => (None, None),
        };
        let volume_used = self
            .base
            .fs_stats()
            .await
            .ok()
            .filter(|f| f.total_bytes > 0)
            .map(|f| f.used_bytes as f64 / f.total_bytes as f64);
        Ok(LoadMetrics {
            memory_used: None,
            ops_per_sec: ops,
            connections: num("Threads_connected"),
            flow_control_paused: s
                .get("wsrep_flow_control_paused")
                .and_then(|v| v.parse().ok()),
            cpu,
            volume_used,
        })
    }

    async fn recovery_position(&self) -> Result<Option<u64>> {
        if self.membership()?.is_none() {
            return Ok(None);
        }
        if self.running_pid().is_some() {
            let s = self.global_status(&[]).await?;
            return Ok(s
                .get("wsrep_last_committed")
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|n| u64::try_from(n).ok()));
        }
        let path = self.grastate_path();
        if let Some(n) = std::fs::read_to_string(&path)
            .ok()
            .as_deref()
            .and_then(grastate_seqno)
        {
            return Ok(Some(n));
        }
        let n = self.wsrep_recover().await?;
        u64::try_from(n).map(Some).map_err(|_| {
            Error::backend(
                "mysql",
                "the member's position could not be recovered (seqno -1)",
                false,
            )
        })
    }

    async fn bootstrap(&self, cluster: &ClusterSpec) -> Result<()> {
        self.me(cluster)?;
        check_secret(&cluster.secret)?;
        let mut m = self
            .membership()?
            .filter(|m| m.cluster_id == cluster.cluster_id && m.joined)
            .ok_or_else(|| {
                Error::bad_request(format!(
                    "The instance '{}' was never a member of the cluster '{}': there is nothing to start it from.",
                    self.base.ctx.instance_id, cluster.cluster_id
                ))
            })?;
        if self.running_pid().is_some() {
            let st = self.member_status().await?;
            if st.ready {
                return Ok(());
            }
            return Err(Error::conflict(format!(
                "The Galera member runs (state '{}'): stop every member before a bootstrap.",
                st.state
            )));
        }
        let t = Instant::now();
        m.peers = self.peers(cluster)?;
        self.save_membership(&m)?;
        mark_safe_to_bootstrap(&self.grastate_path(), self.base.run_as)?;
        self.start_member(true).await?;
        self.wait_synced().await?;
        tracing::info!(instance = %self.base.ctx.instance_id, cluster = %cluster.cluster_id,
            ms = t.elapsed().as_millis() as u64, "Galera cluster started again from this member");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grastate_and_recovery_positions() {
        let g = "# GALERA saved state\nversion: 2.1\nuuid:    6b5e-1\nseqno:   42\nsafe_to_bootstrap: 0\n";
        assert_eq!(grastate_seqno(g), Some(42));
        assert_eq!(grastate_seqno(&g.replace("42", "-1")), None);
        let s = safe_to_bootstrap(g);
        assert!(
            s.contains("safe_to_bootstrap: 1\n") && !s.contains("safe_to_bootstrap: 0"),
            "{s}"
        );
        assert!(s.contains("seqno:   42"));
        let log = "2024 [Note] WSREP: Recovered position: 00000000-0000-0000-0000-000000000000:-1\n\
                   2024 [Note] WSREP: Recovered position: 8f1d2c3b-aaaa-11ee-8000-0123456789ab:17\n";
        assert_eq!(recovered_seqno(log), Some(17));
        assert_eq!(recovered_seqno("nothing"), None);
    }

    #[test]
    fn addresses_names_and_secrets() {
        assert_eq!(host_port("10.0.0.1", 3307), "10.0.0.1:3307");
        assert_eq!(host_port("fd00::1", 3307), "[fd00::1]:3307");
        assert!(derived_port(65534, 3).is_err());
        let id = Uuid::nil();
        assert_eq!(cluster_name(id), "trove-000000000000000000000000");
        assert!(cluster_name(Uuid::new_v4()).len() < 32);
        assert!(check_secret(&Secret::new("abcdEFGH1234")).is_ok());
        assert!(check_secret(&Secret::new("short")).is_err());
        assert!(check_secret(&Secret::new("has a space in it")).is_err());
        assert!(check_secret(&Secret::new("quote\"inside")).is_err());
        let spec = |s: &str| ClusterSpec {
            cluster_id: id,
            members: vec![],
            secret: Secret::new(s),
        };
        let a = cluster_admin_secret(&spec("one-secret"));
        assert_eq!(
            a.expose(),
            cluster_admin_secret(&spec("one-secret")).expose()
        );
        assert_ne!(
            a.expose(),
            cluster_admin_secret(&spec("another-secret")).expose()
        );
        assert!(!a.expose().contains("one-secret"));
    }
}
