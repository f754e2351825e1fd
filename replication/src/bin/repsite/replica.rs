//! `repsite replica`: an incremental cold-standby copy of a site's data directory, in the manner
//! of DirectoryStorage's `replica.py`: the first run copies everything; later runs use the
//! storage's own history to copy only what changed (the records appended since, a new log file
//! and snapshot after archiving or internal initialisation, the metadata record). Every record is
//! verified (frame checksum, record checksum, consecutive LSNs) on its way; a damaged one stops
//! the copy, naming the file. `--verify` checks a backup the same way without copying. The source
//! is a data directory on this machine or a running site reached through its admin port
//! ([`Source`]); everything below holds for both.
//!
//! # Refusals
//!
//! The backup must be a prefix of the source: the only difference allowed is that the source
//! holds newer records. A backup holding a record the source does not (the site rolled it back)
//! is refused ([`ReplicaError::NotAPrefix`]), and so is one whose last record the source can no
//! longer show, because its log was archived past it ([`ReplicaError::LogNoLongerReaches`]): the
//! records in between cannot be checked. Archive less often than you copy, as `replica.py` asks of
//! packing.
//!
//! # Consistency
//!
//! The source is only read, never locked or repaired, so the site may keep running. The backup
//! is then a state the site's own storage was in at one instant during the copy, as if the site
//! had crashed there: a snapshot the site wrote, followed by a gap-free prefix of the log that
//! continues it, ending on a record (transaction) boundary; a record still being written is left
//! for the next run. The metadata record (generation and vote) is read last, so it is at least as
//! new as that log. The copy can include records the site had written but not yet synced, and on
//! a client, records the site later rolls back; a site restored from the backup treats them as it
//! would after a crash (its master makes it roll them back). Copying twice in a row never
//! loses what the first copy had, unless the site itself rolled it back, which the second run
//! refuses, so an operator decides (see [`ReplicaError::NotAPrefix`]).
//!
//! What makes the instant exist: log files are append-only between truncations, and a truncation
//! (roll back) always cuts a record that a later check sees changed. After copying, the last
//! record copied is read again from the same open file; if it is no longer the same bytes the
//! source was rolled back during the copy and the copy is redone (bounded). A new snapshot
//! switches to a new log file by rename, so the file being read keeps the state it had.
//!
//! Each update of the backup is atomic as a [`FileStorage`](replication::storage::FileStorage)
//! update is: a new log file is written and synced before the snapshot file naming it is renamed
//! into place; appended records are synced, and an interrupted append leaves a torn tail that the
//! next run (or opening the backup) cuts off. The backup directory is locked for the whole copy,
//! as a site locks its data directory: copying into a directory a site runs on, or two copies
//! into one backup at once, is refused and touches nothing.

use crate::client::ClientError;
use crate::replica_source::SourceLog;
pub use crate::replica_source::{LocalDir, RemoteSite, Source};
use replication::storage::file_inspect::{
    check_meta_file, check_snapshot_file, log_file_epoch, log_file_header, log_file_name, LogFrame,
    LogReader, NextFrame, SnapshotFileInfo, META_FILE_NAME, SNAPSHOT_FILE_NAME,
};
use replication::storage::fs::{FileSystem, LockError, StdFs};
use replication::storage::StorageError;
use replication::types::{LogPos, Lsn};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Attempts at a consistent copy before giving up on a source that keeps changing under it.
const ATTEMPTS: usize = 5;

