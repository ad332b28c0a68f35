//! No heap allocation per request on the hot path: decode, dispatch, apply and encode of
//! GET, PUT (overwrite), CAS, DELETE-miss, PING and multi-GET, counted by a global allocator.
//!
//! The one structure that takes memory as it goes is the completion table, whose memory follows
//! the records it holds: it allocates when it holds more than it ever did (a ring chunk per
//! 4,096 records, an index per doubling), never at a steady write rate. So each test first
//! brings it to the size its measured phase needs.

use control::{Core, CoreConfig, NodeLayout, NodeStats};
use dataplane::{Handler, Transmit};
use proto::{encode_message, HeaderFields, Opcode};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel do not count each other's allocations.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_allocation() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A transmit side that copies into one preallocated buffer, as a port's pool would.
struct Sink {
    buf: Vec<u8>,
    messages: u64,
}

impl Transmit for Sink {
    fn send(&mut self, _peer: SocketAddr, datagram: &[u8]) -> bool {
        self.buf.clear();
        self.buf.extend_from_slice(datagram);
        self.messages += proto::Messages::new(datagram).count() as u64;
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

/// A core whose endpoints write real files (as `cradle node` opens them), acknowledging
/// after each batch's flush: the device under test must not allocate either.
fn file_backed_core(
    config: CoreConfig,
    stats: Arc<NodeStats>,
    map: Arc<[u8]>,
    dir: &tempfile::TempDir,
) -> Core {
    use storage::{BlobStore, FileVolume, Shelf, StoreConfig};
    let store_config = StoreConfig::default();
    let volume = |name: &str| Box::new(FileVolume::new(dir.path().join(name)));
    let (blobs, _) = BlobStore::open(volume("blobs"), &store_config).unwrap();
    let endpoints = config.layout.endpoints_on(config.core) as u32;
    let (shelf, stores, _) =
        Shelf::open(volume("log"), blobs, &store_config, endpoints, u64::MAX).unwrap();
    let storage = control::CoreStorage {
        shelf,
        stores,
        durability: control::Durability::Flushed,
        compaction_step_bytes: 256 << 10,
        sync_clock: None,
        recovered: Vec::new(),
    };
    Core::with_storage(config, stats, map, storage).unwrap()
}

#[test]
fn the_request_path_does_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let layout =
        Arc::new(NodeLayout::new(64, vec![SocketAddr::from(([127, 0, 0, 1], 7000))]).unwrap());
    let map: Arc<[u8]> = layout.map().encode().into();
    // A 3 ms completion TTL (of the test's virtual time): the warm-up's 12 ms bring the table
    // to its steady size, about 1,500 records.
    let config = CoreConfig { completion_ttl_ns: 3_000_000, ..CoreConfig::new(0, layout, [3; 32]) };
    let mut core = file_backed_core(config, Arc::new(NodeStats::new(1)), map, &dir);
    let mut sink = Sink { buf: Vec::with_capacity(2048), messages: 0 };

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
    // Twice the measured rounds: the first half warms up (buffers reach their working size).
    for round in 0..2 * ROUNDS {
        let id = 1_000 + round * 100;
        let key = key_refs[(round % 16) as usize];
        requests.push(datagram(Opcode::Get, id, token, &[key], b"", 0));
        requests.push(datagram(Opcode::Put, id + 1, token, &[key], &[round as u8; 32], 0));
        requests.push(datagram(Opcode::Cas, id + 2, token, &[key], &[1; 32], 1));
        requests.push(datagram(Opcode::Delete, id + 3, token, &[b"absent"], b"", 0));
        requests.push(datagram(Opcode::Ping, id + 4, token, &[b""], b"", 0));
        requests.push(datagram(Opcode::Get, id + 10, token, &key_refs, b"", 0));
    }
    core.end_batch(0, &mut sink); // the set-up writes' group commit and replies
    let (warm, measured) = requests.split_at(requests.len() / 2);
    // Bursts of 32, a microsecond per datagram, and an empty burst at the end (the queue is
    // drained: held write replies are committed).
    let mut now = 1_000;
    let mut serve = |core: &mut Core, sink: &mut Sink, batch: &[Vec<u8>]| {
        for (i, request) in batch.iter().enumerate() {
            now += 1_000;
            core.handle_datagram(now, peer, request, sink);
            if i % 32 == 31 {
                core.end_batch(now, sink);
            }
        }
        core.end_batch(now, sink);
    };
    serve(&mut core, &mut sink, warm);
    let sent_before = sink.messages;

    COUNTING.with(|c| c.set(true));
    serve(&mut core, &mut sink, measured);
    COUNTING.with(|c| c.set(false));

    assert_eq!(sink.messages - sent_before, (5 + 16) * ROUNDS, "every request was answered");
    assert_eq!(core.counters().requests, 1 + 16 + 2 * ROUNDS * (5 + 16));
    assert_eq!(ALLOCATIONS.with(Cell::get), 0, "allocations on the request path");
}

/// The whole loop over a real socket: `recvmmsg`, decode, dispatch, encode, `sendmmsg`. The
/// client side runs in this same thread with pre-encoded requests and a stack buffer, so every
/// allocation counted is the server's.
#[test]
fn the_socket_loop_does_not_allocate() {
    use dataplane::{Port, Runner, RunnerConfig, UdpConfig, UdpPort};
    let mut port =
        UdpPort::bind(SocketAddr::from(([127, 0, 0, 1], 0)), UdpConfig::default()).unwrap();
    let addr = port.local_addr();
    let layout = Arc::new(NodeLayout::new(64, vec![addr]).unwrap());
    let map: Arc<[u8]> = layout.map().encode().into();
    let stats = Arc::new(NodeStats::for_layout(&layout));
    let dir = tempfile::tempdir().unwrap();
    let mut core = file_backed_core(CoreConfig::new(0, layout, [3; 32]), stats, map, &dir);
    let mut runner = Runner::new(RunnerConfig::default());
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];

