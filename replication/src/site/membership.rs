//! The group membership database: who is in the group, replicated through the log like data.
//!
//! The group's total site count (for elections and acks) is the number of `Present` members,
//! whether they are up or down. A group starts in one of three ways: a `group_creator` that has
//! never known a generation creates it (size 1, itself master; only ever once: a creator whose
//! log has lost the database rejoins through a helper); a new site asks a helper, which forwards
//! to the master, which records it as `Adding`, waits for the acks its policy needs, answers,
//! then records it `Present`; or a legacy group (static site list, protocol 1) has its master write
//! the database from that list once every site speaks version 2. Removal records `Removing`,
//! waits for acks, then deletes the entry, which tells the removed site. A change that misses
//! its acks is undone, so nothing stays half-recorded.
//!
//! Never: count a site that is not `Present`, or write the database while a version-1 site may
//! still read the log (it could not make sense of it).

use super::master::{Asker, Waiter};
use super::{ConfigError, Event, OpenError, Reply, RequestError, RequestId, Role, Site};
use crate::log::{LogRecord, Member, MemberState, RecordBody};
use crate::storage::{Storage, StorageError};
use crate::types::{Gen, LogPos, Lsn, SiteAddr};
use crate::wire::{JoinResult, Message, RemoveRefusal};

/// What a site's own log shows the group settled, for the votes of a priority-0 site.
///
/// A master settles a change of who votes once a majority of the voters holds it, priority-0
/// voters included, and only then starts the next change (`last_change_settled`; the first
/// record of its generation counts too, as a Raft leader first commits an entry of its own
/// term). A settled change must be in every later master's log, so every voter whose ack
/// counted must refuse a candidate without it. An electable site refuses any less advanced log;
/// a priority-0 site cannot (the most advanced log may be its own, and it cannot stand), so it
/// guards what its log shows settled: the change floor as of the last record that started a
/// change (`Adding` or `Removing`), which the master wrote only once that floor had settled.
/// Guarding a change not known to be settled could leave the group with no master for good: a
/// master that crashed before syncing a change may have reached only a priority-0 site.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(super) struct SettledChanges {
    /// The last record that moves a master's change floor: a change of who votes, or the
    /// first record of a generation.
    floor: LogPos,
    /// The floor as of the last record that started a change.
    pub(super) settled: LogPos,
    /// The last record that changed who votes.
    pub(super) voters: LogPos,
}

impl SettledChanges {
    /// Notes the next record of the log.
    pub(super) fn note(&mut self, record: &LogRecord) {
        let starts_change = matches!(
            &record.body,
            RecordBody::Membership { member: Some(m), .. }
                if matches!(m.state, MemberState::Adding | MemberState::Removing)
        );
        if starts_change {
            self.settled = self.settled.max(self.floor);
        }
        if record.changes_voters() {
            self.voters = record.pos();
        }
        if record.changes_voters() || matches!(record.body, RecordBody::GenStart { .. }) {
            self.floor = record.pos();
        }
    }
}

impl<S: Storage> Site<S> {
    /// True once the group is read from a membership database (protocol 2 only).
    pub(super) fn has_membership(&self) -> bool {
        self.cfg.protocol_version >= 2 && !self.db.members().is_empty()
    }

    /// The sites that count towards the group's total: `Present` members, or the static list.
    pub(crate) fn group(&self) -> Vec<SiteAddr> {
        if self.has_membership() {
            let members = self.db.members().iter();
            members
                .filter(|(_, m)| m.state == MemberState::Present)
                .map(|(addr, _)| addr.clone())
                .collect()
        } else {
            self.cfg.sites.clone()
        }
    }

    /// The group's total site count, down sites included. (Counted in place: a master asks on
    /// every ack, through `votes_needed`.)
    pub(super) fn group_size(&self) -> usize {
        if self.has_membership() {
            let members = self.db.members().values();
            members.filter(|m| m.state == MemberState::Present).count()
        } else {
            self.cfg.sites.len()
        }
    }

    /// Every other site counted in the group.
    pub(super) fn others(&self) -> Vec<SiteAddr> {
        let mut group = self.group();
        group.retain(|s| *s != self.cfg.addr);
        group
    }

