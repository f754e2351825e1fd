//! The site: a pure state machine that is one member of a replication group.
//!
//! Everything a site decides happens in [`Site::step`]: the driver hands in the current time and
//! one [`Input`] (a message, a timer tick, a connection change, a local request) and gets back
//! [`Output`]s (messages to send, replies, events). Durable state goes through the injected
//! [`Storage`], synchronously, so that a step's outputs are only released once what they promise
//! is on disk (an ack after the sync of what it acknowledges, a vote after the sync of the vote).
//!
//! The site must never read a clock, touch a socket or draw global randomness: time comes in with
//! each step and election jitter comes from the seed given to [`Site::open`].
//!
//! The behaviour is split by responsibility: [`election`](self::election) (votes, winning,
//! stepping down), `client` (following a master: verify, roll back, catch up, initialise),
//! `master` (commits, acks, heartbeats, switchover, archiving) and [`acks`] (policy counting).

pub mod acks;
mod client;
mod election;
mod lease;
mod master;
mod membership;
mod types;

pub use acks::{AckCount, AckPolicy, Tally};
pub use types::*;

use crate::log::{Database, GenHistory, LogRecord, Snapshot};
use crate::storage::{self, Meta, Storage, StorageError};
use crate::types::{majority, LogPos, Lsn, SiteAddr, Time};
use crate::wire::Message;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

use client::Client;
use election::Election;
use master::Master;
use membership::SettledChanges;

/// What a site is doing now.
#[derive(Debug)]
enum Role {
    /// Following a master (or waiting for one).
    Client(Client),
    /// Running for master.
    Electing(Election),
    /// The master.
    Master(Master),
}

/// What this site knows about another site it talks to.
#[derive(Clone, Debug, Default)]
struct Peer {
    connected: bool,
    /// Learned from the peer's own messages (the membership database's entry is the fallback).
    priority: Option<u32>,
    /// The protocol version agreed with it at the last handshake.
    version: Option<u8>,
}

/// One site of a replication group.
pub struct Site<S: Storage> {
    cfg: Config,
    storage: S,
    meta: Meta,
    db: Database,
    history: GenHistory,
    role: Role,
    peers: BTreeMap<SiteAddr, Peer>,
    rng: ChaCha8Rng,
    now: Time,
    outputs: Vec<Output>,
    stats: Stats,
    /// Set once the site stopped (storage failed, or it was removed from the group): it does
    /// nothing more and answers `HandleDead`.
    dead: Option<String>,
    /// A deadline the last tick left due, and the role and generation it left it in (see
    /// `check_ticks_progress`).
    overdue: Option<(Time, RoleKind, crate::types::Gen)>,
    /// While joining: when to ask the helper (again).
    join_at: Option<Time>,
    /// Whether the helper answered the last join request (with `Unavail`): a retry after an
    /// answer is not a silence to report.
    join_answered: bool,
    /// The site the last join request went to, and whose turn it is in
    /// [`Site::join_targets`] (it moves on when the one asked stays silent).
    join_asked: Option<SiteAddr>,
    join_turn: usize,
    /// Removal requests forwarded to the master: the site to remove and when to give up.
    removes: BTreeMap<RequestId, (SiteAddr, Time)>,
    /// A client catching up applied the record of its own removal: it leaves the group once it
    /// has caught up and no later record added it back (the group may have re-admitted it, as
    /// it does a removed site that asks to join again, further on in the same log).
    removal_pending: bool,
    /// What this site's log shows the group settled (a priority-0 site guards it in its votes).
    settled: SettledChanges,
    /// Where this run applied the record that made this site a member (a joiner, or a removed
    /// site the group took back): a `Removed` notice older than that is stale (`on_removed`).
    readmitted_at: Option<LogPos>,
    /// The log is durable up to here: a master answers a commit only once it is (see
    /// [`Site::sync_deferred_appends`]).
    synced_through: Lsn,
    /// A master appended records and shipped them without syncing: the driver syncs them right
    /// after carrying out the step's outputs, so the master's sync and its clients' overlap.
    sync_deferred: bool,
    /// Until when (this site's clock) it keeps a master lease it granted: it helps elect no
    /// master before then (see `lease.rs`).
    lease_promised_until: Option<Time>,
}

