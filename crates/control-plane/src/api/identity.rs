//! `IdentityProviderService`: the OpenID Connect issuers a tenant trusts and
//! the client applications registered with them. Global administrators only;
//! every change lands in the administrative audit trail. An issuer is
//! trusted only after its discovery document and keys were fetched.

use tonic::{Request, Response, Status};
use writeback_core::{ReasonCode, status};
use writeback_proto::v1::{self as pb, identity_provider_service_server::IdentityProviderService};

use super::{Api, client_app_of, client_app_pb, role_of, role_pb, store_status, ts};
use crate::auth::require_global_admin;
use crate::oidc::ALLOWED_ALGORITHMS;
use crate::oidc::keys::KeyError;
use crate::store::{self, ClientRegistration, IssuerConfig, RoleMapping, StrongAuthPolicy};

/// Clock skew when the request gives none, seconds.
const DEFAULT_CLOCK_SKEW_SECONDS: u32 = 60;
/// Largest clock skew accepted, seconds.
const MAX_CLOCK_SKEW_SECONDS: u32 = 300;

/// Claims a person or an administrator can change, so never a subject claim.
const MUTABLE_CLAIMS: [&str; 6] = [
    "email",
    "upn",
    "preferred_username",
    "unique_name",
    "name",
    "username",
];

fn invalid(why: impl Into<String>) -> Status {
    status(ReasonCode::InvalidArgument, why)
}

/// An issuer id or client id: printable, no spaces, at most 128 characters.
fn check_name(value: &str, what: &str) -> Result<String, Status> {
    let value = value.trim();
    if value.is_empty()
        || value.len() > 128
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(format!(
            "{what} is 1 to 128 characters without spaces"
        )));
    }
    Ok(value.to_owned())
}

/// An issuer URL: https, no query or fragment, at most 512 characters.
fn check_issuer_url(url: &str) -> Result<String, Status> {
    let url = url.trim();
    let ok = url.len() <= 512
        && url.starts_with("https://")
        && url.len() > "https://".len()
        && !url.contains(['?', '#'])
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(url.to_owned())
    } else {
        Err(invalid(
            "issuer_url is the issuer's https URL exactly as its tokens' iss claim names it (no query or fragment)",
        ))
    }
}

