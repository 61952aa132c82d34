//! Integration tests of the directory layer against real Samba AD domain controllers
//! (writeback-testkit). They need root and the Samba packages
//! (scripts/install-deps.sh) and fail, never skip, when Samba is missing. Each test
//! starts its own DC and groups several checks on it, since a DC takes seconds to
//! start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod change;
mod crash;
mod dc_partition;
mod hardening;
mod permissions;
mod policy;
mod pool;
mod privileged;
mod proxy;
mod referral;
mod refusals;
mod renewal;
mod reset;
mod timeout;

use secrecy::SecretString;
use writeback_agent::directory::{Directory, DirectoryConfig, DirectoryError, Target};
use writeback_core::ReasonCode;
use writeback_testkit::SambaDc;

/// Logs with e.g. `WRITEBACK_LOG=writeback_agent=debug cargo test -p writeback-agent
/// --test it -- --nocapture`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WRITEBACK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A fresh DC for contoso.test; panics (never skips) if Samba cannot start.
pub async fn start_dc() -> SambaDc {
    init_tracing();
    SambaDc::start("contoso.test")
        .await
        .expect("a Samba AD DC (needs root and the samba packages: scripts/install-deps.sh)")
}

pub fn pw(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

/// The agent bound as Administrator, the whole domain in scope.
pub fn admin_config(dc: &SambaDc) -> DirectoryConfig {
    DirectoryConfig::new(
        vec![dc.ldaps_url()],
        dc.ca_pem(),
        dc.admin_dn(),
        pw(dc.admin_password()),
    )
}

/// The agent bound as `bind` (DN or UPN) with `password`.
pub fn config_as(dc: &SambaDc, bind: &str, password: &str) -> DirectoryConfig {
    DirectoryConfig::new(vec![dc.ldaps_url()], dc.ca_pem(), bind, pw(password))
}

pub fn directory(config: DirectoryConfig) -> Directory {
    Directory::new(config).unwrap()
}

pub fn upn(dc: &SambaDc, sam: &str) -> Target {
    Target::Upn(format!("{sam}@{}", dc.domain()))
}

/// Assert a refusal with `reason` whose public message names no DN and carries no DC
/// text; returns the error for further checks.
#[track_caller]
pub fn refused(result: Result<(), DirectoryError>, reason: ReasonCode) -> DirectoryError {
    match result {
        Ok(()) => panic!("expected {reason}, got success"),
        Err(e) => {
            assert_eq!(e.reason(), reason, "{e}");
            let msg = e.public_message();
            for leak in ["CN=", "DC=", "OU=", "0000", "data 5", "LdapErr"] {
                assert!(!msg.contains(leak), "public message leaks {leak:?}: {msg}");
            }
            e
        }
    }
}

/// Assert a `PROTECTED_ACCOUNT` refusal (as [`refused`]) and return why.
#[track_caller]
pub fn protected_by(result: Result<(), DirectoryError>) -> writeback_agent::directory::ProtectedBy {
    match refused(result, ReasonCode::ProtectedAccount) {
        DirectoryError::ProtectedAccount { by, .. } => by,
        other => panic!("{other:?}"),
    }
}

/// `samba-tool user show <sam> --attributes=<attr>` → the value.
pub async fn show_attr(dc: &SambaDc, sam: &str, attr: &str) -> String {
    let out = dc
        .samba_tool(&["user", "show", sam, &format!("--attributes={attr}")])
        .await
        .unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{attr}: ")))
        .unwrap_or_else(|| panic!("no {attr} for {sam} in {out:?}"))
        .trim()
        .to_string()
}

pub async fn guid_of(dc: &SambaDc, sam: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(&show_attr(dc, sam, "objectGUID").await).unwrap()
}

pub async fn attr(dc: &SambaDc, dn: &str, name: &str) -> String {
    let attrs = dc.read_attrs(dn, &[name]).await.unwrap();
    attrs
        .get(name)
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_else(|| panic!("{dn} has no {name}: {attrs:?}"))
}
