//! Writes the seed corpus of the `frame_decode` fuzz target: real frames of the messages a group
//! on the in-memory network exchanges through elections, commits, a crash and rollback, log
//! archiving and internal initialisation, joins, a removal and a switchover, plus both sides of
//! a real handshake. Rerun it after changing the messages or the framing:
//!
//! ```sh
//! cargo run -p repsim-replication --example fuzz_seeds -- fuzz/corpus/frame_decode
//! ```
//!
//! Deterministic: the same build writes the same files.

use replication::site::{Config, Request};
use replication::testkit::Network;
use replication::wire::handshake::{Handshake, HandshakeConfig, HandshakeStep};
use replication::wire::{encode_frame, Message, PROTOCOL_VERSION};
use replication::{SiteAddr, Txn};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Frames kept per message kind and version: the smallest and the largest seen (up to this
/// size, so the corpus stays small).
const MAX_SEED_BYTES: usize = 4096;

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus/frame_decode".into()),
    );
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    let mut messages = static_group_run();
    messages.extend(membership_run());
    messages.extend(handshake_run());
    messages.push(Message::KeepAlive);

    // (kind, version) -> frames, smallest and largest within the size cap.
    let mut kept: BTreeMap<(&str, u8), Vec<Vec<u8>>> = BTreeMap::new();
    for msg in &messages {
        for version in msg.min_version()..=PROTOCOL_VERSION {
            let frame = encode_frame(version, msg);
            if frame.len() > MAX_SEED_BYTES {
                continue;
            }
            let slot = kept.entry((msg.kind(), version)).or_default();
            slot.push(frame);
            slot.sort_by_key(Vec::len);
            slot.dedup();
            if slot.len() > 2 {
                slot.remove(1);
            }
        }
    }
    let mut written = 0;
    for ((kind, version), frames) in &kept {
        for (i, frame) in frames.iter().enumerate() {
            let name = format!("{kind}-v{version}-{}", ["small", "large"][i]);
            std::fs::write(dir.join(name), frame).expect("write a seed");
            written += 1;
        }
    }
    // A stream of many frames back to back, as a connection carries them.
    let stream: Vec<u8> = messages
        .iter()
        .take(40)
        .flat_map(|m| encode_frame(PROTOCOL_VERSION, m))
        .collect();
    std::fs::write(dir.join("stream-first-40-messages"), stream).expect("write a seed");
    println!(
        "{} messages captured, {} seeds written to {}",
        messages.len(),
        written + 1,
        dir.display()
    );
}

/// Three sites on a static list: election, commits, the master crashes and returns (rolling
/// back what only it had), archiving that sends a lagging client to internal initialisation,
/// and a switchover.
fn static_group_run() -> Vec<Message> {
    let mut net = Network::new(3, 7, |_, _| {});
    net.record_messages();
    assert!(net.settle(10_000), "a master is elected");
    let master = net.master().expect("master");
    for i in 0..5 {
        net.commit(&master, Txn::put(format!("k{i}"), format!("v{i}")));
        net.run_for(50);
    }
    let client = net
        .addrs()
        .into_iter()
        .find(|a| *a != master)
        .expect("client");
    net.crash(&client);
    for i in 5..10 {
        net.commit(&master, Txn::put(format!("k{i}"), vec![i as u8; 64]));
        net.run_for(50);
    }
    net.request(&master, Request::Archive { keep_records: 2 });
    net.restart(&client);
    assert!(net.settle(10_000));
    // The master writes a tail nobody else gets, crashes, and returns to roll it back.
    let rest: Vec<SiteAddr> = net.addrs().into_iter().filter(|a| *a != master).collect();
    net.partition(&[std::slice::from_ref(&master), &rest]);
    net.commit(&master, Txn::delete("k1"));
    net.run_for(5_000);
    net.heal();
    assert!(net.settle(10_000));
    let master = net.master().expect("master");
    let target = net
        .addrs()
        .into_iter()
        .find(|a| *a != master)
        .expect("target");
    net.request(&master, Request::StepDown { to: target });
    net.run_for(5_000);
    net.recorded_messages()
        .iter()
        .map(|(_, _, m)| m.clone())
        .collect()
}

/// A group created by one site, two joining through it, then one removed (which, restarted,
/// is told so).
fn membership_run() -> Vec<Message> {
    let mut net = Network::empty(11);
    net.record_messages();
    net.add_site(Config::group_creator(Network::addr(1)));
    for i in 2..=3 {
        net.add_site(Config::joining(Network::addr(i), Network::addr(1)));
        net.run_for(2_000);
    }
    net.request(
        &Network::addr(2),
        Request::RemoveSite {
            site: Network::addr(3),
        },
    );
    net.run_for(3_000);
    // The removed site restarts and asks around: the master tells it it was removed.
    net.crash(&Network::addr(3));
    net.restart(&Network::addr(3));
    net.run_for(3_000);
    net.recorded_messages()
        .iter()
        .map(|(_, _, m)| m.clone())
        .collect()
}

/// Both sides of a handshake between two holders of the secret.
fn handshake_run() -> Vec<Message> {
    let cfg = |site: &str| HandshakeConfig {
        group: "payroll".into(),
        site: SiteAddr::new(site),
        secret: b"s3cret".to_vec(),
        versions: 1..=PROTOCOL_VERSION,
    };
    let (mut a, hello_a) = Handshake::start(cfg("10.0.0.1:7000"), [1; 16]);
    let (mut b, hello_b) = Handshake::start(cfg("10.0.0.2:7000"), [2; 16]);
    let mut out = vec![hello_a.clone(), hello_b.clone()];
    for (side, hello) in [(&mut a, hello_b), (&mut b, hello_a)] {
        if let Ok(HandshakeStep::Send(proof)) = side.on_message(hello) {
            out.push(proof);
        }
    }
    out
}
