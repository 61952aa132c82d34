//! API-level test rig: a control plane served in-process on a port-0 TLS
//! listener, over a [`TestDb`] (SQLite or PostgreSQL), with an injected
//! [`Clock`], and a [`FakeRelay`] in place of the relays: it records every
//! operation the control plane dispatches, answers as told (refuse with
//! `NO_AGENT_ONLINE`, answer, or hold until released), reports fake agents
//! online and answers health probes with the reports a test sets. Its
//! answers are signed, as an agent's are, with one result-signing key that
//! [`TestCp::enroll_agent`] registers for every agent it enrolls; it answers
//! as the last agent enrolled (or the agent a query is pinned to). It can
//! also forward to a real relay ([`Mode::Forward`]) and forge results
//! ([`Mode::Forge`]), lie about what it forwarded ([`Mode::Lie`]: a
//! refusal of its own after the agent applied the write) or deliver one
//! write to every agent of its route ([`Mode::Duplicate`]), playing a
//! compromised relay. No Samba, no real agent
//! unless a test adds them: what is tested is the control plane's own
//! behaviour.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{Semaphore, broadcast, watch};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use writeback_control_plane::dispatcher::Dispatcher;
use writeback_control_plane::store::{ClientApp, Clock, NewOperation, Role, Store};
use writeback_control_plane::{ControlPlane, ControlPlaneConfig, bootstrap};
use writeback_core::{ReasonCode, failure_of, status};
use writeback_identity::{Ca, tls, transport};
use writeback_proto::v1::{self as pb, relay_dispatch_client, relay_dispatch_server};

use crate::harness::TestDb;

/// The tenant every rig serves.
pub const TENANT: &str = "t1";
/// The global administrator `init` creates (client app portal).
pub const ADMIN: &str = "admin@contoso.test";
/// How long a test waits for something asynchronous.
pub const WAIT: Duration = Duration::from_secs(20);

