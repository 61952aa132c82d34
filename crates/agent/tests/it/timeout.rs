//! A domain controller that stops answering after the agent has connected and bound:
//! the per-step timeout ends the wait with `TIMEOUT`, nothing is retried on another
//! DC, and nothing is written.
//!
//! The stall comes from [`crate::proxy::StallProxy`], which withholds one chosen LDAP
//! request. Nothing waits on the clock: the proxy reports the request it withheld,
//! and the test checks it.

use std::time::{Duration, Instant};

use writeback_agent::directory::{DirectoryError, ResetOptions};
use writeback_core::ReasonCode;

use crate::proxy::{Event, StallProxy};
use crate::{admin_config, directory, pw, refused, start_dc, upn};

const TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dc_that_stalls_after_the_bind_times_out_and_nothing_is_written() {
    let dc = start_dc().await;
    let alice = dc.create_user("alice", "Start-Passw0rd!").await.unwrap();
    dc.create_user("bob", "Start-Passw0rd!").await.unwrap();
    let reset = ResetOptions::default();

    // Pass-through: how many requests a reset on a fresh handle makes (it reads the
    // domain first). The last is the unbind, so the modify is the one before it.
    let mut cfg = admin_config(&dc);
    cfg.timeout = TIMEOUT;
    let requests = crate::proxy::requests_of_a_fresh_reset(&dc, &cfg, "bob").await;
    assert!(
        dc.try_bind("bob@contoso.test", "Bob-Passw0rd-1")
            .await
            .unwrap()
    );
    // bind, at least one search, modify, unbind
    assert!(requests >= 4, "{requests} requests");
    let modify = requests - 1;

    // The first request after the bind (a search) is withheld: TIMEOUT, not
    // DC_UNREACHABLE, and the user is untouched.
    let mut proxy = StallProxy::start(dc.ip(), Some(2)).await;
    cfg.urls = vec![proxy.url()];
    let started = Instant::now();
    let result = directory(cfg.clone())
        .reset_password(&upn(&dc, "alice"), &pw("Alice-Passw0rd-1"), reset)
        .await;
    let took = started.elapsed();
    assert_eq!(proxy.next().await, Event::Withheld { request: 2 });
    let e = refused(result, ReasonCode::Timeout);
    assert!(
        matches!(e, DirectoryError::Timeout { op: "search", after, .. } if after == TIMEOUT),
        "{e:?}"
    );
    assert_eq!(
        e.public_message(),
        "the domain controller did not answer within 2 seconds; nothing was changed"
    );
    assert!(
        took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(10),
        "{took:?}"
    );
    assert!(dc.try_bind(&alice, "Start-Passw0rd!").await.unwrap());

    // The modify itself is withheld, with the real DC listed next: TIMEOUT, outcome
    // unknown as far as the agent can tell, and no retry elsewhere — the DC never
    // saw the write and no other DC was asked, so the old password still works.
    let mut proxy = StallProxy::start(dc.ip(), Some(modify)).await;
    cfg.urls = vec![proxy.url(), dc.ldaps_url()];
    let started = Instant::now();
    let result = directory(cfg.clone())
        .reset_password(&upn(&dc, "alice"), &pw("Alice-Passw0rd-1"), reset)
        .await;
    let took = started.elapsed();
    assert_eq!(proxy.next().await, Event::Withheld { request: modify });
    let e = refused(result, ReasonCode::Timeout);
    assert!(
        matches!(e, DirectoryError::Timeout { op: "modify", after, .. } if after == TIMEOUT),
        "{e:?}"
    );
    assert_eq!(
        e.public_message(),
        "the domain controller did not answer within 2 seconds while the change was being \
         written; its outcome is unknown — check the account before retrying"
    );
    assert!(
        took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(10),
        "{took:?}"
    );
    assert!(dc.try_bind(&alice, "Start-Passw0rd!").await.unwrap());
    assert!(!dc.try_bind(&alice, "Alice-Passw0rd-1").await.unwrap());
}
