//! The operator's side of the admin protocol: `repsite status`, `put`, `get`, `step-down`,
//! `remove` and `archive` send one request to a running site and print its answer.
//!
//! Plain blocking sockets: one request, one answer, then the process ends, so a runtime would add
//! nothing. Every wait is bounded (connect, and the answer, which for a commit includes the ack
//! timeout) so a hung site cannot hang a cron job.

use crate::admin::{AdminError, AdminRequest, AdminResponse, Answer, ErrorKind, StatusReport};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a command could not get an answer (as opposed to getting an error answer).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The admin address does not resolve.
    #[error("cannot resolve the admin address {addr}: {detail}")]
    Resolve {
        /// The address.
        addr: String,
        /// Why.
        detail: String,
    },
    /// Nothing answered at the admin address.
    #[error("cannot reach the site's admin address {addr}: {source} (is `repsite run` up?)")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The connection failed or timed out mid-request.
    #[error("admin connection to {addr} failed: {source}")]
    Io {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The answer was not a response of this protocol.
    #[error("{addr} answered something that is not an admin response: {detail}")]
    Garbled {
        /// The address.
        addr: String,
        /// What was wrong.
        detail: String,
    },
}

/// The admin token this process's requests carry (`--token-file`), set once at start.
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Every request from now on carries `token`.
pub fn use_token(token: String) {
    let _ = TOKEN.set(token);
}

/// Reads a token file as a site reads its `admin_token_file` (a final newline is not part of it).
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = String::from_utf8(bytes.trim_ascii_end().to_vec())
        .map_err(|_| format!("the token file {} is not text", path.display()))?;
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(token)
}

/// Sends `request` to the site at `addr` and reads its answer, waiting at most `timeout` for
/// each step.
pub fn call(
    addr: &str,
    request: &AdminRequest,
    timeout: Duration,
) -> Result<AdminResponse, ClientError> {
    AdminConn::connect(addr, timeout)?.call(request)
}

/// One admin connection, for a tool that asks several things in a row (`replica --from-site`).
pub struct AdminConn {
    addr: String,
    stream: BufReader<TcpStream>,
}

impl AdminConn {
    /// Connects to the site at `addr`; every later step waits at most `timeout`.
    pub fn connect(addr: &str, timeout: Duration) -> Result<AdminConn, ClientError> {
        let targets: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| ClientError::Resolve {
                addr: addr.into(),
                detail: e.to_string(),
            })?
            .collect();
        let mut last = None;
        let mut stream = None;
        for target in targets {
            match TcpStream::connect_timeout(&target, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(stream) = stream else {
            return Err(ClientError::Connect {
                addr: addr.into(),
                source: last.unwrap_or_else(|| std::io::Error::other("no address to connect to")),
            });
        };
        let io = |source| ClientError::Io {
            addr: addr.into(),
            source,
        };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        Ok(AdminConn {
            addr: addr.into(),
            stream: BufReader::new(stream),
        })
    }

    /// Sends `request` and reads its answer.
    pub fn call(&mut self, request: &AdminRequest) -> Result<AdminResponse, ClientError> {
        let addr = &self.addr;
        let io = |source| ClientError::Io {
            addr: addr.clone(),
            source,
        };
        let mut value = serde_json::to_value(request).map_err(|e| io(std::io::Error::other(e)))?;
        if let (Some(token), Some(fields)) = (TOKEN.get(), value.as_object_mut()) {
            fields.insert("token".into(), token.clone().into());
        }
        let mut line = serde_json::to_vec(&value).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
        self.stream.get_ref().write_all(&line).map_err(io)?;
        let mut answer = String::new();
        self.stream.read_line(&mut answer).map_err(io)?;
        if answer.is_empty() {
            return Err(ClientError::Garbled {
                addr: addr.clone(),
                detail: "the connection closed without an answer".into(),
            });
        }
        serde_json::from_str(&answer).map_err(|e| ClientError::Garbled {
            addr: addr.clone(),
            detail: e.to_string(),
        })
    }
}

/// What a command prints and how it exits.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// For standard output (empty: nothing).
    pub stdout: String,
    /// For standard error (empty: nothing).
    pub stderr: String,
    /// True for exit status 0.
    pub success: bool,
}

impl Outcome {
    fn ok(stdout: String) -> Outcome {
        Outcome {
            stdout,
            stderr: String::new(),
            success: true,
        }
    }

    fn failed(stderr: String) -> Outcome {
        Outcome {
            stdout: String::new(),
            stderr,
            success: false,
        }
    }
}

/// Turns an answer into what the operator sees. `json` prints the response line as received
/// (for scripts); otherwise a human-readable form. Any error answer fails the command.
pub fn render(request: &AdminRequest, response: &AdminResponse, json: bool) -> Outcome {
    let mut outcome = match &response.answer {
        Answer::Error(error) => Outcome::failed(describe_error(error)),
        Answer::Status(status) => Outcome::ok(render_status(status)),
        Answer::Committed { lsn } => Outcome::ok(format!("committed at LSN {lsn}")),
        Answer::Value(Some(value)) => Outcome::ok(value.clone()),
        Answer::Value(None) => {
            let key = match request {
                AdminRequest::Get { key, .. } => key.as_str(),
                _ => "",
            };
            Outcome::failed(format!("key {key:?} not found"))
        }
        Answer::SteppedDown { to } => Outcome::ok(format!("stepped down: {to} takes over")),
        Answer::Removed { site } => Outcome::ok(format!("{site} removed from the group")),
        Answer::Archived { first_lsn } => {
            Outcome::ok(format!("archived: the log now starts at LSN {first_lsn}"))
        }
        Answer::Digest { gen, lsn, digest } => Outcome::ok(format!(
            "applied up to LSN {lsn} (generation {gen}), digest {digest:016x}"
        )),
        // The file answers serve `replica --from-site`; no command prints them.
        Answer::Opened { handle, len } => Outcome::ok(format!("opened as {handle}, {len} bytes")),
        Answer::Chunk { data } => Outcome::ok(data.clone()),
        Answer::Closed { handle } => Outcome::ok(format!("closed {handle}")),
    };
    if json {
        // The response, compact, whatever its kind; the exit status still says how it went.
        outcome.stdout = serde_json::to_string(response).unwrap_or_default();
        outcome.stderr.clear();
    }
    outcome
}

