//! The filesystem operations [`FileStorage`](super::FileStorage) uses, behind one small trait,
//! so the same storage code runs on the operating system's filesystem ([`StdFs`], `repsite`)
//! and on a simulated one whose crashes follow POSIX's rules ([`SimFs`](super::SimFs), the
//! simulator and the crash-point tests).
//!
//! The trait is exactly what the storage needs and no more: whole-file reads, positioned reads
//! and writes, length changes, the two syncs, and the directory operations (create, rename,
//! remove, list, sync) whose durability POSIX leaves to a sync of the directory.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A filesystem, shared by every file it opened.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates `dir` and its parents if they are missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Creates a file for reading and writing, emptying it if it exists.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// The whole contents of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Whether `path` names something.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Renames `from` to `to`, replacing `to`. Durable only once the directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. Durable only once the directory is synced.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of `dir`, in no promised order.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes every create, rename and removal in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on the data directory `dir`, for as long as the returned guard
    /// lives. Fails with [`io::ErrorKind::WouldBlock`] and the holder's description (what
    /// [`FileSystem::lock_dir`] was given as `holder` when it took it) if another holds it.
    fn lock_dir(&self, dir: &Path, holder: &str) -> Result<DirLock, LockError>;
}

/// One open file. Positioned reads and writes: no shared cursor to get wrong.
pub trait FsFile: Send + fmt::Debug {
    /// Writes all of `bytes` at `offset`, extending the file (with zeros before, if need be).
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Fills `buf` from `offset`; fails with [`io::ErrorKind::UnexpectedEof`] past the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Cuts or extends the file. Durable only once the file is synced.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's contents durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Writes `bytes` at `offset` and makes them durable, for a caller with no other unsynced
    /// write in the file and only zeros (or nothing) in it after `offset`: the end of a log.
    /// Zeros may be written after `bytes`, up to a block boundary. By default `write_at` then
    /// `sync_data`; [`StdFs`]'s files write the blocks through `O_DIRECT | O_DSYNC` instead.
    fn write_tail_durable(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.write_at(offset, bytes)?;
        self.sync_data()
    }
    /// Makes the file's contents and metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
}

/// Holds a data directory's lock; dropping it releases the lock.
pub struct DirLock {
    dir: PathBuf,
    /// Whatever releases the lock when dropped (an open, locked file for [`StdFs`]).
    _guard: Box<dyn Send + Sync>,
}

impl DirLock {
    /// The lock on `dir`, released when `guard` is dropped.
    pub fn new(dir: &Path, guard: impl Send + Sync + 'static) -> DirLock {
        DirLock {
            dir: dir.to_path_buf(),
            _guard: Box::new(guard),
        }
    }

    /// The directory it locks.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl fmt::Debug for DirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DirLock({})", self.dir.display())
    }
}

/// Why a data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or storage) holds it.
    #[error("{dir} is in use by {holder}")]
    Held {
        /// The directory.
        dir: String,
        /// Who holds it, as the holder described itself (`repsite run, pid 1234`).
        holder: String,
    },
    /// The lock file could not be opened or locked.
    #[error("lock {dir}: {source}")]
    Io {
        /// The directory.
        dir: String,
        /// The error.
        source: io::Error,
    },
}

/// The name of the lock file inside a data directory. It also holds the holder's description.
pub const LOCK_FILE: &str = "lock";

/// The operating system's filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

impl StdFs {
    /// The operating system's filesystem, as a shared handle.
    pub fn shared() -> Arc<dyn FileSystem> {
        Arc::new(StdFs)
    }
}

impl FileSystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(StdFile::new(file, path)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(StdFile::new(file, path)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        match fs::metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            // A name that is not UTF-8 is not one of ours.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        File::open(dir)?.sync_all()?;
        #[cfg(not(unix))]
        let _ = dir;
        Ok(())
    }

    fn lock_dir(&self, dir: &Path, holder: &str) -> Result<DirLock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.display().to_string(),
            source,
        };
        let path = dir.join(LOCK_FILE);
        // Not truncated on open: the holder's description must survive a failed attempt.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // The holder writes its description right after locking; an empty or unreadable
                // file means it has not yet, which is still someone.
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Held {
                    dir: dir.display().to_string(),
                    holder: if holder.is_empty() {
                        "another process".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.write_all(holder.as_bytes()).map_err(io)?;
        // The lock is the operating system's (released when the process dies, however it dies);
        // the file's contents are only a name for the message, so they need no sync.
        Ok(DirLock::new(dir, file))
    }
}

/// A file of the operating system's filesystem.
#[derive(Debug)]
struct StdFile {
    file: File,
    path: PathBuf,
    /// The second descriptor [`FsFile::write_tail_durable`] writes through, once it is asked to.
    direct: Mutex<Direct>,
}

impl StdFile {
    fn new(file: File, path: &Path) -> StdFile {
        StdFile {
            file,
            path: path.to_path_buf(),
            direct: Mutex::new(Direct::Untried),
        }
    }

