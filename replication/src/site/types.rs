//! The site's interface values: configuration, inputs, outputs, requests, events, statistics.

use super::acks::AckPolicy;
use crate::log::Txn;
use crate::storage::StorageError;
use crate::types::{Gen, LogPos, Lsn, SiteAddr};
use crate::wire::Message;
use serde::{Deserialize, Serialize};

/// Timers, all in milliseconds of the time handed to [`super::Site::step`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// How long a commit waits for the acks its policy needs before `PermFailed`.
    pub ack_ms: u64,
    /// How often the master sends a heartbeat.
    pub heartbeat_interval_ms: u64,
    /// How long a client waits without hearing from its master before calling an election.
    pub heartbeat_timeout_ms: u64,
    /// How long a site with no master waits before standing, and how long an election lasts.
    pub election_timeout_ms: u64,
    /// Upper bound of the random delay added to each election wait (drawn from the site's seed).
    pub election_jitter_ms: u64,
    /// How long a candidate with enough votes keeps listening for a better-placed site (more
    /// advanced log, then higher priority) before declaring itself master.
    pub vote_collect_ms: u64,
    /// How long a client waits for an answer to a sync or log request before asking again.
    pub request_retry_ms: u64,
    /// How long a planned switchover may take before it is abandoned and the master resumes.
    pub step_down_ms: u64,
    /// How long a joining site waits before asking its helper again (after `Unavail`).
    pub join_retry_ms: u64,
    /// Master leases (Berkeley DB's `DB_REP_CONF_LEASE`), 0 for none: a client that grants its
    /// master a lease promises, for this long by its own clock, to help elect no other; a
    /// master serves leased reads only while a majority's leases run.
    pub lease_timeout_ms: u64,
    /// The most two sites' clocks may drift apart, in parts per million: a master counts a
    /// lease as running that much shorter, a client keeps its promise that much longer.
    pub clock_skew_ppm: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            ack_ms: 1_000,
            heartbeat_interval_ms: 200,
            heartbeat_timeout_ms: 1_000,
            election_timeout_ms: 1_000,
            election_jitter_ms: 500,
            vote_collect_ms: 100,
            request_retry_ms: 300,
            step_down_ms: 3_000,
            join_retry_ms: 1_000,
            lease_timeout_ms: 0,
            clock_skew_ppm: 10_000,
        }
    }
}

/// A site's configuration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Config {
    /// This site's address, exactly as the others know it.
    pub addr: SiteAddr,
    /// The static site list of a legacy group: every site, this one included, as protocol
    /// version 1 configures it (and as a version-2 site started with `legacy` lists it). Used
    /// while no membership database exists; ignored once one does. Empty otherwise.
    pub sites: Vec<SiteAddr>,
    /// Create the group (size 1, this site master) if no membership database exists. Ignored on
    /// every later start, since the database then exists.
    pub group_creator: bool,
    /// A member to join through if no membership database exists. Ignored on later starts.
    pub helper: Option<SiteAddr>,
    /// Wire protocol version this site speaks: 2 (membership database) or 1 (legacy: static
    /// site list only, no joins or removals).
    pub protocol_version: u8,
    /// Election priority; 0 means this site never becomes master.
    pub priority: u32,
    /// Which acks a commit waits for.
    pub ack_policy: AckPolicy,
    /// In a two-site group, whether a lone client may not elect itself (true: safety first).
    pub two_site_strict: bool,
    /// Most records in one `Log` message.
    pub log_batch_records: usize,
    /// Timers.
    pub timeouts: Timeouts,
}

impl Config {
    /// A site of a legacy group with a static site list (the list must include this site),
    /// with defaults: priority 100, quorum acks, strict two-site elections, protocol 2.
    pub fn new(addr: impl Into<SiteAddr>, sites: impl IntoIterator<Item = SiteAddr>) -> Config {
        Config {
            addr: addr.into(),
            sites: sites.into_iter().collect(),
            group_creator: false,
            helper: None,
            protocol_version: crate::wire::PROTOCOL_VERSION,
            priority: 100,
            ack_policy: AckPolicy::Quorum,
            two_site_strict: true,
            log_batch_records: 256,
            timeouts: Timeouts::default(),
        }
    }

    /// The primordial site of a new group: creates it on its first start.
    pub fn group_creator(addr: impl Into<SiteAddr>) -> Config {
        Config {
            group_creator: true,
            ..Config::new(addr, [])
        }
    }

    /// A site that joins an existing group through `helper` on its first start.
    pub fn joining(addr: impl Into<SiteAddr>, helper: impl Into<SiteAddr>) -> Config {
        Config {
            helper: Some(helper.into()),
            ..Config::new(addr, [])
        }
    }

