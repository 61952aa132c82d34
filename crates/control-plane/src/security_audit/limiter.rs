//! How many security events are written: fixed windows of `window_ms`
//! (aligned to the clock, so every key's window ends at once), in each at
//! most `per_key` events of one key — (tenant, kind, reason, subject), the
//! subject being the principal or else the client's address — and at most
//! `per_tenant` of one tenant. An event over either limit is counted into
//! its key's (or its tenant's) summary, which [`Limiter::roll`] returns when
//! the window ends: one row saying how many were held back, with the
//! fields they all shared.
//!
//! Memory is bounded too: a key is remembered only while its tenant is under
//! its limit, so a window holds at most `per_tenant` keys per tenant, and
//! the tenants are the store's own (plus the empty "no tenant" one).

use std::collections::HashMap;

use crate::store::SecurityEvent;

/// The kind of a summary whose held-back events were of several kinds.
pub const SUPPRESSED_KIND: &str = "events_suppressed";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: String,
    kind: String,
    reason_code: String,
    subject: String,
}

/// Events held back in one window: how many, when, and what they shared.
#[derive(Debug, Default)]
struct Held {
    count: i64,
    first_ms: i64,
    last_ms: i64,
    common: Option<SecurityEvent>,
}

impl Held {
    fn add(&mut self, e: &SecurityEvent) {
        if self.count == 0 {
            self.first_ms = e.at_ms;
        }
        self.count += 1;
        self.last_ms = self.last_ms.max(e.at_ms);
        self.common = Some(match self.common.take() {
            None => e.clone(),
            Some(c) => shared(c, e),
        });
    }
}

/// `c` with every field that differs from `e`'s emptied.
fn shared(mut c: SecurityEvent, e: &SecurityEvent) -> SecurityEvent {
    let fields = [
        (&mut c.kind, &e.kind),
        (&mut c.reason_code, &e.reason_code),
        (&mut c.detail, &e.detail),
        (&mut c.principal, &e.principal),
        (&mut c.client_app, &e.client_app),
        (&mut c.target, &e.target),
        (&mut c.operation, &e.operation),
        (&mut c.source, &e.source),
        (&mut c.message, &e.message),
    ];
    for (mine, theirs) in fields {
        if mine != theirs {
            mine.clear();
        }
    }
    c
}

#[derive(Debug, Default)]
struct Bucket {
    written: u32,
    held: Held,
}

/// The rate limiter of the security trail (one per control plane).
#[derive(Debug)]
pub struct Limiter {
    window_ms: i64,
    per_key: u32,
    per_tenant: u32,
    window: i64,
    keys: HashMap<Key, Bucket>,
    tenants: HashMap<String, Bucket>,
}

impl Limiter {
    /// A limiter whose first window holds `now_ms`.
    pub fn new(window_ms: i64, per_key: u32, per_tenant: u32, now_ms: i64) -> Limiter {
        let window_ms = window_ms.max(1);
        Limiter {
            window_ms,
            per_key,
            per_tenant,
            window: now_ms.div_euclid(window_ms),
            keys: HashMap::new(),
            tenants: HashMap::new(),
        }
    }

    /// True when `e` may be written now; otherwise it is counted into a
    /// summary. Call [`Limiter::roll`] first so the window is current.
    pub fn admit(&mut self, e: &SecurityEvent) -> bool {
        let subject = if e.principal.is_empty() {
            e.source.clone()
        } else {
            e.principal.to_ascii_lowercase()
        };
        let key = Key {
            tenant: e.tenant.clone(),
            kind: e.kind.clone(),
            reason_code: e.reason_code.clone(),
            subject,
        };
        if let Some(bucket) = self.keys.get_mut(&key)
            && bucket.written >= self.per_key
        {
            bucket.held.add(e);
            return false;
        }
        let tenant = self.tenants.entry(key.tenant.clone()).or_default();
        if tenant.written >= self.per_tenant {
            tenant.held.add(e);
            return false;
        }
        tenant.written += 1;
        self.keys.entry(key).or_default().written += 1;
        true
    }

