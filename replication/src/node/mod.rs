//! The node driver: the async shell around a [`Site`]. It owns the site's connections, timers and
//! storage, feeds the core its inputs and carries out its outputs.
//!
//! Written against tokio's API through madsim's shim: built normally it is real tokio over real
//! TCP; built with `--cfg madsim` the same code runs on madsim's simulated network and clock. The
//! two worlds differ only in what is injected: the [`Storage`] (files, or the simulator's faulty
//! disk) and the [`Clock`] (monotonic, or skewed per site). The driver itself must never decide
//! anything about replication; it must bound every queue, and it must never trust a peer before
//! the handshake has proven it holds the group secret.

mod chaos;
mod conn;
mod gate;
mod inbox;
mod observe;
mod outbox;
pub mod tls;

pub use chaos::{Chances, ChaosHandle, LinkChaos};
pub use observe::{DeliveryHook, DeliveryObserver};

use crate::log::Member;
use crate::site::{
    Config, Event, Input, Output, Reply, Request, RequestError, RequestId, Site, Stats,
};
use crate::storage::{Storage, StorageError};
use crate::types::{SiteAddr, Time};
use crate::wire::{Message, DEFAULT_FRAME_LIMIT};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where time comes from: the one clock seam of the driver. The simulator injects a clock with
/// per-site skew and drift; `repsite` uses [`MonotonicClock`].
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since this clock's epoch; never goes backwards for the core (the site clamps).
    fn now(&self) -> Time;
}

/// Milliseconds since the clock was made, from tokio's (or madsim's) monotonic clock.
#[derive(Debug)]
pub struct MonotonicClock {
    start: tokio::time::Instant,
}

impl MonotonicClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        MonotonicClock {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Time {
        Time(self.start.elapsed().as_millis() as u64)
    }
}

/// Whether two optional shared handles (TLS, chaos, a delivery observer) are the same: both
/// absent, or both pointing at one value. Such handles are set by code and compared by
/// identity, never by content.
fn same_shared<T: ?Sized>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// What a node needs beyond the site's own configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// The site.
    pub site: Config,
    /// The replication group's name; peers of another group are refused.
    pub group: String,
    /// The group secret every member holds.
    pub secret: Vec<u8>,
    /// The address to listen on (usually the site's own address).
    pub listen: String,
    /// Largest frame accepted or sent.
    pub frame_limit: u32,
    /// How long a peer has to complete the handshake.
    pub handshake_timeout_ms: u64,
    /// First reconnection delay; doubles on each failure up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    /// Longest reconnection delay.
    pub reconnect_max_ms: u64,
    /// A connection on which nothing arrives for this long is closed (a stalled stream looks
    /// open forever otherwise); each end sends a keep-alive after a third of it in silence.
    pub idle_timeout_ms: u64,
    /// Where this site's operator reaches it (its admin address), told to every peer.
    #[serde(default)]
    pub admin: Option<String>,
    /// Duplication, reordering and loss of sent frames, for simulation only (see [`LinkChaos`]).
    #[serde(skip)]
    pub chaos: ChaosHandle,
    /// Told of every message delivered to the site, for simulation only (see
    /// [`DeliveryObserver`]).
    #[serde(skip)]
    pub deliveries: DeliveryHook,
    /// TLS between sites, if configured (see [`tls`]).
    #[serde(skip)]
    pub tls: tls::TlsHandle,
}

impl NodeConfig {
    /// A node for `site`, listening on its own address, with default limits.
    pub fn new(site: Config, group: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        NodeConfig {
            listen: site.addr.to_string(),
            site,
            group: group.into(),
            secret: secret.into(),
            frame_limit: DEFAULT_FRAME_LIMIT,
            handshake_timeout_ms: 2_000,
            reconnect_min_ms: 50,
            reconnect_max_ms: 2_000,
            idle_timeout_ms: 3_000,
            admin: None,
            chaos: ChaosHandle::default(),
            deliveries: DeliveryHook::default(),
            tls: tls::TlsHandle::default(),
        }
    }
}

