//! One log per core, shared by all its endpoints (issue #15): many endpoints in few files,
//! each keeping its own keys and LSNs across restarts, and cleaning per core that reclaims
//! segments without letting any endpoint's versions go back.

mod common;

use common::{open_core, small_config, value};
use std::collections::BTreeMap;
use storage::{FileVolume, MemoryVolume, Shelf, Store, StoreConfig};

type Keys = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

/// Every key of every endpoint reads back with its value and version, nothing else is there,
/// and each endpoint's LSN is `lsns[slot]`.
fn assert_holds(stores: &mut [Store], shelf: &mut Shelf, model: &[Keys], lsns: &[u64]) {
    for (slot, store) in stores.iter_mut().enumerate() {
        assert_eq!(store.len(), model[slot].len(), "endpoint {slot}");
        for (k, (v, version)) in &model[slot] {
            let got = store.get(shelf, k).unwrap().map(|(v, n)| (v.to_vec(), n));
            assert_eq!(got.as_ref(), Some(&(v.clone(), *version)), "endpoint {slot} key {k:?}");
        }
        assert_eq!(store.last_lsn(), lsns[slot], "endpoint {slot}: versions never go back");
    }
}

fn lsns(stores: &[Store]) -> Vec<u64> {
    stores.iter().map(Store::last_lsn).collect()
}

/// Cleans until no sealed segment is left or `steps_max` steps ran; returns the steps.
fn clean_all(stores: &mut [Store], shelf: &mut Shelf, steps_max: usize) -> usize {
    for step in 0..steps_max {
        if shelf.clean_step(stores, u64::MAX, u64::MAX).unwrap() == 0 {
            return step;
        }
    }
    steps_max
}

#[test]
fn fifty_endpoints_share_a_few_files_and_each_gets_its_keys_and_versions_back() {
    const ENDPOINTS: u32 = 50;
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let reopen = || {
        let log = Box::new(FileVolume::new(dir.path().join("core-0")).making_ahead());
        open_core(log, Box::new(FileVolume::new(dir.path().join("blobs"))), &config, ENDPOINTS)
    };
    let (mut stores, mut shelf, _) = reopen();
    let mut model = vec![Keys::new(); ENDPOINTS as usize];
    // Endpoints write different numbers of keys and overwrite some, so their LSN sequences
    // differ; a few deletes make the last LSN of some a tombstone's.
    for round in 0..3u64 {
        for slot in 0..ENDPOINTS as usize {
            for i in 0..(slot as u64 % 5 + 1) {
                let v = value(round << 32 | (slot as u64) << 8 | i, 100 + 20 * i as usize);
                let version = stores[slot].put(&mut shelf, &key(i), &v, None).unwrap();
                model[slot].insert(key(i), (v, version));
            }
            if round == 2 && slot % 4 == 0 {
                assert!(stores[slot].delete(&mut shelf, &key(0), None).unwrap());
                model[slot].remove(&key(0));
            }
        }
        // One flush per batch makes every endpoint's writes durable (group commit).
        stores[0].flush(&mut shelf).unwrap();
        assert!(!shelf.needs_sync());
    }
    let want_lsns = lsns(&stores);
    assert_eq!(want_lsns[4], 3 * 5 + 1, "five keys three times, then a delete");
    let log_bytes = shelf.stats().log_bytes;
    drop((stores, shelf));

    let (mut stores, mut shelf, report) = reopen();
    assert_eq!(report.quarantined, vec![]);
    assert_holds(&mut stores, &mut shelf, &model, &want_lsns);
    let files = std::fs::read_dir(dir.path().join("core-0")).unwrap().count() as u64;
    assert_eq!(files, report.segments);
    // One file a segment and the next one, made ahead (zeros); none an endpoint.
    assert_eq!(files, shelf.stats().segments + 1, "one file a segment and one made ahead");
    let ahead = dir.path().join("core-0").join(format!("{:010}.seg", files - 1));
    assert!(std::fs::read(ahead).unwrap().iter().all(|&b| b == 0), "the newest is made ahead");
    // Each sealed segment is full but for less than a record and its seal.
    let segment_bytes_min = config.segment_bytes - 1024;
    let segments = files - 1;
    assert!(segments <= log_bytes / segment_bytes_min + 1, "{segments} for {log_bytes} bytes");
    assert!(files < u64::from(ENDPOINTS) / 4, "{files} files for {ENDPOINTS} endpoints");
    for (slot, store) in stores.iter_mut().enumerate() {
        let next = store.put(&mut shelf, b"next", b"v", None).unwrap();
        assert_eq!(next, want_lsns[slot] + 1, "endpoint {slot}");
    }
}

/// A core of `endpoints` on memory volumes, and the volumes to open it again.
fn memory_core(endpoints: u32) -> (Vec<Store>, Shelf, impl Fn() -> (Vec<Store>, Shelf)) {
    let (log, blobs) = (MemoryVolume::new("log"), MemoryVolume::new("blobs"));
    let config: StoreConfig = small_config();
    let reopen = move || {
        let (stores, shelf, report) =
            open_core(Box::new(log.clone()), Box::new(blobs.clone()), &config, endpoints);
        assert_eq!(report.quarantined, vec![]);
        (stores, shelf)
    };
    let (stores, shelf) = reopen();
    (stores, shelf, reopen)
}

