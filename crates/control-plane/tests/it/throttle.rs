//! The throttle counts a person, not a spelling: a user addressed by UPN,
//! by objectGUID, or by a case variant of the UPN (non-ASCII letters
//! included) is one bucket. The control plane learns that a UPN and a GUID
//! name one person from the agent's answers (the user it found, and, for a
//! spelling no agent has named yet, a lookup before the first reset) and
//! counts the operations on every alias together, in the same transaction
//! that records the new one.

use writeback_control_plane::store::Window;
use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;
use writeback_testkit::burst;
use writeback_testkit::stack::Stack;

use crate::harness::TestDb;
use crate::operations::op;

const NOW: i64 = 1_700_000_000_000;
const GUID: &str = "guid:0b0c4a1e-9d1f-4c59-8a2e-6c1f1e0b7a11";
const UPN: &str = "upn:jürgen@contoso.test";

/// Twelve concurrent resets alternating between a person's UPN and GUID
/// against a limit of 3: exactly 3 are recorded, whatever the
/// interleaving; an unlinked spelling is a bucket of its own until linked.
async fn aliases_of_one_person_share_one_bucket(db: &TestDb) {
    let store = db.store_with_tenants().await;
    let window = Window {
        max: 3,
        kinds: &["reset"],
        since_ms: NOW - 3_600_000,
    };
    store
        .link_person("t1", GUID, &[GUID.to_owned(), UPN.to_owned()])
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let store = store.clone();
        tasks.spawn(async move {
            let target = if i % 2 == 0 { UPN } else { GUID };
            let op = op("t1", &format!("c{i}"), "reset", target, NOW + i);
            store.insert_operation_within(&op, &window).await.unwrap()
        });
    }
    let mut admitted = 0;
    while let Some(done) = tasks.join_next().await {
        if done.unwrap().is_none() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3, "one bucket for the UPN and the GUID");
    // Another tenant's link does not join this tenant's buckets.
    let other = op("t2", "o", "reset", UPN, NOW);
    assert_eq!(
        store
            .insert_operation_within(&other, &window)
            .await
            .unwrap(),
        None
    );
    // A new alias (the UPN renamed) joins the bucket once linked.
    let renamed = "upn:juergen@contoso.test";
    store
        .link_person("t1", GUID, &[GUID.to_owned(), renamed.to_owned()])
        .await
        .unwrap();
    let again = op("t1", "r", "reset", renamed, NOW + 20);
    assert!(
        store
            .insert_operation_within(&again, &window)
            .await
            .unwrap()
            .is_some()
    );
}

/// End to end against a real DC: resets of one user by UPN, by objectGUID
/// and by an upper-case variant of its non-ASCII UPN, alternating; the
/// sixth in the hour is `THROTTLED` whichever spelling it uses.
async fn alternating_upn_and_guid_cannot_exceed_the_limit(db: &TestDb) {
    let dc = burst::fault_dc("contoso.test").await;
    let dn = dc.create_user("jürgen", "Start-Pass-1!").await.unwrap();
    let entry = dc.read_entry(&dn, &["objectGUID"]).await.unwrap();
    let guid = uuid::Uuid::from_slice_le(&entry.bin_attrs["objectGUID"][0]).unwrap();
    let mut stack = Stack::start_with("t1", 1, Some(db.url().to_owned()))
        .await
        .unwrap();
    let helpdesk = stack.serve_domain(&dc).await.unwrap();
    let spellings = [
        pb::user_ref::By::Upn("jürgen@contoso.test".into()),
        pb::user_ref::By::ObjectGuid(guid.to_string()),
        pb::user_ref::By::Upn("JÜRGEN@Contoso.Test".into()),
    ];
    let mut reasons = Vec::new();
    for n in 0..6 {
        let by = spellings[n % spellings.len()].clone();
        let guid_ref = matches!(by, pb::user_ref::By::ObjectGuid(_));
        let answer = helpdesk
            .passwords()
            .reset_password(helpdesk.request(pb::ResetPasswordRequest {
                user: Some(pb::UserRef { by: Some(by) }),
                new_password: format!("Throttle-Pass-{n}!"),
                domain: if guid_ref {
                    dc.domain().to_owned()
                } else {
                    String::new()
                },
                ..Default::default()
            }))
            .await;
        reasons.push(match answer {
            Ok(_) => ReasonCode::Ok,
            Err(s) => writeback_core::failure_of(&s).reason,
        });
    }
    assert_eq!(
        reasons,
        [[ReasonCode::Ok; 5].as_slice(), &[ReasonCode::Throttled]].concat(),
        "five resets of one person in the hour, however it is named"
    );
}

