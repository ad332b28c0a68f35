//! The per-core loop: receive a burst, run it to completion through the `Handler`, flush the
//! replies, then spin or sleep when idle.
//!
//! The loop owns the clock (the handler gets `now_ns`, never reads time) and every buffer
//! vector it needs is allocated before the first iteration.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{datagrams, Buffer, Handler, Port, Transmit, BATCH};

/// Most datagrams one iteration hands to the handler. A burst is at most `BATCH` buffers, but
/// with UDP GRO a buffer may hold a run of up to 64 datagrams from one peer (2,048 in all);
/// buffers past this many datagrams wait for the next iteration (whole buffers, so one may
/// take the count up to 63 past it).
pub const DATAGRAMS_PER_STEP_MAX: usize = 8 * BATCH;

/// How a loop runs; see each field for what it costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerConfig {
    /// Core to pin the calling thread to; `None` leaves scheduling to the OS.
    pub core: Option<usize>,
    /// Busy-poll this long after the last datagram before blocking: lower latency after a
    /// lull, at the price of a core at 100 % for that long. Zero blocks at once.
    pub spin: Duration,
    /// Longest single block, so a stop flag and the handler's timers are seen this often.
    pub block_max: Duration,
    /// Waits for the port to become writable before a stuck tx burst is dropped.
    pub tx_retries_max: u32,
    /// Longest single wait for writability.
    pub tx_wait: Duration,
    /// An iteration that handles a burst for longer than this is counted as a stall.
    pub stall_budget: Duration,
}

impl Default for RunnerConfig {
    fn default() -> RunnerConfig {
        RunnerConfig {
            core: None,
            spin: Duration::ZERO,
            block_max: Duration::from_millis(10),
            tx_retries_max: 3,
            tx_wait: Duration::from_millis(1),
            stall_budget: Duration::from_millis(1),
        }
    }
}

impl RunnerConfig {
    /// Checks that the loop can block, wake and give up in bounded time.
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |what: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if self.block_max.is_zero() || self.block_max > Duration::from_secs(1) {
            return invalid("block_max must be in (0, 1 s]");
        }
        if self.tx_wait > self.block_max {
            return invalid("tx_wait must not exceed block_max");
        }
        Ok(())
    }
}

/// Whether the loop got the core it asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PinOutcome {
    /// `RunnerConfig::core` was `None`.
    #[default]
    NotRequested,
    /// The thread runs on this core only.
    Pinned(usize),
    /// The core does not exist or is not allowed for this process; the loop ran unpinned.
    Failed(usize),
}

/// What a loop did; counters only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Loop iterations (each one rx burst).
    pub iterations: u64,
    /// Iterations that received at least one datagram.
    pub batches: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams the port accepted for sending.
    pub datagrams_out: u64,
    /// Datagrams dropped because the port stayed full through every retry.
    pub tx_dropped: u64,
    /// `Transmit::send` calls refused because the port had no free buffer.
    pub tx_no_buffer: u64,
    /// `Transmit::send` calls refused because the datagram is larger than a buffer.
    pub tx_oversize: u64,
    /// Returns from a blocking wait for input.
    pub wakeups: u64,
    /// Times the loop gave its CPU away while its handler waited for another thread.
    pub yields: u64,
    /// Iterations whose handling took longer than `RunnerConfig::stall_budget`.
    pub stalls: u64,
    /// The longest handling time of one iteration, in nanoseconds.
    pub iteration_ns_max: u64,
    /// The result of pinning.
    pub pin: PinOutcome,
}

/// Pins the calling thread (if asked) and runs the loop until `stop` is set; returns what it
/// did. An I/O error from the port ends the loop.
pub fn run<P: Port, H: Handler>(
    port: &mut P,
    handler: &mut H,
    config: &RunnerConfig,
    stop: &AtomicBool,
) -> io::Result<RunStats> {
    config.validate()?;
    let mut runner = Runner::new(config.clone());
    runner.stats.pin = pin(config.core);
    runner.run_until(port, handler, stop)?;
    Ok(runner.stats)
}

fn pin(core: Option<usize>) -> PinOutcome {
    let Some(id) = core else {
        return PinOutcome::NotRequested;
    };
    // Only cores in this process's allowed set (cgroups, taskset) can be pinned to.
    let allowed = core_affinity::get_core_ids().unwrap_or_default();
    if allowed.iter().any(|core| core.id == id)
        && core_affinity::set_for_current(core_affinity::CoreId { id })
    {
        return PinOutcome::Pinned(id);
    }
    eprintln!("dataplane: cannot pin to core {id}; running unpinned");
    PinOutcome::Failed(id)
}

/// The loop's state: its buffer vectors, clock origin and counters.
#[derive(Debug)]
pub struct Runner<P: Port> {
    rx: Vec<P::Buf>,
    tx: Vec<P::Buf>,
    stats: RunStats,
    start: Instant,
    /// `now_ns` of the latest iteration.
    now_ns: u64,
    config: RunnerConfig,
}

