//! The requests bulk tools are built on: SCAN pages routed by partition, reference GETs
//! (REF_ONLY) and CHUNK fetches, whole or by byte range, over a lossy simulated network and
//! through the blocking driver.

mod support;

use client::{BlobReference, Client, ClientConfig, Error, Request, ValueLocation};
use proto::{
    decode_scan_page, flags, key_hash, partition_of, partition_range, MapEntry, Opcode,
    PartitionMap, Status, FRAGMENT_BYTES,
};
use std::collections::HashSet;
use support::fake_server::FakeServer;
use support::in_memory::{bytes, InMemory};
use support::sim::{config, server_addr, Sim};

const EVENTS_MAX: usize = 2_000_000;

/// Two partitions, partition p on server p; both servers know the map.
fn two_partition_sim(seed: u64) -> Sim {
    let mut config = config(2);
    config.attempts_per_server = 12;
    let mut sim = Sim::new(seed, config);
    let entries = (0..2)
        .map(|p| {
            let (hash_start, hash_end) = partition_range(p, 2);
            MapEntry::single(hash_start, hash_end, p, server_addr(p as u16))
        })
        .collect();
    let map = PartitionMap::new(3, entries);
    for server in &mut sim.servers {
        server.map = map.clone();
        server.scan_page_keys = 7;
    }
    sim
}

#[test]
fn scan_pages_go_to_the_partition_owner_and_list_every_key_once() {
    for seed in 0..5 {
        let mut sim = two_partition_sim(seed);
        sim.loss_percent = 10;
        sim.duplicate_percent = 10;
        let mut written = [Vec::new(), Vec::new()];
        for i in 0..100u32 {
            let key = format!("key-{i:03}").into_bytes();
            let p = partition_of(key_hash(&key), 2) as usize;
            sim.servers[p].store_value(&key, vec![1]);
            written[p].push(key);
        }
        sim.call(Request::Map { server: server_addr(0) });
        for partition in 0..2u32 {
            let mut listed: Vec<Vec<u8>> = Vec::new();
            loop {
                let after = listed.last().cloned().unwrap_or_default();
                let reply = sim.call(Request::Scan { partition, after });
                assert_eq!(reply.status, Status::Ok, "seed {seed}");
                assert_eq!(reply.server, server_addr(partition as u16), "seed {seed}");
                let page = decode_scan_page(&reply.value).unwrap();
                assert!(page.len() <= 7);
                listed.extend(page.into_iter().map(<[u8]>::to_vec));
                if reply.version == 0 {
                    break;
                }
            }
            written[partition as usize].sort();
            assert_eq!(listed, written[partition as usize], "seed {seed}");
        }
        let other = sim.servers[0].requests.iter().filter(|h| h.opcode == Opcode::Scan as u8);
        assert!(other.into_iter().all(|h| h.partition == 0), "seed {seed}: routed by partition");
    }
}

#[test]
fn a_scan_of_a_partition_that_does_not_exist_fails_malformed() {
    let mut sim = two_partition_sim(1);
    let id = sim.submit(Request::Scan { partition: 9, after: Vec::new() });
    assert!(matches!(sim.run_until(id, EVENTS_MAX).1, Err(Error::Status(Status::Malformed))));
}

#[test]
fn a_reference_get_tells_blob_references_from_inline_values() {
    let mut sim = Sim::new(1, config(1));
    sim.loss_percent = 10;
    let big = bytes(7, 4 << 20);
    sim.servers[0].store_value(b"big", big.clone());
    sim.servers[0].store_value(b"small", b"tiny".to_vec());
    sim.servers[0].store_value(b"medium", bytes(8, 10_000));

    // 64 hashes: a 2,060-byte reference, itself fragmented, pulled with REF_ONLY RANGEs.
    let reply = sim.call(Request::GetRef { key: b"big".to_vec() });
    assert!(reply.reference);
    let reference = BlobReference::decode(&reply.value).unwrap();
    assert_eq!((reference.value_len, reference.chunk_bytes), (4 << 20, 64 << 10));
    assert_eq!(reference.hashes.len(), 64);
    assert_eq!(reference.hashes[5], *blake3::hash(&big[5 << 16..6 << 16]).as_bytes());
    let gets = sim.servers[0].requests.iter().filter(|h| h.opcode == Opcode::Get as u8);
    assert!(gets.into_iter().all(|h| h.has(flags::REF_ONLY)), "RANGE pulls keep REF_ONLY");

    let small = sim.call(Request::GetRef { key: b"small".to_vec() });
    assert!(!small.reference && small.value == b"tiny");
    let medium = sim.call(Request::GetRef { key: b"medium".to_vec() });
    assert!(!medium.reference && medium.value == bytes(8, 10_000), "fragmented inline value");
    let missing = sim.call(Request::GetRef { key: b"missing".to_vec() });
    assert_eq!(missing.status, Status::NotFound);
}

