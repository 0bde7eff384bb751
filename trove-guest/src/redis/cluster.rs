//! Redis Cluster ([`ClusterFacet`]): the member's engine runs with `cluster-enabled yes` and its members spread
//! the 16384 hash slots over their primaries.
//!
//! # How this engine keeps the contract
//! - `join` turns the standalone, empty engine into a cluster node: the cluster's secret is kept in the guest
//!   directory (`cluster.secret`, 0600) and its presence renders the cluster lines into `redis.conf`
//!   (`cluster-enabled yes`, `cluster-config-file` in the data directory, the bus on `port + 10000`, a
//!   `cluster-node-timeout` of [`NODE_TIMEOUT_MS`], `cluster-require-full-coverage no`, and `masteruser` /
//!   `masterauth` of the cluster account so that any node can become a replica after a failover); the engine is
//!   restarted once. The ACL users made by the users facet stay (the ACL file is unchanged). The node then gets
//!   the cluster's internal account [`CLUSTER_USER`] (password = [`ClusterSpec::secret`], stored hashed): what the
//!   members use to talk to each other (`MIGRATE ... AUTH2`, `CLUSTER SETSLOT` on every primary during a
//!   rebalance, replication of a shard). It meets every other listed member that answers, and waits until it
//!   knows them (gossip). A member with `replica_of` then follows its primary (`CLUSTER REPLICATE`) and waits
//!   until its link is up. **Joining assigns no slot**: the control plane calls `rebalance` once every primary
//!   of a new cluster joined (and after a primary is added). Joining again is a no-op.
//! - `cluster-allow-replica-migration no`: a primary emptied by a drain stays a primary (by default Redis turns
//!   it into a replica of the node that took its last slot), and replicas stay where the control plane put them.
//! - `cluster-require-full-coverage no`: when a shard without a replica is lost, the other shards keep serving
//!   their slots (the keys of the lost slots answer `CLUSTERDOWN`) instead of the whole cluster refusing every
//!   request.
//! - `rebalance` runs on any member and drives every primary over the cluster account: slots nobody owns are
//!   given with `CLUSTER ADDSLOTSRANGE` (the first rebalance of a new cluster), owned ones move one by one from
//!   members above their share to members below it (`SETSLOT IMPORTING` on the target, `MIGRATING` on the
//!   source, `GETKEYSINSLOT` + `MIGRATE ... REPLACE` in batches, then `SETSLOT NODE` on target, source and the
//!   other primaries). Clients in cluster mode follow the `ASK` / `MOVED` redirects meanwhile. Slots left half
//!   moved by an interrupted rebalance are finished first. The share of the i-th primary (in the order of
//!   `cluster.members`) is `16384 / n`, plus one for the first `16384 % n`.
//! - `drain` is a rebalance over the staying primaries (the leaving ones' share is 0); then every staying member
//!   forgets the leaving nodes (`CLUSTER FORGET`, which bans their id for 60 s on that node: all are told one
//!   after another, well within that time) and each leaving node that still answers resets itself
//!   (`CLUSTER RESET HARD`), so that it gossips no more. Replicas of a leaving primary must leave with it.
//! - `set_members` forgets, on this node only, the nodes that are not listed and meets the listed ones it does
//!   not know; the node's `nodes.conf` keeps them across restarts.
//! - `recovery_position` is `None` and `bootstrap` only starts the engine: a Redis node recovers its cluster from
//!   its own `nodes.conf`, there is nothing to choose.
//!
//! The users of the cluster's clients must exist on every member (a client is redirected to any of them): the
//! users facet changes only the member it is called on, so the control plane makes each user on every member
//! (the cluster's root, and the users made through any member's users API).
//!
//! Limits: a member's port must leave room for its bus port (at most 55535); TLS modes that close the plain port
//! (`enforced`, `mtls`) are refused by `join` (the cluster bus and `MIGRATE` use plain text).

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, ConnectionInfo, FromRedisValue, ProtocolVersion, RedisConnectionInfo};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

use trove_core::model::{Secret, SslMode};
use trove_core::ports::{
    ClusterFacet, ClusterMember, ClusterMemberStatus, ClusterSpec, LoadMetrics, Moved,
};
use trove_core::{Error, Result};

use super::replication::quoted;
use super::Redis;
use crate::common::{write_private, BACKEND};
use crate::engine::{start_engine, stop_engine, Engine};

/// The cluster's internal ACL user, the same on every member.
pub(super) const CLUSTER_USER: &str = "os_cluster";
/// The file of the cluster's secret under the guest directory; its presence makes the engine a cluster node.
const CLUSTER_SECRET: &str = "cluster.secret";
/// What the cluster account may do: read every key (to move it), move slots, restore moved keys, replicate a
/// shard.
const CLUSTER_RULES: &[&str] = &[
    "~*",
    "+cluster",
    "+migrate",
    "+restore",
    "+restore-asking",
    "+asking",
    "+select",
    "+ping",
    "+info",
    "+dbsize",
    "+psync",
    "+replconf",
];
/// Hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;
/// The cluster bus port is the engine port plus this.
const BUS_OFFSET: u16 = 10000;
/// `cluster-node-timeout`: how long a node may not answer before it counts as failing (a replica takes over
/// shortly after).
pub(super) const NODE_TIMEOUT_MS: u64 = 3000;
/// Keys per `MIGRATE`.
const BATCH: usize = 200;
/// Slots moved together (their `SETSLOT`s in one pipeline).
const SLOT_BATCH: usize = 64;
/// `MIGRATE`'s own timeout (ms).
const MIGRATE_TIMEOUT_MS: &str = "10000";
/// How long gossip may take to spread what a member did.
const CONVERGE: Duration = Duration::from_secs(30);

