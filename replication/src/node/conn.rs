//! Connections: accepting and dialling, the handshake, then framed messages both ways.
//!
//! Every connection starts unauthenticated: nothing it says reaches the node before the handshake
//! has proven the peer holds the group secret. A malformed frame, a refused handshake or a silent
//! peer closes the connection; the node counts and logs it. Writes are flushed after each frame
//! (madsim delivers simulated TCP data only on flush).

use super::chaos::LinkChaos;
use super::inbox::Inbox;
use super::outbox::Outbox;
use super::NetEvent;
use crate::types::SiteAddr;
use crate::wire::handshake::{Handshake, HandshakeConfig, HandshakeStep};
use crate::wire::{encode_frame_checked, Frame, FrameDecoder, Message};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// What a connection needs from the node's configuration.
#[derive(Clone, Debug)]
pub(super) struct ConnConfig {
    handshake: HandshakeConfig,
    frame_limit: u32,
    handshake_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    idle_timeout: Duration,
    chaos: Option<Arc<LinkChaos>>,
    /// The node's count of bytes written to peers.
    bytes_sent: Arc<AtomicU64>,
    // The simulator never encrypts, so it never reads this.
    #[cfg_attr(madsim, allow(dead_code))]
    tls: super::tls::TlsHandle,
}

impl ConnConfig {
    pub fn from_node(cfg: &super::NodeConfig, bytes_sent: &Arc<AtomicU64>) -> ConnConfig {
        let versions = if cfg.site.protocol_version >= 2 {
            1..=cfg.site.protocol_version
        } else {
            1..=1
        };
        ConnConfig {
            handshake: HandshakeConfig {
                group: cfg.group.clone(),
                site: cfg.site.addr.clone(),
                secret: cfg.secret.clone(),
                versions,
            },
            frame_limit: cfg.frame_limit,
            handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
            reconnect_min: Duration::from_millis(cfg.reconnect_min_ms.max(1)),
            reconnect_max: Duration::from_millis(cfg.reconnect_max_ms.max(cfg.reconnect_min_ms)),
            idle_timeout: Duration::from_millis(cfg.idle_timeout_ms.max(3)),
            chaos: cfg.chaos.0.clone(),
            bytes_sent: bytes_sent.clone(),
            tls: cfg.tls.clone(),
        }
    }
}

/// Accepts connections until the node goes away.
pub(super) async fn accept_loop(
    listener: TcpListener,
    cfg: ConnConfig,
    net: mpsc::Sender<NetEvent>,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut id = 0u64;
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if net.is_closed() {
            return;
        }
        no_delay(&stream);
        id += 1;
        let nonce = nonce(&mut rng);
        let cfg = cfg.clone();
        let net = net.clone();
        tokio::spawn(async move {
            let remote = remote.to_string();
            #[cfg(not(madsim))]
            if let Some(tls) = cfg.tls.0.clone() {
                let accepted =
                    tokio::time::timeout(cfg.handshake_timeout, tls.acceptor.accept(stream)).await;
                match accepted {
                    Ok(Ok(stream)) => run(stream, remote, None, cfg, net, id, nonce).await,
                    Ok(Err(e)) => refuse_tls(&net, remote, e.to_string()).await,
                    Err(_) => refuse_tls(&net, remote, "handshake timed out".into()).await,
                }
                return;
            }
            run(stream, remote, None, cfg, net, id, nonce).await;
        });
    }
}

/// Every frame goes out as soon as it is flushed. With Nagle's algorithm on, a small frame that
/// follows another still unacknowledged waits for the peer's delayed ACK (40 ms on Linux): a
/// commit that happened to ship behind a heartbeat or a lease request took 50 to 80 ms instead
/// of a quarter of one (Berkeley DB's repmgr, which leaves Nagle on, spends 45 ms on every
/// commit that way). Best effort: a socket that refuses the option still works.
fn no_delay(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::warn!(%error, "could not set TCP_NODELAY");
    }
}

