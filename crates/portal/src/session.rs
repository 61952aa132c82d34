//! Server-side sessions. The browser holds only a random session id in a
//! `__Host-` cookie (Secure, HttpOnly, SameSite=Lax, path `/`); the
//! identity provider's tokens, the sign-in's PKCE verifier and the CSRF
//! token stay on the server, so no token and no password is ever in a
//! cookie or a URL. Sessions end when idle for `session_idle_seconds` or when
//! the access token expires.
//!
//! Their number is capped hard (`limits.max_sessions`: past it, once the
//! idle ones are dropped, no new session is made), and so are the sessions
//! not signed in that one source address started
//! (`limits.max_pending_signins_per_source`, counted as they are made,
//! signed in or dropped): a flood of `GET /signin` can neither grow the
//! portal's memory nor take every place from the people signing in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rand::RngCore;
use secrecy::SecretString;

/// The session cookie's name (`__Host-`: Secure, path `/`, no Domain).
pub const COOKIE: &str = "__Host-wb";
/// How often, at most, a full map is swept of idle sessions.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A sign-in in progress.
#[derive(Debug, Clone)]
pub struct Pending {
    /// PKCE verifier (secret).
    pub verifier: SecretString,
    /// The `state` sent to the provider.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// A strong (multi-factor) sign-in was asked for.
    pub strong: bool,
    /// Where to go afterwards (a path of this portal).
    pub next: String,
}

/// Someone signed in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Their principal (UPN).
    pub principal: String,
    /// The access token the control plane accepts (secret).
    pub access_token: SecretString,
    /// The sign-in was a strong one (asked for and granted).
    pub strong: bool,
    /// When the access token stops working.
    pub expires_at: Instant,
    /// Their role as the control plane sees their token (`WhoAmI`), which
    /// decides the pages the navigation offers; `None` when it could not
    /// tell (then only their own account is offered). The control plane
    /// still decides every call.
    pub role: Option<writeback_proto::v1::Role>,
}

/// One browser's session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Every form carries it; a POST without it is refused.
    pub csrf: String,
    /// A sign-in in progress.
    pub pending: Option<Pending>,
    /// The signed-in user.
    pub user: Option<SignedIn>,
    last_seen: Instant,
    /// The source address ([`writeback_identity::limits::source_of`]) that
    /// started it; it counts against that source's share while no one is
    /// signed in to it.
    source: Option<IpAddr>,
}

impl Session {
    /// The source whose share it takes: its own while no one is signed in.
    fn pending_source(&self) -> Option<IpAddr> {
        if self.user.is_none() {
            self.source
        } else {
            None
        }
    }
}

/// Why no session was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every session is taken (and alive).
    Total,
    /// The source holds its share of sign-ins in progress.
    Source,
}

/// All sessions.
#[derive(Debug)]
pub struct Sessions {
    idle: Duration,
    max: usize,
    max_pending_per_source: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    map: HashMap<String, Session>,
    pending_by_source: HashMap<IpAddr, usize>,
    last_sweep: Instant,
}

impl Inner {
    fn count(&mut self, source: Option<IpAddr>, up: bool) {
        let Some(source) = source else { return };
        let n = self.pending_by_source.entry(source).or_insert(0);
        if up {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending_by_source.remove(&source);
            }
        }
    }

    fn insert(&mut self, id: String, session: Session) {
        let source = session.pending_source();
        if let Some(old) = self.map.insert(id, session) {
            self.count(old.pending_source(), false);
        }
        self.count(source, true);
    }

    fn remove(&mut self, id: &str) -> Option<Session> {
        let old = self.map.remove(id)?;
        self.count(old.pending_source(), false);
        Some(old)
    }

    fn sweep(&mut self, now: Instant, idle: Duration) {
        let gone: Vec<String> = self
            .map
            .iter()
            .filter(|(_, s)| !alive(s, now, idle))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
        self.last_sweep = now;
    }
}

