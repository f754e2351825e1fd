//! An in-memory network of sites for fast, deterministic tests of the core (the idea of raft-rs's
//! test harness): messages are queued with seeded delays and losses, links can be cut, sites
//! crash (losing unsynced records) and restart. No async, no sockets, no clock: time is a number
//! this network advances from event to event.
//!
//! It also watches the safety rules that must hold at every instant (at most one master per
//! generation) and offers checks for the rest at quiescence. The full simulator in `sim/` runs
//! the real driver on madsim; this is the core alone, for unit and property tests and fuzzing.

use crate::log::{LogRecord, Txn};
use crate::site::{Config, Event, Input, Output, Reply, Request, RequestError, RequestId, Site};
use crate::storage::{self, MemStorage, Storage};
use crate::types::{Gen, Lsn, SiteAddr, Time};
use crate::wire::Message;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// Message faults applied to every send, drawn from the network's seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFaults {
    /// Chance in 1000 that a message is lost.
    pub drop_per_mille: u32,
    /// Chance in 1000 that a message is delivered twice.
    pub duplicate_per_mille: u32,
    /// Smallest delivery delay.
    pub delay_min_ms: u64,
    /// Largest delivery delay (messages overtake each other when this exceeds the minimum).
    pub delay_max_ms: u64,
    /// Chance in 1000 that a message also arrives once more, late: between `delay_max_ms` and
    /// `stale_delay_max_ms` after it was sent, long after its answer and whatever followed (as
    /// a message queued on a connection that broke is resent on the next). A site must take
    /// such a message for the past it belongs to.
    pub stale_per_mille: u32,
    /// Latest arrival of a stale copy.
    pub stale_delay_max_ms: u64,
}

impl Default for LinkFaults {
    fn default() -> Self {
        LinkFaults {
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            delay_min_ms: 1,
            delay_max_ms: 5,
            stale_per_mille: 0,
            stale_delay_max_ms: 3_000,
        }
    }
}

struct Node {
    cfg: Config,
    /// The running site, or `None` while crashed.
    site: Option<Site<MemStorage>>,
    /// The disk while the site is down.
    disk: Option<MemStorage>,
    /// Bumped at every restart, so messages sent to an earlier incarnation are not delivered.
    incarnation: u64,
}

struct InFlight {
    from: SiteAddr,
    to: SiteAddr,
    incarnation: u64,
    msg: Message,
}

/// A commit the test asked for and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitRecord {
    /// The site asked.
    pub site: SiteAddr,
    /// The answer, once given.
    pub result: Option<Result<Reply, RequestError>>,
    /// The record the master wrote, if it was master.
    pub record: Option<LogRecord>,
}

/// A network of sites.
pub struct Network {
    now: Time,
    nodes: BTreeMap<SiteAddr, Node>,
    queue: BTreeMap<(Time, u64), InFlight>,
    seq: u64,
    rng: ChaCha8Rng,
    /// Faults applied to new sends.
    pub faults: LinkFaults,
    /// Directed links that are cut: (from, to).
    cut: BTreeSet<(SiteAddr, SiteAddr)>,
    events: Vec<(Time, SiteAddr, Event)>,
    requests: BTreeMap<RequestId, CommitRecord>,
    next_request: u64,
    masters: BTreeMap<Gen, SiteAddr>,
    /// Every vote cast, by voter and election generation, across crashes: one candidate each.
    votes: BTreeMap<(SiteAddr, Gen), SiteAddr>,
    violations: Vec<String>,
    delivered: u64,
    start_errors: BTreeMap<SiteAddr, String>,
    /// Every message sent, in order, while recording is on (the fuzz corpus is seeded from it).
    recorded: Option<Vec<(SiteAddr, SiteAddr, Message)>>,
}

