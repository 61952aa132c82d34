//! Certificate renewal over real mutual TLS, against the testkit's
//! in-process control plane and relays (no DC needed: the tunnel is what the
//! certificate is for). An agent whose certificate is about to expire renews
//! it by itself and, once the old one has expired, still reconnects; a
//! revoked agent is refused; a caller without an agent certificate is
//! refused. The operation-signing keys the control plane publishes (the
//! current and, after `signing-key rotate`, the next) reach the agent.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use writeback_agent::AgentError;
use writeback_agent::directory::{Directory, DirectoryConfig};
use writeback_agent::renew;
use writeback_agent::runtime::{Renewal, start_with};
use writeback_agent::state::AgentState;
use writeback_agent::tunnel::TunnelState;
use writeback_core::ReasonCode;
use writeback_identity::{SpiffeId, fingerprint_of_pem, generate_csr, tls, transport};
use writeback_proto::v1 as pb;
use writeback_testkit::stack::Stack;

const DOMAIN: &str = "contoso.test";

#[tokio::test(flavor = "multi_thread")]
async fn an_expiring_agent_certificate_is_renewed_and_the_agent_keeps_connecting() {
    writeback_identity::install_crypto_provider();
    // The control plane has a next operation-signing key waiting
    // (`signing-key rotate`): agents pin it beside the current one.
    let mut stack = Stack::start_configured("t1", 2, None, |c| {
        writeback_control_plane::bootstrap::rotate_signing_key(&c.data_dir).unwrap();
    })
    .await
    .unwrap();
    let published: Vec<String> = stack
        .cp
        .operation_signing_keys()
        .iter()
        .map(hex::encode)
        .collect();
    assert_eq!(published.len(), 2);
    assert_eq!(published[0], hex::encode(stack.cp.signer.public_key()));
    stack.register_domain(DOMAIN).await.unwrap();
    let admin = stack.admin().unwrap();
    let token = admin
        .agents()
        .create_enrollment_token(admin.request(pb::CreateEnrollmentTokenRequest {
            domain: DOMAIN.into(),
            ttl_seconds: 600,
        }))
        .await
        .unwrap()
        .into_inner()
        .token;
    let dir = stack.dir.path().join("agent");
    let enrollment = writeback_agent::enroll::enroll(&stack.cp_url, &token, &dir)
        .await
        .unwrap();
    assert_eq!(enrollment.control_plane_url, stack.cp_url);
    assert_eq!(enrollment.operation_signing_keys, published);

    // A certificate of the same identity from the tenant CA that expires in
    // 15 s: well inside the last third of its life.
    let id = SpiffeId::agent("t1", DOMAIN, &enrollment.agent_id).unwrap();
    let (csr, key) = generate_csr().unwrap();
    let short = stack
        .cp
        .ca
        .sign_agent_csr_valid_for(&csr, &id, time::Duration::seconds(15))
        .unwrap();
    // Recorded as the control plane records what it issues: only the
    // agent's current certificate renews.
    let enrolled_pem = std::fs::read_to_string(dir.join("agent.pem")).unwrap();
    let recorded = stack
        .cp
        .store
        .renew_agent_certificate(
            "t1",
            &enrollment.agent_id,
            &fingerprint_of_pem(&enrolled_pem).unwrap(),
            &writeback_control_plane::store::IssuedCertificate {
                fingerprint: fingerprint_of_pem(&short).unwrap(),
                key_fingerprint: writeback_identity::key_fingerprint_of_pem(&short).unwrap(),
            },
            "test",
            i64::MAX,
        )
        .await
        .unwrap();
    assert_eq!(
        recorded,
        writeback_control_plane::store::CertificateRenewal::Renewed
    );
    AgentState::install_certificate(&dir, &short, &key, &enrollment).unwrap();
    let expired_at = tokio::time::Instant::now() + Duration::from_secs(16);
    let old = renew::certificate_validity(&dir).unwrap();

    // Nothing to bind to: the tunnel is what is under test.
    let directory = Directory::new(DirectoryConfig::new(
        vec!["ldaps://127.0.0.1:9".into()],
        stack.cp.ca.cert_pem(),
        "cn=nobody",
        SecretString::from("unused".to_owned()),
    ))
    .unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let mut agent = start_with(
        &dir,
        Arc::new(directory),
        4,
        Some(writeback_agent::runtime::Observability::new(None)),
        Default::default(),
        Renewal {
            check_every: Duration::from_secs(1),
            fraction: renew::RENEW_FRACTION,
        },
        async move {
            let _ = stopped.wait_for(|v| *v).await;
        },
    )
    .await
    .unwrap();

    // Renewed at start, for the control plane's full lifetime (365 days).
    let renewed = tokio::time::timeout(
        Duration::from_secs(20),
        agent
            .certificate
            .wait_for(|v| v.not_after > old.not_after + time::Duration::days(300)),
    )
    .await
    .expect("the agent renewed its certificate")
    .unwrap()
    .to_owned();
    let now = time::OffsetDateTime::now_utc();
    assert!(!renewed.is_due(now, renew::RENEW_FRACTION));
    let mut scraped = String::new();
    prometheus_client::encoding::text::encode(&mut scraped, agent.metrics.as_ref().unwrap())
        .unwrap();
    assert!(
        scraped.contains(&format!(
            "writeback_agent_certificate_expiry_timestamp_seconds {}",
            renewed.not_after.unix_timestamp()
        )),
        "{scraped}"
    );
    let on_disk = std::fs::read_to_string(dir.join("agent.pem")).unwrap();
    assert_ne!(
        fingerprint_of_pem(&on_disk).unwrap(),
        fingerprint_of_pem(&short).unwrap()
    );
    let certs = tls::certs_from_pem(&on_disk).unwrap();
    assert_eq!(tls::spiffe_id_of(&certs[0]), Some(id.clone()));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("agent.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!dir.join("agent.key.next").exists() && !dir.join("agent.pem.next").exists());
    let key_now = std::fs::read_to_string(dir.join("agent.key")).unwrap();
    assert_ne!(key_now, key, "a fresh key, not the old one");
    // The control plane recorded it: the agent's row and the trail.
    let row = stack
        .cp
        .store
        .get_agent("t1", &enrollment.agent_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.cert_fingerprint, fingerprint_of_pem(&on_disk).unwrap());
    let (events, _) = stack
        .cp
        .store
        .list_admin_events("t1", Default::default())
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.action == "agent.renew_certificate"
            && e.object == format!("agent:{}", enrollment.agent_id)),
        "{events:?}"
    );

    // Once the old certificate has expired, the agent still gets in: stop
    // the relay it is on, and it connects to the other with the new one.
    let relay = agent.wait_connected(Duration::from_secs(20)).await.unwrap();
    tokio::time::sleep_until(expired_at).await;
    assert!(old.remaining(time::OffsetDateTime::now_utc()).is_zero());
    // The stack names its relays relay-1, relay-2… in order.
    let index = relay.trim_start_matches("relay-").parse::<usize>().unwrap() - 1;
    stack.relays.remove(index).stop().await;
    let other = tokio::time::timeout(
        Duration::from_secs(20),
        agent
            .state
            .wait_for(|s| matches!(s, TunnelState::Connected(r) if *r != relay)),
    )
    .await
    .expect("the agent reconnected with its renewed certificate")
    .unwrap()
    .clone();
    assert!(matches!(other, TunnelState::Connected(_)));

    // By hand, authenticated by the renewed certificate: works.
    let again = renew::renew(&dir, None).await.unwrap();
    assert!(again.validity.not_after >= renewed.not_after);
    assert_eq!(again.operation_signing_keys, published);

    // Revoked: refused with AGENT_REVOKED, the certificate on disk kept.
    admin
        .agents()
        .revoke_agent(admin.request(pb::RevokeAgentRequest {
            agent_id: enrollment.agent_id.clone(),
        }))
        .await
        .unwrap();
    let before = std::fs::read_to_string(dir.join("agent.pem")).unwrap();
    match renew::renew(&dir, None).await {
        Err(AgentError::Renew(f)) => {
            assert_eq!(f.reason, ReasonCode::AgentRevoked, "{}", f.message);
            assert!(f.message.contains("revoked"), "{}", f.message);
        }
        other => panic!("expected AGENT_REVOKED, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("agent.pem")).unwrap(),
        before
    );

    // No agent certificate (a bearer-token client's connection): refused.
    let anonymous = transport::channel(
        &stack.cp_url,
        tls::client_config(tls::roots_from_pem(stack.cp.ca.cert_pem()).unwrap(), None).unwrap(),
    )
    .unwrap();
    let status = pb::enrollment_service_client::EnrollmentServiceClient::new(anonymous)
        .renew_certificate(pb::RenewCertificateRequest {
            csr_pem: csr.clone(),
            agent_version: "test".into(),
            result_signing_public_key: Vec::new(),
        })
        .await
        .unwrap_err();
    let f = writeback_core::failure_of(&status);
    assert_eq!(f.reason, ReasonCode::Unauthenticated, "{}", f.message);

    let _ = stop.send(true);
}

