//! The core driven datagram by datagram, as the loop would.

use super::*;
use crate::durable::{CoreStorage, Durability};
use crate::layout::NodeLayout;
use proto::{encode_message, partition_of, FRAGMENT_BYTES, HEADER_BYTES, VALUE_BYTES_MAX};
use storage::BlobStore;

const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

#[derive(Default)]
struct Wire(Vec<Vec<u8>>);

impl Transmit for Wire {
    fn send(&mut self, _peer: SocketAddr, datagram: &[u8]) -> bool {
        self.0.push(datagram.to_vec());
        true
    }
}

impl Wire {
    fn messages(&self) -> Vec<(HeaderFields, Vec<u8>)> {
        self.0
            .iter()
            .flat_map(|d| {
                Messages::new(d).map(|m| m.map(|m| (m.header, m.value.to_vec())).unwrap())
            })
            .collect()
    }
}

struct Harness {
    core: Core,
    token: u64,
    tracking: u64,
}

impl Harness {
    fn new(cores: u32, core: u32) -> Harness {
        let addrs =
            (0..cores).map(|i| SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))).collect();
        let layout = Arc::new(NodeLayout::new(16, addrs).unwrap());
        let map: Arc<[u8]> = layout.map().encode().into();
        let config = CoreConfig::new(core, layout, [5; 32]);
        let core = Core::new(config, Arc::new(NodeStats::new(cores)), map).unwrap();
        let mut h = Harness { core, token: 0, tracking: 0 };
        h.token = h.core.tokens.token(CLIENT);
        h
    }

    fn request(&mut self, op: Opcode, key: &[u8], value: &[u8]) -> HeaderFields {
        self.tracking += 1;
        HeaderFields {
            opcode: op as u8,
            client_id: 42,
            tracking_id: self.tracking,
            token: self.token,
            total_len: value.len() as u32,
            ..HeaderFields::default()
        }
        .with_key_value(key, value)
    }

    fn send(&mut self, parts: &[(HeaderFields, &[u8], &[u8])]) -> Vec<(HeaderFields, Vec<u8>)> {
        let mut datagram = vec![0u8; 4096];
        let mut len = 0;
        for (h, k, v) in parts {
            len += encode_message(&mut datagram[len..], h, k, v).unwrap();
        }
        let mut wire = Wire::default();
        self.core.handle_datagram(1_000, CLIENT, &datagram[..len], &mut wire);
        wire.messages()
    }

    fn one(&mut self, h: HeaderFields, key: &[u8], value: &[u8]) -> (HeaderFields, Vec<u8>) {
        let mut replies = self.send(&[(h, key, value)]);
        assert_eq!(replies.len(), 1, "one reply expected");
        replies.remove(0)
    }
}

trait WithKeyValue {
    fn with_key_value(self, key: &[u8], value: &[u8]) -> Self;
}

impl WithKeyValue for HeaderFields {
    fn with_key_value(mut self, key: &[u8], value: &[u8]) -> Self {
        self.key_len = key.len() as u16;
        self.value_len = value.len() as u32;
        self
    }
}

/// A key owned by `core` of 2 (or any key with one core).
fn key_on(core: u32, cores: u32) -> Vec<u8> {
    (0..)
        .map(|i| format!("key{i}").into_bytes())
        .find(|k| partition_of(key_hash(k), 16) % cores == core)
        .unwrap()
}

#[test]
fn put_get_cas_delete() {
    let mut h = Harness::new(1, 0);
    let put = h.request(Opcode::Put, b"k", b"v1");
    let (r, _) = h.one(put, b"k", b"v1");
    assert_eq!((r.status, r.version), (Status::Ok as u16, 1));
    let get = h.request(Opcode::Get, b"k", b"");
    let (r, value) = h.one(get, b"k", b"");
    assert_eq!((r.status, r.version, value.as_slice()), (0, 1, &b"v1"[..]));
    let mut cas = h.request(Opcode::Cas, b"k", b"v2");
    cas.version = 7;
    assert_eq!(h.one(cas, b"k", b"v2").0.status, Status::VersionMismatch as u16);
    let mut cas = h.request(Opcode::Cas, b"k", b"v2");
    cas.version = 1;
    assert_eq!(h.one(cas, b"k", b"v2").0.version, 2);
    let del = h.request(Opcode::Delete, b"k", b"");
    assert_eq!(h.one(del, b"k", b"").0.status, Status::Ok as u16);
    let get = h.request(Opcode::Get, b"k", b"");
    assert_eq!(h.one(get, b"k", b"").0.status, Status::NotFound as u16);
    assert_eq!(h.core.counters().keys, 0);
}