impl Network {
    /// A group of `n` sites named `s1:7000`.. with default configuration changed by `configure`
    /// (called with each site's index and config), all started at time 0.
    pub fn new(n: usize, seed: u64, configure: impl Fn(usize, &mut Config)) -> Network {
        let addrs: Vec<SiteAddr> = (1..=n)
            .map(|i| SiteAddr::new(format!("s{i}:7000")))
            .collect();
        let mut net = Network {
            now: Time(0),
            nodes: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            faults: LinkFaults::default(),
            cut: BTreeSet::new(),
            events: Vec::new(),
            requests: BTreeMap::new(),
            next_request: 1,
            masters: BTreeMap::new(),
            votes: BTreeMap::new(),
            violations: Vec::new(),
            delivered: 0,
            start_errors: BTreeMap::new(),
            recorded: None,
        };
        for (i, addr) in addrs.iter().enumerate() {
            let mut cfg = Config::new(addr.clone(), addrs.clone());
            configure(i, &mut cfg);
            net.nodes.insert(
                addr.clone(),
                Node {
                    cfg,
                    site: None,
                    disk: Some(MemStorage::new()),
                    incarnation: 0,
                },
            );
        }
        for addr in addrs {
            net.start(&addr);
        }
        net
    }

    /// The address of site number `i` (from 1).
    pub fn addr(i: usize) -> SiteAddr {
        SiteAddr::new(format!("s{i}:7000"))
    }

    /// Every site's address.
    pub fn addrs(&self) -> Vec<SiteAddr> {
        self.nodes.keys().cloned().collect()
    }

    /// Current time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Starts keeping a copy of every message sent from now on (as the sender put it, before
    /// any loss or duplication), for [`Network::recorded_messages`].
    pub fn record_messages(&mut self) {
        self.recorded.get_or_insert_with(Vec::new);
    }

    /// The messages sent since [`Network::record_messages`]: (from, to, message), in order.
    pub fn recorded_messages(&self) -> &[(SiteAddr, SiteAddr, Message)] {
        self.recorded.as_deref().unwrap_or_default()
    }

    /// Messages delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The running site at `addr`.
    pub fn site(&self, addr: &SiteAddr) -> Option<&Site<MemStorage>> {
        self.nodes.get(addr).and_then(|n| n.site.as_ref())
    }

    /// A running site, to drive by hand (what it outputs is not routed).
    pub fn site_mut(&mut self, addr: &SiteAddr) -> Option<&mut Site<MemStorage>> {
        self.nodes.get_mut(addr).and_then(|n| n.site.as_mut())
    }

    /// Events so far, in order: (time, site, event).
    pub fn events(&self) -> &[(Time, SiteAddr, Event)] {
        &self.events
    }

    /// Events of one site.
    pub fn events_of(&self, addr: &SiteAddr) -> Vec<Event> {
        self.events
            .iter()
            .filter(|(_, a, _)| a == addr)
            .map(|(_, _, e)| e.clone())
            .collect()
    }

    /// Safety violations seen so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// The commits asked for and their outcomes.
    pub fn commits(&self) -> impl Iterator<Item = &CommitRecord> {
        self.requests.values()
    }

    /// The answer to a request, once given.
    pub fn result(&self, id: RequestId) -> Option<&Result<Reply, RequestError>> {
        self.requests.get(&id).and_then(|c| c.result.as_ref())
    }

    /// The live master of the highest generation, if any.
    pub fn master(&self) -> Option<SiteAddr> {
        self.nodes
            .values()
            .filter_map(|n| n.site.as_ref())
            .filter(|s| s.is_master())
            .max_by_key(|s| s.gen())
            .map(|s| s.addr().clone())
    }

    /// True if `addr` is running.
    pub fn is_up(&self, addr: &SiteAddr) -> bool {
        self.site(addr).is_some()
    }

    fn start(&mut self, addr: &SiteAddr) {
        let node = self.nodes.get_mut(addr).expect("known site");
        let disk = node.disk.take().expect("a stopped site has its disk");
        node.incarnation += 1;
        let seed = self.rng.next_u64();
        // Opening consumes the disk; keep a copy to put back if the configuration is refused.
        let spare = disk.clone();
        match Site::open(node.cfg.clone(), disk, seed, self.now) {
            Ok(site) => {
                node.site = Some(site);
                self.start_errors.remove(addr);
            }
            Err(error) => {
                node.disk = Some(spare);
                self.start_errors.insert(addr.clone(), error.to_string());
                return;
            }
        }
        // The outputs of opening (events, a primordial master's first records).
        self.input(addr, Input::Tick);
        // Connections come up with every reachable running peer.
        for other in self.addrs() {
            if other != *addr && self.connected(addr, &other) {
                self.connect_inputs(addr, &other);
            }
        }
    }

