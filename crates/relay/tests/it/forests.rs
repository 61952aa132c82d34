//! Fault injection with operations of every kind in two forests: resets,
//! changes (old → new), forced changes of expired passwords and unlocks of
//! locked-out accounts, in `contoso.test` and `fabrikam.test` (two Samba AD
//! DCs, each with its own agent), all through one relay — the
//! `writeback-relay` binary as a child process — that is SIGKILLed mid-burst
//! and started again. The schedule is fixed: in each forest, operation i
//! starts at i × 2 ms; the kill lands 100 ms in, the relay is back 1.5 s
//! later. Every invariant is checked against each forest's DC (see
//! `writeback_testkit::burst`): one final record per operation, the record
//! agrees with the directory (the new password binds and its version rose
//! by exactly one, a forced change left the password unexpired, an unlocked
//! account has `lockoutTime` 0 and its password untouched), nothing applied
//! twice, and every caller was told the record's reason.

use std::time::Duration;

use writeback_control_plane::store::{ClientApp, Role};
use writeback_testkit::burst::{self, Burst, Kind};
use writeback_testkit::stack::{Client, Stack};

use crate::faults::stack_and_child_relay;

const TENANT: &str = "t1";
const START: &str = "Start-Pass-1!";
/// Users per forest: two of each kind.
const USERS: usize = 8;

/// The clients that send user `i`'s operation: the user's own for a
/// change, the forest's help desk for a reset or an unlock.
async fn callers(stack: &Stack, burst: &Burst, helpdesk: &Client) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..burst.len() {
        clients.push(if burst.is_self_service(i) {
            stack
                .client(&burst.upn(i), Role::User, ClientApp::Portal)
                .await
                .unwrap()
        } else {
            helpdesk.clone()
        });
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_killed_mid_burst_of_every_kind_in_two_forests_fails_nothing() {
    writeback_identity::install_crypto_provider();
    let (contoso, fabrikam) = tokio::join!(
        burst::every_kind_dc("contoso.test"),
        burst::every_kind_dc("fabrikam.test")
    );
    let mut bursts = Vec::new();
    for (dc, prefix) in [(&contoso, "mix"), (&fabrikam, "fab")] {
        bursts.push(
            Burst::create(dc, prefix, USERS, START)
                .await
                .with_every_kind(),
        );
    }
    let (mut stack, mut relay) = stack_and_child_relay().await;
    let mut clients = Vec::new();
    for (dc, burst) in [&contoso, &fabrikam].into_iter().zip(&mut bursts) {
        stack.add_domain(dc).await.unwrap();
        stack
            .start_agent(dc, &dc.admin_dn(), dc.admin_password())
            .await
            .unwrap();
        stack.until_online(dc.domain(), 1).await.unwrap();
        let helpdesk = stack.helpdesk(dc.domain()).await.unwrap();
        clients.push(callers(&stack, burst, &helpdesk).await);
        burst.prepare(dc).await;
        burst.remember(dc).await;
    }
    let interrupt = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        relay.kill();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        relay.start().await.unwrap();
    };
    let ((contoso_answers, took_c), (fabrikam_answers, took_f)) = tokio::join!(
        bursts[0].run_with(|i| vec![clients[0][i].clone()], interrupt),
        bursts[1].run_with(|i| vec![clients[1][i].clone()], async {}),
    );
    let took = took_c.max(took_f);
    for ((dc, burst), answers) in [&contoso, &fabrikam]
        .into_iter()
        .zip(&bursts)
        .zip([&contoso_answers, &fabrikam_answers])
    {
        let tally = burst
            .assert_applied_once(dc, &stack.cp.store, TENANT, answers)
            .await;
        let kinds: Vec<Kind> = (0..burst.len()).map(|i| burst.kind(i)).collect();
        eprintln!(
            "relay killed, {}: {USERS} operations {kinds:?}, {} OK, {} retried by a caller, \
             in {took:?}",
            dc.domain(),
            tally.ok,
            tally.retried
        );
        // The control plane retried within the deadline: no caller had to.
        assert_eq!(tally.retried, 0, "{answers:?}");
    }
    assert!(
        took < Duration::from_secs(20),
        "within the deadline: {took:?}"
    );
    // Not a burst that finished before the kill: operations waited for the
    // relay to come back.
    assert!(
        took > Duration::from_millis(1600),
        "the kill interrupted nothing: {took:?}"
    );
    relay.kill();
}
