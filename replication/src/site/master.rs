//! The master: commits transactions, ships the log, counts acks against the policy, answers
//! clients that sync or catch up, sends heartbeats, hands over in a planned switchover, and
//! archives its log.
//!
//! A commit is durable on the master (synced) before any client hears of it, and is reported
//! `Committed` only once its ack policy is met; after `ack_ms` without that, `PermFailed`.

use super::acks::{AckCount, AckPolicy, Tally};
use super::{Event, Peer, Reply, RequestError, RequestId, Role, Site};
use crate::log::{LogRecord, Member, MemberState, RecordBody, Snapshot, Txn};
use crate::storage::{Storage, StorageError};
use crate::types::{Gen, Lsn, SiteAddr, Time};
use crate::wire::{JoinResult, Message};
use std::collections::BTreeMap;
use std::sync::Arc;

/// State of a site while it is master.
#[derive(Debug)]
pub(super) struct Master {
    /// Commits waiting for acks, by LSN.
    pub pending: BTreeMap<Lsn, Pending>,
    /// The highest LSN each client acknowledged in this generation.
    pub acked: BTreeMap<SiteAddr, Lsn>,
    /// When the next heartbeat is due.
    pub next_heartbeat: Time,
    /// A switchover in progress.
    pub step_down: Option<StepDown>,
    /// The latest lease each client granted, as the stamp (this master's clock) of the request
    /// it answered.
    pub lease_grants: BTreeMap<SiteAddr, u64>,
    /// A majority of the group must hold the log through here before another membership change
    /// may start: the record of the last change of who votes (or this generation's first
    /// record, which a majority holding settles whatever an earlier master left unsettled).
    /// One unsettled change at a time keeps every two majorities overlapping; two stacked (a
    /// join not yet acknowledged, then a removal) let a site count votes by a group that
    /// shares no majority with the group another site counts by, and both win a generation.
    pub change_floor: Lsn,
}

/// A commit waiting for acks.
#[derive(Debug)]
pub(super) struct Pending {
    pub waiter: Waiter,
    pub deadline: Time,
}

/// Who waits for a commit, and so what happens once its acks are in (or are not).
#[derive(Debug, Clone)]
pub(super) enum Waiter {
    /// A local `Commit` request.
    Request(RequestId),
    /// A join: `site` was recorded as `Adding`; `reply_to` gets the answer (the helper, or the
    /// site itself).
    Join {
        site: SiteAddr,
        priority: u32,
        reply_to: SiteAddr,
    },
    /// A removal: `site` was recorded as `Removing`.
    Remove { site: SiteAddr, asked_by: Asker },
    /// Nobody, but the record changes the membership (the second step of a join or removal,
    /// an undo, the database's creation): no other change may start until it is acknowledged or
    /// times out, so that two changes never overlap (one site at a time keeps every old and new
    /// majority overlapping).
    Change,
}

/// Who asked for a removal.
#[derive(Debug, Clone)]
pub(super) enum Asker {
    /// A local request on the master.
    Local(RequestId),
    /// A client that forwarded its request.
    Remote(SiteAddr),
}

/// A planned switchover in progress.
#[derive(Debug)]
pub(super) struct StepDown {
    pub to: SiteAddr,
    pub id: RequestId,
    pub deadline: Time,
}

impl Master {
    pub fn new(now: Time) -> Master {
        Master {
            pending: BTreeMap::new(),
            acked: BTreeMap::new(),
            next_heartbeat: now,
            step_down: None,
            lease_grants: BTreeMap::new(),
            change_floor: 0,
        }
    }

    pub fn deadline(&self) -> Time {
        let pending = self.pending.values().map(|p| p.deadline);
        let step_down = self.step_down.iter().map(|s| s.deadline);
        pending
            .chain(step_down)
            .fold(self.next_heartbeat, Time::min)
    }
}

impl<S: Storage> Site<S> {
    pub(super) fn master_mut(&mut self) -> Option<&mut Master> {
        match &mut self.role {
            Role::Master(m) => Some(m),
            _ => None,
        }
    }

