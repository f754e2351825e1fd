//! `repsite`: the replication engine as a real daemon, and the operator's tool around it.
//!
//! `repsite run --config FILE` runs one site; `status`, `put`, `get`, `step-down`, `remove` and
//! `archive` talk to a running site over its admin address; `replica` keeps a cold-standby copy
//! of a data directory; `bench` measures a group on this machine.
//!
//! Exit status: 0 on success, 1 when the operation failed (a write refused, a site unreachable, a
//! backup refused), 2 for a usage or configuration error. The daemon exits 0 after a clean stop
//! on SIGINT or SIGTERM.
//!
//! This binary is the real world only: the simulator builds the engine with `--cfg madsim`, where
//! there are no real sockets or signals, and there `repsite` only says so.

#[cfg(not(madsim))]
mod admin;
#[cfg(all(test, not(madsim)))]
mod admin_tests;
#[cfg(not(madsim))]
mod bench;
#[cfg(not(madsim))]
mod check;
#[cfg(not(madsim))]
mod client;
#[cfg(not(madsim))]
mod config;
#[cfg(not(madsim))]
mod metrics;
#[cfg(not(madsim))]
mod replica;
#[cfg(not(madsim))]
mod replica_source;
#[cfg(all(test, not(madsim)))]
mod replica_tests;
#[cfg(not(madsim))]
mod run;
#[cfg(not(madsim))]
mod serve_files;

#[cfg(madsim)]
fn main() {
    eprintln!("repsite needs real sockets: build it without --cfg madsim");
    std::process::exit(2);
}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(not(madsim))]
mod cli {
    /// Prints a line on standard output. A reader that went away (`repsite status | head -1`)
    /// ends the command quietly, as it ends any Unix tool, instead of a panic.
    macro_rules! say {
        ($($arg:tt)*) => {
            say_line(format_args!($($arg)*))
        };
    }

