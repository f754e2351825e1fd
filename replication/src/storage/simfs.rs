//! A filesystem in memory whose crashes lose what POSIX allows them to lose, and nothing else:
//! the simulator runs [`FileStorage`](super::FileStorage) on it, and the crash-point tests crash
//! it after every operation.
//!
//! The rules follow what ALICE, CrashMonkey and LazyFS found real filesystems do:
//!
//! - Data written to a file and not synced since may be lost, kept, or torn: a write that was in
//!   flight keeps its first sectors and loses the rest. Each unsynced write and length change
//!   meets its own fate ([`Fate`]), so a later one may survive an earlier one (a hole reads as
//!   zeros).
//! - A create, rename or removal is durable only once its directory is synced. Until then a crash
//!   may undo it, whole (a rename is never half done), whatever happened to the others: ext4
//!   commits them in order, but not every filesystem does, and storage code must not lean on it.
//! - `sync_data`/`sync_all` make a file's contents durable, not its name; a file created and
//!   synced whose directory was not may vanish with its contents.
//! - Nothing synced is ever lost.
//!
//! A crash is a [`CrashPlan`]: the fate of each unsynced operation, chosen by a seed
//! ([`SimFs::crash_random`]) or by a test enumerating every plan ([`SimFs::crash_space`]).
//! [`SimFs::cut_power_after`] stops the filesystem in the middle of a sequence of operations:
//! from that moment every operation fails, and the state waits for [`SimFs::crash`].
//!
//! Everything is ordered (B-trees, vectors): the same operations and seed give the same disk.

use super::fs::{DirLock, FileSystem, FsFile, LockError};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// The sector size a torn write is cut at, unless a test asks for another.
pub const SECTOR_BYTES: u64 = 512;

/// A simulated filesystem. Clones share it; [`SimFs::fork`] copies it.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("SimFs")
            .field("files", &s.names.len())
            .field("ops", &s.ops)
            .field("boot", &s.boot)
            .finish()
    }
}

#[derive(Clone)]
struct State {
    /// Bumped by every crash: handles opened before it are stale.
    boot: u64,
    sector: u64,
    rng: ChaCha8Rng,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// The namespace as the running system sees it.
    names: BTreeMap<PathBuf, u64>,
    /// The namespace a crash starts from, before the unsynced directory operations.
    durable_names: BTreeMap<PathBuf, u64>,
    /// Directory operations not yet made durable, oldest first.
    pending_dir: Vec<DirOp>,
    dirs: BTreeSet<PathBuf>,
    /// Locked data directories and who holds them.
    locks: BTreeMap<PathBuf, String>,
    /// Filesystem operations that changed something or synced, so far.
    ops: u64,
    /// Once `ops` reaches this, the power is out: every operation fails until a crash.
    power_cut_at: Option<u64>,
    /// Bytes damaged by [`SimFs::damage`], with the value left there: damaging one again is a
    /// no-op (rot does not heal), unless the byte was rewritten since.
    damaged: BTreeMap<(u64, u64), u8>,
}

#[derive(Clone, Default)]
struct Inode {
    /// What survives any crash.
    durable: Vec<u8>,
    /// What reads see: `durable` with `pending` applied.
    current: Vec<u8>,
    /// Changes since the last sync, oldest first.
    pending: Vec<DataOp>,
}

#[derive(Clone, Debug)]
enum DataOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

/// One directory operation: the names it sets (to an inode) or clears, applied together.
#[derive(Clone, Debug)]
struct DirOp {
    dir: PathBuf,
    changes: Vec<(PathBuf, Option<u64>)>,
}

/// What a crash does to one unsynced data operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Never reached the disk.
    Lost,
    /// Reached the disk whole.
    Kept,
    /// Only its first `n` bytes reached the disk (a sector boundary inside the write).
    Torn(u64),
}

/// Every crash the rules allow from the current state: the fates each unsynced operation may
/// meet, the directory operations first (oldest first), then the data operations (by inode,
/// oldest first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashSpace {
    /// Unsynced directory operations (each lost or kept).
    pub dir_ops: usize,
    /// For each unsynced operation, in the order above, the fates it may meet.
    pub ops: Vec<Vec<Fate>>,
}

