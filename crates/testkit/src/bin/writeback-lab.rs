//! `writeback-lab`: runs Samba AD domain controllers for the local stack
//! (`scripts/stack.sh up`) until it is stopped. For each `--domain` it starts
//! a DC (see [`writeback_testkit::SambaDc`]), creates the demo users, and
//! writes what the agents and the operator need into `--dir`:
//! `<domain>/ldaps_url`, `<domain>/ca.pem`, `<domain>/admin_dn`,
//! `<domain>/admin_password` (0600), the agent's service account
//! `svc-writeback` (`<domain>/svc_dn`, `<domain>/svc_password`, 0600; it has
//! no rights until `writeback-agent permissions grant`), and `users.txt`
//! (0600, the demo users' initial passwords); then `ready`. SIGTERM or Ctrl-C stops the DCs and
//! removes their directories.
//!
//! With `--portal-url URL` it also runs the tenant's OpenID provider for the
//! portal (see [`writeback_testkit::OidcProvider`]: glewlwyd on
//! `127.0.0.1:<free port>`) with three demo people — `alice` (a user),
//! `helpdesk` (group `writeback-password-admins`) and `itadmin` (group
//! `writeback-global-admins`), each also a user of the first domain — and the
//! portal's confidential client `writeback-portal` (redirect
//! `URL/callback`). It writes `idp/issuer`, `idp/ca.pem`, `idp/client_id`,
//! `idp/client_secret` (0600) and `idp/users.txt` (0600: sign-in name,
//! password, UPN, role, and the `otpauth://` URI of the HOTP secret a strong
//! sign-in asks for), and the portal's TLS certificate from a CA of its own
//! for `localhost` and 127.0.0.1: `portal/ca.pem`, `portal/cert.pem`,
//! `portal/key.pem` (0600).
//!
//! With `--idp-only` it runs that provider alone, for the docker-compose
//! `idp` service: no DC (the demo people's directory accounts are the DC
//! image's `DEMO_USERS`), glewlwyd bound to `--idp-listen ADDR:PORT` (default
//! 127.0.0.1 and a free port) with the issuer
//! `https://<--idp-host>:<port>/api/oidc`; the demo people's password from
//! `--idp-password-file` and the client secret from `--client-secret-file`
//! (docker secrets; then no `idp/client_secret` copy is written); and the
//! provider's and the portal's certificates and the provider's signing key
//! kept in `idp/tls/` and `portal/` across restarts, so the control plane,
//! the portal and the browser keep trusting them.

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use writeback_testkit::oidc::{AUDIENCE, MFA_SCOPE};
use writeback_testkit::{OidcOptions, OidcProvider, SambaDc, ServerTls, TestkitError};

/// The portal's client id at the provider.
const PORTAL_CLIENT: &str = "writeback-portal";

/// The provider's demo people: sign-in name, role as writeback names it,
/// the group that gives it.
const IDP_PEOPLE: [(&str, &str, Option<&str>); 3] = [
    ("alice", "user", None),
    (
        "helpdesk",
        "password_admin",
        Some("writeback-password-admins"),
    ),
    ("itadmin", "global_admin", Some("writeback-global-admins")),
];

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), TestkitError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(contents.as_bytes())?;
    Ok(())
}

/// `n` random bytes as hex.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut bytes)
    });
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn demo_password() -> String {
    format!("Demo-{}!1", random_hex(9))
}

/// How the OpenID provider runs (`--idp-*` flags; see the module docs).
#[derive(Default)]
struct IdpSettings {
    listen: Option<std::net::SocketAddr>,
    host: Option<String>,
    password_file: Option<PathBuf>,
    client_secret_file: Option<PathBuf>,
}

/// A secret from a file, without a trailing newline.
fn read_secret(path: &Path) -> Result<String, TestkitError> {
    Ok(std::fs::read_to_string(path)?.trim_end().to_owned())
}

