//! Reads in fragments never outlive the version they read; STATS is the node's.

use super::*;

const OTHER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9)), 5555);

fn put(h: &mut Harness, key: &[u8], value: &[u8]) -> u64 {
    let base = h.request(Opcode::Put, key, b"");
    let mut last = None;
    for i in 0..fragment_count(value.len() as u32) {
        let (f, span) = fragment(base, value, i);
        last = h.send(&[(f, key, &value[span])]).pop();
    }
    let (r, _) = last.expect("the last fragment is answered");
    assert_eq!(r.status, 0);
    r.version
}

fn range(get: HeaderFields, version: u64, index: u32) -> HeaderFields {
    HeaderFields { flags: flags::RANGE, frag_index: index, frag_count: 1, version, ..get }
}

/// Sends a request from another sender (its own client id and token).
fn from_other(
    h: &mut Harness,
    mut request: HeaderFields,
    key: &[u8],
) -> Vec<(HeaderFields, Vec<u8>)> {
    request.client_id = 77;
    request.token = h.core.tokens.token(OTHER);
    let mut datagram = vec![0u8; 512];
    let len = encode_message(&mut datagram, &request, key, b"").unwrap();
    let mut wire = Wire::default();
    h.core.handle_datagram(1_000, OTHER, &datagram[..len], &mut wire);
    wire.messages()
}

#[test]
fn after_an_overwrite_or_a_delete_no_range_pull_reads_the_old_bytes() {
    for size in [12_000usize, 200 << 10] {
        let mut h = Harness::new(1, 0);
        let old: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let v1 = put(&mut h, b"k", &old);
        let get = h.request(Opcode::Get, b"k", b"");
        let first = h.send(&[(get, b"k", b"")]);
        let window = fragment_count(size as u32).min(FRAGMENT_WINDOW);
        assert_eq!(first.len(), window as usize, "{size}: first window");
        let last = fragment_count(size as u32) - 1;
        let (r, data) = h.one(range(get, v1, last), b"k", b"");
        assert_eq!((r.status, data.as_slice()), (0, &old[fragment_span(size as u32, last)]));

        let v2 = put(&mut h, b"k", &vec![1u8; size]);
        let (r, data) = h.one(range(get, v1, last), b"k", b"");
        assert_eq!((r.status, r.version), (Status::VersionMismatch as u16, v2), "{size}");
        assert!(data.is_empty());
        for version in 0..=v2 + 3 {
            for (r, _) in from_other(&mut h, range(get, version, last), b"k") {
                assert!(r.status != 0 || version == v2, "{size}: version {version} served");
            }
        }
        let delete = h.request(Opcode::Delete, b"k", b"");
        assert_eq!(h.one(delete, b"k", b"").0.status, 0);
        for version in [v1, v2] {
            let (r, data) = h.one(range(get, version, last), b"k", b"");
            assert_eq!((r.status, r.version), (Status::VersionMismatch as u16, 0), "{size}");
            assert!(data.is_empty());
        }
        assert_eq!(h.core.read_cache.len(), 0, "{size}: no copy outlives the delete");
    }
}

#[test]
fn a_deleted_blob_value_chunks_are_unreadable_at_once_and_freed() {
    let mut h = Harness::new(1, 0);
    let value: Vec<u8> = (0..200u32 << 10).map(|i| (i % 241) as u8).collect();
    put(&mut h, b"blob", &value);
    let mut reference = h.request(Opcode::Get, b"blob", b"");
    reference.flags = flags::REF_ONLY;
    let (r, payload) = h.one(reference, b"blob", b"");
    assert!(r.has(flags::REF_ONLY));
    let hashes = BlobReference::decode(&payload).unwrap().hashes;
    let mut wire = Wire::default();
    h.core.end_batch(1_000_000_000, &mut wire);
    assert_eq!(h.core.counters().blob_chunks, 4, "200 KiB in 64 KiB chunks");
    let delete = h.request(Opcode::Delete, b"blob", b"");
    assert_eq!(h.one(delete, b"blob", b"").0.status, 0);
    for hash in &hashes {
        let chunk = h.request(Opcode::Chunk, hash, b"");
        assert_eq!(h.one(chunk, hash, b"").0.status, Status::NotFound as u16, "at once");
    }
    // The memory class flushes the written endpoint within milliseconds; the counters
    // refresh every 250 ms.
    h.core.end_batch(1_010_000_000, &mut wire);
    h.core.end_batch(1_300_000_000, &mut wire);
    assert_eq!((h.core.counters().blob_chunks, h.core.counters().blob_bytes), (0, 0));
}

#[test]
fn a_range_pull_is_served_from_the_copy_of_its_own_read_only() {
    let mut h = Harness::new(1, 0);
    let value: Vec<u8> = (0..100u32 << 10).map(|i| (i % 239) as u8).collect();
    let version = put(&mut h, b"k", &value);
    let get = h.request(Opcode::Get, b"k", b"");
    h.send(&[(get, b"k", b"")]);
    assert_eq!(h.core.read_cache.len(), 1);
    // Another reader of the same live version gets the same bytes, assembled for itself.
    let replies = from_other(&mut h, range(get, version, 40), b"k");
    assert_eq!(replies[0].1, &value[fragment_span(value.len() as u32, 40)]);
    assert_eq!(h.core.read_cache.len(), 2, "its own copy");
}

#[test]
fn stats_from_any_core_are_the_node_totals() {
    let addrs = (0..2).map(|i| SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))).collect();
    let layout = Arc::new(NodeLayout::new(16, addrs).unwrap());
    let map: Arc<[u8]> = layout.map().encode().into();
    let stats = Arc::new(NodeStats::new(2));
    let mut cores: Vec<Harness> = (0..2)
        .map(|core| {
            let config = CoreConfig::new(core, layout.clone(), [5; 32]);
            let core = Core::new(config, stats.clone(), map.clone()).unwrap();
            let mut h = Harness { core, token: 0, tracking: 0 };
            h.token = h.core.tokens.token(CLIENT);
            h
        })
        .collect();
    for _ in 0..5 {
        let ping = cores[0].request(Opcode::Ping, b"", b"");
        cores[0].one(ping, b"", b"");
    }
    cores[0].core.end_batch(1_000, &mut Wire::default());
    let request = cores[1].request(Opcode::Stats, b"", b"");
    let (_, json) = cores[1].one(request, b"", b"");
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["cores"], 2);
    assert_eq!(json["requests"], 6, "core 0's five PINGs and this STATS");
}
