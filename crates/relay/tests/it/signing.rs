//! A relay that is compromised, or anyone who can dispatch through one,
//! can delay or drop operations but not forge them: agents apply only
//! operations the control plane signed, results are recorded under the
//! agent id of the tunnel's certificate, and a certificate that is not a
//! relay of the tenant cannot pose as one to the control plane or to
//! agents. These tests build each attack at the protocol level through the
//! relay's own dispatch API (which a compromised relay controls).

use std::time::Duration;

use writeback_control_plane::dispatcher::Dispatcher;
use writeback_core::ReasonCode;
use writeback_envelope::signing::OperationSigner;
use writeback_identity::SpiffeId;
use writeback_proto::v1 as pb;

use crate::*;

fn unauthenticated(r: &pb::OperationResult) {
    let o = r.outcome.as_ref().unwrap();
    assert_eq!(o.reason_code, "OPERATION_UNAUTHENTICATED", "{o:?}");
    assert!(!o.applied);
    assert!(o.message.contains("nothing was written"), "{o:?}");
}

/// Invented, unsigned, re-signed with another key, or altered after
/// signing: the agent refuses every one with OPERATION_UNAUTHENTICATED and
/// applies nothing; the genuine operation still goes through afterwards,
/// and a replay of it is answered from the first result, not applied again.
#[tokio::test]
async fn an_agent_applies_only_what_the_control_plane_signed() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp = pki.control_plane(&relay.url);
    let applier = TestApplier::new(Mode::Answer);
    let mut agent = TestAgent::start(&pki, &[&relay.url], CONTOSO, "a1", applier.clone());
    agent.connected().await;

    // An unlock the relay invents: no signature at all.
    let invented = unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(10));
    unauthenticated(&dispatch_as_is(&cp, invented).await.unwrap());

    // Signed, but with a key the agent never pinned (under its own id, and
    // under the pinned key's id).
    let (rogue, _) = OperationSigner::generate().unwrap();
    let mut foreign = unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(10));
    rogue.sign(&mut foreign);
    unauthenticated(&dispatch_as_is(&cp, foreign.clone()).await.unwrap());
    foreign.signing_key_id = SIGNER.key_id().to_owned();
    unauthenticated(&dispatch_as_is(&cp, foreign).await.unwrap());

    // A genuine operation, rewritten in transit: another user, another
    // kind, a flag, a later expiry, or a swapped-in envelope.
    let mut genuine = unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(10));
    SIGNER.sign(&mut genuine);
    type Rewrite = Box<dyn Fn(&mut pb::OperationRequest)>;
    let rewrites: Vec<Rewrite> = vec![
        Box::new(|o| {
            o.target = Some(pb::UserRef {
                by: Some(pb::user_ref::By::Upn("administrator@contoso.test".into())),
            })
        }),
        Box::new(|o| o.kind = pb::OperationKind::Reset as i32),
        Box::new(|o| o.unlock = true),
        Box::new(|o| o.must_change_at_next_logon = true),
        Box::new(|o| o.expires_at.as_mut().unwrap().seconds += 3600),
        Box::new(|o| {
            o.envelope = Some(pb::PasswordEnvelope {
                version: 1,
                copies: vec![pb::SealedCopy {
                    agent_id: "a1".into(),
                    encapsulated_key: vec![0; 32],
                    ciphertext: vec![1; 48],
                }],
            })
        }),
        Box::new(|o| o.signature.clear()),
    ];
    for rewrite in &rewrites {
        let mut op = genuine.clone();
        rewrite(&mut op);
        unauthenticated(&dispatch_as_is(&cp, op).await.unwrap());
    }
    assert_eq!(applier.count(), 0, "nothing forged was applied");

    // The forgeries did not take the operation id: the genuine operation,
    // with a trace context the relay may change (it is not signed), is
    // applied once...
    let mut traced = genuine.clone();
    traced.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
    let first = dispatch_as_is(&cp, traced).await.unwrap();
    assert_eq!(reason(&first), "OK");
    assert_eq!(applier.count_of(&genuine.operation_id), 1);
    // ...and a replay of it is answered from the first result, not applied.
    let replay = dispatch_as_is(&cp, genuine.clone()).await.unwrap();
    assert_eq!(reason(&replay), "OK");
    assert_eq!(applier.count_of(&genuine.operation_id), 1);
    // Rewritten after it was applied: still refused.
    let mut late = genuine.clone();
    late.unlock = true;
    unauthenticated(&dispatch_as_is(&cp, late).await.unwrap());
    assert_eq!(applier.count(), 1);
}

/// An agent enrolled before operations were signed pins no key: it refuses
/// everything, signed or not, rather than trusting whatever arrives.
#[tokio::test]
async fn an_agent_without_a_pinned_key_refuses_everything() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp = pki.control_plane(&relay.url);
    let applier = TestApplier::new(Mode::Answer);
    let mut agent = TestAgent::start_pinning(
        &pki,
        &[&relay.url],
        CONTOSO,
        "a1",
        applier.clone(),
        pki.agent_tls(CONTOSO, "a1"),
        Vec::new(),
        Default::default(),
    );
    agent.connected().await;
    let r = dispatch(
        &cp,
        unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(10)),
    )
    .await
    .unwrap();
    unauthenticated(&r);
    assert!(r.outcome.unwrap().message.contains("enroll it again"));
    assert_eq!(applier.count(), 0);
}

