//! Polling only what woke the node.
//!
//! The node's loop has many sources: its handles' commands, its connections' lifecycle events,
//! every connection's incoming bytes, its alarm. Polling each of them on every turn of the loop
//! costs more than the messages themselves once there are a few connections (a channel's
//! receiver registers its waker anew on each poll; a simulated socket's stream does more). A
//! [`Gate`] gives one source a waker of its own, which marks the source ready and then wakes the
//! node; the node polls a source only when its gate is open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// The node task's waker, which every gate's waker passes the wake on to.
#[derive(Clone, Default)]
pub(super) struct NodeWaker(Arc<Mutex<Option<Waker>>>);

impl NodeWaker {
    /// Records the node task's waker (once per turn of its loop, before polling any gate).
    pub(super) fn register(&self, cx: &Context<'_>) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
    }

    fn wake(&self) {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(waker) = slot.as_ref() {
            waker.wake_by_ref();
        }
    }
}

struct Flag {
    open: AtomicBool,
    node: NodeWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.open.store(true, Ordering::Release);
        self.node.wake();
    }
}

/// One source's gate: open when the source woke since it was last polled to `Pending`.
pub(super) struct Gate {
    flag: Arc<Flag>,
    waker: Waker,
}

impl Gate {
    /// A gate that wakes `node`; open at first, so the source is polled (and registers this
    /// gate's waker) once.
    pub(super) fn new(node: &NodeWaker) -> Gate {
        let flag = Arc::new(Flag {
            open: AtomicBool::new(true),
            node: node.clone(),
        });
        Gate {
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// Polls the source through `poll` with the gate's waker if the gate is open; a source that
    /// answers keeps its gate open, since it may have more.
    pub(super) fn poll<T>(&self, poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        // A load, not a swap, for the common case of a closed gate (a locked instruction per
        // source per turn showed in profiles). A wake between the load and the store is not
        // lost: the source is polled after the store, and sees what the wake announced.
        if !self.flag.open.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        self.flag.open.store(false, Ordering::Release);
        let answer = poll(&mut Context::from_waker(&self.waker));
        if answer.is_ready() {
            self.flag.open.store(true, Ordering::Release);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_polled_again_only_after_it_wakes_or_answers() {
        use std::cell::{Cell, RefCell};
        let node = NodeWaker::default();
        node.register(&Context::from_waker(Waker::noop()));
        let gate = Gate::new(&node);
        let polls = Cell::new(0);
        let kept: RefCell<Option<Waker>> = RefCell::new(None);
        let pending = |cx: &mut Context<'_>| {
            polls.set(polls.get() + 1);
            *kept.borrow_mut() = Some(cx.waker().clone());
            Poll::<()>::Pending
        };
        assert!(gate.poll(pending).is_pending());
        assert!(gate.poll(pending).is_pending());
        assert_eq!(polls.get(), 1, "closed until woken");
        kept.borrow_mut().take().unwrap().wake();
        assert!(gate.poll(pending).is_pending());
        assert_eq!(polls.get(), 2, "woken, polled once more");
        let answered = Cell::new(false);
        let answer = |_: &mut Context<'_>| {
            answered.set(true);
            Poll::Ready(())
        };
        assert!(gate.poll(answer).is_pending());
        assert!(!answered.get(), "still closed: nothing woke it");
        kept.borrow_mut().take().unwrap().wake();
        assert!(gate.poll(answer).is_ready());
        assert!(gate.poll(answer).is_ready(), "an answer keeps it open");
    }
}
