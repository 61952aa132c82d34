//! End-to-end tests against real Samba AD DCs. They need Samba installed
//! (`scripts/install-deps.sh`) and fail loudly without it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod compose;
mod deploy;
mod directory_search;
mod enrollment;
mod metrics;
mod oidc;
mod op_signing;
mod password_quality;
mod portal;
mod portal_metrics;
mod scenarios;
mod skeleton;
mod stack;
mod standard_errors;
mod support;
mod traces;
