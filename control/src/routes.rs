//! Where each hash range is served, as one core sees the partition map: the range holding a
//! key's hash gives its partition and either this core's endpoint for it (a slot in the core's
//! endpoint table) or the address that serves it (for WRONG_OWNER). Built from the map, so a
//! range may live on any core of any host; rebuilt when the map changes.

use crate::config::ConfigError;
use proto::{encode_addr, PartitionMap};
use std::net::SocketAddr;

/// Who serves a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// This core, at this slot of its endpoint table.
    Local(usize),
    /// Another core or host: the index of its encoded address (`Routes::hint`).
    Remote(usize),
}

/// The fewest top bits of a hash that pick a bucket of `Routes::buckets`; a map of more
/// routes gets about one bucket a route (at most `BUCKET_BITS_MAX` bits, 4 MiB of buckets),
/// so a lookup reads one bucket and one or two routes next to each other however many
/// partitions there are (with 1,024 buckets, 100,000 partitions made it a binary search
/// over about 100 routes: 9.6 % of a core's samples under a flushed GET/SET mix, against 2 %
/// at 256; each array read is a cache miss at that size).
const BUCKET_BITS_MIN: u32 = 10;
const BUCKET_BITS_MAX: u32 = 20;

#[derive(Clone, Copy, Debug)]
struct Route {
    hash_end: u64,
    partition: u32,
    target: Target,
}

/// Partition id → endpoint slot, from a core's partitions in slot order: sorted once, so
/// building routes for 100,000 endpoints is a binary search each, not a scan each.
#[derive(Debug)]
pub(crate) struct Slots(Vec<(u32, usize)>);

impl Slots {
    pub(crate) fn new(partitions: impl Iterator<Item = u32>) -> Slots {
        let mut slots: Vec<(u32, usize)> = partitions.enumerate().map(|(s, p)| (p, s)).collect();
        slots.sort_unstable();
        Slots(slots)
    }

    /// The slot of `partition`, if the core has an endpoint for it.
    pub(crate) fn get(&self, partition: u32) -> Option<usize> {
        let i = self.0.binary_search_by_key(&partition, |&(p, _)| p).ok()?;
        Some(self.0[i].1)
    }
}

/// The map as this core routes by it.
#[derive(Debug)]
pub(crate) struct Routes {
    epoch: u64,
    /// Sorted by hash, covering the whole hash space.
    routes: Vec<Route>,
    /// Per bucket of hashes (the top `bucket_bits` bits), the first route reaching into it:
    /// a lookup searches only the routes of its bucket (one or two with equal ranges).
    buckets: Box<[u32]>,
    bucket_bits: u32,
    /// (partition id, index into `routes`), sorted by partition id.
    by_partition: Vec<(u32, usize)>,
    /// Encoded addresses of the other cores and hosts named by the map.
    hints: Vec<Vec<u8>>,
}

