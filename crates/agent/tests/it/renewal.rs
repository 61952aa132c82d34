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