/// Replays the log into the database (`storage::replay`), noting what it shows settled.
fn replay_noting_changes<S: Storage>(
    storage: &mut S,
) -> Result<(Snapshot, SettledChanges), StorageError> {
    let mut settled = SettledChanges::default();
    let snapshot = storage::replay_visiting(storage, |record| settled.note(record))?;
    Ok((snapshot, settled))
}

impl<S: Storage> std::fmt::Debug for Site<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("addr", &self.cfg.addr)
            .field("role", &self.role)
            .field("meta", &self.meta)
            .field("last", &self.last())
            .finish()
    }
}

impl<S: Storage> Site<S> {
    /// Opens a site on its storage: loads the snapshot, replays the log into the database, and
    /// starts as a client looking for a master. `seed` drives election jitter (nothing else).
    pub fn open(cfg: Config, mut storage: S, seed: u64, now: Time) -> Result<Self, OpenError> {
        cfg.validate()?;
        let meta = storage.read_meta()?.unwrap_or_default();
        let (Snapshot { db, history }, settled) = replay_noting_changes(&mut storage)?;
        assert_eq!(
            db.applied().lsn,
            storage.last_lsn(),
            "replay stops at the log's end"
        );
        let mut site = Site {
            role: Role::Client(Client::new(now)),
            // What a site finds on opening is its log; no commit waits on it.
            synced_through: storage.last_lsn(),
            storage,
            meta,
            db,
            history,
            peers: BTreeMap::new(),
            join_at: None,
            join_answered: false,
            join_asked: None,
            join_turn: 0,
            removes: BTreeMap::new(),
            removal_pending: false,
            readmitted_at: None,
            settled,
            sync_deferred: false,
            lease_promised_until: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now,
            outputs: Vec::new(),
            stats: Stats::default(),
            dead: None,
            overdue: None,
            cfg,
        };
        site.promise_on_open();
        let delay = site.election_delay();
        site.client_mut().expect("opens as client").election_at = now.plus_ms(delay);
        // Every start begins as a client; the first step's outputs carry the event.
        site.emit(Event::BecameClient { gen: site.meta.gen });
        site.start_membership()?;
        Ok(site)
    }

    /// Feeds one input at time `now` and returns what the site wants done, in order.
    pub fn step(&mut self, now: Time, input: Input) -> Vec<Output> {
        let tick = matches!(input, Input::Tick);
        // Time handed in by a driver never goes backwards for the core, even if a skewed clock
        // does: a step at an earlier time is a step at the latest time seen.
        self.now = self.now.max(now);
        let asked: Vec<RequestId> = match &input {
            Input::Request { id, .. } => vec![*id],
            Input::Commits(batch) => batch.iter().map(|(id, _)| *id).collect(),
            _ => Vec::new(),
        };
        if self.dead.is_some() {
            self.answer_dead(&asked);
            return std::mem::take(&mut self.outputs);
        }
        if let Err(error) = self.dispatch(input) {
            self.die(error);
            // What was asked in this very step may have failed before it had a waiter for
            // `die` to answer (an archive, a commit whose append failed): answer it too.
            self.answer_dead(&asked);
        }
        self.finish_join_if_member();
        self.check_invariants();
        if tick {
            self.check_ticks_progress();
        }
        std::mem::take(&mut self.outputs)
    }

    /// Answers each of `ids` that this step has not answered yet: the site has stopped.
    fn answer_dead(&mut self, ids: &[RequestId]) {
        let reason = self
            .dead
            .clone()
            .expect("answered as dead only once stopped");
        for &id in ids {
            let answered = self
                .outputs
                .iter()
                .any(|o| matches!(o, Output::Reply { id: r, .. } if *r == id));
            if !answered {
                let reason = reason.clone();
                self.reply(id, Err(RequestError::HandleDead { reason }));
            }
        }
    }

    /// Hands back the (emptied) vector a step returned, so that the next step fills it rather
    /// than a new one: a driver steps for every message.
    pub fn reuse_outputs(&mut self, mut spent: Vec<Output>) {
        if self.outputs.capacity() == 0 {
            spent.clear();
            self.outputs = spent;
        }
    }

    /// Whether the last step left appended records to sync: the driver calls
    /// [`Site::sync_deferred_appends`] once it has carried out that step's outputs.
    pub fn needs_sync(&self) -> bool {
        self.sync_deferred && self.dead.is_none()
    }

