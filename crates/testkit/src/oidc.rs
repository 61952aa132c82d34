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
//! `alice@contoso.test`) and `groups` — **one comma-joined string**
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

/// The `aud` of every token the harness requests, and the name of the scope that
/// produces it (see the module docs for why they are the same string).
pub const AUDIENCE: &str = "https://writeback.test";
/// A scope that glewlwyd grants only after password + HOTP.
pub const MFA_SCOPE: &str = "writeback-mfa";

const PLUGIN: &str = "oidc";
const OTP_SCHEME: &str = "otp";
/// Registered for every client; never contacted (the code is read off the redirect).
const REDIRECT_URI: &str = "https://127.0.0.1/writeback-test-callback";
const INIT_SQL: &str = "/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3";
const DEFAULT_ADMIN: (&str, &str) = ("admin", "password");
const SESSION_COOKIE: &str = "GLEWLWYD2_SESSION_ID";
const LOG: &str = "glewlwyd.log";
/// glewlwyd's own web login app (Debian's glewlwyd-common).
const PACKAGE_WEBAPP: &str = "/usr/share/glewlwyd/webapp";
/// The harness's copy of it under the provider's directory, with a
/// `config.json` of its own (see [`prepare_webapp`]).
const WEBAPP_DIR: &str = "webapp";
/// The login app's configuration: its API is glewlwyd itself (`./config/`, then
/// `./api/…`), English only; no registration, no external providers.
const WEBAPP_CONFIG: &str = r#"{
  "GlewlwydUrl": "./",
  "ProfileUrl": "profile.html",
  "AdminUrl": "index.html",
  "LoginUrl": "login.html",
  "CallbackPage": "callback.html",
  "PasswordMinLength": 8,
  "lang": ["en"],
  "pattern": {"user": [], "client": []},
  "defaultScheme": "",
  "sessionSchemes": [],
  "profilePicture": {"property": "picture", "type": "image/*"},
  "register": [],
  "register-complete": [],
  "providerMainstreamList": []
}
"#;
const READY_DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
const START_ATTEMPTS: usize = 3;

/// Runs glewlwyd and kills it when stdin (a pipe from the harness) reaches EOF.
/// Background jobs of a non-interactive shell get /dev/null as stdin, hence fd 3.
const WRAPPER_SH: &str = r#"exec 3<&0
glewlwyd --config-file="$1" </dev/null 3<&- &
g=$!
{ read -r _ <&3; kill "$g" 2>/dev/null; } &
w=$!
wait "$g"
s=$?
kill "$w" 2>/dev/null
exit "$s"
"#;

/// The user backend's extra properties: `upn` (single) and `groups` (multi-valued).
const USER_PROPERTIES_SQL: &str = r#"UPDATE g_user_module_instance SET gumi_parameters = json_set(gumi_parameters,
  '$."data-format".upn', json('{"multiple":false,"read":true,"write":true,"profile-read":true,"profile-write":false}'),
  '$."data-format".groups', json('{"multiple":true,"read":true,"write":true,"profile-read":true,"profile-write":false}'))