/// What a node reports: the site's events and what happened to its connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeEvent {
    /// An event of the site.
    Site(Event),
    /// A connection to `peer` passed the handshake.
    ConnectionEstablished {
        /// The peer.
        peer: SiteAddr,
        /// The agreed protocol version.
        version: u8,
    },
    /// The last connection to `peer` closed.
    ConnectionBroken {
        /// The peer.
        peer: SiteAddr,
    },
    /// Dialling `peer` failed; the node retries after a backoff.
    ConnectTryFailed {
        /// The peer.
        peer: SiteAddr,
        /// Why.
        error: String,
    },
    /// A connection was refused during the handshake (wrong secret, group, version, ...).
    HandshakeRefused {
        /// The remote end as the socket reports it.
        remote: String,
        /// Why.
        error: String,
    },
    /// A peer sent a frame that did not decode, or hung up in the middle of one; its
    /// connection was closed.
    MalformedFrame {
        /// The peer.
        peer: SiteAddr,
        /// What was wrong.
        error: String,
    },
}

/// Counters of a node: the site's statistics and the driver's own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// The site's statistics.
    pub site: Stats,
    /// Peers with an established connection.
    pub connected_peers: usize,
    /// Handshakes refused (inbound or outbound).
    pub handshakes_refused: u64,
    /// Connections closed for a malformed frame, or that ended in the middle of one.
    pub malformed_frames: u64,
    /// Messages the core sent that no connection could take (the core retries what matters).
    pub messages_dropped: u64,
    /// Events dropped because nobody read them fast enough.
    pub events_dropped: u64,
    /// Bytes written to peers.
    pub bytes_sent: u64,
    /// Bytes read from authenticated peers.
    pub bytes_received: u64,
}

/// What `repsite status` shows of a node: its counters, the group as its membership database
/// records it, and who it is connected to right now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's statistics.
    pub stats: NodeStats,
    /// The group membership database (empty while a legacy group has none yet).
    pub members: BTreeMap<SiteAddr, Member>,
    /// The peers with an established connection, in address order.
    pub connected: Vec<SiteAddr>,
    /// Every site's admin address as this node knows it: its own, and each peer's as the peer
    /// told it.
    pub admins: BTreeMap<SiteAddr, String>,
    /// Why the site stopped for good (its storage failed, it was removed), if it did: it then
    /// serves nothing, and its database in memory may be ahead of a log that lost writes.
    #[serde(default)]
    pub stopped: Option<String>,
    /// The log position below which the site refuses a candidate in an election
    /// (`Site::vote_guard`).
    #[serde(default)]
    pub vote_guard: crate::types::LogPos,
}

/// Requests from the handle to the node task.
enum Command {
    Request(Request, oneshot::Sender<Result<Reply, RequestError>>),
    Get(Vec<u8>, oneshot::Sender<Option<Vec<u8>>>),
    Stats(oneshot::Sender<NodeStats>),
    Digest(oneshot::Sender<(crate::types::LogPos, u64)>),
    Status(oneshot::Sender<NodeStatus>),
    Shutdown(oneshot::Sender<Result<(), StorageError>>),
}

/// What connection tasks tell the node task.
enum NetEvent {
    Established {
        id: u64,
        peer: SiteAddr,
        version: u8,
        out: PeerLink,
        inbox: inbox::Inbox,
    },
    Closed {
        id: u64,
        peer: SiteAddr,
    },
    Refused {
        remote: String,
        error: String,
    },
    DialFailed {
        peer: SiteAddr,
        error: String,
    },
    DialEnded {
        peer: SiteAddr,
    },
}

/// What woke the node's loop.
enum Woken {
    Command(Option<Command>),
    Net(NetEvent),
    /// Messages (or malformed frames) were delivered; they wait in the loop's buffer.
    Inbound,
    Alarm,
}

/// Bounds of the node's queues: a slow reader loses events (counted), never memory.
/// The `tracing` target of the log lines that repeat what the node also reports on its event
/// channel (events, new connections): a daemon logs them, a driver that records the events
/// itself (the simulator) leaves this target off and pays nothing for it.
pub const EVENT_LOG_TARGET: &str = "replication::node::events";

