//! The simulator's disk: a site's durable state, held by the world rather than by the node, so
//! that it survives a kill. A crash loses what was not synced, as a power failure would; the
//! node's next start reads whatever is left.

use replication::log::{LogRecord, Snapshot};
use replication::storage::{MemStorage, Meta, Storage, StorageError};
use replication::types::Lsn;
use std::sync::{Arc, Mutex, MutexGuard};

/// A shared handle on one site's disk. Clones see the same disk.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    inner: Arc<Mutex<MemStorage>>,
}

impl Disk {
    /// A blank disk.
    pub fn new() -> Self {
        Disk::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemStorage> {
        // A panic while holding the lock is a simulator bug; the state is still the disk's.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Power failure: appended records that were not synced are gone.
    pub fn crash(&self) {
        self.lock().crash();
    }

    /// Power failure that tears the first unsynced record (left in place, failing its checksum).
    pub fn crash_tearing(&self) {
        self.lock().crash_tearing();
    }

    /// Damages the last record of the log, synced or not (bit rot). Returns its LSN.
    pub fn corrupt_last(&self) -> Option<Lsn> {
        let mut disk = self.lock();
        let last = disk.last_lsn();
        (last >= disk.first_lsn() && disk.corrupt(last)).then_some(last)
    }

    /// Damages the record at `lsn`. False if the log does not hold it.
    pub fn corrupt(&self, lsn: Lsn) -> bool {
        self.lock().corrupt(lsn)
    }

    /// Opening the disk: a record failing its checksum and everything after it are dropped (the
    /// site resyncs them from the group). Returns how many records were dropped.
    pub fn recover(&self) -> usize {
        self.lock().recover()
    }

    /// How many handles share this disk: the world's, its site's running node's, and the
    /// caller's. Once a run is over only the caller's may be left; more means a task outlived it.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Records a crash would lose now.
    pub fn unsynced(&self) -> usize {
        self.lock().unsynced()
    }

    /// Every record of the log (after the snapshot).
    pub fn log(&self) -> Result<Vec<LogRecord>, StorageError> {
        let mut disk = self.lock();
        let first = disk.first_lsn();
        replication::storage::read_to_end(&mut *disk, first)
    }

    /// The snapshot plus the replayed log: what the site's database must equal.
    pub fn replay(&self) -> Result<Snapshot, StorageError> {
        replication::storage::replay(&mut *self.lock())
    }
}

impl Storage for Disk {
    fn first_lsn(&self) -> Lsn {
        self.lock().first_lsn()
    }
    fn last_lsn(&self) -> Lsn {
        self.lock().last_lsn()
    }
    fn append(&mut self, records: &[LogRecord]) -> Result<(), StorageError> {
        self.lock().append(records)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.lock().sync()
    }
    fn read(&mut self, from: Lsn, max: usize) -> Result<Vec<LogRecord>, StorageError> {
        self.lock().read(from, max)
    }
    fn truncate_after(&mut self, lsn: Lsn) -> Result<(), StorageError> {
        self.lock().truncate_after(lsn)
    }
    fn write_snapshot(&mut self, snapshot: &Snapshot, keep_log: bool) -> Result<(), StorageError> {
        self.lock().write_snapshot(snapshot, keep_log)
    }
    fn read_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        self.lock().read_snapshot()
    }
    fn write_meta(&mut self, meta: &Meta) -> Result<(), StorageError> {
        self.lock().write_meta(meta)
    }
    fn read_meta(&mut self) -> Result<Option<Meta>, StorageError> {
        self.lock().read_meta()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replication::log::RecordBody;
    use replication::Txn;

    #[test]
    fn the_disk_outlives_its_user_and_a_crash_loses_only_unsynced_records() {
        let disk = Disk::new();
        let mut user = disk.clone();
        let rec = |lsn| LogRecord::new(lsn, 1, RecordBody::Txn(Txn::put("k", "v")));
        user.append(&[rec(1)]).unwrap();
        user.sync().unwrap();
        user.append(&[rec(2)]).unwrap();
        drop(user);
        assert_eq!(disk.unsynced(), 1);
        disk.crash();
        assert_eq!(disk.last_lsn(), 1);
    }
}
