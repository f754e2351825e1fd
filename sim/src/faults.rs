//! Fault schedules as data: a list of timed fault events that can be generated from a seed,
//! printed, saved, loaded and replayed exactly (and, later, shrunk by dropping events).
//!
//! Generation draws everything from a ChaCha stream seeded by the caller, so the same seed and
//! mix always give the same schedule, on any machine.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One fault. Sites are named by their index in the world (0-based), so a schedule is
/// independent of addresses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Kill a site; its disk loses what was not synced.
    Crash {
        /// The site.
        site: usize,
    },
    /// Kill a site and tear the write it was doing (left on disk, failing its checksum).
    TornCrash {
        /// The site.
        site: usize,
    },
    /// Damage the last record on a site's disk (bit rot): it must be detected, never served.
    CorruptDisk {
        /// The site.
        site: usize,
    },
    /// The site's machine loses power in the middle of its disk operations: the `after_ops`th
    /// next filesystem operation and every later one fail, the node stops on the error, and the
    /// operator restarts it on what the crash left. Only a file disk has operations to cut; on
    /// the memory disk it does nothing.
    PowerCut {
        /// The site.
        site: usize,
        /// Filesystem operations that still complete before the power fails.
        after_ops: u64,
    },
    /// Freeze a site's machine: its tasks and timers stop, its connections stay open.
    Pause {
        /// The site.
        site: usize,
    },
    /// Let a frozen site run again.
    Resume {
        /// The site.
        site: usize,
    },
    /// Cut one direction of one link: `to` stops hearing `from`.
    Clog {
        /// The sender cut off.
        from: usize,
        /// The receiver.
        to: usize,
    },
    /// Cut both directions of every link between a site of `a` and a site of `b`, and no other:
    /// with one site on each side a non-transitive partition (both still reach the rest), with
    /// sites left out a bridge between the two sides.
    Cut {
        /// One side.
        a: Vec<usize>,
        /// The other.
        b: Vec<usize>,
    },
    /// Repair both directions of every link between `a` and `b` (a flapping link comes back).
    Mend {
        /// One side.
        a: Vec<usize>,
        /// The other.
        b: Vec<usize>,
    },
    /// An operator asks the master to hand mastership to `to` (a planned switchover).
    Switchover {
        /// The site to become master.
        to: usize,
    },
    /// An operator asks the master to archive its log down to its last `keep` records: a
    /// client further behind is then initialised from the snapshot.
    Archive {
        /// Records the log keeps.
        keep: u64,
    },
    /// An operator asks `via` to remove `site` from the group (a client forwards to the master).
    Remove {
        /// The site to remove.
        site: usize,
        /// The site asked.
        via: usize,
    },
    /// Arm a crash of `site` for the next moment it reaches: it is killed in that instant (its
    /// disk losing what was not synced) and the operator restarts it.
    CrashAt {
        /// The site; none for the first site to reach the moment.
        #[serde(default)]
        site: Option<usize>,
        /// When.
        moment: Moment,
    },
    /// The operator restarts `site` (a process restart: the disk keeps what it holds) with
    /// another helper. A site already a member ignores its helper; one still joining asks the
    /// new one. The group's creator is left alone.
    Rejoin {
        /// The site.
        site: usize,
        /// The new helper.
        helper: usize,
    },
    /// The operator upgrades `site` to protocol version 2: stop, new version, start (a site
    /// already on version 2 is left alone).
    Upgrade {
        /// The site.
        site: usize,
    },
    /// Restart a crashed site from its disk.
    Restart {
        /// The site.
        site: usize,
    },
    /// Cut every link between the sites in `side` and the others.
    Partition {
        /// One side; the other is everyone else.
        side: Vec<usize>,
    },
    /// Repair every link.
    Heal,
    /// Set message loss and delay on every link.
    Network {
        /// Chance a packet is lost, in per mille.
        loss_per_mille: u32,
        /// Smallest delay.
        latency_min_ms: u64,
        /// Largest delay (reordering when above the smallest).
        latency_max_ms: u64,
    },
    /// Duplicate and reorder messages on every connection (at the frame layer: see
    /// `replication::node::LinkChaos`).
    Shuffle {
        /// Chance a frame is sent twice, in per mille.
        duplicate_per_mille: u32,
        /// Chance a frame is held back and sent after the next one, in per mille.
        reorder_per_mille: u32,
        /// Chance a frame is dropped with its connection up (a sender's full queue), in per
        /// mille.
        #[serde(default)]
        drop_per_mille: u32,
    },
    /// Make a site's clock run fast or slow.
    Drift {
        /// The site.
        site: usize,
        /// Rate error in parts per million.
        drift_ppm: i64,
    },
    /// Offset a site's clock.
    Skew {
        /// The site.
        site: usize,
        /// Offset in milliseconds.
        skew_ms: i64,
    },
}

