//! The receiving side of the node's connections, read by the node task itself.
//!
//! Once a connection's handshake is done, its read half and frame decoder come to the node,
//! which reads every connection as one more source of its loop, in the order the connections
//! were made. A message used to cross a reader task on its way in (read, decoded, then handed
//! to the node through a channel): in the simulator that hop cost as much as the node's own work
//! on the message. The connection's task stays, only to close the connection when it falls
//! silent and to report it closed.

use super::conn::Watchdog;
use super::gate::{Gate, NodeWaker};
use crate::types::SiteAddr;
use crate::wire::{Frame, FrameDecoder, Message};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::oneshot;

/// The read half of a connection's stream, whatever the stream is.
pub(super) type Stream = Box<dyn AsyncRead + Send + Unpin>;

/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 64 * 1024;

/// One connection's receiving side, as its task hands it to the node.
pub(super) struct Inbox {
    peer: SiteAddr,
    stream: Stream,
    decoder: FrameDecoder,
    buf: Box<[u8]>,
    /// Bytes read since the last message was handed over; counted with the next one.
    unreported: u64,
    watch: Arc<Watchdog>,
    /// Dropped with the inbox: tells the connection's task that reading ended.
    _ended: oneshot::Sender<()>,
}

impl Inbox {
    /// The receiving side of an established connection with `peer`; `decoder` may hold bytes
    /// that arrived with the handshake.
    pub(super) fn new(
        peer: SiteAddr,
        stream: Stream,
        decoder: FrameDecoder,
        watch: Arc<Watchdog>,
        ended: oneshot::Sender<()>,
    ) -> Inbox {
        Inbox {
            peer,
            stream,
            decoder,
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            unreported: 0,
            watch,
            _ended: ended,
        }
    }
}

/// What the node's connections said.
#[derive(Debug)]
pub(super) enum Inbound {
    /// A message, and the bytes read since the previous one.
    Message {
        peer: SiteAddr,
        msg: Message,
        bytes: u64,
    },
    /// The connection sent something malformed (it is closed).
    Malformed { peer: SiteAddr, error: String },
}

/// Every established connection's receiving side, by connection id.
pub(super) struct Inboxes {
    /// Each with its own gate, so that the node reads only the connections that have something
    /// (reading every connection's stream on every turn of the node's loop cost more than the
    /// hop it saved).
    open: BTreeMap<u64, (Gate, Inbox)>,
    /// The node task's waker, which every inbox's gate wakes.
    node: NodeWaker,
}

impl Inboxes {
    pub(super) fn new(node: NodeWaker) -> Inboxes {
        Inboxes {
            open: BTreeMap::new(),
            node,
        }
    }

    /// Reads the connection `id` from now on: at once (its decoder may hold frames that came
    /// with the handshake), then whenever it wakes the node.
    pub(super) fn insert(&mut self, id: u64, inbox: Inbox) {
        let replaced = self.open.insert(id, (Gate::new(&self.node), inbox));
        debug_assert!(replaced.is_none(), "connection ids are never reused");
    }

    /// Forgets connection `id` (closed: its task reports it, or the node dropped it).
    pub(super) fn remove(&mut self, id: u64) {
        self.open.remove(&id);
    }

