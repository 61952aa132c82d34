//! Enrollment over the real RPC: a token works once, pins the CA, and every
//! refusal has its own reason code.

use writeback_agent::AgentError;
use writeback_core::ReasonCode;
use writeback_identity::EnrollmentToken;
use writeback_proto::v1 as pb;
use writeback_testkit::stack::Stack;

async fn stack_with_domain() -> Stack {
    writeback_identity::install_crypto_provider();
    let stack = Stack::start("t1", 1).await.unwrap();
    let admin = stack.admin().unwrap();
    admin
        .domains()
        .add_domain(admin.request(pb::AddDomainRequest {
            name: "contoso.test".into(),
            upn_suffixes: vec![],
        }))
        .await
        .unwrap();
    stack
}

async fn token(stack: &Stack, ttl_seconds: u32) -> String {
    let admin = stack.admin().unwrap();
    admin
        .agents()
        .create_enrollment_token(admin.request(pb::CreateEnrollmentTokenRequest {
            domain: "contoso.test".into(),
            ttl_seconds,
        }))
        .await
        .unwrap()
        .into_inner()
        .token
}

fn reason(e: AgentError) -> ReasonCode {
    match e {
        AgentError::Enroll(f) => f.reason,
        other => panic!("expected an enrollment refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_enrolls_exactly_one_agent_with_a_certificate_naming_it() {
    let stack = stack_with_domain().await;
    let t = token(&stack, 600).await;
    let first = stack.dir.path().join("a1");
    let e = writeback_agent::enroll::enroll(&stack.cp_url, &t, &first)
        .await
        .unwrap();
    assert_eq!(
        (e.tenant.as_str(), e.domain.as_str()),
        ("t1", "contoso.test")
    );
    assert_eq!(e.relay_urls, vec![stack.relays[0].url.clone()]);
    let cert = std::fs::read_to_string(first.join("agent.pem")).unwrap();
    let certs = writeback_identity::tls::certs_from_pem(&cert).unwrap();
    let id = writeback_identity::tls::spiffe_id_of(&certs[0]).unwrap();
    assert_eq!(
        id.to_string(),
        format!(
            "spiffe://writeback/tenant/t1/domain/contoso.test/agent/{}",
            e.agent_id
        )
    );
    use std::os::unix::fs::PermissionsExt;
    for secret in ["agent.key", "envelope.key"] {
        let mode = std::fs::metadata(first.join(secret))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{secret}");
    }

    // The same token again: refused, nothing written.
    let second = stack.dir.path().join("a2");
    let err = writeback_agent::enroll::enroll(&stack.cp_url, &t, &second)
        .await
        .unwrap_err();
    assert_eq!(reason(err), ReasonCode::EnrollmentTokenUsed);
    assert!(!second.join("state.toml").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_forged_and_foreign_ca_tokens_are_refused() {
    let stack = stack_with_domain().await;

    let expired = token(&stack, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let err =
        writeback_agent::enroll::enroll(&stack.cp_url, &expired, &stack.dir.path().join("x1"))
            .await
            .unwrap_err();
    assert_eq!(reason(err), ReasonCode::EnrollmentTokenExpired);

    // A well-formed token the control plane never issued.
    let forged = EnrollmentToken::generate(&stack.cp.ca.fingerprint()).expose();
    let err = writeback_agent::enroll::enroll(&stack.cp_url, &forged, &stack.dir.path().join("x2"))
        .await
        .unwrap_err();
    assert_eq!(reason(err), ReasonCode::EnrollmentTokenInvalid);

    // A token pinning another CA: the agent refuses the control plane at the handshake.
    let other_ca = writeback_identity::Ca::generate("t1").unwrap();
    let foreign = EnrollmentToken::generate(&other_ca.fingerprint()).expose();
    let err =
        writeback_agent::enroll::enroll(&stack.cp_url, &foreign, &stack.dir.path().join("x3"))
            .await
            .unwrap_err();
    assert_eq!(reason(err), ReasonCode::CaMismatch);

    let err =
        writeback_agent::enroll::enroll(&stack.cp_url, "not-a-token", &stack.dir.path().join("x4"))
            .await
            .unwrap_err();
    assert_eq!(reason(err), ReasonCode::EnrollmentTokenInvalid);
}
