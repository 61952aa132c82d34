//! Real Samba AD domain controllers as child processes.
//!
//! [`SambaDc::start`] gives a test its own provisioned, running DC:
//!
//! 1. **Address.** It takes a free loopback address `127.0.0.N` (N in 10..=250, searched
//!    from a per-process offset), holding an exclusive lock on
//!    `/tmp/writeback-testkit/locks/ip-N.lock` for the DC's lifetime, so DCs started by
//!    parallel test processes never share an address, and adds the address to `lo`
//!    (`ip addr add`, needs root; the address stays on `lo` afterwards).
//! 2. **Domain.** Provisioning a domain takes about 4 s (up to 10 s when several run at
//!    once), so each domain name is provisioned once into a template under
//!    `/tmp/writeback-testkit/templates/` (guarded by a file lock; keyed by the Samba
//!    version) and every DC starts from a copy (`cp -a`, about 25 ms); with a warm
//!    template a DC is ready about 0.7 s after `start` is called. Nothing in the
//!    provisioned databases depends on the address or the directory: only `smb.conf`
//!    does, and it is written fresh for every DC. All copies of one domain therefore
//!    share the domain SID and the DC name `DC1`; each runs in its own directory on its
//!    own address.
//! 3. **Administrator.** Each DC gets a fresh random Administrator password, set offline
//!    in the copied `sam.ldb` by Samba's own Python bindings with the password read
//!    from stdin — never on a command line. (The template is provisioned without
//!    `--adminpass`; Samba's random password is discarded.)
//! 4. **TLS.** A fresh [`TestCa`] issues the LDAPS certificate (SANs: the DC's FQDN,
//!    the domain name and the IP address); clients verify it with rustls against that CA
//!    only.
//! 5. **Process.** `samba -i -M single` runs in its own process group with stdin on a
//!    pipe: Samba terminates itself (and signals its group) when the pipe closes, so a
//!    DC does not outlive a test process that dies without running `Drop`.
//! 6. **Readiness.** `start` polls an LDAPS simple bind as Administrator (certificate
//!    verified) until it succeeds, with a 60 s deadline; if samba exits first, the
//!    error carries the tail of its log.
//!
//! Set `WRITEBACK_TESTKIT_KEEP=1` to keep DC directories after the test for debugging;
//! otherwise directories left behind by killed test processes are removed by the next
//! DC that starts.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rand_core::{OsRng, TryRngCore};
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use crate::{TestCa, TestkitError};

/// Everything the harness writes outside a DC's own directory lives here. The path is
/// fixed (not `$TMPDIR`) because loopback addresses are machine-wide: every test
/// process must see the same address locks.
const STATE_ROOT: &str = "/tmp/writeback-testkit";
/// Bump when the template layout or provisioning options change.
const TEMPLATE_FORMAT: u32 = 1;
/// NetBIOS name of every DC (fixed at provisioning time, shared by template copies).
const DC_NETBIOS_NAME: &str = "DC1";
const FIRST_HOST: u8 = 10;
const LAST_HOST: u8 = 250;
const READY_DEADLINE: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const STOP_GRACE: Duration = Duration::from_secs(10);
const LDAP_TIMEOUT: Duration = Duration::from_secs(10);
const SAMBA_LOG: &str = "log/samba.stdout.log";

/// Offline password setter: loads the DC's smb.conf and sets Administrator's password
/// in sam.ldb with the password read from stdin.
const SET_ADMIN_PASSWORD_PY: &str = r#"
import sys
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB
lp = LoadParm()
lp.load(sys.argv[1])
password = sys.stdin.readline().rstrip("\n")
db = SamDB(url=lp.samdb_url(), session_info=system_session(), lp=lp)
db.setpassword("(&(objectClass=user)(sAMAccountName=Administrator))", password)
"#;

/// One running, provisioned Samba AD DC in a temporary directory.
///
/// Dropping it stops samba (closing its stdin, then SIGKILL to its process group after
/// a grace period), waits for it, removes the directory and releases the address lock.
pub struct SambaDc {
    domain: String,
    netbios: String,
    ip: Ipv4Addr,
    admin_password: String,
    ca_pem: String,
    tls: Arc<rustls::ClientConfig>,
    smb_conf: PathBuf,
    dir_path: PathBuf,
    kinit_seq: AtomicU64,
    // Drop order matters: `Drop::drop` stops the child; then the fields drop in
    // declaration order — the directory is removed before the address lock goes.
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    dir: Option<tempfile::TempDir>,
    _ip_lock: File,
}

