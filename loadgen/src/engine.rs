//! The generator loop: one non-blocking UDP socket (the dataplane's recvmmsg/sendmmsg port),
//! a ring of request slots indexed by id, closed or open loop, timeouts without resends.
//!
//! Latency is measured from the *intended* send time: in a closed loop that is when the slot
//! freed up; in an open loop it is the Poisson arrival time, so a stall on either side shows
//! up in the percentiles instead of delaying the arrivals (no coordinated omission).

use super::report::{self, Counters, Progress, Recorder};
use super::workload::Arrivals;
use dataplane::{Buffer, Port, BATCH};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Request slots; ids map to slots modulo this. A power of two that divides 2^16, so
/// memcached's 16-bit request id names the slot directly.
pub(super) const SLOTS: usize = 1 << 16;
/// Most requests the generator keeps outstanding (closed-loop depth or open-loop cap).
pub(super) const IN_FLIGHT_MAX: usize = SLOTS / 4;
/// Most requests queued for sending in one loop iteration, so receiving is never starved.
const SENDS_PER_ITERATION_MAX: usize = 4 * BATCH;
/// Idle waits in blocking mode are at most this long (poll(2) has millisecond resolution).
const BLOCK_MAX: Duration = Duration::from_millis(1);
/// Most keys one multi-get request reads (its answers are tracked in a 32-bit mask).
pub(super) const KEYS_PER_REQUEST_MAX: usize = 32;
/// The `part` a codec passes to say "every part of this request not answered yet" (a
/// memcached multi-get reply lists the keys it found and says nothing of the others).
pub(super) const REMAINING_PARTS: u32 = u32::MAX;

/// A request kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// Read a key.
    Get,
    /// Write a key.
    Set,
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Answered with success.
    Ok,
    /// GET answered "no such key".
    Miss,
    /// Answered with a failure; the code is the protocol's (see `Codec::error_name`).
    Error(u16),
    /// No answer within the timeout.
    Timeout,
}

/// A wire protocol: encodes requests, decodes replies. No I/O.
pub(super) trait Codec {
    /// Writes the request for `op` on `keys` (one, or several for a multi-get, all with the
    /// same `peer`) with wire id `id` into `out`; returns its length.
    fn encode(&self, op: Op, keys: &[u32], id: u64, out: &mut [u8]) -> usize;
    /// Where the request for `key` goes.
    fn peer(&self, key: u32) -> SocketAddr;
    /// A key to read in the same request as `first`: `key` if it has the same peer, else one
    /// that has (a datagram goes to one server).
    fn same_peer_key(&self, first: u32, key: u32) -> u32 {
        let _ = first;
        key
    }
    /// Calls `done(id, part, outcome)` for each answer in `datagram` (`part` is the key's
    /// index in its request, or `REMAINING_PARTS`); returns malformed messages.
    fn decode(&self, datagram: &[u8], done: &mut dyn FnMut(u64, u32, Outcome)) -> u64;
    /// The bits of the sequence number the wire carries.
    fn id_mask(&self) -> u64;
    /// Largest request in bytes.
    fn request_bytes_max(&self) -> usize;
    /// A name for an error code, for the report.
    fn error_name(&self, code: u16) -> String;
}

/// Where the requests come from.
pub(super) trait Feed {
    /// The next request, or `None` when there is nothing to send now.
    fn next(&mut self) -> Option<(Op, u32)>;
    /// One more key for the multi-get `next` just began.
    fn next_key(&mut self) -> Option<u32> {
        self.next().map(|(_, key)| key)
    }
    /// A request of this feed ended.
    fn completed(&mut self, key: u32, outcome: Outcome) {
        let _ = (key, outcome);
    }
    /// Nothing left to send, ever (unless a completion adds more).
    fn exhausted(&self) -> bool {
        false
    }
}

