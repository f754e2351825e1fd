//! Elections: who stands, who votes for whom, who wins.
//!
//! A candidate starts election generation `egen` (its known generation plus one), votes for
//! itself and asks everyone. A voter grants at most one vote per election generation, and only to
//! a candidate whose log is at least as advanced as its own; so two majorities for the same
//! generation cannot exist, and a winner holds every commit that a majority acknowledged.
//! Beyond that, Berkeley DB's preference is honoured: the most advanced log wins, then the
//! highest priority, then the lowest address. A voter that outranks the candidate refuses and
//! stands itself; a candidate that hears from a site outranking it yields; and a candidate with
//! enough votes listens a little longer (`vote_collect_ms`) for a better-placed site.
//!
//! Priority-0 sites vote but never stand. A healthy master and clients that hear from one refuse
//! votes (unless the master itself asked for a switchover), so a flaky site cannot depose it.

use super::master::Master;
use super::{Event, Role, Site};
use crate::log::{LogRecord, RecordBody};
use crate::storage::{Storage, StorageError};
use crate::types::{Gen, LogPos, SiteAddr, Time};
use crate::wire::Message;
use std::collections::BTreeSet;

/// State of a site while it is running for master.
#[derive(Debug)]
pub(super) struct Election {
    /// The generation this election would start.
    pub egen: Gen,
    /// Sites that granted their vote (this one included).
    pub granted: BTreeSet<SiteAddr>,
    /// Sites that answered at all.
    pub answered: BTreeSet<SiteAddr>,
    /// When enough votes were first held.
    pub enough_since: Option<Time>,
    /// When the election is lost if not won.
    pub ends_at: Time,
    /// Whether the old master asked for this election (switchover).
    pub takeover: bool,
    /// How long to listen for a better-placed site once enough votes are held.
    pub collect_ms: u64,
    /// A pre-vote round: nothing recorded anywhere until a majority would vote for us.
    pub pre: bool,
    /// The highest generation the voters told us they know of.
    pub max_term: Gen,
    /// Members that refused us for following a master: if one stands later, it lost that
    /// master, and is asked again (see `ask_again`).
    pub refused_for_master: BTreeSet<SiteAddr>,
}

impl Election {
    pub fn deadline(&self) -> Time {
        match self.enough_since {
            Some(since) => since.plus_ms(self.collect_ms).min(self.ends_at),
            None => self.ends_at,
        }
    }
}

/// A voter's answer, as `on_vote` takes it.
pub(super) struct Ballot {
    pub egen: Gen,
    pub granted: bool,
    pub gen: Gen,
    pub last: LogPos,
    pub priority: u32,
    pub master: Option<SiteAddr>,
    pub pre: bool,
    pub term: Gen,
}

/// A candidate's request, as `on_vote_request` takes it.
pub(super) struct Ask {
    pub egen: Gen,
    pub last: LogPos,
    pub priority: u32,
    pub takeover: bool,
    pub pre: bool,
}

/// Berkeley DB's election order: more advanced log, then higher priority, then (to break ties
/// deterministically) the lower address. True if `a` should be master rather than `b`.
pub(super) fn outranks(a: (LogPos, u32, &SiteAddr), b: (LogPos, u32, &SiteAddr)) -> bool {
    (a.0, a.1) > (b.0, b.1) || ((a.0, a.1) == (b.0, b.1) && a.2 < b.2)
}

impl<S: Storage> Site<S> {
    /// Stands for master: first a pre-vote (unless the master asked us to take over), then, if a
    /// majority would vote for us, a real election in a new election generation.
    pub(super) fn start_election(&mut self, takeover: bool) -> Result<(), StorageError> {
        if self.lost_voter_changes() {
            // Its view of the group may lack members: wait for a master to mend the log.
            self.become_client(None);
            return Ok(());
        }
        self.start_round(takeover, !takeover)
    }

