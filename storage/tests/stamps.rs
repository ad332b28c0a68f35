//! Request stamps: a write's (client id, tracking id, fingerprint, time) is kept in its record,
//! comes back from replay so its completion record can be rebuilt, and keeps cleaning from
//! dropping the record while a resend of it may still come.

mod common;

use common::{small_config, value};
use storage::{
    BlobStore, CasOutcome, FileVolume, RecoveryReport, Shelf, ShortValue, Stamp, StampedWrite,
    Store, StoreConfig,
};

/// Nanoseconds a second: a record keeps its stamp's time in whole seconds.
const S: u64 = 1_000_000_000;

/// A stamp applied at `at_s` seconds.
fn stamp(tracking_id: u64, at_s: u64) -> Stamp {
    Stamp { client_id: 7, tracking_id, fingerprint: tracking_id ^ 0xf00d, at_ns: at_s * S }
}

fn open(dir: &std::path::Path, config: &StoreConfig, since: u64) -> (Store, Shelf, RecoveryReport) {
    let (blobs, _) = BlobStore::open(Box::new(FileVolume::new(dir.join("blobs"))), config)
        .expect("blob store opens");
    let log = Box::new(FileVolume::new(dir.join("core-0")));
    let (shelf, mut stores, report) = Shelf::open(log, blobs, config, 1, since).expect("log opens");
    (stores.pop().expect("one endpoint"), shelf, report)
}

#[test]
fn replay_returns_the_stamps_since_the_given_time_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default();
    let (mut store, mut shelf, _) = open(dir.path(), &config, u64::MAX);
    let put = store.put(&mut shelf, b"a", b"1", Some(&stamp(1, 100))).unwrap();
    store.put(&mut shelf, b"b", b"unstamped", None).unwrap();
    let big = value(3, 100 << 10);
    let blob = store.put(&mut shelf, b"c", &big, Some(&stamp(2, 200))).unwrap();
    let CasOutcome::Swapped(cas) =
        store.cas(&mut shelf, b"a", put, b"2", Some(&stamp(3, 300))).unwrap()
    else {
        panic!("cas against the current version swaps")
    };
    // A mismatch and a delete of an absent key change nothing and write nothing.
    let before = shelf.stats().log_bytes;
    assert_eq!(
        store.cas(&mut shelf, b"a", put, b"x", Some(&stamp(4, 400))).unwrap(),
        CasOutcome::Mismatch(cas)
    );
    assert!(!store.delete(&mut shelf, b"nobody", Some(&stamp(5, 500))).unwrap());
    assert_eq!(shelf.stats().log_bytes, before);
    assert!(store.delete(&mut shelf, b"a", Some(&stamp(6, 600))).unwrap());
    store.flush(&mut shelf).unwrap();
    drop((store, shelf));

    let (mut store, mut shelf, report) = open(dir.path(), &config, 200 * S);
    let expected = vec![
        StampedWrite { stamp: stamp(2, 200), version: blob, value: None, status: None },
        StampedWrite {
            stamp: stamp(3, 300),
            version: cas,
            value: ShortValue::of(b"2"),
            status: None,
        },
        StampedWrite { stamp: stamp(6, 600), version: 0, value: None, status: None },
    ];
    assert_eq!(report.stamps, expected, "since 200, deletes with version 0");
    assert_eq!(store.get(&mut shelf, b"c").unwrap().unwrap().0, &big[..]);
    assert_eq!(store.get(&mut shelf, b"a").unwrap(), None);
    drop((store, shelf));
    let (_, _, report) = open(dir.path(), &config, u64::MAX);
    assert!(report.stamps.is_empty());
    let (_, _, report) = open(dir.path(), &config, 0);
    assert_eq!(report.stamps.len(), 4);
}

