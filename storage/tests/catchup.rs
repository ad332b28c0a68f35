//! A replica built from another while it keeps serving: a snapshot read a few entries at a
//! time, the writes made meanwhile applied out of order with `Store::install` (newest
//! version wins, a caller-kept memory of deletes), and `Store::clear` to start again.

mod common;

use common::{open, small_config, value};
use std::collections::HashMap;
use storage::{Applied, BlobStore, MemoryVolume, Meta, SnapshotRead, Store};
use testkit::Rng;

/// A new store and its blob store, with their volumes (to open them again).
fn fresh(name: &str) -> (Store, BlobStore, (MemoryVolume, MemoryVolume)) {
    let (log, blob_volume) = (MemoryVolume::new(name), MemoryVolume::new("b"));
    let (store, blobs, _) =
        open(Box::new(log.clone()), Box::new(blob_volume.clone()), &small_config());
    (store, blobs, (log, blob_volume))
}

fn reopen(volumes: (MemoryVolume, MemoryVolume)) -> (Store, BlobStore, storage::RecoveryReport) {
    open(Box::new(volumes.0), Box::new(volumes.1), &small_config())
}

fn contents(store: &mut Store, blobs: &mut BlobStore) -> HashMap<Vec<u8>, (Vec<u8>, u64)> {
    let mut all = HashMap::new();
    store.for_each(blobs, |k, v, lsn| drop(all.insert(k.to_vec(), (v.to_vec(), lsn)))).unwrap();
    all
}

/// One write of the source, as it forwards it.
#[derive(Clone, Debug)]
struct Write {
    lsn: u64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

fn write(source: &mut Store, blobs: &mut BlobStore, rng: &mut Rng) -> Write {
    let key = format!("k{}", rng.below(60)).into_bytes();
    if rng.chance(0.25) {
        source.delete(blobs, &key, None).unwrap();
        return Write { lsn: source.last_lsn(), key, value: None };
    }
    let len = if rng.chance(0.05) { 6_000 } else { 1 + rng.below(200) as usize };
    let v = value(rng.next_u64(), len);
    let lsn = source.put(blobs, &key, &v, None).unwrap();
    Write { lsn, key, value: Some(v) }
}

/// The replica side: installs what comes, remembering deletes of keys it does not hold.
#[derive(Default)]
struct Building {
    deleted: HashMap<Vec<u8>, u64>,
}

impl Building {
    fn entry(&mut self, store: &mut Store, blobs: &mut BlobStore, key: &[u8], v: &[u8], lsn: u64) {
        if self.deleted.get(key).is_some_and(|&d| d > lsn) {
            return;
        }
        store.install(blobs, lsn, Applied::Put { key, value: v, meta: Meta::NONE }, None).unwrap();
    }

