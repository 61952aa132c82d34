//! An agent whose clock is far from the relay's cannot trust an operation's
//! expiry: it reports the offset in its health (measured from the relay's
//! time in the Welcome and in each probe) and refuses every operation with
//! CLOCK_SKEW, applying nothing; an agent within the tolerance works and
//! reports a small offset.
//!
//! The relay's time is only the relay's word. A relay that sends none (or
//! lies) cannot hide a slow clock: the agent's reference is the control
//! plane's time signed into every operation (security round two, issue 25,
//! item 10), so an agent a minute behind refuses even a fresh operation
//! and a replayed, expired one; and an agent a little behind (within the
//! tolerance) that has seen the control plane's time does not take an
//! operation that expired by it for a live one.

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use writeback_agent::clock::{ClockCheck, DEFAULT_MAX_CLOCK_OFFSET};
use writeback_proto::v1 as pb;
use writeback_proto::v1::agent_tunnel_server::{AgentTunnel, AgentTunnelServer};

use crate::*;

fn a_minute_ahead() -> SystemTime {
    SystemTime::now() + Duration::from_secs(60)
}

fn five_seconds_behind() -> SystemTime {
    SystemTime::now() - Duration::from_secs(5)
}

async fn offsets(cp: &RelayDispatchClient<Channel>) -> Vec<(String, Option<i64>, u64)> {
    let mut out: Vec<_> = cp
        .clone()
        .probe_health(pb::ProbeHealthRequest {
            tenant: TENANT.into(),
            domain: CONTOSO.into(),
            timeout_ms: 5_000,
        })
        .await
        .unwrap()
        .into_inner()
        .agents
        .into_iter()
        .map(|a| {
            let report = a.report.expect("a health report");
            (
                a.identity.unwrap().agent_id,
                report.clock_offset_ms,
                report.max_clock_offset_ms,
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn an_agent_with_a_skewed_clock_refuses_and_says_so() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp = pki.control_plane(&relay.url);
    let skewed = TestApplier::new(Mode::Answer);
    let mut fast = TestAgent::start_with_clock(
        &pki,
        &[&relay.url],
        CONTOSO,
        "fast",
        skewed.clone(),
        ClockCheck {
            now: a_minute_ahead,
            ..ClockCheck::default()
        },
    );
    fast.connected().await;

    let r = dispatch(
        &cp,
        unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let o = r.outcome.as_ref().unwrap();
    assert_eq!(o.reason_code, "CLOCK_SKEW", "{o:?}");
    assert!(!o.applied);
    assert!(o.message.contains("ahead of the relay's"), "{o:?}");
    assert!(o.message.contains("nothing was changed"), "{o:?}");
    assert_eq!(skewed.count(), 0, "nothing reached the directory");
    let [(id, offset, max)] = offsets(&cp).await.try_into().unwrap();
    assert_eq!(id, "fast");
    let offset = offset.expect("an offset");
    assert!((59_000..61_000).contains(&offset), "{offset}");
    assert_eq!(max, DEFAULT_MAX_CLOCK_OFFSET.as_millis() as u64);
    fast.stop().await;

    // Five seconds behind is within the default ten: it works, and says so.
    let fine = TestApplier::new(Mode::Answer);
    let mut slow = TestAgent::start_with_clock(
        &pki,
        &[&relay.url],
        CONTOSO,
        "slow",
        fine.clone(),
        ClockCheck {
            now: five_seconds_behind,
            ..ClockCheck::default()
        },
    );
    slow.connected().await;
    relay.wait_tunnels(1).await;
    let r = dispatch(
        &cp,
        unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(10)),
    )
    .await
    .unwrap();
    assert_eq!(reason(&r), "OK");
    assert_eq!(fine.count(), 1);
    let [(id, offset, _)] = offsets(&cp).await.try_into().unwrap();
    assert_eq!(id, "slow");
    let offset = offset.expect("an offset");
    assert!((-6_000..-4_000).contains(&offset), "{offset}");
    slow.stop().await;
}

fn a_minute_behind() -> SystemTime {
    SystemTime::now() - Duration::from_secs(60)
}

fn nine_seconds_behind() -> SystemTime {
    SystemTime::now() - Duration::from_secs(9)
}

/// A relay that sends no time: it welcomes one agent without a
/// `relay_time`, never probes it, and hands it whatever operations the test
/// sends (as a compromised relay may, replays included).
struct TimelessRelay {
    url: String,
    ops: mpsc::Sender<pb::OperationRequest>,
    results: Mutex<mpsc::Receiver<pb::OperationResult>>,
}

struct TimelessTunnel {
    ops: std::sync::Mutex<Option<mpsc::Receiver<pb::OperationRequest>>>,
    results: mpsc::Sender<pb::OperationResult>,
}

type RelayStream = Pin<Box<dyn Stream<Item = Result<pb::RelayMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentTunnel for TimelessTunnel {
    type OpenStream = RelayStream;

    async fn open(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<RelayStream>, Status> {
        let mut inbound = req.into_inner();
        let _hello = inbound.message().await?;
        let ops = self
            .ops
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| Status::unavailable("one tunnel only"))?;
        let results = self.results.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(pb::agent_message::Body::Result(r)) = m.body {
                    let _ = results.send(r).await;
                }
            }
        });
        let welcome = pb::RelayMessage {
            body: Some(pb::relay_message::Body::Welcome(pb::Welcome {
                protocol_version: writeback_proto::TUNNEL_PROTOCOL_VERSION,
                relay_id: "timeless".into(),
                heartbeat_interval_seconds: 1,
                relay_time: None,
            })),
        };
        let requests = ReceiverStream::new(ops).map(|op| {
            Ok(pb::RelayMessage {
                body: Some(pb::relay_message::Body::Request(op)),
            })
        });
        Ok(Response::new(Box::pin(
            futures::stream::once(async { Ok(welcome) }).chain(requests),
        )))
    }
}

