//! The inputs of the group harness: how the group starts and what happens to it, as plain
//! values. They derive `arbitrary::Arbitrary` for the fuzzer (feature `arbitrary`); the property
//! tests build them with proptest. Numbers stand for sites, generations and LSNs so that any
//! bytes make a valid script: [`addr`] and [`super::Num`] say how.

use super::SITES;
use crate::fuzzing::Num;
use crate::types::SiteAddr;

/// A whole run: how the group starts, then what happens to it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupScript {
    /// How the group starts.
    pub setup: Setup,
    /// What happens, in order.
    pub ops: Vec<GroupOp>,
}

/// How the group starts.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Static site list, or a creator that the others join.
    pub start: Start,
    /// Each site's election priority, `p % 3` (0: never master).
    pub priorities: [u8; SITES],
    /// The ack policy: [`AckPolicy::ALL`]`[n % 7]`.
    pub ack_policy: u8,
    /// Seeds election jitter (each site gets its own from it).
    pub seed: u64,
    /// Whether a two-site group may elect a lone site.
    pub lenient_two_site: bool,
}

/// How the group is formed.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Every site lists all three; `legacy[i]` runs site `i` on protocol version 1.
    StaticList {
        /// Which sites speak only version 1.
        legacy: [bool; SITES],
    },
    /// Site 1 creates the group; sites 2 and 3 join through `helpers` (`h % 3`, itself
    /// meaning site 1).
    CreatorAndJoiners {
        /// Each joiner's helper.
        helpers: [u8; 2],
    },
}

/// One input to the group.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupOp {
    /// Time moves on by `ms % (MAX_ADVANCE_MS + 1)`; then `site` ticks.
    Tick {
        /// Which site (`% 3`).
        site: u8,
        /// How far.
        ms: u16,
    },
    /// Time moves to `site`'s next deadline (at most `MAX_ADVANCE_MS` ahead); then it ticks.
    Wait {
        /// Which site.
        site: u8,
    },
    /// Deliver the message at `pick % len` of those in flight.
    Deliver {
        /// Which one.
        pick: u8,
    },
    /// Deliver every message in flight now, oldest first (replies wait for the next input).
    DeliverAll,
    /// Deliver messages, replies included, until none is left (at most `MAX_SETTLE_ROUNDS`
    /// rounds of [`GroupOp::DeliverAll`]): a healthy network at its fastest.
    Settle,
    /// Lose one message.
    Drop {
        /// Which one.
        pick: u8,
    },
    /// Deliver a copy of a message and keep it in flight.
    Duplicate {
        /// Which one.
        pick: u8,
    },
    /// Deliver a changed copy of a message (a forgery: the sender never sent it).
    Mutate {
        /// Which one.
        pick: u8,
        /// How it changes.
        change: Mutation,
    },
    /// A message no site sent, delivered to `to` as if from `from` (a forgery).
    Inject {
        /// Receiver (`% 3`).
        to: u8,
        /// Claimed sender: a site, a newcomer or a stranger (see [`addr`]).
        from: u8,
        /// The message, built next to the receiver's state.
        msg: MsgSpec,
    },
    /// Bytes decoded as a message payload; if they decode, delivered to `to` from `from` (a
    /// forgery).
    Raw {
        /// Receiver.
        to: u8,
        /// Claimed sender.
        from: u8,
        /// The payload.
        bytes: Vec<u8>,
    },
    /// The link between two sites comes up (both ends hear of it if both run).
    Connect {
        /// One end.
        a: u8,
        /// The other.
        b: u8,
    },
    /// The link between two sites goes down.
    Disconnect {
        /// One end.
        a: u8,
        /// The other.
        b: u8,
    },
    /// A local request at the master (the site with the highest generation that thinks it is
    /// master; site 1 if none): what a client following `NotMaster` hints ends up doing.
    RequestAtMaster {
        /// What is asked.
        request: RequestSpec,
    },
    /// A local request at `site`.
    Request {
        /// Which site.
        site: u8,
        /// What is asked.
        request: RequestSpec,
    },
    /// The site crashes: unsynced records are lost, or with `tear` the first of them stays torn.
    Crash {
        /// Which site.
        site: u8,
        /// Tear the first unsynced record instead of losing it whole.
        tear: bool,
    },
    /// A record at `back` before the log's end rots (fails its checksum from now on).
    Rot {
        /// Which site.
        site: u8,
        /// How far from the end.
        back: u8,
    },
    /// A crashed site starts again from its disk (a torn tail is cut, as opening a file does).
    Restart {
        /// Which site.
        site: u8,
    },
}

/// How a copy of a message in flight is changed.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Every generation field moves to this (next to its value).
    Gen(Num),
    /// Every LSN field moves to this.
    Lsn(Num),
    /// One record of a `Log` message fails its checksum.
    CorruptRecord(u8),
    /// One record of a `Log` message is left out.
    DropRecord(u8),
    /// The records of a `Log` message come in reverse order.
    Reverse,
    /// It claims another sender.
    Sender(u8),
}