/// A Stack with one relay, the domain registered, and an agent enrolled in
/// `dir` (not running).
async fn enrolled(dir_name: &str) -> (Stack, std::path::PathBuf) {
    writeback_identity::install_crypto_provider();
    let stack = Stack::start("t1", 1).await.unwrap();
    stack.register_domain(DOMAIN).await.unwrap();
    let token = enrollment_token(&stack).await;
    let dir = stack.dir.path().join(dir_name);
    writeback_agent::enroll::enroll(&stack.cp_url, &token, &dir)
        .await
        .unwrap();
    (stack, dir)
}

async fn enrollment_token(stack: &Stack) -> String {
    let admin = stack.admin().unwrap();
    admin
        .agents()
        .create_enrollment_token(admin.request(pb::CreateEnrollmentTokenRequest {
            domain: DOMAIN.into(),
            ttl_seconds: 600,
        }))
        .await
        .unwrap()
        .into_inner()
        .token
}

/// Opens a tunnel to `relay_url` with the agent certificate `cert`/`key`
/// and sends its Hello: the relay's answer (a Welcome, or the refusal).
async fn open_tunnel(
    stack: &Stack,
    relay_url: &str,
    cert: &str,
    key: &str,
    agent_id: &str,
) -> Result<pb::RelayMessage, tonic::Status> {
    let tls = tls::relay_client_config(
        tls::roots_from_pem(stack.cp.ca.cert_pem()).unwrap(),
        Some((cert, key)),
        "t1",
    )
    .unwrap();
    let channel = transport::channel(relay_url, tls).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            protocol_version: writeback_proto::TUNNEL_PROTOCOL_VERSION,
            identity: Some(pb::AgentIdentity {
                tenant: "t1".into(),
                domain: DOMAIN.into(),
                agent_id: agent_id.into(),
            }),
            agent_version: "test".into(),
            max_in_flight: 1,
        })),
    })
    .await
    .unwrap();
    let mut inbound = pb::agent_tunnel_client::AgentTunnelClient::new(channel)
        .open(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = inbound.message().await?;
    drop(tx);
    first.ok_or_else(|| tonic::Status::unavailable("the relay closed the tunnel"))
}