/// The control plane records who answered from the relay's knowledge of
/// the tunnel's certificate: an agent that claims another agent's id in its
/// result is recorded under its own.
#[tokio::test]
async fn a_forged_result_agent_id_is_not_recorded() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp = pki.control_plane(&relay.url);
    let mut liar = raw_open(
        &relay.url,
        pki.agent_tls(CONTOSO, "a1"),
        Some(hello(TENANT, CONTOSO, "a1")),
    )
    .await
    .unwrap();
    assert!(matches!(
        liar.inbound.message().await.unwrap().unwrap().body,
        Some(pb::relay_message::Body::Welcome(_))
    ));
    let op = unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(10));
    let id = op.operation_id.clone();
    let call = tokio::spawn({
        let cp = cp.clone();
        async move { dispatch(&cp, op).await }
    });
    loop {
        let m = liar.inbound.message().await.unwrap().unwrap();
        if matches!(m.body, Some(pb::relay_message::Body::Request(ref r)) if r.operation_id == id) {
            break;
        }
    }
    liar.tx
        .send(pb::AgentMessage {
            body: Some(pb::agent_message::Body::Result(pb::OperationResult {
                operation_id: id,
                outcome: Some(pb::OperationOutcome {
                    reason_code: "OK".into(),
                    message: String::new(),
                    applied: true,
                }),
                agent_id: "a2".into(),
                agent_duration_ms: 1,
                ..Default::default()
            })),
        })
        .await
        .unwrap();
    let result = call.await.unwrap().unwrap();
    assert_eq!(result.agent_id, "a1", "the certificate's id, not the claim");
}

/// Server certificates from the same CA, with the relay's very host name,
/// that are not a relay of the tenant: the control plane's API certificate,
/// its relay-client identity, another tenant's relay. CA and host name
/// alone admit them (what agents and the control plane checked before);
/// the relay identity check refuses them, so neither the control plane nor
/// an agent ever talks to them.
#[tokio::test]
async fn a_control_plane_certificate_cannot_pose_as_a_relay() {
    let pki = Pki::new(TENANT);
    let names = (
        vec!["localhost".to_owned()],
        vec![std::net::IpAddr::from([127, 0, 0, 1])],
    );
    let impostors = [
        (
            "control plane API",
            pki.ca.issue_control_plane_api(&names.0, &names.1),
        ),
        (
            "control plane identity",
            pki.ca.issue_service(
                &SpiffeId::ControlPlane {
                    tenant: TENANT.into(),
                },
                &names.0,
                &names.1,
            ),
        ),
        (
            "another tenant's relay",
            pki.ca.issue_service(
                &SpiffeId::Relay {
                    tenant: "t2".into(),
                    relay_id: "relay-1".into(),
                },
                &names.0,
                &names.1,
            ),
        ),
    ];
    for (what, cert) in impostors {
        let (chain, key) = cert.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let impostor = TestRelay::start_with_cert(
            &pki.ca,
            TENANT,
            "impostor",
            RelaySettings::default(),
            listener,
            chain,
            key,
        );

        // Today's check (CA + host name) would let an agent in...
        let naive = TestApplier::new(Mode::Answer);
        let mut fooled = TestAgent::start(&pki, &[&impostor.url], CONTOSO, "a1", naive.clone());
        fooled.connected().await;
        // ...the agent's real configuration does not.
        let careful = TestApplier::new(Mode::Answer);
        let agent = TestAgent::start_with_tls(
            &pki,
            &[&impostor.url],
            CONTOSO,
            "a2",
            careful.clone(),
            pki.agent_relay_tls(CONTOSO, "a2"),
        );

        // The control plane's dispatcher refuses the impostor too: the
        // operation is not handed to it, although it holds an agent.
        let dispatcher =
            Dispatcher::new(pki.ca.clone(), SIGNER.clone(), vec![impostor.url.clone()]);
        let err = dispatcher
            .dispatch(
                unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(5)),
                Duration::from_secs(5),
            )
            .await
            .expect_err(what);
        assert_eq!(err.reason, ReasonCode::NoAgentOnline, "{what}: {err:?}");
        assert_eq!(naive.count(), 0, "{what}");
        assert!(
            dispatcher.online_agents(TENANT, CONTOSO).is_empty(),
            "{what}"
        );
        assert!(
            !matches!(
                *agent.state.borrow(),
                writeback_agent::tunnel::TunnelState::Connected(_)
            ),
            "{what}: the agent must not connect to an impostor"
        );
        assert_eq!(
            impostor.relay.registry().len(),
            1,
            "{what}: only the fooled agent"
        );
        assert_eq!(careful.count(), 0);
        agent.stop().await;
        fooled.stop().await;
        impostor.stop().await;
    }

    // A genuine relay of the tenant is admitted by both.
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let applier = TestApplier::new(Mode::Answer);
    let mut agent = TestAgent::start_with_tls(
        &pki,
        &[&relay.url],
        CONTOSO,
        "a1",
        applier.clone(),
        pki.agent_relay_tls(CONTOSO, "a1"),
    );
    agent.connected().await;
    let dispatcher = Dispatcher::new(pki.ca.clone(), SIGNER.clone(), vec![relay.url.clone()]);
    let ok = dispatcher
        .dispatch(
            unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(5)),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(reason(&ok.result.unwrap()), "OK");
    assert_eq!(applier.count(), 1);
}
