//! decode → dispatch → apply → encode, per request, through `control::Core` with a transmit
//! side that copies into one buffer (as a port's pool would). Run: `cargo bench --bench dispatch`.

use control::{Core, CoreConfig, NodeLayout, NodeStats};
use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use dataplane::{Handler, Transmit};
use proto::{encode_message, HeaderFields, Opcode};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

struct Sink(Vec<u8>);

impl Transmit for Sink {
    fn send(&mut self, _peer: SocketAddr, datagram: &[u8]) -> bool {
        self.0.clear();
        self.0.extend_from_slice(datagram);
        true
    }
}

const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

fn request(op: Opcode, tracking_id: u64, token: u64, keys: &[Vec<u8>], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 1472];
    let mut len = 0;
    for (i, key) in keys.iter().enumerate() {
        let h = HeaderFields {
            opcode: op as u8,
            client_id: 1,
            tracking_id: tracking_id + i as u64,
            token,
            ..HeaderFields::default()
        };
        len += encode_message(&mut out[len..], &h, key, value).unwrap();
    }
    out.truncate(len);
    out
}

/// The key line the `_sealed` cases' node accepts and their datagrams are sealed with.
const KEY_LINE: &str =
    "1 bench admin 0707070707070707070707070707070707070707070707070707070707070707";

/// `datagram` sealed with `KEY_LINE`'s key at wall time 0 (the bench core's clock).
fn sealed(datagram: &[u8]) -> Vec<u8> {
    let entry = &proto::auth::parse_key_file(KEY_LINE).unwrap()[0];
    let mut out = Vec::new();
    proto::auth::seal(entry.id, &entry.secret, 0, datagram, &mut out);
    out
}

fn setup(keys: usize, auth: bool) -> (Core, Sink, u64, Vec<Vec<u8>>) {
    let layout =
        Arc::new(NodeLayout::new(1024, vec![SocketAddr::from(([127, 0, 0, 1], 7000))]).unwrap());
    let map: Arc<[u8]> = layout.map().encode().into();
    let config = CoreConfig {
        auth: auth.then(|| Arc::new(control::KeyTable::parse(KEY_LINE).unwrap())),
        ..CoreConfig::new(0, layout, [3; 32])
    };
    let mut core = Core::new(config, Arc::new(NodeStats::new(1)), map).unwrap();
    let seal = |d: Vec<u8>| if auth { sealed(&d) } else { d };
    let mut sink = Sink(Vec::with_capacity(2048));
    let ping = seal(request(Opcode::Ping, 0, 0, &[Vec::new()], b""));
    core.handle_datagram(0, PEER, &ping, &mut sink);
    let token = proto::Messages::new(&sink.0).next().unwrap().unwrap().header.token;
    let names: Vec<Vec<u8>> = (0..keys).map(|i| format!("key:{i:08}").into_bytes()).collect();
    for (i, key) in names.iter().enumerate() {
        core.handle_datagram(
            0,
            PEER,
            &seal(request(Opcode::Put, 1 + i as u64, token, std::slice::from_ref(key), &[7; 32])),
            &mut sink,
        );
    }
    (core, sink, token, names)
}

fn bench(c: &mut Criterion) {
    let (mut core, mut sink, token, names) = setup(100_000, false);
    let gets: Vec<Vec<u8>> = (0..4096)
        .map(|i| request(Opcode::Get, 0, token, &[names[(i * 7919) % names.len()].clone()], b""))
        .collect();
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("get_hit_32B", |b| {
        b.iter(|| {
            i = (i + 1) % gets.len();
            core.handle_datagram(black_box(1), PEER, black_box(&gets[i]), &mut sink);
        })
    });
    let mut tracking = 10_000_000u64;
    group.bench_function("put_overwrite_32B", |b| {
        b.iter_batched(
            || {
                tracking += 1;
                let key = names[(tracking as usize * 31) % names.len()].clone();
                (request(Opcode::Put, tracking, token, &[key], &[9; 32]), tracking * 1_000_000)
            },
            // A millisecond per write, so completion records expire (30 s) and the table stays
            // in its steady state instead of filling up and answering BUSY.
            |(r, now)| core.handle_datagram(black_box(now), PEER, &r, &mut sink),
            BatchSize::SmallInput,
        )
    });
    let multi = request(Opcode::Get, 0, token, &names[..12], b"");
    group.throughput(Throughput::Elements(12));
    group.bench_function("multi_get_12x32B", |b| {
        b.iter(|| core.handle_datagram(3, PEER, black_box(&multi), &mut sink))
    });
    group.finish();
    assert_eq!(core.counters().busy, 0, "the benchmark measured BUSY replies");
    // The same GETs to a node with `--auth-keys`, each datagram sealed (one BLAKE3 pass).
    let (mut core, mut sink, token, names) = setup(100_000, true);
    let gets: Vec<Vec<u8>> = (0..4096)
        .map(|i| {
            sealed(&request(Opcode::Get, 0, token, &[names[(i * 7919) % names.len()].clone()], b""))
        })
        .collect();
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("get_hit_32B_sealed", |b| {
        b.iter(|| {
            i = (i + 1) % gets.len();
            core.handle_datagram(black_box(1), PEER, black_box(&gets[i]), &mut sink);
        })
    });
    group.finish();
    let c = core.counters();
    assert_eq!((c.unauthenticated, c.get_misses), (0, 0), "every sealed GET served and a hit");
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;
criterion_main!(benches);
