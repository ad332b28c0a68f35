//! The partition map payload (MAP replies) and the address encoding of WRONG_OWNER hints.

use crate::Malformed;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest encoded address: family byte, IPv6 address, port.
pub const ADDR_BYTES_MAX: usize = 1 + 16 + 2;

/// Appends `addr` as family (4 or 6), address bytes, little-endian port.
pub fn encode_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_le_bytes());
}

/// Reads an address written by `encode_addr`; returns it and the bytes after it.
pub fn decode_addr(bytes: &[u8]) -> Result<(SocketAddr, &[u8]), Malformed> {
    let (&family, rest) = bytes.split_first().ok_or(Malformed::Truncated)?;
    let ip_len = match family {
        4 => 4,
        6 => 16,
        _ => return Err(Malformed::BadFlags),
    };
    if rest.len() < ip_len + 2 {
        return Err(Malformed::Truncated);
    }
    let ip = if ip_len == 4 {
        IpAddr::V4(Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]))
    } else {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&rest[..16]);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    let port = u16::from_le_bytes([rest[ip_len], rest[ip_len + 1]]);
    Ok((SocketAddr::new(ip, port), &rest[ip_len + 2..]))
}

/// The partition owning `hash` when the hash space is cut into `partitions` equal ranges.
pub fn partition_of(hash: u64, partitions: u32) -> u32 {
    ((u128::from(hash) * u128::from(partitions)) >> 64) as u32
}

/// Inclusive hash range of `partition` of `partitions` equal ranges (the inverse of
/// `partition_of`).
pub fn partition_range(partition: u32, partitions: u32) -> (u64, u64) {
    assert!(partition < partitions, "partition {partition} of {partitions}");
    let start = |p: u32| (u128::from(p) << 64).div_ceil(u128::from(partitions));
    let end = start(partition + 1) - 1;
    (start(partition) as u64, end as u64)
}

/// What a replica other than the primary is to its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// In the in-sync set: has every acknowledged write; the primary waits for it, and it may
    /// be promoted.
    Backup = 2,
    /// Catching up (a new or returning replica): sent every write, waited for by no one.
    Learner = 3,
}

/// A replica of a partition other than its primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replica {
    /// host:port of the core holding it.
    pub addr: SocketAddr,
    /// In sync or catching up.
    pub role: Role,
}

/// One partition: its inclusive hash range, the primary serving it and its other replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    /// First hash of the range.
    pub hash_start: u64,
    /// Last hash of the range (inclusive).
    pub hash_end: u64,
    /// Partition id.
    pub partition: u32,
    /// host:port of the core serving it (its primary).
    pub addr: SocketAddr,
    /// Its other replicas (none on a single node); never the primary's address.
    pub replicas: Vec<Replica>,
}

impl MapEntry {
    /// An entry with a primary and no other replica.
    pub fn single(hash_start: u64, hash_end: u64, partition: u32, addr: SocketAddr) -> MapEntry {
        MapEntry { hash_start, hash_end, partition, addr, replicas: Vec::new() }
    }

    /// The in-sync backups' addresses.
    pub fn backups(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.replicas.iter().filter(|r| r.role == Role::Backup).map(|r| r.addr)
    }

    /// The role of the replica at `addr` (`None`: the primary or not a replica).
    pub fn role_of(&self, addr: SocketAddr) -> Option<Role> {
        self.replicas.iter().find(|r| r.addr == addr).map(|r| r.role)
    }
}

/// Which hash ranges live where, at an epoch. Entries are sorted and do not overlap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionMap {
    /// Increases with every change of the map.
    pub epoch: u64,
    /// Names the cluster (or the single node) the map is of: a client refuses a server whose
    /// map names another. 0: not named.
    pub cluster: u64,
    /// Sorted by `hash_start`.
    pub entries: Vec<MapEntry>,
}

/// Most replicas besides the primary an entry may list.
pub const REPLICAS_MAX: usize = 4;

impl PartitionMap {
    /// A map of single-replica entries.
    pub fn new(epoch: u64, entries: Vec<MapEntry>) -> PartitionMap {
        PartitionMap { epoch, cluster: 0, entries }
    }

    /// The entry whose range holds `hash`.
    pub fn lookup(&self, hash: u64) -> Option<&MapEntry> {
        let i = self.entries.partition_point(|e| e.hash_end < hash);
        self.entries.get(i).filter(|e| e.hash_start <= hash)
    }

    /// The entry of partition `partition`.
    pub fn partition(&self, partition: u32) -> Option<&MapEntry> {
        self.entries.iter().find(|e| e.partition == partition)
    }