    /// Tells both ends that their connection is up, with the version their handshake agrees on.
    fn connect_inputs(&mut self, a: &SiteAddr, b: &SiteAddr) {
        let version = self.nodes[a]
            .cfg
            .protocol_version
            .min(self.nodes[b].cfg.protocol_version);
        let (a, b) = (a.clone(), b.clone());
        self.input(
            &a,
            Input::PeerConnected {
                addr: b.clone(),
                version,
            },
        );
        self.input(&b, Input::PeerConnected { addr: a, version });
    }

    /// A network with no sites yet (add them with [`Network::add_site`]).
    pub fn empty(seed: u64) -> Network {
        Network::new(0, seed, |_, _| {})
    }

    /// Adds a site with its own configuration and a fresh disk, and starts it.
    pub fn add_site(&mut self, cfg: Config) {
        let addr = cfg.addr.clone();
        let node = Node {
            cfg,
            site: None,
            disk: Some(MemStorage::new()),
            incarnation: 0,
        };
        assert!(
            self.nodes.insert(addr.clone(), node).is_none(),
            "{addr} added twice"
        );
        self.start(&addr);
    }

    /// Changes a site's configuration for its next start (a restart with new settings, an
    /// upgrade to another protocol version).
    pub fn reconfigure(&mut self, addr: &SiteAddr, change: impl FnOnce(&mut Config)) {
        change(&mut self.nodes.get_mut(addr).expect("known site").cfg);
    }

    /// The reason a site could not start, if the last start failed.
    pub fn start_error(&self, addr: &SiteAddr) -> Option<&str> {
        self.start_errors.get(addr).map(String::as_str)
    }

    /// Crashes a site: it stops at once and its unsynced records are lost.
    pub fn crash(&mut self, addr: &SiteAddr) {
        let node = self.nodes.get_mut(addr).expect("known site");
        let Some(site) = node.site.take() else {
            return;
        };
        let mut disk = site.into_storage();
        disk.crash();
        node.disk = Some(disk);
        for other in self.addrs() {
            if other != *addr && self.is_up(&other) && !self.is_cut(addr, &other) {
                self.input(&other, Input::PeerDisconnected(addr.clone()));
            }
        }
    }

    /// Bit rot on a stopped site's disk: the record at `lsn` fails its checksum, and the log is
    /// cut there as opening a file storage would. Returns how many records were dropped.
    pub fn rot(&mut self, addr: &SiteAddr, lsn: Lsn) -> usize {
        let node = self.nodes.get_mut(addr).expect("known site");
        let disk = node.disk.as_mut().expect("rot only a stopped site's disk");
        assert!(disk.corrupt(lsn), "{addr} holds no record {lsn}");
        disk.recover()
    }

    /// Restarts a crashed site from its disk.
    pub fn restart(&mut self, addr: &SiteAddr) {
        if !self.is_up(addr) {
            self.start(addr);
        }
    }

    fn is_cut(&self, a: &SiteAddr, b: &SiteAddr) -> bool {
        self.cut.contains(&(a.clone(), b.clone())) || self.cut.contains(&(b.clone(), a.clone()))
    }

    /// Whether two sites have a working connection (both up, neither direction cut).
    pub fn connected(&self, a: &SiteAddr, b: &SiteAddr) -> bool {
        self.is_up(a) && self.is_up(b) && !self.is_cut(a, b)
    }

    /// Replaces the cut links, telling sites whose connections changed.
    fn set_cut(&mut self, cut: BTreeSet<(SiteAddr, SiteAddr)>) {
        let addrs = self.addrs();
        let before: BTreeSet<(SiteAddr, SiteAddr)> = pairs(&addrs)
            .filter(|(a, b)| self.connected(a, b))
            .collect();
        self.cut = cut;
        for (a, b) in pairs(&addrs) {
            let now_connected = self.connected(&a, &b);
            if before.contains(&(a.clone(), b.clone())) != now_connected {
                if now_connected {
                    self.connect_inputs(&a, &b);
                } else {
                    self.input(&a, Input::PeerDisconnected(b.clone()));
                    self.input(&b, Input::PeerDisconnected(a.clone()));
                }
            }
        }
    }

    /// Splits the group: sites in different sets cannot talk. Sites in no set are isolated.
    pub fn partition(&mut self, sets: &[&[SiteAddr]]) {
        let side = |a: &SiteAddr| sets.iter().position(|s| s.contains(a));
        let addrs = self.addrs();
        let cut = addrs
            .iter()
            .flat_map(|a| addrs.iter().map(move |b| (a.clone(), b.clone())))
            .filter(|(a, b)| a != b && (side(a).is_none() || side(a) != side(b)))
            .collect();
        self.set_cut(cut);
    }