#[test]
fn a_resent_write_is_answered_from_its_record() {
    let mut h = Harness::new(1, 0);
    let mut cas = h.request(Opcode::Cas, b"k", b"a");
    cas.version = 0;
    assert_eq!(h.one(cas, b"k", b"a").0.version, 1);
    // The same request again (its reply was lost): answered OK from the record, not
    // VERSION_MISMATCH, and not applied again.
    let (r, _) = h.one(cas, b"k", b"a");
    assert_eq!((r.status, r.version), (Status::Ok as u16, 1));
    assert_eq!(h.core.counters().duplicates_answered, 1);
    let get = h.request(Opcode::Get, b"k", b"");
    assert_eq!(h.one(get, b"k", b"").0.version, 1);
}

#[test]
fn multi_get_is_answered_in_one_datagram() {
    let mut h = Harness::new(1, 0);
    for k in [&b"a"[..], b"b", b"c"] {
        let put = h.request(Opcode::Put, k, k);
        h.one(put, k, k);
    }
    let gets: Vec<_> = [&b"a"[..], b"b", b"zz", b"c"]
        .iter()
        .map(|k| (h.request(Opcode::Get, k, b""), *k, &b""[..]))
        .collect();
    let mut wire = Wire::default();
    let mut datagram = vec![0u8; 4096];
    let mut len = 0;
    for (hd, k, v) in &gets {
        len += encode_message(&mut datagram[len..], hd, k, v).unwrap();
    }
    h.core.handle_datagram(0, CLIENT, &datagram[..len], &mut wire);
    assert_eq!(wire.0.len(), 1);
    let replies = wire.messages();
    let statuses: Vec<u16> = replies.iter().map(|r| r.0.status).collect();
    assert_eq!(statuses, vec![0, 0, Status::NotFound as u16, 0]);
    assert_eq!(replies[3].1, b"c");
    assert_eq!(replies[2].0.tracking_id, gets[2].0.tracking_id);
}

fn fragment(
    base: HeaderFields,
    value: &[u8],
    index: u32,
) -> (HeaderFields, std::ops::Range<usize>) {
    let total = value.len() as u32;
    let span = fragment_span(total, index);
    let mut f = base;
    f.flags = flags::FRAGMENT;
    f.frag_index = index;
    f.frag_count = fragment_count(total);
    f.total_len = total;
    f.value_len = span.len() as u32;
    (f, span)
}

#[test]
fn fragmented_put_acks_cumulatively_and_applies_once() {
    let mut h = Harness::new(1, 0);
    let value: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let base = h.request(Opcode::Put, b"big", b"");
    // Fragments 0, 2, 4 with an ACK request on 4: the first missing is 1.
    for i in [0, 2] {
        let (f, span) = fragment(base, &value, i);
        assert!(h.send(&[(f, b"big", &value[span])]).is_empty());
    }
    let (mut f, span) = fragment(base, &value, 4);
    f.flags |= flags::ACK_REQUEST;
    let (r, _) = h.one(f, b"big", &value[span]);
    assert!(r.has(flags::PARTIAL));
    assert_eq!(r.frag_index, 1);
    for i in [1, 3] {
        let (f, span) = fragment(base, &value, i);
        let replies = h.send(&[(f, b"big", &value[span])]);
        if i == 3 {
            assert_eq!((replies[0].0.status, replies[0].0.flags), (0, flags::REPLY));
        }
    }
    // A late duplicate fragment is answered from the completion record.
    let (f, span) = fragment(base, &value, 2);
    assert_eq!(h.one(f, b"big", &value[span]).0.version, 1);
    // Read it back: a window of fragments, then a RANGE for the rest.
    let get = h.request(Opcode::Get, b"big", b"");
    let replies = h.send(&[(get, b"big", b"")]);
    assert_eq!(replies.len(), 5, "5000 bytes are 5 fragments, all in the first window");
    let mut assembled = vec![0u8; 5000];
    for (r, data) in &replies {
        assembled[fragment_span(5000, r.frag_index)].copy_from_slice(data);
    }
    assert_eq!(assembled, value);
    let mut range = get;
    range.flags = flags::RANGE;
    range.frag_index = 3;
    range.frag_count = 1;
    range.version = 1;
    let (r, data) = h.one(range, b"big", b"");
    assert_eq!(
        (r.frag_index, data.as_slice()),
        (3, &value[3 * FRAGMENT_BYTES..4 * FRAGMENT_BYTES])
    );
    range.version = 9;
    assert_eq!(h.one(range, b"big", b"").0.status, Status::VersionMismatch as u16);
}

