//! File-backed storage for `repsite`: the log, the snapshot the log continues and the metadata
//! record, kept in one directory.
//!
//! Two promises, whatever the disk or a crash did: it never serves a record that fails its
//! checksum (a damaged record is an error or is cut off, never returned), and it never loses a
//! record once `sync` returned, nor a snapshot or metadata record once its write returned. A
//! crash may leave a torn tail; opening finds it, truncates it and says so in [`Recovery`].
//!
//! Files in the directory:
//!
//! - `log.<epoch>`: a header (8-byte magic, u32 LE format version) then one frame per record,
//!   `[u32 LE payload length][u32 LE CRC32 of payload][payload = codec::encode(&LogRecord)]`,
//!   then zeros: the file is extended ahead of its records (see [`DEFAULT_PREALLOCATE_BYTES`]),
//!   and no record encodes to an empty payload, so an all-zero frame header ends the log.
//! - `snapshot`: a checksummed file holding the snapshot and the epoch of the log file that
//!   continues it. Renaming a new one into place is the commit point of archiving and internal
//!   initialisation: the log file it names is complete and synced before, so a crash leaves
//!   either the old (snapshot, log) pair or the new one. No file means epoch 0 and the empty
//!   snapshot.
//! - `meta`: a checksummed file holding [`Meta`].
//! - `*.tmp`, and `log.<n>` for any other epoch: leftovers of an interrupted write or switch,
//!   deleted on open. Any other file is left alone (the directory may be shared).
//!
//! A checksummed file is `[8-byte magic][u32 LE version][u32 LE CRC32 of payload]
//! [u64 LE payload length][payload]`, written to a temporary file, synced, renamed into place,
//! then the directory is synced.
//!
//! Every file operation goes through [`FileSystem`], so the simulator and the crash-point tests
//! (`tests/crash_points.rs`) run this code on a filesystem that crashes as POSIX allows. Each of
//! the six syncs below is needed: removing any one of them makes that test fail. The directory
//! is locked while the storage is open (the `lock` file; it names the holder).

use super::fs::{Cursor, DirLock, FileSystem, FsFile, StdFs};
use super::{Meta, Recovery, Storage, StorageError};
use crate::codec;
use crate::log::{LogRecord, Snapshot};
use crate::types::{LogPos, Lsn};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod inspect;

const LOG_MAGIC: &[u8; 8] = b"RSIMLOG\0";
const SNAPSHOT_MAGIC: &[u8; 8] = b"RSIMSNAP";
const META_MAGIC: &[u8; 8] = b"RSIMMETA";
/// Bumped on any change to any of the three file layouts. 2: a snapshot's generation history
/// holds each generation's first record checksum. 3: payloads in postcard, no longer bincode.
const FORMAT_VERSION: u32 = 3;
const LOG_HEADER_LEN: u64 = 12;
const FRAME_HEADER_LEN: u64 = 8;
const FILE_HEADER_LEN: usize = 24;
/// Largest record payload accepted: a damaged length field must not make us allocate gigabytes,
/// and refusing bigger records on append means no synced record is ever rejected on open.
const MAX_RECORD_BYTES: u32 = 64 << 20;
/// Appended bytes held in memory before they are written (not synced) to the log file.
const WRITE_BUFFER_BYTES: usize = 1 << 20;
/// How far the log file is extended with zeros ahead of its records, by default. A sync of
/// records written inside the file's length need not also make a new length durable: on ext4
/// here an `fdatasync` after such a write takes half as long as after an append (93 against
/// 176 microseconds), and a serial commit waits for two of them. Opening reads the zeros past
/// the last record (to tell them from damage), so the tail is kept small.
pub const DEFAULT_PREALLOCATE_BYTES: u64 = 4 << 20;
/// Records copied per batch when archiving rewrites the log, to bound memory.
const COPY_BATCH: usize = 1024;
const SNAPSHOT_FILE: &str = "snapshot";
const META_FILE: &str = "meta";
const TMP_SUFFIX: &str = ".tmp";
/// A snapshot LSN this large cannot come from a real log; refusing it keeps LSN arithmetic from
/// overflowing on a crafted file.
const MAX_PLAUSIBLE_LSN: Lsn = u64::MAX / 4;

/// What the `snapshot` file holds, as read back (and encoded again, to check it is canonical).
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    epoch: u64,
    snapshot: Snapshot,
}

/// The same layout as [`SnapshotFile`], borrowed, so writing does not clone the database.
#[derive(Serialize)]
struct SnapshotFileRef<'a> {
    epoch: u64,
    snapshot: &'a Snapshot,
}

/// Storage in a directory on disk.
pub struct FileStorage {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    /// Held for as long as this storage is open: one storage per directory.
    _lock: DirLock,
    /// Which `log.<epoch>` file is current (named by the snapshot file).
    epoch: u64,
    /// Position of the snapshot; the snapshot itself stays on disk, it can be large.
    snapshot_pos: LogPos,
    /// False until the first `write_snapshot`: before it the snapshot is the empty one.
    snapshot_on_disk: bool,
    meta: Option<Meta>,
    log: Box<dyn FsFile>,
    log_path: PathBuf,
    /// Byte offset of each record's frame in the log file; entry `i` is LSN `first_lsn() + i`.
    index: Vec<u64>,
    /// Where the log's records end in the file as written; `pending` follows it.
    written: u64,
    /// Length of the log file: zeros from `written` (or the end of `pending`) up to it.
    allocated: u64,
    /// How far ahead of its records the file is extended with zeros (0: never).
    preallocate: u64,
    /// Frames appended but not yet written to the file.
    pending: Vec<u8>,
    /// Whether the file may hold writes or a length change not yet synced. Until it is clear,
    /// a sync must be an `fdatasync` of the whole file; once it is, a sync is one durable write
    /// of the buffered frames ([`FsFile::write_tail_durable`]).
    unsynced: bool,
}

impl fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The index and buffer can be huge; a summary is what a log line needs.
        f.debug_struct("FileStorage")
            .field("dir", &self.dir)
            .field("epoch", &self.epoch)
            .field("snapshot", &self.snapshot_pos)
            .field("first_lsn", &self.first_lsn())
            .field("last_lsn", &self.last_lsn())
            .field("unwritten_bytes", &self.pending.len())
            .finish()
    }
}

impl FileStorage {
    /// Opens (creating if needed) the storage in `dir` on the operating system's filesystem,
    /// repairing a torn or corrupt log tail. The directory is locked while the storage is open:
    /// a second open, by this process or another, fails with [`StorageError::Locked`].
    pub fn open(dir: impl AsRef<Path>) -> Result<(FileStorage, Recovery), StorageError> {
        FileStorage::open_on(StdFs::shared(), dir, &this_process())
    }

    /// Opens the storage in `dir` on `fs`, locking the directory as `holder` (named to whoever
    /// finds it locked).
    pub fn open_on(
        shared_fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        holder: &str,
    ) -> Result<(FileStorage, Recovery), StorageError> {
        let dir = dir.as_ref();
        shared_fs
            .create_dir_all(dir)
            .map_err(io_err("create directory", dir))?;
        // Before reading anything: another storage on this directory may be changing it.
        let lock = shared_fs.lock_dir(dir, holder)?;
        FileStorage::open_locked(shared_fs, lock)
    }

    /// Opens the storage in the directory `lock` holds, on `fs` (for a caller that took the lock
    /// itself, before doing anything else in the directory).
    pub fn open_locked(
        shared_fs: Arc<dyn FileSystem>,
        lock: DirLock,
    ) -> Result<(FileStorage, Recovery), StorageError> {
        let fs = &*shared_fs;
        let dir = lock.dir().to_path_buf();

        // Read everything that decides what is current before deleting anything: a damaged
        // snapshot file must leave every log file in place for the operator.
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot =
            read_checksummed::<SnapshotFile>(fs, &snapshot_path, SNAPSHOT_MAGIC, "snapshot file")?;
        let meta = read_meta(fs, &dir.join(META_FILE))?;
        let (epoch, snapshot_pos) = match &snapshot {
            Some(file) => (file.epoch, file.snapshot.pos()),
            None => (0, LogPos::default()),
        };
        let snapshot_on_disk = snapshot.is_some();
        drop(snapshot);
        if snapshot_pos.lsn > MAX_PLAUSIBLE_LSN {
            return Err(corrupt(
                "snapshot file",
                &snapshot_path,
                format!("implausible snapshot LSN {}", snapshot_pos.lsn),
            ));
        }

        let log_name = log_file_name(epoch);
        let log_path = dir.join(&log_name);
        let log_exists = fs.exists(&log_path).map_err(io_err("stat", &log_path))?;
        if !log_exists && snapshot_on_disk {
            // The snapshot is only written once its log is synced, so this is damage, not a
            // crash; starting an empty log here would silently lose every record after it.
            return Err(corrupt(
                "log",
                &log_path,
                format!("the snapshot names log epoch {epoch} but its file is missing"),
            ));
        }
        remove_leftovers(fs, &dir, &log_name)?;
        if !log_exists {
            create_log_file(fs, &dir, &log_name)?;
        }

        let log = fs.open(&log_path).map_err(io_err("open", &log_path))?;
        let scan = scan_log(&*log, &log_path, snapshot_pos.lsn)?;
        let storage = FileStorage {
            fs: shared_fs.clone(),
            dir,
            _lock: lock,
            epoch,
            snapshot_pos,
            snapshot_on_disk,
            meta,
            log,
            log_path,
            index: scan.index,
            written: scan.end,
            allocated: scan.allocated,
            preallocate: DEFAULT_PREALLOCATE_BYTES,
            pending: Vec::new(),
            // Opening may have cut a torn tail without syncing the cut (see `scan_log`): the
            // first sync is then of the whole file, which makes the cut durable with it.
            unsynced: true,
        };
        Ok((storage, scan.recovery))
    }

