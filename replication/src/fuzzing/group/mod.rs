//! A group of three sites driven by an arbitrary sequence of inputs: time passing, messages
//! delivered, dropped, duplicated, reordered or forged, connections cut and restored, requests,
//! crashes (with torn writes and bit rot) and restarts.
//!
//! Where the in-memory network of [`crate::testkit`] decides what happens when, here the input
//! decides everything, so a fuzzer can steer the sites into corners no seeded schedule reaches.
//! After every step of every site the local rules are checked:
//!
//! 1. Nothing panics (the site also asserts its own invariants on every step).
//! 2. The generation never goes backwards, not even across a crash and restart.
//! 3. Records are applied in order: the applied LSN moves by exactly one per record appended,
//!    the records appended are consecutive, intact and never of a generation below the log's
//!    end or above the site's; it only moves back through a rollback or an internal
//!    initialisation that the site reports as such (`RolledBack` after `WouldRollback`, or
//!    `InitDone`).
//! 4. No write is accepted as a client: a commit asked of a site that is not master is refused
//!    with `NotMaster` in the same step and appends nothing; a client appends only records a
//!    `Log` message brought; `Committed` answers only commits asked of a master, once each.
//! 5. A site that stopped (storage failure, removal) does nothing more but answer `HandleDead`.
//! 6. When no input forged a message, at most one site is master of any generation.
//! 7. A client changes its log (appends, rolls back, initialises) only on a message of the
//!    master it follows, sent in the generation it follows it in.
//! 8. When no input forged a message, a rollback or an initialisation never takes a record
//!    the master holds.
//! 9. A tick before the site's deadline changes nothing and sends nothing.
//! 10. A message the site cannot act on (a heartbeat below its term, a vote for a round it is
//!     not standing in, records, a history, a snapshot or a request to take over from a site
//!     other than the master it follows, a damaged record that would continue its log, a
//!     history that cannot describe the log it comes with; an ack, a request for records or for
//!     the history that reaches a site that is not master, or is not for its generation, or is
//!     for records past its log's end) is counted as ignored.
//! 11. A client asks only for records it lacks (or, its own log archived, for the master's
//!     snapshot), 12. and, with nothing forged, only for records its master holds.
//! 13. A vote answers a request for one; the only vote nobody asked for points a site that is
//!     no longer a member to the master.
//! 14. A joiner asks again only once its last ask could have been answered, if it was not.
//! 15. A candidate asks a site twice in one round only after that site refused it naming a
//!     master (it has lost that master if it stands), and only once per such refusal.
//! 16. A site asks for a history (`SyncRequest`) only of the master it follows, of a site it
//!     does not count as a member, or, while it does not count itself in the group, of the group.
//! 17. A site votes at most once per election generation (for itself or for one candidate),
//!     across crashes and restarts.
//! 18. A round is reported failed only with fewer votes than it needed, and counting every
//!     vote a site of its group granted it.
//! 19. The real round a pre-vote leads to goes above every term the pre-voters reported.
//! 20. The counters add up: `commits` grows by the records a master commits, `acks_received` by
//!     each ack a master takes.
//! 21. A site that stops being master, or stops, answers at once what it has not answered.
//! 22. A master sends the site it removes the record that removes it.
//! 23. A switchover hands over only with no commit in flight, to a site holding the whole log.
//! 24. An archive keeps the records it was asked to keep and folds exactly the others into the
//!     snapshot.
//! 25. With nothing forged, a commit is answered `Committed` only once its ack policy is met by
//!     the acks its master took, counting the group as it was through the step: members whose
//!     removal has begun still count until it is settled.
//! 26. With nothing forged, a master begins a change of who is in the group (records a site
//!     `Adding` or `Removing`) only once a majority of its voters holds its log through the
//!     last change of who votes, or through its generation's first record if that is later.
//!
//! At the end, each running site's database must equal the replay of its log.
//!
//! With `GROUP_DEBUG` set in the environment, every input and output is printed to stderr.

mod forge;
mod script;

pub use forge::build;
pub use script::*;

use crate::codec;
use crate::log::{GenHistory, LogRecord, MemberState, RecordBody, Txn};
use crate::site::{
    AckPolicy, Config, Event, Input, Output, Reply, Request, RequestError, RequestId, RoleKind,
    Site,
};
use crate::storage::{self, MemStorage, Storage};
use crate::types::{Gen, LogPos, Lsn, SiteAddr, Time};
use crate::wire::{JoinResult, Message};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Sites in the group.
pub const SITES: usize = 3;
/// Inputs before the rest of a script is ignored, so every input runs in bounded time.
pub const MAX_OPS: usize = 256;
/// Messages held in flight; sends beyond it are lost (as on a congested link).
pub const MAX_IN_FLIGHT: usize = 128;
/// Largest step of time one input makes.
pub const MAX_ADVANCE_MS: u64 = 4_000;
/// Rounds of delivery one [`GroupOp::Settle`] makes at most.
pub const MAX_SETTLE_ROUNDS: usize = 8;

/// Timers short enough that a few inputs reach every timeout.
fn fast(cfg: &mut Config) {
    let t = &mut cfg.timeouts;
    t.ack_ms = 300;
    t.heartbeat_interval_ms = 100;
    t.heartbeat_timeout_ms = 400;
    t.election_timeout_ms = 400;
    t.election_jitter_ms = 200;
    t.vote_collect_ms = 50;
    t.request_retry_ms = 150;
    t.step_down_ms = 1_000;
    t.join_retry_ms = 400;
}

/// The configurations of the three sites for `setup`.
pub fn configs(setup: &Setup) -> Vec<Config> {
    let all: Vec<SiteAddr> = (0..SITES).map(site_addr).collect();
    (0..SITES)
        .map(|i| {
            let mut cfg = match &setup.start {
                Start::StaticList { legacy } => {
                    let mut cfg = Config::new(site_addr(i), all.clone());
                    if legacy[i] {
                        cfg.protocol_version = 1;
                    }
                    cfg
                }
                Start::CreatorAndJoiners { .. } if i == 0 => Config::group_creator(site_addr(0)),
                Start::CreatorAndJoiners { helpers } => {
                    let helper = usize::from(helpers[i - 1]) % SITES;
                    let helper = if helper == i { 0 } else { helper };
                    Config::joining(site_addr(i), site_addr(helper))
                }
            };
            cfg.priority = u32::from(setup.priorities[i] % 3);
            cfg.ack_policy = AckPolicy::ALL[usize::from(setup.ack_policy) % AckPolicy::ALL.len()];
            cfg.two_site_strict = !setup.lenient_two_site;
            cfg.log_batch_records = 4;
            fast(&mut cfg);
            cfg
        })
        .collect()
}

/// Whether `history` can describe a log ending at `last` (the rules' own statement, apart from
/// the engine's `GenHistory::is_well_formed`): each generation starts at a later LSN than the
/// one before and in a later generation, within the log, and the last one is the end's.
fn describes(history: &GenHistory, last: LogPos) -> bool {
    let starts = history.starts();
    let Some(&(final_gen, ..)) = starts.last() else {
        return last == LogPos::default();
    };
    let mut prev: Option<(Gen, Lsn)> = None;
    for &(gen, lsn, _) in starts {
        if lsn == 0 || lsn > last.lsn || prev.is_some_and(|(g, l)| gen <= g || lsn <= l) {
            return false;
        }
        prev = Some((gen, lsn));
    }
    final_gen == last.gen
}

