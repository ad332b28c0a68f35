//! cradle's memcached door: memcached's text protocol over TCP and UDP, served by the same
//! cores and stores as cradle's own protocol, so existing memcached clients and tools use
//! cradle unchanged. A key set through the door is the same key for `cradle get`; client
//! flags and exptime are kept as the value's `storage::Meta` (see `docs/MEMCACHE.md`).
//!
//! `parse` is sans-IO (bytes in, commands out); `execute` runs one key's part of a command
//! on the core that owns the key; `door` is one core's I/O (mio for TCP, the dataplane's UDP
//! port for UDP) and `lanes` the rings that hand keys between cores; `driver` puts a door on
//! a core's loop. The door must never block its loop, take a lock on it, or send a UDP
//! sender more than 3x its request unless the sender's network is allowed (`frame`).
#![forbid(unsafe_code)]

pub mod config;
pub mod counters;
pub mod door;
pub mod driver;
mod execute;
pub mod frame;
pub mod lanes;
pub mod parse;
mod sink;
mod stats;

pub use config::DoorConfig;
pub use counters::{Counters, DoorStats};
pub use door::{bind, doors, Door};
pub use driver::{DoorHandler, DoorPort};
pub use execute::{expires_at_ns, RELATIVE_EXPTIME_MAX_S};
pub use lanes::{connect, Lanes};