/// Dials `peer` until a connection is established (backing off between tries), runs it, and
/// ends when it closes: the node dials again when it next has something to say.
pub(super) async fn dial_loop(
    peer: SiteAddr,
    cfg: ConnConfig,
    net: mpsc::Sender<NetEvent>,
    id: u64,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut backoff = cfg.reconnect_min;
    loop {
        if net.is_closed() {
            return;
        }
        match tokio::time::timeout(cfg.handshake_timeout, TcpStream::connect(peer.as_str())).await {
            Ok(Ok(stream)) => {
                no_delay(&stream);
                let nonce = nonce(&mut rng);
                #[cfg(not(madsim))]
                if let Some(tls) = cfg.tls.0.clone() {
                    let secured = match super::tls::server_name(peer.as_str()) {
                        Ok(name) => {
                            let connect = tls.connector.connect(name, stream);
                            match tokio::time::timeout(cfg.handshake_timeout, connect).await {
                                Ok(Ok(stream)) => Ok(stream),
                                Ok(Err(e)) => Err(e.to_string()),
                                Err(_) => Err("handshake timed out".into()),
                            }
                        }
                        Err(e) => Err(e),
                    };
                    match secured {
                        Ok(stream) => {
                            let (remote, expected) = (peer.to_string(), Some(peer.clone()));
                            run(stream, remote, expected, cfg, net.clone(), id, nonce).await;
                            let _ = net.send(NetEvent::DialEnded { peer }).await;
                            return;
                        }
                        Err(e) => refuse_tls(&net, peer.to_string(), e).await,
                    }
                    let jitter = rng.next_u64() % (backoff.as_millis() as u64 / 2 + 1);
                    tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                    backoff = (backoff * 2).min(cfg.reconnect_max);
                    continue;
                }
                run(
                    stream,
                    peer.to_string(),
                    Some(peer.clone()),
                    cfg,
                    net.clone(),
                    id,
                    nonce,
                )
                .await;
                let _ = net.send(NetEvent::DialEnded { peer }).await;
                return;
            }
            Ok(Err(error)) => report_dial_failure(&net, &peer, error.to_string()).await,
            Err(_) => report_dial_failure(&net, &peer, "connect timed out".into()).await,
        }
        // Seeded jitter keeps sites that lost each other from redialling in lockstep.
        let jitter = rng.next_u64() % (backoff.as_millis() as u64 / 2 + 1);
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(cfg.reconnect_max);
    }
}

fn nonce(rng: &mut ChaCha8Rng) -> [u8; 16] {
    let mut nonce = [0u8; 16];
    rng.fill_bytes(&mut nonce);
    nonce
}

/// Why a connection ended before or during the handshake.
enum Ending {
    Closed,
    Refused(String),
}

/// A TLS handshake failed (a certificate the group's CA did not sign, or none): counted as a
/// refused handshake, like a wrong secret.
#[cfg(not(madsim))]
async fn refuse_tls(net: &mpsc::Sender<NetEvent>, remote: String, why: String) {
    let error = format!("TLS: {why}");
    tracing::warn!(%remote, %error, "connection refused");
    let _ = net.send(NetEvent::Refused { remote, error }).await;
}

