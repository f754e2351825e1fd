//! A replication group on madsim: one simulated machine per site, each running the real node
//! driver; the world keeps each site's disk and clock, crashes and restarts sites, cuts links,
//! and records a trace of every node event with the simulated time.
//!
//! Build a world inside a madsim runtime (`Runtime::with_seed_and_config(seed, ..).block_on`).

use crate::check::{self, Observed, Operation, Outcome, Read, Violation};
use crate::clock::SkewedClock;
use crate::coverage::{self, Coverage};
use crate::disk::{Disk, StorageKind};
use crate::faults::{Fault, Moment, Schedule};
use crate::result::{Counts, RunOutcome, RunResult};
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle as SimNode};
use madsim::task::NodeId;
use replication::log::LogRecord;
use replication::node::{
    self, Chances, ChaosHandle, DeliveryHook, LinkChaos, NodeConfig, NodeEvent, NodeHandle,
};
use replication::site::{AckPolicy, Config, OpenError, Reply, Request, RequestError, RoleKind};
use replication::types::SiteAddr;
use replication::Txn;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::tracelog::{Trace, TraceLog};

/// Where a running site's node handle is found: empty while the site is down.
type Slot = Arc<Mutex<Option<NodeHandle>>>;

struct SimSite {
    machine: SimNode,
    disk: Disk,
    clock: Arc<SkewedClock>,
    /// Read at every (re)start, so an upgrade or a changed flag takes effect at the next restart.
    cfg: Arc<Mutex<NodeConfig>>,
    handle: Slot,
    up: bool,
}

/// The operator watching the group, as on a real deployment: a site whose storage failed (its
/// node stopped on a damaged record) or that could not start is started again within
/// [`OPERATOR_EVERY_MS`], unless its machine is frozen. The world and the operator's task share
/// this desk; the simulation runs on one thread, so each sees the other's changes whole.
#[derive(Default)]
struct Desk {
    /// Sites waiting for the operator.
    failed: BTreeSet<SiteAddr>,
    /// The sites that hold the group's secret (an operator may name one as a helper).
    insiders: BTreeSet<SiteAddr>,
    /// Frozen machines (the operator leaves them be: a restart would thaw them).
    paused: BTreeSet<SiteAddr>,
    /// Each site's machine.
    machines: BTreeMap<SiteAddr, NodeId>,
    /// Each site's disk: one whose power went out is a dead machine to restart.
    disks: BTreeMap<SiteAddr, Disk>,
    /// Every kill of a site's machine, at simulated milliseconds (for the election checker).
    kills: Vec<(u64, SiteAddr)>,
    /// Crashes waiting for a moment of a site's work ([`Fault::CrashAt`]).
    /// (A crash for no site in particular falls on the first site to reach its moment.)
    armed: Vec<(Option<SiteAddr>, Moment)>,
    /// Sites that reached their armed moment, for the executioner to kill.
    doomed: Vec<(SiteAddr, Moment)>,
}

/// Whether `event` is the moment an armed crash waits for.
fn is_moment(event: &NodeEvent, moment: Moment) -> bool {
    use replication::site::Event;
    let NodeEvent::Site(event) = event else {
        return false;
    };
    matches!(
        (moment, event),
        (Moment::Vote, Event::Voted { .. })
            | (Moment::Join, Event::SiteAdded { .. })
            | (Moment::Init, Event::InitDone { .. })
    )
}

/// Whether `records` record the start of a site's removal (the moment [`Moment::Removal`]).
fn starts_a_removal(records: &[LogRecord]) -> bool {
    use replication::log::{MemberState, RecordBody};
    records.iter().any(|r| {
        matches!(&r.body, RecordBody::Membership { member: Some(m), .. }
            if m.state == MemberState::Removing)
    })
}

/// Dooms `addr` if a crash is armed for it (or for any site) at a moment `reached` says it is
/// at, and wakes the executioner.
fn doom_if_armed(
    desk: &SharedDesk,
    doom: &tokio::sync::Notify,
    addr: &SiteAddr,
    reached: impl Fn(Moment) -> bool,
) {
    let mut desk = desk.lock().expect("desk lock");
    let armed = desk
        .armed
        .iter()
        .position(|(site, moment)| site.as_ref().is_none_or(|s| s == addr) && reached(*moment));
    if let Some(i) = armed {
        let (_, moment) = desk.armed.remove(i);
        desk.doomed.push((addr.clone(), moment));
        doom.notify_one();
    }
}

/// The executioner's task: kills each site that reached its armed moment, in the instant it
/// reports it (its disk loses what was not synced), and leaves it to the operator to restart.
async fn executioner(
    desk: SharedDesk,
    wake: Arc<tokio::sync::Notify>,
    trace: Trace,
    start: tokio::time::Instant,
) {
    loop {
        wake.notified().await;
        let mut desk = desk.lock().expect("desk lock");
        for (addr, moment) in std::mem::take(&mut desk.doomed) {
            Handle::current().kill(desk.machines[&addr]);
            desk.disks[&addr].crash();
            let ms = start.elapsed().as_millis();
            desk.kills.push((ms as u64, addr.clone()));
            desk.failed.insert(addr.clone());
            let line = format!("{addr} crashed in the middle of {}", moment.name());
            trace.lock().expect("trace lock").world(ms, line);
        }
    }
}

type SharedDesk = Arc<Mutex<Desk>>;

/// How many times the liveness check samples positions, 50 ms apart, before it calls a site
/// behind the master.
const CATCH_UP_SAMPLES: usize = 20;

/// How often the operator looks at the group.
pub const OPERATOR_EVERY_MS: u64 = 100;

/// The operator's task: restarts failed sites (a process restart, not a power failure: the
/// disk keeps what it holds) for as long as the world runs.
async fn operator(desk: SharedDesk, trace: Trace, start: tokio::time::Instant) {
    loop {
        tokio::time::sleep(Duration::from_millis(OPERATOR_EVERY_MS)).await;
        let mut desk = desk.lock().expect("desk lock");
        let dark: Vec<SiteAddr> = desk
            .disks
            .iter()
            .filter(|(_, disk)| disk.is_powered_off())
            .map(|(addr, _)| addr.clone())
            .collect();
        desk.failed.extend(dark);
        let due: Vec<SiteAddr> = desk.failed.difference(&desk.paused).cloned().collect();
        for addr in due {
            desk.failed.remove(&addr);
            // Kill first: madsim's restart alone keeps the old node's sockets bound.
            Handle::current().kill(desk.machines[&addr]);
            Handle::current().restart(desk.machines[&addr]);
            let ms = start.elapsed().as_millis();
            desk.kills.push((ms as u64, addr.clone()));
            trace
                .lock()
                .expect("trace lock")
                .world(ms, format!("{addr} restarted by the operator"));
        }
    }
}

/// What simulated clients share: the sites' handles, the history they write, and the clock they
/// time operations with. Cheap to clone into a background load task.
#[derive(Clone)]
struct Clients {
    slots: Arc<Mutex<BTreeMap<SiteAddr, Slot>>>,
    history: Arc<Mutex<Vec<Operation>>>,
    /// Reads the load made, in the order they were asked.
    reads: Arc<Mutex<Vec<Read>>>,
    /// Leased reads a master served to the load, in the order they were asked.
    leased_reads: Arc<Mutex<Vec<check::LeasedRead>>>,
    /// Sites anybody asked to remove, from the moment of asking.
    removals_asked: Arc<Mutex<BTreeSet<SiteAddr>>>,
    start: tokio::time::Instant,
}

