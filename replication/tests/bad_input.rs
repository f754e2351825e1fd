//! The bad-input table: one row per kind of bad input the engine meets on a socket or on disk,
//! fed in the real way. Each row asserts the clear error (kind and wording) it gets, that the
//! connection or file is dealt with, that nothing committed is lost, and that a counter, an
//! event or the open report shows it.
//!
//! - frames: truncated, oversized, wrong magic, wrong version, unknown kind, wrong checksum,
//!   unknown message type, malformed payload (the codec, and a decoder that delivered good
//!   frames before the bad one);
//! - handshakes: wrong group, no common version, our own address, a wrong proof, a message out
//!   of order;
//! - a real node over loopback TCP: garbage, a wrong group or a wrong version before the
//!   handshake; garbage, a bad checksum, an oversized or unknown frame, or a hang-up mid-frame
//!   after it;
//! - the log on disk: a torn tail, garbage after the last record, a corrupt record in the middle
//!   (and the client that lost records to it catching up again), a truncated header, a corrupt
//!   snapshot or meta file.
//!
//! (Configuration and scenario files get their rows with their parsers.)

use replication::log::RecordBody;
use replication::node::{self, MonotonicClock, NodeConfig, NodeEvent, NodeHandle, NodeStats};
use replication::site::{Config, Input, Output, Reply, Request, RoleKind, Site};
use replication::storage::{FileStorage, Storage, StorageError};
use replication::wire::handshake::{Handshake, HandshakeConfig, HandshakeError, HandshakeStep};
use replication::wire::{
    decode_frame, encode_frame, FrameDecoder, FrameError, Message, DEFAULT_FRAME_LIMIT,
    FRAME_HEADER_LEN, PROTOCOL_VERSION,
};
use replication::{LogPos, LogRecord, SiteAddr, Time, Txn};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---- frames --------------------------------------------------------------------------------

const LIMIT: u32 = 64 * 1024;

fn heartbeat() -> Message {
    Message::Heartbeat {
        gen: 3,
        last: LogPos::new(3, 42),
        first_lsn: 1,
    }
}

