//! Integration tests of the relay: real relays on port-0 listeners, PKI
//! minted per test, agents that are the real agent tunnel client
//! (`writeback_agent::tunnel::run`) over a recording test applier — or a raw
//! tunnel client where a test needs an agent that misbehaves. No directory
//! is involved: operations are unlocks, which carry no password envelope.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod clock;
mod control_plane;
mod faults;
mod forests;
mod lifecycle;
mod limits;
mod partition;
mod routing;
mod signing;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use writeback_agent::executor::{Apply, Executor, ValidOperation};
use writeback_agent::state::Enrollment;
use writeback_agent::tunnel::{TunnelOptions, TunnelState};
use writeback_core::{Failure, ReasonCode, failure_of};
use writeback_envelope::signing::OperationSigner;
use writeback_identity::{Ca, SpiffeId, tls, transport};
use writeback_proto::TUNNEL_PROTOCOL_VERSION;
use writeback_proto::v1 as pb;
use writeback_proto::v1::agent_tunnel_client::AgentTunnelClient;
use writeback_proto::v1::relay_dispatch_client::RelayDispatchClient;
use writeback_relay::config::{RelayOptions, RelayTls, SecretPem};
use writeback_relay::{Limits, Relay};

pub const TENANT: &str = "t1";
pub const CONTOSO: &str = "contoso.test";
pub const FABRIKAM: &str = "fabrikam.test";
/// Longest any test waits for something to happen.
pub const WAIT: Duration = Duration::from_secs(15);

/// The control plane's operation-signing key in these tests: [`dispatch`]
/// signs with it (as the control plane's dispatcher does) and every
/// [`TestAgent`] pins it.
pub static SIGNER: std::sync::LazyLock<Arc<OperationSigner>> =
    std::sync::LazyLock::new(|| Arc::new(OperationSigner::generate().unwrap().0));

/// Logs with e.g. `WRITEBACK_LOG=writeback_relay=debug cargo nextest run
/// -p writeback-relay --no-capture`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WRITEBACK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A tenant CA and the certificates a test needs.
pub struct Pki {
    pub ca: Arc<Ca>,
    pub tenant: String,
}

impl Pki {
    pub fn new(tenant: &str) -> Pki {
        init_tracing();
        writeback_identity::install_crypto_provider();
        Pki {
            ca: Arc::new(Ca::generate(tenant).unwrap()),
            tenant: tenant.to_owned(),
        }
    }

    /// Client TLS for an agent certificate naming (tenant, domain, agent).
    pub fn agent_tls(&self, domain: &str, agent_id: &str) -> Arc<rustls::ClientConfig> {
        self.agent_tls_for(&self.tenant.clone(), domain, agent_id)
    }

    /// Client TLS for an agent of any tenant, signed by this CA.
    pub fn agent_tls_for(
        &self,
        tenant: &str,
        domain: &str,
        agent_id: &str,
    ) -> Arc<rustls::ClientConfig> {
        let (csr, key) = writeback_identity::generate_csr().unwrap();
        let id = SpiffeId::Agent {
            tenant: tenant.to_owned(),
            domain: domain.to_owned(),
            agent_id: agent_id.to_owned(),
        };
        let cert = self.ca.sign_agent_csr(&csr, &id).unwrap();
        tls::client_config(
            tls::roots_from_pem(self.ca.cert_pem()).unwrap(),
            Some((&cert, &key)),
        )
        .unwrap()
    }

    /// Client TLS for an agent as the agent really dials relays: the
    /// server must be a relay of this tenant.
    pub fn agent_relay_tls(&self, domain: &str, agent_id: &str) -> Arc<rustls::ClientConfig> {
        let (csr, key) = writeback_identity::generate_csr().unwrap();
        let id = SpiffeId::agent(&self.tenant, domain, agent_id).unwrap();
        let cert = self.ca.sign_agent_csr(&csr, &id).unwrap();
        tls::relay_client_config(
            tls::roots_from_pem(self.ca.cert_pem()).unwrap(),
            Some((&cert, &key)),
            &self.tenant,
        )
        .unwrap()
    }

    /// A RelayDispatch client with this tenant's control plane identity.
    pub fn control_plane(&self, url: &str) -> RelayDispatchClient<Channel> {
        let id = SpiffeId::ControlPlane {
            tenant: self.tenant.clone(),
        };
        let (chain, key) = self.ca.issue_service(&id, &[], &[]).unwrap();
        let config = tls::client_config(
            tls::roots_from_pem(self.ca.cert_pem()).unwrap(),
            Some((&chain, &key)),
        )
        .unwrap();
        RelayDispatchClient::new(transport::channel(url, config).unwrap())
    }
}