/// The sites a master judges its ordinary commits by (rule 25), read from the site's own state:
/// its members present or being removed (a removal counts only once settled), or its static
/// list.
fn commit_group(site: &Site<MemStorage>) -> BTreeSet<SiteAddr> {
    members_in(site, &[MemberState::Present, MemberState::Removing])
}

/// The sites whose votes a site counts (rule 26): its `Present` members, or its static list.
fn voters(site: &Site<MemStorage>) -> BTreeSet<SiteAddr> {
    members_in(site, &[MemberState::Present])
}

/// A site's members in one of `states`; its static list in a group without a membership
/// database (legacy, or not yet created).
fn members_in(site: &Site<MemStorage>, states: &[MemberState]) -> BTreeSet<SiteAddr> {
    let cfg = site.config();
    let members = site.db().members();
    if cfg.protocol_version < 2 || members.is_empty() {
        return cfg.sites.iter().cloned().collect();
    }
    members
        .iter()
        .filter(|(_, m)| states.contains(&m.state))
        .map(|(addr, _)| addr.clone())
        .collect()
}

/// What the checks remember of a site between steps.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    gen: Gen,
    last: LogPos,
    appended: u64,
}

struct Slot {
    cfg: Config,
    site: Option<Site<MemStorage>>,
    disk: Option<MemStorage>,
    seen: Seen,
    /// Highest generation ever seen at this site, across restarts.
    gen_floor: Gen,
    /// Opened this many times (seeds each opening differently).
    opened: u64,
    /// Opened and not yet stepped: the first step also hands out what opening said.
    just_opened: bool,
    /// When this opening of the site last asked to join, if it has.
    asked_to_join: Option<Time>,
    /// The round this site last stood in, as its vote requests show it.
    round: Option<Round>,
    /// Whom this site voted for in each election generation, across restarts.
    votes: BTreeMap<Gen, SiteAddr>,
    /// Its disk rotted at some point: synced records it acknowledged may be gone.
    rotted: bool,
    /// The priority each site last gave in a message this opening of the site took (a site not
    /// yet a member in its own eyes gives 0): what the site judges peers electable by (rule 25).
    heard_priority: BTreeMap<SiteAddr, u32>,
}

/// A round of an election, as rule 15 follows it from the candidate's messages.
struct Round {
    /// Its election generation, and whether it is a pre-vote.
    key: (Gen, bool),
    /// Sites asked in it.
    asked: BTreeSet<SiteAddr>,
    /// Sites that refused it naming a master, and have not been asked again since.
    refused_naming_master: BTreeSet<SiteAddr>,
    /// The highest term its voters reported.
    max_term: Gen,
    /// Sites of the candidate's group that granted it their vote.
    granted: BTreeSet<SiteAddr>,
}

struct Envelope {
    from: SiteAddr,
    to: usize,
    msg: Message,
}

/// A request the harness made, to check its answers.
struct Asked {
    site: usize,
    commit: bool,
    as_master: bool,
    last_before: Lsn,
    answered: bool,
    /// The site crashed before answering: no answer will come.
    lost: bool,
}

/// The group under test.
pub struct Group {
    now: Time,
    slots: Vec<Slot>,
    /// `cut[a][b]`: the link between sites `a` and `b` is down.
    cut: [[bool; SITES]; SITES],
    in_flight: VecDeque<Envelope>,
    asked: BTreeMap<RequestId, Asked>,
    next_request: u64,
    seed: u64,
    /// Generation -> its master, while no input forged a message.
    masters: Option<BTreeMap<Gen, usize>>,
    /// An input forged a message (a forged ack would count for the site it names).
    forged_any: bool,
    /// The acks each master took, by its slot and generation: the highest LSN from each site
    /// (rule 25).
    acks_taken: BTreeMap<(usize, Gen), BTreeMap<SiteAddr, Lsn>>,
    summary: Summary,
    /// `GROUP_DEBUG` is set: print every input and output (read once, it is slow to look up).
    debug: bool,
}

/// What a run went through, so tests can see which paths their inputs reach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Times a site became master.
    pub became_master: u64,
    /// Commits answered `Committed`.
    pub committed: u64,
    /// Commits refused with `NotMaster`.
    pub refused_not_master: u64,
    /// Requests that failed otherwise (`PermFailed`, `MasterLost`, ...).
    pub other_errors: u64,
    /// Rollbacks reported.
    pub rollbacks: u64,
    /// Internal initialisations reported.
    pub inits: u64,
    /// Sites that stopped (storage failure or removal).
    pub stopped: u64,
    /// Highest generation reached.
    pub max_gen: Gen,
}

/// Runs a script against a fresh group and checks every property; panics on a violation.
pub fn run_script(script: &GroupScript) -> Summary {
    let mut group = Group::new(&script.setup);
    for op in script.ops.iter().take(MAX_OPS) {
        group.apply(op);
    }
    group.check_end();
    group.summary
}

impl Group {
    /// A group started per `setup`, every link up.
    pub fn new(setup: &Setup) -> Group {
        let slots = configs(setup)
            .into_iter()
            .map(|cfg| Slot {
                cfg,
                site: None,
                disk: Some(MemStorage::new()),
                seen: Seen {
                    gen: 0,
                    last: LogPos::default(),
                    appended: 0,
                },
                gen_floor: 0,
                opened: 0,
                just_opened: false,
                asked_to_join: None,
                round: None,
                votes: BTreeMap::new(),
                rotted: false,
                heard_priority: BTreeMap::new(),
            })
            .collect();
        let mut group = Group {
            now: Time(0),
            slots,
            cut: [[false; SITES]; SITES],
            in_flight: VecDeque::new(),
            asked: BTreeMap::new(),
            next_request: 1,
            seed: setup.seed,
            // A lenient two-site group may elect a lone site on purpose (availability over
            // safety): two masters of a generation are then allowed, and not checked.
            masters: (!setup.lenient_two_site).then(BTreeMap::new),
            forged_any: false,
            acks_taken: BTreeMap::new(),
            summary: Summary::default(),
            debug: std::env::var_os("GROUP_DEBUG").is_some(),
        };
        for i in 0..SITES {
            group.start(i);
        }
        group
    }

