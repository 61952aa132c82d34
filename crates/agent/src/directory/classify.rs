//! Pure mapping from an LDAP result (result code and diagnostic text) to what the
//! domain controller meant.
//!
//! Active Directory and Samba put the real cause in the diagnostic text: a Win32
//! error code as eight hex digits at the start (`0000052D: ...`, `00000056: ...`) and,
//! for binds, a `data <hex>` sub-code (`data 52e`, `data 775`). Samba 4.17 also spells
//! out which password rule failed (`check_password_restrictions: the password is too
//! short ...`); Windows does not, which is why [`DcRefusal::PasswordPolicy`] exists.
//! We map on the result code first, then on the hex code, then on the text; the unit
//! tests below hold the strings Samba 4.17 returned, verbatim.

/// What the domain controller refused, as far as the result code and text tell.
///
/// The same refusal means different things in different places (`data 52e` is a wrong
/// service-account password on the agent's own bind, a wrong old password on a user
/// bind), so callers turn a refusal into a [`DirectoryError`](super::DirectoryError)
/// with their context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DcRefusal {
    /// `0000052D` "the password is too short".
    PasswordTooShort,
    /// `0000052D` "the password does not meet the complexity criteria".
    PasswordComplexity,
    /// `0000052D` "the password was already used (in history)".
    PasswordInHistory,
    /// `0000052D` "password is too young to change" (minimum password age).
    PasswordTooYoung,
    /// `0000052D` without a recognised cause: Windows DCs answer every password-policy
    /// failure this way.
    PasswordPolicy,
    /// `00000056`: the old password given for a change does not match.
    WrongOldPassword,
    /// rc 49 `data 52e` (or no sub-code): wrong name or password.
    InvalidCredentials,
    /// rc 49 `data 525`: no such user.
    UnknownUser,
    /// rc 49 `data 530` / `531`: logon hours or workstation restrictions.
    LogonRestricted,
    /// rc 49 `data 532`: the password expired.
    PasswordExpired,
    /// rc 49 `data 533`, or `00000533`: the account is disabled.
    AccountDisabled,
    /// rc 49 `data 701`: the account expired.
    AccountExpired,
    /// rc 49 `data 773`: the password must be changed before the next logon.
    MustChangePassword,
    /// rc 49 `data 775` or `00000775` on a change: the account is locked out.
    AccountLockedOut,
    /// rc 50: the bound identity lacks a right.
    InsufficientAccess,
    /// rc 32: the object does not exist.
    NoSuchObject,
    /// rc 51 / 52: the DC is busy or unavailable.
    Busy,
    /// Anything else: a [`DirectoryError::Directory`](super::DirectoryError::Directory).
    Other,
}

/// LDAP result codes we act on (RFC 4511 section 4.1.9).
pub(crate) mod rc {
    pub const SUCCESS: u32 = 0;
    /// `referral`: the DC does not hold the base object and names another server.
    pub const REFERRAL: u32 = 10;
    pub const CONSTRAINT_VIOLATION: u32 = 19;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INVALID_CREDENTIALS: u32 = 49;
    pub const INSUFFICIENT_ACCESS: u32 = 50;
    pub const BUSY: u32 = 51;
    pub const UNAVAILABLE: u32 = 52;
    pub const UNWILLING_TO_PERFORM: u32 = 53;
}

/// Win32 error codes found at the start of AD/Samba diagnostic texts.
mod win32 {
    pub const ERROR_INVALID_PASSWORD: u32 = 0x56;
    pub const ERROR_PASSWORD_RESTRICTION: u32 = 0x52D;
    pub const ERROR_ACCOUNT_DISABLED: u32 = 0x533;
    pub const ERROR_ACCOUNT_LOCKED_OUT: u32 = 0x775;
    pub const ERROR_DS_INSUFF_ACCESS_RIGHTS: u32 = 0x2098;
}

