//! The executor's unit tests: in-doubt settlement, result signing and user
//! lookups.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::ledger::{DEFAULT_RETENTION, Ledger};

/// An executor of agent `a1` (tenant `t1`, `contoso.test`) over
/// `directory` that trusts a new control-plane key and signs its results
/// with a new key: that control plane's signer, the agent's public result
/// key and the executor.
fn signing_executor(
    directory: Arc<dyn Apply>,
) -> (
    writeback_envelope::signing::OperationSigner,
    TrustedKey,
    Executor,
) {
    let (cp, _) = writeback_envelope::signing::OperationSigner::generate().unwrap();
    let (agent_key, _) = ResultSigner::generate().unwrap();
    let agent_public = TrustedKey::new(&agent_key.public_key()).unwrap();
    let enrollment = Enrollment {
        tenant: "t1".into(),
        domain: "contoso.test".into(),
        agent_id: "a1".into(),
        relay_urls: vec![],
        operation_signing_keys: vec![hex::encode(cp.public_key())],
        control_plane_url: String::new(),
        result_signing_key_registered: true,
    };
    let executor = Executor::new(
        enrollment,
        writeback_envelope::KeyPair::generate(),
        directory,
    )
    .with_result_signer(agent_key);
    (cp, agent_public, executor)
}

/// An unsigned operation `id` of `kind` on alice@contoso.test (tenant `t1`),
/// expiring at `expires` (Unix seconds).
fn alice(id: &str, kind: v1::OperationKind, expires: i64) -> OperationRequest {
    OperationRequest {
        operation_id: id.into(),
        tenant: "t1".into(),
        domain: "contoso.test".into(),
        kind: kind as i32,
        target: Some(v1::UserRef {
            by: Some(user_ref::By::Upn("alice@contoso.test".into())),
        }),
        expires_at: Some(prost_types::Timestamp {
            seconds: expires,
            nanos: 0,
        }),
        ..OperationRequest::default()
    }
}

/// A directory whose password versions the test sets; applies nothing.
struct Versions {
    version: AtomicU32,
    applied: AtomicU32,
}

#[tonic::async_trait]
impl Apply for Versions {
    async fn apply(&self, _: &ValidOperation, _: Option<&Secrets>) -> Result<(), Failure> {
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn health(&self) -> Vec<DcStatus> {
        Vec::new()
    }
    async fn password_version(&self, _: &Target) -> Option<u32> {
        Some(self.version.load(Ordering::SeqCst))
    }
}

fn begun(kind: &str, witness: Option<u32>) -> Begun {
    Begun {
        expires_ms: 0,
        target: "upn:alice@contoso.test".into(),
        kind: kind.into(),
        witness,
    }
}

/// Operations a crash left begun are decided from the directory at
/// start-up: a raised password version is "applied" (finished, answered
/// OK from then on), an unchanged one is forgotten (a redelivery runs
/// it), an unlock is run again, and no witness keeps it in doubt.
#[tokio::test]
async fn in_doubt_operations_are_settled_from_the_password_version() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), DEFAULT_RETENTION).unwrap();
    ledger
        .begin("raised", begun("reset", Some(4)))
        .await
        .unwrap();
    ledger
        .begin("same", begun("change", Some(5)))
        .await
        .unwrap();
    ledger.begin("unlock", begun("unlock", None)).await.unwrap();
    ledger.begin("blind", begun("reset", None)).await.unwrap();
    let directory = Arc::new(Versions {
        version: AtomicU32::new(5),
        applied: AtomicU32::new(0),
    });
    let enrollment = Enrollment {
        tenant: "t1".into(),
        domain: "contoso.test".into(),
        agent_id: "a1".into(),
        relay_urls: vec![],
        operation_signing_keys: vec![],
        control_plane_url: String::new(),
        result_signing_key_registered: false,
    };
    let executor = Executor::new(
        enrollment,
        writeback_envelope::KeyPair::generate(),
        directory.clone(),
    )
    .with_ledger(ledger.clone());
    executor.settle_ledger().await;
    match ledger.get("raised") {
        Some(Entry::Done(o)) => {
            assert!(o.applied);
            assert_eq!(o.reason_code, "OK");
        }
        other => panic!("raised: {other:?}"),
    }
    assert_eq!(ledger.get("same"), None, "not applied: forgotten");
    assert_eq!(ledger.get("unlock"), None, "an unlock runs again");
    assert!(matches!(ledger.get("blind"), Some(Entry::Begun(_))));
    assert_eq!(directory.applied.load(Ordering::SeqCst), 0);
    // The decisions are durable.
    drop(executor);
    let reopened = Ledger::open(dir.path(), DEFAULT_RETENTION).unwrap();
    assert!(matches!(reopened.get("raised"), Some(Entry::Done(_))));
    assert_eq!(reopened.get("same"), None);
    assert_eq!(reopened.in_doubt().len(), 1);
}

