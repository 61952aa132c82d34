//! The client-facing gRPC services: settings and status, domains, agents
//! and enrollment, password operations, the audit log, API tokens, and the
//! identity providers a tenant trusts ([`identity`]). Each
//! handler authenticates the bearer token, checks the caller's role, and
//! turns every failure into a `tonic::Status` carrying a stable reason code
//! (never a raw database or directory message). Password operations go
//! through `Api::run_operation`: policy, throttle, a pending audit record,
//! sealing, a last toggle check, dispatch, the recorded outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};
use writeback_core::operation::user_ref_key;
use writeback_core::{Failure, OperationKind, ReasonCode, status};
use writeback_envelope::{Binding, Recipient, Secrets};
use writeback_identity::{EnrollmentToken, SpiffeId};
use writeback_proto::v1::{
    self as pb, agent_service_server::AgentService, audit_service_server::AuditService,
    domain_service_server::DomainService, enrollment_service_server::EnrollmentService,
    password_service_server::PasswordService, settings_service_server::SettingsService,
    token_service_server::TokenService, user_ref,
};

use crate::ControlPlane;
use crate::auth::{authenticate, require_admin, require_global_admin};
use crate::policy::{self, TargetKind};
use crate::store::{self, Caller, Page, StoreError};

mod identity;
mod password_quality;

/// Longest password accepted, in characters (AD's own limit is 256).
const MAX_PASSWORD_CHARS: usize = 256;

/// All client-facing services over one control plane.
#[derive(Clone)]
pub struct Api {
    cp: Arc<ControlPlane>,
    quality: Arc<Quality>,
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

#[tonic::async_trait]
impl SettingsService for Api {
    async fn get_settings(
        &self,
        req: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        let caller = self.authenticate(&req).await?;
        require_admin(&caller)?;
        let s = self
            .cp
            .store
            .settings(&caller.tenant)
            .await
            .map_err(store_status)?;
        Ok(Response::new(settings_pb(&s)))
    }

    async fn update_settings(
        &self,
        req: Request<pb::UpdateSettingsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let u = req.into_inner();
        let s = self
            .cp
            .store
            .update_settings(
                &caller.tenant,
                store::SettingsUpdate {
                    cloud_sync_writeback: u.cloud_sync_writeback,
                    sspr_writeback: u.sspr_writeback,
                    unlock_without_reset: u.unlock_without_reset,
                },
            )
            .await
            .map_err(store_status)?;
        tracing::info!(tenant = %caller.tenant, principal = %caller.principal,
            cloud_sync_writeback = s.cloud_sync_writeback, sspr_writeback = s.sspr_writeback,
            unlock_without_reset = s.unlock_without_reset, "settings changed");
        Ok(Response::new(settings_pb(&s)))
    }