WHERE gumi_name = 'database';"#;

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

    /// `<issuer>/auth?response_type=code&…` for a browser: `scope` space-separated
    /// (`openid` first is usual), the PKCE challenge (S256) of `pkce`, and
    /// `resource` = [`AUDIENCE`] so the access token's `aud` is [`AUDIENCE`].
    pub fn authorization_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        scope: &str,
        state: &str,
        pkce: &Pkce,
    ) -> Result<url::Url, TestkitError> {
        let mut auth = url::Url::parse(&format!("{}/auth", self.issuer))
            .map_err(|e| TestkitError::InvalidInput(format!("auth url: {e}")))?;
        auth.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", scope)
            .append_pair("resource", AUDIENCE)
            .append_pair("state", state)
            .append_pair("nonce", &random_alnum(16)?)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(auth)
    }

    /// `<base>/login.html`: glewlwyd's own login page (served from the package's
    /// web app, see the module docs), where `/auth` sends a browser to sign in.
    pub fn login_page_url(&self) -> String {
        format!("{}/login.html", self.public_base)
    }

    /// The next HOTP code of `user` (added with [`OidcProvider::add_user`]), as
    /// their authenticator app would show it; the counter moves on, so each code
    /// is handed out once.
    pub async fn next_hotp_code(&self, user: &str) -> Result<String, TestkitError> {
        let mut otp = self.otp.lock().await;
        let hotp = otp.get_mut(user).ok_or_else(|| {
            TestkitError::InvalidInput(format!("{user} was not added with add_user"))
        })?;
        let code = hotp_code(&hotp.secret, hotp.counter)?;
        hotp.counter += 1;
        Ok(code)
    }

    /// The `otpauth://hotp/…` URI of `user`'s HOTP secret (added with
    /// [`OidcProvider::add_user`]) at its current counter, for an authenticator
    /// app; the local stack hands it to its demo users (a secret: keep it in a
    /// 0600 file, never in a log line).
    pub async fn hotp_uri(&self, user: &str) -> Result<String, TestkitError> {
        let otp = self.otp.lock().await;
        let hotp = otp.get(user).ok_or_else(|| {
            TestkitError::InvalidInput(format!("{user} was not added with add_user"))
        })?;
        Ok(format!(
            "otpauth://hotp/writeback:{user}?secret={}&counter={}&digits=6&algorithm=SHA1&issuer=writeback",
            base32(&hotp.secret),
            hotp.counter
        ))
    }

    /// An access token from the password grant (no MFA): scope and `aud`
    /// [`AUDIENCE`].
    pub async fn password_token(
        &self,
        client_id: &str,
        secret: &str,
        user: &str,
        password: &str,
    ) -> Result<String, TestkitError> {
        let body = self
            .token_request(
                "password grant",
                client_id,
                secret,
                &[
                    ("grant_type", "password"),
                    ("username", user),
                    ("password", password),
                    ("scope", AUDIENCE),
                ],
            )
            .await?;
        access_token("password grant", &body)
    }

    /// An access token for the client itself (client-credentials grant): scope and
    /// `aud` [`AUDIENCE`], `sub` = `client_id`.
    pub async fn client_credentials_token(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<String, TestkitError> {
        let body = self
            .token_request(
                "client credentials grant",
                client_id,
                secret,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", AUDIENCE),
                    ("resource", AUDIENCE),
                ],
            )
            .await?;
        access_token("client credentials grant", &body)
    }

    /// An access token after password + HOTP: a fresh session signs in with both
    /// through glewlwyd's auth API, grants the client the scopes, and runs the
    /// authorization code flow with plain requests. The token has `aud`
    /// [`AUDIENCE`] and scope [`AUDIENCE`] + [`MFA_SCOPE`] (+ `openid`); the flow's
    /// id_token must show `amr` `["password", "otp"]`, else this fails.
    pub async fn mfa_token(
        &self,
        client_id: &str,
        secret: &str,
        user: &str,
        password: &str,
    ) -> Result<String, TestkitError> {
        let cookie = self.sign_in(user, password).await?;
        let mut otp = self.otp.lock().await;
        let hotp = otp.get_mut(user).ok_or_else(|| {
            TestkitError::InvalidInput(format!("{user} was not added with add_user"))
        })?;
        let code = hotp_code(&hotp.secret, hotp.counter)?;
        self.user_auth(
            "hotp sign-in",
            &cookie,
            json!({
                "username": user,
                "scheme_type": "otp",
                "scheme_name": OTP_SCHEME,
                "value": {"value": code},
            }),
        )
        .await?;
        hotp.counter += 1;
        drop(otp);

        let scope = format!("openid {AUDIENCE} {MFA_SCOPE}");
        let req = self
            .http
            .put(format!("{}/api/auth/grant/{client_id}", self.base))
            .header(header::COOKIE, &cookie)
            .json(&json!({ "scope": scope }));
        expect_ok("grant scopes", self.send("grant scopes", req).await?).await?;

        let state = random_alnum(16)?;
        let nonce = random_alnum(16)?;
        let mut auth = url::Url::parse(&format!("{}/auth", self.issuer))
            .map_err(|e| TestkitError::InvalidInput(format!("auth url: {e}")))?;
        auth.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("scope", &scope)
            .append_pair("resource", AUDIENCE)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            // What the login page adds once the user is through: "go on, don't show me".
            .append_pair("g_continue", "");
        let resp = self
            .send(
                "authorization request",
                self.http.get(auth).header(header::COOKIE, &cookie),
            )
            .await?;
        let code = authorization_code(resp, &state).await?;

        let body = self
            .token_request(
                "authorization code grant",
                client_id,
                secret,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT_URI),
                ],
            )
            .await?;
        let id_token = body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| api_error("authorization code grant", 200, &body))?;
        let (_, claims) = jwt_parts(id_token)?;
        let amr = claims.get("amr").cloned().unwrap_or(Value::Null);
        if !amr
            .as_array()
            .is_some_and(|a| a.iter().any(|m| m == OTP_SCHEME))
        {
            return Err(TestkitError::OidcApi {
                op: "authorization code grant".into(),
                status: 200,
                body: format!("id_token amr {amr} does not show the otp scheme"),
            });
        }
        access_token("authorization code grant", &body)
    }

    /// Replace the signing key with a fresh RSA key while the provider runs; returns
    /// the new `kid`, which the JWKS lists (alone) from then on.
    pub async fn rotate_signing_key(&mut self) -> Result<String, TestkitError> {
        let old = self.kid.clone();
        let (key, cert) = self.new_signing_key().await?;
        self.update_plugin(vec![
            ("key", Value::String(key)),
            ("cert", Value::String(cert)),
        ])
        .await?;
        self.kid = self.published_kid().await?;
        if self.kid == old {
            return Err(TestkitError::OidcApi {
                op: "rotate signing key".into(),
                status: 200,
                body: format!("jwks still lists only kid {old}"),
            });
        }
        info!(old_kid = %old, new_kid = %self.kid, "rotated oidc signing key");
        Ok(self.kid.clone())
    }

    /// Access tokens issued from now on live `seconds` (3600 at start), so a
    /// test can hold one that expires.
    pub async fn set_access_token_duration(&self, seconds: u64) -> Result<(), TestkitError> {
        self.update_plugin(vec![("access-token-duration", Value::from(seconds))])
            .await
    }

    /// Sets parameters of the OpenID Connect plugin and re-initialises it (it
    /// reads its parameters, keys included, only then).
    async fn update_plugin(&self, set: Vec<(&str, Value)>) -> Result<(), TestkitError> {
        let mut plugin = self
            .admin(
                "get oidc plugin",
                Method::GET,
                &format!("mod/plugin/{PLUGIN}"),
                None,
            )
            .await?;
        let Some(params) = plugin.get_mut("parameters").and_then(Value::as_object_mut) else {
            return Err(api_error("get oidc plugin", 200, &plugin));
        };
        for (name, value) in set {
            params.insert(name.into(), value);
        }
        self.admin(
            "update oidc plugin",
            Method::PUT,
            &format!("mod/plugin/{PLUGIN}"),
            Some(plugin),
        )
        .await?;
        self.admin(
            "reset oidc plugin",
            Method::PUT,
            &format!("mod/plugin/{PLUGIN}/reset"),
            None,
        )
        .await?;
        Ok(())
    }

    /// Everything after the admin could sign in: API key, admin password, HOTP
    /// scheme, scopes, OIDC plugin.
    async fn configure(&mut self, admin_cookie: &str) -> Result<(), TestkitError> {
        let req = self
            .http
            .post(format!("{}/api/key/", self.base))
            .header(header::COOKIE, admin_cookie);
        let key = json_body("create api key", self.send("create api key", req).await?).await?;
        self.api_key = key
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| api_error("create api key", 200, &key))?
            .to_string();
        // Nobody else on this machine signs in with the package default.
        self.admin(
            "set admin password",
            Method::PUT,
            &format!("user/{}", DEFAULT_ADMIN.0),
            Some(json!({
                "name": "Administrator",
                "enabled": true,
                "scope": ["g_admin", "g_profile"],
                "password": format!("Wb!{}", random_alnum(24)?),
            })),
        )
        .await?;
        self.admin(
            "add hotp scheme",
            Method::POST,
            "mod/scheme/",
            Some(json!({
                "module": "otp",
                "name": OTP_SCHEME,
                "display_name": "HOTP/TOTP",
                "expiration": 600,
                "max_use": 0,
                "allow_user_register": true,
                "parameters": {
                    "otp-length": 6,
                    "issuer": "writeback-test",
                    "secret-minimum-size": 20,
                    "hotp-allow": true,
                    "hotp-window": 10,
                    "totp-allow": false,
                    "totp-window": 30,
                    "totp-start-offset": 0,
                },
            })),
        )
        .await?;
        for (name, scheme) in [
            (AUDIENCE, json!({})),
            (
                MFA_SCOPE,
                json!({"0": [{"scheme_type": "otp", "scheme_name": OTP_SCHEME}]}),
            ),
        ] {
            self.admin(
                &format!("add scope {name}"),
                Method::POST,
                "scope/",
                Some(json!({
                    "name": name,
                    "display_name": name,
                    "description": "writeback test scope",
                    "password_required": true,
                    "password_max_age": 0,
                    "scheme": scheme,
                })),
            )
            .await?;
        }
        let (key, cert) = self.new_signing_key().await?;
        self.admin(
            "add oidc plugin",
            Method::POST,
            "mod/plugin/",
            Some(json!({
                "module": "oidc",
                "name": PLUGIN,
                "display_name": "OpenID Connect",
                "enabled": true,
                "parameters": {
                    "iss": self.issuer,
                    "jwt-type": "rsa",
                    "jwt-key-size": "256",
                    "key": key,
                    "cert": cert,
                    "jwks-show": true,
                    "subject-type": "public",
                    "access-token-duration": 3600,
                    "refresh-token-duration": 1209600,
                    "code-duration": 600,
                    "refresh-token-rolling": false,
                    "allow-non-oidc": true,
                    "auth-type-code-enabled": true,
                    "auth-type-token-enabled": false,
                    "auth-type-id-token-enabled": true,
                    "auth-type-password-enabled": true,
                    "auth-type-client-enabled": true,
                    "auth-type-refresh-enabled": true,
                    "resource-allowed": true,
                    // PKCE (RFC 7636): S256 only; a code issued for a challenge is
                    // exchanged only with its verifier; public clients must use it.
                    "pkce-allowed": true,
                    "pkce-method-plain-allowed": false,
                    "pkce-required-public-client": true,
                    "resource-scope": {AUDIENCE: [AUDIENCE], MFA_SCOPE: [AUDIENCE]},
                    "resource-scope-and-client-property": false,
                    "additional-parameters": [
                        {"user-parameter": "upn", "token-parameter": "upn"},
                        {"user-parameter": "groups", "token-parameter": "groups"},
                    ],
                },
            })),
        )
        .await?;
        self.kid = self.published_kid().await?;
        Ok(())
    }

    /// A fresh RSA-2048 key pair (PEM private key, PEM public key) from openssl.
    async fn new_signing_key(&mut self) -> Result<(String, String), TestkitError> {
        self.key_seq += 1;
        let key = self
            .dir_path
            .join(format!("keys/sign-{}.key", self.key_seq));
        let kept = self.kept_key.as_ref().filter(|_| self.key_seq == 1);
        if let Some(kept) = kept.filter(|k| k.exists()) {
            std::fs::copy(kept, &key)
                .map_err(|e| TestkitError::io(format!("copy {}", kept.display()), e))?;
        } else {
            let out = tokio::process::Command::new("openssl")
                .args(["genpkey", "-quiet", "-algorithm", "RSA"])
                .args(["-pkeyopt", "rsa_keygen_bits:2048", "-out"])
                .arg(&key)
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| spawn_error("openssl", e))?;
            command_ok("openssl genpkey -algorithm RSA", &out)?;
            if let Some(kept) = kept {
                let pem = std::fs::read(&key)
                    .map_err(|e| TestkitError::io(format!("read {}", key.display()), e))?;
                write_file(kept, &pem, 0o600)?;
            }
        }
        let out = tokio::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| spawn_error("openssl", e))?;
        command_ok("openssl pkey -pubout", &out)?;
        let private = std::fs::read_to_string(&key)
            .map_err(|e| TestkitError::io(format!("read {}", key.display()), e))?;
        Ok((private, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// The single `kid` the JWKS lists.
    async fn published_kid(&self) -> Result<String, TestkitError> {
        let jwks = self.jwks().await?;
        match jwks
            .get("keys")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            Some([key]) => key
                .get("kid")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| api_error("get jwks", 200, &jwks)),
            _ => Err(api_error("get jwks", 200, &jwks)),
        }
    }

    /// A new session signed in as `user` with the password; returns its cookie.
    async fn sign_in(&self, user: &str, password: &str) -> Result<String, TestkitError> {
        let resp = self
            .send(
                "password sign-in",
                self.http
                    .post(format!("{}/api/auth/", self.base))
                    .json(&json!({"username": user, "password": password})),
            )
            .await?;
        let cookie = session_cookie(&resp);
        expect_ok("password sign-in", resp).await?;
        cookie.ok_or_else(|| TestkitError::OidcApi {
            op: "password sign-in".into(),
            status: 200,
            body: format!("no {SESSION_COOKIE} cookie"),
        })
    }

    async fn user_auth(&self, op: &str, cookie: &str, body: Value) -> Result<(), TestkitError> {
        let req = self
            .http
            .post(format!("{}/api/auth/", self.base))
            .header(header::COOKIE, cookie)
            .json(&body);
        expect_ok(op, self.send(op, req).await?).await
    }

    /// POST to the token endpoint with HTTP Basic client authentication; the JSON
    /// body of a 200.
    async fn token_request(
        &self,
        op: &str,
        client_id: &str,
        secret: &str,
        form: &[(&str, &str)],
    ) -> Result<Value, TestkitError> {
        let req = self
            .http
            .post(self.token_endpoint())
            .basic_auth(client_id, Some(secret))
            .form(form);
        json_body(op, self.send(op, req).await?).await
    }

    /// An admin API call authenticated by the API key; the JSON body, if any.
    async fn admin(
        &self,
        op: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, TestkitError> {
        let mut req = self
            .http
            .request(method, format!("{}/api/{path}", self.base))
            .header(header::AUTHORIZATION, format!("token {}", self.api_key));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = self.send(op, req).await?;
        let status = resp.status();
        let text = resp.text().await.map_err(http_error(op))?;
        if status != StatusCode::OK {
            return Err(TestkitError::OidcApi {
                op: op.into(),
                status: status.as_u16(),
                body: self.with_log(text),
            });
        }
        debug!(op, "glewlwyd admin call ok");
        if text.trim().is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_str(&text).map_err(|e| TestkitError::OidcApi {
                op: op.into(),
                status: 200,
                body: format!("{e}: {text}"),
            })
        }
    }

    async fn send(
        &self,
        op: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, TestkitError> {
        req.send().await.map_err(http_error(op))
    }

    /// `text` followed by the tail of glewlwyd's log, which says why it refused.
    fn with_log(&self, text: String) -> String {
        format!(
            "{text}\nglewlwyd log tail:\n{}",
            tail_lines(&log_tail(&self.dir_path.join(LOG)), 10)
        )
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

async fn init_database(db: &Path) -> Result<(), TestkitError> {
    let out = tokio::process::Command::new("sqlite3")
        .arg("-bail")
        .arg(db)
        .arg(format!(".read {INIT_SQL}"))
        .arg(USER_PROPERTIES_SQL)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| spawn_error("sqlite3", e))?;
    command_ok(&format!("sqlite3 {} .read {INIT_SQL}", db.display()), &out)?;
    if !out.stderr.is_empty() {
        // sqlite3 reports SQL errors on stderr even where it exits 0 (older CLIs).
        return Err(TestkitError::Command {
            command: format!("sqlite3 .read {INIT_SQL}"),
            status: out.status.to_string(),
            stderr: tail_lines(&String::from_utf8_lossy(&out.stderr), 20),
        });
    }
    Ok(())
}

fn command_ok(command: &str, out: &std::process::Output) -> Result<(), TestkitError> {
    if out.status.success() {
        Ok(())
    } else {
        Err(TestkitError::Command {
            command: command.to_string(),
            status: out.status.to_string(),
            stderr: tail_lines(&String::from_utf8_lossy(&out.stderr), 20),
        })
    }
}

/// `https://<public host or 127.0.0.1>:<port>`
fn public_base(opts: &OidcOptions, port: u16) -> String {
    let host = opts.public_host.as_deref().unwrap_or("127.0.0.1");
    format!("https://{host}:{port}")
}

fn config_text(port: u16, bind: std::net::IpAddr, base: &str, dir: &Path) -> String {
    let dir = dir.display();
    format!(
        r#"# generated by writeback-testkit (oidc.rs)
port={port}
bind_address="{bind}"
external_url="{base}"
login_url="login.html"
api_prefix="api"
static_files_path="{dir}/{WEBAPP_DIR}/"
static_files_mime_types =
(
  {{ extension = ".html"; mime_type = "text/html; charset=utf-8"; }},
  {{ extension = ".css"; mime_type = "text/css"; }},
  {{ extension = ".js"; mime_type = "application/javascript"; }},
  {{ extension = ".json"; mime_type = "application/json"; }},
  {{ extension = ".map"; mime_type = "application/json"; }},
  {{ extension = ".png"; mime_type = "image/png"; }},
  {{ extension = ".ico"; mime_type = "image/x-icon"; }},
  {{ extension = ".svg"; mime_type = "image/svg+xml"; }},
  {{ extension = ".ttf"; mime_type = "font/ttf"; }},
  {{ extension = ".eot"; mime_type = "application/vnd.ms-fontobject"; }},
  {{ extension = ".woff"; mime_type = "font/woff"; }},
  {{ extension = ".woff2"; mime_type = "font/woff2"; }}
);
allow_origin="*"
log_mode="console"
log_level="DEBUG"
cookie_domain=""
cookie_secure=1
session_expiration=3600
session_key="{SESSION_COOKIE}"
admin_session_authentication="cookie,api_key"
profile_session_authentication="cookie"
allow_multiple_user_per_session=false
login_api_enabled=true
admin_scope="g_admin"
profile_scope="g_profile"
user_module_path="/usr/lib/glewlwyd/user"
user_middleware_module_path="{dir}/user_middleware"
client_module_path="/usr/lib/glewlwyd/client"
user_auth_scheme_module_path="/usr/lib/glewlwyd/scheme"
plugin_module_path="/usr/lib/glewlwyd/plugin"
use_secure_connection=true
secure_connection_key_file="{dir}/tls/key.pem"
secure_connection_pem_file="{dir}/tls/cert.pem"
hash_algorithm="SHA512"
database =
{{
  type = "sqlite3"
  path = "{dir}/glewlwyd.db"
}};
"#
    )
}

/// Lays out glewlwyd's login web app in `dir` for `static_files_path`: a copy of
/// [`PACKAGE_WEBAPP`] (36 files, 4.5 MB) with symbolic links resolved, but
/// `config.json`, which is written from [`WEBAPP_CONFIG`]. A copy, because
/// glewlwyd serves no file that resolves outside `static_files_path`, and the
/// package links its jQuery, Bootstrap and Fork Awesome files from other Debian
/// packages; and Debian bookworm's `config.json` is a link to
/// `/etc/glewlwyd/config-2.7.json`, which glewlwyd-common installs as a
/// *directory*. Served as is, the app would get a 404 for its configuration and
/// its scripts and stay at "Loading...".
fn prepare_webapp(dir: &Path) -> Result<(), TestkitError> {
    copy_resolved(Path::new(PACKAGE_WEBAPP), dir, true).map_err(|e| {
        TestkitError::io(
            format!("copy {PACKAGE_WEBAPP} (glewlwyd's login app; run scripts/install-deps.sh)"),
            e,
        )
    })?;
    write_file(&dir.join("config.json"), WEBAPP_CONFIG.as_bytes(), 0o644)
}

/// Copies the tree `from` to `to`, following symbolic links; at the top level
/// (`top`), `config.json` is left out.
fn copy_resolved(from: &Path, to: &Path, top: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if top && name == "config.json" {
            continue;
        }
        let source = entry.path();
        // metadata() follows links: a link to a directory is copied as one.
        if std::fs::metadata(&source)?.is_dir() {
            copy_resolved(&source, &to.join(&name), false)?;
        } else {
            std::fs::copy(&source, to.join(&name))?;
        }
    }
    Ok(())
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

fn spawn_glewlwyd(dir: &Path, conf: &Path) -> Result<(Child, ChildStdin), TestkitError> {
    let log_path = dir.join(LOG);
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| TestkitError::io(format!("open {}", log_path.display()), e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| TestkitError::io("clone log handle", e))?;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(WRAPPER_SH)
        .arg("glewlwyd-wrapper")
        .arg(conf)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(log_err)
        .env("LC_ALL", "C")
        .process_group(0)
        .spawn()
        .map_err(|e| spawn_error("sh", e))?;
    let stdin = child.stdin.take().ok_or_else(|| {
        TestkitError::io(
            "glewlwyd wrapper stdin",
            std::io::Error::other("not captured"),
        )
    })?;
    debug!(pid = child.id(), dir = %dir.display(), "spawned glewlwyd");
    Ok((child, stdin))
}

/// Poll the admin sign-in with the package's default credentials until it succeeds;
/// returns the admin session cookie.
async fn wait_ready(
    http: &reqwest::Client,
    base: &str,
    child: &mut Child,
    log: &Path,
) -> Result<String, TestkitError> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => {
                return Err(TestkitError::OidcExited {
                    status: status.to_string(),
                    log_tail: log_tail(log),
                });
            }
            Err(e) => return Err(TestkitError::io("poll glewlwyd process", e)),
        }
        let attempt = http
            .post(format!("{base}/api/auth/"))
            .json(&json!({"username": DEFAULT_ADMIN.0, "password": DEFAULT_ADMIN.1}))
            .send()
            .await;
        let last_error = match attempt {
            Ok(resp) if resp.status() == StatusCode::OK => {
                if let Some(cookie) = session_cookie(&resp) {
                    debug!(
                        waited_ms = started.elapsed().as_millis() as u64,
                        "glewlwyd ready"
                    );
                    return Ok(cookie);
                }
                format!("admin sign-in set no {SESSION_COOKIE} cookie")
            }
            Ok(resp) => format!("admin sign-in returned {}", resp.status()),
            Err(e) => error_chain(&e),
        };
        if started.elapsed() > READY_DEADLINE {
            return Err(TestkitError::OidcNotReady {
                waited: started.elapsed(),
                last_error,
                log_tail: log_tail(log),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// An HTTP client that trusts only the test CA and follows no redirects.
fn http_client(ca_pem: &str) -> Result<reqwest::Client, TestkitError> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())
        .map_err(|e| TestkitError::InvalidInput(format!("test CA PEM: {e}")))?;
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(http_error("build http client"))
}

/// `GLEWLWYD2_SESSION_ID=<value>` from a response's Set-Cookie headers. glewlwyd
/// sends `Domain=` (empty), which a cookie store may refuse, so the harness keeps
/// the one cookie it needs itself.
fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| {
            pair.split_once('=')
                .is_some_and(|(name, value)| name.trim() == SESSION_COOKIE && !value.is_empty())
        })
        .map(|pair| pair.trim().to_string())
}

