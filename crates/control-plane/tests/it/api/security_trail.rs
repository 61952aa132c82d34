//! The security trail: refused authentications, refused password operations
//! and refused enrollments are each recorded once, with who, from where, on
//! whom and why, and never the password or the token; a flood is capped by
//! the rate limit plus one summary; the audit lists filter and page; only
//! global administrators read the security trail; `writebackctl audit`.

use writeback_control_plane::config::SecurityEventsConfig;
use writeback_control_plane::store::{AuditFilter, ClientApp, Role, SecurityEvent};
use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;

use crate::harness::TestDb;
use crate::support::{self, ADMIN, Options, TestCp, ctl, reason_in_details};

/// Every security event of `tenant` ("" for those of no tenant), newest
/// first, once the recorder has written what it was handed.
async fn events(t: &TestCp, tenant: &str) -> Vec<SecurityEvent> {
    t.cp.security.flush(false).await;
    t.cp.store
        .list_security_events(
            tenant,
            &AuditFilter::default(),
            writeback_control_plane::store::Page::first(1000),
        )
        .await
        .unwrap()
        .0
}

/// The one event of `tenant` with `reason`; fails unless there is exactly one.
async fn only(t: &TestCp, tenant: &str, reason: ReasonCode) -> SecurityEvent {
    let all = events(t, tenant).await;
    let mut matching: Vec<_> = all
        .into_iter()
        .filter(|e| e.reason_code == reason.as_str())
        .collect();
    assert_eq!(matching.len(), 1, "{reason}: {matching:#?}");
    matching.remove(0)
}

/// Fails when `secret` appears anywhere in the stored row.
fn assert_no_secret(e: &SecurityEvent, secret: &str) {
    let row = format!("{e:?}");
    assert!(!row.contains(secret), "{secret:?} stored in {row}");
}

async fn refused_credentials_are_recorded_once_without_the_token(db: &TestDb) {
    let t = TestCp::start(db, Options::default()).await;
    let admin = t.admin();

    // An unknown wbt1 token: no tenant can be told, so it is kept for no
    // tenant.
    let unknown = format!("wbt1.{}", "ab".repeat(32));
    let err = t
        .client(&unknown)
        .settings()
        .get_settings(pb::GetSettingsRequest {})
        .await;
    assert_eq!(
        reason_in_details(&err.unwrap_err()),
        ReasonCode::Unauthenticated
    );
    let e = only(&t, "", ReasonCode::Unauthenticated).await;
    assert_eq!(e.kind, "authentication_failed");
    assert_eq!(e.detail, "token_unknown");
    assert_eq!(e.source, "127.0.0.1");
    assert_eq!(e.principal, "");
    assert_no_secret(&e, &unknown);
    assert_no_secret(&e, &unknown["wbt1.".len()..]);

    // A revoked token: its tenant, principal and client app are known.
    let helpdesk = t
        .token(
            "helpdesk@contoso.test",
            Role::PasswordAdmin,
            ClientApp::Graph,
        )
        .await;
    let token_id =
        t.cp.store
            .list_api_tokens(
                support::TENANT,
                Some("helpdesk@contoso.test"),
                writeback_control_plane::store::Page::first(10),
            )
            .await
            .unwrap()
            .0[0]
            .token_id
            .clone();
    admin
        .tokens()
        .revoke_token(pb::RevokeTokenRequest {
            token_id: token_id.clone(),
        })
        .await
        .unwrap();
    let err = t
        .client(&helpdesk)
        .settings()
        .get_settings(pb::GetSettingsRequest {})
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::Unauthenticated);
    let e = only(&t, support::TENANT, ReasonCode::Unauthenticated).await;
    assert_eq!(e.detail, "token_revoked");
    assert_eq!(e.principal, "helpdesk@contoso.test");
    assert_eq!(e.client_app, "graph");
    assert_eq!(e.details["token_id"], token_id.as_str());
    assert_no_secret(&e, &helpdesk);

    // No token at all, and a JWT from nowhere: recorded for no tenant.
    let err = t
        .anonymous()
        .settings()
        .get_settings(pb::GetSettingsRequest {})
        .await;
    assert_eq!(
        reason_in_details(&err.unwrap_err()),
        ReasonCode::Unauthenticated
    );
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2V2aWwudGVzdCIsInVwbiI6Im1hbGxvcnlAZXZpbC50ZXN0In0.c2ln";
    let err = t
        .client(jwt)
        .settings()
        .get_settings(pb::GetSettingsRequest {})
        .await;
    assert_eq!(
        reason_in_details(&err.unwrap_err()),
        ReasonCode::Unauthenticated
    );
    let unattributed = events(&t, "").await;
    let details: Vec<&str> = unattributed.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(
        details,
        ["oidc_token_refused", "token_missing", "token_unknown"],
        "newest first"
    );
    let claimed = &unattributed[0];
    assert_eq!(claimed.principal, "mallory@evil.test");
    assert_eq!(claimed.details["issuer"], "https://evil.test");
    assert_no_secret(claimed, jwt);
    assert_no_secret(claimed, "c2ln");

    // The tenant's global administrator sees the tenant's events only.
    let listed = admin
        .audit()
        .list_security_events(pb::ListSecurityEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].detail, "token_revoked");
    assert_eq!(listed[0].source, "127.0.0.1");
}

