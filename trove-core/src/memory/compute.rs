//! In-process [`Compute`]: servers are records on a configurable list of hosts; guests are started through a
//! [`GuestLauncher`].

use async_trait::async_trait;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{Address, DatastoreVersion, Flavor, Locality};
use crate::ports::{migration_target, Compute, GuestLauncher, GuestSpec, Server, ServerSpec};
use crate::state::ServerStatus;

const BACKEND: &str = "memory-compute";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`GuestLauncher`] that does nothing (compute used without guests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopLauncher;

#[async_trait]
impl GuestLauncher for NoopLauncher {
    async fn launch(&self, _spec: &GuestSpec) -> Result<()> {
        Ok(())
    }
    async fn stop(&self, _instance_id: Uuid) -> Result<()> {
        Ok(())
    }
}

/// A [`GuestLauncher`] that records what it was asked to do (tests).
#[derive(Debug, Default, Clone)]
pub struct RecordingLauncher {
    running: Arc<Mutex<HashMap<Uuid, GuestSpec>>>,
    launches: Arc<Mutex<Vec<Uuid>>>,
    stops: Arc<Mutex<Vec<Uuid>>>,
}

impl RecordingLauncher {
    /// A launcher with nothing running.
    pub fn new() -> RecordingLauncher {
        RecordingLauncher::default()
    }
    /// Whether a guest runs for the instance.
    pub fn is_running(&self, instance_id: Uuid) -> bool {
        lock(&self.running).contains_key(&instance_id)
    }
    /// The spec the running guest of an instance was launched with.
    pub fn spec(&self, instance_id: Uuid) -> Option<GuestSpec> {
        lock(&self.running).get(&instance_id).cloned()
    }
    /// Every `launch` call, in order.
    pub fn launches(&self) -> Vec<Uuid> {
        lock(&self.launches).clone()
    }
    /// Every `stop` call, in order.
    pub fn stops(&self) -> Vec<Uuid> {
        lock(&self.stops).clone()
    }
    /// Instances with a running guest.
    pub fn running(&self) -> Vec<Uuid> {
        lock(&self.running).keys().copied().collect()
    }
}

#[async_trait]
impl GuestLauncher for RecordingLauncher {
    async fn launch(&self, spec: &GuestSpec) -> Result<()> {
        lock(&self.launches).push(spec.instance_id);
        lock(&self.running)
            .entry(spec.instance_id)
            .or_insert_with(|| spec.clone());
        Ok(())
    }
    async fn stop(&self, instance_id: Uuid) -> Result<()> {
        lock(&self.stops).push(instance_id);
        lock(&self.running).remove(&instance_id);
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Record {
    server: Server,
    spec: ServerSpec,
    reboots: u32,
    image_id: Option<String>,
    rebuilds: u32,
}

#[derive(Debug, Default)]
struct Faults {
    fail_create: usize,
    fail_delete: usize,
    fail_resize: usize,
}

#[derive(Debug, Default)]
struct State {
    servers: HashMap<Uuid, Record>,
    next_address: u32,
    faults: Faults,
}

/// The in-memory compute.
///
/// Placement: an explicit `availability_zone` names the host; otherwise a replica-set `group` is honoured
/// (affinity: the host of the existing members; anti-affinity: a host with no member; the strict forms fail with a
/// 400 when impossible, the soft forms fall back), and everything else goes to the least loaded host. Hosts may
/// have a capacity ([`MemoryCompute::with_capacity`]).
///
/// Creating a server makes it ACTIVE at once and calls [`GuestLauncher::launch`] with a synthetic server
/// directory (`/memory/servers/<instance>`) and the engine's standard port; deleting it calls
/// [`GuestLauncher::stop`].
pub struct MemoryCompute {
    hosts: Vec<String>,
    capacity: Option<usize>,
    launcher: Arc<dyn GuestLauncher>,
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryCompute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCompute")
            .field("hosts", &self.hosts)
            .field("capacity", &self.capacity)
            .field("servers", &lock(&self.state).servers.len())
            .finish()
    }
}

impl MemoryCompute {
    /// A compute with one host, `localhost`.
    pub fn new(launcher: Arc<dyn GuestLauncher>) -> MemoryCompute {
        MemoryCompute::with_hosts(vec!["localhost".to_string()], launcher)
    }

    /// A compute over the given hosts (an empty list means one host, `localhost`).
    pub fn with_hosts(hosts: Vec<String>, launcher: Arc<dyn GuestLauncher>) -> MemoryCompute {
        let hosts = if hosts.is_empty() {
            vec!["localhost".to_string()]
        } else {
            hosts
        };
        MemoryCompute {
            hosts,
            capacity: None,
            launcher,
            state: Mutex::new(State::default()),
        }
    }

    /// Limits every host to `servers` servers.
    pub fn with_capacity(mut self, servers: usize) -> MemoryCompute {
        self.capacity = Some(servers);
        self
    }

    /// Makes the next `n` `create_server` calls fail with a transient backend error (before any side effect).
    pub fn fail_next_create(&self, n: usize) {
        lock(&self.state).faults.fail_create = n;
    }

    /// Makes the next `n` `delete_server` calls fail with a transient backend error (before any side effect).
    pub fn fail_next_delete(&self, n: usize) {
        lock(&self.state).faults.fail_delete = n;
    }

    /// Makes the next `n` `resize_server` calls fail with a transient backend error (before any side effect).
    pub fn fail_next_resize(&self, n: usize) {
        lock(&self.state).faults.fail_resize = n;
    }

    /// Forces a server's status (e.g. ERROR) to simulate a compute failure.
    pub fn set_status(&self, instance_id: Uuid, status: ServerStatus) -> Result<()> {
        let mut st = lock(&self.state);
        let rec = st
            .servers
            .get_mut(&instance_id)
            .ok_or_else(|| Error::not_found("Server", instance_id))?;
        rec.server.status = status;
        Ok(())
    }

    /// The spec a server was created with (with the flavor it was last resized to).
    pub fn spec(&self, instance_id: Uuid) -> Option<ServerSpec> {
        lock(&self.state)
            .servers
            .get(&instance_id)
            .map(|r| r.spec.clone())
    }

    /// How many times a server was rebooted.
    pub fn reboots(&self, instance_id: Uuid) -> u32 {
        lock(&self.state)
            .servers
            .get(&instance_id)
            .map(|r| r.reboots)
            .unwrap_or(0)
    }

    /// The image a server was last rebuilt from, and how many times it was rebuilt.
    pub fn rebuilds(&self, instance_id: Uuid) -> (Option<String>, u32) {
        lock(&self.state)
            .servers
            .get(&instance_id)
            .map(|r| (r.image_id.clone(), r.rebuilds))
            .unwrap_or((None, 0))
    }

    /// Every server, in no particular order.
    pub fn servers(&self) -> Vec<Server> {
        lock(&self.state)
            .servers
            .values()
            .map(|r| r.server.clone())
            .collect()
    }

    fn load(st: &State, host: &str) -> usize {
        st.servers
            .values()
            .filter(|r| r.server.host == host)
            .count()
    }

    fn place(&self, st: &State, spec: &ServerSpec) -> Result<String> {
        let has_room = |h: &str| self.capacity.is_none_or(|c| Self::load(st, h) < c);
        if let Some(az) = &spec.availability_zone {
            if !self.hosts.contains(az) {
                return Err(Error::bad_request(format!(
                    "Availability zone '{az}' does not exist; known zones: {}.",
                    self.hosts.join(", ")
                )));
            }
            if !has_room(az) {
                return Err(Error::bad_request(format!(
                    "Availability zone '{az}' has no room for another server."
                )));
            }
            return Ok(az.clone());
        }
        let least_loaded = |candidates: &mut dyn Iterator<Item = &String>| -> Option<String> {
            candidates
                .filter(|h| has_room(h))
                .min_by_key(|h| Self::load(st, h))
                .cloned()
        };
        let no_room = || Error::bad_request("No host has room for another server.");
        let Some((group, locality)) = spec.group else {
            return least_loaded(&mut self.hosts.iter()).ok_or_else(no_room);
        };
        let member_hosts: Vec<String> = st
            .servers
            .values()
            .filter(|r| r.spec.instance_id == group || r.spec.group.map(|(g, _)| g) == Some(group))
            .map(|r| r.server.host.clone())
            .collect();
        match locality {
            Locality::Affinity | Locality::SoftAffinity => {
                let wanted = member_hosts.first().filter(|h| has_room(h));
                match (wanted, locality, member_hosts.is_empty()) {
                    (Some(h), _, _) => Ok(h.clone()),
                    (None, _, true) => least_loaded(&mut self.hosts.iter()).ok_or_else(no_room),
                    (None, Locality::Affinity, false) => Err(Error::bad_request(format!(
                        "Cannot place the server with affinity to group {group}: host '{}' has no room.",
                        member_hosts[0]
                    ))),
                    (None, _, false) => least_loaded(&mut self.hosts.iter()).ok_or_else(no_room),
                }
            }
            Locality::AntiAffinity | Locality::SoftAntiAffinity => {
                let free =
                    least_loaded(&mut self.hosts.iter().filter(|h| !member_hosts.contains(h)));
                match (free, locality) {
                    (Some(h), _) => Ok(h),
                    (None, Locality::AntiAffinity) => Err(Error::bad_request(format!(
                        "Cannot place the server with anti-affinity to group {group}: every host with room already \
                         holds a member ({} hosts).",
                        self.hosts.len()
                    ))),
                    (None, _) => least_loaded(&mut self.hosts.iter()).ok_or_else(no_room),
                }
            }
        }
    }

    fn guest_spec(spec: &ServerSpec, server: &Server) -> GuestSpec {
        GuestSpec {
            instance_id: spec.instance_id,
            datastore_version: spec.datastore_version.clone(),
            flavor: spec.flavor.clone(),
            server_dir: PathBuf::from(format!("/memory/servers/{}", spec.instance_id)),
            volume_path: spec.volume_path.clone(),
            bind_address: server
                .addresses
                .first()
                .map(|a| a.address.clone())
                .unwrap_or_default(),
            port: server
                .port
                .unwrap_or_else(|| spec.datastore_version.manager.default_port()),
        }
    }
}

fn injected(what: &str) -> Error {
    Error::backend(BACKEND, format!("injected {what} failure"), true)
}

#[async_trait]
impl Compute for MemoryCompute {
    async fn create_server(&self, spec: &ServerSpec) -> Result<Server> {
        let (server, guest) = {
            let mut st = lock(&self.state);
            if st.faults.fail_create > 0 {
                st.faults.fail_create -= 1;
                return Err(injected("create"));
            }
            match st.servers.get(&spec.instance_id) {
                Some(rec) => (rec.server.clone(), Self::guest_spec(&rec.spec, &rec.server)),
                None => {
                    let host = self.place(&st, spec)?;
                    st.next_address += 1;
                    let n = st.next_address;
                    let server = Server {
                        id: Uuid::new_v4().to_string(),
                        instance_id: spec.instance_id,
                        host,
                        status: ServerStatus::Active,
                        addresses: vec![Address {
                            address: format!(
                                "10.{}.{}.{}",
                                (n >> 16) & 0xff,
                                (n >> 8) & 0xff,
                                n & 0xff
                            ),
                            kind: "private".into(),
                        }],
                        port: None,
                    };
                    let guest = Self::guest_spec(spec, &server);
                    st.servers.insert(
                        spec.instance_id,
                        Record {
                            server: server.clone(),
                            spec: spec.clone(),
                            reboots: 0,
                            image_id: None,
                            rebuilds: 0,
                        },
                    );
                    (server, guest)
                }
            }
        };
        // Launch on every call: a create retried after a crash between the record and the launch still gets its
        // guest, and the launcher leaves a running guest alone.
        self.launcher.launch(&guest).await?;
        Ok(server)
    }

    async fn get_server(&self, instance_id: Uuid) -> Result<Option<Server>> {
        Ok(lock(&self.state)
            .servers
            .get(&instance_id)
            .map(|r| r.server.clone()))
    }

    async fn delete_server(&self, instance_id: Uuid) -> Result<()> {
        {
            let mut st = lock(&self.state);
            if st.faults.fail_delete > 0 {
                st.faults.fail_delete -= 1;
                return Err(injected("delete"));
            }
        }
        // Stop the guest first: if stopping fails, the server is still there and the delete can be retried.
        self.launcher.stop(instance_id).await?;
        lock(&self.state).servers.remove(&instance_id);
        Ok(())
    }

    async fn reboot_server(&self, instance_id: Uuid) -> Result<()> {
        let mut st = lock(&self.state);
        let rec = st
            .servers
            .get_mut(&instance_id)
            .ok_or_else(|| Error::not_found("Server", instance_id))?;
        rec.reboots += 1;
        rec.server.status = ServerStatus::Active;
        Ok(())
    }

    async fn resize_server(&self, instance_id: Uuid, flavor: &Flavor) -> Result<()> {
        let mut st = lock(&self.state);
        if st.faults.fail_resize > 0 {
            st.faults.fail_resize -= 1;
            return Err(injected("resize"));
        }
        let rec = st
            .servers
            .get_mut(&instance_id)
            .ok_or_else(|| Error::not_found("Server", instance_id))?;
        rec.spec.flavor = flavor.clone();
        rec.server.status = ServerStatus::Active;
        Ok(())
    }

    async fn hosts(&self) -> Result<Vec<String>> {
        Ok(self.hosts.clone())
    }

    async fn migrate_server(&self, instance_id: Uuid, host: Option<&str>) -> Result<Server> {
        let target = {
            let st = lock(&self.state);
            let rec = st
                .servers
                .get(&instance_id)
                .ok_or_else(|| Error::not_found("Server", instance_id))?;
            let target =
                migration_target(&self.hosts, &rec.server.host, host, |h| Self::load(&st, h))?;
            if self.capacity.is_some_and(|c| Self::load(&st, &target) >= c) {
                return Err(Error::bad_request(format!(
                    "Host '{target}' has no room for another server."
                )));
            }
            target
        };
        // The guest (and its engine) stops on the old host and starts again on the new one.
        self.launcher.stop(instance_id).await?;
        let (server, guest) = {
            let mut st = lock(&self.state);
            let rec = st
                .servers
                .get_mut(&instance_id)
                .ok_or_else(|| Error::not_found("Server", instance_id))?;
            rec.server.host = target;
            rec.server.status = ServerStatus::Active;
            (rec.server.clone(), Self::guest_spec(&rec.spec, &rec.server))
        };
        self.launcher.launch(&guest).await?;
        Ok(server)
    }

    async fn rebuild_server(
        &self,
        instance_id: Uuid,
        image_id: &str,
        datastore_version: Option<&DatastoreVersion>,
    ) -> Result<Server> {
        if !lock(&self.state).servers.contains_key(&instance_id) {
            return Err(Error::not_found("Server", instance_id));
        }
        self.launcher.stop(instance_id).await?;
        let (server, guest) = {
            let mut st = lock(&self.state);
            let rec = st
                .servers
                .get_mut(&instance_id)
                .ok_or_else(|| Error::not_found("Server", instance_id))?;
            rec.image_id = Some(image_id.to_string());
            rec.rebuilds += 1;
            if let Some(v) = datastore_version {
                rec.spec.datastore_version = v.clone();
            }
            rec.server.status = ServerStatus::Active;
            (rec.server.clone(), Self::guest_spec(&rec.spec, &rec.server))
        };
        self.launcher.launch(&guest).await?;
        Ok(server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DatastoreVersion, Manager};

    pub(crate) fn spec(group: Option<(Uuid, Locality)>) -> ServerSpec {
        ServerSpec {
            instance_id: Uuid::new_v4(),
            name: "s".into(),
            flavor: Flavor {
                id: "1".into(),
                name: "small".into(),
                ram_mb: 512,
                vcpus: 1,
                disk_gb: 1,
                ephemeral_gb: 0,
            },
            datastore_version: DatastoreVersion {
                id: Uuid::new_v4(),
                datastore_id: Uuid::new_v4(),
                name: "10".into(),
                manager: Manager::Mariadb,
                image: String::new(),
                packages: String::new(),
                active: true,
                version: "10".into(),
                flavor_ids: vec![],
            },
            volume_path: None,
            group,
            availability_zone: None,
        }
    }

    #[tokio::test]
    async fn strict_affinity_fails_when_host_full() {
        let l = Arc::new(RecordingLauncher::new());
        let c = MemoryCompute::with_hosts(vec!["a".into(), "b".into()], l.clone()).with_capacity(1);
        let src = spec(None);
        let s = c.create_server(&src).await.unwrap();
        assert_eq!(l.spec(src.instance_id).unwrap().port, 3306);
        let e = c
            .create_server(&spec(Some((src.instance_id, Locality::Affinity))))
            .await
            .unwrap_err();
        assert_eq!(e.fault().status, 400, "{e}");
        let soft = c
            .create_server(&spec(Some((src.instance_id, Locality::SoftAffinity))))
            .await
            .unwrap();
        assert_ne!(soft.host, s.host);
        c.fail_next_create(1);
        assert!(c
            .create_server(&spec(None))
            .await
            .unwrap_err()
            .is_transient());
    }
}
