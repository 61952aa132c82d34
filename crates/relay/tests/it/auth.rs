//! Who may open a tunnel and who receives what: the certificate's identity
//! decides, in the handshake where it can and in the Hello check after it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use writeback_core::{ReasonCode, failure_of};
use writeback_identity::SpiffeId;
use writeback_proto::v1 as pb;

use crate::*;

/// Completes a TLS handshake with `tls` and reads the server's first
/// bytes: the HTTP/2 preface when admitted, an alert when the relay
/// refused the client certificate.
async fn handshake_admitted(relay: &TestRelay, tls: Arc<rustls::ClientConfig>) -> bool {
    let tcp = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let Ok(mut stream) = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
    else {
        return false;
    };
    let mut buf = [0u8; 9];
    matches!(
        tokio::time::timeout(WAIT, stream.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// An agent whose certificate says fabrikam.test never receives a
/// contoso.test operation, even as the only agent on the relay.
#[tokio::test]
async fn a_wrong_domain_certificate_never_receives_an_operation() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp = pki.control_plane(&relay.url);
    let applier = TestApplier::new(Mode::Answer);
    let mut f = TestAgent::start(&pki, &[&relay.url], FABRIKAM, "f1", applier.clone());
    f.connected().await;
    for _ in 0..5 {
        let err = dispatch(
            &cp,
            unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(5)),
        )
        .await
        .expect_err("nobody serves contoso.test");
        assert_eq!(err.reason, ReasonCode::NoAgentOnline);
    }
    assert_eq!(applier.count(), 0);
    // Its own domain still works.
    let ok = dispatch(
        &cp,
        unlock(FABRIKAM, "bob@fabrikam.test", Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert_eq!(reason(&ok), "OK");
    assert_eq!(applier.count(), 1);
    // And a fabrikam certificate cannot claim contoso in its Hello.
    let err = raw_open(
        &relay.url,
        pki.agent_tls(FABRIKAM, "f2"),
        Some(hello(TENANT, CONTOSO, "f2")),
    )
    .await
    .expect_err("refused");
    assert_eq!(failure_of(&err).reason, ReasonCode::PermissionDenied);
    assert!(relay.relay.registry().agents(TENANT, CONTOSO).is_empty());
}

/// A Hello whose identity differs from the certificate's is refused, and
/// so is a tunnel that opens with anything but a Hello.
#[tokio::test]
async fn a_hello_that_differs_from_the_certificate_is_refused() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    for claimed in [
        hello(TENANT, CONTOSO, "someone-else"),
        hello("t2", CONTOSO, "a1"),
        hello(TENANT, FABRIKAM, "a1"),
    ] {
        let err = raw_open(&relay.url, pki.agent_tls(CONTOSO, "a1"), Some(claimed))
            .await
            .expect_err("refused");
        let f = failure_of(&err);
        assert_eq!(f.reason, ReasonCode::PermissionDenied, "{f:?}");
        assert!(f.message.contains("does not match"), "{f:?}");
    }
    let heartbeat = pb::AgentMessage {
        body: Some(pb::agent_message::Body::Heartbeat(pb::Heartbeat {
            sent_at: None,
        })),
    };
    let err = raw_open(&relay.url, pki.agent_tls(CONTOSO, "a1"), Some(heartbeat))
        .await
        .expect_err("refused");
    assert_eq!(failure_of(&err).reason, ReasonCode::InvalidArgument);
    assert_eq!(relay.relay.registry().len(), 0);
    // The matching Hello is accepted.
    let ok = raw_open(
        &relay.url,
        pki.agent_tls(CONTOSO, "a1"),
        Some(hello(TENANT, CONTOSO, "a1")),
    )
    .await;
    assert!(ok.is_ok());
    relay.wait_tunnels(1).await;
}

/// Certificates of another tenant (same CA) or of another CA never get
/// past the TLS handshake; neither does a relay's certificate. A control
/// plane certificate passes the handshake but may not open a tunnel, and an
/// agent may not call the control plane's API.
#[tokio::test]
async fn other_tenants_and_other_cas_are_refused_at_the_handshake() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let foreign = Pki::new(TENANT);

    assert!(handshake_admitted(&relay, pki.agent_tls(CONTOSO, "a1")).await);
    assert!(!handshake_admitted(&relay, pki.agent_tls_for("t2", CONTOSO, "a1")).await);
    assert!(!handshake_admitted(&relay, foreign.agent_tls(CONTOSO, "a1")).await);
    let relay_id = SpiffeId::Relay {
        tenant: TENANT.into(),
        relay_id: "relay-2".into(),
    };
    let (chain, key) = pki.ca.issue_service(&relay_id, &[], &[]).unwrap();
    let relay_tls = writeback_identity::tls::client_config(
        writeback_identity::tls::roots_from_pem(pki.ca.cert_pem()).unwrap(),
        Some((&chain, &key)),
    )
    .unwrap();
    assert!(!handshake_admitted(&relay, relay_tls).await);

    // Through gRPC: the refused ones fail without ever reaching a handler
    // (no reason code in the status details), and nothing is registered.
    for tls in [
        pki.agent_tls_for("t2", CONTOSO, "a1"),
        foreign.agent_tls(CONTOSO, "a1"),
    ] {
        let err = raw_open(&relay.url, tls, Some(hello(TENANT, CONTOSO, "a1")))
            .await
            .expect_err("refused");
        assert!(
            err.details().is_empty(),
            "refused before any handler: {err:?}"
        );
    }
    assert_eq!(relay.relay.registry().len(), 0);

    // A control plane certificate is admitted by TLS but cannot be an agent.
    let cp_id = SpiffeId::ControlPlane {
        tenant: TENANT.into(),
    };
    let (chain, key) = pki.ca.issue_service(&cp_id, &[], &[]).unwrap();
    let cp_tls = writeback_identity::tls::client_config(
        writeback_identity::tls::roots_from_pem(pki.ca.cert_pem()).unwrap(),
        Some((&chain, &key)),
    )
    .unwrap();
    let err = raw_open(&relay.url, cp_tls, Some(hello(TENANT, CONTOSO, "a1")))
        .await
        .expect_err("refused");
    assert_eq!(failure_of(&err).reason, ReasonCode::PermissionDenied);

    // An agent cannot dispatch.
    let channel =
        writeback_identity::transport::channel(&relay.url, pki.agent_tls(CONTOSO, "a1")).unwrap();
    let err = pb::relay_dispatch_client::RelayDispatchClient::new(channel)
        .dispatch(pb::DispatchRequest {
            operation: Some(unlock(
                CONTOSO,
                "alice@contoso.test",
                Duration::from_secs(5),
            )),
            min_revocation_version: 0,
            agent_id: String::new(),
        })
        .await
        .expect_err("refused");
    assert_eq!(failure_of(&err).reason, ReasonCode::PermissionDenied);
}

/// SetRevokedAgents closes a revoked agent's open tunnel, refuses its new
/// ones with AGENT_REVOKED, leaves the others alone; an older list is
/// refused (REVOCATION_STALE) and cannot readmit it, an operation that
/// needs a newer list than the relay holds is not routed, and a newer list
/// without the agent lets it back.
#[tokio::test]
async fn revoked_agents_are_dropped_and_refused() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp = pki.control_plane(&relay.url);
    let revoked = TestApplier::new(Mode::Answer);
    let mut a1 = TestAgent::start(&pki, &[&relay.url], CONTOSO, "a1", revoked.clone());
    a1.connected().await;
    let kept = TestApplier::new(Mode::Answer);
    let mut a2 = TestAgent::start(&pki, &[&relay.url], CONTOSO, "a2", kept.clone());
    a2.connected().await;
    relay.wait_tunnels(2).await;

    let r = cp
        .clone()
        .set_revoked_agents(pb::SetRevokedAgentsRequest {
            tenant: TENANT.into(),
            agent_ids: vec!["a1".into()],
            version: 5,
            superseded_certificates: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.tunnels_closed, 1);
    let left = relay.relay.registry().agents(TENANT, CONTOSO);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].identity.agent_id, "a2");
    // It keeps trying (the real agent reconnects by itself) and keeps
    // being refused, with a reason it can log.
    let err = raw_open(
        &relay.url,
        pki.agent_tls(CONTOSO, "a1"),
        Some(hello(TENANT, CONTOSO, "a1")),
    )
    .await
    .expect_err("refused");
    assert_eq!(failure_of(&err).reason, ReasonCode::AgentRevoked);
    for _ in 0..6 {
        let ok = dispatch(
            &cp,
            unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(5)),
        )
        .await
        .unwrap();
        assert_eq!(ok.agent_id, "a2");
    }
    assert_eq!(relay.relay.registry().agents(TENANT, CONTOSO).len(), 1);
    assert_eq!(revoked.count(), 0);
    // Another tenant's list is not this relay's business.
    let err = cp
        .clone()
        .set_revoked_agents(pb::SetRevokedAgentsRequest {
            tenant: "t2".into(),
            agent_ids: vec![],
            version: 9,
            superseded_certificates: vec![],
        })
        .await
        .expect_err("refused");
    assert_eq!(failure_of(&err).reason, ReasonCode::PermissionDenied);
    // A stale list (a replica that read the store before the revocation)
    // is refused and cannot readmit a1.
    let err = cp
        .clone()
        .set_revoked_agents(pb::SetRevokedAgentsRequest {
            tenant: TENANT.into(),
            agent_ids: vec![],
            version: 4,
            superseded_certificates: vec![],
        })
        .await
        .expect_err("stale");
    assert_eq!(failure_of(&err).reason, ReasonCode::RevocationStale);
    assert_eq!(relay.relay.registry().revocation_version(TENANT), 5);
    let err = raw_open(
        &relay.url,
        pki.agent_tls(CONTOSO, "a1"),
        Some(hello(TENANT, CONTOSO, "a1")),
    )
    .await
    .expect_err("still refused");
    assert_eq!(failure_of(&err).reason, ReasonCode::AgentRevoked);
    // A dispatch that needs a newer list than the relay holds is not routed.
    let mut op = unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(5));
    SIGNER.sign(&mut op);
    let err = cp
        .clone()
        .dispatch(pb::DispatchRequest {
            operation: Some(op),
            min_revocation_version: 6,
            agent_id: String::new(),
        })
        .await
        .expect_err("stale relay");
    assert_eq!(failure_of(&err).reason, ReasonCode::RevocationStale);
    assert_eq!(kept.count(), 6);
    // Un-revoked by a newer list (the list is always the full list): a1
    // comes back alone.
    let r = cp
        .clone()
        .set_revoked_agents(pb::SetRevokedAgentsRequest {
            tenant: TENANT.into(),
            agent_ids: vec![],
            version: 6,
            superseded_certificates: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.version, 6);
    relay.wait_tunnels(2).await;
}

