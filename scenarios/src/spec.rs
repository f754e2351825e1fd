//! The scenario language: a TOML file describing a group, a timeline of steps with
//! expectations, optional random faults, and the invariants to check.
//!
//! Parsing happens in two passes. Serde reads the TOML into the raw shapes below (unknown keys
//! are refused there, with toml's line and column); then [`Scenario::from_file`] validates what
//! serde cannot (exactly one action per step, site names that exist, times in order) and reports
//! the line of the offending step. Either way the error names the file, the line and what was
//! expected. See `scenarios/README.md` for the format with a worked example.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use sim::disk::StorageKind;
use sim::faults::{FaultMix, Moment};
use sim::replication::site::{AckPolicy, Timeouts};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A scenario file that could not be read or understood.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct SpecError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when the whole file is at fault).
    pub line: usize,
    /// What was wrong and what was expected.
    pub message: String,
}

/// A duration written as `"250ms"`, `"3s"`, `"1.5s"` or `"2m"`, held in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub u64);

impl Millis {
    /// Parses `"250ms"`, `"3s"`, `"1.5s"`, `"2m"`.
    pub fn parse(text: &str) -> Result<Millis, String> {
        let text = text.trim();
        let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = text.strip_suffix('s') {
            (n, 1_000.0)
        } else if let Some(n) = text.strip_suffix('m') {
            (n, 60_000.0)
        } else {
            return Err(format!(
                "a duration such as \"250ms\", \"3s\" or \"2m\", not {text:?}"
            ));
        };
        let value: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("a number before the unit in {text:?}"))?;
        if !(0.0..=1e12).contains(&value) {
            return Err(format!(
                "a non-negative duration of sensible size, not {text:?}"
            ));
        }
        Ok(Millis((value * scale).round() as u64))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1_000) {
            write!(f, "{}s", self.0 / 1_000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Millis::parse(&text).map_err(|e| de::Error::custom(format!("expected {e}")))
    }
}

/// One site name or a list of them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged, expecting = "a site name or a list of site names")]
pub enum Names {
    /// One site.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Names {
    /// The names, in order.
    pub fn list(&self) -> Vec<String> {
        match self {
            Names::One(n) => vec![n.clone()],
            Names::Many(v) => v.clone(),
        }
    }
}

/// How the group is formed.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    /// Every site is configured with the full static site list (the legacy way).
    #[default]
    Static,
    /// A membership database: one site creates the group, the others join through a helper.
    Database,
}

/// `[group]`: what every site shares.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// The sites' names, in address order (the first is 10.0.0.1).
    pub sites: Vec<String>,
    /// Static site list or membership database.
    #[serde(default)]
    pub membership: Membership,
    /// The acknowledgement policy.
    #[serde(default)]
    pub ack_policy: AckPolicy,
    /// The protocol version every site speaks unless its own table says otherwise.
    #[serde(default = "default_version")]
    pub protocol_version: u8,
    /// In a two-site group, whether a lone client may not elect itself.
    #[serde(default = "yes")]
    pub two_site_strict: bool,
    /// Timer overrides (milliseconds), as the engine names them.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// What the sites store their data on: `"memory"` (the in-memory model, the default) or
    /// `"file"` (the real `FileStorage` on a simulated filesystem that crashes as POSIX allows).
    #[serde(default)]
    pub storage: StorageKind,
}

fn default_version() -> u8 {
    2
}

fn yes() -> bool {
    true
}

/// `[sites.NAME]`: one site's own settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Election priority (default 100; 0 never becomes master).
    pub priority: Option<u32>,
    /// Protocol version (1 = legacy, 2 = membership database).
    pub version: Option<u8>,
    /// Creates the group at its first start (membership = "database").
    pub creator: Option<bool>,
    /// The member it joins through at its first start (membership = "database").
    pub helper: Option<String>,
    /// When the site first starts (default "0s"); `start = "never"` leaves it to a step.
    pub start: Option<String>,
    /// Holds a different group secret (a rogue site the group must refuse).
    #[serde(default)]
    pub rogue: bool,
}

/// `[faults]`: a random fault schedule drawn from the seed and laid over the timeline.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsSpec {
    /// When the first fault may come.
    #[serde(default)]
    pub from: Millis,
    /// When every fault is repaired.
    pub until: Millis,
    /// Relative weights of each kind of fault (a swarm draws each weight from 0 up to the one
    /// given here, every kind up to 3 when there is no mix).
    pub mix: Option<FaultMix>,
}

/// `[swarm]`: the group itself is drawn from the seed (size, policy, fault mix).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmSpec {
    /// Group sizes to pick from.
    pub sizes: Vec<usize>,
    /// Ack policies to pick from.
    pub policies: Vec<AckPolicy>,
    /// Storages to pick from (default: the in-memory model only).
    #[serde(default = "memory_only")]
    pub storage: Vec<StorageKind>,
    /// What the operator does during the faults (each weight drawn from 0 up to the one given).
    #[serde(default)]
    pub operations: OperationBounds,
    /// How groups are formed, to pick from (default: the static site list only). A database
    /// group starts from a creator the others join through helpers, some of them started
    /// before the creator.
    #[serde(default = "static_only")]
    pub membership: Vec<Membership>,
}

