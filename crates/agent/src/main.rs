//! `writeback-agent`: `enroll` once with a token, then `run` (which renews
//! the certificate by itself; `renew` does it by hand); `permissions
//! check|grant` and `policy` check the domain before (and after) going live.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::SecretString;
use writeback_agent::config::AgentConfig;
use writeback_agent::directory::Directory;
use writeback_agent::{permissions, policy};
use writeback_core::ReasonCode;

/// The writeback on-premises agent.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file; `WRITEBACK_AGENT_…` variables override it.
    #[arg(long, env = "WRITEBACK_AGENT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enroll with a one-time token from `writebackctl agent enroll-token`.
    Enroll {
        /// Control plane URL, e.g. https://cp.example:8443.
        #[arg(long)]
        control_plane: String,
        /// File holding the one-time token; `-` reads it from stdin. (Never
        /// on the command line or in the environment, where other users or
        /// child processes could read it.)
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// State directory to create (default: the config's state_dir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Connect to the relays and apply operations until stopped.
    Run,
    /// Renew the agent's certificate now (the running agent does it by itself
    /// when a third of its lifetime is left). Exits 1 with the reason code
    /// when refused.
    Renew {
        /// Control plane URL (default: the one the agent enrolled with).
        #[arg(long)]
        control_plane: Option<String>,
    },
    /// Check or grant the rights the service account needs on the domain.
    Permissions {
        #[command(subcommand)]
        action: PermissionsCmd,
    },
    /// Print the domain's password policy and warn about what gets in the way of
    /// writeback.
    Policy,
}

#[derive(Subcommand)]
enum PermissionsCmd {
    /// Report which rights the service account holds, and the in-scope users whose
    /// inheritance is disabled. Exits 1 with the reason code when something is
    /// missing.
    Check,
    /// Add the missing rights to the domain root for the service account, bound as a
    /// domain or enterprise administrator. Running it again changes nothing.
    Grant {
        /// The administrator's DN or UPN.
        #[arg(long)]
        admin_dn: String,
        /// File holding the administrator's password; without it, a prompt.
        #[arg(long)]
        admin_password_file: Option<PathBuf>,
    },
}

fn read_secret_file(path: &Path) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("while reading {}", path.display()))?;
    Ok(SecretString::from(
        text.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// A refusal with its reason code: printed on stderr, exit 1.
fn refused(reason: ReasonCode, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{reason}: {message}");
    ExitCode::from(1)
}

async fn permissions_cmd(config: &AgentConfig, action: PermissionsCmd) -> anyhow::Result<ExitCode> {
    match action {
        PermissionsCmd::Check => {
            let directory = Directory::new(config.directory.resolve()?)?;
            match permissions::check(&directory, true).await {
                Ok(report) => {
                    print!("{}", report.render());
                    println!();
                    if report.reason() == ReasonCode::Ok {
                        println!("{}", report.verdict());
                        Ok(ExitCode::SUCCESS)
                    } else {
                        eprintln!("{}", report.verdict());
                        Ok(ExitCode::from(1))
                    }
                }
                Err(e) => Ok(refused(e.reason(), e)),
            }
        }
        PermissionsCmd::Grant {
            admin_dn,
            admin_password_file,
        } => {
            let password = match admin_password_file {
                Some(p) => read_secret_file(&p)?,
                None => SecretString::from(
                    rpassword::prompt_password(format!("password for {admin_dn}: "))
                        .context("while reading the administrator's password")?,
                ),
            };
            let admin = Directory::new(config.directory.resolve_as(&admin_dn, password)?)?;
            match permissions::grant(&admin, &config.directory.bind_dn).await {
                Ok(outcome) => {
                    print!("{}", outcome.render());
                    println!();
                    let report = &outcome.report;
                    if report.rights_ok() {
                        println!("{}", report.verdict());
                        Ok(ExitCode::SUCCESS)
                    } else {
                        eprintln!("{}", report.verdict());
                        Ok(ExitCode::from(1))
                    }
                }
                Err(e) => Ok(refused(e.reason(), e)),
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    writeback_core::telemetry::init();
    // A core file could hold a password in transit, a key or a token.
    if let Err(e) = writeback_core::harden::no_core_dumps() {
        tracing::warn!(error = %e, "cannot turn core dumps off");
    }
    writeback_identity::install_crypto_provider();
    let args = Args::parse();
    let config: AgentConfig =
        writeback_core::config::load(args.config.as_deref(), "WRITEBACK_AGENT_")
            .context("while loading the agent config")?;
    match args.command {
        Cmd::Enroll {
            control_plane,
            token_file,
            state_dir,
        } => {
            let token = writeback_agent::enroll::read_token(
                token_file.as_deref(),
                std::env::var_os(writeback_agent::enroll::OLD_TOKEN_ENV).is_some(),
                &mut std::io::stdin().lock(),
            )?;
            let dir = state_dir.unwrap_or_else(|| config.state_dir.clone());
            let e = writeback_agent::enroll::enroll(&control_plane, &token, &dir).await?;
            println!(
                "enrolled agent {} for domain {} of tenant {}; state in {}",
                e.agent_id,
                e.domain,
                e.tenant,
                dir.display()
            );
        }
        Cmd::Run => {
            let directory = Directory::new(config.directory.resolve()?)?;
            let mut observability =
                writeback_agent::runtime::Observability::new(config.metrics_listen);
            directory.register_metrics(&mut observability.registry);
            observability.tracing =
                writeback_core::trace::Tracing::new("writeback-agent", &config.tracing)?;
            let tracing = observability.tracing.clone();
            let max_offset = writeback_core::operation::MAX_CLOCK_SKEW.as_secs();
            if config.max_clock_offset_seconds > max_offset {
                anyhow::bail!(
                    "max_clock_offset_seconds is {}, more than the {max_offset} s the control \
                     plane allows for agents' clocks past an operation's expiry; set it to \
                     {max_offset} or less and synchronise the host's clock (NTP)",
                    config.max_clock_offset_seconds
                );
            }
            let clock = writeback_agent::clock::ClockCheck {
                max_offset: std::time::Duration::from_secs(config.max_clock_offset_seconds.max(1)),
                ..Default::default()
            };
            let agent = writeback_agent::runtime::start_with_clock(
                &config.state_dir,
                Arc::new(directory.clone()),
                config.max_in_flight,
                Some(observability),
                clock,
                writeback_core::shutdown_signal(),
            )
            .await?;
            agent.task.await.context("agent task failed")?;
            directory.close().await;
            // The last spans go out before the process ends.
            tracing.shutdown();
        }
        Cmd::Renew { control_plane } => {
            match writeback_agent::renew::renew(&config.state_dir, control_plane.as_deref()).await {
                Ok(r) => {
                    println!(
                        "certificate renewed; valid until {} (a running agent reconnects with \
                         it at its next check, or restart it)",
                        r.validity.not_after
                    );
                    if let Some(f) = r.refused_keys_failure() {
                        return Ok(refused(f.reason, f.message));
                    }
                }
                Err(writeback_agent::AgentError::Renew(f)) => {
                    return Ok(refused(f.reason, f.message));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Cmd::Permissions { action } => return permissions_cmd(&config, action).await,
        Cmd::Policy => {
            let directory = Directory::new(config.directory.resolve()?)?;
            match directory.domain_report().await {
                Ok(report) => print!("{}", policy::render(&report)),
                Err(e) => return Ok(refused(e.reason(), e)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