impl<P: Port> Runner<P> {
    /// Allocates the loop's vectors; time 0 is now.
    pub fn new(config: RunnerConfig) -> Runner<P> {
        Runner {
            rx: Vec::with_capacity(BATCH),
            tx: Vec::with_capacity(BATCH),
            stats: RunStats::default(),
            start: Instant::now(),
            now_ns: 0,
            config,
        }
    }

    /// What the loop did so far.
    pub fn stats(&self) -> RunStats {
        self.stats
    }

    /// Runs iterations, spinning or blocking when idle, until `stop` is set.
    pub fn run_until<H: Handler>(
        &mut self,
        port: &mut P,
        handler: &mut H,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        let spin_ns = self.config.spin.as_nanos() as u64;
        let mut busy_ns = self.clock_ns();
        while !stop.load(Ordering::Acquire) {
            let handled = self.step(port, handler)?;
            let waiting = handler.waiting();
            if waiting {
                // The thread it waits for may share this CPU, and a woken thread does not
                // always preempt a busy one (EEVDF): give it the CPU now, not at the end of
                // this loop's time slice, a millisecond or more (measured: a flushed
                // GET/SET mix at 334 k ops/s with p99 470 µs, 250 k and 1.1 ms without).
                std::thread::yield_now();
                self.stats.yields += 1;
            }
            if handled > 0 {
                busy_ns = self.now_ns;
            } else if waiting || self.now_ns.saturating_sub(busy_ns) < spin_ns {
                std::hint::spin_loop();
            } else {
                port.wait_readable(self.config.block_max)?;
                self.stats.wakeups += 1;
            }
        }
        Ok(())
    }

    /// One iteration without idling: receive a burst, hand each datagram (a coalesced buffer
    /// holds several; see [`DATAGRAMS_PER_STEP_MAX`]) and then the end of the batch to
    /// `handler`, send what it queued. Returns the datagrams handled.
    pub fn step<H: Handler>(&mut self, port: &mut P, handler: &mut H) -> io::Result<usize> {
        port.rx_burst(&mut self.rx)?;
        handler.burst_received(self.rx.len());
        let now_ns = self.clock_ns();
        self.now_ns = now_ns;
        let mut txq = TxQueue {
            port,
            pending: &mut self.tx,
            stats: &mut self.stats,
            config: &self.config,
            error: None,
        };
        let mut ahead = 0;
        'ahead: for buf in &self.rx {
            for datagram in datagrams(buf) {
                if ahead == DATAGRAMS_PER_STEP_MAX {
                    break 'ahead;
                }
                handler.prefetch(datagram);
                ahead += 1;
            }
        }
        let (mut got, mut taken) = (0, 0);
        while got < DATAGRAMS_PER_STEP_MAX {
            let Some(buf) = self.rx.get(taken) else { break };
            for datagram in datagrams(buf) {
                handler.handle_datagram(now_ns, buf.peer(), datagram, &mut txq);
                got += 1;
            }
            taken += 1;
        }
        for buf in self.rx.drain(..taken) {
            txq.port.release(buf);
        }
        handler.end_batch(now_ns, &mut txq);
        txq.flush();
        let error = txq.error.take();
        let spent_ns = self.clock_ns().saturating_sub(now_ns);
        if got > 0 {
            handler.burst_done(got, spent_ns);
        }
        let stats = &mut self.stats;
        stats.iterations += 1;
        stats.batches += u64::from(got > 0);
        stats.datagrams_in += got as u64;
        stats.iteration_ns_max = stats.iteration_ns_max.max(spent_ns);
        let stalled = spent_ns > self.config.stall_budget.as_nanos() as u64;
        stats.stalls += u64::from(stalled);
        handler.iteration_done(spent_ns, stalled);
        error.map_or(Ok(got), Err)
    }

    fn clock_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// The handler's `Transmit`: copies each datagram into a port buffer and sends in bursts.
struct TxQueue<'a, P: Port> {
    port: &'a mut P,
    /// Capacity `BATCH`; flushed whenever full.
    pending: &'a mut Vec<P::Buf>,
    stats: &'a mut RunStats,
    config: &'a RunnerConfig,
    /// The first port error; the iteration returns it.
    error: Option<io::Error>,
}

impl<P: Port> TxQueue<'_, P> {
    /// Sends everything pending. A port that stays full gets `tx_retries_max` waits, then the
    /// rest is dropped: a loop that cannot send must still receive.
    fn flush(&mut self) {
        let mut retries = 0;
        while !self.pending.is_empty() && self.error.is_none() {
            match self.port.tx_burst(self.pending) {
                Ok(sent) => self.stats.datagrams_out += sent as u64,
                Err(err) => self.error = Some(err),
            }
            let done = self.pending.is_empty() || self.error.is_some();
            if done || retries == self.config.tx_retries_max {
                break;
            }
            retries += 1;
            if let Err(err) = self.port.wait_writable(self.config.tx_wait) {
                self.error = Some(err);
            }
        }
        self.drop_pending();
    }

    fn drop_pending(&mut self) {
        self.stats.tx_dropped += self.pending.len() as u64;
        for buf in self.pending.drain(..) {
            self.port.release(buf);
        }
    }
}