#[test]
fn a_note_takes_the_next_lsn_changes_no_key_and_replays_with_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default();
    let (mut store, mut shelf, _) = open(dir.path(), &config, u64::MAX);
    let put = store.put(&mut shelf, b"a", b"1", Some(&stamp(1, 100))).unwrap();
    // A CAS that did not match (status 9, say), answered with the current version.
    let note = store.note(&mut shelf, b"a", &stamp(2, 200), 9, put).unwrap();
    assert_eq!((note, store.last_lsn()), (put + 1, put + 1));
    assert_eq!(store.get(&mut shelf, b"a").unwrap().unwrap(), (&b"1"[..], put));
    assert_eq!(store.len(), 1);
    // A delete of an absent key (status 3): still absent.
    store.note(&mut shelf, b"nobody", &stamp(3, 300), 3, 0).unwrap();
    assert_eq!(store.get(&mut shelf, b"nobody").unwrap(), None);
    let next = store.put(&mut shelf, b"b", b"2", None).unwrap();
    assert_eq!(next, put + 3, "notes take LSNs like any write");
    store.flush(&mut shelf).unwrap();
    drop((store, shelf));

    let (mut store, mut shelf, report) = open(dir.path(), &config, 200 * S);
    let expected = vec![
        StampedWrite { stamp: stamp(2, 200), version: put, value: None, status: Some(9) },
        StampedWrite { stamp: stamp(3, 300), version: 0, value: None, status: Some(3) },
    ];
    assert_eq!(report.stamps, expected);
    assert_eq!(store.last_lsn(), next);
    assert_eq!(store.len(), 2);
    assert_eq!(store.get(&mut shelf, b"a").unwrap().unwrap(), (&b"1"[..], put));
    assert_eq!(store.get(&mut shelf, b"nobody").unwrap(), None);
}

#[test]
fn cleaning_keeps_a_segment_with_a_young_stamp_and_copies_drop_stamps() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let (mut store, mut shelf, _) = open(dir.path(), &config, u64::MAX);
    // The first segment gets stamped writes at t = 1000..; then overwrites fill later ones.
    // "kept" is never overwritten: compaction copies it forward.
    store.put(&mut shelf, b"kept", b"forever", Some(&stamp(99, 1000))).unwrap();
    for i in 0..20u64 {
        let key = format!("key-{i}");
        store.put(&mut shelf, key.as_bytes(), &value(i, 300), Some(&stamp(i, 1000 + i))).unwrap();
    }
    for round in 0..4u64 {
        for i in 0..20u64 {
            let key = format!("key-{i}");
            store.put(&mut shelf, key.as_bytes(), &value(round * 100 + i, 300), None).unwrap();
        }
    }
    store.flush(&mut shelf).unwrap();
    assert!(shelf.needs_cleaning());
    let segments = shelf.stats().segments;
    // Stamps up to t = 1019 are in the oldest segment: not before 1019, so it is kept.
    assert_eq!(shelf.clean_step(std::slice::from_mut(&mut store), u64::MAX, 1019 * S).unwrap(), 0);
    assert_eq!(shelf.stats().segments, segments);
    assert!(shelf.clean_step(std::slice::from_mut(&mut store), u64::MAX, 1020 * S).unwrap() > 0);
    assert!(shelf.stats().segments < segments, "the oldest segment was retired");
    while shelf.needs_cleaning() {
        if shelf.clean_step(std::slice::from_mut(&mut store), u64::MAX, u64::MAX).unwrap() == 0 {
            break;
        }
    }
    store.flush(&mut shelf).unwrap();
    drop((store, shelf));
    let (mut store, mut shelf, report) = open(dir.path(), &config, 0);
    assert!(report.stamps.is_empty(), "no stamp survives cleaning: {:?}", report.stamps);
    assert_eq!(store.get(&mut shelf, b"kept").unwrap().unwrap().0, b"forever");
    for i in 0..20u64 {
        let key = format!("key-{i}");
        assert_eq!(
            store.get(&mut shelf, key.as_bytes()).unwrap().unwrap().0,
            &value(300 + i, 300)[..]
        );
    }
}