    pub(super) fn master_tick(&mut self) -> Result<(), StorageError> {
        let now = self.now;
        let interval = self.cfg.timeouts.heartbeat_interval_ms;
        let m = self.master_mut().expect("ticking as master");
        if now >= m.next_heartbeat {
            m.next_heartbeat = now.plus_ms(interval);
            let beat = self.heartbeat();
            self.broadcast(beat);
            self.request_leases();
        }
        self.resolve_pending()?;
        self.create_membership_if_ready()
    }

    /// Commits a transaction: append, ship, sync (deferred to the driver, see
    /// [`Site::sync_deferred_appends`]), then wait for the policy's acks.
    pub(super) fn commit(&mut self, id: RequestId, txn: Txn) -> Result<(), StorageError> {
        self.commit_body(RecordBody::Txn(txn), Waiter::Request(id))
    }

    /// Commits transactions asked together: one append, one sync, one message per client for
    /// all of them (group commit); each waits for its own acks.
    pub(super) fn commit_batch(
        &mut self,
        batch: Vec<(RequestId, crate::log::Txn)>,
    ) -> Result<(), StorageError> {
        if let Some(error) = self.commit_refusal() {
            for (id, _) in batch {
                self.reply(id, Err(error.clone()));
            }
            return Ok(());
        }
        let (gen, first) = (self.meta.gen, self.last().lsn + 1);
        let mut records = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for (lsn, (id, txn)) in (first..).zip(batch) {
            records.push(LogRecord::new(lsn, gen, RecordBody::Txn(txn)));
            waiters.push((lsn, Waiter::Request(id)));
        }
        self.append(&records)?;
        self.stats.commits += records.len() as u64;
        let records: Arc<[LogRecord]> = records.into();
        for to in self.recipients() {
            let records = Arc::clone(&records);
            self.send(&to, Message::Log { gen, records });
        }
        self.sync_deferred = true;
        let deadline = self.now.plus_ms(self.cfg.timeouts.ack_ms);
        let m = self.master_mut().expect("committing as master");
        for (lsn, waiter) in waiters {
            m.pending.insert(lsn, Pending { waiter, deadline });
        }
        self.resolve_pending()
    }

    /// Why this site cannot commit now, if it cannot.
    fn commit_refusal(&self) -> Option<RequestError> {
        match &self.role {
            Role::Master(m) => m
                .step_down
                .as_ref()
                .map(|s| RequestError::SwitchoverInProgress { to: s.to.clone() }),
            _ => Some(RequestError::NotMaster {
                master: self.master().cloned(),
            }),
        }
    }

    /// Commits any record for `waiter` (or answers it at once if this site cannot commit).
    pub(super) fn commit_body(
        &mut self,
        body: RecordBody,
        waiter: Waiter,
    ) -> Result<(), StorageError> {
        if let Some(error) = self.commit_refusal() {
            self.refuse_waiter(waiter, error);
            return Ok(());
        }
        let record = LogRecord::new(self.last().lsn + 1, self.meta.gen, body);
        let lsn = record.lsn;
        self.append(std::slice::from_ref(&record))?;
        self.stats.commits += 1;
        if record.changes_voters() {
            self.master_mut()
                .expect("committing as master")
                .change_floor = lsn;
        }
        let gen = self.meta.gen;
        let mut recipients = self.recipients();
        if let RecordBody::Membership { site, member: None } = &record.body {
            // The site being removed hears of it, so it can tell its application.
            if *site != self.cfg.addr && !recipients.contains(site) {
                recipients.push(site.clone());
            }
        }
        let changes_members = matches!(record.body, RecordBody::Membership { .. });
        if changes_members {
            // A change of who counts is durable here before anyone hears of it. Shipped first,
            // a crash could leave a client holding a change its master lost: a site holding its
            // own removal never stands, and refuses a candidate whose log is behind its own, so
            // a pair could stay without a master for good. (Changes are rare: the sync costs
            // nothing that matters.)
            self.sync_log()?;
        }
        let records: Arc<[LogRecord]> = Arc::from([record]);
        for to in recipients {
            let records = Arc::clone(&records);
            self.send(&to, Message::Log { gen, records });
        }
        // Otherwise shipped before it is durable here, so the syncs overlap; answered only once
        // both are.
        self.sync_deferred |= !changes_members;
        let deadline = self.now.plus_ms(self.cfg.timeouts.ack_ms);
        let m = self.master_mut().expect("committing as master");
        m.pending.insert(lsn, Pending { waiter, deadline });
        self.resolve_pending()
    }

