//! File-backed storage for `repsite` (being written).

use super::{Meta, Storage, StorageError};
use crate::log::{LogRecord, Snapshot};
use crate::types::Lsn;

/// Storage in a directory on disk.
#[derive(Debug)]
pub struct FileStorage {
    _private: (),
}

impl Storage for FileStorage {
    fn first_lsn(&self) -> Lsn {
        unimplemented!()
    }
    fn last_lsn(&self) -> Lsn {
        unimplemented!()
    }
    fn append(&mut self, _: &[LogRecord]) -> Result<(), StorageError> {
        unimplemented!()
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        unimplemented!()
    }
    fn read(&mut self, _: Lsn, _: usize) -> Result<Vec<LogRecord>, StorageError> {
        unimplemented!()
    }
    fn truncate_after(&mut self, _: Lsn) -> Result<(), StorageError> {
        unimplemented!()
    }
    fn write_snapshot(&mut self, _: &Snapshot, _: bool) -> Result<(), StorageError> {
        unimplemented!()
    }
    fn read_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        unimplemented!()
    }
    fn write_meta(&mut self, _: &Meta) -> Result<(), StorageError> {
        unimplemented!()
    }
    fn read_meta(&mut self) -> Result<Option<Meta>, StorageError> {
        unimplemented!()
    }
}
