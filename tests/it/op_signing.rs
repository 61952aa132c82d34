//! Operations are authenticated end to end: a relay (or anyone who can
//! dispatch through one) that invents, rewrites or replays an operation —
//! an unlock included, which carries no envelope, and a directory search
//! whose query or limit it widened — gets `OPERATION_UNAUTHENTICATED` (or
//! the first result, for a replay), and the Samba directory does not change. The attacks are built at the protocol
//! level, through the relay's own dispatch API with the control plane's
//! relay-client identity: everything a compromised relay can do.

use writeback_core::ReasonCode;
use writeback_envelope::signing::OperationSigner;
use writeback_proto::v1 as pb;
use writeback_testkit::SambaDc;
use writeback_testkit::stack::Stack;

use crate::skeleton::{NEW, OLD, control_plane_relay_client, sealed_op};

async fn lockout_time(dc: &SambaDc, user: &str) -> i64 {
    let dn = format!("CN={user},CN=Users,{}", dc.base_dn());
    let attrs = dc.read_attrs(&dn, &["lockoutTime"]).await.unwrap();
    attrs
        .get("lockoutTime")
        .and_then(|v| v.first())
        .map_or(0, |v| v.parse().unwrap())
}

async fn lock_out(dc: &SambaDc, user: &str) {
    let who = format!("{user}@{}", dc.domain());
    for _ in 0..4 {
        let _ = dc.try_bind(&who, "Wrong-Passw0rd!").await;
    }
    assert_ne!(lockout_time(dc, user).await, 0, "{who} is locked out");
}

fn unlock_of(stack: &Stack, upn: &str) -> pb::OperationRequest {
    pb::OperationRequest {
        operation_id: uuid::Uuid::new_v4().to_string(),
        tenant: stack.tenant.clone(),
        domain: "contoso.test".into(),
        kind: pb::OperationKind::Unlock as i32,
        target: Some(pb::UserRef {
            by: Some(pb::user_ref::By::Upn(upn.into())),
        }),
        expires_at: Some(prost_types::Timestamp {
            seconds: time::OffsetDateTime::now_utc().unix_timestamp() + 30,
            nanos: 0,
        }),
        ..Default::default()
    }
}

async fn send(stack: &Stack, op: pb::OperationRequest) -> pb::OperationOutcome {
    control_plane_relay_client(stack)
        .dispatch(pb::DispatchRequest {
            operation: Some(op),
            min_revocation_version: 0,
            agent_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
        .outcome
        .unwrap()
}

#[track_caller]
fn refused(o: &pb::OperationOutcome) {
    assert_eq!(
        o.reason_code,
        ReasonCode::OperationUnauthenticated.as_str(),
        "{o:?}"
    );
    assert!(!o.applied);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_cannot_invent_rewrite_or_replay_an_operation() {
    writeback_identity::install_crypto_provider();
    writeback_core::telemetry::init();
    let dc = SambaDc::start("contoso.test")
        .await
        .expect("samba DC (run scripts/install-deps.sh)");
    dc.set_password_settings(&["--min-pwd-age=0", "--account-lockout-threshold=3"])
        .await
        .unwrap();
    dc.create_user("alice", OLD).await.unwrap();
    dc.create_user("bob", OLD).await.unwrap();
    let mut stack = Stack::start("t1", 1).await.unwrap();
    stack.add_domain(&dc).await.unwrap();
    stack
        .start_agent(&dc, &dc.admin_dn(), dc.admin_password())
        .await
        .unwrap();
    lock_out(&dc, "alice").await;
    let locked_at = lockout_time(&dc, "alice").await;

    // An unlock the relay invents (unlocks carry no envelope: before
    // signing, nothing at all authenticated them).
    refused(&send(&stack, unlock_of(&stack, "alice@contoso.test")).await);
    // The same, signed with a key of the attacker's own.
    let (rogue, _) = OperationSigner::generate().unwrap();
    let mut forged = unlock_of(&stack, "alice@contoso.test");
    rogue.sign(&mut forged);
    refused(&send(&stack, forged).await);
    // A genuine unlock of bob, rewritten to target alice.
    let mut genuine_bob = unlock_of(&stack, "bob@contoso.test");
    stack.cp.signer.sign(&mut genuine_bob);
    let mut rewritten = genuine_bob.clone();
    rewritten.target = Some(pb::UserRef {
        by: Some(pb::user_ref::By::Upn("alice@contoso.test".into())),
    });
    refused(&send(&stack, rewritten).await);
    assert_eq!(
        lockout_time(&dc, "alice").await,
        locked_at,
        "alice is still locked out"
    );

    // A reset with a password of the attacker's choosing, properly sealed
    // to the agents' public keys (which are not secret) but not signed by
    // the control plane: refused, bob's password is unchanged.
    let attack = sealed_op(
        &stack,
        "contoso.test",
        "bob@contoso.test",
        "bob@contoso.test",
    )
    .await;
    refused(&send(&stack, attack.clone()).await);
    let mut attack = attack;
    rogue.sign(&mut attack);
    refused(&send(&stack, attack).await);
    assert!(
        dc.try_bind("bob@contoso.test", OLD).await.unwrap(),
        "bob keeps his password"
    );
    assert!(!dc.try_bind("bob@contoso.test", NEW).await.unwrap());

    // A directory search is signed too: a relay can neither invent one nor
    // widen a genuine one (its query or its limit); the genuine one answers.
    let search = |query: &str, limit: u32| pb::OperationRequest {
        kind: pb::OperationKind::DirectorySearch as i32,
        target: None,
        search: Some(pb::DirectorySearch {
            query: query.into(),
            limit,
        }),
        ..unlock_of(&stack, "")
    };
    refused(&send(&stack, search("bo", 25)).await);
    let mut genuine_search = search("bo", 1);
    stack.cp.signer.sign(&mut genuine_search);
    for (query, limit) in [("b", 1), ("bo", 25)] {
        let mut widened = genuine_search.clone();
        widened.search = Some(pb::DirectorySearch {
            query: query.into(),
            limit,
        });
        refused(&send(&stack, widened).await);
    }
    assert_eq!(send(&stack, genuine_search).await.reason_code, "OK");

    // The control plane's own unlock of alice works...
    let mut genuine = unlock_of(&stack, "alice@contoso.test");
    stack.cp.signer.sign(&mut genuine);
    let first = send(&stack, genuine.clone()).await;
    assert_eq!(first.reason_code, "OK", "{first:?}");
    assert_eq!(lockout_time(&dc, "alice").await, 0);
    // ...and replayed later, after alice was locked out again, it is
    // answered from its first result and does not unlock her again.
    lock_out(&dc, "alice").await;
    let locked_again = lockout_time(&dc, "alice").await;
    let replay = send(&stack, genuine).await;
    assert_eq!(replay.reason_code, "OK", "the first result, repeated");
    assert_eq!(
        lockout_time(&dc, "alice").await,
        locked_again,
        "a replay changes nothing"
    );
}
