//! The security trail's recorder: refused authentications (a missing,
//! malformed, unknown, expired or revoked bearer token, an identity
//! provider's token refused), password operations the control plane refused
//! (policy, permission, strong sign-in, banned password, throttle),
//! refused enrollments, agents' results refused for their signature (a
//! relay forging or altering an outcome) and result-signing keys a renewal
//! tried to replace, each stored in `security_events` with who (or whom
//! the credential claimed to be), the client app, the target, the reason and
//! the client's address — never the password or the token.
//!
//! The request that is refused never waits for its record: [`SecurityAudit`]
//! hands the event to a bounded queue (`try_send`, so at worst it is
//! dropped and counted) and one background writer finds whom a refused
//! token belongs to (by its hash, its issuer and client, or its enrollment
//! id), applies the rate limit ([`limiter`]: per kind of refusal and per
//! tenant, with a summary row for what was held back) and writes. A failed
//! write costs a log line. The limits are `[security_events]` in the config
//! and hold per control-plane replica.

pub mod limiter;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use writeback_core::ReasonCode;

use crate::auth::Presented;
use crate::config::SecurityEventsConfig;
use crate::store::{Caller, SecurityEvent, Store};
use limiter::Limiter;

/// Longest text kept from a refused request's claims or fields.
const MAX_TEXT_CHARS: usize = 256;

/// How often the writer checks whether the window ended.
const TICK: Duration = Duration::from_secs(1);

/// How often events past the retention period are deleted.
const PURGE_EVERY_MS: i64 = 3_600_000;

/// Kinds of security event.
pub mod kind {
    /// A request's credential was refused.
    pub const AUTHENTICATION_FAILED: &str = "authentication_failed";
    /// The control plane refused a password operation.
    pub const OPERATION_REFUSED: &str = "operation_refused";
    /// An agent's enrollment was refused.
    pub const ENROLLMENT_REFUSED: &str = "enrollment_refused";
    /// A result was refused: not signed with the result-signing key the
    /// control plane holds for the agent it names.
    pub const RESULT_REFUSED: &str = "result_refused";
    /// A renewal brought another result-signing key than the one recorded;
    /// the recorded one stays.
    pub const RESULT_KEY_REFUSED: &str = "result_key_refused";
    /// A certificate renewal was refused: the agent presented a
    /// certificate a renewal had superseded (an old copy of its key).
    pub const RENEWAL_REFUSED: &str = "renewal_refused";
    /// The recorder's queue was full; `suppressed` says how many were lost.
    pub const EVENTS_DROPPED: &str = "events_dropped";
    pub use super::limiter::SUPPRESSED_KIND as EVENTS_SUPPRESSED;
}

/// Whom an event concerns, when the writer still has to find it.
#[derive(Debug)]
enum Find {
    Nothing,
    ApiToken(String),
    Client { issuer: String, client_id: String },
    EnrollmentToken(String),
}

#[derive(Debug)]
enum Msg {
    Event(Box<(SecurityEvent, Find)>),
    Flush {
        end_window: bool,
        done: oneshot::Sender<()>,
    },
}

/// A cheap-to-clone handle on the recorder; the writer stops when the last
/// handle is dropped (writing what it held back first).
#[derive(Debug, Clone)]
pub struct SecurityAudit {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
    store: Store,
}

/// Text from a request, made safe to store: control characters dropped,
/// at most [`MAX_TEXT_CHARS`].
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT_CHARS)
        .collect()
}

fn source_of(peer: Option<SocketAddr>) -> String {
    peer.map(|p| p.ip().to_string()).unwrap_or_default()
}

