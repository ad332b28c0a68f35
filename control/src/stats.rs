//! Counters each core publishes for the rest of the node (STATS replies, `cradle status`).
//! A core counts in plain integers and copies them into its atomic slot once per batch.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One core's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreCounters {
    /// Endpoints hosted.
    pub endpoints: u64,
    /// Live keys over all endpoints.
    pub keys: u64,
    /// Valid request messages handled.
    pub requests: u64,
    /// Datagrams dropped as malformed (any message in them malformed).
    pub dropped_malformed: u64,
    /// Writes answered from a completion record instead of being applied again.
    pub duplicates_answered: u64,
    /// Replies replaced by RETRY_WITH_TOKEN (amplification limit).
    pub retry_token: u64,
    /// Requests answered BUSY.
    pub busy: u64,
    /// Requests answered WRONG_OWNER.
    pub wrong_owner: u64,
    /// Reply datagrams handed to the port.
    pub reply_datagrams: u64,
    /// Fragmented writes dropped after their idle timeout.
    pub reassemblies_expired: u64,
    /// Completion records held now.
    pub completion_records: u64,
    /// Fragmented writes being reassembled now.
    pub reassemblies_active: u64,
}

const FIELDS: usize = 12;

impl CoreCounters {
    fn to_array(self) -> [u64; FIELDS] {
        [
            self.endpoints,
            self.keys,
            self.requests,
            self.dropped_malformed,
            self.duplicates_answered,
            self.retry_token,
            self.busy,
            self.wrong_owner,
            self.reply_datagrams,
            self.reassemblies_expired,
            self.completion_records,
            self.reassemblies_active,
        ]
    }

    fn from_array(a: [u64; FIELDS]) -> CoreCounters {
        CoreCounters {
            endpoints: a[0],
            keys: a[1],
            requests: a[2],
            dropped_malformed: a[3],
            duplicates_answered: a[4],
            retry_token: a[5],
            busy: a[6],
            wrong_owner: a[7],
            reply_datagrams: a[8],
            reassemblies_expired: a[9],
            completion_records: a[10],
            reassemblies_active: a[11],
        }
    }

    fn add(&mut self, other: &CoreCounters) {
        let mut sum = self.to_array();
        for (s, o) in sum.iter_mut().zip(other.to_array()) {
            *s += o;
        }
        *self = CoreCounters::from_array(sum);
    }
}

/// The node's counters: one slot per core.
#[derive(Debug)]
pub struct NodeStats {
    slots: Vec<[AtomicU64; FIELDS]>,
}

/// A copy of every core's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Per core, in core order.
    pub cores: Vec<CoreCounters>,
}

impl NodeStats {
    /// Zeroed slots for `cores` cores.
    pub fn new(cores: u32) -> NodeStats {
        NodeStats {
            slots: (0..cores).map(|_| Default::default()).collect(),
        }
    }

    /// Core `core` publishes its counters.
    pub fn publish(&self, core: u32, counters: &CoreCounters) {
        for (slot, value) in self.slots[core as usize].iter().zip(counters.to_array()) {
            slot.store(value, Relaxed);
        }
    }

    /// Reads every slot.
    pub fn snapshot(&self) -> StatsSnapshot {
        let cores = self
            .slots
            .iter()
            .map(|slot| CoreCounters::from_array(std::array::from_fn(|i| slot[i].load(Relaxed))))
            .collect();
        StatsSnapshot { cores }
    }
}

impl StatsSnapshot {
    /// Sum over cores.
    pub fn total(&self) -> CoreCounters {
        let mut total = CoreCounters::default();
        for c in &self.cores {
            total.add(c);
        }
        total
    }

    /// The STATS reply: node totals as one JSON object.
    pub fn to_json(&self) -> String {
        let t = self.total();
        format!(
            concat!(
                "{{\"cores\":{},\"endpoints\":{},\"keys\":{},\"requests\":{},",
                "\"dropped_malformed\":{},\"duplicates_answered\":{},\"retry_token\":{},",
                "\"busy\":{},\"wrong_owner\":{},\"reply_datagrams\":{},",
                "\"reassemblies_expired\":{},\"completion_records\":{},",
                "\"reassemblies_active\":{}}}"
            ),
            self.cores.len(),
            t.endpoints,
            t.keys,
            t.requests,
            t.dropped_malformed,
            t.duplicates_answered,
            t.retry_token,
            t.busy,
            t.wrong_owner,
            t.reply_datagrams,
            t.reassemblies_expired,
            t.completion_records,
            t.reassemblies_active
        )
    }
}