/// Issue #25 item 9: an old copy of the agent's certificate and key (a
/// backup of its state directory) renews nothing and opens no tunnel once
/// a renewal superseded it; the renewed certificate does both. Real control
/// plane, real relay.
#[tokio::test(flavor = "multi_thread")]
async fn a_superseded_certificate_neither_renews_nor_opens_a_tunnel() {
    let (stack, dir) = enrolled("agent").await;
    let state = AgentState::load(&dir).unwrap();
    let agent_id = state.enrollment.agent_id.clone();
    // The attacker's copy, taken before the renewal.
    let backup = stack.dir.path().join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    for f in [
        "state.toml",
        "agent.pem",
        "agent.key",
        "ca.pem",
        "envelope.key",
        "result.key",
    ] {
        std::fs::copy(dir.join(f), backup.join(f)).unwrap();
    }
    let (old_cert, old_key) = (state.cert_pem.clone(), state.key_pem.to_string());

    // The real agent renews.
    renew::renew(&dir, None).await.unwrap();
    let current = AgentState::load(&dir).unwrap();
    assert_ne!(current.cert_pem, old_cert);

    // The copy asks to renew: refused, and nothing changes on either side.
    match renew::renew(&backup, None).await {
        Err(AgentError::Renew(f)) => {
            assert_eq!(f.reason.as_str(), "CERTIFICATE_SUPERSEDED", "{}", f.message);
            assert!(f.message.contains("enroll it again"), "{}", f.message);
        }
        other => panic!("a superseded certificate renewed: {other:?}"),
    }
    let row = stack
        .cp
        .store
        .get_agent("t1", &agent_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.cert_fingerprint,
        fingerprint_of_pem(&current.cert_pem).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(backup.join("agent.pem")).unwrap(),
        old_cert
    );
    stack.cp.security.flush(false).await;
    let (events, _) = stack
        .cp
        .store
        .list_security_events(
            "t1",
            &Default::default(),
            writeback_control_plane::store::Page::first(100),
        )
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.kind == "renewal_refused"
            && e.reason_code == "CERTIFICATE_SUPERSEDED"
            && e.principal == format!("agent:{agent_id}")),
        "{events:?}"
    );

    // The relay refuses the copy's tunnel; the renewed certificate gets in.
    let relay = stack.relays[0].url.clone();
    let refused = open_tunnel(&stack, &relay, &old_cert, &old_key, &agent_id)
        .await
        .expect_err("a tunnel on a superseded certificate");
    let f = writeback_core::failure_of(&refused);
    assert_eq!(f.reason.as_str(), "CERTIFICATE_SUPERSEDED", "{}", f.message);
    let welcome = open_tunnel(
        &stack,
        &relay,
        &current.cert_pem,
        &current.key_pem,
        &agent_id,
    )
    .await
    .unwrap();
    assert!(
        matches!(welcome.body, Some(pb::relay_message::Body::Welcome(_))),
        "{welcome:?}"
    );
}