async fn refused_operations_are_recorded_once_without_the_password(db: &TestDb) {
    let t = support::ready(
        db,
        Options {
            throttle_per_user_per_hour: 1,
            ..Options::default()
        },
    )
    .await;
    let admin = t.admin();
    let bob = "bob@contoso.test";

    // Writeback switched off: the policy refuses.
    admin.set_all_toggles(false).await;
    let toggled_off = "Toggled-Off-Passw0rd!7";
    assert_eq!(
        admin.reset(bob, toggled_off).await,
        Err(ReasonCode::WritebackDisabled)
    );
    let e = only(&t, support::TENANT, ReasonCode::WritebackDisabled).await;
    assert_eq!(e.kind, "operation_refused");
    assert_eq!(e.detail, "policy");
    assert_eq!(e.principal, ADMIN);
    assert_eq!(e.client_app, "portal");
    assert_eq!(e.target, "upn:bob@contoso.test");
    assert_eq!(e.operation, "reset");
    assert_eq!(e.source, "127.0.0.1");
    assert!(e.message.contains("switched off"), "{}", e.message);
    assert_no_secret(&e, toggled_off);
    admin.set_all_toggles(true).await;

    // An end user resetting someone else: PERMISSION_DENIED.
    let eve = t
        .client_for("eve@contoso.test", Role::User, ClientApp::Portal)
        .await;
    let denied = "Not-Hers-Passw0rd!7";
    assert_eq!(
        eve.reset(bob, denied).await,
        Err(ReasonCode::PermissionDenied)
    );
    let e = only(&t, support::TENANT, ReasonCode::PermissionDenied).await;
    assert_eq!(
        (e.principal.as_str(), e.detail.as_str()),
        ("eve@contoso.test", "policy")
    );
    assert_eq!(e.details["role"], "user");
    assert_no_secret(&e, denied);

    // A banned password: the answer names the terms, the trail does not.
    let banned = "P@ssword1";
    assert_eq!(
        admin.reset(bob, banned).await,
        Err(ReasonCode::PasswordBanned)
    );
    let e = only(&t, support::TENANT, ReasonCode::PasswordBanned).await;
    assert_eq!(e.detail, "banned_password");
    assert_no_secret(&e, banned);
    assert!(!e.message.contains("built on"), "{}", e.message);

    // The throttle: one reset of bob per hour.
    let first = "First-Passw0rd!7";
    assert_eq!(
        admin.reset(bob, first).await,
        Err(ReasonCode::NoAgentOnline)
    );
    let throttled = "Second-Passw0rd!7";
    assert_eq!(
        admin.reset(bob, throttled).await,
        Err(ReasonCode::Throttled)
    );
    let e = only(&t, support::TENANT, ReasonCode::Throttled).await;
    assert_eq!(e.detail, "throttle");
    assert!(e.message.contains("per user per hour"), "{}", e.message);
    assert_no_secret(&e, throttled);
    assert_no_secret(&e, first);

    // Four refusals, four events; the accepted reset is an operation, not
    // a security event.
    let all = events(&t, support::TENANT).await;
    assert_eq!(all.len(), 4, "{all:#?}");

    // writebackctl reads the same trail.
    let (done, out) = ctl(
        &t,
        &t.admin_token,
        &[
            "audit",
            "list",
            "--kind",
            "security",
            "--user",
            bob,
            "--reason",
            "throttled",
            "--all",
        ],
    )
    .await;
    done.unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("operation_refused THROTTLED/throttle by=admin@contoso.test via=portal target=upn:bob@contoso.test op=reset from=127.0.0.1"), "{out}");
    let (done, out) = ctl(&t, &t.admin_token, &["audit", "list", "--kind", "security"]).await;
    done.unwrap();
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("operation_refused"))
            .count(),
        4,
        "{out}"
    );
}

