//! `writebackctl user search QUERY [--domain D] [--limit N]`: the help
//! desk's "find a user" — users whose UPN, account name, display name, given
//! name, surname or e-mail starts with QUERY, as the domain's agent finds
//! them within its scope, each with whether writeback may act on it.

use std::io::Write;

use clap::Subcommand;
use tonic::transport::Channel;
use writeback_proto::v1::{self as pb, directory_service_client::DirectoryServiceClient};

use crate::{Bearer, CliError};

/// `user …`
#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Find users by the start of a name, account name or e-mail address
    /// (at least 2 characters). Administrators only.
    Search {
        /// The start of the name.
        query: String,
        /// Search this domain only (default: every domain of the tenant).
        #[arg(long)]
        domain: Option<String>,
        /// Most users to show (1 to 25).
        #[arg(long, default_value_t = 25)]
        limit: u32,
    },
}

fn io(e: std::io::Error) -> CliError {
    CliError::Local(format!("cannot write output: {e}"))
}

/// Runs a `user` command.
pub(crate) async fn run(
    cmd: UserCmd,
    channel: Channel,
    bearer: Bearer,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match cmd {
        UserCmd::Search {
            query,
            domain,
            limit,
        } => {
            let r = DirectoryServiceClient::with_interceptor(channel, bearer)
                .search_users(pb::SearchUsersRequest {
                    query,
                    domain: domain.unwrap_or_default(),
                    limit,
                })
                .await?
                .into_inner();
            print_found(out, &r).map_err(io)
        }
    }
}

/// One line per user (tab-separated: UPN, display name, objectGUID, state,
/// eligibility), then the notes.
fn print_found(out: &mut dyn Write, r: &pb::SearchUsersResponse) -> std::io::Result<()> {
    if r.users.is_empty() {
        writeln!(out, "no user found")?;
    }
    for u in &r.users {
        let mut state = vec![if u.enabled { "enabled" } else { "disabled" }];
        if u.locked_out {
            state.push("locked out");
        }
        let eligible = if u.eligible {
            "eligible".to_owned()
        } else {
            format!(
                "not eligible: {}: {}",
                u.ineligible_reason, u.ineligible_message
            )
        };
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            if u.upn.is_empty() {
                &u.account_name
            } else {
                &u.upn
            },
            if u.display_name.is_empty() {
                "-"
            } else {
                &u.display_name
            },
            u.object_guid,
            state.join(", "),
            eligible
        )?;
    }
    if r.truncated {
        writeln!(out, "more users match than are shown; refine the query")?;
    }
    for p in &r.problems {
        writeln!(
            out,
            "domain {} not searched: {}: {}",
            p.domain, p.reason_code, p.message
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_read_as_one_line_per_user_with_the_notes_after() {
        let r = pb::SearchUsersResponse {
            users: vec![
                pb::DirectoryUser {
                    upn: "alice@contoso.test".into(),
                    display_name: "Alice Liddell".into(),
                    object_guid: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
                    enabled: true,
                    locked_out: true,
                    eligible: true,
                    ..Default::default()
                },
                pb::DirectoryUser {
                    upn: "admin@contoso.test".into(),
                    enabled: true,
                    ineligible_reason: "PROTECTED_ACCOUNT".into(),
                    ineligible_message: "the user is a protected administrative account".into(),
                    ..Default::default()
                },
            ],
            truncated: true,
            problems: vec![pb::DomainSearchProblem {
                domain: "fabrikam.test".into(),
                reason_code: "NO_AGENT_ONLINE".into(),
                message: "no agent".into(),
            }],
        };
        let mut out = Vec::new();
        print_found(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "alice@contoso.test\tAlice Liddell\t0f8fad5b-d9cb-469f-a165-70867728950e\tenabled, locked out\teligible"
        );
        assert!(lines[1].ends_with(
            "not eligible: PROTECTED_ACCOUNT: the user is a protected administrative account"
        ));
        assert_eq!(
            lines[2],
            "more users match than are shown; refine the query"
        );
        assert_eq!(
            lines[3],
            "domain fabrikam.test not searched: NO_AGENT_ONLINE: no agent"
        );
    }
}
