//! A deterministic simulated network between one `ClientCore` and fake servers: seeded loss,
//! duplication and reordering (random latency), virtual time.

use super::fake_server::FakeServer;
use client::{ClientConfig, ClientCore, Error, Reply, Request, RequestId};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub(crate) const CLIENT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9)), 5000);

pub(crate) fn server_addr(index: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + index))
}

/// Defaults for simulations: the given servers, seed 1.
pub(crate) fn config(servers: usize) -> ClientConfig {
    let mut config = ClientConfig::new((0..servers as u16).map(server_addr).collect());
    config.seed = 1;
    config
}

struct Packet {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

pub(crate) struct Sim {
    pub(crate) start: Instant,
    pub(crate) now: Instant,
    pub(crate) core: ClientCore,
    pub(crate) servers: Vec<FakeServer>,
    pub(crate) loss_percent: u64,
    pub(crate) duplicate_percent: u64,
    rng: u64,
    seq: u64,
    network: BTreeMap<(Instant, u64), Packet>,
    /// Every datagram the client sent: when, to whom, the tracking ids of its messages.
    pub(crate) sent: Vec<(Instant, SocketAddr, Vec<u64>)>,
    completions: HashMap<RequestId, (Instant, Result<Reply, Error>)>,
}

impl Sim {
    pub(crate) fn new(seed: u64, config: ClientConfig) -> Self {
        let servers = config.servers.iter().map(|&addr| FakeServer::new(addr)).collect();
        let start = Instant::now();
        Sim {
            start,
            now: start,
            core: ClientCore::new(config).expect("valid config"),
            servers,
            loss_percent: 0,
            duplicate_percent: 0,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            seq: 0,
            network: BTreeMap::new(),
            sent: Vec::new(),
            completions: HashMap::new(),
        }
    }

    fn random(&mut self, below: u64) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
    }

    pub(crate) fn submit(&mut self, request: Request) -> RequestId {
        self.core.submit(self.now, request)
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        if self.random(100) < self.loss_percent {
            return;
        }
        let copies = if self.random(100) < self.duplicate_percent { 2 } else { 1 };
        for _ in 0..copies {
            let latency = Duration::from_micros(20 + self.random(100));
            self.seq += 1;
            let packet = Packet { from, to, bytes: bytes.clone() };
            self.network.insert((self.now + latency, self.seq), packet);
        }
    }

    /// One event: pending transmits go out, then the earliest delivery or timer happens.
    /// Returns false when nothing is left to happen.
    fn step(&mut self) -> bool {
        while let Some((to, datagram)) = self.core.poll_transmit() {
            assert!(datagram.len() <= proto::DATAGRAM_BYTES_MAX);
            let tracking =
                proto::Messages::new(&datagram).map(|m| m.unwrap().header.tracking_id).collect();
            self.sent.push((self.now, to, tracking));
            self.send(CLIENT_ADDR, to, datagram);
        }
        let delivery = self.network.keys().next().map(|&(at, _)| at);
        let next = match (delivery, self.core.poll_timeout()) {
            (Some(d), Some(t)) => d.min(t),
            (d, t) => match d.or(t) {
                Some(at) => at,
                None => return false,
            },
        };
        self.now = self.now.max(next);
        if delivery == Some(next) {
            let (_, packet) = self.network.pop_first().expect("a delivery");
            self.deliver(packet);
        }
        self.core.handle_timeout(self.now);
        self.collect();
        true
    }

    fn deliver(&mut self, packet: Packet) {
        if packet.to == CLIENT_ADDR {
            self.core.handle_datagram(self.now, packet.from, &packet.bytes);
            return;
        }
        let Some(server) = self.servers.iter_mut().find(|s| s.addr == packet.to) else {
            return;
        };
        for reply in server.handle(&packet.bytes) {
            self.send(packet.to, CLIENT_ADDR, reply);
        }
    }

    fn collect(&mut self) {
        while let Some((id, result)) = self.core.poll_completion() {
            let previous = self.completions.insert(id, (self.now, result));
            assert!(previous.is_none(), "{id:?} completed twice");
        }
    }

    /// Runs until `id` completed (at most `events_max` events); its result and virtual time.
    pub(crate) fn run_until(
        &mut self,
        id: RequestId,
        events_max: usize,
    ) -> (Duration, Result<Reply, Error>) {
        self.collect();
        for _ in 0..events_max {
            if self.completions.contains_key(&id) {
                break;
            }
            assert!(self.step(), "nothing left to happen but {id:?} did not complete");
        }
        let (at, result) = self.completions.remove(&id).expect("completed within the event budget");
        (at - self.start, result)
    }

    /// When datagrams carrying `tracking_id` were sent, relative to the start.
    pub(crate) fn sends_of(&self, tracking_id: u64) -> Vec<Duration> {
        self.sent
            .iter()
            .filter(|(_, _, ids)| ids.contains(&tracking_id))
            .map(|&(at, _, _)| at - self.start)
            .collect()
    }

    /// Runs until every submitted request completed and the network is quiet.
    pub(crate) fn run_all(
        &mut self,
        events_max: usize,
    ) -> HashMap<RequestId, Result<Reply, Error>> {
        for _ in 0..events_max {
            if !self.step() {
                return self.completions.drain().map(|(id, (_, result))| (id, result)).collect();
            }
        }
        panic!("did not settle within {events_max} events");
    }

    /// Submits `request`, runs until it completes, panics on an error.
    pub(crate) fn call(&mut self, request: Request) -> Reply {
        let id = self.submit(request);
        match self.run_until(id, 1_000_000).1 {
            Ok(reply) => reply,
            Err(error) => panic!("request failed: {error}"),
        }
    }
}
