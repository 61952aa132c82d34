//! The client-facing gRPC services, one file per service where it is large:
//! settings and status (`api/settings.rs`), domains and agents (here),
//! enrollment and agents' certificate renewal (`api/enrollment.rs`,
//! authenticated by the agent's own certificate rather than a bearer
//! token), password operations (`api/passwords.rs`), password quality
//! (`api/password_quality.rs`), the help desk's directory search
//! (`api/directory.rs`), the audit logs (`api/audit.rs`: operations,
//! the administrative trail, the security trail), API tokens
//! (`api/tokens.rs`) and the identity providers a tenant trusts
//! (`api/identity.rs`). Each handler authenticates the bearer token, checks
//! the caller's role, and turns every failure into a `tonic::Status` carrying
//! a stable reason code (never a raw database or directory message);
//! administrative changes are recorded with `Api::audit_admin`, refused
//! credentials, operations and enrollments in the security trail
//! ([`crate::security_audit`], in the background). Password
//! operations go through `Api::run_operation`: policy, throttle, a pending
//! audit record, sealing, a last toggle check, dispatch, the recorded outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};
use writeback_core::operation::user_ref_key;
use writeback_core::{Failure, OperationKind, ReasonCode, status};
use writeback_envelope::{Binding, Recipient, Secrets};
use writeback_identity::{EnrollmentToken, SpiffeId};
use writeback_proto::v1::{
    self as pb, agent_service_server::AgentService, domain_service_server::DomainService,
    enrollment_service_server::EnrollmentService, password_service_server::PasswordService,
    settings_service_server::SettingsService, token_service_server::TokenService, user_ref,
};

use crate::ControlPlane;
use crate::auth::{authenticate, require_admin, require_global_admin};
use crate::policy::{self, TargetKind};
use crate::store::{self, Caller, Page, StoreError};

mod audit;
mod directory;
mod enrollment;
#[doc(hidden)]
pub mod fuzz;
mod identity;
mod lifecycle;
mod password_quality;
mod passwords;
mod settings;
mod tokens;

/// Longest password accepted, in characters (AD's own limit is 256).
const MAX_PASSWORD_CHARS: usize = 256;

/// All client-facing services over one control plane.
#[derive(Clone)]
pub struct Api {
    cp: Arc<ControlPlane>,
    quality: Arc<Quality>,
    limits: Arc<crate::limits::ApiLimits>,
}

/// What the password-quality checks keep between requests.
#[derive(Default)]
struct Quality {
    /// Users' policies as agents read them.
    policies: crate::password_policy::PolicyCache,
    /// Tenants' banned lists.
    banned: crate::quality::BannedLists,
}

impl Api {
    /// Services over `cp`.
    pub fn new(cp: Arc<ControlPlane>) -> Api {
        Api {
            limits: crate::limits::ApiLimits::new(&cp.config.limits),
            cp,
            quality: Arc::default(),
        }
    }
}

/// Maps a storage error to a status without leaking database text.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { what } => status(ReasonCode::NotFound, format!("no such {what}")),
        StoreError::AlreadyExists { what } => {
            status(ReasonCode::AlreadyExists, format!("{what} already exists"))
        }
        StoreError::RoleMismatch { existing } => status(
            ReasonCode::AlreadyExists,
            format!(
                "the principal already exists with the role {existing}; mint the token for that role"
            ),
        ),
        StoreError::InvalidPageToken => {
            status(ReasonCode::InvalidArgument, "the page token is invalid")
        }
        StoreError::TokenInvalid => status(
            ReasonCode::EnrollmentTokenInvalid,
            "the enrollment token is not valid; create a new one with `writebackctl agent enroll-token`",
        ),
        StoreError::TokenUsed => status(
            ReasonCode::EnrollmentTokenUsed,
            "the enrollment token was already used; each token enrolls one agent",
        ),
        StoreError::TokenExpired => status(
            ReasonCode::EnrollmentTokenExpired,
            "the enrollment token expired; create a new one",
        ),
        other => {
            tracing::error!(error = %other, "storage error");
            status(
                ReasonCode::Internal,
                "the control plane's storage failed; see its log",
            )
        }
    }
}

/// How long an operation may take end to end.
fn timeout_of(config: &crate::ControlPlaneConfig) -> Duration {
    Duration::from_secs(config.operation_timeout_seconds.max(1))
}

/// What an operation's metrics need to know of how far it got.
#[derive(Default)]
struct Seen {
    /// The target's domain, once resolved.
    domain: String,
    /// The agent's time, when an agent answered.
    agent: Option<Duration>,
}

