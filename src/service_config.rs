//! One configuration for every role of the distributed deployment (`trove-api`, `trove-taskmanager`,
//! `trove-conductor`, `trove-guestagent`), and the adapters built from it.
//!
//! The configuration is a TOML file (all keys optional, see `examples/distributed.toml`); every key can be
//! overridden by an environment variable named `TROVE_<SECTION>__<KEY>` (upper case, `__` between levels), e.g.
//! `TROVE_DATABASE__URL`, `TROVE_AMQP__PORT`, `TROVE_CORE__REPORT_INTERVAL`. Unknown keys (in the file or in such a
//! variable) and ill-typed values are errors that name the key. Secrets (the database URL, the broker password)
//! never appear in `Debug` output or logs.
//!
//! ```
//! # fn demo() -> trove::core::Result<()> {
//! use trove::service_config::ServiceConfig;
//! let cfg = ServiceConfig::from_toml_str("[amqp]\nport = 5673\n", std::iter::empty())?;
//! assert_eq!(cfg.amqp.port, 5673);
//! # Ok(())
//! # }
//! ```

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

use trove_amqp::access::{GuestAccess, RabbitCtl};
use trove_amqp::{AmqpBus, AmqpConfig};
use trove_backends::local::{
    DirBlockStorage, GuestBusAccess, LocalCompute, LocalComputeConfig, ProcessLauncher,
    ProcessLauncherConfig, ServerDirKeys, SharedBusAccess,
};
use trove_backends::sql::{self, StoreLocation};
use trove_core::model::Secret;
use trove_core::policy::Policy;
use trove_core::ports::{DynAuthenticator, DynStore, StrategyFactory};
use trove_core::{CoreConfig, Error, Result};
use trove_guest::{EngineConfig, EngineStrategyFactory};

pub use crate::env_overrides::ENV_PREFIX;
use crate::env_overrides::{config_err, unknown_key};

/// The infrastructure database.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user[:password]@host:port/db` (or `sqlite://PATH`). Secret: it may hold a password.
    pub url: Secret,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/trove"),
        }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field(
                "url",
                &StoreLocation::Url(self.url.expose().into()).display(),
            )
            .finish()
    }
}

/// The REST API role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// `noauth` (the tenant is the URL's), `noauth-admin` (every caller is admin: single-operator installs),
    /// `token-file` (tokens listed in `token_file`) or `keystone` (Keystone v3 validation).
    pub auth: String,
    /// Base URL used in links.
    pub public_endpoint: Option<String>,
    /// Token file for `auth = "token-file"` (one `TOKEN PROJECT USER [ROLES]` per line).
    pub token_file: Option<PathBuf>,
    /// Keystone v3 URL for `auth = "keystone"`.
    pub keystone_url: String,
    /// Keystone service user.
    pub keystone_user: String,
    /// Keystone service user's password.
    pub keystone_password: Secret,
    /// Keystone service project.
    pub keystone_project: String,
    /// Policy file (`policy.yaml` or JSON: `"rule name": "check string"` per line) whose rules replace upstream's
    /// defaults; unset: the defaults. A bad file refuses to start.
    pub policy_file: Option<PathBuf>,
    /// Serve HTTPS only, with this certificate (PEM: the server's certificate, then any intermediates); needs
    /// `tls_key`. Unset (with `tls_key` unset too): plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM, unencrypted); needs `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8779)),
            auth: "noauth".into(),
            public_endpoint: None,
            token_file: None,
            keystone_url: "http://127.0.0.1:5000/v3".into(),
            keystone_user: "trove".into(),
            keystone_password: Secret::default(),
            keystone_project: "service".into(),
            policy_file: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// The task manager role.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskManagerSection {
    /// Worker id for workflow claims; unique per process (default: generated at start).
    pub worker_id: Option<String>,
    /// Seconds between scans for open workflows (resumption after a crash).
    pub scan_interval: Option<f64>,
}