/// Why a copy or a check failed (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// A file failed its checks or could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The source is not a site's data directory.
    #[error(
        "{dir} is not a repsite data directory: it has neither a `snapshot` nor a `log.0` file"
    )]
    NotADataDir {
        /// The directory.
        dir: String,
    },
    /// The backup holds records the source does not: copying would mix two histories.
    #[error(
        "{backup} is not a prefix of {source_dir}: {detail}. The site rolled back records the \
         backup holds (or the backup is of another site); copy into an empty directory instead"
    )]
    NotAPrefix {
        /// The backup directory.
        backup: String,
        /// The source directory.
        source_dir: String,
        /// Where they differ.
        detail: String,
    },
    /// The source's log was archived past the backup's last record: the records in between
    /// cannot be checked against the backup.
    #[error(
        "{source_dir}'s log now starts after LSN {source_snapshot}, past {backup}'s last record \
         (LSN {backup_last}): the site archived its log since the last copy, so the records in \
         between cannot be checked against the backup. Copy into an empty directory instead, \
         and archive less often than you copy"
    )]
    LogNoLongerReaches {
        /// The backup directory.
        backup: String,
        /// The source.
        source_dir: String,
        /// The LSN the source's snapshot stands at; its log holds only later ones.
        source_snapshot: Lsn,
        /// The backup's last record.
        backup_last: Lsn,
    },
    /// The remote site could not be asked.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The remote site answered something a copy cannot use.
    #[error("site {site}: {detail}")]
    Remote {
        /// Its admin address.
        site: String,
        /// What it answered.
        detail: String,
    },
    /// The backup's log is in a later epoch than the source's.
    #[error(
        "{backup} is ahead of {source_dir} (log epoch {backup_epoch} against {source_epoch}): \
         it is not a copy of this site's current state"
    )]
    BackupAhead {
        /// The backup directory.
        backup: String,
        /// The source directory.
        source_dir: String,
        /// The backup's epoch.
        backup_epoch: u64,
        /// The source's epoch.
        source_epoch: u64,
    },
    /// The backup directory is a running site's data directory, or another copy is writing it
    /// (exit status 2: nothing was touched).
    #[error("the backup directory {0}")]
    Locked(LockError),
    /// The source kept changing under every attempt.
    #[error("{dir} kept changing during {ATTEMPTS} copy attempts (log switched or rolled back); try again")]
    SourceChanging {
        /// The source directory.
        dir: String,
    },
    /// A backup log ends inside a record (an interrupted copy).
    #[error("{path}: torn record at byte offset {offset} ({detail}): run `repsite replica` again to complete the copy")]
    Torn {
        /// The file.
        path: String,
        /// Where the torn record starts.
        offset: u64,
        /// What is missing.
        detail: String,
    },
}

/// What happened to one file of the backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileAction {
    /// Copied whole.
    Copied {
        /// The file name.
        name: String,
        /// Bytes written.
        bytes: u64,
        /// Records in it (log files).
        records: u64,
    },
    /// Records appended to the backup's copy.
    Appended {
        /// The file name.
        name: String,
        /// Bytes written.
        bytes: u64,
        /// Records appended.
        records: u64,
        /// First LSN appended.
        from: Lsn,
        /// Last LSN appended.
        to: Lsn,
    },
    /// Already up to date.
    Unchanged {
        /// The file name.
        name: String,
    },
    /// A torn tail left by an interrupted copy was cut off before appending.
    Repaired {
        /// The file name.
        name: String,
        /// Bytes cut.
        bytes: u64,
    },
    /// A log file of an older epoch, no longer current, was deleted.
    Removed {
        /// The file name.
        name: String,
    },
}

impl FileAction {
    /// The file the action is about.
    pub fn name(&self) -> &str {
        match self {
            FileAction::Copied { name, .. }
            | FileAction::Appended { name, .. }
            | FileAction::Unchanged { name }
            | FileAction::Repaired { name, .. }
            | FileAction::Removed { name } => name,
        }
    }

    /// True if the file's contents were written.
    pub fn wrote(&self) -> bool {
        matches!(
            self,
            FileAction::Copied { .. } | FileAction::Appended { .. }
        )
    }
}

impl fmt::Display for FileAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileAction::Copied {
                name,
                bytes,
                records,
            } => {
                write!(f, "{name}: copied, {bytes} bytes")?;
                if name.starts_with("log.") {
                    write!(f, ", {}", records_of(*records))?;
                }
                Ok(())
            }
            FileAction::Appended {
                name,
                bytes,
                records,
                from,
                to,
            } => write!(
                f,
                "{name}: appended {} (LSN {from}..={to}), {bytes} bytes",
                records_of(*records)
            ),
            FileAction::Unchanged { name } => write!(f, "{name}: unchanged"),
            FileAction::Repaired { name, bytes } => write!(
                f,
                "{name}: cut {bytes} bytes of a torn record left by an interrupted copy"
            ),
            FileAction::Removed { name } => write!(f, "{name}: removed (no longer current)"),
        }
    }
}

fn records_of(n: u64) -> String {
    match n {
        1 => "1 record".into(),
        n => format!("{n} records"),
    }
}