impl Clients {
    /// Simulated milliseconds since the world was made.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn handle(&self, addr: &SiteAddr) -> Option<NodeHandle> {
        let slots = self.slots.lock().expect("slots lock");
        let slot = slots.get(addr)?;
        let handle = slot.lock().expect("handle lock").clone();
        handle
    }

    async fn request(&self, addr: &SiteAddr, request: Request) -> Result<Reply, RequestError> {
        if let Request::RemoveSite { site } = &request {
            let mut asked = self.removals_asked.lock().expect("removals lock");
            asked.insert(site.clone());
        }
        let Some(h) = self.handle(addr) else {
            return Err(RequestError::HandleDead {
                reason: format!("{addr} is down"),
            });
        };
        match h.request(request).await {
            Ok(result) => result,
            Err(gone) => Err(RequestError::HandleDead {
                reason: gone.to_string(),
            }),
        }
    }

    /// Commits `key = value` through `addr` as a client would (giving up after 30 s, when the
    /// write's fate becomes unknown) and records the operation in the history.
    async fn commit(&self, addr: &SiteAddr, key: &str, value: &str) -> Result<Reply, RequestError> {
        let invoked_ms = self.now_ms();
        let request = self.request(addr, Request::Commit(Txn::put(key, value)));
        let result = match tokio::time::timeout(Duration::from_secs(30), request).await {
            Ok(result) => result,
            Err(_) => Err(RequestError::HandleDead {
                reason: format!("no answer from {addr} within 30 s"),
            }),
        };
        let op = Operation {
            site: addr.clone(),
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            invoked_ms,
            completed_ms: self.now_ms(),
            outcome: outcome_of(&result),
        };
        self.history.lock().expect("history lock").push(op);
        result
    }

    /// Every site a client knows of, in address order.
    fn addrs(&self) -> Vec<SiteAddr> {
        self.slots
            .lock()
            .expect("slots lock")
            .keys()
            .cloned()
            .collect()
    }

    /// The running master of the highest generation, as a client finds it by asking every site.
    async fn find_master(&self) -> Option<SiteAddr> {
        let addrs = self.addrs();
        let mut best: Option<(u64, SiteAddr)> = None;
        for addr in addrs {
            let Some(h) = self.handle(&addr) else {
                continue;
            };
            let Some(stats) = answer(h.stats()).await else {
                continue;
            };
            if stats.site.role == RoleKind::Master
                && best.as_ref().is_none_or(|b| stats.site.gen > b.0)
            {
                best = Some((stats.site.gen, addr));
            }
        }
        best.map(|b| b.1)
    }

    /// Reads `key` at `addr` and records what it saw (nothing if the site does not answer).
    async fn read(&self, addr: &SiteAddr, key: &str) {
        let Some(h) = self.handle(addr) else { return };
        let invoked_ms = self.now_ms();
        if let Some(value) = answer(h.get(key.as_bytes().to_vec())).await {
            self.reads.lock().expect("reads lock").push(Read {
                site: addr.clone(),
                key: key.as_bytes().to_vec(),
                value,
                invoked_ms,
            });
        }
    }

    /// A leased read of `key` at `addr`, recorded if the site served it (with leases off, or
    /// without a running lease, it refuses, and nothing is recorded).
    async fn leased_read(&self, addr: &SiteAddr, key: &str) {
        let Some(h) = self.handle(addr) else { return };
        let invoked_ms = self.now_ms();
        let request = Request::Read {
            key: key.as_bytes().to_vec(),
            leased: true,
        };
        if let Some(Ok(Reply::Value(value))) = answer(h.request(request)).await {
            self.leased_reads
                .lock()
                .expect("leased reads lock")
                .push(check::LeasedRead {
                    site: addr.clone(),
                    key: key.as_bytes().to_vec(),
                    value,
                    invoked_ms,
                    completed_ms: self.now_ms(),
                });
        }
    }

    /// Who `addr` says is master (what a `NotMaster` reply would name).
    async fn hint(&self, addr: &SiteAddr) -> Option<SiteAddr> {
        let stats = answer(self.handle(addr)?.stats()).await?;
        stats.site.master
    }

    /// One client's steady load: a write every `every_ms` to whoever it believes is master,
    /// following hints (or trying the next site) after a failure, until `stop` is set.
    async fn load(self, every_ms: u64, stop: Arc<std::sync::atomic::AtomicBool>) {
        use std::sync::atomic::Ordering;
        let mut key = 0u64;
        let mut believed: Option<SiteAddr> = None;
        while !stop.load(Ordering::Relaxed) {
            let addrs = self.addrs();
            let target = believed.clone().unwrap_or_else(|| addrs[0].clone());
            key += 1;
            let result = if key.is_multiple_of(5) {
                // Now and then three writers at once: the node hands them to the core as one
                // batch (group commit), which the checkers then see under faults too.
                let writes: Vec<(String, String)> = [key, key + 1_000_000, key + 2_000_000]
                    .iter()
                    .map(|k| (format!("k{}", k % 50), format!("load{k}")))
                    .collect();
                let (result, _, _) = tokio::join!(
                    self.commit(&target, &writes[0].0, &writes[0].1),
                    self.commit(&target, &writes[1].0, &writes[1].1),
                    self.commit(&target, &writes[2].0, &writes[2].1),
                );
                result
            } else {
                self.commit(&target, &format!("k{}", key % 50), &format!("load{key}"))
                    .await
            };
            // Read a key back from one of the sites, master or client, as a reader would.
            let reader = &addrs[(key as usize / 7) % addrs.len()];
            self.read(reader, &format!("k{}", (key * 7) % 50)).await;
            // And the key just written, under the master's lease, at every site: a master cut
            // off from the group may still think it is one, and must then refuse rather than
            // answer with what the write just replaced elsewhere. (A millisecond later, so that
            // the checker, which counts in milliseconds, sees the reads after the write.)
            tokio::time::sleep(Duration::from_millis(1)).await;
            for at in &addrs {
                self.leased_read(at, &format!("k{}", key % 50)).await;
            }
            if result.is_err() {
                // A site that failed the write yet names itself master may be cut off from the
                // group: a client then asks around for the master of the latest generation.
                let hint = match self.hint(&target).await {
                    Some(master) if master == target => self.find_master().await,
                    hint => hint,
                };
                believed = Some(match hint {
                    Some(master) => master,
                    None => {
                        let i = addrs.iter().position(|a| *a == target).unwrap_or(0);
                        addrs[(i + 1) % addrs.len()].clone()
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(every_ms)).await;
        }
    }
}

/// A site's answer to a query, if it comes within a second of simulated time: a paused site
/// answers nothing, and the world must not wait on it forever.
async fn answer<T, E>(query: impl std::future::Future<Output = Result<T, E>>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(1), query)
        .await
        .ok()?
        .ok()
}

/// How a client classifies a commit's result: refused outright, acknowledged, or unknown.
fn outcome_of(result: &Result<Reply, RequestError>) -> Outcome {
    use replication::site::RequestError as E;
    match result {
        Ok(Reply::Committed { lsn }) => Outcome::Ok { lsn: *lsn },
        Ok(other) => Outcome::Unknown(format!("unexpected reply {other:?}")),
        Err(e @ (E::NotMaster { .. } | E::SwitchoverInProgress { .. } | E::Invalid(_))) => {
            Outcome::Failed(e.to_string())
        }
        Err(e) => Outcome::Unknown(e.to_string()),
    }
}

/// A background load started by [`World::start_load`]; dropping it stops it at once.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: madsim::task::JoinHandle<()>,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Load {
    /// Stops the load after its write in flight and waits for it.
    pub async fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = (&mut self.task).await;
    }
}

/// A group of sites on madsim. Dropping it stops every task it started: madsim keeps a task
/// that is still running when `block_on` returns, with all it holds, for as long as the process
/// lives, so a world that left its sites running would leak a whole run per seed.
pub struct World {
    sites: BTreeMap<SiteAddr, SimSite>,
    trace: Trace,
    start: tokio::time::Instant,
    clients: Clients,
    /// What the operator's task sees (failed and frozen sites).
    desk: SharedDesk,
    /// The operator's task, stopped with the world.
    operator: madsim::task::JoinHandle<()>,
    /// The task that carries out aimed crashes, and how it is woken.
    executioner: madsim::task::JoinHandle<()>,
    doom: Arc<tokio::sync::Notify>,
    /// Operations asked of the master in the background (switchovers, archiving), stopped with
    /// the world if still waiting.
    operations: Vec<madsim::task::JoinHandle<()>>,
    /// Set when a fault destroyed acknowledged data: the durability check no longer applies.
    durability_void: Option<String>,
    /// How long the group was left alone before the last check (for the liveness report).
    quiet_ms: u64,
    /// Sites started without the group secret: refused by the group, not checked as members.
    outsiders: std::collections::BTreeSet<SiteAddr>,
    /// What sites added from now on store their data on.
    storage: StorageKind,
    /// The faults this world applied, for the run's coverage.
    faults_reached: Mutex<Coverage>,
    /// Duplication and reordering of frames, shared by every site's connections.
    chaos: Arc<LinkChaos>,
    /// Time since the world was made, the trace's clock (disks mark durability on it).
    since: crate::clock::Elapsed,
    /// Folds every site's deliveries into the trace.
    deliveries: Arc<crate::tracelog::DeliveryRecorder>,
    /// Routes the engine's `tracing` output into the trace while the world lives (the
    /// simulation runs on one thread, so a thread-local default reaches every site).
    _tracing: tracing::subscriber::DefaultGuard,
}

/// The secret every site of a world's group holds (a rogue site gets another).
pub const GROUP_SECRET: &[u8] = b"group secret";

/// The address of site `i` (from 1): a distinct simulated machine each.
pub fn site_addr(i: usize) -> SiteAddr {
    SiteAddr::new(format!("10.0.0.{i}:7000"))
}

