//! `cradle demo`: the cluster story on this machine, narrated: three node processes on
//! 127.0.0.1, .2 and .3, writes replicated to all three, the node with the most primaries
//! killed with SIGKILL under load (the unavailability the clients saw, every acknowledged
//! write still there), then restarted and rebuilt until every partition is on all three
//! again. `--single-node`: one node in this process and a short mixed workload.

use crate::node::{Node, NodeOptions};
use crate::up::{LocalCluster, Spec};
use client::{CasOutcome, Client, ClientConfig, Request};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEYS: usize = 5_000;

/// Runs the cluster demo (or, `single_node`, the one-node demo); fails if anything read back
/// differs from what was written.
pub(crate) fn run(single_node: bool) -> Result<ExitCode, String> {
    if !single_node {
        return cluster_demo();
    }
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
        auth: None,
        cluster: None,
        io: crate::io::IoOptions::default(),
        health: None,
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

/// Keys the cluster demo writes before the kill.
const CLUSTER_KEYS: usize = 2_000;
/// Clients of CAS counters across the kill.
const CLIENTS: usize = 8;

fn cluster_demo() -> Result<ExitCode, String> {
    let dir = std::env::temp_dir().join(format!("cradle-demo-{}", std::process::id()));
    let port = free_port()?;
    println!(
        "cluster: 3 nodes on 127.0.0.1, .2, .3 port {port}, every partition on all three \
         (replication factor 3), data in {}",
        dir.display()
    );
    let stop = AtomicBool::new(false);
    let spec = Spec {
        nodes: 3,
        cores: 1,
        partitions: 12,
        port,
        extra: vec!["--failover-after-ms".into(), "200".into()],
        dir: &dir,
    };
    let outcome = (|| {
        let mut cluster =
            step("start 3 node processes; they elect a map group, place the map", || {
                LocalCluster::start(&spec, &stop)
            })?;
        let story = story(&mut cluster, &stop);
        cluster.stop();
        story
    })();
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    println!("demo: all checks passed");
    Ok(ExitCode::SUCCESS)
}

fn story(cluster: &mut LocalCluster, stop: &AtomicBool) -> Result<(), String> {
    let err = |e: client::Error| e.to_string();
    let members = cluster.members.clone();
    let mut client = Client::connect(ClientConfig::new(members.clone())).map_err(err)?;
    step(&format!("put {CLUSTER_KEYS} keys, 32 in flight, each on all 3 before its ack"), || {
        let mut in_flight = 0;
        for i in 0..CLUSTER_KEYS {
            let key = format!("user:{i}").into_bytes();
            client.submit(Request::Put { key, value: value_of(i) });
            in_flight += 1;
            while in_flight == 32 || (i + 1 == CLUSTER_KEYS && in_flight > 0) {
                let (_, outcome) = client.wait(Duration::from_secs(5)).ok_or("no reply")?;
                outcome.into_version().map_err(err)?;
                in_flight -= 1;
            }
        }
        Ok(())
    })?;
    let load = Load::start(&members);
    std::thread::sleep(Duration::from_millis(500));
    let map = client.map().map_err(err)?;
    let primaries = |m: usize| map.entries.iter().filter(|e| e.addr == members[m]).count();
    let victim = (0..members.len()).max_by_key(|&m| primaries(m)).expect("3 members");
    println!(
        "kill -9 node {} ({}, pid {}): the primary of {} of {} partitions, under load from \
         {CLIENTS} clients",
        victim + 1,
        members[victim],
        cluster.pid(victim).expect("running"),
        primaries(victim),
        map.entries.len()
    );
    *load.killed_at.lock().expect("lock") = Some(Instant::now());
    cluster.kill(victim);
    std::thread::sleep(Duration::from_millis(1_500));
    let (worst, counters) = load.stop()?;
    println!(
        "  the clients' longest wait across the kill: {:.0} ms (first delayed request to the \
         next answer; the node is failed over after 200 ms of silence)",
        worst.as_secs_f64() * 1e3
    );
    step(
        &format!(
            "every acknowledged write is there: {CLUSTER_KEYS} keys, {} increments, none twice",
            counters.iter().map(|(_, n)| n).sum::<u64>()
        ),
        || {
            for i in 0..CLUSTER_KEYS {
                let got = client.get(format!("user:{i}").as_bytes()).map_err(err)?;
                if got.map(|v| v.bytes) != Some(value_of(i)) {
                    return Err(format!("user:{i} lost or changed across the kill"));
                }
            }
            for (key, n) in &counters {
                let got = client.get(key.as_bytes()).map_err(err)?.ok_or(format!("{key} lost"))?;
                if got.bytes != n.to_string().into_bytes() {
                    return Err(format!(
                        "{key}: {n} acknowledged increments, the node holds {:?}",
                        String::from_utf8_lossy(&got.bytes)
                    ));
                }
            }
            Ok(())
        },
    )?;
    let restarted = Instant::now();
    step(&format!("restart node {}: it rejoins empty-handed and is rebuilt", victim + 1), || {
        cluster.restart(victim, stop)
    })?;
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let map = client.map().map_err(err)?;
        let count =
            |role| map.entries.iter().flat_map(|e| &e.replicas).filter(|r| r.role == role).count();
        let (learners, backups) = (count(proto::Role::Learner), count(proto::Role::Backup));
        let now = format!(
            "  {:>5.1} s: map epoch {}, {} backups and {} learners of {} partitions",
            restarted.elapsed().as_secs_f64(),
            map.epoch,
            backups,
            learners,
            map.entries.len()
        );
        if now[10..] != last[last.len().min(10)..] {
            println!("{now}");
            last = now;
        }
        if backups == 2 * map.entries.len()
            && lagging(&mut client, &members).is_some_and(|l| l == 0)
        {
            break;
        }
        if Instant::now() > deadline {
            return Err("the restarted node was not rebuilt within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let snapshot_records: u64 = members
        .iter()
        .filter_map(|&m| client.stats(m).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter_map(|s| s["snapshot_records"].as_u64())
        .sum();
    println!(
        "  rebuilt in {:.1} s: every partition on all three again, none lagging ({} records \
         streamed from snapshots; a learner joins once it is caught up and a completion TTL \
         has passed)",
        restarted.elapsed().as_secs_f64(),
        snapshot_records
    );
    let c = client.client_stats();
    println!(
        "client: {} requests, {} retransmits, {} timeouts",
        c.requests, c.retransmits, c.timeouts
    );
    Ok(())
}

/// Replicas behind their primaries, summed over the members' STATS (none if one did not
/// answer).
fn lagging(client: &mut Client, members: &[SocketAddr]) -> Option<u64> {
    let mut total = 0;
    for &m in members {
        let text = client.stats(m).ok()?;
        let stats: serde_json::Value = serde_json::from_str(&text).ok()?;
        total += stats["lagging"].as_array()?.iter().filter_map(|l| l["lag"].as_u64()).sum::<u64>();
    }
    Some(total)
}

/// A port free on 127.0.0.1, .2 and .3 (UDP), near 7400.
fn free_port() -> Result<u16, String> {
    let start = 7400 + (std::process::id() % 500) as u16 * 3;
    (0..100u16)
        .map(|i| start + i * 3)
        .find(|&port| {
            (1..=3u8).all(|i| {
                std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, i], port))).is_ok()
            })
        })
        .ok_or_else(|| "no free UDP port on 127.0.0.1-3 near 7400".into())
}