    /// When the window holding `now_ms` is a later one: the summaries of the
    /// window that ended (perhaps none), and a fresh window. `None` while
    /// the window lasts.
    pub fn roll(&mut self, now_ms: i64) -> Option<Vec<SecurityEvent>> {
        if now_ms.div_euclid(self.window_ms) <= self.window {
            return None;
        }
        let summaries = self.finish();
        self.window = now_ms.div_euclid(self.window_ms);
        Some(summaries)
    }

    /// The summaries of the current window at once (on shutdown), which
    /// starts afresh.
    pub fn finish(&mut self) -> Vec<SecurityEvent> {
        let window_s = self.window_ms / 1000;
        let mut out = Vec::new();
        for (_, b) in self.keys.drain() {
            out.extend(summary(
                b.held,
                "per_key_per_window",
                self.per_key,
                window_s,
            ));
        }
        for (_, b) in self.tenants.drain() {
            out.extend(summary(
                b.held,
                "per_tenant_per_window",
                self.per_tenant,
                window_s,
            ));
        }
        out.sort_by_key(|e| e.at_ms);
        out
    }
}

/// One row for `held`, or none when nothing was held back.
fn summary(held: Held, limit: &str, value: u32, window_s: i64) -> Option<SecurityEvent> {
    let mut e = held.common?;
    if e.kind.is_empty() {
        e.kind = SUPPRESSED_KIND.to_owned();
    }
    e.message = format!(
        "{} more events like this were not recorded in this window ({limit} = {value} per {window_s} s)",
        held.count
    );
    e.at_ms = held.last_ms;
    e.suppressed = held.count;
    e.details = serde_json::json!({
        "first_at_ms": held.first_ms,
        "last_at_ms": held.last_ms,
        "limit": limit,
        "limit_value": value,
        "window_seconds": window_s,
    });
    Some(e)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn event(tenant: &str, principal: &str, source: &str, at_ms: i64) -> SecurityEvent {
        SecurityEvent {
            tenant: tenant.into(),
            kind: "authentication_failed".into(),
            reason_code: "UNAUTHENTICATED".into(),
            principal: principal.into(),
            source: source.into(),
            target: format!("upn:{at_ms}@contoso.test"),
            at_ms,
            ..SecurityEvent::default()
        }
    }

    #[test]
    fn a_key_writes_its_limit_then_one_summary_when_the_window_ends() {
        let mut l = Limiter::new(60_000, 3, 100, 0);
        let admitted = (0..10)
            .filter(|i| l.admit(&event("t1", "Eve@x", "10.0.0.1", *i)))
            .count();
        assert_eq!(admitted, 3);
        // Another principal has a budget of its own.
        assert!(l.admit(&event("t1", "bob@x", "10.0.0.1", 10)));
        assert!(l.roll(59_999).is_none(), "the window has not ended");
        let s = l.roll(60_000).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].suppressed, 7);
        assert_eq!(s[0].principal, "Eve@x");
        assert_eq!(s[0].at_ms, 9);
        // The targets differed, so the summary names none.
        assert_eq!(s[0].target, "");
        assert_eq!(s[0].details["first_at_ms"], 3);
        // A new window, a new budget.
        assert!(l.admit(&event("t1", "eve@x", "10.0.0.1", 60_001)));
    }

    #[test]
    fn without_a_principal_the_source_is_the_key_and_tenants_are_capped() {
        let mut l = Limiter::new(1000, 2, 5, 0);
        let admitted = (0..50)
            .filter(|i| l.admit(&event("", "", &format!("10.0.0.{i}"), *i)))
            .count();
        assert_eq!(admitted, 5, "the tenant's limit");
        // Other tenants are not affected.
        assert!(l.admit(&event("t2", "", "10.0.0.1", 50)));
        let s = l.finish();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].suppressed, 45);
        assert_eq!(s[0].details["limit"], "per_tenant_per_window");
        assert_eq!(s[0].source, "");
        assert!(l.finish().is_empty());
    }
}
