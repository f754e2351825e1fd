//! The sending side of a connection, shared by the node and the connection's writer task.
//!
//! The node writes a frame straight onto the stream when nothing is queued before it and the
//! stream takes it at once (a socket with room in its send buffer; madsim's simulated TCP, which
//! always does). Only what the stream would not take at once (a full send buffer, a TLS flush
//! that must wait) is queued for the writer task, which also sends the keep-alives and carries
//! out the simulator's frame chaos. A message used to cross a task more on every send: handed to
//! the writer, which woke to write it; in the simulator that hop was a third of the cost of a
//! message.
//!
//! Order is kept by one rule: the node writes directly only when the queue is empty and the
//! stream is not in the writer's hands, both read under the same lock the writer takes to hand
//! the stream back (which it does only with the queue empty).

use super::chaos::LinkChaos;
use super::conn::Watchdog;
use crate::log::LogRecord;
use crate::types::Gen;
use crate::wire::{encode_frame_checked, encode_frame_into, FrameError, Message};
use rand_chacha::rand_core::RngCore;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The write half of a connection's stream, whatever the stream is (TCP, TLS, simulated).
pub(super) type Stream = Box<dyn AsyncWrite + Send + Unpin>;

/// What waits to be written, in order.
enum Queued {
    /// A message not encoded yet (the writer plans its chaos as it encodes it).
    Message(Message),
    /// The rest of a frame the stream took only part of, or a frame it took but did not flush.
    Bytes(Vec<u8>),
}

struct State {
    /// The stream, unless the writer task is writing to it.
    stream: Option<Stream>,
    queue: VecDeque<Queued>,
    /// The node dropped the connection, or a write failed: nothing more is written.
    closed: bool,
    /// The connection's own draws for the chaos.
    rng: ChaCha8Rng,
}

/// Why a message was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NotSent {
    /// As many messages wait as the connection queues: the core retries what matters.
    Full,
    /// The connection is closed.
    Closed,
}

/// The sending side of one connection.
pub(super) struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer task: something is queued, or the connection is to close.
    wake: tokio::sync::Notify,
    version: u8,
    frame_limit: u32,
    capacity: usize,
    chaos: Option<Arc<LinkChaos>>,
    watch: Arc<Watchdog>,
    bytes_sent: Arc<AtomicU64>,
}

/// The node's buffer for encoding the frames it writes straight onto streams, lent to each
/// send. One buffer serves every frame, so a message costs no allocation of its own; and it
/// keeps the last `Log` frame for the next recipient of the same records: a master sends each
/// batch of records to every client, and it is encoded once, not once per client.
#[derive(Default)]
pub(super) struct FrameScratch {
    frame: Vec<u8>,
    /// What `frame` holds, when it holds a `Log`: its records (held, so that no other batch
    /// can reuse their address while they are the key), generation, protocol version and
    /// frame limit.
    log: Option<(Arc<[LogRecord]>, Gen, u8, u32)>,
}

/// The most the scratch keeps between frames: a snapshot's frame is let go once sent.
const SCRATCH_KEEP: usize = 64 * 1024;

impl FrameScratch {
    /// `msg` as a frame of `version`, at most `limit` bytes of payload.
    fn encode(&mut self, version: u8, limit: u32, msg: &Message) -> Result<&[u8], FrameError> {
        if let (Message::Log { gen, records }, Some((held, held_gen, held_version, held_limit))) =
            (msg, &self.log)
        {
            if Arc::ptr_eq(records, held)
                && gen == held_gen
                && version == *held_version
                && limit == *held_limit
            {
                return Ok(&self.frame);
            }
        }
        self.log = None;
        if self.frame.capacity() > SCRATCH_KEEP {
            self.frame = Vec::new();
        }
        encode_frame_into(version, msg, limit, &mut self.frame)?;
        if let Message::Log { gen, records } = msg {
            self.log = Some((Arc::clone(records), *gen, version, limit));
        }
        Ok(&self.frame)
    }
}