/// What a copy did and where the backup now stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyReport {
    /// Per file, in the order done.
    pub actions: Vec<FileAction>,
    /// The backup's state after the copy.
    pub state: BackupState,
    /// Bytes read from the source, every attempt included: what a remote copy moved.
    pub source_bytes: u64,
}

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupState {
    /// Epoch of the current log file.
    pub epoch: u64,
    /// Where the snapshot stands.
    pub snapshot: LogPos,
    /// Records in the log.
    pub records: u64,
    /// The last record's position (the snapshot's if the log is empty).
    pub last: LogPos,
    /// Generation in the metadata record, if there is one.
    pub meta_gen: Option<u64>,
}

impl fmt::Display for BackupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "snapshot at LSN {}, {} holds {} up to LSN {} (generation {})",
            self.snapshot.lsn,
            log_file_name(self.epoch),
            records_of(self.records),
            self.last.lsn,
            self.last.gen
        )
    }
}

/// Brings the backup in `to` up to date with the data directory `from` (see the module's doc for
/// what the result is consistent with).
pub fn copy(from: &Path, to: &Path) -> Result<CopyReport, ReplicaError> {
    copy_from(&mut LocalDir::new(from), to)
}

/// Brings the backup in `to` up to date with `source`, a data directory or a running site.
pub fn copy_from(source: &mut dyn Source, to: &Path) -> Result<CopyReport, ReplicaError> {
    if !source.has(SNAPSHOT_FILE_NAME)? && !source.has(&log_file_name(0))? {
        return Err(ReplicaError::NotADataDir {
            dir: source.describe(),
        });
    }
    fs::create_dir_all(to).map_err(io_err("create directory", to))?;
    // Held for the whole copy: a site must not run on a backup being written, nor two copies
    // write one backup.
    let holder = format!("process {} (repsite replica)", std::process::id());
    let _lock = StdFs.lock_dir(to, &holder).map_err(ReplicaError::Locked)?;
    for _ in 0..ATTEMPTS {
        if let Some(mut report) = try_copy(source, to)? {
            report.source_bytes = source.bytes_read();
            return Ok(report);
        }
        // The source switched logs or rolled back mid-copy; what was written is valid but
        // stale, and the next attempt continues from it.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(ReplicaError::SourceChanging {
        dir: source.describe(),
    })
}

/// Where the backup ends, for checking that the source continues it after switching log files.
struct Anchor {
    /// The backup's last record, or its snapshot's position when its log is empty.
    pos: LogPos,
    /// That record's frame, when it is a record of the log.
    frame: Option<Vec<u8>>,
}

