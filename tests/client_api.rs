//! The client library's pipelining against a real `cradle node` process: a deep pipeline
//! that the sized receive buffer holds, and multi-gets started without blocking.

mod common;

use client::{recv_buffer_bytes_for, Client, ClientConfig, RequestOptions, SharedClient};
use common::NodeProcess;
use std::time::Duration;

#[test]
fn thousands_of_gets_at_once_need_no_resend_storm() {
    let node = NodeProcess::start(1, 16, &["--durability", "memory"]);
    // An unoptimized node and client take too long over 17,000 (the trial's count) to stay
    // within the resend window; 3,000 replies overflow the default buffer too.
    let count = if cfg!(debug_assertions) { 3_000 } else { 17_000 };
    let mut config = ClientConfig::new(vec![node.addr]);
    config.in_flight_max = count;
    let mut client = Client::connect(config).expect("connect");
    let granted = client.transport_mut().recv_buffer_bytes().unwrap();
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .map(|text| text.trim().parse().unwrap())
        .unwrap_or(212_992);
    // Linux doubles what is asked, up to twice rmem_max.
    assert!(granted >= recv_buffer_bytes_for(count).min(2 * rmem_max), "{granted} bytes");
    if granted < 4 << 20 {
        eprintln!("skipped: net.core.rmem_max is {rmem_max}, too small to hold the replies");
        return;
    }
    client.put(b"k", &[7; 32]).unwrap();
    for _ in 0..count {
        client.submit(client::Request::Get { key: b"k".to_vec() });
    }
    let mut answered = 0;
    while let Some((_, outcome)) = client.wait(Duration::from_secs(10)) {
        assert_eq!(outcome.into_value().unwrap().unwrap().bytes, [7; 32]);
        answered += 1;
    }
    let stats = client.client_stats();
    assert_eq!((answered, stats.timeouts), (count, 0), "{stats:?}");
    // With the 208 KiB default buffer the replies overflowed it: about 25,000 resends here.
    assert!(stats.retransmits < count as u64 / 10, "{stats:?}");
}

#[test]
fn multi_gets_started_without_blocking_against_a_real_node() {
    let node = NodeProcess::start(2, 16, &["--durability", "memory"]);
    let mut client = Client::connect(ClientConfig::new(vec![node.addr])).expect("connect");
    let keys: Vec<String> = (0..16).map(|i| format!("segment:{i}")).collect();
    for key in &keys[..12] {
        client.put(key.as_bytes(), key.as_bytes()).unwrap();
    }
    let mut first = client.start_get_many(&keys, RequestOptions::default()).unwrap();
    let second = client.start_get_many(&keys[..4], RequestOptions::default()).unwrap();
    while !client.poll_get_many(&mut first) {}
    for (i, value) in client.finish_get_many(first).into_iter().enumerate() {
        let expected = (i < 12).then(|| keys[i].as_bytes().to_vec());
        assert_eq!(value.unwrap().map(|value| value.bytes), expected, "key {i}");
    }
    assert!(client.finish_get_many(second).into_iter().all(|value| value.unwrap().is_some()));

    let shared = SharedClient::connect(ClientConfig::new(vec![node.addr])).expect("connect");
    let pending: Vec<_> =
        (0..8).map(|_| shared.start_get_many(&keys, RequestOptions::default()).unwrap()).collect();
    for gets in pending {
        let found = gets.wait().into_iter().filter(|value| matches!(value, Ok(Some(_)))).count();
        assert_eq!(found, 12);
    }
    assert_eq!(shared.in_flight(), 0);
}

/// A port nothing listens on: the kernel answers ICMP port unreachable, and the client takes
/// it (IP_RECVERR) instead of spending its whole retry budget (#13). Alone, it fails with the
/// refusal after one transmission; listed before a live node, it is left for that node at
/// once: no retransmission either way.
#[test]
fn a_closed_port_is_refused_at_once_and_left_for_the_next_server() {
    let closed = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    }; // (dropped: closed)
    let began = std::time::Instant::now();
    let error = Client::connect(ClientConfig::new(vec![closed])).map(drop).unwrap_err();
    let elapsed = began.elapsed();
    match &error {
        client::Error::Io(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{error}");
            assert!(e.to_string().contains(&closed.to_string()), "{error}");
        }
        other => panic!("not the refusal: {other:?} after {elapsed:?}"),
    }
    let node = NodeProcess::start(1, 16, &[]);
    let mut client = Client::connect(ClientConfig::new(vec![closed, node.addr])).expect("connect");
    client.put(b"k", b"v").expect("PUT through the live node");
    assert_eq!(client.get(b"k").expect("GET").map(|v| v.bytes), Some(b"v".to_vec()));
    let stats = client.client_stats();
    assert_eq!((stats.retransmits, stats.timeouts), (0, 0), "{stats:?}");
    eprintln!("refused after {elapsed:?}; failover to the live node with no retransmission");
}
