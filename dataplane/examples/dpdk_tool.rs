//! Hardware-test helper for the DPDK port (`hwtests/`), in two modes:
//!
//! ```text
//! dpdk_tool null  "EAL ARGS"                     # net_null: the rx/tx loop runs, counters move
//! dpdk_tool flood "EAL ARGS" NODE_IP:PORT COUNT  # COUNT malformed frames to a node
//! ```
//! `null` exits 0 only if frames were received (and counted as dropped: net_null's are not
//! for us) and datagrams were sent and taken by the device. `flood` learns the node's
//! Ethernet address by ARP, sends COUNT frames that are each wrong in one way (cycling
//! through the kinds below) and prints `sent N`.

use dataplane::dpdk::{split_eal_args, DpdkConfig, DpdkDevice, DpdkPort};
use dataplane::frame::{self, Mac, HEADERS_BYTES};
use dataplane::{Buffer, Port};
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

fn open(eal: &str, local: SocketAddrV4) -> DpdkPort {
    let config = DpdkConfig { eal_args: split_eal_args(eal), ..DpdkConfig::default() };
    let device = DpdkDevice::open(&config).expect("DPDK device");
    device.port(0, local).expect("queue 0")
}

fn null(eal: &str) -> bool {
    let mut port = open(eal, "127.0.0.1:9".parse().unwrap());
    let peer: SocketAddrV4 = "127.0.0.2:9".parse().unwrap();
    port.add_neighbour(*peer.ip(), Mac([2, 0, 0, 0, 0, 2]));
    let (mut rx, mut tx) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        port.rx_burst(&mut rx).expect("rx");
        for buf in rx.drain(..) {
            port.release(buf);
        }
        while tx.len() < 32 {
            let Some(mut buf) = port.alloc_tx() else { break };
            buf.capacity_mut()[..5].copy_from_slice(b"hello");
            buf.set_len(5);
            buf.set_peer(SocketAddr::V4(peer));
            tx.push(buf);
        }
        port.tx_burst(&mut tx).expect("tx");
    }
    let (c, f) = (port.counters(), port.frame_counters());
    let (_, device_tx, _, _) = port.device().stats();
    println!("{}", port.describe());
    println!("device sent {device_tx}");
    f.dropped() > 0 && c.tx > 0 && device_tx >= c.tx
}

/// A valid datagram from `src` to the node, for the malformed ones to start from.
fn datagram(src: (Mac, SocketAddrV4), dst: (Mac, SocketAddrV4)) -> Vec<u8> {
    let payload = b"not a cradle request, and never delivered";
    let mut f = vec![0u8; HEADERS_BYTES + payload.len() + frame::FRAME_BYTES_MIN];
    f[HEADERS_BYTES..HEADERS_BYTES + payload.len()].copy_from_slice(payload);
    let len = frame::write_udp(&mut f, src, dst, payload.len(), 1);
    f.truncate(len);
    f
}

fn fix_ip_checksum(f: &mut [u8]) {
    f[24..26].fill(0);
    let sum = frame::checksum(&f[14..34], 0);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
}

/// The kinds of bad frame, each wrong in one way only.
fn malformed(src: (Mac, SocketAddrV4), dst: (Mac, SocketAddrV4)) -> Vec<Vec<u8>> {
    let good = datagram(src, dst);
    let with = |change: &dyn Fn(&mut Vec<u8>), fix: bool| {
        let mut f = good.clone();
        change(&mut f);
        if fix {
            fix_ip_checksum(&mut f);
        }
        f
    };
    let other_port = (dst.0, SocketAddrV4::new(*dst.1.ip(), dst.1.port().wrapping_add(1000)));
    vec![
        good[..10].to_vec(),            // shorter than Ethernet
        with(&|f| f[0] ^= 0x02, false), // another MAC
        with(&|f| f[12..14].copy_from_slice(&[0x86, 0xdd]), false), // IPv6
        with(&|f| f[14] = 0x65, true),  // IP version 6
        with(&|f| f[14] = 0x44, true),  // IHL 4
        with(&|f| f[24] ^= 0x5a, false), // IP header checksum
        with(&|f| f[16..18].copy_from_slice(&4000u16.to_be_bytes()), true), // total length
        with(&|f| f[20] = 0x20, true),  // more fragments
        with(&|f| f[20..22].copy_from_slice(&0x0010u16.to_be_bytes()), true), // fragment offset
        with(&|f| f[23] = 6, true),     // TCP
        with(&|f| f[38..40].copy_from_slice(&7u16.to_be_bytes()), true), // UDP length
        with(&|f| f[HEADERS_BYTES + 3] ^= 0x10, false), // UDP checksum
        datagram(src, other_port),      // another UDP port
    ]
}

fn flood(eal: &str, node: SocketAddrV4, count: usize) -> bool {
    let local: SocketAddrV4 = "127.0.0.3:40000".parse().unwrap();
    let mut port = open(eal, local);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut rx = Vec::new();
    while port.neighbour(*node.ip()).is_none() {
        assert!(Instant::now() < deadline, "no ARP reply from {node}");
        // A datagram to an unknown peer goes out as an ARP request for it.
        if let Some(mut buf) = port.alloc_tx() {
            buf.set_len(0);
            buf.set_peer(SocketAddr::V4(node));
            let mut tx = vec![buf];
            port.tx_burst(&mut tx).expect("tx");
        }
        std::thread::sleep(Duration::from_millis(50));
        port.rx_burst(&mut rx).expect("rx");
        for buf in rx.drain(..) {
            port.release(buf);
        }
    }
    let node_mac = port.neighbour(*node.ip()).expect("learnt");
    let kinds = malformed((port.device().mac(), local), (node_mac, node));
    let frames: Vec<&[u8]> = (0..count).map(|i| kinds[i % kinds.len()].as_slice()).collect();
    let mut sent = 0;
    for chunk in frames.chunks(4096) {
        sent += port.send_raw(chunk);
        port.rx_burst(&mut rx).expect("rx");
        for buf in rx.drain(..) {
            port.release(buf);
        }
    }
    // The memif client owns the shared rings: exiting now would take frames the node has not
    // read yet with it. An ARP request sent after them is answered only once the node has
    // read everything before it, in order.
    let mut request = vec![0u8; frame::FRAME_BYTES_MIN];
    let local_side = frame::Local { mac: port.device().mac(), addr: local };
    let len = frame::write_arp_request(&mut request, &local_side, *node.ip());
    let replies = port.frame_counters().arp_other;
    port.send_raw(&[&request[..len]]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while port.frame_counters().arp_other == replies {
        assert!(Instant::now() < deadline, "the node did not drain the flood within 60 s");
        port.rx_burst(&mut rx).expect("rx");
        for buf in rx.drain(..) {
            port.release(buf);
        }
    }
    println!("sent {sent} malformed frames of {} kinds to {node} ({node_mac})", kinds.len());
    sent == count
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ok = match (args.get(1).map(String::as_str), args.len()) {
        (Some("null"), 3) => null(&args[2]),
        (Some("flood"), 5) => {
            flood(&args[2], args[3].parse().expect("NODE_IP:PORT"), args[4].parse().expect("COUNT"))
        }
        _ => {
            eprintln!("usage: dpdk_tool null \"EAL\" | dpdk_tool flood \"EAL\" NODE_IP:PORT COUNT");
            std::process::exit(2);
        }
    };
    std::process::exit(if ok { 0 } else { 1 });
}
