//! The sandbox's record of every submission it received: the evidence that Parley hands each
//! message to the carrier exactly once, even across crashes and restarts.
//!
//! With a file, each submission appends one line `<message_id> <attempt> <outcome>` with a single
//! `write_all` on an `O_APPEND` file. No fsync: the point is to survive a crash of the Parley
//! process, and the kernel keeps a completed write when a process dies.

use parley_domain::{ChannelAccountId, MessageId};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
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
    /// The sandbox account it was sent through (absent in ledgers written before routes: one
    /// message is sent once per account, so a route's fallback to another account is no repeat).
    pub account: Option<ChannelAccountId>,
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

/// How many accepted ids the ledger remembers in memory for its duplicate check. A repeat comes
/// from a claim whose outcome was lost (a crash, a lease that ran out), so it follows its first
/// acceptance within a lease or so; half a million covers a 30 s lease at over 15,000 sends/s in
/// about 25 MB. A repeat of an older id is recorded as a second `accepted`, which the file (and
/// [`SubmissionLedger::accepted_count`]) still shows.
pub const REMEMBERED_IDS: usize = 500_000;

#[derive(Clone, Copy, Debug)]
struct AcceptedEntry {
    /// `accepted` records for this id; more than one means exactly-once was broken.
    count: u32,
    /// Accepted in an earlier run, and no receipts scheduled for it in this one yet.
    needs_receipts: bool,
}

struct Inner {
    file: Option<File>,
    /// Without a file: the latest records, at most `capacity`.
    records: VecDeque<Submission>,
    /// The latest accepted (id, account) pairs, at most `capacity`, and the order they were
    /// first accepted in; and per message id, its `accepted` records among them.
    accepted: HashMap<(MessageId, Option<ChannelAccountId>), AcceptedEntry>,
    accepted_order: VecDeque<(MessageId, Option<ChannelAccountId>)>,
    per_message: HashMap<MessageId, u32>,
    accepted_records: usize,
    capacity: usize,
}

impl Inner {
    fn new(capacity: usize) -> Self {
        Inner {
            file: None,
            records: VecDeque::new(),
            accepted: HashMap::new(),
            accepted_order: VecDeque::new(),
            per_message: HashMap::new(),
            accepted_records: 0,
            capacity,
        }
    }

    fn apply(&mut self, submission: Submission, earlier_run: bool) {
        if submission.outcome == SubmissionOutcome::Accepted {
            self.accepted_records += 1;
            let key = (submission.message_id, submission.account);
            let entry = self.accepted.entry(key).or_insert(AcceptedEntry { count: 0, needs_receipts: earlier_run });
            if entry.count == 0 {
                self.accepted_order.push_back(key);
            }
            entry.count += 1;
            *self.per_message.entry(submission.message_id).or_default() += 1;
            if self.accepted_order.len() > self.capacity
                && let Some(oldest) = self.accepted_order.pop_front()
                && let Some(gone) = self.accepted.remove(&oldest)
                && let Some(total) = self.per_message.get_mut(&oldest.0)
            {
                *total = total.saturating_sub(gone.count);
                if *total == 0 {
                    self.per_message.remove(&oldest.0);
                }
            }
        }
        if self.file.is_none() && !earlier_run {
            self.records.push_back(submission);
            if self.records.len() > self.capacity {
                self.records.pop_front();
            }
        }
    }
}