impl SecurityAudit {
    /// Starts the writer on the current runtime.
    pub fn start(store: Store, config: &SecurityEventsConfig) -> SecurityAudit {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            limiter: Limiter::new(
                i64::try_from(config.window_seconds.saturating_mul(1000)).unwrap_or(i64::MAX),
                config.per_key_per_window,
                config.per_tenant_per_window,
                store.now_ms(),
            ),
            retention_ms: i64::try_from(config.retention_days.saturating_mul(86_400_000))
                .unwrap_or(i64::MAX),
            last_purge_ms: i64::MIN,
            dropped: dropped.clone(),
            store: store.clone(),
        };
        tokio::spawn(writer.run(rx));
        SecurityAudit { tx, dropped, store }
    }

    fn send(&self, event: SecurityEvent, find: Find) {
        match self.tx.try_send(Msg::Event(Box::new((event, find)))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "the security trail's queue is full; events are dropped and counted"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("the security trail's writer stopped; an event was not recorded");
            }
        }
    }

    /// A request's credential was refused with `reason` and `message`.
    pub fn authentication_failed(
        &self,
        presented: Presented,
        reason: ReasonCode,
        message: &str,
        peer: Option<SocketAddr>,
    ) {
        let mut e = SecurityEvent {
            at_ms: self.store.now_ms(),
            kind: kind::AUTHENTICATION_FAILED.into(),
            reason_code: reason.as_str().into(),
            source: source_of(peer),
            message: clean(message),
            details: serde_json::json!({}),
            ..SecurityEvent::default()
        };
        let find = match presented {
            Presented::Missing => {
                e.detail = "token_missing".into();
                Find::Nothing
            }
            Presented::Malformed => {
                e.detail = "token_malformed".into();
                Find::Nothing
            }
            Presented::ApiToken { hash } => {
                e.detail = "token_unknown".into();
                Find::ApiToken(hash)
            }
            Presented::Jwt {
                issuer,
                client_id,
                principal,
            } => {
                e.detail = "oidc_token_refused".into();
                e.principal = clean(&principal);
                e.details = serde_json::json!({
                    "issuer": clean(&issuer),
                    "client_id": clean(&client_id),
                    "principal_claimed": !principal.is_empty(),
                });
                Find::Client {
                    issuer: clean(&issuer),
                    client_id: clean(&client_id),
                }
            }
        };
        self.send(e, find);
    }

    /// The control plane refused `caller`'s `operation` on `target` with
    /// `reason`; `detail` names the check (`policy`, `banned_password`,
    /// `throttle`). `message` must not quote the password.
    #[allow(clippy::too_many_arguments)]
    pub fn operation_refused(
        &self,
        caller: &Caller,
        operation: &str,
        target: &str,
        reason: ReasonCode,
        detail: &str,
        message: &str,
        peer: Option<SocketAddr>,
    ) {
        let e = SecurityEvent {
            tenant: caller.tenant.clone(),
            at_ms: self.store.now_ms(),
            kind: kind::OPERATION_REFUSED.into(),
            reason_code: reason.as_str().into(),
            detail: detail.into(),
            principal: caller.principal.clone(),
            client_app: caller.client_app.as_str().into(),
            target: clean(target),
            operation: operation.into(),
            source: source_of(peer),
            message: clean(message),
            details: serde_json::json!({
                "role": caller.role.as_str(),
                "sign_in": caller.sign_in.as_str(),
                "token_id": caller.token_id,
            }),
            ..SecurityEvent::default()
        };
        self.send(e, Find::Nothing);
    }

    /// An enrollment was refused with `reason`; `token_id` is the enrollment
    /// token's public id when it parsed.
    pub fn enrollment_refused(
        &self,
        token_id: Option<&str>,
        reason: ReasonCode,
        message: &str,
        peer: Option<SocketAddr>,
    ) {
        let e = SecurityEvent {
            at_ms: self.store.now_ms(),
            kind: kind::ENROLLMENT_REFUSED.into(),
            reason_code: reason.as_str().into(),
            source: source_of(peer),
            message: clean(message),
            details: serde_json::json!({ "token_id": token_id.map(clean) }),
            ..SecurityEvent::default()
        };
        let find = token_id.map_or(Find::Nothing, |id| Find::EnrollmentToken(clean(id)));
        self.send(e, find);
    }

    /// The result `claimed` (as a relay delivered it) for operation `op`
    /// through `relay` was refused: `detail` names why (`unsigned`,
    /// `unknown_key`, `bad_signature`, `unregistered_agent`,
    /// `revoked_agent`, `unknown_agent`, `wrong_agent`, `wrong_operation`,
    /// `no_result`).
    pub fn result_refused(
        &self,
        op: &writeback_proto::v1::OperationRequest,
        claimed: Option<&writeback_proto::v1::OperationResult>,
        relay: &str,
        detail: &str,
        message: &str,
    ) {
        let agent = claimed.map(|r| clean(&r.agent_id)).unwrap_or_default();
        let kind = writeback_core::OperationKind::from_wire(op.kind)
            .map_or("", writeback_core::OperationKind::as_str);
        let query = match writeback_proto::v1::OperationKind::try_from(op.kind) {
            Ok(writeback_proto::v1::OperationKind::OutcomeQuery) => "outcome_query",
            Ok(writeback_proto::v1::OperationKind::PolicyQuery) => "policy_query",
            Ok(writeback_proto::v1::OperationKind::DirectorySearch) => "directory_search",
            Ok(writeback_proto::v1::OperationKind::UserLookup) => "user_lookup",
            _ => kind,
        };
        let e = SecurityEvent {
            tenant: op.tenant.clone(),
            at_ms: self.store.now_ms(),
            kind: kind::RESULT_REFUSED.into(),
            reason_code: ReasonCode::ResultUnauthenticated.as_str().into(),
            detail: detail.into(),
            principal: if agent.is_empty() {
                String::new()
            } else {
                format!("agent:{agent}")
            },
            client_app: "agent".into(),
            target: op
                .target
                .as_ref()
                .and_then(writeback_core::operation::user_ref_key)
                .map(|t| clean(&t))
                .unwrap_or_default(),
            operation: query.into(),
            source: clean(relay),
            message: clean(message),
            details: serde_json::json!({
                "operation_id": clean(&op.operation_id),
                "domain": clean(&op.domain),
                "claimed_reason_code": claimed
                    .and_then(|r| r.outcome.as_ref())
                    .map(|o| clean(&o.reason_code)),
                "claimed_applied": claimed.and_then(|r| r.outcome.as_ref()).map(|o| o.applied),
                "claimed_ledger_state": claimed.map(|r| r.ledger_state),
                "signing_key_id": claimed.map(|r| clean(&r.signing_key_id)),
            }),
            ..SecurityEvent::default()
        };
        self.send(e, Find::Nothing);
    }

    /// Agent `agent_id`'s renewal brought result-signing key `offered_key_id`
    /// while another is recorded; the recorded one stays.
    pub fn result_key_refused(
        &self,
        tenant: &str,
        domain: &str,
        agent_id: &str,
        offered_key_id: &str,
        peer: Option<SocketAddr>,
    ) {
        let e = SecurityEvent {
            tenant: tenant.to_owned(),
            at_ms: self.store.now_ms(),
            kind: kind::RESULT_KEY_REFUSED.into(),
            reason_code: ReasonCode::ResultUnauthenticated.as_str().into(),
            detail: "key_conflict".into(),
            principal: format!("agent:{}", clean(agent_id)),
            client_app: "agent".into(),
            source: source_of(peer),
            message: "a renewal brought another result-signing key than the one recorded; \
                      the recorded key stays (enroll the agent again to change it)"
                .into(),
            details: serde_json::json!({
                "domain": clean(domain),
                "offered_key_id": clean(offered_key_id),
            }),
            ..SecurityEvent::default()
        };
        self.send(e, Find::Nothing);
    }

    /// Agent `agent_id` asked to renew with a certificate a renewal had
    /// superseded (`presented`, a fingerprint): refused with
    /// `CERTIFICATE_SUPERSEDED`.
    pub fn renewal_refused(
        &self,
        tenant: &str,
        domain: &str,
        agent_id: &str,
        message: &str,
        presented: &str,
        peer: Option<SocketAddr>,
    ) {
        let e = SecurityEvent {
            tenant: tenant.to_owned(),
            at_ms: self.store.now_ms(),
            kind: kind::RENEWAL_REFUSED.into(),
            reason_code: ReasonCode::CertificateSuperseded.as_str().into(),
            principal: format!("agent:{}", clean(agent_id)),
            client_app: "agent".into(),
            source: source_of(peer),
            message: clean(message),
            details: serde_json::json!({
                "domain": clean(domain),
                "presented_cert_fingerprint": clean(presented),
            }),
            ..SecurityEvent::default()
        };
        self.send(e, Find::Nothing);
    }

    /// Waits until every event handed over before this call is written (and
    /// the summaries of a window that ended); with `end_window`, writes the
    /// current window's summaries now too (before shutting down). For tests
    /// and shutdown: requests never call it.
    pub async fn flush(&self, end_window: bool) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush { end_window, done }).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// The background writer.
