//! The messages sites exchange once a connection is established (the handshake is separate).
//!
//! Every message that belongs to a generation carries it, so a message from an older generation
//! is recognised and ignored. Each variant documents who sends it to whom.

use crate::log::{GenHistory, LogRecord, Snapshot};
use crate::types::{Gen, LogPos, Lsn, SiteAddr};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A message between two sites of a group. `Hello` and `Proof` are the handshake
/// ([`super::handshake`]) and never reach the core; everything else only flows once the
/// handshake has established the connection.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum Message {
    /// First message on a connection, both ways: who I am and what I speak.
    Hello {
        /// Lowest protocol version the sender speaks.
        min_version: u8,
        /// Highest protocol version the sender speaks.
        max_version: u8,
        /// The replication group's name.
        group: String,
        /// The sender's address, exactly as the group knows it.
        site: SiteAddr,
        /// Fresh random bytes for this connection.
        nonce: [u8; 16],
    },
    /// Second message, both ways: an HMAC-SHA256 with the group secret over both sites, both
    /// nonces, the group and the agreed version. Only a site with the secret can produce it.
    Proof {
        /// The MAC.
        mac: [u8; 32],
    },
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
        /// Consecutive records, shared: a master pushes the same ones to every client.
        records: Arc<[LogRecord]>,
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
        /// A pre-vote: "would you vote for me?". Nobody records anything; only if a majority
        /// would does the candidate raise its election generation and ask for real. A site cut
        /// off from the group thus cannot inflate its generation and disrupt the master later.
        pre: bool,
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
        /// The master the voter follows, if it refused because it still hears one: a candidate
        /// whose membership view is stale (it was removed while away) asks that master.
        master: Option<SiteAddr>,
        /// The answer to a pre-vote.
        pre: bool,
        /// The highest generation the voter knows of, voted or stood in: a candidate must go
        /// above it to get this vote.
        term: Gen,
    },
    /// Master to the target of a switchover: "you have everything; call an election now".
    TakeOver {
        /// The master's generation.
        gen: Gen,
    },
    /// Driver to driver on an idle connection, so that each end can tell a quiet peer from a
    /// stalled connection. Never reaches the core.
    KeepAlive,
    /// To a master of an older generation: "I know of, voted or stood in generation `gen`;
    /// you are stale". The master steps down and the group elects again.
    StaleGeneration {
        /// The sender's generation.
        gen: Gen,
    },
    /// A new site (or a helper on its behalf) to a member: "add `site` to the group".
    JoinRequest {
        /// The joining site.
        site: SiteAddr,
        /// Its priority.
        priority: u32,
    },
    /// The answer to `JoinRequest`, relayed back through the helper.
    JoinReply {
        /// The joining site.
        site: SiteAddr,
        /// The outcome.
        result: JoinResult,
    },
    /// A client to the master: "remove `site`", asked by `requester`.
    RemoveRequest {
        /// The site to remove.
        site: SiteAddr,
    },
    /// The master's answer to `RemoveRequest`: `None` once removed, or why not.
    RemoveReply {
        /// The site asked about.
        site: SiteAddr,
        /// `None` on success, the refusal otherwise.
        error: Option<RemoveRefusal>,
    },
    /// Master to a site that is no longer a member and still talks to the group.
    Removed {
        /// The master's generation.
        gen: Gen,
        /// The master's last LSN when it said so. A site that the group re-admitted later in
        /// this generation (its own `Present` record lies beyond) knows the notice is stale: it
        /// was sent before the re-admission and overtaken by it on the way.
        last: Lsn,
    },
    /// Master to client, with each heartbeat when leases are on: "grant me a lease".
    LeaseRequest {
        /// The master's generation.
        gen: Gen,
        /// When the master asked, by its clock; the grant names it back.
        stamp: u64,
    },
    /// Client to master: "I will help elect no other master for the lease timeout from now".
    LeaseGrant {
        /// The generation granted to.
        gen: Gen,
        /// The request's stamp: the master counts the lease from then, which is earlier.
        stamp: u64,
    },
    /// Driver to driver, once per connection: where the sender's operator reaches it (its
    /// admin address), so one site can name every site's (`repsite check`). Never reaches the
    /// core.
    AdminAddr {
        /// The sender's admin address.
        admin: String,
    },
}

