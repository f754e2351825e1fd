//! Where `repsite replica` reads a site's storage from: its data directory on this machine
//! (`--from DIR`), or a running site's admin port (`--from-site HOST:PORT`), whose
//! `open_file`/`read_file` requests serve the same files byte for byte (`serve_files.rs`).
//!
//! Both give the copy the same thing: files read through handles that keep the contents they had
//! when opened, whatever the site does to the directory meanwhile. The remote source only costs
//! more per byte, so it moves what the copy reads and nothing else: the log from the backup's
//! last record on, the metadata record, and the snapshot only when it is not the backup's.

use crate::admin::{AdminRequest, Answer, ErrorKind};
use crate::client::{AdminConn, ClientError};
use crate::replica::ReplicaError;
use base64::Engine as _;
use replication::storage::file_inspect::{
    LogReader, CHECKSUMMED_FILE_HEADER_LEN, SNAPSHOT_FILE_NAME,
};
use replication::storage::StorageError;
use replication::types::Lsn;
use std::cell::{Cell, RefCell};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

/// Bytes a source file's reader can hand the log reader.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// A log file of the source, being read and verified.
pub type SourceLog = LogReader<Box<dyn ReadSeek>>;

/// Where a copy reads the site's files.
pub trait Source {
    /// How messages name the source: its directory, or `site HOST:PORT`.
    fn describe(&self) -> String;
    /// How messages name one of its files.
    fn path(&self, name: &str) -> PathBuf;
    /// Whether the source has a file by that name.
    fn has(&mut self, name: &str) -> Result<bool, ReplicaError>;
    /// A whole file; `None` when the source has none by that name.
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, ReplicaError>;
    /// The snapshot file; `None` when there is none. `backup` is the backup's snapshot: a
    /// source may answer with it, without moving the file, when its own is the same.
    fn read_snapshot(&mut self, backup: Option<&[u8]>) -> Result<Option<Vec<u8>>, ReplicaError> {
        let _ = backup;
        self.read(SNAPSHOT_FILE_NAME)
    }
    /// Opens a log file, whose first record must be `first_lsn`; `None` when there is none.
    fn open_log(&mut self, name: &str, first_lsn: Lsn) -> Result<Option<SourceLog>, ReplicaError>;
    /// Bytes read from the source so far.
    fn bytes_read(&self) -> u64;
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counted<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

/// A data directory on this machine (only read, never locked: the site may be running on it).
pub struct LocalDir {
    dir: PathBuf,
    count: Rc<Cell<u64>>,
}

impl LocalDir {
    /// The data directory `dir`.
    pub fn new(dir: &Path) -> LocalDir {
        LocalDir {
            dir: dir.to_path_buf(),
            count: Rc::default(),
        }
    }
}

impl Source for LocalDir {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn has(&mut self, name: &str) -> Result<bool, ReplicaError> {
        let path = self.path(name);
        match fs::metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StorageError::Io {
                op: "stat",
                path: path.display().to_string(),
                source,
            }
            .into()),
        }
    }

    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, ReplicaError> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(bytes) => {
                self.count.set(self.count.get() + bytes.len() as u64);
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StorageError::Io {
                op: "read",
                path: path.display().to_string(),
                source,
            }
            .into()),
        }
    }

    fn open_log(&mut self, name: &str, first_lsn: Lsn) -> Result<Option<SourceLog>, ReplicaError> {
        let path = self.path(name);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StorageError::Io {
                    op: "open",
                    path: path.display().to_string(),
                    source,
                }
                .into())
            }
        };
        let counted: Box<dyn ReadSeek> = Box::new(Counted {
            inner: file,
            count: self.count.clone(),
        });
        Ok(Some(LogReader::from_reader(counted, &path, first_lsn)?))
    }

    fn bytes_read(&self) -> u64 {
        self.count.get()
    }
}

/// How long a remote site may take over any one step.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes asked for per read of a whole file (the server's cap).
const WHOLE_FILE_CHUNK: u64 = 1 << 20;

/// A running site's storage, read through its admin port.
pub struct RemoteSite {
    conn: Rc<RefCell<AdminConn>>,
    addr: String,
    count: Rc<Cell<u64>>,
}

impl RemoteSite {
    /// Connects to the admin address `addr`.
    pub fn connect(addr: &str) -> Result<RemoteSite, ReplicaError> {
        Ok(RemoteSite {
            conn: Rc::new(RefCell::new(AdminConn::connect(addr, REMOTE_TIMEOUT)?)),
            addr: addr.into(),
            count: Rc::default(),
        })
    }

    /// Opens `name`: its handle and length, or `None` if the site has no such file.
    fn open(&self, name: &str) -> Result<Option<(u64, u64)>, ReplicaError> {
        let request = AdminRequest::OpenFile { name: name.into() };
        match call(&self.conn, &request)? {
            Answer::Opened { handle, len } => Ok(Some((handle, len))),
            Answer::Error(e) if e.kind == ErrorKind::NotFound => Ok(None),
            other => Err(unexpected(&self.addr, &request, other)),
        }
    }

    fn close(&self, handle: u64) -> Result<(), ReplicaError> {
        let request = AdminRequest::CloseFile { handle };
        match call(&self.conn, &request)? {
            Answer::Closed { .. } => Ok(()),
            other => Err(unexpected(&self.addr, &request, other)),
        }
    }

    /// Reads `handle` from `offset` to the end of the file.
    fn read_rest(
        &self,
        handle: u64,
        mut offset: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), ReplicaError> {
        loop {
            let chunk = read_chunk(&self.conn, &self.addr, handle, offset, WHOLE_FILE_CHUNK)?;
            if chunk.is_empty() {
                return Ok(());
            }
            self.count.set(self.count.get() + chunk.len() as u64);
            offset += chunk.len() as u64;
            out.extend_from_slice(&chunk);
        }
    }
}

