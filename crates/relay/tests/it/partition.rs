//! Partitions, with a [`Partition`] (a proxy that holds every byte, both
//! ways, while cut — a cable pulled, not a connection refused) in one link.
//!
//! An agent partitioned from its relay while it applies operations: its
//! tunnel runs through the partition, a second
//! agent of the domain is connected directly, and the burst mixes resets
//! with password changes (old → new), the operation a failover would turn
//! into a false `WRONG_OLD_PASSWORD`. Writes start 2 ms apart; the cut
//! lands as soon as the relay has sent the agent its first operation (the
//! agent is applying it, and what follows is held in the partition, as
//! are the results), it heals 9 s later (after the relay dropped the
//! silent tunnel at 6 s). The
//! invariants: no password written twice, no change refused because a
//! failover replayed it, every caller finally told the truth (`OK`, once
//! the healed agent's ledger answers).
//!
//! The relay partitioned from the control plane for 8 s (inside the
//! operations' deadline): the dispatches wait in the partition and are
//! answered once it heals, none failed, none applied twice. For 30 s (past
//! the deadline): what expired in the partition is the relay's word, never
//! a recorded outcome; every caller gets a true, final answer — `OK`, some
//! after a retry with the same id, which runs an expired one once.

use std::time::Duration;

use writeback_control_plane::store::{ClientApp, Role};
use writeback_core::ReasonCode;
use writeback_testkit::burst::{self, Burst, PATIENCE, Write};
use writeback_testkit::partition::Partition;
use writeback_testkit::stack::Stack;
use writeback_testkit::{SambaDc, ServiceProcess};

use crate::faults::{free_addr, prepare};

const TENANT: &str = "t1";
const START: &str = "Start-Pass-1!";
/// Fewer bytes than any operation sent down a tunnel (a signed request in
/// a TLS record), more than a heartbeat or an HTTP/2 control frame.
const OPERATION_BYTES: usize = 256;

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
    // The control plane learns whom each user's name denotes (a lookup an
    // agent answers) with its first operation on them: an unlock each, so
    // that the burst's changes send the agents nothing but the writes.
    for i in 0..USERS {
        let unlock = Write::Unlock { upn: burst.upn(i) };
        let id = uuid::Uuid::new_v4().to_string();
        let (reason, _) =
            burst::write_until_known(std::slice::from_ref(&helpdesk), &unlock, &id, PATIENCE).await;
        assert_eq!(reason, ReasonCode::Ok, "warm-up unlock of {}", burst.upn(i));
    }
    burst.remember(&dc).await;
    let (answers, took) = burst
        .run_with(|i| vec![users.get(i).unwrap_or(&helpdesk).clone()], async {
            // Cut once the relay has sent the cut-off agent an operation
            // (a heartbeat is far smaller; the changes come first, and
            // only an administrator's reset is preceded by a lookup), so
            // that whatever the timing, the partition holds a write.
            let cut = link
                .cut_after_downstream(OPERATION_BYTES, Duration::from_secs(10))
                .await;
            assert!(cut.is_some(), "no operation reached the cut-off agent");
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

/// A burst through a relay that was cut off from the control plane, once
/// every invariant held.
struct CutOff {
    /// Healed; kept, since the control plane reaches the relay through it.
    _link: Partition,
    dc: SambaDc,
    /// Kept: the control plane and the agent live as long as it.
    _stack: Stack,
    relay: ServiceProcess,
    burst: Burst,
    answers: Vec<burst::Answer>,
    tally: burst::Tally,
    took: Duration,
}

/// The relay cut off from the control plane (the control plane's link to
/// it runs through a [`Partition`]; the agent dials the relay directly)
/// 40 ms into a burst of `users` resets, healed `cut` later.
async fn relay_cut_off(users: usize, cut: Duration) -> CutOff {
    crate::init_tracing();
    writeback_identity::install_crypto_provider();
    let dc = burst::fault_dc("contoso.test").await;
    let mut burst = Burst::create(&dc, "link", users, START).await;
    let addr = free_addr();
    let link = Partition::start(addr.parse().unwrap()).await.unwrap();
    let via_link = link.url();
    let mut stack = Stack::start_configured(TENANT, 0, None, |c| c.relay_urls = vec![via_link])
        .await
        .unwrap();
    let mut relay = prepare(&stack, stack.dir.path(), &addr, "relay-1");
    relay.start().await.unwrap();
    stack.add_domain(&dc).await.unwrap();
    stack
        .start_agent_via(
            &dc,
            &dc.admin_dn(),
            dc.admin_password(),
            Some(vec![format!("https://{addr}")]),
        )
        .await
        .unwrap();
    stack.until_online(dc.domain(), 1).await.unwrap();
    let helpdesk = stack.helpdesk(dc.domain()).await.unwrap();
    burst.remember(&dc).await;
    let (answers, took) = burst
        .run(&helpdesk, async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            link.cut();
            tokio::time::sleep(cut).await;
            link.heal();
        })
        .await;
    let tally = burst.check(&dc, &stack.cp.store, TENANT, &answers).await;
    eprintln!(
        "relay cut off from the control plane for {cut:?}: {users} resets, {} OK, failed \
         {:?}, {} callers retried, 0 double applies, in {took:?}",
        tally.ok, tally.failed, tally.retried
    );
    CutOff {
        _link: link,
        dc,
        _stack: stack,
        relay,
        burst,
        answers,
        tally,
        took,
    }
}

/// Cut for 8 s, inside the operations' 20 s deadline: the calls the
/// control plane had sent wait in the partition and are answered once it
/// heals — every reset succeeds in its caller's first attempt, each
/// password written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_cut_off_from_the_control_plane_within_the_deadline_fails_nothing() {
    const CUT: Duration = Duration::from_secs(8);
    let mut run = relay_cut_off(12, CUT).await;
    assert!(run.tally.failed.is_empty(), "{:?}", run.answers);
    assert_eq!(run.tally.retried, 0, "{:?}", run.answers);
    // The partition held operations: the burst ended only after it healed.
    assert!(run.took > CUT, "the cut held nothing: {:?}", run.took);
    run.relay.kill();
}

/// Cut for 30 s, past the operations' 20 s deadline: what the control plane
/// had sent expires in the partition, and the relay says so — its word,
/// not an agent's, so it is never recorded as the outcome nor reopens the
/// id on its own (issue 25, item 6): the caller is told the outcome is
/// not known yet, the control plane asks the agent's signed ledger, and a
/// retry with the same id, once the agent said "never seen" past the
/// expiry and the clock margin, runs it — once. Every caller ends `OK`,
/// nothing applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_cut_off_past_the_deadline_ends_true_and_a_retry_with_the_id_runs_it() {
    const CUT: Duration = Duration::from_secs(30);
    let mut run = relay_cut_off(8, CUT).await;
    assert!(run.took > CUT, "the cut held nothing: {:?}", run.took);
    assert!(
        run.tally.failed.is_empty(),
        "a relay's refusal became an outcome: {:?}",
        run.answers
    );
    assert!(
        run.tally.retried > 0,
        "nothing expired in the partition: {:?}",
        run.answers
    );
    run.burst.assert_each_written_once(&run.dc).await;
    run.relay.kill();
}