/// What an impostor of the control plane answers: whatever keys it wants
/// pinned, with a certificate signed by the CA (the test holds it) so the
/// agent's other checks pass.
#[derive(Clone)]
struct Impostor {
    ca: Arc<writeback_identity::Ca>,
    keys: Vec<Vec<u8>>,
    endorsements: Vec<pb::SigningKeyEndorsement>,
    agent_id: String,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl Impostor {
    fn certificate(&self, csr: &str) -> Result<String, tonic::Status> {
        let id = SpiffeId::agent("t1", DOMAIN, &self.agent_id).unwrap();
        self.ca
            .sign_agent_csr(csr, &id)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))
    }
}

#[tonic::async_trait]
impl pb::enrollment_service_server::EnrollmentService for Impostor {
    async fn enroll(
        &self,
        req: tonic::Request<pb::EnrollRequest>,
    ) -> Result<tonic::Response<pb::EnrollResponse>, tonic::Status> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(tonic::Response::new(pb::EnrollResponse {
            tenant: "t1".into(),
            domain: DOMAIN.into(),
            agent_id: self.agent_id.clone(),
            certificate_pem: self.certificate(&req.into_inner().csr_pem)?,
            ca_pem: self.ca.cert_pem().to_owned(),
            relay_urls: vec![],
            operation_signing_keys: self.keys.clone(),
            result_signing_key_registered: true,
            signing_key_endorsements: self.endorsements.clone(),
        }))
    }

    async fn renew_certificate(
        &self,
        req: tonic::Request<pb::RenewCertificateRequest>,
    ) -> Result<tonic::Response<pb::RenewCertificateResponse>, tonic::Status> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(tonic::Response::new(pb::RenewCertificateResponse {
            certificate_pem: self.certificate(&req.into_inner().csr_pem)?,
            ca_pem: self.ca.cert_pem().to_owned(),
            operation_signing_keys: self.keys.clone(),
            result_signing_key_registered: true,
            signing_key_endorsements: self.endorsements.clone(),
        }))
    }
}

/// Serves `impostor` over TLS with `chain`/`key` on 127.0.0.1; its URL.
async fn serve_impostor(impostor: Impostor, chain: &str, key: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let incoming = transport::tls_incoming(listener, tls::server_config(chain, key, None).unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::enrollment_service_server::EnrollmentServiceServer::new(
                impostor,
            ))
            .serve_with_incoming(incoming),
    );
    url
}

