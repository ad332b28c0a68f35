//! Exactly-once across a restart, and tracking ids reused for another request.

use super::*;
use storage::{BlobStore, MemoryVolume, Shelf};

const TTL: u64 = crate::COMPLETION_TTL_NS_DEFAULT;

/// A one-core, 16-endpoint node over memory volumes that survive its restarts (a process
/// kill: what was flushed stays), with the `flushed` class.
struct Restartable {
    log: MemoryVolume,
    blobs: MemoryVolume,
}

impl Restartable {
    fn new() -> Restartable {
        Restartable { log: MemoryVolume::new("log"), blobs: MemoryVolume::new("blobs") }
    }

    /// Starts the node with its wall clock at `wall_ns`, replaying what is on the volumes.
    fn start(&self, wall_ns: u64) -> Harness {
        let config = StoreConfig::default();
        let (blobs, _) = BlobStore::open(Box::new(self.blobs.clone()), &config).unwrap();
        let since = crate::stamps_kept_since(wall_ns, TTL);
        let log = Box::new(self.log.clone());
        let (shelf, stores, report) = Shelf::open(log, blobs, &config, 16, since).unwrap();
        let recovered = report.stamps;
        let storage = CoreStorage {
            shelf,
            stores,
            durability: Durability::Flushed,
            compaction_step_bytes: 1 << 18,
            sync_clock: None,
            recovered,
        };
        let layout =
            Arc::new(NodeLayout::new(16, vec![SocketAddr::from(([127, 0, 0, 1], 7000))]).unwrap());
        let map: Arc<[u8]> = layout.map().encode().into();
        let config =
            CoreConfig { wall_clock_start_ns: wall_ns, ..CoreConfig::new(0, layout, [5; 32]) };
        let core = Core::with_storage(config, Arc::new(NodeStats::new(1)), map, storage).unwrap();
        let mut h = Harness { core, token: 0, tracking: 1000 };
        h.token = h.core.tokens.token(CLIENT);
        h
    }
}

/// Sends one request and commits the batch: its reply, held for the flush or not.
fn write(h: &mut Harness, request: HeaderFields, key: &[u8], value: &[u8]) -> HeaderFields {
    let mut replies = h.send(&[(request, key, value)]);
    let mut wire = Wire::default();
    h.core.end_batch(2_000, &mut wire);
    replies.extend(wire.messages());
    assert_eq!(replies.len(), 1, "one reply: {replies:?}");
    replies[0].0
}

fn put(h: &mut Harness, key: &[u8], value: &[u8]) -> HeaderFields {
    let mut request = h.request(Opcode::Put, key, value);
    request.total_len = value.len() as u32;
    request
}

fn get(h: &mut Harness, key: &[u8]) -> (u16, u64, Vec<u8>) {
    let request = h.request(Opcode::Get, key, b"");
    let (r, value) = h.one(request, key, b"");
    (r.status, r.version, value)
}

#[test]
fn a_resend_after_a_restart_is_answered_from_the_rebuilt_record_never_applied_again() {
    let disk = Restartable::new();
    let start_ns = 1_700_000_000_000_000_000;
    let mut h = disk.start(start_ns);
    let first = put(&mut h, b"k", b"one");
    let v1 = write(&mut h, first, b"k", b"one").version;
    let mut cas = h.request(Opcode::Cas, b"c", b"x");
    (cas.version, cas.total_len) = (0, 1);
    let created = write(&mut h, cas, b"c", b"x").version;
    let second = put(&mut h, b"k", b"two");
    let v2 = write(&mut h, second, b"k", b"two").version;
    assert!(v2 > v1 && created > 0);
    let delete = h.request(Opcode::Delete, b"c", b"");
    assert_eq!(write(&mut h, delete, b"c", b"").status, 0);
    drop(h); // kill -9: the replies of `first`, `cas` and `delete` were lost

    // Back 300 ms later: the client resends within its window.
    let mut h = disk.start(start_ns + 300_000_000);
    assert_eq!(h.core.counters().completion_records, 4, "rebuilt from the log");
    let r = write(&mut h, first, b"k", b"one");
    assert_eq!((r.status, r.version), (0, v1), "the record's answer");
    let r = write(&mut h, cas, b"c", b"x");
    assert_eq!((r.status, r.version), (0, created), "OK from the record, not a mismatch");
    assert_eq!(write(&mut h, delete, b"c", b"").status, 0, "not NOT_FOUND");
    assert_eq!(h.core.counters().duplicates_answered, 3);
    assert_eq!(get(&mut h, b"k"), (0, v2, b"two".to_vec()), "the newer write stands");
    assert_eq!(get(&mut h, b"c").0, Status::NotFound as u16, "not created again");
    // A reused id is told apart after the restart too.
    let mut reused = put(&mut h, b"other", b"v");
    reused.tracking_id = first.tracking_id;
    assert_eq!(write(&mut h, reused, b"other", b"v").status, Status::IdReused as u16);
    drop(h);

    // Records older than the TTL (and the clock slack, and the second a record's time is
    // rounded up to) are not rebuilt: no client may resend them any more, and they would only
    // crowd the table.
    let h = disk.start(start_ns + TTL + 3_000_000_000);
    assert_eq!(h.core.counters().completion_records, 0);
}