impl Drop for World {
    fn drop(&mut self) {
        self.operator.abort();
        self.executioner.abort();
        for operation in &self.operations {
            operation.abort();
        }
        for site in self.sites.values() {
            Handle::current().kill(site.machine.id());
        }
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    /// Starts `n` sites of a static group (site `i` configured by `configure(i, cfg)`), all
    /// sharing `secret`. Each site's node seed is derived from `seed`.
    pub fn start(n: usize, seed: u64, configure: impl Fn(usize, &mut Config)) -> World {
        let addrs: Vec<SiteAddr> = (1..=n).map(site_addr).collect();
        let mut world = World::new();
        for (i, addr) in addrs.iter().enumerate() {
            let mut cfg = Config::new(addr.clone(), addrs.clone());
            configure(i, &mut cfg);
            let site_seed = seed.wrapping_mul(31).wrapping_add(i as u64);
            world.add_site(i, cfg, GROUP_SECRET, site_seed);
        }
        world
    }

    /// An empty world; sites come with [`World::add_site`].
    pub fn new() -> World {
        use tracing_subscriber::layer::SubscriberExt;
        let start = tokio::time::Instant::now();
        let trace: Trace = Arc::default();
        let since = crate::clock::Elapsed::start();
        let layer = crate::tracelog::TraceLayer {
            trace: trace.clone(),
            start: since.clone(),
        };
        let deliveries = Arc::new(crate::tracelog::DeliveryRecorder {
            trace: trace.clone(),
            start: since.clone(),
        });
        let tracing = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        let desk = SharedDesk::default();
        let operator = madsim::task::spawn(operator(desk.clone(), trace.clone(), start));
        let doom: Arc<tokio::sync::Notify> = Arc::default();
        let executioner = madsim::task::spawn(executioner(
            desk.clone(),
            doom.clone(),
            trace.clone(),
            start,
        ));
        World {
            sites: BTreeMap::new(),
            trace,
            start,
            clients: Clients {
                slots: Arc::default(),
                history: Arc::default(),
                reads: Arc::default(),
                leased_reads: Arc::default(),
                removals_asked: Arc::default(),
                start,
            },
            since,
            deliveries,
            desk,
            operator,
            executioner,
            doom,
            operations: Vec::new(),
            durability_void: None,
            quiet_ms: 0,
            outsiders: Default::default(),
            storage: StorageKind::default(),
            faults_reached: Mutex::default(),
            chaos: Arc::default(),
            _tracing: tracing,
        }
    }

    /// Sites added from now on run on `kind` of storage (the in-memory model by default).
    pub fn set_storage(&mut self, kind: StorageKind) {
        self.storage = kind;
        if kind != StorageKind::default() {
            self.note_all(&format!("sites store on {}", kind.name()));
        }
    }

    /// Asks whoever is master at this moment to do `request`, as an operator would, without
    /// holding up the timeline: the answer (or that there was no master to ask) goes to the
    /// trace when it comes.
    pub fn operate(&mut self, request: Request) {
        self.spawn_operation(None, request);
    }

    /// Asks `via` (master or client) to do `request`, as [`World::operate`] does.
    pub fn operate_via(&mut self, via: SiteAddr, request: Request) {
        self.spawn_operation(Some(via), request);
    }

    fn spawn_operation(&mut self, via: Option<SiteAddr>, request: Request) {
        let clients = self.clients.clone();
        let trace = self.trace.clone();
        let what = format!("{request:?}");
        let task = madsim::task::spawn(async move {
            let note = |line: String| {
                let ms = clients.now_ms() as u128;
                trace.lock().expect("trace lock").world(ms, line);
            };
            let asked = match via {
                Some(via) => Some(via),
                None => clients.find_master().await,
            };
            let Some(master) = asked else {
                note(format!("world operator: no master to ask for {what}"));
                return;
            };
            let answer =
                tokio::time::timeout(Duration::from_secs(10), clients.request(&master, request))
                    .await;
            note(format!(
                "world operator: {master} answered {what} with {answer:?}"
            ));
        });
        self.operations.push(task);
    }

    /// Counts one fault applied, for the run's coverage.
    fn reach(&self, fault: &'static str) {
        coverage::reach(
            &mut self.faults_reached.lock().expect("coverage lock"),
            fault,
        );
    }

    /// What the run reached so far: the faults applied, the engine's behaviours its events
    /// show, writes of unknown fate and damaged tails dropped on opening a disk.
    pub fn coverage(&self) -> Coverage {
        let mut reached = self.faults_reached.lock().expect("coverage lock").clone();
        let trace = self.trace.lock().expect("trace lock");
        for e in &trace.events {
            for name in coverage::of_event(&e.event) {
                coverage::reach(&mut reached, name);
            }
        }
        for line in &trace.lines {
            if line.contains("opened its disk, dropping") {
                coverage::reach(&mut reached, "disk_tail_dropped");
            }
            if line.contains("operator: helper set to") || line.contains("operator: disk emptied") {
                coverage::reach(&mut reached, "needs_helper");
            }
            for (moment, name) in [
                (Moment::Vote, "crash_in_election"),
                (Moment::Join, "crash_in_join"),
                (Moment::Init, "crash_in_init"),
                (Moment::Removal, "crash_in_removal"),
            ] {
                if line.contains(&format!("crashed in the middle of {}", moment.name())) {
                    coverage::reach(&mut reached, name);
                }
            }
        }
        drop(trace);
        if self.chaos.duplicated() > 0 {
            coverage::reach(&mut reached, "fault_duplicate");
        }
        if self.chaos.reordered() > 0 {
            coverage::reach(&mut reached, "fault_reorder");
        }
        if self.chaos.dropped() > 0 {
            coverage::reach(&mut reached, "fault_drop");
        }
        for op in self.history() {
            if matches!(op.outcome, Outcome::Unknown(_)) {
                coverage::reach(&mut reached, "write_unknown");
            }
        }
        for _ in self
            .clients
            .leased_reads
            .lock()
            .expect("leased reads lock")
            .iter()
        {
            coverage::reach(&mut reached, "leased_read");
        }
        reached
    }

    /// Every site's address.
    pub fn addrs(&self) -> Vec<SiteAddr> {
        self.sites.keys().cloned().collect()
    }

    /// The node handle of a running site.
    pub fn handle(&self, addr: &SiteAddr) -> Option<NodeHandle> {
        let site = self.sites.get(addr)?;
        if !site.up {
            return None;
        }
        site.handle.lock().ok()?.clone()
    }

    /// Whether the site is running (started and not crashed; a paused site is running).
    pub fn is_up(&self, addr: &SiteAddr) -> bool {
        self.sites.get(addr).is_some_and(|s| s.up)
    }

    fn desk(&self) -> std::sync::MutexGuard<'_, Desk> {
        self.desk.lock().expect("desk lock")
    }

    /// Changes a site's configuration for its next restart (a crash and restart upgrades a
    /// site's protocol version this way; creator and helper flags only matter at a first start).
    pub fn reconfigure(&mut self, addr: &SiteAddr, change: impl FnOnce(&mut Config)) {
        let site = self.sites.get(addr).expect("known site");
        change(&mut site.cfg.lock().expect("cfg lock").site);
    }

    /// Freezes a site's machine: its tasks stop running and its timers wait, but its
    /// connections stay open (a long GC pause, a stopped VM).
    pub fn pause(&mut self, addr: &SiteAddr) {
        let site = &self.sites[addr];
        if site.up && self.desk().paused.insert(addr.clone()) {
            self.reach("fault_pause");
            Handle::current().pause(site.machine.id());
            self.note(addr, "paused");
        }
    }

    /// Lets a paused site run again.
    pub fn resume(&mut self, addr: &SiteAddr) {
        if self.desk().paused.remove(addr) {
            Handle::current().resume(self.sites[addr].machine.id());
            self.note(addr, "resumed");
        }
    }

    /// Cuts the link from `from` to `to` only: `to` no longer hears `from`.
    pub fn clog(&self, from: &SiteAddr, to: &SiteAddr) {
        self.reach("fault_clog");
        let net = NetSim::current();
        net.clog_link(self.sites[from].machine.id(), self.sites[to].machine.id());
        self.note_all(&format!("clog {from} -> {to}"));
    }

    /// The site's disk (it outlives crashes).
    pub fn disk(&self, addr: &SiteAddr) -> Disk {
        self.sites[addr].disk.clone()
    }

    /// The site's clock, to skew or drift.
    pub fn clock(&self, addr: &SiteAddr) -> Arc<SkewedClock> {
        self.sites[addr].clock.clone()
    }

    /// Kills a site's machine; the disk loses what was not synced.
    pub fn crash(&mut self, addr: &SiteAddr) {
        self.reach("fault_crash");
        self.crash_with(addr, Disk::crash);
    }

    /// Kills a site's machine and tears the write it was doing: the torn record stays on disk,
    /// failing its checksum, until the restart drops it.
    pub fn crash_tearing(&mut self, addr: &SiteAddr) {
        self.reach("fault_torn_crash");
        self.crash_with(addr, Disk::crash_tearing);
    }