/// Every submission the sandbox received, in order; optionally kept in a file across restarts.
/// Shared by all sandbox connectors of a process. Thread-safe; each call takes one short lock.
///
/// Memory stays bounded: the duplicate check remembers the latest [`REMEMBERED_IDS`] accepted
/// ids. With a file, the records are read back from it when asked for; without one, the latest
/// [`REMEMBERED_IDS`] records are kept.
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
    /// earlier records (from previous runs) are read first.
    pub fn open(path: Option<PathBuf>) -> io::Result<Self> {
        Self::with_capacity(path, REMEMBERED_IDS)
    }

    fn with_capacity(path: Option<PathBuf>, capacity: usize) -> io::Result<Self> {
        let mut inner = Inner::new(capacity);
        if let Some(path) = &path {
            // The data directory may not exist yet (on PostgreSQL nothing else creates it).
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
            // A crash may have torn the last line: cut it off so that ours start on a line of
            // their own (only complete lines were ever acknowledged to anyone).
            let complete = read_records(path, &file, |submission| inner.apply(submission, true))?;
            if complete < file.metadata()?.len() {
                tracing::warn!(path = %path.display(), "cutting a torn last line off the sandbox ledger");
                file.set_len(complete)?;
            }
            inner.file = Some(file);
        }
        Ok(SubmissionLedger { path, inner: Mutex::new(inner) })
    }

    /// A ledger in memory only.
    pub fn in_memory() -> Self {
        SubmissionLedger { path: None, inner: Mutex::new(Inner::new(REMEMBERED_IDS)) }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The number of `accepted` records (equal to the number of distinct accepted ids while
    /// exactly-once holds).
    pub fn accepted_count(&self) -> usize {
        self.lock().accepted_records
    }

    /// The distinct accepted message ids, in the order they were first accepted: all of them with
    /// a file, the latest [`REMEMBERED_IDS`] without.
    pub fn accepted_ids(&self) -> Vec<MessageId> {
        if self.path.is_none() {
            let mut seen = HashSet::new();
            return self.lock().accepted_order.iter().map(|(id, _)| *id).filter(|id| seen.insert(*id)).collect();
        }
        let mut seen = HashSet::new();
        let records = self.submissions();
        records
            .into_iter()
            .filter(|s| s.outcome == SubmissionOutcome::Accepted && seen.insert(s.message_id))
            .map(|s| s.message_id)
            .collect()
    }

    /// Every record, oldest first: with a file, read back from it (those of earlier runs
    /// included); without, the latest [`REMEMBERED_IDS`].
    pub fn submissions(&self) -> Vec<Submission> {
        let inner = self.lock();
        match (&self.path, &inner.file) {
            (Some(path), Some(file)) => {
                let mut out = Vec::new();
                // Under the lock: no line is being appended while the file is read.
                match read_records(path, file, |submission| out.push(submission)) {
                    Ok(_) => out,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the sandbox ledger back");
                        out
                    }
                }
            }
            _ => inner.records.iter().copied().collect(),
        }
    }

    /// The number of `accepted` records for `message_id` among those the ledger remembers, over
    /// every account: 0 or 1 unless exactly-once was broken (or a route fell back to another
    /// sandbox account, which takes it once more).
    pub fn count_for(&self, message_id: &MessageId) -> usize {
        self.lock().per_message.get(message_id).map_or(0, |n| *n as usize)
    }

    /// Whether `message_id` has been accepted through `account` (as far as the ledger remembers).
    pub fn is_accepted(&self, message_id: &MessageId, account: ChannelAccountId) -> bool {
        let inner = self.lock();
        inner.accepted.contains_key(&(*message_id, Some(account))) || inner.accepted.contains_key(&(*message_id, None))
    }

    /// Record a submission, atomically with the duplicate check: if the id was accepted before,
    /// a `duplicate` is recorded instead of `proposed`. When the file cannot be written nothing
    /// is recorded and the error is returned.
    pub(crate) fn submit(
        &self,
        message_id: MessageId,
        account: ChannelAccountId,
        attempt: i32,
        proposed: SubmissionOutcome,
    ) -> io::Result<Recorded> {
        let mut inner = self.lock();
        // An acceptance recorded before accounts were (`None`) counts for every account.
        let key = [(message_id, Some(account)), (message_id, None)]
            .into_iter()
            .find(|k| inner.accepted.contains_key(k))
            .unwrap_or((message_id, Some(account)));
        let (outcome, recorded) = match inner.accepted.get(&key) {
            Some(entry) => (SubmissionOutcome::Duplicate, Recorded::Duplicate { reschedule: entry.needs_receipts }),
            None => (proposed, Recorded::As(proposed)),
        };
        if let Some(file) = inner.file.as_mut() {
            // One write per line so that concurrent writers and crashes never interleave lines.
            file.write_all(format!("{message_id} {attempt} {outcome} {account}\n").as_bytes())?;
        }
        if let Some(entry) = inner.accepted.get_mut(&key) {
            entry.needs_receipts = false;
        }
        inner.apply(Submission { message_id, account: Some(account), attempt, outcome }, false);
        Ok(recorded)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the data consistent (each update is one push).
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Hand every complete line of the ledger file to `each`, streaming (the file can be large), and
/// return the length of the complete lines: anything after it is a torn last line.
fn read_records(path: &Path, file: &File, mut each: impl FnMut(Submission)) -> io::Result<u64> {
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(0))?;
    let (mut complete, mut line, mut number) = (0u64, String::new(), 0usize);
    loop {
        line.clear();
        let read = reader.read_line(&mut line)?;
        if read == 0 || !line.ends_with('\n') {
            return Ok(complete);
        }
        number += 1;
        complete += read as u64;
        let text = line.trim_end_matches('\n');
        if text.trim().is_empty() {
            continue;
        }
        let submission = parse_line(text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}:{}: not a sandbox ledger line (expected '<message_id> <attempt> <outcome> [<account>]'): '{}'",
                    path.display(),
                    number,
                    text.chars().take(120).collect::<String>()
                ),
            )
        })?;
        each(submission);
    }
}

