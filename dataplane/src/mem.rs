//! An in-memory network for tests: ports that exchange datagrams through shared inboxes, with
//! seeded fault injection (drop, duplicate, reorder, corrupt).
//!
//! Test-only machinery, so it takes a mutex per burst and allocates per datagram; the ports it
//! hands out still lend preallocated buffers through `Port`, like the real backends.
//!
//! Reordering: a datagram picked for reordering is held back and delivered after 1 to 3 later
//! datagrams to the same destination have arrived. So that reordering never turns into loss, a
//! port that finds nothing else to receive gets everything held for it at once. Faults are
//! drawn in the order datagrams are sent, so one seed and one send order give one outcome.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::pool::{BufferPool, PacketBuf};
use crate::udp::UdpConfig;
use crate::{Buffer, Port, PortCounters, BATCH};

/// Datagrams an inbox holds before newer ones are dropped (counted in `overflowed`).
pub const INBOX_MAX: usize = 4096;

/// Per-datagram fault probabilities, each in `0.0..=1.0`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// The datagram is lost.
    pub drop: f64,
    /// The datagram arrives twice.
    pub duplicate: f64,
    /// The datagram arrives after some later ones (see the module docs).
    pub reorder: f64,
    /// One random bit of the datagram is flipped.
    pub corrupt: f64,
}

impl Faults {
    /// A perfect network.
    pub const NONE: Faults = Faults { drop: 0.0, duplicate: 0.0, reorder: 0.0, corrupt: 0.0 };

    fn assert_valid(&self) {
        for p in [self.drop, self.duplicate, self.reorder, self.corrupt] {
            assert!((0.0..=1.0).contains(&p), "fault probability {p} outside 0..=1");
        }
    }
}

/// What the network has done to the datagrams sent through it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Lost on purpose (`Faults::drop`).
    pub dropped: u64,
    /// Delivered twice.
    pub duplicated: u64,
    /// Held back behind later datagrams.
    pub reordered: u64,
    /// Had a bit flipped.
    pub corrupted: u64,
    /// Lost because the destination's inbox was full.
    pub overflowed: u64,
    /// Lost because nothing is bound at the destination.
    pub unroutable: u64,
}

/// A network of `MemPort`s; clones share it.
#[derive(Clone, Debug)]
pub struct MemNetwork {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled whenever any inbox gains a datagram.
    arrived: Condvar,
}

#[derive(Debug)]
struct State {
    faults: Faults,
    rng: SplitMix64,
    inboxes: HashMap<SocketAddr, Inbox>,
    counters: FaultCounters,
    next_port: u16,
}

#[derive(Debug, Default)]
struct Inbox {
    queue: VecDeque<Datagram>,
    held: Vec<Held>,
}

#[derive(Debug)]
struct Datagram {
    from: SocketAddr,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Held {
    datagram: Datagram,
    /// Later arrivals still to let past.
    after: u64,
}

impl MemNetwork {
    /// A network that applies `faults`, drawing from a generator seeded with `seed`.
    pub fn new(faults: Faults, seed: u64) -> MemNetwork {
        faults.assert_valid();
        let state = State {
            faults,
            rng: SplitMix64(seed),
            inboxes: HashMap::new(),
            counters: FaultCounters::default(),
            next_port: 40000,
        };
        MemNetwork {
            shared: Arc::new(Shared { state: Mutex::new(state), arrived: Condvar::new() }),
        }
    }

    /// Opens a port at `addr` (port 0 picks a free one) with the default `UdpConfig` pool.
    /// Binding an address already in use is a bug in the test.
    pub fn bind(&self, addr: SocketAddr) -> MemPort {
        let config = UdpConfig::default();
        self.bind_with(addr, config.pool_buffers, config.buf_bytes)
    }

    /// Opens a port with a pool of `pool_buffers` buffers of `buf_bytes` each.
    pub fn bind_with(
        &self,
        mut addr: SocketAddr,
        pool_buffers: usize,
        buf_bytes: usize,
    ) -> MemPort {
        let mut state = self.lock();
        if addr.port() == 0 {
            while addr.port() == 0 || state.inboxes.contains_key(&addr) {
                addr.set_port(state.next_port);
                state.next_port = state.next_port.checked_add(1).expect("ephemeral ports used up");
            }
        }
        assert!(!state.inboxes.contains_key(&addr), "{addr} already bound");
        state.inboxes.insert(addr, Inbox::default());
        MemPort {
            network: self.clone(),
            local: addr,
            pool: BufferPool::new(pool_buffers, buf_bytes),
            counters: PortCounters::default(),
        }
    }

    /// Changes the fault probabilities for datagrams sent from now on.
    pub fn set_faults(&self, faults: Faults) {
        faults.assert_valid();
        self.lock().faults = faults;
    }

    /// What the network has done so far.
    pub fn counters(&self) -> FaultCounters {
        self.lock().counters
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().expect("a thread panicked holding the network")
    }
}

impl State {
    /// Applies the faults to one datagram and files it at its destination.
    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.counters.sent += 1;
        let Some(inbox) = self.inboxes.get_mut(&to) else {
            self.counters.unroutable += 1;
            return;
        };
        let (faults, rng, counters) = (self.faults, &mut self.rng, &mut self.counters);
        if rng.chance(faults.drop) {
            counters.dropped += 1;
            return;
        }
        let mut bytes = bytes.to_vec();
        if !bytes.is_empty() && rng.chance(faults.corrupt) {
            let bit = rng.below(bytes.len() as u64 * 8);
            bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
            counters.corrupted += 1;
        }
        let copies = if rng.chance(faults.duplicate) { 2 } else { 1 };
        counters.duplicated += copies - 1;
        for _ in 0..copies {
            let datagram = Datagram { from, bytes: bytes.clone() };
            let hold = rng.chance(faults.reorder).then(|| 1 + rng.below(3));
            counters.reordered += u64::from(hold.is_some());
            inbox.arrive(datagram, hold, counters);
        }
    }
}

