//! The walking skeleton: one reset crosses every service, and the
//! identity and envelope checks hold end to end.

use std::io::Cursor;

use clap::Parser;
use writeback_core::{ReasonCode, failure_of};
use writeback_envelope::{Binding, Recipient, Secrets};
use writeback_identity::{Ca, SpiffeId, generate_csr, tls, transport};
use writeback_proto::v1 as pb;
use writeback_proto::v1::agent_tunnel_client::AgentTunnelClient;
use writeback_proto::v1::relay_dispatch_client::RelayDispatchClient;
use writeback_testkit::SambaDc;
use writeback_testkit::stack::Stack;

pub(crate) const OLD: &str = "Old-Passw0rd!1";
pub(crate) const NEW: &str = "N3w-Passw0rd!2";

fn init() {
    writeback_identity::install_crypto_provider();
    writeback_core::telemetry::init();
}

/// A Samba DC with alice, and a stack with one relay and one agent of the domain.
async fn contoso() -> (SambaDc, Stack, String) {
    init();
    let dc = SambaDc::start("contoso.test")
        .await
        .expect("samba DC (run scripts/install-deps.sh)");
    dc.create_user("alice", OLD).await.unwrap();
    dc.create_user("bob", OLD).await.unwrap();
    let mut stack = Stack::start("t1", 1).await.unwrap();
    stack.add_domain(&dc).await.unwrap();
    let agent_id = stack
        .start_agent(&dc, &dc.admin_dn(), dc.admin_password())
        .await
        .unwrap();
    (dc, stack, agent_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_crosses_every_service_and_lands_in_the_directory() {
    let (dc, stack, agent_id) = contoso().await;
    let admin = stack.admin().unwrap();
    let resp = admin
        .passwords()
        .reset_password(admin.request(pb::ResetPasswordRequest {
            user: Some(pb::UserRef {
                by: Some(pb::user_ref::By::Upn("alice@contoso.test".into())),
            }),
            new_password: NEW.into(),
            ..Default::default()
        }))
        .await
        .expect("reset succeeds")
        .into_inner();
    let outcome = resp.outcome.unwrap();
    assert_eq!(outcome.reason_code, "OK");
    assert!(outcome.applied);

    // Proven in the directory itself.
    assert!(
        dc.try_bind("alice@contoso.test", NEW).await.unwrap(),
        "new password binds"
    );
    assert!(
        !dc.try_bind("alice@contoso.test", OLD).await.unwrap(),
        "old password no longer binds"
    );
    assert!(
        dc.kinit("alice@contoso.test", NEW).await.unwrap(),
        "kerberos accepts the new password"
    );

    // The audit record names who did it and where it went.
    let record = admin
        .audit()
        .get_operation(admin.request(pb::GetOperationRequest {
            operation_id: resp.operation_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.state, "succeeded");
    assert_eq!(record.agent_id, agent_id);
    assert_eq!(record.relay_id, "relay-1");
    assert_eq!(record.domain, "contoso.test");
    assert_eq!(record.target, "upn:alice@contoso.test");

    // Repeating the operation id answers from the record and changes nothing.
    let again = admin
        .passwords()
        .reset_password(admin.request(pb::ResetPasswordRequest {
            user: Some(pb::UserRef {
                by: Some(pb::user_ref::By::Upn("alice@contoso.test".into())),
            }),
            new_password: "Yet-An0ther!3".into(),
            operation_id: resp.operation_id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.operation_id, resp.operation_id);
    assert!(
        dc.try_bind("alice@contoso.test", NEW).await.unwrap(),
        "the repeat was not applied"
    );
}

fn cli(stack: &Stack, args: &[&str]) -> writeback_cli::Cli {
    let ca_file = stack.dir.path().join("cp").join("ca.pem");
    let mut argv = vec![
        "writebackctl".to_owned(),
        "--control-plane".to_owned(),
        stack.cp_url.clone(),
        "--ca-file".to_owned(),
        ca_file.display().to_string(),
        "--token-file".to_owned(),
        stack.admin_token_file.display().to_string(),
    ];
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    writeback_cli::Cli::parse_from(argv)
}

#[tokio::test(flavor = "multi_thread")]
async fn writebackctl_reads_the_password_from_stdin_and_reports_reasons() {
    let (dc, stack, _) = contoso().await;
    let mut out = Vec::new();
    let mut stdin = Cursor::new(format!("{NEW}\n").into_bytes());
    writeback_cli::run(
        cli(
            &stack,
            &["password", "reset", "--user", "alice@contoso.test"],
        ),
        &mut stdin,
        &mut out,
    )
    .await
    .expect("writebackctl password reset");
    let printed = String::from_utf8(out).unwrap();
    assert!(printed.starts_with("OK: "), "{printed}");
    assert!(!printed.contains(NEW), "the password is never printed");
    assert!(dc.try_bind("alice@contoso.test", NEW).await.unwrap());

    // A user of an unknown domain: non-zero exit with a reason code.
    let mut stdin = Cursor::new(b"Whatever-1x!\n".to_vec());
    let err = writeback_cli::run(
        cli(
            &stack,
            &["password", "reset", "--user", "carol@elsewhere.test"],
        ),
        &mut stdin,
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason(), Some(ReasonCode::DomainNotFound), "{err}");
    assert_eq!(err.exit_code(), std::process::ExitCode::from(1));

    // Writeback off: refused at once, directory unchanged.
    writeback_cli::run(
        cli(&stack, &["settings", "set", "--sspr-writeback", "off"]),
        &mut Cursor::new(vec![]),
        &mut Vec::new(),
    )
    .await
    .unwrap();
    let mut stdin = Cursor::new(b"Third-Passw0rd!\n".to_vec());
    let err = writeback_cli::run(
        cli(
            &stack,
            &["password", "reset", "--user", "alice@contoso.test"],
        ),
        &mut stdin,
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason(), Some(ReasonCode::WritebackDisabled), "{err}");
    assert!(
        dc.try_bind("alice@contoso.test", NEW).await.unwrap(),
        "nothing was applied"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_refuses_an_agent_certificate_from_another_ca() {
    init();
    let stack = Stack::start("t1", 1).await.unwrap();
    let rogue = Ca::generate("t1").unwrap();
    let (csr, key) = generate_csr().unwrap();
    let id = SpiffeId::agent("t1", "contoso.test", "agent-rogue").unwrap();
    let cert = rogue.sign_agent_csr(&csr, &id).unwrap();
    // The rogue agent trusts the real CA, so only the relay's check can stop it.
    let config = tls::client_config(
        tls::roots_from_pem(stack.cp.ca.cert_pem()).unwrap(),
        Some((&cert, &key)),
    )
    .unwrap();
    let err = transport::check_handshake(&stack.relays[0].url, config.clone()).await;
    let opened = async {
        let channel = transport::channel(&stack.relays[0].url, config).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(pb::AgentMessage {
            body: Some(pb::agent_message::Body::Hello(pb::Hello {
                protocol_version: writeback_proto::TUNNEL_PROTOCOL_VERSION,
                identity: Some(pb::AgentIdentity {
                    tenant: "t1".into(),
                    domain: "contoso.test".into(),
                    agent_id: "agent-rogue".into(),
                }),
                agent_version: "0".into(),
                max_in_flight: 1,
            })),
        })
        .await
        .unwrap();
        let mut stream = AgentTunnelClient::new(channel)
            .open(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        stream.message().await
    }
    .await;
    assert!(
        opened.is_err(),
        "the tunnel must not open: {opened:?} (handshake: {err:?})"
    );
    assert!(
        stack.relays[0]
            .relay
            .registry()
            .agents("t1", "contoso.test")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_of_domain_a_never_receives_an_operation_for_domain_b() {
    let (dc, stack, _) = contoso().await;
    // fabrikam.test is registered but has no agent: its users get NO_AGENT_ONLINE,
    // even though an agent of contoso.test is connected.
    let admin = stack.admin().unwrap();
    admin
        .domains()
        .add_domain(admin.request(pb::AddDomainRequest {
            name: "fabrikam.test".into(),
            upn_suffixes: vec![],
        }))
        .await
        .unwrap();
    let status = admin
        .passwords()
        .reset_password(admin.request(pb::ResetPasswordRequest {
            user: Some(pb::UserRef {
                by: Some(pb::user_ref::By::Upn("alice@fabrikam.test".into())),
            }),
            new_password: NEW.into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(
        failure_of(&status).reason,
        ReasonCode::NoAgentOnline,
        "{status:?}"
    );

    // Dispatching straight to the relay with the contoso agent's sealed copy
    // but the fabrikam domain: the relay has no fabrikam agent to give it to.
    let mut relay = control_plane_relay_client(&stack);
    let mut op = sealed_op(
        &stack,
        "fabrikam.test",
        "alice@fabrikam.test",
        "alice@fabrikam.test",
    )
    .await;
    stack.cp.signer.sign(&mut op);
    let err = relay
        .dispatch(pb::DispatchRequest {
            operation: Some(op),
            min_revocation_version: 0,
            agent_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(failure_of(&err).reason, ReasonCode::NoAgentOnline);
    assert!(
        dc.try_bind("alice@contoso.test", OLD).await.unwrap(),
        "alice untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_or_moved_envelope_fails_to_open_and_changes_nothing() {
    let (dc, stack, _) = contoso().await;
    let mut relay = control_plane_relay_client(&stack);

    // Sealed for alice, delivered with bob as the target — and signed as
    // such by the control plane's key, so it is the envelope that refuses.
    let mut op = sealed_op(
        &stack,
        "contoso.test",
        "alice@contoso.test",
        "bob@contoso.test",
    )
    .await;
    stack.cp.signer.sign(&mut op);
    let result = relay
        .dispatch(pb::DispatchRequest {
            operation: Some(op),
            min_revocation_version: 0,
            agent_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let outcome = result.result.unwrap().outcome.unwrap();
    assert_eq!(outcome.reason_code, ReasonCode::EnvelopeInvalid.as_str());
    assert!(!outcome.applied);

    // Ciphertext bit flipped.
    let mut op = sealed_op(
        &stack,
        "contoso.test",
        "alice@contoso.test",
        "alice@contoso.test",
    )
    .await;
    op.envelope.as_mut().unwrap().copies[0].ciphertext[3] ^= 0x40;
    stack.cp.signer.sign(&mut op);
    let result = relay
        .dispatch(pb::DispatchRequest {
            operation: Some(op),
            min_revocation_version: 0,
            agent_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        result.result.unwrap().outcome.unwrap().reason_code,
        ReasonCode::EnvelopeInvalid.as_str()
    );

    assert!(
        dc.try_bind("bob@contoso.test", OLD).await.unwrap(),
        "bob untouched"
    );
    assert!(
        dc.try_bind("alice@contoso.test", OLD).await.unwrap(),
        "alice untouched"
    );
}

/// A RelayDispatch client holding the tenant control plane's identity.
pub(crate) fn control_plane_relay_client(
    stack: &Stack,
) -> RelayDispatchClient<tonic::transport::Channel> {
    let id = SpiffeId::ControlPlane {
        tenant: stack.tenant.clone(),
    };
    let (chain, key) = stack.cp.ca.issue_service(&id, &[], &[]).unwrap();
    let config = tls::client_config(
        tls::roots_from_pem(stack.cp.ca.cert_pem()).unwrap(),
        Some((&chain, &key)),
    )
    .unwrap();
    RelayDispatchClient::new(transport::channel(&stack.relays[0].url, config).unwrap())
}

/// A reset sealed to contoso's agents for `sealed_for`, addressed to
/// `deliver_to`, unsigned.
pub(crate) async fn sealed_op(
    stack: &Stack,
    domain: &str,
    sealed_for: &str,
    deliver_to: &str,
) -> pb::OperationRequest {
    let keys = stack
        .cp
        .store
        .agent_keys(&stack.tenant, "contoso.test")
        .await
        .unwrap();
    let recipients: Vec<Recipient<'_>> = keys
        .iter()
        .map(|(id, pk)| Recipient {
            agent_id: id,
            public_key: pk,
        })
        .collect();
    let id = uuid::Uuid::new_v4().to_string();
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 30;
    let sealed_target = format!("upn:{sealed_for}");
    let binding = Binding {
        tenant: &stack.tenant,
        domain,
        operation_id: &id,
        target: &sealed_target,
        kind: "reset",
        must_change_at_next_logon: false,
        unlock: false,
        expires_at: expires,
    };
    let envelope = writeback_envelope::seal(
        &recipients,
        &binding,
        &Secrets {
            new_password: NEW.to_owned().into(),
            old_password: None,
        },
    )
    .unwrap();
    pb::OperationRequest {
        operation_id: id,
        tenant: stack.tenant.clone(),
        domain: domain.to_owned(),
        kind: pb::OperationKind::Reset as i32,
        target: Some(pb::UserRef {
            by: Some(pb::user_ref::By::Upn(deliver_to.to_owned())),
        }),
        must_change_at_next_logon: false,
        unlock: false,
        expires_at: Some(prost_types::Timestamp {
            seconds: expires,
            nanos: 0,
        }),
        envelope: Some(envelope),
        traceparent: String::new(),
        signature: Vec::new(),
        signing_key_id: String::new(),
        search: None,
        agent_id: String::new(),
        issued_at: None,
    }
}