    fn forwarded(&mut self, store: &mut Store, blobs: &mut BlobStore, w: &Write) {
        match &w.value {
            Some(v) => {
                store
                    .install(
                        blobs,
                        w.lsn,
                        Applied::Put { key: &w.key, value: v, meta: Meta::NONE },
                        None,
                    )
                    .unwrap();
            }
            None => {
                store.install(blobs, w.lsn, Applied::Delete { key: &w.key }, None).unwrap();
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
        let (mut source, mut source_blobs, _) = fresh("source");
        for _ in 0..300 {
            write(&mut source, &mut source_blobs, &mut rng);
        }
        let base = source.last_lsn();
        let snapshot = source.snapshot();
        let (mut replica, mut replica_blobs, replica_log) = fresh("replica");
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
                forwarded.push(write(&mut source, &mut source_blobs, &mut rng));
            }
            if read < snapshot.len() && rng.chance(0.5) {
                let last = source.last_lsn();
                match source.snapshot_entry(&mut source_blobs, &snapshot, read).unwrap() {
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
                building.entry(&mut replica, &mut replica_blobs, key, value, *lsn);
                next_entry += 1;
            } else if next_forward < forwarded.len()
                && (read == snapshot.len() || rng.chance(forward_pace))
            {
                let w = forwarded[next_forward].clone();
                building.forwarded(&mut replica, &mut replica_blobs, &w);
                next_forward += 1;
            }
        }
        assert!(forwarded.len() > 30 && superseded > 0, "seed {seed}: writes went on meanwhile");
        let last = forwarded.last().map_or(base, |w| w.lsn);
        replica.raise_lsn(last);
        assert_eq!(replica.last_lsn(), source.last_lsn(), "seed {seed}");
        let want = contents(&mut source, &mut source_blobs);
        assert_eq!(contents(&mut replica, &mut replica_blobs), want, "seed {seed}");
        // And it replays to the same (the last record of a key in log order is its current
        // one, whatever order the LSNs came in).
        replica.flush(&mut replica_blobs).unwrap();
        drop(replica);
        let (mut again, mut again_blobs, _) = reopen(replica_log);
        let replayed = contents(&mut again, &mut again_blobs);
        assert_eq!(replayed.len(), want.len(), "seed {seed}");
        for (key, (v, lsn)) in &want {
            assert_eq!(replayed.get(key).map(|(v, l)| (v, *l)), Some((v, *lsn)), "seed {seed}");
        }
    }
}

#[test]
fn a_snapshot_says_stale_once_compaction_deleted_a_segment() {
    let mut rng = Rng::from_seed(7);
    let (mut store, mut blobs, _) = fresh("s");
    for _ in 0..200 {
        write(&mut store, &mut blobs, &mut rng);
    }
    let snapshot = store.snapshot();
    assert!(matches!(
        store.snapshot_entry(&mut blobs, &snapshot, 0).unwrap(),
        SnapshotRead::Live { .. } | SnapshotRead::Superseded
    ));
    for _ in 0..2_000 {
        write(&mut store, &mut blobs, &mut rng);
        store.flush(&mut blobs).unwrap();
        if store.needs_compaction() {
            store.compact_step(&mut blobs, u64::MAX, u64::MAX).unwrap();
        }
    }
    assert_eq!(store.snapshot_entry(&mut blobs, &snapshot, 0).unwrap(), SnapshotRead::Stale);
}

#[test]
fn a_cleared_store_is_empty_also_after_a_restart_and_takes_writes_again() {
    let mut rng = Rng::from_seed(3);
    let (mut store, mut blobs, log) = fresh("c");
    for _ in 0..400 {
        write(&mut store, &mut blobs, &mut rng);
    }
    store.flush(&mut blobs).unwrap();
    assert!(!store.is_empty() && log.0.bytes() > 0);
    let snapshot = store.snapshot();
    store.clear(&mut blobs).unwrap();
    assert_eq!((store.len(), store.last_lsn(), store.live_bytes()), (0, 0, 0));
    assert_eq!(store.get(&mut blobs, b"k1").unwrap(), None);
    assert_eq!(store.snapshot_entry(&mut blobs, &snapshot, 0).unwrap(), SnapshotRead::Stale);
    store
        .install(&mut blobs, 9, Applied::Put { key: b"new", value: b"v", meta: Meta::NONE }, None)
        .unwrap();
    store.flush(&mut blobs).unwrap();
    drop(store);
    let (mut again, mut again_blobs, report) = reopen(log);
    assert!(report.quarantine.is_none());
    let all = contents(&mut again, &mut again_blobs);
    assert_eq!(all, HashMap::from([(b"new".to_vec(), (b"v".to_vec(), 9))]));
    assert_eq!(again.last_lsn(), 9);
}

#[test]
fn install_keeps_the_newest_version_of_a_key_whatever_the_order() {
    let (mut store, mut blobs, _) = fresh("i");
    let put = |store: &mut Store, blobs: &mut BlobStore, lsn, v: &[u8]| {
        store
            .install(blobs, lsn, Applied::Put { key: b"k", value: v, meta: Meta::NONE }, None)
            .unwrap()
    };
    assert!(put(&mut store, &mut blobs, 5, b"five"));
    assert!(!put(&mut store, &mut blobs, 3, b"three"), "older: ignored");
    assert!(!put(&mut store, &mut blobs, 5, b"again"), "same: ignored");
    assert_eq!(store.get(&mut blobs, b"k").unwrap(), Some((&b"five"[..], 5)));
    assert!(!store.install(&mut blobs, 4, Applied::Delete { key: b"k" }, None).unwrap());
    assert!(store.install(&mut blobs, 8, Applied::Delete { key: b"k" }, None).unwrap());
    assert_eq!(store.get(&mut blobs, b"k").unwrap(), None);
    assert!(!store.install(&mut blobs, 9, Applied::Delete { key: b"absent" }, None).unwrap());
    assert_eq!(store.last_lsn(), 8, "a delete that changed nothing takes no LSN");
    store.raise_lsn(9);
    assert_eq!(store.last_lsn(), 9);
}

#[test]
fn a_records_digest_names_its_key_lsn_value_and_expiry_and_a_deleted_key_has_none() {
    let (mut store, mut blobs, _) = fresh("digests");
    let meta = Meta { flags: 7, expires_at_ns: 0 };
    let v1 = store.put_with(&mut blobs, b"k", b"one", &meta, None).unwrap();
    store.put(&mut blobs, b"other", b"x", None).unwrap();
    let digest = storage::record_digest(b"k", b"one", v1, &meta);
    assert_eq!(store.newest_digest(&mut blobs, b"k").unwrap(), Some((v1, digest)));
    for (key, value, lsn, meta) in [
        (&b"j"[..], &b"one"[..], v1, meta),
        (b"k", b"onE", v1, meta),
        (b"k", b"one", v1 + 1, meta),
        (b"k", b"one", v1, Meta { flags: 7, expires_at_ns: 1 }),
    ] {
        assert_ne!(storage::record_digest(key, value, lsn, &meta), digest, "{key:?} {lsn}");
    }
    assert_eq!(store.newest_digest(&mut blobs, b"absent").unwrap(), None);
    let through = store.last_lsn();
    store.delete(&mut blobs, b"k", None).unwrap();
    assert_eq!(store.newest_digest(&mut blobs, b"k").unwrap(), None, "deleted");
    store.put(&mut blobs, b"later", b"y", None).unwrap();
    assert_eq!(store.keys_through(through).unwrap(), vec![b"other".to_vec()]);
}