/// Every answer leaves signed with the agent's result-signing key and
/// bound to the operation as it arrived: an applied operation, the
/// refusal of an unsigned one, an outcome query's ledger answer.
#[tokio::test]
async fn every_result_is_signed_and_bound_to_its_operation() {
    use writeback_envelope::results;
    let directory = Arc::new(Versions {
        version: AtomicU32::new(1),
        applied: AtomicU32::new(0),
    });
    let (cp, agent_public, executor) = signing_executor(directory.clone());
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 60;
    let mut unlock = alice("op-1", v1::OperationKind::Unlock, expires);
    cp.sign(&mut unlock);
    let r = executor.execute(unlock.clone()).await;
    assert_eq!(r.outcome.as_ref().unwrap().reason_code, "OK");
    assert_eq!(directory.applied.load(Ordering::SeqCst), 1);
    results::verify(&unlock, &r, &agent_public).unwrap();
    // Bound to the operation: not valid for another one.
    let mut other = unlock.clone();
    other.operation_id = "op-2".into();
    cp.sign(&mut other);
    assert_eq!(
        results::verify(&other, &r, &agent_public),
        Err(SigningError::BadSignature)
    );

    // The agent's refusal of an unsigned operation is signed over what
    // arrived.
    let mut unsigned = unlock.clone();
    unsigned.operation_id = "op-3".into();
    unsigned.signature.clear();
    let r = executor.execute(unsigned.clone()).await;
    assert_eq!(
        r.outcome.as_ref().unwrap().reason_code,
        "OPERATION_UNAUTHENTICATED"
    );
    results::verify(&unsigned, &r, &agent_public).unwrap();
    let r = executor.refused(
        unsigned.clone(),
        Instant::now(),
        Failure::new(ReasonCode::ClockSkew, "skewed"),
    );
    results::verify(&unsigned, &r, &agent_public).unwrap();

    // An outcome query: the ledger answer is covered.
    let mut query = unlock.clone();
    query.kind = v1::OperationKind::OutcomeQuery as i32;
    cp.sign(&mut query);
    let mut r = executor.execute(query.clone()).await;
    assert_eq!(r.ledger_state, v1::LedgerState::Finished as i32);
    results::verify(&query, &r, &agent_public).unwrap();
    r.ledger_state = v1::LedgerState::NotSeen as i32;
    assert_eq!(
        results::verify(&query, &r, &agent_public),
        Err(SigningError::BadSignature)
    );
}

/// A directory that knows one user, Alice, and counts lookups.
struct People {
    lookups: AtomicU32,
}

const ALICE_GUID: &str = "0b0c4a1e-9d1f-4c59-8a2e-6c1f1e0b7a11";

#[tonic::async_trait]
impl Apply for People {
    async fn apply(&self, _: &ValidOperation, _: Option<&Secrets>) -> Result<(), Failure> {
        panic!("a lookup applies nothing")
    }
    async fn health(&self) -> Vec<DcStatus> {
        Vec::new()
    }
    async fn lookup(&self, target: &Target) -> Result<Identity, Failure> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let alice = uuid::Uuid::parse_str(ALICE_GUID).unwrap();
        match target {
            Target::Upn(u) if u.eq_ignore_ascii_case("alice@contoso.test") => {}
            Target::ObjectGuid(g) if *g == alice => {}
            _ => return Err(Failure::new(ReasonCode::UserNotFound, "no such user")),
        }
        Ok(Identity {
            password_version: Some(3),
            guid: Some(alice),
            upn: Some("alice@contoso.test".into()),
        })
    }
}

