//! `AsyncClient` (feature `tokio`) against a fake server on loopback; the test against a real
//! node is `tests/async_client.rs` of the workspace root.
#![cfg(feature = "tokio")]

mod support;

use client::{AsyncClient, ClientConfig, Error, Request, RequestOptions};
use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::udp_server::spawn_udp_server;

#[tokio::test(flavor = "current_thread")]
async fn a_dropped_future_cancels_its_request() {
    let (addr, stop, server) = spawn_udp_server(true);
    let client = AsyncClient::connect(ClientConfig::new(vec![addr])).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    let _silent = UdpSocket::bind(addr).unwrap();
    // The GET is sent on the future's first poll; the server never answers it.
    let get = client.call(Request::Get { key: b"k".to_vec() }, RequestOptions::default());
    let timed_out = tokio::time::timeout(Duration::from_millis(20), get).await;
    assert!(timed_out.is_err(), "a silent server answered");
    assert_eq!(client.shared().in_flight(), 0, "dropping the future cancelled the GET");
    assert_eq!(client.shared().client_stats().cancelled, 1);
    let full = client.get_many(&vec![b"k"; 5000], RequestOptions::default()).await;
    assert!(matches!(full, Err(Error::InFlightFull)), "{full:?}");
}