/// One attempt; `None` when the source changed under it and the copy must be redone.
fn try_copy(source: &mut dyn Source, to: &Path) -> Result<Option<CopyReport>, ReplicaError> {
    let mut actions = Vec::new();
    let bk_snapshot = read_snapshot(to)?;
    let bk_info = snapshot_info(&bk_snapshot);
    let src_snapshot = match source.read_snapshot(bk_snapshot.as_ref().map(|(b, _)| &b[..]))? {
        Some(bytes) => {
            let info = check_snapshot_file(&bytes, &source.path(SNAPSHOT_FILE_NAME))?;
            Some((bytes, info))
        }
        None => None,
    };
    let src_info = snapshot_info(&src_snapshot);
    // Archived between reading the snapshot and opening its log: read the new snapshot.
    let Some(src_log) = source.open_log(&log_file_name(src_info.epoch), src_info.pos.lsn + 1)?
    else {
        return Ok(None);
    };

    let bk_log_path = to.join(log_file_name(bk_info.epoch));
    let same_history = bk_info.epoch == src_info.epoch && exists(&bk_log_path)?;
    if bk_info.epoch > src_info.epoch {
        return Err(ReplicaError::BackupAhead {
            backup: to.display().to_string(),
            source_dir: source.describe(),
            backup_epoch: bk_info.epoch,
            source_epoch: src_info.epoch,
        });
    }
    let not_a_prefix = |detail: String| ReplicaError::NotAPrefix {
        backup: to.display().to_string(),
        source_dir: source.describe(),
        detail,
    };
    if same_history && bk_snapshot.as_ref().map(|s| &s.0) != src_snapshot.as_ref().map(|s| &s.0) {
        return Err(not_a_prefix(format!(
            "both snapshots name log epoch {} but they differ",
            src_info.epoch
        )));
    }

    let log = if same_history {
        append_log(&source.describe(), to, src_log, &bk_log_path, &mut actions)?
    } else {
        // A new log file replaces the backup's: check first that the source continues the
        // backup, from its snapshot or from its new log.
        let anchor = backup_anchor(&bk_snapshot, bk_info, &bk_log_path)?;
        if let Some(anchor) = &anchor {
            if anchor.pos.lsn < src_info.pos.lsn {
                return Err(ReplicaError::LogNoLongerReaches {
                    backup: to.display().to_string(),
                    source_dir: source.describe(),
                    source_snapshot: src_info.pos.lsn,
                    backup_last: anchor.pos.lsn,
                });
            }
            if anchor.pos.lsn == src_info.pos.lsn && anchor.pos.gen != src_info.pos.gen {
                return Err(not_a_prefix(format!(
                    "LSN {} is of generation {} in the backup and {} in the source's snapshot",
                    anchor.pos.lsn, anchor.pos.gen, src_info.pos.gen
                )));
            }
        }
        let anchor = anchor.filter(|a| a.pos.lsn > src_info.pos.lsn);
        match copy_log(to, src_log, src_info.epoch, anchor.as_ref())? {
            None => None,
            Some(Err(detail)) => return Err(not_a_prefix(detail)),
            Some(Ok(log)) => Some(log),
        }
    };
    let Some(log) = log else {
        return Ok(None);
    };
    actions.push(log.action());

    if same_history {
        actions.push(FileAction::Unchanged {
            name: SNAPSHOT_FILE_NAME.into(),
        });
    } else {
        // The commit point: from here the backup's current state is the new snapshot and log.
        match &src_snapshot {
            Some((bytes, _)) => {
                replace_file(to, SNAPSHOT_FILE_NAME, bytes)?;
                actions.push(FileAction::Copied {
                    name: SNAPSHOT_FILE_NAME.into(),
                    bytes: bytes.len() as u64,
                    records: 0,
                });
            }
            None => remove_if_exists(to, SNAPSHOT_FILE_NAME)?,
        }
        if bk_info.epoch != src_info.epoch && exists(&bk_log_path)? {
            fs::remove_file(&bk_log_path).map_err(io_err("remove", &bk_log_path))?;
            sync_dir(to)?;
            actions.push(FileAction::Removed {
                name: log_file_name(bk_info.epoch),
            });
        }
    }

    // Read last, so it is at least as new as the log copied.
    let meta_gen = copy_meta(source, to, &mut actions)?;
    let state = BackupState {
        epoch: src_info.epoch,
        snapshot: src_info.pos,
        records: log.total,
        last: log.last.unwrap_or(src_info.pos),
        meta_gen,
    };
    Ok(Some(CopyReport {
        actions,
        state,
        source_bytes: 0,
    }))
}

/// Where the backup ends: `None` for an empty backup, which any source continues.
fn backup_anchor(
    snapshot: &Option<(Vec<u8>, SnapshotFileInfo)>,
    info: SnapshotFileInfo,
    log_path: &Path,
) -> Result<Option<Anchor>, ReplicaError> {
    if exists(log_path)? {
        if let Some(last) = scan(log_path, info.pos.lsn + 1)?.last {
            return Ok(Some(Anchor {
                pos: last.record.pos(),
                frame: Some(last.bytes),
            }));
        }
    }
    Ok(snapshot.as_ref().map(|_| Anchor {
        pos: info.pos,
        frame: None,
    }))
}

/// What copying the current log did.
struct LogCopy {
    name: String,
    /// Copied whole into a new file, rather than appended to the backup's.
    whole: bool,
    /// What was written.
    frames: Frames,
    /// Records the backup's log now holds.
    total: u64,
    /// Its last record.
    last: Option<LogPos>,
}

impl LogCopy {
    fn action(&self) -> FileAction {
        let name = self.name.clone();
        let f = &self.frames;
        match (&f.last, f.first) {
            _ if self.whole => FileAction::Copied {
                name,
                bytes: f.bytes,
                records: f.records,
            },
            (Some(last), Some(first)) => FileAction::Appended {
                name,
                bytes: f.bytes,
                records: f.records,
                from: first,
                to: last.record.lsn,
            },
            _ => FileAction::Unchanged { name },
        }
    }
}

