//! The all-in-one server: the whole control plane and the Trove v1.0 API in one process.
//!
//! ```text
//! cargo run --release --example all-in-one -- --listen 127.0.0.1:8779 --state-dir ./trove-state
//! openstack --os-auth-type none --os-endpoint http://127.0.0.1:8779/v1.0/demo datastore list
//! ```
//!
//! Embedded defaults (see `trove::embedded`): the SQLite store in the state directory, the in-process message
//! bus, local-process compute running REAL engines (MariaDB, PostgreSQL, Redis found on the machine) under
//! in-process guest agents, directory volumes, filesystem backups, `noauth` (the tenant is the one in the
//! URL) and upstream Trove's policy rules (`--policy-file` replaces the rules it names). It registers a datastore per engine found and default flavors (unless `--no-seed`), reports missing
//! engines, prints `listening on ADDR` once it accepts requests and stops cleanly on Ctrl-C or SIGTERM; engines
//! keep running and are re-adopted at the next start.
//!
//! With `--tls-cert PATH --tls-key PATH` (PEM; the certificate file may hold its chain) it serves HTTPS only and
//! prints `listening on https://ADDR`; clients trust the certificate's CA (`openstack --os-cacert CA.pem ...`). A
//! missing or bad file, or a key that is not the certificate's, refuses to start with a message naming the file.
//!
//! The control plane's settings (the distributed roles' `[core]` section: heartbeat expiry, report interval,
//! automatic failover, ...) keep their defaults unless set by `TROVE_CORE__<KEY>` environment variables, e.g.
//! `TROVE_CORE__AUTO_FAILOVER=false` for upstream's manual eject only; an unknown key or a bad value refuses to
//! start, naming the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use trove::backends::auth::{load_token_file, KeystoneAuth, KeystoneConfig, NoAuth};
use trove::backends::sql::StoreLocation;
use trove::core::model::Secret;
use trove::core::policy::Policy;
use trove::core::ports::DynAuthenticator;
use trove::core::Result;
use trove::embedded::{BackupStoreChoice, Embedded, EmbeddedOptions};
use trove::http::{router, HttpConfig, RateLimits};
use trove::serve::{serve, TlsFiles};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuthMode {
    /// Any token or none; the tenant is the URL's.
    Noauth,
    /// Tokens from `--token-file` (one `TOKEN PROJECT USER [ROLES]` per line).
    TokenFile,
    /// Keystone v3 token validation.
    Keystone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackupStoreKind {
    /// Files under `<state-dir>/backups`.
    Fs,
    /// OpenStack Swift (`--swift-auth-url`, `--swift-user`, the key in `TROVE_SWIFT_KEY`).
    Swift,
    /// An S3-compatible store (`--s3-endpoint`, `--s3-access-key`, the secret in `TROVE_S3_SECRET_KEY`).
    S3,
}

/// Trove-compatible database-as-a-service in one process.
#[derive(Debug, Parser)]
#[command(name = "all-in-one", version)]
struct Args {
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:8779")]
    listen: SocketAddr,
    /// State directory (SQLite database, servers, volumes, backups). Default: /var/lib/trove-rs for root,
    /// otherwise $XDG_DATA_HOME/trove-rs or ~/.local/share/trove-rs.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Infrastructure database URL instead of the state directory (postgres://... or sqlite://PATH).
    #[arg(long, env = "TROVE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Authentication.
    #[arg(long, value_enum, default_value_t = AuthMode::Noauth)]
    auth: AuthMode,
    /// With `--auth noauth`: every caller has the admin role (single-operator installs).
    #[arg(long)]
    noauth_admin: bool,
    /// Token file for `--auth token-file`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Keystone v3 URL for `--auth keystone`.
    #[arg(long, default_value = "http://127.0.0.1:5000/v3")]
    keystone_url: String,
    /// Keystone service user.
    #[arg(long, default_value = "trove")]
    keystone_user: String,
    /// Keystone service user's password.
    #[arg(
        long,
        env = "TROVE_KEYSTONE_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    keystone_password: String,
    /// Keystone service project.
    #[arg(long, default_value = "service")]
    keystone_project: String,
    /// Policy file (`policy.yaml`, or JSON): `"rule name": "check string"` entries that replace upstream Trove's
    /// default authorization rules (e.g. `"instance:reset_status": "rule:admin_or_owner"`). A bad file refuses to
    /// start.
    #[arg(long, value_name = "PATH")]
    policy_file: Option<PathBuf>,
    /// Enforce upstream's per-tenant rate limits (200 requests per minute and verb).
    #[arg(long)]
    rate_limit: bool,
    /// Base URL shown in links (default: the request's Host).
    #[arg(long)]
    public_endpoint: Option<String>,
    /// Do not register the default flavors and datastore versions on first start.
    #[arg(long)]
    no_seed: bool,
    /// Another local host besides `local` (repeatable): its servers live in `STATE_DIR/hosts/NAME`; instances can
    /// be placed on it (availability zone, locality) and migrated to it (`mgmt` migrate).
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// Loopback addresses given out one per instance, as A.B.C.D/N inside 127.0.0.0/8: each engine listens on
    /// its own address with its standard port (3306, 5432, 6379), as on a VM. `none`: engines share 127.0.0.1
    /// with ports of their own.
    #[arg(long, value_name = "CIDR|none", default_value = trove::backends::local::DEFAULT_ADDRESS_POOL)]
    address_pool: String,
    /// Serve HTTPS only, with this certificate (PEM: the server's certificate, then any intermediates). Needs
    /// `--tls-key`.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM, unencrypted). Needs `--tls-cert`.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where backups and published guest logs go.
    #[arg(long, value_enum, default_value_t = BackupStoreKind::Fs)]
    backup_store: BackupStoreKind,
    /// Swift's auth URL: a tempauth `.../auth/v1.0`, or Keystone v3 `.../v3` (then `--swift-project`).
    #[arg(long, value_name = "URL")]
    swift_auth_url: Option<String>,
    /// Swift user (tempauth `account:user`).
    #[arg(long)]
    swift_user: Option<String>,
    /// The Swift key (give it in the environment: command lines are visible to every local user).
    #[arg(long, env = "TROVE_SWIFT_KEY", hide_env_values = true)]
    swift_key: Option<String>,
    /// Keystone project of the Swift user (Keystone auth only).
    #[arg(long)]
    swift_project: Option<String>,
    /// S3 endpoint (path-style), e.g. `http://127.0.0.1:8080`.
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, default_value = "us-east-1")]
    s3_region: String,
    /// S3 access key id.
    #[arg(long)]
    s3_access_key: Option<String>,
    /// The S3 secret key (give it in the environment).
    #[arg(long, env = "TROVE_S3_SECRET_KEY", hide_env_values = true)]
    s3_secret_key: Option<String>,
}