    /// Cuts one direction of one link: `from` can no longer reach `to` (and the connection is
    /// considered down on both ends, as a TCP connection would be).
    pub fn clog(&mut self, from: &SiteAddr, to: &SiteAddr) {
        let mut cut = self.cut.clone();
        cut.insert((from.clone(), to.clone()));
        self.set_cut(cut);
    }

    /// Loses every message in flight from `from` to `to` that `lose` picks, as a link that drops
    /// one message and keeps the connection would; returns how many were lost.
    pub fn lose_in_flight(
        &mut self,
        from: &SiteAddr,
        to: &SiteAddr,
        lose: impl Fn(&Message) -> bool,
    ) -> usize {
        let before = self.queue.len();
        self.queue
            .retain(|_, m| !(m.from == *from && m.to == *to && lose(&m.msg)));
        before - self.queue.len()
    }

    /// Repairs every link.
    pub fn heal(&mut self) {
        self.set_cut(BTreeSet::new());
    }

    /// Asks `addr` to commit `txn`; the answer arrives as the network runs.
    pub fn commit(&mut self, addr: &SiteAddr, txn: Txn) -> RequestId {
        self.request(addr, Request::Commit(txn))
    }

    /// Asks `addr` to commit `txns` together, as a driver batches commits that wait together
    /// ([`Input::Commits`]).
    pub fn commit_batch(&mut self, addr: &SiteAddr, txns: Vec<Txn>) -> Vec<RequestId> {
        let mut batch = Vec::new();
        for txn in txns {
            let id = RequestId(self.next_request);
            self.next_request += 1;
            let record = CommitRecord {
                site: addr.clone(),
                result: None,
                record: None,
            };
            self.requests.insert(id, record);
            batch.push((id, txn));
        }
        let ids = batch.iter().map(|(id, _)| *id).collect();
        self.input(addr, Input::Commits(batch));
        ids
    }

