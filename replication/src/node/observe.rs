//! What the simulator watches a node do, beside the events it reports: every message the
//! node delivers to its site.

use crate::types::SiteAddr;
use std::sync::Arc;

/// Something that wants every message a node hands its site, in order: the simulator folds
/// them into its trace's hash, so that two runs of one seed are compared message by message.
/// Called on the node's task as each message is delivered; it must be quick.
pub trait DeliveryObserver: Send + Sync + 'static {
    /// `site` is handing its core a `kind` message from `from`.
    fn delivered(&self, site: &SiteAddr, from: &SiteAddr, kind: &'static str);
}

/// A node's optional [`DeliveryObserver`]: compared by identity, and never part of a
/// configuration file (it is set by code, for simulation). A direct call: a `tracing` event
/// per delivery, which the simulator used to fold instead, cost several per cent of a
/// simulated run in the dispatch alone.
#[derive(Clone, Default)]
pub struct DeliveryHook(pub Option<Arc<dyn DeliveryObserver>>);

impl std::fmt::Debug for DeliveryHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = if self.0.is_some() { "set" } else { "none" };
        write!(f, "DeliveryHook({set})")
    }
}

impl PartialEq for DeliveryHook {
    fn eq(&self, other: &Self) -> bool {
        super::same_shared(&self.0, &other.0)
    }
}

impl Eq for DeliveryHook {}

#[cfg(test)]
mod tests {
    use super::*;

    struct Count;
    impl DeliveryObserver for Count {
        fn delivered(&self, _: &SiteAddr, _: &SiteAddr, _: &'static str) {}
    }

    #[test]
    fn hooks_are_the_same_only_if_they_share_their_observer() {
        let observer: Arc<dyn DeliveryObserver> = Arc::new(Count);
        let a = DeliveryHook(Some(observer.clone()));
        assert_eq!(a, DeliveryHook(Some(observer)));
        assert_ne!(a, DeliveryHook(Some(Arc::new(Count))));
        assert_ne!(a, DeliveryHook::default());
        assert_eq!(DeliveryHook::default(), DeliveryHook(None));
        assert_eq!(format!("{a:?}"), "DeliveryHook(set)");
    }
}
