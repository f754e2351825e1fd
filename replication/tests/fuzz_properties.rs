//! The fuzz targets' properties under proptest, so CI checks them on stable Rust with bounded
//! case counts (override with `PROPTEST_CASES`). The properties themselves live in
//! `replication::fuzzing` and are the very code the cargo-fuzz targets in `fuzz/` run; only the
//! inputs differ (proptest strategies here, `arbitrary` bytes there).
//!
//! The last section replays every input the fuzzers found a bug with, transcribed from
//! `cargo fuzz fmt`, so a fixed bug stays fixed.

mod common;

use proptest::collection::vec;
use proptest::prelude::*;
use replication::fuzzing::frames;
use replication::fuzzing::group::{
    self, BodySpec, GroupOp, GroupScript, MsgSpec, Mutation, RecordSpec, RequestSpec, Setup, Start,
};
use replication::fuzzing::handshake::{self, HandshakeScript, Outcome, PeerStep};
use replication::fuzzing::Num;
use replication::wire::{encode_frame, PROTOCOL_VERSION};
use replication::LogPos;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---- shared strategies ---------------------------------------------------------------------

fn num() -> impl Strategy<Value = Num> {
    prop_oneof![
        6 => (-2i8..=2).prop_map(Num::Near),
        2 => any::<i8>().prop_map(Num::Near),
        1 => prop_oneof![Just(0), Just(1), Just(u64::MAX), any::<u64>()].prop_map(Num::Any),
    ]
}

fn record_spec() -> impl Strategy<Value = RecordSpec> {
    let body = prop_oneof![
        any::<u8>().prop_map(BodySpec::GenStart),
        (any::<u8>(), any::<u8>()).prop_map(|(k, v)| BodySpec::Put(k, v)),
        any::<u8>().prop_map(BodySpec::Delete),
        (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(s, t, p)| BodySpec::Member(s, t, p)),
        any::<u8>().prop_map(BodySpec::Created),
    ];
    (num(), num(), body, prop::bool::weighted(0.9)).prop_map(|(lsn, gen, body, intact)| {
        RecordSpec {
            lsn,
            gen,
            body,
            intact,
        }
    })
}

fn pairs() -> impl Strategy<Value = Vec<(Num, Num)>> {
    vec((num(), num()), 0..4)
}

fn msg_spec() -> impl Strategy<Value = MsgSpec> {
    let p = any::<u8>;
    prop_oneof![
        (num(), num(), num(), num()).prop_map(|(gen, last_gen, last_lsn, first_lsn)| {
            MsgSpec::Heartbeat {
                gen,
                last_gen,
                last_lsn,
                first_lsn,
            }
        }),
        (num(), vec(record_spec(), 0..4)).prop_map(|(gen, records)| MsgSpec::Log { gen, records }),
        (num(), p()).prop_map(|(gen, priority)| MsgSpec::SyncRequest { gen, priority }),
        (num(), pairs(), num(), num(), num()).prop_map(
            |(gen, history, first_lsn, last_gen, last_lsn)| MsgSpec::SyncInfo {
                gen,
                history,
                first_lsn,
                last_gen,
                last_lsn,
            }
        ),
        (num(), num()).prop_map(|(gen, from)| MsgSpec::LogRequest { gen, from }),
        (num(), num(), num(), pairs(), p(), p()).prop_map(
            |(gen, at_gen, at_lsn, history, keys, members)| MsgSpec::InitSnapshot {
                gen,
                at_gen,
                at_lsn,
                history,
                keys,
                members,
            }
        ),
        (num(), num(), p()).prop_map(|(gen, lsn, priority)| MsgSpec::Ack { gen, lsn, priority }),
        (num(), num(), num(), p(), any::<bool>(), any::<bool>()).prop_map(
            |(egen, last_gen, last_lsn, priority, takeover, pre)| MsgSpec::VoteRequest {
                egen,
                last_gen,
                last_lsn,
                priority,
                takeover,
                pre,
            }
        ),
        (
            (num(), any::<bool>(), num(), num(), num()),
            (p(), prop::option::of(p()), any::<bool>(), num())
        )
            .prop_map(
                |((egen, granted, gen, last_gen, last_lsn), (priority, master, pre, term))| {
                    MsgSpec::Vote {
                        egen,
                        granted,
                        gen,
                        last_gen,
                        last_lsn,
                        priority,
                        master,
                        pre,
                        term,
                    }
                }
            ),
        num().prop_map(|gen| MsgSpec::TakeOver { gen }),
        num().prop_map(|gen| MsgSpec::StaleGeneration { gen }),
        (p(), p()).prop_map(|(site, priority)| MsgSpec::JoinRequest { site, priority }),
        (p(), any::<bool>(), p(), num()).prop_map(|(site, accepted, master, gen)| {
            MsgSpec::JoinReply {
                site,
                accepted,
                master,
                gen,
            }
        }),
        p().prop_map(|site| MsgSpec::RemoveRequest { site }),
        (p(), prop::option::of(p())).prop_map(|(site, error)| MsgSpec::RemoveReply { site, error }),
        (num(), num()).prop_map(|(gen, last)| MsgSpec::Removed { gen, last }),
        p().prop_map(MsgSpec::DriverNoise),
    ]
}