    /// The direct-write state, whatever a panicking writer left (it holds no invariant that a
    /// panic could break: the cached tail is dropped before every write).
    fn direct(&self) -> std::sync::MutexGuard<'_, Direct> {
        self.direct.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Alignment and size unit of a direct write: a multiple of every common logical block size.
const DIRECT_BLOCK: usize = 4096;

/// How [`StdFile`] makes the end of a log durable.
///
/// A log's sync is one small write at its end. `write` then `fdatasync` goes through the page
/// cache and then asks the disk to flush; a write through a descriptor opened with `O_DIRECT |
/// O_DSYNC` goes to the disk at once as a durable write, and returns when it is done. On this
/// project's test machine (ext4 on a virtual disk, small appends inside a preallocated file) it
/// took less time than `write` and `fdatasync`, most of all with three sites syncing at once
/// (figures in BENCHMARKS.md).
///
/// A direct write must cover whole aligned blocks, so the bytes of the first block before
/// `offset` are written again: they are kept from the last direct write (else read back), and
/// rewriting them with the same contents cannot damage them whichever sectors a crash keeps.
#[derive(Debug)]
enum Direct {
    /// Not asked yet: the descriptor is opened on the first durable write.
    Untried,
    /// The filesystem refused `O_DIRECT` (tmpfs does) or an aligned write: `write` and
    /// `fdatasync` from now on.
    Unsupported,
    Open {
        fd: File,
        /// Room for the aligned copy of what is written, reused.
        room: Vec<u8>,
        /// Where the block holding the end of the last direct write starts, and that block's
        /// bytes up to the end; dropped by any other write or length change.
        tail: Option<(u64, Vec<u8>)>,
    },
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &Path) -> io::Result<File> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "O_DIRECT is Linux's",
    ))
}

/// Whether a direct write's error means the filesystem cannot do it (so fall back), rather than
/// a failed disk (so fail).
fn refuses_direct(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    )
}

impl Direct {
    /// Writes `bytes` at `offset` through `fd` in whole blocks; `file` reads back the head of
    /// the first block when the cached tail is not it.
    fn write(&mut self, file: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let Direct::Open { fd, room, tail } = self else {
            unreachable!("written only once open");
        };
        let block = DIRECT_BLOCK as u64;
        let start = offset - offset % block;
        let head = (offset - start) as usize;
        let len = (head + bytes.len()).next_multiple_of(DIRECT_BLOCK);
        room.clear();
        room.resize(len + DIRECT_BLOCK, 0);
        let skip = room.as_ptr().align_offset(DIRECT_BLOCK);
        let buf = &mut room[skip..skip + len];
        match tail.take() {
            Some((at, kept)) if at == start && kept.len() == head => {
                buf[..head].copy_from_slice(&kept);
            }
            _ => read_exact_at(file, &mut buf[..head], start)?,
        }
        buf[head..head + bytes.len()].copy_from_slice(bytes);
        write_all_at(fd, buf, start)?;
        let end = offset + bytes.len() as u64;
        let last = end - end % block;
        *tail = Some((
            last,
            buf[(last - start) as usize..(end - start) as usize].to_vec(),
        ));
        Ok(())
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(not(unix))]
fn write_all_at(mut file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(buf)
}

impl FsFile for StdFile {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.direct().forget_tail();
        write_all_at(&self.file, bytes, offset)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        read_exact_at(&self.file, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.direct().forget_tail();
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn write_tail_durable(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut direct = self.direct();
        if let Direct::Untried = *direct {
            *direct = match open_direct(&self.path) {
                Ok(fd) => Direct::Open {
                    fd,
                    room: Vec::new(),
                    tail: None,
                },
                Err(_) => Direct::Unsupported,
            };
        }
        if let Direct::Open { .. } = *direct {
            match direct.write(&self.file, offset, bytes) {
                Ok(()) => return Ok(()),
                Err(err) if refuses_direct(&err) => *direct = Direct::Unsupported,
                Err(err) => return Err(err),
            }
        }
        drop(direct);
        self.write_at(offset, bytes)?;
        self.sync_data()
    }
}

impl Direct {
    /// Drops the cached tail: the file changed by another way than a direct write.
    fn forget_tail(&mut self) {
        if let Direct::Open { tail, .. } = self {
            *tail = None;
        }
    }
}

/// Reads a file front to back through [`FsFile::read_at`], for a `BufReader`.
pub(crate) struct Cursor<'a> {
    file: &'a dyn FsFile,
    pos: u64,
    len: u64,
}

impl<'a> Cursor<'a> {
    /// Reads `file` (of length `len`) from `pos`.
    pub(crate) fn new(file: &'a dyn FsFile, pos: u64, len: u64) -> Self {
        Cursor { file, pos, len }
    }
}

impl Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.len.saturating_sub(self.pos) as usize);
        self.file.read_at(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_tail_writes_keep_every_byte_before_them_and_zeros_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut opened = OpenOptions::new();
        opened.read(true).write(true).create(true).truncate(true);
        let file = StdFile::new(opened.open(&path).unwrap(), &path);
        let len = 6 * DIRECT_BLOCK;
        file.write_at(0, &vec![0; len]).unwrap();
        file.sync_data().unwrap();
        let mut model = vec![0u8; len];
        let mut at = 0;
        // Writes of odd sizes: inside one block, ending on a boundary, spanning two and three
        // blocks; one after another kind of write changed its head; one a block past the end.
        for (i, size) in [7usize, 4089, 1, 5000, 300, 6000, 10]
            .into_iter()
            .enumerate()
        {
            let bytes: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8 | 1).collect();
            if i == 4 {
                file.write_at(at as u64 - 3, b"abc").unwrap();
                file.sync_data().unwrap();
                model[at - 3..at].copy_from_slice(b"abc");
            }
            if i == 6 {
                at += DIRECT_BLOCK;
            }
            file.write_tail_durable(at as u64, &bytes).unwrap();
            model[at..at + size].copy_from_slice(&bytes);
            at += size;
        }
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len(), len, "the file keeps its length");
        assert!(bytes == model, "every byte as written, zeros after");
        // On a filesystem that takes O_DIRECT (not tmpfs), the direct path was the one taken.
        let direct = matches!(*file.direct(), Direct::Open { .. });
        assert_eq!(direct, open_direct(&path).is_ok());
    }
}