    /// Sets how far ahead of its records the log file is extended with zeros from now on (0:
    /// never; the simulator's disks use a small step, so that extensions meet crashes often).
    pub fn set_preallocation(&mut self, bytes: u64) {
        self.preallocate = bytes;
    }

    /// The directory this storage lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the appended records still held in memory to the log file without syncing them:
    /// the state of a `sync` whose `fdatasync` never returned. The simulator calls it before a
    /// power failure in the middle of a write, so the crash can lose, keep or tear them.
    pub fn write_buffered(&mut self) -> Result<(), StorageError> {
        self.flush()
    }

    /// Logical end of the log: the file as written plus the buffered frames.
    fn end(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// Byte offset of record `i` of the log, or the end for one past the last.
    fn offset(&self, i: usize) -> u64 {
        self.index.get(i).copied().unwrap_or_else(|| self.end())
    }

    /// Writes the buffered frames to the file, without syncing, and zeros after them when they
    /// reach past the file's length (see [`DEFAULT_PREALLOCATE_BYTES`]). Retrying after a
    /// failure rewrites from the same offset, so a partial write is overwritten rather than kept.
    fn flush(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.unsynced = true;
        self.log
            .write_at(self.written, &self.pending)
            .map_err(io_err("write", &self.log_path))?;
        let end = self.written + self.pending.len() as u64;
        if end > self.allocated {
            let target = end.next_multiple_of(self.preallocate.max(1));
            self.write_zeros(end, target)?;
            self.allocated = target;
        }
        self.written = end;
        self.pending.clear();
        self.pending.shrink_to(WRITE_BUFFER_BYTES);
        Ok(())
    }

    /// Writes zeros over `from..to` of the log file.
    fn write_zeros(&mut self, from: u64, to: u64) -> Result<(), StorageError> {
        const CHUNK: u64 = 64 << 10;
        let zeros = vec![0; CHUNK.min(to.saturating_sub(from)) as usize];
        let mut at = from;
        while at < to {
            let n = CHUNK.min(to - at) as usize;
            self.log
                .write_at(at, &zeros[..n])
                .map_err(io_err("write", &self.log_path))?;
            at += n as u64;
        }
        Ok(())
    }

    /// Records `start..end` of the log, each verified, with the raw bytes they were read from.
    fn read_batch(
        &mut self,
        start: usize,
        end: usize,
    ) -> Result<(Vec<u8>, Vec<LogRecord>), StorageError> {
        if start >= end {
            return Ok((Vec::new(), Vec::new()));
        }
        let base = self.offset(start);
        let limit = self.offset(end);
        let size = usize::try_from(limit - base).map_err(|_| {
            StorageError::Invalid(format!(
                "a batch of {} bytes does not fit in memory",
                limit - base
            ))
        })?;
        let mut bytes = vec![0; size];
        // What is already in the file, then what is still in the write buffer: reading never
        // writes, so a reader (a checker, a peer's request) cannot change what a crash keeps.
        let file_end = limit.min(self.written).max(base);
        let (from_file, from_buffer) = bytes.split_at_mut((file_end - base) as usize);
        self.log
            .read_at(base, from_file)
            .map_err(io_err("read", &self.log_path))?;
        if !from_buffer.is_empty() {
            // Past the file's end, so `file_end` is where the buffer starts or beyond it.
            let at = (file_end - self.written) as usize;
            from_buffer.copy_from_slice(&self.pending[at..at + from_buffer.len()]);
        }
        let first = self.first_lsn();
        let mut records = Vec::with_capacity(end - start);
        for i in start..end {
            let (from, to) = (self.offset(i), self.offset(i + 1));
            let lsn = first + i as u64;
            // Offsets come from our own index, so these slices are within `bytes`.
            let frame = &bytes[(from - base) as usize..(to - base) as usize];
            let record = check_indexed_frame(frame, lsn).map_err(|why| {
                corrupt(
                    "log record",
                    &self.log_path,
                    format!("LSN {lsn} at byte offset {from}: {why}"),
                )
            })?;
            records.push(record);
        }
        Ok((bytes, records))
    }
}

impl Storage for FileStorage {
    fn first_lsn(&self) -> Lsn {
        self.snapshot_pos.lsn + 1
    }

    fn last_lsn(&self) -> Lsn {
        self.snapshot_pos.lsn + self.index.len() as u64
    }

    fn append(&mut self, records: &[LogRecord]) -> Result<(), StorageError> {
        super::check_continues(self.last_lsn(), records)?;
        let kept = self.pending.len();
        let mut offset = self.end();
        let mut offsets = Vec::with_capacity(records.len());
        for record in records {
            let payload = codec::encode(record);
            let Some(len) = u32::try_from(payload.len())
                .ok()
                .filter(|&len| len <= MAX_RECORD_BYTES)
            else {
                // Nothing of this call may stay behind: the caller sees the append refused.
                self.pending.truncate(kept);
                return Err(StorageError::Invalid(format!(
                    "record at LSN {} encodes to {} bytes, over the {MAX_RECORD_BYTES}-byte limit",
                    record.lsn,
                    payload.len()
                )));
            };
            offsets.push(offset);
            self.pending.extend_from_slice(&len.to_le_bytes());
            self.pending
                .extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            self.pending.extend_from_slice(&payload);
            offset += FRAME_HEADER_LEN + u64::from(len);
        }
        self.index.extend(offsets);
        if self.pending.len() >= WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let end = self.end();
        if !self.unsynced && !self.pending.is_empty() && end <= self.allocated {
            // The common case: new frames inside the preallocated zeros, nothing else unsynced.
            // Until the write returns, the file may hold any part of them: `unsynced` stays set
            // if it fails, so the retry writes them again and syncs the whole file.
            self.unsynced = true;
            self.log
                .write_tail_durable(self.written, &self.pending)
                .map_err(io_err("sync", &self.log_path))?;
            self.unsynced = false;
            self.written = end;
            self.pending.clear();
            self.pending.shrink_to(WRITE_BUFFER_BYTES);
            return Ok(());
        }
        self.flush()?;
        self.log
            .sync_data()
            .map_err(io_err("sync", &self.log_path))?;
        self.unsynced = false;
        Ok(())
    }

    fn read(&mut self, from: Lsn, max: usize) -> Result<Vec<LogRecord>, StorageError> {
        if from < self.first_lsn() || from > self.last_lsn() {
            return Err(StorageError::Invalid(format!(
                "read from LSN {from} outside the log {}..={}",
                self.first_lsn(),
                self.last_lsn()
            )));
        }
        let start = (from - self.first_lsn()) as usize;
        let end = start.saturating_add(max).min(self.index.len());
        Ok(self.read_batch(start, end)?.1)
    }

    fn truncate_after(&mut self, lsn: Lsn) -> Result<(), StorageError> {
        if lsn < self.snapshot_pos.lsn {
            return Err(StorageError::Invalid(format!(
                "truncate after LSN {lsn}, before the snapshot at {}",
                self.snapshot_pos
            )));
        }
        let keep = lsn - self.snapshot_pos.lsn;
        if keep >= self.index.len() as u64 {
            return Ok(());
        }
        let cut = self.offset(keep as usize);
        self.index.truncate(keep as usize);
        if cut >= self.written {
            self.pending.truncate((cut - self.written) as usize);
        } else {
            self.pending.clear();
            self.written = cut;
        }
        // Even when the cut falls in the buffer, shorten the file: a failed flush may have left
        // whole frames of the dropped records there, which a crash would bring back. (The
        // preallocated zeros go with them; the next flush extends the file again.)
        self.log
            .set_len(self.written)
            .map_err(io_err("truncate", &self.log_path))?;
        self.allocated = self.written;
        self.log
            .sync_all()
            .map_err(io_err("sync", &self.log_path))?;
        self.unsynced = false;
        Ok(())
    }

