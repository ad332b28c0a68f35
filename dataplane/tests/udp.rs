//! `UdpPort` against real loopback sockets.

use std::collections::BTreeSet;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use dataplane::{Buffer, PacketBuf, Port, UdpConfig, UdpPort, BATCH};

const DEADLINE: Duration = Duration::from_secs(5);

fn client(addr: &str) -> UdpSocket {
    let socket = UdpSocket::bind(addr).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    socket
}

/// Receives `count` datagrams (waiting at most `DEADLINE`), checking no burst exceeds BATCH;
/// returns them and the size of the largest burst.
fn receive(port: &mut UdpPort, count: usize) -> (Vec<PacketBuf>, usize) {
    let deadline = Instant::now() + DEADLINE;
    let (mut all, mut rx, mut burst_max) = (Vec::new(), Vec::with_capacity(BATCH), 0);
    while all.len() < count {
        assert!(Instant::now() < deadline, "only {} of {count} arrived", all.len());
        let got = port.rx_burst(&mut rx).unwrap();
        assert!(got <= BATCH && rx.len() == got);
        burst_max = burst_max.max(got);
        all.append(&mut rx);
        if got == 0 {
            port.wait_readable(Duration::from_millis(10)).unwrap();
        }
    }
    (all, burst_max)
}

/// Sends `count` numbered datagrams from `client` to `port`, echoes them back through the
/// port's tx path (reusing the rx buffers), and checks every one comes back.
fn echo_round_trip(port: &mut UdpPort, client: &UdpSocket, count: u32) {
    let to = port.local_addr();
    let available = port.buffers_available();
    for i in 0..count {
        client.send_to(&i.to_le_bytes(), to).unwrap();
    }
    thread::sleep(Duration::from_millis(20)); // let the whole burst reach the socket queue
    let (mut received, burst_max) = receive(port, count as usize);
    assert_eq!(burst_max, BATCH.min(count as usize), "recvmmsg should fill whole bursts");
    for buf in &received {
        assert_eq!(buf.peer(), client.local_addr().unwrap(), "source address");
    }
    while !received.is_empty() {
        let sent = port.tx_burst(&mut received).unwrap();
        assert!(sent > 0 || received.is_empty(), "loopback should never stay full");
    }
    let mut echoed = BTreeSet::new();
    let mut buf = [0u8; 16];
    for _ in 0..count {
        let (len, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((len, from), (4, to));
        echoed.insert(u32::from_le_bytes(buf[..4].try_into().unwrap()));
    }
    assert_eq!(echoed, (0..count).collect::<BTreeSet<_>>());
    let counters = port.counters();
    assert_eq!((counters.rx, counters.tx, counters.tx_dropped), (count as u64, count as u64, 0));
    assert_eq!(port.buffers_available(), available, "all returned");
}

#[test]
fn ipv4_echo_burst_larger_than_a_batch() {
    let mut port = UdpPort::bind("127.0.0.1:0".parse().unwrap(), UdpConfig::default()).unwrap();
    let (rcvbuf, sndbuf) = port.socket_buffer_bytes();
    assert!(rcvbuf > 0 && sndbuf > 0);
    echo_round_trip(&mut port, &client("127.0.0.1:0"), 3 * BATCH as u32 + 7);
}

fn bind_ipv6(addr: &str) -> Option<UdpPort> {
    match UdpPort::bind(addr.parse().unwrap(), UdpConfig::default()) {
        Ok(port) => Some(port),
        Err(err) => {
            eprintln!("skipped: cannot bind {addr} ({err}); no IPv6 here");
            None
        }
    }
}

#[test]
fn ipv6_echo() {
    let Some(mut port) = bind_ipv6("[::1]:0") else {
        return;
    };
    echo_round_trip(&mut port, &client("[::1]:0"), BATCH as u32 + 1);
}

#[test]
fn dual_stack_socket_answers_ipv4_peers_as_ipv4() {
    let Some(mut port) = bind_ipv6("[::]:0") else {
        return;
    };
    let client = client("127.0.0.1:0");
    let to = SocketAddr::from(([127, 0, 0, 1], port.local_addr().port()));
    client.send_to(b"v4", to).unwrap();
    let (mut received, _) = receive(&mut port, 1);
    assert_eq!(received[0].peer(), client.local_addr().unwrap(), "v4-mapped shown as IPv4");
    assert_eq!(port.tx_burst(&mut received).unwrap(), 1);
    let mut buf = [0u8; 8];
    let (len, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..len], from.port()), (&b"v4"[..], to.port()));
}

#[test]
fn oversize_datagram_arrives_truncated_to_the_buffer() {
    let config = UdpConfig::default();
    let mut port = UdpPort::bind("127.0.0.1:0".parse().unwrap(), config.clone()).unwrap();
    let client = client("127.0.0.1:0");
    client.send_to(&[7u8; 3000], port.local_addr()).unwrap();
    client.send_to(&[8u8; 2048], port.local_addr()).unwrap();
    let (received, _) = receive(&mut port, 2);
    assert_eq!(received[0].payload().len(), config.buf_bytes);
    assert!(received[0].payload().iter().all(|&b| b == 7));
    assert_eq!(received[1].payload().len(), 2048);
    assert_eq!(port.counters().rx_truncated, 1, "only the oversize one");
    for buf in received {
        port.release(buf);
    }
}

