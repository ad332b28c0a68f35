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

/// One partition: its inclusive hash range and the address serving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapEntry {
    /// First hash of the range.
    pub hash_start: u64,
    /// Last hash of the range (inclusive).
    pub hash_end: u64,
    /// Partition id.
    pub partition: u32,
    /// host:port of the core serving it.
    pub addr: SocketAddr,
}

/// Which hash ranges live where, at an epoch. Entries are sorted and do not overlap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionMap {
    /// Increases with every change of the map.
    pub epoch: u64,
    /// Sorted by `hash_start`.
    pub entries: Vec<MapEntry>,
}

impl PartitionMap {
    /// The entry whose range holds `hash`.
    pub fn lookup(&self, hash: u64) -> Option<&MapEntry> {
        let i = self.entries.partition_point(|e| e.hash_end < hash);
        self.entries.get(i).filter(|e| e.hash_start <= hash)
    }

    /// The payload of a MAP reply: epoch, count, then each entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.entries.len() * (20 + ADDR_BYTES_MAX));
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.hash_start.to_le_bytes());
            out.extend_from_slice(&e.hash_end.to_le_bytes());
            out.extend_from_slice(&e.partition.to_le_bytes());
            encode_addr(e.addr, &mut out);
        }
        out
    }

    /// Reads a MAP payload; rejects truncation, trailing bytes and unsorted or overlapping ranges.
    pub fn decode(bytes: &[u8]) -> Result<PartitionMap, Malformed> {
        if bytes.len() < 12 {
            return Err(Malformed::Truncated);
        }
        let epoch = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let mut rest = &bytes[12..];
        // Each entry takes at least 27 bytes, which bounds the allocation by the input.
        if count > rest.len() / 27 {
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
            rest = after;
            let ordered = entries.last().is_none_or(|p: &MapEntry| p.hash_end < hash_start);
            if hash_start > hash_end || !ordered {
                return Err(Malformed::BadFragment);
            }
            entries.push(MapEntry { hash_start, hash_end, partition, addr });
        }
        if !rest.is_empty() {
            return Err(Malformed::Truncated);
        }
        Ok(PartitionMap { epoch, entries })
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
        let entries = (0..4)
            .map(|p| {
                let (hash_start, hash_end) = partition_range(p, 4);
                MapEntry {
                    hash_start,
                    hash_end,
                    partition: p,
                    addr: if p % 2 == 0 { addr } else { addr6 },
                }
            })
            .collect();
        let map = PartitionMap { epoch: 9, entries };
        let bytes = map.encode();
        assert_eq!(PartitionMap::decode(&bytes).unwrap(), map);
        assert_eq!(map.lookup(u64::MAX).unwrap().partition, 3);
        assert_eq!(map.lookup(0).unwrap().partition, 0);
        for cut in 0..bytes.len() {
            assert!(PartitionMap::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
