//! The endpoint store: what one endpoint (one replica of one partition) keeps, durably.
//!
//! The endpoints of a core share one append log of segment files, the core's [`Shelf`]
//! (checksummed records that each name their endpoint, tombstones, incremental cleaning,
//! one replay on restart); each endpoint's [`Store`] keeps its own LSNs and an in-memory
//! index from key hash to record location (8 bytes a slot). Values at or above a threshold
//! go to the core's [`BlobStore`]: content-addressed (BLAKE3), reference-counted chunks in
//! their own files, so identical values are stored once. All I/O goes through the narrow [`LogDevice`] and
//! [`Volume`] traits: a real one (files read and written through a shared mmap, blocks
//! allocated ahead with `fallocate`), one in memory and one that injects faults. See
//! `README.md` for the formats, the crash outcomes and the costs.
//!
//! This crate must never do network I/O, never allocate on a read of a small value, never
//! retry a failed write or flush (the log is poisoned instead), and never serve a record
//! that fails its checksum.
#![deny(unsafe_code)]

mod blob;
mod catchup;
mod config;
mod device;
mod error;
mod file;
pub mod heap;
mod index;
pub mod latency;
mod log;
mod record;
mod recover;
mod shelf;
mod store;
mod sync_set;

pub use blob::{BlobReport, BlobStore, Hash, HASH_BYTES};
pub use catchup::{record_digest, Snapshot, SnapshotRead, DIGEST_BYTES};
pub use config::{ConfigError, StoreConfig, CHUNK_BYTES_MAX, CHUNK_BYTES_MIN};
pub use device::{Faults, FaultyVolume, LogDevice, MemoryVolume, Volume};
pub use error::{Corruption, Limit, StoreError};
pub use file::FileVolume;
pub use record::{Meta, Stamp};
pub use recover::{
    RecoveryReport, ShortValue, StampedWrite, TornTail, EARLIER_SEGMENT_MAGIC,
    SHORT_VALUE_BYTES_MAX,
};
pub use shelf::{Shelf, ShelfStats, Stores};
pub use store::{note_payload, parse_note, Applied, CasOutcome, Item, Store, StoreStats, ValueRef};
pub use sync_set::SyncSet;
