use super::*;
use crate::Rng;
use std::time::Instant;

// ---- Hand-written histories on one key, times in milliseconds ----

fn op(client: u64, call: Call, answer: Answer, invoked: u64, returned: u64) -> Operation {
    Operation {
        client,
        key: b"k".to_vec(),
        call,
        answer,
        invoked: Duration::from_millis(invoked),
        returned: Duration::from_millis(returned),
    }
}

fn put(client: u64, value: &str, version: u64, invoked: u64, returned: u64) -> Operation {
    let call = Call::Put { value: value.into() };
    op(client, call, Answer::Written { version }, invoked, returned)
}

fn get(client: u64, read: Option<(&str, u64)>, invoked: u64, returned: u64) -> Operation {
    let read = read.map(|(value, version)| (value.as_bytes().to_vec(), version));
    op(client, Call::Get, Answer::Read(read), invoked, returned)
}

fn cas(client: u64, expected: u64, value: &str, answer: Answer, t: (u64, u64)) -> Operation {
    let call = Call::Cas { expected_version: expected, value: value.into() };
    op(client, call, answer, t.0, t.1)
}

fn delete(client: u64, existed: bool, invoked: u64, returned: u64) -> Operation {
    op(client, Call::Delete, Answer::Deleted { existed }, invoked, returned)
}

/// `call` without an answer (the client gave up at `gave_up`).
fn lost(client: u64, call: Call, invoked: u64, gave_up: u64) -> Operation {
    op(client, call, Answer::Unknown, invoked, gave_up)
}

fn put_call(value: &str) -> Call {
    Call::Put { value: value.into() }
}

fn accepted(history: &[Operation]) {
    if let Err(failure) = check(history) {
        panic!("a linearizable history was rejected:\n{failure}");
    }
}

fn rejected(history: &[Operation]) -> String {
    match check(history) {
        Ok(summary) => panic!("a history that is not linearizable was accepted: {summary:?}"),
        Err(failure @ Failure::NotLinearizable(_)) => failure.to_string(),
        Err(other) => panic!("rejected for the wrong reason: {other}"),
    }
}

#[test]
fn accepts_a_sequential_history() {
    accepted(&[
        get(1, None, 0, 1),
        put(1, "a", 3, 2, 3),
        get(2, Some(("a", 3)), 4, 5),
        cas(2, 3, "b", Answer::Swapped { version: 9 }, (6, 7)),
        cas(1, 3, "c", Answer::Mismatch { current_version: 9 }, (8, 9)),
        delete(1, true, 10, 11),
        delete(2, false, 12, 13),
        cas(2, 0, "d", Answer::Swapped { version: 12 }, (14, 15)),
        get(1, Some(("d", 12)), 16, 17),
    ]);
}

#[test]
fn accepts_overlapping_operations_in_either_order() {
    // "a" is invoked first but takes effect after "b" and the read in between.
    accepted(&[
        put(1, "a", 20, 0, 10),
        put(2, "b", 10, 1, 3),
        get(3, Some(("b", 10)), 4, 5),
        get(3, Some(("a", 20)), 11, 12),
    ]);
    // A read overlapping a write may see the value before it or after it.
    accepted(&[
        put(1, "a", 1, 0, 1),
        put(2, "b", 5, 2, 8),
        get(3, Some(("a", 1)), 3, 4),
        get(4, Some(("b", 5)), 3, 5),
        get(3, Some(("a", 1)), 2, 9),
    ]);
    // Concurrent CASes on one version: one swaps, the other sees the winner's version.
    accepted(&[
        put(1, "a", 1, 0, 1),
        cas(2, 1, "b", Answer::Mismatch { current_version: 4 }, (2, 6)),
        cas(3, 1, "c", Answer::Swapped { version: 4 }, (3, 5)),
        get(1, Some(("c", 4)), 7, 8),
    ]);
}

#[test]
fn rejects_a_stale_read() {
    rejected(&[put(1, "a", 1, 0, 1), put(1, "b", 2, 2, 3), get(2, Some(("a", 1)), 4, 5)]);
}

