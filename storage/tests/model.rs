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

fn check(store: &mut storage::Store, shelf: &mut storage::Shelf, state: &State) {
    assert_eq!(store.len(), state.map.len());
    let live: u64 = state.map.iter().map(|(k, (v, _))| (k.len() + v.len()) as u64).sum();
    assert_eq!(store.live_bytes(), live);
    for k in 0..24u8 {
        let key = key_of(k);
        let got = store.get(shelf, &key).unwrap().map(|(v, ver)| (v.to_vec(), ver));
        assert_eq!(got.as_ref(), state.map.get(&key), "key {k}");
    }
}

fn run(ops: Vec<Op>) {
    let config = small_config();
    let (log_volume, blob_volume) = (MemoryVolume::new("log"), MemoryVolume::new("blob"));
    let reopen = || open(Box::new(log_volume.clone()), Box::new(blob_volume.clone()), &config);
    let (mut store, mut shelf, _) = reopen();
    let mut state = State::default();
    let mut durable = State::default();
    for op in ops {
        match op {
            Op::Put { key, seed, len } => {
                let v = value(seed.into(), len);
                let version = store.put(&mut shelf, &key_of(key), &v, None).unwrap();
                state.last_version += 1;
                assert_eq!(version, state.last_version);
                state.map.insert(key_of(key), (v, version));
            }
            Op::Delete { key } => {
                let existed = store.delete(&mut shelf, &key_of(key), None).unwrap();
                assert_eq!(existed, state.map.remove(&key_of(key)).is_some());
                state.last_version += u64::from(existed);
            }
            Op::Cas { key, stale, seed, len } => {
                let current = state.map.get(&key_of(key)).map_or(0, |e| e.1);
                let expected = if stale { current + 1 } else { current };
                let v = value(seed.into(), len);
                let outcome = store.cas(&mut shelf, &key_of(key), expected, &v, None).unwrap();
                if stale {
                    assert_eq!(outcome, CasOutcome::Mismatch(current));
                } else {
                    state.last_version += 1;
                    assert_eq!(outcome, CasOutcome::Swapped(state.last_version));
                    state.map.insert(key_of(key), (v, state.last_version));
                }
            }
            Op::Flush => {
                store.flush(&mut shelf).unwrap();
                durable = state.clone();
            }
            Op::Compact { budget } => {
                shelf.clean_step(std::slice::from_mut(&mut store), budget, u64::MAX).unwrap();
                store.flush(&mut shelf).unwrap();
                durable = state.clone();
            }
            Op::Restart | Op::PowerCut => {
                if matches!(op, Op::Restart) {
                    store.flush(&mut shelf).unwrap();
                    durable = state.clone();
                }
                drop((store, shelf));
                let report;
                (store, shelf, report) = reopen();
                assert_eq!(report.quarantined, vec![]);
                state = durable.clone();
                // Versions are never reused: the next write continues past the durable ones.
            }
        }
        check(&mut store, &mut shelf, &state);
    }
    store.flush(&mut shelf).unwrap();
    // Everything deleted and compacted away: the blob tier is empty again.
    for k in 0..24u8 {
        store.delete(&mut shelf, &key_of(k), None).unwrap();
    }
    store.flush(&mut shelf).unwrap();
    assert_eq!((shelf.blobs().blob_bytes(), shelf.blobs().blob_chunks()), (0, 0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_a_btreemap(ops in proptest::collection::vec(op(), 1..300)) {
        run(ops);
    }
}

// ---- Several endpoints sharing one core's log ----

/// Endpoints sharing the log in the core model.
const ENDPOINTS: u8 = 4;
/// Keys per endpoint.
const CORE_KEYS: u8 = 12;

#[derive(Clone, Debug)]
enum CoreOp {
    Put {
        endpoint: u8,
        key: u8,
        seed: u8,
        len: usize,
    },
    Delete {
        endpoint: u8,
        key: u8,
    },
    Cas {
        endpoint: u8,
        key: u8,
        stale: bool,
        seed: u8,
    },
    /// Empties the endpoint (a drop record): its LSN starts again from 0.
    Clear {
        endpoint: u8,
    },
    /// One endpoint's flush makes every endpoint's writes durable (group commit).
    Flush {
        endpoint: u8,
    },
    /// One cleaning step, no flush: a power cut may come in the middle of a pass.
    Clean {
        budget: u64,
    },
    /// Flush, then restart: everything survives.
    Restart,
    /// Restart on the durable images only: what was synced survives.
    PowerCut,
    /// Flush, then an I/O error (`countdown` operations on, its write torn or not) while
    /// cleaning runs pass after pass, then a power cut: cleaning changes nothing a reader
    /// sees, so everything flushed is there, whatever it was doing when the error came.
    CrashWhileCleaning {
        countdown: u64,
        torn: bool,
        budget: u64,
    },
}

/// Mostly inline values up to just under the blob threshold (4 KiB): a few writes fill a
/// segment, so cleaning and crashes meet sealed segments often.
fn core_length() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..4000, 2 => 4096usize..20_000]
}

