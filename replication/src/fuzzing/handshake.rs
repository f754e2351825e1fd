//! The handshake against whatever a peer sends before it is trusted.
//!
//! The peer's bytes go through a [`FrameDecoder`] in chunks, as the driver reads them, and each
//! decoded message goes to our [`Handshake`]. The peer may be honest (it holds the group secret
//! and answers our `Hello` correctly), half honest, or send anything at all. Properties:
//!
//! 1. Nothing panics; a malformed frame ends the connection before the handshake sees it.
//! 2. The handshake is established only by a proof equal to the one an honest peer with the
//!    secret computes for the `Hello` we accepted, and then with that peer's address and a
//!    version both sides speak.
//! 3. A refusal is for good: every later message is refused too and it is never established.
//! 4. A wrong proof learns nothing: every wrong proof (one flipped bit or a random guess) gets
//!    the same error naming the same peer, and the comparison itself is `verify_slice`'s
//!    constant-time one (read `wire/handshake.rs`).
//! 5. We send exactly one proof, only after a `Hello`, and it is never the proof we expect back
//!    (so a reflected proof cannot pass).

use crate::types::SiteAddr;
use crate::wire::handshake::{Handshake, HandshakeConfig, HandshakeError, HandshakeStep};
use crate::wire::{encode_frame, FrameDecoder, Message, DEFAULT_FRAME_LIMIT};

/// The group secret of the site under test. The input never sees it: it can only ask for an
/// honest proof ([`PeerStep::HonestProof`]) or guess.
const SECRET: &[u8] = b"the group secret";
/// The group of the site under test.
const GROUP: &str = "payroll";
/// The address of the site under test.
const OURS: &str = "10.0.0.1:7000";
/// The nonce the site under test sends.
const OUR_NONCE: [u8; 16] = [0x5a; 16];

/// Steps before the rest of a script is ignored, so every input runs in bounded time.
pub const MAX_STEPS: usize = 64;

/// What the peer sends, and how its bytes reach the site under test.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeScript {
    /// The protocol versions the site under test speaks: from 1 (2 when `ours.0 % 4 == 3`) to
    /// `1 + ours.1 % 2` (at least the lower end).
    pub ours: (u8, u8),
    /// Sizes of the reads that bring the peer's bytes in (cycled; zero counts as one).
    pub chunks: Vec<u8>,
    /// What the peer sends, in order.
    pub steps: Vec<PeerStep>,
}

/// One thing the peer sends.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerStep {
    /// A `Hello`. Choices are folded so that random bytes land on the interesting values
    /// often (a fuzzer would otherwise rarely name our group or a version we speak).
    Hello {
        /// Lowest version the peer claims ([`version`]).
        min_version: u8,
        /// Highest version the peer claims ([`version`]).
        max_version: u8,
        /// Its group ([`group_name`]).
        group: u8,
        /// Its address ([`site_name`]).
        site: u8,
        /// The peer's nonce.
        nonce: [u8; 16],
        /// The version of the frame that carries it; `None`: the peer's lowest, as a real
        /// peer frames its hello and proof.
        frame_version: Option<u8>,
    },
    /// The proof an honest peer with the secret sends after the last `Hello` (what the peer
    /// would compute; zeros if no `Hello` was sent or an honest peer would have refused ours).
    HonestProof,
    /// The honest proof with one bit flipped.
    FlippedProof {
        /// Which byte.
        byte: u8,
        /// Which bit of it.
        bit: u8,
    },
    /// A guess.
    GuessedProof([u8; 32]),
    /// Our own proof sent back to us.
    ReflectedProof,
    /// A message that is no part of a handshake.
    Other(u8),
    /// Raw bytes on the stream.
    Raw(Vec<u8>),
}

/// The peer as the script shapes it: its last `Hello`, to compute the honest proof.
struct PeerModel {
    hello: Option<HandshakeConfig>,
    nonce: [u8; 16],
}

