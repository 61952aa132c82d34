//! `permissions check` and `grant` against a real DC: an ordinary account as the
//! service account lacks every right and is told which; after `grant` (as
//! Administrator) resets, unlocks, must-change and un-expire work through it; a
//! second `grant` writes nothing; a user with inheritance disabled is listed.

use std::path::Path;
use std::process::Output;

use writeback_agent::directory::{DirectoryError, ResetOptions, Right};
use writeback_agent::permissions::{self, Holding};
use writeback_core::ReasonCode;
use writeback_testkit::SambaDc;

use crate::access::disable_inheritance;
use crate::{admin_config, attr, config_as, directory, pw, refused, start_dc, upn};

pub const SVC_PASSWORD: &str = "Svc-Passw0rd-1!";

/// The domain root's full descriptor as Administrator reads it.
async fn root_descriptor(dc: &SambaDc) -> Vec<u8> {
    let e = dc
        .read_entry(&dc.base_dn(), &["nTSecurityDescriptor"])
        .await
        .unwrap();
    e.bin_attrs["nTSecurityDescriptor"][0].clone()
}

/// An agent config file binding as svc-writeback, the whole domain in scope.
pub fn write_config(dc: &SambaDc, dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("dc-ca.pem"), dc.ca_pem()).unwrap();
    std::fs::write(dir.join("bind-password"), format!("{SVC_PASSWORD}\n")).unwrap();
    let config = format!(
        "state_dir = {state:?}\n\
         [directory]\n\
         urls = [{url:?}]\n\
         ca_file = {ca:?}\n\
         bind_dn = \"svc-writeback@contoso.test\"\n\
         bind_password_file = {pw:?}\n",
        state = dir.join("state"),
        url = dc.ldaps_url(),
        ca = dir.join("dc-ca.pem"),
        pw = dir.join("bind-password"),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Run the agent binary with `args` after `--config <config>`.
pub async fn agent_cli(config: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_writeback-agent"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("WRITEBACK_LOG", "error")
        .output()
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_adds_exactly_the_missing_rights_and_resets_then_work() {
    let dc = start_dc().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(&dc, tmp.path());
    let alice = dc.create_user("alice", "Start-Passw0rd!").await.unwrap();
    let staff = dc.create_ou("Staff").await.unwrap();
    let judy = dc
        .create_user_in(&staff, "judy", "Start-Passw0rd!")
        .await
        .unwrap();
    dc.create_user("svc-writeback", SVC_PASSWORD).await.unwrap();
    disable_inheritance(&dc, &judy).await;
    let svc = directory(config_as(&dc, "svc-writeback@contoso.test", SVC_PASSWORD));

    // An ordinary account: the reset is refused, and the check names every right.
    let e = refused(
        svc.reset_password(
            &upn(&dc, "alice"),
            &pw("Alice-Passw0rd-1"),
            ResetOptions::default(),
        )
        .await,
        ReasonCode::InsufficientAccess,
    );
    assert!(
        matches!(&e, DirectoryError::InsufficientAccess { missing, .. } if missing == &[Right::ResetPassword]),
        "{e:?}"
    );
    let report = permissions::check(&svc, true).await.unwrap();
    assert_eq!(report.root_dn, dc.base_dn());
    assert!(report.account_dn.starts_with("CN=svc-writeback,CN=Users,"));
    assert!(report.account_sid.starts_with("S-1-5-21-"), "{report:?}");
    // Samba's default domain DACL grants Unexpire Password to Authenticated Users
    // (`(OA;;CR;ccc2dc7d-…;;AU)`), as Windows does; the three others are missing.
    let three = vec![
        Right::ResetPassword,
        Right::WriteLockoutTime,
        Right::WritePwdLastSet,
    ];
    assert_eq!(report.missing(), three);
    assert_eq!(report.rights.len(), 4);
    assert_eq!(report.rights[3].holding, Holding::Granted);
    assert_eq!(report.reason(), ReasonCode::InsufficientAccess);
    assert_eq!(report.protected_users, Some(vec![judy.clone()]));

    // The command says the same and exits 1 with the reason code.
    let out = agent_cli(&config, &["permissions", "check"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("[MISSING] Reset Password on descendant user objects"),
        "{stdout}"
    );
    assert!(stdout.contains("[MISSING] write lockoutTime on descendant user objects"));
    assert!(stdout.contains("[ok     ] Unexpire Password on the domain root"));
    assert!(stdout.contains("inheritance disabled on 1 in-scope user(s)"));
    assert!(stdout.contains(&judy), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("INSUFFICIENT_ACCESS: the service account lacks Reset Password"),
        "{stderr}"
    );

    // Grant as Administrator: three ACEs, then the check passes (judy aside).
    let before = root_descriptor(&dc).await;
    let admin = directory(admin_config(&dc));
    let started = std::time::Instant::now();
    let outcome = permissions::grant(&admin, "svc-writeback@contoso.test")
        .await
        .unwrap();
    eprintln!("grant took {:?}", started.elapsed());
    assert_eq!(outcome.added, three);
    assert!(outcome.denied.is_empty());
    assert!(outcome.report.rights_ok(), "{}", outcome.render());
    assert_ne!(root_descriptor(&dc).await, before);
    let report = permissions::check(&svc, true).await.unwrap();
    assert!(report.rights_ok(), "{}", report.render());
    assert_eq!(report.reason(), ReasonCode::InheritanceDisabled);
    assert_eq!(report.protected_users, Some(vec![judy.clone()]));

    // The same service account now resets, unlocks, forces a change and un-expires.
    let a = upn(&dc, "alice");
    svc.reset_password(&a, &pw("Alice-Passw0rd-1"), ResetOptions::default())
        .await
        .unwrap();
    assert!(dc.try_bind(&alice, "Alice-Passw0rd-1").await.unwrap());
    assert!(!dc.try_bind(&alice, "Start-Passw0rd!").await.unwrap());
    dc.set_password_settings(&["--account-lockout-threshold=3"])
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(!dc.try_bind(&alice, "Wrong-Passw0rd-0").await.unwrap());
    }
    assert_ne!(attr(&dc, &alice, "lockoutTime").await, "0");
    assert!(
        !dc.try_bind(&alice, "Alice-Passw0rd-1").await.unwrap(),
        "locked"
    );
    svc.unlock(&a).await.unwrap();
    assert_eq!(attr(&dc, &alice, "lockoutTime").await, "0");
    assert!(dc.try_bind(&alice, "Alice-Passw0rd-1").await.unwrap());
    let both = ResetOptions {
        must_change_at_next_logon: true,
        unlock: true,
    };
    svc.reset_password(&a, &pw("Alice-Passw0rd-2"), both)
        .await
        .unwrap();
    assert_eq!(attr(&dc, &alice, "pwdLastSet").await, "0");
    assert!(
        !dc.try_bind(&alice, "Alice-Passw0rd-2").await.unwrap(),
        "must change"
    );
    svc.unexpire(&a).await.unwrap();
    assert!(
        attr(&dc, &alice, "pwdLastSet")
            .await
            .parse::<i64>()
            .unwrap()
            > 0
    );
    assert!(dc.try_bind(&alice, "Alice-Passw0rd-2").await.unwrap());
    // Inheritance disabled on judy: the grant does not reach her.
    refused(
        svc.reset_password(
            &upn(&dc, "judy"),
            &pw("Judy-Passw0rd-1"),
            ResetOptions::default(),
        )
        .await,
        ReasonCode::InheritanceDisabled,
    );

    // A second grant, through the command with a password file: nothing to add,
    // the descriptor is byte for byte the same.
    let granted = root_descriptor(&dc).await;
    let admin_pw = tmp.path().join("admin-password");
    std::fs::write(&admin_pw, dc.admin_password()).unwrap();
    let out = agent_cli(
        &config,
        &[
            "permissions",
            "grant",
            "--admin-dn",
            &dc.admin_dn(),
            "--admin-password-file",
            admin_pw.to_str().unwrap(),
        ],
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains("nothing to grant: every right is already on the domain root"),
        "{stdout}"
    );
    assert!(stdout.contains("[ok     ] write pwdLastSet on descendant user objects"));
    assert_eq!(root_descriptor(&dc).await, granted);
    let again = permissions::grant(&admin, "svc-writeback@contoso.test")
        .await
        .unwrap();
    assert!(again.added.is_empty());
    assert_eq!(root_descriptor(&dc).await, granted);

    // The check command now fails only on judy.
    let out = agent_cli(&config, &["permissions", "check"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).starts_with("INHERITANCE_DISABLED: "),
        "{out:?}"
    );
    assert!(text(&out.stdout).contains("[ok     ] Reset Password on descendant user objects"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rights_delegated_on_a_scope_ou_are_seen_there() {
    let dc = start_dc().await;
    let staff = dc.create_ou("Staff").await.unwrap();
    dc.create_user_in(&staff, "ivan", "Start-Passw0rd!")
        .await
        .unwrap();
    dc.create_user("svc-writeback", SVC_PASSWORD).await.unwrap();
    let sid = crate::show_attr(&dc, "svc-writeback", "objectSid").await;
    // What a delegation wizard on the OU writes: Reset Password on descendant users.
    dc.samba_tool(&[
        "dsacl",
        "set",
        &format!("--objectdn={staff}"),
        &format!(
            "--sddl=(OA;CIIO;CR;{};{};{sid})",
            permissions::RESET_PASSWORD,
            permissions::USER_CLASS
        ),
    ])
    .await
    .unwrap();
    let mut cfg = config_as(&dc, "svc-writeback@contoso.test", SVC_PASSWORD);
    cfg.scope_base_dns = vec![staff.clone()];
    let svc = directory(cfg.clone());
    let report = permissions::check(&svc, true).await.unwrap();
    let at = |right| {
        report
            .rights
            .iter()
            .find(|c| c.right == right)
            .map(|c| (c.at.clone(), c.holding))
            .unwrap()
    };
    assert_eq!(at(Right::ResetPassword), (staff.clone(), Holding::Granted));
    assert_eq!(
        at(Right::WriteLockoutTime),
        (staff.clone(), Holding::Missing)
    );
    assert_eq!(
        at(Right::UnexpirePassword),
        (dc.base_dn(), Holding::Granted)
    );
    assert_eq!(report.protected_users, Some(vec![]));

    // Granted at the root, the rest reaches the OU through inheritance: the OU's
    // DACL now carries the inherited copies and the check passes there.
    // The command binds the administrator with the agent's own directory section, so
    // with the same scope.
    let mut admin_cfg = admin_config(&dc);
    admin_cfg.scope_base_dns = vec![staff.clone()];
    let outcome = permissions::grant(&directory(admin_cfg), "svc-writeback@contoso.test")
        .await
        .unwrap();
    // Reset Password, delegated on the OU, is not added again at the root.
    assert_eq!(
        outcome.added,
        vec![Right::WriteLockoutTime, Right::WritePwdLastSet]
    );
    let report = permissions::check(&svc, false).await.unwrap();
    assert!(report.rights_ok(), "{}", report.render());
    assert_eq!(report.protected_users, None);
}
