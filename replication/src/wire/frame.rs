//! The frame codec: how one [`Message`] travels as bytes between two sites.
//!
//! A frame is a fixed [`FRAME_HEADER_LEN`]-byte header followed by a payload:
//!
//! ```text
//! offset  size  field
//!      0     2  magic, b"RP" (b"RS" was the bincode format of earlier builds)
//!      2     1  protocol version
//!      3     1  frame kind (1 = Message; other kinds are reserved for the handshake)
//!      4     4  payload length, u32 little-endian
//!      8     4  CRC32 (little-endian) of bytes 0..8 followed by the payload
//!     12     n  payload: `codec::encode(&Message)` (canonical postcard)
//! ```
//!
//! Everything here reads bytes from an untrusted peer, so decoding must never panic on any input
//! (every access is bounds-checked, no input-derived value is unwrapped), must never allocate or
//! buffer more than the frame limit (the length in the header is refused before any payload is
//! buffered), and must never hand out a message whose checksum does not match. A frame that fails
//! any check is an error, and a [`FrameDecoder`] that saw one stays failed: the connection it
//! reads from must be closed.

use crate::codec;
use crate::wire::message::MESSAGE_TYPES;

fn bad_magic(found: &[u8; 2]) -> String {
    if *found == BINCODE_MAGIC {
        "the peer speaks the bincode wire format of repsim builds before postcard (frames \
         starting with \"RS\"): upgrade it"
            .to_string()
    } else {
        format!(
            "not a repsim frame: it starts with \"{}\" instead of \"RP\" (is the peer speaking \
             another protocol, or is the stream out of step?)",
            found.escape_ascii()
        )
    }
}
use crate::wire::Message;
use std::ops::RangeInclusive;

/// The protocol version this build speaks (and writes in every frame it sends).
pub const PROTOCOL_VERSION: u8 = 2;

/// Size in bytes of a frame header: magic, version, kind, payload length, CRC32.
pub const FRAME_HEADER_LEN: usize = 12;

/// Default payload limit of a frame: 16 MiB.
pub const DEFAULT_FRAME_LIMIT: u32 = 16 * 1024 * 1024;

/// The two bytes every frame starts with.
const MAGIC: [u8; 2] = *b"RP";
/// What frames of the bincode wire format, before postcard, started with.
const BINCODE_MAGIC: [u8; 2] = *b"RS";

/// Offset of the CRC32 in the header; the CRC covers the header bytes before it.
const CRC_OFFSET: usize = 8;

/// A decoder's buffer is released once empty if it grew beyond this.
const RETAINED_CAPACITY: usize = 64 * 1024;

/// Smallest buffer a decoder allocates when it needs one.
const MIN_CAPACITY: usize = 256;

/// What a frame carries. Only messages today; the handshake will add kinds.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum FrameKind {
    /// A [`Message`] between two sites of a group.
    Message,
}

impl FrameKind {
    /// The byte that identifies this kind in a frame header.
    pub const fn code(self) -> u8 {
        match self {
            FrameKind::Message => 1,
        }
    }

    /// The kind a header byte identifies, if any.
    pub const fn from_code(code: u8) -> Option<FrameKind> {
        match code {
            1 => Some(FrameKind::Message),
            _ => None,
        }
    }
}

/// A decoded frame: the protocol version it was written in and the message it carries.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Frame {
    /// The protocol version from the header.
    pub version: u8,
    /// The message from the payload.
    pub message: Message,
}

/// Why bytes are not a valid frame (or, when encoding, why a message cannot be sent).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum FrameError {
    /// The first two bytes are not `b"RP"`: the peer is not speaking repsim's protocol, or an
    /// older build's (bincode) wire format.
    #[error("{}", bad_magic(.found))]
    BadMagic {
        /// The two bytes found.
        found: [u8; 2],
    },
    /// The header's protocol version is not one this side accepts.
    #[error(
        "unsupported protocol version {version} (this site speaks version {PROTOCOL_VERSION}); \
         upgrade the older site"
    )]
    UnsupportedVersion {
        /// The version in the header.
        version: u8,
    },
    /// The header's frame kind is not one this build knows.
    #[error("unknown frame kind {kind} (the peer runs a newer or incompatible build)")]
    UnknownKind {
        /// The kind byte in the header.
        kind: u8,
    },
    /// The payload is longer than the frame limit.
    #[error("frame payload of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The payload length (claimed by the header when decoding, actual when encoding).
        len: u64,
        /// The limit in force.
        limit: u32,
    },
    /// The CRC32 in the header does not match the header and payload: corrupted in transit.
    #[error(
        "frame checksum mismatch: the header says {expected:#010x} but the contents give \
         {found:#010x} (corrupted in transit)"
    )]
    ChecksumMismatch {
        /// The CRC32 written in the header.
        expected: u32,
        /// The CRC32 computed over the bytes received.
        found: u32,
    },
    /// The bytes end before the frame does (only from [`decode_frame`]; a [`FrameDecoder`]
    /// waits for more bytes instead).
    #[error("truncated frame: {needed} bytes needed, only {have} available")]
    Truncated {
        /// How many bytes the frame needs, as far as the header tells.
        needed: usize,
        /// How many bytes there were.
        have: usize,
    },
    /// The sender tried to frame a message its peer's protocol version does not have.
    #[error("a {kind} message cannot be sent in protocol version {version}")]
    NotInVersion {
        /// The message kind.
        kind: &'static str,
        /// The protocol version of the connection.
        version: u8,
    },
    /// The checksum matches but the payload names a message type this build does not have.
    #[error(
        "unknown message type {tag} (this build knows {MESSAGE_TYPES}; the peer runs a newer or \
         incompatible build)"
    )]
    UnknownMessage {
        /// The message type (the variant tag at the start of the payload).
        tag: u32,
    },
    /// The checksum matches but the payload is not a valid message.
    #[error("frame payload is not a valid message ({0})")]
    Malformed(String),
}

