//! The simulator's disk: a site's durable state, held by the world rather than by the node, so
//! that it survives a kill. A crash loses what was not synced, as a power failure would; the
//! node's next start opens whatever is left.
//!
//! Two kinds ([`StorageKind`]):
//!
//! - `memory`: the log as records in memory ([`MemStorage`]), where a crash drops the unsynced
//!   records and a torn crash leaves one damaged. The fastest, and the default: scenarios that
//!   are about the protocol rather than the disk run on it.
//! - `file`: the real [`FileStorage`] on a simulated filesystem ([`SimFs`]) whose crashes lose,
//!   keep or tear unsynced writes and undo unsynced renames as POSIX allows. The node's open
//!   storage (its process memory, write buffer included) is dropped by a crash; the filesystem
//!   survives it. This is what `repsite` runs, so it is what the swarm should break.

use replication::log::{LogRecord, Snapshot};
use replication::storage::{FileStorage, MemStorage, Meta, SimFs, Storage, StorageError};
use replication::types::Lsn;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Where a simulated site's data directory lives on its filesystem.
pub const DATA_DIR: &str = "/data";
/// How far a simulated log file is extended with zeros ahead of its records: a few records'
/// worth, where a real one takes megabytes (`DEFAULT_PREALLOCATE_BYTES`), so that runs reach
/// crashes in the middle of an extension and keep the simulated files small.
const SIM_PREALLOCATE_BYTES: u64 = 4096;

/// Which storage simulated sites run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// The in-memory model.
    #[default]
    Memory,
    /// `FileStorage` on a simulated filesystem.
    File,
}

impl StorageKind {
    /// Its name in scenario files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            StorageKind::Memory => "memory",
            StorageKind::File => "file",
        }
    }

    /// Parses a name from a command line.
    pub fn parse(name: &str) -> Option<StorageKind> {
        match name {
            "memory" => Some(StorageKind::Memory),
            "file" => Some(StorageKind::File),
            _ => None,
        }
    }
}

/// What the bit rot of [`Disk::corrupt_last`] hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// What was damaged, for the trace.
    pub what: String,
    /// Whether it was synced: then an acknowledged write may be gone.
    pub synced: bool,
}

enum Backing {
    Memory(MemStorage),
    File {
        fs: SimFs,
        /// The running node's storage; `None` while the site is down.
        open: Option<FileStorage>,
    },
}

/// A shared handle on one site's disk. Clones see the same disk.
#[derive(Clone)]
pub struct Disk {
    inner: Arc<Mutex<Backing>>,
    durable: Arc<Mutex<DurableMarks>>,
    /// Told of every batch of records the node appends (see [`Disk::watch_appends`]).
    watcher: Arc<Mutex<Option<AppendWatcher>>>,
}

/// What [`Disk::watch_appends`] calls with each batch appended.
pub type AppendWatcher = Box<dyn Fn(&[LogRecord]) + Send>;

/// When the disk's log became durable through which LSN, for checkers that ask what a site
/// held at a given time (see [`Disk::durable_through_by`]). Kept only once the world gives the
/// disk its clock.
#[derive(Default)]
struct DurableMarks {
    clock: Option<crate::clock::Elapsed>,
    /// (simulated ms, the highest last LSN so far) at each sync, snapshot write and open that
    /// raised it; in time order.
    marks: Vec<(u64, Lsn)>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Disk({})", self.kind().name())
    }
}

impl Default for Disk {
    fn default() -> Self {
        Disk::new(StorageKind::Memory, 0)
    }
}

impl Disk {
    /// A blank disk of `kind`; a file disk's crashes are drawn from `seed`.
    pub fn new(kind: StorageKind, seed: u64) -> Self {
        let backing = match kind {
            StorageKind::Memory => Backing::Memory(MemStorage::new()),
            StorageKind::File => Backing::File {
                fs: SimFs::new(seed),
                open: None,
            },
        };
        Disk {
            inner: Arc::new(Mutex::new(backing)),
            durable: Arc::default(),
            watcher: Arc::default(),
        }
    }

    /// Calls `watcher` with every batch of records the node appends from now on, once the
    /// append is done (the world watches for moments of the engine's work no event marks, such
    /// as the start of a removal).
    pub fn watch_appends(&self, watcher: AppendWatcher) {
        *self.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(watcher);
    }

    /// Starts keeping the times at which the log became durable, on `clock` (the world's).
    pub fn keep_durable_marks(&self, clock: crate::clock::Elapsed) {
        self.durable.lock().unwrap_or_else(|p| p.into_inner()).clock = Some(clock);
    }

