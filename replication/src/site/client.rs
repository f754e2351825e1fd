//! Following a master: verify where this log agrees with the master's, roll back a divergent
//! tail, catch up (or initialise from the master's snapshot when its log no longer reaches back),
//! acknowledge what is durable, and notice when the master goes silent.
//!
//! A client never applies a record it has not checked: wrong generation, gap, or bad checksum
//! drop the message (and a gap asks for the missing records).

use super::{Event, Role, Site};
use crate::log::{GenHistory, LogRecord, Snapshot};
use crate::storage::{Storage, StorageError};
use crate::types::{Gen, LogPos, Lsn, SiteAddr, Time};
use crate::wire::Message;
use rand_chacha::rand_core::RngCore;
use std::sync::Arc;

/// State of a site while it is a client.
#[derive(Debug)]
pub(super) struct Client {
    /// The master followed, if one is known.
    pub master: Option<SiteAddr>,
    /// The master's generation.
    pub master_gen: Gen,
    /// When the master was last heard from.
    pub last_heard: Time,
    /// When to give up on the master (or on finding one) and call an election.
    pub election_at: Time,
    /// Where synchronisation with the master stands.
    pub sync: Sync,
    /// The end of the master's log, as last reported.
    pub master_last: LogPos,
    /// Whether `StartupDone` was reported for this master.
    pub startup_done: bool,
    /// Until when each heartbeat from the master is answered with our ack again: an ack
    /// timeout after the latest ack. A message can be lost with its connection up (a sender's
    /// full queue drops it), and a lost last ack would leave the master's commit waiting for a
    /// client that holds it until the commit fails; repeated on the heartbeats for as long as
    /// the master may still wait for it, one more message per heartbeat while acks flow and a
    /// handful once they stop.
    pub repeat_ack_until: Time,
}

/// Synchronisation with the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Sync {
    /// No master to sync with.
    Idle,
    /// Sent a `SyncRequest`; waiting for the master's history, asking again at `retry_at`.
    Verifying { retry_at: Time },
    /// The log agrees with the master's; records are applied as they come. `request` is an
    /// outstanding `LogRequest`: the first LSN asked for, and when to ask again.
    Streaming { request: Option<(Lsn, Time)> },
}

impl Client {
    pub fn new(now: Time) -> Client {
        Client {
            master: None,
            master_gen: 0,
            last_heard: now,
            election_at: now,
            sync: Sync::Idle,
            master_last: LogPos::default(),
            startup_done: false,
            repeat_ack_until: now,
        }
    }

    /// When this client next needs a tick: an election, or a request to repeat.
    pub fn deadline(&self) -> Time {
        let retry = match self.sync {
            Sync::Verifying { retry_at } => Some(retry_at),
            Sync::Streaming {
                request: Some((_, retry_at)),
            } => Some(retry_at),
            _ => None,
        };
        retry.map_or(self.election_at, |at| at.min(self.election_at))
    }

    fn is_following(&self, from: &SiteAddr, gen: Gen) -> bool {
        self.master.as_ref() == Some(from) && self.master_gen == gen
    }

    /// Forgets a master whose generation is below `term` (we voted or stood in a later one).
    pub fn drop_master_below(&mut self, term: Gen) {
        if self.master.is_some() && self.master_gen < term {
            self.master = None;
            self.sync = Sync::Idle;
        }
    }
}