fn our_config(script: &HandshakeScript) -> HandshakeConfig {
    // The driver always accepts version 1 (a peer frames its hello in its lowest version);
    // a site speaking only 2 is kept as a rarer case.
    let lo = if script.ours.0 % 4 == 3 { 2 } else { 1 };
    let hi = (1 + script.ours.1 % 2).max(lo);
    HandshakeConfig {
        group: GROUP.into(),
        site: SiteAddr::new(OURS),
        secret: SECRET.to_vec(),
        versions: lo..=hi,
    }
}

/// A protocol version: mostly 0 to 3 (around the ones we speak), else the byte itself.
pub fn version(choice: u8) -> u8 {
    if choice < 192 {
        choice % 4
    } else {
        choice
    }
}

/// A group name: ours half the time, else another, the empty name, a long one, or ours with a
/// trailing NUL (equal to ours up to where a C string would stop).
pub fn group_name(choice: u8) -> String {
    match choice % 8 {
        0..=3 => GROUP.into(),
        4 => "billing".into(),
        5 => String::new(),
        6 => "x".repeat(300),
        _ => format!("{GROUP}\0"),
    }
}

/// An address: ours one time in four (a peer claiming to be us), else `peer<n>:7000`.
pub fn site_name(choice: u8) -> SiteAddr {
    if choice.is_multiple_of(4) {
        SiteAddr::new(OURS)
    } else {
        SiteAddr::new(format!("peer{choice}:7000"))
    }
}

/// The peer a `Hello` step describes, holding the secret.
fn peer_config(min_version: u8, max_version: u8, group: u8, site: u8) -> HandshakeConfig {
    HandshakeConfig {
        group: group_name(group),
        site: site_name(site),
        secret: SECRET.to_vec(),
        versions: version(min_version)..=version(max_version),
    }
}

/// The proof an honest peer configured as `peer` sends after reading `our_hello`, if it would
/// accept it: computed by a second handshake that holds the secret, as a real peer would.
fn honest_proof(peer: &HandshakeConfig, nonce: [u8; 16], our_hello: &Message) -> Option<[u8; 32]> {
    let (mut theirs, _) = Handshake::start(peer.clone(), nonce);
    match theirs.on_message(our_hello.clone()) {
        Ok(HandshakeStep::Send(Message::Proof { mac })) => Some(mac),
        _ => None,
    }
}

/// The bytes the peer sends for the script, with the proof each `Hello` makes honest.
fn peer_stream(script: &HandshakeScript, our_hello: &Message, our_proof: &[u8; 32]) -> Vec<u8> {
    let mut peer = PeerModel {
        hello: None,
        nonce: [0; 16],
    };
    // What the peer frames its messages in: its lowest version, as a real peer does.
    let framing = |peer: &PeerModel| peer.hello.as_ref().map_or(1, |h| *h.versions.start());
    let mut stream = Vec::new();
    let honest = |peer: &PeerModel| {
        peer.hello
            .as_ref()
            .and_then(|cfg| honest_proof(cfg, peer.nonce, our_hello))
            .unwrap_or([0; 32])
    };
    for step in script.steps.iter().take(MAX_STEPS) {
        let (version, msg) = match step {
            PeerStep::Hello {
                min_version,
                max_version,
                group,
                site,
                nonce,
                frame_version,
            } => {
                let cfg = peer_config(*min_version, *max_version, *group, *site);
                peer.hello = Some(cfg.clone());
                peer.nonce = *nonce;
                let (_, hello) = Handshake::start(cfg, *nonce);
                (frame_version.unwrap_or_else(|| framing(&peer)), hello)
            }
            PeerStep::HonestProof => (framing(&peer), Message::Proof { mac: honest(&peer) }),
            PeerStep::FlippedProof { byte, bit } => {
                let mut mac = honest(&peer);
                mac[usize::from(*byte) % 32] ^= 1 << (bit % 8);
                (framing(&peer), Message::Proof { mac })
            }
            PeerStep::GuessedProof(mac) => (framing(&peer), Message::Proof { mac: *mac }),
            PeerStep::ReflectedProof => (framing(&peer), Message::Proof { mac: *our_proof }),
            PeerStep::Other(which) => (framing(&peer), other_message(*which)),
            PeerStep::Raw(bytes) => {
                stream.extend_from_slice(bytes);
                continue;
            }
        };
        // A message cannot be framed in a version that lacks it (raw bytes can do that).
        let version = version.max(msg.min_version());
        stream.extend(encode_frame(version, &msg));
    }
    stream
}