fn static_only() -> Vec<Membership> {
    vec![Membership::Static]
}

/// `[swarm] operations = { switchover = 2, upgrade = 1 }`: the operator's actions a swarm mixes
/// into its fault schedule, as weights beside the faults'.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationBounds {
    /// Planned switchovers asked of the master.
    #[serde(default)]
    pub switchover: u32,
    /// Log archiving asked of the master (forcing internal initialisation of clients behind).
    #[serde(default)]
    pub archive: u32,
    /// Removals of a site, asked of any site (database groups only).
    #[serde(default)]
    pub remove: u32,
    /// Restarts of a site with another helper (database groups only: a joiner that has not
    /// joined yet asks the new one).
    #[serde(default)]
    pub rejoin: u32,
    /// Upgrades of a legacy site to protocol version 2 (static groups only, some of whose sites
    /// the swarm starts on version 1).
    #[serde(default)]
    pub upgrade: u32,
}

impl Default for OperationBounds {
    fn default() -> Self {
        OperationBounds {
            switchover: 2,
            archive: 2,
            remove: 2,
            rejoin: 2,
            upgrade: 2,
        }
    }
}

fn memory_only() -> Vec<StorageKind> {
    vec![StorageKind::Memory]
}

/// `[check]`: which invariants the run checks (all of them unless skipped, with a reason).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Invariants not to check.
    #[serde(default)]
    pub skip: Vec<String>,
    /// Invariants the scenario breaks on purpose: the run passes only if each of them breaks,
    /// and their violations are shown as expected (a scenario that shows what a promise does
    /// not cover, such as leases under clocks drifting past their bound).
    #[serde(default)]
    pub broken: Vec<String>,
    /// Why they are skipped or broken (required when either list is not empty).
    pub why: Option<String>,
}

/// `[run]`: the run's shape.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// How long the group is left alone after the last step before the checks (default: the
    /// liveness bound derived from the timeouts).
    pub settle: Option<Millis>,
}

/// The invariants a run can check, as the checkers name them.
pub const INVARIANTS: &[&str] = &[
    "one_master_per_generation",
    "durable_writes_survive",
    "client_log_is_prefix",
    "database_is_replay",
    "membership_converges",
    "no_client_accepted_a_write",
    "elections_are_sound",
    "lenient_pair_waits_for_its_partner",
    "counters_match_events",
    "rollbacks_are_sound",
    "reads_are_sane",
    "leased_reads_are_linearizable",
    "liveness",
    "expectation",
    "run_finishes",
    "no_panic",
];

/// The site events an expectation can name (the engine's `Event` variants and the driver's).
pub const EVENTS: &[&str] = &[
    "BecameMaster",
    "BecameClient",
    "NewMaster",
    "Elected",
    "Voted",
    "ElectionFailed",
    "MasterFailure",
    "DuplicateMaster",
    "PermFailed",
    "WouldRollback",
    "RolledBack",
    "InitDone",
    "StartupDone",
    "SteppedDown",
    "JoinFailure",
    "SiteAdded",
    "SiteRemoved",
    "LocalSiteRemoved",
    "MembershipCreated",
    "StorageFailed",
    "ConnectionEstablished",
    "ConnectionBroken",
    "HandshakeRefused",
];

/// Request outcomes an expectation can name: `ok` or a `RequestError` variant.
pub const OUTCOMES: &[&str] = &[
    "ok",
    "any",
    "NotMaster",
    "PermFailed",
    "MasterLost",
    "SwitchoverInProgress",
    "StepDownFailed",
    "Unavail",
    "CannotRemoveMaster",
    "Invalid",
    "HandleDead",
    "NoLease",
];

/// `write = { via = "A", count = 3, expect = "ok" }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WriteSpec {
    /// The site the client asks.
    pub via: String,
    /// How many writes, one after another.
    #[serde(default = "one")]
    pub count: u64,
    /// What each must return (`ok`, `any`, or an error such as `PermFailed`).
    #[serde(default = "any")]
    pub expect: String,
}

fn one() -> u64 {
    1
}

fn any() -> String {
    "any".into()
}

/// `remove = { site = "C", via = "B", expect = "ok" }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoveSpec {
    /// The site to remove.
    pub site: String,
    /// The site asked.
    pub via: String,
    /// Expected outcome.
    #[serde(default = "any")]
    pub expect: String,
}

/// `step_down = { via = "A", to = "B", expect = "ok" }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepDownSpec {
    /// The master asked.
    pub via: String,
    /// The site that takes over.
    pub to: String,
    /// Expected outcome.
    #[serde(default = "any")]
    pub expect: String,
}

/// `archive = { via = "A", keep = 5 }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSpec {
    /// The master asked.
    pub via: String,
    /// Log records to keep behind the snapshot.
    #[serde(default)]
    pub keep: u64,
    /// Expected outcome.
    #[serde(default = "any")]
    pub expect: String,
}

/// `upgrade = { site = "A", version = 2 }`: restart a site speaking another protocol version.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpgradeSpec {
    /// The site.
    pub site: String,
    /// Its new protocol version.
    pub version: u8,
}

