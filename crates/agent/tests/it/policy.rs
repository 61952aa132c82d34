//! `policy` and the health checks against a real DC: the seed's pitfalls are
//! warned about in plain words, and `permissions_ok` follows the grant.

use std::sync::Arc;
use std::time::Duration;

use writeback_agent::executor::Apply;
use writeback_agent::health::HealthMonitor;
use writeback_agent::permissions;

use crate::permissions::agent_cli;
use crate::{admin_config, config_as, directory, start_dc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_pitfalls_and_permissions_reach_the_health_checks() {
    let dc = start_dc().await;
    dc.set_password_settings(&["--min-pwd-age=2"])
        .await
        .unwrap();
    dc.create_user("svc-writeback", "Svc-Passw0rd-1!")
        .await
        .unwrap();
    let svc = directory(config_as(
        &dc,
        "svc-writeback@contoso.test",
        "Svc-Passw0rd-1!",
    ));

    // The health checks, as the agent's monitor runs them.
    let (mut handle, _task) = HealthMonitor::new(Arc::new(svc.clone())).start();
    let checks = handle.checked().await;
    assert!(!checks.permissions_ok);
    assert_eq!(checks.policy_warnings.len(), 2, "{checks:?}");
    assert!(
        checks.policy_warnings[0].starts_with("the minimum password age is 2 days: "),
        "{checks:?}"
    );
    assert!(checks.policy_warnings[1].contains("does not support the password policy hints"));

    // The command prints the policy and the same warnings; warnings are not failures.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("ca.pem"), dc.ca_pem()).unwrap();
    std::fs::write(tmp.path().join("pw"), "Svc-Passw0rd-1!").unwrap();
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[directory]\nurls = [{:?}]\nca_file = {:?}\nbind_dn = \"svc-writeback@contoso.test\"\n\
             bind_password_file = {:?}\n",
            dc.ldaps_url(),
            tmp.path().join("ca.pem"),
            tmp.path().join("pw")
        ),
    )
    .unwrap();
    let out = agent_cli(&config, &["policy"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for line in [
        "  minimum length     7 characters",
        "  history            24 passwords remembered",
        "  minimum age        2 days",
        "  policy hints       not supported",
        "warning: the minimum password age is 2 days",
        "warning: the domain controller does not support the password policy hints control",
    ] {
        assert!(stdout.contains(line), "{line:?} not in\n{stdout}");
    }

    // A writeback-friendly policy and the rights granted: healthy, no warnings.
    dc.set_password_settings(&["--min-pwd-age=0", "--history-length=0"])
        .await
        .unwrap();
    permissions::grant(&directory(admin_config(&dc)), "svc-writeback@contoso.test")
        .await
        .unwrap();
    let checks = svc.checks().await;
    assert!(checks.permissions_ok, "{checks:?}");
    // An agent bound as Administrator (as the test stack's are) holds every right
    // through BUILTIN\Administrators.
    let admin = directory(admin_config(&dc));
    let report = permissions::check(&admin, false).await.unwrap();
    assert!(report.rights_ok(), "{}", report.render());
    assert!(admin.checks().await.permissions_ok);
    assert!(checks.policy_warnings.is_empty(), "{checks:?}");
    let out = agent_cli(&config, &["policy"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("no warnings"));

    // No DC: not ok, and the warning says why the policy is unknown.
    let mut gone = config_as(&dc, "svc-writeback@contoso.test", "Svc-Passw0rd-1!");
    gone.urls = vec![format!("ldaps://{}:1", dc.ip())];
    gone.timeout = Duration::from_secs(1);
    let checks = directory(gone).checks().await;
    assert!(!checks.permissions_ok);
    assert_eq!(checks.policy_warnings.len(), 1);
    assert!(
        checks.policy_warnings[0]
            .starts_with("the password policy could not be read (DC_UNREACHABLE)"),
        "{checks:?}"
    );
}
