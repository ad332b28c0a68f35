//! Storage micro-benchmarks: append and lookup ns/op, replay GB/s, streaming one endpoint
//! out of a big core's log, index bytes per key.
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

/// Streaming one endpoint out (the migration primitive): a snapshot of its index, then each
/// record read. Its 1 MiB (1,024 values of 1 KiB) is spread through a core's log holding
/// 1 GiB of another endpoint's records, against the same endpoint alone on its core: the
/// two should cost the same, whatever the core holds.
fn stream_one_endpoint(c: &mut Criterion) {
    let config = StoreConfig::default();
    let value = [5u8; 1024];
    let cores: Vec<(&str, u64, tempfile::TempDir)> =
        [("alone on its core", 0u64), ("in a core of 1 GiB", 1 << 20)]
            .into_iter()
            .map(|(name, others)| {
                let dir = tempfile::tempdir().unwrap();
                let (blobs, _) =
                    BlobStore::open(Box::new(FileVolume::new(dir.path().join("blobs"))), &config)
                        .unwrap();
                let volume = Box::new(FileVolume::new(dir.path().join("core")));
                let (mut shelf, mut stores, _) =
                    Shelf::open(volume, blobs, &config, 2, u64::MAX).unwrap();
                let per_small = others / 1024;
                for i in 0..1024u64 {
                    stores[0].put(&mut shelf, &key(i), &value, None).unwrap();
                    for j in 0..per_small {
                        stores[1].put(&mut shelf, &key(i * per_small + j), &value, None).unwrap();
                    }
                    stores[0].write_out(&mut shelf).unwrap();
                }
                stores[0].flush(&mut shelf).unwrap();
                (name, others, dir)
            })
            .collect();
    let mut group = c.benchmark_group("stream one endpoint of 1 MiB");
    group.throughput(Throughput::Bytes(1024 * 1024));
    for (name, _, dir) in &cores {
        let (blobs, _) =
            BlobStore::open(Box::new(FileVolume::new(dir.path().join("blobs"))), &config).unwrap();
        let volume = Box::new(FileVolume::new(dir.path().join("core")));
        let (mut shelf, mut stores, _) = Shelf::open(volume, blobs, &config, 2, u64::MAX).unwrap();
        let store = &mut stores[0];
        group.bench_function(*name, |b| {
            b.iter(|| {
                let snapshot = store.snapshot(&shelf);
                let mut bytes = 0;
                for i in 0..snapshot.len() {
                    if let storage::SnapshotRead::Live { value, .. } =
                        store.snapshot_entry(&mut shelf, &snapshot, i).unwrap()
                    {
                        bytes += value.len();
                    }
                }
                assert_eq!(bytes, 1024 * 1024);
                bytes
            })
        });
    }
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
    criterion::criterion_group!(
        benches,
        super::append,
        super::replay,
        super::stream_one_endpoint,
        super::index_size
    );
}
use group::benches;
criterion_main!(benches);