fn parse_line(line: &str) -> Option<Submission> {
    let mut parts = line.split(' ');
    let message_id = MessageId::parse(parts.next()?).ok()?;
    let attempt = parts.next()?.parse().ok()?;
    let outcome = SubmissionOutcome::parse(parts.next()?)?;
    let account = match parts.next() {
        None => None,
        Some(a) => Some(ChannelAccountId::parse(a).ok()?),
    };
    parts.next().is_none().then_some(Submission { message_id, account, attempt, outcome })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one sandbox account of these tests.
    fn account() -> ChannelAccountId {
        static ACCOUNT: std::sync::LazyLock<ChannelAccountId> = std::sync::LazyLock::new(ChannelAccountId::new);
        *ACCOUNT
    }

    #[test]
    fn one_message_is_taken_once_per_account() {
        let ledger = SubmissionLedger::open(None).unwrap();
        let id = MessageId::new();
        let other = ChannelAccountId::new();
        assert_eq!(
            ledger.submit(id, account(), 1, SubmissionOutcome::Accepted).unwrap(),
            Recorded::As(SubmissionOutcome::Accepted)
        );
        // A route's fallback to another account is a new hand-off, not a repeat.
        assert_eq!(
            ledger.submit(id, other, 1, SubmissionOutcome::Accepted).unwrap(),
            Recorded::As(SubmissionOutcome::Accepted)
        );
        assert!(matches!(
            ledger.submit(id, other, 2, SubmissionOutcome::Accepted).unwrap(),
            Recorded::Duplicate { .. }
        ));
        assert_eq!(ledger.count_for(&id), 2);
        assert!(ledger.is_accepted(&id, other) && ledger.is_accepted(&id, account()));
        assert_eq!(ledger.accepted_ids(), vec![id]);
    }

    #[test]
    fn lines_without_an_account_are_still_read() {
        let id = MessageId::new();
        let line = parse_line(&format!("{id} 1 accepted")).unwrap();
        assert_eq!((line.message_id, line.account), (id, None));
        let with = parse_line(&format!("{id} 1 accepted {}", account())).unwrap();
        assert_eq!(with.account, Some(account()));
        assert!(parse_line(&format!("{id} 1 accepted not-an-account")).is_none());
    }

    #[test]
    fn in_memory_ledger_counts_and_refuses_duplicates() {
        let ledger = SubmissionLedger::open(None).unwrap();
        let a = MessageId::new();
        let b = MessageId::new();
        assert_eq!(
            ledger.submit(a, account(), 1, SubmissionOutcome::Transient).unwrap(),
            Recorded::As(SubmissionOutcome::Transient)
        );
        assert_eq!(
            ledger.submit(a, account(), 2, SubmissionOutcome::Accepted).unwrap(),
            Recorded::As(SubmissionOutcome::Accepted)
        );
        assert_eq!(
            ledger.submit(a, account(), 3, SubmissionOutcome::Accepted).unwrap(),
            Recorded::Duplicate { reschedule: false }
        );
        assert_eq!(
            ledger.submit(b, account(), 1, SubmissionOutcome::Permanent).unwrap(),
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
            ledger.submit(a, account(), 1, SubmissionOutcome::Accepted).unwrap();
            ledger.submit(b, account(), 1, SubmissionOutcome::Transient).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let acc = account();
        assert_eq!(text, format!("{a} 1 accepted {acc}\n{b} 1 transient {acc}\n"));

        let ledger = SubmissionLedger::open(Some(path.clone())).unwrap();
        assert_eq!(ledger.path(), Some(path.as_path()));
        assert_eq!(ledger.accepted_ids(), vec![a]);
        assert_eq!(ledger.submissions().len(), 2);
        assert_eq!(
            ledger.submit(a, account(), 2, SubmissionOutcome::Accepted).unwrap(),
            Recorded::Duplicate { reschedule: true }
        );
        assert_eq!(
            ledger.submit(a, account(), 3, SubmissionOutcome::Accepted).unwrap(),
            Recorded::Duplicate { reschedule: false }
        );
        assert_eq!(
            ledger.submit(b, account(), 2, SubmissionOutcome::Accepted).unwrap(),
            Recorded::As(SubmissionOutcome::Accepted)
        );
        assert_eq!(ledger.count_for(&a), 1);
        assert_eq!(ledger.count_for(&b), 1);
        drop(ledger);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with(&format!("{a} 2 duplicate {acc}\n{a} 3 duplicate {acc}\n{b} 2 accepted {acc}\n")),
            "{text}"
        );
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
        ledger.submit(b, account(), 1, SubmissionOutcome::Accepted).unwrap();
        drop(ledger);
        let reopened = SubmissionLedger::open(Some(path.clone())).unwrap();
        assert_eq!(reopened.accepted_ids(), vec![a, b]);
        let acc = account();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{a} 1 accepted\n{b} 1 accepted {acc}\n"));
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

    #[test]
    fn memory_is_bounded_and_the_file_keeps_everything() {
        let ids: Vec<MessageId> = (0..5).map(|_| MessageId::new()).collect();
        let ledger = SubmissionLedger::with_capacity(None, 3).unwrap();
        for id in &ids {
            ledger.submit(*id, account(), 1, SubmissionOutcome::Accepted).unwrap();
        }
        assert_eq!(ledger.accepted_ids(), ids[2..].to_vec());
        assert_eq!(ledger.submissions().len(), 3);
        assert_eq!(ledger.count_for(&ids[0]), 0, "forgotten");
        // A repeat of a forgotten id is a second acceptance, and the total shows it.
        assert_eq!(
            ledger.submit(ids[0], account(), 2, SubmissionOutcome::Accepted).unwrap(),
            Recorded::As(SubmissionOutcome::Accepted)
        );
        assert_eq!(ledger.accepted_count(), 6);
        assert_eq!(
            ledger.submit(ids[4], account(), 2, SubmissionOutcome::Accepted).unwrap(),
            Recorded::Duplicate { reschedule: false }
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.txt");
        let ledger = SubmissionLedger::with_capacity(Some(path.clone()), 2).unwrap();
        for id in &ids {
            ledger.submit(*id, account(), 1, SubmissionOutcome::Accepted).unwrap();
        }
        drop(ledger);
        let reopened = SubmissionLedger::with_capacity(Some(path), 2).unwrap();
        assert_eq!(reopened.accepted_ids(), ids, "read back from the file");
        assert_eq!(reopened.submissions().len(), 5);
        assert_eq!(reopened.accepted_count(), 5);
        assert_eq!((reopened.count_for(&ids[2]), reopened.count_for(&ids[3])), (0, 1));
    }
}
