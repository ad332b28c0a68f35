//! Storage micro-benchmarks: append and lookup ns/op, replay GB/s, index bytes per key.
//! The index sizes are printed once (they are sizes, not times).

use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use storage::{BlobStore, FileVolume, Shelf, Store, StoreConfig};

/// A core of one endpoint (the measures are per endpoint, and one endpoint is the worst
/// case for group commit: nothing shares its `fdatasync`).
fn open(dir: &std::path::Path, config: &StoreConfig) -> (Store, Shelf, u64) {
    let (blobs, _) = BlobStore::open(Box::new(FileVolume::new(dir.join("blobs"))), config)
        .expect("blob store opens");
    let volume = Box::new(FileVolume::new(dir.join("core")));
    let (shelf, mut stores, report) =
        Shelf::open(volume, blobs, config, 1, u64::MAX).expect("log opens");
    (stores.pop().expect("one endpoint"), shelf, report.bytes_replayed)
}

fn key(i: u64) -> [u8; 16] {
    let mut k = *b"key-\0\0\0\0\0\0\0\0\0\0\0\0";
    k[8..].copy_from_slice(&i.to_le_bytes());
    k
}

/// Fills a store with `n` keys of 32-byte values and reports the index cost per key.
fn fill(dir: &std::path::Path, n: u64) -> (Store, Shelf) {
    let config = StoreConfig::default();
    let (mut store, mut shelf, _) = open(dir, &config);
    for i in 0..n {
        store.put(&mut shelf, &key(i), &[7; 32], None).unwrap();
        if i.is_multiple_of(4096) {
            store.write_out(&mut shelf).unwrap();
        }
    }
    store.flush(&mut shelf).unwrap();
    let stats = store.stats();
    eprintln!(
        "index at {n} keys: {} bytes, {:.1} bytes/key",
        stats.index_bytes,
        stats.index_bytes as f64 / n as f64
    );
    (store, shelf)
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut shelf, _) = open(dir.path(), &StoreConfig::default());
    let mut i = 0u64;
    c.bench_function("append 16 B key + 32 B value (memory class)", |b| {
        b.iter(|| {
            i += 1;
            store.put(&mut shelf, &key(i % 1_000_000), &[1; 32], None).unwrap();
            if i.is_multiple_of(32) {
                store.write_out(&mut shelf).unwrap();
            }
        })
    });
    let mut group = c.benchmark_group("flushed");
    group.sample_size(10);
    group.bench_function("batch of 32 appends + flush (fdatasync)", |b| {
        b.iter(|| {
            for _ in 0..32 {
                i += 1;
                store.put(&mut shelf, &key(i % 1_000_000), &[1; 32], None).unwrap();
            }
            store.flush(&mut shelf).unwrap();
        })
    });
    group.finish();
    let keys = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut shelf) = fill(dir.path(), keys);
    let mut j = 0u64;
    c.bench_function("lookup among 10^6 keys", |b| {
        b.iter(|| {
            j = (j + 7_919) % keys;
            black_box(store.get(&mut shelf, &key(j)).unwrap().unwrap().1)
        })
    });
}

fn replay(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default();
    {
        let (mut store, mut shelf, _) = open(dir.path(), &config);
        for i in 0..400_000u64 {
            store.put(&mut shelf, &key(i), &[3; 1000], None).unwrap();
        }
        store.flush(&mut shelf).unwrap();
    }
    let (_, _, bytes) = open(dir.path(), &config);
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("400k records of 1 KiB", |b| {
        b.iter_batched(|| (), |()| open(dir.path(), &config).2, BatchSize::PerIteration)
    });
    group.finish();
}

fn index_size(_: &mut Criterion) {
    for n in [100_000u64, 1_000_000, 10_000_000] {
        let dir = tempfile::tempdir().unwrap();
        drop(fill(dir.path(), n));
    }
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::append, super::replay, super::index_size);
}
use group::benches;
criterion_main!(benches);
