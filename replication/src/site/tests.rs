//! Behaviour of one site and small groups, on the in-memory network of [`crate::testkit`].
//! Each test names the rule it protects.

use super::*;
use crate::log::{MemberState, RecordBody, Txn};
use crate::storage::MemStorage;
use crate::testkit::Network;
use crate::types::Gen;

fn s(i: usize) -> SiteAddr {
    Network::addr(i)
}

fn group(n: usize, seed: u64) -> Network {
    Network::new(n, seed, |_, _| {})
}

fn elected(net: &mut Network) -> SiteAddr {
    assert!(net.settle(10_000), "no stable master within 10s");
    net.master().expect("master")
}

fn committed(net: &Network, id: RequestId) -> bool {
    matches!(net.result(id), Some(Ok(Reply::Committed { .. })))
}

fn others(net: &Network, not: &SiteAddr) -> Vec<SiteAddr> {
    net.addrs().into_iter().filter(|a| a != not).collect()
}

#[test]
fn a_group_elects_exactly_one_master_and_the_others_follow_it() {
    for seed in 0..10 {
        let mut net = group(3, seed);
        let master = elected(&mut net);
        for addr in net.addrs() {
            let site = net.site(&addr).unwrap();
            assert_eq!(site.master(), Some(&master), "seed {seed}");
        }
        assert!(net.violations().is_empty(), "{:?}", net.violations());
        assert!(net
            .events_of(&master)
            .iter()
            .any(|e| matches!(e, Event::Elected { votes, needed: 2, .. } if *votes >= 2)));
    }
}

#[test]
fn a_single_site_group_elects_itself() {
    let mut net = group(1, 1);
    assert_eq!(elected(&mut net), s(1));
}

#[test]
fn commits_replicate_and_every_database_is_the_replay_of_its_log() {
    let mut net = group(3, 2);
    let master = elected(&mut net);
    let id = net.commit(&master, Txn::put("k", "v"));
    net.run_for(100);
    assert!(committed(&net, id));
    assert!(net.settle(2_000));
    for addr in net.addrs() {
        assert_eq!(
            net.site(&addr).unwrap().get(b"k"),
            Some(&b"v"[..]),
            "{addr}"
        );
    }
    assert_eq!(net.check_quiescent_invariants(), Vec::<String>::new());
}

#[test]
fn a_master_ships_a_commit_before_its_own_sync_and_answers_only_once_both_are_done() {
    let mut net = group(3, 21);
    let master = elected(&mut net);
    net.run_for(500);
    let clients = others(&net, &master);
    let now = net.now();
    let site = net.site_mut(&master).unwrap();
    let syncs_before = site.storage_ref().syncs();
    let id = RequestId(9_000);
    let request = Request::Commit(Txn::put("k", "v"));
    let out = site.step(now, Input::Request { id, request });
    let shipped: Vec<&SiteAddr> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                msg: Message::Log { .. },
            } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(shipped.len(), 2, "shipped to both clients: {out:?}");
    assert!(site.needs_sync());
    assert_eq!(site.storage_ref().syncs(), syncs_before, "not synced yet");
    let (gen, lsn) = (site.gen(), site.last().lsn);
    let replied = |out: &[Output]| out.iter().any(|o| matches!(o, Output::Reply { .. }));
    // Both clients acknowledge before the master's own sync is done: not answered yet.
    for client in &clients {
        let msg = Message::Ack {
            gen,
            lsn,
            priority: 100,
        };
        let out = site.step(
            now,
            Input::Message {
                from: client.clone(),
                msg,
            },
        );
        assert!(
            !replied(&out),
            "answered on its clients' copies alone: {out:?}"
        );
    }
    let out = site.sync_deferred_appends(now);
    assert_eq!(site.storage_ref().syncs(), syncs_before + 1);
    assert!(!site.needs_sync());
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Reply { id: i, result: Ok(Reply::Committed { lsn: l }) } if *i == id && *l == lsn
        )),
        "answered once synced: {out:?}"
    );
}

/// Unlike a commit, a change of who counts is durable on the master before any client hears
/// of it. (Found by the swarm, `random-faults` seeds 6654 and 9321: a master that crashed
/// between shipping a removal and syncing it came back without it, while the site being
/// removed held it; that site would not stand, and refused the master's candidacy as behind
/// its own log, so the pair never had a master again.)
#[test]
fn a_master_makes_a_membership_change_durable_before_it_ships_it() {
    let mut net = group(3, 21);
    let master = elected(&mut net);
    net.run_for(500);
    let leaving = others(&net, &master)[0].clone();
    let now = net.now();
    let site = net.site_mut(&master).unwrap();
    let syncs_before = site.storage_ref().syncs();
    let request = Request::RemoveSite {
        site: leaving.clone(),
    };
    let out = site.step(
        now,
        Input::Request {
            id: RequestId(9_001),
            request,
        },
    );
    let shipped = out.iter().any(|o| {
        matches!(o, Output::Send { msg: Message::Log { records, .. }, .. }
            if records.iter().any(|r| matches!(&r.body,
                RecordBody::Membership { site, member: Some(m) }
                    if *site == leaving && m.state == MemberState::Removing)))
    });
    assert!(shipped, "the removal was not shipped: {out:?}");
    assert_eq!(
        site.storage_ref().syncs(),
        syncs_before + 1,
        "synced once, first"
    );
    assert!(!site.needs_sync());
}

#[test]
fn commits_asked_together_share_one_append_one_sync_and_one_message_per_client() {
    let mut net = group(3, 21);
    let master = elected(&mut net);
    net.run_for(500);
    let syncs_before = net.site(&master).unwrap().storage_ref().syncs();
    net.record_messages();
    let txns = (0..5).map(|i| Txn::put(format!("k{i}"), "v")).collect();
    let ids = net.commit_batch(&master, txns);
    assert_eq!(
        net.site(&master).unwrap().storage_ref().syncs(),
        syncs_before + 1
    );
    net.run_for(200);
    for id in &ids {
        assert!(committed(&net, *id), "{id:?}: {:?}", net.result(*id));
    }
    for client in others(&net, &master) {
        let shipped: Vec<usize> = net
            .recorded_messages()
            .iter()
            .filter(|(from, to, _)| *from == master && *to == client)
            .filter_map(|(_, _, m)| match m {
                Message::Log { records, .. } => Some(records.len()),
                _ => None,
            })
            .collect();
        assert_eq!(shipped, [5], "to {client}");
    }
    // On a client, the whole batch is refused with the master named.
    let client = others(&net, &master)[0].clone();
    let ids = net.commit_batch(&client, vec![Txn::put("x", "y"), Txn::put("z", "w")]);
    for id in ids {
        assert!(matches!(
            net.result(id),
            Some(Err(RequestError::NotMaster { master: Some(m) })) if *m == master
        ));
    }
}

#[test]
fn a_write_on_a_client_is_refused_with_the_master_named() {
    let mut net = group(3, 3);
    let master = elected(&mut net);
    let client = others(&net, &master)[0].clone();
    let id = net.commit(&client, Txn::put("k", "v"));
    assert_eq!(
        net.result(id),
        Some(&Err(RequestError::NotMaster {
            master: Some(master)
        }))
    );
    assert_eq!(net.site(&client).unwrap().get(b"k"), None);
}

#[test]
fn clients_notice_a_silent_master_and_elect_a_new_one_in_a_later_generation() {
    let mut net = group(3, 4);
    let old = elected(&mut net);
    let old_gen = net.site(&old).unwrap().gen();
    net.crash(&old);
    let new = elected(&mut net);
    assert_ne!(new, old);
    assert!(net.site(&new).unwrap().gen() > old_gen);
    for addr in others(&net, &old) {
        assert!(net
            .events_of(&addr)
            .iter()
            .any(|e| matches!(e, Event::MasterFailure { master } if *master == old)));
    }
}