    /// Syncs what a master appended and shipped in the last step, then answers the commits that
    /// were waiting only for that. A master ships records before its own sync so that its sync
    /// and its clients' overlap; what it promises is unchanged, as a commit is answered only when
    /// both the policy's acks and its own sync are in. A driver that calls this at once after
    /// every step gives the behaviour of syncing before shipping, in order.
    pub fn sync_deferred_appends(&mut self, now: Time) -> Vec<Output> {
        self.now = self.now.max(now);
        if self.needs_sync() {
            if let Err(error) = self.sync_log().and_then(|()| self.resolve_pending()) {
                self.die(error);
            }
            self.check_invariants();
        }
        std::mem::take(&mut self.outputs)
    }

    /// [`Site::step`] then [`Site::sync_deferred_appends`], with the outputs of both: for drivers
    /// that have no I/O to overlap with the sync (tests, harnesses).
    pub fn step_and_sync(&mut self, now: Time, input: Input) -> Vec<Output> {
        let mut outputs = self.step(now, input);
        while self.needs_sync() {
            outputs.extend(self.sync_deferred_appends(now));
        }
        outputs
    }

    /// Makes every appended record durable.
    fn sync_log(&mut self) -> Result<(), StorageError> {
        self.storage.sync()?;
        self.synced_through = self.last().lsn;
        self.sync_deferred = false;
        self.mark_voters_floor()
    }

    /// Raises the metadata's `voters_floor` to the last change of who votes, once that change is
    /// durable (one metadata write per such change: they are rare).
    fn mark_voters_floor(&mut self) -> Result<(), StorageError> {
        let voters = self.settled.voters;
        if voters > self.meta.voters_floor && voters.lsn <= self.synced_through {
            self.meta.voters_floor = voters;
            self.save_meta()?;
        }
        Ok(())
    }

    /// True while this site's log ends below the last change of who votes that it once held
    /// durably (`Meta::voters_floor`): damage took synced records, and its view of the group
    /// may lack members. Until a master brings the log back above the mark, it does not stand
    /// (it could count itself a majority of a group it misremembers) and refuses candidates
    /// below the mark.
    pub(super) fn lost_voter_changes(&self) -> bool {
        self.last() < self.meta.voters_floor
    }

    fn dispatch(&mut self, input: Input) -> Result<(), StorageError> {
        match input {
            Input::Tick => self.on_tick(),
            Input::Message { from, msg } => self.on_message(from, msg),
            Input::PeerConnected { addr, version } => {
                let peer = self.peers.entry(addr.clone()).or_default();
                peer.connected = true;
                peer.version = Some(version);
                self.on_peer_connected(&addr);
                self.create_membership_if_ready()
            }
            Input::PeerDisconnected(addr) => {
                if let Some(peer) = self.peers.get_mut(&addr) {
                    peer.connected = false;
                }
                self.on_master_connection_lost(&addr);
                // A candidate may have all it needs now: every site still connected answered,
                // or the other site of a lenient pair went away. Judge the round at once, not
                // at its deadline (which a driver's next tick waits for). So too a master's
                // commits: under a policy that counts the connected sites (`all_available`),
                // one that went away without acknowledging no longer holds them back.
                match self.role {
                    Role::Electing(_) => self.check_win(),
                    Role::Master(_) => self.resolve_pending(),
                    Role::Client(_) => Ok(()),
                }
            }
            Input::Request { id, request } => self.on_request(id, request),
            Input::Commits(batch) => self.commit_batch(batch),
        }
    }

    fn on_tick(&mut self) -> Result<(), StorageError> {
        self.membership_tick()?;
        match &self.role {
            Role::Client(_) => self.client_tick(),
            Role::Electing(_) => self.election_tick(),
            Role::Master(_) => self.master_tick(),
        }
    }