impl<P: Port> Transmit for TxQueue<'_, P> {
    fn send(&mut self, peer: SocketAddr, datagram: &[u8]) -> bool {
        if self.error.is_some() {
            return false;
        }
        let Some(mut buf) = self.port.alloc_tx() else {
            self.stats.tx_no_buffer += 1;
            return false;
        };
        let Some(room) = buf.capacity_mut().get_mut(..datagram.len()) else {
            self.stats.tx_oversize += 1;
            self.port.release(buf);
            return false;
        };
        room.copy_from_slice(datagram);
        buf.set_len(datagram.len());
        buf.set_peer(peer);
        self.pending.push(buf);
        if self.pending.len() == BATCH {
            self.flush();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A buffer of `datagrams` datagrams of 8 bytes each (their numbers), coalesced.
    #[derive(Debug, Default)]
    struct Run(Vec<u8>);

    impl Buffer for Run {
        fn payload(&self) -> &[u8] {
            &self.0
        }
        fn capacity_mut(&mut self) -> &mut [u8] {
            &mut self.0
        }
        fn set_len(&mut self, len: usize) {
            self.0.truncate(len);
        }
        fn peer(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], 9))
        }
        fn set_peer(&mut self, _: SocketAddr) {}
        fn segment_bytes(&self) -> usize {
            8
        }
    }

    /// A port whose receive queue is coalesced runs.
    struct Runs(VecDeque<Run>);

    impl Port for Runs {
        type Buf = Run;
        fn rx_burst(&mut self, rx: &mut Vec<Run>) -> io::Result<usize> {
            let n = (BATCH - rx.len()).min(self.0.len());
            rx.extend(self.0.drain(..n));
            Ok(n)
        }
        fn alloc_tx(&mut self) -> Option<Run> {
            Some(Run::default())
        }
        fn tx_burst(&mut self, tx: &mut Vec<Run>) -> io::Result<usize> {
            let n = tx.len();
            tx.clear();
            Ok(n)
        }
        fn release(&mut self, _: Run) {}
        fn wait_readable(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
        fn local_addr(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], 1))
        }
    }

    #[derive(Default)]
    struct Seen {
        numbers: Vec<u64>,
        bursts: Vec<usize>,
        /// (prefetched?, datagram number), in the order the runner called.
        calls: Vec<(bool, u64)>,
    }

    impl Handler for Seen {
        fn handle_datagram(
            &mut self,
            _: u64,
            _: SocketAddr,
            datagram: &[u8],
            _: &mut dyn Transmit,
        ) {
            let number = u64::from_le_bytes(datagram.try_into().expect("8 bytes"));
            self.numbers.push(number);
            self.calls.push((false, number));
        }
        fn prefetch(&mut self, datagram: &[u8]) {
            self.calls.push((true, u64::from_le_bytes(datagram.try_into().expect("8 bytes"))));
        }
        fn burst_received(&mut self, buffers: usize) {
            self.bursts.push(buffers);
        }
        fn end_batch(&mut self, _: u64, _: &mut dyn Transmit) {}
    }

    #[test]
    fn coalesced_bursts_are_handled_in_order_a_capped_number_per_step() {
        // 40 runs of 64 datagrams: 2,560 datagrams, more than a burst of buffers holds.
        let runs =
            (0..40u64).map(|r| Run((0..64).flat_map(|d| (r * 64 + d).to_le_bytes()).collect()));
        let mut port = Runs(runs.collect());
        let (mut runner, mut seen) = (Runner::new(RunnerConfig::default()), Seen::default());
        let mut steps = Vec::new();
        loop {
            let got = runner.step(&mut port, &mut seen).unwrap();
            if got == 0 {
                break;
            }
            assert!(got <= DATAGRAMS_PER_STEP_MAX + 63, "step handled {got}");
            steps.push(got);
        }
        assert_eq!(seen.numbers, (0..40 * 64).collect::<Vec<u64>>(), "all, once, in order");
        assert_eq!(steps, [256; 10], "4 runs of 64 per step");
        // Each step offers its datagrams to `prefetch`, in order, before it handles any.
        let step = |s: u64| s * 256..(s + 1) * 256;
        let want: Vec<(bool, u64)> = (0..10)
            .flat_map(|s| step(s).map(|n| (true, n)).chain(step(s).map(|n| (false, n))))
            .collect();
        assert!(seen.calls == want, "prefetch before handling, per step");
        assert_eq!(seen.bursts[..2], [32, 32], "left-over buffers keep the burst full");
        assert_eq!(runner.stats().datagrams_in, 40 * 64);
    }
}
