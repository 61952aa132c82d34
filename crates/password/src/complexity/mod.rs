//! Active Directory's "password must meet complexity requirements" rule, as the
//! directory itself applies it when `pwdProperties` has `DOMAIN_PASSWORD_COMPLEX`.
//!
//! Windows and Samba do not apply the same rule, so every check names its
//! [`Flavor`]:
//!
//! * **Windows** ("Password must meet complexity requirements", MS-SAMR 3.1.1.7.2
//!   "Cleartext Password Policy", passfilt.dll):
//!   1. characters from at least 3 of 5 categories: `A`–`Z` (and other upper-case
//!      letters: accented Latin, Greek, Cyrillic), `a`–`z` (and other lower-case
//!      letters), `0`–`9`, the 32 ASCII punctuation characters ``~!@#$%^&*_-+=`|\(){}[]:;"'<>,.?/``, and
//!      letters that are neither upper nor lower case (e.g. CJK). Anything else —
//!      the space, currency signs such as `€` or `£`, emoji — counts for nothing;
//!   2. it must not contain the `sAMAccountName`, compared case-insensitively,
//!      when that name has at least 3 characters;
//!   3. it must not contain any token of the `displayName` (split on `,` `.` `-`
//!      `_` space `#` and tab) that has at least 3 characters, case-insensitively.
//!      "Erin M. Hagens" gives `erin` and `hagens`; `M` is ignored.
//!
//! * **Samba** (4.17, the DC the integration tests run against):
//!   `password_hash`'s `check_password_restrictions` calls `samdb_check_password`
//!   (source4/dsdb/common/util.c), which hands the account name, UPN and display
//!   name only to an optional `check password script` and otherwise applies
//!   `check_password_quality` (lib/util/genrand_util.c) alone. So Samba has **no
//!   account-name or display-name rule**, only the categories, and it counts them
//!   its own way: an ASCII character is a digit, upper, lower or one of the same
//!   32 symbols (the space and control characters count for nothing); a
//!   non-ASCII character is upper case when Samba's `isupper_m` holds, lower case
//!   when `islower_m` holds (Samba's own 64 Ki-entry case tables, which know far
//!   fewer letters than Unicode does: `ß` is in neither), and *every other*
//!   non-ASCII character — CJK, `€`, emoji alike — is in the fifth category. The
//!   tables are generated from the installed libsamba-util by
//!   `scripts/samba-case-table.py` (`samba_case.rs`). The empty password fails.
//!
//! `tests/samba.rs` proves the Samba flavor against a real DC (and the category
//! counting against libsamba-util's own `check_password_quality`).
//!
//! Minimum length is a separate policy (`minPwdLength`), checked by the caller
//! against [`length`].

mod samba_case;

/// Which directory's rule to apply. Windows is the documented rule; Samba is what a
/// Samba AD DC enforces (no name checks, different handling of non-ASCII text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    Windows,
    Samba,
}

/// Why a password fails the complexity rule. Carries no part of the password.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Problem {
    /// Fewer than 3 of the 5 character categories (`found` is how many it has).
    TooFewCategories { found: u8 },
    /// Contains the sAMAccountName (Windows only).
    ContainsAccountName,
    /// Contains this token of the display name, as spelt in the display name
    /// (Windows only).
    ContainsNameToken(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::TooFewCategories { found } => write!(
                f,
                "uses {found} of the 5 character kinds (upper case, lower case, digits, \
                 symbols, other letters); at least 3 are required"
            ),
            Problem::ContainsAccountName => f.write_str("contains the account name"),
            Problem::ContainsNameToken(token) => {
                write!(f, "contains \"{token}\" from the display name")
            }
        }
    }
}

/// The character categories a password uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Categories {
    pub upper: bool,
    pub lower: bool,
    pub digit: bool,
    pub symbol: bool,
    /// Windows: letters that are neither upper nor lower case. Samba: any non-ASCII
    /// character that is neither.
    pub other: bool,
}

impl Categories {
    /// How many of the five are present.
    pub fn count(&self) -> u8 {
        [self.upper, self.lower, self.digit, self.symbol, self.other]
            .into_iter()
            .map(u8::from)
            .sum()
    }
}