    /// Checks what the core relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.sites.is_empty() && !self.sites.contains(&self.addr) {
            return Err(ConfigError(format!(
                "the static site list does not contain this site ({})",
                self.addr
            )));
        }
        match self.protocol_version {
            1 if self.sites.is_empty() => {
                return Err(ConfigError(
                    "protocol version 1 needs the full static site list".into(),
                ))
            }
            1 if self.group_creator || self.helper.is_some() => {
                return Err(ConfigError(
                    "protocol version 1 has no membership database: group_creator and helper \
                     need version 2"
                        .into(),
                ))
            }
            1 | 2 => {}
            v => {
                return Err(ConfigError(format!(
                    "unknown protocol version {v}: expected 1 or 2"
                )))
            }
        }
        if self.helper.as_ref() == Some(&self.addr) {
            return Err(ConfigError("a site cannot be its own helper".into()));
        }
        let mut sorted: Vec<_> = self.sites.iter().collect();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError(format!("site {} is listed twice", w[0])));
        }
        if self.log_batch_records == 0 {
            return Err(ConfigError("log_batch_records must be at least 1".into()));
        }
        let t = &self.timeouts;
        if t.heartbeat_interval_ms == 0 || t.heartbeat_interval_ms >= t.heartbeat_timeout_ms {
            return Err(ConfigError(format!(
                "heartbeat_interval_ms ({}) must be above 0 and below heartbeat_timeout_ms ({})",
                t.heartbeat_interval_ms, t.heartbeat_timeout_ms
            )));
        }
        if t.lease_timeout_ms > 0 && t.lease_timeout_ms <= 2 * t.heartbeat_interval_ms {
            return Err(ConfigError(format!(
                "lease_timeout_ms ({}) must be above twice heartbeat_interval_ms ({}): leases are \
                 renewed with every heartbeat",
                t.lease_timeout_ms, t.heartbeat_interval_ms
            )));
        }
        if t.clock_skew_ppm >= 500_000 {
            return Err(ConfigError(format!(
                "clock_skew_ppm ({}) must be below 500000",
                t.clock_skew_ppm
            )));
        }
        if t.election_timeout_ms == 0
            || t.ack_ms == 0
            || t.request_retry_ms == 0
            || t.join_retry_ms == 0
        {
            return Err(ConfigError(
                "election_timeout_ms, ack_ms, request_retry_ms and join_retry_ms must be above 0"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A configuration the core cannot run with.
#[derive(Debug, thiserror::Error)]
#[error("invalid site configuration: {0}")]
pub struct ConfigError(pub String);

/// Why a site could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The storage could not be read.
    #[error("cannot open the site's storage: {0}")]
    Storage(#[from] StorageError),
    /// What the site's storage holds says it must join the group (again), and it has neither a
    /// helper nor a member it knows of to ask: an operator has to name one (`helper`).
    #[error("{0}")]
    NeedsHelper(String),
}

/// Identifies a request so its reply can be matched; chosen by the driver.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct RequestId(pub u64);

/// A local request from the application or operator.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Request {
    /// Commit a transaction (master only).
    Commit(Txn),
    /// Hand mastership to `to` without losing anything (master only).
    StepDown {
        /// The site to become master.
        to: SiteAddr,
    },
    /// Remove `site` from the group. Any site may ask; a client forwards to the master and
    /// waits for its answer. Removing the master itself is refused: switch over first.
    RemoveSite {
        /// The site to remove, by its exact address.
        site: SiteAddr,
    },
    /// Archive the log: keep only the last `keep_records` records, folding the rest into the
    /// snapshot. Clients that need older records will then be initialised from the snapshot.
    Archive {
        /// Records to keep in the log.
        keep_records: u64,
    },
    /// Read `key` from this site's database. `leased`: only on a master holding a lease from a
    /// majority, so the value reflects every acknowledged write (Berkeley DB's master leases);
    /// otherwise whatever this site has applied, possibly stale.
    Read {
        /// The key.
        key: Vec<u8>,
        /// Whether the read must be served under a master lease.
        leased: bool,
    },
}

/// A successful answer to a request.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum Reply {
    /// The transaction is committed and as durable as the ack policy asks.
    Committed {
        /// Its LSN.
        lsn: Lsn,
    },
    /// Mastership was handed over; `to` is calling its election.
    SteppedDown {
        /// The new master-to-be.
        to: SiteAddr,
    },
    /// The site is no longer a member.
    SiteRemoved {
        /// The removed site.
        site: SiteAddr,
    },
    /// The log now starts at `first_lsn`.
    Archived {
        /// First LSN still in the log.
        first_lsn: Lsn,
    },
    /// The value of a key (`None`: no such key).
    Value(Option<Vec<u8>>),
}

/// A failed request.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug, thiserror::Error)]
pub enum RequestError {
    /// Writes go to the master; this site is not it. `master` is who it believes is.
    #[error("not master (master is {})", display_master(.master))]
    NotMaster {
        /// The master as this site knows it.
        master: Option<SiteAddr>,
    },
    /// Committed locally but the ack policy was not met within the ack timeout: durability is
    /// not guaranteed.
    #[error("commit at LSN {lsn} not durable: {have} of {needed} acks within the ack timeout")]
    PermFailed {
        /// The commit's LSN.
        lsn: Lsn,
        /// Acks received.
        have: usize,
        /// Acks needed.
        needed: usize,
    },
    /// This site stopped being master before the commit at `lsn` was acknowledged: it may
    /// survive on the next master or be rolled back.
    #[error(
        "mastership was lost before the commit at LSN {lsn} was acknowledged: its fate is unknown"
    )]
    MasterLost {
        /// The commit's LSN.
        lsn: Lsn,
    },
    /// A switchover to `to` is in progress: new writes wait for the new master.
    #[error("switchover to {to} in progress")]
    SwitchoverInProgress {
        /// The site taking over.
        to: SiteAddr,
    },
    /// The switchover could not complete; the master stays master.
    #[error("switchover failed: {reason}")]
    StepDownFailed {
        /// Why.
        reason: String,
    },
    /// No master, or too few acknowledgements: nothing was recorded; try again later.
    #[error("unavailable: {reason}")]
    Unavail {
        /// Why.
        reason: String,
    },
    /// The master cannot remove itself: hand mastership over first, then remove it.
    #[error("{master} is master: switch over to another site before removing it")]
    CannotRemoveMaster {
        /// The master.
        master: SiteAddr,
    },
    /// A leased read on a master that does not hold leases from a majority right now (just
    /// elected, cut off, or leases are not configured): nothing is read.
    #[error("no master lease: {reason}")]
    NoLease {
        /// Why.
        reason: String,
    },
    /// The request does not make sense here.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The site has stopped (removed from the group, or storage failed).
    #[error("site handle is dead: {reason}")]
    HandleDead {
        /// Why it stopped.
        reason: String,
    },
}

