//! The TLS client configuration for talking to identity providers: the
//! system's trust roots (`/etc/ssl/certs` through rustls-native-certs) plus
//! an optional extra CA file, ring as the crypto provider, HTTP/1.1 only.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::RootCertStore;

/// A client config trusting the system's roots and those in `extra_ca_file`.
pub fn client_config(extra_ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "a system trust root could not be loaded");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca_file {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading the identity-provider CA file {}", path.display()))?;
        for cert in writeback_identity::tls::certs_from_pem(&pem)? {
            roots.add(cert)?;
        }
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "no trust roots for identity providers: install ca-certificates or set oidc.ca_file"
    );
    tracing::debug!(system_roots = added, "identity-provider trust roots loaded");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