    // Learn the token and write the keys before counting.
    client.send_to(&datagram(Opcode::Ping, 1, 0, &[b""], b"", 0), addr).unwrap();
    while runner.step(&mut port, &mut core).unwrap() == 0 {}
    let (n, _) = client.recv_from(&mut buf).unwrap();
    let token = proto::Messages::new(&buf[..n]).next().unwrap().unwrap().header.token;
    let keys: Vec<Vec<u8>> = (0..32).map(|i| format!("key-{i}").into_bytes()).collect();
    let mut requests = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        requests.push(datagram(Opcode::Put, 10 + i as u64, token, &[key], &[1; 32], 0));
    }
    // 5,120 writes that the completion table keeps (5 s): it then has room (index and ring)
    // for the measured phase's 1,600 without taking more memory.
    let mut fill = Vec::new();
    for round in 0..160u64 {
        for (i, key) in keys.iter().enumerate() {
            let id = 100_000 + round * 64 + i as u64;
            fill.push(datagram(Opcode::Put, id, token, &[key], &[round as u8; 32], 0));
        }
    }
    for round in 0..200u64 {
        for (i, key) in keys.iter().enumerate() {
            let id = 1_000 + round * 64 + i as u64;
            let op = if i % 4 == 0 { Opcode::Put } else { Opcode::Get };
            requests.push(datagram(op, id, token, &[key], &[round as u8; 32], 0));
        }
    }
    let (warm, measured) = requests.split_at(32);
    let mut exchange = |batch: &[Vec<u8>]| {
        for request in batch {
            client.send_to(request, addr).unwrap();
        }
        let mut handled = 0;
        while handled < batch.len() {
            handled += runner.step(&mut port, &mut core).unwrap();
        }
        // A burst of 32 suggests more is queued, so the group commit waits for the next
        // iteration; this one finds the queue empty and commits.
        runner.step(&mut port, &mut core).unwrap();
        // Write replies wait for the batch's flush and share datagrams: count messages.
        let mut answered = 0;
        while answered < batch.len() {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            for m in proto::Messages::new(&buf[..n]) {
                assert_eq!(m.unwrap().header.status, 0);
                answered += 1;
            }
        }
    };
    exchange(warm);
    for batch in fill.chunks(32) {
        exchange(batch);
    }
    exchange(&measured[..32]);

    COUNTING.with(|c| c.set(true));
    for batch in measured.chunks(32) {
        exchange(batch);
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.with(Cell::get), 0, "allocations in the socket loop");
}
