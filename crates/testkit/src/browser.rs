//! A real browser for end-to-end tests: Debian's Chromium, headless, driven over
//! WebDriver by Debian's `chromedriver` (package `chromium-driver`) with the
//! [`fantoccini`] client. Nothing is downloaded: both come from
//! `scripts/install-deps.sh`.
//!
//! [`Browser::start`] gives a test its own chromedriver:
//!
//! 1. **Directory.** A temporary directory holds the browser's `HOME`, its `TMPDIR`,
//!    one Chromium profile per [`Session`] and `chromedriver.log`.
//! 2. **Trust.** Chromium on Linux verifies server certificates against the
//!    built-in Chrome Root Store *plus* the anchors the user trusts in the NSS
//!    database `$HOME/.pki/nssdb`. The harness creates that database with `certutil`
//!    (package `libnss3-tools`) in its own `HOME` and adds each PEM given to
//!    [`Browser::start`] (a [`TestCa`](crate::TestCa), e.g.
//!    [`OidcProvider::ca_pem`]) with trust `C,,` (a CA trusted to issue server
//!    certificates). chromedriver runs with that `HOME`, so every Chromium it starts
//!    trusts exactly those test CAs on top of the public roots — and nothing
//!    else: certificate errors are never ignored (no `--ignore-certificate-errors`,
//!    `acceptInsecureCerts: false`), so a page from another CA shows Chromium's
//!    "Your connection is not private" interstitial and [`Session::goto`] fails
//!    with `NET::ERR_CERT_AUTHORITY_INVALID`.
//! 3. **Process.** chromedriver runs on `127.0.0.1:<free port>` (only local
//!    connections are allowed) under a tiny `sh` wrapper in its own process group,
//!    with the wrapper's stdin on a pipe: when the pipe closes (`Drop`, or a test
//!    process that died) the wrapper SIGKILLs the whole group — chromedriver and
//!    every Chromium process it started (Chromium's crash handlers, which leave the
//!    group, exit with their browser). The temporary directory goes afterwards.
//! 4. **Readiness.** `GET /status` is polled until `ready` with a 30 s deadline (a
//!    chromedriver that lost the port race exits and is retried on a new port).
//!
//! [`Browser::session`] opens a headless Chromium (`--headless=new`) in a fresh
//! profile with a [`Viewport`]: [`Viewport::Desktop`] (1280×900) or
//! [`Viewport::Phone`] (390×844 CSS pixels through Chromium's mobile emulation:
//! touch, mobile viewport, device scale factor 2). The browser talks to loopback
//! only: no proxy, no background networking, no component updates, no sync.
//! [`Session`] wraps the WebDriver client with the few helpers tests need (go to,
//! find by CSS or by label, fill, click, wait for an element or a URL with a
//! deadline, page source and text, screenshot to a PNG); [`Session::client`] is
//! the whole [`fantoccini::Client`].
//!
//! [`sign_in_at_glewlwyd`] signs a user in through glewlwyd's own login page (see
//! its docs for the page's elements and steps), and [`HttpsLanding`] is a tiny
//! HTTPS endpoint with a test-CA certificate to use as a client's redirect URI.
//!
//! ```no_run
//! # async fn demo() -> Result<(), writeback_testkit::TestkitError> {
//! use std::time::Duration;
//! use writeback_testkit::browser::{Browser, Viewport};
//! use writeback_testkit::oidc::OidcProvider;
//!
//! let idp = OidcProvider::start().await?;
//! let browser = Browser::start(&[idp.ca_pem()]).await?;
//! let session = browser.session(Viewport::Phone).await?;
//! session.goto(&idp.login_page_url()).await?;
//! session.wait_for("#passwordForm", Duration::from_secs(10)).await?;
//! session.screenshot(&std::env::temp_dir().join("login.png")).await?;
//! session.close().await?;
//! # Ok(()) }
//! ```
//!
//! Set `WRITEBACK_TESTKIT_KEEP=1` to keep the directory (log, profiles).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::error::CmdError;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

pub use fantoccini::Locator;
pub use fantoccini::elements::Element;

use crate::TestkitError;
use crate::oidc::{OidcProvider, free_port};
use crate::pki::TestCa;
use crate::samba::{create_dir, log_tail, spawn_error, write_file};

/// The browser itself; the `/usr/bin/chromium` launcher only adds desktop flags.
const CHROMIUM: &str = "/usr/lib/chromium/chromium";
const CHROMEDRIVER: &str = "chromedriver";
const LOG: &str = "chromedriver.log";
const READY_DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const START_ATTEMPTS: usize = 3;
/// How long the browser's processes may take to go once chromedriver's wrapper
/// has killed their group.
const GROUP_EXIT_GRACE: Duration = Duration::from_secs(5);
/// What [`sign_in_at_glewlwyd`] allows the whole sign-in, every step included.
const SIGN_IN_DEADLINE: Duration = Duration::from_secs(30);
/// How much of a page's text an error carries.
const PAGE_TEXT_IN_ERRORS: usize = 600;
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Runs chromedriver and, when stdin (a pipe from the harness) reaches EOF, kills
/// the whole process group: chromedriver and the browsers it started. Background
/// jobs of a non-interactive shell get /dev/null as stdin, hence fd 3.
const WRAPPER_SH: &str = r#"exec 3<&0
chromedriver --port="$1" --allowed-ips=127.0.0.1 </dev/null 3<&- &
d=$!
{ read -r _ <&3; kill -KILL 0; } &
w=$!
wait "$d"
s=$?
kill "$w" 2>/dev/null
exit "$s"
"#;

