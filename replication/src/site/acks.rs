//! Acknowledgement policies: how many clients must hold a commit before the master reports it
//! durable. Pure counting over a [`Tally`]; the master builds the tally from the acks it has.

use crate::types::majority;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The seven Berkeley DB acknowledgement policies. "Peer" means an electable client (priority
/// above 0).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Default)]
pub enum AckPolicy {
    /// Every other site in the group, up or down.
    All,
    /// Every connected client, and at least one.
    AllAvailable,
    /// Every electable client in the group.
    AllPeers,
    /// Nobody: the commit is durable once the master has it.
    None,
    /// Any one client.
    One,
    /// Any one electable client.
    OnePeer,
    /// Enough electable clients that, with the master, a majority of the group holds the commit:
    /// any later master (elected by a majority) then has it.
    #[default]
    Quorum,
}

impl AckPolicy {
    /// Every policy, for tests and help texts.
    pub const ALL: [AckPolicy; 7] = [
        AckPolicy::All,
        AckPolicy::AllAvailable,
        AckPolicy::AllPeers,
        AckPolicy::None,
        AckPolicy::One,
        AckPolicy::OnePeer,
        AckPolicy::Quorum,
    ];

    /// The name used in configuration files and reports.
    pub fn name(self) -> &'static str {
        match self {
            AckPolicy::All => "all",
            AckPolicy::AllAvailable => "all_available",
            AckPolicy::AllPeers => "all_peers",
            AckPolicy::None => "none",
            AckPolicy::One => "one",
            AckPolicy::OnePeer => "one_peer",
            AckPolicy::Quorum => "quorum",
        }
    }

    /// How many acks of the relevant kind the policy needs, and how many it has, for `tally`.
    /// A group with no other site needs nothing whatever the policy: there is nobody to ask.
    pub fn count(self, t: &Tally) -> AckCount {
        let (have, needed) = match self {
            _ if t.others == 0 => (0, 0),
            AckPolicy::None => (0, 0),
            AckPolicy::All => (t.acked, t.others),
            AckPolicy::AllAvailable => (t.connected_acked, t.connected.max(1)),
            AckPolicy::AllPeers => (t.peers_acked, t.peers),
            AckPolicy::One => (t.acked, 1),
            AckPolicy::OnePeer => (t.peers_acked, 1),
            AckPolicy::Quorum => (t.peers_acked, majority(t.group_size) - 1),
        };
        AckCount { have, needed }
    }
}

impl fmt::Display for AckPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// Configuration files and reports spell a policy by its name, through the same two functions as
// the command line, so there is one list of names and one error for an unknown one.
impl Serialize for AckPolicy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AckPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// An unknown policy name.
#[derive(Debug, thiserror::Error)]
#[error("unknown ack policy {0:?}: expected one of all, all_available, all_peers, none, one, one_peer, quorum")]
pub struct UnknownAckPolicy(pub String);

impl FromStr for AckPolicy {
    type Err = UnknownAckPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AckPolicy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownAckPolicy(s.to_string()))
    }
}

/// Who holds one commit, as the master sees it.
#[derive(Copy, Clone, Default, PartialEq, Eq, Debug)]
pub struct Tally {
    /// Sites in the group, master included, down sites included.
    pub group_size: usize,
    /// Other sites in the group.
    pub others: usize,
    /// Other sites that acknowledged.
    pub acked: usize,
    /// Other sites that are electable.
    pub peers: usize,
    /// Electable sites that acknowledged.
    pub peers_acked: usize,
    /// Other sites currently connected.
    pub connected: usize,
    /// Connected sites that acknowledged.
    pub connected_acked: usize,
}

/// Acks held against acks needed.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct AckCount {
    /// Acks of the kind the policy counts.
    pub have: usize,
    /// Acks the policy needs.
    pub needed: usize,
}

impl AckCount {
    /// True when the policy is met.
    pub fn is_met(self) -> bool {
        self.have >= self.needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five sites: master plus four clients, one of them priority 0; two clients connected.
    fn tally(acked: usize, peers_acked: usize, connected_acked: usize) -> Tally {
        Tally {
            group_size: 5,
            others: 4,
            acked,
            peers: 3,
            peers_acked,
            connected: 2,
            connected_acked,
        }
    }

    #[test]
    fn none_needs_nothing() {
        assert!(AckPolicy::None.count(&tally(0, 0, 0)).is_met());
    }

    #[test]
    fn all_needs_every_other_site_even_down_ones() {
        assert!(!AckPolicy::All.count(&tally(3, 3, 2)).is_met());
        assert!(AckPolicy::All.count(&tally(4, 3, 2)).is_met());
    }

    #[test]
    fn all_available_needs_every_connected_client_and_at_least_one() {
        assert!(!AckPolicy::AllAvailable.count(&tally(1, 1, 1)).is_met());
        assert!(AckPolicy::AllAvailable.count(&tally(2, 2, 2)).is_met());
        let nobody_connected = Tally {
            connected: 0,
            connected_acked: 0,
            ..tally(0, 0, 0)
        };
        assert!(!AckPolicy::AllAvailable.count(&nobody_connected).is_met());
    }

    #[test]
    fn all_peers_ignores_unelectable_clients() {
        assert!(!AckPolicy::AllPeers.count(&tally(3, 2, 2)).is_met());
        assert!(AckPolicy::AllPeers.count(&tally(3, 3, 2)).is_met());
    }

    #[test]
    fn one_and_one_peer() {
        assert!(AckPolicy::One.count(&tally(1, 0, 0)).is_met());
        assert!(!AckPolicy::OnePeer.count(&tally(1, 0, 0)).is_met());
        assert!(AckPolicy::OnePeer.count(&tally(1, 1, 0)).is_met());
    }

    #[test]
    fn quorum_needs_a_majority_with_the_master_counting_peers_only() {
        // 5 sites: majority 3 = master + 2 electable clients.
        assert!(!AckPolicy::Quorum.count(&tally(2, 1, 0)).is_met());
        assert!(AckPolicy::Quorum.count(&tally(2, 2, 0)).is_met());
    }

    #[test]
    fn a_group_of_one_needs_no_acks_under_any_policy() {
        let alone = Tally {
            group_size: 1,
            ..Tally::default()
        };
        for policy in AckPolicy::ALL {
            assert!(policy.count(&alone).is_met(), "{policy}");
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for policy in AckPolicy::ALL {
            assert_eq!(policy.name().parse::<AckPolicy>().unwrap(), policy);
            assert_eq!(policy.to_string(), policy.name(), "shown as configured");
        }
        assert!("majority".parse::<AckPolicy>().is_err());
    }
}