/// The figures of the previous `load` reading (rates are taken between two readings).
#[derive(Debug, Clone, Copy)]
pub(super) struct LoadSample {
    at: Instant,
    commands: u64,
    cpu_seconds: f64,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, Default, PartialEq)]
struct NodeLine {
    id: String,
    ip: String,
    port: u16,
    flags: Vec<String>,
    /// The primary's id of a replica.
    master: Option<String>,
    slots: Vec<u16>,
    /// Slots this node is moving away (`[slot->-target]`; only on the `myself` line).
    migrating: Vec<(u16, String)>,
    /// Slots this node is taking in (`[slot-<-source]`; only on the `myself` line).
    importing: Vec<(u16, String)>,
}

impl NodeLine {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// A node the cluster can count on: known (handshake done), with an address, not failing.
    fn healthy(&self) -> bool {
        !["handshake", "noaddr", "fail", "fail?"]
            .iter()
            .any(|f| self.has(f))
    }
}

/// Parses `CLUSTER NODES`.
fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines().filter_map(parse_node_line).collect()
}

fn parse_node_line(line: &str) -> Option<NodeLine> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    // ip:port@cport[,hostname]
    let addr = f[1].split(',').next()?.split('@').next()?;
    let (ip, port) = addr.rsplit_once(':')?;
    let mut n = NodeLine {
        id: f[0].to_string(),
        ip: ip.to_string(),
        port: port.parse().ok()?,
        flags: f[2].split(',').map(str::to_string).collect(),
        master: (f[3] != "-").then(|| f[3].to_string()),
        ..NodeLine::default()
    };
    for s in &f[8..] {
        if let Some(open) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            if let Some((slot, to)) = open.split_once("->-") {
                n.migrating.push((slot.parse().ok()?, to.to_string()));
            } else if let Some((slot, from)) = open.split_once("-<-") {
                n.importing.push((slot.parse().ok()?, from.to_string()));
            }
        } else if let Some((a, b)) = s.split_once('-') {
            let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
            n.slots.extend(a..=b);
        } else {
            n.slots.push(s.parse().ok()?);
        }
    }
    Some(n)
}

/// A field of an `INFO` answer.
fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        l.trim()
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

fn info_num<T: std::str::FromStr>(info: &str, key: &str) -> Option<T> {
    info_field(info, key).and_then(|v| v.parse().ok())
}

/// The fair share of every one of `n` primaries, in their order.
fn shares(n: usize) -> Vec<usize> {
    let (base, rest) = (usize::from(SLOTS) / n, usize::from(SLOTS) % n);
    (0..n).map(|i| base + usize::from(i < rest)).collect()
}

