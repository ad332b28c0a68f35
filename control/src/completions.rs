//! Completion records: how a resent write is answered without being applied twice (RIFL).

use proto::Status;
use std::collections::{HashMap, VecDeque};

/// A request's identity: (client id, tracking id).
pub(crate) type RequestId = (u64, u64);

/// What a write ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) status: Status,
    pub(crate) version: u64,
}

/// Records of recent writes, oldest first. Bounded and allocated at start-up: a record is
/// forgotten only after `ttl_ns`, and when the table is full of younger ones new writes wait.
#[derive(Debug)]
pub(crate) struct Completions {
    records: HashMap<RequestId, Record>,
    order: VecDeque<(u64, RequestId)>,
    records_max: usize,
    ttl_ns: u64,
}

impl Completions {
    pub(crate) fn new(records_max: usize, ttl_ns: u64) -> Completions {
        Completions {
            records: HashMap::with_capacity(records_max),
            order: VecDeque::with_capacity(records_max),
            records_max,
            ttl_ns,
        }
    }

    pub(crate) fn get(&self, id: RequestId) -> Option<Record> {
        self.records.get(&id).copied()
    }

    /// Forgets records older than the TTL; returns whether one more fits.
    pub(crate) fn has_room(&mut self, now_ns: u64) -> bool {
        while let Some(&(at, id)) = self.order.front() {
            if now_ns.saturating_sub(at) < self.ttl_ns {
                break;
            }
            self.order.pop_front();
            self.records.remove(&id);
        }
        self.records.len() < self.records_max
    }

    /// Records a completed write. The caller checked `has_room` and `get` first.
    pub(crate) fn insert(&mut self, now_ns: u64, id: RequestId, record: Record) {
        assert!(self.records.len() < self.records_max, "completion table over its bound");
        let previous = self.records.insert(id, record);
        assert!(previous.is_none(), "a write completed twice: {id:?}");
        self.order.push_back((now_ns, id));
        debug_assert_eq!(self.records.len(), self.order.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_live_for_the_ttl_and_bound_the_table() {
        let mut c = Completions::new(2, 100);
        let ok = Record { status: Status::Ok, version: 1 };
        assert!(c.has_room(0));
        c.insert(0, (1, 1), ok);
        c.insert(10, (1, 2), ok);
        assert!(!c.has_room(99), "full of young records");
        assert_eq!(c.get((1, 1)), Some(ok));
        assert!(c.has_room(100), "the oldest expired");
        assert_eq!(c.get((1, 1)), None);
        assert_eq!(c.get((1, 2)), Some(ok));
        assert_eq!(c.len(), 1);
    }
}
