//! Coverage: which behaviours of the engine, and which faults, a run reached. A seed is worth
//! what it reaches: `explore` adds these up over its seeds and prints how many reached each, so
//! a behaviour no seed reaches shows up as a hole in the swarm rather than as silence.

use replication::node::NodeEvent;
use replication::site::Event;
use std::collections::BTreeMap;

/// Every behaviour the simulator knows how to see, with what it means. A run's coverage only
/// ever holds these names.
pub const BEHAVIOURS: &[(&str, &str)] = &[
    ("election_won", "an election chose a master"),
    ("leased_read", "a master holding its lease served a read"),
    (
        "election_failed",
        "an election asked for votes and ended without a master",
    ),
    (
        "prevote_stopped_election",
        "a pre-vote found no majority, so no election was held",
    ),
    (
        "master_failure",
        "a client noticed its master had gone silent",
    ),
    (
        "duplicate_master",
        "two masters met and the older one stepped down",
    ),
    (
        "perm_failed",
        "a commit could not get the acks its policy asks for",
    ),
    ("rollback", "a client rolled back a divergent log tail"),
    (
        "rollback_of_txns",
        "a rollback undid transactions (not only a generation start)",
    ),
    (
        "internal_init",
        "a client was initialised from the master's snapshot",
    ),
    (
        "switchover",
        "a master stepped down in favour of a named site",
    ),
    ("membership_created", "a primordial site created the group"),
    ("site_added", "a site joined the group"),
    ("join_failure", "a join attempt failed"),
    ("join_unavailable", "a helper answered a join with Unavail"),
    ("site_removed", "a site was removed from the group"),
    ("local_site_removed", "a site learnt that it was removed"),
    ("storage_failed", "a site stopped on a storage error"),
    (
        "disk_tail_dropped",
        "a site dropped a damaged tail when opening its disk",
    ),
    (
        "needs_helper",
        "a site refused to start until given a helper (its log lost the group, or it was removed)",
    ),
    (
        "handshake_refused",
        "a connection was refused at the handshake",
    ),
    (
        "write_unknown",
        "a client write ended with its fate unknown",
    ),
    ("fault_crash", "a site crashed"),
    (
        "fault_torn_crash",
        "a site crashed in the middle of a write",
    ),
    (
        "fault_power_cut",
        "a site lost power in the middle of disk operations",
    ),
    ("fault_corruption", "a disk record rotted"),
    ("fault_partition", "the network split in two"),
    ("fault_clog", "one direction of one link was cut"),
    (
        "fault_cut",
        "links between two sets of sites were cut, others kept (non-transitive, bridged)",
    ),
    ("fault_pause", "a site's machine froze"),
    (
        "crash_in_election",
        "a site crashed in the instant after it voted",
    ),
    (
        "crash_in_join",
        "a site crashed in the instant after it recorded an admission",
    ),
    (
        "crash_in_init",
        "a site crashed in the instant after its internal initialisation",
    ),
    (
        "crash_in_removal",
        "a site crashed in the instant after it recorded the start of a removal",
    ),
    ("rejoin", "a site was restarted with another helper"),
    ("upgrade", "a site was upgraded to protocol version 2"),
    ("fault_network", "messages were lost or delayed"),
    ("fault_duplicate", "a message was delivered twice"),
    ("fault_reorder", "a message was delivered after a later one"),
    ("fault_drop", "a message was dropped with its connection up"),
    ("fault_skew", "a clock was offset"),
    ("fault_drift", "a clock ran fast or slow"),
];

/// Whether `name` is one of [`BEHAVIOURS`].
pub fn is_known(name: &str) -> bool {
    BEHAVIOURS.iter().any(|(known, _)| *known == name)
}

/// The behaviours one node event shows (none for routine ones).
pub fn of_event(event: &NodeEvent) -> Vec<&'static str> {
    let NodeEvent::Site(event) = event else {
        return match event {
            NodeEvent::HandshakeRefused { .. } => vec!["handshake_refused"],
            _ => Vec::new(),
        };
    };
    match event {
        Event::Elected { .. } => vec!["election_won"],
        Event::ElectionFailed { pre: true, .. } => vec!["prevote_stopped_election"],
        Event::ElectionFailed { pre: false, .. } => vec!["election_failed"],
        Event::MasterFailure { .. } => vec!["master_failure"],
        Event::DuplicateMaster { .. } => vec!["duplicate_master"],
        Event::PermFailed { .. } => vec!["perm_failed"],
        Event::RolledBack { txns, .. } if !txns.is_empty() => vec!["rollback", "rollback_of_txns"],
        Event::RolledBack { .. } => vec!["rollback"],
        Event::InitDone { .. } => vec!["internal_init"],
        Event::SteppedDown { .. } => vec!["switchover"],
        Event::MembershipCreated { .. } => vec!["membership_created"],
        Event::SiteAdded { .. } => vec!["site_added"],
        // The core says this when the site it asked (its helper, or a member it knew) never
        // answered; any other reason is that site's (or its master's) Unavail answer.
        Event::JoinFailure { reason } if reason.starts_with("no answer from ") => {
            vec!["join_failure"]
        }
        Event::JoinFailure { .. } => vec!["join_failure", "join_unavailable"],
        Event::SiteRemoved { .. } => vec!["site_removed"],
        Event::LocalSiteRemoved => vec!["local_site_removed"],
        Event::StorageFailed { .. } => vec!["storage_failed"],
        Event::BecameMaster { .. }
        | Event::BecameClient { .. }
        | Event::NewMaster { .. }
        | Event::WouldRollback { .. }
        | Event::Voted { .. }
        | Event::StartupDone { .. } => Vec::new(),
    }
}

/// Counts behaviours: how often each was reached (in a run), or by how many runs (in a tally).
pub type Coverage = BTreeMap<String, u64>;

/// Adds one reach of `name` to `coverage`.
pub fn reach(coverage: &mut Coverage, name: &'static str) {
    debug_assert!(is_known(name), "{name} is not in BEHAVIOURS");
    *coverage.entry(name.to_string()).or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_maps_only_to_known_behaviours() {
        let events = [
            Event::ElectionFailed {
                egen: 2,
                votes: 1,
                needed: 2,
                pre: true,
            },
            Event::RolledBack {
                to: Default::default(),
                txns: vec![3],
            },
            Event::JoinFailure {
                reason: "no answer from the helper 10.0.0.1:7000".into(),
            },
            Event::JoinFailure {
                reason: "the group did not acknowledge the join in time".into(),
            },
            Event::LocalSiteRemoved,
        ];
        let mut seen = Vec::new();
        for e in events {
            for name in of_event(&NodeEvent::Site(e)) {
                assert!(is_known(name), "{name}");
                seen.push(name);
            }
        }
        assert_eq!(
            seen,
            [
                "prevote_stopped_election",
                "rollback",
                "rollback_of_txns",
                "join_failure",
                "join_failure",
                "join_unavailable",
                "local_site_removed"
            ]
        );
    }
}