/// Issue #25 item 8, first half: a relay — its certificate from the same
/// CA, for the control plane's very host names (what a stack gives its
/// relays) — answering in the control plane's place gets neither the
/// enrollment token nor a renewal: the agent refuses its certificate in the
/// handshake (`NOT_CONTROL_PLANE`), so the relay's signing key is never
/// pinned.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_posing_as_the_control_plane_gets_no_enrollment_and_no_renewal() {
    let (stack, dir) = enrolled("agent").await;
    let pinned = AgentState::load(&dir)
        .unwrap()
        .enrollment
        .operation_signing_keys;
    let planted = writeback_envelope::signing::OperationSigner::generate()
        .unwrap()
        .0;
    let relay_id = SpiffeId::Relay {
        tenant: "t1".into(),
        relay_id: "relay-evil".into(),
    };
    let (chain, key) = stack
        .cp
        .ca
        .issue_service(
            &relay_id,
            &["localhost".to_owned()],
            &[std::net::IpAddr::from([127, 0, 0, 1])],
        )
        .unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let impostor = Impostor {
        ca: stack.cp.ca.clone(),
        keys: vec![planted.public_key()],
        endorsements: vec![],
        agent_id: AgentState::load(&dir).unwrap().enrollment.agent_id,
        calls: calls.clone(),
    };
    let url = serve_impostor(impostor, &chain, &key).await;

    // Enrollment: refused before the token is sent.
    let token = enrollment_token(&stack).await;
    let fresh = stack.dir.path().join("fresh");
    match writeback_agent::enroll::enroll(&url, &token, &fresh).await {
        Err(AgentError::Enroll(f)) => {
            assert_eq!(f.reason.as_str(), "NOT_CONTROL_PLANE", "{}", f.message);
            assert!(f.message.contains("control plane"), "{}", f.message);
        }
        other => panic!("enrolled with a relay posing as the control plane: {other:?}"),
    }
    assert!(!AgentState::exists(&fresh));

    // Renewal: refused before anything is sent; the pinned keys stay.
    match renew::renew(&dir, Some(url.as_str())).await {
        Err(AgentError::Renew(f)) => {
            assert_eq!(f.reason.as_str(), "NOT_CONTROL_PLANE", "{}", f.message);
        }
        other => panic!("renewed with a relay posing as the control plane: {other:?}"),
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    let after = AgentState::load(&dir).unwrap().enrollment;
    assert_eq!(after.operation_signing_keys, pinned);
    assert!(
        !after
            .operation_signing_keys
            .contains(&hex::encode(planted.public_key()))
    );
    // The real control plane still renews it (the token was not spent).
    renew::renew(&dir, None).await.unwrap();
    writeback_agent::enroll::enroll(&stack.cp_url, &token, &fresh)
        .await
        .unwrap();
}

/// Issue #25 item 8, second half: even a server holding the control
/// plane's API identity (a stolen API key, or a control plane whose key
/// was promoted without an endorsement) cannot get a new operation-signing
/// key pinned: a renewal takes up only keys a pinned key endorsed. The
/// real control plane's rotated key (endorsed) is taken up.
#[tokio::test(flavor = "multi_thread")]
async fn a_signing_key_no_pinned_key_endorsed_is_not_pinned() {
    let (stack, dir) = enrolled("agent").await;
    let state = AgentState::load(&dir).unwrap();
    let current = stack.cp.signer.public_key();
    assert_eq!(
        state.enrollment.operation_signing_keys,
        vec![hex::encode(&current)]
    );
    let planted = writeback_envelope::signing::OperationSigner::generate()
        .unwrap()
        .0;
    let (chain, key) = stack
        .cp
        .ca
        .issue_control_plane_api(
            &["localhost".to_owned()],
            &[std::net::IpAddr::from([127, 0, 0, 1])],
        )
        .unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut impostor = Impostor {
        ca: stack.cp.ca.clone(),
        keys: vec![current.clone(), planted.public_key()],
        // Endorsed by itself: not by a key the agent pins.
        endorsements: vec![{
            let e = planted.endorse(&planted.public_key());
            pb::SigningKeyEndorsement {
                public_key: e.public_key,
                endorser_key_id: e.endorser_key_id,
                signature: e.signature,
            }
        }],
        agent_id: state.enrollment.agent_id.clone(),
        calls: calls.clone(),
    };
    let url = serve_impostor(impostor.clone(), &chain, &key).await;
    let renewed = renew::renew(&dir, Some(url.as_str())).await.unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(renewed.operation_signing_keys, vec![hex::encode(&current)]);
    assert_eq!(
        renewed.refused_signing_keys,
        vec![planted.key_id().to_owned()]
    );
    let f = renewed.refused_keys_failure().unwrap();
    assert_eq!(f.reason.as_str(), "SIGNING_KEY_UNENDORSED");
    assert_eq!(
        AgentState::load(&dir)
            .unwrap()
            .enrollment
            .operation_signing_keys,
        vec![hex::encode(&current)]
    );

    // Offered alone (the current key dropped), it is still not pinned and
    // the agent keeps the key it trusts.
    impostor.keys = vec![planted.public_key()];
    let url = serve_impostor(impostor.clone(), &chain, &key).await;
    let renewed = renew::renew(&dir, Some(url.as_str())).await.unwrap();
    assert_eq!(renewed.operation_signing_keys, vec![hex::encode(&current)]);

    // The same key endorsed by the pinned one is taken up: what the real
    // control plane publishes after `signing-key rotate`.
    let endorsed = stack.cp.signer.endorse(&planted.public_key());
    impostor.keys = vec![current.clone(), planted.public_key()];
    impostor.endorsements = vec![pb::SigningKeyEndorsement {
        public_key: endorsed.public_key,
        endorser_key_id: endorsed.endorser_key_id,
        signature: endorsed.signature,
    }];
    let url = serve_impostor(impostor, &chain, &key).await;
    let renewed = renew::renew(&dir, Some(url.as_str())).await.unwrap();
    assert_eq!(
        renewed.operation_signing_keys,
        vec![hex::encode(&current), hex::encode(planted.public_key())]
    );
    assert!(renewed.refused_signing_keys.is_empty());
}

