//! The connection handshake: both sites say who they are (`Hello`), agree on the highest protocol
//! version both speak, and prove they hold the group secret (`Proof`, an HMAC-SHA256 over both
//! addresses, both nonces, the group name and the agreed version).
//!
//! A pure state machine like the core: the driver feeds it the peer's messages and sends what it
//! returns. It must never accept a peer that has not proven the secret, never leak how close a
//! wrong proof came (the comparison is constant-time), and never change state on a refusal.

use super::Message;
use crate::types::SiteAddr;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::ops::RangeInclusive;

type HmacSha256 = Hmac<Sha256>;

/// What a site needs to shake hands.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HandshakeConfig {
    /// The group's name: peers of another group are refused.
    pub group: String,
    /// This site's address.
    pub site: SiteAddr,
    /// The group secret.
    pub secret: Vec<u8>,
    /// Protocol versions this site speaks.
    pub versions: RangeInclusive<u8>,
}

/// Why a handshake was refused. Each names what an operator needs to fix it.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer belongs to another group.
    #[error("peer {peer} belongs to group {theirs:?}, not {ours:?}")]
    WrongGroup {
        /// The peer.
        peer: SiteAddr,
        /// Our group.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// No protocol version in common.
    #[error("peer {peer} speaks protocol versions {theirs:?}, we speak {ours:?}")]
    NoCommonVersion {
        /// The peer.
        peer: SiteAddr,
        /// Our versions.
        ours: RangeInclusive<u8>,
        /// Theirs.
        theirs: RangeInclusive<u8>,
    },
    /// The peer's proof does not match: it does not hold the group secret.
    #[error("peer {peer} failed to prove it holds the group secret")]
    BadProof {
        /// The peer as it named itself.
        peer: SiteAddr,
    },
    /// The peer claims our own address.
    #[error("peer claims to be this site ({0})")]
    SelfConnection(SiteAddr),
    /// A message out of order (or after the handshake failed).
    #[error("unexpected {got} message during the handshake (expected {expected})")]
    Unexpected {
        /// What we waited for.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
}

/// Where a handshake stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    AwaitingHello,
    AwaitingProof {
        peer: SiteAddr,
        peer_nonce: [u8; 16],
        version: u8,
    },
    Established,
    Failed,
}

/// What to do after feeding a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeStep {
    /// Send this message to the peer (our proof) and wait for more.
    Send(Message),
    /// The peer is authenticated: it is `peer`, and the connection speaks `version`.
    Established {
        /// The peer's address.
        peer: SiteAddr,
        /// The agreed protocol version.
        version: u8,
    },
}

/// One side of a handshake on one connection.
#[derive(Clone, Debug)]
pub struct Handshake {
    cfg: HandshakeConfig,
    nonce: [u8; 16],
    state: State,
}

impl Handshake {
    /// Starts a handshake with a fresh `nonce`; returns it and the `Hello` to send first.
    pub fn start(cfg: HandshakeConfig, nonce: [u8; 16]) -> (Handshake, Message) {
        let hello = Message::Hello {
            min_version: *cfg.versions.start(),
            max_version: *cfg.versions.end(),
            group: cfg.group.clone(),
            site: cfg.site.clone(),
            nonce,
        };
        let handshake = Handshake {
            cfg,
            nonce,
            state: State::AwaitingHello,
        };
        (handshake, hello)
    }

    /// The protocol version to frame the `Hello` with: the lowest we speak, so that any peer
    /// that shares a version can read it.
    pub fn hello_frame_version(&self) -> u8 {
        *self.cfg.versions.start()
    }

