//! The depth-first search for a linearization of one key's operations (Wing and Gong, with
//! Lowe's memoization, as in Porcupine).
//!
//! The invocation and answer events of the operations not yet linearized form a doubly linked
//! list in time order. The search walks it from its head: at an invocation it tries to let
//! that operation take effect now (its step must fit the register, and the configuration
//! reached must be new); if so the operation leaves the list and the walk starts again from
//! the head. Reaching an answer means that operation can no longer be placed: the last choice
//! is undone and the walk goes on after it. The list empties of answers when every answered
//! operation is placed: the history is linearizable (the unanswered ones left take effect
//! never, or at the end). The stack empties on an answer: it is not.
//!
//! Memoization: a configuration is (the answered operations placed, the register state, the
//! unanswered ones placed). Placing an unanswered operation only adds to what may happen
//! later, so a configuration is not explored again if one with the same answered set and
//! state, and a subset of its unanswered ones, was reached before: whatever can follow the
//! larger set can follow the smaller one (the extra unanswered operations then never take
//! effect). Answered sets are keyed by a 128-bit Zobrist hash (the xor of one random word per
//! operation), which keeps a configuration in 16 bytes; two different sets collide with
//! probability about 2^-128 per pair.
//!
//! Two more cuts keep a failed search (which must try everything) from growing exponentially
//! with the unanswered operations, which can be placed almost anywhere: answered operations
//! are tried before unanswered ones (`Pass`), an unanswered operation that would undo the
//! effect of the unanswered one placed just before it is not placed after it (`covered`), and
//! interchangeable unanswered operations are placed in invocation order only (`Class`).

use super::model::{KeyOps, Op, State};
use crate::Rng;
use std::collections::HashMap;

/// Operations of the longest linearizable prefix that a report shows.
pub(crate) const PREFIX_SHOWN: usize = 10;

/// What the search found.
pub(crate) enum Outcome {
    Linearizable {
        steps: u64,
    },
    /// Not linearizable; where the search got furthest.
    Stuck(Stuck),
    Inconclusive {
        steps: u64,
    },
}

/// The furthest point of a failed search: the most answered operations it placed.
#[derive(Clone, Debug)]
pub(crate) struct Stuck {
    /// Answered operations placed (of `answered`).
    pub(crate) placed: usize,
    pub(crate) answered: usize,
    /// The last operations placed (indexes into the key's ops), oldest first, with the state
    /// each one left.
    pub(crate) prefix_tail: Vec<(usize, State)>,
    /// The state after the prefix.
    pub(crate) state: State,
    /// The operation whose answer arrived before any continuation could place it.
    pub(crate) blocking: usize,
    /// Operations not placed that were invoked before that answer: the ones that could have
    /// taken effect next (the blocking one included).
    pub(crate) candidates: Vec<usize>,
}

const HEAD: usize = 0;

#[derive(Clone, Copy)]
enum Event {
    Head,
    Tail,
    Invoke(usize),
    Answer(usize),
    /// The deadline of an unanswered operation: past it, it never takes effect.
    Expire(usize),
}

/// The dancing-links list of events.
struct Events {
    event: Vec<Event>,
    prev: Vec<usize>,
    next: Vec<usize>,
    /// Per operation: its invocation node, and its answer (or deadline) node if any.
    invoke_node: Vec<usize>,
    answer_node: Vec<Option<usize>>,
}

impl Events {
    fn new(ops: &[Op]) -> Events {
        // (time, order at equal times, op, event): invocations go first, so touching
        // intervals count as overlapping (which is what two clocks read by two threads can
        // tell apart), and deadlines last.
        let mut timed: Vec<(std::time::Duration, u8, usize, Event)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            timed.push((op.invoked, 0, i, Event::Invoke(i)));
            if let Some(returned) = op.returned {
                timed.push((returned, 1, i, Event::Answer(i)));
            }
            if let Some(deadline) = op.deadline {
                timed.push((deadline, 2, i, Event::Expire(i)));
            }
        }
        timed.sort_unstable_by_key(|&(time, order, i, _)| (time, order, i));
        let mut event = vec![Event::Head];
        let mut invoke_node = vec![0; ops.len()];
        let mut answer_node = vec![None; ops.len()];
        for &(_, _, i, kind) in &timed {
            match kind {
                Event::Invoke(_) => invoke_node[i] = event.len(),
                _ => answer_node[i] = Some(event.len()),
            }
            event.push(kind);
        }
        event.push(Event::Tail);
        let n = event.len();
        let prev = (0..n).map(|i| i.saturating_sub(1)).collect();
        let next = (0..n).map(|i| (i + 1).min(n - 1)).collect();
        Events { event, prev, next, invoke_node, answer_node }
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.invoke_node[op]);
        if let Some(node) = self.answer_node[op] {
            self.unlink(node);
        }
    }

    /// Undoes the last `lift` (links come back in the reverse order).
    fn unlift(&mut self, op: usize) {
        if let Some(node) = self.answer_node[op] {
            self.relink(node);
        }
        self.relink(self.invoke_node[op]);
    }
}

