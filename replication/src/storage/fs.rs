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
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
        Ok(Box::new(StdFile(file)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(StdFile(file)))
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
struct StdFile(File);

impl FsFile for StdFile {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut file = &self.0;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(bytes)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut file = &self.0;
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(buf)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
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
