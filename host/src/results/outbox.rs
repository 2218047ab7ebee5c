//! The durable results outbox: every job's evidence is written to disk
//! before the job counts as done, and removed only after the control plane
//! confirmed it. Delivery carries each record's idempotency key, so a
//! redelivery after a crash is stored once.
//!
//! ```text
//! <state_dir>/outbox/
//!   pending/<seq>-<uuid>.json   one batch per job, delivered in name order
//!   rejected/                   batches the control plane refused as invalid (kept for the operator)
//!   tmp/                        batches being written
//! ```
//!
//! Writes are atomic (temp file, fsync, rename, directory fsync) and grouped
//! (group commit): jobs pushing at the same time queue their serialised
//! batches; one of them, the leader, writes everything queued when its turn
//! comes as one batch file — one fsync of the file, one rename, one fsync of
//! `pending/` — then wakes the others. A combined file is one JSON array of
//! the jobs' records in push order, and holds at most what one delivery
//! request carries ([`MAX_RECORDS_PER_REQUEST`], [`MAX_BYTES_PER_REQUEST`];
//! a larger job goes alone), so it is delivered, confirmed or rejected as one
//! request. A pusher that finds no write under way writes at once: nothing
//! waits for company.
//!
//! Durability: `push` returns `Ok` only after the file holding its records
//! was fsynced, renamed into `pending/` and `pending/` fsynced, so a record
//! reported as stored survives SIGKILL and power loss (as far as the file
//! system honours fsync). A crash earlier leaves at most a temporary file,
//! removed by the next `open`; the members of a group are durable together
//! or not at all. A failed group write returns the error to every member;
//! nothing of it is kept, except when only the final directory fsync failed:
//! the file is then already in `pending/` and is delivered, so a record
//! reported as not stored may still arrive — never the reverse.
//!
//! The outbox is bounded: each push reserves its serialised size when it is
//! queued, and one that would exceed `max_bytes` is refused with
//! [`OutboxError::Full`] (the others in its group are unaffected) — nothing
//! already accepted is ever dropped; the job reports the refusal and the
//! heartbeat reports the depth.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use super::evidence::EvidenceRecord;
use crate::durable;

/// An outbox failure.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The batch does not fit.
    #[error(
        "the results outbox is full ({used} of {max} bytes used, the batch needs {needed} or more); results already accepted are kept until the control plane takes them — check its reachability or raise runtime.outbox_max_mib"
    )]
    Full {
        /// Bytes in use.
        used: u64,
        /// The cap.
        max: u64,
        /// The refused batch's size.
        needed: u64,
    },
    /// File system failure.
    #[error("results outbox {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A batch file that cannot be parsed (moved aside, not deleted).
    #[error("results outbox batch {path} is unreadable and was moved to rejected/: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why a delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying later (network, 5xx, authentication being renewed).
    #[error("{0}")]
    Transient(String),
    /// The control plane asked to be left alone for a while (429 or 503
    /// with `Retry-After`).
    #[error("{why} (retry after {}s)", .after.as_secs())]
    Throttled {
        /// How long it asked for.
        after: std::time::Duration,
        /// Its answer.
        why: String,
    },
    /// The control plane refused the batch as invalid; retrying cannot help.
    #[error("{0}")]
    Rejected(String),
}

/// Where evidence goes (the control plane client, or a test double).
pub trait EvidenceSink {
    /// Deliver one batch; `Ok` means the control plane stored every record.
    fn deliver(
        &self,
        records: &[EvidenceRecord],
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// Size of the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxDepth {
    /// Batches waiting.
    pub batches: usize,
    /// Bytes waiting.
    pub bytes: u64,
    /// Batches set aside as rejected.
    pub rejected: usize,
}

/// What one delivery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Batches confirmed and removed.
    pub delivered: usize,
    /// Records in them.
    pub records: usize,
    /// Batches set aside as rejected.
    pub rejected: usize,
    /// The transient failure that stopped the pass, if any.
    pub stopped_by: Option<String>,
    /// How long the control plane asked the runtime to wait, if it did.
    pub retry_after: Option<std::time::Duration>,
}

/// Longest `Retry-After` honoured: a control plane cannot park delivery
/// for days.
pub const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

