//! Bounds on what one source address can hold of a server: [`SourceSlots`]
//! counts what is open (connections, handshakes) in all and per source, and
//! refuses a new one past either cap, so a single address cannot take all
//! of a server's places. Sources are compared by [`source_of`]: an IPv4
//! address as it is, an IPv6 address by its /64 (one subscriber usually has
//! a whole /64, and could otherwise take a new address per connection).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The key one source is counted under: an IPv4 address (an IPv4-mapped
/// IPv6 address as the IPv4 one), or an IPv6 address's /64 prefix.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// Places of one kind (connections, handshakes): at most `total` taken at
/// once, and at most `per_source` by one [`source_of`]. Cheap to share
/// behind an `Arc`; a place is given back when its [`SourceSlot`] drops.
#[derive(Debug)]
pub struct SourceSlots {
    total: usize,
    per_source: usize,
    taken: Mutex<Taken>,
}

#[derive(Debug, Default)]
struct Taken {
    all: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Why a place was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every place is taken.
    Total,
    /// The source holds its share already.
    Source,
}

/// One place taken by a source; given back on drop.
#[derive(Debug)]
pub struct SourceSlot {
    slots: Arc<SourceSlots>,
    source: IpAddr,
}

impl SourceSlots {
    /// At most `total` places (at least 1), at most `per_source` (at least 1)
    /// for one source.
    pub fn new(total: usize, per_source: usize) -> Arc<SourceSlots> {
        Arc::new(SourceSlots {
            total: total.max(1),
            per_source: per_source.max(1),
            taken: Mutex::new(Taken::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Taken> {
        self.taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for `ip`, or why not.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Result<SourceSlot, Refused> {
        let source = source_of(ip);
        let mut taken = self.lock();
        if taken.all >= self.total {
            return Err(Refused::Total);
        }
        let mine = taken.by_source.entry(source).or_insert(0);
        if *mine >= self.per_source {
            return Err(Refused::Source);
        }
        *mine += 1;
        taken.all += 1;
        Ok(SourceSlot {
            slots: self.clone(),
            source,
        })
    }

    /// Places taken: (in all, by `ip`'s source).
    pub fn taken(&self, ip: IpAddr) -> (usize, usize) {
        let taken = self.lock();
        let mine = taken.by_source.get(&source_of(ip)).copied().unwrap_or(0);
        (taken.all, mine)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut taken = self.slots.lock();
        taken.all = taken.all.saturating_sub(1);
        if let Some(mine) = taken.by_source.get_mut(&self.source) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                taken.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_source_gets_its_share_and_the_others_the_rest() {
        let slots = SourceSlots::new(4, 2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = slots.take(a).unwrap();
        let _a2 = slots.take(a).unwrap();
        assert_eq!(slots.take(a).unwrap_err(), Refused::Source);
        let _b1 = slots.take(b).unwrap();
        let _b2 = slots.take(b).unwrap();
        assert_eq!(slots.taken(a), (4, 2));
        let c: IpAddr = "127.0.0.4".parse().unwrap();
        assert_eq!(slots.take(c).unwrap_err(), Refused::Total);
        drop(a1);
        assert_eq!(slots.taken(a), (3, 1));
        let _c1 = slots.take(c).unwrap();
    }

    #[test]
    fn an_ipv6_subscriber_is_one_source() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_of(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let slots = SourceSlots::new(10, 1);
        let _a = slots.take(a).unwrap();
        assert_eq!(slots.take(b).unwrap_err(), Refused::Source);
        let _other = slots.take(other).unwrap();
    }
}
