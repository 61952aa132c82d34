//! Issuers' signing keys: OpenID Connect discovery, then the JWKS, fetched
//! over https only (no redirects, 5 s timeout, 256 KiB at most), cached per
//! issuer URL and refreshed when older than `jwks_refresh_seconds` or when a
//! token names a key id the cache does not hold — at most once per
//! `jwks_min_refetch_seconds` per issuer, so tokens with made-up key ids
//! cannot turn the control plane into a request amplifier. Concurrent
//! requests for one issuer wait for one fetch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::config::OidcConfig;

/// Largest discovery document or key set accepted.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Discovery or the key set could not be fetched or read.
    #[error("{0}")]
    Unreachable(String),
    /// The issuer publishes no usable key for the token.
    #[error("{0}")]
    NoKey(String),
}

/// What discovery told about an issuer.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// Must equal the issuer URL exactly.
    pub issuer: String,
    /// Where its keys are.
    pub jwks_uri: String,
    /// Algorithms it says it signs ID tokens with (informational).
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
}

/// Cached keys of one issuer.
#[derive(Default)]
struct Entry {
    keys: Option<Arc<JwkSet>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// Signing keys of every issuer this control plane has seen, by URL.
pub struct KeyCache {
    http: reqwest::Client,
    refresh: Duration,
    min_refetch: Duration,
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    /// A cache fetching with `config`'s trust roots and intervals.
    pub fn new(config: &OidcConfig) -> anyhow::Result<KeyCache> {
        let tls = writeback_identity::tls::web_client_config(config.ca_file.as_deref())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.http_timeout_seconds.max(1)))
            .build()?;
        Ok(KeyCache {
            http,
            refresh: Duration::from_secs(config.jwks_refresh_seconds.max(1)),
            min_refetch: Duration::from_secs(config.jwks_min_refetch_seconds),
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn entry(&self, issuer_url: &str) -> Arc<tokio::sync::Mutex<Entry>> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.entry(issuer_url.to_owned()).or_default().clone()
    }

    /// The key `kid` (or the only key fitting `alg` when the token names
    /// none) of `issuer_url`, checked to fit `alg`.
    pub async fn key(
        &self,
        issuer_url: &str,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, KeyError> {
        let entry = self.entry(issuer_url);
        let mut entry = entry.lock().await;
        let stale = entry
            .fetched_at
            .is_none_or(|at| at.elapsed() >= self.refresh);
        if stale && self.may_fetch(&entry) {
            // A failed refresh keeps serving the keys it had.
            if let Err(e) = self.refetch(issuer_url, &mut entry).await
                && entry.keys.is_none()
            {
                return Err(e);
            }
        }
        if entry.keys.is_none() {
            return Err(KeyError::Unreachable(format!(
                "the keys of issuer {issuer_url} could not be fetched; the next attempt is at most {} s away",
                self.min_refetch.as_secs()
            )));
        }
        if let Some(found) = entry.keys.as_deref().and_then(|k| pick(k, kid, alg)) {
            return found;
        }
        if !stale && self.may_fetch(&entry) {
            // An unknown key id: the issuer may have rotated its keys.
            self.refetch(issuer_url, &mut entry).await?;
            if let Some(found) = entry.keys.as_deref().and_then(|k| pick(k, kid, alg)) {
                return found;
            }
        }
        Err(KeyError::NoKey(match kid {
            Some(kid) => format!("the issuer {issuer_url} publishes no key with id {kid:?}"),
            None => format!(
                "the token names no key id and the issuer {issuer_url} has no single {alg:?} key"
            ),
        }))
    }

    fn may_fetch(&self, entry: &Entry) -> bool {
        entry
            .last_attempt
            .is_none_or(|at| at.elapsed() >= self.min_refetch)
    }

    async fn refetch(&self, issuer_url: &str, entry: &mut Entry) -> Result<(), KeyError> {
        entry.last_attempt = Some(Instant::now());
        let discovery = self.discover(issuer_url).await?;
        let keys: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        tracing::info!(
            issuer = issuer_url,
            keys = keys.keys.len(),
            "issuer keys fetched"
        );
        entry.keys = Some(Arc::new(keys));
        entry.fetched_at = Some(Instant::now());
        Ok(())
    }

    /// Fetches and checks the issuer's discovery document.
    pub async fn discover(&self, issuer_url: &str) -> Result<Discovery, KeyError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer_url.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&url).await?;
        if discovery.issuer != issuer_url {
            return Err(KeyError::Unreachable(format!(
                "the discovery document at {url} names the issuer {:?}, not {issuer_url:?}",
                discovery.issuer
            )));
        }
        if !discovery.jwks_uri.starts_with("https://") {
            return Err(KeyError::Unreachable(format!(
                "the issuer's jwks_uri {:?} is not https",
                discovery.jwks_uri
            )));
        }
        Ok(discovery)
    }