fn localhost() -> Vec<IpAddr> {
    vec![IpAddr::from([127, 0, 0, 1])]
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Adds the bearer token to every request.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.0 {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Bearer>;

/// A gRPC client of the control plane holding one bearer token.
#[derive(Clone)]
pub struct Client {
    /// The TLS channel (for services without a bearer, e.g. health).
    pub channel: Channel,
    bearer: Bearer,
}

impl Client {
    /// SettingsService.
    pub fn settings(&self) -> pb::settings_service_client::SettingsServiceClient<Svc> {
        pb::settings_service_client::SettingsServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }
    /// DomainService.
    pub fn domains(&self) -> pb::domain_service_client::DomainServiceClient<Svc> {
        pb::domain_service_client::DomainServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }
    /// AgentService.
    pub fn agents(&self) -> pb::agent_service_client::AgentServiceClient<Svc> {
        pb::agent_service_client::AgentServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }
    /// EnrollmentService.
    pub fn enrollment(&self) -> pb::enrollment_service_client::EnrollmentServiceClient<Svc> {
        pb::enrollment_service_client::EnrollmentServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }
    /// PasswordService.
    pub fn passwords(&self) -> pb::password_service_client::PasswordServiceClient<Svc> {
        pb::password_service_client::PasswordServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }
    /// AuditService.
    pub fn audit(&self) -> pb::audit_service_client::AuditServiceClient<Svc> {
        pb::audit_service_client::AuditServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }
    /// TokenService.
    pub fn tokens(&self) -> pb::token_service_client::TokenServiceClient<Svc> {
        pb::token_service_client::TokenServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }

    /// Resets `upn`'s password; the reason code of the answer (`OK` or the refusal).
    pub async fn reset(&self, upn: &str, password: &str) -> Result<String, ReasonCode> {
        self.reset_with_id(upn, password, "").await
    }

    /// Resets with a caller-chosen operation id; returns the operation id.
    pub async fn reset_with_id(
        &self,
        upn: &str,
        password: &str,
        operation_id: &str,
    ) -> Result<String, ReasonCode> {
        self.passwords()
            .reset_password(pb::ResetPasswordRequest {
                user: Some(upn_ref(upn)),
                new_password: password.into(),
                operation_id: operation_id.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().operation_id)
            .map_err(|s| failure_of(&s).reason)
    }

    /// Turns the three toggles on or off.
    pub async fn set_all_toggles(&self, on: bool) {
        self.settings()
            .update_settings(pb::UpdateSettingsRequest {
                cloud_sync_writeback: Some(on),
                sspr_writeback: Some(on),
                unlock_without_reset: Some(on),
            })
            .await
            .expect("settings update");
    }

    /// Registers `domain` (its own UPN suffix).
    pub async fn add_domain(&self, domain: &str) {
        self.domains()
            .add_domain(pb::AddDomainRequest {
                name: domain.into(),
                upn_suffixes: vec![],
            })
            .await
            .expect("add domain");
    }
}

/// A `UserRef` by UPN.
pub fn upn_ref(upn: &str) -> pb::UserRef {
    pb::UserRef {
        by: Some(pb::user_ref::By::Upn(upn.into())),
    }
}

/// The reason code a status carries in its standard `google.rpc.ErrorInfo`
/// detail, read with tonic-types' decoder; panics when the details are missing
/// or not in writeback's error domain (every refusal must carry its code there).
pub fn reason_in_details(s: &Status) -> ReasonCode {
    use tonic_types::StatusExt;
    let info = s
        .get_error_details()
        .error_info()
        .cloned()
        .unwrap_or_else(|| panic!("status without google.rpc.ErrorInfo details: {s:?}"));
    assert_eq!(info.domain, "writeback.v1", "{s:?}");
    ReasonCode::parse(&info.reason)
        .unwrap_or_else(|| panic!("unknown reason code {:?} in {s:?}", info.reason))
}

/// What the fake relay does with a dispatched operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuses it with this code, as a relay without an agent of the domain does.
    Refuse(ReasonCode),
    /// Answers as the agent would, with this reason code (`Ok` = applied).
    Answer(ReasonCode),
    /// Holds it until [`FakeRelay::release`], then answers `OK`.
    Hold,
    /// Forwards everything to the real relay set with [`FakeRelay::forward_to`].
    Forward,
    /// Answers `OK`, applied, without forwarding: a compromised relay.
    Forge(Forgery),
    /// Forwards every write to the real relay, pinned to the agent the
    /// control plane bound it to (or, unbound, to the next agent of
    /// [`FakeRelay::set_route`] in turn), and then refuses it with this
    /// reason of its own, unsigned; queries are forwarded as they are.
    Lie(ReasonCode),
    /// Forwards every write pinned to the agent the control plane bound it
    /// to (unbound: the first of the route) and the same signed request,
    /// at once, pinned to every other agent of the route; answers the
    /// first one's result. The others' answers are in
    /// [`FakeRelay::duplicates`].
    Duplicate,
}

/// How a compromised relay forges an `OK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgery {
    /// No signature at all.
    Unsigned,
    /// Signed with a key of the relay's own.
    OwnKey,
    /// Signed with the fake agents' key (another agent's, for a real agent).
    FakeAgentKey,
    /// The last genuine result (signed by the agent it names) moved onto
    /// this operation.
    Replay,
}

/// A fake agent the relay reports.
#[derive(Debug, Clone)]
pub struct FakeAgent {
    /// Agent id (as enrolled).
    pub agent_id: String,
    /// Domain.
    pub domain: String,
    /// What it answers to a health probe; `None` does not answer.
    pub health: Option<pb::HealthReport>,
}

struct RelayState {
    mode: Mutex<Mode>,
    dispatched: Mutex<Vec<pb::OperationRequest>>,
    count: watch::Sender<usize>,
    release: Semaphore,
    agents: Mutex<Vec<FakeAgent>>,
    presence: broadcast::Sender<pb::PresenceReport>,
    probes: std::sync::atomic::AtomicUsize,
    /// Signs the fake agents' answers.
    signer: writeback_envelope::results::ResultSigner,
    /// Whom unpinned answers name.
    answer_as: Mutex<String>,
    /// The real relay of [`Mode::Forward`].
    forward: Mutex<Option<relay_dispatch_client::RelayDispatchClient<Channel>>>,
    /// The last result forwarded from the real relay.
    last_genuine: Mutex<Option<pb::OperationResult>>,
    /// The agents [`Mode::Lie`] and [`Mode::Duplicate`] route to.
    route: Mutex<Vec<String>>,
    /// The next of them [`Mode::Lie`] takes.
    turn: std::sync::atomic::AtomicUsize,
    /// The answers (or refusals) of the copies [`Mode::Duplicate`] sent:
    /// (agent, reason code).
    duplicates: Mutex<Vec<(String, String)>>,
}

/// A relay stand-in on a TLS listener with a certificate from the tenant CA.
#[derive(Clone)]
pub struct FakeRelay {
    state: Arc<RelayState>,
}

const RELAY_ID: &str = "fake-relay";

impl FakeRelay {
    /// Health probes (`ProbeHealth` calls) received so far.
    pub fn probes(&self) -> usize {
        self.state.probes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The fake agents' result-signing public key.
    pub fn result_key(&self) -> Vec<u8> {
        self.state.signer.public_key()
    }

    /// The agent unpinned answers name (the last enrolled).
    pub fn answering_as(&self) -> String {
        self.state.answer_as.lock().unwrap().clone()
    }

    /// Answers (unpinned) as `agent_id` from now on.
    pub fn answer_as(&self, agent_id: &str) {
        *self.state.answer_as.lock().unwrap() = agent_id.to_owned();
    }

    /// Forwards to the relay at `url` in [`Mode::Forward`], with the
    /// tenant's control-plane identity from `ca`.
    pub fn forward_to(&self, ca: &Ca, url: &str) {
        let id = writeback_identity::SpiffeId::ControlPlane {
            tenant: TENANT.to_owned(),
        };
        let (chain, key) = ca.issue_service(&id, &[], &[]).unwrap();
        let config = tls::relay_client_config(
            tls::roots_from_pem(ca.cert_pem()).unwrap(),
            Some((&chain, &key)),
            TENANT,
        )
        .unwrap();
        let channel = transport::channel(url, config).unwrap();
        *self.state.forward.lock().unwrap() =
            Some(relay_dispatch_client::RelayDispatchClient::new(channel));
    }

    /// The agents [`Mode::Lie`] and [`Mode::Duplicate`] deliver to.
    pub fn set_route(&self, agents: &[&str]) {
        *self.state.route.lock().unwrap() = agents.iter().map(|a| (*a).to_owned()).collect();
    }

    /// What the copies [`Mode::Duplicate`] sent were answered: (agent,
    /// reason code or the relay's refusal).
    pub fn duplicates(&self) -> Vec<(String, String)> {
        self.state.duplicates.lock().unwrap().clone()
    }

    /// Sets what happens to the next dispatched operations.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Every operation dispatched so far.
    pub fn dispatched(&self) -> Vec<pb::OperationRequest> {
        self.state.dispatched.lock().unwrap().clone()
    }

    /// Ids of the operations dispatched so far.
    pub fn dispatched_ids(&self) -> Vec<String> {
        self.dispatched()
            .into_iter()
            .map(|o| o.operation_id)
            .collect()
    }

    /// Waits until at least `n` operations were dispatched.
    pub async fn wait_dispatched(&self, n: usize) {
        let mut rx = self.state.count.subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} operations reached the relay"))
            .unwrap();
    }

    /// Lets one held operation answer.
    pub fn release(&self) {
        self.state.release.add_permits(1);
    }

    /// Reports `agent` connected (or updates its health report).
    pub fn connect(&self, agent: FakeAgent) {
        let mut agents = self.state.agents.lock().unwrap();
        agents.retain(|a| a.agent_id != agent.agent_id);
        let _ = self
            .state
            .presence
            .send(presence(&agent, pb::PresenceEvent::Connected));
        agents.push(agent);
    }

    /// Reports `agent_id` disconnected.
    pub fn disconnect(&self, agent_id: &str) {
        let mut agents = self.state.agents.lock().unwrap();
        if let Some(a) = agents.iter().find(|a| a.agent_id == agent_id) {
            let _ = self
                .state
                .presence
                .send(presence(a, pb::PresenceEvent::Disconnected));
        }
        agents.retain(|a| a.agent_id != agent_id);
    }

    /// Starts a fake relay on `listener` with a relay certificate of the
    /// tenant from `ca` (the dispatcher dials only relays of the tenant).
    pub fn start(ca: &Ca, listener: tokio::net::TcpListener) -> FakeRelay {
        let id = writeback_identity::SpiffeId::Relay {
            tenant: TENANT.to_owned(),
            relay_id: "fake-relay".to_owned(),
        };
        let (chain, key) = ca
            .issue_service(&id, &["localhost".to_owned()], &localhost())
            .unwrap();
        let config = tls::server_config(&chain, &key, None).unwrap();
        let (presence, _) = broadcast::channel(64);
        let relay = FakeRelay {
            state: Arc::new(RelayState {
                mode: Mutex::new(Mode::Refuse(ReasonCode::NoAgentOnline)),
                dispatched: Mutex::new(Vec::new()),
                count: watch::channel(0).0,
                release: Semaphore::new(0),
                agents: Mutex::new(Vec::new()),
                presence,
                probes: Default::default(),
                signer: writeback_envelope::results::ResultSigner::generate()
                    .unwrap()
                    .0,
                answer_as: Mutex::new("agent-fake".into()),
                forward: Mutex::new(None),
                last_genuine: Mutex::new(None),
                route: Mutex::new(Vec::new()),
                turn: Default::default(),
                duplicates: Mutex::new(Vec::new()),
            }),
        };
        let incoming = transport::tls_incoming(listener, config);
        let service = relay_dispatch_server::RelayDispatchServer::new(relay.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        relay
    }
}

/// A reset, change or unlock (not a query).
fn is_write(op: &pb::OperationRequest) -> bool {
    writeback_core::OperationKind::from_wire(op.kind).is_some()
}

fn presence(a: &FakeAgent, event: pb::PresenceEvent) -> pb::PresenceReport {
    pb::PresenceReport {
        relay_id: RELAY_ID.into(),
        identity: Some(pb::AgentIdentity {
            tenant: TENANT.into(),
            domain: a.domain.clone(),
            agent_id: a.agent_id.clone(),
        }),
        event: event as i32,
        agent_version: a
            .health
            .as_ref()
            .map(|h| h.agent_version.clone())
            .unwrap_or_default(),
        observed_at: None,
    }
}

/// The answer of fake agent `agent` to `op`, signed with `signer`
/// (unsigned without one).
fn outcome(
    op: &pb::OperationRequest,
    reason: ReasonCode,
    agent: &str,
    signer: Option<&writeback_envelope::results::ResultSigner>,
) -> pb::DispatchResponse {
    let mut result = pb::OperationResult {
        operation_id: op.operation_id.clone(),
        outcome: Some(pb::OperationOutcome {
            reason_code: reason.as_str().into(),
            message: format!("fake agent answered {reason}"),
            applied: reason == ReasonCode::Ok,
        }),
        agent_id: agent.into(),
        agent_duration_ms: 3,
        policy_report: None,
        directory_duration_ms: 2,
        dc_url: "ldaps://dc-fake.test".into(),
        ..Default::default()
    };
    if op.kind == pb::OperationKind::OutcomeQuery as i32 {
        result.ledger_state = pb::LedgerState::Finished as i32;
    }
    if let Some(s) = signer {
        s.sign(op, &mut result);
    }
    pb::DispatchResponse {
        result: Some(result),
        relay_id: RELAY_ID.into(),
        relay_duration_ms: 4,
    }
}

type PresenceStream = Pin<Box<dyn Stream<Item = Result<pb::PresenceReport, Status>> + Send>>;

#[tonic::async_trait]
impl relay_dispatch_server::RelayDispatch for FakeRelay {
    async fn dispatch(
        &self,
        req: Request<pb::DispatchRequest>,
    ) -> Result<Response<pb::DispatchResponse>, Status> {
        let req = req.into_inner();
        let op = req.operation.clone().unwrap_or_default();
        if op.kind == pb::OperationKind::UserLookup as i32 {
            // The throttle's "whom does this spelling name?" before a reset:
            // no fake agent knows anyone, so every spelling stays its own
            // bucket, and the tests count, hold and forge operations only.
            let agent = self.state.answer_as.lock().unwrap().clone();
            let signer = Some(&self.state.signer);
            return Ok(Response::new(outcome(
                &op,
                ReasonCode::UserNotFound,
                &agent,
                signer,
            )));
        }
        let mode = *self.state.mode.lock().unwrap();
        self.state.dispatched.lock().unwrap().push(op.clone());
        self.state.count.send_modify(|c| *c += 1);
        let agent = if req.agent_id.is_empty() {
            self.state.answer_as.lock().unwrap().clone()
        } else {
            req.agent_id.clone()
        };
        let signer = Some(&self.state.signer);
        match mode {
            Mode::Refuse(code) => Err(status(code, "the fake relay refuses")),
            Mode::Answer(code) => Ok(Response::new(outcome(&op, code, &agent, signer))),
            Mode::Hold => {
                self.state.release.acquire().await.unwrap().forget();
                Ok(Response::new(outcome(&op, ReasonCode::Ok, &agent, signer)))
            }
            Mode::Forward => {
                let client = self.state.forward.lock().unwrap().clone();
                let answer = client.expect("forward_to first").dispatch(req).await?;
                *self.state.last_genuine.lock().unwrap() = answer.get_ref().result.clone();
                Ok(answer)
            }
            Mode::Lie(_) | Mode::Duplicate if !is_write(&op) => {
                let client = self.state.forward.lock().unwrap().clone();
                client.expect("forward_to first").dispatch(req).await
            }
            Mode::Lie(code) => {
                let client = self.state.forward.lock().unwrap().clone();
                let mut req = req;
                if req.agent_id.is_empty() {
                    let route = self.state.route.lock().unwrap().clone();
                    let turn = self
                        .state
                        .turn
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    req.agent_id = route[turn % route.len()].clone();
                }
                let forwarded = client.expect("forward_to first").dispatch(req).await;
                tracing::info!(reason = %code, applied = ?forwarded.as_ref().map(|a| a.get_ref().result.clone()),
                    "the lying relay forwarded a write and answers a refusal of its own");
                Err(status(
                    code,
                    "the operation expired before the relay could route it; nothing was applied",
                ))
            }
            Mode::Duplicate => {
                let client = self
                    .state
                    .forward
                    .lock()
                    .unwrap()
                    .clone()
                    .expect("forward_to first");
                let route = self.state.route.lock().unwrap().clone();
                let mut first = req.clone();
                if first.agent_id.is_empty() {
                    first.agent_id = route[0].clone();
                }
                let bound = first.agent_id.clone();
                let copies = route.iter().filter(|a| **a != bound).map(|other| {
                    let mut copy = req.clone();
                    copy.agent_id = other.clone();
                    let mut client = client.clone();
                    async move {
                        let answer = match client.dispatch(copy).await {
                            Ok(r) => r
                                .into_inner()
                                .result
                                .and_then(|r| r.outcome)
                                .map(|o| o.reason_code)
                                .unwrap_or_default(),
                            Err(s) => format!("relay: {}", failure_of(&s).reason),
                        };
                        (other.clone(), answer)
                    }
                });
                let mut primary = client.clone();
                let (answer, copies) =
                    tokio::join!(primary.dispatch(first), futures::future::join_all(copies));
                self.state.duplicates.lock().unwrap().extend(copies);
                answer
            }
            Mode::Forge(forgery) => {
                // Always in the name of the agent it answers as (a query
                // pinned to another agent included).
                let agent = self.state.answer_as.lock().unwrap().clone();
                let mut answer = outcome(&op, ReasonCode::Ok, &agent, None);
                let result = answer.result.as_mut().unwrap();
                match forgery {
                    Forgery::Unsigned => {}
                    Forgery::OwnKey => {
                        let (own, _) =
                            writeback_envelope::results::ResultSigner::generate().unwrap();
                        own.sign(&op, result);
                    }
                    Forgery::FakeAgentKey => self.state.signer.sign(&op, result),
                    Forgery::Replay => {
                        let genuine = self.state.last_genuine.lock().unwrap().clone();
                        let mut replayed = genuine.expect("a genuine result first");
                        replayed.operation_id = op.operation_id.clone();
                        replayed.outcome = result.outcome.clone();
                        replayed.ledger_state = result.ledger_state;
                        *result = replayed;
                    }
                }
                Ok(Response::new(answer))
            }
        }
    }

    async fn probe_health(
        &self,
        req: Request<pb::ProbeHealthRequest>,
    ) -> Result<Response<pb::ProbeHealthResponse>, Status> {
        let r = req.into_inner();
        self.state
            .probes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let agents = self
            .state
            .agents
            .lock()
            .unwrap()
            .iter()
            .filter(|a| r.domain.is_empty() || a.domain == r.domain)
            .map(|a| pb::AgentHealth {
                identity: presence(a, pb::PresenceEvent::Connected).identity,
                report: a.health.clone(),
                reason_code: if a.health.is_some() {
                    String::new()
                } else {
                    ReasonCode::Timeout.as_str().into()
                },
            })
            .collect();
        Ok(Response::new(pb::ProbeHealthResponse { agents }))
    }

    type WatchPresenceStream = PresenceStream;

    async fn watch_presence(
        &self,
        _req: Request<pb::WatchPresenceRequest>,
    ) -> Result<Response<PresenceStream>, Status> {
        let rx = self.state.presence.subscribe();
        let snapshot: Vec<_> = self
            .state
            .agents
            .lock()
            .unwrap()
            .iter()
            .map(|a| Ok(presence(a, pb::PresenceEvent::Connected)))
            .collect();
        let live = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(r) => return Some((Ok(r), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(
            futures::stream::iter(snapshot).chain(live),
        )))
    }

    async fn set_revoked_agents(
        &self,
        req: Request<pb::SetRevokedAgentsRequest>,
    ) -> Result<Response<pb::SetRevokedAgentsResponse>, Status> {
        Ok(Response::new(pb::SetRevokedAgentsResponse {
            tunnels_closed: 0,
            version: req.into_inner().version,
        }))
    }
}

/// Knobs of a rig.
#[derive(Debug, Clone)]
pub struct Options {
    /// `throttle_per_user_per_hour`.
    pub throttle_per_user_per_hour: u32,
    /// `min_agent_version`.
    pub min_agent_version: String,
    /// `[notify]` (off by default).
    pub notify: writeback_control_plane::config::NotifyConfig,
    /// `[security_events]`.
    pub security_events: writeback_control_plane::config::SecurityEventsConfig,
    /// `status_health_ttl_seconds`.
    pub status_health_ttl_seconds: u64,
    /// `operation_timeout_seconds`.
    pub operation_timeout_seconds: u64,
    /// `[limits]`.
    pub limits: writeback_control_plane::config::ApiLimitsConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            throttle_per_user_per_hour: 5,
            min_agent_version: "0.1.0".into(),
            notify: Default::default(),
            security_events: Default::default(),
            status_health_ttl_seconds: writeback_control_plane::health_cache::HEALTH_TTL.as_secs(),
            operation_timeout_seconds: 30,
            limits: Default::default(),
        }
    }
}

