//! A linearizability checker for histories of a key-value store whose keys are versioned
//! registers: GET, PUT, CAS on a version, DELETE.
//!
//! A history is what clients saw: each operation's call, its answer, and when it was invoked
//! and when its answer arrived (times since one common start). The history is linearizable if
//! every operation can be given one instant between its invocation and its answer at which it
//! took effect, such that the answers are those of a single register per key taking the
//! operations one at a time in that order. Keys are independent, so the history is checked key
//! by key (P-compositionality).
//!
//! An operation without an answer (a timeout, a transport error, a refusal that does not say
//! whether the write happened) may have taken effect at any instant after its invocation, even
//! long after the client gave up, or never: its answer time counts as infinite and it may take
//! effect with whatever result fits. A GET without an answer tells nothing and is dropped.
//! `Options::unanswered_effect_max` bounds how long after the client gave up it may still take
//! effect, for systems that promise such a bound (a client that stops resending, a network
//! that delivers or drops within some time); it makes a failed search of a long history with
//! many unanswered operations far cheaper.
//!
//! Versions are assigned by the server per endpoint (several keys may share one), so a key's
//! versions increase but skip numbers. What the model asserts, per key:
//! - a read returns the value of the latest write that took effect, with that write's version,
//!   or "absent" after a delete (or before any write);
//! - a PUT or a swapped CAS gets a version strictly greater than every version the key had
//!   before (a delete takes a version too, so this holds across deletes);
//! - a CAS swaps if and only if its expected version is the key's current one (0: absent), and
//!   a mismatch reports the current version (0 when absent);
//! - a DELETE reports whether the key existed.
//!
//! With every written value distinct (a client id and a sequence number, say), a write applied
//! twice cannot be explained: the value reappears after a newer write replaced it, or is read
//! under two versions. The search is Wing and Gong's, as improved by Lowe and Porcupine: a
//! depth-first search over which pending operation takes effect next, over the invocation and
//! answer events in time order, memoizing every (set of operations taken effect, register
//! state) it reached, so that a configuration is explored once. See `search.rs`.

mod model;
mod report;
mod search;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Search steps one key may take before the check gives up (`Failure::Inconclusive`). A
/// crash-test history of tens of thousands of operations per key takes a few times its length.
pub const STEPS_MAX: u64 = 200_000_000;

/// What a client asked of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Read the value and its version.
    Get,
    /// Write `value` unconditionally.
    Put {
        /// The value written; make it unique in the history.
        value: Vec<u8>,
    },
    /// Write `value` if the key's version is `expected_version` (0: only if absent).
    Cas {
        /// The version the key must have.
        expected_version: u64,
        /// The value written on a swap; make it unique in the history.
        value: Vec<u8>,
    },
    /// Remove the key.
    Delete,
}

/// What the client got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A GET's answer: the value and its version, or `None` when the key is absent.
    Read(Option<(Vec<u8>, u64)>),
    /// A PUT's answer: the version the write got.
    Written {
        /// The new version.
        version: u64,
    },
    /// A CAS that swapped, and the version the write got.
    Swapped {
        /// The new version.
        version: u64,
    },
    /// A CAS that did not swap: the key's version (0 when absent).
    Mismatch {
        /// The key's version when the CAS took effect.
        current_version: u64,
    },
    /// A DELETE's answer: whether the key existed.
    Deleted {
        /// The key existed and was removed.
        existed: bool,
    },
    /// No answer that tells the outcome: the operation may have taken effect, at any instant
    /// after its invocation, or never.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Who issued it (shown in reports; the check does not need it).
    pub client: u64,
    /// The key it is about.
    pub key: Vec<u8>,
    /// What was asked.
    pub call: Call,
    /// What came back.
    pub answer: Answer,
    /// When it was invoked, since the history's start.
    pub invoked: Duration,
    /// When its answer arrived (for `Answer::Unknown`: when the client gave up, shown in
    /// reports only, as the operation may take effect after it). Not before `invoked`.
    pub returned: Duration,
}

