//! A real OpenID provider for tests: Debian's `glewlwyd` (2.7) as a child process.
//!
//! [`OidcProvider::start`] gives a test its own provider:
//!
//! 1. **Directory and database.** A temporary directory holds everything: a SQLite
//!    database initialised from the package's own script
//!    (`/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3`) by `sqlite3`, with
//!    the user backend extended by two properties, `upn` and `groups` (multi-valued);
//!    the generated `glewlwyd.conf`; the TLS files and the signing keys; the log.
//! 2. **Address and TLS.** HTTPS on `127.0.0.1:<free port>` (the kernel picks it; on
//!    the rare race with another process glewlwyd exits and the harness retries with
//!    a new port). The certificate comes from a fresh [`TestCa`]; clients trust
//!    [`OidcProvider::ca_pem`] only. [`OidcProvider::start_with`] takes another
//!    bind address, a fixed port, the issuer's host name and a certificate
//!    ([`OidcOptions`]; the docker-compose `idp` service: `0.0.0.0`, its
//!    published port, `idp.localhost`, a certificate kept in its volume).
//! 3. **Process.** glewlwyd runs under a tiny `sh` wrapper in its own process group,
//!    with the wrapper's stdin on a pipe: when the pipe closes (`Drop`, or a test
//!    process that dies without running it) the wrapper kills glewlwyd.
//! 4. **Readiness and setup.** `start` polls the admin sign-in (`POST /api/auth/` as
//!    the package's default `admin`/`password`, certificate verified) with a 30 s
//!    deadline; then, through the admin REST API: an API key for all further admin
//!    calls, a random admin password, the HOTP scheme, the scopes [`AUDIENCE`] and
//!    [`MFA_SCOPE`], and the OpenID Connect plugin (`/api/oidc`) signing RS256 with a
//!    2048-bit key from `openssl genpkey`. `start` takes about 0.6 s.
//!
//! # What the tokens look like (glewlwyd 2.7.5)
//!
//! Access tokens are JWTs (`typ: at+jwt`, draft RFC 9068 profile) signed RS256 with
//! `kid` = the key's RFC 7638 thumbprint. Claims of a **user** token:
//! `iss` ([`OidcProvider::issuer`]), `sub` (opaque and stable per user, not the
//! name), `aud`, `client_id`, `scope`, `jti`, `iat`, `nbf`, `exp` (1 h),
//! `type: "access_token"`, and from the user's properties `upn` (e.g.
//! `alice@contoso.test`), `email` (never with an `email_verified`: glewlwyd
//! does not verify addresses; [`OidcProvider::update_user`] changes either,
//! as a user editing their profile would) and `groups` — **one comma-joined string**
//! (`"writeback-password-admins,other"`), not an array. A **client-credentials**
//! token has `sub` = `client_id` and no user claims. There is no `azp`, and access
//! tokens carry **no `amr`, `acr` or `auth_time`** whatever the login was.
//!
//! * **`aud`.** glewlwyd sets `aud` to the requested resource indicator (RFC 8707,
//!   must be an `https://` URI) where it honours one — the authorization code and
//!   client-credentials grants — and otherwise to the space-joined scope list; the
//!   password grant ignores `resource`. So the harness names its scope after the
//!   audience: every token is requested with scope [`AUDIENCE`] (and `resource` =
//!   [`AUDIENCE`] where honoured), and `aud` is exactly [`AUDIENCE`] for all three
//!   kinds.
//! * **MFA.** [`MFA_SCOPE`] requires the password *and* the HOTP scheme; glewlwyd
//!   grants it only to a session that passed both. [`OidcProvider::mfa_token`] signs
//!   in with password + HOTP through the auth API and runs the authorization code
//!   flow; its access token has `scope` =
//!   `"openid https://writeback.test writeback-mfa"` (`aud` still [`AUDIENCE`]).
//!   The id_token of that flow has `amr: ["password", "otp"]` (the harness checks
//!   it); a password-grant id_token has `amr: ["password"]`. No `acr` anywhere. A
//!   resource server can therefore see MFA in an access token only through the
//!   granted [`MFA_SCOPE`].
//! * **Keys.** [`OidcProvider::rotate_signing_key`] replaces the signing key (new
//!   `kid`) while the provider runs: plugin update plus `reset`. The JWKS then lists
//!   only the new key; tokens signed before no longer verify against it.
//!
//! # Signing in with a browser
//!
//! glewlwyd also serves its own login web app (Debian's glewlwyd-common) over the
//! same HTTPS: `static_files_path` is a copy of `/usr/share/glewlwyd/webapp` in
//! the provider's directory with a `config.json` of the harness's (the package's
//! is a dangling link, and glewlwyd serves no file through a link leaving that
//! directory), `static_files_mime_types` gives the files their types, and
//! `login_url` is `login.html`. So `<issuer>/auth?response_type=code&…` sends a
//! browser that has no good-enough session to [`OidcProvider::login_page_url`]
//! (`<base>/login.html?…&callback_url=<the /auth request>`), where the user signs
//! in, consents and continues back to `/auth`, which redirects to the client.
//! [`OidcProvider::add_client_with_redirects`] registers a client for that with
//! the test's own redirect URIs; PKCE (S256) is accepted for every client and
//! enforced once a challenge was sent ([`Pkce`],
//! [`OidcProvider::authorization_url`]); [`OidcProvider::next_hotp_code`] is what
//! the user's authenticator would show. [`crate::browser::sign_in_at_glewlwyd`]
//! drives the page.
//!
//! Discovery is at `<issuer>/.well-known/openid-configuration`, the JWKS at
//! `<issuer>/jwks`, tokens at `<issuer>/token`. Set `WRITEBACK_TESTKIT_KEEP=1` to keep
//! the directory (config, database, `glewlwyd.log`) after the test.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, TryRngCore};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use sha1::Sha1;
use tracing::{debug, info, warn};