    async fn get_status(
        &self,
        req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        require_admin(&caller)?;
        let settings = self
            .cp
            .store
            .settings(&caller.tenant)
            .await
            .map_err(store_status)?;
        let mut domains = Vec::new();
        let mut token = None;
        loop {
            let (rows, next) = self
                .cp
                .store
                .list_domains(&caller.tenant, Page { size: 1000, token })
                .await
                .map_err(store_status)?;
            for d in rows {
                domains.push(self.domain_status(&caller.tenant, &d.name).await?);
            }
            match next {
                Some(n) => token = Some(n),
                None => break,
            }
        }
        Ok(Response::new(pb::StatusResponse {
            settings: Some(settings_pb(&settings)),
            domains,
        }))
    }
}

impl Api {
    /// Whether `domain`'s agent set-up is complete (the tutorial's "verify
    /// the cloud sync agent set-up is complete"): agents enrolled and online,
    /// each answering a health probe with a recent enough version, reachable
    /// domain controllers and verified permissions. Problems block writeback
    /// and say what to do in plain words; warnings do not block.
    async fn domain_status(&self, tenant: &str, domain: &str) -> Result<pb::DomainStatus, Status> {
        let mut agents = Vec::new();
        let mut token = None;
        loop {
            let (rows, next) = self
                .cp
                .store
                .list_agents(tenant, Some(domain), Page { size: 1000, token })
                .await
                .map_err(store_status)?;
            agents.extend(rows.into_iter().filter(|a| !a.is_revoked()));
            match next {
                Some(n) => token = Some(n),
                None => break,
            }
        }
        let online = self.cp.dispatcher.online_agents(tenant, domain);
        let online_count = agents
            .iter()
            .filter(|a| online.contains(&a.agent_id))
            .count();
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        if agents.is_empty() {
            problems.push(format!(
                "no agent is enrolled for this domain; create an enrollment token with \
                 `writebackctl agent enroll-token --domain {domain}` and enroll an agent"
            ));
        } else if online_count == 0 {
            problems.push(format!(
                "none of the {} enrolled agents is connected to a relay; check that the agents \
                 are running and can reach the relay (their logs say why not)",
                agents.len()
            ));
        } else {
            for a in agents.iter().filter(|a| !online.contains(&a.agent_id)) {
                warnings.push(format!(
                    "agent {} on {} is enrolled but not connected to a relay",
                    a.agent_id, a.hostname
                ));
            }
            if online_count == 1 {
                warnings.push(
                    "only one agent is online, so there is no failover; enroll another agent on \
                     a second server"
                        .to_owned(),
                );
            }
        }
        if online_count > 0 {
            let min = &self.cp.config.min_agent_version;
            let mut policy_warnings = Vec::new();
            for h in self
                .cp
                .dispatcher
                .probe(tenant, domain, PROBE_TIMEOUT)
                .await
            {
                let id = h.identity.map(|i| i.agent_id).unwrap_or_default();
                let Some(r) = h.report else {
                    problems.push(format!(
                        "agent {id} did not answer the health check in time"
                    ));
                    continue;
                };
                if !version_at_least(&r.agent_version, min) {
                    problems.push(format!(
                        "agent {id} runs version {}, older than the minimum version {min}; upgrade it",
                        if r.agent_version.is_empty() { "unknown" } else { &r.agent_version }
                    ));
                }
                if !r.permissions_ok {
                    problems.push(format!(
                        "agent {id} has not verified its service account's permissions; it needs \
                         Reset Password, write lockoutTime and write pwdLastSet on user objects \
                         and Unexpire Password on the domain root, applied to this object and \
                         all descendant objects"
                    ));
                }
                let unreachable: Vec<_> = r
                    .domain_controllers
                    .iter()
                    .filter(|d| !d.reachable)
                    .collect();
                let all_down = !r.domain_controllers.is_empty()
                    && unreachable.len() == r.domain_controllers.len();
                for dc in unreachable {
                    let line = format!(
                        "agent {id} cannot use the domain controller {}: {}",
                        dc.url,
                        dc_problem_words(&dc.reason_code)
                    );
                    if all_down {
                        problems.push(line);
                    } else {
                        warnings.push(line);
                    }
                }
                if r.domain_controllers.is_empty() {
                    problems.push(format!("agent {id} has no domain controller configured"));
                }
                for w in r.policy_warnings {
                    if !policy_warnings.contains(&w) {
                        policy_warnings.push(w);
                    }
                }
            }
            warnings.extend(policy_warnings);
        }
        Ok(pb::DomainStatus {
            domain: domain.to_owned(),
            agents_enrolled: u32::try_from(agents.len()).unwrap_or(u32::MAX),
            agents_online: u32::try_from(online_count).unwrap_or(u32::MAX),
            setup_complete: online_count > 0 && problems.is_empty(),
            problems,
            warnings,
        })
    }
}

/// How long `status` waits for agents' health answers.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A DC reachability reason code in words.
fn dc_problem_words(code: &str) -> &'static str {
    match ReasonCode::parse(code) {
        Some(ReasonCode::DcUnreachable) => {
            "it does not answer on the network (check the URL, DNS and firewalls)"
        }
        Some(ReasonCode::TlsFailure) => {
            "the TLS handshake failed (check its certificate and the agent's ca_file)"
        }
        Some(ReasonCode::AgentBindFailed) => {
            "the service account cannot sign in (check bind_dn and its password)"
        }
        Some(ReasonCode::Timeout) => "it did not answer in time",
        _ => "it cannot be used (the agent's log has the details)",
    }
}

