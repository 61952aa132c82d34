//! An agent partitioned from its relay while it applies operations: its
//! tunnel runs through a [`Partition`] (a proxy that holds every byte, both
//! ways, while cut — a cable pulled, not a connection refused), a second
//! agent of the domain is connected directly, and the burst mixes resets
//! with password changes (old → new), the operation a failover would turn
//! into a false `WRONG_OLD_PASSWORD`. The schedule is fixed: writes start
//! 2 ms apart, the cut lands 40 ms in (the agent has operations and is
//! applying them; their results are held in the partition), it heals 9 s
//! later (after the relay dropped the silent tunnel at 6 s). The
//! invariants: no password written twice, no change refused because a
//! failover replayed it, every caller finally told the truth (`OK`, once
//! the healed agent's ledger answers).

use std::time::Duration;

use writeback_control_plane::store::{ClientApp, Role};
use writeback_core::ReasonCode;
use writeback_testkit::burst::{self, Burst};
use writeback_testkit::partition::Partition;
use writeback_testkit::stack::Stack;

use crate::faults::{free_addr, prepare};

const TENANT: &str = "t1";
const START: &str = "Start-Pass-1!";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_agent_never_causes_a_double_apply_or_a_false_failure() {
    const USERS: usize = 16;
    const CHANGES: usize = 6;
    crate::init_tracing();
    writeback_identity::install_crypto_provider();
    let dc = burst::fault_dc("contoso.test").await;
    let mut burst = Burst::create(&dc, "cut", USERS, START)
        .await
        .with_changes(CHANGES);
    // One relay (a child process: a 6 s heartbeat limit).
    let addr = free_addr();
    let url = format!("https://{addr}");
    let mut stack = Stack::start_configured(TENANT, 0, None, |c| c.relay_urls = vec![url.clone()])
        .await
        .unwrap();
    let mut relay = prepare(&stack, stack.dir.path(), &addr, "relay-1");
    relay.start().await.unwrap();
    stack.add_domain(&dc).await.unwrap();
    let link = Partition::start(addr.parse().unwrap()).await.unwrap();
    let cut_off = stack
        .start_agent_via(
            &dc,
            &dc.admin_dn(),
            dc.admin_password(),
            Some(vec![link.url()]),
        )
        .await
        .unwrap();
    stack
        .start_agent(&dc, &dc.admin_dn(), dc.admin_password())
        .await
        .unwrap();
    stack.until_online(dc.domain(), 2).await.unwrap();
    let helpdesk = stack.helpdesk(dc.domain()).await.unwrap();
    let mut users = Vec::new();
    for i in 0..CHANGES {
        users.push(
            stack
                .client(&burst.upn(i), Role::User, ClientApp::Portal)
                .await
                .unwrap(),
        );
    }
    burst.remember(&dc).await;
    let (answers, took) = burst
        .run_with(|i| vec![users.get(i).unwrap_or(&helpdesk).clone()], async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            link.cut();
            tokio::time::sleep(Duration::from_secs(9)).await;
            link.heal();
        })
        .await;
    assert!(
        answers
            .iter()
            .all(|(.., reason, _)| *reason != ReasonCode::WrongOldPassword),
        "a change reported as a wrong old password: {answers:?}"
    );
    let tally = burst
        .assert_applied_once(&dc, &stack.cp.store, TENANT, &answers)
        .await;
    // The partition held operations: some were applied by the cut-off
    // agent, and their callers learnt it only once it healed.
    let by_cut_off = burst::records(&stack.cp.store, TENANT, &answers)
        .await
        .iter()
        .filter(|row| row.agent_id.as_deref() == Some(cut_off.as_str()))
        .count();
    eprintln!(
        "agent partition: {USERS} writes ({CHANGES} changes), {} OK, {by_cut_off} applied \
         by the cut-off agent, {} callers retried, 0 double applies, in {took:?}",
        tally.ok, tally.retried
    );
    assert!(
        by_cut_off > 0,
        "the partition held no operation: {answers:?}"
    );
    relay.kill();
}