/// Categories needed out of five.
pub const REQUIRED_CATEGORIES: u8 = 3;
/// Account names and display-name tokens shorter than this are not checked.
pub const MIN_NAME_LEN: usize = 3;
/// The symbols both Windows and Samba count (`check_password_quality`'s `na`).
pub const SYMBOLS: &str = "~!@#$%^&*_-+=`|\\(){}[]:;\"'<>,.?/";
/// Where Windows splits a display name into tokens.
pub const NAME_DELIMITERS: [char; 7] = [',', '.', '-', '_', ' ', '#', '\t'];

/// Everything wrong with `password` under `flavor`'s rule for a user with this
/// sAMAccountName and displayName (either may be empty). Empty means it passes.
pub fn problems(
    flavor: Flavor,
    password: &str,
    account_name: &str,
    display_name: &str,
) -> Vec<Problem> {
    let mut found = Vec::new();
    let kinds = categories(flavor, password).count();
    if kinds < REQUIRED_CATEGORIES {
        found.push(Problem::TooFewCategories { found: kinds });
    }
    if flavor == Flavor::Windows {
        let folded = password.to_lowercase();
        if account_name.chars().count() >= MIN_NAME_LEN
            && folded.contains(&account_name.to_lowercase())
        {
            found.push(Problem::ContainsAccountName);
        }
        for token in name_tokens(display_name) {
            let problem = Problem::ContainsNameToken(token.to_string());
            if folded.contains(&token.to_lowercase()) && !found.contains(&problem) {
                found.push(problem);
            }
        }
    }
    found
}

/// The display-name tokens Windows checks: split on [`NAME_DELIMITERS`], at least
/// [`MIN_NAME_LEN`] characters.
pub fn name_tokens(display_name: &str) -> impl Iterator<Item = &str> {
    display_name
        .split(NAME_DELIMITERS)
        .filter(|t| t.chars().count() >= MIN_NAME_LEN)
}

/// The categories `password` uses, counted as `flavor` counts them.
pub fn categories(flavor: Flavor, password: &str) -> Categories {
    let mut found = Categories::default();
    // Samba checks a NUL-terminated C string: nothing after a NUL is seen.
    let chars = password
        .chars()
        .take_while(|&c| flavor == Flavor::Windows || c != '\0');
    for c in chars {
        if c.is_ascii() {
            if c.is_ascii_digit() {
                found.digit = true;
            } else if c.is_ascii_uppercase() {
                found.upper = true;
            } else if c.is_ascii_lowercase() {
                found.lower = true;
            } else if SYMBOLS.contains(c) {
                found.symbol = true;
            }
            continue;
        }
        match flavor {
            Flavor::Windows => {
                if c.is_uppercase() {
                    found.upper = true;
                } else if c.is_lowercase() {
                    found.lower = true;
                } else if c.is_alphabetic() {
                    found.other = true;
                }
            }
            Flavor::Samba => {
                let bmp = u16::try_from(u32::from(c)).ok();
                let in_table = |table: &[u16]| bmp.is_some_and(|u| table.binary_search(&u).is_ok());
                if in_table(samba_case::UPPER) {
                    found.upper = true;
                } else if in_table(samba_case::LOWER) {
                    found.lower = true;
                } else {
                    found.other = true;
                }
            }
        }
    }
    found
}

