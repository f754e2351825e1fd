//! Tests of `repsite replica`: first and incremental copies, archiving, torn and damaged
//! files, roll backs in the source, and copying while the site appends.

use crate::replica::*;
use replication::log::{LogRecord, RecordBody, Snapshot, Txn};
use replication::storage::{read_to_end, replay, FileStorage, Meta, Storage};
use replication::types::{LogPos, Lsn};
use std::fs::{self, OpenOptions};
use std::path::Path;

fn rec(lsn: Lsn, gen: u64) -> LogRecord {
    LogRecord::new(
        lsn,
        gen,
        RecordBody::Txn(Txn::put(format!("k{lsn}"), format!("v{lsn}.{gen}"))),
    )
}

/// Appends records `from..=to` of generation `gen` and syncs.
fn append(s: &mut FileStorage, from: Lsn, to: Lsn, gen: u64) {
    s.append(&(from..=to).map(|l| rec(l, gen)).collect::<Vec<_>>())
        .unwrap();
    s.sync().unwrap();
}

fn source(dir: &Path, last: Lsn) -> FileStorage {
    let (mut s, _) = FileStorage::open(dir).unwrap();
    append(&mut s, 1, last, 1);
    s.write_meta(&Meta {
        gen: 1,
        ..Meta::default()
    })
    .unwrap();
    s
}

/// What a directory holds, read through the storage itself.
fn contents(dir: &Path) -> (Snapshot, Vec<LogRecord>, Option<Meta>) {
    let (mut s, recovery) = FileStorage::open(dir).unwrap();
    assert_eq!(recovery.dropped_records, 0, "{dir:?} opened clean");
    let first = s.first_lsn();
    (
        replay(&mut s).unwrap(),
        read_to_end(&mut s, first).unwrap(),
        s.read_meta().unwrap(),
    )
}

fn wrote(report: &CopyReport) -> Vec<&str> {
    report
        .actions
        .iter()
        .filter(|a| a.wrote())
        .map(|a| a.name())
        .collect()
}