/// The certificate the relay presents to a new connection.
async fn served_certificate(relay: &TestRelay, pki: &Pki) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(pki.agent_relay_tls(CONTOSO, "a1"))
        .connect(name, tcp)
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn first_der(chain: &str) -> Vec<u8> {
    writeback_identity::tls::certs_from_pem(chain).unwrap()[0].to_vec()
}

fn expiry_metric(relay: &TestRelay) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &relay.relay.metrics().registry).unwrap();
    text.lines()
        .find(|l| l.starts_with("writeback_relay_certificate_expiry_timestamp_seconds "))
        .unwrap_or_else(|| panic!("no certificate expiry metric in {text}"))
        .to_owned()
}

/// An operator re-issues the relay's certificate: new connections get the
/// new one without a restart; a certificate naming another relay, or one
/// that does not match its key, is refused and the current one kept. The
/// expiry is in the metrics.
#[tokio::test]
async fn the_relay_certificate_is_replaced_while_serving() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let first = served_certificate(&relay, &pki).await;
    let before = expiry_metric(&relay);

    let ours = SpiffeId::Relay {
        tenant: TENANT.into(),
        relay_id: "relay-1".into(),
    };
    let localhost = [std::net::IpAddr::from([127, 0, 0, 1])];
    let names = ["localhost".to_owned()];
    let (chain, key) = pki.ca.issue_service(&ours, &names, &localhost).unwrap();
    let validity = relay.relay.reload_tls(&chain, &key).unwrap();
    let second = served_certificate(&relay, &pki).await;
    assert_ne!(second, first);
    assert_eq!(second, first_der(&chain));
    assert_eq!(
        expiry_metric(&relay),
        format!(
            "writeback_relay_certificate_expiry_timestamp_seconds {}",
            validity.not_after.unix_timestamp()
        )
    );
    assert!(!before.is_empty());

    // Another relay's certificate: refused, saying why.
    let other = SpiffeId::Relay {
        tenant: TENANT.into(),
        relay_id: "relay-2".into(),
    };
    let (wrong, wrong_key) = pki.ca.issue_service(&other, &names, &localhost).unwrap();
    let e = relay.relay.reload_tls(&wrong, &wrong_key).unwrap_err();
    assert!(e.to_string().contains("does not name this relay"), "{e}");
    // The right certificate with another key: refused.
    assert!(relay.relay.reload_tls(&chain, &wrong_key).is_err());
    assert!(relay.relay.reload_tls("garbage", &key).is_err());
    assert_eq!(served_certificate(&relay, &pki).await, first_der(&chain));
    relay.stop().await;
}