/// Compares dotted numeric versions (`1.2.3`, missing parts are 0); a
/// pre-release (`1.2.3-rc1`) is older than its release, and an unparsable
/// version is older than anything.
fn version_at_least(v: &str, min: &str) -> bool {
    fn parse(s: &str) -> Option<(Vec<u64>, bool)> {
        let s = s.trim().trim_start_matches('v');
        let s = s.split('+').next().unwrap_or(s);
        let (core, pre) = match s.split_once('-') {
            Some((c, _)) => (c, true),
            None => (s, false),
        };
        let parts = core
            .split('.')
            .map(|p| p.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        Some((parts, pre))
    }
    let (Some((mut a, a_pre)), Some((mut b, b_pre))) = (parse(v), parse(min)) else {
        return false;
    };
    let n = a.len().max(b.len());
    a.resize(n, 0);
    b.resize(n, 0);
    match a.cmp(&b) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => !a_pre || b_pre,
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
        let row = self
            .cp
            .store
            .add_domain(&caller.tenant, &name, &suffixes)
            .await
            .map_err(store_status)?;
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
        let domain = r.domain.trim().to_ascii_lowercase();
        if !self
            .cp
            .store
            .domain_exists(&caller.tenant, &domain)
            .await
            .map_err(store_status)?
        {
            return Err(status(
                ReasonCode::DomainNotFound,
                format!(
                    "domain {domain:?} is not registered; add it with `writebackctl domain add`"
                ),
            ));
        }
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

#[tonic::async_trait]
impl EnrollmentService for Api {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let r = req.into_inner();
        let token = EnrollmentToken::parse(&r.token).map_err(|_| {
            status(
                ReasonCode::EnrollmentTokenInvalid,
                "the enrollment token is malformed",
            )
        })?;
        if token.ca_fingerprint != self.cp.ca.fingerprint() {
            return Err(status(
                ReasonCode::CaMismatch,
                "the enrollment token pins another CA than this control plane's",
            ));
        }
        if r.envelope_public_key.len() != 32 {
            return Err(status(
                ReasonCode::InvalidArgument,
                "the envelope public key must be 32 bytes (X25519)",
            ));
        }
        // Check the CSR before spending the token, without signing anything:
        // the CA signs only after the token is spent.
        let agent_id = format!("agent-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        writeback_identity::Ca::check_csr(&r.csr_pem).map_err(|_| {
            status(
                ReasonCode::InvalidArgument,
                "the certificate signing request is not valid PEM PKCS#10",
            )
        })?;
        let (tenant, domain) = self
            .cp
            .store
            .consume_enrollment_token(
                &token.token_id,
                &token.secret_hash(),
                self.cp.store.now_ms(),
            )
            .await
            .map_err(store_status)?;
        let id = SpiffeId::agent(&tenant, &domain, &agent_id).map_err(|_| {
            status(
                ReasonCode::Internal,
                "the domain name cannot appear in an identity",
            )
        })?;
        let cert = self.cp.ca.sign_agent_csr(&r.csr_pem, &id).map_err(|_| {
            status(
                ReasonCode::InvalidArgument,
                "the certificate signing request is not valid",
            )
        })?;
        let fingerprint = writeback_identity::fingerprint_of_pem(&cert)
            .map_err(|_| status(ReasonCode::Internal, "cannot fingerprint the certificate"))?;
        self.cp
            .store
            .insert_agent(&store::NewAgent {
                tenant: tenant.clone(),
                domain: domain.clone(),
                agent_id: agent_id.clone(),
                hostname: r.hostname.chars().take(255).collect(),
                version: r.agent_version.chars().take(64).collect(),
                envelope_public_key: r.envelope_public_key,
                cert_fingerprint: fingerprint,
            })
            .await
            .map_err(store_status)?;
        tracing::info!(tenant = %tenant, domain = %domain, agent_id = %agent_id, "agent enrolled");
        Ok(Response::new(pb::EnrollResponse {
            tenant,
            domain,
            agent_id,
            certificate_pem: cert,
            ca_pem: self.cp.ca.cert_pem().to_owned(),
            relay_urls: self.cp.config.agent_relay_urls(),
        }))
    }
}