    /// Applies one input.
    pub fn apply(&mut self, op: &GroupOp) {
        match op {
            GroupOp::Tick { site, ms } => {
                self.now = self.now.plus_ms(u64::from(*ms) % (MAX_ADVANCE_MS + 1));
                self.step(pick(*site), Input::Tick);
            }
            GroupOp::Wait { site } => {
                let i = pick(*site);
                let due = self.slots[i].site.as_ref().and_then(|s| s.next_deadline());
                if let Some(due) = due {
                    self.now = self.now.max(due.min(self.now.plus_ms(MAX_ADVANCE_MS)));
                }
                self.step(i, Input::Tick);
            }
            GroupOp::Deliver { pick } => {
                if let Some(env) = self.take(*pick) {
                    self.deliver(env);
                }
            }
            GroupOp::DeliverAll => {
                for _ in 0..self.in_flight.len() {
                    if let Some(env) = self.in_flight.pop_front() {
                        self.deliver(env);
                    }
                }
            }
            GroupOp::Settle => {
                for _ in 0..MAX_SETTLE_ROUNDS {
                    if self.in_flight.is_empty() {
                        break;
                    }
                    self.apply(&GroupOp::DeliverAll);
                }
            }
            GroupOp::Drop { pick } => {
                self.take(*pick);
            }
            GroupOp::Duplicate { pick } => {
                if let Some(env) = self.peek(*pick) {
                    self.deliver(env);
                }
            }
            GroupOp::Mutate { pick, change } => {
                if let Some(mut env) = self.peek(*pick) {
                    self.forged();
                    let base = self.base(env.to);
                    forge::mutate(&mut env.from, &mut env.msg, change, base);
                    self.deliver(env);
                }
            }
            GroupOp::Inject { to, from, msg } => {
                self.forged();
                let to = pick(*to);
                let msg = build(msg, self.base(to));
                self.deliver(Envelope {
                    from: addr(*from),
                    to,
                    msg,
                });
            }
            GroupOp::Raw { to, from, bytes } => {
                if let Ok(msg) = codec::decode::<Message>(bytes, 1 << 16) {
                    self.forged();
                    self.deliver(Envelope {
                        from: addr(*from),
                        to: pick(*to),
                        msg,
                    });
                }
            }
            GroupOp::Connect { a, b } => self.set_link(pick(*a), pick(*b), true),
            GroupOp::Disconnect { a, b } => self.set_link(pick(*a), pick(*b), false),
            GroupOp::RequestAtMaster { request } => {
                let master = (0..SITES)
                    .filter_map(|i| Some((self.slots[i].site.as_ref()?, i)))
                    .filter(|(s, _)| s.is_master())
                    .max_by_key(|(s, _)| s.gen())
                    .map_or(0, |(_, i)| i);
                self.request(master, request);
            }
            GroupOp::Request { site, request } => self.request(pick(*site), request),
            GroupOp::Crash { site, tear } => self.crash(pick(*site), *tear),
            GroupOp::Rot { site, back } => {
                let i = pick(*site);
                if let Some(s) = self.slots[i].site.as_mut() {
                    let last = s.last().lsn;
                    s.storage().corrupt(last.saturating_sub(u64::from(*back)));
                    self.slots[i].rotted = true;
                }
            }
            GroupOp::Restart { site } => {
                let i = pick(*site);
                if self.slots[i].site.is_none() {
                    self.start(i);
                }
            }
        }
    }

    /// A message was forged: elections may now legitimately produce two masters of a
    /// generation (the protocol trusts authenticated peers), so that check stops.
    fn forged(&mut self) {
        self.masters = None;
        self.forged_any = true;
    }

    /// What a forged message is built next to: the receiver's generation and log end.
    fn base(&self, to: usize) -> (Gen, LogPos) {
        match &self.slots[to].site {
            Some(s) => (s.gen(), s.last()),
            None => (self.slots[to].gen_floor, self.slots[to].seen.last),
        }
    }

    fn take(&mut self, pick: u8) -> Option<Envelope> {
        let len = self.in_flight.len();
        (len > 0).then(|| self.in_flight.remove(usize::from(pick) % len))?
    }

    fn peek(&self, pick: u8) -> Option<Envelope> {
        let len = self.in_flight.len();
        (len > 0).then(|| {
            let env = &self.in_flight[usize::from(pick) % len];
            Envelope {
                from: env.from.clone(),
                to: env.to,
                msg: env.msg.clone(),
            }
        })
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        a != b && !self.cut[a][b] && self.slots[a].site.is_some() && self.slots[b].site.is_some()
    }

    fn deliver(&mut self, env: Envelope) {
        // A message from a site of the group travels on its link; forged strangers need none.
        let from_site = (0..SITES).find(|&i| site_addr(i) == env.from);
        if from_site.is_some_and(|f| !self.linked(f, env.to)) {
            return;
        }
        self.step(
            env.to,
            Input::Message {
                from: env.from,
                msg: env.msg,
            },
        );
    }

    fn version(&self, a: usize, b: usize) -> u8 {
        self.slots[a]
            .cfg
            .protocol_version
            .min(self.slots[b].cfg.protocol_version)
    }

    fn set_link(&mut self, a: usize, b: usize, up: bool) {
        if a == b {
            return;
        }
        let was = self.linked(a, b);
        self.cut[a][b] = !up;
        self.cut[b][a] = !up;
        let now = self.linked(a, b);
        if was != now {
            if !now {
                // The connection breaks: what it carried is lost.
                let (x, y) = (site_addr(a), site_addr(b));
                self.in_flight
                    .retain(|env| !(env.to == a && env.from == y || env.to == b && env.from == x));
            }
            self.link_changed(a, b, now);
        }
    }

    fn link_changed(&mut self, a: usize, b: usize, up: bool) {
        let version = self.version(a, b);
        for (x, y) in [(a, b), (b, a)] {
            let input = if up {
                Input::PeerConnected {
                    addr: site_addr(y),
                    version,
                }
            } else {
                Input::PeerDisconnected(site_addr(y))
            };
            self.step(x, input);
        }
    }

    fn start(&mut self, i: usize) {
        let seed = self.seed.wrapping_mul(31).wrapping_add(i as u64 * 1_000);
        let slot = &mut self.slots[i];
        let Some(mut disk) = slot.disk.take() else {
            return;
        };
        // What opening a file does to a torn tail.
        disk.recover();
        slot.opened += 1;
        let seed = seed.wrapping_add(slot.opened);
        let spare = disk.clone();
        match Site::open(slot.cfg.clone(), disk, seed, self.now) {
            Ok(site) => {
                assert!(
                    site.gen() >= slot.gen_floor,
                    "{}: reopened at generation {}, below the {} it had seen",
                    site.addr(),
                    site.gen(),
                    slot.gen_floor
                );
                slot.seen = Seen {
                    gen: site.gen(),
                    last: site.last(),
                    appended: site.stats().records_appended,
                };
                slot.site = Some(site);
                slot.just_opened = true;
                slot.asked_to_join = None;
                slot.heard_priority.clear();
            }
            Err(_) => {
                // Damage the core refuses to open (a rotten record it must replay): stays down.
                slot.disk = Some(spare);
                return;
            }
        }
        self.step(i, Input::Tick);
        for j in 0..SITES {
            if self.linked(i, j) {
                self.link_changed(i, j, true);
            }
        }
    }

    fn crash(&mut self, i: usize, tear: bool) {
        let Some(site) = self.slots[i].site.take() else {
            return;
        };
        let mut disk = site.into_storage();
        if tear {
            disk.crash_tearing();
        } else {
            disk.crash();
        }
        self.slots[i].disk = Some(disk);
        // What it was asked dies with it: no answer can come (the application sees the
        // connection to it break).
        for asked in self.asked.values_mut().filter(|a| a.site == i) {
            asked.lost = true;
        }
        // Its connections break: what they carried is lost, both ways.
        let me = site_addr(i);
        self.in_flight.retain(|env| env.to != i && env.from != me);
        for j in 0..SITES {
            if j != i && !self.cut[i][j] && self.slots[j].site.is_some() {
                self.step(j, Input::PeerDisconnected(site_addr(i)));
            }
        }
    }

