//! The audit log: lifecycle, pagination, throttle counts, the restart sweep.

use std::collections::HashSet;

use writeback_control_plane::store::{
    ClientApp, Finish, NewOperation, OperationState, Page, RESTART_TIMEOUT_MESSAGE, StoreError,
    Window,
};
use writeback_core::ReasonCode;

use crate::harness::TestDb;

const NOW: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

pub(crate) fn op(
    tenant: &str,
    id: &str,
    kind: &str,
    target: &str,
    created_at_ms: i64,
) -> NewOperation {
    NewOperation {
        id: id.to_owned(),
        tenant: tenant.to_owned(),
        kind: kind.to_owned(),
        target: target.to_owned(),
        domain: "contoso.test".to_owned(),
        principal: "admin@contoso.test".to_owned(),
        client_app: ClientApp::Portal,
        created_at_ms,
        deadline_at_ms: created_at_ms + 30_000,
        trace_id: String::new(),
        rule: String::new(),
    }
}

fn succeeded(at: i64) -> Finish {
    Finish {
        state: OperationState::Succeeded,
        reason_code: ReasonCode::Ok,
        message: "password reset".to_owned(),
        agent_id: Some("a1".to_owned()),
        relay_id: Some("r1".to_owned()),
        finished_at_ms: at,
        agent_duration_ms: Some(31),
        hops: Default::default(),
    }
}

async fn operation_goes_from_pending_to_final_once(db: &TestDb) {
    let store = db.store_with_tenants().await;
    let new = op("t1", "op-1", "reset", "upn:alice@contoso.test", NOW);
    store.insert_operation(&new).await.unwrap();
    assert!(matches!(
        store.insert_operation(&new).await,
        Err(StoreError::AlreadyExists { what: "operation" })
    ));
    // The same id in another tenant is another operation.
    store
        .insert_operation(&op("t2", "op-1", "unlock", "upn:bob@fabrikam.test", NOW))
        .await
        .unwrap();
    assert!(matches!(
        store
            .insert_operation(&op("nope", "op-9", "reset", "x", NOW))
            .await,
        Err(StoreError::NotFound { what: "tenant" })
    ));

    let pending = store.get_operation("t1", "op-1").await.unwrap().unwrap();
    assert_eq!(pending.state, OperationState::Pending);
    assert_eq!(pending.kind, "reset");
    assert_eq!(pending.client_app, ClientApp::Portal);
    assert_eq!(pending.reason_code, None);
    assert_eq!(pending.finished_at_ms, None);
    assert!(!pending.applied());

    store
        .finish_operation("t1", "op-1", &succeeded(NOW + 45))
        .await
        .unwrap();
    let done = store.get_operation("t1", "op-1").await.unwrap().unwrap();
    assert_eq!(done.state, OperationState::Succeeded);
    assert!(done.applied());
    assert_eq!(done.reason_code.as_deref(), Some("OK"));
    assert_eq!(done.message.as_deref(), Some("password reset"));
    assert_eq!(done.agent_id.as_deref(), Some("a1"));
    assert_eq!(done.relay_id.as_deref(), Some("r1"));
    assert_eq!(done.finished_at_ms, Some(NOW + 45));
    assert_eq!(done.duration_ms(), Some(45));
    assert_eq!(done.agent_duration_ms, Some(31));

    // No second finish; the first outcome stands.
    let fail = Finish {
        state: OperationState::Failed,
        reason_code: ReasonCode::Timeout,
        message: "late".to_owned(),
        agent_id: None,
        relay_id: None,
        finished_at_ms: NOW + 99,
        agent_duration_ms: None,
        hops: Default::default(),
    };
    assert!(matches!(
        store.finish_operation("t1", "op-1", &fail).await,
        Err(StoreError::AlreadyFinished)
    ));
    assert_eq!(
        store.get_operation("t1", "op-1").await.unwrap().unwrap(),
        done
    );
    assert!(matches!(
        store.finish_operation("t1", "op-404", &fail).await,
        Err(StoreError::NotFound { what: "operation" })
    ));
    let mut still_pending = fail.clone();
    still_pending.state = OperationState::Pending;
    assert!(matches!(
        store.finish_operation("t2", "op-1", &still_pending).await,
        Err(StoreError::InvalidArgument(_))
    ));

    // The other tenant's operation is untouched and finishes on its own.
    let other = store.get_operation("t2", "op-1").await.unwrap().unwrap();
    assert_eq!(
        (other.state, other.kind.as_str()),
        (OperationState::Pending, "unlock")
    );
    store.finish_operation("t2", "op-1", &fail).await.unwrap();
    let other = store.get_operation("t2", "op-1").await.unwrap().unwrap();
    assert_eq!(other.state, OperationState::Failed);
    assert_eq!(other.reason_code.as_deref(), Some("TIMEOUT"));
    assert_eq!(other.agent_id, None);
    assert_eq!(store.get_operation("t1", "op-404").await.unwrap(), None);
}