/// The set of unanswered operations placed, as a bitset over their own numbering.
type Unanswered = Vec<u64>;

fn is_subset(small: &Unanswered, large: &Unanswered) -> bool {
    small.iter().zip(large).all(|(s, l)| s & !l == 0)
}

/// Configurations reached: (answered set hash, state) -> the unanswered sets reached with it.
#[derive(Default)]
struct Seen {
    map: HashMap<(u128, State), Vec<Unanswered>>,
}

impl Seen {
    /// Records the configuration; false if it (or one it contains) was reached before.
    fn insert(&mut self, answered: u128, state: State, unanswered: &Unanswered) -> bool {
        let sets = self.map.entry((answered, state)).or_default();
        if sets.iter().any(|set| is_subset(set, unanswered)) {
            return false;
        }
        sets.retain(|set| !is_subset(unanswered, set));
        sets.push(unanswered.clone());
        true
    }
}

struct Frame {
    op: usize,
    before: State,
    /// The pass it was placed in, which goes on when it is taken out again.
    pass: Pass,
    /// An unanswered operation past its deadline, set aside without effect: the only choice
    /// left where it was, so taking it out backtracks further.
    expired: bool,
}

/// Which operations a walk of the list tries. Each configuration first tries the answered
/// operations that may go next, then the unanswered ones: a search that places an unanswered
/// operation only when the answered ones cannot go on visits the configuration without it
/// first, which then covers (see `Seen`) every later one with it. Trying them first instead
/// makes a failed search explore the rest of the history again for each unanswered
/// operation that could have taken effect unseen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Answered,
    Unanswered,
}

/// The operations placed so far.
struct Placed {
    /// Zobrist hash of the answered ones.
    answered_hash: u128,
    /// How many answered ones.
    answered: usize,
    unanswered: Unanswered,
    /// Per class of interchangeable unanswered operations: how many are placed, which is the
    /// rank of the only one of them that may go next.
    class_next: Vec<u32>,
}

/// One key's search: its operations, their events and what it has reached.
struct Search<'a> {
    ops: &'a [Op],
    zobrist: Vec<u128>,
    /// Per operation: its bit among the unanswered ones (`usize::MAX` for answered ones).
    bit: Vec<usize>,
    events: Events,
    seen: Seen,
}

impl Search<'_> {
    fn new(ops: &[Op]) -> Search<'_> {
        let mut rng = Rng::from_seed(0x5EA5_C4EC_0FF5_E75E);
        let zobrist = ops
            .iter()
            .map(|_| u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()))
            .collect();
        let mut bit = vec![usize::MAX; ops.len()];
        let mut unanswered = 0;
        for (i, op) in ops.iter().enumerate() {
            if !op.known() {
                bit[i] = unanswered;
                unanswered += 1;
            }
        }
        Search { ops, zobrist, bit, events: Events::new(ops), seen: Seen::default() }
    }

    /// Whether operation `i` may take effect in `state` with `placed` before it, as the next
    /// after `stack`: its step fits, it is its class's next, it is not `covered`, and it
    /// leads to a configuration not reached before. Returns the state it leaves.
    fn try_place(
        &mut self,
        i: usize,
        state: State,
        placed: &Placed,
        stack: &[Frame],
    ) -> Option<State> {
        let op = &self.ops[i];
        if let Some((class, rank)) = op.class {
            if placed.class_next[class as usize] != rank {
                return None;
            }
        }
        let next = op.step(state)?;
        if !op.known() && self.covered(i, next, stack) {
            return None;
        }
        let fresh = if op.known() {
            self.seen.insert(placed.answered_hash ^ self.zobrist[i], next, &placed.unanswered)
        } else {
            let mut with = placed.unanswered.clone();
            with[self.bit[i] / 64] |= 1 << (self.bit[i] % 64);
            self.seen.insert(placed.answered_hash, next, &with)
        };
        fresh.then_some(next)
    }

    /// Whether unanswered operation `i`, leaving `next` when placed right after the unanswered
    /// operation on top of `stack`, would leave the same placed instead of that one. Then
    /// the configuration it reaches is covered (see `Seen`) by that sibling's, which has one
    /// unanswered operation fewer and is explored from the same parent (`i` may go next there
    /// too: an unanswered operation answers nothing, so it frees no operation); or, when `i`
    /// may only follow that one (one `Class`), by the current configuration, whose state it
    /// then keeps.
    fn covered(&self, i: usize, next: State, stack: &[Frame]) -> bool {
        let Some(top) = stack.last() else { return false };
        !top.expired && !self.ops[top.op].known() && self.ops[i].step(top.before) == Some(next)
    }

    /// Adds operation `i` to `placed`, or takes it out again.
    fn toggle(&self, i: usize, placed: &mut Placed, adding: bool) {
        let op = &self.ops[i];
        if op.known() {
            placed.answered_hash ^= self.zobrist[i];
            if adding {
                placed.answered += 1;
            } else {
                placed.answered -= 1;
            }
            return;
        }
        placed.unanswered[self.bit[i] / 64] ^= 1 << (self.bit[i] % 64);
        if let Some((class, _)) = op.class {
            if adding {
                placed.class_next[class as usize] += 1;
            } else {
                placed.class_next[class as usize] -= 1;
            }
        }
    }
}

