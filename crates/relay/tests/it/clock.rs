//! An agent whose clock is far from the relay's cannot trust an operation's
//! expiry: it reports the offset in its health (measured from the relay's
//! time in the Welcome and in each probe) and refuses every operation with
//! CLOCK_SKEW, applying nothing; an agent within the tolerance works and
//! reports a small offset.

use std::time::{Duration, SystemTime};

use writeback_agent::clock::{ClockCheck, DEFAULT_MAX_CLOCK_OFFSET};
use writeback_proto::v1 as pb;

use crate::*;

fn a_minute_ahead() -> SystemTime {
    SystemTime::now() + Duration::from_secs(60)
}

fn five_seconds_behind() -> SystemTime {
    SystemTime::now() - Duration::from_secs(5)
}

async fn offsets(cp: &RelayDispatchClient<Channel>) -> Vec<(String, Option<i64>, u64)> {
    let mut out: Vec<_> = cp
        .clone()
        .probe_health(pb::ProbeHealthRequest {
            tenant: TENANT.into(),
            domain: CONTOSO.into(),
            timeout_ms: 5_000,
        })
        .await
        .unwrap()
        .into_inner()
        .agents
        .into_iter()
        .map(|a| {
            let report = a.report.expect("a health report");
            (
                a.identity.unwrap().agent_id,
                report.clock_offset_ms,
                report.max_clock_offset_ms,
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn an_agent_with_a_skewed_clock_refuses_and_says_so() {
    let pki = Pki::new(TENANT);
    let relay = TestRelay::start(&pki, "relay-1", RelaySettings::default()).await;
    let cp = pki.control_plane(&relay.url);
    let skewed = TestApplier::new(Mode::Answer);
    let mut fast = TestAgent::start_with_clock(
        &pki,
        &[&relay.url],
        CONTOSO,
        "fast",
        skewed.clone(),
        ClockCheck {
            now: a_minute_ahead,
            ..ClockCheck::default()
        },
    );
    fast.connected().await;

    let r = dispatch(
        &cp,
        unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let o = r.outcome.as_ref().unwrap();
    assert_eq!(o.reason_code, "CLOCK_SKEW", "{o:?}");
    assert!(!o.applied);
    assert!(o.message.contains("ahead of the relay's"), "{o:?}");
    assert!(o.message.contains("nothing was changed"), "{o:?}");
    assert_eq!(skewed.count(), 0, "nothing reached the directory");
    let [(id, offset, max)] = offsets(&cp).await.try_into().unwrap();
    assert_eq!(id, "fast");
    let offset = offset.expect("an offset");
    assert!((59_000..61_000).contains(&offset), "{offset}");
    assert_eq!(max, DEFAULT_MAX_CLOCK_OFFSET.as_millis() as u64);
    fast.stop().await;

    // Five seconds behind is within the default ten: it works, and says so.
    let fine = TestApplier::new(Mode::Answer);
    let mut slow = TestAgent::start_with_clock(
        &pki,
        &[&relay.url],
        CONTOSO,
        "slow",
        fine.clone(),
        ClockCheck {
            now: five_seconds_behind,
            ..ClockCheck::default()
        },
    );
    slow.connected().await;
    relay.wait_tunnels(1).await;
    let r = dispatch(
        &cp,
        unlock(CONTOSO, "alice@contoso.test", Duration::from_secs(10)),
    )
    .await
    .unwrap();
    assert_eq!(reason(&r), "OK");
    assert_eq!(fine.count(), 1);
    let [(id, offset, _)] = offsets(&cp).await.try_into().unwrap();
    assert_eq!(id, "slow");
    let offset = offset.expect("an offset");
    assert!((-6_000..-4_000).contains(&offset), "{offset}");
    slow.stop().await;
}