fn other_message(which: u8) -> Message {
    match which % 4 {
        0 => Message::KeepAlive,
        1 => Message::TakeOver { gen: 1 },
        2 => Message::Heartbeat {
            gen: u64::from(which),
            last: Default::default(),
            first_lsn: 1,
        },
        _ => Message::Removed { gen: 7, last: 3 },
    }
}

/// How a script's connection ended, so tests can see which paths their inputs reach.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// The peer proved it holds the secret.
    Established,
    /// The handshake refused the peer.
    Refused,
    /// A frame did not decode: the connection closed before the handshake saw it.
    BadFrame,
    /// The bytes ran out mid-handshake.
    Pending,
}

/// Runs one script against a fresh handshake and checks every property; panics on a violation.
pub fn check_script(script: &HandshakeScript) -> Outcome {
    let cfg = our_config(script);
    let versions = cfg.versions.clone();
    let (mut us, our_hello) = Handshake::start(cfg.clone(), OUR_NONCE);
    // Our proof is fixed by both hellos, so computing it needs the peer's hello: recomputed
    // below as the handshake answers; for reflection, the proof we would send to the first
    // hello the script holds.
    let first_hello = script.steps.iter().find_map(|s| match s {
        PeerStep::Hello {
            min_version,
            max_version,
            group,
            site,
            nonce,
            ..
        } => Some(
            Handshake::start(
                peer_config(*min_version, *max_version, *group, *site),
                *nonce,
            )
            .1,
        ),
        _ => None,
    });
    let our_proof = first_hello
        .and_then(
            |hello| match Handshake::start(cfg.clone(), OUR_NONCE).0.on_message(hello) {
                Ok(HandshakeStep::Send(Message::Proof { mac })) => Some(mac),
                _ => None,
            },
        )
        .unwrap_or([0; 32]);
    let stream = peer_stream(script, &our_hello, &our_proof);

    // The peer's bytes as the driver reads them: decoder first, handshake on what decodes.
    let mut decoder = FrameDecoder::new(DEFAULT_FRAME_LIMIT, versions.clone());
    let sizes: Vec<usize> = script
        .chunks
        .iter()
        .map(|&c| usize::from(c).max(1))
        .collect();
    let mut sizes = sizes.into_iter().cycle();
    let mut rest = &stream[..];
    let mut watch = Watch::default();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
        decoder.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                // The driver closes the connection: the handshake never sees the bad frame.
                Err(_) => {
                    assert!(!us.is_established());
                    return Outcome::BadFrame;
                }
            };
            let msg = frame.message;
            let result = us.on_message(msg.clone());
            watch.check(&cfg, &our_hello, &msg, &result, &us);
            if us.is_established() {
                // The driver hands the connection to the message loop here.
                return Outcome::Established;
            }
            // After a refusal the driver closes the connection; the rest of the stream still
            // goes to the handshake, to check that it stays refused.
        }
    }
    assert!(!us.is_established(), "established without saying so");
    match watch.refused {
        Some(_) => Outcome::Refused,
        None => Outcome::Pending,
    }
}

/// What the site under test did so far.
#[derive(Default)]
struct Watch {
    /// The `Hello` we accepted (answered with our proof), as the honest peer behind it.
    accepted: Option<(HandshakeConfig, [u8; 16])>,
    /// The proof we sent.
    sent: Option<[u8; 32]>,
    refused: Option<HandshakeError>,
}

