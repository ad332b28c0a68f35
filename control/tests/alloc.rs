//! No heap allocation per request on the hot path: decode, dispatch, apply and encode of
//! GET, PUT (overwrite), CAS, DELETE-miss, PING and multi-GET, counted by a global allocator.

use control::{Core, CoreConfig, NodeLayout, NodeStats};
use dataplane::{Handler, Transmit};
use proto::{encode_message, HeaderFields, Opcode};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A transmit side that copies into one preallocated buffer, as a port's pool would.
struct Sink {
    buf: Vec<u8>,
    datagrams: u64,
}

impl Transmit for Sink {
    fn send(&mut self, _peer: SocketAddr, datagram: &[u8]) -> bool {
        self.buf.clear();
        self.buf.extend_from_slice(datagram);
        self.datagrams += 1;
        true
    }
}

fn datagram(
    op: Opcode,
    tracking_id: u64,
    token: u64,
    keys: &[&[u8]],
    value: &[u8],
    version: u64,
) -> Vec<u8> {
    let mut out = vec![0u8; 1472];
    let mut len = 0;
    for (i, key) in keys.iter().enumerate() {
        let h = HeaderFields {
            opcode: op as u8,
            client_id: 1,
            tracking_id: tracking_id + i as u64,
            token,
            version,
            ..HeaderFields::default()
        };
        len += encode_message(&mut out[len..], &h, key, value).unwrap();
    }
    out.truncate(len);
    out
}

#[test]
fn the_request_path_does_not_allocate() {
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let layout =
        Arc::new(NodeLayout::new(64, vec![SocketAddr::from(([127, 0, 0, 1], 7000))]).unwrap());
    let map: Arc<[u8]> = layout.map().encode().into();
    let mut core =
        Core::new(CoreConfig::new(0, layout, [3; 32]), Arc::new(NodeStats::new(1)), map).unwrap();
    let mut sink = Sink { buf: Vec::with_capacity(2048), datagrams: 0 };

    // Learn the token, create the keys, then build every request before counting.
    core.handle_datagram(0, peer, &datagram(Opcode::Ping, 1, 0, &[b""], b"", 0), &mut sink);
    let token = proto::Messages::new(&sink.buf).next().unwrap().unwrap().header.token;
    let keys: Vec<Vec<u8>> = (0..16).map(|i| format!("key-{i}").into_bytes()).collect();
    let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    for (i, key) in key_refs.iter().enumerate() {
        core.handle_datagram(
            0,
            peer,
            &datagram(Opcode::Put, 100 + i as u64, token, &[key], &[7; 32], 0),
            &mut sink,
        );
    }
    const ROUNDS: u64 = 2_000;
    let mut requests = Vec::new();
    for round in 0..ROUNDS {
        let id = 1_000 + round * 100;
        let key = key_refs[(round % 16) as usize];
        requests.push(datagram(Opcode::Get, id, token, &[key], b"", 0));
        requests.push(datagram(Opcode::Put, id + 1, token, &[key], &[round as u8; 32], 0));
        requests.push(datagram(Opcode::Cas, id + 2, token, &[key], &[1; 32], 1));
        requests.push(datagram(Opcode::Delete, id + 3, token, &[b"absent"], b"", 0));
        requests.push(datagram(Opcode::Ping, id + 4, token, &[b""], b"", 0));
        requests.push(datagram(Opcode::Get, id + 10, token, &key_refs, b"", 0));
    }
    let sent_before = sink.datagrams;

    COUNTING.store(true, Relaxed);
    for (i, request) in requests.iter().enumerate() {
        core.handle_datagram(1_000 + i as u64, peer, request, &mut sink);
        if i % 32 == 31 {
            core.end_batch(1_000 + i as u64, &mut sink);
        }
    }
    COUNTING.store(false, Relaxed);

    // Five single requests, and 16 GET replies of 110 bytes in two 1,472-byte datagrams.
    assert_eq!(sink.datagrams - sent_before, 7 * ROUNDS, "every request was answered");
    assert_eq!(core.counters().requests, 1 + 16 + ROUNDS * (5 + 16));
    assert_eq!(ALLOCATIONS.load(Relaxed), 0, "allocations on the request path");
}
