//! Helpers shared by the storage tests.
#![allow(dead_code, unreachable_pub)]

use storage::{BlobStore, RecoveryReport, Shelf, Store, StoreConfig, Volume};

/// Small segments so a short test rolls, seals and compacts many of them.
pub fn small_config() -> StoreConfig {
    StoreConfig {
        segment_bytes: 16 << 10,
        blob_threshold_bytes: 4 << 10,
        chunk_bytes: 4 << 10,
        blob_segment_bytes: 128 << 10,
        tail_bytes_max: 2 << 10,
        dead_ratio: 0.3,
        ..StoreConfig::default()
    }
}

/// Opens a blob store and a core's log with one endpoint, as a core does at start.
pub fn open(
    log: Box<dyn Volume>,
    blobs: Box<dyn Volume>,
    config: &StoreConfig,
) -> (Store, Shelf, RecoveryReport) {
    let (mut stores, shelf, report) = open_core(log, blobs, config, 1);
    (stores.pop().expect("one endpoint"), shelf, report)
}

/// Opens a blob store and a core's log with `endpoints` endpoints sharing it.
pub fn open_core(
    log: Box<dyn Volume>,
    blobs: Box<dyn Volume>,
    config: &StoreConfig,
    endpoints: u32,
) -> (Vec<Store>, Shelf, RecoveryReport) {
    let (blob_store, _) = BlobStore::open(blobs, config).expect("blob store opens");
    let (mut shelf, stores, report) =
        Shelf::open(log, blob_store, config, endpoints, u64::MAX).expect("log opens");
    if report.quarantined.is_empty() {
        shelf.blobs_mut().reclaim_unreferenced().expect("reclaim");
    }
    (stores, shelf, report)
}

/// A value of `len` bytes derived from `seed` (same seed and length: same bytes).
pub fn value(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    testkit::Rng::from_seed(seed).fill_bytes(&mut bytes);
    bytes
}