#[test]
fn a_broken_connection_to_the_master_elects_a_new_one_in_one_round_within_tens_of_ms() {
    for n in [3, 5] {
        for seed in 0..10 {
            let mut net = group(n, seed);
            let old = elected(&mut net);
            net.run_for(500);
            let crashed_at = net.now();
            net.crash(&old);
            // The clients hear the connection break at once: no heartbeat timeout to wait out.
            assert!(
                net.run_until_cond(200, |net| net.master().is_some_and(|m| m != old)),
                "{n} sites, seed {seed}: no new master within 200 ms"
            );
            let took = net.now().since(crashed_at);
            let failed = net
                .events()
                .iter()
                .filter(|(at, _, e)| *at >= crashed_at && matches!(e, Event::ElectionFailed { .. }))
                .count();
            assert_eq!(
                failed, 0,
                "{n} sites, seed {seed}: a split vote ({took} ms)"
            );
        }
    }
}

#[test]
fn the_site_with_the_most_advanced_log_wins() {
    // s2 gets a commit that s3 misses; when the master dies, s2 must win even though s3 has the
    // higher priority.
    let mut net = Network::new(3, 5, |i, cfg| {
        cfg.priority = [300, 100, 200][i];
        cfg.ack_policy = AckPolicy::One;
    });
    let master = elected(&mut net);
    assert_eq!(master, s(1), "highest priority wins when logs are equal");
    net.clog(&s(1), &s(3));
    let id = net.commit(&s(1), Txn::put("k", "v"));
    net.run_for(50);
    assert!(committed(&net, id));
    assert!(net.site(&s(2)).unwrap().last() > net.site(&s(3)).unwrap().last());
    net.crash(&s(1));
    net.heal();
    assert_eq!(elected(&mut net), s(2));
}

#[test]
fn with_equal_logs_the_higher_priority_wins() {
    for seed in 0..5 {
        let mut net = Network::new(3, seed, |i, cfg| cfg.priority = [10, 50, 20][i]);
        assert_eq!(elected(&mut net), s(2), "seed {seed}");
    }
    // In a larger group the best site must win even when a majority would have voted for
    // another candidate before hearing from it.
    for seed in 0..20 {
        let mut net = Network::new(5, seed, |i, cfg| {
            cfg.priority = if i == 0 { 200 } else { 100 }
        });
        assert_eq!(elected(&mut net), s(1), "5 sites, seed {seed}");
    }
}

#[test]
fn a_priority_zero_site_never_becomes_master() {
    let mut net = Network::new(3, 6, |i, cfg| {
        if i == 0 {
            cfg.priority = 0;
        }
    });
    let master = elected(&mut net);
    assert_ne!(master, s(1));
    // Even when the others are down and come back, s1 only votes.
    net.crash(&s(2));
    net.crash(&s(3));
    net.run_for(10_000);
    assert!(!net.site(&s(1)).unwrap().is_master());
    net.restart(&s(2));
    let master = elected(&mut net);
    assert_ne!(master, s(1));
}

/// Berkeley DB elects the best electable site even when a priority-0 site holds more of the
/// log: the priority-0 site cannot stand, so refusing its vote would leave the group without a
/// master for good. (Its extra records were acknowledged by nobody a policy counts.)
#[test]
fn a_priority_zero_site_ahead_of_every_candidate_still_lets_one_win() {
    // s1 is the first master, s2 an electable client, s3 a priority-0 client.
    let mut net = Network::new(3, 21, |i, cfg| {
        cfg.priority = [200, 100, 0][i];
    });
    let master = elected(&mut net);
    assert_eq!(master, s(1));
    // s2 stops hearing the master; the next commits reach s3 only.
    net.clog(&s(1), &s(2));
    net.commit(&s(1), Txn::put("only", "on s1 and s3"));
    net.run_for(3_000);
    let ahead = |net: &mut Network, a: &SiteAddr, b: &SiteAddr| {
        net.log_of(a).last().map(|r| r.pos()) > net.log_of(b).last().map(|r| r.pos())
    };
    assert!(ahead(&mut net, &s(3), &s(2)), "s3 holds more than s2");
    net.crash(&s(1));
    net.heal();
    assert!(
        net.run_until_cond(20_000, |n| n.master() == Some(s(2))),
        "s2 is elected with s3's vote"
    );
}

/// A priority-0 site's ack counts to settle a membership change, so it guards in elections what
/// its log shows settled: a candidate whose log misses a change of who votes, or a generation's
/// first record, that a later change started after (the master starts one only once the last
/// has settled) is refused; one that misses only transactions, or a change not known to have
/// settled, is granted (random-faults seed 66049: a site the group had removed won with such
/// a vote; seed 7502: guarding an unsettled change left the group with no master).
#[test]
fn a_priority_zero_site_refuses_a_candidate_missing_a_settled_membership_change() {
    let open = |storage: MemStorage, now| {
        let mut cfg = Config::new(s(3), [s(1), s(2), s(3)]);
        cfg.priority = 0;
        Site::open(cfg, storage, 1, Time(now)).unwrap()
    };
    let txn = || RecordBody::Txn(Txn::put("k", "v"));
    let opening = || RecordBody::GenStart { master: s(1) };
    let entry = |site: usize, state| RecordBody::Membership {
        site: s(site),
        member: Some(crate::log::Member {
            state,
            priority: 100,
        }),
    };
    let removal = RecordBody::Membership {
        site: s(9),
        member: None,
    };
    let mut storage = MemStorage::new();
    storage
        .append(&[
            LogRecord::new(1, 1, opening()),
            LogRecord::new(2, 1, txn()),
            LogRecord::new(3, 1, removal),
            LogRecord::new(4, 1, txn()),
            LogRecord::new(5, 1, entry(8, MemberState::Adding)),
            LogRecord::new(6, 2, opening()),
            LogRecord::new(7, 2, txn()),
            LogRecord::new(8, 2, entry(7, MemberState::Adding)),
            LogRecord::new(9, 2, entry(7, MemberState::Present)),
            LogRecord::new(10, 2, txn()),
        ])
        .unwrap();
    let mut site = open(storage, 0);
    let mut egen = 2;
    let mut asks = |site: &mut Site<MemStorage>, last: LogPos| {
        egen += 1;
        let out = site.step(
            Time(egen),
            Input::Message {
                from: s(2),
                msg: Message::VoteRequest {
                    egen,
                    last,
                    priority: 100,
                    takeover: false,
                    pre: false,
                },
            },
        );
        out.iter().any(|o| {
            matches!(
                o,
                Output::Send {
                    msg: Message::Vote { granted: true, .. },
                    ..
                }
            )
        })
    };
    assert_eq!(site.vote_guard(), LogPos::new(2, 6));
    assert!(asks(&mut site, LogPos::new(2, 8)), "misses s7 made present");
    assert!(
        !asks(&mut site, LogPos::new(1, 5)),
        "misses generation 2's start"
    );
    // Drop generation 2: the removal is the guard now.
    site.truncate_after(5).unwrap();
    assert!(
        asks(&mut site, LogPos::new(1, 3)),
        "misses only a transaction and a join"
    );
    assert!(!asks(&mut site, LogPos::new(1, 2)), "misses the removal");
    // The guard is found again in the log after a restart.
    let mut site = open(site.into_storage(), 100);
    assert_eq!(site.vote_guard(), LogPos::new(1, 3));
    assert!(
        !asks(&mut site, LogPos::new(1, 2)),
        "misses the removal, after a restart"
    );
    // Without the join after it, nothing shows the removal (or anything) settled.
    site.truncate_after(4).unwrap();
    assert_eq!(site.vote_guard(), LogPos::default());
    assert!(
        asks(&mut site, LogPos::new(1, 2)),
        "the removal may not have settled"
    );
    // An electable site guards its whole log.
    let mut cfg = Config::new(s(3), [s(1), s(2), s(3)]);
    cfg.priority = 100;
    let electable = Site::open(cfg, site.into_storage(), 1, Time(200)).unwrap();
    assert_eq!(electable.vote_guard(), LogPos::new(1, 4));
}

