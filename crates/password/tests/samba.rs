//! Proof that `complexity` is the rule a real Samba AD DC enforces: a table of
//! candidate passwords, each set by an administrative reset of `unicodePwd` over
//! LDAPS on a DC with complexity on and no other restriction; the DC's verdict must
//! equal `complexity::problems(Flavor::Samba, ..)`. A second test compares the
//! category counting with libsamba-util's own `check_password_quality` over many
//! generated passwords.
//!
//! Needs Samba (`scripts/install-deps.sh`) and root (the DC takes a 127.0.0.N
//! address); fails, never skips, without them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};

use ldap3::Mod;
use writeback_password::complexity::{self, Flavor};
use writeback_testkit::{SambaDc, unicode_pwd};

const ACCOUNT: &str = "mdupont";
/// Tokens (Windows): Marie, Claire, Dupont, Lee, Tan; "O" and "Vo" are too short.
const DISPLAY: &str = "Marie-Claire O. Dupont_Lee#Tan,Vo";

/// (password, what the row covers)
const ROWS: &[(&str, &str)] = &[
    ("Abcdefg1", "upper lower digit"),
    ("abcdefg1!", "lower digit symbol"),
    ("ABCDEF1!", "upper digit symbol"),
    ("Abcdef!!", "upper lower symbol"),
    ("Ab1", "three kinds, short (no minimum length)"),
    ("abcdefgh", "lower only"),
    ("abcd1234", "lower digit"),
    ("ABCD!!!!", "upper symbol"),
    ("12345678!", "digit symbol"),
    ("Abcdefgh", "upper lower"),
    ("", "empty"),
    ("abc DEF ghi", "a space is not a symbol"),
    ("abc\tDEF\tghi", "a tab is not a symbol"),
    ("Pass word 12", "upper lower digit with spaces"),
    ("ab~cd`ef", "lower and the rarest symbols"),
    ("ab~CD`ef", "upper lower symbol"),
    ("xxmdupont1!", "account name inside"),
    ("MDUPONT-9x", "account name, upper case"),
    ("MDupont!x", "account name, mixed case"),
    ("Marie!2024", "display-name token Marie"),
    ("xxclaire99X", "display-name token Claire, lower case"),
    ("DUPONT#77a", "display-name token Dupont, upper case"),
    ("leeTAN!!", "three-letter tokens Lee and Tan"),
    ("Vo!Vo!Vo9", "a two-letter token"),
    ("MarieClaire", "two tokens, two kinds only"),
    ("école123", "é is lower case"),
    ("ÉCOLE123", "É is upper case"),
    ("Écoleàbc", "accented upper and lower"),
    ("ΩΩΩωωω12", "Greek"),
    ("ЖЖЖжжж!!", "Cyrillic"),
    ("ЖЖЖЖ1234", "Cyrillic upper and digits"),
    ("ßabc1234", "sharp s"),
    ("€abc1234", "euro sign"),
    ("£abcdefg", "pound sign and lower only"),
    ("中文abc123", "CJK"),
    ("中文中文1234", "CJK and digits"),
    ("😀abc1234", "emoji (outside the BMP)"),
    ("ǅabc1234", "title-case letter"),
    ("ａｂｃ１２３", "full-width lower and digits"),
    ("ＡＢＣabc１", "full-width upper, lower, full-width digit"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complexity_matches_a_samba_dc() {
    let dc = SambaDc::start("pwq.test")
        .await
        .expect("samba DC (Samba installed? see scripts/install-deps.sh; run as root)");
    dc.set_password_settings(&[
        "--complexity=on",
        "--min-pwd-length=0",
        "--min-pwd-age=0",
        "--history-length=0",
    ])
    .await
    .unwrap();
    let dn = dc.create_user(ACCOUNT, "Start-Passw0rd!1").await.unwrap();
    let mut ldap = dc.ldap_admin().await.unwrap();
    ldap.modify(
        &dn,
        vec![Mod::Replace("displayName", HashSet::from([DISPLAY]))],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let read = dc.read_attrs(&dn, &["displayName"]).await.unwrap();
    assert_eq!(read["displayName"], [DISPLAY]);

    let mut table = Vec::new();
    let mut disagreements = 0;
    let (mut accepted, mut refused, mut only_samba_accepts) = (0, 0, 0);
    for &(password, covers) in ROWS {
        let value = unicode_pwd(password);
        let res = ldap
            .modify(
                &dn,
                vec![Mod::Replace(b"unicodePwd".to_vec(), HashSet::from([value]))],
            )
            .await
            .unwrap();
        let dc_accepted = match res.rc {
            0 => true,
            // constraintViolation: the password restriction.
            19 => false,
            rc => panic!(
                "reset of {password:?} ({covers}): unexpected rc {rc}: {}",
                res.text
            ),
        };
        let samba = complexity::problems(Flavor::Samba, password, ACCOUNT, DISPLAY);
        let windows = complexity::problems(Flavor::Windows, password, ACCOUNT, DISPLAY);
        let agrees = dc_accepted == samba.is_empty();
        disagreements += usize::from(!agrees);
        accepted += usize::from(dc_accepted);
        refused += usize::from(!dc_accepted);
        only_samba_accepts += usize::from(dc_accepted && !windows.is_empty());
        table.push(format!(
            "{} {:<16} {:<42} dc={:<8} samba={:<8} windows={:<8} {:?}",
            if agrees { "  " } else { "!!" },
            format!("{password:?}"),
            covers,
            verdict(dc_accepted),
            verdict(samba.is_empty()),
            verdict(windows.is_empty()),
            windows,
        ));
    }
    let table = table.join("\n");
    println!("{table}");
    assert_eq!(
        disagreements, 0,
        "complexity::problems(Samba) disagrees with the DC:\n{table}"
    );
    // The table must exercise both outcomes and the Windows/Samba differences.
    assert!(
        accepted >= 10 && refused >= 10,
        "{accepted} accepted, {refused} refused"
    );
    assert!(only_samba_accepts >= 5, "{only_samba_accepts}");
}

fn verdict(accepted: bool) -> &'static str {
    if accepted { "accepts" } else { "refuses" }
}

/// libsamba-util's `check_password_quality`, called through Python's ctypes
/// (the system interpreter; Samba's library is installed with Samba), on many
/// generated passwords: every verdict must equal ours.
#[test]
fn categories_match_libsamba_check_password_quality() {
    const SCRIPT: &str = r#"
import ctypes, sys
lib = ctypes.CDLL("libsamba-util.so.0")
f = lib.check_password_quality
f.argtypes = [ctypes.c_char_p]
f.restype = ctypes.c_bool
lines = sys.stdin.buffer.read().decode("utf-8").split("\n")[:-1]
out = [("1" if f(line.encode("utf-8")) else "0") for line in lines]
sys.stdout.write("\n".join(out) + "\n")
"#;
    let passwords = generated_passwords(20_000);
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3");
    let mut input = String::new();
    for p in &passwords {
        input.push_str(p);
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "python3 + libsamba-util.so.0 (Samba installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<bool> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l == "1")
        .collect();
    assert_eq!(verdicts.len(), passwords.len());
    let mut mismatches = Vec::new();
    for (p, &samba) in passwords.iter().zip(&verdicts) {
        let ours =
            complexity::categories(Flavor::Samba, p).count() >= complexity::REQUIRED_CATEGORIES;
        if ours != samba {
            mismatches.push(format!(
                "{p:?} ({:X?}): libsamba {samba}, ours {ours}",
                p.chars().map(u32::from).collect::<Vec<_>>()
            ));
        }
    }
    let accepted = verdicts.iter().filter(|&&v| v).count();
    assert!(
        accepted > 1_000 && accepted < passwords.len() - 1_000,
        "{accepted}"
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} differ:\n{}",
        mismatches.len(),
        passwords.len(),
        mismatches[..mismatches.len().min(40)].join("\n")
    );
}

/// Short passwords (1–4 characters, so three categories are a coin toss) drawn
/// from ASCII, the Latin, Greek and Cyrillic blocks, and anywhere in Unicode;
/// deterministic (xorshift), without NUL or `\n` (the pipe is line-based).
fn generated_passwords(n: usize) -> Vec<String> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut passwords = Vec::with_capacity(n);
    while passwords.len() < n {
        let len = 1 + next() % 4;
        let mut p = String::new();
        while (p.chars().count() as u64) < len {
            let r = next();
            let code = match r % 4 {
                0 => 0x20 + (r >> 8) % 0x5F,  // printable ASCII
                1 => 0x80 + (r >> 8) % 0x580, // Latin-1 .. Cyrillic
                2 => (r >> 8) % 0x1_0000,     // anywhere in the BMP
                _ => (r >> 8) % 0x11_0000,    // anywhere at all
            };
            if let Some(c) = u32::try_from(code).ok().and_then(char::from_u32)
                && !matches!(c, '\0' | '\n')
            {
                p.push(c);
            }
        }
        passwords.push(p);
    }
    passwords
}