    /// Mastership is lost with commits, a switchover or membership changes in flight: answer
    /// every waiter. A commit's fate is unknown (it may survive on the next master or be rolled
    /// back); a join or removal is reported unavailable, to be retried with the next master.
    pub(super) fn abandon(&mut self, master: Master) {
        for (lsn, pending) in master.pending {
            let error = RequestError::MasterLost { lsn };
            match pending.waiter {
                Waiter::Change => {}
                waiter => self.refuse_waiter(waiter, error),
            }
        }
        if let Some(sd) = master.step_down {
            let reason = "mastership was lost before the switchover completed".to_string();
            self.reply(sd.id, Err(RequestError::StepDownFailed { reason }));
        }
    }

    /// Answers a waiter whose commit could not even start.
    fn refuse_waiter(&mut self, waiter: Waiter, error: RequestError) {
        match waiter {
            Waiter::Request(id) => self.reply(id, Err(error)),
            Waiter::Join { site, reply_to, .. } => {
                let reason = error.to_string();
                self.send(
                    &reply_to,
                    Message::JoinReply {
                        site,
                        result: JoinResult::Unavail { reason },
                    },
                );
            }
            Waiter::Remove { site, asked_by } => self.answer_remove(asked_by, site, Err(error)),
            Waiter::Change => {}
        }
    }

    /// How the group stands for the ack policy, read once for every commit it then judges.
    /// How the group stands in acks. `leaving`: count members whose removal has begun, as the
    /// commits other than membership changes do until the removal is settled: a removal that
    /// never settles (a master deposed while it was cut off or paused) must not have let those
    /// commits count without the leaving site's copy.
    fn ack_standing(&self, leaving: bool) -> AckStanding {
        let Role::Master(m) = &self.role else {
            return AckStanding::default();
        };
        // The group as `group()` counts it, read in place: this runs on every ack.
        let mut standing = AckStanding {
            group_size: 0,
            others: Vec::with_capacity(self.peers.len()),
        };
        let mut count = |addr: &SiteAddr, priority: u32, peer: Option<&Peer>, acked| {
            standing.group_size += 1;
            if *addr != self.cfg.addr {
                // `is_electable` and `is_connected`, from the peer in hand.
                standing.others.push(OtherSite {
                    acked,
                    electable: peer.and_then(|p| p.priority).unwrap_or(priority) > 0,
                    connected: peer.is_some_and(|p| p.connected),
                });
            }
        };
        if self.has_membership() {
            let counted = |m: &Member| {
                m.state == MemberState::Present || (leaving && m.state == MemberState::Removing)
            };
            // Members, peers and acks are all kept in address order: read side by side, one
            // walk of each map instead of a search of two of them per member.
            let (mut peers, mut acked) = (InOrder::new(&self.peers), InOrder::new(&m.acked));
            for (addr, member) in self.db.members().iter().filter(|(_, m)| counted(m)) {
                let peer = peers.get(addr);
                count(addr, member.priority, peer, acked.get(addr).copied());
            }
        } else {
            for addr in &self.cfg.sites {
                let (peer, acked) = (self.peers.get(addr), m.acked.get(addr).copied());
                count(addr, self.member_priority(addr), peer, acked);
            }
        }
        debug_assert!(leaving || standing.group_size == self.group_size());
        standing
    }

    /// The standings of membership changes and, if they differ (a removal has begun), of the
    /// other commits. This runs on every ack: the common case builds one.
    fn ack_standings(&self) -> (AckStanding, Option<AckStanding>) {
        let removing = self
            .db
            .members()
            .values()
            .any(|m| m.state == MemberState::Removing);
        let commits = removing.then(|| self.ack_standing(true));
        (self.ack_standing(false), commits)
    }

    /// Answers every pending commit whose policy is met or whose time is up, then hands over
    /// if a switchover waited only for them. Whatever can answer a commit (an ack, our own
    /// sync, a peer gone or changing its priority, a tick) calls this, so a switchover never
    /// waits for the next tick once it is ready.
    pub(super) fn resolve_pending(&mut self) -> Result<(), StorageError> {
        self.answer_pending()?;
        self.progress_step_down();
        Ok(())
    }