#[test]
fn oversized_values_get_too_large() {
    let mut h = Harness::new(1, 0);
    let mut f = h.request(Opcode::Put, b"k", b"");
    let total = VALUE_BYTES_MAX as u32 + 1;
    f.flags = flags::FRAGMENT | flags::ACK_REQUEST;
    f.total_len = total;
    f.frag_count = fragment_count(total);
    f.value_len = FRAGMENT_BYTES as u32;
    assert_eq!(h.one(f, b"k", &[0; FRAGMENT_BYTES]).0.status, Status::TooLarge as u16);
}

#[test]
fn unvalidated_senders_get_at_most_three_times_their_bytes() {
    let mut h = Harness::new(1, 0);
    let value = vec![9u8; 1300];
    let put = h.request(Opcode::Put, b"k", &value);
    assert_eq!(h.send(&[(put.with_key_value(b"k", &value), b"k", &value)])[0].0.status, 0);
    // Without the token, a GET of 73 bytes may get 219 bytes back: the 1,374-byte reply is
    // replaced by a bare RETRY_WITH_TOKEN that carries the token.
    let mut get = h.request(Opcode::Get, b"k", b"");
    get.token = 0;
    let mut wire = Wire::default();
    let mut datagram = vec![0u8; 200];
    let len = encode_message(&mut datagram, &get, b"k", b"").unwrap();
    h.core.handle_datagram(0, CLIENT, &datagram[..len], &mut wire);
    let sent: usize = wire.0.iter().map(Vec::len).sum();
    assert!(sent <= 3 * len, "{sent} bytes for {len}");
    let (r, _) = &wire.messages()[0];
    assert_eq!((r.status, r.token), (Status::RetryWithToken as u16, h.token));
    get.token = r.token;
    let (r, data) = h.one(get, b"k", b"");
    assert_eq!((r.status, data.len()), (0, 1300));
    // Small replies to unvalidated senders are fine, and teach the token.
    let mut ping = h.request(Opcode::Ping, b"", b"");
    ping.token = 0;
    assert_eq!(h.one(ping, b"", b"").0.token, h.token);
}

#[test]
fn every_unvalidated_request_gets_an_answer_within_three_times_its_bytes() {
    let mut h = Harness::new(1, 0);
    let keys: Vec<Vec<u8>> = (0..16).map(|i| format!("k{i:02}").into_bytes()).collect();
    for key in &keys {
        let value = vec![7u8; 300];
        let put = h.request(Opcode::Put, key, &value);
        assert_eq!(h.one(put, key, &value).0.status, 0);
    }
    // 16 GETs per datagram (75 bytes each, 375-byte replies), 63 datagrams: 1,008 requests.
    let (mut answered, mut ok, mut retry) = (0, 0, 0);
    for _ in 0..63 {
        let mut datagram = vec![0u8; 2048];
        let mut len = 0;
        let mut ids = Vec::new();
        for key in &keys {
            let mut get = h.request(Opcode::Get, key, b"");
            get.token = 0;
            ids.push(get.tracking_id);
            len += encode_message(&mut datagram[len..], &get, key, b"").unwrap();
        }
        let mut wire = Wire::default();
        h.core.handle_datagram(1_000, CLIENT, &datagram[..len], &mut wire);
        let sent: usize = wire.0.iter().map(Vec::len).sum();
        assert!(sent <= 3 * len, "{sent} bytes for {len}");
        let replies = wire.messages();
        let got: Vec<u64> = replies.iter().map(|(r, _)| r.tracking_id).collect();
        assert_eq!(got, ids, "one answer per request, in order");
        answered += got.len();
        ok += replies.iter().filter(|(r, _)| r.status == 0).count();
        retry += replies.iter().filter(|(r, _)| r.status == Status::RetryWithToken as u16).count();
    }
    assert_eq!((answered, ok + retry), (1008, 1008));
    assert!(ok > 0 && retry > 0, "{ok} served, {retry} asked for the token");
}

