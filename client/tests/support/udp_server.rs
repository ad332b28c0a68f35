//! A fake server on a real loopback socket, on its own thread.

use super::fake_server::FakeServer;
use proto::{MapEntry, Messages, PartitionMap, DATAGRAM_BYTES_ACCEPTED};
use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A fake server until the returned flag is set; with `map_entries` its map names it.
pub(crate) fn spawn_udp_server(
    map_entries: bool,
) -> (SocketAddr, Arc<AtomicBool>, thread::JoinHandle<()>) {
    spawn_with(map_entries, false)
}

/// A fake server that drops the first datagram carrying each tracking id (a first
/// transmission is always lost: only resends get through). Its map is empty, so clients
/// keep sending to it.
pub(crate) fn spawn_lossy_udp_server() -> (SocketAddr, Arc<AtomicBool>, thread::JoinHandle<()>) {
    spawn_with(false, true)
}

fn spawn_with(
    map_entries: bool,
    drop_first: bool,
) -> (SocketAddr, Arc<AtomicBool>, thread::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let addr = socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let handle = thread::spawn(move || {
        let mut server = FakeServer::new(addr);
        server.require_token = !drop_first;
        if map_entries {
            let entry = MapEntry::single(0, u64::MAX, 0, addr);
            server.map = PartitionMap::new(1, vec![entry]);
        }
        let mut seen = HashSet::new();
        let mut buf = vec![0; DATAGRAM_BYTES_ACCEPTED + 1];
        while !stopped.load(Ordering::Relaxed) {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if drop_first {
                let fresh: Vec<u64> = Messages::new(&buf[..len])
                    .filter_map(Result::ok)
                    .map(|message| message.header.tracking_id)
                    .filter(|&tracking_id| seen.insert(tracking_id))
                    .collect();
                if !fresh.is_empty() {
                    continue;
                }
            }
            for reply in server.handle(&buf[..len]) {
                socket.send_to(&reply, from).unwrap();
            }
        }
    });
    (addr, stop, handle)
}
