//! One loopback address (127.0.0.2) floods the API — connections held open
//! without a TLS handshake, then call after call — and is refused past its
//! share (`RESOURCE_EXHAUSTED`, `RATE_LIMITED`), while another address
//! (127.0.0.3) is still answered at once; one tenant's calls share the
//! tenant's allowance wherever they come from (`[limits]`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use writeback_control_plane::config::ApiLimitsConfig;
use writeback_core::{ReasonCode, failure_of};
use writeback_proto::v1 as pb;

use crate::harness::TestDb;
use crate::support::{Client, Options, TestCp};

const FLOODER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// What "at once" means for the address that is not flooding.
const PROMPTLY: Duration = Duration::from_secs(2);

/// No rate limits; 4 handshakes at once per source, 5 s each.
fn limits() -> ApiLimitsConfig {
    ApiLimitsConfig {
        max_handshakes_per_source: 4,
        handshake_timeout_seconds: 5,
        calls_per_minute_per_source: 0,
        calls_per_minute_per_tenant: 0,
        ..ApiLimitsConfig::default()
    }
}

/// A control plane with `limits` on a fresh SQLite file (kept with it).
async fn start(limits: ApiLimitsConfig) -> (TestDb, TestCp) {
    let db = TestDb::sqlite();
    let t = TestCp::start(
        &db,
        Options {
            limits,
            ..Options::default()
        },
    )
    .await;
    (db, t)
}

async fn get_settings(c: &Client) -> Result<pb::Settings, tonic::Status> {
    c.settings()
        .get_settings(pb::GetSettingsRequest {})
        .await
        .map(tonic::Response::into_inner)
}

/// `source` gets its settings at once with the administrator's token.
async fn answered_promptly(t: &TestCp, source: Ipv4Addr) {
    let c = t.client_from(Some(&t.admin_token), source.into());
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), get_settings(&c)).await;
    let took = started.elapsed();
    assert!(matches!(answer, Ok(Ok(_))), "{source}: {answer:?}");
    assert!(took < PROMPTLY, "{source} waited {took:?}");
}

/// 300 connections from one address that never start their handshake —
/// more than the 256 handshakes the API runs at once: 4 (its share) are
/// held until the handshake timeout, the other 296 are closed as soon as
/// they are accepted, and another address is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_held_open_from_one_address_leave_room_for_the_others() {
    let (_db, t) = start(limits()).await;
    let addr: SocketAddr = t.url.trim_start_matches("https://").parse().unwrap();
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((FLOODER, 0))).unwrap();
        let mut tcp = socket.connect(addr).await.unwrap();
        checks.spawn(async move {
            let mut byte = [0u8; 1];
            let closed = matches!(
                tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut byte)).await,
                Ok(Ok(0) | Err(_))
            );
            (closed, tcp)
        });
    }
    let (mut closed, mut held) = (0, Vec::new());
    while let Some(checked) = checks.join_next().await {
        let (was_closed, tcp) = checked.unwrap();
        if was_closed {
            closed += 1;
        } else {
            held.push(tcp);
        }
    }
    assert_eq!(
        (closed, held.len()),
        (296, 4),
        "the flooder's handshakes past its share are closed at once"
    );
    answered_promptly(&t, OTHER).await;
    drop(held);
    t.stop().await;
}

/// 30 calls from one address with a burst of 10 and 1 a minute after it:
/// 10 are answered, 20 refused `RESOURCE_EXHAUSTED` with `RATE_LIMITED`
/// and a retry time, before their token is even looked at; another
/// address is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_calls_from_one_address_is_rate_limited() {
    let (_db, t) = start(ApiLimitsConfig {
        calls_per_minute_per_source: 1,
        burst_per_source: 10,
        ..limits()
    })
    .await;
    let flooder = t.client_from(Some(&t.admin_token), FLOODER.into());
    let mut refused = Vec::new();
    let mut answered = 0;
    for _ in 0..30 {
        match get_settings(&flooder).await {
            Ok(_) => answered += 1,
            Err(s) => refused.push(s),
        }
    }
    assert_eq!((answered, refused.len()), (10, 20), "{refused:?}");
    for s in &refused {
        assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
        let f = failure_of(s);
        assert_eq!(f.reason, ReasonCode::RateLimited, "{s:?}");
        assert!(
            f.retry_after
                .is_some_and(|d| (1..=60).contains(&d.as_secs())),
            "{f:?}"
        );
    }
    // Refused before authentication: an anonymous call is refused alike.
    let anonymous = t.client_from(None, FLOODER.into());
    let s = get_settings(&anonymous).await.unwrap_err();
    assert_eq!(failure_of(&s).reason, ReasonCode::RateLimited);
    answered_promptly(&t, OTHER).await;
    t.stop().await;
}

/// One tenant's calls share its allowance (burst 10, 1 a minute after it)
/// from whichever address they come: 10 answered, then `RATE_LIMITED`
/// from both; a call that names no tenant (gRPC health) is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_s_calls_share_its_allowance_from_every_address() {
    let (_db, t) = start(ApiLimitsConfig {
        calls_per_minute_per_tenant: 1,
        burst_per_tenant: 10,
        ..limits()
    })
    .await;
    let sources: [IpAddr; 2] = [FLOODER.into(), OTHER.into()];
    let clients = sources.map(|s| t.client_from(Some(&t.admin_token), s));
    let mut reasons = Vec::new();
    for i in 0..20 {
        let r = get_settings(&clients[i % 2]).await;
        reasons.push(r.map_or_else(|s| failure_of(&s).reason, |_| ReasonCode::Ok));
    }
    let ok = reasons.iter().filter(|r| **r == ReasonCode::Ok).count();
    let limited = reasons
        .iter()
        .filter(|r| **r == ReasonCode::RateLimited)
        .count();
    // The rig's own calls before (none but health) do not count.
    assert_eq!((ok, limited), (10, 10), "{reasons:?}");
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let health = HealthClient::new(t.client_from(None, OTHER.into()).channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");
    t.stop().await;
}
