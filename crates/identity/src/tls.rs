//! rustls configurations whose verifiers authorize the peer by its URI SAN.
//!
//! - [`server_config`]: a server that requires client certificates from the
//!   tenant CA and admits only identities the given policy accepts — checked
//!   during the handshake, so a certificate of another CA or another tenant
//!   never reaches a handler.
//!   [`server_config_reloadable`] does the same with a certificate that can
//!   be replaced while serving ([`ReloadableCert`]: a relay reloading its
//!   files); [`server_config_optional_client`] asks for a client
//!   certificate without requiring one (the control plane's API).
//!   [`ReissuingCert`] is an in-memory certificate issued again halfway
//!   through its life (the control plane's API and relay-client
//!   certificates, see [`relay_client_config_reissuing`]).
//! - [`client_config`]: a client that verifies the server against the tenant
//!   CA (hostname included) and optionally presents its own certificate.
//! - [`relay_client_config`]: the same, and the server must also carry the
//!   identity of a relay of the given tenant (what the control plane and
//!   agents use to dial relays); [`control_plane_client_config`]: the
//!   server must carry the control plane API's identity (what an agent
//!   renewing its certificate uses); [`authorizing_client_config`] for any
//!   other server policy.
//! - [`web_client_config`]: a client for the public web (identity
//!   providers): the system's roots plus an optional CA file.
//! - [`pinned_client_config`]: first contact at enrollment, before the
//!   client has the CA: the server chain must contain a CA certificate whose
//!   SHA-256 equals the fingerprint pinned in the enrollment token, the
//!   leaf must verify against it and carry the control plane API's identity
//!   ([`SpiffeId::ControlPlaneApi`]): a relay's certificate from the same CA
//!   with the control plane's host names does not pass.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::{Error, SpiffeId};

/// Decides whether an authenticated peer identity may connect.
pub type Policy = Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>;

/// The start of the handshake error when a server that should be the
/// control plane's API presents another identity (a relay's, say): what
/// an agent looks for to report `NOT_CONTROL_PLANE`.
pub const NOT_THE_CONTROL_PLANE: &str = "the server is not the writeback control plane";

/// The SHA-256 (lowercase hex) of a certificate's DER: the fingerprint the
/// control plane records for an agent's certificate.
pub fn fingerprint_of(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// Every certificate in `pem`.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pki(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::EmptyPem("certificate"));
    }
    Ok(certs)
}

/// The private key in `pem`.
pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| Error::EmptyPem("private key"))
}

/// A root store holding the certificates in `pem`.
pub fn roots_from_pem(pem: &str) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for c in certs_from_pem(pem)? {
        roots.add(c)?;
    }
    Ok(Arc::new(roots))
}

/// The writeback identity in a certificate's URI SANs, if exactly one.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Option<SpiffeId> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, x509) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let san = x509.subject_alternative_name().ok()??;
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) if u.starts_with("spiffe://") => Some(*u),
        _ => None,
    });
    let first = ids.next()?;
    if ids.next().is_some() {
        return None;
    }
    first.parse().ok()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Wraps webpki's client verifier and authorizes the SAN identity.
struct AuthorizingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    policy: Policy,
}

impl std::fmt::Debug for AuthorizingClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthorizingClientVerifier")
    }
}

