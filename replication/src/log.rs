//! The replicated log and the key-value database that is its replay.
//!
//! Every record carries its LSN, the generation it was written in and a CRC32 over both and its
//! body, so a record damaged on disk or on the wire is detected and never applied or served.
//! Nothing here does I/O.

use crate::codec;
use crate::types::{Gen, LogPos, Lsn, SiteAddr};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One write in a transaction.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum Op {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Removes `key` (a no-op if absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// A transaction: its operations are applied together or not at all.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Txn {
    /// The operations, in order. Shared, as a record never changes once written: a record
    /// copied into a log or a message costs a count, not a copy of its keys and values.
    pub ops: Arc<[Op]>,
}

impl Txn {
    /// A transaction of one put.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Txn {
        Txn {
            ops: Arc::from([Op::Put {
                key: key.into(),
                value: value.into(),
            }]),
        }
    }

    /// A transaction of one delete.
    pub fn delete(key: impl Into<Vec<u8>>) -> Txn {
        Txn {
            ops: Arc::from([Op::Delete { key: key.into() }]),
        }
    }
}

/// Where a site stands in the group membership database.
#[derive(Copy, Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum MemberState {
    /// The master recorded the join; it becomes `Present` once the group acknowledged that.
    /// Receives the log but does not count towards the group size yet.
    Adding,
    /// A full member: counts towards the group's total site count, down or up.
    Present,
    /// Its removal is being acknowledged; no longer counted.
    Removing,
}

/// An entry of the group membership database.
#[derive(Copy, Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Member {
    /// The site's state.
    pub state: MemberState,
    /// The priority the site declared when it joined (its live messages take precedence).
    pub priority: u32,
}

/// What a log record says.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum RecordBody {
    /// The first record a new master writes: it opens generation `gen` and marks where it starts.
    GenStart {
        /// The master that opened the generation.
        master: SiteAddr,
    },
    /// A committed transaction.
    Txn(Txn),
    /// The membership database created whole from a legacy static list (one record, so that no
    /// log or snapshot ever holds half of it).
    MembershipCreated {
        /// Every member.
        #[serde(deserialize_with = "crate::codec::canonical_map")]
        members: BTreeMap<SiteAddr, Member>,
    },
    /// A change to the group membership database: `site` gets `member`, or leaves (`None`).
    Membership {
        /// The site, by its exact address.
        site: SiteAddr,
        /// Its new entry, or `None` once removed.
        member: Option<Member>,
    },
}

/// A log record: position, generation, body and the checksum that covers all three.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct LogRecord {
    /// Position in the log, from 1.
    pub lsn: Lsn,
    /// Generation of the master that wrote it.
    pub gen: Gen,
    /// What it says.
    pub body: RecordBody,
    /// CRC32 of the encoding of (lsn, gen, body).
    pub checksum: u32,
}

impl LogRecord {
    /// A record with its checksum computed.
    pub fn new(lsn: Lsn, gen: Gen, body: RecordBody) -> LogRecord {
        let checksum = Self::compute_checksum(lsn, gen, &body);
        LogRecord {
            lsn,
            gen,
            body,
            checksum,
        }
    }

    fn compute_checksum(lsn: Lsn, gen: Gen, body: &RecordBody) -> u32 {
        let mut prefix = [0u8; 16];
        prefix[..8].copy_from_slice(&lsn.to_le_bytes());
        prefix[8..].copy_from_slice(&gen.to_le_bytes());
        codec::crc32_after(&prefix, body)
    }

    /// True if the checksum matches the contents.
    pub fn is_intact(&self) -> bool {
        self.checksum == Self::compute_checksum(self.lsn, self.gen, &self.body)
    }

    /// This record's position.
    pub fn pos(&self) -> LogPos {
        LogPos::new(self.gen, self.lsn)
    }

    /// True for records that carry a user transaction (what rollback reports count).
    pub fn is_txn(&self) -> bool {
        matches!(self.body, RecordBody::Txn(_))
    }

    /// True for membership records that may change who votes: a site made present, a removal
    /// begun, an entry dropped, a group created. (Only `Adding` never does: a joiner does not
    /// vote until it is present.)
    pub fn changes_voters(&self) -> bool {
        match &self.body {
            RecordBody::Membership {
                member: Some(m), ..
            } => m.state != MemberState::Adding,
            RecordBody::Membership { member: None, .. } | RecordBody::MembershipCreated { .. } => {
                true
            }
            _ => false,
        }
    }
}