/// Clients keeping CAS counters, each measuring its longest wait after the kill.
struct Load {
    stop: Arc<AtomicBool>,
    killed_at: Arc<Mutex<Option<Instant>>>,
    workers: Vec<std::thread::JoinHandle<Result<Counted, String>>>,
}

/// What one counter client saw: its longest wait after the kill, its key, its value.
type Counted = (Duration, String, u64);

impl Load {
    fn start(members: &[SocketAddr]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let killed_at = Arc::new(Mutex::new(None::<Instant>));
        let workers = (0..CLIENTS)
            .map(|w| {
                let (members, stop, killed_at) =
                    (members.to_vec(), stop.clone(), killed_at.clone());
                std::thread::spawn(move || counter_client(w, members, &stop, &killed_at))
            })
            .collect();
        Load { stop, killed_at, workers }
    }

    /// Stops the clients: the longest wait any saw, and each counter's acknowledged value.
    fn stop(self) -> Result<(Duration, Vec<(String, u64)>), String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut worst = Duration::ZERO;
        let mut counters = Vec::new();
        for worker in self.workers {
            let (longest, key, n) = worker.join().map_err(|_| "a client panicked")??;
            worst = worst.max(longest);
            counters.push((key, n));
        }
        Ok((worst, counters))
    }
}

/// One client's counter, incremented by CAS until `stop`: a CAS whose outcome is unknown (an
/// error) is settled by reading the counter (this client is its only writer).
fn counter_client(
    w: usize,
    members: Vec<SocketAddr>,
    stop: &AtomicBool,
    killed_at: &Mutex<Option<Instant>>,
) -> Result<Counted, String> {
    let mut client = Client::connect(ClientConfig::new(members)).map_err(|e| e.to_string())?;
    let key = format!("counter:{w}");
    let (mut value, mut version) = (0u64, 0u64);
    let (mut last_ok, mut longest) = (Instant::now(), Duration::ZERO);
    while !stop.load(Ordering::Relaxed) {
        let next = (value + 1).to_string();
        match client.cas(key.as_bytes(), version, next.as_bytes()) {
            Ok(CasOutcome::Swapped { version: v }) => (value, version) = (value + 1, v),
            Ok(CasOutcome::Mismatch { current_version }) => {
                return Err(format!(
                    "{key}: its only writer's CAS found version {current_version}: applied twice?"
                ));
            }
            Err(_) => match client.get(key.as_bytes()) {
                Ok(found) => {
                    let (now, v) = found.map_or((0, 0), |f| {
                        (String::from_utf8_lossy(&f.bytes).parse().unwrap_or(u64::MAX), f.version)
                    });
                    if now != value && now != value + 1 {
                        return Err(format!("{key}: {value} became {now}"));
                    }
                    (value, version) = (now, v);
                    continue;
                }
                Err(_) => continue,
            },
        }
        let now = Instant::now();
        if killed_at.lock().expect("lock").is_some() {
            longest = longest.max(now - last_ok);
        }
        last_ok = now;
    }
    Ok((longest, key, value))
}