/// The size of the browser's page area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewport {
    /// A 1280×900 desktop window.
    Desktop,
    /// A 390×844 phone (CSS pixels), emulated: mobile viewport, touch, scale 2.
    /// As on a real phone, a page without `<meta name="viewport"
    /// content="width=device-width">` is laid out 980 pixels wide and shrunk.
    Phone,
    /// A desktop window of the given size.
    Window { width: u32, height: u32 },
}

impl Viewport {
    /// (width, height) in CSS pixels.
    pub fn size(self) -> (u32, u32) {
        match self {
            Viewport::Desktop => (1280, 900),
            Viewport::Phone => (390, 844),
            Viewport::Window { width, height } => (width, height),
        }
    }
}

/// One running chromedriver whose browsers trust the given test CAs.
///
/// Dropping it closes the wrapper's stdin, which SIGKILLs chromedriver and every
/// browser it started (SIGKILL of the group after 5 s if that did not end it), and
/// removes the directory. Open [`Session`]s stop working then.
pub struct Browser {
    webdriver_url: String,
    home: PathBuf,
    sessions: AtomicU32,
    dir_path: PathBuf,
    // Drop stops the child first; the directory goes after.
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("webdriver_url", &self.webdriver_url)
            .field("dir", &self.dir_path)
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Start chromedriver with an NSS trust store holding `trusted_ca_pems` (PEM
    /// CA certificates, e.g. [`TestCa::cert_pem`], [`OidcProvider::ca_pem`]); see
    /// the module docs. Returns once chromedriver reports ready (no browser runs
    /// yet: [`Browser::session`] starts one).
    pub async fn start(trusted_ca_pems: &[String]) -> Result<Browser, TestkitError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let started = Instant::now();
        if !Path::new(CHROMIUM).exists() {
            return Err(TestkitError::MissingTool {
                program: CHROMIUM.into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("writeback-testkit-browser-")
            .tempdir()
            .map_err(|e| TestkitError::io("create browser directory", e))?;
        let dir_path = dir.path().to_path_buf();
        let home = dir_path.join("home");
        for sub in ["home", "tmp", "profiles", "cas"] {
            create_dir(&dir_path.join(sub))?;
        }
        trust_cas(&home, &dir_path.join("cas"), trusted_ca_pems).await?;
        let trusted = started.elapsed();

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(|e| TestkitError::Browser {
                op: "build http client".into(),
                detail: e.to_string(),
            })?;
        let mut attempt = 0;
        let (child, stdin, webdriver_url) = loop {
            attempt += 1;
            let port = free_port()?;
            let url = format!("http://127.0.0.1:{port}");
            let (mut child, stdin) = spawn_chromedriver(&dir_path, port)?;
            match wait_ready(&http, &url, &mut child, &dir_path.join(LOG)).await {
                Ok(()) => break (child, stdin, url),
                // Most likely the port was taken between our probe and its bind.
                Err(e @ TestkitError::BrowserExited { .. }) if attempt < START_ATTEMPTS => {
                    warn!(port, error = %e, "chromedriver exited during start; retrying");
                    drop(stdin);
                    let _ = child.wait();
                }
                Err(e) => {
                    crate::child::stop("chromedriver", Some(stdin), Some(child), None, &dir_path);
                    return Err(e);
                }
            }
        };
        info!(
            webdriver = %webdriver_url,
            dir = %dir_path.display(),
            trusted_cas = trusted_ca_pems.len(),
            trust_ms = trusted.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "browser (chromedriver) ready"
        );
        Ok(Browser {
            webdriver_url,
            home,
            sessions: AtomicU32::new(0),
            dir_path,
            child: Some(child),
            stdin: Some(stdin),
            dir: Some(dir),
        })
    }

    /// Start a headless Chromium with a fresh profile and the given viewport.
    pub async fn session(&self, viewport: Viewport) -> Result<Session, TestkitError> {
        let started = Instant::now();
        let n = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let profile = self.dir_path.join(format!("profiles/{n}"));
        create_dir(&profile)?;
        let (width, height) = viewport.size();
        let mut args = vec![
            "--headless=new".to_string(),
            // Chromium's sandbox needs an unprivileged user (or user namespaces it
            // may not create as root); the tests run as root, where Chromium
            // refuses to start without this. The pages it opens are the tests' own.
            "--no-sandbox".to_string(),
            // /dev/shm may be small (containers): shared memory goes to TMPDIR.
            "--disable-dev-shm-usage".to_string(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={width},{height}"),
            "--lang=en-US".to_string(),
            // Loopback only: no proxy from the environment, nothing phoning home.
            "--no-proxy-server".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-domain-reliability".to_string(),
            "--disable-client-side-phishing-detection".to_string(),
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,PasswordLeakDetection".to_string(),
            "--no-first-run".to_string(),
            "--no-default-browser-check".to_string(),
            "--password-store=basic".to_string(),
            "--disable-gpu".to_string(),
            "--hide-scrollbars".to_string(),
        ];
        if viewport != Viewport::Phone {
            args.push("--force-device-scale-factor=1".to_string());
        }
        let mut chrome = json!({
            "binary": CHROMIUM,
            "args": args,
            "prefs": {
                "intl.accept_languages": "en-US",
                "credentials_enable_service": false,
                "profile.password_manager_enabled": false,
            },
        });
        if viewport == Viewport::Phone {
            chrome["mobileEmulation"] = json!({
                "deviceMetrics": {
                    "width": width,
                    "height": height,
                    "pixelRatio": 2.0,
                    "touch": true,
                    "mobile": true,
                },
            });
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("acceptInsecureCerts".into(), json!(false));
        caps.insert("pageLoadStrategy".into(), json!("normal"));
        caps.insert("goog:chromeOptions".into(), chrome);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.webdriver_url)
            .await
            .map_err(|e| TestkitError::Browser {
                op: "open session".into(),
                detail: format!(
                    "{e}; chromedriver log tail:\n{}",
                    log_tail(&self.dir_path.join(LOG))
                ),
            })?;
        let session = Session { client, viewport };
        if viewport != Viewport::Phone {
            session.fit_window(width, height).await?;
        }
        info!(
            session = n,
            ?viewport,
            started_ms = started.elapsed().as_millis() as u64,
            "browser session open"
        );
        Ok(session)
    }

    /// `http://127.0.0.1:<port>` of chromedriver, for another WebDriver client.
    pub fn webdriver_url(&self) -> &str {
        &self.webdriver_url
    }

    /// The `HOME` chromedriver and its browsers run with (`.pki/nssdb` inside).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The browser's working directory (`chromedriver.log`, `profiles/`).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Process id of chromedriver's wrapper shell, which leads the process group
    /// (None once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok());
        crate::child::stop(
            "chromedriver",
            self.stdin.take(),
            self.child.take(),
            None,
            &self.dir_path,
        );
        // The wrapper is gone; wait for the rest of its group (Chromium's
        // processes, killed with it) so none still writes to the directory.
        if let Some(group) = group {
            let group = Pid::from_raw(group);
            let deadline = Instant::now() + GROUP_EXIT_GRACE;
            while killpg(group, None).is_ok() {
                if Instant::now() >= deadline {
                    warn!(pgid = %group, "browser processes outlived chromedriver; killing them");
                    let _ = killpg(group, Signal::SIGKILL);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        crate::child::stop("chromedriver", None, None, self.dir.take(), &self.dir_path);
    }
}

/// One headless Chromium (one WebDriver session) of a [`Browser`].
///
/// Element lookups are by CSS selector unless a method says otherwise. Errors
/// name the operation and, for waits, carry the page's URL and text.
#[derive(Debug, Clone)]
pub struct Session {
    client: fantoccini::Client,
    viewport: Viewport,
}

impl Session {
    /// The whole WebDriver client, for what the helpers do not cover.
    pub fn client(&self) -> &fantoccini::Client {
        &self.client
    }

    /// The viewport it was opened with.
    pub fn viewport(&self) -> Viewport {
        self.viewport
    }

    /// Navigate and wait for the page to load. Fails when Chromium shows its own
    /// error page instead (see [`Session::error_page`]): a certificate it does not
    /// trust (`NET::ERR_CERT_AUTHORITY_INVALID`), a refused connection…
    ///
    /// `ERR_NETWORK_CHANGED` is retried (twice at most): Chromium aborts a
    /// navigation when an address is added to an interface, which the
    /// harness does whenever another test starts a Samba DC on its own
    /// 127.0.0.N.
    pub async fn goto(&self, url: &str) -> Result<(), TestkitError> {
        let op = format!("go to {url}");
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.client.goto(url).await.map_err(cmd_error(&op))?;
            match self.error_page().await? {
                None => return Ok(()),
                Some(error) if error.starts_with("ERR_NETWORK_CHANGED") && attempts < 3 => {
                    tracing::info!(url, "navigation aborted by a network change; again");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Some(error) => {
                    return Err(TestkitError::Browser {
                        op,
                        detail: format!("Chromium shows an error page: {error}"),
                    });
                }
            }
        }
    }

    /// The error code (e.g. `NET::ERR_CERT_AUTHORITY_INVALID`,
    /// `ERR_CONNECTION_REFUSED`) when the tab shows Chromium's error page or
    /// certificate interstitial rather than a page from a server. WebDriver
    /// reports the URL asked for there; the document itself is at
    /// `chrome-error://chromewebdata/`.
    pub async fn error_page(&self) -> Result<Option<String>, TestkitError> {
        let shown = self
            .execute(
                "return location.href.startsWith('chrome-error://') \
                 ? (document.body ? document.body.innerText : '') : null;",
                vec![],
            )
            .await?;
        let Some(text) = shown.as_str() else {
            return Ok(None);
        };
        let title = self.title().await.unwrap_or_default();
        let code = text
            .split_whitespace()
            .find(|word| word.starts_with("NET::ERR_") || word.starts_with("ERR_"));
        Ok(Some(match code {
            Some(code) => format!("{code} ({title})"),
            None => {
                let text: String = text.chars().take(PAGE_TEXT_IN_ERRORS).collect();
                format!("{title}: {text:?}")
            }
        }))
    }

    /// The URL of the current page.
    pub async fn current_url(&self) -> Result<url::Url, TestkitError> {
        self.client
            .current_url()
            .await
            .map_err(cmd_error("current url"))
    }

    /// The page's title.
    pub async fn title(&self) -> Result<String, TestkitError> {
        self.client.title().await.map_err(cmd_error("title"))
    }

    /// The current DOM serialised (not the bytes the server sent).
    pub async fn source(&self) -> Result<String, TestkitError> {
        self.client.source().await.map_err(cmd_error("page source"))
    }

    /// The rendered text of `<body>` (what a user reads).
    pub async fn text(&self) -> Result<String, TestkitError> {
        self.find("body")
            .await?
            .text()
            .await
            .map_err(cmd_error("page text"))
    }

    /// The element matching `css` now (no waiting).
    pub async fn find(&self, css: &str) -> Result<Element, TestkitError> {
        self.client
            .find(Locator::Css(css))
            .await
            .map_err(cmd_error(&format!("find {css}")))
    }

    /// Every element matching `css` now.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>, TestkitError> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_err(cmd_error(&format!("find all {css}")))
    }

    /// The first *displayed* element matching `css`, if any, now.
    pub async fn visible(&self, css: &str) -> Result<Option<Element>, TestkitError> {
        self.visible_by(Locator::Css(css)).await
    }

    /// The first *displayed* element `locator` finds, if any, now.
    pub async fn visible_by(&self, locator: Locator<'_>) -> Result<Option<Element>, TestkitError> {
        let found = self
            .client
            .find_all(locator)
            .await
            .map_err(cmd_error(&format!("find all {locator:?}")))?;
        for element in found {
            // An element re-rendered away between the two calls counts as hidden.
            if element.is_displayed().await.unwrap_or(false) {
                return Ok(Some(element));
            }
        }
        Ok(None)
    }

    /// Wait until an element matching `css` is displayed, for at most `timeout`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element, TestkitError> {
        self.wait_for_by(Locator::Css(css), timeout).await
    }

    /// Wait until an element `locator` finds is displayed, for at most `timeout`.
    pub async fn wait_for_by(
        &self,
        locator: Locator<'_>,
        timeout: Duration,
    ) -> Result<Element, TestkitError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(element) = self.visible_by(locator).await? {
                return Ok(element);
            }
            if Instant::now() >= deadline {
                return Err(self
                    .page_error(
                        &format!("wait for {locator:?}"),
                        format!("not shown after {timeout:?}"),
                    )
                    .await);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Wait until the current URL starts with `prefix`, for at most `timeout`;
    /// returns it.
    pub async fn wait_for_url(
        &self,
        prefix: &str,
        timeout: Duration,
    ) -> Result<url::Url, TestkitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let url = self.current_url().await?;
            if url.as_str().starts_with(prefix) {
                return Ok(url);
            }
            if Instant::now() >= deadline {
                return Err(self
                    .page_error(
                        &format!("wait for url {prefix}"),
                        format!("still at {url} after {timeout:?}"),
                    )
                    .await);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Replace the value of the input matching `css` by typing `text`.
    pub async fn fill(&self, css: &str, text: &str) -> Result<(), TestkitError> {
        fill_element(&self.find(css).await?, css, text).await
    }

    /// Type `text` into the field labelled `label` (the `<label>`'s whole text,
    /// whitespace-normalised): the element its `for` names, or the field inside it.
    pub async fn fill_by_label(&self, label: &str, text: &str) -> Result<(), TestkitError> {
        let field = self.field_by_label(label).await?;
        fill_element(&field, label, text).await
    }

    /// The form field labelled `label` (see [`Session::fill_by_label`]).
    pub async fn field_by_label(&self, label: &str) -> Result<Element, TestkitError> {
        let op = format!("find field labelled {label:?}");
        let xpath = format!("//label[normalize-space(.)={}]", xpath_literal(label));
        let element = self
            .client
            .find(Locator::XPath(&xpath))
            .await
            .map_err(cmd_error(&op))?;
        match element.attr("for").await.map_err(cmd_error(&op))? {
            Some(id) if !id.is_empty() => self
                .client
                .find(Locator::XPath(&format!("//*[@id={}]", xpath_literal(&id))))
                .await
                .map_err(cmd_error(&op)),
            _ => element
                .find(Locator::Css("input, select, textarea"))
                .await
                .map_err(cmd_error(&op)),
        }
    }

    /// Click the element matching `css`.
    pub async fn click(&self, css: &str) -> Result<(), TestkitError> {
        self.find(css)
            .await?
            .click()
            .await
            .map_err(cmd_error(&format!("click {css}")))
    }

    /// Click the button (or submit input, or link) whose text is `text`.
    pub async fn click_text(&self, text: &str) -> Result<(), TestkitError> {
        let lit = xpath_literal(text);
        let xpath = format!(
            "//button[normalize-space(.)={lit}] | //input[(@type='submit' or @type='button') and @value={lit}] | //a[normalize-space(.)={lit}]"
        );
        let op = format!("click {text:?}");
        self.client
            .find(Locator::XPath(&xpath))
            .await
            .map_err(cmd_error(&op))?
            .click()
            .await
            .map_err(cmd_error(&op))
    }

    /// Run JavaScript in the page (`arguments[i]` are `args`); its return value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, TestkitError> {
        self.client
            .execute(script, args)
            .await
            .map_err(cmd_error("execute script"))
    }

    /// Save a PNG of the viewport to `path`; returns its size in bytes.
    pub async fn screenshot(&self, path: &Path) -> Result<u64, TestkitError> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(cmd_error("screenshot"))?;
        if !png.starts_with(PNG_MAGIC) {
            return Err(TestkitError::Browser {
                op: "screenshot".into(),
                detail: format!("not a PNG ({} bytes)", png.len()),
            });
        }
        std::fs::write(path, &png)
            .map_err(|e| TestkitError::io(format!("write {}", path.display()), e))?;
        debug!(path = %path.display(), bytes = png.len(), "screenshot saved");
        Ok(png.len() as u64)
    }

    /// End the session (closes the browser).
    pub async fn close(self) -> Result<(), TestkitError> {
        self.client
            .close()
            .await
            .map_err(cmd_error("close session"))
    }

    /// Resize the window so that the page area (`innerWidth`×`innerHeight`) is
    /// `width`×`height`: even headless, `--window-size` counts the window's
    /// frame and toolbars.
    async fn fit_window(&self, width: u32, height: u32) -> Result<(), TestkitError> {
        let op = "fit window to viewport";
        let frame = self
            .execute(
                "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];",
                vec![],
            )
            .await?;
        let extra = |i: usize| {
            frame[i]
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0)
        };
        if extra(0) == 0 && extra(1) == 0 {
            return Ok(());
        }
        self.client
            .set_window_size(width + extra(0), height + extra(1))
            .await
            .map_err(cmd_error(op))
    }

    /// An error for `op` that carries where the browser is and what it shows.
    async fn page_error(&self, op: &str, detail: String) -> TestkitError {
        let url = match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("(unknown: {e})"),
        };
        let text = match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let text: String = text.chars().take(PAGE_TEXT_IN_ERRORS).collect();
        TestkitError::Browser {
            op: op.into(),
            detail: format!("{detail}; at {url}; page text: {text:?}"),
        }
    }
}

async fn fill_element(element: &Element, what: &str, text: &str) -> Result<(), TestkitError> {
    let op = format!("fill {what}");
    element.clear().await.map_err(cmd_error(&op))?;
    element.send_keys(text).await.map_err(cmd_error(&op))
}

/// A step of [`sign_in_at_glewlwyd`], in the order the page asked for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInStep {
    /// User name and password (`#passwordForm`).
    Password,
    /// The HOTP code (`#otpSchemeForm`).
    Otp,
    /// "Manage" → "Grant": the request asks for a scope the user has not granted
    /// the client yet (an asterisk on "Manage"), so the consent screen is opened.
    OpenGrant,
    /// The consent screen: the client's scopes granted.
    Consent,
    /// "Continue" back to the client once the session is good enough.
    Continue,
}

/// Where [`sign_in_at_glewlwyd`] ended.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The URL the browser was sent to (starts with the redirect URI).
    pub url: url::Url,
    /// What the login page asked for, in order.
    pub steps: Vec<SignInStep>,
    /// How long it took from the first look at the page.
    pub elapsed: Duration,
}

