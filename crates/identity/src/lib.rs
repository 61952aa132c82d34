//! Workload identity for writeback. The control plane owns a CA ([`Ca`]);
//! every agent, relay and control plane carries a certificate from it whose
//! URI SAN names what it is and which tenant it belongs to ([`SpiffeId`],
//! e.g. `spiffe://writeback/tenant/t1/domain/contoso.test/agent/a1`).
//! Identity comes only from that SAN, never the CN. [`tls`] builds rustls
//! configs whose verifiers authorize the peer's SAN during the handshake
//! (on both sides: a relay is dialled only if it names a relay of the
//! dialler's tenant),
//! [`transport`] plugs them into tonic servers and channels so each request
//! knows its authenticated peer, and [`token`] defines the one-time
//! enrollment tokens that pin the CA for an agent's first contact.
//! [`Validity`] reads a certificate's lifetime and says when it is due for
//! renewal; [`tls::server_config_optional_client`] is the control plane's
//! API, where an agent may present its certificate to renew it (each
//! request's [`PeerInfo`] carries the certificate's fingerprint, so the
//! control plane renews only the current one). The API's own certificate
//! names [`SpiffeId::ControlPlaneApi`]; an agent checks it on enrollment and
//! renewal ([`tls::pinned_client_config`],
//! [`tls::control_plane_client_config`]).
//! [`limits`] counts what one source address holds of a server (connections,
//! handshakes) against a total and a per-source cap.
//! [`ca::write_file`] is the one place key and token files are written
//! (atomically, 0600 for secrets).

#![forbid(unsafe_code)]

pub mod ca;
pub mod id;
pub mod limits;
pub mod tls;
pub mod token;
pub mod transport;

pub use ca::{Ca, Validity, csr_for_key, fingerprint_of_pem, generate_csr, key_fingerprint_of_pem};
pub use id::SpiffeId;
pub use token::EnrollmentToken;
pub use transport::PeerInfo;

/// Errors from identity, PKI and TLS setup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate, key or CSR could not be generated or parsed.
    #[error("certificate error: {0}")]
    Pki(String),
    /// A SPIFFE id is malformed.
    #[error("invalid identity {0:?}: {1}")]
    InvalidId(String, &'static str),
    /// A PEM file held nothing usable.
    #[error("no {0} found in PEM input")]
    EmptyPem(&'static str),
    /// TLS configuration failed.
    #[error("tls configuration error: {0}")]
    Tls(#[from] rustls::Error),
    /// A URL could not be used as a peer address.
    #[error("invalid peer url {0:?}: {1}")]
    Url(String, String),
    /// File I/O.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Pki(e.to_string())
    }
}

/// Installs ring as the process-wide rustls crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
