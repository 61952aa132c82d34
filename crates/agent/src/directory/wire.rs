//! Active Directory's wire formats: the quoted UTF-16LE `unicodePwd`, binary values in
//! search filters, SIDs, FILETIMEs and negative intervals, request controls, and
//! search entries parsed without guessing which values are text. Security descriptors
//! are in [`super::sd`].

use std::fmt;
use std::time::Duration;

use ldap3::asn1::{PL, StructureTag};
use ldap3::controls::RawControl;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// `LDAP_SERVER_POLICY_HINTS_OID`: asks a Windows DC to apply password history (and
/// the other "change" rules) to a reset. Samba 4.17 does not implement it.
pub(crate) const POLICY_HINTS_OID: &str = "1.2.840.113556.1.4.2239";
/// The pre-2012 R2 OID of the same control (`LDAP_SERVER_POLICY_HINTS_DEPRECATED_OID`).
pub(crate) const POLICY_HINTS_DEPRECATED_OID: &str = "1.2.840.113556.1.4.2066";
/// `LDAP_SERVER_SD_FLAGS_OID`: which parts of `nTSecurityDescriptor` to read.
pub(crate) const SD_FLAGS_OID: &str = "1.2.840.113556.1.4.801";
/// `LDAP_MATCHING_RULE_IN_CHAIN`: transitive group membership in a filter.
pub(crate) const IN_CHAIN_RULE: &str = "1.2.840.113556.1.4.1941";

/// `ADS_UF_ACCOUNTDISABLE` in `userAccountControl`.
pub(crate) const UF_ACCOUNTDISABLE: u32 = 0x2;
/// `ADS_UF_INTERDOMAIN_TRUST_ACCOUNT | ADS_UF_WORKSTATION_TRUST_ACCOUNT |
/// ADS_UF_SERVER_TRUST_ACCOUNT` in `userAccountControl`.
pub(crate) const UF_TRUST_ACCOUNTS: u32 = 0x800 | 0x1000 | 0x2000;

/// The policy-hints control, value `SEQUENCE { INTEGER 1 }`, never critical: a DC
/// that does not know it (Samba) must ignore it rather than fail the reset.
pub(crate) fn policy_hints_control() -> RawControl {
    RawControl {
        ctype: POLICY_HINTS_OID.to_string(),
        crit: false,
        val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
    }
}

/// The SD-flags control asking for the DACL only (`DACL_SECURITY_INFORMATION` = 4),
/// value `SEQUENCE { INTEGER 4 }`: reading the owner or SACL needs more rights than
/// the agent has.
pub(crate) fn sd_flags_dacl_control() -> RawControl {
    RawControl {
        ctype: SD_FLAGS_OID.to_string(),
        crit: false,
        val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x04]),
    }
}

/// The SD-flags control asking for the owner and the DACL
/// (`OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION` = 5): what decides who
/// may change an object (the owner may always rewrite its DACL). Both need only
/// `READ_CONTROL`, which every account has on itself.
pub(crate) fn sd_flags_owner_dacl_control() -> RawControl {
    RawControl {
        ctype: SD_FLAGS_OID.to_string(),
        crit: false,
        val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x05]),
    }
}

/// The DACL-only control, critical, for writing `nTSecurityDescriptor`: a DC that did not
/// honour it would replace the owner, group and SACL too, so it must refuse instead.
pub(crate) fn sd_flags_dacl_write_control() -> RawControl {
    RawControl {
        crit: true,
        ..sd_flags_dacl_control()
    }
}

/// The value AD expects in `unicodePwd`: UTF-16LE of the password in double quotes.
/// Built straight into a buffer that is wiped on drop.
pub(crate) fn unicode_pwd(password: &SecretString) -> Zeroizing<Vec<u8>> {
    let secret = password.expose_secret();
    let mut out = Zeroizing::new(Vec::with_capacity(secret.len() * 2 + 4));
    let mut push = |unit: u16| out.extend_from_slice(&unit.to_le_bytes());
    push(u16::from(b'"'));
    for unit in secret.encode_utf16() {
        push(unit);
    }
    push(u16::from(b'"'));
    out
}

/// Every byte as `\xx`: how a binary value (objectGUID, objectSid) goes into a filter.
pub(crate) fn escape_bytes(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 3);
    for b in bytes {
        let _ = write!(out, "\\{b:02x}");
    }
    out
}

/// A security identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Sid {
    revision: u8,
    authority: u64,
    sub: Vec<u32>,
}

