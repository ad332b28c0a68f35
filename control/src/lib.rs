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

mod completions;
mod config;
mod core;
mod durable;
mod layout;
mod read_cache;
mod reassembly;
mod replies;
mod stats;
mod validation;

pub use crate::core::Core;
pub use config::{ConfigError, CoreConfig, COMPLETION_RECORDS_DEFAULT};
pub use durable::{CoreStorage, Durability, SyncClock};
pub use layout::NodeLayout;
pub use stats::{CoreCounters, LatencyHistogram, NodeStats, StatsSnapshot, LATENCY_BOUNDS_NS};
