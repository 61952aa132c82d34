//! `writeback-portal serve --config portal.toml`: the web portals.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use writeback_portal::{App, PortalConfig};

/// The writeback web portals.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file; `WRITEBACK_PORTAL_…` variables override it.
    #[arg(long, env = "WRITEBACK_PORTAL_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the portals.
    Serve,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    writeback_core::telemetry::init();
    if let Err(e) = writeback_core::harden::no_core_dumps() {
        tracing::warn!(error = %e, "core dumps could not be turned off");
    }
    writeback_identity::install_crypto_provider();
    let args = Args::parse();
    let config: PortalConfig =
        writeback_core::config::load(args.config.as_deref(), "WRITEBACK_PORTAL_")
            .map_err(|e| anyhow::anyhow!("config: {e}"))?;
    match args.command {
        Cmd::Serve => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("listening on {}", config.listen))?;
            let app = App::new(config).await?;
            // The metrics listener stops when the portal does.
            let _metrics = match app.config.metrics_listen {
                Some(addr) => Some(
                    writeback_core::metrics::spawn_guarded(addr, app.metrics.registry.clone())
                        .await
                        .with_context(|| format!("metrics_listen {addr}"))?,
                ),
                None => None,
            };
            tracing::info!(addr = %listener.local_addr()?, "portal listening");
            writeback_portal::serve(app, listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
        }
    }
}
