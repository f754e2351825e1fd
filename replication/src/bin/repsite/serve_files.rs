//! The admin protocol's read-only view of a site's storage files: what `repsite replica
//! --from-site` pulls a cold standby through.
//!
//! A client opens a file by name and reads it by offset. Only the storage's own files can be
//! named (`snapshot`, `meta`, `log.<epoch>`), never a path, so the admin port cannot be made to
//! read anything else. An opened file stays open until it is closed or the connection ends: a
//! file the site replaces (a new snapshot renamed over the old one) or deletes (a log file
//! archived away) keeps, for its reader, the contents it had, exactly as a local reader's open
//! file does. That is what lets the copy stand for one instant of the site's storage (see
//! `replica.rs`). Nothing here writes.

use base64::Engine as _;
use replication::storage::file_inspect::{log_file_epoch, META_FILE_NAME, SNAPSHOT_FILE_NAME};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Files one connection may hold open at once: a copy needs three.
pub const MAX_OPEN_FILES: usize = 8;
/// Most bytes one read answers with (the response line carries them in base64).
pub const MAX_READ_BYTES: u64 = 1 << 20;

/// Why a file request failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The name is not one of the storage's files.
    #[error("{0:?} is not a storage file: the names are `snapshot`, `meta` and `log.<epoch>`")]
    NotAStorageFile(String),
    /// The storage has no such file (now).
    #[error("the site has no file {0:?}")]
    NotFound(String),
    /// The handle was never opened on this connection, or was closed.
    #[error("no open file has handle {0}")]
    NoSuchHandle(u64),
    /// Too many files open on this connection.
    #[error("{MAX_OPEN_FILES} files are open on this connection already; close one first")]
    TooMany,
    /// Reading failed.
    #[error("reading {name}: {source}")]
    Io {
        /// The file.
        name: String,
        /// Why.
        source: io::Error,
    },
}

/// Whether `name` is one of a storage directory's files.
pub fn is_storage_file(name: &str) -> bool {
    name == SNAPSHOT_FILE_NAME || name == META_FILE_NAME || log_file_epoch(name).is_some()
}

/// The files one admin connection has open, by handle.
#[derive(Debug)]
pub struct OpenFiles {
    dir: PathBuf,
    files: BTreeMap<u64, (String, File)>,
    next_handle: u64,
}

impl OpenFiles {
    /// No file open yet, in the data directory `dir`.
    pub fn new(dir: &Path) -> OpenFiles {
        OpenFiles {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            next_handle: 1,
        }
    }

    /// Opens the storage file `name`; its handle and its length now.
    pub fn open(&mut self, name: &str) -> Result<(u64, u64), FileError> {
        if !is_storage_file(name) {
            return Err(FileError::NotAStorageFile(name.into()));
        }
        if self.files.len() >= MAX_OPEN_FILES {
            return Err(FileError::TooMany);
        }
        let io = |source: io::Error| FileError::Io {
            name: name.into(),
            source,
        };
        let file = match File::open(self.dir.join(name)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(FileError::NotFound(name.into()))
            }
            Err(e) => return Err(io(e)),
        };
        let len = file.metadata().map_err(io)?.len();
        let handle = self.next_handle;
        self.next_handle += 1;
        self.files.insert(handle, (name.into(), file));
        Ok((handle, len))
    }

    /// Up to `max_bytes` (capped at [`MAX_READ_BYTES`]) from `offset`, base64-encoded; fewer
    /// only at the file's end (none past it).
    pub fn read(&mut self, handle: u64, offset: u64, max_bytes: u64) -> Result<String, FileError> {
        let (name, file) = self
            .files
            .get_mut(&handle)
            .ok_or(FileError::NoSuchHandle(handle))?;
        let io = |source: io::Error| FileError::Io {
            name: name.clone(),
            source,
        };
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(max_bytes.min(MAX_READ_BYTES))
            .read_to_end(&mut bytes)
            .map_err(io)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// Closes a file.
    pub fn close(&mut self, handle: u64) -> Result<(), FileError> {
        self.files
            .remove(&handle)
            .map(drop)
            .ok_or(FileError::NoSuchHandle(handle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn decode(data: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap()
    }

    #[test]
    fn only_storage_files_can_be_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("secret"), b"x").unwrap();
        let mut files = OpenFiles::new(dir.path());
        for name in [
            "secret",
            "../etc/passwd",
            "/etc/passwd",
            "log.0/..",
            "log.",
            "lock",
        ] {
            assert!(
                matches!(files.open(name), Err(FileError::NotAStorageFile(_))),
                "{name}"
            );
        }
        assert!(matches!(files.open("meta"), Err(FileError::NotFound(_))));
    }

    #[test]
    fn reads_by_offset_and_keeps_the_contents_a_replaced_file_had() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("snapshot"), b"old snapshot").unwrap();
        let mut files = OpenFiles::new(dir.path());
        let (handle, len) = files.open("snapshot").unwrap();
        assert_eq!(len, 12);
        // The site writes a new snapshot and renames it over the old one.
        fs::write(dir.path().join("snapshot.tmp"), b"new").unwrap();
        fs::rename(dir.path().join("snapshot.tmp"), dir.path().join("snapshot")).unwrap();
        assert_eq!(decode(&files.read(handle, 4, 100).unwrap()), b"snapshot");
        assert_eq!(decode(&files.read(handle, 0, 3).unwrap()), b"old");
        assert_eq!(decode(&files.read(handle, 50, 3).unwrap()), b"");
        files.close(handle).unwrap();
        assert!(matches!(
            files.read(handle, 0, 1),
            Err(FileError::NoSuchHandle(_))
        ));
        let (again, _) = files.open("snapshot").unwrap();
        assert_ne!(again, handle, "handles are not reused");
        assert_eq!(decode(&files.read(again, 0, 100).unwrap()), b"new");
    }

    #[test]
    fn open_files_per_connection_are_bounded_and_reads_capped() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("log.0"),
            vec![7u8; MAX_READ_BYTES as usize + 5],
        )
        .unwrap();
        let mut files = OpenFiles::new(dir.path());
        let handles: Vec<_> = (0..MAX_OPEN_FILES)
            .map(|_| files.open("log.0").unwrap().0)
            .collect();
        assert!(matches!(files.open("log.0"), Err(FileError::TooMany)));
        let data = files.read(handles[0], 0, u64::MAX).unwrap();
        assert_eq!(decode(&data).len() as u64, MAX_READ_BYTES);
        files.close(handles[1]).unwrap();
        assert!(files.open("log.0").is_ok());
    }
}