impl std::fmt::Debug for SambaDc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SambaDc")
            .field("domain", &self.domain)
            .field("ip", &self.ip)
            .field("dir", &self.dir_path)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl SambaDc {
    /// Provision and start a DC for DNS domain `domain` (e.g. "contoso.test"; NetBIOS
    /// domain name derived from the first label, e.g. "CONTOSO") on its own loopback
    /// address 127.0.0.N, with an LDAPS certificate issued by a fresh [`TestCa`].
    /// Returns once an LDAPS simple bind as Administrator succeeds with the certificate
    /// verified against the test CA (deadline 60 s).
    pub async fn start(domain: &str) -> Result<SambaDc, TestkitError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let started = Instant::now();
        let domain = normalize_domain(domain)?;
        let netbios = netbios_domain(&domain);
        let realm = domain.to_ascii_uppercase();
        let root = PathBuf::from(STATE_ROOT);

        let template = ensure_template(&root, &domain, &realm, &netbios).await?;
        let template_ready = started.elapsed();

        let lock_dir = root.join("locks");
        let (ip, ip_lock) = acquire_address(&lock_dir)?;
        if !keep_dirs() {
            remove_stale_dirs(&root, &lock_dir, ip);
        }
        add_loopback_address(ip).await?;

        let dir = tempfile::Builder::new()
            .prefix(&format!("dc{}-", ip.octets()[3]))
            .tempdir_in(&root)
            .map_err(|e| TestkitError::io(format!("create DC directory under {STATE_ROOT}"), e))?;
        let dir_path = dir.path().to_path_buf();
        copy_tree(&template, &dir_path).await?;
        for sub in ["run", "log", "tls", "cache"] {
            create_dir(&dir_path.join(sub))?;
        }

        // TLS: our own CA and certificate; the key file must be 0600 for Samba.
        let fqdn = format!("{}.{domain}", DC_NETBIOS_NAME.to_ascii_lowercase());
        let ca = TestCa::new(&format!("writeback test CA for {fqdn}"))?;
        let (cert_pem, key_pem) =
            ca.issue_server(&[fqdn.clone(), domain.clone()], &[IpAddr::V4(ip)])?;
        let ca_pem = ca.cert_pem();
        write_file(&dir_path.join("tls/ca.pem"), ca_pem.as_bytes(), 0o644)?;
        write_file(&dir_path.join("tls/cert.pem"), cert_pem.as_bytes(), 0o644)?;
        write_file(&dir_path.join("tls/key.pem"), key_pem.as_bytes(), 0o600)?;
        let tls = client_config(&ca_pem)?;

        let smb_conf = dir_path.join("etc/smb.conf");
        write_file(
            &smb_conf,
            smb_conf_text(&dir_path, ip, &realm, &netbios, &domain).as_bytes(),
            0o644,
        )?;
        write_file(
            &dir_path.join("krb5.conf"),
            krb5_conf_text(&realm, ip).as_bytes(),
            0o644,
        )?;

        let admin_password = random_password()?;
        set_admin_password_offline(&smb_conf, &admin_password).await?;
        let prepared = started.elapsed();

        let (child, stdin) = spawn_samba(&dir_path, &smb_conf)?;
        let mut dc = SambaDc {
            domain,
            netbios,
            ip,
            admin_password,
            ca_pem,
            tls,
            smb_conf,
            dir_path,
            kinit_seq: AtomicU64::new(0),
            child: Some(child),
            stdin: Some(stdin),
            dir: Some(dir),
            _ip_lock: ip_lock,
        };
        dc.wait_ready().await?;
        info!(
            domain = %dc.domain,
            ip = %dc.ip,
            dir = %dc.dir_path.display(),
            template_ms = template_ready.as_millis() as u64,
            prepared_ms = prepared.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "samba dc ready"
        );
        Ok(dc)
    }

    /// SIGKILL to samba's whole process group: no shutdown, its
    /// connections break and only what its databases committed survives.
    /// [`SambaDc::restart`] starts it again on the same directory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
        self.stdin = None;
    }

    /// Starts samba again (after [`SambaDc::kill`]) on the same directory,
    /// address and certificate; returns once an LDAPS bind succeeds.
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        self.kill();
        let (child, stdin) = spawn_samba(&self.dir_path, &self.smb_conf)?;
        self.child = Some(child);
        self.stdin = Some(stdin);
        self.wait_ready().await
    }

    /// DNS domain name, e.g. "contoso.test".
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Kerberos realm, e.g. "CONTOSO.TEST".
    pub fn realm(&self) -> String {
        self.domain.to_ascii_uppercase()
    }

    /// NetBIOS domain name, e.g. "CONTOSO".
    pub fn netbios(&self) -> &str {
        &self.netbios
    }

    /// FQDN of the DC, e.g. "dc1.contoso.test" (in the certificate, not in DNS).
    pub fn hostname(&self) -> String {
        format!("{}.{}", DC_NETBIOS_NAME.to_ascii_lowercase(), self.domain)
    }

    /// The DC's own loopback address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// "ldaps://127.0.0.N:636"
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{}:636", self.ip)
    }

    /// PEM of the test CA that issued the DC's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// "DC=contoso,DC=test"
    pub fn base_dn(&self) -> String {
        base_dn(&self.domain)
    }

    /// "CN=Administrator,CN=Users,DC=contoso,DC=test"
    pub fn admin_dn(&self) -> String {
        format!("CN=Administrator,CN=Users,{}", self.base_dn())
    }

    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    pub fn smb_conf(&self) -> &Path {
        &self.smb_conf
    }

    /// The DC's directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Samba's stdout/stderr log (`samba -i` logs there).
    pub fn log_path(&self) -> PathBuf {
        self.dir_path.join(SAMBA_LOG)
    }

    /// Process id of the samba process (also its process group id).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// rustls ClientConfig trusting only this DC's test CA.
    pub fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls)
    }

    /// Run `samba-tool <args> -s <smb.conf>` and return stdout; the error includes
    /// stderr on failure. Commands that work on the local database (most of them)
    /// write to the running DC's sam.ldb directly.
    pub async fn samba_tool(&self, args: &[&str]) -> Result<String, TestkitError> {
        let mut cmd = tokio::process::Command::new("samba-tool");
        cmd.args(args)
            .arg("-s")
            .arg(&self.smb_conf)
            .stdin(Stdio::null())
            .env("LC_ALL", "C");
        let command = format!("samba-tool {}", args.join(" "));
        let out = cmd
            .output()
            .await
            .map_err(|e| spawn_error("samba-tool", e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(TestkitError::Command {
                command,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// An LDAPS connection (verified TLS) bound as Administrator.
    pub async fn ldap_admin(&self) -> Result<Ldap, TestkitError> {
        let mut ldap = self.connect().await?;
        let res = ldap
            .simple_bind(&self.admin_dn(), &self.admin_password)
            .await
            .map_err(TestkitError::ldap("bind"))?;
        check_rc("bind", res)?;
        Ok(ldap)
    }

    /// An unbound LDAPS connection to this DC, verifying its certificate.
    pub async fn connect(&self) -> Result<Ldap, TestkitError> {
        let settings = LdapConnSettings::new()
            .set_config(self.tls_config())
            .set_conn_timeout(LDAP_TIMEOUT);
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.ldaps_url())
            .await
            .map_err(TestkitError::ldap("connect"))?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// Create an enabled user in CN=Users (see [`SambaDc::create_user_in`]).
    pub async fn create_user(&self, sam: &str, password: &str) -> Result<String, TestkitError> {
        let users = format!("CN=Users,{}", self.base_dn());
        self.create_user_in(&users, sam, password).await
    }

    /// Create an enabled user `CN=<sam>,<ou_dn>` with sAMAccountName=`sam`,
    /// userPrincipalName=`sam@domain` and the given password, over LDAPS as
    /// Administrator (one add carrying unicodePwd and userAccountControl=512). The
    /// domain password policy applies. Returns the DN.
    pub async fn create_user_in(
        &self,
        ou_dn: &str,
        sam: &str,
        password: &str,
    ) -> Result<String, TestkitError> {
        if sam.is_empty() || sam.contains([',', '=', '+', '"', '\\', '<', '>', ';', '#']) {
            return Err(TestkitError::InvalidInput(format!(
                "unsupported sAMAccountName {sam:?}"
            )));
        }
        let dn = format!("CN={sam},{ou_dn}");
        let upn = format!("{sam}@{}", self.domain);
        let attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
            attr(
                "objectClass",
                &["top", "person", "organizationalPerson", "user"],
            ),
            attr("cn", &[sam]),
            attr("sAMAccountName", &[sam]),
            attr("userPrincipalName", &[upn.as_str()]),
            attr("userAccountControl", &["512"]),
            (
                b"unicodePwd".to_vec(),
                HashSet::from([unicode_pwd(password)]),
            ),
        ];
        let mut ldap = self.ldap_admin().await?;
        let res = ldap
            .add(&dn, attrs)
            .await
            .map_err(TestkitError::ldap("add"))?;
        check_rc("add", res)?;
        let _ = ldap.unbind().await;
        Ok(dn)
    }

    /// Set `displayName`, `givenName` and `sn` of the user `dn`.
    pub async fn set_names(
        &self,
        dn: &str,
        display_name: &str,
        given_name: &str,
        surname: &str,
    ) -> Result<(), TestkitError> {
        let mut ldap = self.ldap_admin().await?;
        let res = ldap
            .modify(
                dn,
                vec![
                    ldap3::Mod::Replace("displayName", HashSet::from([display_name])),
                    ldap3::Mod::Replace("givenName", HashSet::from([given_name])),
                    ldap3::Mod::Replace("sn", HashSet::from([surname])),
                ],
            )
            .await
            .map_err(TestkitError::ldap("modify"))?;
        check_rc("modify", res)?;
        let _ = ldap.unbind().await;
        Ok(())
    }

    /// Create `OU=<name>` under the domain root. Returns the DN.
    pub async fn create_ou(&self, name: &str) -> Result<String, TestkitError> {
        let dn = format!("OU={name},{}", self.base_dn());
        let attrs = vec![
            attr("objectClass", &["top", "organizationalUnit"]),
            attr("ou", &[name]),
        ];
        let mut ldap = self.ldap_admin().await?;
        let res = ldap
            .add(&dn, attrs)
            .await
            .map_err(TestkitError::ldap("add"))?;
        check_rc("add", res)?;
        let _ = ldap.unbind().await;
        Ok(dn)
    }

    /// Simple bind over LDAPS (verified TLS) as `who` (a DN or a UPN). Ok(true) bound,
    /// Ok(false) invalid credentials (rc 49, whatever the sub-code: bad password,
    /// locked, disabled, must change), Err on anything else.
    ///
    /// An empty password is an error: LDAP treats it as an unauthenticated bind, which
    /// succeeds without proving anything.
    pub async fn try_bind(&self, who: &str, password: &str) -> Result<bool, TestkitError> {
        if password.is_empty() {
            return Err(TestkitError::InvalidInput(
                "try_bind with an empty password would be an unauthenticated bind".into(),
            ));
        }
        let mut ldap = self.connect().await?;
        let res = ldap
            .simple_bind(who, password)
            .await
            .map_err(TestkitError::ldap("bind"))?;
        match res.rc {
            0 => {
                let _ = ldap.unbind().await;
                Ok(true)
            }
            49 => Ok(false),
            rc => Err(TestkitError::LdapResult {
                op: "bind",
                rc,
                text: res.text,
            }),
        }
    }

    /// How many times the password of the object at `dn` was written: the
    /// version of `unicodePwd` in its `replPropertyMetaData` (a
    /// `replPropertyMetaDataBlob`, version 1: a 16-byte header whose third
    /// little-endian u32 is the entry count, then 48-byte entries that start
    /// with the attribute id and its version). Every password write — a
    /// reset or a change — raises it by one, so it tells "applied once"
    /// from "applied twice".
    pub async fn password_writes(&self, dn: &str) -> Result<u32, TestkitError> {
        const ATTID_UNICODE_PWD: u32 = 0x0009_005a;
        let entry = self.read_entry(dn, &["replPropertyMetaData"]).await?;
        let malformed = || TestkitError::InvalidInput("malformed replPropertyMetaData".into());
        let blob = entry
            .bin_attrs
            .get("replPropertyMetaData")
            .and_then(|v| v.first())
            .ok_or_else(malformed)?;
        let u32_at = |i: usize| -> Result<u32, TestkitError> {
            let bytes = blob.get(i..i + 4).ok_or_else(malformed)?;
            Ok(u32::from_le_bytes(
                bytes.try_into().map_err(|_| malformed())?,
            ))
        };
        let count = u32_at(8)? as usize;
        for n in 0..count {
            let at = 16 + n * 48;
            if u32_at(at)? == ATTID_UNICODE_PWD {
                return u32_at(at + 4);
            }
        }
        Ok(0)
    }

    /// Read attributes of the object at `dn` as Administrator: attribute name (as the
    /// server spells it, e.g. "userPrincipalName") → values. Binary-valued attributes
    /// (objectSid, nTSecurityDescriptor …) are not included; use
    /// [`SambaDc::read_entry`] for those.
    pub async fn read_attrs(
        &self,
        dn: &str,
        attrs: &[&str],
    ) -> Result<HashMap<String, Vec<String>>, TestkitError> {
        Ok(self.read_entry(dn, attrs).await?.attrs)
    }

    /// Read the object at `dn` as Administrator, text and binary attributes.
    pub async fn read_entry(&self, dn: &str, attrs: &[&str]) -> Result<SearchEntry, TestkitError> {
        let mut ldap = self.ldap_admin().await?;
        let (entries, res) = ldap
            .search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
            .await
            .map_err(TestkitError::ldap("search"))?
            .non_error()
            .map_err(|e| ldap_rc_error("search", e))?;
        check_rc("search", res)?;
        let _ = ldap.unbind().await;
        let entry = entries
            .into_iter()
            .next()
            .ok_or_else(|| TestkitError::LdapResult {
                op: "search",
                rc: 32,
                text: format!("no entry at {dn}"),
            })?;
        Ok(SearchEntry::construct(entry))
    }

    /// Set the domain password policy with `samba-tool domain passwordsettings set
    /// <args>` (e.g. `--min-pwd-age=0`, `--complexity=off`, `--history-length=0`).
    pub async fn set_password_settings(&self, args: &[&str]) -> Result<(), TestkitError> {
        let mut full = vec!["domain", "passwordsettings", "set"];
        full.extend_from_slice(args);
        self.samba_tool(&full).await.map(|_| ())
    }

    /// kinit as `user@REALM` (`user@domain` is taken as `user@DOMAIN`) against
    /// this DC's KDC only (own krb5.conf with `kdc = <ip>`, no DNS lookups; credential
    /// cache in the DC directory); the password is fed on stdin. Ok(true) on success,
    /// Ok(false) when the KDC rejects the password (preauthentication failed / password
    /// incorrect); Err for anything else (unknown principal, revoked or locked
    /// account, expired password, KDC unreachable), with kinit's stderr.
    pub async fn kinit(&self, user: &str, password: &str) -> Result<bool, TestkitError> {
        // Kerberos realms are upper case: "alice@contoso.test" means alice@CONTOSO.TEST.
        let principal = match user.rsplit_once('@') {
            Some((name, realm)) => format!("{name}@{}", realm.to_ascii_uppercase()),
            None => format!("{user}@{}", self.realm()),
        };
        let seq = self.kinit_seq.fetch_add(1, Ordering::Relaxed);
        let ccache = self.dir_path.join(format!("krb5cc_{seq}"));
        let mut child = tokio::process::Command::new("kinit")
            .arg(&principal)
            .env("KRB5_CONFIG", self.dir_path.join("krb5.conf"))
            .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| spawn_error("kinit", e))?;
        if let Some(mut stdin) = child.stdin.take() {
            // kinit may exit before reading (e.g. unknown realm): ignore EPIPE here and
            // judge by its exit status below.
            let _ = stdin.write_all(format!("{password}\n").as_bytes()).await;
        }
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .map_err(|_| TestkitError::Kinit {
                principal: principal.clone(),
                status: "timed out after 30s".into(),
                stderr: String::new(),
            })?
            .map_err(|e| TestkitError::io("wait for kinit", e))?;
        let _ = std::fs::remove_file(&ccache);
        if out.status.success() {
            return Ok(true);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.contains("Password incorrect") || stderr.contains("Preauthentication failed") {
            return Ok(false);
        }
        Err(TestkitError::Kinit {
            principal,
            status: out.status.to_string(),
            stderr,
        })
    }

    /// Poll until an LDAPS bind as Administrator succeeds (TLS verified), samba exits,
    /// or the deadline passes.
    async fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let started = Instant::now();
        let deadline = started + READY_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Err(e) = check_running(child, &self.dir_path.join(SAMBA_LOG))
            {
                // Reaped (or unpollable): Drop must not signal its process group.
                self.child = None;
                return Err(e);
            }
            let attempt = tokio::time::timeout(
                LDAP_TIMEOUT,
                self.try_bind(&self.admin_dn(), &self.admin_password),
            )
            .await;
            let last_error = match attempt {
                Ok(Ok(true)) => {
                    debug!(
                        waited_ms = started.elapsed().as_millis() as u64,
                        "ldaps bind ok"
                    );
                    return Ok(());
                }
                Ok(Ok(false)) => "administrator bind rejected (rc 49)".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "ldaps bind timed out".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(TestkitError::NotReady {
                    waited: started.elapsed(),
                    last_error,
                    log_tail: log_tail(&self.log_path()),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        // Closing stdin makes `samba -i` log "EOF on stdin", SIGTERM its process group
        // and exit.
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            let pgid = Pid::from_raw(child.id() as i32);
            let deadline = Instant::now() + STOP_GRACE;
            let exited = loop {
                match child.try_wait() {
                    Ok(Some(_)) => break true,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) | Err(_) => break false,
                }
            };
            if !exited {
                // Not yet reaped, so the group id is still ours to signal.
                warn!(
                    pid = child.id(),
                    "samba did not stop on stdin EOF; killing its process group"
                );
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait();
            }
        }
        if let Some(dir) = self.dir.take() {
            if keep_dirs() {
                let kept = dir.keep();
                info!(dir = %kept.display(), "keeping samba dc directory");
            } else if let Err(e) = dir.close() {
                warn!(
                    dir = %self.dir_path.display(),
                    error = %e,
                    "removing samba dc directory failed"
                );
            }
        }
    }
}

pub(crate) fn keep_dirs() -> bool {
    std::env::var_os("WRITEBACK_TESTKIT_KEEP").is_some_and(|v| v == "1")
}

/// Remove directories `dc<M>-*` left by test processes that died without running
/// `Drop` (their samba exited on stdin EOF): ours (we hold the lock for our address)
/// and any whose address lock nobody holds. A live DC holds its address lock from
/// before its directory exists until after it is removed, so it is never touched.
fn remove_stale_dirs(root: &Path, lock_dir: &Path, own: Ipv4Addr) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(host) = name
            .strip_prefix("dc")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(n, _)| n.parse::<u8>().ok())
        else {
            continue;
        };
        let _guard = if host == own.octets()[3] {
            None
        } else {
            match File::open(lock_dir.join(format!("ip-{host}.lock"))) {
                Ok(file) if file.try_lock().is_ok() => Some(file),
                _ => continue,
            }
        };
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => debug!(dir = %path.display(), "removed stale dc directory"),
            Err(e) => warn!(dir = %path.display(), error = %e, "cannot remove stale dc directory"),
        }
    }
}

