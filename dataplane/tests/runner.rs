//! The per-core loop over a real socket, over the in-memory network, and over a port that
//! never drains.

use std::collections::BTreeSet;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dataplane::{
    run, Buffer, Handler, MemNetwork, PinOutcome, Port, Runner, RunnerConfig, Transmit, UdpConfig,
    UdpPort, BATCH,
};

/// Answers each datagram with `copies` copies of it; counts what it saw.
#[derive(Default)]
struct Echo {
    copies: usize,
    datagrams: u64,
    end_batches: u64,
    refused: u64,
    last_now_ns: u64,
}

impl Handler for Echo {
    fn handle_datagram(
        &mut self,
        now_ns: u64,
        peer: SocketAddr,
        datagram: &[u8],
        tx: &mut dyn Transmit,
    ) {
        assert!(now_ns >= self.last_now_ns, "time went backwards");
        self.datagrams += 1;
        for _ in 0..self.copies {
            self.refused += u64::from(!tx.send(peer, datagram));
        }
    }

    fn end_batch(&mut self, now_ns: u64, _tx: &mut dyn Transmit) {
        assert!(now_ns >= self.last_now_ns, "time went backwards");
        self.last_now_ns = now_ns;
        self.end_batches += 1;
    }
}

#[test]
fn udp_echo_loop_serves_then_stops_promptly() {
    let mut port = UdpPort::bind("127.0.0.1:0".parse().unwrap(), UdpConfig::default()).unwrap();
    let server = port.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let loop_stop = Arc::clone(&stop);
    let config = RunnerConfig { spin: Duration::from_micros(50), ..RunnerConfig::default() };
    let handle = thread::spawn(move || {
        let mut echo = Echo { copies: 1, ..Echo::default() };
        let stats = run(&mut port, &mut echo, &config, &loop_stop);
        (stats, echo, port.counters())
    });

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let count = 4 * BATCH as u32 + 5;
    for i in 0..count {
        client.send_to(&i.to_le_bytes(), server).unwrap();
    }
    let mut echoed = BTreeSet::new();
    let mut buf = [0u8; 16];
    for _ in 0..count {
        let (len, from) = client.recv_from(&mut buf).expect("echo within 5 s");
        assert_eq!((len, from), (4, server));
        echoed.insert(u32::from_le_bytes(buf[..4].try_into().unwrap()));
    }
    assert_eq!(echoed, (0..count).collect());

    thread::sleep(Duration::from_millis(50)); // let the loop go idle and block
    let stopped_at = Instant::now();
    stop.store(true, Ordering::Release);
    let (stats, echo, counters) = handle.join().unwrap();
    assert!(stopped_at.elapsed() < Duration::from_secs(1), "stop took {:?}", stopped_at.elapsed());
    let stats = stats.unwrap();

    assert_eq!((stats.datagrams_in, stats.datagrams_out), (count as u64, count as u64));
    assert_eq!((stats.tx_dropped, stats.tx_no_buffer, stats.tx_oversize), (0, 0, 0));
    assert!(stats.batches >= 5 && stats.batches <= stats.iterations, "{stats:?}");
    assert!(stats.wakeups >= 1, "the idle loop should have blocked");
    assert_eq!(stats.pin, PinOutcome::NotRequested);
    assert_eq!((echo.datagrams, echo.refused), (count as u64, 0));
    assert_eq!(echo.end_batches, stats.iterations, "end_batch once per iteration");
    assert_eq!((counters.rx, counters.tx), (count as u64, count as u64));
}

#[test]
fn pinning_to_a_missing_core_is_reported_not_fatal() {
    let network = MemNetwork::new();
    let mut port = network.bind("127.0.0.1:0".parse().unwrap());
    let config = RunnerConfig { core: Some(1 << 20), ..RunnerConfig::default() };
    let stop = AtomicBool::new(true);
    // `run` pins the calling thread, so do it on a throwaway one.
    let stats = thread::scope(|s| {
        s.spawn(|| run(&mut port, &mut Echo::default(), &config, &stop)).join().unwrap()
    });
    assert_eq!(stats.unwrap().pin, PinOutcome::Failed(1 << 20));
}

