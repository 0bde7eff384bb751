//! `trove-api`: the Trove v1.0 REST API role of the distributed deployment (PostgreSQL store, RabbitMQ bus).
//!
//! ```text
//! cargo run --features postgres,amqp --example trove-api -- --config examples/distributed.toml
//! ```
//!
//! Configuration: one TOML file shared by every role (`--config`, or `TROVE_CONFIG`), each key overridable by an
//! environment variable `TROVE_<SECTION>__<KEY>` (see `trove::service_config`). `[api] policy_file` names an
//! operator's policy file whose rules replace upstream's defaults; a bad one is refused at start. `[api] tls_cert` and
//! `tls_key` (PEM) make it serve HTTPS only (`listening on https://ADDR`); a bad or missing file, or a key that is not
//! the certificate's, is refused at start. Stops cleanly on Ctrl-C or SIGTERM;
//! exits 2 on a bad configuration, 1 when the role fails.

use std::path::PathBuf;

use clap::Parser;
use trove::service_config::{self, ServiceConfig};

#[derive(Debug, Parser)]
#[command(name = "trove-api", version)]
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
            eprintln!("trove-api: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    service_config::init_logging(&cfg);
    match service_config::run_api(&cfg, service_config::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trove-api: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
