//! Warm sessions against a real DC, watched through [`StallProxy`]: one connection
//! serves every operation, health check and policy report; a warm reset, change or
//! unlock is three LDAP requests; concurrency is bounded; a DC that drops every
//! connection costs nothing but a reconnect; a rotated service-account password is
//! read from its file, and a rejected one is not tried again until it changes.

use std::time::Duration;

use writeback_agent::directory::{ResetOptions, Target};
use writeback_core::ReasonCode;

use crate::proxy::StallProxy;
use crate::{admin_config, config_as, directory, guid_of, pw, refused, show_attr, start_dc, upn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_warm_session_serves_every_operation_and_survives_a_dc_restart() {
    let dc = start_dc().await;
    for sam in ["alice", "bob", "carol"] {
        dc.create_user(sam, "Start-Passw0rd!").await.unwrap();
    }
    dc.set_password_settings(&["--min-pwd-age=0"])
        .await
        .unwrap();
    let reset = ResetOptions::default();
    let proxy = StallProxy::start(dc.ip(), None).await;
    let mut cfg = admin_config(&dc);
    cfg.urls = vec![proxy.url()];
    cfg.max_sessions = 2;
    let d = directory(cfg);

    // Cold: connect, bind, read the domain's facts, then the operation.
    d.reset_password(&upn(&dc, "alice"), &pw("Alice-Passw0rd-1"), reset)
        .await
        .unwrap();
    assert_eq!(proxy.connections(), 1);

    // Warm: the user search, the tokenGroups search, the modify.
    let requests = |before: usize| proxy.requests() - before;
    let before = proxy.requests();
    d.reset_password(&upn(&dc, "bob"), &pw("Bob-Passw0rd-1"), reset)
        .await
        .unwrap();
    assert_eq!(requests(before), 3, "a warm reset");
    let before = proxy.requests();
    d.unlock(&upn(&dc, "bob")).await.unwrap();
    assert_eq!(requests(before), 3, "a warm unlock");
    let before = proxy.requests();
    d.change_password(
        &upn(&dc, "bob"),
        &pw("Bob-Passw0rd-1"),
        &pw("Bob-Passw0rd-2"),
    )
    .await
    .unwrap();
    assert_eq!(requests(before), 3, "a warm change");
    let by_guid = Target::ObjectGuid(guid_of(&dc, "bob").await);
    let before = proxy.requests();
    d.reset_password(&by_guid, &pw("Bob-Passw0rd-3"), reset)
        .await
        .unwrap();
    assert_eq!(requests(before), 3, "a warm reset by objectGUID");
    assert!(
        dc.try_bind("bob@contoso.test", "Bob-Passw0rd-3")
            .await
            .unwrap()
    );

    // The health check and the policy report use the same session.
    let before = proxy.requests();
    let health = d.check_reachable().await;
    assert!(health[0].1.is_ok(), "{health:?}");
    assert_eq!(requests(before), 1, "a health check is one rootDSE read");
    let report = d.domain_report().await.unwrap();
    assert_eq!(report.policy.min_length, 7);
    assert_eq!(proxy.connections(), 1);

    // Eight resets at once, two sessions at most.
    let targets: Vec<Target> = (0..8).map(|_| upn(&dc, "alice")).collect();
    let resets = targets.iter().enumerate().map(|(i, t)| {
        let d = d.clone();
        async move {
            d.reset_password(t, &pw(&format!("Alice-Passw0rd-{i}x")), reset)
                .await
        }
    });
    for r in futures::future::join_all(resets).await {
        r.unwrap();
    }
    assert_eq!(
        proxy.connections(),
        2,
        "max_sessions bounds the connections"
    );

    // The DC drops every connection (a restart): the next operation reconnects and
    // succeeds, once.
    proxy.sever();
    d.reset_password(&upn(&dc, "carol"), &pw("Carol-Passw0rd-1"), reset)
        .await
        .unwrap();
    assert!(
        dc.try_bind("carol@contoso.test", "Carol-Passw0rd-1")
            .await
            .unwrap()
    );
    assert_eq!(proxy.connections(), 3);
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_is_read_from_its_file_and_a_rejected_one_is_not_retried() {
    let dc = start_dc().await;
    dc.create_user("svc-rot", "Svc-Passw0rd-1!").await.unwrap();
    // Bad passwords are counted only where accounts can be locked out.
    dc.set_password_settings(&["--account-lockout-threshold=5"])
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("bind-password");
    std::fs::write(&file, "Svc-Passw0rd-1!\n").unwrap();
    let proxy = StallProxy::start(dc.ip(), None).await;
    let mut cfg = config_as(&dc, "svc-rot@contoso.test", "Svc-Passw0rd-1!");
    cfg.urls = vec![proxy.url()];
    cfg.bind_password_file = Some(file.clone());
    let d = directory(cfg);
    d.domain_report().await.unwrap();

    // The password changes in the directory; the warm session is still bound.
    dc.samba_tool(&[
        "user",
        "setpassword",
        "svc-rot",
        "--newpassword=Svc-Passw0rd-2!",
    ])
    .await
    .unwrap();
    d.domain_report().await.unwrap();
    assert_eq!(proxy.connections(), 1);

    // The file gets a mistyped password and the DC drops the session: one rejected
    // bind...
    std::fs::write(&file, "Svc-Passw0rd-2?\n").unwrap();
    proxy.sever();
    let e = d.domain_report().await.unwrap_err();
    assert_eq!(e.reason(), ReasonCode::AgentBindFailed, "{e}");
    let connections = proxy.connections();
    assert_eq!(show_attr(&dc, "svc-rot", "badPwdCount").await, "1");

    // ...and no other while the password is unchanged, whoever asks: each attempt
    // would count towards the account's lockout.
    refused(
        d.unlock(&upn(&dc, "svc-rot")).await,
        ReasonCode::AgentBindFailed,
    );
    let health = d.check_reachable().await;
    assert_eq!(
        health[0].1.as_ref().unwrap_err().reason(),
        ReasonCode::AgentBindFailed
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.connections(), connections, "no bind was attempted");
    assert_eq!(show_attr(&dc, "svc-rot", "badPwdCount").await, "1");

    // The right password reaches the file: used at once, no restart.
    std::fs::write(&file, "Svc-Passw0rd-2!\n").unwrap();
    d.domain_report().await.unwrap();
    assert_eq!(proxy.connections(), connections + 1);
    d.close().await;
}

/// `writeback_agent_dc_up` tells which DC answered: one that refuses
/// connections is 0 (and skipped, the operation served by the next), the real
/// one 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dc_that_refuses_connections_is_down_in_the_metrics() {
    let dc = start_dc().await;
    dc.create_user("dave", "Start-Passw0rd!").await.unwrap();
    // A port nothing listens on: the connection is refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("ldaps://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let mut cfg = admin_config(&dc);
    cfg.urls.insert(0, dead.clone());
    let d = directory(cfg);
    let mut registry = prometheus_client::registry::Registry::with_prefix("writeback");
    d.register_metrics(&mut registry);
    let scrape = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    };
    let up = |text: &str, url: &str| {
        let series = format!("writeback_agent_dc_up{{dc=\"{url}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    let before = scrape();
    assert_eq!(up(&before, &dead), "1", "no attempt yet");

    d.reset_password(
        &upn(&dc, "dave"),
        &pw("Dave-Passw0rd-1"),
        ResetOptions::default(),
    )
    .await
    .unwrap();
    let after = scrape();
    assert_eq!(up(&after, &dead), "0");
    assert_eq!(up(&after, &dc.ldaps_url()), "1");
    d.close().await;
}
