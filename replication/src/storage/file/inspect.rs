//! Read-only access to the files of a [`FileStorage`](super::FileStorage) directory, for tools
//! that copy or check a directory without opening it (`repsite replica`).
//!
//! Opening a `FileStorage` repairs what it finds (truncates a torn tail, deletes leftovers), and
//! only the site that owns a directory may do that: a copy tool reading a running site's
//! directory must never write to it. Everything here only reads. It lives beside `file.rs` so
//! that the file layout is known in one place: the checks are the ones opening runs.

use super::{
    corrupt, decode_checksummed, decode_frame, io_err, log_header, split_frame_header,
    SnapshotFile, FILE_HEADER_LEN, FRAME_HEADER_LEN, LOG_HEADER_LEN, LOG_MAGIC, MAX_RECORD_BYTES,
    META_FILE, META_MAGIC, SNAPSHOT_FILE, SNAPSHOT_MAGIC,
};
use crate::log::LogRecord;
use crate::storage::{Meta, StorageError};
use crate::types::{LogPos, Lsn};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Name of the snapshot file in a storage directory.
pub const SNAPSHOT_FILE_NAME: &str = SNAPSHOT_FILE;
/// Name of the metadata file in a storage directory.
pub const META_FILE_NAME: &str = META_FILE;
/// Length of a log file's header; the first frame starts here.
pub const LOG_FILE_HEADER_LEN: u64 = LOG_HEADER_LEN;
/// Length of a snapshot or metadata file's header: magic, format version, the payload's CRC-32
/// and its length. Two such files of one directory with the same header and length hold the
/// same payload, short of a CRC collision.
pub const CHECKSUMMED_FILE_HEADER_LEN: usize = FILE_HEADER_LEN;

/// The header every log file of this format starts with.
pub fn log_file_header() -> [u8; LOG_HEADER_LEN as usize] {
    log_header()
}

/// Name of the log file of `epoch`.
pub fn log_file_name(epoch: u64) -> String {
    super::log_file_name(epoch)
}

/// The epoch of `name` if it is a log file's name (`log.<digits>`).
pub fn log_file_epoch(name: &str) -> Option<u64> {
    name.strip_prefix("log.")
        .filter(|epoch| !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|epoch| epoch.parse().ok())
}

/// What a verified snapshot file says: which log continues it, and from where.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SnapshotFileInfo {
    /// Epoch of the log file that continues the snapshot.
    pub epoch: u64,
    /// Position of the snapshot; the log starts right after it.
    pub pos: LogPos,
}

/// Verifies the contents of a snapshot file read from `path` (checksum, format, decoding).
pub fn check_snapshot_file(bytes: &[u8], path: &Path) -> Result<SnapshotFileInfo, StorageError> {
    let file: SnapshotFile = decode_checksummed(bytes, path, SNAPSHOT_MAGIC, "snapshot file")?;
    Ok(SnapshotFileInfo {
        epoch: file.epoch,
        pos: file.snapshot.pos(),
    })
}

/// Verifies and decodes the contents of a metadata file read from `path`.
pub fn check_meta_file(bytes: &[u8], path: &Path) -> Result<Meta, StorageError> {
    decode_checksummed(bytes, path, META_MAGIC, "meta file")
}

/// One verified frame of a log file.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LogFrame {
    /// Byte offset of the frame in the file.
    pub offset: u64,
    /// The frame exactly as stored (header and payload): what a copy writes.
    pub bytes: Vec<u8>,
    /// The record it holds.
    pub record: LogRecord,
}

/// What reading the next frame found.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum NextFrame {
    /// An intact frame holding the expected LSN.
    Frame(LogFrame),
    /// The file ends exactly after the last frame.
    End,
    /// The file ends inside a frame: a crash tore it, or its writer is still writing it.
    Torn {
        /// Where the incomplete frame starts.
        offset: u64,
        /// What is missing.
        detail: String,
    },
}