pub(super) fn issuer_of(p: pb::Issuer) -> Result<IssuerConfig, Status> {
    let issuer_id = check_name(&p.issuer_id, "issuer_id")?;
    let issuer_url = check_issuer_url(&p.issuer_url)?;
    let audiences: Vec<String> = p
        .audiences
        .iter()
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    if audiences.is_empty() {
        return Err(invalid(
            "at least one audience is required: the aud value the identity provider puts in access tokens for writeback",
        ));
    }
    for alg in &p.algorithms {
        if !ALLOWED_ALGORITHMS.contains(&alg.as_str()) {
            return Err(invalid(format!(
                "algorithm {alg:?} is not accepted; choose from {}",
                ALLOWED_ALGORITHMS.join(", ")
            )));
        }
    }
    let principal_claim = p.principal_claim.trim().to_owned();
    if principal_claim.is_empty() {
        return Err(invalid(
            "principal_claim names the claim holding the user's UPN (upn, preferred_username, email…)",
        ));
    }
    let subject_claim = match p.subject_claim.trim() {
        "" => "sub".to_owned(),
        claim => claim.to_owned(),
    };
    if subject_claim.eq_ignore_ascii_case(&principal_claim)
        || MUTABLE_CLAIMS
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&subject_claim))
    {
        return Err(invalid(format!(
            "subject_claim {subject_claim:?} can change (or is the principal claim); name the provider's \
             immutable identifier of a person: sub, oid (Entra ID) or uid (Okta)"
        )));
    }
    let role_mappings = p
        .role_mappings
        .iter()
        .map(|m| {
            let role = role_of(m.role)
                .ok_or_else(|| invalid(format!("the mapping of {:?} names no role", m.value)))?;
            if m.value.is_empty() {
                return Err(invalid("a role mapping needs a claim value"));
            }
            Ok(RoleMapping {
                value: m.value.clone(),
                role,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    if !role_mappings.is_empty() && p.role_claim.trim().is_empty() {
        return Err(invalid(
            "role mappings need a role_claim to read values from",
        ));
    }
    let clock_skew_seconds = match p.clock_skew_seconds {
        None => DEFAULT_CLOCK_SKEW_SECONDS,
        Some(s) if s > MAX_CLOCK_SKEW_SECONDS => {
            return Err(invalid(format!(
                "clock_skew_seconds is at most {MAX_CLOCK_SKEW_SECONDS}"
            )));
        }
        Some(s) => s,
    };
    let strong = p.strong_auth.unwrap_or_default();
    Ok(IssuerConfig {
        issuer_id,
        issuer_url,
        audiences,
        algorithms: p.algorithms,
        principal_claim,
        subject_claim,
        role_claim: p.role_claim.trim().to_owned(),
        role_mappings,
        default_role: role_of(p.default_role),
        clock_skew_seconds,
        strong_auth: StrongAuthPolicy {
            amr_any: strong.amr_any,
            acr_any: strong.acr_any,
            max_age_seconds: strong.max_age_seconds,
            scope_any: strong.scope_any,
        },
        updated_at_ms: 0,
    })
}

pub(super) fn issuer_pb(i: IssuerConfig) -> pb::Issuer {
    pb::Issuer {
        issuer_id: i.issuer_id,
        issuer_url: i.issuer_url,
        audiences: i.audiences,
        algorithms: i.algorithms,
        principal_claim: i.principal_claim,
        subject_claim: i.subject_claim,
        role_claim: i.role_claim,
        role_mappings: i
            .role_mappings
            .into_iter()
            .map(|m| pb::RoleMapping {
                value: m.value,
                role: role_pb(m.role) as i32,
            })
            .collect(),
        default_role: i.default_role.map_or(0, |r| role_pb(r) as i32),
        clock_skew_seconds: Some(i.clock_skew_seconds),
        strong_auth: Some(pb::StrongAuthPolicy {
            amr_any: i.strong_auth.amr_any,
            acr_any: i.strong_auth.acr_any,
            max_age_seconds: i.strong_auth.max_age_seconds,
            scope_any: i.strong_auth.scope_any,
        }),
        updated_at: ts(i.updated_at_ms),
    }
}

fn client_pb(c: ClientRegistration) -> pb::OidcClient {
    pb::OidcClient {
        issuer_id: c.issuer_id,
        client_id: c.client_id,
        client_app: client_app_pb(c.client_app) as i32,
        application_role: c.application_role.map_or(0, |r| role_pb(r) as i32),
        updated_at: ts(c.updated_at_ms),
    }
}

/// The issuer's configuration as the audit trail records it.
fn issuer_details(i: &IssuerConfig) -> serde_json::Value {
    serde_json::json!({
        "issuer_url": i.issuer_url,
        "audiences": i.audiences,
        "algorithms": i.algorithms,
        "principal_claim": i.principal_claim,
        "role_claim": i.role_claim,
        "role_mappings": i.role_mappings,
        "default_role": i.default_role.map(store::Role::as_str),
        "clock_skew_seconds": i.clock_skew_seconds,
        "strong_auth": i.strong_auth,
    })
}

fn client_details(c: &ClientRegistration) -> serde_json::Value {
    serde_json::json!({
        "client_app": c.client_app.as_str(),
        "application_role": c.application_role.map(store::Role::as_str),
    })
}

#[tonic::async_trait]
impl IdentityProviderService for Api {
    async fn put_issuer(
        &self,
        req: Request<pb::PutIssuerRequest>,
    ) -> Result<Response<pb::Issuer>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let issuer = issuer_of(
            req.into_inner()
                .issuer
                .ok_or_else(|| invalid("the request has no issuer"))?,
        )?;
        match self.cp.oidc.keys().check_issuer(&issuer.issuer_url).await {
            Ok(0) => {
                return Err(status(
                    ReasonCode::IssuerUnreachable,
                    format!("the issuer {} publishes no keys", issuer.issuer_url),
                ));
            }
            Ok(_) => {}
            Err(KeyError::Unreachable(why) | KeyError::NoKey(why)) => {
                return Err(status(
                    ReasonCode::IssuerUnreachable,
                    format!("the issuer's discovery document or keys could not be fetched: {why}"),
                ));
            }
        }
        let stored = self
            .cp
            .store
            .put_issuer(&caller.tenant, &issuer)
            .await
            .map_err(store_status)?;
        self.audit_admin(
            &caller,
            "issuer.put",
            &format!("issuer:{}", stored.issuer_id),
            issuer_details(&stored),
        )
        .await?;
        Ok(Response::new(issuer_pb(stored)))
    }

    async fn list_issuers(
        &self,
        req: Request<pb::ListIssuersRequest>,
    ) -> Result<Response<pb::ListIssuersResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let issuers = self
            .cp
            .store
            .list_issuers(&caller.tenant)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListIssuersResponse {
            issuers: issuers.into_iter().map(issuer_pb).collect(),
        }))
    }

    async fn delete_issuer(
        &self,
        req: Request<pb::DeleteIssuerRequest>,
    ) -> Result<Response<pb::Issuer>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let id = check_name(&req.into_inner().issuer_id, "issuer_id")?;
        let gone = self
            .cp
            .store
            .delete_issuer(&caller.tenant, &id)
            .await
            .map_err(store_status)?;
        self.audit_admin(
            &caller,
            "issuer.delete",
            &format!("issuer:{id}"),
            issuer_details(&gone),
        )
        .await?;
        Ok(Response::new(issuer_pb(gone)))
    }

    async fn put_client(
        &self,
        req: Request<pb::PutClientRequest>,
    ) -> Result<Response<pb::OidcClient>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let c = req
            .into_inner()
            .client
            .ok_or_else(|| invalid("the request has no client"))?;
        let client = ClientRegistration {
            issuer_id: check_name(&c.issuer_id, "issuer_id")?,
            client_id: check_name(&c.client_id, "client_id")?,
            client_app: client_app_of(c.client_app).ok_or_else(|| {
                invalid("client_app is the origin of the client's operations (portal, graph, powershell, m365_admin_center)")
            })?,
            application_role: role_of(c.application_role),
            updated_at_ms: 0,
        };
        let stored = self
            .cp
            .store
            .put_client(&caller.tenant, &client)
            .await
            .map_err(|e| match e {
                store::StoreError::AlreadyExists { .. } => status(
                    ReasonCode::AlreadyExists,
                    "this client id of this issuer URL is registered by another tenant",
                ),
                e => store_status(e),
            })?;
        self.audit_admin(
            &caller,
            "client.put",
            &format!("client:{}/{}", stored.issuer_id, stored.client_id),
            client_details(&stored),
        )
        .await?;
        Ok(Response::new(client_pb(stored)))
    }

    async fn list_clients(
        &self,
        req: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let issuer = req.into_inner().issuer_id;
        let clients = self
            .cp
            .store
            .list_clients(
                &caller.tenant,
                Some(issuer.trim()).filter(|i| !i.is_empty()),
            )
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListClientsResponse {
            clients: clients.into_iter().map(client_pb).collect(),
        }))
    }

    async fn delete_client(
        &self,
        req: Request<pb::DeleteClientRequest>,
    ) -> Result<Response<pb::OidcClient>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let r = req.into_inner();
        let issuer = check_name(&r.issuer_id, "issuer_id")?;
        let client = check_name(&r.client_id, "client_id")?;
        let gone = self
            .cp
            .store
            .delete_client(&caller.tenant, &issuer, &client)
            .await
            .map_err(store_status)?;
        self.audit_admin(
            &caller,
            "client.delete",
            &format!("client:{issuer}/{client}"),
            client_details(&gone),
        )
        .await?;
        Ok(Response::new(client_pb(gone)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> pb::Issuer {
        pb::Issuer {
            issuer_id: "idp".into(),
            issuer_url: "https://idp.example/realms/x".into(),
            audiences: vec!["writeback".into()],
            principal_claim: "upn".into(),
            ..Default::default()
        }
    }

    #[test]
    fn issuer_configurations_are_checked() {
        let i = issuer_of(valid()).unwrap();
        assert_eq!(i.clock_skew_seconds, DEFAULT_CLOCK_SKEW_SECONDS);
        assert_eq!(i.subject_claim, "sub");
        let mut oid = valid();
        oid.subject_claim = " oid ".into();
        assert_eq!(issuer_of(oid).unwrap().subject_claim, "oid");
        assert_eq!(i.default_role, None);
        let bad = |f: fn(&mut pb::Issuer)| {
            let mut p = valid();
            f(&mut p);
            issuer_of(p).unwrap_err().message().to_owned()
        };
        assert!(bad(|p| p.issuer_url = "http://idp.example".into()).contains("https"));
        assert!(bad(|p| p.issuer_url = "https://idp.example/?x=1".into()).contains("query"));
        assert!(bad(|p| p.audiences.clear()).contains("audience"));
        assert!(bad(|p| p.algorithms = vec!["HS256".into()]).contains("not accepted"));
        assert!(bad(|p| p.algorithms = vec!["none".into()]).contains("not accepted"));
        assert!(bad(|p| p.principal_claim.clear()).contains("principal_claim"));
        assert!(bad(|p| p.clock_skew_seconds = Some(301)).contains("at most"));
        assert!(bad(|p| p.issuer_id = "has space".into()).contains("issuer_id"));
        assert!(bad(|p| p.subject_claim = "email".into()).contains("immutable"));
        assert!(bad(|p| p.subject_claim = "UPN".into()).contains("immutable"));
        assert!(
            bad(|p| p.role_mappings = vec![pb::RoleMapping {
                value: "g".into(),
                role: pb::Role::GlobalAdmin as i32
            }])
            .contains("role_claim")
        );
    }
}
