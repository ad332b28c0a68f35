//! What a core decides: it serves the endpoints (partition replicas) placed on it.
//!
//! `Core` is sans-IO: the per-core loop (`dataplane::runner`) hands it datagrams and `now`,
//! and it hands replies back through `dataplane::Transmit`. It owns its endpoints' stores,
//! the completion records that make resent writes exactly-once, the reassembly of fragmented
//! writes, and address validation against amplification. `layout` says which core serves which
//! partition and produces the partition map; `stats` is what a core publishes for the others.
//!
//! This crate must never read a clock, do I/O of its own, or take a lock on the request path.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cluster;
mod completions;
mod config;
mod core;
pub mod counter;
mod durable;
mod layout;
pub mod map_group;
pub mod peer;
mod read_cache;
mod reassembly;
mod replies;
mod routes;
mod stats;
mod validation;

pub use crate::core::{
    Core, ItemPut, ItemSlot, KeyOwner, MapChange, MapInbox, MapOutcome, ReplicationConfig,
};
pub use auth::KeyTable;
pub use config::{ConfigError, CoreConfig, COMPLETION_RECORDS_DEFAULT, COMPLETION_TTL_NS_DEFAULT};
pub use durable::{CoreStorage, Durability, SyncClock};
pub use layout::NodeLayout;
pub use stats::{
    CoreCounters, CoreMetrics, Lagging, LatencyHistogram, NodeFacts, NodeStats, StatsSnapshot,
    LATENCY_BOUNDS_NS, OPERATIONS, STATUS_SLOTS,
};

/// Slack for the wall clocks that stamp writes: the loop's clock starts a little after the
/// wall-clock reading it is offset by, and a restarted node's clock may be a little behind.
const STAMP_CLOCK_SLACK_NS: u64 = 1_000_000_000;

/// The wall-clock time from which a write stamped in the log may still be resent, at wall
/// time `now_ns`: a completion record lives `completion_ttl_ns`, plus slack for the clocks.
/// Replay rebuilds the completion records of writes stamped since then, and compaction keeps
/// the segments that hold them.
pub fn stamps_kept_since(now_ns: u64, completion_ttl_ns: u64) -> u64 {
    now_ns.saturating_sub(completion_ttl_ns.saturating_add(STAMP_CLOCK_SLACK_NS))
}
