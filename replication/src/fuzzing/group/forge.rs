//! Messages no site sent: built from a [`MsgSpec`] next to the receiver's state, or changed
//! copies of messages in flight. Histories and databases are built through the codec, exactly
//! as a peer could put them on the wire, well-formed or not.

use super::{addr, BodySpec, MsgSpec, Mutation, RecordSpec};
use crate::codec;
use crate::fuzzing::Num;
use crate::log::{Database, GenHistory, LogRecord, Member, MemberState, RecordBody, Snapshot, Txn};
use crate::types::{Gen, LogPos, Lsn, SiteAddr};
use crate::wire::{JoinResult, Message, RemoveRefusal};
use serde::Serialize;
use std::collections::BTreeMap;

/// Builds a message from its spec, next to the receiver's generation and log end.
pub fn build(spec: &MsgSpec, (gen, last): (Gen, LogPos)) -> Message {
    let g = |n: &Num| n.at(gen);
    let l = |n: &Num| n.at(last.lsn);
    let pos = |ng: &Num, nl: &Num| LogPos::new(g(ng), l(nl));
    match spec {
        MsgSpec::Heartbeat {
            gen: mg,
            last_gen,
            last_lsn,
            first_lsn,
        } => Message::Heartbeat {
            gen: g(mg),
            last: pos(last_gen, last_lsn),
            first_lsn: l(first_lsn),
        },
        MsgSpec::Log { gen: mg, records } => Message::Log {
            gen: g(mg),
            records: records
                .iter()
                .take(16)
                .map(|r| record(r, gen, last.lsn))
                .collect(),
        },
        MsgSpec::SyncRequest { gen: mg, priority } => Message::SyncRequest {
            gen: g(mg),
            priority: u32::from(*priority),
        },
        MsgSpec::SyncInfo {
            gen: mg,
            history,
            first_lsn,
            last_gen,
            last_lsn,
        } => Message::SyncInfo {
            gen: g(mg),
            history: raw_history(history, gen, last.lsn),
            first_lsn: l(first_lsn),
            last: pos(last_gen, last_lsn),
        },
        MsgSpec::LogRequest { gen: mg, from } => Message::LogRequest {
            gen: g(mg),
            from: l(from),
        },
        MsgSpec::InitSnapshot {
            gen: mg,
            at_gen,
            at_lsn,
            history,
            keys,
            members,
        } => Message::InitSnapshot {
            gen: g(mg),
            snapshot: raw_snapshot(
                pos(at_gen, at_lsn),
                raw_history(history, gen, last.lsn),
                *keys,
                *members,
            ),
        },
        MsgSpec::Ack {
            gen: mg,
            lsn,
            priority,
        } => Message::Ack {
            gen: g(mg),
            lsn: l(lsn),
            priority: u32::from(*priority),
        },
        MsgSpec::VoteRequest {
            egen,
            last_gen,
            last_lsn,
            priority,
            takeover,
            pre,
        } => Message::VoteRequest {
            egen: g(egen),
            last: pos(last_gen, last_lsn),
            priority: u32::from(*priority),
            takeover: *takeover,
            pre: *pre,
        },
        MsgSpec::Vote {
            egen,
            granted,
            gen: mg,
            last_gen,
            last_lsn,
            priority,
            master,
            pre,
            term,
        } => Message::Vote {
            egen: g(egen),
            granted: *granted,
            gen: g(mg),
            last: pos(last_gen, last_lsn),
            priority: u32::from(*priority),
            master: master.map(addr),
            pre: *pre,
            term: g(term),
        },
        MsgSpec::TakeOver { gen: mg } => Message::TakeOver { gen: g(mg) },
        MsgSpec::StaleGeneration { gen: mg } => Message::StaleGeneration { gen: g(mg) },
        MsgSpec::JoinRequest { site, priority } => Message::JoinRequest {
            site: addr(*site),
            priority: u32::from(*priority),
        },
        MsgSpec::JoinReply {
            site,
            accepted,
            master,
            gen: mg,
        } => Message::JoinReply {
            site: addr(*site),
            result: if *accepted {
                JoinResult::Accepted {
                    master: addr(*master),
                    gen: g(mg),
                    last: last.lsn,
                }
            } else {
                JoinResult::Unavail {
                    reason: "forged".into(),
                }
            },
        },
        MsgSpec::RemoveRequest { site } => Message::RemoveRequest { site: addr(*site) },
        MsgSpec::RemoveReply { site, error } => Message::RemoveReply {
            site: addr(*site),
            error: error.map(|e| match e % 3 {
                0 => RemoveRefusal::NotMaster {
                    master: Some(addr(e)),
                },
                1 => RemoveRefusal::CannotRemoveMaster { master: addr(e) },
                _ => RemoveRefusal::Unavail {
                    reason: "forged".into(),
                },
            }),
        },
        MsgSpec::Removed { gen: mg, last } => Message::Removed {
            gen: g(mg),
            last: l(last),
        },
        MsgSpec::DriverNoise(n) => match n % 3 {
            0 => Message::KeepAlive,
            1 => Message::Proof { mac: [*n; 32] },
            _ => Message::Hello {
                min_version: 1,
                max_version: 2,
                group: "g".into(),
                site: addr(*n),
                nonce: [*n; 16],
            },
        },
    }
}