/// A frame with these header fields, a correct CRC32 and this payload.
fn raw_frame(version: u8, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = b"RP".to_vec();
    frame.push(version);
    frame.push(kind);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&frame);
    crc.update(payload);
    frame.extend_from_slice(&crc.finalize().to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn with_byte(mut bytes: Vec<u8>, at: usize, value: u8) -> Vec<u8> {
    bytes[at] = value;
    bytes
}

/// One bad frame: its bytes, the error it must get, and words the error must say.
struct FrameRow {
    case: &'static str,
    bytes: Vec<u8>,
    expect: fn(&FrameError) -> bool,
    says: &'static str,
}

fn frame_rows() -> Vec<FrameRow> {
    let good = encode_frame(PROTOCOL_VERSION, &heartbeat());
    let payload_len = good.len() - FRAME_HEADER_LEN;
    let mut oversized = good[..8].to_vec();
    oversized[4..8].copy_from_slice(&(LIMIT + 1).to_le_bytes());
    vec![
        FrameRow {
            case: "truncated header",
            bytes: good[..7].to_vec(),
            expect: |e| {
                matches!(
                    e,
                    FrameError::Truncated {
                        needed: 12,
                        have: 7
                    }
                )
            },
            says: "truncated frame: 12 bytes needed, only 7 available",
        },
        FrameRow {
            case: "truncated payload",
            bytes: good[..good.len() - 1].to_vec(),
            expect: |e| matches!(e, FrameError::Truncated { .. }),
            says: "truncated frame",
        },
        FrameRow {
            case: "oversized",
            bytes: oversized,
            expect: |e| matches!(e, FrameError::TooLarge { len, limit: LIMIT } if *len == u64::from(LIMIT) + 1),
            says: "exceeds the limit of 65536 bytes",
        },
        FrameRow {
            case: "wrong magic (another protocol)",
            bytes: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            expect: |e| matches!(e, FrameError::BadMagic { found } if found == b"GE"),
            says: "not a repsim frame",
        },
        FrameRow {
            case: "wrong version (newer)",
            bytes: raw_frame(PROTOCOL_VERSION + 1, 1, &good[FRAME_HEADER_LEN..]),
            expect: |e| matches!(e, FrameError::UnsupportedVersion { version: 3 }),
            says: "unsupported protocol version 3 (this site speaks version 2)",
        },
        FrameRow {
            case: "wrong version (zero)",
            bytes: raw_frame(0, 1, &good[FRAME_HEADER_LEN..]),
            expect: |e| matches!(e, FrameError::UnsupportedVersion { version: 0 }),
            says: "unsupported protocol version 0",
        },
        FrameRow {
            case: "unknown frame kind",
            bytes: raw_frame(PROTOCOL_VERSION, 7, &good[FRAME_HEADER_LEN..]),
            expect: |e| matches!(e, FrameError::UnknownKind { kind: 7 }),
            says: "unknown frame kind 7",
        },
        FrameRow {
            case: "wrong checksum (payload changed)",
            bytes: with_byte(good.clone(), FRAME_HEADER_LEN + payload_len / 2, 0xee),
            expect: |e| matches!(e, FrameError::ChecksumMismatch { .. }),
            says: "frame checksum mismatch",
        },
        FrameRow {
            case: "wrong checksum (checksum changed)",
            bytes: with_byte(good.clone(), 9, good[9] ^ 0x40),
            expect: |e| matches!(e, FrameError::ChecksumMismatch { .. }),
            says: "corrupted in transit",
        },
        FrameRow {
            case: "unknown message type",
            bytes: raw_frame(PROTOCOL_VERSION, 1, &replication::codec::encode(&99u32)),
            expect: |e| matches!(e, FrameError::UnknownMessage { tag: 99 }),
            says: "unknown message type 99",
        },
        FrameRow {
            case: "malformed payload",
            bytes: raw_frame(PROTOCOL_VERSION, 1, &good[FRAME_HEADER_LEN..good.len() - 3]),
            expect: |e| matches!(e, FrameError::Malformed(_)),
            says: "frame payload is not a valid message",
        },
        FrameRow {
            case: "message from a later version in a version-1 frame",
            bytes: raw_frame(
                1,
                1,
                &encode_frame(2, &Message::Removed { gen: 1, last: 0 })[FRAME_HEADER_LEN..],
            ),
            expect: |e| matches!(e, FrameError::Malformed(why) if why.contains("version 1")),
            says: "a removed message does not exist in protocol version 1",
        },
    ]
}

#[test]
fn bad_frames_get_a_clear_error_and_the_frames_before_them_are_delivered() {
    let good = encode_frame(PROTOCOL_VERSION, &heartbeat());
    for row in frame_rows() {
        let case = row.case;
        // A version-1 frame is only readable where version 1 is accepted.
        let versions = if case.contains("version-1") {
            1..=PROTOCOL_VERSION
        } else {
            PROTOCOL_VERSION..=PROTOCOL_VERSION
        };
        let mut decoder = FrameDecoder::new(LIMIT, versions);
        decoder.push(&good);
        decoder.push(&row.bytes);
        // What came before the bad frame is intact.
        let first = decoder
            .next_frame()
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(first.map(|f| f.message), Some(heartbeat()), "{case}");
        let err = match decoder.next_frame() {
            Err(err) => err,
            // A truncated frame is not an error to a stream: the rest may still come.
            Ok(None)
                if matches!(
                    decode_frame(&row.bytes, LIMIT),
                    Err(FrameError::Truncated { .. })
                ) =>
            {
                assert!(!decoder.is_poisoned(), "{case}");
                decode_frame(&row.bytes, LIMIT).unwrap_err()
            }
            other => panic!("{case}: expected an error, got {other:?}"),
        };
        assert!((row.expect)(&err), "{case}: got {err:?}");
        assert!(
            err.to_string().contains(row.says),
            "{case}: {err} does not say {:?}",
            row.says
        );
        if decoder.is_poisoned() {
            // The connection is done: nothing after a bad frame is ever delivered.
            decoder.push(&good);
            assert_eq!(decoder.next_frame(), Err(err), "{case}");
            assert_eq!(decoder.buffered(), 0, "{case}");
        }
    }
}

// ---- handshakes ----------------------------------------------------------------------------

fn shake_cfg(
    site: &str,
    group: &str,
    secret: &str,
    versions: std::ops::RangeInclusive<u8>,
) -> HandshakeConfig {
    HandshakeConfig {
        group: group.into(),
        site: SiteAddr::new(site),
        secret: secret.as_bytes().to_vec(),
        versions,
    }
}

#[test]
fn bad_handshakes_are_refused_for_good_with_an_error_naming_the_problem() {
    let ours = || shake_cfg("a:1", "payroll", "s3cret", 1..=2);
    type Expect = fn(&HandshakeError) -> bool;
    let rows: Vec<(&str, HandshakeConfig, Expect, &str)> = vec![
        (
            "wrong group",
            shake_cfg("b:1", "billing", "s3cret", 1..=2),
            |e| matches!(e, HandshakeError::WrongGroup { .. }),
            "peer b:1 belongs to group \"billing\", not \"payroll\"",
        ),
        (
            "no common version",
            shake_cfg("b:1", "payroll", "s3cret", 3..=4),
            |e| matches!(e, HandshakeError::NoCommonVersion { .. }),
            "peer b:1 speaks protocol versions 3..=4, we speak 1..=2",
        ),
        (
            "our own address",
            shake_cfg("a:1", "payroll", "s3cret", 1..=2),
            |e| matches!(e, HandshakeError::SelfConnection(_)),
            "peer claims to be this site (a:1)",
        ),
        (
            "wrong secret",
            shake_cfg("b:1", "payroll", "guess", 1..=2),
            |e| matches!(e, HandshakeError::BadProof { .. }),
            "peer b:1 failed to prove it holds the group secret",
        ),
    ];
    for (case, theirs, expect, says) in rows {
        let (mut us, our_hello) = Handshake::start(ours(), [1; 16]);
        let (mut them, their_hello) = Handshake::start(theirs, [2; 16]);
        let mut result = us.on_message(their_hello.clone());
        if let Ok(HandshakeStep::Send(_)) = result {
            let Ok(HandshakeStep::Send(proof)) = them.on_message(our_hello) else {
                panic!("{case}: the peer would not answer");
            };
            result = us.on_message(proof);
        }
        let err = result.expect_err(case);
        assert!(expect(&err), "{case}: {err:?}");
        assert_eq!(err.to_string(), says, "{case}");
        // Refused for good: even a correct hello is refused from now on.
        assert!(!us.is_established(), "{case}");
        assert!(us.on_message(their_hello).is_err(), "{case}");
        assert!(!us.is_established(), "{case}");
    }
    // A message out of order.
    let (mut us, _) = Handshake::start(ours(), [1; 16]);
    let err = us.on_message(heartbeat()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unexpected heartbeat message during the handshake (expected hello)"
    );
}

// ---- a real node over loopback TCP ---------------------------------------------------------

const GROUP: &str = "bad-input";
const SECRET: &str = "s3cret";
const WAIT: Duration = Duration::from_secs(5);

fn free_addr() -> SiteAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback bind");
    SiteAddr::new(listener.local_addr().expect("bound").to_string())
}