    /// Damages the last record on a site's disk (bit rot): the site must detect it and never
    /// serve it. Damage to a synced record may destroy an acknowledged write, so the
    /// durability check stands down for the rest of the run.
    pub fn corrupt(&mut self, addr: &SiteAddr) {
        match self.sites[addr].disk.corrupt_last() {
            Some(damage) => {
                self.reach("fault_corruption");
                self.note(addr, &format!("{} corrupted", damage.what));
                if damage.synced {
                    self.durability_void = Some(format!(
                        "synced data on {addr} was corrupted ({})",
                        damage.what
                    ));
                }
            }
            None => self.note(addr, "disk corruption found an empty log"),
        }
    }

    /// The site's machine loses power after `after_ops` more filesystem operations (see
    /// [`Fault::PowerCut`]); the operator restarts it once its node stops on the failure.
    pub fn cut_power(&mut self, addr: &SiteAddr, after_ops: u64) {
        if !self.sites[addr].up {
            return;
        }
        if self.sites[addr].disk.cut_power_after(after_ops) {
            self.reach("fault_power_cut");
            self.note(
                addr,
                &format!("will lose power after {after_ops} more disk operations"),
            );
        } else {
            self.note(
                addr,
                "power cut skipped: a memory disk has no operations to cut",
            );
        }
    }

    /// Offsets a site's clock.
    pub fn skew(&self, addr: &SiteAddr, skew_ms: i64) {
        if skew_ms != 0 {
            self.reach("fault_skew");
        }
        self.clock(addr).set_skew_ms(skew_ms);
        self.note(addr, &format!("clock skewed by {skew_ms} ms"));
    }

    /// Makes a site's clock run fast (positive) or slow.
    pub fn drift(&self, addr: &SiteAddr, drift_ppm: i64) {
        if drift_ppm != 0 {
            self.reach("fault_drift");
        }
        self.clock(addr).set_drift_ppm(drift_ppm);
        self.note(addr, &format!("clock drifting by {drift_ppm} ppm"));
    }

    /// Kills a site's machine, with `power_failure` deciding what its disk keeps.
    fn crash_with(&mut self, addr: &SiteAddr, power_failure: fn(&Disk)) {
        self.resume(addr);
        let now = self.now_ms();
        let mut desk = self.desk();
        desk.failed.remove(addr);
        desk.kills.push((now, addr.clone()));
        drop(desk);
        let site = self.sites.get_mut(addr).expect("known site");
        Handle::current().kill(site.machine.id());
        power_failure(&site.disk);
        site.handle.lock().expect("handle lock").take();
        site.up = false;
        self.note(addr, "crashed");
    }

    /// Crashes `addr` (or, with none, the first site) in the instant it next reaches `moment`
    /// (see [`Fault::CrashAt`]). A site has one armed crash at most.
    pub fn arm_crash(&mut self, addr: Option<&SiteAddr>, moment: Moment) {
        let mut desk = self.desk();
        desk.armed.retain(|(site, _)| site.as_ref() != addr);
        desk.armed.push((addr.cloned(), moment));
        drop(desk);
        let what = format!("will crash in the middle of {}", moment.name());
        match addr {
            Some(addr) => self.note(addr, &what),
            None => self.note_all(&format!("the next site to reach it {what}")),
        }
    }

    /// The operator restarts a site with another helper (see [`Fault::Rejoin`]).
    pub fn rejoin(&mut self, addr: &SiteAddr, helper: &SiteAddr) {
        let cfg = self.sites[addr].cfg.lock().expect("cfg lock").site.clone();
        if cfg.group_creator || !cfg.sites.is_empty() || addr == helper {
            return;
        }
        self.reach("rejoin");
        self.reconfigure(addr, |cfg| cfg.helper = Some(helper.clone()));
        self.note(addr, &format!("helper changed to {helper}"));
        if self.sites[addr].up && !self.desk().paused.contains(addr) {
            self.process_restart(addr);
        }
    }

    /// The operator upgrades a site to protocol version 2: stop, new version, start.
    pub fn upgrade(&mut self, addr: &SiteAddr) {
        let version = self.sites[addr]
            .cfg
            .lock()
            .expect("cfg lock")
            .site
            .protocol_version;
        if version >= 2 {
            return;
        }
        self.reach("upgrade");
        self.reconfigure(addr, |cfg| cfg.protocol_version = 2);
        self.note(addr, "upgraded to protocol version 2");
        if self.sites[addr].up && !self.desk().paused.contains(addr) {
            self.process_restart(addr);
        }
    }

    /// Stops a site's process and starts it again at once: nothing on its disk is lost.
    fn process_restart(&mut self, addr: &SiteAddr) {
        let now = self.now_ms();
        self.desk().kills.push((now, addr.clone()));
        let machine = self.sites[addr].machine.id();
        Handle::current().kill(machine);
        Handle::current().restart(machine);
        self.note(addr, "restarted by the operator");
    }

    /// Restarts a crashed site. Its node opens the disk as the file storage opens its files,
    /// dropping a torn or corrupt tail (the site resyncs the rest from the group).
    pub fn restart(&mut self, addr: &SiteAddr) {
        self.desk().failed.remove(addr);
        let site = self.sites.get_mut(addr).expect("known site");
        Handle::current().restart(site.machine.id());
        site.up = true;
        self.note(addr, "restarted");
    }

    /// Cuts every link between the two sides (both directions).
    pub fn partition(&self, a: &[SiteAddr], b: &[SiteAddr]) {
        self.reach("fault_partition");
        self.set_links(a, b, false);
        self.note_all(&format!("partition {a:?} | {b:?}"));
    }

    /// Cuts (`up` false) or repairs both directions of every link between a site of `a` and a
    /// different site of `b`. Returns whether there was any such link.
    fn set_links(&self, a: &[SiteAddr], b: &[SiteAddr], up: bool) -> bool {
        let net = NetSim::current();
        let mut any = false;
        for x in a {
            for y in b.iter().filter(|y| *y != x) {
                let (x, y) = (self.sites[x].machine.id(), self.sites[y].machine.id());
                if up {
                    net.unclog_link(x, y);
                    net.unclog_link(y, x);
                } else {
                    net.clog_link(x, y);
                    net.clog_link(y, x);
                }
                any = true;
            }
        }
        any
    }

    /// Cuts both directions of every link between a site of `a` and a site of `b`, and no
    /// other (sites in neither still reach both: a bridge, or a non-transitive partition).
    pub fn cut(&self, a: &[SiteAddr], b: &[SiteAddr]) {
        if self.set_links(a, b, false) {
            self.reach("fault_cut");
            self.note_all(&format!("cut {a:?} <-> {b:?}"));
        }
    }

    /// Repairs both directions of every link between `a` and `b`.
    pub fn mend(&self, a: &[SiteAddr], b: &[SiteAddr]) {
        self.set_links(a, b, true);
        self.note_all(&format!("mend {a:?} <-> {b:?}"));
    }

    /// Repairs every link.
    pub fn heal(&self) {
        let net = NetSim::current();
        for x in self.sites.values() {
            for y in self.sites.values() {
                net.unclog_link(x.machine.id(), y.machine.id());
            }
        }
        self.note_all("heal");
    }

    /// Sets the chance that a packet is lost and the range of delivery delays (madsim's network
    /// configuration, applied to every link).
    pub fn set_network(&self, loss_rate: f64, latency: std::ops::Range<Duration>) {
        // The repair at the end of a schedule (no loss, 1..10 ms) is not a fault.
        if loss_rate > 0.0 || latency.end > Duration::from_millis(10) {
            self.reach("fault_network");
        }
        NetSim::current().update_config(|cfg| {
            cfg.packet_loss_rate = loss_rate;
            cfg.send_latency = latency.clone();
        });
        self.note_all(&format!("network loss {loss_rate} latency {latency:?}"));
    }

    /// The frame chaos every connection of this world draws from, and what it did so far.
    pub fn frame_chaos(&self) -> &LinkChaos {
        &self.chaos
    }

    /// Sets the chances (per mille) that a frame is sent twice, held back and sent after the
    /// next one, or dropped with its connection up, on every connection (see [`LinkChaos`]:
    /// madsim's TCP does none of these).
    pub fn shuffle(&self, chances: Chances) {
        if self.chaos.chances() == chances {
            return;
        }
        self.chaos.set(chances);
        let Chances {
            duplicate,
            reorder,
            drop,
        } = chances;
        let mut note = format!("frames duplicated {duplicate}/1000, reordered {reorder}/1000");
        if drop > 0 {
            note.push_str(&format!(", dropped {drop}/1000"));
        }
        self.note_all(&note);
    }