    fn on_message(&mut self, from: SiteAddr, msg: Message) -> Result<(), StorageError> {
        if from == self.cfg.addr || msg.min_version() > self.cfg.protocol_version {
            // Our own address, or a message our protocol version does not have.
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        self.stats.messages_received += 1;
        // Noted before the message is handled (an ack is counted by the priority it states),
        // and acted on after: the acknowledgement policies count only sites that may become
        // master, so a change can decide a master's pending commits.
        let priority_news = msg
            .sender_priority()
            .is_some_and(|priority| self.note_priority(&from, priority));
        self.dispatch_message(from, msg)?;
        if priority_news {
            self.resolve_pending()?;
        }
        Ok(())
    }

    fn dispatch_message(&mut self, from: SiteAddr, msg: Message) -> Result<(), StorageError> {
        match msg {
            Message::Heartbeat {
                gen,
                last,
                first_lsn,
            } => self.on_heartbeat(from, gen, last, first_lsn),
            Message::LeaseRequest { gen, stamp } => {
                self.on_lease_request(from, gen, stamp);
                Ok(())
            }
            Message::LeaseGrant { gen, stamp } => {
                self.on_lease_grant(from, gen, stamp);
                Ok(())
            }
            Message::Log { gen, records } => self.on_log(from, gen, records),
            Message::SyncRequest { gen, .. } => self.on_sync_request(from, gen),
            Message::SyncInfo {
                gen,
                history,
                first_lsn,
                last,
            } => self.on_sync_info(from, gen, history, first_lsn, last),
            Message::LogRequest { gen, from: lsn } => self.on_log_request(from, gen, lsn),
            Message::InitSnapshot { gen, snapshot } => self.on_init_snapshot(from, gen, snapshot),
            Message::Ack { gen, lsn, .. } => self.on_ack(from, gen, lsn),
            Message::VoteRequest {
                egen,
                last,
                priority,
                takeover,
                pre,
            } => {
                let ask = election::Ask {
                    egen,
                    last,
                    priority,
                    takeover,
                    pre,
                };
                self.on_vote_request(from, ask)
            }
            Message::Vote {
                egen,
                granted,
                gen,
                last,
                priority,
                master,
                pre,
                term,
            } => {
                let ballot = election::Ballot {
                    term,
                    egen,
                    granted,
                    gen,
                    last,
                    priority,
                    master,
                    pre,
                };
                self.on_vote(from, ballot)
            }
            Message::TakeOver { gen } => self.on_take_over(from, gen),
            Message::Hello { .. }
            | Message::Proof { .. }
            | Message::KeepAlive
            | Message::AdminAddr { .. } => {
                // The handshake belongs to the driver; one reaching the core is noise.
                self.stats.messages_ignored += 1;
                Ok(())
            }
            Message::StaleGeneration { gen } => self.on_stale_generation(gen),
            Message::JoinRequest { site, priority } => self.on_join_request(from, site, priority),
            Message::JoinReply { site, result } => self.on_join_reply(from, site, result),
            Message::RemoveRequest { site } => self.on_remove_request(from, site),
            Message::RemoveReply { site, error } => {
                self.on_remove_reply(from, site, error);
                Ok(())
            }
            Message::Removed { gen, last } => self.on_removed(from, gen, last),
        }
    }

    fn on_request(&mut self, id: RequestId, request: Request) -> Result<(), StorageError> {
        match request {
            Request::Commit(txn) => self.commit(id, txn),
            Request::StepDown { to } => self.step_down(id, to),
            Request::RemoveSite { site } => self.remove_site(id, site),
            Request::Archive { keep_records } => self.archive(id, keep_records),
            Request::Read { key, leased } => {
                self.read(id, key, leased);
                Ok(())
            }
        }
    }

    /// The earliest time at which the site wants a [`Input::Tick`]; `None` once it is dead.
    pub fn next_deadline(&self) -> Option<Time> {
        if self.dead.is_some() {
            return None;
        }
        let role = match &self.role {
            Role::Client(c) => c.deadline(),
            Role::Electing(e) => e.deadline(),
            Role::Master(m) => m.deadline(),
        };
        let removes = self.removes.values().map(|&(_, at)| at);
        Some(removes.chain(self.join_at).fold(role, Time::min))
    }

    // ----- read-only views -------------------------------------------------------------------

    /// This site's address.
    pub fn addr(&self) -> &SiteAddr {
        &self.cfg.addr
    }

    /// The configuration the site was opened with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Master, client or electing.
    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Client(_) => RoleKind::Client,
            Role::Electing(_) => RoleKind::Electing,
            Role::Master(_) => RoleKind::Master,
        }
    }

    /// The election this site is standing in, if any: its generation, and whether this round
    /// is the pre-vote.
    pub fn standing_in(&self) -> Option<(crate::types::Gen, bool)> {
        match &self.role {
            Role::Electing(e) => Some((e.egen, e.pre)),
            _ => None,
        }
    }

    /// True if this site is master.
    pub fn is_master(&self) -> bool {
        matches!(self.role, Role::Master(_))
    }

    /// The master this site follows (itself when master).
    pub fn master(&self) -> Option<&SiteAddr> {
        match &self.role {
            Role::Master(_) => Some(&self.cfg.addr),
            Role::Client(c) => c.master.as_ref(),
            Role::Electing(_) => None,
        }
    }

    /// The master this client follows and the generation it follows it in; none for a master,
    /// a candidate, or a client that knows no master.
    pub fn followed(&self) -> Option<(&SiteAddr, crate::types::Gen)> {
        match &self.role {
            Role::Client(c) => c.master.as_ref().map(|m| (m, c.master_gen)),
            _ => None,
        }
    }

    /// The highest generation this site has seen.
    pub fn gen(&self) -> crate::types::Gen {
        self.meta.gen
    }

    /// The end of this site's log.
    pub fn last(&self) -> LogPos {
        self.db.applied()
    }

    /// The log position below which this site refuses a candidate's log in an election: its
    /// own last record if it could stand itself, else what its log shows the group settled
    /// ([`SettledChanges`]); and while its log lacks changes of who votes it once held
    /// durably, at least the last of those (`Meta::voters_floor`).
    pub fn vote_guard(&self) -> LogPos {
        let guard = if self.cfg.priority > 0 {
            self.last()
        } else {
            self.settled.settled
        };
        if self.lost_voter_changes() {
            guard.max(self.meta.voters_floor)
        } else {
            guard
        }
    }

    /// The generation history of this site's log.
    pub fn history(&self) -> &GenHistory {
        &self.history
    }

    /// The database (read-only: writes go through the master as transactions).
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Reads a key locally. Clients serve reads too; they may lag the master.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.db.get(key)
    }

    /// The site's statistics.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.role = self.role();
        stats.gen = self.meta.gen;
        stats.last = self.last();
        stats.first_lsn = self.storage.first_lsn();
        stats.master = self.master().cloned();
        stats
    }

    /// Why the site stopped, if it did.
    pub fn dead(&self) -> Option<&str> {
        self.dead.as_deref()
    }

    /// The storage (for inspection by tests and checkers).
    pub fn storage(&mut self) -> &mut S {
        &mut self.storage
    }

    /// The storage, read-only.
    pub fn storage_ref(&self) -> &S {
        &self.storage
    }

    /// Gives the storage back, ending the site (a crash or a clean shutdown).
    pub fn into_storage(self) -> S {
        self.storage
    }

    // ----- shared helpers ---------------------------------------------------------------------

    fn client_mut(&mut self) -> Option<&mut Client> {
        match &mut self.role {
            Role::Client(c) => Some(c),
            _ => None,
        }
    }

    /// Votes needed to win: a majority of the whole group, down sites included, except that a
    /// two-site group without `two_site_strict` lets one site elect itself.
    fn votes_needed(&self) -> usize {
        let n = self.group_size();
        if n == 2 && !self.cfg.two_site_strict {
            1
        } else {
            majority(n)
        }
    }

    /// Records a peer's priority, as its latest message states it; true if that changed it.
    fn note_priority(&mut self, from: &SiteAddr, priority: u32) -> bool {
        let peer = self.peers.entry(from.clone()).or_default();
        peer.priority.replace(priority) != Some(priority)
    }

    /// Whether a connection to `addr` is up.
    fn is_connected(&self, addr: &SiteAddr) -> bool {
        self.peers.get(addr).is_some_and(|p| p.connected)
    }

    /// Whether `addr` may become master: its own word, else its membership entry, else assumed.
    fn is_electable(&self, addr: &SiteAddr) -> bool {
        let live = self.peers.get(addr).and_then(|p| p.priority);
        live.unwrap_or_else(|| self.member_priority(addr)) > 0
    }

    fn send(&mut self, to: &SiteAddr, msg: Message) {
        debug_assert_ne!(to, &self.cfg.addr, "a site never sends to itself");
        self.stats.messages_sent += 1;
        self.outputs.push(Output::Send {
            to: to.clone(),
            msg,
        });
    }

    /// Sends to every site that follows the log: members in any state, or the static list.
    fn broadcast(&mut self, msg: Message) {
        for to in self.recipients() {
            self.send(&to, msg.clone());
        }
    }

    fn emit(&mut self, event: Event) {
        self.outputs.push(Output::Event(event));
    }

    fn reply(&mut self, id: RequestId, result: Result<Reply, RequestError>) {
        self.outputs.push(Output::Reply { id, result });
    }

    /// Persists the generation and vote. Must happen before anything that depends on them leaves
    /// the site (a vote, a heartbeat of the new generation).
    fn save_meta(&mut self) -> Result<(), StorageError> {
        self.storage.write_meta(&self.meta)
    }

    /// Raises the known master generation (a message from a later generation arrived). An
    /// election generation below it is over: its vote is forgotten.
    fn adopt_gen(&mut self, gen: crate::types::Gen) -> Result<(), StorageError> {
        if gen > self.meta.gen {
            self.meta.gen = gen;
            if self.meta.egen < gen {
                self.meta.egen = gen;
                self.meta.voted_for = None;
            }
            self.save_meta()?;
        }
        Ok(())
    }

    /// The highest generation this site knows of, has voted in or stood in: a master of an
    /// older generation is never followed (the rule that keeps an acknowledged commit on every
    /// later master, as a Raft term does).
    pub fn term(&self) -> crate::types::Gen {
        self.meta.gen.max(self.meta.egen)
    }

    /// Another site shows a master generation later than ours (in its log or its messages):
    /// whatever master we are or follow is stale. Adopt the generation and drop that master, so
    /// the later one (or a new election) can take over. Returns true if it was later.
    fn saw_later_gen(&mut self, gen: crate::types::Gen) -> Result<bool, StorageError> {
        if gen <= self.meta.gen {
            return Ok(false);
        }
        self.adopt_gen(gen)?;
        let stale = match &self.role {
            Role::Master(_) => true,
            Role::Electing(e) => e.egen <= gen,
            Role::Client(c) => c.master.is_some() && c.master_gen < gen,
        };
        if stale {
            if self.is_master() {
                self.stats.stale_master_steps += 1;
            }
            self.become_client(None);
        }
        Ok(true)
    }

    /// A site knows of a generation later than ours: raise our election generation past it (so
    /// our next election is above it) and, if master, step down.
    fn on_stale_generation(&mut self, gen: crate::types::Gen) -> Result<(), StorageError> {
        if gen <= self.term() {
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        self.meta.egen = gen;
        self.meta.voted_for = None;
        self.save_meta()?;
        match &mut self.role {
            Role::Master(_) => {
                self.stats.stale_master_steps += 1;
                self.become_client(None);
            }
            Role::Electing(e) if e.egen < gen => self.become_client(None),
            Role::Client(c) => c.drop_master_below(gen),
            Role::Electing(_) => {}
        }
        Ok(())
    }

    /// Appends records to the log and applies them to the database. Not yet durable: the
    /// caller syncs before acknowledging.
    fn append(&mut self, records: &[LogRecord]) -> Result<(), StorageError> {
        self.storage.append(records)?;
        for record in records {
            self.history.note_append(record);
            let before = match &record.body {
                crate::log::RecordBody::Membership { site, .. } => {
                    self.db.members().get(site).copied()
                }
                _ => None,
            };
            self.db.apply(record);
            self.settled.note(record);
            self.note_membership_change(record, before);
        }
        self.stats.records_appended += records.len() as u64;
        Ok(())
    }

    /// Drops the log after `lsn` and rebuilds the database as the replay of what remains.
    fn truncate_after(&mut self, lsn: Lsn) -> Result<(), StorageError> {
        self.storage.truncate_after(lsn)?;
        self.synced_through = self.synced_through.min(lsn);
        if self.readmitted_at.is_some_and(|at| at.lsn > lsn) {
            self.readmitted_at = None;
        }
        let (Snapshot { db, history }, settled) = replay_noting_changes(&mut self.storage)?;
        self.db = db;
        self.history = history;
        self.settled = settled;
        // A rollback is no damage: the changes it took were never the group's.
        self.lower_voters_floor(settled.voters)
    }

    /// Lowers `voters_floor` to `to` (the log lost a change of who votes for a good reason).
    pub(super) fn lower_voters_floor(&mut self, to: LogPos) -> Result<(), StorageError> {
        if self.meta.voters_floor > to {
            self.meta.voters_floor = to;
            self.save_meta()?;
        }
        Ok(())
    }

    /// A fresh election delay: the base timeout plus seeded jitter, so that sites that lost their
    /// master together do not all stand at once.
    fn election_delay(&mut self) -> u64 {
        let t = &self.cfg.timeouts;
        let jitter = if t.election_jitter_ms == 0 {
            0
        } else {
            self.rng.next_u64() % t.election_jitter_ms
        };
        t.election_timeout_ms + jitter
    }

    fn become_client(&mut self, master: Option<SiteAddr>) {
        let was_client = matches!(self.role, Role::Client(_));
        debug_assert!(master.is_none(), "a master is followed through `follow`");
        let mut client = Client::new(self.now);
        let delay = self.election_delay();
        client.election_at = self.now.plus_ms(delay);
        client.master = master;
        let old = std::mem::replace(&mut self.role, Role::Client(client));
        if let Role::Master(m) = old {
            // Whoever waits on this master hears now: it will not answer later.
            self.abandon(m);
        }
        if !was_client {
            self.emit(Event::BecameClient { gen: self.meta.gen });
        }
    }

    fn die(&mut self, error: StorageError) {
        let reason = error.to_string();
        self.emit(Event::StorageFailed {
            error: reason.clone(),
        });
        self.halt(reason);
    }

    /// Stops the site for good. Anything waiting for an answer gets one now: the site will not
    /// give it later.
    fn halt(&mut self, reason: String) {
        let mut waiting: Vec<RequestId> = self.removes.keys().copied().collect();
        self.removes.clear();
        if let Role::Master(m) = &mut self.role {
            waiting.extend(m.pending.values().filter_map(|p| match p.waiter {
                master::Waiter::Request(id) => Some(id),
                master::Waiter::Remove {
                    asked_by: master::Asker::Local(id),
                    ..
                } => Some(id),
                _ => None,
            }));
            waiting.extend(m.step_down.as_ref().map(|s| s.id));
            m.pending.clear();
            m.step_down = None;
        }
        for id in waiting {
            let reason = reason.clone();
            self.reply(id, Err(RequestError::HandleDead { reason }));
        }
        self.join_at = None;
        self.join_asked = None;
        self.dead = Some(reason);
    }

    /// Invariants that hold after every step, whatever the input. Cheap enough to keep in
    /// release builds for the properties that guard data; the rest in debug builds.
    /// A tick may leave a deadline due at once (a new master's first heartbeat), but the next
    /// tick must move it or change the role: a deadline left in the past tick after tick, in
    /// the same role, has the driver tick again at once, forever, a site spinning without
    /// progress. (A client that stands at once on losing its master, and as the only member
    /// wins at the next tick, leaves its first heartbeat due at that same millisecond: that is
    /// progress; so is a master that lost its mastership between two ticks and won a new
    /// generation at the second, its first heartbeat due at the same millisecond again.)
    fn check_ticks_progress(&mut self) {
        let due = self
            .next_deadline()
            .filter(|&at| at <= self.now)
            .map(|at| (at, self.role(), self.gen()));
        assert!(
            due.is_none() || due != self.overdue,
            "{}: two ticks in a row left the deadline at {:?} unmoved (now {:?}, as {:?})",
            self.cfg.addr,
            due,
            self.now,
            self.role()
        );
        self.overdue = due;
    }

    fn check_invariants(&self) {
        if self.dead.is_some() {
            return;
        }
        assert_eq!(
            self.db.applied().lsn,
            self.storage.last_lsn(),
            "{}: database and log ends differ",
            self.cfg.addr
        );
        assert!(
            self.db.applied().gen <= self.meta.gen,
            "{}: log holds generation {} beyond the known generation {}",
            self.cfg.addr,
            self.db.applied().gen,
            self.meta.gen
        );
        debug_assert!(
            self.meta.egen >= self.meta.gen,
            "election generation below generation"
        );
        match &self.role {
            Role::Master(_) => debug_assert_eq!(
                self.db.applied().gen,
                self.meta.gen,
                "a master writes its own generation"
            ),
            // Once this site voted or stood in a generation, the master of an earlier one may
            // commit records that the winner lacks: an ack to it, or a record taken from it,
            // could count towards a commit the group then loses.
            Role::Client(c) if c.master.is_some() => assert!(
                c.master_gen >= self.term(),
                "{}: follows a master of generation {} below its term {}",
                self.cfg.addr,
                c.master_gen,
                self.term()
            ),
            _ => {}
        }
    }
}

// On the in-memory network of `testkit`.
#[cfg(all(test, feature = "testkit"))]
mod tests;

// On the in-memory network of `testkit`.
#[cfg(all(test, feature = "testkit"))]
mod membership_tests;
