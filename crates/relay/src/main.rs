//! `writeback-relay`: loads config, sets up logging and TLS, and runs the
//! relay; reloads its certificate files on SIGHUP and when they change.

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
    let reloading = tokio::spawn(reload_tls(relay.clone(), config.clone()));
    let tracing = relay.tracing().clone();
    let served = relay
        .serve(listener, writeback_core::shutdown_signal())
        .await
        .context("while serving");
    reloading.abort();
    // The last spans go out before the process ends.
    tracing.shutdown();
    served?;
    Ok(())
}

/// How often the certificate files are looked at (and the expiry warned about).
const RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Reloads `cert_file` and `key_file` on SIGHUP and when either changes
/// (modification time, looked at every minute), so an operator re-issues
/// the certificate with `writeback-control-plane relay-cert` without a
/// restart. A pair that does not load is logged and the current one kept.
async fn reload_tls(relay: Relay, config: RelayConfig) {
    let stamp = |c: &RelayConfig| {
        [&c.cert_file, &c.key_file].map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    };
    let mut seen = stamp(&config);
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; certificate files are still polled");
            None
        }
    };
    let mut validity = std::fs::read_to_string(&config.cert_file)
        .ok()
        .and_then(|pem| writeback_identity::Validity::of_pem(&pem).ok());
    let mut warned = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(RELOAD_CHECK);
    tick.tick().await;
    loop {
        // Once a day while the certificate is near its end (the relay
        // warned at start already).
        if let Some(v) = validity {
            let left = v.remaining(time::OffsetDateTime::now_utc());
            if left < writeback_relay::CERTIFICATE_WARNING
                && warned.elapsed() >= std::time::Duration::from_secs(24 * 3600)
            {
                warned = tokio::time::Instant::now();
                tracing::warn!(not_after = %v.not_after,
                    "the relay's certificate expires in {} days: re-issue it with \
                     `writeback-control-plane relay-cert` and replace the files",
                    left.as_secs() / 86_400);
            }
        }
        let asked = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = stamp(&config);
        if !asked && now == seen {
            continue;
        }
        seen = now;
        let read = |p: &std::path::Path| std::fs::read_to_string(p);
        let loaded = match (read(&config.cert_file), read(&config.key_file)) {
            (Ok(chain), Ok(key)) => relay.reload_tls(&chain, &key).map_err(|e| e.to_string()),
            (Err(e), _) | (_, Err(e)) => Err(format!("cannot read the certificate files: {e}")),
        };
        match loaded {
            Ok(v) => {
                validity = Some(v);
                tracing::info!(not_after = %v.not_after, "relay certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "relay certificate not reloaded; serving the current one")
            }
        }
    }
}