/// The domain's agents' (id, public key) pairs as read from the store, when the
/// operation carries a password to seal.
type AgentKeys = Result<Vec<(String, Vec<u8>)>, store::StoreError>;

fn page(size: u32, token: String) -> Page {
    Page {
        size,
        token: (!token.is_empty()).then_some(token),
    }
}

/// The client's address, as the TLS listener saw it.
fn peer_of<T>(req: &Request<T>) -> Option<std::net::SocketAddr> {
    req.extensions()
        .get::<writeback_identity::PeerInfo>()
        .map(|p| p.remote_addr)
}

fn ts(ms: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    })
}

fn settings_pb(s: &store::Settings) -> pb::Settings {
    pb::Settings {
        cloud_sync_writeback: s.cloud_sync_writeback,
        sspr_writeback: s.sspr_writeback,
        unlock_without_reset: s.unlock_without_reset,
    }
}

fn client_app_pb(a: store::ClientApp) -> pb::ClientApp {
    match a {
        store::ClientApp::Portal => pb::ClientApp::Portal,
        store::ClientApp::Graph => pb::ClientApp::Graph,
        store::ClientApp::Powershell => pb::ClientApp::Powershell,
        store::ClientApp::M365AdminCenter => pb::ClientApp::M365AdminCenter,
    }
}

impl Api {
    /// The caller behind the request's bearer token; a refusal is counted
    /// and, when it refuses the credential (not when the control plane
    /// could not check it), recorded in the security trail. Then the
    /// caller's tenant takes one call of its rate (`RATE_LIMITED` past it).
    async fn authenticate<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let caller = authenticate(&self.cp, req).await;
        if let Err(s) = &caller {
            if s.code() == tonic::Code::Unauthenticated {
                self.cp.metrics.auth_failure();
            }
            let reason = writeback_core::failure_of(s).reason;
            if matches!(
                reason,
                ReasonCode::Unauthenticated
                    | ReasonCode::TokenExpired
                    | ReasonCode::ClientNotRegistered
                    | ReasonCode::PrincipalNotMapped
            ) {
                self.cp.security.authentication_failed(
                    crate::auth::presented(req),
                    reason,
                    s.message(),
                    peer_of(req),
                );
            }
        }
        let caller = caller?;
        self.limits.check_tenant(&caller.tenant)?;
        Ok(caller)
    }

    /// The API's rate limits (the per-source layer shares them).
    pub fn limits(&self) -> &Arc<crate::limits::ApiLimits> {
        &self.limits
    }

    /// `name` normalized (trimmed, lowercase), when it is a registered
    /// domain of `tenant`; else `DOMAIN_NOT_FOUND`.
    async fn registered_domain(&self, tenant: &str, name: &str) -> Result<String, Status> {
        let domain = name.trim().to_ascii_lowercase();
        if self
            .cp
            .store
            .domain_exists(tenant, &domain)
            .await
            .map_err(store_status)?
        {
            Ok(domain)
        } else {
            Err(status(
                ReasonCode::DomainNotFound,
                format!(
                    "domain {domain:?} is not registered; add it with `writebackctl domain add`"
                ),
            ))
        }
    }

    /// Records an administrative change, right after it was made (not in
    /// its transaction): a failure to record is logged and answered as an
    /// error, so the caller learns that the trail misses it.
    pub(crate) async fn audit_admin(
        &self,
        caller: &Caller,
        action: &str,
        object: &str,
        details: serde_json::Value,
    ) -> Result<(), Status> {
        self.cp
            .store
            .record_admin_event(
                &caller.tenant,
                store::NewAdminEvent {
                    principal: &caller.principal,
                    client_app: caller.client_app.as_str(),
                    action,
                    object,
                    details,
                },
            )
            .await
            .map_err(|e| {
                tracing::error!(tenant = %caller.tenant, by = %caller.principal, action, object,
                    error = %e, "an administrative change was made but could not be recorded");
                status(
                    ReasonCode::Internal,
                    format!(
                        "{action} was made, but the administrative audit trail could not record it"
                    ),
                )
            })?;
        tracing::info!(tenant = %caller.tenant, by = %caller.principal, action, object, "administrative change");
        Ok(())
    }

    /// Records in the administrative trail that enrollment token `token_id`
    /// was used to enroll `agent`. Best effort, unlike [`Api::audit_admin`]:
    /// the token is spent and the agent stored by now, so failing the
    /// enrollment would only strand the agent; a failure is logged.
    async fn audit_enrollment(
        &self,
        agent: &store::NewAgent,
        token_id: &str,
        peer: Option<std::net::SocketAddr>,
    ) {
        let recorded = self
            .cp
            .store
            .record_admin_event(
                &agent.tenant,
                store::NewAdminEvent {
                    principal: &format!("enrollment_token:{token_id}"),
                    client_app: "agent",
                    action: "agent.enroll",
                    object: &format!("agent:{}", agent.agent_id),
                    details: serde_json::json!({
                        "domain": agent.domain,
                        "token_id": token_id,
                        "hostname": agent.hostname,
                        "version": agent.version,
                        "cert_fingerprint": agent.cert_fingerprint,
                        "source": peer.map(|p| p.ip().to_string()),
                    }),
                },
            )
            .await;
        if let Err(e) = recorded {
            tracing::error!(tenant = %agent.tenant, agent_id = %agent.agent_id, token_id,
                error = %e, "an agent was enrolled but the administrative audit trail could not record it");
        }
    }
}