impl Source for RemoteSite {
    fn describe(&self) -> String {
        format!("site {}", self.addr)
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("{}/{name}", self.addr))
    }

    fn has(&mut self, name: &str) -> Result<bool, ReplicaError> {
        let Some((handle, _)) = self.open(name)? else {
            return Ok(false);
        };
        self.close(handle)?;
        Ok(true)
    }

    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, ReplicaError> {
        let Some((handle, len)) = self.open(name)? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(len as usize);
        self.read_rest(handle, 0, &mut bytes)?;
        self.close(handle)?;
        Ok(Some(bytes))
    }

    /// A snapshot file is written once per log epoch and never changed, so one whose header (the
    /// payload's CRC-32 and length) and length are the backup's is the backup's: only its header
    /// moves. The log prefix check after it would catch the rare CRC collision on any record.
    fn read_snapshot(&mut self, backup: Option<&[u8]>) -> Result<Option<Vec<u8>>, ReplicaError> {
        let Some((handle, len)) = self.open(SNAPSHOT_FILE_NAME)? else {
            return Ok(None);
        };
        let header_len = CHECKSUMMED_FILE_HEADER_LEN as u64;
        let mut bytes = read_chunk(&self.conn, &self.addr, handle, 0, header_len)?;
        self.count.set(self.count.get() + bytes.len() as u64);
        if let Some(backup) = backup {
            if backup.len() as u64 == len && backup.get(..bytes.len()) == Some(&bytes[..]) {
                self.close(handle)?;
                return Ok(Some(backup.to_vec()));
            }
        }
        let read = bytes.len() as u64;
        self.read_rest(handle, read, &mut bytes)?;
        self.close(handle)?;
        Ok(Some(bytes))
    }

    fn open_log(&mut self, name: &str, first_lsn: Lsn) -> Result<Option<SourceLog>, ReplicaError> {
        let Some((handle, _)) = self.open(name)? else {
            return Ok(None);
        };
        let file: Box<dyn ReadSeek> = Box::new(RemoteFile {
            conn: self.conn.clone(),
            addr: self.addr.clone(),
            handle,
            pos: 0,
            window: FIRST_READ_BYTES,
            count: self.count.clone(),
        });
        Ok(Some(LogReader::from_reader(
            file,
            &self.path(name),
            first_lsn,
        )?))
    }

    fn bytes_read(&self) -> u64 {
        self.count.get()
    }
}

/// The first read after opening or seeking asks for this much; each read answered in full
/// doubles the next, up to the caller's buffer. A log file goes on with zeros after its last
/// record (room for the next ones), so an incremental pull that asked for a whole buffer at
/// once would move a buffer of zeros for a few new records.
const FIRST_READ_BYTES: u64 = 256;

/// An opened remote file as a reader: each read asks the site for up to the buffer's size at the
/// current position (less at first, see [`FIRST_READ_BYTES`]). Closed on the site when dropped.
struct RemoteFile {
    conn: Rc<RefCell<AdminConn>>,
    addr: String,
    handle: u64,
    pos: u64,
    /// The most the next read asks for.
    window: u64,
    count: Rc<Cell<u64>>,
}

impl Read for RemoteFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let ask = (buf.len() as u64).min(self.window);
        let chunk = read_chunk(&self.conn, &self.addr, self.handle, self.pos, ask)
            .map_err(|e| io::Error::other(e.to_string()))?;
        if chunk.len() as u64 > ask {
            return Err(io::Error::other(format!(
                "{} answered {} bytes where at most {ask} were asked",
                self.addr,
                chunk.len(),
            )));
        }
        if chunk.len() as u64 == ask {
            self.window = self.window.saturating_mul(2);
        }
        let n = chunk.len();
        buf[..n].copy_from_slice(&chunk);
        self.pos += n as u64;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

impl Seek for RemoteFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(at) => at,
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "seek before the file's start")
            })?,
            // The log reader only seeks to offsets it read before.
            SeekFrom::End(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a remote file is not read from its end",
                ))
            }
        };
        self.window = FIRST_READ_BYTES;
        Ok(self.pos)
    }
}

impl Drop for RemoteFile {
    fn drop(&mut self) {
        // Best effort: the site closes it with the connection anyway.
        if let Ok(mut conn) = self.conn.try_borrow_mut() {
            let _ = conn.call(&AdminRequest::CloseFile {
                handle: self.handle,
            });
        }
    }
}

fn call(conn: &RefCell<AdminConn>, request: &AdminRequest) -> Result<Answer, ClientError> {
    Ok(conn.borrow_mut().call(request)?.answer)
}

fn read_chunk(
    conn: &RefCell<AdminConn>,
    addr: &str,
    handle: u64,
    offset: u64,
    max_bytes: u64,
) -> Result<Vec<u8>, ReplicaError> {
    let request = AdminRequest::ReadFile {
        handle,
        offset,
        max_bytes,
    };
    match call(conn, &request)? {
        Answer::Chunk { data } => base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| ReplicaError::Remote {
                site: addr.into(),
                detail: format!("a file chunk that is not base64: {e}"),
            }),
        other => Err(unexpected(addr, &request, other)),
    }
}

fn unexpected(addr: &str, request: &AdminRequest, answer: Answer) -> ReplicaError {
    let detail = match answer {
        Answer::Error(e) => e.message,
        other => format!("answered {request:?} with {other:?}"),
    };
    ReplicaError::Remote {
        site: addr.into(),
        detail,
    }
}