/// The fields of a header that passed every check that does not need the payload.
#[derive(Copy, Clone, Debug)]
struct Header {
    version: u8,
    len: u32,
    crc: u32,
    /// The header bytes the CRC covers.
    covered: [u8; CRC_OFFSET],
}

/// The CRC32 of a frame: over the header bytes before the CRC, then the payload.
fn frame_crc(covered: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(covered);
    hasher.update(payload);
    hasher.finalize()
}

/// Checks as much of a header as `bytes` holds, field by field in header order, so garbage is
/// refused as early as possible. `Ok(None)`: the header is incomplete but fine so far.
fn check_header(
    bytes: &[u8],
    limit: u32,
    versions: &RangeInclusive<u8>,
) -> Result<Option<Header>, FrameError> {
    if let [m0, m1, ..] = *bytes {
        if [m0, m1] != MAGIC {
            return Err(FrameError::BadMagic { found: [m0, m1] });
        }
    }
    if let [_, _, version, ..] = *bytes {
        if !versions.contains(&version) {
            return Err(FrameError::UnsupportedVersion { version });
        }
    }
    if let [_, _, _, kind, ..] = *bytes {
        if FrameKind::from_code(kind).is_none() {
            return Err(FrameError::UnknownKind { kind });
        }
    }
    if let [_, _, _, _, l0, l1, l2, l3, ..] = *bytes {
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        if len > limit {
            return Err(FrameError::TooLarge {
                len: u64::from(len),
                limit,
            });
        }
    }
    match *bytes {
        [m0, m1, version, kind, l0, l1, l2, l3, c0, c1, c2, c3, ..] => Ok(Some(Header {
            version,
            len: u32::from_le_bytes([l0, l1, l2, l3]),
            crc: u32::from_le_bytes([c0, c1, c2, c3]),
            covered: [m0, m1, version, kind, l0, l1, l2, l3],
        })),
        _ => Ok(None),
    }
}

/// Decodes the frame at the start of `bytes`, accepting the versions in `versions`.
fn decode_frame_accepting(
    bytes: &[u8],
    limit: u32,
    versions: &RangeInclusive<u8>,
) -> Result<(Frame, usize), FrameError> {
    let Some(header) = check_header(bytes, limit, versions)? else {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_LEN,
            have: bytes.len(),
        });
    };
    // `len <= limit <= u32::MAX`; saturating keeps 16-bit or 32-bit targets honest.
    let total = usize::try_from(header.len)
        .unwrap_or(usize::MAX)
        .saturating_add(FRAME_HEADER_LEN);
    let Some(payload) = bytes.get(FRAME_HEADER_LEN..total) else {
        return Err(FrameError::Truncated {
            needed: total,
            have: bytes.len(),
        });
    };
    let found = frame_crc(&header.covered, payload);
    if found != header.crc {
        return Err(FrameError::ChecksumMismatch {
            expected: header.crc,
            found,
        });
    }
    let message: Message = codec::decode(payload, u64::from(limit)).map_err(|e| {
        // A tag past the last message type is a peer from a newer build, not noise: say so.
        match postcard::take_from_bytes::<u32>(payload) {
            Ok((tag, _)) if tag >= MESSAGE_TYPES => FrameError::UnknownMessage { tag },
            _ => FrameError::Malformed(e.to_string()),
        }
    })?;
    if message.min_version() > header.version {
        return Err(FrameError::Malformed(format!(
            "a {} message does not exist in protocol version {}",
            message.kind(),
            header.version
        )));
    }
    Ok((
        Frame {
            version: header.version,
            message,
        },
        total,
    ))
}

/// Encodes `msg` as one frame of protocol `version`, refusing a payload longer than `limit`.
pub fn encode_frame_checked(version: u8, msg: &Message, limit: u32) -> Result<Vec<u8>, FrameError> {
    let mut frame = Vec::new();
    encode_frame_into(version, msg, limit, &mut frame)?;
    Ok(frame)
}