    fn answer_pending(&mut self) -> Result<(), StorageError> {
        let (now, synced_through) = (self.now, self.synced_through);
        let Role::Master(m) = &self.role else {
            return Ok(());
        };
        if m.pending.is_empty() {
            return Ok(());
        }
        let mut next = m.pending.keys().next().copied();
        // Membership changes are judged by the group they make; other commits also by the
        // members whose removal has begun (see `ack_standing`).
        let (mut changes, mut commits) = self.ack_standings();
        let mut votes_needed = self.votes_needed();
        let policy = self.cfg.ack_policy;
        while let Some(lsn) = next {
            // A membership change finished earlier in this loop may have ended our mastership.
            let Some(m) = self.master_mut() else {
                return Ok(());
            };
            let changes_group = m
                .pending
                .get(&lsn)
                .is_some_and(|p| !matches!(p.waiter, Waiter::Request(_)));
            let mut count = match &commits {
                Some(commits) if !changes_group => commits.count(lsn, &policy),
                _ => changes.count(lsn, &policy),
            };
            if changes_group && count.is_met() {
                // Whatever the policy promises data, a change of who votes is settled only
                // once a majority of the voters holds it, so any later master has it: under a
                // weaker policy a master cut off from the group, or paused past its own
                // deposition, could otherwise drop members on its own.
                count = changes.voters_holding(lsn, votes_needed);
            }
            next = m.pending.range(lsn + 1..).next().map(|(&lsn, _)| lsn);
            let Some(deadline) = m.pending.get(&lsn).map(|p| p.deadline) else {
                continue;
            };
            // Acknowledged, and durable here too: a commit is never answered on its clients'
            // copies alone.
            if count.is_met() && lsn <= synced_through {
                let p = m.pending.remove(&lsn).expect("pending");
                self.commit_done(lsn, p.waiter)?;
                // A finished membership change moves the group the next commits are judged by.
                if changes_group {
                    (changes, commits) = self.ack_standings();
                    votes_needed = self.votes_needed();
                }
            } else if now >= deadline {
                let p = m.pending.remove(&lsn).expect("pending");
                self.stats.perm_failed += 1;
                let (have, needed) = (count.have, count.needed);
                self.emit(Event::PermFailed { lsn, have, needed });
                self.commit_failed(p.waiter, RequestError::PermFailed { lsn, have, needed })?;
            }
        }
        Ok(())
    }

    /// A commit's acks are in: answer its waiter, and finish a membership change.
    fn commit_done(&mut self, lsn: Lsn, waiter: Waiter) -> Result<(), StorageError> {
        match waiter {
            Waiter::Request(id) => self.reply(id, Ok(Reply::Committed { lsn })),
            Waiter::Join {
                site,
                priority,
                reply_to,
            } => {
                let (gen, last) = (self.meta.gen, self.last().lsn);
                let result = JoinResult::Accepted {
                    master: self.cfg.addr.clone(),
                    gen,
                    last,
                };
                self.send(
                    &reply_to,
                    Message::JoinReply {
                        site: site.clone(),
                        result,
                    },
                );
                let member = Member {
                    state: MemberState::Present,
                    priority,
                };
                let body = RecordBody::Membership {
                    site,
                    member: Some(member),
                };
                self.commit_body(body, Waiter::Change)?;
            }
            Waiter::Remove { site, asked_by } => {
                let body = RecordBody::Membership {
                    site: site.clone(),
                    member: None,
                };
                self.commit_body(body, Waiter::Change)?;
                self.answer_remove(asked_by, site, Ok(()));
            }
            Waiter::Change => {}
        }
        Ok(())
    }

