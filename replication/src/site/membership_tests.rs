//! Group membership: primordial start-up, joining through a helper, removal, legacy upgrade.
//! Each test names the rule it protects.

use super::*;
use crate::log::{MemberState, RecordBody, Txn};
use crate::storage::MemStorage;
use crate::testkit::Network;
use crate::types::Gen;
use crate::wire::JoinResult;

fn s(i: usize) -> SiteAddr {
    Network::addr(i)
}

fn fast(cfg: &mut Config) {
    cfg.timeouts.join_retry_ms = 500;
}

fn creator(i: usize) -> Config {
    let mut cfg = Config::group_creator(s(i));
    fast(&mut cfg);
    cfg
}

fn joiner(i: usize, helper: usize) -> Config {
    let mut cfg = Config::joining(s(i), s(helper));
    fast(&mut cfg);
    cfg
}

/// A group built the way an operator builds one: s1 creates it, the others join through s1.
fn built_group(n: usize, seed: u64) -> Network {
    let mut net = Network::empty(seed);
    net.add_site(creator(1));
    for i in 2..=n {
        net.add_site(joiner(i, 1));
        assert!(
            net.run_until_cond(10_000, |net| is_present(net, &s(1), &s(i))),
            "s{i} joined"
        );
    }
    assert!(net.settle(10_000));
    net
}

/// s1 creates a group under `all_peers`; s2 (priority 100) and s3 (priority `third`) join it.
fn all_peers_group(seed: u64, third: u32) -> Network {
    let mut net = Network::empty(seed);
    let mut first = creator(1);
    first.ack_policy = AckPolicy::AllPeers;
    net.add_site(first);
    for i in 2..=3 {
        let mut cfg = joiner(i, 1);
        cfg.ack_policy = AckPolicy::AllPeers;
        cfg.priority = if i == 3 { third } else { 100 };
        net.add_site(cfg);
        assert!(net.run_until_cond(10_000, |net| is_present(net, &s(1), &s(i))));
    }
    assert!(net.settle(10_000));
    net
}

fn is_present(net: &Network, at: &SiteAddr, site: &SiteAddr) -> bool {
    net.site(at).is_some_and(|x| {
        x.db()
            .members()
            .get(site)
            .is_some_and(|m| m.state == MemberState::Present)
    })
}

fn members(net: &Network, at: &SiteAddr) -> Vec<SiteAddr> {
    net.site(at)
        .unwrap()
        .db()
        .members()
        .keys()
        .cloned()
        .collect()
}

/// The reasons of the join failures `at` reported, in order.
fn join_failures(net: &Network, at: &SiteAddr) -> Vec<String> {
    net.events_of(at)
        .into_iter()
        .filter_map(|e| match e {
            Event::JoinFailure { reason } => Some(reason),
            _ => None,
        })
        .collect()
}

fn committed(net: &Network, id: RequestId) -> bool {
    matches!(net.result(id), Some(Ok(Reply::Committed { .. })))
}

#[test]
fn the_group_creator_starts_a_group_of_one_and_is_master() {
    let mut net = Network::empty(1);
    net.add_site(creator(1));
    assert_eq!(
        net.master(),
        Some(s(1)),
        "master at once, without an election timeout"
    );
    assert_eq!(members(&net, &s(1)), vec![s(1)]);
    let id = net.commit(&s(1), Txn::put("k", "v"));
    assert!(committed(&net, id), "a group of one needs no acks");
}

#[test]
fn the_creator_flag_is_ignored_once_the_membership_database_exists() {
    let mut net = built_group(2, 2);
    let membership_records = |net: &mut Network| {
        net.log_of(&s(1))
            .iter()
            .filter(|r| matches!(&r.body, RecordBody::Membership { site, .. } if *site == s(1)))
            .count()
    };
    let before = membership_records(&mut net);
    net.crash(&s(1));
    net.restart(&s(1)); // still flagged group_creator
    assert!(net.settle(10_000));
    assert_eq!(
        membership_records(&mut net),
        before,
        "no second group created"
    );
    assert_eq!(members(&net, &s(1)), vec![s(1), s(2)]);
}

