//! The sandbox's record of every submission it received: the evidence that Parley hands each
//! message to the carrier exactly once, even across crashes and restarts.
//!
//! With a file, each submission appends one line `<message_id> <attempt> <outcome>` with a single
//! `write_all` on an `O_APPEND` file. No fsync: the point is to survive a crash of the Parley
//! process, and the kernel keeps a completed write when a process dies.

use parley_domain::MessageId;
use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// What the sandbox did with one submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubmissionOutcome {
    /// Taken for the first time.
    Accepted,
    /// The message id had already been accepted: answered `Accepted` again, not sent again.
    Duplicate,
    /// Refused this time (temporary failure or rate limit).
    Transient,
    /// Refused for good.
    Permanent,
}

impl SubmissionOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SubmissionOutcome::Accepted => "accepted",
            SubmissionOutcome::Duplicate => "duplicate",
            SubmissionOutcome::Transient => "transient",
            SubmissionOutcome::Permanent => "permanent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(SubmissionOutcome::Accepted),
            "duplicate" => Some(SubmissionOutcome::Duplicate),
            "transient" => Some(SubmissionOutcome::Transient),
            "permanent" => Some(SubmissionOutcome::Permanent),
            _ => None,
        }
    }
}

impl fmt::Display for SubmissionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One submission the sandbox received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submission {
    pub message_id: MessageId,
    pub attempt: i32,
    pub outcome: SubmissionOutcome,
}

/// How [`SubmissionLedger::submit`] recorded a submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// The proposed outcome was recorded (accepted, transient or permanent).
    As(SubmissionOutcome),
    /// The id had been accepted before. `reschedule` is true the first time this happens for an
    /// acceptance read from the file: the process that held its receipt timers is gone, and a
    /// real carrier would still report on the message.
    Duplicate { reschedule: bool },
}

#[derive(Clone, Copy, Debug)]
struct AcceptedEntry {
    /// `accepted` records for this id; more than one means exactly-once was broken.
    count: usize,
    /// Accepted in an earlier run, and no receipts scheduled for it in this one yet.
    needs_receipts: bool,
}

#[derive(Default)]
struct Inner {
    file: Option<File>,
    records: Vec<Submission>,
    accepted: HashMap<MessageId, AcceptedEntry>,
    /// Distinct accepted ids in the order of their first acceptance.
    accepted_order: Vec<MessageId>,
    accepted_records: usize,
}

impl Inner {
    fn apply(&mut self, submission: Submission, earlier_run: bool) {
        if submission.outcome == SubmissionOutcome::Accepted {
            self.accepted_records += 1;
            let entry = self
                .accepted
                .entry(submission.message_id)
                .or_insert_with(|| AcceptedEntry { count: 0, needs_receipts: earlier_run });
            if entry.count == 0 {
                self.accepted_order.push(submission.message_id);
            }
            entry.count += 1;
        }
        self.records.push(submission);
    }
}

/// Every submission the sandbox received, in order; optionally kept in a file across restarts.
/// Shared by all sandbox connectors of a process. Thread-safe; each call takes one short lock.
pub struct SubmissionLedger {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

impl fmt::Debug for SubmissionLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmissionLedger").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SubmissionLedger {
    /// A ledger kept in memory only (`path = None`), or appended to the file at `path`, whose
    /// earlier records (from previous runs) are loaded first.
    pub fn open(path: Option<PathBuf>) -> io::Result<Self> {
        let mut inner = Inner::default();
        if let Some(path) = &path {
            // The data directory may not exist yet (on PostgreSQL nothing else creates it).
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
            let mut text = String::new();
            file.read_to_string(&mut text)?;
            // A crash may have torn the last line: cut it off so that ours start on a line of
            // their own (only complete lines were ever acknowledged to anyone).
            let complete = text.rfind('\n').map_or(0, |i| i + 1);
            if complete < text.len() {
                tracing::warn!(path = %path.display(), "cutting a torn last line off the sandbox ledger");
                file.set_len(complete as u64)?;
                text.truncate(complete);
            }
            for submission in parse_records(path, &text)? {
                inner.apply(submission, true);
            }
            inner.file = Some(file);
        }
        Ok(SubmissionLedger { path, inner: Mutex::new(inner) })
    }

