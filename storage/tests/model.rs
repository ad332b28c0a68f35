//! The store against a `BTreeMap` reference model over random put/delete/CAS/flush/
//! compact/restart/power-cut sequences, with blob-sized values among the small ones.

mod common;

use common::{open, small_config, value};
use proptest::prelude::*;
use std::collections::BTreeMap;
use storage::{CasOutcome, MemoryVolume};

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: u8,
        seed: u8,
        len: usize,
    },
    Delete {
        key: u8,
    },
    Cas {
        key: u8,
        stale: bool,
        seed: u8,
        len: usize,
    },
    Flush,
    Compact {
        budget: u64,
    },
    /// Flush, then restart: everything survives.
    Restart,
    /// Restart without a flush, on the durable images only: what was flushed survives.
    PowerCut,
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..1500, 2 => 4096usize..40_000, 1 => Just(4096usize)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0u8..24, 0u8..4, length()).prop_map(|(key, seed, len)| Op::Put { key, seed, len }),
        4 => (0u8..24).prop_map(|key| Op::Delete { key }),
        3 => (0u8..24, any::<bool>(), 0u8..4, length())
            .prop_map(|(key, stale, seed, len)| Op::Cas { key, stale, seed, len }),
        3 => Just(Op::Flush),
        3 => (1u64..100_000).prop_map(|budget| Op::Compact { budget }),
        1 => Just(Op::Restart),
        1 => Just(Op::PowerCut),
    ]
}

type Model = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

/// The model state plus its version counter.
#[derive(Clone, Default)]
struct State {
    map: Model,
    last_version: u64,
}

fn key_of(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

fn check(store: &mut storage::Store, blobs: &mut storage::BlobStore, state: &State) {
    assert_eq!(store.len(), state.map.len());
    let live: u64 = state.map.iter().map(|(k, (v, _))| (k.len() + v.len()) as u64).sum();
    assert_eq!(store.live_bytes(), live);
    for k in 0..24u8 {
        let key = key_of(k);
        let got = store.get(blobs, &key).unwrap().map(|(v, ver)| (v.to_vec(), ver));
        assert_eq!(got.as_ref(), state.map.get(&key), "key {k}");
    }
}

fn run(ops: Vec<Op>) {
    let config = small_config();
    let (log_volume, blob_volume) = (MemoryVolume::new("log"), MemoryVolume::new("blob"));
    let reopen = || open(Box::new(log_volume.clone()), Box::new(blob_volume.clone()), &config);
    let (mut store, mut blobs, _) = reopen();
    let mut state = State::default();
    let mut durable = State::default();
    for op in ops {
        match op {
            Op::Put { key, seed, len } => {
                let v = value(seed.into(), len);
                let version = store.put(&mut blobs, &key_of(key), &v, None).unwrap();
                state.last_version += 1;
                assert_eq!(version, state.last_version);
                state.map.insert(key_of(key), (v, version));
            }
            Op::Delete { key } => {
                let existed = store.delete(&mut blobs, &key_of(key), None).unwrap();
                assert_eq!(existed, state.map.remove(&key_of(key)).is_some());
                state.last_version += u64::from(existed);
            }
            Op::Cas { key, stale, seed, len } => {
                let current = state.map.get(&key_of(key)).map_or(0, |e| e.1);
                let expected = if stale { current + 1 } else { current };
                let v = value(seed.into(), len);
                let outcome = store.cas(&mut blobs, &key_of(key), expected, &v, None).unwrap();
                if stale {
                    assert_eq!(outcome, CasOutcome::Mismatch(current));
                } else {
                    state.last_version += 1;
                    assert_eq!(outcome, CasOutcome::Swapped(state.last_version));
                    state.map.insert(key_of(key), (v, state.last_version));
                }
            }
            Op::Flush => {
                store.flush(&mut blobs).unwrap();
                durable = state.clone();
            }
            Op::Compact { budget } => {
                store.compact_step(&mut blobs, budget, u64::MAX).unwrap();
                store.flush(&mut blobs).unwrap();
                durable = state.clone();
            }
            Op::Restart | Op::PowerCut => {
                if matches!(op, Op::Restart) {
                    store.flush(&mut blobs).unwrap();
                    durable = state.clone();
                }
                drop((store, blobs));
                let report;
                (store, blobs, report) = reopen();
                assert_eq!(report.quarantine, None);
                state = durable.clone();
                // Versions are never reused: the next write continues past the durable ones.
            }
        }
        check(&mut store, &mut blobs, &state);
    }
    store.flush(&mut blobs).unwrap();
    // Everything deleted and compacted away: the blob tier is empty again.
    for k in 0..24u8 {
        store.delete(&mut blobs, &key_of(k), None).unwrap();
    }
    store.flush(&mut blobs).unwrap();
    assert_eq!((blobs.blob_bytes(), blobs.blob_chunks()), (0, 0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_a_btreemap(ops in proptest::collection::vec(op(), 1..300)) {
        run(ops);
    }
}