    /// Sends any request to `addr`.
    pub fn request(&mut self, addr: &SiteAddr, request: Request) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let is_commit = matches!(request, Request::Commit(_));
        self.requests.insert(
            id,
            CommitRecord {
                site: addr.clone(),
                result: None,
                record: None,
            },
        );
        if !self.is_up(addr) {
            self.requests.get_mut(&id).expect("just inserted").result =
                Some(Err(RequestError::HandleDead {
                    reason: "site is down".into(),
                }));
            return id;
        }
        let before = self.site(addr).map(|s| s.last().lsn).unwrap_or(0);
        self.input(addr, Input::Request { id, request });
        if is_commit {
            // Remember the record a master wrote for this commit, to check it survives.
            let site = self.site(addr).expect("up");
            if site.is_master() && site.last().lsn == before + 1 {
                let lsn = site.last().lsn;
                let node = self.nodes.get_mut(addr).expect("known");
                let record = node
                    .site
                    .as_mut()
                    .and_then(|s| s.storage().read(lsn, 1).ok())
                    .and_then(|mut r| r.pop());
                self.requests.get_mut(&id).expect("known").record = record;
            }
        }
        id
    }

    /// Feeds an input to a running site and routes its outputs.
    pub fn input(&mut self, addr: &SiteAddr, input: Input) {
        let now = self.now;
        let Some(site) = self.nodes.get_mut(addr).and_then(|n| n.site.as_mut()) else {
            return;
        };
        let outputs = site.step_and_sync(now, input);
        if site.is_master() {
            let gen = site.gen();
            match self.masters.get(&gen) {
                Some(m) if m != addr => self.violations.push(format!(
                    "two masters in generation {gen}: {m} and {addr} (at {now})"
                )),
                Some(_) => {}
                None => {
                    self.masters.insert(gen, addr.clone());
                }
            }
        }
        for output in outputs {
            self.route(addr, output);
        }
    }

    fn route(&mut self, from: &SiteAddr, output: Output) {
        match output {
            Output::Send { to, msg } => self.send(from, to, msg),
            Output::Reply { id, result } => {
                if let Some(c) = self.requests.get_mut(&id) {
                    c.result = Some(result);
                }
            }
            Output::Event(e) => {
                if let Event::Voted { candidate, egen } = &e {
                    let key = (from.clone(), *egen);
                    match self.votes.insert(key, candidate.clone()) {
                        Some(earlier) if earlier != *candidate => self.violations.push(format!(
                            "{from} voted for {earlier} and then for {candidate} in election \
                             generation {egen} (at {})",
                            self.now
                        )),
                        _ => {}
                    }
                }
                self.events.push((self.now, from.clone(), e))
            }
        }
    }

    fn send(&mut self, from: &SiteAddr, to: SiteAddr, msg: Message) {
        if let Some(recorded) = &mut self.recorded {
            recorded.push((from.clone(), to.clone(), msg.clone()));
        }
        if !self.connected(from, &to) || self.chance(self.faults.drop_per_mille) {
            return;
        }
        let copies = if self.chance(self.faults.duplicate_per_mille) {
            2
        } else {
            1
        };
        let stale = self.chance(self.faults.stale_per_mille);
        let incarnation = self.nodes[&to].incarnation;
        for copy in 0..copies + usize::from(stale) {
            let (min, max) = if copy == copies {
                (self.faults.delay_max_ms, self.faults.stale_delay_max_ms)
            } else {
                (self.faults.delay_min_ms, self.faults.delay_max_ms)
            };
            let delay = min + self.rng.next_u64() % (max.saturating_sub(min) + 1);
            self.seq += 1;
            self.queue.insert(
                (self.now.plus_ms(delay), self.seq),
                InFlight {
                    from: from.clone(),
                    to: to.clone(),
                    incarnation,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && (self.rng.next_u64() % 1000) < u64::from(per_mille)
    }

    /// Runs until `until`, delivering messages and ticking sites in time order.
    pub fn run_until(&mut self, until: Time) {
        loop {
            let next_msg = self.queue.keys().next().map(|&(t, _)| t);
            let next_tick = self
                .nodes
                .iter()
                .filter_map(|(a, n)| Some((n.site.as_ref()?.next_deadline()?, a.clone())))
                .min();
            let next = match (next_msg, &next_tick) {
                (Some(m), Some((t, _))) => m.min(*t),
                (Some(m), None) => m,
                (None, Some((t, _))) => *t,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if next_msg == Some(next) {
                let (_, m) = self.queue.pop_first().expect("a message is due");
                let link_ok = self.connected(&m.from, &m.to);
                if link_ok && self.nodes[&m.to].incarnation == m.incarnation {
                    self.delivered += 1;
                    self.input(
                        &m.to.clone(),
                        Input::Message {
                            from: m.from,
                            msg: m.msg,
                        },
                    );
                }
            } else if let Some((_, addr)) = next_tick {
                self.input(&addr, Input::Tick);
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs for `ms` milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now.plus_ms(ms));
    }

    /// Runs until `cond` holds (checked after every event) or `ms` pass; true if it held.
    pub fn run_until_cond(&mut self, ms: u64, mut cond: impl FnMut(&Network) -> bool) -> bool {
        let deadline = self.now.plus_ms(ms);
        while self.now < deadline {
            if cond(self) {
                return true;
            }
            let step = self.now.plus_ms(1).min(deadline);
            self.run_until(step);
        }
        cond(self)
    }

    /// Runs until a master exists and every running site follows it with the same log end.
    pub fn settle(&mut self, ms: u64) -> bool {
        self.run_until_cond(ms, |net| net.quiescent())
    }

    /// True if one live master exists and every running site follows it at its log end
    /// (sites that stopped for good, such as removed ones, are left out).
    pub fn quiescent(&self) -> bool {
        let Some(master) = self.master() else {
            return false;
        };
        let m = self.site(&master).expect("master is up");
        m.membership_changes_in_flight() == 0
            && self
                .live_sites()
                .all(|s| s.master() == Some(&master) && s.last() == m.last() && s.gen() == m.gen())
    }

    /// Running sites that have not stopped for good, leaving out stranded joiners: sites that
    /// are not present members and whose helper is gone or not a present member itself (they
    /// retry forever, as Berkeley DB's do).
    pub fn live_sites(&self) -> impl Iterator<Item = &Site<MemStorage>> {
        self.nodes
            .values()
            .filter_map(|n| n.site.as_ref())
            .filter(|s| s.dead().is_none() && !self.stranded(s))
    }

    fn stranded(&self, site: &Site<MemStorage>) -> bool {
        use crate::log::MemberState;
        let state = |s: &Site<MemStorage>| s.db().members().get(s.addr()).map(|m| m.state);
        let never_joined = matches!(state(site), None | Some(MemberState::Adding));
        let helper_alive = |h: &SiteAddr| {
            self.site(h)
                .is_some_and(|h| h.dead().is_none() && state(h) == Some(MemberState::Present))
        };
        never_joined
            && site.config().sites.is_empty()
            && !site.config().group_creator
            && !site.config().helper.as_ref().is_some_and(helper_alive)
    }

    /// Live sites whose membership database differs from the master's.
    pub fn membership_divergence(&self) -> Vec<String> {
        let Some(master) = self.master() else {
            return vec!["no master".into()];
        };
        let expected = self.site(&master).expect("up").db().members().clone();
        self.live_sites()
            .filter(|s| s.db().members() != &expected)
            .map(|s| {
                format!(
                    "{}: membership {:?} differs from the master's {:?}",
                    s.addr(),
                    s.db().members().keys().collect::<Vec<_>>(),
                    expected.keys().collect::<Vec<_>>()
                )
            })
            .collect()
    }

    /// The log of a site (running or not): every record after its snapshot.
    pub fn log_of(&mut self, addr: &SiteAddr) -> Vec<LogRecord> {
        let node = self.nodes.get_mut(addr).expect("known site");
        let disk: &mut MemStorage = match (&mut node.site, &mut node.disk) {
            (Some(site), _) => site.storage(),
            (None, Some(disk)) => disk,
            (None, None) => unreachable!("a site is either running or has its disk"),
        };
        let first = disk.first_lsn();
        storage::read_to_end(disk, first).expect("memory storage reads")
    }

    /// Checks the rules that must hold once the network is quiet: every running site's log is
    /// a prefix of the master's, and its database is the replay of its log. Returns violations.
    pub fn check_quiescent_invariants(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(master) = self.master() else {
            return vec!["no master".into()];
        };
        let master_log = self.log_of(&master);
        let master_first = master_log.first().map_or(Lsn::MAX, |r| r.lsn);
        // Removed sites and stranded joiners are not in the group: their logs need not follow.
        let live: BTreeSet<SiteAddr> = self.live_sites().map(|s| s.addr().clone()).collect();
        for addr in self.addrs() {
            let Some(site) = self.nodes.get_mut(&addr).and_then(|n| n.site.as_mut()) else {
                continue;
            };
            let stopped = !live.contains(&addr);
            let replayed = storage::replay(site.storage()).expect("memory storage replays");
            if &replayed.db != site.db() {
                out.push(format!(
                    "{addr}: database differs from the replay of its log"
                ));
            }
            if addr == master || stopped {
                continue;
            }
            for record in self.log_of(&addr) {
                if record.lsn < master_first {
                    continue; // archived on the master; covered by the snapshot
                }
                let i = (record.lsn - master_first) as usize;
                if master_log.get(i) != Some(&record) {
                    out.push(format!(
                        "{addr}: record {} is not in the master's log ({master})",
                        record.pos()
                    ));
                    break;
                }
            }
        }
        out
    }

    /// Every commit reported `Committed` that is missing from `addr`'s log (or snapshot).
    pub fn lost_commits(&mut self, addr: &SiteAddr) -> Vec<LogRecord> {
        let log = self.log_of(addr);
        let site = self.site(addr).expect("checked site is up");
        let snapshot_end = site.stats().first_lsn.saturating_sub(1);
        let history = site.history().clone();
        let last = site.last().lsn;
        self.requests
            .values()
            .filter(|c| matches!(c.result, Some(Ok(Reply::Committed { .. }))))
            .filter_map(|c| c.record.clone())
            .filter(|r| {
                if r.lsn <= snapshot_end {
                    // Archived: the record is there if the history says the same generation.
                    history.gen_at(r.lsn, last) != Some(r.gen)
                } else {
                    !log.iter().any(|l| l == r)
                }
            })
            .collect()
    }
}

fn pairs(addrs: &[SiteAddr]) -> impl Iterator<Item = (SiteAddr, SiteAddr)> + '_ {
    addrs
        .iter()
        .enumerate()
        .flat_map(move |(i, a)| addrs[i + 1..].iter().map(move |b| (a.clone(), b.clone())))
}