fn core_op() -> impl Strategy<Value = CoreOp> {
    let endpoint = 0..ENDPOINTS;
    let key = 0..CORE_KEYS;
    prop_oneof![
        12 => (endpoint.clone(), key.clone(), 0u8..4, core_length())
            .prop_map(|(endpoint, key, seed, len)| CoreOp::Put { endpoint, key, seed, len }),
        4 => (endpoint.clone(), key.clone())
            .prop_map(|(endpoint, key)| CoreOp::Delete { endpoint, key }),
        2 => (endpoint.clone(), key, any::<bool>(), 0u8..4)
            .prop_map(|(endpoint, key, stale, seed)| CoreOp::Cas { endpoint, key, stale, seed }),
        1 => endpoint.clone().prop_map(|endpoint| CoreOp::Clear { endpoint }),
        3 => endpoint.prop_map(|endpoint| CoreOp::Flush { endpoint }),
        3 => prop_oneof![Just(u64::MAX), 1u64..20_000].prop_map(|budget| CoreOp::Clean { budget }),
        1 => Just(CoreOp::Restart),
        2 => Just(CoreOp::PowerCut),
        2 => (0u64..24, any::<bool>(), prop_oneof![Just(u64::MAX), 1u64..20_000])
            .prop_map(|(countdown, torn, budget)| CoreOp::CrashWhileCleaning { countdown, torn, budget }),
    ]
}