/// How far a write without waiting went.
enum Attempt {
    Done,
    /// The stream took this many bytes and would take more only later.
    Partial(usize),
    /// The stream took every byte but must be flushed later.
    Unflushed,
    Failed,
}

impl Outbox {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        stream: Stream,
        version: u8,
        frame_limit: u32,
        capacity: usize,
        chaos: Option<Arc<LinkChaos>>,
        rng: ChaCha8Rng,
        watch: Arc<Watchdog>,
        bytes_sent: Arc<AtomicU64>,
    ) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                stream: Some(stream),
                queue: VecDeque::new(),
                closed: false,
                rng,
            }),
            wake: tokio::sync::Notify::new(),
            version,
            frame_limit,
            capacity,
            chaos,
            watch,
            bytes_sent,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held left nothing half-done that matters here: the queue
        // and the stream are each whole at every await-free step.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The chaos is on: every frame goes through the writer, which draws what to do with it.
    fn chaos_on(&self) -> bool {
        self.chaos
            .as_ref()
            .is_some_and(|c| c.chances() != super::chaos::Chances::default())
    }

    /// Sends `msg`: at once if the stream takes it (encoded in `scratch`), else after what is
    /// queued.
    pub(super) fn send(&self, msg: Message, scratch: &mut FrameScratch) -> Result<(), NotSent> {
        let mut state = self.lock();
        if state.closed {
            return Err(NotSent::Closed);
        }
        if !state.queue.is_empty() || state.stream.is_none() || self.chaos_on() {
            if state.queue.len() >= self.capacity {
                return Err(NotSent::Full);
            }
            state.queue.push_back(Queued::Message(msg));
            drop(state);
            self.wake.notify_one();
            return Ok(());
        }
        let bytes = match scratch.encode(self.version, self.frame_limit, &msg) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, "message not sent");
                return Ok(());
            }
        };
        let stream = state.stream.as_mut().expect("checked above");
        let rest = match try_write(stream, bytes) {
            Attempt::Done => None,
            Attempt::Partial(n) => Some(bytes[n..].to_vec()),
            Attempt::Unflushed => Some(Vec::new()),
            Attempt::Failed => {
                state.closed = true;
                drop(state);
                self.wake.notify_one();
                return Err(NotSent::Closed);
            }
        };
        let written = bytes.len() - rest.as_ref().map_or(0, Vec::len);
        self.count_sent(written);
        if let Some(rest) = rest {
            state.queue.push_back(Queued::Bytes(rest));
            drop(state);
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Closes the connection: the writer shuts the stream down, so the peer does not wait out
    /// the idle timeout on it.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    fn encode(&self, msg: &Message) -> Option<Vec<u8>> {
        match encode_frame_checked(self.version, msg, self.frame_limit) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                tracing::warn!(%error, "message not sent");
                None
            }
        }
    }

    fn count_sent(&self, bytes: usize) {
        self.watch.sent();
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The connection's writer task: writes what is queued whenever woken, sends a keep-alive
    /// after a third of the idle timeout in silence, and shuts the stream down once closed.
    pub(super) async fn run_writer(self: Arc<Self>) {
        loop {
            tokio::select! {
                biased;
                () = self.wake.notified() => {}
                () = self.watch.keepalive_due.notified() => {
                    // Through the queue, so it never overtakes a frame waiting there.
                    let mut state = self.lock();
                    if state.queue.len() < self.capacity {
                        state.queue.push_back(Queued::Message(Message::KeepAlive));
                    }
                }
            }
            if !self.drain().await {
                return;
            }
        }
    }

    /// Writes the queue out; `false` once the connection is closed (the stream shut down).
    async fn drain(&self) -> bool {
        loop {
            let (mut stream, frames) = {
                let mut state = self.lock();
                // Only the writer takes the stream, and it always puts it back.
                let stream = state
                    .stream
                    .take()
                    .expect("the stream is the writer's to take");
                if state.closed {
                    (stream, None)
                } else if let Some(first) = state.queue.pop_front() {
                    let frames = self.plan(first, &mut state);
                    (stream, Some(frames))
                } else {
                    state.stream = Some(stream);
                    return true;
                }
            };
            let Some(frames) = frames else {
                let _ = stream.shutdown().await;
                return false;
            };
            for bytes in frames {
                if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
                    self.lock().closed = true;
                    return false;
                }
                self.count_sent(bytes.len());
            }
            self.lock().stream = Some(stream);
        }
    }

    /// The frames `first` goes out as: duplicated, or after the next one queued, as the chaos
    /// draws. Reordering swaps a frame with the next one already queued: it never holds a frame
    /// back waiting for one (that would be a delay, which the network already models).
    fn plan(&self, first: Queued, state: &mut State) -> Vec<Vec<u8>> {
        let msg = match first {
            Queued::Bytes(bytes) => return vec![bytes],
            Queued::Message(msg) => msg,
        };
        let plan = match &self.chaos {
            Some(chaos) => chaos.plan(|| state.rng.next_u64()),
            None => Default::default(),
        };
        let mut frames = Vec::new();
        if plan.hold {
            match state.queue.pop_front() {
                Some(Queued::Message(next)) => {
                    frames.extend(self.encode(&next));
                    if let Some(chaos) = &self.chaos {
                        chaos.count_reordered();
                    }
                }
                Some(bytes) => state.queue.push_front(bytes),
                None => {}
            }
        }
        let copies = match (plan.drop, plan.duplicate) {
            (true, _) => 0,
            (false, true) => 2,
            (false, false) => 1,
        };
        if let Some(bytes) = self.encode(&msg) {
            frames.extend(std::iter::repeat_n(bytes, copies));
        }
        frames
    }
}

