//! A bare echo server on any of the ports (no cradle logic): every datagram goes back to its
//! sender unchanged, through the same per-core loop (`dataplane::run`) the node uses. Its
//! rate is the limit of the path under cradle (`cradle bench --protocol echo` drives it).
//!
//! ```text
//! echo socket 127.0.0.1:7100 [SECONDS] [--spin-us N]
//! echo dpdk   127.0.0.1:7100 [SECONDS] "-l 0 --no-huge --vdev net_memif0,role=server"
//! ```
//! Stops by itself after SECONDS (default 60); a signal ends it sooner. `--spin-us` is how
//! long the loop busy-polls before it blocks, as the node's own `--spin-us` (default 1 s: it
//! never blocks under load); a comparison with a node gives both the same.

use dataplane::{Handler, RunnerConfig, Transmit};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Echo;

impl Handler for Echo {
    fn handle_datagram(
        &mut self,
        _: u64,
        peer: SocketAddr,
        datagram: &[u8],
        tx: &mut dyn Transmit,
    ) {
        tx.send(peer, datagram);
    }

    fn end_batch(&mut self, _: u64, _: &mut dyn Transmit) {}
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let mut spin = Duration::from_secs(1);
    if let Some(at) = args.iter().position(|a| a == "--spin-us") {
        let us = args.get(at + 1).and_then(|s| s.parse().ok()).expect("--spin-us MICROSECONDS");
        spin = Duration::from_micros(us);
        args.drain(at..at + 2);
    }
    if args.len() < 3 {
        eprintln!("usage: echo socket|dpdk ADDR [SECONDS] [EAL ARGS] [--spin-us N]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[2].parse().expect("ADDR is IP:PORT");
    let seconds: u64 = args.get(3).map_or(60, |s| s.parse().expect("SECONDS"));
    let stop = Arc::new(AtomicBool::new(false));
    let timer = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(seconds));
        timer.store(true, Ordering::Release);
    });
    let config = RunnerConfig { spin, ..RunnerConfig::default() };
    let outcome = match args[1].as_str() {
        "socket" => {
            let mut port =
                dataplane::UdpPort::bind(addr, dataplane::UdpConfig::default()).expect("bind");
            println!("echo ready on {addr} (socket)");
            dataplane::run(&mut port, &mut Echo, &config, &stop)
        }
        #[cfg(feature = "dpdk")]
        "dpdk" => {
            use dataplane::dpdk::{split_eal_args, DpdkConfig, DpdkDevice};
            let SocketAddr::V4(local) = addr else { panic!("DPDK serves IPv4") };
            let eal = args.get(4).map(String::as_str).unwrap_or("");
            let config_dpdk = DpdkConfig { eal_args: split_eal_args(eal), ..DpdkConfig::default() };
            let device = DpdkDevice::open(&config_dpdk).expect("DPDK device");
            let mut port = device.port(0, local).expect("queue 0");
            println!("echo ready on {addr} (dpdk {})", device.name());
            let ran = dataplane::run(&mut port, &mut Echo, &config, &stop);
            eprintln!("echo: {}", port.describe());
            ran
        }
        other => panic!("unknown or not built: {other}"),
    };
    let stats = outcome.expect("loop");
    eprintln!("echo: {} datagrams in, {} out", stats.datagrams_in, stats.datagrams_out);
}