/// One control plane serving on its own listener.
pub struct TestCp {
    /// The control plane's state.
    pub cp: Arc<ControlPlane>,
    /// `https://127.0.0.1:port`.
    pub url: String,
    /// The relay it dispatches to.
    pub relay: FakeRelay,
    /// The clock it (and its store) uses.
    pub clock: Clock,
    /// The global administrator's token (client app portal).
    pub admin_token: String,
    /// Temporary directory: the data dir (`cp/`, CA and SQLite file when
    /// the database is not given) and token files.
    pub dir: Arc<tempfile::TempDir>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestCp {
    /// `init`s a tenant on `db` and serves a control plane over it.
    pub async fn start(db: &TestDb, options: Options) -> TestCp {
        writeback_identity::install_crypto_provider();
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let relay_listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let relay_url = format!("https://{}", relay_listener.local_addr().unwrap());
        let config = Self::config(dir.path(), db, &relay_url, &options);
        let token_file = dir.path().join("admin.token");
        bootstrap::init(&config, TENANT, ADMIN, ClientApp::Portal, &token_file)
            .await
            .unwrap();
        let admin_token = std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_owned();
        let ca = Ca::load(&config.data_dir).unwrap();
        let relay = FakeRelay::start(&ca, relay_listener);
        Self::serve(config, relay, Clock::system(), admin_token, dir).await
    }

    /// Another control plane (a replica) on the same database, CA and
    /// relay, with its own listener and its own clock.
    pub async fn replica(&self) -> TestCp {
        Self::serve(
            self.cp.config.clone(),
            self.relay.clone(),
            Clock::system(),
            self.admin_token.clone(),
            self.dir.clone(),
        )
        .await
    }

    /// Stops this control plane and starts a new one on the same database,
    /// CA, relay and clock: a restart.
    pub async fn restart(self) -> TestCp {
        let config = self.cp.config.clone();
        let (relay, clock, token, dir) = (
            self.relay.clone(),
            self.clock.clone(),
            self.admin_token.clone(),
            self.dir.clone(),
        );
        self.stop().await;
        Self::serve(config, relay, clock, token, dir).await
    }

    /// Stops serving and closes the database pool.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(WAIT, task).await;
        }
        self.cp.store.close().await;
    }

    fn config(dir: &Path, db: &TestDb, relay_url: &str, options: &Options) -> ControlPlaneConfig {
        ControlPlaneConfig {
            data_dir: dir.join("cp"),
            database_url: db.url().to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_dns_names: vec!["localhost".into()],
            tls_ip_addresses: localhost(),
            relay_urls: vec![relay_url.to_owned()],
            operation_timeout_seconds: options.operation_timeout_seconds,
            throttle_per_user_per_hour: options.throttle_per_user_per_hour,
            min_agent_version: options.min_agent_version.clone(),
            status_health_ttl_seconds: options.status_health_ttl_seconds,
            notify: options.notify.clone(),
            security_events: options.security_events.clone(),
            limits: options.limits.clone(),
            ..ControlPlaneConfig::default()
        }
    }

    async fn serve(
        config: ControlPlaneConfig,
        relay: FakeRelay,
        clock: Clock,
        admin_token: String,
        dir: Arc<tempfile::TempDir>,
    ) -> TestCp {
        let ca = Arc::new(Ca::load(&config.data_dir).unwrap());
        let store = Store::connect(&config.database_url())
            .await
            .unwrap()
            .with_clock(clock.clone());
        let signer = Arc::new(
            writeback_control_plane::bootstrap::load_signing_key(&config.data_dir).unwrap(),
        );
        let dispatcher = Dispatcher::with_store(
            ca.clone(),
            signer.clone(),
            config.relay_urls.clone(),
            store.clone(),
        );
        let security = writeback_control_plane::security_audit::SecurityAudit::start(
            store.clone(),
            &config.security_events,
        );
        let health = writeback_control_plane::health_cache::TtlCache::new(Duration::from_secs(
            config.status_health_ttl_seconds,
        ));
        let cp = Arc::new(ControlPlane {
            health,
            security,
            store,
            ca,
            signer,
            next_signing_key: None,
            endorsement_chain: Vec::new(),
            dispatcher,
            config,
            metrics: writeback_control_plane::metrics::Metrics::new(),
            flights: Default::default(),
            oidc: writeback_control_plane::oidc::Verifier::new(&Default::default()).unwrap(),
            tracing: writeback_core::trace::Tracing::disabled("writeback-control-plane"),
        });
        cp.report_refused_results();
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (stop, rx) = watch::channel(false);
        let serving = cp.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listener, wait_true(rx))
                .await
                .expect("control plane serves");
        });
        let t = TestCp {
            cp,
            url,
            relay,
            clock,
            admin_token,
            dir,
            stop,
            task: Some(task),
        };
        t.wait_serving().await;
        t
    }

    /// Polls gRPC health until the control plane answers SERVING.
    async fn wait_serving(&self) {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let channel = self.client_with(None).channel;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let answer = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if let Ok(r) = answer
                && r.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the control plane did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The CA certificate file clients trust.
    pub fn ca_file(&self) -> PathBuf {
        self.cp.config.data_dir.join("ca.pem")
    }

    fn client_with(&self, token: Option<&str>) -> Client {
        let config =
            tls::client_config(tls::roots_from_pem(self.cp.ca.cert_pem()).unwrap(), None).unwrap();
        let channel = transport::channel(&self.url, config).unwrap();
        let bearer = Bearer(token.map(|t| MetadataValue::try_from(format!("Bearer {t}")).unwrap()));
        Client { channel, bearer }
    }

    /// A client with `token` (none: anonymous) whose connections come
    /// from `source`, a loopback address of the test's choosing.
    pub fn client_from(&self, token: Option<&str>, source: IpAddr) -> Client {
        let config =
            tls::client_config(tls::roots_from_pem(self.cp.ca.cert_pem()).unwrap(), None).unwrap();
        let connector = tokio_rustls::TlsConnector::from(config);
        let addr: SocketAddr = self.url.trim_start_matches("https://").parse().unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let connector = connector.clone();
                async move {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    socket.bind(SocketAddr::new(source, 0))?;
                    let tcp = socket.connect(addr).await?;
                    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                }
            }));
        let bearer = Bearer(token.map(|t| MetadataValue::try_from(format!("Bearer {t}")).unwrap()));
        Client { channel, bearer }
    }

    /// A client with `token`.
    pub fn client(&self, token: &str) -> Client {
        self.client_with(Some(token))
    }

    /// A client without a token.
    pub fn anonymous(&self) -> Client {
        self.client_with(None)
    }

    /// The global administrator (portal).
    pub fn admin(&self) -> Client {
        self.client(&self.admin_token)
    }

    /// Mints a token (through the store, as `writeback-control-plane token`
    /// does) for `principal` with `role`, issued to `app`.
    pub async fn token(&self, principal: &str, role: Role, app: ClientApp) -> String {
        let file = self.dir.path().join(format!(
            "{}-{}-{}.token",
            principal.replace(['@', '/'], "_"),
            app.as_str(),
            uuid::Uuid::new_v4().simple()
        ));
        bootstrap::issue_token(&self.cp.store, TENANT, principal, role, app, None, &file)
            .await
            .unwrap();
        std::fs::read_to_string(&file).unwrap().trim().to_owned()
    }

    /// A client for `principal` with `role` issued to `app`.
    pub async fn client_for(&self, principal: &str, role: Role, app: ClientApp) -> Client {
        let token = self.token(principal, role, app).await;
        self.client(&token)
    }

    /// A fresh enrollment token for `domain` (10 minutes), from the
    /// administrator.
    pub async fn enrollment_token(&self, domain: &str) -> String {
        self.admin()
            .agents()
            .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
                domain: domain.into(),
                ttl_seconds: 600,
            })
            .await
            .unwrap()
            .into_inner()
            .token
    }

    /// Enrolls an agent of `domain` through the Enroll RPC (fresh CSR and
    /// envelope key, reporting `version`); returns its id. The agent is not
    /// connected anywhere until [`FakeRelay::connect`].
    pub async fn enroll_agent(&self, domain: &str, version: &str) -> String {
        let token = self.enrollment_token(domain).await;
        let (csr_pem, _key) = writeback_identity::generate_csr().unwrap();
        let key = writeback_envelope::KeyPair::generate();
        let id = self
            .anonymous()
            .enrollment()
            .enroll(pb::EnrollRequest {
                token,
                csr_pem,
                envelope_public_key: key.public_bytes(),
                hostname: format!("host-of-{domain}"),
                agent_version: version.into(),
                result_signing_public_key: self.relay.result_key(),
            })
            .await
            .unwrap()
            .into_inner()
            .agent_id;
        self.relay.answer_as(&id);
        id
    }

    /// Records an operation directly in the store, as a control plane that
    /// accepted it would have.
    pub async fn insert_operation(&self, id: &str, target_upn: &str, created_at_ms: i64) {
        self.cp
            .store
            .insert_operation(&NewOperation {
                id: id.into(),
                tenant: TENANT.into(),
                kind: "reset".into(),
                target: format!("upn:{target_upn}"),
                domain: "contoso.test".into(),
                principal: ADMIN.into(),
                client_app: ClientApp::Portal,
                created_at_ms,
                deadline_at_ms: created_at_ms + 30_000,
                trace_id: String::new(),
                rule: String::new(),
            })
            .await
            .unwrap();
    }
}