/// The backup already has this epoch's log: check it continues to be a prefix of the source's,
/// then append what the source has beyond it. `None` if the source changed under the copy.
fn append_log(
    source: &str,
    to: &Path,
    mut src: SourceLog,
    bk_path: &Path,
    actions: &mut Vec<FileAction>,
) -> Result<Option<LogCopy>, ReplicaError> {
    let (_, first_lsn) = src.position();
    let scan = scan(bk_path, first_lsn)?;
    let name = file_name(bk_path);
    let mut out = OpenOptions::new()
        .write(true)
        .open(bk_path)
        .map_err(io_err("open", bk_path))?;
    if let Some(torn) = &scan.torn {
        // What an interrupted earlier copy left: cut it, as opening the backup would.
        out.set_len(torn.offset)
            .map_err(io_err("truncate", bk_path))?;
        out.sync_all().map_err(io_err("sync", bk_path))?;
        actions.push(FileAction::Repaired {
            name: name.clone(),
            bytes: torn.file_len - torn.offset,
        });
    }
    // Log matching: two logs that hold the same record (LSN and generation) at the same place
    // agree on everything before it, so comparing the backup's last record is enough.
    let not_a_prefix = |detail: String| ReplicaError::NotAPrefix {
        backup: to.display().to_string(),
        source_dir: source.into(),
        detail,
    };
    let mut anchor = None;
    if let Some(last) = &scan.last {
        src.seek(last.offset, last.record.lsn)?;
        match src.next_frame() {
            Ok(NextFrame::Frame(frame)) if frame.bytes == last.bytes => {
                anchor = Some(frame);
            }
            Ok(NextFrame::Frame(frame)) => {
                return Err(not_a_prefix(format!(
                    "the record at LSN {} is of generation {} in the backup and {} in the source",
                    last.record.lsn, last.record.gen, frame.record.gen
                )))
            }
            Ok(_) => {
                return Err(not_a_prefix(format!(
                    "the source's log ends before LSN {}, which the backup holds",
                    last.record.lsn
                )))
            }
            Err(e) => {
                return Err(not_a_prefix(format!(
                    "the source does not hold the backup's last record (LSN {}): {e}",
                    last.record.lsn
                )))
            }
        }
    }
    out.seek(SeekFrom::Start(scan.end))
        .map_err(io_err("seek", bk_path))?;
    let copied = copy_frames(&mut src, &mut out, bk_path, None)?;
    let check = copied.last.as_ref().or(anchor.as_ref());
    if !still_there(&mut src, check)? {
        // Rolled back under us: undo this attempt's append, then try again.
        out.set_len(scan.end).map_err(io_err("truncate", bk_path))?;
        out.sync_all().map_err(io_err("sync", bk_path))?;
        return Ok(None);
    }
    out.sync_all().map_err(io_err("sync", bk_path))?;
    let last = copied
        .last
        .as_ref()
        .or(scan.last.as_ref())
        .map(|f| f.record.pos());
    Ok(Some(LogCopy {
        name,
        whole: false,
        total: scan.records + copied.records,
        frames: copied,
        last,
    }))
}

