//! One operation is one connected OpenTelemetry trace across the control
//! plane, the relay and the agent, continuing the caller's `traceparent`,
//! exported by each service's real OTLP exporter to a collector; and the
//! operation record keeps the trace id, the rule that allowed it and where
//! the time went.

use std::collections::HashSet;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use writeback_proto::v1 as pb;
use writeback_testkit::SambaDc;
use writeback_testkit::otlp::{Collector, ReceivedSpan};
use writeback_testkit::stack::Stack;

fn reset(upn: &str, password: &str) -> pb::ResetPasswordRequest {
    pb::ResetPasswordRequest {
        user: Some(pb::UserRef {
            by: Some(pb::user_ref::By::Upn(upn.into())),
        }),
        new_password: password.into(),
        ..Default::default()
    }
}

fn named<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect()
}

fn one<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    let found = named(spans, service, name);
    assert_eq!(found.len(), 1, "one {service} {name:?} span in {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_operation_is_one_connected_trace_across_the_three_services() {
    let collector = Collector::start().await.unwrap();
    let dc = SambaDc::start("contoso.test")
        .await
        .expect("samba DC (scripts/install-deps.sh)");
    dc.create_user("alice", "Start-Passw0rd!").await.unwrap();
    let endpoint = collector.endpoint();
    let mut stack = Stack::start_configured("t1", 1, None, |c| {
        c.tracing.otlp_endpoint = Some(endpoint);
    })
    .await
    .unwrap();
    stack.add_domain(&dc).await.unwrap();
    let agent_id = stack
        .start_agent(&dc, &dc.admin_dn(), dc.admin_password())
        .await
        .unwrap();
    let admin = stack.admin().unwrap();

    // The caller's own span: the trace continues it.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = "00f067aa0ba902b7";
    let mut request = admin.request(reset("alice@contoso.test", "Traced-Passw0rd-1"));
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(format!("00-{trace_id}-{caller_span}-01")).unwrap(),
    );
    let answer = admin
        .passwords()
        .reset_password(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.outcome.as_ref().unwrap().reason_code, "OK");
    assert!(
        dc.try_bind("alice@contoso.test", "Traced-Passw0rd-1")
            .await
            .unwrap()
    );

    // The record: its trace, its rule, its hops.
    let record = admin
        .audit()
        .get_operation(admin.request(pb::GetOperationRequest {
            operation_id: answer.operation_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.trace_id, trace_id);
    assert_eq!(
        record.rule,
        "an administrator may reset an end user's password from the portal or the Graph API"
    );
    assert_eq!(record.agent_id, agent_id);
    assert_eq!(record.relay_id, "relay-1");
    assert_eq!(record.dc_url, dc.ldaps_url());
    assert!(record.directory_duration_ms > 0, "{record:?}");
    assert!(
        record.duration_ms >= record.relay_duration_ms
            && record.relay_duration_ms >= record.agent_duration_ms
            && record.agent_duration_ms >= record.directory_duration_ms,
        "each hop includes the ones below it: {record:?}"
    );

    // The help desk's view of it.
    let shown = crate::oidc::ctl(
        &stack,
        None,
        &["operation", "show", &answer.operation_id],
        "",
    )
    .await
    .unwrap();
    for part in [
        format!("trace     {trace_id}"),
        "relay relay-1".to_owned(),
        format!("agent {agent_id}"),
        format!("DC {}", dc.ldaps_url()),
        "outcome   succeeded OK".to_owned(),
        "allowed   an administrator may reset".to_owned(),
    ] {
        assert!(shown.contains(&part), "{part:?} missing in:\n{shown}");
    }

    // The trace: every service's spans, one tree under the caller's span.
    stack.flush_traces().await;
    let complete = |spans: &[ReceivedSpan]| {
        !named(spans, "writeback-agent", "ldap modify").is_empty()
            && !named(spans, "writeback-control-plane", "writeback.operation").is_empty()
            && !named(spans, "writeback-relay", "writeback.relay.route").is_empty()
    };
    let spans = collector
        .wait_for_trace(&trace_id, Duration::from_secs(20), complete)
        .await;
    assert!(complete(&spans), "incomplete trace: {spans:#?}");

    let operation = one(&spans, "writeback-control-plane", "writeback.operation");
    assert_eq!(operation.parent_span_id, caller_span);
    assert_eq!(
        operation.attribute("writeback.operation_id"),
        Some(answer.operation_id.as_str())
    );
    assert_eq!(operation.attribute("writeback.reason_code"), Some("OK"));
    let dispatch = one(&spans, "writeback-control-plane", "writeback.dispatch");
    assert_eq!(dispatch.parent_span_id, operation.span_id);
    let route = one(&spans, "writeback-relay", "writeback.relay.route");
    assert_eq!(route.parent_span_id, dispatch.span_id);
    assert_eq!(
        route.attribute("writeback.agent_id"),
        Some(agent_id.as_str())
    );
    let apply = one(&spans, "writeback-agent", "writeback.agent.apply");
    assert_eq!(apply.parent_span_id, route.span_id);
    let dc_url = dc.ldaps_url();
    let modify = one(&spans, "writeback-agent", "ldap modify");
    assert_eq!(modify.parent_span_id, apply.span_id);
    assert_eq!(modify.attribute("server.address"), Some(dc_url.as_str()));
    let searches = named(&spans, "writeback-agent", "ldap search");
    assert!(!searches.is_empty(), "the agent's searches are traced");
    assert!(searches.iter().all(|s| s.parent_span_id == apply.span_id));

    // Connected: every span's parent is the caller's span or another span of
    // the trace, and nesting holds in time.
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for s in &spans {
        assert!(
            s.parent_span_id == caller_span || ids.contains(s.parent_span_id.as_str()),
            "span {} ({}) hangs off an unknown parent",
            s.name,
            s.service
        );
        assert!(s.start_unix_nanos <= s.end_unix_nanos, "{s:?}");
    }
    assert!(operation.start_unix_nanos <= apply.start_unix_nanos);
    assert!(apply.end_unix_nanos <= operation.end_unix_nanos);

    // No traceparent: the control plane starts a new trace of its own, and a
    // failure is marked on it.
    let missing = admin
        .passwords()
        .reset_password(admin.request(reset("nobody@contoso.test", "Traced-Passw0rd-2")))
        .await
        .unwrap_err();
    let failed = writeback_core::failure_of(&missing);
    assert_eq!(failed.reason.as_str(), "USER_NOT_FOUND");
    let record = admin
        .audit()
        .get_operation(
            admin.request(pb::GetOperationRequest {
                operation_id: failed
                    .operation_id
                    .clone()
                    .expect("the failure names its operation"),
            }),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.trace_id.len(), 32);
    assert_ne!(record.trace_id, trace_id);
    stack.flush_traces().await;
    let spans = collector
        .wait_for_trace(&record.trace_id, Duration::from_secs(20), |s| {
            !named(s, "writeback-agent", "writeback.agent.apply").is_empty()
        })
        .await;
    let operation = one(&spans, "writeback-control-plane", "writeback.operation");
    assert_eq!(operation.parent_span_id, "", "a root span");
    assert_eq!(
        operation.attribute("writeback.reason_code"),
        Some("USER_NOT_FOUND")
    );
    let apply = one(&spans, "writeback-agent", "writeback.agent.apply");
    assert_eq!(
        apply.attribute("writeback.reason_code"),
        Some("USER_NOT_FOUND")
    );
}
