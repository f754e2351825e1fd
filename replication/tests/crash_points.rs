//! `FileStorage` against every crash a POSIX filesystem allows.
//!
//! A script of storage calls (appends, syncs, a rollback, archiving, an internal
//! initialisation, metadata writes) runs on a simulated filesystem whose power fails after its
//! `k`th operation, for every `k`. At each of those points, every crash the rules allow (each
//! unsynced write lost, kept or torn at a sector; each unsynced create, rename or removal undone
//! or not) is applied to a copy, the storage is reopened, and what it holds is checked against a
//! model of the calls that had returned:
//!
//! - opening succeeds: a crash is never reported as damage;
//! - nothing synced is lost: the log holds at least what the model says is durable;
//! - nothing is invented or resurrected: the log is a prefix of what was written (a rolled-back
//!   tail never comes back once the rollback returned);
//! - the snapshot switch and the metadata write are all-or-nothing, and durable once returned;
//! - recovery says what it dropped, and opening again finds nothing more to repair;
//! - the reopened storage works: a record appended and synced is there after another reopen.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use replication::log::{LogRecord, RecordBody, Snapshot};
use replication::storage::{
    read_to_end, replay, CrashPlan, FileStorage, MemStorage, Meta, Recovery, SimFs, Storage,
};
use replication::types::{Gen, Lsn};
use replication::Txn;
use std::path::Path;

const DIR: &str = "/data";
/// Small sectors, so that writes of a few small records can tear in several places.
const SECTOR: u64 = 16;
/// How far the log file is extended with zeros ahead of its records: a few sectors, so that the
/// script crosses many extensions (each a crash point) and every crashed disk stays small.
const PREALLOCATE: u64 = 4 * SECTOR;
/// Plans checked per crash point when there are more (sampled, with the two extremes always in).
const MAX_PLANS: u128 = 256;

#[derive(Clone, Debug)]
enum Call {
    Append(Vec<LogRecord>),
    Sync,
    Truncate(Lsn),
    Snapshot { snapshot: Snapshot, keep_log: bool },
    Meta(Meta),
}

fn record(lsn: Lsn, gen: Gen) -> LogRecord {
    LogRecord::new(
        lsn,
        gen,
        RecordBody::Txn(Txn::put(
            format!("key{lsn}"),
            format!("value {lsn} of gen {gen}"),
        )),
    )
}

fn records(lsns: std::ops::RangeInclusive<Lsn>, gen: Gen) -> Vec<LogRecord> {
    lsns.map(|lsn| record(lsn, gen)).collect()
}

/// The snapshot of a log holding exactly `log`.
fn snapshot_of(log: &[LogRecord]) -> Snapshot {
    let mut mem = MemStorage::new();
    mem.append(log).unwrap();
    replay(&mut mem).unwrap()
}

fn meta(gen: Gen) -> Meta {
    Meta {
        gen,
        egen: gen,
        voted_for: None,
        voters_floor: replication::LogPos::new(gen, gen + 1),
    }
}

/// The storage's life in calls: writes, a rollback of a divergent tail, archiving, more writes,
/// an internal initialisation from a master far ahead, and writes after it.
fn script() -> Vec<Call> {
    let mut history = records(1..=3, 1);
    let rewritten = records(4..=6, 2);
    history.extend(rewritten.clone());
    let far_ahead = records(1..=10, 3);
    vec![
        Call::Append(records(1..=3, 1)),
        Call::Sync,
        Call::Meta(meta(1)),
        Call::Append(records(4..=5, 1)),
        Call::Sync,
        Call::Append(records(6..=6, 1)),
        Call::Truncate(3),
        Call::Append(rewritten),
        Call::Sync,
        Call::Meta(meta(2)),
        Call::Snapshot {
            snapshot: snapshot_of(&history[..4]),
            keep_log: true,
        },
        Call::Append(records(7..=7, 2)),
        Call::Sync,
        Call::Snapshot {
            snapshot: snapshot_of(&far_ahead),
            keep_log: false,
        },
        Call::Meta(meta(3)),
        Call::Append(records(11..=12, 3)),
        Call::Sync,
    ]
}

impl Call {
    /// A short name for failure messages (a snapshot's debug form runs to pages).
    fn label(&self) -> String {
        match self {
            Call::Append(records) => format!("append of {} records", records.len()),
            Call::Sync => "sync".into(),
            Call::Truncate(lsn) => format!("truncate after {lsn}"),
            Call::Snapshot { snapshot, keep_log } => {
                format!("snapshot at {} (keep_log {keep_log})", snapshot.pos())
            }
            Call::Meta(meta) => format!("meta of gen {}", meta.gen),
        }
    }
}