impl DeliveryReport {
    /// How long to wait before the next pass: the backoff's `next`, or
    /// longer when the control plane asked for more (at most an hour).
    pub fn wait(&self, next: std::time::Duration) -> std::time::Duration {
        next.max(self.retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
    }
}

/// The outbox.
#[derive(Debug)]
pub struct Outbox {
    root: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// Signalled when a group write ends: its pushers have their outcome and
    /// the writer's turn is free.
    settled: Condvar,
}

/// What pushers share (see the module documentation on group commit).
#[derive(Debug, Default)]
struct State {
    /// Bytes of the files in `pending/` plus those reserved by queued pushes.
    used: u64,
    /// Pushes accepted and waiting for a writer, in push order.
    queue: VecDeque<Queued>,
    /// The ticket of the next accepted push.
    next_ticket: u64,
    /// Every push with a lower ticket has its outcome.
    settled_below: u64,
    /// Outcomes of failed pushes, until their pusher takes them.
    failed: HashMap<u64, Failure>,
    /// A leader is writing a group (without holding the lock).
    writing: bool,
    /// The last file name's time stamp: names keep increasing, so delivery
    /// follows push order, even when the clock steps back.
    last_stamp: u128,
}

/// One accepted push.
#[derive(Debug)]
struct Queued {
    ticket: u64,
    /// Its records as one JSON array.
    bytes: Vec<u8>,
    records: usize,
}

/// A group write's error, handed to each of its pushers.
#[derive(Debug, Clone)]
struct Failure {
    path: PathBuf,
    kind: std::io::ErrorKind,
    message: String,
}

impl From<Failure> for OutboxError {
    fn from(f: Failure) -> Self {
        OutboxError::Io {
            path: f.path,
            source: std::io::Error::new(f.kind, f.message),
        }
    }
}

impl Outbox {
    /// Open (create) the outbox under `state_dir/outbox`, bounded to
    /// `max_bytes`. Leftover temporary files of a crash are removed.
    pub fn open(state_dir: &Path, max_bytes: u64) -> Result<Self, OutboxError> {
        let root = state_dir.join("outbox");
        for dir in ["pending", "rejected", "tmp"] {
            let path = root.join(dir);
            durable::create_private_dir(&path).map_err(io(&path))?;
        }
        let tmp = root.join("tmp");
        for name in names(&tmp)? {
            let path = tmp.join(name);
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        let outbox = Outbox {
            root,
            max_bytes,
            state: Mutex::default(),
            settled: Condvar::new(),
        };
        let used = outbox.depth()?.bytes;
        outbox.lock()?.used = used;
        Ok(outbox)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, OutboxError> {
        self.state.lock().map_err(|_| poisoned(&self.root))
    }

    fn pending_dir(&self) -> PathBuf {
        self.root.join("pending")
    }

    /// Persist one job's records. When this returns `Ok`, they will be
    /// delivered, whatever happens to the process. Blocks until the file
    /// holding them is durable (possibly written by another pusher, see
    /// group commit in the module documentation).
    pub fn push(&self, records: &[EvidenceRecord]) -> Result<(), OutboxError> {
        if records.is_empty() {
            return Ok(());
        }
        // Serialised outside the lock, so that pushers do not wait for each
        // other's serialisation; bounded by the room left when it started.
        let used = self.lock()?.used;
        let room = self.max_bytes.saturating_sub(used);
        let mut buffer = BoundedBuffer {
            bytes: Vec::new(),
            max: room,
        };
        if let Err(e) = serde_json::to_writer(&mut buffer, records) {
            return Err(if e.is_io() {
                OutboxError::Full {
                    used,
                    max: self.max_bytes,
                    needed: room.saturating_add(1),
                }
            } else {
                OutboxError::Io {
                    path: self.root.clone(),
                    source: std::io::Error::other(e),
                }
            });
        }
        let bytes = buffer.bytes;
        let needed = bytes.len() as u64;
        let mut state = self.lock()?;
        // Other pushes may have taken the room meanwhile.
        if state.used.saturating_add(needed) > self.max_bytes {
            return Err(OutboxError::Full {
                used: state.used,
                max: self.max_bytes,
                needed,
            });
        }
        state.used += needed;
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(Queued {
            ticket,
            bytes,
            records: records.len(),
        });
        loop {
            if ticket < state.settled_below {
                return match state.failed.remove(&ticket) {
                    None => Ok(()),
                    Some(failure) => Err(failure.into()),
                };
            }
            state = if state.writing {
                self.settled.wait(state).map_err(|_| poisoned(&self.root))?
            } else {
                self.lead(state)
            };
        }
    }

    /// Write the group at the head of the queue as one batch file, then
    /// record its outcome and wake its pushers. The lock is released while
    /// writing, so that new pushes queue up for the next group.
    fn lead<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let group = take_group(&mut state.queue);
        // Never empty: the caller's own push is queued.
        let Some(last) = group.last().map(|q| q.ticket) else {
            return state;
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let stamp = nanos.max(state.last_stamp + 1);
        state.last_stamp = stamp;
        state.writing = true;
        drop(state);

        let reserved: u64 = group.iter().map(|q| q.bytes.len() as u64).sum();
        // A panic must not leave the group's pushers waiting forever.
        let written =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.write_group(&group, stamp)))
                .unwrap_or_else(|_| {
                    let failure = Failure {
                        path: self.pending_dir(),
                        kind: std::io::ErrorKind::Other,
                        message: "the outbox writer panicked".into(),
                    };
                    Err((failure, 0))
                });
        let (kept, failure) = match written {
            Ok(size) => (size, None),
            Err((failure, kept)) => (kept, Some(failure)),
        };

        // The group's pushers must hear of the outcome even if another
        // thread panicked while holding the lock: the state is only changed
        // by code that does not panic.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.used = state.used.saturating_sub(reserved).saturating_add(kept);
        if let Some(failure) = failure {
            for q in &group {
                state.failed.insert(q.ticket, failure.clone());
            }
        }
        state.settled_below = last + 1;
        state.writing = false;
        self.settled.notify_all();
        state
    }

