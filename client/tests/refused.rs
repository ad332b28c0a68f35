//! A server whose port is closed, over real loopback sockets: the system's port unreachable
//! ends the request's wait at once, instead of its whole retry budget (715 ms for a read,
//! 1.35 s for a write with the default timeouts). Linux only: elsewhere the transport cannot
//! tell a refusal from a loss.
#![cfg(target_os = "linux")]

mod support;

use client::{Client, ClientConfig, Error, UdpTransport};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::udp::spawn_udp_server;

/// Well under one server's retry budget, with room for a loaded machine.
const FAST: Duration = Duration::from_millis(300);

/// A loopback port nothing listens on: bound, noted, closed.
fn closed_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[test]
fn a_closed_port_fails_at_once_with_refused() {
    let closed = closed_port();
    let started = Instant::now();
    let result = Client::connect(ClientConfig::new(vec![closed]));
    let elapsed = started.elapsed();
    match result {
        Err(error @ Error::Refused { server }) => {
            assert_eq!(server, closed);
            let expected = format!("{closed} refused (nothing listens on that port)");
            assert_eq!(error.to_string(), expected);
        }
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
    assert!(elapsed < FAST, "took {elapsed:?}");
}

#[test]
fn a_refused_server_fails_over_to_the_next_at_once() {
    let closed = closed_port();
    let (live, stop, handle) = spawn_udp_server(true);
    let servers = vec![closed, live];

    // Before any map, keyed requests go to the first server: the write is refused there and
    // goes on to the live one without waiting for a timer.
    let transport = UdpTransport::for_server(closed).unwrap();
    let mut client = Client::with_transport(ClientConfig::new(servers.clone()), transport).unwrap();
    let started = Instant::now();
    let version = client.put(b"k", b"v").unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < FAST, "took {elapsed:?}");
    let stats = client.client_stats();
    assert_eq!((stats.refusals, stats.retransmits, stats.timeouts), (1, 0, 0), "{stats:?}");
    let value = client.get(b"k").unwrap().expect("written on the live server");
    assert_eq!((value.bytes.as_slice(), value.version), (&b"v"[..], version));

    // Connecting asks each configured server for the map in turn.
    let started = Instant::now();
    let mut client = Client::connect(ClientConfig::new(servers)).unwrap();
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    assert_eq!(client.known_map().map(|map| map.epoch), Some(1));
    assert!(client.get(b"k").unwrap().is_some());

    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}
