//! Packet I/O for the per-core loops: the `Port` trait, its backends, and the loop itself.
//!
//! A port lends receive buffers in bursts and takes them back, and takes transmit buffers it
//! lent, so a DPDK mbuf or an AF_XDP frame can stand behind `Port::Buf` without copies. The
//! backends here are kernel UDP sockets (`udp`, recvmmsg/sendmmsg in batches of `BATCH`) and a
//! perfect in-memory network (`mem`) for tests; `faulty` wraps any port of either kind in
//! seeded loss, duplication, reordering and corruption. The loop (`runner`) is pinned to
//! one core and runs each burst to completion through a `Handler`, which is sans-IO: it gets
//! datagrams and `now`, and hands replies to a `Transmit`.
//!
//! This crate must never allocate per packet on the hot path, never block while a burst is in
//! hand, and never know what the bytes mean (that is `proto` and `control`).

// Unsafe code lives in `udp` and the bypass backends (`dpdk`, `xdp`) alone, which opt back in.
#![deny(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod faulty;
pub mod frame;
pub mod mem;
mod pool;
pub mod runner;
pub mod udp;
#[cfg(feature = "af-xdp")]
pub mod xdp;

pub use faulty::{FaultControl, FaultCounters, Faults, FaultyPort};
pub use mem::{MemNetwork, MemPort, NetworkCounters};
pub use pool::PacketBuf;
pub use runner::{run, PinOutcome, RunStats, Runner, RunnerConfig, DATAGRAMS_PER_STEP_MAX};
pub use udp::{UdpConfig, UdpPort};

/// Datagrams per rx/tx burst (quinn-udp's `BATCH_SIZE`).
pub const BATCH: usize = 32;

/// What a port has done since it was opened; counters only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Datagrams received (each datagram of a coalesced buffer counts).
    pub rx: u64,
    /// Received datagrams longer than a buffer, delivered cut to the buffer's length.
    pub rx_truncated: u64,
    /// `rx_burst` calls that found no free buffer (everything lent out).
    pub rx_no_buffer: u64,
    /// Datagrams handed to the network.
    pub tx: u64,
    /// Datagrams dropped on a hard send error (firewall, bad address, too big).
    pub tx_dropped: u64,
    /// `tx_burst` calls that stopped because the send queue was full.
    pub tx_would_block: u64,
    /// Runs of datagrams to one peer sent as one segmented message (UDP GSO).
    pub tx_segmented: u64,
    /// Segmented sends the kernel refused (it cannot segment, or the path MTU is below the
    /// datagram size), sent again one datagram per message; later runs of that size or
    /// larger are not segmented.
    pub tx_segmentation_refused: u64,
}

/// A packet buffer lent by a port.
pub trait Buffer {
    /// The datagram's bytes (received, or written so far for transmit).
    fn payload(&self) -> &[u8];
    /// The whole writable capacity, for building a datagram to transmit.
    fn capacity_mut(&mut self) -> &mut [u8];
    /// Sets the datagram length after writing into `capacity_mut`.
    fn set_len(&mut self, len: usize);
    /// The remote address (source on receive, destination on transmit).
    fn peer(&self) -> SocketAddr;
    /// Sets the destination of a transmit buffer.
    fn set_peer(&mut self, peer: SocketAddr);
    /// A received buffer may hold several datagrams from one peer that the kernel coalesced
    /// (UDP GRO): then this is the size of each, the last one possibly shorter. 0 when the
    /// buffer holds one datagram. [`datagrams`] splits a buffer accordingly.
    fn segment_bytes(&self) -> usize {
        0
    }
}

/// The datagrams in a received buffer, in arrival order (see [`Buffer::segment_bytes`]). An
/// empty datagram is still one datagram.
pub fn datagrams<B: Buffer>(buf: &B) -> impl Iterator<Item = &[u8]> {
    let payload = buf.payload();
    let size = match buf.segment_bytes() {
        0 => payload.len().max(1),
        size => size,
    };
    let empty = payload.is_empty().then_some(payload);
    payload.chunks(size).chain(empty)
}

