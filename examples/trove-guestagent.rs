//! `trove-guestagent`: the guest agent of one instance, started by the task manager's launcher: serves `guestagent.<instance_id>` with the real engine strategy and sends signed heartbeats to the conductor.
//!
//! ```text
//! cargo run --features postgres,amqp --example trove-guestagent -- --config examples/distributed.toml
//! ```
//!
//! Configuration: one TOML file shared by every role (`--config`, or `TROVE_CONFIG`), each key overridable by an
//! environment variable `TROVE_<SECTION>__<KEY>` (see `trove::service_config`). Stops cleanly on Ctrl-C or SIGTERM;
//! exits 2 on a bad configuration, 1 when the role fails.

use std::path::PathBuf;

use clap::Parser;
use trove::service_config::{self, ServiceConfig};

#[derive(Debug, Parser)]
#[command(name = "trove-guestagent", version)]
struct Args {
    /// The configuration file (TOML); defaults apply without one.
    #[arg(long, env = "TROVE_CONFIG")]
    config: Option<PathBuf>,
    /// The guest's own file (instance, signing key, broker settings), written by the launcher.
    #[arg(long)]
    guest_file: PathBuf,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let cfg = match ServiceConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("trove-guestagent: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    service_config::init_logging(&cfg);
    match service_config::run_guestagent(&cfg, &args.guest_file, service_config::shutdown_signal())
        .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trove-guestagent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
