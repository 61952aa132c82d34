//! The seed's validation scenarios, end to end: two Samba AD domains in
//! separate forests (contoso.test, fabrikam.test — no trust), one agent each,
//! one control plane, one relay. Every outcome is proven in the directory:
//! binds (and kinit) with the new and old passwords, lockoutTime and
//! pwdLastSet read back.

use std::collections::HashSet;

use ldap3::Mod;
use writeback_control_plane::store::{ClientApp, Role};
use writeback_core::{ReasonCode, failure_of};
use writeback_proto::v1 as pb;
use writeback_testkit::SambaDc;
use writeback_testkit::stack::{Client, Stack};

const DOMAINS: [&str; 2] = ["contoso.test", "fabrikam.test"];
const START: &str = "Start-Passw0rd!1";

struct Forests {
    dcs: Vec<SambaDc>,
    stack: Stack,
}

/// Two forests, each with users alice (end user) and carol (an
/// administrator in the cloud), a lockout threshold of 3 and no minimum
/// password age.
async fn forests() -> Forests {
    writeback_identity::install_crypto_provider();
    writeback_core::telemetry::init();
    let (a, b) = tokio::join!(SambaDc::start(DOMAINS[0]), SambaDc::start(DOMAINS[1]));
    let dcs = vec![
        a.expect("samba DC (scripts/install-deps.sh)"),
        b.expect("samba DC"),
    ];
    let mut stack = Stack::start("t1", 1).await.unwrap();
    for dc in &dcs {
        dc.set_password_settings(&["--min-pwd-age=0", "--account-lockout-threshold=3"])
            .await
            .unwrap();
        dc.create_user("alice", START).await.unwrap();
        dc.create_user("carol", START).await.unwrap();
        stack.add_domain(dc).await.unwrap();
        stack
            .start_agent(dc, &dc.admin_dn(), dc.admin_password())
            .await
            .unwrap();
        stack
            .client(
                &format!("carol@{}", dc.domain()),
                Role::PasswordAdmin,
                ClientApp::Portal,
            )
            .await
            .unwrap();
    }
    Forests { dcs, stack }
}

fn upn(user: &str, dc: &SambaDc) -> pb::UserRef {
    pb::UserRef {
        by: Some(pb::user_ref::By::Upn(format!("{user}@{}", dc.domain()))),
    }
}

async fn reset(
    c: &Client,
    user: pb::UserRef,
    password: &str,
    unlock: bool,
) -> Result<pb::OperationResponse, ReasonCode> {
    c.passwords()
        .reset_password(c.request(pb::ResetPasswordRequest {
            user: Some(user),
            new_password: password.into(),
            unlock,
            ..Default::default()
        }))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| failure_of(&s).reason)
}

async fn change(
    c: &Client,
    user: pb::UserRef,
    old: &str,
    new: &str,
    forced: bool,
) -> Result<pb::OperationResponse, ReasonCode> {
    c.passwords()
        .change_password(c.request(pb::ChangePasswordRequest {
            user: Some(user),
            old_password: old.into(),
            new_password: new.into(),
            forced,
            ..Default::default()
        }))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| failure_of(&s).reason)
}

async fn unlock(c: &Client, user: pb::UserRef) -> Result<pb::OperationResponse, ReasonCode> {
    c.passwords()
        .unlock_account(c.request(pb::UnlockAccountRequest {
            user: Some(user),
            ..Default::default()
        }))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| failure_of(&s).reason)
}

/// The new password works (LDAP bind and Kerberos) and the old one does not.
async fn assert_password(dc: &SambaDc, user: &str, new: &str, old: &str) {
    let who = format!("{user}@{}", dc.domain());
    assert!(
        dc.try_bind(&who, new).await.unwrap(),
        "{who}: the new password binds"
    );
    assert!(
        !dc.try_bind(&who, old).await.unwrap(),
        "{who}: the old password no longer binds"
    );
    assert!(
        dc.kinit(&who, new).await.unwrap(),
        "{who}: kinit with the new password"
    );
    assert!(
        !dc.kinit(&who, old).await.unwrap(),
        "{who}: kinit with the old password fails"
    );
}