use crate::TestkitError;
use crate::pki::TestCa;
use crate::samba::{create_dir, log_tail, random_alnum, spawn_error, tail_lines, write_file};

mod admin;
mod flows;
mod http;
mod otp;
mod setup;

use http::*;
use otp::*;
use setup::*;

/// The `aud` of every token the harness requests, and the name of the scope that
/// produces it (see the module docs for why they are the same string).
pub const AUDIENCE: &str = "https://writeback.test";
/// A scope that glewlwyd grants only after password + HOTP.
pub const MFA_SCOPE: &str = "writeback-mfa";

const PLUGIN: &str = "oidc";
const OTP_SCHEME: &str = "otp";
/// Registered for every client; never contacted (the code is read off the redirect).
const REDIRECT_URI: &str = "https://127.0.0.1/writeback-test-callback";
const DEFAULT_ADMIN: (&str, &str) = ("admin", "password");
const SESSION_COOKIE: &str = "GLEWLWYD2_SESSION_ID";
const LOG: &str = "glewlwyd.log";
const READY_DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
const START_ATTEMPTS: usize = 3;

/// One running glewlwyd with the OpenID Connect plugin, in a temporary directory.
///
/// Dropping it closes the wrapper's stdin (which kills glewlwyd), SIGKILLs the
/// process group if that has not ended it within 5 s, and removes the directory.
pub struct OidcProvider {
    /// `https://127.0.0.1:<port>`: the harness's own (admin) calls.
    base: String,
    /// `https://<public host>:<port>`: what browsers and clients are given.
    public_base: String,
    issuer: String,
    ca_pem: String,
    http: reqwest::Client,
    api_key: String,
    kid: String,
    otp: tokio::sync::Mutex<HashMap<String, Hotp>>,
    dir_path: PathBuf,
    key_seq: u32,
    kept_key: Option<PathBuf>,
    // Drop stops the child first; the directory goes after.
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    dir: Option<tempfile::TempDir>,
}

/// Where and how [`OidcProvider::start_with`] serves; the default is what
/// [`OidcProvider::start`] does (127.0.0.1, a free port, a fresh CA).
#[derive(Clone, Debug)]
pub struct OidcOptions {
    /// The address glewlwyd binds (`0.0.0.0` in a container whose port is
    /// published).
    pub bind: std::net::IpAddr,
    /// A fixed port (no retry on a taken port); `None` = a free one.
    pub port: Option<u16>,
    /// The host name of the issuer URL (`https://<host>:<port>/api/oidc`) and of
    /// the login page, also named in the certificate; `None` = `127.0.0.1`.
    pub public_host: Option<String>,
    /// The HTTPS certificate to serve; `None` = one from a fresh [`TestCa`] for
    /// `localhost`, 127.0.0.1 and `public_host`.
    pub tls: Option<ServerTls>,
    /// A file that keeps the first signing key across starts (PEM, 0600): used
    /// when it exists, else written with the new key; `None` = a new key each
    /// start. (Clients that read the keys once, like the portal, keep
    /// verifying tokens after the provider restarts.)
    pub signing_key_file: Option<PathBuf>,
}