#[tonic::async_trait]
impl DomainService for Api {
    async fn add_domain(
        &self,
        req: Request<pb::AddDomainRequest>,
    ) -> Result<Response<pb::Domain>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let r = req.into_inner();
        let (name, suffixes) = domain_names(&r)?;
        let row = self
            .cp
            .store
            .add_domain(&caller.tenant, &name, &suffixes)
            .await
            .map_err(store_status)?;
        self.audit_admin(
            &caller,
            "domain.add",
            &format!("domain:{}", row.name),
            serde_json::json!({ "upn_suffixes": row.upn_suffixes }),
        )
        .await?;
        Ok(Response::new(pb::Domain {
            name: row.name,
            upn_suffixes: row.upn_suffixes,
            created_at: ts(row.created_at_ms),
        }))
    }

    async fn list_domains(
        &self,
        req: Request<pb::ListDomainsRequest>,
    ) -> Result<Response<pb::ListDomainsResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        require_admin(&caller)?;
        let r = req.into_inner();
        let (rows, next) = self
            .cp
            .store
            .list_domains(&caller.tenant, page(r.page_size, r.page_token))
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListDomainsResponse {
            domains: rows
                .into_iter()
                .map(|d| pb::Domain {
                    name: d.name,
                    upn_suffixes: d.upn_suffixes,
                    created_at: ts(d.created_at_ms),
                })
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }
}