/// The backup store the flags ask for; a clear 400 naming the missing flag otherwise.
fn backup_store(args: &Args) -> Result<BackupStoreChoice> {
    use trove::backends::objstore::{S3Config, SwiftAuth, SwiftConfig};
    let need = |v: &Option<String>, flag: &str| {
        v.clone().ok_or_else(|| {
            trove::core::Error::bad_request(format!(
                "--backup-store {} needs {flag}",
                match args.backup_store {
                    BackupStoreKind::Swift => "swift",
                    _ => "s3",
                }
            ))
        })
    };
    Ok(match args.backup_store {
        BackupStoreKind::Fs => BackupStoreChoice::Fs,
        BackupStoreKind::Swift => {
            let auth_url = need(&args.swift_auth_url, "--swift-auth-url")?;
            let keystone = auth_url.trim_end_matches('/').ends_with("/v3");
            BackupStoreChoice::Swift(SwiftConfig {
                auth: if keystone {
                    SwiftAuth::Keystone
                } else {
                    SwiftAuth::Tempauth
                },
                auth_url,
                user: need(&args.swift_user, "--swift-user")?,
                key: Secret::new(need(&args.swift_key, "TROVE_SWIFT_KEY (or --swift-key)")?),
                project_name: args.swift_project.clone().unwrap_or_default(),
                ..SwiftConfig::default()
            })
        }
        BackupStoreKind::S3 => BackupStoreChoice::S3(S3Config {
            endpoint: need(&args.s3_endpoint, "--s3-endpoint")?,
            region: args.s3_region.clone(),
            access_key: need(&args.s3_access_key, "--s3-access-key")?,
            secret_key: Secret::new(need(
                &args.s3_secret_key,
                "TROVE_S3_SECRET_KEY (or --s3-secret-key)",
            )?),
            ..S3Config::default()
        }),
    })
}