impl TimelessRelay {
    async fn start(pki: &Pki) -> TimelessRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let id = writeback_identity::SpiffeId::Relay {
            tenant: TENANT.to_owned(),
            relay_id: "timeless".to_owned(),
        };
        let (chain, key) = pki
            .ca
            .issue_service(
                &id,
                &["localhost".to_owned()],
                &[std::net::IpAddr::from([127, 0, 0, 1])],
            )
            .unwrap();
        let config = writeback_identity::tls::server_config(&chain, &key, None).unwrap();
        let (ops, ops_rx) = mpsc::channel(8);
        let (results_tx, results) = mpsc::channel(8);
        let service = AgentTunnelServer::new(TimelessTunnel {
            ops: std::sync::Mutex::new(Some(ops_rx)),
            results: results_tx,
        });
        let incoming = writeback_identity::transport::tls_incoming(listener, config);
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        TimelessRelay {
            url,
            ops,
            results: Mutex::new(results),
        }
    }

    /// Hands `op` to the agent and waits for its result.
    async fn send(&self, op: pb::OperationRequest) -> pb::OperationResult {
        self.ops.send(op).await.unwrap();
        tokio::time::timeout(WAIT, self.results.lock().await.recv())
            .await
            .expect("the agent answers")
            .expect("the tunnel is open")
    }
}

/// An unlock signed now that expires after `ttl`; or, with `age`, one the
/// control plane signed `age` ago (and so expired `age - ttl` ago).
fn signed_unlock(ttl: Duration, age: Duration) -> pb::OperationRequest {
    let signed_at = time::OffsetDateTime::now_utc() - age;
    let expires = signed_at + ttl;
    let mut op = unlock(CONTOSO, "alice@contoso.test", ttl);
    op.expires_at = Some(prost_types::Timestamp {
        seconds: expires.unix_timestamp(),
        nanos: 0,
    });
    op.issued_at = Some(prost_types::Timestamp {
        seconds: signed_at.unix_timestamp(),
        nanos: 0,
    });
    SIGNER.sign(&mut op);
    op
}

#[tokio::test]
async fn a_relay_that_sends_no_time_cannot_hide_a_slow_clock() {
    let pki = Pki::new(TENANT);

    // A minute behind, behind a relay that sends no time: a fresh
    // operation and a replayed, long-expired one are both refused.
    let relay = TimelessRelay::start(&pki).await;
    let applier = TestApplier::new(Mode::Answer);
    let mut slow = TestAgent::start_with_clock(
        &pki,
        &[&relay.url],
        CONTOSO,
        "slow",
        applier.clone(),
        ClockCheck {
            now: a_minute_behind,
            ..ClockCheck::default()
        },
    );
    slow.connected().await;
    let fresh = relay
        .send(signed_unlock(Duration::from_secs(10), Duration::ZERO))
        .await;
    let o = fresh.outcome.as_ref().unwrap();
    assert_eq!(o.reason_code, "CLOCK_SKEW", "{o:?}");
    assert!(o.message.contains("behind the control plane's"), "{o:?}");
    assert!(o.message.contains("nothing was changed"), "{o:?}");
    // Signed 40 s ago, expired 30 s ago: by the agent's clock it has 30 s
    // to go.
    let replayed = relay
        .send(signed_unlock(
            Duration::from_secs(10),
            Duration::from_secs(40),
        ))
        .await;
    assert_ne!(reason(&replayed), "OK", "{replayed:?}");
    assert_eq!(applier.count(), 0, "nothing reached the directory");
    slow.stop().await;

    // Nine seconds behind (within the tolerance): it works, and once it
    // has seen the control plane's time, an operation that expired 4 s ago
    // (signed 14 s ago) is expired, though its own clock says 5 s are left.
    let relay = TimelessRelay::start(&pki).await;
    let applier = TestApplier::new(Mode::Answer);
    let mut almost = TestAgent::start_with_clock(
        &pki,
        &[&relay.url],
        CONTOSO,
        "almost",
        applier.clone(),
        ClockCheck {
            now: nine_seconds_behind,
            ..ClockCheck::default()
        },
    );
    almost.connected().await;
    let fresh = relay
        .send(signed_unlock(Duration::from_secs(10), Duration::ZERO))
        .await;
    assert_eq!(reason(&fresh), "OK", "{fresh:?}");
    assert_eq!(applier.count(), 1);
    let late = relay
        .send(signed_unlock(
            Duration::from_secs(10),
            Duration::from_secs(14),
        ))
        .await;
    assert_eq!(reason(&late), "OPERATION_EXPIRED", "{late:?}");
    assert_eq!(applier.count(), 1, "the expired one was not applied");
    almost.stop().await;
}
