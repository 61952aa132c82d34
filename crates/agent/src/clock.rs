//! The agent's clock against its relay's.
//!
//! An operation carries the control plane's expiry; the agent refuses an
//! expired one. That check is only as good as the agent's clock: one running
//! a minute slow would take a replayed, long-expired operation for a fresh
//! one. So the agent estimates how far its clock is from the relay's — at the
//! Welcome from the Hello's round trip (the relay's time against the midpoint
//! of the round trip, as NTP does, so the error is at most half the round
//! trip), and again at every health probe from the probe's send time (the
//! error is the one-way delay) — reports the offset in its health, and
//! refuses every operation with `CLOCK_SKEW` while the offset exceeds
//! [`ClockCheck::max_offset`] ([`DEFAULT_MAX_CLOCK_OFFSET`] unless the
//! config says otherwise: `max_clock_offset_seconds`).
//!
//! That estimate is the relay's word, and a relay may lie or send no time
//! (which leaves the offset unknown, and nothing is refused on its account),
//! so it is only a first, early check. The reference the agent trusts is
//! the control plane's own clock, signed into every operation
//! (`OperationRequest.issued_at`, covered by the signature; a relay can
//! delay it but not change it) and kept by [`SignedTime`]:
//!
//! - an operation the control plane signed more than the tolerance in the
//!   agent's future means the agent's clock is behind — the direction in
//!   which it would take an expired operation for a live one — and every
//!   operation is refused with `CLOCK_SKEW` until it is not (a delay in
//!   transit only makes an operation look older, never newer, so this
//!   cannot be faked by a relay holding operations back);
//! - "now", for the expiry check, is the later of the agent's clock and the
//!   newest signed time seen plus the time elapsed since (on the monotonic
//!   clock): once the agent has seen the control plane's time, a slow clock
//!   cannot make it take an expired operation for a live one.
//!
//! So an agent applies an operation at most the tolerance after its expiry
//! by the control plane's clock; the tolerance is capped at
//! [`writeback_core::operation::MAX_CLOCK_SKEW`], which the control plane
//! waits past an operation's expiry before it concludes that no agent ran it.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prost_types::Timestamp;
use writeback_core::{Failure, ReasonCode};

/// The offset tolerated by default: far below an operation's lifetime (30 s
/// by default), far above what synchronised clocks differ by. Also the most
/// an agent may be configured to tolerate
/// ([`writeback_core::operation::MAX_CLOCK_SKEW`]).
pub const DEFAULT_MAX_CLOCK_OFFSET: Duration = writeback_core::operation::MAX_CLOCK_SKEW;

/// How the agent reads and judges its clock.
#[derive(Debug, Clone, Copy)]
pub struct ClockCheck {
    /// Beyond this offset from the relay's clock, operations are refused.
    pub max_offset: Duration,
    /// The agent's clock (injectable for tests).
    pub now: fn() -> SystemTime,
}

impl Default for ClockCheck {
    fn default() -> Self {
        ClockCheck {
            max_offset: DEFAULT_MAX_CLOCK_OFFSET,
            now: SystemTime::now,
        }
    }
}

/// The last estimate of the agent's clock minus the relay's.
#[derive(Debug, Default)]
pub struct ClockOffset {
    offset_ms: Mutex<Option<i64>>,
}

impl ClockOffset {
    /// The estimate, milliseconds (agent minus relay); `None` until a relay
    /// sent its time.
    pub fn get(&self) -> Option<i64> {
        *self
            .offset_ms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, offset_ms: i64) {
        *self
            .offset_ms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(offset_ms);
    }

    /// From a Welcome: the Hello left at `sent`, the Welcome arrived at
    /// `received` (both agent clock), the relay stamped it `relay_time`.
    pub fn from_round_trip(&self, sent: SystemTime, received: SystemTime, relay_time: &Timestamp) {
        let (Some(sent), Some(received), Some(relay)) =
            (millis(sent), millis(received), timestamp_millis(relay_time))
        else {
            return;
        };
        let midpoint = sent + (received - sent) / 2;
        self.set(midpoint - relay);
    }

    /// From a probe the relay stamped `relay_time`, received at `received`.
    pub fn from_one_way(&self, received: SystemTime, relay_time: &Timestamp) {
        if let (Some(received), Some(relay)) = (millis(received), timestamp_millis(relay_time)) {
            self.set(received - relay);
        }
    }

    /// `Err(CLOCK_SKEW)` when the offset is known and beyond `max`.
    pub fn check(&self, max: Duration) -> Result<(), Failure> {
        let Some(offset) = self.get() else {
            return Ok(());
        };
        let max_ms = i64::try_from(max.as_millis()).unwrap_or(i64::MAX);
        if offset.abs() <= max_ms {
            return Ok(());
        }
        let direction = if offset > 0 { "ahead of" } else { "behind" };
        Err(Failure::new(
            ReasonCode::ClockSkew,
            format!(
                "the agent's clock is {:.1} s {direction} the relay's, more than the {} s it \
                 tolerates, so it cannot tell whether an operation has expired; nothing was \
                 changed — synchronise the clocks (NTP) of the agent's and the relay's hosts",
                offset.unsigned_abs() as f64 / 1000.0,
                max.as_secs()
            ),
        ))
    }
}

/// The control plane's time as the signed operations show it (see the
/// module docs).
#[derive(Debug, Default)]
pub struct SignedTime {
    newest: Mutex<Option<(i64, std::time::Instant)>>,
}

