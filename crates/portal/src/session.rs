//! Server-side sessions. The browser holds only a random session id in a
//! `__Host-` cookie (Secure, HttpOnly, SameSite=Lax, path `/`); the
//! identity provider's tokens, the sign-in's PKCE verifier and the CSRF
//! token stay on the server, so no token and no password is ever in a
//! cookie or a URL. Sessions end when idle for `session_idle_seconds` or when
//! the access token expires.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rand::RngCore;
use secrecy::SecretString;

/// The session cookie's name (`__Host-`: Secure, path `/`, no Domain).
pub const COOKIE: &str = "__Host-wb";
/// Most sessions kept; the idlest go first.
const MAX_SESSIONS: usize = 100_000;

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
}

/// All sessions.
#[derive(Debug)]
pub struct Sessions {
    idle: Duration,
    map: Mutex<HashMap<String, Session>>,
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
    /// Sessions that end after `idle` without a request.
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live session `id`, touched; `None` when unknown or expired.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.lock();
        let now = Instant::now();
        let alive = map.get(id).is_some_and(|s| {
            now.duration_since(s.last_seen) < self.idle
                && s.user.as_ref().is_none_or(|u| u.expires_at > now)
        });
        if !alive {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.last_seen = now;
        Some(s.clone())
    }

    /// A new, empty session; its id.
    pub fn create(&self) -> (String, Session) {
        let session = Session {
            csrf: random_token(),
            pending: None,
            user: None,
            last_seen: Instant::now(),
        };
        let id = random_token();
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            let now = Instant::now();
            let idle = self.idle;
            map.retain(|_, s| now.duration_since(s.last_seen) < idle);
        }
        map.insert(id.clone(), session.clone());
        (id, session)
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
        let map = self.lock();
        let signed_in = map.values().filter(|s| s.user.is_some()).count();
        (map.len() - signed_in, signed_in)
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

    #[test]
    fn idle_sessions_end() {
        let s = Sessions::new(Duration::from_millis(20));
        let (id, _) = s.create();
        assert!(s.get(&id).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(s.get(&id).is_none());
    }
}