fn display_master(master: &Option<SiteAddr>) -> String {
    master
        .as_ref()
        .map_or_else(|| "unknown".to_string(), |m| m.to_string())
}

/// One input to a step.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Input {
    /// Time passed (the driver calls this at or after [`super::Site::next_deadline`]).
    Tick,
    /// A message arrived from `from` (authenticated by the handshake).
    Message {
        /// The sender.
        from: SiteAddr,
        /// The message.
        msg: Message,
    },
    /// A connection to a site came up; the handshake agreed on protocol `version`.
    PeerConnected {
        /// The peer.
        addr: SiteAddr,
        /// The agreed protocol version (the lower of the two sites').
        version: u8,
    },
    /// A connection to a group member went down.
    PeerDisconnected(SiteAddr),
    /// A local request.
    Request {
        /// Its identifier, echoed in the reply.
        id: RequestId,
        /// What is asked.
        request: Request,
    },
    /// Commits asked together (group commit): the master appends them as consecutive records
    /// with one write and one sync, and ships them in one message to each client; each is
    /// answered on its own, as its policy's acks arrive.
    Commits(Vec<(RequestId, crate::log::Txn)>),
}

/// One thing a step asks the driver to do, in order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Output {
    /// Send a message (dropped by the driver if the peer is not connected).
    Send {
        /// The receiver.
        to: SiteAddr,
        /// The message.
        msg: Message,
    },
    /// Answer a request.
    Reply {
        /// The request answered.
        id: RequestId,
        /// The answer.
        result: Result<Reply, RequestError>,
    },
    /// Tell the application something happened.
    Event(Event),
}

