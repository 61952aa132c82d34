//! `writeback-control-plane init` and the offline admin commands: create a
//! tenant, its CA, the operation-signing key (`op-signing.key`, see
//! `writeback_envelope::signing`) and its first global administrator token, issue relay
//! certificates, mint tokens, rotate the operation-signing key
//! (`signing-key rotate` makes `op-signing.next.key`, published beside the
//! current key with the current key's endorsement; `signing-key promote`
//! makes it the one that signs and keeps the retiring key's endorsement of
//! it in `op-signing.endorsements`). They work on the data dir and database
//! directly, so they need no running server.

use std::net::IpAddr;
use std::path::Path;

use base64::Engine as _;
use rustls_pki_types::PrivateKeyDer;
use writeback_envelope::endorsement::Endorsement;
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
    /// True when the operation-signing key was created now.
    pub created_signing_key: bool,
    /// True when the tenant was created now.
    pub created_tenant: bool,
    /// The id of the administrator token written (not a secret).
    pub token_id: String,
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
    load_signing_key_file(&data_dir.join(SIGNING_KEY_FILE))
}

fn load_signing_key_file(path: &Path) -> Result<OperationSigner, ControlPlaneError> {
    let pem = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
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
    Ok((create_signing_key(&data_dir.join(SIGNING_KEY_FILE))?, true))
}

/// The next operation-signing key, made by `signing-key rotate`: published
/// to agents (at enrollment and renewal) beside the current one, not used
/// to sign until `signing-key promote`.
pub const NEXT_SIGNING_KEY_FILE: &str = "op-signing.next.key";

/// The next key's public half, when `signing-key rotate` made one.
pub fn load_next_signing_key(data_dir: &Path) -> Result<Option<Vec<u8>>, ControlPlaneError> {
    if !data_dir.join(NEXT_SIGNING_KEY_FILE).exists() {
        return Ok(None);
    }
    Ok(Some(
        load_signing_key_file(&data_dir.join(NEXT_SIGNING_KEY_FILE))?.public_key(),
    ))
}

/// `signing-key rotate`: creates the next key (0600) and returns its key
/// id; refused while one is waiting to be promoted.
pub fn rotate_signing_key(data_dir: &Path) -> Result<String, ControlPlaneError> {
    let path = data_dir.join(NEXT_SIGNING_KEY_FILE);
    if path.exists() {
        let id = load_signing_key_file(&path)?.key_id().to_owned();
        return Err(ControlPlaneError::Config(format!(
            "a next operation-signing key ({id}) is already waiting: promote it with \
             `writeback-control-plane signing-key promote` before rotating again"
        )));
    }
    Ok(create_signing_key(&path)?.key_id().to_owned())
}

/// The endorsements of promoted keys by the keys they replaced (public,
/// 0644; one line per promotion: the endorsed public key, the endorser's
/// key id and the signature, hex): published with the keys so an agent
/// that pinned an older key takes up the new one
/// (`writeback_envelope::endorsement`).
pub const ENDORSEMENTS_FILE: &str = "op-signing.endorsements";

/// The endorsements `signing-key promote` recorded (none before the first).
pub fn load_endorsements(data_dir: &Path) -> Result<Vec<Endorsement>, ControlPlaneError> {
    let path = data_dir.join(ENDORSEMENTS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ControlPlaneError::Config(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let bad = |n: usize| {
        ControlPlaneError::Config(format!(
            "{} line {n} is not `<public key hex> <endorser key id> <signature hex>`",
            path.display()
        ))
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [key, endorser, signature] = parts.as_slice() else {
            return Err(bad(i + 1));
        };
        out.push(Endorsement {
            public_key: hex::decode(key).map_err(|_| bad(i + 1))?,
            endorser_key_id: (*endorser).to_owned(),
            signature: hex::decode(signature).map_err(|_| bad(i + 1))?,
        });
    }
    Ok(out)
}

fn append_endorsement(data_dir: &Path, e: &Endorsement) -> Result<(), ControlPlaneError> {
    let path = data_dir.join(ENDORSEMENTS_FILE);
    let mut text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(ControlPlaneError::Config(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "{} {} {}\n",
        hex::encode(&e.public_key),
        e.endorser_key_id,
        hex::encode(&e.signature)
    ));
    Ok(write_file(&path, text.as_bytes(), false)?)
}

/// `signing-key promote`: the next key becomes the one that signs; the old
/// one is kept as `op-signing.retired-<key id>.key` (0600) and no longer
/// published, and its endorsement of the new one is added to
/// [`ENDORSEMENTS_FILE`] first. Returns (old key id, new key id).
pub fn promote_signing_key(data_dir: &Path) -> Result<(String, String), ControlPlaneError> {
    let next = data_dir.join(NEXT_SIGNING_KEY_FILE);
    if !next.exists() {
        return Err(ControlPlaneError::Config(
            "there is no next operation-signing key to promote: run `writeback-control-plane \
             signing-key rotate` first"
                .into(),
        ));
    }
    let new_key = load_signing_key_file(&next)?;
    let old_key = load_signing_key(data_dir)?;
    let (new_id, old_id) = (new_key.key_id().to_owned(), old_key.key_id().to_owned());
    // Before anything moves: an agent that pins only the old key takes up
    // the new one through this signature.
    append_endorsement(data_dir, &old_key.endorse(&new_key.public_key()))?;
    let io = |e: std::io::Error| ControlPlaneError::Config(format!("{}: {e}", data_dir.display()));
    std::fs::rename(
        data_dir.join(SIGNING_KEY_FILE),
        data_dir.join(format!("op-signing.retired-{old_id}.key")),
    )
    .map_err(io)?;
    std::fs::rename(&next, data_dir.join(SIGNING_KEY_FILE)).map_err(io)?;
    Ok((old_id, new_id))
}

fn create_signing_key(path: &Path) -> Result<OperationSigner, ControlPlaneError> {
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
    write_file(path, pem.as_bytes(), true)?;
    Ok(signer)
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
    let (_, created_signing_key) = load_or_create_signing_key(&config.data_dir)?;
    let store = Store::connect(&config.database_url()).await?;
    let created_tenant = !store.tenant_exists(tenant).await?;
    if created_tenant {
        store.create_tenant(tenant, tenant).await?;
    }
    let token_id = issue_token(
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
        created_signing_key,
        created_tenant,
        token_id,
    })
}

/// Creates the principal if needed (its name lowercased; an existing
/// principal must have `role`) and writes a new token for it to `file`
/// (mode 0600, created without ever being readable by others); returns the
/// token's id. The token is never returned, logged or printed.
#[allow(clippy::too_many_arguments)]
pub async fn issue_token(
    store: &Store,
    tenant: &str,
    principal: &str,
    role: Role,
    client_app: ClientApp,
    expires_at_ms: Option<i64>,
    file: &Path,
) -> Result<String, ControlPlaneError> {
    let principal =
        normalize_principal(principal).map_err(|why| ControlPlaneError::Config(why.into()))?;
    store
        .ensure_principal_with_role(tenant, &principal, role)
        .await?;
    let principal = principal.as_str();
    let (token, hash) = new_api_token();
    let token_id = store
        .create_api_token(tenant, principal, client_app, &hash, expires_at_ms)
        .await?;
    write_secret_file(file, format!("{token}\n").as_bytes())?;
    Ok(token_id)
}

/// Writes a secret to `path` with mode 0600, even when `path` already exists
/// with a wider mode (see [`writeback_identity::ca::write_file`]).
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), ControlPlaneError> {
    Ok(write_file(path, contents, true)?)
}

