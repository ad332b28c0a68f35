//! Seeds of the whole simulation, each checked for linearizability. `SIM_SEEDS=N` runs N seeds
//! (default 1,000), `SIM_SEED=S` replays one; a failure names its seed.

use sim::{run, Options};

fn seeds() -> Vec<u64> {
    sim::seeds_from_env(1000)
}

#[test]
fn every_seed_is_linearizable_across_crashes_loss_and_duplication() {
    let options = Options::default();
    let (mut crashes, mut answered, mut unknown) = (0, 0, 0);
    let seeds = seeds();
    for &seed in &seeds {
        match run(seed, &options) {
            Ok(report) => {
                crashes += report.crashes;
                answered += report.answered;
                unknown += report.unknown;
            }
            Err(why) => panic!("seed {seed} failed (SIM_SEED={seed} replays it):\n{why}"),
        }
    }
    eprintln!(
        "{} seeds: {crashes} crashes, {answered} answered, {unknown} without an answer",
        seeds.len()
    );
    // The runs did what they are for: crashes inside the resend window, answers across them.
    // (Since clients are told at once that a crashed node's ports are closed, they finish
    // sooner and the runs see fewer crashes: about 0.85 a seed, from 2.)
    assert!(2 * crashes >= seeds.len() as u64, "{crashes} crashes");
    assert!(answered > 10 * unknown, "{answered} answered, {unknown} unknown");
}

#[test]
fn a_seed_replays_exactly() {
    let options = Options::default();
    assert_eq!(run(42, &options), run(42, &options));
}

#[test]
fn the_checker_catches_a_server_that_forgets_its_completion_records_at_once() {
    // Deterministic where the real-thread mutant of `tests/faults_mem.rs` was not: with
    // records kept 1 ns, a resent or duplicated write is applied again.
    let options = Options { completion_ttl_ns: Some(1), up_ms: None, ..Options::default() };
    let caught = (0..200).find(|&seed| run(seed, &options).is_err());
    let seed = caught.expect("no seed of 200 caught a write applied twice");
    eprintln!(
        "the forgetful server is caught at seed {seed}: {}",
        run(seed, &options).unwrap_err()
    );
}

#[test]
fn the_checker_catches_the_injected_bug_of_resends_applied_again_after_a_restart() {
    // Without rebuilt completion records a resend that crosses a restart is applied twice.
    let options = Options { rebuild_completions: false, ..Options::default() };
    let caught = (0..200).find(|&seed| run(seed, &options).is_err());
    let seed = caught.expect("no seed of 200 caught a write applied twice");
    eprintln!("the injected bug is caught at seed {seed}: {}", run(seed, &options).unwrap_err());
}

#[test]
fn a_harsh_network_with_long_outages_stays_linearizable() {
    // More contention, a lossier network, restarts beyond the clients' retry budget.
    let options = Options {
        clients: 6,
        keys: 2,
        operations_per_client: 60,
        loss: 0.2,
        duplicate: 0.1,
        delay_us: (10, 3_000),
        up_ms: Some((2, 40)),
        down_ms: (1, 1_500),
        ..Options::default()
    };
    // A tenth of the seeds (or the one SIM_SEED names).
    let seeds = seeds();
    for &seed in &seeds[..seeds.len().div_ceil(10)] {
        if let Err(why) = run(seed, &options) {
            panic!(
                "seed {seed} failed (SIM_SEED={seed} cargo test -p sim harsh replays it):\n{why}"
            );
        }
    }
}
