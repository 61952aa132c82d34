//! The audit log and operation status: a durable pending record before
//! dispatch, `operation show` and `audit list` (with paging), the sweep
//! that closes operations a stopped control plane left pending, and no
//! password or token in the database.

use std::time::Duration;

use writeback_control_plane::store::{ClientApp, RESTART_TIMEOUT_MESSAGE, Role};
use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;

use crate::harness::TestDb;
use crate::support::{self, Mode, Options, reason_in_details};

async fn operations_are_listed_newest_first_page_by_page_and_shown_by_id(db: &TestDb) {
    let t = support::ready(
        db,
        Options {
            throttle_per_user_per_hour: 0,
            ..Options::default()
        },
    )
    .await;
    let admin = t.admin();
    t.relay.set_mode(Mode::Answer(ReasonCode::Ok));
    let mut bob_ids = Vec::new();
    for i in 0..5 {
        bob_ids.push(
            admin
                .reset("bob@contoso.test", &format!("Bob-Passw0rd!{i}"))
                .await
                .unwrap(),
        );
        admin
            .reset("carol@contoso.test", "Carol-Passw0rd!1")
            .await
            .unwrap();
    }

    // Through the API: 10 records in pages of 3, newest first, no repeats.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .audit()
            .list_audit(pb::ListAuditRequest {
                user: String::new(),
                page_size: 3,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.records.len() <= 3);
        seen.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!((pages, seen.len()), (4, 10));
    let mut ids: Vec<_> = seen.iter().map(|r| r.operation_id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    assert!(
        seen.windows(2)
            .all(|w| w[0].created_at.as_ref().map(|t| (t.seconds, t.nanos))
                >= w[1].created_at.as_ref().map(|t| (t.seconds, t.nanos))),
        "newest first"
    );
    let err = admin
        .audit()
        .list_audit(pb::ListAuditRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::InvalidArgument);

    // Through writebackctl: one user, every page.
    let (r, out) = support::ctl(
        &t,
        &t.admin_token,
        &[
            "audit",
            "list",
            "--user",
            "Bob@Contoso.test",
            "--page-size",
            "2",
            "--all",
        ],
    )
    .await;
    r.unwrap();
    for id in &bob_ids {
        assert!(out.contains(id.as_str()), "{id} missing from:\n{out}");
    }
    assert!(!out.contains("carol@"), "{out}");
    assert!(!out.contains("# more"), "{out}");
    let (r, out) = support::ctl(
        &t,
        &t.admin_token,
        &[
            "audit",
            "list",
            "--user",
            "bob@contoso.test",
            "--page-size",
            "2",
        ],
    )
    .await;
    r.unwrap();
    assert!(out.contains("# more: --page-token "), "{out}");

    let (r, out) = support::ctl(&t, &t.admin_token, &["operation", "show", &bob_ids[0]]).await;
    r.unwrap();
    assert!(out.contains(&bob_ids[0]), "{out}");
    assert!(
        out.contains("what      reset of upn:bob@contoso.test"),
        "{out}"
    );
    assert!(out.contains("outcome   succeeded OK: "), "{out}");
    assert!(out.contains("via portal"), "{out}");
    assert!(
        out.contains("allowed   an administrator may reset an end user's password"),
        "{out}"
    );
    // The hops as the (fake) relay and agent reported them, through the store.
    assert!(out.contains("relay fake-relay"), "{out}");
    assert!(out.contains("4 ms (own 1 ms)"), "{out}");
    assert!(
        out.contains(&format!("agent {}", t.relay.answering_as())),
        "{out}"
    );
    assert!(out.contains("3 ms (own 1 ms)"), "{out}");
    assert!(out.contains("DC ldaps://dc-fake.test"), "{out}");
    assert!(out.contains(" 2 ms\n"), "{out}");
    let trace_id = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("trace"))
        .map(str::trim)
        .unwrap_or_default();
    assert!(
        trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{out}"
    );
    let (r, _) = support::ctl(&t, &t.admin_token, &["operation", "show", "no-such-id"]).await;
    assert_eq!(r.unwrap_err().reason(), Some(ReasonCode::NotFound));

    // An end user sees the operations on their own account.
    let bob = t
        .token("bob@contoso.test", Role::User, ClientApp::Portal)
        .await;
    let (r, out) = support::ctl(&t, &bob, &["operation", "show", &bob_ids[1]]).await;
    r.unwrap();
    assert!(out.contains(&bob_ids[1]), "{out}");
    let (r, _) = support::ctl(&t, &bob, &["audit", "list"]).await;
    assert_eq!(r.unwrap_err().reason(), Some(ReasonCode::PermissionDenied));
}

async fn an_accepted_operation_is_pending_before_it_is_dispatched(db: &TestDb) {
    let t = support::ready(db, Options::default()).await;
    let admin = t.admin();
    t.relay.set_mode(Mode::Hold);
    let id = uuid::Uuid::new_v4().to_string();
    let call = {
        let admin = admin.clone();
        let id = id.clone();
        tokio::spawn(async move {
            admin
                .reset_with_id("bob@contoso.test", "Held-Passw0rd!1", &id)
                .await
        })
    };
    t.relay.wait_dispatched(1).await;
    let (r, out) = support::ctl(&t, &t.admin_token, &["operation", "show", &id]).await;
    r.unwrap();
    assert!(out.contains("outcome   pending\n"), "{out}");
    t.relay.release();
    assert_eq!(call.await.unwrap(), Ok(id.clone()));
    let (r, out) = support::ctl(&t, &t.admin_token, &["operation", "show", &id]).await;
    r.unwrap();
    assert!(out.contains("outcome   succeeded OK"), "{out}");
    assert!(
        out.contains(&format!("agent {}", t.relay.answering_as())),
        "{out}"
    );
    // Repeating the id answers from the log without dispatching again.
    assert_eq!(
        admin
            .reset_with_id("bob@contoso.test", "Held-Passw0rd!1", &id)
            .await,
        Ok(id.clone())
    );
    assert_eq!(t.relay.dispatched().len(), 1);
}

/// Eight requests with one operation id at once (a client retrying after a
/// timeout): dispatched once, and every caller gets the one outcome.
async fn concurrent_requests_with_one_id_dispatch_once_and_share_the_outcome(db: &TestDb) {
    let t = support::ready(db, Options::default()).await;
    let admin = t.admin();
    t.relay.set_mode(Mode::Hold);
    let id = uuid::Uuid::new_v4().to_string();
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let (admin, id) = (admin.clone(), id.clone());
            // Some in another spelling of the same id.
            let id = if i % 2 == 0 { id } else { id.to_uppercase() };
            tokio::spawn(async move {
                admin
                    .reset_with_id("bob@contoso.test", "Retried-Passw0rd!1", &id)
                    .await
            })
        })
        .collect();
    t.relay.wait_dispatched(1).await;
    // Give the others every chance to dispatch too.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(t.relay.dispatched_ids(), vec![id.clone()]);
    t.relay.release();
    for c in calls {
        assert_eq!(c.await.unwrap(), Ok(id.clone()));
    }
    assert_eq!(t.relay.dispatched().len(), 1);
    assert!(t.cp.flights.is_empty());
}