/// Issues a relay certificate and key from the CA into `out_dir`
/// (`relay.pem`, `relay.key` mode 0600, `ca.pem`); returns the
/// certificate's SHA-256 fingerprint.
pub fn issue_relay_cert(
    config: &ControlPlaneConfig,
    tenant: &str,
    relay_id: &str,
    dns: &[String],
    ips: &[IpAddr],
    out_dir: &Path,
) -> Result<String, ControlPlaneError> {
    let ca = Ca::load(&config.data_dir)?;
    let id = SpiffeId::Relay {
        tenant: tenant.to_owned(),
        relay_id: relay_id.to_owned(),
    };
    let (chain, key) = ca.issue_service(&id, dns, ips)?;
    write_file(&out_dir.join("relay.pem"), chain.as_bytes(), false)?;
    write_file(&out_dir.join("relay.key"), key.as_bytes(), true)?;
    write_file(&out_dir.join("ca.pem"), ca.cert_pem().as_bytes(), false)?;
    Ok(writeback_identity::ca::fingerprint_of_pem(&chain)?)
}

#[cfg(test)]
mod signing_key_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_signing_key_rotates_through_a_published_next_key() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = load_or_create_signing_key(dir.path()).unwrap();
        assert!(created);
        assert_eq!(load_next_signing_key(dir.path()).unwrap(), None);
        let e = promote_signing_key(dir.path()).unwrap_err().to_string();
        assert!(e.contains("signing-key rotate"), "{e}");

        let next_id = rotate_signing_key(dir.path()).unwrap();
        assert_ne!(next_id, first.key_id());
        let next = load_next_signing_key(dir.path()).unwrap().unwrap();
        assert_eq!(writeback_envelope::signing::key_id_of(&next), next_id);
        let e = rotate_signing_key(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&next_id) && e.contains("promote"), "{e}");
        // Still signing with the first until promoted.
        assert_eq!(
            load_signing_key(dir.path()).unwrap().key_id(),
            first.key_id()
        );

        let (old, new) = promote_signing_key(dir.path()).unwrap();
        assert_eq!(
            (old.as_str(), new.as_str()),
            (first.key_id(), next_id.as_str())
        );
        assert_eq!(load_signing_key(dir.path()).unwrap().key_id(), next_id);
        assert_eq!(load_next_signing_key(dir.path()).unwrap(), None);
        use std::os::unix::fs::PermissionsExt;
        for f in [
            SIGNING_KEY_FILE.to_owned(),
            format!("op-signing.retired-{old}.key"),
        ] {
            let mode = std::fs::metadata(dir.path().join(&f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // The retired key's endorsement of the new one is kept, and it
        // verifies with the retired key: an agent that pins only that key
        // takes up the new one.
        let chain = load_endorsements(dir.path()).unwrap();
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].public_key, next.clone());
        let a = writeback_envelope::endorsement::accept(&[first.trusted_key()], &[next], &chain);
        assert_eq!(a.keys[0].key_id, next_id);
        assert!(a.refused.is_empty());
        // A second promotion extends the chain.
        rotate_signing_key(dir.path()).unwrap();
        promote_signing_key(dir.path()).unwrap();
        assert_eq!(load_endorsements(dir.path()).unwrap().len(), 2);
    }
}