/// The domain name and UPN suffixes of an `AddDomain`, trimmed and lowercase
/// (the domain's own name when no suffix is given), or why they are refused.
fn domain_names(r: &pb::AddDomainRequest) -> Result<(String, Vec<String>), Status> {
    let name = r.name.trim().to_ascii_lowercase();
    if !is_dns_name(&name) {
        return Err(status(
            ReasonCode::InvalidArgument,
            "a domain name is a DNS name such as contoso.test",
        ));
    }
    let mut suffixes: Vec<String> = r
        .upn_suffixes
        .iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    if suffixes.is_empty() {
        suffixes.push(name.clone());
    }
    if let Some(bad) = suffixes.iter().find(|s| !is_dns_name(s)) {
        return Err(status(
            ReasonCode::InvalidArgument,
            format!("UPN suffix {bad:?} is not a DNS name"),
        ));
    }
    Ok((name, suffixes))
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[tonic::async_trait]
impl AgentService for Api {
    async fn create_enrollment_token(
        &self,
        req: Request<pb::CreateEnrollmentTokenRequest>,
    ) -> Result<Response<pb::EnrollmentToken>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let r = req.into_inner();
        let domain = self.registered_domain(&caller.tenant, &r.domain).await?;
        let ttl = if r.ttl_seconds == 0 {
            self.cp.config.enrollment_token_ttl_seconds
        } else {
            u64::from(r.ttl_seconds)
        };
        let expires = self
            .cp
            .store
            .now_ms()
            .saturating_add(i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX));
        let token = EnrollmentToken::generate(&self.cp.ca.fingerprint());
        self.cp
            .store
            .create_enrollment_token(
                &caller.tenant,
                &domain,
                &token.token_id,
                &token.secret_hash(),
                expires,
            )
            .await
            .map_err(store_status)?;
        tracing::info!(tenant = %caller.tenant, domain = %domain, token_id = %token.token_id,
            "enrollment token issued");
        // The token's id only: its secret never leaves this answer.
        self.audit_admin(
            &caller,
            "enrollment_token.create",
            &format!("domain:{domain}"),
            serde_json::json!({ "token_id": token.token_id, "expires_at_ms": expires }),
        )
        .await?;
        Ok(Response::new(pb::EnrollmentToken {
            token: token.expose(),
            expires_at: ts(expires),
        }))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        require_admin(&caller)?;
        let r = req.into_inner();
        let domain = (!r.domain.is_empty()).then(|| r.domain.to_ascii_lowercase());
        let (rows, next) = self
            .cp
            .store
            .list_agents(
                &caller.tenant,
                domain.as_deref(),
                page(r.page_size, r.page_token),
            )
            .await
            .map_err(store_status)?;
        let agents = rows
            .into_iter()
            .map(|a| {
                let online = !a.is_revoked()
                    && self
                        .cp
                        .dispatcher
                        .online_agents(&caller.tenant, &a.domain)
                        .contains(&a.agent_id);
                agent_pb(a, online)
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse {
            agents,
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn revoke_agent(
        &self,
        req: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let id = req.into_inner().agent_id;
        let row = self
            .cp
            .store
            .revoke_agent(&caller.tenant, &id)
            .await
            .map_err(store_status)?;
        tracing::info!(tenant = %caller.tenant, agent_id = %id, "agent revoked");
        self.audit_admin(
            &caller,
            "agent.revoke",
            &format!("agent:{id}"),
            serde_json::json!({ "domain": row.domain }),
        )
        .await?;
        self.cp.dispatcher.sync_revocations(&caller.tenant).await?;
        Ok(Response::new(agent_pb(row, false)))
    }
}

fn agent_pb(a: store::AgentRow, online: bool) -> pb::Agent {
    let revoked = a.is_revoked();
    pb::Agent {
        agent_id: a.agent_id,
        domain: a.domain,
        hostname: a.hostname,
        version: a.version,
        enrolled_at: ts(a.enrolled_at_ms),
        revoked,
        online,
    }
}

/// `user` with its UPN trimmed and lowercased, or its GUID in canonical form.
fn normalize_user(user: pb::UserRef) -> Result<pb::UserRef, Status> {
    let by = match user.by {
        Some(user_ref::By::Upn(upn)) => user_ref::By::Upn(upn.trim().to_lowercase()),
        Some(user_ref::By::ObjectGuid(g)) => user_ref::By::ObjectGuid(
            uuid::Uuid::parse_str(g.trim())
                .map_err(|_| status(ReasonCode::InvalidArgument, "objectGUID is not a GUID"))?
                .hyphenated()
                .to_string(),
        ),
        None => {
            return Err(status(
                ReasonCode::InvalidArgument,
                "the request names no user",
            ));
        }
    };
    Ok(pb::UserRef { by: Some(by) })
}

fn check_password(p: &str, what: &str) -> Result<(), Status> {
    if p.is_empty() {
        return Err(status(
            ReasonCode::InvalidArgument,
            format!("the {what} is empty"),
        ));
    }
    if p.chars().count() > MAX_PASSWORD_CHARS {
        return Err(status(
            ReasonCode::InvalidArgument,
            format!("the {what} is longer than {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    if p.contains('\0') {
        return Err(status(
            ReasonCode::InvalidArgument,
            format!("the {what} contains a NUL character"),
        ));
    }
    Ok(())
}

fn role_pb(r: store::Role) -> pb::Role {
    match r {
        store::Role::GlobalAdmin => pb::Role::GlobalAdmin,
        store::Role::PasswordAdmin => pb::Role::PasswordAdmin,
        store::Role::User => pb::Role::User,
    }
}

fn role_of(r: i32) -> Option<store::Role> {
    match pb::Role::try_from(r).ok()? {
        pb::Role::GlobalAdmin => Some(store::Role::GlobalAdmin),
        pb::Role::PasswordAdmin => Some(store::Role::PasswordAdmin),
        pb::Role::User => Some(store::Role::User),
        pb::Role::Unspecified => None,
    }
}

fn client_app_of(a: i32) -> Option<store::ClientApp> {
    match pb::ClientApp::try_from(a).ok()? {
        pb::ClientApp::Portal => Some(store::ClientApp::Portal),
        pb::ClientApp::Graph => Some(store::ClientApp::Graph),
        pb::ClientApp::Powershell => Some(store::ClientApp::Powershell),
        pb::ClientApp::M365AdminCenter => Some(store::ClientApp::M365AdminCenter),
        pb::ClientApp::Unspecified => None,
    }
}
