//! Exactly-once writes through a faulty in-memory network: real `control::Core`s on
//! `MemPort`s driven by the dataplane loop, and the real client over another `MemPort` of the
//! same `MemNetwork`, every port wrapped in a `FaultyPort` that loses, duplicates and reorders
//! what it receives. All of them share one `FaultControl`, so each datagram meets the faults
//! once, at the port it arrives at, as it would in a faulty network.
//!
//! With one core and one partition every write takes the endpoint's next sequence number as
//! its version, so the versions acknowledged to a client that writes one at a time must be
//! exactly 1, 2, 3, ...: a write applied twice leaves a gap (see `common::Workload`). At the
//! end, with faults off, every acknowledged write must be readable and the server's own dump of
//! its store must equal the model. A failure is acceptable only as a timeout after the whole
//! retry budget, and `the_client_fails_only_after_its_retry_budget` times that budget.

mod common;

use client::{Client, ClientConfig, Error, Transport};
use common::{fault_seed, Workload};
use control::{Core, CoreConfig, CoreCounters, NodeLayout, NodeStats};
use dataplane::{
    run, Buffer, FaultControl, FaultCounters, Faults, FaultyPort, MemNetwork, MemPort, Port,
    RunStats, RunnerConfig,
};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The faults the acceptance criterion names: 10 % loss, duplication and reordering.
const FAULTY: Faults =
    Faults { rx_drop: 0.10, rx_duplicate: 0.10, rx_reorder: 0.15, ..Faults::NONE };

/// A port of the test network: in-memory, with the shared faults.
type TestPort = FaultyPort<MemPort>;

/// The client's side of the network: the client's `Transport` over a port's bursts.
struct PortTransport {
    port: TestPort,
    /// Received and not yet handed to the client, oldest first.
    received: VecDeque<<TestPort as Port>::Buf>,
    burst: Vec<<TestPort as Port>::Buf>,
}

impl PortTransport {
    fn new(port: TestPort) -> PortTransport {
        PortTransport { port, received: VecDeque::new(), burst: Vec::new() }
    }
}

impl Transport for PortTransport {
    fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        let mut buf = self.port.alloc_tx().ok_or_else(|| io::Error::other("no buffer"))?;
        buf.capacity_mut()[..datagram.len()].copy_from_slice(datagram);
        buf.set_len(datagram.len());
        buf.set_peer(to);
        self.burst.push(buf);
        self.port.tx_burst(&mut self.burst)?;
        assert!(self.burst.is_empty(), "the in-memory port takes every datagram");
        Ok(())
    }

    /// Cuts a datagram longer than `buf`, like `UdpSocket::recv_from`.
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(datagram) = self.received.pop_front() {
                let len = datagram.payload().len().min(buf.len());
                buf[..len].copy_from_slice(&datagram.payload()[..len]);
                let from = datagram.peer();
                self.port.release(datagram);
                return Ok(Some((len, from)));
            }
            if self.port.rx_burst(&mut self.burst)? > 0 {
                self.received.extend(self.burst.drain(..));
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.port.wait_readable(left)?;
        }
    }
}

/// A network whose every port takes its faults from `faults`; each port draws from its own
/// seed, derived from `seed`.
struct TestNetwork {
    network: MemNetwork,
    faults: FaultControl,
    seed: u64,
    ports: u64,
}

impl TestNetwork {
    fn new(faults: Faults, seed: u64) -> TestNetwork {
        TestNetwork {
            network: MemNetwork::new(),
            faults: FaultControl::new(faults),
            seed,
            ports: 0,
        }
    }

    fn bind(&mut self) -> TestPort {
        let port = self.network.bind("127.0.0.1:0".parse().unwrap());
        self.ports += 1;
        FaultyPort::with_control(port, &self.faults, self.seed ^ (self.ports << 48))
    }
}

/// A node on the in-memory network: one `Core` and one dataplane loop (thread) per core.
struct MemNode {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    loops: Vec<JoinHandle<(Core, RunStats)>>,
}