/// Local-process compute (where servers, volumes and guests live).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComputeConfig {
    /// State directory: `servers/` (one directory per server, with its guest's key), `volumes/`, `run/`.
    pub state_dir: PathBuf,
    /// Loopback addresses handed out one per instance (`A.B.C.D/N` inside 127.0.0.0/8); engines listen there on
    /// their standard ports. Empty: engines listen on `bind_address` with ports of their own.
    pub address_pool: String,
    /// Address engines listen on without an address pool.
    pub bind_address: String,
    /// First engine port (without a pool, or when an engine's standard port is taken).
    pub port_min: u16,
    /// Last engine port.
    pub port_max: u16,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        let d = LocalComputeConfig::default();
        ComputeConfig {
            state_dir: StoreLocation::default_state_dir(),
            address_pool: d.address_pool.unwrap_or_default(),
            bind_address: d.bind_address,
            port_min: d.port_min,
            port_max: d.port_max,
        }
    }
}

impl ComputeConfig {
    /// The local compute's configuration.
    pub fn local(&self) -> LocalComputeConfig {
        LocalComputeConfig {
            address_pool: Some(self.address_pool.clone()).filter(|p| !p.trim().is_empty()),
            bind_address: self.bind_address.clone(),
            port_min: self.port_min,
            port_max: self.port_max,
            ..LocalComputeConfig::single(&self.state_dir)
        }
    }
}

/// How guests are started and reach the broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuestConfig {
    /// The `trove-guestagent` program (default: next to the running program).
    pub agent_program: Option<PathBuf>,
    /// `shared`: guests use the control plane's broker user (as upstream); `per-guest`: each guest gets a broker
    /// user of its own that can read only its own queue (needs `rabbitmqctl` for the broker).
    pub credentials: String,
    /// `rabbitmqctl` program for `per-guest` credentials.
    pub rabbitmqctl: PathBuf,
    /// Environment of `rabbitmqctl` runs, as `NAME=VALUE` (e.g. `RABBITMQ_NODENAME=rabbit@host`, `HOME=...` for
    /// the Erlang cookie).
    pub rabbitmqctl_env: Vec<String>,
    /// Seconds a guest agent gets to stop before it is killed.
    pub stop_timeout: f64,
    /// OS user engines run as (default: `nobody` when running as root, else the current user).
    pub engine_user: Option<String>,
    /// Directory guests publish their logs to: each guest's object store is `<dir>/<instance_id>`, container
    /// `database_logs` inside it. Without it, publishing a guest log is refused (501).
    pub log_store_dir: Option<PathBuf>,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            agent_program: None,
            credentials: "shared".into(),
            rabbitmqctl: PathBuf::from("rabbitmqctl"),
            rabbitmqctl_env: Vec::new(),
            stop_timeout: 10.0,
            engine_user: None,
            log_store_dir: None,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter (overridden by `RUST_LOG` when set).
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "warn,trove=info,trove_core=info,trove_backends=info,trove_amqp=info".into(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Infrastructure database.
    pub database: DatabaseConfig,
    /// Broker (the control plane's user).
    pub amqp: AmqpConfig,
    /// Control-plane tunables.
    pub core: CoreConfig,
    /// API role.
    pub api: ApiConfig,
    /// Task manager role.
    pub taskmanager: TaskManagerSection,
    /// Local compute.
    pub compute: ComputeConfig,
    /// Guests.
    pub guest: GuestConfig,
    /// Logging.
    pub log: LogConfig,
    /// Sealing keys.
    pub secrets: SecretsConfig,
    /// Where backups go.
    pub backups: BackupsConfig,
}

/// Where backups go (the task manager purges deleted ones there; guests write and read them; the API offers
/// backups only when a store is set).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupsConfig {
    /// `none` (backups are refused with 501), `fs` (`dir`, which the task managers and every guest host must
    /// reach: one host or a shared mount), `swift` or `s3`.
    pub store: String,
    /// The directory of `store = "fs"`.
    pub dir: Option<PathBuf>,
    /// OpenStack Swift (`store = "swift"`); its key may come from `TROVE_BACKUPS__SWIFT__KEY`.
    pub swift: Option<trove_backends::objstore::SwiftConfig>,
    /// An S3-compatible store (`store = "s3"`); its secret may come from `TROVE_BACKUPS__S3__SECRET_KEY`.
    pub s3: Option<trove_backends::objstore::S3Config>,
}

impl Default for BackupsConfig {
    fn default() -> Self {
        BackupsConfig {
            store: "none".into(),
            dir: None,
            swift: None,
            s3: None,
        }
    }
}