impl Sid {
    /// Parse the binary form (as in `objectSid`, `tokenGroups`): exactly one SID.
    pub(crate) fn from_bytes(b: &[u8]) -> Option<Sid> {
        match Sid::parse_prefix(b)? {
            (sid, len) if len == b.len() => Some(sid),
            _ => None,
        }
    }

    /// Parse the SID at the start of `b` (inside an ACE or a security descriptor,
    /// where more bytes may follow); returns it and its length in bytes.
    pub(crate) fn parse_prefix(b: &[u8]) -> Option<(Sid, usize)> {
        let revision = *b.first()?;
        let count = usize::from(*b.get(1)?);
        let auth_bytes = b.get(2..8)?;
        let authority = auth_bytes
            .iter()
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
        let len = 8 + 4 * count;
        let subs = b.get(8..len)?;
        let sub = subs
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some((
            Sid {
                revision,
                authority,
                sub,
            },
            len,
        ))
    }

    /// Parse the string form `S-1-5-21-…`; `None` if it is not one.
    pub(crate) fn parse_str(s: &str) -> Option<Sid> {
        let mut parts = s.strip_prefix("S-")?.split('-');
        let revision = parts.next()?.parse().ok()?;
        let authority: u64 = parts.next()?.parse().ok()?;
        if authority >= 1 << 48 {
            return None;
        }
        let sub = parts
            .map(|p| p.parse::<u32>().ok())
            .collect::<Option<Vec<_>>>()?;
        if sub.len() > usize::from(u8::MAX) {
            return None;
        }
        Some(Sid {
            revision,
            authority,
            sub,
        })
    }