#[test]
fn rejects_a_write_applied_twice() {
    // Read at v1, overwritten by a newer acknowledged write, read again at a newer version:
    // the resent write was applied a second time.
    let text = rejected(&[
        put(1, "a", 1, 0, 1),
        get(2, Some(("a", 1)), 2, 3),
        put(3, "b", 2, 4, 5),
        get(2, Some(("b", 2)), 6, 7),
        get(2, Some(("a", 7)), 8, 9),
    ]);
    assert!(text.contains("key \"k\""), "{text}");
    assert!(text.contains("read under 2 versions"), "{text}");
    // The reply the client got is the second application's: it names a version the first
    // reads did not see.
    rejected(&[
        put(1, "a", 7, 0, 10),
        get(2, Some(("a", 1)), 2, 3),
        put(3, "b", 5, 4, 5),
        get(2, Some(("a", 7)), 11, 12),
    ]);
    // Even with no read of the overwriting write: the value came back.
    rejected(&[
        put(1, "a", 1, 0, 1),
        put(2, "b", 2, 2, 3),
        get(3, Some(("b", 2)), 4, 5),
        get(3, Some(("a", 1)), 6, 7),
    ]);
}

#[test]
fn rejects_a_cas_that_swapped_against_the_wrong_version() {
    rejected(&[
        put(1, "a", 1, 0, 1),
        put(1, "b", 2, 2, 3),
        cas(2, 1, "c", Answer::Swapped { version: 3 }, (4, 5)),
    ]);
    // ... or that did not swap against the right one.
    rejected(&[
        put(1, "a", 1, 0, 1),
        cas(2, 1, "c", Answer::Mismatch { current_version: 1 }, (2, 3)),
    ]);
    // ... or swapped "if absent" on a present key.
    rejected(&[put(1, "a", 1, 0, 1), cas(2, 0, "c", Answer::Swapped { version: 2 }, (2, 3))]);
}

#[test]
fn rejects_a_lost_acknowledged_write() {
    rejected(&[put(1, "a", 1, 0, 1), get(2, None, 2, 3)]);
    rejected(&[put(1, "a", 1, 0, 1), put(1, "b", 2, 2, 3), get(2, Some(("a", 1)), 4, 5)]);
    rejected(&[put(1, "a", 1, 0, 1), delete(2, false, 2, 3)]);
}

#[test]
fn rejects_versions_that_do_not_increase() {
    rejected(&[put(1, "a", 5, 0, 1), put(2, "b", 3, 2, 3)]);
    rejected(&[put(1, "a", 5, 0, 1), put(2, "b", 5, 2, 3)]);
    // A read must see the version its write got.
    rejected(&[put(1, "a", 5, 0, 1), get(2, Some(("a", 6)), 2, 3)]);
    // Across a delete too.
    rejected(&[put(1, "a", 5, 0, 1), delete(1, true, 2, 3), put(2, "b", 4, 4, 5)]);
}

#[test]
fn rejects_a_read_of_a_value_no_one_wrote() {
    let text = rejected(&[put(1, "a", 1, 0, 1), get(2, Some(("z", 1)), 2, 3)]);
    assert!(text.contains("no operation of this key wrote"), "{text}");
}