    /// True once the peer is authenticated.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Feeds the peer's next message. After an error the handshake is failed for good: the
    /// driver closes the connection (and counts and logs the refusal).
    pub fn on_message(&mut self, msg: Message) -> Result<HandshakeStep, HandshakeError> {
        let result = self.advance(msg);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn advance(&mut self, msg: Message) -> Result<HandshakeStep, HandshakeError> {
        match (&self.state, msg) {
            (
                State::AwaitingHello,
                Message::Hello {
                    min_version,
                    max_version,
                    group,
                    site,
                    nonce,
                },
            ) => {
                if site == self.cfg.site {
                    return Err(HandshakeError::SelfConnection(site));
                }
                if group != self.cfg.group {
                    return Err(HandshakeError::WrongGroup {
                        peer: site,
                        ours: self.cfg.group.clone(),
                        theirs: group,
                    });
                }
                let ours = self.cfg.versions.clone();
                let version = (*ours.end()).min(max_version);
                if version < (*ours.start()).max(min_version) {
                    return Err(HandshakeError::NoCommonVersion {
                        peer: site,
                        ours,
                        theirs: min_version..=max_version,
                    });
                }
                let mac = self
                    .mac_state(&self.cfg.site, &site, &self.nonce, &nonce, version)
                    .finalize()
                    .into_bytes()
                    .into();
                self.state = State::AwaitingProof {
                    peer: site,
                    peer_nonce: nonce,
                    version,
                };
                Ok(HandshakeStep::Send(Message::Proof { mac }))
            }
            (
                State::AwaitingProof {
                    peer,
                    peer_nonce,
                    version,
                },
                Message::Proof { mac },
            ) => {
                let (peer, peer_nonce, version) = (peer.clone(), *peer_nonce, *version);
                let verifier =
                    self.mac_state(&peer, &self.cfg.site, &peer_nonce, &self.nonce, version);
                // `verify_slice` compares in constant time: a wrong proof learns nothing.
                verifier
                    .verify_slice(&mac)
                    .map_err(|_| HandshakeError::BadProof { peer: peer.clone() })?;
                self.state = State::Established;
                Ok(HandshakeStep::Established { peer, version })
            }
            (state, msg) => Err(HandshakeError::Unexpected {
                expected: match state {
                    State::AwaitingHello => "hello",
                    State::AwaitingProof { .. } => "proof",
                    State::Established | State::Failed => "nothing",
                },
                got: msg.kind(),
            }),
        }
    }

    /// The MAC `from` sends to `to`: the direction is part of it, so a proof cannot be reflected.
    fn mac_state(
        &self,
        from: &SiteAddr,
        to: &SiteAddr,
        from_nonce: &[u8; 16],
        to_nonce: &[u8; 16],
        version: u8,
    ) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.cfg.secret)
            .expect("HMAC-SHA256 takes a key of any length");
        // Length-prefix every variable field so that no two inputs encode alike.
        for field in [
            b"repsim-handshake-v1".as_slice(),
            from.as_str().as_bytes(),
            to.as_str().as_bytes(),
            from_nonce,
            to_nonce,
            self.cfg.group.as_bytes(),
            &[version],
        ] {
            mac.update(&(field.len() as u64).to_le_bytes());
            mac.update(field);
        }
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(site: &str, secret: &str, versions: RangeInclusive<u8>) -> HandshakeConfig {
        HandshakeConfig {
            group: "payroll".into(),
            site: SiteAddr::new(site),
            secret: secret.as_bytes().to_vec(),
            versions,
        }
    }

    /// Runs both sides to the end; returns each side's outcome.
    fn shake(
        a: HandshakeConfig,
        b: HandshakeConfig,
    ) -> (
        Result<HandshakeStep, HandshakeError>,
        Result<HandshakeStep, HandshakeError>,
    ) {
        let (mut ha, hello_a) = Handshake::start(a, [1; 16]);
        let (mut hb, hello_b) = Handshake::start(b, [2; 16]);
        let proof_a = ha.on_message(hello_b);
        let proof_b = hb.on_message(hello_a);
        let (proof_a, proof_b) = match (proof_a, proof_b) {
            (Ok(HandshakeStep::Send(pa)), Ok(HandshakeStep::Send(pb))) => (pa, pb),
            other => return other,
        };
        (ha.on_message(proof_b), hb.on_message(proof_a))
    }

    fn established(r: &Result<HandshakeStep, HandshakeError>) -> Option<(SiteAddr, u8)> {
        match r {
            Ok(HandshakeStep::Established { peer, version }) => Some((peer.clone(), *version)),
            _ => None,
        }
    }