    fn write_snapshot(&mut self, snapshot: &Snapshot, keep_log: bool) -> Result<(), StorageError> {
        let at = snapshot.pos().lsn;
        let keep_from = if keep_log {
            if at < self.snapshot_pos.lsn || at > self.last_lsn() {
                return Err(StorageError::Invalid(format!(
                    "archive at LSN {at} outside the log {}..={}",
                    self.first_lsn(),
                    self.last_lsn()
                )));
            }
            (at - self.snapshot_pos.lsn) as usize
        } else {
            if at > MAX_PLAUSIBLE_LSN {
                return Err(StorageError::Invalid(format!(
                    "snapshot at implausible LSN {at}"
                )));
            }
            self.index.len()
        };
        let new_epoch = self.epoch.checked_add(1).ok_or_else(|| {
            StorageError::Invalid(format!("log epoch {} cannot advance", self.epoch))
        })?;
        let new_name = log_file_name(new_epoch);
        let new_path = self.dir.join(&new_name);
        let tmp_path = self.dir.join(format!("{new_name}{TMP_SUFFIX}"));

        // 1. The new log, complete and synced, under its final name. Not yet current: until the
        //    snapshot names it, opening deletes it as a leftover.
        let fs = self.fs.clone();
        let tmp = fs.create(&tmp_path).map_err(io_err("create", &tmp_path))?;
        let header = log_header();
        tmp.write_at(0, &header)
            .map_err(io_err("write", &tmp_path))?;
        let mut at = header.len() as u64;
        let mut start = keep_from;
        while start < self.index.len() {
            let end = start.saturating_add(COPY_BATCH).min(self.index.len());
            // Verified on the way: a damaged record is never carried into the new log.
            let (bytes, _) = self.read_batch(start, end)?;
            tmp.write_at(at, &bytes)
                .map_err(io_err("write", &tmp_path))?;
            at += bytes.len() as u64;
            start = end;
        }
        tmp.sync_all().map_err(io_err("sync", &tmp_path))?;
        drop(tmp);
        fs.rename(&tmp_path, &new_path)
            .map_err(io_err("rename", &tmp_path))?;
        sync_dir(&*fs, &self.dir)?;
        let new_log = fs.open(&new_path).map_err(io_err("open", &new_path))?;
        let base = self.offset(keep_from);
        let new_index: Vec<u64> = self.index[keep_from..]
            .iter()
            .map(|&offset| offset - base + LOG_HEADER_LEN)
            .collect();
        let new_end = self.end() - base + LOG_HEADER_LEN;

        // 2. The commit point.
        let payload = codec::encode(&SnapshotFileRef {
            epoch: new_epoch,
            snapshot,
        });
        replace_file(
            &*fs,
            &self.dir,
            SNAPSHOT_FILE,
            &checksummed_file(SNAPSHOT_MAGIC, &payload),
        )?;

        // 3. Committed: switch over before anything else can fail, so memory matches the disk.
        let old_path = std::mem::replace(&mut self.log_path, new_path);
        self.log = new_log;
        self.epoch = new_epoch;
        self.snapshot_pos = snapshot.pos();
        self.snapshot_on_disk = true;
        self.index = new_index;
        self.written = new_end;
        self.allocated = new_end;
        self.pending.clear();
        // Written and synced whole before the commit point.
        self.unsynced = false;
        // A failure here only leaves a file that opening deletes; still report it, as any
        // storage error, rather than hide a failing disk.
        fs.remove_file(&old_path)
            .map_err(io_err("remove", &old_path))
    }

    fn read_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        if !self.snapshot_on_disk {
            return Ok(Snapshot::default());
        }
        let path = self.dir.join(SNAPSHOT_FILE);
        let Some(file) =
            read_checksummed::<SnapshotFile>(&*self.fs, &path, SNAPSHOT_MAGIC, "snapshot file")?
        else {
            return Err(corrupt(
                "snapshot file",
                &path,
                "missing after it was written".into(),
            ));
        };
        if file.epoch != self.epoch || file.snapshot.pos() != self.snapshot_pos {
            return Err(corrupt(
                "snapshot file",
                &path,
                format!(
                    "changed behind our back: names epoch {} at {}, expected epoch {} at {}",
                    file.epoch,
                    file.snapshot.pos(),
                    self.epoch,
                    self.snapshot_pos
                ),
            ));
        }
        Ok(file.snapshot)
    }

    fn write_meta(&mut self, meta: &Meta) -> Result<(), StorageError> {
        let bytes = checksummed_file(META_MAGIC, &codec::encode(meta));
        replace_file(&*self.fs, &self.dir, META_FILE, &bytes)?;
        self.meta = Some(meta.clone());
        Ok(())
    }