#[test]
fn step_flushes_every_full_batch_and_refuses_oversize() {
    let network = MemNetwork::new();
    let mut server = network.bind("127.0.0.1:0".parse().unwrap());
    let mut client = network.bind("127.0.0.1:0".parse().unwrap());
    let mut runner = Runner::new(RunnerConfig::default());
    // More replies to one request than the pool has buffers: only batch flushes make room.
    let copies = 300;
    let mut echo = Echo { copies, ..Echo::default() };
    client.send_to(b"ping", server.local_addr());
    client.send_to(&[0u8; 4000], server.local_addr()); // truncated to 2049, still fits
    assert_eq!(runner.step(&mut server, &mut echo).unwrap(), 2);
    let stats = runner.stats();
    assert_eq!(stats.datagrams_out, 2 * copies as u64);
    assert_eq!((stats.tx_no_buffer, stats.tx_dropped, echo.refused), (0, 0, 0));
    let mut buf = [0u8; 4096];
    let mut lengths = BTreeSet::new();
    while let Some((len, _)) = client.recv_from(&mut buf, Duration::from_millis(20)).unwrap() {
        lengths.insert(len);
    }
    assert_eq!(lengths, BTreeSet::from([4, 2049]));
    assert_eq!(client.counters().rx, 2 * copies as u64);

    struct Big;
    impl Handler for Big {
        fn handle_datagram(&mut self, _: u64, peer: SocketAddr, _: &[u8], tx: &mut dyn Transmit) {
            assert!(!tx.send(peer, &[0u8; 3000]), "larger than any buffer");
        }
        fn end_batch(&mut self, _: u64, _: &mut dyn Transmit) {}
    }
    client.send_to(b"big please", server.local_addr());
    assert_eq!(runner.step(&mut server, &mut Big).unwrap(), 1);
    assert_eq!(runner.stats().tx_oversize, 1);
}

/// A port whose send queue is always full.
struct Stuck {
    free: usize,
    writable_waits: u32,
}

struct Buf(SocketAddr, [u8; 16], usize);

impl Buffer for Buf {
    fn payload(&self) -> &[u8] {
        &self.1[..self.2]
    }
    fn capacity_mut(&mut self) -> &mut [u8] {
        &mut self.1
    }
    fn set_len(&mut self, len: usize) {
        self.2 = len;
    }
    fn peer(&self) -> SocketAddr {
        self.0
    }
    fn set_peer(&mut self, peer: SocketAddr) {
        self.0 = peer;
    }
}

impl Port for Stuck {
    type Buf = Buf;
    fn rx_burst(&mut self, rx: &mut Vec<Buf>) -> io::Result<usize> {
        self.free -= 1;
        rx.push(Buf("127.0.0.1:9".parse().unwrap(), [1; 16], 4));
        Ok(1)
    }
    fn alloc_tx(&mut self) -> Option<Buf> {
        self.free = self.free.checked_sub(1)?;
        Some(Buf("0.0.0.0:0".parse().unwrap(), [0; 16], 0))
    }
    fn tx_burst(&mut self, _tx: &mut Vec<Buf>) -> io::Result<usize> {
        Ok(0)
    }
    fn release(&mut self, _buf: Buf) {
        self.free += 1;
    }
    fn wait_readable(&mut self, _timeout: Duration) -> io::Result<()> {
        Ok(())
    }
    fn wait_writable(&mut self, _timeout: Duration) -> io::Result<()> {
        self.writable_waits += 1;
        Ok(())
    }
    fn local_addr(&self) -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }
}

#[test]
fn a_port_that_never_drains_costs_bounded_retries_then_drops() {
    let mut port = Stuck { free: 100, writable_waits: 0 };
    let config = RunnerConfig { tx_retries_max: 3, ..RunnerConfig::default() };
    let mut runner = Runner::new(config);
    let mut echo = Echo { copies: BATCH + 1, ..Echo::default() };
    let started = Instant::now();
    assert_eq!(runner.step(&mut port, &mut echo).unwrap(), 1);
    assert!(started.elapsed() < Duration::from_secs(1));
    let stats = runner.stats();
    // One flush when the batch filled, one at the end of the iteration: 3 waits each.
    assert_eq!(port.writable_waits, 6);
    assert_eq!((stats.tx_dropped, stats.datagrams_out), (BATCH as u64 + 1, 0));
    assert_eq!(port.free, 100, "every buffer came back");
}

/// Sleeps in `end_batch` on the iterations it is told to; records what `iteration_done` says.
struct Slow {
    sleep_on: Vec<bool>,
    seen: Vec<(u64, bool)>,
}

impl Handler for Slow {
    fn handle_datagram(&mut self, _: u64, _: SocketAddr, _: &[u8], _: &mut dyn Transmit) {}

    fn end_batch(&mut self, _now_ns: u64, _tx: &mut dyn Transmit) {
        if self.sleep_on.get(self.seen.len()).copied().unwrap_or(false) {
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn iteration_done(&mut self, spent_ns: u64, stalled: bool) {
        self.seen.push((spent_ns, stalled));
    }
}

#[test]
fn every_iteration_tells_the_handler_whether_it_stalled() {
    let network = MemNetwork::new();
    let mut server = network.bind("127.0.0.1:0".parse().unwrap());
    let config = RunnerConfig { stall_budget: Duration::from_millis(2), ..RunnerConfig::default() };
    let mut runner = Runner::new(config);
    let mut slow = Slow { sleep_on: vec![false, true, false], seen: Vec::new() };
    for _ in 0..3 {
        runner.step(&mut server, &mut slow).unwrap(); // idle iterations count too
    }
    let stalled: Vec<bool> = slow.seen.iter().map(|&(_, s)| s).collect();
    assert_eq!(stalled, vec![false, true, false]);
    assert!(slow.seen[1].0 >= 5_000_000, "{:?}", slow.seen);
    assert_eq!(runner.stats().stalls, 1);
}