/// Reads a log file's frames in order, verifying each one (frame checksum, record checksum,
/// consecutive LSNs) as opening a storage does. Never writes. Reading a file that its site is
/// appending to is fine: a frame still being written shows up as [`NextFrame::Torn`].
///
/// The bytes come from a local file, or from any other reader with the file's contents (`repsite
/// replica --from-site` reads a remote site's file through its admin port): the checks are the
/// same wherever the bytes come from.
#[derive(Debug)]
pub struct LogReader<R = File> {
    reader: BufReader<R>,
    path: PathBuf,
    pos: u64,
    next_lsn: Lsn,
}

impl LogReader<File> {
    /// Opens the log file at `path` and checks its header; its first record must be `first_lsn`
    /// (one past the snapshot it continues).
    pub fn open(path: &Path, first_lsn: Lsn) -> Result<LogReader<File>, StorageError> {
        let file = File::open(path).map_err(io_err("open", path))?;
        LogReader::from_reader(file, path, first_lsn)
    }
}

impl<R: Read + Seek> LogReader<R> {
    /// Reads a log file's contents from `source`, positioned at its start, and checks its header.
    /// `path` names the file in errors.
    pub fn from_reader(
        source: R,
        path: &Path,
        first_lsn: Lsn,
    ) -> Result<LogReader<R>, StorageError> {
        // The header is read before any buffering, so that a reader paying per byte (a remote
        // site's file) moves only what is read next: from a seek, only the frames after it.
        let mut source = source;
        let mut header = [0; LOG_HEADER_LEN as usize];
        let got = read_up_to(&mut source, &mut header).map_err(io_err("read", path))?;
        let reader = LogReader {
            reader: BufReader::with_capacity(1 << 16, source),
            path: path.to_path_buf(),
            pos: got as u64,
            next_lsn: first_lsn,
        };
        if got < header.len() {
            return Err(corrupt(
                "log header",
                path,
                format!("{got} bytes, shorter than the {LOG_HEADER_LEN}-byte header"),
            ));
        }
        if header != log_header() {
            let detail = if header[..8] == LOG_MAGIC[..] {
                let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
                super::other_format(version)
            } else {
                format!("bad magic {:02x?}", &header[..8])
            };
            return Err(corrupt("log header", path, detail));
        }
        Ok(reader)
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the next frame starts, and the LSN it must hold.
    pub fn position(&self) -> (u64, Lsn) {
        (self.pos, self.next_lsn)
    }

    /// Continues at byte `offset`, which must be a frame boundary found by an earlier read of
    /// this file, expecting the record at `lsn` there.
    pub fn seek(&mut self, offset: u64, lsn: Lsn) -> Result<(), StorageError> {
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(io_err("seek", &self.path))?;
        self.pos = offset;
        self.next_lsn = lsn;
        Ok(())
    }

    /// Reads and verifies the next frame. A complete frame that fails its checksum, or an intact
    /// record out of order, is an error naming the file and the byte offset.
    pub fn next_frame(&mut self) -> Result<NextFrame, StorageError> {
        let offset = self.pos;
        let lsn = self.next_lsn;
        let mut header = [0; FRAME_HEADER_LEN as usize];
        let got = self.read_up_to(&mut header)?;
        if got == 0 {
            return Ok(NextFrame::End);
        }
        if got < header.len() {
            return Ok(self.torn(
                offset,
                format!("LSN {lsn}: {got} of {FRAME_HEADER_LEN} frame header bytes"),
            ));
        }
        let (length, crc) = split_frame_header(header);
        if header == [0; FRAME_HEADER_LEN as usize] {
            // The zeros the file is extended with ahead of its records: the end, for now (a
            // later read of a file still being written finds the next frame here).
            let _ = self.torn(offset, String::new());
            return Ok(NextFrame::End);
        }
        if length > MAX_RECORD_BYTES {
            return Err(corrupt(
                "log record",
                &self.path,
                format!(
                    "byte offset {offset} (LSN {lsn}) claims {length} bytes, over the \
                     {MAX_RECORD_BYTES}-byte limit"
                ),
            ));
        }
        let mut bytes = vec![0; FRAME_HEADER_LEN as usize + length as usize];
        bytes[..header.len()].copy_from_slice(&header);
        let got = self.read_up_to(&mut bytes[header.len()..])?;
        if got < length as usize {
            return Ok(self.torn(
                offset,
                format!("LSN {lsn}: {got} of {length} payload bytes"),
            ));
        }
        let record = decode_frame(&bytes[header.len()..], crc).map_err(|why| {
            corrupt(
                "log record",
                &self.path,
                format!("byte offset {offset} (LSN {lsn}): {why}"),
            )
        })?;
        if record.lsn != lsn {
            return Err(corrupt(
                "log",
                &self.path,
                format!(
                    "byte offset {offset} holds LSN {} where LSN {lsn} was expected",
                    record.lsn
                ),
            ));
        }
        self.next_lsn += 1;
        Ok(NextFrame::Frame(LogFrame {
            offset,
            bytes,
            record,
        }))
    }

    /// Leaves the reader at the start of the torn frame, so a later read (of a file still being
    /// written) tries the same frame again.
    fn torn(&mut self, offset: u64, detail: String) -> NextFrame {
        // A failed seek only means the next read errs; the torn frame is reported either way.
        let _ = self.reader.seek(SeekFrom::Start(offset));
        self.pos = offset;
        NextFrame::Torn { offset, detail }
    }

    /// Fills `buf` as far as the file goes; returns how many bytes were read.
    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize, StorageError> {
        let filled = read_up_to(&mut self.reader, buf).map_err(io_err("read", &self.path))?;
        self.pos += filled as u64;
        Ok(filled)
    }
}

/// Fills `buf` from `source` as far as it goes; returns how many bytes were read.
fn read_up_to(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::super::FileStorage;
    use super::*;
    use crate::log::{RecordBody, Snapshot, Txn};
    use crate::storage::Storage;
    use std::fs;
    use std::io::Write;

    fn rec(lsn: Lsn) -> LogRecord {
        LogRecord::new(
            lsn,
            1,
            RecordBody::Txn(Txn::put(format!("k{lsn}"), format!("v{lsn}"))),
        )
    }

    fn storage_with(dir: &Path, last: Lsn) -> FileStorage {
        let (mut s, _) = FileStorage::open(dir).unwrap();
        s.append(&(1..=last).map(rec).collect::<Vec<_>>()).unwrap();
        s.sync().unwrap();
        s
    }

    fn read_all(reader: &mut LogReader) -> (Vec<LogRecord>, NextFrame) {
        let mut records = Vec::new();
        loop {
            match reader.next_frame().unwrap() {
                NextFrame::Frame(frame) => records.push(frame.record),
                end => return (records, end),
            }
        }
    }

    #[test]
    fn reads_back_every_record_a_storage_wrote_and_leaves_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        drop(storage_with(dir.path(), 5));
        let path = dir.path().join(log_file_name(0));
        let before = fs::read(&path).unwrap();
        let mut reader = LogReader::open(&path, 1).unwrap();
        let (records, end) = read_all(&mut reader);
        assert_eq!(records, (1..=5).map(rec).collect::<Vec<_>>());
        assert_eq!(end, NextFrame::End);
        // It stops where the records end: the zeros after them are room for the next ones.
        let (at, lsn) = reader.position();
        assert_eq!(lsn, 6);
        assert!(at < before.len() as u64 && before[at as usize..].iter().all(|&b| b == 0));
        assert_eq!(fs::read(&path).unwrap(), before, "reading never writes");
        // A record written there later is read from there.
        let (mut s, _) = FileStorage::open(dir.path()).unwrap();
        s.append(&[rec(6)]).unwrap();
        s.sync().unwrap();
        let (records, end) = read_all(&mut reader);
        assert_eq!((records, end), (vec![rec(6)], NextFrame::End));
    }

