//! The blob tier on real files: big values round-trip, identical values are stored once,
//! deleting every reference gives the disk space back, refcounts survive a restart.

mod common;

use common::{open, value};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use storage::{FileVolume, StoreConfig};

const MIB: usize = 1 << 20;

/// Bytes the files under `dir` really occupy on disk.
fn allocated(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries.map(|e| e.unwrap().metadata().unwrap().blocks() * 512).sum()
}

#[test]
fn four_mib_values_round_trip_dedup_and_reclaim() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default();
    let blob_dir = dir.path().join("blobs");
    let reopen = || {
        let log = Box::new(FileVolume::new(dir.path().join("ep-0")));
        open(log, Box::new(FileVolume::new(&blob_dir)), &config)
    };
    let big = value(42, 4 * MIB);
    let (mut store, mut shelf, _) = reopen();
    store.put(&mut shelf, b"one", &big, None).unwrap();
    store.put(&mut shelf, b"two", &big, None).unwrap();
    store.flush(&mut shelf).unwrap();
    assert_eq!(store.get(&mut shelf, b"one").unwrap().unwrap().0, &big[..]);
    assert_eq!(shelf.blobs().blob_bytes(), 4 * MIB as u64, "stored once");
    assert_eq!(shelf.blobs().blob_chunks(), 64);
    let on_disk = allocated(&blob_dir);
    assert!((4 * MIB as u64..5 * MIB as u64).contains(&on_disk), "{on_disk}");
    // The log holds references only.
    assert!(shelf.stats().log_bytes < 16 << 10);

    // Refcounts are rebuilt from the logs.
    drop((store, shelf));
    let (mut store, mut shelf, _) = reopen();
    assert_eq!(store.get(&mut shelf, b"two").unwrap().unwrap().0, &big[..]);
    assert!(store.delete(&mut shelf, b"one", None).unwrap());
    store.flush(&mut shelf).unwrap();
    assert_eq!(shelf.blobs().blob_bytes(), 4 * MIB as u64, "still referenced by two");
    assert_eq!(store.get(&mut shelf, b"two").unwrap().unwrap().0, &big[..]);
    assert!(store.delete(&mut shelf, b"two", None).unwrap());
    store.flush(&mut shelf).unwrap();
    assert_eq!((shelf.blobs().blob_bytes(), shelf.blobs().blob_chunks()), (0, 0));
    let after = allocated(&blob_dir);
    assert!(after < 64 << 10, "space returned to the file system: {after}");
    drop((store, shelf));
    let (mut store, mut shelf, _) = reopen();
    assert_eq!(store.get(&mut shelf, b"two").unwrap(), None);
    assert_eq!(shelf.blobs().blob_chunks(), 0);
}

#[test]
fn a_chunk_not_flushed_before_a_crash_is_reclaimed_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default();
    let blob_dir = dir.path().join("blobs");
    let reopen = || {
        let log = Box::new(FileVolume::new(dir.path().join("ep-0")));
        open(log, Box::new(FileVolume::new(&blob_dir)), &config)
    };
    let (mut store, mut shelf, _) = reopen();
    store.put(&mut shelf, b"kept", &value(1, MIB), None).unwrap();
    store.flush(&mut shelf).unwrap();
    store.put(&mut shelf, b"dropped", &value(2, MIB), None).unwrap();
    store.delete(&mut shelf, b"dropped", None).unwrap();
    store.flush(&mut shelf).unwrap();
    drop((store, shelf));
    let (mut store, mut shelf, _) = reopen();
    assert_eq!(shelf.blobs().blob_bytes(), MIB as u64);
    assert_eq!(store.get(&mut shelf, b"kept").unwrap().unwrap().0, &value(1, MIB)[..]);
}

#[test]
fn an_overwritten_or_deleted_blob_is_unreadable_at_once_and_freed_after_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default();
    let log = Box::new(FileVolume::new(dir.path().join("ep-0")));
    let (mut store, mut shelf, _) = open(log, Box::new(FileVolume::new(dir.path())), &config);
    let hashes = |v: &[u8]| -> Vec<[u8; 32]> {
        v.chunks(config.chunk_bytes).map(|c| *blake3::hash(c).as_bytes()).collect()
    };
    let (old, new) = (value(1, MIB), value(2, MIB));
    store.put(&mut shelf, b"k", &old, None).unwrap();
    store.flush(&mut shelf).unwrap();
    assert!(hashes(&old).iter().all(|h| shelf.blobs_mut().chunk(h).is_some()));
    store.put(&mut shelf, b"k", &new, None).unwrap();
    // Before the overwrite is durable: the old chunks are held on disk, but served to nobody.
    assert!(
        hashes(&old).iter().all(|h| shelf.blobs_mut().chunk(h).is_none()),
        "old chunk still served"
    );
    assert_eq!(shelf.blobs().blob_chunks(), 32, "held until the flush");
    store.flush(&mut shelf).unwrap();
    assert_eq!(shelf.blobs().blob_chunks(), 16, "freed by the flush");
    assert!(store.delete(&mut shelf, b"k", None).unwrap());
    assert!(
        hashes(&new).iter().all(|h| shelf.blobs_mut().chunk(h).is_none()),
        "deleted chunk still served"
    );
    store.flush(&mut shelf).unwrap();
    assert_eq!((shelf.blobs().blob_chunks(), shelf.blobs().blob_bytes()), (0, 0));
    // A chunk detached and taken again by a new write before the flush stays readable.
    store.put(&mut shelf, b"a", &old, None).unwrap();
    store.flush(&mut shelf).unwrap();
    assert!(store.delete(&mut shelf, b"a", None).unwrap());
    store.put(&mut shelf, b"b", &old, None).unwrap();
    store.flush(&mut shelf).unwrap();
    assert!(hashes(&old).iter().all(|h| shelf.blobs_mut().chunk(h).is_some()));
    assert_eq!(store.get(&mut shelf, b"b").unwrap().unwrap().0, &old[..]);
}