/// A site whose log lost synced changes of who votes (damage cut it below the mark its metadata
/// keeps, `Meta::voters_floor`) may misremember its group as smaller than it is: it neither
/// stands nor grants a candidate below the mark until its log is back above it (a fuzz case:
/// a creator that lost the admissions of the others elected itself alone, a second master of
/// a generation).
#[test]
fn a_site_whose_log_lost_changes_of_who_votes_waits_for_a_master_to_mend_it() {
    let present = |site: usize| RecordBody::Membership {
        site: s(site),
        member: Some(crate::log::Member {
            state: MemberState::Present,
            priority: 100,
        }),
    };
    let mut storage = MemStorage::new();
    storage
        .append(&[
            LogRecord::new(1, 1, RecordBody::GenStart { master: s(1) }),
            LogRecord::new(2, 1, present(1)),
            LogRecord::new(3, 1, present(2)),
        ])
        .unwrap();
    // s3's admission at LSN 4 was synced, then lost.
    let floor = LogPos::new(1, 4);
    storage
        .write_meta(&crate::storage::Meta {
            gen: 1,
            egen: 1,
            voted_for: None,
            voters_floor: floor,
        })
        .unwrap();
    let mut cfg = Config::new(s(1), [s(1), s(2), s(3)]);
    cfg.priority = 100;
    let mut site = Site::open(cfg, storage, 1, Time(0)).unwrap();
    assert_eq!(site.vote_guard(), floor);
    let stands = |out: &[Output]| {
        out.iter().any(|o| {
            matches!(
                o,
                Output::Send {
                    msg: Message::VoteRequest { .. },
                    ..
                }
            )
        })
    };
    let out = site.step(Time(10_000), Input::Tick);
    assert!(!stands(&out), "stood with a log below its mark: {out:?}");
    let mut egen = 1;
    let mut asks = |site: &mut Site<MemStorage>, last: LogPos| {
        egen += 1;
        let out = site.step(
            Time(10_000 + egen),
            Input::Message {
                from: s(2),
                msg: Message::VoteRequest {
                    egen,
                    last,
                    priority: 100,
                    takeover: false,
                    pre: false,
                },
            },
        );
        out.iter().any(|o| {
            matches!(
                o,
                Output::Send {
                    msg: Message::Vote { granted: true, .. },
                    ..
                }
            )
        })
    };
    assert!(
        !asks(&mut site, LogPos::new(1, 3)),
        "granted below the mark"
    );
    assert!(
        asks(&mut site, floor),
        "refused a candidate holding the change"
    );
    // A master brings the lost record back: the site stands again when its timer fires.
    site.append(&[LogRecord::new(4, 1, present(3))]).unwrap();
    site.sync_log().unwrap();
    assert_eq!(site.vote_guard(), floor);
    let out = site.step(Time(60_000), Input::Tick);
    assert!(stands(&out), "a mended site did not stand: {out:?}");
}

/// A lenient two-site group needs the other site's vote while it is connected. If that vote
/// never comes (lost on a connection that stays up), the election must still end and be tried
/// again, not wait on a deadline in the past (the site would spin; `step` asserts against it).
#[test]
fn a_lenient_pair_whose_vote_is_lost_ends_the_election_and_tries_again() {
    let mut net = Network::new(2, 22, |_, cfg| cfg.two_site_strict = false);
    let master = elected(&mut net);
    let client = others(&net, &master)[0].clone();
    // Every message is lost, but the connection stays up: the client stops hearing its master,
    // stands, and hears nothing back.
    net.faults.drop_per_mille = 1000;
    net.run_for(15_000);
    let failed = net
        .events_of(&client)
        .into_iter()
        .filter(|e| matches!(e, Event::ElectionFailed { needed: 2, .. }))
        .count();
    assert!(
        failed >= 2,
        "the client's elections end and start again ({failed})"
    );
    net.faults.drop_per_mille = 0;
    assert!(net.run_until_cond(20_000, |n| n.master().is_some()));
}

#[test]
fn no_master_without_a_majority_of_the_whole_group() {
    let mut net = group(5, 7);
    let master = elected(&mut net);
    let rest = others(&net, &master);
    net.crash(&master);
    net.crash(&rest[0]);
    net.crash(&rest[1]);
    net.run_for(20_000);
    assert_eq!(net.master(), None);
    assert!(net.events().iter().any(|(_, _, e)| matches!(
        e,
        Event::ElectionFailed {
            votes: 2,
            needed: 3,
            ..
        }
    )));
    net.restart(&rest[0]);
    elected(&mut net);
}

#[test]
fn two_site_strict_keeps_a_lone_client_from_electing_itself() {
    let mut net = group(2, 8);
    let master = elected(&mut net);
    let client = others(&net, &master)[0].clone();
    net.crash(&master);
    net.run_for(20_000);
    assert!(!net.site(&client).unwrap().is_master());
}

/// A lenient pair (no `two_site_strict`) whose master crashed: the other site elects itself
/// alone. Returns the group, the crashed site and the new master.
fn lenient_pair_failed_over() -> (Network, SiteAddr, SiteAddr) {
    let mut net = Network::new(2, 8, |_, cfg| cfg.two_site_strict = false);
    let old = elected(&mut net);
    let new = others(&net, &old)[0].clone();
    net.crash(&old);
    assert!(net.run_until_cond(20_000, |n| n.master() == Some(new.clone())));
    (net, old, new)
}

#[test]
fn without_two_site_strict_a_lone_client_elects_itself() {
    let (net, old, new) = lenient_pair_failed_over();
    assert_eq!(net.master(), Some(new));
    assert!(!net.is_up(&old));
}

/// Each side of a lenient pair can master the same generation number in turn (each elects
/// itself while the other is down), so a client can hold records of its master's generation
/// that its master never wrote: they are rolled back like any other divergence. (Found by the
/// swarm, `random-faults` seed 56, after a client learned to ignore a late history that its
/// log continues in the master's generation.)
#[test]
fn a_lenient_pair_whose_sides_each_mastered_one_generation_converges_on_the_masters_log() {
    let (mut net, a, b) = lenient_pair_failed_over();
    let gen = net.site(&b).unwrap().gen();
    for i in 0..3 {
        net.commit(&b, Txn::put(format!("b{i}"), "lost"));
    }
    net.run_for(100);
    let b_last = net.site(&b).unwrap().last();
    net.crash(&b);
    net.restart(&a);
    assert!(net.run_until_cond(20_000, |n| n.master() == Some(a.clone())));
    assert_eq!(
        net.site(&a).unwrap().gen(),
        gen,
        "both sides mastered one generation"
    );
    net.commit(&a, Txn::put("a", "kept"));
    net.run_for(100);
    let a_last = net.site(&a).unwrap().last();
    assert!(
        a_last.gen == b_last.gen && a_last.lsn < b_last.lsn,
        "{a_last} {b_last}"
    );
    net.restart(&b);
    assert!(net.settle(10_000), "the pair never converged");
    let client = net.site(&b).unwrap();
    assert_eq!(client.last(), net.site(&a).unwrap().last());
    assert_eq!(client.get(b"b0"), None);
    assert!(net
        .events_of(&b)
        .iter()
        .any(|e| matches!(e, Event::RolledBack { .. })));
    assert_eq!(client.get(b"a"), Some(&b"kept"[..]));
}

