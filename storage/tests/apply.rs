//! A replica's store applies its primary's writes at the primary's LSNs (`Store::apply_at`):
//! same keys, values and versions as the primary, the LSN sequence kept whole (a delete of a
//! key the replica lacks still takes its LSN), and kept across a restart.

mod common;

use common::value;
use storage::{Applied, BlobStore, FileVolume, Meta, Shelf, Stamp, Store, StoreConfig};

fn open(dir: &std::path::Path, name: &str, config: &StoreConfig) -> (Store, Shelf) {
    let (blobs, _) =
        BlobStore::open(Box::new(FileVolume::new(dir.join(format!("{name}-blobs")))), config)
            .expect("blob store opens");
    let log = Box::new(FileVolume::new(dir.join(name)));
    let (shelf, mut stores, _) = Shelf::open(log, blobs, config, 1, 0).expect("log opens");
    (stores.pop().expect("one endpoint"), shelf)
}

#[test]
fn a_replica_applying_in_lsn_order_matches_its_primary_and_keeps_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default();
    let (mut primary, mut primary_shelf) = open(dir.path(), "primary", &config);
    let (mut replica, mut replica_shelf) = open(dir.path(), "replica", &config);
    let big = value(9, 64 << 10);
    let stamp = Stamp { client_id: 1, tracking_id: 2, fingerprint: 3, at_ns: 4 };
    let writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![
        (b"a".to_vec(), Some(b"1".to_vec())),
        (b"b".to_vec(), Some(big.clone())),
        (b"a".to_vec(), Some(b"2".to_vec())),
        (b"b".to_vec(), None),
        (b"c".to_vec(), Some(b"3".to_vec())),
    ];
    for (key, value) in &writes {
        let lsn = match value {
            Some(v) => primary.put(&mut primary_shelf, key, v, Some(&stamp)).unwrap(),
            None => {
                assert!(primary.delete(&mut primary_shelf, key, Some(&stamp)).unwrap());
                primary.last_lsn()
            }
        };
        let applied = match value {
            Some(value) => Applied::Put { key, value, meta: Meta::NONE },
            None => Applied::Delete { key },
        };
        let got = replica.apply_at(&mut replica_shelf, lsn, applied, Some(&stamp)).unwrap();
        assert_eq!(got, lsn);
    }
    assert_eq!(replica.last_lsn(), 5);
    for key in [&b"a"[..], b"b", b"c"] {
        let p = primary.get(&mut primary_shelf, key).unwrap().map(|(v, n)| (v.to_vec(), n));
        let r = replica.get(&mut replica_shelf, key).unwrap().map(|(v, n)| (v.to_vec(), n));
        assert_eq!(p, r, "key {key:?}");
    }
    // A delete of a key this replica does not hold still takes its LSN.
    replica.apply_at(&mut replica_shelf, 6, Applied::Delete { key: b"zz" }, None).unwrap();
    assert_eq!(replica.last_lsn(), 6);
    replica.flush(&mut replica_shelf).unwrap();
    drop(replica);
    let (mut replica, mut replica_shelf) = open(dir.path(), "replica", &config);
    assert_eq!(replica.last_lsn(), 6, "the sequence survives a restart");
    assert_eq!(
        replica.get(&mut replica_shelf, b"a").unwrap().map(|(v, n)| (v.to_vec(), n)),
        Some((b"2".to_vec(), 3))
    );
    assert_eq!(replica.put(&mut replica_shelf, b"d", b"4", None).unwrap(), 7);
}

#[test]
#[should_panic(expected = "writes apply in LSN order")]
fn a_gap_in_the_sequence_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default();
    let (mut replica, mut shelf) = open(dir.path(), "replica", &config);
    let _ = replica.apply_at(
        &mut shelf,
        2,
        Applied::Put { key: b"a", value: b"1", meta: Meta::NONE },
        None,
    );
}