/// Sign `user` in through glewlwyd's own login page, in a session that an
/// authorization request (`<issuer>/auth?…`, e.g. [`OidcProvider::authorization_url`])
/// sent there, until the browser reaches a URL starting with `redirect_prefix`
/// (the client's redirect URI); at most 30 s.
///
/// glewlwyd's login app (`login.html`, a React app of glewlwyd-common 2.7) shows
/// one step at a time and this follows whichever is on screen, so the same call
/// serves password-only and MFA sign-ins:
///
/// | step | what is on screen | what it does |
/// |---|---|---|
/// | [`SignInStep::Password`] | `form#passwordForm`: `input#username` (disabled once the session knows the user), `input#password`, `button#loginbut` | types both, clicks |
/// | [`SignInStep::Otp`] | `form#otpSchemeForm`: `input#value`, `button#but` (the scope needs the HOTP scheme) | types [`OidcProvider::next_hotp_code`], clicks |
/// | [`SignInStep::Consent`] | the grant card ("Client access grant"): a checkbox `input#grant-<scope>` per scope (`openid` ticked and disabled), a button "Grant access" (no id) | ticks every scope, clicks the button |
/// | [`SignInStep::OpenGrant`] | that card, with an asterisk on its "Manage" menu (`button#selectGrant`): a requested scope is not granted to the client yet — e.g. [`MFA_SCOPE`](crate::oidc::MFA_SCOPE) after an earlier consent to the others. "Continue" now would get a token *without* it | opens "Manage", clicks its "Grant" entry (`a.dropdown-item[alt]`), which shows the consent card |
/// | [`SignInStep::Continue`] | the user's card with a green button "Continue" (no id; `title="Continue to client application"`) once the session is good enough | clicks; the app goes back to `/auth?…&g_continue`, which redirects to the client |
///
/// The app is forced to English (its `config.json` lists only `en`), so the two
/// buttons without ids are found by their English text and title.
///
/// A step that comes back more than twice (a refused password, say) fails with
/// the page's text, as does the deadline.
pub async fn sign_in_at_glewlwyd(
    session: &Session,
    provider: &OidcProvider,
    user: &str,
    password: &str,
    redirect_prefix: &str,
) -> Result<SignedIn, TestkitError> {
    sign_in(session, Some(provider), user, password, redirect_prefix).await
}

