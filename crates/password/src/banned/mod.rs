//! Banned-password matching after Microsoft Entra Password Protection's documented
//! algorithm ("Eliminate bad passwords using Microsoft Entra Password Protection").
//!
//! 1. **Normalization.** The password is lower-cased and these substitutions are
//!    applied: `0`→`o`, `1`→`l`, `$`→`s`, `@`→`a` ([`SUBSTITUTIONS`]). Banned terms
//!    and the user's name tokens are normalized the same way, so `P@ssw0rd` and
//!    `password` are the same string.
//! 2. **Matching.** The normalized password is read left to right. At each
//!    position the longest reading found there wins (an exact one on a tie):
//!    * *exact*: a banned term or one of the user's own tokens (first name, last
//!      name, account name: "substring matching on specific terms") occurs there;
//!    * *fuzzy* (banned terms only, not the user's tokens): the text
//!      there is one edit away from a banned term of at least
//!      [`FUZZY_MIN_LEN`] characters — one character changed (`passwxrd`), one
//!      missing (`pasword`) or one inserted inside the term (`passw-ord`).
//!
//!    Terms and tokens shorter than [`MIN_TERM_LEN`] characters after normalization
//!    are ignored, as Microsoft ignores them. (Microsoft does not say how short a
//!    fuzzy term may be; one edit away from a 4-character term is a 3-character
//!    string that turns up everywhere, hence [`FUZZY_MIN_LEN`].)
//! 3. **Score.** Each term found counts one point, each character not part of a
//!    term counts one point; a password needs at least [`THRESHOLD`] (5) points.
//!
//! Worked examples (built-in list; `contoso` a tenant's custom term):
//!
//! | password | normalized | reading | score | |
//! |---|---|---|---|---|
//! | `P@ssw0rd1` | `passwordl` | `password` + `l` | 2 | banned |
//! | `Pasword!` | `pasword!` | `pasword`≈`password` + `!` | 2 | banned |
//! | `C0ntos0Blank12` | `contosoblankl2` | `contoso` + `blank` + `l` + `2` | 4 | banned |
//! | `ContoS0Bl@nkf9!` | `contosoblankf9!` | `contoso` + `blank` + `f` `9` `!` | 5 | accepted |
//! | `Contoso!Autumn-Mountain-42` | `contoso!autumn-mountain-42` | `contoso` `!` `autumn` `-` `mountain` `-` `4` `2` | 8 | accepted |
//!
//! The built-in list (`builtin.txt`, a few hundred common base terms: `password`,
//! `qwerty`, `letmein`, `123456`, months, seasons, `admin`, `changeme` …) is
//! compiled in. [`Evaluation::matched_terms`] names banned terms (as written in the
//! list) and the user's own tokens, never the password.

use std::sync::{Arc, OnceLock};

/// Points a password needs to be accepted.
pub const THRESHOLD: u32 = 5;
/// Terms (and user tokens) shorter than this, after normalization, are ignored.
pub const MIN_TERM_LEN: usize = 4;
/// Only terms at least this long are matched with one edit.
pub const FUZZY_MIN_LEN: usize = 5;
/// Characters of the password that are matched; any beyond count one point each
/// (Active Directory refuses passwords over 256 characters anyway).
pub const MAX_MATCHED_CHARS: usize = 256;
/// Character substitutions applied after lower-casing.
pub const SUBSTITUTIONS: [(char, char); 4] = [('0', 'o'), ('1', 'l'), ('$', 's'), ('@', 'a')];

const BUILTIN: &str = include_str!("builtin.txt");

/// A set of banned terms: the built-in list, optionally with a tenant's own terms.
/// Cheap to clone (the terms are shared).
#[derive(Clone, Debug)]
pub struct BannedList {
    terms: Arc<[Term]>,
}

#[derive(Debug)]
struct Term {
    normalized: Vec<char>,
    /// As written in the list, for showing to the user.
    shown: String,
}

/// The verdict on one password. Holds no part of the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    pub score: u32,
    pub threshold: u32,
    /// The banned terms and user tokens found, each once, in the order found.
    pub matched_terms: Vec<String>,
    /// `score < threshold`.
    pub banned: bool,
}

impl BannedList {
    /// The built-in list.
    pub fn builtin() -> BannedList {
        static BUILTIN_LIST: OnceLock<BannedList> = OnceLock::new();
        BUILTIN_LIST
            .get_or_init(|| BannedList {
                terms: collect_terms(BUILTIN.lines()).into(),
            })
            .clone()
    }

    /// This list plus a tenant's `terms` (normalized like the password; blank,
    /// too short and duplicate terms are dropped).
    pub fn with_custom(&self, terms: &[String]) -> BannedList {
        let mut all: Vec<Term> = self
            .terms
            .iter()
            .map(|t| Term {
                normalized: t.normalized.clone(),
                shown: t.shown.clone(),
            })
            .collect();
        for term in collect_terms(terms.iter().map(String::as_str)) {
            if !all.iter().any(|t| t.normalized == term.normalized) {
                all.push(term);
            }
        }
        BannedList { terms: all.into() }
    }

