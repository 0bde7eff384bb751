use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// A datastore (engine family) such as `mysql` or `postgresql`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Datastore {
    /// Stable id.
    pub id: Uuid,
    /// Unique name, e.g. `mysql`.
    pub name: String,
    /// The version used when a create request names none.
    pub default_version_id: Option<Uuid>,
}

/// One installable version of a datastore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatastoreVersion {
    /// Stable id.
    pub id: Uuid,
    /// The datastore it belongs to.
    pub datastore_id: Uuid,
    /// Version name, unique within the datastore together with `version`, e.g. `5.7`.
    pub name: String,
    /// Guest manager that runs it.
    pub manager: Manager,
    /// Image. For local-process compute: the directory holding the engine's binaries (empty = autodetect).
    pub image: String,
    /// Packages string as given to trove-manage (comma separated).
    pub packages: String,
    /// Whether new instances may use it.
    pub active: bool,
    /// Version number (upstream `version`); defaults to the name.
    pub version: String,
    /// Flavors allowed for this version; empty means every flavor.
    pub flavor_ids: Vec<String>,
}

/// A compute flavor: the size of a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flavor {
    /// Id as given by the operator (upstream ids are strings or integers).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Memory in MB; engine memory settings are rendered from it.
    pub ram_mb: u32,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Root disk in GB.
    pub disk_gb: u32,
    /// Ephemeral disk in GB.
    pub ephemeral_gb: u32,
}

/// The guest manager of a datastore version: which strategy runs the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    /// MySQL (served by MariaDB binaries where Oracle MySQL is not installed).
    Mysql,
    /// MariaDB.
    Mariadb,
    /// PostgreSQL.
    Postgresql,
    /// Redis.
    Redis,
    /// MongoDB (no server can run on the project's machines yet).
    Mongodb,
    /// Cassandra (no server can run on the project's machines yet).
    Cassandra,
}

impl Manager {
    /// All managers, in a stable order.
    pub const ALL: [Manager; 6] = [
        Manager::Mysql,
        Manager::Mariadb,
        Manager::Postgresql,
        Manager::Redis,
        Manager::Mongodb,
        Manager::Cassandra,
    ];

    /// The manager's name as stored and shown (`mysql`, `postgresql`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Manager::Mysql => "mysql",
            Manager::Mariadb => "mariadb",
            Manager::Postgresql => "postgresql",
            Manager::Redis => "redis",
            Manager::Mongodb => "mongodb",
            Manager::Cassandra => "cassandra",
        }
    }

    /// Parses a manager name; unknown names are a 400 that lists the known ones.
    pub fn parse(name: &str) -> Result<Manager> {
        Manager::ALL
            .into_iter()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<_> = Manager::ALL.iter().map(|m| m.as_str()).collect();
                Error::bad_request(format!(
                    "Unknown datastore manager '{name}'; known managers: {}.",
                    known.join(", ")
                ))
            })
    }

    /// Whether the engine's backups can be incremental (on top of a parent backup). The guest's
    /// [`BackupFacet::incremental`](crate::ports::BackupFacet::incremental) answers the same.
    pub fn incremental_backups(self) -> bool {
        matches!(
            self,
            Manager::Mysql | Manager::Mariadb | Manager::Postgresql
        )
    }

    /// Whether a restore can stop at a moment between two backups (`restorePoint.restore_time`): the engine's
    /// incrementals carry its archive (WAL, binary logs) since their parent, replayed to the moment.
    pub fn point_in_time_restore(self) -> bool {
        matches!(
            self,
            Manager::Mysql | Manager::Mariadb | Manager::Postgresql
        )
    }

    /// The engine's standard port.
    pub fn default_port(self) -> u16 {
        match self {
            Manager::Mysql | Manager::Mariadb => 3306,
            Manager::Postgresql => 5432,
            Manager::Redis => 6379,
            Manager::Mongodb => 27017,
            Manager::Cassandra => 9042,
        }
    }
}