    fn request(&mut self, i: usize, spec: &RequestSpec) {
        if let RequestSpec::Commits { key, more } = *spec {
            return self.commit_batch(i, key, more);
        }
        let request = match *spec {
            RequestSpec::Commit { key, value } => Request::Commit(Txn::put([key], [value])),
            RequestSpec::StepDown { to } => Request::StepDown { to: addr(to) },
            RequestSpec::RemoveSite { site } => Request::RemoveSite { site: addr(site) },
            RequestSpec::Archive { keep } => Request::Archive {
                keep_records: u64::from(keep),
            },
            RequestSpec::Commits { .. } => unreachable!("a batch is stepped whole"),
        };
        let Some(site) = self.slots[i].site.as_ref() else {
            return;
        };
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.asked.insert(
            id,
            Asked {
                site: i,
                commit: matches!(request, Request::Commit(_)),
                as_master: site.is_master() && site.dead().is_none(),
                last_before: site.last().lsn,
                answered: false,
                lost: false,
            },
        );
        self.step(i, Input::Request { id, request });
    }

    /// Several commits in one step, as a driver hands over the commits that queued while the
    /// site was busy.
    fn commit_batch(&mut self, i: usize, key: u8, more: u8) {
        let Some(site) = self.slots[i].site.as_ref() else {
            return;
        };
        let (as_master, last_before) = (site.is_master() && site.dead().is_none(), site.last().lsn);
        let mut batch = Vec::new();
        for k in 0..=more % 4 {
            let id = RequestId(self.next_request);
            self.next_request += 1;
            let asked = Asked {
                site: i,
                commit: true,
                as_master,
                last_before,
                answered: false,
                lost: false,
            };
            self.asked.insert(id, asked);
            batch.push((id, Txn::put([key.wrapping_add(k)], [key])));
        }
        self.step(i, Input::Commits(batch));
    }

