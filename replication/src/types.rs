//! Small value types shared by every part of the engine: site addresses, log positions, time.
//!
//! These carry no behaviour beyond ordering and display; they must never read a clock or
//! touch I/O.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A site's identity: the exact `host:port` string it was configured with.
///
/// Berkeley DB compares these byte for byte, so `127.0.0.1:7000` and `localhost:7000` are two
/// different sites; so do we.
///
/// Shared, not copied: an address travels with every message a site sends or receives, and a
/// clone is then a count, not an allocation. Encoded as the string itself.
#[derive(Clone, Eq, Serialize, Deserialize)]
pub struct SiteAddr(Arc<str>);

/// The strings' order, with the same answer at once for two clones of one address (the maps
/// the engine keeps by address are searched on every message).
impl Ord for SiteAddr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            std::cmp::Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl PartialOrd for SiteAddr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Equal strings, and the same string at once when both are clones of one address.
impl PartialEq for SiteAddr {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

/// The string's hash, as equality is the string's.
impl std::hash::Hash for SiteAddr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl SiteAddr {
    /// Wraps an address string as given (no normalisation, on purpose).
    pub fn new(addr: impl Into<String>) -> Self {
        SiteAddr(Arc::from(addr.into()))
    }

    /// The address string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SiteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SiteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&str> for SiteAddr {
    fn from(s: &str) -> Self {
        SiteAddr::new(s)
    }
}

/// Log sequence number. The first record of a log is LSN 1; LSN 0 means "before the first".
pub type Lsn = u64;

/// Generation: incremented by every election that produces a master.
pub type Gen = u64;

/// Where a log ends: the generation and LSN of its last record. Ordered the way elections compare
/// logs: a later generation is more advanced whatever its LSN, then the higher LSN.
#[derive(
    Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug,
)]
pub struct LogPos {
    /// Generation of the last record (0 for an empty log).
    pub gen: Gen,
    /// LSN of the last record (0 for an empty log).
    pub lsn: Lsn,
}

impl LogPos {
    /// A position from its parts.
    pub const fn new(gen: Gen, lsn: Lsn) -> Self {
        LogPos { gen, lsn }
    }
}

impl fmt::Display for LogPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.gen, self.lsn)
    }
}

/// A point in time in milliseconds, as handed to the core by its driver. The core never reads a
/// clock: in the simulator this is simulated time (possibly skewed per site), in `repsite` it is
/// a monotonic clock.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time(pub u64);

impl Time {
    /// Milliseconds since the driver's epoch.
    pub const fn ms(self) -> u64 {
        self.0
    }

    /// This time plus `ms` milliseconds (saturating: time never wraps).
    pub const fn plus_ms(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub const fn since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// Majority of a group of `n` sites: more than half, counting sites that are down.
pub const fn majority(n: usize) -> usize {
    n / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_order_as_their_strings_whether_or_not_they_share_one() {
        let names = ["10.0.0.2:5000", "10.0.0.10:5000", "a", "b", "ab"];
        for x in names {
            for y in names {
                let (a, b) = (SiteAddr::new(x), SiteAddr::new(y));
                assert_eq!(a.cmp(&b), x.cmp(y), "{x} against {y}");
                assert_eq!(a.partial_cmp(&b), Some(x.cmp(y)));
                assert_eq!(a.clone().cmp(&a), std::cmp::Ordering::Equal);
            }
        }
    }

    #[test]
    fn later_generation_is_more_advanced_whatever_its_lsn() {
        assert!(LogPos::new(3, 1) > LogPos::new(2, 100));
        assert!(LogPos::new(2, 101) > LogPos::new(2, 100));
    }

    #[test]
    fn majority_counts_more_than_half() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }
}
