//! `writebackctl`, the command-line client of the control plane: the
//! tutorial's portal and PowerShell steps as commands, plus the identity
//! providers a tenant trusts (`idp`), the audit trails (`audit`:
//! operations, administrative changes, security events) and the help desk's
//! "find a user" (`user search`). It talks gRPC over
//! TLS (trusting the tenant CA) with a bearer token read from a file, and
//! reads passwords only from standard input or an interactive prompt —
//! never from the command line, where other users could see them. A
//! one-time enrollment token goes to a new 0600 file (`--out`), or to
//! standard output only when that is a terminal or `--stdout` says so.

#![forbid(unsafe_code)]

mod agent;
mod audit;
mod idp;
mod quality;
mod timeline;
mod user;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use writeback_core::{Failure, ReasonCode, failure_of};
use writeback_identity::{tls, transport};
use writeback_proto::v1::{self as pb, user_ref};
use zeroize::Zeroizing;

/// Command-line arguments.
#[derive(Parser, Debug)]
#[command(
    name = "writebackctl",
    version,
    about = "Administer writeback and write passwords back to Active Directory"
)]
pub struct Cli {
    /// Control plane URL.
    #[arg(
        long,
        env = "WRITEBACK_CONTROL_PLANE",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    pub control_plane: String,
    /// CA certificate (PEM) the control plane's certificate must chain to.
    #[arg(
        long,
        env = "WRITEBACK_CA_FILE",
        default_value = "/var/lib/writeback/ca.pem",
        global = true
    )]
    pub ca_file: PathBuf,
    /// File holding the bearer token.
    #[arg(
        long,
        env = "WRITEBACK_TOKEN_FILE",
        default_value = "/var/lib/writeback/admin.token",
        global = true
    )]
    pub token_file: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Whether standard output is a terminal (not an option: found out at
    /// parse time; a caller writing `out` elsewhere sets it to `false`).
    #[arg(skip = std::io::stdout().is_terminal())]
    pub stdout_is_terminal: bool,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Tenant toggles.
    #[command(subcommand)]
    Settings(SettingsCmd),
    /// Toggles plus, per domain, whether the agent set-up is complete.
    Status,
    /// On-premises domains.
    #[command(subcommand)]
    Domain(DomainCmd),
    /// Agents and enrollment.
    #[command(subcommand)]
    Agent(agent::AgentCmd),
    /// Password writeback.
    #[command(subcommand)]
    Password(PasswordCmd),
    /// Account unlock.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Find on-premises users (the help desk's "find a user").
    #[command(subcommand)]
    User(user::UserCmd),
    /// Operation status.
    #[command(subcommand)]
    Operation(OperationCmd),
    /// The audit trails: operations, administrative changes, security
    /// events.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Sign-in through OpenID Connect providers: trusted issuers and
    /// registered client applications.
    #[command(subcommand)]
    Idp(idp::IdpCmd),
}

/// A principal's role.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum RoleArg {
    /// Every toggle, domains, enrollment, tokens, administrator resets.
    #[value(name = "global_admin", alias = "global-admin")]
    GlobalAdmin,
    /// Administrator resets and unlocks of end users.
    #[value(name = "password_admin", alias = "password-admin")]
    PasswordAdmin,
    /// Self-service on their own account.
    #[value(name = "user")]
    User,
}

/// The client app a token is issued to: the origin of its operations.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ClientAppArg {
    /// The reset portal and the administrator portal.
    #[value(name = "portal")]
    Portal,
    /// The Graph-like API.
    #[value(name = "graph")]
    Graph,
    /// PowerShell-style scripted administration.
    #[value(name = "powershell")]
    Powershell,
    /// The M365 admin center equivalent.
    #[value(name = "m365_admin_center", alias = "m365-admin-center")]
    M365AdminCenter,
}

/// `token …`
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Mint a token for a principal (global administrators). It is written
    /// to --out with mode 0600 and never printed.
    Create {
        /// The principal (their UPN).
        #[arg(long)]
        principal: String,
        /// The principal's role (an existing principal keeps theirs).
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The client app the token is issued to.
        #[arg(long, value_enum)]
        client_app: ClientAppArg,
        /// Lifetime in seconds; 0 never expires.
        #[arg(long, default_value_t = 0)]
        ttl_seconds: u32,
        /// File to write the token to (mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// List tokens (their ids and metadata, never the tokens).
    List {
        /// Only this principal's tokens.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Revoke a token at once.
    Revoke {
        /// Token id; without one, the token this command runs with.
        id: Option<String>,
    },
}

/// On or off.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Toggle {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl Toggle {
    fn bool(self) -> bool {
        matches!(self, Toggle::On)
    }
}