/// Lowercase, validate: at least two labels of [a-z0-9-], not starting/ending with '-'.
fn normalize_domain(domain: &str) -> Result<String, TestkitError> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    let valid = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid {
        Ok(domain)
    } else {
        Err(TestkitError::InvalidInput(format!(
            "{domain:?} is not a DNS domain name with at least two labels"
        )))
    }
}

/// NetBIOS domain name: the first label, uppercased, at most 15 characters.
fn netbios_domain(domain: &str) -> String {
    let first = domain.split('.').next().unwrap_or(domain);
    first.to_ascii_uppercase().chars().take(15).collect()
}

fn base_dn(domain: &str) -> String {
    domain
        .split('.')
        .map(|label| format!("DC={label}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// "Wb!" followed by 24 random alphanumerics: meets Samba's complexity rule (upper,
/// lower, digit/symbol) whatever the random part is.
fn random_password() -> Result<String, TestkitError> {
    Ok(format!("Wb!{}", random_alnum(24)?))
}

pub(crate) fn random_alnum(len: usize) -> Result<String, TestkitError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        OsRng.try_fill_bytes(&mut buf).map_err(|e| {
            TestkitError::io("read OS randomness", std::io::Error::other(e.to_string()))
        })?;
        for b in buf {
            // Rejection sampling: 248 = 4 * 62, so accepted bytes are uniform.
            if b < 248 && out.len() < len {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    Ok(out)
}

/// The value AD expects in unicodePwd: UTF-16LE of the password in double quotes.
pub fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn attr(name: &str, values: &[&str]) -> (Vec<u8>, HashSet<Vec<u8>>) {
    (
        name.as_bytes().to_vec(),
        values.iter().map(|v| v.as_bytes().to_vec()).collect(),
    )
}

fn check_rc(op: &'static str, res: ldap3::LdapResult) -> Result<(), TestkitError> {
    if res.rc == 0 {
        Ok(())
    } else {
        Err(TestkitError::LdapResult {
            op,
            rc: res.rc,
            text: res.text,
        })
    }
}

fn ldap_rc_error(op: &'static str, e: LdapError) -> TestkitError {
    match e {
        LdapError::LdapResult { result } => TestkitError::LdapResult {
            op,
            rc: result.rc,
            text: result.text,
        },
        source => TestkitError::ldap(op)(source),
    }
}

fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, TestkitError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| TestkitError::InvalidInput(format!("test CA PEM: {e}")))?;
    roots.add(ca)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

fn smb_conf_text(dir: &Path, ip: Ipv4Addr, realm: &str, netbios: &str, domain: &str) -> String {
    let d = dir.display();
    format!(
        "# Written by writeback-testkit for one test DC.\n\
[global]\n\
\tnetbios name = {DC_NETBIOS_NAME}\n\
\trealm = {realm}\n\
\tworkgroup = {netbios}\n\
\tserver role = active directory domain controller\n\
\tserver services = ldap, cldap, kdc, rpc\n\
\tinterfaces = {ip}\n\
\tbind interfaces only = yes\n\
\tidmap_ldb:use rfc2307 = yes\n\
\tprivate dir = {d}/private\n\
\tbinddns dir = {d}/bind-dns\n\
\tstate directory = {d}/state\n\
\tcache directory = {d}/cache\n\
\tlock directory = {d}\n\
\tpid directory = {d}/run\n\
\tncalrpc dir = {d}/run/ncalrpc\n\
\twinbindd socket directory = {d}/run/winbindd\n\
\tntp signd socket directory = {d}/run/ntp_signd\n\
\tlog file = {d}/log/samba.log\n\
\tmax log size = 10000\n\
\ttls enabled = yes\n\
\ttls keyfile = {d}/tls/key.pem\n\
\ttls certfile = {d}/tls/cert.pem\n\
\ttls cafile = {d}/tls/ca.pem\n\
\t# Like Windows, Samba accepts the previous password for NTLM-style\n\
\t# checks (which LDAP simple binds use) for 60 minutes after a change;\n\
\t# tests prove the old password stops working, so no grace period.\n\
\told password allowed period = 0\n\
\n\
[sysvol]\n\
\tpath = {d}/state/sysvol\n\
\tread only = no\n\
\n\
[netlogon]\n\
\tpath = {d}/state/sysvol/{domain}/scripts\n\
\tread only = no\n"
    )
}

fn krb5_conf_text(realm: &str, ip: Ipv4Addr) -> String {
    format!(
        "[libdefaults]\n\
\tdefault_realm = {realm}\n\
\tdns_lookup_kdc = false\n\
\tdns_lookup_realm = false\n\
\trdns = false\n\
\n\
[realms]\n\
\t{realm} = {{\n\
\t\tkdc = {ip}\n\
\t\tadmin_server = {ip}\n\
\t\tkpasswd_server = {ip}\n\
\t}}\n"
    )
}

/// Provision `domain` once per machine (per Samba version) and return the template
/// directory. Concurrent callers in other processes wait on the template's file lock.
async fn ensure_template(
    root: &Path,
    domain: &str,
    realm: &str,
    netbios: &str,
) -> Result<PathBuf, TestkitError> {
    let version = samba_version().await?;
    let templates = root
        .join("templates")
        .join(format!("v{TEMPLATE_FORMAT}-{version}"));
    create_dir(&templates)?;
    let template = templates.join(domain);
    if template.is_dir() {
        return Ok(template);
    }
    let lock_path = templates.join(format!("{domain}.lock"));
    let lock = open_lock_file(&lock_path)?;
    let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
        .await
        .map_err(|e| TestkitError::io("template lock task", std::io::Error::other(e)))?
        .map_err(|e| TestkitError::io(format!("lock {}", lock_path.display()), e))?;
    if template.is_dir() {
        // Another process provisioned it while we waited.
        return Ok(template);
    }
    // Staging directories of a process killed mid-provisioning; we hold the lock.
    if let Ok(entries) = std::fs::read_dir(&templates) {
        let prefix = format!(".{domain}.staging-");
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let started = Instant::now();
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{domain}.staging-"))
        .tempdir_in(&templates)
        .map_err(|e| TestkitError::io("create template staging directory", e))?;
    let target = staging.path().join("dc");
    // No --adminpass: Samba sets a random Administrator password, which is replaced
    // offline (from stdin) for every DC copied from this template.
    let out = tokio::process::Command::new("samba-tool")
        .args(["domain", "provision"])
        .arg(format!("--targetdir={}", target.display()))
        .arg(format!("--realm={realm}"))
        .arg(format!("--domain={netbios}"))
        .args([
            "--server-role=dc",
            "--dns-backend=NONE",
            "--use-rfc2307",
            "--host-ip=127.0.0.1",
        ])
        .arg(format!("--option=netbios name = {DC_NETBIOS_NAME}"))
        .stdin(Stdio::null())
        .env("LC_ALL", "C")
        .output()
        .await
        .map_err(|e| spawn_error("samba-tool", e))?;
    if !out.status.success() {
        return Err(TestkitError::Command {
            command: format!("samba-tool domain provision --realm={realm}"),
            status: out.status.to_string(),
            stderr: tail_lines(&String::from_utf8_lossy(&out.stderr), 30),
        });
    }
    std::fs::rename(&target, &template).map_err(|e| {
        TestkitError::io(
            format!("move template into place at {}", template.display()),
            e,
        )
    })?;
    drop(staging);
    drop(lock);
    info!(
        domain,
        provision_ms = started.elapsed().as_millis() as u64,
        template = %template.display(),
        "provisioned samba template"
    );
    Ok(template)
}

/// "4.17.12-Debian" from `samba -V`, made safe for a path component.
async fn samba_version() -> Result<String, TestkitError> {
    let out = tokio::process::Command::new("samba")
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| spawn_error("samba", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().trim_start_matches("Version").trim();
    if !out.status.success() || version.is_empty() {
        return Err(TestkitError::Command {
            command: "samba -V".into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect())
}

/// Take the first loopback address whose lock file we can lock exclusively and on
/// which nothing already listens. The lock is held as long as the returned file is.
fn acquire_address(lock_dir: &Path) -> Result<(Ipv4Addr, File), TestkitError> {
    create_dir(lock_dir)?;
    let span = u32::from(LAST_HOST - FIRST_HOST) + 1;
    // Start at a per-process offset so parallel test processes rarely contend.
    let offset = std::process::id() % span;
    for i in 0..span {
        let Ok(host) = u8::try_from(u32::from(FIRST_HOST) + (offset + i) % span) else {
            continue;
        };
        let path = lock_dir.join(format!("ip-{host}.lock"));
        let file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(TestkitError::io(format!("lock {}", path.display()), e));
            }
        }
        let ip = Ipv4Addr::new(127, 0, 0, host);
        if address_in_use(ip) {
            // Something not managed by us (or a stray samba) listens there.
            warn!(%ip, "address locked by nobody but in use; skipping");
            continue;
        }
        return Ok((ip, file));
    }
    Err(TestkitError::NoFreeAddress(lock_dir.to_path_buf()))
}

fn address_in_use(ip: Ipv4Addr) -> bool {
    [389u16, 636, 88].iter().any(|port| {
        TcpStream::connect_timeout(
            &SocketAddr::new(IpAddr::V4(ip), *port),
            Duration::from_millis(200),
        )
        .is_ok()
    })
}

fn open_lock_file(path: &Path) -> Result<File, TestkitError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| TestkitError::io(format!("open {}", path.display()), e))
}

/// `ip addr add 127.0.0.N/32 dev lo`; an address that is already there is fine.
async fn add_loopback_address(ip: Ipv4Addr) -> Result<(), TestkitError> {
    let out = tokio::process::Command::new("ip")
        .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
        .stdin(Stdio::null())
        .env("LC_ALL", "C")
        .output()
        .await
        .map_err(|e| spawn_error("ip", e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Linux says "File exists", gVisor "Address already assigned"; either way check.
    if out.status.success() || loopback_has_address(ip).await {
        Ok(())
    } else {
        Err(TestkitError::Command {
            command: format!("ip addr add {ip}/32 dev lo (needs root)"),
            status: out.status.to_string(),
            stderr: stderr.trim().to_string(),
        })
    }
}

async fn loopback_has_address(ip: Ipv4Addr) -> bool {
    let out = tokio::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", "lo"])
        .stdin(Stdio::null())
        .output()
        .await;
    let needle = format!("inet {ip}/");
    out.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&needle))
}

/// `cp -a template/. dir/` — keeps the sysvol ACL xattrs Samba wrote.
async fn copy_tree(from: &Path, to: &Path) -> Result<(), TestkitError> {
    let out = tokio::process::Command::new("cp")
        .arg("-a")
        .arg(from.join("."))
        .arg(to)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| spawn_error("cp", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestkitError::Command {
            command: format!("cp -a {} {}", from.display(), to.display()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

async fn set_admin_password_offline(smb_conf: &Path, password: &str) -> Result<(), TestkitError> {
    // Samba's Python bindings live in the system interpreter's dist-packages, not in
    // whatever `python3` comes first on PATH (pyenv and friends).
    let mut child = tokio::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(SET_ADMIN_PASSWORD_PY)
        .arg(smb_conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| spawn_error("/usr/bin/python3", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("{password}\n").as_bytes())
            .await
            .map_err(|e| TestkitError::io("write password to python", e))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| TestkitError::io("wait for python", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestkitError::Command {
            command: "python3 (samba.samdb setpassword Administrator)".into(),
            status: out.status.to_string(),
            stderr: tail_lines(&String::from_utf8_lossy(&out.stderr), 20),
        })
    }
}

fn spawn_samba(dir: &Path, smb_conf: &Path) -> Result<(Child, ChildStdin), TestkitError> {
    let log_path = dir.join(SAMBA_LOG);
    let log = File::create(&log_path)
        .map_err(|e| TestkitError::io(format!("create {}", log_path.display()), e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| TestkitError::io("clone log handle", e))?;
    let mut child = std::process::Command::new("samba")
        .arg("-s")
        .arg(smb_conf)
        // Foreground, log to stdout, one process: nothing to reap but samba itself.
        .args(["-i", "-M", "single"])
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(log_err)
        .env("LC_ALL", "C")
        .process_group(0)
        .spawn()
        .map_err(|e| spawn_error("samba", e))?;
    let stdin = child.stdin.take().ok_or_else(|| {
        TestkitError::io("samba stdin", std::io::Error::other("stdin not captured"))
    })?;
    debug!(pid = child.id(), dir = %dir.display(), "spawned samba");
    Ok((child, stdin))
}

/// Err(SambaExited) with the log tail if samba has exited (and is reaped).
fn check_running(child: &mut Child, log: &Path) -> Result<(), TestkitError> {
    match child.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(status)) => Err(TestkitError::SambaExited {
            status: status.to_string(),
            log_tail: log_tail(log),
        }),
        Err(e) => Err(TestkitError::io("poll samba process", e)),
    }
}

pub(crate) fn spawn_error(program: &str, e: std::io::Error) -> TestkitError {
    if e.kind() == std::io::ErrorKind::NotFound {
        TestkitError::MissingTool {
            program: program.to_string(),
            source: e,
        }
    } else {
        TestkitError::io(format!("spawn {program}"), e)
    }
}

pub(crate) fn create_dir(path: &Path) -> Result<(), TestkitError> {
    std::fs::create_dir_all(path)
        .map_err(|e| TestkitError::io(format!("create {}", path.display()), e))
}

pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TestkitError> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(path)
        .map_err(|e| TestkitError::io(format!("create {}", path.display()), e))?;
    file.write_all(contents)
        .map_err(|e| TestkitError::io(format!("write {}", path.display()), e))
}

/// The last 40 lines (at most 16 KiB) of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    const MAX: u64 = 16 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => tail_lines(&text, 40),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The last `n` lines of `text` (for error messages that quote a log or stderr).
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn names_are_derived_from_the_domain() {
        assert_eq!(normalize_domain("Contoso.Test.").unwrap(), "contoso.test");
        assert_eq!(netbios_domain("contoso.test"), "CONTOSO");
        assert_eq!(
            netbios_domain("averyveryverylongname.test"),
            "AVERYVERYVERYLO"
        );
        assert_eq!(base_dn("corp.contoso.test"), "DC=corp,DC=contoso,DC=test");
        assert!(normalize_domain("localhost").is_err());
        assert!(normalize_domain("bad_label.test").is_err());
        assert!(normalize_domain("-x.test").is_err());
    }

    #[test]
    fn unicode_pwd_is_quoted_utf16le() {
        assert_eq!(
            unicode_pwd("Ab1"),
            vec![b'"', 0, b'A', 0, b'b', 0, b'1', 0, b'"', 0]
        );
    }

    #[test]
    fn random_passwords_are_long_and_distinct() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_eq!(a.len(), 27);
        assert!(a.starts_with("Wb!"));
        assert!(a[3..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_dc_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SambaDc>();
    }

    #[test]
    fn an_early_samba_exit_reports_the_log_tail() {
        // A non-DC role makes the `samba` binary refuse to start, without binding
        // anything or touching a database.
        let dir = tempfile::tempdir().unwrap();
        create_dir(&dir.path().join("log")).unwrap();
        let d = dir.path().display();
        let conf = dir.path().join("smb.conf");
        let text = format!(
            "[global]\n\tserver role = standalone server\n\tpid directory = {d}\n\
             \tlock directory = {d}\n\tstate directory = {d}\n\tcache directory = {d}\n\
             \tprivate dir = {d}\n\tinterfaces = 127.0.0.9\n\tbind interfaces only = yes\n"
        );
        write_file(&conf, text.as_bytes(), 0o644).unwrap();
        let (mut child, _stdin) = spawn_samba(dir.path(), &conf).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let err = loop {
            match check_running(&mut child, &dir.path().join(SAMBA_LOG)) {
                Ok(()) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                Ok(()) => panic!("samba did not exit"),
                Err(e) => break e,
            }
        };
        let message = err.to_string();
        assert!(matches!(err, TestkitError::SambaExited { .. }), "{message}");
        assert!(message.contains("server role"), "{message}");
    }

    #[test]
    fn tail_lines_keeps_the_end() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
    }
}