const COMMAND_QUEUE: usize = 1024;
const NET_QUEUE: usize = 4096;
const EVENT_QUEUE: usize = 4096;
const PEER_QUEUE: usize = 1024;
/// Messages held for a peer while a connection to it is being made.
const HELD_FOR_CONNECT: usize = 64;
/// Most commits the node hands the core as one batch.
const MAX_GROUP_COMMIT: usize = 256;

/// The first id of a connection this node dialled; accepted ones count up from 1.
const FIRST_DIALLED_ID: u64 = 1 << 32;

/// A handle on a running node.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    addr: SiteAddr,
    commands: mpsc::Sender<Command>,
}

/// Why a handle call failed without reaching the site.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("node {0} is not running")]
pub struct NodeGone(pub SiteAddr);

impl NodeHandle {
    /// The site's address.
    pub fn addr(&self) -> &SiteAddr {
        &self.addr
    }

    /// Sends a request and waits for the site's answer.
    pub async fn request(&self, request: Request) -> Result<Result<Reply, RequestError>, NodeGone> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Request(request, tx))
            .await
            .map_err(|_| NodeGone(self.addr.clone()))?;
        rx.await.map_err(|_| NodeGone(self.addr.clone()))
    }

    /// Reads a key from the site's database.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>, NodeGone> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Get(key.into(), tx))
            .await
            .map_err(|_| NodeGone(self.addr.clone()))?;
        rx.await.map_err(|_| NodeGone(self.addr.clone()))
    }

    /// Where the site's database stands and its digest (for integrity checks across sites).
    pub async fn digest(&self) -> Result<(crate::types::LogPos, u64), NodeGone> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Digest(tx))
            .await
            .map_err(|_| NodeGone(self.addr.clone()))?;
        rx.await.map_err(|_| NodeGone(self.addr.clone()))
    }

    /// The node's statistics.
    pub async fn stats(&self) -> Result<NodeStats, NodeGone> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(tx))
            .await
            .map_err(|_| NodeGone(self.addr.clone()))?;
        rx.await.map_err(|_| NodeGone(self.addr.clone()))
    }

    /// The node's statistics, membership and connected peers, read at one instant.
    pub async fn status(&self) -> Result<NodeStatus, NodeGone> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Status(tx))
            .await
            .map_err(|_| NodeGone(self.addr.clone()))?;
        rx.await.map_err(|_| NodeGone(self.addr.clone()))
    }

    /// Stops the node for good: syncs its storage, then ends its task (every handle answers
    /// [`NodeGone`] from then on). A daemon calls this on its way out, so that nothing the site
    /// appended is left in a write buffer; the sync's failure is returned for it to report.
    pub async fn shutdown(&self) -> Result<Result<(), StorageError>, NodeGone> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Shutdown(tx))
            .await
            .map_err(|_| NodeGone(self.addr.clone()))?;
        rx.await.map_err(|_| NodeGone(self.addr.clone()))
    }
}

/// The node's hold on a connection's sending side; dropping it closes the connection (the node
/// keeps another to the peer, or none), so the peer does not wait out the idle timeout on it.
struct PeerLink(Arc<outbox::Outbox>);

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.0.close();
    }
}

struct Peer {
    id: u64,
    out: PeerLink,
}

impl Peer {
    fn dialled_by_us(&self) -> bool {
        self.id > FIRST_DIALLED_ID
    }
}

