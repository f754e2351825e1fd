//! Invariant checkers: each looks at what a run left behind (events, the history of client
//! operations, every site's log and database) and reports the first violation it finds, with the
//! site, the simulated time and what was wrong. They run on every run.
//!
//! A checker must never pass vacuously: each is shown to catch a bug planted in the engine.

use replication::log::LogRecord;
use replication::node::NodeEvent;
use replication::site::{AckPolicy, Event};
use replication::types::{Gen, LogPos, SiteAddr};
use std::collections::{BTreeMap, BTreeSet};

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Violation {
    /// Which invariant.
    pub invariant: String,
    /// The site involved, if one.
    pub site: Option<SiteAddr>,
    /// Simulated milliseconds, if known.
    pub at_ms: Option<u64>,
    /// What was seen.
    pub detail: String,
}

/// One event of a site at a simulated time.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Simulated milliseconds.
    pub ms: u64,
    /// The site.
    pub site: SiteAddr,
    /// What it reported.
    pub event: NodeEvent,
}

/// At most one site ever became master of a given generation.
pub fn one_master_per_generation(events: &[Observed]) -> Option<Violation> {
    let mut masters: BTreeMap<Gen, &SiteAddr> = BTreeMap::new();
    for e in events {
        if let NodeEvent::Site(Event::BecameMaster { gen }) = e.event {
            match masters.get(&gen) {
                Some(other) if **other != e.site => {
                    return Some(Violation {
                        invariant: "one_master_per_generation".into(),
                        site: Some(e.site.clone()),
                        at_ms: Some(e.ms),
                        detail: format!(
                            "{} and {} were both master of generation {gen}",
                            other, e.site
                        ),
                    })
                }
                _ => {
                    masters.insert(gen, &e.site);
                }
            }
        }
    }
    None
}

/// Liveness at quiescence: every site that should be running (started, not crashed, not
/// frozen, still a member) has a node that answers. A site whose node stopped and was never
/// started again would otherwise escape every check that reads running sites.
pub fn every_site_runs(
    expected: &[SiteAddr],
    running: &BTreeMap<SiteAddr, (LogPos, u64)>,
) -> Option<Violation> {
    expected
        .iter()
        .find(|site| !running.contains_key(*site))
        .map(|site| Violation {
            invariant: "liveness".into(),
            site: Some(site.clone()),
            at_ms: None,
            detail: "it should be running, but no node answers on it".into(),
        })
}

/// Every running client's log is a prefix of the master's (records archived on the master are
/// skipped). Pass the logs of running sites only: a site that is down may hold a tail that
/// never reached the master (an old master's unacknowledged writes), which it rolls back when
/// it returns; until then it is nobody's client.
pub fn logs_are_prefixes(
    master: &SiteAddr,
    logs: &BTreeMap<SiteAddr, Vec<LogRecord>>,
) -> Option<Violation> {
    let master_log = logs.get(master)?;
    let first = master_log.first().map_or(u64::MAX, |r| r.lsn);
    for (site, log) in logs {
        if site == master {
            continue;
        }
        let last_master = master_log.last().map_or(0, |r| r.lsn);
        for record in log {
            if record.lsn < first {
                continue;
            }
            let i = (record.lsn - first) as usize;
            if master_log.get(i) != Some(record) {
                let why = if record.lsn > last_master {
                    "beyond the master's log".to_string()
                } else {
                    format!(
                        "the master holds {:?}",
                        master_log.get(i).map(LogRecord::pos)
                    )
                };
                return Some(Violation {
                    invariant: "client_log_is_prefix".into(),
                    site: Some(site.clone()),
                    at_ms: None,
                    detail: format!(
                        "record {} differs from the master {master}: {why}",
                        record.pos()
                    ),
                });
            }
        }
    }
    None
}

/// Each site's database equals the replay of its log: (position, digest) pairs must match.
pub fn database_is_replay(
    live: &BTreeMap<SiteAddr, (LogPos, u64)>,
    replayed: &BTreeMap<SiteAddr, (LogPos, u64)>,
) -> Option<Violation> {
    for (site, state) in live {
        if let Some(replay) = replayed.get(site) {
            if replay != state {
                return Some(Violation {
                    invariant: "database_is_replay".into(),
                    site: Some(site.clone()),
                    at_ms: None,
                    detail: format!(
                        "database at {} (digest {:016x}) but its log replays to {} (digest {:016x})",
                        state.0, state.1, replay.0, replay.1
                    ),
                });
            }
        }
    }
    None
}

/// Liveness at quiescence: every live site has caught up with the master (same applied
/// position). Called once faults are repaired and the group was left alone for a bound derived
/// from its timeouts.
pub fn all_caught_up(
    master: &SiteAddr,
    applied: &BTreeMap<SiteAddr, (LogPos, u64)>,
    within_ms: u64,
) -> Option<Violation> {
    let (target, _) = applied.get(master)?;
    applied
        .iter()
        .find(|(_, (pos, _))| pos != target)
        .map(|(site, (pos, _))| Violation {
            invariant: "liveness".into(),
            site: Some(site.clone()),
            at_ms: None,
            detail: format!(
                "at {pos} while the master {master} is at {target}, {within_ms} ms after the last fault was repaired"
            ),
        })
}

/// Membership converges: every live site's membership database equals the master's.
pub fn membership_converges(
    master: &SiteAddr,
    members: &BTreeMap<SiteAddr, Vec<SiteAddr>>,
) -> Option<Violation> {
    let expected = members.get(master)?;
    members
        .iter()
        .find(|(_, m)| *m != expected)
        .map(|(site, m)| Violation {
            invariant: "membership_converges".into(),
            site: Some(site.clone()),
            at_ms: None,
            detail: format!("members {m:?}, the master {master} has {expected:?}"),
        })
}

/// A client operation and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The site asked.
    pub site: SiteAddr,
    /// The key written.
    pub key: Vec<u8>,
    /// The value written.
    pub value: Vec<u8>,
    /// When it was invoked.
    pub invoked_ms: u64,
    /// When it completed.
    pub completed_ms: u64,
    /// The outcome.
    pub outcome: Outcome,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed and durable as the policy asks, at this LSN.
    Ok {
        /// Its LSN.
        lsn: u64,
    },
    /// Definitely not committed (refused before anything was written).
    Failed(String),
    /// Maybe committed (perm failed, or the site went away mid-request).
    Unknown(String),
}

/// Whether a write acknowledged under `policy` in a group of `sites` sites, `electable` of
/// them with a priority above 0, survives any failover, whatever crashed or was cut off
/// (corruption of synced data aside).
///
/// The argument: a master is elected by a majority of the whole group, and an electable voter
/// only votes for a log at least as advanced as its own (a priority-0 voter votes for any
/// electable candidate, as in Berkeley DB), so a record held by a majority of electable sites
/// is on every later master. `quorum` waits for such a majority; `all` and `all_peers` for
/// every site that could ever be master. `one_peer` waits for the master and one electable
/// client, a majority only of groups of up to three; `one` and `all_available` for the master
/// and any client, which may be a priority-0 one; `none` for the master alone, a majority only
/// of a group of one. (A lenient two-site group elects a lone site: there too a majority of two
/// is both sites, which every policy but `none` waits for.)
pub fn survives_failover(policy: AckPolicy, sites: usize, electable: usize) -> bool {
    let majority = sites / 2 + 1;
    match policy {
        AckPolicy::All | AckPolicy::AllPeers | AckPolicy::Quorum => true,
        AckPolicy::OnePeer => 2 >= majority,
        AckPolicy::One | AckPolicy::AllAvailable => 2 >= majority && electable == sites,
        AckPolicy::None => 1 >= majority,
    }
}

/// Whether a master's commits can get the acks `policy` asks for in a group of `members` sites
/// (master included), all running, `electable_clients` of the others with a priority above 0.
/// `one_peer` needs an electable client, `quorum` enough of them to make a majority with the
/// master; every other policy is met once the group is whole (or has nobody else to ask).
pub fn policy_can_be_met(policy: AckPolicy, members: usize, electable_clients: usize) -> bool {
    if members <= 1 {
        return true;
    }
    match policy {
        AckPolicy::OnePeer => electable_clients >= 1,
        // With the master, a majority of the group.
        AckPolicy::Quorum => {
            let majority = members / 2 + 1;
            electable_clients + 1 >= majority
        }
        AckPolicy::None
        | AckPolicy::One
        | AckPolicy::All
        | AckPolicy::AllAvailable
        | AckPolicy::AllPeers => true,
    }
}

/// Every write acknowledged as durable, and `promised` by its policy (see
/// [`survives_failover`]), is on the final master: the record at its LSN there writes its key
/// and value.
pub fn durable_writes_survive(
    history: &[Operation],
    master: &SiteAddr,
    master_log: &[LogRecord],
    archived_up_to: u64,
    promised: &dyn Fn(&Operation) -> bool,
) -> Option<Violation> {
    for op in history {
        let Outcome::Ok { lsn } = op.outcome else {
            continue;
        };
        if !promised(op) {
            continue;
        }
        if lsn <= archived_up_to {
            continue; // folded into the snapshot: covered by the prefix and replay checks
        }
        let found = master_log
            .iter()
            .any(|r| r.lsn == lsn && writes(r, &op.key, &op.value));
        if !found {
            return Some(Violation {
                invariant: "durable_writes_survive".into(),
                site: Some(op.site.clone()),
                at_ms: Some(op.completed_ms),
                detail: format!(
                    "write of {:?} acknowledged at LSN {lsn} is not on the master {master}",
                    String::from_utf8_lossy(&op.key)
                ),
            });
        }
    }
    None
}

