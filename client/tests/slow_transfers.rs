//! Big transfers slower than the resend window over a simulated slow, lossy link (10 % loss and
//! a 1 MiB/s policer, like the `tests/faults_netns.rs` link): the window follows their progress
//! (a write's advancing PARTIAL acknowledgements, a read's new fragments), so they complete
//! however long they take while they progress, and fail one window after their last progress
//! when they stop. 4 MiB against a 1 s window: without the rule they would need 4 MiB/s. (The
//! window is not scaled down with the value as far as 500 ms: the backoff between probes does
//! not scale, and a stall of a few unlucky probes in a row would then outlast the window more
//! often than it outlasts the default 2 s window, or the default retry budget.)
//!
//! Datagrams are delivered in order (no jitter), so the test's reading of "progress" from the
//! replies the client received is exactly the client's.

mod support;

use client::{ClientConfig, Error, Request};
use proto::{flags, HeaderFields, Opcode, Status};
use std::collections::HashSet;
use std::time::Duration;
use support::in_memory::bytes;
use support::sim::{config, Sim};

const EVENTS_MAX: usize = 5_000_000;
const WINDOW: Duration = Duration::from_secs(1);
const VALUE_BYTES: usize = 4 << 20;
/// Both directions together: 4 MiB needs at least 4 s through it, four windows.
const RATE_BYTES_PER_SECOND: u64 = 1 << 20;

fn slow_config() -> ClientConfig {
    let mut config = config(1);
    config.resend_window = WINDOW;
    config
}

fn slow_sim(seed: u64, config: ClientConfig) -> Sim {
    let mut sim = Sim::new(seed, config);
    sim.loss_percent = 10;
    sim.rate_bytes_per_second = RATE_BYTES_PER_SECOND;
    sim.burst_bytes = 64 << 10;
    sim.jitter_us = 0;
    sim
}

/// The tracking id of the request the server first saw with `opcode`.
fn tracking_of(sim: &Sim, opcode: Opcode) -> u64 {
    let first = sim.servers[0].requests.iter().find(|h| h.opcode == opcode as u8);
    first.expect("the server saw the request").tracking_id
}

/// When the client received progress for `tracking_id`, since the start: a PARTIAL naming a
/// first missing fragment past every earlier one, or a fragment not received before.
fn progress_of(sim: &Sim, tracking_id: u64) -> Vec<Duration> {
    let mut acknowledged = 0;
    let mut fragments = HashSet::new();
    let is_progress = |h: &HeaderFields, acknowledged: &mut u32, fragments: &mut HashSet<u32>| {
        if h.has(flags::PARTIAL) && h.frag_index > *acknowledged {
            *acknowledged = h.frag_index;
            return true;
        }
        h.has(flags::FRAGMENT) && fragments.insert(h.frag_index)
    };
    sim.received
        .iter()
        .filter(|(_, h)| h.tracking_id == tracking_id)
        .filter(|(_, h)| is_progress(h, &mut acknowledged, &mut fragments))
        .map(|&(at, _)| at - sim.start)
        .collect()
}

/// Every datagram of `tracking_id` left less than a window after its first send or the last
/// progress before it. Returns the progress instants.
fn assert_sent_within_windows(sim: &Sim, tracking_id: u64) -> Vec<Duration> {
    let progress = progress_of(sim, tracking_id);
    let sends = sim.sends_of(tracking_id);
    let first = sends[0];
    for &at in &sends {
        let opened = progress.iter().copied().filter(|&p| p <= at).max().unwrap_or(first);
        assert!(at < opened + WINDOW, "sent at {at:?}, the window opened at {opened:?}");
    }
    progress
}

