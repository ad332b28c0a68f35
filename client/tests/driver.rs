//! The blocking driver over an in-memory transport and over real UDP sockets on loopback.

mod support;

use client::{CasOutcome, Client, ClientConfig, Error, Outcome, Request, RequestOptions};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::fake_server::FakeServer;
use support::in_memory::InMemory;
use support::udp_server::spawn_udp_server;

fn in_memory_client() -> Client<InMemory> {
    let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    let transport = InMemory::new(FakeServer::new(addr));
    Client::with_transport(ClientConfig::new(vec![addr]), transport).unwrap()
}

#[test]
fn convenience_operations_map_statuses_to_results() {
    let mut client = in_memory_client();
    assert_eq!(client.get(b"k").unwrap(), None);
    let v1 = client.put(b"k", b"one").unwrap();
    let value = client.get(b"k").unwrap().unwrap();
    assert_eq!((value.bytes.as_slice(), value.version), (&b"one"[..], v1));
    assert_eq!(
        client.cas(b"k", v1 + 100, b"x").unwrap(),
        CasOutcome::Mismatch { current_version: v1 }
    );
    let CasOutcome::Swapped { version: v2 } = client.cas(b"k", v1, b"two").unwrap() else {
        panic!("the expected version matched");
    };
    assert!(v2 > v1);
    assert!(client.delete(b"k").unwrap());
    assert!(!client.delete(b"k").unwrap());
    let long_key = vec![b'k'; 300];
    assert!(matches!(client.get(&long_key), Err(Error::KeyTooLong { len: 300 })));
    let server = client.transport_mut().server.addr;
    client.ping(server).unwrap();
    assert_eq!(client.stats(server).unwrap(), "{\"keys\":0}");
}

#[test]
fn get_many_packs_one_datagram() {
    let mut client = in_memory_client();
    for key in [&b"a"[..], b"b"] {
        client.put(key, key).unwrap();
    }
    let before = client.transport_mut().server.datagrams;
    let values = client.get_many(&[&b"a"[..], b"missing", b"b"]).unwrap();
    assert_eq!(client.transport_mut().server.datagrams - before, 1);
    let bytes: Vec<_> = values.iter().map(|v| v.as_ref().map(|v| v.bytes.clone())).collect();
    assert_eq!(bytes, [Some(b"a".to_vec()), None, Some(b"b".to_vec())]);
}

#[test]
fn pipelined_requests_complete_through_wait() {
    let mut client = in_memory_client();
    let ids: Vec<_> = (0..50u8)
        .map(|i| client.submit(Request::Put { key: vec![i], value: vec![i; 900] }))
        .collect();
    let mut done = Vec::new();
    while let Some((id, result)) = client.wait(Duration::from_secs(5)) {
        result.into_version().unwrap();
        done.push(id);
    }
    done.sort();
    assert_eq!(done, ids);
    assert_eq!(client.in_flight(), 0);
    assert!(client.wait(Duration::from_millis(1)).is_none());
    assert_eq!(client.client_stats().completions, 50);
}

#[test]
fn a_started_multi_get_is_sent_at_once_and_collected_apart_from_wait() {
    let mut client = in_memory_client();
    for key in [&b"a"[..], b"b"] {
        client.put(key, key).unwrap();
    }
    let other = client.submit(Request::Put { key: b"c".to_vec(), value: b"c".to_vec() });
    let before = client.transport_mut().server.datagrams;
    let keys = [&b"a"[..], b"missing", b"b"];
    let mut multi = client.start_get_many(&keys, RequestOptions::default()).unwrap();
    // Sent by `start_get_many` itself, with the PUT queued before it: one datagram.
    assert_eq!(client.transport_mut().server.datagrams - before, 1);
    assert!(!multi.is_done());
    // `wait` returns the PUT, never the multi-get's GETs.
    let (id, outcome) = client.wait(Duration::from_secs(5)).unwrap();
    assert_eq!(id, other);
    assert!(matches!(outcome, Outcome::Done(_)));
    assert!(client.wait(Duration::from_millis(1)).is_none());
    assert!(client.poll_get_many(&mut multi));
    let values: Vec<_> = client
        .finish_get_many(multi)
        .into_iter()
        .map(|value| value.unwrap().map(|value| value.bytes))
        .collect();
    assert_eq!(values, [Some(b"a".to_vec()), None, Some(b"b".to_vec())]);
    assert_eq!(client.in_flight(), 0);
}

