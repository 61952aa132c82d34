//! The on-premises agent: runs inside one Active Directory domain, dials out to
//! the relays (no inbound port), and applies password resets, changes and unlocks
//! to the domain controllers over LDAPS, mapping every directory outcome to a
//! stable [`writeback_core::ReasonCode`].
//!
//! [`enroll`] obtains the agent's identity and [`renew`] renews its
//! certificate before it expires; [`runtime`] wires the state
//! directory, the [`executor`] (checks, envelope opening, exactly-once per
//! operation id, kept across restarts by the durable [`ledger`]) and the [`tunnel`] to the relays; [`directory`] speaks LDAP
//! over a pool of warm, bound sessions (including self-relative security
//! descriptors) and answers the help desk's directory searches within the
//! configured scope (`directory::search`). [`permissions`] checks and
//! grants the service account's rights on the domain (`permissions check|grant`),
//! [`policy`] reads the password policy and says which pitfalls apply
//! (`policy`), and [`health`] re-runs both in the background for the health
//! reports the relays probe. [`metrics`] counts operations, LDAP requests and
//! sessions, served on `metrics_listen` when set. Its parsers of bytes it
//! did not make (a DC's descriptors, entries and replication metadata, the
//! ledger file, a relayed operation) are fuzzed through `fuzz` (`fuzz/`).

#![forbid(unsafe_code)]

pub mod apply;
pub mod clock;
pub mod config;
pub mod directory;
pub mod enroll;
pub mod executor;
#[doc(hidden)]
pub mod fuzz;
pub mod health;
pub mod ledger;
pub mod metrics;
pub mod permissions;
pub mod policy;
pub mod renew;
pub mod runtime;
pub mod state;
pub mod trace;
pub mod tunnel;

use writeback_core::Failure;

/// Errors that stop the agent or one of its commands.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory is missing or damaged.
    #[error("{0}")]
    State(String),
    /// Enrollment was refused or could not reach the control plane.
    #[error("enrollment failed: {0}")]
    Enroll(Failure),
    /// Certificate renewal was refused or could not reach the control plane.
    #[error("certificate renewal failed: {0}")]
    Renew(Failure),
    /// Certificates, keys, TLS.
    #[error("identity: {0}")]
    Identity(#[from] writeback_identity::Error),
    /// The config is incomplete or names unreadable files.
    #[error("config: {0}")]
    Config(String),
    /// The directory configuration is invalid.
    #[error("directory: {0}")]
    Directory(#[from] directory::DirectoryError),
}