#[test]
fn keys_of_another_core_get_a_hint() {
    let mut h = Harness::new(2, 0);
    let key = key_on(1, 2);
    let get = h.request(Opcode::Get, &key, b"");
    let (r, hint) = h.one(get, &key, b"");
    assert_eq!(r.status, Status::WrongOwner as u16);
    assert_eq!(proto::decode_addr(&hint).unwrap().0, SocketAddr::from(([127, 0, 0, 1], 7001)));
    let key = key_on(0, 2);
    let put = h.request(Opcode::Put, &key, b"x");
    assert_eq!(h.one(put, &key, b"x").0.status, 0);
}

#[test]
fn malformed_datagrams_are_counted_and_dropped() {
    let mut h = Harness::new(1, 0);
    let mut wire = Wire::default();
    let garbage: [&[u8]; 4] = [b"", b"hello", &[0x63, 0x52, 1, 1, 0, 0], &[0u8; HEADER_BYTES]];
    for g in garbage {
        h.core.handle_datagram(0, CLIENT, g, &mut wire);
    }
    assert!(wire.0.is_empty());
    // A reply aimed at the server is not answered either.
    let mut reply = h.request(Opcode::Ping, b"", b"");
    reply.flags = flags::REPLY;
    assert!(h.send(&[(reply, b"", b"")]).is_empty());
    assert_eq!(h.core.counters().dropped_malformed, 5);
}

#[test]
fn completion_table_full_of_young_records_answers_busy() {
    let mut h = Harness::new(1, 0);
    h.core.completions = Completions::new(2, 1_000_000);
    for i in 0..3 {
        let put = h.request(Opcode::Put, b"k", b"v");
        let status = h.one(put, b"k", b"v").0.status;
        assert_eq!(status, if i < 2 { 0 } else { Status::Busy as u16 });
    }
}

#[test]
fn scan_pages_list_every_key_once_in_order() {
    let mut h = Harness::new(1, 0);
    let mut written: Vec<Vec<u8>> = (0..700).map(|i| format!("k{i:05}").into_bytes()).collect();
    for key in &written {
        let put = h.request(Opcode::Put, key, b"v");
        h.one(put, key, b"v");
    }
    let mut listed = Vec::new();
    for partition in 0..16 {
        let mut after = Vec::new();
        loop {
            let mut scan = h.request(Opcode::Scan, &after, b"");
            scan.partition = partition;
            let (r, page) = h.one(scan, &after, b"");
            assert_eq!(r.status, 0);
            let keys: Vec<Vec<u8>> =
                proto::decode_scan_page(&page).unwrap().into_iter().map(<[u8]>::to_vec).collect();
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "in byte order");
            assert!(keys.iter().all(|k| partition_of(key_hash(k), 16) == partition));
            if let Some(last) = keys.last() {
                after = last.clone();
            }
            listed.extend(keys);
            if r.version == 0 {
                break;
            }
        }
    }
    listed.sort();
    written.sort();
    assert_eq!(listed, written);
    let mut scan = h.request(Opcode::Scan, b"", b"");
    scan.partition = 99;
    assert_eq!(h.one(scan, b"", b"").0.status, Status::Malformed as u16);
}