// ---- frame_decode --------------------------------------------------------------------------

/// A real frame of any message.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    (msg_spec(), any::<u64>(), any::<u64>()).prop_map(|(spec, gen, lsn)| {
        let msg = group::build(&spec, (gen % 100, LogPos::new(gen % 100, lsn % 1000)));
        encode_frame(PROTOCOL_VERSION.max(msg.min_version()), &msg)
    })
}

/// A piece of a stream: a real frame, a damaged one, a cut one, or raw bytes.
fn segment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => frame(),
        2 => (frame(), any::<prop::sample::Index>(), 1u8..=255).prop_map(|(mut f, at, x)| {
            let i = at.index(f.len());
            f[i] ^= x;
            f
        }),
        1 => (frame(), any::<prop::sample::Index>()).prop_map(|(mut f, at)| {
            f.truncate(at.index(f.len()));
            f
        }),
        1 => vec(any::<u8>(), 0..40),
    ]
}

proptest! {
    #![proptest_config(common::config(cases(128)))]

    #[test]
    fn frame_streams_decode_alike_in_any_chunks_and_re_encode(
        segments in vec(segment(), 0..6),
        chunks in vec(1usize..200, 1..8),
    ) {
        frames::check_stream(&segments.concat(), &chunks);
    }

    #[test]
    fn arbitrary_bytes_never_break_the_frame_decoder(
        bytes in vec(any::<u8>(), 0..600),
        header in prop::option::of(Just(b"RP\x02\x01".to_vec())),
    ) {
        // Raw bytes, and the same behind a valid magic, version and kind.
        let data = [header.unwrap_or_default(), bytes].concat();
        frames::check_stream(&data, &frames::chunk_plan(&data));
    }
}

// ---- handshake -----------------------------------------------------------------------------

fn peer_step() -> impl Strategy<Value = PeerStep> {
    // Mostly the values an honest peer uses, so that handshakes get far; sometimes anything.
    let frame_version = prop::option::weighted(0.1, any::<u8>());
    let v = || prop_oneof![3 => 1u8..=2, 1 => any::<u8>()];
    let choice = || prop_oneof![3 => Just(1u8), 1 => any::<u8>()];
    let hello = (
        v(),
        v(),
        choice(),
        choice(),
        any::<[u8; 16]>(),
        frame_version,
    )
        .prop_map(
            |(min_version, max_version, group, site, nonce, frame_version)| PeerStep::Hello {
                min_version,
                max_version,
                group,
                site,
                nonce,
                frame_version,
            },
        );
    prop_oneof![
        4 => hello,
        4 => Just(PeerStep::HonestProof),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(byte, bit)| PeerStep::FlippedProof { byte, bit }),
        1 => any::<[u8; 32]>().prop_map(PeerStep::GuessedProof),
        1 => Just(PeerStep::ReflectedProof),
        1 => any::<u8>().prop_map(PeerStep::Other),
        1 => vec(any::<u8>(), 0..24).prop_map(PeerStep::Raw),
    ]
}

fn handshake_script() -> impl Strategy<Value = HandshakeScript> {
    (
        (any::<u8>(), any::<u8>()),
        vec(any::<u8>(), 0..4),
        vec(peer_step(), 0..6),
    )
        .prop_map(|(ours, chunks, steps)| HandshakeScript {
            ours,
            chunks,
            steps,
        })
}