    /// The binary form.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 4 * self.sub.len());
        out.push(self.revision);
        out.push(u8::try_from(self.sub.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.authority.to_be_bytes()[2..]);
        for s in &self.sub {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    /// `S-1-5-32-<rid>`: a BUILTIN alias.
    pub(crate) fn builtin(rid: u32) -> Sid {
        Sid {
            revision: 1,
            authority: 5,
            sub: vec![32, rid],
        }
    }

    /// This domain SID with `rid` appended.
    pub(crate) fn with_rid(&self, rid: u32) -> Sid {
        let mut sid = self.clone();
        sid.sub.push(rid);
        sid
    }

    /// The domain of an account SID: this SID without its last sub-authority.
    pub(crate) fn domain(&self) -> Option<Sid> {
        let (_, rest) = self.sub.split_last()?;
        Some(Sid {
            revision: self.revision,
            authority: self.authority,
            sub: rest.to_vec(),
        })
    }

    /// The last sub-authority.
    pub(crate) fn rid(&self) -> Option<u32> {
        self.sub.last().copied()
    }

    /// `S-1-5-21-a-b-c-<rid>`: an account of some domain.
    pub(crate) fn is_domain_account(&self) -> bool {
        self.authority == 5 && self.sub.len() == 5 && self.sub[0] == 21
    }

    /// `S-1-5-32-<rid>`.
    pub(crate) fn is_builtin(&self) -> bool {
        self.authority == 5 && self.sub.len() == 2 && self.sub[0] == 32
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S-{}-{}", self.revision, self.authority)?;
        for s in &self.sub {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}

/// 100-ns intervals between 1601-01-01 and 1970-01-01.
const FILETIME_UNIX_EPOCH: i64 = 116_444_736_000_000_000;

/// A FILETIME (`pwdLastSet`, `lockoutTime`) as a UTC time; 0 and -1 are markers,
/// not times, and give `None`.
pub(crate) fn filetime_to_datetime(filetime: i64) -> Option<OffsetDateTime> {
    if filetime <= 0 {
        return None;
    }
    let nanos = i128::from(filetime - FILETIME_UNIX_EPOCH) * 100;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// A policy interval (`minPwdAge`, `maxPwdAge`, `lockoutDuration`): negative 100-ns
/// units; `i64::MIN` (and 0 for `maxPwdAge`) mean "never", which callers decide.
pub(crate) fn interval_to_duration(interval: i64) -> Option<Duration> {
    if interval == i64::MIN {
        return None;
    }
    let ticks = interval.unsigned_abs();
    Some(Duration::from_nanos(ticks.saturating_mul(100)))
}

/// "1 day", "12 hours", "30 minutes", "45 seconds".
pub(crate) fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs >= 3_600 && secs.is_multiple_of(3_600) {
        (secs / 3_600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else if secs >= 86_400 {
        // Not a whole number of days: round up to hours so the advice is never early.
        (secs.div_ceil(3_600), "hour")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// "2025-11-25 20:52 UTC"
pub(crate) fn human_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// AD's complexity rule ("passwords must meet complexity requirements"): not
/// containing the sAMAccountName (when 3+ characters) nor any 3+ character part of the
/// display name, and characters from at least three of: uppercase, lowercase, digits,
/// symbols, other (non-Latin) letters. Only used to explain an opaque `0000052D`.
pub(crate) fn meets_complexity(
    password: &str,
    sam_account_name: &str,
    display_name: Option<&str>,
) -> bool {
    let lower = password.to_lowercase();
    if sam_account_name.chars().count() >= 3 && lower.contains(&sam_account_name.to_lowercase()) {
        return false;
    }
    if let Some(display) = display_name {
        let tokens = display.split(|c: char| ",.-_ #\t".contains(c));
        for token in tokens {
            if token.chars().count() >= 3 && lower.contains(&token.to_lowercase()) {
                return false;
            }
        }
    }
    let (mut upper, mut lower_case, mut digit, mut symbol, mut other) =
        (false, false, false, false, false);
    for c in password.chars() {
        if c.is_ascii_uppercase() {
            upper = true;
        } else if c.is_ascii_lowercase() {
            lower_case = true;
        } else if c.is_ascii_digit() {
            digit = true;
        } else if c.is_alphabetic() {
            if c.is_uppercase() {
                upper = true;
            } else if c.is_lowercase() {
                lower_case = true;
            } else {
                other = true;
            }
        } else {
            symbol = true;
        }
    }
    [upper, lower_case, digit, symbol, other]
        .iter()
        .filter(|x| **x)
        .count()
        >= 3
}

/// A search entry with every value as bytes. `ldap3::SearchEntry` sorts values into
/// text and binary by whether they happen to be valid UTF-8, which a SID can be; we
/// keep bytes and decide per attribute.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawEntry {
    pub(crate) dn: String,
    attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl RawEntry {
    /// Parse a `SearchResultEntry` ([APPLICATION 4] SEQUENCE { objectName, attributes });
    /// `None` if it is malformed.
    pub(crate) fn parse(tag: StructureTag) -> Option<RawEntry> {
        if tag.id != 4 {
            return None;
        }
        let PL::C(mut parts) = tag.payload else {
            return None;
        };
        if parts.len() < 2 {
            return None;
        }
        let attrs_tag = parts.remove(1);
        let dn = String::from_utf8(primitive(parts.remove(0))?).ok()?;
        let PL::C(list) = attrs_tag.payload else {
            return None;
        };
        let mut attrs = Vec::with_capacity(list.len());
        for partial in list {
            let PL::C(mut pair) = partial.payload else {
                return None;
            };
            if pair.len() != 2 {
                return None;
            }
            let values_tag = pair.remove(1);
            let name = String::from_utf8(primitive(pair.remove(0))?).ok()?;
            let PL::C(values) = values_tag.payload else {
                return None;
            };
            let values = values
                .into_iter()
                .map(primitive)
                .collect::<Option<Vec<_>>>()?;
            attrs.push((name, values));
        }
        Some(RawEntry { dn, attrs })
    }

    /// All values of `name` (case-insensitive), empty if absent.
    pub(crate) fn values(&self, name: &str) -> &[Vec<u8>] {
        self.attrs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    /// The first value of `name`, as bytes.
    pub(crate) fn first(&self, name: &str) -> Option<&[u8]> {
        self.values(name).first().map(Vec::as_slice)
    }

    /// The first value of `name`, as text.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.first(name)?).ok()
    }

    /// The first value of `name`, as an integer.
    pub(crate) fn int(&self, name: &str) -> Option<i64> {
        self.text(name)?.trim().parse().ok()
    }

    /// All values of `name` that are text.
    pub(crate) fn texts(&self, name: &str) -> Vec<&str> {
        self.values(name)
            .iter()
            .filter_map(|v| std::str::from_utf8(v).ok())
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn with(dn: &str, attrs: &[(&str, &[&[u8]])]) -> RawEntry {
        RawEntry {
            dn: dn.to_string(),
            attrs: attrs
                .iter()
                .map(|(n, vs)| (n.to_string(), vs.iter().map(|v| v.to_vec()).collect()))
                .collect(),
        }
    }
}

fn primitive(tag: StructureTag) -> Option<Vec<u8>> {
    match tag.payload {
        PL::P(bytes) => Some(bytes),
        PL::C(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::TagClass;

    #[test]
    fn unicode_pwd_is_quoted_utf16le() {
        let pw = SecretString::from("Ab1é".to_string());
        assert_eq!(
            unicode_pwd(&pw).as_slice(),
            &[b'"', 0, b'A', 0, b'b', 0, b'1', 0, 0xe9, 0, b'"', 0][..]
        );
        // Outside the BMP: a surrogate pair.
        let pw = SecretString::from("😀".to_string());
        assert_eq!(
            unicode_pwd(&pw).as_slice(),
            &[b'"', 0, 0x3d, 0xd8, 0x00, 0xde, b'"', 0][..]
        );
    }

    #[test]
    fn guids_go_into_filters_little_endian_and_escaped() {
        let guid = uuid::Uuid::parse_str("01020304-0506-0708-090a-0b0c0d0e0f10").unwrap();
        assert_eq!(
            escape_bytes(&guid.to_bytes_le()),
            "\\04\\03\\02\\01\\06\\05\\08\\07\\09\\0a\\0b\\0c\\0d\\0e\\0f\\10"
        );
        // ldap3 accepts the escaped form.
        let filter = format!("(objectGUID={})", escape_bytes(&guid.to_bytes_le()));
        assert!(ldap3::parse_filter(&filter).is_ok());
    }

    #[test]
    fn sids_round_trip() {
        // Administrator's objectSid as Samba returned it (base64
        // AQUAAAAAAAUVAAAASQzRaTG3Xsd33tvM9AEAAA==).
        let bytes = [
            1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 0x49, 0x0c, 0xd1, 0x69, 0x31, 0xb7, 0x5e, 0xc7,
            0x77, 0xde, 0xdb, 0xcc, 0xf4, 0x01, 0, 0,
        ];
        let sid = Sid::from_bytes(&bytes).unwrap();
        assert_eq!(
            sid.to_string(),
            "S-1-5-21-1775307849-3344873265-3436961399-500"
        );
        assert_eq!(sid.rid(), Some(500));
        assert!(sid.is_domain_account());
        assert_eq!(sid.to_bytes(), bytes);
        let admins = Sid::builtin(544);
        assert_eq!(admins.to_string(), "S-1-5-32-544");
        assert!(admins.is_builtin());
        assert_eq!(
            Sid::from_bytes(&admins.to_bytes()).unwrap(),
            Sid::builtin(544)
        );
        assert!(Sid::from_bytes(&bytes[..20]).is_none());
        assert!(Sid::from_bytes(&[]).is_none());
        assert_eq!(
            sid.domain().map(|d| d.with_rid(513).to_string()).as_deref(),
            Some("S-1-5-21-1775307849-3344873265-3436961399-513")
        );
        // A prefix parse leaves what follows.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[9, 9]);
        assert_eq!(Sid::parse_prefix(&longer), Some((sid.clone(), bytes.len())));
        assert!(Sid::from_bytes(&longer).is_none());
        // The string form.
        assert_eq!(
            Sid::parse_str("S-1-5-21-1775307849-3344873265-3436961399-500"),
            Some(sid)
        );
        assert_eq!(
            Sid::parse_str("S-1-1-0").map(|s| s.to_bytes()),
            Some(vec![1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])
        );
        for bad in [
            "",
            "S-",
            "S-1",
            "S-1-x-2",
            "X-1-5-32",
            "S-1-281474976710656-1",
            "S-1-5--1",
        ] {
            assert!(Sid::parse_str(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn filetimes_and_intervals() {
        // 2026-11-24 20:53:34 UTC as Samba wrote pwdLastSet.
        let t = filetime_to_datetime(134_400_272_144_271_010).unwrap();
        assert_eq!(human_time(t), "2026-11-24 20:53 UTC");
        assert_eq!(filetime_to_datetime(0), None);
        assert_eq!(filetime_to_datetime(-1), None);
        assert_eq!(
            interval_to_duration(-864_000_000_000),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(interval_to_duration(i64::MIN), None);
        assert_eq!(interval_to_duration(0), Some(Duration::ZERO));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(86_400)), "1 day");
        assert_eq!(human_duration(Duration::from_secs(2 * 86_400)), "2 days");
        assert_eq!(human_duration(Duration::from_secs(3_600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(90 * 60)), "90 minutes");
        assert_eq!(human_duration(Duration::from_secs(45)), "45 seconds");
        assert_eq!(human_duration(Duration::from_secs(86_400 + 1)), "25 hours");
    }

    #[test]
    fn complexity_follows_ad_rules() {
        assert!(meets_complexity("Start-Passw0rd!", "alice", None));
        assert!(!meets_complexity("alllowercaseletters", "alice", None));
        assert!(!meets_complexity("UPPERlower", "alice", None));
        assert!(meets_complexity("UPPERlower1", "alice", None));
        assert!(!meets_complexity("Alice-Passw0rd!", "alice", None));
        assert!(!meets_complexity("Xy1!Smith", "jsmith", Some("John Smith")));
        // Short names are not checked.
        assert!(meets_complexity("Ab-Passw0rd!", "ab", None));
    }

    fn octets(bytes: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id: 4,
            payload: PL::P(bytes.to_vec()),
        }
    }

    fn seq(id: u64, class: TagClass, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::C(inner),
        }
    }

    #[test]
    fn entries_keep_binary_values_as_bytes() {
        let sid = Sid::builtin(544).to_bytes();
        let tag = seq(
            4,
            TagClass::Application,
            vec![
                octets(b"CN=x,DC=contoso,DC=test"),
                seq(
                    16,
                    TagClass::Universal,
                    vec![
                        seq(
                            16,
                            TagClass::Universal,
                            vec![
                                octets(b"objectSid"),
                                seq(17, TagClass::Universal, vec![octets(&sid)]),
                            ],
                        ),
                        seq(
                            16,
                            TagClass::Universal,
                            vec![
                                octets(b"userAccountControl"),
                                seq(17, TagClass::Universal, vec![octets(b"514")]),
                            ],
                        ),
                    ],
                ),
            ],
        );
        let entry = RawEntry::parse(tag).unwrap();
        assert_eq!(entry.dn, "CN=x,DC=contoso,DC=test");
        assert_eq!(entry.first("objectsid"), Some(sid.as_slice()));
        assert_eq!(entry.int("userAccountControl"), Some(514));
        assert!(entry.values("missing").is_empty());
        assert!(RawEntry::parse(octets(b"x")).is_none());
    }
}

/// The `attid` of `unicodePwd` in replication metadata.
const ATTID_UNICODE_PWD: u32 = 0x0009_005a;

/// The version of `unicodePwd` in a `replPropertyMetaData` value (a
/// `replPropertyMetaDataBlob`, version 1: a 16-byte header whose third
/// little-endian u32 is the entry count, then 48-byte entries starting with
/// the attribute id and its version); `None` when malformed or absent.
pub(crate) fn unicode_pwd_version(blob: &[u8]) -> Option<u32> {
    let u32_at = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(blob.get(i..i + 4)?.try_into().ok()?))
    };
    if u32_at(0)? != 1 {
        return None;
    }
    // The count comes from the wire: never walk past what the blob holds.
    let count = usize::try_from(u32_at(8)?)
        .ok()?
        .min(blob.len().saturating_sub(16) / 48);
    (0..count)
        .map(|n| 16 + n * 48)
        .find(|&at| u32_at(at) == Some(ATTID_UNICODE_PWD))
        .and_then(|at| u32_at(at + 4))
}

#[cfg(test)]
mod repl_tests {
    use super::unicode_pwd_version;

    fn blob(entries: &[(u32, u32)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&u32::try_from(entries.len()).unwrap_or(0).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for (attid, version) in entries {
            let mut e = vec![0u8; 48];
            e[..4].copy_from_slice(&attid.to_le_bytes());
            e[4..8].copy_from_slice(&version.to_le_bytes());
            b.extend_from_slice(&e);
        }
        b
    }

    /// Seeded random and mutated blobs: never a panic, and a blob that
    /// still parses keeps its count's bounds.
    #[test]
    fn random_blobs_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x9005a);
        let good = blob(&[(0x0000_0000, 1), (0x0009_005a, 7), (0x0002_0060, 3)]);
        for round in 0..20_000 {
            let b: Vec<u8> = if round % 2 == 0 {
                let mut b = good.clone();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..b.len());
                    b[at] = rng.random();
                }
                b.truncate(rng.random_range(0..=b.len()));
                b
            } else {
                let len = rng.random_range(0..120);
                (0..len).map(|_| rng.random()).collect()
            };
            let _ = unicode_pwd_version(&b);
            let _ = super::Sid::from_bytes(&b);
            let _ = super::Sid::parse_prefix(&b);
        }
    }

    #[test]
    fn finds_the_unicode_pwd_version_and_refuses_garbage() {
        assert_eq!(
            unicode_pwd_version(&blob(&[(0x0000_0000, 1), (0x0009_005a, 7)])),
            Some(7)
        );
        assert_eq!(unicode_pwd_version(&blob(&[(0x0000_0003, 2)])), None);
        let mut truncated = blob(&[(0x0009_005a, 7)]);
        truncated.truncate(22);
        assert_eq!(unicode_pwd_version(&truncated), None);
        assert_eq!(unicode_pwd_version(&[1, 2, 3]), None);
        let mut wrong_version = blob(&[(0x0009_005a, 7)]);
        wrong_version[0] = 2;
        assert_eq!(unicode_pwd_version(&wrong_version), None);
    }
}
