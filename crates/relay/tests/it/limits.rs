//! Limits: tunnels per identity, message size, heartbeat silence, the
//! health service, and the tracing fields on the relay path.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use writeback_core::{ReasonCode, failure_of};
use writeback_proto::v1 as pb;

use crate::*;

/// A reconnect storm cannot pile up tunnels of one identity: past the
/// per-agent limit, new tunnels get OVERLOADED at once; when the storm
/// passes the agent connects normally.
#[tokio::test]
async fn tunnels_per_identity_are_limited() {
    let pki = Pki::new(TENANT);
    let mut settings = RelaySettings::default();
    settings.limits.max_tunnels_per_agent = 3;
    let relay = TestRelay::start(&pki, "relay-1", settings).await;
    let identity = pb::AgentIdentity {
        tenant: TENANT.into(),
        domain: CONTOSO.into(),
        agent_id: "a1".into(),
    };
    // Three tunnels that never say Hello hold their slots.
    let mut stuck = Vec::new();
    for _ in 0..3 {
        let url = relay.url.clone();
        let tls = pki.agent_tls(CONTOSO, "a1");
        stuck.push(tokio::spawn(async move {
            raw_open(&url, tls, None).await.map(|_| ())
        }));
    }
    let deadline = Instant::now() + WAIT;
    while relay.relay.registry().tunnels_of(&identity) < 3 {
        assert!(Instant::now() < deadline, "the stuck tunnels never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let err = raw_open(
        &relay.url,
        pki.agent_tls(CONTOSO, "a1"),
        Some(hello(TENANT, CONTOSO, "a1")),
    )
    .await
    .expect_err("over the limit");
    assert_eq!(failure_of(&err).reason, ReasonCode::Overloaded);
    // Refused at once, not after the Hello timeout (10 s).
    assert!(started.elapsed() < Duration::from_secs(5));
    // Another identity is not affected.
    let _a2 = raw_open(
        &relay.url,
        pki.agent_tls(CONTOSO, "a2"),
        Some(hello(TENANT, CONTOSO, "a2")),
    )
    .await
    .expect("another agent connects");
    // The storm passes; the agent gets in.
    for s in &stuck {
        s.abort();
    }
    let deadline = Instant::now() + WAIT;
    while relay.relay.registry().tunnels_of(&identity) > 0 {
        assert!(
            Instant::now() < deadline,
            "the aborted tunnels were never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut a1 = TestAgent::start(
        &pki,
        &[&relay.url],
        CONTOSO,
        "a1",
        TestApplier::new(Mode::Answer),
    );
    a1.connected().await;
    relay.wait_tunnels(2).await;
    // A sequential storm of reconnects (each client keeps its tunnel
    // open) ends with one tunnel and one slot in use.
    let mut storm = Vec::new();
    for _ in 0..10 {
        storm.push(
            raw_open(
                &relay.url,
                pki.agent_tls(CONTOSO, "a3"),
                Some(hello(TENANT, CONTOSO, "a3")),
            )
            .await
            .expect("a reconnect replaces the previous tunnel"),
        );
    }
    relay.wait_tunnels(3).await;
    let a3 = pb::AgentIdentity {
        agent_id: "a3".into(),
        ..identity
    };
    let deadline = Instant::now() + WAIT;
    while relay.relay.registry().tunnels_of(&a3) != 1 {
        assert!(
            Instant::now() < deadline,
            "replaced tunnels keep their slots"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Messages over the configured maximum are refused in both directions:
/// an oversized tunnel message ends that tunnel, an oversized dispatch is
/// refused before it reaches an agent.
#[tokio::test]
async fn oversized_messages_are_refused() {
    let pki = Pki::new(TENANT);
    let settings = RelaySettings {
        max_message_bytes: 64 * 1024,
        ..RelaySettings::default()
    };
    let relay = TestRelay::start(&pki, "relay-1", settings).await;
    let cp = pki.control_plane(&relay.url);
    let applier = TestApplier::new(Mode::Answer);
    let mut a2 = TestAgent::start(&pki, &[&relay.url], CONTOSO, "a2", applier.clone());
    a2.connected().await;

    let big = |agent_id: &str| {
        let mut op = unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(5));
        op.envelope = Some(pb::PasswordEnvelope {
            version: 1,
            copies: vec![pb::SealedCopy {
                agent_id: agent_id.into(),
                encapsulated_key: vec![0; 32],
                ciphertext: vec![1; 100 * 1024],
            }],
        });
        op
    };
    let err = dispatch(&cp, big("a2")).await.expect_err("too large");
    assert_eq!(err.reason, ReasonCode::Internal, "{err:?}");
    assert!(err.message.contains("too large"), "{err:?}");
    assert_eq!(applier.count(), 0);

    let raw = raw_open(
        &relay.url,
        pki.agent_tls(CONTOSO, "a1"),
        Some(hello(TENANT, CONTOSO, "a1")),
    )
    .await
    .unwrap();
    let mut inbound = raw.inbound;
    inbound.message().await.unwrap().unwrap();
    relay.wait_tunnels(2).await;
    raw.tx
        .send(pb::AgentMessage {
            body: Some(pb::agent_message::Body::Health(pb::HealthReport {
                probe_id: String::new(),
                agent_version: "x".repeat(100 * 1024),
                domain_controllers: vec![],
                permissions_ok: true,
                ..Default::default()
            })),
        })
        .await
        .unwrap();
    relay.wait_tunnels(1).await;
    assert_eq!(
        relay.relay.registry().agents(TENANT, CONTOSO)[0]
            .identity
            .agent_id,
        "a2"
    );
    let end = tokio::time::timeout(WAIT, inbound.message()).await.unwrap();
    assert!(!matches!(end, Ok(Some(_))), "the tunnel ended: {end:?}");
    // Normal-sized traffic still flows.
    let ok = dispatch(
        &cp,
        unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert_eq!(reason(&ok), "OK");
}

/// A tunnel silent past the heartbeat limit is dropped; an agent that
/// sends its heartbeats is kept.
#[tokio::test]
async fn heartbeat_silence_drops_the_tunnel() {
    let pki = Pki::new(TENANT);
    let settings = RelaySettings {
        heartbeat: Duration::from_secs(1),
        heartbeat_timeout: Duration::from_millis(2500),
        ..RelaySettings::default()
    };
    let relay = TestRelay::start(&pki, "relay-1", settings).await;
    let mut alive = TestAgent::start(
        &pki,
        &[&relay.url],
        CONTOSO,
        "a1",
        TestApplier::new(Mode::Answer),
    );
    alive.connected().await;
    let silent = raw_open(
        &relay.url,
        pki.agent_tls(CONTOSO, "s1"),
        Some(hello(TENANT, CONTOSO, "s1")),
    )
    .await
    .unwrap();
    let mut inbound = silent.inbound;
    inbound.message().await.unwrap().unwrap();
    relay.wait_tunnels(2).await;
    let started = Instant::now();
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match inbound.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the silent tunnel is dropped");
    let took = started.elapsed();
    assert!(end.is_err() || matches!(end, Ok(None)));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(7),
        "dropped after {took:?}"
    );
    relay.wait_tunnels(1).await;
    // The heartbeating agent is still there after several limits.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let left = relay.relay.registry().agents(TENANT, CONTOSO);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].identity.agent_id, "a1");
    drop(silent.tx);
}

/// The standard gRPC health service answers SERVING for the relay's
/// services (to a client the relay admits).
#[tokio::test]
async fn the_health_service_answers() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp_id = writeback_identity::SpiffeId::ControlPlane {
        tenant: TENANT.into(),
    };
    let (chain, key) = pki.ca.issue_service(&cp_id, &[], &[]).unwrap();
    let tls = writeback_identity::tls::client_config(
        writeback_identity::tls::roots_from_pem(pki.ca.cert_pem()).unwrap(),
        Some((&chain, &key)),
    )
    .unwrap();
    let mut health =
        HealthClient::new(writeback_identity::transport::channel(&relay.url, tls).unwrap());
    for service in ["", "writeback.v1.AgentTunnel", "writeback.v1.RelayDispatch"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let err = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "writeback.v1.Nothing".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line on the relay path of an operation carries its
/// operation_id, tenant, domain and the agent_id it was routed to.
#[tokio::test]
async fn the_relay_path_is_traced_with_operation_tenant_domain_and_agent() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("writeback_relay=debug"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp = pki.control_plane(&relay.url);
    let applier = TestApplier::new(Mode::Answer);
    let mut a = TestAgent::start(&pki, &[&relay.url], CONTOSO, "a1", applier);
    a.connected().await;
    let op = unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(5));
    let id = op.operation_id.clone();
    dispatch(&cp, op).await.unwrap();
    let none = unlock(FABRIKAM, "bob@fabrikam.test", Duration::from_secs(5));
    let none_id = none.operation_id.clone();
    dispatch(&cp, none).await.unwrap_err();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let answered = text
        .lines()
        .find(|l| l.contains("operation answered"))
        .unwrap_or_else(|| panic!("no answer logged:\n{text}"));
    for field in [
        format!("operation_id={id}"),
        format!("tenant={TENANT}"),
        format!("domain={CONTOSO}"),
        "agent_id=a1".to_owned(),
    ] {
        assert!(answered.contains(&field), "{field} missing in {answered}");
    }
    let refused = text
        .lines()
        .find(|l| l.contains("operation not routed"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{text}"));
    assert!(
        refused.contains(&format!("operation_id={none_id}")),
        "{refused}"
    );
    assert!(refused.contains(&format!("domain={FABRIKAM}")), "{refused}");
    assert!(refused.contains("NO_AGENT_ONLINE"), "{refused}");
    let opened = text
        .lines()
        .find(|l| l.contains("agent tunnel open"))
        .unwrap_or_else(|| panic!("no tunnel logged:\n{text}"));
    assert!(opened.contains("agent_id=a1") && opened.contains(&format!("domain={CONTOSO}")));
}
