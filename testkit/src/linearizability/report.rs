//! The explanation of a failed check: where the search got furthest, and why nothing could be
//! placed after that.

use super::model::{KeyOps, Kind, Op, Outcome, State, NEVER_WRITTEN, UNSEEN};
use super::search::Stuck;
use super::Call;
use super::Operation;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::Duration;

/// Candidates listed at the point where the search got stuck; the rest are counted.
const CANDIDATES_SHOWN: usize = 16;

/// Bytes shown of a key or value.
const BYTES_SHOWN: usize = 40;

/// Several lines: the key, how far the search got, the tail of the longest linearizable
/// prefix, the operation that could not be placed, the others that could have been, and the
/// writers and readers of the values involved.
pub(crate) fn explain(history: &[Operation], key: &[u8], ops: &KeyOps, stuck: &Stuck) -> String {
    let mut out = String::new();
    let unanswered = ops.ops.iter().filter(|op| !op.known()).count();
    let until = match ops.ops.iter().any(|op| op.deadline.is_some()) {
        true => "until their deadline",
        false => "at any time",
    };
    let _ = writeln!(
        out,
        "key {}: not linearizable. {} operations ({} answered, {} without an answer, which \
         may take effect {until} after their invocation or never); the longest linearizable \
         prefix places {} of the {} answered ones.",
        show_bytes(key),
        ops.ops.len(),
        stuck.answered,
        unanswered,
        stuck.placed,
        stuck.answered,
    );
    let _ = writeln!(out, "last operations of that prefix, in the order they took effect:");
    if stuck.prefix_tail.is_empty() {
        let _ = writeln!(out, "  (none: the very first operations cannot be placed)");
    }
    for &(i, after) in &stuck.prefix_tail {
        let _ = writeln!(out, "  {}  => {}", describe(history, ops, i), show_state(ops, after));
    }
    let _ = writeln!(out, "key then: {}", show_state(ops, stuck.state));
    let blocking = &ops.ops[stuck.blocking];
    let _ = writeln!(
        out,
        "could not be placed before its answer at {} (every order of the operations that \
         could go first was tried):\n  {}\n    {}",
        show_time(blocking.returned.expect("answered")),
        describe(history, ops, stuck.blocking),
        why(ops, blocking, stuck.state),
    );
    write_candidates(&mut out, history, ops, stuck);
    write_values(&mut out, history, ops, stuck);
    out
}

fn write_candidates(out: &mut String, history: &[Operation], ops: &KeyOps, stuck: &Stuck) {
    let others: Vec<usize> =
        stuck.candidates.iter().copied().filter(|&i| i != stuck.blocking).collect();
    let _ = writeln!(
        out,
        "operations invoked before that answer and not placed ({}), each as the next to take \
         effect:",
        others.len()
    );
    for &i in others.iter().take(CANDIDATES_SHOWN) {
        let _ = writeln!(
            out,
            "  {}\n    {}",
            describe(history, ops, i),
            why(ops, &ops.ops[i], stuck.state)
        );
    }
    if others.len() > CANDIDATES_SHOWN {
        let _ = writeln!(out, "  ... and {} more", others.len() - CANDIDATES_SHOWN);
    }
}

/// For each value read, written or held where the search got stuck: who wrote it, and every
/// read of it with its version (one value read under two versions was written twice). Then
/// for each version those operations report: every operation answered with it.
fn write_values(out: &mut String, history: &[Operation], ops: &KeyOps, stuck: &Stuck) {
    let mut values = BTreeSet::new();
    values.extend(stuck.state.value);
    let mut versions = BTreeSet::new();
    for &i in &stuck.candidates {
        let op = &ops.ops[i];
        if let Kind::Put { value } | Kind::Cas { value, .. } = op.kind {
            values.insert(value);
        }
        if let Outcome::Read(Some((value, _))) = op.outcome {
            values.insert(value);
        }
        versions.extend(version_named(op.outcome));
    }
    values.remove(&UNSEEN);
    if !values.is_empty() {
        let _ = writeln!(out, "values involved, their writers and their readers:");
    }
    for value in values {
        write_value(out, history, ops, value);
    }
    for version in versions {
        let named: Vec<usize> = (0..ops.ops.len())
            .filter(|&i| version_named(ops.ops[i].outcome) == Some(version))
            .collect();
        let _ = writeln!(out, "answers naming version {version}:");
        for &i in named.iter().take(CANDIDATES_SHOWN) {
            let _ = writeln!(out, "  {}", describe(history, ops, i));
        }
        if named.len() > CANDIDATES_SHOWN {
            let _ = writeln!(out, "  ... and {} more", named.len() - CANDIDATES_SHOWN);
        }
        let written = named
            .iter()
            .any(|&i| matches!(ops.ops[i].outcome, Outcome::Written(_) | Outcome::Swapped(_)));
        if !written {
            let _ = writeln!(out, "  (no answered write of this key got it)");
        }
    }
}

/// The version an answer names, if any (a mismatch on an absent key names none).
fn version_named(outcome: Outcome) -> Option<u64> {
    match outcome {
        Outcome::Read(Some((_, version)))
        | Outcome::Written(version)
        | Outcome::Swapped(version) => Some(version),
        Outcome::Mismatch(current) if current != 0 => Some(current),
        _ => None,
    }
}

