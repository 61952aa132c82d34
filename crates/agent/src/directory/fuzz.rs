//! Entry points for the fuzz targets in `fuzz/` (see the README's "Fuzzing and
//! supply chain"): each takes untrusted bytes as a domain controller could send
//! them, runs the parser the agent runs on them and checks what must hold for
//! every input (no panic, and a round trip that loses nothing). Not an API: the
//! parsers stay crate-private and this module is `#[doc(hidden)]`.

use ldap3::asn1::parse_tag;
use uuid::Uuid;

use super::sd::{self, Ace, SecurityDescriptor};
use super::wire::{self, RawEntry, Sid};

/// A self-relative security descriptor (`nTSecurityDescriptor`): parse it, and if
/// it parses, write it back, parse that again and compare — the permission grant
/// reads, edits and writes descriptors, so the writer must keep what the reader
/// understood. Then add one explicit ACE the way `permissions grant` does and check
/// the result still parses and holds it.
pub fn security_descriptor(bytes: &[u8]) {
    let _ = sd::dacl_protected(bytes);
    let Ok(parsed) = SecurityDescriptor::parse(bytes) else {
        return;
    };
    let Ok(written) = parsed.to_bytes() else {
        return;
    };
    let reparsed = SecurityDescriptor::parse(&written);
    assert_eq!(
        reparsed.as_ref(),
        Ok(&parsed),
        "a descriptor written back does not read the same"
    );
    let mut edited = parsed;
    let Some(dacl) = edited.dacl.as_mut() else {
        return;
    };
    let ace = Ace::allow_object(
        sd::CONTAINER_INHERIT_ACE,
        0x100,
        Some(Uuid::from_u128(0x0029_9570_246d_11d0_a768_00aa_006e_0529)),
        Some(Uuid::from_u128(0xbf96_7aba_0de6_11d0_a285_00aa_0030_49e2)),
        Sid::builtin(544),
    );
    dacl.add_explicit(ace.clone());
    if let Ok(written) = edited.to_bytes() {
        let again = SecurityDescriptor::parse(&written);
        assert_eq!(again.as_ref(), Ok(&edited), "an edited descriptor changed");
        let holds = again
            .ok()
            .and_then(|sd| sd.dacl)
            .is_some_and(|acl| acl.aces.contains(&ace));
        assert!(holds, "the added ACE is missing after a write");
    }
}

/// One BER-encoded LDAP `SearchResultEntry` as it comes off the wire: the ASN.1
/// decoder (`ldap3`'s), the entry parser that keeps every value as bytes, and the
/// per-attribute decoders the agent applies to an entry (SIDs, integers, the
/// `unicodePwd` version in `replPropertyMetaData`, the descriptor's DACL flag).
pub fn search_entry(bytes: &[u8]) {
    let Ok((_, tag)) = parse_tag(bytes) else {
        return;
    };
    let Some(entry) = RawEntry::parse(tag) else {
        return;
    };
    let _ = entry.dn.len();
    for name in ["objectSid", "tokenGroups"] {
        for value in entry.values(name) {
            sid(value);
        }
    }
    for name in [
        "userAccountControl",
        "adminCount",
        "pwdLastSet",
        "lockoutTime",
    ] {
        if let Some(v) = entry.int(name) {
            let _ = wire::filetime_to_datetime(v);
            let _ = wire::interval_to_duration(v);
        }
    }
    let _ = entry.texts("memberOf");
    if let Some(blob) = entry.first("replPropertyMetaData") {
        let _ = wire::unicode_pwd_version(blob);
    }
    if let Some(sd) = entry.first("nTSecurityDescriptor") {
        security_descriptor(sd);
    }
}

/// A `replPropertyMetaData` value: the `unicodePwd` version the ledger's
/// witness rests on. Whatever the count field claims, a version is only ever
/// read from inside the blob.
pub fn repl_metadata(bytes: &[u8]) {
    if let Some(version) = wire::unicode_pwd_version(bytes) {
        let found = bytes
            .get(16..)
            .unwrap_or_default()
            .chunks_exact(48)
            .any(|e| e.get(4..8) == Some(&version.to_le_bytes()[..]));
        assert!(found, "a version that is not in the blob");
    }
    sid(bytes);
}

/// A binary SID (`objectSid`, `tokenGroups`): one that parses writes back to the
/// same bytes, and its string form parses back to the same SID.
fn sid(bytes: &[u8]) {
    let _ = Sid::parse_prefix(bytes);
    let Some(sid) = Sid::from_bytes(bytes) else {
        return;
    };
    assert_eq!(sid.to_bytes(), bytes, "a SID written back differs");
    let text = sid.to_string();
    // The text form carries the authority as a number below 2^48, which every
    // 6-byte authority is.
    assert_eq!(Sid::parse_str(&text).as_ref(), Some(&sid), "{text}");
    let _ = (sid.rid(), sid.domain(), sid.is_builtin());
}