/// Classify an LDAP result: the result code first, then the Win32 code at the start
/// of the text (`0000052D:`), then the bind sub-code (`data 52e`), then the text.
pub fn classify(rc: u32, text: &str) -> DcRefusal {
    let code = leading_win32_code(text);
    match rc {
        rc::INVALID_CREDENTIALS => match bind_data_code(text) {
            Some(0x525) => DcRefusal::UnknownUser,
            Some(0x530 | 0x531) => DcRefusal::LogonRestricted,
            Some(0x532) => DcRefusal::PasswordExpired,
            Some(0x533) => DcRefusal::AccountDisabled,
            Some(0x701) => DcRefusal::AccountExpired,
            Some(0x773) => DcRefusal::MustChangePassword,
            Some(0x775) => DcRefusal::AccountLockedOut,
            // 52e and anything unknown: the credentials were not accepted.
            _ => DcRefusal::InvalidCredentials,
        },
        rc::INSUFFICIENT_ACCESS => DcRefusal::InsufficientAccess,
        rc::NO_SUCH_OBJECT => DcRefusal::NoSuchObject,
        rc::BUSY | rc::UNAVAILABLE => DcRefusal::Busy,
        // Windows answers a reset that fails the policy with 53 + 0000052D and a
        // change with 19 + 0000052D; Samba uses 19 for both.
        rc::CONSTRAINT_VIOLATION | rc::UNWILLING_TO_PERFORM => match code {
            Some(win32::ERROR_PASSWORD_RESTRICTION) => password_restriction(text),
            Some(win32::ERROR_INVALID_PASSWORD) => DcRefusal::WrongOldPassword,
            Some(win32::ERROR_ACCOUNT_LOCKED_OUT) => DcRefusal::AccountLockedOut,
            Some(win32::ERROR_ACCOUNT_DISABLED) => DcRefusal::AccountDisabled,
            Some(win32::ERROR_DS_INSUFF_ACCESS_RIGHTS) => DcRefusal::InsufficientAccess,
            _ => DcRefusal::Other,
        },
        _ => DcRefusal::Other,
    }
}

/// Which rule a `0000052D` names (Samba's `check_password_restrictions: ...`).
fn password_restriction(text: &str) -> DcRefusal {
    let lower = text.to_ascii_lowercase();
    if lower.contains("too short") {
        DcRefusal::PasswordTooShort
    } else if lower.contains("complexity") {
        DcRefusal::PasswordComplexity
    } else if lower.contains("history") || lower.contains("already used") {
        DcRefusal::PasswordInHistory
    } else if lower.contains("too young") {
        DcRefusal::PasswordTooYoung
    } else {
        DcRefusal::PasswordPolicy
    }
}

