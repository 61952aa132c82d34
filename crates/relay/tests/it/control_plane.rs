//! The relays seen from the control plane: its Dispatcher routes through
//! several relays by presence, and revoking an agent (`writebackctl agent
//! revoke`) reaches every relay, including one that restarts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use writeback_agent::runtime::RunningAgent;
use writeback_control_plane::dispatcher::Dispatcher;
use writeback_core::{ReasonCode, failure_of};
use writeback_identity::tls;
use writeback_proto::v1 as pb;
use writeback_testkit::stack::Stack;

use crate::*;

async fn wait_online(d: &Dispatcher, domain: &str, want: &[&str]) {
    let want: HashSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    let deadline = Instant::now() + WAIT;
    while d.online_agents(TENANT, domain) != want {
        assert!(
            Instant::now() < deadline,
            "presence says {:?}, expected {want:?}",
            d.online_agents(TENANT, domain)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two relays with the agents split between them: every operation is
/// routed, each applied once, and when one relay goes away its agents move
/// to the other and routing goes on.
#[tokio::test]
async fn two_relays_with_split_agents_route_every_operation() {
    let pki = Pki::new(TENANT);
    let r1 = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let r2 = TestRelay::start(&pki, "relay-2", RelaySettings::default()).await;
    let mut a1 = TestAgent::start(
        &pki,
        &[&r1.url, &r2.url],
        CONTOSO,
        "a1",
        TestApplier::new(Mode::Answer),
    );
    let mut a2 = TestAgent::start(
        &pki,
        &[&r2.url, &r1.url],
        CONTOSO,
        "a2",
        TestApplier::new(Mode::Answer),
    );
    let mut f1 = TestAgent::start(
        &pki,
        &[&r2.url, &r1.url],
        FABRIKAM,
        "f1",
        TestApplier::new(Mode::Answer),
    );
    assert_eq!(a1.connected().await, "relay-1");
    assert_eq!(a2.connected().await, "relay-2");
    assert_eq!(f1.connected().await, "relay-2");
    let dispatcher = Dispatcher::new(
        pki.ca.clone(),
        SIGNER.clone(),
        vec![r1.url.clone(), r2.url.clone()],
    );
    wait_online(&dispatcher, CONTOSO, &["a1", "a2"]).await;
    wait_online(&dispatcher, FABRIKAM, &["f1"]).await;

    let run = |n: usize| {
        let calls = (0..n).map(|i| {
            let d = dispatcher.clone();
            let domain = if i % 3 == 2 { FABRIKAM } else { CONTOSO };
            async move {
                let op = unlock(domain, "u@x", Duration::from_secs(10));
                let id = op.operation_id.clone();
                (id, d.dispatch(op, Duration::from_secs(10)).await)
            }
        });
        futures::future::join_all(calls)
    };
    let results = run(30).await;
    for (id, r) in &results {
        let r = r.as_ref().unwrap_or_else(|f| panic!("{id}: {f:?}"));
        assert_eq!(reason(r.result.as_ref().unwrap()), "OK");
        let applied = a1.applier.count_of(id) + a2.applier.count_of(id) + f1.applier.count_of(id);
        assert_eq!(applied, 1, "{id} applied {applied} times");
    }
    assert_eq!(f1.applier.count(), 10);
    assert!(
        a1.applier.count() > 0 && a2.applier.count() > 0,
        "both relays carry traffic"
    );
    let relays: HashSet<String> = results
        .iter()
        .map(|(_, r)| r.as_ref().unwrap().relay_id.clone())
        .collect();
    assert_eq!(relays.len(), 2);

    // relay-2 goes away; its agents move to relay-1 and routing goes on.
    r2.stop().await;
    assert_eq!(a2.connected().await, "relay-1");
    tokio::time::timeout(
        WAIT,
        f1.state
            .wait_for(|s| *s == writeback_agent::tunnel::TunnelState::Connected("relay-1".into())),
    )
    .await
    .unwrap()
    .unwrap();
    wait_online(&dispatcher, CONTOSO, &["a1", "a2"]).await;
    wait_online(&dispatcher, FABRIKAM, &["f1"]).await;
    for (id, r) in run(9).await {
        let r = r.unwrap_or_else(|f| panic!("{id}: {f:?}"));
        assert_eq!(r.relay_id, "relay-1");
        assert_eq!(reason(r.result.as_ref().unwrap()), "OK");
    }
}

struct Enrolled {
    agent_id: String,
    dir: std::path::PathBuf,
    _stop: tokio::sync::watch::Sender<bool>,
    agent: RunningAgent,
}

async fn enroll_and_start(stack: &Stack, name: &str, applier: Arc<TestApplier>) -> Enrolled {
    let admin = stack.admin().unwrap();
    let token = admin
        .agents()
        .create_enrollment_token(admin.request(pb::CreateEnrollmentTokenRequest {
            domain: CONTOSO.into(),
            ttl_seconds: 600,
        }))
        .await
        .unwrap()
        .into_inner()
        .token;
    let dir = stack.dir.path().join(name);
    let enrollment = writeback_agent::enroll::enroll(&stack.cp_url, &token, &dir)
        .await
        .unwrap();
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let mut agent = writeback_agent::runtime::start(&dir, applier, 4, None, async move {
        let _ = rx.wait_for(|v| *v).await;
    })
    .await
    .unwrap();
    agent.wait_connected(WAIT).await.unwrap();
    Enrolled {
        agent_id: enrollment.agent_id,
        dir,
        _stop: stop,
        agent,
    }
}

fn tls_of(dir: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let state = writeback_agent::state::AgentState::load(dir).unwrap();
    tls::client_config(
        tls::roots_from_pem(&state.ca_pem).unwrap(),
        Some((&state.cert_pem, state.key_pem.as_str())),
    )
    .unwrap()
}

/// `agent revoke` marks the agent revoked in the store and the relays drop
/// its open tunnel and refuse it from then on — also a relay that restarts
/// and learns the list again from the control plane.
#[tokio::test]
async fn a_revoked_agent_is_dropped_and_refused_by_the_relays() {
    init_tracing();
    let mut stack = Stack::start(TENANT, 1).await.unwrap();
    let admin = stack.admin().unwrap();
    admin
        .domains()
        .add_domain(admin.request(pb::AddDomainRequest {
            name: CONTOSO.into(),
            upn_suffixes: vec![],
        }))
        .await
        .unwrap();
    let revoked_applier = TestApplier::new(Mode::Answer);
    let revoked = enroll_and_start(&stack, "agent-1", revoked_applier.clone()).await;
    let kept = enroll_and_start(&stack, "agent-2", TestApplier::new(Mode::Answer)).await;
    let registry = stack.relays[0].relay.registry().clone();
    let ids = |r: &writeback_relay::Registry| -> HashSet<String> {
        r.agents(TENANT, CONTOSO)
            .iter()
            .map(|c| c.identity.agent_id.clone())
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    while ids(&registry).len() != 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let row = admin
        .agents()
        .revoke_agent(admin.request(pb::RevokeAgentRequest {
            agent_id: revoked.agent_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(row.revoked);
    // The revocation reached the relay before the call returned.
    assert_eq!(ids(&registry), HashSet::from([kept.agent_id.clone()]));
    let err = raw_open(
        &stack.relays[0].url,
        tls_of(&revoked.dir),
        Some(hello(TENANT, CONTOSO, &revoked.agent_id)),
    )
    .await
    .expect_err("refused");
    assert_eq!(failure_of(&err).reason, ReasonCode::AgentRevoked);
    // The agent keeps retrying by itself and stays out.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(ids(&registry), HashSet::from([kept.agent_id.clone()]));
    assert!(!matches!(
        *revoked.agent.state.borrow(),
        writeback_agent::tunnel::TunnelState::Connected(_)
    ));

    // The relay restarts (same address) and knows nothing; the control
    // plane gives it the list again when it reconnects.
    let old = stack.relays.remove(0);
    let addr: std::net::SocketAddr = old.url.trim_start_matches("https://").parse().unwrap();
    old.stop().await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let relay = TestRelay::start_on(
        &stack.cp.ca,
        TENANT,
        "relay-1",
        RelaySettings::default(),
        listener,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let refused = raw_open(
            &relay.url,
            tls_of(&revoked.dir),
            Some(hello(TENANT, CONTOSO, &revoked.agent_id)),
        )
        .await
        .err()
        .map(|s| failure_of(&s).reason);
        if refused == Some(ReasonCode::AgentRevoked)
            && ids(relay.relay.registry()) == HashSet::from([kept.agent_id.clone()])
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted relay never learned the revocation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(revoked_applier.count(), 0);
}