impl ClientCertVerifier for AuthorizingClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let id = spiffe_id_of(end_entity).ok_or_else(|| {
            rustls::Error::General("client certificate carries no writeback identity".into())
        })?;
        if (self.policy)(&id) {
            Ok(ClientCertVerified::assertion())
        } else {
            tracing::warn!(peer = %id, "refused client certificate: identity not authorized here");
            Err(rustls::Error::General(format!(
                "identity {id} is not authorized"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server config presenting `chain_pem`/`key_pem`. With `client_auth`,
/// client certificates are required, must chain to the roots, and must carry
/// an identity the policy accepts.
pub fn server_config(
    chain_pem: &str,
    key_pem: &str,
    client_auth: Option<(Arc<RootCertStore>, Policy)>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    finish_server_config(server_builder(client_auth)?, chain_pem, key_pem)
}

fn server_builder(
    client_auth: Option<(Arc<RootCertStore>, Policy)>,
) -> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert>, Error> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    Ok(match client_auth {
        Some((roots, policy)) => {
            let inner = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| Error::Pki(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(AuthorizingClientVerifier { inner, policy }))
        }
        None => builder.with_no_client_auth(),
    })
}

/// [`server_config`] presenting whatever `cert` holds at each handshake,
/// so the certificate can be replaced while the server runs (a relay
/// reloading its files).
pub fn server_config_reloadable(
    cert: Arc<ReloadableCert>,
    client_auth: Option<(Arc<RootCertStore>, Policy)>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let mut config = server_builder(client_auth)?.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A server certificate and key that can be replaced while serving: new
/// handshakes get the new pair, established connections keep theirs.
pub struct ReloadableCert {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl std::fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadableCert")
    }
}

impl ReloadableCert {
    /// Holds `chain_pem` and its key `key_pem`.
    pub fn new(chain_pem: &str, key_pem: &str) -> Result<Arc<ReloadableCert>, Error> {
        Ok(Arc::new(ReloadableCert {
            current: std::sync::RwLock::new(certified_key(chain_pem, key_pem)?),
        }))
    }

    /// Replaces the pair; a chain that does not parse or does not match its
    /// key is an error and the old pair stays.
    pub fn replace(&self, chain_pem: &str, key_pem: &str) -> Result<(), Error> {
        let next = certified_key(chain_pem, key_pem)?;
        match self.current.write() {
            Ok(mut g) => *g = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for ReloadableCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        match self.current.read() {
            Ok(g) => Some(g.clone()),
            Err(poisoned) => Some(poisoned.into_inner().clone()),
        }
    }
}

fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<rustls::sign::CertifiedKey>, Error> {
    let chain = certs_from_pem(chain_pem)?;
    if chain.is_empty() {
        return Err(Error::EmptyPem("certificate"));
    }
    let key = provider()
        .key_provider
        .load_private_key(key_from_pem(key_pem)?)?;
    let certified = rustls::sign::CertifiedKey::new(chain, key);
    certified.keys_match()?;
    Ok(Arc::new(certified))
}

/// A server config presenting `chain_pem`/`key_pem` to clients with or
/// without a certificate: one that is presented must chain to `roots` and
/// carry an identity `policy` accepts (or the handshake fails), and then
/// names the peer in [`crate::PeerInfo`]. The control plane's API: bearer
/// tokens for people and programs, an agent's own certificate for renewing
/// it.
pub fn server_config_optional_client(
    cert: Arc<ReissuingCert>,
    roots: Arc<RootCertStore>,
    policy: Policy,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::Pki(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(AuthorizingClientVerifier { inner, policy }))
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Issues a (chain PEM, key PEM) pair: the CA, for a certificate the
/// process holds only in memory.
pub type Issue = Arc<dyn Fn() -> Result<(String, String), Error> + Send + Sync>;

/// A certificate issued in memory and issued again once it is older than
/// `refresh_after` (half its lifetime), at the next handshake that needs
/// it: a long-running control plane never presents an expired API or
/// relay-client certificate. A failed re-issue is logged and the current
/// one kept (tried again at the next handshake).
pub struct ReissuingCert {
    issue: Issue,
    refresh_after: std::time::Duration,
    current: std::sync::Mutex<(Arc<rustls::sign::CertifiedKey>, std::time::Instant)>,
}

impl std::fmt::Debug for ReissuingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReissuingCert")
    }
}

impl ReissuingCert {
    /// Issues the first certificate now.
    pub fn new(issue: Issue, refresh_after: std::time::Duration) -> Result<Arc<Self>, Error> {
        let (chain, key) = issue()?;
        Ok(Arc::new(ReissuingCert {
            current: std::sync::Mutex::new((
                certified_key(&chain, &key)?,
                std::time::Instant::now(),
            )),
            issue,
            refresh_after,
        }))
    }

    /// The certificate to present, re-issued first when it is due.
    pub fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        let mut held = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if held.1.elapsed() >= self.refresh_after {
            match (self.issue)().and_then(|(chain, key)| certified_key(&chain, &key)) {
                Ok(fresh) => {
                    tracing::info!("re-issued an in-memory certificate halfway through its life");
                    *held = (fresh, std::time::Instant::now());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot re-issue a certificate; keeping the current one")
                }
            }
        }
        held.0.clone()
    }
}

impl rustls::server::ResolvesServerCert for ReissuingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for ReissuingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn finish_server_config(
    builder: rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert>,
    chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let mut config =
        builder.with_single_cert(certs_from_pem(chain_pem)?, key_from_pem(key_pem)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Wraps webpki's server verifier (chain and host name) and authorizes the
/// server's SAN identity too; `refusal` starts the error when it does not.
struct AuthorizingServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    policy: Policy,
    refusal: &'static str,
}

/// Authorizes a verified server certificate's identity, or says why not.
fn authorize_server(
    end_entity: &CertificateDer<'_>,
    policy: &Policy,
    refusal: &str,
) -> Result<ServerCertVerified, rustls::Error> {
    let Some(id) = spiffe_id_of(end_entity) else {
        tracing::warn!("refused server certificate: it carries no writeback identity");
        return Err(rustls::Error::General(format!(
            "{refusal} (its certificate carries no writeback identity)"
        )));
    };
    if policy(&id) {
        Ok(ServerCertVerified::assertion())
    } else {
        tracing::warn!(peer = %id, "refused server certificate: identity not expected here");
        Err(rustls::Error::General(format!(
            "{refusal} (its certificate names {id})"
        )))
    }
}

const NOT_A_RELAY: &str = "the server is not a relay of this tenant";
const NOT_EXPECTED: &str = "the server's identity is not the one expected";

impl std::fmt::Debug for AuthorizingServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthorizingServerVerifier")
    }
}

impl ServerCertVerifier for AuthorizingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        authorize_server(end_entity, &self.policy, self.refusal)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client config for dialling a relay of `tenant`: the server must chain
/// to `roots`, match the URL's host name *and* carry the identity
/// `spiffe://writeback/tenant/<tenant>/relay/<id>`. Another tenant's relay,
/// an agent, or the control plane (its API certificate or its relay-client
/// certificate) cannot pose as one. Presents `identity` when given.
pub fn relay_client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(&str, &str)>,
    tenant: &str,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let tenant = tenant.to_owned();
    let policy: Policy = Arc::new(
        move |id: &SpiffeId| matches!(id, SpiffeId::Relay { tenant: t, .. } if *t == tenant),
    );
    verifying_client_config(roots, identity, policy, NOT_A_RELAY)
}

