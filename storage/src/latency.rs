//! Log-bucket latency histograms: bucket *k* counts durations of at most 1 µs × 2^k (1 µs to
//! 8.4 s), one more bucket the rest. The scheme of every `_seconds` histogram cradle
//! publishes (per-operation latency in `control`, fdatasync here), and the process-wide
//! histogram of this crate's `fdatasync` calls (`sync_latency`), which only the thread that
//! syncs writes to, with relaxed atomic adds: one per sync, never one per request.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bounded buckets; index `LATENCY_BUCKETS` is the overflow bucket.
pub const LATENCY_BUCKETS: usize = 24;

/// The upper bound of bucket `k`, in nanoseconds.
pub fn bucket_bound_ns(k: usize) -> u64 {
    1_000 << k
}

/// The bucket of a duration of `ns` nanoseconds: the first whose bound is at least `ns`.
pub fn bucket_of(ns: u64) -> usize {
    let micros = ns.div_ceil(1_000);
    let k = if micros <= 1 { 0 } else { (64 - (micros - 1).leading_zeros()) as usize };
    k.min(LATENCY_BUCKETS)
}

/// Counts per bucket (not cumulative) and the sum of the durations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogHistogram {
    /// Per bucket; the last is above every bound.
    pub counts: [u64; LATENCY_BUCKETS + 1],
    /// Sum of the durations counted, ns.
    pub sum_ns: u64,
}

impl LogHistogram {
    /// Counts `events` that took `ns` each.
    pub fn record(&mut self, events: u64, ns: u64) {
        self.counts[bucket_of(ns)] += events;
        self.sum_ns += events * ns;
    }

    /// Events counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

struct Shared {
    counts: [AtomicU64; LATENCY_BUCKETS + 1],
    sum_ns: AtomicU64,
}

static SYNCS: Shared = Shared {
    counts: [const { AtomicU64::new(0) }; LATENCY_BUCKETS + 1],
    sum_ns: AtomicU64::new(0),
};

/// Counts one `fdatasync` of this process that took `ns`.
pub(crate) fn record_sync(ns: u64) {
    SYNCS.counts[bucket_of(ns)].fetch_add(1, Relaxed);
    SYNCS.sum_ns.fetch_add(ns, Relaxed);
}

/// Every `fdatasync` of an endpoint log or blob file this process made, by duration.
pub fn sync_latency() -> LogHistogram {
    LogHistogram {
        counts: std::array::from_fn(|k| SYNCS.counts[k].load(Relaxed)),
        sum_ns: SYNCS.sum_ns.load(Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_lands_in_the_first_bucket_whose_bound_holds_it() {
        for k in 0..LATENCY_BUCKETS {
            let bound = bucket_bound_ns(k);
            assert_eq!(bucket_of(bound), k, "exactly the bound");
            assert_eq!(bucket_of(bound + 1), (k + 1).min(LATENCY_BUCKETS), "just above");
            if k > 0 {
                assert_eq!(bucket_of(bucket_bound_ns(k - 1) + 1), k);
            }
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(u64::MAX / 2), LATENCY_BUCKETS, "overflow");
        let mut h = LogHistogram::default();
        h.record(3, 1_500);
        h.record(1, 100_000_000_000);
        assert_eq!((h.counts[1], h.counts[LATENCY_BUCKETS], h.count()), (3, 1, 4));
        assert_eq!(h.sum_ns, 4_500 + 100_000_000_000);
    }
}
