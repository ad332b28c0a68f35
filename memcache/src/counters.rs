//! The door's counters: each core counts in a plain struct and publishes it once per loop
//! iteration into its own row of atomics (one writer per row, no lock); `stats` sums the rows.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// One core's door counters (memcached's names where memcached has one).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            /// The counters' names, in the order of `to_array`.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];

            /// Calls `f` with each counter, in the order of `NAMES`.
            pub fn for_each(&self, mut f: impl FnMut(u64)) {
                $(f(self.$name);)*
            }

            fn to_array(self) -> [u64; Counters::NAMES.len()] {
                [$(self.$name),*]
            }

            fn from_array(a: [u64; Counters::NAMES.len()]) -> Counters {
                let mut i = 0;
                $(let $name = a[i]; i += 1;)*
                let _ = i;
                Counters { $($name),* }
            }
        }
    };
}

counters! {
    /// Connections open now.
    curr_connections,
    /// Connections accepted.
    total_connections,
    /// Connections refused (`connections_max` reached).
    rejected_connections,
    /// Keys looked up by get/gets/gat/gats.
    cmd_get,
    /// Storage commands.
    cmd_set,
    /// touch, gat, gats (per key).
    cmd_touch,
    /// flush_all.
    cmd_flush,
    /// Keys found.
    get_hits,
    /// Keys not found.
    get_misses,
    /// memcached's `delete_hits`.
    delete_hits,
    /// memcached's `delete_misses`.
    delete_misses,
    /// memcached's `incr_hits`.
    incr_hits,
    /// memcached's `incr_misses`.
    incr_misses,
    /// memcached's `decr_hits`.
    decr_hits,
    /// memcached's `decr_misses`.
    decr_misses,
    /// memcached's `cas_hits`.
    cas_hits,
    /// memcached's `cas_misses`.
    cas_misses,
    /// cas with a token that is not the current version.
    cas_badval,
    /// memcached's `touch_hits`.
    touch_hits,
    /// memcached's `touch_misses`.
    touch_misses,
    /// Values stored.
    total_items,
    /// Bytes received (TCP and UDP payloads).
    bytes_read,
    /// Bytes sent.
    bytes_written,
    /// Keys handed to the core that owns them.
    handed_over,
    /// Handed-over keys answered by another core for this one.
    handed_back,
    /// UDP replies refused by the amplification rule (`SERVER_ERROR` sent instead).
    udp_refused,
    /// UDP datagrams dropped: a short frame header or a request in several datagrams.
    udp_malformed,
    /// Commands refused because a ring to another core was full (`SERVER_ERROR busy`).
    ring_full,
    /// Replies that waited for a group commit.
    held_for_commit,
}

/// Every core's row, shared by the node's doors.
#[derive(Debug)]
pub struct DoorStats {
    rows: Vec<[AtomicU64; Counters::NAMES.len()]>,
    /// When the node started (Unix seconds), for `uptime`.
    pub started_s: u64,
}

impl DoorStats {
    /// Rows for `cores` cores.
    pub fn new(cores: u32, started_s: u64) -> DoorStats {
        let rows = (0..cores).map(|_| std::array::from_fn(|_| AtomicU64::new(0))).collect();
        DoorStats { rows, started_s }
    }

    /// Publishes one core's counters (only that core's loop calls this for its row).
    pub fn publish(&self, core: u32, counters: &Counters) {
        for (slot, value) in self.rows[core as usize].iter().zip(counters.to_array()) {
            slot.store(value, Relaxed);
        }
    }

    /// Cores counted.
    pub fn cores(&self) -> u32 {
        self.rows.len() as u32
    }

    /// The sum over all cores.
    pub fn total(&self) -> Counters {
        let mut sum = [0u64; Counters::NAMES.len()];
        for row in &self.rows {
            for (total, value) in sum.iter_mut().zip(row) {
                *total += value.load(Relaxed);
            }
        }
        Counters::from_array(sum)
    }
}