impl Default for OidcOptions {
    fn default() -> OidcOptions {
        OidcOptions {
            bind: std::net::Ipv4Addr::LOCALHOST.into(),
            port: None,
            public_host: None,
            tls: None,
            signing_key_file: None,
        }
    }
}

/// A server certificate, its key and the CA that issued it (PEM).
#[derive(Clone)]
pub struct ServerTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// A certificate from a fresh [`TestCa`] (`ca_name`) for `dns` names and
    /// 127.0.0.1.
    pub fn issue(ca_name: &str, dns: &[String]) -> Result<ServerTls, TestkitError> {
        let ca = TestCa::new(ca_name)?;
        let (cert_pem, key_pem) = ca.issue_server(dns, &[std::net::Ipv4Addr::LOCALHOST.into()])?;
        Ok(ServerTls {
            ca_pem: ca.cert_pem(),
            cert_pem,
            key_pem,
        })
    }
}

/// A PKCE (RFC 7636) verifier and its S256 challenge.
#[derive(Clone)]
pub struct Pkce {
    /// 43 random characters from the unreserved set, sent to the token endpoint.
    pub verifier: String,
    /// `BASE64URL(SHA256(verifier))`, sent to the authorization endpoint.
    pub challenge: String,
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkce")
            .field("challenge", &self.challenge)
            .finish_non_exhaustive()
    }
}

impl Pkce {
    /// A fresh random verifier and its challenge.
    pub fn new() -> Result<Pkce, TestkitError> {
        Ok(Pkce::from_verifier(random_alnum(43)?))
    }

    /// The challenge of a given verifier (RFC 7636 appendix B checks this).
    pub fn from_verifier(verifier: String) -> Pkce {
        use sha2::Digest;
        let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

/// A user's HOTP registration: the shared secret and the next counter value.
struct Hotp {
    secret: Vec<u8>,
    counter: u64,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .field("dir", &self.dir_path)
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish_non_exhaustive()
    }
}

impl OidcProvider {
    /// Start and configure a provider (see the module docs). Returns once the OIDC
    /// plugin serves its discovery document and JWKS.
    pub async fn start() -> Result<OidcProvider, TestkitError> {
        OidcProvider::start_with(OidcOptions::default()).await
    }

    /// [`OidcProvider::start`] on the address, port, issuer host name and
    /// certificate of `opts` (the docker-compose `idp` service runs it on
    /// `0.0.0.0`, a published port and a name every container and the host's
    /// browser resolve).
    pub async fn start_with(opts: OidcOptions) -> Result<OidcProvider, TestkitError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("writeback-testkit-oidc-")
            .tempdir()
            .map_err(|e| TestkitError::io("create oidc provider directory", e))?;
        let dir_path = dir.path().to_path_buf();
        for sub in ["tls", "keys", "user_middleware"] {
            create_dir(&dir_path.join(sub))?;
        }
        prepare_webapp(&dir_path.join(WEBAPP_DIR))?;
        let db = dir_path.join("glewlwyd.db");
        init_database(&db).await?;

        let tls = match opts.tls.clone() {
            Some(tls) => tls,
            None => {
                let mut dns = vec!["localhost".to_string()];
                dns.extend(opts.public_host.clone());
                ServerTls::issue("writeback test CA for glewlwyd", &dns)?
            }
        };
        let ServerTls {
            ca_pem,
            cert_pem,
            key_pem,
        } = tls;
        write_file(&dir_path.join("tls/cert.pem"), cert_pem.as_bytes(), 0o644)?;
        write_file(&dir_path.join("tls/key.pem"), key_pem.as_bytes(), 0o600)?;
        let http = http_client(&ca_pem)?;
        let prepared = started.elapsed();

