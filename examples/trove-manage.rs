//! `trove-manage`: operator commands on the infrastructure database, with upstream's command names and argument
//! order.
//!
//! ```text
//! cargo run --example trove-manage -- [--state-dir DIR | --database-url URL] COMMAND ARGS...
//! trove-manage db_sync
//! trove-manage datastore_update mysql ""
//! trove-manage datastore_version_update mysql 5.6 mysql IMAGE "" 1 [--version 5.6.51]
//! trove-manage datastore_update mysql 5.6
//! trove-manage datastore_version_flavor_add mysql 5.6 1,2 [--version N]
//! trove-manage datastore_version_flavor_delete mysql 5.6 2 [--version N]
//! trove-manage db_load_datastore_config_parameters mysql 5.6 validation-rules.json [--version N]
//! trove-manage db_remove_datastore_config_parameters mysql 5.6 [--version N]
//! trove-manage flavor create ID NAME RAM_MB VCPUS DISK_GB [--ephemeral GB] | flavor list | flavor delete ID
//! trove-manage quota show TENANT | quota update TENANT [--instances N] [--ram MB] [--volumes GB] [--backups N]
//! ```
//!
//! The store is the embedded SQLite database of the state directory (default: the all-in-one's,
//! `/var/lib/trove-rs` for root, else `$XDG_DATA_HOME/trove-rs` or `~/.local/share/trove-rs`) or the database at
//! `--database-url`. `db_sync` creates or upgrades the schema; the other commands apply pending migrations too (so
//! the first command on a fresh state directory works) and refuse a schema newer than this build. Re-running a command is harmless. Exit status:
//! 0 done, 1 failed, 2 bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use trove::backends::sql::{self, StoreLocation};
use trove::core::manage::{flavor_table, Manage, VersionUpdate};
use trove::core::model::{Flavor, Resource};
use trove::core::Error;

/// Operator commands on the trove-rs infrastructure database.
#[derive(Debug, Parser)]
#[command(name = "trove-manage", version)]
struct Cli {
    /// State directory holding the embedded SQLite database (default: /var/lib/trove-rs for root, otherwise
    /// $XDG_DATA_HOME/trove-rs or ~/.local/share/trove-rs).
    #[arg(long, global = true, conflicts_with = "database_url")]
    state_dir: Option<PathBuf>,
    /// Database URL instead of the state directory (postgres://USER@HOST:PORT/DB or sqlite://PATH).
    #[arg(
        long,
        global = true,
        env = "TROVE_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Creates or upgrades the schema (idempotent).
    #[command(name = "db_sync")]
    DbSync,
    /// Creates a datastore, or sets its default version ("" = none).
    #[command(name = "datastore_update")]
    DatastoreUpdate {
        /// Datastore name.
        datastore_name: String,
        /// Default version name, or "".
        default_version: String,
    },
    /// Creates or updates a datastore version (and its datastore).
    #[command(name = "datastore_version_update")]
    DatastoreVersionUpdate {
        /// Datastore name.
        datastore: String,
        /// Version name.
        version_name: String,
        /// Guest manager (mysql, mariadb, postgresql, redis, ...).
        manager: String,
        /// Image; for local-process compute the engine's binary directory ("" = autodetect).
        image_id: String,
        /// Packages, comma separated ("" = none).
        packages: String,
        /// 1 (active) or 0.
        active: String,
        /// Version number (default: the version name).
        #[arg(long)]
        version: Option<String>,
    },
    /// Allows flavors for a datastore version.
    #[command(name = "datastore_version_flavor_add")]
    DatastoreVersionFlavorAdd {
        /// Datastore name.
        datastore_name: String,
        /// Version name.
        datastore_version_name: String,
        /// Flavor ids, comma separated.
        flavor_ids: String,
        /// Version number, when several versions share the name.
        #[arg(long)]
        version: Option<String>,
    },
    /// Removes a flavor from a datastore version.
    #[command(name = "datastore_version_flavor_delete")]
    DatastoreVersionFlavorDelete {
        /// Datastore name.
        datastore_name: String,
        /// Version name.
        datastore_version_name: String,
        /// Flavor id.
        flavor_id: String,
        /// Version number.
        #[arg(long)]
        version: Option<String>,
    },
    /// Loads configuration-parameter rules (upstream validation-rules.json format).
    #[command(name = "db_load_datastore_config_parameters")]
    DbLoadDatastoreConfigParameters {
        /// Datastore name.
        datastore: String,
        /// Version name.
        datastore_version_name: String,
        /// Path of the validation-rules JSON file.
        config_file_location: PathBuf,
        /// Version number.
        #[arg(long)]
        version: Option<String>,
    },
    /// Removes every configuration-parameter rule of a version.
    #[command(name = "db_remove_datastore_config_parameters")]
    DbRemoveDatastoreConfigParameters {
        /// Datastore name.
        datastore: String,
        /// Version name.
        datastore_version_name: String,
        /// Version number.
        #[arg(long)]
        version: Option<String>,
    },
    /// Flavors.
    #[command(subcommand)]
    Flavor(FlavorCmd),
    /// Per-tenant quotas.
    #[command(subcommand)]
    Quota(QuotaCmd),
}

