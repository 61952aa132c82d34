//! The per-user reset throttle: at most N resets of one user per hour
//! (`throttle_per_user_per_hour`, 5 by default), answered with `THROTTLED`
//! and the time of the next allowed attempt.

use std::time::Duration;

use writeback_control_plane::store::{ClientApp, Role};
use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;

use crate::harness::TestDb;
use crate::support::{self, Options, reason_in_details, upn_ref};

async fn resets_beyond_the_hourly_limit_are_throttled_until_the_window_frees(db: &TestDb) {
    let t = support::ready(
        db,
        Options {
            throttle_per_user_per_hour: 2,
            ..Options::default()
        },
    )
    .await;
    let admin = t.admin();
    let powershell = t
        .client_for(support::ADMIN, Role::GlobalAdmin, ClientApp::Powershell)
        .await;
    let bob = "bob@contoso.test";

    // Refused attempts are not operations and do not count.
    assert_eq!(
        powershell.reset(bob, "Refused-Passw0rd!1").await,
        Err(ReasonCode::UnsupportedOperation)
    );
    let first_at = t.cp.store.now_ms();
    // Two accepted resets (they fail for want of an agent, but they were
    // sent to the domain, so they count).
    for _ in 0..2 {
        assert_eq!(
            admin.reset(bob, "Some-Passw0rd!1").await,
            Err(ReasonCode::NoAgentOnline)
        );
    }
    let err = admin
        .passwords()
        .reset_password(pb::ResetPasswordRequest {
            user: Some(upn_ref("BOB@contoso.test")),
            new_password: "Third-Passw0rd!1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::Throttled);
    // The answer says when the next reset is allowed: an hour after the
    // oldest reset in the window.
    let when = err
        .message()
        .rsplit(' ')
        .next()
        .and_then(|w| {
            time::OffsetDateTime::parse(w, &time::format_description::well_known::Rfc3339).ok()
        })
        .unwrap_or_else(|| panic!("no time in {:?}", err.message()));
    let next_ms = when.unix_timestamp() * 1000;
    let expected = first_at + 3_600_000;
    assert!(
        (expected - 1_000..=expected + 5_000).contains(&next_ms),
        "next allowed at {when}, expected about {expected} ms"
    );
    let retry_after: i64 = err
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after metadata");
    assert!((3_590..=3_600).contains(&retry_after), "{retry_after}");
    // The same wait as gRPC's standard google.rpc.RetryInfo.
    {
        use tonic_types::StatusExt;
        let retry = err.get_error_details().retry_info().cloned();
        assert_eq!(
            retry.and_then(|r| r.retry_delay),
            Some(std::time::Duration::from_secs(
                u64::try_from(retry_after).unwrap()
            )),
            "{err:?}"
        );
    }
    // Throttled attempts are not recorded either.
    let audit = admin
        .audit()
        .list_audit(pb::ListAuditRequest {
            user: bob.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.records.len(), 2);

    // Per user, and per reset: another user, or an unlock, is not throttled.
    assert_eq!(
        admin.reset("carol@contoso.test", "Carol-Passw0rd!1").await,
        Err(ReasonCode::NoAgentOnline)
    );
    let err = admin
        .passwords()
        .unlock_account(pb::UnlockAccountRequest {
            user: Some(upn_ref(bob)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::NoAgentOnline);

    // One person is one bucket, however the UPN's case is spelt, ASCII or
    // not (AD compares UPNs without regard to case).
    for variant in ["ÉLODIE@contoso.test", "Élodie@Contoso.test"] {
        assert_eq!(
            admin.reset(variant, "Elodie-Passw0rd!1").await,
            Err(ReasonCode::NoAgentOnline),
            "{variant}"
        );
    }
    assert_eq!(
        admin
            .reset("élodie@contoso.test", "Elodie-Passw0rd!2")
            .await,
        Err(ReasonCode::Throttled)
    );

    // An hour later the window has room again.
    t.clock.advance(Duration::from_secs(3_601));
    assert_eq!(
        admin.reset(bob, "Later-Passw0rd!1").await,
        Err(ReasonCode::NoAgentOnline)
    );
}

async fn the_default_limit_is_five_resets_per_user_per_hour(db: &TestDb) {
    let t = support::ready(db, Options::default()).await;
    assert_eq!(t.cp.config.throttle_per_user_per_hour, 5);
    let admin = t.admin();
    for _ in 0..5 {
        assert_eq!(
            admin.reset("bob@contoso.test", "Some-Passw0rd!1").await,
            Err(ReasonCode::NoAgentOnline)
        );
    }
    assert_eq!(
        admin.reset("bob@contoso.test", "Some-Passw0rd!1").await,
        Err(ReasonCode::Throttled)
    );
}

both_backends!(
    resets_beyond_the_hourly_limit_are_throttled_until_the_window_frees,
    the_default_limit_is_five_resets_per_user_per_hour,
);
