//! The agent's side of the relay tunnel: dial out (the agent needs no
//! inbound port), send a Hello, wait for the Welcome, then apply requests as
//! they arrive (at most `max_in_flight` at once), answer health probes and
//! send heartbeats. When the tunnel drops or the relay says GoAway, the
//! agent moves to the next relay URL after a jittered exponential backoff;
//! after a GoAway the old tunnel stays open until the relay ends it, so the
//! results of operations in flight still reach it. The relay's time in its
//! Welcome and probes keeps an estimate of the agent's clock offset
//! ([`crate::clock`]): reported in every health report, and beyond the
//! tolerance every operation is refused with `CLOCK_SKEW` before the executor
//! sees it — an early check on the relay's word; the executor checks the
//! control plane's signed time itself. A renewed certificate ([`run_renewing`]) makes the agent
//! reconnect with it the same way a GoAway does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use writeback_core::operation::now_timestamp;
use writeback_identity::transport;
use writeback_proto::TUNNEL_PROTOCOL_VERSION;
use writeback_proto::v1::agent_tunnel_client::AgentTunnelClient;
use writeback_proto::v1::{
    AgentIdentity, AgentMessage, HealthReport, Heartbeat, Hello, RelayMessage, agent_message,
    relay_message,
};

use crate::clock::{ClockCheck, ClockOffset};
use crate::executor::Executor;

/// Where the tunnel stands, for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelState {
    /// Dialing or backing off.
    Connecting,
    /// Welcomed by the relay with this id.
    Connected(String),
    /// Stopped for good (shutdown).
    Stopped,
}

/// How the tunnel dials.
#[derive(Clone)]
pub struct TunnelOptions {
    /// Relay URLs, tried in order.
    pub relay_urls: Vec<String>,
    /// Client TLS with the agent certificate and the tenant CA.
    pub tls: Arc<rustls::ClientConfig>,
    /// The agent's identity, repeated in the Hello.
    pub identity: AgentIdentity,
    /// Operations applied at once.
    pub max_in_flight: u32,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Largest gRPC message.
    pub max_message_bytes: usize,
    /// The clock and the offset from the relay's it tolerates.
    pub clock: ClockCheck,
}

enum End {
    GoAway(String),
    Closed,
    Shutdown,
}

/// Keeps a tunnel to some relay open until `shutdown`, reporting state on `state`.
pub async fn run(
    options: TunnelOptions,
    executor: Arc<Executor>,
    state: watch::Sender<TunnelState>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (_unchanging, tls) = watch::channel(options.tls.clone());
    run_renewing(options, tls, None, executor, state, shutdown).await;
}

/// [`run`], dialling with the latest client TLS config on `tls` (the
/// agent's certificate, renewed by [`crate::renew`]) instead of
/// `options.tls`. A new config ends the current session as a GoAway would
/// (operations in flight still answer on the old tunnel) and the tunnel
/// reconnects with it. Health reports carry `certificate`'s expiry.
pub async fn run_renewing(
    options: TunnelOptions,
    mut tls: watch::Receiver<Arc<rustls::ClientConfig>>,
    certificate: Option<watch::Receiver<writeback_identity::Validity>>,
    executor: Arc<Executor>,
    state: watch::Sender<TunnelState>,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let mut backoff = options.backoff_min;
    let mut index = 0usize;
    loop {
        if options.relay_urls.is_empty() {
            tracing::error!("no relay URLs in the enrollment; nothing to connect to");
            let _ = state.send(TunnelState::Stopped);
            return;
        }
        let url = options.relay_urls[index % options.relay_urls.len()].clone();
        let _ = state.send(TunnelState::Connecting);
        let result = tokio::select! {
            r = session(&url, &options, &mut tls, certificate.as_ref(), &executor, &state) => r,
            () = &mut shutdown => Ok(End::Shutdown),
        };
        match result {
            Ok(End::Shutdown) => {
                let _ = state.send(TunnelState::Stopped);
                return;
            }
            Ok(End::GoAway(reason)) => {
                tracing::info!(relay = %url, reason, "relay asked us to reconnect");
                backoff = options.backoff_min;
            }
            Ok(End::Closed) => {
                tracing::info!(relay = %url, "relay closed the tunnel");
            }
            Err(e) => {
                tracing::warn!(relay = %url, error = %e, "tunnel failed");
            }
        }
        index = index.wrapping_add(1);
        let _ = state.send(TunnelState::Connecting);
        let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
        tokio::select! {
            () = tokio::time::sleep(jittered) => {}
            () = &mut shutdown => {
                let _ = state.send(TunnelState::Stopped);
                return;
            }
        }
        backoff = (backoff * 2).min(options.backoff_max);
    }
}