proptest! {
    #![proptest_config(common::config(cases(256)))]

    #[test]
    fn no_peer_bytes_break_the_handshake_or_pass_without_the_secret(
        script in handshake_script(),
    ) {
        handshake::check_script(&script);
    }
}

fn honest_hello(site: u8) -> PeerStep {
    PeerStep::Hello {
        min_version: 1,
        max_version: 2,
        group: 0,
        site,
        nonce: [7; 16],
        frame_version: None,
    }
}

#[test]
fn the_handshake_harness_reaches_every_ending() {
    // If the harness could not establish or refuse, its properties would hold vacuously.
    let script = |steps: Vec<PeerStep>| HandshakeScript {
        ours: (0, 1),
        chunks: vec![5],
        steps,
    };
    let honest = script(vec![honest_hello(1), PeerStep::HonestProof]);
    assert_eq!(handshake::check_script(&honest), Outcome::Established);
    let flipped = script(vec![
        honest_hello(1),
        PeerStep::FlippedProof { byte: 9, bit: 3 },
        PeerStep::HonestProof,
    ]);
    assert_eq!(handshake::check_script(&flipped), Outcome::Refused);
    let reflected = script(vec![honest_hello(1), PeerStep::ReflectedProof]);
    assert_eq!(handshake::check_script(&reflected), Outcome::Refused);
    let garbage = script(vec![PeerStep::Raw(b"GET / HTTP/1.1\r\n".to_vec())]);
    assert_eq!(handshake::check_script(&garbage), Outcome::BadFrame);
    let half = script(vec![honest_hello(1)]);
    assert_eq!(handshake::check_script(&half), Outcome::Pending);
}

#[test]
fn generated_handshake_scripts_reach_every_ending() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..512 {
        let script = handshake_script().new_tree(&mut runner).unwrap().current();
        *seen
            .entry(format!("{:?}", handshake::check_script(&script)))
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen["Established"] >= 5, "{seen:?}");
}

// ---- site_step -----------------------------------------------------------------------------

fn setup() -> impl Strategy<Value = Setup> {
    let start = prop_oneof![
        3 => any::<[bool; 3]>().prop_map(|legacy| Start::StaticList { legacy }),
        1 => Just(Start::StaticList { legacy: [false; 3] }),
        2 => any::<[u8; 2]>().prop_map(|helpers| Start::CreatorAndJoiners { helpers }),
    ];
    (
        start,
        any::<[u8; 3]>(),
        any::<u8>(),
        any::<u64>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(start, priorities, ack_policy, seed, lenient_two_site)| Setup {
                start,
                priorities,
                ack_policy,
                seed,
                lenient_two_site,
            },
        )
}

fn request_spec() -> impl Strategy<Value = RequestSpec> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(key, value)| RequestSpec::Commit { key, value }),
        1 => any::<u8>().prop_map(|to| RequestSpec::StepDown { to }),
        1 => any::<u8>().prop_map(|site| RequestSpec::RemoveSite { site }),
        1 => (0u8..6).prop_map(|keep| RequestSpec::Archive { keep }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(key, more)| RequestSpec::Commits { key, more }),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        num().prop_map(Mutation::Gen),
        num().prop_map(Mutation::Lsn),
        any::<u8>().prop_map(Mutation::CorruptRecord),
        any::<u8>().prop_map(Mutation::DropRecord),
        Just(Mutation::Reverse),
        any::<u8>().prop_map(Mutation::Sender),
    ]
}

