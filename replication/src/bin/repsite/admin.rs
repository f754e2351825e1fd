//! The admin (client) protocol of a running site: newline-delimited JSON over TCP, one request
//! per line, one response line per request, in order.
//!
//! Requests: `{"op":"status"}`, `{"op":"put","key":K,"value":V}`, `{"op":"get","key":K}`,
//! `{"op":"step_down","to":SITE}`, `{"op":"remove","site":SITE}`,
//! `{"op":"archive","keep_records":N}`, `{"op":"digest"}`, and the storage files a cold standby
//! is pulled from (`repsite replica --from-site`, see `serve_files.rs`):
//! `{"op":"open_file","name":"log.3"}`, `{"op":"read_file","handle":H,"offset":O,"max_bytes":N}`,
//! `{"op":"close_file","handle":H}`. Responses: `{"ok":true, <answer>: ...}` or
//! `{"ok":false,"error":{"kind":..., "message":..., "master":...}}`.
//!
//! The server trusts nothing it reads: a line that is not a request gets a `bad_request` error
//! and the connection stays usable; a line over [`MAX_LINE_BYTES`] gets the error and the
//! connection is closed (there is no telling where the next request starts). Both are counted.
//! Connections are bounded in number and closed when idle, so a client cannot pin the daemon's
//! memory. A site with an admin token (`admin_token_file`) answers only requests that carry it
//! as their `"token"` field (compared in constant time); any other is a counted `unauthorized`
//! and nothing is done. Without a token the admin address must be on loopback.

use crate::serve_files::{FileError, OpenFiles};
use replication::log::{MemberState, Txn};
use replication::node::{NodeGone, NodeHandle, NodeStats};
use replication::site::{Reply, Request, RequestError, RoleKind};
use replication::{Lsn, SiteAddr};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Longest request line accepted, newline included.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Admin connections served at once; more are answered with an error and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// An admin connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A request line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// Role, master, generation, log, membership, peers and counters.
    Status,
    /// Commit `key = value` (master only).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read a key from this site's database (`leased`: only on a master holding its lease).
    Get {
        /// The key.
        key: String,
        /// Served only by a master holding a master lease, so it sees every acknowledged write.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        leased: bool,
    },
    /// Hand mastership to `to` (master only).
    StepDown {
        /// The site to take over.
        to: String,
    },
    /// Remove `site` from the group.
    Remove {
        /// The site, by its exact address.
        site: String,
    },
    /// Fold all but the last `keep_records` log records into the snapshot.
    Archive {
        /// Records to keep in the log.
        keep_records: u64,
    },
    /// Where the database stands and a digest of it (for `repsite check`).
    Digest,
    /// Open one of the site's storage files (`snapshot`, `meta`, `log.<epoch>`) for reading;
    /// it stays open, with the contents it had, until closed or the connection ends.
    OpenFile {
        /// The file's name in the data directory.
        name: String,
    },
    /// Read up to `max_bytes` (at most 1 MiB) of an opened file from `offset`.
    ReadFile {
        /// From `open_file`.
        handle: u64,
        /// Where to start.
        offset: u64,
        /// How much at most.
        max_bytes: u64,
    },
    /// Close an opened file.
    CloseFile {
        /// From `open_file`.
        handle: u64,
    },
}

/// A response line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminResponse {
    /// Whether the request succeeded.
    pub ok: bool,
    /// What it produced.
    #[serde(flatten)]
    pub answer: Answer,
}