    fn start_round(&mut self, takeover: bool, pre: bool) -> Result<(), StorageError> {
        debug_assert!(self.cfg.priority > 0, "priority-0 sites never stand");
        if self.lease_promised() {
            // A lease granted to a master still runs: standing would vote for ourselves.
            // Stand once it has run out.
            let at = self.lease_promise_end();
            if !matches!(self.role, Role::Client(_)) {
                self.become_client(None);
            }
            if let Some(c) = self.client_mut() {
                c.election_at = c.election_at.max(at);
            }
            return Ok(());
        }
        // Above every generation we or the pre-voters know of, so no vote already cast blocks it.
        let heard = match &self.role {
            Role::Electing(e) => e.max_term,
            _ => 0,
        };
        let Some(egen) = self.term().max(heard).checked_add(1) else {
            // Only a peer's garbage brings a generation to u64::MAX, and no election can go
            // above it: stay a client (with a fresh election timer, so we do not spin) rather
            // than wrap around and reuse generation numbers.
            self.become_client(None);
            return Ok(());
        };
        if !pre {
            self.meta.egen = egen;
            self.meta.voted_for = Some(self.cfg.addr.clone());
            // The vote for ourselves is durable before anyone hears of the election.
            self.save_meta()?;
            self.stats.elections += 1;
            let candidate = self.cfg.addr.clone();
            self.emit(Event::Voted { candidate, egen });
        }
        self.role = Role::Electing(Election {
            egen,
            granted: BTreeSet::from([self.cfg.addr.clone()]),
            answered: BTreeSet::new(),
            enough_since: None,
            ends_at: self.now.plus_ms(self.cfg.timeouts.election_timeout_ms),
            takeover,
            collect_ms: self.cfg.timeouts.vote_collect_ms,
            pre,
            max_term: heard,
            refused_for_master: BTreeSet::new(),
        });
        let request = Message::VoteRequest {
            egen,
            last: self.last(),
            priority: self.cfg.priority,
            takeover,
            pre,
        };
        self.broadcast(request);
        self.check_win()
    }

    pub(super) fn election_tick(&mut self) -> Result<(), StorageError> {
        let Role::Electing(e) = &self.role else {
            return Ok(());
        };
        // The votes needed now, not in general: a lenient two-site group whose other site is
        // connected needs its vote too, and an election that waited for it in vain must end
        // (judged against the general need it would never end, and the site would spin on a
        // deadline in the past).
        let needed = self.votes_needed_now();
        if self.now >= e.ends_at && e.granted.len() < needed {
            let event = Event::ElectionFailed {
                egen: e.egen,
                votes: e.granted.len(),
                needed,
                pre: e.pre,
            };
            self.emit(event);
            self.become_client(None);
            return Ok(());
        }
        self.check_win()
    }

    /// Votes needed right now. A two-site group without strictness may elect a lone site, but
    /// only while the other is unreachable: if it is connected, its vote is required.
    fn votes_needed_now(&self) -> usize {
        let needed = self.votes_needed();
        let other_connected = self.others().iter().any(|a| self.is_connected(a));
        if needed == 1 && self.group_size() == 2 && other_connected {
            2
        } else {
            needed
        }
    }

    pub(super) fn check_win(&mut self) -> Result<(), StorageError> {
        let needed = self.votes_needed_now();
        let now = self.now;
        let connected: Vec<SiteAddr> = self
            .others()
            .into_iter()
            .filter(|a| self.is_connected(a))
            .collect();
        let Role::Electing(e) = &mut self.role else {
            return Ok(());
        };
        if e.granted.len() < needed {
            // Enough once, not now (the need rose: the other site of a lenient pair connected,
            // or the group grew): wait for more votes until the election's end, rather than
            // keep a collect deadline in the past that no tick can move.
            e.enough_since = None;
            return Ok(());
        }
        if e.pre {
            // A majority would vote for us: now ask for real.
            return self.start_round(false, false);
        }
        let since = *e.enough_since.get_or_insert(now);
        let heard_everyone = connected.iter().all(|a| e.answered.contains(a));
        // At the election's end a candidate with enough votes wins even if its collect window
        // is still open: neither failing nor winning would leave it spinning on a past deadline.
        let over = now >= since.plus_ms(e.collect_ms) || now >= e.ends_at;
        if e.takeover || heard_everyone || over {
            let (gen, voters) = (e.egen, e.granted.iter().cloned().collect());
            self.become_master(gen, voters, needed)?;
        }
        Ok(())
    }

