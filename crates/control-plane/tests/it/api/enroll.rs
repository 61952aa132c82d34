//! `Enroll` checks the token before anything else the caller sent: without
//! a valid token no CSR is parsed, let alone signed; a bad CSR with a valid
//! token is refused without using the token up.

use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;

use crate::harness::TestDb;
use crate::support::{Options, TestCp, reason_in_details};

async fn the_token_is_checked_before_the_csr(db: &TestDb) {
    let t = TestCp::start(db, Options::default()).await;
    let admin = t.admin();
    admin.add_domain("contoso.test").await;
    let token = t.enrollment_token("contoso.test").await;
    let enroll = |token: String, csr_pem: String| {
        let client = t.anonymous();
        async move {
            client
                .enrollment()
                .enroll(pb::EnrollRequest {
                    token,
                    csr_pem,
                    envelope_public_key: writeback_envelope::KeyPair::generate().public_bytes(),
                    hostname: "dc-host".into(),
                    agent_version: "0.1.0".into(),
                    result_signing_public_key: writeback_envelope::results::ResultSigner::generate(
                    )
                    .unwrap()
                    .0
                    .public_key(),
                })
                .await
        }
    };
    // The right token id with a wrong secret, and a CSR that is neither
    // small nor valid: the token decides.
    let mut parts: Vec<&str> = token.split('.').collect();
    let wrong_secret = "A".repeat(parts[2].len());
    parts[2] = &wrong_secret;
    let forged = parts.join(".");
    let junk = "-----BEGIN CERTIFICATE REQUEST-----\n".to_owned() + &"A".repeat(100 * 1024);
    let err = enroll(forged, junk.clone()).await.unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::EnrollmentTokenInvalid);

    // A valid token with an oversized or malformed CSR: refused, the token
    // still good.
    let err = enroll(token.clone(), junk).await.unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::InvalidArgument);
    assert!(err.message().contains("larger than"), "{err:?}");
    let err = enroll(token.clone(), "not a csr".into()).await.unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::InvalidArgument);
    let (csr_pem, _key) = writeback_identity::generate_csr().unwrap();
    let enrolled = enroll(token.clone(), csr_pem).await.unwrap().into_inner();
    assert!(enrolled.certificate_pem.contains("BEGIN CERTIFICATE"));
    // Used now: refused before its CSR is looked at.
    let err = enroll(token, "not a csr".into()).await.unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::EnrollmentTokenUsed);
}

both_backends!(the_token_is_checked_before_the_csr);