/// A one-site group on files in `dir`, elected master and holding `committed = yes`.
async fn committed_node(dir: &Path) -> (NodeHandle, tokio::sync::mpsc::Receiver<NodeEvent>) {
    let addr = free_addr();
    let mut cfg = Config::new(addr.clone(), [addr]);
    cfg.timeouts.election_timeout_ms = 100;
    cfg.timeouts.election_jitter_ms = 50;
    let (storage, _) = FileStorage::open(dir).expect("storage opens");
    let node_cfg = NodeConfig::new(cfg, GROUP, SECRET);
    let (node, events) = node::start(node_cfg, storage, Arc::new(MonotonicClock::new()), 7)
        .await
        .expect("node starts");
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.stats().await.unwrap().site.role != RoleKind::Master {
        assert!(tokio::time::Instant::now() < deadline, "no master");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = node
        .request(Request::Commit(Txn::put("committed", "yes")))
        .await;
    assert!(
        matches!(reply, Ok(Ok(Reply::Committed { .. }))),
        "{reply:?}"
    );
    (node, events)
}

/// Connects and completes the handshake as a member would (it holds the secret).
async fn member_connection(node: &NodeHandle) -> TcpStream {
    let mut stream = TcpStream::connect(node.addr().as_str())
        .await
        .expect("connect");
    let cfg = shake_cfg("10.9.9.9:1", GROUP, SECRET, 1..=PROTOCOL_VERSION);
    let (mut shake, hello) = Handshake::start(cfg, [3; 16]);
    stream.write_all(&encode_frame(1, &hello)).await.unwrap();
    let mut decoder = FrameDecoder::new(DEFAULT_FRAME_LIMIT, 1..=PROTOCOL_VERSION);
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("the node answers the handshake")
            .expect("read");
        assert!(n > 0, "the node closed during the handshake");
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder.next_frame().expect("the node's frames decode") {
            match shake
                .on_message(frame.message)
                .expect("the node is a member")
            {
                HandshakeStep::Send(proof) => {
                    stream.write_all(&encode_frame(1, &proof)).await.unwrap();
                }
                HandshakeStep::Established { .. } => return stream,
            }
        }
    }
}

