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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// What a datastore manager supports; the core answers "not supported" for anything not claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// Users can be managed through the API.
    pub users: bool,
    /// Databases can be managed through the API.
    pub databases: bool,
    /// Root can be enabled.
    pub root: bool,
    /// Configuration groups can be applied.
    pub configuration: bool,
    /// Backups can be taken.
    pub backup: bool,
    /// Replicas can be created.
    pub replication: bool,
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

    /// What the API may ask of this manager (upstream `load_and_verify` plus the legacy Redis rules).
    pub fn capabilities(self) -> Capabilities {
        match self {
            Manager::Mysql | Manager::Mariadb | Manager::Postgresql => Capabilities {
                users: true,
                databases: true,
                root: true,
                configuration: true,
                backup: true,
                replication: true,
            },
            Manager::Redis => Capabilities {
                users: true,
                databases: false,
                root: true,
                configuration: true,
                backup: true,
                replication: true,
            },
            Manager::Mongodb | Manager::Cassandra => Capabilities::default(),
        }
    }
}

impl std::fmt::Display for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
