//! Durable state of a site behind one trait: the log, the snapshot the log starts from, and a
//! small metadata record (generation and vote).
//!
//! The core calls these methods synchronously inside a step, so it decides exactly when a record
//! is durable (before an acknowledgement, before a vote) and the driver stays thin. Two
//! implementations live here: [`MemStorage`] (tests, with crash semantics) and [`FileStorage`]
//! (`repsite`); the simulator adds its faulty disk.

mod file;
pub mod fs;
mod mem;
mod simfs;

pub use file::inspect as file_inspect;
pub use file::FileStorage;
pub use mem::MemStorage;
pub use simfs::{CrashPlan, CrashSpace, Fate, SimFs};

use crate::log::{LogRecord, Snapshot};
use crate::types::{Gen, LogPos, Lsn, SiteAddr};
use serde::{Deserialize, Serialize};

/// Small state that must survive a crash and is not part of the log.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Meta {
    /// The highest generation of a master this site has seen (or been).
    pub gen: Gen,
    /// The highest election generation this site has stood or voted in (at least `gen`).
    /// Kept apart from `gen`, as Berkeley DB does, so failed elections raise only this and a
    /// site that stood in vain still follows the master of `gen` when it hears from it.
    pub egen: Gen,
    /// The site this site voted for in election generation `egen`, if it voted.
    pub voted_for: Option<SiteAddr>,
    /// The last record changing who votes that this site's log held durably (as far as the
    /// metadata was last written: each such record is noted once synced). A log that opens
    /// ending below it lost synced records to damage (a damaged record is cut with everything
    /// after it): its view of the group may be missing members, and counting votes by it could
    /// elect a second master of a generation. The site neither stands nor votes below this
    /// mark until its log is back above it.
    pub voters_floor: LogPos,
}

/// [`Meta`] as format 3 wrote it before `voters_floor`: read, and taken to mark nothing.
#[derive(Serialize, Deserialize)]
pub(crate) struct MetaWithoutFloor {
    gen: Gen,
    egen: Gen,
    voted_for: Option<SiteAddr>,
}

impl From<MetaWithoutFloor> for Meta {
    fn from(old: MetaWithoutFloor) -> Meta {
        Meta {
            gen: old.gen,
            egen: old.egen,
            voted_for: old.voted_for,
            voters_floor: LogPos::default(),
        }
    }
}

/// What went wrong in storage. The core treats any of these as fatal for the site: it stops and
/// the operator (or the simulator) restarts it, which re-opens and recovers the storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system refused an operation.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A record or file failed its checksum or did not decode.
    #[error("corrupt {what} in {path}: {detail}")]
    Corrupt {
        /// Which structure.
        what: &'static str,
        /// The file (or a name for in-memory storage).
        path: String,
        /// What was wrong.
        detail: String,
    },
    /// A caller broke the contract (appending a gap, reading archived records, ...).
    #[error("invalid storage operation: {0}")]
    Invalid(String),
    /// An injected fault (simulator).
    #[error("injected disk fault: {0}")]
    Fault(String),
    /// The data directory is locked by another storage, in this process or another.
    #[error(transparent)]
    Locked(#[from] fs::LockError),
}

/// What opening a storage found and repaired: a torn or corrupt tail is truncated, never served.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct Recovery {
    /// Records dropped from the tail because they were torn or failed their checksum.
    pub dropped_records: u64,
    /// Bytes dropped from the tail of the log.
    pub dropped_bytes: u64,
    /// Why, if anything was dropped.
    pub reason: Option<String>,
}

/// A site's durable state.
///
/// Contract: the log holds records `first_lsn()..=last_lsn()` with consecutive LSNs (empty when
/// `last_lsn() + 1 == first_lsn()`); records before `first_lsn()` live in the snapshot. Appends are
/// durable only after `sync`; `truncate_after`, `write_snapshot` and `write_meta` are durable and
/// atomic when they return.
pub trait Storage {
    /// First LSN held in the log (one past the snapshot).
    fn first_lsn(&self) -> Lsn;
    /// Last LSN held in the log, or `first_lsn() - 1` when the log is empty.
    fn last_lsn(&self) -> Lsn;
    /// Appends records; the first must be `last_lsn() + 1` and the rest consecutive.
    fn append(&mut self, records: &[LogRecord]) -> Result<(), StorageError>;
    /// Makes every appended record durable.
    fn sync(&mut self) -> Result<(), StorageError>;
    /// Up to `max` records from `from` on. `from` must be within the log. A record failing its
    /// checksum is an error, never returned.
    fn read(&mut self, from: Lsn, max: usize) -> Result<Vec<LogRecord>, StorageError>;
    /// Drops every record after `lsn` (the divergent tail of a client). Durable on return.
    fn truncate_after(&mut self, lsn: Lsn) -> Result<(), StorageError>;
    /// Atomically replaces the snapshot. With `keep_log` the log keeps the records after the
    /// snapshot (archiving); without it the log is emptied and restarts after the snapshot
    /// (internal initialisation). Either way the log no longer holds records at or before it.
    fn write_snapshot(&mut self, snapshot: &Snapshot, keep_log: bool) -> Result<(), StorageError>;
    /// The snapshot the log starts from (the empty snapshot before any archiving).
    fn read_snapshot(&mut self) -> Result<Snapshot, StorageError>;
    /// Atomically replaces the metadata record.
    fn write_meta(&mut self, meta: &Meta) -> Result<(), StorageError>;
    /// The metadata record, if one was ever written.
    fn read_meta(&mut self) -> Result<Option<Meta>, StorageError>;
}

/// Checks that `records` continue a log ending at `last`: consecutive LSNs from `last + 1`.
/// Every implementation refuses a gap the same way.
pub fn check_continues(last: Lsn, records: &[LogRecord]) -> Result<(), StorageError> {
    for (next, record) in (last + 1..).zip(records) {
        if record.lsn != next {
            return Err(StorageError::Invalid(format!(
                "append of LSN {} where {next} was expected",
                record.lsn
            )));
        }
    }
    Ok(())
}

/// Reads the whole log from `from` to the end, in bounded batches.
pub fn read_to_end<S: Storage + ?Sized>(
    storage: &mut S,
    from: Lsn,
) -> Result<Vec<LogRecord>, StorageError> {
    const BATCH: usize = 1024;
    let mut out = Vec::new();
    let mut next = from.max(storage.first_lsn());
    while next <= storage.last_lsn() {
        let batch = storage.read(next, BATCH)?;
        let Some(last) = batch.last() else { break };
        next = last.lsn + 1;
        out.extend(batch);
    }
    Ok(out)
}

/// The snapshot plus every record of the log replayed on top of it: what the site's database
/// must equal. Used when opening a site and by the invariant checkers.
pub fn replay<S: Storage + ?Sized>(storage: &mut S) -> Result<Snapshot, StorageError> {
    replay_visiting(storage, |_| {})
}

/// [`replay`], showing `visit` each record of the log (not the snapshot's) in order.
pub fn replay_visiting<S: Storage + ?Sized>(
    storage: &mut S,
    mut visit: impl FnMut(&LogRecord),
) -> Result<Snapshot, StorageError> {
    let mut snapshot = storage.read_snapshot()?;
    for record in read_to_end(storage, snapshot.pos().lsn + 1)? {
        snapshot.history.note_append(&record);
        snapshot.db.apply(&record);
        visit(&record);
    }
    Ok(snapshot)
}
