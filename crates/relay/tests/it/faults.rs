//! Fault injection against the real parts: one of two relays (the relay
//! binary as a child process) killed with SIGKILL mid-burst, and unknown
//! outcomes resolved from the agents' ledgers; a control plane and agents
//! bound to a real Samba AD DC over LDAPS. (The only relay killed and
//! started again is `forests`' test, with every kind of operation in two
//! forests.) Every invariant is checked against the directory itself: the
//! new password binds, and the `unicodePwd` version in the user's
//! replication metadata rose by exactly one (applied once, never twice).
//! The burst's schedule is fixed (no randomness): operation i starts at
//! i × 2 ms, the kill lands 40 ms in.

use std::path::Path;
use std::time::{Duration, Instant};

use writeback_control_plane::reconcile;
use writeback_control_plane::store::{self, ClientApp, OperationState};
use writeback_core::ReasonCode;
use writeback_identity::SpiffeId;
use writeback_proto::v1 as pb;
use writeback_testkit::burst::{self, Burst};
use writeback_testkit::stack::{Client, Stack};
use writeback_testkit::{SambaDc, ServiceProcess};

const TENANT: &str = "t1";
const START: &str = "Start-Pass-1!";

/// Writes the relay's certificate (issued by the stack's CA), key and
/// config into `dir`; the relay `relay_id` listens on `addr` and expects a
/// heartbeat every 2 s (silent for 6 s: the tunnel is dropped).
pub(crate) fn prepare(stack: &Stack, dir: &Path, addr: &str, relay_id: &str) -> ServiceProcess {
    let dir = &dir.join(relay_id);
    std::fs::create_dir_all(dir).unwrap();
    let id = SpiffeId::Relay {
        tenant: TENANT.to_owned(),
        relay_id: relay_id.to_owned(),
    };
    let (chain, key) = stack
        .cp
        .ca
        .issue_service(&id, &["localhost".to_owned()], &[[127, 0, 0, 1].into()])
        .unwrap();
    std::fs::write(dir.join("relay.pem"), chain).unwrap();
    std::fs::write(dir.join("ca.pem"), stack.cp.ca.cert_pem()).unwrap();
    let key_file = dir.join("relay.key");
    std::fs::write(&key_file, key).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "relay_id = \"{relay_id}\"\ntenant = \"{TENANT}\"\nlisten = \"{addr}\"\n\
             cert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n\
             heartbeat_interval_seconds = 2\n",
            dir.join("relay.pem").display(),
            key_file.display(),
            dir.join("ca.pem").display(),
        ),
    )
    .unwrap();
    ServiceProcess::new(
        env!("CARGO_BIN_EXE_writeback-relay"),
        ["--config".into(), config.into_os_string()],
        addr,
    )
}

pub(crate) fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A stack whose one relay, `relay-1`, is a child process, started.
pub(crate) async fn stack_and_child_relay() -> (Stack, ServiceProcess) {
    crate::init_tracing();
    writeback_identity::install_crypto_provider();
    let addr = free_addr();
    let url = format!("https://{addr}");
    let stack = Stack::start_configured(TENANT, 0, None, |c| c.relay_urls = vec![url])
        .await
        .unwrap();
    let mut relay = prepare(&stack, stack.dir.path(), &addr, "relay-1");
    relay.start().await.unwrap();
    (stack, relay)
}

/// A stack whose one relay is the child process; one agent on `dc`.
async fn stack_with_child_relay(dc: &SambaDc) -> (Stack, ServiceProcess, Client) {
    let (mut stack, relay) = stack_and_child_relay().await;
    stack.add_domain(dc).await.unwrap();
    stack
        .start_agent(dc, &dc.admin_dn(), dc.admin_password())
        .await
        .unwrap();
    let helpdesk = stack.helpdesk(dc.domain()).await.unwrap();
    // The control plane follows the relay's presence: it knows the agent.
    stack.until_online(dc.domain(), 1).await.unwrap();
    (stack, relay, helpdesk)
}

/// One of two relays is killed mid-burst and stays down: its agent's
/// operations are answered through the other relay (by the other agent,
/// or by the same agent once it has moved there), every reset succeeds
/// in the caller's first attempt, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_two_relays_killed_mid_burst_fails_nothing() {
    const USERS: usize = 16;
    crate::init_tracing();
    writeback_identity::install_crypto_provider();
    let dc = burst::fault_dc("contoso.test").await;
    let mut burst = Burst::create(&dc, "two", USERS, START).await;
    // relay-x (a child process, killed) first, relay-1 (in-process) second.
    let addr = free_addr();
    let doomed = format!("https://{addr}");
    let mut stack = Stack::start_configured(TENANT, 1, None, |c| {
        c.relay_urls.insert(0, doomed.clone());
    })
    .await
    .unwrap();
    let survivor = stack.relays[0].url.clone();
    let mut relay = prepare(&stack, stack.dir.path(), &addr, "relay-x");
    relay.start().await.unwrap();
    stack.add_domain(&dc).await.unwrap();
    // One agent on each relay; each knows the other relay as its next one.
    for urls in [
        vec![doomed.clone(), survivor.clone()],
        vec![survivor.clone(), doomed.clone()],
    ] {
        stack
            .start_agent_via(&dc, &dc.admin_dn(), dc.admin_password(), Some(urls))
            .await
            .unwrap();
    }
    stack.until_online(dc.domain(), 2).await.unwrap();
    let helpdesk = stack.helpdesk(dc.domain()).await.unwrap();
    burst.remember(&dc).await;
    let (answers, took) = burst
        .run(&helpdesk, async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            relay.kill();
        })
        .await;
    let tally = burst
        .assert_applied_once(&dc, &stack.cp.store, TENANT, &answers)
        .await;
    let mut via = std::collections::BTreeMap::<String, usize>::new();
    for row in burst::records(&stack.cp.store, TENANT, &answers).await {
        *via.entry(row.relay_id.unwrap_or_default()).or_default() += 1;
    }
    eprintln!(
        "one of two relays killed: {USERS} resets, {} OK, {} retried by a caller, \
         answered via {via:?}, in {took:?}",
        tally.ok, tally.retried
    );
    // The control plane retried within the deadline: no caller had to.
    assert_eq!(tally.retried, 0, "{answers:?}");
    assert!(
        took < Duration::from_secs(20),
        "within the deadline: {took:?}"
    );
    // It comes back later, and serves again.
    relay.start().await.unwrap();
}

