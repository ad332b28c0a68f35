//! The core routes by the map's ranges, takes map changes at batch boundaries, and refuses to
//! serve a sender that knows a newer map than it does.

use super::*;
use crate::{MapChange, MapInbox, MapOutcome};
use proto::MapEntry;

fn core_addr(core: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + core))
}

/// The 16-partition, 2-core map of `Harness::new(2, 0)`, with `changes` of (partition, core)
/// applied, at `epoch`.
fn map_with(epoch: u64, changes: &[(u32, u16)]) -> PartitionMap {
    let layout = NodeLayout::new(16, (0..2).map(core_addr).collect()).unwrap();
    let mut map = layout.map();
    map.epoch = epoch;
    for &(partition, core) in changes {
        map.entries[partition as usize].addr = core_addr(core);
    }
    map
}

fn key_in(partition: u32) -> Vec<u8> {
    (0..)
        .map(|i| format!("k{i}").into_bytes())
        .find(|k| partition_of(key_hash(k), 16) == partition)
        .unwrap()
}

fn put(h: &mut Harness, key: &[u8]) -> HeaderFields {
    let mut request = h.request(Opcode::Put, key, b"v");
    request.total_len = 1;
    h.one(request, key, b"v").0
}

#[test]
fn a_map_change_moves_partitions_between_cores_at_a_batch_boundary() {
    let mut h = Harness::new(2, 0);
    // Partition 2 is core 0's, partition 3 core 1's.
    let (two, three) = (key_in(2), key_in(3));
    assert_eq!(put(&mut h, &two).status, 0);
    assert_eq!(put(&mut h, &three).status, Status::WrongOwner as u16);

    let (changes, inbox) = std::sync::mpsc::channel();
    let (outcomes, results) = std::sync::mpsc::channel();
    h.core.set_map_inbox(MapInbox { changes: inbox, outcomes });
    let map = map_with(2, &[(2, 1), (3, 0)]);
    changes.send(MapChange { map: map.clone(), added: vec![3] }).unwrap();
    // Not before the batch ends.
    assert_eq!(put(&mut h, &three).status, Status::WrongOwner as u16);
    h.core.end_batch(2_000, &mut Wire::default());
    let MapOutcome::Applied { epoch, dropped } = results.try_recv().unwrap() else {
        panic!("refused")
    };
    assert_eq!((epoch, dropped), (2, vec![2]), "partition 2 left this core");

    let r = put(&mut h, &three);
    assert_eq!((r.status, r.partition, r.map_epoch), (0, 3, 2), "served here now");
    let get = h.request(Opcode::Get, &two, b"");
    let (r, hint) = h.one(get, &two, b"");
    assert_eq!(r.status, Status::WrongOwner as u16);
    assert_eq!(proto::decode_addr(&hint).unwrap().0, core_addr(1), "the new owner");
    let request = h.request(Opcode::Map, b"", b"");
    let (r, payload) = h.one(request, b"", b"");
    assert_eq!((r.version, PartitionMap::decode(&payload).unwrap()), (2, map));
    assert_eq!(h.core.counters().endpoints, 8);

    // An old epoch, or a partition placed here without a store: refused, nothing changes.
    changes.send(MapChange { map: map_with(2, &[]), added: vec![] }).unwrap();
    changes.send(MapChange { map: map_with(3, &[(2, 1), (3, 0), (5, 0)]), added: vec![] }).unwrap();
    h.core.end_batch(3_000, &mut Wire::default());
    for _ in 0..2 {
        assert!(matches!(results.try_recv().unwrap(), MapOutcome::Refused(_)));
    }
    let r = put(&mut h, &three);
    assert_eq!((r.status, r.map_epoch), (0, 2));
}

#[test]
fn keys_route_by_the_map_ranges_whatever_their_shape() {
    let mut h = Harness::new(1, 0);
    // Split partition 0's range in two: partition 0 keeps the lower half, a new partition
    // 100 (same core) takes the upper one.
    let mut map = map_with(2, &[]);
    for e in &mut map.entries {
        e.addr = core_addr(0);
    }
    let first = map.entries[0].clone();
    let middle = first.hash_start + (first.hash_end - first.hash_start) / 2;
    map.entries[0].hash_end = middle;
    let upper = MapEntry::single(middle + 1, first.hash_end, 100, core_addr(0));
    map.entries.insert(1, upper);
    let added = vec![100];
    h.core.handle_map(MapChange { map, added }, &mut Wire::default()).unwrap();
    let keys: Vec<Vec<u8>> = (0..400).map(|i| format!("key{i}").into_bytes()).collect();
    let (mut low, mut high) = (0, 0);
    for key in keys.iter().filter(|k| partition_of(key_hash(k), 16) == 0) {
        let r = put(&mut h, key);
        let expected = if key_hash(key) <= middle { 0 } else { 100 };
        assert_eq!((r.status, r.partition), (0, expected));
        low += u32::from(expected == 0);
        high += u32::from(expected == 100);
    }
    assert!(low > 0 && high > 0, "{low} {high}");
    let mut scan = h.request(Opcode::Scan, b"", b"");
    scan.partition = 100;
    let (r, page) = h.one(scan, b"", b"");
    assert_eq!(r.status, 0);
    assert_eq!(proto::decode_scan_page(&page).unwrap().len(), high as usize);
}

#[test]
fn a_sender_with_a_newer_map_than_the_core_is_told_busy() {
    let mut h = Harness::new(1, 0);
    for (epoch, expected) in [(0, Status::Ok), (1, Status::Ok), (2, Status::Busy)] {
        let mut get = h.request(Opcode::Get, b"k", b"");
        get.map_epoch = epoch;
        let r = h.one(get, b"k", b"").0;
        let status = if r.status == Status::NotFound as u16 {
            Status::Ok
        } else {
            Status::from_wire(r.status).unwrap()
        };
        assert_eq!((status, r.map_epoch), (expected, 1), "request epoch {epoch}");
    }
    assert_eq!(h.core.counters().map_behind, 1);
}