/// Writes `bytes` and flushes without waiting: as far as the stream goes now.
fn try_write(stream: &mut Stream, bytes: &[u8]) -> Attempt {
    let mut cx = Context::from_waker(Waker::noop());
    let mut written = 0;
    while written < bytes.len() {
        match Pin::new(&mut *stream).poll_write(&mut cx, &bytes[written..]) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Attempt::Failed,
            Poll::Ready(Ok(n)) => written += n,
            Poll::Pending => return Attempt::Partial(written),
        }
    }
    match Pin::new(&mut *stream).poll_flush(&mut cx) {
        Poll::Ready(Ok(())) => Attempt::Done,
        Poll::Ready(Err(_)) => Attempt::Failed,
        Poll::Pending => Attempt::Unflushed,
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use crate::wire::{FrameDecoder, PROTOCOL_VERSION};
    use std::sync::Mutex as StdMutex;

    /// A stream that takes `room` more bytes, then answers `Pending` until given more.
    #[derive(Clone, Default)]
    struct Pipe(Arc<StdMutex<PipeState>>);

    #[derive(Default)]
    struct PipeState {
        written: Vec<u8>,
        room: usize,
        waker: Option<Waker>,
        shut: bool,
    }

    impl Pipe {
        fn with_room(room: usize) -> Pipe {
            let pipe = Pipe::default();
            pipe.0.lock().unwrap().room = room;
            pipe
        }

        fn give_room(&self, bytes: usize) {
            let mut state = self.0.lock().unwrap();
            state.room += bytes;
            if let Some(waker) = state.waker.take() {
                waker.wake();
            }
        }

        /// The messages written so far, decoded.
        fn messages(&self) -> Vec<Message> {
            let mut decoder = FrameDecoder::new(DEFAULT_LIMIT, 1..=PROTOCOL_VERSION);
            decoder.push(&self.0.lock().unwrap().written);
            std::iter::from_fn(|| decoder.next_frame().unwrap().map(|f| f.message)).collect()
        }
    }

    impl AsyncWrite for Pipe {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let mut state = self.0.lock().unwrap();
            if state.room == 0 {
                state.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = buf.len().min(state.room);
            state.room -= n;
            state.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            self.0.lock().unwrap().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    const DEFAULT_LIMIT: u32 = crate::wire::DEFAULT_FRAME_LIMIT;

    fn outbox(pipe: &Pipe, capacity: usize) -> Arc<Outbox> {
        use rand_chacha::rand_core::SeedableRng;
        Arc::new(Outbox::new(
            Box::new(pipe.clone()),
            PROTOCOL_VERSION,
            DEFAULT_LIMIT,
            capacity,
            None,
            ChaCha8Rng::seed_from_u64(1),
            Arc::new(Watchdog::new()),
            Arc::new(AtomicU64::new(0)),
        ))
    }

    /// Sends with a scratch of its own.
    fn send(out: &Outbox, msg: Message) -> Result<(), NotSent> {
        out.send(msg, &mut FrameScratch::default())
    }

    fn admin(n: u32) -> Message {
        Message::AdminAddr {
            admin: format!("10.0.0.{n}:9000"),
        }
    }

    #[test]
    fn a_stream_with_room_gets_each_frame_at_once_without_the_writer() {
        let pipe = Pipe::with_room(1 << 20);
        let out = outbox(&pipe, 8);
        for n in 1..=3 {
            send(&out, admin(n)).unwrap();
        }
        // No writer task runs in this test: the node's own call wrote them.
        assert_eq!(pipe.messages(), vec![admin(1), admin(2), admin(3)]);
        assert_eq!(
            out.bytes_sent.load(Ordering::Relaxed),
            pipe.0.lock().unwrap().written.len() as u64
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn what_a_full_stream_would_not_take_goes_out_later_in_order() {
        // Room for part of the first frame only.
        let pipe = Pipe::with_room(5);
        let out = outbox(&pipe, 8);
        for n in 1..=4 {
            send(&out, admin(n)).unwrap();
        }
        assert!(pipe.messages().is_empty(), "only part of a frame fits");
        let writer = tokio::spawn(out.clone().run_writer());
        pipe.give_room(1 << 20);
        // Sends made while the writer holds the queue still go after it.
        send(&out, admin(5)).unwrap();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            pipe.messages(),
            (1..=5).map(admin).collect::<Vec<_>>(),
            "every frame, whole and in order"
        );
        assert_eq!(
            out.bytes_sent.load(Ordering::Relaxed),
            pipe.0.lock().unwrap().written.len() as u64
        );
        out.close();
        writer.await.unwrap();
        assert!(
            pipe.0.lock().unwrap().shut,
            "a closed connection is shut down"
        );
        assert_eq!(send(&out, admin(6)), Err(NotSent::Closed));
    }

    #[test]
    fn a_connection_queues_at_most_its_capacity() {
        let pipe = Pipe::with_room(0);
        let out = outbox(&pipe, 2);
        send(&out, admin(1)).unwrap();
        send(&out, admin(2)).unwrap();
        assert_eq!(send(&out, admin(3)), Err(NotSent::Full));
    }

    fn log(gen: Gen, records: &Arc<[LogRecord]>) -> Message {
        Message::Log {
            gen,
            records: Arc::clone(records),
        }
    }

    #[test]
    fn a_batch_sent_to_several_peers_reuses_its_frame_only_while_it_is_the_same() {
        use crate::log::{RecordBody, Txn};
        let record = |lsn| LogRecord::new(lsn, 3, RecordBody::Txn(Txn::put("k", "v")));
        let first: Arc<[LogRecord]> = Arc::from([record(1)]);
        // Equal records in another batch: the frame is right either way, but it is not the
        // same batch, so nothing is taken on trust.
        let other: Arc<[LogRecord]> = Arc::from([record(2)]);
        let pipes: Vec<Pipe> = (0..5).map(|_| Pipe::with_room(1 << 20)).collect();
        let outs: Vec<_> = pipes.iter().map(|p| outbox(p, 8)).collect();
        let mut scratch = FrameScratch::default();
        let sent = [
            log(3, &first),
            log(3, &first),
            log(4, &first),
            log(4, &other),
            admin(1),
        ];
        for (out, msg) in outs.iter().zip(&sent) {
            out.send(msg.clone(), &mut scratch).unwrap();
        }
        for (pipe, msg) in pipes.iter().zip(&sent) {
            assert_eq!(pipe.messages(), vec![msg.clone()]);
        }
    }
}