/// A read by a client of the load: the value one site held for a key at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// The site read.
    pub site: SiteAddr,
    /// The key.
    pub key: Vec<u8>,
    /// What it held (`None`: no such key).
    pub value: Option<Vec<u8>>,
    /// When the read was asked.
    pub invoked_ms: u64,
}

/// A read a master served under its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeasedRead {
    /// The master that served it.
    pub site: SiteAddr,
    /// The key.
    pub key: Vec<u8>,
    /// What it returned.
    pub value: Option<Vec<u8>>,
    /// When it was asked.
    pub invoked_ms: u64,
    /// When it was answered.
    pub completed_ms: u64,
}

/// Leased reads are linearizable with the writes, key by key (a register per key).
///
/// Every write of the load puts a value no other write puts, so a read names the write it saw,
/// and a register history with that mapping is linearizable only if no read returns a value
/// never written, none returns a write invoked after the read was answered, and none is stale:
/// it returns a write (or nothing) that another write of the key superseded before the read was
/// asked (the superseding write acknowledged, and begun after the first was acknowledged, both
/// before the read was invoked), nor an older write than one an earlier read returned. A write
/// whose outcome is unknown may take effect at any time after it was asked, so it supersedes
/// nothing and is superseded by nothing. What a lease promises is that no acknowledged write is
/// missed; a read may see a write not yet acknowledged that is later lost (the master reads its
/// own database), which this does not count against it.
pub fn leased_reads_are_linearizable(
    reads: &[LeasedRead],
    history: &[Operation],
) -> Vec<Violation> {
    fn acked(op: &Operation) -> bool {
        matches!(op.outcome, Outcome::Ok { .. })
    }
    let show = |v: &Option<Vec<u8>>| match v {
        Some(v) => format!("{:?}", String::from_utf8_lossy(v)),
        None => "nothing".to_string(),
    };
    let violation = |r: &LeasedRead, detail: String| {
        vec![Violation {
            invariant: "leased_reads_are_linearizable".into(),
            site: Some(r.site.clone()),
            at_ms: Some(r.invoked_ms),
            detail: format!(
                "a leased read of {:?} at {} ms returned {}: {detail}",
                String::from_utf8_lossy(&r.key),
                r.invoked_ms,
                show(&r.value)
            ),
        }]
    };
    for r in reads {
        let writes: Vec<&Operation> = history.iter().filter(|w| w.key == r.key).collect();
        // The write the read saw (`None`: the key's initial, empty state).
        let seen = match &r.value {
            Some(value) => match writes.iter().find(|w| &w.value == value) {
                Some(w) => Some(*w),
                None => return violation(r, "no write ever put that value".into()),
            },
            None => None,
        };
        if let Some(w) = seen {
            if w.invoked_ms > r.completed_ms {
                return violation(
                    r,
                    format!(
                        "the write that put it was asked only at {} ms",
                        w.invoked_ms
                    ),
                );
            }
        }
        // A later write acknowledged before the read was asked, which began after the write the
        // read saw was acknowledged (or any acknowledged write, if the read saw nothing).
        let superseded_by = writes.iter().filter(|w| acked(w)).find(|w2| {
            w2.completed_ms < r.invoked_ms
                && match seen {
                    None => true,
                    Some(w) => acked(w) && w.completed_ms < w2.invoked_ms,
                }
        });
        if let Some(w2) = superseded_by {
            return violation(
                r,
                format!(
                    "stale: {:?} was acknowledged at {} ms, before the read was asked",
                    String::from_utf8_lossy(&w2.value),
                    w2.completed_ms
                ),
            );
        }
    }
    // Reads in real-time order never go back to a write an earlier read's write superseded.
    for (i, a) in reads.iter().enumerate() {
        for b in &reads[i + 1..] {
            if a.key != b.key || a.completed_ms >= b.invoked_ms {
                continue;
            }
            let writer = |v: &Option<Vec<u8>>| {
                v.as_ref()
                    .and_then(|v| history.iter().find(|w| w.key == a.key && &w.value == v))
            };
            let (wa, wb) = (writer(&a.value), writer(&b.value));
            let went_back = match (wa, wb) {
                (Some(wa), None) => acked(wa),
                (Some(wa), Some(wb)) => acked(wb) && acked(wa) && wb.completed_ms < wa.invoked_ms,
                _ => false,
            };
            if went_back {
                return violation(
                    b,
                    format!(
                        "an earlier leased read (at {} ms, on {}) had already returned {}",
                        a.invoked_ms,
                        a.site,
                        show(&a.value)
                    ),
                );
            }
        }
    }
    Vec::new()
}

/// Reads only ever see written values, and one site's reads of a key never go back in time.
///
/// A value is "written" if any write put it, whatever that write's outcome: a refused or
/// unknown write may still have reached a log. Going back in time is judged on the load's
/// values (`load<n>`, `n` growing with every write): a later read of a key at one site must not
/// show an older value than an earlier read there, unless the site rolled back, was initialised
/// from a snapshot or (re)started in between, which all legitimately replace what it held.
pub fn reads_are_sane(
    reads: &[Read],
    history: &[Operation],
    events: &[Observed],
) -> Option<Violation> {
    let written: std::collections::BTreeSet<(&[u8], &[u8])> = history
        .iter()
        .map(|op| (op.key.as_slice(), op.value.as_slice()))
        .collect();
    let load_number = |value: &[u8]| -> Option<u64> {
        std::str::from_utf8(value.strip_prefix(b"load")?)
            .ok()?
            .parse()
            .ok()
    };
    let resets_at = |site: &SiteAddr, from: u64, to: u64| {
        events.iter().any(|e| {
            e.site == *site
                && e.ms >= from
                && e.ms <= to
                && matches!(
                    e.event,
                    NodeEvent::Site(
                        Event::RolledBack { .. }
                            | Event::InitDone { .. }
                            | Event::BecameClient { .. }
                    )
                )
        })
    };
    let mut last_seen: BTreeMap<(&SiteAddr, &[u8]), (u64, u64)> = BTreeMap::new();
    for read in reads {
        let Some(value) = &read.value else { continue };
        if !written.contains(&(read.key.as_slice(), value.as_slice())) {
            return Some(Violation {
                invariant: "reads_are_sane".into(),
                site: Some(read.site.clone()),
                at_ms: Some(read.invoked_ms),
                detail: format!(
                    "read {:?} = {:?}, a value no write ever wrote",
                    String::from_utf8_lossy(&read.key),
                    String::from_utf8_lossy(value)
                ),
            });
        }
        let Some(n) = load_number(value) else {
            continue;
        };
        let slot = (&read.site, read.key.as_slice());
        if let Some(&(seen, at)) = last_seen.get(&slot) {
            if n < seen && !resets_at(&read.site, at, read.invoked_ms) {
                return Some(Violation {
                    invariant: "reads_are_sane".into(),
                    site: Some(read.site.clone()),
                    at_ms: Some(read.invoked_ms),
                    detail: format!(
                        "read {:?} = load{n} after reading load{seen} there at {at} ms, with no \
                         rollback, initialisation or restart in between",
                        String::from_utf8_lossy(&read.key)
                    ),
                });
            }
        }
        last_seen.insert(slot, (n, read.invoked_ms));
    }
    None
}

/// Only masters accept writes: an acknowledged write's record was written in a generation its
/// site was master of.
pub fn no_client_accepted_a_write(
    history: &[Operation],
    events: &[Observed],
    logs: &BTreeMap<SiteAddr, Vec<LogRecord>>,
) -> Option<Violation> {
    let mut mastered: BTreeMap<&SiteAddr, Vec<Gen>> = BTreeMap::new();
    for e in events {
        if let NodeEvent::Site(Event::BecameMaster { gen }) = e.event {
            mastered.entry(&e.site).or_default().push(gen);
        }
    }
    for op in history {
        let Outcome::Ok { lsn } = op.outcome else {
            continue;
        };
        // The record that acknowledged write is still at its LSN on the site that took it (a
        // rolled-back one is gone, and the durability checker speaks for it).
        let gen = logs
            .get(&op.site)
            .and_then(|log| {
                log.iter()
                    .find(|r| r.lsn == lsn && writes(r, &op.key, &op.value))
            })
            .map(|r| r.gen);
        let Some(gen) = gen else { continue };
        if !mastered.get(&op.site).is_some_and(|g| g.contains(&gen)) {
            return Some(Violation {
                invariant: "no_client_accepted_a_write".into(),
                site: Some(op.site.clone()),
                at_ms: Some(op.completed_ms),
                detail: format!(
                    "acknowledged LSN {lsn} of generation {gen}, which it never mastered"
                ),
            });
        }
    }
    None
}

