//! Item metadata (flags, expiry) kept in the value's record: read back with the value,
//! expiry judged by the store's clock, kept across a restart, copied by cleaning, and an
//! expired value reclaimed by cleaning (due by the shelf's clock, `Shelf::set_clock`).

mod common;

use common::{small_config, value};
use storage::{BlobStore, CasOutcome, FileVolume, Meta, Shelf, Store, StoreConfig};

fn open(dir: &std::path::Path, config: &StoreConfig) -> (Store, Shelf) {
    let (blobs, _) = BlobStore::open(Box::new(FileVolume::new(dir.join("blobs"))), config)
        .expect("blob store opens");
    let log = Box::new(FileVolume::new(dir.join("core-0")));
    let (shelf, mut stores, _) = Shelf::open(log, blobs, config, 1, u64::MAX).expect("log opens");
    (stores.pop().expect("one endpoint"), shelf)
}

const SECOND: u64 = 1_000_000_000;

#[test]
fn flags_and_expiry_read_back_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default();
    let (mut store, mut shelf) = open(dir.path(), &config);
    store.set_clock(100 * SECOND);
    let forever = Meta { flags: 42, expires_at_ns: 0 };
    let brief = Meta { flags: 7, expires_at_ns: 200 * SECOND };
    let v1 = store.put_with(&mut shelf, b"forever", b"one", &forever, None).unwrap();
    let v2 = store.put_with(&mut shelf, b"brief", b"two", &brief, None).unwrap();
    let big = value(1, 100 << 10);
    let v3 = store.put_with(&mut shelf, b"big", &big, &brief, None).unwrap();
    store.put(&mut shelf, b"plain", b"three", None).unwrap();
    let item = store.get_item(&mut shelf, b"brief").unwrap().unwrap();
    assert_eq!((item.value, item.version, item.meta), (&b"two"[..], v2, brief));
    let item = store.get_item(&mut shelf, b"big").unwrap().unwrap();
    assert_eq!((item.value, item.version, item.meta), (&big[..], v3, brief));
    assert_eq!(store.get_item(&mut shelf, b"plain").unwrap().unwrap().meta, Meta::NONE);
    store.flush(&mut shelf).unwrap();
    drop((store, shelf));

    let (mut store, mut shelf) = open(dir.path(), &config);
    store.set_clock(150 * SECOND);
    let item = store.get_item(&mut shelf, b"forever").unwrap().unwrap();
    assert_eq!((item.value, item.version, item.meta), (&b"one"[..], v1, forever));
    assert_eq!(store.get_item(&mut shelf, b"brief").unwrap().unwrap().meta, brief);
    // At the expiry time exactly, and after: absent to every read.
    store.set_clock(200 * SECOND);
    assert_eq!(store.get_item(&mut shelf, b"brief").unwrap(), None);
    assert_eq!(store.get(&mut shelf, b"big").unwrap(), None);
    assert_eq!(store.get_reference(&shelf, b"brief").unwrap(), None);
    assert_eq!(store.version(&shelf, b"brief").unwrap(), 0);
    // The clock never goes back.
    store.set_clock(150 * SECOND);
    assert_eq!(store.get(&mut shelf, b"brief").unwrap(), None);
    let mut keys = Vec::new();
    store.for_each_key(&shelf, |k| keys.push(k.to_vec())).unwrap();
    keys.sort();
    assert_eq!(keys, vec![b"forever".to_vec(), b"plain".to_vec()]);
    drop((store, shelf));
    // Still expired after a restart (the clock is the caller's, the expiry is on disk).
    let (mut store, mut shelf) = open(dir.path(), &config);
    store.set_clock(201 * SECOND);
    assert_eq!(store.get(&mut shelf, b"brief").unwrap(), None);
    assert_eq!(store.len(), 4, "expired values stay in the index until reclaimed");
}

#[test]
fn writes_over_an_expired_value_replace_it_and_delete_says_it_was_absent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut shelf) = open(dir.path(), &StoreConfig::default());
    store.set_clock(10 * SECOND);
    let short = Meta { flags: 1, expires_at_ns: 11 * SECOND };
    store.put_with(&mut shelf, b"a", b"old", &short, None).unwrap();
    store.put_with(&mut shelf, b"b", b"old", &short, None).unwrap();
    store.put_with(&mut shelf, b"c", b"old", &short, None).unwrap();
    store.set_clock(12 * SECOND);
    // A put over an expired value takes its index slot: one key, not two.
    store.put(&mut shelf, b"a", b"new", None).unwrap();
    assert_eq!(store.len(), 3);
    assert_eq!(store.get(&mut shelf, b"a").unwrap().unwrap().0, b"new");
    // CAS sees an expired value as absent (version 0).
    assert!(matches!(
        store.cas(&mut shelf, b"b", 0, b"inserted", None).unwrap(),
        CasOutcome::Swapped(_)
    ));
    assert_eq!(store.get(&mut shelf, b"b").unwrap().unwrap().0, b"inserted");
    // Deleting an expired value: it was absent, and it is reclaimed.
    assert!(!store.delete(&mut shelf, b"c", None).unwrap());
    assert_eq!(store.len(), 2);
    // A touch gives new metadata and a new version, value unchanged; absent keys: None.
    let later = Meta { flags: 1, expires_at_ns: 99 * SECOND };
    let before = store.version(&shelf, b"a").unwrap();
    let after = store.rewrite_meta(&mut shelf, b"a", &later, None).unwrap().unwrap();
    assert!(after > before);
    let item = store.get_item(&mut shelf, b"a").unwrap().unwrap();
    assert_eq!((item.value, item.meta), (&b"new"[..], later));
    assert_eq!(store.rewrite_meta(&mut shelf, b"nobody", &later, None).unwrap(), None);
}

