//! `writeback-control-plane`: `init` a tenant, `serve` the API, and offline
//! admin commands (`token`, `relay-cert`, `signing-key`) that work on the
//! data dir and the database directly, each recorded in the administrative
//! trail as the operating-system account that ran it
//! ([`writeback_control_plane::offline`]). Tokens are written to files
//! (mode 0600), never printed.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use writeback_control_plane::offline::{self, Operator};
use writeback_control_plane::store::{ClientApp, Role, Store};
use writeback_control_plane::{ControlPlane, ControlPlaneConfig, bootstrap};

/// The writeback control plane.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file; `WRITEBACK_CP_…` variables override it.
    #[arg(long, env = "WRITEBACK_CP_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a tenant, its CA (if absent) and a first global administrator token.
    Init {
        /// Tenant id (a-z, 0-9, '.', '-', '_').
        #[arg(long)]
        tenant: String,
        /// The administrator principal (their UPN).
        #[arg(long, default_value = "admin")]
        admin: String,
        /// Client app the token is issued to (the operation origin).
        #[arg(long, default_value = "portal")]
        client_app: String,
        /// Where to write the token (mode 0600); never printed.
        #[arg(long)]
        token_file: PathBuf,
    },
    /// Serve the API.
    Serve,
    /// Mint an API token for a principal (written to a file, mode 0600;
    /// `writebackctl token create` does the same through the API).
    Token {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Principal (UPN).
        #[arg(long)]
        principal: String,
        /// global_admin, password_admin or user.
        #[arg(long)]
        role: String,
        /// portal, graph, powershell or m365_admin_center.
        #[arg(long)]
        client_app: String,
        /// Where to write the token (mode 0600); never printed.
        #[arg(long)]
        token_file: PathBuf,
        /// Lifetime in seconds; the token never expires when absent.
        #[arg(long)]
        ttl_seconds: Option<u32>,
    },
    /// Rotate the operation-signing key (see README, Security).
    SigningKey {
        #[command(subcommand)]
        action: SigningKeyCmd,
    },
    /// Issue a relay certificate from the CA into a directory.
    RelayCert {
        /// Tenant the relay serves.
        #[arg(long)]
        tenant: String,
        /// Relay id.
        #[arg(long, default_value = "relay-1")]
        relay_id: String,
        /// DNS names for the certificate.
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// IP addresses for the certificate.
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Output directory (relay.pem, relay.key, ca.pem).
        #[arg(long)]
        out_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum SigningKeyCmd {
    /// Create the next key (`op-signing.next.key`, 0600): published to agents
    /// beside the current one from the next start, not yet used to sign.
    Rotate,
    /// Sign with the next key from the next start; the old one is retired
    /// and no longer published. Only once every agent pins the next key.
    Promote,
    /// Print the key ids: the one that signs and the next, if any.
    Status,
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
    let config: ControlPlaneConfig =
        writeback_core::config::load(args.config.as_deref(), "WRITEBACK_CP_")
            .context("while loading the control plane config")?;
    match args.command {
        Cmd::Init {
            tenant,
            admin,
            client_app,
            token_file,
        } => {
            let app = ClientApp::parse(&client_app)
                .with_context(|| format!("unknown client app {client_app:?}"))?;
            let done = offline::init(
                &config,
                &tenant,
                &admin,
                app,
                &token_file,
                &Operator::current(),
            )
            .await
            .context("while initializing")?;
            println!(
                "tenant {tenant} ready; CA {} (fingerprint {}); administrator token written to {}",
                if done.created_ca { "created" } else { "kept" },
                done.ca_fingerprint,
                token_file.display()
            );
        }
        Cmd::Serve => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("while binding {}", config.listen))?;
            let cp = ControlPlane::open(config)
                .await
                .context("while opening the control plane")?;
            let served = cp
                .clone()
                .serve(listener, writeback_core::shutdown_signal())
                .await
                .context("while serving");
            // The last spans go out before the process ends.
            cp.tracing.shutdown();
            served?;
        }
        Cmd::Token {
            tenant,
            principal,
            role,
            client_app,
            token_file,
            ttl_seconds,
        } => {
            let role = Role::parse(&role).with_context(|| format!("unknown role {role:?}"))?;
            let app = ClientApp::parse(&client_app)
                .with_context(|| format!("unknown client app {client_app:?}"))?;
            let store = Store::connect(&config.database_url()).await?;
            let expires = ttl_seconds.map(|s| store.now_ms().saturating_add(i64::from(s) * 1000));
            offline::token(
                &store,
                &tenant,
                &principal,
                role,
                app,
                expires,
                &token_file,
                &Operator::current(),
            )
            .await
            .context("while issuing the token")?;
            println!("token for {principal} written to {}", token_file.display());
        }
        Cmd::SigningKey { action } => {
            let dir = &config.data_dir;
            match action {
                SigningKeyCmd::Rotate => {
                    let id = offline::rotate_signing_key(&config, &Operator::current()).await?;
                    println!(
                        "next operation-signing key {id} written to {}; copy it to every \
                         replica, restart them, and promote it once every agent pins it",
                        dir.join(bootstrap::NEXT_SIGNING_KEY_FILE).display()
                    );
                }
                SigningKeyCmd::Promote => {
                    let (old, new) =
                        offline::promote_signing_key(&config, &Operator::current()).await?;
                    println!(
                        "operation-signing key {new} signs from the next start; {old} is \
                         retired (kept as op-signing.retired-{old}.key); do the same on every \
                         replica and restart them"
                    );
                }
                SigningKeyCmd::Status => {
                    let current = bootstrap::load_signing_key(dir)?;
                    println!("signing: {}", current.key_id());
                    match bootstrap::load_next_signing_key(dir)? {
                        Some(k) => println!(
                            "next: {} (published, not signing)",
                            writeback_envelope::signing::key_id_of(&k)
                        ),
                        None => println!("next: none"),
                    }
                }
            }
        }
        Cmd::RelayCert {
            tenant,
            relay_id,
            dns,
            ips,
            out_dir,
        } => {
            offline::relay_cert(
                &config,
                &tenant,
                &relay_id,
                &dns,
                &ips,
                &out_dir,
                &Operator::current(),
            )
            .await
            .context("while issuing the relay certificate")?;
            println!(
                "relay certificate for {relay_id} written to {}",
                out_dir.display()
            );
        }
    }
    Ok(())
}
