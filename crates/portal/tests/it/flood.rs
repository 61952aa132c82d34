//! One loopback address (127.0.0.2) floods the portal — connections held
//! open without a TLS handshake, then `GET /signin` after `GET /signin` —
//! and is refused past its share, while another address (127.0.0.3) is
//! still answered at once.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use writeback_portal::config::PortalLimits;

use crate::support::{AUTHORIZE, TestPortal, closed_within, header};

const FLOODER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// What "at once" means for the address that is not flooding.
const PROMPTLY: Duration = Duration::from_secs(2);

/// Small limits, so a test's flood is small too.
fn limits() -> PortalLimits {
    PortalLimits {
        max_sessions: 1000,
        max_pending_signins_per_source: 1000,
        signins_per_minute_per_source: 0,
        signin_burst_per_source: 0,
        max_connections: 24,
        max_connections_per_source: 8,
        handshake_timeout_seconds: 5,
        header_read_timeout_seconds: 2,
    }
}

/// `GET /signin` from `source` is sent on to the provider, promptly.
async fn signs_in_promptly(portal: &TestPortal, source: Ipv4Addr) {
    let started = Instant::now();
    let (status, answer) = portal
        .get(source, "/signin?next=/me")
        .await
        .expect("an answer");
    let took = started.elapsed();
    assert_eq!(status, 303, "{answer}");
    assert!(
        header(&answer, "location").is_some_and(|l| l.starts_with(AUTHORIZE)),
        "{answer}"
    );
    assert!(took < PROMPTLY, "{source} waited {took:?}");
}

/// 40 connections from one address that never start their handshake: 8
/// (its share) are held until the handshake timeout, the other 32 are
/// closed as soon as they are accepted — even though 24 places are open in
/// all — and another address signs in at once. Each held connection is
/// cut when its 5 s are up; a connection that sends half a request head is
/// cut after the 2 s header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_held_open_from_one_address_leave_room_for_the_others() {
    let portal = TestPortal::start(limits()).await;
    let opened = Instant::now();
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let mut tcp = portal.dial(FLOODER).await;
        checks.spawn(async move {
            let closed = closed_within(&mut tcp, Duration::from_secs(1)).await;
            (closed, tcp)
        });
    }
    let mut held = Vec::new();
    let mut closed = 0;
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
        (32, 8),
        "the flooder's connections past its share are closed at once"
    );
    assert_eq!(portal.app.limits.connections.taken(FLOODER.into()), (8, 8));

    signs_in_promptly(&portal, OTHER).await;

    // The handshake timeout ends the held ones.
    for tcp in &mut held {
        assert!(closed_within(tcp, Duration::from_secs(8)).await);
    }
    let cut = opened.elapsed();
    assert!(
        cut >= Duration::from_secs(4) && cut < Duration::from_secs(9),
        "cut after {cut:?}"
    );

    // Half a request head after the handshake: cut at the header timeout.
    let tcp = portal.dial(OTHER).await;
    let connector = tokio_rustls::TlsConnector::from(portal.client());
    let name = rustls::pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /me HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(6),
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut rest),
    )
    .await;
    assert!(read.is_ok(), "the half-sent request was never cut");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// 30 sign-ins from one address, each on a connection of its own, with a
/// burst of 10 and 1 a minute after it: 10 go on to the provider, 20 are
/// answered `429` with a page saying `RATE_LIMITED` and `Retry-After`; the
/// other address signs in at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sign_ins_from_one_address_is_answered_429() {
    let portal = TestPortal::start(PortalLimits {
        signins_per_minute_per_source: 1,
        signin_burst_per_source: 10,
        ..limits()
    })
    .await;
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..30 {
        let (status, answer) = portal.get(FLOODER, "/signin?next=/me").await.unwrap();
        statuses.push(status);
        if status == 429 {
            refused = Some(answer);
        }
    }
    let count = |s: u16| statuses.iter().filter(|x| **x == s).count();
    assert_eq!((count(303), count(429)), (10, 20), "{statuses:?}");
    let refused = refused.unwrap();
    let retry: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(
        refused.contains("data-reason=\"RATE_LIMITED\""),
        "{refused}"
    );
    assert!(refused.contains("Try again in"), "{refused}");
    // The refused ones made no session.
    assert_eq!(portal.app.sessions.counts(), (10, 0));

    signs_in_promptly(&portal, OTHER).await;
}

/// Without a rate limit, 30 sign-ins from one address, none finished:
/// the first 15 (its share of sign-ins in progress) make a session each,
/// the rest are answered `429`; the other address still gets a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_in_progress_from_one_address_are_capped() {
    let portal = TestPortal::start(PortalLimits {
        max_pending_signins_per_source: 15,
        ..limits()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let (status, _) = portal.get(FLOODER, "/signin?next=/me").await.unwrap();
        statuses.push(status);
    }
    let count = |s: u16| statuses.iter().filter(|x| **x == s).count();
    assert_eq!((count(303), count(429)), (15, 15), "{statuses:?}");
    assert_eq!(portal.app.sessions.counts(), (15, 0));

    signs_in_promptly(&portal, OTHER).await;
    assert_eq!(portal.app.sessions.counts(), (16, 0));
}
