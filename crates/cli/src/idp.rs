//! `writebackctl idp …`: the OpenID Connect issuers the tenant trusts and
//! the client applications registered with them, and `writebackctl audit
//! admin`, the administrative audit trail those changes land in.

use std::io::Write;

use clap::{Args, Subcommand};
use tonic::transport::Channel;
use writeback_proto::v1::{
    self as pb, identity_provider_service_client::IdentityProviderServiceClient,
};

use crate::{Bearer, CliError, ClientAppArg, RoleArg, client_app_pb, role_pb, when};

/// `idp …`
#[derive(Subcommand, Debug)]
pub enum IdpCmd {
    /// Trusted issuers.
    #[command(subcommand)]
    Issuer(IssuerCmd),
    /// Client applications of those issuers; each is an origin.
    #[command(subcommand)]
    Client(ClientCmd),
}

/// `idp issuer …`
#[derive(Subcommand, Debug)]
pub enum IssuerCmd {
    /// Trust an issuer, or replace the configuration of one with the same
    /// id. The control plane fetches its discovery document and keys first.
    Add(Box<IssuerArgs>),
    /// List trusted issuers.
    List,
    /// Stop trusting an issuer (its client registrations go too).
    Remove {
        /// The issuer's id.
        id: String,
    },
}

/// An issuer's configuration.
#[derive(Args, Debug)]
pub struct IssuerArgs {
    /// Short name, e.g. entra, okta, keycloak.
    #[arg(long)]
    pub id: String,
    /// The issuer URL exactly as tokens' `iss` names it (https).
    #[arg(long)]
    pub url: String,
    /// Accepted `aud` value (repeat for several).
    #[arg(long = "audience", required = true)]
    pub audiences: Vec<String>,
    /// Claim holding the user's UPN: upn, preferred_username, email… (email
    /// names a user only when the token's email_verified is true).
    #[arg(long)]
    pub principal_claim: String,
    /// Claim holding the person's immutable identifier, which binds them to
    /// one directory user at their first operation: sub (the default), oid
    /// (Entra ID) or uid (Okta).
    #[arg(long, default_value = "sub")]
    pub subject_claim: String,
    /// Claim holding groups or roles (a string or a list).
    #[arg(long, default_value = "")]
    pub role_claim: String,
    /// A role mapping VALUE=ROLE, e.g. helpdesk=password_admin (repeat).
    #[arg(long = "map", value_parser = parse_mapping)]
    pub mappings: Vec<(String, RoleArg)>,
    /// Role of users whose token matches no mapping; without it they are
    /// refused (PRINCIPAL_NOT_MAPPED).
    #[arg(long, value_enum)]
    pub default_role: Option<RoleArg>,
    /// Accepted signing algorithm (repeat); default RS256 and ES256.
    #[arg(long = "algorithm")]
    pub algorithms: Vec<String>,
    /// Tolerated clock difference, seconds (default 60, at most 300).
    #[arg(long)]
    pub clock_skew_seconds: Option<u32>,
    /// Self-service reset/unlock needs one of these `amr` values (repeat),
    /// e.g. mfa.
    #[arg(long = "strong-amr")]
    pub strong_amr: Vec<String>,
    /// Self-service reset/unlock needs one of these `acr` values (repeat).
    #[arg(long = "strong-acr")]
    pub strong_acr: Vec<String>,
    /// Self-service reset/unlock needs a sign-in at most this many seconds
    /// old (`auth_time`); 0 = any age.
    #[arg(long, default_value_t = 0)]
    pub strong_max_age_seconds: u32,
    /// Self-service reset/unlock needs one of these granted scopes (repeat),
    /// for providers that grant a step-up scope only after MFA.
    #[arg(long = "strong-scope")]
    pub strong_scope: Vec<String>,
}

