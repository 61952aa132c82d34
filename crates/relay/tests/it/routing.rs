//! Routing: failover, exactly-once, NO_AGENT_ONLINE, deadlines, overload,
//! replacement of a tunnel by the same identity.

use std::time::{Duration, Instant};

use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;

use crate::*;

/// An agent dies while applying: it may have written the change, so the
/// relay never hands the operation to the second agent of the domain (a
/// partition would apply it twice); it answers TIMEOUT (outcome unknown) at
/// once, naming the agent, and the control plane asks the agents' ledgers.
#[tokio::test]
async fn an_agent_dying_mid_operation_is_never_failed_over() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp = pki.control_plane(&relay.url);
    let first = TestApplier::new(Mode::Block);
    let mut a = TestAgent::start(&pki, &[&relay.url], CONTOSO, "a1", first.clone());
    a.connected().await;
    relay.wait_tunnels(1).await;
    let second = TestApplier::new(Mode::Block);
    let mut b = TestAgent::start(&pki, &[&relay.url], CONTOSO, "a2", second.clone());
    b.connected().await;
    relay.wait_tunnels(2).await;

    let op = unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(10));
    let id = op.operation_id.clone();
    let started = Instant::now();
    let call = tokio::spawn({
        let cp = cp.clone();
        async move { dispatch(&cp, op).await }
    });
    // Wait until one of them is applying, then kill that agent.
    let deadline = Instant::now() + WAIT;
    let (victim, survivor_applier) = loop {
        if first.count() == 1 {
            break (&mut a, &second);
        }
        if second.count() == 1 {
            break (&mut b, &first);
        }
        assert!(Instant::now() < deadline, "no agent received the operation");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    survivor_applier.set_mode(Mode::Answer);
    let victim_id = victim.agent_id.clone();
    victim.kill();
    let result = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    let failure = result.expect_err("the outcome is unknown");
    assert_eq!(failure.reason, ReasonCode::Timeout, "{failure:?}");
    assert!(failure.message.contains(&victim_id), "{}", failure.message);
    assert_eq!(
        survivor_applier.count_of(&id),
        0,
        "never sent to a second agent"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered when the tunnel broke, not at the deadline"
    );
    first.release();
    second.release();
}

/// An agent that is alive but slow is never doubled: the relay answers
/// TIMEOUT at the deadline without sending the operation to the second
/// agent, and the late answer is logged and dropped.
#[tokio::test]
async fn a_late_answer_times_out_and_is_never_applied_twice() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp = pki.control_plane(&relay.url);
    let slow = TestApplier::new(Mode::Delay(Duration::from_secs(4)));
    let mut a = TestAgent::start(&pki, &[&relay.url], CONTOSO, "a1", slow.clone());
    a.connected().await;
    relay.wait_tunnels(1).await;
    // The second agent arrives after the operation went to the first.
    let op = unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(1));
    let id = op.operation_id.clone();
    let started = Instant::now();
    let call = tokio::spawn({
        let cp = cp.clone();
        async move { dispatch(&cp, op).await }
    });
    slow.wait_calls(1).await;
    let other = TestApplier::new(Mode::Answer);
    let mut b = TestAgent::start(&pki, &[&relay.url], CONTOSO, "a2", other.clone());
    b.connected().await;

    let err = call.await.unwrap().expect_err("the deadline passes first");
    let elapsed = started.elapsed();
    assert_eq!(err.reason, ReasonCode::Timeout, "{err:?}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "TIMEOUT at the deadline, not at the late answer; took {elapsed:?}"
    );
    assert_eq!(other.count(), 0, "never sent to a second agent");
    // The first agent answers late; the relay drops the answer.
    let deadline = Instant::now() + WAIT;
    while relay.relay.registry().late_answers() == 0 {
        assert!(Instant::now() < deadline, "the late answer never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(slow.count_of(&id), 1);
    assert_eq!(other.count(), 0);
    assert_eq!(relay.relay.registry().late_answers(), 1);
    // Both tunnels are still up: a late answer does not break anything.
    relay.wait_tunnels(2).await;
}

/// No agent of the domain: NO_AGENT_ONLINE at once, not at the deadline.
#[tokio::test]
async fn no_agent_online_is_answered_at_once() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp = pki.control_plane(&relay.url);
    // An agent of another domain does not count.
    let mut f = TestAgent::start(
        &pki,
        &[&relay.url],
        FABRIKAM,
        "f1",
        TestApplier::new(Mode::Answer),
    );
    f.connected().await;
    // Warm the connection so the measurement is the relay's decision only.
    let _ = dispatch(
        &cp,
        unlock(CONTOSO, "a@contoso.test", Duration::from_secs(30)),
    )
    .await;
    let started = Instant::now();
    let err = dispatch(
        &cp,
        unlock(CONTOSO, "a@contoso.test", Duration::from_secs(30)),
    )
    .await
    .expect_err("nobody to route to");
    let elapsed = started.elapsed();
    assert_eq!(err.reason, ReasonCode::NoAgentOnline);
    assert!(
        elapsed < Duration::from_secs(1),
        "answered in {elapsed:?}, deadline 30 s"
    );
    assert_eq!(f.applier.count(), 0);
}

