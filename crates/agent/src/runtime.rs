//! Wires an enrolled agent together: state directory → TLS identity (relays
//! must carry a relay identity of the agent's tenant) →
//! executor over a directory (with the background health checks) → tunnel to
//! the relays; and the certificate's renewal ([`Renewal`], [`crate::renew`]):
//! checked at start and hourly, renewed when less than a third of its
//! lifetime is left (or while the control plane has not registered the
//! agent's result-signing key), the tunnel reconnecting with the new one.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use writeback_identity::{Validity, tls};
use writeback_proto::v1::AgentIdentity;

use crate::AgentError;
use crate::clock::ClockCheck;
use crate::executor::{Apply, Executor};
use crate::health::HealthMonitor;
use crate::state::AgentState;
use crate::tunnel::{self, TunnelOptions, TunnelState};

/// Largest tunnel message, bytes.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A running agent.
pub struct RunningAgent {
    /// Tunnel state changes.
    pub state: watch::Receiver<TunnelState>,
    /// The tunnel task; ends after shutdown.
    pub task: tokio::task::JoinHandle<()>,
    /// The metrics registry, when the agent was started with one.
    pub metrics: Option<Arc<prometheus_client::registry::Registry>>,
    /// The validity of the certificate the agent holds, updated after each
    /// renewal.
    pub certificate: watch::Receiver<Validity>,
}

/// When the running agent renews its certificate ([`crate::renew`]).
#[derive(Debug, Clone, Copy)]
pub struct Renewal {
    /// How often it looks (hourly by default; also once at start).
    pub check_every: Duration,
    /// It renews when less than this share of the lifetime is left (a third).
    pub fraction: f64,
}

impl Default for Renewal {
    fn default() -> Self {
        Renewal {
            check_every: crate::renew::CHECK_INTERVAL,
            fraction: crate::renew::RENEW_FRACTION,
        }
    }
}

impl RunningAgent {
    /// Waits until the tunnel is welcomed by a relay or `timeout` passes.
    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<String, AgentError> {
        let connected = self
            .state
            .wait_for(|s| matches!(s, TunnelState::Connected(_)));
        match tokio::time::timeout(timeout, connected).await {
            Ok(Ok(s)) => match &*s {
                TunnelState::Connected(relay) => Ok(relay.clone()),
                _ => Err(AgentError::State("tunnel not connected".into())),
            },
            _ => Err(AgentError::State(format!(
                "the agent did not connect to a relay within {timeout:?}"
            ))),
        }
    }
}

/// The agent's metrics: a registry (the directory's metrics already in it,
/// see [`crate::directory::Directory::register_metrics`]), the executor's
/// handle, and where to serve them (`None`: not served; the registry is still
/// kept in [`RunningAgent::metrics`]).
pub struct Observability {
    /// The registry.
    pub registry: prometheus_client::registry::Registry,
    /// The executor's metrics, registered in it.
    pub metrics: crate::metrics::Metrics,
    /// `metrics_listen`.
    pub listen: Option<std::net::SocketAddr>,
    /// Where the operations' spans go (nowhere by default).
    pub tracing: writeback_core::trace::Tracing,
}

impl Observability {
    /// A registry with the process's and the executor's metrics, served on `listen`.
    pub fn new(listen: Option<std::net::SocketAddr>) -> Observability {
        let (registry, metrics) = crate::metrics::registry();
        Observability {
            registry,
            metrics,
            listen,
            tracing: writeback_core::trace::Tracing::disabled("writeback-agent"),
        }
    }
}