/// Unknown outcomes become known from the agent's ledger: an unlock the
/// agent applied (its answer "lost") is recorded as succeeded by the agent
/// that did it; one no agent ever received is `NOT_APPLIED` once expired,
/// and a retry with its id then runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_outcomes_are_reconciled_from_the_agents_ledgers() {
    let dc = SambaDc::start("contoso.test")
        .await
        .expect("samba DC (scripts/install-deps.sh)");
    dc.create_user("dora", START).await.unwrap();
    let (stack, _relay, helpdesk) = stack_with_child_relay(&dc).await;
    let store = &stack.cp.store;
    let upn = "dora@contoso.test";

    // Applied by the agent, then recorded as unknown (its answer lost;
    // recorded after the dispatch, so the background reconciler cannot ask
    // before the agent has it).
    let applied = uuid::Uuid::new_v4().to_string();
    let now = store.now_ms();
    let op = pb::OperationRequest {
        operation_id: applied.clone(),
        tenant: TENANT.into(),
        domain: "contoso.test".into(),
        kind: pb::OperationKind::Unlock as i32,
        target: Some(pb::UserRef {
            by: Some(pb::user_ref::By::Upn(upn.into())),
        }),
        expires_at: Some(writeback_core::operation::to_timestamp(
            time::OffsetDateTime::now_utc() + Duration::from_secs(20),
        )),
        ..Default::default()
    };
    let answer = stack
        .cp
        .dispatcher
        .dispatch(op, Duration::from_secs(10))
        .await
        .unwrap();
    let result = answer.result.unwrap();
    assert_eq!(result.outcome.unwrap().reason_code, "OK");
    let agent = result.agent_id;
    record_unknown(store, &applied, now, now + 20_000).await;

    // Never sent anywhere; it expires in a second (the agent's ledger
    // reaches back to before it was accepted).
    let lost = uuid::Uuid::new_v4().to_string();
    record_unknown(store, &lost, now, now + 1_000).await;

    // Every control plane also reconciles in the background; either may
    // record the truth first.
    reconcile::reconcile_due(&stack.cp).await.unwrap();
    let row = settled(&stack, &applied).await;
    assert_eq!(row.state, OperationState::Succeeded, "{row:?}");
    assert_eq!(row.agent_id.as_deref(), Some(agent.as_str()));
    // "Never seen" is final only once the expiry, plus a margin for the
    // agents' clocks, has passed.
    let row = store.get_operation(TENANT, &lost).await.unwrap().unwrap();
    assert!(row.outcome_unknown(), "{row:?}");
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    reconcile::reconcile_due(&stack.cp).await.unwrap();
    let row = settled(&stack, &lost).await;
    assert_eq!(row.reason_code.as_deref(), Some("NOT_APPLIED"), "{row:?}");

    // A retry with the id of the operation known not to have run runs it.
    let unlocked = helpdesk
        .passwords()
        .unlock_account(helpdesk.request(pb::UnlockAccountRequest {
            user: Some(pb::UserRef {
                by: Some(pb::user_ref::By::Upn(upn.into())),
            }),
            operation_id: lost.clone(),
            ..Default::default()
        }))
        .await;
    assert!(unlocked.is_ok(), "{unlocked:?}");
    let row = store.get_operation(TENANT, &lost).await.unwrap().unwrap();
    assert_eq!(row.state, OperationState::Succeeded, "{row:?}");
}

/// The record of `id` once its outcome is known (within 10 s).
async fn settled(stack: &Stack, id: &str) -> store::OperationRow {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = stack
            .cp
            .store
            .get_operation(TENANT, id)
            .await
            .unwrap()
            .unwrap();
        if !row.outcome_unknown() {
            return row;
        }
        assert!(Instant::now() < deadline, "still unknown: {row:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An unlock of dora recorded as pending, then closed as an unknown outcome.
async fn record_unknown(store: &store::Store, id: &str, created: i64, deadline: i64) {
    store
        .insert_operation(&store::NewOperation {
            id: id.to_owned(),
            tenant: TENANT.into(),
            kind: "unlock".into(),
            target: "upn:dora@contoso.test".into(),
            domain: "contoso.test".into(),
            principal: "helpdesk@contoso.test".into(),
            client_app: ClientApp::Portal,
            created_at_ms: created,
            deadline_at_ms: deadline,
            trace_id: String::new(),
            rule: String::new(),
        })
        .await
        .unwrap();
    let fin = store::Finish {
        state: OperationState::Failed,
        reason_code: ReasonCode::Timeout,
        message: "lost".into(),
        agent_id: None,
        relay_id: None,
        finished_at_ms: created,
        agent_duration_ms: None,
        hops: store::Hops::default(),
    };
    store
        .finish_operation_then(TENANT, id, &fin, Some(created))
        .await
        .unwrap();
}