/// A moment in the engine's work that an aimed crash waits for (see [`Fault::CrashAt`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Moment {
    /// The site has just cast a vote (a voter, or a candidate standing): the election is
    /// under way.
    Vote,
    /// The site has just recorded a site's admission: on the master, the join is waiting for
    /// its acknowledgements; on a joiner, it has not caught up yet.
    Join,
    /// The site has just been initialised from the master's snapshot and not yet caught up with
    /// the log after it.
    Init,
    /// The site has just recorded the start of a site's removal (the `Removing` entry): on the
    /// master, the removal is waiting for its acknowledgements, and only a later master can
    /// finish it; on a client, the removal has not finished.
    Removal,
}

impl Moment {
    /// Every moment, in the order a schedule draws them.
    pub const ALL: [Moment; 4] = [Moment::Vote, Moment::Join, Moment::Init, Moment::Removal];

    /// How a trace or a coverage table names it.
    pub fn name(self) -> &'static str {
        match self {
            Moment::Vote => "an election",
            Moment::Join => "a join",
            Moment::Init => "an internal initialisation",
            Moment::Removal => "a removal",
        }
    }
}

/// A fault at a simulated time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// Simulated milliseconds from the start of the run.
    pub at_ms: u64,
    /// The fault.
    #[serde(flatten)]
    pub fault: Fault,
}

/// A fault schedule: events in time order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The events, sorted by time.
    pub events: Vec<FaultEvent>,
}

/// Which faults a generated schedule draws, with relative weights (0 disables one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultMix {
    /// Crash a running site (it is restarted later).
    pub crash: u32,
    /// Partition the group in two.
    pub partition: u32,
    /// Message loss and delay.
    pub network: u32,
    /// Clock skew.
    pub skew: u32,
    /// Torn writes at a crash, and corrupted records.
    #[serde(default)]
    pub disk: u32,
    /// Power failures in the middle of a disk operation (file storage only).
    #[serde(default)]
    pub power: u32,
    /// Frozen machines (long pauses).
    #[serde(default)]
    pub pause: u32,
    /// Single links cut: one way, both ways between two sites (a non-transitive partition),
    /// two sides bridged by a site that reaches both, and links that flap.
    #[serde(default)]
    pub links: u32,
    /// Planned switchovers asked of the master (an operation rather than a fault).
    #[serde(default)]
    pub switchover: u32,
    /// Log archiving asked of the master, forcing internal initialisation of clients behind it.
    #[serde(default)]
    pub archive: u32,
    /// Removals of a site from the group (membership database groups).
    #[serde(default)]
    pub remove: u32,
    /// Messages duplicated and reordered.
    #[serde(default)]
    pub shuffle: u32,
    /// Crashes aimed at the middle of an election, a join or an internal initialisation.
    #[serde(default)]
    pub aimed: u32,
    /// Restarts of a site with a changed helper.
    #[serde(default)]
    pub rejoin: u32,
    /// Upgrades of a site to protocol version 2.
    #[serde(default)]
    pub upgrade: u32,
}

impl FaultMix {
    /// Every weight 0: nothing happens (a base to build a mix on).
    pub const NONE: FaultMix = FaultMix {
        crash: 0,
        partition: 0,
        network: 0,
        skew: 0,
        disk: 0,
        power: 0,
        pause: 0,
        links: 0,
        switchover: 0,
        archive: 0,
        remove: 0,
        shuffle: 0,
        aimed: 0,
        rejoin: 0,
        upgrade: 0,
    };

