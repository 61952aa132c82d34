//! `writeback-agent`: `enroll` once with a token, then `run`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use writeback_agent::config::AgentConfig;
use writeback_agent::directory::Directory;

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
        /// File holding the one-time token; `-` reads it from stdin.
        #[arg(long, conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// The one-time token itself (prefer --token-file: argv is visible to other users).
        #[arg(long, env = "WRITEBACK_ENROLLMENT_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// State directory to create (default: the config's state_dir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Connect to the relays and apply operations until stopped.
    Run,
}

fn read_token(file: Option<PathBuf>, inline: Option<String>) -> anyhow::Result<String> {
    match (file, inline) {
        (Some(p), _) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_line(&mut s)
                .context("while reading the token from stdin")?;
            Ok(s.trim().to_owned())
        }
        (Some(p), _) => Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("while reading {}", p.display()))?
            .trim()
            .to_owned()),
        (None, Some(t)) => Ok(t),
        (None, None) => {
            anyhow::bail!("give the enrollment token with --token-file FILE (or - for stdin)")
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    writeback_core::telemetry::init();
    writeback_identity::install_crypto_provider();
    let args = Args::parse();
    let config: AgentConfig =
        writeback_core::config::load(args.config.as_deref(), "WRITEBACK_AGENT_")
            .context("while loading the agent config")?;
    match args.command {
        Cmd::Enroll {
            control_plane,
            token_file,
            token,
            state_dir,
        } => {
            let token = read_token(token_file, token)?;
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
            let agent = writeback_agent::runtime::start(
                &config.state_dir,
                Arc::new(directory),
                config.max_in_flight,
                writeback_core::shutdown_signal(),
            )?;
            agent.task.await.context("agent task failed")?;
        }
    }
    Ok(())
}