    /// The payload of a MAP reply: epoch, cluster, count, then each entry (range, partition,
    /// primary, then the count of other replicas and each one's role and address).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.entries.len() * (21 + ADDR_BYTES_MAX));
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.cluster.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.hash_start.to_le_bytes());
            out.extend_from_slice(&e.hash_end.to_le_bytes());
            out.extend_from_slice(&e.partition.to_le_bytes());
            encode_addr(e.addr, &mut out);
            out.push(e.replicas.len() as u8);
            for r in &e.replicas {
                out.push(r.role as u8);
                encode_addr(r.addr, &mut out);
            }
        }
        out
    }

    /// Reads a MAP payload; rejects truncation, trailing bytes, unsorted or overlapping
    /// ranges, unknown roles, and a replica listed twice (or as its own primary).
    pub fn decode(bytes: &[u8]) -> Result<PartitionMap, Malformed> {
        if bytes.len() < 20 {
            return Err(Malformed::Truncated);
        }
        let epoch = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let cluster = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
        let mut rest = &bytes[20..];
        // Each entry takes at least 28 bytes, which bounds the allocation by the input.
        if count > rest.len() / 28 {
            return Err(Malformed::Truncated);
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            if rest.len() < 20 {
                return Err(Malformed::Truncated);
            }
            let hash_start = u64::from_le_bytes(rest[0..8].try_into().expect("8 bytes"));
            let hash_end = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
            let partition = u32::from_le_bytes(rest[16..20].try_into().expect("4 bytes"));
            let (addr, after) = decode_addr(&rest[20..])?;
            let (&n, mut after) = after.split_first().ok_or(Malformed::Truncated)?;
            if n as usize > REPLICAS_MAX {
                return Err(Malformed::BadFragment);
            }
            let mut replicas: Vec<Replica> = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let (&role, tail) = after.split_first().ok_or(Malformed::Truncated)?;
                let role = match role {
                    2 => Role::Backup,
                    3 => Role::Learner,
                    _ => return Err(Malformed::BadFlags),
                };
                let (replica, tail) = decode_addr(tail)?;
                if replica == addr || replicas.iter().any(|r| r.addr == replica) {
                    return Err(Malformed::BadFragment);
                }
                replicas.push(Replica { addr: replica, role });
                after = tail;
            }
            rest = after;
            let ordered = entries.last().is_none_or(|p: &MapEntry| p.hash_end < hash_start);
            if hash_start > hash_end || !ordered {
                return Err(Malformed::BadFragment);
            }
            entries.push(MapEntry { hash_start, hash_end, partition, addr, replicas });
        }
        if !rest.is_empty() {
            return Err(Malformed::Truncated);
        }
        Ok(PartitionMap { epoch, cluster, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_ranges_cover_the_space_and_invert_partition_of() {
        for n in [1u32, 2, 3, 7, 1000, 10_000] {
            let mut next = 0u64;
            for p in [0, n / 2, n - 1] {
                let (s, e) = partition_range(p, n);
                assert_eq!(partition_of(s, n), p);
                assert_eq!(partition_of(e, n), p);
                if p == 0 {
                    assert_eq!(s, next);
                }
                if p == n - 1 {
                    assert_eq!(e, u64::MAX);
                }
                if s > 0 {
                    assert_eq!(partition_of(s - 1, n), p - 1);
                }
                next = e.wrapping_add(1);
            }
        }
    }

    #[test]
    fn map_round_trips_and_looks_up() {
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let addr6: SocketAddr = "[::1]:7001".parse().unwrap();
        let other: SocketAddr = "127.0.0.2:7000".parse().unwrap();
        let entries = (0..4)
            .map(|p| {
                let (hash_start, hash_end) = partition_range(p, 4);
                let mut e =
                    MapEntry::single(hash_start, hash_end, p, [addr, addr6][p as usize % 2]);
                if p == 1 {
                    e.replicas = vec![
                        Replica { addr, role: Role::Backup },
                        Replica { addr: other, role: Role::Learner },
                    ];
                }
                e
            })
            .collect();
        let map = PartitionMap { epoch: 9, cluster: 0xc1, entries };
        let bytes = map.encode();
        assert_eq!(PartitionMap::decode(&bytes).unwrap(), map);
        assert_eq!(map.lookup(u64::MAX).unwrap().partition, 3);
        assert_eq!(map.lookup(0).unwrap().partition, 0);
        assert_eq!(map.entries[1].backups().collect::<Vec<_>>(), vec![addr]);
        assert_eq!(map.entries[1].role_of(other), Some(Role::Learner));
        for cut in 0..bytes.len() {
            assert!(PartitionMap::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A replica named twice, or the primary named as a replica, is refused.
        let mut twice = map.clone();
        twice.entries[1].replicas[1].addr = addr;
        assert!(PartitionMap::decode(&twice.encode()).is_err());
        let mut own = map.clone();
        own.entries[1].replicas[0].addr = addr6;
        assert!(PartitionMap::decode(&own.encode()).is_err());
    }
}
