//! Message duplication, reordering and loss at the frame layer, for simulation.
//!
//! TCP (madsim's simulated TCP too) delivers each byte once and in order, so a node never sees
//! a message twice or after a later one on the same connection. A replication protocol must
//! still survive both: a master resends records a client asked for again, a message sent on a
//! connection that broke can be followed by its resend on the next, and a vote can arrive after
//! the election that asked for it has moved on. Nor does TCP lose a message on a connection that
//! stays up, but a sender does: a node's outbox refuses a message when the connection's queue is
//! full (a slow reader), as Berkeley DB's replication manager drops one when a connection's queue
//! is over its limit; the client then sees a gap in the log and asks for it.
//!
//! [`LinkChaos`] lets the simulator make these happen on purpose: each connection's writer,
//! after the handshake, duplicates a frame, swaps it with the next one already queued, or drops
//! it, with the chances set here (a swap never waits for a next frame: delay is the network's to
//! model). A real deployment never sets it, and then the writer sends each frame once, in order.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Chances, in per mille, that a connection's writer duplicates a frame, swaps it with the
/// next one queued, or drops it; shared by every connection of the nodes it is given to, and
/// changeable while they run. Counts what it did, so a run can say whether it happened.
#[derive(Debug, Default)]
pub struct LinkChaos {
    duplicate_per_mille: AtomicU32,
    reorder_per_mille: AtomicU32,
    drop_per_mille: AtomicU32,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    dropped: AtomicU64,
}

/// The chances of each kind of frame chaos, in per mille (0: off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chances {
    /// A frame is sent twice.
    pub duplicate: u32,
    /// A frame is sent after the next one queued.
    pub reorder: u32,
    /// A frame is not sent, the connection staying up.
    pub drop: u32,
}

/// What the writer does with one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct FramePlan {
    /// Send it twice.
    pub duplicate: bool,
    /// Send it after the next frame queued, if there is one.
    pub hold: bool,
    /// Do not send it (nor its duplicate).
    pub drop: bool,
}

impl LinkChaos {
    /// Sets every chance (per mille, at most 1,000; 0 turns one off).
    pub fn set(&self, chances: Chances) {
        let store =
            |to: &AtomicU32, per_mille: u32| to.store(per_mille.min(1_000), Ordering::Relaxed);
        store(&self.duplicate_per_mille, chances.duplicate);
        store(&self.reorder_per_mille, chances.reorder);
        store(&self.drop_per_mille, chances.drop);
    }

    /// The chances set.
    pub fn chances(&self) -> Chances {
        Chances {
            duplicate: self.duplicate_per_mille.load(Ordering::Relaxed),
            reorder: self.reorder_per_mille.load(Ordering::Relaxed),
            drop: self.drop_per_mille.load(Ordering::Relaxed),
        }
    }

    /// Frames sent twice so far.
    pub fn duplicated(&self) -> u64 {
        self.duplicated.load(Ordering::Relaxed)
    }

    /// Frames sent after a later one so far.
    pub fn reordered(&self) -> u64 {
        self.reordered.load(Ordering::Relaxed)
    }

    /// Frames dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Draws what to do with the next frame from `draw` (a fresh number from the connection's
    /// seeded stream for each chance that is on, so a run with chaos off draws nothing).
    pub(super) fn plan(&self, mut draw: impl FnMut() -> u64) -> FramePlan {
        let mut chance = |per_mille: &AtomicU32| {
            let p = u64::from(per_mille.load(Ordering::Relaxed));
            p > 0 && draw() % 1_000 < p
        };
        let duplicate = chance(&self.duplicate_per_mille);
        let hold = chance(&self.reorder_per_mille);
        let drop = chance(&self.drop_per_mille);
        if drop {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else if duplicate {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
        }
        FramePlan {
            duplicate: duplicate && !drop,
            hold,
            drop,
        }
    }

    /// Counts a frame sent after the one queued behind it.
    pub(super) fn count_reordered(&self) {
        self.reordered.fetch_add(1, Ordering::Relaxed);
    }
}

/// A node's optional [`LinkChaos`]: compared by identity, and never part of a configuration
/// file (it is set by code, for simulation).
#[derive(Clone, Debug, Default)]
pub struct ChaosHandle(pub Option<Arc<LinkChaos>>);

impl PartialEq for ChaosHandle {
    fn eq(&self, other: &Self) -> bool {
        super::same_shared(&self.0, &other.0)
    }
}

impl Eq for ChaosHandle {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaos_off_draws_nothing_and_changes_nothing() {
        let chaos = LinkChaos::default();
        let plan = chaos.plan(|| panic!("no draw with chaos off"));
        assert_eq!(plan, FramePlan::default());
    }

    #[test]
    fn chances_are_per_mille_and_counted() {
        let chaos = LinkChaos::default();
        let set = |duplicate, reorder, drop| {
            chaos.set(Chances {
                duplicate,
                reorder,
                drop,
            })
        };
        set(1_000, 0, 0);
        assert!(chaos.plan(|| 999).duplicate);
        set(0, 500, 0);
        assert!(chaos.plan(|| 499).hold);
        assert!(!chaos.plan(|| 500).hold);
        assert_eq!(chaos.duplicated(), 1);
        chaos.count_reordered();
        assert_eq!(chaos.reordered(), 1);
        set(0, 0, 300);
        assert!(chaos.plan(|| 299).drop);
        assert!(!chaos.plan(|| 300).drop);
        assert_eq!(chaos.dropped(), 1);
        set(1_000, 0, 1_000);
        let plan = chaos.plan(|| 0);
        assert!(
            plan.drop && !plan.duplicate,
            "a dropped frame is not sent twice"
        );
        assert_eq!((chaos.dropped(), chaos.duplicated()), (2, 1));
    }
}
