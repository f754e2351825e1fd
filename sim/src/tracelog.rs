//! The world's trace: one line per world action and node event, plus what the engine logs
//! through `tracing`, each with the simulated time. Message deliveries (one per message, told
//! by each node's [`DeliveryObserver`]) are too many to keep as lines; they are folded into the
//! trace hash instead, so the hash still changes when any delivery does.

use crate::check::Observed;
use replication::node::{DeliveryObserver, NodeEvent};
use replication::types::SiteAddr;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// What a run records.
#[derive(Default)]
pub struct TraceLog {
    pub(crate) lines: Vec<String>,
    pub(crate) events: Vec<Observed>,
    /// FNV-1a state over every delivery line, in order.
    deliveries_hash: u64,
    /// Deliveries folded into `deliveries_hash`.
    pub(crate) deliveries: u64,
    /// For each site, where in `events` its running node's events begin (the counters of a
    /// site count from its latest start).
    pub(crate) starts: BTreeMap<SiteAddr, usize>,
}

impl TraceLog {
    pub(crate) fn world(&mut self, ms: u128, what: String) {
        self.lines.push(format!("{ms} {what}"));
    }

    /// `site`'s node started: its events from here on are its new incarnation's.
    pub(crate) fn started(&mut self, site: &SiteAddr) {
        self.starts.insert(site.clone(), self.events.len());
    }

    pub(crate) fn site(&mut self, ms: u128, site: &SiteAddr, event: NodeEvent) {
        self.lines.push(format!("{ms} {site} {event:?}"));
        self.events.push(Observed {
            ms: ms as u64,
            site: site.clone(),
            event,
        });
    }

    /// Folds one delivery into the deliveries' hash: when, where, from whom, what kind.
    fn delivery(&mut self, ms: u64, site: &SiteAddr, from: &SiteAddr, kind: &str) {
        if self.deliveries == 0 {
            self.deliveries_hash = 0xcbf2_9ce4_8422_2325;
        }
        let mut fold = Fold(&mut self.deliveries_hash);
        fold.word(ms);
        for part in [site.as_str(), from.as_str(), kind] {
            fold.bytes(part.as_bytes());
        }
        self.deliveries += 1;
    }

    /// The run's fingerprint: the lines, then the deliveries.
    pub fn hash(&self) -> u64 {
        let summary = format!(
            "deliveries {} {:016x}",
            self.deliveries, self.deliveries_hash
        );
        crate::trace_hash(
            self.lines
                .iter()
                .map(String::as_str)
                .chain(std::iter::once(summary.as_str())),
        )
    }
}

/// The shared trace of a world.
pub type Trace = Arc<Mutex<TraceLog>>;

/// Folds every site's deliveries into a world's trace, with simulated time.
pub(crate) struct DeliveryRecorder {
    pub(crate) trace: Trace,
    pub(crate) start: crate::clock::Elapsed,
}

impl DeliveryObserver for DeliveryRecorder {
    fn delivered(&self, site: &SiteAddr, from: &SiteAddr, kind: &'static str) {
        let ms = self.start.elapsed().as_millis() as u64;
        let mut trace = self.trace.lock().expect("trace lock");
        trace.delivery(ms, site, from, kind);
    }
}

/// A `tracing` layer that writes the engine's log into a world's trace with simulated time.
pub(crate) struct TraceLayer {
    pub(crate) trace: Trace,
    pub(crate) start: crate::clock::Elapsed,
}

/// A running 64-bit hash of what is folded into it, eight bytes at a time (FxHash's
/// rotate-xor-multiply step; byte-at-a-time FNV over every delivery cost a few per cent of a
/// simulated run). Each piece is followed by its length, so where one ends is part of the hash.
struct Fold<'a>(&'a mut u64);

