//! The driver thread of a `SharedClient`: receives, fires timers, resends.

use super::{Inner, Work, DRIVER_PANICKED};
use crate::error::Error;
use crate::outcome::Outcome;
use proto::DATAGRAM_BYTES_ACCEPTED;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::PoisonError;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest sleep of the driver with nothing due: how late it sees a stop without a wake-up.
const IDLE_WAIT_MAX: Duration = Duration::from_millis(100);

/// Datagrams taken per wake-up before the engine sees them (under one lock).
const RECV_BATCH: usize = 32;

/// Shortest receive timeout (zero would mean "block forever" to the socket).
const WAIT_MIN: Duration = Duration::from_micros(20);

pub(super) fn spawn(inner: Arc<Inner>) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("cradle-client".into()).spawn(move || {
        let ran = catch_unwind(AssertUnwindSafe(|| run(&inner)));
        if let Err(panic) = ran {
            // A bug (already reported on stderr by the panic hook). Nobody may wait for an
            // outcome that will never come: every waiting caller gets a failure now, and
            // later submissions are refused.
            inner.dead.store(true, Ordering::Release);
            fail_all_waiting(&inner);
            resume_unwind(panic);
        }
    })
}

/// After a panic of the driver: every sink gets `Error::Io` ("driver thread panicked"),
/// without touching the engine, whose state may be half-updated.
fn fail_all_waiting(inner: &Inner) {
    let mut state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
    let sinks: Vec<_> = state.sinks.drain().map(|(_, sink)| sink).collect();
    drop(state);
    for sink in sinks {
        sink(Outcome::Failed(Error::Io(io::Error::other(DRIVER_PANICKED))));
    }
}

fn run(inner: &Inner) {
    let mut batch = Batch::new();
    let mut configured = None;
    while !inner.stop.load(Ordering::Acquire) {
        let wait = step(inner, &batch).max(WAIT_MIN);
        batch.clear();
        if configured != Some(wait) && inner.socket.set_read_timeout(Some(wait)).is_ok() {
            configured = Some(wait);
        }
        batch.receive(&inner.socket);
    }
    cancel_all(inner);
}

/// Datagrams taken from the socket in one wake-up, handed to the engine under one lock.
struct Batch {
    /// One byte more than a receiver accepts each, so an oversized datagram is seen as such.
    buffers: Vec<Vec<u8>>,
    received: Vec<(usize, SocketAddr)>,
}

impl Batch {
    fn new() -> Batch {
        let buffers = (0..RECV_BATCH).map(|_| vec![0; DATAGRAM_BYTES_ACCEPTED + 1]).collect();
        Batch { buffers, received: Vec::with_capacity(RECV_BATCH) }
    }

    fn clear(&mut self) {
        self.received.clear();
    }

    /// Waits (the socket's read timeout) for one datagram, then takes those already queued
    /// without waiting, up to `RECV_BATCH`. The socket is non-blocking only meanwhile: callers
    /// send on it too, and a send that finds it non-blocking and the buffer full counts as a
    /// lost datagram, which the resend timer covers.
    fn receive(&mut self, socket: &UdpSocket) {
        if !self.receive_one(socket) || socket.set_nonblocking(true).is_err() {
            return;
        }
        while self.received.len() < RECV_BATCH && self.receive_one(socket) {}
        // Should this fail, the next read times out at once and the loop goes on polling.
        let _ = socket.set_nonblocking(false);
    }

    fn receive_one(&mut self, socket: &UdpSocket) -> bool {
        let buffer = &mut self.buffers[self.received.len()];
        match socket.recv_from(buffer) {
            // An empty datagram is a wake-up (`Inner::wake`).
            Ok((0, _)) => true,
            Ok(received) => {
                self.received.push(received);
                true
            }
            // Timeouts, nothing queued, and ICMP errors for earlier sends: the retry timers
            // cover those.
            Err(_) => false,
        }
    }

    fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.received.iter().zip(&self.buffers).map(|(&(len, from), buffer)| (from, &buffer[..len]))
    }
}

/// Takes the batch's datagrams, fires due timers, sends and hands out what that produced;
/// returns how long to wait for the next datagram.
fn step(inner: &Inner, batch: &Batch) -> Duration {
    let mut state = inner.lock();
    let now = Instant::now();
    for (from, bytes) in batch.datagrams() {
        state.core.handle_datagram(now, from, bytes);
    }
    state.core.handle_timeout(now);
    let work: Work = state.take_work();
    let wait = match state.core.poll_timeout() {
        Some(timer) => timer.saturating_duration_since(now).min(IDLE_WAIT_MAX),
        None => IDLE_WAIT_MAX,
    };
    state.driver_wakes_at = Some(now + wait);
    drop(state);
    inner.send_all(&work.datagrams);
    work.dispatch();
    wait
}

/// The client is going away: every request still in flight completes with `Cancelled`.
fn cancel_all(inner: &Inner) {
    let mut state = inner.lock();
    let ids: Vec<_> = state.sinks.keys().copied().collect();
    for id in ids {
        state.core.cancel(id);
    }
    let work = state.take_work();
    drop(state);
    work.dispatch();
}
