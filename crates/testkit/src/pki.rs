//! A throwaway certificate authority for test TLS.
//!
//! Every test (and every [`SambaDc`](crate::SambaDc)) mints its own CA, so no test
//! trusts a key another test could have produced, and nothing touches the system trust
//! store. Keys are ECDSA P-256 generated with ring through rcgen.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

use crate::TestkitError;

/// A throwaway CA for test TLS (rcgen, ECDSA P-256).
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signing key stays out of debug output.
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// Create a self-signed CA whose subject is `CN=<common_name>`.
    pub fn new(common_name: &str) -> Result<TestCa, TestkitError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// PEM of the CA certificate, to put in a trust store.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// Issue a server certificate with the given DNS names and IP SANs; returns
    /// (cert_pem, key_pem). The subject CN is the first DNS name (or the first IP);
    /// the extended key usage is serverAuth; the key is PKCS#8 PEM.
    pub fn issue_server(
        &self,
        dns: &[String],
        ips: &[IpAddr],
    ) -> Result<(String, String), TestkitError> {
        if dns.is_empty() && ips.is_empty() {
            return Err(TestkitError::InvalidInput(
                "a server certificate needs at least one DNS name or IP address".into(),
            ));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let common_name = match (dns.first(), ips.first()) {
            (Some(name), _) => name.clone(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => String::new(),
        };
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for name in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.as_str().try_into()?));
        }
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn issued_certificate_carries_the_requested_names() {
        let ca = TestCa::new("writeback test ca").unwrap();
        let (cert_pem, key_pem) = ca
            .issue_server(
                &["dc1.contoso.test".to_string(), "contoso.test".to_string()],
                &["127.0.0.10".parse().unwrap()],
            )
            .unwrap();
        assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn a_certificate_needs_a_name() {
        let ca = TestCa::new("writeback test ca").unwrap();
        assert!(matches!(
            ca.issue_server(&[], &[]),
            Err(TestkitError::InvalidInput(_))
        ));
    }
}