    /// Starts one more site with its own configuration and secret (a rogue, a late joiner). A
    /// site without [`GROUP_SECRET`] is an outsider: the group must refuse it, so the checkers
    /// do not expect it to hold the group's data.
    pub fn add_site(&mut self, index: usize, cfg: Config, secret: &[u8], seed: u64) {
        let addr = cfg.addr.clone();
        if secret != GROUP_SECRET {
            self.outsiders.insert(addr.clone());
        }
        assert!(
            !self.sites.contains_key(&addr),
            "{addr} is already in the world"
        );
        let site_cfg = cfg.clone();
        let node_cfg = Arc::new(Mutex::new(NodeConfig {
            chaos: ChaosHandle(Some(self.chaos.clone())),
            deliveries: DeliveryHook(Some(self.deliveries.clone())),
            ..NodeConfig::new(cfg, "sim", secret.to_vec())
        }));
        // Its own stream for the filesystem's crashes, apart from the node's.
        let disk = Disk::new(self.storage, seed ^ 0xd15c_0000_0000_0000);
        disk.keep_durable_marks(self.since.clone());
        // The desk holds the disk: a weak handle back, or neither would ever be freed.
        let (desk, doom, at) = (Arc::downgrade(&self.desk), self.doom.clone(), addr.clone());
        disk.watch_appends(Box::new(move |records| {
            if !starts_a_removal(records) {
                return;
            }
            if let Some(desk) = desk.upgrade() {
                doom_if_armed(&desk, &doom, &at, |moment| moment == Moment::Removal);
            }
        }));
        let clock = Arc::new(SkewedClock::new());
        let handle: Slot = Arc::default();
        self.clients
            .slots
            .lock()
            .expect("slots lock")
            .insert(addr.clone(), handle.clone());
        let machine = spawn_site(
            SiteMachine {
                cfg: node_cfg.clone(),
                disk: disk.clone(),
                clock: clock.clone(),
                slot: handle.clone(),
                trace: self.trace.clone(),
                desk: self.desk.clone(),
                doom: self.doom.clone(),
                start: self.start,
                seed,
            },
            index,
        );
        let site = SimSite {
            machine,
            disk,
            clock,
            cfg: node_cfg,
            handle,
            up: true,
        };
        self.desk().machines.insert(addr.clone(), site.machine.id());
        if !self.outsiders.contains(&addr) {
            self.desk().insiders.insert(addr.clone());
        }
        self.desk().disks.insert(addr.clone(), site.disk.clone());
        self.sites.insert(addr.clone(), site);
        let shape = {
            let cfg = &site_cfg;
            let membership = if !cfg.sites.is_empty() {
                format!("static list of {}", cfg.sites.len())
            } else if cfg.group_creator {
                "creates the group".to_string()
            } else {
                match &cfg.helper {
                    Some(helper) => format!("joins through {helper}"),
                    None => "no helper".to_string(),
                }
            };
            format!(
                "started: priority {}, {}, ack policy {}, protocol version {}",
                cfg.priority,
                membership,
                cfg.ack_policy.name(),
                cfg.protocol_version
            )
        };
        self.note(&addr, &shape);
    }

    /// Applies one fault of a schedule. Site `i` is the one at [`site_addr`]`(i + 1)`; a fault
    /// naming a site that has not started yet (a late joiner) does nothing to it.
    pub fn apply(&mut self, fault: &Fault) {
        let started: BTreeSet<SiteAddr> = self.sites.keys().cloned().collect();
        let site = |i: &usize| Some(site_addr(*i + 1)).filter(|a| started.contains(a));
        let sites = |list: &[usize]| list.iter().filter_map(site).collect::<Vec<SiteAddr>>();
        match fault {
            Fault::Crash { site: i } => {
                if let Some(addr) = site(i).filter(|a| self.sites[a].up) {
                    self.crash(&addr);
                }
            }
            Fault::TornCrash { site: i } => {
                if let Some(addr) = site(i).filter(|a| self.sites[a].up) {
                    self.crash_tearing(&addr);
                }
            }
            Fault::CorruptDisk { site: i } => {
                if let Some(addr) = site(i) {
                    self.corrupt(&addr);
                }
            }
            Fault::PowerCut { site: i, after_ops } => {
                if let Some(addr) = site(i) {
                    self.cut_power(&addr, *after_ops);
                }
            }
            Fault::Switchover { to } => {
                if let Some(to) = site(to) {
                    self.operate(Request::StepDown { to });
                }
            }
            Fault::Remove { site: s, via } => {
                if let (Some(s), Some(via)) = (site(s), site(via)) {
                    self.operate_via(via, Request::RemoveSite { site: s });
                }
            }
            Fault::Archive { keep } => self.operate(Request::Archive {
                keep_records: *keep,
            }),
            Fault::Pause { site: i } => {
                if let Some(addr) = site(i) {
                    self.pause(&addr);
                }
            }
            Fault::Resume { site: i } => {
                if let Some(addr) = site(i) {
                    self.resume(&addr);
                }
            }
            Fault::Clog { from, to } => {
                if let (Some(from), Some(to)) = (site(from), site(to)) {
                    if from != to {
                        self.clog(&from, &to);
                    }
                }
            }
            Fault::Cut { a, b } => self.cut(&sites(a), &sites(b)),
            Fault::Mend { a, b } => self.mend(&sites(a), &sites(b)),
            Fault::Restart { site: i } => {
                if let Some(addr) = site(i).filter(|a| !self.sites[a].up) {
                    self.restart(&addr);
                }
            }
            Fault::CrashAt { site: None, moment } => self.arm_crash(None, *moment),
            Fault::CrashAt {
                site: Some(i),
                moment,
            } => {
                if let Some(addr) = site(i) {
                    self.arm_crash(Some(&addr), *moment);
                }
            }
            Fault::Rejoin { site: i, helper } => {
                if let (Some(addr), Some(helper)) = (site(i), site(helper)) {
                    self.rejoin(&addr, &helper);
                }
            }
            Fault::Upgrade { site: i } => {
                if let Some(addr) = site(i) {
                    self.upgrade(&addr);
                }
            }
            Fault::Partition { side } => {
                self.heal();
                let a = sites(side);
                let b: Vec<SiteAddr> = started.iter().filter(|x| !a.contains(x)).cloned().collect();
                if !a.is_empty() && !b.is_empty() {
                    self.partition(&a, &b);
                }
            }
            Fault::Heal => self.heal(),
            Fault::Shuffle {
                duplicate_per_mille,
                reorder_per_mille,
                drop_per_mille,
            } => self.shuffle(Chances {
                duplicate: *duplicate_per_mille,
                reorder: *reorder_per_mille,
                drop: *drop_per_mille,
            }),
            Fault::Network {
                loss_per_mille,
                latency_min_ms,
                latency_max_ms,
            } => {
                let latency = Duration::from_millis(*latency_min_ms)
                    ..Duration::from_millis((*latency_max_ms).max(*latency_min_ms + 1));
                self.set_network(f64::from(*loss_per_mille) / 1000.0, latency);
            }
            Fault::Drift { site: i, drift_ppm } => {
                if let Some(addr) = site(i) {
                    self.drift(&addr, *drift_ppm);
                }
            }
            Fault::Skew { site: i, skew_ms } => {
                if let Some(addr) = site(i) {
                    self.skew(&addr, *skew_ms);
                }
            }
        }
    }

    /// Runs a schedule under a steady write load: a background client writes every
    /// `write_every_ms` to whoever it believes is master (see [`World::start_load`]) while the
    /// faults are applied at their times; then the group is left alone for `settle_ms` before
    /// the caller checks it.
    pub async fn run_schedule(&mut self, schedule: &Schedule, write_every_ms: u64, settle_ms: u64) {
        let load = self.start_load(write_every_ms);
        for event in &schedule.events {
            let now = self.now_ms();
            if event.at_ms > now {
                tokio::time::sleep(Duration::from_millis(event.at_ms - now)).await;
            }
            self.apply(&event.fault);
        }
        load.stop().await;
        self.settle(settle_ms).await;
    }

    /// Leaves the group alone (but for the operator) for `quiet_ms` before the checks. The
    /// liveness checks then expect every live site caught up.
    pub async fn settle(&mut self, quiet_ms: u64) {
        // Crashes armed for moments that never came are faults that did not happen.
        self.desk().armed.clear();
        self.note_all(&format!("left alone for {quiet_ms} ms"));
        tokio::time::sleep(Duration::from_millis(quiet_ms)).await;
        self.quiet_ms = quiet_ms;
    }

    /// Every site event recorded so far, in order.
    pub fn events(&self) -> Vec<Observed> {
        self.trace.lock().expect("trace lock").events.clone()
    }