/// Copies the source's log whole into a new file of the backup (not current until the snapshot
/// names it). `None` if the source changed under the copy; `Some(Err(why))` if the log does not
/// hold the backup's last record (`anchor`, when it is past the source's snapshot).
fn copy_log(
    to: &Path,
    mut src: SourceLog,
    epoch: u64,
    anchor: Option<&Anchor>,
) -> Result<Option<Result<LogCopy, String>>, ReplicaError> {
    let name = log_file_name(epoch);
    let tmp = to.join(format!("{name}.tmp"));
    let mut out = File::create(&tmp).map_err(io_err("create", &tmp))?;
    // The reader checked that the source has exactly this header.
    let header = log_file_header();
    let copied = out
        .write_all(&header)
        .map_err(|e| io_err("write", &tmp)(e).into())
        .and_then(|()| copy_frames(&mut src, &mut out, &tmp, anchor))
        .and_then(|copied| Ok((still_there(&mut src, copied.last.as_ref())?, copied)));
    drop(out);
    let mut copied = match copied {
        Ok((true, copied)) => copied,
        // Not current, so harmless (opening deletes it), but a failed copy should leave the
        // backup as it found it.
        Ok((false, _)) => {
            fs::remove_file(&tmp).map_err(io_err("remove", &tmp))?;
            return Ok(None);
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Some(anchor) = anchor {
        let why = match copied.anchor_found {
            AnchorFound::Same => None,
            AnchorFound::Differs(gen) => Some(format!(
                "the record at LSN {} is of generation {} in the backup and {gen} in the source",
                anchor.pos.lsn, anchor.pos.gen
            )),
            AnchorFound::NotReached => Some(format!(
                "the source's log ends before LSN {}, which the backup holds",
                anchor.pos.lsn
            )),
        };
        if let Some(why) = why {
            fs::remove_file(&tmp).map_err(io_err("remove", &tmp))?;
            return Ok(Some(Err(why)));
        }
    }
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", &tmp))?;
    let path = to.join(&name);
    fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    sync_dir(to)?;
    copied.bytes += header.len() as u64;
    Ok(Some(Ok(LogCopy {
        name,
        whole: true,
        total: copied.records,
        last: copied.last.as_ref().map(|f| f.record.pos()),
        frames: copied,
    })))
}

/// What [`copy_frames`] wrote.
struct Frames {
    records: u64,
    bytes: u64,
    first: Option<Lsn>,
    last: Option<LogFrame>,
    /// What it found where the anchor it watched for should be.
    anchor_found: AnchorFound,
}

/// Whether a copied log holds the backup's last record.
enum AnchorFound {
    /// Not reached: the log ends before it.
    NotReached,
    /// The same record.
    Same,
    /// Another record, of this generation.
    Differs(u64),
}

/// Copies verified frames from `src` to `out` until the source's end, or a record still being
/// written (left for the next run), watching for `anchor`'s record on the way.
fn copy_frames(
    src: &mut SourceLog,
    out: &mut File,
    path: &Path,
    anchor: Option<&Anchor>,
) -> Result<Frames, ReplicaError> {
    let mut out_buf = io::BufWriter::with_capacity(1 << 16, out);
    let mut frames = Frames {
        records: 0,
        bytes: 0,
        first: None,
        last: None,
        anchor_found: AnchorFound::NotReached,
    };
    while let NextFrame::Frame(frame) = src.next_frame()? {
        if let Some(anchor) = anchor.filter(|a| a.pos.lsn == frame.record.lsn) {
            let same = match &anchor.frame {
                Some(bytes) => *bytes == frame.bytes,
                None => anchor.pos.gen == frame.record.gen,
            };
            frames.anchor_found = if same {
                AnchorFound::Same
            } else {
                AnchorFound::Differs(frame.record.gen)
            };
        }
        out_buf
            .write_all(&frame.bytes)
            .map_err(io_err("write", path))?;
        frames.records += 1;
        frames.bytes += frame.bytes.len() as u64;
        frames.first.get_or_insert(frame.record.lsn);
        frames.last = Some(frame);
    }
    out_buf.flush().map_err(io_err("write", path))?;
    Ok(frames)
}

/// Whether `frame` is still where it was read in the source (no roll back cut it meanwhile).
fn still_there(src: &mut SourceLog, frame: Option<&LogFrame>) -> Result<bool, ReplicaError> {
    let Some(frame) = frame else {
        return Ok(true);
    };
    src.seek(frame.offset, frame.record.lsn)?;
    Ok(match src.next_frame() {
        Ok(NextFrame::Frame(again)) => again.bytes == frame.bytes,
        Ok(_) => false,
        // A damaged record where an intact one was read a moment ago: rewritten under us.
        Err(_) => false,
    })
}

/// Copies the metadata record if it changed; returns its generation.
fn copy_meta(
    source: &mut dyn Source,
    to: &Path,
    actions: &mut Vec<FileAction>,
) -> Result<Option<u64>, ReplicaError> {
    let Some(bytes) = source.read(META_FILE_NAME)? else {
        return Ok(None);
    };
    let meta = check_meta_file(&bytes, &source.path(META_FILE_NAME))?;
    let bk_path = to.join(META_FILE_NAME);
    if read_optional(&bk_path)?.as_deref() == Some(&bytes[..]) {
        actions.push(FileAction::Unchanged {
            name: META_FILE_NAME.into(),
        });
    } else {
        replace_file(to, META_FILE_NAME, &bytes)?;
        actions.push(FileAction::Copied {
            name: META_FILE_NAME.into(),
            bytes: bytes.len() as u64,
            records: 0,
        });
    }
    Ok(Some(meta.gen))
}

/// Checks a backup: its snapshot and metadata files, and every record of its current log. A
/// torn tail is a failure here (the backup is incomplete), though opening would cut it.
pub fn verify(backup: &Path) -> Result<BackupState, ReplicaError> {
    if !backup.is_dir() {
        return Err(ReplicaError::NotADataDir {
            dir: backup.display().to_string(),
        });
    }
    let snapshot = read_snapshot(backup)?;
    let info = snapshot_info(&snapshot);
    let log_path = backup.join(log_file_name(info.epoch));
    if !exists(&log_path)? {
        if snapshot.is_none() {
            return Err(ReplicaError::NotADataDir {
                dir: backup.display().to_string(),
            });
        }
        return Err(StorageError::Corrupt {
            what: "log",
            path: log_path.display().to_string(),
            detail: format!("missing: the snapshot names log epoch {}", info.epoch),
        }
        .into());
    }
    let scan = scan(&log_path, info.pos.lsn + 1)?;
    if let Some(torn) = scan.torn {
        return Err(ReplicaError::Torn {
            path: log_path.display().to_string(),
            offset: torn.offset,
            detail: torn.detail,
        });
    }
    let meta_path = backup.join(META_FILE_NAME);
    let meta_gen = match read_optional(&meta_path)? {
        Some(bytes) => Some(check_meta_file(&bytes, &meta_path)?.gen),
        None => None,
    };
    Ok(BackupState {
        epoch: info.epoch,
        snapshot: info.pos,
        records: scan.records,
        last: scan.last.map_or(info.pos, |f| f.record.pos()),
        meta_gen,
    })
}

/// Log files in `dir` other than the current one: leftovers that opening the storage deletes.
pub fn stale_logs(dir: &Path, current_epoch: u64) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| log_file_epoch(n).is_some_and(|e| e != current_epoch))
        .collect();
    names.sort();
    names
}

