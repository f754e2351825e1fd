//! In-memory storage with crash semantics: appended records that were never synced are lost by
//! [`MemStorage::crash`], exactly what a power failure does to a file. Used by unit and property
//! tests of the core; the simulator's faulty disk builds on the same idea with more faults.

use super::{Meta, Storage, StorageError};
use crate::log::{LogRecord, Snapshot};
use crate::types::Lsn;

/// Storage held in memory.
#[derive(Clone, Default, Debug)]
pub struct MemStorage {
    snapshot: Snapshot,
    /// Records after the snapshot, consecutive.
    log: Vec<LogRecord>,
    /// How many of `log` are durable.
    synced: usize,
    meta: Option<Meta>,
    /// Syncs so far (what group commit saves).
    syncs: u64,
}

impl MemStorage {
    /// Empty storage: no snapshot, no log, no metadata.
    pub fn new() -> Self {
        MemStorage::default()
    }

    /// How many times the storage was synced.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Simulates a crash: records appended since the last sync are lost.
    pub fn crash(&mut self) {
        self.log.truncate(self.synced);
    }

    /// A crash that tears the first unsynced record instead of losing it whole: it stays, with
    /// contents that no longer match its checksum (what a half-written block looks like).
    pub fn crash_tearing(&mut self) {
        if self.log.len() > self.synced {
            self.log.truncate(self.synced + 1);
            self.log[self.synced].checksum ^= 0x5a5a_5a5a;
            self.synced = self.log.len();
        }
    }

    /// Damages the record at `lsn` (bit rot): it fails its checksum from now on, however often
    /// it is damaged again (rot does not heal). False if the log does not hold that LSN.
    pub fn corrupt(&mut self, lsn: Lsn) -> bool {
        match self.index_of(lsn) {
            Some(i) => {
                let record = &mut self.log[i];
                if record.is_intact() {
                    record.checksum ^= 0xa5a5_a5a5;
                }
                true
            }
            None => false,
        }
    }

    /// What a file storage does when it opens: finds the first record that fails its checksum
    /// and truncates the log there. Returns how many records were dropped.
    pub fn recover(&mut self) -> usize {
        match self.log.iter().position(|r| !r.is_intact()) {
            Some(bad) => {
                let dropped = self.log.len() - bad;
                self.log.truncate(bad);
                self.synced = self.synced.min(bad);
                dropped
            }
            None => 0,
        }
    }

    /// Number of appended records that a crash would lose.
    pub fn unsynced(&self) -> usize {
        self.log.len() - self.synced
    }

    fn index_of(&self, lsn: Lsn) -> Option<usize> {
        let first = self.first_lsn();
        (lsn >= first && lsn <= self.last_lsn()).then(|| (lsn - first) as usize)
    }
}

impl Storage for MemStorage {
    fn first_lsn(&self) -> Lsn {
        self.snapshot.pos().lsn + 1
    }

    fn last_lsn(&self) -> Lsn {
        self.snapshot.pos().lsn + self.log.len() as u64
    }

    fn append(&mut self, records: &[LogRecord]) -> Result<(), StorageError> {
        super::check_continues(self.last_lsn(), records)?;
        self.log.extend_from_slice(records);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.synced = self.log.len();
        self.syncs += 1;
        Ok(())
    }

    fn read(&mut self, from: Lsn, max: usize) -> Result<Vec<LogRecord>, StorageError> {
        let Some(start) = self.index_of(from) else {
            return Err(StorageError::Invalid(format!(
                "read from LSN {from} outside the log {}..={}",
                self.first_lsn(),
                self.last_lsn()
            )));
        };
        let end = (start + max).min(self.log.len());
        let records = self.log[start..end].to_vec();
        if let Some(bad) = records.iter().find(|r| !r.is_intact()) {
            return Err(StorageError::Corrupt {
                what: "log record",
                path: "memory".into(),
                detail: format!("checksum mismatch at LSN {}", bad.lsn),
            });
        }
        Ok(records)
    }

    fn truncate_after(&mut self, lsn: Lsn) -> Result<(), StorageError> {
        if lsn < self.snapshot.pos().lsn {
            return Err(StorageError::Invalid(format!(
                "truncate after LSN {lsn}, before the snapshot at {}",
                self.snapshot.pos()
            )));
        }
        let keep = (lsn - self.snapshot.pos().lsn) as usize;
        self.log.truncate(keep);
        self.synced = self.synced.min(keep);
        Ok(())
    }

    fn write_snapshot(&mut self, snapshot: &Snapshot, keep_log: bool) -> Result<(), StorageError> {
        let at = snapshot.pos().lsn;
        if keep_log {
            if at < self.snapshot.pos().lsn || at > self.last_lsn() {
                return Err(StorageError::Invalid(format!(
                    "archive at LSN {at} outside the log {}..={}",
                    self.first_lsn(),
                    self.last_lsn()
                )));
            }
            let drop = (at - self.snapshot.pos().lsn) as usize;
            // Archiving only covers durable records: keep the unsynced tail unsynced.
            self.log.drain(..drop);
            self.synced = self.synced.saturating_sub(drop);
        } else {
            self.log.clear();
            self.synced = 0;
        }
        self.snapshot = snapshot.clone();
        Ok(())
    }

    fn read_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }

    fn write_meta(&mut self, meta: &Meta) -> Result<(), StorageError> {
        self.meta = Some(meta.clone());
        Ok(())
    }

    fn read_meta(&mut self) -> Result<Option<Meta>, StorageError> {
        Ok(self.meta.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{RecordBody, Txn};
    use crate::storage::replay;

    fn rec(lsn: Lsn) -> LogRecord {
        LogRecord::new(lsn, 1, RecordBody::Txn(Txn::put(format!("k{lsn}"), "v")))
    }

    #[test]
    fn a_crash_loses_only_unsynced_records() {
        let mut s = MemStorage::new();
        s.append(&[rec(1), rec(2)]).unwrap();
        s.sync().unwrap();
        s.append(&[rec(3)]).unwrap();
        s.crash();
        assert_eq!(s.last_lsn(), 2);
    }

    #[test]
    fn append_refuses_a_gap() {
        let mut s = MemStorage::new();
        assert!(s.append(&[rec(2)]).is_err());
    }

    #[test]
    fn archiving_keeps_the_replay_unchanged() {
        let mut s = MemStorage::new();
        s.append(&[rec(1), rec(2), rec(3)]).unwrap();
        s.sync().unwrap();
        let before = replay(&mut s).unwrap();
        let mut at2 = MemStorage::new();
        at2.append(&[rec(1), rec(2)]).unwrap();
        let snap = replay(&mut at2).unwrap();
        s.write_snapshot(&snap, true).unwrap();
        assert_eq!(s.first_lsn(), 3);
        assert!(s.read(2, 10).is_err(), "archived records are not served");
        assert_eq!(replay(&mut s).unwrap(), before);
    }

    #[test]
    fn damage_does_not_heal_when_it_strikes_twice() {
        let mut s = MemStorage::new();
        s.append(&[rec(1)]).unwrap();
        assert!(s.corrupt(1));
        assert!(s.corrupt(1));
        assert!(matches!(s.read(1, 1), Err(StorageError::Corrupt { .. })));
        assert_eq!(s.recover(), 1);
    }

    #[test]
    fn a_corrupt_record_is_never_served() {
        let mut s = MemStorage::new();
        let mut bad = rec(1);
        bad.gen = 9; // contents changed after the checksum was computed
        s.append(&[bad]).unwrap();
        assert!(matches!(s.read(1, 1), Err(StorageError::Corrupt { .. })));
    }
}