#[test]
fn a_multi_get_without_room_for_all_its_keys_sends_none() {
    let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    let mut config = ClientConfig::new(vec![addr]);
    config.in_flight_max = 2;
    let mut client = Client::with_transport(config, InMemory::new(FakeServer::new(addr))).unwrap();
    let refused = client.start_get_many(&[&b"a"[..], b"b", b"c"], RequestOptions::default());
    assert!(matches!(refused, Err(Error::InFlightFull)), "{refused:?}");
    assert_eq!(client.transport_mut().server.datagrams, 0);
    assert_eq!((client.in_flight(), client.capacity()), (0, 2));
    let long = vec![b'k'; 251];
    let refused = client.start_get_many(&[&b"a"[..], &long], RequestOptions::default());
    assert!(matches!(refused, Err(Error::KeyTooLong { len: 251 })), "{refused:?}");
    assert_eq!(client.in_flight(), 0);
}

#[test]
fn a_deadline_bounds_a_call_to_a_silent_server() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let transport = client::UdpTransport::for_server(addr).unwrap();
    let mut client = Client::with_transport(ClientConfig::new(vec![addr]), transport).unwrap();
    let started = Instant::now();
    let options = RequestOptions::within(started, Duration::from_millis(30));
    let outcome = client.call_with(Request::Get { key: b"k".to_vec() }, options);
    let elapsed = started.elapsed();
    assert!(matches!(outcome, Outcome::Failed(Error::DeadlineExceeded)), "{outcome:?}");
    // Without the deadline the budget is 8 attempts, about 700 ms.
    assert!(elapsed >= Duration::from_millis(30) && elapsed < Duration::from_millis(200));
    let id = client.submit(Request::Get { key: b"k".to_vec() });
    client.poll();
    assert!(client.cancel(id));
    let (done, outcome) = client.wait(Duration::ZERO).unwrap();
    assert_eq!(done, id);
    assert!(matches!(outcome, Outcome::Failed(Error::Cancelled)), "{outcome:?}");
}

#[test]
fn connect_put_get_over_udp() {
    let (addr, stop, handle) = spawn_udp_server(true);
    let mut client = Client::connect(ClientConfig::new(vec![addr])).unwrap();
    assert_eq!(client.known_map().map(|m| m.epoch), Some(1));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let version = client.put(b"big", &big).unwrap();
    let value = client.get(b"big").unwrap().unwrap();
    assert_eq!(value.version, version);
    assert!(value.bytes == big);
    let values = client.get_many(&[&b"big"[..], b"none"]).unwrap();
    assert!(values[1].is_none());
    assert!(client.stats(addr).unwrap().contains("keys"));
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}

#[test]
fn connect_fails_with_a_timeout_when_no_server_answers() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let started = Instant::now();
    let result = Client::connect(ClientConfig::new(vec![addr]));
    let elapsed = started.elapsed();
    match result {
        Err(error @ Error::Timeout { attempts: 8, .. }) => {
            assert_eq!(error.to_string(), format!("timed out after 8 attempts on {addr}"));
        }
        other => panic!("expected a timeout, got {:?}", other.err()),
    }
    assert!(elapsed >= Duration::from_millis(700), "gave up early: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let mut buf = [0u8; 2048];
    silent.set_nonblocking(true).unwrap();
    let mut received = 0;
    while silent.recv_from(&mut buf).is_ok() {
        received += 1;
    }
    assert_eq!(received, 8, "one datagram per attempt");
}