#[test]
fn cleaning_copies_metadata_and_reclaims_expired_values() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let (mut store, mut shelf) = open(dir.path(), &config);
    store.set_clock(SECOND);
    shelf.set_clock(SECOND);
    let kept = Meta { flags: 0xabcd, expires_at_ns: 1000 * SECOND };
    let gone = Meta { flags: 9, expires_at_ns: 5 * SECOND };
    store.put_with(&mut shelf, b"kept", b"forever", &kept, None).unwrap();
    store.put_with(&mut shelf, b"gone", b"soon", &gone, None).unwrap();
    let big = value(3, 8 << 10);
    store.put_with(&mut shelf, b"gone-big", &big, &gone, None).unwrap();
    // Overwrites fill later segments, so the first one is mostly dead and gets cleaned.
    for round in 0..5u64 {
        for i in 0..20u64 {
            let key = format!("key-{i}");
            store.put(&mut shelf, key.as_bytes(), &value(round * 100 + i, 300), None).unwrap();
        }
    }
    store.flush(&mut shelf).unwrap();
    store.set_clock(6 * SECOND);
    shelf.set_clock(6 * SECOND);
    let chunks_before = shelf.blobs().blob_chunks();
    assert!(shelf.needs_cleaning());
    while shelf.needs_cleaning() {
        if shelf.clean_step(std::slice::from_mut(&mut store), u64::MAX, u64::MAX).unwrap() == 0 {
            break;
        }
    }
    store.flush(&mut shelf).unwrap();
    assert_eq!(store.len(), 21, "both expired values reclaimed, the rest kept");
    assert!(shelf.blobs().blob_chunks() < chunks_before, "the expired blob's chunks were freed");
    drop((store, shelf));
    let (mut store, mut shelf) = open(dir.path(), &config);
    // Even with a clock that has not reached the expiry, the reclaimed values do not return.
    store.set_clock(SECOND);
    shelf.set_clock(SECOND);
    assert_eq!(store.get(&mut shelf, b"gone").unwrap(), None);
    assert_eq!(store.get(&mut shelf, b"gone-big").unwrap(), None);
    let item = store.get_item(&mut shelf, b"kept").unwrap().unwrap();
    assert_eq!((item.value, item.meta), (&b"forever"[..], kept));
}

#[test]
fn segments_whose_values_all_expired_are_due_for_cleaning_without_any_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let (mut store, mut shelf) = open(dir.path(), &config);
    store.set_clock(SECOND);
    shelf.set_clock(SECOND);
    // A cache's worth of values with a time to live, then one that never expires: no
    // overwrite, no delete, so no dead bytes at all.
    let ttl = Meta { flags: 0, expires_at_ns: 10 * SECOND };
    for i in 0..200u64 {
        let key = format!("cached-{i}");
        store.put_with(&mut shelf, key.as_bytes(), &value(i, 300), &ttl, None).unwrap();
    }
    store.put(&mut shelf, b"forever", b"kept", None).unwrap();
    store.flush(&mut shelf).unwrap();
    let segments = shelf.stats().segments;
    assert!(segments >= 4, "{segments} segments");
    assert!(!shelf.needs_cleaning(), "nothing is dead or expired yet");
    drop((store, shelf));
    // After a restart the segments' expiry is known again (replayed).
    let (mut store, mut shelf) = open(dir.path(), &config);
    store.set_clock(9 * SECOND);
    shelf.set_clock(9 * SECOND);
    assert!(!shelf.needs_cleaning(), "not expired yet");
    store.set_clock(11 * SECOND);
    shelf.set_clock(11 * SECOND);
    assert!(shelf.needs_cleaning(), "the oldest segment's values have all expired");
    let mut steps = 0;
    while shelf.needs_cleaning() && steps < 1000 {
        shelf.clean_step(std::slice::from_mut(&mut store), u64::MAX, u64::MAX).unwrap();
        steps += 1;
    }
    store.flush(&mut shelf).unwrap();
    assert!(steps < 1000, "cleaning ends");
    // The values that share a segment with the one that never expires wait for the
    // dead-bytes rule (the expiry rule is per segment); every other one is reclaimed.
    let left = store.len();
    assert!((1..30).contains(&left), "{left} of 201 keys left in the index");
    assert_eq!(store.get(&mut shelf, b"forever").unwrap().unwrap().0, b"kept");
    assert!(shelf.stats().segments < segments, "segments retired");
    assert!(shelf.stats().log_bytes < 200 * 300 / 2, "{} bytes left", shelf.stats().log_bytes);
}