/// How to drive the load.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    /// Requests kept in flight (closed loop) or the cap on outstanding ones (open loop).
    pub(super) in_flight: usize,
    /// Keys each GET reads, in one datagram (1..=`KEYS_PER_REQUEST_MAX`).
    pub(super) keys_per_get: usize,
    /// Open loop at this many requests per second; closed loop when `None`.
    pub(super) rate: Option<f64>,
    /// Run this long before measuring.
    pub(super) warmup: Duration,
    /// Measure this long; the run stops by itself after warmup + duration (+ drain).
    pub(super) duration: Duration,
    /// A request unanswered this long is a timeout and frees its slot.
    pub(super) timeout: Duration,
    /// Spin on the socket instead of blocking in poll(2) when idle.
    pub(super) busy_poll: bool,
    /// Print a line per second on stderr, with this label.
    pub(super) progress: Option<String>,
    /// Seed for the arrival process.
    pub(super) seed: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    live: bool,
    /// Keys the request reads (1 but for a multi-get).
    parts: u8,
    /// Bit i: key i was answered.
    answered: u32,
    /// Keys answered "no such key".
    misses: u8,
    /// The first failure among the answers.
    error: Option<u16>,
    key: u32,
    seq: u64,
    intended_ns: u64,
    sent_ns: u64,
}

/// The generator's socket, ring and clock; reused across the preload and the measured run.
pub(super) struct Engine<'c, C: Codec, P: Port> {
    codec: &'c C,
    port: P,
    slots: Vec<Slot>,
    next_seq: u64,
    oldest_seq: u64,
    outstanding: usize,
    rx: Vec<P::Buf>,
    tx: Vec<P::Buf>,
    clock: Instant,
}

/// Per-run state the completion path updates.
struct RunState<'f> {
    feed: &'f mut dyn Feed,
    recorder: Recorder,
    measuring: bool,
    end_ns: u64,
}