impl Fold<'_> {
    fn word(&mut self, word: u64) {
        *self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.word(u64::from_le_bytes(word.try_into().expect("eight bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            // Byte by byte: a copy into a word's buffer was a call to `memcpy`.
            let last = rest
                .iter()
                .rev()
                .fold(0u64, |word, &byte| word << 8 | u64::from(byte));
            self.word(last);
        }
        self.word(bytes.len() as u64);
    }
}

/// Collects an event's fields as `message k=v k=v`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

/// The engine's own log at INFO and above; not the lines that repeat the node's events, which
/// the world records as events already. A property of the callsite alone, so tracing can cache
/// it: every other event (madsim's own chatter, the node's TRACE line per delivery) then costs
/// nothing.
fn wanted(metadata: &tracing::Metadata<'_>) -> bool {
    let target = metadata.target();
    if target == replication::node::EVENT_LOG_TARGET {
        return false;
    }
    target.starts_with("replication") && *metadata.level() <= Level::INFO
}

impl<S: Subscriber> Layer<S> for TraceLayer {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if wanted(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        wanted(metadata)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let ms = self.start.elapsed().as_millis();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = format!(
            "{ms} {} {}{}",
            event.metadata().level(),
            fields.message,
            fields.rest
        );
        self.trace.lock().expect("trace lock").lines.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A world's trace with deliveries to s1 from `senders`, told by its recorder.
    fn traced(senders: &[&str]) -> TraceLog {
        let trace: Trace = Arc::default();
        trace.lock().unwrap().world(5, "world heal".into());
        let recorder = DeliveryRecorder {
            trace: trace.clone(),
            start: crate::clock::Elapsed::start(),
        };
        for from in senders {
            recorder.delivered(&SiteAddr::new("s1"), &SiteAddr::new(*from), "log");
        }
        drop(recorder);
        Arc::try_unwrap(trace).ok().unwrap().into_inner().unwrap()
    }

    #[test]
    fn deliveries_are_not_kept_as_lines_but_change_the_hash() {
        let none = traced(&[]);
        assert_eq!(none.hash(), traced(&[]).hash());
        let a = traced(&["s2"]);
        assert_ne!(a.hash(), none.hash(), "a delivery changes the hash");
        assert_eq!(
            a.hash(),
            traced(&["s2"]).hash(),
            "the same one, the same hash"
        );
        assert_ne!(a.hash(), traced(&["s3"]).hash(), "so does who sent it");
        assert_ne!(a.hash(), traced(&["s2", "s2"]).hash(), "and how many");
        assert_eq!(
            (a.lines.len(), a.deliveries),
            (1, 1),
            "deliveries are not kept as lines"
        );
    }

    #[test]
    fn the_layer_writes_engine_logs_as_lines_and_nothing_else() {
        use tracing_subscriber::layer::SubscriberExt;
        let trace: Trace = Arc::default();
        let layer = TraceLayer {
            trace: trace.clone(),
            start: crate::clock::Elapsed::start(),
        };
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "replication::node", site = "s1", "node stopped");
            // Events the world records as the site's own: not kept twice.
            use replication::node::EVENT_LOG_TARGET;
            tracing::info!(target: EVENT_LOG_TARGET, site = "s1", event = "X", "event");
            tracing::info!(target: EVENT_LOG_TARGET, site = "s1", peer = "s2", "connected");
            // The node's line per delivery: its recorder folds deliveries, not the layer.
            tracing::trace!(target: "replication::node", site = "s1", from = "s2", "deliver");
            tracing::info!(target: "somebody::else", "not ours");
            tracing::debug!(target: "replication::site", "too chatty");
        });
        let log = trace.lock().unwrap();
        assert_eq!(log.lines.len(), 1, "{:?}", log.lines);
        assert!(
            log.lines[0].ends_with("INFO node stopped site=\"s1\"")
                || log.lines[0].contains("INFO node stopped site=s1"),
            "{:?}",
            log.lines
        );
        assert_eq!(log.deliveries, 0);
    }
}