/// A full per-agent queue answers OVERLOADED instead of queueing more.
#[tokio::test]
async fn a_full_agent_queue_is_overloaded() {
    let pki = Pki::new(TENANT);
    let mut settings = RelaySettings::default();
    settings.limits.queue_depth = 2;
    let relay = TestRelay::start(&pki, "relay-1", settings).await;
    let cp = pki.control_plane(&relay.url);
    let applier = TestApplier::new(Mode::Block);
    let mut a = TestAgent::start(&pki, &[&relay.url], CONTOSO, "a1", applier.clone());
    a.connected().await;
    // Big requests fill the HTTP/2 flow-control window quickly, so the
    // relay's queue for the agent fills behind it.
    let padded = || {
        let mut op = unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(20));
        op.envelope = Some(pb::PasswordEnvelope {
            version: 1,
            copies: vec![pb::SealedCopy {
                agent_id: "a1".into(),
                encapsulated_key: vec![0; 32],
                ciphertext: vec![7; 60 * 1024],
            }],
        });
        op
    };
    let mut calls = Vec::new();
    let mut overloaded = None;
    for _ in 0..40 {
        let cp = cp.clone();
        let op = padded();
        let call = tokio::spawn(async move { dispatch(&cp, op).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        if call.is_finished() {
            let r = call.await.unwrap();
            overloaded = Some(r);
            break;
        }
        calls.push(call);
    }
    let err = overloaded
        .expect("a request is refused once the queue is full")
        .expect_err("refused");
    assert_eq!(err.reason, ReasonCode::Overloaded, "{err:?}");
    applier.release();
    for c in calls {
        let r = tokio::time::timeout(WAIT, c)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reason(&r), "OK");
    }
}