impl CrashSpace {
    /// How many different plans there are (saturating: spaces can be astronomically large).
    pub fn plans(&self) -> u128 {
        self.ops
            .iter()
            .fold(1u128, |n, fates| n.saturating_mul(fates.len() as u128))
    }

    /// The `i`th plan, for `i` below [`CrashSpace::plans`] (mixed-radix counting: plan 0 loses
    /// everything unsynced).
    pub fn plan(&self, mut i: u128) -> CrashPlan {
        let mut fates = Vec::with_capacity(self.ops.len());
        for options in &self.ops {
            let n = options.len() as u128;
            fates.push(options[(i % n) as usize]);
            i /= n;
        }
        CrashPlan { fates }
    }

    /// The plan that keeps every unsynced operation whole (what a clean shutdown would leave).
    pub fn keep_all(&self) -> CrashPlan {
        CrashPlan {
            fates: vec![Fate::Kept; self.ops.len()],
        }
    }
}

/// One crash: the fate of each unsynced operation, in [`CrashSpace`]'s order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashPlan {
    /// One per unsynced operation.
    pub fates: Vec<Fate>,
}

/// A fresh state with the given sector size and seed.
fn fresh(sector: u64, seed: u64) -> State {
    State {
        boot: 0,
        sector,
        rng: ChaCha8Rng::seed_from_u64(seed),
        inodes: BTreeMap::new(),
        next_inode: 1,
        names: BTreeMap::new(),
        durable_names: BTreeMap::new(),
        pending_dir: Vec::new(),
        dirs: BTreeSet::new(),
        locks: BTreeMap::new(),
        ops: 0,
        power_cut_at: None,
        damaged: BTreeMap::new(),
    }
}

impl SimFs {
    /// An empty filesystem whose random crashes are drawn from `seed`.
    pub fn new(seed: u64) -> SimFs {
        SimFs::with_sector(SECTOR_BYTES, seed)
    }

    /// An empty filesystem that tears writes at `sector`-byte boundaries (small sectors let a
    /// test tear small records).
    pub fn with_sector(sector: u64, seed: u64) -> SimFs {
        assert!(sector > 0, "a sector holds at least one byte");
        SimFs {
            state: Arc::new(Mutex::new(fresh(sector, seed))),
        }
    }

    /// A shared handle, for [`FileStorage::open_on`](super::FileStorage::open_on).
    pub fn shared(&self) -> Arc<dyn FileSystem> {
        Arc::new(self.clone())
    }