fn user_dn(user: &str, dc: &SambaDc) -> String {
    format!("CN={user},CN=Users,{}", dc.base_dn())
}

async fn attr(dc: &SambaDc, user: &str, name: &str) -> i64 {
    let attrs = dc.read_attrs(&user_dn(user, dc), &[name]).await.unwrap();
    attrs
        .get(name)
        .and_then(|v| v.first())
        .map_or(0, |v| v.parse().unwrap())
}

async fn lock_out(dc: &SambaDc, user: &str) {
    let who = format!("{user}@{}", dc.domain());
    for _ in 0..4 {
        let _ = dc.try_bind(&who, "Wrong-Passw0rd!").await;
    }
    assert_ne!(
        attr(dc, user, "lockoutTime").await,
        0,
        "{who} is locked out"
    );
}

/// Self-service reset and unlock (SSPR) need a strong sign-in through the
/// tenant's identity provider (tests/it/oidc.rs proves them with real
/// tokens): a `wbt1` token is no sign-in, so it never resets or unlocks its
/// own account, in either forest, and the directory is unchanged. (Issue 25:
/// every `wbt1` token used to count as strong.)
#[tokio::test(flavor = "multi_thread")]
async fn an_api_token_never_resets_or_unlocks_its_own_account_in_both_forests() {
    let f = forests().await;
    for dc in &f.dcs {
        let alice = f
            .stack
            .client(
                &format!("alice@{}", dc.domain()),
                Role::User,
                ClientApp::Portal,
            )
            .await
            .unwrap();
        let new = format!("Sspr-{}-Passw0rd!", dc.netbios());
        let err = reset(&alice, upn("alice", dc), &new, false)
            .await
            .expect_err("a wbt1 token's self-service reset");
        assert_eq!(err, ReasonCode::StrongAuthenticationRequired);
        assert!(
            dc.try_bind(&format!("alice@{}", dc.domain()), START)
                .await
                .unwrap(),
            "the password is unchanged"
        );
        lock_out(dc, "alice").await;
        assert_eq!(
            unlock(&alice, upn("alice", dc)).await.unwrap_err(),
            ReasonCode::StrongAuthenticationRequired
        );
        assert_ne!(attr(dc, "alice", "lockoutTime").await, 0, "still locked");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_change_of_an_expired_password_and_a_regular_change() {
    let f = forests().await;
    for dc in &f.dcs {
        let alice = f
            .stack
            .client(
                &format!("alice@{}", dc.domain()),
                Role::User,
                ClientApp::Portal,
            )
            .await
            .unwrap();
        // Expire the password first.
        let mut ldap = dc.ldap_admin().await.unwrap();
        ldap.modify(
            &user_dn("alice", dc),
            vec![Mod::Replace("pwdLastSet", HashSet::from(["0"]))],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
        assert_eq!(attr(dc, "alice", "pwdLastSet").await, 0);
        let forced = format!("Forced-{}-Passw0rd!", dc.netbios());
        change(&alice, upn("alice", dc), START, &forced, true)
            .await
            .expect("forced change");
        assert_ne!(
            attr(dc, "alice", "pwdLastSet").await,
            0,
            "no longer expired"
        );
        assert_password(dc, "alice", &forced, START).await;

        let regular = format!("Regular-{}-Passw0rd!", dc.netbios());
        change(&alice, upn("alice", dc), &forced, &regular, false)
            .await
            .expect("regular change");
        assert_password(dc, "alice", &regular, &forced).await;

        // A wrong current password is refused precisely and changes nothing.
        let err = change(
            &alice,
            upn("alice", dc),
            "Not-The-Passw0rd!",
            "Whatever-Passw0rd!9",
            false,
        )
        .await
        .unwrap_err();
        assert_eq!(err, ReasonCode::WrongOldPassword);
        assert!(
            dc.try_bind(&format!("alice@{}", dc.domain()), &regular)
                .await
                .unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn administrator_resets_from_the_portal_and_the_graph_api() {
    let f = forests().await;
    let portal = f.stack.admin().unwrap();
    let graph = f
        .stack
        .client("admin@writeback.test", Role::GlobalAdmin, ClientApp::Graph)
        .await
        .unwrap();
    for dc in &f.dcs {
        let first = format!("Portal-{}-Passw0rd!", dc.netbios());
        reset(&portal, upn("alice", dc), &first, false)
            .await
            .expect("admin reset from the portal");
        assert_password(dc, "alice", &first, START).await;
        let second = format!("Graph-{}-Passw0rd!", dc.netbios());
        reset(&graph, upn("alice", dc), &second, false)
            .await
            .expect("admin reset from the graph API");
        assert_password(dc, "alice", &second, &first).await;
    }
}

/// A help desk unlocks, with and without a reset; with the unlock toggle
/// off an unlock without reset is refused.
#[tokio::test(flavor = "multi_thread")]
async fn help_desk_unlock_with_and_without_reset_and_the_unlock_toggle() {
    let f = forests().await;
    let admin = f.stack.admin().unwrap();
    for dc in &f.dcs {
        // The help desk: a self-service unlock needs the identity
        // provider's strong sign-in (tests/it/oidc.rs); the toggle is the
        // same for both.
        let helpdesk = f
            .stack
            .client(
                &format!("carol@{}", dc.domain()),
                Role::PasswordAdmin,
                ClientApp::Portal,
            )
            .await
            .unwrap();
        let who = format!("alice@{}", dc.domain());

        // Unlock without reset.
        lock_out(dc, "alice").await;
        unlock(&helpdesk, upn("alice", dc))
            .await
            .expect("help desk unlock");
        assert_eq!(attr(dc, "alice", "lockoutTime").await, 0);
        assert!(
            dc.try_bind(&who, START).await.unwrap(),
            "the unchanged password works again"
        );

        // Unlock together with a reset.
        lock_out(dc, "alice").await;
        let new = format!("Unlock-{}-Passw0rd!", dc.netbios());
        reset(&helpdesk, upn("alice", dc), &new, true)
            .await
            .expect("reset and unlock");
        assert_eq!(attr(dc, "alice", "lockoutTime").await, 0);
        assert_password(dc, "alice", &new, START).await;

        // With the unlock toggle off, unlock without reset is refused and the account stays locked.
        lock_out(dc, "alice").await;
        admin
            .settings()
            .update_settings(admin.request(pb::UpdateSettingsRequest {
                unlock_without_reset: Some(false),
                ..Default::default()
            }))
            .await
            .unwrap();
        assert_eq!(
            unlock(&helpdesk, upn("alice", dc)).await.unwrap_err(),
            ReasonCode::WritebackDisabled
        );
        assert_ne!(attr(dc, "alice", "lockoutTime").await, 0, "still locked");
        admin
            .settings()
            .update_settings(admin.request(pb::UpdateSettingsRequest {
                unlock_without_reset: Some(true),
                ..Default::default()
            }))
            .await
            .unwrap();
        unlock(&helpdesk, upn("alice", dc))
            .await
            .expect("unlock once the toggle is back on");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_operations_are_refused_and_the_directory_is_unchanged() {
    let f = forests().await;
    for dc in &f.dcs {
        let d = dc.domain();
        let alice_graph = f
            .stack
            .client(&format!("alice@{d}"), Role::User, ClientApp::Graph)
            .await
            .unwrap();
        let alice_ps = f
            .stack
            .client(&format!("alice@{d}"), Role::User, ClientApp::Powershell)
            .await
            .unwrap();
        let admin_ps = f
            .stack
            .client(
                "admin@writeback.test",
                Role::GlobalAdmin,
                ClientApp::Powershell,
            )
            .await
            .unwrap();
        let admin_m365 = f
            .stack
            .client(
                "admin@writeback.test",
                Role::GlobalAdmin,
                ClientApp::M365AdminCenter,
            )
            .await
            .unwrap();
        let admin_portal = f.stack.admin().unwrap();
        let cases: Vec<(&str, &Client, pb::UserRef)> = vec![
            (
                "end user resets own password through the Graph API",
                &alice_graph,
                upn("alice", dc),
            ),
            (
                "end user resets own password through PowerShell",
                &alice_ps,
                upn("alice", dc),
            ),
            (
                "administrator resets an end user through PowerShell",
                &admin_ps,
                upn("alice", dc),
            ),
            (
                "administrator resets from the M365 admin center",
                &admin_m365,
                upn("alice", dc),
            ),
            (
                "administrator resets another administrator",
                &admin_portal,
                upn("carol", dc),
            ),
        ];
        for (what, client, user) in cases {
            let err = reset(client, user, "Refused-Passw0rd!7", false)
                .await
                .unwrap_err();
            assert_eq!(err, ReasonCode::UnsupportedOperation, "{what}");
        }
        assert!(
            dc.try_bind(&format!("alice@{d}"), START).await.unwrap(),
            "alice unchanged"
        );
        assert!(
            dc.try_bind(&format!("carol@{d}"), START).await.unwrap(),
            "carol unchanged"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn toggles_off_refuse_everything_and_on_again_works() {
    let f = forests().await;
    let admin = f.stack.admin().unwrap();
    for toggle in ["sspr", "cloud_sync"] {
        let off = match toggle {
            "sspr" => pb::UpdateSettingsRequest {
                sspr_writeback: Some(false),
                ..Default::default()
            },
            _ => pb::UpdateSettingsRequest {
                cloud_sync_writeback: Some(false),
                ..Default::default()
            },
        };
        admin
            .settings()
            .update_settings(admin.request(off))
            .await
            .unwrap();
        for dc in &f.dcs {
            let err = reset(&admin, upn("alice", dc), "Off-Passw0rd!5", false)
                .await
                .unwrap_err();
            assert_eq!(err, ReasonCode::WritebackDisabled, "{toggle} off");
            assert!(
                dc.try_bind(&format!("alice@{}", dc.domain()), START)
                    .await
                    .unwrap(),
                "unchanged"
            );
        }
        admin
            .settings()
            .update_settings(admin.request(pb::UpdateSettingsRequest {
                sspr_writeback: Some(true),
                cloud_sync_writeback: Some(true),
                ..Default::default()
            }))
            .await
            .unwrap();
    }
    for dc in &f.dcs {
        let new = format!("On-{}-Passw0rd!", dc.netbios());
        reset(&admin, upn("alice", dc), &new, false)
            .await
            .expect("works again");
        assert_password(dc, "alice", &new, START).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_agent_gives_no_agent_online_while_the_other_forest_works() {
    let mut f = forests().await;
    f.stack.stop_agent(0).await; // contoso.test's agent
    let admin = f.stack.admin().unwrap();
    let started = std::time::Instant::now();
    let err = reset(&admin, upn("alice", &f.dcs[0]), "Nobody-Passw0rd!3", false)
        .await
        .unwrap_err();
    assert_eq!(err, ReasonCode::NoAgentOnline);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "refused at once, not after the deadline"
    );
    assert!(
        f.dcs[0]
            .try_bind("alice@contoso.test", START)
            .await
            .unwrap()
    );
    let new = "Fabrikam-Still-Passw0rd!";
    reset(&admin, upn("alice", &f.dcs[1]), new, false)
        .await
        .expect("fabrikam keeps working");
    assert_password(&f.dcs[1], "alice", new, START).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn minimum_password_age_gives_its_own_reason_on_a_change() {
    let f = forests().await;
    let dc = &f.dcs[0];
    let alice = f
        .stack
        .client("alice@contoso.test", Role::User, ClientApp::Portal)
        .await
        .unwrap();
    change(
        &alice,
        upn("alice", dc),
        START,
        "First-Change-Passw0rd!",
        false,
    )
    .await
    .expect("first change");
    dc.set_password_settings(&["--min-pwd-age=1"])
        .await
        .unwrap();
    let c = alice
        .passwords()
        .change_password(alice.request(pb::ChangePasswordRequest {
            user: Some(upn("alice", dc)),
            old_password: "First-Change-Passw0rd!".into(),
            new_password: "Second-Change-Passw0rd!".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    let failure = failure_of(&c);
    assert_eq!(failure.reason, ReasonCode::PasswordTooYoung, "{failure:?}");
    assert!(
        failure.message.contains("day"),
        "the message names the minimum age: {}",
        failure.message
    );
    assert!(
        dc.try_bind("alice@contoso.test", "First-Change-Passw0rd!")
            .await
            .unwrap(),
        "unchanged"
    );
}
