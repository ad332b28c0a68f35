//! Which core of this node serves which partition.

use crate::config::ConfigError;
use proto::{partition_range, MapEntry, PartitionMap};
use std::net::SocketAddr;

/// The node's cores, their addresses, and the partitions: partition `p` lives on core
/// `p % cores`, as local endpoint `p / cores`, so neither lookup needs a table.
#[derive(Clone, Debug)]
pub struct NodeLayout {
    partitions: u32,
    addrs: Vec<SocketAddr>,
    epoch: u64,
}

impl NodeLayout {
    /// `partitions` equal hash ranges over the cores listening on `addrs` (core i on addrs[i]).
    pub fn new(partitions: u32, addrs: Vec<SocketAddr>) -> Result<NodeLayout, ConfigError> {
        if addrs.is_empty() {
            return Err(ConfigError("a node needs at least one core".into()));
        }
        if partitions < addrs.len() as u32 {
            return Err(ConfigError(format!(
                "{partitions} partitions cannot cover {} cores (need at least one each)",
                addrs.len()
            )));
        }
        Ok(NodeLayout { partitions, addrs, epoch: 1 })
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Number of cores.
    pub fn cores(&self) -> u32 {
        self.addrs.len() as u32
    }

    /// The map epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The core serving `partition`.
    pub fn core_of(&self, partition: u32) -> u32 {
        partition % self.cores()
    }

    /// The index of `partition` among its core's endpoints.
    pub fn slot_of(&self, partition: u32) -> usize {
        (partition / self.cores()) as usize
    }

    /// The partitions core `core` hosts, in the order of its endpoints (slot order).
    pub fn partitions_on(&self, core: u32) -> impl Iterator<Item = u32> {
        (core..self.partitions).step_by(self.cores() as usize)
    }

    /// How many endpoints core `core` hosts.
    pub fn endpoints_on(&self, core: u32) -> usize {
        (self.partitions - core).div_ceil(self.cores()) as usize
    }

    /// The address of core `core`.
    pub fn addr_of(&self, core: u32) -> SocketAddr {
        self.addrs[core as usize]
    }

    /// The partition map clients route by.
    pub fn map(&self) -> PartitionMap {
        let entries = (0..self.partitions)
            .map(|partition| {
                let (hash_start, hash_end) = partition_range(partition, self.partitions);
                MapEntry::single(
                    hash_start,
                    hash_end,
                    partition,
                    self.addr_of(self.core_of(partition)),
                )
            })
            .collect();
        PartitionMap::new(self.epoch, entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_exactly_one_slot() {
        let addrs = (0..3).map(|i| SocketAddr::from(([127, 0, 0, 1], 7000 + i))).collect();
        let layout = NodeLayout::new(10, addrs).unwrap();
        let mut seen = vec![vec![false; 4]; 3];
        for p in 0..10 {
            let (core, slot) = (layout.core_of(p), layout.slot_of(p));
            assert!(slot < layout.endpoints_on(core));
            assert!(!seen[core as usize][slot]);
            seen[core as usize][slot] = true;
        }
        assert_eq!((0..3).map(|c| layout.endpoints_on(c)).sum::<usize>(), 10);
        let map = layout.map();
        assert_eq!(map.entries.len(), 10);
        assert_eq!(map.entries[4].addr.port(), 7001);
    }
}
