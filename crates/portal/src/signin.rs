//! Signing people in through the tenant's OpenID Connect provider: the
//! authorization-code flow with PKCE (S256), `state` and `nonce`, by the
//! `openidconnect` crate (discovery, the token request, the ID token's
//! signature and claims). A strong sign-in asks for the configured step-up
//! scopes and `acr_values`; whether it was granted is read from the token
//! response's scopes, and the control plane judges it again on every call.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};

use crate::config::OidcConfig;
use crate::session::{Pending, SignedIn};

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The provider as discovered at start-up.
pub struct SignIn {
    client: Client,
    http: reqwest::Client,
    config: OidcConfig,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// An https client trusting the system roots plus `ca_file`, never
/// following redirects (the `openidconnect` crate's SSRF advice).
fn http_client(ca_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let tls = writeback_identity::tls::web_client_config(ca_file)?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?)
}

impl SignIn {
    /// Discovers the provider and sets up the portal's client.
    pub async fn discover(config: &OidcConfig, public_url: &str) -> anyhow::Result<SignIn> {
        let http = http_client(config.ca_file.as_deref())?;
        let issuer = IssuerUrl::new(config.issuer.clone()).context("oidc.issuer")?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .with_context(|| format!("discovering {}", config.issuer))?;
        SignIn::with_metadata(metadata, config, public_url, http)
    }

    /// The portal's client of a provider whose `metadata` is known already
    /// (what [`SignIn::discover`] fetches), reached with `http`.
    pub fn with_metadata(
        metadata: CoreProviderMetadata,
        config: &OidcConfig,
        public_url: &str,
        http: reqwest::Client,
    ) -> anyhow::Result<SignIn> {
        let secret = std::fs::read_to_string(&config.client_secret_file)
            .with_context(|| format!("reading {}", config.client_secret_file.display()))?;
        let redirect = format!("{}/callback", public_url.trim_end_matches('/'));
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(config.client_id.clone()),
            Some(ClientSecret::new(secret.trim().to_owned())),
        )
        .set_redirect_uri(RedirectUrl::new(redirect).context("public_url")?);
        Ok(SignIn {
            client,
            http,
            config: config.clone(),
        })
    }

    /// The provider's authorization URL for a new sign-in, and what to
    /// remember until the callback.
    pub fn start(&self, strong: bool, next: &str) -> (String, Pending) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for s in &self.config.scopes {
            request = request.add_scope(Scope::new(s.clone()));
        }
        if strong {
            for s in &self.config.strong_scopes {
                request = request.add_scope(Scope::new(s.clone()));
            }
            if !self.config.strong_acr_values.is_empty() {
                request = request
                    .add_extra_param("acr_values", self.config.strong_acr_values.join(" "))
                    .add_extra_param("prompt", "login");
            }
        }
        if let Some(resource) = &self.config.resource {
            request = request.add_extra_param("resource", resource.clone());
        }
        let (url, state, nonce) = request.url();
        let pending = Pending {
            verifier: SecretString::from(verifier.secret().clone()),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            strong,
            next: next.to_owned(),
        };
        (url.to_string(), pending)
    }

    /// Completes a sign-in: exchanges `code` with the PKCE verifier, checks
    /// the ID token (signature, issuer, audience, expiry, nonce) and reads
    /// the user's principal from it.
    pub async fn finish(&self, pending: &Pending, code: &str) -> anyhow::Result<SignedIn> {
        let mut request = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))?
            .set_pkce_verifier(PkceCodeVerifier::new(
                pending.verifier.expose_secret().to_owned(),
            ));
        if let Some(resource) = &self.config.resource {
            request = request.add_extra_param("resource", resource.clone());
        }
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|e| anyhow::anyhow!("the token request failed: {e}"))?;
        let id_token = response
            .id_token()
            .context("the provider answered without an ID token")?;
        id_token
            .claims(
                &self.client.id_token_verifier(),
                &Nonce::new(pending.nonce.clone()),
            )
            .context("the ID token does not verify")?;
        // The principal: the configured claim of the ID token (verified
        // above); else of the access token, which came over the same
        // back channel in the same answer and which the control plane
        // verifies on every call (some providers, glewlwyd among them, put
        // custom claims in access tokens only).
        let name = &self.config.principal_claim;
        let principal = claim(&id_token.to_string(), name)
            .or_else(|| claim(response.access_token().secret(), name))
            .with_context(|| {
                format!("neither the ID token nor the access token has a {name:?} claim")
            })?
            .to_lowercase();
        let granted: Vec<String> = response
            .scopes()
            .map(|s| s.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        let strong = pending.strong
            && self
                .config
                .strong_scopes
                .iter()
                .all(|s| granted.iter().any(|g| g == s));
        let lifetime = response.expires_in().unwrap_or(Duration::from_secs(300));
        Ok(SignedIn {
            principal,
            access_token: SecretString::from(response.access_token().secret().clone()),
            strong,
            expires_at: Instant::now() + lifetime,
            role: None,
        })
    }
}

/// A string claim of a (verified) JWT's payload.
fn claim(jwt: &str, name: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    json.get(name)?.as_str().map(str::to_owned)
}