/// The certificate kept in `d` (`ca.pem`, `cert.pem`, `key.pem`), or a new one
/// from a fresh CA for `dns` and 127.0.0.1, written there.
fn kept_tls(d: &Path, ca_name: &str, dns: &[String]) -> Result<ServerTls, TestkitError> {
    let read = |f: &str| std::fs::read_to_string(d.join(f));
    if let (Ok(ca_pem), Ok(cert_pem), Ok(key_pem)) =
        (read("ca.pem"), read("cert.pem"), read("key.pem"))
    {
        return Ok(ServerTls {
            ca_pem,
            cert_pem,
            key_pem,
        });
    }
    let tls = ServerTls::issue(ca_name, dns)?;
    std::fs::create_dir_all(d)?;
    write(&d.join("ca.pem"), &tls.ca_pem, false)?;
    write(&d.join("cert.pem"), &tls.cert_pem, false)?;
    write(&d.join("key.pem"), &tls.key_pem, true)?;
    Ok(tls)
}

/// The OpenID provider and the portal's certificate (see the module docs).
async fn start_idp(
    dir: &Path,
    dc: Option<&SambaDc>,
    domain: &str,
    portal_url: &str,
    settings: &IdpSettings,
) -> Result<OidcProvider, TestkitError> {
    let d = dir.join("idp");
    std::fs::create_dir_all(&d)?;
    let mut opts = OidcOptions {
        public_host: settings.host.clone(),
        ..OidcOptions::default()
    };
    if let Some(listen) = settings.listen {
        opts.bind = listen.ip();
        opts.port = Some(listen.port()).filter(|p| *p != 0);
    }
    if dc.is_none() {
        let mut dns = vec!["localhost".to_owned()];
        dns.extend(settings.host.clone());
        opts.signing_key_file = Some(d.join("tls/signing.key"));
        opts.tls = Some(kept_tls(
            &d.join("tls"),
            "writeback demo OpenID provider CA",
            &dns,
        )?);
    }
    let idp = OidcProvider::start_with(opts).await?;
    let shared_password = settings
        .password_file
        .as_deref()
        .map(read_secret)
        .transpose()?;
    let mut people = String::from("# sign-in\tpassword\tupn\trole\thotp\n");
    for (name, role, group) in IDP_PEOPLE {
        let upn = format!("{name}@{domain}");
        let password = shared_password.clone().unwrap_or_else(demo_password);
        let groups: Vec<&str> = group.into_iter().collect();
        idp.add_user(name, &password, &upn, &groups).await?;
        if let (Some(dc), false) = (dc, name == "alice") {
            // alice exists already; the others get a directory account too, so
            // their own page in the portal works.
            dc.create_user(name, &demo_password()).await?;
        }
        let hotp = idp.hotp_uri(name).await?;
        people.push_str(&format!("{name}\t{password}\t{upn}\t{role}\t{hotp}\n"));
    }
    // Letters and digits only: the portal sends it by HTTP Basic, form-encoded
    // as RFC 6749 asks, and glewlwyd does not decode it (a `!` fails the
    // token request with unauthorized_client).
    let secret = match &settings.client_secret_file {
        Some(f) => read_secret(f)?,
        None => random_hex(24),
    };
    let callback = format!("{}/callback", portal_url.trim_end_matches('/'));
    idp.add_client_with_redirects(PORTAL_CLIENT, &secret, &[callback.as_str()])
        .await?;
    write(&d.join("issuer"), idp.issuer(), false)?;
    write(&d.join("ca.pem"), &idp.ca_pem(), false)?;
    write(&d.join("client_id"), PORTAL_CLIENT, false)?;
    if settings.client_secret_file.is_none() {
        write(&d.join("client_secret"), &secret, true)?;
    }
    write(&d.join("audience"), AUDIENCE, false)?;
    write(&d.join("strong_scope"), MFA_SCOPE, false)?;
    write(&d.join("users.txt"), &people, true)?;

    let p = dir.join("portal");
    if dc.is_some() {
        // A new lab, a new portal certificate.
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            let _ = std::fs::remove_file(p.join(f));
        }
    }
    kept_tls(&p, "writeback demo portal CA", &["localhost".into()])?;
    println!(
        "openid provider {} (sign-in page {})",
        idp.issuer(),
        idp.login_page_url()
    );
    Ok(idp)
}

