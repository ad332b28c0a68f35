//! `MemNetwork`: a perfect network. Everything sent arrives once, whole and in order; what it
//! cannot deliver (a full inbox, an unbound address) is counted. Faults are `FaultyPort`'s, in
//! `faulty.rs`.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use dataplane::mem::INBOX_MAX;
use dataplane::{Buffer, MemNetwork, MemPort, Port, BATCH};

const QUIET: Duration = Duration::from_millis(20);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn pair() -> (MemNetwork, MemPort, MemPort) {
    let network = MemNetwork::new();
    let a = network.bind(addr(1));
    let b = network.bind(addr(2));
    (network, a, b)
}

/// Sends `count` numbered datagrams from `a` to `b` and returns what `b` receives, in order.
fn exchange(a: &MemPort, b: &mut MemPort, count: u32) -> Vec<Vec<u8>> {
    for i in 0..count {
        a.send_to(&i.to_le_bytes(), b.local_addr());
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 64];
    while let Some((len, from)) = b.recv_from(&mut buf, QUIET).unwrap() {
        assert_eq!(from, a.local_addr());
        received.push(buf[..len].to_vec());
    }
    received
}

fn numbers(received: &[Vec<u8>]) -> Vec<u32> {
    received.iter().map(|bytes| u32::from_le_bytes(bytes[..4].try_into().unwrap())).collect()
}

#[test]
fn everything_arrives_once_and_in_order() {
    let (network, a, mut b) = pair();
    assert_eq!(numbers(&exchange(&a, &mut b, 100)), (0..100).collect::<Vec<_>>());
    let counters = network.counters();
    assert_eq!((counters.sent, counters.overflowed, counters.unroutable), (100, 0, 0));
}

#[test]
fn a_full_inbox_drops_the_newest_and_counts_them() {
    let (network, a, mut b) = pair();
    let got = numbers(&exchange(&a, &mut b, INBOX_MAX as u32 + 5));
    assert_eq!(got, (0..INBOX_MAX as u32).collect::<Vec<_>>(), "the oldest kept, in order");
    assert_eq!(network.counters().overflowed, 5);
}

#[test]
fn unbound_destination_is_counted() {
    let (network, a, b) = pair();
    let gone = b.local_addr();
    drop(b);
    a.send_to(b"anyone?", gone);
    assert_eq!(network.counters().unroutable, 1);
    let _rebound = network.bind(gone);
}

#[test]
fn port_bursts_truncate_and_return_buffers() {
    let network = MemNetwork::new();
    let client = network.bind(addr(0));
    let mut server = network.bind_with(addr(0), 2 * BATCH, 8);
    assert_ne!(client.local_addr(), server.local_addr(), "port 0 picks distinct ports");
    for i in 0..(BATCH as u8 + 3) {
        client.send_to(&[i; 9], server.local_addr());
    }
    let mut rx = Vec::with_capacity(BATCH);
    assert_eq!(server.rx_burst(&mut rx).unwrap(), BATCH);
    assert_eq!(server.rx_burst(&mut rx).unwrap(), 0, "rx already holds a full batch");
    assert!(rx.iter().all(|buf| buf.payload().len() == 8 && buf.peer() == client.local_addr()));
    assert_eq!(server.counters().rx_truncated, BATCH as u64);
    assert_eq!(server.tx_burst(&mut rx).unwrap(), BATCH, "echo back");
    assert!(rx.is_empty());
    assert_eq!(server.rx_burst(&mut rx).unwrap(), 3);
    rx.drain(..).for_each(|buf| server.release(buf));
    let mut buf = [0u8; 16];
    let mut client = client;
    for i in 0..BATCH as u8 {
        let (len, from) = client.recv_from(&mut buf, QUIET).unwrap().unwrap();
        assert_eq!((&buf[..len], from), (&[i; 8][..], server.local_addr()));
    }
}

#[test]
fn wait_readable_wakes_on_arrival_from_another_thread() {
    let network = MemNetwork::new();
    let mut server = network.bind(addr(0));
    let to = server.local_addr();
    let client = network.bind(addr(0));
    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        client.send_to(b"x", to);
    });
    let started = Instant::now();
    server.wait_readable(Duration::from_secs(3)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "woke on arrival, not on timeout");
    sender.join().unwrap();
    let mut rx = Vec::new();
    assert_eq!(server.rx_burst(&mut rx).unwrap(), 1);
    server.release(rx.pop().unwrap());
}