#[test]
fn a_write_and_read_slower_than_the_window_complete_while_they_progress() {
    for seed in 0..3 {
        let mut sim = slow_sim(seed, slow_config());
        let value = bytes(seed, VALUE_BYTES);
        let id = sim.submit(Request::Put { key: b"big".to_vec(), value: value.clone() });
        let (put_time, result) = sim.run_until(id, EVENTS_MAX);
        let reply = result.unwrap_or_else(|e| panic!("seed {seed}: put failed: {e}"));
        assert_eq!(reply.status, Status::Ok, "seed {seed}");
        assert_eq!(sim.servers[0].applied, 1, "seed {seed}: applied exactly once");
        assert!(sim.servers[0].store[&b"big"[..]].0 == value, "seed {seed}: stored bytes differ");
        assert!(put_time > 4 * WINDOW, "seed {seed}: not slow enough: {put_time:?}");
        let put = tracking_of(&sim, Opcode::Put);
        let progress = assert_sent_within_windows(&sim, put);
        assert!(progress.len() > 100, "seed {seed}: {} acknowledgements", progress.len());

        let start = sim.now - sim.start;
        let id = sim.submit(Request::Get { key: b"big".to_vec() });
        let (done, result) = sim.run_until(id, EVENTS_MAX);
        let reply = result.unwrap_or_else(|e| panic!("seed {seed}: get failed: {e}"));
        assert!(reply.value == value, "seed {seed}: the value came back different");
        let get_time = done - start;
        assert!(get_time > 4 * WINDOW, "seed {seed}: not slow enough: {get_time:?}");
        assert_sent_within_windows(&sim, tracking_of(&sim, Opcode::Get));
        assert!(sim.policed > 0, "seed {seed}: the policer dropped nothing");
        eprintln!("seed {seed}: 4 MiB put in {put_time:?}, get in {get_time:?} (virtual)");
    }
}

#[test]
fn a_write_that_stops_progressing_fails_one_window_after_its_last_progress() {
    // Stalled two ways: the server keeps answering without taking fragments past 2 MiB, or it
    // falls silent at 3 s. Either way the write was past its first window by then.
    for silent in [false, true] {
        let mut config = slow_config();
        // The window, not the retry budget (715 ms of backoff), must end it.
        config.attempts_per_server = 1_000;
        let rto_max = config.rto_max;
        let mut sim = slow_sim(3, config);
        let id = sim.submit(Request::Put { key: b"big".to_vec(), value: bytes(3, VALUE_BYTES) });
        if silent {
            sim.run_until_time(Duration::from_secs(3));
            sim.servers[0].silent = true;
        } else {
            sim.servers[0].stall_at_fragment = Some(2048);
        }
        let (failed_at, result) = sim.run_until(id, EVENTS_MAX);
        assert!(matches!(result, Err(Error::Timeout { .. })), "silent {silent}: {result:?}");
        let put = tracking_of(&sim, Opcode::Put);
        let progress = assert_sent_within_windows(&sim, put);
        let last = *progress.last().expect("some progress");
        assert!(last > WINDOW, "silent {silent}: last progress at {last:?}");
        let deadline = last + WINDOW;
        assert!(
            failed_at >= deadline && failed_at <= deadline + rto_max,
            "silent {silent}: failed at {failed_at:?}, last progress at {last:?}"
        );
        let sends = sim.sends_of(put);
        let after = sends.iter().filter(|&&at| at > last).count();
        assert!(after > 0, "silent {silent}: nothing resent after the last progress");
        assert!(sim.run_all(EVENTS_MAX).is_empty());
        assert_eq!(sim.sends_of(put), sends, "silent {silent}: sent after failing");
        assert!(sends.iter().all(|&at| at < deadline), "silent {silent}: {sends:?}");
        assert_eq!(sim.servers[0].applied, 0, "silent {silent}");
    }
}

#[test]
fn a_read_that_stops_progressing_fails_one_window_after_its_last_fragment() {
    let mut config = slow_config();
    config.attempts_per_server = 1_000;
    let rto_max = config.rto_max;
    let mut sim = slow_sim(5, config);
    sim.servers[0].store_value(b"big", bytes(5, VALUE_BYTES));
    let id = sim.submit(Request::Get { key: b"big".to_vec() });
    sim.run_until_time(Duration::from_secs(3));
    sim.servers[0].silent = true;
    let (failed_at, result) = sim.run_until(id, EVENTS_MAX);
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    let get = tracking_of(&sim, Opcode::Get);
    let last = *assert_sent_within_windows(&sim, get).last().expect("some fragments");
    assert!(last > WINDOW, "last fragment at {last:?}");
    assert!(failed_at >= last + WINDOW && failed_at <= last + WINDOW + rto_max, "{failed_at:?}");
}