/// `reconfigure = { site = "A", creator = true, helper = "C" }`: flags for the next restart.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReconfigureSpec {
    /// The site.
    pub site: String,
    /// Set or clear the group-creator flag.
    pub creator: Option<bool>,
    /// Set the helper.
    pub helper: Option<String>,
    /// Set the priority.
    pub priority: Option<u32>,
}

/// `network = { loss = 0.05, latency = ["1ms", "30ms"], duplicate = 0.01, reorder = 0.02,
/// drop = 0.01 }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Chance a packet is lost, 0 to 1.
    #[serde(default)]
    pub loss: f64,
    /// Chance a message is delivered twice, 0 to 1.
    #[serde(default)]
    pub duplicate: f64,
    /// Chance a message is delivered after the next one, 0 to 1.
    #[serde(default)]
    pub reorder: f64,
    /// Chance a message is dropped by its sender while the connection stays up (a full queue),
    /// 0 to 1.
    #[serde(default)]
    pub drop: f64,
    /// Smallest and largest delivery delay.
    pub latency: Option<[Millis; 2]>,
}

/// `clog = { from = "A", to = "B" }`: one direction of one link.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClogSpec {
    /// Sender.
    pub from: String,
    /// Receiver that stops hearing it.
    pub to: String,
}

/// `skew = { site = "A", ms = -300 }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SkewSpec {
    /// The site.
    pub site: String,
    /// Offset in milliseconds.
    pub ms: i64,
}

/// `power_cut = { site = "A", after = 3 }`: the site loses power after `after` more operations
/// on its filesystem (file storage only).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PowerCutSpec {
    /// The site.
    pub site: String,
    /// Filesystem operations that still complete first (default 0: the next one fails).
    #[serde(default)]
    pub after: u64,
}

/// `crash_at = { site = "B", moment = "vote" }`: the site crashes in the instant it next votes
/// (`vote`), records an admission (`join`) or is initialised from a snapshot (`init`); without
/// a site, the first site to get there does. The operator restarts it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CrashAtSpec {
    /// The site (any, if absent).
    pub site: Option<String>,
    /// The moment.
    pub moment: Moment,
}

/// `drift = { site = "A", ppm = 50000 }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DriftSpec {
    /// The site.
    pub site: String,
    /// Rate error in parts per million.
    pub ppm: i64,
}

/// `load = { every = "50ms" }`: a background client writing steadily until `stop_load`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// Time between writes.
    pub every: Millis,
}

/// `expect = { ... }`: a condition on the world, checked when the step comes (or waited for
/// up to `within`, or required to hold for `for`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// Who is master: a site name, `"any"` or `"none"`.
    pub master: Option<String>,
    /// An event a site reported (see [`EVENTS`]).
    pub event: Option<String>,
    /// Events of these kinds, in exactly this order and no others of these kinds (with `site`
    /// and `since`): a role's event sequence as an application sees it.
    pub sequence: Option<Vec<String>>,
    /// The site for `event` (any site if absent).
    pub site: Option<String>,
    /// Only events at or after this time count (default: the run's start).
    pub since: Option<Millis>,
    /// Exactly this many matching events.
    pub count: Option<u64>,
    /// At least this many matching events (the default is at least one).
    pub at_least: Option<u64>,
    /// For `JoinFailure`, `StorageFailed`, `HandshakeRefused`: the reason contains this text.
    pub reason: Option<String>,
    /// For `RolledBack`: at least this many transactions rolled back in all.
    pub txns_at_least: Option<u64>,
    /// The master's membership database holds exactly these sites.
    pub members: Option<Vec<String>>,
    /// Every running site has the same database (digest) as the master.
    pub in_sync: Option<bool>,
    /// Wait up to this long for the condition.
    pub within: Option<Millis>,
    /// The condition must hold, checked every 50 ms, for this long.
    #[serde(rename = "for")]
    pub holds_for: Option<Millis>,
}

/// One `[[step]]` as written: a time and exactly one action.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at: Millis,
    start: Option<Names>,
    crash: Option<Names>,
    torn_crash: Option<Names>,
    restart: Option<Names>,
    pause: Option<Names>,
    resume: Option<Names>,
    isolate: Option<Names>,
    corrupt: Option<Names>,
    power_cut: Option<PowerCutSpec>,
    crash_at: Option<CrashAtSpec>,
    partition: Option<Vec<Vec<String>>>,
    clog: Option<ClogSpec>,
    heal: Option<bool>,
    network: Option<NetworkSpec>,
    skew: Option<SkewSpec>,
    drift: Option<DriftSpec>,
    write: Option<WriteSpec>,
    load: Option<LoadSpec>,
    stop_load: Option<bool>,
    remove: Option<RemoveSpec>,
    step_down: Option<StepDownSpec>,
    archive: Option<ArchiveSpec>,
    upgrade: Option<UpgradeSpec>,
    reconfigure: Option<ReconfigureSpec>,
    expect: Option<ExpectSpec>,
}