/// Keeps a tunnel being left open until the relay ends it (the results of
/// operations in flight still go out on it) or 120 s have passed.
async fn drain(
    client: AgentTunnelClient<tonic::transport::Channel>,
    mut inbound: tonic::Streaming<RelayMessage>,
) {
    let _client = client;
    let drained = async { while let Ok(Some(_)) = inbound.message().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(120), drained).await;
}

fn message(body: agent_message::Body) -> AgentMessage {
    AgentMessage { body: Some(body) }
}

async fn session(
    url: &str,
    options: &TunnelOptions,
    tls: &mut watch::Receiver<Arc<rustls::ClientConfig>>,
    certificate: Option<&watch::Receiver<writeback_identity::Validity>>,
    executor: &Arc<Executor>,
    state: &watch::Sender<TunnelState>,
) -> Result<End, String> {
    let client_tls = tls.borrow_and_update().clone();
    let mut watching_tls = true;
    let channel = transport::channel(url, client_tls).map_err(|e| e.to_string())?;
    let mut client = AgentTunnelClient::new(channel)
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(options.max_message_bytes);
    let (tx, rx) = mpsc::channel::<AgentMessage>(256);
    tx.send(message(agent_message::Body::Hello(Hello {
        protocol_version: TUNNEL_PROTOCOL_VERSION,
        identity: Some(options.identity.clone()),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        max_in_flight: options.max_in_flight,
    })))
    .await
    .map_err(|_| "tunnel closed before the hello".to_owned())?;
    let hello_sent = (options.clock.now)();
    let mut inbound = client
        .open(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{}: {}", writeback_core::failure_of(&s).reason, s.message()))?
        .into_inner();
    let welcome = match inbound.message().await {
        Ok(Some(RelayMessage {
            body: Some(relay_message::Body::Welcome(w)),
        })) => w,
        Ok(_) => return Err("the relay did not answer the hello with a welcome".into()),
        Err(s) => {
            return Err(format!(
                "{}: {}",
                writeback_core::failure_of(&s).reason,
                s.message()
            ));
        }
    };
    if welcome.protocol_version != TUNNEL_PROTOCOL_VERSION {
        return Err(format!(
            "relay speaks protocol {}",
            welcome.protocol_version
        ));
    }
    let offset = Arc::new(ClockOffset::default());
    if let Some(relay_time) = &welcome.relay_time {
        offset.from_round_trip(hello_sent, (options.clock.now)(), relay_time);
    }
    tracing::info!(relay = %url, relay_id = %welcome.relay_id,
        clock_offset_ms = ?offset.get(), "tunnel open");
    if let Err(f) = offset.check(options.clock.max_offset) {
        tracing::warn!(relay = %url, clock_offset_ms = ?offset.get(), "{}", f.message);
    }
    let _ = state.send(TunnelState::Connected(welcome.relay_id.clone()));
    let mut heartbeat = tokio::time::interval(Duration::from_secs(u64::from(
        welcome.heartbeat_interval_seconds.max(1),
    )));
    heartbeat.tick().await;
    let slots = Arc::new(Semaphore::new(options.max_in_flight.max(1) as usize));
    loop {
        tokio::select! {
            changed = tls.changed(), if watching_tls => {
                if changed.is_err() {
                    // Nobody renews any more: keep the config we have.
                    watching_tls = false;
                    continue;
                }
                // A renewed certificate: reconnect with it, leaving this
                // tunnel open for the results of operations in flight.
                tokio::spawn(drain(client, inbound));
                return Ok(End::GoAway("the agent's certificate was renewed".into()));
            }
            _ = heartbeat.tick() => {
                let beat = message(agent_message::Body::Heartbeat(Heartbeat { sent_at: Some(now_timestamp()) }));
                if tx.send(beat).await.is_err() {
                    return Ok(End::Closed);
                }
            }
            m = inbound.message() => match m {
                Ok(Some(RelayMessage { body: Some(relay_message::Body::Request(op)) })) => {
                    // The operation waits for a free slot in its own task, never
                    // here: this loop must keep sending heartbeats while
                    // `max_in_flight` slow operations run, or the relay would take
                    // the agent for dead. The relay's per-agent queue bounds how
                    // many wait.
                    if let Err(f) = offset.check(options.clock.max_offset) {
                        tracing::warn!(operation_id = %op.operation_id,
                            clock_offset_ms = ?offset.get(), "operation refused: clock skew");
                        let result = executor.refused(op, std::time::Instant::now(), f);
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let _ = tx.send(message(agent_message::Body::Result(result))).await;
                        });
                        continue;
                    }
                    let (executor, tx, slots) = (executor.clone(), tx.clone(), slots.clone());
                    let arrival = executor.arrive(&op);
                    tokio::spawn(async move {
                        let _arrival = arrival;
                        let Ok(_permit) = slots.acquire_owned().await else {
                            return;
                        };
                        let result = executor.execute(op).await;
                        let _ = tx.send(message(agent_message::Body::Result(result))).await;
                    });
                }
                Ok(Some(RelayMessage { body: Some(relay_message::Body::Probe(probe)) })) => {
                    if let Some(sent_at) = &probe.sent_at {
                        offset.from_one_way((options.clock.now)(), sent_at);
                    }
                    let clock_offset_ms = offset.get();
                    let max_clock_offset_ms =
                        u64::try_from(options.clock.max_offset.as_millis()).unwrap_or(u64::MAX);
                    let certificate_not_after = certificate.map(|c| prost_types::Timestamp {
                        seconds: c.borrow().not_after.unix_timestamp(),
                        nanos: 0,
                    });
                    let (executor, tx) = (executor.clone(), tx.clone());
                    tokio::spawn(async move {
                        // The rights and policy checks are cached by the health
                        // monitor; a probe waits for them only right after start-up,
                        // while the DCs are being bound to anyway.
                        let (dcs, checks) = tokio::join!(
                            executor.applier().health(),
                            executor.settled_checks(Duration::from_millis(1500)),
                        );
                        let report = HealthReport {
                            probe_id: probe.probe_id,
                            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                            domain_controllers: dcs,
                            permissions_ok: checks.permissions_ok,
                            policy_warnings: checks.policy_warnings,
                            clock_offset_ms,
                            max_clock_offset_ms,
                            certificate_not_after,
                        };
                        let _ = tx.send(message(agent_message::Body::Health(report))).await;
                    });
                }
                Ok(Some(RelayMessage { body: Some(relay_message::Body::GoAway(g)) })) => {
                    // Operations in flight still answer on this tunnel (the
                    // relay drains it) while we reconnect: keep it open until
                    // the relay ends it, which it does once every result is
                    // in (our side ends when the last operation drops its
                    // sender) or its drain period is over.
                    tokio::spawn(drain(client, inbound));
                    return Ok(End::GoAway(g.reason));
                }
                Ok(Some(_)) => tracing::warn!("unexpected relay message ignored"),
                Ok(None) => return Ok(End::Closed),
                Err(s) => return Err(format!("{}: {}", writeback_core::failure_of(&s).reason, s.message())),
            },
        }
    }
}