fn core_key(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

/// What one endpoint's model holds: its keys and its LSN.
type Core = Vec<State>;

/// Every endpoint against its model: keys, values, versions, sizes and LSN.
fn check_core(stores: &mut [storage::Store], shelf: &mut storage::Shelf, core: &Core) {
    for (slot, (store, state)) in stores.iter_mut().zip(core).enumerate() {
        assert_eq!(store.len(), state.map.len(), "endpoint {slot}");
        let live: u64 = state.map.iter().map(|(k, (v, _))| (k.len() + v.len()) as u64).sum();
        assert_eq!(store.live_bytes(), live, "endpoint {slot}");
        assert_eq!(store.last_lsn(), state.last_version, "endpoint {slot}");
        for k in 0..CORE_KEYS {
            let key = core_key(k);
            let got = store.get(shelf, &key).unwrap().map(|(v, ver)| (v.to_vec(), ver));
            assert_eq!(got.as_ref(), state.map.get(&key), "endpoint {slot} key {k}");
        }
    }
}

/// Applies one write op to the store and the model.
fn apply_write(
    store: &mut storage::Store,
    shelf: &mut storage::Shelf,
    state: &mut State,
    op: &CoreOp,
) {
    match *op {
        CoreOp::Put { key, seed, len, .. } => {
            let v = value(seed.into(), len);
            let version = store.put(shelf, &core_key(key), &v, None).unwrap();
            state.last_version += 1;
            assert_eq!(version, state.last_version, "versions never go back");
            state.map.insert(core_key(key), (v, version));
        }
        CoreOp::Delete { key, .. } => {
            let existed = store.delete(shelf, &core_key(key), None).unwrap();
            assert_eq!(existed, state.map.remove(&core_key(key)).is_some());
            state.last_version += u64::from(existed);
        }
        CoreOp::Cas { key, stale, seed, .. } => {
            let current = state.map.get(&core_key(key)).map_or(0, |e| e.1);
            let expected = if stale { current + 1 } else { current };
            let v = value(seed.into(), 100 + usize::from(seed) * 300);
            let outcome = store.cas(shelf, &core_key(key), expected, &v, None).unwrap();
            if stale {
                assert_eq!(outcome, CasOutcome::Mismatch(current));
            } else {
                state.last_version += 1;
                assert_eq!(outcome, CasOutcome::Swapped(state.last_version));
                state.map.insert(core_key(key), (v, state.last_version));
            }
        }
        CoreOp::Clear { .. } => {
            store.clear(shelf).unwrap();
            *state = State::default();
        }
        _ => unreachable!("not a write"),
    }
}

fn run_core(ops: Vec<CoreOp>) {
    use std::sync::Arc;
    use storage::{Faults, FaultyVolume};
    let config = small_config();
    let (log_volume, blob_volume) = (MemoryVolume::new("log"), MemoryVolume::new("blob"));
    let faults = Faults::new();
    let reopen = |faults: &Arc<Faults>| {
        let faulty = |v: &MemoryVolume| Box::new(FaultyVolume::new(v.clone(), faults.clone()));
        let (stores, shelf, report) =
            common::open_core(faulty(&log_volume), faulty(&blob_volume), &config, ENDPOINTS.into());
        assert_eq!(report.quarantined, vec![]);
        (stores, shelf)
    };
    let (mut stores, mut shelf) = reopen(&faults);
    let mut core: Core = vec![State::default(); ENDPOINTS.into()];
    let mut durable = core.clone();
    for op in ops {
        match op {
            CoreOp::Put { endpoint, .. }
            | CoreOp::Delete { endpoint, .. }
            | CoreOp::Cas { endpoint, .. }
            | CoreOp::Clear { endpoint } => {
                let slot = usize::from(endpoint);
                apply_write(&mut stores[slot], &mut shelf, &mut core[slot], &op);
            }
            CoreOp::Flush { endpoint } => stores[usize::from(endpoint)].flush(&mut shelf).unwrap(),
            CoreOp::Clean { budget } => {
                shelf.clean_step(&mut stores[..], budget, u64::MAX).unwrap();
            }
            CoreOp::Restart | CoreOp::PowerCut | CoreOp::CrashWhileCleaning { .. } => {
                if !matches!(op, CoreOp::PowerCut) {
                    for store in &mut stores {
                        store.flush(&mut shelf).unwrap();
                    }
                    durable = core.clone();
                }
                if let CoreOp::CrashWhileCleaning { countdown, torn, budget } = op {
                    faults.tear_writes(torn);
                    faults.fail_after(countdown);
                    for _ in 0..16 {
                        match shelf.clean_step(&mut stores[..], budget, u64::MAX) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                    faults.heal();
                }
                drop((stores, shelf));
                (stores, shelf) = reopen(&faults);
                core = durable.clone();
            }
        }
        // Nothing left to sync: every write so far is durable (whoever's flush or cleaning
        // pass synced it).
        if !shelf.needs_sync() {
            durable = core.clone();
        }
        check_core(&mut stores, &mut shelf, &core);
    }
    // Everything deleted and cleaned away: the blob tier is empty and one segment is left.
    for (slot, store) in stores.iter_mut().enumerate() {
        for k in 0..CORE_KEYS {
            let mut state = core[slot].clone();
            apply_write(store, &mut shelf, &mut state, &CoreOp::Delete { endpoint: 0, key: k });
            core[slot] = state;
        }
        store.flush(&mut shelf).unwrap();
    }
    assert_eq!((shelf.blobs().blob_bytes(), shelf.blobs().blob_chunks()), (0, 0));
    // (Counted in segments, not by `clean_step` answering 0: it answers 0 also when it
    // retires a sealed segment holding no record, which a power cut can leave behind.)
    let mut steps = 0;
    while steps < 200 && shelf.stats().segments > 1 {
        shelf.clean_step(&mut stores[..], u64::MAX, u64::MAX).unwrap();
        steps += 1;
    }
    // (None at all if nothing was ever written.)
    assert!(shelf.stats().segments <= 1, "cleaning reclaims every dead segment");
    for store in &mut stores {
        store.flush(&mut shelf).unwrap();
    }
    drop((stores, shelf));
    let (mut stores, mut shelf) = reopen(&faults);
    check_core(&mut stores, &mut shelf, &core);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn a_core_of_endpoints_matches_a_model_each_through_cleaning_and_crashes(
        ops in proptest::collection::vec(core_op(), 1..300)
    ) {
        run_core(ops);
    }
}