#[test]
fn quorum_commits_with_a_minority_down_and_perm_fails_without_a_majority() {
    let mut net = group(5, 9);
    let master = elected(&mut net);
    let rest = others(&net, &master);
    net.crash(&rest[0]);
    net.crash(&rest[1]);
    let id = net.commit(&master, Txn::put("a", "1"));
    net.run_for(200);
    assert!(committed(&net, id), "{:?}", net.result(id));
    net.crash(&rest[2]);
    let id = net.commit(&master, Txn::put("b", "2"));
    net.run_for(2_000);
    assert!(matches!(
        net.result(id),
        Some(Err(RequestError::PermFailed {
            have: 1,
            needed: 2,
            ..
        }))
    ));
    assert!(net.events_of(&master).iter().any(|e| matches!(
        e,
        Event::PermFailed {
            have: 1,
            needed: 2,
            ..
        }
    )));
    // Locally committed all the same.
    assert_eq!(net.site(&master).unwrap().get(b"b"), Some(&b"2"[..]));
}

/// Outcome of one commit under `policy` in a 4-site group where site 4 has priority 0 and the
/// sites in `down` are crashed.
fn commit_with(policy: AckPolicy, down: &[usize]) -> Result<Reply, RequestError> {
    let mut net = Network::new(4, 10, |i, cfg| {
        cfg.ack_policy = policy;
        cfg.priority = if i == 0 {
            200
        } else if i == 3 {
            0
        } else {
            100
        };
    });
    assert_eq!(elected(&mut net), s(1));
    for &i in down {
        net.crash(&s(i));
    }
    let id = net.commit(&s(1), Txn::put("k", "v"));
    net.run_for(1_500);
    net.result(id)
        .cloned()
        .expect("answered within the ack timeout")
}

#[test]
fn every_ack_policy_counts_the_right_sites() {
    use AckPolicy::*;
    let ok = |r: Result<Reply, RequestError>| r.is_ok();
    // Everyone up: every policy is met.
    for policy in AckPolicy::ALL {
        assert!(ok(commit_with(policy, &[])), "{policy} with everyone up");
    }
    // A down site still counts for `all`; `all_available` only asks those connected.
    assert!(!ok(commit_with(All, &[2])));
    assert!(ok(commit_with(AllAvailable, &[2])));
    // `all_peers` ignores the priority-0 site 4, `all` does not.
    assert!(ok(commit_with(AllPeers, &[4])));
    assert!(!ok(commit_with(All, &[4])));
    // Only the priority-0 site up: `one` is met, `one_peer` and `quorum` are not.
    assert!(ok(commit_with(One, &[2, 3])));
    assert!(!ok(commit_with(OnePeer, &[2, 3])));
    assert!(!ok(commit_with(Quorum, &[2, 3])));
    // Quorum of 4 = master + 2 electable clients.
    assert!(!ok(commit_with(Quorum, &[2])));
    // Nobody up: `none` is met, `all_available` is not (no one holds it).
    assert!(ok(commit_with(None, &[2, 3, 4])));
    assert!(!ok(commit_with(AllAvailable, &[2, 3, 4])));
}

/// Under `all_available`: a commit whose records neither client has yet, acknowledged by one
/// client only. Returns the network, the master, the client that did not ack, and the commit.
fn commit_acked_by_one_of_two_clients() -> (Network, SiteAddr, SiteAddr, RequestId) {
    let mut net = Network::new(3, 12, |_, cfg| cfg.ack_policy = AckPolicy::AllAvailable);
    let master = elected(&mut net);
    net.settle(2_000);
    let [acking, silent] = [
        others(&net, &master)[0].clone(),
        others(&net, &master)[1].clone(),
    ];
    // The commit's records are queued for both clients; neither has them yet.
    let id = net.commit(&master, Txn::put("k", "v"));
    let site = net.site(&master).unwrap();
    let (gen, lsn) = (site.gen(), site.last().lsn);
    let ack = Message::Ack {
        gen,
        lsn,
        priority: 100,
    };
    net.input(
        &master,
        Input::Message {
            from: acking,
            msg: ack,
        },
    );
    (net, master, silent, id)
}

/// Found by the fuzz harness (rule 9): under `all_available`, a commit held back only by a
/// connected client that had not acknowledged it was answered at the master's next tick after
/// that client disconnected, not when it disconnected.
#[test]
fn regression_a_commit_held_back_by_a_client_that_disconnects_is_answered_at_once() {
    let (mut net, master, silent, id) = commit_acked_by_one_of_two_clients();
    assert_eq!(net.result(id), None, "the silent client still counts");
    net.input(&master, Input::PeerDisconnected(silent));
    assert!(committed(&net, id), "{:?}", net.result(id));
}

#[test]
fn regression_a_late_sync_answer_never_rolls_back_records_of_its_masters_generation() {
    let mut net = group(3, 12);
    let master = elected(&mut net);
    let client = others(&net, &master)[0].clone();
    let id = net.commit(&master, Txn::put("k", "v"));
    net.run_for(100);
    assert!(committed(&net, id), "{:?}", net.result(id));
    assert!(net.settle(2_000));
    let (gen, history) = {
        let site = net.site(&master).unwrap();
        (site.gen(), site.history().clone())
    };
    let held = net.site(&client).unwrap().last();
    assert_eq!(
        held.gen, gen,
        "the client holds the commit, of the master's generation"
    );
    // The client stops hearing the master and gives it up.
    net.clog(&master, &client);
    let gave_up = net.run_until_cond(5_000, |n| {
        n.events_of(&client)
            .iter()
            .any(|e| matches!(e, Event::MasterFailure { .. }))
    });
    assert!(gave_up, "the client never declared the master failed");
    // Then two old messages of the master's, from before the commit, arrive late (a duplicate
    // or a slow path): a heartbeat, which makes the client take the master anew and ask it
    // where its log ends, and an answer to an earlier such request.
    let before = LogPos::new(gen, held.lsn - 1);
    let late = |msg| Input::Message {
        from: master.clone(),
        msg,
    };
    net.input(
        &client,
        late(Message::Heartbeat {
            gen,
            last: before,
            first_lsn: 1,
        }),
    );
    net.input(
        &client,
        late(Message::SyncInfo {
            gen,
            history,
            first_lsn: 1,
            last: before,
        }),
    );
    let events = net.events_of(&client);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::NewMaster { master: m, .. } if *m == master)),
        "the late heartbeat should have made the client verify its log again"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::RolledBack { .. })),
        "{events:?}"
    );
    assert_eq!(net.site(&client).unwrap().last(), held);
    assert_eq!(net.site(&client).unwrap().get(b"k"), Some(&b"v"[..]));
}

#[test]
fn regression_a_commit_a_client_held_is_answered_once_that_client_says_it_may_be_master() {
    // s1 becomes master; s3 starts at priority 0, so its acknowledgement counts for nothing.
    let mut net = Network::new(3, 6, |i, cfg| {
        cfg.ack_policy = AckPolicy::Quorum;
        cfg.priority = [200, 100, 0][i];
    });
    let master = elected(&mut net);
    assert_eq!(master, s(1));
    net.clog(&master, &s(2));
    let id = net.commit(&master, Txn::put("k", "v"));
    net.run_for(50);
    assert_eq!(
        net.result(id),
        None,
        "only a priority-0 site holds the commit"
    );
    // s3 comes back with a priority (a restart with a new configuration) and says so in its
    // first message to the master, a request to verify its log.
    let gen = net.site(&master).unwrap().gen();
    net.input(
        &master,
        Input::Message {
            from: s(3),
            msg: Message::SyncRequest { gen, priority: 50 },
        },
    );
    assert!(committed(&net, id), "{:?}", net.result(id));
}