impl MemNode {
    fn start(
        network: &mut TestNetwork,
        cores: u32,
        partitions: u32,
        tune: impl Fn(&mut CoreConfig),
    ) -> MemNode {
        let ports: Vec<TestPort> = (0..cores).map(|_| network.bind()).collect();
        let addrs: Vec<SocketAddr> = ports.iter().map(dataplane::Port::local_addr).collect();
        let layout = Arc::new(NodeLayout::new(partitions, addrs.clone()).unwrap());
        let map: Arc<[u8]> = layout.map().encode().into();
        let stats = Arc::new(NodeStats::new(cores));
        let stop = Arc::new(AtomicBool::new(false));
        let loops = (0u32..)
            .zip(ports)
            .map(|(core, mut port)| {
                let mut config = CoreConfig::new(core, layout.clone(), [7; 32]);
                tune(&mut config);
                let mut handler = Core::new(config, stats.clone(), map.clone()).unwrap();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let stats = run(&mut port, &mut handler, &RunnerConfig::default(), &stop)
                        .expect("the loop ran");
                    (handler, stats)
                })
            })
            .collect();
        MemNode { addrs, stop, loops }
    }

    /// Stops the loops; returns each core with what its loop did.
    fn stop(mut self) -> Vec<(Core, RunStats)> {
        self.stop.store(true, Ordering::Release);
        std::mem::take(&mut self.loops)
            .into_iter()
            .map(|handle| handle.join().expect("a core's loop panicked"))
            .collect()
    }
}

impl Drop for MemNode {
    fn drop(&mut self) {
        // A failed test must not leave loops spinning in the test process.
        self.stop.store(true, Ordering::Release);
    }
}

fn client_on(
    network: &mut TestNetwork,
    servers: Vec<SocketAddr>,
    seed: u64,
) -> Client<PortTransport> {
    let transport = PortTransport::new(network.bind());
    let mut config = ClientConfig::new(servers);
    config.seed = seed;
    Client::with_transport(config, transport).unwrap()
}

fn total(cores: &[(Core, RunStats)]) -> CoreCounters {
    let mut sum = CoreCounters::default();
    for (core, _) in cores {
        let c = core.counters();
        sum.requests += c.requests;
        sum.duplicates_answered += c.duplicates_answered;
        sum.dropped_malformed += c.dropped_malformed;
        sum.busy += c.busy;
        sum.keys += c.keys;
    }
    sum
}

/// The ports really lost, duplicated and reordered datagrams.
fn assert_faults_happened(faults: &FaultCounters) {
    assert!(faults.rx_dropped > 0, "no datagram was dropped: {faults:?}");
    assert!(faults.rx_duplicated > 0, "no datagram was duplicated: {faults:?}");
    assert!(faults.rx_reordered > 0, "no datagram was reordered: {faults:?}");
}

#[test]
fn single_core_writes_are_exactly_once_under_loss_duplication_and_reordering() {
    let seed = fault_seed("faults_mem single core", 1);
    let started = Instant::now();
    let mut network = TestNetwork::new(FAULTY, seed);
    let node = MemNode::start(&mut network, 1, 1, |_| {});
    let mut client = client_on(&mut network, node.addrs.clone(), seed);
    let budget = ClientConfig::new(node.addrs.clone()).attempts_per_server;

    let mut workload = Workload::new(seed, true, budget, true);
    workload.run_sequential(&mut client, 3_000, 40);
    workload.run_pipelined(&mut client, 40, 32);
    let faults = network.faults.counters();
    let client_stats = client.client_stats();

    network.faults.set(Faults::NONE);
    let keys = workload.verify(&mut client);
    let stats_json = client.stats(node.addrs[0]).expect("STATS without faults");
    let stats: serde_json::Value = serde_json::from_str(&stats_json).unwrap();
    let mut cores = node.stop();
    let held = entries(&mut cores[0].0);
    workload.compare_entries(held.iter().map(|(k, v, ver)| (&k[..], &v[..], *ver)));
    let counters = total(&cores);

    eprintln!(
        "faults_mem single core: {}; network {faults:?}; client retransmits {}, \
         replies ignored {}, timeouts {}; server requests {}, duplicates answered {}; {:?}",
        workload.summary(),
        client_stats.retransmits,
        client_stats.replies_ignored,
        client_stats.timeouts,
        counters.requests,
        counters.duplicates_answered,
        started.elapsed()
    );
    assert!(workload.violations.is_empty(), "seed {seed}: {:#?}", workload.violations);
    assert!(workload.acked_writes > 2_000 && keys > 40);
    assert!(workload.fragmented_writes > 0 && workload.cas_mismatches > 0);
    assert_faults_happened(&faults);
    assert!(client_stats.retransmits > 0, "{client_stats:?}");
    assert!(
        counters.duplicates_answered > 0,
        "no resent or duplicated write reached the server: {counters:?}"
    );
    assert_eq!(
        stats["duplicates_answered"].as_u64(),
        Some(counters.duplicates_answered),
        "STATS reports the core's counter: {stats_json}"
    );
}