/// Contiguous ranges of sorted slots.
fn ranges(slots: &[u16]) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &s in slots {
        match out.last_mut() {
            Some((_, b)) if *b + 1 == s => *b = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// What a rebalance does: slots nobody owns given to a primary, and slots moved from a node to another (node
/// indexes into the list the plan was made for).
#[derive(Debug, Default, PartialEq)]
struct Plan {
    add: Vec<(usize, Vec<u16>)>,
    moves: Vec<(u16, usize, usize)>,
}

/// Plans a spread: `owned[i]` are the slots of node `i` (sorted), `share[i]` its fair share (0 for leaving
/// nodes). Nodes above their share give their highest slots; nodes below take the free slots first, then the
/// given ones, lowest first, so that a node's slots stay in few ranges.
fn plan(owned: &[Vec<u16>], share: &[usize]) -> Plan {
    let taken: BTreeSet<u16> = owned.iter().flatten().copied().collect();
    let mut free: Vec<u16> = (0..SLOTS).filter(|s| !taken.contains(s)).collect();
    let mut given: Vec<(u16, usize)> = Vec::new();
    for (i, slots) in owned.iter().enumerate() {
        if slots.len() > share[i] {
            given.extend(slots[share[i]..].iter().map(|s| (*s, i)));
        }
    }
    given.sort_unstable();
    free.reverse();
    given.reverse();
    let mut p = Plan::default();
    for (i, slots) in owned.iter().enumerate() {
        let mut want = share[i].saturating_sub(slots.len());
        let mut add = Vec::new();
        while want > 0 {
            let Some(s) = free.pop() else { break };
            add.push(s);
            want -= 1;
        }
        if !add.is_empty() {
            p.add.push((i, add));
        }
        while want > 0 {
            let Some((s, from)) = given.pop() else { break };
            p.moves.push((s, from, i));
            want -= 1;
        }
    }
    p
}

/// A member the coordinator of a rebalance drives, over the cluster account.
struct Peer {
    member: ClusterMember,
    ip: String,
    id: String,
    conn: MultiplexedConnection,
}

impl Redis {
    /// The cluster's secret this node was given, if it is a cluster node.
    fn cluster_secret(&self) -> Result<Option<Secret>> {
        self.base.layout.stored_secret(CLUSTER_SECRET)
    }

    /// The `redis.conf` lines of a cluster node (nothing for a standalone engine).
    pub(super) fn cluster_conf(&self) -> Result<String> {
        let Some(secret) = self.cluster_secret()? else {
            return Ok(String::new());
        };
        let port = self.base.ctx.port;
        let bus = bus_port(port)?;
        // The node announces the address it listens on: a peer would otherwise take the source address of the
        // node's connections, which on a host with several addresses (loopback ones included) is another.
        let announce = match self.base.ctx.bind_address.as_str() {
            "" | "0.0.0.0" | "::" => String::new(),
            ip => format!("cluster-announce-ip {}\n", quoted(ip)),
        };
        Ok(format!(
            "# a Redis Cluster node (see the guest's redis::cluster)\ncluster-enabled yes\n\
             cluster-config-file {}\ncluster-port {bus}\ncluster-node-timeout {NODE_TIMEOUT_MS}\n{announce}\
             cluster-require-full-coverage no\ncluster-allow-replica-migration no\nmasteruser {}\nmasterauth {}\n",
            quoted(
                &self
                    .base
                    .layout
                    .data_dir
                    .join("nodes.conf")
                    .display()
                    .to_string()
            ),
            quoted(CLUSTER_USER),
            quoted(secret.expose())
        ))
    }

    /// A command on this engine, as the guest's admin.
    async fn admin_query<T: FromRedisValue>(&self, args: &[&str]) -> Result<T> {
        let mut c = self.connect_admin().await?;
        self.query(&mut c, args).await
    }

    async fn query<T: FromRedisValue>(
        &self,
        c: &mut MultiplexedConnection,
        args: &[&str],
    ) -> Result<T> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(c).await.map_err(|e| self.err(e))
    }

    /// A connection to a member, as the cluster account.
    async fn connect_peer(
        &self,
        ip: &str,
        port: u16,
        secret: &Secret,
    ) -> Result<MultiplexedConnection> {
        let info = ConnectionInfo {
            addr: ConnectionAddr::Tcp(ip.to_string(), port),
            redis: RedisConnectionInfo {
                db: 0,
                username: Some(CLUSTER_USER.into()),
                password: Some(secret.expose().to_string()),
                protocol: ProtocolVersion::RESP2,
            },
        };
        let client = redis::Client::open(info).map_err(|e| self.err(e))?;
        client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Duration::from_secs(30))
                    .set_connection_timeout(Duration::from_secs(3)),
            )
            .await
            .map_err(|e| {
                Error::backend(
                    BACKEND,
                    format!("the cluster member at {ip}:{port} does not answer: {e}"),
                    true,
                )
            })
    }

    /// The member this instance is in `cluster`.
    fn me<'a>(&self, cluster: &'a ClusterSpec) -> Result<&'a ClusterMember> {
        cluster.member(self.base.ctx.instance_id).ok_or_else(|| {
            Error::bad_request(format!(
                "The instance {} is not a member of the cluster {}.",
                self.base.ctx.instance_id, cluster.cluster_id
            ))
        })
    }

    /// This node's `CLUSTER NODES`.
    async fn my_nodes(&self, c: &mut MultiplexedConnection) -> Result<Vec<NodeLine>> {
        let text: String = self.query(c, &["CLUSTER", "NODES"]).await?;
        Ok(parse_nodes(&text))
    }

    /// Makes (again) the cluster account on this engine.
    async fn ensure_cluster_user(&self, secret: &Secret) -> Result<()> {
        let hash = format!(
            "#{}",
            hex::encode(Sha256::digest(secret.expose().as_bytes()))
        );
        let mut args = vec!["SETUSER", CLUSTER_USER, "reset", "on", hash.as_str()];
        args.extend_from_slice(CLUSTER_RULES);
        self.acl(&args).await?;
        self.acl(&["SAVE"]).await?;
        Ok(())
    }

    /// Meets every listed member this node does not know and that answers; answers the addresses met and how
    /// many slots the members that answer have assigned (more than 0: the cluster serves already).
    async fn meet_members(
        &self,
        c: &mut MultiplexedConnection,
        cluster: &ClusterSpec,
    ) -> Result<(Vec<(String, u16)>, u32)> {
        let known = self.my_nodes(c).await?;
        let (mut met, mut assigned) = (Vec::new(), 0);
        for m in &cluster.members {
            if m.instance_id == self.base.ctx.instance_id {
                continue;
            }
            let ip = resolve(&m.host, m.port).await?;
            // A member that does not run yet meets this one when it joins.
            let Ok(mut peer) = self.connect_peer(&ip, m.port, &cluster.secret).await else {
                tracing::info!(instance = %self.base.ctx.instance_id, member = %m.instance_id, "a cluster member does not answer yet");
                continue;
            };
            if let Ok(info) = self.query::<String>(&mut peer, &["CLUSTER", "INFO"]).await {
                assigned = assigned.max(info_num(&info, "cluster_slots_assigned").unwrap_or(0));
            }
            if known.iter().any(|n| n.ip == ip && n.port == m.port) {
                continue;
            }
            let port = m.port.to_string();
            self.query::<()>(c, &["CLUSTER", "MEET", &ip, &port])
                .await?;
            met.push((ip, m.port));
        }
        Ok((met, assigned))
    }

    /// Waits until `done` holds of this node's `CLUSTER NODES`.
    async fn wait_nodes(
        &self,
        c: &mut MultiplexedConnection,
        what: &str,
        done: impl Fn(&[NodeLine]) -> bool,
    ) -> Result<Vec<NodeLine>> {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let nodes = self.my_nodes(c).await?;
            if done(&nodes) {
                return Ok(nodes);
            }
            if Instant::now() >= deadline {
                return Err(Error::backend(
                    BACKEND,
                    format!("{what} within {} s", CONVERGE.as_secs()),
                    true,
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Connects to every primary of `cluster` (all must answer) and waits until each knows all the others.
    async fn connect_primaries(&self, cluster: &ClusterSpec) -> Result<Vec<Peer>> {
        let mut peers = Vec::new();
        for m in cluster.primaries() {
            let ip = resolve(&m.host, m.port).await?;
            let mut conn = self.connect_peer(&ip, m.port, &cluster.secret).await?;
            let id: String = self.query(&mut conn, &["CLUSTER", "MYID"]).await?;
            let info: String = self.query(&mut conn, &["INFO", "replication"]).await?;
            if info_field(&info, "role") != Some("master") {
                return Err(Error::unprocessable(format!(
                    "The cluster member {} ({}:{}) is listed as a primary but is a replica (a failover \
                     happened?): list it with its primary.",
                    m.instance_id, m.host, m.port
                )));
            }
            peers.push(Peer {
                member: m.clone(),
                ip,
                id,
                conn,
            });
        }
        let ids: Vec<String> = peers.iter().map(|p| p.id.clone()).collect();
        for p in &mut peers {
            let mut c = p.conn.clone();
            self.wait_nodes(
                &mut c,
                "the primaries did not all know each other",
                |nodes| {
                    ids.iter()
                        .all(|id| nodes.iter().any(|n| &n.id == id && n.healthy()))
                },
            )
            .await?;
        }
        Ok(peers)
    }

    /// `CLUSTER SETSLOT <slot> <state> <id>` of every slot in `slots`, in one pipeline (the node saves its
    /// configuration once for all).
    async fn set_slots(
        &self,
        c: &mut MultiplexedConnection,
        slots: &[u16],
        state: &str,
        id: &str,
    ) -> Result<()> {
        let mut p = redis::pipe();
        for s in slots {
            p.cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(*s)
                .arg(state)
                .arg(id)
                .ignore();
        }
        p.query_async::<()>(c).await.map_err(|e| self.err(e))
    }

    /// Moves `slots` from `peers[from]` to `peers[to]` with their keys; answers how many keys moved. `resume`:
    /// finishing a move cut short, where the target may own a slot already (and the source then refuses to
    /// migrate it): the keys still move and the owner is set everywhere.
    async fn move_slots(
        &self,
        peers: &mut [Peer],
        slots: &[u16],
        from: usize,
        to: usize,
        secret: &Secret,
        resume: bool,
    ) -> Result<u64> {
        let (src_id, dst_id) = (peers[from].id.clone(), peers[to].id.clone());
        let (dst_ip, dst_port) = (peers[to].ip.clone(), peers[to].member.port.to_string());
        // The target takes the slots' keys (and the clients sent there with ASK) before the source gives them.
        let r = self
            .set_slots(&mut peers[to].conn, slots, "IMPORTING", &src_id)
            .await;
        if !resume {
            r?;
        }
        let r = self
            .set_slots(&mut peers[from].conn, slots, "MIGRATING", &dst_id)
            .await;
        if !resume {
            r?;
        }
        let batch = BATCH.to_string();
        let mut moved = 0u64;
        for s in slots {
            let slot = s.to_string();
            loop {
                let keys: Vec<Vec<u8>> = self
                    .query(
                        &mut peers[from].conn,
                        &["CLUSTER", "GETKEYSINSLOT", &slot, &batch],
                    )
                    .await?;
                if keys.is_empty() {
                    break;
                }
                let mut cmd = redis::cmd("MIGRATE");
                cmd.arg(&dst_ip)
                    .arg(&dst_port)
                    .arg("")
                    .arg(0)
                    .arg(MIGRATE_TIMEOUT_MS)
                    .arg("REPLACE")
                    .arg("AUTH2")
                    .arg(CLUSTER_USER)
                    .arg(secret.expose())
                    .arg("KEYS");
                for k in &keys {
                    cmd.arg(k.as_slice());
                }
                cmd.query_async::<()>(&mut peers[from].conn)
                    .await
                    .map_err(|e| self.err(e))?;
                moved += keys.len() as u64;
            }
        }
        // The target first, then the source, then everyone else (gossip would tell them too).
        self.set_slots(&mut peers[to].conn, slots, "NODE", &dst_id)
            .await?;
        self.set_slots(&mut peers[from].conn, slots, "NODE", &dst_id)
            .await?;
        for i in (0..peers.len()).filter(|i| *i != to && *i != from) {
            let _ = self
                .set_slots(&mut peers[i].conn, slots, "NODE", &dst_id)
                .await;
        }
        Ok(moved)
    }

    /// Spreads the slots over the primaries of `cluster` that are not `leaving` (see the module's doc).
    async fn spread(&self, cluster: &ClusterSpec, leaving: &[Uuid]) -> Result<Moved> {
        let started = Instant::now();
        if !cluster
            .primaries()
            .any(|m| !leaving.contains(&m.instance_id))
        {
            return Err(Error::bad_request(
                "No primary would stay in the cluster: at least one must.",
            ));
        }
        let mut peers = self.connect_primaries(cluster).await?;
        let mut moved = Moved::default();
        let secret = cluster.secret.clone();

        // Slots an interrupted rebalance left half moved are finished first.
        let index = |peers: &[Peer], id: &str, s: u16| {
            peers.iter().position(|p| p.id == id).ok_or_else(|| {
                Error::unprocessable(format!(
                    "The slot {s} is being moved from or to a node that is not a primary of the cluster."
                ))
            })
        };
        let mut open: Vec<(u16, usize, usize)> = Vec::new();
        let mut owned = Vec::new();
        for i in 0..peers.len() {
            let nodes = self.my_nodes(&mut peers[i].conn).await?;
            let me = nodes
                .into_iter()
                .find(|n| n.has("myself"))
                .unwrap_or_default();
            for (s, to) in &me.migrating {
                open.push((*s, i, index(&peers, to, *s)?));
            }
            for (s, from) in &me.importing {
                open.push((*s, index(&peers, from, *s)?, i));
            }
            owned.push(me.slots);
        }
        open.sort_unstable();
        open.dedup();
        if !open.is_empty() {
            for (s, from, to) in &open {
                moved.keys += self
                    .move_slots(&mut peers, &[*s], *from, *to, &secret, true)
                    .await?;
                moved.slots += 1;
            }
            owned.clear();
            for p in peers.iter_mut() {
                let nodes = self.my_nodes(&mut p.conn).await?;
                owned.push(
                    nodes
                        .into_iter()
                        .find(|n| n.has("myself"))
                        .unwrap_or_default()
                        .slots,
                );
            }
        }

        // Slots of anyone but the primaries refuse the rebalance.
        let view = self.my_nodes(&mut peers[0].conn.clone()).await?;
        if let Some(n) = view
            .iter()
            .find(|n| !n.slots.is_empty() && !peers.iter().any(|p| p.id == n.id))
        {
            return Err(Error::unprocessable(format!(
                "The node at {}:{} owns slots but is not a primary of the cluster (a failover happened?): list \
                 it as one first.",
                n.ip, n.port
            )));
        }
        let staying: Vec<usize> = (0..peers.len())
            .filter(|i| !leaving.contains(&peers[*i].member.instance_id))
            .collect();
        let fair = shares(staying.len());
        let mut share = vec![0; peers.len()];
        for (k, i) in staying.iter().enumerate() {
            share[*i] = fair[k];
        }
        owned.iter_mut().for_each(|o| o.sort_unstable());
        let plan = plan(&owned, &share);
        for (i, slots) in &plan.add {
            for (a, b) in ranges(slots) {
                let (a, b) = (a.to_string(), b.to_string());
                self.query::<()>(&mut peers[*i].conn, &["CLUSTER", "ADDSLOTSRANGE", &a, &b])
                    .await?;
            }
            moved.slots += slots.len() as u32;
        }
        if !plan.moves.is_empty() {
            // A node that does not see its cluster ok refuses the keys moved to it.
            for p in peers.iter_mut() {
                self.wait_cluster_ok(&mut p.conn, 0).await?;
            }
        }
        // Slots going the same way move together, a batch at a time.
        for chunk in plan.moves.chunk_by(|a, b| (a.1, a.2) == (b.1, b.2)) {
            for batch in chunk.chunks(SLOT_BATCH) {
                let slots: Vec<u16> = batch.iter().map(|m| m.0).collect();
                let (from, to) = (batch[0].1, batch[0].2);
                moved.keys += self
                    .move_slots(&mut peers, &slots, from, to, &secret, false)
                    .await?;
                moved.slots += slots.len() as u32;
            }
        }

        // Done once every primary sees the new owners and the staying ones serve.
        let want: Vec<(String, usize)> = peers
            .iter()
            .zip(&share)
            .map(|(p, s)| (p.id.clone(), *s))
            .collect();
        for (i, p) in peers.iter_mut().enumerate() {
            let mut c = p.conn.clone();
            self.wait_nodes(
                &mut c,
                "the primaries did not all see the new slot owners",
                |nodes| {
                    want.iter()
                        .all(|(id, s)| nodes.iter().any(|n| &n.id == id && n.slots.len() == *s))
                },
            )
            .await?;
            if share[i] > 0 {
                self.wait_cluster_ok(&mut c, u32::from(SLOTS)).await?;
            }
        }
        tracing::info!(
            instance = %self.base.ctx.instance_id,
            slots = moved.slots,
            keys = moved.keys,
            ms = started.elapsed().as_millis() as u64,
            "cluster slots spread"
        );
        Ok(moved)
    }

    /// Waits until this node sees its cluster ok, with at least `assigned` slots assigned.
    async fn wait_cluster_ok(&self, c: &mut MultiplexedConnection, assigned: u32) -> Result<()> {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let info: String = self.query(c, &["CLUSTER", "INFO"]).await?;
            if info_field(&info, "cluster_state") == Some("ok")
                && info_num::<u32>(&info, "cluster_slots_assigned").unwrap_or(0) >= assigned
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::backend(
                    BACKEND,
                    format!("the cluster is not ok within {} s", CONVERGE.as_secs()),
                    true,
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The cluster bus port of an engine port.
fn bus_port(port: u16) -> Result<u16> {
    port.checked_add(BUS_OFFSET).ok_or_else(|| {
        Error::unprocessable(format!(
            "A Redis Cluster member's port must leave room for its bus port (port + {BUS_OFFSET}); {port} does \
             not."
        ))
    })
}

/// The IP address of a member (`CLUSTER MEET` and `CLUSTER NODES` speak addresses, not names).
async fn resolve(host: &str, port: u16) -> Result<String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(ip.to_string());
    }
    let mut addrs = tokio::net::lookup_host((host, port)).await.map_err(|e| {
        Error::backend(
            BACKEND,
            format!("the cluster member host '{host}' does not resolve: {e}"),
            true,
        )
    })?;
    addrs.next().map(|a| a.ip().to_string()).ok_or_else(|| {
        Error::backend(
            BACKEND,
            format!("the cluster member host '{host}' has no address"),
            true,
        )
    })
}

/// Refuses a cluster description this engine cannot use (before anything is done).
fn check_spec(cluster: &ClusterSpec) -> Result<()> {
    let s = cluster.secret.expose();
    if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_control() || c == ' ') {
        return Err(Error::bad_request(
            "The cluster secret must be 1 to 256 printable characters without spaces.",
        ));
    }
    let mut seen = BTreeSet::new();
    for m in &cluster.members {
        if m.host.is_empty()
            || m.host.len() > 255
            || m.host.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(Error::bad_request(format!(
                "The cluster member {} has an invalid host.",
                m.instance_id
            )));
        }
        bus_port(m.port)?;
        if !seen.insert(m.instance_id) {
            return Err(Error::bad_request(format!(
                "The cluster member {} is listed twice.",
                m.instance_id
            )));
        }
        if let Some(p) = m.replica_of {
            if cluster.member(p).is_none_or(|p| p.replica_of.is_some()) || p == m.instance_id {
                return Err(Error::bad_request(format!(
                    "The cluster member {} must be the replica of a listed primary.",
                    m.instance_id
                )));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl ClusterFacet for Redis {
    async fn join(&self, cluster: &ClusterSpec) -> Result<()> {
        check_spec(cluster)?;
        let me = self.me(cluster)?.clone();
        let started = Instant::now();
        if self.running_pid().is_none() {
            start_engine(self).await?;
        }
        let info: String = self.admin_query(&["INFO", "cluster"]).await?;
        if info_field(&info, "cluster_enabled") != Some("1") {
            let keys: u64 = self.admin_query(&["DBSIZE"]).await?;
            if keys > 0 {
                return Err(Error::unprocessable(format!(
                    "The instance holds {keys} keys: only an empty instance can join a cluster."
                )));
            }
            if self.base.layout.state()?.following.is_some() {
                return Err(Error::unprocessable(
                    "A replica of a replication set cannot join a cluster; detach it first.",
                ));
            }
            let tls = crate::tls::state(&self.base)?.current.mode;
            if matches!(tls, Some(SslMode::Enforced | SslMode::Mtls)) {
                return Err(Error::unprocessable(
                    "A Redis Cluster member needs its plain-text port: TLS modes enforced and mtls cannot join.",
                ));
            }
            // The account first, so that the restarted node can be reached by the others at once.
            self.ensure_cluster_user(&cluster.secret).await?;
            write_private(
                &self.base.layout.secret_file(CLUSTER_SECRET),
                cluster.secret.expose().as_bytes(),
            )?;
            stop_engine(self).await?;
            start_engine(self).await?;
        } else if self.cluster_secret()?.as_ref().map(Secret::expose)
            != Some(cluster.secret.expose())
        {
            write_private(
                &self.base.layout.secret_file(CLUSTER_SECRET),
                cluster.secret.expose().as_bytes(),
            )?;
            self.admin_query::<()>(&["CONFIG", "SET", "masterauth", cluster.secret.expose()])
                .await?;
        }
        self.ensure_cluster_user(&cluster.secret).await?;
        let mut c = self.connect_admin().await?;
        let (met, assigned) = self.meet_members(&mut c, cluster).await?;
        self.wait_nodes(
            &mut c,
            "the cluster's members were not all known",
            |nodes| {
                met.iter().all(|(ip, port)| {
                    nodes
                        .iter()
                        .any(|n| &n.ip == ip && n.port == *port && !n.has("handshake"))
                })
            },
        )
        .await?;
        if let Some(p) = me.replica_of.and_then(|p| cluster.member(p)) {
            let ip = resolve(&p.host, p.port).await?;
            let nodes = self
                .wait_nodes(&mut c, "the primary to follow was not known", |nodes| {
                    nodes
                        .iter()
                        .any(|n| n.ip == ip && n.port == p.port && n.has("master") && n.healthy())
                })
                .await?;
            let primary = nodes
                .iter()
                .find(|n| n.ip == ip && n.port == p.port && n.has("master"))
                .map(|n| n.id.clone())
                .unwrap_or_default();
            let mine = nodes.iter().find(|n| n.has("myself"));
            if mine.and_then(|n| n.master.as_deref()) != Some(primary.as_str()) {
                self.query::<()>(&mut c, &["CLUSTER", "REPLICATE", &primary])
                    .await?;
            }
            let deadline = Instant::now() + CONVERGE;
            loop {
                let info: String = self.query(&mut c, &["INFO", "replication"]).await?;
                if info_field(&info, "master_link_status") == Some("up")
                    && info_field(&info, "master_sync_in_progress") == Some("0")
                {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::backend(
                        BACKEND,
                        format!(
                            "the replica's link to its primary is not up within {} s",
                            CONVERGE.as_secs()
                        ),
                        true,
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else if assigned > 0 {
            // Joining a cluster that serves: ready once this node knows its slots and sees it ok (a node that
            // just started waits a little before it counts itself ok).
            self.wait_cluster_ok(&mut c, assigned).await?;
        }
        tracing::info!(
            instance = %self.base.ctx.instance_id,
            cluster = %cluster.cluster_id,
            met = met.len(),
            ms = started.elapsed().as_millis() as u64,
            "joined the cluster"
        );
        Ok(())
    }

    async fn set_members(&self, cluster: &ClusterSpec) -> Result<()> {
        check_spec(cluster)?;
        self.me(cluster)?;
        let mut listed = Vec::new();
        for m in &cluster.members {
            listed.push((resolve(&m.host, m.port).await?, m.port));
        }
        let mut c = self.connect_admin().await?;
        for n in self.my_nodes(&mut c).await? {
            if n.has("myself")
                || listed
                    .iter()
                    .any(|(ip, port)| *ip == n.ip && *port == n.port)
            {
                continue;
            }
            self.query::<()>(&mut c, &["CLUSTER", "FORGET", &n.id])
                .await?;
        }
        self.meet_members(&mut c, cluster).await?;
        Ok(())
    }

    async fn rebalance(&self, cluster: &ClusterSpec) -> Result<Moved> {
        check_spec(cluster)?;
        self.spread(cluster, &[]).await
    }

    async fn drain(&self, cluster: &ClusterSpec, leaving: &[Uuid]) -> Result<Moved> {
        check_spec(cluster)?;
        for id in leaving {
            if cluster.member(*id).is_none() {
                return Err(Error::bad_request(format!(
                    "The instance {id} is not a member of the cluster."
                )));
            }
        }
        if !cluster
            .primaries()
            .any(|m| !leaving.contains(&m.instance_id))
        {
            return Err(Error::bad_request(
                "No primary would stay in the cluster: at least one must.",
            ));
        }
        if let Some(r) = cluster.members.iter().find(|m| {
            !leaving.contains(&m.instance_id) && m.replica_of.is_some_and(|p| leaving.contains(&p))
        }) {
            return Err(Error::bad_request(format!(
                "The replica {} of a leaving primary must leave with it.",
                r.instance_id
            )));
        }
        let moved = self.spread(cluster, leaving).await?;

        // The leaving nodes' ids, from themselves when they answer, otherwise from this node's view.
        let mine = self.my_nodes(&mut self.connect_admin().await?).await?;
        let mut gone: Vec<(String, Option<MultiplexedConnection>)> = Vec::new();
        for m in cluster
            .members
            .iter()
            .filter(|m| leaving.contains(&m.instance_id))
        {
            let ip = resolve(&m.host, m.port).await?;
            let conn = self.connect_peer(&ip, m.port, &cluster.secret).await.ok();
            let id = match conn.clone() {
                Some(mut c) => self
                    .query::<String>(&mut c, &["CLUSTER", "MYID"])
                    .await
                    .ok(),
                None => None,
            }
            .or_else(|| {
                mine.iter()
                    .find(|n| n.ip == ip && n.port == m.port)
                    .map(|n| n.id.clone())
            });
            if let Some(id) = id {
                gone.push((id, conn));
            }
        }
        for m in cluster
            .members
            .iter()
            .filter(|m| !leaving.contains(&m.instance_id))
        {
            let ip = resolve(&m.host, m.port).await?;
            let mut c = self.connect_peer(&ip, m.port, &cluster.secret).await?;
            for (id, _) in &gone {
                let r = self.query::<()>(&mut c, &["CLUSTER", "FORGET", id]).await;
                if let Err(e) = r {
                    // Already forgotten (a drain done again).
                    if !e.to_string().contains("Unknown node") {
                        return Err(e);
                    }
                }
            }
        }
        for (_, conn) in gone {
            if let Some(mut c) = conn {
                if let Err(e) = self
                    .query::<()>(&mut c, &["CLUSTER", "RESET", "HARD"])
                    .await
                {
                    tracing::warn!(instance = %self.base.ctx.instance_id, error = %e, "a leaving node did not reset");
                }
            }
        }
        Ok(moved)
    }

    async fn status(&self) -> Result<ClusterMemberStatus> {
        let mut c = self.connect_admin().await?;
        let keys: u64 = self.query(&mut c, &["DBSIZE"]).await?;
        let info: String = self.query(&mut c, &["INFO", "cluster"]).await?;
        if info_field(&info, "cluster_enabled") != Some("1") {
            return Ok(ClusterMemberStatus {
                ready: false,
                members_seen: 0,
                slots: None,
                keys: Some(keys),
                state: "not a cluster node".into(),
                replica_of: None,
            });
        }
        let info: String = self.query(&mut c, &["CLUSTER", "INFO"]).await?;
        let state = info_field(&info, "cluster_state")
            .unwrap_or("unknown")
            .to_string();
        let nodes = self.my_nodes(&mut c).await?;
        let me = nodes.iter().find(|n| n.has("myself"));
        let slots = me.map_or(0, |n| n.slots.len() as u32);
        // A replica names its primary by node id; the control plane knows members by address.
        let replica_of = me
            .filter(|n| n.has("slave"))
            .and_then(|n| n.master.as_deref())
            .and_then(|id| nodes.iter().find(|p| p.id == id))
            .map(|p| format!("{}:{}", p.ip, p.port));
        Ok(ClusterMemberStatus {
            ready: state == "ok",
            members_seen: nodes.iter().filter(|n| n.healthy()).count() as u32,
            slots: Some(slots),
            keys: Some(keys),
            state,
            replica_of,
        })
    }

    async fn load(&self) -> Result<LoadMetrics> {
        let info: String = self.admin_query(&["INFO"]).await?;
        let now = Instant::now();
        let used: Option<f64> = info_num(&info, "used_memory");
        let max: Option<f64> = info_num(&info, "maxmemory");
        let commands: Option<u64> = info_num(&info, "total_commands_processed");
        let cpu_seconds = info_num::<f64>(&info, "used_cpu_sys")
            .zip(info_num::<f64>(&info, "used_cpu_user"))
            .map(|(a, b)| a + b);
        let previous = {
            let mut prev = self.load_prev.lock().unwrap_or_else(|p| p.into_inner());
            let old = *prev;
            if let (Some(commands), Some(cpu_seconds)) = (commands, cpu_seconds) {
                *prev = Some(LoadSample {
                    at: now,
                    commands,
                    cpu_seconds,
                });
            }
            old
        };
        let since = previous
            .map(|p| now.duration_since(p.at).as_secs_f64())
            .filter(|s| *s > 0.0);
        let ops_per_sec = match (previous, since, commands) {
            (Some(p), Some(s), Some(c)) if c >= p.commands => Some((c - p.commands) as f64 / s),
            _ => info_num(&info, "instantaneous_ops_per_sec"),
        };
        let cpu = match (previous, since, cpu_seconds) {
            (Some(p), Some(s), Some(c)) if c >= p.cpu_seconds => Some((c - p.cpu_seconds) / s),
            _ => None,
        };
        let volume_used = self
            .base
            .fs_stats()
            .await
            .ok()
            .filter(|f| f.total_bytes > 0)
            .map(|f| f.used_bytes as f64 / f.total_bytes as f64);
        Ok(LoadMetrics {
            memory_used: used.zip(max.filter(|m| *m > 0.0)).map(|(u, m)| u / m),
            ops_per_sec,
            connections: info_num(&info, "connected_clients"),
            flow_control_paused: None,
            cpu,
            volume_used,
        })
    }

    /// Redis nodes recover their cluster from their own `nodes.conf`: there is no position to compare.
    async fn recovery_position(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Only starts the engine (it finds its cluster again from `nodes.conf`).
    async fn bootstrap(&self, cluster: &ClusterSpec) -> Result<()> {
        self.me(cluster)?;
        start_engine(self).await
    }

    /// The `ACL LIST` lines of the users made through the API (not `default`, not the guest's reserved ones):
    /// rules and password hashes, never a password.
    async fn users(&self) -> Result<Vec<Secret>> {
        let mut c = self.connect_admin().await?;
        let lines: Vec<String> = self.query(&mut c, &["ACL", "LIST"]).await?;
        Ok(lines
            .into_iter()
            .filter(|l| {
                let mut p = l.split(' ');
                p.next() == Some("user")
                    && p.next()
                        .is_some_and(|n| n != "default" && self.base.check_reserved(n).is_ok())
            })
            .map(Secret::new)
            .collect())
    }

    /// Each line's user made again with its rules (`ACL SETUSER <name> reset <rules>`), then `ACL SAVE`.
    async fn set_users(&self, users: &[Secret]) -> Result<()> {
        for line in users {
            let parts: Vec<&str> = line.expose().split(' ').collect();
            let (name, rules) = match parts.as_slice() {
                ["user", name, rules @ ..] if *name != "default" => (*name, rules),
                _ => return Err(Error::bad_request("Not a user line of `ACL LIST`.")),
            };
            self.check_user(name)?;
            let mut args = vec!["SETUSER", name, "reset"];
            args.extend_from_slice(rules);
            self.acl(&args).await?;
        }
        if !users.is_empty() {
            self.acl(&["SAVE"]).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_are_parsed() {
        let text = "07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected\n\
                    67ed 127.0.0.1:30002@40002,host2 master - 0 1426238316232 2 connected 5461-10922 12000\n\
                    e7d1 :30001@40001 myself,master - 0 0 1 connected 0-2 [3->-67ed] [4-<-67ed]\n\
                    bad line\n";
        let n = parse_nodes(text);
        assert_eq!(n.len(), 3);
        assert_eq!(n[0].master.as_deref(), Some("e7d1"));
        assert_eq!((n[1].ip.as_str(), n[1].port), ("127.0.0.1", 30002));
        assert_eq!(n[1].slots.len(), 5462 + 1);
        assert!(n[2].has("myself") && n[2].healthy());
        assert_eq!(n[2].slots, vec![0, 1, 2]);
        assert_eq!(n[2].migrating, vec![(3, "67ed".to_string())]);
        assert_eq!(n[2].importing, vec![(4, "67ed".to_string())]);
    }

    #[test]
    fn shares_are_fair_and_the_first_get_the_remainder() {
        assert_eq!(shares(3), vec![5462, 5461, 5461]);
        assert_eq!(shares(4), vec![4096; 4]);
        assert_eq!(shares(1), vec![16384]);
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 7), (9, 10)]);
    }

    #[test]
    fn a_plan_assigns_free_slots_then_moves_the_surplus() {
        // Nothing assigned: contiguous ranges.
        let p = plan(&[vec![], vec![], vec![]], &shares(3));
        assert!(p.moves.is_empty());
        assert_eq!(ranges(&p.add[0].1), vec![(0, 5461)]);
        assert_eq!(ranges(&p.add[2].1), vec![(10923, 16383)]);
        // A fourth member gets 4096, from the others' highest slots.
        let owned: Vec<Vec<u16>> = p
            .add
            .iter()
            .map(|(_, s)| s.clone())
            .chain([vec![]])
            .collect();
        let p = plan(&owned, &shares(4));
        assert!(p.add.is_empty());
        assert_eq!(p.moves.len(), 4096);
        assert!(p.moves.iter().all(|(_, _, to)| *to == 3));
        let from0 = p.moves.iter().filter(|m| m.1 == 0).count();
        assert_eq!(from0, 5462 - 4096);
        // Balanced: nothing to do.
        let mut after = owned.clone();
        for (s, from, to) in &p.moves {
            after[*from].retain(|x| x != s);
            after[*to].push(*s);
        }
        after.iter_mut().for_each(|v| v.sort_unstable());
        assert_eq!(plan(&after, &shares(4)), Plan::default());
        // Draining the fourth: its share is 0, the others take it back.
        let mut share = shares(3);
        share.push(0);
        let p = plan(&after, &share);
        assert_eq!(p.moves.len(), 4096);
        assert!(p.moves.iter().all(|(_, from, _)| *from == 3));
    }

    #[test]
    fn bad_specs_are_refused() {
        let m = |port, replica_of| ClusterMember {
            instance_id: Uuid::new_v4(),
            host: "127.0.0.1".into(),
            port,
            replica_of,
        };
        let a = m(6379, None);
        let mut spec = ClusterSpec {
            cluster_id: Uuid::new_v4(),
            members: vec![a.clone(), m(6380, Some(a.instance_id))],
            secret: Secret::new("s3cret"),
        };
        assert!(check_spec(&spec).is_ok());
        spec.members.push(m(60000, None));
        assert!(check_spec(&spec).is_err(), "no room for the bus port");
        spec.members.pop();
        spec.members
            .push(m(6381, Some(spec.members[1].instance_id)));
        assert!(check_spec(&spec).is_err(), "a replica of a replica");
        spec.members.pop();
        spec.secret = Secret::new("a\nb");
        assert!(check_spec(&spec).is_err());
    }
}
