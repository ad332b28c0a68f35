//! `FaultyPort`: each fault really happens, to the datagrams it says and no others; nothing is
//! lost that should not be; a seed and an arrival order fix the outcome; it wraps the
//! in-memory port and the real `UdpPort` alike, splitting coalesced (GRO) runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dataplane::{
    datagrams, Buffer, FaultControl, Faults, FaultyPort, MemNetwork, MemPort, Port, UdpConfig,
    UdpPort,
};

const QUIET: Duration = Duration::from_millis(20);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A plain sender and a receiver wrapped in faults of its own, on a new network.
fn pair(faults: Faults, seed: u64) -> (MemNetwork, MemPort, FaultyPort<MemPort>) {
    let network = MemNetwork::new();
    let a = network.bind(addr(1));
    let b = FaultyPort::new(network.bind(addr(2)), faults, seed);
    (network, a, b)
}

/// Every datagram `port` delivers through `rx_burst` until it has been quiet for `QUIET`, in
/// order, each checked to come one per buffer.
fn receive_all<P: Port>(port: &mut P) -> Vec<Vec<u8>> {
    let (mut received, mut rx, mut idle_since) = (Vec::new(), Vec::new(), None);
    loop {
        let got = port.rx_burst(&mut rx).unwrap();
        for buf in rx.drain(..) {
            assert_eq!(datagrams(&buf).count(), 1, "one datagram per buffer");
            received.push(buf.payload().to_vec());
            port.release(buf);
        }
        if got > 0 {
            idle_since = None;
            continue;
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= QUIET {
            return received;
        }
        port.wait_readable(QUIET).unwrap();
    }
}

/// Sends `count` numbered datagrams from `a` to `b`; returns what `b` delivers, in order.
fn exchange(a: &MemPort, b: &mut FaultyPort<MemPort>, count: u32) -> Vec<Vec<u8>> {
    for i in 0..count {
        a.send_to(&i.to_le_bytes(), b.local_addr());
    }
    receive_all(b)
}

fn numbers(received: &[Vec<u8>]) -> Vec<u32> {
    received.iter().map(|bytes| u32::from_le_bytes(bytes[..4].try_into().unwrap())).collect()
}

#[test]
fn without_faults_the_wrapped_port_is_unchanged() {
    let (_network, a, mut b) = pair(Faults::NONE, 1);
    assert_eq!(numbers(&exchange(&a, &mut b, 100)), (0..100).collect::<Vec<_>>());
    let counters = b.counters();
    assert_eq!(counters.rx, 100);
    assert_eq!(counters.rx_dropped + counters.rx_duplicated + counters.rx_reordered, 0);
    assert_eq!(counters.rx_corrupted + counters.no_buffer, 0);
}

#[test]
fn drop_all_delivers_nothing_and_gives_every_buffer_back() {
    let (_network, a, mut b) = pair(Faults { rx_drop: 1.0, ..Faults::NONE }, 2);
    // Four times the wrapped port's pool: a buffer kept by a dropped datagram would run it dry.
    assert!(exchange(&a, &mut b, 1000).is_empty());
    assert_eq!(b.counters().rx_dropped, 1000);
    b.set_faults(Faults::NONE);
    assert_eq!(exchange(&a, &mut b, 10).len(), 10, "faults change at run time");
    assert_eq!(b.inner().counters().rx_no_buffer, 0, "no buffer was kept");
}

#[test]
fn duplicate_all_delivers_each_twice() {
    let (_network, a, mut b) = pair(Faults { rx_duplicate: 1.0, ..Faults::NONE }, 3);
    let mut seen = BTreeMap::new();
    for n in numbers(&exchange(&a, &mut b, 20)) {
        *seen.entry(n).or_insert(0) += 1;
    }
    assert_eq!(seen, (0..20).map(|n| (n, 2)).collect());
    assert_eq!(b.counters().rx_duplicated, 20);
}

#[test]
fn reorder_changes_the_order_but_loses_nothing() {
    for rx_reorder in [0.3, 1.0] {
        let (_network, a, mut b) = pair(Faults { rx_reorder, ..Faults::NONE }, 4);
        let mut got = numbers(&exchange(&a, &mut b, 200));
        assert_ne!(got, (0..200).collect::<Vec<_>>(), "reorder {rx_reorder} kept the order");
        got.sort_unstable();
        assert_eq!(got, (0..200).collect::<Vec<_>>(), "reorder {rx_reorder} lost datagrams");
        assert!(b.counters().rx_reordered > 0);
    }
}

#[test]
fn a_held_datagram_waits_behind_one_to_three_later_ones() {
    let mut places = BTreeMap::new();
    for seed in 0..60 {
        let (_network, a, mut b) = pair(Faults { rx_reorder: 1.0, ..Faults::NONE }, seed);
        a.send_to(&100u32.to_le_bytes(), b.local_addr());
        let mut rx = Vec::new();
        assert_eq!(b.rx_burst(&mut rx).unwrap(), 0, "seed {seed}: held, not delivered");
        b.set_faults(Faults::NONE);
        let got = numbers(&exchange(&a, &mut b, 6));
        let place = got.iter().position(|&n| n == 100).expect("held, not lost");
        let mut rest = got.clone();
        rest.remove(place);
        assert_eq!(rest, [0, 1, 2, 3, 4, 5], "seed {seed}: the others in order, {got:?}");
        *places.entry(place).or_insert(0) += 1;
    }
    assert_eq!(places.keys().copied().collect::<Vec<_>>(), [1, 2, 3], "{places:?}");
}

#[test]
fn a_held_datagram_is_delivered_without_further_traffic() {
    let (_network, a, mut b) = pair(Faults { rx_reorder: 1.0, ..Faults::NONE }, 5);
    a.send_to(b"lonely", b.local_addr());
    assert_eq!(receive_all(&mut b), [b"lonely".to_vec()], "held, not lost");
    assert_eq!(b.counters().rx_reordered, 1);
}

#[test]
fn corrupt_flips_exactly_one_bit() {
    let (_network, a, mut b) = pair(Faults { rx_corrupt: 1.0, ..Faults::NONE }, 6);
    let original = [0x5au8; 64];
    for _ in 0..50 {
        a.send_to(&original, b.local_addr());
    }
    let received = receive_all(&mut b);
    assert_eq!(received.len(), 50);
    let mut bits = std::collections::BTreeSet::new();
    for datagram in &received {
        let flipped: Vec<usize> = (0..64 * 8)
            .filter(|&bit| (datagram[bit / 8] ^ original[bit / 8]) & (1 << (bit % 8)) != 0)
            .collect();
        assert_eq!((datagram.len(), flipped.len()), (64, 1));
        bits.insert(flipped[0]);
    }
    assert!(bits.len() > 10, "the bit is drawn, not fixed: {bits:?}");
    assert_eq!(b.counters().rx_corrupted, 50);
}

fn messy_run(seed: u64) -> Vec<Vec<u8>> {
    let faults = Faults {
        rx_drop: 0.2,
        rx_duplicate: 0.2,
        rx_reorder: 0.2,
        rx_corrupt: 0.2,
        ..Faults::NONE
    };
    let (_network, a, mut b) = pair(faults, seed);
    let received = exchange(&a, &mut b, 300);
    let c = b.counters();
    assert!(c.rx_dropped > 0 && c.rx_duplicated > 0 && c.rx_reordered > 0 && c.rx_corrupted > 0);
    received
}

#[test]
fn same_seed_same_outcome_other_seed_other_outcome() {
    assert_eq!(messy_run(42), messy_run(42));
    assert_ne!(messy_run(42), messy_run(43));
}

/// Sends `count` numbered datagrams through `port`'s transmit path; returns what it took.
fn transmit<P: Port>(port: &mut P, to: SocketAddr, count: u32) -> usize {
    let mut tx = Vec::new();
    for i in 0..count {
        let mut buf = port.alloc_tx().expect("a buffer");
        buf.capacity_mut()[..4].copy_from_slice(&i.to_le_bytes());
        buf.set_len(4);
        buf.set_peer(to);
        tx.push(buf);
    }
    let taken = port.tx_burst(&mut tx).unwrap();
    assert!(tx.is_empty(), "the in-memory port takes everything");
    taken
}

#[test]
fn tx_drop_loses_what_is_sent_counted_as_sent() {
    let network = MemNetwork::new();
    let control = FaultControl::new(Faults { tx_drop: 1.0, ..Faults::NONE });
    let mut a = FaultyPort::with_control(network.bind(addr(1)), &control, 7);
    let mut b = FaultyPort::with_control(network.bind(addr(2)), &control, 8);
    assert_eq!(transmit(&mut a, b.local_addr(), 20), 20, "taken, as a network takes it");
    assert!(receive_all(&mut b).is_empty());
    assert_eq!(a.inner().counters().tx, 0, "nothing reached the wrapped port");
    assert_eq!((control.counters().tx, control.counters().tx_dropped), (20, 20));

    control.set(Faults { tx_drop: 0.5, ..Faults::NONE });
    assert_eq!(transmit(&mut a, b.local_addr(), 200), 200);
    let arrived = numbers(&receive_all(&mut b));
    let dropped = control.counters().tx_dropped - 20;
    assert!(dropped > 50 && dropped < 150, "{dropped} of 200 at 0.5");
    assert_eq!(arrived.len() as u64 + dropped, 200);
    assert!(arrived.windows(2).all(|pair| pair[0] < pair[1]), "the rest in order");
    assert_eq!(control.counters().rx, arrived.len() as u64, "both ports count into one control");
}

/// How many buffers a run of `count` datagrams from `sender` arrives in at `receiver` (fewer
/// than `count` when the kernel coalesces them).
fn buffers_for_a_run(sender: &mut UdpPort, receiver: &mut UdpPort, count: u32) -> usize {
    assert_eq!(transmit(sender, receiver.local_addr(), count), count as usize);
    std::thread::sleep(QUIET);
    let (mut rx, mut buffers, mut datagrams_seen) = (Vec::new(), 0, 0);
    let deadline = Instant::now() + Duration::from_secs(2);
    while datagrams_seen < count as usize && Instant::now() < deadline {
        receiver.rx_burst(&mut rx).unwrap();
        for buf in rx.drain(..) {
            buffers += 1;
            datagrams_seen += datagrams(&buf).count();
            receiver.release(buf);
        }
        receiver.wait_readable(QUIET).unwrap();
    }
    assert_eq!(datagrams_seen, count as usize, "loopback loses nothing");
    buffers
}

fn udp_port(offload: bool) -> UdpPort {
    let config = UdpConfig { offload, ..UdpConfig::default() };
    UdpPort::bind(addr(0), config).unwrap()
}

#[test]
fn wraps_a_udp_port_splitting_coalesced_runs() {
    for offload in [true, false] {
        let mut sender = udp_port(offload);
        let faults = Faults { rx_duplicate: 1.0, rx_corrupt: 1.0, ..Faults::NONE };
        let mut receiver = FaultyPort::new(udp_port(offload), faults, 9);
        // One burst: a run of 40 equal-sized datagrams to one peer leaves as one segmented
        // message where the kernel offers UDP GSO, and arrives as one buffer with GRO.
        let count = 40;
        let probe = buffers_for_a_run(&mut sender, receiver.inner_mut(), count);
        if probe == count as usize {
            eprintln!("offload {offload}: the run came in {probe} buffers, nothing to split");
        } else {
            eprintln!("offload {offload}: the run came coalesced in {probe} buffers");
        }
        assert_eq!(transmit(&mut sender, receiver.local_addr(), count), count as usize);
        std::thread::sleep(QUIET);
        let received = receive_all(&mut receiver);
        let counters = receiver.counters();
        eprintln!(
            "offload {offload}: coalesced receives {}, {:?}",
            receiver.inner().receives_coalesced(),
            counters
        );
        assert_eq!((counters.rx, counters.no_buffer), (count as u64, 0), "split, one by one");
        assert_eq!((counters.rx_duplicated, counters.rx_corrupted), (40, 40));
        assert_eq!(received.len(), 80, "offload {offload}");
        for (i, pair) in (0u32..).zip(received.chunks(2)) {
            assert_eq!(pair[0], pair[1], "a duplicate is a copy of the corrupted datagram");
            let number = u32::from_le_bytes(pair[0][..].try_into().expect("4 bytes"));
            assert_eq!((number ^ i).count_ones(), 1, "datagram {i}, in order, one bit off");
        }
        let mut rx = Vec::new();
        assert_eq!(receiver.rx_burst(&mut rx).unwrap(), 0);
        let port = receiver.into_inner();
        assert_eq!(port.buffers_available(), udp_port(offload).buffers_available(), "all back");
    }
}