async fn a_flood_is_capped_with_one_summary(db: &TestDb) {
    let t = TestCp::start(
        db,
        Options {
            security_events: SecurityEventsConfig {
                // One window of a century (no boundary falls in the test),
                // ended by the test.
                window_seconds: 100 * 365 * 86_400,
                per_key_per_window: 3,
                ..SecurityEventsConfig::default()
            },
            ..Options::default()
        },
    )
    .await;
    let token = t
        .token("flood@contoso.test", Role::User, ClientApp::Portal)
        .await;
    let id =
        t.cp.store
            .list_api_tokens(
                support::TENANT,
                Some("flood@contoso.test"),
                Default::default(),
            )
            .await
            .unwrap()
            .0[0]
            .token_id
            .clone();
    t.cp.store
        .revoke_api_token(support::TENANT, &id)
        .await
        .unwrap();
    let client = t.client(&token);
    for _ in 0..20 {
        let err = client
            .settings()
            .get_settings(pb::GetSettingsRequest {})
            .await;
        assert_eq!(
            reason_in_details(&err.unwrap_err()),
            ReasonCode::Unauthenticated
        );
    }
    assert_eq!(events(&t, support::TENANT).await.len(), 3, "the limit");
    t.cp.security.flush(true).await;
    let all = events(&t, support::TENANT).await;
    assert_eq!(all.len(), 4, "{all:#?}");
    let summary = &all[0];
    assert_eq!(summary.suppressed, 17);
    assert_eq!(summary.kind, "authentication_failed");
    assert_eq!(summary.detail, "token_revoked");
    assert_eq!(summary.principal, "flood@contoso.test");
    assert_eq!(summary.details["limit"], "per_key_per_window");
    assert!(
        summary.message.starts_with("17 more events"),
        "{}",
        summary.message
    );
    assert!(all[1..].iter().all(|e| e.suppressed == 0));
    assert_no_secret(summary, &token);
}

async fn enrollments_used_and_refused_are_recorded(db: &TestDb) {
    let t = TestCp::start(db, Options::default()).await;
    let admin = t.admin();
    admin.add_domain("contoso.test").await;
    let token = t.enrollment_token("contoso.test").await;
    let enroll = |token: String| {
        let (csr_pem, _key) = writeback_identity::generate_csr().unwrap();
        let key = writeback_envelope::KeyPair::generate();
        let client = t.anonymous();
        async move {
            client
                .enrollment()
                .enroll(pb::EnrollRequest {
                    token,
                    csr_pem,
                    envelope_public_key: key.public_bytes(),
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
    let agent_id = enroll(token.clone()).await.unwrap().into_inner().agent_id;
    let err = enroll(token.clone()).await.unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::EnrollmentTokenUsed);
    let err = enroll("wbe1.garbage".into()).await.unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::EnrollmentTokenInvalid);

    // Used: in the administrative trail, by the token's id.
    let token_id = token.split('.').nth(1).unwrap();
    let trail = admin
        .audit()
        .list_admin_events(pb::ListAdminEventsRequest {
            action: "agent.enroll".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].principal, format!("enrollment_token:{token_id}"));
    assert_eq!(trail[0].object, format!("agent:{agent_id}"));
    assert!(
        !trail[0].details_json.contains(&token),
        "{}",
        trail[0].details_json
    );

    // Refused: the reused token is the tenant's; the garbage is no one's.
    let e = only(&t, support::TENANT, ReasonCode::EnrollmentTokenUsed).await;
    assert_eq!(e.kind, "enrollment_refused");
    assert_eq!(e.details["token_id"], token_id);
    assert_eq!(e.details["domain"], "contoso.test");
    assert_no_secret(&e, &token);
    assert_no_secret(&e, token.split('.').nth(2).unwrap());
    let e = only(&t, "", ReasonCode::EnrollmentTokenInvalid).await;
    assert_no_secret(&e, "garbage");
}

/// A stored event of tenant t1 at `at_ms`.
fn stored(principal: &str, target: &str, kind: &str, reason: &str, at_ms: i64) -> SecurityEvent {
    SecurityEvent {
        tenant: support::TENANT.into(),
        at_ms,
        kind: kind.into(),
        reason_code: reason.into(),
        principal: principal.into(),
        target: target.into(),
        details: serde_json::json!({}),
        ..SecurityEvent::default()
    }
}

fn at(ms: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: ms / 1000,
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap(),
    })
}