    #[test]
    fn a_torn_tail_is_reported_and_read_again_once_complete() {
        let dir = tempfile::tempdir().unwrap();
        drop(storage_with(dir.path(), 3));
        let path = dir.path().join(log_file_name(0));
        let whole = fs::read(&path).unwrap();
        let mut reader = LogReader::open(&path, 1).unwrap();
        let second = match (reader.next_frame().unwrap(), reader.next_frame().unwrap()) {
            (NextFrame::Frame(_), NextFrame::Frame(f)) => f,
            other => panic!("{other:?}"),
        };
        let third_at = second.offset + second.bytes.len() as u64;
        // Cut the file inside the third frame, as a writer caught mid-write would leave it.
        fs::write(&path, &whole[..third_at as usize + 10]).unwrap();
        let mut reader = LogReader::open(&path, 1).unwrap();
        let (records, end) = read_all(&mut reader);
        assert_eq!(records.len(), 2);
        assert!(
            matches!(end, NextFrame::Torn { offset, .. } if offset == third_at),
            "{end:?}"
        );
        // The writer finishes: the same reader picks the frame up.
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&whole[third_at as usize + 10..]).unwrap();
        let (records, end) = read_all(&mut reader);
        assert_eq!(records, vec![rec(3)]);
        assert_eq!(end, NextFrame::End);
    }

    #[test]
    fn a_damaged_frame_is_an_error_naming_the_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        drop(storage_with(dir.path(), 3));
        let path = dir.path().join(log_file_name(0));
        let mut reader = LogReader::open(&path, 1).unwrap();
        read_all(&mut reader);
        let mut bytes = fs::read(&path).unwrap();
        let last = reader.position().0 as usize - 1; // the last record's last byte
        bytes[last] ^= 0x55;
        fs::write(&path, bytes).unwrap();
        let mut reader = LogReader::open(&path, 1).unwrap();
        let err = loop {
            match reader.next_frame() {
                Ok(NextFrame::Frame(_)) => continue,
                Ok(other) => panic!("damage not found: {other:?}"),
                Err(err) => break err,
            }
        };
        let text = err.to_string();
        assert!(text.contains("log.0") && text.contains("LSN 3"), "{text}");
    }

    #[test]
    fn a_log_that_does_not_start_where_expected_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(storage_with(dir.path(), 2));
        let mut reader = LogReader::open(&dir.path().join(log_file_name(0)), 7).unwrap();
        let err = reader.next_frame().unwrap_err().to_string();
        assert!(err.contains("LSN 7 was expected"), "{err}");
    }

    #[test]
    fn snapshot_and_meta_files_are_checked_like_opening_does() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = storage_with(dir.path(), 4);
        let mut snapshot = Snapshot::default();
        for r in (1..=2).map(rec) {
            snapshot.history.note_append(&r);
            snapshot.db.apply(&r);
        }
        s.write_snapshot(&snapshot, true).unwrap();
        s.write_meta(&Meta {
            gen: 3,
            ..Meta::default()
        })
        .unwrap();
        drop(s);
        let snap_path = dir.path().join(SNAPSHOT_FILE_NAME);
        let info = check_snapshot_file(&fs::read(&snap_path).unwrap(), &snap_path).unwrap();
        assert_eq!(
            info,
            SnapshotFileInfo {
                epoch: 1,
                pos: LogPos::new(1, 2)
            }
        );
        let meta_path = dir.path().join(META_FILE_NAME);
        let meta = check_meta_file(&fs::read(&meta_path).unwrap(), &meta_path).unwrap();
        assert_eq!(meta.gen, 3);
        let mut damaged = fs::read(&snap_path).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let err = check_snapshot_file(&damaged, &snap_path).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        assert!(check_meta_file(b"short", &meta_path).is_err());
    }

    #[test]
    fn log_file_names_round_trip_and_others_are_not_logs() {
        assert_eq!(log_file_epoch(&log_file_name(12)), Some(12));
        for other in ["log.", "log.x", "log.1.tmp", "snapshot", "messages.log"] {
            assert_eq!(log_file_epoch(other), None, "{other}");
        }
    }
}