/// A renewal whose answer is lost after the control plane recorded it
/// leaves the agent holding a superseded certificate. The agent kept the
/// key it asked for (`agent.key.pending`) and asks again with its old
/// certificate for that key: the control plane issues it again (the
/// certificate the agent never got is superseded instead). An old copy of
/// the agent without that key cannot do the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_whose_answer_was_lost_is_asked_again_for_the_same_key() {
    let (stack, dir) = enrolled("agent").await;
    let state = AgentState::load(&dir).unwrap();
    let agent_id = state.enrollment.agent_id.clone();
    let backup = stack.dir.path().join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    for f in [
        "state.toml",
        "agent.pem",
        "agent.key",
        "ca.pem",
        "envelope.key",
        "result.key",
    ] {
        std::fs::copy(dir.join(f), backup.join(f)).unwrap();
    }
    // The agent asks for a certificate for `key`, which it keeps; the
    // control plane records it, and the answer never arrives.
    let (csr, key) = generate_csr().unwrap();
    writeback_identity::ca::write_file(&dir.join(renew::PENDING_KEY), key.as_bytes(), true)
        .unwrap();
    let client = tls::control_plane_client_config(
        tls::roots_from_pem(stack.cp.ca.cert_pem()).unwrap(),
        Some((&state.cert_pem, state.key_pem.as_str())),
    )
    .unwrap();
    let lost = pb::enrollment_service_client::EnrollmentServiceClient::new(
        transport::channel(&stack.cp_url, client).unwrap(),
    )
    .renew_certificate(pb::RenewCertificateRequest {
        csr_pem: csr,
        agent_version: "test".into(),
        result_signing_public_key: state.result_key.public_key(),
    })
    .await
    .unwrap()
    .into_inner()
    .certificate_pem;
    assert!(renew::has_pending_key(&dir));

    // The next attempt, with the old certificate, for the same key.
    renew::renew(&dir, None).await.unwrap();
    assert!(!renew::has_pending_key(&dir));
    let now = AgentState::load(&dir).unwrap();
    assert_eq!(now.key_pem.as_str(), key.as_str());
    assert_ne!(now.cert_pem, lost);
    let row = stack
        .cp
        .store
        .get_agent("t1", &agent_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.cert_fingerprint,
        fingerprint_of_pem(&now.cert_pem).unwrap()
    );
    // The relay refuses the certificate never delivered and the old one,
    // and admits the one installed.
    let relay = stack.relays[0].url.clone();
    for (cert, key) in [
        (lost.as_str(), key.as_str()),
        (state.cert_pem.as_str(), state.key_pem.as_str()),
    ] {
        let refused = open_tunnel(&stack, &relay, cert, key, &agent_id)
            .await
            .expect_err("superseded");
        let f = writeback_core::failure_of(&refused);
        assert_eq!(f.reason.as_str(), "CERTIFICATE_SUPERSEDED", "{}", f.message);
    }
    open_tunnel(&stack, &relay, &now.cert_pem, &now.key_pem, &agent_id)
        .await
        .unwrap();

    // An old copy holding the old certificate but not the key: refused.
    match renew::renew(&backup, None).await {
        Err(AgentError::Renew(f)) => {
            assert_eq!(f.reason.as_str(), "CERTIFICATE_SUPERSEDED", "{}", f.message);
        }
        other => panic!("an old copy renewed: {other:?}"),
    }
    assert!(!renew::has_pending_key(&backup), "a refusal drops the key");
}