#[test]
fn big_values_can_be_fetched_by_reference_and_chunk() {
    let mut h = Harness::new(1, 0);
    let value: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let base = h.request(Opcode::Put, b"big", b"");
    for i in 0..fragment_count(value.len() as u32) {
        let (f, span) = fragment(base, &value, i);
        h.send(&[(f, b"big", &value[span])]);
    }
    let mut get = h.request(Opcode::Get, b"big", b"");
    get.flags = flags::REF_ONLY;
    let (r, payload) = h.one(get, b"big", b"");
    assert!(r.has(flags::REF_ONLY), "a blob value answers with its reference");
    let reference = BlobReference::decode(&payload).unwrap();
    assert_eq!((reference.value_len, reference.hashes.len()), (100_000, 2));
    let chunk = reference.chunk_bytes as usize;
    assert_eq!(reference.hashes[0], *blake3::hash(&value[..chunk]).as_bytes());

    // The second chunk, pulled by hash in fragments: the first window, then a RANGE.
    let hash = reference.hashes[1];
    let fetch = h.request(Opcode::Chunk, &hash, b"");
    let mut got = vec![0u8; value.len() - chunk];
    let mut fragments = h.send(&[(fetch, &hash, b"")]);
    let mut range = fetch;
    range.flags = flags::RANGE;
    range.frag_index = FRAGMENT_WINDOW;
    range.frag_count = FRAGMENT_WINDOW;
    fragments.extend(h.send(&[(range, &hash, b"")]));
    for (r, data) in &fragments {
        assert_eq!(r.status, 0);
        let span = fragment_span(got.len() as u32, r.frag_index);
        got[span].copy_from_slice(data);
    }
    assert_eq!(got, &value[chunk..]);

    let missing = h.request(Opcode::Chunk, &[0; 32], b"");
    assert_eq!(h.one(missing, &[0; 32], b"").0.status, Status::NotFound as u16);
    let mut small = h.request(Opcode::Put, b"small", b"tiny");
    small.total_len = 4;
    h.one(small, b"small", b"tiny");
    let mut get = h.request(Opcode::Get, b"small", b"");
    get.flags = flags::REF_ONLY;
    let (r, payload) = h.one(get, b"small", b"");
    assert!(!r.has(flags::REF_ONLY) && payload == b"tiny", "a log value answers itself");
}

/// A one-core harness whose endpoints write through a fault-injecting volume and answer
/// writes only after the group commit.
fn flushed_harness() -> (Harness, Arc<storage::Faults>) {
    storage_harness(Durability::Flushed, None, StoreConfig::default())
}

/// A one-core harness over fault-injecting memory volumes with the given write class.
fn storage_harness(
    durability: Durability,
    sync_clock: Option<Arc<SyncClock>>,
    config: StoreConfig,
) -> (Harness, Arc<storage::Faults>) {
    use storage::{Faults, FaultyVolume, MemoryVolume, Shelf};
    let faults = Faults::new();
    let layout =
        Arc::new(NodeLayout::new(16, vec![SocketAddr::from(([127, 0, 0, 1], 7000))]).unwrap());
    let map: Arc<[u8]> = layout.map().encode().into();
    let volume = |name: &str| Box::new(FaultyVolume::new(MemoryVolume::new(name), faults.clone()));
    let (blobs, _) = BlobStore::open(volume("blobs"), &config).unwrap();
    let (shelf, stores, _) = Shelf::open(volume("log"), blobs, &config, 16, u64::MAX).unwrap();
    let storage = CoreStorage {
        shelf,
        stores,
        durability,
        compaction_step_bytes: 1 << 18,
        sync_clock,
        recovered: Vec::new(),
    };
    let core = Core::with_storage(
        CoreConfig::new(0, layout, [5; 32]),
        Arc::new(NodeStats::new(1)),
        map,
        storage,
    )
    .unwrap();
    let mut h = Harness { core, token: 0, tracking: 0 };
    h.token = h.core.tokens.token(CLIENT);
    (h, faults)
}

/// A `memory`-class harness with a background sync clock the test moves, and blob values
/// from 256 bytes.
fn background_sync_harness() -> (Harness, Arc<storage::Faults>, Arc<SyncClock>, Wire) {
    let clock = Arc::new(SyncClock::default());
    let config = StoreConfig { blob_threshold_bytes: 256, ..StoreConfig::default() };
    let (h, faults) = storage_harness(Durability::Memory, Some(clock.clone()), config);
    (h, faults, clock, Wire::default())
}

