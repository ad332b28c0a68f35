//! A fault-injecting wrapper around any [`Port`] (smoltcp's `phy::FaultInjector`): seeded,
//! per-datagram loss, duplication, reordering and one-bit corruption of what the wrapped port
//! receives, and loss of what it is asked to send.
//!
//! The faults are drawn from the port's own generator, in the order datagrams come out of the
//! wrapped port (receive) or are offered to it (transmit), so one seed and one arrival order
//! give one outcome. Wrapping every port of a test network on its receive side puts each
//! datagram through exactly one set of draws, as a faulty network would.
//!
//! Reordering: a datagram picked for it is held back until 1 to 3 later datagrams have come
//! out of the wrapped port. So that reordering never turns into loss, an `rx_burst` that finds
//! nothing new in the wrapped port releases everything held, and `wait_readable` returns at
//! once while anything is held. Holding is bounded without a limit of its own: every arrival
//! (each copy of a duplicate is one) counts down every held datagram, so at most the last 3
//! arrivals are held.
//!
//! Per datagram, also for a buffer holding a coalesced run (UDP GRO, see
//! [`Buffer::segment_bytes`]): such a buffer is split into one buffer per datagram first,
//! with buffers borrowed from the wrapped port's transmit pool. A duplicate also needs such a
//! buffer. When the wrapped port lends none, the duplicate is not made and the run stays one
//! unit; both are counted in `FaultCounters::no_buffer`.
//!
//! The generator is a small SplitMix64 of this module's own: `dataplane` is a shipping crate
//! and must not depend on the workspace's test-support crate (`testkit`), so this is the one
//! seeded generator of the tests outside it.
//!
//! Test machinery: it takes a mutex per burst (to read the fault settings, which another
//! thread may change through a [`FaultControl`], and to add to the counters) and keeps at
//! most a few bursts of the wrapped port's buffers queued or held.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::{datagrams, Buffer, Port, BATCH};

/// Per-datagram fault probabilities, each in `0.0..=1.0`. The `rx_` ones apply to what the
/// wrapped port receives, in the order drop, corrupt, duplicate, reorder (each copy of a
/// duplicate on its own); `tx_drop` to what it is asked to send.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// A received datagram is lost.
    pub rx_drop: f64,
    /// A received datagram is delivered twice.
    pub rx_duplicate: f64,
    /// A received datagram is delivered after 1 to 3 later ones (see the module docs).
    pub rx_reorder: f64,
    /// One random bit of a received datagram is flipped (an empty one is left alone).
    pub rx_corrupt: f64,
    /// A datagram to send is lost (taken from `tx` and given back to the wrapped port as if
    /// sent).
    pub tx_drop: f64,
}

impl Faults {
    /// No faults: the wrapped port as it is.
    pub const NONE: Faults =
        Faults { rx_drop: 0.0, rx_duplicate: 0.0, rx_reorder: 0.0, rx_corrupt: 0.0, tx_drop: 0.0 };

    fn assert_valid(&self) {
        for p in [self.rx_drop, self.rx_duplicate, self.rx_reorder, self.rx_corrupt, self.tx_drop] {
            assert!((0.0..=1.0).contains(&p), "fault probability {p} outside 0..=1");
        }
    }
}

/// What the faulty ports of one [`FaultControl`] did; counters only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Datagrams that came out of the wrapped ports (each of a split run counts).
    pub rx: u64,
    /// Received datagrams lost on purpose.
    pub rx_dropped: u64,
    /// Received datagrams delivered twice.
    pub rx_duplicated: u64,
    /// Received datagrams (or copies) held back behind later ones.
    pub rx_reordered: u64,
    /// Received datagrams with a bit flipped.
    pub rx_corrupted: u64,
    /// Datagrams offered to send (one left in `tx` by the wrapped port and offered again
    /// counts again, and is drawn for again).
    pub tx: u64,
    /// Datagrams to send lost on purpose.
    pub tx_dropped: u64,
    /// Duplicates not made and coalesced runs not split, for want of a buffer.
    pub no_buffer: u64,
}

/// The fault settings and counters of one or more [`FaultyPort`]s; clones share them, so a
/// test can change the faults of ports that live in other threads and read what they did.
#[derive(Clone, Debug, Default)]
pub struct FaultControl {
    shared: Arc<Mutex<Settings>>,
}

#[derive(Debug, Default)]
struct Settings {
    faults: Faults,
    counters: FaultCounters,
}

impl FaultControl {
    /// Settings that start with `faults`.
    pub fn new(faults: Faults) -> FaultControl {
        faults.assert_valid();
        FaultControl {
            shared: Arc::new(Mutex::new(Settings { faults, counters: Default::default() })),
        }
    }

    /// Changes the faults for every burst from now on.
    pub fn set(&self, faults: Faults) {
        faults.assert_valid();
        self.lock().faults = faults;
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.lock().faults
    }

