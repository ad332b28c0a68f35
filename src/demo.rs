//! `cradle demo`: a node on an embedded default and a short mixed workload, narrated.

use crate::node::{Node, NodeOptions};
use client::{CasOutcome, Client, ClientConfig};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: usize = 5_000;

/// Runs the demo; fails if anything read back differs from what was written.
pub(crate) fn run() -> Result<ExitCode, String> {
    let data_dir = std::env::temp_dir().join(format!("cradle-demo-{}", std::process::id()));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(2)) as u32;
    let options = NodeOptions {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        cores,
        data_dir: data_dir.clone(),
        partitions: 64,
        spin: Duration::from_micros(50),
        pin: false,
        metrics: None,
        durability: control::Durability::Flushed,
        store: storage::StoreConfig::default(),
        compaction_step_bytes: 256 << 10,
        sync_interval: Duration::from_millis(100),
        udp_offload: true,
        completion_records: control::COMPLETION_RECORDS_DEFAULT,
        memcache: None,
        cluster: None,
        io: crate::io::IoOptions::default(),
    };
    let node = Node::start(&options, Arc::new(AtomicBool::new(false)))?;
    println!(
        "node: {} core(s) at {:?}, {} partitions, data dir {}",
        cores,
        node.addrs,
        options.partitions,
        data_dir.display()
    );
    let outcome = workload(&node);
    let stopped = node.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
    outcome?;
    stopped?;
    println!("demo: all checks passed");
    Ok(ExitCode::SUCCESS)
}

fn step<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let started = Instant::now();
    let value = f()?;
    println!("  {what:<56} {:>9.1} ms", started.elapsed().as_secs_f64() * 1e3);
    Ok(value)
}

fn workload(node: &Node) -> Result<(), String> {
    let config = ClientConfig::new(node.addrs.clone());
    let mut client = step("connect and fetch the partition map", || {
        Client::connect(config).map_err(|e| e.to_string())
    })?;
    let err = |e: client::Error| e.to_string();
    step(&format!("put {KEYS} keys, 64 in flight, each acked after fdatasync"), || {
        // One thread, many writes in flight: the node's group commit covers them together.
        let mut in_flight = 0;
        for i in 0..KEYS {
            let key = format!("user:{i}").into_bytes();
            client.submit(client::Request::Put { key, value: value_of(i) });
            in_flight += 1;
            while in_flight == 64 || (i + 1 == KEYS && in_flight > 0) {
                let (_, outcome) = client.wait(Duration::from_secs(5)).ok_or("no reply")?;
                outcome.into_version().map_err(err)?;
                in_flight -= 1;
            }
        }
        Ok(())
    })?;
    step("one more put, alone (the fdatasync is the round trip)", || {
        client.put(b"user:alone", b"x").map(|_| ()).map_err(err)
    })?;
    step(&format!("multi-get {KEYS} keys, 16 per datagram"), || {
        let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("user:{i}").into_bytes()).collect();
        for (chunk_index, chunk) in keys.chunks(16).enumerate() {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            for (j, got) in client.get_many(&refs).map_err(err)?.into_iter().enumerate() {
                let i = chunk_index * 16 + j;
                let got = got.ok_or(format!("user:{i} is missing"))?;
                if got.bytes != value_of(i) {
                    return Err(format!("user:{i} came back different"));
                }
            }
        }
        Ok(())
    })?;
    step("compare-and-swap: one wins, a stale one loses", || {
        let version = client.put(b"counter", b"0").map_err(err)?;
        let won = client.cas(b"counter", version, b"1").map_err(err)?;
        let lost = client.cas(b"counter", version, b"2").map_err(err)?;
        match (won, lost) {
            (CasOutcome::Swapped { .. }, CasOutcome::Mismatch { .. }) => Ok(()),
            other => Err(format!("unexpected CAS outcomes {other:?}")),
        }
    })?;
    step("delete 100 keys, then they are gone", || {
        for i in 0..100 {
            let key = format!("user:{i}");
            if !client.delete(key.as_bytes()).map_err(err)?
                || client.get(key.as_bytes()).map_err(err)?.is_some()
            {
                return Err(format!("{key} was not deleted"));
            }
        }
        Ok(())
    })?;
    step("1 MiB value in fragments, written and read back", || {
        let big: Vec<u8> =
            (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        client.put(b"big", &big).map_err(err)?;
        let back = client.get(b"big").map_err(err)?.ok_or("big is missing")?;
        if back.bytes == big {
            Ok(())
        } else {
            Err("the 1 MiB value came back different".into())
        }
    })?;
    std::thread::sleep(Duration::from_millis(300)); // size counters are summed every 250 ms
    let stats = client.stats(node.addrs[0]).map_err(err)?;
    println!("node stats: {stats}");
    let c = client.client_stats();
    println!(
        "client: {} requests, {} retransmits, {} timeouts",
        c.requests, c.retransmits, c.timeouts
    );
    Ok(())
}

fn value_of(i: usize) -> Vec<u8> {
    format!("{i:0>32}").into_bytes()
}