async fn audit_log_pages_newest_first_without_duplicates(db: &TestDb) {
    let store = db.store_with_tenants().await;
    // 30 operations, three per millisecond so the id breaks ties.
    for i in 0..30 {
        let user = if i % 2 == 0 {
            "upn:alice@c.test"
        } else {
            "upn:bob@c.test"
        };
        store
            .insert_operation(&op("t1", &format!("op-{i:02}"), "reset", user, NOW + i / 3))
            .await
            .unwrap();
    }
    store
        .insert_operation(&op("t2", "op-x", "reset", "upn:alice@c.test", NOW))
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut page = Page::first(7);
    let mut pages = 0;
    loop {
        let (rows, next) = store.list_operations("t1", None, page).await.unwrap();
        pages += 1;
        assert!(rows.len() <= 7);
        // A row inserted between pages, newer than the cursor, never shows up.
        if pages == 2 {
            store
                .insert_operation(&op("t1", "op-late", "reset", "upn:carol@c.test", NOW + 100))
                .await
                .unwrap();
        }
        seen.extend(rows);
        match next {
            Some(token) => page = Page::after(7, token),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 30);
    let ids: HashSet<_> = seen.iter().map(|o| o.id.clone()).collect();
    assert_eq!(ids.len(), 30);
    assert!(seen.iter().all(|o| o.tenant == "t1"));
    for pair in seen.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            (a.created_at_ms, &a.id) > (b.created_at_ms, &b.id),
            "{} then {}",
            a.id,
            b.id
        );
    }
    assert_eq!(seen[0].id, "op-29");
    assert_eq!(seen[29].id, "op-00");

    // Filtered by user, across pages.
    let (first, next) = store
        .list_operations("t1", Some("upn:alice@c.test"), Page::first(10))
        .await
        .unwrap();
    let (rest, end) = store
        .list_operations(
            "t1",
            Some("upn:alice@c.test"),
            Page::after(10, next.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!((first.len(), rest.len(), end), (10, 5, None));
    assert!(
        first
            .iter()
            .chain(&rest)
            .all(|o| o.target == "upn:alice@c.test")
    );

    // Newest now includes the late one.
    let (top, _) = store
        .list_operations("t1", None, Page::first(1))
        .await
        .unwrap();
    assert_eq!(top[0].id, "op-late");

    // Tokens of another list, or garbage, are refused.
    let (_, domain_token) = {
        store.add_domain("t1", "a.test", &[]).await.unwrap();
        store.add_domain("t1", "b.test", &[]).await.unwrap();
        store.list_domains("t1", Page::first(1)).await.unwrap()
    };
    for bad in [domain_token.unwrap(), "zz".to_owned(), "6f3a".to_owned()] {
        assert!(
            matches!(
                store
                    .list_operations("t1", None, Page::after(5, bad.clone()))
                    .await,
                Err(StoreError::InvalidPageToken)
            ),
            "{bad}"
        );
    }
}

async fn throttle_counts_recent_operations_per_user(db: &TestDb) {
    let store = db.store_with_tenants().await;
    let alice = "upn:alice@contoso.test";
    let times = [
        NOW - 90 * MINUTE,
        NOW - 50 * MINUTE,
        NOW - 20 * MINUTE,
        NOW - MINUTE,
    ];
    for (i, t) in times.iter().enumerate() {
        store
            .insert_operation(&op("t1", &format!("r{i}"), "reset", alice, *t))
            .await
            .unwrap();
    }
    store
        .insert_operation(&op("t1", "u1", "unlock", alice, NOW - 5 * MINUTE))
        .await
        .unwrap();
    store
        .insert_operation(&op("t1", "b1", "reset", "upn:bob@contoso.test", NOW))
        .await
        .unwrap();
    store
        .insert_operation(&op("t2", "x1", "reset", alice, NOW))
        .await
        .unwrap();
    // A finished (failed) operation still counts.
    store
        .finish_operation(
            "t1",
            "r2",
            &Finish {
                state: OperationState::Failed,
                reason_code: ReasonCode::PasswordTooShort,
                message: "too short".to_owned(),
                agent_id: Some("a1".to_owned()),
                relay_id: None,
                finished_at_ms: NOW - 20 * MINUTE + 40,
                agent_duration_ms: Some(3),
                hops: Default::default(),
            },
        )
        .await
        .unwrap();

    let since = NOW - 60 * MINUTE;
    assert_eq!(
        store
            .count_operations_since("t1", alice, &["reset"], since)
            .await
            .unwrap(),
        (3, Some(NOW - 50 * MINUTE))
    );
    assert_eq!(
        store
            .count_operations_since("t1", alice, &["reset", "change", "unlock"], since)
            .await
            .unwrap(),
        (4, Some(NOW - 50 * MINUTE))
    );
    assert_eq!(
        store
            .count_operations_since("t1", alice, &[], NOW - 100 * MINUTE)
            .await
            .unwrap(),
        (5, Some(NOW - 90 * MINUTE))
    );
    assert_eq!(
        store
            .count_operations_since("t1", alice, &["change"], since)
            .await
            .unwrap(),
        (0, None)
    );
    assert_eq!(
        store
            .count_operations_since("t2", alice, &["reset"], since)
            .await
            .unwrap(),
        (1, Some(NOW))
    );
}

async fn restart_sweep_closes_only_expired_pending(db: &TestDb) {
    let store = db.store_with_tenants().await;
    // Deadlines: created + 30 s.
    store
        .insert_operation(&op("t1", "old", "reset", "u", NOW - 60_000))
        .await
        .unwrap();
    store
        .insert_operation(&op("t2", "old2", "unlock", "u", NOW - 40_000))
        .await
        .unwrap();
    store
        .insert_operation(&op("t1", "edge", "reset", "u", NOW - 30_000))
        .await
        .unwrap();
    store
        .insert_operation(&op("t1", "fresh", "reset", "u", NOW - 1_000))
        .await
        .unwrap();
    store
        .insert_operation(&op("t1", "done", "reset", "u", NOW - 90_000))
        .await
        .unwrap();
    store
        .finish_operation("t1", "done", &succeeded(NOW - 89_000))
        .await
        .unwrap();

    assert_eq!(store.close_expired_pending(NOW).await.unwrap(), 3);
    for (tenant, id) in [("t1", "old"), ("t2", "old2"), ("t1", "edge")] {
        let row = store.get_operation(tenant, id).await.unwrap().unwrap();
        assert_eq!(row.state, OperationState::Failed, "{id}");
        assert_eq!(row.reason_code.as_deref(), Some("TIMEOUT"));
        assert_eq!(row.message.as_deref(), Some(RESTART_TIMEOUT_MESSAGE));
        assert_eq!(row.finished_at_ms, Some(NOW));
    }
    let fresh = store.get_operation("t1", "fresh").await.unwrap().unwrap();
    assert_eq!(fresh.state, OperationState::Pending);
    let done = store.get_operation("t1", "done").await.unwrap().unwrap();
    assert_eq!(done.state, OperationState::Succeeded);
    // Nothing left to close; a late outcome for a closed one is refused.
    assert_eq!(store.close_expired_pending(NOW).await.unwrap(), 0);
    assert!(matches!(
        store
            .finish_operation("t1", "old", &succeeded(NOW + 1))
            .await,
        Err(StoreError::AlreadyFinished)
    ));
    // Their outcomes are unknown, not failures: each is due for
    // reconciliation, which records the truth once.
    let due = store.operations_to_reconcile(NOW, 10).await.unwrap();
    assert_eq!(due.len(), 3);
    assert!(due.iter().all(|r| r.outcome_unknown()));
    assert!(
        store
            .resolve_operation("t1", "old", &succeeded(NOW + 5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .resolve_operation("t1", "old", &succeeded(NOW + 6))
            .await
            .unwrap()
    );
    let old = store.get_operation("t1", "old").await.unwrap().unwrap();
    assert_eq!(old.state, OperationState::Succeeded);
    assert!(!old.outcome_unknown());
    store
        .postpone_reconcile("t2", "old2", Some(NOW + 60_000))
        .await
        .unwrap();
    let due = store.operations_to_reconcile(NOW, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["edge"]
    );
    // NOT_APPLIED can be reopened for a retry, once; nothing else can.
    let not_applied = Finish {
        state: OperationState::Failed,
        reason_code: ReasonCode::NotApplied,
        message: "not applied".into(),
        agent_id: None,
        relay_id: None,
        finished_at_ms: NOW + 7,
        agent_duration_ms: None,
        hops: Default::default(),
    };
    assert!(
        store
            .resolve_operation("t1", "edge", &not_applied)
            .await
            .unwrap()
    );
    assert!(
        !store
            .reopen_operation("t1", "old", NOW + 30_000, NOW + 30_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .reopen_operation("t1", "edge", NOW + 30_000, NOW + 30_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .reopen_operation("t1", "edge", NOW + 30_000, NOW + 30_000)
            .await
            .unwrap()
    );
    let edge = store.get_operation("t1", "edge").await.unwrap().unwrap();
    assert_eq!(edge.state, OperationState::Pending);
    assert_eq!(edge.deadline_at_ms, NOW + 30_000);
    // So can an operation refused as OPERATION_EXPIRED (it expired on its
    // way, untouched); an operation's own failure cannot.
    for (id, reason, reopens) in [
        ("expired", ReasonCode::OperationExpired, true),
        ("refused", ReasonCode::UserNotFound, false),
    ] {
        store
            .insert_operation(&op("t1", id, "reset", "upn:x@contoso.test", NOW))
            .await
            .unwrap();
        let fin = Finish {
            reason_code: reason,
            ..not_applied.clone()
        };
        store.finish_operation("t1", id, &fin).await.unwrap();
        // Not while an agent with a slow clock could still take the old
        // copy for a live one (its deadline after `expired_before_ms`).
        assert!(
            !store
                .reopen_operation("t1", id, NOW + 60_000, NOW + 29_999)
                .await
                .unwrap(),
            "{reason}"
        );
        assert_eq!(
            store
                .reopen_operation("t1", id, NOW + 60_000, NOW + 30_000)
                .await
                .unwrap(),
            reopens,
            "{reason}"
        );
    }
}

/// Many concurrent resets of one user against a limit of 3: exactly 3 are
/// recorded, whatever the interleaving; the others learn the oldest.
async fn the_throttle_counts_and_records_in_one_step(db: &TestDb) {
    let store = db.store_with_tenants().await;
    let window = Window {
        max: 3,
        kinds: &["reset"],
        since_ms: NOW - 60 * MINUTE,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let store = store.clone();
        tasks.spawn(async move {
            let op = op(
                "t1",
                &format!("c{i}"),
                "reset",
                "upn:alice@contoso.test",
                NOW + i,
            );
            store.insert_operation_within(&op, &window).await.unwrap()
        });
    }
    let mut admitted = 0;
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            None => admitted += 1,
            Some(oldest) => assert!((NOW..NOW + 12).contains(&oldest), "{oldest}"),
        }
    }
    assert_eq!(admitted, 3);
    let (count, _) = store
        .count_operations_since("t1", "upn:alice@contoso.test", &["reset"], NOW - MINUTE)
        .await
        .unwrap();
    assert_eq!(count, 3);
    // Another user, and another kind, are not counted.
    let bob = op("t1", "b", "reset", "upn:bob@contoso.test", NOW);
    assert_eq!(
        store.insert_operation_within(&bob, &window).await.unwrap(),
        None
    );
}

both_backends!(
    operation_goes_from_pending_to_final_once,
    audit_log_pages_newest_first_without_duplicates,
    throttle_counts_recent_operations_per_user,
    restart_sweep_closes_only_expired_pending,
    the_throttle_counts_and_records_in_one_step,
);