/// Runs one connection: handshake, then messages until either side closes.
async fn run<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    remote: String,
    expected: Option<SiteAddr>,
    cfg: ConnConfig,
    net: mpsc::Sender<NetEvent>,
    id: u64,
    nonce: [u8; 16],
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let versions = cfg.handshake.versions.clone();
    let mut decoder = FrameDecoder::new(cfg.frame_limit, versions);
    let shake = tokio::time::timeout(
        cfg.handshake_timeout,
        handshake(&mut reader, &mut writer, &mut decoder, &cfg, nonce),
    )
    .await;
    let (peer, version) = match shake {
        Ok(Ok((peer, version))) => (peer, version),
        Ok(Err(Ending::Closed)) => return,
        Ok(Err(Ending::Refused(error))) => {
            let _ = net.send(NetEvent::Refused { remote, error }).await;
            return;
        }
        Err(_) => {
            let error = "handshake timed out".to_string();
            let _ = net.send(NetEvent::Refused { remote, error }).await;
            return;
        }
    };
    if let Some(expected) = expected.filter(|e| *e != peer) {
        let error = format!("dialled {expected} but the peer proved to be {peer}");
        let _ = net.send(NetEvent::Refused { remote, error }).await;
        return;
    }
    let keepalive = cfg.idle_timeout / 3;
    // The connection's own stream for the chaos's draws, from its seeded nonce.
    let rng = ChaCha8Rng::from_seed({
        let mut seed = [0u8; 32];
        seed[..16].copy_from_slice(&nonce);
        seed
    });
    let watch = Arc::new(Watchdog::new());
    let outbox = Arc::new(Outbox::new(
        Box::new(writer),
        version,
        cfg.frame_limit,
        super::PEER_QUEUE,
        cfg.chaos.clone(),
        rng,
        watch.clone(),
        cfg.bytes_sent.clone(),
    ));
    let (ended_tx, ended) = oneshot::channel();
    let inbox = Inbox::new(
        peer.clone(),
        Box::new(reader),
        decoder,
        watch.clone(),
        ended_tx,
    );
    let established = NetEvent::Established {
        id,
        peer: peer.clone(),
        version,
        out: super::PeerLink(outbox.clone()),
        inbox,
    };
    if net.send(established).await.is_err() {
        return;
    }
    let watchdog = tokio::spawn(watch.clone().run(keepalive, cfg.idle_timeout));
    let write_task = tokio::spawn(outbox.run_writer());
    // The node reads the connection; this task closes it once that ends (the peer hung up, or
    // sent something malformed, or the node dropped it) or it falls silent.
    tokio::select! {
        biased;
        _ = ended => {}
        () = watch.idle.notified() => {
            tracing::info!(%peer, "connection silent past the idle timeout: closing it");
        }
    }
    write_task.abort();
    watchdog.abort();
    let _ = net.send(NetEvent::Closed { id, peer }).await;
}

async fn handshake<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    reader: &mut R,
    writer: &mut W,
    decoder: &mut FrameDecoder,
    cfg: &ConnConfig,
    nonce: [u8; 16],
) -> Result<(SiteAddr, u8), Ending> {
    let (mut shake, hello) = Handshake::start(cfg.handshake.clone(), nonce);
    write_frame(writer, shake.hello_frame_version(), &hello, cfg.frame_limit).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(Frame { message, .. }) = next_frame(decoder)? {
            match shake.on_message(message) {
                Ok(HandshakeStep::Send(proof)) => {
                    let version = shake.hello_frame_version();
                    write_frame(writer, version, &proof, cfg.frame_limit).await?;
                }
                Ok(HandshakeStep::Established { peer, version }) => return Ok((peer, version)),
                Err(error) => return Err(Ending::Refused(error.to_string())),
            }
        }
        let n = reader.read(&mut buf).await.map_err(|_| Ending::Closed)?;
        if n == 0 {
            return Err(Ending::Closed);
        }
        decoder.push(&buf[..n]);
    }
}

fn next_frame(decoder: &mut FrameDecoder) -> Result<Option<Frame>, Ending> {
    decoder
        .next_frame()
        .map_err(|error| Ending::Refused(format!("malformed handshake frame: {error}")))
}

async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    version: u8,
    msg: &Message,
    limit: u32,
) -> Result<(), Ending> {
    let bytes =
        encode_frame_checked(version, msg, limit).map_err(|e| Ending::Refused(e.to_string()))?;
    writer.write_all(&bytes).await.map_err(|_| Ending::Closed)?;
    writer.flush().await.map_err(|_| Ending::Closed)
}

/// Times a connection's silences with one timer per connection rather than one per message (a
/// timeout around every read and every wait to send costs a timer each, and on madsim every
/// such timer stays queued until its deadline): every third of the idle timeout it looks whether
/// the connection received and sent anything since it last looked, and tells the reader to
/// close a connection that received nothing in as many looks as make the idle timeout, and the
/// writer to send a keep-alive when nothing was sent since the last look. Reads and sends are
/// counted, not timed: reading the clock for every message cost more than the counting.
pub(super) struct Watchdog {
    reads: AtomicU64,
    sends: AtomicU64,
    pub(super) idle: tokio::sync::Notify,
    pub(super) keepalive_due: tokio::sync::Notify,
}