/// `user` with its UPN trimmed and lowercased, or its GUID in canonical form.
fn normalize_user(user: pb::UserRef) -> Result<pb::UserRef, Status> {
    let by = match user.by {
        Some(user_ref::By::Upn(upn)) => user_ref::By::Upn(upn.trim().to_ascii_lowercase()),
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

/// One password operation as the handlers hand it to [`Api::run_operation`].
struct Ask {
    kind: OperationKind,
    user: Option<pb::UserRef>,
    domain: String,
    operation_id: String,
    must_change_at_next_logon: bool,
    unlock: bool,
    new_password: Option<SecretString>,
    old_password: Option<SecretString>,
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

#[tonic::async_trait]
impl PasswordService for Api {
    async fn reset_password(
        &self,
        req: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::OperationResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let mut r = req.into_inner();
        check_password(&r.new_password, "new password")?;
        let ask = Ask {
            kind: OperationKind::Reset,
            user: r.user.take(),
            domain: std::mem::take(&mut r.domain),
            operation_id: std::mem::take(&mut r.operation_id),
            must_change_at_next_logon: r.must_change_at_next_logon,
            unlock: r.unlock,
            new_password: Some(SecretString::from(std::mem::take(&mut r.new_password))),
            old_password: None,
        };
        self.run_operation(caller, ask).await.map(Response::new)
    }

    async fn change_password(
        &self,
        req: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::OperationResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let mut r = req.into_inner();
        check_password(&r.new_password, "new password")?;
        check_password(&r.old_password, "current password")?;
        let ask = Ask {
            kind: if r.forced {
                OperationKind::ForcedChange
            } else {
                OperationKind::Change
            },
            user: r.user.take(),
            domain: std::mem::take(&mut r.domain),
            operation_id: std::mem::take(&mut r.operation_id),
            must_change_at_next_logon: false,
            unlock: false,
            new_password: Some(SecretString::from(std::mem::take(&mut r.new_password))),
            old_password: Some(SecretString::from(std::mem::take(&mut r.old_password))),
        };
        self.run_operation(caller, ask).await.map(Response::new)
    }

    async fn unlock_account(
        &self,
        req: Request<pb::UnlockAccountRequest>,
    ) -> Result<Response<pb::OperationResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let r = req.into_inner();
        let ask = Ask {
            kind: OperationKind::Unlock,
            user: r.user,
            domain: r.domain,
            operation_id: r.operation_id,
            must_change_at_next_logon: false,
            unlock: false,
            new_password: None,
            old_password: None,
        };
        self.run_operation(caller, ask).await.map(Response::new)
    }
}

impl Api {
    /// The caller behind the request's bearer token; a refusal is counted.
    async fn authenticate<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let caller = authenticate(&self.cp, req).await;
        if let Err(s) = &caller
            && s.code() == tonic::Code::Unauthenticated
        {
            self.cp.metrics.auth_failure();
        }
        caller
    }

    /// Queues the e-mail to the user about a finished operation, in the
    /// background: the answer never waits for it (see [`crate::notify`]).
    fn notify_finished(&self, tenant: &str, operation_id: &str) {
        let cp = self.cp.clone();
        let (tenant, id) = (tenant.to_owned(), operation_id.to_owned());
        tokio::spawn(async move {
            match cp.store.get_operation(&tenant, &id).await {
                Ok(Some(row)) => {
                    crate::notify::operation_finished(&cp.store, &cp.config.notify, &row).await;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the operation to notify about"),
            }
        });
    }

    /// `PASSWORD_BANNED` when `new` fails the tenant's banned list (built-in
    /// common passwords plus the tenant's terms, and the user's own names).
    async fn refuse_banned(
        &self,
        caller: &Caller,
        user: &pb::UserRef,
        new: &SecretString,
    ) -> Result<(), Status> {
        let list = self
            .quality
            .banned
            .get(&self.cp.store, &caller.tenant)
            .await
            .map_err(store_status)?;
        let upn = match &user.by {
            Some(user_ref::By::Upn(u)) => u.as_str(),
            _ => "",
        };
        let tokens = crate::quality::user_tokens("", "", upn);
        match crate::quality::banned_problem(&list, new.expose_secret(), &tokens) {
            None => Ok(()),
            Some(p) => {
                tracing::info!(principal = %caller.principal, "operation refused: banned password");
                Err(status(ReasonCode::PasswordBanned, p.message))
            }
        }
    }

    /// The domain of `user` (by its UPN suffix, or `domain` for an
    /// objectGUID) and who it is relative to the caller.
    async fn resolve_target(
        &self,
        caller: &Caller,
        user: &pb::UserRef,
        domain: &str,
    ) -> Result<(String, TargetKind), Status> {
        let store = &self.cp.store;
        let resolved = match &user.by {
            Some(user_ref::By::Upn(upn)) => {
                let upn = upn.trim().to_ascii_lowercase();
                let Some((local, suffix)) = upn.rsplit_once('@') else {
                    return Err(status(
                        ReasonCode::InvalidArgument,
                        "a UPN looks like name@suffix",
                    ));
                };
                if local.is_empty() {
                    return Err(status(
                        ReasonCode::InvalidArgument,
                        "a UPN looks like name@suffix",
                    ));
                }
                // Independent reads, at once.
                let (domain, role) = tokio::join!(
                    store.domain_for_upn_suffix(&caller.tenant, suffix),
                    store.principal_role(&caller.tenant, &upn),
                );
                let domain = domain.map_err(store_status)?.ok_or_else(|| {
                    status(
                        ReasonCode::DomainNotFound,
                        format!("no registered domain has the UPN suffix {suffix:?}"),
                    )
                })?;
                let kind = if upn == caller.principal.to_ascii_lowercase() {
                    TargetKind::Own
                } else if role
                    .map_err(store_status)?
                    .is_some_and(store::Role::is_admin)
                {
                    TargetKind::OtherAdministrator
                } else {
                    TargetKind::OtherEndUser
                };
                (domain, kind)
            }
            Some(user_ref::By::ObjectGuid(g)) => {
                uuid::Uuid::parse_str(g)
                    .map_err(|_| status(ReasonCode::InvalidArgument, "objectGUID is not a GUID"))?;
                let domain = domain.trim().to_ascii_lowercase();
                if !store
                    .domain_exists(&caller.tenant, &domain)
                    .await
                    .map_err(store_status)?
                {
                    return Err(status(
                        ReasonCode::DomainNotFound,
                        "a user given by objectGUID needs a registered domain",
                    ));
                }
                // A GUID cannot be matched to a principal here, so it is
                // treated as another end user: administrators only.
                (domain, TargetKind::OtherEndUser)
            }
            None => {
                return Err(status(
                    ReasonCode::InvalidArgument,
                    "the request names no user",
                ));
            }
        };
        Ok(resolved)
    }

    /// [`Api::decide_and_run`], counted in the metrics by kind, domain, origin
    /// and the reason answered.
    async fn run_operation(
        &self,
        caller: Caller,
        ask: Ask,
    ) -> Result<pb::OperationResponse, Status> {
        let started = Instant::now();
        let kind = ask.kind.as_str().to_owned();
        let origin = caller.client_app.to_string();
        let mut seen = Seen::default();
        let result = self.decide_and_run(caller, ask, &mut seen).await;
        let reason = match &result {
            Ok(r) => r
                .outcome
                .as_ref()
                .map(|o| o.reason_code.clone())
                .unwrap_or_default(),
            Err(s) => writeback_core::failure_of(s).reason.as_str().to_owned(),
        };
        self.cp.metrics.operation(
            crate::metrics::OperationLabels {
                kind,
                domain: seen.domain,
                origin,
                reason,
            },
            started.elapsed(),
            seen.agent,
        );
        result
    }

    /// Resolves, authorizes, throttles, records, seals and dispatches one
    /// operation, and records its outcome.
    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant, operation_id, domain, kind = %ask.kind))]
    async fn decide_and_run(
        &self,
        caller: Caller,
        ask: Ask,
        seen: &mut Seen,
    ) -> Result<pb::OperationResponse, Status> {
        let started = Instant::now();
        let store = &self.cp.store;
        // One spelling per user: UPNs trimmed and lowercase (AD compares
        // them without regard to case), GUIDs in canonical form. The
        // normalized reference is what the audit log, the throttle and the
        // envelope binding see, and what the agent receives.
        let user =
            normalize_user(ask.user.clone().ok_or_else(|| {
                status(ReasonCode::InvalidArgument, "the request names no user")
            })?)?;
        let target_key = user_ref_key(&user)
            .ok_or_else(|| status(ReasonCode::InvalidArgument, "the request names no user"))?;
        let resolve = self.resolve_target(&caller, &user, &ask.domain);
        // The operation id first (it costs no read), so the record of a repeated
        // id is read together with everything else the decision needs.
        let operation_id = if ask.operation_id.is_empty() {
            None
        } else {
            Some(
                uuid::Uuid::parse_str(&ask.operation_id)
                    .map_err(|_| status(ReasonCode::InvalidArgument, "an operation id is a UUID"))?
                    .to_string(),
            )
        };
        let existing = async {
            match &operation_id {
                Some(id) => store.get_operation(&caller.tenant, id).await,
                // A new id was never used.
                None => Ok(None),
            }
        };
        let reads = Instant::now();
        let (resolved, settings, existing) =
            tokio::join!(resolve, store.settings(&caller.tenant), existing);
        self.cp.metrics.store_read(reads.elapsed());
        let (domain, target_kind) = resolved?;
        seen.domain.clone_from(&domain);
        let span = tracing::Span::current();
        span.record("domain", domain.as_str());

        let settings = settings.map_err(store_status)?;
        if let Err(refusal) = policy::decide(
            &settings,
            caller.role,
            caller.client_app,
            target_kind,
            ask.kind,
        )
        .and_then(|()| policy::check_sign_in(&caller.sign_in, target_kind, ask.kind))
        {
            // A refused operation never becomes an operation: no audit
            // record, no dispatch, and it does not count toward the
            // throttle. The refusal is answered at once and logged here.
            tracing::info!(principal = %caller.principal, client_app = %caller.client_app,
                target = %target_key, target_kind = ?target_kind, reason = %refusal.reason,
                "operation refused by policy");
            if target_kind == TargetKind::OtherAdministrator
                && ask.kind == OperationKind::Reset
                && refusal.reason == ReasonCode::UnsupportedOperation
                && let Some(user_ref::By::Upn(upn)) = &user.by
            {
                crate::notify::admin_reset_attempted(
                    &self.cp.store,
                    &self.cp.config.notify,
                    &caller.tenant,
                    &caller.principal,
                    upn,
                    caller.client_app,
                )
                .await;
            }
            return Err(refusal.into());
        }

        // A new password built on a banned term never leaves the control
        // plane: refused like the policy's refusals (not recorded, not
        // counted by the throttle).
        if let Some(new) = &ask.new_password {
            self.refuse_banned(&caller, &user, new).await?;
        }

        // One request per caller-chosen id at a time, once this caller may run
        // it (see `flight`); one that waited reads the record again, which the
        // request before it has finished.
        let _flight = match &operation_id {
            None => None,
            Some(id) => Some(
                self.cp
                    .flights
                    .board(&caller.tenant, id, timeout_of(&self.cp.config))
                    .await
                    .map_err(Status::from)?,
            ),
        };
        let existing = match (&_flight, &operation_id) {
            (Some(f), Some(id)) if f.waited => store.get_operation(&caller.tenant, id).await,
            _ => existing,
        };
        let operation_id = operation_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        span.record("operation_id", operation_id.as_str());
        let fail = |f: Failure| -> Status { f.with_operation(operation_id.clone()).into() };

        let now = store.now_ms();
        let timeout = timeout_of(&self.cp.config);
        let deadline_ms = now + i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        // The agents' keys (to seal the password to) are read while the record is
        // written.
        let keys = async {
            match ask.new_password {
                Some(_) => Some(store.agent_keys(&caller.tenant, &domain).await),
                None => None,
            }
        };
        let keys = match existing.map_err(store_status)? {
            Some(row) if row.target != target_key || row.kind != ask.kind.as_str() => {
                return Err(fail(Failure::new(
                    ReasonCode::AlreadyExists,
                    "this operation id was already used for another operation",
                )));
            }
            Some(row) if row.state != store::OperationState::Pending => {
                tracing::info!("repeated operation id answered from the audit log");
                return answer(
                    &operation_id,
                    &row.reason_code.unwrap_or_default(),
                    row.message.unwrap_or_default(),
                );
            }
            Some(_) => keys.await,
            None => {
                if ask.kind == OperationKind::Reset {
                    self.throttle(&caller, &target_key, now).await?;
                }
                let record = store::NewOperation {
                    id: operation_id.clone(),
                    tenant: caller.tenant.clone(),
                    kind: ask.kind.as_str().to_owned(),
                    target: target_key.clone(),
                    domain: domain.clone(),
                    principal: caller.principal.clone(),
                    client_app: caller.client_app,
                    created_at_ms: now,
                    deadline_at_ms: deadline_ms,
                };
                let (inserted, keys) = tokio::join!(store.insert_operation(&record), keys);
                inserted.map_err(store_status)?;
                keys
            }
        };

        let result = self
            .seal_and_dispatch(
                keys,
                &caller,
                &ask,
                &user,
                &target_key,
                &domain,
                &operation_id,
                deadline_ms,
                timeout,
            )
            .await;
        let (reason, message, agent_id, relay_id, agent_ms) = match result {
            Ok(d) => {
                let r = d.result.unwrap_or_default();
                let o = r.outcome.unwrap_or_default();
                (
                    o.reason_code,
                    o.message,
                    r.agent_id,
                    d.relay_id,
                    r.agent_duration_ms,
                )
            }
            Err(f) => (
                f.reason.as_str().to_owned(),
                f.message,
                String::new(),
                String::new(),
                0,
            ),
        };
        if agent_ms > 0 {
            seen.agent = Some(Duration::from_millis(agent_ms));
        }
        let ok = reason == ReasonCode::Ok.as_str();
        let finished = store
            .finish_operation(
                &caller.tenant,
                &operation_id,
                &store::Finish {
                    state: if ok {
                        store::OperationState::Succeeded
                    } else {
                        store::OperationState::Failed
                    },
                    reason_code: ReasonCode::parse(&reason).unwrap_or(ReasonCode::Internal),
                    message: message.clone(),
                    agent_id: (!agent_id.is_empty()).then_some(agent_id),
                    relay_id: (!relay_id.is_empty()).then_some(relay_id),
                    finished_at_ms: store.now_ms(),
                    agent_duration_ms: Some(i64::try_from(agent_ms).unwrap_or(i64::MAX)),
                },
            )
            .await;
        match finished {
            Ok(()) if ok && self.cp.config.notify.enabled => {
                self.notify_finished(&caller.tenant, &operation_id);
            }
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "cannot record the operation's outcome"),
        }
        tracing::info!(reason = %reason, elapsed_ms = started.elapsed().as_millis(), "operation finished");
        answer(&operation_id, &reason, message)
    }

    /// Refuses a reset of `target` with `THROTTLED` once the tenant's limit
    /// of resets per user per hour is reached (every recorded reset counts,
    /// whatever its outcome; refused and throttled attempts are not recorded
    /// and so do not count). The answer says when the next reset is allowed,
    /// in the message, as `retry-after` seconds in the metadata and as a
    /// `google.rpc.RetryInfo`.
    async fn throttle(&self, caller: &Caller, target: &str, now: i64) -> Result<(), Status> {
        let limit = self.cp.config.throttle_per_user_per_hour;
        if limit == 0 {
            return Ok(());
        }
        const HOUR_MS: i64 = 3_600_000;
        let (count, oldest) = self
            .cp
            .store
            .count_operations_since(&caller.tenant, target, &["reset"], now - HOUR_MS)
            .await
            .map_err(store_status)?;
        if count < i64::from(limit) {
            return Ok(());
        }
        let next_ms = oldest.unwrap_or(now) + HOUR_MS;
        let next_s = next_ms.div_euclid(1000) + i64::from(next_ms.rem_euclid(1000) > 0);
        let when = time::OffsetDateTime::from_unix_timestamp(next_s)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        tracing::info!(principal = %caller.principal, target, limit, "reset throttled");
        self.cp.metrics.throttled();
        let wait_s = (next_s * 1000 - now).max(0).div_euclid(1000);
        Err(Failure::new(
            ReasonCode::Throttled,
            format!(
                "at most {limit} password resets per user per hour; the next reset of this user \
                 is allowed at {when}"
            ),
        )
        .with_retry_after(Duration::from_secs(u64::try_from(wait_s).unwrap_or(0)))
        .into())
    }

    #[allow(clippy::too_many_arguments)]
    async fn seal_and_dispatch(
        &self,
        keys: Option<AgentKeys>,
        caller: &Caller,
        ask: &Ask,
        user: &pb::UserRef,
        target_key: &str,
        domain: &str,
        operation_id: &str,
        deadline_ms: i64,
        timeout: Duration,
    ) -> Result<pb::DispatchResponse, Failure> {
        let expires_at = deadline_ms.div_euclid(1000);
        let envelope = match (&ask.new_password, keys) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Failure::new(
                    ReasonCode::Internal,
                    "the agents' keys were not read",
                ));
            }
            (Some(new_password), Some(keys)) => {
                let keys = keys.map_err(|e| {
                    tracing::error!(error = %e, "cannot read agent keys");
                    Failure::new(ReasonCode::Internal, "the control plane's storage failed")
                })?;
                if keys.is_empty() {
                    return Err(Failure::new(
                        ReasonCode::NoAgentOnline,
                        format!(
                            "no agent is enrolled for domain {domain}; enroll one with `writebackctl agent enroll-token --domain {domain}`"
                        ),
                    ));
                }
                let recipients: Vec<Recipient<'_>> = keys
                    .iter()
                    .map(|(id, pk)| Recipient {
                        agent_id: id,
                        public_key: pk,
                    })
                    .collect();
                let binding = Binding {
                    tenant: &caller.tenant,
                    domain,
                    operation_id,
                    target: target_key,
                    kind: ask.kind.as_str(),
                    must_change_at_next_logon: ask.must_change_at_next_logon,
                    unlock: ask.unlock,
                    expires_at,
                };
                let secrets = Secrets {
                    new_password: new_password.clone(),
                    old_password: ask.old_password.clone(),
                };
                Some(
                    writeback_envelope::seal(&recipients, &binding, &secrets).map_err(|e| {
                        tracing::error!(error = %e, "sealing failed");
                        Failure::new(
                            ReasonCode::Internal,
                            "the password could not be sealed to the domain's agents",
                        )
                    })?,
                )
            }
        };
        let op = pb::OperationRequest {
            operation_id: operation_id.to_owned(),
            tenant: caller.tenant.clone(),
            domain: domain.to_owned(),
            kind: ask.kind.to_wire() as i32,
            target: Some(user.clone()),
            must_change_at_next_logon: ask.must_change_at_next_logon,
            unlock: ask.unlock,
            expires_at: Some(prost_types::Timestamp {
                seconds: expires_at,
                nanos: 0,
            }),
            envelope,
            traceparent: String::new(),
        };
        // The last gate: writeback switched off since the policy check
        // (while recording and sealing) stops the operation here, so nothing
        // accepted before the switch is handed to a relay after it.
        let settings = self.cp.store.settings(&caller.tenant).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read the settings");
            Failure::new(ReasonCode::Internal, "the control plane's storage failed")
        })?;
        policy::check_toggles(&settings, ask.kind)?;
        self.cp.dispatcher.dispatch(op, timeout).await
    }
}

