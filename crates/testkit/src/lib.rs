//! Test harness for writeback. It starts real Samba AD domain controllers as child
//! processes — each in its own temporary directory, on its own loopback address
//! `127.0.0.N`, with an LDAPS certificate from a throwaway test CA that clients verify
//! — so tests exercise the same LDAP, password and Kerberos behaviour an agent meets on
//! premises. [`stack::Stack`] adds the control plane, relays and agents in-process, so a
//! test can assemble the whole system from one crate. The `writeback-lab`
//! binary keeps DCs — and, for the portal, an OpenID provider with demo
//! people — running for the local stack (`scripts/stack.sh up`).
//! [`docker`] runs containers for the tests that need a machine of their own (a
//! clean Debian for `scripts/install-deps.sh`, the docker-compose evaluation).
//! [`oidc::OidcProvider`] runs a real OpenID provider (Debian's glewlwyd) over HTTPS
//! on 127.0.0.1, issuing RS256 JWT access tokens (password, client-credentials, and
//! password + HOTP through the authorization code flow) for the control plane's
//! token validation tests. [`smtp::SmtpServer`] runs a real SMTP server (Python's
//! aiosmtpd from the tests' virtual environment) on 127.0.0.1 with STARTTLS and
//! AUTH, keeping every message it accepts for the notification tests to read.
//! [`browser::Browser`] drives a real headless Chromium over WebDriver (Debian's
//! chromium-driver) for end-to-end tests of web pages, trusting the tests' own CAs
//! through an NSS database (real TLS, no ignored certificate errors), and signs
//! users in through glewlwyd's own login page ([`browser::sign_in_at_glewlwyd`]).
//! [`otlp::Collector`] receives the services' OpenTelemetry spans over OTLP/gRPC
//! for the end-to-end trace tests. [`partition::Partition`] cuts and heals
//! one TCP link (an agent's tunnel to its relay) for the fault tests;
//! [`burst`] runs the fault tests' bursts and checks their invariants.
//!
//! Everything is polled with deadlines (no fixed sleeps), nothing listens on fixed
//! shared ports, and several domain controllers run side by side, also from parallel
//! test processes (`cargo nextest`).

pub mod browser;
pub mod burst;
mod child;
pub mod docker;
mod error;
pub mod oidc;
pub mod otlp;
pub mod partition;
pub mod pki;
pub mod process;
pub mod samba;
pub mod smtp;
pub mod stack;

pub use browser::{Browser, Session, Viewport};
pub use error::TestkitError;
pub use oidc::{OidcOptions, OidcProvider, ServerTls};
pub use pki::TestCa;
pub use process::ServiceProcess;
pub use samba::{SambaDc, tail_lines, unicode_pwd};
pub use smtp::SmtpServer;
