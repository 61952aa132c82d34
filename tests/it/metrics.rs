//! Every service's Prometheus metrics after real traffic: resets through the
//! control plane, a relay and an agent to a real Samba DC, scraped over HTTP
//! from the same `/metrics` endpoint the services serve on `metrics_listen`.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use writeback_proto::v1 as pb;
use writeback_testkit::SambaDc;
use writeback_testkit::stack::Stack;

/// `GET /metrics` from `registry`, served by writeback-core's listener.
async fn scrape(registry: Arc<Registry>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(writeback_core::metrics::serve(listener, registry, async {
        let _ = stopped.await;
    }));
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    let _ = stop.send(());
    let _ = server.await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("application/openmetrics-text"),
        "{response}"
    );
    response
}

/// The value of the sample whose line starts with `series ` (name and labels).
pub(crate) fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_counts_real_operations() {
    let dc = SambaDc::start("contoso.test")
        .await
        .expect("samba DC (scripts/install-deps.sh)");
    dc.create_user("alice", "Start-Passw0rd!").await.unwrap();
    let mut stack = Stack::start("t1", 1).await.unwrap();
    stack.add_domain(&dc).await.unwrap();
    stack
        .start_agent(&dc, &dc.admin_dn(), dc.admin_password())
        .await
        .unwrap();
    let admin = stack.admin().unwrap();
    let reset = |upn: &str| pb::ResetPasswordRequest {
        user: Some(pb::UserRef {
            by: Some(pb::user_ref::By::Upn(upn.into())),
        }),
        new_password: "Metrics-Passw0rd-1".into(),
        ..Default::default()
    };
    admin
        .passwords()
        .reset_password(admin.request(reset("alice@contoso.test")))
        .await
        .unwrap();
    let missing = admin
        .passwords()
        .reset_password(admin.request(reset("nobody@contoso.test")))
        .await;
    assert!(missing.is_err());
    let intruder = stack.client_with_token("wbt1.not-a-token").unwrap();
    assert!(
        intruder
            .passwords()
            .reset_password(intruder.request(reset("alice@contoso.test")))
            .await
            .is_err()
    );

    let cp = scrape(stack.cp.metrics.registry.clone()).await;
    let ops = "writeback_operations_total{kind=\"reset\",domain=\"contoso.test\",origin=\"portal\"";
    assert_eq!(value(&cp, &format!("{ops},reason=\"OK\"}}")), 1.0);
    assert_eq!(
        value(&cp, &format!("{ops},reason=\"USER_NOT_FOUND\"}}")),
        1.0
    );
    assert_eq!(value(&cp, "writeback_authentication_failures_total"), 1.0);
    assert_eq!(
        value(
            &cp,
            "writeback_operation_duration_seconds_count{kind=\"reset\"}"
        ),
        2.0
    );
    assert!(
        value(
            &cp,
            "writeback_agent_duration_seconds_count{kind=\"reset\"}"
        ) >= 1.0
    );
    assert!(value(&cp, "writeback_store_read_duration_seconds_count") >= 2.0);
    // Both operations reached the agent: each was recorded, then finished.
    for stage in ["record", "finish"] {
        assert_eq!(
            value(
                &cp,
                &format!("writeback_store_write_duration_seconds_count{{stage=\"{stage}\"}}")
            ),
            2.0,
            "{stage}"
        );
    }
    assert_eq!(value(&cp, "writeback_throttled_total"), 0.0);
    assert!(value(&cp, "writeback_process_resident_memory_bytes") > 0.0);

    // An administrator's reset of another user is preceded by a lookup of
    // whom the target names (lifecycle/identify.rs), which also links the
    // person's aliases; for the user no agent found, the throttle asks once
    // more before its first reset. Five dispatches, each delivered and
    // answered: alice's lookup and reset, nobody's two lookups and reset.
    let relay = scrape(stack.relays[0].relay.metrics().registry.clone()).await;
    assert_eq!(
        value(&relay, "writeback_relay_dispatches_total{reason=\"OK\"}"),
        5.0
    );
    assert_eq!(value(&relay, "writeback_relay_tunnels_open"), 1.0);
    assert_eq!(
        value(
            &relay,
            "writeback_relay_agents_online{tenant=\"t1\",domain=\"contoso.test\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&relay, "writeback_relay_dispatch_duration_seconds_count"),
        5.0
    );

    let agent = scrape(stack.agent_metrics(0).expect("the agent's registry")).await;
    let ops = "writeback_agent_operations_total{kind=\"reset\"";
    assert_eq!(value(&agent, &format!("{ops},reason=\"OK\"}}")), 1.0);
    assert_eq!(
        value(&agent, &format!("{ops},reason=\"USER_NOT_FOUND\"}}")),
        1.0
    );
    let lookups = "writeback_agent_operations_total{kind=\"user_lookup\"";
    assert_eq!(value(&agent, &format!("{lookups},reason=\"OK\"}}")), 1.0);
    assert_eq!(
        value(&agent, &format!("{lookups},reason=\"USER_NOT_FOUND\"}}")),
        2.0
    );
    assert_eq!(
        value(
            &agent,
            "writeback_agent_ldap_request_duration_seconds_count{op=\"modify\"}"
        ),
        1.0
    );
    assert!(
        value(
            &agent,
            "writeback_agent_ldap_request_duration_seconds_count{op=\"connect\"}"
        ) >= 1.0
    );
    assert!(value(&agent, "writeback_agent_ldap_sessions{state=\"idle\"}") >= 1.0);
    assert_eq!(
        value(&agent, "writeback_agent_ldap_sessions{state=\"in_use\"}"),
        0.0
    );
    assert_eq!(
        value(
            &agent,
            &format!("writeback_agent_dc_up{{dc=\"{}\"}}", dc.ldaps_url())
        ),
        1.0
    );
    drop(stack);
}