#[test]
fn two_cores_keep_every_acknowledged_write() {
    let seed = fault_seed("faults_mem two cores", 2);
    let started = Instant::now();
    let mut network = TestNetwork::new(FAULTY, seed);
    let node = MemNode::start(&mut network, 2, 8, |_| {});
    let mut client = client_on(&mut network, node.addrs.clone(), seed);
    let budget = ClientConfig::new(node.addrs.clone()).attempts_per_server;
    let map = client.map().expect("the map, through the faults");
    assert_eq!(map.entries.len(), 8);

    // Versions are per endpoint here: only per-key order is checked, and the final state.
    let mut workload = Workload::new(seed, false, budget, false);
    workload.run_sequential(&mut client, 2_000, 64);
    workload.run_pipelined(&mut client, 20, 32);
    let faults = network.faults.counters();
    let client_stats = client.client_stats();

    network.faults.set(Faults::NONE);
    workload.verify(&mut client);
    let mut cores = node.stop();
    let held: Vec<_> = cores.iter_mut().flat_map(|(core, _)| entries(core)).collect();
    workload.compare_entries(held.iter().map(|(k, v, ver)| (&k[..], &v[..], *ver)));
    let counters = total(&cores);
    eprintln!(
        "faults_mem two cores: {}; network {faults:?}; client retransmits {}, redirects {}; \
         server requests {}, duplicates answered {}; {:?}",
        workload.summary(),
        client_stats.retransmits,
        client_stats.redirects,
        counters.requests,
        counters.duplicates_answered,
        started.elapsed()
    );
    assert!(workload.violations.is_empty(), "seed {seed}: {:#?}", workload.violations);
    assert!(cores.iter().all(|(core, _)| core.counters().keys > 0), "both cores serve keys");
    assert_faults_happened(&faults);
    assert!(counters.duplicates_answered > 0, "{counters:?}");
}

/// A server that forgets completion records at once applies resent writes again: the
/// workload must notice (this is what makes the tests above able to fail).
#[test]
fn a_server_without_completion_records_is_caught() {
    let seed = fault_seed("faults_mem forgetful server", 3);
    let mut network = TestNetwork::new(FAULTY, seed);
    let node = MemNode::start(&mut network, 1, 1, |config| config.completion_ttl_ns = 1);
    let mut client = client_on(&mut network, node.addrs.clone(), seed);
    let mut workload = Workload::new(seed, true, 8, true);
    // Resends that reach the server after the next write are what it re-applies: pipelined
    // rounds make them; a seed catches it in a few dozen rounds.
    workload.run_sequential(&mut client, 500, 40);
    workload.run_pipelined(&mut client, 200, 32);
    network.faults.set(Faults::NONE);
    workload.verify(&mut client);
    drop(node.stop());
    eprintln!(
        "faults_mem forgetful server: {} violations, first: {:?}",
        workload.violations.len(),
        workload.violations.first()
    );
    assert!(!workload.violations.is_empty(), "writes applied twice went unnoticed");
}

/// Counts `ops` INCRs (floor 0) one at a time on a few keys and checks every answer against
/// the model: a count that moves by anything but the request's amount is an INCR applied
/// twice (or lost), a refusal must be one the model refuses too, and no count is below 0.
/// Returns the violations and how many INCRs got no answer (their effect is unknown: the
/// key's model is then resynchronised from the next answer).
fn count_exactly_once<T: Transport>(
    client: &mut Client<T>,
    seed: u64,
    ops: usize,
) -> (Vec<String>, usize, [Option<i64>; 4]) {
    use client::IncrOutcome;
    let mut rng = testkit::Rng::from_seed(seed);
    let mut model: [Option<i64>; 4] = [Some(0); 4];
    let (mut violations, mut unanswered) = (Vec::new(), 0);
    for op in 0..ops {
        let k = rng.below(4) as usize;
        let key = format!("counter-{k}");
        let by = rng.below(9) as i64 - 4; // -4 ..= 4
        match client.incr(key.as_bytes(), by, Some(0)) {
            Ok(IncrOutcome::Counted { count }) => {
                if count < 0 {
                    violations.push(format!("op {op}: {key} counted below the floor: {count}"));
                }
                if let Some(before) = model[k] {
                    if count != before + by {
                        violations.push(format!("op {op}: {key} {before} {by:+} gave {count}"));
                    }
                }
                model[k] = Some(count);
            }
            Ok(IncrOutcome::BelowFloor { count }) => {
                if model[k].is_some_and(|before| before != count || before + by >= 0) {
                    violations
                        .push(format!("op {op}: {key} at {model:?} refused {by:+} ({count})"));
                }
                model[k] = Some(count);
            }
            Err(Error::Timeout { .. }) => {
                unanswered += 1;
                model[k] = None;
            }
            Err(error) => violations.push(format!("op {op}: {key}: {error}")),
        }
    }
    (violations, unanswered, model)
}