#[test]
fn cleaning_reclaims_segments_across_endpoints_and_keeps_every_value_and_version() {
    const ENDPOINTS: u32 = 8;
    let (mut stores, mut shelf, reopen) = memory_core(ENDPOINTS);
    let mut model = vec![Keys::new(); ENDPOINTS as usize];
    // Each endpoint overwrites its 12 keys again and again and deletes some: most of the
    // log is dead, spread over every endpoint's records; a few blob values among them.
    for round in 0..8u64 {
        for slot in 0..ENDPOINTS as usize {
            for i in 0..12u64 {
                let len = if (round + i) % 29 == 0 { 6_000 } else { 250 };
                let v = value(round << 32 | (slot as u64) << 8 | i, len);
                let version = stores[slot].put(&mut shelf, &key(i), &v, None).unwrap();
                model[slot].insert(key(i), (v, version));
            }
            if round % 3 == 2 {
                let i = (round + slot as u64) % 12;
                assert!(stores[slot].delete(&mut shelf, &key(i), None).unwrap());
                model[slot].remove(&key(i));
            }
        }
        stores[0].flush(&mut shelf).unwrap();
    }
    let before = shelf.stats();
    assert!(before.segments >= 10, "{before:?}");
    assert!(shelf.needs_cleaning(), "{before:?}");
    let mut steps = 0;
    while shelf.needs_cleaning() && steps < 1_000 {
        // Small steps: a pass over one segment takes several, each bounded.
        let examined = shelf.clean_step(&mut stores[..], 4_096, u64::MAX).unwrap();
        assert!(examined > 0, "cleaning is due, so a step makes progress");
        assert!(examined < 4_096 + 8_192, "a step stays near its budget: {examined}");
        steps += 1;
    }
    assert!(steps < 1_000, "cleaning ends");
    for store in &mut stores {
        store.flush(&mut shelf).unwrap();
    }
    let after = shelf.stats();
    assert!(after.segments * 2 < before.segments, "{before:?} then {after:?}");
    assert!(after.dead_bytes < before.dead_bytes, "{before:?} then {after:?}");
    let want_lsns = lsns(&stores);
    assert_holds(&mut stores, &mut shelf, &model, &want_lsns);
    drop((stores, shelf));
    let (mut stores, mut shelf) = reopen();
    assert_holds(&mut stores, &mut shelf, &model, &want_lsns);
    assert_eq!(shelf.stats().segments, after.segments);
}

#[test]
fn an_endpoints_lsn_survives_cleaning_away_its_last_record_a_tombstone() {
    const ENDPOINTS: u32 = 4;
    let (mut stores, mut shelf, reopen) = memory_core(ENDPOINTS);
    // Endpoint 3: k at LSN 1, deleted at LSN 2: after cleaning, no record of it is live.
    assert_eq!(stores[3].put(&mut shelf, b"k", b"v1", None).unwrap(), 1);
    assert!(stores[3].delete(&mut shelf, b"k", None).unwrap());
    assert_eq!(stores[3].last_lsn(), 2);
    // The others overwrite a few keys until the segment holding those two is sealed, and
    // more (their live data stays well under a segment, so cleaning can empty old ones).
    let mut model = vec![Keys::new(); ENDPOINTS as usize];
    let fill = |stores: &mut [Store], shelf: &mut Shelf, model: &mut [Keys], rounds: u64| {
        for round in 0..rounds {
            for slot in 0..3 {
                let i = round % 4;
                let v = value(round << 8 | slot as u64, 500);
                let version = stores[slot].put(shelf, &key(i), &v, None).unwrap();
                model[slot].insert(key(i), (v, version));
            }
        }
        stores[0].flush(shelf).unwrap();
    };
    fill(&mut stores, &mut shelf, &mut model, 100);
    assert!(shelf.stats().segments >= 4);
    let steps = clean_all(&mut stores, &mut shelf, 100);
    assert!(steps < 100, "cleaning ends");
    stores[0].flush(&mut shelf).unwrap();
    assert_eq!(shelf.stats().segments, 1, "every sealed segment cleaned away");
    let want_lsns = lsns(&stores);
    assert_eq!(want_lsns[3], 2);
    drop((stores, shelf));

    let (mut stores, mut shelf) = reopen();
    assert_holds(&mut stores, &mut shelf, &model, &want_lsns);
    // The floor that kept LSN 2 is carried forward by the next passes too.
    fill(&mut stores, &mut shelf, &mut model, 100);
    assert!(clean_all(&mut stores, &mut shelf, 100) < 100);
    stores[0].flush(&mut shelf).unwrap();
    let want_lsns = lsns(&stores);
    drop((stores, shelf));
    let (mut stores, mut shelf) = reopen();
    assert_holds(&mut stores, &mut shelf, &model, &want_lsns);
    assert_eq!(stores[3].last_lsn(), 2, "the LSN of the cleaned-away tombstone");
    assert_eq!(stores[3].put(&mut shelf, b"k", b"v3", None).unwrap(), 3, "never version 1 again");
}
