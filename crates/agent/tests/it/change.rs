//! Password changes (old password known), and every policy reason on them.

use std::time::Duration;

use writeback_core::ReasonCode;

use crate::{admin_config, attr, config_as, directory, pw, refused, start_dc, upn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_check_the_old_password_and_the_policy() {
    let dc = start_dc().await;
    // The default minimum age (1 day) would refuse every change of a new account.
    dc.set_password_settings(&["--min-pwd-age=0"])
        .await
        .unwrap();
    let dn = dc.create_user("bob", "Start-Passw0rd!").await.unwrap();
    dc.create_user("carol", "Carol-Passw0rd!").await.unwrap();
    let bob = upn(&dc, "bob");
    let d = directory(admin_config(&dc));

    d.change_password(&bob, &pw("Start-Passw0rd!"), &pw("Change-Passw0rd-1"))
        .await
        .unwrap();
    assert!(dc.try_bind(&dn, "Change-Passw0rd-1").await.unwrap());
    assert!(!dc.try_bind(&dn, "Start-Passw0rd!").await.unwrap());

    refused(
        d.change_password(&bob, &pw("Not-The-Passw0rd"), &pw("Change-Passw0rd-2"))
            .await,
        ReasonCode::WrongOldPassword,
    );
    let e = refused(
        d.change_password(&bob, &pw("Change-Passw0rd-1"), &pw("Ab1!"))
            .await,
        ReasonCode::PasswordTooShort,
    );
    assert!(e.public_message().contains("7 characters"), "{e}");
    refused(
        d.change_password(&bob, &pw("Change-Passw0rd-1"), &pw("alllowercaseletters"))
            .await,
        ReasonCode::PasswordComplexity,
    );
    let e = refused(
        d.change_password(&bob, &pw("Change-Passw0rd-1"), &pw("Start-Passw0rd!"))
            .await,
        ReasonCode::PasswordInHistory,
    );
    assert!(e.public_message().contains("last 24 passwords"), "{e}");
    assert!(
        dc.try_bind(&dn, "Change-Passw0rd-1").await.unwrap(),
        "unchanged"
    );

    // An ordinary account with no delegated rights can do the delete/add change too:
    // the DC checks the old password, and Everyone holds Change Password.
    let plain = directory(config_as(&dc, "carol@contoso.test", "Carol-Passw0rd!"));
    plain
        .change_password(&bob, &pw("Change-Passw0rd-1"), &pw("Change-Passw0rd-2"))
        .await
        .unwrap();
    assert!(dc.try_bind(&dn, "Change-Passw0rd-2").await.unwrap());
    refused(
        plain
            .change_password(&bob, &pw("Change-Passw0rd-1"), &pw("Change-Passw0rd-3"))
            .await,
        ReasonCode::WrongOldPassword,
    );

    // Minimum password age: the message says how long and when the next change is
    // allowed; a reset is not subject to it.
    dc.set_password_settings(&["--min-pwd-age=2"])
        .await
        .unwrap();
    let e = refused(
        d.change_password(&bob, &pw("Change-Passw0rd-2"), &pw("Change-Passw0rd-3"))
            .await,
        ReasonCode::PasswordTooYoung,
    );
    let msg = e.public_message();
    assert!(msg.contains("minimum password age is 2 days"), "{msg}");
    assert!(msg.contains("the next change is allowed after"), "{msg}");
    match &e {
        writeback_agent::directory::DirectoryError::PasswordTooYoung {
            min_age,
            next_change,
        } => {
            assert_eq!(*min_age, Some(Duration::from_secs(2 * 86_400)));
            let next = next_change.expect("next change time");
            let from_now = next - time::OffsetDateTime::now_utc();
            assert!(
                from_now > time::Duration::hours(47) && from_now <= time::Duration::hours(48),
                "{from_now}"
            );
        }
        other => panic!("{other:?}"),
    }
    d.reset_password(&bob, &pw("Reset-Passw0rd-9"), Default::default())
        .await
        .unwrap();
    dc.set_password_settings(&["--min-pwd-age=0"])
        .await
        .unwrap();

    // A locked-out account cannot change its password (rc 19 00000775).
    dc.set_password_settings(&["--account-lockout-threshold=2"])
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(!dc.try_bind(&dn, "Wrong-Passw0rd-0").await.unwrap());
    }
    assert_ne!(attr(&dc, &dn, "lockoutTime").await, "0");
    refused(
        d.change_password(&bob, &pw("Reset-Passw0rd-9"), &pw("Change-Passw0rd-5"))
            .await,
        ReasonCode::AccountLockedOut,
    );
}