#[test]
fn hard_send_error_drops_one_datagram_and_sends_the_rest() -> io::Result<()> {
    let mut port = UdpPort::bind("127.0.0.1:0".parse().unwrap(), UdpConfig::default())?;
    let client = client("127.0.0.1:0");
    let mut tx = Vec::new();
    // An IPv6 destination from an IPv4 socket fails in the kernel (EAFNOSUPPORT).
    for (peer, bytes) in [("[::1]:9", b"bad"), ("", b"ok1"), ("[::1]:9", b"bad"), ("", b"ok2")] {
        let mut buf = port.alloc_tx().unwrap();
        buf.capacity_mut()[..3].copy_from_slice(bytes);
        buf.set_len(3);
        let peer = peer.parse().unwrap_or(client.local_addr()?);
        buf.set_peer(peer);
        tx.push(buf);
    }
    assert_eq!(port.tx_burst(&mut tx)?, 2);
    assert!(tx.is_empty(), "dropped datagrams are taken back, not left to spin on");
    assert_eq!((port.counters().tx, port.counters().tx_dropped), (2, 2));
    let mut buf = [0u8; 8];
    for expected in [b"ok1", b"ok2"] {
        let (len, _) = client.recv_from(&mut buf)?;
        assert_eq!(&buf[..len], expected);
    }
    Ok(())
}

#[test]
fn wait_readable_times_out_and_wakes_on_arrival() {
    let mut port = UdpPort::bind("127.0.0.1:0".parse().unwrap(), UdpConfig::default()).unwrap();
    let started = Instant::now();
    port.wait_readable(Duration::from_millis(30)).unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(25) && waited < Duration::from_secs(1), "{waited:?}");

    let to = port.local_addr();
    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        client("127.0.0.1:0").send_to(b"x", to).unwrap();
    });
    let started = Instant::now();
    port.wait_readable(Duration::from_secs(3)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "woke on arrival, not on timeout");
    sender.join().unwrap();
    assert_eq!(receive(&mut port, 1).0.len(), 1);
}

#[test]
fn pool_exhaustion_is_counted_not_fatal() {
    // Without offload, receive and transmit share one pool (with it, GRO receives have their
    // own pool of 64 KiB buffers).
    let config = UdpConfig { pool_buffers: 2 * BATCH, offload: false, ..UdpConfig::default() };
    let mut port = UdpPort::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
    let held: Vec<_> = (0..2 * BATCH).map(|_| port.alloc_tx().unwrap()).collect();
    assert!(port.alloc_tx().is_none());
    let mut rx = Vec::new();
    assert_eq!(port.rx_burst(&mut rx).unwrap(), 0);
    assert_eq!(port.counters().rx_no_buffer, 1);
    held.into_iter().for_each(|buf| port.release(buf));
}

#[test]
fn staged_receive_buffers_stay_aimed_across_empty_and_partial_receives() {
    // Buffers stay staged from one receive to the next; a filled slot gets a fresh buffer
    // and the others keep theirs. Any slot aimed at the wrong buffer or length shows here as
    // a payload that is not the one sent.
    for offload in [false, true] {
        let config = UdpConfig { offload, ..UdpConfig::default() };
        let mut port = UdpPort::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
        let (client, to) = (client("127.0.0.1:0"), port.local_addr());
        let available = port.buffers_available();
        let mut rx = Vec::new();
        for k in 0..200u32 {
            assert_eq!(port.rx_burst(&mut rx).unwrap(), 0, "nothing sent yet");
            let burst = 1 + k as usize % 3; // 1 to 3 datagrams, each its own length
            let sent: Vec<Vec<u8>> = (0..burst)
                .map(|j| vec![(k as usize * 3 + j) as u8; 1 + (k as usize + j) % 97])
                .collect();
            for payload in &sent {
                client.send_to(payload, to).unwrap();
            }
            let (received, _) = receive(&mut port, burst);
            let got: Vec<&[u8]> = received.iter().map(|b| b.payload()).collect();
            assert_eq!(got, sent.iter().map(Vec::as_slice).collect::<Vec<_>>(), "round {k}");
            assert!(received.iter().all(|b| b.peer() == client.local_addr().unwrap()));
            received.into_iter().for_each(|buf| port.release(buf));
        }
        assert_eq!(port.buffers_available(), available, "all back (offload {offload})");
    }
}

#[test]
fn a_send_may_take_back_the_buffers_staged_for_receiving() {
    // Without offload one pool serves both sides: the buffers staged for the next receive
    // are not lost to sends.
    let config = UdpConfig { pool_buffers: 2 * BATCH, offload: false, ..UdpConfig::default() };
    let mut port = UdpPort::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
    let mut rx = Vec::new();
    assert_eq!(port.rx_burst(&mut rx).unwrap(), 0); // stages a burst's buffers
    let held: Vec<_> = (0..2 * BATCH).map(|_| port.alloc_tx().unwrap()).collect();
    assert!(held.iter().all(|b| b.payload().is_empty()));
    assert!(port.alloc_tx().is_none());
    assert_eq!(port.rx_burst(&mut rx).unwrap(), 0);
    assert_eq!(port.counters().rx_no_buffer, 1);
    held.into_iter().for_each(|buf| port.release(buf));
    let to = port.local_addr();
    client("127.0.0.1:0").send_to(b"after", to).unwrap();
    assert_eq!(receive(&mut port, 1).0[0].payload(), b"after");
}