    /// An independent copy of this filesystem as it is now (pending operations, locks and all).
    pub fn fork(&self) -> SimFs {
        SimFs {
            state: Arc::new(Mutex::new(self.lock().clone())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the state is still the disk's.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Operations that changed something or synced, so far: the crash points.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Whether the power is out (an operation hit [`SimFs::cut_power_after`]'s limit).
    pub fn is_powered_off(&self) -> bool {
        let s = self.lock();
        s.power_cut_at.is_some_and(|at| s.ops >= at)
    }

    /// The power fails once `n` more operations have run: the `n+1`th and every later one
    /// fail, and nothing more changes until [`SimFs::crash`] or [`SimFs::crash_random`].
    pub fn cut_power_after(&self, n: u64) {
        let mut s = self.lock();
        s.power_cut_at = Some(s.ops + n);
    }

    /// Calls off a power cut that has not happened yet (one that has stays until the crash).
    pub fn disarm(&self) {
        let mut s = self.lock();
        if s.power_cut_at.is_none_or(|at| s.ops < at) {
            s.power_cut_at = None;
        }
    }

    /// Every crash the rules allow now.
    pub fn crash_space(&self) -> CrashSpace {
        let s = self.lock();
        let mut ops = vec![vec![Fate::Lost, Fate::Kept]; s.pending_dir.len()];
        for inode in s.inodes.values() {
            for op in &inode.pending {
                ops.push(match op {
                    DataOp::SetLen(_) => vec![Fate::Lost, Fate::Kept],
                    DataOp::Write { offset, bytes } => {
                        let mut fates = vec![Fate::Lost, Fate::Kept];
                        let end = offset + bytes.len() as u64;
                        let mut boundary = (offset / s.sector + 1) * s.sector;
                        while boundary < end {
                            fates.push(Fate::Torn(boundary - offset));
                            boundary += s.sector;
                        }
                        fates
                    }
                });
            }
        }
        CrashSpace {
            dir_ops: s.pending_dir.len(),
            ops,
        }
    }

    /// A crash whose plan the filesystem's seed draws.
    pub fn crash_random(&self) -> CrashPlan {
        let space = self.crash_space();
        let plan = {
            let mut s = self.lock();
            let fates = space
                .ops
                .iter()
                .map(|options| options[(s.rng.next_u64() % options.len() as u64) as usize])
                .collect();
            CrashPlan { fates }
        };
        self.crash(&plan);
        plan
    }

    /// Power failure and reboot: applies `plan` to the unsynced operations, drops every lock
    /// and makes every open handle stale. The power is back on afterwards.
    pub fn crash(&self, plan: &CrashPlan) {
        let mut s = self.lock();
        let mut fates = plan.fates.iter();
        let mut names = s.durable_names.clone();
        for op in &s.pending_dir {
            match fates
                .next()
                .expect("the plan has a fate for every operation")
            {
                Fate::Lost => {}
                Fate::Kept => apply_dir_op(&mut names, op),
                Fate::Torn(_) => panic!("a directory operation cannot tear"),
            }
        }
        for inode in s.inodes.values_mut() {
            let mut disk = std::mem::take(&mut inode.durable);
            for op in &inode.pending {
                let fate = *fates
                    .next()
                    .expect("the plan has a fate for every operation");
                match (op, fate) {
                    (_, Fate::Lost) => {}
                    (op, Fate::Kept) => apply_data_op(&mut disk, op),
                    (DataOp::Write { offset, bytes }, Fate::Torn(n)) => {
                        assert!(n < bytes.len() as u64, "a torn write keeps less than all");
                        write_into(&mut disk, *offset, &bytes[..n as usize]);
                    }
                    (DataOp::SetLen(_), Fate::Torn(_)) => panic!("a length change cannot tear"),
                }
            }
            inode.current = disk.clone();
            inode.durable = disk;
            inode.pending.clear();
        }
        assert!(fates.next().is_none(), "the plan has fates left over");
        // Files no name reaches are gone (no process survives to hold them open).
        let reachable: BTreeSet<u64> = names.values().copied().collect();
        s.inodes.retain(|ino, _| reachable.contains(ino));
        s.damaged.retain(|(ino, _), _| reachable.contains(ino));
        s.durable_names = names.clone();
        s.names = names;
        s.pending_dir.clear();
        s.locks.clear();
        s.boot += 1;
        s.power_cut_at = None;
    }

    /// Damages the byte `from_end` bytes before the end of `path` (bit rot on the medium: the
    /// durable copy and any unsynced one alike). Returns whether that byte was durable, or `None`
    /// if the file is missing or shorter. Damage already there is left as it is.
    pub fn damage(&self, path: &Path, from_end: u64) -> Option<bool> {
        let mut s = self.lock();
        let ino = *s.names.get(path)?;
        let inode = &s.inodes[&ino];
        let offset = (inode.current.len() as u64).checked_sub(from_end + 1)?;
        let durable = (offset as usize) < inode.durable.len()
            && !inode.pending.iter().any(|op| match op {
                DataOp::Write { offset: at, bytes } => {
                    (*at..at + bytes.len() as u64).contains(&offset)
                }
                DataOp::SetLen(len) => *len <= offset,
            });
        let current = inode.current[offset as usize];
        if s.damaged.get(&(ino, offset)) == Some(&current) {
            return Some(durable);
        }
        let rot = |byte: &mut u8| *byte ^= 0xa5;
        let inode = s.inodes.get_mut(&ino).expect("named inode exists");
        rot(&mut inode.current[offset as usize]);
        if let Some(byte) = inode.durable.get_mut(offset as usize) {
            rot(byte);
        }
        for op in &mut inode.pending {
            if let DataOp::Write { offset: at, bytes } = op {
                if (*at..*at + bytes.len() as u64).contains(&offset) {
                    rot(&mut bytes[(offset - *at) as usize]);
                }
            }
        }
        let left = inode.current[offset as usize];
        s.damaged.insert((ino, offset), left);
        Some(durable)
    }

    /// The names in `dir` as the running system sees them.
    pub fn list(&self, dir: &Path) -> Vec<String> {
        let s = self.lock();
        names_in(&s.names, dir)
    }

    /// A file's contents as reads see them, if it exists.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        let ino = s.names.get(path)?;
        Some(s.inodes[ino].current.clone())
    }

    /// Whether every file's contents and every name are durable (nothing a crash could lose).
    pub fn is_all_synced(&self) -> bool {
        let s = self.lock();
        s.pending_dir.is_empty() && s.inodes.values().all(|i| i.pending.is_empty())
    }

    /// Runs one counted operation: fails if the power is out, else counts it and runs `f`.
    fn op<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.lock();
        if s.power_cut_at.is_some_and(|at| s.ops >= at) {
            return Err(io::Error::other("the simulated machine lost power"));
        }
        s.ops += 1;
        f(&mut s)
    }