/// Relay settings a test may change.
#[derive(Clone)]
pub struct RelaySettings {
    pub heartbeat: Duration,
    pub heartbeat_timeout: Duration,
    pub limits: Limits,
    pub max_message_bytes: usize,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            heartbeat: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            limits: Limits {
                queue_depth: 64,
                max_tunnels_per_agent: 4,
                shutdown_grace: Duration::from_secs(5),
            },
            max_message_bytes: 256 * 1024,
        }
    }
}

/// A relay serving on a port-0 (or given) listener.
pub struct TestRelay {
    pub url: String,
    pub addr: SocketAddr,
    pub relay: Relay,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TestRelay {
    pub async fn start(pki: &Pki, relay_id: &str, settings: RelaySettings) -> TestRelay {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        TestRelay::start_on(&pki.ca, &pki.tenant, relay_id, settings, listener)
    }

    pub fn start_on(
        ca: &Ca,
        tenant: &str,
        relay_id: &str,
        settings: RelaySettings,
        listener: tokio::net::TcpListener,
    ) -> TestRelay {
        let id = SpiffeId::Relay {
            tenant: tenant.to_owned(),
            relay_id: relay_id.to_owned(),
        };
        let (chain, key) = ca
            .issue_service(
                &id,
                &["localhost".to_owned()],
                &[std::net::IpAddr::from([127, 0, 0, 1])],
            )
            .unwrap();
        TestRelay::start_with_cert(ca, tenant, relay_id, settings, listener, chain, key)
    }

    /// A relay serving with the certificate `chain`/`key`, whatever it names.
    pub fn start_with_cert(
        ca: &Ca,
        tenant: &str,
        relay_id: &str,
        settings: RelaySettings,
        listener: tokio::net::TcpListener,
        chain: String,
        key: String,
    ) -> TestRelay {
        let addr = listener.local_addr().unwrap();
        let relay = Relay::with_limits(
            RelayOptions {
                relay_id: relay_id.to_owned(),
                tenant: tenant.to_owned(),
                tls: RelayTls {
                    chain_pem: chain,
                    key_pem: SecretPem::new(key),
                    ca_pem: ca.cert_pem().to_owned(),
                },
                heartbeat_interval: settings.heartbeat,
                heartbeat_timeout: settings.heartbeat_timeout,
                agent_queue_depth: settings.limits.queue_depth,
                max_message_bytes: settings.max_message_bytes,
                metrics_listen: None,
                tracing: Default::default(),
            },
            settings.limits,
        );
        let (stop, mut rx) = watch::channel(false);
        let serving = relay.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            serving.serve(listener, shutdown).await.unwrap();
        });
        TestRelay {
            url: format!("https://{addr}"),
            addr,
            relay,
            stop,
            task,
        }
    }

    /// Starts a graceful shutdown and returns the task that ends with it.
    pub fn begin_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops the relay and waits until it has closed its listener.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the relay stops")
            .unwrap();
    }

    /// Waits until the relay holds `n` live tunnels.
    pub async fn wait_tunnels(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.relay.registry().len() != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "relay holds {} tunnels, expected {n}",
                self.relay.registry().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What the test applier does with an operation.
#[derive(Clone)]
pub enum Mode {
    /// Applies at once.
    Answer,
    /// Waits until released (see [`TestApplier::release`]), then applies.
    Block,
    /// Waits this long, then applies.
    Delay(Duration),
    /// Refuses with this reason.
    Fail(ReasonCode),
}

/// A recording [`Apply`]: counts every call and behaves as told.
pub struct TestApplier {
    pub calls: Mutex<Vec<String>>,
    mode: Mutex<Mode>,
    released: watch::Sender<bool>,
    started: tokio::sync::Notify,
}

impl TestApplier {
    pub fn new(mode: Mode) -> Arc<TestApplier> {
        Arc::new(TestApplier {
            calls: Mutex::new(Vec::new()),
            mode: Mutex::new(mode),
            released: watch::channel(false).0,
            started: tokio::sync::Notify::new(),
        })
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Lets every blocked apply finish.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    pub fn count_of(&self, id: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == id)
            .count()
    }

    /// Waits until `apply` has been called `n` times.
    pub async fn wait_calls(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let started = self.started.notified();
            if self.count() >= n {
                return;
            }
            assert!(
                tokio::time::timeout_at(deadline, started).await.is_ok(),
                "applier called {} times, expected {n}",
                self.count()
            );
        }
    }
}