/// The `code` from the authorization endpoint's redirect to [`REDIRECT_URI`].
async fn authorization_code(resp: reqwest::Response, state: &str) -> Result<String, TestkitError> {
    let op = "authorization request";
    let status = resp.status();
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(location) = location.clone().filter(|l| l.starts_with(REDIRECT_URI)) else {
        // Anything else (the login page, an error page) means the session was not
        // good enough for the scopes.
        let text = resp.text().await.unwrap_or_default();
        return Err(TestkitError::OidcApi {
            op: op.into(),
            status: status.as_u16(),
            body: format!("no redirect to the client: location {location:?}, body {text}"),
        });
    };
    let url = url::Url::parse(&location)
        .map_err(|e| TestkitError::InvalidInput(format!("redirect {location}: {e}")))?;
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    if query.get("state").map(String::as_str) != Some(state) {
        return Err(TestkitError::OidcApi {
            op: op.into(),
            status: status.as_u16(),
            body: format!("redirect without our state: {location}"),
        });
    }
    query
        .get("code")
        .cloned()
        .ok_or_else(|| TestkitError::OidcApi {
            op: op.into(),
            status: status.as_u16(),
            body: format!("redirect without a code: {location}"),
        })
}

async fn expect_ok(op: &str, resp: reqwest::Response) -> Result<(), TestkitError> {
    let status = resp.status();
    if status == StatusCode::OK {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(TestkitError::OidcApi {
        op: op.into(),
        status: status.as_u16(),
        body,
    })
}

async fn json_body(op: &str, resp: reqwest::Response) -> Result<Value, TestkitError> {
    let status = resp.status();
    let text = resp.text().await.map_err(http_error(op))?;
    if status != StatusCode::OK {
        return Err(TestkitError::OidcApi {
            op: op.into(),
            status: status.as_u16(),
            body: text,
        });
    }
    serde_json::from_str(&text).map_err(|e| TestkitError::OidcApi {
        op: op.into(),
        status: status.as_u16(),
        body: format!("{e}: {text}"),
    })
}

fn access_token(op: &str, body: &Value) -> Result<String, TestkitError> {
    body.get("access_token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| api_error(op, 200, body))
}

fn api_error(op: &str, status: u16, body: &Value) -> TestkitError {
    TestkitError::OidcApi {
        op: op.into(),
        status,
        body: body.to_string(),
    }
}

fn http_error(op: &str) -> impl FnOnce(reqwest::Error) -> TestkitError {
    let op = op.to_string();
    move |e| TestkitError::Http {
        op,
        detail: error_chain(&e),
    }
}

/// An error with its causes ("a: b: c"); reqwest's own message is only the top.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn random_bytes<const N: usize>() -> Result<[u8; N], TestkitError> {
    let mut buf = [0u8; N];
    OsRng.try_fill_bytes(&mut buf).map_err(|e| {
        TestkitError::io("read OS randomness", std::io::Error::other(e.to_string()))
    })?;
    Ok(buf)
}

/// RFC 4226 HOTP, 6 digits, HMAC-SHA1.
fn hotp_code(secret: &[u8], counter: u64) -> Result<String, TestkitError> {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret)
        .map_err(|e| TestkitError::InvalidInput(format!("hotp secret: {e}")))?;
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    Ok(format!("{:06}", binary % 1_000_000))
}

/// RFC 4648 base32 without padding (glewlwyd's OTP secret format).
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
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