    /// Write `group` as one batch file named after `stamp`: its size, or the
    /// failure and the bytes it left in `pending/` (only a failed directory
    /// fsync leaves the file behind; it is then delivered, so its bytes stay
    /// counted).
    fn write_group(&self, group: &[Queued], stamp: u128) -> Result<u64, (Failure, u64)> {
        // Names sort in push order: the stamp, then a random tail.
        let name = format!("{stamp:024}-{}.json", uuid::Uuid::new_v4());
        let target = self.pending_dir().join(name);
        let written = combine(group).and_then(|bytes| {
            durable::write_atomic(&self.root.join("tmp"), &target, &bytes, 0o600)?;
            Ok(bytes.len() as u64)
        });
        written.map_err(|e| {
            let kept = std::fs::metadata(&target).map_or(0, |m| m.len());
            let failure = Failure {
                path: target,
                kind: e.kind(),
                message: e.to_string(),
            };
            (failure, kept)
        })
    }

    /// Batches waiting, oldest first.
    pub fn pending(&self) -> Result<Vec<String>, OutboxError> {
        names(&self.pending_dir())
    }

    /// The records of batch `id`. An unreadable batch is moved to
    /// `rejected/` (kept for the operator) and reported as corrupt.
    pub fn read(&self, id: &str) -> Result<Vec<EvidenceRecord>, OutboxError> {
        let path = self.pending_dir().join(id);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            let moved = self.set_aside(id);
            OutboxError::Corrupt {
                path,
                message: match moved {
                    Ok(()) => e.to_string(),
                    Err(m) => format!("{e}; and it could not be moved: {m}"),
                },
            }
        })
    }

    /// Remove batch `id` after the control plane confirmed it.
    pub fn ack(&self, id: &str) -> Result<(), OutboxError> {
        let path = self.pending_dir().join(id);
        let size = std::fs::metadata(&path).map_err(io(&path))?.len();
        std::fs::remove_file(&path).map_err(io(&path))?;
        sync_dir(&self.pending_dir())?;
        let mut state = self.lock()?;
        state.used = state.used.saturating_sub(size);
        Ok(())
    }

    fn set_aside(&self, id: &str) -> Result<(), OutboxError> {
        let from = self.pending_dir().join(id);
        let size = std::fs::metadata(&from).map(|m| m.len()).unwrap_or(0);
        let to = self.root.join("rejected").join(id);
        std::fs::rename(&from, &to).map_err(io(&to))?;
        sync_dir(&self.pending_dir())?;
        let mut state = self.lock()?;
        state.used = state.used.saturating_sub(size);
        Ok(())
    }

    /// Batches and bytes waiting, and batches set aside.
    pub fn depth(&self) -> Result<OutboxDepth, OutboxError> {
        let pending = self.pending_dir();
        let mut depth = OutboxDepth::default();
        for name in names(&pending)? {
            let path = pending.join(name);
            depth.batches += 1;
            depth.bytes += std::fs::metadata(&path).map_err(io(&path))?.len();
        }
        depth.rejected = names(&self.root.join("rejected"))?.len();
        Ok(depth)
    }

    /// Deliver waiting batches in order until the outbox is empty or a
    /// transient failure stops the pass (the caller retries later, with
    /// backoff). A batch the control plane rejects as invalid is set aside.
    pub async fn deliver(&self, sink: &impl EvidenceSink) -> Result<DeliveryReport, OutboxError> {
        let mut report = DeliveryReport::default();
        for id in self.pending()? {
            let records = match self.read(&id) {
                Ok(records) => records,
                Err(OutboxError::Corrupt { path, message }) => {
                    tracing::error!(batch = %path.display(), "unreadable outbox batch set aside: {message}");
                    report.rejected += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A job may hold more records than one request may carry: send
            // them in parts. Records carry idempotency keys, so parts that
            // arrived before an interruption are stored once when the whole
            // batch is delivered again.
            let mut outcome = Ok(());
            for part in delivery_parts(&records) {
                outcome = sink.deliver(part).await;
                if outcome.is_err() {
                    break;
                }
            }
            match outcome {
                Ok(()) => {
                    self.ack(&id)?;
                    report.delivered += 1;
                    report.records += records.len();
                }
                Err(DeliveryError::Rejected(why)) => {
                    tracing::error!(batch = %id, "the control plane rejected a results batch; it is kept in outbox/rejected: {why}");
                    self.set_aside(&id)?;
                    report.rejected += 1;
                }
                Err(DeliveryError::Transient(why)) => {
                    report.stopped_by = Some(why);
                    break;
                }
                Err(DeliveryError::Throttled { after, why }) => {
                    report.stopped_by = Some(why);
                    report.retry_after = Some(after);
                    break;
                }
            }
        }
        Ok(report)
    }
}

/// Records one delivery request carries at most (the control plane's
/// batch limit).
pub const MAX_RECORDS_PER_REQUEST: usize = 1000;
/// Bytes of records one delivery request carries at most, well below the
/// control plane's request body limit (32 MiB by default).
pub const MAX_BYTES_PER_REQUEST: usize = 8 << 20;

/// `records` cut into consecutive parts of at most
/// [`MAX_RECORDS_PER_REQUEST`] records and [`MAX_BYTES_PER_REQUEST`] bytes
/// (a single larger record goes alone).
pub fn delivery_parts(records: &[EvidenceRecord]) -> Vec<&[EvidenceRecord]> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, record) in records.iter().enumerate() {
        let size = serde_json::to_vec(record).map_or(0, |b| b.len() + 1);
        let count = i - start;
        if count > 0 && (count == MAX_RECORDS_PER_REQUEST || bytes + size > MAX_BYTES_PER_REQUEST) {
            parts.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < records.len() {
        parts.push(&records[start..]);
    }
    parts
}

/// The pushes the next batch file holds: the oldest queued, and those after
/// it while the file stays within one delivery request, so that a combined
/// file is delivered, confirmed or rejected as one request, as one job's
/// batch was.
fn take_group(queue: &mut VecDeque<Queued>) -> Vec<Queued> {
    let mut group = Vec::new();
    let (mut records, mut bytes) = (0, 0);
    while let Some(next) = queue.front() {
        let fits = records + next.records <= MAX_RECORDS_PER_REQUEST
            && bytes + next.bytes.len() <= MAX_BYTES_PER_REQUEST;
        if !group.is_empty() && !fits {
            break;
        }
        records += next.records;
        bytes += next.bytes.len();
        group.extend(queue.pop_front());
    }
    group
}

/// The group's records as one JSON array, in push order: each push's array
/// without its brackets, joined by commas.
fn combine(group: &[Queued]) -> std::io::Result<Cow<'_, [u8]>> {
    if let [one] = group {
        return Ok(Cow::Borrowed(&one.bytes));
    }
    let mut bytes = Vec::with_capacity(group.iter().map(|q| q.bytes.len()).sum());
    bytes.push(b'[');
    for (i, q) in group.iter().enumerate() {
        let inner = q
            .bytes
            .strip_prefix(b"[")
            .and_then(|b| b.strip_suffix(b"]"))
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a serialised batch is not a JSON array",
                )
            })?;
        if i > 0 {
            bytes.push(b',');
        }
        bytes.extend_from_slice(inner);
    }
    bytes.push(b']');
    Ok(Cow::Owned(bytes))
}