/// Whether the group still owes `op` (an acknowledged write) at the end of the run, with
/// `master` its master then. A policy that promises survival of any failover (`strong`, see
/// [`survives_failover`]) owes it always; a weaker one owes it to its master for as long as no
/// other site masters a later generation than the one it was written in. A lenient pair owes
/// no more than the weak promise, and a master of the same generation elsewhere voids that too:
/// each side may elect itself alone, in a generation the other never heard of, and when they
/// meet one side's history goes (as Berkeley DB documents for 2SITE_STRICT off). A removal
/// acknowledged by the master alone is how a write acknowledged "by everyone" is lost there.
pub fn write_is_promised(
    op: &Operation,
    strong: bool,
    lenient_pair: bool,
    master: &SiteAddr,
    events: &[Observed],
) -> bool {
    if strong && !lenient_pair {
        return true;
    }
    let became_master = |e: &Observed| match e.event {
        NodeEvent::Site(Event::BecameMaster { gen }) => Some(gen),
        _ => None,
    };
    let written_in = events
        .iter()
        .filter(|e| e.site == op.site && e.ms <= op.completed_ms)
        .filter_map(became_master)
        .next_back();
    written_in.is_some_and(|gen| {
        op.site == *master
            && !events
                .iter()
                .filter(|e| e.site != op.site)
                .filter_map(became_master)
                .any(|other| other > gen || lenient_pair && other == gen)
    })
}

/// What the sites of a group are, for [`all_available_waits_for_connected_clients`].
pub struct GroupView<'a> {
    /// Members from the start, as every master counts them: a static list, or a membership
    /// database's creators.
    pub base_members: &'a BTreeSet<SiteAddr>,
    /// Sites anybody asked to remove: from the moment of asking, a master may no longer count
    /// them (their removal may be under way), so nothing is owed to them.
    pub removals_asked: &'a BTreeSet<SiteAddr>,
    /// When each site's machine was killed (a killed node's connections end with no event).
    pub kills: &'a [(u64, SiteAddr)],
}

/// `all_available` (Berkeley DB's `DB_REPMGR_ACKS_ALL_AVAILABLE`) acknowledges a commit only
/// once every client connected to the master has it: for each commit a master acknowledged
/// under it, every member whose connection to the master was up then (as the master's node
/// reported its connections) had the record durable on its disk by that moment.
/// `all_available(master)` says whether that master commits under the policy;
/// `durable_through_by(site, ms, lsn)` whether the site's log was durable through `lsn` by `ms`.
///
/// Members are the base members and the sites the master itself reported added (while it held
/// them: a rollback, an internal init or a restart of the master may have taken the record), never
/// a site whose removal was asked. A connection that came or went in the very millisecond of the
/// acknowledgement is not judged: the order of the two within it is not in the trace.
pub fn all_available_waits_for_connected_clients(
    history: &[Operation],
    events: &[Observed],
    group: &GroupView<'_>,
    all_available: &dyn Fn(&SiteAddr) -> bool,
    durable_through_by: &dyn Fn(&SiteAddr, u64, u64) -> bool,
) -> Option<Violation> {
    let mut acked: Vec<(&Operation, u64)> = history
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Ok { lsn } if all_available(&op.site) => Some((op, lsn)),
            _ => None,
        })
        .collect();
    acked.sort_by_key(|(op, _)| op.completed_ms);
    let mut up: BTreeSet<(&SiteAddr, &SiteAddr)> = BTreeSet::new();
    // The sites each master reported added, since it last lost its database's past.
    let mut added: BTreeMap<&SiteAddr, BTreeSet<&SiteAddr>> = BTreeMap::new();
    let mut kills = group.kills.iter().peekable();
    let mut next = events.iter().enumerate().peekable();
    for (op, lsn) in acked {
        let at = op.completed_ms;
        // Everything before the acknowledgement's millisecond.
        while let Some((_, e)) = next.next_if(|(_, e)| e.ms < at) {
            while let Some((_, dead)) = kills.next_if(|(ms, _)| *ms <= e.ms) {
                up.retain(|(site, _)| *site != dead);
                added.remove(dead);
            }
            match &e.event {
                NodeEvent::ConnectionEstablished { peer, .. } => {
                    up.insert((&e.site, peer));
                }
                NodeEvent::ConnectionBroken { peer } => {
                    up.remove(&(&e.site, peer));
                }
                NodeEvent::Site(Event::SiteAdded { site }) => {
                    added.entry(&e.site).or_default().insert(site);
                }
                NodeEvent::Site(Event::MembershipCreated { sites }) => {
                    added.entry(&e.site).or_default().extend(sites);
                }
                NodeEvent::Site(Event::SiteRemoved { site }) => {
                    if let Some(added) = added.get_mut(&e.site) {
                        added.remove(site);
                    }
                }
                NodeEvent::Site(Event::RolledBack { .. } | Event::InitDone { .. }) => {
                    added.remove(&e.site);
                }
                _ => {}
            }
        }
        while let Some((_, dead)) = kills.next_if(|(ms, _)| *ms < at) {
            up.retain(|(site, _)| *site != dead);
            added.remove(dead);
        }
        let master = &op.site;
        let unsettled: BTreeSet<&SiteAddr> = events
            .iter()
            .skip_while(|e| e.ms < at)
            .take_while(|e| e.ms == at)
            .filter(|e| e.site == *master)
            .filter_map(|e| match &e.event {
                NodeEvent::ConnectionEstablished { peer, .. }
                | NodeEvent::ConnectionBroken { peer } => Some(peer),
                _ => None,
            })
            .collect();
        let is_member = |site: &SiteAddr| {
            (group.base_members.contains(site)
                || added.get(master).is_some_and(|a| a.contains(site)))
                && !group.removals_asked.contains(site)
        };
        let owed = up
            .iter()
            .filter(|(site, _)| *site == master)
            .map(|(_, client)| *client)
            .filter(|client| *client != master && is_member(client) && !unsettled.contains(client));
        for client in owed {
            if !durable_through_by(client, at, lsn) {
                return Some(Violation {
                    invariant: "all_available_waits_for_connected_clients".into(),
                    site: Some(master.clone()),
                    at_ms: Some(at),
                    detail: format!(
                        "acknowledged LSN {lsn} under all_available while connected to member \
                         {client}, which did not hold it durably yet"
                    ),
                });
            }
        }
    }
    None
}

/// Who may vote and who may win, for [`elections_are_sound`].
#[derive(Clone, Debug, Default)]
pub struct Electorate {
    /// Members from the start: a static list's sites and the group's creators. Others become
    /// members when a site reports them added (or the group's database is created with them).
    pub founders: BTreeSet<SiteAddr>,
    /// Priority-0 sites: they vote but must never become master.
    pub unelectable: BTreeSet<SiteAddr>,
    /// When each site's machine was killed. A vote cast in the instant of a kill can leave the
    /// site before the site's event reporting it is recorded (the kill takes the recorder too).
    pub kills: Vec<(u64, SiteAddr)>,
}

/// Whether no running site can win an election: every site that may stand (electable, a
/// member by its own view of the group, `members`, empty for a static group, and not waiting
/// for a master to mend its log) has a log ending (`lasts`) below the guards (`guards`, each
/// site's `Site::vote_guard`) of so many of its group's sites that the rest are no majority.
/// An electable site's guard is its log's end (it grants only a log at least as advanced,
/// the usual rule); a priority-0 site's is the change of who votes its log shows settled; a
/// site whose log lost changes of who votes it once held durably guards the last of those,
/// and does not stand. Then no master is the safe outcome. Only rot of synced records leaves a
/// group so (the site that wrote a change is electable and keeps it otherwise), so the world
/// asks this only after such rot.
pub fn electables_stranded_below_a_guard(
    members: &BTreeMap<SiteAddr, Vec<SiteAddr>>,
    lasts: &BTreeMap<SiteAddr, LogPos>,
    guards: &BTreeMap<SiteAddr, LogPos>,
    unelectable: &BTreeSet<SiteAddr>,
) -> bool {
    let everyone: Vec<SiteAddr> = members.keys().cloned().collect();
    let can_win = |(a, view): (&SiteAddr, &Vec<SiteAddr>)| {
        let (Some(last), Some(own)) = (lasts.get(a), guards.get(a)) else {
            return false;
        };
        let group = if view.is_empty() { &everyone } else { view };
        let stands = !unelectable.contains(a) && group.contains(a) && last >= own;
        let granted = group
            .iter()
            .filter(|v| *v == a || guards.get(*v).is_some_and(|g| g <= last))
            .count();
        stands && granted > group.len() / 2
    };
    !members.iter().any(can_win)
}