/// What a step does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Start sites that have not started yet.
    Start(Vec<String>),
    /// Kill sites (unsynced writes lost).
    Crash(Vec<String>),
    /// Kill sites, tearing their last write.
    TornCrash(Vec<String>),
    /// Restart crashed sites.
    Restart(Vec<String>),
    /// Freeze sites.
    Pause(Vec<String>),
    /// Unfreeze sites.
    Resume(Vec<String>),
    /// Cut each site from every other.
    Isolate(Vec<String>),
    /// Damage the last record on each site's disk.
    Corrupt(Vec<String>),
    /// Cut a site's power in the middle of its disk operations.
    PowerCut(PowerCutSpec),
    /// Crash a site in the middle of an election, a join or an initialisation.
    CrashAt(CrashAtSpec),
    /// Cut every link between different sides (sites not named form one more side).
    Partition(Vec<Vec<String>>),
    /// Cut one direction of one link.
    Clog(ClogSpec),
    /// Repair every link.
    Heal,
    /// Loss and delay on every link.
    Network(NetworkSpec),
    /// Offset a clock.
    Skew(SkewSpec),
    /// Make a clock run fast or slow.
    Drift(DriftSpec),
    /// Client writes.
    Write(WriteSpec),
    /// Start the background load.
    Load(LoadSpec),
    /// Stop it.
    StopLoad,
    /// Remove a site from the group.
    Remove(RemoveSpec),
    /// Planned switchover.
    StepDown(StepDownSpec),
    /// Archive the master's log.
    Archive(ArchiveSpec),
    /// Restart a site with another protocol version.
    Upgrade(UpgradeSpec),
    /// Change a site's flags for its next restart.
    Reconfigure(ReconfigureSpec),
    /// Check a condition.
    Expect(ExpectSpec),
}

/// A validated step.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// When it happens (simulated time from the start).
    pub at: Millis,
    /// What it does.
    pub action: Action,
    /// Where it is written (for messages).
    pub line: usize,
}

/// The file as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    summary: String,
    group: Option<GroupSpec>,
    #[serde(default)]
    sites: BTreeMap<String, SiteSpec>,
    swarm: Option<SwarmSpec>,
    faults: Option<FaultsSpec>,
    #[serde(default)]
    check: CheckSpec,
    run: Option<RunSpec>,
    #[serde(default)]
    step: Vec<toml::Spanned<RawStep>>,
}

/// A validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its name (the file's stem).
    pub name: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// One line saying what it shows.
    pub summary: String,
    /// The group (absent for a swarm, whose group comes from the seed).
    pub group: Option<GroupSpec>,
    /// Per-site settings.
    pub sites: BTreeMap<String, SiteSpec>,
    /// A group drawn from the seed.
    pub swarm: Option<SwarmSpec>,
    /// Random faults.
    pub faults: Option<FaultsSpec>,
    /// Invariants not checked.
    pub skip: Vec<String>,
    /// Invariants the run must break (see [`CheckSpec::broken`]).
    pub broken: Vec<String>,
    /// Quiet time before the checks.
    pub settle: Option<Millis>,
    /// The timeline, in time order.
    pub steps: Vec<Step>,
    /// The storage a command line forced on it (see [`Scenario::with_storage`]), which a
    /// failure file must record to replay the run.
    pub storage_override: Option<StorageKind>,
}

