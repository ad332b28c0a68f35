//! Exactly-once writes across crashes (issue #14, point 4): a real `cradle node` is killed with
//! SIGKILL every ~1.5 s and restarted on its data directory 50–600 ms later, within the
//! clients' 2 s resend window, while 8 clients PUT, CAS, GET and DELETE 5 keys. A write in
//! flight at a kill is resent across the restart with its tracking id; the restarted node must
//! answer it from its completion record, not apply it again. Every written value is unique, and
//! a linearizability checker (`testkit::linearizability`) over the whole recorded history, per
//! key, with unanswered operations counted as possibly applied, finds any write applied twice.
//!
//! `CRASH_SECS` sets the length of a run (default 12 s for the `flushed` class, 8 s for
//! `memory`), `CRASH_SEED` its seed (printed by every run). The window is timing-dependent:
//! run it many times (`for i in $(seq 20); do cargo test --release --test crash_exactly_once
//! || break; done`).

mod common;

use client::{CasOutcome, Client, ClientConfig, Error};
use common::NodeProcess;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use testkit::linearizability::{self, Answer, Call, Failure, Operation, Options};
use testkit::Rng;

const CLIENTS: u64 = 8;
const KEYS: u64 = 5;
/// Between a restart's ready line and the next kill: 1.0 .. 2.0 s.
const UP_MS: (u64, u64) = (1_000, 2_000);
/// Between a kill and the restart: 50 .. 600 ms (replay comes on top).
const DOWN_MS: (u64, u64) = (50, 600);
/// The clients' resend window (the `ClientConfig` default): restarts within it are the point.
const RESEND_WINDOW: Duration = Duration::from_secs(2);

/// After its client gave up, how long an unanswered operation could still take effect, for a
/// second opinion when the first check is inconclusive.
const EFFECT_AFTER_GIVING_UP_MAX: Duration = Duration::from_secs(5);

/// One run at a time: two would share two cores and their kills would blur.
static RUNS: Mutex<()> = Mutex::new(());

#[test]
fn no_write_is_applied_twice_across_kill_9_flushed() {
    crash_run("flushed", 12);
}

/// The memory class answers before its flush: the same window, another path to it.
#[test]
fn no_write_is_applied_twice_across_kill_9_memory() {
    crash_run("memory", 8);
}

/// What a run did besides the history: the kills and how long the node was down each time.
#[derive(Default)]
struct Crashes {
    kills: Vec<Duration>,
    /// From each kill to the restarted node's ready line.
    down: Vec<Duration>,
}

fn crash_run(durability: &str, default_secs: u64) {
    let _one_at_a_time = RUNS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let secs = env_u64("CRASH_SECS").unwrap_or(default_secs);
    let seed = env_u64("CRASH_SEED").unwrap_or_else(client::random_seed);
    eprintln!("crash test ({durability}): {secs} s, seed {seed} (CRASH_SEED={seed} replays it)");
    let mut node = NodeProcess::start(1, 8, &["--durability", durability, "--spin-us", "0"]);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_exit = StopOnDrop(stop.clone());
    let clients: Vec<JoinHandle<ClientLog>> = (0..CLIENTS)
        .map(|id| {
            let (stop, addr) = (stop.clone(), node.addr);
            std::thread::spawn(move || run_client(id, addr, seed, start, &stop))
        })
        .collect();
    let crashes = kill_and_restart(&mut node, seed, start, Duration::from_secs(secs));
    drop(stop_on_exit);
    let logs: Vec<ClientLog> =
        clients.into_iter().map(|client| client.join().expect("client thread")).collect();
    let mut history: Vec<Operation> = logs.iter().flat_map(|log| log.ops.clone()).collect();
    history.extend(final_reads(node.addr, seed, start));
    drop(node);
    report_and_check(durability, seed, secs, &history, &logs, &crashes);
}

/// Sets the stop flag when dropped, so clients stop even if the killer panics.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

// ---- The killer ----

/// Kills the node every `UP_MS` and restarts it after `DOWN_MS`, until `run_for` is over;
/// leaves it running.
fn kill_and_restart(
    node: &mut NodeProcess,
    seed: u64,
    start: Instant,
    run_for: Duration,
) -> Crashes {
    let mut rng = Rng::from_seed(seed ^ 0x4B11_1E55);
    let mut crashes = Crashes::default();
    loop {
        let up = Duration::from_millis(UP_MS.0 + rng.below(UP_MS.1 - UP_MS.0));
        if start.elapsed() + up >= run_for {
            std::thread::sleep(run_for.saturating_sub(start.elapsed()));
            return crashes;
        }
        std::thread::sleep(up);
        let killed = Instant::now();
        node.kill();
        crashes.kills.push(killed - start);
        std::thread::sleep(Duration::from_millis(DOWN_MS.0 + rng.below(DOWN_MS.1 - DOWN_MS.0)));
        node.restart();
        crashes.down.push(killed.elapsed());
    }
}

