//! `writeback-control-plane init` and the offline admin commands: create a
//! tenant, its CA, the operation-signing key (`op-signing.key`, see
//! `writeback_envelope::signing`) and its first global administrator token, issue relay
//! certificates, mint tokens. They work on the data dir and database
//! directly, so they need no running server.

use std::net::IpAddr;
use std::path::Path;

use base64::Engine as _;
use rustls_pki_types::PrivateKeyDer;
use writeback_envelope::signing::OperationSigner;
use writeback_identity::{Ca, SpiffeId, ca::write_file};
use zeroize::Zeroizing;

use crate::auth::{new_api_token, normalize_principal};
use crate::store::{ClientApp, Role, Store};
use crate::{ControlPlaneConfig, ControlPlaneError};

/// What `init` created.
pub struct Initialized {
    /// SHA-256 fingerprint of the CA.
    pub ca_fingerprint: String,
    /// True when the CA was created now (false: an existing one was kept).
    pub created_ca: bool,
}

/// Loads the CA from the data dir, or creates it when absent.
pub fn load_or_create_ca(data_dir: &Path, tenant: &str) -> Result<(Ca, bool), ControlPlaneError> {
    if data_dir.join("ca.pem").exists() {
        return Ok((Ca::load(data_dir)?, false));
    }
    let ca = Ca::generate(tenant)?;
    ca.save(data_dir)?;
    Ok((ca, true))
}

/// The operation-signing key's file in the data dir, next to `ca.key`.
pub const SIGNING_KEY_FILE: &str = "op-signing.key";

/// Loads the operation-signing key (`op-signing.key`, PKCS#8 PEM, 0600)
/// from the data dir. Like `ca.key` it is a file, never a database row, and
/// every replica needs the same one.
pub fn load_signing_key(data_dir: &Path) -> Result<OperationSigner, ControlPlaneError> {
    let path = data_dir.join(SIGNING_KEY_FILE);
    let pem = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
        ControlPlaneError::Config(format!(
            "cannot read the operation-signing key {} ({e}); run `writeback-control-plane \
             init` (it keeps an existing CA and creates the key) and give every replica the \
             same file",
            path.display()
        ))
    })?);
    let bad = || {
        ControlPlaneError::Config(format!(
            "{} is not an Ed25519 PKCS#8 private key",
            path.display()
        ))
    };
    match writeback_identity::tls::key_from_pem(&pem).map_err(|_| bad())? {
        PrivateKeyDer::Pkcs8(der) => {
            OperationSigner::from_pkcs8(der.secret_pkcs8_der()).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// Loads the operation-signing key, or creates it when absent; true when
/// created now.
pub fn load_or_create_signing_key(
    data_dir: &Path,
) -> Result<(OperationSigner, bool), ControlPlaneError> {
    if data_dir.join(SIGNING_KEY_FILE).exists() {
        return Ok((load_signing_key(data_dir)?, false));
    }
    let (signer, pkcs8) = OperationSigner::generate().map_err(|e| {
        ControlPlaneError::Config(format!("cannot generate the operation-signing key: {e}"))
    })?;
    let mut pem = Zeroizing::new(String::from("-----BEGIN PRIVATE KEY-----\n"));
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(pkcs8.as_slice()));
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    write_file(&data_dir.join(SIGNING_KEY_FILE), pem.as_bytes(), true)?;
    Ok((signer, true))
}

/// Creates the tenant (if new), the CA (if absent), the operation-signing
/// key (if absent), an administrator
/// principal and a token for it, written to `token_file` with mode 0600.
pub async fn init(
    config: &ControlPlaneConfig,
    tenant: &str,
    admin: &str,
    client_app: ClientApp,
    token_file: &Path,
) -> Result<Initialized, ControlPlaneError> {
    if !writeback_identity::id::valid_segment(tenant) {
        return Err(ControlPlaneError::Config(
            "a tenant id is 1-63 characters of a-z, 0-9, '.', '-' or '_'".into(),
        ));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| ControlPlaneError::Config(format!("{}: {e}", config.data_dir.display())))?;
    let (ca, created_ca) = load_or_create_ca(&config.data_dir, tenant)?;
    load_or_create_signing_key(&config.data_dir)?;
    let store = Store::connect(&config.database_url()).await?;
    if !store.tenant_exists(tenant).await? {
        store.create_tenant(tenant, tenant).await?;
    }
    issue_token(
        &store,
        tenant,
        admin,
        Role::GlobalAdmin,
        client_app,
        None,
        token_file,
    )
    .await?;
    Ok(Initialized {
        ca_fingerprint: ca.fingerprint(),
        created_ca,
    })
}

/// Creates the principal if needed (its name lowercased; an existing
/// principal must have `role`) and writes a new token for it to `file`
/// (mode 0600, created without ever being readable by others). The token is
/// never returned, logged or printed.
#[allow(clippy::too_many_arguments)]
pub async fn issue_token(
    store: &Store,
    tenant: &str,
    principal: &str,
    role: Role,
    client_app: ClientApp,
    expires_at_ms: Option<i64>,
    file: &Path,
) -> Result<(), ControlPlaneError> {
    let principal =
        normalize_principal(principal).map_err(|why| ControlPlaneError::Config(why.into()))?;
    store
        .ensure_principal_with_role(tenant, &principal, role)
        .await?;
    let principal = principal.as_str();
    let (token, hash) = new_api_token();
    store
        .create_api_token(tenant, principal, client_app, &hash, expires_at_ms)
        .await?;
    write_secret_file(file, format!("{token}\n").as_bytes())?;
    Ok(())
}

/// Writes a secret to `path` with mode 0600, even when `path` already exists
/// with a wider mode (see [`writeback_identity::ca::write_file`]).
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), ControlPlaneError> {
    Ok(write_file(path, contents, true)?)
}

/// Issues a relay certificate and key from the CA into `out_dir`
/// (`relay.pem`, `relay.key` mode 0600, `ca.pem`).
pub fn issue_relay_cert(
    config: &ControlPlaneConfig,
    tenant: &str,
    relay_id: &str,
    dns: &[String],
    ips: &[IpAddr],
    out_dir: &Path,
) -> Result<(), ControlPlaneError> {
    let ca = Ca::load(&config.data_dir)?;
    let id = SpiffeId::Relay {
        tenant: tenant.to_owned(),
        relay_id: relay_id.to_owned(),
    };
    let (chain, key) = ca.issue_service(&id, dns, ips)?;
    write_file(&out_dir.join("relay.pem"), chain.as_bytes(), false)?;
    write_file(&out_dir.join("relay.key"), key.as_bytes(), true)?;
    write_file(&out_dir.join("ca.pem"), ca.cert_pem().as_bytes(), false)?;
    Ok(())
}