/// Why the master did not remove a site.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum RemoveRefusal {
    /// The site asked is not master.
    NotMaster {
        /// Who it believes is.
        master: Option<SiteAddr>,
    },
    /// The master was asked to remove itself: switch over first.
    CannotRemoveMaster {
        /// The master.
        master: SiteAddr,
    },
    /// No master, too few acks, or another change in flight.
    Unavail {
        /// Why.
        reason: String,
    },
}

/// How a join ended.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum JoinResult {
    /// The site is in the group; `master` of `gen` will send it the log.
    Accepted {
        /// The master.
        master: SiteAddr,
        /// Its generation.
        gen: Gen,
        /// The master's last LSN when it answered: a `Removed` notice of this generation that
        /// it sent before (its `last` below this) was overtaken by the admission, and is stale.
        last: Lsn,
    },
    /// No master, or too few acknowledgements: nothing was recorded. Retry later.
    Unavail {
        /// Why.
        reason: String,
    },
}

/// How many message types (variants of [`Message`]) this build has. The codec writes the
/// variant index as a u32 tag first, so a tag at or above this is a message from a newer build.
/// A test checks it against the codec's own count.
pub const MESSAGE_TYPES: u32 = 22;

impl Message {
    /// A short name for traces and statistics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Proof { .. } => "proof",
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
            Message::StaleGeneration { .. } => "stale_generation",
            Message::KeepAlive => "keep_alive",
            Message::JoinRequest { .. } => "join_request",
            Message::JoinReply { .. } => "join_reply",
            Message::RemoveRequest { .. } => "remove_request",
            Message::RemoveReply { .. } => "remove_reply",
            Message::Removed { .. } => "removed",
            Message::LeaseRequest { .. } => "lease_request",
            Message::LeaseGrant { .. } => "lease_grant",
            Message::AdminAddr { .. } => "admin_addr",
        }
    }

    /// The sender's own election priority, in the messages that state it (a join request's
    /// priority is the joiner's, which a helper may relay: not the sender's).
    pub fn sender_priority(&self) -> Option<u32> {
        match self {
            Message::SyncRequest { priority, .. }
            | Message::Ack { priority, .. }
            | Message::VoteRequest { priority, .. }
            | Message::Vote { priority, .. } => Some(*priority),
            _ => None,
        }
    }

    /// The lowest protocol version that has this message: version 1 has no membership
    /// database, so no joins or removals.
    pub fn min_version(&self) -> u8 {
        match self {
            Message::JoinRequest { .. }
            | Message::JoinReply { .. }
            | Message::RemoveRequest { .. }
            | Message::RemoveReply { .. }
            | Message::Removed { .. }
            | Message::LeaseRequest { .. }
            | Message::LeaseGrant { .. }
            | Message::AdminAddr { .. } => 2,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn message_types_matches_the_codec() {
        // The last type decodes past its tag (it fails later, on the missing fields); one more
        // is refused at the tag, as a variant index out of range.
        // Tags are varints, as postcard writes every integer.
        let last = codec::decode::<Message>(&codec::encode(&(MESSAGE_TYPES - 1)), 64).unwrap_err();
        let next = codec::decode::<Message>(&codec::encode(&MESSAGE_TYPES), 64).unwrap_err();
        assert!(last.to_string().contains("end of buffer"), "{last}");
        assert!(!next.to_string().contains("end of buffer"), "{next}");
        let removed = Message::Removed { gen: 1, last: 2 };
        assert_eq!(removed.kind(), "removed");
        assert_eq!(codec::encode(&removed), [18, 1, 2]);
    }
}