    pub(super) fn become_master(
        &mut self,
        gen: Gen,
        voters: Vec<SiteAddr>,
        needed: usize,
    ) -> Result<(), StorageError> {
        assert!(
            gen > self.meta.gen && gen == self.meta.egen,
            "a master's generation is the election it won, above any it knew"
        );
        self.meta.gen = gen;
        self.save_meta()?;
        self.stats.elections_won += 1;
        self.role = Role::Master(Master::new(self.now));
        let votes = voters.len();
        let group = self.group().len();
        self.emit(Event::Elected {
            gen,
            votes,
            needed,
            voters,
            group,
        });
        self.emit(Event::BecameMaster { gen });
        // The generation opens with a record of its own, so every log that has anything of this
        // generation starts it at the same LSN and clients can verify against it.
        let start = LogRecord::new(
            self.last().lsn + 1,
            gen,
            RecordBody::GenStart {
                master: self.cfg.addr.clone(),
            },
        );
        self.append(std::slice::from_ref(&start))?;
        if let Some(m) = self.master_mut() {
            m.change_floor = start.lsn;
        }
        self.sync_log()?;
        let beat = self.heartbeat();
        self.broadcast(beat);
        self.request_leases();
        self.finish_leftover_removals()
    }

    /// A candidate asks for our vote (or, in a pre-vote, whether we would give it).
    pub(super) fn on_vote_request(&mut self, from: SiteAddr, ask: Ask) -> Result<(), StorageError> {
        let Ask {
            egen, last, pre, ..
        } = ask;
        // A master that no longer counts the candidate as a member tells it so.
        if self.is_master() && self.tell_if_removed(&from) {
            return Ok(());
        }
        // A candidate whose log holds a later generation than ours proves our master is stale.
        self.saw_later_gen(last.gen)?;
        let (granted, outranked) = self.decide_vote(&from, &ask);
        if outranked {
            // In a pre-vote nothing is recorded: only stand sooner ourselves.
            self.stand_soon(if pre { 0 } else { egen })?;
            self.ask_again(&from);
        }
        if granted && pre {
            // A short listen: the candidate we would vote for should win within a few round
            // trips; standing against it now would only split the vote. That holds for a site
            // asking its own pre-vote too (it has recorded nothing yet, and a site that could
            // stand grants only a better-placed one): carried on, its real round would meet
            // the better one's and split the voters between them.
            let at = self.now.plus_ms(3 * self.cfg.timeouts.vote_collect_ms);
            if matches!(&self.role, Role::Electing(e) if e.pre) {
                self.become_client(None);
                if let Some(c) = self.client_mut() {
                    c.election_at = at;
                }
            } else if let Some(c) = self.client_mut() {
                c.election_at = c.election_at.max(at);
            }
        }
        if granted && !pre {
            if egen > self.meta.egen {
                self.meta.egen = egen;
                self.meta.voted_for = Some(from.clone());
                // The vote is durable before the candidate can count it.
                self.save_meta()?;
            }
            let candidate = from.clone();
            self.emit(Event::Voted { candidate, egen });
            // We just helped someone else stand: step aside and give them time. A master of a
            // generation below the one we voted in is no longer ours to follow.
            if !matches!(self.role, Role::Client(_)) {
                self.become_client(None);
            } else {
                let at = self.now.plus_ms(self.election_delay());
                if let Some(c) = self.client_mut() {
                    c.election_at = c.election_at.max(at);
                    c.drop_master_below(egen);
                }
            }
        }
        let vote = Message::Vote {
            egen,
            granted,
            gen: self.meta.gen,
            last: self.last(),
            priority: self.standing_priority(),
            master: if granted {
                None
            } else {
                self.master().cloned()
            },
            pre,
            term: self.term(),
        };
        self.send(&from, vote);
        Ok(())
    }

