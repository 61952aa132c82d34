//! `writeback-relay`: loads config, sets up logging and TLS, and runs the relay.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use writeback_relay::{Relay, RelayConfig, RelayOptions};

/// The writeback relay.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file; `WRITEBACK_RELAY_…` variables override it.
    #[arg(long, env = "WRITEBACK_RELAY_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    writeback_core::telemetry::init();
    // A core file could hold a password in transit, a key or a token.
    if let Err(e) = writeback_core::harden::no_core_dumps() {
        tracing::warn!(error = %e, "cannot turn core dumps off");
    }
    writeback_identity::install_crypto_provider();
    let args = Args::parse();
    let config: RelayConfig =
        writeback_core::config::load(args.config.as_deref(), "WRITEBACK_RELAY_")
            .context("while loading the relay config")?;
    let options = RelayOptions::from_config(&config).context("while reading relay tls files")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("while binding {}", config.listen))?;
    let relay = Relay::with_limits(options, config.limits());
    let tracing = relay.tracing().clone();
    let served = relay
        .serve(listener, writeback_core::shutdown_signal())
        .await
        .context("while serving");
    // The last spans go out before the process ends.
    tracing.shutdown();
    served?;
    Ok(())
}