#[test]
fn memory_class_frees_dropped_blob_chunks_only_after_a_background_sync() {
    let (mut h, _, clock, mut wire) = background_sync_harness();
    for (i, value) in [[1u8; 600], [2u8; 600]].iter().enumerate() {
        let put = h.request(Opcode::Put, b"big", value);
        let replies = h.send(&[(put, b"big", value)]);
        assert_eq!(replies[0].0.status, Status::Ok as u16, "memory: answered at once");
        h.core.end_batch(10 + i as u64, &mut wire);
    }
    assert_eq!(h.core.shelf.blobs().blob_chunks(), 2, "the overwritten value's chunk is held");
    h.core.end_batch(20, &mut wire);
    assert_eq!(h.core.shelf.blobs().blob_chunks(), 2, "no sync yet: still held");
    // The first batch's ticket was taken before the overwrite: reaching it frees nothing,
    // and the overwrite's records get the next ticket.
    clock.sync_with(|| Ok::<(), ()>(())).unwrap();
    h.core.end_batch(30, &mut wire);
    assert_eq!(h.core.shelf.blobs().blob_chunks(), 2, "dropped after the ticket that was reached");
    clock.sync_with(|| Ok::<(), ()>(())).unwrap();
    h.core.end_batch(40, &mut wire);
    assert_eq!(h.core.shelf.blobs().blob_chunks(), 1, "freed once the records are durable");
    let get = h.request(Opcode::Get, b"big", b"");
    let (reply, value) = h.one(get, b"big", b"");
    assert_eq!((reply.status, value), (Status::Ok as u16, vec![2u8; 600]));

    // A failed background sync: what was answered may not be durable, so writes stop (reads
    // go on) and chunks dropped since are never freed, even after a later sync succeeds.
    let put = h.request(Opcode::Put, b"big", &[3u8; 600]);
    assert_eq!(h.send(&[(put, b"big", &[3u8; 600])])[0].0.status, Status::Ok as u16);
    h.core.end_batch(50, &mut wire);
    assert_eq!(clock.sync_with(|| Err("EIO")), Err("EIO"));
    clock.sync_with(|| Ok::<(), ()>(())).unwrap();
    h.core.end_batch(60, &mut wire);
    h.core.end_batch(70, &mut wire);
    assert_eq!(h.core.shelf.blobs().blob_chunks(), 2, "the chunk of value 2 stays");
    let put = h.request(Opcode::Put, b"other", b"v");
    let status = h.send(&[(put, b"other", b"v")])[0].0.status;
    assert_eq!(status, Status::Unavailable as u16, "writes refused after a failed sync");
    let get = h.request(Opcode::Get, b"big", b"");
    assert_eq!(h.one(get, b"big", b"").1, vec![3u8; 600], "reads still served");
}

/// A `flushed` harness whose syncs run "on another thread": the test moves the clock.
fn off_loop_harness() -> (Harness, Arc<SyncClock>, Wire) {
    let clock = Arc::new(SyncClock::default());
    let (h, _) = storage_harness(Durability::Flushed, Some(clock.clone()), StoreConfig::default());
    (h, clock, Wire::default())
}

#[test]
fn flushed_off_the_loop_answers_a_write_once_its_sync_is_done_and_reads_meanwhile() {
    let (mut h, clock, mut wire) = off_loop_harness();
    let put = h.request(Opcode::Put, b"k", b"v1");
    assert!(h.send(&[(put, b"k", b"v1")]).is_empty(), "held until durable");
    h.core.end_batch(10, &mut wire);
    assert!(wire.messages().is_empty(), "handed to the sync thread, not answered");
    assert!(clock.requested(), "the sync thread was asked");
    assert!(h.core.waiting(), "the loop keeps polling for the sync's end");

    // Reads are never behind the disk: answered at once, the held write's value included
    // (as a GET in the same batch as a held write always was).
    let get = h.request(Opcode::Get, b"k", b"");
    assert_eq!(h.one(get, b"k", b"").1, b"v1");
    let get = h.request(Opcode::Get, b"other", b"");
    assert_eq!(h.one(get, b"other", b"").0.status, Status::NotFound as u16);
    // A resend of the waiting write gets the one reply its sync sends, not an early OK.
    assert!(h.send(&[(put, b"k", b"v1")]).is_empty(), "the resend waits too");
    h.core.end_batch(20, &mut wire);
    assert!(wire.messages().is_empty());

    clock.sync_with(|| Ok::<(), ()>(())).unwrap();
    assert!(!clock.requested());
    h.core.end_batch(30, &mut wire);
    let replies = wire.messages();
    assert_eq!(replies.len(), 1, "one reply for the write and its resend: {replies:?}");
    assert_eq!((replies[0].0.tracking_id, replies[0].0.status), (put.tracking_id, 0));
    assert!(!h.core.waiting());

    // Once synced, a write that changes nothing on that endpoint is answered at once.
    let resend = h.one(put, b"k", b"v1").0;
    assert_eq!(resend.status, Status::Ok as u16, "answered from its record");
}