#[test]
fn an_unanswered_write_may_take_effect_or_not() {
    // Applied, seen by a read (which tells its version).
    accepted(&[lost(1, put_call("a"), 0, 5), get(2, Some(("a", 7)), 2, 3)]);
    // Never applied.
    accepted(&[lost(1, put_call("a"), 0, 5), get(2, None, 2, 3), get(2, None, 10, 11)]);
    // Applied long after the client gave up.
    accepted(&[
        lost(1, put_call("a"), 0, 5),
        get(2, None, 6, 7),
        get(2, Some(("a", 7)), 20, 21),
        put(3, "b", 8, 22, 23),
    ]);
    // But once: seen, then gone without a write or delete that explains it.
    rejected(&[lost(1, put_call("a"), 0, 5), get(2, Some(("a", 7)), 2, 3), get(2, None, 6, 7)]);
    // Its version, once read, binds the writes after it.
    rejected(&[lost(1, put_call("a"), 0, 5), get(2, Some(("a", 7)), 2, 3), put(3, "b", 6, 8, 9)]);
    // An unanswered delete may explain a value's disappearance, and an unanswered CAS a
    // swap; neither has to happen.
    accepted(&[
        put(1, "a", 1, 0, 1),
        lost(2, Call::Delete, 2, 5),
        get(3, None, 6, 7),
        lost(1, Call::Cas { expected_version: 0, value: "b".into() }, 8, 9),
        get(3, Some(("b", 3)), 10, 11),
    ]);
    accepted(&[
        put(1, "a", 1, 0, 1),
        lost(2, Call::Delete, 2, 5),
        lost(1, Call::Cas { expected_version: 1, value: "b".into() }, 8, 9),
        get(3, Some(("a", 1)), 10, 11),
    ]);
    // A CAS cannot swap against a version the key did not have.
    rejected(&[
        put(1, "a", 1, 0, 1),
        lost(1, Call::Cas { expected_version: 4, value: "b".into() }, 2, 3),
        get(3, Some(("b", 5)), 10, 11),
    ]);
}

#[test]
fn an_unanswered_write_may_be_given_a_deadline() {
    let window =
        Options { unanswered_effect_max: Some(Duration::from_millis(10)), ..Options::default() };
    // Seen long after its deadline (5 ms given up + 10 ms), after a read that did not see it.
    let late = [lost(1, put_call("a"), 0, 5), get(2, None, 20, 21), get(2, Some(("a", 7)), 30, 31)];
    accepted(&late);
    assert!(matches!(check_with(&late, window), Err(Failure::NotLinearizable(_))));
    let text = check_with(&late, window).unwrap_err().to_string();
    assert!(text.contains("effect by 0.015000s"), "{text}");
    // Within the deadline, after a read that did not see it yet.
    let in_time =
        [lost(1, put_call("a"), 0, 5), get(2, None, 6, 7), get(2, Some(("a", 7)), 12, 13)];
    check_with(&in_time, window).expect("took effect between 7 and 12 ms");
    // Never taking effect is still allowed.
    let never = [lost(1, put_call("a"), 0, 5), get(2, None, 6, 7), get(2, None, 40, 41)];
    check_with(&never, window).expect("never took effect");
}

#[test]
fn an_unanswered_read_is_dropped() {
    let summary = check(&[
        put(1, "a", 1, 0, 1),
        op(2, Call::Get, Answer::Unknown, 2, 3),
        get(2, Some(("a", 1)), 4, 5),
    ])
    .expect("linearizable");
    assert_eq!((summary.operations, summary.unknown_reads, summary.unknown_writes), (2, 1, 0));
}

#[test]
fn keys_are_checked_apart() {
    let mut history = vec![put(1, "a", 1, 0, 1), get(2, Some(("a", 1)), 4, 5)];
    let mut other = put(3, "x", 2, 2, 3);
    other.key = b"other".to_vec();
    history.push(other);
    let summary = check(&history).expect("linearizable");
    assert_eq!((summary.keys, summary.operations), (2, 3));
    // The same operations on one key are not: "a" read after "x" replaced it.
    let mut same = history.clone();
    same[2].key = b"k".to_vec();
    rejected(&same);
}

#[test]
fn a_malformed_operation_is_reported_as_such() {
    let bad = op(1, Call::Get, Answer::Written { version: 1 }, 0, 1);
    assert_eq!(
        check(&[bad]),
        Err(Failure::Malformed { index: 0, why: "the answer does not fit the call" })
    );
    let backwards = put(1, "a", 1, 5, 4);
    assert!(matches!(check(&[backwards]), Err(Failure::Malformed { index: 0, .. })));
}