async fn a_restart_closes_operations_past_their_deadline_as_outcome_unknown(db: &TestDb) {
    let t = support::ready(db, Options::default()).await;
    let now = t.cp.store.now_ms();
    // Left pending by a control plane that stopped: one long past its
    // deadline, one whose deadline is still ahead.
    let stale = uuid::Uuid::new_v4().to_string();
    let fresh = uuid::Uuid::new_v4().to_string();
    t.insert_operation(&stale, "bob@contoso.test", now - 120_000)
        .await;
    t.insert_operation(&fresh, "carol@contoso.test", now).await;

    let t = t.restart().await;
    let admin = t.admin();
    let show = |id: String| {
        let admin = admin.clone();
        async move {
            admin
                .audit()
                .get_operation(pb::GetOperationRequest { operation_id: id })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let r = show(stale.clone()).await;
    assert_eq!(r.state, "failed");
    let outcome = r.outcome.unwrap();
    assert_eq!(outcome.reason_code, "TIMEOUT");
    assert_eq!(outcome.message, RESTART_TIMEOUT_MESSAGE);
    assert!(outcome.message.starts_with("outcome unknown"));
    assert!(!outcome.applied);
    assert_eq!(show(fresh.clone()).await.state, "pending");

    // Once its deadline (and the grace a live replica gets) has passed, the
    // periodic sweep closes it too.
    t.clock.advance(Duration::from_secs(60));
    assert_eq!(t.cp.sweep_pending().await.unwrap(), 1);
    let r = show(fresh).await;
    assert_eq!(
        (r.state.as_str(), r.outcome.unwrap().reason_code.as_str()),
        ("failed", "TIMEOUT")
    );
}

/// The bytes of `s` as UTF-8 and as UTF-16LE (how AD encodes passwords).
fn encodings(s: &str) -> Vec<Vec<u8>> {
    vec![
        s.as_bytes().to_vec(),
        s.encode_utf16().flat_map(u16::to_le_bytes).collect(),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// SQLite only: the database is a file whose bytes can be searched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_password_or_token_is_ever_stored() {
    let db = TestDb::sqlite();
    let t = support::ready(&db, Options::default()).await;
    let admin = t.admin();
    t.relay.set_mode(Mode::Answer(ReasonCode::Ok));
    const RESET: &str = "Reset-S3cret-Passw0rd!";
    const OLD: &str = "Old-S3cret-Passw0rd!";
    const NEW: &str = "New-S3cret-Passw0rd!";
    admin.reset("bob@contoso.test", RESET).await.unwrap();
    let bob = t
        .client_for("bob@contoso.test", Role::User, ClientApp::Portal)
        .await;
    bob.passwords()
        .change_password(pb::ChangePasswordRequest {
            user: Some(support::upn_ref("bob@contoso.test")),
            old_password: OLD.into(),
            new_password: NEW.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // A refused operation's password is not kept either.
    const REFUSED: &str = "Refused-S3cret-Passw0rd!";
    let graph = t
        .client_for("bob@contoso.test", Role::User, ClientApp::Graph)
        .await;
    assert_eq!(
        graph.reset("bob@contoso.test", REFUSED).await,
        Err(ReasonCode::UnsupportedOperation)
    );
    let api_token = admin
        .tokens()
        .create_token(pb::CreateTokenRequest {
            principal: "helpdesk@contoso.test".into(),
            role: pb::Role::PasswordAdmin as i32,
            client_app: pb::ClientApp::Graph as i32,
            ttl_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let enrollment = admin
        .agents()
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            domain: "contoso.test".into(),
            ttl_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    // The dispatched operations carried the passwords sealed, never in clear.
    for op in t.relay.dispatched() {
        let bytes = prost::Message::encode_to_vec(&op);
        for p in [RESET, OLD, NEW] {
            assert!(!contains(&bytes, p.as_bytes()), "{p} travels in clear");
        }
    }

    let mut secrets: Vec<String> = vec![
        RESET.into(),
        OLD.into(),
        NEW.into(),
        REFUSED.into(),
        api_token.clone(),
        enrollment.clone(),
        t.admin_token.clone(),
    ];
    // The random parts alone, too.
    secrets.push(api_token.trim_start_matches("wbt1.").into());
    secrets.push(t.admin_token.trim_start_matches("wbt1.").into());
    // `wbe1.<id>.<secret>.<CA fingerprint>`: the id and the fingerprint are
    // public (the id is the row's key), the secret is not.
    let secret = enrollment.split('.').nth(2).unwrap();
    assert!(secret.len() >= 16);
    secrets.push(secret.into());
    let url = db.url().to_owned();
    t.stop().await;
    let path = url.trim_start_matches("sqlite://");
    let dir = std::path::Path::new(path).parent().unwrap();
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let bytes = std::fs::read(entry.path()).unwrap();
        files += 1;
        for secret in &secrets {
            for needle in encodings(secret) {
                assert!(
                    !contains(&bytes, &needle),
                    "{} holds a secret ({}…)",
                    entry.path().display(),
                    &secret[..6]
                );
            }
        }
    }
    assert!(files >= 1);
    // The search does find what is stored: it is not blind.
    let all: Vec<u8> = std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(contains(&all, b"helpdesk@contoso.test"));
}

both_backends!(
    operations_are_listed_newest_first_page_by_page_and_shown_by_id,
    an_accepted_operation_is_pending_before_it_is_dispatched,
    concurrent_requests_with_one_id_dispatch_once_and_share_the_outcome,
    a_restart_closes_operations_past_their_deadline_as_outcome_unknown,
);