fn record(spec: &RecordSpec, gen: Gen, last: Lsn) -> LogRecord {
    let body = match spec.body {
        BodySpec::GenStart(s) => RecordBody::GenStart { master: addr(s) },
        BodySpec::Put(k, v) => RecordBody::Txn(Txn::put([k], [v])),
        BodySpec::Delete(k) => RecordBody::Txn(Txn::delete([k])),
        BodySpec::Member(s, state, priority) => RecordBody::Membership {
            site: addr(s),
            member: member(state, priority),
        },
        BodySpec::Created(bits) => RecordBody::MembershipCreated {
            members: members(bits),
        },
    };
    let mut r = LogRecord::new(spec.lsn.at(last), spec.gen.at(gen), body);
    if !spec.intact {
        r.checksum ^= 1;
    }
    r
}

fn member(state: u8, priority: u8) -> Option<Member> {
    let state = match state % 4 {
        0 => MemberState::Adding,
        1 => MemberState::Present,
        2 => MemberState::Removing,
        _ => return None,
    };
    Some(Member {
        state,
        priority: u32::from(priority % 3),
    })
}

fn members(bits: u8) -> BTreeMap<SiteAddr, Member> {
    (0..5u8)
        .filter(|b| bits & (1 << b) != 0)
        .map(|b| (addr(b), member(1, 1).expect("present")))
        .collect()
}

/// A history exactly as listed, well-formed or not: what a peer can put on the wire. Built
/// through the codec because [`GenHistory`] only grows through appends that keep it well-formed.
/// Each generation's first-record checksum is made up (no real record backs a forged history),
/// so a forged history never agrees with a real log past its first generation boundary.
fn raw_history(pairs: &[(Num, Num)], gen: Gen, last: Lsn) -> GenHistory {
    let starts: Vec<(Gen, Lsn, u32)> = pairs
        .iter()
        .take(8)
        .map(|(g, l)| (g.at(gen), l.at(last), 0))
        .collect();
    codec::decode(&codec::encode(&starts), 1 << 16).expect("a history is its list of starts")
}

/// The wire layout of [`Database`], to build any database a peer could send.
#[derive(Serialize)]
struct RawDatabase {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    members: BTreeMap<SiteAddr, Member>,
    applied: LogPos,
}

fn raw_snapshot(at: LogPos, history: GenHistory, keys: u8, bits: u8) -> Snapshot {
    let raw = RawDatabase {
        data: (0..keys % 8).map(|k| (vec![k], vec![k])).collect(),
        members: members(bits),
        applied: at,
    };
    let db: Database = codec::decode(&codec::encode(&raw), 1 << 16)
        .expect("RawDatabase has the layout of Database");
    Snapshot { db, history }
}

/// Applies a change to a copy of a message in flight (and the sender it claims).
pub(super) fn mutate(
    from: &mut SiteAddr,
    msg: &mut Message,
    change: &Mutation,
    (gen, last): (Gen, LogPos),
) {
    match change {
        Mutation::Gen(n) => {
            let v = n.at(gen);
            match msg {
                Message::Heartbeat { gen, .. }
                | Message::Log { gen, .. }
                | Message::SyncRequest { gen, .. }
                | Message::SyncInfo { gen, .. }
                | Message::LogRequest { gen, .. }
                | Message::InitSnapshot { gen, .. }
                | Message::Ack { gen, .. }
                | Message::TakeOver { gen }
                | Message::StaleGeneration { gen }
                | Message::Removed { gen, .. } => *gen = v,
                Message::VoteRequest { egen, .. } => *egen = v,
                Message::Vote { egen, term, .. } => {
                    *egen = v;
                    *term = v;
                }
                _ => {}
            }
        }
        Mutation::Lsn(n) => {
            let v = n.at(last.lsn);
            match msg {
                Message::Heartbeat { last, .. }
                | Message::SyncInfo { last, .. }
                | Message::VoteRequest { last, .. }
                | Message::Vote { last, .. } => last.lsn = v,
                Message::LogRequest { from, .. } => *from = v,
                Message::Ack { lsn, .. } => *lsn = v,
                Message::Log { records, .. } => edit_records(records, |records| {
                    if let Some(r) = records.first_mut() {
                        *r = LogRecord::new(v, r.gen, r.body.clone());
                    }
                }),
                _ => {}
            }
        }
        Mutation::CorruptRecord(k) => {
            if let Message::Log { records, .. } = msg {
                edit_records(records, |records| {
                    let len = records.len();
                    if len > 0 {
                        records[usize::from(*k) % len].checksum ^= 0x0100;
                    }
                });
            }
        }
        Mutation::DropRecord(k) => {
            if let Message::Log { records, .. } = msg {
                edit_records(records, |records| {
                    let len = records.len();
                    if len > 0 {
                        records.remove(usize::from(*k) % len);
                    }
                });
            }
        }
        Mutation::Reverse => {
            if let Message::Log { records, .. } = msg {
                edit_records(records, |records| records.reverse());
            }
        }
        Mutation::Sender(n) => *from = addr(*n),
    }
}

/// Changes a `Log` message's records (shared, so edited as a copy).
fn edit_records(records: &mut std::sync::Arc<[LogRecord]>, edit: impl FnOnce(&mut Vec<LogRecord>)) {
    let mut copy = records.to_vec();
    edit(&mut copy);
    *records = copy.into();
}
