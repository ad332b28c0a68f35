//! A node's cores with their doors, on real sockets in threads (as `cradle node` runs them,
//! with in-memory stores), and a blocking text-protocol client.

#![allow(dead_code, unreachable_pub)]

use control::{Core, CoreConfig, NodeLayout, NodeStats};
use dataplane::{run, RunnerConfig, UdpConfig, UdpPort};
use memcache::{DoorConfig, DoorHandler, DoorPort};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub struct Node {
    pub door: SocketAddr,
    pub cradle: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    loops: Vec<JoinHandle<()>>,
}

impl Node {
    pub fn start(cores: u32, config: DoorConfig) -> Node {
        Node::start_with(cores, config, control::Durability::Memory)
    }

    /// With stores of the given durability class (in memory either way).
    pub fn start_with(cores: u32, config: DoorConfig, durability: control::Durability) -> Node {
        let ports: Vec<UdpPort> = (0..cores)
            .map(|_| UdpPort::bind("127.0.0.1:0".parse().unwrap(), UdpConfig::default()).unwrap())
            .collect();
        let cradle: Vec<SocketAddr> = ports.iter().map(dataplane::Port::local_addr).collect();
        let layout = Arc::new(NodeLayout::new(8, cradle.clone()).unwrap());
        let map: Arc<[u8]> = layout.map().encode().into();
        let stats = Arc::new(NodeStats::for_layout(&layout));
        let (doors, _) =
            memcache::doors("127.0.0.1:0".parse().unwrap(), cores, &config, stats.clone()).unwrap();
        let door = doors[0].local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let wall =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64;
        let mut loops = Vec::new();
        for ((core, port), door) in (0u32..).zip(ports).zip(doors) {
            let config = CoreConfig {
                wall_clock_start_ns: wall,
                ..CoreConfig::new(core, layout.clone(), [7; 32])
            };
            let endpoints = layout.endpoints_on(core);
            let mut storage =
                control::CoreStorage::in_memory(endpoints, &storage::StoreConfig::default());
            storage.durability = durability;
            let core_state =
                Core::with_storage(config, stats.clone(), map.clone(), storage).unwrap();
            let spin = RunnerConfig::default().spin;
            let mut port = DoorPort::new(port, &door, spin).unwrap();
            let mut handler = DoorHandler { core: core_state, door };
            let stop = stop.clone();
            loops.push(std::thread::spawn(move || {
                run(&mut port, &mut handler, &RunnerConfig::default(), &stop).unwrap();
            }));
        }
        Node { door, cradle, stop, loops }
    }

    pub fn tcp(&self) -> Client {
        Client::connect(self.door)
    }

    /// Whether every loop is still running (none panicked or failed).
    pub fn alive(&self) -> bool {
        self.loops.iter().all(|l| !l.is_finished())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for l in self.loops.drain(..) {
            let _ = l.join();
        }
    }
}

pub struct Client {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { reader: BufReader::new(stream.try_clone().unwrap()), stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Closes the sending side (the replies can still be read).
    pub fn shutdown_write(&mut self) {
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }

    /// One reply line, `\r\n` included.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    /// Sends `request` and reads one line.
    pub fn ask(&mut self, request: &str) -> String {
        self.send(request.as_bytes());
        self.line()
    }

    /// Reads `n` bytes exactly.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.reader.read_exact(&mut buf).unwrap();
        buf
    }

    /// Lines up to and including `END`.
    pub fn until_end(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "connection closed before END: {lines:?}");
            let end = line == "END\r\n";
            lines.push(line);
            if end {
                return lines;
            }
        }
    }

    /// The value of `key` (with its flags), or None.
    pub fn get(&mut self, key: &str) -> Option<(u32, Vec<u8>)> {
        self.send(format!("get {key}\r\n").as_bytes());
        let line = self.line();
        if line == "END\r\n" {
            return None;
        }
        let parts: Vec<&str> = line.trim_end().split(' ').collect();
        assert_eq!(parts[0..2], ["VALUE", key], "{line:?}");
        let flags = parts[2].parse().unwrap();
        let len: usize = parts[3].parse().unwrap();
        let value = self.bytes(len);
        assert_eq!(self.bytes(2), b"\r\n");
        assert_eq!(self.line(), "END\r\n");
        Some((flags, value))
    }

    /// `stats` as (name, value) pairs.
    pub fn stat(&mut self, name: &str) -> u64 {
        self.send(b"stats\r\n");
        let lines = self.until_end();
        let prefix = format!("STAT {name} ");
        let line =
            lines.iter().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name}"));
        line[prefix.len()..].trim_end().parse().unwrap()
    }
}

/// A UDP client speaking memcached's framing.
pub struct Udp {
    pub socket: UdpSocket,
    server: SocketAddr,
    next_id: u16,
}

impl Udp {
    pub fn new(server: SocketAddr) -> Udp {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Udp { socket, server, next_id: 1 }
    }

    /// Sends one request; returns its whole reply (datagrams reassembled by sequence) and the
    /// bytes that arrived on the wire, headers included.
    pub fn ask(&mut self, payload: &[u8]) -> (Vec<u8>, usize) {
        let id = self.next_id;
        self.next_id += 1;
        let mut datagram = vec![(id >> 8) as u8, id as u8, 0, 0, 0, 1, 0, 0];
        datagram.extend_from_slice(payload);
        self.socket.send_to(&datagram, self.server).unwrap();
        let mut parts: Vec<Option<Vec<u8>>> = Vec::new();
        let mut wire = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = self.socket.recv(&mut buf).expect("a reply datagram");
            wire += n;
            assert!((8..=1400).contains(&n), "datagram of {n} bytes");
            assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), id);
            let seq = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            let count = u16::from_be_bytes([buf[4], buf[5]]) as usize;
            parts.resize(count, None);
            parts[seq] = Some(buf[8..n].to_vec());
            if parts.iter().all(Option::is_some) {
                return (parts.into_iter().flatten().flatten().collect(), wire);
            }
        }
    }
}