/// Searches for a linearization of one key's operations, giving up after `steps_max` steps.
pub(crate) fn search(key: &KeyOps, steps_max: u64) -> Outcome {
    let ops = &key.ops[..];
    let mut search = Search::new(ops);
    let unanswered_count = ops.iter().filter(|op| !op.known()).count();
    let answered = ops.len() - unanswered_count;
    let mut placed = Placed {
        answered_hash: 0,
        answered: 0,
        unanswered: vec![0; unanswered_count.div_ceil(64)],
        class_next: vec![0; key.classes],
    };
    let mut stack: Vec<Frame> = Vec::new();
    let mut state = State::INITIAL;
    let mut stuck: Option<Stuck> = None;
    let mut cursor = search.events.next[HEAD];
    let mut pass = Pass::Answered;
    let mut steps = 0u64;
    while placed.answered < answered {
        steps += 1;
        if steps > steps_max {
            return Outcome::Inconclusive { steps };
        }
        let event = search.events.event[cursor];
        match event {
            Event::Invoke(i) if ops[i].known() != (pass == Pass::Answered) => {
                cursor = search.events.next[cursor];
                continue;
            }
            Event::Invoke(i) => {
                match search.try_place(i, state, &placed, &stack) {
                    Some(next) => {
                        stack.push(Frame { op: i, before: state, pass, expired: false });
                        state = next;
                        search.toggle(i, &mut placed, true);
                        search.events.lift(i);
                        cursor = search.events.next[HEAD];
                        pass = Pass::Answered;
                    }
                    None => cursor = search.events.next[cursor],
                }
                continue;
            }
            Event::Answer(_) | Event::Expire(_)
                if pass == Pass::Answered && unanswered_count > 0 =>
            {
                cursor = search.events.next[HEAD];
                pass = Pass::Unanswered;
                continue;
            }
            Event::Expire(i) => {
                // Every operation that could go before its deadline was tried: it never
                // takes effect. (No memo here: the configuration before, which is on the
                // stack, covers the one after, and has no other way on.)
                stack.push(Frame { op: i, before: state, pass, expired: true });
                search.toggle(i, &mut placed, true);
                search.events.lift(i);
                cursor = search.events.next[HEAD];
                pass = Pass::Answered;
                continue;
            }
            Event::Answer(i) => {
                let further = match &stuck {
                    None => true,
                    Some(s) => placed.answered > s.placed,
                };
                if further {
                    let here = stuck_here(&search.events, &stack, state, i, placed.answered);
                    stuck = Some(Stuck { answered, ..here });
                }
            }
            Event::Head | Event::Tail => {
                unreachable!("an answer is left in the list while answered operations are")
            }
        }
        // A dead end: undo the last choice and go on after it.
        loop {
            let Some(frame) = stack.pop() else {
                return Outcome::Stuck(stuck.expect("a dead end at an answer was recorded"));
            };
            search.events.unlift(frame.op);
            search.toggle(frame.op, &mut placed, false);
            state = frame.before;
            pass = frame.pass;
            cursor = search.events.next[search.events.invoke_node[frame.op]];
            if !frame.expired {
                break;
            }
        }
    }
    Outcome::Linearizable { steps }
}

fn stuck_here(
    events: &Events,
    stack: &[Frame],
    state: State,
    blocking: usize,
    placed: usize,
) -> Stuck {
    // The prefix tail: each frame's "after" state is the next frame's "before".
    let from = stack.len().saturating_sub(PREFIX_SHOWN);
    let prefix_tail = (from..stack.len())
        .map(|k| (stack[k].op, stack.get(k + 1).map_or(state, |next| next.before)))
        .collect();
    let mut candidates = Vec::new();
    let mut node = events.next[HEAD];
    let stop = events.answer_node[blocking].expect("blocking op is answered");
    while node != stop {
        if let Event::Invoke(i) = events.event[node] {
            candidates.push(i);
        }
        node = events.next[node];
    }
    debug_assert!(candidates.contains(&blocking));
    Stuck { placed, answered: 0, prefix_tail, state, blocking, candidates }
}