#[test]
fn a_creator_whose_log_lost_the_group_never_creates_it_again_and_rejoins_through_a_helper() {
    let mut net = built_group(3, 12);
    let id = net.commit(&s(1), Txn::put("k", "v"));
    // Settled logs do not mean the master has the acks yet: wait for the answer too.
    assert!(net.run_until_cond(10_000, |net| net.quiescent() && committed(net, id)));
    net.crash(&s(1));
    assert!(net.run_until_cond(10_000, |net| net.master().is_some_and(|m| m != s(1))));
    let successor = net.master().unwrap();
    let gen = net.site(&successor).unwrap().gen();
    // Rot reaches the creator's first record: opening cuts the log there, database and all.
    assert!(net.rot(&s(1), 1) > 0);
    net.restart(&s(1));
    let error = net
        .start_error(&s(1))
        .expect("refused: it could be a second master");
    assert!(
        error.contains("no membership database") && error.contains("helper"),
        "{error}"
    );
    assert_eq!(net.master(), Some(successor.clone()));
    // Given a helper, it comes back as a member and follows the master of the group.
    net.reconfigure(&s(1), |cfg| cfg.helper = Some(s(2)));
    net.restart(&s(1));
    assert_eq!(net.start_error(&s(1)), None);
    assert!(net.settle(20_000));
    assert_eq!(net.master(), Some(successor));
    let rejoined = net.site(&s(1)).unwrap();
    assert_eq!(rejoined.gen(), gen);
    assert_eq!(rejoined.db().get(b"k"), Some(&b"v"[..]));
    assert!(net.violations().is_empty(), "{:?}", net.violations());
}

#[test]
fn a_creator_that_crashes_as_it_creates_the_group_finds_it_created() {
    // Opened and crashed before any driver synced what opening appended.
    let site = Site::open(creator(1), MemStorage::new(), 1, Time(0)).unwrap();
    let mut disk = site.into_storage();
    disk.crash();
    let site = Site::open(creator(1), disk, 2, Time(10)).expect("reopens");
    assert_eq!(site.gen(), 1, "the same group, not a new one");
    assert_eq!(site.db().members().keys().collect::<Vec<_>>(), vec![&s(1)]);
}

#[test]
fn a_site_started_before_the_creator_gets_unavail_and_retries_until_it_joins() {
    let mut net = Network::empty(3);
    // s2 asks s1, which is not there yet.
    let mut early = joiner(2, 1);
    early.timeouts.join_retry_ms = 300;
    net.add_site(creator(1));
    net.crash(&s(1));
    net.add_site(early);
    net.run_for(4_000);
    let failures = net
        .events_of(&s(2))
        .iter()
        .filter(|e| matches!(e, Event::JoinFailure { .. }))
        .count();
    assert!(
        failures >= 2,
        "pauses and retries: {:?}",
        net.events_of(&s(2))
    );
    net.restart(&s(1));
    assert!(net.run_until_cond(10_000, |n| is_present(n, &s(2), &s(2))));
}

