//! The engine on madsim: failover, refusal of nothing-but-the-truth, determinism.
//! Built only with `--cfg madsim` (`cargo sim-test`).
#![cfg(madsim)]

use madsim::runtime::Runtime;
use madsim::Config as SimConfig;
use replication::site::{Reply, Request};
use replication::Txn;
use sim::world::World;
use std::time::Duration;

fn run<F: std::future::Future<Output = T>, T>(seed: u64, f: impl FnOnce() -> F) -> T {
    Runtime::with_seed_and_config(seed, SimConfig::default()).block_on(f())
}

#[test]
fn a_master_crash_fails_over_with_no_lost_quorum_commit() {
    run(1, || async {
        let mut world = World::start(3, 1, |_, _| {});
        let master = world
            .wait_for_master(Duration::from_secs(10))
            .await
            .expect("master");
        let mut committed = Vec::new();
        for i in 0..10 {
            let key = format!("k{i}");
            if let Ok(Reply::Committed { .. }) = world
                .request(&master, Request::Commit(Txn::put(key.clone(), "v")))
                .await
            {
                committed.push(key);
            }
        }
        assert_eq!(committed.len(), 10);
        world.crash(&master);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let new = world
            .wait_for_master(Duration::from_secs(10))
            .await
            .expect("new master");
        assert_ne!(new, master);
        let h = world.handle(&new).unwrap();
        for key in &committed {
            assert_eq!(
                h.get(key.clone()).await.unwrap().as_deref(),
                Some(&b"v"[..]),
                "{key}"
            );
        }
        world.restart(&master);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let old = world.handle(&master).expect("restarted");
        assert_eq!(old.get("k9").await.unwrap().as_deref(), Some(&b"v"[..]));
    });
}

fn trace_hash_of(seed: u64) -> u64 {
    run(seed, || async move {
        let mut world = World::start(3, seed, |_, _| {});
        let master = world
            .wait_for_master(Duration::from_secs(10))
            .await
            .expect("master");
        for i in 0..5 {
            let _ = world
                .request(&master, Request::Commit(Txn::put(format!("k{i}"), "v")))
                .await;
        }
        world.crash(&master);
        world.wait_for_master(Duration::from_secs(10)).await;
        world.restart(&master);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let trace = world.trace();
        assert!(
            trace.iter().any(|l| l.contains("BecameMaster")),
            "{trace:#?}"
        );
        assert!(trace.iter().any(|l| l.contains("ConnectionEstablished")));
        world.trace_hash()
    })
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    for seed in [3, 4] {
        assert_eq!(trace_hash_of(seed), trace_hash_of(seed), "seed {seed}");
    }
    assert_ne!(trace_hash_of(3), trace_hash_of(4));
}