    /// Feeds one input to site `i` (if it runs), checks the local rules, routes the outputs.
    fn step(&mut self, i: usize, input: Input) {
        let now = self.now;
        let before = self.slots[i].seen.clone();
        let just_opened = std::mem::take(&mut self.slots[i].just_opened);
        let Some(site) = self.slots[i].site.as_mut() else {
            return;
        };
        let role_before = site.role();
        let dead_before = site.dead().is_some();
        let log_msg = match &input {
            Input::Message {
                msg: Message::Log { records, .. },
                ..
            } => Some(records.clone()),
            _ => None,
        };
        let followed_before = site.followed().map(|(m, g)| (m.clone(), g));
        let (gen_before, term_before) = (site.gen(), site.term());
        let ignored_before = site.stats().messages_ignored;
        let (commits_before, acks_before) = (site.stats().commits, site.stats().acks_received);
        // 24. What an archive should fold into the snapshot: the snapshot before, and the log.
        let archive_base = match &input {
            Input::Request {
                request: Request::Archive { keep_records },
                ..
            } if !dead_before => {
                let first = site.storage().first_lsn();
                // The log is to start just after all but the last `keep_records`, unless it
                // already starts later.
                let want = (site.last().lsn.saturating_sub(*keep_records) + 1).max(first);
                let snapshot = site.storage().read_snapshot().ok();
                let records = storage::read_to_end(site.storage(), first).ok();
                snapshot.zip(records).map(|(s, r)| (first, want, s, r))
            }
            _ => None,
        };
        // 20. An ack the master takes: for its generation, for records it has (a stopped site
        //     takes nothing).
        let ack_taken = !dead_before
            && matches!(
                &input,
                Input::Message { msg: Message::Ack { gen, lsn, .. }, .. }
                    if role_before == RoleKind::Master && *gen == gen_before && *lsn <= site.last().lsn
            );
        // 25. The ack taken, and the group ordinary commits are judged by, before the step.
        let ack_from = match &input {
            Input::Message {
                from,
                msg: Message::Ack { lsn, .. },
            } if ack_taken => Some((from.clone(), *lsn)),
            _ => None,
        };
        let commit_group_before = commit_group(site);
        let voters_before = voters(site);
        let heard_priority = match &input {
            Input::Message { from, msg } => match msg {
                Message::Ack { priority, .. }
                | Message::SyncRequest { priority, .. }
                | Message::VoteRequest { priority, .. }
                | Message::Vote { priority, .. }
                    if !dead_before
                        && *from != *site.addr()
                        && msg.min_version() <= site.config().protocol_version =>
                {
                    Some((from.clone(), *priority))
                }
                _ => None,
            },
            _ => None,
        };
        let peers_before = site.peers();
        let standing_before = site.standing_in();
        let counted_before = site.counts_in_group();
        let group_before = site.group();
        let relaying = matches!(
            &input,
            Input::Message {
                msg: Message::JoinRequest { .. },
                ..
            }
        );
        let accepted = matches!(
            &input,
            Input::Message {
                msg: Message::JoinReply {
                    site,
                    result: JoinResult::Accepted { .. },
                },
                ..
            } if *site == site_addr(i)
        );
        // A vote for the round the site stands in: its term (19), whether a site of its group
        // granted it (18), and whether it refused naming a master (15).
        let (voter_term, granted_by, refused_naming_master) = match &input {
            Input::Message {
                from,
                msg:
                    Message::Vote {
                        egen,
                        pre,
                        term,
                        granted,
                        master,
                        ..
                    },
            } if standing_before == Some((*egen, *pre)) => {
                let voter = *granted && *from != site_addr(i) && group_before.contains(from);
                let refused = !*granted && master.is_some();
                (
                    Some(*term),
                    voter.then(|| from.clone()),
                    refused.then(|| from.clone()),
                )
            }
            _ => (None, None, None),
        };
        // 13. Who asked this site for a vote in this step, if anyone.
        let vote_asker = match &input {
            Input::Message {
                from,
                msg: Message::VoteRequest { .. },
            } => Some(from.clone()),
            _ => None,
        };
        // 9. A tick before the site asked for one.
        let early_tick = !just_opened
            && matches!(input, Input::Tick)
            && site.next_deadline().is_some_and(|due| now < due);
        // 10. A message the site cannot act on, by what it knew before the step.
        let unusable = match &input {
            Input::Message { from, msg } => match msg {
                Message::Heartbeat { gen, .. } => *gen < term_before,
                Message::Vote { gen, egen, pre, .. } => {
                    site.standing_in() != Some((*egen, *pre)) && *gen <= gen_before
                }
                // ... or a history that cannot describe the log it comes with.
                Message::SyncInfo {
                    gen, history, last, ..
                } => {
                    followed_before.as_ref() != Some(&(from.clone(), *gen))
                        || !describes(history, *last)
                }
                Message::InitSnapshot { gen, snapshot } => {
                    followed_before.as_ref() != Some(&(from.clone(), *gen))
                        || !describes(&snapshot.history, snapshot.pos())
                }
                Message::TakeOver { gen } => {
                    followed_before.as_ref() != Some(&(from.clone(), *gen))
                }
                // ... an ack that is not for this master's generation, or for records it does
                // not have (news of a later generation is acted on: the master steps down) ...
                Message::Ack { gen, lsn, .. } => {
                    *gen <= gen_before
                        && (role_before != RoleKind::Master
                            || *gen < gen_before
                            || *lsn > site.last().lsn)
                }
                // ... a request for records or for the history, made of a site that is not
                // master, or for another generation, or for records past its log's end.
                Message::LogRequest { gen, from: lsn } => {
                    role_before != RoleKind::Master || *gen != gen_before || *lsn > site.last().lsn
                }
                Message::SyncRequest { gen, .. } => {
                    role_before != RoleKind::Master || *gen > gen_before
                }
                // ... or records whose first new one, the one that would continue the log, is
                // damaged (caught by its checksum, never applied).
                Message::Log { gen, records } => {
                    let last = site.last().lsn;
                    followed_before.as_ref() != Some(&(from.clone(), *gen))
                        || records
                            .iter()
                            .find(|r| r.lsn > last)
                            .is_some_and(|r| r.lsn == last + 1 && !r.is_intact())
                }
                _ => false,
            },
            _ => false,
        };
        // Who sent a message that may change a client's log, and in which generation.
        let log_changer = match &input {
            Input::Message {
                from,
                msg:
                    Message::Log { gen, .. }
                    | Message::SyncInfo { gen, .. }
                    | Message::InitSnapshot { gen, .. },
            } => Some((from.clone(), *gen)),
            _ => None,
        };
        let commit_ids: Vec<RequestId> = match &input {
            Input::Request {
                id,
                request: Request::Commit(_),
            } => vec![*id],
            Input::Commits(batch) => batch.iter().map(|(id, _)| *id).collect(),
            _ => Vec::new(),
        };
        let debug = self.debug;
        if debug {
            eprintln!("{now} -> {}: {input:?}", site.addr());
        }
        let outputs = site.step_and_sync(now, input);
        if debug {
            for o in &outputs {
                eprintln!("      {o:?}");
            }
        }
        let addr = site.addr().clone();
        let after = Seen {
            gen: site.gen(),
            last: site.last(),
            appended: site.stats().records_appended,
        };
        let role_after = site.role();
        let first_lsn = site.storage().first_lsn();
        let commit_group_after = commit_group(site);

        // 5. A stopped site does nothing more.
        if dead_before {
            assert_eq!(
                after.last, before.last,
                "{addr}: a stopped site changed its log"
            );
            for output in &outputs {
                assert!(
                    matches!(
                        output,
                        Output::Reply {
                            result: Err(RequestError::HandleDead { .. }),
                            ..
                        }
                    ),
                    "{addr}: a stopped site output {output:?}"
                );
            }
        }

        // 2. Generations never go backwards.
        assert!(
            after.gen >= before.gen,
            "{addr}: generation went back from {} to {}",
            before.gen,
            after.gen
        );

        // 3. Records in order, moving back only through a reported rollback or init.
        let appended = after.appended - before.appended;
        let mut base = before.last;
        let mut would_rollback = None;
        for output in &outputs {
            match output {
                Output::Event(Event::WouldRollback { to, from }) => {
                    assert_eq!(*from, before.last, "{addr}: WouldRollback from elsewhere");
                    assert!(to.lsn < from.lsn, "{addr}: rollback that removes nothing");
                    would_rollback = Some(*to);
                }
                Output::Event(Event::RolledBack { to, txns }) => {
                    assert_eq!(
                        would_rollback,
                        Some(*to),
                        "{addr}: RolledBack to {to} without WouldRollback to it"
                    );
                    assert!(
                        txns.iter().all(|&l| l > to.lsn && l <= before.last.lsn),
                        "{addr}: rolled-back transactions {txns:?} outside {to}..{}",
                        before.last
                    );
                    base = *to;
                }
                Output::Event(Event::InitDone { at }) => base = *at,
                _ => {}
            }
        }
        assert!(
            after.last.lsn >= base.lsn,
            "{addr}: applied LSN went back from {} to {} with no rollback or init reported",
            base,
            after.last
        );
        let moved = after.last.lsn - base.lsn;
        if base == before.last {
            assert_eq!(
                moved, appended,
                "{addr}: applied LSN moved by {moved} for {appended} records appended"
            );
        } else {
            assert!(
                moved <= appended,
                "{addr}: applied LSN ran past its records"
            );
        }
        if moved > 0 {
            let site = self.slots[i].site.as_mut().expect("running");
            let from = (base.lsn + 1).max(first_lsn);
            let records = if from <= after.last.lsn {
                storage::read_to_end(site.storage(), from)
                    .unwrap_or_else(|e| panic!("{addr}: just appended records do not read: {e}"))
            } else {
                Vec::new()
            };
            assert_eq!(
                records.len() as u64,
                (after.last.lsn + 1).saturating_sub(from),
                "{addr}: the log does not hold the records it applied"
            );
            let mut prev = base;
            for r in &records {
                assert!(
                    r.is_intact(),
                    "{addr}: appended a damaged record {}",
                    r.pos()
                );
                // The first record read may follow an archived stretch, not `base`.
                let follows = r.lsn > from || from == base.lsn + 1;
                if follows {
                    assert_eq!(
                        r.lsn,
                        prev.lsn + 1,
                        "{addr}: record {} out of order",
                        r.pos()
                    );
                    assert!(
                        r.gen >= prev.gen,
                        "{addr}: record {} after generation {}",
                        r.pos(),
                        prev.gen
                    );
                }
                assert!(
                    r.gen <= after.gen,
                    "{addr}: record {} from the future",
                    r.pos()
                );
                prev = r.pos();
            }
            // 4. A client appends only what a master sent it.
            let as_client = role_before != RoleKind::Master && role_after != RoleKind::Master;
            if as_client && base == before.last {
                let brought = log_msg.unwrap_or_default();
                for r in &records {
                    assert!(
                        brought.contains(r),
                        "{addr}: appended {} as a client without a Log message bringing it",
                        r.pos()
                    );
                }
            }
        }

        // 7. A client changes its log only on the word of the master it follows: what it
        //    appends, rolls back or initialises from comes in a message of that master, sent in
        //    the generation the client follows it in.
        let rolled_back = outputs
            .iter()
            .any(|o| matches!(o, Output::Event(Event::RolledBack { .. })));
        let initialised = outputs
            .iter()
            .any(|o| matches!(o, Output::Event(Event::InitDone { .. })));
        let as_client = role_before == RoleKind::Client && role_after == RoleKind::Client;
        if as_client && (appended > 0 || rolled_back || initialised) {
            assert!(
                followed_before.is_some() && log_changer == followed_before,
                "{addr}: changed its log on a message from {log_changer:?} while following \
                 {followed_before:?}"
            );
        }
        // 8. With nothing forged, a rollback or an initialisation never takes a record the
        //    master holds: logs that agree on a record's LSN and generation agree on everything
        //    before it, so the client's last record, if the master holds it, shows the whole
        //    log was the master's.
        let init_dropped = outputs.iter().any(
            |o| matches!(o, Output::Event(Event::InitDone { at }) if at.lsn < before.last.lsn),
        );
        if let (true, Some(_), Some((master, _))) =
            (rolled_back || init_dropped, &self.masters, &log_changer)
        {
            if let Some(j) = (0..SITES).find(|&j| site_addr(j) == *master) {
                let last = before.last;
                let held = self.slots[j].site.as_mut().is_some_and(|m| {
                    last.lsn >= m.storage().first_lsn()
                        && storage::read_to_end(m.storage(), last.lsn)
                            .ok()
                            .and_then(|records| records.first().map(|r| r.pos()))
                            == Some(last)
                });
                assert!(
                    !held,
                    "{addr}: rolled back or initialised from {last}, a record its master {master} \
                     holds"
                );
            }
        }

        // 9. A tick the site did not ask for (a driver may tick early) changes nothing and
        //    sends nothing: a site that acted on one would repeat requests before their retry
        //    time, or end an election round early.
        if early_tick && !dead_before {
            assert!(
                outputs.is_empty() && role_after == role_before && after == before,
                "{addr}: a tick before its deadline did something: {outputs:?}"
            );
        }
        // 10. A message the site cannot act on is counted as ignored (operators read the
        //     counter to find a confused peer): a heartbeat of a generation below the one it
        //     voted or stood in, a vote for a round it is not standing in, records, a history, a
        //     snapshot or a request to take over from a site other than the master it follows in
        //     that generation, a damaged record, a history that cannot describe its log.
        let ignored = self.slots[i]
            .site
            .as_ref()
            .map_or(ignored_before, |s| s.stats().messages_ignored);
        if unusable && !dead_before {
            assert!(
                ignored > ignored_before,
                "{addr}: ignored a message it cannot act on without counting it"
            );
        }
        // 20. The counters an operator reads add up: `commits` grows by the records a master
        //     appends other than its generation's start (a client's appends are replication),
        //     `acks_received` by the one ack a master takes.
        if let Some(site) = self.slots[i].site.as_mut() {
            let stats = site.stats();
            let (commits, acks) = (
                stats.commits - commits_before,
                stats.acks_received - acks_before,
            );
            let mastering = role_before == RoleKind::Master || role_after == RoleKind::Master;
            let records = if mastering && after.last.lsn > before.last.lsn {
                let from = (before.last.lsn + 1).max(site.storage().first_lsn());
                storage::read_to_end(site.storage(), from).unwrap_or_default()
            } else {
                Vec::new()
            };
            let committed = records
                .iter()
                .filter(|r| !matches!(r.body, RecordBody::GenStart { .. }))
                .count() as u64;
            // 22. The site a master removes is sent the record that removes it, though it is
            //     no longer a member: it learns it was removed and can tell its application.
            for r in &records {
                if let RecordBody::Membership { site, member: None } = &r.body {
                    let told = outputs.iter().any(|o| {
                        matches!(o, Output::Send { to, msg: Message::Log { records, .. } }
                            if to == site && records.iter().any(|sent| sent.lsn == r.lsn))
                    });
                    assert!(
                        *site == addr || told,
                        "{addr}: removed {site} at {} without sending it the record",
                        r.pos()
                    );
                }
            }
            // 26. One change of who votes at a time: two stacked (a join not yet held by a
            //     majority, then a removal) let two sites count votes by groups that share no
            //     majority. The floor is the last change of who votes before the new record, or
            //     the generation's first record; its holders are the master and the sites whose
            //     acks it took in its generation.
            let begins_a_change = |r: &LogRecord| {
                matches!(&r.body, RecordBody::Membership { member: Some(m), .. }
                    if matches!(m.state, MemberState::Adding | MemberState::Removing))
            };
            if role_before == RoleKind::Master
                && !self.forged_any
                && records.iter().any(begins_a_change)
            {
                let first = site.storage().first_lsn();
                let log = storage::read_to_end(site.storage(), first).unwrap_or_default();
                // Judged only when the log still reaches back to the generation's start.
                let gen_start = log
                    .iter()
                    .find(|x| x.gen == gen_before)
                    .filter(|x| matches!(x.body, RecordBody::GenStart { .. }))
                    .map(|x| x.lsn);
                let acked = self.acks_taken.get(&(i, gen_before));
                for r in records.iter().filter(|r| begins_a_change(r)) {
                    let Some(gen_start) = gen_start else { break };
                    let floor = log
                        .iter()
                        .filter(|x| x.lsn < r.lsn && x.changes_voters())
                        .map(|x| x.lsn)
                        .fold(gen_start, Lsn::max);
                    let holding = voters_before
                        .iter()
                        .filter(|a| {
                            **a == addr
                                || acked.and_then(|t| t.get(*a)).is_some_and(|l| *l >= floor)
                        })
                        .count();
                    let n = voters_before.len();
                    let needed = if n == 2 && !site.config().two_site_strict {
                        1
                    } else {
                        n / 2 + 1
                    };
                    assert!(
                        holding >= needed,
                        "{addr}: began a membership change at {} with only {holding} of \
                         {n} voters holding the last change (LSN {floor}), {needed} needed",
                        r.pos()
                    );
                }
            }
            assert_eq!(
                commits, committed,
                "{addr}: counted {commits} commits for {committed} records committed"
            );
            assert_eq!(
                acks,
                u64::from(ack_taken),
                "{addr}: counted {acks} acks received where it took {}",
                u64::from(ack_taken)
            );
        }
        // 11. A client asks only for records it lacks: from just past its log's end or beyond
        //     (a request still outstanding), or the master's snapshot from 0, which only a site
        //     whose own log was archived needs (its divergence may lie inside its snapshot).
        if role_after == RoleKind::Client {
            for output in &outputs {
                if let Output::Send {
                    msg: Message::LogRequest { from, .. },
                    ..
                } = output
                {
                    assert!(
                        *from > after.last.lsn || *from == 0 && first_lsn > 1,
                        "{addr}: asked for records from {from} holding {} (log from {first_lsn})",
                        after.last
                    );
                }
            }
        }

        // 12. ... and, with nothing forged, only for records its master holds: the master it
        //     follows, while it runs as master of that generation, never loses a record of it.
        let honest = self.masters.is_some();
        if let (RoleKind::Client, Some((master, gen)), true) =
            (role_after, &followed_before, honest)
        {
            let holds = (0..SITES)
                .find(|&j| site_addr(j) == *master && j != i)
                .and_then(|j| self.slots[j].site.as_ref())
                .filter(|m| m.is_master() && m.gen() == *gen)
                .map(|m| m.last().lsn);
            for output in &outputs {
                if let (
                    Some(holds),
                    Output::Send {
                        to,
                        msg: Message::LogRequest { from, .. },
                    },
                ) = (holds, output)
                {
                    assert!(
                        to != master || *from == 0 || *from <= holds,
                        "{addr}: asked {master} for records from {from}, past its log's end {holds}"
                    );
                }
            }
        }
        // 13. A vote answers a request for it. The one vote nobody asked for is the refusal
        //     that points a site our database no longer lists to our master.
        for to in sent_to(&outputs, |m| matches!(m, Message::Vote { .. })) {
            assert!(
                vote_asker.as_ref() == Some(to) || !peers_before.contains(to),
                "{addr}: sent a vote to {to}, a member that did not ask for one"
            );
        }

        // 15. A candidate asks each site once per round. The one exception: a site that refused
        //     it for following a master, and then stands itself, has lost that master and may
        //     vote now; it is asked once more (the vote would otherwise wait for the next round).
        //     A step's requests for a round the site did not stand in before are the broadcast
        //     that opens it.
        let mut opened = None;
        for output in &outputs {
            let Output::Send {
                to,
                msg: Message::VoteRequest { egen, pre, .. },
            } = output
            else {
                continue;
            };
            let key = (*egen, *pre);
            let slot = &mut self.slots[i];
            let continuing = standing_before == Some(key)
                && opened.is_none()
                && slot.round.as_ref().is_some_and(|r| r.key == key);
            if !continuing && opened != Some(key) {
                opened = Some(key);
                // 19. A pre-vote tells the candidate how high its voters went: the real round
                //     goes above that, or votes they already cast would block it.
                if let (Some(pre_round), false) = (&slot.round, key.1) {
                    if standing_before == Some(pre_round.key) && pre_round.key.1 {
                        let heard = pre_round.max_term.max(voter_term.unwrap_or(0));
                        assert!(
                            key.0 > heard,
                            "{addr}: stood in generation {} after a pre-vote whose voters \
                             reported term {heard}",
                            key.0
                        );
                    }
                }
                slot.round = Some(Round {
                    key,
                    asked: BTreeSet::new(),
                    refused_naming_master: BTreeSet::new(),
                    max_term: 0,
                    granted: BTreeSet::new(),
                });
            }
            let round = slot.round.as_mut().expect("a round was just opened");
            if !round.asked.insert(to.clone()) {
                assert!(
                    continuing && round.refused_naming_master.remove(to),
                    "{addr}: asked {to} again in round {key:?} with no refusal naming a master \
                     since the last ask"
                );
            }
        }
        if let Some(round) = &mut self.slots[i].round {
            if Some(round.key) == standing_before {
                round.max_term = round.max_term.max(voter_term.unwrap_or(0));
                if let Some(from) = refused_naming_master {
                    round.refused_naming_master.insert(from);
                }
                if let Some(from) = granted_by {
                    round.granted.insert(from);
                }
            }
        }
        // 16. A history is asked of the master followed (after the step: taking a master on
        //     asks it at once), of a site the database does not list, before the step or after
        //     it (a vote named it as master: it answers `Removed` if our view is stale; the
        //     step may have dropped the site, as when its join failed, before the vote was
        //     read) or, while the site does not count itself in the group, of every member.
        let (followed_after, peers_after) = match &self.slots[i].site {
            Some(s) => (s.followed().map(|(m, _)| m.clone()), s.peers()),
            None => (None, Vec::new()),
        };
        for to in sent_to(&outputs, |m| matches!(m, Message::SyncRequest { .. })) {
            assert!(
                followed_after.as_ref() == Some(to)
                    || !peers_before.contains(to)
                    || !peers_after.contains(to)
                    || !counted_before,
                "{addr}: asked {to}, a member it does not follow, for its history"
            );
        }
        // 17. One vote per election generation, across crashes: the vote is durable before
        //     anyone hears of it. (Granting the same candidate again is the same vote.)
        // 18. A round fails only short of votes.
        for output in &outputs {
            match output {
                Output::Event(Event::Voted { candidate, egen }) => {
                    let votes = &mut self.slots[i].votes;
                    let first = votes.entry(*egen).or_insert_with(|| candidate.clone());
                    assert_eq!(
                        first, candidate,
                        "{addr}: voted twice in election generation {egen}"
                    );
                }
                Output::Event(Event::ElectionFailed {
                    egen,
                    votes,
                    needed,
                    pre,
                }) => {
                    assert!(
                        votes < needed,
                        "{addr}: reported a round failed holding {votes} of the {needed} votes \
                         it needed"
                    );
                    let round = self.slots[i].round.as_ref();
                    if let Some(round) = round.filter(|r| r.key == (*egen, *pre)) {
                        assert!(
                            *votes > round.granted.len(),
                            "{addr}: reported {votes} votes (its own included) in a round its \
                             group granted {} of: {:?}",
                            round.granted.len(),
                            round.granted
                        );
                    }
                }
                _ => {}
            }
        }

        // 14. A joiner asks again only once the last ask could have been answered (the master
        //     waits up to the ack timeout for the group to acknowledge a join): asking sooner
        //     floods the helper and reports a silence that was not one. (A helper passes on
        //     the requests it gets, even one naming itself.)
        if !relaying
            && outputs.iter().any(|o| {
                matches!(
                    o,
                    Output::Send {
                        msg: Message::JoinRequest { site, .. },
                        ..
                    } if *site == addr
                )
            })
        {
            let slot = &mut self.slots[i];
            let t = &slot.cfg.timeouts;
            let wait = t.join_retry_ms.max(t.ack_ms + t.request_retry_ms);
            if let Some(asked) = slot.asked_to_join {
                assert!(
                    now >= asked.plus_ms(wait),
                    "{addr}: asked to join at {now}, {asked} the last time, within {wait} ms"
                );
            }
            slot.asked_to_join = Some(now);
        }
        if accepted {
            // Answered: a join lost later (its master gone before it was complete) starts anew.
            self.slots[i].asked_to_join = None;
        }

        // 25. A commit is acknowledged as its policy asks, by the acks this master took in its
        //     generation (the highest LSN each site acked), with nothing forged. Judged only
        //     when the step left the group as it found it: a member added within the step
        //     counts for the commits after it and not for those before, which the outputs do
        //     not tell apart. A removal that has begun and is not settled changes nothing here.
        if let Some((from, priority)) = heard_priority {
            self.slots[i].heard_priority.insert(from, priority);
        }
        if let Some((from, lsn)) = ack_from {
            let taken = self.acks_taken.entry((i, gen_before)).or_default();
            let acked = taken.entry(from).or_insert(0);
            *acked = (*acked).max(lsn);
        }
        let acks_judged = !self.forged_any
            && role_before == RoleKind::Master
            && commit_group_after == commit_group_before;
        // A site is electable by the priority it last gave this site, else by its membership
        // entry, else assumed to be.
        let electable_now: BTreeSet<SiteAddr> = commit_group_after
            .iter()
            .filter(|a| {
                let heard = self.slots[i].heard_priority.get(*a).copied();
                let member = || {
                    let site = self.slots[i].site.as_ref().expect("running");
                    site.db().members().get(*a).map_or(1, |m| m.priority)
                };
                heard.unwrap_or_else(member) > 0
            })
            .cloned()
            .collect();
        let policy = self.slots[i].cfg.ack_policy;
        let acks_taken = self.acks_taken.get(&(i, gen_before));
        for output in &outputs {
            let Output::Reply {
                id,
                result: Ok(Reply::Committed { lsn }),
            } = output
            else {
                continue;
            };
            if !acks_judged || !self.asked.get(id).is_some_and(|a| a.commit) {
                continue;
            }
            let others: Vec<&SiteAddr> =
                commit_group_after.iter().filter(|a| **a != addr).collect();
            let holds = |a: &SiteAddr| {
                acks_taken
                    .and_then(|t| t.get(a))
                    .is_some_and(|acked| acked >= lsn)
            };
            let electable = |a: &SiteAddr| electable_now.contains(a);
            let acked = others.iter().filter(|a| holds(a)).count();
            let peers = others.iter().filter(|a| electable(a)).count();
            let peers_acked = others.iter().filter(|a| holds(a) && electable(a)).count();
            let (have, needed) = match policy {
                _ if others.is_empty() => (0, 0),
                // Counts the connections, which the step's outputs do not show.
                AckPolicy::AllAvailable | AckPolicy::None => (0, 0),
                AckPolicy::All => (acked, others.len()),
                AckPolicy::AllPeers => (peers_acked, peers),
                AckPolicy::One => (acked, 1),
                AckPolicy::OnePeer => (peers_acked, 1),
                AckPolicy::Quorum => (
                    peers_acked,
                    crate::types::majority(commit_group_after.len()) - 1,
                ),
            };
            assert!(
                have >= needed,
                "{addr}: commit at LSN {lsn} answered Committed with {have} of the {needed} acks \
                 {policy} needs from {others:?} (acks taken: {acks_taken:?})"
            );
        }

        // 4. Commits: refused on a client, answered once, `Committed` only for a master.
        for output in &outputs {
            let Output::Reply { id, result } = output else {
                continue;
            };
            let Some(asked) = self.asked.get_mut(id) else {
                panic!("{addr}: reply to request {id:?} nobody made");
            };
            assert_eq!(asked.site, i, "{addr}: answered another site's request");
            assert!(!asked.answered, "{addr}: request {id:?} answered twice");
            asked.answered = true;
            if let (true, Ok(Reply::Committed { lsn })) = (asked.commit, result) {
                assert!(
                    asked.as_master,
                    "{addr}: a commit asked of a client was reported Committed at LSN {lsn}"
                );
                assert!(
                    *lsn > asked.last_before,
                    "{addr}: committed at an old LSN {lsn}"
                );
            }
        }
        for id in commit_ids {
            let asked = &self.asked[&id];
            if !asked.as_master && !dead_before {
                assert_eq!(appended, 0, "{addr}: a client appended on a commit request");
                let refused = outputs.iter().any(|o| {
                    matches!(o, Output::Reply { id: r, result: Err(RequestError::NotMaster { .. }) } if *r == id)
                });
                assert!(
                    refused,
                    "{addr}: a commit asked of a client was not refused: {outputs:?}"
                );
            }
        }

        // 23. A switchover hands mastership over only once no commit is in flight (none is
        //     abandoned in handing over) and, with nothing forged, to a site whose log holds
        //     the master's whole log: the new master has every acknowledged commit. (Unless
        //     the target's disk rotted: what it acknowledged may be gone since.)
        for to in sent_to(&outputs, |m| matches!(m, Message::TakeOver { .. })) {
            let abandoned = outputs.iter().any(|o| {
                matches!(
                    o,
                    Output::Reply {
                        result: Err(RequestError::MasterLost { .. }),
                        ..
                    }
                )
            });
            assert!(
                !abandoned,
                "{addr}: handed over to {to} with commits in flight"
            );
            let target = (0..SITES).find(|&j| site_addr(j) == *to && j != i);
            if let (true, Some(j)) = (self.masters.is_some(), target) {
                let intact = !self.slots[j].rotted;
                if let (true, Some(t)) = (intact, self.slots[j].site.as_mut()) {
                    let last = after.last;
                    let read = (last.lsn >= t.storage().first_lsn())
                        .then(|| storage::read_to_end(t.storage(), last.lsn).ok())
                        .flatten();
                    if let Some(records) = read {
                        assert!(
                            records.first().map(|r| r.pos()) == Some(last),
                            "{addr}: handed over to {to}, whose log does not hold {last}"
                        );
                    }
                }
            }
        }
        // 24. An archive keeps the last records it was asked to keep, and folds into the
        //     snapshot exactly the records it drops.
        if let (Some((first, want, mut expected, records)), Some(site)) =
            (archive_base, self.slots[i].site.as_mut())
        {
            let now_first = site.storage().first_lsn();
            if site.dead().is_none() {
                assert_eq!(
                    now_first, want,
                    "{addr}: archived the log to start at {now_first}, not {want}"
                );
            }
            if site.dead().is_none() && now_first > first {
                for r in records.iter().take_while(|r| r.lsn < now_first) {
                    expected.history.note_append(r);
                    expected.db.apply(r);
                }
                let snapshot = site.storage().read_snapshot().unwrap_or_else(|e| {
                    panic!("{addr}: the snapshot just written does not read: {e}")
                });
                assert!(
                    snapshot == expected,
                    "{addr}: archived up to {now_first} into a snapshot that is not the fold of \
                     the records it dropped"
                );
            }
        }
        // 21. A site that stops being master, or stops altogether, answers in that step what
        //     it was asked as master and has not answered (a commit's fate is then unknown to
        //     it: `MasterLost`); a stopped site answers everything it was still asked. An
        //     application waiting on it must not wait for ever.
        let dead_after = self.slots[i]
            .site
            .as_ref()
            .is_some_and(|s| s.dead().is_some());
        let lost_mastership = role_before == RoleKind::Master && role_after != RoleKind::Master;
        if !dead_before && (lost_mastership || dead_after) {
            let unanswered: Vec<RequestId> = self
                .asked
                .iter()
                .filter(|(_, a)| a.site == i && !a.answered && !a.lost)
                .filter(|(_, a)| a.as_master || dead_after)
                .map(|(id, _)| *id)
                .collect();
            assert!(
                unanswered.is_empty(),
                "{addr}: stopped being master (or stopped) with requests {unanswered:?} unanswered"
            );
        }

        // 6. One master per generation, while nothing was forged.
        if role_after == RoleKind::Master {
            if let Some(masters) = &mut self.masters {
                let holder = *masters.entry(after.gen).or_insert(i);
                assert_eq!(
                    holder,
                    i,
                    "two masters of generation {}: {} and {addr}",
                    after.gen,
                    site_addr(holder)
                );
            }
        }

        let summary = &mut self.summary;
        summary.max_gen = summary.max_gen.max(after.gen);
        summary.stopped += u64::from(
            !dead_before
                && self.slots[i]
                    .site
                    .as_ref()
                    .is_some_and(|s| s.dead().is_some()),
        );
        for output in &outputs {
            match output {
                Output::Event(Event::BecameMaster { .. }) => summary.became_master += 1,
                Output::Event(Event::RolledBack { .. }) => summary.rollbacks += 1,
                Output::Event(Event::InitDone { .. }) => summary.inits += 1,
                Output::Reply {
                    result: Ok(Reply::Committed { .. }),
                    ..
                } => summary.committed += 1,
                Output::Reply {
                    result: Err(RequestError::NotMaster { .. }),
                    ..
                } => summary.refused_not_master += 1,
                Output::Reply { result: Err(_), .. } => summary.other_errors += 1,
                _ => {}
            }
        }
        let slot = &mut self.slots[i];
        slot.gen_floor = slot.gen_floor.max(after.gen);
        slot.seen = after;
        for output in outputs {
            if let Output::Send { to, msg } = output {
                let Some(j) = (0..SITES).find(|&j| site_addr(j) == to) else {
                    continue; // newcomers and strangers are not simulated
                };
                if self.in_flight.len() < MAX_IN_FLIGHT {
                    self.in_flight.push_back(Envelope {
                        from: addr.clone(),
                        to: j,
                        msg,
                    });
                }
            }
        }
    }

    /// Checks what must hold at the end: every running site's database is its log's replay.
    pub fn check_end(&mut self) {
        for slot in &mut self.slots {
            let Some(site) = slot.site.as_mut() else {
                continue;
            };
            if site.dead().is_some() {
                continue;
            }
            let addr = site.addr().clone();
            // A rotten record makes the replay fail: that is the storage's verdict, not ours.
            if let Ok(replayed) = storage::replay(site.storage()) {
                assert!(
                    &replayed.db == site.db(),
                    "{addr}: the database differs from the replay of its log"
                );
            }
        }
    }
}

/// The sites a step sent a message of one kind to.
fn sent_to<'a>(
    outputs: &'a [Output],
    kind: impl Fn(&Message) -> bool + 'a,
) -> impl Iterator<Item = &'a SiteAddr> + 'a {
    outputs.iter().filter_map(move |o| match o {
        Output::Send { to, msg } if kind(msg) => Some(to),
        _ => None,
    })
}

fn pick(n: u8) -> usize {
    usize::from(n) % SITES
}
