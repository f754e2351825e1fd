//! The site's metrics for Prometheus: `GET /metrics` on the `metrics` address answers the
//! OpenMetrics text format with the site's role, generation, log positions, its counters
//! (commits, PermFailed, elections, rollbacks, inits, messages, bytes, connections) and a
//! histogram of commit latency as the admin protocol's clients saw it.
//!
//! Each scrape reads the node's statistics at that moment into a fresh registry (the engine keeps
//! the counters; this only shows them), beside the one histogram kept across scrapes. The HTTP
//! side is tiny_http on a thread of its own, which asks the node through the runtime's handle.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use replication::node::{NodeHandle, NodeStats};
use replication::site::RoleKind;
use std::time::Duration;

/// Commit latency seen by the admin protocol, kept across scrapes.
#[derive(Clone)]
pub struct CommitLatency(Histogram);

impl Default for CommitLatency {
    fn default() -> Self {
        // 100 µs to about 13 s.
        CommitLatency(Histogram::new(exponential_buckets(0.0001, 2.0, 18)))
    }
}

impl CommitLatency {
    /// One commit took `took`.
    pub fn observe(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

/// The text a scrape answers for `stats` and the latency histogram.
pub fn render(stats: &NodeStats, latency: &CommitLatency) -> String {
    let mut registry = Registry::with_prefix("repsite");
    let site = &stats.site;
    let roles = Family::<RoleLabel, Gauge>::default();
    for (kind, role) in [
        (RoleKind::Master, "master"),
        (RoleKind::Client, "client"),
        (RoleKind::Electing, "electing"),
    ] {
        roles
            .get_or_create(&RoleLabel { role })
            .set(i64::from(site.role == kind));
    }
    registry.register("role", "1 for the site's current role", roles);
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(name, help, g);
    };
    gauge(
        &mut registry,
        "generation",
        "The highest master generation seen",
        site.gen,
    );
    gauge(
        &mut registry,
        "last_lsn",
        "LSN of the last record in the log",
        site.last.lsn,
    );
    gauge(
        &mut registry,
        "first_lsn",
        "First LSN still in the log",
        site.first_lsn,
    );
    gauge(
        &mut registry,
        "connected_peers",
        "Peers with an established connection",
        stats.connected_peers as u64,
    );
    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        registry.register(name, help, c);
    };
    counter(
        &mut registry,
        "commits",
        "Transactions committed as master",
        site.commits,
    );
    counter(
        &mut registry,
        "perm_failed",
        "Commits that missed their acks",
        site.perm_failed,
    );
    counter(
        &mut registry,
        "elections",
        "Elections taken part in",
        site.elections,
    );
    counter(
        &mut registry,
        "elections_won",
        "Elections won",
        site.elections_won,
    );
    counter(
        &mut registry,
        "txns_rolled_back",
        "Transactions rolled back to rejoin a master's log",
        site.txns_rolled_back,
    );
    counter(
        &mut registry,
        "inits",
        "Internal initialisations from a snapshot",
        site.inits,
    );
    counter(
        &mut registry,
        "messages_sent",
        "Messages sent",
        site.messages_sent,
    );
    counter(
        &mut registry,
        "messages_received",
        "Messages received",
        site.messages_received,
    );
    counter(
        &mut registry,
        "bytes_sent",
        "Bytes sent to peers",
        stats.bytes_sent,
    );
    counter(
        &mut registry,
        "bytes_received",
        "Bytes received from peers",
        stats.bytes_received,
    );
    counter(
        &mut registry,
        "malformed_frames",
        "Frames that were not the protocol's (their connection was closed)",
        stats.malformed_frames,
    );
    counter(
        &mut registry,
        "handshakes_refused",
        "Connections refused at the handshake",
        stats.handshakes_refused,
    );
    registry.register(
        "commit_latency_seconds",
        "Commit latency of admin puts, from request to answer",
        latency.0.clone(),
    );
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// Serves `GET /metrics` on `addr` until the process ends. Returns at once; an address that
/// cannot be bound is an error for the caller to report.
pub fn serve(
    addr: &str,
    node: NodeHandle,
    latency: CommitLatency,
    runtime: tokio::runtime::Handle,
) -> Result<(), String> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = if request.method() != &tiny_http::Method::Get
                    || request.url() != "/metrics"
                {
                    tiny_http::Response::from_string("only GET /metrics is served here\n")
                        .with_status_code(404)
                } else {
                    match runtime.block_on(node.stats()) {
                        Ok(stats) => {
                            let content_type = tiny_http::Header::from_bytes(
                                &b"Content-Type"[..],
                                &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
                            )
                            .expect("a valid header");
                            tiny_http::Response::from_string(render(&stats, &latency))
                                .with_header(content_type)
                        }
                        Err(_) => tiny_http::Response::from_string("the site is stopping\n")
                            .with_status_code(503),
                    }
                };
                // A scraper that went away is its own problem.
                let _ = request.respond(response);
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_shows_the_role_the_counters_and_the_latency() {
        let mut stats = NodeStats::default();
        stats.site.role = RoleKind::Master;
        stats.site.gen = 4;
        stats.site.commits = 17;
        stats.bytes_sent = 1024;
        let latency = CommitLatency::default();
        latency.observe(Duration::from_millis(3));
        let text = render(&stats, &latency);
        for line in [
            "repsite_role{role=\"master\"} 1",
            "repsite_role{role=\"client\"} 0",
            "repsite_generation 4",
            "repsite_commits_total 17",
            "repsite_bytes_sent_total 1024",
            "repsite_commit_latency_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