/// Reads until the node closes the connection; panics if it does not within the wait.
async fn closed_by_node(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => panic!("the node kept the connection open"),
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {} // a heartbeat sent before it read our bytes
        }
    }
}

/// Waits for a node event matching `want`, and returns it.
async fn event(
    events: &mut tokio::sync::mpsc::Receiver<NodeEvent>,
    want: impl Fn(&NodeEvent) -> bool,
) -> NodeEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(e)) if want(&e) => return e,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("the expected event never came"),
        }
    }
}

/// What committed before the bad input is still there, and the node still takes commits.
async fn nothing_lost(node: &NodeHandle, case: &str) -> NodeStats {
    assert_eq!(
        node.get("committed").await.unwrap().as_deref(),
        Some(&b"yes"[..]),
        "{case}"
    );
    let reply = node.request(Request::Commit(Txn::put(case, "after"))).await;
    assert!(
        matches!(reply, Ok(Ok(Reply::Committed { .. }))),
        "{case}: {reply:?}"
    );
    let stats = node.stats().await.unwrap();
    assert_eq!(stats.site.role, RoleKind::Master, "{case}");
    stats
}

/// Bytes sent before the handshake; the node must refuse the connection.
struct BeforeRow {
    case: &'static str,
    bytes: Vec<u8>,
    says: &'static str,
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_refuses_bad_bytes_before_the_handshake_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut events) = committed_node(dir.path()).await;
    let hello = |group: &str, versions| {
        Handshake::start(shake_cfg("10.9.9.9:1", group, SECRET, versions), [4; 16]).1
    };
    let rows = [
        BeforeRow {
            case: "garbage",
            bytes: b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".to_vec(),
            says: "malformed handshake frame: not a repsim frame",
        },
        BeforeRow {
            case: "wrong group",
            bytes: encode_frame(1, &hello("billing", 1..=2)),
            says: "belongs to group \"billing\", not \"bad-input\"",
        },
        BeforeRow {
            case: "wrong version",
            bytes: raw_frame(
                9,
                1,
                &encode_frame(1, &hello(GROUP, 9..=9))[FRAME_HEADER_LEN..],
            ),
            says: "unsupported protocol version 9",
        },
        BeforeRow {
            case: "wrong checksum",
            bytes: {
                let mut frame = encode_frame(1, &hello(GROUP, 1..=2));
                let last = frame.len() - 1;
                frame[last] ^= 1;
                frame
            },
            says: "frame checksum mismatch",
        },
    ];
    for (i, row) in rows.into_iter().enumerate() {
        let case = row.case;
        let mut stream = TcpStream::connect(node.addr().as_str()).await.unwrap();
        stream.write_all(&row.bytes).await.unwrap();
        closed_by_node(&mut stream).await;
        let NodeEvent::HandshakeRefused { error, .. } = event(&mut events, |e| {
            matches!(e, NodeEvent::HandshakeRefused { .. })
        })
        .await
        else {
            unreachable!()
        };
        assert!(error.contains(row.says), "{case}: {error}");
        let stats = nothing_lost(&node, case).await;
        assert_eq!(stats.handshakes_refused, i as u64 + 1, "{case}");
        assert_eq!(stats.malformed_frames, 0, "{case}");
    }
}

