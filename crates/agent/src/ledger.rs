//! The agent's durable ledger: every operation id it began and how each
//! ended, in `ledger.jsonl` in the state directory, so a restarted agent
//! still answers a redelivered operation with its first outcome instead of
//! applying it again, and can tell the control plane "what happened to
//! operation X?" (`OPERATION_KIND_OUTCOME_QUERY`).
//!
//! **Format.** JSON lines, appended and `fsync`ed one record at a time:
//!
//! ```text
//! {"since_ms":1764180000000}                                  header: complete from here
//! {"id":"…","at_ms":…,"begun":{"expires_ms":…,"target":"upn:…","kind":"reset","witness":7}}
//! {"id":"…","at_ms":…,"done":{"reason":"OK","message":"…","applied":true}}
//! {"id":"…","at_ms":…,"forget":true}                           known not applied
//! ```
//!
//! A `begun` without its `done` is an operation the agent stopped in the
//! middle of (a crash around the directory write): it is *in doubt*. Its
//! `witness` is the user's password version before the write (the
//! `unicodePwd` version in its replication metadata, which every password
//! write raises): at start-up the executor reads it again — raised means the
//! write happened (recorded `done`, `OK`), unchanged means it did not (the
//! id is forgotten, so a redelivery runs it). An unlock carries no witness
//! and is simply run again (it is idempotent). Without a readable witness
//! the operation stays in doubt, never run again, and is reported as such.
//! A second write to the same user between the crash and the restart would
//! make the first count as applied: the witness cannot tell writes apart.
//! A torn last line (a crash mid-append) is ignored. No password or envelope
//! is ever written: ids, targets, times, reason codes and the outcome's
//! sentence only.
//!
//! **Bounded by age.** At open, records older than the retention (7 days by
//! default) are dropped and the file is rewritten (to a temporary file,
//! `fsync`ed and renamed over the old one); the header's `since_ms` moves
//! forward with the cutoff, because "never seen" means nothing for an
//! operation older than what the ledger still holds. A long-running agent
//! compacts the same way once the file holds many more lines than records.
//!
//! Hand-written rather than an embedded database: the ledger needs only
//! append, fsync and a rewrite, and a JSON-lines file stays readable with
//! `cat` when an operator investigates an outcome.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use writeback_proto::v1::OperationOutcome;

/// The ledger's file name in the state directory.
pub const FILE_NAME: &str = "ledger.jsonl";
/// How long records are kept by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// A running ledger is compacted when it holds this many more lines than
/// live records.
const COMPACT_SLACK: usize = 100_000;

/// What the ledger knows of one operation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Begun and not finished: running now, or the agent stopped in between.
    Begun(Begun),
    /// Finished with this outcome.
    Done(OperationOutcome),
}

/// An operation about to touch the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Begun {
    /// Its expiry (Unix ms).
    pub expires_ms: i64,
    /// Its target (`upn:…` or `guid:…`).
    #[serde(default)]
    pub target: String,
    /// Its kind (`reset`, `change`, `forced_change`, `unlock`).
    #[serde(default)]
    pub kind: String,
    /// The target's password version before the write, when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    since_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct Record {
    id: String,
    at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    begun: Option<Begun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    done: Option<Done>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    forget: bool,
}

#[derive(Serialize, Deserialize)]
struct Done {
    reason: String,
    message: String,
    applied: bool,
}

struct Slot {
    at_ms: i64,
    entry: Entry,
}

struct Inner {
    path: PathBuf,
    file: File,
    since_ms: i64,
    records: HashMap<String, Slot>,
    lines: usize,
    retention: Duration,
}

/// The ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Mutex<Inner>>,
}

