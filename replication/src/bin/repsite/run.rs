//! `repsite run`: one site of a replication group as a daemon. Opens the site's storage, starts
//! the node driver on real TCP, serves the admin protocol, logs, and on SIGINT or SIGTERM shuts
//! down cleanly: the node syncs its storage before the process exits, so a stop is never a crash.
//!
//! Everything here is wiring; the replication decisions stay in the core and the driver.

use crate::admin;
use crate::config::SiteConfig;
use replication::node::{self, MonotonicClock, NodeEvent};
use replication::storage::fs::{DirLock, FileSystem, LockError, StdFs};
use replication::storage::FileStorage;
use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Why the daemon stopped with an error (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The message log could not be opened.
    #[error("cannot open the message log {path}: {source}")]
    MessageLog {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Another process has the data directory (exit status 2: nothing was touched).
    #[error("cannot open the data directory: {0}")]
    Locked(LockError),
    /// The storage directory could not be opened.
    #[error("cannot open the data directory: {0}")]
    Storage(#[from] replication::storage::StorageError),
    /// The node could not start.
    #[error("cannot start the site: {0}")]
    Start(#[from] node::StartError),
    /// The metrics address could not be bound.
    #[error("{0}")]
    Metrics(String),
    /// The admin address could not be bound.
    #[error("cannot listen on the admin address {addr}: {source}")]
    Admin {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime could not be built or signals could not be watched.
    #[error("{what}: {source}")]
    Runtime {
        /// What failed.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The final sync failed: what the site appended last may not be on disk.
    #[error("shutting down: the storage did not sync: {0}")]
    Sync(replication::storage::StorageError),
}

/// Runs the site until a stop signal; returns once its storage is synced.
pub fn run(cfg: SiteConfig) -> Result<(), RunError> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| RunError::Storage(io_storage_error("create directory", &cfg.data_dir, e)))?;
    // First of all: a second daemon on this directory must leave no trace, not even a line in
    // the message log the first one writes.
    let holder = format!(
        "process {} (repsite run, site {})",
        std::process::id(),
        cfg.node.site.addr
    );
    let lock = StdFs
        .lock_dir(&cfg.data_dir, &holder)
        .map_err(RunError::Locked)?;
    let message_log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.message_log)
        .map_err(|source| RunError::MessageLog {
            path: cfg.message_log.display().to_string(),
            source,
        })?;
    init_logging(message_log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| RunError::Runtime {
            what: "cannot start the async runtime",
            source,
        })?;
    runtime.block_on(daemon(cfg, lock))
}

/// Logs go to standard error, filtered by `RUST_LOG` (default `info`), and the engine's own lines
/// also to the site's message log, whatever `RUST_LOG` says: that file is the record of what the
/// site did, which an operator reads after the fact.
fn init_logging(message_log: File) {
    let stderr_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into a file or a pipe.
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(stderr_filter);
    let file = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(Mutex::new(message_log))
        .with_filter(EnvFilter::new("replication=info,repsite=info"));
    // Only fails if a subscriber is already set, which `main` never does.
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
}

async fn daemon(cfg: SiteConfig, lock: DirLock) -> Result<(), RunError> {
    tracing::info!(
        site = %cfg.node.site.addr,
        data_dir = %cfg.data_dir.display(),
        "opening the data directory"
    );
    let (storage, recovery) = FileStorage::open_locked(StdFs::shared(), lock)?;
    if let Some(reason) = &recovery.reason {
        tracing::warn!(
            dir = %cfg.data_dir.display(),
            dropped_records = recovery.dropped_records,
            dropped_bytes = recovery.dropped_bytes,
            %reason,
            "storage recovered from a torn or damaged log tail"
        );
    }
    let site = cfg.node.site.addr.clone();
    let static_sites = cfg.node.site.sites.clone();
    if cfg.node.tls.0.is_none() {
        tracing::warn!(
            %site,
            "replication traffic between sites is not encrypted (the HMAC handshake proves the \
             group secret but hides nothing): add a [tls] table to encrypt it"
        );
    }
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin.as_str())
        .await
        .map_err(|source| RunError::Admin {
            addr: cfg.admin.clone(),
            source,
        })?;
    let (node, mut events) = node::start(
        cfg.node.clone(),
        storage,
        Arc::new(MonotonicClock::new()),
        os_seed(),
    )
    .await?;
    tracing::info!(
        %site,
        group = %cfg.node.group,
        listen = %cfg.node.listen,
        admin = %cfg.admin,
        data_dir = %cfg.data_dir.display(),
        config = %cfg.file.display(),
        "repsite running"
    );
    let latency = crate::metrics::CommitLatency::default();
    if let Some(addr) = &cfg.metrics {
        crate::metrics::serve(
            addr,
            node.clone(),
            latency.clone(),
            tokio::runtime::Handle::current(),
        )
        .map_err(RunError::Metrics)?;
        tracing::info!(%site, metrics = %addr, "serving metrics");
    }
    tokio::spawn(
        admin::Server::new(node.clone(), static_sites, cfg.data_dir.clone())
            .with_token(cfg.admin_token.clone())
            .with_latency(latency)
            .serve(admin_listener),
    );
    // The node logs its events itself; reading them keeps its bounded queue from overflowing.
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let NodeEvent::Site(replication::site::Event::LocalSiteRemoved) = event {
                tracing::warn!(
                    "this site was removed from the group; it stays up, answering \
                                HandleDead, until it is stopped"
                );
            }
        }
    });

    let signal = stop_signal().await?;
    tracing::info!(%site, signal, "stopping: syncing storage");
    match node.shutdown().await {
        Ok(Ok(())) => {
            tracing::info!(%site, "storage synced; stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(RunError::Sync(e)),
        // The node task already ended (it only does on shutdown): nothing left to sync.
        Err(_) => Ok(()),
    }
}

/// Waits for SIGINT (ctrl-c) or SIGTERM and says which.
async fn stop_signal() -> Result<&'static str, RunError> {
    let runtime_error = |source| RunError::Runtime {
        what: "cannot watch for stop signals",
        source,
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(runtime_error)?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT").map_err(runtime_error),
            _ = term.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(runtime_error)?;
        Ok("ctrl-c")
    }
}

/// A seed for election jitter, handshake nonces and reconnection jitter. Nonces must not be
/// predictable by someone without the secret, so it comes from the operating system's random
/// source; std's randomly keyed hasher stands in where there is none.
pub fn os_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::io::Read;
    let mut bytes = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok()
    {
        return u64::from_le_bytes(bytes);
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    hasher.finish()
}

fn io_storage_error(
    op: &'static str,
    path: &std::path::Path,
    source: std::io::Error,
) -> replication::storage::StorageError {
    replication::storage::StorageError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}
