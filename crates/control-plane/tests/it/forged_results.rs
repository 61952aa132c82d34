//! A compromised relay forging results: the control plane in-process over
//! SQLite or PostgreSQL, a real relay, a real agent bound to a real Samba
//! AD DC, and between the control plane and the relay the rig's fake relay
//! playing the compromised one: it forwards (a genuine run) or answers `OK`
//! itself — unsigned, signed with a key of its own, signed with another
//! enrolled agent's key, or the agent's genuine signed `OK` of an earlier
//! operation moved onto this one. No
//! forged `OK` is recorded: the operation stays `TIMEOUT` (unknown, for the
//! reconciler), the directory shows the password unchanged (LDAPS bind and
//! the `unicodePwd` write count), and every forgery lands in the security
//! trail and the `results_refused` metric. The genuine run through the same
//! path succeeds end to end.

use std::sync::Arc;
use std::time::Duration;

use writeback_agent::directory::{Directory, DirectoryConfig};
use writeback_control_plane::store::{AuditFilter, OperationState, Page};
use writeback_core::ReasonCode;
use writeback_testkit::SambaDc;
use writeback_testkit::stack::start_relay;

use crate::harness::TestDb;
use crate::support::{FakeAgent, Forgery, Mode, Options, TENANT, TestCp};

const START: &str = "Start-Pass-1!";