    /// Runs a read: fails if the power is out, changes nothing.
    fn look<T>(&self, f: impl FnOnce(&State) -> io::Result<T>) -> io::Result<T> {
        let s = self.lock();
        if s.power_cut_at.is_some_and(|at| s.ops >= at) {
            return Err(io::Error::other("the simulated machine lost power"));
        }
        f(&s)
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn names_in(names: &BTreeMap<PathBuf, u64>, dir: &Path) -> Vec<String> {
    names
        .keys()
        .filter(|p| p.parent() == Some(dir))
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect()
}

fn apply_dir_op(names: &mut BTreeMap<PathBuf, u64>, op: &DirOp) {
    for (name, target) in &op.changes {
        match target {
            Some(ino) => names.insert(name.clone(), *ino),
            None => names.remove(name),
        };
    }
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset as usize..end].copy_from_slice(bytes);
}

fn apply_data_op(data: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write { offset, bytes } => write_into(data, *offset, bytes),
        DataOp::SetLen(len) => data.resize(*len as usize, 0),
    }
}

impl State {
    fn record_dir_op(&mut self, dir: PathBuf, changes: Vec<(PathBuf, Option<u64>)>) {
        let op = DirOp { dir, changes };
        apply_dir_op(&mut self.names, &op);
        self.pending_dir.push(op);
    }

    fn change(&mut self, ino: u64, op: DataOp) {
        let inode = self.inodes.get_mut(&ino).expect("open inode exists");
        apply_data_op(&mut inode.current, &op);
        inode.pending.push(op);
    }

