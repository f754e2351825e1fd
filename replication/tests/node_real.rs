//! The node driver for real: sites on loopback TCP with real tokio, files on disk.
//! (The same driver runs on madsim in the `sim` crate's tests.)

use replication::node::{self, MonotonicClock, NodeConfig, NodeEvent, NodeHandle};
use replication::site::{Config, Reply, Request, RoleKind};
use replication::storage::FileStorage;
use replication::{SiteAddr, Txn};
use std::sync::Arc;
use std::time::Duration;

fn free_addrs(n: usize) -> Vec<SiteAddr> {
    // Bind to port 0 to let the OS choose, keep all open until every port is known.
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("loopback bind"))
        .collect();
    listeners
        .iter()
        .map(|l| SiteAddr::new(l.local_addr().unwrap().to_string()))
        .collect()
}

fn fast(cfg: &mut Config) {
    cfg.timeouts.heartbeat_interval_ms = 50;
    cfg.timeouts.heartbeat_timeout_ms = 300;
    cfg.timeouts.election_timeout_ms = 300;
    cfg.timeouts.election_jitter_ms = 200;
}

async fn start_site(
    addr: &SiteAddr,
    sites: &[SiteAddr],
    secret: &str,
    dir: &std::path::Path,
) -> (NodeHandle, tokio::sync::mpsc::Receiver<NodeEvent>) {
    let mut cfg = Config::new(addr.clone(), sites.to_vec());
    fast(&mut cfg);
    let (storage, _) = FileStorage::open(dir.join(addr.as_str().replace(':', "_"))).unwrap();
    let node_cfg = NodeConfig::new(cfg, "test-group", secret.as_bytes().to_vec());
    node::start(node_cfg, storage, Arc::new(MonotonicClock::new()), 7)
        .await
        .expect("node starts")
}

async fn wait_for_master(handles: &[NodeHandle]) -> NodeHandle {
    for _ in 0..200 {
        for h in handles {
            if h.stats().await.unwrap().site.role == RoleKind::Master {
                return h.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no master within 10 s");
}

#[tokio::test(flavor = "current_thread")]
async fn three_sites_over_tcp_elect_a_master_and_replicate_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(3);
    let mut handles = Vec::new();
    let mut events = Vec::new();
    for addr in &addrs {
        let (h, ev) = start_site(addr, &addrs, "s3cret", dir.path()).await;
        handles.push(h);
        events.push(ev);
    }
    let master = wait_for_master(&handles).await;
    let reply = master
        .request(Request::Commit(Txn::put("k", "v")))
        .await
        .unwrap();
    assert!(matches!(reply, Ok(Reply::Committed { .. })), "{reply:?}");
    for h in &handles {
        let mut value = None;
        for _ in 0..100 {
            value = h.get("k").await.unwrap();
            if value.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(value.as_deref(), Some(&b"v"[..]), "{}", h.addr());
    }
    let stats = master.stats().await.unwrap();
    assert_eq!(stats.connected_peers, 2);
    assert!(stats.bytes_sent > 0 && stats.bytes_received > 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_site_without_the_group_secret_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(3);
    let group = &addrs[..2];
    let mut handles = Vec::new();
    for addr in group {
        handles.push(start_site(addr, group, "s3cret", dir.path()).await);
    }
    // The rogue lists itself with the group, but does not know the secret.
    let (rogue, _) = start_site(&addrs[2], &addrs, "guess", dir.path()).await;
    let master = wait_for_master(&handles.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>()).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let rogue_stats = rogue.stats().await.unwrap();
    assert_eq!(rogue_stats.connected_peers, 0, "nobody talks to the rogue");
    assert!(rogue_stats.handshakes_refused > 0);
    let mut refused_by_members = 0;
    let mut refusal_events = 0;
    for (h, events) in &mut handles {
        refused_by_members += h.stats().await.unwrap().handshakes_refused;
        while let Ok(event) = events.try_recv() {
            refusal_events += usize::from(matches!(event, NodeEvent::HandshakeRefused { .. }));
        }
    }
    assert!(refused_by_members > 0, "the members counted the refusals");
    assert!(refusal_events > 0, "and reported them as events");
    assert_ne!(master.addr(), rogue.addr());
}

#[tokio::test(flavor = "current_thread")]
async fn status_shows_the_membership_and_connected_peers_and_shutdown_syncs_the_storage() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(3);
    let mut handles = Vec::new();
    for addr in &addrs {
        handles.push(start_site(addr, &addrs, "s3cret", dir.path()).await.0);
    }
    let master = wait_for_master(&handles).await;
    let reply = master
        .request(Request::Commit(Txn::put("kept", "after shutdown")))
        .await
        .unwrap();
    let Ok(Reply::Committed { lsn }) = reply else {
        panic!("{reply:?}")
    };
    // A static version-2 group writes its membership database once the master has met everyone.
    let mut status = master.status().await.unwrap();
    for _ in 0..100 {
        if status.members.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = master.status().await.unwrap();
    }
    let members: Vec<_> = status.members.keys().cloned().collect();
    let mut expected = addrs.clone();
    expected.sort();
    assert_eq!(members, expected);
    let others: Vec<_> = expected
        .into_iter()
        .filter(|a| a != master.addr())
        .collect();
    assert_eq!(status.connected, others);
    assert_eq!(status.stats.connected_peers, 2);

    // Shutdown answers once the storage is synced, then the node is gone.
    master.shutdown().await.unwrap().expect("storage synced");
    assert!(master.stats().await.is_err(), "the node stopped");
    let master_dir = dir.path().join(master.addr().as_str().replace(':', "_"));
    let (mut storage, recovery) = FileStorage::open(&master_dir).unwrap();
    assert_eq!(recovery.dropped_records, 0);
    let snapshot = replication::storage::replay(&mut storage).unwrap();
    assert!(snapshot.pos().lsn >= lsn);
    assert_eq!(snapshot.db.get(b"kept"), Some(&b"after shutdown"[..]));
}
