//! Relay restarts and graceful shutdown.

use std::time::{Duration, Instant};

use writeback_agent::tunnel::TunnelState;
use writeback_core::ReasonCode;

use crate::*;

/// After a relay restarts on the same address, the agents reconnect by
/// themselves and operations flow again.
#[tokio::test]
async fn agents_reconnect_by_themselves_after_a_relay_restart() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let addr = relay.addr;
    let mut agents = Vec::new();
    for (domain, id) in [(CONTOSO, "a1"), (CONTOSO, "a2"), (FABRIKAM, "f1")] {
        let mut a = TestAgent::start(
            &pki,
            &[&relay.url],
            domain,
            id,
            TestApplier::new(Mode::Answer),
        );
        assert_eq!(a.connected().await, "relay-1");
        agents.push(a);
    }
    relay.stop().await;
    for a in &mut agents {
        tokio::time::timeout(WAIT, a.state.wait_for(|s| *s == TunnelState::Connecting))
            .await
            .unwrap()
            .unwrap();
    }
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let relay = TestRelay::start_on(
        &pki.ca,
        TENANT,
        "relay-1b",
        RelaySettings::default(),
        listener,
    );
    for a in &mut agents {
        tokio::time::timeout(
            WAIT,
            a.state
                .wait_for(|s| *s == TunnelState::Connected("relay-1b".into())),
        )
        .await
        .expect("the agent reconnects")
        .unwrap();
    }
    relay.wait_tunnels(3).await;
    let cp = pki.control_plane(&relay.url);
    for domain in [CONTOSO, FABRIKAM, CONTOSO] {
        let r = dispatch(&cp, unlock(domain, "u@x", Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(reason(&r), "OK");
    }
}

/// A graceful shutdown tells every agent GoAway, refuses new operations
/// at once, lets in-flight operations finish within the grace period, and
/// fails the ones still unanswered after it with TIMEOUT and a sentence
/// saying the relay shut down.
#[tokio::test]
async fn graceful_shutdown_sends_go_away_and_drains_in_flight_operations() {
    let pki = Pki::new(TENANT);
    let mut settings = RelaySettings::default();
    settings.limits.shutdown_grace = Duration::from_millis(1500);
    let relay = TestRelay::start(&pki, "relay-1", settings).await;
    let cp = pki.control_plane(&relay.url);
    // A second relay the agents move to after the GoAway.
    let other = TestRelay::start(&pki, "relay-2", RelaySettings::default()).await;
    let finishing = TestApplier::new(Mode::Block);
    let mut a1 = TestAgent::start(
        &pki,
        &[&relay.url, &other.url],
        CONTOSO,
        "a1",
        finishing.clone(),
    );
    assert_eq!(a1.connected().await, "relay-1");
    let stuck = TestApplier::new(Mode::Block);
    let mut f1 = TestAgent::start(
        &pki,
        &[&relay.url, &other.url],
        FABRIKAM,
        "f1",
        stuck.clone(),
    );
    assert_eq!(f1.connected().await, "relay-1");

    let will_finish = unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(20));
    let will_finish_id = will_finish.operation_id.clone();
    let done = tokio::spawn({
        let cp = cp.clone();
        async move { dispatch(&cp, will_finish).await }
    });
    let wont_finish = unlock(FABRIKAM, "bob@fabrikam.test", Duration::from_secs(20));
    let lost = tokio::spawn({
        let cp = cp.clone();
        async move { dispatch(&cp, wont_finish).await }
    });
    finishing.wait_calls(1).await;
    stuck.wait_calls(1).await;

    let started = Instant::now();
    relay.begin_stop();
    // The agents are told to go and move to the other relay.
    for a in [&mut a1, &mut f1] {
        tokio::time::timeout(
            WAIT,
            a.state
                .wait_for(|s| *s == TunnelState::Connected("relay-2".into())),
        )
        .await
        .expect("the agent moves to the other relay")
        .unwrap();
    }
    // New operations are refused at once, with nothing sent anywhere.
    let refused = dispatch(
        &cp,
        unlock(CONTOSO, "carol@contoso.test", Duration::from_secs(20)),
    )
    .await
    .expect_err("the relay is draining");
    assert_eq!(refused.reason, ReasonCode::Unavailable, "{refused:?}");
    assert_eq!(finishing.count(), 1);
    // The in-flight operation finishes on the old tunnel.
    finishing.release();
    let ok = tokio::time::timeout(WAIT, done)
        .await
        .unwrap()
        .unwrap()
        .expect("the in-flight operation finishes during the drain");
    assert_eq!(ok.operation_id, will_finish_id);
    assert_eq!(reason(&ok), "OK");
    // The one that never answers fails after the grace period.
    let err = tokio::time::timeout(WAIT, lost)
        .await
        .unwrap()
        .unwrap()
        .expect_err("unanswered at the end of the drain");
    assert_eq!(err.reason, ReasonCode::Timeout);
    assert!(err.message.contains("shut down"), "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(finishing.count(), 1);
    assert_eq!(stuck.count(), 1);
    relay.stop().await;
    stuck.release();
}

/// An agent whose every operation slot is taken by a slow operation keeps
/// sending heartbeats while the next operation waits for a slot: the relay
/// keeps its tunnel past the heartbeat limit, and every operation is answered
/// once by that agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_agent_keeps_its_tunnel_while_operations_wait_for_a_slot() {
    let pki = Pki::new(TENANT);
    let settings = RelaySettings {
        heartbeat: Duration::from_millis(500),
        heartbeat_timeout: Duration::from_millis(1500),
        ..RelaySettings::default()
    };
    let relay = TestRelay::start(&pki, "relay-1", settings).await;
    let cp = pki.control_plane(&relay.url);
    let slow = TestApplier::new(Mode::Block);
    let mut agent = TestAgent::start(&pki, &[&relay.url], CONTOSO, "a1", slow.clone());
    agent.connected().await;

    // Five operations for an agent with four slots.
    let answers: Vec<_> = (0..5)
        .map(|i| {
            let cp = cp.clone();
            let op = unlock(
                CONTOSO,
                &format!("user{i}@contoso.test"),
                Duration::from_secs(30),
            );
            tokio::spawn(async move { dispatch(&cp, op).await })
        })
        .collect();
    slow.wait_calls(4).await;
    // Twice the heartbeat limit with every slot busy and one operation waiting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(relay.relay.registry().len(), 1, "the tunnel was dropped");
    assert!(matches!(*agent.state.borrow(), TunnelState::Connected(_)));
    assert_eq!(slow.count(), 4, "a fifth operation ran without a slot");

    slow.release();
    for a in answers {
        let r = a.await.unwrap().expect("answered");
        assert_eq!(reason(&r), "OK");
        assert_eq!(r.agent_id, "a1");
    }
    assert_eq!(slow.count(), 5);
}