impl Inbox {
    /// Queues a datagram (or holds it for `hold` later arrivals), then lets out the held
    /// datagrams it was the last to pass.
    fn arrive(&mut self, datagram: Datagram, hold: Option<u64>, counters: &mut FaultCounters) {
        for held in &mut self.held {
            held.after -= 1;
        }
        match hold {
            Some(after) => self.held.push(Held { datagram, after }),
            None => self.push(datagram, counters),
        }
        while let Some(i) = self.held.iter().position(|held| held.after == 0) {
            let released = self.held.remove(i).datagram;
            self.push(released, counters);
        }
    }

    fn push(&mut self, datagram: Datagram, counters: &mut FaultCounters) {
        if self.queue.len() >= INBOX_MAX {
            counters.overflowed += 1;
        } else {
            self.queue.push_back(datagram);
        }
    }

    /// The next datagram; when none is queued, everything held is released first.
    fn pop(&mut self, counters: &mut FaultCounters) -> Option<Datagram> {
        if self.queue.is_empty() {
            for held in std::mem::take(&mut self.held) {
                self.push(held.datagram, counters);
            }
        }
        self.queue.pop_front()
    }

    fn is_ready(&self) -> bool {
        !self.queue.is_empty() || !self.held.is_empty()
    }
}

/// One address on a `MemNetwork`. Closing it (drop) unbinds the address.
#[derive(Debug)]
pub struct MemPort {
    network: MemNetwork,
    local: SocketAddr,
    pool: BufferPool,
    counters: PortCounters,
}

impl MemPort {
    /// Sends one datagram without a pool buffer (for test clients).
    pub fn send_to(&self, bytes: &[u8], to: SocketAddr) {
        self.network.lock().deliver(self.local, to, bytes);
        self.network.shared.arrived.notify_all();
    }

    /// Receives one datagram into `buf`, waiting up to `timeout`; `None` on timeout. A
    /// datagram longer than `buf` is cut to `buf.len()`, like `UdpSocket::recv_from`.
    pub fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        let mut state = wait(&self.network, self.local, timeout);
        let state = &mut *state;
        let inbox = state.inboxes.get_mut(&self.local).expect("bound while the port lives");
        let Some(datagram) = inbox.pop(&mut state.counters) else {
            return Ok(None);
        };
        let len = datagram.bytes.len().min(buf.len());
        buf[..len].copy_from_slice(&datagram.bytes[..len]);
        self.counters.rx += 1;
        self.counters.rx_truncated += u64::from(len < datagram.bytes.len());
        Ok(Some((len, datagram.from)))
    }

    /// What this port has done so far.
    pub fn counters(&self) -> PortCounters {
        self.counters
    }
}

/// Waits until the inbox at `local` has something or `timeout` passed; returns the lock.
fn wait(network: &MemNetwork, local: SocketAddr, timeout: Duration) -> MutexGuard<'_, State> {
    let deadline = Instant::now() + timeout;
    let mut state = network.lock();
    loop {
        let inbox = state.inboxes.get(&local).expect("bound while the port lives");
        let left = deadline.saturating_duration_since(Instant::now());
        if inbox.is_ready() || left.is_zero() {
            return state;
        }
        state = network.shared.arrived.wait_timeout(state, left).expect("poisoned").0;
    }
}

impl Drop for MemPort {
    fn drop(&mut self) {
        if let Ok(mut state) = self.network.shared.state.lock() {
            state.inboxes.remove(&self.local);
        }
    }
}

impl Port for MemPort {
    type Buf = PacketBuf;

    fn rx_burst(&mut self, rx: &mut Vec<PacketBuf>) -> io::Result<usize> {
        let mut state = self.network.lock();
        let state = &mut *state;
        let inbox = state.inboxes.get_mut(&self.local).expect("bound while the port lives");
        let mut got = 0;
        while rx.len() < BATCH && inbox.is_ready() {
            let Some(mut buf) = self.pool.alloc() else {
                self.counters.rx_no_buffer += 1;
                break;
            };
            let datagram = inbox.pop(&mut state.counters).expect("ready");
            let len = datagram.bytes.len().min(buf.capacity());
            buf.raw_mut()[..len].copy_from_slice(&datagram.bytes[..len]);
            buf.set_len(len);
            buf.set_peer(datagram.from);
            self.counters.rx_truncated += u64::from(len < datagram.bytes.len());
            rx.push(buf);
            got += 1;
        }
        self.counters.rx += got as u64;
        Ok(got)
    }

    fn alloc_tx(&mut self) -> Option<PacketBuf> {
        self.pool.alloc()
    }

    /// Never leaves anything in `tx`: the network takes every datagram (and may lose it).
    fn tx_burst(&mut self, tx: &mut Vec<PacketBuf>) -> io::Result<usize> {
        let sent = tx.len();
        let mut state = self.network.shared.state.lock().expect("poisoned");
        for buf in tx.drain(..) {
            state.deliver(self.local, buf.peer(), buf.payload());
            self.pool.release(buf);
        }
        drop(state);
        self.network.shared.arrived.notify_all();
        self.counters.tx += sent as u64;
        Ok(sent)
    }

    fn release(&mut self, buf: PacketBuf) {
        self.pool.release(buf);
    }

    fn wait_readable(&mut self, timeout: Duration) -> io::Result<()> {
        drop(wait(&self.network, self.local, timeout));
        Ok(())
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, seedable, good enough for fault draws.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`; draws nothing when `p` is 0.
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }

    /// A number in `0..n` (modulo bias is irrelevant at test sizes).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
