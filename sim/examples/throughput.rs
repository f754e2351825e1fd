//! Measures the simulator: a 5-site group under a steady write load for 60 simulated seconds.
//! Prints simulated seconds per wall second, messages per wall second and wall time per seed.
//!
//! Run: `cargo run --release --config "build.rustflags=['--cfg','madsim']" --target-dir target/sim -p repsim-sim --example throughput`

#[cfg(madsim)]
fn main() {
    use madsim::runtime::Runtime;
    use replication::site::Request;
    use replication::Txn;
    use sim::world::World;
    use std::time::Duration;

    let seeds = 3;
    let wall = std::time::Instant::now();
    let mut messages = 0u64;
    let mut commits = 0u64;
    for seed in 0..seeds {
        let (m, c) =
            Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(async move {
                let world = World::start(5, seed, |_, _| {});
                let start = tokio::time::Instant::now();
                let mut commits = 0u64;
                while start.elapsed() < Duration::from_secs(60) {
                    if let Some(master) = world.master().await {
                        let key = format!("k{}", commits % 100);
                        if world
                            .request(&master, Request::Commit(Txn::put(key, "v")))
                            .await
                            .is_ok()
                        {
                            commits += 1;
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
    println!(
        "{seeds} seeds x 60 simulated s, 5 sites: wall {:.2} s ({:.2} s per seed), {:.0} simulated s per wall s, {:.0} messages per wall s, {} commits",
        secs,
        secs / seeds as f64,
        60.0 * seeds as f64 / secs,
        messages as f64 / secs,
        commits
    );
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("build with --cfg madsim (see the command at the top of this file)");
}
