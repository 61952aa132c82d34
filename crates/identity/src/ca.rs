//! The tenant CA: issues agent certificates from CSRs (with the identity the
//! CA decides, not the one the CSR asks for) and server/client certificates
//! for relays and the control plane (its API's own identity,
//! [`Ca::issue_control_plane_api`], and its relay-client identity per tenant).

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::{Error, SpiffeId};

/// Lifetime of the CA certificate.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Lifetime of leaf certificates.
pub const LEAF_VALIDITY: Duration = Duration::days(365);

/// A tenant certificate authority held in memory.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Generates a fresh CA for `tenant`.
    pub fn generate(tenant: &str) -> Result<Ca, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "writeback");
        dn.push(DnType::CommonName, format!("writeback tenant {tenant} CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let cert_der = cert.der().to_vec();
        Ok(Ca {
            cert_pem,
            cert_der,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and private key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = crate::tls::certs_from_pem(cert_pem)?
            .into_iter()
            .next()
            .ok_or(Error::EmptyPem("certificate"))?
            .to_vec();
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            issuer,
        })
    }

    /// Loads `ca.pem` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Ca, Error> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|e| Error::Io(p.display().to_string(), e))
        };
        Ca::from_pem(&read("ca.pem")?, &read("ca.key")?)
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) to `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        write_file(&dir.join("ca.pem"), self.cert_pem.as_bytes(), false)?;
        write_file(
            &dir.join("ca.key"),
            self.issuer.key().serialize_pem().as_bytes(),
            true,
        )
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate's DER, lowercase hex: what enrollment
    /// tokens pin.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.cert_der))
    }

    /// Signs an agent's CSR. Only the CSR's public key is used: the subject,
    /// SANs and usages are the CA's choice.
    /// Checks that `csr_pem` is a well-formed, self-signed PKCS#10 request,
    /// without signing anything (the CA does no work for a caller whose
    /// enrollment token has not been checked yet).
    pub fn check_csr(csr_pem: &str) -> Result<(), Error> {
        CertificateSigningRequestParams::from_pem(csr_pem)?;
        Ok(())
    }

    pub fn sign_agent_csr(&self, csr_pem: &str, id: &SpiffeId) -> Result<String, Error> {
        self.sign_agent_csr_valid_for(csr_pem, id, LEAF_VALIDITY)
    }

    /// [`Ca::sign_agent_csr`] with the certificate valid for `validity` from
    /// now (the control plane's `agent_certificate_validity_seconds`; tests
    /// issue certificates that expire in minutes).
    pub fn sign_agent_csr_valid_for(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        validity: Duration,
    ) -> Result<String, Error> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let params = leaf_params(Some(id), &[], &[], true, false, validity)?;
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }

    /// Issues a key and certificate for a server (relay, control plane) that
    /// is also a TLS client of other services. Returns (chain PEM with the CA
    /// appended, key PEM).
    pub fn issue_service(
        &self,
        id: &SpiffeId,
        dns: &[String],
        ips: &[IpAddr],
    ) -> Result<(String, String), Error> {
        self.issue_leaf(Some(id), dns, ips, true)
    }

    /// Issues the control plane's API certificate: server authentication
    /// only, the identity [`SpiffeId::ControlPlaneApi`] and the given names.
    /// An agent enrolling or renewing checks that identity, so a relay's
    /// certificate (which may carry the same host names) cannot answer in
    /// the control plane's place; and with no client-authentication usage
    /// it cannot dial a relay either. Returns (chain PEM with the CA
    /// appended, key PEM).
    pub fn issue_control_plane_api(
        &self,
        dns: &[String],
        ips: &[IpAddr],
    ) -> Result<(String, String), Error> {
        self.issue_leaf(Some(&SpiffeId::ControlPlaneApi), dns, ips, false)
    }

    /// Issues a server-only certificate (no workload identity, server
    /// authentication only), e.g. for a test's web server.
    /// Returns (chain PEM with the CA appended, key PEM).
    pub fn issue_server(&self, dns: &[String], ips: &[IpAddr]) -> Result<(String, String), Error> {
        self.issue_leaf(None, dns, ips, false)
    }

    fn issue_leaf(
        &self,
        id: Option<&SpiffeId>,
        dns: &[String],
        ips: &[IpAddr],
        client: bool,
    ) -> Result<(String, String), Error> {
        let key = KeyPair::generate()?;
        let params = leaf_params(id, dns, ips, client, true, LEAF_VALIDITY)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
        ))
    }
}

fn leaf_params(
    id: Option<&SpiffeId>,
    dns: &[String],
    ips: &[IpAddr],
    client: bool,
    server: bool,
    validity: Duration,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "writeback");
    if let Some(id) = id {
        dn.push(DnType::CommonName, id.to_string());
        params
            .subject_alt_names
            .push(SanType::URI(id.to_string().try_into()?));
    } else if let Some(first) = dns.first() {
        dn.push(DnType::CommonName, first.clone());
    }
    params.distinguished_name = dn;
    for d in dns {
        params
            .subject_alt_names
            .push(SanType::DnsName(d.clone().try_into()?));
    }
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if client {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    if server {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + validity;
    Ok(params)
}

/// Generates a TLS key and a CSR for it. Returns (csr PEM, key PEM).
pub fn generate_csr() -> Result<(String, String), Error> {
    let key = KeyPair::generate()?;
    Ok((csr_for(&key)?, key.serialize_pem()))
}

/// A CSR for the existing key `key_pem` (an agent asking again for a
/// certificate for the key whose renewal answer it never got).
pub fn csr_for_key(key_pem: &str) -> Result<String, Error> {
    csr_for(&KeyPair::from_pem(key_pem)?)
}

fn csr_for(key: &KeyPair) -> Result<String, Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    Ok(params.serialize_request(key)?.pem()?)
}

/// SHA-256 (lowercase hex) of the SubjectPublicKeyInfo of the first
/// certificate in `pem`: which key a certificate is for.
pub fn key_fingerprint_of_pem(pem: &str) -> Result<String, Error> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = crate::tls::certs_from_pem(pem)?
        .into_iter()
        .next()
        .ok_or(Error::EmptyPem("certificate"))?;
    let (_, x509) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| Error::Pki(format!("cannot parse the certificate: {e}")))?;
    Ok(hex::encode(Sha256::digest(x509.public_key().raw)))
}

/// When the first certificate in `pem` starts and stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// `notBefore`.
    pub not_before: OffsetDateTime,
    /// `notAfter`.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Reads the validity of the first certificate in `pem`.
    pub fn of_pem(pem: &str) -> Result<Validity, Error> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let der = crate::tls::certs_from_pem(pem)?
            .into_iter()
            .next()
            .ok_or(Error::EmptyPem("certificate"))?;
        let (_, x509) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| Error::Pki(format!("cannot parse the certificate: {e}")))?;
        let v = x509.validity();
        Ok(Validity {
            not_before: v.not_before.to_datetime(),
            not_after: v.not_after.to_datetime(),
        })
    }

    /// How long is left at `now` (zero once expired).
    pub fn remaining(&self, now: OffsetDateTime) -> std::time::Duration {
        std::time::Duration::try_from(self.not_after - now).unwrap_or_default()
    }

    /// True when less than `fraction` of the whole lifetime is left at
    /// `now` (agents renew below one third).
    pub fn is_due(&self, now: OffsetDateTime, fraction: f64) -> bool {
        let lifetime = (self.not_after - self.not_before).as_seconds_f64();
        let left = (self.not_after - now).as_seconds_f64();
        lifetime <= 0.0 || left < lifetime * fraction
    }
}

/// SHA-256 fingerprint (lowercase hex) of the first certificate in `pem`.
pub fn fingerprint_of_pem(pem: &str) -> Result<String, Error> {
    let der = crate::tls::certs_from_pem(pem)?
        .into_iter()
        .next()
        .ok_or(Error::EmptyPem("certificate"))?;
    Ok(hex::encode(Sha256::digest(der.as_ref())))
}

/// Writes a file, creating parents. The contents go to a new file next to
/// `path` (mode 0600 for `secret` files, 0644 otherwise) that then replaces
/// `path` atomically, so a secret is never readable through an older, wider
/// mode and readers never see a half-written file.
pub fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| Error::Io(path.display().to_string(), e);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", crate::token::random_hex(8)));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_agent_cert_carries_the_cas_identity_not_the_csrs() {
        let ca = Ca::generate("t1").unwrap();
        let (csr, _key) = generate_csr().unwrap();
        let id = SpiffeId::agent("t1", "contoso.test", "a1").unwrap();
        let pem = ca.sign_agent_csr(&csr, &id).unwrap();
        let certs = crate::tls::certs_from_pem(&pem).unwrap();
        assert_eq!(crate::tls::spiffe_id_of(&certs[0]).unwrap(), id);
    }

    #[test]
    fn an_agent_certificate_lives_as_long_as_asked_and_is_due_for_renewal_late() {
        let ca = Ca::generate("t1").unwrap();
        let (csr, _key) = generate_csr().unwrap();
        let id = SpiffeId::agent("t1", "contoso.test", "a1").unwrap();
        let now = OffsetDateTime::now_utc();
        let year = Validity::of_pem(&ca.sign_agent_csr(&csr, &id).unwrap()).unwrap();
        let left = year.not_after - now;
        assert!(
            left > Duration::days(364) && left <= LEAF_VALIDITY,
            "{left}"
        );
        assert!(!year.is_due(now, 1.0 / 3.0));
        assert!(year.is_due(now + Duration::days(250), 1.0 / 3.0));
        let short = ca
            .sign_agent_csr_valid_for(&csr, &id, Duration::minutes(2))
            .unwrap();
        let v = Validity::of_pem(&short).unwrap();
        assert!(v.remaining(now) <= std::time::Duration::from_secs(120));
        // Two minutes of a lifetime of seven (notBefore is 5 min back): due.
        assert!(v.is_due(now, 1.0 / 3.0));
        assert_eq!(
            v.remaining(now + Duration::hours(1)),
            std::time::Duration::ZERO
        );
        assert!(Validity::of_pem("garbage").is_err());
    }

    #[test]
    fn a_csr_is_checked_without_signing() {
        let (csr, _key) = generate_csr().unwrap();
        assert!(Ca::check_csr(&csr).is_ok());
        assert!(Ca::check_csr("").is_err());
        assert!(
            Ca::check_csr(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            )
            .is_err()
        );
        // Not a request at all: a certificate.
        let ca = Ca::generate("t1").unwrap();
        assert!(Ca::check_csr(ca.cert_pem()).is_err());
    }

    #[test]
    fn ca_survives_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("t1").unwrap();
        ca.save(dir.path()).unwrap();
        let loaded = Ca::load(dir.path()).unwrap();
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        assert_eq!(fingerprint_of_pem(ca.cert_pem()).unwrap(), ca.fingerprint());
    }

    #[test]
    fn secret_files_are_0600_even_over_a_wider_existing_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("token");
        write_file(&p, b"public", false).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_file(&p, b"secret", true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers = std::fs::read_dir(p.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn a_csr_for_an_existing_key_gets_a_certificate_for_that_key() {
        let ca = Ca::generate("t1").unwrap();
        let id = SpiffeId::agent("t1", "contoso.test", "a1").unwrap();
        let (csr, key) = generate_csr().unwrap();
        let first = ca.sign_agent_csr(&csr, &id).unwrap();
        let again = ca.sign_agent_csr(&csr_for_key(&key).unwrap(), &id).unwrap();
        let other = ca.sign_agent_csr(&generate_csr().unwrap().0, &id).unwrap();
        assert_ne!(
            fingerprint_of_pem(&first).unwrap(),
            fingerprint_of_pem(&again).unwrap()
        );
        assert_eq!(
            key_fingerprint_of_pem(&first).unwrap(),
            key_fingerprint_of_pem(&again).unwrap()
        );
        assert_ne!(
            key_fingerprint_of_pem(&first).unwrap(),
            key_fingerprint_of_pem(&other).unwrap()
        );
        assert!(csr_for_key("not a key").is_err());
    }

    #[test]
    fn garbage_csr_is_an_error_not_a_panic() {
        let ca = Ca::generate("t1").unwrap();
        let id = SpiffeId::agent("t1", "contoso.test", "a1").unwrap();
        assert!(ca.sign_agent_csr("not a csr", &id).is_err());
    }
}