impl Operation {
    /// Whether the answer is one the call can get (a GET is answered by `Read`, a PUT by
    /// `Written`, ...; `Unknown` fits every call).
    pub fn answer_fits_call(&self) -> bool {
        matches!(
            (&self.call, &self.answer),
            (_, Answer::Unknown)
                | (Call::Get, Answer::Read(_))
                | (Call::Put { .. }, Answer::Written { .. })
                | (Call::Cas { .. }, Answer::Swapped { .. } | Answer::Mismatch { .. })
                | (Call::Delete, Answer::Deleted { .. })
        )
    }
}

/// What a successful check covered, to show that it checked something.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Keys checked.
    pub keys: usize,
    /// Operations checked (unanswered GETs excluded).
    pub operations: usize,
    /// Writes without an answer, counted as possibly applied.
    pub unknown_writes: usize,
    /// GETs without an answer, dropped.
    pub unknown_reads: usize,
    /// Search steps over all keys.
    pub steps: u64,
}

/// Why a history was not shown linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No order explains one key's operations.
    NotLinearizable(Violation),
    /// The search of one key took more than its step budget without a verdict.
    Inconclusive {
        /// The key.
        key: Vec<u8>,
        /// Steps taken.
        steps: u64,
    },
    /// An operation that cannot be part of a history: a bug of whoever recorded it.
    Malformed {
        /// Its index in the history.
        index: usize,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// A key whose operations no order explains, and where the search got stuck.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: Vec<u8>,
    /// The longest prefix the search could linearize, the operations it could not place
    /// after it, and why, with their times: several lines, for a person to read.
    pub explanation: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotLinearizable(violation) => f.write_str(&violation.explanation),
            Failure::Inconclusive { key, steps } => write!(
                f,
                "key {}: no verdict after {steps} search steps (raise the step budget)",
                report::show_bytes(key)
            ),
            Failure::Malformed { index, why } => write!(f, "operation #{index}: {why}"),
        }
    }
}

impl std::error::Error for Failure {}

/// How a check runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Search steps one key may take before the check gives up (`Failure::Inconclusive`).
    pub steps_max: u64,
    /// How long after the client gave up (`Operation::returned`) an unanswered operation may
    /// still take effect; `None`: forever (the default, and the most conservative).
    pub unanswered_effect_max: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options { steps_max: STEPS_MAX, unanswered_effect_max: None }
    }
}

/// Checks `history` key by key with the default `Options`.
pub fn check(history: &[Operation]) -> Result<Summary, Failure> {
    check_with(history, Options::default())
}

/// Checks `history` key by key. The first key (in byte order) that fails is reported.
pub fn check_with(history: &[Operation], options: Options) -> Result<Summary, Failure> {
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        if !op.answer_fits_call() {
            return Err(Failure::Malformed { index, why: "the answer does not fit the call" });
        }
        if op.returned < op.invoked {
            return Err(Failure::Malformed { index, why: "answered before it was invoked" });
        }
        by_key.entry(&op.key).or_default().push(index);
    }
    let mut summary = Summary { keys: by_key.len(), ..Summary::default() };
    for (key, indexes) in by_key {
        let ops = model::KeyOps::new(history, &indexes, options.unanswered_effect_max);
        summary.operations += ops.ops.len();
        summary.unknown_writes += ops.ops.iter().filter(|op| !op.known()).count();
        summary.unknown_reads += ops.dropped_reads;
        match search::search(&ops, options.steps_max) {
            search::Outcome::Linearizable { steps } => summary.steps += steps,
            search::Outcome::Inconclusive { steps } => {
                return Err(Failure::Inconclusive { key: key.to_vec(), steps })
            }
            search::Outcome::Stuck(point) => {
                let explanation = report::explain(history, key, &ops, &point);
                return Err(Failure::NotLinearizable(Violation { key: key.to_vec(), explanation }));
            }
        }
    }
    Ok(summary)
}