/// Starts the agent enrolled in `state_dir`, applying operations with
/// `applier`, until `shutdown` completes; the clock check is the default one
/// ([`ClockCheck::default`]).
pub async fn start(
    state_dir: &Path,
    applier: Arc<dyn Apply>,
    max_in_flight: u32,
    observability: Option<Observability>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningAgent, AgentError> {
    start_with_clock(
        state_dir,
        applier,
        max_in_flight,
        observability,
        ClockCheck::default(),
        shutdown,
    )
    .await
}

/// [`start`] with the agent's clock and its tolerated offset from the
/// relay's given.
pub async fn start_with_clock(
    state_dir: &Path,
    applier: Arc<dyn Apply>,
    max_in_flight: u32,
    observability: Option<Observability>,
    clock: ClockCheck,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningAgent, AgentError> {
    start_with(
        state_dir,
        applier,
        max_in_flight,
        observability,
        clock,
        Renewal::default(),
        shutdown,
    )
    .await
}

/// The relay client config for the certificate in `state`: relays must
/// carry a relay identity of this agent's tenant.
fn relay_tls(state: &AgentState) -> Result<Arc<rustls::ClientConfig>, AgentError> {
    Ok(tls::relay_client_config(
        tls::roots_from_pem(&state.ca_pem)?,
        Some((&state.cert_pem, state.key_pem.as_str())),
        &state.enrollment.tenant,
    )?)
}

/// [`start_with_clock`] with when to renew the certificate given.
pub async fn start_with(
    state_dir: &Path,
    applier: Arc<dyn Apply>,
    max_in_flight: u32,
    observability: Option<Observability>,
    clock: ClockCheck,
    renewal: Renewal,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningAgent, AgentError> {
    let state = AgentState::load(state_dir)?;
    let client_tls = relay_tls(&state)?;
    let (tls_tx, tls_rx) = watch::channel(client_tls.clone());
    let (cert_tx, cert_rx) = watch::channel(Validity::of_pem(&state.cert_pem)?);
    let e = &state.enrollment;
    let options = TunnelOptions {
        relay_urls: e.relay_urls.clone(),
        tls: client_tls,
        identity: AgentIdentity {
            tenant: e.tenant.clone(),
            domain: e.domain.clone(),
            agent_id: e.agent_id.clone(),
        },
        max_in_flight,
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_secs(30),
        max_message_bytes: MAX_MESSAGE_BYTES,
        clock,
    };
    tracing::info!(tenant = %e.tenant, domain = %e.domain, agent_id = %e.agent_id, "agent starting");
    let (checks, monitor) = HealthMonitor::new(Arc::clone(&applier)).start();
    let ledger = crate::ledger::Ledger::open(state_dir, crate::ledger::DEFAULT_RETENTION)
        .map_err(|e| AgentError::State(e.to_string()))?;
    let registered = state.enrollment.result_signing_key_registered;
    let mut executor = Executor::new(state.enrollment.clone(), state.envelope_key, applier)
        .with_clock(clock)
        .with_result_signer(state.result_key)
        .with_checks(checks.clone())
        .with_ledger(ledger);
    let mut registry = None;
    let mut listening = None;
    if let Some(mut o) = observability {
        crate::metrics::register_health(&mut o.registry, checks);
        crate::metrics::register_certificate(&mut o.registry, cert_rx.clone());
        executor = executor.with_metrics(o.metrics).with_tracing(o.tracing);
        let shared = Arc::new(o.registry);
        if let Some(addr) = o.listen {
            listening = Some(
                writeback_core::metrics::spawn_guarded(addr, Arc::clone(&shared))
                    .await
                    .map_err(|e| AgentError::Config(format!("metrics_listen {addr}: {e}")))?,
            );
        }
        registry = Some(shared);
    }
    let executor = Arc::new(executor);
    let (tx, rx) = watch::channel(TunnelState::Connecting);
    let probed = cert_rx.clone();
    let renewing = tokio::spawn(renewing(
        state_dir.to_path_buf(),
        renewal,
        Arc::clone(&executor),
        state.enrollment.operation_signing_keys.clone(),
        tls_tx,
        cert_tx,
        registered,
    ));
    let task = tokio::spawn(async move {
        // Operations a crash left in doubt are decided from the directory
        // before any relay can ask about them.
        executor.settle_ledger().await;
        tunnel::run_renewing(options, tls_rx, Some(probed), executor, tx, shutdown).await;
        renewing.abort();
        drop(monitor);
        // The metrics listener stops with the agent.
        drop(listening);
    });
    Ok(RunningAgent {
        state: rx,
        task,
        metrics: registry,
        certificate: cert_rx,
    })
}

/// How soon a renewal that left its key waiting (no answer) is tried again.
const RETRY_UNANSWERED_RENEWAL: Duration = Duration::from_secs(30);

/// At start and every `renewal.check_every`: takes up what is on disk (a
/// certificate `writeback-agent renew` installed: the tunnel gets the new
/// TLS config; operation-signing keys a renewal pinned: the executor pins
/// them), then renews the certificate when it is due and takes that up the
/// same way. Warns while less than [`crate::renew::WARN_BEFORE`] is left; a
/// refusal is logged with its reason and tried again at the next check.
async fn renewing(
    dir: std::path::PathBuf,
    renewal: Renewal,
    executor: Arc<Executor>,
    mut pinned: Vec<String>,
    tls_tx: watch::Sender<Arc<rustls::ClientConfig>>,
    cert_tx: watch::Sender<Validity>,
    mut registered: bool,
) {
    let mut tick = tokio::time::interval(renewal.check_every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let take_up = |pinned: &mut Vec<String>| {
        let state = AgentState::load(&dir)?;
        let validity = Validity::of_pem(&state.cert_pem)?;
        if validity != *cert_tx.borrow() {
            let _ = tls_tx.send(relay_tls(&state)?);
            let _ = cert_tx.send(validity);
            tracing::info!(not_after = %validity.not_after, "using the renewed certificate");
        }
        if state.enrollment.operation_signing_keys != *pinned {
            executor.pin_signing_keys(state.enrollment.trusted_keys()?);
            pinned.clone_from(&state.enrollment.operation_signing_keys);
            tracing::info!(keys = ?pinned, "pinned the control plane's operation-signing keys");
        }
        Ok::<_, AgentError>(())
    };
    loop {
        tick.tick().await;
        if let Err(e) = take_up(&mut pinned) {
            tracing::warn!(error = %e, "cannot read the state directory");
        }
        let validity = *cert_tx.borrow();
        let now = time::OffsetDateTime::now_utc();
        // An agent whose result-signing key the control plane does not hold
        // yet (enrolled before results were signed) renews now: that
        // registers the key, and until then its results are refused.
        if !registered {
            // `writeback-agent renew` by hand may have registered it.
            registered =
                AgentState::load(&dir).is_ok_and(|s| s.enrollment.result_signing_key_registered);
        }
        if registered && !validity.is_due(now, renewal.fraction) {
            continue;
        }
        match crate::renew::renew(&dir, None).await {
            Ok(r) => {
                registered = r.result_signing_key_registered;
                if let Err(e) = take_up(&mut pinned) {
                    tracing::warn!(error = %e, "cannot read the renewed certificate");
                }
            }
            Err(e) => {
                // The answer to a renewal may have been lost after the
                // control plane recorded it: the current certificate is
                // then superseded (relays refuse it), so ask again soon.
                if crate::renew::has_pending_key(&dir) {
                    tick.reset_after(RETRY_UNANSWERED_RENEWAL);
                }
                let left = validity.remaining(now);
                if left < crate::renew::WARN_BEFORE {
                    tracing::warn!(error = %e, not_after = %validity.not_after,
                        "cannot renew the agent's certificate; it expires in {} hours, after \
                         which the agent must be enrolled again", left.as_secs() / 3600);
                } else {
                    tracing::info!(error = %e, "cannot renew the agent's certificate yet");
                }
            }
        }
    }
}
