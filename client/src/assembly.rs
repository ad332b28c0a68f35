//! Reassembly of a fragmented reply value (GET, MAP, STATS), in any order, duplicates allowed.

use proto::{fragment_count, fragment_span, FRAGMENT_BYTES, VALUE_BYTES_MAX};

/// Most fragments one RANGE request asks for (the server sends at most this many).
pub(crate) const RANGE_FRAGMENTS_MAX: u32 = 32;

/// The fragments `first..end` covering bytes `[offset, offset + len)` (at least one).
pub(crate) fn fragments_covering(offset: u32, len: u32) -> (u32, u32) {
    let bytes = FRAGMENT_BYTES as u64;
    let first = u64::from(offset) / bytes;
    let end = (u64::from(offset) + u64::from(len)).div_ceil(bytes).max(first + 1);
    (first as u32, end.min(u64::from(u32::MAX)) as u32)
}

/// What inserting a fragment did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// A fragment not seen before.
    New,
    /// A fragment already held; ignored.
    Duplicate,
    /// An index or length that contradicts the value's size; ignored.
    Invalid,
}

/// The fragments of one version of a value received so far.
#[derive(Debug)]
pub(crate) struct Assembly {
    version: u64,
    total_len: u32,
    bytes: Vec<u8>,
    have: Vec<bool>,
    received: u32,
    first_missing: u32,
    /// One past the last fragment wanted (`frag_count` unless restricted).
    end: u32,
}

impl Assembly {
    /// An empty assembly of a `total_len`-byte value at `version`; `None` beyond
    /// `VALUE_BYTES_MAX` (so a reply cannot make the client allocate more than that).
    pub(crate) fn new(total_len: u32, version: u64) -> Option<Self> {
        if total_len as usize > VALUE_BYTES_MAX {
            return None;
        }
        let count = fragment_count(total_len) as usize;
        Some(Assembly {
            version,
            total_len,
            bytes: vec![0; total_len as usize],
            have: vec![false; count],
            received: 0,
            first_missing: 0,
            end: count as u32,
        })
    }

    /// Wants only fragments `first..end` (clipped to the value): the others count as received
    /// (their bytes stay zero), so completion, holes and pulls concern the wanted ones alone.
    /// Call before inserting anything.
    pub(crate) fn restrict(&mut self, first: u32, end: u32) {
        let count = self.frag_count();
        let end = end.min(count);
        let first = first.min(end);
        for index in (0..first).chain(end..count) {
            if !self.have[index as usize] {
                self.have[index as usize] = true;
                self.received += 1;
            }
        }
        while self.first_missing < count && self.have[self.first_missing as usize] {
            self.first_missing += 1;
        }
        self.end = end;
    }

    /// One past the last fragment wanted.
    pub(crate) fn end(&self) -> u32 {
        self.end
    }

    /// Stores fragment `index`, whose bytes must be exactly its span of the value.
    pub(crate) fn insert(&mut self, index: u32, fragment: &[u8]) -> Inserted {
        let span = fragment_span(self.total_len, index);
        if index >= self.frag_count() || fragment.len() != span.len() {
            return Inserted::Invalid;
        }
        if self.have[index as usize] {
            return Inserted::Duplicate;
        }
        self.bytes[span].copy_from_slice(fragment);
        self.have[index as usize] = true;
        self.received += 1;
        while self.first_missing < self.frag_count() && self.have[self.first_missing as usize] {
            self.first_missing += 1;
        }
        Inserted::New
    }

    /// The version of the value being assembled.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Length of the whole value.
    pub(crate) fn total_len(&self) -> u32 {
        self.total_len
    }

    /// Fragments of the whole value.
    pub(crate) fn frag_count(&self) -> u32 {
        self.have.len() as u32
    }

    /// The lowest fragment not yet received (`frag_count` when complete).
    pub(crate) fn first_missing(&self) -> u32 {
        self.first_missing
    }

    /// Whether every fragment arrived.
    pub(crate) fn is_complete(&self) -> bool {
        self.received == self.frag_count()
    }

