//! Offline breached-password check against k-anonymity range files in the "Have
//! I Been Pwned" layout, downloaded separately by an administrator (for example
//! with Troy Hunt's `haveibeenpwned-downloader`). This module never opens a
//! network connection.
//!
//! The directory holds one file per 5-hex-digit prefix of the SHA-1 of the UTF-8
//! password, named by the prefix in upper case (`21BD1`, or `21BD1.txt` as the
//! downloader writes them). Each line is `SUFFIX:COUNT`: the remaining 35 hex
//! digits of the SHA-1 and how often the password was seen in breaches; lines may
//! end in CRLF. [`RangeDir::count`] hashes the password, reads only the one file
//! for its prefix and returns the count, 0 when the suffix is absent.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

/// A directory of range files.
#[derive(Clone, Debug)]
pub struct RangeDir {
    dir: PathBuf,
}

impl RangeDir {
    /// Open `dir`. It must be a readable directory with at least one entry: an
    /// empty directory is a download that never happened, not a clean bill.
    pub fn open(dir: &Path) -> io::Result<RangeDir> {
        let range = RangeDir {
            dir: dir.to_path_buf(),
        };
        range.ensure_populated()?;
        Ok(range)
    }

    /// How often `password` appears in the breach corpus; 0 when it does not.
    /// A missing prefix file counts as 0 unless the directory has become empty or
    /// unreadable, which is an error. A malformed line is an error
    /// ([`io::ErrorKind::InvalidData`], naming the file and line, never the
    /// password or its hash).
    pub fn count(&self, password: &str) -> io::Result<u64> {
        let digest = Sha1::digest(password.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
        let (prefix, suffix) = hex.split_at(5);
        let Some((path, file)) = self.open_range(prefix)? else {
            self.ensure_populated()?;
            return Ok(0);
        };
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let line = line?;
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let invalid = || {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: line {} is not SUFFIX:COUNT", path.display(), index + 1),
                )
            };
            let (line_suffix, count) = line.split_once(':').ok_or_else(invalid)?;
            if line_suffix.len() != 35 || !line_suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            if line_suffix.eq_ignore_ascii_case(suffix) {
                return count.trim().parse().map_err(|_| invalid());
            }
        }
        Ok(0)
    }

    /// The range file for `prefix`, if there is one.
    fn open_range(&self, prefix: &str) -> io::Result<Option<(PathBuf, File)>> {
        for name in [prefix.to_string(), format!("{prefix}.txt")] {
            let path = self.dir.join(name);
            match File::open(&path) {
                Ok(file) => return Ok(Some((path, file))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    fn ensure_populated(&self) -> io::Result<()> {
        if self.dir.read_dir()?.next().transpose()?.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} holds no range files", self.dir.display()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Upper-case hex SHA-1, computed independently of `count`.
    fn sha1_hex(s: &str) -> String {
        Sha1::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }

    #[test]
    fn counts_from_the_prefix_file() {
        // The well-known SHA-1 of "password".
        assert_eq!(
            sha1_hex("password"),
            "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8"
        );
        let dir = tempfile::tempdir().unwrap();
        let hit = sha1_hex("password");
        let crlf = sha1_hex("hunter2");
        // A file with LF endings, and one with CRLF and lower-case suffixes.
        std::fs::write(
            dir.path().join(&hit[..5]),
            format!(
                "0018A45C4D1DEF81644B54AB7F969B88D65:1\n{}:9545824\nFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF:2\n",
                &hit[5..]
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("{}.txt", &crlf[..5])),
            format!(
                "00000000000000000000000000000000000:3\r\n{}:17\r\n",
                crlf[5..].to_lowercase()
            ),
        )
        .unwrap();
        let range = RangeDir::open(dir.path()).unwrap();
        assert_eq!(range.count("password").unwrap(), 9_545_824);
        assert_eq!(range.count("hunter2").unwrap(), 17);
        // The prefix file exists, the suffix is not in it.
        let absent = sha1_hex("Absent-From-Breaches-1");
        std::fs::write(
            dir.path().join(&absent[..5]),
            "0018A45C4D1DEF81644B54AB7F969B88D65:1\n",
        )
        .unwrap();
        assert_eq!(range.count("Absent-From-Breaches-1").unwrap(), 0);
        // No prefix file at all: 0, since the directory is populated.
        assert_eq!(range.count("Correct-Horse-Battery-Staple").unwrap(), 0);
    }

    #[test]
    fn an_empty_or_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RangeDir::open(dir.path()).is_err());
        assert!(RangeDir::open(&dir.path().join("nope")).is_err());
        std::fs::write(dir.path().join("00000"), "").unwrap();
        let range = RangeDir::open(dir.path()).unwrap();
        assert_eq!(range.count("password").unwrap(), 0);
        std::fs::remove_file(dir.path().join("00000")).unwrap();
        assert!(range.count("password").is_err());
    }

    #[test]
    fn a_malformed_line_is_invalid_data_without_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let hash = sha1_hex("password");
        std::fs::write(dir.path().join(&hash[..5]), "not a range line\n").unwrap();
        let err = RangeDir::open(dir.path())
            .unwrap()
            .count("password")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("line 1"));
        assert!(!err.to_string().contains(&hash[5..]));
    }
}
