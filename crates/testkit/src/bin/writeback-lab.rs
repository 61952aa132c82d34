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

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use writeback_testkit::oidc::{AUDIENCE, MFA_SCOPE};
use writeback_testkit::{OidcProvider, SambaDc, TestCa, TestkitError};

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

/// The OpenID provider and the portal's certificate (see the module docs).
async fn start_idp(
    dir: &Path,
    dc: &SambaDc,
    domain: &str,
    portal_url: &str,
) -> Result<OidcProvider, TestkitError> {
    let idp = OidcProvider::start().await?;
    let d = dir.join("idp");
    std::fs::create_dir_all(&d)?;
    let mut people = String::from("# sign-in\tpassword\tupn\trole\thotp\n");
    for (name, role, group) in IDP_PEOPLE {
        let upn = format!("{name}@{domain}");
        let password = demo_password();
        let groups: Vec<&str> = group.into_iter().collect();
        idp.add_user(name, &password, &upn, &groups).await?;
        if name != "alice" {
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
    let secret = random_hex(24);
    let callback = format!("{}/callback", portal_url.trim_end_matches('/'));
    idp.add_client_with_redirects(PORTAL_CLIENT, &secret, &[callback.as_str()])
        .await?;
    write(&d.join("issuer"), idp.issuer(), false)?;
    write(&d.join("ca.pem"), &idp.ca_pem(), false)?;
    write(&d.join("client_id"), PORTAL_CLIENT, false)?;
    write(&d.join("client_secret"), &secret, true)?;
    write(&d.join("audience"), AUDIENCE, false)?;
    write(&d.join("strong_scope"), MFA_SCOPE, false)?;
    write(&d.join("users.txt"), &people, true)?;

    let ca = TestCa::new("writeback demo portal CA")?;
    let (cert, key) = ca.issue_server(
        &["localhost".into()],
        &[std::net::Ipv4Addr::LOCALHOST.into()],
    )?;
    let p = dir.join("portal");
    std::fs::create_dir_all(&p)?;
    write(&p.join("ca.pem"), &ca.cert_pem(), false)?;
    write(&p.join("cert.pem"), &cert, false)?;
    write(&p.join("key.pem"), &key, true)?;
    println!(
        "openid provider {} (sign-in page {})",
        idp.issuer(),
        idp.login_page_url()
    );
    Ok(idp)
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
        (Some(url), Some(dc), Some(domain)) => Some(start_idp(&dir, dc, domain, url).await?),
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
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--domain" => domains.extend(args.next()),
            "--portal-url" => portal_url = args.next(),
            other => {
                eprintln!(
                    "writeback-lab: unknown argument {other:?}; usage: writeback-lab --dir DIR [--portal-url URL] --domain NAME..."
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
    match run(dir, domains, portal_url).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writeback-lab: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