/// Why the ledger cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("operation ledger {path}: {source}")]
pub struct LedgerError {
    path: String,
    #[source]
    source: std::io::Error,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Ledger {
    /// Opens (or creates) the ledger in `state_dir`, dropping records older
    /// than `retention`.
    pub fn open(state_dir: &Path, retention: Duration) -> Result<Ledger, LedgerError> {
        let path = state_dir.join(FILE_NAME);
        let err = |source| LedgerError {
            path: path.display().to_string(),
            source,
        };
        let now = now_ms();
        let cutoff = now.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        let (since_ms, records) = match File::open(&path) {
            Ok(f) => read(f, cutoff),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (now, HashMap::new()),
            Err(e) => return Err(err(e)),
        };
        let file = rewrite(&path, since_ms, &records).map_err(err)?;
        tracing::info!(records = records.len(), since_ms, "operation ledger opened");
        Ok(Ledger {
            inner: Arc::new(Mutex::new(Inner {
                path: path.clone(),
                file,
                since_ms,
                lines: records.len() + 1,
                records,
                retention,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the ledger knows of `id`.
    pub fn get(&self, id: &str) -> Option<Entry> {
        self.lock().records.get(id).map(|s| s.entry.clone())
    }

    /// The instant from which the ledger is complete (Unix ms).
    pub fn since_ms(&self) -> i64 {
        self.lock().since_ms
    }

    /// Durably records that `id` is about to touch the directory.
    pub async fn begin(&self, id: &str, begun: Begun) -> Result<(), LedgerError> {
        let record = Record {
            id: id.to_owned(),
            at_ms: now_ms(),
            begun: Some(begun.clone()),
            done: None,
            forget: false,
        };
        self.append(record, Some(Entry::Begun(begun))).await
    }

    /// Durably records how `id` ended.
    pub async fn finish(&self, id: &str, outcome: &OperationOutcome) -> Result<(), LedgerError> {
        let record = Record {
            id: id.to_owned(),
            at_ms: now_ms(),
            begun: None,
            done: Some(Done {
                reason: outcome.reason_code.clone(),
                message: outcome.message.clone(),
                applied: outcome.applied,
            }),
            forget: false,
        };
        self.append(record, Some(Entry::Done(outcome.clone())))
            .await
    }

    /// Durably forgets `id`, begun and known not to have been applied, so
    /// a redelivery runs it.
    pub async fn forget(&self, id: &str) -> Result<(), LedgerError> {
        let record = Record {
            id: id.to_owned(),
            at_ms: now_ms(),
            begun: None,
            done: None,
            forget: true,
        };
        self.append(record, None).await
    }

    /// The operations begun and never finished.
    pub fn in_doubt(&self) -> Vec<(String, Begun)> {
        self.lock()
            .records
            .iter()
            .filter_map(|(id, s)| match &s.entry {
                Entry::Begun(b) => Some((id.clone(), b.clone())),
                Entry::Done(_) => None,
            })
            .collect()
    }

    async fn append(&self, record: Record, entry: Option<Entry>) -> Result<(), LedgerError> {
        let ledger = self.clone();
        // A write and an fsync: off the async threads.
        tokio::task::spawn_blocking(move || ledger.append_blocking(&record, entry))
            .await
            .unwrap_or_else(|e| {
                Err(LedgerError {
                    path: FILE_NAME.to_owned(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    fn append_blocking(&self, record: &Record, entry: Option<Entry>) -> Result<(), LedgerError> {
        let mut inner = self.lock();
        let err = |path: &Path, source| LedgerError {
            path: path.display().to_string(),
            source,
        };
        let mut line = serde_json::to_vec(record).map_err(|e| err(&inner.path, e.into()))?;
        line.push(b'\n');
        let written = inner
            .file
            .write_all(&line)
            .and_then(|()| inner.file.sync_data());
        if let Err(e) = written {
            return Err(err(&inner.path, e));
        }
        inner.lines += 1;
        match entry {
            Some(entry) => {
                inner.records.insert(
                    record.id.clone(),
                    Slot {
                        at_ms: record.at_ms,
                        entry,
                    },
                );
            }
            None => {
                inner.records.remove(&record.id);
            }
        }
        if inner.lines > inner.records.len() + COMPACT_SLACK {
            compact(&mut inner).map_err(|e| err(&inner.path, e))?;
        }
        Ok(())
    }
}

/// Drops records older than the retention and rewrites the file.
fn compact(inner: &mut Inner) -> std::io::Result<()> {
    let cutoff =
        now_ms().saturating_sub(i64::try_from(inner.retention.as_millis()).unwrap_or(i64::MAX));
    inner.records.retain(|_, s| s.at_ms >= cutoff);
    inner.since_ms = inner.since_ms.max(cutoff);
    inner.file = rewrite(&inner.path, inner.since_ms, &inner.records)?;
    inner.lines = inner.records.len() + 1;
    Ok(())
}

/// Reads a ledger file: its `since_ms` (moved up to `cutoff` when older
/// records are dropped) and the records at or after `cutoff`. Lines that do
/// not parse — a torn last append — are skipped.
fn read(file: impl Read, cutoff: i64) -> (i64, HashMap<String, Slot>) {
    let mut since_ms = None;
    let mut records: HashMap<String, Slot> = HashMap::new();
    let mut skipped = 0usize;
    for line in BufReader::new(file).split(b'\n') {
        let Ok(line) = line else { break };
        if line.is_empty() {
            continue;
        }
        if since_ms.is_none()
            && let Ok(h) = serde_json::from_slice::<Header>(&line)
        {
            since_ms = Some(h.since_ms);
            continue;
        }
        let Ok(r) = serde_json::from_slice::<Record>(&line) else {
            skipped += 1;
            continue;
        };
        if r.forget {
            records.remove(&r.id);
            continue;
        }
        let entry = match (r.begun, r.done) {
            (_, Some(d)) => Entry::Done(OperationOutcome {
                reason_code: d.reason,
                message: d.message,
                applied: d.applied,
            }),
            (Some(b), None) => {
                // A later `done` wins; a `begun` never demotes one.
                if records
                    .get(&r.id)
                    .is_some_and(|s| matches!(s.entry, Entry::Done(_)))
                {
                    continue;
                }
                Entry::Begun(b)
            }
            (None, None) => continue,
        };
        records.insert(
            r.id,
            Slot {
                at_ms: r.at_ms,
                entry,
            },
        );
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "operation ledger: skipped lines that do not parse (a torn write)"
        );
    }
    // No header: written by nothing we know; complete from its first record.
    let first = records.values().map(|s| s.at_ms).min().unwrap_or(cutoff);
    let since = since_ms.unwrap_or(first);
    let before = records.len();
    records.retain(|_, s| s.at_ms >= cutoff);
    let since = if records.len() < before || since < cutoff {
        since.max(cutoff)
    } else {
        since
    };
    (since, records)
}

/// The fuzz target's entry point (`fuzz/fuzz_targets/ledger.rs`): reads
/// `bytes` as a ledger file, as [`Ledger::open`] does, and checks that every
/// record kept is at or after the cutoff and that `since_ms` (from when the
/// ledger claims to be complete) never reaches back before it. Not an API.
#[doc(hidden)]
pub fn fuzz_read(bytes: &[u8]) {
    let cutoff = 1_764_000_000_000;
    let (since, records) = read(bytes, cutoff);
    for (id, slot) in &records {
        assert!(slot.at_ms >= cutoff, "{id}: a record older than the cutoff");
    }
    assert!(
        since >= cutoff,
        "since_ms {since} reaches back before the cutoff"
    );
}

/// Writes `records` to a fresh file beside `path`, fsyncs it, renames it
/// over `path` and fsyncs the directory; returns the file open for appends.
fn rewrite(path: &Path, since_ms: i64, records: &HashMap<String, Slot>) -> std::io::Result<File> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut out = std::io::BufWriter::new(
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?,
        );
        serde_json::to_writer(&mut out, &Header { since_ms })?;
        out.write_all(b"\n")?;
        let mut sorted: Vec<(&String, &Slot)> = records.iter().collect();
        sorted.sort_by_key(|(_, s)| s.at_ms);
        for (id, slot) in sorted {
            let record = match &slot.entry {
                Entry::Begun(b) => Record {
                    id: id.clone(),
                    at_ms: slot.at_ms,
                    begun: Some(b.clone()),
                    done: None,
                    forget: false,
                },
                Entry::Done(o) => Record {
                    id: id.clone(),
                    at_ms: slot.at_ms,
                    begun: None,
                    done: Some(Done {
                        reason: o.reason_code.clone(),
                        message: o.message.clone(),
                        applied: o.applied,
                    }),
                    forget: false,
                },
            };
            serde_json::to_writer(&mut out, &record)?;
            out.write_all(b"\n")?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ok() -> OperationOutcome {
        OperationOutcome {
            reason_code: "OK".into(),
            message: "the password was reset".into(),
            applied: true,
        }
    }

    fn begun() -> Begun {
        Begun {
            expires_ms: 1,
            target: "upn:alice@contoso.test".into(),
            kind: "reset".into(),
            witness: Some(3),
        }
    }

    #[tokio::test]
    async fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), DEFAULT_RETENTION).unwrap();
        let since = ledger.since_ms();
        assert!(since > 0);
        ledger.begin("op-1", begun()).await.unwrap();
        ledger.finish("op-1", &ok()).await.unwrap();
        ledger.begin("op-2", begun()).await.unwrap();
        ledger.begin("op-4", begun()).await.unwrap();
        ledger.forget("op-4").await.unwrap();
        assert_eq!(ledger.get("op-3"), None);
        assert_eq!(ledger.get("op-4"), None);
        drop(ledger);
        let again = Ledger::open(dir.path(), DEFAULT_RETENTION).unwrap();
        assert_eq!(again.get("op-1"), Some(Entry::Done(ok())));
        // Begun and never finished: in doubt, with its witness, still after
        // the reopen; a forgotten one is gone.
        assert_eq!(again.get("op-2"), Some(Entry::Begun(begun())));
        assert_eq!(again.in_doubt(), vec![("op-2".to_owned(), begun())]);
        assert_eq!(again.get("op-4"), None);
        assert_eq!(again.since_ms(), since);
    }

    #[tokio::test]
    async fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), DEFAULT_RETENTION).unwrap();
        ledger.begin("op-1", begun()).await.unwrap();
        ledger.finish("op-1", &ok()).await.unwrap();
        drop(ledger);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        f.write_all(br#"{"id":"op-2","at_ms":1"#).unwrap();
        drop(f);
        let again = Ledger::open(dir.path(), DEFAULT_RETENTION).unwrap();
        assert_eq!(again.get("op-1"), Some(Entry::Done(ok())));
        assert_eq!(again.get("op-2"), None);
        // The rewrite at open removed the torn line: appends parse again.
        again.begin("op-3", begun()).await.unwrap();
        drop(again);
        let third = Ledger::open(dir.path(), DEFAULT_RETENTION).unwrap();
        assert_eq!(third.get("op-3"), Some(Entry::Begun(begun())));
    }

    /// A ledger file with seeded random garbage between valid records
    /// (torn writes, a disk that returned junk): opening it never panics,
    /// and every valid record is still read.
    #[tokio::test]
    async fn garbage_lines_never_panic_and_lose_no_valid_record() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x1ed9e7);
        for round in 0..50 {
            let dir = tempfile::tempdir().unwrap();
            let now = now_ms();
            let mut text = Vec::new();
            let mut valid = Vec::new();
            for i in 0..20 {
                if rng.random_bool(0.5) {
                    let line = format!(
                        "{{\"id\":\"op-{round}-{i}\",\"at_ms\":{now},\"done\":{{\"reason\":\"OK\",\"message\":\"m\",\"applied\":true}}}}\n"
                    );
                    text.extend_from_slice(line.as_bytes());
                    valid.push(format!("op-{round}-{i}"));
                } else {
                    let len = rng.random_range(0..80);
                    let junk: Vec<u8> = (0..len)
                        .map(|_| rng.random::<u8>())
                        .filter(|b| *b != b'\n')
                        .collect();
                    text.extend_from_slice(&junk);
                    text.push(b'\n');
                }
            }
            std::fs::write(dir.path().join(FILE_NAME), &text).unwrap();
            let ledger = Ledger::open(dir.path(), DEFAULT_RETENTION).unwrap();
            for id in &valid {
                assert!(
                    matches!(ledger.get(id), Some(Entry::Done(_))),
                    "round {round}: {id} lost"
                );
            }
        }
    }

    #[tokio::test]
    async fn old_records_are_dropped_and_since_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let old = now_ms() - 10 * 24 * 3600 * 1000;
        std::fs::write(
            &path,
            format!(
                "{{\"since_ms\":{old}}}\n{{\"id\":\"old\",\"at_ms\":{old},\"done\":{{\"reason\":\"OK\",\"message\":\"\",\"applied\":true}}}}\n"
            ),
        )
        .unwrap();
        let ledger = Ledger::open(dir.path(), DEFAULT_RETENTION).unwrap();
        assert_eq!(ledger.get("old"), None);
        // "Never seen" must not be claimed for the dropped days.
        assert!(ledger.since_ms() > old + 2 * 24 * 3600 * 1000);
    }
}
