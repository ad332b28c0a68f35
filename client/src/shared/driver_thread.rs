//! The driver thread of a `SharedClient`: receives, fires timers, resends.

use super::{Inner, Work};
use proto::DATAGRAM_BYTES_ACCEPTED;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest sleep of the driver with nothing due: how late it sees a stop without a wake-up.
const IDLE_WAIT_MAX: Duration = Duration::from_millis(100);

/// Shortest receive timeout (zero would mean "block forever" to the socket).
const WAIT_MIN: Duration = Duration::from_micros(20);

pub(super) fn spawn(inner: Arc<Inner>) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("cradle-client".into()).spawn(move || run(&inner))
}

fn run(inner: &Inner) {
    // One byte more than a receiver accepts, so an oversized datagram is seen as such.
    let mut buf = vec![0; DATAGRAM_BYTES_ACCEPTED + 1];
    let mut configured = None;
    let mut received: Option<(usize, std::net::SocketAddr)> = None;
    while !inner.stop.load(Ordering::Acquire) {
        let datagram = received.take().map(|(len, from)| (from, &buf[..len]));
        let wait = step(inner, datagram);
        let wait = wait.max(WAIT_MIN);
        if configured != Some(wait) && inner.socket.set_read_timeout(Some(wait)).is_ok() {
            configured = Some(wait);
        }
        match inner.socket.recv_from(&mut buf) {
            // An empty datagram is a wake-up (`Inner::wake`).
            Ok((0, _)) => {}
            Ok(datagram) => received = Some(datagram),
            // Timeouts, and ICMP errors for earlier sends: the retry timers cover those.
            Err(_) => {}
        }
    }
    cancel_all(inner);
}

/// Takes `datagram`, fires due timers, sends and hands out what that produced; returns how
/// long to wait for the next datagram.
fn step(inner: &Inner, datagram: Option<(std::net::SocketAddr, &[u8])>) -> Duration {
    let mut state = inner.lock();
    let now = Instant::now();
    if let Some((from, bytes)) = datagram {
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