impl Watch {
    fn check(
        &mut self,
        ours: &HandshakeConfig,
        our_hello: &Message,
        msg: &Message,
        result: &Result<HandshakeStep, HandshakeError>,
        us: &Handshake,
    ) {
        if let Some(first) = &self.refused {
            assert!(
                result.is_err() && !us.is_established(),
                "after refusing ({first}) the handshake took a {}: {result:?}",
                msg.kind()
            );
            return;
        }
        match result {
            Ok(HandshakeStep::Send(Message::Proof { mac })) => {
                let Message::Hello {
                    min_version,
                    max_version,
                    group,
                    site,
                    nonce,
                } = msg
                else {
                    panic!("sent a proof in answer to a {}", msg.kind());
                };
                assert!(self.sent.is_none(), "sent a second proof");
                let peer = HandshakeConfig {
                    group: group.clone(),
                    site: site.clone(),
                    secret: SECRET.to_vec(),
                    versions: *min_version..=*max_version,
                };
                let expected_back = honest_proof(&peer, *nonce, our_hello);
                assert_ne!(
                    expected_back,
                    Some(*mac),
                    "our proof equals the one we expect back: a reflection would pass"
                );
                assert_eq!(group, &ours.group, "accepted a hello of another group");
                assert_ne!(
                    site, &ours.site,
                    "accepted a hello claiming our own address"
                );
                self.sent = Some(*mac);
                self.accepted = Some((peer, *nonce));
            }
            Ok(HandshakeStep::Send(other)) => {
                panic!("sent a {} during the handshake", other.kind())
            }
            Ok(HandshakeStep::Established { peer, version }) => {
                let Message::Proof { mac } = msg else {
                    panic!("established by a {}", msg.kind());
                };
                let (hello, nonce) = self
                    .accepted
                    .as_ref()
                    .expect("established without accepting a hello");
                assert_eq!(
                    honest_proof(hello, *nonce, our_hello),
                    Some(*mac),
                    "established by a proof no holder of the secret would send"
                );
                assert_eq!(
                    peer, &hello.site,
                    "established with another peer than the hello's"
                );
                assert!(
                    ours.versions.contains(version) && hello.versions.contains(version),
                    "agreed on version {version}, outside ours {:?} or theirs {:?}",
                    ours.versions,
                    hello.versions
                );
                assert_eq!(
                    *version,
                    (*ours.versions.end()).min(*hello.versions.end()),
                    "not the highest common version"
                );
                assert!(us.is_established());
            }
            Err(error) => {
                assert!(!us.is_established(), "refused ({error}) yet established");
                assert!(!error.to_string().is_empty());
                if let HandshakeError::BadProof { peer } = error {
                    let (hello, nonce) = self.accepted.as_ref().expect("bad proof before a hello");
                    assert_eq!(peer, &hello.site);
                    wrong_proofs_look_alike(ours, hello, *nonce, our_hello, error);
                }
                self.refused = Some(error.clone());
            }
        }
    }
}

/// Property 4: other wrong proofs for the same `Hello` (a bit flipped at the start, middle or
/// end of the honest proof, all zeros) are refused with exactly the same error and leave the
/// handshake in the same refused state, so a peer cannot tell how close it came.
fn wrong_proofs_look_alike(
    ours: &HandshakeConfig,
    hello: &HandshakeConfig,
    nonce: [u8; 16],
    our_hello: &Message,
    error: &HandshakeError,
) {
    let honest = honest_proof(hello, nonce, our_hello).unwrap_or([0; 32]);
    let mut guesses = vec![[0u8; 32]];
    for byte in [0, 15, 31] {
        let mut mac = honest;
        mac[byte] ^= 0x80;
        guesses.push(mac);
    }
    let (_, their_hello) = Handshake::start(hello.clone(), nonce);
    for mac in guesses.into_iter().filter(|m| *m != honest) {
        let (mut fresh, _) = Handshake::start(ours.clone(), OUR_NONCE);
        assert!(fresh.on_message(their_hello.clone()).is_ok());
        let refusal = fresh.on_message(Message::Proof { mac });
        assert_eq!(
            refusal.as_ref(),
            Err(error),
            "wrong proofs for the same hello are refused differently"
        );
        assert!(!fresh.is_established());
        assert!(fresh.on_message(Message::Proof { mac: honest }).is_err());
    }
}
