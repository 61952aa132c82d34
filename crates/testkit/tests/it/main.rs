//! Integration tests of the testkit against real Samba AD domain controllers, a
//! real OpenID provider (glewlwyd) and a real browser (Chromium over WebDriver).
//!
//! These need root and the Samba, glewlwyd and Chromium packages
//! (scripts/install-deps.sh); they fail, never skip, when those are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod fresh_machine;
mod oidc;
mod pki;
mod samba_dc;

/// Show the testkit's own logs (timings, directories) with e.g.
/// `WRITEBACK_LOG=writeback_testkit=debug cargo test -p writeback-testkit -- --nocapture`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WRITEBACK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