impl SignedTime {
    /// Takes the signed `issued` time of an operation whose signature was
    /// verified, received when the agent's clock read `wall`: `CLOCK_SKEW`
    /// when the control plane signed it more than `max` in the agent's
    /// future (the agent's clock is behind). Remembered either way.
    pub fn observe(
        &self,
        issued: &Timestamp,
        wall: SystemTime,
        max: Duration,
    ) -> Result<(), Failure> {
        let (Some(issued), Some(wall)) = (timestamp_millis(issued), millis(wall)) else {
            return Err(Failure::new(
                ReasonCode::InvalidArgument,
                "the operation's signed time is not a valid time; nothing was changed",
            ));
        };
        {
            let mut newest = self
                .newest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            let later = match *newest {
                Some((ms, at)) => issued > ms + elapsed_ms(at, now),
                None => true,
            };
            if later {
                *newest = Some((issued, now));
            }
        }
        let max_ms = i64::try_from(max.as_millis()).unwrap_or(i64::MAX);
        let behind = issued.saturating_sub(wall);
        if behind <= max_ms {
            return Ok(());
        }
        Err(Failure::new(
            ReasonCode::ClockSkew,
            format!(
                "the agent's clock is at least {:.1} s behind the control plane's (by the \
                 signed time of an operation), more than the {} s it tolerates, so it cannot \
                 tell whether an operation has expired; nothing was changed — synchronise the \
                 clock (NTP) of the agent's host",
                behind as f64 / 1000.0,
                max.as_secs()
            ),
        ))
    }

    /// "Now" for an expiry check, Unix milliseconds: the later of the
    /// agent's clock (`wall`) and the newest signed time seen plus the time
    /// elapsed since it arrived.
    pub fn now_ms(&self, wall: SystemTime) -> i64 {
        let wall = millis(wall).unwrap_or(0);
        let newest = *self
            .newest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match newest {
            Some((ms, at)) => {
                wall.max(ms.saturating_add(elapsed_ms(at, std::time::Instant::now())))
            }
            None => wall,
        }
    }
}

fn elapsed_ms(since: std::time::Instant, now: std::time::Instant) -> i64 {
    i64::try_from(now.saturating_duration_since(since).as_millis()).unwrap_or(i64::MAX)
}

fn millis(t: SystemTime) -> Option<i64> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

fn timestamp_millis(t: &Timestamp) -> Option<i64> {
    t.seconds
        .checked_mul(1000)?
        .checked_add(i64::from(t.nanos) / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> Timestamp {
        Timestamp {
            seconds: ms / 1000,
            nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap(),
        }
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn the_offset_is_measured_against_the_round_trips_midpoint() {
        let c = ClockOffset::default();
        assert_eq!(c.get(), None);
        assert!(
            c.check(Duration::from_secs(1)).is_ok(),
            "unknown: no refusal"
        );
        // Hello at 1_000_000, Welcome back at 1_000_200; the relay stamped
        // 1_000_100 - 60_000: the agent is 60 s ahead.
        c.from_round_trip(at(1_000_000), at(1_000_200), &ts(1_000_100 - 60_000));
        assert_eq!(c.get(), Some(60_000));
        let f = c.check(DEFAULT_MAX_CLOCK_OFFSET).unwrap_err();
        assert_eq!(f.reason, ReasonCode::ClockSkew);
        assert!(
            f.message.contains("60.0 s ahead of the relay's"),
            "{}",
            f.message
        );
        assert!(f.message.contains("10 s"), "{}", f.message);
        // A probe later: 4.5 s behind is within 10 s.
        c.from_one_way(at(2_000_000), &ts(2_004_500));
        assert_eq!(c.get(), Some(-4_500));
        assert!(c.check(DEFAULT_MAX_CLOCK_OFFSET).is_ok());
        let f = c.check(Duration::from_secs(4)).unwrap_err();
        assert!(f.message.contains("4.5 s behind"), "{}", f.message);
        // Exactly at the limit is tolerated.
        c.from_one_way(at(3_000_000), &ts(2_990_000));
        assert!(c.check(DEFAULT_MAX_CLOCK_OFFSET).is_ok());
    }

    #[test]
    fn signed_time_catches_a_slow_clock_and_holds_now_up() {
        let t = SignedTime::default();
        let max = DEFAULT_MAX_CLOCK_OFFSET;
        // The agent reads 1_000_000; the control plane signed at 1_005_000:
        // 5 s behind, tolerated.
        t.observe(&ts(1_005_000), at(1_000_000), max).unwrap();
        // "Now" is the signed time, not the slow clock.
        assert!(t.now_ms(at(1_000_000)) >= 1_005_000);
        assert!(t.now_ms(at(1_000_000)) < 1_006_000);
        // A faster clock wins.
        assert_eq!(t.now_ms(at(2_000_000)), 2_000_000);
        // 60 s behind: refused, and says which way.
        let f = t.observe(&ts(1_060_000), at(1_000_000), max).unwrap_err();
        assert_eq!(f.reason, ReasonCode::ClockSkew);
        assert!(f.message.contains("60.0 s behind"), "{}", f.message);
        assert!(
            t.now_ms(at(0)) >= 1_060_000,
            "the newest signed time is kept"
        );
        // An old operation (delayed in transit, or replayed) never moves
        // "now" back, and is not a skew.
        t.observe(&ts(900_000), at(1_000_000), max).unwrap();
        assert!(t.now_ms(at(0)) >= 1_060_000);
    }

    #[test]
    fn nonsense_times_leave_the_estimate_alone() {
        let c = ClockOffset::default();
        c.from_one_way(
            at(1_000),
            &Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            },
        );
        assert_eq!(c.get(), None);
        c.from_round_trip(
            SystemTime::UNIX_EPOCH - Duration::from_secs(1),
            at(1),
            &ts(0),
        );
        assert_eq!(c.get(), None);
    }
}