/// Inputs that keep a group busy (time, delivery, requests, faults), plus forgeries if asked.
fn group_op(forgeries: bool) -> impl Strategy<Value = GroupOp> {
    let s = any::<u8>;
    let honest = prop_oneof![
        4 => (s(), any::<u16>()).prop_map(|(site, ms)| GroupOp::Tick { site, ms: ms % 1500 }),
        6 => s().prop_map(|site| GroupOp::Wait { site }),
        4 => s().prop_map(|pick| GroupOp::Deliver { pick }),
        3 => Just(GroupOp::DeliverAll),
        4 => Just(GroupOp::Settle),
        1 => s().prop_map(|pick| GroupOp::Drop { pick }),
        1 => s().prop_map(|pick| GroupOp::Duplicate { pick }),
        1 => (s(), s()).prop_map(|(a, b)| GroupOp::Connect { a, b }),
        1 => (s(), s()).prop_map(|(a, b)| GroupOp::Disconnect { a, b }),
        2 => (s(), request_spec()).prop_map(|(site, request)| GroupOp::Request { site, request }),
        4 => request_spec().prop_map(|request| GroupOp::RequestAtMaster { request }),
        2 => (s(), any::<bool>()).prop_map(|(site, tear)| GroupOp::Crash { site, tear }),
        1 => (s(), 0u8..4).prop_map(|(site, back)| GroupOp::Rot { site, back }),
        3 => s().prop_map(|site| GroupOp::Restart { site }),
    ];
    let forged = prop_oneof![
        3 => (s(), s(), msg_spec()).prop_map(|(to, from, msg)| GroupOp::Inject { to, from, msg }),
        2 => (s(), mutation()).prop_map(|(pick, change)| GroupOp::Mutate { pick, change }),
        1 => (s(), s(), vec(any::<u8>(), 0..40))
            .prop_map(|(to, from, bytes)| GroupOp::Raw { to, from, bytes }),
    ];
    let forged_weight = if forgeries { 1 } else { 0 };
    prop_oneof![
        4 => honest,
        forged_weight => forged,
    ]
}

fn group_script(forgeries: bool) -> impl Strategy<Value = GroupScript> {
    (setup(), vec(group_op(forgeries), 0..120)).prop_map(|(setup, ops)| GroupScript { setup, ops })
}

proptest! {
    // The mutation build (`--cfg madsim`, see MUTANTS.md) draws many more: a group script
    // costs well under a millisecond, and a mutant that only a rare input exposes (a stale
    // copy of a message arriving at the wrong moment, a forged one from the wrong site) needs
    // thousands of them.
    #![proptest_config(common::config(cases(if cfg!(madsim) { 5_000 } else { 48 })))]

    /// Forged messages included: only the local rules are checked.
    #[test]
    fn no_input_sequence_breaks_a_sites_local_rules(script in group_script(true)) {
        group::run_script(&script);
    }

    /// Nothing forged: on top, at most one master per generation.
    #[test]
    fn honest_faults_never_make_two_masters_of_a_generation(script in group_script(false)) {
        group::run_script(&script);
    }
}

#[test]
fn the_group_harness_elects_commits_and_refuses_clients() {
    // A plain run: time passes, messages flow, commits go to every site.
    let mut ops = Vec::new();
    for round in 0..40u8 {
        ops.push(GroupOp::Request {
            site: round,
            request: RequestSpec::Commit {
                key: round,
                value: 1,
            },
        });
        ops.push(GroupOp::DeliverAll);
        ops.push(GroupOp::DeliverAll);
        ops.push(GroupOp::Wait { site: round });
        ops.push(GroupOp::DeliverAll);
    }
    let script = GroupScript {
        setup: Setup {
            start: Start::StaticList { legacy: [false; 3] },
            priorities: [1, 1, 1],
            ack_policy: 6,
            seed: 1,
            lenient_two_site: false,
        },
        ops,
    };
    let summary = group::run_script(&script);
    assert!(summary.became_master >= 1, "{summary:?}");
    assert!(summary.committed >= 5, "{summary:?}");
    assert!(summary.refused_not_master >= 5, "{summary:?}");
}

// ---- regressions found by the fuzzers ------------------------------------------------------

/// site_step, first minutes: a master of generation 1 got a vote reply naming generation 135
/// (a late answer from a voter that had since followed a later master). It adopted the
/// generation and stayed master, so its next records and heartbeats would claim a generation
/// another site was elected in. A master that learns of a later generation must step down.
#[test]
fn regression_a_master_hearing_of_a_later_generation_in_a_vote_steps_down() {
    let script = GroupScript {
        setup: Setup {
            start: Start::CreatorAndJoiners {
                helpers: [239, 255],
            },
            priorities: [255, 255, 0],
            ack_policy: 0,
            seed: 8791026472629839912,
            lenient_two_site: true,
        },
        ops: vec![GroupOp::Inject {
            to: 147,
            from: 131,
            msg: MsgSpec::Vote {
                egen: Num::Any(37017891538961153),
                granted: true,
                gen: Num::Any(135),
                last_gen: Num::Near(0),
                last_lsn: Num::Near(0),
                priority: 0,
                master: None,
                pre: false,
                term: Num::Near(0),
            },
        }],
    };
    group::run_script(&script);
}

