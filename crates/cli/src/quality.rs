//! `writebackctl password policy|check|banned`: a user's effective password
//! policy as the DC enforces it, a pre-check of a candidate password (read
//! from standard input or a prompt, never the command line), and the
//! tenant's banned-password list.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::Subcommand;
use secrecy::ExposeSecret;
use tonic::transport::Channel;
use writeback_proto::v1::{
    self as pb, password_quality_service_client::PasswordQualityServiceClient,
};

use writeback_core::{Failure, ReasonCode};

use crate::{Bearer, CliError, read_password, when};

/// `password banned …`
#[derive(Subcommand, Debug)]
pub enum BannedCmd {
    /// Show the tenant's custom banned terms.
    List,
    /// Replace the custom banned terms with those in FILE (one per line;
    /// `-` reads standard input).
    Set {
        /// The file.
        file: PathBuf,
    },
}

fn io(e: std::io::Error) -> CliError {
    CliError::Local(format!("cannot write output: {e}"))
}

fn client(
    channel: Channel,
    bearer: Bearer,
) -> PasswordQualityServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>
{
    PasswordQualityServiceClient::with_interceptor(channel, bearer)
}

fn duration(seconds: u64) -> String {
    match seconds {
        0 => "none".to_owned(),
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} s"),
    }
}

fn print_policy(out: &mut dyn Write, label: &str, p: &pb::PasswordPolicy) -> std::io::Result<()> {
    writeln!(out, "{label}: {}", p.source)?;
    if p.source != "domain" {
        writeln!(out, "  precedence:        {}", p.precedence)?;
    }
    writeln!(out, "  minimum length:    {}", p.min_length)?;
    writeln!(
        out,
        "  complexity:        {}",
        if p.complexity { "on" } else { "off" }
    )?;
    writeln!(out, "  history:           {} passwords", p.history_length)?;
    writeln!(out, "  minimum age:       {}", duration(p.min_age_seconds))?;
    writeln!(
        out,
        "  maximum age:       {}",
        if p.max_age_seconds == 0 {
            "never expires".to_owned()
        } else {
            duration(p.max_age_seconds)
        }
    )?;
    writeln!(
        out,
        "  lockout:           {}",
        match (p.lockout_threshold, p.lockout_duration_seconds) {
            (0, _) => "never".to_owned(),
            (n, 0) => format!("after {n} failures, until an administrator unlocks"),
            (n, d) => format!("after {n} failures, for {}", duration(d)),
        }
    )?;
    if !p.applies_to.is_empty() {
        writeln!(out, "  applies to:        {}", p.applies_to.join(", "))?;
    }
    Ok(())
}

/// `password policy`: the user's effective policy, or the domain's policies.
pub async fn policy(
    channel: Channel,
    bearer: Bearer,
    user: Option<pb::UserRef>,
    domain: String,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let r = client(channel, bearer)
        .get_password_policy(pb::GetPasswordPolicyRequest { user, domain })
        .await?
        .into_inner();
    let report = r.report.unwrap_or_default();
    writeln!(out, "domain {} (read {})", r.domain, when(&r.read_at)).map_err(io)?;
    if let Some(e) = &report.effective {
        print_policy(out, "effective policy", e).map_err(io)?;
        return Ok(());
    }
    if let Some(d) = &report.domain_default {
        print_policy(out, "default policy", d).map_err(io)?;
    }
    for p in &report.fine_grained {
        print_policy(out, "fine-grained policy", p).map_err(io)?;
    }
    if !report.fine_grained_readable {
        writeln!(
            out,
            "(the agent may not read fine-grained password policies)"
        )
        .map_err(io)?;
    }
    Ok(())
}

/// `password check`: every rule the candidate fails; exit 1 when any.
/// `ask` names the user, domain and kind; the candidate is read here.
pub async fn check(
    channel: Channel,
    bearer: Bearer,
    ask: pb::ValidatePasswordRequest,
    input: &mut dyn BufRead,
    interactive: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let password = read_password(input, "Candidate password: ", interactive)?;
    let r = client(channel, bearer)
        .validate_password(pb::ValidatePasswordRequest {
            password: password.expose_secret().to_owned(),
            ..ask
        })
        .await?
        .into_inner();
    for p in &r.problems {
        writeln!(out, "{}: {}", p.reason_code, p.message).map_err(io)?;
    }
    if !r.unchecked.is_empty() {
        writeln!(
            out,
            "not checked here (the directory decides): {}",
            r.unchecked.join(", ")
        )
        .map_err(io)?;
    }
    if r.ok {
        writeln!(out, "OK: the password meets every rule checked").map_err(io)?;
        Ok(())
    } else {
        let first = r
            .problems
            .first()
            .and_then(|p| ReasonCode::parse(&p.reason_code))
            .unwrap_or(ReasonCode::InvalidArgument);
        Err(CliError::Refused(Failure::new(
            first,
            format!("the password fails {} rule(s)", r.problems.len()),
        )))
    }
}

/// `password banned list|set`.
pub async fn banned(
    cmd: BannedCmd,
    channel: Channel,
    bearer: Bearer,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut c = client(channel, bearer);
    let list = match cmd {
        BannedCmd::List => {
            c.get_banned_passwords(pb::GetBannedPasswordsRequest {})
                .await?
        }
        BannedCmd::Set { file } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                input
                    .read_to_string(&mut s)
                    .map_err(|e| CliError::Local(format!("cannot read standard input: {e}")))?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| CliError::Local(format!("cannot read {}: {e}", file.display())))?
            };
            let terms = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect();
            c.set_banned_passwords(pb::SetBannedPasswordsRequest { terms })
                .await?
        }
    }
    .into_inner();
    for t in &list.terms {
        writeln!(out, "{t}").map_err(io)?;
    }
    writeln!(
        out,
        "# {} custom terms, plus {} built-in common passwords",
        list.terms.len(),
        list.builtin_terms
    )
    .map_err(io)?;
    Ok(())
}