#[test]
fn a_reused_tracking_id_is_refused_and_its_write_never_applied() {
    let mut h = Harness::new(1, 0);
    let (k1, k2) = (b"key-one".as_slice(), b"key-two".as_slice());
    assert_ne!(partition_of(key_hash(k1), 16), partition_of(key_hash(k2), 16));
    let first = put(&mut h, k1, b"v1");
    assert_eq!(h.one(first, k1, b"v1").0.status, 0);
    // Same id, another key in another partition: refused, not OK from the old record.
    let mut other = put(&mut h, k2, b"v2");
    other.tracking_id = first.tracking_id;
    assert_eq!(h.one(other, k2, b"v2").0.status, Status::IdReused as u16);
    assert_eq!(get(&mut h, k2).0, Status::NotFound as u16, "never applied");
    // Same key, another value; a DELETE; a CAS: all refused.
    let mut value = put(&mut h, k1, b"v3");
    value.tracking_id = first.tracking_id;
    assert_eq!(h.one(value, k1, b"v3").0.status, Status::IdReused as u16);
    let mut delete = h.request(Opcode::Delete, k1, b"");
    delete.tracking_id = first.tracking_id;
    assert_eq!(h.one(delete, k1, b"").0.status, Status::IdReused as u16);
    let mut cas = h.request(Opcode::Cas, k1, b"v1");
    (cas.tracking_id, cas.version, cas.total_len) = (first.tracking_id, 1, 2);
    assert_eq!(h.one(cas, k1, b"v1").0.status, Status::IdReused as u16);
    assert_eq!(get(&mut h, k1), (0, 1, b"v1".to_vec()));
    assert_eq!(h.core.counters().id_reused, 4);
    // The same request again is still answered from the record.
    assert_eq!(h.one(first, k1, b"v1").0.status, 0);
    assert_eq!(h.core.counters().duplicates_answered, 1);
}

#[test]
fn a_fragment_of_a_completed_write_is_checked_against_its_shape() {
    let mut h = Harness::new(1, 0);
    let value: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let base = h.request(Opcode::Put, b"big", b"");
    for i in 0..3 {
        let (f, span) = fragment(base, &value, i);
        h.send(&[(f, b"big", &value[span])]);
    }
    assert_eq!(read_whole(&mut h, b"big"), value);
    // A late fragment of the same write: answered from the record.
    let (f, span) = fragment(base, &value, 1);
    assert_eq!(h.one(f, b"big", &value[span]).0.status, 0);
    // A fragment under the same id of another value length or key: refused.
    let longer = vec![1u8; 4000];
    let (f, span) = fragment(base, &longer, 1);
    assert_eq!(h.one(f, b"big", &longer[span]).0.status, Status::IdReused as u16);
    let (f, span) = fragment(base, &value, 1);
    assert_eq!(h.one(f, b"bag", &value[span]).0.status, Status::IdReused as u16);
    // A whole request under that id: refused.
    let mut whole = put(&mut h, b"big", b"small");
    whole.tracking_id = base.tracking_id;
    assert_eq!(h.one(whole, b"big", b"small").0.status, Status::IdReused as u16);
    assert_eq!(read_whole(&mut h, b"big"), value);
}

