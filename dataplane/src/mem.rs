//! An in-memory network for tests: ports that exchange datagrams through shared inboxes, in
//! order and without loss (but for a full inbox or an unbound address, both counted). Faults
//! are not the network's business: wrap the ports in a [`FaultyPort`](crate::FaultyPort).
//!
//! Test-only machinery, so it takes a mutex per burst and allocates per datagram; the ports it
//! hands out still lend preallocated buffers through `Port`, like the real backends.

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

/// What the network has done with the datagrams sent through it; counters only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkCounters {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Lost because the destination's inbox was full.
    pub overflowed: u64,
    /// Lost because nothing is bound at the destination.
    pub unroutable: u64,
}

/// A network of `MemPort`s; clones share it.
#[derive(Clone, Debug, Default)]
pub struct MemNetwork {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled whenever any inbox gains a datagram.
    arrived: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Each bound address's queue of datagrams to receive, oldest first.
    inboxes: HashMap<SocketAddr, VecDeque<Datagram>>,
    counters: NetworkCounters,
    /// Where the search for a free port starts (from 40000).
    next_port: u16,
}

#[derive(Debug)]
struct Datagram {
    from: SocketAddr,
    bytes: Vec<u8>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> MemNetwork {
        MemNetwork::default()
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
                addr.set_port(state.next_port.max(40000));
                state.next_port = addr.port().checked_add(1).expect("ephemeral ports used up");
            }
        }
        assert!(!state.inboxes.contains_key(&addr), "{addr} already bound");
        state.inboxes.insert(addr, VecDeque::new());
        MemPort {
            network: self.clone(),
            local: addr,
            pool: BufferPool::new(pool_buffers, buf_bytes),
            counters: PortCounters::default(),
        }
    }

    /// What the network has done so far.
    pub fn counters(&self) -> NetworkCounters {
        self.lock().counters
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().expect("a thread panicked holding the network")
    }
}

impl State {
    /// Files one datagram at its destination.
    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.counters.sent += 1;
        let Some(inbox) = self.inboxes.get_mut(&to) else {
            self.counters.unroutable += 1;
            return;
        };
        if inbox.len() >= INBOX_MAX {
            self.counters.overflowed += 1;
        } else {
            inbox.push_back(Datagram { from, bytes: bytes.to_vec() });
        }
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
        let Some(datagram) = inbox.pop_front() else {
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
        if !inbox.is_empty() || left.is_zero() {
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
        let inbox = state.inboxes.get_mut(&self.local).expect("bound while the port lives");
        let mut got = 0;
        while rx.len() < BATCH && !inbox.is_empty() {
            let Some(mut buf) = self.pool.alloc() else {
                self.counters.rx_no_buffer += 1;
                break;
            };
            let datagram = inbox.pop_front().expect("not empty");
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

    /// Never leaves anything in `tx`: the network takes every datagram (and loses it only to
    /// a full inbox or an unbound address).
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