/// A client config for the control plane's API as an agent calls it to
/// renew its certificate: the server must chain to `roots`, match the
/// URL's host name *and* carry [`SpiffeId::ControlPlaneApi`]. A relay (its
/// certificate may name the control plane's hosts), an agent or the
/// control plane's relay-client identity fail the handshake with
/// [`NOT_THE_CONTROL_PLANE`]. Presents `identity` when given.
pub fn control_plane_client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(&str, &str)>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let policy: Policy = Arc::new(|id: &SpiffeId| matches!(id, SpiffeId::ControlPlaneApi));
    verifying_client_config(roots, identity, policy, NOT_THE_CONTROL_PLANE)
}

/// [`relay_client_config`] presenting the certificate `cert` holds at each
/// handshake, re-issued as it ages (the control plane's relay links, which
/// live as long as the process).
pub fn relay_client_config_reissuing(
    roots: Arc<RootCertStore>,
    cert: Arc<ReissuingCert>,
    tenant: &str,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let tenant = tenant.to_owned();
    let policy: Policy = Arc::new(
        move |id: &SpiffeId| matches!(id, SpiffeId::Relay { tenant: t, .. } if *t == tenant),
    );
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| Error::Pki(e.to_string()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AuthorizingServerVerifier {
            inner,
            policy,
            refusal: NOT_A_RELAY,
        }))
        .with_client_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client config whose server must chain to `roots`, match the host name
