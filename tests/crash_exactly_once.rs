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

use common::history::{final_reads, run_client, ClientLog, Keys};
use common::NodeProcess;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use testkit::linearizability::{Answer, Operation};
use testkit::Rng;

const CLIENTS: u64 = 8;
const KEYS: Keys = Keys { prefix: "crash", count: 5 };
/// Between a restart's ready line and the next kill: 1.0 .. 2.0 s.
const UP_MS: (u64, u64) = (1_000, 2_000);
/// Between a kill and the restart: 50 .. 600 ms (replay comes on top).
const DOWN_MS: (u64, u64) = (50, 600);
/// The clients' resend window (the `ClientConfig` default): restarts within it are the point.
const RESEND_WINDOW: Duration = Duration::from_secs(2);

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
            std::thread::spawn(move || run_client(id, &[addr], &KEYS, seed, start, &stop))
        })
        .collect();
    let crashes = kill_and_restart(&mut node, seed, start, Duration::from_secs(secs));
    drop(stop_on_exit);
    let logs: Vec<ClientLog> =
        clients.into_iter().map(|client| client.join().expect("client thread")).collect();
    let mut history: Vec<Operation> = logs.iter().flat_map(|log| log.ops.clone()).collect();
    history.extend(final_reads(&[node.addr], &KEYS, CLIENTS, seed, start));
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
    let replay = format!("CRASH_SEED={seed} CRASH_SECS={secs} replay the schedule");
    common::history::check_history(&format!("crash test ({durability})"), &replay, history);
}