    /// What the ports sharing these settings did so far, summed.
    pub fn counters(&self) -> FaultCounters {
        self.lock().counters
    }

    fn add(&self, delta: &FaultCounters) {
        let counters = &mut self.lock().counters;
        counters.rx += delta.rx;
        counters.rx_dropped += delta.rx_dropped;
        counters.rx_duplicated += delta.rx_duplicated;
        counters.rx_reordered += delta.rx_reordered;
        counters.rx_corrupted += delta.rx_corrupted;
        counters.tx += delta.tx;
        counters.tx_dropped += delta.tx_dropped;
        counters.no_buffer += delta.no_buffer;
    }

    fn lock(&self) -> MutexGuard<'_, Settings> {
        self.shared.lock().expect("a thread panicked holding the fault settings")
    }
}

/// A port that injects the faults of a [`FaultControl`] into the port it wraps.
#[derive(Debug)]
pub struct FaultyPort<P: Port> {
    inner: P,
    control: FaultControl,
    rng: SplitMix64,
    /// Buffers just taken from the wrapped port; capacity `BATCH`, empty between calls.
    pulled: Vec<P::Buf>,
    /// Decided datagrams, in delivery order, waiting for room in a caller's `rx`.
    ready: VecDeque<P::Buf>,
    /// Datagrams held back, in the order they were held.
    held: Vec<Held<P::Buf>>,
    /// Scratch for `tx_burst`; empty between calls.
    sending: Vec<P::Buf>,
    /// Scratch for splitting a coalesced run; empty between calls.
    parts: Vec<P::Buf>,
}

#[derive(Debug)]
struct Held<B> {
    buf: B,
    /// Later arrivals still to let past.
    after: u64,
}

impl<P: Port> FaultyPort<P> {
    /// Wraps `inner` with settings of its own, starting with `faults`; draws from `seed`.
    pub fn new(inner: P, faults: Faults, seed: u64) -> FaultyPort<P> {
        FaultyPort::with_control(inner, &FaultControl::new(faults), seed)
    }

    /// Wraps `inner` with settings (and counters) shared with `control`'s other ports; draws
    /// from `seed`, which should differ between the ports.
    pub fn with_control(inner: P, control: &FaultControl, seed: u64) -> FaultyPort<P> {
        FaultyPort {
            inner,
            control: control.clone(),
            rng: SplitMix64(seed),
            pulled: Vec::with_capacity(BATCH),
            ready: VecDeque::with_capacity(3 * BATCH),
            held: Vec::with_capacity(8),
            sending: Vec::with_capacity(BATCH),
            parts: Vec::with_capacity(64),
        }
    }

    /// This port's settings, to change them or read the counters from elsewhere.
    pub fn control(&self) -> &FaultControl {
        &self.control
    }

    /// Changes the faults (of every port sharing this one's settings).
    pub fn set_faults(&self, faults: Faults) {
        self.control.set(faults);
    }

    /// What the ports sharing this one's settings did so far.
    pub fn counters(&self) -> FaultCounters {
        self.control.counters()
    }

    /// The wrapped port.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The wrapped port, mutably (receiving from it directly bypasses the faults).
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// The wrapped port, with every datagram still queued or held given back to it unread.
    pub fn into_inner(mut self) -> P {
        for buf in self.ready.drain(..).chain(self.held.drain(..).map(|held| held.buf)) {
            self.inner.release(buf);
        }
        self.inner
    }

    /// Takes a burst from the wrapped port and decides each datagram's fate.
    fn pull(&mut self) -> io::Result<()> {
        let faults = self.control.faults();
        let mut counters = FaultCounters::default();
        let mut pulled = std::mem::take(&mut self.pulled);
        let result = self.inner.rx_burst(&mut pulled);
        let got = pulled.len();
        for buf in pulled.drain(..) {
            self.split(buf, &faults, &mut counters);
        }
        self.pulled = pulled;
        if got == 0 && self.ready.is_empty() {
            self.ready.extend(self.held.drain(..).map(|held| held.buf));
        }
        self.control.add(&counters);
        result.map(drop)
    }

    /// Feeds one buffer's datagrams to `receive` one at a time, splitting a coalesced run into
    /// buffers of its own (all or nothing).
    fn split(&mut self, mut buf: P::Buf, faults: &Faults, counters: &mut FaultCounters) {
        let mut parts = std::mem::take(&mut self.parts);
        let runs = buf.segment_bytes() > 0 && datagrams(&buf).nth(1).is_some();
        if runs {
            for datagram in datagrams(&buf).skip(1) {
                let Some(part) = self.copy(datagram, buf.peer()) else { break };
                parts.push(part);
            }
            if parts.len() + 1 < datagrams(&buf).count() {
                counters.no_buffer += 1;
                parts.drain(..).for_each(|part| self.inner.release(part));
            }
        }
        if !parts.is_empty() {
            let first = datagrams(&buf).next().map_or(0, <[u8]>::len);
            buf.set_len(first);
        }
        self.receive(buf, faults, counters);
        for part in parts.drain(..) {
            self.receive(part, faults, counters);
        }
        self.parts = parts;
    }