    fn read_meta(&mut self) -> Result<Option<Meta>, StorageError> {
        Ok(self.meta.clone())
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(what: &'static str, path: &Path, detail: String) -> StorageError {
    StorageError::Corrupt {
        what,
        path: path.display().to_string(),
        detail,
    }
}

fn log_file_name(epoch: u64) -> String {
    format!("log.{epoch}")
}

fn log_header() -> [u8; LOG_HEADER_LEN as usize] {
    let mut header = [0; LOG_HEADER_LEN as usize];
    header[..8].copy_from_slice(LOG_MAGIC);
    header[8..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header
}

/// Takes `N` bytes off the front of `bytes`, or `None` if there are fewer: file contents are
/// parsed with this so that short input is an error, never a panic.
fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = (*bytes).split_first_chunk::<N>()?;
    *bytes = rest;
    Some(*head)
}

/// Makes renames and removals in `dir` durable (a rename is only on disk once its directory is).
fn sync_dir(fs: &dyn FileSystem, dir: &Path) -> Result<(), StorageError> {
    fs.sync_dir(dir).map_err(io_err("sync directory", dir))
}

/// Atomically replaces `dir/name` with `bytes`: temp file, sync, rename, sync the directory.
fn replace_file(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), StorageError> {
    let tmp_path = dir.join(format!("{name}{TMP_SUFFIX}"));
    let tmp = fs.create(&tmp_path).map_err(io_err("create", &tmp_path))?;
    tmp.write_at(0, bytes).map_err(io_err("write", &tmp_path))?;
    tmp.sync_all().map_err(io_err("sync", &tmp_path))?;
    drop(tmp);
    fs.rename(&tmp_path, &dir.join(name))
        .map_err(io_err("rename", &tmp_path))?;
    sync_dir(fs, dir)
}

/// Creates an empty log (header only) the same atomic way, so a log file never has a torn header.
fn create_log_file(fs: &dyn FileSystem, dir: &Path, name: &str) -> Result<(), StorageError> {
    replace_file(fs, dir, name, &log_header())
}

/// Deletes what an interrupted write or switch left: temp files and logs of other epochs.
///
/// Not made durable: a crash that undoes a removal brings back a file the snapshot does not
/// name, which the next open removes again, and creating that name later replaces it.
fn remove_leftovers(
    fs: &dyn FileSystem,
    dir: &Path,
    current_log: &str,
) -> Result<(), StorageError> {
    let mut names = fs.read_dir(dir).map_err(io_err("list", dir))?;
    // Sorted, so that what a crash in the middle leaves does not depend on the listing order.
    names.sort();
    for name in names {
        if name != current_log && is_ours_to_remove(&name) {
            let path = dir.join(&name);
            fs.remove_file(&path).map_err(io_err("remove", &path))?;
        }
    }
    Ok(())
}

/// How this process names itself to another that finds its directory locked.
fn this_process() -> String {
    let program = std::env::args()
        .next()
        .and_then(|arg0| {
            Path::new(&arg0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "a program".into());
    format!("process {} ({program})", std::process::id())
}

fn is_ours_to_remove(name: &str) -> bool {
    let is_log = |n: &str| {
        n.strip_prefix("log.")
            .is_some_and(|epoch| !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_digit()))
    };
    match name.strip_suffix(TMP_SUFFIX) {
        Some(base) => base == SNAPSHOT_FILE || base == META_FILE || is_log(base),
        None => is_log(name),
    }
}

fn checksummed_file(magic: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_HEADER_LEN + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads and verifies a checksummed file; `None` if it does not exist.
fn read_checksummed<T: DeserializeOwned + Serialize>(
    fs: &dyn FileSystem,
    path: &Path,
    magic: &[u8; 8],
    what: &'static str,
) -> Result<Option<T>, StorageError> {
    let bytes = match fs.read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    decode_checksummed(&bytes, path, magic, what).map(Some)
}

/// Reads the metadata file, in its current layout or the one before `Meta::voters_floor`.
fn read_meta(fs: &dyn FileSystem, path: &Path) -> Result<Option<Meta>, StorageError> {
    match read_checksummed::<Meta>(fs, path, META_MAGIC, "meta file") {
        Err(error @ StorageError::Corrupt { .. }) => {
            // A damaged file fails the older layout too, and the first error is the one told.
            let bytes = fs.read(path).map_err(io_err("read", path))?;
            decode_checksummed::<super::MetaWithoutFloor>(&bytes, path, META_MAGIC, "meta file")
                .map(|old| Some(old.into()))
                .map_err(|_| error)
        }
        other => other,
    }
}

/// Why a file of another format version cannot be read, and what to do about it.
pub(crate) fn other_format(version: u32) -> String {
    if version < FORMAT_VERSION {
        format!(
            "format version {version}, this build reads {FORMAT_VERSION}: the directory was \
             written by an older repsite (format 2 and before encode with bincode). Copy its data \
             out with that build, or start this site on an empty directory and let the group \
             initialise it"
        )
    } else {
        format!("format version {version}, this build reads {FORMAT_VERSION}: run a newer build")
    }
}

/// Verifies and decodes the contents of a checksummed file read from `path` (named in errors).
fn decode_checksummed<T: DeserializeOwned + Serialize>(
    bytes: &[u8],
    path: &Path,
    magic: &[u8; 8],
    what: &'static str,
) -> Result<T, StorageError> {
    let bad = |detail: String| corrupt(what, path, detail);
    let mut rest = bytes;
    let (Some(found_magic), Some(version), Some(crc), Some(len)) = (
        take::<8>(&mut rest),
        take::<4>(&mut rest),
        take::<4>(&mut rest),
        take::<8>(&mut rest),
    ) else {
        return Err(bad(format!(
            "{} bytes, shorter than the {FILE_HEADER_LEN}-byte header",
            bytes.len()
        )));
    };
    if &found_magic != magic {
        return Err(bad(format!("bad magic {found_magic:02x?}")));
    }
    let version = u32::from_le_bytes(version);
    if version != FORMAT_VERSION {
        return Err(bad(other_format(version)));
    }
    let len = u64::from_le_bytes(len);
    if len != rest.len() as u64 {
        return Err(bad(format!(
            "header says {len} payload bytes, the file holds {}",
            rest.len()
        )));
    }
    if crc32fast::hash(rest) != u32::from_le_bytes(crc) {
        return Err(bad("checksum mismatch".into()));
    }
    codec::decode(rest, rest.len() as u64).map_err(|e| bad(format!("does not decode: {e}")))
}

/// Decodes and verifies one frame's payload: the frame CRC, then the record's own checksum.
fn decode_frame(payload: &[u8], crc: u32) -> Result<LogRecord, String> {
    if crc32fast::hash(payload) != crc {
        return Err("frame checksum mismatch".into());
    }
    let record: LogRecord = codec::decode(payload, payload.len() as u64)
        .map_err(|e| format!("does not decode: {e}"))?;
    if !record.is_intact() {
        return Err("record checksum mismatch".into());
    }
    Ok(record)
}

/// Verifies a frame whose extent the index gives, expecting the record at `lsn`.
fn check_indexed_frame(frame: &[u8], lsn: Lsn) -> Result<LogRecord, String> {
    let mut payload = frame;
    let (Some(len), Some(crc)) = (take::<4>(&mut payload), take::<4>(&mut payload)) else {
        return Err("frame shorter than its header".into());
    };
    let len = u32::from_le_bytes(len);
    if u64::from(len) != payload.len() as u64 {
        return Err(format!(
            "length field says {len} bytes where the record occupies {}",
            payload.len()
        ));
    }
    let record = decode_frame(payload, u32::from_le_bytes(crc))?;
    if record.lsn != lsn {
        return Err(format!("holds LSN {}", record.lsn));
    }
    Ok(record)
}

/// The log file as found on open.
struct Scan {
    index: Vec<u64>,
    /// Where the valid records end.
    end: u64,
    /// The file's length: zeros from `end` up to it (or `end`, when damage was cut off there).
    allocated: u64,
    recovery: Recovery,
}

impl Scan {
    /// Nothing to repair: records up to `end`, zeros from there to `len`.
    fn clean(index: Vec<u64>, end: u64, len: u64) -> Scan {
        Scan {
            index,
            end,
            allocated: len,
            recovery: Recovery::default(),
        }
    }
}

/// Reads the whole log, indexing every intact record and truncating from the first torn or
/// damaged one.
fn scan_log(file: &dyn FsFile, path: &Path, snapshot_lsn: Lsn) -> Result<Scan, StorageError> {
    let len = file.size().map_err(io_err("stat", path))?;
    if len < LOG_HEADER_LEN {
        // Log files are created whole by rename, so a short header is damage, not a crash.
        return Err(corrupt(
            "log header",
            path,
            format!("{len} bytes, shorter than the {LOG_HEADER_LEN}-byte header"),
        ));
    }
    let mut reader = BufReader::with_capacity(1 << 16, Cursor::new(file, 0, len));
    let mut header = [0; LOG_HEADER_LEN as usize];
    reader
        .read_exact(&mut header)
        .map_err(io_err("read", path))?;
    if header != log_header() {
        let detail = if header[..8] == LOG_MAGIC[..] {
            let mut version = &header[8..];
            let version = take::<4>(&mut version).map_or(0, u32::from_le_bytes);
            other_format(version)
        } else {
            format!("bad magic {:02x?}", &header[..8])
        };
        return Err(corrupt("log header", path, detail));
    }

    let mut index = Vec::new();
    let mut pos = LOG_HEADER_LEN;
    let mut payload = Vec::new();
    let mut damage = None;
    while pos < len {
        let expected = snapshot_lsn + 1 + index.len() as u64;
        let remaining = len - pos;
        if remaining < FRAME_HEADER_LEN {
            if only_zeros(&mut reader, path)? {
                // The last few of the zeros the file was extended with.
                return Ok(Scan::clean(index, pos, len));
            }
            damage = Some(format!(
                "torn record at byte offset {pos} (LSN {expected}): {remaining} of \
                 {FRAME_HEADER_LEN} frame header bytes"
            ));
            break;
        }
        let mut frame_header = [0; FRAME_HEADER_LEN as usize];
        reader
            .read_exact(&mut frame_header)
            .map_err(io_err("read", path))?;
        let (length, crc) = split_frame_header(frame_header);
        if length == 0 {
            // No record encodes to nothing: the zeros the file was extended with, if nothing
            // but zeros follows. Anything else there is a write torn by a crash.
            if frame_header == [0; FRAME_HEADER_LEN as usize] && only_zeros(&mut reader, path)? {
                return Ok(Scan::clean(index, pos, len));
            }
            damage = Some(format!(
                "torn record at byte offset {pos} (LSN {expected}): an empty frame before \
                 bytes that are not the log's zeros"
            ));
            break;
        }
        if length > MAX_RECORD_BYTES {
            damage = Some(format!(
                "record at byte offset {pos} (LSN {expected}) claims {length} bytes, over the \
                 {MAX_RECORD_BYTES}-byte limit"
            ));
            break;
        }
        if u64::from(length) > remaining - FRAME_HEADER_LEN {
            damage = Some(format!(
                "torn record at byte offset {pos} (LSN {expected}): {} of {length} payload bytes",
                remaining - FRAME_HEADER_LEN
            ));
            break;
        }
        payload.resize(length as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(io_err("read", path))?;
        match decode_frame(&payload, crc) {
            Err(why) => {
                damage = Some(format!(
                    "record at byte offset {pos} (LSN {expected}): {why}"
                ));
                break;
            }
            Ok(record) if record.lsn != expected => {
                // An intact record in the wrong place is not crash damage: truncating would
                // throw away records that were synced, so stop and let an operator look.
                let detail = if record.lsn <= snapshot_lsn {
                    format!(
                        "byte offset {pos} holds LSN {}, which the snapshot (up to LSN \
                         {snapshot_lsn}) already covers: this log does not continue the snapshot",
                        record.lsn
                    )
                } else {
                    format!(
                        "byte offset {pos} holds LSN {} where LSN {expected} was expected",
                        record.lsn
                    )
                };
                return Err(corrupt("log", path, detail));
            }
            Ok(_) => {
                index.push(pos);
                pos += FRAME_HEADER_LEN + u64::from(length);
            }
        }
    }
    drop(reader);

    let Some(reason) = damage else {
        return Ok(Scan::clean(index, len, len));
    };
    let dropped_records = count_frames(file, pos, len).map_err(io_err("read", path))?;
    // Not synced: a crash that undoes the cut brings back the same damage, which the next open
    // cuts again, and the next sync of an append makes the new length durable with it.
    file.set_len(pos).map_err(io_err("truncate", path))?;
    Ok(Scan {
        index,
        end: pos,
        allocated: pos,
        recovery: Recovery {
            dropped_records,
            dropped_bytes: len - pos,
            reason: Some(reason),
        },
    })
}

/// Whether everything `reader` has left is zeros.
fn only_zeros(reader: &mut impl Read, path: &Path) -> Result<bool, StorageError> {
    let mut buf = [0; 1 << 14];
    loop {
        let n = reader.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

fn split_frame_header(header: [u8; FRAME_HEADER_LEN as usize]) -> (u32, u32) {
    let mut rest = &header[..];
    let length = take::<4>(&mut rest).map_or(0, u32::from_le_bytes);
    let crc = take::<4>(&mut rest).map_or(0, u32::from_le_bytes);
    (length, crc)
}

/// How many frames lie in `from..len`, walking their length fields as far as they stay plausible
/// (at least one: the damaged one). Only an estimate for the report: the lengths are unverified.
/// The zeros the file was extended with end the count.
fn count_frames(file: &dyn FsFile, from: u64, len: u64) -> io::Result<u64> {
    let mut pos = from;
    let mut count = 0;
    while pos < len {
        if len - pos < FRAME_HEADER_LEN {
            return Ok(count.max(1));
        }
        let mut header = [0; FRAME_HEADER_LEN as usize];
        file.read_at(pos, &mut header)?;
        let (length, _) = split_frame_header(header);
        if length == 0 && count > 0 {
            break;
        }
        count += 1;
        if length == 0
            || length > MAX_RECORD_BYTES
            || u64::from(length) > len - pos - FRAME_HEADER_LEN
        {
            break;
        }
        pos += FRAME_HEADER_LEN + u64::from(length);
    }
    Ok(count.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{RecordBody, Txn};
    use crate::storage::{read_to_end, replay, MemStorage};
    use crate::types::{Gen, SiteAddr};
    use proptest::prelude::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::ops::RangeInclusive;

    fn rec_in(gen: Gen, lsn: Lsn) -> LogRecord {
        LogRecord::new(
            lsn,
            gen,
            RecordBody::Txn(Txn::put(format!("k{lsn}"), format!("v{lsn}"))),
        )
    }

    fn recs(lsns: RangeInclusive<Lsn>) -> Vec<LogRecord> {
        lsns.map(|lsn| rec_in(1, lsn)).collect()
    }

    /// The snapshot a log holding exactly `records` (from LSN 1) replays to.
    fn snapshot_of(records: &[LogRecord]) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for record in records {
            snapshot.history.note_append(record);
            snapshot.db.apply(record);
        }
        snapshot
    }

    fn open(dir: &Path) -> (FileStorage, Recovery) {
        FileStorage::open(dir).unwrap()
    }

    fn open_clean(dir: &Path) -> FileStorage {
        let (s, recovery) = open(dir);
        assert_eq!(recovery, Recovery::default(), "nothing to repair");
        s
    }

    fn storage_with(dir: &Path, lsns: RangeInclusive<Lsn>) -> FileStorage {
        let mut s = open_clean(dir);
        s.append(&recs(lsns)).unwrap();
        s.sync().unwrap();
        s
    }

    /// As [`storage_with`], on a log file that ends with its last record (never extended ahead
    /// of it), as a file does after a crash that kept the records but lost the zeros after them.
    fn storage_ending_with(dir: &Path, lsns: RangeInclusive<Lsn>) -> FileStorage {
        let mut s = open_clean(dir);
        s.set_preallocation(0);
        s.append(&recs(lsns)).unwrap();
        s.sync().unwrap();
        s
    }

    fn all(s: &mut impl Storage) -> Vec<LogRecord> {
        read_to_end(s, 0).unwrap()
    }

    #[test]
    fn a_directory_of_the_older_bincode_format_is_refused_saying_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = storage_with(dir.path(), 1..=3);
        s.write_meta(&Meta {
            gen: 1,
            ..Meta::default()
        })
        .unwrap();
        drop(s);
        // What an older build left: the same layout, format version 2 in every header.
        let older = |name: &str, at: usize| {
            let path = dir.path().join(name);
            let mut bytes = fs::read(&path).unwrap();
            bytes[at..at + 4].copy_from_slice(&2u32.to_le_bytes());
            fs::write(&path, bytes).unwrap();
        };
        older(&log_file_name(0), 8);
        let err = match FileStorage::open(dir.path()) {
            Ok(_) => panic!("an older format was opened"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("format version 2, this build reads 3"),
            "{err}"
        );
        assert!(
            err.contains("older repsite") && err.contains("bincode"),
            "{err}"
        );
        assert!(err.contains("empty directory"), "{err}");
        older(META_FILE, 8);
        fs::write(
            dir.path().join(log_file_name(0)),
            [&LOG_MAGIC[..], &FORMAT_VERSION.to_le_bytes()].concat(),
        )
        .unwrap();
        let err = match FileStorage::open(dir.path()) {
            Ok(_) => panic!("an older format was opened"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("meta") && err.contains("format version 2"),
            "{err}"
        );
    }

    fn file_len(path: &Path) -> u64 {
        fs::metadata(path).unwrap().len()
    }

    fn flip_byte(path: &Path, offset: u64) {
        let mut bytes = fs::read(path).unwrap();
        bytes[offset as usize] ^= 0x55;
        fs::write(path, bytes).unwrap();
    }

    fn append_bytes(path: &Path, extra: &[u8]) {
        let mut file = OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(extra).unwrap();
    }

    fn assert_corrupt_naming(err: StorageError, file: &str) {
        match err {
            StorageError::Corrupt { path, .. } => {
                assert!(path.ends_with(file), "{path} should name {file}")
            }
            other => panic!("expected a Corrupt error naming {file}, got {other}"),
        }
    }

    #[test]
    fn reopen_returns_what_was_synced() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = storage_with(dir.path(), 1..=5);
        assert_eq!(s.dir(), dir.path());
        drop(s);
        s = open_clean(dir.path());
        assert_eq!((s.first_lsn(), s.last_lsn()), (1, 5));
        assert_eq!(all(&mut s), recs(1..=5));
        assert_eq!(s.read(2, 2).unwrap(), recs(2..=3));
        assert_eq!(s.read(5, 0).unwrap(), vec![]);
        s.append(&recs(6..=7)).unwrap();
        s.sync().unwrap();
        drop(s);
        s = open_clean(dir.path());
        assert_eq!(all(&mut s), recs(1..=7));
        assert_eq!(replay(&mut s).unwrap(), snapshot_of(&recs(1..=7)));
    }

    #[test]
    fn reads_outside_the_log_are_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = storage_with(dir.path(), 1..=3);
        assert!(matches!(s.read(0, 1), Err(StorageError::Invalid(_))));
        assert!(matches!(s.read(4, 1), Err(StorageError::Invalid(_))));
        assert_eq!(s.read(3, usize::MAX).unwrap(), recs(3..=3));
    }

    #[test]
    fn append_refuses_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open_clean(dir.path());
        assert!(matches!(
            s.append(&recs(2..=2)),
            Err(StorageError::Invalid(_))
        ));
        s.append(&recs(1..=2)).unwrap();
        // A gap inside a batch refuses the whole batch.
        let batch = vec![rec_in(1, 3), rec_in(1, 5)];
        assert!(matches!(s.append(&batch), Err(StorageError::Invalid(_))));
        assert_eq!(s.last_lsn(), 2);
        s.sync().unwrap();
        drop(s);
        let mut s = open_clean(dir.path());
        assert!(matches!(
            s.append(&recs(4..=4)),
            Err(StorageError::Invalid(_))
        ));
        s.append(&recs(3..=3)).unwrap();
        assert_eq!(all(&mut s), recs(1..=3));
    }

    #[test]
    fn a_torn_last_record_is_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage_ending_with(dir.path(), 1..=3);
        let path = s.log_path.clone();
        let third = s.index[2];
        let third_len = s.end() - third;
        drop(s);
        let len = file_len(&path);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();

        let (mut s, recovery) = open(dir.path());
        assert_eq!(recovery.dropped_records, 1);
        assert_eq!(recovery.dropped_bytes, third_len - 3);
        let reason = recovery.reason.unwrap();
        assert!(
            reason.contains("torn") && reason.contains("LSN 3"),
            "{reason}"
        );
        assert_eq!(
            file_len(&path),
            third,
            "the torn bytes are gone from the file"
        );
        assert_eq!(all(&mut s), recs(1..=2));
        s.append(&recs(3..=3)).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut s = open_clean(dir.path());
        assert_eq!(all(&mut s), recs(1..=3));
    }

    #[test]
    fn garbage_after_the_last_record_is_truncated_on_open() {
        let huge = [u32::MAX.to_le_bytes(), [0; 4]].concat();
        let bad_crc = [8u32.to_le_bytes(), 7u32.to_le_bytes(), [1; 4], [2; 4]].concat();
        let cases: [(&str, &[u8]); 4] = [
            ("partial frame header", &[0xab; 5]),
            (
                "length far past the end",
                &[0x10, 0, 0, 0, 0, 0, 0, 0, 1, 2],
            ),
            ("length over the limit", &huge),
            ("payload failing the frame checksum", &bad_crc),
        ];
        for (case, garbage) in cases {
            let dir = tempfile::tempdir().unwrap();
            let s = storage_ending_with(dir.path(), 1..=3);
            let path = s.log_path.clone();
            drop(s);
            let len = file_len(&path);
            append_bytes(&path, garbage);

            let (mut s, recovery) = open(dir.path());
            assert_eq!(recovery.dropped_records, 1, "{case}");
            assert_eq!(recovery.dropped_bytes, garbage.len() as u64, "{case}");
            assert!(recovery.reason.unwrap().contains("LSN 4"), "{case}");
            assert_eq!(file_len(&path), len, "{case}");
            assert_eq!(all(&mut s), recs(1..=3), "{case}");
        }
    }

    #[test]
    fn the_log_file_is_extended_with_zeros_ahead_of_its_records_and_they_are_no_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = storage_with(dir.path(), 1..=3);
        let path = s.log_path.clone();
        let end = s.end();
        assert_eq!(file_len(&path), DEFAULT_PREALLOCATE_BYTES);
        let bytes = fs::read(&path).unwrap();
        assert!(bytes[end as usize..].iter().all(|&b| b == 0));
        // Appends go into the zeros; the file grows by a whole step only past its length.
        s.set_preallocation(4096);
        s.append(&recs(4..=4)).unwrap();
        s.sync().unwrap();
        assert_eq!(file_len(&path), DEFAULT_PREALLOCATE_BYTES);
        let big = LogRecord::new(5, 1, RecordBody::Txn(Txn::put("big", vec![7u8; 5 << 20])));
        s.append(std::slice::from_ref(&big)).unwrap();
        s.sync().unwrap();
        let grown = file_len(&path);
        assert!(
            grown > DEFAULT_PREALLOCATE_BYTES && grown.is_multiple_of(4096),
            "{grown}"
        );
        drop(s);
        let mut s = open_clean(dir.path());
        assert_eq!(all(&mut s), [recs(1..=4), vec![big]].concat());
        assert_eq!(file_len(&path), grown, "opening keeps the zeros");
        // Reopened, the log continues where its records end, not where the file does.
        s.append(&recs(6..=6)).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut s = open_clean(dir.path());
        assert_eq!(s.last_lsn(), 6);
        assert_eq!(s.read(6, 1).unwrap(), recs(6..=6));
    }

    #[test]
    fn a_sync_makes_durable_the_records_written_out_before_it_as_well_as_the_buffered_ones() {
        // A record past the write buffer is written out (unsynced) when it is appended; the
        // next sync, which may be one durable write of the buffered frames, must cover it too.
        let fs = crate::storage::SimFs::new(1);
        let (mut s, _) = FileStorage::open_on(fs.shared(), "/d", "test").unwrap();
        s.append(&recs(1..=1)).unwrap();
        s.sync().unwrap();
        let big = LogRecord::new(
            2,
            1,
            RecordBody::Txn(Txn::put("big", vec![7u8; WRITE_BUFFER_BYTES + 1])),
        );
        s.append(std::slice::from_ref(&big)).unwrap();
        assert!(s.pending.is_empty(), "written out at once");
        s.append(&recs(3..=3)).unwrap();
        s.sync().unwrap();
        drop(s);
        // The harshest crash: everything unsynced lost.
        fs.crash(&fs.crash_space().plan(0));
        let (mut s, recovery) = FileStorage::open_on(fs.shared(), "/d", "test").unwrap();
        assert_eq!(recovery, Recovery::default());
        assert_eq!(all(&mut s), [recs(1..=1), vec![big], recs(3..=3)].concat());
    }

    #[test]
    fn a_record_torn_inside_the_zeros_is_truncated_and_the_zeros_after_it_count_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage_with(dir.path(), 1..=3);
        let path = s.log_path.clone();
        let (third, end) = (s.index[2], s.end());
        drop(s);
        // A crash kept the third frame's first bytes only: the rest are still the zeros.
        let mut bytes = fs::read(&path).unwrap();
        bytes[(end - 5) as usize..end as usize].fill(0);
        fs::write(&path, &bytes).unwrap();
        let (mut s, recovery) = open(dir.path());
        assert_eq!(recovery.dropped_records, 1, "{recovery:?}");
        assert!(recovery.reason.unwrap().contains("LSN 3"));
        assert_eq!(all(&mut s), recs(1..=2));
        assert_eq!(file_len(&path), third);
        // Bytes that are not zeros after an empty frame are damage too.
        drop(s);
        let len = file_len(&path);
        append_bytes(&path, &[0; 64]);
        append_bytes(&path, &[9; 3]);
        let (mut s, recovery) = open(dir.path());
        assert_eq!(recovery.dropped_bytes, 67, "{recovery:?}");
        assert!(recovery.reason.unwrap().contains("not the log's zeros"));
        assert_eq!(all(&mut s), recs(1..=2));
        assert_eq!(file_len(&path), len);
    }

    #[test]
    fn a_flipped_byte_in_a_middle_record_truncates_the_log_from_there_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage_with(dir.path(), 1..=5);
        let path = s.log_path.clone();
        let third = s.index[2];
        let middle_of_third = (third + FRAME_HEADER_LEN + s.index[3]) / 2;
        drop(s);
        let len = file_len(&path);
        flip_byte(&path, middle_of_third);

        let (mut s, recovery) = open(dir.path());
        assert_eq!(
            recovery.dropped_records, 3,
            "the damaged record and the two after it"
        );
        assert_eq!(recovery.dropped_bytes, len - third);
        let reason = recovery.reason.unwrap();
        assert!(
            reason.contains("LSN 3") && reason.contains("checksum"),
            "{reason}"
        );
        assert_eq!(file_len(&path), third);
        assert_eq!(all(&mut s), recs(1..=2));
        drop(s);
        open_clean(dir.path());
    }

    #[test]
    fn a_record_damaged_after_open_is_reported_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = storage_with(dir.path(), 1..=4);
        let path = s.log_path.clone();
        // One flip in the payload of LSN 2, one in the length field of LSN 4.
        flip_byte(&path, (s.index[1] + FRAME_HEADER_LEN + s.index[2]) / 2);
        flip_byte(&path, s.index[3]);
        assert_eq!(s.read(1, 1).unwrap(), recs(1..=1));
        assert_eq!(s.read(3, 1).unwrap(), recs(3..=3));
        for from in [1, 2] {
            match s.read(from, 10) {
                Err(StorageError::Corrupt { detail, .. }) => {
                    assert!(detail.contains("LSN 2"), "{detail}")
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
        match s.read(4, 1) {
            Err(StorageError::Corrupt { detail, .. }) => {
                assert!(
                    detail.contains("LSN 4") && detail.contains("length"),
                    "{detail}"
                )
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(matches!(replay(&mut s), Err(StorageError::Corrupt { .. })));
        // Archiving refuses to carry a damaged record into a new log.
        let err = s.write_snapshot(&snapshot_of(&recs(1..=1)), true);
        assert!(matches!(err, Err(StorageError::Corrupt { .. })));
        assert_eq!(s.first_lsn(), 1);
    }

    #[test]
    fn a_record_failing_its_own_checksum_is_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open_clean(dir.path());
        let mut bad = rec_in(1, 1);
        bad.gen = 9; // changed after the checksum was computed, as in MemStorage's test
        s.append(&[bad]).unwrap();
        assert!(matches!(s.read(1, 1), Err(StorageError::Corrupt { .. })));
        s.sync().unwrap();
        drop(s);
        let (mut s, recovery) = open(dir.path());
        assert_eq!(recovery.dropped_records, 1);
        assert_eq!(s.last_lsn(), 0);
        assert_eq!(all(&mut s), vec![]);
    }

    #[test]
    fn truncate_after_is_durable_and_the_log_continues_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = storage_with(dir.path(), 1..=5);
        s.truncate_after(3).unwrap();
        assert_eq!(s.last_lsn(), 3);
        drop(s);
        let mut s = open_clean(dir.path());
        assert_eq!(all(&mut s), recs(1..=3));
        // The divergent tail is replaced by the new master's records.
        let new = vec![rec_in(2, 4), rec_in(2, 5)];
        s.append(&new).unwrap();
        // Truncating inside the unwritten buffer works too.
        s.truncate_after(4).unwrap();
        s.sync().unwrap();
        s.truncate_after(9).unwrap();
        assert!(matches!(s.truncate_after(0), Ok(())));
        s.append(&recs(1..=2)).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut s = open_clean(dir.path());
        assert_eq!(all(&mut s), recs(1..=2));
    }

    #[test]
    fn archiving_keeps_the_replay_unchanged_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = storage_with(dir.path(), 1..=5);
        let before = replay(&mut s).unwrap();
        s.write_snapshot(&snapshot_of(&recs(1..=3)), true).unwrap();
        assert_eq!((s.first_lsn(), s.last_lsn()), (4, 5));
        assert!(matches!(s.read(3, 1), Err(StorageError::Invalid(_))));
        assert_eq!(replay(&mut s).unwrap(), before);
        assert!(!dir.path().join("log.0").exists());
        assert!(dir.path().join("log.1").exists());
        // Out of range, as MemStorage refuses it.
        let ahead = snapshot_of(&recs(1..=6));
        assert!(matches!(
            s.write_snapshot(&ahead, true),
            Err(StorageError::Invalid(_))
        ));

        s.append(&recs(6..=6)).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut s = open_clean(dir.path());
        assert_eq!((s.first_lsn(), s.last_lsn()), (4, 6));
        assert_eq!(all(&mut s), recs(4..=6));
        assert_eq!(replay(&mut s).unwrap(), snapshot_of(&recs(1..=6)));
        // Archiving everything leaves an empty log that continues after the snapshot.
        s.write_snapshot(&snapshot_of(&recs(1..=6)), true).unwrap();
        drop(s);
        let mut s = open_clean(dir.path());
        assert_eq!((s.first_lsn(), s.last_lsn()), (7, 6));
        assert_eq!(replay(&mut s).unwrap(), snapshot_of(&recs(1..=6)));
    }

    #[test]
    fn internal_init_empties_the_log_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = storage_with(dir.path(), 1..=3);
        let master = snapshot_of(&recs(1..=7));
        s.write_snapshot(&master, false).unwrap();
        assert_eq!((s.first_lsn(), s.last_lsn()), (8, 7));
        drop(s);
        let mut s = open_clean(dir.path());
        assert_eq!((s.first_lsn(), s.last_lsn()), (8, 7));
        assert_eq!(all(&mut s), vec![]);
        assert_eq!(s.read_snapshot().unwrap(), master);
        assert!(matches!(
            s.append(&recs(9..=9)),
            Err(StorageError::Invalid(_))
        ));
        s.append(&recs(8..=8)).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut s = open_clean(dir.path());
        assert_eq!(replay(&mut s).unwrap(), snapshot_of(&recs(1..=8)));
    }

    #[test]
    fn a_leftover_log_from_an_interrupted_switch_is_removed_and_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        drop(storage_with(d, 1..=3));
        let old_log = fs::read(d.join("log.0")).unwrap();
        // Crashed before the commit: the next log is complete but no snapshot names it.
        let mut newer = old_log.clone();
        newer.truncate(LOG_HEADER_LEN as usize);
        fs::write(d.join("log.1"), &newer).unwrap();
        fs::write(d.join("log.2.tmp"), b"half").unwrap();
        fs::write(d.join("snapshot.tmp"), b"half").unwrap();
        fs::write(d.join("meta.tmp"), b"half").unwrap();
        fs::write(d.join("messages.txt"), b"not ours").unwrap();

        let mut s = open_clean(d);
        assert_eq!(all(&mut s), recs(1..=3));
        for gone in ["log.1", "log.2.tmp", "snapshot.tmp", "meta.tmp"] {
            assert!(!d.join(gone).exists(), "{gone} should be removed");
        }
        assert!(
            d.join("messages.txt").exists(),
            "other files are left alone"
        );

        // Crashed after the commit, before the old log was deleted.
        s.write_snapshot(&snapshot_of(&recs(1..=2)), true).unwrap();
        drop(s);
        fs::write(d.join("log.0"), &old_log).unwrap();
        let mut s = open_clean(d);
        assert!(!d.join("log.0").exists());
        assert_eq!((s.first_lsn(), s.last_lsn()), (3, 3));
        assert_eq!(replay(&mut s).unwrap(), snapshot_of(&recs(1..=3)));
    }

