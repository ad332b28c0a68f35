//! Reassembly of fragmented writes, bounded in count, bytes and idle time.

use crate::completions::RequestId;
use proto::{fragment_count, fragment_span, HeaderFields};
use std::collections::HashMap;

/// Why a fragment was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Too many or too large reassemblies already.
    Busy,
    /// The fragment contradicts earlier fragments of the same request.
    Inconsistent,
}

/// One fragmented write being received.
#[derive(Debug)]
pub(crate) struct Reassembly {
    pub(crate) opcode: u8,
    pub(crate) key: Vec<u8>,
    /// CAS expectation.
    pub(crate) expected_version: u64,
    /// The write's TTL (every fragment carries the same).
    pub(crate) ttl_secs: Option<u32>,
    pub(crate) value: Vec<u8>,
    total_len: u32,
    have: Vec<u64>,
    missing: u32,
    first_missing: u32,
    last_ns: u64,
}

impl Reassembly {
    fn new(now_ns: u64, h: &HeaderFields, key: &[u8]) -> Reassembly {
        let count = fragment_count(h.total_len);
        Reassembly {
            opcode: h.opcode,
            key: key.to_vec(),
            expected_version: h.version,
            ttl_secs: h.ttl_secs(),
            value: vec![0; h.total_len as usize],
            total_len: h.total_len,
            have: vec![0; (count as usize).div_ceil(64)],
            missing: count,
            first_missing: 0,
            last_ns: now_ns,
        }
    }

    fn matches(&self, h: &HeaderFields, key: &[u8]) -> bool {
        self.opcode == h.opcode
            && self.total_len == h.total_len
            && self.expected_version == h.version
            && self.ttl_secs == h.ttl_secs()
            && self.key == key
    }

    fn has(&self, index: u32) -> bool {
        self.have[index as usize / 64] & (1 << (index % 64)) != 0
    }

    /// Takes fragment `index` (checked against `total_len` by `proto`).
    fn insert(&mut self, now_ns: u64, index: u32, data: &[u8]) {
        self.last_ns = now_ns;
        if self.has(index) {
            return;
        }
        let span = fragment_span(self.total_len, index);
        assert_eq!(span.len(), data.len(), "proto checked the fragment length");
        self.value[span].copy_from_slice(data);
        self.have[index as usize / 64] |= 1 << (index % 64);
        self.missing -= 1;
        let count = fragment_count(self.total_len);
        while self.first_missing < count && self.has(self.first_missing) {
            self.first_missing += 1;
        }
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// The first fragment not received yet (the cumulative acknowledgement).
    pub(crate) fn first_missing(&self) -> u32 {
        self.first_missing
    }
}

/// All reassemblies of one core.
#[derive(Debug)]
pub(crate) struct Reassemblies {
    active: HashMap<RequestId, Reassembly>,
    bytes: u64,
    count_max: usize,
    bytes_max: u64,
    timeout_ns: u64,
}

impl Reassemblies {
    pub(crate) fn new(count_max: usize, bytes_max: u64, timeout_ns: u64) -> Reassemblies {
        Reassemblies {
            active: HashMap::with_capacity(count_max),
            bytes: 0,
            count_max,
            bytes_max,
            timeout_ns,
        }
    }

    /// Adds a fragment (starting the reassembly at its first fragment seen); returns the
    /// reassembly so the caller can see whether it is complete.
    pub(crate) fn add(
        &mut self,
        now_ns: u64,
        id: RequestId,
        h: &HeaderFields,
        key: &[u8],
        data: &[u8],
    ) -> Result<&Reassembly, Refused> {
        if !self.active.contains_key(&id) {
            let bytes = u64::from(h.total_len);
            if self.active.len() >= self.count_max || self.bytes + bytes > self.bytes_max {
                return Err(Refused::Busy);
            }
            self.bytes += bytes;
            self.active.insert(id, Reassembly::new(now_ns, h, key));
        }
        let r = self.active.get_mut(&id).expect("inserted above");
        if !r.matches(h, key) {
            return Err(Refused::Inconsistent);
        }
        r.insert(now_ns, h.frag_index, data);
        Ok(r)
    }

    /// Removes and returns a reassembly (complete, or abandoned).
    pub(crate) fn take(&mut self, id: RequestId) -> Option<Reassembly> {
        let r = self.active.remove(&id)?;
        self.bytes -= u64::from(r.total_len);
        Some(r)
    }

    /// Drops reassemblies idle for longer than the timeout; returns how many.
    pub(crate) fn expire(&mut self, now_ns: u64) -> usize {
        let before = self.active.len();
        let timeout = self.timeout_ns;
        let mut freed = 0;
        self.active.retain(|_, r| {
            let keep = now_ns.saturating_sub(r.last_ns) < timeout;
            if !keep {
                freed += u64::from(r.total_len);
            }
            keep
        });
        self.bytes -= freed;
        before - self.active.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.active.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{flags, Opcode, FRAGMENT_BYTES};

    fn fragment(total: u32, index: u32) -> HeaderFields {
        HeaderFields {
            opcode: Opcode::Put as u8,
            flags: flags::FRAGMENT,
            frag_index: index,
            frag_count: fragment_count(total),
            total_len: total,
            ..HeaderFields::default()
        }
    }

    #[test]
    fn out_of_order_and_duplicate_fragments_assemble_once() {
        let value: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let mut rs = Reassemblies::new(4, 1 << 20, 1000);
        let id = (7, 9);
        for (&i, first_missing) in [2u32, 0, 2, 0].iter().zip([0, 1, 1, 1]) {
            let span = fragment_span(2500, i);
            let r = rs.add(0, id, &fragment(2500, i), b"k", &value[span]).unwrap();
            assert!(!r.is_complete());
            assert_eq!(r.first_missing(), first_missing);
        }
        let span = fragment_span(2500, 1);
        assert!(rs.add(0, id, &fragment(2500, 1), b"k", &value[span]).unwrap().is_complete());
        assert_eq!(rs.take(id).unwrap().value, value);
        assert_eq!(rs.len(), 0);
    }

    #[test]
    fn limits_and_timeouts_hold() {
        let big = (2 * FRAGMENT_BYTES) as u32;
        let mut rs = Reassemblies::new(2, u64::from(big) * 2, 1000);
        let data = vec![0u8; FRAGMENT_BYTES];
        rs.add(0, (1, 1), &fragment(big, 0), b"k", &data).unwrap();
        assert_eq!(
            rs.add(0, (1, 1), &fragment(big + 1, 0), b"k", &data).unwrap_err(),
            Refused::Inconsistent
        );
        rs.add(500, (1, 2), &fragment(big, 0), b"k", &data).unwrap();
        assert_eq!(rs.add(0, (1, 3), &fragment(big, 0), b"k", &data).unwrap_err(), Refused::Busy);
        assert_eq!(rs.expire(1000), 1);
        rs.add(1000, (1, 3), &fragment(big, 0), b"k", &data).unwrap();
        assert_eq!(rs.len(), 2);
    }
}