fn alive(s: &Session, now: Instant, idle: Duration) -> bool {
    now.duration_since(s.last_seen) < idle && s.user.as_ref().is_none_or(|u| u.expires_at > now)
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session id in the request's cookies, if any.
pub fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value for session `id`.
pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Lax")
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

impl Sessions {
    /// Sessions that end after `idle` without a request: at most `max` in
    /// all (at least 1), at most `max_pending_per_source` (at least 1) not
    /// signed in from one source.
    pub fn new(idle: Duration, max: usize, max_pending_per_source: usize) -> Sessions {
        Sessions {
            idle,
            max: max.max(1),
            max_pending_per_source: max_pending_per_source.max(1),
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                pending_by_source: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live session `id`, touched; `None` when unknown or expired.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut inner = self.lock();
        let now = Instant::now();
        if !inner.map.get(id).is_some_and(|s| alive(s, now, self.idle)) {
            inner.remove(id);
            return None;
        }
        let s = inner.map.get_mut(id)?;
        s.last_seen = now;
        Some(s.clone())
    }

    /// A new, empty session started from `source` (`None`: counted in the
    /// total only); its id. Refused when every session is taken, or when
    /// `source` holds its share of sessions not signed in; idle sessions
    /// are dropped first (at most once a second, so a flood cannot make
    /// every request walk the whole map).
    pub fn create(&self, source: Option<IpAddr>) -> Result<(String, Session), Full> {
        let source = source.map(writeback_identity::limits::source_of);
        let mut inner = self.lock();
        let now = Instant::now();
        let pending_of = |inner: &Inner| {
            source.map_or(0, |s| inner.pending_by_source.get(&s).copied().unwrap_or(0))
        };
        let full = |inner: &Inner| {
            inner.map.len() >= self.max || pending_of(inner) >= self.max_pending_per_source
        };
        if full(&inner) && now.duration_since(inner.last_sweep) >= SWEEP_INTERVAL {
            inner.sweep(now, self.idle);
        }
        if inner.map.len() >= self.max {
            return Err(Full::Total);
        }
        if pending_of(&inner) >= self.max_pending_per_source {
            return Err(Full::Source);
        }
        let session = Session {
            csrf: random_token(),
            pending: None,
            user: None,
            last_seen: now,
            source,
        };
        let id = random_token();
        inner.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// Replaces session `id`'s contents.
    pub fn put(&self, id: &str, mut session: Session) {
        session.last_seen = Instant::now();
        self.lock().insert(id.to_owned(), session);
    }

    /// Ends session `id`.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Sessions held: (not signed in, signed in).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        let signed_in = inner.map.values().filter(|s| s.user.is_some()).count();
        (inner.map.len() - signed_in, signed_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_session_cookies_are_read() {
        let id = random_token();
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            format!("other=1; {COOKIE}={id}").parse().unwrap(),
        );
        assert_eq!(cookie_id(&h), Some(id));
        let mut bad = HeaderMap::new();
        bad.insert(
            axum::http::header::COOKIE,
            format!("{COOKIE}=../../x").parse().unwrap(),
        );
        assert_eq!(cookie_id(&bad), None);
    }

    fn signed_in() -> SignedIn {
        SignedIn {
            principal: "alice@contoso.test".into(),
            access_token: SecretString::from("t".to_owned()),
            strong: false,
            expires_at: Instant::now() + Duration::from_secs(600),
            role: None,
        }
    }

    /// At most 2 sign-ins in progress from one source and 5 sessions in
    /// all: a source at its share is refused until one of its sessions is
    /// signed in or ends, and nobody gets a session past the total.
    #[test]
    fn sessions_are_capped_in_all_and_per_source() {
        let s = Sessions::new(Duration::from_secs(600), 5, 2);
        let a = Some("127.0.0.2".parse().unwrap());
        let b = Some("127.0.0.3".parse().unwrap());
        let (a1, _) = s.create(a).unwrap();
        let (a2, _) = s.create(a).unwrap();
        assert_eq!(s.create(a).unwrap_err(), Full::Source);
        let (b1, _) = s.create(b).unwrap();
        // Signing in frees the source's place; so does the session ending.
        let mut first = s.get(&a1).unwrap();
        first.user = Some(signed_in());
        s.put(&a1, first);
        let (_a3, _) = s.create(a).unwrap();
        assert_eq!(s.create(a).unwrap_err(), Full::Source);
        s.remove(&a2);
        let (_a4, _) = s.create(a).unwrap();
        assert_eq!(s.counts(), (3, 1));
        s.create(None).unwrap();
        assert_eq!(s.create(None).unwrap_err(), Full::Total);
        assert_eq!(s.create(b).unwrap_err(), Full::Total);
        s.remove(&b1);
        s.create(b).unwrap();
    }

    /// A full map is swept of idle sessions before anyone is refused.
    #[test]
    fn idle_sessions_make_room() {
        let s = Sessions::new(Duration::from_millis(20), 2, 2);
        let a = Some("127.0.0.2".parse().unwrap());
        s.create(a).unwrap();
        s.create(a).unwrap();
        assert!(s.create(None).is_err());
        std::thread::sleep(Duration::from_millis(1100));
        s.create(a).unwrap();
        assert_eq!(s.counts(), (1, 0));
    }

    #[test]
    fn idle_sessions_end() {
        let s = Sessions::new(Duration::from_millis(20), 10, 10);
        let (id, _) = s.create(None).unwrap();
        assert!(s.get(&id).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(s.get(&id).is_none());
    }
}