    #[test]
    fn records_the_snapshot_covers_in_the_log_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut s = storage_with(d, 1..=3);
        let log0 = fs::read(d.join("log.0")).unwrap();
        s.write_snapshot(&snapshot_of(&recs(1..=2)), true).unwrap();
        drop(s);
        fs::write(d.join("log.1"), &log0).unwrap();
        match FileStorage::open(d) {
            Err(StorageError::Corrupt { path, detail, .. }) => {
                assert!(path.ends_with("log.1"), "{path}");
                assert!(
                    detail.contains("LSN 1") && detail.contains("snapshot"),
                    "{detail}"
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_eq!(
            fs::read(d.join("log.1")).unwrap(),
            log0,
            "left for an operator"
        );
    }

    #[test]
    fn meta_round_trips_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open_clean(dir.path());
        assert_eq!(s.read_meta().unwrap(), None);
        let meta = Meta {
            gen: 7,
            egen: 9,
            voted_for: Some(SiteAddr::new("127.0.0.1:7001")),
            voters_floor: LogPos::new(6, 40),
        };
        s.write_meta(&meta).unwrap();
        assert_eq!(s.read_meta().unwrap(), Some(meta.clone()));
        drop(s);
        let mut s = open_clean(dir.path());
        assert_eq!(s.read_meta().unwrap(), Some(meta));
        let next = Meta {
            gen: 8,
            egen: 8,
            voted_for: None,
            voters_floor: LogPos::default(),
        };
        s.write_meta(&next).unwrap();
        drop(s);
        assert_eq!(open_clean(dir.path()).read_meta().unwrap(), Some(next));
    }

    #[test]
    fn meta_written_before_the_voters_floor_reads_with_no_floor() {
        #[derive(serde::Serialize)]
        struct Before {
            gen: u64,
            egen: u64,
            voted_for: Option<SiteAddr>,
        }
        let dir = tempfile::tempdir().unwrap();
        drop(open_clean(dir.path()));
        let before = Before {
            gen: 4,
            egen: 5,
            voted_for: Some(SiteAddr::new("127.0.0.1:7002")),
        };
        let bytes = checksummed_file(META_MAGIC, &codec::encode(&before));
        fs::write(dir.path().join(META_FILE), bytes).unwrap();
        let meta = open_clean(dir.path()).read_meta().unwrap();
        assert_eq!(
            meta,
            Some(Meta {
                gen: 4,
                egen: 5,
                voted_for: Some(SiteAddr::new("127.0.0.1:7002")),
                voters_floor: LogPos::default(),
            })
        );
    }

    #[test]
    fn garbage_snapshot_meta_or_log_files_are_corrupt_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut s = storage_with(d, 1..=3);
        s.write_meta(&Meta::default()).unwrap();
        s.write_snapshot(&snapshot_of(&recs(1..=2)), true).unwrap();
        drop(s);
        let snapshot = fs::read(d.join("snapshot")).unwrap();
        let meta = fs::read(d.join("meta")).unwrap();
        let log = fs::read(d.join("log.1")).unwrap();

        type Damage = fn(&mut Vec<u8>);
        let damages: [(&str, Damage); 5] = [
            ("garbage", |b| *b = b"garbage".to_vec()),
            ("empty", |b| b.clear()),
            ("cut short", |b| b.truncate(b.len() - 1)),
            ("flipped last byte", |b| {
                if let Some(last) = b.last_mut() {
                    *last ^= 1
                }
            }),
            ("flipped version", |b| b[8] ^= 1),
        ];
        for (name, original) in [("snapshot", &snapshot), ("meta", &meta)] {
            for (damage, apply) in damages {
                let mut bytes = original.clone();
                apply(&mut bytes);
                fs::write(d.join(name), &bytes).unwrap();
                let err = FileStorage::open(d).expect_err(damage);
                assert_corrupt_naming(err, name);
                assert!(d.join("log.1").exists(), "nothing deleted on a failed open");
                fs::write(d.join(name), original).unwrap();
            }
        }
        for damage in [&b"RSIM"[..], b"RSIMLOG\0\x09\0\0\0", b"NOTALOG!\x01\0\0\0"] {
            fs::write(d.join("log.1"), damage).unwrap();
            assert_corrupt_naming(FileStorage::open(d).unwrap_err(), "log.1");
        }
        // A snapshot that names a log that is not there.
        fs::remove_file(d.join("log.1")).unwrap();
        assert_corrupt_naming(FileStorage::open(d).unwrap_err(), "log.1");

        fs::write(d.join("log.1"), &log).unwrap();
        let mut s = open_clean(d);
        assert_eq!(replay(&mut s).unwrap(), snapshot_of(&recs(1..=3)));
        // Damage after open is caught when the snapshot is read.
        fs::write(d.join("snapshot"), b"garbage").unwrap();
        assert_corrupt_naming(s.read_snapshot().unwrap_err(), "snapshot");
    }