/// A two-site group without strictness may elect a lone site, but only while the other member
/// is out of reach: a site wins alone (one vote) only if its node had no connection up to the
/// other member at the time, as its connection events tell. A node that was killed has no
/// connections left (its old ones reported no break), and a site that is not a member yet (a
/// joiner, known once a site reports it added) is no partner to wait for; nor is one whose
/// removal the winner's own log had begun (it counted a group of one, `Elected::group`).
pub fn lenient_pair_waits_for_its_partner(
    events: &[Observed],
    electorate: &Electorate,
) -> Option<Violation> {
    let mut up: BTreeSet<(SiteAddr, SiteAddr)> = BTreeSet::new();
    let mut members = electorate.founders.clone();
    let mut kills = electorate.kills.iter().peekable();
    for e in events {
        while let Some((_, dead)) = kills.next_if(|(ms, _)| *ms <= e.ms) {
            up.retain(|(site, _)| site != dead);
        }
        match &e.event {
            NodeEvent::ConnectionEstablished { peer, .. } => {
                up.insert((e.site.clone(), peer.clone()));
            }
            NodeEvent::ConnectionBroken { peer } => {
                up.remove(&(e.site.clone(), peer.clone()));
            }
            NodeEvent::Site(Event::SiteAdded { site }) => {
                members.insert(site.clone());
            }
            NodeEvent::Site(Event::SiteRemoved { site }) => {
                members.remove(site);
            }
            NodeEvent::Site(Event::Elected {
                votes: 1,
                gen,
                group,
                ..
            }) if *group != 1 => {
                let partner = up
                    .iter()
                    .find(|(site, peer)| *site == e.site && members.contains(peer));
                if let Some((_, peer)) = partner {
                    return Some(Violation {
                        invariant: "lenient_pair_waits_for_its_partner".into(),
                        site: Some(e.site.clone()),
                        at_ms: Some(e.ms),
                        detail: format!(
                            "elected itself alone in generation {gen} while connected to the \
                             other member {peer}"
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    None
}

/// How far back a kill excuses a counted vote missing from the trace: longer than any
/// election the swarm draws lasts (pre-vote, vote and the collection window).
const VOTE_LOST_WITH_KILL_MS: u64 = 10_000;

/// Election safety, read from the votes the sites reported rather than from their memory (which
/// a crash can rewind): no site votes for two candidates in one election generation, across its
/// crashes; every vote a winner counted was cast for it, in that generation, by a site that was
/// a member by then; and no priority-0 site becomes master.
pub fn elections_are_sound(events: &[Observed], electorate: &Electorate) -> Option<Violation> {
    let violation = |e: &Observed, detail: String| Violation {
        invariant: "elections_are_sound".into(),
        site: Some(e.site.clone()),
        at_ms: Some(e.ms),
        detail,
    };
    // Every vote of the run first: a vote and the win it made can be reported in one instant,
    // in either order.
    let mut votes: BTreeMap<(&SiteAddr, Gen), &SiteAddr> = BTreeMap::new();
    for e in events {
        if let NodeEvent::Site(Event::Voted { candidate, egen }) = &e.event {
            match votes.insert((&e.site, *egen), candidate) {
                Some(earlier) if earlier != candidate => {
                    return Some(violation(
                        e,
                        format!(
                            "voted for {earlier} and then for {candidate} in election \
                             generation {egen}"
                        ),
                    ))
                }
                _ => {}
            }
        }
    }
    let mut members = electorate.founders.clone();
    for e in events {
        let NodeEvent::Site(event) = &e.event else {
            continue;
        };
        match event {
            Event::SiteAdded { site } => {
                members.insert(site.clone());
            }
            Event::MembershipCreated { sites } => members.extend(sites.iter().cloned()),
            Event::BecameMaster { gen } if electorate.unelectable.contains(&e.site) => {
                return Some(violation(
                    e,
                    format!("a priority-0 site became master of generation {gen}"),
                ));
            }
            Event::Elected { gen, voters, .. } => {
                for voter in voters {
                    if !members.contains(voter) {
                        return Some(violation(
                            e,
                            format!(
                                "counted {voter}'s vote in generation {gen}, but {voter} was \
                                 not yet a member"
                            ),
                        ));
                    }
                    let killed_lately = electorate.kills.iter().any(|(ms, site)| {
                        site == voter && *ms <= e.ms && ms + VOTE_LOST_WITH_KILL_MS >= e.ms
                    });
                    match votes.get(&(voter, *gen)) {
                        Some(candidate) if **candidate == e.site => {}
                        None if killed_lately => {}
                        cast => {
                            let cast = match cast {
                                Some(other) => format!("voted for {other}"),
                                None => "reported no vote".to_string(),
                            };
                            return Some(violation(
                                e,
                                format!(
                                    "won generation {gen} counting {voter}'s vote, but {voter} \
                                     {cast} in it"
                                ),
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// True if `record` is a transaction that puts `key = value`.
fn writes(record: &LogRecord, key: &[u8], value: &[u8]) -> bool {
    use replication::log::{Op, RecordBody};
    match &record.body {
        RecordBody::Txn(txn) => txn
            .ops
            .iter()
            .any(|o| matches!(o, Op::Put { key: k, value: v } if k == key && v == value)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn became_master(ms: u64, site: &str, gen: Gen) -> Observed {
        Observed {
            ms,
            site: SiteAddr::new(site),
            event: NodeEvent::Site(Event::BecameMaster { gen }),
        }
    }

    fn write(key: &str, value: &str) -> Operation {
        Operation {
            site: SiteAddr::new("m:1"),
            key: key.into(),
            value: value.into(),
            invoked_ms: 0,
            completed_ms: 1,
            // Refused writes count as written too: they may have reached a log.
            outcome: Outcome::Failed("refused".into()),
        }
    }

    fn read(at: u64, value: &str) -> Read {
        Read {
            site: SiteAddr::new("c:1"),
            key: b"k1".to_vec(),
            value: Some(value.into()),
            invoked_ms: at,
        }
    }

    #[test]
    fn a_rollback_that_reports_a_kept_transaction_or_an_unordered_list_is_caught() {
        let rolled_back = |txns: Vec<u64>| {
            [site_event(
                7,
                "c:1",
                Event::RolledBack {
                    to: LogPos::new(1, 10),
                    txns,
                },
            )]
        };
        // The legal edges: the first record after the kept one, and a rollback of no transaction
        // (only a generation's opening record went).
        assert_eq!(rollbacks_are_sound(&rolled_back(vec![11, 14])), None);
        assert_eq!(rollbacks_are_sound(&rolled_back(vec![])), None);
        let v = rollbacks_are_sound(&rolled_back(vec![10, 11])).expect("a kept one");
        assert!(v.detail.contains("rolled back to LSN 10"), "{}", v.detail);
        assert!(rollbacks_are_sound(&rolled_back(vec![12, 11])).is_some());
        assert!(rollbacks_are_sound(&rolled_back(vec![12, 12])).is_some());
    }

    #[test]
    fn a_rollback_of_a_tail_the_master_still_holds_is_caught_and_a_divergent_one_is_not() {
        use replication::log::RecordBody;
        let master = SiteAddr::new("m:1");
        let record = |lsn, gen| {
            let body = RecordBody::GenStart {
                master: master.clone(),
            };
            LogRecord::new(lsn, gen, body)
        };
        // The master's log: generation 2 up to LSN 5, then generation 3 from LSN 6.
        let log: Vec<LogRecord> = (1..=5)
            .map(|l| record(l, 2))
            .chain((6..=8).map(|l| record(l, 3)))
            .collect();
        let after_master_of = |gen, to: (u64, u64), from: (u64, u64)| {
            [
                site_event(
                    8,
                    "c:1",
                    Event::NewMaster {
                        master: master.clone(),
                        gen,
                    },
                ),
                site_event(
                    9,
                    "c:1",
                    Event::WouldRollback {
                        to: LogPos::new(to.0, to.1),
                        from: LogPos::new(from.0, from.1),
                    },
                ),
            ]
        };
        let would = |to, from| after_master_of(3, to, from);
        // The legal edge: the client's LSN 6 and 7 were generation 2's, which the master
        // replaced with generation 3's.
        let divergent = would((2, 5), (2, 7));
        assert_eq!(
            rollbacks_remove_only_divergent_records(&divergent, &master, &log, 0),
            None
        );
        let shared = would((2, 4), (3, 7));
        let v = rollbacks_remove_only_divergent_records(&shared, &master, &log, 0)
            .expect("a rollback of records the master holds");
        assert!(
            v.detail.contains("holds its record at LSN 7"),
            "{}",
            v.detail
        );
        // Archived past the record: nothing to compare with.
        assert_eq!(
            rollbacks_remove_only_divergent_records(&shared, &master, &log[7..], 7),
            None
        );
        // The other legal edge: the master of generation 4 the client synced with had replaced
        // LSN 7, but its branch was lost and generation 3's record came back with a later
        // master (random-faults seed 4251: a priority-0 voter elects a less advanced log).
        let lost_branch = after_master_of(4, (3, 6), (3, 7));
        assert_eq!(
            rollbacks_remove_only_divergent_records(&lost_branch, &master, &log, 0),
            None
        );
    }

    #[test]
    fn counters_that_drift_from_the_events_are_caught_and_events_still_on_their_way_are_not() {
        let a = SiteAddr::new("a:1");
        let events = [
            site_event(
                1,
                "a:1",
                Event::Voted {
                    candidate: a.clone(),
                    egen: 2,
                },
            ),
            // A vote for another site is no election of its own.
            site_event(
                1,
                "a:1",
                Event::Voted {
                    candidate: SiteAddr::new("b:1"),
                    egen: 3,
                },
            ),
            // Another site's events are not a's.
            site_event(
                1,
                "b:1",
                Event::InitDone {
                    at: LogPos::default(),
                },
            ),
            site_event(
                1,
                "a:1",
                Event::RolledBack {
                    to: LogPos::default(),
                    txns: vec![4, 5],
                },
            ),
        ];
        let reported = Tally::of_events(&a, &events);
        assert_eq!(
            reported,
            Tally {
                elections: 1,
                txns_rolled_back: 2,
                ..Tally::default()
            }
        );
        assert_eq!(
            counters_match_events(&a, &reported, &reported, &reported),
            None
        );
        // The legal edge: an election counted whose event reached the trace only after the
        // counters were read.
        let won = site_event(
            1,
            "a:1",
            Event::Elected {
                gen: 2,
                votes: 2,
                needed: 2,
                voters: vec![],
                group: 3,
            },
        );
        let later: Vec<Observed> = events.iter().cloned().chain([won]).collect();
        let after = Tally::of_events(&a, &later);
        let counted = Tally {
            elections_won: 1,
            ..reported
        };
        assert_eq!(counters_match_events(&a, &counted, &reported, &after), None);
        // A counter that never moved, and one that moved twice for one event.
        let stuck = Tally {
            elections: 0,
            ..reported
        };
        let v = counters_match_events(&a, &stuck, &reported, &after).expect("caught");
        assert!(v.detail.contains("count 0 elections since"), "{}", v.detail);
        let doubled = Tally {
            txns_rolled_back: 4,
            ..counted
        };
        let v = counters_match_events(&a, &doubled, &reported, &after).expect("caught");
        assert!(v.detail.contains("events report 2"), "{}", v.detail);
    }

    #[test]
    fn reads_of_unwritten_values_or_back_in_time_are_caught_and_a_rollback_excuses_the_second() {
        let history = [write("k1", "load3"), write("k1", "load9")];
        let forward = [read(10, "load3"), read(20, "load9"), read(30, "load9")];
        assert_eq!(reads_are_sane(&forward, &history, &[]), None);
        let invented = [read(10, "load5")];
        let v = reads_are_sane(&invented, &history, &[]).expect("caught");
        assert!(v.detail.contains("no write ever wrote"), "{}", v.detail);
        let backwards = [read(10, "load9"), read(20, "load3")];
        let v = reads_are_sane(&backwards, &history, &[]).expect("caught");
        assert!(v.detail.contains("after reading load9"), "{}", v.detail);
        // The legal edge: the site rolled its log back between the two reads.
        let rollback = Observed {
            ms: 15,
            site: SiteAddr::new("c:1"),
            event: NodeEvent::Site(Event::RolledBack {
                to: LogPos::default(),
                txns: vec![9],
            }),
        };
        assert_eq!(reads_are_sane(&backwards, &history, &[rollback]), None);
    }

    #[test]
    fn each_policy_promises_survival_only_where_its_holders_are_a_majority() {
        use AckPolicy::*;
        for policy in [All, AllPeers, Quorum] {
            assert!(survives_failover(policy, 7, 3), "{policy:?}");
        }
        // The master and one client: a majority of three, not of four.
        assert!(survives_failover(OnePeer, 3, 2));
        assert!(!survives_failover(OnePeer, 4, 4));
        // `one` may be acknowledged by a priority-0 client, whose vote goes to anyone electable.
        assert!(survives_failover(One, 3, 3));
        assert!(!survives_failover(One, 3, 2));
        assert!(!survives_failover(AllAvailable, 3, 2));
        // The master alone: only a group of one.
        assert!(survives_failover(None, 1, 1));
        assert!(!survives_failover(None, 2, 2));
    }

    #[test]
    fn a_policy_can_be_met_unless_it_needs_electable_clients_the_group_lacks() {
        use AckPolicy::*;
        for policy in AckPolicy::ALL {
            assert!(policy_can_be_met(policy, 1, 0), "{policy:?} alone");
            assert!(policy_can_be_met(policy, 3, 2), "{policy:?}");
        }
        assert!(!policy_can_be_met(OnePeer, 3, 0));
        assert!(
            !policy_can_be_met(Quorum, 5, 1),
            "two of five is no majority"
        );
        assert!(policy_can_be_met(Quorum, 5, 2));
        assert!(policy_can_be_met(One, 3, 0), "any client will do");
    }

    #[test]
    fn a_lost_write_is_a_violation_only_if_its_policy_promised_it() {
        let m = SiteAddr::new("m:1");
        let mut op = write("k1", "load1");
        op.outcome = Outcome::Ok { lsn: 2 };
        let history = [op];
        assert_eq!(
            durable_writes_survive(&history, &m, &[], 0, &|_| false),
            None
        );
        let v = durable_writes_survive(&history, &m, &[], 0, &|_| true).expect("caught");
        assert_eq!(v.invariant, "durable_writes_survive");
        // Folded into an archived snapshot: the prefix and replay checks speak for it.
        assert_eq!(
            durable_writes_survive(&history, &m, &[], 2, &|_| true),
            None
        );
    }

    #[test]
    fn a_site_with_another_membership_is_caught() {
        let (a, b) = (SiteAddr::new("a:1"), SiteAddr::new("b:1"));
        let mut members = BTreeMap::new();
        members.insert(a.clone(), vec![a.clone(), b.clone()]);
        members.insert(b.clone(), vec![a.clone(), b.clone()]);
        assert_eq!(membership_converges(&a, &members), None);
        members.insert(b.clone(), vec![b.clone()]);
        assert_eq!(membership_converges(&a, &members).unwrap().site, Some(b));
    }

    #[test]
    fn a_site_that_should_run_but_has_no_node_is_caught() {
        let (a, b) = (SiteAddr::new("a:1"), SiteAddr::new("b:1"));
        let running: BTreeMap<SiteAddr, (LogPos, u64)> =
            [(a.clone(), (LogPos::new(1, 3), 7))].into();
        assert_eq!(every_site_runs(std::slice::from_ref(&a), &running), None);
        let v = every_site_runs(&[a, b.clone()], &running).expect("caught");
        assert_eq!((v.invariant.as_str(), v.site), ("liveness", Some(b)));
    }

    #[test]
    fn a_running_client_with_a_divergent_record_is_caught_and_a_prefix_passes() {
        use replication::{LogRecord, RecordBody, Txn};
        let (m, c) = (SiteAddr::new("m:1"), SiteAddr::new("c:1"));
        let rec = |lsn, gen| LogRecord::new(lsn, gen, RecordBody::Txn(Txn::put("k", "v")));
        let master = vec![rec(1, 1), rec(2, 1), rec(3, 2)];
        let mut logs: BTreeMap<SiteAddr, Vec<LogRecord>> = BTreeMap::new();
        logs.insert(m.clone(), master);
        logs.insert(c.clone(), vec![rec(1, 1), rec(2, 1)]);
        assert_eq!(
            logs_are_prefixes(&m, &logs),
            None,
            "a shorter log is a prefix"
        );
        logs.insert(c.clone(), vec![rec(1, 1), rec(2, 1), rec(3, 1)]);
        let v = logs_are_prefixes(&m, &logs).expect("caught");
        assert_eq!(v.site, Some(c));
    }

    #[test]
    fn two_masters_of_one_generation_are_caught() {
        let ok = [became_master(1, "a:1", 1), became_master(2, "b:1", 2)];
        assert_eq!(one_master_per_generation(&ok), None);
        let bad = [became_master(1, "a:1", 3), became_master(2, "b:1", 3)];
        let v = one_master_per_generation(&bad).expect("caught");
        assert_eq!(v.at_ms, Some(2));
    }

    #[test]
    fn a_write_acknowledged_by_a_site_that_was_not_master_of_its_generation_is_caught() {
        use replication::{LogRecord, RecordBody, Txn};
        let b = SiteAddr::new("b:1");
        let record = LogRecord::new(3, 1, RecordBody::Txn(Txn::put("k", "v")));
        let logs: BTreeMap<SiteAddr, Vec<LogRecord>> = [(b.clone(), vec![record])].into();
        let history = [Operation {
            site: b.clone(),
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            invoked_ms: 10,
            completed_ms: 12,
            outcome: Outcome::Ok { lsn: 3 },
        }];
        // b was master of generation 1: its acknowledgement is legitimate.
        let mastered = [became_master(1, "b:1", 1)];
        assert_eq!(no_client_accepted_a_write(&history, &mastered, &logs), None);
        // a was master of generation 1, b never: b accepted a write as a client.
        let other = [became_master(1, "a:1", 1)];
        let v = no_client_accepted_a_write(&history, &other, &logs).expect("caught");
        assert_eq!(v.site, Some(b));
        assert_eq!(v.at_ms, Some(12));
    }

    fn site_event(ms: u64, site: &str, event: Event) -> Observed {
        Observed {
            ms,
            site: SiteAddr::new(site),
            event: NodeEvent::Site(event),
        }
    }

    #[test]
    fn a_lenient_pair_site_winning_alone_while_connected_is_caught_and_a_cut_off_one_is_not() {
        let connected = |ms, site: &str, peer: &str| Observed {
            ms,
            site: SiteAddr::new(site),
            event: NodeEvent::ConnectionEstablished {
                peer: SiteAddr::new(peer),
                version: 2,
            },
        };
        let broken = |ms, site: &str, peer: &str| Observed {
            ms,
            site: SiteAddr::new(site),
            event: NodeEvent::ConnectionBroken {
                peer: SiteAddr::new(peer),
            },
        };
        let alone = |ms, site: &str| {
            let me = SiteAddr::new(site);
            let elected = Event::Elected {
                gen: 2,
                votes: 1,
                needed: 1,
                voters: vec![me],
                group: 2,
            };
            site_event(ms, site, elected)
        };
        let pair = Electorate {
            founders: [SiteAddr::new("a"), SiteAddr::new("b")].into(),
            ..Default::default()
        };
        // Planted: connected, and yet alone.
        let planted = [connected(10, "a", "b"), alone(500, "a")];
        let v = lenient_pair_waits_for_its_partner(&planted, &pair).expect("caught");
        assert!(
            v.detail.contains("connected to the other member b"),
            "{}",
            v.detail
        );
        // The legal edges: the connection broke first; the site was killed (its connections
        // went with it, unreported) and restarted; the other site never was a member.
        let cut_off = [
            connected(10, "a", "b"),
            broken(400, "a", "b"),
            alone(500, "a"),
        ];
        assert_eq!(lenient_pair_waits_for_its_partner(&cut_off, &pair), None);
        let killed = Electorate {
            kills: vec![(300, SiteAddr::new("a"))],
            ..pair.clone()
        };
        assert_eq!(lenient_pair_waits_for_its_partner(&planted, &killed), None);
        let creator_alone = Electorate {
            founders: [SiteAddr::new("a")].into(),
            ..Default::default()
        };
        assert_eq!(
            lenient_pair_waits_for_its_partner(&planted, &creator_alone),
            None
        );
        // ... until the creator reports the other added.
        let added = site_event(
            100,
            "a",
            Event::SiteAdded {
                site: SiteAddr::new("b"),
            },
        );
        let joined = [connected(10, "a", "b"), added, alone(500, "a")];
        assert!(lenient_pair_waits_for_its_partner(&joined, &creator_alone).is_some());
        // A winner whose own log had begun removing its partner counted a group of one: no
        // partner to wait for (random-faults seed 30867).
        let removing = site_event(
            500,
            "a",
            Event::Elected {
                gen: 2,
                votes: 1,
                needed: 1,
                voters: vec![SiteAddr::new("a")],
                group: 1,
            },
        );
        let partner_leaving = [connected(10, "a", "b"), removing];
        assert_eq!(
            lenient_pair_waits_for_its_partner(&partner_leaving, &pair),
            None
        );
    }

    #[test]
    fn an_all_available_ack_before_a_connected_member_holds_it_is_caught_and_the_edges_pass() {
        fn addr(name: &str) -> SiteAddr {
            SiteAddr::new(name)
        }
        let connected = |ms, site: &str, peer: &str| Observed {
            ms,
            site: addr(site),
            event: NodeEvent::ConnectionEstablished {
                peer: addr(peer),
                version: 2,
            },
        };
        let broken = |ms, site: &str, peer: &str| Observed {
            ms,
            site: addr(site),
            event: NodeEvent::ConnectionBroken { peer: addr(peer) },
        };
        let added = |ms, site: &str, joiner: &str| {
            site_event(ms, site, Event::SiteAdded { site: addr(joiner) })
        };
        let acked_at = |completed_ms| Operation {
            site: addr("m"),
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            invoked_ms: completed_ms - 5,
            completed_ms,
            outcome: Outcome::Ok { lsn: 7 },
        };
        // c holds LSN 7 durably from 100 ms on; d never does.
        let durable =
            |site: &SiteAddr, ms: u64, lsn: u64| site == &addr("c") && ms >= 100 && lsn <= 7;
        let base: BTreeSet<SiteAddr> = [addr("m"), addr("c"), addr("d")].into();
        let nobody = BTreeSet::new();
        let group = GroupView {
            base_members: &base,
            removals_asked: &nobody,
            kills: &[],
        };
        let judge = |events: &[Observed], history: &[Operation], group: &GroupView<'_>| {
            let all_available = |master: &SiteAddr| master == &addr("m");
            all_available_waits_for_connected_clients(
                history,
                events,
                group,
                &all_available,
                &durable,
            )
        };
        // Planted: acknowledged while d, connected, lacked it (or while c still did).
        let up = [connected(10, "m", "c"), connected(10, "m", "d")];
        let v = judge(&up, &[acked_at(120)], &group).expect("caught");
        assert!(v.detail.contains("member d"), "{}", v.detail);
        let only_c = [connected(10, "m", "c")];
        assert!(
            judge(&only_c, &[acked_at(90)], &group).is_some(),
            "c had it only at 100"
        );
        // Legal edges: c held it in time; d's connection broke first, or came or went in the
        // very millisecond; d was killed (its connections went unreported); d's removal was
        // asked; the policy was another; the write failed.
        assert_eq!(judge(&only_c, &[acked_at(100)], &group), None);
        let d_gone = [up[0].clone(), up[1].clone(), broken(110, "m", "d")];
        assert_eq!(judge(&d_gone, &[acked_at(120)], &group), None);
        let d_same_ms = [up[0].clone(), up[1].clone(), broken(120, "m", "d")];
        assert_eq!(judge(&d_same_ms, &[acked_at(120)], &group), None);
        let late = [up[0].clone(), connected(120, "m", "d")];
        assert_eq!(judge(&late, &[acked_at(120)], &group), None);
        let master_killed = GroupView {
            kills: &[(50, addr("m"))],
            ..group
        };
        assert_eq!(judge(&up, &[acked_at(120)], &master_killed), None);
        let asked: BTreeSet<SiteAddr> = [addr("d")].into();
        let removing = GroupView {
            removals_asked: &asked,
            ..group
        };
        assert_eq!(judge(&up, &[acked_at(120)], &removing), None);
        let failed = Operation {
            outcome: Outcome::Unknown("perm failed".into()),
            ..acked_at(120)
        };
        assert_eq!(judge(&up, &[failed], &group), None);
        // A joiner is owed only once the master reported it added, and not after the master
        // rolled back (its database's record of the join may be gone).
        let joiner_base: BTreeSet<SiteAddr> = [addr("m"), addr("c")].into();
        let joined = GroupView {
            base_members: &joiner_base,
            ..group
        };
        assert_eq!(
            judge(&up, &[acked_at(120)], &joined),
            None,
            "d still joining"
        );
        let admitted = [up[0].clone(), up[1].clone(), added(60, "m", "d")];
        assert!(judge(&admitted, &[acked_at(120)], &joined).is_some());
        let rolled_back = Event::RolledBack {
            to: LogPos { gen: 1, lsn: 5 },
            txns: vec![],
        };
        let forgotten = [admitted.to_vec(), vec![site_event(80, "m", rolled_back)]].concat();
        assert_eq!(judge(&forgotten, &[acked_at(120)], &joined), None);
    }

    fn voted(ms: u64, site: &str, candidate: &str, egen: Gen) -> Observed {
        let candidate = SiteAddr::new(candidate);
        site_event(ms, site, Event::Voted { candidate, egen })
    }

    fn elected(ms: u64, site: &str, gen: Gen, voters: &[&str]) -> Observed {
        let voters: Vec<SiteAddr> = voters.iter().map(|v| SiteAddr::new(*v)).collect();
        let (votes, needed) = (voters.len(), voters.len());
        let event = Event::Elected {
            gen,
            votes,
            needed,
            group: voters.len(),
            voters,
        };
        site_event(ms, site, event)
    }

    #[test]
    fn elections_are_held_to_the_votes_the_sites_reported() {
        let electorate = Electorate {
            founders: ["a:1", "b:1", "c:1"].map(SiteAddr::new).into(),
            unelectable: [SiteAddr::new("c:1")].into(),
            kills: vec![(40, SiteAddr::new("b:1"))],
        };
        let check = |events: &[Observed]| elections_are_sound(events, &electorate);
        // Legal edges: a voter that crashed and voted again for the same candidate in the same
        // generation; a win reported before the vote it counted.
        let fair = [
            voted(10, "a:1", "a:1", 2),
            elected(12, "a:1", 2, &["a:1", "c:1"]),
            voted(12, "c:1", "a:1", 2),
            voted(30, "c:1", "a:1", 2),
        ];
        assert_eq!(check(&fair), None);
        // A second candidate in the same generation.
        let twice = [voted(10, "c:1", "a:1", 2), voted(30, "c:1", "b:1", 2)];
        let v = check(&twice).expect("caught");
        assert!(v.detail.contains("and then for b:1"), "{}", v.detail);
        // A counted vote that was cast for someone else, or never.
        let stolen = [
            voted(10, "a:1", "a:1", 3),
            voted(10, "c:1", "b:1", 3),
            elected(20, "a:1", 3, &["a:1", "c:1"]),
        ];
        let v = check(&stolen).expect("caught");
        assert!(v.detail.contains("c:1 voted for b:1"), "{}", v.detail);
        let invented = [
            voted(10, "a:1", "a:1", 3),
            elected(20, "a:1", 3, &["a:1", "c:1"]),
        ];
        let v = check(&invented).expect("caught");
        assert!(v.detail.contains("reported no vote"), "{}", v.detail);
        // ... unless the voter was killed in the meantime (its report can die with it).
        let killed = [
            voted(10, "a:1", "a:1", 3),
            elected(50, "a:1", 3, &["a:1", "b:1"]),
        ];
        assert_eq!(check(&killed), None);
        // A vote from a site not yet added.
        let early = [
            voted(10, "a:1", "a:1", 4),
            voted(10, "d:1", "a:1", 4),
            elected(20, "a:1", 4, &["a:1", "d:1"]),
            site_event(
                30,
                "a:1",
                Event::SiteAdded {
                    site: SiteAddr::new("d:1"),
                },
            ),
        ];
        let v = check(&early).expect("caught");
        assert!(v.detail.contains("not yet a member"), "{}", v.detail);
        let mut joined = early.to_vec();
        joined.rotate_right(1);
        joined[0].ms = 5;
        assert_eq!(check(&joined), None);
        // A priority-0 master.
        let zero = [site_event(5, "c:1", Event::BecameMaster { gen: 9 })];
        let v = check(&zero).expect("caught");
        assert!(v.detail.contains("priority-0"), "{}", v.detail);
    }

    #[test]
    fn a_write_is_owed_as_its_policy_promises_and_a_lenient_pair_promises_less() {
        let op = Operation {
            site: SiteAddr::new("m:1"),
            outcome: Outcome::Ok { lsn: 5 },
            ..write("k", "v")
        };
        let (m, other) = (SiteAddr::new("m:1"), SiteAddr::new("o:1"));
        let mastered = [became_master(0, "m:1", 3)];
        // A strong policy owes it whoever is master; a weak one only to its own master.
        assert!(write_is_promised(&op, true, false, &other, &mastered));
        assert!(write_is_promised(&op, false, false, &m, &mastered));
        assert!(!write_is_promised(&op, false, false, &other, &mastered));
        // Another site mastering a later generation voids the weak promise; the same generation
        // cannot happen outside a lenient pair (one_master_per_generation says so) ...
        let later = [became_master(0, "m:1", 3), became_master(5, "o:1", 4)];
        assert!(!write_is_promised(&op, false, false, &m, &later));
        let same = [became_master(0, "m:1", 3), became_master(5, "o:1", 3)];
        assert!(write_is_promised(&op, false, false, &m, &same));
        // ... but in a lenient pair it does, and the strong promise does not hold there.
        assert!(!write_is_promised(&op, false, true, &m, &same));
        assert!(!write_is_promised(&op, true, true, &other, &mastered));
        assert!(write_is_promised(&op, true, true, &m, &mastered));
    }

    #[test]
    fn a_database_that_is_not_its_logs_replay_is_caught_and_one_not_read_is_not_judged() {
        let (a, b) = (SiteAddr::new("a:1"), SiteAddr::new("b:1"));
        let live: BTreeMap<SiteAddr, (LogPos, u64)> = [
            (a.clone(), (LogPos::new(1, 4), 9)),
            (b.clone(), (LogPos::new(1, 4), 9)),
        ]
        .into();
        // The legal edge: b's disk could not be read (a damaged record it has not met yet).
        let replayed: BTreeMap<SiteAddr, (LogPos, u64)> =
            [(a.clone(), (LogPos::new(1, 4), 9))].into();
        assert_eq!(database_is_replay(&live, &replayed), None);
        let mut wrong = replayed.clone();
        wrong.insert(b.clone(), (LogPos::new(1, 4), 8));
        let v = database_is_replay(&live, &wrong).expect("caught");
        assert_eq!(
            (v.invariant.as_str(), v.site),
            ("database_is_replay", Some(b))
        );
    }

    #[test]
    fn a_site_behind_the_master_at_quiescence_is_caught_and_level_sites_pass() {
        let (m, c) = (SiteAddr::new("m:1"), SiteAddr::new("c:1"));
        let level: BTreeMap<SiteAddr, (LogPos, u64)> = [
            (m.clone(), (LogPos::new(2, 10), 1)),
            (c.clone(), (LogPos::new(2, 10), 1)),
        ]
        .into();
        assert_eq!(all_caught_up(&m, &level, 5_000), None);
        let mut behind = level.clone();
        behind.insert(c.clone(), (LogPos::new(2, 9), 1));
        let v = all_caught_up(&m, &behind, 5_000).expect("caught");
        assert_eq!(v.site, Some(c));
        // No master reading, nothing to judge against.
        behind.remove(&m);
        assert_eq!(all_caught_up(&m, &behind, 5_000), None);
    }

    #[test]
    fn a_client_holding_records_the_master_archived_is_still_a_prefix() {
        use replication::{LogRecord, RecordBody, Txn};
        let (m, c) = (SiteAddr::new("m:1"), SiteAddr::new("c:1"));
        let rec = |lsn| LogRecord::new(lsn, 1, RecordBody::Txn(Txn::put("k", "v")));
        // The master archived 1..=2; the client still has them.
        let logs: BTreeMap<SiteAddr, Vec<LogRecord>> = [
            (m.clone(), vec![rec(3), rec(4)]),
            (c.clone(), vec![rec(1), rec(2), rec(3)]),
        ]
        .into();
        assert_eq!(logs_are_prefixes(&m, &logs), None);
        // A record past the master's end is not a prefix.
        let ahead: BTreeMap<SiteAddr, Vec<LogRecord>> =
            [(m.clone(), vec![rec(3)]), (c.clone(), vec![rec(3), rec(4)])].into();
        let v = logs_are_prefixes(&m, &ahead).expect("caught");
        assert!(v.detail.contains("beyond the master's log"), "{}", v.detail);
    }
}

#[cfg(test)]
mod stranded_tests {
    use super::*;

    /// A priority-0 site P guards (1, 5); D is electable and a member by its own view; X is
    /// electable but no member by its own view (a joiner that never got in).
    fn run(d_last: LogPos, p_guard: LogPos) -> bool {
        let (p, d, x) = (SiteAddr::new("p"), SiteAddr::new("d"), SiteAddr::new("x"));
        let view = vec![p.clone(), d.clone()];
        let members = BTreeMap::from([
            (p.clone(), view.clone()),
            (d.clone(), view),
            (x.clone(), vec![p.clone(), d.clone()]),
        ]);
        let lasts = BTreeMap::from([
            (p.clone(), LogPos::new(1, 9)),
            (d.clone(), d_last),
            (x.clone(), LogPos::new(1, 9)),
        ]);
        let guards = BTreeMap::from([
            (p.clone(), p_guard),
            (d.clone(), d_last),
            (x.clone(), LogPos::new(1, 9)),
        ]);
        electables_stranded_below_a_guard(&members, &lasts, &guards, &BTreeSet::from([p]))
    }

    #[test]
    fn a_group_whose_every_candidate_is_below_a_guard_is_stranded() {
        assert!(run(LogPos::new(1, 4), LogPos::new(1, 5)));
    }

    #[test]
    fn a_candidate_at_the_guard_may_win_so_the_group_is_not_stranded() {
        assert!(!run(LogPos::new(1, 5), LogPos::new(1, 5)));
        assert!(!run(LogPos::new(2, 1), LogPos::new(1, 5)));
    }

    #[test]
    fn a_site_whose_log_lost_changes_of_who_votes_refuses_candidates_below_them() {
        let (d, e) = (SiteAddr::new("d"), SiteAddr::new("e"));
        let members = BTreeMap::from([(d.clone(), vec![]), (e.clone(), vec![])]);
        // D's log ends at (1, 3), below the (1, 6) its metadata marks: it waits, and refuses
        // any candidate below (1, 6).
        let run = |e_last: LogPos| {
            let lasts = BTreeMap::from([(d.clone(), LogPos::new(1, 3)), (e.clone(), e_last)]);
            let guards = BTreeMap::from([(d.clone(), LogPos::new(1, 6)), (e.clone(), e_last)]);
            electables_stranded_below_a_guard(&members, &lasts, &guards, &BTreeSet::new())
        };
        // E holds the change D lost: D grants it.
        assert!(!run(LogPos::new(1, 7)));
        // Neither holds it: no one can win.
        assert!(run(LogPos::new(1, 4)));
    }

    #[test]
    fn without_a_priority_zero_guard_nothing_is_stranded() {
        let d = SiteAddr::new("d");
        let members = BTreeMap::from([(d.clone(), vec![])]);
        let lasts = BTreeMap::from([(d.clone(), LogPos::new(1, 1))]);
        let guards = BTreeMap::from([(d, LogPos::new(1, 1))]);
        assert!(!electables_stranded_below_a_guard(
            &members,
            &lasts,
            &guards,
            &BTreeSet::new()
        ));
    }
}

#[cfg(test)]
mod leased_read_tests {
    use super::*;

    fn write(value: &str, invoked_ms: u64, completed_ms: u64, ok: bool) -> Operation {
        Operation {
            site: SiteAddr::new("m"),
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
            invoked_ms,
            completed_ms,
            outcome: if ok {
                Outcome::Ok { lsn: 1 }
            } else {
                Outcome::Unknown("perm failed".into())
            },
        }
    }

    fn read(value: Option<&str>, invoked_ms: u64, completed_ms: u64) -> LeasedRead {
        LeasedRead {
            site: SiteAddr::new("m"),
            key: b"k".to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
            invoked_ms,
            completed_ms,
        }
    }

    fn broken(reads: &[LeasedRead], history: &[Operation]) -> Option<String> {
        leased_reads_are_linearizable(reads, history)
            .first()
            .map(|v| v.detail.clone())
    }

    #[test]
    fn legal_histories_near_the_edge_pass() {
        let history = [write("a", 0, 10, true), write("b", 20, 30, true)];
        // Concurrent with b: either value is fine; after b was acknowledged, b.
        for r in [
            read(Some("a"), 25, 26),
            read(Some("b"), 25, 26),
            read(Some("b"), 31, 32),
            read(Some("a"), 11, 12),
            read(None, 5, 6),
        ] {
            assert_eq!(broken(std::slice::from_ref(&r), &history), None, "{r:?}");
        }
        // A write of unknown outcome: seen or not, both legal, at any time.
        let unknown = [write("a", 0, 10, true), write("u", 20, 30, false)];
        assert_eq!(broken(&[read(Some("u"), 40, 41)], &unknown), None);
        assert_eq!(broken(&[read(Some("a"), 40, 41)], &unknown), None);
        // Two reads during the write of b: a then b, or both a, are fine.
        let two = [read(Some("a"), 21, 22), read(Some("b"), 23, 24)];
        assert_eq!(broken(&two, &history), None);
    }

    #[test]
    fn stale_phantom_and_future_reads_and_going_back_are_caught() {
        let history = [write("a", 0, 10, true), write("b", 20, 30, true)];
        let stale = broken(&[read(Some("a"), 31, 32)], &history).expect("stale");
        assert!(
            stale.contains("stale") && stale.contains("\"b\""),
            "{stale}"
        );
        let empty = broken(&[read(None, 11, 12)], &history).expect("missed a");
        assert!(empty.contains("stale"), "{empty}");
        let phantom = broken(&[read(Some("z"), 40, 41)], &history).expect("phantom");
        assert!(phantom.contains("no write ever put"), "{phantom}");
        let future = broken(&[read(Some("b"), 12, 15)], &history).expect("future");
        assert!(future.contains("asked only at 20"), "{future}");
        let back = [read(Some("b"), 22, 23), read(Some("a"), 24, 25)];
        // b is still being written when both reads run: the first saw it, the second must too.
        let history = [write("a", 0, 10, true), write("b", 11, 30, true)];
        let went_back = broken(&back, &history).expect("went back");
        assert!(went_back.contains("earlier leased read"), "{went_back}");
    }
}

/// A rollback reports what it removed: the transactions it lists lie after the record it kept,
/// oldest first, each once. Berkeley DB's users undo exactly those in their own state, so a
/// list that names a kept transaction (or misses its order) has them undo a commit that stands.
pub fn rollbacks_are_sound(events: &[Observed]) -> Option<Violation> {
    events.iter().find_map(|e| {
        let NodeEvent::Site(Event::RolledBack { to, txns }) = &e.event else {
            return None;
        };
        let ascending = txns.windows(2).all(|w| w[0] < w[1]);
        let after = txns.first().is_none_or(|first| *first > to.lsn);
        (!ascending || !after).then(|| Violation {
            invariant: "rollbacks_are_sound".into(),
            site: Some(e.site.clone()),
            at_ms: Some(e.ms),
            detail: format!(
                "rolled back to LSN {} and reported the transactions at {txns:?} as removed",
                to.lsn
            ),
        })
    })
}

/// A client rolls back only a tail its master does not hold. The master it synced with was of
/// generation G (its last `NewMaster` before the rollback). When G's branch is part of the
/// final history (the final master's log holds a record of generation G), the final log holds,
/// below G's start, what G's master held then; so if it ends the run with the very record the
/// client gave up as divergent (the same LSN in the same generation, which one master wrote
/// once), the client threw away a record its master shared, acked ones among them. When G's
/// branch was lost later (it never reached a majority), an older record can come back legally
/// with a later master: nothing to judge. `master_log` starts after `archived`; a record
/// archived since cannot be compared. Not for a lenient pair, whose duplicate masters can write
/// one LSN twice in one generation.
pub fn rollbacks_remove_only_divergent_records(
    events: &[Observed],
    master: &SiteAddr,
    master_log: &[LogRecord],
    archived: u64,
) -> Option<Violation> {
    events.iter().enumerate().find_map(|(i, e)| {
        let NodeEvent::Site(Event::WouldRollback { to, from }) = &e.event else {
            return None;
        };
        if from.lsn <= archived {
            return None;
        }
        let synced_with = events[..i]
            .iter()
            .rev()
            .find_map(|earlier| match &earlier.event {
                NodeEvent::Site(Event::NewMaster { gen, .. }) if earlier.site == e.site => {
                    Some(*gen)
                }
                _ => None,
            })?;
        if !master_log.iter().any(|r| r.gen == synced_with) {
            return None;
        }
        let held = master_log
            .iter()
            .find(|r| r.lsn == from.lsn)
            .is_some_and(|r| r.gen == from.gen);
        held.then(|| Violation {
            invariant: "rollbacks_are_sound".into(),
            site: Some(e.site.clone()),
            at_ms: Some(e.ms),
            detail: format!(
                "gave up its log after LSN {} as divergent, but the master {master} holds its \
                 record at LSN {} of generation {}",
                to.lsn, from.lsn, from.gen
            ),
        })
    })
}

/// The counters of a site that its events also report, since the site last started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Elections it stood in (its vote for itself in a real round).
    pub elections: u64,
    /// Elections it won.
    pub elections_won: u64,
    /// Transactions it rolled back as a client.
    pub txns_rolled_back: u64,
    /// Internal initialisations it finished.
    pub inits: u64,
    /// Commits that ended `PermFailed` on it.
    pub perm_failed: u64,
}

impl Tally {
    /// What a site's statistics say.
    pub fn of_stats(stats: &replication::site::Stats) -> Tally {
        Tally {
            elections: stats.elections,
            elections_won: stats.elections_won,
            txns_rolled_back: stats.txns_rolled_back,
            inits: stats.inits,
            perm_failed: stats.perm_failed,
        }
    }

    /// What `site`'s events among `events` report.
    pub fn of_events(site: &SiteAddr, events: &[Observed]) -> Tally {
        let mut tally = Tally::default();
        for e in events.iter().filter(|e| e.site == *site) {
            let NodeEvent::Site(event) = &e.event else {
                continue;
            };
            match event {
                Event::Voted { candidate, .. } if candidate == site => tally.elections += 1,
                Event::Elected { .. } => tally.elections_won += 1,
                Event::RolledBack { txns, .. } => tally.txns_rolled_back += txns.len() as u64,
                Event::InitDone { .. } => tally.inits += 1,
                Event::PermFailed { .. } => tally.perm_failed += 1,
                _ => {}
            }
        }
        tally
    }

    fn fields(&self) -> [(&'static str, u64); 5] {
        [
            ("elections", self.elections),
            ("elections_won", self.elections_won),
            ("txns_rolled_back", self.txns_rolled_back),
            ("inits", self.inits),
            ("perm_failed", self.perm_failed),
        ]
    }
}

/// A site's statistics count what its events report. Operators read these counters (`repsite
/// status`, the metrics endpoint) to see elections, rollbacks, inits and failed commits; one that
/// drifts from what happened misleads them. The events recorded before the counters were read
/// are a lower bound, and those recorded a moment later an upper bound (an event can still be on
/// its way to the trace when the counters are read).
pub fn counters_match_events(
    site: &SiteAddr,
    counted: &Tally,
    before: &Tally,
    after: &Tally,
) -> Option<Violation> {
    let fields = counted
        .fields()
        .into_iter()
        .zip(before.fields())
        .zip(after.fields());
    for (((name, counted), (_, low)), (_, high)) in fields {
        if counted < low || counted > high {
            let reported = if low == high {
                format!("{low}")
            } else {
                format!("{low} to {high}")
            };
            return Some(Violation {
                invariant: "counters_match_events".into(),
                site: Some(site.clone()),
                at_ms: None,
                detail: format!(
                    "its statistics count {counted} {name} since it started, but its events \
                     report {reported}"
                ),
            });
        }
    }
    None
}
