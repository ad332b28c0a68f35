//! `SharedClient`: requests that progress on the driver thread, from many caller threads.

mod support;

use client::{ClientConfig, Error, Outcome, Request, RequestOptions, SharedClient};
use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};
use support::udp_server::{spawn_lossy_udp_server, spawn_udp_server};

#[test]
fn resends_happen_while_nobody_waits() {
    let (addr, stop, server) = spawn_lossy_udp_server();
    let client = SharedClient::connect(ClientConfig::new(vec![addr])).unwrap();
    let retransmits_before = client.client_stats().retransmits;
    let put = Request::Put { key: b"k".to_vec(), value: b"v".to_vec() };
    let ticket = client.submit(put, RequestOptions::default()).unwrap();
    // Its first transmission is lost: only the driver thread's resend can complete it, and
    // this thread only sleeps.
    let started = Instant::now();
    while !ticket.is_done() && started.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(5));
    }
    assert!(ticket.is_done(), "still in flight after {:?}", started.elapsed());
    assert!(client.client_stats().retransmits > retransmits_before);
    let version = ticket.wait().into_version().unwrap();
    assert_eq!(client.get(b"k").unwrap().map(|value| value.version), Some(version));
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

#[test]
fn threads_share_one_client() {
    let (addr, stop, server) = spawn_udp_server(true);
    let client = SharedClient::connect(ClientConfig::new(vec![addr])).unwrap();
    // 4,096 requests' worth asked; at least the 208 KiB default doubled on any Linux.
    assert!(client.recv_buffer_bytes().unwrap() >= 2 * 212_992);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                for i in 0..200u8 {
                    let key = [t, i];
                    let version = client.put(&key, &[i; 100]).unwrap();
                    let value = client.get(&key).unwrap().unwrap();
                    assert_eq!((value.bytes, value.version), (vec![i; 100], version));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let keys: Vec<[u8; 2]> = (0..16).map(|i| [0, i]).collect();
    let values = client.get_many(&keys).unwrap();
    assert!(values.iter().enumerate().all(|(i, v)| v.as_ref().unwrap().bytes == [i as u8; 100]));
    assert_eq!(client.in_flight(), 0);
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

/// A client of a server that never answers, with a map it was never sent (connect would
/// time out): the requests stay in flight.
fn client_of_a_silent_server(in_flight_max: usize) -> (SharedClient, UdpSocket) {
    let (addr, stop, server) = spawn_udp_server(true);
    let mut config = ClientConfig::new(vec![addr]);
    config.in_flight_max = in_flight_max;
    let client = SharedClient::connect(config).unwrap();
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    // The fake server's port is free again: a silent socket takes it.
    let silent = UdpSocket::bind(addr).unwrap();
    (client, silent)
}

#[test]
fn no_room_is_refused_at_submit_and_a_deadline_ends_a_request() {
    let (client, _silent) = client_of_a_silent_server(4);
    let started = Instant::now();
    let options = RequestOptions::within(started, Duration::from_millis(40));
    let get = |i: u8| Request::Get { key: vec![i] };
    let tickets: Vec<_> = (0..4).map(|i| client.submit(get(i), options).unwrap()).collect();
    assert_eq!(client.capacity(), 0);
    let refused = client.submit(get(9), RequestOptions::default());
    assert!(matches!(refused, Err(Error::InFlightFull)), "{refused:?}");
    let batch = client.submit_batch(vec![get(7), get(8)], RequestOptions::default());
    assert!(matches!(batch, Err(Error::InFlightFull)), "{batch:?}");
    for ticket in tickets {
        let outcome = ticket.wait();
        assert!(matches!(outcome, Outcome::Failed(Error::DeadlineExceeded)), "{outcome:?}");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(40) && elapsed < Duration::from_millis(300),
        "{elapsed:?}"
    );
    assert_eq!((client.capacity(), client.client_stats().deadlines_exceeded), (4, 4));
}

#[test]
fn cancel_and_drop_complete_what_is_in_flight() {
    let (client, _silent) = client_of_a_silent_server(16);
    let first = client.submit(Request::Get { key: b"a".to_vec() }, RequestOptions::default());
    let first = first.unwrap();
    assert!(client.cancel(first.id()));
    assert!(matches!(first.wait(), Outcome::Failed(Error::Cancelled)));
    let pending = client.start_get_many(&[&b"b"[..], b"c"], RequestOptions::default()).unwrap();
    assert!(!pending.is_done());
    drop(client);
    // The driver thread is gone; it completed both on its way out.
    assert!(pending.is_done());
    for value in pending.wait() {
        assert!(matches!(value, Err(Error::Cancelled)), "{value:?}");
    }
}