/// The 1-based line holding byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: path.display().to_string(),
            line: 0,
            message: format!("cannot read the scenario file: {e}"),
        })?;
        Scenario::from_text(path, &text)
    }

    /// Parses and validates scenario text; `path` names it in errors and gives its name.
    pub fn from_text(path: &Path, text: &str) -> Result<Scenario, SpecError> {
        let file = path.display().to_string();
        let fail = |line: usize, message: String| SpecError {
            file: file.clone(),
            line,
            message,
        };
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            fail(line, e.message().trim().to_string())
        })?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("scenario")
            .to_string();
        let line_at = |needle: &str| text.find(needle).map_or(0, |offset| line_of(text, offset));

        // The group: written, or drawn from the seed.
        match (&raw.group, &raw.swarm) {
            (None, None) => {
                return Err(fail(
                    0,
                    "expected a [group] table (or a [swarm] table for a group drawn from the seed)"
                        .into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(fail(
                    line_at("[swarm]"),
                    "expected either [group] or [swarm], not both".into(),
                ))
            }
            _ => {}
        }
        let names: Vec<String> = match (&raw.group, &raw.swarm) {
            (Some(group), _) => group.sites.clone(),
            (None, Some(swarm)) => {
                let largest = swarm.sizes.iter().copied().max().unwrap_or(0);
                if swarm.sizes.is_empty()
                    || swarm.policies.is_empty()
                    || swarm.storage.is_empty()
                    || swarm.membership.is_empty()
                {
                    return Err(fail(
                        line_at("[swarm]"),
                        "expected at least one size, policy, storage and membership in [swarm]"
                            .into(),
                    ));
                }
                if swarm.sizes.iter().any(|&n| !(1..=9).contains(&n)) {
                    return Err(fail(
                        line_at("sizes"),
                        "expected group sizes from 1 to 9".into(),
                    ));
                }
                swarm_names(largest)
            }
            (None, None) => unreachable!("checked above"),
        };
        if let Some(group) = &raw.group {
            let at = line_at("sites");
            if group.sites.is_empty() || group.sites.len() > 9 {
                return Err(fail(at, "expected from 1 to 9 sites in [group]".into()));
            }
            for (i, n) in group.sites.iter().enumerate() {
                if n.is_empty() || group.sites[..i].contains(n) {
                    return Err(fail(
                        at,
                        format!("expected distinct site names, got {n:?} twice or empty"),
                    ));
                }
            }
        }
        let known = |n: &str| names.iter().any(|x| x == n);
        for (site, spec) in &raw.sites {
            let at = line_at(&format!("[sites.{site}]"));
            if !known(site) {
                return Err(fail(
                    at,
                    format!("[sites.{site}]: expected one of the group's sites {names:?}"),
                ));
            }
            if let Some(helper) = &spec.helper {
                if !known(helper) {
                    return Err(fail(
                        at,
                        format!("helper {helper:?}: expected one of the group's sites {names:?}"),
                    ));
                }
            }
            if let Some(start) = &spec.start {
                if start != "never" {
                    Millis::parse(start)
                        .map_err(|e| fail(at, format!("start: expected \"never\" or {e}")))?;
                }
            }
            if let Some(v) = spec.version {
                if !(1..=2).contains(&v) {
                    return Err(fail(at, format!("version {v}: expected 1 or 2")));
                }
            }
        }

        for (key, list) in [("skip", &raw.check.skip), ("broken", &raw.check.broken)] {
            for name in list {
                if !INVARIANTS.contains(&name.as_str()) {
                    return Err(fail(
                        line_at(key),
                        format!("unknown invariant {name:?}: expected one of {INVARIANTS:?}"),
                    ));
                }
            }
            if !list.is_empty() && raw.check.why.as_deref().is_none_or(str::is_empty) {
                return Err(fail(
                    line_at(key),
                    format!("expected `why = \"...\"` saying why invariants are {key}"),
                ));
            }
        }
        if let Some(faults) = &raw.faults {
            if faults.until <= faults.from {
                return Err(fail(
                    line_at("[faults]"),
                    "expected `until` after `from` in [faults]".into(),
                ));
            }
        }

        let mut steps = Vec::new();
        let mut previous = Millis(0);
        for spanned in &raw.step {
            let line = line_of(text, spanned.span().start);
            let step = validate_step(spanned.get_ref(), &known).map_err(|m| fail(line, m))?;
            let on_memory = raw
                .group
                .as_ref()
                .is_some_and(|g| g.storage == StorageKind::Memory);
            if matches!(step.action, Action::PowerCut(_)) && on_memory {
                return Err(fail(
                    line,
                    "a power cut needs sites on files: expected `storage = \"file\"` in [group]"
                        .into(),
                ));
            }
            if step.at < previous {
                return Err(fail(
                    line,
                    format!(
                        "expected steps in time order: {} comes after {}",
                        step.at, previous
                    ),
                ));
            }
            previous = step.at;
            steps.push(Step { line, ..step });
        }

        Ok(Scenario {
            name,
            path: path.to_path_buf(),
            summary: raw.summary,
            group: raw.group,
            sites: raw.sites,
            swarm: raw.swarm,
            faults: raw.faults,
            skip: raw.check.skip,
            broken: raw.check.broken,
            settle: raw.run.and_then(|r| r.settle),
            steps,
            storage_override: None,
        })
    }

    /// The same scenario with every site on `kind` of storage, whatever the file says (a swarm
    /// then draws only that one). A scenario whose steps cut power keeps its files: a memory
    /// disk has no operations to cut, and its expectations are about what a cut does.
    pub fn with_storage(mut self, kind: StorageKind) -> Scenario {
        let cuts_power = self
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::PowerCut(_)));
        if cuts_power {
            return self;
        }
        if let Some(group) = &mut self.group {
            group.storage = kind;
        }
        if let Some(swarm) = &mut self.swarm {
            swarm.storage = vec![kind];
        }
        self.storage_override = Some(kind);
        self
    }
}

/// The parser's contract on any text, shared by the `scenario_file` fuzz target and its
/// proptest twin: an error names the file; a scenario that parses has what the runner relies on
/// (steps in time order, each with its line; a group or a swarm, not both). Panics otherwise.
pub fn check_any_text(text: &str) {
    match Scenario::from_text(Path::new("fuzz.toml"), text) {
        Ok(s) => {
            assert!(s.steps.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(s.steps.iter().all(|step| step.line > 0));
            assert!(s.group.is_some() != s.swarm.is_some());
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.toml:"), "{e}"),
    }
}

/// Site names of a drawn group: A, B, C, ...
pub fn swarm_names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| char::from(b'A' + i as u8).to_string())
        .collect()
}

fn check_names<'a>(
    names: impl IntoIterator<Item = &'a String>,
    known: &dyn Fn(&str) -> bool,
) -> Result<(), String> {
    for n in names {
        if !known(n) {
            return Err(format!("unknown site {n:?}: expected a site of [group]"));
        }
    }
    Ok(())
}

fn check_outcome(outcome: &str) -> Result<(), String> {
    if OUTCOMES.contains(&outcome) {
        Ok(())
    } else {
        Err(format!(
            "unknown outcome {outcome:?}: expected one of {OUTCOMES:?}"
        ))
    }
}