/// What a request produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The site's status.
    Status(Box<StatusReport>),
    /// The write is committed (and as durable as the ack policy asks) at `lsn`.
    Committed {
        /// Its LSN.
        lsn: Lsn,
    },
    /// The value of a key on this site (`None`: no such key).
    Value(Option<String>),
    /// Mastership was handed over.
    SteppedDown {
        /// The new master-to-be.
        to: String,
    },
    /// The site is no longer a member.
    Removed {
        /// The removed site.
        site: String,
    },
    /// The log now starts at `first_lsn`.
    Archived {
        /// First LSN still in the log.
        first_lsn: Lsn,
    },
    /// The database has applied the log up to (`gen`, `lsn`), and this is its digest (a hash
    /// of every key and value, the same on every site holding the same data).
    Digest {
        /// Generation of the last record applied.
        gen: u64,
        /// LSN of the last record applied.
        lsn: Lsn,
        /// The digest.
        digest: u64,
    },
    /// A storage file is open for reading.
    Opened {
        /// What `read_file` and `close_file` name it by.
        handle: u64,
        /// Its length when opened.
        len: u64,
    },
    /// Bytes of an opened file, base64-encoded (empty at its end).
    Chunk {
        /// The bytes.
        data: String,
    },
    /// The file is closed.
    Closed {
        /// Its handle.
        handle: u64,
    },
    /// The request failed.
    Error(AdminError),
}

impl AdminResponse {
    pub(crate) fn answer(answer: Answer) -> AdminResponse {
        AdminResponse {
            ok: !matches!(answer, Answer::Error(_)),
            answer,
        }
    }

    fn error(kind: ErrorKind, message: impl Into<String>) -> AdminResponse {
        AdminResponse::answer(Answer::Error(AdminError {
            kind,
            message: message.into(),
            master: None,
        }))
    }
}

/// Why a request failed, in a form a script can branch on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminError {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// What happened, for people.
    pub message: String,
    /// For `not_master`: the master as this site knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
}

/// Kinds of failure: the engine's [`RequestError`]s plus the protocol's own.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The line was not a request.
    BadRequest,
    /// Too many admin connections.
    Busy,
    /// Writes go to the master.
    NotMaster,
    /// Committed locally, not acknowledged as the policy asks.
    PermFailed,
    /// Mastership was lost before the commit was acknowledged.
    MasterLost,
    /// A switchover is in progress.
    SwitchoverInProgress,
    /// The switchover failed.
    StepDownFailed,
    /// No master or too few acks; retry later.
    Unavail,
    /// The master cannot remove itself.
    CannotRemoveMaster,
    /// The request makes no sense here.
    Invalid,
    /// The site stopped (removed, or storage failed).
    HandleDead,
    /// The daemon is shutting down.
    Stopping,
    /// No such file (or handle).
    NotFound,
    /// Reading the site's storage failed.
    Io,
    /// The request did not carry the site's admin token: nothing was done.
    Unauthorized,
    /// A leased read on a master without a running lease (or with leases off).
    NoLease,
}

impl From<RequestError> for AdminError {
    fn from(error: RequestError) -> AdminError {
        let (kind, master) = match &error {
            RequestError::NotMaster { master } => {
                (ErrorKind::NotMaster, master.as_ref().map(|m| m.to_string()))
            }
            RequestError::PermFailed { .. } => (ErrorKind::PermFailed, None),
            RequestError::MasterLost { .. } => (ErrorKind::MasterLost, None),
            RequestError::SwitchoverInProgress { .. } => (ErrorKind::SwitchoverInProgress, None),
            RequestError::StepDownFailed { .. } => (ErrorKind::StepDownFailed, None),
            RequestError::Unavail { .. } => (ErrorKind::Unavail, None),
            RequestError::CannotRemoveMaster { .. } => (ErrorKind::CannotRemoveMaster, None),
            RequestError::Invalid(_) => (ErrorKind::Invalid, None),
            RequestError::NoLease { .. } => (ErrorKind::NoLease, None),
            RequestError::HandleDead { .. } => (ErrorKind::HandleDead, None),
        };
        AdminError {
            kind,
            message: error.to_string(),
            master,
        }
    }
}