#[test]
fn chunks_arrive_whole_and_by_range_under_loss() {
    for seed in 0..5 {
        let mut sim = Sim::new(seed, config(1));
        sim.loss_percent = 10;
        sim.duplicate_percent = 10;
        let value = bytes(seed + 1, 200_000);
        sim.servers[0].store_value(b"v", value.clone());
        let reply = sim.call(Request::GetRef { key: b"v".to_vec() });
        let reference = BlobReference::decode(&reply.value).unwrap();
        let server = server_addr(0);
        let mut whole = Vec::new();
        for hash in &reference.hashes {
            let reply = sim.call(Request::Chunk { server, hash: *hash });
            assert_eq!(blake3::hash(&reply.value).as_bytes(), hash, "seed {seed}");
            whole.extend(reply.value);
        }
        assert!(whole == value, "seed {seed}: the chunks reassemble the value");

        // Bytes 40,000..43,000 of the first chunk: fragments 39..42 only.
        let hash = reference.hashes[0];
        let id = sim.submit(Request::ChunkRange { server, hash, offset: 40_000, len: 3_000 });
        let reply = sim.run_until(id, EVENTS_MAX).1.unwrap();
        assert!(reply.value == value[40_000..43_000], "seed {seed}");
        let last = *sim.sent.last().unwrap().2.first().unwrap();
        let asked: Vec<_> =
            sim.servers[0].requests.iter().filter(|h| h.tracking_id == last).collect();
        assert!(!asked.is_empty());
        for h in asked {
            assert!(h.has(flags::RANGE), "seed {seed}: no whole-chunk request");
            assert!(h.frag_index >= 39 && h.frag_index + h.frag_count <= 43, "seed {seed}: {h:?}");
        }
        // The tail of the last chunk, clipped to its end.
        let tail = *reference.hashes.last().unwrap();
        let tail_len = value.len() - 3 * (64 << 10);
        let id = sim.submit(Request::ChunkRange {
            server,
            hash: tail,
            offset: (tail_len - 100) as u32,
            len: 5 * FRAGMENT_BYTES as u32,
        });
        let reply = sim.run_until(id, EVENTS_MAX).1.unwrap();
        assert!(reply.value == value[value.len() - 100..], "seed {seed}");
    }
}

fn in_memory_client() -> Client<InMemory> {
    let addr = server_addr(0);
    let mut server = FakeServer::new(addr);
    server.scan_page_keys = 10;
    let transport = InMemory::new(server);
    Client::with_transport(ClientConfig::new(vec![addr]), transport).unwrap()
}

#[test]
fn the_driver_lists_keys_and_fetches_big_values_by_reference() {
    let mut client = in_memory_client();
    let mut keys: Vec<Vec<u8>> = (0..55).map(|i| format!("k{i:02}").into_bytes()).collect();
    for key in &keys {
        client.put(key, b"v").unwrap();
    }
    let (page, more) = client.scan(0, b"").unwrap();
    assert_eq!((page.len(), more), (10, true));
    keys.sort();
    assert_eq!(client.keys(0).unwrap(), keys);

    let big = bytes(3, 300_000);
    let version = client.put(b"big", &big).unwrap();
    let Some(ValueLocation::Blob { reference, version: v, server }) =
        client.get_reference(b"big").unwrap()
    else {
        panic!("a big value is a blob");
    };
    assert_eq!((v, server, reference.hashes.len()), (version, server_addr(0), 5));
    let chunk = client.fetch_chunk(server, &reference.hashes[1]).unwrap();
    assert!(chunk == big[64 << 10..128 << 10]);
    assert!(client.fetch_blob(server, &reference).unwrap() == big);
    let range = client.fetch_chunk_range(server, &reference.hashes[2], 1000, 10).unwrap();
    assert_eq!(range, big[(128 << 10) + 1000..(128 << 10) + 1010]);
    let Some(ValueLocation::Inline(value)) = client.get_reference(b"k01").unwrap() else {
        panic!("a small value comes back inline");
    };
    assert_eq!(value.bytes, b"v");
    assert_eq!(client.get_reference(b"nope").unwrap(), None);
    assert!(matches!(client.fetch_chunk(server, &[0; 32]), Err(Error::Status(Status::NotFound))));

    client.transport_mut().server.corrupt_chunks = true;
    assert!(matches!(client.fetch_chunk(server, &reference.hashes[0]), Err(Error::BadReply(_))));
    let seen: HashSet<u8> =
        client.transport_mut().server.requests.iter().map(|h| h.opcode).collect();
    assert!(seen.contains(&(Opcode::Chunk as u8)) && seen.contains(&(Opcode::Scan as u8)));
}