    /// Whether, by simulated `ms`, the log was durable through `lsn` at some point: synced, or
    /// written as a snapshot, or found on opening the disk (what survived a crash counts as
    /// durable from then on). Says nothing of what a later crash, rot or truncation took.
    pub fn durable_through_by(&self, ms: u64, lsn: Lsn) -> bool {
        let durable = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        let by = durable.marks.partition_point(|(at, _)| *at <= ms);
        by > 0 && durable.marks[by - 1].1 >= lsn
    }

    /// Notes that the log is durable through `last` now.
    fn mark_durable(&self, last: Lsn) {
        let mut durable = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ms) = durable
            .clock
            .as_ref()
            .map(|c| c.elapsed().as_millis() as u64)
        else {
            return;
        };
        if durable
            .marks
            .last()
            .is_none_or(|(_, highest)| *highest < last)
        {
            durable.marks.push((ms, last));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Backing> {
        // A panic while holding the lock is a simulator bug; the state is still the disk's.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Its kind.
    pub fn kind(&self) -> StorageKind {
        match &*self.lock() {
            Backing::Memory(_) => StorageKind::Memory,
            Backing::File { .. } => StorageKind::File,
        }
    }

    /// The node opens its storage (at every start): a torn or damaged tail is dropped here, as
    /// `FileStorage` does when it opens its files. Returns how many records were dropped.
    /// `holder` names the site to whoever finds the directory locked.
    pub fn open(&self, holder: &str) -> Result<u64, StorageError> {
        let dropped = self.open_backing(holder)?;
        self.mark_durable(self.last_lsn());
        Ok(dropped)
    }

    fn open_backing(&self, holder: &str) -> Result<u64, StorageError> {
        match &mut *self.lock() {
            Backing::Memory(mem) => Ok(mem.recover() as u64),
            Backing::File { fs, open } => {
                // The previous process is gone (a restart kills it first): its lock goes too.
                *open = None;
                if fs.is_powered_off() {
                    fs.crash_random();
                }
                let (mut storage, recovery) = FileStorage::open_on(fs.shared(), DATA_DIR, holder)?;
                // Small steps, so that the log file's extensions meet crashes often.
                storage.set_preallocation(SIM_PREALLOCATE_BYTES);
                *open = Some(storage);
                Ok(recovery.dropped_records)
            }
        }
    }

    /// Power failure: what was not synced is lost (for a file disk, as the seed decides among
    /// what POSIX allows), and the node's process memory with it.
    pub fn crash(&self) {
        match &mut *self.lock() {
            Backing::Memory(mem) => mem.crash(),
            Backing::File { fs, open } => {
                *open = None;
                fs.crash_random();
            }
        }
    }

    /// Power failure during a write. The memory disk keeps the first unsynced record, damaged.
    /// On a file disk the node was syncing: its unsynced records reached the file but not the
    /// platter, and the crash loses, keeps or tears each write as the seed decides.
    pub fn crash_tearing(&self) {
        match &mut *self.lock() {
            Backing::Memory(mem) => mem.crash_tearing(),
            Backing::File { fs, open } => {
                if let Some(storage) = open.as_mut() {
                    // A write that fails has no power to fail for: the crash decides anyway.
                    let _ = storage.write_buffered();
                }
                *open = None;
                fs.crash_random();
            }
        }
    }

    /// The operator empties the site's directory (the site is down): it starts as on a new
    /// machine. A file disk draws its later crashes from `seed`.
    pub fn wipe(&self, seed: u64) {
        let kind = self.kind();
        *self.lock() = match kind {
            StorageKind::Memory => Backing::Memory(MemStorage::new()),
            StorageKind::File => Backing::File {
                fs: SimFs::new(seed),
                open: None,
            },
        };
    }

    /// A file disk loses power in the middle of the node's `n`th next filesystem operation:
    /// that operation and every later one fail (the node stops on the storage error) and the
    /// crash is drawn when the site next opens the disk. False for a memory disk.
    pub fn cut_power_after(&self, n: u64) -> bool {
        match &*self.lock() {
            Backing::Memory(_) => false,
            Backing::File { fs, .. } => {
                fs.cut_power_after(n);
                true
            }
        }
    }

    /// Calls off a power cut armed by [`Disk::cut_power_after`] that has not fired yet.
    pub fn disarm_power_cut(&self) {
        if let Backing::File { fs, .. } = &*self.lock() {
            fs.disarm();
        }
    }

    /// Whether the power is out: a cut armed by [`Disk::cut_power_after`] has fired. The machine
    /// is dead from then on, whether or not its node has tried the disk since.
    pub fn is_powered_off(&self) -> bool {
        match &*self.lock() {
            Backing::Memory(_) => false,
            Backing::File { fs, .. } => fs.is_powered_off(),
        }
    }

    /// Damages the last record of the log, synced or not (bit rot). `None` if the log is empty.
    pub fn corrupt_last(&self) -> Option<Damage> {
        match &mut *self.lock() {
            Backing::Memory(mem) => {
                let last = mem.last_lsn();
                let synced_end = last - mem.unsynced() as u64;
                (last >= mem.first_lsn() && mem.corrupt(last)).then(|| Damage {
                    what: format!("disk record {last}"),
                    synced: last <= synced_end,
                })
            }
            Backing::File { fs, .. } => {
                // The current log is the newest `log.<epoch>`; its last byte that is not one of
                // the zeros it was extended with is in the last record's frame (records still
                // in the node's write buffer are out of reach, as they are of a real disk's
                // rot).
                let log = fs
                    .list(Path::new(DATA_DIR))
                    .into_iter()
                    .filter_map(|name| {
                        let epoch: u64 = name.strip_prefix("log.")?.parse().ok()?;
                        Some((epoch, name))
                    })
                    .max()?
                    .1;
                let path = Path::new(DATA_DIR).join(&log);
                let contents = fs.contents(&path)?;
                let last = contents.iter().rposition(|&b| b != 0)?;
                // A header-only log holds no record to damage.
                if last < 12 {
                    return None;
                }
                let synced = fs.damage(&path, (contents.len() - 1 - last) as u64)?;
                Some(Damage {
                    what: format!("a byte of the last record in {log}"),
                    synced,
                })
            }
        }
    }

    /// How many handles share this disk: the world's, its site's running node's, and the
    /// caller's. Once a run is over only the caller's may be left; more means a task outlived it.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Runs `read` on the storage as it is: the running node's, or for a site that is down (or
    /// whose power is out), a copy of its filesystem opened as the next start will open it
    /// (repairs go to the copy).
    fn inspect<T>(
        &self,
        read: impl FnOnce(&mut dyn Storage) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        match &mut *self.lock() {
            Backing::Memory(mem) => read(mem),
            Backing::File {
                fs,
                open: Some(storage),
            } if !fs.is_powered_off() => read(storage),
            Backing::File { fs, .. } => {
                let copy = fs.fork();
                if copy.is_powered_off() {
                    copy.crash_random();
                }
                let (mut storage, _) = FileStorage::open_on(copy.shared(), DATA_DIR, "a reader")?;
                read(&mut storage)
            }
        }
    }

    /// Every record of the log (after the snapshot).
    pub fn log(&self) -> Result<Vec<LogRecord>, StorageError> {
        self.inspect(|s| {
            let first = s.first_lsn();
            replication::storage::read_to_end(s, first)
        })
    }

    /// The snapshot plus the replayed log: what the site's database must equal.
    pub fn replay(&self) -> Result<Snapshot, StorageError> {
        self.inspect(|s| replication::storage::replay(s))
    }

    /// The first LSN the log holds (one past the snapshot).
    pub fn first_lsn(&self) -> Result<Lsn, StorageError> {
        self.inspect(|s| Ok(s.first_lsn()))
    }

    /// The node's view of its storage; fails while the site is down.
    fn with_open<T>(
        &self,
        op: impl FnOnce(&mut dyn Storage) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        match &mut *self.lock() {
            Backing::Memory(mem) => op(mem),
            Backing::File {
                open: Some(storage),
                ..
            } => op(storage),
            Backing::File { open: None, .. } => Err(StorageError::Fault(
                "the storage is not open (the site was crashed)".into(),
            )),
        }
    }
}

/// The running node's storage. A node killed by a crash never calls it again; one whose disk
/// lost power gets the filesystem's errors and stops.
impl Storage for Disk {
    fn first_lsn(&self) -> Lsn {
        match &*self.lock() {
            Backing::Memory(mem) => mem.first_lsn(),
            Backing::File { open, .. } => open.as_ref().map_or(1, Storage::first_lsn),
        }
    }
    fn last_lsn(&self) -> Lsn {
        match &*self.lock() {
            Backing::Memory(mem) => mem.last_lsn(),
            Backing::File { open, .. } => open.as_ref().map_or(0, Storage::last_lsn),
        }
    }
    fn append(&mut self, records: &[LogRecord]) -> Result<(), StorageError> {
        self.with_open(|s| s.append(records))?;
        if let Some(watch) = &*self.watcher.lock().unwrap_or_else(|p| p.into_inner()) {
            watch(records);
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        let last = self.with_open(|s| s.sync().map(|()| s.last_lsn()))?;
        self.mark_durable(last);
        Ok(())
    }
    fn read(&mut self, from: Lsn, max: usize) -> Result<Vec<LogRecord>, StorageError> {
        self.with_open(|s| s.read(from, max))
    }
    fn truncate_after(&mut self, lsn: Lsn) -> Result<(), StorageError> {
        self.with_open(|s| s.truncate_after(lsn))
    }
    fn write_snapshot(&mut self, snapshot: &Snapshot, keep_log: bool) -> Result<(), StorageError> {
        let last =
            self.with_open(|s| s.write_snapshot(snapshot, keep_log).map(|()| s.last_lsn()))?;
        self.mark_durable(last);
        Ok(())
    }
    fn read_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        self.with_open(|s| s.read_snapshot())
    }
    fn write_meta(&mut self, meta: &Meta) -> Result<(), StorageError> {
        self.with_open(|s| s.write_meta(meta))
    }
    fn read_meta(&mut self) -> Result<Option<Meta>, StorageError> {
        self.with_open(|s| s.read_meta())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replication::log::RecordBody;
    use replication::Txn;

    fn rec(lsn: Lsn) -> LogRecord {
        LogRecord::new(lsn, 1, RecordBody::Txn(Txn::put("k", "v")))
    }

    #[cfg(madsim)]
    #[madsim::test]
    async fn the_disk_marks_when_its_log_became_durable_through_which_lsn() {
        use std::time::Duration;
        for kind in [StorageKind::Memory, StorageKind::File] {
            let disk = Disk::new(kind, 1);
            disk.keep_durable_marks(crate::clock::Elapsed::start());
            disk.open("site").unwrap();
            let mut user = disk.clone();
            tokio::time::sleep(Duration::from_millis(10)).await;
            user.append(&[rec(1), rec(2)]).unwrap();
            assert!(
                !disk.durable_through_by(10, 1),
                "{kind:?}: appended is not durable"
            );
            user.sync().unwrap();
            assert!(disk.durable_through_by(10, 2), "{kind:?}");
            assert!(
                !disk.durable_through_by(9, 1),
                "{kind:?}: not before the sync"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            user.append(&[rec(3)]).unwrap();
            user.sync().unwrap();
            assert!(!disk.durable_through_by(19, 3), "{kind:?}");
            assert!(disk.durable_through_by(20, 3), "{kind:?}");
            assert!(
                disk.durable_through_by(25, 2),
                "{kind:?}: what was durable stays so"
            );
        }
    }

    #[test]
    fn the_disk_outlives_its_user_and_a_crash_loses_only_unsynced_records() {
        for kind in [StorageKind::Memory, StorageKind::File] {
            let disk = Disk::new(kind, 1);
            disk.open("site").unwrap();
            let mut user = disk.clone();
            user.append(&[rec(1)]).unwrap();
            user.sync().unwrap();
            user.append(&[rec(2)]).unwrap();
            assert_eq!(
                disk.log().unwrap().len(),
                2,
                "{kind:?}: readers see unsynced records"
            );
            drop(user);
            disk.crash();
            assert_eq!(disk.log().unwrap().len(), 1, "{kind:?}");
            assert_eq!(disk.open("site").unwrap(), 0, "{kind:?}");
            assert_eq!(disk.last_lsn(), 1, "{kind:?}");
        }
    }

    #[test]
    fn damage_to_a_file_disk_is_found_when_the_site_opens_it_and_a_power_cut_stops_the_node() {
        let disk = Disk::new(StorageKind::File, 2);
        disk.open("site").unwrap();
        let mut node = disk.clone();
        node.append(&[rec(1), rec(2)]).unwrap();
        node.sync().unwrap();
        let damage = disk.corrupt_last().expect("a record to damage");
        assert!(damage.synced, "{damage:?}");
        assert!(node.read(2, 1).is_err(), "a damaged record is never served");
        assert_eq!(
            disk.open("site").unwrap(),
            1,
            "opening drops the damaged record"
        );
        assert_eq!(disk.log().unwrap(), vec![rec(1)]);

        assert!(disk.cut_power_after(0));
        node.append(&[rec(2)]).unwrap();
        assert!(node.sync().is_err(), "no power, no sync");
        assert_eq!(disk.open("site").unwrap(), 0);
        assert_eq!(
            disk.log().unwrap(),
            vec![rec(1)],
            "the unsynced record died with it"
        );
    }

    #[test]
    fn a_down_file_disk_reads_as_its_next_start_will_open_it_without_being_repaired() {
        let disk = Disk::new(StorageKind::File, 3);
        disk.open("site").unwrap();
        let mut node = disk.clone();
        node.append(&[rec(1), rec(2)]).unwrap();
        node.sync().unwrap();
        disk.corrupt_last().unwrap();
        disk.crash();
        assert_eq!(
            disk.log().unwrap(),
            vec![rec(1)],
            "the reader's copy drops the damage"
        );
        assert_eq!(
            disk.open("site").unwrap(),
            1,
            "the disk itself still holds it"
        );
    }
}