/// `idp client …`
#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Register a client application (or replace its registration).
    Add {
        /// The issuer's id.
        #[arg(long)]
        issuer: String,
        /// The client id as tokens name it (azp, client_id, cid or appid).
        #[arg(long)]
        client_id: String,
        /// The origin of its operations.
        #[arg(long, value_enum)]
        client_app: ClientAppArg,
        /// Register an application (client-credentials grant) acting as
        /// itself with this role, rather than a client acting for users.
        #[arg(long, value_enum)]
        application_role: Option<RoleArg>,
    },
    /// List client registrations.
    List {
        /// Only this issuer's clients.
        #[arg(long)]
        issuer: Option<String>,
    },
    /// Remove a client registration; its tokens are refused at once.
    Remove {
        /// The issuer's id.
        #[arg(long)]
        issuer: String,
        /// The client id.
        #[arg(long)]
        client_id: String,
    },
}

fn parse_mapping(s: &str) -> Result<(String, RoleArg), String> {
    let (value, role) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?} is not VALUE=ROLE"))?;
    let role = <RoleArg as clap::ValueEnum>::from_str(role, true)
        .map_err(|_| format!("{role:?} is not a role (global_admin, password_admin, user)"))?;
    if value.is_empty() {
        return Err("the claim value is empty".into());
    }
    Ok((value.to_owned(), role))
}

fn io(e: std::io::Error) -> CliError {
    CliError::Local(format!("cannot write output: {e}"))
}

fn role_name(r: i32) -> &'static str {
    match pb::Role::try_from(r) {
        Ok(pb::Role::GlobalAdmin) => "global_admin",
        Ok(pb::Role::PasswordAdmin) => "password_admin",
        Ok(pb::Role::User) => "user",
        _ => "-",
    }
}

fn print_issuer(out: &mut dyn Write, i: &pb::Issuer) -> std::io::Result<()> {
    let strong = i.strong_auth.clone().unwrap_or_default();
    writeln!(out, "issuer {}  {}", i.issuer_id, i.issuer_url)?;
    writeln!(out, "  audiences:       {}", i.audiences.join(", "))?;
    writeln!(
        out,
        "  algorithms:      {}",
        if i.algorithms.is_empty() {
            "RS256, ES256 (default)".to_owned()
        } else {
            i.algorithms.join(", ")
        }
    )?;
    writeln!(out, "  principal claim: {}", i.principal_claim)?;
    writeln!(out, "  subject claim:   {}", i.subject_claim)?;
    writeln!(
        out,
        "  role claim:      {}",
        if i.role_claim.is_empty() {
            "-"
        } else {
            &i.role_claim
        }
    )?;
    for m in &i.role_mappings {
        writeln!(out, "    {} -> {}", m.value, role_name(m.role))?;
    }
    writeln!(out, "  default role:    {}", role_name(i.default_role))?;
    writeln!(
        out,
        "  clock skew:      {} s",
        i.clock_skew_seconds.unwrap_or_default()
    )?;
    writeln!(
        out,
        "  strong sign-in:  amr any of [{}], acr any of [{}], scope any of [{}], max age {}",
        strong.amr_any.join(", "),
        strong.acr_any.join(", "),
        strong.scope_any.join(", "),
        match strong.max_age_seconds {
            0 => "none".to_owned(),
            s => format!("{s} s"),
        }
    )?;
    if strong.amr_any.is_empty() && strong.acr_any.is_empty() && strong.scope_any.is_empty() {
        writeln!(
            out,
            "  warning:         no strong sign-in method: self-service reset and unlock are refused \
             for this issuer's users (set --strong-amr, --strong-acr or --strong-scope)"
        )?;
    }
    writeln!(out, "  updated:         {}", when(&i.updated_at))
}

fn print_client(out: &mut dyn Write, c: &pb::OidcClient) -> std::io::Result<()> {
    let app = pb::ClientApp::try_from(c.client_app)
        .map_or("-".to_owned(), |a| a.as_str_name().to_ascii_lowercase());
    let kind = match c.application_role {
        0 => "acts for signed-in users".to_owned(),
        r => format!("application with role {}", role_name(r)),
    };
    writeln!(
        out,
        "client {}/{}  origin {}  {}",
        c.issuer_id,
        c.client_id,
        app.trim_start_matches("client_app_"),
        kind
    )
}