impl<'c, C: Codec, P: Port> Engine<'c, C, P> {
    /// An engine sending through `port`.
    pub(super) fn new(codec: &'c C, port: P) -> Engine<'c, C, P> {
        Engine {
            codec,
            port,
            slots: vec![Slot::default(); SLOTS],
            next_seq: 1,
            oldest_seq: 1,
            outstanding: 0,
            rx: Vec::with_capacity(BATCH),
            tx: Vec::with_capacity(BATCH * 8),
            clock: Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    /// Runs `feed` under `plan`; returns what was measured after the warm-up. Stops at
    /// warmup + duration, or earlier once an exhaustible feed is done and answered.
    pub(super) fn run(&mut self, plan: &Plan, feed: &mut dyn Feed) -> Result<Counters, String> {
        let start_ns = self.now_ns();
        let measure_ns = start_ns + plan.warmup.as_nanos() as u64;
        let end_ns = measure_ns + plan.duration.as_nanos() as u64;
        let timeout_ns = plan.timeout.as_nanos() as u64;
        let mut state =
            RunState { feed, recorder: Recorder::new(), measuring: plan.warmup.is_zero(), end_ns };
        state.recorder.counters.started_ns = start_ns;
        let mut arrivals = plan.rate.map(|rate| Arrivals::new(plan.seed, rate, start_ns));
        let mut progress = plan.progress.clone().map(|label| Progress::new(label, start_ns));
        let mut drain_until: Option<u64> = None;
        loop {
            let mut now = self.now_ns();
            if !state.measuring && now >= measure_ns {
                state.measuring = true;
                state.recorder.reset(now);
            }
            let received = self.receive(&mut state, &mut now)?;
            self.expire(&mut state, now, timeout_ns);
            let done = state.feed.exhausted() && self.outstanding == 0;
            if drain_until.is_none() && (now >= end_ns || done) {
                drain_until = Some(now + timeout_ns);
            }
            let mut sent = 0;
            if drain_until.is_none() {
                sent = match arrivals.as_mut() {
                    None => self.fill_closed(plan, &mut *state.feed, now),
                    Some(a) => self.fill_open(plan, &mut *state.feed, a, now),
                };
            }
            self.flush()?;
            if let Some(p) = progress.as_mut() {
                p.tick(now, &mut state.recorder, state.measuring, self.outstanding);
            }
            if let Some(until) = drain_until {
                if self.outstanding == 0 || now >= until {
                    break;
                }
            }
            if received == 0 && sent == 0 {
                self.idle(plan, arrivals.as_ref(), now)?;
            }
        }
        // Whatever is still out after the drain is lost.
        let now = self.now_ns();
        self.expire(&mut state, now, 0);
        state.recorder.counters.finished_ns = end_ns.min(now);
        Ok(state.recorder.finish())
    }

    fn receive(&mut self, state: &mut RunState<'_>, now: &mut u64) -> Result<usize, String> {
        let got = self.port.rx_burst(&mut self.rx).map_err(|e| format!("receive: {e}"))?;
        if got == 0 {
            return Ok(0);
        }
        *now = self.now_ns();
        let now = *now;
        let mask = self.codec.id_mask();
        let mut rx = std::mem::take(&mut self.rx);
        for buf in rx.drain(..) {
            for datagram in dataplane::datagrams(&buf) {
                self.complete(datagram, state, now, mask);
            }
            self.port.release(buf);
        }
        self.rx = rx;
        Ok(got)
    }

    /// Takes the answers of one reply datagram; a request ends when all its keys are answered.
    fn complete(&mut self, datagram: &[u8], state: &mut RunState<'_>, now: u64, mask: u64) {
        let slots = &mut self.slots;
        let outstanding = &mut self.outstanding;
        let mut duplicates = 0;
        let malformed = self.codec.decode(datagram, &mut |id, part, outcome| {
            let slot = &mut slots[id as usize & (SLOTS - 1)];
            if !slot.live || slot.seq & mask != id {
                state.recorder.counters.late += 1;
                return;
            }
            let all = ((1u64 << slot.parts) - 1) as u32;
            let bits = match part {
                REMAINING_PARTS => all & !slot.answered,
                part if part < u32::from(slot.parts) => 1 << part,
                _ => 0,
            };
            if bits == 0 || slot.answered & bits != 0 {
                duplicates += 1;
                return;
            }
            slot.answered |= bits;
            match outcome {
                Outcome::Miss => slot.misses += bits.count_ones() as u8,
                Outcome::Error(code) => slot.error = slot.error.or(Some(code)),
                Outcome::Ok | Outcome::Timeout => {}
            }
            if slot.answered != all {
                return;
            }
            let outcome = match (slot.error, slot.misses) {
                (Some(code), _) => Outcome::Error(code),
                (None, 0) => Outcome::Ok,
                (None, _) => Outcome::Miss,
            };
            slot.live = false;
            *outstanding -= 1;
            let latency_ns = now.saturating_sub(slot.intended_ns);
            let in_window = now < state.end_ns;
            let keys = report::Keys { read: slot.parts, missed: slot.misses };
            state.recorder.record(outcome, keys, latency_ns, state.measuring, in_window);
            state.feed.completed(slot.key, outcome);
        });
        // An answer for a key the request did not ask, or twice for one, is malformed.
        state.recorder.counters.malformed += malformed + duplicates;
    }

    /// Frees the slots of requests older than `timeout_ns`, oldest first.
    fn expire(&mut self, state: &mut RunState<'_>, now: u64, timeout_ns: u64) {
        while self.oldest_seq < self.next_seq {
            let slot = &mut self.slots[self.oldest_seq as usize & (SLOTS - 1)];
            if slot.live && slot.seq == self.oldest_seq {
                if now.saturating_sub(slot.sent_ns) < timeout_ns {
                    return;
                }
                slot.live = false;
                self.outstanding -= 1;
                if state.measuring {
                    state.recorder.counters.timeouts += 1;
                }
                state.feed.completed(slot.key, Outcome::Timeout);
            }
            self.oldest_seq += 1;
        }
    }

    fn fill_closed(&mut self, plan: &Plan, feed: &mut dyn Feed, now: u64) -> usize {
        let mut sent = 0;
        while self.outstanding < plan.in_flight && sent < SENDS_PER_ITERATION_MAX {
            if !self.queue(feed, plan.keys_per_get, now, now) {
                break;
            }
            sent += 1;
        }
        sent
    }

    fn fill_open(
        &mut self,
        plan: &Plan,
        feed: &mut dyn Feed,
        arrivals: &mut Arrivals,
        now: u64,
    ) -> usize {
        let mut sent = 0;
        while arrivals.next_ns <= now as f64
            && self.outstanding < plan.in_flight
            && sent < SENDS_PER_ITERATION_MAX
        {
            if !self.queue(feed, plan.keys_per_get, arrivals.next_ns as u64, now) {
                break;
            }
            arrivals.advance();
            sent += 1;
        }
        sent
    }

    /// Encodes the feed's next request (a GET of `keys_per_get` keys, or a SET) into a port
    /// buffer; false if nothing could be queued.
    fn queue(
        &mut self,
        feed: &mut dyn Feed,
        keys_per_get: usize,
        intended_ns: u64,
        now: u64,
    ) -> bool {
        let seq = self.next_seq;
        let index = seq as usize & (SLOTS - 1);
        if self.slots[index].live {
            // The request SLOTS ids ago is still out (not yet timed out): wait for it.
            return false;
        }
        let Some(mut buf) = self.port.alloc_tx() else {
            return false;
        };
        let Some((op, key)) = feed.next() else {
            self.port.release(buf);
            return false;
        };
        let mut keys = [key; KEYS_PER_REQUEST_MAX];
        let count = if op == Op::Get { keys_per_get } else { 1 };
        for slot in &mut keys[1..count] {
            let other = feed.next_key().unwrap_or(key);
            *slot = self.codec.same_peer_key(key, other);
        }
        let keys = &keys[..count];
        let len = self.codec.encode(op, keys, seq & self.codec.id_mask(), buf.capacity_mut());
        buf.set_len(len);
        buf.set_peer(self.codec.peer(key));
        self.tx.push(buf);
        self.slots[index] = Slot {
            live: true,
            parts: count as u8,
            answered: 0,
            misses: 0,
            error: None,
            key,
            seq,
            intended_ns,
            sent_ns: now,
        };
        self.next_seq += 1;
        self.outstanding += 1;
        true
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.tx.is_empty() {
            return Ok(());
        }
        self.port.tx_burst(&mut self.tx).map_err(|e| format!("send: {e}"))?;
        Ok(())
    }

    /// Nothing arrived and nothing was due: spin, or block until input may be ready.
    fn idle(&mut self, plan: &Plan, arrivals: Option<&Arrivals>, now: u64) -> Result<(), String> {
        if plan.busy_poll || !self.tx.is_empty() {
            std::hint::spin_loop();
            return Ok(());
        }
        let wait = match arrivals {
            None => BLOCK_MAX,
            Some(a) => {
                // poll(2) waits whole milliseconds: block only when the next arrival is
                // further away than that, spin otherwise.
                let gap_ns = (a.next_ns - now as f64).max(0.0) as u64;
                if gap_ns < 2 * BLOCK_MAX.as_nanos() as u64 {
                    std::hint::spin_loop();
                    return Ok(());
                }
                BLOCK_MAX
            }
        };
        self.port.wait_readable(wait).map_err(|e| format!("poll: {e}"))
    }
}

/// Sends one datagram outside any measured run and waits up to `timeout` for a reply (for
/// handshakes such as cradle's address-validation token). Returns the first reply's bytes.
pub(super) fn exchange<P: Port>(
    port: &mut P,
    request: &[u8],
    peer: SocketAddr,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, String> {
    let mut buf = port.alloc_tx().ok_or("no free buffer")?;
    buf.capacity_mut()[..request.len()].copy_from_slice(request);
    buf.set_len(request.len());
    buf.set_peer(peer);
    let mut tx = vec![buf];
    port.tx_burst(&mut tx).map_err(|e| format!("send: {e}"))?;
    for unsent in tx.drain(..) {
        port.release(unsent);
    }
    let deadline = Instant::now() + timeout;
    let mut rx = Vec::with_capacity(BATCH);
    while Instant::now() < deadline {
        port.rx_burst(&mut rx).map_err(|e| format!("receive: {e}"))?;
        let reply = rx.first().map(|buf| buf.payload().to_vec());
        for buf in rx.drain(..) {
            port.release(buf);
        }
        if reply.is_some() {
            return Ok(reply);
        }
        port.wait_readable(BLOCK_MAX).map_err(|e| format!("poll: {e}"))?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{KeyChooser, RandomFeed};
    use dataplane::MemNetwork;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Requests are `id` (8 bytes) and their keys (4 bytes each); an answer is `id`, `part`
    /// (4 bytes, `u32::MAX` for the remaining parts) and an outcome byte (0 ok, 1 miss).
    struct TestCodec {
        server: SocketAddr,
    }

    impl Codec for TestCodec {
        fn encode(&self, _: Op, keys: &[u32], id: u64, out: &mut [u8]) -> usize {
            out[..8].copy_from_slice(&id.to_le_bytes());
            for (i, key) in keys.iter().enumerate() {
                out[8 + 4 * i..12 + 4 * i].copy_from_slice(&key.to_le_bytes());
            }
            8 + 4 * keys.len()
        }
        fn peer(&self, _: u32) -> SocketAddr {
            self.server
        }
        fn decode(&self, datagram: &[u8], done: &mut dyn FnMut(u64, u32, Outcome)) -> u64 {
            let id = u64::from_le_bytes(datagram[..8].try_into().unwrap());
            let part = u32::from_le_bytes(datagram[8..12].try_into().unwrap());
            done(id, part, if datagram[12] == 0 { Outcome::Ok } else { Outcome::Miss });
            0
        }
        fn id_mask(&self) -> u64 {
            u64::MAX
        }
        fn request_bytes_max(&self) -> usize {
            8 + 4 * KEYS_PER_REQUEST_MAX
        }
        fn error_name(&self, code: u16) -> String {
            code.to_string()
        }
    }

    /// Answers each request of 3 keys in 4 datagrams, last part first and one duplicate of it;
    /// for an odd id, key 1 is missing and said so by a "remaining parts" answer.
    fn serve(mut port: dataplane::MemPort, stop: Arc<AtomicBool>) {
        let mut buf = [0u8; 256];
        while !stop.load(Ordering::Relaxed) {
            let Some((len, from)) = port.recv_from(&mut buf, Duration::from_millis(10)).unwrap()
            else {
                continue;
            };
            assert_eq!(len, 8 + 4 * 3, "three keys per request");
            let id = &buf[..8];
            let odd = buf[0] % 2 == 1;
            let answer =
                |part: u32, outcome: u8| [id, &part.to_le_bytes()[..], &[outcome]].concat();
            let mut answers = vec![answer(2, 0), answer(2, 0), answer(0, 0)];
            answers.push(if odd { answer(REMAINING_PARTS, 1) } else { answer(1, 0) });
            for datagram in answers {
                port.send_to(&datagram, from);
            }
        }
    }

    #[test]
    fn a_multi_get_ends_when_all_its_keys_are_answered() {
        let network = MemNetwork::new();
        let server = network.bind("127.0.0.1:9000".parse().unwrap());
        let client = network.bind("127.0.0.1:0".parse().unwrap());
        let codec = TestCodec { server: "127.0.0.1:9000".parse().unwrap() };
        let stop = Arc::new(AtomicBool::new(false));
        let server = std::thread::spawn({
            let stop = stop.clone();
            move || serve(server, stop)
        });
        let plan = Plan {
            in_flight: 4,
            keys_per_get: 3,
            rate: None,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(300),
            timeout: Duration::from_secs(1),
            busy_poll: true,
            progress: None,
            seed: 1,
        };
        let mut feed = RandomFeed::new(1, KeyChooser::Uniform { n: 100 }, 1.0);
        let mut engine = Engine::new(&codec, client);
        let c = engine.run(&plan, &mut feed).unwrap();
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
        let requests = c.ok + c.misses;
        assert!(requests > 50, "{requests}");
        // Half the requests (odd ids) missed one key each; every key of each was counted.
        // (Ids alternate; at most the requests in flight at the window's end are unpaired.)
        assert!(c.ok.abs_diff(c.misses) <= 4, "{} ok, {} missed", c.ok, c.misses);
        assert_eq!(c.keys, 3 * requests);
        assert_eq!(c.key_misses, c.misses);
        // The duplicate answer of each request is malformed (replies drained after the end
        // count there too); none came after its request ended.
        assert!(c.malformed >= requests, "{} malformed of {requests}", c.malformed);
        assert_eq!((c.late, c.errors, c.timeouts), (0, 0, 0));
    }
}