    /// The sum of the weights.
    pub fn total(&self) -> u32 {
        self.crash
            + self.partition
            + self.network
            + self.skew
            + self.disk
            + self.power
            + self.pause
            + self.links
            + self.switchover
            + self.archive
            + self.remove
            + self.shuffle
            + self.aimed
            + self.rejoin
            + self.upgrade
    }
}

impl Default for FaultMix {
    fn default() -> Self {
        FaultMix {
            crash: 3,
            partition: 3,
            network: 2,
            skew: 1,
            disk: 1,
            ..FaultMix::NONE
        }
    }
}

/// The kinds of fault a mix weighs.
#[derive(Clone, Copy)]
enum Kind {
    Crash,
    Partition,
    Network,
    Skew,
    Disk,
    Power,
    Pause,
    Links,
    Switchover,
    Archive,
    Remove,
    Shuffle,
    Aimed,
    Rejoin,
    Upgrade,
}

/// The kind whose share of the mix's total weight holds `pick` (0 <= pick < total).
fn pick_kind(mix: &FaultMix, mut pick: u32) -> Kind {
    for (weight, kind) in [
        (mix.crash, Kind::Crash),
        (mix.partition, Kind::Partition),
        (mix.network, Kind::Network),
        (mix.skew, Kind::Skew),
        (mix.disk, Kind::Disk),
        (mix.power, Kind::Power),
        (mix.pause, Kind::Pause),
        (mix.links, Kind::Links),
        (mix.switchover, Kind::Switchover),
        (mix.archive, Kind::Archive),
        (mix.remove, Kind::Remove),
        (mix.shuffle, Kind::Shuffle),
        (mix.aimed, Kind::Aimed),
        (mix.rejoin, Kind::Rejoin),
        (mix.upgrade, Kind::Upgrade),
    ] {
        if pick < weight {
            return kind;
        }
        pick -= weight;
    }
    unreachable!("pick is below the mix's total weight")
}