    #[test]
    fn sites_with_the_secret_agree_on_the_highest_common_version() {
        let (a, b) = shake(cfg("a:1", "s3cret", 1..=2), cfg("b:1", "s3cret", 1..=2));
        assert_eq!(established(&a), Some((SiteAddr::new("b:1"), 2)));
        assert_eq!(established(&b), Some((SiteAddr::new("a:1"), 2)));
        let (a, b) = shake(cfg("a:1", "s3cret", 1..=2), cfg("b:1", "s3cret", 1..=1));
        assert_eq!(
            established(&a).map(|x| x.1),
            Some(1),
            "a legacy peer pulls it down to 1"
        );
        assert_eq!(established(&b).map(|x| x.1), Some(1));
    }

    #[test]
    fn a_site_without_the_secret_is_refused_by_both_sides() {
        let (a, b) = shake(cfg("a:1", "s3cret", 1..=2), cfg("rogue:1", "guess", 1..=2));
        assert_eq!(
            a,
            Err(HandshakeError::BadProof {
                peer: SiteAddr::new("rogue:1")
            })
        );
        assert!(matches!(b, Err(HandshakeError::BadProof { .. })));
    }

    #[test]
    fn another_group_and_no_common_version_are_refused() {
        let mut other = cfg("b:1", "s3cret", 1..=2);
        other.group = "billing".into();
        let (a, _) = shake(cfg("a:1", "s3cret", 1..=2), other);
        assert!(matches!(a, Err(HandshakeError::WrongGroup { .. })));
        let (a, _) = shake(cfg("a:1", "s3cret", 2..=2), cfg("b:1", "s3cret", 1..=1));
        assert!(matches!(a, Err(HandshakeError::NoCommonVersion { .. })));
    }

    #[test]
    fn a_reflected_proof_is_refused() {
        // The peer sends back our own proof: the direction is in the MAC, so it fails.
        let (mut a, _) = Handshake::start(cfg("a:1", "s3cret", 1..=2), [1; 16]);
        let (_, hello_b) = Handshake::start(cfg("b:1", "s3cret", 1..=2), [2; 16]);
        let Ok(HandshakeStep::Send(own_proof)) = a.on_message(hello_b) else {
            panic!("proof expected");
        };
        assert!(matches!(
            a.on_message(own_proof),
            Err(HandshakeError::BadProof { .. })
        ));
    }

    #[test]
    fn out_of_order_messages_fail_the_handshake_for_good() {
        let (mut a, _) = Handshake::start(cfg("a:1", "s3cret", 1..=2), [1; 16]);
        let beat = Message::TakeOver { gen: 1 };
        assert!(matches!(
            a.on_message(beat),
            Err(HandshakeError::Unexpected { .. })
        ));
        let (_, hello_b) = Handshake::start(cfg("b:1", "s3cret", 1..=2), [2; 16]);
        assert!(a.on_message(hello_b).is_err(), "failed stays failed");
        assert!(!a.is_established());
    }

    #[test]
    fn a_peer_claiming_our_address_is_refused() {
        let (a, _) = shake(cfg("a:1", "s3cret", 1..=2), cfg("a:1", "s3cret", 1..=2));
        assert!(matches!(a, Err(HandshakeError::SelfConnection(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever a peer without the secret sends, it is never established.
        #[test]
        fn no_message_sequence_without_the_secret_establishes(
            guesses in prop::collection::vec(any::<[u8; 32]>(), 1..4),
            nonce in any::<[u8; 16]>(),
        ) {
            let (mut a, _) = Handshake::start(cfg("a:1", "s3cret", 1..=2), [1; 16]);
            let hello = Message::Hello {
                min_version: 1,
                max_version: 2,
                group: "payroll".into(),
                site: SiteAddr::new("rogue:1"),
                nonce,
            };
            let _ = a.on_message(hello);
            for mac in guesses {
                let step = a.on_message(Message::Proof { mac });
                let established = matches!(step, Ok(HandshakeStep::Established { .. }));
                prop_assert!(!established, "a guessed proof established the connection");
            }
            prop_assert!(!a.is_established());
        }
    }
}