    /// Reads what has arrived on each connection that was woken, in connection order, at most
    /// one chunk from each: ready with every message decoded (and every connection that ended
    /// in a malformed frame) once there is any. A connection whose peer hung up or failed is
    /// closed here; its task then reports it closed to the node. (The node registers its own
    /// waker with the [`NodeWaker`] before it polls.)
    pub(super) fn poll_inbound(&mut self, inbound: &mut Vec<Inbound>) -> Poll<()> {
        debug_assert!(
            inbound.is_empty(),
            "the last turn's deliveries were handled"
        );
        let mut ended = Vec::new();
        for (&id, (gate, inbox)) in &mut self.open {
            if let Poll::Ready(open) = gate.poll(|cx| inbox.read(cx, inbound)) {
                if !open {
                    ended.push(id);
                }
            }
        }
        for id in ended {
            self.open.remove(&id);
        }
        if inbound.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

impl Inbox {
    /// Decodes what the connection has buffered, then reads once more if nothing was whole:
    /// pending when the stream has nothing now, ready with `true` when messages were handed
    /// over (there may be more), with `false` once the connection is over.
    fn read(&mut self, cx: &mut Context<'_>, inbound: &mut Vec<Inbound>) -> Poll<bool> {
        loop {
            let before = inbound.len();
            if !self.decode(inbound) {
                return Poll::Ready(false);
            }
            if inbound.len() > before {
                // Back soon: the node handles these, then reads this connection again.
                return Poll::Ready(true);
            }
            let mut buf = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(false),
                Poll::Ready(Ok(())) => {
                    self.watch.read();
                    let n = buf.filled().len();
                    if n == 0 {
                        // A peer that hangs up inside a frame sent a frame that will never be
                        // whole: count it with the malformed ones rather than let it vanish.
                        let partial = self.decoder.buffered();
                        if partial > 0 {
                            inbound.push(Inbound::Malformed {
                                peer: self.peer.clone(),
                                error: format!(
                                    "connection closed in the middle of a frame ({partial} \
                                     bytes of it received)"
                                ),
                            });
                        }
                        return Poll::Ready(false);
                    }
                    self.decoder.push(buf.filled());
                    self.unreported += n as u64;
                }
            }
        }
    }

    /// Hands over every whole frame buffered; `false` if one was malformed.
    fn decode(&mut self, inbound: &mut Vec<Inbound>) -> bool {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(Frame { message, .. })) => {
                    if message == Message::KeepAlive {
                        continue;
                    }
                    if matches!(message, Message::Hello { .. } | Message::Proof { .. }) {
                        inbound.push(Inbound::Malformed {
                            peer: self.peer.clone(),
                            error: "handshake message after the handshake".to_string(),
                        });
                        return false;
                    }
                    inbound.push(Inbound::Message {
                        peer: self.peer.clone(),
                        msg: message,
                        bytes: std::mem::take(&mut self.unreported),
                    });
                }
                Ok(None) => return true,
                Err(error) => {
                    inbound.push(Inbound::Malformed {
                        peer: self.peer.clone(),
                        error: error.to_string(),
                    });
                    return false;
                }
            }
        }
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use crate::wire::{encode_frame, DEFAULT_FRAME_LIMIT, PROTOCOL_VERSION};
    use std::sync::Mutex;
    use std::task::Waker;

    /// A stream that hands out what it is given, counts its polls, and keeps the last waker.
    #[derive(Clone, Default)]
    struct Feed(Arc<Mutex<FeedState>>);

    #[derive(Default)]
    struct FeedState {
        bytes: Vec<u8>,
        polls: usize,
        waker: Option<Waker>,
        hung_up: bool,
    }

    impl Feed {
        fn give(&self, bytes: &[u8]) {
            let mut state = self.0.lock().unwrap();
            state.bytes.extend_from_slice(bytes);
            if let Some(waker) = state.waker.take() {
                waker.wake();
            }
        }

        fn hang_up(&self) {
            self.0.lock().unwrap().hung_up = true;
            self.give(&[]);
        }

        fn polls(&self) -> usize {
            self.0.lock().unwrap().polls
        }
    }

    impl AsyncRead for Feed {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let mut state = self.0.lock().unwrap();
            state.polls += 1;
            if state.bytes.is_empty() {
                if state.hung_up {
                    return Poll::Ready(Ok(()));
                }
                state.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = buf.remaining().min(state.bytes.len());
            buf.put_slice(&state.bytes[..n]);
            state.bytes.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    fn admin(n: u32) -> Message {
        Message::AdminAddr {
            admin: format!("10.0.0.{n}:9000"),
        }
    }

    fn frame(msg: &Message) -> Vec<u8> {
        encode_frame(PROTOCOL_VERSION, msg)
    }

    /// Inboxes for `feeds`, peers `p0`, `p1`, ..., with the receivers that see them end.
    fn inboxes(feeds: &[Feed]) -> (Inboxes, Vec<oneshot::Receiver<()>>) {
        let mut inboxes = Inboxes::new(NodeWaker::default());
        let mut ended = Vec::new();
        for (i, feed) in feeds.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            let decoder = FrameDecoder::new(DEFAULT_FRAME_LIMIT, 1..=PROTOCOL_VERSION);
            let peer = SiteAddr::new(format!("p{i}:1"));
            let watch = Arc::new(Watchdog::new());
            inboxes.insert(
                i as u64,
                Inbox::new(peer, Box::new(feed.clone()), decoder, watch, tx),
            );
            ended.push(rx);
        }
        (inboxes, ended)
    }

    fn poll(inboxes: &mut Inboxes) -> Vec<String> {
        let mut inbound = Vec::new();
        let ready = inboxes.poll_inbound(&mut inbound).is_ready();
        assert_eq!(
            ready,
            !inbound.is_empty(),
            "ready exactly when something came"
        );
        inbound
            .into_iter()
            .map(|i| match i {
                Inbound::Message { peer, msg, .. } => format!("{peer} {msg:?}"),
                Inbound::Malformed { peer, error } => format!("{peer} malformed: {error}"),
            })
            .collect()
    }

    #[test]
    fn only_the_connections_that_were_woken_are_read() {
        let feeds = [Feed::default(), Feed::default(), Feed::default()];
        let (mut inboxes, _ended) = inboxes(&feeds);
        assert!(poll(&mut inboxes).is_empty());
        let first: Vec<usize> = feeds.iter().map(Feed::polls).collect();
        assert_eq!(first, vec![1, 1, 1], "a new connection is read once");
        feeds[1].give(&frame(&admin(1)));
        feeds[1].give(&frame(&Message::KeepAlive));
        feeds[1].give(&frame(&admin(2)));
        let got = poll(&mut inboxes);
        assert_eq!(
            got,
            vec![
                format!("p1:1 {:?}", admin(1)),
                format!("p1:1 {:?}", admin(2))
            ],
            "keep-alives are not handed over"
        );
        assert!(poll(&mut inboxes).is_empty());
        let polls: Vec<usize> = feeds.iter().map(Feed::polls).collect();
        assert_eq!(polls[0], 1, "a silent connection is not read again");
        assert_eq!(polls[2], 1, "a silent connection is not read again");
    }

    #[test]
    fn a_connection_that_hangs_up_inside_a_frame_is_malformed_and_ends() {
        let feeds = [Feed::default(), Feed::default()];
        let (mut inboxes, mut ended) = inboxes(&feeds);
        assert!(poll(&mut inboxes).is_empty());
        let whole = frame(&admin(7));
        feeds[0].give(&whole[..whole.len() - 3]);
        feeds[0].hang_up();
        feeds[1].give(&frame(&Message::Proof { mac: [0; 32] }));
        let got = poll(&mut inboxes);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("p0:1 malformed: connection closed in the middle of a frame"));
        assert_eq!(
            got[1],
            "p1:1 malformed: handshake message after the handshake"
        );
        for rx in &mut ended {
            assert!(rx
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed));
        }
    }
}