    /// The members a site's membership database lists (empty for a static legacy group).
    pub fn members(&self, addr: &SiteAddr) -> Vec<SiteAddr> {
        self.sites[addr]
            .disk
            .replay()
            .map(|s| s.db.members().keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A running site's database fingerprint (applied position and content digest).
    pub async fn digest(&self, addr: &SiteAddr) -> Option<(replication::LogPos, u64)> {
        answer(self.handle(addr)?.digest()).await
    }

    /// Records a line of the scenario's own (an expectation, a step) in the trace.
    pub fn note_scenario(&self, what: &str) {
        self.note_all(what);
    }

    /// How long a group with `timeouts` may take, once every fault is repaired, to have a master
    /// and every site caught up: lose the master (heartbeat timeout), hold an election (timeout
    /// plus jitter) that may collide once and be held again, then a few request rounds to sync.
    pub fn liveness_bound_ms(timeouts: &replication::site::Timeouts) -> u64 {
        let election = timeouts.election_timeout_ms + timeouts.election_jitter_ms;
        timeouts.heartbeat_timeout_ms + 3 * election + 10 * timeouts.request_retry_ms
    }

    /// The master with the highest generation among running sites, if any.
    pub async fn master(&self) -> Option<SiteAddr> {
        self.clients.find_master().await
    }

    /// Waits (in simulated time) until some site is master, up to `timeout`.
    pub async fn wait_for_master(&self, timeout: Duration) -> Option<SiteAddr> {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if let Some(m) = self.master().await {
                return Some(m);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Sends a request to a site.
    pub async fn request(&self, addr: &SiteAddr, request: Request) -> Result<Reply, RequestError> {
        self.clients.request(addr, request).await
    }

    /// Starts a background client writing every `every_ms` to whoever it believes is master;
    /// its operations go into the history like every other write.
    pub fn start_load(&self, every_ms: u64) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = madsim::task::spawn(self.clients.clone().load(every_ms, stop.clone()));
        Load { stop, task }
    }

    /// The trace so far.
    pub fn trace(&self) -> Vec<String> {
        self.trace.lock().expect("trace lock").lines.clone()
    }

    /// Simulated milliseconds since the world was made.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Writes `key = value` through `addr`, as a client would, and records the operation in the
    /// history with its outcome.
    pub async fn write(&self, addr: &SiteAddr, key: &str, value: &str) -> Outcome {
        outcome_of(&self.commit(addr, key, value).await)
    }

    /// Like [`World::write`], but returns the site's own answer.
    pub async fn commit(
        &self,
        addr: &SiteAddr,
        key: &str,
        value: &str,
    ) -> Result<Reply, RequestError> {
        self.clients.commit(addr, key, value).await
    }

    /// The history of client operations so far.
    pub fn history(&self) -> Vec<Operation> {
        self.clients.history.lock().expect("history lock").clone()
    }

    /// Checks the world and packs everything into a [`RunResult`].
    pub async fn result(&self, scenario: &str, seed: u64) -> RunResult {
        let mut violations = self.check().await;
        // A checker that reads what the run left behind finds its violation at the end.
        for v in &mut violations {
            v.at_ms.get_or_insert(self.now_ms());
        }
        let history = self.history();
        let count =
            |f: fn(&Outcome) -> bool| history.iter().filter(|op| f(&op.outcome)).count() as u64;
        let mut messages = 0;
        for addr in self.addrs() {
            if let Some(h) = self.handle(&addr) {
                messages += answer(h.stats()).await.map_or(0, |s| s.site.messages_sent);
            }
        }
        let reached = self.coverage();
        let trace = self.trace.lock().expect("trace lock");
        let elections = trace
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    NodeEvent::Site(replication::site::Event::Elected { .. })
                )
            })
            .count() as u64;
        RunResult {
            scenario: scenario.to_string(),
            seed,
            outcome: if violations.is_empty() {
                RunOutcome::Pass
            } else {
                RunOutcome::Fail
            },
            violations,
            trace_hash: format!("{:016x}", trace.hash()),
            sim_ms: self.now_ms(),
            counts: Counts {
                events: trace.events.len() as u64,
                messages,
                elections,
                writes_ok: count(|o| matches!(o, Outcome::Ok { .. })),
                writes_failed: count(|o| matches!(o, Outcome::Failed(_))),
                writes_unknown: count(|o| matches!(o, Outcome::Unknown(_))),
            },
            reached,
            trace: trace.lines.clone(),
            sites: Vec::new(),
            history: history
                .iter()
                .map(|op| crate::result::Write {
                    site: op.site.to_string(),
                    key: String::from_utf8_lossy(&op.key).into_owned(),
                    invoked_ms: op.invoked_ms,
                    completed_ms: op.completed_ms,
                    outcome: match op.outcome {
                        Outcome::Ok { .. } => "ok",
                        Outcome::Failed(_) => "failed",
                        Outcome::Unknown(_) => "unknown",
                    }
                    .into(),
                })
                .collect(),
        }
    }