/// Where the deployment's sealing keys are ([`crate::secrets`]); the API and task-manager roles need the same
/// keys. The environment variable `TROVE_SEAL_KEYS` wins over the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    /// Key file (mode 0600; made with a new key when missing). Default: `seal.key` in `compute.state_dir`.
    pub key_file: Option<PathBuf>,
}

impl ServiceConfig {
    /// Parses a TOML document over the defaults, then applies overrides from `env` (`(name, value)` pairs; only
    /// names `TROVE_<SECTION>__<KEY>` count).
    pub fn from_toml_str(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ServiceConfig> {
        let defaults = toml::Value::try_from(ServiceConfig::default())
            .map_err(|e| config_err(format!("defaults: {e}")))?;
        let file: toml::Table = toml::from_str(text).map_err(|e| config_err(e.message()))?;
        let mut merged = defaults;
        merge(&mut merged, toml::Value::Table(file));
        crate::env_overrides::apply(&mut merged, env, None)?;
        let cfg: ServiceConfig = merged
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| config_err(e.message()))?;
        // Sections of other crates accept unknown keys: a key that does not come back when the result is written
        // out again was not understood.
        let back = toml::Value::try_from(&cfg).map_err(config_err)?;
        if let Some(key) = unknown_key(&merged, &back, "") {
            return Err(config_err(format!("unknown key '{key}'")));
        }
        Ok(cfg)
    }

