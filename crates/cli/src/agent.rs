//! `writebackctl agent …`: one-time enrollment tokens (to a new 0600 file,
//! or to standard output only when that is a terminal or `--stdout` says
//! so), the agents of the tenant and their revocation.

use std::io::Write;

use clap::Subcommand;
use tonic::transport::Channel;
use writeback_proto::v1::{self as pb, agent_service_client::AgentServiceClient as AgentC};
use zeroize::Zeroizing;

use crate::{Bearer, CliError, when, write_secret_file};

/// `agent …`
#[derive(Subcommand, Debug)]
pub enum AgentCmd {
    /// Create a one-time enrollment token for an agent of a domain.
    EnrollToken {
        /// The domain.
        #[arg(long)]
        domain: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u32,
        /// Write the token to this file, created with mode 0600, instead of
        /// standard output. An existing file is left alone unless `--force`.
        /// (Not `--token-file`: that global option names the bearer token.)
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        /// Replace an existing `--out` file (it is made 0600).
        #[arg(long, requires = "out")]
        force: bool,
        /// Print the token on standard output even when that is not a
        /// terminal (a pipe, a file, a log collector), where it may be kept.
        #[arg(long, conflicts_with = "out")]
        stdout: bool,
    },
    /// List agents.
    List {
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Revoke an agent.
    Revoke {
        /// Agent id.
        id: String,
    },
}

/// Runs one `agent` command; `stdout_is_terminal` is whether `out` is a
/// terminal a person reads.
pub(crate) async fn run(
    cmd: AgentCmd,
    channel: Channel,
    bearer: Bearer,
    out: &mut dyn Write,
    stdout_is_terminal: bool,
) -> Result<(), CliError> {
    let io = |e: std::io::Error| CliError::Local(format!("cannot write output: {e}"));
    match cmd {
        AgentCmd::EnrollToken {
            domain,
            ttl,
            out: file,
            force,
            stdout,
        } => {
            // Refuse before the token exists, not after.
            if file.is_none() && !stdout && !stdout_is_terminal {
                return Err(CliError::Local(
                    "standard output is not a terminal, and a one-time enrollment token \
                     printed there may be kept in a file or a log: write it with --out FILE \
                     (mode 0600), or give --stdout to print it anyway"
                        .into(),
                ));
            }
            if let Some(path) = &file
                && !force
                && std::fs::symlink_metadata(path).is_ok()
            {
                return Err(CliError::Local(format!(
                    "{} exists; give --force to replace it",
                    path.display()
                )));
            }
            let t = AgentC::with_interceptor(channel, bearer)
                .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
                    domain,
                    ttl_seconds: ttl,
                })
                .await?
                .into_inner();
            let token = Zeroizing::new(t.token);
            match file {
                Some(path) => {
                    let contents = format!("{}\n", token.as_str());
                    if force {
                        write_secret_file(&path, contents.as_bytes())?;
                    } else {
                        write_new_secret_file(&path, contents.as_bytes())?;
                    }
                    writeln!(
                        out,
                        "# one-time token written to {}, expires {}",
                        path.display(),
                        when(&t.expires_at)
                    )
                    .map_err(io)?;
                }
                None => {
                    writeln!(out, "{}", token.as_str()).map_err(io)?;
                    writeln!(out, "# one-time token, expires {}", when(&t.expires_at))
                        .map_err(io)?;
                }
            }
        }
        AgentCmd::List { domain } => {
            let mut client = AgentC::with_interceptor(channel, bearer);
            let mut token = String::new();
            loop {
                let page = client
                    .list_agents(pb::ListAgentsRequest {
                        domain: domain.clone().unwrap_or_default(),
                        page_size: 100,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                for a in page.agents {
                    let state = if a.revoked {
                        "revoked"
                    } else if a.online {
                        "online"
                    } else {
                        "offline"
                    };
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}",
                        a.agent_id, a.domain, state, a.version, a.hostname
                    )
                    .map_err(io)?;
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        AgentCmd::Revoke { id } => {
            let a = AgentC::with_interceptor(channel, bearer)
                .revoke_agent(pb::RevokeAgentRequest { agent_id: id })
                .await?
                .into_inner();
            writeln!(out, "revoked agent {} of {}", a.agent_id, a.domain).map_err(io)?;
        }
    }
    Ok(())
}

/// Like [`write_secret_file`], but never replaces a file: created with
/// `O_EXCL` and mode 0600 (so a file appearing meanwhile is not clobbered
/// either); removed again if the write fails.
fn write_new_secret_file(path: &std::path::Path, contents: &[u8]) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| CliError::Local(format!("cannot write {}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    if let Err(e) = f.write_all(contents).and_then(|()| f.sync_all()) {
        let _ = std::fs::remove_file(path);
        return Err(fail(e));
    }
    Ok(())
}