    /// Runs every checker on the world as it is now (call it once the group is quiet) and
    /// returns the violations found, first of each kind.
    pub async fn check(&self) -> Vec<Violation> {
        let events = self.trace.lock().expect("trace lock").events.clone();
        let history = self.history();
        let mut violations = Vec::new();
        // A two-site group without strictness chooses availability: each side of a cut link
        // elects itself, as in Berkeley DB, and the duplicate masters are resolved when they
        // meet (liveness and the sync checks below still hold it to that).
        let lenient_pair = self.sites.len() == 2
            && self
                .sites
                .values()
                .any(|s| !s.cfg.lock().expect("cfg lock").site.two_site_strict);
        let electorate = self.electorate();
        if lenient_pair {
            // Rot of synced records can take a site's membership records with it: the other
            // member is then no member to the site, whatever the events said before.
            if self.durability_void.is_none() {
                violations.extend(check::lenient_pair_waits_for_its_partner(
                    &events,
                    &electorate,
                ));
            }
        } else {
            violations.extend(check::one_master_per_generation(&events));
        }
        violations.extend(check::elections_are_sound(&events, &electorate));
        violations.extend(self.all_available_is_kept(&events, &history));
        violations.extend(self.counters_match_events().await);
        violations.extend(check::rollbacks_are_sound(&events));
        let mut logs = BTreeMap::new();
        let mut replayed = BTreeMap::new();
        let mut live = BTreeMap::new();
        let mut members = BTreeMap::new();
        let mut vote_guards = BTreeMap::new();
        let group = self
            .sites
            .iter()
            .filter(|(a, _)| !self.outsiders.contains(*a));
        for (addr, site) in group {
            if let Ok(log) = site.disk.log() {
                logs.insert(addr.clone(), log);
            }
            if let Ok(snapshot) = site.disk.replay() {
                replayed.insert(addr.clone(), (snapshot.db.applied(), snapshot.db.digest()));
            }
            if let Some(h) = self.handle(addr) {
                let status = answer(h.status()).await;
                // A site that stopped for good (its storage failed mid-write, say) serves
                // nothing: its database in memory may be ahead of a log that lost writes, and
                // only what its disk replays to counts (the other checks read the disk).
                let stopped = status.as_ref().is_some_and(|s| s.stopped.is_some());
                if !stopped {
                    if let Some(digest) = answer(h.digest()).await {
                        live.insert(addr.clone(), digest);
                    }
                }
                // The membership as the running site holds it (its database is the replay of its
                // disk, which `database_is_replay` checks; reading the disk again here would stop
                // at a damaged record the site has not read yet): the sites it counts.
                if let Some(status) = status {
                    vote_guards.insert(addr.clone(), status.vote_guard);
                    members.insert(addr.clone(), present_members(&status));
                }
            }
        }
        violations.extend(check::database_is_replay(&live, &replayed));
        violations.extend(check::no_client_accepted_a_write(&history, &events, &logs));
        let reads = self.clients.reads.lock().expect("reads lock").clone();
        violations.extend(check::reads_are_sane(&reads, &history, &events));
        // Every site that was ever part of the group: removals shrink it, and a write
        // acknowledged in a larger group is held to what that group promised.
        let group_size = self
            .sites
            .keys()
            .filter(|a| !self.outsiders.contains(*a))
            .count();
        let electable = self
            .sites
            .iter()
            .filter(|(a, _)| !self.outsiders.contains(*a))
            .filter(|(_, s)| s.cfg.lock().expect("cfg lock").site.priority > 0)
            .count();
        // A removal is a write like any other: under a policy that does not promise survival,
        // or once rot destroyed synced records, it can be lost after the removed site was told
        // and stopped (LocalSiteRemoved, as on Berkeley DB). The group then counts a member that
        // will never answer, which no check may hold against the engine.
        let removals_may_be_lost = self.durability_void.is_some()
            || lenient_pair
            || self.sites.values().any(|s| {
                let policy = s.cfg.lock().expect("cfg lock").site.ack_policy;
                !check::survives_failover(policy, group_size, electable)
            });
        let told_removed: BTreeSet<SiteAddr> = events
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    NodeEvent::Site(replication::site::Event::LocalSiteRemoved)
                )
            })
            .map(|e| e.site.clone())
            .collect();
        let excused = |a: &SiteAddr| removals_may_be_lost && told_removed.contains(a);
        // Leased reads promise every acknowledged write, so only where acknowledged writes
        // survive at all.
        if !removals_may_be_lost {
            let leased = self
                .clients
                .leased_reads
                .lock()
                .expect("leased reads lock")
                .clone();
            violations.extend(check::leased_reads_are_linearizable(&leased, &history));
        }
        match self.master().await {
            Some(master) => {
                // Sites that should run: up, not frozen, and still members (a static group's
                // database lists nobody).
                let listed: Vec<SiteAddr> = members.get(&master).cloned().unwrap_or_default();
                let expected: Vec<SiteAddr> = self
                    .sites
                    .iter()
                    .filter(|(a, s)| s.up && !self.outsiders.contains(*a))
                    .filter(|(a, _)| !self.desk().paused.contains(*a))
                    .filter(|(a, _)| listed.is_empty() || listed.contains(*a))
                    .filter(|(a, _)| !excused(a))
                    .map(|(a, _)| a.clone())
                    .collect();
                violations.extend(check::every_site_runs(&expected, &live));
                // A site removed from the group may keep running (it got LocalSiteRemoved and
                // follows no one, as on Berkeley DB): it is no longer held to the group's log.
                let member =
                    |a: &SiteAddr| (listed.is_empty() || listed.contains(a)) && !excused(a);
                let mut live_members: BTreeMap<SiteAddr, (replication::LogPos, u64)> = live
                    .iter()
                    .filter(|(a, _)| member(a))
                    .map(|(a, d)| (a.clone(), *d))
                    .collect();
                // A quiet group can still write: a joiner whose join the policy cannot
                // acknowledge asks again every few seconds, and each attempt is a record. A
                // record in flight at the instant of sampling is no laggard: sample again a
                // few times before calling anyone behind.
                for _ in 0..CATCH_UP_SAMPLES {
                    if check::all_caught_up(&master, &live_members, self.quiet_ms).is_none() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    for (addr, digest) in live_members.iter_mut() {
                        if let Some(h) = self.handle(addr) {
                            if let Some(now) = answer(h.digest()).await {
                                *digest = now;
                            }
                        }
                    }
                }
                violations.extend(check::all_caught_up(&master, &live_members, self.quiet_ms));
                members.retain(|a, _| member(a));
                // A change still spreading (a join that lands as the group goes quiet: joiners
                // take turns, each asking again a second or so after being told to wait) is no
                // divergence: sample again a few times, as for the logs.
                for _ in 0..CATCH_UP_SAMPLES {
                    if check::membership_converges(&master, &members).is_none() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    for (addr, current) in members.iter_mut() {
                        if let Some(h) = self.handle(addr) {
                            if let Some(status) = answer(h.status()).await {
                                *current = present_members(&status);
                            }
                        }
                    }
                }
                violations.extend(check::membership_converges(&master, &members));
                // A site outside the master's membership (removed, or whose join the current
                // history never recorded) stops following, as on Berkeley DB: whatever its log
                // holds is no longer the group's.
                let running_logs: BTreeMap<SiteAddr, Vec<LogRecord>> = logs
                    .iter()
                    .filter(|(a, _)| live.contains_key(*a) && member(a))
                    .map(|(a, l)| (a.clone(), l.clone()))
                    .collect();
                violations.extend(check::logs_are_prefixes(&master, &running_logs));
                let archived = self.sites[&master]
                    .disk
                    .first_lsn()
                    .map_or(0, |first| first.saturating_sub(1));
                let master_log = logs.get(&master).cloned().unwrap_or_default();
                // What each write's policy promises: survival of any failover, or at least of
                // a group whose master never changed after the acknowledgement.
                let promised = |op: &Operation| {
                    let policy = self.sites[&op.site]
                        .cfg
                        .lock()
                        .expect("cfg lock")
                        .site
                        .ack_policy;
                    let strong = check::survives_failover(policy, group_size, electable);
                    check::write_is_promised(op, strong, lenient_pair, &master, &events)
                };
                if !lenient_pair {
                    violations.extend(check::rollbacks_remove_only_divergent_records(
                        &events,
                        &master,
                        &master_log,
                        archived,
                    ));
                }
                if self.durability_void.is_none() {
                    violations.extend(check::durable_writes_survive(
                        &history,
                        &master,
                        &master_log,
                        archived,
                        &promised,
                    ));
                }
                // Last, as it writes: once the group is whole and quiet, a write through the
                // master succeeds whenever its policy can be met by the members there are.
                let group: Vec<SiteAddr> = if listed.is_empty() {
                    self.sites
                        .keys()
                        .filter(|a| !self.outsiders.contains(*a))
                        .cloned()
                        .collect()
                } else {
                    listed.clone()
                };
                let whole = group.iter().all(|a| live.contains_key(a) && !excused(a));
                let master_cfg = self.sites[&master]
                    .cfg
                    .lock()
                    .expect("cfg lock")
                    .site
                    .clone();
                let electable_clients = group
                    .iter()
                    .filter(|a| **a != master)
                    .filter(|a| self.sites[*a].cfg.lock().expect("cfg lock").site.priority > 0)
                    .count();
                // A power cut armed during the faults but never reached is a fault that did not
                // happen: it must not fall on the probe.
                for site in self.sites.values() {
                    site.disk.disarm_power_cut();
                }
                if whole
                    && check::policy_can_be_met(
                        master_cfg.ack_policy,
                        group.len(),
                        electable_clients,
                    )
                {
                    let result = self
                        .commit(&master, "quiet probe", "written once the group is quiet")
                        .await;
                    if !matches!(outcome_of(&result), Outcome::Ok { .. }) {
                        violations.push(Violation {
                            invariant: "liveness".into(),
                            site: Some(master.clone()),
                            at_ms: Some(self.now_ms()),
                            detail: format!(
                                "a write through the master once the group was whole and quiet \
                                 ended {result:?}, though {} can be met by its {} members",
                                master_cfg.ack_policy.name(),
                                group.len()
                            ),
                        });
                    }
                }
            }
            None => {
                // A lost removal (see above) can leave a majority out of reach for good: then
                // no master is no violation. So can rot that took a change of who votes from
                // every electable site while a priority-0 voter still holds it.
                // A site with no membership database stands only in a static group: a joiner
                // (or a creator that lost its database) must first be admitted.
                let static_list = |a: &SiteAddr| {
                    !self.sites[a]
                        .cfg
                        .lock()
                        .expect("cfg lock")
                        .site
                        .sites
                        .is_empty()
                };
                let running: BTreeMap<SiteAddr, Vec<SiteAddr>> = members
                    .iter()
                    .filter(|(a, _)| live.contains_key(*a))
                    .filter(|(a, m)| !m.is_empty() || static_list(a))
                    .map(|(a, m)| (a.clone(), m.clone()))
                    .collect();
                let lasts = live
                    .iter()
                    .map(|(a, (last, _))| (a.clone(), *last))
                    .collect();
                let guards = vote_guards
                    .iter()
                    .filter(|(a, _)| live.contains_key(*a))
                    .map(|(a, g)| (a.clone(), *g))
                    .collect();
                let stranded = self.durability_void.is_some()
                    && check::electables_stranded_below_a_guard(
                        &running,
                        &lasts,
                        &guards,
                        &electorate.unelectable,
                    );
                if !told_removed.iter().any(excused) && !stranded {
                    violations.push(Violation {
                        invariant: "liveness".into(),
                        site: None,
                        at_ms: Some(self.now_ms()),
                        detail: "no master when the group should be quiet".into(),
                    });
                }
            }
        }
        violations
    }

    /// Each running site's counters against its events since it last started (see
    /// [`check::counters_match_events`]).
    async fn counters_match_events(&self) -> Vec<Violation> {
        let mut read = Vec::new();
        for addr in self.sites.keys() {
            let Some(h) = self.handle(addr) else { continue };
            let before = {
                let trace = self.trace.lock().expect("trace lock");
                let from = trace.starts.get(addr).copied().unwrap_or(0);
                check::Tally::of_events(addr, &trace.events[from..])
            };
            // A site whose events overflowed its channel lost some: nothing to hold it to.
            if let Some(stats) = answer(h.stats()).await.filter(|s| s.events_dropped == 0) {
                read.push((addr.clone(), check::Tally::of_stats(&stats.site), before));
            }
        }
        // Long enough for every event reported before the counters were read to be recorded.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let trace = self.trace.lock().expect("trace lock");
        read.iter()
            .filter_map(|(addr, counted, before)| {
                let from = trace.starts.get(addr).copied().unwrap_or(0);
                let after = check::Tally::of_events(addr, &trace.events[from..]);
                check::counters_match_events(addr, counted, before, &after)
            })
            .collect()
    }

    /// Who may vote and win, as the sites were configured, with every kill of the run.
    /// [`check::all_available_waits_for_connected_clients`] on this world: its base members are
    /// the group's creators, or the static list where nobody created a group.
    fn all_available_is_kept(
        &self,
        events: &[Observed],
        history: &[Operation],
    ) -> Option<Violation> {
        let cfg = |site: &SimSite| site.cfg.lock().expect("cfg lock").site.clone();
        let group = || {
            self.sites
                .iter()
                .filter(|(a, _)| !self.outsiders.contains(*a))
        };
        let creators: BTreeSet<SiteAddr> = group()
            .filter(|(_, site)| cfg(site).group_creator)
            .map(|(a, _)| a.clone())
            .collect();
        let base_members = if creators.is_empty() {
            group().flat_map(|(_, site)| cfg(site).sites).collect()
        } else {
            creators
        };
        let removals_asked = self
            .clients
            .removals_asked
            .lock()
            .expect("removals lock")
            .clone();
        let kills = self.desk().kills.clone();
        let view = check::GroupView {
            base_members: &base_members,
            removals_asked: &removals_asked,
            kills: &kills,
        };
        let all_available = |a: &SiteAddr| {
            self.sites
                .get(a)
                .is_some_and(|s| cfg(s).ack_policy == AckPolicy::AllAvailable)
        };
        let durable = |a: &SiteAddr, ms: u64, lsn: u64| {
            self.sites
                .get(a)
                .is_some_and(|s| s.disk.durable_through_by(ms, lsn))
        };
        check::all_available_waits_for_connected_clients(
            history,
            events,
            &view,
            &all_available,
            &durable,
        )
    }

    fn electorate(&self) -> check::Electorate {
        let mut electorate = check::Electorate {
            kills: self.desk().kills.clone(),
            ..Default::default()
        };
        for (addr, site) in &self.sites {
            let cfg = site.cfg.lock().expect("cfg lock");
            electorate.founders.extend(cfg.site.sites.iter().cloned());
            if cfg.site.group_creator {
                electorate.founders.insert(addr.clone());
            }
            if cfg.site.priority == 0 {
                electorate.unelectable.insert(addr.clone());
            }
        }
        electorate
    }

    /// The run's fingerprint.
    pub fn trace_hash(&self) -> u64 {
        self.trace.lock().expect("trace lock").hash()
    }

    fn note(&self, addr: &SiteAddr, what: &str) {
        let ms = self.start.elapsed().as_millis();
        self.trace
            .lock()
            .expect("trace lock")
            .world(ms, format!("{addr} {what}"));
    }

    fn note_all(&self, what: &str) {
        let ms = self.start.elapsed().as_millis();
        self.trace
            .lock()
            .expect("trace lock")
            .world(ms, format!("world {what}"));
    }
}