async fn a_relay_cannot_forge_an_agents_result(db: &TestDb) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()),
        ))
        .with_test_writer()
        .try_init();
    let dc = SambaDc::start("contoso.test")
        .await
        .expect("samba DC (scripts/install-deps.sh)");
    let dn = dc.create_user("forged", START).await.unwrap();
    let upn = "forged@contoso.test";
    let t = TestCp::start(
        db,
        Options {
            throttle_per_user_per_hour: 0,
            operation_timeout_seconds: 3,
            // Each forged reset brings several refused results (the
            // dispatch, then the outcome queries until the deadline); the
            // trail's rate limit (tested elsewhere) would hold most back.
            security_events: writeback_control_plane::config::SecurityEventsConfig {
                per_key_per_window: 1000,
                per_tenant_per_window: 1000,
                ..Default::default()
            },
            ..Options::default()
        },
    )
    .await;
    let admin = t.admin();
    admin.add_domain("contoso.test").await;
    admin.set_all_toggles(true).await;

    // The real relay behind the compromised one, and a real agent on it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = start_relay(
        &t.cp.ca,
        TENANT,
        "relay-1",
        listener,
        Duration::from_secs(5),
        Default::default(),
    )
    .unwrap();
    t.relay.forward_to(&t.cp.ca, &relay.url);
    let state_dir = t.dir.path().join("agent");
    let token = t.enrollment_token("contoso.test").await;
    let enrollment = writeback_agent::enroll::enroll(&t.url, &token, &state_dir)
        .await
        .unwrap();
    assert!(enrollment.result_signing_key_registered);
    // The control plane tells agents its own relay URL (the fake one,
    // which serves no tunnel): this agent dials the real relay.
    let state_file = state_dir.join("state.toml");
    let mut state: toml::Table =
        toml::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    state.insert(
        "relay_urls".into(),
        toml::Value::Array(vec![toml::Value::String(relay.url.clone())]),
    );
    std::fs::write(&state_file, toml::to_string(&state).unwrap()).unwrap();
    let directory = Directory::new(DirectoryConfig::new(
        vec![dc.ldaps_url()],
        dc.ca_pem(),
        dc.admin_dn(),
        dc.admin_password().to_owned().into(),
    ))
    .unwrap();
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let mut agent =
        writeback_agent::runtime::start(&state_dir, Arc::new(directory), 4, None, async move {
            let _ = rx.wait_for(|v| *v).await;
        })
        .await
        .unwrap();
    agent.wait_connected(Duration::from_secs(30)).await.unwrap();
    // The fake relay reports the real agent online, as the real one does:
    // the control plane binds each write to an agent presence names.
    t.relay.connect(FakeAgent {
        agent_id: enrollment.agent_id.clone(),
        domain: "contoso.test".into(),
        health: None,
    });
    // Another agent of the domain, whose key the compromised relay holds.
    t.enroll_agent("contoso.test", "0.1.0").await;
    t.relay.answer_as(&enrollment.agent_id);

    // A genuine reset through the honest relay first (its signed answer
    // is what the replay forgery reuses).
    t.relay.set_mode(Mode::Forward);
    genuine(&t, &dc, &dn, upn, "Genuine-Pass-0!", &enrollment.agent_id).await;

    let writes = dc.password_writes(&dn).await.unwrap();
    for (i, (forgery, detail)) in [
        (Forgery::Unsigned, "unsigned"),
        (Forgery::OwnKey, "unknown_key"),
        (Forgery::FakeAgentKey, "unknown_key"),
        (Forgery::Replay, "bad_signature"),
    ]
    .into_iter()
    .enumerate()
    {
        t.relay.set_mode(Mode::Forge(forgery));
        let password = format!("Forged-Pass-{i}!");
        let id = uuid::Uuid::new_v4().to_string();
        let answer = admin.reset_with_id(upn, &password, &id).await;
        assert_eq!(answer, Err(ReasonCode::Timeout), "{forgery:?}");
        let row =
            t.cp.store
                .get_operation(TENANT, &id)
                .await
                .unwrap()
                .unwrap();
        assert_ne!(row.state, OperationState::Succeeded, "{forgery:?}");
        assert_eq!(row.reason_code.as_deref(), Some("TIMEOUT"), "{forgery:?}");
        // The directory: never applied.
        assert!(!dc.try_bind(&dn, &password).await.unwrap(), "{forgery:?}");
        assert!(
            dc.try_bind(&dn, "Genuine-Pass-0!").await.unwrap(),
            "{forgery:?}"
        );
        assert_eq!(
            dc.password_writes(&dn).await.unwrap(),
            writes,
            "{forgery:?}"
        );
        // The security trail names the forgery, the agent claimed and the
        // operation; the metric counts it.
        t.cp.security.flush(false).await;
        let events =
            t.cp.store
                .list_security_events(TENANT, &AuditFilter::default(), Page::first(1000))
                .await
                .unwrap()
                .0;
        let event = events
            .iter()
            .find(|e| {
                e.kind == "result_refused"
                    && e.detail == detail
                    && e.operation == "reset"
                    && e.details["operation_id"] == id.as_str()
            })
            .unwrap_or_else(|| panic!("{forgery:?}: no {detail} event in {events:#?}"));
        assert_eq!(event.reason_code, "RESULT_UNAUTHENTICATED");
        assert_eq!(event.principal, format!("agent:{}", enrollment.agent_id));
        assert_eq!(event.target, format!("upn:{upn}"));
        assert_eq!(event.details["claimed_reason_code"], "OK");
        // The outcome queries it forged too (the ledger's "finished, OK").
        let queries: Vec<_> = t
            .relay
            .dispatched()
            .into_iter()
            .filter(|o| o.operation_id == id)
            .map(|o| o.kind)
            .collect();
        assert!(
            events.iter().any(|e| e.kind == "result_refused"
                && e.operation == "outcome_query"
                && e.details["operation_id"] == id.as_str()),
            "{forgery:?}: {queries:?} {events:#?}"
        );
        let mut metrics = String::new();
        prometheus_client::encoding::text::encode(&mut metrics, &t.cp.metrics.registry).unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("writeback_results_refused_total{")
                    && l.contains(&format!("detail=\"{detail}\""))),
            "{metrics}"
        );
    }

    // The genuine path through the same (now honest) relay: applied and
    // recorded, the agent's signature verified.
    t.relay.set_mode(Mode::Forward);
    genuine(&t, &dc, &dn, upn, "Genuine-Pass-1!", &enrollment.agent_id).await;
    assert_eq!(dc.password_writes(&dn).await.unwrap(), writes + 1);

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent.task).await;
    relay.stop().await;
    t.stop().await;
}

/// A reset to `password` through the relay: answered OK, recorded as
/// succeeded by `agent`, and the DC takes the password.
async fn genuine(t: &TestCp, dc: &SambaDc, dn: &str, upn: &str, password: &str, agent: &str) {
    let id = t
        .admin()
        .reset_with_id(upn, password, &uuid::Uuid::new_v4().to_string())
        .await
        .unwrap();
    let row =
        t.cp.store
            .get_operation(TENANT, &id)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(row.state, OperationState::Succeeded);
    assert_eq!(row.agent_id.as_deref(), Some(agent));
    assert!(dc.try_bind(dn, password).await.unwrap());
}

both_backends!(a_relay_cannot_forge_an_agents_result);