fn apply(storage: &mut dyn Storage, call: &Call) -> Result<(), String> {
    let result = match call {
        Call::Append(records) => storage.append(records),
        Call::Sync => storage.sync(),
        Call::Truncate(lsn) => storage.truncate_after(*lsn),
        Call::Snapshot { snapshot, keep_log } => storage.write_snapshot(snapshot, *keep_log),
        Call::Meta(meta) => storage.write_meta(meta),
    };
    result.map_err(|e| e.to_string())
}

/// What a storage holds, as its user sees it.
#[derive(Clone, Debug, PartialEq)]
struct Image {
    snapshot: Snapshot,
    log: Vec<LogRecord>,
    meta: Option<Meta>,
}

fn image(storage: &mut dyn Storage) -> Image {
    let first = storage.first_lsn();
    Image {
        snapshot: storage.read_snapshot().unwrap(),
        log: read_to_end(storage, first).unwrap(),
        meta: storage.read_meta().unwrap(),
    }
}

/// The model at one moment: what a crash must keep, and everything written.
#[derive(Clone, Debug)]
struct Bounds {
    durable: Image,
    written: Image,
}

fn bounds(model: &MemStorage) -> Bounds {
    let mut crashed = model.clone();
    crashed.crash();
    Bounds {
        durable: image(&mut crashed),
        written: image(&mut model.clone()),
    }
}

/// What the script left when the power failed: the filesystem, and the model before and after
/// the call that was running (the same when none was).
struct Cut {
    fs: SimFs,
    before: Bounds,
    after: Bounds,
    call: String,
}

/// Runs the script with the power failing after `k` filesystem operations (or never).
fn run_until(k: Option<u64>) -> Cut {
    let fs = SimFs::with_sector(SECTOR, 1);
    if let Some(k) = k {
        fs.cut_power_after(k);
    }
    let mut model = MemStorage::new();
    let empty = bounds(&model);
    let mut storage = match FileStorage::open_on(fs.shared(), DIR, "the script") {
        Ok((mut storage, _)) => {
            storage.set_preallocation(PREALLOCATE);
            storage
        }
        Err(_) => {
            return Cut {
                fs,
                before: empty.clone(),
                after: empty,
                call: "open".into(),
            }
        }
    };
    for call in script() {
        let before = bounds(&model);
        apply(&mut model, &call).expect("the model accepts the script");
        if apply(&mut storage, &call).is_err() {
            assert!(
                fs.is_powered_off(),
                "only the power cut fails a call: {}",
                call.label()
            );
            return Cut {
                fs,
                before,
                after: bounds(&model),
                call: call.label(),
            };
        }
    }
    let done = bounds(&model);
    Cut {
        fs,
        before: done.clone(),
        after: done,
        call: "none (the script had finished)".into(),
    }
}

fn is_prefix(short: &[LogRecord], long: &[LogRecord]) -> bool {
    short.len() <= long.len() && short == &long[..short.len()]
}

/// Whether `found` is a state the crash may leave, given the model `at` one moment.
fn allowed_at(found: &Image, at: &Bounds) -> bool {
    found.snapshot == at.written.snapshot
        && at.durable.snapshot == at.written.snapshot
        && is_prefix(&at.durable.log, &found.log)
        && is_prefix(&found.log, &at.written.log)
}

/// Every check on one crash of one cut; `Err` says what broke.
fn check_crash(cut: &Cut, plan: &CrashPlan) -> Result<(), String> {
    let fs = cut.fs.fork();
    fs.crash(plan);
    let on_disk_before = log_lengths(&fs);
    let (mut storage, recovery) = FileStorage::open_on(fs.shared(), DIR, "reopen")
        .map_err(|e| format!("reopening failed: {e}"))?;
    // Recovery names exactly the bytes it cut from the current log (the one log file left).
    let after = log_lengths(&fs);
    let [(log, len)] = after.as_slice() else {
        return Err(format!("log files after opening: {after:?}"));
    };
    // A log the open had to create (its creation was undone) starts at its header: no drop.
    let before = on_disk_before
        .iter()
        .find(|(name, _)| name == log)
        .map_or(*len, |(_, len)| *len);
    if before < *len || recovery.dropped_bytes != before - len {
        return Err(format!(
            "{log} went from {before} to {len} bytes, recovery says {} were dropped",
            recovery.dropped_bytes
        ));
    }
    let found = image(&mut storage);
    // The log and snapshot together are those of the state before the running call or after it.
    if !allowed_at(&found, &cut.before) && !allowed_at(&found, &cut.after) {
        return Err(format!(
            "found snapshot at {} with log {:?}\nbefore the call: durable {:?}, written {:?}\n\
             after it: durable {:?}, written {:?}",
            found.snapshot.pos(),
            positions(&found.log),
            positions(&cut.before.durable.log),
            positions(&cut.before.written.log),
            positions(&cut.after.durable.log),
            positions(&cut.after.written.log),
        ));
    }
    if found.meta != cut.before.durable.meta && found.meta != cut.after.durable.meta {
        return Err(format!(
            "found meta {:?}, expected {:?} or {:?}",
            found.meta, cut.before.durable.meta, cut.after.durable.meta
        ));
    }
    let reported = recovery.dropped_bytes > 0;
    if reported != recovery.reason.is_some() || reported != (recovery.dropped_records > 0) {
        return Err(format!("an inconsistent recovery report: {recovery:?}"));
    }
    drop(storage);
    let (mut again, second) =
        FileStorage::open_on(fs.shared(), DIR, "reopen again").map_err(|e| e.to_string())?;
    again.set_preallocation(PREALLOCATE);
    if second != Recovery::default() || image(&mut again) != found {
        return Err(format!(
            "opening again repaired more ({second:?}) or found another state"
        ));
    }
    // And it works: the next record sticks.
    let next = record(again.last_lsn() + 1, 9);
    again.append(std::slice::from_ref(&next)).unwrap();
    again.sync().unwrap();
    drop(again);
    let (mut last, _) = FileStorage::open_on(fs.shared(), DIR, "last").unwrap();
    if image(&mut last).log.last() != Some(&next) {
        return Err("a record synced after recovery was lost".into());
    }
    Ok(())
}