/// `0000052D: Constraint violation - ...` → `Some(0x52D)`.
fn leading_win32_code(text: &str) -> Option<u32> {
    let head = text.trim_start().get(..9)?;
    let (hex, colon) = head.split_at(8);
    if colon != ":" || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// `... AcceptSecurityContext error, data 775, v1db1` → `Some(0x775)`.
fn bind_data_code(text: &str) -> Option<u32> {
    let (_, rest) = text.split_once("data ")?;
    let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    if hex.is_empty() {
        return None;
    }
    u32::from_str_radix(&hex, 16).ok()
}

/// A minimum password length stated in the DC text ("It should be equal or longer
/// than 7 characters!"), as Samba spells it. Windows never says; callers fall back
/// to `minPwdLength`.
pub(crate) fn stated_min_length(text: &str) -> Option<u32> {
    let (_, rest) = text.split_once("longer than ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Verbatim diagnostic texts from Samba 4.17.12-Debian.
    const TOO_SHORT: &str = "0000052D: Constraint violation - check_password_restrictions: the password is too short. It should be equal or longer than 7 characters!";
    const COMPLEXITY: &str = "0000052D: Constraint violation - check_password_restrictions: the password does not meet the complexity criteria!";
    const HISTORY: &str = "0000052D: Constraint violation - check_password_restrictions: the password was already used (in history)!";
    const TOO_YOUNG: &str = "0000052D: Constraint violation - check_password_restrictions: password is too young to change!";
    const WRONG_OLD: &str = "00000056: Constraint violation - check_password_restrictions: The old password specified doesn't match!";
    const LOCKED_CHANGE: &str = "00000775: Password change not permitted, account locked out! at ../../source4/dsdb/samdb/ldb_modules/password_hash.c:3929:setup_io";
    const BIND_52E: &str =
        "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1";
    const BIND_775: &str =
        "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 775, v1db1";
    const BIND_773: &str =
        "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 773, v1db1";
    const BIND_533: &str =
        "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 533, v1db1";
    const NO_RESET_RIGHT: &str =
        "error in module acl: insufficient access rights during LDB_MODIFY (50)";
    const NO_WRITE_PROPERTY: &str =
        "00002098: Object CN=dave,OU=Staff,DC=contoso,DC=test has no write property access\n";
    const NO_SUCH_OBJECT: &str = "00002030: No such Base DN: CN=nobody,CN=Users,DC=contoso,DC=test";
    const BAD_PWD_LAST_SET: &str = "00000057: setup_last_set_field: pwdLastSet must be 0 or -1 only! at ../../source4/dsdb/samdb/ldb_modules/password_hash.c:2436:setup_last_set_field";
    const UPN_IN_USE: &str =
        "0000202F: samldb: userPrincipalName 'dup@contoso.test' is already in use ";

    #[test]
    fn samba_password_rules_map_to_their_causes() {
        assert_eq!(classify(19, TOO_SHORT), DcRefusal::PasswordTooShort);
        assert_eq!(classify(19, COMPLEXITY), DcRefusal::PasswordComplexity);
        assert_eq!(classify(19, HISTORY), DcRefusal::PasswordInHistory);
        assert_eq!(classify(19, TOO_YOUNG), DcRefusal::PasswordTooYoung);
        assert_eq!(classify(19, WRONG_OLD), DcRefusal::WrongOldPassword);
        assert_eq!(classify(19, LOCKED_CHANGE), DcRefusal::AccountLockedOut);
    }

    #[test]
    fn samba_bind_sub_codes_map_to_their_causes() {
        assert_eq!(classify(49, BIND_52E), DcRefusal::InvalidCredentials);
        assert_eq!(classify(49, BIND_775), DcRefusal::AccountLockedOut);
        assert_eq!(classify(49, BIND_773), DcRefusal::MustChangePassword);
        assert_eq!(classify(49, BIND_533), DcRefusal::AccountDisabled);
        assert_eq!(classify(49, ""), DcRefusal::InvalidCredentials);
    }

    #[test]
    fn access_and_existence() {
        assert_eq!(classify(50, NO_RESET_RIGHT), DcRefusal::InsufficientAccess);
        assert_eq!(
            classify(50, NO_WRITE_PROPERTY),
            DcRefusal::InsufficientAccess
        );
        assert_eq!(classify(32, NO_SUCH_OBJECT), DcRefusal::NoSuchObject);
    }

    #[test]
    fn everything_else_is_other() {
        assert_eq!(classify(80, BAD_PWD_LAST_SET), DcRefusal::Other);
        assert_eq!(classify(19, UPN_IN_USE), DcRefusal::Other);
        assert_eq!(classify(19, "constraint violation"), DcRefusal::Other);
        assert_eq!(classify(1, "operations error"), DcRefusal::Other);
        assert_eq!(classify(51, "busy"), DcRefusal::Busy);
    }

    #[test]
    fn rc_comes_before_the_text() {
        // A 52D text under an unrelated result code is not a policy failure.
        assert_eq!(classify(80, TOO_SHORT), DcRefusal::Other);
        // A bind text under rc 19 is not a bind failure.
        assert_eq!(classify(19, BIND_775), DcRefusal::Other);
        // The hex code comes before the words: 00000056 mentioning "history" is still
        // a wrong old password.
        assert_eq!(
            classify(19, "00000056: the password was already used (in history)"),
            DcRefusal::WrongOldPassword
        );
    }

    #[test]
    fn windows_texts_map_too() {
        // Windows: no cause in the text; resets come back as rc 53.
        let opaque = "0000052D: SvcErr: DSID-031A1248, problem 5003 (WILL_NOT_PERFORM), data 0\n";
        assert_eq!(classify(53, opaque), DcRefusal::PasswordPolicy);
        assert_eq!(classify(19, opaque), DcRefusal::PasswordPolicy);
        let wrong_old = "00000056: AtrErr: DSID-03191083, #1:\n\t0: 00000056: DSID-03191083, problem 1005 (CONSTRAINT_ATT_TYPE), data 0, Att 9005a (unicodePwd)\n";
        assert_eq!(classify(19, wrong_old), DcRefusal::WrongOldPassword);
        let denied =
            "00002098: SecErr: DSID-03150BB9, problem 4003 (INSUFF_ACCESS_RIGHTS), data 0\n";
        assert_eq!(classify(50, denied), DcRefusal::InsufficientAccess);
        let bind = "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 532, v4563";
        assert_eq!(classify(49, bind), DcRefusal::PasswordExpired);
        let bind = "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 701, v4563";
        assert_eq!(classify(49, bind), DcRefusal::AccountExpired);
    }

    #[test]
    fn the_stated_minimum_length_is_read() {
        assert_eq!(stated_min_length(TOO_SHORT), Some(7));
        assert_eq!(stated_min_length(COMPLEXITY), None);
    }
}