/// Checks one step: exactly one action, and every name it uses known.
fn validate_step(raw: &RawStep, known: &dyn Fn(&str) -> bool) -> Result<Step, String> {
    let mut actions = Vec::new();
    let names = |field: &Option<Names>,
                 make: fn(Vec<String>) -> Action,
                 actions: &mut Vec<Action>|
     -> Result<(), String> {
        if let Some(n) = field {
            let list = n.list();
            check_names(&list, known)?;
            actions.push(make(list));
        }
        Ok(())
    };
    names(&raw.start, Action::Start, &mut actions)?;
    names(&raw.crash, Action::Crash, &mut actions)?;
    names(&raw.torn_crash, Action::TornCrash, &mut actions)?;
    names(&raw.restart, Action::Restart, &mut actions)?;
    names(&raw.pause, Action::Pause, &mut actions)?;
    names(&raw.resume, Action::Resume, &mut actions)?;
    names(&raw.isolate, Action::Isolate, &mut actions)?;
    names(&raw.corrupt, Action::Corrupt, &mut actions)?;
    if let Some(p) = &raw.power_cut {
        check_names([&p.site], known)?;
        actions.push(Action::PowerCut(p.clone()));
    }
    if let Some(c) = &raw.crash_at {
        check_names(c.site.iter(), known)?;
        actions.push(Action::CrashAt(c.clone()));
    }
    if let Some(sides) = &raw.partition {
        check_names(sides.iter().flatten(), known)?;
        actions.push(Action::Partition(sides.clone()));
    }
    if let Some(c) = &raw.clog {
        check_names([&c.from, &c.to], known)?;
        actions.push(Action::Clog(c.clone()));
    }
    match raw.heal {
        Some(true) => actions.push(Action::Heal),
        Some(false) => return Err("expected `heal = true`".into()),
        None => {}
    }
    if let Some(n) = &raw.network {
        for (what, chance) in [
            ("loss", n.loss),
            ("duplicate", n.duplicate),
            ("reorder", n.reorder),
            ("drop", n.drop),
        ] {
            if !(0.0..=1.0).contains(&chance) {
                return Err(format!(
                    "network {what} {chance}: expected a chance from 0 to 1"
                ));
            }
        }
        if let Some([lo, hi]) = n.latency {
            if hi < lo {
                return Err("network latency: expected [smallest, largest]".into());
            }
        }
        actions.push(Action::Network(n.clone()));
    }
    if let Some(s) = &raw.skew {
        check_names([&s.site], known)?;
        actions.push(Action::Skew(s.clone()));
    }
    if let Some(d) = &raw.drift {
        check_names([&d.site], known)?;
        actions.push(Action::Drift(d.clone()));
    }
    if let Some(w) = &raw.write {
        check_names([&w.via], known)?;
        check_outcome(&w.expect)?;
        actions.push(Action::Write(w.clone()));
    }
    if let Some(l) = &raw.load {
        if l.every.0 == 0 {
            return Err("load every: expected a positive duration".into());
        }
        actions.push(Action::Load(l.clone()));
    }
    match raw.stop_load {
        Some(true) => actions.push(Action::StopLoad),
        Some(false) => return Err("expected `stop_load = true`".into()),
        None => {}
    }
    if let Some(r) = &raw.remove {
        check_names([&r.site, &r.via], known)?;
        check_outcome(&r.expect)?;
        actions.push(Action::Remove(r.clone()));
    }
    if let Some(s) = &raw.step_down {
        check_names([&s.via, &s.to], known)?;
        check_outcome(&s.expect)?;
        actions.push(Action::StepDown(s.clone()));
    }
    if let Some(a) = &raw.archive {
        check_names([&a.via], known)?;
        check_outcome(&a.expect)?;
        actions.push(Action::Archive(a.clone()));
    }
    if let Some(u) = &raw.upgrade {
        check_names([&u.site], known)?;
        if !(1..=2).contains(&u.version) {
            return Err(format!("upgrade version {}: expected 1 or 2", u.version));
        }
        actions.push(Action::Upgrade(u.clone()));
    }
    if let Some(r) = &raw.reconfigure {
        check_names([&r.site], known)?;
        check_names(r.helper.iter(), known)?;
        actions.push(Action::Reconfigure(r.clone()));
    }
    if let Some(e) = &raw.expect {
        validate_expect(e, known)?;
        actions.push(Action::Expect(e.clone()));
    }
    match actions.len() {
        1 => Ok(Step {
            at: raw.at,
            action: actions.pop().expect("one action"),
            line: 0,
        }),
        0 => Err("expected one action in this step (start, crash, restart, partition, heal, write, expect, ...)".into()),
        n => Err(format!("expected one action per step, found {n}: split them into steps at the same time")),
    }
}