    /// Whether to grant, and whether we refused because we are better placed than the candidate.
    fn decide_vote(&self, from: &SiteAddr, ask: &Ask) -> (bool, bool) {
        let Ask {
            egen,
            last,
            priority,
            takeover,
            pre,
        } = *ask;
        // One vote per election generation, and none for a generation that already has (or had)
        // a master we know of.
        let floor = self.meta.gen.max(self.meta.egen);
        let already_voted_for_it = egen == self.meta.egen
            && egen > self.meta.gen
            && self.meta.voted_for.as_ref() == Some(from);
        if pre {
            // Hypothetical: the real round will go above whatever we voted in. Only a generation
            // that already had a master we know of is out of the question.
            if egen <= self.meta.gen {
                return (false, false);
            }
        } else if egen < floor || (egen == floor && !already_voted_for_it) {
            return (false, false);
        }
        // Any site may vote, even one whose log does not yet show it as a member (a joiner that
        // missed its own `Present` record): the candidate counts only the votes of its group,
        // and a candidate with a stale view has a less advanced log than those who know better.
        if priority == 0 {
            return (false, false);
        }
        if self.lease_promised() {
            // A lease granted to a master still runs: no vote for anyone until it has run out.
            return (false, false);
        }
        if !takeover {
            // A client whose master has been silent for all but the last heartbeat interval of
            // its timeout no longer counts as hearing it: the candidate asking lost the master
            // a few milliseconds sooner (their timers start from the last heartbeat each got),
            // and refusing it would cost a whole election timeout for a master about to be
            // declared lost here too.
            let t = &self.cfg.timeouts;
            let grace = t.heartbeat_interval_ms.min(t.heartbeat_timeout_ms / 2);
            let hears_master = match &self.role {
                Role::Master(_) => true,
                Role::Client(c) => {
                    c.master.is_some()
                        && self.now < c.last_heard.plus_ms(t.heartbeat_timeout_ms - grace)
                }
                Role::Electing(_) => false,
            };
            if hears_master {
                return (false, false);
            }
        }
        // A site that could stand instead refuses a less advanced log, as in Berkeley DB. A
        // priority-0 site refuses only a log that misses a membership change its own log shows
        // settled (`vote_guard`): its other records count for no acknowledgement that promises
        // survival (`quorum` counts electable sites), and if it refused for them, a group whose
        // most advanced log sits on a priority-0 site could never elect anyone. But its ack
        // does count to settle a change of who votes, so a candidate without a settled change
        // (a site it removed, say) must not win with its vote. A site whose own log says its
        // removal has begun still refuses: it may hold commits it acknowledged as a member. It
        // answers with priority 0 (`standing_priority`), so the candidate counts the refusal as
        // a no and carries on rather than step aside for a site that will never stand.
        if last < self.vote_guard() {
            return (false, true);
        }
        let mine = self.last();
        // With logs alike, only a site that will stand refuses for its rank.
        let me = (mine, self.cfg.priority, &self.cfg.addr);
        if !takeover && self.standing_priority() > 0 && outranks(me, (last, priority, from)) {
            return (false, true);
        }
        (true, false)
    }

    /// A rival we outrank stands while we do. If it refused our round for following a master,
    /// it has lost that master since: ask it again (once) rather than wait out the round.
    fn ask_again(&mut self, rival: &SiteAddr) {
        let last = self.last();
        let Role::Electing(e) = &mut self.role else {
            return;
        };
        if !e.refused_for_master.remove(rival) {
            return;
        }
        let request = Message::VoteRequest {
            egen: e.egen,
            last,
            priority: self.cfg.priority,
            takeover: e.takeover,
            pre: e.pre,
        };
        self.send(rival, request);
    }