    /// Every other site that follows the log: members in any state, or the static list.
    pub(super) fn recipients(&self) -> Vec<SiteAddr> {
        let me = &self.cfg.addr;
        if self.has_membership() {
            let all = self.db.members().keys();
            all.filter(|s| *s != me).cloned().collect()
        } else {
            self.cfg
                .sites
                .iter()
                .filter(|s| *s != me)
                .cloned()
                .collect()
        }
    }

    /// The sites a driver should keep connections to: every other site that follows the log.
    pub fn peers(&self) -> Vec<SiteAddr> {
        self.recipients()
    }

    /// True if this site counts in the group, and so may vote and stand.
    pub(crate) fn counts_in_group(&self) -> bool {
        if self.has_membership() {
            let me = self.db.members().get(&self.cfg.addr);
            me.is_some_and(|m| m.state == MemberState::Present)
        } else {
            self.cfg.sites.contains(&self.cfg.addr)
        }
    }

    /// The priority this site stands with: its configured one, or 0 while its own log says it
    /// is not a member (still joining, or its removal begun) or lost changes of who votes
    /// (`lost_voter_changes`): such a site never stands, and a candidate must not step aside
    /// for it.
    pub(super) fn standing_priority(&self) -> u32 {
        if self.counts_in_group() && !self.lost_voter_changes() {
            self.cfg.priority
        } else {
            0
        }
    }

    /// The priority a site declared when it joined; unknown sites are assumed electable.
    pub(super) fn member_priority(&self, addr: &SiteAddr) -> u32 {
        self.db.members().get(addr).map_or(1, |m| m.priority)
    }

    /// Decides how this start begins. A membership database that lists this site as a member
    /// (or a static list) wins over the creator flag and the helper, which matter only the very
    /// first time and when the site is no longer a member.
    pub(super) fn start_membership(&mut self) -> Result<(), OpenError> {
        if !self.cfg.sites.is_empty() {
            return Ok(());
        }
        if self.has_membership() {
            let own = self.db.members().get(&self.cfg.addr).map(|m| m.state);
            if own == Some(MemberState::Present) {
                return Ok(());
            }
            // Its own database says it is not a member: it was removed (and restarted since,
            // which is how an operator takes it back), or it stopped before its join was
            // complete. As Berkeley DB does, it joins again, through its helper or the members
            // it knows of; its stale view of the group could not find the master otherwise (the
            // sites it lists may all have left, or be clients of a master it never heard of).
            if !self.join_targets().is_empty() {
                self.join_at = Some(self.now);
                return Ok(());
            }
            return Err(OpenError::NeedsHelper(format!(
                "{} is not a member of the group its membership database describes (it was \
                 removed, or stopped before its join was complete) and knows no other member: \
                 give it a helper that is a member to join the group again",
                self.cfg.addr
            )));
        }
        if self.cfg.group_creator {
            if self.cfg.priority == 0 {
                // The creator is the group's first master; a priority-0 site never is one.
                return Err(ConfigError(format!(
                    "{} is the group_creator but has priority 0: the first master must be able \
                     to be master (give it a priority above 0, or create the group elsewhere)",
                    self.cfg.addr
                ))
                .into());
            }
            if !self.has_known_a_generation() {
                self.create_group()?;
                return Ok(());
            }
            // It created the group once, and its log has lost the database since (a damaged
            // record is dropped with everything after it). Creating the group again could elect
            // it in a generation the rest of the group has already given another master: it may
            // only come back as a member, through a helper.
            if self.cfg.helper.is_none() {
                return Err(OpenError::NeedsHelper(format!(
                    "{} is the group_creator, but its log holds no membership database although \
                     it has known generation {}: the database was lost (a damaged log is cut at \
                     the damage). Creating the group again could make two masters; give it a \
                     helper that is a member to rejoin the group, or start it on an empty \
                     directory to create a new group",
                    self.cfg.addr,
                    self.meta.gen.max(self.meta.egen)
                )));
            }
        }
        if self.cfg.helper.is_some() {
            self.join_at = Some(self.now);
            return Ok(());
        }
        Err(ConfigError(format!(
            "{} has no membership database: start the first site of a new group with \
             group_creator, or give this site a helper that is a member",
            self.cfg.addr
        ))
        .into())
    }

    /// Whether this site has ever stood, voted or followed in a generation (its metadata says
    /// so, whatever happened to its log).
    fn has_known_a_generation(&self) -> bool {
        self.meta.gen > 0 || self.meta.egen > 0
    }