/// [`sign_in_at_glewlwyd`] at a glewlwyd this process did not start (the
/// `writeback-lab` of `scripts/stack.sh`), by password only: a login page
/// that asks for an HOTP code fails the sign-in.
pub async fn sign_in_at_glewlwyd_by_password(
    session: &Session,
    user: &str,
    password: &str,
    redirect_prefix: &str,
) -> Result<SignedIn, TestkitError> {
    sign_in(session, None, user, password, redirect_prefix).await
}

async fn sign_in(
    session: &Session,
    provider: Option<&OidcProvider>,
    user: &str,
    password: &str,
    redirect_prefix: &str,
) -> Result<SignedIn, TestkitError> {
    let started = Instant::now();
    let deadline = started + SIGN_IN_DEADLINE;
    let mut steps: Vec<SignInStep> = Vec::new();
    let repeated = |steps: &[SignInStep], step| steps.iter().filter(|s| **s == step).count() > 2;
    let mut last_progress = Instant::now();
    let mut reloaded = false;
    loop {
        let url = session.current_url().await?;
        if url.as_str().starts_with(redirect_prefix) {
            let elapsed = started.elapsed();
            info!(
                user,
                ?steps,
                elapsed_ms = elapsed.as_millis() as u64,
                "signed in at glewlwyd"
            );
            return Ok(SignedIn {
                url,
                steps,
                elapsed,
            });
        }
        let step = glewlwyd_step(session).await?;
        if let Some(step) = step {
            if repeated(&steps, step) {
                return Err(session
                    .page_error(
                        "sign in at glewlwyd",
                        format!("{step:?} asked again after {steps:?}"),
                    )
                    .await);
            }
            debug!(?step, "glewlwyd login page step");
            match step {
                SignInStep::Password => {
                    let name = session.find("#passwordForm #username").await?;
                    if name
                        .is_enabled()
                        .await
                        .map_err(cmd_error("username field"))?
                    {
                        fill_element(&name, "#username", user).await?;
                    }
                    session.fill("#passwordForm #password", password).await?;
                    session.click("#loginbut").await?;
                }
                SignInStep::Otp => {
                    let provider = provider.ok_or_else(|| {
                        TestkitError::InvalidInput(format!(
                            "the login page asks {user} for an HOTP code; this sign-in is by password only"
                        ))
                    })?;
                    let code = provider.next_hotp_code(user).await?;
                    session.fill("#otpSchemeForm #value", &code).await?;
                    session.click("#otpSchemeForm #but").await?;
                }
                SignInStep::Consent => {
                    for checkbox in session.find_all("input[id^='grant-']").await? {
                        let checked = checkbox
                            .prop("checked")
                            .await
                            .map_err(cmd_error("grant checkbox"))?;
                        if checked.as_deref() != Some("true") {
                            checkbox.click().await.map_err(cmd_error("tick grant"))?;
                        }
                    }
                    // The card's checkboxes can be drawn before its button.
                    session
                        .wait_for_by(GRANT_BUTTON, SHORT_WAIT)
                        .await?
                        .click()
                        .await
                        .map_err(cmd_error("click grant button"))?;
                }
                SignInStep::OpenGrant => {
                    session.click(MANAGE_BUTTON).await?;
                    session.wait_for(GRANT_MENU_ITEM, SHORT_WAIT).await?;
                    session.click(GRANT_MENU_ITEM).await?;
                }
                SignInStep::Continue => session.click(CONTINUE_BUTTON).await?,
            }
            steps.push(step);
            // Let the app act on the click before looking again.
            wait_for_change(session, step, deadline).await?;
            last_progress = Instant::now();
        } else if !reloaded
            && last_progress.elapsed() >= STUCK_LOADING
            && session.text().await?.trim() == "Loading..."
        {
            // Under load glewlwyd's single-page app has been seen to stay on
            // its "Loading..." placeholder for good (its first API call lost);
            // a person would reload the page, and so does this, once.
            warn!(
                ?steps,
                "glewlwyd's login page is stuck loading; reloading it"
            );
            session
                .client
                .refresh()
                .await
                .map_err(cmd_error("reload the login page"))?;
            reloaded = true;
            last_progress = Instant::now();
        } else if Instant::now() >= deadline {
            return Err(session
                .page_error(
                    "sign in at glewlwyd",
                    format!(
                        "no redirect to {redirect_prefix} after {SIGN_IN_DEADLINE:?} ({steps:?})"
                    ),
                )
                .await);
        } else {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// The consent card's button has no id; its text is the English "login.grant".
const GRANT_BUTTON: Locator<'static> =
    Locator::XPath("//button[normalize-space(.)='Grant access']");
/// The user card's "Continue" button has no id; its title is "login.continue-title".
const CONTINUE_BUTTON: &str = "button[title='Continue to client application']";
/// The user card's "Manage" menu; an asterisk in it means scopes not granted yet.
const MANAGE_BUTTON: &str = "button#selectGrant";
const MANAGE_ASTERISK: &str = "button#selectGrant .fa-asterisk";
/// Its entry that opens the consent screen ("Grant"/"Authenticate"; the profile
/// link has no `alt`).
const GRANT_MENU_ITEM: &str = "div[aria-labelledby='selectGrant'] a.dropdown-item[alt]";
/// For a menu to open.
const SHORT_WAIT: Duration = Duration::from_secs(5);
/// How long the login page may show only "Loading..." before it is reloaded.
const STUCK_LOADING: Duration = Duration::from_secs(10);

/// Which step glewlwyd's login page shows now, if any.
async fn glewlwyd_step(session: &Session) -> Result<Option<SignInStep>, TestkitError> {
    if session.visible("#otpSchemeForm #value").await?.is_some() {
        return Ok(Some(SignInStep::Otp));
    }
    if session.visible("#passwordForm #password").await?.is_some() {
        return Ok(Some(SignInStep::Password));
    }
    if session.visible_by(GRANT_BUTTON).await?.is_some() {
        return Ok(Some(SignInStep::Consent));
    }
    if session.visible(CONTINUE_BUTTON).await?.is_some() {
        if session.visible(MANAGE_ASTERISK).await?.is_some() {
            return Ok(Some(SignInStep::OpenGrant));
        }
        return Ok(Some(SignInStep::Continue));
    }
    Ok(None)
}

/// After acting on `step`: wait (until `deadline`) for the page to show something
/// else, so the next look does not act on the same screen twice.
async fn wait_for_change(
    session: &Session,
    step: SignInStep,
    deadline: Instant,
) -> Result<(), TestkitError> {
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        match glewlwyd_step(session).await {
            Ok(Some(now)) if now == step && Instant::now() < deadline => continue,
            // A navigation in progress can fail a lookup; the caller looks again.
            _ => return Ok(()),
        }
    }
}

/// A tiny HTTPS endpoint on `127.0.0.1:<port>` with a certificate from a
/// [`TestCa`]: answers every GET with `200` and a small HTML page
/// (`<h1 id="landing">{text}</h1>`) and keeps each request target (path and
/// query) for the test. Use it as a client's redirect URI. It stops when
/// dropped.
pub struct HttpsLanding {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for HttpsLanding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsLanding")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl HttpsLanding {
    /// Listen on a free port of 127.0.0.1 with a certificate from `ca` for
    /// `127.0.0.1` and `localhost`; every page says `text`.
    pub async fn start(ca: &TestCa, text: &str) -> Result<HttpsLanding, TestkitError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};

        let (cert_pem, key_pem) = ca.issue_server(
            &["localhost".to_string()],
            &[std::net::Ipv4Addr::LOCALHOST.into()],
        )?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| TestkitError::InvalidInput(format!("landing certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| TestkitError::InvalidInput(format!("landing key: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| TestkitError::io("bind 127.0.0.1:0 for the landing page", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| TestkitError::io("landing page address", e))?
            .port();
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{text}</title></head>\
             <body><h1 id=\"landing\">{text}</h1></body></html>"
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, body, seen) = (acceptor.clone(), body.clone(), seen.clone());
                tokio::spawn(async move {
                    if let Err(e) = answer(acceptor, tcp, &body, &seen).await {
                        debug!(error = %e, "landing page connection failed");
                    }
                });
            }
        });
        Ok(HttpsLanding {
            url: format!("https://127.0.0.1:{port}/"),
            requests,
            task,
        })
    }

    /// `https://127.0.0.1:<port>/`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The request targets (path and query) received so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