#[test]
fn a_vote_naming_an_unknown_master_is_checked_with_it_unless_the_news_is_older_than_ours() {
    let mut net = group(3, 4);
    let master = elected(&mut net);
    let client = others(&net, &master)[0].clone();
    let gen = net.site(&client).unwrap().gen();
    assert!(gen >= 1);
    let stranger = s(9);
    net.record_messages();
    let vote = |gen| Input::Message {
        from: master.clone(),
        msg: Message::Vote {
            egen: gen,
            granted: false,
            gen,
            last: LogPos::new(gen, 1),
            priority: 1,
            master: Some(stranger.clone()),
            pre: true,
            term: gen,
        },
    };
    let asked = |net: &Network| {
        net.recorded_messages()
            .iter()
            .filter(|(from, to, m)| {
                *from == client && *to == stranger && matches!(m, Message::SyncRequest { .. })
            })
            .count()
    };
    // News from a generation before ours names a master of the past: nothing to check.
    net.input(&client, vote(gen - 1));
    assert_eq!(asked(&net), 0);
    // A master of our generation that our database does not list: our view may be stale (we
    // may have been removed while away), so we ask it.
    net.input(&client, vote(gen));
    assert_eq!(asked(&net), 1);
}

#[test]
fn regression_a_switchover_waiting_only_for_a_commit_hands_over_as_that_commit_is_answered() {
    // The commit's target acks it; the other client never does.
    let (mut net, master, silent, id) = commit_acked_by_one_of_two_clients();
    let target = others(&net, &master)
        .into_iter()
        .find(|a| *a != silent)
        .expect("the acking client");
    let switchover = net.request(&master, Request::StepDown { to: target.clone() });
    assert_eq!(net.result(switchover), None, "the commit still waits");
    // The silent client goes away: the commit is answered, and the switchover goes on at once.
    net.input(&master, Input::PeerDisconnected(silent));
    assert!(committed(&net, id), "{:?}", net.result(id));
    assert!(
        matches!(net.result(switchover), Some(Ok(Reply::SteppedDown { to })) if *to == target),
        "{:?}",
        net.result(switchover)
    );
}

#[test]
fn a_returning_master_rolls_back_what_never_reached_the_new_master() {
    let mut net = Network::new(3, 11, |_, cfg| cfg.ack_policy = AckPolicy::None);
    let old = elected(&mut net);
    let id = net.commit(&old, Txn::put("shared", "1"));
    net.settle(2_000);
    assert!(committed(&net, id));
    // Isolate the master; it commits two transactions nobody else sees.
    net.partition(&[std::slice::from_ref(&old), &others(&net, &old)]);
    let lost1 = net.commit(&old, Txn::put("lost", "1"));
    let lost2 = net.commit(&old, Txn::put("lost", "2"));
    net.run_for(10);
    assert!(
        committed(&net, lost1) && committed(&net, lost2),
        "policy none"
    );
    let new = net.run_until_cond(10_000, |n| n.master().is_some_and(|m| m != old));
    assert!(new);
    let new = net.master().unwrap();
    let id = net.commit(&new, Txn::put("after", "1"));
    net.run_for(100);
    assert!(committed(&net, id));
    net.heal();
    assert!(net.settle(10_000));
    assert_eq!(net.master(), Some(new));
    let events = net.events_of(&old);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::WouldRollback { .. })));
    let rolled: Vec<Lsn> = events
        .iter()
        .find_map(|e| match e {
            Event::RolledBack { txns, .. } => Some(txns.clone()),
            _ => None,
        })
        .expect("rolled back");
    assert_eq!(
        rolled.len(),
        2,
        "both unreplicated transactions: {rolled:?}"
    );
    let site = net.site(&old).unwrap();
    assert_eq!(site.get(b"lost"), None);
    assert_eq!(site.get(b"after"), Some(&b"1"[..]));
    assert_eq!(site.stats().txns_rolled_back, 2);
    assert_eq!(net.check_quiescent_invariants(), Vec::<String>::new());
}

#[test]
fn a_client_behind_the_archived_log_is_initialised_from_the_snapshot() {
    let mut net = group(3, 12);
    let master = elected(&mut net);
    let lagging = others(&net, &master)[0].clone();
    net.crash(&lagging);
    for i in 0..20 {
        net.commit(&master, Txn::put(format!("k{i}"), "v"));
        net.run_for(20);
    }
    let id = net.request(&master, Request::Archive { keep_records: 5 });
    net.run_for(1);
    let first = match net.result(id) {
        Some(Ok(Reply::Archived { first_lsn })) => *first_lsn,
        other => panic!("archive: {other:?}"),
    };
    assert!(first > 10);
    let before = net.events_of(&lagging).len();
    net.restart(&lagging);
    assert!(net.settle(10_000));
    // The order Berkeley DB users know from a new site: client, new master, init, startup done.
    let events = net.events_of(&lagging).split_off(before);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            Event::BecameClient { .. } => "client",
            Event::NewMaster { .. } => "new_master",
            Event::InitDone { .. } => "init_done",
            Event::StartupDone { .. } => "startup_done",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["client", "new_master", "init_done", "startup_done"],
        "{events:?}"
    );
    let site = net.site(&lagging).unwrap();
    assert_eq!(site.stats().inits, 1);
    assert_eq!(site.get(b"k0"), Some(&b"v"[..]));
    assert_eq!(
        site.db().digest(),
        net.site(&master).unwrap().db().digest(),
        "same LSN, same digest"
    );
    assert_eq!(net.check_quiescent_invariants(), Vec::<String>::new());
}

#[test]
fn a_client_repeats_its_ack_on_heartbeats_for_an_ack_timeout() {
    let mut net = group(3, 22);
    let master = elected(&mut net);
    // Past an ack timeout since the clients' last acks (of the master's first records).
    net.run_for(1_500);
    let client = others(&net, &master)[0].clone();
    let (now, gen) = (net.now(), net.site(&master).unwrap().gen());
    let site = net.site_mut(&client).unwrap();
    let last = site.last();
    let acks = |out: &[Output]| -> Vec<Lsn> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send {
                    to,
                    msg: Message::Ack { lsn, .. },
                } if *to == master => Some(*lsn),
                _ => None,
            })
            .collect()
    };
    let heartbeat = |site: &mut Site<MemStorage>, at: Time, last: LogPos| {
        let msg = Message::Heartbeat {
            gen,
            last,
            first_lsn: 1,
        };
        let from = master.clone();
        site.step(at, Input::Message { from, msg })
    };
    assert_eq!(
        acks(&heartbeat(site, now, last)),
        vec![],
        "idle: no ack repeated"
    );
    // A record arrives and is acked; say the ack is lost on the way.
    let record = LogRecord::new(last.lsn + 1, gen, RecordBody::Txn(Txn::put("k", "v")));
    let records = vec![record.clone()];
    let from = master.clone();
    let out = site.step(
        now,
        Input::Message {
            from,
            msg: Message::Log {
                gen,
                records: records.into(),
            },
        },
    );
    assert_eq!(acks(&out), vec![record.lsn]);
    let (at, ack_ms) = (record.pos(), site.config().timeouts.ack_ms);
    for ms in [0, 200, ack_ms - 1] {
        let out = heartbeat(site, now.plus_ms(ms), at);
        assert_eq!(acks(&out), vec![record.lsn], "repeated {ms} ms later");
    }
    let out = heartbeat(site, now.plus_ms(ack_ms), at);
    assert_eq!(
        acks(&out),
        vec![],
        "not once the master stopped waiting for it"
    );
}