/// Bytes sent after a completed handshake; the node must close the connection and count it.
struct AfterRow {
    case: &'static str,
    bytes: Vec<u8>,
    says: &'static str,
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_closes_a_member_connection_that_sends_garbage_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut events) = committed_node(dir.path()).await;
    let good = encode_frame(PROTOCOL_VERSION, &heartbeat());
    let mut oversized = good[..FRAME_HEADER_LEN].to_vec();
    oversized[4..8].copy_from_slice(&(DEFAULT_FRAME_LIMIT + 1).to_le_bytes());
    let rows = [
        AfterRow {
            case: "garbage",
            bytes: vec![0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7, 8],
            says: "not a repsim frame",
        },
        AfterRow {
            case: "wrong checksum",
            bytes: with_byte(good.clone(), FRAME_HEADER_LEN + 2, 0x77),
            says: "frame checksum mismatch",
        },
        AfterRow {
            case: "oversized",
            bytes: oversized,
            says: "frame payload of 16777217 bytes exceeds the limit of 16777216 bytes",
        },
        AfterRow {
            case: "unknown message type",
            bytes: raw_frame(PROTOCOL_VERSION, 1, &replication::codec::encode(&250u32)),
            says: "unknown message type 250",
        },
        AfterRow {
            case: "a handshake message again",
            bytes: encode_frame(PROTOCOL_VERSION, &Message::Proof { mac: [0; 32] }),
            says: "handshake message after the handshake",
        },
        AfterRow {
            case: "truncated, then hung up",
            bytes: good[..good.len() - 4].to_vec(),
            says: "connection closed in the middle of a frame",
        },
    ];
    for (i, row) in rows.into_iter().enumerate() {
        let case = row.case;
        let mut stream = member_connection(&node).await;
        stream.write_all(&row.bytes).await.unwrap();
        if case.contains("hung up") {
            stream.shutdown().await.unwrap();
        }
        closed_by_node(&mut stream).await;
        let NodeEvent::MalformedFrame { peer, error } = event(&mut events, |e| {
            matches!(e, NodeEvent::MalformedFrame { .. })
        })
        .await
        else {
            unreachable!()
        };
        assert_eq!(peer.as_str(), "10.9.9.9:1", "{case}");
        assert!(error.contains(row.says), "{case}: {error}");
        event(&mut events, |e| {
            matches!(e, NodeEvent::ConnectionBroken { .. })
        })
        .await;
        let stats = nothing_lost(&node, case).await;
        assert_eq!(stats.malformed_frames, i as u64 + 1, "{case}");
        assert_eq!(stats.connected_peers, 0, "{case}");
        assert_eq!(stats.handshakes_refused, 0, "{case}");
    }
}

// ---- the log on disk -----------------------------------------------------------------------

fn record(lsn: u64) -> LogRecord {
    LogRecord::new(
        lsn,
        1,
        RecordBody::Txn(Txn::put(format!("k{lsn}"), format!("value {lsn}"))),
    )
}

/// A storage in `dir` holding records 1..=n, synced; returns where each record's frame starts,
/// then where the records end (the file goes on with the zeros it was extended with).
fn synced_log(dir: &Path, n: u64) -> Vec<u64> {
    let (mut s, _) = FileStorage::open(dir).unwrap();
    s.append(&(1..=n).map(record).collect::<Vec<_>>()).unwrap();
    s.sync().unwrap();
    drop(s);
    // Walk the file's frames: a 12-byte header, then [len u32][crc u32][payload] each.
    let bytes = std::fs::read(dir.join("log.0")).unwrap();
    let mut offsets = Vec::new();
    let mut pos = 12usize;
    while pos < bytes.len() {
        offsets.push(pos as u64);
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        pos += 8 + len;
    }
    assert_eq!(offsets.len() as u64, n + 1);
    assert!(bytes[*offsets.last().unwrap() as usize..]
        .iter()
        .all(|&b| b == 0));
    offsets
}

fn all_records(s: &mut FileStorage) -> Vec<LogRecord> {
    replication::storage::read_to_end(s, 1).unwrap()
}

fn log_file(dir: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("log.0"))
        .unwrap()
}

