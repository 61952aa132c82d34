//! The agent's only DC partitioned from it mid-burst: the agent reaches the
//! DC's LDAPS port through a [`Partition`] (a proxy on the DC's own address
//! that holds every byte, both ways, while cut — a cable pulled, not a DC
//! that dies), so reads and writes in flight fall silent rather than fail.
//! The schedule: resets start 2 ms apart; the cut lands as soon as the
//! first is in the directory; it heals 12 s later (past the agent's 10 s
//! LDAP timeout, inside the callers' patience). Each caller retries its id
//! until the answer is definite; afterwards every invariant is checked
//! against the DC: one final record each, agreeing with the directory,
//! nothing written twice — a write the partition held and delivered late
//! is found applied, never reported failed. (It found a deadlock in the
//! session pool: see `pool::tests::a_session_given_back_wakes_a_wait_for_a_new_one`.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use writeback_testkit::burst::{self, Burst};
use writeback_testkit::partition::Partition;
use writeback_testkit::stack::Stack;

const TENANT: &str = "t1";
const START: &str = "Start-Pass-1!";
const USERS: usize = 12;
const CUT: Duration = Duration::from_secs(12);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dc_cut_off_mid_burst_gets_every_caller_a_true_answer() {
    crate::init_tracing();
    writeback_identity::install_crypto_provider();
    let dc = burst::fault_dc("contoso.test").await;
    let mut burst = Burst::create(&dc, "dccut", USERS, START).await;
    let link = Partition::start_on(dc.ip(), SocketAddr::from((dc.ip(), 636)))
        .await
        .unwrap();
    let mut stack = Stack::start(TENANT, 1).await.unwrap();
    stack.add_domain(&dc).await.unwrap();
    let via_link = format!("ldaps://{}", link.addr());
    stack
        .start_agent_configured(&dc, &dc.admin_dn(), dc.admin_password(), |c| {
            c.urls = vec![via_link];
        })
        .await
        .unwrap();
    stack.until_online(dc.domain(), 1).await.unwrap();
    let helpdesk = stack.helpdesk(dc.domain()).await.unwrap();
    burst.remember(&dc).await;
    let (answers, took) = burst
        .run(&helpdesk, async {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !burst.applied(&dc, 0).await {
                assert!(Instant::now() < deadline, "the first reset never landed");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            link.cut();
            tokio::time::sleep(CUT).await;
            link.heal();
        })
        .await;
    let tally = burst.check(&dc, &stack.cp.store, TENANT, &answers).await;
    eprintln!(
        "DC cut off for {CUT:?}: {USERS} resets, {} OK, failed {:?}, {} callers retried, \
         0 double applies, in {took:?}",
        tally.ok, tally.failed, tally.retried
    );
    assert!(tally.ok > 0, "the DC applied nothing before the cut");
    assert!(took > CUT, "the cut held nothing: {took:?}");
}