/// `settings …`
#[derive(Subcommand, Debug)]
pub enum SettingsCmd {
    /// Show the toggles.
    Show,
    /// Change toggles (global administrators only).
    Set {
        /// Password writeback in cloud sync (Set-AADCloudSyncPasswordWritebackConfiguration -Enable).
        #[arg(long)]
        cloud_sync_writeback: Option<Toggle>,
        /// "Write back passwords to your on-premises directory?"
        #[arg(long)]
        sspr_writeback: Option<Toggle>,
        /// "Allow users to unlock accounts without resetting their password?"
        #[arg(long)]
        unlock_without_reset: Option<Toggle>,
    },
}

/// `domain …`
#[derive(Subcommand, Debug)]
pub enum DomainCmd {
    /// Register a domain.
    Add {
        /// DNS name, e.g. contoso.test.
        name: String,
        /// UPN suffix routed to it (repeatable); default: the domain name.
        #[arg(long = "upn-suffix")]
        upn_suffixes: Vec<String>,
    },
    /// List domains.
    List,
}

/// Who an operation targets.
#[derive(Args, Debug)]
pub struct UserArgs {
    /// userPrincipalName, e.g. alice@contoso.test.
    #[arg(long, required_unless_present = "guid")]
    pub user: Option<String>,
    /// objectGUID (needs --domain).
    #[arg(long, requires = "domain", conflicts_with = "user")]
    pub guid: Option<String>,
    /// Domain, for --guid.
    #[arg(long)]
    pub domain: Option<String>,
    /// Operation id (UUID) to make a retry safe; generated when absent.
    #[arg(long)]
    pub operation_id: Option<String>,
}

impl UserArgs {
    fn user_ref(&self) -> pb::UserRef {
        pb::UserRef {
            by: Some(match (&self.user, &self.guid) {
                (Some(u), _) => user_ref::By::Upn(u.clone()),
                (None, Some(g)) => user_ref::By::ObjectGuid(g.clone()),
                (None, None) => user_ref::By::Upn(String::new()),
            }),
        }
    }
}

/// `password …`
#[derive(Subcommand, Debug)]
pub enum PasswordCmd {
    /// Reset a password; the new one is read from stdin or a prompt.
    Reset {
        #[command(flatten)]
        user: UserArgs,
        /// The user must change the password at next logon.
        #[arg(long)]
        must_change: bool,
        /// Also unlock the account.
        #[arg(long)]
        unlock: bool,
    },
    /// Change a password; reads the current then the new password.
    Change {
        #[command(flatten)]
        user: UserArgs,
        /// The forced change of an expired password.
        #[arg(long)]
        forced: bool,
    },
    /// The user's effective password policy as the DC enforces it (with
    /// --domain and no user: the domain's policies).
    Policy {
        /// userPrincipalName.
        #[arg(long)]
        user: Option<String>,
        /// objectGUID (needs --domain).
        #[arg(long, requires = "domain", conflicts_with = "user")]
        guid: Option<String>,
        /// The domain (required without --user).
        #[arg(long, required_unless_present = "user")]
        domain: Option<String>,
    },
    /// Check a candidate password (read from stdin or a prompt) against the
    /// user's policy and the banned list without applying it; exits 1 and
    /// lists every failing rule when it would be refused.
    Check {
        #[command(flatten)]
        user: UserArgs,
        /// Judge it as a change (the minimum age applies).
        #[arg(long)]
        change: bool,
    },
    /// The tenant's banned-password list.
    #[command(subcommand)]
    Banned(quality::BannedCmd),
}

/// `account …`
#[derive(Subcommand, Debug)]
pub enum AccountCmd {
    /// Unlock without resetting the password.
    Unlock {
        #[command(flatten)]
        user: UserArgs,
    },
}

/// `operation …`
#[derive(Subcommand, Debug)]
pub enum OperationCmd {
    /// Show one operation: who asked, the rule that allowed it, the relay,
    /// agent and domain controller that carried it, and the time in each hop.
    Show {
        /// Operation id.
        id: String,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server (or the path to it) refused, with a stable reason.
    #[error("{}: {}{}", .0.reason, .0.message, .0.operation_id.as_ref().map(|id| format!(" (operation {id})")).unwrap_or_default())]
    Refused(Failure),
    /// Local problem: files, input.
    #[error("{0}")]
    Local(String),
}

impl CliError {
    /// Process exit code: 1 for refusals, 2 for local problems.
    pub fn exit_code(&self) -> std::process::ExitCode {
        match self {
            CliError::Refused(_) => std::process::ExitCode::from(1),
            CliError::Local(_) => std::process::ExitCode::from(2),
        }
    }