        let mut attempt = 0;
        let (child, stdin, port, base, admin_cookie) = loop {
            attempt += 1;
            let port = match opts.port {
                Some(port) => port,
                None => free_port()?,
            };
            let base = format!("https://127.0.0.1:{port}");
            let public = public_base(&opts, port);
            let conf = dir_path.join("glewlwyd.conf");
            let text = config_text(port, opts.bind, &public, &dir_path);
            write_file(&conf, text.as_bytes(), 0o644)?;
            let (mut child, stdin) = spawn_glewlwyd(&dir_path, &conf)?;
            match wait_ready(&http, &base, &mut child, &dir_path.join(LOG)).await {
                Ok(cookie) => break (child, stdin, port, base, cookie),
                // Most likely the port was taken between our probe and its bind.
                Err(e @ TestkitError::OidcExited { .. })
                    if attempt < START_ATTEMPTS && opts.port.is_none() =>
                {
                    warn!(port, error = %e, "glewlwyd exited during start; retrying");
                    drop(stdin);
                    let _ = child.wait();
                }
                Err(e) => {
                    crate::child::stop("glewlwyd", Some(stdin), Some(child), None, &dir_path);
                    return Err(e);
                }
            }
        };
        let ready = started.elapsed();

        let public_base = public_base(&opts, port);
        let mut provider = OidcProvider {
            issuer: format!("{public_base}/api/{PLUGIN}"),
            base,
            public_base,
            ca_pem,
            http,
            api_key: String::new(),
            kid: String::new(),
            otp: tokio::sync::Mutex::new(HashMap::new()),
            dir_path,
            key_seq: 0,
            kept_key: opts.signing_key_file.clone(),
            child: Some(child),
            stdin: Some(stdin),
            dir: Some(dir),
        };
        provider.configure(&admin_cookie).await?;
        info!(
            issuer = %provider.issuer,
            dir = %provider.dir_path.display(),
            prepared_ms = prepared.as_millis() as u64,
            ready_ms = ready.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "oidc provider ready"
        );
        Ok(provider)
    }