/// End to end against a real DC: ten concurrent resets of a person no
/// agent has named yet, by UPN, by objectGUID and by an upper-case variant
/// of the UPN, all sent before any answer. The control plane asks an agent
/// whom each new spelling names before it counts, so exactly the limit (5)
/// are applied — the password written five times, not eight — and the rest
/// are `THROTTLED`.
async fn a_never_seen_person_is_one_bucket_from_the_first_reset(db: &TestDb) {
    let dc = burst::fault_dc("contoso.test").await;
    let dn = dc.create_user("zoë", "Start-Pass-1!").await.unwrap();
    let entry = dc.read_entry(&dn, &["objectGUID"]).await.unwrap();
    let guid = uuid::Uuid::from_slice_le(&entry.bin_attrs["objectGUID"][0]).unwrap();
    let before = dc.password_writes(&dn).await.unwrap();
    let mut stack = Stack::start_with("t1", 1, Some(db.url().to_owned()))
        .await
        .unwrap();
    let helpdesk = stack.serve_domain(&dc).await.unwrap();
    let spellings = [
        pb::user_ref::By::ObjectGuid(guid.to_string()),
        pb::user_ref::By::Upn("zoë@contoso.test".into()),
        pb::user_ref::By::Upn("ZOË@Contoso.Test".into()),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..10 {
        let by = spellings[n % spellings.len()].clone();
        let helpdesk = helpdesk.clone();
        // A GUID names no domain; a UPN's suffix does.
        let domain = match by {
            pb::user_ref::By::ObjectGuid(_) => dc.domain().to_owned(),
            _ => String::new(),
        };
        tasks.spawn(async move {
            let answer = helpdesk
                .passwords()
                .reset_password(helpdesk.request(pb::ResetPasswordRequest {
                    user: Some(pb::UserRef { by: Some(by) }),
                    new_password: format!("Never-Seen-{n}!"),
                    domain,
                    ..Default::default()
                }))
                .await;
            match answer {
                Ok(_) => ReasonCode::Ok,
                Err(s) => writeback_core::failure_of(&s).reason,
            }
        });
    }
    let mut reasons = Vec::new();
    while let Some(done) = tasks.join_next().await {
        reasons.push(done.unwrap());
    }
    let ok = reasons.iter().filter(|r| **r == ReasonCode::Ok).count();
    let throttled = reasons
        .iter()
        .filter(|r| **r == ReasonCode::Throttled)
        .count();
    assert_eq!(
        (ok, throttled),
        (5, 5),
        "one bucket from the first reset: {reasons:?}"
    );
    assert_eq!(
        dc.password_writes(&dn).await.unwrap() - before,
        5,
        "the directory saw exactly the admitted resets"
    );
}

/// End to end against a real DC (issue 25, item 13): unlocks and changes
/// are throttled per person too, each kind in a bucket of its own. Six
/// help-desk unlocks of one user alternating UPN and objectGUID: the sixth
/// is `THROTTLED` and never reaches the directory; six changes of one's own
/// password: five are written, the sixth is `THROTTLED`. Resets still have
/// their own five.
async fn unlocks_and_changes_are_throttled_per_person(db: &TestDb) {
    use writeback_control_plane::store::{ClientApp, Role};
    let dc = burst::every_kind_dc("contoso.test").await;
    let locked = dc.create_user("ulrike", "Start-Pass-1!").await.unwrap();
    let entry = dc.read_entry(&locked, &["objectGUID"]).await.unwrap();
    let guid = uuid::Uuid::from_slice_le(&entry.bin_attrs["objectGUID"][0]).unwrap();
    let changer = dc.create_user("chris", "Change-Pass-0!").await.unwrap();
    let mut stack = Stack::start_with("t1", 1, Some(db.url().to_owned()))
        .await
        .unwrap();
    let helpdesk = stack.serve_domain(&dc).await.unwrap();
    let chris = stack
        .client("chris@contoso.test", Role::User, ClientApp::Portal)
        .await
        .unwrap();
    let reason =
        |answer: Result<tonic::Response<pb::OperationResponse>, tonic::Status>| match answer {
            Ok(_) => ReasonCode::Ok,
            Err(s) => writeback_core::failure_of(&s).reason,
        };

    let mut unlocks = Vec::new();
    for n in 0..6 {
        // Locked out again before each unlock (three wrong passwords).
        for _ in 0..3 {
            assert!(!dc.try_bind(&locked, "Wrong-Pass-0!").await.unwrap());
        }
        let (user, domain) = if n % 2 == 0 {
            (
                pb::user_ref::By::Upn("ulrike@contoso.test".into()),
                String::new(),
            )
        } else {
            (
                pb::user_ref::By::ObjectGuid(guid.to_string()),
                dc.domain().to_owned(),
            )
        };
        let answer = helpdesk
            .passwords()
            .unlock_account(helpdesk.request(pb::UnlockAccountRequest {
                user: Some(pb::UserRef { by: Some(user) }),
                domain,
                ..Default::default()
            }))
            .await;
        unlocks.push(reason(answer));
    }
    assert_eq!(
        unlocks,
        [[ReasonCode::Ok; 5].as_slice(), &[ReasonCode::Throttled]].concat(),
        "five unlocks of one person in the hour"
    );
    let entry = dc.read_entry(&locked, &["lockoutTime"]).await.unwrap();
    let lockout: i64 = entry.attrs["lockoutTime"][0].parse().unwrap();
    assert!(
        lockout > 0,
        "the throttled unlock never reached the directory"
    );

    let before = dc.password_writes(&changer).await.unwrap();
    let mut changes = Vec::new();
    for n in 0..6 {
        let answer = chris
            .passwords()
            .change_password(chris.request(pb::ChangePasswordRequest {
                user: Some(pb::UserRef {
                    by: Some(pb::user_ref::By::Upn("chris@contoso.test".into())),
                }),
                old_password: format!("Change-Pass-{n}!"),
                new_password: format!("Change-Pass-{}!", n + 1),
                ..Default::default()
            }))
            .await;
        changes.push(reason(answer));
    }
    assert_eq!(
        changes,
        [[ReasonCode::Ok; 5].as_slice(), &[ReasonCode::Throttled]].concat(),
        "five changes of one person in the hour"
    );
    assert_eq!(dc.password_writes(&changer).await.unwrap() - before, 5);
    assert!(dc.try_bind(&changer, "Change-Pass-5!").await.unwrap());

    // Resets have a bucket of their own: the unlocks did not use it up.
    let answer = helpdesk
        .passwords()
        .reset_password(helpdesk.request(pb::ResetPasswordRequest {
            user: Some(pb::UserRef {
                by: Some(pb::user_ref::By::Upn("ulrike@contoso.test".into())),
            }),
            new_password: "Reset-Pass-1!".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(reason(answer), ReasonCode::Ok);
}

both_backends!(
    aliases_of_one_person_share_one_bucket,
    alternating_upn_and_guid_cannot_exceed_the_limit,
    a_never_seen_person_is_one_bucket_from_the_first_reset,
    unlocks_and_changes_are_throttled_per_person,
);