impl std::fmt::Display for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An optional part of what a datastore strategy can do beyond its lifecycle (upstream's per-datastore
/// "not supported" checks are answered from these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Facet {
    /// Users: create, list, delete, update, change passwords.
    Users,
    /// Databases: create, list, delete, and granting users access to them.
    Databases,
    /// The root (superuser) account: enable, disable.
    Root,
    /// Configuration groups applied to the engine.
    Configuration,
    /// Instance TLS (upstream `ssl_show` / `ssl_action` / `ssl_rollback`).
    Tls,
    /// Guest logs (list, enable, disable, publish, discard).
    Logs,
    /// Backups: take, restore, and incremental where the engine can.
    Backup,
    /// Replication: replicas, switchover, eject (seeded from backups).
    Replication,
    /// Cluster membership: Redis Cluster, MariaDB Galera.
    Cluster,
}

impl Facet {
    /// Every facet, in a stable order.
    pub const ALL: [Facet; 9] = [
        Facet::Users,
        Facet::Databases,
        Facet::Root,
        Facet::Configuration,
        Facet::Tls,
        Facet::Logs,
        Facet::Backup,
        Facet::Replication,
        Facet::Cluster,
    ];

    /// The facet's name (`users`, `databases`, ...), as in upstream's "Operation not supported" messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Facet::Users => "users",
            Facet::Databases => "databases",
            Facet::Root => "root",
            Facet::Configuration => "configuration",
            Facet::Tls => "tls",
            Facet::Logs => "logs",
            Facet::Backup => "backup",
            Facet::Replication => "replication",
            Facet::Cluster => "cluster",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl std::fmt::Display for Facet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Facet`]s (a small bitset; serialised as the sorted list of facet names).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FacetSet(u16);

impl FacetSet {
    /// No facet.
    pub const EMPTY: FacetSet = FacetSet(0);

    /// The set of `facets`.
    pub fn of(facets: &[Facet]) -> FacetSet {
        facets.iter().copied().collect()
    }

    /// Whether `facet` is in the set.
    pub fn contains(self, facet: Facet) -> bool {
        self.0 & facet.bit() != 0
    }

    /// Adds `facet`; answers whether it was not there yet.
    pub fn insert(&mut self, facet: Facet) -> bool {
        let new = !self.contains(facet);
        self.0 |= facet.bit();
        new
    }

    /// Removes `facet`; answers whether it was there.
    pub fn remove(&mut self, facet: Facet) -> bool {
        let had = self.contains(facet);
        self.0 &= !facet.bit();
        had
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many facets the set holds.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The facets in the set, in [`Facet::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Facet> {
        Facet::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl FromIterator<Facet> for FacetSet {
    fn from_iter<I: IntoIterator<Item = Facet>>(iter: I) -> FacetSet {
        let mut s = FacetSet::EMPTY;
        for f in iter {
            s.insert(f);
        }
        s
    }
}

impl std::fmt::Debug for FacetSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl std::fmt::Display for FacetSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(Facet::as_str).collect();
        f.write_str(&names.join(", "))
    }
}

impl Serialize for FacetSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for FacetSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<FacetSet, D::Error> {
        Ok(Vec::<Facet>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facet_sets_insert_iterate_and_serialise() {
        let mut s = FacetSet::EMPTY;
        assert!(s.is_empty());
        assert!(s.insert(Facet::Tls));
        assert!(!s.insert(Facet::Tls), "a second insert adds nothing");
        assert!(s.insert(Facet::Users));
        assert!(s.insert(Facet::Cluster));
        assert_eq!(s.len(), 3);
        assert!(s.contains(Facet::Users) && !s.contains(Facet::Databases));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![Facet::Users, Facet::Tls, Facet::Cluster]
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"["users","tls","cluster"]"#);
        assert_eq!(serde_json::from_str::<FacetSet>(&json).unwrap(), s);
        assert!(serde_json::from_str::<FacetSet>(r#"["teleport"]"#).is_err());
        assert!(s.remove(Facet::Tls) && !s.contains(Facet::Tls));
        assert_eq!(s.to_string(), "users, cluster");
    }
}