/// A value that fits one window of fragments, assembled.
fn read_whole(h: &mut Harness, key: &[u8]) -> Vec<u8> {
    let request = h.request(Opcode::Get, key, b"");
    let fragments = h.send(&[(request, key, b"")]);
    let mut value = vec![0u8; fragments[0].0.total_len as usize];
    for (r, data) in &fragments {
        value[fragment_span(r.total_len, r.frag_index)].copy_from_slice(data);
    }
    value
}

#[test]
fn a_resent_incr_after_a_restart_gets_its_count_and_is_not_counted_again() {
    let disk = Restartable::new();
    let start_ns = 1_700_000_000_000_000_000;
    let mut h = disk.start(start_ns);
    let args = |delta| proto::IncrArgs { delta, floor: Some(0) }.encode();
    let incr = |h: &mut Harness, delta| {
        let mut r = h.request(Opcode::Incr, b"n", &args(delta));
        r.total_len = 16;
        r
    };
    let first = incr(&mut h, 10);
    assert_eq!(write(&mut h, first, b"n", &args(10)).status, 0);
    let second = incr(&mut h, -4);
    assert_eq!(write(&mut h, second, b"n", &args(-4)).status, 0);
    drop(h); // kill -9: both replies lost

    let mut h = disk.start(start_ns + 300_000_000);
    for (request, delta, count) in [(first, 10, 10), (second, -4, 6)] {
        let mut replies = h.send(&[(request, b"n", &args(delta))]);
        let mut wire = Wire::default();
        h.core.end_batch(2_000, &mut wire);
        replies.extend(wire.messages());
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].0.status, 0);
        assert_eq!(proto::decode_count(&replies[0].1), Some(count), "its first count");
    }
    assert_eq!(get(&mut h, b"n").2, b"6", "neither counted twice");
}

#[test]
fn a_write_that_changed_nothing_is_answered_alike_after_a_restart_never_applied_late() {
    // A delete of an absent key answered NOT_FOUND, a CAS that did not match, an INCR below
    // its floor: each leaves a note of its answer, so a duplicate of it arriving after a
    // restart (the first reply was received) is answered the same and changes nothing,
    // although the key was written since.
    let disk = Restartable::new();
    let start_ns = 1_700_000_000_000_000_000;
    let mut h = disk.start(start_ns);
    let delete = h.request(Opcode::Delete, b"d", b"");
    assert_eq!(write(&mut h, delete, b"d", b"").status, Status::NotFound as u16);
    let mut cas = h.request(Opcode::Cas, b"c", b"new");
    (cas.version, cas.total_len) = (1 << 40, 3);
    assert_eq!(write(&mut h, cas, b"c", b"new").status, Status::VersionMismatch as u16);
    let args = proto::IncrArgs { delta: -5, floor: Some(0) }.encode();
    let mut incr = h.request(Opcode::Incr, b"n", &args);
    incr.total_len = 16;
    assert_eq!(write(&mut h, incr, b"n", &args).status, Status::BelowFloor as u16);
    // Written since, by others.
    for (key, value) in [(&b"d"[..], &b"kept"[..]), (b"c", b"kept"), (b"n", b"3")] {
        let request = put(&mut h, key, value);
        assert_eq!(write(&mut h, request, key, value).status, 0);
    }
    let before: Vec<_> = [b"d", b"c", b"n"].iter().map(|k| get(&mut h, &k[..])).collect();
    drop(h); // kill -9

    let mut h = disk.start(start_ns + 300_000_000);
    assert_eq!(write(&mut h, delete, b"d", b"").status, Status::NotFound as u16, "its answer");
    assert_eq!(
        write(&mut h, cas, b"c", b"new").status,
        Status::VersionMismatch as u16,
        "its answer"
    );
    assert_eq!(write(&mut h, incr, b"n", &args).status, Status::BelowFloor as u16, "its answer");
    assert_eq!(h.core.counters().duplicates_answered, 3);
    let after: Vec<_> = [b"d", b"c", b"n"].iter().map(|k| get(&mut h, &k[..])).collect();
    assert_eq!(after, before, "nothing applied late");
}