fn describe_error(error: &AdminError) -> String {
    match (error.kind, &error.master) {
        (ErrorKind::NotMaster, Some(master)) => {
            format!("not master: the master is {master}; send writes there")
        }
        (ErrorKind::NotMaster, None) => {
            "not master, and no master is known yet (an election may be under way); retry".into()
        }
        _ => error.message.clone(),
    }
}

fn render_status(s: &StatusReport) -> String {
    let mut out = String::new();
    let role = serde_json::to_value(s.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = writeln!(out, "site        {}", s.site);
    let _ = writeln!(out, "role        {role}");
    let _ = writeln!(
        out,
        "master      {}",
        s.master.as_deref().unwrap_or("(none known)")
    );
    let _ = writeln!(out, "generation  {}", s.generation);
    let _ = writeln!(
        out,
        "log         LSN {}..={} (last record of generation {})",
        s.first_lsn, s.last_lsn, s.last_gen
    );
    let _ = writeln!(out, "membership  {} sites", s.membership.len());
    for m in &s.membership {
        let priority = m
            .priority
            .map_or_else(String::new, |p| format!("  priority {p}"));
        let link = if m.site == s.site {
            "this site"
        } else if m.connected {
            "connected"
        } else {
            "not connected"
        };
        let _ = writeln!(out, "  {:<22} {:<8}{priority}  {link}", m.site, m.state);
    }
    let _ = writeln!(out, "connected   {} peers", s.connected.len());
    let st = &s.stats.site;
    let _ = writeln!(
        out,
        "counters    commits {}, perm failed {}, elections {} (won {}), rolled back {}, inits {}",
        st.commits, st.perm_failed, st.elections, st.elections_won, st.txns_rolled_back, st.inits
    );
    let _ = writeln!(
        out,
        "            messages sent {}, received {}, ignored {}; bytes sent {}, received {}",
        st.messages_sent,
        st.messages_received,
        st.messages_ignored,
        s.stats.bytes_sent,
        s.stats.bytes_received
    );
    let _ = writeln!(
        out,
        "            handshakes refused {}, malformed frames {}, messages dropped {}",
        s.stats.handshakes_refused, s.stats.malformed_frames, s.stats.messages_dropped
    );
    let _ = write!(
        out,
        "admin       requests {}, bad requests {}, connections {}",
        s.admin.requests, s.admin.bad_requests, s.admin.connections
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::AdminCounts;
    use replication::site::RoleKind;

    fn response(answer: Answer) -> AdminResponse {
        AdminResponse {
            ok: !matches!(answer, Answer::Error(_)),
            answer,
        }
    }

    #[test]
    fn not_master_names_the_master_and_fails() {
        let error = AdminError {
            kind: ErrorKind::NotMaster,
            message: "not master (master is h:1)".into(),
            master: Some("h:1".into()),
        };
        let put = AdminRequest::Put {
            key: "k".into(),
            value: "v".into(),
        };
        let out = render(&put, &response(Answer::Error(error)), false);
        assert!(!out.success);
        assert!(out.stderr.contains("the master is h:1"), "{}", out.stderr);
    }

    #[test]
    fn a_missing_key_fails_and_a_found_one_prints_its_value() {
        let get = AdminRequest::Get {
            key: "k".into(),
            leased: false,
        };
        let missing = render(&get, &response(Answer::Value(None)), false);
        assert!(!missing.success && missing.stderr.contains("\"k\" not found"));
        let found = render(&get, &response(Answer::Value(Some("v".into()))), false);
        assert_eq!(found, Outcome::ok("v".into()));
    }

    #[test]
    fn json_output_is_the_response_and_keeps_the_exit_status() {
        let get = AdminRequest::Get {
            key: "k".into(),
            leased: false,
        };
        let out = render(&get, &response(Answer::Value(None)), true);
        assert!(!out.success);
        assert_eq!(out.stdout, r#"{"ok":true,"value":null}"#);
    }

    #[test]
    fn status_shows_role_master_log_and_members() {
        let status = StatusReport {
            site: "h:1".into(),
            role: RoleKind::Master,
            master: Some("h:1".into()),
            generation: 3,
            last_lsn: 9,
            last_gen: 3,
            first_lsn: 1,
            membership: vec![crate::admin::MemberReport {
                site: "h:2".into(),
                state: "present".into(),
                priority: Some(100),
                connected: false,
            }],
            connected: vec![],
            stats: Default::default(),
            admin: AdminCounts::default(),
            admins: Default::default(),
        };
        let out = render(
            &AdminRequest::Status,
            &response(Answer::Status(Box::new(status))),
            false,
        );
        for expected in [
            "role        master",
            "generation  3",
            "LSN 1..=9",
            "h:2",
            "not connected",
        ] {
            assert!(out.stdout.contains(expected), "{expected}: {}", out.stdout);
        }
    }

    #[test]
    fn an_unreachable_site_is_an_error_naming_the_address() {
        // Bind then drop: nothing listens on this port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let err = call(&addr, &AdminRequest::Status, Duration::from_secs(2)).unwrap_err();
        assert!(err.to_string().contains(&addr), "{err}");
    }
}
