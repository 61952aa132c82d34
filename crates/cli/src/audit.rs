//! `writebackctl audit list|admin`: the three audit trails — password
//! operations, administrative changes and security events (refused
//! authentications, operations and enrollments) — newest first, filtered by
//! principal, user and time (RFC 3339), one page at a time or every page
//! with `--all`. `audit admin` is `audit list --kind administration`.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use writeback_proto::v1::{self as pb, audit_service_client::AuditServiceClient};

use crate::{Bearer, CliError, when};

/// `audit …`
#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// List audit records, newest first: password operations (the
    /// default), administrative changes or security events.
    List(ListArgs),
    /// The administrative audit trail (the same as `list --kind
    /// administration`).
    Admin {
        /// Events per page.
        #[arg(long, default_value_t = 50)]
        page_size: u32,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
}

/// Which trail to list.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// Password operations and their outcomes.
    #[default]
    Operations,
    /// Administrative changes (toggles, domains, tokens, agents…).
    #[value(alias = "admin")]
    Administration,
    /// Refused authentications, password operations and enrollments
    /// (global administrators only).
    Security,
}

/// `audit list` filters and paging.
#[derive(Args, Debug, Default)]
pub struct ListArgs {
    /// Which trail.
    #[arg(long, value_enum, default_value_t = Kind::Operations)]
    pub kind: Kind,
    /// Only records of this principal (who acted; for a refused sign-in,
    /// whom the token claimed to be).
    #[arg(long)]
    pub principal: Option<String>,
    /// Only records about this user (UPN or objectGUID): operations and
    /// security events.
    #[arg(long)]
    pub user: Option<String>,
    /// Only records at or after this time (RFC 3339, e.g.
    /// 2025-01-31T08:00:00Z).
    #[arg(long, value_parser = rfc3339)]
    pub since: Option<prost_types::Timestamp>,
    /// Only records before this time (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    pub until: Option<prost_types::Timestamp>,
    /// Only operations in this state (pending, succeeded, failed).
    #[arg(long)]
    pub state: Option<String>,
    /// Only records with this reason code (e.g. THROTTLED): operations and
    /// security events.
    #[arg(long)]
    pub reason: Option<String>,
    /// Records per page.
    #[arg(long, default_value_t = 50)]
    pub page_size: u32,
    /// Continue after this page token.
    #[arg(long)]
    pub page_token: Option<String>,
    /// Follow every page instead of printing the next page's token.
    #[arg(long, conflicts_with = "page_token")]
    pub all: bool,
}

/// Parses an RFC 3339 time.
fn rfc3339(s: &str) -> Result<prost_types::Timestamp, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{s:?} is not an RFC 3339 time such as 2025-01-31T08:00:00Z"))?;
    Ok(writeback_core::operation::to_timestamp(t))
}

fn io(e: std::io::Error) -> CliError {
    CliError::Local(format!("cannot write output: {e}"))
}

type Client = AuditServiceClient<InterceptedService<Channel, Bearer>>;

/// Runs `audit …`.
pub async fn run(
    cmd: AuditCmd,
    channel: Channel,
    bearer: Bearer,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let args = match cmd {
        AuditCmd::List(args) => args,
        AuditCmd::Admin { page_size, all } => ListArgs {
            kind: Kind::Administration,
            page_size,
            all,
            ..ListArgs::default()
        },
    };
    check(&args)?;
    let mut client = AuditServiceClient::with_interceptor(channel, bearer);
    let mut token = args.page_token.clone().unwrap_or_default();
    loop {
        let next = match args.kind {
            Kind::Operations => operations(&mut client, &args, token, out).await?,
            Kind::Administration => administration(&mut client, &args, token, out).await?,
            Kind::Security => security(&mut client, &args, token, out).await?,
        };
        if next.is_empty() {
            break;
        }
        if !args.all {
            writeln!(out, "# more: --page-token {next}").map_err(io)?;
            break;
        }
        token = next;
    }
    Ok(())
}

/// Refuses filters the chosen trail does not have.
fn check(args: &ListArgs) -> Result<(), CliError> {
    let refuse = |flag: &str, kinds: &str| {
        Err(CliError::Local(format!(
            "{flag} filters {kinds} only, not --kind {}",
            match args.kind {
                Kind::Operations => "operations",
                Kind::Administration => "administration",
                Kind::Security => "security",
            }
        )))
    };
    if args.kind == Kind::Administration && args.user.is_some() {
        return refuse("--user", "operations and security events");
    }
    if args.kind == Kind::Administration && args.reason.is_some() {
        return refuse("--reason", "operations and security events");
    }
    if args.kind != Kind::Operations && args.state.is_some() {
        return refuse("--state", "operations");
    }
    Ok(())
}