fn validate_expect(e: &ExpectSpec, known: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let conditions = [
        e.master.is_some(),
        e.event.is_some(),
        e.sequence.is_some(),
        e.members.is_some(),
        e.in_sync.is_some(),
    ]
    .iter()
    .filter(|&&c| c)
    .count();
    if conditions != 1 {
        return Err(
            "expected exactly one of `master`, `event`, `sequence`, `members`, `in_sync` in \
             `expect`"
                .into(),
        );
    }
    if e.within.is_some() && e.holds_for.is_some() {
        return Err("expected `within` or `for` in `expect`, not both".into());
    }
    if let Some(m) = &e.master {
        if m != "any" && m != "none" {
            check_names([m], known)?;
        }
    }
    if let Some(seq) = &e.sequence {
        if seq.is_empty() {
            return Err("`sequence` needs at least one event".into());
        }
        if let Some(ev) = seq.iter().find(|ev| !EVENTS.contains(&ev.as_str())) {
            return Err(format!("unknown event {ev:?}: expected one of {EVENTS:?}"));
        }
        if e.count.is_some()
            || e.at_least.is_some()
            || e.reason.is_some()
            || e.txns_at_least.is_some()
        {
            return Err("`sequence` takes `site`, `since` and `within`, not counts".into());
        }
    } else if let Some(ev) = &e.event {
        if !EVENTS.contains(&ev.as_str()) {
            return Err(format!("unknown event {ev:?}: expected one of {EVENTS:?}"));
        }
        if e.count.is_some() && e.at_least.is_some() {
            return Err("expected `count` or `at_least`, not both".into());
        }
    } else if e.site.is_some()
        || e.count.is_some()
        || e.at_least.is_some()
        || e.reason.is_some()
        || e.since.is_some()
        || e.txns_at_least.is_some()
    {
        return Err(
            "`site`, `since`, `count`, `at_least`, `reason` and `txns_at_least` go with `event`"
                .into(),
        );
    }
    check_names(e.site.iter(), known)?;
    check_names(e.members.iter().flatten(), known)?;
    if e.in_sync == Some(false) {
        return Err("expected `in_sync = true`".into());
    }
    Ok(())
}

