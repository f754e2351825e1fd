//! repsim's replication engine: a Berkeley-DB-style replication group of one master and
//! read-only clients.
//!
//! Layers, each pointing one way: [`types`], [`log`] and [`codec`] are plain values; [`wire`]
//! frames messages; [`storage`] holds durable state behind a trait; [`site`] is the sans-IO state
//! machine that decides everything. The core never reads a clock, opens a socket or draws global
//! randomness: time and a seed come in as arguments.

pub mod codec;
#[cfg(feature = "testkit")]
pub mod fuzzing;
pub mod log;
pub mod node;
pub mod site;
pub mod storage;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod types;
pub mod wire;

pub use log::{Database, LogRecord, Op, RecordBody, Snapshot, Txn};
pub use types::{Gen, LogPos, Lsn, SiteAddr, Time};