#[test]
fn the_explanation_names_the_operations_around_the_failure() {
    let text = rejected(&[
        put(1, "a", 1, 0, 1),
        get(2, Some(("a", 1)), 2, 3),
        put(3, "b", 2, 4, 5),
        get(2, Some(("a", 7)), 8, 9),
    ]);
    assert!(text.contains("places 3 of the 4 answered"), "{text}");
    assert!(
        text.contains("#3 client 2: get -> \"a\" at version 7  [0.008000s, 0.009000s]"),
        "{text}"
    );
    assert!(text.contains("#2 client 3: put \"b\" -> version 2"), "{text}");
    assert!(text.contains("written by #0 client 1: put \"a\""), "{text}");
    assert!(text.contains("key then: \"b\" at version 2"), "{text}");
}

// ---- Generated histories ----

/// A history of `count` operations of `clients` concurrent clients on `keys` keys, made
/// linearizable by construction: each operation takes effect at an instant inside its
/// interval, in the order of those instants, on a register per key whose versions come from
/// one counter (so they skip numbers per key). About `unknown` of the operations get no
/// answer, half of those without taking effect. With `ghost`, the write of the operation
/// numbered so takes effect a second time later on (the defect of a resend applied twice),
/// and a read sees it.
fn simulate(seed: u64, count: usize, clients: u64, keys: u64, unknown: f64) -> Vec<Operation> {
    simulate_with_ghost(seed, count, clients, keys, unknown, None)
}

struct Planned {
    invoked: u64,
    effect: u64,
    returned: u64,
    key: u64,
    choice: u64,
}

fn plan(rng: &mut Rng, free_at: u64, keys: u64) -> Planned {
    let invoked = free_at + rng.below(100);
    let effect = invoked + rng.below(300);
    let returned = effect + rng.below(300);
    Planned { invoked, effect, returned, key: rng.below(keys), choice: rng.below(10) }
}

fn simulate_with_ghost(
    seed: u64,
    count: usize,
    clients: u64,
    keys: u64,
    unknown: f64,
    ghost: Option<usize>,
) -> Vec<Operation> {
    let mut rng = Rng::from_seed(seed);
    let mut registers: Vec<Option<(Vec<u8>, u64)>> = vec![None; keys as usize];
    let mut seen = vec![vec![0u64; keys as usize]; clients as usize];
    let mut planned: Vec<Planned> = (0..clients).map(|_| plan(&mut rng, 0, keys)).collect();
    let mut version = 0u64;
    let mut history: Vec<Operation> = Vec::new();
    let mut forced_read: Option<u64> = None;
    for n in 0..count {
        let client = (0..clients).min_by_key(|&c| planned[c as usize].effect).expect("clients");
        let p = &planned[client as usize];
        let (key, choice) = forced_read.take().map_or((p.key, p.choice), |key| (key, 9));
        let register = &mut registers[key as usize];
        let before = register.clone();
        let value = format!("c{client}-n{n}").into_bytes();
        let (call, mut answer) = match choice {
            0..=2 => {
                version += 1;
                *register = Some((value.clone(), version));
                (Call::Put { value }, Answer::Written { version })
            }
            3..=5 => {
                let expected = seen[client as usize][key as usize];
                let current = register.as_ref().map_or(0, |r| r.1);
                let call = Call::Cas { expected_version: expected, value: value.clone() };
                if expected == current {
                    version += 1;
                    *register = Some((value, version));
                    (call, Answer::Swapped { version })
                } else {
                    (call, Answer::Mismatch { current_version: current })
                }
            }
            6 => {
                let existed = register.take().is_some();
                version += u64::from(existed);
                (Call::Delete, Answer::Deleted { existed })
            }
            _ => (Call::Get, Answer::Read(register.clone())),
        };
        if call != Call::Get && rng.chance(unknown) {
            answer = Answer::Unknown;
            if rng.chance(0.5) {
                // Never took effect (the version it took stays skipped).
                *register = before;
            }
        }
        let last_seen = match &answer {
            Answer::Read(read) => read.as_ref().map_or(0, |r| r.1),
            Answer::Written { version } | Answer::Swapped { version } => *version,
            Answer::Mismatch { current_version } => *current_version,
            Answer::Deleted { .. } => 0,
            Answer::Unknown => seen[client as usize][key as usize],
        };
        seen[client as usize][key as usize] = last_seen;
        let returned = if answer == Answer::Unknown { p.returned + 2_000 } else { p.returned };
        history.push(Operation {
            client,
            key: format!("key-{key}").into_bytes(),
            call,
            answer,
            invoked: Duration::from_micros(p.invoked),
            returned: Duration::from_micros(returned),
        });
        if ghost == Some(n) {
            // The last acknowledged PUT takes effect again, and the next operation reads it.
            let (key, value) = last_acknowledged_put(&history).expect("a PUT before the ghost");
            version += 1;
            registers[key as usize] = Some((value, version));
            forced_read = Some(key);
        }
        let free_at = planned[client as usize].returned;
        planned[client as usize] = plan(&mut rng, free_at, keys);
    }
    history
}