impl Drop for TestCp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A rig with contoso.test registered, every toggle on and one agent
/// enrolled (not connected): allowed operations reach the relay, which
/// refuses them with `NO_AGENT_ONLINE` unless told otherwise.
pub async fn ready(db: &TestDb, options: Options) -> TestCp {
    let t = TestCp::start(db, options).await;
    let admin = t.admin();
    admin.add_domain("contoso.test").await;
    admin.set_all_toggles(true).await;
    t.enroll_agent("contoso.test", "0.1.0").await;
    t
}

/// Runs `writebackctl <args>` in-process against `t` with `token` (from a
/// token file, as the real command reads it); returns its result and what
/// it printed. Standard input is empty.
pub async fn ctl(
    t: &TestCp,
    token: &str,
    args: &[&str],
) -> (Result<(), writeback_cli::CliError>, String) {
    use clap::Parser;
    let token_file = t
        .dir
        .path()
        .join(format!("ctl-{}.token", uuid::Uuid::new_v4().simple()));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let ca = t.ca_file();
    let mut argv = vec![
        "writebackctl".to_owned(),
        "--control-plane".to_owned(),
        t.url.clone(),
        "--ca-file".to_owned(),
        ca.display().to_string(),
        "--token-file".to_owned(),
        token_file.display().to_string(),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let mut cli = writeback_cli::Cli::try_parse_from(argv).expect("writebackctl arguments");
    // The output goes to a buffer, not a terminal, whatever the test's own
    // standard output is.
    cli.stdout_is_terminal = false;
    let mut input = std::io::Cursor::new(Vec::new());
    let mut out = Vec::new();
    let result = writeback_cli::run(cli, &mut input, &mut out).await;
    (result, String::from_utf8(out).unwrap())
}