#[tonic::async_trait]
impl Apply for TestApplier {
    async fn apply(
        &self,
        op: &ValidOperation,
        _secrets: Option<&writeback_envelope::Secrets>,
    ) -> Result<(), Failure> {
        self.calls.lock().unwrap().push(op.id.clone());
        self.started.notify_waiters();
        let mode = self.mode.lock().unwrap().clone();
        match mode {
            Mode::Answer => Ok(()),
            Mode::Block => {
                let mut rx = self.released.subscribe();
                let _ = rx.wait_for(|v| *v).await;
                Ok(())
            }
            Mode::Delay(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Mode::Fail(reason) => Err(Failure::new(reason, "refused by the test applier")),
        }
    }

    async fn health(&self) -> Vec<pb::DcStatus> {
        vec![pb::DcStatus {
            url: "ldaps://dc.test:636".into(),
            reachable: true,
            reason_code: String::new(),
        }]
    }
}

/// A real agent tunnel (`writeback_agent::tunnel::run`) over a test
/// applier, on a runtime of its own so that killing it closes its sockets
/// the way a dying process does.
pub struct TestAgent {
    pub agent_id: String,
    pub applier: Arc<TestApplier>,
    pub state: watch::Receiver<TunnelState>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestAgent {
    pub fn start(
        pki: &Pki,
        relay_urls: &[&str],
        domain: &str,
        agent_id: &str,
        applier: Arc<TestApplier>,
    ) -> TestAgent {
        let tls = pki.agent_tls(domain, agent_id);
        TestAgent::start_with_tls(pki, relay_urls, domain, agent_id, applier, tls)
    }

    pub fn start_with_tls(
        pki: &Pki,
        relay_urls: &[&str],
        domain: &str,
        agent_id: &str,
        applier: Arc<TestApplier>,
        tls: Arc<rustls::ClientConfig>,
    ) -> TestAgent {
        let pinned = vec![hex::encode(SIGNER.public_key())];
        TestAgent::start_pinning(
            pki,
            relay_urls,
            domain,
            agent_id,
            applier,
            tls,
            pinned,
            writeback_agent::clock::ClockCheck::default(),
        )
    }

    /// An agent whose clock is `clock` (pinning [`SIGNER`]).
    pub fn start_with_clock(
        pki: &Pki,
        relay_urls: &[&str],
        domain: &str,
        agent_id: &str,
        applier: Arc<TestApplier>,
        clock: writeback_agent::clock::ClockCheck,
    ) -> TestAgent {
        let tls = pki.agent_tls(domain, agent_id);
        let pinned = vec![hex::encode(SIGNER.public_key())];
        TestAgent::start_pinning(
            pki, relay_urls, domain, agent_id, applier, tls, pinned, clock,
        )
    }

    /// An agent pinning the operation-signing keys `pinned` (hex), its
    /// clock `clock`.
    #[allow(clippy::too_many_arguments)]
    pub fn start_pinning(
        pki: &Pki,
        relay_urls: &[&str],
        domain: &str,
        agent_id: &str,
        applier: Arc<TestApplier>,
        tls: Arc<rustls::ClientConfig>,
        pinned: Vec<String>,
        clock: writeback_agent::clock::ClockCheck,
    ) -> TestAgent {
        let identity = pb::AgentIdentity {
            tenant: pki.tenant.clone(),
            domain: domain.to_owned(),
            agent_id: agent_id.to_owned(),
        };
        let options = TunnelOptions {
            relay_urls: relay_urls.iter().map(|u| (*u).to_owned()).collect(),
            tls,
            identity,
            max_in_flight: 4,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(400),
            max_message_bytes: 256 * 1024,
            clock,
        };
        let executor = Arc::new(
            Executor::new(
                Enrollment {
                    tenant: pki.tenant.clone(),
                    domain: domain.to_owned(),
                    agent_id: agent_id.to_owned(),
                    relay_urls: options.relay_urls.clone(),
                    operation_signing_keys: pinned,
                    control_plane_url: String::new(),
                    result_signing_key_registered: false,
                },
                writeback_envelope::KeyPair::generate(),
                applier.clone(),
            )
            .with_clock(clock),
        );
        let (state_tx, state) = watch::channel(TunnelState::Connecting);
        let (stop, mut stop_rx) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let task = runtime.spawn(writeback_agent::tunnel::run(
            options,
            executor,
            state_tx,
            async move {
                let _ = stop_rx.wait_for(|v| *v).await;
            },
        ));
        TestAgent {
            agent_id: agent_id.to_owned(),
            applier,
            state,
            stop,
            task,
            runtime: Some(runtime),
        }
    }

    /// Waits until a relay welcomed the agent; returns that relay's id.
    pub async fn connected(&mut self) -> String {
        let s = tokio::time::timeout(
            WAIT,
            self.state
                .wait_for(|s| matches!(s, TunnelState::Connected(_))),
        )
        .await
        .expect("the agent connects")
        .unwrap()
        .clone();
        match s {
            TunnelState::Connected(r) => r,
            _ => unreachable!(),
        }
    }

    /// The agent process dies: every task and socket of it goes at once,
    /// without a goodbye.
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Stops the agent cleanly.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(WAIT, &mut self.task).await;
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A raw tunnel: what a misbehaving agent can do.
pub struct RawTunnel {
    pub tx: mpsc::Sender<pb::AgentMessage>,
    pub inbound: tonic::Streaming<pb::RelayMessage>,
}

impl std::fmt::Debug for RawTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawTunnel")
    }
}

/// Opens a tunnel with `tls`, sending `first` (usually a Hello) at once.
pub async fn raw_open(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
    first: Option<pb::AgentMessage>,
) -> Result<RawTunnel, tonic::Status> {
    let channel = transport::channel(url, tls).unwrap();
    let mut client = AgentTunnelClient::new(channel)
        .max_encoding_message_size(16 * 1024 * 1024)
        .max_decoding_message_size(16 * 1024 * 1024);
    let (tx, rx) = mpsc::channel(16);
    if let Some(m) = first {
        tx.send(m).await.unwrap();
    }
    let inbound = client.open(ReceiverStream::new(rx)).await?.into_inner();
    Ok(RawTunnel { tx, inbound })
}

/// A well-formed Hello.
pub fn hello(tenant: &str, domain: &str, agent_id: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            protocol_version: TUNNEL_PROTOCOL_VERSION,
            identity: Some(pb::AgentIdentity {
                tenant: tenant.to_owned(),
                domain: domain.to_owned(),
                agent_id: agent_id.to_owned(),
            }),
            agent_version: "0.0.0-test".into(),
            max_in_flight: 1,
        })),
    }
}