/// and carry an identity `policy` accepts.
pub fn authorizing_client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(&str, &str)>,
    policy: Policy,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    verifying_client_config(roots, identity, policy, NOT_EXPECTED)
}

fn verifying_client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(&str, &str)>,
    policy: Policy,
    refusal: &'static str,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| Error::Pki(e.to_string()))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AuthorizingServerVerifier {
            inner,
            policy,
            refusal,
        }));
    let mut config = match identity {
        Some((chain, key)) => {
            builder.with_client_auth_cert(certs_from_pem(chain)?, key_from_pem(key)?)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client config trusting `roots`, optionally presenting a certificate.
pub fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(&str, &str)>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => {
            builder.with_client_auth_cert(certs_from_pem(chain)?, key_from_pem(key)?)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client config for the public web (identity providers and the like):
/// the system's trust roots (through rustls-native-certs) plus the
/// certificates in `extra_ca_file`, no client certificate, HTTP/1.1.
pub fn web_client_config(
    extra_ca_file: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, Error> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "a system trust root could not be loaded");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca_file {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| Error::Io(format!("reading {}", path.display()), e))?;
        for cert in certs_from_pem(&pem)? {
            roots.add(cert)?;
        }
    }
    if roots.is_empty() {
        return Err(Error::EmptyPem(
            "trust root (install ca-certificates or name a CA file)",
        ));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Verifies a server against a CA known only by fingerprint.
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
}

impl PinnedCaVerifier {
    fn verifier_for(
        &self,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| hex::encode(Sha256::digest(c.as_ref())) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server's CA does not match the fingerprint pinned in the enrollment token"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier_for(intermediates)?.verify_server_cert(
            end_entity,
            &[],
            server_name,
            ocsp_response,
            now,
        )?;
        // The CA alone is not enough: a relay holds a certificate from it
        // too, possibly for the control plane's host names.
        let policy: Policy = Arc::new(|id: &SpiffeId| matches!(id, SpiffeId::ControlPlaneApi));
        authorize_server(end_entity, &policy, NOT_THE_CONTROL_PLANE)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config for first contact, trusting only a server whose chain
/// includes the CA with SHA-256 `fingerprint` (lowercase hex) and whose
/// certificate names the control plane's API ([`SpiffeId::ControlPlaneApi`]).
pub fn pinned_client_config(fingerprint: &str) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier {
            fingerprint: fingerprint.to_ascii_lowercase(),
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn issuer(ca: Arc<crate::Ca>, count: Arc<std::sync::atomic::AtomicUsize>) -> Issue {
        Arc::new(move || {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let id = SpiffeId::ControlPlane {
                tenant: "t1".into(),
            };
            ca.issue_service(&id, &[], &[])
        })
    }

    #[test]
    fn an_in_memory_certificate_is_reissued_once_it_is_due_and_not_before() {
        crate::install_crypto_provider();
        let ca = Arc::new(crate::Ca::generate("t1").unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let fresh = ReissuingCert::new(
            issuer(ca.clone(), count.clone()),
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
        let first = fresh.current();
        assert!(
            Arc::ptr_eq(&first, &fresh.current()),
            "not due: the same one"
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);

        let due = ReissuingCert::new(issuer(ca, count.clone()), std::time::Duration::ZERO).unwrap();
        let a = due.current();
        let b = due.current();
        assert_ne!(a.cert[0], b.cert[0], "due: issued again");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 4);
        // A failing issuer keeps the current certificate.
        let failing = ReissuingCert {
            issue: Arc::new(|| Err(Error::Pki("down".into()))),
            refresh_after: std::time::Duration::ZERO,
            current: std::sync::Mutex::new((b.clone(), std::time::Instant::now())),
        };
        assert!(Arc::ptr_eq(&failing.current(), &b));
    }
}
