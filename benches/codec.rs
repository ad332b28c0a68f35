//! The wire codec alone: encode a request, parse a datagram of one and of 12 messages.
//! Run: `cargo bench --bench codec`.

use criterion::{criterion_main, Criterion, Throughput};
use proto::{encode_message, HeaderFields, Messages, Opcode};
use std::hint::black_box;

fn codec(c: &mut Criterion) {
    let h = HeaderFields {
        opcode: Opcode::Get as u8,
        client_id: 7,
        tracking_id: 9,
        ..HeaderFields::default()
    };
    let mut buf = [0u8; 1472];
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_get_16B_key", |b| {
        b.iter(|| {
            encode_message(black_box(&mut buf), black_box(&h), b"bench:0000000042", &[]).unwrap()
        })
    });
    let put = HeaderFields { opcode: Opcode::Put as u8, ..h };
    let len = encode_message(&mut buf, &put, b"bench:0000000042", &[7; 32]).unwrap();
    let one = buf[..len].to_vec();
    group.bench_function("parse_put_32B", |b| {
        b.iter(|| Messages::new(black_box(&one)).map(|m| m.unwrap().value.len()).sum::<usize>())
    });
    let mut many = vec![0u8; 1472];
    let mut len = 0;
    for i in 0..12u64 {
        let h = HeaderFields { tracking_id: i, ..h };
        len +=
            encode_message(&mut many[len..], &h, format!("bench:{i:010}").as_bytes(), &[]).unwrap();
    }
    many.truncate(len);
    group.throughput(Throughput::Elements(12));
    group.bench_function("parse_12_gets", |b| {
        b.iter(|| Messages::new(black_box(&many)).map(|m| m.unwrap().key.len()).sum::<usize>())
    });
    group.finish();
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::codec);
}
use group::benches;

criterion_main!(benches);