    /// A commit missed its acks: report it, and undo the first step of a membership change so
    /// that nothing stays half-recorded.
    fn commit_failed(&mut self, waiter: Waiter, error: RequestError) -> Result<(), StorageError> {
        match waiter {
            Waiter::Request(id) => self.reply(id, Err(error)),
            Waiter::Join { site, reply_to, .. } => {
                let reason = format!("the group did not acknowledge the join: {error}");
                self.send(
                    &reply_to,
                    Message::JoinReply {
                        site: site.clone(),
                        result: JoinResult::Unavail { reason },
                    },
                );
                let body = RecordBody::Membership { site, member: None };
                self.commit_body(body, Waiter::Change)?;
            }
            Waiter::Remove { site, asked_by } => {
                let priority = self.member_priority(&site);
                let member = Member {
                    state: MemberState::Present,
                    priority,
                };
                let body = RecordBody::Membership {
                    site: site.clone(),
                    member: Some(member),
                };
                self.commit_body(body, Waiter::Change)?;
                let reason = format!("the group did not acknowledge the removal: {error}");
                self.answer_remove(asked_by, site, Err(RequestError::Unavail { reason }));
            }
            Waiter::Change => {}
        }
        Ok(())
    }

    pub(super) fn on_ack(
        &mut self,
        from: SiteAddr,
        gen: Gen,
        lsn: Lsn,
    ) -> Result<(), StorageError> {
        if self.saw_later_gen(gen)? {
            return Ok(());
        }
        let last = self.last().lsn;
        let current = gen == self.meta.gen;
        let Some(m) = self.master_mut() else {
            // Late, for a mastership we no longer hold (or never did).
            self.stats.messages_ignored += 1;
            return Ok(());
        };
        if !current || lsn > last {
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        let acked = m.acked.entry(from).or_insert(0);
        *acked = (*acked).max(lsn);
        self.stats.acks_received += 1;
        self.resolve_pending()
    }

    /// A client starts following us: send our log's history so it can find where it diverged.
    pub(super) fn on_sync_request(&mut self, from: SiteAddr, gen: Gen) -> Result<(), StorageError> {
        if !self.is_master() {
            self.point_to_master(&from);
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        if gen > self.meta.gen || self.tell_if_removed(&from) {
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        let info = Message::SyncInfo {
            gen: self.meta.gen,
            history: self.history.clone(),
            first_lsn: self.storage.first_lsn(),
            last: self.last(),
        };
        self.send(&from, info);
        Ok(())
    }

    /// A client asks for records from `from` on; LSN 0 or an archived LSN gets the snapshot.
    pub(super) fn on_log_request(
        &mut self,
        to: SiteAddr,
        gen: Gen,
        from: Lsn,
    ) -> Result<(), StorageError> {
        if !self.is_master()
            || gen != self.meta.gen
            || from > self.last().lsn
            || self.tell_if_removed(&to)
        {
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        let gen = self.meta.gen;
        if from == 0 || from < self.storage.first_lsn() {
            let snapshot = self.storage.read_snapshot()?;
            self.send(&to, Message::InitSnapshot { gen, snapshot });
            return Ok(());
        }
        let records = self.storage.read(from, self.cfg.log_batch_records)?.into();
        self.send(&to, Message::Log { gen, records });
        Ok(())
    }

    /// Starts a planned switchover to `to`.
    pub(super) fn step_down(&mut self, id: RequestId, to: SiteAddr) -> Result<(), StorageError> {
        let problem = if !self.is_master() {
            Some(RequestError::NotMaster {
                master: self.master().cloned(),
            })
        } else if to == self.cfg.addr {
            Some(RequestError::Invalid(format!("{to} is already master")))
        } else if self.others().contains(&to) {
            (!self.is_electable(&to))
                .then(|| RequestError::Invalid(format!("{to} has priority 0 and cannot be master")))
        } else {
            Some(RequestError::Invalid(format!(
                "{to} is not a member of the group"
            )))
        };
        let in_progress = self
            .master_mut()
            .and_then(|m| m.step_down.as_ref())
            .map(|s| s.to.clone());
        if let Some(error) =
            problem.or(in_progress.map(|to| RequestError::SwitchoverInProgress { to }))
        {
            self.reply(id, Err(error));
            return Ok(());
        }
        let deadline = self.now.plus_ms(self.cfg.timeouts.step_down_ms);
        self.master_mut().expect("master").step_down = Some(StepDown { to, id, deadline });
        self.progress_step_down();
        Ok(())
    }

    /// Hands over once the target holds everything and no commit is waiting; gives up at the
    /// deadline and stays master.
    fn progress_step_down(&mut self) {
        let last = self.last().lsn;
        let now = self.now;
        let gen = self.meta.gen;
        let Some(m) = self.master_mut() else {
            return;
        };
        let Some(sd) = &m.step_down else {
            return;
        };
        let target_acked = m.acked.get(&sd.to).copied().unwrap_or(0);
        if m.pending.is_empty() && target_acked >= last {
            let sd = m.step_down.take().expect("step down");
            self.send(&sd.to, Message::TakeOver { gen });
            self.emit(Event::SteppedDown { to: sd.to.clone() });
            self.reply(sd.id, Ok(Reply::SteppedDown { to: sd.to }));
            self.become_client(None);
        } else if now >= sd.deadline {
            let sd = m.step_down.take().expect("step down");
            let reason = format!(
                "{} holds LSN {target_acked} of {last} after the switchover timeout",
                sd.to
            );
            self.reply(sd.id, Err(RequestError::StepDownFailed { reason }));
        }
    }

    /// Folds all but the last `keep_records` records into the snapshot. Any site may archive
    /// its own log; on the master this is what sends lagging clients to internal init.
    pub(super) fn archive(&mut self, id: RequestId, keep_records: u64) -> Result<(), StorageError> {
        let at = self.last().lsn.saturating_sub(keep_records);
        let snapshot_lsn = self.storage.first_lsn() - 1;
        if at > snapshot_lsn {
            let mut snapshot: Snapshot = self.storage.read_snapshot()?;
            let mut next = snapshot_lsn + 1;
            while next <= at {
                let batch = self
                    .storage
                    .read(next, (at - next + 1).min(1024) as usize)?;
                for record in &batch {
                    snapshot.history.note_append(record);
                    snapshot.db.apply(record);
                }
                next += batch.len() as u64;
                if batch.is_empty() {
                    break;
                }
            }
            self.storage.write_snapshot(&snapshot, true)?;
        }
        let first_lsn = self.storage.first_lsn();
        self.reply(id, Ok(Reply::Archived { first_lsn }));
        Ok(())
    }
}

/// How the group stands for the ack policy: its size and, for each other site counted in it, how
/// far it acknowledged, whether it is electable and whether it is connected.
#[derive(Default)]
struct AckStanding {
    group_size: usize,
    others: Vec<OtherSite>,
}

/// Looks up keys of a map in ascending order, walking the map once.
struct InOrder<'a, V> {
    entries: std::iter::Peekable<std::collections::btree_map::Iter<'a, SiteAddr, V>>,
}

impl<'a, V> InOrder<'a, V> {
    fn new(map: &'a BTreeMap<SiteAddr, V>) -> Self {
        InOrder {
            entries: map.iter().peekable(),
        }
    }

    /// The value of `key`, which must come after every key asked before.
    fn get(&mut self, key: &SiteAddr) -> Option<&'a V> {
        while let Some(&(k, v)) = self.entries.peek() {
            match k.cmp(key) {
                std::cmp::Ordering::Less => {
                    self.entries.next();
                }
                std::cmp::Ordering::Equal => {
                    self.entries.next();
                    return Some(v);
                }
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }
}

struct OtherSite {
    acked: Option<Lsn>,
    electable: bool,
    connected: bool,
}

impl AckStanding {
    /// How `policy` stands for the commit at `lsn`.
    fn count(&self, lsn: Lsn, policy: &AckPolicy) -> AckCount {
        let mut t = Tally {
            group_size: self.group_size,
            ..Tally::default()
        };
        for site in &self.others {
            let acked = site.acked.is_some_and(|a| a >= lsn);
            t.others += 1;
            t.acked += usize::from(acked);
            if site.electable {
                t.peers += 1;
                t.peers_acked += usize::from(acked);
            }
            if site.connected {
                t.connected += 1;
                t.connected_acked += usize::from(acked);
            }
        }
        policy.count(&t)
    }

    /// How many other voters (members, of any priority) hold the log through `lsn`, against
    /// the `votes_needed` of an election less the master's own.
    fn voters_holding(&self, lsn: Lsn, votes_needed: usize) -> AckCount {
        let have = self
            .others
            .iter()
            .filter(|s| s.acked.is_some_and(|a| a >= lsn))
            .count();
        AckCount {
            have,
            needed: votes_needed.saturating_sub(1),
        }
    }
}