    /// The reason code, for refusals.
    pub fn reason(&self) -> Option<ReasonCode> {
        match self {
            CliError::Refused(f) => Some(f.reason),
            CliError::Local(_) => None,
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Refused(failure_of(&s))
    }
}

#[derive(Clone)]
pub(crate) struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

fn connect(cli: &Cli) -> Result<(Channel, Bearer), CliError> {
    let ca = std::fs::read_to_string(&cli.ca_file).map_err(|e| {
        CliError::Local(format!(
            "cannot read the CA file {}: {e}",
            cli.ca_file.display()
        ))
    })?;
    let token = Zeroizing::new(std::fs::read_to_string(&cli.token_file).map_err(|e| {
        CliError::Local(format!(
            "cannot read the token file {}: {e}",
            cli.token_file.display()
        ))
    })?);
    let mut header = MetadataValue::try_from(format!("Bearer {}", token.trim()))
        .map_err(|_| CliError::Local("the token file holds characters a token cannot".into()))?;
    header.set_sensitive(true);
    let config = tls::client_config(
        tls::roots_from_pem(&ca).map_err(|e| CliError::Local(e.to_string()))?,
        None,
    )
    .map_err(|e| CliError::Local(e.to_string()))?;
    let channel = transport::channel(&cli.control_plane, config)
        .map_err(|e| CliError::Local(e.to_string()))?;
    Ok((channel, Bearer(header)))
}

/// Reads a password: one line from `input` when stdin is not a terminal,
/// else a prompt without echo.
fn read_password(
    input: &mut dyn BufRead,
    prompt: &str,
    interactive: bool,
) -> Result<SecretString, CliError> {
    let value = if interactive {
        Zeroizing::new(
            rpassword::prompt_password(prompt)
                .map_err(|e| CliError::Local(format!("cannot read the password: {e}")))?,
        )
    } else {
        let mut line = Zeroizing::new(String::new());
        input
            .read_line(&mut line)
            .map_err(|e| CliError::Local(format!("cannot read the password from stdin: {e}")))?;
        Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned())
    };
    if value.is_empty() {
        return Err(CliError::Local(format!(
            "{} is empty",
            prompt.trim_end_matches(": ")
        )));
    }
    Ok(SecretString::from(value.to_string()))
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn when(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into())
}

fn print_outcome(out: &mut dyn Write, r: &pb::OperationResponse) -> std::io::Result<()> {
    let o = r.outcome.clone().unwrap_or_default();
    writeln!(
        out,
        "{}: {} (operation {})",
        o.reason_code, o.message, r.operation_id
    )
}

/// Runs one command, writing human-readable output to `out`.
pub async fn run(cli: Cli, input: &mut dyn BufRead, out: &mut dyn Write) -> Result<(), CliError> {
    let interactive = std::io::stdin().is_terminal();
    let cli_stdout_is_terminal = cli.stdout_is_terminal;
    let (channel, bearer) = connect(&cli)?;
    let io = |e: std::io::Error| CliError::Local(format!("cannot write output: {e}"));
    use pb::audit_service_client::AuditServiceClient as AuditC;
    use pb::domain_service_client::DomainServiceClient as DomainC;
    use pb::password_service_client::PasswordServiceClient as PasswordC;
    use pb::settings_service_client::SettingsServiceClient as SettingsC;
    use pb::token_service_client::TokenServiceClient as TokenC;
    let settings = || SettingsC::with_interceptor(channel.clone(), bearer.clone());
    match cli.command {
        Command::Settings(SettingsCmd::Show) => {
            let s = settings()
                .get_settings(pb::GetSettingsRequest {})
                .await?
                .into_inner();
            print_settings(out, &s).map_err(io)?;
        }
        Command::Settings(SettingsCmd::Set {
            cloud_sync_writeback,
            sspr_writeback,
            unlock_without_reset,
        }) => {
            let s = settings()
                .update_settings(pb::UpdateSettingsRequest {
                    cloud_sync_writeback: cloud_sync_writeback.map(Toggle::bool),
                    sspr_writeback: sspr_writeback.map(Toggle::bool),
                    unlock_without_reset: unlock_without_reset.map(Toggle::bool),
                })
                .await?
                .into_inner();
            print_settings(out, &s).map_err(io)?;
        }
        Command::Status => {
            let s = settings()
                .get_status(pb::GetStatusRequest {})
                .await?
                .into_inner();
            print_settings(out, &s.settings.unwrap_or_default()).map_err(io)?;
            for d in s.domains {
                writeln!(
                    out,
                    "domain {}: agents enrolled {}, online {}, set-up complete: {}",
                    d.domain,
                    d.agents_enrolled,
                    d.agents_online,
                    if d.setup_complete { "yes" } else { "no" }
                )
                .map_err(io)?;
                for p in d.problems {
                    writeln!(out, "  problem: {p}").map_err(io)?;
                }
                for w in d.warnings {
                    writeln!(out, "  warning: {w}").map_err(io)?;
                }
            }
        }
        Command::Domain(DomainCmd::Add { name, upn_suffixes }) => {
            let d = DomainC::with_interceptor(channel, bearer)
                .add_domain(pb::AddDomainRequest { name, upn_suffixes })
                .await?
                .into_inner();
            writeln!(
                out,
                "added domain {} (UPN suffixes: {})",
                d.name,
                d.upn_suffixes.join(", ")
            )
            .map_err(io)?;
        }
        Command::Domain(DomainCmd::List) => {
            let mut client = DomainC::with_interceptor(channel, bearer);
            let mut token = String::new();
            loop {
                let page = client
                    .list_domains(pb::ListDomainsRequest {
                        page_size: 100,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                for d in page.domains {
                    writeln!(out, "{}\t{}", d.name, d.upn_suffixes.join(",")).map_err(io)?;
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        Command::Agent(cmd) => {
            agent::run(cmd, channel, bearer, out, cli_stdout_is_terminal).await?
        }
        Command::User(cmd) => user::run(cmd, channel, bearer, out).await?,
        Command::Password(PasswordCmd::Reset {
            user,
            must_change,
            unlock,
        }) => {
            let new = read_password(input, "New password: ", interactive)?;
            if interactive {
                let again = read_password(input, "Repeat the new password: ", interactive)?;
                if again.expose_secret() != new.expose_secret() {
                    return Err(CliError::Local("the passwords do not match".into()));
                }
            }
            let r = PasswordC::with_interceptor(channel, bearer)
                .reset_password(pb::ResetPasswordRequest {
                    user: Some(user.user_ref()),
                    new_password: new.expose_secret().to_owned(),
                    operation_id: user.operation_id.clone().unwrap_or_default(),
                    must_change_at_next_logon: must_change,
                    unlock,
                    domain: user.domain.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            print_outcome(out, &r).map_err(io)?;
        }
        Command::Password(PasswordCmd::Policy { user, guid, domain }) => {
            let by = match (user, guid) {
                (Some(u), _) => Some(user_ref::By::Upn(u)),
                (None, Some(g)) => Some(user_ref::By::ObjectGuid(g)),
                (None, None) => None,
            };
            let user = by.map(|by| pb::UserRef { by: Some(by) });
            quality::policy(channel, bearer, user, domain.unwrap_or_default(), out).await?;
        }
        Command::Password(PasswordCmd::Check { user, change }) => {
            let ask = pb::ValidatePasswordRequest {
                user: Some(user.user_ref()),
                password: String::new(),
                change,
                domain: user.domain.clone().unwrap_or_default(),
            };
            quality::check(channel, bearer, ask, input, interactive, out).await?;
        }
        Command::Password(PasswordCmd::Banned(cmd)) => {
            quality::banned(cmd, channel, bearer, input, out).await?;
        }
        Command::Password(PasswordCmd::Change { user, forced }) => {
            let old = read_password(input, "Current password: ", interactive)?;
            let new = read_password(input, "New password: ", interactive)?;
            let r = PasswordC::with_interceptor(channel, bearer)
                .change_password(pb::ChangePasswordRequest {
                    user: Some(user.user_ref()),
                    old_password: old.expose_secret().to_owned(),
                    new_password: new.expose_secret().to_owned(),
                    operation_id: user.operation_id.clone().unwrap_or_default(),
                    forced,
                    domain: user.domain.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            print_outcome(out, &r).map_err(io)?;
        }
        Command::Account(AccountCmd::Unlock { user }) => {
            let r = PasswordC::with_interceptor(channel, bearer)
                .unlock_account(pb::UnlockAccountRequest {
                    user: Some(user.user_ref()),
                    operation_id: user.operation_id.clone().unwrap_or_default(),
                    domain: user.domain.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            print_outcome(out, &r).map_err(io)?;
        }
        Command::Operation(OperationCmd::Show { id }) => {
            let r = AuditC::with_interceptor(channel, bearer)
                .get_operation(pb::GetOperationRequest { operation_id: id })
                .await?
                .into_inner();
            timeline::print(out, &r).map_err(io)?;
        }
        Command::Audit(cmd) => audit::run(cmd, channel, bearer, out).await?,
        Command::Idp(cmd) => idp::run(cmd, channel, bearer, out).await?,
        Command::Token(TokenCmd::Create {
            principal,
            role,
            client_app,
            ttl_seconds,
            out: file,
        }) => {
            let created = TokenC::with_interceptor(channel, bearer)
                .create_token(pb::CreateTokenRequest {
                    principal,
                    role: role_pb(role) as i32,
                    client_app: client_app_pb(client_app) as i32,
                    ttl_seconds,
                })
                .await?
                .into_inner();
            let token = Zeroizing::new(created.token);
            write_secret_file(&file, format!("{}\n", token.as_str()).as_bytes())?;
            let info = created.info.unwrap_or_default();
            writeln!(
                out,
                "token {} for {} written to {} (expires: {})",
                info.token_id,
                info.principal,
                file.display(),
                if info.expires_at.is_some() {
                    when(&info.expires_at)
                } else {
                    "never".into()
                }
            )
            .map_err(io)?;
        }
        Command::Token(TokenCmd::List { principal }) => {
            let mut client = TokenC::with_interceptor(channel, bearer);
            let mut token = String::new();
            loop {
                let page = client
                    .list_tokens(pb::ListTokensRequest {
                        principal: principal.clone().unwrap_or_default(),
                        page_size: 100,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                for t in page.tokens {
                    print_token(out, &t).map_err(io)?;
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        Command::Token(TokenCmd::Revoke { id }) => {
            let t = TokenC::with_interceptor(channel, bearer)
                .revoke_token(pb::RevokeTokenRequest {
                    token_id: id.unwrap_or_default(),
                })
                .await?
                .into_inner();
            writeln!(out, "revoked token {} of {}", t.token_id, t.principal).map_err(io)?;
        }
    }
    Ok(())
}

fn role_pb(r: RoleArg) -> pb::Role {
    match r {
        RoleArg::GlobalAdmin => pb::Role::GlobalAdmin,
        RoleArg::PasswordAdmin => pb::Role::PasswordAdmin,
        RoleArg::User => pb::Role::User,
    }
}

fn client_app_pb(a: ClientAppArg) -> pb::ClientApp {
    match a {
        ClientAppArg::Portal => pb::ClientApp::Portal,
        ClientAppArg::Graph => pb::ClientApp::Graph,
        ClientAppArg::Powershell => pb::ClientApp::Powershell,
        ClientAppArg::M365AdminCenter => pb::ClientApp::M365AdminCenter,
    }
}

/// Writes a secret to `path` with mode 0600, even when `path` exists with a
/// wider mode (see [`writeback_identity::ca::write_file`]).
fn write_secret_file(path: &std::path::Path, contents: &[u8]) -> Result<(), CliError> {
    writeback_identity::ca::write_file(path, contents, true)
        .map_err(|e| CliError::Local(format!("cannot write {e}")))
}

fn print_token(out: &mut dyn Write, t: &pb::TokenInfo) -> std::io::Result<()> {
    let role = pb::Role::try_from(t.role).map_or("unknown", |r| r.as_str_name());
    let app = pb::ClientApp::try_from(t.client_app).map_or("unknown", |a| a.as_str_name());
    let state = if t.revoked_at.is_some() {
        format!("revoked {}", when(&t.revoked_at))
    } else if t.expires_at.is_some() {
        format!("expires {}", when(&t.expires_at))
    } else {
        "never expires".to_owned()
    };
    writeln!(
        out,
        "{}\t{}\t{}\t{}\tcreated {}\t{}",
        t.token_id,
        t.principal,
        role.trim_start_matches("ROLE_").to_ascii_lowercase(),
        app.trim_start_matches("CLIENT_APP_").to_ascii_lowercase(),
        when(&t.created_at),
        state
    )
}

fn print_settings(out: &mut dyn Write, s: &pb::Settings) -> std::io::Result<()> {
    writeln!(
        out,
        "cloud-sync-writeback: {}",
        on_off(s.cloud_sync_writeback)
    )?;
    writeln!(out, "sspr-writeback: {}", on_off(s.sspr_writeback))?;
    writeln!(
        out,
        "unlock-without-reset: {}",
        on_off(s.unlock_without_reset)
    )
}