#[test]
fn a_damaged_log_tail_is_cut_on_open_reported_and_what_precedes_it_kept() {
    use std::io::{Seek, SeekFrom, Write};
    type Damage = fn(&Path, &[u64]);
    let rows: Vec<(&str, Damage, u64, &str)> = vec![
        (
            "torn last record",
            |dir, offsets| {
                // Cut short, zeros and all: the file ends inside the last record.
                log_file(dir).set_len(offsets[5] - 5).unwrap();
            },
            4,
            "torn record",
        ),
        (
            "garbage after the last record",
            |dir, offsets| {
                let mut file = log_file(dir);
                file.seek(SeekFrom::Start(offsets[5])).unwrap();
                file.write_all(&[0x42; 11]).unwrap();
            },
            5,
            "LSN 6",
        ),
        (
            "length field beyond any record",
            |dir, offsets| {
                let mut file = log_file(dir);
                file.seek(SeekFrom::Start(offsets[4])).unwrap();
                file.write_all(&u32::MAX.to_le_bytes()).unwrap();
            },
            4,
            "over the",
        ),
        (
            "corrupt record in the middle",
            |dir, offsets| {
                let mut file = log_file(dir);
                file.seek(SeekFrom::Start(offsets[2] + 12)).unwrap();
                file.write_all(&[0xff]).unwrap();
            },
            2,
            "checksum mismatch",
        ),
    ];
    for (case, damage, kept, says) in rows {
        let dir = tempfile::tempdir().unwrap();
        let offsets = synced_log(dir.path(), 5);
        damage(dir.path(), &offsets);
        let (mut s, recovery) = FileStorage::open(dir.path()).unwrap();
        let reason = recovery.reason.clone().unwrap_or_default();
        assert!(reason.contains(says), "{case}: {reason}");
        assert!(
            reason.contains(&format!("LSN {}", kept + 1)),
            "{case}: {reason}"
        );
        assert!(recovery.dropped_bytes > 0, "{case}");
        assert_eq!(
            recovery.dropped_records,
            5u64.saturating_sub(kept).max(1),
            "{case}"
        );
        // Every record before the damage, exactly as written; nothing damaged is served.
        assert_eq!(
            all_records(&mut s),
            (1..=kept).map(record).collect::<Vec<_>>(),
            "{case}"
        );
        // The log continues after the cut, and reopens clean.
        s.append(&[record(kept + 1)]).unwrap();
        s.sync().unwrap();
        drop(s);
        let (_, again) = FileStorage::open(dir.path()).unwrap();
        assert_eq!(again.reason, None, "{case}");
    }
}

#[test]
fn damaged_files_that_decide_what_is_current_refuse_to_open_and_are_left_in_place() {
    type Damage = fn(&Path);
    let rows: Vec<(&str, Damage, &str, &str)> = vec![
        (
            "truncated log header",
            |dir| log_file(dir).set_len(5).unwrap(),
            "corrupt log header",
            "5 bytes, shorter than the 12-byte header",
        ),
        (
            "log of another format",
            |dir| {
                let mut bytes = std::fs::read(dir.join("log.0")).unwrap();
                bytes[..8].copy_from_slice(b"NOTALOG!");
                std::fs::write(dir.join("log.0"), bytes).unwrap();
            },
            "corrupt log header",
            "bad magic",
        ),
        (
            "corrupt snapshot file",
            |dir| std::fs::write(dir.join("snapshot"), b"RSIMSNAP garbage").unwrap(),
            "corrupt snapshot file",
            "shorter than the 24-byte header",
        ),
        (
            "corrupt meta file",
            |dir| {
                let mut bytes = std::fs::read(dir.join("meta")).unwrap();
                let last = bytes.len() - 1;
                bytes[last] ^= 0xff;
                std::fs::write(dir.join("meta"), bytes).unwrap();
            },
            "corrupt meta file",
            "checksum mismatch",
        ),
    ];
    for (case, damage, what, says) in rows {
        let dir = tempfile::tempdir().unwrap();
        synced_log(dir.path(), 3);
        let (mut s, _) = FileStorage::open(dir.path()).unwrap();
        s.write_meta(&replication::storage::Meta {
            gen: 1,
            egen: 1,
            ..Default::default()
        })
        .unwrap();
        drop(s);
        damage(dir.path());
        let before: Vec<_> = files(dir.path());
        let err = match FileStorage::open(dir.path()) {
            Err(err) => err,
            Ok(_) => panic!("{case}: opened"),
        };
        assert!(
            matches!(err, StorageError::Corrupt { .. }),
            "{case}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(what) && text.contains(says),
            "{case}: {text}"
        );
        assert!(
            text.contains(&dir.path().display().to_string()),
            "{case}: names the file"
        );
        // Nothing deleted or rewritten: the operator gets the files as they were.
        assert_eq!(files(dir.path()), before, "{case}");
    }
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Two sites on files, stepped by hand: what a client loses to a damaged log it gets back
/// from its master, so no committed record is lost to the group.
#[test]
fn a_client_whose_log_lost_its_tail_to_damage_catches_up_from_the_master() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let addrs = [SiteAddr::new("a:1"), SiteAddr::new("b:1")];
    let open = |i: usize| {
        let mut cfg = Config::new(addrs[i].clone(), addrs.clone());
        cfg.priority = if i == 0 { 100 } else { 1 };
        let (storage, recovery) = FileStorage::open(dirs[i].path()).unwrap();
        (
            Site::open(cfg, storage, i as u64, Time(0)).unwrap(),
            recovery,
        )
    };
    let mut pair = Pair::new([open(0).0, open(1).0]);
    assert!(
        pair.run(|p| p.sites[0].is_master() && p.caught_up()),
        "elected"
    );
    for i in 0..6 {
        pair.request(0, Request::Commit(Txn::put(format!("k{i}"), "v")));
        assert!(pair.run(|p| p.caught_up()), "commit {i} replicated");
    }
    let committed = pair.sites[0].last();

    // The client stops, its log is damaged in the middle, it reopens shorter.
    let client = pair.sites.pop().unwrap();
    drop(client);
    pair.in_flight.clear();
    pair.step(0, Input::PeerDisconnected(addrs[1].clone()));
    let bytes = std::fs::read(dirs[1].path().join("log.0")).unwrap();
    let mut damaged = bytes.clone();
    // Halfway through the records (the zeros after them are not records).
    let middle = bytes.iter().rposition(|&b| b != 0).unwrap() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(dirs[1].path().join("log.0"), damaged).unwrap();
    let (client, recovery) = open(1);
    assert!(recovery.dropped_records > 0, "{recovery:?}");
    assert!(client.last().lsn < committed.lsn, "the damage cost records");
    pair.sites.push(client);
    pair.reconnect();

    assert!(pair.run(|p| p.caught_up()), "the client catches up");
    let master_log = replication::storage::read_to_end(pair.sites[0].storage(), 1).unwrap();
    let client_log = replication::storage::read_to_end(pair.sites[1].storage(), 1).unwrap();
    assert!(pair.sites[1].last() >= committed);
    assert_eq!(
        client_log, master_log,
        "every record the master has, the client has"
    );
    for i in 0..6 {
        assert_eq!(
            pair.sites[1].get(format!("k{i}").as_bytes()),
            Some(&b"v"[..])
        );
    }
    assert_eq!(pair.sites[1].db(), pair.sites[0].db());
}