    /// Reads `path` (or only the defaults when `None`) with overrides from the process environment.
    pub fn load(path: Option<&Path>) -> Result<ServiceConfig> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| config_err(format!("cannot read {}: {e}", p.display())))?,
            None => String::new(),
        };
        ServiceConfig::from_toml_str(&text, std::env::vars()).map_err(|e| match path {
            Some(p) => config_err(format!("{}: {e}", p.display())),
            None => e,
        })
    }

    /// Where the store is.
    pub fn store_location(&self) -> StoreLocation {
        StoreLocation::Url(self.database.url.expose().to_string())
    }

    /// Opens the store (applying pending migrations).
    pub async fn open_store(&self) -> Result<DynStore> {
        sql::open(&self.store_location()).await
    }

    /// Connects the control plane's bus (retrying in the background when the broker is down).
    pub fn bus(&self) -> AmqpBus {
        AmqpBus::lazy(self.amqp.clone())
    }

    /// The authenticator of the API role.
    pub fn authenticator(&self) -> Result<DynAuthenticator> {
        match self.api.auth.as_str() {
            "noauth" => Ok(Arc::new(trove_backends::auth::NoAuth::new())),
            "noauth-admin" => Ok(Arc::new(trove_backends::auth::NoAuth::admin())),
            "token-file" => {
                let path =
                    self.api.token_file.as_ref().ok_or_else(|| {
                        config_err("api.auth = \"token-file\" needs api.token_file")
                    })?;
                Ok(Arc::new(trove_backends::auth::load_token_file(path)?))
            }
            "keystone" => Ok(Arc::new(trove_backends::auth::KeystoneAuth::new(
                trove_backends::auth::KeystoneConfig {
                    auth_url: self.api.keystone_url.clone(),
                    username: self.api.keystone_user.clone(),
                    password: self.api.keystone_password.clone(),
                    project_name: self.api.keystone_project.clone(),
                    ..Default::default()
                },
            )?)),
            other => Err(config_err(format!(
                "api.auth '{other}' is not one of noauth, noauth-admin, token-file, keystone"
            ))),
        }
    }

    /// The authorization rules of the API role: upstream's defaults with `api.policy_file` over them.
    pub fn policy(&self) -> Result<Arc<Policy>> {
        match &self.api.policy_file {
            Some(path) => crate::load_policy_file(path).map(Arc::new),
            None => Ok(Arc::new(Policy::default())),
        }
    }

    /// The API role's TLS files (`api.tls_cert` and `api.tls_key`, both or neither), read and checked: `None` for
    /// plain HTTP. A missing or bad file, or a key that is not the certificate's, is an error naming the file.
    pub fn api_tls(&self) -> Result<Option<crate::serve::ServerTls>> {
        let files = crate::serve::TlsFiles::pair(
            self.api.tls_cert.as_deref(),
            self.api.tls_key.as_deref(),
            "api.tls_cert",
            "api.tls_key",
        )
        .map_err(config_err)?;
        files.map(|f| f.load()).transpose()
    }

    /// The real-engine strategies.
    pub fn engines(&self) -> Arc<dyn StrategyFactory> {
        Arc::new(self.engine_factory())
    }

    fn engine_factory(&self) -> EngineStrategyFactory {
        EngineStrategyFactory::new(EngineConfig {
            run_as: self.guest.engine_user.clone(),
            ..EngineConfig::default()
        })
    }

    /// The real-engine strategies, backing up into the configured store (when there is one).
    pub fn engines_with_backups(&self) -> Result<Arc<dyn StrategyFactory>> {
        Ok(match self.backup_store()? {
            Some(b) => Arc::new(self.engine_factory().with_backup_store(b)),
            None => self.engines(),
        })
    }

    /// The configured backup store (`None` for `backups.store = "none"`).
    pub fn backup_store(&self) -> Result<Option<trove_core::ports::DynBackupStore>> {
        let b = &self.backups;
        let need = |what: &str| config_err(format!("backups.store = \"{}\" needs {what}", b.store));
        Ok(match b.store.as_str() {
            "none" | "" => None,
            "fs" => {
                let dir = b.dir.as_ref().ok_or_else(|| need("backups.dir"))?;
                Some(Arc::new(trove_backends::local::FsBackupStore::open(dir)?))
            }
            "swift" => {
                let c = b
                    .swift
                    .clone()
                    .ok_or_else(|| need("a [backups.swift] section"))?;
                Some(Arc::new(trove_backends::objstore::SwiftBackupStore::new(
                    c,
                )?))
            }
            "s3" => {
                let c = b.s3.clone().ok_or_else(|| need("a [backups.s3] section"))?;
                Some(Arc::new(trove_backends::objstore::S3BackupStore::new(c)?))
            }
            other => {
                return Err(config_err(format!(
                    "backups.store = \"{other}\" is not one of none, fs, swift, s3"
                )))
            }
        })
    }

    /// The host roots servers (and their guests' keys) live under.
    pub fn server_roots(&self) -> Vec<PathBuf> {
        self.compute
            .local()
            .hosts
            .into_iter()
            .map(|h| h.root)
            .collect()
    }

    /// The deployment's sealer (workflow parameters' secrets), from `secrets.key_file` or `TROVE_SEAL_KEYS`.
    pub fn sealer(&self) -> Result<trove_core::seal::Sealer> {
        let path = self
            .secrets
            .key_file
            .clone()
            .unwrap_or_else(|| self.compute.state_dir.join("seal.key"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| config_err(format!("cannot create {}: {e}", dir.display())))?;
        }
        crate::secrets::load_or_create_sealer(&path)
    }

    /// How the conductor finds each guest's signing key (and the API and task manager the key each guest's
    /// messages are sealed with).
    pub fn guest_keys(&self) -> Arc<ServerDirKeys> {
        Arc::new(ServerDirKeys::new(self.server_roots()))
    }

    /// How guests reach the broker, as `guest.credentials` says.
    pub fn guest_bus_access(&self) -> Result<Arc<dyn GuestBusAccess>> {
        match self.guest.credentials.as_str() {
            "shared" => Ok(Arc::new(SharedBusAccess(
                serde_json::to_value(&self.amqp).map_err(config_err)?,
            ))),
            "per-guest" => {
                let mut ctl = RabbitCtl::new().with_program(&self.guest.rabbitmqctl);
                for kv in &self.guest.rabbitmqctl_env {
                    let (k, v) = kv.split_once('=').ok_or_else(|| {
                        config_err(format!("guest.rabbitmqctl_env: '{kv}' is not NAME=VALUE"))
                    })?;
                    ctl = ctl.with_env(k, v);
                }
                Ok(Arc::new(PerGuestBusAccess {
                    access: GuestAccess::new(ctl, self.amqp.clone()),
                    control_plane: self.bus(),
                }))
            }
            other => Err(config_err(format!(
                "guest.credentials '{other}' is not one of shared, per-guest"
            ))),
        }
    }

    /// The guest agent program: `guest.agent_program`, else `trove-guestagent` next to the running program.
    pub fn agent_program(&self) -> Result<PathBuf> {
        if let Some(p) = &self.guest.agent_program {
            return Ok(p.clone());
        }
        let exe = std::env::current_exe().map_err(config_err)?;
        Ok(exe
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("trove-guestagent{}", std::env::consts::EXE_SUFFIX)))
    }

    /// Local compute whose guests are `trove-guestagent` processes (given `config_file`, when the roles were
    /// started with one), directory volumes under `compute.state_dir`, and the launcher (for supervision).
    pub fn local_compute(
        &self,
        config_file: Option<&Path>,
    ) -> Result<(
        Arc<LocalCompute>,
        Arc<DirBlockStorage>,
        Arc<ProcessLauncher>,
    )> {
        let mut lc =
            ProcessLauncherConfig::new(self.agent_program()?, self.compute.state_dir.join("run"));
        if let Some(p) = config_file {
            let abs = std::fs::canonicalize(p)
                .map_err(|e| config_err(format!("{}: {e}", p.display())))?;
            lc.args = vec!["--config".into(), abs.display().to_string()];
        }
        if !(self.guest.stop_timeout.is_finite() && self.guest.stop_timeout >= 0.0) {
            return Err(config_err(
                "guest.stop_timeout must be a non-negative number",
            ));
        }
        lc.stop_timeout = std::time::Duration::from_secs_f64(self.guest.stop_timeout);
        let launcher = Arc::new(ProcessLauncher::new(lc, self.guest_bus_access()?)?);
        let compute = LocalCompute::open(self.compute.local(), launcher.clone())?
            .with_engines(self.engines());
        let volumes = DirBlockStorage::open(self.compute.state_dir.join("volumes"))?;
        Ok((Arc::new(compute), Arc::new(volumes), launcher))
    }
}