/// `--idp-only`: the provider alone until stopped.
async fn run_idp(
    dir: PathBuf,
    domain: &str,
    portal_url: &str,
    settings: &IdpSettings,
) -> Result<(), TestkitError> {
    std::fs::create_dir_all(&dir)?;
    let _ = std::fs::remove_file(dir.join("ready"));
    let idp = start_idp(&dir, None, domain, portal_url, settings).await?;
    write(&dir.join("ready"), "", false)?;
    writeback_core::shutdown_signal().await;
    println!("stopping the openid provider");
    drop(idp);
    let _ = std::fs::remove_file(dir.join("ready"));
    Ok(())
}

async fn run(
    dir: PathBuf,
    domains: Vec<String>,
    portal_url: Option<String>,
) -> Result<(), TestkitError> {
    std::fs::create_dir_all(&dir)?;
    let _ = std::fs::remove_file(dir.join("ready"));
    let mut dcs = Vec::new();
    let mut users = String::new();
    for domain in &domains {
        let dc = SambaDc::start(domain).await?;
        // The seed's advice for evaluating writeback: minimum password age 0.
        dc.set_password_settings(&["--min-pwd-age=0"]).await?;
        let d = dir.join(domain);
        std::fs::create_dir_all(&d)?;
        write(&d.join("ldaps_url"), &dc.ldaps_url(), false)?;
        write(&d.join("ca.pem"), dc.ca_pem(), false)?;
        write(&d.join("admin_dn"), &dc.admin_dn(), false)?;
        write(&d.join("admin_password"), dc.admin_password(), true)?;
        let svc_password = demo_password();
        let svc_dn = dc.create_user("svc-writeback", &svc_password).await?;
        write(&d.join("svc_dn"), &svc_dn, false)?;
        write(&d.join("svc_password"), &svc_password, true)?;
        for user in ["alice", "bob"] {
            let password = demo_password();
            dc.create_user(user, &password).await?;
            users.push_str(&format!("{user}@{domain}\t{password}\n"));
        }
        println!("domain controller for {domain} on {}", dc.ldaps_url());
        dcs.push(dc);
    }
    write(&dir.join("users.txt"), &users, true)?;
    let idp = match (&portal_url, dcs.first(), domains.first()) {
        (Some(url), Some(dc), Some(domain)) => {
            Some(start_idp(&dir, Some(dc), domain, url, &IdpSettings::default()).await?)
        }
        _ => None,
    };
    write(&dir.join("ready"), "", false)?;
    writeback_core::shutdown_signal().await;
    println!("stopping domain controllers");
    drop(idp);
    drop(dcs);
    let _ = std::fs::remove_file(dir.join("ready"));
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut domains = Vec::new();
    let mut portal_url = None;
    let mut idp_only = false;
    let mut idp = IdpSettings::default();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--domain" => domains.extend(args.next()),
            "--portal-url" => portal_url = args.next(),
            "--idp-only" => idp_only = true,
            "--idp-host" => idp.host = args.next(),
            "--idp-password-file" => idp.password_file = args.next().map(PathBuf::from),
            "--client-secret-file" => idp.client_secret_file = args.next().map(PathBuf::from),
            "--idp-listen" => match args.next().map(|l| l.parse()) {
                Some(Ok(addr)) => idp.listen = Some(addr),
                _ => {
                    eprintln!("writeback-lab: --idp-listen needs ADDRESS:PORT");
                    return std::process::ExitCode::from(2);
                }
            },
            other => {
                eprintln!(
                    "writeback-lab: unknown argument {other:?}; usage: writeback-lab --dir DIR [--portal-url URL] --domain NAME... \
                     | writeback-lab --idp-only --dir DIR --portal-url URL --domain NAME [--idp-listen ADDR:PORT] [--idp-host NAME] \
                     [--idp-password-file FILE] [--client-secret-file FILE]"
                );
                return std::process::ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("writeback-lab: --dir is required");
        return std::process::ExitCode::from(2);
    };
    if domains.is_empty() {
        domains = vec!["contoso.test".into(), "fabrikam.test".into()];
    }
    let result = match (idp_only, &portal_url, domains.first()) {
        (true, Some(url), Some(domain)) => run_idp(dir, domain, url, &idp).await,
        (true, _, _) => {
            eprintln!("writeback-lab: --idp-only needs --portal-url and --domain");
            return std::process::ExitCode::from(2);
        }
        (false, _, _) => run(dir, domains, portal_url).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writeback-lab: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