    fn sync(&mut self, ino: u64) {
        let inode = self.inodes.get_mut(&ino).expect("open inode exists");
        for op in std::mem::take(&mut inode.pending) {
            apply_data_op(&mut inode.durable, &op);
        }
        debug_assert!(
            inode.durable == inode.current,
            "a synced file reads as written"
        );
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Directories are durable at once, and creating one is not a crash point: the storage
        // never depends on creating one. It still fails without power.
        self.look(|_| Ok(()))?;
        self.lock().dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.look(|s| {
            let ino = *s.names.get(path).ok_or_else(|| not_found(path))?;
            Ok(Box::new(SimFile {
                fs: self.clone(),
                ino,
                boot: s.boot,
            }) as Box<dyn FsFile>)
        })
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.op(|s| {
            if !s.dirs.contains(&parent(path)) {
                return Err(not_found(&parent(path)));
            }
            let ino = match s.names.get(path) {
                Some(&ino) => {
                    s.change(ino, DataOp::SetLen(0));
                    ino
                }
                None => {
                    let ino = s.next_inode;
                    s.next_inode += 1;
                    s.inodes.insert(ino, Inode::default());
                    s.record_dir_op(parent(path), vec![(path.to_path_buf(), Some(ino))]);
                    ino
                }
            };
            Ok(Box::new(SimFile {
                fs: self.clone(),
                ino,
                boot: s.boot,
            }) as Box<dyn FsFile>)
        })
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.look(|s| {
            let ino = s.names.get(path).ok_or_else(|| not_found(path))?;
            Ok(s.inodes[ino].current.clone())
        })
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.look(|s| Ok(s.names.contains_key(path) || s.dirs.contains(path)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.op(|s| {
            let ino = *s.names.get(from).ok_or_else(|| not_found(from))?;
            let dir = parent(from);
            if parent(to) != dir {
                return Err(io::Error::other(
                    "renames across directories are not simulated",
                ));
            }
            s.record_dir_op(
                dir,
                vec![(to.to_path_buf(), Some(ino)), (from.to_path_buf(), None)],
            );
            Ok(())
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.op(|s| {
            if !s.names.contains_key(path) {
                return Err(not_found(path));
            }
            s.record_dir_op(parent(path), vec![(path.to_path_buf(), None)]);
            Ok(())
        })
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.look(|s| {
            if !s.dirs.contains(dir) {
                return Err(not_found(dir));
            }
            Ok(names_in(&s.names, dir))
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.op(|s| {
            let (synced, kept): (Vec<DirOp>, Vec<DirOp>) = std::mem::take(&mut s.pending_dir)
                .into_iter()
                .partition(|op| op.dir == dir);
            for op in &synced {
                apply_dir_op(&mut s.durable_names, op);
            }
            s.pending_dir = kept;
            Ok(())
        })
    }

    fn lock_dir(&self, dir: &Path, holder: &str) -> Result<DirLock, LockError> {
        let mut s = self.lock();
        if let Some(held_by) = s.locks.get(dir) {
            return Err(LockError::Held {
                dir: dir.display().to_string(),
                holder: held_by.clone(),
            });
        }
        s.locks.insert(dir.to_path_buf(), holder.to_string());
        Ok(DirLock::new(
            dir,
            SimLock {
                state: Arc::downgrade(&self.state),
                dir: dir.to_path_buf(),
                boot: s.boot,
            },
        ))
    }
}

/// Releases a simulated directory lock when dropped, unless a crash already did.
struct SimLock {
    state: Weak<Mutex<State>>,
    dir: PathBuf,
    boot: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        if let Some(state) = self.state.upgrade() {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            if s.boot == self.boot {
                s.locks.remove(&self.dir);
            }
        }
    }
}

/// An open file of a [`SimFs`].
struct SimFile {
    fs: SimFs,
    ino: u64,
    /// The boot it was opened in: after a crash it is stale.
    boot: u64,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimFile(inode {})", self.ino)
    }
}

impl SimFile {
    fn check(&self, s: &State) -> io::Result<()> {
        if s.boot != self.boot {
            return Err(io::Error::other(
                "stale handle: the file was opened before the machine crashed",
            ));
        }
        Ok(())
    }
}

impl FsFile for SimFile {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.fs.op(|s| {
            self.check(s)?;
            s.change(
                self.ino,
                DataOp::Write {
                    offset,
                    bytes: bytes.to_vec(),
                },
            );
            Ok(())
        })
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.fs.look(|s| {
            self.check(s)?;
            let data = &s.inodes[&self.ino].current;
            let end = offset as usize + buf.len();
            if end > data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read of {end} bytes from a {}-byte file", data.len()),
                ));
            }
            buf.copy_from_slice(&data[offset as usize..end]);
            Ok(())
        })
    }