/// Each `log.<epoch>` file in the data directory with its length.
fn log_lengths(fs: &SimFs) -> Vec<(String, u64)> {
    fs.list(Path::new(DIR))
        .into_iter()
        .filter(|name| name.starts_with("log.") && !name.ends_with(".tmp"))
        .map(|name| {
            let len = fs
                .contents(&Path::new(DIR).join(&name))
                .map_or(0, |c| c.len());
            (name, len as u64)
        })
        .collect()
}

fn positions(log: &[LogRecord]) -> Vec<String> {
    log.iter().map(|r| r.pos().to_string()).collect()
}

/// The plans checked at one cut: all of them, or a seeded sample with both extremes.
fn plans_to_check(fs: &SimFs, seed: u64) -> Vec<CrashPlan> {
    let space = fs.crash_space();
    let n = space.plans();
    if n <= MAX_PLANS {
        return (0..n).map(|i| space.plan(i)).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut plans = vec![space.plan(0), space.keep_all()];
    while (plans.len() as u128) < MAX_PLANS {
        let i = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) % n;
        plans.push(space.plan(i));
    }
    plans
}

#[test]
fn every_crash_at_every_point_leaves_a_state_the_calls_allow() {
    let total = run_until(None).fs.ops();
    assert!(
        total > 40,
        "the script exercises the filesystem ({total} operations)"
    );
    let (mut checked, mut largest, mut sampled) = (0, 0, 0);
    let mut failures = Vec::new();
    for k in 0..=total {
        let cut = run_until(Some(k));
        let space = cut.fs.crash_space().plans();
        largest = largest.max(space);
        sampled += usize::from(space > MAX_PLANS);
        for plan in plans_to_check(&cut.fs, k) {
            checked += 1;
            if let Err(why) = check_crash(&cut, &plan) {
                failures.push(format!(
                    "power cut after operation {k} (during {}), crash {:?}:\n{why}",
                    cut.call, plan.fates
                ));
            }
        }
    }
    println!(
        "{total} crash points, {checked} crashes checked (at most {largest} possible at one \
         point; {sampled} points sampled rather than enumerated)"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} crashes broke a promise; the first:\n{}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn the_crash_points_include_torn_writes_and_undone_renames() {
    // The test above is only as strong as the crashes it sees: make sure the script reaches
    // points where a write can tear and where a rename can be undone.
    let total = run_until(None).fs.ops();
    let (mut tearing, mut renames) = (0, 0);
    for k in 0..=total {
        let space = run_until(Some(k)).fs.crash_space();
        tearing += space.ops.iter().filter(|fates| fates.len() > 2).count();
        renames += space.dir_ops;
    }
    assert!(tearing > 10, "{tearing} points with a write that can tear");
    assert!(renames > 10, "{renames} undoable directory operations");
}

#[test]
fn a_second_storage_on_the_same_directory_is_refused_and_changes_nothing() {
    let fs = SimFs::new(3);
    let (mut first, _) = FileStorage::open_on(fs.shared(), DIR, "site A").unwrap();
    first.append(&records(1..=2, 1)).unwrap();
    first.sync().unwrap();
    let before = fs.ops();
    let err = FileStorage::open_on(fs.shared(), DIR, "site B").unwrap_err();
    assert!(err.to_string().contains("in use by site A"), "{err}");
    assert_eq!(fs.ops(), before, "the refused open wrote nothing");
    drop(first);
    let (mut second, _) = FileStorage::open_on(fs.shared(), DIR, "site B").unwrap();
    assert_eq!(second.last_lsn(), 2);
    assert!(Path::new(DIR).is_absolute());
    let _ = image(&mut second);
}