impl Schedule {
    /// Draws a schedule for `sites` sites over `duration_ms`: faults start after a quiet first
    /// second and every fault is repaired by `duration_ms` (all sites restarted, links healed,
    /// the network clean), so the run can end with a liveness check.
    pub fn generate(seed: u64, sites: usize, duration_ms: u64, mix: &FaultMix) -> Schedule {
        assert!(sites > 0, "a schedule needs sites");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut events = Vec::new();
        let mut down = vec![false; sites];
        let total = mix.total();
        let mut paused = vec![false; sites];
        let mut shuffled = false;
        let mut at = 1_000;
        while total > 0 && at < duration_ms {
            let kind = pick_kind(mix, (rng.next_u64() % u64::from(total)) as u32);
            let fault = match kind {
                Kind::Crash => {
                    let site = (rng.next_u64() % sites as u64) as usize;
                    down[site] = !down[site];
                    if down[site] {
                        Fault::Crash { site }
                    } else {
                        Fault::Restart { site }
                    }
                }
                Kind::Partition if rng.next_u64() % 3 == 0 => Fault::Heal,
                Kind::Partition => {
                    let side = (0..sites).filter(|_| rng.next_u64() % 2 == 0).collect();
                    Fault::Partition { side }
                }
                Kind::Network => {
                    let min = rng.next_u64() % 20;
                    Fault::Network {
                        loss_per_mille: (rng.next_u64() % 200) as u32,
                        latency_min_ms: min,
                        latency_max_ms: min + rng.next_u64() % 50,
                    }
                }
                Kind::Skew if rng.next_u64() % 2 == 0 => Fault::Drift {
                    site: (rng.next_u64() % sites as u64) as usize,
                    drift_ppm: (rng.next_u64() % 200_001) as i64 - 100_000,
                },
                Kind::Skew => Fault::Skew {
                    site: (rng.next_u64() % sites as u64) as usize,
                    skew_ms: (rng.next_u64() % 2_001) as i64 - 1_000,
                },
                Kind::Disk => {
                    let site = (rng.next_u64() % sites as u64) as usize;
                    if down[site] || rng.next_u64() % 2 == 0 {
                        Fault::CorruptDisk { site }
                    } else {
                        down[site] = true;
                        Fault::TornCrash { site }
                    }
                }
                Kind::Power => Fault::PowerCut {
                    site: (rng.next_u64() % sites as u64) as usize,
                    // Small: a sync is a few operations, and the cut should land inside one.
                    after_ops: rng.next_u64() % 8,
                },
                Kind::Switchover => Fault::Switchover {
                    to: (rng.next_u64() % sites as u64) as usize,
                },
                Kind::Archive => Fault::Archive {
                    keep: rng.next_u64() % 20,
                },
                Kind::Remove => Fault::Remove {
                    site: (rng.next_u64() % sites as u64) as usize,
                    via: (rng.next_u64() % sites as u64) as usize,
                },
                Kind::Aimed => {
                    let site = (rng.next_u64() % sites as u64) as usize;
                    match Moment::ALL[(rng.next_u64() % Moment::ALL.len() as u64) as usize] {
                        // Few sites are ever initialised, and few removals made: the crash
                        // waits for whichever site gets there first (for a removal, the master
                        // that records it).
                        moment @ (Moment::Init | Moment::Removal) => {
                            Fault::CrashAt { site: None, moment }
                        }
                        moment => Fault::CrashAt {
                            site: Some(site),
                            moment,
                        },
                    }
                }
                Kind::Rejoin => Fault::Rejoin {
                    site: (rng.next_u64() % sites as u64) as usize,
                    helper: (rng.next_u64() % sites as u64) as usize,
                },
                Kind::Upgrade => Fault::Upgrade {
                    site: (rng.next_u64() % sites as u64) as usize,
                },
                Kind::Shuffle => {
                    shuffled = true;
                    Fault::Shuffle {
                        duplicate_per_mille: (rng.next_u64() % 100) as u32,
                        reorder_per_mille: (rng.next_u64() % 100) as u32,
                        drop_per_mille: (rng.next_u64() % 30) as u32,
                    }
                }
                Kind::Pause => {
                    let site = (rng.next_u64() % sites as u64) as usize;
                    paused[site] = !paused[site];
                    if paused[site] {
                        Fault::Pause { site }
                    } else {
                        Fault::Resume { site }
                    }
                }
                Kind::Links => {
                    let mut two = || {
                        let x = (rng.next_u64() % sites as u64) as usize;
                        let y =
                            (x + 1 + (rng.next_u64() % (sites as u64 - 1).max(1)) as usize) % sites;
                        (x, y)
                    };
                    let (x, y) = two();
                    match rng.next_u64() % 4 {
                        _ if x == y => Fault::Heal, // a group of one has no link to cut
                        0 => Fault::Clog { from: x, to: y },
                        1 => Fault::Cut {
                            a: vec![x],
                            b: vec![y],
                        },
                        2 => {
                            // Two sides and a bridge: x reaches both, nobody else crosses.
                            let (mut a, mut b) = (Vec::new(), Vec::new());
                            for s in (0..sites).filter(|&s| s != x) {
                                if rng.next_u64() % 2 == 0 {
                                    a.push(s);
                                } else {
                                    b.push(s);
                                }
                            }
                            Fault::Cut { a, b }
                        }
                        _ => {
                            // A flapping link: cut now, back within a few hundred ms.
                            events.push(FaultEvent {
                                at_ms: at,
                                fault: Fault::Cut {
                                    a: vec![x],
                                    b: vec![y],
                                },
                            });
                            at = (at + 50 + rng.next_u64() % 250).min(duration_ms);
                            Fault::Mend {
                                a: vec![x],
                                b: vec![y],
                            }
                        }
                    }
                }
            };
            events.push(FaultEvent { at_ms: at, fault });
            at += 200 + rng.next_u64() % 2_000;
        }
        // Repair everything at the end.
        let end = duration_ms;
        events.push(FaultEvent {
            at_ms: end,
            fault: Fault::Heal,
        });
        events.push(FaultEvent {
            at_ms: end,
            fault: Fault::Network {
                loss_per_mille: 0,
                latency_min_ms: 1,
                latency_max_ms: 10,
            },
        });
        // (Only when drawn: a mix without shuffling keeps the schedules it always had.)
        if shuffled {
            events.push(FaultEvent {
                at_ms: end,
                fault: Fault::Shuffle {
                    duplicate_per_mille: 0,
                    reorder_per_mille: 0,
                    drop_per_mille: 0,
                },
            });
        }
        for (site, &is_down) in down.iter().enumerate() {
            if is_down {
                events.push(FaultEvent {
                    at_ms: end,
                    fault: Fault::Restart { site },
                });
            }
        }
        for (site, &is_paused) in paused.iter().enumerate() {
            if is_paused {
                events.push(FaultEvent {
                    at_ms: end,
                    fault: Fault::Resume { site },
                });
            }
        }
        Schedule { events }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.events {
            let what = match &e.fault {
                Fault::Crash { site } => format!("crash site {site}"),
                Fault::TornCrash { site } => format!("crash site {site}, tearing its last write"),
                Fault::CorruptDisk { site } => format!("corrupt the last record on site {site}'s disk"),
                Fault::PowerCut { site, after_ops } => {
                    format!("site {site} loses power after {after_ops} more disk operations")
                }
                Fault::Switchover { to } => format!("ask the master to switch over to site {to}"),
                Fault::Archive { keep } => {
                    format!("ask the master to archive its log down to {keep} records")
                }
                Fault::Remove { site, via } => format!("ask site {via} to remove site {site}"),
                Fault::Pause { site } => format!("pause site {site}"),
                Fault::Resume { site } => format!("resume site {site}"),
                Fault::Clog { from, to } => format!("cut the link from site {from} to site {to}"),
                Fault::Cut { a, b } => format!("cut every link between {a:?} and {b:?}"),
                Fault::Mend { a, b } => format!("mend every link between {a:?} and {b:?}"),
                Fault::Restart { site } => format!("restart site {site}"),
                Fault::CrashAt {
                    site: Some(site),
                    moment,
                } => format!("crash site {site} in the middle of {}", moment.name()),
                Fault::CrashAt {
                    site: None,
                    moment,
                } => format!("crash the first site in the middle of {}", moment.name()),
                Fault::Rejoin { site, helper } => {
                    format!("restart site {site} with site {helper} as its helper")
                }
                Fault::Upgrade { site } => format!("upgrade site {site} to protocol version 2"),
                Fault::Partition { side } => format!("partition {side:?} from the rest"),
                Fault::Heal => "heal".into(),
                Fault::Network {
                    loss_per_mille,
                    latency_min_ms,
                    latency_max_ms,
                } => format!("network loss {loss_per_mille}/1000, latency {latency_min_ms}..{latency_max_ms} ms"),
                Fault::Skew { site, skew_ms } => format!("skew site {site} by {skew_ms} ms"),
                Fault::Shuffle {
                    duplicate_per_mille,
                    reorder_per_mille,
                    drop_per_mille,
                } => format!(
                    "duplicate {duplicate_per_mille}/1000, reorder {reorder_per_mille}/1000 \
                     and drop {drop_per_mille}/1000 messages"
                ),
                Fault::Drift { site, drift_ppm } => {
                    format!("drift site {site}'s clock by {drift_ppm} ppm")
                }
            };
            writeln!(f, "{:>8} ms  {what}", e.at_ms)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let mix = FaultMix::default();
        let a = Schedule::generate(7, 5, 30_000, &mix);
        assert_eq!(a, Schedule::generate(7, 5, 30_000, &mix));
        assert_ne!(a, Schedule::generate(8, 5, 30_000, &mix));
        assert!(a.events.len() > 5, "{a}");
    }

    #[test]
    fn a_schedule_ends_with_everything_repaired() {
        let s = Schedule::generate(3, 3, 20_000, &FaultMix::default());
        let mut down = [false; 3];
        for e in &s.events {
            match e.fault {
                Fault::Crash { site } | Fault::TornCrash { site } => down[site] = true,
                Fault::Restart { site } => down[site] = false,
                _ => {}
            }
        }
        assert_eq!(down, [false; 3]);
        assert!(s.events.iter().rev().any(|e| e.fault == Fault::Heal));
        assert!(s.events.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }

    #[test]
    fn a_schedule_round_trips_through_json_exactly() {
        let s = Schedule::generate(11, 5, 20_000, &FaultMix::default());
        let text = serde_json::to_string_pretty(&s).unwrap();
        let back: Schedule = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }
}