/// A second tunnel of the same identity replaces the first: the old one
/// is told GoAway and closed, one tunnel stays, presence never reports the
/// agent gone, and an operation in flight on the old tunnel is resent to
/// the same agent (which deduplicates by operation id) — not to another
/// agent of the domain.
#[tokio::test]
async fn a_second_connection_of_the_same_identity_replaces_the_first() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp = pki.control_plane(&relay.url);
    let mut presence = cp
        .clone()
        .watch_presence(pb::WatchPresenceRequest {
            tenant: TENANT.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = raw_open(
        &relay.url,
        pki.agent_tls(CONTOSO, "a1"),
        Some(hello(TENANT, CONTOSO, "a1")),
    )
    .await
    .unwrap();
    let mut first_in = first.inbound;
    assert!(matches!(
        first_in.message().await.unwrap().unwrap().body,
        Some(pb::relay_message::Body::Welcome(_))
    ));
    let op = unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(20));
    let id = op.operation_id.clone();
    let call = tokio::spawn({
        let cp = cp.clone();
        async move { dispatch(&cp, op).await }
    });
    let got = first_in.message().await.unwrap().unwrap();
    assert!(
        matches!(got.body, Some(pb::relay_message::Body::Request(ref r)) if r.operation_id == id)
    );
    // Another agent of the domain is there to be (wrongly) failed over to.
    let other = TestApplier::new(Mode::Answer);
    let mut b = TestAgent::start(&pki, &[&relay.url], CONTOSO, "b1", other.clone());
    b.connected().await;
    relay.wait_tunnels(2).await;

    let second = raw_open(
        &relay.url,
        pki.agent_tls(CONTOSO, "a1"),
        Some(hello(TENANT, CONTOSO, "a1")),
    )
    .await
    .expect("the second tunnel is accepted");
    let mut second_in = second.inbound;
    assert!(matches!(
        second_in.message().await.unwrap().unwrap().body,
        Some(pb::relay_message::Body::Welcome(_))
    ));
    // The old tunnel is told to go away and ends.
    let bye = first_in.message().await.unwrap().unwrap();
    assert!(
        matches!(bye.body, Some(pb::relay_message::Body::GoAway(_))),
        "{bye:?}"
    );
    assert!(
        tokio::time::timeout(WAIT, first_in.message())
            .await
            .unwrap()
            .map(|m| m.is_none())
            .unwrap_or(true),
        "the old tunnel ends"
    );
    relay.wait_tunnels(2).await;
    // The in-flight operation follows a1 to its new tunnel.
    let resent = tokio::time::timeout(WAIT, second_in.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(pb::relay_message::Body::Request(req)) = resent.body else {
        panic!("expected the resent request, got {resent:?}");
    };
    assert_eq!(req.operation_id, id);
    second
        .tx
        .send(pb::AgentMessage {
            body: Some(pb::agent_message::Body::Result(pb::OperationResult {
                operation_id: id.clone(),
                outcome: Some(pb::OperationOutcome {
                    reason_code: "OK".into(),
                    message: "done".into(),
                    applied: true,
                }),
                agent_id: "a1".into(),
                agent_duration_ms: 1,
                ..Default::default()
            })),
        })
        .await
        .unwrap();
    let r = tokio::time::timeout(WAIT, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reason(&r), "OK");
    assert_eq!(r.agent_id, "a1");
    assert_eq!(other.count(), 0, "never doubled onto another agent");
    // Presence: a1 connected twice, never disconnected.
    let mut events = Vec::new();
    while let Ok(Ok(Some(r))) =
        tokio::time::timeout(Duration::from_millis(300), presence.message()).await
    {
        events.push((r.identity.unwrap().agent_id, r.event));
    }
    let a1: Vec<i32> = events
        .iter()
        .filter(|(id, _)| id == "a1")
        .map(|(_, e)| *e)
        .collect();
    let connected = pb::PresenceEvent::Connected as i32;
    assert_eq!(a1, vec![connected, connected], "{events:?}");
}

/// The same operation id dispatched twice while it runs (a retry, a second
/// control-plane replica): the agent gets it once and both dispatchers get
/// its one answer.
#[tokio::test]
async fn a_repeated_dispatch_of_a_running_id_waits_for_the_same_answer() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp = pki.control_plane(&relay.url);
    let applier = TestApplier::new(Mode::Block);
    let mut a = TestAgent::start(&pki, &[&relay.url], CONTOSO, "a1", applier.clone());
    a.connected().await;
    let op = unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(20));
    let id = op.operation_id.clone();
    let first = tokio::spawn({
        let (cp, op) = (cp.clone(), op.clone());
        async move { dispatch(&cp, op).await }
    });
    applier.wait_calls(1).await;
    let second = tokio::spawn({
        let cp = cp.clone();
        async move { dispatch(&cp, op).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!first.is_finished() && !second.is_finished());
    applier.release();
    for call in [first, second] {
        let r = call.await.unwrap().expect("answered");
        assert_eq!(r.operation_id, id);
        assert_eq!(reason(&r), "OK");
    }
    assert_eq!(applier.count_of(&id), 1);
}