#[derive(Debug, Subcommand)]
enum FlavorCmd {
    /// Creates or updates a flavor.
    Create {
        /// Flavor id.
        id: String,
        /// Name.
        name: String,
        /// Memory, MB.
        ram_mb: u32,
        /// Virtual CPUs.
        vcpus: u32,
        /// Root disk, GB.
        disk_gb: u32,
        /// Ephemeral disk, GB.
        #[arg(long, default_value_t = 0)]
        ephemeral: u32,
    },
    /// Lists flavors.
    List,
    /// Deletes a flavor.
    Delete {
        /// Flavor id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum QuotaCmd {
    /// Shows limits and usage of a tenant.
    Show {
        /// Tenant (project) id.
        tenant: String,
    },
    /// Changes limits of a tenant (-1 = unlimited).
    Update {
        /// Tenant (project) id.
        tenant: String,
        /// Max instances.
        #[arg(long, allow_hyphen_values = true)]
        instances: Option<i64>,
        /// Max RAM, MB.
        #[arg(long, allow_hyphen_values = true)]
        ram: Option<i64>,
        /// Max total volume size, GB.
        #[arg(long, allow_hyphen_values = true)]
        volumes: Option<i64>,
        /// Max backups.
        #[arg(long, allow_hyphen_values = true)]
        backups: Option<i64>,
    },
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

async fn run(cli: Cli) -> Result<(), Error> {
    let location = StoreLocation::from_options(cli.state_dir, cli.database_url);
    if let Cmd::DbSync = cli.command {
        let pb = spinner(&format!("migrating {}", location.display()));
        let status = sql::db_sync(&location).await;
        pb.finish_and_clear();
        let status = status?;
        println!(
            "Database {} is at schema version {}.",
            location.display(),
            status.known
        );
        return Ok(());
    }
    let manage = Manage::new(sql::open(&location).await?);
    match cli.command {
        Cmd::DbSync => {}
        Cmd::DatastoreUpdate {
            datastore_name,
            default_version,
        } => {
            println!(
                "{}",
                manage
                    .datastore_update(&datastore_name, &default_version)
                    .await?
            );
        }
        Cmd::DatastoreVersionUpdate {
            datastore,
            version_name,
            manager,
            image_id,
            packages,
            active,
            version,
        } => {
            let req = VersionUpdate::new(
                &datastore,
                &version_name,
                &manager,
                &image_id,
                &packages,
                &active,
            )?
            .with_version_number(version)?;
            println!("{}", manage.datastore_version_update(&req).await?);
        }
        Cmd::DatastoreVersionFlavorAdd {
            datastore_name,
            datastore_version_name,
            flavor_ids,
            version,
        } => {
            let out = manage
                .datastore_version_flavor_add(
                    &datastore_name,
                    &datastore_version_name,
                    &flavor_ids,
                    version.as_deref(),
                )
                .await?;
            println!("{out}");
        }
        Cmd::DatastoreVersionFlavorDelete {
            datastore_name,
            datastore_version_name,
            flavor_id,
            version,
        } => {
            let out = manage
                .datastore_version_flavor_delete(
                    &datastore_name,
                    &datastore_version_name,
                    &flavor_id,
                    version.as_deref(),
                )
                .await?;
            println!("{out}");
        }
        Cmd::DbLoadDatastoreConfigParameters {
            datastore,
            datastore_version_name,
            config_file_location,
            version,
        } => {
            let text = std::fs::read_to_string(&config_file_location).map_err(|e| {
                Error::bad_request(format!(
                    "Cannot read {}: {e}",
                    config_file_location.display()
                ))
            })?;
            let pb = ProgressBar::new(0);
            pb.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            pb.set_message("loading parameters");
            let out = manage
                .db_load_datastore_config_parameters(
                    &datastore,
                    &datastore_version_name,
                    &text,
                    version.as_deref(),
                    |done, total| {
                        pb.set_length(total as u64);
                        pb.set_position(done as u64);
                    },
                )
                .await;
            pb.finish_and_clear();
            println!("{}", out?);
        }
        Cmd::DbRemoveDatastoreConfigParameters {
            datastore,
            datastore_version_name,
            version,
        } => {
            let out = manage
                .db_remove_datastore_config_parameters(
                    &datastore,
                    &datastore_version_name,
                    version.as_deref(),
                )
                .await?;
            println!("{out}");
        }
        Cmd::Flavor(FlavorCmd::Create {
            id,
            name,
            ram_mb,
            vcpus,
            disk_gb,
            ephemeral,
        }) => {
            let f = Flavor {
                id,
                name,
                ram_mb,
                vcpus,
                disk_gb,
                ephemeral_gb: ephemeral,
            };
            println!("{}", manage.flavor_create(&f).await?);
        }
        Cmd::Flavor(FlavorCmd::List) => print!("{}", flavor_table(&manage.flavor_list().await?)),
        Cmd::Flavor(FlavorCmd::Delete { id }) => println!("{}", manage.flavor_delete(&id).await?),
        Cmd::Quota(QuotaCmd::Show { tenant }) => print!("{}", manage.quota_show(&tenant).await?),
        Cmd::Quota(QuotaCmd::Update {
            tenant,
            instances,
            ram,
            volumes,
            backups,
        }) => {
            let changes: Vec<(Resource, i64)> = [
                (Resource::Instances, instances),
                (Resource::Ram, ram),
                (Resource::Volumes, volumes),
                (Resource::Backups, backups),
            ]
            .into_iter()
            .filter_map(|(r, v)| v.map(|v| (r, v)))
            .collect();
            println!("{}", manage.quota_update(&tenant, &changes).await?);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with status 2.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trove-manage: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trove-manage: {e}");
            match e {
                Error::BadRequest { .. } | Error::Validation { .. } => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
