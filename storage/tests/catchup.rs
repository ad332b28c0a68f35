//! A replica built from another while it keeps serving: a snapshot read a few entries at a
//! time, the writes made meanwhile applied out of order with `Store::install` (newest
//! version wins, a caller-kept memory of deletes), and `Store::clear` to start again.

mod common;

use common::{open, open_core, small_config, value};
use std::collections::HashMap;
use storage::{Applied, MemoryVolume, Meta, Shelf, SnapshotRead, Store, Volume};
use testkit::Rng;

/// A new store and its core's shelf, with their volumes (to open them again).
fn fresh(name: &str) -> (Store, Shelf, (MemoryVolume, MemoryVolume)) {
    let (log, blob_volume) = (MemoryVolume::new(name), MemoryVolume::new("b"));
    let (store, shelf, _) =
        open(Box::new(log.clone()), Box::new(blob_volume.clone()), &small_config());
    (store, shelf, (log, blob_volume))
}

fn reopen(volumes: (MemoryVolume, MemoryVolume)) -> (Store, Shelf, storage::RecoveryReport) {
    open(Box::new(volumes.0), Box::new(volumes.1), &small_config())
}

fn contents(store: &mut Store, shelf: &mut Shelf) -> HashMap<Vec<u8>, (Vec<u8>, u64)> {
    let mut all = HashMap::new();
    store.for_each(shelf, |k, v, lsn| drop(all.insert(k.to_vec(), (v.to_vec(), lsn)))).unwrap();
    all
}

/// One write of the source, as it forwards it.
#[derive(Clone, Debug)]
struct Write {
    lsn: u64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

fn write(source: &mut Store, shelf: &mut Shelf, rng: &mut Rng) -> Write {
    let key = format!("k{}", rng.below(60)).into_bytes();
    if rng.chance(0.25) {
        source.delete(shelf, &key, None).unwrap();
        return Write { lsn: source.last_lsn(), key, value: None };
    }
    let len = if rng.chance(0.05) { 6_000 } else { 1 + rng.below(200) as usize };
    let v = value(rng.next_u64(), len);
    let lsn = source.put(shelf, &key, &v, None).unwrap();
    Write { lsn, key, value: Some(v) }
}

/// The replica side: installs what comes, remembering deletes of keys it does not hold.
#[derive(Default)]
struct Building {
    deleted: HashMap<Vec<u8>, u64>,
}

impl Building {
    fn entry(&mut self, store: &mut Store, shelf: &mut Shelf, key: &[u8], v: &[u8], lsn: u64) {
        if self.deleted.get(key).is_some_and(|&d| d > lsn) {
            return;
        }
        store.install(shelf, lsn, Applied::Put { key, value: v, meta: Meta::NONE }, None).unwrap();
    }

