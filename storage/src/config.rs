//! What a store may use, checked once at start.

use crate::index::{OFFSET_MAX, SLOTS_MAX};
use std::fmt;

/// Smallest blob chunk: below a page, a chunk's 32-byte hash and its file block cost more than
/// the dedup saves.
pub const CHUNK_BYTES_MIN: usize = 4 << 10;
/// Largest blob chunk: a chunk is read whole to serve any part of it.
pub const CHUNK_BYTES_MAX: usize = 4 << 20;

/// Settings of every endpoint store and the blob store of one core.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// Size of one endpoint log segment file (sparse: disk use follows the data). Also the
    /// unit of compaction and of the memory map. Default 8 MiB.
    pub segment_bytes: u64,
    /// Values of at least this many bytes go to the blob tier. Default 16 KiB.
    pub blob_threshold_bytes: usize,
    /// Size of a blob chunk (dedup granularity). Default 64 KiB.
    pub chunk_bytes: usize,
    /// Size of one blob segment file. Default 64 MiB.
    pub blob_segment_bytes: u64,
    /// Appended bytes buffered in memory per endpoint before they are written to the file
    /// (heap per busy endpoint; `flush`/`write_out` empty it). Default 256 KiB.
    pub tail_bytes_max: usize,
    /// Compaction starts when dead bytes exceed this share of the log. Default 0.5.
    pub dead_ratio: f64,
    /// Most keys per endpoint (the index costs 8 bytes a slot, 8–18 bytes a key).
    pub keys_max: usize,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            segment_bytes: 8 << 20,
            blob_threshold_bytes: 16 << 10,
            chunk_bytes: 64 << 10,
            blob_segment_bytes: 64 << 20,
            tail_bytes_max: 256 << 10,
            dead_ratio: 0.5,
            keys_max: SLOTS_MAX / 8 * 7,
        }
    }
}

/// A setting that does not fit the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl StoreConfig {
    /// Checks the relations between the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |s: &str| Err(ConfigError(s.to_string()));
        if !self.segment_bytes.is_multiple_of(4096)
            || !(16 << 10..=OFFSET_MAX).contains(&self.segment_bytes)
        {
            return fail("segment_bytes must be a multiple of 4096 in 16 KiB..256 MiB");
        }
        // The largest inline record (longest key + a value below the threshold) must fit a
        // segment twice over, so a roll always makes room.
        let record_max = (proto::KEY_BYTES_MAX + self.blob_threshold_bytes + 64) as u64;
        if record_max * 2 > self.segment_bytes {
            return fail("segment_bytes must hold two records of blob_threshold_bytes");
        }
        if !(CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&self.chunk_bytes) {
            return Err(ConfigError(format!(
                "chunk_bytes must be in {CHUNK_BYTES_MIN}..={CHUNK_BYTES_MAX} (4 KiB to 4 MiB), \
                 not {}",
                self.chunk_bytes
            )));
        }
        if self.blob_threshold_bytes == 0 || self.blob_threshold_bytes > proto::VALUE_BYTES_MAX {
            return Err(ConfigError(format!(
                "blob_threshold_bytes must be in 1..={} (the largest value), not {}",
                proto::VALUE_BYTES_MAX,
                self.blob_threshold_bytes
            )));
        }
        if !self.blob_segment_bytes.is_multiple_of(4096)
            || self.blob_segment_bytes < 4 * (self.chunk_bytes as u64 + 4096)
        {
            return fail("blob_segment_bytes must be a multiple of 4096 holding 4 chunks");
        }
        if self.tail_bytes_max == 0 {
            return fail("tail_bytes_max must be positive");
        }
        if !(self.dead_ratio > 0.0 && self.dead_ratio < 1.0) {
            return fail("dead_ratio must be in (0, 1)");
        }
        if self.keys_max == 0 || self.keys_max > SLOTS_MAX / 8 * 7 {
            return fail("keys_max must be in 1..=58720256");
        }
        Ok(())
    }
}