#[test]
fn counters_are_exactly_once_under_loss_duplication_and_reordering() {
    let seed = fault_seed("faults_mem counters", 5);
    let mut network = TestNetwork::new(FAULTY, seed);
    let node = MemNode::start(&mut network, 1, 4, |_| {});
    let mut client = client_on(&mut network, node.addrs.clone(), seed);
    let (violations, unanswered, model) = count_exactly_once(&mut client, seed, 2_000);
    let faults = network.faults.counters();
    network.faults.set(Faults::NONE);
    for (k, count) in model.iter().enumerate() {
        let stored = client.get(format!("counter-{k}").as_bytes()).unwrap();
        let stored = stored.map(|v| String::from_utf8(v.bytes).unwrap());
        if let Some(count) = count {
            assert_eq!(stored.as_deref(), Some(count.to_string().as_str()), "counter-{k}");
        }
    }
    let counters = total(&node.stop());
    eprintln!(
        "faults_mem counters: {} violations, {unanswered} unanswered; network {faults:?}; \
         duplicates answered {}",
        violations.len(),
        counters.duplicates_answered
    );
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");
    assert!(unanswered <= 2, "{unanswered} INCRs got no answer");
    assert_faults_happened(&faults);
    assert!(counters.duplicates_answered > 0, "no resent INCR was answered from its record");
}

/// An outage shorter than the retry budget costs retransmits, not a failure; a longer one
/// fails with `Timeout` carrying every attempt, and not before the sum of the backed-off
/// timeouts on every server.
#[test]
fn the_client_fails_only_after_its_retry_budget() {
    let seed = fault_seed("faults_mem retry budget", 4);
    let mut network = TestNetwork::new(Faults::NONE, seed);
    let node = MemNode::start(&mut network, 1, 1, |_| {});
    // A second configured server that never answers, so the budget spans two servers.
    let dead = network.bind();
    let servers = vec![node.addrs[0], dead.local_addr()];
    let config = |seed| {
        let mut config = ClientConfig::new(servers.clone());
        config.seed = seed;
        config.rto_initial = Duration::from_millis(40);
        config.rto_min = Duration::from_millis(1);
        config.rto_max = Duration::from_millis(160);
        config.attempts_per_server = 4;
        config
    };
    let faults = network.faults.clone();
    let mut fresh = |seed| {
        let transport = PortTransport::new(network.bind());
        Client::with_transport(config(seed), transport).unwrap()
    };
    // Sends at 0, 40, 120 and 280 ms, then the next server: 40 + 80 + 160 + 160 ms each.
    // The short outage ends at 200 ms, between the third and the fourth send.
    let per_server = Duration::from_millis(440);

    // Every datagram is lost as it leaves its port: nothing reaches anyone.
    let all_lost = Faults { tx_drop: 1.0, ..Faults::NONE };
    faults.set(all_lost);
    let healer = {
        let faults = faults.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            faults.set(Faults::NONE);
        })
    };
    let mut client = fresh(seed);
    let started = Instant::now();
    let version = client.put(b"outage", b"survived").expect("within the budget");
    let elapsed = started.elapsed();
    healer.join().unwrap();
    let stats = client.client_stats();
    eprintln!("faults_mem short outage: version {version} after {elapsed:?}, {stats:?}");
    assert_eq!(version, 1, "applied once");
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(stats.retransmits >= 3 && stats.timeouts == 0, "{stats:?}");

    faults.set(all_lost);
    let dropped_before = faults.counters().tx_dropped;
    let mut client = fresh(seed + 1);
    let started = Instant::now();
    let outcome = client.put(b"outage", b"lost");
    let elapsed = started.elapsed();
    let stats = client.client_stats();
    eprintln!("faults_mem long outage: {outcome:?} after {elapsed:?}, {stats:?}");
    match outcome {
        Err(Error::Timeout { attempts, server }) => {
            assert_eq!(attempts, 8, "4 attempts on each of 2 servers");
            assert_eq!(server, servers[1], "the last server tried");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(elapsed >= 2 * per_server, "failed early: {elapsed:?}");
    assert!(elapsed < 2 * per_server + Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(stats.datagrams_sent, 8, "{stats:?}");
    assert_eq!(stats.timeouts, 1, "{stats:?}");
    assert_eq!(faults.counters().tx_dropped - dropped_before, 8, "every send lost");

    faults.set(Faults::NONE);
    let value = client.get(b"outage").unwrap().expect("the first write");
    assert_eq!((value.bytes.as_slice(), value.version), (&b"survived"[..], 1));
    drop(node.stop());
}

/// Every key a core holds, with value and version.
fn entries(core: &mut control::Core) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    let mut out = Vec::new();
    core.for_each_entry(|k, v, version| out.push((k.to_vec(), v.to_vec(), version)))
        .expect("a healthy store lists its keys");
    out
}