    /// Number of distinct terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Score `password` against this list and the user's own `user_tokens`
    /// (first name, last name, account name …; matched exactly, not fuzzily).
    pub fn evaluate(&self, password: &str, user_tokens: &[&str]) -> Evaluation {
        let normalized = normalize(password);
        let (text, rest) = normalized.split_at(normalized.len().min(MAX_MATCHED_CHARS));
        let tokens = collect_terms(user_tokens.iter().copied());
        let mut score: u32 = 0;
        let mut matched_terms: Vec<String> = Vec::new();
        let mut i = 0;
        while i < text.len() {
            let here = &text[i..];
            let exact = self
                .terms
                .iter()
                .chain(&tokens)
                .filter(|t| here.starts_with(&t.normalized))
                .map(|t| (t, t.normalized.len()))
                .max_by_key(|&(_, len)| len);
            let fuzzy = self
                .terms
                .iter()
                .filter_map(|t| fuzzy_len(here, &t.normalized).map(|len| (t, len)))
                .max_by_key(|&(_, len)| len);
            // The longest reading wins; an exact one wins a tie.
            let found = match (exact, fuzzy) {
                (Some(e), Some(f)) if f.1 > e.1 => Some(f),
                (None, f) => f,
                (e, _) => e,
            };
            score = score.saturating_add(1);
            match found {
                Some((term, len)) => {
                    if !matched_terms.contains(&term.shown) {
                        matched_terms.push(term.shown.clone());
                    }
                    i += len;
                }
                None => i += 1,
            }
        }
        score = score.saturating_add(u32::try_from(rest.len()).unwrap_or(u32::MAX));
        Evaluation {
            score,
            threshold: THRESHOLD,
            matched_terms,
            banned: score < THRESHOLD,
        }
    }
}

/// Lower-case, then [`SUBSTITUTIONS`].
pub fn normalize(text: &str) -> Vec<char> {
    text.chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            SUBSTITUTIONS
                .iter()
                .find(|(from, _)| *from == c)
                .map_or(c, |&(_, to)| to)
        })
        .collect()
}

/// Trimmed, normalized, long enough, deduplicated.
fn collect_terms<'a>(raw: impl Iterator<Item = &'a str>) -> Vec<Term> {
    let mut terms: Vec<Term> = Vec::new();
    for shown in raw.map(str::trim) {
        let normalized = normalize(shown);
        if normalized.len() >= MIN_TERM_LEN && !terms.iter().any(|t| t.normalized == normalized) {
            terms.push(Term {
                normalized,
                shown: shown.to_lowercase(),
            });
        }
    }
    terms
}

/// The length of the longest prefix of `text` that is one edit away from `term`
/// (substitution, deletion, or insertion strictly inside the term), if any.
fn fuzzy_len(text: &[char], term: &[char]) -> Option<usize> {
    let n = term.len();
    if n < FUZZY_MIN_LEN {
        return None;
    }
    let window = |len: usize| text.get(..len);
    let inserted = window(n + 1)
        .filter(|w| w.first() == term.first() && w.last() == term.last())
        .filter(|w| one_deletion(term, w));
    let substituted = window(n).filter(|w| w.iter().zip(term).filter(|(a, b)| a != b).count() == 1);
    let deleted = window(n - 1).filter(|w| one_deletion(w, term));
    inserted.or(substituted).or(deleted).map(<[char]>::len)
}