/// A minimal driver for two sites: messages delivered in order, time jumping to the next
/// deadline when nothing is in flight.
struct Pair {
    sites: Vec<Site<FileStorage>>,
    in_flight: std::collections::VecDeque<(usize, SiteAddr, Message)>,
    now: Time,
    next_request: u64,
}

impl Pair {
    fn new(sites: [Site<FileStorage>; 2]) -> Pair {
        let mut pair = Pair {
            sites: sites.into(),
            in_flight: Default::default(),
            now: Time(0),
            next_request: 1,
        };
        for i in 0..2 {
            pair.step(i, Input::Tick);
        }
        pair.reconnect();
        pair
    }

    fn reconnect(&mut self) {
        for i in 0..2 {
            let addr = self.sites[1 - i].addr().clone();
            self.step(i, Input::PeerConnected { addr, version: 2 });
        }
    }

    fn caught_up(&self) -> bool {
        self.sites[0].is_master() && self.sites[1].last() == self.sites[0].last()
    }

    fn request(&mut self, i: usize, request: Request) {
        let id = replication::site::RequestId(self.next_request);
        self.next_request += 1;
        self.step(i, Input::Request { id, request });
    }

    fn step(&mut self, i: usize, input: Input) {
        for output in self.sites[i].step(self.now, input) {
            if let Output::Send { to, msg } = output {
                let j = usize::from(self.sites[1].addr() == &to);
                let from = self.sites[i].addr().clone();
                self.in_flight.push_back((j, from, msg));
            }
        }
    }

    /// Runs until `done` holds (true) or 60 simulated seconds pass (false).
    fn run(&mut self, done: impl Fn(&Pair) -> bool) -> bool {
        let end = self.now.plus_ms(60_000);
        while self.now < end {
            if done(self) {
                return true;
            }
            if let Some((to, from, msg)) = self.in_flight.pop_front() {
                self.step(to, Input::Message { from, msg });
                continue;
            }
            let (at, i) = (0..2)
                .filter_map(|i| Some((self.sites[i].next_deadline()?, i)))
                .min()
                .expect("a running site has a deadline");
            self.now = self.now.max(at);
            self.step(i, Input::Tick);
        }
        done(self)
    }
}