#[test]
fn the_first_copy_takes_everything_and_opens_as_the_same_storage() {
    let (src, bk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = source(src.path(), 10);
    let report = copy(src.path(), bk.path()).unwrap();
    assert_eq!(wrote(&report), ["log.0", "meta"]);
    assert_eq!(report.state.records, 10);
    assert_eq!(report.state.last, LogPos::new(1, 10));
    assert_eq!(report.state.meta_gen, Some(1));
    drop(s);
    assert_eq!(contents(bk.path()), contents(src.path()));
    assert_eq!(verify(bk.path()).unwrap(), report.state);
}

#[test]
fn a_later_copy_appends_only_the_new_records() {
    let (src, bk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut s = source(src.path(), 10);
    copy(src.path(), bk.path()).unwrap();
    let again = copy(src.path(), bk.path()).unwrap();
    assert!(wrote(&again).is_empty(), "{:?}", again.actions);

    append(&mut s, 11, 15, 1);
    let report = copy(src.path(), bk.path()).unwrap();
    assert_eq!(wrote(&report), ["log.0"]);
    assert!(report.actions.contains(&FileAction::Appended {
        name: "log.0".into(),
        bytes: report
            .actions
            .iter()
            .find_map(|a| match a {
                FileAction::Appended { bytes, .. } => Some(*bytes),
                _ => None,
            })
            .unwrap(),
        records: 5,
        from: 11,
        to: 15,
    }));
    drop(s);
    assert_eq!(contents(bk.path()), contents(src.path()));
}

#[test]
fn after_archiving_the_new_log_and_snapshot_replace_the_old_log() {
    let (src, bk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut s = source(src.path(), 10);
    copy(src.path(), bk.path()).unwrap();
    let snapshot = {
        let mut snap = Snapshot::default();
        for r in (1..=6).map(|l| rec(l, 1)) {
            snap.history.note_append(&r);
            snap.db.apply(&r);
        }
        snap
    };
    s.write_snapshot(&snapshot, true).unwrap();
    append(&mut s, 11, 12, 1);
    let report = copy(src.path(), bk.path()).unwrap();
    assert_eq!(wrote(&report), ["log.1", "snapshot"]);
    assert!(report.actions.contains(&FileAction::Removed {
        name: "log.0".into()
    }));
    assert_eq!(report.state.snapshot, LogPos::new(1, 6));
    assert_eq!(report.state.records, 6);
    assert!(!bk.path().join("log.0").exists());
    drop(s);
    assert_eq!(contents(bk.path()), contents(src.path()));
}

/// A snapshot of records `1..=at`, as they stand in `records`.
fn snapshot_of(records: &[LogRecord], at: Lsn) -> Snapshot {
    let mut snap = Snapshot::default();
    for r in records.iter().filter(|r| r.lsn <= at) {
        snap.history.note_append(r);
        snap.db.apply(r);
    }
    snap
}

#[test]
fn a_log_archived_past_the_backup_is_refused_and_the_backup_left_alone() {
    let (src, bk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut s = source(src.path(), 10);
    copy(src.path(), bk.path()).unwrap();
    let before = contents(bk.path());
    append(&mut s, 11, 15, 1);
    let all: Vec<_> = (1..=15).map(|l| rec(l, 1)).collect();
    s.write_snapshot(&snapshot_of(&all, 12), true).unwrap();
    let err = copy(src.path(), bk.path()).unwrap_err();
    assert!(
        matches!(
            err,
            ReplicaError::LogNoLongerReaches {
                source_snapshot: 12,
                backup_last: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("empty directory"), "{err}");
    assert_eq!(contents(bk.path()), before, "nothing was touched");
    for leftover in ["log.1", "log.1.tmp", "snapshot"] {
        assert!(!bk.path().join(leftover).exists(), "{leftover} left behind");
    }
    // Archived exactly at the backup's last record: the source's snapshot continues it.
    let (src2, bk2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut s2 = source(src2.path(), 10);
    copy(src2.path(), bk2.path()).unwrap();
    append(&mut s2, 11, 13, 1);
    s2.write_snapshot(&snapshot_of(&all, 10), true).unwrap();
    let report = copy(src2.path(), bk2.path()).unwrap();
    assert_eq!(report.state.last, LogPos::new(1, 13));
    drop(s2);
    assert_eq!(contents(bk2.path()), contents(src2.path()));
}

#[test]
fn a_source_that_rolled_back_then_archived_is_refused() {
    let (src, bk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut s = source(src.path(), 10);
    copy(src.path(), bk.path()).unwrap();
    // Records 9 and 10 roll back; the new master's 9..12 follow; then the site archives at 6,
    // so its new log still reaches back to LSN 10, now of another generation.
    s.truncate_after(8).unwrap();
    append(&mut s, 9, 12, 2);
    let now: Vec<_> = (1..=8).map(|l| rec(l, 1)).collect();
    s.write_snapshot(&snapshot_of(&now, 6), true).unwrap();
    let err = copy(src.path(), bk.path()).unwrap_err();
    assert!(matches!(err, ReplicaError::NotAPrefix { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("LSN 10 is of generation 1 in the backup and 2"),
        "{err}"
    );
    assert!(bk.path().join("log.0").exists(), "the backup keeps its log");
    assert!(!bk.path().join("log.1").exists(), "and gets no new one");
    // Archived exactly at the backup's last LSN, of another generation: refused too.
    let (src2, bk2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut s2 = source(src2.path(), 10);
    copy(src2.path(), bk2.path()).unwrap();
    s2.truncate_after(8).unwrap();
    append(&mut s2, 9, 12, 2);
    let mut mixed: Vec<_> = (1..=8).map(|l| rec(l, 1)).collect();
    mixed.extend((9..=12).map(|l| rec(l, 2)));
    s2.write_snapshot(&snapshot_of(&mixed, 10), true).unwrap();
    let err = copy(src2.path(), bk2.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("LSN 10 is of generation 1 in the backup and 2 in the source's snapshot"),
        "{err}"
    );
}

#[test]
fn a_torn_tail_from_an_interrupted_copy_fails_verify_and_the_next_copy_repairs_it() {
    let (src, bk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = source(src.path(), 5);
    copy(src.path(), bk.path()).unwrap();
    let log = bk.path().join("log.0");
    let len = fs::metadata(&log).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let err = verify(bk.path()).unwrap_err();
    assert!(matches!(err, ReplicaError::Torn { .. }), "{err}");
    assert!(err.to_string().contains("log.0"), "{err}");

    let report = copy(src.path(), bk.path()).unwrap();
    assert!(
        matches!(report.actions[0], FileAction::Repaired { .. }),
        "{:?}",
        report.actions
    );
    assert!(report
        .actions
        .iter()
        .any(|a| matches!(a, FileAction::Appended { from: 5, to: 5, .. })));
    drop(s);
    assert_eq!(contents(bk.path()), contents(src.path()));
}

#[test]
fn a_source_that_rolled_back_what_the_backup_holds_is_refused() {
    let (src, bk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut s = source(src.path(), 10);
    copy(src.path(), bk.path()).unwrap();
    // A client rolls back its divergent tail and takes its new master's records.
    s.truncate_after(7).unwrap();
    append(&mut s, 8, 12, 2);
    let err = copy(src.path(), bk.path()).unwrap_err();
    assert!(matches!(err, ReplicaError::NotAPrefix { .. }), "{err}");
    assert!(err.to_string().contains("LSN 10"), "{err}");
    // Rolled back to fewer records than the backup holds: refused too.
    s.truncate_after(7).unwrap();
    let err = copy(src.path(), bk.path()).unwrap_err();
    assert!(err.to_string().contains("ends before LSN 10"), "{err}");
}

#[test]
fn a_damaged_source_record_stops_the_copy_naming_the_file() {
    let (src, bk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    drop(source(src.path(), 5));
    let log = src.path().join("log.0");
    let mut bytes = fs::read(&log).unwrap();
    // Halfway through the records (the file goes on with the zeros it was extended with).
    let middle = bytes.iter().rposition(|&b| b != 0).unwrap() / 2;
    bytes[middle] ^= 0x55;
    fs::write(&log, bytes).unwrap();
    let err = copy(src.path(), bk.path()).unwrap_err().to_string();
    assert!(err.contains(&log.display().to_string()), "{err}");
    assert!(!bk.path().join("log.0").exists(), "nothing half-copied");
    assert!(!bk.path().join("log.0.tmp").exists(), "nothing left behind");
}

#[test]
fn verify_names_a_damaged_backup_file() {
    let (src, bk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _s = source(src.path(), 5);
    copy(src.path(), bk.path()).unwrap();
    for name in ["log.0", "meta"] {
        let path = bk.path().join(name);
        let good = fs::read(&path).unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 2;
        bad[last] ^= 0x55;
        fs::write(&path, bad).unwrap();
        let err = verify(bk.path()).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        fs::write(&path, good).unwrap();
    }
    verify(bk.path()).unwrap();
}

#[test]
fn a_directory_that_is_not_a_data_directory_is_refused() {
    let (src, bk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let err = copy(src.path(), bk.path()).unwrap_err();
    assert!(matches!(err, ReplicaError::NotADataDir { .. }), "{err}");
    assert!(matches!(
        verify(bk.path()),
        Err(ReplicaError::NotADataDir { .. })
    ));
}

#[test]
fn a_backup_ahead_of_its_source_is_refused() {
    let (src, bk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (other, _) = (tempfile::tempdir().unwrap(), ());
    let mut s = source(other.path(), 4);
    let mut snap = Snapshot::default();
    let r = rec(1, 1);
    snap.history.note_append(&r);
    snap.db.apply(&r);
    s.write_snapshot(&snap, true).unwrap();
    copy(other.path(), bk.path()).unwrap();
    drop(source(src.path(), 4));
    let err = copy(src.path(), bk.path()).unwrap_err();
    assert!(matches!(err, ReplicaError::BackupAhead { .. }), "{err}");
}

#[test]
fn copying_while_the_site_appends_gives_a_prefix_of_its_log() {
    let (src, bk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut s = source(src.path(), 1);
    let writer = std::thread::spawn(move || {
        for lsn in 2..=400 {
            // Unsynced appends reach the file once the write buffer or a sync flushes them;
            // syncing every few records exercises records landing mid-copy.
            s.append(&[rec(lsn, 1)]).unwrap();
            if lsn % 3 == 0 {
                s.sync().unwrap();
            }
        }
        s.sync().unwrap();
        s
    });
    let mut copies = 0;
    while !writer.is_finished() {
        let report = copy(src.path(), bk.path()).unwrap();
        let (_, records, _) = contents(bk.path());
        assert_eq!(records.len() as u64, report.state.records);
        assert_eq!(
            records,
            (1..=report.state.last.lsn)
                .map(|l| rec(l, 1))
                .collect::<Vec<_>>()
        );
        copies += 1;
    }
    drop(writer.join().unwrap());
    copy(src.path(), bk.path()).unwrap();
    assert_eq!(contents(bk.path()), contents(src.path()));
    assert!(copies > 0);
}