#[test]
fn a_lost_log_message_is_recovered_by_a_gap_request() {
    let mut net = Network::new(3, 13, |_, cfg| cfg.ack_policy = AckPolicy::All);
    let master = elected(&mut net);
    let client = others(&net, &master)[0].clone();
    // Drop every message for a moment: the client misses one commit's record.
    net.faults.drop_per_mille = 1000;
    net.commit(&master, Txn::put("a", "1"));
    net.run_for(5);
    net.faults.drop_per_mille = 0;
    let id = net.commit(&master, Txn::put("b", "2"));
    net.run_for(500);
    assert!(committed(&net, id), "{:?}", net.result(id));
    assert_eq!(net.site(&client).unwrap().get(b"a"), Some(&b"1"[..]));
}

#[test]
fn switchover_hands_mastership_over_with_nothing_lost() {
    let mut net = Network::new(3, 14, |_, cfg| cfg.ack_policy = AckPolicy::One);
    let old = elected(&mut net);
    let target = others(&net, &old)[1].clone();
    for i in 0..10 {
        net.commit(&old, Txn::put(format!("k{i}"), "v"));
    }
    let sd = net.request(&old, Request::StepDown { to: target.clone() });
    // New writes are refused while the switchover runs.
    let refused = net.commit(&old, Txn::put("late", "x"));
    assert!(matches!(
        net.result(refused),
        Some(Err(RequestError::SwitchoverInProgress { .. }))
            | Some(Err(RequestError::NotMaster { .. }))
    ));
    assert!(net.run_until_cond(5_000, |n| n.master() == Some(target.clone())));
    assert_eq!(
        net.result(sd),
        Some(&Ok(Reply::SteppedDown { to: target.clone() }))
    );
    assert!(net.settle(5_000));
    assert!(net.lost_commits(&target).is_empty());
    let digest = net.site(&target).unwrap().db().digest();
    for addr in net.addrs() {
        assert_eq!(net.site(&addr).unwrap().db().digest(), digest, "{addr}");
    }
}

#[test]
fn switchover_to_an_unreachable_site_fails_and_the_master_stays() {
    let mut net = group(3, 15);
    let master = elected(&mut net);
    let target = others(&net, &master)[0].clone();
    net.crash(&target);
    net.commit(&master, Txn::put("k", "v"));
    let sd = net.request(&master, Request::StepDown { to: target });
    net.run_for(4_000);
    assert!(matches!(
        net.result(sd),
        Some(Err(RequestError::StepDownFailed { .. }))
    ));
    assert_eq!(net.master(), Some(master.clone()));
    let id = net.commit(&master, Txn::put("after", "v"));
    net.run_for(200);
    assert!(committed(&net, id));
}

#[test]
fn switchover_refuses_a_priority_zero_target_and_non_members() {
    let mut net = Network::new(3, 16, |i, cfg| {
        if i == 2 {
            cfg.priority = 0;
        }
    });
    let master = elected(&mut net);
    net.settle(2_000);
    let id = net.request(&master, Request::StepDown { to: s(3) });
    assert!(matches!(
        net.result(id),
        Some(Err(RequestError::Invalid(_)))
    ));
    let id = net.request(
        &master,
        Request::StepDown {
            to: SiteAddr::new("x:1"),
        },
    );
    assert!(matches!(
        net.result(id),
        Some(Err(RequestError::Invalid(_)))
    ));
}

#[test]
fn an_isolated_master_steps_down_when_it_hears_a_later_generation() {
    let mut net = group(3, 17);
    let old = elected(&mut net);
    let rest = others(&net, &old);
    net.partition(&[std::slice::from_ref(&old), &rest]);
    assert!(net.run_until_cond(10_000, |n| n.master().is_some_and(|m| m != old)));
    assert!(
        net.site(&old).unwrap().is_master(),
        "still thinks it is master"
    );
    net.heal();
    assert!(net.settle(5_000));
    let site = net.site(&old).unwrap();
    assert!(!site.is_master());
    // It learns either from the new master's heartbeat or from a client's answer to its own.
    let heard_master = net
        .events_of(&old)
        .iter()
        .any(|e| matches!(e, Event::DuplicateMaster { .. }));
    assert!(heard_master || site.stats().stale_master_steps > 0);
}

#[test]
fn messages_from_an_older_generation_are_ignored() {
    let mut net = group(3, 18);
    let master = elected(&mut net);
    let client = others(&net, &master)[0].clone();
    let gen: Gen = net.site(&client).unwrap().gen();
    let before = net.site(&client).unwrap().last();
    let stale = crate::log::LogRecord::new(
        before.lsn + 1,
        gen - 1,
        crate::log::RecordBody::Txn(Txn::put("stale", "x")),
    );
    net.input(
        &client,
        Input::Message {
            from: master.clone(),
            msg: Message::Log {
                gen: gen - 1,
                records: vec![stale].into(),
            },
        },
    );
    assert_eq!(net.site(&client).unwrap().last(), before);
    assert_eq!(net.site(&client).unwrap().get(b"stale"), None);
}

#[test]
fn a_record_with_a_bad_checksum_is_never_applied() {
    let mut net = group(3, 19);
    let master = elected(&mut net);
    let client = others(&net, &master)[0].clone();
    let site = net.site(&client).unwrap();
    let (gen, last) = (site.gen(), site.last());
    let mut bad = crate::log::LogRecord::new(
        last.lsn + 1,
        gen,
        crate::log::RecordBody::Txn(Txn::put("bad", "x")),
    );
    bad.checksum ^= 1;
    net.input(
        &client,
        Input::Message {
            from: master,
            msg: Message::Log {
                gen,
                records: vec![bad].into(),
            },
        },
    );
    assert_eq!(net.site(&client).unwrap().last(), last);
}

#[test]
fn votes_are_durable_and_a_site_votes_once_per_generation() {
    let cfg = Config::new(s(1), [s(1), s(2), s(3)]);
    let mut site = Site::open(cfg.clone(), MemStorage::new(), 1, Time(0)).unwrap();
    let ask = |egen| Input::Message {
        from: s(2),
        msg: Message::VoteRequest {
            egen,
            last: LogPos::default(),
            priority: 100,
            takeover: false,
            pre: false,
        },
    };
    let granted = |out: &[Output]| {
        out.iter().any(|o| {
            matches!(
                o,
                Output::Send {
                    msg: Message::Vote { granted: true, .. },
                    ..
                }
            )
        })
    };
    // s1 outranks s2 on equal logs only by address; lower address wins, so make s1 unelectable
    // for this test by asking with a more advanced log instead.
    let ask_ahead = |egen, from: usize| Input::Message {
        from: s(from),
        msg: Message::VoteRequest {
            egen,
            last: LogPos::new(1, 1),
            priority: 100,
            takeover: false,
            pre: false,
        },
    };
    let _ = ask;
    assert!(granted(&site.step(Time(10), ask_ahead(2, 2))));
    assert!(
        !granted(&site.step(Time(11), ask_ahead(2, 3))),
        "one vote per generation"
    );
    // After a crash the vote is remembered.
    let storage = site.into_storage();
    let mut site = Site::open(cfg, storage, 2, Time(20)).unwrap();
    assert!(!granted(&site.step(Time(21), ask_ahead(2, 3))));
    assert!(
        granted(&site.step(Time(22), ask_ahead(2, 2))),
        "the same candidate again"
    );
    assert!(
        granted(&site.step(Time(23), ask_ahead(3, 3))),
        "a later generation"
    );
}