impl Watchdog {
    pub(super) fn new() -> Watchdog {
        Watchdog {
            reads: AtomicU64::new(0),
            sends: AtomicU64::new(0),
            idle: tokio::sync::Notify::new(),
            keepalive_due: tokio::sync::Notify::new(),
        }
    }

    pub(super) fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn sent(&self) {
        self.sends.fetch_add(1, Ordering::Relaxed);
    }

    /// Looks every `keepalive`; a connection that received nothing for `idle_timeout` (as many
    /// whole looks as fit in it, at least one) is idle.
    pub(super) async fn run(self: Arc<Self>, keepalive: Duration, idle_timeout: Duration) {
        let mut looks = Looks::new(keepalive, idle_timeout);
        loop {
            tokio::time::sleep(keepalive).await;
            let reads = self.reads.load(Ordering::Relaxed);
            match looks.look(reads, self.sends.load(Ordering::Relaxed)) {
                Verdict::Idle => {
                    self.idle.notify_one();
                    return;
                }
                Verdict::KeepAlive => self.keepalive_due.notify_one(),
                Verdict::Fine => {}
            }
        }
    }
}

/// What the watchdog makes of one look.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Nothing received for the idle timeout: close the connection.
    Idle,
    /// Nothing sent since the last look: send a keep-alive.
    KeepAlive,
    Fine,
}

/// The watchdog's counts at its last look.
struct Looks {
    idle_looks: u128,
    quiet_looks: u128,
    reads: u64,
    sends: u64,
}

impl Looks {
    fn new(keepalive: Duration, idle_timeout: Duration) -> Looks {
        Looks {
            idle_looks: (idle_timeout.as_millis() / keepalive.as_millis().max(1)).max(1),
            quiet_looks: 0,
            reads: 0,
            sends: 0,
        }
    }

    /// Judges a look that found `reads` and `sends` counted so far.
    fn look(&mut self, reads: u64, sends: u64) -> Verdict {
        self.quiet_looks = if reads == self.reads {
            self.quiet_looks + 1
        } else {
            0
        };
        self.reads = reads;
        if self.quiet_looks >= self.idle_looks {
            return Verdict::Idle;
        }
        let quiet_out = sends == self.sends;
        self.sends = sends;
        if quiet_out {
            Verdict::KeepAlive
        } else {
            Verdict::Fine
        }
    }
}

/// Tells the node a dial failed (it retries after a backoff).
async fn report_dial_failure(net: &mpsc::Sender<NetEvent>, peer: &SiteAddr, error: String) {
    let peer = peer.clone();
    let _ = net.send(NetEvent::DialFailed { peer, error }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_after_a_whole_timeout_of_looks_with_nothing_read() {
        // Looks every second, idle after three.
        let mut looks = Looks::new(Duration::from_secs(1), Duration::from_secs(3));
        assert_eq!(looks.look(5, 1), Verdict::Fine);
        assert_eq!(looks.look(5, 2), Verdict::Fine, "one quiet look");
        assert_eq!(
            looks.look(6, 3),
            Verdict::Fine,
            "a read starts the count again"
        );
        assert_eq!(looks.look(6, 4), Verdict::Fine);
        assert_eq!(looks.look(6, 5), Verdict::Fine);
        assert_eq!(
            looks.look(6, 6),
            Verdict::Idle,
            "three looks with nothing read"
        );
    }

    #[test]
    fn a_keep_alive_is_due_when_nothing_was_sent_since_the_last_look() {
        let mut looks = Looks::new(Duration::from_secs(1), Duration::from_secs(3));
        assert_eq!(looks.look(1, 0), Verdict::KeepAlive, "nothing sent yet");
        assert_eq!(looks.look(2, 4), Verdict::Fine);
        assert_eq!(looks.look(3, 4), Verdict::KeepAlive);
    }
}