impl Routes {
    /// The routes of `map` for the core listening on `me`; `slot_of` gives the endpoint slot
    /// of each partition the map places on `me`. The map's ranges must cover the whole hash
    /// space, and every partition placed here must have an endpoint.
    pub(crate) fn new(
        map: &PartitionMap,
        me: SocketAddr,
        slot_of: impl Fn(u32) -> Option<usize>,
    ) -> Result<Routes, ConfigError> {
        let mut next = Some(0u64);
        let mut addrs: Vec<SocketAddr> = Vec::new();
        let mut routes = Vec::with_capacity(map.entries.len());
        for entry in &map.entries {
            if Some(entry.hash_start) != next || entry.hash_end < entry.hash_start {
                return Err(ConfigError(format!(
                    "map epoch {}: partition {} starts at {:#x}, not where the ranges before it \
                     end",
                    map.epoch, entry.partition, entry.hash_start
                )));
            }
            next = entry.hash_end.checked_add(1);
            let target = if entry.addr == me {
                Target::Local(slot_of(entry.partition).ok_or_else(|| {
                    ConfigError(format!("partition {} has no endpoint here", entry.partition))
                })?)
            } else {
                let at = addrs.iter().position(|a| *a == entry.addr).unwrap_or_else(|| {
                    addrs.push(entry.addr);
                    addrs.len() - 1
                });
                Target::Remote(at)
            };
            routes.push(Route { hash_end: entry.hash_end, partition: entry.partition, target });
        }
        if next.is_some() {
            return Err(ConfigError(format!(
                "map epoch {}: the ranges do not reach the end of the hash space",
                map.epoch
            )));
        }
        let mut by_partition: Vec<(u32, usize)> =
            routes.iter().enumerate().map(|(i, r)| (r.partition, i)).collect();
        by_partition.sort_unstable();
        if by_partition.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(ConfigError(format!("map epoch {}: a partition id twice", map.epoch)));
        }
        let hints = addrs
            .iter()
            .map(|&addr| {
                let mut hint = Vec::new();
                encode_addr(addr, &mut hint);
                hint
            })
            .collect();
        let bucket_bits = (routes.len().next_power_of_two().trailing_zeros())
            .clamp(BUCKET_BITS_MIN, BUCKET_BITS_MAX);
        let buckets = (0..1u64 << bucket_bits)
            .map(|b| routes.partition_point(|r| r.hash_end < b << (64 - bucket_bits)) as u32)
            .collect();
        Ok(Routes { epoch: map.epoch, routes, buckets, bucket_bits, by_partition, hints })
    }

    /// The map epoch these routes follow.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The partition holding `hash` and who serves it.
    pub(crate) fn route(&self, hash: u64) -> (u32, Target) {
        let bucket = (hash >> (64 - self.bucket_bits)) as usize;
        let first = self.buckets[bucket] as usize;
        let last = self.buckets.get(bucket + 1).map_or(self.routes.len() - 1, |&b| b as usize);
        let within = &self.routes[first..=last];
        let route = &within[within.partition_point(|r| r.hash_end < hash)]; // all covered
        (route.partition, route.target)
    }

    /// Who serves `partition`, if the map has it.
    pub(crate) fn partition(&self, partition: u32) -> Option<Target> {
        let i = self.by_partition.binary_search_by_key(&partition, |&(p, _)| p).ok()?;
        Some(self.routes[self.by_partition[i].1].target)
    }

    /// The encoded address of a remote target (the value of a WRONG_OWNER reply).
    pub(crate) fn hint(&self, remote: usize) -> &[u8] {
        &self.hints[remote]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::MapEntry;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn entry(hash_start: u64, hash_end: u64, partition: u32, port: u16) -> MapEntry {
        MapEntry::single(hash_start, hash_end, partition, addr(port))
    }

    #[test]
    fn any_range_routes_to_its_core_and_gaps_are_refused() {
        // Uneven ranges, ids out of order, two remote addresses.
        let map = PartitionMap {
            epoch: 7,
            cluster: 0,
            entries: vec![
                entry(0, 99, 30, 1),
                entry(100, 100, 4, 2),
                entry(101, u64::MAX / 2, 12, 1),
                entry(u64::MAX / 2 + 1, u64::MAX, 9, 3),
            ],
        };
        let slots = |p: u32| [(30, 0), (12, 5)].iter().find(|(q, _)| *q == p).map(|&(_, s)| s);
        let routes = Routes::new(&map, addr(1), slots).unwrap();
        assert_eq!(routes.epoch(), 7);
        assert_eq!(routes.route(0), (30, Target::Local(0)));
        assert_eq!(routes.route(99), (30, Target::Local(0)));
        assert_eq!(routes.route(100), (4, Target::Remote(0)));
        assert_eq!(routes.route(101), (12, Target::Local(5)));
        assert_eq!(routes.route(u64::MAX), (9, Target::Remote(1)));
        assert_eq!(routes.partition(9), Some(Target::Remote(1)));
        assert_eq!(routes.partition(5), None);
        let mut hint = Vec::new();
        encode_addr(addr(3), &mut hint);
        assert_eq!(routes.hint(1), hint.as_slice());

        // The buckets find what a search of every route finds.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for hash in [x, x >> 40, u64::MAX - (x >> 50)] {
                let plain = routes.routes[routes.routes.partition_point(|r| r.hash_end < hash)];
                assert_eq!(routes.route(hash), (plain.partition, plain.target), "{hash:#x}");
            }
        }

        // A map of 100,000 routes gets about a bucket a route, and finds the same.
        let n = 100_000u64;
        let step = u64::MAX / n;
        let entries = (0..n)
            .map(|i| {
                let end = if i + 1 == n { u64::MAX } else { (i + 1) * step - 1 };
                MapEntry::single(i * step, end, i as u32, addr(1))
            })
            .collect();
        let big = PartitionMap { epoch: 1, cluster: 0, entries };
        let many = Routes::new(&big, addr(1), |p| Some(p as usize)).unwrap();
        assert_eq!(many.buckets.len(), 1 << 17);
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let plain = many.routes[many.routes.partition_point(|r| r.hash_end < x)];
            assert_eq!(many.route(x), (plain.partition, plain.target), "{x:#x}");
        }

        let mut gap = map.clone();
        gap.entries[1].hash_start = 101;
        gap.entries[1].hash_end = 101;
        assert!(Routes::new(&gap, addr(1), slots).is_err(), "a hole at 100");
        let mut short = map.clone();
        short.entries.pop();
        assert!(Routes::new(&short, addr(1), slots).is_err(), "does not reach the end");
        assert!(Routes::new(&map, addr(2), |_| None).is_err(), "partition 4 has no endpoint");
        let mut twice = map;
        twice.entries[3].partition = 30;
        assert!(Routes::new(&twice, addr(1), slots).is_err(), "partition 30 twice");
    }
}
