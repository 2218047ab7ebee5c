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
//! Writes are atomic (temp file, fsync, rename, directory fsync). The outbox
//! is bounded: when a batch would exceed `max_bytes`, `push` refuses it with
//! [`OutboxError::Full`] — nothing already accepted is ever dropped; the job
//! reports the refusal and the heartbeat reports the depth.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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
    used: Mutex<u64>,
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
            used: Mutex::new(0),
        };
        let used = outbox.depth()?.bytes;
        *outbox.used.lock().map_err(|_| poisoned(&outbox.root))? = used;
        Ok(outbox)
    }

    fn pending_dir(&self) -> PathBuf {
        self.root.join("pending")
    }

    /// Persist one job's records. When this returns `Ok`, they will be
    /// delivered, whatever happens to the process.
    pub fn push(&self, records: &[EvidenceRecord]) -> Result<(), OutboxError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut used = self.used.lock().map_err(|_| poisoned(&self.root))?;
        let room = self.max_bytes.saturating_sub(*used);
        let mut buffer = BoundedBuffer {
            bytes: Vec::new(),
            max: room,
        };
        if let Err(e) = serde_json::to_writer(&mut buffer, records) {
            return Err(if e.is_io() {
                OutboxError::Full {
                    used: *used,
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
        // Names sort in push order: nanoseconds, then a random tail.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{nanos:024}-{}.json", uuid::Uuid::new_v4());
        let target = self.pending_dir().join(&name);
        durable::write_atomic(&self.root.join("tmp"), &target, &bytes, 0o600)
            .map_err(io(&target))?;
        *used += needed;
        Ok(())
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
        let mut used = self.used.lock().map_err(|_| poisoned(&self.root))?;
        *used = used.saturating_sub(size);
        Ok(())
    }

    fn set_aside(&self, id: &str) -> Result<(), OutboxError> {
        let from = self.pending_dir().join(id);
        let size = std::fs::metadata(&from).map(|m| m.len()).unwrap_or(0);
        let to = self.root.join("rejected").join(id);
        std::fs::rename(&from, &to).map_err(io(&to))?;
        sync_dir(&self.pending_dir())?;
        let mut used = self.used.lock().map_err(|_| poisoned(&self.root))?;
        *used = used.saturating_sub(size);
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
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