#[test]
fn the_group_harness_sees_a_rollback_of_a_tail_only_the_old_master_had() {
    // Site 1 is elected, commits, and crashes before its Log messages leave (they are lost with
    // its connections); the others elect a new master; site 1 returns and must roll back.
    let mut ops = vec![GroupOp::Wait { site: 0 }, GroupOp::Settle];
    for _ in 0..4 {
        ops.extend([GroupOp::Wait { site: 0 }, GroupOp::Settle]);
    }
    ops.push(GroupOp::RequestAtMaster {
        request: RequestSpec::Commit { key: 1, value: 1 },
    });
    ops.push(GroupOp::Crash {
        site: 0,
        tear: false,
    });
    for round in 0..12 {
        ops.extend([
            GroupOp::Wait {
                site: 1 + round % 2,
            },
            GroupOp::Settle,
        ]);
    }
    ops.push(GroupOp::Restart { site: 0 });
    for round in 0..12 {
        ops.extend([GroupOp::Wait { site: round }, GroupOp::Settle]);
    }
    let script = GroupScript {
        setup: Setup {
            start: Start::StaticList { legacy: [false; 3] },
            priorities: [2, 1, 1],
            ack_policy: 6,
            seed: 3,
            lenient_two_site: false,
        },
        ops,
    };
    let summary = group::run_script(&script);
    assert!(summary.rollbacks >= 1, "{summary:?}");
    assert!(summary.max_gen >= 2, "{summary:?}");
}

#[test]
fn generated_group_scripts_reach_elections_commits_inits_and_stops() {
    // The properties above are only as good as the states their inputs reach: sample the
    // strategy and require the interesting paths to show up.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut total = group::Summary::default();
    for forgeries in [false, true] {
        for _ in 0..160 {
            let script = group_script(forgeries)
                .new_tree(&mut runner)
                .expect("a script")
                .current();
            let s = group::run_script(&script);
            total.became_master += s.became_master;
            total.committed += s.committed;
            total.refused_not_master += s.refused_not_master;
            total.rollbacks += s.rollbacks;
            total.inits += s.inits;
            total.stopped += s.stopped;
        }
    }
    assert!(total.became_master >= 64, "{total:?}");
    assert!(total.committed >= 32, "{total:?}");
    assert!(total.refused_not_master >= 32, "{total:?}");
    assert!(total.inits >= 1, "{total:?}");
    assert!(total.stopped >= 1, "{total:?}");
}

/// Found by the proptest version of site_step: a forged vote request for election generation
/// u64::MAX was granted, and the voter's next election computed u64::MAX + 1.
#[test]
fn regression_an_election_above_generation_u64_max_does_not_overflow() {
    let script = GroupScript {
        setup: Setup {
            start: Start::StaticList {
                legacy: [false, false, false],
            },
            priorities: [13, 0, 0],
            ack_policy: 0,
            seed: 0,
            lenient_two_site: false,
        },
        ops: vec![
            GroupOp::Inject {
                to: 93,
                from: 1,
                msg: MsgSpec::VoteRequest {
                    egen: Num::Any(u64::MAX),
                    last_gen: Num::Near(0),
                    last_lsn: Num::Near(0),
                    priority: 1,
                    takeover: false,
                    pre: false,
                },
            },
            GroupOp::Wait { site: 189 },
        ],
    };
    group::run_script(&script);
}

/// Found by the proptest version of site_step: a joining site accepted a join answer that named
/// itself as master and tried to sync with itself.
#[test]
fn regression_a_join_answer_naming_the_joiner_as_master_is_ignored() {
    let script = GroupScript {
        setup: Setup {
            start: Start::CreatorAndJoiners { helpers: [105, 0] },
            priorities: [0, 0, 0],
            ack_policy: 32,
            seed: 0,
            lenient_two_site: false,
        },
        ops: vec![
            GroupOp::Tick { site: 0, ms: 0 },
            GroupOp::Inject {
                to: 0,
                from: 53,
                msg: MsgSpec::JoinReply {
                    site: 107,
                    accepted: true,
                    master: 217,
                    gen: Num::Near(0),
                },
            },
            GroupOp::Deliver { pick: 24 },
        ],
    };
    group::run_script(&script);
}