    fn say_line(line: std::fmt::Arguments<'_>) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("repsite: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }

    use crate::admin::AdminRequest;
    use crate::{bench, check, client, config, replica, run};
    use clap::{Parser, Subcommand};
    use replication::site::AckPolicy;
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::time::Duration;

    /// A Berkeley-DB-style replication site and the operator's tool around it.
    #[derive(Parser, Debug)]
    #[command(name = "repsite", version, about, long_about = None)]
    struct Cli {
        /// A file holding the admin token of the sites asked (their `admin_token_file`); every
        /// request carries it.
        #[arg(
            long,
            global = true,
            value_name = "FILE",
            env = "REPSITE_ADMIN_TOKEN_FILE"
        )]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        command: Command,
    }

    /// Where a running site's admin protocol listens.
    #[derive(clap::Args, Debug)]
    struct Admin {
        /// The site's admin address (the `admin` key of its configuration).
        #[arg(long, value_name = "HOST:PORT")]
        admin: String,
        /// Print the response as JSON (one line) instead of text.
        #[arg(long)]
        json: bool,
        /// How long to wait for the site, in seconds (a commit waits for its acks).
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        timeout: u64,
    }

    #[derive(Subcommand, Debug)]
    enum Command {
        /// Run a site until SIGINT or SIGTERM.
        Run {
            /// The site's configuration file (see examples/repsite.toml).
            #[arg(long, value_name = "FILE")]
            config: PathBuf,
        },
        /// Show a site's role, master, generation, log, membership, peers and counters.
        Status {
            #[command(flatten)]
            admin: Admin,
        },
        /// Commit KEY = VALUE through a site (it must be the master); prints the commit LSN.
        Put {
            /// The key.
            key: String,
            /// The value.
            value: String,
            #[command(flatten)]
            admin: Admin,
        },
        /// Read KEY from a site's database (exit 1 if it has no such key).
        Get {
            /// The key.
            key: String,
            /// Read on the master under its lease: the value reflects every acknowledged write
            /// (needs lease_timeout_ms in the sites' [timeouts]).
            #[arg(long)]
            leased: bool,
            #[command(flatten)]
            admin: Admin,
        },
        /// Hand mastership over to another site without losing a commit (on the master).
        StepDown {
            /// The site to take over, by its exact address.
            #[arg(long, value_name = "SITE")]
            to: String,
            #[command(flatten)]
            admin: Admin,
        },
        /// Remove a site from the group (asked at any site; the master records it).
        Remove {
            /// The site to remove, by its exact address.
            site: String,
            #[command(flatten)]
            admin: Admin,
        },
        /// Fold all but the last N log records of a site into its snapshot.
        Archive {
            /// Log records to keep.
            #[arg(long, value_name = "N")]
            keep: u64,
            #[command(flatten)]
            admin: Admin,
        },
        /// Bring a cold-standby copy of a site's storage up to date (incremental, verified).
        ///
        /// Safe while the site runs: the copy is a state the site's storage had at one instant,
        /// as after a crash. Exits 0 if and only if the backup is complete and verified.
        Replica {
            /// The site's data directory on this machine (only read).
            #[arg(
                long,
                value_name = "DATA_DIR",
                required_unless_present_any = ["verify", "from_site"]
            )]
            from: Option<PathBuf>,
            /// A running site's admin address: pull its storage over the admin protocol (only
            /// what the backup lacks moves).
            #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["from", "verify"])]
            from_site: Option<String>,
            /// The backup directory (created if missing).
            #[arg(long, value_name = "BACKUP_DIR")]
            to: PathBuf,
            /// Check the backup's every record instead of copying.
            #[arg(long, conflicts_with = "from")]
            verify: bool,
            /// List every file and what was done to it.
            #[arg(short, long, conflicts_with = "quiet")]
            verbose: bool,
            /// Print nothing unless something goes wrong (for cron).
            #[arg(short, long)]
            quiet: bool,
        },
        /// Check that every site holds the same data (the end of a failback): each reports the
        /// position its database applied and a digest; once all stand at the same position the
        /// digests are compared. Exits 0 if and only if every site agrees, 1 naming the sites
        /// that differ (or never caught up, or did not answer).
        Check {
            /// Every site's admin address (repeat the flag, or separate with commas), or one
            /// site's, through which the others are found.
            #[arg(long, value_name = "HOST:PORT", value_delimiter = ',', required = true)]
            admin: Vec<String>,
            /// How long to wait for every site to reach the same position, in seconds.
            #[arg(long, default_value_t = 10, value_name = "SECONDS")]
            wait: u64,
            /// How long to wait for each answer, in seconds.
            #[arg(long, default_value_t = 5, value_name = "SECONDS")]
            timeout: u64,
        },
        /// Measure commits/s and commit latency of an in-process group on loopback.
        Bench {
            /// Sites in the group.
            #[arg(long, default_value_t = 3)]
            sites: usize,
            /// Writes to commit.
            #[arg(long, default_value_t = 2000)]
            writes: usize,
            /// Concurrent clients writing through the master.
            #[arg(long, default_value_t = 8)]
            clients: usize,
            /// Ack policy: all, all_available, all_peers, none, one, one_peer, quorum.
            #[arg(long, default_value = "quorum")]
            policy: AckPolicy,
            /// Bytes per value written.
            #[arg(long, default_value_t = 100)]
            value_bytes: usize,
            /// Print the figures as JSON.
            #[arg(long)]
            json: bool,
        },
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        if let Some(file) = &cli.token_file {
            match client::read_token_file(file) {
                Ok(token) => client::use_token(token),
                Err(why) => {
                    eprintln!("repsite: {why}");
                    return ExitCode::from(2);
                }
            }
        }
        match cli.command {
            Command::Run { config } => run_site(&config),
            Command::Status { admin } => admin_call(&admin, AdminRequest::Status),
            Command::Put { key, value, admin } => {
                admin_call(&admin, AdminRequest::Put { key, value })
            }
            Command::Get { key, leased, admin } => {
                admin_call(&admin, AdminRequest::Get { key, leased })
            }
            Command::StepDown { to, admin } => admin_call(&admin, AdminRequest::StepDown { to }),
            Command::Remove { site, admin } => admin_call(&admin, AdminRequest::Remove { site }),
            Command::Archive { keep, admin } => {
                admin_call(&admin, AdminRequest::Archive { keep_records: keep })
            }
            Command::Replica {
                from,
                from_site,
                to,
                verify,
                verbose,
                quiet,
            } => {
                let from = match (from, from_site) {
                    (Some(dir), _) => Some(ReplicaFrom::Dir(dir)),
                    (None, Some(site)) => Some(ReplicaFrom::Site(site)),
                    (None, None) => None,
                };
                replica_cmd(from, &to, verify, verbose, quiet)
            }
            Command::Check {
                admin,
                wait,
                timeout,
            } => {
                let timeout = Duration::from_secs(timeout.max(1));
                // One address: the group is found through it (every site tells its peers where
                // its admin port is).
                let admin = match admin.as_slice() {
                    [one] => match check::discover(one, timeout) {
                        Ok(all) => {
                            say!("found {} sites through {one}", all.len());
                            all
                        }
                        Err(why) => {
                            eprintln!("repsite check: {why}");
                            return ExitCode::FAILURE;
                        }
                    },
                    _ => admin,
                };
                let verdict = check::check(&admin, Duration::from_secs(wait), timeout);
                say!("{}", verdict.table().trim_end());
                if verdict.agrees() {
                    say!("every site agrees");
                    ExitCode::SUCCESS
                } else {
                    eprintln!("repsite check: differ: {}", verdict.differ.join(", "));
                    ExitCode::FAILURE
                }
            }
            Command::Bench {
                sites,
                writes,
                clients,
                policy,
                value_bytes,
                json,
            } => bench_cmd(
                &bench::BenchParams {
                    sites,
                    writes,
                    clients,
                    policy,
                    value_bytes,
                },
                json,
            ),
        }
    }

    fn run_site(path: &std::path::Path) -> ExitCode {
        let cfg = match config::load(path) {
            Ok(cfg) => cfg,
            Err(e) => {
                eprintln!("repsite: {e}");
                return ExitCode::from(2);
            }
        };
        match run::run(cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ run::RunError::Locked(_)) => {
                // Before logging started, so the running site's message log is left alone.
                eprintln!("repsite: {e}");
                ExitCode::from(2)
            }
            Err(e) => {
                // Logging may be up by now; the error goes to both so neither reader misses it.
                tracing::error!("{e}");
                eprintln!("repsite: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn admin_call(admin: &Admin, request: AdminRequest) -> ExitCode {
        let timeout = Duration::from_secs(admin.timeout.max(1));
        match client::call(&admin.admin, &request, timeout) {
            Ok(response) => {
                let outcome = client::render(&request, &response, admin.json);
                if !outcome.stdout.is_empty() {
                    say!("{}", outcome.stdout);
                }
                if !outcome.stderr.is_empty() {
                    eprintln!("repsite: {}", outcome.stderr);
                }
                if outcome.success {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("repsite: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// Where `replica` copies from.
    enum ReplicaFrom {
        Dir(PathBuf),
        Site(String),
    }

    fn replica_cmd(
        from: Option<ReplicaFrom>,
        to: &std::path::Path,
        verify: bool,
        verbose: bool,
        quiet: bool,
    ) -> ExitCode {
        if verify {
            return match replica::verify(to) {
                Ok(state) => {
                    if !quiet {
                        say!("backup verified: {state}");
                        for stale in replica::stale_logs(to, state.epoch) {
                            say!("note: {stale} is not current (opening the backup deletes it)");
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("repsite replica: verification failed: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        let Some(from) = from else {
            // clap requires --from without --verify; kept for a clear message all the same.
            eprintln!("repsite replica: --from DATA_DIR or --from-site HOST:PORT is required");
            return ExitCode::from(2);
        };
        let copied = match from {
            ReplicaFrom::Dir(dir) => replica::copy(&dir, to),
            ReplicaFrom::Site(addr) => replica::RemoteSite::connect(&addr)
                .and_then(|mut site| replica::copy_from(&mut site, to)),
        };
        match copied {
            Ok(report) => {
                if verbose {
                    for action in &report.actions {
                        say!("{action}");
                    }
                }
                if !quiet {
                    let written: Vec<_> = report
                        .actions
                        .iter()
                        .filter(|a| a.wrote())
                        .map(|a| a.name())
                        .collect();
                    let written = if written.is_empty() {
                        "nothing new".to_string()
                    } else {
                        format!("wrote {}", written.join(", "))
                    };
                    say!(
                        "Replica complete ({written}; {} read from the source): {}",
                        bytes_of(report.source_bytes),
                        report.state
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e @ replica::ReplicaError::Locked(_)) => {
                eprintln!("repsite replica: {e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("repsite replica: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn bytes_of(n: u64) -> String {
        match n {
            1 => "1 byte".into(),
            n => format!("{n} bytes"),
        }
    }

    fn bench_cmd(params: &bench::BenchParams, json: bool) -> ExitCode {
        match bench::run(params) {
            Ok(report) => {
                if json {
                    say!("{}", serde_json::to_string(&report).unwrap_or_default());
                } else {
                    say!("{}", bench::render(&report));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("repsite bench: {e}");
                ExitCode::FAILURE
            }
        }
    }
}