struct Writer {
    limiter: Limiter,
    retention_ms: i64,
    last_purge_ms: i64,
    dropped: Arc<AtomicU64>,
    store: Store,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    None => {
                        self.summaries(true).await;
                        return;
                    }
                    Some(Msg::Event(boxed)) => {
                        let (event, find) = *boxed;
                        self.summaries(false).await;
                        let event = self.attribute(event, find).await;
                        if self.limiter.admit(&event) {
                            self.write(&event).await;
                        }
                    }
                    Some(Msg::Flush { end_window, done }) => {
                        self.summaries(end_window).await;
                        let _ = done.send(());
                    }
                },
                _ = tick.tick() => {
                    self.summaries(false).await;
                    self.purge().await;
                }
            }
        }
    }

    /// Writes the summaries of a window that ended (or of the current one,
    /// with `now`) and the count of dropped events.
    async fn summaries(&mut self, now: bool) {
        let rows = if now {
            Some(self.limiter.finish())
        } else {
            self.limiter.roll(self.store.now_ms())
        };
        let Some(rows) = rows else {
            return;
        };
        for row in rows {
            self.write(&row).await;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let at_ms = self.store.now_ms();
            self.write(&SecurityEvent {
                at_ms,
                kind: kind::EVENTS_DROPPED.into(),
                message: format!(
                    "{dropped} security events were not recorded: the recorder's queue was full \
                     (security_events.queue_capacity)"
                ),
                suppressed: i64::try_from(dropped).unwrap_or(i64::MAX),
                details: serde_json::json!({}),
                ..SecurityEvent::default()
            })
            .await;
        }
    }

    /// Fills in the tenant (and what the store knows) of a refused token.
    async fn attribute(&self, mut e: SecurityEvent, find: Find) -> SecurityEvent {
        let store = &self.store;
        match find {
            Find::Nothing => {}
            Find::ApiToken(hash) => match store.api_token_by_hash(&hash).await {
                Ok(Some((tenant, token))) => {
                    let now = e.at_ms;
                    e.detail = if token.revoked_at_ms.is_some() {
                        "token_revoked"
                    } else if token.expires_at_ms.is_some_and(|x| x <= now) {
                        "token_expired"
                    } else {
                        "token_refused"
                    }
                    .into();
                    e.tenant = tenant;
                    e.principal = token.principal;
                    e.client_app = token.client_app.as_str().into();
                    e.details = serde_json::json!({ "token_id": token.token_id });
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "cannot look up a refused token"),
            },
            Find::Client { issuer, client_id } if !issuer.is_empty() && !client_id.is_empty() => {
                match store.client_by_issuer_url(&issuer, &client_id).await {
                    Ok(Some((tenant, _, client))) => {
                        e.tenant = tenant;
                        e.client_app = client.client_app.as_str().into();
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot look up a refused token's client")
                    }
                }
            }
            Find::Client { .. } => {}
            Find::EnrollmentToken(id) => match store.enrollment_token_owner(&id).await {
                Ok(Some((tenant, domain))) => {
                    e.tenant = tenant;
                    e.details = serde_json::json!({ "token_id": id, "domain": domain });
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "cannot look up a refused enrollment token")
                }
            },
        }
        e
    }

    async fn write(&self, e: &SecurityEvent) {
        match self.store.record_security_event(e).await {
            Ok(_) => tracing::info!(tenant = %e.tenant, kind = %e.kind, reason = %e.reason_code,
                detail = %e.detail, principal = %e.principal, source = %e.source,
                suppressed = e.suppressed, "security event"),
            Err(err) => tracing::warn!(tenant = %e.tenant, kind = %e.kind, reason = %e.reason_code,
                error = %err, "a security event could not be recorded"),
        }
    }

    /// Deletes events past the retention period, at most once an hour.
    async fn purge(&mut self) {
        let now = self.store.now_ms();
        if self.retention_ms == 0 || now.saturating_sub(self.last_purge_ms) < PURGE_EVERY_MS {
            return;
        }
        self.last_purge_ms = now;
        match self
            .store
            .purge_security_events(now.saturating_sub(self.retention_ms))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "security events past their retention deleted"),
            Err(err) => tracing::warn!(error = %err, "cannot delete old security events"),
        }
    }
}