/// What a site tells its application, named after Berkeley DB's replication events.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum Event {
    /// This site won an election and is master of `gen`.
    BecameMaster {
        /// The new generation.
        gen: Gen,
    },
    /// This site is now a client.
    BecameClient {
        /// The generation it knows.
        gen: Gen,
    },
    /// A (new) master was found.
    NewMaster {
        /// The master.
        master: SiteAddr,
        /// Its generation.
        gen: Gen,
    },
    /// This site won an election.
    Elected {
        /// The generation it starts.
        gen: Gen,
        /// Votes received, its own included.
        votes: usize,
        /// Votes needed.
        needed: usize,
        /// The members whose votes were counted, this site included (as many as `votes`).
        voters: Vec<SiteAddr>,
        /// How many sites the group it counted has: its `Present` members, or the static list
        /// (a lenient pair's site that wins alone counts 2; one whose own log began removing
        /// its partner counts 1).
        #[serde(default)]
        group: usize,
    },
    /// This site cast its vote in a real election (not a pre-vote): for `candidate`, in election
    /// generation `egen`. A candidate votes for itself. The vote was durable before it left.
    Voted {
        /// Whom it voted for.
        candidate: SiteAddr,
        /// The election generation.
        egen: Gen,
    },
    /// An election this site ran ended without a winner.
    ElectionFailed {
        /// The election generation.
        egen: Gen,
        /// Votes received, its own included.
        votes: usize,
        /// Votes needed.
        needed: usize,
        /// It was the pre-vote round: no majority would have voted, so the site never asked for
        /// real votes and nothing was recorded anywhere.
        pre: bool,
    },
    /// The master went silent.
    MasterFailure {
        /// The master that was lost.
        master: SiteAddr,
    },
    /// Another site claims to be master of this master's generation or a later one.
    DuplicateMaster {
        /// The other master.
        other: SiteAddr,
        /// Its generation.
        gen: Gen,
    },
    /// A commit was not acknowledged as its policy requires within the ack timeout.
    PermFailed {
        /// The commit's LSN.
        lsn: Lsn,
        /// Acks received.
        have: usize,
        /// Acks needed.
        needed: usize,
    },
    /// This client's log diverged from its master's: the tail after `to` is about to go.
    WouldRollback {
        /// The last record kept.
        to: LogPos,
        /// The last record of the divergent tail.
        from: LogPos,
    },
    /// The divergent tail was removed.
    RolledBack {
        /// The last record kept.
        to: LogPos,
        /// LSNs of the transactions that were rolled back, oldest first.
        txns: Vec<Lsn>,
    },
    /// Internal initialisation finished: the database was replaced by the master's snapshot.
    InitDone {
        /// The snapshot's position.
        at: LogPos,
    },
    /// This client caught up with its master after (re)connecting.
    StartupDone {
        /// Where the log ends.
        at: LogPos,
    },
    /// A planned switchover completed on this (former) master.
    SteppedDown {
        /// The site that takes over.
        to: SiteAddr,
    },
    /// Joining the group failed (no master, or too few acks); the site retries.
    JoinFailure {
        /// Why.
        reason: String,
    },
    /// A site became a full member of the group.
    SiteAdded {
        /// The site.
        site: SiteAddr,
    },
    /// A site left the group.
    SiteRemoved {
        /// The site.
        site: SiteAddr,
    },
    /// This site was removed from the group: its handle is dead from now on.
    LocalSiteRemoved,
    /// The group moved from the legacy static list to a membership database.
    MembershipCreated {
        /// Its members.
        sites: Vec<SiteAddr>,
    },
    /// Storage failed: the site stopped.
    StorageFailed {
        /// The error.
        error: String,
    },
}

/// Master, client or electing.
#[derive(Copy, Clone, PartialEq, Eq, Serialize, Deserialize, Debug, Default)]
#[serde(rename_all = "snake_case")]
pub enum RoleKind {
    /// Following a master or waiting for one.
    #[default]
    Client,
    /// Running for master.
    Electing,
    /// The master.
    Master,
}

/// Per-site statistics.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug, Default)]
pub struct Stats {
    /// Current role.
    pub role: RoleKind,
    /// Highest generation seen.
    pub gen: Gen,
    /// The master followed (itself when master).
    pub master: Option<SiteAddr>,
    /// End of the log.
    pub last: LogPos,
    /// First LSN still in the log.
    pub first_lsn: Lsn,
    /// Elections this site stood in.
    pub elections: u64,
    /// Elections it won.
    pub elections_won: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages received from group members.
    pub messages_received: u64,
    /// Messages ignored (unknown sender, stale generation, unexpected).
    pub messages_ignored: u64,
    /// Records appended to the log.
    pub records_appended: u64,
    /// Transactions committed as master.
    pub commits: u64,
    /// Acks received as master.
    pub acks_received: u64,
    /// Commits that ended `PermFailed`.
    pub perm_failed: u64,
    /// Times this site stepped down as master on learning of a later generation.
    pub stale_master_steps: u64,
    /// Transactions rolled back as client.
    pub txns_rolled_back: u64,
    /// Internal initialisations done.
    pub inits: u64,
}
