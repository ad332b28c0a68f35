//! `MemNetwork`: each fault really happens, nothing is lost that should not be, and a seed
//! fixes the outcome.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use dataplane::{Buffer, Faults, MemNetwork, MemPort, Port, BATCH};

const QUIET: Duration = Duration::from_millis(20);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn pair(faults: Faults, seed: u64) -> (MemNetwork, MemPort, MemPort) {
    let network = MemNetwork::new(faults, seed);
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
fn perfect_network_delivers_everything_in_order() {
    let (network, a, mut b) = pair(Faults::NONE, 1);
    assert_eq!(numbers(&exchange(&a, &mut b, 100)), (0..100).collect::<Vec<_>>());
    let counters = network.counters();
    assert_eq!(counters.sent, 100);
    assert_eq!(counters.dropped + counters.duplicated + counters.reordered, 0);
}

#[test]
fn drop_all_delivers_nothing() {
    let (network, a, mut b) = pair(Faults { drop: 1.0, ..Faults::NONE }, 2);
    assert!(exchange(&a, &mut b, 50).is_empty());
    assert_eq!(network.counters().dropped, 50);
}

#[test]
fn duplicate_all_delivers_each_twice() {
    let (network, a, mut b) = pair(Faults { duplicate: 1.0, ..Faults::NONE }, 3);
    let mut seen = BTreeMap::new();
    for n in numbers(&exchange(&a, &mut b, 20)) {
        *seen.entry(n).or_insert(0) += 1;
    }
    assert_eq!(seen, (0..20).map(|n| (n, 2)).collect());
    assert_eq!(network.counters().duplicated, 20);
}

#[test]
fn reorder_changes_the_order_but_loses_nothing() {
    for reorder in [0.3, 1.0] {
        let (network, a, mut b) = pair(Faults { reorder, ..Faults::NONE }, 4);
        let mut got = numbers(&exchange(&a, &mut b, 200));
        assert_ne!(got, (0..200).collect::<Vec<_>>(), "reorder {reorder} kept the order");
        got.sort_unstable();
        assert_eq!(got, (0..200).collect::<Vec<_>>(), "reorder {reorder} lost datagrams");
        assert!(network.counters().reordered > 0);
    }
}

#[test]
fn held_datagram_is_delivered_without_further_traffic() {
    let (network, a, mut b) = pair(Faults { reorder: 1.0, ..Faults::NONE }, 5);
    a.send_to(b"lonely", b.local_addr());
    let mut buf = [0u8; 16];
    let (len, _) = b.recv_from(&mut buf, QUIET).unwrap().expect("held, not lost");
    assert_eq!(&buf[..len], b"lonely");
    assert_eq!(network.counters().reordered, 1);
}

#[test]
fn corrupt_flips_exactly_one_bit() {
    let (network, a, mut b) = pair(Faults { corrupt: 1.0, ..Faults::NONE }, 6);
    let original = [0x5au8; 64];
    for _ in 0..50 {
        a.send_to(&original, b.local_addr());
    }
    let mut buf = [0u8; 64];
    for _ in 0..50 {
        let (len, _) = b.recv_from(&mut buf, QUIET).unwrap().unwrap();
        let flipped: u32 = buf[..len].iter().zip(original).map(|(x, y)| (x ^ y).count_ones()).sum();
        assert_eq!((len, flipped), (64, 1));
    }
    assert_eq!(network.counters().corrupted, 50);
}

fn messy_run(seed: u64) -> Vec<Vec<u8>> {
    let faults = Faults { drop: 0.2, duplicate: 0.2, reorder: 0.2, corrupt: 0.2 };
    let (_network, a, mut b) = pair(faults, seed);
    exchange(&a, &mut b, 300)
}

#[test]
fn same_seed_same_outcome_other_seed_other_outcome() {
    assert_eq!(messy_run(42), messy_run(42));
    assert_ne!(messy_run(42), messy_run(43));
}

#[test]
fn faults_change_at_run_time() {
    let (network, a, mut b) = pair(Faults { drop: 1.0, ..Faults::NONE }, 7);
    assert!(exchange(&a, &mut b, 10).is_empty());
    network.set_faults(Faults::NONE);
    assert_eq!(exchange(&a, &mut b, 10).len(), 10);
}

#[test]
fn unbound_destination_is_counted() {
    let (network, a, b) = pair(Faults::NONE, 8);
    let gone = b.local_addr();
    drop(b);
    a.send_to(b"anyone?", gone);
    assert_eq!(network.counters().unroutable, 1);
    let _rebound = network.bind(gone);
}

#[test]
fn port_bursts_truncate_and_return_buffers() {
    let network = MemNetwork::new(Faults::NONE, 9);
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
    let network = MemNetwork::new(Faults::NONE, 10);
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