    /// The exact `iss` of its tokens, e.g. `https://127.0.0.1:41234/api/oidc`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `<issuer>/.well-known/openid-configuration`
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// `<issuer>/jwks`
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// `<issuer>/token`
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// The `aud` of every token it issues through this harness ([`AUDIENCE`]).
    pub fn audience(&self) -> &'static str {
        AUDIENCE
    }

    /// PEM of the test CA that issued its HTTPS certificate (SANs `127.0.0.1`,
    /// `localhost`).
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// `kid` of the current signing key (the key's RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Process id of glewlwyd's wrapper shell, which leads the process group (None
    /// once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The provider's working directory (config, database, `glewlwyd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The published JWKS.
    pub async fn jwks(&self) -> Result<Value, TestkitError> {
        let resp = self
            .send("get jwks", self.http.get(self.jwks_uri()))
            .await?;
        json_body("get jwks", resp).await
    }

    /// The discovery document.
    pub async fn discovery(&self) -> Result<Value, TestkitError> {
        let resp = self
            .send("get discovery", self.http.get(self.discovery_url()))
            .await?;
        json_body("get discovery", resp).await
    }

    /// Add an enabled user who may get [`AUDIENCE`] and [`MFA_SCOPE`] tokens: `upn`
    /// becomes the `upn` claim (and the e-mail), `groups` the `groups` claim. A fresh
    /// HOTP secret is registered for [`OidcProvider::mfa_token`].
    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        upn: &str,
        groups: &[&str],
    ) -> Result<(), TestkitError> {
        let op = format!("add user {name}");
        self.admin(
            &op,
            Method::POST,
            "user/",
            Some(json!({
                "username": name,
                "name": name,
                "email": upn,
                "password": password,
                "enabled": true,
                "scope": [AUDIENCE, MFA_SCOPE, "openid", "g_profile"],
                "upn": upn,
                "groups": groups,
            })),
        )
        .await?;
        // The user registers the HOTP secret herself: glewlwyd 2.7.5 refuses the admin
        // delegation endpoint to API keys (401), and admin sessions expire.
        let secret = random_bytes::<20>()?;
        let cookie = self.sign_in(name, password).await?;
        let op = format!("register hotp for {name}");
        let req = self
            .http
            .post(format!("{}/api/profile/scheme/register/", self.base))
            .header(header::COOKIE, &cookie)
            .json(&json!({
                "username": name,
                "scheme_type": "otp",
                "scheme_name": OTP_SCHEME,
                "value": {"type": "HOTP", "secret": base32(&secret), "moving_factor": 0},
            }));
        expect_ok(&op, self.send(&op, req).await?).await?;
        self.otp.lock().await.insert(
            name.to_string(),
            Hotp {
                secret: secret.to_vec(),
                counter: 0,
            },
        );
        Ok(())
    }

    /// Add a confidential client with the password, client-credentials and
    /// authorization-code grants (secret by HTTP Basic or POST).
    pub async fn add_client(&self, client_id: &str, secret: &str) -> Result<(), TestkitError> {
        self.admin(
            &format!("add client {client_id}"),
            Method::POST,
            "client/",
            Some(json!({
                "client_id": client_id,
                "name": client_id,
                "confidential": true,
                "enabled": true,
                "client_secret": secret,
                "token_endpoint_auth_method": ["client_secret_basic", "client_secret_post"],
                "redirect_uri": [REDIRECT_URI],
                "authorization_type": ["code", "password", "client_credentials", "refresh_token"],
                "scope": [AUDIENCE, MFA_SCOPE, "openid"],
            })),
        )
        .await?;
        Ok(())
    }

    /// Add a confidential client for a browser sign-in through glewlwyd's login
    /// page: the authorization-code grant (and refresh tokens) to exactly
    /// `redirect_uris` (any `https://` URL the test serves; glewlwyd compares the
    /// whole URI), the client secret by HTTP Basic or POST, scopes `openid`,
    /// [`AUDIENCE`] and [`MFA_SCOPE`]. PKCE with S256 is accepted (plain is not): a
    /// code requested with a `code_challenge` is exchanged only with its
    /// `code_verifier` (see [`Pkce`], [`OidcProvider::authorization_url`]). The
    /// first sign-in of each user shows glewlwyd's consent screen for the client,
    /// which [`crate::browser::sign_in_at_glewlwyd`] accepts.
    pub async fn add_client_with_redirects(
        &self,
        client_id: &str,
        secret: &str,
        redirect_uris: &[&str],
    ) -> Result<(), TestkitError> {
        if redirect_uris.is_empty() {
            return Err(TestkitError::InvalidInput(format!(
                "client {client_id} needs at least one redirect URI"
            )));
        }
        self.admin(
            &format!("add client {client_id}"),
            Method::POST,
            "client/",
            Some(json!({
                "client_id": client_id,
                "name": client_id,
                "confidential": true,
                "enabled": true,
                "client_secret": secret,
                "token_endpoint_auth_method": ["client_secret_basic", "client_secret_post"],
                "redirect_uri": redirect_uris,
                "authorization_type": ["code", "refresh_token"],
                "scope": [AUDIENCE, MFA_SCOPE, "openid"],
            })),
        )
        .await?;
        Ok(())
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        crate::child::stop(
            "glewlwyd",
            self.stdin.take(),
            self.child.take(),
            self.dir.take(),
            &self.dir_path,
        );
    }
}

/// The decoded (header, payload) of a compact JWS, without verifying anything.
pub fn jwt_parts(token: &str) -> Result<(Value, Value), TestkitError> {
    let mut parts = token.split('.');
    let mut decode = |what: &str| -> Result<Value, TestkitError> {
        let part = parts
            .next()
            .ok_or_else(|| TestkitError::InvalidInput(format!("jwt has no {what}")))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| TestkitError::InvalidInput(format!("jwt {what}: {e}")))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| TestkitError::InvalidInput(format!("jwt {what}: {e}")))
    };
    Ok((decode("header")?, decode("payload")?))
}

/// A port the kernel considers free on 127.0.0.1 right now.
pub(crate) fn free_port() -> Result<u16, TestkitError> {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| TestkitError::io("bind 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| TestkitError::io("local address of probe listener", e))?
        .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn hotp_matches_rfc_4226_test_vectors() {
        let secret = b"12345678901234567890";
        let expected = ["755224", "287082", "359152", "969429", "338314"];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(hotp_code(secret, counter as u64).unwrap(), *want);
        }
    }

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        let pkce = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        assert_eq!(
            pkce.challenge,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(
            base32(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b""), "");
    }

    #[test]
    fn jwt_parts_decodes_header_and_payload() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"k1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"aud":"x"}"#);
        let (h, p) = jwt_parts(&format!("{header}.{payload}.sig")).unwrap();
        assert_eq!(h["kid"], "k1");
        assert_eq!(p["aud"], "x");
        assert!(jwt_parts("not-a-jwt").is_err());
    }

    #[test]
    fn a_provider_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<OidcProvider>();
    }
}
