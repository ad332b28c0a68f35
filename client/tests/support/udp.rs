//! A fake server on a real loopback socket.

use super::fake_server::FakeServer;
use proto::{MapEntry, PartitionMap, DATAGRAM_BYTES_ACCEPTED};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A fake server on a real loopback socket, until the returned flag is set.
pub(crate) fn spawn_udp_server(
    map_entries: bool,
) -> (SocketAddr, Arc<AtomicBool>, thread::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let addr = socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let handle = thread::spawn(move || {
        let mut server = FakeServer::new(addr);
        server.require_token = true;
        if map_entries {
            let entry = MapEntry { hash_start: 0, hash_end: u64::MAX, partition: 0, addr };
            server.map = PartitionMap { epoch: 1, entries: vec![entry] };
        }
        let mut buf = vec![0; DATAGRAM_BYTES_ACCEPTED + 1];
        while !stopped.load(Ordering::Relaxed) {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            for reply in server.handle(&buf[..len]) {
                socket.send_to(&reply, from).unwrap();
            }
        }
    });
    (addr, stop, handle)
}