/// The length Active Directory compares with `minPwdLength`: UTF-16 code units, so
/// a character outside the Basic Multilingual Plane (most emoji) counts twice.
/// Windows counts the `UNICODE_STRING`'s units; Samba's `samdb_check_password`
/// uses `strlen_m`, "the number of 16-bit units that the password encodes to".
pub fn length(password: &str) -> usize {
    password.encode_utf16().count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::Flavor::{Samba, Windows};
    use super::*;

    fn ok(flavor: Flavor, pw: &str) -> bool {
        problems(flavor, pw, "jsmith", "Smith, John Q. de-la Rue").is_empty()
    }

    #[test]
    fn three_of_five_categories() {
        for flavor in [Windows, Samba] {
            assert!(ok(flavor, "Abc12345"));
            assert!(ok(flavor, "abc!1234"));
            assert!(ok(flavor, "ABC!defg"));
            assert!(!ok(flavor, "abcdefgh"));
            assert!(!ok(flavor, "abcd1234"));
            assert!(!ok(flavor, "ABCD!!!!"));
            assert!(!ok(flavor, ""));
            // The space is not a symbol.
            assert!(!ok(flavor, "abc DEF ghi"));
            assert_eq!(
                problems(flavor, "abcd1234", "", ""),
                vec![Problem::TooFewCategories { found: 2 }]
            );
        }
    }

    #[test]
    fn every_listed_symbol_counts_and_nothing_else_in_ascii() {
        for c in (0u8..0x80).map(char::from) {
            let pw = format!("ab{c}");
            let symbol = categories(Samba, &pw).symbol;
            assert_eq!(symbol, SYMBOLS.contains(c), "{c:?}");
            assert_eq!(symbol, categories(Windows, &pw).symbol, "{c:?}");
        }
        assert_eq!(SYMBOLS.len(), 32, "all of ASCII punctuation");
    }

    #[test]
    fn non_ascii_differs_between_windows_and_samba() {
        // Accented, Greek and Cyrillic letters are upper/lower case for both.
        for flavor in [Windows, Samba] {
            let c = categories(flavor, "ÉéΩωЖж");
            assert!(c.upper && c.lower && !c.other, "{flavor:?}");
        }
        // CJK is the fifth category for both.
        assert!(categories(Windows, "中文").other);
        assert!(categories(Samba, "中文").other);
        // Samba counts any other non-ASCII character there; Windows only letters.
        for s in ["€", "£", "😀", "ß"] {
            assert!(categories(Samba, s).other, "{s}");
        }
        assert_eq!(categories(Windows, "€£😀").count(), 0);
        // Windows knows ß is lower case; Samba's table does not.
        assert!(categories(Windows, "ß").lower);
        assert!(!categories(Samba, "ß").lower);
        assert!(ok(Samba, "abc€12"));
        assert!(!ok(Windows, "abc€12"));
    }

    #[test]
    fn windows_refuses_the_account_name_in_any_case() {
        let p = |pw: &str, sam: &str| problems(Windows, pw, sam, "");
        assert_eq!(
            p("xxJSmith!9", "jsmith"),
            vec![Problem::ContainsAccountName]
        );
        assert_eq!(p("Jsmith!9", "JSMITH"), vec![Problem::ContainsAccountName]);
        // Only the whole name, and only when it has 3 characters or more.
        assert!(p("Jsmit!9x", "jsmith").is_empty());
        assert!(p("Xjs!9abc", "js").is_empty());
        assert_eq!(p("Xjsq!9abc", "jsq"), vec![Problem::ContainsAccountName]);
        // Samba has no such rule.
        assert!(problems(Samba, "xxJSmith!9", "jsmith", "").is_empty());
    }

    #[test]
    fn windows_refuses_display_name_tokens() {
        let display = "Erin M. Hagens";
        assert_eq!(name_tokens(display).collect::<Vec<_>>(), ["Erin", "Hagens"]);
        assert_eq!(
            problems(Windows, "9hagensX!", "eh", display),
            vec![Problem::ContainsNameToken("Hagens".into())]
        );
        assert_eq!(
            problems(Windows, "ERIN-hagens-1", "eh", display),
            vec![
                Problem::ContainsNameToken("Erin".into()),
                Problem::ContainsNameToken("Hagens".into())
            ]
        );
        // "M" is too short; parts of a token are not checked.
        assert!(problems(Windows, "M!Hagen9", "eh", display).is_empty());
        let display = "a,bcd.efg-hij_klm nop#qrs\ttuv";
        assert_eq!(
            name_tokens(display).collect::<Vec<_>>(),
            ["bcd", "efg", "hij", "klm", "nop", "qrs", "tuv"]
        );
        // A token that appears twice in the display name is reported once.
        assert_eq!(problems(Windows, "Anna!1x", "zz", "Anna Anna").len(), 1);
        assert!(problems(Samba, "9hagensX!", "eh", "Erin M. Hagens").is_empty());
    }

    #[test]
    fn samba_stops_at_nul() {
        assert!(ok(Windows, "ab\0C1"));
        assert!(!ok(Samba, "ab\0C1"));
    }

    #[test]
    fn length_counts_utf16_units() {
        assert_eq!(length("Abc!1"), 5);
        assert_eq!(length("Été"), 3);
        assert_eq!(length("中文"), 2);
        assert_eq!(length("a😀"), 3);
        assert_eq!(length(""), 0);
    }

    #[test]
    fn samba_tables_are_sorted_bmp_non_ascii() {
        for table in [samba_case::UPPER, samba_case::LOWER] {
            assert!(table.windows(2).all(|w| w[0] < w[1]));
            assert!(table.iter().all(|&u| u >= 0x80));
        }
    }
}