/// What `status` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// This site.
    pub site: String,
    /// Master, client or electing.
    pub role: RoleKind,
    /// The master this site follows (itself when master).
    pub master: Option<String>,
    /// The highest generation seen.
    pub generation: u64,
    /// LSN of the last record in the log.
    pub last_lsn: Lsn,
    /// Generation of the last record.
    pub last_gen: u64,
    /// First LSN still in the log (earlier ones are in the snapshot).
    pub first_lsn: Lsn,
    /// The group membership database, or the static site list while a legacy group has none.
    pub membership: Vec<MemberReport>,
    /// Peers with an established connection.
    pub connected: Vec<String>,
    /// The node's counters.
    pub stats: NodeStats,
    /// The admin protocol's counters.
    pub admin: AdminCounts,
    /// Every site's admin address as this site knows it (its own and its peers'), by site.
    #[serde(default)]
    pub admins: std::collections::BTreeMap<String, String>,
}

/// One site of the membership as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// The site.
    pub site: String,
    /// `present`, `adding`, `removing`, or `static` for a legacy list entry.
    pub state: String,
    /// Its priority as recorded (absent for a legacy list entry).
    pub priority: Option<u32>,
    /// Whether this site has a connection to it (always true for itself).
    pub connected: bool,
}

/// Counters of the admin protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminCounts {
    /// Requests answered (bad ones included).
    pub requests: u64,
    /// Lines that were not a request.
    pub bad_requests: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections refused because too many were open.
    pub refused: u64,
    /// Requests refused for a missing or wrong admin token.
    #[serde(default)]
    pub unauthorized: u64,
}

/// The admin server's shared counters.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    bad_requests: AtomicU64,
    connections: AtomicU64,
    refused: AtomicU64,
    unauthorized: AtomicU64,
}

impl Counters {
    /// A snapshot of the counters.
    pub fn get(&self) -> AdminCounts {
        AdminCounts {
            requests: self.requests.load(Ordering::Relaxed),
            bad_requests: self.bad_requests.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
        }
    }
}

/// What the server needs to answer requests.
#[derive(Clone)]
pub struct Server {
    pub(crate) node: NodeHandle,
    /// The static site list from the configuration, shown while no membership database exists.
    static_sites: Vec<SiteAddr>,
    /// The site's data directory, whose storage files `open_file` serves.
    data_dir: PathBuf,
    /// The token every request must carry (`admin_token_file`), if the site has one.
    token: Option<Arc<Vec<u8>>>,
    /// Where the latency of each put is recorded (for the metrics endpoint).
    latency: crate::metrics::CommitLatency,
    pub(crate) counters: Arc<Counters>,
}

impl Server {
    /// A server answering for `node`, whose storage is in `data_dir`.
    pub fn new(node: NodeHandle, static_sites: Vec<SiteAddr>, data_dir: PathBuf) -> Server {
        Server {
            node,
            static_sites,
            data_dir,
            token: None,
            latency: Default::default(),
            counters: Arc::default(),
        }
    }

    /// Puts record their latency in `latency`.
    pub fn with_latency(mut self, latency: crate::metrics::CommitLatency) -> Server {
        self.latency = latency;
        self
    }

    /// Every request must carry `token` (as its `"token"` field), or it is refused.
    pub fn with_token(mut self, token: Option<Vec<u8>>) -> Server {
        self.token = token.map(Arc::new);
        self
    }