    /// Discovery plus the key set, for checking an issuer before trusting
    /// it; also fills the cache.
    pub async fn check_issuer(&self, issuer_url: &str) -> Result<usize, KeyError> {
        let entry = self.entry(issuer_url);
        let mut entry = entry.lock().await;
        self.refetch(issuer_url, &mut entry).await?;
        Ok(entry.keys.as_ref().map_or(0, |k| k.keys.len()))
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<T, KeyError> {
        let unreachable = |what: String| KeyError::Unreachable(format!("{url}: {what}"));
        let mut response = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| unreachable(describe(&e)))?;
        if !response.status().is_success() {
            return Err(unreachable(format!("HTTP {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unreachable(describe(&e)))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(unreachable("the document is larger than 256 KiB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|e| unreachable(format!("not the expected JSON: {e}")))
    }
}

/// reqwest's error with its causes (the TLS reason is in a source).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The key for `kid`/`alg` in `keys`, if the set has one.
fn pick(keys: &JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<Result<DecodingKey, KeyError>> {
    let fits = |k: &&Jwk| fits(k, alg);
    let key = match kid {
        Some(kid) => keys
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))?,
        None => {
            let mut candidates = keys.keys.iter().filter(fits);
            let only = candidates.next()?;
            if candidates.next().is_some() {
                return None;
            }
            only
        }
    };
    if !fits(&key) {
        return Some(Err(KeyError::NoKey(format!(
            "the issuer's key {:?} is not a signing key for {alg:?}",
            key.common.key_id.as_deref().unwrap_or("")
        ))));
    }
    Some(DecodingKey::from_jwk(key).map_err(|e| KeyError::NoKey(format!("unusable key: {e}"))))
}

/// True when `key` may verify `alg`: the key type matches the algorithm's
/// family, and the key's own `alg` and `use`, when given, agree.
fn fits(key: &Jwk, alg: Algorithm) -> bool {
    let family_ok = matches!(
        (&key.algorithm, alg),
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512,
        ) | (
            AlgorithmParameters::EllipticCurve(_),
            Algorithm::ES256 | Algorithm::ES384
        ) | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
    );
    let alg_ok = key
        .common
        .key_algorithm
        .as_ref()
        .is_none_or(|ka| format!("{ka:?}") == format!("{alg:?}"));
    let use_ok = !matches!(
        key.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    );
    family_ok && alg_ok && use_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(json: &str) -> JwkSet {
        serde_json::from_str(json).unwrap()
    }

    const RSA: &str = r#"{"kty":"RSA","kid":"k1","use":"sig","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;

    #[test]
    fn keys_are_picked_by_id_and_must_fit_the_algorithm() {
        let keys = set(&format!(r#"{{"keys":[{RSA}]}}"#));
        assert!(matches!(
            pick(&keys, Some("k1"), Algorithm::RS256),
            Some(Ok(_))
        ));
        assert!(pick(&keys, Some("k2"), Algorithm::RS256).is_none());
        // An RSA key never verifies an EC or HMAC algorithm, and a key
        // declared RS256 does not verify PS256.
        assert!(matches!(
            pick(&keys, Some("k1"), Algorithm::ES256),
            Some(Err(_))
        ));
        assert!(matches!(
            pick(&keys, Some("k1"), Algorithm::HS256),
            Some(Err(_))
        ));
        assert!(matches!(
            pick(&keys, Some("k1"), Algorithm::PS256),
            Some(Err(_))
        ));
        // Without a key id, the single fitting key.
        assert!(matches!(pick(&keys, None, Algorithm::RS256), Some(Ok(_))));
        let two = set(&format!(
            r#"{{"keys":[{RSA},{}]}}"#,
            RSA.replace("\"k1\"", "\"k2\"")
        ));
        assert!(pick(&two, None, Algorithm::RS256).is_none());
    }

    #[test]
    fn encryption_keys_never_verify() {
        let keys = set(&format!(
            r#"{{"keys":[{}]}}"#,
            RSA.replace(r#""use":"sig""#, r#""use":"enc""#)
        ));
        assert!(matches!(
            pick(&keys, Some("k1"), Algorithm::RS256),
            Some(Err(_))
        ));
    }
}