#[test]
fn flushed_off_the_loop_syncs_on_the_loop_once_the_sync_thread_is_too_far_behind() {
    let (mut h, clock, mut wire) = off_loop_harness();
    // The sync thread never runs: past PENDING_ACKS_MAX held replies the loop syncs itself.
    let mut statuses = Vec::new();
    for i in 0..=PENDING_ACKS_MAX {
        let key = format!("key-{i}");
        let put = h.request(Opcode::Put, key.as_bytes(), b"v");
        statuses.extend(h.send(&[(put, key.as_bytes(), b"v")]).into_iter().map(|r| r.0.status));
        if i % 64 == 63 {
            h.core.end_batch(i as u64, &mut wire);
        }
    }
    assert!(statuses.is_empty(), "held, not answered early");
    h.core.end_batch(1 << 20, &mut wire);
    statuses.extend(wire.messages().into_iter().map(|r| r.0.status));
    assert_eq!(statuses.len(), PENDING_ACKS_MAX + 1, "every write answered once");
    assert!(statuses.iter().all(|&s| s == Status::Ok as u16), "synced by the loop");
    assert!(!h.core.waiting() && !clock.reached(clock.ticket()));
}

#[test]
fn flushed_off_the_loop_never_acknowledges_a_write_whose_sync_failed() {
    let (mut h, clock, mut wire) = off_loop_harness();
    let first = h.request(Opcode::Put, b"a", b"1");
    assert!(h.send(&[(first, b"a", b"1")]).is_empty());
    h.core.end_batch(10, &mut wire);
    let second = h.request(Opcode::Put, b"b", b"2");
    assert!(h.send(&[(second, b"b", b"2")]).is_empty());
    h.core.end_batch(20, &mut wire);
    assert_eq!(clock.sync_with(|| Err("EIO")), Err("EIO"));
    // A resend before the loop has seen the failure: its record still says OK, and it must
    // not be believed (it waits with the write it repeats).
    assert!(h.send(&[(second, b"b", b"2")]).is_empty(), "no early answer from the record");
    h.core.end_batch(30, &mut wire);
    let statuses: Vec<_> = wire.messages().iter().map(|m| (m.0.tracking_id, m.0.status)).collect();
    let unavailable = Status::Unavailable as u16;
    assert_eq!(statuses, [(first.tracking_id, unavailable), (second.tracking_id, unavailable)]);
    assert!(!h.core.waiting());
    // The resend learns it from the record (at the batch's end: its endpoint waits for a
    // sync that failed); new writes are refused; reads go on.
    let put = h.request(Opcode::Put, b"c", b"3");
    for (request, key, value) in [(first, b"a", b"1"), (put, b"c", b"3")] {
        let mut wire = Wire::default();
        let mut replies = h.send(&[(request, key, value)]);
        h.core.end_batch(40, &mut wire);
        replies.extend(wire.messages());
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(replies[0].0.status, unavailable, "never OK after a failed sync");
    }
    let get = h.request(Opcode::Get, b"a", b"");
    assert_eq!(h.one(get, b"a", b"").0.status, Status::Ok as u16, "reads still served");
}

#[test]
fn flushed_writes_are_answered_after_the_commit_and_never_ok_when_it_fails() {
    let (mut h, faults) = flushed_harness();
    let put = h.request(Opcode::Put, b"k", b"v");
    assert!(h.send(&[(put, b"k", b"v")]).is_empty(), "held until the group commit");
    let mut wire = Wire::default();
    h.core.end_batch(10, &mut wire);
    assert_eq!(wire.messages()[0].0.status, 0, "answered after the flush");

    // Now every flush fails: held replies and their records say UNAVAILABLE, never OK,
    // including the reply of the write that overflows the held list and forces a commit.
    faults.fail_after(0);
    let mut statuses = Vec::new();
    let mut last = put;
    for i in 0..=PENDING_ACKS_MAX {
        let key = format!("key-{i}");
        last = h.request(Opcode::Put, key.as_bytes(), b"v");
        statuses.extend(h.send(&[(last, key.as_bytes(), b"v")]).into_iter().map(|r| r.0.status));
    }
    // The loop's next iteration finds the queue empty and commits what is held.
    let mut wire = Wire::default();
    h.core.end_batch(20, &mut wire);
    h.core.end_batch(30, &mut wire);
    statuses.extend(wire.messages().into_iter().map(|r| r.0.status));
    let mut kinds = std::collections::BTreeMap::new();
    for s in &statuses {
        *kinds.entry(*s).or_insert(0) += 1;
    }
    assert_eq!(statuses.len(), PENDING_ACKS_MAX + 1, "every write was answered once: {kinds:?}");
    assert!(
        statuses.iter().all(|&s| s != Status::Ok as u16),
        "a failed flush acknowledged a write"
    );
    let key = format!("key-{PENDING_ACKS_MAX}");
    let (r, _) = h.one(last, key.as_bytes(), b"v");
    assert_eq!(
        r.status,
        Status::Unavailable as u16,
        "the resend learns the failure from the record"
    );
}