/// An unlock of `upn` in `domain` that expires after `ttl`.
pub fn unlock(domain: &str, upn: &str, ttl: Duration) -> pb::OperationRequest {
    let expires = time::OffsetDateTime::now_utc() + ttl;
    pb::OperationRequest {
        operation_id: uuid::Uuid::new_v4().to_string(),
        tenant: TENANT.to_owned(),
        domain: domain.to_owned(),
        kind: pb::OperationKind::Unlock as i32,
        target: Some(pb::UserRef {
            by: Some(pb::user_ref::By::Upn(upn.to_owned())),
        }),
        must_change_at_next_logon: false,
        unlock: false,
        expires_at: Some(prost_types::Timestamp {
            seconds: expires.unix_timestamp(),
            nanos: i32::try_from(expires.nanosecond()).unwrap(),
        }),
        envelope: None,
        traceparent: String::new(),
        signature: Vec::new(),
        signing_key_id: String::new(),
        search: None,
        agent_id: String::new(),
        issued_at: None,
    }
}

/// Dispatches `op` through the relay's gRPC API as the control plane
/// would: signed with [`SIGNER`].
pub async fn dispatch(
    client: &RelayDispatchClient<Channel>,
    mut op: pb::OperationRequest,
) -> Result<pb::OperationResult, Failure> {
    SIGNER.sign(&mut op);
    dispatch_as_is(client, op).await
}

/// Dispatches `op` exactly as given (signed or not, altered or not): what a
/// relay, or anyone who can reach an agent through one, could send.
pub async fn dispatch_as_is(
    client: &RelayDispatchClient<Channel>,
    op: pb::OperationRequest,
) -> Result<pb::OperationResult, Failure> {
    client
        .clone()
        .dispatch(pb::DispatchRequest {
            operation: Some(op),
            min_revocation_version: 0,
            agent_id: String::new(),
        })
        .await
        .map(|r| r.into_inner().result.expect("a result"))
        .map_err(|s| failure_of(&s))
}

/// The reason code of a result.
pub fn reason(r: &pb::OperationResult) -> String {
    r.outcome.as_ref().unwrap().reason_code.clone()
}