/// [`encode_frame_checked`] into `frame`, whose bytes it replaces: a sender that reuses one
/// buffer for every frame allocates none per message. `frame` is left empty on an error.
pub fn encode_frame_into(
    version: u8,
    msg: &Message,
    limit: u32,
    frame: &mut Vec<u8>,
) -> Result<(), FrameError> {
    frame.clear();
    if msg.min_version() > version {
        return Err(FrameError::NotInVersion {
            kind: msg.kind(),
            version,
        });
    }
    // Size first, so an oversized message is refused without building its payload.
    let len = codec::encoded_len(msg);
    if len > u64::from(limit) {
        return Err(FrameError::TooLarge { len, limit });
    }
    let len = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, limit })?;
    // The payload is encoded in place after room for the header, which is filled in once the
    // payload's checksum is known: no copy.
    frame.reserve(FRAME_HEADER_LEN + len as usize);
    frame.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    codec::encode_into(msg, frame);
    debug_assert_eq!(
        frame.len(),
        FRAME_HEADER_LEN + len as usize,
        "sized as encoded"
    );
    let mut covered = [0u8; CRC_OFFSET];
    covered[..2].copy_from_slice(&MAGIC);
    covered[2] = version;
    covered[3] = FrameKind::Message.code();
    covered[4..].copy_from_slice(&len.to_le_bytes());
    let crc = frame_crc(&covered, &frame[FRAME_HEADER_LEN..]);
    frame[..CRC_OFFSET].copy_from_slice(&covered);
    frame[CRC_OFFSET..FRAME_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Encodes `msg` as one frame of protocol `version`, with no limit but the format's own.
///
/// # Panics
///
/// If the payload exceeds `u32::MAX` bytes (no engine message does) or the message does not
/// exist in `version`; senders that must respect a peer's limit or version use
/// [`encode_frame_checked`].
pub fn encode_frame(version: u8, msg: &Message) -> Vec<u8> {
    match encode_frame_checked(version, msg, u32::MAX) {
        Ok(frame) => frame,
        Err(e) => panic!("cannot frame a {} message: {e}", msg.kind()),
    }
}

/// Decodes the frame at the start of `bytes` (protocol [`PROTOCOL_VERSION`] only, payload at most
/// `limit` bytes) and returns it with the number of bytes it took; bytes after it are left alone.
pub fn decode_frame(bytes: &[u8], limit: u32) -> Result<(Frame, usize), FrameError> {
    decode_frame_accepting(bytes, limit, &(PROTOCOL_VERSION..=PROTOCOL_VERSION))
}

/// Incremental decoder for a byte stream: push bytes as they arrive, take frames out.
///
/// It checks each header as soon as its bytes are in, so an oversized length is refused before
/// the payload is buffered. Called the usual way (push what was read, then call
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`), it buffers at most one
/// incomplete frame (less than `FRAME_HEADER_LEN + limit` bytes) plus the bytes of the last push.
/// After an error it is poisoned: every later call returns the same error and pushed bytes are
/// dropped.
#[derive(Debug)]
pub struct FrameDecoder {
    limit: u32,
    versions: RangeInclusive<u8>,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already returned as frames.
    start: usize,
    poisoned: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder for payloads of at most `limit` bytes in the protocol versions `accepted_versions`.
    pub fn new(limit: u32, accepted_versions: RangeInclusive<u8>) -> FrameDecoder {
        FrameDecoder {
            limit,
            versions: accepted_versions,
            buf: Vec::new(),
            start: 0,
            poisoned: None,
        }
    }

    /// The largest frame (header and payload) this decoder accepts.
    fn max_frame_len(&self) -> usize {
        usize::try_from(self.limit)
            .unwrap_or(usize::MAX)
            .saturating_add(FRAME_HEADER_LEN)
    }

    /// Appends bytes received from the stream (dropped if the decoder is poisoned).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.poisoned.is_some() || bytes.is_empty() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let needed = self.buf.len().saturating_add(bytes.len());
        if needed > self.buf.capacity() {
            // Grow geometrically but never past one whole frame unless this push itself needs it.
            let grown = self
                .buf
                .capacity()
                .saturating_mul(2)
                .max(MIN_CAPACITY)
                .min(self.max_frame_len());
            self.buf.reserve_exact(needed.max(grown) - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame; `Ok(None)` if more bytes are needed; an error (for good) if the
    /// stream is not valid frames.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = &self.poisoned {
            return Err(err.clone());
        }
        let pending = self.buf.get(self.start..).unwrap_or_default();
        match decode_frame_accepting(pending, self.limit, &self.versions) {
            Ok((frame, used)) => {
                self.start = self.start.saturating_add(used);
                if self.start >= self.buf.len() {
                    self.start = 0;
                    if self.buf.capacity() > RETAINED_CAPACITY {
                        self.buf = Vec::new();
                    } else {
                        self.buf.clear();
                    }
                }
                Ok(Some(frame))
            }
            Err(FrameError::Truncated { .. }) => Ok(None),
            Err(err) => {
                self.poisoned = Some(err.clone());
                self.buf = Vec::new();
                self.start = 0;
                Err(err)
            }
        }
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// True once the decoder has returned an error.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Database, GenHistory, LogRecord, Op, RecordBody, Snapshot, Txn};
    use crate::types::{LogPos, SiteAddr};
    use proptest::collection::vec;
    use proptest::prelude::*;

    const LIMIT: u32 = 64 * 1024;

    fn history(starts: &[(u64, u64)]) -> GenHistory {
        let mut h = GenHistory::new();
        for &(gen, lsn) in starts {
            h.note_append(&LogRecord::new(
                lsn,
                gen,
                RecordBody::Txn(Txn::put("k", "v")),
            ));
        }
        h
    }

    fn snapshot() -> Snapshot {
        let mut db = Database::new();
        let records = [
            LogRecord::new(
                1,
                1,
                RecordBody::GenStart {
                    master: SiteAddr::new("10.0.0.1:7000"),
                },
            ),
            LogRecord::new(2, 1, RecordBody::Txn(Txn::put("apple", "red"))),
            LogRecord::new(3, 1, RecordBody::Txn(Txn::put("pear", "green"))),
            LogRecord::new(4, 1, RecordBody::Txn(Txn::delete("apple"))),
        ];
        for r in &records {
            db.apply(r);
        }
        Snapshot {
            db,
            history: history(&[(1, 1)]),
        }
    }

    /// One realistic value of every message variant.
    fn every_variant() -> Vec<Message> {
        let last = LogPos::new(3, 42);
        vec![
            Message::Heartbeat {
                gen: 3,
                last,
                first_lsn: 10,
            },
            Message::Log {
                gen: 3,
                records: vec![
                    LogRecord::new(
                        40,
                        3,
                        RecordBody::GenStart {
                            master: SiteAddr::new("db2.example.com:7001"),
                        },
                    ),
                    LogRecord::new(41, 3, RecordBody::Txn(Txn::put("k", vec![0, 1, 255]))),
                    LogRecord::new(
                        42,
                        3,
                        RecordBody::Txn(Txn {
                            ops: vec![
                                Op::Put {
                                    key: b"a".to_vec(),
                                    value: b"1".to_vec(),
                                },
                                Op::Delete { key: b"b".to_vec() },
                            ]
                            .into(),
                        }),
                    ),
                ]
                .into(),
            },
            Message::Log {
                gen: 3,
                records: Vec::new().into(),
            },
            Message::SyncRequest {
                gen: 3,
                priority: 100,
            },
            Message::SyncInfo {
                gen: 3,
                history: history(&[(1, 1), (2, 17), (3, 40)]),
                first_lsn: 10,
                last,
            },
            Message::LogRequest { gen: 3, from: 11 },
            Message::InitSnapshot {
                gen: 3,
                snapshot: snapshot(),
            },
            Message::InitSnapshot {
                gen: 1,
                snapshot: Snapshot::default(),
            },
            Message::Ack {
                gen: 3,
                lsn: 42,
                priority: 0,
            },
            Message::VoteRequest {
                egen: 4,
                last,
                priority: 50,
                takeover: true,
                pre: false,
            },
            Message::Vote {
                egen: 4,
                granted: false,
                gen: 3,
                last,
                priority: 10,
                master: Some(SiteAddr::new("10.0.0.1:7000")),
                pre: false,
                term: 5,
            },
            Message::TakeOver { gen: 3 },
        ]
    }

    fn heartbeat() -> Message {
        Message::Heartbeat {
            gen: 7,
            last: LogPos::new(7, 100),
            first_lsn: 1,
        }
    }

    /// A frame with the given header fields and a correct CRC over them and `payload`.
    fn raw_frame(version: u8, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut covered = Vec::new();
        covered.extend_from_slice(&MAGIC);
        covered.push(version);
        covered.push(kind);
        covered.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let crc = frame_crc(&covered, payload);
        let mut frame = covered;
        frame.extend_from_slice(&crc.to_le_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// Decodes a whole stream the reference way (repeated `decode_frame_accepting`): the frames,
    /// then the error that stopped it (`None` if the stream ended cleanly or mid-frame).
    fn decode_all(bytes: &[u8], versions: &RangeInclusive<u8>) -> (Vec<Frame>, Option<FrameError>) {
        let mut frames = Vec::new();
        let mut rest = bytes;
        loop {
            match decode_frame_accepting(rest, LIMIT, versions) {
                Ok((frame, used)) => {
                    frames.push(frame);
                    rest = &rest[used..];
                }
                Err(FrameError::Truncated { .. }) => return (frames, None),
                Err(err) => return (frames, Some(err)),
            }
        }
    }

    /// Feeds `bytes` to a decoder in chunks of the given sizes (cycled), taking frames out after
    /// every push, checking its buffer bound on the way.
    fn decode_chunked(
        bytes: &[u8],
        chunks: &[usize],
        versions: RangeInclusive<u8>,
    ) -> (Vec<Frame>, Option<FrameError>) {
        let mut decoder = FrameDecoder::new(LIMIT, versions);
        let mut frames = Vec::new();
        let mut rest = bytes;
        let mut sizes = chunks.iter().copied().cycle();
        while !rest.is_empty() {
            let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
            decoder.push(&rest[..n]);
            rest = &rest[n..];
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(err) => {
                        assert!(decoder.is_poisoned());
                        assert_eq!(decoder.next_frame(), Err(err.clone()));
                        return (frames, Some(err));
                    }
                }
            }
            assert!(decoder.buffered() < FRAME_HEADER_LEN + LIMIT as usize);
        }
        (frames, None)
    }

    #[test]
    fn every_message_variant_round_trips() {
        for msg in every_variant() {
            let bytes = encode_frame(PROTOCOL_VERSION, &msg);
            let (frame, used) = decode_frame(&bytes, DEFAULT_FRAME_LIMIT).unwrap();
            assert_eq!(used, bytes.len(), "{}", msg.kind());
            assert_eq!(frame.version, PROTOCOL_VERSION);
            assert_eq!(frame.message, msg);
            assert_eq!(encode_frame(frame.version, &frame.message), bytes);
        }
    }

    #[test]
    fn header_layout_is_magic_version_kind_length_crc() {
        let msg = heartbeat();
        let bytes = encode_frame(PROTOCOL_VERSION, &msg);
        let payload = codec::encode(&msg);
        assert_eq!(&bytes[0..2], b"RP");
        assert_eq!(bytes[2], PROTOCOL_VERSION);
        assert_eq!(bytes[3], FrameKind::Message.code());
        assert_eq!(bytes[4..8], (payload.len() as u32).to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&bytes[..8]);
        hasher.update(&payload);
        assert_eq!(bytes[8..12], hasher.finalize().to_le_bytes());
        assert_eq!(&bytes[FRAME_HEADER_LEN..], &payload[..]);
        assert_eq!(FrameKind::from_code(1), Some(FrameKind::Message));
        assert_eq!(FrameKind::from_code(0), None);
    }

    #[test]
    fn trailing_bytes_are_left_for_the_next_frame() {
        let first = encode_frame(PROTOCOL_VERSION, &heartbeat());
        let second = encode_frame(PROTOCOL_VERSION, &Message::TakeOver { gen: 9 });
        let stream = [first.clone(), second.clone()].concat();
        let (frame, used) = decode_frame(&stream, LIMIT).unwrap();
        assert_eq!((frame.message, used), (heartbeat(), first.len()));
        let (frame, used) = decode_frame(&stream[used..], LIMIT).unwrap();
        assert_eq!(
            (frame.message, used),
            (Message::TakeOver { gen: 9 }, second.len())
        );
    }

    #[test]
    fn every_strict_prefix_is_truncated_with_the_bytes_needed() {
        let bytes = encode_frame(PROTOCOL_VERSION, &every_variant()[1]);
        for cut in 0..bytes.len() {
            let needed = if cut < FRAME_HEADER_LEN {
                FRAME_HEADER_LEN
            } else {
                bytes.len()
            };
            assert_eq!(
                decode_frame(&bytes[..cut], LIMIT),
                Err(FrameError::Truncated { needed, have: cut }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_oversized_length_is_refused_from_the_header_alone() {
        // A header claiming 4 GiB - 1 with no payload at all behind it.
        let mut bytes = b"RP".to_vec();
        bytes.push(PROTOCOL_VERSION);
        bytes.push(1);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_frame(&bytes, LIMIT),
            Err(FrameError::TooLarge {
                len: u64::from(u32::MAX),
                limit: LIMIT
            })
        );
        // Even before the CRC arrives.
        assert!(matches!(
            decode_frame(&bytes[..8], LIMIT),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_payload_of_exactly_the_limit_is_accepted_one_more_byte_is_not() {
        let msg = every_variant()[1].clone();
        let bytes = encode_frame(PROTOCOL_VERSION, &msg);
        let len = (bytes.len() - FRAME_HEADER_LEN) as u32;
        assert_eq!(decode_frame(&bytes, len).unwrap().0.message, msg);
        assert_eq!(
            decode_frame(&bytes, len - 1),
            Err(FrameError::TooLarge {
                len: u64::from(len),
                limit: len - 1
            })
        );
    }

    #[test]
    fn the_sender_learns_a_message_is_too_large() {
        let msg = Message::Log {
            gen: 1,
            records: vec![LogRecord::new(
                1,
                1,
                RecordBody::Txn(Txn::put("big", vec![7u8; 10_000])),
            )]
            .into(),
        };
        let len = codec::encoded_len(&msg);
        assert_eq!(
            encode_frame_checked(PROTOCOL_VERSION, &msg, 1000),
            Err(FrameError::TooLarge { len, limit: 1000 })
        );
        let bytes = encode_frame_checked(PROTOCOL_VERSION, &msg, len as u32).unwrap();
        assert_eq!(bytes, encode_frame(PROTOCOL_VERSION, &msg));
        assert_eq!(decode_frame(&bytes, len as u32).unwrap().0.message, msg);
    }

    #[test]
    fn wrong_magic_is_refused() {
        let mut bytes = encode_frame(PROTOCOL_VERSION, &heartbeat());
        bytes[..2].copy_from_slice(b"GE");
        assert_eq!(
            decode_frame(&bytes, LIMIT),
            Err(FrameError::BadMagic { found: *b"GE" })
        );
        // Refused as soon as two bytes are in, without waiting for a whole header.
        assert_eq!(
            decode_frame(b"GET / HTTP/1.1", LIMIT),
            Err(FrameError::BadMagic { found: *b"GE" })
        );
        assert_eq!(
            decode_frame(&[0, 0], LIMIT),
            Err(FrameError::BadMagic { found: [0, 0] })
        );
    }

    #[test]
    fn wrong_version_is_refused() {
        for version in [0, 1, PROTOCOL_VERSION + 1, u8::MAX] {
            let bytes = raw_frame(
                version,
                FrameKind::Message.code(),
                &codec::encode(&heartbeat()),
            );
            assert_eq!(
                decode_frame(&bytes, LIMIT),
                Err(FrameError::UnsupportedVersion { version })
            );
        }
    }

    #[test]
    fn membership_messages_do_not_exist_in_version_1() {
        let join = Message::JoinRequest {
            site: SiteAddr::new("new:1"),
            priority: 1,
        };
        assert_eq!(
            encode_frame_checked(1, &join, LIMIT),
            Err(FrameError::NotInVersion {
                kind: "join_request",
                version: 1
            })
        );
        // A version-1 frame that carries one anyway (valid checksum) is malformed.
        let bytes = raw_frame(1, FrameKind::Message.code(), &codec::encode(&join));
        let mut decoder = FrameDecoder::new(LIMIT, 1..=2);
        decoder.push(&bytes);
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::Malformed(_))
        ));
        // Version-1 messages still pass in version-1 frames.
        let mut decoder = FrameDecoder::new(LIMIT, 1..=2);
        decoder.push(&encode_frame(1, &heartbeat()));
        assert!(matches!(
            decoder.next_frame(),
            Ok(Some(Frame { version: 1, .. }))
        ));
    }

    #[test]
    fn unknown_kind_is_refused() {
        let payload = codec::encode(&heartbeat());
        for kind in [0, 2, 200, u8::MAX] {
            let bytes = raw_frame(PROTOCOL_VERSION, kind, &payload);
            assert_eq!(
                decode_frame(&bytes, LIMIT),
                Err(FrameError::UnknownKind { kind })
            );
        }
    }

    #[test]
    fn a_changed_byte_breaks_the_checksum() {
        let good = encode_frame(PROTOCOL_VERSION, &heartbeat());
        let crc = u32::from_le_bytes(good[8..12].try_into().unwrap());
        // Every payload byte, and every byte of the CRC itself.
        for i in (CRC_OFFSET..good.len()).rev() {
            let mut bytes = good.clone();
            bytes[i] ^= 0x01;
            match decode_frame(&bytes, LIMIT) {
                Err(FrameError::ChecksumMismatch { expected, found }) => {
                    assert_ne!(expected, found);
                    if i >= FRAME_HEADER_LEN {
                        assert_eq!(expected, crc);
                    } else {
                        assert_eq!(found, crc);
                    }
                }
                other => panic!("byte {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_message_type_this_build_lacks_is_named_as_such() {
        for tag in [MESSAGE_TYPES, 99, u32::MAX] {
            let bytes = raw_frame(PROTOCOL_VERSION, 1, &codec::encode(&tag));
            let err = decode_frame(&bytes, LIMIT).unwrap_err();
            assert_eq!(err, FrameError::UnknownMessage { tag });
            assert!(
                err.to_string()
                    .starts_with(&format!("unknown message type {tag} (this build knows 22;")),
                "{err}"
            );
        }
        // A known type with a broken body stays merely malformed.
        let bytes = raw_frame(PROTOCOL_VERSION, 1, &codec::encode(&(MESSAGE_TYPES - 1)));
        assert!(matches!(
            decode_frame(&bytes, LIMIT),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_garbage_payload_with_a_valid_checksum_is_malformed() {
        // A bool of 2 is not a bool; trailing bytes; payloads too short.
        let mut bad_bool = codec::encode(&Message::VoteRequest {
            egen: 1,
            last: LogPos::new(1, 1),
            priority: 1,
            takeover: false,
            pre: true,
        });
        *bad_bool.last_mut().unwrap() = 2;
        let mut trailing = codec::encode(&Message::TakeOver { gen: 1 });
        trailing.push(0);
        for payload in [&bad_bool[..], &trailing, &[1, 2, 3], &[]] {
            let bytes = raw_frame(PROTOCOL_VERSION, 1, payload);
            match decode_frame(&bytes, LIMIT) {
                Err(FrameError::Malformed(why)) => assert!(!why.is_empty()),
                other => panic!("{payload:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_hostile_length_inside_the_payload_is_refused_not_allocated() {
        // A Log message whose record vector claims u64::MAX / 2 records, in a small frame.
        let mut payload = 1u32.to_le_bytes().to_vec(); // Message::Log
        payload.extend_from_slice(&3u64.to_le_bytes()); // gen
        payload.extend_from_slice(&(u64::MAX / 2).to_le_bytes()); // records.len()
        let bytes = raw_frame(PROTOCOL_VERSION, 1, &payload);
        assert!(matches!(
            decode_frame(&bytes, LIMIT),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn errors_read_well_for_operators() {
        let cases = [
            (
                FrameError::BadMagic { found: *b"GE" },
                "not a repsim frame: it starts with \"GE\" instead of \"RP\"",
            ),
            (
                FrameError::BadMagic { found: [0, 0xff] },
                "starts with \"\\x00\\xff\"",
            ),
            (
                FrameError::UnsupportedVersion { version: 1 },
                "unsupported protocol version 1 (this site speaks version 2)",
            ),
            (FrameError::UnknownKind { kind: 9 }, "unknown frame kind 9"),
            (
                FrameError::TooLarge {
                    len: 20_000_000,
                    limit: DEFAULT_FRAME_LIMIT,
                },
                "frame payload of 20000000 bytes exceeds the limit of 16777216 bytes",
            ),
            (
                FrameError::ChecksumMismatch {
                    expected: 0xdead_beef,
                    found: 0x1234,
                },
                "header says 0xdeadbeef but the contents give 0x00001234",
            ),
            (
                FrameError::Truncated {
                    needed: 12,
                    have: 3,
                },
                "truncated frame: 12 bytes needed, only 3 available",
            ),
        ];
        for (err, text) in cases {
            assert!(err.to_string().contains(text), "{err}");
        }
        let bytes = raw_frame(PROTOCOL_VERSION, 1, &[1, 2, 3]);
        let err = decode_frame(&bytes, LIMIT).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("frame payload is not a valid message (malformed payload: "),
            "{err}"
        );
    }

    #[test]
    fn decoder_fed_byte_by_byte_yields_the_same_frames_as_whole_buffers() {
        let messages = every_variant();
        let stream: Vec<u8> = messages
            .iter()
            .flat_map(|m| encode_frame(PROTOCOL_VERSION, m))
            .collect();
        let versions = PROTOCOL_VERSION..=PROTOCOL_VERSION;
        let (whole, err) = decode_all(&stream, &versions);
        assert_eq!(err, None);
        assert_eq!(
            whole.iter().map(|f| &f.message).collect::<Vec<_>>(),
            messages.iter().collect::<Vec<_>>()
        );

        let mut decoder = FrameDecoder::new(LIMIT, versions.clone());
        let mut frames = Vec::new();
        for &byte in &stream {
            decoder.push(&[byte]);
            while let Some(frame) = decoder.next_frame().unwrap() {
                frames.push(frame);
            }
            assert!(decoder.buf.capacity() <= FRAME_HEADER_LEN + LIMIT as usize);
        }
        assert_eq!(frames, whole);
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(decoder.next_frame(), Ok(None));

        // And all at once.
        let mut decoder = FrameDecoder::new(LIMIT, versions);
        decoder.push(&stream);
        let mut frames = Vec::new();
        while let Some(frame) = decoder.next_frame().unwrap() {
            frames.push(frame);
        }
        assert_eq!(frames, whole);
    }

    #[test]
    fn decoder_refuses_an_oversized_length_before_buffering_the_payload() {
        let mut decoder = FrameDecoder::new(1024, PROTOCOL_VERSION..=PROTOCOL_VERSION);
        let mut header = b"RP".to_vec();
        header.push(PROTOCOL_VERSION);
        header.push(1);
        header.extend_from_slice(&(1024u32 + 1).to_le_bytes());
        decoder.push(&header);
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge {
                len: 1025,
                limit: 1024
            })
        );
        assert_eq!(decoder.buffered(), 0);
        decoder.push(&[0; 4096]);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn decoder_stays_poisoned_after_an_error() {
        let good = encode_frame(PROTOCOL_VERSION, &heartbeat());
        let mut bad = good.clone();
        bad[FRAME_HEADER_LEN] ^= 0xff;
        let mut decoder = FrameDecoder::new(LIMIT, PROTOCOL_VERSION..=PROTOCOL_VERSION);
        decoder.push(&good);
        decoder.push(&bad);
        decoder.push(&good);
        assert_eq!(decoder.next_frame().unwrap().unwrap().message, heartbeat());
        let err = decoder.next_frame().unwrap_err();
        assert!(matches!(err, FrameError::ChecksumMismatch { .. }));
        assert!(decoder.is_poisoned());
        // The good frame behind the bad one is never returned, nor anything pushed later.
        for _ in 0..3 {
            decoder.push(&good);
            assert_eq!(decoder.next_frame(), Err(err.clone()));
            assert_eq!(decoder.buffered(), 0);
        }
    }

    #[test]
    fn decoder_accepts_exactly_its_version_range() {
        let v1 = encode_frame(1, &heartbeat());
        let v2 = encode_frame(2, &heartbeat());
        let mut both = FrameDecoder::new(LIMIT, 1..=2);
        both.push(&v1);
        both.push(&v2);
        assert_eq!(both.next_frame().unwrap().unwrap().version, 1);
        assert_eq!(both.next_frame().unwrap().unwrap().version, 2);

        let mut current = FrameDecoder::new(LIMIT, 2..=2);
        current.push(&v1[..3]);
        // Refused from the third byte on, without waiting for the rest.
        assert_eq!(
            current.next_frame(),
            Err(FrameError::UnsupportedVersion { version: 1 })
        );
    }

    #[test]
    fn decoder_waits_for_a_frame_split_anywhere() {
        let bytes = encode_frame(PROTOCOL_VERSION, &every_variant()[4]);
        for cut in 0..=bytes.len() {
            let mut decoder = FrameDecoder::new(LIMIT, PROTOCOL_VERSION..=PROTOCOL_VERSION);
            decoder.push(&bytes[..cut]);
            if cut < bytes.len() {
                assert_eq!(decoder.next_frame(), Ok(None), "cut at {cut}");
            }
            decoder.push(&bytes[cut..]);
            assert_eq!(
                decoder.next_frame().unwrap().unwrap().message,
                every_variant()[4]
            );
            assert_eq!(decoder.next_frame(), Ok(None));
        }
    }

    // ---- property tests -------------------------------------------------------------------

    fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        vec(any::<u8>(), 0..max)
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (arb_bytes(16), arb_bytes(32)).prop_map(|(key, value)| Op::Put { key, value }),
            arb_bytes(16).prop_map(|key| Op::Delete { key }),
        ]
    }

    fn arb_body() -> impl Strategy<Value = RecordBody> {
        prop_oneof![
            "[a-z0-9.]{1,16}:[0-9]{1,5}".prop_map(|a| RecordBody::GenStart {
                master: SiteAddr::new(a)
            }),
            vec(arb_op(), 0..4).prop_map(|ops| RecordBody::Txn(Txn { ops: ops.into() })),
        ]
    }

    fn arb_record() -> impl Strategy<Value = LogRecord> {
        (any::<u64>(), any::<u64>(), arb_body())
            .prop_map(|(lsn, gen, body)| LogRecord::new(lsn, gen, body))
    }

    fn arb_pos() -> impl Strategy<Value = LogPos> {
        (any::<u64>(), any::<u64>()).prop_map(|(gen, lsn)| LogPos::new(gen, lsn))
    }

    fn arb_history() -> impl Strategy<Value = GenHistory> {
        vec((1u64..10, 1u64..100), 0..6).prop_map(|steps| {
            let mut h = GenHistory::new();
            let (mut gen, mut lsn) = (0, 0);
            for (dg, dl) in steps {
                gen += dg;
                lsn += dl;
                h.note_append(&LogRecord::new(
                    lsn,
                    gen,
                    RecordBody::Txn(Txn::put("k", "v")),
                ));
            }
            h
        })
    }

    fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
        vec(vec(arb_op(), 0..3), 0..5).prop_map(|txns| {
            let mut db = Database::new();
            let mut history = GenHistory::new();
            for (i, ops) in txns.into_iter().enumerate() {
                let record =
                    LogRecord::new(i as u64 + 1, 1, RecordBody::Txn(Txn { ops: ops.into() }));
                history.note_append(&record);
                db.apply(&record);
            }
            Snapshot { db, history }
        })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u64>(), arb_pos(), any::<u64>()).prop_map(|(gen, last, first_lsn)| {
                Message::Heartbeat {
                    gen,
                    last,
                    first_lsn,
                }
            }),
            (any::<u64>(), vec(arb_record(), 0..5)).prop_map(|(gen, records)| Message::Log {
                gen,
                records: records.into(),
            }),
            (any::<u64>(), any::<u32>())
                .prop_map(|(gen, priority)| Message::SyncRequest { gen, priority }),
            (any::<u64>(), arb_history(), any::<u64>(), arb_pos()).prop_map(
                |(gen, history, first_lsn, last)| Message::SyncInfo {
                    gen,
                    history,
                    first_lsn,
                    last,
                }
            ),
            (any::<u64>(), any::<u64>()).prop_map(|(gen, from)| Message::LogRequest { gen, from }),
            (any::<u64>(), arb_snapshot())
                .prop_map(|(gen, snapshot)| Message::InitSnapshot { gen, snapshot }),
            (any::<u64>(), any::<u64>(), any::<u32>())
                .prop_map(|(gen, lsn, priority)| Message::Ack { gen, lsn, priority }),
            (any::<u64>(), arb_pos(), any::<u32>(), any::<bool>()).prop_map(
                |(egen, last, priority, takeover)| Message::VoteRequest {
                    pre: !takeover && egen % 2 == 0,
                    egen,
                    last,
                    priority,
                    takeover,
                }
            ),
            (
                any::<u64>(),
                any::<bool>(),
                any::<u64>(),
                arb_pos(),
                any::<u32>()
            )
                .prop_map(|(egen, granted, gen, last, priority)| Message::Vote {
                    egen,
                    granted,
                    gen,
                    last,
                    priority,
                    master: (!granted).then(|| SiteAddr::new("m:1")),
                    pre: gen % 2 == 0,
                    term: gen.wrapping_add(egen),
                }),
            any::<u64>().prop_map(|gen| Message::StaleGeneration { gen }),
            (
                any::<u8>(),
                any::<u8>(),
                ".{0,8}",
                arb_addr(),
                any::<[u8; 16]>()
            )
                .prop_map(|(min_version, max_version, group, site, nonce)| {
                    Message::Hello {
                        min_version,
                        max_version,
                        group,
                        site,
                        nonce,
                    }
                }),
            any::<[u8; 32]>().prop_map(|mac| Message::Proof { mac }),
            any::<u64>().prop_map(|gen| Message::TakeOver { gen }),
            (arb_addr(), any::<u32>())
                .prop_map(|(site, priority)| Message::JoinRequest { site, priority }),
            (arb_addr(), any::<bool>(), any::<u64>(), ".{0,12}").prop_map(
                |(site, ok, gen, reason)| Message::JoinReply {
                    site: site.clone(),
                    result: if ok {
                        crate::wire::JoinResult::Accepted {
                            master: site,
                            gen,
                            last: gen / 2,
                        }
                    } else {
                        crate::wire::JoinResult::Unavail { reason }
                    },
                }
            ),
            arb_addr().prop_map(|site| Message::RemoveRequest { site }),
            (arb_addr(), any::<bool>()).prop_map(|(site, ok)| Message::RemoveReply {
                error: (!ok).then(|| crate::wire::RemoveRefusal::CannotRemoveMaster {
                    master: site.clone()
                }),
                site,
            }),
            (any::<u64>(), any::<u64>()).prop_map(|(gen, last)| Message::Removed { gen, last }),
        ]
    }

    fn arb_addr() -> impl Strategy<Value = SiteAddr> {
        "[a-z0-9.]{1,12}:[0-9]{1,5}".prop_map(SiteAddr::new)
    }

    /// A piece of a byte stream: mostly valid frames, sometimes damaged ones or raw garbage.
    fn arb_segment() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => (1u8..=PROTOCOL_VERSION, arb_message())
                .prop_map(|(version, msg)| encode_frame(version.max(msg.min_version()), &msg)),
            2 => (arb_message(), any::<prop::sample::Index>(), 1u8..=255)
                .prop_map(|(msg, at, flip)| {
                    let mut bytes = encode_frame(PROTOCOL_VERSION, &msg);
                    let i = at.index(bytes.len());
                    bytes[i] ^= flip;
                    bytes
                }),
            1 => arb_bytes(32),
        ]
    }

    /// Checks property (2) on one decode result.
    fn check_reencodes(bytes: &[u8], result: &Result<(Frame, usize), FrameError>) {
        if let Ok((frame, used)) = result {
            assert!(*used <= bytes.len());
            assert_eq!(encode_frame(frame.version, &frame.message), &bytes[..*used]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_messages_round_trip(msg in arb_message(), version in 1u8..=u8::MAX) {
            prop_assume!(msg.min_version() <= version);
            let bytes = encode_frame(version, &msg);
            let versions = version..=version;
            let (frame, used) = decode_frame_accepting(&bytes, LIMIT, &versions).unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(frame.version, version);
            prop_assert_eq!(&frame.message, &msg);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_what_decodes_re_encodes(
            bytes in arb_bytes(4096),
            limit in prop_oneof![Just(LIMIT), Just(DEFAULT_FRAME_LIMIT), 0u32..64],
        ) {
            let result = decode_frame(&bytes, limit);
            check_reencodes(&bytes, &result);
            // The same bytes behind a valid magic, version and kind, to get past the first checks.
            let mut prefixed = raw_frame(PROTOCOL_VERSION, 1, &[])[..4].to_vec();
            prefixed.extend_from_slice(&bytes);
            let result = decode_frame(&prefixed, limit);
            check_reencodes(&prefixed, &result);
        }

        #[test]
        fn arbitrary_bytes_in_random_chunks_never_panic_the_decoder(
            bytes in arb_bytes(4096),
            chunks in vec(1usize..64, 1..16),
        ) {
            let versions = 1..=PROTOCOL_VERSION;
            let expected = decode_all(&bytes, &versions);
            prop_assert_eq!(decode_chunked(&bytes, &chunks, versions), expected);
        }

        #[test]
        fn streams_decode_the_same_whole_and_in_random_chunks(
            segments in vec(arb_segment(), 1..8),
            chunks in vec(1usize..300, 1..16),
        ) {
            let stream = segments.concat();
            let versions = 1..=PROTOCOL_VERSION;
            let (frames, err) = decode_all(&stream, &versions);
            // Property (2) over the whole stream: the frames re-encode to its prefix.
            let reencoded: Vec<u8> = frames
                .iter()
                .flat_map(|f| encode_frame(f.version, &f.message))
                .collect();
            prop_assert_eq!(&reencoded[..], &stream[..reencoded.len()]);
            prop_assert_eq!(decode_chunked(&stream, &chunks, versions), (frames, err));
        }

        #[test]
        fn arbitrary_payloads_behind_a_valid_header_never_panic(
            payload in arb_bytes(4096),
            limit in prop_oneof![Just(LIMIT), 0u32..64],
        ) {
            let bytes = raw_frame(PROTOCOL_VERSION, 1, &payload);
            let result = decode_frame(&bytes, limit);
            match &result {
                Ok((_, used)) => prop_assert_eq!(*used, bytes.len()),
                Err(FrameError::TooLarge { .. }) => prop_assert!(payload.len() > limit as usize),
                Err(FrameError::Malformed(_) | FrameError::UnknownMessage { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
            check_reencodes(&bytes, &result);
        }

        #[test]
        fn damaged_payloads_behind_a_valid_header_never_panic(
            msg in arb_message(),
            edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            // Start from a real payload so the decoder gets deep into it before failing.
            let mut payload = codec::encode(&msg);
            for (at, byte) in edits {
                let i = at.index(payload.len());
                payload[i] = byte;
            }
            if truncate {
                payload.truncate(cut.index(payload.len()));
            }
            let bytes = raw_frame(PROTOCOL_VERSION, 1, &payload);
            let result = decode_frame(&bytes, LIMIT);
            prop_assert!(
                matches!(
                    result,
                    Ok(_) | Err(FrameError::Malformed(_) | FrameError::UnknownMessage { .. })
                ),
                "{:?}",
                result
            );
            check_reencodes(&bytes, &result);
        }
    }
}
