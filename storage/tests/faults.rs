//! A fault-injecting device: countdowns to an I/O error (plain and torn) and a full disk.
//! After any failure the log is poisoned, and every acknowledged write survives a restart.

mod common;

use common::{open, small_config, value};
use std::collections::BTreeMap;
use storage::{Faults, FaultyVolume, Limit, MemoryVolume, StoreError};

type Acked = BTreeMap<Vec<u8>, Vec<u8>>;
type Pending = Vec<(Vec<u8>, Vec<u8>)>;

/// Writes batches until a failure, acknowledging (recording) a batch only after its flush.
/// Returns what was acknowledged, the unacknowledged writes of the failed batch (a prefix of
/// which may have reached the disk) and the error that stopped it.
fn run_until_failure(
    log: &MemoryVolume,
    blob: &MemoryVolume,
    faults: &std::sync::Arc<Faults>,
    arm: impl Fn(&Faults),
) -> (Acked, Pending, StoreError) {
    let config = small_config();
    let faulty = |v: &MemoryVolume| Box::new(FaultyVolume::new(v.clone(), faults.clone()));
    let (mut store, mut shelf, _) = open(faulty(log), faulty(blob), &config);
    arm(faults);
    let mut acked = BTreeMap::new();
    for batch in 0..400u64 {
        let mut pending = Vec::new();
        for i in 0..8u64 {
            let k = format!("k{}", (batch * 8 + i) % 97).into_bytes();
            let len = if i == 3 { 6000 } else { 200 };
            let v = value(batch * 8 + i, len);
            match store.put(&mut shelf, &k, &v, None) {
                Ok(_) => pending.push((k, v)),
                Err(e) => return (acked, pending, e),
            }
        }
        match store.flush(&mut shelf) {
            Ok(()) => acked.extend(pending),
            Err(e) => {
                // Poisoned for good: no silent retry, the next write and flush fail too.
                assert_eq!(store.flush(&mut shelf), Err(e));
                assert_eq!(store.put(&mut shelf, b"k0", b"x", None), Err(e));
                assert_eq!(store.failure(&shelf), Some(e));
                return (acked, pending, e);
            }
        }
    }
    panic!("the fault never fired");
}

fn check_after_restart(
    log: &MemoryVolume,
    blob: &MemoryVolume,
    acked: &Acked,
    pending: &[(Vec<u8>, Vec<u8>)],
) {
    let config = small_config();
    let (mut store, mut shelf, report) =
        open(Box::new(log.clone()), Box::new(blob.clone()), &config);
    assert_eq!(report.quarantined, vec![]);
    for (k, v) in acked {
        let got = store.get(&mut shelf, k).unwrap().map(|(v, _)| v.to_vec());
        let got = got.expect("an acknowledged key is present");
        let newer = pending.iter().any(|(pk, pv)| pk == k && *pv == got);
        assert!(got == *v || newer, "acknowledged {:?} lost", String::from_utf8_lossy(k));
    }
    // It serves writes again.
    store.put(&mut shelf, b"after", b"restart", None).unwrap();
    store.flush(&mut shelf).unwrap();
}

#[test]
fn countdown_to_io_error_poisons_and_loses_nothing_acknowledged() {
    for torn in [false, true] {
        for n in (0..300).step_by(7) {
            let (log, blob) = (MemoryVolume::new("log"), MemoryVolume::new("blob"));
            let faults = Faults::new();
            faults.tear_writes(torn);
            let (acked, pending, error) =
                run_until_failure(&log, &blob, &faults, |f| f.fail_after(n));
            assert_eq!(error, StoreError::Poisoned, "countdown {n}");
            faults.heal();
            check_after_restart(&log, &blob, &acked, &pending);
        }
    }
}

#[test]
fn full_disk_is_no_space_then_serves_after_space_is_freed() {
    for space in [0u64, 3_000, 50_000, 200_000] {
        let (log, blob) = (MemoryVolume::new("log"), MemoryVolume::new("blob"));
        let faults = Faults::new();
        let (acked, pending, error) =
            run_until_failure(&log, &blob, &faults, |f| f.limit_space(space));
        assert_eq!(error, StoreError::NoSpace, "space {space}");
        faults.heal();
        check_after_restart(&log, &blob, &acked, &pending);
    }
}

/// Out of descriptors (EMFILE) or maps (ENOMEM) where a segment is made: the write is refused
/// as `Exhausted`, nothing changed, reads go on, nothing is poisoned; once the limit lifts the
/// same store takes writes again, and a restart finds every acknowledged write.
#[test]
fn a_limit_at_a_new_segment_refuses_the_write_cleanly_and_lifts() {
    for (errno, limit) in [(libc::EMFILE, Limit::OpenFiles), (libc::ENFILE, Limit::SystemOpenFiles)]
    {
        let (log, blob) = (MemoryVolume::new("log"), MemoryVolume::new("blob"));
        let faults = Faults::new();
        let config = small_config();
        let faulty = |v: &MemoryVolume| Box::new(FaultyVolume::new(v.clone(), faults.clone()));
        let (mut store, mut shelf, _) = open(faulty(&log), faulty(&blob), &config);
        faults.refuse_creates(errno);
        // The first write needs the first segment: refused, and every retry too.
        for _ in 0..3 {
            let refused = store.put(&mut shelf, b"first", b"v", None);
            assert_eq!(refused, Err(StoreError::Exhausted(limit)));
        }
        assert_eq!(store.failure(&shelf), None, "a limit does not poison");
        assert_eq!((store.stats().limit_refusals, store.limit()), (3, Some(limit)));
        faults.heal();
        let mut acked = BTreeMap::new();
        let mut refused_at_roll = 0;
        for i in 0..400u64 {
            let k = format!("k{}", i % 50).into_bytes();
            let v = value(i, 300);
            // A limit again from the 100th write on, for 100 writes: some need a segment.
            if i == 100 {
                faults.refuse_creates(errno);
            }
            if i == 200 {
                faults.heal();
            }
            match store.put(&mut shelf, &k, &v, None) {
                Ok(_) => {
                    store.flush(&mut shelf).expect("flush");
                    acked.insert(k, v);
                }
                Err(e) => {
                    assert_eq!(e, StoreError::Exhausted(limit), "write {i}");
                    assert!((100..200).contains(&i), "refused only while limited: {i}");
                    refused_at_roll += 1;
                    // Reads are served meanwhile.
                    let (k0, v0) = acked.iter().next().expect("some acknowledged");
                    let got = store.get(&mut shelf, k0).unwrap().map(|(v, _)| v.to_vec());
                    assert_eq!(got.as_ref(), Some(v0));
                }
            }
        }
        assert!(refused_at_roll > 0, "some write of 100..200 needed a new segment");
        assert_eq!(store.failure(&shelf), None);
        for (k, v) in &acked {
            let got = store.get(&mut shelf, k).unwrap().map(|(v, _)| v.to_vec());
            assert_eq!(got.as_ref(), Some(v));
        }
        drop((store, shelf));
        check_after_restart(&log, &blob, &acked, &[]);
    }
}
