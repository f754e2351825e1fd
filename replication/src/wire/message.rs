//! The messages sites exchange once a connection is established (the handshake is separate).
//!
//! Every message that belongs to a generation carries it, so a message from an older generation
//! is recognised and ignored. Each variant documents who sends it to whom.

use crate::log::{GenHistory, LogRecord, Snapshot};
use crate::types::{Gen, LogPos, Lsn};
use serde::{Deserialize, Serialize};

/// A message between two sites of a group.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum Message {
    /// Master to all: "I am master of `gen`; my log ends at `last` and starts at `first_lsn`".
    Heartbeat {
        /// The master's generation.
        gen: Gen,
        /// The end of the master's log.
        last: LogPos,
        /// The oldest LSN the master still has in its log (older ones are archived).
        first_lsn: Lsn,
    },
    /// Master to client: consecutive log records, pushed on commit or sent on request.
    Log {
        /// The master's generation.
        gen: Gen,
        /// Consecutive records.
        records: Vec<LogRecord>,
    },
    /// Client to master: "I follow you; tell me your log's history so I can verify mine".
    SyncRequest {
        /// The generation the client believes is current.
        gen: Gen,
        /// The client's election priority (0: never master), so the master can count peers.
        priority: u32,
    },
    /// Master to client: the answer to `SyncRequest`.
    SyncInfo {
        /// The master's generation.
        gen: Gen,
        /// The generations of the master's log and where each starts.
        history: GenHistory,
        /// The oldest LSN the master still has in its log.
        first_lsn: Lsn,
        /// The end of the master's log.
        last: LogPos,
    },
    /// Client to master: "send me records from `from` on" (catch-up and gap filling).
    LogRequest {
        /// The client's view of the generation.
        gen: Gen,
        /// The first LSN wanted.
        from: Lsn,
    },
    /// Master to client: the database image to restart from, sent when a `LogRequest` asks for
    /// records the master has archived (internal initialisation).
    InitSnapshot {
        /// The master's generation.
        gen: Gen,
        /// The master's snapshot.
        snapshot: Snapshot,
    },
    /// Client to master: "I hold every record up to `lsn` of your generation, durably".
    Ack {
        /// The generation acknowledged.
        gen: Gen,
        /// The last durable LSN.
        lsn: Lsn,
        /// The client's election priority.
        priority: u32,
    },
    /// Candidate to all: "vote for me as master of `egen`".
    VoteRequest {
        /// The generation the election would start.
        egen: Gen,
        /// The end of the candidate's log.
        last: LogPos,
        /// The candidate's priority.
        priority: u32,
        /// Sent by the target of a planned switchover: voters skip the checks that protect a
        /// healthy master, since the master itself asked for this election.
        takeover: bool,
    },
    /// Voter to candidate: the answer to `VoteRequest`.
    Vote {
        /// The election generation answered.
        egen: Gen,
        /// Whether the vote is granted.
        granted: bool,
        /// The highest generation the voter has seen (lets a stale candidate catch up).
        gen: Gen,
        /// The end of the voter's log.
        last: LogPos,
        /// The voter's priority.
        priority: u32,
    },
    /// Master to the target of a switchover: "you have everything; call an election now".
    TakeOver {
        /// The master's generation.
        gen: Gen,
    },
}

impl Message {
    /// A short name for traces and statistics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Heartbeat { .. } => "heartbeat",
            Message::Log { .. } => "log",
            Message::SyncRequest { .. } => "sync_request",
            Message::SyncInfo { .. } => "sync_info",
            Message::LogRequest { .. } => "log_request",
            Message::InitSnapshot { .. } => "init_snapshot",
            Message::Ack { .. } => "ack",
            Message::VoteRequest { .. } => "vote_request",
            Message::Vote { .. } => "vote",
            Message::TakeOver { .. } => "take_over",
        }
    }
}