/// A writer that refuses to grow past `max` bytes: a batch is measured
/// against the outbox's room while it is serialised, never materialised
/// whole first.
struct BoundedBuffer {
    bytes: Vec<u8>,
    max: u64,
}

impl std::io::Write for BoundedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if (self.bytes.len() + buf.len()) as u64 > self.max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "the batch does not fit",
            ));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn poisoned(root: &Path) -> OutboxError {
    OutboxError::Io {
        path: root.to_path_buf(),
        source: std::io::Error::other("outbox lock poisoned"),
    }
}

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    durable::sync_dir(dir).map_err(io(dir))
}

fn names(dir: &Path) -> Result<Vec<String>, OutboxError> {
    durable::sorted_names(dir).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::evidence::{EvidenceCreateRequest, ObjectiveStatus};
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn record(key: &str) -> EvidenceRecord {
        EvidenceRecord {
            idempotency_key: key.to_string(),
            evidence: EvidenceCreateRequest {
                uuid: "u".into(),
                title: "t".into(),
                description: "d".into(),
                start: "s".into(),
                end: "e".into(),
                labels: BTreeMap::new(),
                status: ObjectiveStatus {
                    state: "satisfied".into(),
                    reason: "pass".into(),
                    remarks: None,
                },
                subjects: vec![],
                origins: vec![],
                props: vec![],
                links: vec![],
                remarks: None,
                back_matter: None,
            },
        }
    }

    /// Fails the first `failures` deliveries transiently, rejects batches
    /// whose first key is `bad`, stores the rest.
    #[derive(Default)]
    struct Sink {
        failures: AtomicUsize,
        stored: Mutex<Vec<String>>,
    }

    impl EvidenceSink for Sink {
        async fn deliver(&self, records: &[EvidenceRecord]) -> Result<(), DeliveryError> {
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err(DeliveryError::Transient("control plane down".into()));
            }
            if records[0].idempotency_key == "bad" {
                return Err(DeliveryError::Rejected("invalid".into()));
            }
            self.stored
                .lock()
                .unwrap()
                .extend(records.iter().map(|r| r.idempotency_key.clone()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_job_with_more_records_than_one_request_carries_is_delivered_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 64 << 20).unwrap();
        let records: Vec<_> = (0..2500).map(|i| record(&format!("r{i}"))).collect();
        outbox.push(&records).unwrap();
        /// Refuses requests of more than the control plane's 1000 records.
        #[derive(Default)]
        struct Strict(Mutex<Vec<usize>>);
        impl EvidenceSink for Strict {
            async fn deliver(&self, records: &[EvidenceRecord]) -> Result<(), DeliveryError> {
                if records.len() > 1000 {
                    return Err(DeliveryError::Rejected("more than 1000 records".into()));
                }
                self.0.lock().unwrap().push(records.len());
                Ok(())
            }
        }
        let sink = Strict::default();
        let report = outbox.deliver(&sink).await.unwrap();
        assert_eq!(
            (report.delivered, report.records, report.rejected),
            (1, 2500, 0)
        );
        assert_eq!(*sink.0.lock().unwrap(), vec![1000, 1000, 500]);
        assert_eq!(outbox.depth().unwrap().batches, 0);
    }

    #[test]
    fn a_retry_after_lengthens_the_wait_up_to_an_hour() {
        let secs = std::time::Duration::from_secs;
        let mut report = DeliveryReport::default();
        assert_eq!(report.wait(secs(2)), secs(2));
        report.retry_after = Some(secs(30));
        assert_eq!(report.wait(secs(2)), secs(30));
        assert_eq!(report.wait(secs(60)), secs(60));
        report.retry_after = Some(secs(86_400 * 30));
        assert_eq!(report.wait(secs(2)), MAX_RETRY_AFTER);
    }

    #[test]
    fn parts_are_bounded_in_bytes_too() {
        let mut big = record("big");
        big.evidence.description = "x".repeat(MAX_BYTES_PER_REQUEST / 3);
        let records = vec![big.clone(), big.clone(), big.clone(), record("small")];
        let parts = delivery_parts(&records);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![2, 2]
        );
        let mut huge = record("huge");
        huge.evidence.description = "x".repeat(MAX_BYTES_PER_REQUEST + 1);
        assert_eq!(
            delivery_parts(&[huge]).len(),
            1,
            "a single large record goes alone"
        );
        assert!(delivery_parts(&[]).is_empty());
    }

    #[test]
    fn a_batch_larger_than_the_room_left_is_refused_while_serialising() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 4096).unwrap();
        let mut big = record("big");
        big.evidence.description = "x".repeat(1 << 20);
        let e = outbox.push(&[big]).unwrap_err();
        assert!(
            matches!(
                e,
                OutboxError::Full {
                    used: 0,
                    max: 4096,
                    ..
                }
            ),
            "{e}"
        );
        outbox.push(&[record("small")]).unwrap();
        assert_eq!(outbox.depth().unwrap().batches, 1);
    }

    #[tokio::test]
    async fn batches_survive_failures_and_reopening_and_are_delivered_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
        outbox.push(&[record("a1"), record("a2")]).unwrap();
        outbox.push(&[record("b1")]).unwrap();
        let sink = Sink {
            failures: AtomicUsize::new(1),
            ..Sink::default()
        };
        let first = outbox.deliver(&sink).await.unwrap();
        assert_eq!(first.delivered, 0);
        assert_eq!(first.stopped_by.as_deref(), Some("control plane down"));
        drop(outbox);

        // A restart finds everything still there.
        let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(outbox.depth().unwrap().batches, 2);
        let second = outbox.deliver(&sink).await.unwrap();
        assert_eq!((second.delivered, second.records), (2, 3));
        assert_eq!(*sink.stored.lock().unwrap(), vec!["a1", "a2", "b1"]);
        assert_eq!(outbox.depth().unwrap(), OutboxDepth::default());
    }

    #[tokio::test]
    async fn a_full_outbox_refuses_new_batches_and_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&[record("a")]).unwrap().len() as u64;
        let outbox = Outbox::open(dir.path(), one * 2).unwrap();
        outbox.push(&[record("a")]).unwrap();
        outbox.push(&[record("b")]).unwrap();
        let err = outbox.push(&[record("c")]).unwrap_err();
        assert!(matches!(err, OutboxError::Full { .. }), "{err}");
        assert_eq!(outbox.depth().unwrap().batches, 2);
        // Delivering frees room.
        outbox.deliver(&Sink::default()).await.unwrap();
        outbox.push(&[record("c")]).unwrap();
    }

    /// Takes the writer's turn, as a leader in the middle of its write
    /// would, so that pushes queue up into one group until
    /// [`release_writer`].
    fn hold_writer(outbox: &Outbox) {
        outbox.state.lock().unwrap().writing = true;
    }

    fn release_writer(outbox: &Outbox) {
        outbox.state.lock().unwrap().writing = false;
        outbox.settled.notify_all();
    }

    /// Waits until `n` pushes are queued.
    fn wait_queued(outbox: &Outbox, n: usize) {
        while outbox.state.lock().unwrap().queue.len() < n {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The keys of each pending batch, in delivery order.
    fn pending_keys(outbox: &Outbox) -> Vec<Vec<String>> {
        outbox
            .pending()
            .unwrap()
            .iter()
            .map(|id| {
                outbox
                    .read(id)
                    .unwrap()
                    .into_iter()
                    .map(|r| r.idempotency_key)
                    .collect()
            })
            .collect()
    }

    fn keys(prefix: &str, n: usize) -> Vec<EvidenceRecord> {
        (0..n).map(|i| record(&format!("{prefix}/{i}"))).collect()
    }

    #[test]
    fn concurrent_pushes_share_files_and_every_record_is_kept_once_in_push_order() {
        const THREADS: usize = 16;
        const PUSHES: usize = 40;
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 30).unwrap();
        let start = std::sync::Barrier::new(THREADS);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (outbox, start) = (&outbox, &start);
                s.spawn(move || {
                    start.wait();
                    for i in 0..PUSHES {
                        outbox.push(&[record(&format!("{t}/{i}"))]).unwrap();
                    }
                });
            }
        });
        let files = outbox.pending().unwrap().len();
        assert!(
            files < THREADS * PUSHES,
            "{files} batch files for {} pushes",
            THREADS * PUSHES
        );
        assert_eq!(
            outbox.state.lock().unwrap().used,
            outbox.depth().unwrap().bytes,
            "the room used is counted exactly"
        );
        drop(outbox);

        let outbox = Outbox::open(dir.path(), 1 << 30).unwrap();
        let stored = pending_keys(&outbox).concat();
        assert_eq!(stored.len(), THREADS * PUSHES);
        assert_eq!(stored.iter().collect::<BTreeSet<_>>().len(), stored.len());
        // Each thread's records come in the order it pushed them.
        for t in 0..THREADS {
            let prefix = format!("{t}/");
            let mine: Vec<usize> = stored
                .iter()
                .filter_map(|k| k.strip_prefix(&prefix))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..PUSHES).collect::<Vec<_>>(), "thread {t}");
        }
    }

    #[test]
    fn a_push_returns_only_once_its_batch_is_durable_in_pending() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 30).unwrap();
        hold_writer(&outbox);
        let returned = AtomicBool::new(false);
        std::thread::scope(|s| {
            let pusher = s.spawn(|| {
                let result = outbox.push(&[record("held")]);
                returned.store(true, Ordering::SeqCst);
                result
            });
            wait_queued(&outbox, 1);
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(
                !returned.load(Ordering::SeqCst),
                "a push waits for a writer"
            );
            assert!(outbox.pending().unwrap().is_empty());
            release_writer(&outbox);
            pusher.join().unwrap().unwrap();
        });
        assert_eq!(pending_keys(&outbox), vec![vec!["held"]]);

        // Under contention too, a record is in pending/ when its push returns.
        let pending = outbox.pending_dir();
        std::thread::scope(|s| {
            for t in 0..8 {
                let (outbox, pending) = (&outbox, &pending);
                s.spawn(move || {
                    for i in 0..20 {
                        let key = format!("{t}/{i}");
                        outbox.push(&[record(&key)]).unwrap();
                        let on_disk = durable::sorted_names(pending).unwrap().iter().any(|n| {
                            let bytes = std::fs::read(pending.join(n)).unwrap();
                            serde_json::from_slice::<Vec<EvidenceRecord>>(&bytes)
                                .unwrap()
                                .iter()
                                .any(|r| r.idempotency_key == key)
                        });
                        assert!(on_disk, "{key} returned before it was in pending/");
                    }
                });
            }
        });
    }

    #[test]
    fn a_failed_group_write_fails_every_member_keeps_nothing_and_the_next_push_works() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
        outbox.push(&[record("before")]).unwrap();
        let used = outbox.state.lock().unwrap().used;
        let pending = dir.path().join("outbox/pending");
        let away = dir.path().join("outbox/away");
        hold_writer(&outbox);
        let errors: Vec<OutboxError> = std::thread::scope(|s| {
            let pushers: Vec<_> = (0..4)
                .map(|i| {
                    let outbox = &outbox;
                    s.spawn(move || outbox.push(&[record(&format!("lost{i}"))]))
                })
                .collect();
            wait_queued(&outbox, 4);
            // The group's rename fails: pending/ is gone.
            std::fs::rename(&pending, &away).unwrap();
            release_writer(&outbox);
            pushers
                .into_iter()
                .map(|p| p.join().unwrap().unwrap_err())
                .collect()
        });
        let targets: BTreeSet<_> = errors
            .iter()
            .map(|e| match e {
                OutboxError::Io { path, source } => {
                    assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{e}");
                    path.clone()
                }
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(targets.len(), 1, "one write for the group: {targets:?}");
        std::fs::rename(&away, &pending).unwrap();
        assert!(
            durable::sorted_names(&dir.path().join("outbox/tmp"))
                .unwrap()
                .is_empty(),
            "no temporary file left"
        );
        {
            let state = outbox.state.lock().unwrap();
            assert_eq!(state.used, used, "the group's room is given back");
            assert!(state.queue.is_empty() && state.failed.is_empty() && !state.writing);
        }
        outbox.push(&[record("after")]).unwrap();
        drop(outbox);
        let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(pending_keys(&outbox), vec![vec!["before"], vec!["after"]]);
    }

    #[test]
    fn a_push_that_does_not_fit_is_refused_alone_and_its_group_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&[record("a")]).unwrap().len() as u64;
        let outbox = Outbox::open(dir.path(), one * 2).unwrap();
        hold_writer(&outbox);
        std::thread::scope(|s| {
            let a = s.spawn(|| outbox.push(&[record("a")]));
            wait_queued(&outbox, 1);
            // `a` is not written yet but holds its room: two records do not fit.
            let e = outbox.push(&[record("c"), record("d")]).unwrap_err();
            assert!(
                matches!(e, OutboxError::Full { used, max, .. } if used == one && max == one * 2),
                "{e}"
            );
            let b = s.spawn(|| outbox.push(&[record("b")]));
            wait_queued(&outbox, 2);
            let e = outbox.push(&[record("x")]).unwrap_err();
            assert!(
                matches!(e, OutboxError::Full { used, .. } if used == one * 2),
                "{e}"
            );
            release_writer(&outbox);
            a.join().unwrap().unwrap();
            b.join().unwrap().unwrap();
        });
        assert_eq!(pending_keys(&outbox), vec![vec!["a", "b"]]);
        assert_eq!(
            outbox.state.lock().unwrap().used,
            outbox.depth().unwrap().bytes
        );
    }

    #[tokio::test]
    async fn combined_batches_stay_within_one_request_and_are_delivered_in_push_order() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 64 << 20).unwrap();
        let jobs = [("a", 400), ("b", 400), ("c", 1500), ("d", 1)];
        hold_writer(&outbox);
        std::thread::scope(|s| {
            let pushers: Vec<_> = jobs
                .iter()
                .enumerate()
                .map(|(n, (job, count))| {
                    let outbox = &outbox;
                    let pusher = s.spawn(move || outbox.push(&keys(job, *count)));
                    wait_queued(outbox, n + 1);
                    pusher
                })
                .collect();
            release_writer(&outbox);
            for p in pushers {
                p.join().unwrap().unwrap();
            }
        });
        // a and b share a file; c is larger than a request and goes alone;
        // d does not fit beside c.
        let files: Vec<usize> = pending_keys(&outbox).iter().map(Vec::len).collect();
        assert_eq!(files, vec![800, 1500, 1]);

        /// Records each request.
        #[derive(Default)]
        struct Requests(Mutex<Vec<Vec<String>>>);
        impl EvidenceSink for Requests {
            async fn deliver(&self, records: &[EvidenceRecord]) -> Result<(), DeliveryError> {
                let keys = records.iter().map(|r| r.idempotency_key.clone());
                self.0.lock().unwrap().push(keys.collect());
                Ok(())
            }
        }
        let sink = Requests::default();
        let report = outbox.deliver(&sink).await.unwrap();
        assert_eq!((report.delivered, report.records), (3, 2301));
        let requests = sink.0.into_inner().unwrap();
        assert_eq!(
            requests.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![800, 1000, 500, 1]
        );
        let expected: Vec<String> = jobs
            .iter()
            .flat_map(|(job, count)| (0..*count).map(move |i| format!("{job}/{i}")))
            .collect();
        assert_eq!(requests.concat(), expected);
    }

    /// Not a benchmark gate (nothing is asserted about speed): prints how
    /// many one-finding jobs pushed from many threads become durable per
    /// second. Run with `--nocapture`; `TMPDIR` chooses the file system.
    #[test]
    fn measure_concurrent_one_finding_pushes() {
        const THREADS: usize = 64;
        const PUSHES: usize = 50;
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 30).unwrap();
        let started = std::time::Instant::now();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let outbox = &outbox;
                s.spawn(move || {
                    for i in 0..PUSHES {
                        outbox.push(&[record(&format!("{t}-{i}"))]).unwrap();
                    }
                });
            }
        });
        let elapsed = started.elapsed();
        let pushes = THREADS * PUSHES;
        let files = outbox.depth().unwrap().batches;
        println!(
            "outbox: {pushes} one-finding pushes from {THREADS} threads in {elapsed:?}: {:.0} durable findings/s, {files} batch files",
            pushes as f64 / elapsed.as_secs_f64()
        );
        assert_eq!(outbox.pending().unwrap().len(), files);
    }

    #[tokio::test]
    async fn rejected_and_corrupt_batches_are_set_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
        outbox.push(&[record("bad")]).unwrap();
        outbox.push(&[record("good")]).unwrap();
        std::fs::write(
            dir.path().join("outbox/pending/000-corrupt.json"),
            b"{not json",
        )
        .unwrap();
        std::fs::write(dir.path().join("outbox/tmp/leftover"), b"partial").unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert!(
            std::fs::read_dir(dir.path().join("outbox/tmp"))
                .unwrap()
                .next()
                .is_none(),
            "crash leftovers removed"
        );
        let sink = Sink::default();
        let report = outbox.deliver(&sink).await.unwrap();
        assert_eq!((report.delivered, report.rejected), (1, 2));
        assert_eq!(*sink.stored.lock().unwrap(), vec!["good"]);
        assert_eq!(
            outbox.depth().unwrap(),
            OutboxDepth {
                batches: 0,
                bytes: 0,
                rejected: 2
            }
        );
    }
}