/// honest_faults, mutation build: rot reached the creator's first record while it was master;
/// another site was elected in generation 2; the creator restarted with a log cut at the damage,
/// no membership database, and created the group again in generation 2: two masters of it. A
/// creator that has known a generation never creates the group again.
#[test]
fn regression_a_creator_whose_log_rotted_does_not_create_the_group_again() {
    let ops = vec![
        GroupOp::Settle,
        GroupOp::Rot { site: 15, back: 2 },
        GroupOp::Tick { site: 0, ms: 350 },
        GroupOp::Tick { site: 0, ms: 100 },
        GroupOp::Wait { site: 53 },
        GroupOp::Settle,
        GroupOp::Tick { site: 16, ms: 400 },
        GroupOp::Tick { site: 79, ms: 16 },
        GroupOp::Crash {
            site: 15,
            tear: false,
        },
        GroupOp::Tick { site: 232, ms: 400 },
        GroupOp::Wait { site: 235 },
        GroupOp::Settle,
        GroupOp::Restart { site: 15 },
    ];
    let script = GroupScript {
        setup: Setup {
            start: Start::CreatorAndJoiners { helpers: [0, 166] },
            priorities: [82, 67, 0],
            ack_policy: 0,
            seed: 0,
            lenient_two_site: false,
        },
        ops,
    };
    let summary = group::run_script(&script);
    assert!(
        summary.became_master >= 2,
        "the failover happened: {summary:?}"
    );
}

/// Found with fresh random cases: a single-site master that a forged heartbeat of a later
/// generation turned client lost that master at its next tick, stood at once and, alone in its
/// group, won at the tick after, leaving its first heartbeat due at the same millisecond. The
/// engine's own check that ticks make progress took the new master's deadline for the old
/// client's and stopped the site.
#[test]
fn regression_a_deadline_left_due_in_another_role_is_progress() {
    use replication::fuzzing::group::*;
    let script = GroupScript {
        setup: Setup {
            start: Start::CreatorAndJoiners { helpers: [0, 0] },
            priorities: [130, 0, 0],
            ack_policy: 0,
            seed: 17596283226353528480,
            lenient_two_site: false,
        },
        ops: vec![
            GroupOp::Inject {
                to: 45,
                from: 56,
                msg: MsgSpec::Heartbeat {
                    gen: Num::Near(1),
                    last_gen: Num::Near(0),
                    last_lsn: Num::Near(0),
                    first_lsn: Num::Near(0),
                },
            },
            GroupOp::Tick { site: 180, ms: 400 },
            GroupOp::Wait { site: 15 },
        ],
    };
    run_script(&script);
}

/// Found with fresh random cases: the creator's synced records rotted (the records that
/// admitted the others among them), it crashed, and on restart its log, cut at the damage,
/// showed a group of one. It counted its own vote a majority and became master of a
/// generation the others had already given a master. Its metadata now marks the last change
/// of who votes it held durably, and a log that opens below the mark neither stands nor votes
/// below it until a master has mended it.
#[test]
fn regression_a_site_whose_synced_admissions_rotted_does_not_elect_itself_alone() {
    let ops = vec![
        GroupOp::Settle,
        GroupOp::Wait { site: 0 },
        GroupOp::Rot { site: 33, back: 0 },
        GroupOp::Tick { site: 134, ms: 56 },
        GroupOp::Tick { site: 78, ms: 294 },
        GroupOp::Tick { site: 0, ms: 0 },
        GroupOp::Wait { site: 130 },
        GroupOp::Tick { site: 0, ms: 0 },
        GroupOp::Request {
            site: 0,
            request: RequestSpec::Commit { key: 0, value: 0 },
        },
        GroupOp::Settle,
        GroupOp::Tick { site: 1, ms: 150 },
        GroupOp::Tick { site: 0, ms: 0 },
        GroupOp::Tick { site: 0, ms: 131 },
        GroupOp::Rot { site: 0, back: 0 },
        GroupOp::Crash {
            site: 222,
            tear: false,
        },
        GroupOp::Wait { site: 29 },
        GroupOp::Settle,
        GroupOp::Restart { site: 198 },
        GroupOp::Wait { site: 144 },
    ];
    let script = GroupScript {
        setup: Setup {
            start: Start::CreatorAndJoiners { helpers: [77, 0] },
            priorities: [4, 0, 13],
            ack_policy: 0,
            seed: 0,
            lenient_two_site: false,
        },
        ops,
    };
    let summary = group::run_script(&script);
    assert!(
        summary.became_master >= 2,
        "the failover happened: {summary:?}"
    );
}