#[test]
fn election_jitter_comes_from_the_seed() {
    let run = |seed| {
        let mut net = group(5, seed);
        elected(&mut net);
        net.events().to_vec()
    };
    assert_eq!(run(21), run(21));
    assert_ne!(run(21), run(22));
}

/// The election a candidate's outputs ask votes for: (egen, pre).
fn vote_asked(out: &[Output]) -> Option<(Gen, bool)> {
    out.iter().find_map(|o| match o {
        Output::Send {
            msg: Message::VoteRequest { egen, pre, .. },
            ..
        } => Some((*egen, *pre)),
        _ => None,
    })
}

#[test]
fn a_candidate_with_enough_votes_at_its_elections_end_wins_rather_than_spin() {
    let mut cfg = Config::new(s(1), [s(1), s(2), s(3)]);
    cfg.timeouts.vote_collect_ms = 300;
    let mut site = Site::open(cfg, MemStorage::new(), 1, Time(0)).unwrap();
    for peer in [s(2), s(3)] {
        let input = Input::PeerConnected {
            addr: peer,
            version: 2,
        };
        site.step_and_sync(Time(0), input);
    }
    // Stand: a pre-vote first, which s2 grants, then the real round.
    let mut now = site.next_deadline().unwrap();
    let (egen, pre) = vote_asked(&site.step_and_sync(now, Input::Tick)).expect("stands");
    assert!(pre);
    let vote = |egen, pre| Message::Vote {
        egen,
        granted: true,
        gen: 0,
        last: LogPos::default(),
        priority: 100,
        master: None,
        pre,
        term: 0,
    };
    now = now.plus_ms(1);
    let out = site.step_and_sync(
        now,
        Input::Message {
            from: s(2),
            msg: vote(egen, true),
        },
    );
    let (egen, pre) = vote_asked(&out).expect("the real round");
    assert!(!pre);
    let ends_at = site.next_deadline().unwrap();
    // s2's vote comes just before the election's end; s3 (connected) never answers, so the
    // collect window would close after the end.
    let late = Time(ends_at.0 - 1);
    site.step_and_sync(
        late,
        Input::Message {
            from: s(2),
            msg: vote(egen, false),
        },
    );
    assert_eq!(site.role(), RoleKind::Electing);
    assert_eq!(site.next_deadline(), Some(ends_at));
    site.step_and_sync(ends_at, Input::Tick);
    assert_eq!(
        site.role(),
        RoleKind::Master,
        "enough votes at the end: it wins"
    );
}

#[test]
fn a_dead_site_answers_handle_dead() {
    struct Failing(MemStorage);
    impl Storage for Failing {
        fn first_lsn(&self) -> Lsn {
            self.0.first_lsn()
        }
        fn last_lsn(&self) -> Lsn {
            self.0.last_lsn()
        }
        fn append(&mut self, r: &[crate::log::LogRecord]) -> Result<(), StorageError> {
            self.0.append(r)
        }
        fn sync(&mut self) -> Result<(), StorageError> {
            Err(StorageError::Fault("disk gone".into()))
        }
        fn read(&mut self, f: Lsn, m: usize) -> Result<Vec<crate::log::LogRecord>, StorageError> {
            self.0.read(f, m)
        }
        fn truncate_after(&mut self, l: Lsn) -> Result<(), StorageError> {
            self.0.truncate_after(l)
        }
        fn write_snapshot(&mut self, s: &Snapshot, k: bool) -> Result<(), StorageError> {
            self.0.write_snapshot(s, k)
        }
        fn read_snapshot(&mut self) -> Result<Snapshot, StorageError> {
            self.0.read_snapshot()
        }
        fn write_meta(&mut self, m: &Meta) -> Result<(), StorageError> {
            self.0.write_meta(m)
        }
        fn read_meta(&mut self) -> Result<Option<Meta>, StorageError> {
            self.0.read_meta()
        }
    }
    let cfg = Config::new(s(1), [s(1)]);
    let mut site = Site::open(cfg, Failing(MemStorage::new()), 1, Time(0)).unwrap();
    let deadline = site.next_deadline().unwrap();
    // Winning the election needs a synced GenStart record: the sync fails, the site stops.
    let out = site.step(deadline, Input::Tick);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::StorageFailed { .. }))));
    assert!(site.dead().is_some());
    let out = site.step(
        deadline,
        Input::Request {
            id: RequestId(1),
            request: Request::Commit(Txn::put("k", "v")),
        },
    );
    assert!(matches!(
        &out[..],
        [Output::Reply {
            result: Err(RequestError::HandleDead { .. }),
            ..
        }]
    ));
}

#[test]
fn a_master_that_loses_mastership_answers_its_waiting_commits() {
    let mut net = Network::new(3, 20, |_, cfg| cfg.timeouts.ack_ms = 60_000);
    let old = elected(&mut net);
    let rest = others(&net, &old);
    net.partition(&[std::slice::from_ref(&old), &rest]);
    let id = net.commit(&old, Txn::put("k", "v"));
    assert!(net.run_until_cond(10_000, |n| n.master().is_some_and(|m| m != old)));
    assert_eq!(net.result(id), None, "still waiting for acks");
    net.heal();
    assert!(net.run_until_cond(5_000, |n| n.result(id).is_some()));
    assert!(matches!(
        net.result(id),
        Some(Err(RequestError::MasterLost { .. }))
    ));
}

#[test]
fn a_master_that_hears_of_a_later_generation_in_a_late_vote_steps_down() {
    // A vote answering the election this master won, delayed until after another site was
    // elected in a later generation (found by the site_step fuzz target).
    let mut net = group(3, 21);
    let master = elected(&mut net);
    let voter = others(&net, &master)[0].clone();
    let gen = net.site(&master).unwrap().gen();
    let last = net.site(&master).unwrap().last();
    net.input(
        &master,
        Input::Message {
            from: voter,
            msg: Message::Vote {
                egen: gen,
                granted: false,
                gen: gen + 1,
                last,
                priority: 100,
                master: None,
                pre: false,
                term: gen + 1,
            },
        },
    );
    let site = net.site(&master).unwrap();
    assert!(
        !site.is_master(),
        "a master of generation {gen} must not carry on under generation {}",
        site.gen()
    );
    assert_eq!(site.gen(), gen + 1);
}

#[test]
fn a_generation_at_u64_max_stops_elections_without_overflow_or_spinning() {
    // Only garbage from a peer gets there (found by the site_step fuzz target): the site may
    // never stand again, but must neither panic nor ask for a tick in the past.
    let mut net = group(1, 22);
    let master = elected(&mut net);
    net.input(
        &master,
        Input::Message {
            from: SiteAddr::new("peer:1"),
            msg: Message::StaleGeneration { gen: u64::MAX },
        },
    );
    net.run_for(10_000);
    let site = net.site(&master).unwrap();
    assert!(!site.is_master());
    assert!(site.next_deadline().unwrap() > net.now());
}

#[test]
fn a_join_answer_naming_the_joiner_as_master_is_ignored() {
    // Following it would have the site sync with itself (found by the site_step fuzz target).
    let mut net = Network::empty(23);
    net.add_site(Config::joining(s(2), SiteAddr::new("nobody:1")));
    let ignored = net.site(&s(2)).unwrap().stats().messages_ignored;
    net.input(
        &s(2),
        Input::Message {
            from: SiteAddr::new("nobody:1"),
            msg: Message::JoinReply {
                site: s(2),
                result: crate::wire::JoinResult::Accepted {
                    master: s(2),
                    gen: 1,
                    last: 4,
                },
            },
        },
    );
    net.run_for(3_000);
    let site = net.site(&s(2)).unwrap();
    assert_eq!(site.master(), None);
    assert_eq!(site.stats().messages_ignored, ignored + 1);
}