/// `short` is `long` with exactly one character removed.
fn one_deletion(short: &[char], long: &[char]) -> bool {
    if short.len() + 1 != long.len() {
        return false;
    }
    let k = short
        .iter()
        .zip(long)
        .position(|(a, b)| a != b)
        .unwrap_or(short.len());
    short[k..] == long[k + 1..]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn custom(terms: &[&str]) -> BannedList {
        let terms: Vec<String> = terms.iter().map(|t| t.to_string()).collect();
        BannedList::builtin().with_custom(&terms)
    }

    #[test]
    fn the_data_file_is_clean() {
        let lines: Vec<&str> = BUILTIN.lines().collect();
        assert!(lines.len() >= 300, "{}", lines.len());
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, lines, "sorted and without duplicates");
        for line in &lines {
            assert_eq!(*line, line.trim());
            assert_eq!(*line, line.to_lowercase());
            assert!(normalize(line).len() >= MIN_TERM_LEN, "{line}");
        }
        // No two lines normalize to the same term.
        assert_eq!(BannedList::builtin().len(), lines.len());
    }

    #[test]
    fn normalization() {
        assert_eq!(
            normalize("P@ssw0rd1$").iter().collect::<String>(),
            "passwordls"
        );
        assert_eq!(normalize("ÉTÉ").iter().collect::<String>(), "été");
    }

    #[test]
    fn edits() {
        let c = |s: &str| s.chars().collect::<Vec<_>>();
        let term = c("password");
        assert_eq!(fuzzy_len(&c("passwxrd!"), &term), Some(8));
        assert_eq!(fuzzy_len(&c("pasword!"), &term), Some(7));
        assert_eq!(fuzzy_len(&c("passw-ord!"), &term), Some(9));
        // An insertion at either end is not an edit of the term: the term is
        // found exactly one position later (or right here).
        assert_eq!(fuzzy_len(&c("xpassword"), &term), None);
        assert_eq!(fuzzy_len(&c("paxxword"), &term), None);
        assert_eq!(
            fuzzy_len(&c("love"), &c("lave")),
            None,
            "too short for fuzzy"
        );
    }

    #[test]
    fn table_of_variants() {
        let list = custom(&["contoso", "Fabrikam", "ab", " "]);
        #[rustfmt::skip]
        let cases: &[(&str, &[&str], u32, &[&str])] = &[
            // password, user tokens, score, matched
            ("password", &[], 1, &["password"]),
            ("PASSWORD", &[], 1, &["password"]),
            ("PaSsWoRd", &[], 1, &["password"]),
            ("P@ssw0rd", &[], 1, &["password"]),
            ("P@ssw0rd1", &[], 2, &["password"]),
            ("pa$$word", &[], 1, &["password"]),
            ("Passwxrd!", &[], 2, &["password"]),
            ("Pasword!", &[], 2, &["password"]),
            ("Passw-ord!", &[], 2, &["password"]),
            ("xPassword", &[], 2, &["password"]),
            ("Password123", &[], 4, &["password"]),
            ("Qwerty!2024", &[], 6, &["qwerty"]),
            ("Summer2024", &[], 5, &["summer"]),
            ("Summer24!", &[], 4, &["summer"]),
            ("Autumn-Winter", &[], 3, &["autumn", "winter"]),
            ("Letmein!!", &[], 3, &["letmein"]),
            ("123456Ab", &[], 2, &["1234567"]), // one edit from 1234567
            ("Ch@ngeMe99", &[], 3, &["changeme"]),
            ("C0ntos0Blank12", &[], 4, &["contoso", "blank"]),
            ("ContoS0Bl@nkf9!", &[], 5, &["contoso", "blank"]),
            ("fabrikam", &[], 1, &["fabrikam"]),
            ("Fabr1kam-2024", &[], 6, &["fabrikam"]),
            ("Contoso!Autumn-Mountain-42", &[], 8, &["contoso", "autumn", "mountain"]),
            // The user's own name, exactly (not fuzzily).
            ("Erin.Hagens7", &["Erin", "Hagens"], 4, &["erin", "hagens"]),
            ("Hagen!7x", &["Hagens"], 8, &[]),
            ("JSmith#2024!", &["jsmith"], 7, &["jsmith"]),
            // Short terms and tokens are ignored.
            ("ab-ab-ab", &["ab"], 8, &[]),
            // Nothing banned at all.
            ("Tr7#kq", &[], 6, &[]),
            ("zq8!", &[], 4, &[]),
            ("", &[], 0, &[]),
        ];
        let mut failures = Vec::new();
        for &(pw, tokens, score, matched) in cases {
            let e = list.evaluate(pw, tokens);
            let want: Vec<String> = matched.iter().map(|m| m.to_string()).collect();
            if e.score != score || e.matched_terms != want || e.banned != (score < THRESHOLD) {
                failures.push(format!("{pw:?}: got {e:?}, want score {score} {want:?}"));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn scores_at_the_threshold() {
        let list = BannedList::builtin();
        let at = list.evaluate("Winter7!x9", &[]);
        assert_eq!((at.score, at.banned), (5, false));
        let below = list.evaluate("Winter7!x", &[]);
        assert_eq!((below.score, below.banned), (4, true));
        assert_eq!(at.threshold, THRESHOLD);
    }

    #[test]
    fn a_term_found_twice_scores_twice_and_is_listed_once() {
        let e = BannedList::builtin().evaluate("qwertyqwerty", &[]);
        assert_eq!(e.score, 2);
        assert_eq!(e.matched_terms, ["qwerty"]);
    }

    #[test]
    fn custom_terms_are_normalized_and_deduplicated() {
        let base = BannedList::builtin();
        let list = custom(&["C0nt0so", "contoso", "PASSWORD", "abc"]);
        assert_eq!(list.len(), base.len() + 1);
        assert_eq!(list.evaluate("contoso", &[]).matched_terms, ["c0nt0so"]);
        // The built-in list itself is unchanged.
        assert!(base.evaluate("contoso", &[]).matched_terms.is_empty());
    }

    #[test]
    fn very_long_passwords_are_cheap_and_score_high() {
        let pw = "password".repeat(10_000);
        let e = BannedList::builtin().evaluate(&pw, &[]);
        assert_eq!(e.score, 32 + (80_000 - 256));
        assert!(!e.banned);
    }
}