/// The node task's state.
struct Node<S: Storage> {
    cfg: NodeConfig,
    site: Site<S>,
    clock: Arc<dyn Clock>,
    rng: ChaCha8Rng,
    peers: BTreeMap<SiteAddr, Peer>,
    /// Where the frames written to peers are encoded.
    frames: outbox::FrameScratch,
    /// Every established connection's receiving side, read by this task.
    inboxes: inbox::Inboxes,
    /// This task's waker, which each of its sources' gates passes a wake on to.
    waker: gate::NodeWaker,
    dialing: std::collections::BTreeSet<SiteAddr>,
    /// What the core said to peers not connected yet, sent once they are (see `send`).
    held: BTreeMap<SiteAddr, std::collections::VecDeque<Message>>,
    /// The admin address each peer told us.
    peer_admins: BTreeMap<SiteAddr, String>,
    next_conn: u64,
    next_request: u64,
    waiting: BTreeMap<RequestId, oneshot::Sender<Result<Reply, RequestError>>>,
    net_tx: mpsc::Sender<NetEvent>,
    events: mpsc::Sender<NodeEvent>,
    stats: NodeStats,
    /// Bytes the connections wrote, counted by them: a message to the node for each frame sent
    /// would wake the node once more per message for a counter.
    bytes_sent: Arc<std::sync::atomic::AtomicU64>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The site could not be opened.
    #[error(transparent)]
    Open(#[from] crate::site::OpenError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The node's one timer, for the site's next deadline. It is armed again only when that deadline
/// moves: a fresh `sleep` in every turn of the loop costs a timer per message, and on madsim a
/// pending sleep queues one more timer each time it is polled, every one of which later wakes
/// the node for nothing (a third of the simulator's events, before this).
struct Alarm {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The site deadline the sleep stands for, once it has been polled (and so registered).
    armed_for: Option<Option<Time>>,
    deadline: Option<Time>,
}

impl Alarm {
    fn new() -> Alarm {
        Alarm {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            armed_for: None,
            deadline: None,
        }
    }

    /// Rings at `deadline` of the site's clock, which reads `now()` (none: in an hour, as a
    /// check). The clock is read only if the deadline moved: most turns leave it where it was.
    fn set(&mut self, deadline: Option<Time>, now: impl FnOnce() -> Time) {
        if self.armed_for == Some(deadline) {
            return;
        }
        let wait = match deadline {
            Some(at) => Duration::from_millis(at.since(now())),
            None => Duration::from_secs(3600),
        };
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + wait);
        self.deadline = deadline;
        self.armed_for = None;
    }
}

impl std::future::Future for Alarm {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = &mut *self;
        if this.armed_for.is_some() && !this.sleep.is_elapsed() {
            // Registered for this deadline already, with this task's waker.
            return std::task::Poll::Pending;
        }
        let ring = this.sleep.as_mut().poll(cx);
        this.armed_for = match ring {
            std::task::Poll::Ready(()) => None,
            std::task::Poll::Pending => Some(this.deadline),
        };
        ring
    }
}

/// Starts a node: opens the site on `storage`, listens, and runs until the returned handle and
/// all its clones are dropped. `seed` drives election jitter, handshake nonces and reconnection
/// jitter (the real daemon seeds it from the operating system; the simulator from its seed).
pub async fn start<S: Storage + Send + 'static>(
    cfg: NodeConfig,
    storage: S,
    clock: Arc<dyn Clock>,
    seed: u64,
) -> Result<(NodeHandle, mpsc::Receiver<NodeEvent>), StartError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let site = Site::open(cfg.site.clone(), storage, rng.next_u64(), clock.now())?;
    let listener = tokio::net::TcpListener::bind(cfg.listen.as_str())
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (net_tx, net_rx) = mpsc::channel(NET_QUEUE);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let handle = NodeHandle {
        addr: cfg.site.addr.clone(),
        commands: commands_tx,
    };
    let bytes_sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let accept_cfg = conn::ConnConfig::from_node(&cfg, &bytes_sent);
    let accept_net = net_tx.clone();
    let accept_seed = rng.next_u64();
    tokio::spawn(conn::accept_loop(
        listener,
        accept_cfg,
        accept_net,
        accept_seed,
    ));
    let waker = gate::NodeWaker::default();
    let node = Node {
        cfg,
        site,
        clock,
        rng,
        peers: BTreeMap::new(),
        frames: outbox::FrameScratch::default(),
        inboxes: inbox::Inboxes::new(waker.clone()),
        waker,
        dialing: Default::default(),
        held: BTreeMap::new(),
        peer_admins: BTreeMap::new(),
        next_conn: FIRST_DIALLED_ID,
        next_request: 1,
        waiting: BTreeMap::new(),
        net_tx,
        events: events_tx,
        stats: NodeStats::default(),
        bytes_sent,
    };
    tokio::spawn(node.run(commands_rx, net_rx));
    Ok((handle, events_rx))
}