    fn size(&self) -> io::Result<u64> {
        self.fs.look(|s| {
            self.check(s)?;
            Ok(s.inodes[&self.ino].current.len() as u64)
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fs.op(|s| {
            self.check(s)?;
            s.change(self.ino, DataOp::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fs.op(|s| {
            self.check(s)?;
            s.sync(self.ino);
            Ok(())
        })
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    /// A write then its sync, as on a real disk (a crash between them may tear it); only the
    /// contract is checked: nothing else unsynced in the file, which the write alone would not
    /// make durable on the operating system's filesystem.
    fn write_tail_durable(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.fs.look(|s| {
            let unsynced = s.inodes.get(&self.ino).map_or(0, |i| i.pending.len());
            assert_eq!(
                unsynced, 0,
                "a durable tail write with {unsynced} unsynced changes before it"
            );
            Ok(())
        })?;
        self.write_at(offset, bytes)?;
        self.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_with_dir() -> (SimFs, PathBuf) {
        let fs = SimFs::with_sector(4, 7);
        let dir = PathBuf::from("/d");
        fs.create_dir_all(&dir).unwrap();
        (fs, dir)
    }

    #[test]
    fn a_synced_file_survives_every_crash_and_an_unsynced_write_meets_each_fate() {
        let (fs, dir) = fs_with_dir();
        let path = dir.join("f");
        let f = fs.create(&path).unwrap();
        f.write_at(0, b"abcd").unwrap();
        f.sync_all().unwrap();
        fs.sync_dir(&dir).unwrap();
        f.write_at(4, b"efghij").unwrap();
        let space = fs.crash_space();
        assert_eq!(space.dir_ops, 0);
        // Lost, kept, or torn at the sector boundary at byte 8 (4 bytes in).
        assert_eq!(space.ops, vec![vec![Fate::Lost, Fate::Kept, Fate::Torn(4)]]);
        let mut seen = BTreeSet::new();
        for i in 0..space.plans() {
            let fork = fs.fork();
            fork.crash(&space.plan(i));
            seen.insert(fork.contents(&path).unwrap());
        }
        let expected: BTreeSet<Vec<u8>> = [&b"abcd"[..], b"abcdefghij", b"abcdefgh"]
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_rename_is_undone_whole_unless_its_directory_was_synced() {
        let (fs, dir) = fs_with_dir();
        let (tmp, name) = (dir.join("x.tmp"), dir.join("x"));
        let f = fs.create(&tmp).unwrap();
        f.write_at(0, b"new").unwrap();
        f.sync_all().unwrap();
        fs.rename(&tmp, &name).unwrap();
        let space = fs.crash_space();
        assert_eq!(space.dir_ops, 2, "the create and the rename");
        let outcomes: Vec<Vec<String>> = (0..space.plans())
            .map(|i| {
                let fork = fs.fork();
                fork.crash(&space.plan(i));
                fork.list(&dir)
            })
            .collect();
        // The create and the rename each survive or not, independently.
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            outcomes,
            vec![names(&[]), names(&["x.tmp"]), names(&["x"]), names(&["x"])]
        );
        fs.sync_dir(&dir).unwrap();
        assert_eq!(fs.crash_space().plans(), 1, "nothing left to lose");
        fs.crash_random();
        assert_eq!(fs.contents(&name).unwrap(), b"new");
    }

    #[test]
    fn after_a_power_cut_nothing_changes_and_old_handles_are_stale() {
        let (fs, dir) = fs_with_dir();
        let f = fs.create(&dir.join("f")).unwrap();
        fs.cut_power_after(1);
        f.write_at(0, b"ok").unwrap();
        assert!(f.write_at(2, b"no").is_err());
        assert!(fs.is_powered_off());
        assert_eq!(fs.contents(&dir.join("f")).unwrap(), b"ok");
        fs.crash(&fs.crash_space().plan(0));
        assert!(!fs.is_powered_off());
        assert!(
            f.write_at(0, b"x").is_err(),
            "a handle from before the crash is stale"
        );
        assert!(fs.list(&dir).is_empty(), "the unsynced create was undone");
    }

    #[test]
    fn a_lock_is_exclusive_and_released_by_drop_or_crash() {
        let (fs, dir) = fs_with_dir();
        let held = fs.lock_dir(&dir, "site A").unwrap();
        let err = fs.lock_dir(&dir, "site B").unwrap_err();
        assert!(err.to_string().contains("site A"), "{err}");
        drop(held);
        let _again = fs.lock_dir(&dir, "site B").unwrap();
        fs.crash_random();
        fs.lock_dir(&dir, "site C")
            .expect("a crash releases every lock");
    }

    #[test]
    fn damage_is_sticky_and_knows_whether_it_hit_synced_bytes() {
        let (fs, dir) = fs_with_dir();
        let path = dir.join("f");
        let f = fs.create(&path).unwrap();
        f.write_at(0, b"ab").unwrap();
        f.sync_data().unwrap();
        f.write_at(2, b"c").unwrap();
        assert_eq!(fs.damage(&path, 0), Some(false), "byte 2 is unsynced");
        assert_eq!(fs.damage(&path, 1), Some(true), "byte 1 is synced");
        let once = fs.contents(&path).unwrap();
        fs.damage(&path, 1);
        assert_eq!(fs.contents(&path).unwrap(), once, "damage does not heal");
        fs.crash(&CrashPlan {
            fates: vec![Fate::Kept, Fate::Lost],
        });
        assert_ne!(
            fs.contents(&path).unwrap()[1],
            b'b',
            "damage to synced bytes stays"
        );
    }
}