async fn operations(
    client: &mut Client,
    args: &ListArgs,
    token: String,
    out: &mut dyn Write,
) -> Result<String, CliError> {
    let page = client
        .list_audit(pb::ListAuditRequest {
            user: args.user.clone().unwrap_or_default(),
            page_size: args.page_size,
            page_token: token,
            principal: args.principal.clone().unwrap_or_default(),
            since: args.since,
            until: args.until,
            state: args.state.clone().unwrap_or_default(),
            reason_code: args.reason.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    for r in &page.records {
        print_record(out, r).map_err(io)?;
    }
    Ok(page.next_page_token)
}

async fn administration(
    client: &mut Client,
    args: &ListArgs,
    token: String,
    out: &mut dyn Write,
) -> Result<String, CliError> {
    let page = client
        .list_admin_events(pb::ListAdminEventsRequest {
            page_size: args.page_size,
            page_token: token,
            principal: args.principal.clone().unwrap_or_default(),
            since: args.since,
            until: args.until,
            action: String::new(),
        })
        .await?
        .into_inner();
    for e in &page.events {
        writeln!(
            out,
            "{}  {}  {} via {}  {}  {}",
            when(&e.at),
            e.action,
            e.principal,
            e.client_app,
            e.object,
            e.details_json
        )
        .map_err(io)?;
    }
    Ok(page.next_page_token)
}

async fn security(
    client: &mut Client,
    args: &ListArgs,
    token: String,
    out: &mut dyn Write,
) -> Result<String, CliError> {
    let page = client
        .list_security_events(pb::ListSecurityEventsRequest {
            page_size: args.page_size,
            page_token: token,
            principal: args.principal.clone().unwrap_or_default(),
            user: args.user.clone().unwrap_or_default(),
            since: args.since,
            until: args.until,
            kind: String::new(),
            reason_code: args.reason.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    for e in &page.events {
        print_security_event(out, e).map_err(io)?;
    }
    Ok(page.next_page_token)
}

/// `-` for an empty field.
fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn print_security_event(out: &mut dyn Write, e: &pb::SecurityEvent) -> std::io::Result<()> {
    let reason = if e.detail.is_empty() {
        or_dash(&e.reason_code).to_owned()
    } else {
        format!("{}/{}", or_dash(&e.reason_code), e.detail)
    };
    let suppressed = if e.suppressed > 0 {
        format!(" suppressed={}", e.suppressed)
    } else {
        String::new()
    };
    writeln!(
        out,
        "{} {} {} by={} via={} target={} op={} from={}{}\n  {}",
        when(&e.at),
        e.kind,
        reason,
        or_dash(&e.principal),
        or_dash(&e.client_app),
        or_dash(&e.target),
        or_dash(&e.operation),
        or_dash(&e.source),
        suppressed,
        e.message,
    )
}

/// Prints one operation record (also `operation show`).
pub(crate) fn print_record(out: &mut dyn Write, r: &pb::OperationRecord) -> std::io::Result<()> {
    let kind = pb::OperationKind::try_from(r.kind).map_or("unknown", |k| k.as_str_name());
    let app = pb::ClientApp::try_from(r.client_app).map_or("unknown", |a| a.as_str_name());
    let outcome = r.outcome.clone().unwrap_or_default();
    writeln!(
        out,
        "{} {} {} target={} domain={} by={} via={} state={} reason={} agent={} relay={} took={}ms agent={}ms\n  {}",
        when(&r.created_at),
        r.operation_id,
        kind.trim_start_matches("OPERATION_KIND_")
            .to_ascii_lowercase(),
        r.target,
        r.domain,
        r.principal,
        app.trim_start_matches("CLIENT_APP_").to_ascii_lowercase(),
        r.state,
        or_dash(&outcome.reason_code),
        or_dash(&r.agent_id),
        or_dash(&r.relay_id),
        r.duration_ms,
        r.agent_duration_ms,
        outcome.message,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn times_are_rfc3339() {
        let t = rfc3339("2025-01-31T08:00:00Z").unwrap();
        assert_eq!(t.seconds, 1_738_310_400);
        let t = rfc3339("2025-01-31T09:00:00.5+01:00").unwrap();
        assert_eq!((t.seconds, t.nanos), (1_738_310_400, 500_000_000));
        assert!(rfc3339("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn filters_the_trail_lacks_are_refused() {
        let admin_by_user = ListArgs {
            kind: Kind::Administration,
            user: Some("alice@contoso.test".into()),
            ..ListArgs::default()
        };
        assert!(check(&admin_by_user).is_err());
        let security_by_state = ListArgs {
            kind: Kind::Security,
            state: Some("failed".into()),
            ..ListArgs::default()
        };
        assert!(check(&security_by_state).is_err());
        check(&ListArgs {
            kind: Kind::Security,
            user: Some("alice@contoso.test".into()),
            ..ListArgs::default()
        })
        .unwrap();
    }
}
