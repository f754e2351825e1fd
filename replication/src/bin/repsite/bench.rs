//! `repsite bench`: a quick measure of what a group does on this machine. Starts an N-site
//! static group in-process on loopback TCP with `FileStorage` in temporary directories (real
//! files, real fsync), waits for a master and for every site to follow it, then commits W writes
//! from C concurrent clients through the master and reports commits per second and commit
//! latency percentiles. The figures are measured, never asserted: they depend on the disk, the
//! cores and whatever else runs.

use crate::run::os_seed;
use replication::node::{self, MonotonicClock, NodeConfig, NodeHandle};
use replication::site::{AckPolicy, Config, Reply, Request, RoleKind};
use replication::storage::FileStorage;
use replication::{SiteAddr, Txn};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the group may take to elect a master and connect everyone.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchParams {
    /// Sites in the group.
    pub sites: usize,
    /// Writes to commit.
    pub writes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Ack policy of every site.
    pub policy: AckPolicy,
    /// Bytes per value.
    pub value_bytes: usize,
}

/// What was measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Sites in the group.
    pub sites: usize,
    /// The ack policy.
    pub policy: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Writes attempted.
    pub writes: usize,
    /// Writes committed as the policy asks.
    pub committed: usize,
    /// Writes that failed, by error.
    pub failed: BTreeMap<String, usize>,
    /// Wall time of the write phase, in seconds.
    pub elapsed_s: f64,
    /// Committed writes per second.
    pub commits_per_s: f64,
    /// Median commit latency, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile commit latency, in milliseconds.
    pub p99_ms: f64,
    /// Slowest commit, in milliseconds.
    pub max_ms: f64,
    /// How long the group took to elect a master and connect, in seconds.
    pub settle_s: f64,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad parameters.
    #[error("{0}")]
    Params(String),
    /// Setting up (directories, ports, runtime, nodes) failed.
    #[error("setting up the group: {0}")]
    Setup(String),
    /// No master in time.
    #[error("no master with every site following it within {SETTLE_TIMEOUT:?}")]
    NoMaster,
}