/// A user lookup answers with the one user a target names — its GUID and
/// UPN, covered by the result's signature — or `USER_NOT_FOUND`; it is
/// checked for tenant and domain first, applies nothing and is not
/// remembered (the same id asks the directory again).
#[tokio::test]
async fn a_user_lookup_names_the_user_and_is_signed() {
    use writeback_envelope::results;
    let people = Arc::new(People {
        lookups: AtomicU32::new(0),
    });
    let (cp, agent_public, executor) = signing_executor(people.clone());
    let lookup = |id: &str, domain: &str, by: user_ref::By| {
        let mut op = OperationRequest {
            operation_id: id.into(),
            tenant: "t1".into(),
            domain: domain.into(),
            kind: v1::OperationKind::UserLookup as i32,
            target: Some(v1::UserRef { by: Some(by) }),
            expires_at: Some(prost_types::Timestamp {
                seconds: time::OffsetDateTime::now_utc().unix_timestamp() + 60,
                nanos: 0,
            }),
            ..OperationRequest::default()
        };
        cp.sign(&mut op);
        op
    };

    let by_upn = lookup(
        "l1",
        "contoso.test",
        user_ref::By::Upn("ALICE@contoso.test".into()),
    );
    let mut r = executor.execute(by_upn.clone()).await;
    assert_eq!(r.outcome.as_ref().unwrap().reason_code, "OK");
    assert!(!r.outcome.as_ref().unwrap().applied);
    assert_eq!(
        (r.target_guid.as_str(), r.target_upn.as_str()),
        (ALICE_GUID, "alice@contoso.test")
    );
    results::verify(&by_upn, &r, &agent_public).unwrap();
    r.target_guid = uuid::Uuid::nil().to_string();
    assert_eq!(
        results::verify(&by_upn, &r, &agent_public),
        Err(SigningError::BadSignature),
        "a relay cannot name someone else"
    );
    // Not remembered: the same id is looked up again.
    let again = executor.execute(by_upn).await;
    assert_eq!(again.target_guid, ALICE_GUID);
    assert_eq!(people.lookups.load(Ordering::SeqCst), 2);

    let by_guid = lookup(
        "l2",
        "contoso.test",
        user_ref::By::ObjectGuid(ALICE_GUID.into()),
    );
    let r = executor.execute(by_guid).await;
    assert_eq!(r.target_upn, "alice@contoso.test");

    let nobody = lookup(
        "l3",
        "contoso.test",
        user_ref::By::Upn("bob@contoso.test".into()),
    );
    let r = executor.execute(nobody).await;
    assert_eq!(r.outcome.as_ref().unwrap().reason_code, "USER_NOT_FOUND");
    assert!(r.target_guid.is_empty() && r.target_upn.is_empty());

    let elsewhere = lookup(
        "l4",
        "fabrikam.test",
        user_ref::By::Upn("alice@fabrikam.test".into()),
    );
    let r = executor.execute(elsewhere).await;
    assert_eq!(r.outcome.as_ref().unwrap().reason_code, "WRONG_DOMAIN");
    assert_eq!(
        people.lookups.load(Ordering::SeqCst),
        4,
        "the other domain's lookup never reached the directory"
    );
}

/// An operation refused because it expired on its way touched nothing: it
/// is neither remembered nor in the ledger (an outcome query says "not
/// seen"), and the same id, signed again with a new expiry — a control
/// plane reopening it — runs, once.
#[tokio::test]
async fn an_expired_refusal_is_not_remembered_and_its_id_can_run_later() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), DEFAULT_RETENTION).unwrap();
    let directory = Arc::new(Versions {
        version: AtomicU32::new(1),
        applied: AtomicU32::new(0),
    });
    let (cp, _, executor) = signing_executor(directory.clone());
    let executor = executor.with_ledger(ledger);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let signed = |kind: v1::OperationKind, expires: i64| {
        let mut op = alice("late-1", kind, expires);
        cp.sign(&mut op);
        op
    };
    let reason = |r: &OperationResult| r.outcome.as_ref().unwrap().reason_code.clone();

    let expired = signed(v1::OperationKind::Unlock, now - 1);
    assert_eq!(
        reason(&executor.execute(expired).await),
        "OPERATION_EXPIRED"
    );
    let query = signed(v1::OperationKind::OutcomeQuery, now + 60);
    assert_eq!(
        executor.execute(query.clone()).await.ledger_state,
        v1::LedgerState::NotSeen as i32
    );
    assert_eq!(directory.applied.load(Ordering::SeqCst), 0);

    let reopened = signed(v1::OperationKind::Unlock, now + 60);
    assert_eq!(reason(&executor.execute(reopened.clone()).await), "OK");
    assert_eq!(reason(&executor.execute(reopened).await), "OK");
    assert_eq!(
        directory.applied.load(Ordering::SeqCst),
        1,
        "run once, then remembered"
    );
    assert_eq!(
        executor.execute(query).await.ledger_state,
        v1::LedgerState::Finished as i32
    );
}

/// A write the control plane signed for another agent is refused (a relay
/// handing one signed reset to two agents of a domain gets it applied by
/// one), and not remembered: the agent it is for still runs it.
#[tokio::test]
async fn a_write_runs_only_on_the_agent_it_is_signed_for() {
    let directory = Arc::new(Versions {
        version: AtomicU32::new(1),
        applied: AtomicU32::new(0),
    });
    let (cp, _, executor) = signing_executor(directory.clone());
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 30;
    let mut elsewhere = alice("op-bound", v1::OperationKind::Unlock, expires);
    elsewhere.agent_id = "a2".into();
    cp.sign(&mut elsewhere);
    let r = executor.execute(elsewhere).await;
    let o = r.outcome.unwrap();
    assert_eq!(o.reason_code, "OPERATION_UNAUTHENTICATED", "{o:?}");
    assert!(o.message.contains("signed for agent a2"), "{o:?}");
    assert_eq!(directory.applied.load(Ordering::SeqCst), 0);
    let mut here = alice("op-bound", v1::OperationKind::Unlock, expires);
    here.agent_id = "a1".into();
    cp.sign(&mut here);
    let r = executor.execute(here).await;
    assert_eq!(r.outcome.unwrap().reason_code, "OK");
    assert_eq!(directory.applied.load(Ordering::SeqCst), 1);
}