async fn the_audit_lists_filter_and_page(db: &TestDb) {
    // The events below are dated 1970: no retention sweep may take them.
    let t = TestCp::start(
        db,
        Options {
            security_events: SecurityEventsConfig {
                retention_days: 0,
                ..SecurityEventsConfig::default()
            },
            ..Options::default()
        },
    )
    .await;
    let store = &t.cp.store;
    let (refused, failed) = ("operation_refused", "authentication_failed");
    for e in [
        stored(
            "alice@contoso.test",
            "upn:bob@contoso.test",
            refused,
            "THROTTLED",
            1_000,
        ),
        stored(
            "alice@contoso.test",
            "upn:carol@contoso.test",
            refused,
            "PERMISSION_DENIED",
            2_000,
        ),
        stored("mallory@contoso.test", "", failed, "UNAUTHENTICATED", 3_000),
        stored(
            "Bob@contoso.test",
            "upn:bob@contoso.test",
            refused,
            "WRITEBACK_DISABLED",
            4_000,
        ),
        SecurityEvent {
            tenant: "t2".into(),
            ..stored(
                "alice@contoso.test",
                "upn:bob@contoso.test",
                refused,
                "THROTTLED",
                1_500,
            )
        },
        SecurityEvent {
            tenant: String::new(),
            ..stored("", "", failed, "UNAUTHENTICATED", 1_500)
        },
    ] {
        store.record_security_event(&e).await.unwrap();
    }
    let admin = t.admin();
    let list = |r: pb::ListSecurityEventsRequest| {
        let mut audit = admin.audit();
        async move {
            let page = audit.list_security_events(r).await.unwrap().into_inner();
            page.events
                .iter()
                .map(|e| {
                    e.at.as_ref().unwrap().seconds * 1000
                        + i64::from(e.at.as_ref().unwrap().nanos / 1_000_000)
                })
                .collect::<Vec<i64>>()
        }
    };
    assert_eq!(list(Default::default()).await, [4_000, 3_000, 2_000, 1_000]);
    let by = |principal: &str| pb::ListSecurityEventsRequest {
        principal: principal.into(),
        ..Default::default()
    };
    assert_eq!(list(by("ALICE@contoso.test")).await, [2_000, 1_000]);
    assert_eq!(list(by("bob@contoso.test")).await, [4_000], "any case");
    let on_bob = pb::ListSecurityEventsRequest {
        user: "Bob@Contoso.test".into(),
        ..Default::default()
    };
    assert_eq!(list(on_bob).await, [4_000, 1_000]);
    let window = pb::ListSecurityEventsRequest {
        since: at(2_000),
        until: at(4_000),
        ..Default::default()
    };
    assert_eq!(
        list(window).await,
        [3_000, 2_000],
        "since inclusive, until exclusive"
    );
    let kind = pb::ListSecurityEventsRequest {
        kind: failed.into(),
        ..Default::default()
    };
    assert_eq!(list(kind).await, [3_000]);
    let reason = pb::ListSecurityEventsRequest {
        reason_code: "throttled".into(),
        ..Default::default()
    };
    assert_eq!(list(reason).await, [1_000]);

    // Paging: every event once, newest first.
    let mut audit = admin.audit();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit
            .list_security_events(pb::ListSecurityEventsRequest {
                page_size: 3,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= 3);
        seen.extend(page.events.into_iter().map(|e| e.event_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 4);
    seen.dedup();
    assert_eq!(seen.len(), 4);

    // Bad filters are refused with a reason.
    for bad in [
        pb::ListSecurityEventsRequest {
            kind: "everything".into(),
            ..Default::default()
        },
        pb::ListSecurityEventsRequest {
            reason_code: "NOPE".into(),
            ..Default::default()
        },
        pb::ListSecurityEventsRequest {
            since: at(5_000),
            until: at(4_000),
            ..Default::default()
        },
    ] {
        let err = admin.audit().list_security_events(bad).await.unwrap_err();
        assert_eq!(reason_in_details(&err), ReasonCode::InvalidArgument);
    }

    // Global administrators only.
    for role in [Role::PasswordAdmin, Role::User] {
        let who = format!("{}@contoso.test", role.as_str());
        let client = t.client_for(&who, role, ClientApp::Portal).await;
        let err = client
            .audit()
            .list_security_events(pb::ListSecurityEventsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(reason_in_details(&err), ReasonCode::PermissionDenied);
    }

    // The operations log: by principal, user, time and state.
    for (id, principal, target, ms) in [
        (
            "00000000-0000-4000-8000-000000000001",
            ADMIN,
            "upn:bob@contoso.test",
            1_000,
        ),
        (
            "00000000-0000-4000-8000-000000000002",
            ADMIN,
            "upn:carol@contoso.test",
            2_000,
        ),
        (
            "00000000-0000-4000-8000-000000000003",
            "helpdesk@contoso.test",
            "upn:bob@contoso.test",
            3_000,
        ),
    ] {
        store
            .insert_operation(&writeback_control_plane::store::NewOperation {
                id: id.into(),
                tenant: support::TENANT.into(),
                kind: "reset".into(),
                target: target.into(),
                domain: "contoso.test".into(),
                principal: principal.into(),
                client_app: ClientApp::Portal,
                created_at_ms: ms,
                deadline_at_ms: ms + 30_000,
                trace_id: String::new(),
                rule: String::new(),
            })
            .await
            .unwrap();
    }
    let ops = |r: pb::ListAuditRequest| {
        let mut audit = admin.audit();
        async move {
            audit
                .list_audit(r)
                .await
                .map(|p| {
                    p.into_inner()
                        .records
                        .into_iter()
                        .map(|r| r.operation_id[r.operation_id.len() - 1..].to_owned())
                        .collect::<Vec<_>>()
                })
                .map_err(|s| reason_in_details(&s))
        }
    };
    let helpdesk = pb::ListAuditRequest {
        principal: "helpdesk@contoso.test".into(),
        ..Default::default()
    };
    assert_eq!(ops(helpdesk).await.unwrap(), ["3"]);
    let bob_since = pb::ListAuditRequest {
        user: "bob@contoso.test".into(),
        since: at(2_000),
        ..Default::default()
    };
    assert_eq!(ops(bob_since).await.unwrap(), ["3"]);
    let until = pb::ListAuditRequest {
        until: at(3_000),
        state: "pending".into(),
        ..Default::default()
    };
    assert_eq!(ops(until).await.unwrap(), ["2", "1"]);
    let succeeded = pb::ListAuditRequest {
        state: "succeeded".into(),
        ..Default::default()
    };
    assert_eq!(ops(succeeded).await.unwrap(), Vec::<String>::new());
    let bad_state = pb::ListAuditRequest {
        state: "done".into(),
        ..Default::default()
    };
    assert_eq!(ops(bad_state).await, Err(ReasonCode::InvalidArgument));

    // The administrative trail: by principal and time.
    admin.set_all_toggles(true).await;
    let admin_events = |r: pb::ListAdminEventsRequest| {
        let mut audit = admin.audit();
        async move {
            audit
                .list_admin_events(r)
                .await
                .unwrap()
                .into_inner()
                .events
                .len()
        }
    };
    let mine = pb::ListAdminEventsRequest {
        principal: ADMIN.to_uppercase(),
        ..Default::default()
    };
    assert_eq!(admin_events(mine).await, 1);
    let others = pb::ListAdminEventsRequest {
        principal: "someone@contoso.test".into(),
        ..Default::default()
    };
    assert_eq!(admin_events(others).await, 0);
    let later = pb::ListAdminEventsRequest {
        since: at(store.now_ms() + 60_000),
        ..Default::default()
    };
    assert_eq!(admin_events(later).await, 0);
}

async fn writebackctl_lists_every_trail(db: &TestDb) {
    let t = support::ready(db, Options::default()).await;
    let token = &t.admin_token;
    t.admin().set_all_toggles(false).await;
    assert_eq!(
        t.admin()
            .reset("bob@contoso.test", "Toggled-Off-Passw0rd!7")
            .await,
        Err(ReasonCode::WritebackDisabled)
    );
    t.cp.security.flush(false).await;

    // `audit admin` and `audit list --kind administration` are one list.
    let (done, admin_out) = ctl(&t, token, &["audit", "admin", "--all"]).await;
    done.unwrap();
    let (done, list_out) = ctl(
        &t,
        token,
        &[
            "audit",
            "list",
            "--kind",
            "administration",
            "--principal",
            ADMIN,
            "--all",
        ],
    )
    .await;
    done.unwrap();
    assert!(admin_out.contains("agent.enroll"), "{admin_out}");
    assert!(admin_out.contains("settings.update"), "{admin_out}");
    assert!(
        !list_out.contains("agent.enroll"),
        "enrolled by its token, not the admin"
    );
    assert!(list_out.contains("domain.add"), "{list_out}");

    // One page at a time, with the next page's token.
    let (done, page) = ctl(
        &t,
        token,
        &[
            "audit",
            "list",
            "--kind",
            "administration",
            "--page-size",
            "1",
        ],
    )
    .await;
    done.unwrap();
    assert_eq!(page.lines().count(), 2, "{page}");
    assert!(page.contains("# more: --page-token "), "{page}");

    // Security events by time: none before the test began, one since.
    let (done, none) = ctl(
        &t,
        token,
        &[
            "audit",
            "list",
            "--kind",
            "security",
            "--until",
            "2000-01-01T00:00:00Z",
        ],
    )
    .await;
    done.unwrap();
    assert_eq!(none, "");
    let (done, since) = ctl(
        &t,
        token,
        &[
            "audit",
            "list",
            "--kind",
            "security",
            "--since",
            "2000-01-01T00:00:00+02:00",
        ],
    )
    .await;
    done.unwrap();
    assert!(
        since.contains("operation_refused WRITEBACK_DISABLED/policy"),
        "{since}"
    );

    // The operations log is the default.
    let (done, ops) = ctl(&t, token, &["audit", "list", "--user", "bob@contoso.test"]).await;
    done.unwrap();
    assert_eq!(ops, "", "a refused reset is no operation");

    // A filter the trail does not have is refused before anything is sent.
    let (done, _) = ctl(
        &t,
        token,
        &[
            "audit",
            "list",
            "--kind",
            "administration",
            "--user",
            "bob@contoso.test",
        ],
    )
    .await;
    assert!(matches!(done, Err(writeback_cli::CliError::Local(m)) if m.contains("--user")));

    // Only global administrators read the security trail.
    let helpdesk = t
        .token(
            "helpdesk@contoso.test",
            Role::PasswordAdmin,
            ClientApp::Portal,
        )
        .await;
    let (done, _) = ctl(&t, &helpdesk, &["audit", "list", "--kind", "security"]).await;
    assert!(
        matches!(done, Err(writeback_cli::CliError::Refused(f)) if f.reason == ReasonCode::PermissionDenied)
    );
}

both_backends!(
    refused_credentials_are_recorded_once_without_the_token,
    refused_operations_are_recorded_once_without_the_password,
    a_flood_is_capped_with_one_summary,
    enrollments_used_and_refused_are_recorded,
    the_audit_lists_filter_and_page,
    writebackctl_lists_every_trail,
);