    /// Whether `given` is the site's token, compared in constant time (of the two digests, so
    /// not even the length leaks).
    fn authorized(&self, given: Option<&str>) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let Some(token) = &self.token else {
            return true;
        };
        let Some(given) = given else {
            return false;
        };
        let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(&token[..]));
        a.ct_eq(&b).into()
    }

    /// Accepts admin connections until the process ends.
    pub async fn serve(self, listener: TcpListener) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            self.counters.connections.fetch_add(1, Ordering::Relaxed);
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%remote, "admin connection refused: too many open");
                tokio::spawn(async move {
                    let mut stream = stream;
                    let busy = AdminResponse::error(
                        ErrorKind::Busy,
                        format!("too many admin connections (at most {MAX_CONNECTIONS})"),
                    );
                    let _ = write_response(&mut stream, &busy).await;
                });
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                server.connection(stream).await;
                drop(slot);
            });
        }
    }

    /// Serves one connection: a request per line, answered in order.
    async fn connection(&self, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut line = Vec::new();
        let mut files = self.open_files();
        loop {
            line.clear();
            // One byte over the limit tells an over-long line from one that just fits.
            let mut limited = (&mut reader).take(MAX_LINE_BYTES as u64 + 1);
            let read = tokio::time::timeout(IDLE_TIMEOUT, limited.read_until(b'\n', &mut line));
            let n = match read.await {
                Err(_) => return, // idle
                Ok(Err(_)) => return,
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return; // the client closed
            }
            if line.len() > MAX_LINE_BYTES {
                self.counters.requests.fetch_add(1, Ordering::Relaxed);
                self.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                let response = AdminResponse::error(
                    ErrorKind::BadRequest,
                    format!("request line longer than {MAX_LINE_BYTES} bytes; closing"),
                );
                let _ = write_response(&mut write, &response).await;
                return;
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            let response = self.answer_line(&line, &mut files).await;
            if write_response(&mut write, &response).await.is_err() {
                return;
            }
        }
    }

    /// What one connection has open: nothing yet.
    pub fn open_files(&self) -> OpenFiles {
        OpenFiles::new(&self.data_dir)
    }

    /// Answers one request line of a connection that has `files` open; anything unparsable is
    /// a counted `bad_request`.
    pub async fn answer_line(&self, line: &[u8], files: &mut OpenFiles) -> AdminResponse {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let parsed = std::str::from_utf8(line)
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(|text| {
                serde_json::from_str::<serde_json::Value>(text.trim()).map_err(|e| e.to_string())
            })
            .and_then(|mut value| {
                // The token travels beside the request's own fields.
                let token = match value.as_object_mut().and_then(|o| o.remove("token")) {
                    Some(serde_json::Value::String(token)) => Some(token),
                    Some(_) => return Err("\"token\" must be a string".to_string()),
                    None => None,
                };
                let request =
                    serde_json::from_value::<AdminRequest>(value).map_err(|e| e.to_string())?;
                Ok((token, request))
            });
        match parsed {
            Ok((token, _)) if !self.authorized(token.as_deref()) => {
                self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("admin request without the right token refused");
                AdminResponse::error(
                    ErrorKind::Unauthorized,
                    "unauthorized: this site's admin requests must carry its token \
                     (repsite --token-file FILE)",
                )
            }
            Ok((_, request)) => self.answer(request, files).await,
            Err(why) => {
                self.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%why, "bad admin request");
                AdminResponse::error(
                    ErrorKind::BadRequest,
                    format!(
                        "{why}; expected one JSON object per line with \"op\" one of status, \
                         put, get, step_down, remove, archive, digest, open_file, read_file, \
                         close_file"
                    ),
                )
            }
        }
    }

    async fn answer(&self, request: AdminRequest, files: &mut OpenFiles) -> AdminResponse {
        let answer = match request {
            // Local reads of at most a MiB: not worth a blocking-pool hop.
            AdminRequest::OpenFile { name } => Ok(files
                .open(&name)
                .map(|(handle, len)| Answer::Opened { handle, len })
                .unwrap_or_else(file_error)),
            AdminRequest::ReadFile {
                handle,
                offset,
                max_bytes,
            } => Ok(files
                .read(handle, offset, max_bytes)
                .map(|data| Answer::Chunk { data })
                .unwrap_or_else(file_error)),
            AdminRequest::CloseFile { handle } => Ok(files
                .close(handle)
                .map(|()| Answer::Closed { handle })
                .unwrap_or_else(file_error)),
            AdminRequest::Status => self.status().await.map(|s| Answer::Status(Box::new(s))),
            AdminRequest::Get { key, leased: false } => self.node.get(key).await.map(|value| {
                Answer::Value(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
            }),
            AdminRequest::Get { key, leased: true } => {
                self.request(Request::Read {
                    key: key.into_bytes(),
                    leased: true,
                })
                .await
            }
            AdminRequest::Put { key, value } => {
                let started = std::time::Instant::now();
                let answer = self.request(Request::Commit(Txn::put(key, value))).await;
                self.latency.observe(started.elapsed());
                answer
            }
            AdminRequest::StepDown { to } => {
                self.request(Request::StepDown {
                    to: SiteAddr::new(to),
                })
                .await
            }
            AdminRequest::Remove { site } => {
                self.request(Request::RemoveSite {
                    site: SiteAddr::new(site),
                })
                .await
            }
            AdminRequest::Archive { keep_records } => {
                self.request(Request::Archive { keep_records }).await
            }
            AdminRequest::Digest => self.node.digest().await.map(|(at, digest)| Answer::Digest {
                gen: at.gen,
                lsn: at.lsn,
                digest,
            }),
        };
        match answer {
            Ok(answer) => AdminResponse::answer(answer),
            Err(NodeGone(site)) => {
                AdminResponse::error(ErrorKind::Stopping, format!("site {site} is shutting down"))
            }
        }
    }

    async fn request(&self, request: Request) -> Result<Answer, NodeGone> {
        Ok(match self.node.request(request).await? {
            Ok(Reply::Committed { lsn }) => Answer::Committed { lsn },
            Ok(Reply::SteppedDown { to }) => Answer::SteppedDown { to: to.to_string() },
            Ok(Reply::SiteRemoved { site }) => Answer::Removed {
                site: site.to_string(),
            },
            Ok(Reply::Archived { first_lsn }) => Answer::Archived { first_lsn },
            Ok(Reply::Value(value)) => {
                Answer::Value(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
            }
            Err(error) => Answer::Error(error.into()),
        })
    }

    async fn status(&self) -> Result<StatusReport, NodeGone> {
        let status = self.node.status().await?;
        let me = self.node.addr();
        let connected = |site: &SiteAddr| site == me || status.connected.contains(site);
        let membership = if status.members.is_empty() {
            self.static_sites
                .iter()
                .map(|site| MemberReport {
                    site: site.to_string(),
                    state: "static".into(),
                    priority: None,
                    connected: connected(site),
                })
                .collect()
        } else {
            status
                .members
                .iter()
                .map(|(site, member)| MemberReport {
                    site: site.to_string(),
                    state: match member.state {
                        MemberState::Adding => "adding",
                        MemberState::Present => "present",
                        MemberState::Removing => "removing",
                    }
                    .into(),
                    priority: Some(member.priority),
                    connected: connected(site),
                })
                .collect()
        };
        let site = &status.stats.site;
        Ok(StatusReport {
            site: me.to_string(),
            role: site.role,
            master: site.master.as_ref().map(|m| m.to_string()),
            generation: site.gen,
            last_lsn: site.last.lsn,
            last_gen: site.last.gen,
            first_lsn: site.first_lsn,
            membership,
            connected: status.connected.iter().map(|s| s.to_string()).collect(),
            admin: self.counters.get(),
            admins: status
                .admins
                .iter()
                .map(|(site, admin)| (site.to_string(), admin.clone()))
                .collect(),
            stats: status.stats.clone(),
        })
    }
}

fn file_error(error: FileError) -> Answer {
    let kind = match error {
        FileError::NotFound(_) | FileError::NoSuchHandle(_) => ErrorKind::NotFound,
        FileError::NotAStorageFile(_) | FileError::TooMany => ErrorKind::Invalid,
        FileError::Io { .. } => ErrorKind::Io,
    };
    Answer::Error(AdminError {
        kind,
        message: error.to_string(),
        master: None,
    })
}

async fn write_response<W: AsyncWrite + Unpin>(
    out: &mut W,
    response: &AdminResponse,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await
}
