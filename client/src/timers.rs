//! Deadlines of the requests in flight, earliest first.

use crate::request::RequestId;
use std::collections::BTreeSet;
use std::time::Instant;

/// One deadline per request; the owner keeps each request's current deadline so it can move it.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    deadlines: BTreeSet<(Instant, RequestId)>,
}

impl Timers {
    /// Moves `id`'s deadline from `old` (if it had one) to `new`.
    pub(crate) fn set(&mut self, id: RequestId, old: Option<Instant>, new: Instant) {
        if let Some(old) = old {
            self.deadlines.remove(&(old, id));
        }
        self.deadlines.insert((new, id));
    }

    /// Removes `id`'s deadline `at`.
    pub(crate) fn cancel(&mut self, id: RequestId, at: Instant) {
        self.deadlines.remove(&(at, id));
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// Removes and returns a request whose deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<RequestId> {
        let &(at, id) = self.deadlines.first()?;
        if at > now {
            return None;
        }
        self.deadlines.pop_first();
        Some(id)
    }
}
