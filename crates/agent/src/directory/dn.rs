//! Distinguished names compared the way the directory compares them, so the scope
//! check can tell "is this user below that OU" from the two DNs the DC returned,
//! without another search per operation.
//!
//! Written by hand: ldap3 treats DNs as strings and no maintained crate parses the
//! RFC 4514 string form. Only what the comparison needs is here: split at unescaped
//! commas, attribute types compared without case, values unescaped (`\,`, `\+`,
//! `\2C`…), trimmed and compared without case (AD's names are case-insensitive).

/// One RDN as compared: (attribute type, value), both lowercase, value unescaped.
type Rdn = (String, String);

/// The RDNs of `dn`, leaf first; `None` if it is not a well-formed DN.
fn rdns(dn: &str) -> Option<Vec<Rdn>> {
    let dn = dn.trim();
    if dn.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    let mut current = Vec::<u8>::new();
    let mut escaped = false;
    for &b in dn.as_bytes() {
        if escaped {
            current.push(b);
            escaped = false;
        } else if b == b'\\' {
            current.push(b);
            escaped = true;
        } else if b == b',' {
            out.push(rdn(&current)?);
            current.clear();
        } else {
            current.push(b);
        }
    }
    if escaped {
        return None;
    }
    out.push(rdn(&current)?);
    Some(out)
}

/// `type=value` with the value unescaped.
fn rdn(raw: &[u8]) -> Option<Rdn> {
    let eq = raw.iter().position(|&b| b == b'=')?;
    let kind = std::str::from_utf8(&raw[..eq]).ok()?.trim();
    if kind.is_empty() {
        return None;
    }
    let value = unescape(&raw[eq + 1..])?;
    Some((kind.to_ascii_lowercase(), value.trim().to_lowercase()))
}

/// RFC 4514 value unescaping: `\` followed by two hex digits is that byte, by any
/// other character is that character.
fn unescape(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => {
                    out.push(*raw.get(i + 1)?);
                    i += 2;
                }
            }
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `dn` is `base` or below it. A DN that does not parse is never inside.
pub(crate) fn is_within(dn: &str, base: &str) -> bool {
    let (Some(dn), Some(base)) = (rdns(dn), rdns(base)) else {
        return false;
    };
    dn.len() >= base.len() && dn[dn.len() - base.len()..] == base[..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_base_means_the_last_rdns_match() {
        let staff = "OU=Staff,DC=contoso,DC=test";
        assert!(is_within("CN=alice,OU=Staff,DC=contoso,DC=test", staff));
        assert!(is_within("CN=a,OU=Team,OU=Staff,DC=contoso,DC=test", staff));
        assert!(is_within(staff, staff));
        assert!(is_within("cn=alice, ou=STAFF ,dc=Contoso,dc=test", staff));
        assert!(!is_within("CN=alice,OU=Other,DC=contoso,DC=test", staff));
        assert!(!is_within("CN=alice,DC=contoso,DC=test", staff));
        assert!(!is_within("OU=Staff,DC=fabrikam,DC=test", staff));
        assert!(!is_within("CN=x,OU=NotStaff,DC=contoso,DC=test", staff));
    }

    #[test]
    fn escaped_commas_are_part_of_the_value() {
        let staff = "OU=Staff,DC=contoso,DC=test";
        // One RDN "CN=x,OU=Staff" directly below the domain root: not in OU=Staff.
        assert!(!is_within(r"CN=x\,OU=Staff,DC=contoso,DC=test", staff));
        assert!(!is_within(r"CN=x\2COU=Staff,DC=contoso,DC=test", staff));
        // The same name escaped two ways is the same name.
        assert!(is_within(
            r"CN=a,OU=Sales\, EU,DC=contoso,DC=test",
            r"OU=Sales\2C EU,DC=contoso,DC=test"
        ));
        assert!(is_within(
            r"CN=a,OU=Caf\C3\A9,DC=contoso,DC=test",
            "OU=Café,DC=contoso,DC=test"
        ));
        // An escaped backslash does not escape the comma after it.
        assert!(is_within(
            r"CN=a\\,OU=Staff,DC=contoso,DC=test",
            "OU=Staff,DC=contoso,DC=test"
        ));
    }

    #[test]
    fn malformed_names_are_never_inside() {
        let staff = "OU=Staff,DC=contoso,DC=test";
        assert!(!is_within(r"CN=a\,", staff));
        assert!(!is_within(
            "no equals sign,OU=Staff,DC=contoso,DC=test",
            staff
        ));
        assert!(!is_within("=x,OU=Staff,DC=contoso,DC=test", staff));
        assert!(!is_within("CN=a,OU=Staff,DC=contoso,DC=test", "garbage"));
    }
}