/// The first key of `given` (dotted path) that `known` lacks.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Per-guest broker users ([`GuestAccess`]): each guest's bus settings carry its own user and a fresh password.
/// The guest's queue is declared with the control plane's user (a guest user may declare nothing).
#[derive(Debug)]
pub struct PerGuestBusAccess {
    /// Creates and deletes the users.
    pub access: GuestAccess,
    /// The control plane's bus (declares the guest's queue).
    pub control_plane: AmqpBus,
}

#[async_trait::async_trait]
impl GuestBusAccess for PerGuestBusAccess {
    async fn grant(&self, instance_id: Uuid) -> Result<serde_json::Value> {
        use trove_core::ports::MessageBus;
        drop(
            self.control_plane
                .subscribe(&trove_core::rpc::guest_topic(instance_id))
                .await?,
        );
        let cfg = self
            .access
            .grant(instance_id, &Secret::generate(32))
            .await?;
        serde_json::to_value(&cfg).map_err(|e| Error::backend("amqp-admin", e, false))
    }
    async fn revoke(&self, instance_id: Uuid) -> Result<()> {
        self.access.revoke(instance_id).await
    }
}

/// Sets up `tracing` for a role from `log.filter` (`RUST_LOG` wins when set).
pub fn init_logging(cfg: &ServiceConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

/// Runs the API role: the Trove v1.0 REST API over the shared store and bus, until `shutdown` resolves.
/// Prints `trove-api: listening on ADDR` once it accepts requests (`listening on https://ADDR` when `api.tls_cert`
/// and `api.tls_key` make it serve HTTPS).
pub async fn run_api(
    cfg: &ServiceConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let tls = cfg.api_tls()?;
    let policy = cfg.policy()?;
    let store = cfg.open_store().await?;
    let auth = cfg.authenticator()?;
    // What the guests' engines offer: the API refuses the rest at once. (Read from the engine binaries installed
    // where the API runs, as the guests' hosts have them.)
    let facets =
        trove_core::ports::FacetCatalog::from_factory(cfg.engines_with_backups()?.as_ref());
    let cp = crate::ControlPlane::builder()
        .facets(facets)
        .store(store)
        .bus(Arc::new(cfg.bus()))
        .authenticator(auth.clone())
        .policy(policy)
        .config(cfg.core.clone())
        .sealer(cfg.sealer()?)
        .guest_keys(cfg.guest_keys())
        .without_taskmanager()
        .without_conductor()
        .without_health_monitor()
        .start()
        .await?;
    let http = crate::http::HttpConfig {
        public_endpoint: cfg.api.public_endpoint.clone(),
        https: tls.is_some(),
        ..crate::http::HttpConfig::default()
    };
    let app = crate::http::router(cp.api(), auth, http);
    let listener = tokio::net::TcpListener::bind(cfg.api.listen)
        .await
        .map_err(|e| {
            Error::backend(
                "http",
                format!("cannot listen on {}: {e}", cfg.api.listen),
                false,
            )
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::backend("http", e, false))?;
    let shown = match &tls {
        Some(t) => format!("{}://{addr}", t.scheme()),
        None => addr.to_string(),
    };
    println!(
        "trove-api: store {}, listening on {shown}",
        cfg.store_location().display()
    );
    let served = crate::serve::serve(listener, app, tls, shutdown).await;
    cp.shutdown().await;
    served
}

/// Runs the task-manager role (workflows over local-process compute whose guests are `trove-guestagent`
/// processes) until `shutdown` resolves. Guests keep running when it ends. Prints `trove-taskmanager: ready`.
pub async fn run_taskmanager(
    cfg: &ServiceConfig,
    config_file: Option<&Path>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let store = cfg.open_store().await?;
    let (compute, volumes, launcher) = cfg.local_compute(config_file)?;
    let mut tm = trove_core::taskmanager::TaskManagerConfig::default();
    if let Some(w) = &cfg.taskmanager.worker_id {
        tm.worker_id = w.clone();
    }
    if let Some(s) = cfg.taskmanager.scan_interval {
        if !(s.is_finite() && s > 0.0) {
            return Err(config_err(
                "taskmanager.scan_interval must be a positive number",
            ));
        }
        tm.scan_interval = std::time::Duration::from_secs_f64(s);
    }
    let worker = tm.worker_id.clone();
    let adopted = compute.adopt_all().await;
    let interval = cfg
        .core
        .report_interval
        .max(std::time::Duration::from_secs(1));
    // Engines that crash are restarted (bounded); guest agent processes that end are relaunched.
    let supervisor = compute.supervise(interval);
    let agents = tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            launcher.relaunch_dead().await;
        }
    });
    let mut builder = crate::ControlPlane::builder();
    if let Some(b) = cfg.backup_store()? {
        // The purge of deleted and failed backups' objects.
        builder = builder.backup_store(b);
    }
    let cp = builder
        .store(store)
        .bus(Arc::new(cfg.bus()))
        .compute(compute)
        .block_storage(volumes)
        .config(cfg.core.clone())
        .sealer(cfg.sealer()?)
        .guest_keys(cfg.guest_keys())
        .taskmanager_config(tm)
        .without_conductor()
        .without_health_monitor()
        .start()
        .await?;
    println!(
        "trove-taskmanager: ready (worker {worker}, {} guest(s) adopted)",
        adopted.len()
    );
    shutdown.await;
    supervisor.abort();
    agents.abort();
    cp.shutdown().await;
    Ok(())
}