/// Runs an `idp` command.
pub async fn run(
    cmd: IdpCmd,
    channel: Channel,
    bearer: Bearer,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut client = IdentityProviderServiceClient::with_interceptor(channel, bearer);
    match cmd {
        IdpCmd::Issuer(IssuerCmd::Add(a)) => {
            let a = *a;
            let issuer = pb::Issuer {
                issuer_id: a.id,
                issuer_url: a.url,
                audiences: a.audiences,
                algorithms: a.algorithms,
                principal_claim: a.principal_claim,
                subject_claim: a.subject_claim,
                role_claim: a.role_claim,
                role_mappings: a
                    .mappings
                    .into_iter()
                    .map(|(value, role)| pb::RoleMapping {
                        value,
                        role: role_pb(role) as i32,
                    })
                    .collect(),
                default_role: a.default_role.map_or(0, |r| role_pb(r) as i32),
                clock_skew_seconds: a.clock_skew_seconds,
                strong_auth: Some(pb::StrongAuthPolicy {
                    amr_any: a.strong_amr,
                    acr_any: a.strong_acr,
                    max_age_seconds: a.strong_max_age_seconds,
                    scope_any: a.strong_scope,
                }),
                updated_at: None,
            };
            let stored = client
                .put_issuer(pb::PutIssuerRequest {
                    issuer: Some(issuer),
                })
                .await?
                .into_inner();
            print_issuer(out, &stored).map_err(io)?;
        }
        IdpCmd::Issuer(IssuerCmd::List) => {
            let list = client
                .list_issuers(pb::ListIssuersRequest {})
                .await?
                .into_inner();
            for i in &list.issuers {
                print_issuer(out, i).map_err(io)?;
            }
        }
        IdpCmd::Issuer(IssuerCmd::Remove { id }) => {
            let gone = client
                .delete_issuer(pb::DeleteIssuerRequest { issuer_id: id })
                .await?
                .into_inner();
            writeln!(out, "issuer {} is no longer trusted", gone.issuer_id).map_err(io)?;
        }
        IdpCmd::Client(ClientCmd::Add {
            issuer,
            client_id,
            client_app,
            application_role,
        }) => {
            let stored = client
                .put_client(pb::PutClientRequest {
                    client: Some(pb::OidcClient {
                        issuer_id: issuer,
                        client_id,
                        client_app: client_app_pb(client_app) as i32,
                        application_role: application_role.map_or(0, |r| role_pb(r) as i32),
                        updated_at: None,
                    }),
                })
                .await?
                .into_inner();
            print_client(out, &stored).map_err(io)?;
        }
        IdpCmd::Client(ClientCmd::List { issuer }) => {
            let list = client
                .list_clients(pb::ListClientsRequest {
                    issuer_id: issuer.unwrap_or_default(),
                })
                .await?
                .into_inner();
            for c in &list.clients {
                print_client(out, c).map_err(io)?;
            }
        }
        IdpCmd::Client(ClientCmd::Remove { issuer, client_id }) => {
            let gone = client
                .delete_client(pb::DeleteClientRequest {
                    issuer_id: issuer,
                    client_id,
                })
                .await?
                .into_inner();
            writeln!(out, "client {}/{} removed", gone.issuer_id, gone.client_id).map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_mappings_parse_as_value_equals_role() {
        let (v, r) = parse_mapping("cn=helpdesk,ou=groups=password_admin").unwrap();
        assert_eq!(v, "cn=helpdesk,ou=groups");
        assert!(matches!(r, RoleArg::PasswordAdmin));
        assert!(parse_mapping("helpdesk").is_err());
        assert!(parse_mapping("=user").is_err());
        assert!(parse_mapping("x=root").is_err());
    }
}