/// Found by rule 8 (a rollback never takes a record the master holds) with fresh random cases:
/// a client asked its master for its history three times (retries), streamed records up to
/// LSN 3 and acknowledged them, lost the master for a heartbeat timeout and heard it again,
/// and then the oldest answer arrived late, saying the master's log ended at LSN 2. The client
/// rolled back the record it had acknowledged. A client now takes a history ending below its
/// own records of the master's generation for what it is: an old answer.
#[test]
fn regression_a_late_history_answer_does_not_roll_back_acknowledged_records() {
    let ops = vec![
        GroupOp::Crash {
            site: 53,
            tear: false,
        },
        GroupOp::Tick { site: 87, ms: 401 },
        GroupOp::Deliver { pick: 74 },
        GroupOp::Deliver { pick: 1 },
        GroupOp::Settle,
        GroupOp::Request {
            site: 63,
            request: RequestSpec::Commit { key: 0, value: 0 },
        },
        GroupOp::Deliver { pick: 43 },
        GroupOp::Restart { site: 137 },
        GroupOp::Deliver { pick: 0 },
        GroupOp::Deliver { pick: 104 },
        GroupOp::Wait { site: 80 },
        GroupOp::Tick { site: 43, ms: 250 },
        GroupOp::Wait { site: 120 },
        GroupOp::DeliverAll,
        GroupOp::Wait { site: 1 },
        GroupOp::Wait { site: 17 },
        GroupOp::Deliver { pick: 64 },
        GroupOp::RequestAtMaster {
            request: RequestSpec::Commit { key: 0, value: 0 },
        },
        GroupOp::Wait { site: 1 },
        GroupOp::Deliver { pick: 84 },
        GroupOp::Deliver { pick: 116 },
        GroupOp::Deliver { pick: 26 },
        GroupOp::RequestAtMaster {
            request: RequestSpec::Commit { key: 0, value: 0 },
        },
        GroupOp::Wait { site: 113 },
        GroupOp::Tick { site: 24, ms: 0 },
        GroupOp::Tick { site: 9, ms: 100 },
        GroupOp::Deliver { pick: 72 },
        GroupOp::DeliverAll,
    ];
    let script = GroupScript {
        setup: Setup {
            start: Start::StaticList {
                legacy: [false, false, true],
            },
            priorities: [31, 144, 0],
            ack_policy: 0,
            seed: 0,
            lenient_two_site: false,
        },
        ops,
    };
    let summary = group::run_script(&script);
    assert_eq!(
        summary.became_master, 1,
        "one master throughout: {summary:?}"
    );
}

/// Found by rule 9 (a tick before the deadline does nothing): in a lenient pair, a candidate
/// whose partner's connection broke waited for its round's deadline to win alone, and an early
/// tick won it. It now judges the round when a connection breaks.
#[test]
fn regression_a_lenient_pairs_candidate_wins_when_its_partner_goes_not_on_a_later_tick() {
    let script = GroupScript {
        setup: Setup {
            start: Start::CreatorAndJoiners { helpers: [0, 76] },
            priorities: [1, 133, 0],
            ack_policy: 0,
            seed: 0,
            lenient_two_site: true,
        },
        ops: vec![
            GroupOp::Settle,
            GroupOp::Tick { site: 7, ms: 400 },
            GroupOp::Tick { site: 91, ms: 16 },
            GroupOp::Crash {
                site: 78,
                tear: false,
            },
            GroupOp::Tick { site: 136, ms: 0 },
        ],
    };
    let summary = group::run_script(&script);
    assert_eq!(
        summary.became_master, 2,
        "the creator, then its partner: {summary:?}"
    );
}