    /// The runs of missing fragments below `end`, as `(first, count)` with `count` at most
    /// `RANGE_FRAGMENTS_MAX`; at most `runs_max` of them, lowest first.
    pub(crate) fn missing_runs(&self, end: u32, runs_max: usize) -> Vec<(u32, u32)> {
        let end = end.min(self.frag_count());
        let mut runs = Vec::new();
        let mut index = self.first_missing;
        while index < end && runs.len() < runs_max {
            if self.have[index as usize] {
                index += 1;
                continue;
            }
            let start = index;
            while index < end && !self.have[index as usize] && index - start < RANGE_FRAGMENTS_MAX {
                index += 1;
            }
            runs.push((start, index - start));
        }
        runs
    }

    /// The assembled value.
    ///
    /// # Panics
    /// If fragments are missing (a caller bug).
    pub(crate) fn into_value(self) -> Vec<u8> {
        assert!(self.is_complete(), "{} of {} fragments", self.received, self.frag_count());
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1024) as u8).collect()
    }

    fn fragment(value: &[u8], index: u32) -> &[u8] {
        &value[fragment_span(value.len() as u32, index)]
    }

    #[test]
    fn out_of_order_with_duplicates_assembles_the_value() {
        let expected = value(10 * FRAGMENT_BYTES + 17);
        let mut assembly = Assembly::new(expected.len() as u32, 3).unwrap();
        assert_eq!(assembly.frag_count(), 11);
        let order = [10, 3, 3, 0, 9, 1, 2, 10, 4, 8, 7, 5, 6, 0];
        let mut news = 0;
        for index in order {
            match assembly.insert(index, fragment(&expected, index)) {
                Inserted::New => news += 1,
                Inserted::Duplicate => {}
                Inserted::Invalid => panic!("fragment {index} rejected"),
            }
        }
        assert_eq!(news, 11);
        assert!(assembly.is_complete());
        assert_eq!(assembly.first_missing(), 11);
        assert_eq!(assembly.into_value(), expected);
    }

    #[test]
    fn wrong_lengths_and_indexes_are_rejected() {
        let expected = value(2 * FRAGMENT_BYTES + 1);
        let mut assembly = Assembly::new(expected.len() as u32, 1).unwrap();
        assert_eq!(assembly.insert(3, &[0]), Inserted::Invalid);
        assert_eq!(assembly.insert(2, &[0, 0]), Inserted::Invalid);
        assert_eq!(assembly.insert(0, &expected[..10]), Inserted::Invalid);
        assert_eq!(assembly.insert(2, fragment(&expected, 2)), Inserted::New);
        assert!(!assembly.is_complete());
        assert_eq!(assembly.first_missing(), 0);
    }

    #[test]
    fn missing_runs_cover_the_holes_below_the_end() {
        let total = 100 * FRAGMENT_BYTES;
        let expected = value(total);
        let mut assembly = Assembly::new(total as u32, 1).unwrap();
        for index in [0, 1, 4, 5, 6, 9] {
            assembly.insert(index, fragment(&expected, index));
        }
        assert_eq!(assembly.missing_runs(12, 8), [(2, 2), (7, 2), (10, 2)]);
        assert_eq!(assembly.missing_runs(12, 2), [(2, 2), (7, 2)]);
        assert_eq!(assembly.missing_runs(100, 8), [(2, 2), (7, 2), (10, 32), (42, 32), (74, 26)]);
    }

    #[test]
    fn a_restricted_assembly_wants_only_its_fragments() {
        let total = 10 * FRAGMENT_BYTES + 5;
        let expected = value(total);
        let mut assembly = Assembly::new(total as u32, 0).unwrap();
        assembly.restrict(3, 6);
        assert_eq!((assembly.first_missing(), assembly.end()), (3, 6));
        assert_eq!(assembly.missing_runs(assembly.end(), 8), [(3, 3)]);
        assert_eq!(assembly.insert(0, fragment(&expected, 0)), Inserted::Duplicate);
        for index in 3..6 {
            assert_eq!(assembly.insert(index, fragment(&expected, index)), Inserted::New);
        }
        assert!(assembly.is_complete());
        let bytes = assembly.into_value();
        let span = 3 * FRAGMENT_BYTES..6 * FRAGMENT_BYTES;
        assert_eq!(bytes[span.clone()], expected[span]);
    }

    #[test]
    fn oversized_values_are_refused() {
        assert!(Assembly::new(VALUE_BYTES_MAX as u32 + 1, 1).is_none());
        assert!(Assembly::new(0, 1).is_some());
    }
}