fn answer(
    operation_id: &str,
    reason: &str,
    message: String,
) -> Result<pb::OperationResponse, Status> {
    match ReasonCode::parse(reason) {
        Some(ReasonCode::Ok) => Ok(pb::OperationResponse {
            operation_id: operation_id.to_owned(),
            outcome: Some(pb::OperationOutcome {
                reason_code: reason.to_owned(),
                message,
                applied: true,
            }),
        }),
        Some(code) => Err(Failure::new(code, message)
            .with_operation(operation_id)
            .into()),
        None => {
            tracing::warn!(reason, "unknown reason code from an agent");
            Err(Failure::new(ReasonCode::Internal, message)
                .with_operation(operation_id)
                .into())
        }
    }
}

#[tonic::async_trait]
impl AuditService for Api {
    async fn get_operation(
        &self,
        req: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::OperationRecord>, Status> {
        let caller = self.authenticate(&req).await?;
        let id = req.into_inner().operation_id;
        let row = self
            .cp
            .store
            .get_operation(&caller.tenant, &id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| status(ReasonCode::NotFound, format!("no operation {id}")))?;
        let own = row.principal == caller.principal
            || row.target == format!("upn:{}", caller.principal.to_ascii_lowercase());
        if !caller.role.is_admin() && !own {
            return Err(status(ReasonCode::NotFound, format!("no operation {id}")));
        }
        Ok(Response::new(record_pb(row)))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        require_admin(&caller)?;
        let r = req.into_inner();
        let user =
            (!r.user.is_empty()).then(|| format!("upn:{}", r.user.trim().to_ascii_lowercase()));
        let (rows, next) = self
            .cp
            .store
            .list_operations(
                &caller.tenant,
                user.as_deref(),
                page(r.page_size, r.page_token),
            )
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListAuditResponse {
            records: rows.into_iter().map(record_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn list_admin_events(
        &self,
        req: Request<pb::ListAdminEventsRequest>,
    ) -> Result<Response<pb::ListAdminEventsResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        require_admin(&caller)?;
        let r = req.into_inner();
        let (events, next) = self
            .cp
            .store
            .list_admin_events(&caller.tenant, page(r.page_size, r.page_token))
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListAdminEventsResponse {
            events: events
                .into_iter()
                .map(|e| pb::AdminEvent {
                    event_id: e.event_id,
                    at: ts(e.at_ms),
                    principal: e.principal,
                    client_app: e.client_app,
                    action: e.action,
                    object: e.object,
                    details_json: e.details.to_string(),
                })
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }
}

fn record_pb(r: store::OperationRow) -> pb::OperationRecord {
    let kind = OperationKind::parse(&r.kind)
        .map_or(pb::OperationKind::Unspecified, OperationKind::to_wire);
    let outcome = r.reason_code.as_ref().map(|code| pb::OperationOutcome {
        applied: code == ReasonCode::Ok.as_str(),
        reason_code: code.clone(),
        message: r.message.clone().unwrap_or_default(),
    });
    pb::OperationRecord {
        operation_id: r.id,
        kind: kind as i32,
        target: r.target,
        domain: r.domain,
        principal: r.principal,
        client_app: client_app_pb(r.client_app) as i32,
        state: r.state.to_string(),
        outcome,
        agent_id: r.agent_id.unwrap_or_default(),
        relay_id: r.relay_id.unwrap_or_default(),
        created_at: ts(r.created_at_ms),
        finished_at: r.finished_at_ms.and_then(ts),
        duration_ms: r
            .finished_at_ms
            .map_or(0, |f| u64::try_from(f - r.created_at_ms).unwrap_or(0)),
        agent_duration_ms: r
            .agent_duration_ms
            .map_or(0, |d| u64::try_from(d).unwrap_or(0)),
    }
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

fn token_pb(t: store::TokenRow) -> pb::TokenInfo {
    pb::TokenInfo {
        token_id: t.token_id,
        principal: t.principal,
        role: role_pb(t.role) as i32,
        client_app: client_app_pb(t.client_app) as i32,
        created_at: ts(t.created_at_ms),
        expires_at: t.expires_at_ms.and_then(ts),
        revoked_at: t.revoked_at_ms.and_then(ts),
    }
}

#[tonic::async_trait]
impl TokenService for Api {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let r = req.into_inner();
        let principal = crate::auth::normalize_principal(&r.principal)
            .map_err(|why| status(ReasonCode::InvalidArgument, why))?;
        let role = role_of(r.role).ok_or_else(|| {
            status(
                ReasonCode::InvalidArgument,
                "a role is global_admin, password_admin or user",
            )
        })?;
        let app = client_app_of(r.client_app).ok_or_else(|| {
            status(
                ReasonCode::InvalidArgument,
                "a client app is portal, graph, powershell or m365_admin_center",
            )
        })?;
        let expires_at_ms = (r.ttl_seconds > 0).then(|| {
            self.cp
                .store
                .now_ms()
                .saturating_add(i64::from(r.ttl_seconds) * 1000)
        });
        let store = &self.cp.store;
        store
            .ensure_principal_with_role(&caller.tenant, &principal, role)
            .await
            .map_err(store_status)?;
        let (token, hash) = crate::auth::new_api_token();
        let token_id = store
            .create_api_token(&caller.tenant, &principal, app, &hash, expires_at_ms)
            .await
            .map_err(store_status)?;
        let info = store
            .get_api_token(&caller.tenant, &token_id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| status(ReasonCode::Internal, "the new token vanished"))?;
        tracing::info!(tenant = %caller.tenant, by = %caller.principal, principal = %principal,
            token_id = %token_id, role = %role, client_app = %app, "api token minted");
        Ok(Response::new(pb::CreatedToken {
            token,
            info: Some(token_pb(info)),
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let r = req.into_inner();
        let principal = (!r.principal.trim().is_empty()).then_some(r.principal.as_str());
        let (rows, next) = self
            .cp
            .store
            .list_api_tokens(&caller.tenant, principal, page(r.page_size, r.page_token))
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: rows.into_iter().map(token_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let caller = self.authenticate(&req).await?;
        let id = req.into_inner().token_id;
        let id = if id.trim().is_empty() {
            if caller.sign_in != store::SignIn::ApiToken {
                return Err(status(
                    ReasonCode::InvalidArgument,
                    "this request was made with an identity provider's token, which writeback cannot revoke; sign out at the identity provider, or name a wbt1 token id",
                ));
            }
            caller.token_id.clone()
        } else {
            id.trim().to_owned()
        };
        let store = &self.cp.store;
        let not_found = || status(ReasonCode::NotFound, format!("no token {id}"));
        let row = store
            .get_api_token(&caller.tenant, &id)
            .await
            .map_err(store_status)?
            .ok_or_else(not_found)?;
        if caller.role != store::Role::GlobalAdmin
            && !row.principal.eq_ignore_ascii_case(&caller.principal)
        {
            // Other principals' tokens are not even acknowledged to exist.
            return Err(not_found());
        }
        store
            .revoke_api_token(&caller.tenant, &id)
            .await
            .map_err(store_status)?;
        let row = store
            .get_api_token(&caller.tenant, &id)
            .await
            .map_err(store_status)?
            .ok_or_else(not_found)?;
        tracing::info!(tenant = %caller.tenant, by = %caller.principal, token_id = %id,
            principal = %row.principal, "api token revoked");
        Ok(Response::new(token_pb(row)))
    }
}

#[cfg(test)]
mod tests {
    use super::version_at_least;

    #[test]
    fn versions_compare_numerically_and_pre_releases_are_older() {
        assert!(version_at_least("0.10.0", "0.2.0"));
        assert!(version_at_least("0.2.0", "0.2.0"));
        assert!(version_at_least("0.2", "0.2.0"));
        assert!(version_at_least("v1.0.0", "0.2.0"));
        assert!(version_at_least("0.2.0+build.5", "0.2.0"));
        assert!(!version_at_least("0.2.0-rc1", "0.2.0"));
        assert!(!version_at_least("0.1.9", "0.2.0"));
        assert!(!version_at_least("", "0.1.0"));
        assert!(!version_at_least("latest", "0.1.0"));
    }
}