/// A leased read of `k` on `addr`, answered at once (reads wait for nothing).
fn leased_read(net: &mut Network, addr: &SiteAddr) -> Result<Reply, RequestError> {
    let request = Request::Read {
        key: b"k".to_vec(),
        leased: true,
    };
    let id = net.request(addr, request);
    net.result(id).cloned().expect("a read is answered at once")
}

#[test]
fn a_master_serves_leased_reads_only_while_a_majority_grants_it_a_lease() {
    let mut net = Network::new(3, 31, |_, cfg| cfg.timeouts.lease_timeout_ms = 800);
    let old = elected(&mut net);
    let id = net.commit(&old, Txn::put("k", "v1"));
    net.run_for(500);
    assert!(committed(&net, id));
    assert_eq!(
        leased_read(&mut net, &old),
        Ok(Reply::Value(Some(b"v1".to_vec())))
    );
    let client = others(&net, &old)[0].clone();
    assert!(matches!(
        leased_read(&mut net, &client),
        Err(RequestError::NotMaster { master: Some(m) }) if m == old
    ));
    // Cut the master off: the others elect a new one, but only once their leases ran out, and
    // by then the old master no longer serves leased reads.
    let rest = others(&net, &old);
    net.partition(&[std::slice::from_ref(&old), &rest]);
    let cut_at = net.now();
    let mut served_late = Vec::new();
    assert!(net.run_until_cond(20_000, |n| { n.master().is_some_and(|m| m != old) }));
    let elected_at = net.now();
    assert!(
        elected_at.0 >= cut_at.0 + 800 - 200,
        "a new master at {elected_at:?}, within the lease of one cut off at {cut_at:?}"
    );
    match leased_read(&mut net, &old) {
        Err(RequestError::NoLease { reason }) => assert!(reason.contains("1 of the 2"), "{reason}"),
        Err(RequestError::NotMaster { .. }) => {}
        other => served_late.push(other),
    }
    assert!(
        served_late.is_empty(),
        "the old master still served: {served_late:?}"
    );
    let new = net.master().unwrap();
    assert!(net.run_until_cond(2_000, |n| n.site(&new).is_some_and(|s| s.is_master())));
    net.run_for(300);
    let id = net.commit(&new, Txn::put("k", "v2"));
    net.run_for(300);
    assert!(committed(&net, id));
    assert_eq!(
        leased_read(&mut net, &new),
        Ok(Reply::Value(Some(b"v2".to_vec())))
    );
}

#[test]
fn without_leases_a_leased_read_is_refused_and_a_plain_one_reads_any_site() {
    let mut net = group(3, 32);
    let master = elected(&mut net);
    let id = net.commit(&master, Txn::put("k", "v"));
    net.run_for(500);
    assert!(committed(&net, id));
    assert!(matches!(
        leased_read(&mut net, &master),
        Err(RequestError::NoLease { reason }) if reason.contains("not configured")
    ));
    let client = others(&net, &master)[0].clone();
    let id = net.request(
        &client,
        Request::Read {
            key: b"k".to_vec(),
            leased: false,
        },
    );
    assert_eq!(net.result(id), Some(&Ok(Reply::Value(Some(b"v".to_vec())))));
}

#[test]
fn a_log_message_is_applied_in_lsn_order_whatever_order_its_records_come_in() {
    let mut net = group(3, 23);
    let master = elected(&mut net);
    net.run_for(1_500);
    let client = others(&net, &master)[0].clone();
    let (now, gen) = (net.now(), net.site(&master).unwrap().gen());
    let site = net.site_mut(&client).unwrap();
    let last = site.last().lsn;
    let put = |lsn: Lsn, key: &str| LogRecord::new(lsn, gen, RecordBody::Txn(Txn::put(key, "v")));
    let mut deliver = |records: Vec<LogRecord>| {
        let (from, records) = (master.clone(), records.into());
        site.step(
            now,
            Input::Message {
                from,
                msg: Message::Log { gen, records },
            },
        );
        site.last().lsn
    };
    // In order: one run, appended straight from the message.
    assert_eq!(
        deliver(vec![put(last + 1, "a"), put(last + 2, "b")]),
        last + 2
    );
    // A record it holds already, between two that continue its log: skipped, the rest applied.
    let stray = vec![put(last + 3, "c"), put(last + 2, "b"), put(last + 4, "d")];
    assert_eq!(deliver(stray), last + 4);
    // A gap ends what is taken.
    assert_eq!(
        deliver(vec![put(last + 5, "e"), put(last + 7, "g")]),
        last + 5
    );
    for key in ["a", "b", "c", "d", "e"] {
        assert_eq!(site.get(key.as_bytes()), Some(&b"v"[..]), "{key}");
    }
    assert_eq!(site.get(b"g"), None);
    let held = site.storage().read(last + 1, 10).unwrap();
    let lsns: Vec<Lsn> = held.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (last + 1..=last + 5).collect::<Vec<_>>());
}

/// One election round after a master's crash: a site already asking its own pre-vote (it has
/// recorded nothing) that is asked for a pre-vote by a better-placed site grants it and
/// listens, as a client would, instead of carrying on. Carried on, its pre-vote could gather a
/// majority before the better one's real request arrived, and the two real rounds split the
/// voters between them: no master until an election timeout later (catalog `fast-failover`,
/// seed 617 of 1..1500).
#[test]
fn a_site_asking_its_pre_vote_yields_to_a_better_placed_site_that_asks_it() {
    let mut net = group(5, 21);
    let master = elected(&mut net);
    let clients = others(&net, &master);
    // Same priority, same log: the lower address is better placed.
    let (better, worse) = (clients[0].clone(), clients[3].clone());
    net.crash(&master);
    let before = net.events_of(&worse).len();
    let now = net.now();
    if let Some(c) = net.site_mut(&worse).unwrap().client_mut() {
        c.election_at = now;
    }
    net.input(&worse, Input::Tick);
    assert!(
        matches!(&net.site(&worse).unwrap().role, Role::Electing(e) if e.pre),
        "{worse} asks its pre-vote"
    );
    let site = net.site(&better).unwrap();
    let ask = Message::VoteRequest {
        egen: site.term() + 1,
        last: site.last(),
        priority: site.cfg.priority,
        takeover: false,
        pre: true,
    };
    net.record_messages();
    net.input(
        &worse,
        Input::Message {
            from: better.clone(),
            msg: ask,
        },
    );
    let granted = net.recorded_messages().iter().any(|(from, to, m)| {
        *from == worse
            && *to == better
            && matches!(
                m,
                Message::Vote {
                    granted: true,
                    pre: true,
                    ..
                }
            )
    });
    assert!(granted, "{worse} would vote for {better}");
    let site = net.site(&worse).unwrap();
    let listen = site.cfg.timeouts.vote_collect_ms * 3;
    match &site.role {
        Role::Client(c) => assert_eq!(c.election_at, now.plus_ms(listen)),
        other => panic!("{worse} still stands: {other:?}"),
    }
    // The better-placed site wins, and the other never stood for real.
    assert_eq!(elected(&mut net), better);
    assert!(!net.events_of(&worse)[before..]
        .iter()
        .any(|e| matches!(e, Event::Voted { candidate, .. } if *candidate == worse)));
}