impl<S: Storage> Site<S> {
    pub(super) fn client_tick(&mut self) -> Result<(), StorageError> {
        let now = self.now;
        let Some(client) = self.client_mut() else {
            return Ok(());
        };
        if now >= client.election_at {
            if client.master.is_some() {
                // Silent past the heartbeat timeout: lost. Stand shortly, best placed first.
                self.lose_master();
                return Ok(());
            }
            if !self.counts_in_group() {
                if !self.has_membership() {
                    // Not a member yet: only a join can make us one.
                    if self.cfg.helper.is_some() && self.join_at.is_none() {
                        self.join_at = Some(now);
                    }
                } else if self.join_at.is_none() {
                    // Our own database says we are leaving or gone, and no master talks to us:
                    // ask the group, so a master can tell us (`Removed`) or take us back.
                    let (gen, priority) = (self.meta.gen, self.cfg.priority);
                    for to in self.recipients() {
                        self.send(&to, Message::SyncRequest { gen, priority });
                    }
                }
            } else if self.cfg.priority > 0 {
                return self.start_election(false);
            }
            // A priority-0 site never stands: it keeps waiting for a master to appear.
            let delay = self.election_delay();
            if let Some(client) = self.client_mut() {
                client.election_at = now.plus_ms(delay);
            }
            return Ok(());
        }
        match client.sync.clone() {
            Sync::Verifying { retry_at } if now >= retry_at => self.request_sync(),
            Sync::Streaming {
                request: Some((from, retry_at)),
            } if now >= retry_at => {
                self.request_log(from);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A site that our membership database no longer lists asked us for the log, which only a
    /// master serves. It asks every member it knows when it finds no master: it is leaving (or
    /// gone) by its own database and missed the end of its removal, and the master that
    /// finished it may be one it never heard of. Name ours, in the answer a candidate gets when
    /// we refuse it for following a master (a `Vote` refusal naming it): the site asks that
    /// master, which tells it `Removed` or serves it if its removal was undone.
    pub(super) fn point_to_master(&mut self, asker: &SiteAddr) {
        let Role::Client(c) = &self.role else {
            return;
        };
        let Some(master) = c.master.clone() else {
            return;
        };
        if !self.has_membership() || self.recipients().contains(asker) || *asker == master {
            return;
        }
        let refusal = Message::Vote {
            egen: 0,
            granted: false,
            gen: self.meta.gen,
            last: self.last(),
            priority: self.standing_priority(),
            master: Some(master),
            pre: true,
            term: self.term(),
        };
        self.send(asker, refusal);
    }

    /// The connection to `addr` broke. If it is our master, that is evidence it is gone (as
    /// Berkeley DB takes it): an electable member stands within tens of milliseconds instead of
    /// waiting out the heartbeat timeout, the best placed first (see `quick_stand_ms`). If the
    /// master lives and others still hear it, they refuse the pre-vote and nothing changes; a
    /// master that went silent with its connections open is still caught by the timeout.
    pub(super) fn on_master_connection_lost(&mut self, addr: &SiteAddr) {
        let ours = matches!(&self.role, Role::Client(c) if c.master.as_ref() == Some(addr));
        if ours && self.counts_in_group() {
            self.lose_master();
        }
    }

    /// The master is gone: say so, stop following it, and (an electable member) stand after
    /// `quick_stand_ms`. Meanwhile this site hears no master, so it grants a better-placed
    /// candidate's request rather than refuse it for a master that no longer answers.
    fn lose_master(&mut self) {
        let now = self.now;
        let delay = if self.cfg.priority > 0 && self.counts_in_group() {
            self.quick_stand_ms()
        } else {
            self.election_delay()
        };
        let Some(client) = self.client_mut() else {
            return;
        };
        let Some(master) = client.master.take() else {
            return;
        };
        client.sync = Sync::Idle;
        client.election_at = now.plus_ms(delay);
        // A site still joining follows a master it was never part of: losing it is no failure
        // of its group (as on Berkeley DB, a joiner reports none).
        if self.counts_in_group() {
            self.emit(Event::MasterFailure { master });
        }
    }

    /// How soon to stand once the master is lost: one step for each electable member ranked
    /// before this site (higher priority, or the same and a lower address, as elections break
    /// ties; a static list does not say the others' priorities, so there the address alone
    /// ranks), a penalty for a log short of the master's last known end, and a few milliseconds
    /// of seeded jitter. The others hear the best-placed site's request before their own timers
    /// fire, grant it and listen (see `on_vote_request`) rather than stand against it: one round.
    fn quick_stand_ms(&mut self) -> u64 {
        const RANK_STEP_MS: u64 = 15;
        const BEHIND_MS: u64 = 50;
        const JITTER_MS: u64 = 5;
        let (me, mine) = (&self.cfg.addr, self.cfg.priority);
        let known = self.has_membership();
        let ahead = self
            .others()
            .iter()
            .filter(|a| {
                let p = self.member_priority(a);
                p > 0 && (!known && *a < me || known && (p > mine || p == mine && *a < me))
            })
            .count() as u64;
        let mut ms = ahead * RANK_STEP_MS;
        let last = self.last();
        if matches!(&self.role, Role::Client(c) if last < c.master_last) {
            ms += BEHIND_MS;
        }
        ms + self.rng.next_u64() % JITTER_MS
    }

    /// A heartbeat: the sender is master of `gen`. Follow it if its generation is current.
    pub(super) fn on_heartbeat(
        &mut self,
        from: SiteAddr,
        gen: Gen,
        last: LogPos,
        _first_lsn: Lsn,
    ) -> Result<(), StorageError> {
        if gen < self.term() {
            // A master of a generation older than one we know of, or voted or stood in: it is
            // stale, and must not be followed (an ack to it could count towards a commit that a
            // master we voted for lacks). Tell it, so it steps down.
            let news = match self.role {
                Role::Master(_) => self.heartbeat(),
                _ => Message::StaleGeneration { gen: self.term() },
            };
            self.send(&from, news);
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        if let Role::Master(_) = self.role {
            // Two masters: at the same generation this is a split brain (the election rules make
            // it impossible unless two-site strictness is off); at a later one, we are stale.
            self.emit(Event::DuplicateMaster {
                other: from.clone(),
                gen,
            });
            if gen == self.meta.gen {
                self.become_client(None);
                return Ok(());
            }
        }
        self.adopt_gen(gen)?;
        if !matches!(self.role, Role::Client(_)) {
            self.become_client(None);
        }
        self.follow(from, gen, last)
    }

    /// Records that `from` is master of `gen` and starts (or continues) syncing with it.
    pub(super) fn follow(
        &mut self,
        from: SiteAddr,
        gen: Gen,
        last: LogPos,
    ) -> Result<(), StorageError> {
        let now = self.now;
        let timeout = self.cfg.timeouts.heartbeat_timeout_ms;
        let my_last = self.last();
        let client = self.client_mut().expect("following as client");
        client.last_heard = now;
        client.election_at = now.plus_ms(timeout);
        client.master_last = client.master_last.max(last);
        if client.is_following(&from, gen) {
            let repeat_ack = now < client.repeat_ack_until;
            // Pushed records may have been lost: if the master is ahead and nothing is asked
            // for, ask.
            if client.sync == (Sync::Streaming { request: None }) && last.lsn > my_last.lsn {
                self.request_log(my_last.lsn + 1);
            }
            if repeat_ack {
                self.ack_to_master();
            }
            return Ok(());
        }
        client.master = Some(from.clone());
        client.master_gen = gen;
        client.master_last = last;
        client.startup_done = false;
        self.emit(Event::NewMaster { master: from, gen });
        self.request_sync()
    }

    fn request_sync(&mut self) -> Result<(), StorageError> {
        let retry_at = self.now.plus_ms(self.cfg.timeouts.request_retry_ms);
        let (gen, priority) = (self.meta.gen, self.cfg.priority);
        let client = self.client_mut().expect("syncing as client");
        client.sync = Sync::Verifying { retry_at };
        let master = client.master.clone().expect("sync needs a master");
        self.send(&master, Message::SyncRequest { gen, priority });
        Ok(())
    }

    fn request_log(&mut self, from: Lsn) {
        let retry_at = self.now.plus_ms(self.cfg.timeouts.request_retry_ms);
        let gen = self.meta.gen;
        let Some(client) = self.client_mut() else {
            return;
        };
        let Some(master) = client.master.clone() else {
            return;
        };
        client.sync = Sync::Streaming {
            request: Some((from, retry_at)),
        };
        self.send(&master, Message::LogRequest { gen, from });
    }

    /// Acks our log's end to the master, and has the heartbeats of the next ack timeout repeat
    /// it.
    fn send_ack(&mut self) {
        let until = self.now.plus_ms(self.cfg.timeouts.ack_ms);
        if self.ack_to_master() {
            if let Some(client) = self.client_mut() {
                client.repeat_ack_until = until;
            }
        }
    }

    /// Sends the master an ack of what our log holds durably; false if there is no master to
    /// send it to.
    fn ack_to_master(&mut self) -> bool {
        let Some(master) = self.master().cloned() else {
            return false;
        };
        let msg = Message::Ack {
            gen: self.meta.gen,
            lsn: self.synced_through,
            priority: self.cfg.priority,
        };
        self.send(&master, msg);
        true
    }

    /// The master's history arrived: find where the logs agree, roll back the rest, catch up.
    pub(super) fn on_sync_info(
        &mut self,
        from: SiteAddr,
        gen: Gen,
        history: GenHistory,
        first_lsn: Lsn,
        last: LogPos,
    ) -> Result<(), StorageError> {
        // A history ending below what this master has already shown us since we took it as
        // master (its heartbeats, the records it sent) is an old answer, to an earlier request
        // and delivered late: a master never takes back its log within its generation.
        let expected = match &self.role {
            Role::Client(c) => {
                c.is_following(&from, gen)
                    && matches!(c.sync, Sync::Verifying { .. })
                    && last >= c.master_last
            }
            _ => false,
        };
        if !expected || !history.is_well_formed(last) {
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        let mine = self.last();
        let common = self.history.common_prefix(mine.lsn, &history, last.lsn);
        // So too a history that our log continues with records of the master's own generation,
        // opened by the same `GenStart`: only that master wrote them, whatever we heard since
        // (a late heartbeat can make us take the same master anew and forget the rest), so
        // rolling back by it would drop records we may have acknowledged. (Two masters of one
        // generation, the two sides of a cut lenient pair, open it with different records:
        // there the common prefix ends before the master's end, and we do roll back.)
        if mine.gen == gen && mine.lsn > last.lsn && common == last.lsn {
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        let snapshot_lsn = self.storage.first_lsn() - 1;
        if common < mine.lsn {
            let to = LogPos::new(self.history.gen_at(common, mine.lsn).unwrap_or(0), common);
            self.emit(Event::WouldRollback { to, from: mine });
            if common < snapshot_lsn {
                // The divergence is inside our snapshot: only the master's image can fix that.
                self.client_mut().expect("client").master_last = last;
                self.request_log(0);
                return Ok(());
            }
            self.roll_back_to(common)?;
        }
        if let Some(client) = self.client_mut() {
            client.master_last = last;
            client.sync = Sync::Streaming { request: None };
        }
        self.send_ack();
        let next = self.last().lsn + 1;
        if next <= last.lsn {
            // Records before the master's `first_lsn` were archived: the master answers this
            // request with its snapshot (internal initialisation).
            let _ = first_lsn;
            self.request_log(next);
        }
        self.check_startup_done();
        Ok(())
    }

    fn roll_back_to(&mut self, common: Lsn) -> Result<(), StorageError> {
        let dropped = crate::storage::read_to_end(&mut self.storage, common + 1)?;
        let txns: Vec<Lsn> = dropped
            .iter()
            .filter(|r| r.is_txn())
            .map(|r| r.lsn)
            .collect();
        self.truncate_after(common)?;
        self.stats.txns_rolled_back += txns.len() as u64;
        let to = self.last();
        self.emit(Event::RolledBack { to, txns });
        Ok(())
    }

    /// Records from the master: apply those that continue the log, ask for any gap, ack.
    pub(super) fn on_log(
        &mut self,
        from: SiteAddr,
        gen: Gen,
        records: Arc<[LogRecord]>,
    ) -> Result<(), StorageError> {
        // Streaming, and not waiting for the master's snapshot: a request from LSN 0 means our
        // log diverged inside our own snapshot, so no record of the master's continues it.
        let streaming = match &self.role {
            Role::Client(c) => {
                c.is_following(&from, gen)
                    && matches!(c.sync, Sync::Streaming { request } if request.map(|r| r.0) != Some(0))
            }
            _ => false,
        };
        if !streaming {
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        let start = self.last();
        let mut next = start;
        // What continues our log: one run of the message's records, appended straight from it;
        // records out of order (never from a master, but a peer may send anything) are copied.
        let mut run = 0..0;
        let mut copied: Option<Vec<LogRecord>> = None;
        let mut gap = false;
        for (i, record) in records.iter().enumerate() {
            if record.lsn <= next.lsn {
                continue; // a duplicate of what we have
            }
            if record.lsn != next.lsn + 1 {
                gap = true;
                break;
            }
            // Only intact records of a generation between ours and the master's continue a log.
            if !record.is_intact() || record.gen > gen || record.gen < next.gen {
                self.stats.messages_ignored += 1;
                break;
            }
            next = record.pos();
            match &mut copied {
                Some(copied) => copied.push(record.clone()),
                None if run.is_empty() => run = i..i + 1,
                None if run.end == i => run.end = i + 1,
                None => {
                    copied = Some(
                        records[run.clone()]
                            .iter()
                            .chain([record])
                            .cloned()
                            .collect(),
                    )
                }
            }
        }
        let accepted = copied.as_deref().unwrap_or(&records[run]);
        if !accepted.is_empty() {
            self.append(accepted)?;
            self.sync_log()?;
            self.send_ack();
        }
        let last = self.last();
        let client = self.client_mut().expect("streaming as client");
        client.master_last = client.master_last.max(last);
        let outstanding = match client.sync {
            Sync::Streaming { request } => request,
            _ => None,
        };
        let behind = client.master_last.lsn > last.lsn;
        match outstanding {
            // Our request was answered (at least in part): ask for the rest, if any.
            Some((asked, _)) if last.lsn >= asked => {
                client.sync = Sync::Streaming { request: None };
                if behind {
                    self.request_log(last.lsn + 1);
                }
            }
            Some(_) => {}
            None if gap => self.request_log(last.lsn + 1),
            None => {}
        }
        self.leave_if_removed();
        if self.dead.is_some() {
            return Ok(());
        }
        self.check_startup_done();
        Ok(())
    }

    /// The master's snapshot: replace the database and log with it (internal initialisation).
    pub(super) fn on_init_snapshot(
        &mut self,
        from: SiteAddr,
        gen: Gen,
        snapshot: Snapshot,
    ) -> Result<(), StorageError> {
        let wanted = match &self.role {
            Role::Client(c) => {
                c.is_following(&from, gen)
                    && matches!(c.sync, Sync::Streaming { request: Some((asked, _)) }
                        if asked == 0 || asked <= snapshot.pos().lsn)
            }
            _ => false,
        };
        let at = snapshot.pos();
        if !wanted || at.gen > gen || !snapshot.history.is_well_formed(at) {
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        self.storage.write_snapshot(&snapshot, false)?;
        self.synced_through = at.lsn;
        self.db = snapshot.db;
        self.history = snapshot.history;
        // What the snapshot's records showed settled is not known here: guard nothing until
        // the log shows it again (a priority-0 site's guard only ever helps safety).
        self.settled = super::SettledChanges::default();
        self.lower_voters_floor(self.meta.voters_floor.min(at))?;
        self.stats.inits += 1;
        self.emit(Event::InitDone { at });
        self.send_ack();
        let behind = self
            .client_mut()
            .is_some_and(|c| c.master_last.lsn > at.lsn);
        if behind {
            self.request_log(at.lsn + 1);
        } else if let Some(client) = self.client_mut() {
            client.sync = Sync::Streaming { request: None };
        }
        self.check_startup_done();
        Ok(())
    }

    fn check_startup_done(&mut self) {
        let last = self.last();
        let Some(client) = self.client_mut() else {
            return;
        };
        if !client.startup_done
            && matches!(client.sync, Sync::Streaming { .. })
            && last.lsn >= client.master_last.lsn
        {
            client.startup_done = true;
            self.emit(Event::StartupDone { at: last });
        }
    }

    /// The master asks us to take over (planned switchover): stand at once.
    pub(super) fn on_take_over(&mut self, from: SiteAddr, gen: Gen) -> Result<(), StorageError> {
        let from_our_master = matches!(&self.role, Role::Client(c) if c.is_following(&from, gen));
        if !from_our_master || gen != self.meta.gen || self.cfg.priority == 0 {
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        self.start_election(true)
    }

    /// A connection came up: a master greets it at once; a client re-syncs with its master,
    /// since whatever was in flight on the old connection is lost.
    pub(super) fn on_peer_connected(&mut self, addr: &SiteAddr) {
        match &self.role {
            Role::Master(_) => {
                let beat = self.heartbeat();
                self.send(addr, beat);
            }
            Role::Client(c) if c.master.as_ref() == Some(addr) => {
                let _ = self.request_sync();
            }
            _ => {}
        }
    }
}

impl GenHistory {
    /// True if this history can describe a log ending at `last`: generations and start LSNs
    /// strictly increase, none starts past the end, and the last generation is the end's.
    pub fn is_well_formed(&self, last: LogPos) -> bool {
        let starts = self.starts();
        let increasing = starts
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let within = starts
            .iter()
            .all(|&(_, first, _)| first >= 1 && first <= last.lsn);
        let ends_right = match starts.last() {
            Some(&(gen, _, _)) => gen == last.gen,
            None => last == LogPos::default(),
        };
        increasing && within && ends_right
    }
}