/// Everything a simulated machine needs to run a site, cloned into its init closure.
#[derive(Clone)]
struct SiteMachine {
    cfg: Arc<Mutex<NodeConfig>>,
    disk: Disk,
    clock: Arc<SkewedClock>,
    slot: Arc<Mutex<Option<NodeHandle>>>,
    trace: Trace,
    desk: SharedDesk,
    /// Wakes the executioner when this site reaches an armed moment.
    doom: Arc<tokio::sync::Notify>,
    start: tokio::time::Instant,
    seed: u64,
}

/// The operator answers a site that refused to start until it is given a helper (its storage
/// says it must join the group again): as the error advises, another site that has been a
/// member becomes its helper, and the site is started again. When no other site ever was one
/// (the group's only copy of its database is what was lost), the group is started afresh: this
/// site on an empty disk, to create it again, and so is every site that had begun to join it
/// (what a joiner received of the lost group must not pass for the new one's: both number
/// their first generation 1).
fn operator_names_a_helper(m: &SiteMachine, addr: &SiteAddr, note: impl Fn(String)) {
    use replication::site::Event;
    let (been_members, joiners) = {
        let trace = m.trace.lock().expect("trace lock");
        let sites_with = |what: &dyn Fn(&NodeEvent) -> bool| -> BTreeSet<SiteAddr> {
            let events = trace.events.iter();
            events
                .filter(|e| e.site != *addr && what(&e.event))
                .map(|e| e.site.clone())
                .collect()
        };
        (
            sites_with(&|e| {
                matches!(
                    e,
                    NodeEvent::Site(Event::StartupDone { .. } | Event::BecameMaster { .. })
                )
            }),
            sites_with(&|e| matches!(e, NodeEvent::Site(Event::NewMaster { .. }))),
        )
    };
    let mut desk = m.desk.lock().expect("desk lock");
    let others: Vec<&SiteAddr> = desk
        .insiders
        .iter()
        .filter(|a| been_members.contains(*a))
        .collect();
    // One that is running if there is one; the same choice every time for the same state.
    let helper = others
        .iter()
        .find(|a| !desk.failed.contains(**a))
        .or(others.first())
        .map(|a| (*a).clone());
    match helper {
        Some(helper) => {
            m.cfg.lock().expect("cfg lock").site.helper = Some(helper.clone());
            note(format!("operator: helper set to {helper}"));
        }
        None => {
            m.disk.wipe(m.seed);
            note("operator: disk emptied, to create a new group".to_string());
            let joiners: Vec<SiteAddr> = joiners.intersection(&desk.insiders).cloned().collect();
            for joiner in &joiners {
                Handle::current().kill(desk.machines[joiner]);
                desk.disks[joiner].wipe(m.seed ^ 1);
                desk.kills
                    .push((m.start.elapsed().as_millis() as u64, joiner.clone()));
                desk.failed.insert(joiner.clone());
                note(format!(
                    "operator: {joiner} had begun to join the lost group: stopped, disk emptied"
                ));
            }
        }
    }
    desk.failed.insert(addr.clone());
}

/// Creates the madsim machine for a site: its init (run again at every restart) starts the node
/// and records its events until the machine is killed.
fn spawn_site(machine: SiteMachine, index: usize) -> SimNode {
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, index as u8 + 1));
    let name = machine.cfg.lock().expect("cfg lock").site.addr.to_string();
    Handle::current()
        .create_node()
        .name(name)
        .ip(ip)
        .init(move || {
            let m = machine.clone();
            async move {
                let cfg = m.cfg.lock().expect("cfg lock").clone();
                let addr = cfg.site.addr.clone();
                let clock: Arc<dyn node::Clock> = m.clock.clone();
                // A restart by the operator leaves the old node's handle behind: it is dead.
                m.slot.lock().expect("handle lock").take();
                let note = |line: String| {
                    let ms = m.start.elapsed().as_millis();
                    m.trace
                        .lock()
                        .expect("trace")
                        .world(ms, format!("{addr} {line}"));
                };
                let leave_to_the_operator = || {
                    let mut desk = m.desk.lock().expect("desk lock");
                    desk.failed.insert(addr.clone());
                };
                // Opening the disk, as the file storage opens its files: a torn or damaged tail
                // is dropped here, at the moment the node reads it, and nowhere else.
                match m.disk.open(&format!("site {addr}")) {
                    Ok(0) => {}
                    Ok(dropped) => note(format!(
                        "opened its disk, dropping {dropped} damaged records"
                    )),
                    Err(error) => {
                        note(format!("failed to open its storage: {error}"));
                        leave_to_the_operator();
                        return;
                    }
                }
                let (handle, mut events) =
                    match node::start(cfg, m.disk.clone(), clock, m.seed).await {
                        Ok(started) => started,
                        Err(node::StartError::Open(OpenError::NeedsHelper(reason))) => {
                            note(format!("failed to start: {reason}"));
                            operator_names_a_helper(&m, &addr, note);
                            return;
                        }
                        Err(error) => {
                            note(format!("failed to start: {error}"));
                            leave_to_the_operator();
                            return;
                        }
                    };
                *m.slot.lock().expect("handle lock") = Some(handle);
                m.trace.lock().expect("trace").started(&addr);
                while let Some(event) = events.recv().await {
                    if let NodeEvent::Site(replication::site::Event::StorageFailed { .. }) = event {
                        leave_to_the_operator();
                    }
                    doom_if_armed(&m.desk, &m.doom, &addr, |moment| is_moment(&event, moment));
                    let ms = m.start.elapsed().as_millis();
                    m.trace.lock().expect("trace").site(ms, &addr, event);
                }
            }
        })
        .build()
}

/// The sites a running site counts as members (`Present` in its membership database): one
/// being removed is no longer held to the group's log; one still being added may never be, if
/// the group cannot acknowledge its join (a policy no member can meet).
fn present_members(status: &replication::node::NodeStatus) -> Vec<SiteAddr> {
    status
        .members
        .iter()
        .filter(|(_, m)| m.state == replication::log::MemberState::Present)
        .map(|(a, _)| a.clone())
        .collect()
}