impl<S: Storage + Send + 'static> Node<S> {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut net: mpsc::Receiver<NetEvent>,
    ) {
        // The outputs of opening (the first events, a primordial master's records).
        self.step(Input::Tick);
        // Connect to the whole group at once, as Berkeley DB's replication manager does: a
        // site that dialled only when it first had something to say would miss the first
        // election's vote requests, and the best-placed site could lose it for being silent.
        for peer in self.site.peers() {
            self.dial(peer);
        }
        let mut alarm = Alarm::new();
        let (commands_gate, net_gate) =
            (gate::Gate::new(&self.waker), gate::Gate::new(&self.waker));
        // What the connections delivered in one turn; kept, so its room is reused.
        let mut delivered = Vec::new();
        loop {
            if self.site.needs_sync() {
                // A master shipped records without syncing them: they are on the wire already
                // (written straight to each connection, or queued for its writer), so the sync
                // overlaps their travel and the clients' syncs. Yield first, so the writers
                // whose commits were just answered queue their next ones: the next batch is
                // bigger, and one sync then covers more commits.
                tokio::task::yield_now().await;
                self.sync_deferred();
            }
            alarm.set(self.site.next_deadline(), || self.clock.now());
            // In a fixed order (a random one would make a simulated run depend on more than its
            // seed), each source polled only if it woke the node (see `gate`).
            let woken = std::future::poll_fn(|cx| {
                self.waker.register(cx);
                if let Poll::Ready(command) = commands_gate.poll(|cx| commands.poll_recv(cx)) {
                    return Poll::Ready(Woken::Command(command));
                }
                // The node holds a sender of its own: this channel never ends.
                if let Poll::Ready(Some(event)) = net_gate.poll(|cx| net.poll_recv(cx)) {
                    return Poll::Ready(Woken::Net(event));
                }
                if self.inboxes.poll_inbound(&mut delivered).is_ready() {
                    return Poll::Ready(Woken::Inbound);
                }
                std::future::Future::poll(std::pin::Pin::new(&mut alarm), cx).map(|()| Woken::Alarm)
            })
            .await;
            match woken {
                Woken::Command(Some(command)) => {
                    if self.on_commands(command, &mut commands).is_break() {
                        break;
                    }
                }
                Woken::Command(None) => break, // every handle dropped: the node stops
                Woken::Net(event) => self.on_net(event),
                Woken::Inbound => {
                    for inbound in delivered.drain(..) {
                        self.on_inbound(inbound);
                    }
                }
                Woken::Alarm => self.step(Input::Tick),
            }
        }
        tracing::info!(site = %self.cfg.site.addr, "node stopped");
    }

    fn step(&mut self, input: Input) {
        let now = self.clock.now();
        let outputs = self.site.step(now, input);
        self.carry_out(outputs);
    }

    /// Syncs what the site deferred (see [`Site::sync_deferred_appends`]) and carries out what
    /// that answers.
    fn sync_deferred(&mut self) {
        while self.site.needs_sync() {
            let now = self.clock.now();
            let outputs = self.site.sync_deferred_appends(now);
            self.carry_out(outputs);
        }
    }

    fn carry_out(&mut self, mut outputs: Vec<Output>) {
        for output in outputs.drain(..) {
            match output {
                Output::Send { to, msg } => self.send(to, msg),
                Output::Reply { id, result } => {
                    if let Some(tx) = self.waiting.remove(&id) {
                        let _ = tx.send(result);
                    }
                }
                Output::Event(event) => {
                    let site = &self.cfg.site.addr;
                    tracing::info!(target: EVENT_LOG_TARGET, %site, ?event, "event");
                    self.report(NodeEvent::Site(event));
                }
            }
        }
        self.site.reuse_outputs(outputs);
    }

    fn report(&mut self, event: NodeEvent) {
        if self.events.try_send(event).is_err() {
            self.stats.events_dropped += 1;
        }
    }

    /// Sends a message to a peer. To a peer not connected yet, it is held (up to
    /// [`HELD_FOR_CONNECT`] messages, the oldest dropped first) and sent as soon as the
    /// connection is up, so a join request or a vote request made before the connection is not
    /// lost to a timeout; a heartbeat is dropped instead, as the next one says more.
    fn send(&mut self, to: SiteAddr, msg: Message) {
        match self.peers.get(&to) {
            Some(peer) => {
                if peer.out.0.send(msg, &mut self.frames).is_err() {
                    self.stats.messages_dropped += 1;
                }
            }
            None => {
                if matches!(msg, Message::Heartbeat { .. }) {
                    self.stats.messages_dropped += 1;
                } else {
                    let held = self.held.entry(to.clone()).or_default();
                    if held.len() == HELD_FOR_CONNECT {
                        held.pop_front();
                        self.stats.messages_dropped += 1;
                    }
                    held.push_back(msg);
                }
                self.dial(to);
            }
        }
    }

    /// Starts a dialler for `peer` unless one runs: it reconnects with backoff until connected.
    fn dial(&mut self, peer: SiteAddr) {
        if peer == self.cfg.site.addr || !self.dialing.insert(peer.clone()) {
            return;
        }
        self.next_conn += 1;
        let cfg = conn::ConnConfig::from_node(&self.cfg, &self.bytes_sent);
        let seed = self.rng.next_u64();
        tokio::spawn(conn::dial_loop(
            peer,
            cfg,
            self.net_tx.clone(),
            self.next_conn,
            seed,
        ));
    }

    /// Carries out `first` and whatever commands are already waiting behind it. Commits that
    /// wait together go to the core as one batch (group commit: one append, one sync, one
    /// message per client); any other command is carried out in its turn.
    fn on_commands(
        &mut self,
        first: Command,
        commands: &mut mpsc::Receiver<Command>,
    ) -> ControlFlow<()> {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            let Command::Request(Request::Commit(txn), tx) = command else {
                self.on_command(command)?;
                next = commands.try_recv().ok();
                continue;
            };
            let mut batch = vec![(self.wait_for(tx), txn)];
            while batch.len() < MAX_GROUP_COMMIT {
                match commands.try_recv() {
                    Ok(Command::Request(Request::Commit(txn), tx)) => {
                        batch.push((self.wait_for(tx), txn));
                    }
                    Ok(other) => {
                        next = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.step(Input::Commits(batch));
        }
        ControlFlow::Continue(())
    }

    /// A new request id, answered on `tx`.
    fn wait_for(&mut self, tx: oneshot::Sender<Result<Reply, RequestError>>) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.waiting.insert(id, tx);
        id
    }

    /// Carries out a handle's command; `Break` when the node must stop.
    fn on_command(&mut self, command: Command) -> ControlFlow<()> {
        match command {
            Command::Request(request, tx) => {
                let id = self.wait_for(tx);
                self.step(Input::Request { id, request });
            }
            Command::Get(key, tx) => {
                let _ = tx.send(self.site.get(&key).map(<[u8]>::to_vec));
            }
            Command::Digest(tx) => {
                let db = self.site.db();
                let _ = tx.send((db.applied(), db.digest()));
            }
            Command::Stats(tx) => {
                let _ = tx.send(self.node_stats());
            }
            Command::Status(tx) => {
                let _ = tx.send(NodeStatus {
                    stats: self.node_stats(),
                    members: self.site.db().members().clone(),
                    connected: self.peers.keys().cloned().collect(),
                    admins: self
                        .cfg
                        .admin
                        .iter()
                        .map(|a| (self.cfg.site.addr.clone(), a.clone()))
                        .chain(self.peer_admins.clone())
                        .collect(),
                    stopped: self.site.dead().map(str::to_owned),
                    vote_guard: self.site.vote_guard(),
                });
            }
            Command::Shutdown(tx) => {
                let _ = tx.send(self.site.storage().sync());
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    fn node_stats(&self) -> NodeStats {
        let mut stats = self.stats.clone();
        stats.site = self.site.stats();
        stats.connected_peers = self.peers.len();
        stats.bytes_sent = self.bytes_sent.load(std::sync::atomic::Ordering::Relaxed);
        stats
    }

    fn on_net(&mut self, event: NetEvent) {
        match event {
            NetEvent::Established {
                id,
                peer,
                version,
                out,
                inbox,
            } => {
                // Whichever connection the node keeps, what arrives on either is the peer's.
                self.inboxes.insert(id, inbox);
                let new = Peer { id, out };
                // Both ends may dial at once: the two keep the connection the site with the
                // lower address dialled, so neither ends up sending on one the other dropped.
                // (Dropping a sender ends that connection: its writer closes it.)
                let we_dial = self.cfg.site.addr < peer;
                if let Some(old) = self.peers.get(&peer) {
                    if old.dialled_by_us() == we_dial && new.dialled_by_us() != we_dial {
                        return;
                    }
                }
                let fresh = self.peers.insert(peer.clone(), new).is_none();
                if let Some(held) = self.held.remove(&peer) {
                    for msg in held {
                        self.send(peer.clone(), msg);
                    }
                }
                if let (Some(admin), true) = (self.cfg.admin.clone(), version >= 2) {
                    self.send(peer.clone(), Message::AdminAddr { admin });
                }
                if fresh {
                    tracing::info!(
                        target: EVENT_LOG_TARGET,
                        site = %self.cfg.site.addr,
                        %peer,
                        version,
                        "connected"
                    );
                    self.report(NodeEvent::ConnectionEstablished {
                        peer: peer.clone(),
                        version,
                    });
                    self.step(Input::PeerConnected {
                        addr: peer,
                        version,
                    });
                }
            }
            NetEvent::Closed { id, peer } => {
                self.inboxes.remove(id);
                if self.peers.get(&peer).is_some_and(|p| p.id == id) {
                    self.peers.remove(&peer);
                    tracing::info!(site = %self.cfg.site.addr, %peer, "connection broken");
                    self.report(NodeEvent::ConnectionBroken { peer: peer.clone() });
                    self.step(Input::PeerDisconnected(peer));
                }
            }
            NetEvent::Refused { remote, error } => {
                self.stats.handshakes_refused += 1;
                tracing::warn!(site = %self.cfg.site.addr, %remote, %error, "handshake refused");
                self.report(NodeEvent::HandshakeRefused { remote, error });
            }
            NetEvent::DialFailed { peer, error } => {
                self.report(NodeEvent::ConnectTryFailed { peer, error });
            }
            NetEvent::DialEnded { peer } => {
                self.dialing.remove(&peer);
            }
        }
    }

    fn on_inbound(&mut self, inbound: inbox::Inbound) {
        match inbound {
            inbox::Inbound::Message { peer, msg, bytes } => {
                self.stats.bytes_received += bytes;
                // Every delivery, for whoever watches (the simulator folds them into its trace
                // hash), and for logs at TRACE. Messages from a connection that was replaced are
                // still the peer's words.
                if let Some(observer) = &self.cfg.deliveries.0 {
                    observer.delivered(&self.cfg.site.addr, &peer, msg.kind());
                }
                tracing::trace!(
                    site = self.cfg.site.addr.as_str(),
                    from = peer.as_str(),
                    msg = msg.kind(),
                    "deliver"
                );
                if let Message::AdminAddr { admin } = msg {
                    self.peer_admins.insert(peer, admin);
                    return;
                }
                self.step(Input::Message { from: peer, msg });
            }
            inbox::Inbound::Malformed { peer, error } => {
                self.stats.malformed_frames += 1;
                tracing::warn!(site = %self.cfg.site.addr, %peer, %error, "malformed frame");
                self.report(NodeEvent::MalformedFrame { peer, error });
            }
        }
    }
}
