//! The sequential specification: one versioned register, its state and its steps.

use super::{Answer, Call, Operation};
use std::collections::HashMap;
use std::time::Duration;

/// The id of a value read that no operation of the key wrote.
pub(crate) const NEVER_WRITTEN: u32 = u32::MAX;

/// The id that stands for every value written without an answer and never read: no read can
/// tell them apart, so one id lets their states meet in the memo.
pub(crate) const UNSEEN: u32 = u32::MAX - 1;

/// Unanswered operations that no history can tell apart (same call, and no read returned
/// the value they write) form a class: any linearization that places some of them can place,
/// at the same points, the earliest invoked ones instead, in invocation order. The search
/// places each class in that order only. Classes are numbered per key.
pub(crate) type Class = u32;

/// One key's register between two operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct State {
    /// The value held (an id given by `KeyOps`), `None` when absent.
    pub(crate) value: Option<u32>,
    /// The highest version the key is known to have had. With `exact`, the version of the
    /// value held; otherwise a strict lower bound of it (present: the value was written by an
    /// operation without an answer) or of the next write's (absent: a delete takes a version
    /// no one saw).
    pub(crate) version: u64,
    /// `version` is the held value's own version (never set when absent).
    pub(crate) exact: bool,
}

impl State {
    /// Before any operation: absent, no version.
    pub(crate) const INITIAL: State = State { value: None, version: 0, exact: false };

    /// Whether a CAS expecting `expected` finds it: absent keys have version 0; a value of
    /// unknown version may have any version above the bound.
    fn matches(self, expected: u64) -> bool {
        match self.value {
            None => expected == 0,
            Some(_) if self.exact => expected == self.version,
            Some(_) => expected > self.version,
        }
    }

    fn holding(value: u32, version: u64, exact: bool) -> State {
        State { value: Some(value), version, exact }
    }

    fn absent(self) -> State {
        State { value: None, version: self.version, exact: false }
    }
}

/// A call with its written value as an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Get,
    Put { value: u32 },
    Cas { expected: u64, value: u32 },
    Delete,
}

/// An answer with its read value as an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Read(Option<(u32, u64)>),
    Written(u64),
    Swapped(u64),
    Mismatch(u64),
    Deleted(bool),
    Unknown,
}

/// One operation of a key, ready for the search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op {
    /// Its index in the whole history (how reports name it).
    pub(crate) index: usize,
    pub(crate) kind: Kind,
    pub(crate) outcome: Outcome,
    pub(crate) invoked: Duration,
    /// `None`: no answer, it may take effect at any instant after `invoked` (until
    /// `deadline`, if any).
    pub(crate) returned: Option<Duration>,
    /// Unanswered operations with a bounded effect window: the last instant it may take
    /// effect at.
    pub(crate) deadline: Option<Duration>,
    /// Its class of interchangeable unanswered operations and its rank in it.
    pub(crate) class: Option<(Class, u32)>,
}

impl Op {
    pub(crate) fn known(&self) -> bool {
        self.outcome != Outcome::Unknown
    }

    /// The register after this operation takes effect in `state`, or `None` when its answer
    /// contradicts `state`. An unanswered write that would change nothing (a CAS that would
    /// not swap, a DELETE of an absent key) is refused too: taking effect that way is the same
    /// as never taking effect, which the search allows anyway, and refusing it keeps the
    /// search from trying it at every point.
    pub(crate) fn step(&self, state: State) -> Option<State> {
        let present = state.value.is_some();
        match (self.kind, self.outcome) {
            (Kind::Get, Outcome::Read(None)) => (!present).then_some(state),
            (Kind::Get, Outcome::Read(Some((value, version)))) => {
                let version_fits =
                    if state.exact { version == state.version } else { version > state.version };
                (state.value == Some(value) && version_fits)
                    .then(|| State::holding(value, version, true))
            }
            (Kind::Put { value }, Outcome::Written(version)) => {
                (version > state.version).then(|| State::holding(value, version, true))
            }
            (Kind::Put { value }, Outcome::Unknown) => {
                Some(State::holding(value, state.version, false))
            }
            (Kind::Cas { expected, value }, Outcome::Swapped(version)) => (state.matches(expected)
                && version > state.version.max(expected))
            .then(|| State::holding(value, version, true)),
            (Kind::Cas { expected, .. }, Outcome::Mismatch(current)) => match state.value {
                None => (current == 0 && expected != 0).then_some(state),
                Some(_) if state.exact => {
                    (current == state.version && expected != current).then_some(state)
                }
                Some(held) => (current > state.version && expected != current)
                    .then(|| State::holding(held, current, true)),
            },
            (Kind::Cas { expected, value }, Outcome::Unknown) => state
                .matches(expected)
                .then(|| State::holding(value, state.version.max(expected), false)),
            (Kind::Delete, Outcome::Deleted(existed)) => {
                (existed == present).then(|| state.absent())
            }
            (Kind::Delete, Outcome::Unknown) => present.then(|| state.absent()),
            (kind, outcome) => unreachable!("{kind:?} answered {outcome:?}: checked before"),
        }
    }
}