/// Every scenario file (`*.toml`) in `dir`, sorted by name.
pub fn catalog_files(dir: &Path) -> Result<Vec<PathBuf>, SpecError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SpecError {
        file: dir.display().to_string(),
        line: 0,
        message: format!("cannot read the scenario directory: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The latency range a [`NetworkSpec`] asks for (default 1 to 10 ms).
pub fn latency_range(n: &NetworkSpec) -> Range<u64> {
    match n.latency {
        Some([lo, hi]) => lo.0..hi.0.max(lo.0 + 1),
        None => 1..10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
summary = "a test"

[group]
sites = ["A", "B", "C"]

[sites.A]
priority = 200

[[step]]
at = "1.5s"
crash = "A"

[[step]]
at = "2s"
expect = { master = "B", within = "5s" }
"#;

    fn parse(text: &str) -> Result<Scenario, SpecError> {
        Scenario::from_text(Path::new("catalog/t.toml"), text)
    }

    /// The error for `text`, which must name the file and `line` and contain `wanted`.
    fn error_at(text: &str, line: usize, wanted: &str) {
        let err = parse(text).expect_err("the file is bad");
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("catalog/t.toml:{line}: ")),
            "{shown}"
        );
        assert!(shown.contains(wanted), "{shown}");
    }

    #[test]
    fn a_good_file_parses_into_steps_with_their_lines() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.name, "t");
        assert_eq!(s.steps.len(), 2);
        assert_eq!(s.steps[0].at, Millis(1_500));
        assert_eq!(s.steps[0].action, Action::Crash(vec!["A".into()]));
        assert_eq!(s.steps[0].line, 10);
        assert!(
            matches!(&s.steps[1].action, Action::Expect(e) if e.master.as_deref() == Some("B"))
        );
    }

    #[test]
    fn a_power_cut_needs_file_storage_and_names_its_line() {
        let cut = "[[step]]\nat = \"2s\"\npower_cut = { site = \"A\", after = 1 }\n";
        let on_memory = format!("{GOOD}\n{cut}");
        let line = on_memory.lines().count() - 2; // the `[[step]]` line
        error_at(&on_memory, line, "expected `storage = \"file\"` in [group]");
        let on_files = on_memory.replacen("[group]\n", "[group]\nstorage = \"file\"\n", 1);
        let s = parse(&on_files).unwrap();
        assert_eq!(
            s.steps.last().map(|s| &s.action),
            Some(&Action::PowerCut(PowerCutSpec {
                site: "A".into(),
                after: 1
            }))
        );
        // Forcing memory on it keeps its files: its steps are about a power cut.
        let forced = s.with_storage(StorageKind::Memory);
        assert_eq!(forced.group.unwrap().storage, StorageKind::File);
    }

    #[test]
    fn network_chances_are_checked_and_crash_at_names_a_known_site() {
        let net = "[[step]]\nat = \"2s\"\nnetwork = { duplicate = 1.5 }\n";
        let bad = format!("{GOOD}\n{net}");
        let line = bad.lines().count() - 2;
        error_at(
            &bad,
            line,
            "network duplicate 1.5: expected a chance from 0 to 1",
        );
        let good = bad.replace("duplicate = 1.5", "duplicate = 0.25, reorder = 0.5");
        let s = parse(&good).unwrap();
        let Some(Action::Network(n)) = s.steps.last().map(|s| &s.action) else {
            panic!("a network step");
        };
        assert_eq!((n.duplicate, n.reorder, n.loss), (0.25, 0.5, 0.0));
        let aim = "[[step]]\nat = \"2s\"\ncrash_at = { site = \"Z\", moment = \"vote\" }\n";
        let unknown = format!("{GOOD}\n{aim}");
        error_at(&unknown, unknown.lines().count() - 2, "unknown site \"Z\"");
        let any = format!("{GOOD}\n[[step]]\nat = \"2s\"\ncrash_at = {{ moment = \"init\" }}\n");
        let s = parse(&any).unwrap();
        assert_eq!(
            s.steps.last().map(|s| &s.action),
            Some(&Action::CrashAt(CrashAtSpec {
                site: None,
                moment: Moment::Init
            }))
        );
    }

    #[test]
    fn durations_take_ms_s_and_m() {
        assert_eq!(Millis::parse("250ms"), Ok(Millis(250)));
        assert_eq!(Millis::parse("1.5s"), Ok(Millis(1_500)));
        assert_eq!(Millis::parse("2m"), Ok(Millis(120_000)));
        assert!(Millis::parse("5").is_err());
        assert!(Millis::parse("-1s").is_err());
        assert!(Millis::parse("xs").is_err());
    }

    #[test]
    fn an_unknown_key_names_its_line_and_the_keys_expected() {
        let bad = GOOD.replace("crash = \"A\"", "crush = \"A\"");
        error_at(&bad, 12, "unknown field `crush`");
    }

    #[test]
    fn a_bad_duration_names_its_line_and_the_format() {
        let bad = GOOD.replace("at = \"1.5s\"", "at = \"soon\"");
        error_at(&bad, 11, "expected a duration such as \"250ms\"");
    }

    #[test]
    fn a_step_with_two_actions_or_none_is_refused() {
        let two = GOOD.replace("crash = \"A\"", "crash = \"A\"\nheal = true");
        error_at(&two, 10, "one action per step, found 2");
        let none = GOOD.replace("crash = \"A\"", "");
        error_at(&none, 10, "expected one action in this step");
    }

    #[test]
    fn an_unknown_site_is_named_with_the_step_line() {
        let bad = GOOD.replace("crash = \"A\"", "crash = \"Z\"");
        error_at(&bad, 10, "unknown site \"Z\"");
        let bad = GOOD.replace("[sites.A]", "[sites.Q]");
        error_at(&bad, 7, "[sites.Q]: expected one of the group's sites");
    }

    #[test]
    fn ack_policies_are_read_by_name_and_an_unknown_one_lists_the_names() {
        let with = |policy: &str| {
            GOOD.replace(
                "sites = [\"A\", \"B\", \"C\"]",
                &format!("sites = [\"A\", \"B\", \"C\"]\nack_policy = \"{policy}\""),
            )
        };
        for policy in AckPolicy::ALL {
            let s = parse(&with(policy.name())).unwrap();
            assert_eq!(s.group.expect("a group").ack_policy, policy);
        }
        error_at(
            &with("majority"),
            6,
            "unknown ack policy \"majority\": expected one of all, all_available",
        );
    }

    #[test]
    fn steps_out_of_time_order_are_refused() {
        let bad = GOOD.replace("at = \"2s\"", "at = \"1s\"");
        error_at(&bad, 14, "expected steps in time order");
    }

    #[test]
    fn expectations_name_known_events_and_outcomes() {
        let bad = GOOD.replace("master = \"B\", within", "event = \"Exploded\", within");
        error_at(&bad, 14, "unknown event \"Exploded\"");
        let bad = GOOD.replace(
            "expect = { master = \"B\", within = \"5s\" }",
            "write = { via = \"A\", expect = \"Fine\" }",
        );
        error_at(&bad, 14, "unknown outcome \"Fine\"");
        let bad = GOOD.replace("within = \"5s\"", "within = \"5s\", for = \"1s\"");
        error_at(&bad, 14, "`within` or `for`");
    }

    #[test]
    fn breaking_an_invariant_on_purpose_needs_a_known_name_and_a_reason() {
        let bad = format!("{GOOD}\n[check]\nbroken = [\"liveness\"]\n");
        error_at(&bad, 19, "why invariants are broken");
        let bad = format!("{GOOD}\n[check]\nbroken = [\"speed\"]\nwhy = \"x\"\n");
        error_at(&bad, 19, "unknown invariant \"speed\"");
        let good = format!("{GOOD}\n[check]\nbroken = [\"liveness\"]\nwhy = \"shown\"\n");
        let s = Scenario::from_text(Path::new("x.toml"), &good).unwrap();
        assert_eq!(s.broken, ["liveness"]);
    }

    #[test]
    fn skipping_an_invariant_needs_a_known_name_and_a_reason() {
        let bad = format!("{GOOD}\n[check]\nskip = [\"liveness\"]\n");
        error_at(&bad, 19, "why");
        let bad = format!("{GOOD}\n[check]\nskip = [\"speed\"]\nwhy = \"x\"\n");
        error_at(&bad, 19, "unknown invariant \"speed\"");
    }

    #[test]
    fn a_file_without_a_group_or_with_broken_toml_is_refused() {
        error_at("summary = \"x\"\n", 0, "expected a [group] table");
        error_at("summary = \"x\"\n[group\n", 2, "");
        let err = Scenario::load(Path::new("/nonexistent/x.toml")).unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent/x.toml:0: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn every_catalog_file_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog");
        let files = catalog_files(&dir).unwrap();
        assert!(files.len() >= 19, "{files:?}");
        for f in files {
            Scenario::load(&f).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