    /// Primordial start-up: this site becomes master of a group of one, in generation 1.
    ///
    /// It is all durable before the step ends (the membership record is synced here rather than
    /// by the driver), so a crash finds either nothing (create again) or a created group. Only a
    /// power cut inside this call can leave the metadata of generation 1 without the record;
    /// the next start then refuses with an error rather than guess.
    fn create_group(&mut self) -> Result<(), StorageError> {
        debug_assert!(!self.has_known_a_generation(), "a group is created once");
        let egen = 1;
        self.meta.egen = egen;
        self.meta.voted_for = Some(self.cfg.addr.clone());
        self.save_meta()?;
        self.stats.elections += 1;
        let me = self.cfg.addr.clone();
        self.emit(Event::Voted {
            candidate: me.clone(),
            egen,
        });
        self.become_master(egen, vec![me], 1)?;
        let member = Member {
            state: MemberState::Present,
            priority: self.cfg.priority,
        };
        let body = RecordBody::Membership {
            site: self.cfg.addr.clone(),
            member: Some(member),
        };
        self.commit_body(body, Waiter::Change)?;
        self.sync_log()?;
        self.resolve_pending()
    }

    /// Timers of joining and of forwarded removals.
    pub(super) fn membership_tick(&mut self) -> Result<(), StorageError> {
        let now = self.now;
        let expired: Vec<RequestId> = self
            .removes
            .iter()
            .filter(|(_, (_, at))| now >= *at)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.removes.remove(&id);
            let reason = "the master did not answer the removal in time".to_string();
            self.reply(id, Err(RequestError::Unavail { reason }));
        }
        if self.join_at.is_some_and(|at| now >= at) {
            let targets = self.join_targets();
            if let Some(asked) = self.join_asked.take() {
                // A retry: the last request failed. The helper first, then the others in turn:
                // a helper gone for good (removed, say) must not keep a site out of the group.
                if !self.join_answered {
                    // A silence: report it, and ask the next one.
                    let reason = if self.cfg.helper.as_ref() == Some(&asked) {
                        format!("no answer from the helper {asked}")
                    } else {
                        format!("no answer from {asked}, a member its membership database lists")
                    };
                    self.emit(Event::JoinFailure { reason });
                    self.join_turn += 1;
                } else {
                    // An `Unavail` answer (reported when it came): the master is busy, or the
                    // site asked knows no master. Ask the next one we are connected to, if any
                    // (else the same again): two removed sites restarted as each other's
                    // helpers would otherwise ask each other for ever while the master sits
                    // one turn further, but a master that is only busy is not traded for a
                    // site that is down.
                    let n = targets.len();
                    let connected =
                        |k: &usize| self.is_connected(&targets[(self.join_turn + k) % n]);
                    if let Some(k) = (1..n).find(connected) {
                        self.join_turn += k;
                    }
                }
            }
            let Some(to) = targets.get(self.join_turn % targets.len().max(1)).cloned() else {
                self.join_at = None; // nobody to ask (see `start_membership`)
                return Ok(());
            };
            // Never ask again before the master could have answered (it waits up to the ack
            // timeout for the group to acknowledge the join).
            let t = &self.cfg.timeouts;
            let wait = t.join_retry_ms.max(t.ack_ms + t.request_retry_ms);
            self.join_at = Some(now.plus_ms(wait));
            self.join_answered = false;
            self.join_asked = Some(to.clone());
            let site = self.cfg.addr.clone();
            let priority = self.cfg.priority;
            self.send(&to, Message::JoinRequest { site, priority });
        }
        Ok(())
    }

    /// Whom a joining site asks, in turn: its helper, then every other member its own database
    /// lists (a site joining again after its removal has one; clients forward to their master).
    fn join_targets(&self) -> Vec<SiteAddr> {
        let mut targets: Vec<SiteAddr> = self.cfg.helper.iter().cloned().collect();
        for (addr, member) in self.db.members() {
            let other = *addr != self.cfg.addr && member.state == MemberState::Present;
            if other && !targets.contains(addr) {
                targets.push(addr.clone());
            }
        }
        targets
    }

    /// A site asks to join, directly or through us as its helper.
    pub(super) fn on_join_request(
        &mut self,
        from: SiteAddr,
        site: SiteAddr,
        priority: u32,
    ) -> Result<(), StorageError> {
        if !self.is_master() {
            match self.master().cloned() {
                // A helper that is not master forwards; the answer comes back to us to relay.
                Some(master) if master != from => {
                    self.send(&master, Message::JoinRequest { site, priority });
                }
                _ => {
                    let reason = format!("{} knows no master", self.cfg.addr);
                    self.send(&from, join_unavail(site, reason));
                }
            }
            return Ok(());
        }
        if !self.has_membership() {
            let reason = "the group has no membership database yet (legacy static site list): \
                          list the new site in every site's configuration"
                .to_string();
            self.send(&from, join_unavail(site, reason));
            return Ok(());
        }
        if self.join_in_flight(&site) {
            return Ok(()); // the answer will come when the acks are in
        }
        if self.membership_changes_in_flight() > 0 {
            let reason = "another membership change is in progress".to_string();
            self.send(&from, join_unavail(site, reason));
            return Ok(());
        }
        let admitted = self.db.members().get(&site).map(|m| m.state) == Some(MemberState::Present);
        if !admitted && !self.last_change_settled() {
            self.send(&from, join_unavail(site, UNSETTLED.to_string()));
            return Ok(());
        }
        match self.db.members().get(&site).map(|m| m.state) {
            Some(MemberState::Present) => {
                let result = JoinResult::Accepted {
                    master: self.cfg.addr.clone(),
                    gen: self.meta.gen,
                    last: self.last().lsn,
                };
                self.send(&from, Message::JoinReply { site, result });
                Ok(())
            }
            Some(MemberState::Removing) => {
                let reason = format!("{site} is being removed from the group");
                self.send(&from, join_unavail(site, reason));
                Ok(())
            }
            // New, or `Adding` left over from a master that failed mid-join: (re)record it.
            Some(MemberState::Adding) | None => {
                let member = Member {
                    state: MemberState::Adding,
                    priority,
                };
                let body = RecordBody::Membership {
                    site: site.clone(),
                    member: Some(member),
                };
                let waiter = Waiter::Join {
                    site,
                    priority,
                    reply_to: from,
                };
                self.commit_body(body, waiter)
            }
        }
    }

    /// Whether a join of `site` is waiting for its acks.
    fn join_in_flight(&self, site: &SiteAddr) -> bool {
        let Role::Master(m) = &self.role else {
            return false;
        };
        let joining = |w: &Waiter| matches!(w, Waiter::Join { site: s, .. } if s == site);
        m.pending.values().any(|p| joining(&p.waiter))
    }

    /// The answer to a join: ours, or one to relay to the site we helped.
    pub(super) fn on_join_reply(
        &mut self,
        from: SiteAddr,
        site: SiteAddr,
        result: JoinResult,
    ) -> Result<(), StorageError> {
        if site != self.cfg.addr {
            if from != site {
                self.send(
                    &site,
                    Message::JoinReply {
                        site: site.clone(),
                        result,
                    },
                );
            }
            return Ok(());
        }
        let names_us =
            matches!(&result, JoinResult::Accepted { master, .. } if *master == self.cfg.addr);
        if self.join_at.is_none() || names_us {
            // Not joining, or an answer naming us master (no master sends that): following it
            // would have us sync with ourselves.
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        match result {
            JoinResult::Accepted { master, gen, .. } if gen < self.term() => {
                // A master of a generation below one we voted or stood in: following it could
                // count our acks towards commits a later master lacks. Tell it (it steps down,
                // and the group elects above our term) and keep asking to join.
                self.stats.messages_ignored += 1;
                let news = Message::StaleGeneration { gen: self.term() };
                self.send(&master, news);
                Ok(())
            }
            JoinResult::Accepted { master, gen, last } => {
                self.join_at = None;
                self.join_asked = None;
                // Notices of our removal sent before this answer are stale (see `on_removed`).
                let admitted = LogPos {
                    gen,
                    lsn: last.saturating_add(1),
                };
                self.note_admitted(admitted);
                self.adopt_gen(gen)?;
                if !matches!(self.role, Role::Client(_)) {
                    self.become_client(None);
                }
                // The master sends the log (or its snapshot), membership database included.
                self.follow(master, gen, LogPos::default())
            }
            JoinResult::Unavail { reason } => {
                self.join_answered = true;
                self.emit(Event::JoinFailure { reason });
                Ok(())
            }
        }
    }

    /// A join is over once our own entry reads `Present`, even if the helper's answer was lost
    /// on the way (the helper may have died after forwarding).
    pub(super) fn finish_join_if_member(&mut self) {
        let present = |m: &Member| m.state == MemberState::Present;
        if self.join_at.is_some() && self.db.members().get(&self.cfg.addr).is_some_and(present) {
            self.join_at = None;
            self.join_asked = None;
        }
    }

    /// A new master finishes removals its predecessor left half-done: a `Removing` entry with
    /// nobody waiting would otherwise stay forever, neither counted nor gone.
    pub(super) fn finish_leftover_removals(&mut self) -> Result<(), StorageError> {
        if !self.has_membership() {
            return Ok(());
        }
        let leftovers: Vec<SiteAddr> = self
            .db
            .members()
            .iter()
            .filter(|(_, m)| m.state == MemberState::Removing)
            .map(|(site, _)| site.clone())
            .collect();
        for site in leftovers {
            let body = RecordBody::Membership { site, member: None };
            self.commit_body(body, Waiter::Change)?;
        }
        Ok(())
    }

    /// Whether a majority of the group holds the log through the last change of who votes (see
    /// `Master::change_floor`), so that another change may start.
    pub(super) fn last_change_settled(&self) -> bool {
        let Role::Master(m) = &self.role else {
            return false;
        };
        let holding = self
            .group()
            .iter()
            .filter(|a| {
                **a == self.cfg.addr || m.acked.get(*a).is_some_and(|l| *l >= m.change_floor)
            })
            .count();
        holding >= self.votes_needed()
    }

    /// Joins and removals the master is still waiting to see acknowledged.
    pub fn membership_changes_in_flight(&self) -> usize {
        let Role::Master(m) = &self.role else {
            return 0;
        };
        let changes = m.pending.values();
        changes
            .filter(|p| {
                matches!(
                    p.waiter,
                    Waiter::Join { .. } | Waiter::Remove { .. } | Waiter::Change
                )
            })
            .count()
    }

    /// A local request to remove `site`.
    pub(super) fn remove_site(
        &mut self,
        id: RequestId,
        site: SiteAddr,
    ) -> Result<(), StorageError> {
        if !self.has_membership() {
            let why = "a legacy group has no membership database: remove the site from every \
                       site's static list";
            self.reply(id, Err(RequestError::Invalid(why.into())));
            return Ok(());
        }
        if self.is_master() {
            return self.start_removal(site, Asker::Local(id));
        }
        match self.master().cloned() {
            Some(master) => {
                let timeout = 2 * self.cfg.timeouts.ack_ms + self.cfg.timeouts.request_retry_ms;
                self.removes
                    .insert(id, (site.clone(), self.now.plus_ms(timeout)));
                self.send(&master, Message::RemoveRequest { site });
            }
            None => {
                let reason = "no master to ask".to_string();
                self.reply(id, Err(RequestError::Unavail { reason }));
            }
        }
        Ok(())
    }

    fn start_removal(&mut self, site: SiteAddr, asked_by: Asker) -> Result<(), StorageError> {
        if site == self.cfg.addr {
            let master = self.cfg.addr.clone();
            self.answer_remove(
                asked_by,
                site,
                Err(RequestError::CannotRemoveMaster { master }),
            );
            return Ok(());
        }
        if self.membership_changes_in_flight() > 0 {
            let reason = "another membership change is in progress".to_string();
            self.answer_remove(asked_by, site, Err(RequestError::Unavail { reason }));
            return Ok(());
        }
        if !self.last_change_settled() {
            let reason = UNSETTLED.to_string();
            self.answer_remove(asked_by, site, Err(RequestError::Unavail { reason }));
            return Ok(());
        }
        let Some(entry) = self.db.members().get(&site).copied() else {
            // Already gone: the caller's goal holds.
            self.answer_remove(asked_by, site, Ok(()));
            return Ok(());
        };
        let member = Member {
            state: MemberState::Removing,
            priority: entry.priority,
        };
        let body = RecordBody::Membership {
            site: site.clone(),
            member: Some(member),
        };
        self.commit_body(body, Waiter::Remove { site, asked_by })
    }

    /// Tells whoever asked for a removal how it ended.
    pub(super) fn answer_remove(
        &mut self,
        asked_by: Asker,
        site: SiteAddr,
        result: Result<(), RequestError>,
    ) {
        match asked_by {
            Asker::Local(id) => self.reply(id, result.map(|()| Reply::SiteRemoved { site })),
            Asker::Remote(to) => {
                let error = result.err().map(|e| match e {
                    RequestError::NotMaster { master } => RemoveRefusal::NotMaster { master },
                    RequestError::CannotRemoveMaster { master } => {
                        RemoveRefusal::CannotRemoveMaster { master }
                    }
                    other => RemoveRefusal::Unavail {
                        reason: other.to_string(),
                    },
                });
                self.send(&to, Message::RemoveReply { site, error });
            }
        }
    }

    /// A client forwards a removal it was asked for.
    pub(super) fn on_remove_request(
        &mut self,
        from: SiteAddr,
        site: SiteAddr,
    ) -> Result<(), StorageError> {
        if !self.is_master() {
            let error = Some(RemoveRefusal::NotMaster {
                master: self.master().cloned(),
            });
            self.send(&from, Message::RemoveReply { site, error });
            return Ok(());
        }
        self.start_removal(site, Asker::Remote(from))
    }

    /// The master answered a removal we forwarded.
    pub(super) fn on_remove_reply(
        &mut self,
        _from: SiteAddr,
        site: SiteAddr,
        error: Option<RemoveRefusal>,
    ) {
        let ids: Vec<RequestId> = self
            .removes
            .iter()
            .filter(|(_, (s, _))| *s == site)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.removes.remove(&id);
            let result = match error.clone() {
                None => Ok(Reply::SiteRemoved { site: site.clone() }),
                Some(RemoveRefusal::NotMaster { master }) => {
                    Err(RequestError::NotMaster { master })
                }
                Some(RemoveRefusal::CannotRemoveMaster { master }) => {
                    Err(RequestError::CannotRemoveMaster { master })
                }
                Some(RemoveRefusal::Unavail { reason }) => Err(RequestError::Unavail { reason }),
            };
            self.reply(id, result);
        }
    }

    /// A client that applied its own removal leaves the group once it has caught up with its
    /// master, if nothing since re-admitted it. (Leaving at the record itself would stop a
    /// site that was removed and re-admitted while it was away, replaying both records.)
    pub(super) fn leave_if_removed(&mut self) {
        let last = self.last().lsn;
        let caught_up = matches!(&self.role, Role::Client(c) if last >= c.master_last.lsn);
        // A site joining again asked to be taken back: the removal it replays is what it asks
        // to undo (its join's answer or its `Present` record ends the join).
        if self.removal_pending && caught_up && self.join_at.is_none() {
            self.removal_pending = false;
            self.removed_from_group();
        }
    }

    /// The group admitted us (again) at `at`, by the join's answer or our `Present` record:
    /// `Removed` notices from before it are stale. The latest evidence wins.
    fn note_admitted(&mut self, at: LogPos) {
        self.readmitted_at = Some(self.readmitted_at.map_or(at, |a| a.max(at)));
    }

    /// A master tells us we are no longer a member (we were removed while away).
    pub(super) fn on_removed(
        &mut self,
        from: SiteAddr,
        gen: Gen,
        last: Lsn,
    ) -> Result<(), StorageError> {
        // A site still joining is not a member yet: there is nothing to be removed from.
        if gen < self.meta.gen || !self.has_membership() || self.join_at.is_some() {
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        // Sent before the group admitted us (again) and overtaken on the way by the answer or
        // the records doing so: a notice of an older generation, or of the admitting one from a
        // log that ended before our admission. A notice of a removal since then comes from a
        // log that goes past it, and counts.
        let stale = self
            .readmitted_at
            .is_some_and(|at| gen <= at.gen && last < at.lsn);
        if stale {
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        let _ = from;
        self.removed_from_group();
        Ok(())
    }

    /// On the master: a site that is not a member talks to us; tell it so. True if it was told.
    pub(super) fn tell_if_removed(&mut self, from: &SiteAddr) -> bool {
        if !self.has_membership() || self.recipients().contains(from) {
            return false;
        }
        let (gen, last) = (self.meta.gen, self.last().lsn);
        self.send(from, Message::Removed { gen, last });
        true
    }

    /// This site left the group: answer its own removal request, tell the application, stop.
    fn removed_from_group(&mut self) {
        let me = self.cfg.addr.clone();
        let own: Vec<RequestId> = self
            .removes
            .iter()
            .filter(|(_, (s, _))| *s == me)
            .map(|(id, _)| *id)
            .collect();
        for id in own {
            self.removes.remove(&id);
            self.reply(id, Ok(Reply::SiteRemoved { site: me.clone() }));
        }
        self.emit(Event::LocalSiteRemoved);
        self.halt(format!("{me} was removed from the replication group"));
    }

    /// Events for a membership record just applied; `before` is the site's previous entry.
    pub(super) fn note_membership_change(&mut self, record: &LogRecord, before: Option<Member>) {
        if let RecordBody::MembershipCreated { members } = &record.body {
            if !matches!(&self.role, Role::Client(c) if !c.startup_done) {
                let sites = members.keys().cloned().collect();
                self.emit(Event::MembershipCreated { sites });
            }
            return;
        }
        let RecordBody::Membership { site, member } = &record.body else {
            return;
        };
        let was_present = before.is_some_and(|m| m.state == MemberState::Present);
        let was_member = before.is_some_and(|m| m.state != MemberState::Adding);
        if *site == self.cfg.addr {
            // Ours: a removal only counts once we know it is not history (see
            // `leave_if_removed`); a later record re-admitting us cancels it.
            match member {
                Some(m) if m.state == MemberState::Present => {
                    if self.removal_pending
                        || before.is_none_or(|b| b.state != MemberState::Present)
                    {
                        self.note_admitted(record.pos());
                    }
                    self.removal_pending = false;
                }
                // The group is taking us back (a join in progress): not removed.
                Some(_) => self.removal_pending = false,
                None if was_member => self.removal_pending = true,
                None => {}
            }
        }
        // A client still catching up reads history: the sites it learns of that way were
        // added before it came (Berkeley DB reports no SITE_ADDED for them either).
        if matches!(&self.role, Role::Client(c) if !c.startup_done) {
            return;
        }
        match member {
            // A joiner learns of its own admission from the join's answer and StartupDone, as
            // in Berkeley DB, not as a SiteAdded, however its caught-up point and the record
            // marking it present fall.
            Some(m)
                if m.state == MemberState::Present && !was_present && *site != self.cfg.addr =>
            {
                self.emit(Event::SiteAdded { site: site.clone() });
            }
            None if *site != self.cfg.addr && was_member => {
                self.emit(Event::SiteRemoved { site: site.clone() })
            }
            _ => {}
        }
    }

    /// Legacy upgrade: a version-2 master of a group still on its static list writes the
    /// membership database from that list, once every other listed site has spoken version 2
    /// with it. Until then the group stays on the list, so a version-1 site never meets a record
    /// it cannot read (this is how upgrading the master first is handled: it simply waits).
    pub(super) fn create_membership_if_ready(&mut self) -> Result<(), StorageError> {
        if self.cfg.protocol_version < 2
            || self.has_membership()
            || self.cfg.sites.is_empty()
            || !self.is_master()
            || self.dead.is_some()
        {
            return Ok(());
        }
        let all_upgraded = self
            .others()
            .iter()
            .all(|s| self.peers.get(s).and_then(|p| p.version) == Some(2));
        if !all_upgraded {
            return Ok(());
        }
        let members = self
            .cfg
            .sites
            .iter()
            .map(|site| {
                let priority = if *site == self.cfg.addr {
                    self.cfg.priority
                } else {
                    self.peers.get(site).and_then(|p| p.priority).unwrap_or(1)
                };
                let member = Member {
                    state: MemberState::Present,
                    priority,
                };
                (site.clone(), member)
            })
            .collect();
        // One record: a log or snapshot holds the whole database or none of it, never a part
        // that would shrink the group a lagging site counts.
        self.commit_body(RecordBody::MembershipCreated { members }, Waiter::Change)
    }
}

/// Why a membership change waits: the last one is not yet held by a majority.
const UNSETTLED: &str =
    "the last membership change is not yet acknowledged by a majority of the group";

fn join_unavail(site: SiteAddr, reason: String) -> Message {
    Message::JoinReply {
        site,
        result: JoinResult::Unavail { reason },
    }
}