    #[test]
    fn appends_past_the_write_buffer_read_back_and_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open_clean(dir.path());
        let value = vec![7; 100 << 10];
        let big = |lsn: Lsn| {
            LogRecord::new(
                lsn,
                1,
                RecordBody::Txn(Txn::put(format!("k{lsn}"), value.clone())),
            )
        };
        let records: Vec<_> = (1..=30).map(big).collect();
        for record in &records {
            s.append(std::slice::from_ref(record)).unwrap();
        }
        assert!(s.written > LOG_HEADER_LEN, "the buffer spilled to the file");
        assert!(!s.pending.is_empty(), "and still holds the latest frames");
        assert_eq!(all(&mut s), records);
        // Cut inside what was written to the file, then append again.
        s.truncate_after(5).unwrap();
        s.append(&records[5..12]).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut s = open_clean(dir.path());
        assert_eq!(all(&mut s), records[..12].to_vec());
    }

    #[test]
    fn an_oversized_record_is_refused_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open_clean(dir.path());
        let big = vec![0; MAX_RECORD_BYTES as usize];
        let record = LogRecord::new(1, 1, RecordBody::Txn(Txn::put("k", big)));
        assert!(matches!(s.append(&[record]), Err(StorageError::Invalid(_))));
        assert_eq!(s.last_lsn(), 0);
        assert_eq!(s.end(), LOG_HEADER_LEN);
    }

    /// One step of the differential test; numbers are reduced modulo the log's size so that
    /// most steps are valid and a few are out of range on purpose.
    #[derive(Clone, Debug)]
    enum Step {
        Append { count: u64, new_gen: bool },
        AppendWithGap,
        Sync,
        Read { from: u64, max: usize },
        TruncateAfter(u64),
        Archive(u64),
        InternalInit(u64),
        WriteMeta(u64),
        Reopen,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (1..4u64, any::<bool>()).prop_map(|(count, new_gen)| Step::Append { count, new_gen }),
            1 => Just(Step::AppendWithGap),
            2 => Just(Step::Sync),
            3 => (0..12u64, 0..6usize).prop_map(|(from, max)| Step::Read { from, max }),
            2 => (0..12u64).prop_map(Step::TruncateAfter),
            2 => (0..12u64).prop_map(Step::Archive),
            1 => (0..12u64).prop_map(Step::InternalInit),
            1 => (0..100u64).prop_map(Step::WriteMeta),
            2 => Just(Step::Reopen),
        ]
    }

    /// Outcome with the error reduced to its kind, which is what both must agree on.
    fn kind<T>(result: Result<T, StorageError>) -> Result<T, &'static str> {
        result.map_err(|e| match e {
            StorageError::Io { .. } => "io",
            StorageError::Corrupt { .. } => "corrupt",
            StorageError::Invalid(_) => "invalid",
            StorageError::Fault(_) => "fault",
            StorageError::Locked(_) => "locked",
        })
    }

    /// The snapshot at `at` of the log `mem` holds, extended with made-up records (as a master
    /// further ahead would have) when `at` is past its end.
    fn snapshot_at(mem: &mut MemStorage, at: Lsn, gen: Gen) -> Snapshot {
        let mut snapshot = mem.read_snapshot().unwrap();
        for lsn in snapshot.pos().lsn + 1..=at {
            let record = if lsn <= mem.last_lsn() {
                mem.read(lsn, 1).unwrap().remove(0)
            } else {
                rec_in(gen, lsn)
            };
            snapshot.history.note_append(&record);
            snapshot.db.apply(&record);
        }
        snapshot
    }

    fn run_differential(steps: &[Step]) {
        let dir = tempfile::tempdir().unwrap();
        let mut file = open_clean(dir.path());
        let mut mem = MemStorage::new();
        let mut gen: Gen = 1;
        for step in steps {
            let len = mem.last_lsn() + 1 - mem.first_lsn();
            let snap = mem.first_lsn() - 1;
            match *step {
                Step::Append { count, new_gen } => {
                    gen += u64::from(new_gen);
                    let first = mem.last_lsn() + 1;
                    let batch: Vec<_> = (first..first + count).map(|l| rec_in(gen, l)).collect();
                    assert_eq!(kind(file.append(&batch)), kind(mem.append(&batch)));
                }
                Step::AppendWithGap => {
                    let batch = vec![rec_in(gen, mem.last_lsn() + 2)];
                    assert_eq!(kind(file.append(&batch)), kind(mem.append(&batch)));
                }
                Step::Sync => {
                    file.sync().unwrap();
                    mem.sync().unwrap();
                }
                Step::Read { from, max } => {
                    let from = snap + from % (len + 3);
                    assert_eq!(kind(file.read(from, max)), kind(mem.read(from, max)));
                }
                Step::TruncateAfter(k) => {
                    let lsn = snap.saturating_sub(1) + k % (len + 3);
                    assert_eq!(
                        kind(file.truncate_after(lsn)),
                        kind(mem.truncate_after(lsn))
                    );
                }
                Step::Archive(k) => {
                    let at = snap + k % (len + 2);
                    let snapshot = snapshot_at(&mut mem, at, gen);
                    assert_eq!(
                        kind(file.write_snapshot(&snapshot, true)),
                        kind(mem.write_snapshot(&snapshot, true))
                    );
                }
                Step::InternalInit(k) => {
                    let at = snap + k % (len + 4);
                    let snapshot = snapshot_at(&mut mem, at, gen);
                    file.write_snapshot(&snapshot, false).unwrap();
                    mem.write_snapshot(&snapshot, false).unwrap();
                }
                Step::WriteMeta(g) => {
                    let meta = Meta {
                        gen: g,
                        egen: g + 1,
                        voted_for: None,
                        voters_floor: LogPos::new(g, g * 2),
                    };
                    file.write_meta(&meta).unwrap();
                    mem.write_meta(&meta).unwrap();
                }
                Step::Reopen => {
                    // Only synced state is promised across a reopen, so sync both first.
                    file.sync().unwrap();
                    mem.sync().unwrap();
                    drop(file);
                    file = open_clean(dir.path());
                }
            }
            assert_eq!(file.first_lsn(), mem.first_lsn(), "after {step:?}");
            assert_eq!(file.last_lsn(), mem.last_lsn(), "after {step:?}");
            assert_eq!(file.read_meta().unwrap(), mem.read_meta().unwrap());
        }
        assert_eq!(all(&mut file), all(&mut mem));
        assert_eq!(file.read_snapshot().unwrap(), mem.read_snapshot().unwrap());
        assert_eq!(replay(&mut file).unwrap(), replay(&mut mem).unwrap());
        file.sync().unwrap();
        drop(file);
        let mut file = open_clean(dir.path());
        assert_eq!(replay(&mut file).unwrap(), replay(&mut mem).unwrap());
    }

    #[test]
    fn behaves_like_mem_storage_on_a_fixed_sequence() {
        run_differential(&[
            Step::Append {
                count: 3,
                new_gen: false,
            },
            Step::Sync,
            Step::Append {
                count: 2,
                new_gen: true,
            },
            Step::Read { from: 1, max: 10 },
            Step::Archive(2),
            Step::AppendWithGap,
            Step::Reopen,
            Step::TruncateAfter(1),
            Step::TruncateAfter(0),
            Step::Append {
                count: 3,
                new_gen: true,
            },
            Step::Archive(9),
            Step::InternalInit(5),
            Step::Append {
                count: 1,
                new_gen: false,
            },
            Step::WriteMeta(3),
            Step::Reopen,
            Step::Read { from: 0, max: 2 },
        ]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn behaves_like_mem_storage(steps in prop::collection::vec(step(), 1..40)) {
            run_differential(&steps);
        }
    }
}