/// A local request.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestSpec {
    /// Commit `key = value` (one byte each).
    Commit {
        /// The key.
        key: u8,
        /// The value.
        value: u8,
    },
    /// Hand mastership to a site.
    StepDown {
        /// The target (see [`addr`]).
        to: u8,
    },
    /// Remove a site from the group.
    RemoveSite {
        /// The site (see [`addr`]).
        site: u8,
    },
    /// Keep only the last `keep` records in the log.
    Archive {
        /// Records kept.
        keep: u8,
    },
    /// Commit `1 + more % 4` transactions in one step, as a driver batches concurrent
    /// commits (`Input::Commits`): keys `key`, `key + 1`, ...
    Commits {
        /// The first key (and every value).
        key: u8,
        /// How many more than one.
        more: u8,
    },
}

/// A message built next to its receiver's state: generations relative to its generation, LSNs
/// relative to its last LSN, sites by number (see [`addr`]).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MsgSpec {
    /// "I am master."
    Heartbeat {
        /// Its generation.
        gen: Num,
        /// Generation of its log's end.
        last_gen: Num,
        /// Its log's end.
        last_lsn: Num,
        /// Its first LSN.
        first_lsn: Num,
    },
    /// Records.
    Log {
        /// The sender's generation.
        gen: Num,
        /// The records.
        records: Vec<RecordSpec>,
    },
    /// A client starts following.
    SyncRequest {
        /// Its generation.
        gen: Num,
        /// Its priority.
        priority: u8,
    },
    /// The master's history.
    SyncInfo {
        /// Its generation.
        gen: Num,
        /// `(generation, first LSN)` pairs, taken as they come (possibly ill-formed).
        history: Vec<(Num, Num)>,
        /// Its first LSN.
        first_lsn: Num,
        /// Generation of its log's end.
        last_gen: Num,
        /// Its log's end.
        last_lsn: Num,
    },
    /// "Send me records from here."
    LogRequest {
        /// The client's generation.
        gen: Num,
        /// From.
        from: Num,
    },
    /// A snapshot for internal initialisation.
    InitSnapshot {
        /// The sender's generation.
        gen: Num,
        /// Its position's generation.
        at_gen: Num,
        /// Its position's LSN.
        at_lsn: Num,
        /// Its history, as it comes.
        history: Vec<(Num, Num)>,
        /// Keys in its database.
        keys: u8,
        /// Members in its membership database (bit `i`: site `i`).
        members: u8,
    },
    /// An acknowledgement.
    Ack {
        /// Generation.
        gen: Num,
        /// LSN.
        lsn: Num,
        /// Priority.
        priority: u8,
    },
    /// A vote request.
    VoteRequest {
        /// Election generation.
        egen: Num,
        /// Generation of the candidate's log end.
        last_gen: Num,
        /// The candidate's log end.
        last_lsn: Num,
        /// Its priority.
        priority: u8,
        /// Switchover.
        takeover: bool,
        /// Pre-vote.
        pre: bool,
    },
    /// A vote.
    Vote {
        /// Election generation.
        egen: Num,
        /// Granted.
        granted: bool,
        /// The voter's generation.
        gen: Num,
        /// Generation of its log end.
        last_gen: Num,
        /// Its log end.
        last_lsn: Num,
        /// Its priority.
        priority: u8,
        /// The master it follows.
        master: Option<u8>,
        /// Pre-vote.
        pre: bool,
        /// Its term.
        term: Num,
    },
    /// "Take over now."
    TakeOver {
        /// Generation.
        gen: Num,
    },
    /// "You are stale."
    StaleGeneration {
        /// Generation.
        gen: Num,
    },
    /// A join.
    JoinRequest {
        /// The joiner.
        site: u8,
        /// Its priority.
        priority: u8,
    },
    /// A join's answer.
    JoinReply {
        /// The joiner.
        site: u8,
        /// Accepted (else unavailable).
        accepted: bool,
        /// The master named.
        master: u8,
        /// Its generation.
        gen: Num,
    },
    /// A removal request.
    RemoveRequest {
        /// The site to remove.
        site: u8,
    },
    /// A removal's answer.
    RemoveReply {
        /// The site.
        site: u8,
        /// `None`: removed; else a refusal kind.
        error: Option<u8>,
    },
    /// "You were removed."
    Removed {
        /// Generation.
        gen: Num,
        /// The master's last LSN.
        last: Num,
    },
    /// A keep-alive, hello or proof: driver-level messages that must not reach the core, or
    /// be ignored if they do.
    DriverNoise(u8),
}

/// A log record in a forged `Log` message.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSpec {
    /// LSN, next to the receiver's last.
    pub lsn: Num,
    /// Generation, next to the receiver's.
    pub gen: Num,
    /// What it says.
    pub body: BodySpec,
    /// False: the checksum does not match.
    pub intact: bool,
}

/// A record body.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodySpec {
    /// A generation start by a site.
    GenStart(u8),
    /// `key = value`.
    Put(u8, u8),
    /// Delete `key`.
    Delete(u8),
    /// A membership change: site, state (`% 4`, 3 = removed), priority.
    Member(u8, u8, u8),
    /// The membership database created with these sites (bit `i`: site `i`).
    Created(u8),
}

/// The address a number names: sites 1 to 3, a newcomer (`s4`), or a stranger.
pub fn addr(n: u8) -> SiteAddr {
    match n % 5 {
        i @ 0..=2 => site_addr(usize::from(i)),
        3 => SiteAddr::new("s4:7000"),
        _ => SiteAddr::new("stranger:1"),
    }
}

pub(super) fn site_addr(i: usize) -> SiteAddr {
    SiteAddr::new(format!("s{}:7000", i + 1))
}