/// One key's operations in the search's form, with their values as ids.
pub(crate) struct KeyOps {
    pub(crate) ops: Vec<Op>,
    /// The bytes of each value id.
    pub(crate) values: Vec<Vec<u8>>,
    /// For each value id, the operations that write it.
    pub(crate) writers: Vec<Vec<usize>>,
    /// Unanswered GETs, left out.
    pub(crate) dropped_reads: usize,
    /// Classes of interchangeable unanswered operations (see `Class`).
    pub(crate) classes: usize,
}

impl KeyOps {
    /// The operations `indexes` of `history` (all of one key, answers fitting calls);
    /// unanswered ones may take effect until `window` after the client gave up (`None`:
    /// forever).
    pub(crate) fn new(
        history: &[Operation],
        indexes: &[usize],
        window: Option<Duration>,
    ) -> KeyOps {
        let mut key_ops = KeyOps {
            ops: Vec::new(),
            values: Vec::new(),
            writers: Vec::new(),
            dropped_reads: 0,
            classes: 0,
        };
        let mut ids: HashMap<&[u8], u32> = HashMap::new();
        for &index in indexes {
            let op = &history[index];
            let (Call::Put { value } | Call::Cas { value, .. }) = &op.call else { continue };
            let next = ids.len() as u32;
            let id = *ids.entry(value).or_insert(next);
            if id == next {
                key_ops.values.push(value.clone());
                key_ops.writers.push(Vec::new());
            }
            key_ops.writers[id as usize].push(index);
        }
        let id_of = |value: &[u8]| ids.get(value).copied().unwrap_or(NEVER_WRITTEN);
        for &index in indexes {
            let op = &history[index];
            if op.call == Call::Get && op.answer == Answer::Unknown {
                key_ops.dropped_reads += 1;
                continue;
            }
            let kind = match &op.call {
                Call::Get => Kind::Get,
                Call::Put { value } => Kind::Put { value: id_of(value) },
                Call::Cas { expected_version, value } => {
                    Kind::Cas { expected: *expected_version, value: id_of(value) }
                }
                Call::Delete => Kind::Delete,
            };
            let outcome = match &op.answer {
                Answer::Read(read) => {
                    Outcome::Read(read.as_ref().map(|(value, version)| (id_of(value), *version)))
                }
                Answer::Written { version } => Outcome::Written(*version),
                Answer::Swapped { version } => Outcome::Swapped(*version),
                Answer::Mismatch { current_version } => Outcome::Mismatch(*current_version),
                Answer::Deleted { existed } => Outcome::Deleted(*existed),
                Answer::Unknown => Outcome::Unknown,
            };
            let known = outcome != Outcome::Unknown;
            let returned = known.then_some(op.returned);
            let deadline = window.filter(|_| !known).map(|window| op.returned + window);
            let invoked = op.invoked;
            key_ops.ops.push(Op { index, kind, outcome, invoked, returned, deadline, class: None });
        }
        key_ops.merge_unseen();
        if window.is_none() {
            // With deadlines, interchangeable operations differ in how long they may wait.
            key_ops.rank_classes();
        }
        key_ops
    }

    /// Gives the values of unanswered writes that no read returned the one id `UNSEEN`.
    fn merge_unseen(&mut self) {
        let mut read = vec![false; self.values.len()];
        for op in &self.ops {
            if let Outcome::Read(Some((value, _))) = op.outcome {
                if value != NEVER_WRITTEN {
                    read[value as usize] = true;
                }
            }
        }
        for op in self.ops.iter_mut().filter(|op| op.outcome == Outcome::Unknown) {
            match &mut op.kind {
                Kind::Put { value } | Kind::Cas { value, .. } if !read[*value as usize] => {
                    *value = UNSEEN
                }
                _ => {}
            }
        }
    }

    /// Numbers the classes of interchangeable unanswered operations and ranks each member
    /// by invocation.
    fn rank_classes(&mut self) {
        let mut members: HashMap<Kind, Vec<usize>> = HashMap::new();
        for (i, op) in self.ops.iter().enumerate() {
            let interchangeable = match op.kind {
                Kind::Put { value } | Kind::Cas { value, .. } => value == UNSEEN,
                Kind::Delete => true,
                Kind::Get => false,
            };
            if op.outcome == Outcome::Unknown && interchangeable {
                members.entry(op.kind).or_default().push(i);
            }
        }
        let mut classes: Vec<Vec<usize>> = members.into_values().collect();
        classes.sort();
        self.classes = classes.len();
        for (class, mut members) in classes.into_iter().enumerate() {
            members.sort_by_key(|&i| (self.ops[i].invoked, self.ops[i].index));
            for (rank, &i) in members.iter().enumerate() {
                self.ops[i].class = Some((class as Class, rank as u32));
            }
        }
    }
}