/// AMQP prefetch of the conductor role: at least a whole heartbeat batch (the conductor's default `batch_max`).
const CONDUCTOR_PREFETCH: u16 = 512;

/// Runs the conductor role (guest reports into the store, each verified with its guest's own key) and the health
/// monitor until `shutdown` resolves. Prints `trove-conductor: ready`.
pub async fn run_conductor(
    cfg: &ServiceConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let store = cfg.open_store().await?;
    // The conductor keeps a whole batch of heartbeats unacknowledged until it is stored: let the broker send a
    // batch's worth (with the default prefetch of 32 it stalls once per 32 heartbeats; benches/heartbeats.rs
    // measured ~4,000/s at 32 and ~13,000/s at 512).
    let mut amqp = cfg.amqp.clone();
    amqp.prefetch = amqp.prefetch.max(CONDUCTOR_PREFETCH);
    let cp = crate::ControlPlane::builder()
        .store(store)
        .bus(Arc::new(AmqpBus::lazy(amqp)))
        .config(cfg.core.clone())
        .guest_keys(cfg.guest_keys())
        .without_taskmanager()
        .start()
        .await?;
    println!("trove-conductor: ready");
    shutdown.await;
    cp.shutdown().await;
    Ok(())
}

/// Runs the guest agent of the instance described by `guest_file` (written by the task manager's launcher):
/// serves `guestagent.<instance_id>` with the real engine strategy and heartbeats signed reports to the conductor
/// until `shutdown` resolves. The engine keeps running when the agent ends.
pub async fn run_guestagent(
    cfg: &ServiceConfig,
    guest_file: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let g = trove_backends::local::GuestFile::read(guest_file)?;
    let id = g.spec.instance_id;
    let amqp: AmqpConfig = serde_json::from_value(g.bus.clone())
        .map_err(|e| config_err(format!("broker settings in {}: {e}", guest_file.display())))?;
    let bus = Arc::new(AmqpBus::lazy(amqp));
    let strategy = cfg.engines_with_backups()?.strategy(&g.spec)?;
    // One store root per guest: a store cleans its temp directory when it opens, which must not race another
    // agent's publish.
    let log_store = match &cfg.guest.log_store_dir {
        Some(dir) => Some(trove_core::guest_log::LogStore::new(
            Arc::new(trove_backends::local::FsBackupStore::open(
                dir.join(id.to_string()),
            )?),
            trove_core::model::DEFAULT_LOG_CONTAINER,
        )),
        None => None,
    };
    let agent = Arc::new(
        trove_core::guest_agent::GuestAgent::new(
            id,
            bus.clone(),
            Arc::new(trove_core::ports::SystemClock),
            strategy,
            cfg.core.report_interval,
            Some(g.key),
        )
        .with_log_store(log_store),
    );
    let mut shutdown = std::pin::pin!(shutdown);
    let mut delay = std::time::Duration::from_millis(200);
    let sub = loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = agent.subscribe() => match r {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(instance = %id, error = %e, "cannot subscribe yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
            },
        }
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(agent.serve(sub, rx));
    tracing::info!(instance = %id, "guest agent serving");
    shutdown.await;
    let _ = tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    bus.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env_overrides::env;

    #[test]
    fn file_then_environment() {
        let cfg = ServiceConfig::from_toml_str(
            "[database]\nurl = \"postgres://u:filepw@h/db\"\n[amqp]\nport = 5673\npassword = \"p\"\n[core]\nreport_interval = 1.5\n",
            env(&[
                ("TROVE_AMQP__PORT", "5674"),
                ("TROVE_AMQP__PASSWORD", "123456"),
                ("TROVE_CORE__REPORT_INTERVAL", "1"),
                ("TROVE_TASKMANAGER__WORKER_ID", "tm-7"),
                ("TROVE_DATABASE_URL", "ignored: no double underscore"),
                ("OTHER__X", "ignored"),
            ]),
        )
        .expect("valid");
        assert_eq!(cfg.amqp.port, 5674);
        assert_eq!(cfg.amqp.password.expose(), "123456", "digits stay a string");
        assert_eq!(cfg.core.report_interval, std::time::Duration::from_secs(1));
        assert_eq!(cfg.taskmanager.worker_id.as_deref(), Some("tm-7"));
        assert_eq!(cfg.database.url.expose(), "postgres://u:filepw@h/db");
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("filepw") && !dbg.contains("123456"), "{dbg}");
    }

    #[test]
    fn backup_stores_from_the_file_and_the_environment() {
        let cfg = ServiceConfig::from_toml_str("", env(&[])).expect("defaults");
        assert!(cfg.backup_store().expect("none").is_none());
        let dir = tempfile::tempdir().expect("dir");
        let cfg = ServiceConfig::from_toml_str(
            &format!(
                "[backups]\nstore = \"fs\"\ndir = \"{}\"\n",
                dir.path().display()
            ),
            env(&[]),
        )
        .expect("fs");
        assert!(cfg.backup_store().expect("fs store").is_some());
        let cfg = ServiceConfig::from_toml_str(
            "[backups]\nstore = \"swift\"\n[backups.swift]\nauth_url = \"http://127.0.0.1:8080/auth/v1.0\"\nuser = \"t:u\"\n",
            env(&[("TROVE_BACKUPS__SWIFT__KEY", "sw1ft-key")]),
        )
        .expect("swift");
        assert_eq!(
            cfg.backups.swift.as_ref().map(|s| s.key.expose()),
            Some("sw1ft-key")
        );
        assert!(cfg.backup_store().expect("swift store").is_some());
        assert!(
            !format!("{cfg:?}").contains("sw1ft-key"),
            "the key stays out of Debug"
        );
        for (text, why) in [
            ("[backups]\nstore = \"fs\"\n", "backups.dir"),
            ("[backups]\nstore = \"s3\"\n", "[backups.s3]"),
            ("[backups]\nstore = \"tape\"\n", "not one of"),
        ] {
            let cfg = ServiceConfig::from_toml_str(text, env(&[])).expect("parses");
            let e = cfg
                .backup_store()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        let e = ServiceConfig::from_toml_str("[amqp]\nprot = 1\n", env(&[]))
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("prot"), "{e}");
        let e = ServiceConfig::from_toml_str("", env(&[("TROVE_AMQP__PORT", "many")]))
            .expect_err("bad int")
            .to_string();
        assert!(
            e.contains("TROVE_AMQP__PORT") && e.contains("integer"),
            "{e}"
        );
        let e = ServiceConfig::from_toml_str("", env(&[("TROVE_NOPE__X", "1")]))
            .expect_err("unknown section")
            .to_string();
        assert!(e.contains("nope"), "{e}");
        let e = ServiceConfig::from_toml_str("[amqp\n", env(&[]))
            .expect_err("bad toml")
            .to_string();
        assert!(
            e.starts_with("Configuration") || e.contains("Configuration"),
            "{e}"
        );
        let cfg =
            ServiceConfig::from_toml_str("[api]\nauth = \"magic\"\n", env(&[])).expect("parses");
        assert!(cfg.authenticator().is_err());
        let cfg = ServiceConfig::from_toml_str("[api]\nauth = \"token-file\"\n", env(&[]))
            .expect("parses");
        let e = cfg
            .authenticator()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("api.token_file"), "{e}");
        let cfg = ServiceConfig::from_toml_str(
            "[api]\nauth = \"keystone\"\nkeystone_password = \"ks-pw\"\n",
            env(&[]),
        )
        .expect("parses");
        assert!(cfg.authenticator().is_ok());
        assert!(!format!("{cfg:?}").contains("ks-pw"));
        let cfg = ServiceConfig::from_toml_str("[guest]\ncredentials = \"x\"\n", env(&[]))
            .expect("parses");
        assert!(cfg.guest_bus_access().is_err());
    }

    #[test]
    fn policy_file_key_names_the_operators_rules() {
        let cfg = ServiceConfig::from_toml_str("", env(&[])).expect("defaults");
        assert_eq!(
            cfg.policy()
                .expect("defaults")
                .check_string("instance:reset_status"),
            Some("rule:admin")
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("policy.yaml");
        std::fs::write(&good, "instance:reset_status: rule:admin_or_owner\n").expect("write");
        let cfg = ServiceConfig::from_toml_str(
            "",
            env(&[("TROVE_API__POLICY_FILE", good.to_str().expect("utf-8"))]),
        )
        .expect("parses");
        assert_eq!(
            cfg.policy()
                .expect("policy")
                .check_string("instance:reset_status"),
            Some("rule:admin_or_owner")
        );
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "instance:reset_status: rule:nobody\n").expect("write");
        let cfg = ServiceConfig::from_toml_str(
            &format!("[api]\npolicy_file = {:?}\n", bad.to_str().expect("utf-8")),
            env(&[]),
        )
        .expect("parses");
        let e = cfg.policy().expect_err("bad file").to_string();
        assert!(
            e.contains(&bad.display().to_string())
                && e.contains("line 1")
                && e.contains("'nobody'"),
            "{e}"
        );
    }

    #[test]
    fn api_tls_is_both_files_or_neither() {
        let cfg = ServiceConfig::from_toml_str("", env(&[])).expect("defaults");
        assert!(cfg.api_tls().expect("plain HTTP").is_none());
        let cfg = ServiceConfig::from_toml_str("[api]\ntls_cert = \"/etc/api.pem\"\n", env(&[]))
            .expect("parses");
        let e = cfg.api_tls().expect_err("cert only").to_string();
        assert!(e.contains("api.tls_cert needs api.tls_key"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("api.pem");
        let cfg = ServiceConfig::from_toml_str(
            &format!("[api]\ntls_cert = {:?}\n", cert.to_str().expect("utf-8")),
            env(&[("TROVE_API__TLS_KEY", "/nowhere/api.key")]),
        )
        .expect("parses");
        assert_eq!(
            cfg.api.tls_key.as_deref(),
            Some(Path::new("/nowhere/api.key"))
        );
        let e = cfg.api_tls().expect_err("missing files").to_string();
        assert!(
            e.contains(&format!(
                "TLS certificate {}: cannot read it",
                cert.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../examples/distributed.toml");
        let cfg = ServiceConfig::from_toml_str(text, env(&[])).expect("example config");
        assert_eq!(cfg.guest.credentials, "shared");
    }
}