fn authenticator(args: &Args) -> Result<DynAuthenticator> {
    Ok(match args.auth {
        AuthMode::Noauth if args.noauth_admin => Arc::new(NoAuth::admin()),
        AuthMode::Noauth => Arc::new(NoAuth::new()),
        AuthMode::TokenFile => {
            let path = args.token_file.as_ref().ok_or_else(|| {
                trove::core::Error::bad_request("--auth token-file needs --token-file PATH")
            })?;
            Arc::new(load_token_file(path)?)
        }
        AuthMode::Keystone => Arc::new(KeystoneAuth::new(KeystoneConfig {
            auth_url: args.keystone_url.clone(),
            username: args.keystone_user.clone(),
            password: Secret::new(args.keystone_password.clone()),
            project_name: args.keystone_project.clone(),
            ..Default::default()
        })?),
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn run(args: Args) -> Result<()> {
    // Certificate problems refuse to start before anything else is started.
    let tls = TlsFiles::pair(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        "--tls-cert",
        "--tls-key",
    )?
    .map(|files| files.load())
    .transpose()?;
    let policy = match &args.policy_file {
        Some(path) => trove::load_policy_file(path)?,
        None => Policy::default(),
    };
    let auth = authenticator(&args)?;
    let mut opts = EmbeddedOptions::new(
        args.state_dir
            .clone()
            .unwrap_or_else(StoreLocation::default_state_dir),
    );
    opts.database_url = args.database_url.clone();
    opts.config = trove::env_overrides::core_config(std::env::vars())?;
    opts.seed = !args.no_seed;
    opts.extra_hosts = args.hosts.clone();
    opts.address_pool = Some(args.address_pool.clone()).filter(|p| p != "none");
    opts.policy = Arc::new(policy);
    opts.backup_store = backup_store(&args)?;
    let store_line = opts.backup_store.describe(&opts.state_dir);
    let opts_pool = opts.address_pool.clone();
    let embedded = Embedded::start(opts, auth.clone()).await?;
    for engine in &embedded.detection.found {
        println!(
            "trove all-in-one: engine {} {} ({})",
            engine.manager,
            engine.version,
            engine.bin_dir.display()
        );
    }
    for (manager, why) in &embedded.detection.missing {
        println!("trove all-in-one: engine {manager} not available: {why}");
    }
    println!("trove all-in-one: backups go to {store_line}");
    match (embedded.compute().address_pool(), &opts_pool) {
        (Some(pool), _) => println!(
            "trove all-in-one: instances get addresses of their own from {pool}, engines on their standard ports"
        ),
        (None, Some(asked)) => println!(
            "trove all-in-one: this host cannot give out addresses from {asked}; instances share 127.0.0.1 with \
             ports of their own (see the warning above)"
        ),
        (None, None) => println!("trove all-in-one: instances share 127.0.0.1 with ports of their own"),
    }
    let cp = embedded.control_plane();
    let http = HttpConfig {
        rate_limits: args.rate_limit.then(RateLimits::default),
        public_endpoint: args.public_endpoint.clone(),
        https: tls.is_some(),
        ..HttpConfig::default()
    };
    let app = router(cp.api(), auth, http);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            trove::core::Error::backend(
                "http",
                format!("cannot listen on {}: {e}", args.listen),
                false,
            )
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| trove::core::Error::backend("http", e, false))?;
    // Plain HTTP prints the bare address (as before); HTTPS prints the URL.
    let shown = match &tls {
        Some(t) => format!("{}://{addr}", t.scheme()),
        None => addr.to_string(),
    };
    println!(
        "trove all-in-one: store {}, listening on {shown}",
        embedded.store_location
    );
    let served = serve(listener, app, tls, shutdown_signal()).await;
    embedded.shutdown().await;
    println!(
        "trove all-in-one: stopped (engines keep running and are re-adopted at the next start)"
    );
    served
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,trove=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trove all-in-one: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