impl BenchParams {
    fn check(&self) -> Result<(), BenchError> {
        if !(1..=9).contains(&self.sites) {
            return Err(BenchError::Params(format!(
                "--sites {}: expected 1 to 9",
                self.sites
            )));
        }
        if self.writes == 0 || self.clients == 0 {
            return Err(BenchError::Params(
                "--writes and --clients must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Runs the benchmark and removes its directories, whatever happens.
pub fn run(params: &BenchParams) -> Result<BenchReport, BenchError> {
    params.check()?;
    let dirs = TempDirs::new().map_err(|e| BenchError::Setup(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    runtime.block_on(bench(params, &dirs.root))
}

async fn bench(params: &BenchParams, root: &std::path::Path) -> Result<BenchReport, BenchError> {
    let setup = |e: String| BenchError::Setup(e);
    let addrs = free_addrs(params.sites).map_err(|e| setup(e.to_string()))?;
    let mut handles = Vec::new();
    let seed = os_seed();
    for (i, addr) in addrs.iter().enumerate() {
        let mut site = Config::new(addr.clone(), addrs.clone());
        site.ack_policy = params.policy;
        // Quicker than the defaults so the group settles fast on loopback.
        site.timeouts.heartbeat_interval_ms = 100;
        site.timeouts.heartbeat_timeout_ms = 600;
        site.timeouts.election_timeout_ms = 400;
        site.timeouts.election_jitter_ms = 200;
        let (storage, _) =
            FileStorage::open(root.join(format!("site{i}"))).map_err(|e| setup(e.to_string()))?;
        let cfg = NodeConfig::new(site, "bench", b"bench secret".to_vec());
        let (handle, mut events) = node::start(
            cfg,
            storage,
            Arc::new(MonotonicClock::new()),
            seed.wrapping_add(i as u64),
        )
        .await
        .map_err(|e| setup(e.to_string()))?;
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        handles.push(handle);
    }

    let settle_start = Instant::now();
    let master = settled_master(&handles).await.ok_or(BenchError::NoMaster)?;
    let settle = settle_start.elapsed();

    let value = "v".repeat(params.value_bytes);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..params.clients {
        let master = master.clone();
        let next = next.clone();
        let value = value.clone();
        let writes = params.writes;
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= writes {
                    break;
                }
                let txn = Txn::put(format!("bench-{i}"), value.as_str());
                let began = Instant::now();
                match master.request(Request::Commit(txn)).await {
                    Ok(Ok(Reply::Committed { .. })) => latencies.push(began.elapsed()),
                    Ok(Ok(other)) => *failed.entry(format!("{other:?}")).or_default() += 1,
                    Ok(Err(e)) => *failed.entry(error_name(&e)).or_default() += 1,
                    Err(e) => *failed.entry(e.to_string()).or_default() += 1,
                }
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::with_capacity(params.writes);
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for client in clients {
        let (l, f) = client
            .await
            .map_err(|e| setup(format!("a client task failed: {e}")))?;
        latencies.extend(l);
        for (k, n) in f {
            *failed.entry(k).or_default() += n;
        }
    }
    let elapsed = start.elapsed();
    for handle in &handles {
        let _ = handle.shutdown().await;
    }
    latencies.sort();
    let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    Ok(BenchReport {
        sites: params.sites,
        policy: params.policy.name().into(),
        clients: params.clients,
        writes: params.writes,
        committed: latencies.len(),
        failed,
        elapsed_s: elapsed.as_secs_f64(),
        commits_per_s: latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: ms(percentile(&latencies, 50.0)),
        p99_ms: ms(percentile(&latencies, 99.0)),
        max_ms: ms(latencies.last().copied()),
        settle_s: settle.as_secs_f64(),
    })
}

/// The engine's error name without its details, to group failures.
fn error_name(e: &replication::site::RequestError) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("error")
        .to_string()
}

/// Waits until one site is master and every other site follows it over a connection: before
/// that, commits would measure the election rather than replication.
async fn settled_master(handles: &[NodeHandle]) -> Option<NodeHandle> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline {
        let mut master = None;
        let mut following = 0;
        for h in handles {
            let Ok(stats) = h.stats().await else { continue };
            if stats.site.role == RoleKind::Master && stats.connected_peers + 1 == handles.len() {
                master = Some(h.clone());
            }
            if stats.site.master.is_some() {
                following += 1;
            }
        }
        if let Some(master) = master {
            let master_addr = master.addr().clone();
            let mut agree = true;
            for h in handles {
                let m = h.stats().await.ok().and_then(|s| s.site.master);
                agree &= m.as_ref() == Some(&master_addr);
            }
            if agree && following == handles.len() {
                return Some(master);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The nearest-rank percentile `p` of sorted `values`.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Loopback addresses with ports the system just handed out. The listeners are closed before
/// the nodes bind, so another process could take a port in between; for a benchmark that only
/// means a retry.
fn free_addrs(n: usize) -> std::io::Result<Vec<SiteAddr>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(SiteAddr::new(l.local_addr()?.to_string())))
        .collect()
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDirs {
    root: PathBuf,
}

impl TempDirs {
    fn new() -> std::io::Result<TempDirs> {
        let root = std::env::temp_dir().join(format!(
            "repsite-bench-{}-{:x}",
            std::process::id(),
            os_seed()
        ));
        std::fs::create_dir_all(&root)?;
        Ok(TempDirs { root })
    }
}

impl Drop for TempDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The report for people.
pub fn render(r: &BenchReport) -> String {
    let failed: usize = r.failed.values().sum();
    let mut out = format!(
        "repsite bench: {} sites, ack policy {}, {} writes from {} clients\n",
        r.sites, r.policy, r.writes, r.clients
    );
    out += &format!(
        "  settled     master elected and followed in {:.2} s\n",
        r.settle_s
    );
    out += &format!("  committed   {} ({failed} failed)\n", r.committed);
    for (error, n) in &r.failed {
        out += &format!("    {n} x {error}\n");
    }
    out += &format!("  elapsed     {:.3} s\n", r.elapsed_s);
    out += &format!("  throughput  {:.0} commits/s\n", r.commits_per_s);
    out += &format!(
        "  latency     p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        r.p50_ms, r.p99_ms, r.max_ms
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&values, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&values, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&values, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&ms(&[7]), 99.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let params = BenchParams {
            sites: 0,
            writes: 10,
            clients: 1,
            policy: AckPolicy::Quorum,
            value_bytes: 8,
        };
        assert!(run(&params).unwrap_err().to_string().contains("--sites 0"));
        let params = BenchParams {
            sites: 3,
            writes: 0,
            ..params
        };
        assert!(matches!(run(&params), Err(BenchError::Params(_))));
    }

    #[test]
    fn a_small_group_commits_every_write_and_measures_them() {
        let params = BenchParams {
            sites: 3,
            writes: 40,
            clients: 4,
            policy: AckPolicy::Quorum,
            value_bytes: 16,
        };
        let report = run(&params).unwrap();
        assert_eq!(report.committed, 40, "{report:?}");
        assert!(report.failed.is_empty(), "{report:?}");
        assert!(report.commits_per_s > 0.0);
        assert!(report.p50_ms <= report.p99_ms && report.p99_ms <= report.max_ms);
        let text = render(&report);
        assert!(text.contains("commits/s") && text.contains("p99"), "{text}");
    }
}