#[test]
fn a_site_joins_through_the_master_and_the_master_sees_site_added() {
    let mut net = built_group(2, 4);
    assert!(net
        .events_of(&s(1))
        .iter()
        .any(|e| matches!(e, Event::SiteAdded { site } if *site == s(2))));
    let kinds: Vec<&str> = net
        .events_of(&s(2))
        .iter()
        .filter_map(|e| match e {
            Event::BecameClient { .. } => Some("client"),
            Event::NewMaster { .. } => Some("new_master"),
            Event::StartupDone { .. } => Some("startup_done"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["client", "new_master", "startup_done"]);
    assert_eq!(net.site(&s(1)).unwrap().group_size(), 2);
    let id = net.commit(&s(1), Txn::put("k", "v"));
    net.run_for(100);
    assert!(committed(&net, id), "quorum of two needs s2's ack");
    assert_eq!(net.site(&s(2)).unwrap().get(b"k"), Some(&b"v"[..]));
}

#[test]
fn a_client_helper_forwards_the_join_to_the_master() {
    let mut net = built_group(2, 5);
    net.add_site(joiner(3, 2)); // s2 is a client
    assert!(net.run_until_cond(10_000, |n| is_present(n, &s(1), &s(3))));
    assert!(net.settle(10_000));
    assert_eq!(members(&net, &s(3)), vec![s(1), s(2), s(3)]);
}

#[test]
fn a_join_without_enough_acks_is_unavail_and_nothing_is_half_recorded() {
    let mut net = built_group(3, 6);
    net.crash(&s(2));
    net.crash(&s(3));
    net.add_site(joiner(4, 1));
    net.run_for(3_000);
    assert!(net
        .events_of(&s(4))
        .iter()
        .any(|e| matches!(e, Event::JoinFailure { reason } if reason.contains("acknowledge"))));
    // At most an `Adding` entry of the retry in flight: never counted, never `Present`.
    assert!(!is_present(&net, &s(1), &s(4)));
    assert_eq!(net.site(&s(1)).unwrap().group_size(), 3);
    // Once the group can acknowledge, the retry succeeds.
    net.restart(&s(2));
    assert!(net.run_until_cond(10_000, |n| is_present(n, &s(1), &s(4))));
}

#[test]
fn a_retry_after_an_unavail_answer_is_not_reported_as_silence() {
    let mut net = built_group(3, 6);
    net.crash(&s(2));
    net.crash(&s(3));
    net.add_site(joiner(4, 1));
    net.run_for(6_000);
    let reasons = join_failures(&net, &s(4));
    assert!(reasons.len() >= 2, "{reasons:?}");
    // The helper answered every request: no failure may blame its silence.
    assert!(
        reasons.iter().all(|r| !r.contains("no answer")),
        "{reasons:?}"
    );
}

#[test]
fn the_helper_is_ignored_on_later_starts() {
    let mut net = built_group(3, 7);
    net.crash(&s(3));
    net.reconfigure(&s(3), |cfg| cfg.helper = Some(SiteAddr::new("nowhere:1")));
    let before = net.events_of(&s(3)).len();
    net.restart(&s(3));
    assert!(net.settle(10_000));
    let after_restart = net.events_of(&s(3)).split_off(before);
    assert!(!after_restart
        .iter()
        .any(|e| matches!(e, Event::JoinFailure { .. })));
    assert!(after_restart
        .iter()
        .any(|e| matches!(e, Event::NewMaster { master, .. } if *master == s(1))));
}

#[test]
fn a_site_with_no_membership_database_and_nothing_to_start_from_is_refused() {
    let mut net = Network::empty(8);
    net.add_site(Config::new(s(1), []));
    assert!(net.start_error(&s(1)).unwrap().contains("group_creator"));
}

#[test]
fn a_priority_zero_group_creator_is_refused_rather_than_made_master() {
    let mut net = Network::empty(9);
    net.add_site(Config {
        priority: 0,
        ..Config::group_creator(s(1))
    });
    let error = net.start_error(&s(1)).expect("refused");
    assert!(error.contains("priority 0"), "{error}");
    assert_eq!(net.master(), None);
}

#[test]
fn removal_asked_at_a_client_removes_the_site_everywhere() {
    let mut net = built_group(3, 9);
    let id = net.request(&s(2), Request::RemoveSite { site: s(3) });
    net.run_for(1_000);
    assert_eq!(net.result(id), Some(&Ok(Reply::SiteRemoved { site: s(3) })));
    assert!(net.events_of(&s(3)).contains(&Event::LocalSiteRemoved));
    for at in [s(1), s(2)] {
        assert!(net
            .events_of(&at)
            .iter()
            .any(|e| matches!(e, Event::SiteRemoved { site } if *site == s(3))));
        assert_eq!(members(&net, &at), vec![s(1), s(2)]);
    }
    // The removed site's handle is dead.
    let after = net.commit(&s(3), Txn::put("k", "v"));
    assert!(matches!(
        net.result(after),
        Some(Err(RequestError::HandleDead { .. }))
    ));
}

#[test]
fn a_client_can_remove_itself_and_its_call_returns_before_the_handle_dies() {
    let mut net = built_group(3, 10);
    let id = net.request(&s(3), Request::RemoveSite { site: s(3) });
    net.run_for(1_000);
    assert_eq!(net.result(id), Some(&Ok(Reply::SiteRemoved { site: s(3) })));
    assert!(net.site(&s(3)).unwrap().dead().is_some());
}

#[test]
fn elections_and_acks_use_the_new_size_after_removal() {
    let mut net = built_group(5, 11);
    for victim in [s(4), s(5)] {
        let id = net.request(
            &s(1),
            Request::RemoveSite {
                site: victim.clone(),
            },
        );
        net.run_for(500);
        assert_eq!(
            net.result(id),
            Some(&Ok(Reply::SiteRemoved { site: victim }))
        );
    }
    assert_eq!(net.site(&s(1)).unwrap().group_size(), 3);
    // Two of the remaining three elect a master: a majority of 3, not of 5.
    net.crash(&s(4));
    net.crash(&s(5));
    net.crash(&s(1));
    assert!(net.run_until_cond(10_000, |n| n.master().is_some()));
    let master = net.master().unwrap();
    let id = net.commit(&master, Txn::put("k", "v"));
    net.run_for(200);
    assert!(committed(&net, id), "quorum of 3 needs one ack");
}

/// A site is most often removed because it is gone: its removal is judged by the group without
/// it, so even `all_peers`, which waits for every electable peer, settles the removal of a
/// crashed one on the others' acks (judged with the leaving site in it, it never would).
#[test]
fn a_crashed_site_is_removed_under_all_peers_on_the_other_members_acks() {
    let mut net = all_peers_group(13, 100);
    net.crash(&s(3));
    let id = net.request(&s(1), Request::RemoveSite { site: s(3) });
    net.run_for(1_000);
    assert_eq!(net.result(id), Some(&Ok(Reply::SiteRemoved { site: s(3) })));
    assert_eq!(members(&net, &s(2)), vec![s(1), s(2)]);
}

#[test]
fn removing_the_master_is_refused_with_a_clear_error() {
    let mut net = built_group(3, 12);
    let id = net.request(&s(2), Request::RemoveSite { site: s(1) });
    net.run_for(500);
    assert_eq!(
        net.result(id),
        Some(&Err(RequestError::CannotRemoveMaster { master: s(1) }))
    );
    assert_eq!(members(&net, &s(1)).len(), 3);
}

#[test]
fn a_site_removed_while_down_learns_it_on_restart() {
    let mut net = built_group(3, 13);
    net.crash(&s(3));
    let id = net.request(&s(1), Request::RemoveSite { site: s(3) });
    net.run_for(500);
    assert!(matches!(net.result(id), Some(Ok(_))));
    net.restart(&s(3));
    net.run_for(5_000);
    assert!(net.events_of(&s(3)).contains(&Event::LocalSiteRemoved));
    assert!(net.site(&s(3)).unwrap().dead().is_some());
}

/// A legacy group: `n` version-1 sites with the full static list, s1 master.
fn legacy_group(n: usize, seed: u64) -> Network {
    let mut net = Network::new(n, seed, |i, cfg| {
        cfg.protocol_version = 1;
        cfg.priority = if i == 0 { 200 } else { 100 };
    });
    assert!(net.settle(10_000));
    assert_eq!(net.master(), Some(s(1)));
    net
}

fn upgrade(net: &mut Network, addr: &SiteAddr) {
    net.crash(addr);
    net.reconfigure(addr, |cfg| cfg.protocol_version = 2);
    net.restart(addr);
}

fn write_some(net: &mut Network, tag: &str) -> Vec<RequestId> {
    let mut ids = Vec::new();
    for i in 0..3 {
        if let Some(master) = net.master() {
            ids.push(net.commit(&master, Txn::put(format!("{tag}{i}"), "v")));
        }
        net.run_for(100);
    }
    ids
}

#[test]
fn legacy_upgrade_clients_first_master_last_moves_the_group_to_a_membership_database() {
    let mut net = legacy_group(3, 14);
    let mut ids = write_some(&mut net, "a");
    for addr in [s(2), s(3)] {
        upgrade(&mut net, &addr);
        assert!(net.settle(10_000));
        ids.extend(write_some(&mut net, "b"));
        assert!(
            !net.site(&s(1)).unwrap().has_membership(),
            "v1 master writes none"
        );
    }
    upgrade(&mut net, &s(1));
    assert!(net.settle(20_000));
    ids.extend(write_some(&mut net, "c"));
    assert!(net.settle(10_000));
    for addr in net.addrs() {
        let site = net.site(&addr).unwrap();
        assert!(site.has_membership(), "{addr}");
        assert_eq!(members(&net, &addr), vec![s(1), s(2), s(3)]);
    }
    assert!(net
        .events()
        .iter()
        .any(|(_, _, e)| matches!(e, Event::MembershipCreated { .. })));
    assert!(
        ids.iter().all(|&id| committed(&net, id)),
        "writes flowed throughout"
    );
    let master = net.master().unwrap();
    assert!(net.lost_commits(&master).is_empty());
    assert!(net.violations().is_empty());
}

#[test]
fn upgrading_the_master_first_keeps_the_group_on_its_static_list_without_loss() {
    let mut net = legacy_group(3, 15);
    let mut ids = write_some(&mut net, "a");
    upgrade(&mut net, &s(1));
    assert!(net.settle(20_000));
    ids.extend(write_some(&mut net, "b"));
    assert!(net.settle(10_000));
    for addr in net.addrs() {
        assert!(
            !net.site(&addr).unwrap().has_membership(),
            "{addr}: still legacy"
        );
    }
    // Finishing the upgrade (in any order) then creates the database.
    upgrade(&mut net, &s(2));
    upgrade(&mut net, &s(3));
    assert!(net.settle(20_000));
    ids.extend(write_some(&mut net, "c"));
    assert!(net.settle(10_000));
    assert!(net.site(&net.master().unwrap()).unwrap().has_membership());
    assert!(ids.iter().all(|&id| committed(&net, id)));
    let master = net.master().unwrap();
    assert!(net.lost_commits(&master).is_empty());
    assert!(net.violations().is_empty());
}

#[test]
fn a_version_1_site_has_no_joins_or_removals() {
    let mut net = legacy_group(3, 16);
    let id = net.request(&s(1), Request::RemoveSite { site: s(3) });
    assert!(matches!(
        net.result(id),
        Some(Err(RequestError::Invalid(_)))
    ));
    net.add_site(joiner(4, 1));
    net.run_for(3_000);
    assert!(!net.site(&s(1)).unwrap().db().members().contains_key(&s(4)));
}

#[test]
fn one_membership_change_at_a_time() {
    // Two removals at once would let each shrink the group the other is counted against.
    let mut net = built_group(5, 17);
    let first = net.request(&s(1), Request::RemoveSite { site: s(4) });
    let second = net.request(&s(1), Request::RemoveSite { site: s(5) });
    assert!(matches!(
        net.result(second),
        Some(Err(RequestError::Unavail { reason })) if reason.contains("in progress")
    ));
    net.run_for(500);
    assert_eq!(
        net.result(first),
        Some(&Ok(Reply::SiteRemoved { site: s(4) }))
    );
    let again = net.request(&s(1), Request::RemoveSite { site: s(5) });
    net.run_for(500);
    assert_eq!(
        net.result(again),
        Some(&Ok(Reply::SiteRemoved { site: s(5) }))
    );
}

#[test]
fn a_site_whose_log_alone_says_it_is_leaving_does_not_keep_the_group_from_electing() {
    // s1 masters five sites; s5 has priority 0.
    let mut net = Network::empty(31);
    net.add_site(creator(1));
    for i in 2..=5 {
        let mut cfg = joiner(i, 1);
        if i == 5 {
            cfg.priority = 0;
        }
        net.add_site(cfg);
        assert!(net.run_until_cond(10_000, |net| is_present(net, &s(1), &s(i))));
    }
    assert!(net.settle(10_000));
    // s2 and s4 fall behind; s3 and s5 get the next records, and then the start of s3's own
    // removal, which the master never gets acknowledged: it crashes.
    net.partition(&[&[s(1), s(3), s(5)], &[s(2), s(4)]]);
    net.commit(&s(1), Txn::put("k", "v"));
    net.run_for(20);
    net.request(&s(1), Request::RemoveSite { site: s(3) });
    assert!(net.run_until_cond(1_000, |net| {
        net.site(&s(3)).is_some_and(|x| {
            x.db()
                .members()
                .get(&s(3))
                .is_some_and(|m| m.state == MemberState::Removing)
        })
    }));
    net.crash(&s(1));
    net.heal();
    // s3 holds the most advanced electable log but does not stand (its own log says it is
    // leaving). It still refuses the others, who lack records it may have acknowledged; s2 and
    // s4 with the priority-0 s5 are a majority of five all the same, and one of them must win
    // rather than step aside for a site that will never stand.
    assert!(
        net.run_until_cond(20_000, |net| net
            .master()
            .is_some_and(|m| m == s(2) || m == s(4))),
        "no master: {:?}",
        net.events().iter().rev().take(12).collect::<Vec<_>>()
    );
}

/// After the ack timeout, the master cut off from s2 has failed `write` for want of s2's ack
/// and has not settled `removal`.
fn fails_with_the_removal_unsettled(net: &mut Network, write: RequestId, removal: RequestId) {
    net.run_for(3_000);
    assert!(
        matches!(
            net.result(write),
            Some(Err(RequestError::PermFailed { .. }))
        ),
        "{:?}",
        net.result(write)
    );
    assert!(
        !matches!(net.result(removal), Some(Ok(_))),
        "{:?}",
        net.result(removal)
    );
}

/// A removal is settled only once a majority of the voters holds it, whatever the ack policy,
/// and until then the site being removed still counts for every other commit. Here a master
/// cut off from the rest of a group whose only other electable member is s2 (s3 has priority 0)
/// is asked to remove s2 while a commit waits for s2's ack under `all_peers`: without these
/// rules it removed s2 on its own, and the commit then counted as acknowledged with no copy
/// but its own (random-faults seed 35158, on a master paused past its own deposition).
#[test]
fn an_unsettled_removal_acknowledges_nothing_for_the_site_it_removes() {
    let mut net = all_peers_group(12, 0);
    net.partition(&[&[s(1)], &[s(2), s(3)]]);
    let write = net.commit(&s(1), Txn::put("k", "v"));
    let removal = net.request(&s(1), Request::RemoveSite { site: s(2) });
    fails_with_the_removal_unsettled(&mut net, write, removal);
}

/// The other half of the rule above: a commit made after a removal has begun, while it is
/// still unsettled, is judged by the group with the leaving site in it. Here s2 is the only
/// other electable member under `all_peers`, so judged by the group after the removal (s1 and
/// the priority-0 s3), the master's own copy would have been enough: the commit is
/// acknowledged only if s2 holds it, and cut off, it fails.
#[test]
fn a_commit_made_while_a_removal_is_unsettled_still_counts_the_leaving_site() {
    let mut net = all_peers_group(12, 0);
    net.partition(&[&[s(1)], &[s(2), s(3)]]);
    let removal = net.request(&s(1), Request::RemoveSite { site: s(2) });
    net.run_for(10);
    let leaving = net
        .site(&s(1))
        .unwrap()
        .db()
        .members()
        .get(&s(2))
        .map(|m| m.state);
    assert_eq!(
        leaving,
        Some(MemberState::Removing),
        "the removal has begun"
    );
    let write = net.commit(&s(1), Txn::put("k", "v"));
    fails_with_the_removal_unsettled(&mut net, write, removal);
}

/// A membership change is settled by a majority of the voters, priority-0 ones included:
/// counting only electable holders (as `quorum` counts acks) would leave a group whose only
/// other member has priority 0 unable to admit anyone after it, whatever its ack policy.
#[test]
fn a_group_whose_only_other_member_has_priority_0_still_admits_sites() {
    // Under `quorum` such a group commits nothing at all (no electable peer to ack); `one`
    // commits with the priority-0 site's ack.
    let one = |mut cfg: Config| {
        cfg.ack_policy = AckPolicy::One;
        cfg
    };
    let mut net = Network::empty(13);
    net.add_site(one(creator(1)));
    let mut two = one(joiner(2, 1));
    two.priority = 0;
    net.add_site(two);
    assert!(net.run_until_cond(10_000, |net| is_present(net, &s(1), &s(2))));
    net.add_site(one(joiner(3, 1)));
    let joined = net.run_until_cond(10_000, |net| is_present(net, &s(1), &s(3)));
    assert!(joined, "s3 never joined: {:?}", net.events_of(&s(3)));
}

// ----- answers that must be ignored, and counted -----------------------------------------------

fn ignored(net: &Network, at: &SiteAddr) -> u64 {
    net.site(at).unwrap().stats().messages_ignored
}

fn accepted(master: usize, gen: Gen, last: Lsn) -> JoinResult {
    JoinResult::Accepted {
        master: s(master),
        gen,
        last,
    }
}

/// A join answer reaching a member that is not joining (a late or duplicated copy) changes
/// nothing and is counted as ignored.
#[test]
fn a_join_answer_to_a_site_that_is_not_joining_is_ignored_and_counted() {
    let mut net = built_group(2, 20);
    let gen = net.site(&s(1)).unwrap().gen();
    let before = ignored(&net, &s(2));
    let msg = Message::JoinReply {
        site: s(2),
        result: accepted(1, gen, 1),
    };
    net.input(&s(2), Input::Message { from: s(1), msg });
    assert_eq!(ignored(&net, &s(2)), before + 1);
    assert!(net.site(&s(2)).unwrap().join_at.is_none());
}

/// s3 asks to be removed, then starts again (joining anew through s1) cut off from the group, so
/// its join stays open; it has followed the master of generation `gen` before.
fn rejoining_cut_off(seed: u64) -> (Network, Gen) {
    let mut net = built_group(3, seed);
    let gen = net.site(&s(1)).unwrap().gen();
    let id = net.request(&s(3), Request::RemoveSite { site: s(3) });
    net.run_for(1_000);
    assert_eq!(net.result(id), Some(&Ok(Reply::SiteRemoved { site: s(3) })));
    net.crash(&s(3));
    net.partition(&[&[s(1), s(2)], &[s(3)]]);
    net.reconfigure(&s(3), |cfg| cfg.helper = Some(s(1)));
    net.restart(&s(3));
    net.run_for(100);
    let site = net.site(&s(3)).unwrap();
    assert!(site.join_at.is_some(), "s3 is joining again");
    assert_eq!(site.term(), gen);
    (net, gen)
}

/// A joining site never follows a master of a generation below its term (it could count the
/// joiner's acks towards commits a later master lacks): it ignores the answer, counts it, tells
/// that master of the later generation and keeps asking. An answer of its own term is followed.
#[test]
fn a_joiner_refuses_an_admission_from_below_its_term_and_takes_one_of_its_term() {
    let (mut net, gen) = rejoining_cut_off(21);
    net.record_messages();
    let before = ignored(&net, &s(3));
    let old = Message::JoinReply {
        site: s(3),
        result: accepted(1, gen - 1, 5),
    };
    net.input(
        &s(3),
        Input::Message {
            from: s(1),
            msg: old,
        },
    );
    assert_eq!(ignored(&net, &s(3)), before + 1);
    assert!(net.site(&s(3)).unwrap().join_at.is_some(), "still joining");
    let told = |net: &Network| {
        net.recorded_messages().iter().any(|(from, to, m)| {
            *from == s(3) && *to == s(1) && *m == Message::StaleGeneration { gen }
        })
    };
    assert!(told(&net), "the stale master is told of generation {gen}");

    let current = Message::JoinReply {
        site: s(3),
        result: accepted(1, gen, 5),
    };
    net.input(
        &s(3),
        Input::Message {
            from: s(1),
            msg: current,
        },
    );
    assert_eq!(ignored(&net, &s(3)), before + 1);
    let site = net.site(&s(3)).unwrap();
    assert!(site.join_at.is_none(), "the join is answered");
    assert!(matches!(site.role, Role::Client(_)), "and s3 follows s1");
}

/// A removal notice is ignored (and counted) by a site still joining and by one that knows a
/// later generation than the notice's; otherwise it removes the site.
#[test]
fn a_removal_notice_from_an_older_generation_or_to_a_joining_site_is_ignored_and_counted() {
    let (mut net, gen) = rejoining_cut_off(22);
    let before = ignored(&net, &s(3));
    let notice = Message::Removed { gen, last: 1_000 };
    net.input(
        &s(3),
        Input::Message {
            from: s(1),
            msg: notice,
        },
    );
    assert_eq!(ignored(&net, &s(3)), before + 1, "s3 is joining");
    assert!(net.site(&s(3)).unwrap().dead().is_none());

    let mut net = built_group(2, 22);
    let gen = net.site(&s(2)).unwrap().gen();
    assert!(gen > 0);
    let before = ignored(&net, &s(2));
    let old = Message::Removed {
        gen: gen - 1,
        last: 1_000,
    };
    net.input(
        &s(2),
        Input::Message {
            from: s(1),
            msg: old,
        },
    );
    assert_eq!(
        ignored(&net, &s(2)),
        before + 1,
        "older than s2's generation"
    );
    assert!(net.site(&s(2)).unwrap().dead().is_none());
}

/// A notice of the generation that admitted us counts only if it comes from a log that goes
/// past the admission: one from a log that ended before it is stale (counted, ignored), one from
/// a log holding the first record after it removes the site.
#[test]
fn a_removal_notice_of_the_admitting_generation_counts_once_its_log_passes_the_admission() {
    let mut net = built_group(2, 23);
    let at = net
        .site(&s(2))
        .unwrap()
        .readmitted_at
        .expect("s2 was admitted");
    let before = ignored(&net, &s(2));
    let stale = Message::Removed {
        gen: at.gen,
        last: at.lsn - 1,
    };
    net.input(
        &s(2),
        Input::Message {
            from: s(1),
            msg: stale,
        },
    );
    assert_eq!(ignored(&net, &s(2)), before + 1);
    assert!(net.site(&s(2)).unwrap().dead().is_none());

    let past = Message::Removed {
        gen: at.gen,
        last: at.lsn,
    };
    net.input(
        &s(2),
        Input::Message {
            from: s(1),
            msg: past,
        },
    );
    assert_eq!(ignored(&net, &s(2)), before + 1);
    assert!(net.events_of(&s(2)).contains(&Event::LocalSiteRemoved));
    assert!(net.site(&s(2)).unwrap().dead().is_some());
}

// ----- helpers, retries and timeouts -----------------------------------------------------------

/// A client forwarding a removal whose request is lost answers it `Unavail` once the master
/// could no longer answer: two ack timeouts (the removal's own commit and the acks it waits
/// for) and a request retry, not before.
#[test]
fn a_forwarded_removal_the_master_never_hears_times_out_after_two_ack_timeouts_and_a_retry() {
    let mut net = built_group(3, 24);
    let t = net.site(&s(2)).unwrap().cfg.timeouts.clone();
    let timeout = 2 * t.ack_ms + t.request_retry_ms;
    let id = net.request(&s(2), Request::RemoveSite { site: s(3) });
    let lost = net.lose_in_flight(&s(2), &s(1), |m| matches!(m, Message::RemoveRequest { .. }));
    assert_eq!(lost, 1);
    net.run_for(timeout - 1);
    assert_eq!(net.result(id), None, "answered before the timeout");
    net.run_for(1);
    match net.result(id) {
        Some(Err(RequestError::Unavail { reason })) => {
            assert!(
                reason.contains("did not answer the removal in time"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(members(&net, &s(1)), vec![s(1), s(2), s(3)]);
}

/// A client asked by its own master to help a join answers that it knows no other master,
/// rather than forward the request back to where it came from.
#[test]
fn a_client_asked_by_its_master_to_help_a_join_answers_rather_than_forwarding_it_back() {
    let mut net = built_group(2, 25);
    net.record_messages();
    let msg = Message::JoinRequest {
        site: s(9),
        priority: 1,
    };
    net.input(&s(2), Input::Message { from: s(1), msg });
    let sent: Vec<&Message> = net
        .recorded_messages()
        .iter()
        .filter(|(from, to, _)| *from == s(2) && *to == s(1))
        .map(|(_, _, m)| m)
        .collect();
    assert!(
        matches!(sent.as_slice(), [Message::JoinReply { site, result: JoinResult::Unavail { .. } }] if *site == s(9)),
        "{sent:?}"
    );
}

/// One membership change at a time: a join asked while a removal waits for its acks is refused
/// at once, not recorded.
#[test]
fn a_join_asked_while_a_removal_waits_for_its_acks_is_refused_at_once() {
    let mut net = all_peers_group(26, 100);
    net.crash(&s(2)); // all_peers: the removal of s3 waits for s2's ack
    let _removal = net.request(&s(1), Request::RemoveSite { site: s(3) });
    net.run_for(10);
    net.record_messages();
    let msg = Message::JoinRequest {
        site: s(4),
        priority: 1,
    };
    net.input(&s(1), Input::Message { from: s(4), msg });
    let answer = net
        .recorded_messages()
        .iter()
        .find(|(from, to, _)| *from == s(1) && *to == s(4))
        .map(|(_, _, m)| m.clone());
    match answer {
        Some(Message::JoinReply {
            result: JoinResult::Unavail { reason },
            ..
        }) => assert!(reason.contains("another membership change"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(!net.site(&s(1)).unwrap().db().members().contains_key(&s(4)));
}

/// A join whose helper stays silent reports the helper by name.
#[test]
fn a_silent_helper_is_named_in_the_join_failure() {
    let mut net = built_group(2, 27);
    net.crash(&s(2));
    net.add_site(joiner(3, 2));
    net.run_for(3_000);
    let reasons = join_failures(&net, &s(3));
    let named = format!("no answer from the helper {}", s(2));
    assert!(
        !reasons.is_empty() && reasons.iter().all(|r| *r == named),
        "{reasons:?}"
    );
}

/// A site that is not (yet) a member never stands: its standing priority is 0 until its own
/// database lists it present, then its configured one.
#[test]
fn a_joining_site_stands_with_priority_zero_until_it_is_a_member() {
    let (mut net, _) = rejoining_cut_off(28);
    assert_eq!(net.site(&s(3)).unwrap().standing_priority(), 0);
    net.heal();
    assert!(net.run_until_cond(10_000, |n| is_present(n, &s(3), &s(3))));
    let site = net.site(&s(3)).unwrap();
    assert_eq!(site.standing_priority(), site.cfg.priority);
    assert!(site.cfg.priority > 0);
}

/// A join is over once the joiner's own database lists it present, even if the helper's answer
/// never came (the helper died after forwarding): no more requests, no more failures reported.
#[test]
fn a_join_whose_answer_is_lost_ends_when_the_joiner_reads_itself_present() {
    let mut net = built_group(2, 29);
    net.record_messages();
    net.add_site(joiner(3, 2)); // s2, a client, forwards to s1
    let relayed = net.run_until_cond(5_000, |n| {
        n.recorded_messages()
            .iter()
            .any(|(_, to, m)| *to == s(2) && matches!(m, Message::JoinReply { .. }))
    });
    assert!(relayed, "s1 answers the join through s2");
    net.crash(&s(2)); // the answer dies with the helper
    assert!(net.run_until_cond(10_000, |n| is_present(n, &s(3), &s(3))));
    net.run_for(100);
    assert!(
        net.site(&s(3)).unwrap().join_at.is_none(),
        "the join is over"
    );
    let failures = |net: &Network| {
        net.events_of(&s(3))
            .iter()
            .filter(|e| matches!(e, Event::JoinFailure { .. }))
            .count()
    };
    let before = failures(&net);
    net.run_for(5_000);
    assert_eq!(
        failures(&net),
        before,
        "nothing more is asked of the dead helper"
    );
}

/// A helper that forwarded a join relays the master's answer to the joiner, which then follows
/// the master it names.
#[test]
fn a_client_helper_relays_the_masters_answer_to_the_joiner() {
    let mut net = built_group(2, 30);
    net.record_messages();
    net.add_site(joiner(3, 2));
    assert!(net.run_until_cond(10_000, |n| is_present(n, &s(3), &s(3))));
    let relayed = net.recorded_messages().iter().any(|(from, to, m)| {
        *from == s(2)
            && *to == s(3)
            && matches!(m, Message::JoinReply { site, result: JoinResult::Accepted { master, .. } }
                if *site == s(3) && *master == s(1))
    });
    assert!(relayed, "s2 relays s1's answer");
}

/// A site joining again asks its helper, then each other member its own database lists, in
/// turn, each once a turn: here s1 (the helper, also a member) and s2, alternately, while every
/// request goes unanswered.
#[test]
fn a_rejoining_site_asks_its_helper_and_the_other_members_in_turn() {
    let (mut net, _) = rejoining_cut_off(31);
    net.record_messages();
    net.run_for(8_000);
    let asked: Vec<SiteAddr> = net
        .recorded_messages()
        .iter()
        .filter(|(from, _, m)| *from == s(3) && matches!(m, Message::JoinRequest { .. }))
        .map(|(_, to, _)| to.clone())
        .collect();
    assert!(asked.len() >= 4, "{asked:?}");
    for pair in asked.windows(2) {
        assert_ne!(pair[0], pair[1], "the same site twice in a row: {asked:?}");
    }
    assert!(asked.iter().all(|a| *a == s(1) || *a == s(2)), "{asked:?}");
}
