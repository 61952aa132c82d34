//! Reset, must-change, unlock and un-expire, bound as a privileged account.

use writeback_agent::directory::{ResetOptions, Target};
use writeback_core::ReasonCode;

use crate::{admin_config, attr, directory, guid_of, pw, refused, start_dc, upn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_unlocks_and_expiry_flags_reach_the_dc() {
    let dc = start_dc().await;
    let d = directory(admin_config(&dc));
    let dn = dc.create_user("alice", "Start-Passw0rd!").await.unwrap();
    let alice = upn(&dc, "alice");

    // Policy hints: Samba does not advertise the control, and a reset carrying it
    // (non-critical) is applied anyway.
    let report = d.domain_report().await.unwrap();
    assert!(!report.policy_hints_supported);
    assert_eq!(report.root_dn, dc.base_dn());
    assert_eq!(report.policy.min_length, 7);
    assert!(report.policy.complexity);

    // Plain reset: the new password works (LDAP and Kerberos), the old does not.
    d.reset_password(&alice, &pw("Reset-Passw0rd-1"), ResetOptions::default())
        .await
        .unwrap();
    assert!(
        dc.try_bind("alice@contoso.test", "Reset-Passw0rd-1")
            .await
            .unwrap()
    );
    assert!(
        !dc.try_bind("alice@contoso.test", "Start-Passw0rd!")
            .await
            .unwrap()
    );
    assert!(dc.kinit("alice", "Reset-Passw0rd-1").await.unwrap());
    assert!(!dc.kinit("alice", "Start-Passw0rd!").await.unwrap());

    // By objectGUID, too.
    let by_guid = Target::ObjectGuid(guid_of(&dc, "alice").await);
    d.reset_password(&by_guid, &pw("Reset-Passw0rd-2"), ResetOptions::default())
        .await
        .unwrap();
    assert!(dc.try_bind(&dn, "Reset-Passw0rd-2").await.unwrap());

    // Samba ignores the policy-hints control: a reset to a password in history passes.
    d.reset_password(&alice, &pw("Reset-Passw0rd-1"), ResetOptions::default())
        .await
        .unwrap();

    // Policy failures on a reset.
    let e = refused(
        d.reset_password(&alice, &pw("Ab1!"), ResetOptions::default())
            .await,
        ReasonCode::PasswordTooShort,
    );
    assert!(e.public_message().contains("at least 7 characters"), "{e}");
    refused(
        d.reset_password(&alice, &pw("alllowercaseletters"), ResetOptions::default())
            .await,
        ReasonCode::PasswordComplexity,
    );

    // Must change at next logon: pwdLastSet = 0 and a bind says "must change".
    let must = ResetOptions {
        must_change_at_next_logon: true,
        unlock: false,
    };
    d.reset_password(&alice, &pw("Reset-Passw0rd-3"), must)
        .await
        .unwrap();
    assert_eq!(attr(&dc, &dn, "pwdLastSet").await, "0");
    assert!(!dc.try_bind(&dn, "Reset-Passw0rd-3").await.unwrap());

    // Un-expire: pwdLastSet = -1 makes the DC store "now"; the password works again.
    d.unexpire(&alice).await.unwrap();
    let last_set: i64 = attr(&dc, &dn, "pwdLastSet").await.parse().unwrap();
    assert!(last_set > 0, "{last_set}");
    assert!(dc.try_bind(&dn, "Reset-Passw0rd-3").await.unwrap());

    // Lockout: three bad binds lock alice out.
    dc.set_password_settings(&["--account-lockout-threshold=3"])
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(!dc.try_bind(&dn, "Wrong-Passw0rd-0").await.unwrap());
    }
    let locked: i64 = attr(&dc, &dn, "lockoutTime").await.parse().unwrap();
    assert!(locked > 0, "lockoutTime {locked}");
    assert!(
        !dc.try_bind(&dn, "Reset-Passw0rd-3").await.unwrap(),
        "locked"
    );

    // Unlock alone: lockoutTime = 0, the unchanged password works.
    d.unlock(&alice).await.unwrap();
    assert_eq!(attr(&dc, &dn, "lockoutTime").await, "0");
    assert!(dc.try_bind(&dn, "Reset-Passw0rd-3").await.unwrap());

    // Lock again, then reset with must-change and unlock in one write.
    for _ in 0..3 {
        assert!(!dc.try_bind(&dn, "Wrong-Passw0rd-0").await.unwrap());
    }
    let both = ResetOptions {
        must_change_at_next_logon: true,
        unlock: true,
    };
    d.reset_password(&alice, &pw("Reset-Passw0rd-4"), both)
        .await
        .unwrap();
    assert_eq!(attr(&dc, &dn, "lockoutTime").await, "0");
    assert_eq!(attr(&dc, &dn, "pwdLastSet").await, "0");
}