/// The generations a log went through: for each, the LSN and checksum of its first record. Two
/// logs agree up to an LSN exactly when they have the same generation, opened by the same record,
/// at it (one master per generation writes each LSN once; the opening record names the master,
/// for the one case where two masters share a generation), so comparing histories finds where a
/// client's log diverged from its master's without shipping records.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct GenHistory {
    /// `(generation, first LSN, first record's checksum)` in increasing order of generation and
    /// LSN. The checksum tells apart two masters of one generation (a lenient two-site group
    /// whose link was cut elects each side; each opens the generation with its own `GenStart`):
    /// the same generation number alone would pass their different records for one history.
    starts: Vec<(Gen, Lsn, u32)>,
}

impl GenHistory {
    /// The empty history of an empty log.
    pub fn new() -> Self {
        GenHistory::default()
    }

    /// The `(generation, first LSN, first record's checksum)` triples, oldest first.
    pub fn starts(&self) -> &[(Gen, Lsn, u32)] {
        &self.starts
    }

    /// Notes that `record` was appended. Generations never go backwards in a log.
    pub fn note_append(&mut self, record: &LogRecord) {
        let pos = record.pos();
        match self.starts.last() {
            Some(&(gen, _, _)) if gen == pos.gen => {}
            Some(&(gen, first, _)) => {
                assert!(
                    pos.gen > gen && pos.lsn > first,
                    "log generations go backwards: {pos} after generation {gen} from {first}"
                );
                self.starts.push((pos.gen, pos.lsn, record.checksum));
            }
            None => self.starts.push((pos.gen, pos.lsn, record.checksum)),
        }
    }

    /// Forgets everything after `lsn` (the log was truncated there).
    pub fn truncate_after(&mut self, lsn: Lsn) {
        self.starts.retain(|&(_, first, _)| first <= lsn);
    }

    /// The generation of the record at `lsn` in a log whose last LSN is `last`, if it has one.
    pub fn gen_at(&self, lsn: Lsn, last: Lsn) -> Option<Gen> {
        self.segment_at(lsn, last).map(|(gen, _)| gen)
    }

    /// The generation of the record at `lsn`, with the checksum of that generation's first
    /// record: what identifies the history it belongs to.
    fn segment_at(&self, lsn: Lsn, last: Lsn) -> Option<(Gen, u32)> {
        if lsn == 0 || lsn > last {
            return None;
        }
        self.starts
            .iter()
            .rev()
            .find(|&&(_, first, _)| first <= lsn)
            .map(|&(gen, _, stamp)| (gen, stamp))
    }

    /// The highest LSN at which this log (ending at `last`) and `other` (ending at `other_last`)
    /// hold the same record; 0 if they share nothing.
    pub fn common_prefix(&self, last: Lsn, other: &GenHistory, other_last: Lsn) -> Lsn {
        let end = last.min(other_last);
        // Candidates are the ends of segments on either side: agreement holds on a whole segment
        // of equal generation, so the answer is the end of the last segment both agree on.
        let mut best = 0;
        let mut boundaries: Vec<Lsn> = self
            .starts
            .iter()
            .chain(other.starts.iter())
            .map(|&(_, first, _)| first)
            .filter(|&first| first <= end)
            .collect();
        boundaries.push(1);
        boundaries.push(end + 1);
        boundaries.sort_unstable();
        boundaries.dedup();
        for window in boundaries.windows(2) {
            let (from, to) = (window[0], window[1] - 1);
            match (
                self.segment_at(from, last),
                other.segment_at(from, other_last),
            ) {
                (Some(a), Some(b)) if a == b => best = to,
                _ => break,
            }
        }
        best
    }
}

/// The key-value database: exactly the replay of the log (and the snapshot it starts from).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Database {
    #[serde(deserialize_with = "crate::codec::canonical_map")]
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The group membership database, replicated through the log like the data.
    #[serde(deserialize_with = "crate::codec::canonical_map")]
    members: BTreeMap<SiteAddr, Member>,
    applied: LogPos,
}

impl Database {
    /// The empty database before any record.
    pub fn new() -> Self {
        Database::default()
    }

    /// The last record applied.
    pub fn applied(&self) -> LogPos {
        self.applied
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.data.get(key).map(Vec::as_slice)
    }