impl Drop for HttpsLanding {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: TLS, one request head, one response, close.
async fn answer(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    body: &str,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut tls = acceptor.accept(tcp).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let target = head
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or_default()
        .to_string();
    if let Ok(mut seen) = seen.lock() {
        seen.push(target);
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(response.as_bytes()).await?;
    tls.shutdown().await
}

/// Creates the NSS database `home/.pki/nssdb` and trusts each PEM as a CA for
/// servers (`C,,`).
async fn trust_cas(home: &Path, pem_dir: &Path, pems: &[String]) -> Result<(), TestkitError> {
    let db = home.join(".pki/nssdb");
    create_dir(&db)?;
    let db_arg = format!("sql:{}", db.display());
    certutil(&["-N", "--empty-password", "-d", &db_arg]).await?;
    for (i, pem) in pems.iter().enumerate() {
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(TestkitError::InvalidInput(format!(
                "trusted CA #{i} is not a PEM certificate"
            )));
        }
        let file = pem_dir.join(format!("ca-{i}.pem"));
        write_file(&file, pem.as_bytes(), 0o644)?;
        let nickname = format!("writeback test CA {i}");
        let file_arg = file.display().to_string();
        certutil(&[
            "-A", "-d", &db_arg, "-n", &nickname, "-t", "C,,", "-i", &file_arg,
        ])
        .await?;
    }
    Ok(())
}

async fn certutil(args: &[&str]) -> Result<(), TestkitError> {
    let out = tokio::process::Command::new("certutil")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| spawn_error("certutil", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestkitError::Command {
            command: format!("certutil {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn spawn_chromedriver(dir: &Path, port: u16) -> Result<(Child, ChildStdin), TestkitError> {
    let log_path = dir.join(LOG);
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| TestkitError::io(format!("open {}", log_path.display()), e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| TestkitError::io("clone log handle", e))?;
    // The wrapper's `command not found` would only show in the log: check first.
    which(CHROMEDRIVER)?;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(WRAPPER_SH)
        .arg("chromedriver-wrapper")
        .arg(port.to_string())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(log_err)
        .env("HOME", dir.join("home"))
        .env("TMPDIR", dir.join("tmp"))
        .env("LANG", "C.UTF-8")
        .env("LANGUAGE", "en")
        .process_group(0)
        .spawn()
        .map_err(|e| spawn_error("sh", e))?;
    let stdin = child.stdin.take().ok_or_else(|| {
        TestkitError::io(
            "chromedriver wrapper stdin",
            std::io::Error::other("not captured"),
        )
    })?;
    debug!(pid = child.id(), port, dir = %dir.display(), "spawned chromedriver");
    Ok((child, stdin))
}

/// `program` on PATH, or [`TestkitError::MissingTool`].
fn which(program: &str) -> Result<PathBuf, TestkitError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| TestkitError::MissingTool {
            program: program.into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
}

/// Poll `GET /status` until chromedriver says it is ready.
async fn wait_ready(
    http: &reqwest::Client,
    url: &str,
    child: &mut Child,
    log: &Path,
) -> Result<(), TestkitError> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => {
                return Err(TestkitError::BrowserExited {
                    status: status.to_string(),
                    log_tail: log_tail(log),
                });
            }
            Err(e) => return Err(TestkitError::io("poll chromedriver process", e)),
        }
        let last_error = match http.get(format!("{url}/status")).send().await {
            Ok(resp) => match resp.json::<Value>().await {
                Ok(status) if status["value"]["ready"] == json!(true) => {
                    debug!(
                        waited_ms = started.elapsed().as_millis() as u64,
                        "chromedriver ready"
                    );
                    return Ok(());
                }
                Ok(status) => format!("not ready: {status}"),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if started.elapsed() > READY_DEADLINE {
            return Err(TestkitError::Browser {
                op: "start chromedriver".into(),
                detail: format!(
                    "not ready after {:?}: {last_error}; log tail:\n{}",
                    started.elapsed(),
                    log_tail(log)
                ),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn cmd_error(op: &str) -> impl FnOnce(CmdError) -> TestkitError {
    let op = op.to_string();
    move |e| TestkitError::Browser {
        op,
        detail: e.to_string(),
    }
}

/// `text` as an XPath 1.0 string literal (which has no escapes).
fn xpath_literal(text: &str) -> String {
    if !text.contains('\'') {
        format!("'{text}'")
    } else if !text.contains('"') {
        format!("\"{text}\"")
    } else {
        let parts: Vec<String> = text.split('\'').map(|p| format!("'{p}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn xpath_literals_quote_any_text() {
        assert_eq!(xpath_literal("User name"), "'User name'");
        assert_eq!(xpath_literal("it's"), "\"it's\"");
        assert_eq!(xpath_literal(r#"a'b"c"#), r#"concat('a', "'", 'b"c')"#);
    }

    #[test]
    fn viewports_have_the_promised_sizes() {
        assert_eq!(Viewport::Desktop.size(), (1280, 900));
        assert_eq!(Viewport::Phone.size(), (390, 844));
        assert_eq!(
            Viewport::Window {
                width: 800,
                height: 600
            }
            .size(),
            (800, 600)
        );
    }
}