    /// We refused a candidate we outrank: stand ourselves shortly (after a little jitter, so
    /// that two sites refusing the same candidate do not collide), in a generation above the
    /// candidate's so that votes already cast in its election do not block ours. Not while we
    /// follow a master: we will not stand until we lose it, and a term above its generation
    /// would have us refuse its next heartbeat and depose a master the rest of the group hears.
    fn stand_soon(&mut self, egen: Gen) -> Result<(), StorageError> {
        let following = matches!(&self.role, Role::Client(c) if c.master.is_some());
        if self.standing_priority() == 0 || !matches!(self.role, Role::Client(_)) || following {
            return Ok(());
        }
        if egen > self.meta.egen {
            self.meta.egen = egen;
            self.meta.voted_for = None;
            self.save_meta()?;
        }
        let jitter = self.election_delay() - self.cfg.timeouts.election_timeout_ms;
        let at = self.now.plus_ms(jitter / 4);
        if let Some(c) = self.client_mut() {
            c.election_at = c.election_at.min(at);
        }
        Ok(())
    }

    /// A voter answered.
    pub(super) fn on_vote(&mut self, from: SiteAddr, ballot: Ballot) -> Result<(), StorageError> {
        let Ballot {
            egen,
            granted,
            gen,
            last,
            priority,
            master,
            pre,
            term,
        } = ballot;
        let names_a_master = master.is_some();
        if let Some(master) = master.filter(|m| {
            gen >= self.meta.gen && !self.recipients().contains(m) && *m != self.cfg.addr
        }) {
            // A master we do not count as a member: our membership view is stale (we may have
            // been removed while away). Ask it directly; it answers `Removed` if so. Not for a
            // master of a generation before ours: that news is older than our own view.
            let (gen, priority) = (self.meta.gen, self.cfg.priority);
            self.send(&master, Message::SyncRequest { gen, priority });
        }
        // The voter knows a master of a later generation: follow the news. Whatever master we
        // are or follow is stale, and so is an election at or below that generation. (A late
        // answer can reach a candidate that has since won: it must step down, not carry on
        // as master under the later generation's number.)
        if self.saw_later_gen(gen)? && !matches!(self.role, Role::Electing(_)) {
            return Ok(());
        }
        let me = (self.last(), self.cfg.priority, &self.cfg.addr);
        // Only the votes of our group count towards winning.
        let others = self.others();
        let member = others.contains(&from);
        let needed = self.votes_needed_now();
        let Role::Electing(e) = &mut self.role else {
            self.stats.messages_ignored += 1;
            return Ok(());
        };
        if e.egen != egen || e.pre != pre {
            self.stats.messages_ignored += 1;
            return Ok(());
        }
        e.answered.insert(from.clone());
        e.max_term = e.max_term.max(term);
        if !granted && member && names_a_master {
            e.refused_for_master.insert(from.clone());
        }
        if granted && member {
            e.granted.insert(from);
        } else if !e.takeover && member && priority > 0 && outranks((last, priority, &from), me) {
            // A better-placed member is up: let it win rather than win against it. (A site
            // still joining may hold more of the log, but it cannot stand: stepping aside for
            // it would leave the group without a master for as long as its join takes.)
            self.become_client(None);
            return Ok(());
        }
        let unanswered = others.iter().filter(|a| !e.answered.contains(*a)).count();
        if !e.pre && e.granted.len() + unanswered < needed {
            // Lost for certain: the votes still to come cannot make a majority. The pre-vote
            // said a majority would vote for us, so something changed since: most often a
            // candidate that stood at the same moment took some of the votes (it stepped aside
            // when it heard our refusal, or it outranks us and we stepped aside above). Waiting
            // out the election's timeout would cost the group a second or more without a
            // master: stand again shortly, above every generation the voters named (a pre-vote
            // first, so a round that cannot win stops there).
            let event = Event::ElectionFailed {
                egen: e.egen,
                votes: e.granted.len(),
                needed,
                pre: false,
            };
            let above = e.max_term;
            self.emit(event);
            self.become_client(None);
            return self.stand_soon(above);
        }
        self.check_win()
    }

    /// The current heartbeat of this master.
    pub(super) fn heartbeat(&self) -> Message {
        Message::Heartbeat {
            gen: self.meta.gen,
            last: self.last(),
            first_lsn: self.storage.first_lsn(),
        }
    }
}