// ---- The clients ----

#[derive(Default)]
struct ClientLog {
    ops: Vec<Operation>,
    /// Errors by kind (all recorded as unanswered operations).
    errors: BTreeMap<String, u64>,
    retransmits: u64,
}

fn key_name(key: u64) -> Vec<u8> {
    format!("crash-{key}").into_bytes()
}

fn client_config(addr: SocketAddr, seed: u64) -> ClientConfig {
    let mut config = ClientConfig::new(vec![addr]);
    config.seed = seed;
    // The resend window, not the attempt budget, ends a request: a request in flight at a
    // kill is resent until the node is back (the default 8 attempts last ~0.3 s on loopback).
    config.attempts_per_server = 1_000;
    assert_eq!(config.resend_window, RESEND_WINDOW);
    config
}

/// Until `stop`: random operations on `KEYS` keys, each recorded with its times and answer;
/// an error of any kind is recorded as an unanswered operation (it may have been applied).
fn run_client(
    id: u64,
    addr: SocketAddr,
    seed: u64,
    start: Instant,
    stop: &AtomicBool,
) -> ClientLog {
    let mut rng = Rng::from_seed(seed ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let config = client_config(addr, rng.next_u64());
    let mut client = Client::connect(config).expect("client connects");
    let mut log = ClientLog::default();
    // The latest version this client saw of each key: what its CASes expect.
    let mut seen = vec![0u64; KEYS as usize];
    let mut sequence = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let key = rng.below(KEYS);
        sequence += 1;
        let value = format!("c{id}-s{sequence}").into_bytes();
        let call = match rng.below(100) {
            0..=34 => Call::Put { value },
            35..=64 => {
                let expected_version = if rng.chance(0.1) { 0 } else { seen[key as usize] };
                Call::Cas { expected_version, value }
            }
            65..=91 => Call::Get,
            _ => Call::Delete,
        };
        let invoked = start.elapsed();
        let answer = perform(&mut client, &key_name(key), &call).unwrap_or_else(|error| {
            *log.errors.entry(error_kind(&error)).or_default() += 1;
            Answer::Unknown
        });
        let returned = start.elapsed();
        if let Some(version) = version_seen(&answer) {
            seen[key as usize] = version;
        }
        log.ops.push(Operation { client: id, key: key_name(key), call, answer, invoked, returned });
    }
    log.retransmits = client.client_stats().retransmits;
    log
}

fn perform(client: &mut Client, key: &[u8], call: &Call) -> Result<Answer, Error> {
    Ok(match call {
        Call::Get => Answer::Read(client.get(key)?.map(|value| (value.bytes, value.version))),
        Call::Put { value } => Answer::Written { version: client.put(key, value)? },
        Call::Cas { expected_version, value } => match client.cas(key, *expected_version, value)? {
            CasOutcome::Swapped { version } => Answer::Swapped { version },
            CasOutcome::Mismatch { current_version } => Answer::Mismatch { current_version },
        },
        Call::Delete => Answer::Deleted { existed: client.delete(key)? },
    })
}

/// The key's version an answer tells (0: absent).
fn version_seen(answer: &Answer) -> Option<u64> {
    match answer {
        Answer::Read(read) => Some(read.as_ref().map_or(0, |(_, version)| *version)),
        Answer::Written { version } | Answer::Swapped { version } => Some(*version),
        Answer::Mismatch { current_version } => Some(*current_version),
        Answer::Deleted { .. } => Some(0),
        Answer::Unknown => None,
    }
}

/// A short name per kind of error. No error proves a write was not applied: a timeout or a
/// transport error says nothing, and the statuses a node can refuse a write with after a
/// crash (BUSY, NO_SPACE, UNAVAILABLE from a poisoned store) may come after the write reached
/// the log; PROTOCOL.md promises "not applied" for none of them.
fn error_kind(error: &Error) -> String {
    match error {
        Error::Timeout { .. } => "timeout".to_string(),
        Error::Status(status) => format!("status {status:?}"),
        Error::Io(_) => "i/o".to_string(),
        other => format!("{other}"),
    }
}

/// After the last restart and the clients: one read of every key, recorded as a last client's
/// operations (the state the node ended with must follow from the history too).
fn final_reads(addr: SocketAddr, seed: u64, start: Instant) -> Vec<Operation> {
    let mut client = Client::connect(client_config(addr, seed ^ 0xF1A1)).expect("connects");
    (0..KEYS)
        .map(|key| {
            let invoked = start.elapsed();
            let answer = perform(&mut client, &key_name(key), &Call::Get)
                .unwrap_or_else(|error| panic!("final read of key {key} failed: {error}"));
            let returned = start.elapsed();
            Operation {
                client: CLIENTS,
                key: key_name(key),
                call: Call::Get,
                answer,
                invoked,
                returned,
            }
        })
        .collect()
}