    /// Applies the receive faults to one datagram (or an unsplit run).
    fn receive(&mut self, mut buf: P::Buf, faults: &Faults, counters: &mut FaultCounters) {
        counters.rx += 1;
        if self.rng.chance(faults.rx_drop) {
            counters.rx_dropped += 1;
            self.inner.release(buf);
            return;
        }
        let len = buf.payload().len();
        if len > 0 && self.rng.chance(faults.rx_corrupt) {
            let bit = self.rng.below(len as u64 * 8);
            buf.capacity_mut()[(bit / 8) as usize] ^= 1 << (bit % 8);
            counters.rx_corrupted += 1;
        }
        let mut copy = None;
        if self.rng.chance(faults.rx_duplicate) {
            copy = self.copy(buf.payload(), buf.peer());
            match copy {
                Some(_) => counters.rx_duplicated += 1,
                None => counters.no_buffer += 1,
            }
        }
        for buf in std::iter::once(buf).chain(copy) {
            let hold = self.rng.chance(faults.rx_reorder).then(|| 1 + self.rng.below(3));
            counters.rx_reordered += u64::from(hold.is_some());
            self.arrive(buf, hold);
        }
    }

    /// `datagram` from `peer` in a buffer from the wrapped port, if it lends one that fits.
    fn copy(&mut self, datagram: &[u8], peer: SocketAddr) -> Option<P::Buf> {
        let mut copy = self.inner.alloc_tx()?;
        let Some(room) = copy.capacity_mut().get_mut(..datagram.len()) else {
            self.inner.release(copy);
            return None;
        };
        room.copy_from_slice(datagram);
        copy.set_len(datagram.len());
        copy.set_peer(peer);
        Some(copy)
    }

    /// Queues a datagram (or holds it for `hold` later arrivals), then releases the held
    /// datagrams it was the last to pass.
    fn arrive(&mut self, buf: P::Buf, hold: Option<u64>) {
        for held in &mut self.held {
            held.after -= 1;
        }
        match hold {
            Some(after) => self.held.push(Held { buf, after }),
            None => self.ready.push_back(buf),
        }
        while let Some(i) = self.held.iter().position(|held| held.after == 0) {
            let released = self.held.remove(i).buf;
            self.ready.push_back(released);
        }
    }
}

impl<P: Port> Port for FaultyPort<P> {
    type Buf = P::Buf;

    /// Appends datagrams that survived the receive faults; may return 0 while the wrapped
    /// port had datagrams (all dropped or held), and then `wait_readable` does not block.
    fn rx_burst(&mut self, rx: &mut Vec<P::Buf>) -> io::Result<usize> {
        let room = BATCH.saturating_sub(rx.len());
        if room == 0 {
            return Ok(0);
        }
        if self.ready.is_empty() {
            self.pull()?;
        }
        let n = room.min(self.ready.len());
        rx.extend(self.ready.drain(..n));
        Ok(n)
    }

    fn alloc_tx(&mut self) -> Option<P::Buf> {
        self.inner.alloc_tx()
    }

    /// Takes the dropped datagrams out of `tx` (counted as sent), then hands the rest to the
    /// wrapped port.
    fn tx_burst(&mut self, tx: &mut Vec<P::Buf>) -> io::Result<usize> {
        let tx_drop = self.control.faults().tx_drop;
        let mut counters = FaultCounters { tx: tx.len() as u64, ..FaultCounters::default() };
        if tx_drop > 0.0 {
            self.sending.append(tx);
            for buf in self.sending.drain(..) {
                if self.rng.chance(tx_drop) {
                    counters.tx_dropped += 1;
                    self.inner.release(buf);
                } else {
                    tx.push(buf);
                }
            }
        }
        self.control.add(&counters);
        Ok(counters.tx_dropped as usize + self.inner.tx_burst(tx)?)
    }

    fn release(&mut self, buf: P::Buf) {
        self.inner.release(buf);
    }

    fn wait_readable(&mut self, timeout: Duration) -> io::Result<()> {
        if !self.ready.is_empty() || !self.held.is_empty() {
            return Ok(());
        }
        self.inner.wait_readable(timeout)
    }

    fn wait_writable(&mut self, timeout: Duration) -> io::Result<()> {
        self.inner.wait_writable(timeout)
    }

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, good enough for fault draws. The one
/// generator the tests use outside `testkit` (see the module docs).
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

    /// True with probability `p`; draws nothing when `p` is 0, so a fault that is off does
    /// not shift the draws of the others.
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
