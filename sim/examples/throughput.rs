//! Measures the simulator: a 5-site group under a steady write load for 60 simulated seconds
//! (ten seeds).
//! Prints simulated seconds per wall second, messages per wall second and wall time per seed,
//! then madsim's bare messaging floor on the same machine in the same run: five simulated nodes
//! that only send as many framed messages to each other over simulated TCP (each flushed, as the
//! driver does, and each after a 1 ms simulated pause, so that every send is a timer event as in
//! the engine), and the engine's messages per wall second as a share of that floor.
//!
//! `ENGINE_ONLY=1` skips the floor (to profile the engine alone); `FLOOR_ONLY=N` runs only the
//! floor, with N messages.
//!
//! Run: `cargo run --release --config "build.rustflags=['--cfg','madsim']" --target-dir target/sim -p repsim-sim --example throughput`

#[cfg(madsim)]
fn main() {
    use madsim::runtime::Runtime;
    use replication::site::Request;
    use replication::Txn;
    use sim::world::World;
    use std::time::Duration;

    // Ten seeds: a run of three took a fifth of a second, too short to measure steadily.
    let seeds = 10;
    if let Some(n) = std::env::var("FLOOR_ONLY")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        let wall = std::time::Instant::now();
        floor::run(1, n);
        println!("floor: {n} messages in {:?}", wall.elapsed());
        return;
    }
    let wall = std::time::Instant::now();
    let mut messages = 0u64;
    let mut commits = 0u64;
    for seed in 0..seeds {
        let (m, c) =
            Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(async move {
                let world = World::start(5, seed, |_, _| {});
                let start = tokio::time::Instant::now();
                let mut commits = 0u64;
                // As a client does, the load writes to the master it knows and asks the group
                // who is master only when a write fails (asking every site before every write
                // cost the simulator as much as the group's own messages).
                let mut master = None;
                while start.elapsed() < Duration::from_secs(60) {
                    if master.is_none() {
                        master = world.master().await;
                    }
                    if let Some(at) = &master {
                        let key = format!("k{}", commits % 100);
                        match world.request(at, Request::Commit(Txn::put(key, "v"))).await {
                            Ok(_) => commits += 1,
                            Err(_) => master = None,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let mut messages = 0;
                for addr in world.addrs() {
                    if let Some(h) = world.handle(&addr) {
                        messages += h.stats().await.map(|s| s.site.messages_sent).unwrap_or(0);
                    }
                }
                (messages, commits)
            });
        messages += m;
        commits += c;
    }
    let secs = wall.elapsed().as_secs_f64();
    if std::env::var("ENGINE_ONLY").is_ok() {
        println!("engine {:.0} msg/s", messages as f64 / secs);
        return;
    }
    let floor_wall = std::time::Instant::now();
    for seed in 0..seeds {
        floor::run(seed, messages / seeds);
    }
    let floor_rate = messages as f64 / floor_wall.elapsed().as_secs_f64();
    let engine_rate = messages as f64 / secs;
    println!(
        "madsim floor: {floor_rate:.0} messages per wall s; the engine runs at {:.2} of it",
        engine_rate / floor_rate
    );
    println!(
        "{seeds} seeds x 60 simulated s, 5 sites: wall {:.2} s ({:.2} s per seed), {:.0} simulated s per wall s, {:.0} messages per wall s, {} commits",
        secs,
        secs / seeds as f64,
        60.0 * seeds as f64 / secs,
        messages as f64 / secs,
        commits
    );
}

/// madsim's bare messaging floor: nodes that do nothing but send framed messages.
#[cfg(madsim)]
mod floor {
    use madsim::runtime::{Handle, Runtime};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const NODES: u8 = 5;
    const FRAME: usize = 100;
    const GAP: std::time::Duration = std::time::Duration::from_millis(1);

    /// Sends about `total` messages among five nodes, each to each, and waits until all arrive.
    pub fn run(seed: u64, total: u64) {
        let per_link = (total / u64::from(NODES * (NODES - 1))).max(1);
        let want = per_link * u64::from(NODES * (NODES - 1));
        Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(async move {
            let received = Arc::new(AtomicU64::new(0));
            let addr = |i: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i + 1)), 7000);
            let mut nodes = Vec::new();
            for i in 0..NODES {
                let received = received.clone();
                let node = Handle::current()
                    .create_node()
                    .ip(addr(i).ip())
                    .init(move || {
                        let received = received.clone();
                        async move {
                            let listener = tokio::net::TcpListener::bind(addr(i)).await.unwrap();
                            tokio::spawn(async move {
                                loop {
                                    let (mut stream, _) = listener.accept().await.unwrap();
                                    let received = received.clone();
                                    tokio::spawn(async move {
                                        let mut frame = [0u8; 4 + FRAME];
                                        while stream.read_exact(&mut frame).await.is_ok() {
                                            received.fetch_add(1, Ordering::Relaxed);
                                        }
                                    });
                                }
                            });
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            for j in (0..NODES).filter(|&j| j != i) {
                                tokio::spawn(async move {
                                    let mut stream =
                                        tokio::net::TcpStream::connect(addr(j)).await.unwrap();
                                    let mut frame = [7u8; 4 + FRAME];
                                    frame[..4].copy_from_slice(&(FRAME as u32).to_be_bytes());
                                    for _ in 0..per_link {
                                        stream.write_all(&frame).await.unwrap();
                                        stream.flush().await.unwrap();
                                        // Spread over simulated time as the engine's messages
                                        // are: each send its own timer event.
                                        tokio::time::sleep(GAP).await;
                                    }
                                });
                            }
                            // A node whose init returns is done: keep it running.
                            std::future::pending::<()>().await;
                        }
                    })
                    .build();
                nodes.push(node);
            }
            while received.load(Ordering::Relaxed) < want {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        });
    }
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("build with --cfg madsim (see the command at the top of this file)");
}