/// Found by the engine's own check that a client follows no master below its term: a client
/// that refused a real vote request, because its log had moved past the candidate's, raised its
/// term to the candidate's election while still following a live master, then refused that
/// master's next heartbeat as stale (an ack to a master below its term could count towards a
/// commit a later master lacks). It now raises its term only when it has no master to follow.
#[test]
fn regression_a_client_that_outranks_a_candidate_raises_no_term_under_a_live_master() {
    let script = GroupScript {
        setup: Setup {
            start: Start::CreatorAndJoiners { helpers: [0, 0] },
            priorities: [11, 49, 31],
            ack_policy: 0,
            seed: 0,
            lenient_two_site: false,
        },
        ops: vec![
            GroupOp::Tick { site: 0, ms: 300 },
            GroupOp::Settle,
            GroupOp::Tick { site: 131, ms: 0 },
            GroupOp::Wait { site: 80 },
            GroupOp::Tick { site: 68, ms: 0 },
            GroupOp::Settle,
            GroupOp::RequestAtMaster {
                request: RequestSpec::StepDown { to: 147 },
            },
            GroupOp::Settle,
            GroupOp::Tick { site: 3, ms: 400 },
            GroupOp::Tick { site: 45, ms: 1 },
            GroupOp::RequestAtMaster {
                request: RequestSpec::Commit { key: 0, value: 0 },
            },
            GroupOp::Settle,
        ],
    };
    // The site's own check (`check_invariants`) panics at the step that breaks the rule.
    let summary = group::run_script(&script);
    // The script reached the handover it is about.
    assert_eq!(summary.became_master, 2, "{summary:?}");
}

/// Found by the engine's own check that a client follows no master below its term: a join
/// accepted (here by a forged answer) in a generation below one the joiner had voted or stood
/// in had it follow that master. It now tells the master its generation is stale and keeps
/// asking to join.
#[test]
fn regression_a_join_accepted_below_the_joiners_term_is_not_followed() {
    let script = GroupScript {
        setup: Setup {
            start: Start::CreatorAndJoiners {
                helpers: [252, 165],
            },
            priorities: [32, 87, 50],
            ack_policy: 186,
            seed: 7852547155011826169,
            lenient_two_site: false,
        },
        ops: vec![
            GroupOp::Tick { site: 11, ms: 364 },
            GroupOp::Inject {
                to: 79,
                from: 18,
                msg: MsgSpec::JoinReply {
                    site: 79,
                    accepted: true,
                    master: 239,
                    gen: Num::Near(-2),
                },
            },
            GroupOp::DeliverAll,
            GroupOp::Crash {
                site: 74,
                tear: true,
            },
            GroupOp::Restart { site: 30 },
            GroupOp::Inject {
                to: 43,
                from: 63,
                msg: MsgSpec::Heartbeat {
                    gen: Num::Near(2),
                    last_gen: Num::Near(8),
                    last_lsn: Num::Near(-1),
                    first_lsn: Num::Near(0),
                },
            },
            GroupOp::Wait { site: 215 },
            GroupOp::Tick { site: 114, ms: 555 },
            GroupOp::Wait { site: 228 },
            GroupOp::Settle,
            GroupOp::Request {
                site: 225,
                request: RequestSpec::Commit {
                    key: 145,
                    value: 147,
                },
            },
            GroupOp::Restart { site: 231 },
            GroupOp::Mutate {
                pick: 185,
                change: Mutation::CorruptRecord(29),
            },
            GroupOp::DeliverAll,
            GroupOp::Settle,
        ],
    };
    // The site's own check (`check_invariants`) panics at the step that breaks the rule.
    let summary = group::run_script(&script);
    assert!(summary.became_master >= 1, "{summary:?}");
}

/// Found by rule 21 (a site that stops answers what it was asked): an archive on a master whose
/// oldest record had rotted failed on reading it, and the site stopped; what it was waiting on
/// was answered, but the archive request itself, which had no waiter yet, never was.
#[test]
fn regression_a_request_that_meets_a_storage_failure_is_answered() {
    let script = GroupScript {
        setup: Setup {
            start: Start::CreatorAndJoiners { helpers: [0, 0] },
            priorities: [1, 0, 0],
            ack_policy: 0,
            seed: 0,
            lenient_two_site: false,
        },
        ops: vec![
            GroupOp::Tick { site: 0, ms: 0 },
            GroupOp::Tick { site: 0, ms: 0 },
            GroupOp::Rot { site: 180, back: 1 },
            GroupOp::Request {
                site: 24,
                request: RequestSpec::Commit { key: 0, value: 0 },
            },
            GroupOp::RequestAtMaster {
                request: RequestSpec::Commit { key: 0, value: 0 },
            },
            GroupOp::RequestAtMaster {
                request: RequestSpec::Archive { keep: 0 },
            },
        ],
    };
    group::run_script(&script);
}