/// A whole log file walked and verified.
struct Scan {
    records: u64,
    last: Option<LogFrame>,
    /// Where the intact records end.
    end: u64,
    /// A torn tail, if the file ends inside a record.
    torn: Option<TornTail>,
}

/// Where a log file ends inside a record.
struct TornTail {
    offset: u64,
    file_len: u64,
    detail: String,
}

fn scan(path: &Path, first_lsn: Lsn) -> Result<Scan, ReplicaError> {
    let mut reader = LogReader::open(path, first_lsn)?;
    let mut records = 0;
    let mut last = None;
    loop {
        match reader.next_frame()? {
            NextFrame::Frame(frame) => {
                records += 1;
                last = Some(frame);
            }
            NextFrame::End => {
                let (end, _) = reader.position();
                return Ok(Scan {
                    records,
                    last,
                    end,
                    torn: None,
                });
            }
            NextFrame::Torn { offset, detail } => {
                let len = fs::metadata(path).map_err(io_err("stat", path))?.len();
                return Ok(Scan {
                    records,
                    last,
                    end: offset,
                    torn: Some(TornTail {
                        offset,
                        file_len: len,
                        detail,
                    }),
                });
            }
        }
    }
}

/// A snapshot file's bytes and what they say, if the directory has one.
fn read_snapshot(dir: &Path) -> Result<Option<(Vec<u8>, SnapshotFileInfo)>, ReplicaError> {
    let path = dir.join(SNAPSHOT_FILE_NAME);
    let Some(bytes) = read_optional(&path)? else {
        return Ok(None);
    };
    let info = check_snapshot_file(&bytes, &path)?;
    Ok(Some((bytes, info)))
}

/// No snapshot file means epoch 0 and the empty snapshot, as for the storage itself.
fn snapshot_info(snapshot: &Option<(Vec<u8>, SnapshotFileInfo)>) -> SnapshotFileInfo {
    snapshot.as_ref().map_or(
        SnapshotFileInfo {
            epoch: 0,
            pos: LogPos::default(),
        },
        |(_, info)| *info,
    )
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ReplicaError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e).into()),
    }
}

fn exists(path: &Path) -> Result<bool, ReplicaError> {
    match fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("stat", path)(e).into()),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Atomically replaces `dir/name`: temporary file, sync, rename, sync the directory.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ReplicaError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all(bytes).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("sync", &tmp))?;
    drop(file);
    fs::rename(&tmp, dir.join(name)).map_err(io_err("rename", &tmp))?;
    sync_dir(dir)
}

fn remove_if_exists(dir: &Path, name: &str) -> Result<(), ReplicaError> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", &path)(e).into()),
    }
}

/// Makes renames and removals in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), ReplicaError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StorageError {
    let path: PathBuf = path.to_path_buf();
    move |source| StorageError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}