// ---- The verdict ----

/// What a run did, to print and to show it did real work.
struct Work {
    acknowledged_writes: usize,
    /// Answered operations invoked before a kill and answered after it: resent across it.
    across_a_kill: usize,
    errors: BTreeMap<String, u64>,
    retransmits: u64,
    /// Restarts ready within the resend window of the kill.
    within_window: usize,
}

impl Work {
    fn of(history: &[Operation], logs: &[ClientLog], crashes: &Crashes) -> Work {
        let acknowledged_writes = history
            .iter()
            .filter(|op| {
                matches!(op.answer, Answer::Written { .. } | Answer::Swapped { .. })
                    || op.answer == Answer::Deleted { existed: true }
            })
            .count();
        let across_a_kill = history
            .iter()
            .filter(|op| op.answer != Answer::Unknown)
            .filter(|op| crashes.kills.iter().any(|&kill| op.invoked < kill && kill < op.returned))
            .count();
        let mut errors = BTreeMap::new();
        for (kind, count) in logs.iter().flat_map(|log| &log.errors) {
            *errors.entry(kind.clone()).or_default() += count;
        }
        Work {
            acknowledged_writes,
            across_a_kill,
            errors,
            retransmits: logs.iter().map(|log| log.retransmits).sum(),
            within_window: crashes.down.iter().filter(|&&down| down < RESEND_WINDOW).count(),
        }
    }

    fn print(&self, durability: &str, seed: u64, operations: usize, crashes: &Crashes) {
        eprintln!(
            "crash test ({durability}, seed {seed}): {operations} operations, {} acknowledged \
             writes, {} answered across a kill, {} retransmissions, errors {:?}; {} kills, {} \
             restarts ready within the resend window (longest down {:?})",
            self.acknowledged_writes,
            self.across_a_kill,
            self.retransmits,
            self.errors,
            crashes.kills.len(),
            self.within_window,
            crashes.down.iter().max().copied().unwrap_or_default(),
        );
    }

    /// Enough kills, restarts within the window, writes and resends across kills that a
    /// passing run means something.
    fn assert_real(&self, crashes: &Crashes, secs: u64) {
        let kills = crashes.kills.len();
        let kills_min = (secs / 3).max(2) as usize;
        assert!(kills >= kills_min, "{kills} kills, fewer than {kills_min}");
        assert!(
            self.within_window * 2 >= crashes.down.len(),
            "most restarts took longer than the resend window: {:?}",
            crashes.down
        );
        let writes_min = 100 * secs as usize;
        assert!(
            self.acknowledged_writes >= writes_min,
            "{} acknowledged writes, fewer than {writes_min}",
            self.acknowledged_writes
        );
        assert!(
            self.across_a_kill >= kills,
            "only {} operations were answered across {kills} kills",
            self.across_a_kill
        );
    }
}

fn report_and_check(
    durability: &str,
    seed: u64,
    secs: u64,
    history: &[Operation],
    logs: &[ClientLog],
    crashes: &Crashes,
) {
    let work = Work::of(history, logs, crashes);
    work.print(durability, seed, history.len(), crashes);
    check_history(durability, seed, secs, history);
    work.assert_real(crashes, secs);
}

/// Panics with the checker's explanation unless `history` is linearizable.
fn check_history(durability: &str, seed: u64, secs: u64, history: &[Operation]) {
    let started = Instant::now();
    let verdict = linearizability::check(history);
    let took = started.elapsed();
    let failure = match verdict {
        Ok(summary) => return eprintln!("linearizable ({summary:?}), checked in {took:?}"),
        Err(failure @ Failure::Inconclusive { .. }) => {
            // Too many unanswered operations for a search that lets them take effect at any
            // time: with the bound the protocol gives (no resend after the client gave up,
            // loopback delivers in far less than this), there is a verdict that explains.
            let options = Options {
                unanswered_effect_max: Some(EFFECT_AFTER_GIVING_UP_MAX),
                ..Options::default()
            };
            let bounded = match linearizability::check_with(history, options) {
                Ok(_) => "linearizable".to_string(),
                Err(failure) => failure.to_string(),
            };
            format!(
                "{failure}\nwith unanswered operations taking effect at most \
                 {EFFECT_AFTER_GIVING_UP_MAX:?} after their client gave up: {bounded}"
            )
        }
        Err(failure) => failure.to_string(),
    };
    panic!(
        "crash test ({durability}): the history is not linearizable (CRASH_SEED={seed} \
         CRASH_SECS={secs} replay the schedule), checked in {took:?}:\n{failure}"
    );
}