    fn forwarded(&mut self, store: &mut Store, shelf: &mut Shelf, w: &Write) {
        match &w.value {
            Some(v) => {
                store
                    .install(
                        shelf,
                        w.lsn,
                        Applied::Put { key: &w.key, value: v, meta: Meta::NONE },
                        None,
                    )
                    .unwrap();
            }
            None => {
                store.install(shelf, w.lsn, Applied::Delete { key: &w.key }, None).unwrap();
                let d = self.deleted.entry(w.key.clone()).or_insert(0);
                *d = (*d).max(w.lsn);
            }
        }
    }
}

#[test]
fn a_snapshot_read_while_writes_go_on_plus_those_writes_rebuilds_the_source_exactly() {
    for seed in 0..40 {
        let mut rng = Rng::from_seed(seed);
        let (mut source, mut source_shelf, _) = fresh("source");
        for _ in 0..300 {
            write(&mut source, &mut source_shelf, &mut rng);
        }
        let base = source.last_lsn();
        let snapshot = source.snapshot(&source_shelf);
        let (mut replica, mut replica_shelf, replica_log) = fresh("replica");
        let mut building = Building::default();
        // Writes made after the snapshot, forwarded in LSN order, and the snapshot's entries
        // as they are read: both in transit, delivered interleaved in any order (an entry read
        // before a write to its key may arrive after that write, or before).
        let mut forwarded: Vec<Write> = Vec::new();
        let mut entries: Vec<(Vec<u8>, Vec<u8>, u64)> = Vec::new();
        let (mut read, mut next_entry, mut next_forward) = (0, 0, 0);
        let mut superseded = 0;
        // How fast each side is delivered varies by seed: either may run far ahead.
        let paces = [0.1, 0.5, 0.9];
        let entry_pace = paces[rng.below(3) as usize];
        let forward_pace = paces[rng.below(3) as usize];
        while read < snapshot.len() || next_entry < entries.len() || next_forward < forwarded.len()
        {
            if forwarded.len() < 200 && rng.chance(0.8) {
                forwarded.push(write(&mut source, &mut source_shelf, &mut rng));
            }
            if read < snapshot.len() && rng.chance(0.5) {
                let last = source.last_lsn();
                match source.snapshot_entry(&mut source_shelf, &snapshot, read).unwrap() {
                    SnapshotRead::Live { key, value, lsn, .. } => {
                        assert!(lsn <= last);
                        entries.push((key.to_vec(), value.to_vec(), lsn));
                    }
                    SnapshotRead::Superseded => superseded += 1,
                    SnapshotRead::Stale => panic!("seed {seed}: no segment was deleted"),
                }
                read += 1;
            }
            let take_entry = next_entry < entries.len()
                && (next_forward == forwarded.len() || rng.chance(entry_pace));
            if take_entry {
                let (key, value, lsn) = &entries[next_entry];
                building.entry(&mut replica, &mut replica_shelf, key, value, *lsn);
                next_entry += 1;
            } else if next_forward < forwarded.len()
                && (read == snapshot.len() || rng.chance(forward_pace))
            {
                let w = forwarded[next_forward].clone();
                building.forwarded(&mut replica, &mut replica_shelf, &w);
                next_forward += 1;
            }
        }
        assert!(forwarded.len() > 30 && superseded > 0, "seed {seed}: writes went on meanwhile");
        let last = forwarded.last().map_or(base, |w| w.lsn);
        replica.raise_lsn(&mut replica_shelf, last).unwrap();
        assert_eq!(replica.last_lsn(), source.last_lsn(), "seed {seed}");
        let want = contents(&mut source, &mut source_shelf);
        assert_eq!(contents(&mut replica, &mut replica_shelf), want, "seed {seed}");
        // And it replays to the same (the last record of a key in log order is its current
        // one, whatever order the LSNs came in).
        replica.flush(&mut replica_shelf).unwrap();
        drop((replica, replica_shelf));
        let (mut again, mut again_shelf, _) = reopen(replica_log);
        let replayed = contents(&mut again, &mut again_shelf);
        assert_eq!(replayed.len(), want.len(), "seed {seed}");
        for (key, (v, lsn)) in &want {
            assert_eq!(replayed.get(key).map(|(v, l)| (v, *l)), Some((v, *lsn)), "seed {seed}");
        }
    }
}

#[test]
fn a_snapshot_says_stale_once_cleaning_deleted_a_segment() {
    let mut rng = Rng::from_seed(7);
    let (mut store, mut shelf, _) = fresh("s");
    for _ in 0..200 {
        write(&mut store, &mut shelf, &mut rng);
    }
    let snapshot = store.snapshot(&shelf);
    assert!(matches!(
        store.snapshot_entry(&mut shelf, &snapshot, 0).unwrap(),
        SnapshotRead::Live { .. } | SnapshotRead::Superseded
    ));
    for _ in 0..2_000 {
        write(&mut store, &mut shelf, &mut rng);
        store.flush(&mut shelf).unwrap();
        if shelf.needs_cleaning() {
            shelf.clean_step(std::slice::from_mut(&mut store), u64::MAX, u64::MAX).unwrap();
        }
    }
    assert_eq!(store.snapshot_entry(&mut shelf, &snapshot, 0).unwrap(), SnapshotRead::Stale);
}

#[test]
fn a_cleared_store_is_empty_also_after_a_restart_and_takes_writes_again() {
    let mut rng = Rng::from_seed(3);
    let (mut store, mut shelf, log) = fresh("c");
    for _ in 0..400 {
        write(&mut store, &mut shelf, &mut rng);
    }
    store.flush(&mut shelf).unwrap();
    assert!(!store.is_empty() && log.0.bytes() > 0);
    let snapshot = store.snapshot(&shelf);
    store.clear(&mut shelf).unwrap();
    assert_eq!((store.len(), store.last_lsn(), store.live_bytes()), (0, 0, 0));
    assert_eq!(store.get(&mut shelf, b"k1").unwrap(), None);
    assert_eq!(store.snapshot_entry(&mut shelf, &snapshot, 0).unwrap(), SnapshotRead::Stale);
    store
        .install(&mut shelf, 9, Applied::Put { key: b"new", value: b"v", meta: Meta::NONE }, None)
        .unwrap();
    store.flush(&mut shelf).unwrap();
    drop((store, shelf));
    let (mut again, mut again_shelf, report) = reopen(log);
    assert!(report.quarantined.is_empty());
    let all = contents(&mut again, &mut again_shelf);
    assert_eq!(all, HashMap::from([(b"new".to_vec(), (b"v".to_vec(), 9))]));
    assert_eq!(again.last_lsn(), 9);
}

#[test]
fn clearing_one_endpoint_of_a_core_leaves_the_others_alone() {
    const ENDPOINTS: u32 = 3;
    let (log, blob_volume) = (MemoryVolume::new("core"), MemoryVolume::new("b"));
    let config = small_config();
    let reopen = || {
        let log = Box::new(log.clone());
        let (stores, shelf, report) =
            open_core(log, Box::new(blob_volume.clone()), &config, ENDPOINTS);
        assert_eq!(report.quarantined, vec![]);
        (stores, shelf)
    };
    let (mut stores, mut shelf) = reopen();
    let mut rng = Rng::from_seed(11);
    for _ in 0..300 {
        for store in &mut stores {
            write(store, &mut shelf, &mut rng);
        }
    }
    // A blob value of its own, whose chunks the clear frees.
    stores[1].put(&mut shelf, b"big", &value(99, 6_000), None).unwrap();
    for store in &mut stores {
        store.flush(&mut shelf).unwrap();
    }
    let want: Vec<_> = stores.iter_mut().map(|s| contents(s, &mut shelf)).collect();
    let lsns: Vec<u64> = stores.iter().map(Store::last_lsn).collect();
    assert!(want.iter().all(|w| w.len() > 10) && lsns.iter().all(|&l| l > 200));
    let snapshots: Vec<_> = stores.iter().map(|s| s.snapshot(&shelf)).collect();
    let (files, dead, chunks) =
        (log.list().unwrap(), shelf.stats().dead_bytes, shelf.blobs().blob_chunks());

    stores[1].clear(&mut shelf).unwrap();
    // Gone at once: every key, the LSN, the bytes; a snapshot taken before reads Stale.
    assert_eq!((stores[1].len(), stores[1].last_lsn(), stores[1].live_bytes()), (0, 0, 0));
    for key in want[1].keys() {
        assert_eq!(stores[1].get(&mut shelf, key).unwrap(), None);
    }
    let read = stores[1].snapshot_entry(&mut shelf, &snapshots[1], 0).unwrap();
    assert_eq!(read, SnapshotRead::Stale);
    // The others keep every key, their LSNs, and their snapshots (no segment was deleted).
    for slot in [0, 2] {
        assert_eq!(contents(&mut stores[slot], &mut shelf), want[slot], "endpoint {slot}");
        assert_eq!(stores[slot].last_lsn(), lsns[slot]);
        for i in 0..snapshots[slot].len() {
            let read = stores[slot].snapshot_entry(&mut shelf, &snapshots[slot], i).unwrap();
            let SnapshotRead::Live { key, value, lsn, .. } = read else {
                panic!("endpoint {slot} entry {i}: {read:?}, and nothing was written since")
            };
            assert_eq!(want[slot].get(key), Some(&(value.to_vec(), lsn)));
        }
    }
    // No file is deleted (the others share them): the cleared records are dead bytes now,
    // and its blob chunks are freed once the clear is durable.
    assert_eq!(log.list().unwrap(), files);
    assert!(shelf.stats().dead_bytes > dead, "{} then {}", dead, shelf.stats().dead_bytes);
    stores[1].flush(&mut shelf).unwrap();
    assert!(shelf.blobs().blob_chunks() < chunks, "the cleared endpoint's chunks freed");
    drop((stores, shelf));

    // Gone after a restart, and after cleaning has freed its records and a restart again.
    for clean in [false, true] {
        let (mut stores, mut shelf) = reopen();
        assert_eq!((stores[1].len(), stores[1].last_lsn()), (0, 0), "clean {clean}");
        for slot in [0, 2] {
            assert_eq!(contents(&mut stores[slot], &mut shelf), want[slot], "clean {clean}");
            assert_eq!(stores[slot].last_lsn(), lsns[slot], "clean {clean}");
        }
        if clean {
            let segments = shelf.stats().segments;
            let mut steps = 0;
            while steps < 100 && shelf.clean_step(&mut stores[..], u64::MAX, u64::MAX).unwrap() > 0
            {
                steps += 1;
            }
            stores[0].flush(&mut shelf).unwrap();
            assert!(shelf.stats().segments < segments);
            assert_eq!(stores[1].len(), 0);
        }
    }
    let (mut stores, mut shelf) = reopen();
    assert_eq!((stores[1].len(), stores[1].last_lsn()), (0, 0), "after cleaning");
    for slot in [0, 2] {
        assert_eq!(contents(&mut stores[slot], &mut shelf), want[slot], "after cleaning");
        assert_eq!(stores[slot].last_lsn(), lsns[slot], "after cleaning");
    }
    assert_eq!(stores[1].put(&mut shelf, b"k", b"again", None).unwrap(), 1);
}

#[test]
fn install_keeps_the_newest_version_of_a_key_whatever_the_order() {
    let (mut store, mut shelf, _) = fresh("i");
    let put = |store: &mut Store, shelf: &mut Shelf, lsn, v: &[u8]| {
        store
            .install(shelf, lsn, Applied::Put { key: b"k", value: v, meta: Meta::NONE }, None)
            .unwrap()
    };
    assert!(put(&mut store, &mut shelf, 5, b"five"));
    assert!(!put(&mut store, &mut shelf, 3, b"three"), "older: ignored");
    assert!(!put(&mut store, &mut shelf, 5, b"again"), "same: ignored");
    assert_eq!(store.get(&mut shelf, b"k").unwrap(), Some((&b"five"[..], 5)));
    assert!(!store.install(&mut shelf, 4, Applied::Delete { key: b"k" }, None).unwrap());
    assert!(store.install(&mut shelf, 8, Applied::Delete { key: b"k" }, None).unwrap());
    assert_eq!(store.get(&mut shelf, b"k").unwrap(), None);
    assert!(!store.install(&mut shelf, 9, Applied::Delete { key: b"absent" }, None).unwrap());
    assert_eq!(store.last_lsn(), 8, "a delete that changed nothing takes no LSN");
    store.raise_lsn(&mut shelf, 9).unwrap();
    assert_eq!(store.last_lsn(), 9);
}

#[test]
fn a_records_digest_names_its_key_lsn_value_and_expiry_and_a_deleted_key_has_none() {
    let (mut store, mut shelf, _) = fresh("digests");
    let meta = Meta { flags: 7, expires_at_ns: 0 };
    let v1 = store.put_with(&mut shelf, b"k", b"one", &meta, None).unwrap();
    store.put(&mut shelf, b"other", b"x", None).unwrap();
    let digest = storage::record_digest(b"k", b"one", v1, &meta);
    assert_eq!(store.newest_digest(&mut shelf, b"k").unwrap(), Some((v1, digest)));
    for (key, value, lsn, meta) in [
        (&b"j"[..], &b"one"[..], v1, meta),
        (b"k", b"onE", v1, meta),
        (b"k", b"one", v1 + 1, meta),
        (b"k", b"one", v1, Meta { flags: 7, expires_at_ns: 1 }),
    ] {
        assert_ne!(storage::record_digest(key, value, lsn, &meta), digest, "{key:?} {lsn}");
    }
    assert_eq!(store.newest_digest(&mut shelf, b"absent").unwrap(), None);
    let through = store.last_lsn();
    store.delete(&mut shelf, b"k", None).unwrap();
    assert_eq!(store.newest_digest(&mut shelf, b"k").unwrap(), None, "deleted");
    store.put(&mut shelf, b"later", b"y", None).unwrap();
    assert_eq!(store.keys_through(&shelf, through).unwrap(), vec![b"other".to_vec()]);
}
