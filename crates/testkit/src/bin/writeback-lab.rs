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

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use writeback_testkit::{SambaDc, TestkitError};

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), TestkitError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(contents.as_bytes())?;
    Ok(())
}

fn demo_password() -> String {
    let mut bytes = [0u8; 9];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut bytes)
    });
    let tail: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("Demo-{tail}!1")
}

async fn run(dir: PathBuf, domains: Vec<String>) -> Result<(), TestkitError> {
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
    write(&dir.join("ready"), "", false)?;
    writeback_core::shutdown_signal().await;
    println!("stopping domain controllers");
    drop(dcs);
    let _ = std::fs::remove_file(dir.join("ready"));
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut domains = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--domain" => domains.extend(args.next()),
            other => {
                eprintln!(
                    "writeback-lab: unknown argument {other:?}; usage: writeback-lab --dir DIR --domain NAME..."
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
    match run(dir, domains).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writeback-lab: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
