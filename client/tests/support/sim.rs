//! A deterministic simulated network between one `ClientCore` and fake servers: seeded loss,
//! duplication and reordering (random latency), an optional rate limit, virtual time.

use super::fake_server::FakeServer;
use client::{ClientConfig, ClientCore, Error, Reply, Request, RequestId};
use std::collections::BTreeMap;
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
    /// A policer on both directions together (0: none), like nftables' `limit rate over
    /// ... drop`: a token bucket filling at this many bytes per second up to `burst_bytes`;
    /// a datagram not lost otherwise passes if the bucket holds its length and is dropped if
    /// not.
    pub(crate) rate_bytes_per_second: u64,
    pub(crate) burst_bytes: u64,
    /// The bucket, in byte-nanoseconds (bytes × 10^9), as of `bucket_at`.
    bucket: u128,
    bucket_at: Instant,
    /// Datagrams the policer dropped.
    pub(crate) policed: u64,
    /// Latency is 20 µs plus up to this much more, drawn per datagram (0: every datagram
    /// takes 20 µs, and each direction delivers in order).
    pub(crate) jitter_us: u64,
    rng: testkit::Rng,
    seq: u64,
    network: BTreeMap<(Instant, u64), Packet>,
    /// Every datagram the client sent: when, to whom, the tracking ids of its messages.
    pub(crate) sent: Vec<(Instant, SocketAddr, Vec<u64>)>,
    /// Every message delivered to the client: when, and its header.
    pub(crate) received: Vec<(Instant, proto::HeaderFields)>,
    completions: BTreeMap<RequestId, (Instant, Result<Reply, Error>)>,
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
            rate_bytes_per_second: 0,
            burst_bytes: 64 << 10,
            bucket: u128::MAX,
            bucket_at: start,
            policed: 0,
            jitter_us: 100,
            rng: testkit::Rng::from_seed(seed),
            seq: 0,
            network: BTreeMap::new(),
            sent: Vec::new(),
            received: Vec::new(),
            completions: BTreeMap::new(),
        }
    }

    fn random(&mut self, below: u64) -> u64 {
        self.rng.below(below)
    }

    pub(crate) fn submit(&mut self, request: Request) -> RequestId {
        self.core.submit(self.now, request)
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        if self.random(100) < self.loss_percent || !self.police(bytes.len()) {
            return;
        }
        let copies = if self.random(100) < self.duplicate_percent { 2 } else { 1 };
        for _ in 0..copies {
            let jitter = if self.jitter_us == 0 { 0 } else { self.random(self.jitter_us) };
            let latency = Duration::from_micros(20 + jitter);
            self.seq += 1;
            let packet = Packet { from, to, bytes: bytes.clone() };
            self.network.insert((self.now + latency, self.seq), packet);
        }
    }

    /// Whether the policer lets a datagram of `len` bytes through now.
    fn police(&mut self, len: usize) -> bool {
        if self.rate_bytes_per_second == 0 {
            return true;
        }
        let elapsed = self.now.duration_since(self.bucket_at).as_nanos();
        let full = u128::from(self.burst_bytes) * 1_000_000_000;
        let filled = elapsed * u128::from(self.rate_bytes_per_second);
        self.bucket = self.bucket.saturating_add(filled).min(full);
        self.bucket_at = self.now;
        let cost = len as u128 * 1_000_000_000;
        if self.bucket < cost {
            self.policed += 1;
            return false;
        }
        self.bucket -= cost;
        true
    }

    /// One event: pending transmits go out, then the earliest delivery or timer happens.
    /// Returns false when nothing is left to happen.
    fn step(&mut self) -> bool {
        self.transmit();
        let delivery = self.network.keys().next().map(|&(at, _)| at);
        let Some(next) = self.next_event() else {
            return false;
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

    /// The client's pending datagrams go out.
    fn transmit(&mut self) {
        while let Some((to, datagram)) = self.core.poll_transmit() {
            assert!(datagram.len() <= proto::DATAGRAM_BYTES_MAX);
            let tracking =
                proto::Messages::new(&datagram).map(|m| m.unwrap().header.tracking_id).collect();
            self.sent.push((self.now, to, tracking));
            self.send(CLIENT_ADDR, to, datagram);
        }
    }

    /// When the next delivery or timer is due.
    fn next_event(&self) -> Option<Instant> {
        let delivery = self.network.keys().next().map(|&(at, _)| at);
        match (delivery, self.core.poll_timeout()) {
            (Some(d), Some(t)) => Some(d.min(t)),
            (d, t) => d.or(t),
        }
    }

    fn deliver(&mut self, packet: Packet) {
        if packet.to == CLIENT_ADDR {
            let headers = proto::Messages::new(&packet.bytes).filter_map(Result::ok);
            self.received.extend(headers.map(|m| (self.now, m.header)));
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

    /// Runs every event up to `at` (relative to the start), then sets the clock to `at`.
    pub(crate) fn run_until_time(&mut self, at: Duration) {
        let end = self.start + at;
        loop {
            self.transmit();
            match self.next_event() {
                Some(next) if next <= end => assert!(self.step()),
                _ => break,
            }
        }
        self.now = self.now.max(end);
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
    ) -> BTreeMap<RequestId, Result<Reply, Error>> {
        for _ in 0..events_max {
            if !self.step() {
                let completions = std::mem::take(&mut self.completions);
                return completions.into_iter().map(|(id, (_, result))| (id, result)).collect();
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
