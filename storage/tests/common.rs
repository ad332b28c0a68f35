//! Helpers shared by the storage tests.
#![allow(dead_code, unreachable_pub)]

use storage::{BlobStore, RecoveryReport, Store, StoreConfig, Volume};

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

/// Opens a blob store and one endpoint store, as a core does at start.
pub fn open(
    log: Box<dyn Volume>,
    blobs: Box<dyn Volume>,
    config: &StoreConfig,
) -> (Store, BlobStore, RecoveryReport) {
    let (mut blob_store, _) = BlobStore::open(blobs, config).expect("blob store opens");
    let (store, report) = Store::open(log, config, &mut blob_store, u64::MAX).expect("store opens");
    if report.quarantine.is_none() {
        blob_store.reclaim_unreferenced().expect("reclaim");
    }
    (store, blob_store, report)
}

/// A value of `len` bytes derived from `seed` (same seed and length: same bytes).
pub fn value(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    testkit::Rng::from_seed(seed).fill_bytes(&mut bytes);
    bytes
}