    /// A ledger in memory only.
    pub fn in_memory() -> Self {
        SubmissionLedger { path: None, inner: Mutex::new(Inner::default()) }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The number of `accepted` records (equal to the number of distinct accepted ids while
    /// exactly-once holds).
    pub fn accepted_count(&self) -> usize {
        self.lock().accepted_records
    }

    /// The distinct accepted message ids, in the order they were first accepted.
    pub fn accepted_ids(&self) -> Vec<MessageId> {
        self.lock().accepted_order.clone()
    }

    /// Every record, oldest first (those of earlier runs included, when there is a file).
    pub fn submissions(&self) -> Vec<Submission> {
        self.lock().records.clone()
    }

    /// The number of `accepted` records for `message_id`: 0 or 1 unless exactly-once was broken.
    pub fn count_for(&self, message_id: &MessageId) -> usize {
        self.lock().accepted.get(message_id).map_or(0, |e| e.count)
    }

    /// Whether `message_id` has been accepted.
    pub fn is_accepted(&self, message_id: &MessageId) -> bool {
        self.count_for(message_id) > 0
    }

    /// Record a submission, atomically with the duplicate check: if the id was accepted before,
    /// a `duplicate` is recorded instead of `proposed`. When the file cannot be written nothing
    /// is recorded and the error is returned.
    pub(crate) fn submit(
        &self,
        message_id: MessageId,
        attempt: i32,
        proposed: SubmissionOutcome,
    ) -> io::Result<Recorded> {
        let mut inner = self.lock();
        let (outcome, recorded) = match inner.accepted.get(&message_id) {
            Some(entry) => (SubmissionOutcome::Duplicate, Recorded::Duplicate { reschedule: entry.needs_receipts }),
            None => (proposed, Recorded::As(proposed)),
        };
        if let Some(file) = inner.file.as_mut() {
            // One write per line so that concurrent writers and crashes never interleave lines.
            file.write_all(format!("{message_id} {attempt} {outcome}\n").as_bytes())?;
        }
        if let Some(entry) = inner.accepted.get_mut(&message_id) {
            entry.needs_receipts = false;
        }
        inner.apply(Submission { message_id, attempt, outcome }, false);
        Ok(recorded)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the data consistent (each update is one push).
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn parse_records(path: &Path, text: &str) -> io::Result<Vec<Submission>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let submission = parse_line(line).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}:{}: not a sandbox ledger line (expected '<message_id> <attempt> <outcome>'): '{}'",
                    path.display(),
                    i + 1,
                    line.chars().take(120).collect::<String>()
                ),
            )
        })?;
        out.push(submission);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Option<Submission> {
    let mut parts = line.split(' ');
    let message_id = MessageId::parse(parts.next()?).ok()?;
    let attempt = parts.next()?.parse().ok()?;
    let outcome = SubmissionOutcome::parse(parts.next()?)?;
    parts.next().is_none().then_some(Submission { message_id, attempt, outcome })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_ledger_counts_and_refuses_duplicates() {
        let ledger = SubmissionLedger::open(None).unwrap();
        let a = MessageId::new();
        let b = MessageId::new();
        assert_eq!(
            ledger.submit(a, 1, SubmissionOutcome::Transient).unwrap(),
            Recorded::As(SubmissionOutcome::Transient)
        );
        assert_eq!(
            ledger.submit(a, 2, SubmissionOutcome::Accepted).unwrap(),
            Recorded::As(SubmissionOutcome::Accepted)
        );
        assert_eq!(
            ledger.submit(a, 3, SubmissionOutcome::Accepted).unwrap(),
            Recorded::Duplicate { reschedule: false }
        );
        assert_eq!(
            ledger.submit(b, 1, SubmissionOutcome::Permanent).unwrap(),
            Recorded::As(SubmissionOutcome::Permanent)
        );
        assert_eq!(ledger.count_for(&a), 1);
        assert_eq!(ledger.count_for(&b), 0);
        assert_eq!(ledger.accepted_count(), 1);
        assert_eq!(ledger.accepted_ids(), vec![a]);
        let outcomes: Vec<_> = ledger.submissions().iter().map(|s| (s.attempt, s.outcome)).collect();
        assert_eq!(
            outcomes,
            vec![
                (1, SubmissionOutcome::Transient),
                (2, SubmissionOutcome::Accepted),
                (3, SubmissionOutcome::Duplicate),
                (1, SubmissionOutcome::Permanent)
            ]
        );
    }

    #[test]
    fn file_ledger_survives_reopen_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.txt");
        let a = MessageId::new();
        let b = MessageId::new();
        {
            let ledger = SubmissionLedger::open(Some(path.clone())).unwrap();
            ledger.submit(a, 1, SubmissionOutcome::Accepted).unwrap();
            ledger.submit(b, 1, SubmissionOutcome::Transient).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{a} 1 accepted\n{b} 1 transient\n"));

        let ledger = SubmissionLedger::open(Some(path.clone())).unwrap();
        assert_eq!(ledger.path(), Some(path.as_path()));
        assert_eq!(ledger.accepted_ids(), vec![a]);
        assert_eq!(ledger.submissions().len(), 2);
        assert_eq!(ledger.submit(a, 2, SubmissionOutcome::Accepted).unwrap(), Recorded::Duplicate { reschedule: true });
        assert_eq!(
            ledger.submit(a, 3, SubmissionOutcome::Accepted).unwrap(),
            Recorded::Duplicate { reschedule: false }
        );
        assert_eq!(
            ledger.submit(b, 2, SubmissionOutcome::Accepted).unwrap(),
            Recorded::As(SubmissionOutcome::Accepted)
        );
        assert_eq!(ledger.count_for(&a), 1);
        assert_eq!(ledger.count_for(&b), 1);
        drop(ledger);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with(&format!("{a} 2 duplicate\n{a} 3 duplicate\n{b} 2 accepted\n")), "{text}");
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_later_lines_start_clean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.txt");
        let a = MessageId::new();
        std::fs::write(&path, format!("{a} 1 accepted\nmsg_01")).unwrap();
        let ledger = SubmissionLedger::open(Some(path.clone())).unwrap();
        assert_eq!(ledger.accepted_count(), 1);
        let b = MessageId::new();
        ledger.submit(b, 1, SubmissionOutcome::Accepted).unwrap();
        drop(ledger);
        let reopened = SubmissionLedger::open(Some(path.clone())).unwrap();
        assert_eq!(reopened.accepted_ids(), vec![a, b]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{a} 1 accepted\n{b} 1 accepted\n"));
    }

    #[test]
    fn a_foreign_file_is_refused_with_its_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.txt");
        std::fs::write(&path, "hello world\nmore\n").unwrap();
        let err = SubmissionLedger::open(Some(path)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(":1:"), "{err}");
    }

    #[test]
    fn a_double_acceptance_in_the_file_is_visible() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.txt");
        let a = MessageId::new();
        std::fs::write(&path, format!("{a} 1 accepted\n{a} 2 accepted\n")).unwrap();
        let ledger = SubmissionLedger::open(Some(path)).unwrap();
        assert_eq!(ledger.count_for(&a), 2);
        assert_eq!(ledger.accepted_count(), 2);
        assert_eq!(ledger.accepted_ids(), vec![a]);
    }
}
