//! `trove-conductor`: the conductor role of the distributed deployment: guest reports (verified with each guest's own key) into the store, and the heartbeat health monitor.
//!
//! ```text
//! cargo run --features postgres,amqp --example trove-conductor -- --config examples/distributed.toml
//! ```
//!
//! Configuration: one TOML file shared by every role (`--config`, or `TROVE_CONFIG`), each key overridable by an
//! environment variable `TROVE_<SECTION>__<KEY>` (see `trove::service_config`). Stops cleanly on Ctrl-C or SIGTERM;
//! exits 2 on a bad configuration, 1 when the role fails.

use std::path::PathBuf;

use clap::Parser;
use trove::service_config::{self, ServiceConfig};

#[derive(Debug, Parser)]
#[command(name = "trove-conductor", version)]
struct Args {
    /// The configuration file (TOML); defaults apply without one.
    #[arg(long, env = "TROVE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let cfg = match ServiceConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("trove-conductor: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    service_config::init_logging(&cfg);
    match service_config::run_conductor(&cfg, service_config::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trove-conductor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