fn write_value(out: &mut String, history: &[Operation], ops: &KeyOps, value: u32) {
    if value == NEVER_WRITTEN {
        let _ = writeln!(out, "  a value read that no operation of this key wrote");
        return;
    }
    let _ = writeln!(out, "  {}:", show_bytes(&ops.values[value as usize]));
    for &index in &ops.writers[value as usize] {
        if let Some(i) = ops.ops.iter().position(|op| op.index == index) {
            let how = match ops.ops[i].outcome {
                Outcome::Mismatch(_) => "not written (CAS mismatch) by",
                Outcome::Unknown => "perhaps written by",
                _ => "written by",
            };
            let _ = writeln!(out, "    {how} {}", describe(history, ops, i));
        }
    }
    let reads: Vec<usize> = (0..ops.ops.len())
        .filter(|&i| matches!(ops.ops[i].outcome, Outcome::Read(Some((v, _))) if v == value))
        .collect();
    let versions: BTreeSet<u64> =
        reads.iter().filter_map(|&i| version_named(ops.ops[i].outcome)).collect();
    for &i in reads.iter().take(CANDIDATES_SHOWN) {
        let _ = writeln!(out, "    read by {}", describe(history, ops, i));
    }
    if reads.len() > CANDIDATES_SHOWN {
        let _ = writeln!(out, "    ... and {} more reads", reads.len() - CANDIDATES_SHOWN);
    }
    if versions.len() > 1 {
        let _ = writeln!(
            out,
            "    read under {} versions {versions:?}: one write took effect more than once",
            versions.len()
        );
    }
}

/// Why `op` cannot take effect in `state` (or that it can, and nothing after it worked).
fn why(ops: &KeyOps, op: &Op, state: State) -> String {
    if op.step(state).is_some() {
        return "fits here, but no continuation from it places everything".to_string();
    }
    let held = show_state(ops, state);
    match (op.kind, op.outcome) {
        (Kind::Get, Outcome::Read(None)) => format!("read absent, but the key holds {held}"),
        (Kind::Get, Outcome::Read(Some((NEVER_WRITTEN, _)))) => {
            "read a value that no operation of this key wrote".to_string()
        }
        (Kind::Get, Outcome::Read(Some((value, version)))) if state.value == Some(value) => {
            format!("read version {version}, but the key holds {held}")
        }
        (Kind::Get, Outcome::Read(Some(_))) => format!("the key holds {held}"),
        (Kind::Put { .. }, Outcome::Written(version)) => {
            format!("got version {version}, not above the key's version {} ({held})", state.version)
        }
        (Kind::Cas { expected, .. }, Outcome::Swapped(version)) => format!(
            "swapped expecting version {expected} (getting {version}), but the key holds {held}"
        ),
        (Kind::Cas { expected, .. }, Outcome::Mismatch(current)) => format!(
            "did not swap expecting version {expected} and reported version {current}, but \
             the key holds {held}"
        ),
        (Kind::Delete, Outcome::Deleted(existed)) => {
            format!("answered existed={existed}, but the key holds {held}")
        }
        (_, Outcome::Unknown) => format!("would change nothing while the key holds {held}"),
        (kind, outcome) => unreachable!("{kind:?} answered {outcome:?}"),
    }
}

/// `#index client c: call -> answer [invoked, returned]`.
fn describe(history: &[Operation], ops: &KeyOps, i: usize) -> String {
    let op = &ops.ops[i];
    let recorded = &history[op.index];
    let value = |id: u32| match id {
        NEVER_WRITTEN => "(a value never written)".to_string(),
        id => show_bytes(&ops.values[id as usize]),
    };
    let call = match &recorded.call {
        Call::Get => "get".to_string(),
        Call::Put { value } => format!("put {}", show_bytes(value)),
        Call::Cas { expected_version, value } => {
            format!("cas expecting {expected_version} to {}", show_bytes(value))
        }
        Call::Delete => "delete".to_string(),
    };
    let answer = match op.outcome {
        Outcome::Read(None) => "absent".to_string(),
        Outcome::Read(Some((v, version))) => format!("{} at version {version}", value(v)),
        Outcome::Written(version) => format!("version {version}"),
        Outcome::Swapped(version) => format!("swapped, version {version}"),
        Outcome::Mismatch(current) => format!("mismatch, current version {current}"),
        Outcome::Deleted(true) => "existed".to_string(),
        Outcome::Deleted(false) => "did not exist".to_string(),
        Outcome::Unknown => format!("no answer (gave up at {})", show_time(recorded.returned)),
    };
    let returned = match (op.returned, op.deadline) {
        (Some(returned), _) => show_time(returned),
        (None, Some(deadline)) => format!("effect by {}", show_time(deadline)),
        (None, None) => "never".to_string(),
    };
    format!(
        "#{} client {}: {call} -> {answer}  [{}, {returned}]",
        op.index,
        recorded.client,
        show_time(op.invoked)
    )
}

fn show_state(ops: &KeyOps, state: State) -> String {
    let value = |id: u32| match id {
        UNSEEN => "a value no read returned".to_string(),
        id => show_bytes(&ops.values[id as usize]),
    };
    match state.value {
        None if state.version == 0 => "absent (never written)".to_string(),
        None => format!("absent (deleted after version {})", state.version),
        Some(id) if state.exact => format!("{} at version {}", value(id), state.version),
        Some(id) => format!(
            "{} at a version above {} (written without an answer)",
            value(id),
            state.version
        ),
    }
}

fn show_time(time: Duration) -> String {
    format!("{:.6}s", time.as_secs_f64())
}

/// Bytes as text where printable, escaped otherwise, cut at `BYTES_SHOWN`.
pub(crate) fn show_bytes(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(BYTES_SHOWN)];
    let mut text: String = shown.escape_ascii().to_string();
    if bytes.len() > BYTES_SHOWN {
        let _ = write!(text, "... ({} bytes)", bytes.len());
    }
    format!("\"{text}\"")
}