fn last_acknowledged_put(history: &[Operation]) -> Option<(u64, Vec<u8>)> {
    history.iter().rev().find_map(|op| match (&op.call, &op.answer) {
        (Call::Put { value }, Answer::Written { .. }) => {
            let key = std::str::from_utf8(&op.key).ok()?.strip_prefix("key-")?.parse().ok()?;
            Some((key, value.clone()))
        }
        _ => None,
    })
}

#[test]
fn accepts_generated_linearizable_histories() {
    for seed in 0..20 {
        let history = simulate(seed, 400, 4, 2, 0.0);
        accepted(&history);
    }
}

#[test]
fn rejects_generated_histories_with_a_write_applied_twice() {
    for seed in 0..20 {
        let history = simulate_with_ghost(seed, 400, 4, 2, 0.0, Some(100));
        rejected(&history);
    }
}

/// With and without deadlines (the simulated operations take effect before their answer).
#[test]
fn generated_histories_with_unanswered_operations() {
    let window =
        Options { unanswered_effect_max: Some(Duration::from_millis(1)), ..Options::default() };
    for seed in 0..20 {
        let history = simulate(seed, 600, 4, 2, 0.1);
        accepted(&history);
        check_with(&history, window).unwrap_or_else(|failure| panic!("{failure}"));
        let ghost = simulate_with_ghost(seed, 600, 4, 2, 0.1, Some(300));
        rejected(&ghost);
        assert!(matches!(check_with(&ghost, window), Err(Failure::NotLinearizable(_))));
    }
}

/// A crash-test sized history: no exponential search, accepted or rejected.
#[test]
fn thousands_of_operations_check_quickly() {
    let history = simulate(7, 6_000, 8, 5, 0.02);
    let unknown = history.iter().filter(|op| op.answer == Answer::Unknown).count();
    assert!(unknown > 50, "{unknown} unanswered operations");
    let started = Instant::now();
    let summary = check(&history).unwrap_or_else(|failure| panic!("{failure}"));
    let accepted_in = started.elapsed();
    assert_eq!(summary.keys, 5);
    let bad = simulate_with_ghost(7, 6_000, 8, 5, 0.02, Some(3_000));
    let started = Instant::now();
    rejected(&bad);
    let rejected_in = started.elapsed();
    eprintln!("{summary:?}: accepted in {accepted_in:?}, rejected in {rejected_in:?}");
    // Generous for a debug build on a loaded machine; an exponential search takes hours.
    assert!(accepted_in < Duration::from_secs(10), "accepted in {accepted_in:?}");
    assert!(rejected_in < Duration::from_secs(10), "rejected in {rejected_in:?}");
}

/// Many unanswered operations and a violation late in a long history: the failed search
/// must try everything before it, which deadlines keep cheap.
#[test]
fn a_late_violation_among_many_unanswered_operations_is_found_quickly() {
    let window =
        Options { unanswered_effect_max: Some(Duration::from_millis(5)), ..Options::default() };
    let bad = simulate_with_ghost(3, 20_000, 8, 5, 0.03, Some(19_000));
    let started = Instant::now();
    let verdict = check_with(&bad, window);
    let took = started.elapsed();
    assert!(matches!(verdict, Err(Failure::NotLinearizable(_))), "{verdict:?}");
    assert!(took < Duration::from_secs(10), "rejected in {took:?}");
}