    /// The group membership database (empty until the group is created or joined).
    pub fn members(&self) -> &BTreeMap<SiteAddr, Member> {
        &self.members
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True if no key is set.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Every key and value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.data.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Applies the next record. Records must come in LSN order with none missing: anything else
    /// is a bug in the caller, so it panics rather than silently diverging.
    pub fn apply(&mut self, record: &LogRecord) {
        assert_eq!(
            record.lsn,
            self.applied.lsn + 1,
            "record applied out of order: {} after {}",
            record.lsn,
            self.applied
        );
        assert!(
            record.gen >= self.applied.gen,
            "record of generation {} applied after generation {}",
            record.gen,
            self.applied.gen
        );
        match &record.body {
            RecordBody::Txn(txn) => {
                for op in txn.ops.iter() {
                    match op {
                        // An existing key keeps its allocations: keys are rewritten far more
                        // often than new ones appear.
                        Op::Put { key, value } => match self.data.get_mut(key) {
                            Some(held) => held.clone_from(value),
                            None => {
                                self.data.insert(key.clone(), value.clone());
                            }
                        },
                        Op::Delete { key } => {
                            self.data.remove(key);
                        }
                    }
                }
            }
            RecordBody::Membership { site, member } => match member {
                Some(member) => {
                    self.members.insert(site.clone(), *member);
                }
                None => {
                    self.members.remove(site);
                }
            },
            RecordBody::MembershipCreated { members } => self.members = members.clone(),
            RecordBody::GenStart { .. } => {}
        }
        self.applied = record.pos();
    }

    /// A 64-bit digest of the contents and position (FNV-1a over the canonical encoding), for
    /// integrity checks that compare sites at the same LSN.
    pub fn digest(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in codec::encode(self) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }
}

/// A database image at a log position, with the generation history up to it: what log archiving
/// leaves behind and what internal initialisation copies to a client.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Snapshot {
    /// The database after applying every record up to `db.applied()`.
    pub db: Database,
    /// Generation history of the log up to `db.applied()`.
    pub history: GenHistory,
}

impl Snapshot {
    /// The position the snapshot was taken at.
    pub fn pos(&self) -> LogPos {
        self.db.applied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(lsn: Lsn, gen: Gen) -> LogRecord {
        LogRecord::new(lsn, gen, RecordBody::Txn(Txn::put(format!("k{lsn}"), "v")))
    }

    fn history(records: &[(Gen, Lsn)]) -> GenHistory {
        let mut h = GenHistory::new();
        for &(gen, lsn) in records {
            h.note_append(&rec(lsn, gen));
        }
        h
    }

    #[test]
    fn a_changed_byte_breaks_the_checksum() {
        let mut r = rec(1, 1);
        assert!(r.is_intact());
        r.lsn = 2;
        assert!(!r.is_intact());
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn applying_out_of_order_panics() {
        let mut db = Database::new();
        db.apply(&rec(2, 1));
    }

    #[test]
    fn database_is_the_replay_of_puts_and_deletes() {
        let mut db = Database::new();
        db.apply(&LogRecord::new(1, 1, RecordBody::Txn(Txn::put("a", "1"))));
        db.apply(&LogRecord::new(2, 1, RecordBody::Txn(Txn::put("b", "2"))));
        db.apply(&LogRecord::new(3, 1, RecordBody::Txn(Txn::delete("a"))));
        assert_eq!(db.get(b"a"), None);
        assert_eq!(db.get(b"b"), Some(&b"2"[..]));
        assert_eq!(db.applied(), LogPos::new(1, 3));
    }

    #[test]
    fn common_prefix_finds_the_divergence_point() {
        // Both wrote 1..=5 in gen 1; the client then got 6..=8 of gen 1 that the new master
        // (gen 2 from LSN 6) never saw.
        let client = history(&[(1, 1), (1, 8)]);
        let master = history(&[(1, 1), (2, 6), (2, 9)]);
        assert_eq!(client.common_prefix(8, &master, 9), 5);
        assert_eq!(master.common_prefix(9, &client, 8), 5);
        // A client that is simply behind agrees on everything it has.
        let behind = history(&[(1, 1)]);
        assert_eq!(behind.common_prefix(3, &master, 9), 3);
        // Same generations, longer log.
        assert_eq!(master.common_prefix(9, &master, 12), 9);
        // Nothing in common.
        let other = history(&[(3, 1)]);
        assert_eq!(other.common_prefix(4, &master, 9), 0);
        assert_eq!(GenHistory::new().common_prefix(0, &master, 9), 0);
    }

    #[test]
    fn two_masters_of_one_generation_share_nothing_past_their_first_records() {
        // A lenient pair cut apart: both sides elect themselves in generation 2 from LSN 4,
        // each opening it with its own `GenStart`.
        let start = |master: &str| {
            LogRecord::new(
                4,
                2,
                RecordBody::GenStart {
                    master: crate::types::SiteAddr::new(master),
                },
            )
        };
        let side = |master: &str| {
            let mut h = history(&[(1, 1)]);
            h.note_append(&start(master));
            h.note_append(&rec(5, 2));
            h
        };
        let (a, b) = (side("10.0.0.1:7000"), side("10.0.0.2:7000"));
        assert_eq!(
            a.common_prefix(5, &b, 5),
            3,
            "generation 1 is shared, 2 is not"
        );
        assert_eq!(a.common_prefix(5, &side("10.0.0.1:7000"), 5), 5);
    }
}