/// One queue of datagrams: bursts in, bursts out.
pub trait Port {
    /// The buffer type this port lends.
    type Buf: Buffer;

    /// Appends up to `BATCH - rx.len()` received datagrams to `rx` without blocking; returns
    /// how many. The caller gives each back with `release` (or reuses it for transmit).
    fn rx_burst(&mut self, rx: &mut Vec<Self::Buf>) -> io::Result<usize>;

    /// Lends an empty transmit buffer; `None` when the pool is exhausted.
    fn alloc_tx(&mut self) -> Option<Self::Buf>;

    /// Sends datagrams from the front of `tx` and removes the ones sent or dropped, taking
    /// their buffers back; returns how many were sent. Buffers the port could not take now
    /// (queue full) stay in `tx`.
    fn tx_burst(&mut self, tx: &mut Vec<Self::Buf>) -> io::Result<usize>;

    /// Takes back a buffer lent by `rx_burst` or `alloc_tx`.
    fn release(&mut self, buf: Self::Buf);

    /// Blocks until a datagram may be ready or `timeout` passed (idle policy).
    fn wait_readable(&mut self, timeout: Duration) -> io::Result<()>;

    /// Blocks until `tx_burst` may take more or `timeout` passed, after it left datagrams in
    /// `tx`. The default only yields the CPU, for ports whose queue never stays full.
    fn wait_writable(&mut self, timeout: Duration) -> io::Result<()> {
        let _ = timeout;
        std::thread::yield_now();
        Ok(())
    }

    /// The address this port receives on.
    fn local_addr(&self) -> SocketAddr;
}

/// Where a handler puts the datagrams it wants sent.
pub trait Transmit {
    /// Queues one datagram to `peer`; false if it had to be dropped (no buffer).
    fn send(&mut self, peer: SocketAddr, datagram: &[u8]) -> bool;
}

/// What a per-core loop runs: sans-IO, time passed in.
pub trait Handler {
    /// One received datagram from `peer`.
    fn handle_datagram(
        &mut self,
        now_ns: u64,
        peer: SocketAddr,
        datagram: &[u8],
        tx: &mut dyn Transmit,
    );

    /// Called with each datagram of a burst, in order, before any of them is handled: a
    /// handler may read ahead what it will need for each (a request's route and endpoint),
    /// so the cache misses of a burst overlap instead of coming one request at a time.
    fn prefetch(&mut self, _datagram: &[u8]) {}

    /// Called before a burst's datagrams with the number of receive buffers it filled: all
    /// `BATCH` of them means more datagrams are probably queued. (With UDP GRO one buffer may
    /// hold a run of up to 64 datagrams from one peer, so the datagrams tell less.)
    fn burst_received(&mut self, buffers: usize) {
        let _ = buffers;
    }

    /// Called once after each burst (and on idle wake-ups): group commit, timers, stats.
    fn end_batch(&mut self, now_ns: u64, tx: &mut dyn Transmit);

    /// Whether the handler waits for work done outside the loop (a sync thread making held
    /// writes durable): the loop then keeps polling instead of blocking, so replies go out
    /// as soon as it is done.
    fn waiting(&self) -> bool {
        false
    }

    /// Called after a burst of `datagrams` was handled and its replies handed to the port,
    /// `service_ns` after the burst was received: the longest any of them waited in this loop.
    fn burst_done(&mut self, datagrams: usize, service_ns: u64) {
        let _ = (datagrams, service_ns);
    }

    /// Called after every iteration (with datagrams or not) with how long its work took and
    /// whether that was over the loop's stall budget (`RunnerConfig::stall_budget`): a loop
    /// that stalls delays every request queued behind it, so the handler publishes it.
    fn iteration_done(&mut self, spent_ns: u64, stalled: bool) {
        let _ = (spent_ns, stalled);
    }
}