#[test]
fn unvalidated_senders_get_no_blob_assembly_and_no_scan() {
    let mut h = Harness::new(1, 0);
    let value = vec![3u8; 20_000];
    let base = h.request(Opcode::Put, b"blob", b"");
    for i in 0..fragment_count(value.len() as u32) {
        let (f, span) = fragment(base, &value, i);
        h.send(&[(f, b"blob", &value[span])]);
    }
    let mut get = h.request(Opcode::Get, b"blob", b"");
    get.token = 0;
    assert_eq!(h.one(get, b"blob", b"").0.status, Status::RetryWithToken as u16);
    let mut scan = h.request(Opcode::Scan, b"", b"");
    scan.token = 0;
    assert_eq!(h.one(scan, b"", b"").0.status, Status::RetryWithToken as u16);
    let mut range = h.request(Opcode::Get, b"blob", b"");
    range.flags = flags::RANGE;
    range.frag_index = 1_000;
    range.frag_count = 1;
    range.version = 1;
    assert_eq!(h.one(range, b"blob", b"").0.status, Status::Malformed as u16, "past the end");
}

#[test]
fn a_memory_class_write_that_failed_to_reach_the_file_frees_no_chunk() {
    let (mut h, faults, clock, mut wire) = background_sync_harness();
    let put = h.request(Opcode::Put, b"big", &[1u8; 600]);
    assert_eq!(h.send(&[(put, b"big", &[1u8; 600])])[0].0.status, Status::Ok as u16);
    h.core.end_batch(10, &mut wire);
    // The overwrite's chunk is written, its log record is not: the old record on disk still
    // refers to the first chunk, which must survive.
    faults.fail_after(1);
    let put = h.request(Opcode::Put, b"big", &[2u8; 600]);
    let status = h.send(&[(put, b"big", &[2u8; 600])])[0].0.status;
    assert_eq!(status, Status::Unavailable as u16, "the failed write-out answers the write");
    faults.heal();
    for t in 0..3 {
        h.core.end_batch(20 + t, &mut wire);
        clock.sync_with(|| Ok::<(), ()>(())).unwrap();
    }
    assert_eq!(
        h.core.shelf.blobs().blob_chunks(),
        2,
        "no chunk freed for a write that never landed"
    );
}

#[test]
fn only_a_core_whose_endpoints_outgrow_the_cache_reads_bursts_ahead() {
    let core_of = |partitions: u32| {
        let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
        let layout = Arc::new(NodeLayout::new(partitions, vec![addr]).unwrap());
        let map: Arc<[u8]> = layout.map().encode().into();
        let config = CoreConfig::new(0, layout, [5; 32]);
        let mut core = Core::new(config, Arc::new(NodeStats::new(1)), map).unwrap();
        for _ in 0..=partitions / 4096 {
            core.end_batch(1, &mut Wire::default()); // a whole pass of the size refresh
        }
        core
    };
    let mut small = Harness::new(1, 0);
    let put = small.request(Opcode::Put, b"k", b"v");
    assert_eq!(small.one(put, b"k", b"v").0.status, 0);
    small.core.end_batch(1, &mut Wire::default());
    assert!(!small.core.reads_ahead(), "16 endpoints and one key stay in the cache");
    let endpoint_bytes = std::mem::size_of::<Endpoint>() as u64;
    let many = (PREFETCH_ABOVE_BYTES / endpoint_bytes + 1) as u32;
    assert!(core_of(many).reads_ahead(), "{many} endpoints of {endpoint_bytes} bytes");
    assert!(!core_of(many / 8).reads_ahead());
}

mod auth;
mod counters;
mod exactly_once;
mod map_changes;
mod reads;
mod replication;
