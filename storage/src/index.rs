//! The index: key hash -> record location, 8 bytes a slot.
//!
//! Open addressing with linear probing over a table of `u64` slots:
//!
//! ```text
//! bits 63..38  tag: the top 26 bits of the key's xxh3-64 hash
//! bits 37..26  segment slot (12 bits: up to 4096 live segments per endpoint)
//! bits 25..0   offset in the segment, in 4-byte units (26 bits: segments up to 256 MiB)
//! ```
//!
//! Zero is an empty slot (no record sits at offset 0: the segment header does). The home
//! bucket is the tag scaled to the table (`tag × slots / 2^26`), so the table grows without
//! reading keys back; that caps it at 2^26 slots (58 million keys per endpoint at the 7/8
//! load limit). The full key is compared against the log by the caller's `is_key`. An empty
//! index allocates nothing.
//!
//! Memory: the table is kept ≤ 7/8 full and grows by half (not doubles, so its size is any
//! number of slots), so it is at least 7/12 full after growing: 9.1 to 13.7 bytes per key at
//! every size from a few hundred keys on (a power-of-two table that doubles moves between 9.1
//! and 18.3).

const TAG_BITS: u32 = 26;
const SEGMENT_BITS: u32 = 12;
const OFFSET_BITS: u32 = 26;
/// Most slots a table may have.
pub(crate) const SLOTS_MAX: usize = 1 << TAG_BITS;
/// Most segment slots.
pub(crate) const SEGMENTS_MAX: usize = 1 << SEGMENT_BITS;
/// Largest byte offset a location can hold.
pub(crate) const OFFSET_MAX: u64 = ((1 << OFFSET_BITS) - 1) * UNIT;
/// Bytes of an offset unit: records start at multiples of it (`record::ALIGN`).
const UNIT: u64 = crate::record::ALIGN as u64;
const SLOTS_MIN: usize = 16;
/// How the table grows: to `slots × GROWTH_NUMERATOR / GROWTH_DENOMINATOR`.
const GROWTH_NUMERATOR: usize = 3;
const GROWTH_DENOMINATOR: usize = 2;

/// Where a record is: a segment slot and a byte offset (a multiple of 4, not 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) segment: u16,
    pub(crate) offset: u32,
}

impl Loc {
    fn pack(self, tag: u64) -> u64 {
        let units = u64::from(self.offset) / UNIT;
        debug_assert!(u64::from(self.offset).is_multiple_of(UNIT) && units != 0);
        debug_assert!(units < 1 << OFFSET_BITS);
        debug_assert!(usize::from(self.segment) < SEGMENTS_MAX);
        (tag << (SEGMENT_BITS + OFFSET_BITS)) | (u64::from(self.segment) << OFFSET_BITS) | units
    }

    fn unpack(slot: u64) -> Loc {
        Loc {
            segment: ((slot >> OFFSET_BITS) & ((1 << SEGMENT_BITS) - 1)) as u16,
            offset: ((slot & ((1 << OFFSET_BITS) - 1)) * UNIT) as u32,
        }
    }
}

fn tag_of(hash: u64) -> u64 {
    hash >> (64 - TAG_BITS)
}

fn slot_tag(slot: u64) -> u64 {
    slot >> (SEGMENT_BITS + OFFSET_BITS)
}

/// The table. `len` counts occupied slots.
#[derive(Debug, Default)]
pub(crate) struct Index {
    slots: Vec<u64>,
    len: usize,
}

/// The index cannot hold another key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct IndexFull;

impl Index {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes the table takes.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.capacity() * 8
    }

    /// The tag scaled to the table: monotonic in the tag, every slot a home to about as
    /// many tags (`slots ≤ 2^26`, so the product fits in 52 bits).
    fn home(&self, tag: u64) -> usize {
        ((tag * self.slots.len() as u64) >> TAG_BITS) as usize
    }

    /// The slot after `i`, wrapping at the end of the table.
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// Slots from `from` forward to `to`, wrapping.
    fn distance(&self, from: usize, to: usize) -> usize {
        if to >= from {
            to - from
        } else {
            to + self.slots.len() - from
        }
    }

    /// The home slot of `hash` (0 when the table is empty), read only to bring its cache line
    /// in ahead of a lookup.
    pub(crate) fn home_slot(&self, hash: u64) -> u64 {
        if self.slots.is_empty() {
            return 0;
        }
        self.slots[self.home(tag_of(hash))]
    }

    /// The slot holding the key, found by `is_key` among the slots with its tag.
    fn position(&self, hash: u64, mut is_key: impl FnMut(Loc) -> bool) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let tag = tag_of(hash);
        let mut i = self.home(tag);
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            if slot_tag(slot) == tag && is_key(Loc::unpack(slot)) {
                return Some(i);
            }
            i = self.next(i);
        }
    }

    /// The location of the key.
    pub(crate) fn get(&self, hash: u64, is_key: impl FnMut(Loc) -> bool) -> Option<Loc> {
        self.position(hash, is_key).map(|i| Loc::unpack(self.slots[i]))
    }

    /// Points the key at `loc`; returns where it was.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        loc: Loc,
        is_key: impl FnMut(Loc) -> bool,
    ) -> Result<Option<Loc>, IndexFull> {
        let tag = tag_of(hash);
        if let Some(i) = self.position(hash, is_key) {
            let old = Loc::unpack(self.slots[i]);
            self.slots[i] = loc.pack(tag);
            return Ok(Some(old));
        }
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.grow()?;
        }
        self.place(loc.pack(tag));
        self.len += 1;
        Ok(None)
    }

    /// Removes the key; returns where it was.
    pub(crate) fn remove(&mut self, hash: u64, is_key: impl FnMut(Loc) -> bool) -> Option<Loc> {
        let mut hole = self.position(hash, is_key)?;
        let old = Loc::unpack(self.slots[hole]);
        self.slots[hole] = 0;
        self.len -= 1;
        // Backward-shift deletion: pull later members of the run into the hole, so probing
        // never needs tombstones.
        let mut i = self.next(hole);
        while self.slots[i] != 0 {
            let home = self.home(slot_tag(self.slots[i]));
            if self.distance(home, i) >= self.distance(hole, i) {
                self.slots[hole] = self.slots[i];
                self.slots[i] = 0;
                hole = i;
            }
            i = self.next(i);
        }
        Some(old)
    }

    fn place(&mut self, packed: u64) {
        let mut i = self.home(slot_tag(packed));
        while self.slots[i] != 0 {
            i = self.next(i);
        }
        self.slots[i] = packed;
    }

    fn grow(&mut self) -> Result<(), IndexFull> {
        let slots =
            (self.slots.len() * GROWTH_NUMERATOR / GROWTH_DENOMINATOR).clamp(SLOTS_MIN, SLOTS_MAX);
        if slots == self.slots.len() {
            return Err(IndexFull);
        }
        let old = std::mem::replace(&mut self.slots, vec![0; slots]);
        for packed in old.into_iter().filter(|&s| s != 0) {
            self.place(packed);
        }
        Ok(())
    }

    /// Every location, in table order.
    pub(crate) fn locations(&self) -> impl Iterator<Item = Loc> + '_ {
        self.slots.iter().filter(|&&s| s != 0).map(|&s| Loc::unpack(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Keys are numbers; a location's offset encodes which key it is.
    fn loc(key: u32) -> Loc {
        Loc { segment: (key % 7) as u16, offset: (key + 1) * 8 }
    }

    #[test]
    fn matches_a_hash_map_including_colliding_tags() {
        let mut index = Index::default();
        let mut model = HashMap::new();
        // Few distinct hashes, so tags collide and runs are long.
        let hash = |k: u32| u64::from(k % 97).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for step in 0..20_000u32 {
            let k = step.wrapping_mul(2_654_435_761) % 3_000;
            let is_key = |l: Loc| l.offset == (k + 1) * 8;
            if step % 3 == 0 {
                assert_eq!(index.remove(hash(k), is_key), model.remove(&k));
            } else {
                assert_eq!(index.insert(hash(k), loc(k), is_key).unwrap(), model.insert(k, loc(k)));
            }
            assert_eq!(index.len(), model.len());
        }
        for k in 0..3_000u32 {
            let is_key = |l: Loc| l.offset == (k + 1) * 8;
            assert_eq!(index.get(hash(k), is_key), model.get(&k).copied());
        }
    }

    /// The memory goal, at every size and not only between growths: at most 16 bytes a key
    /// (13.7 just after growing) from a thousand keys on.
    #[test]
    fn takes_at_most_16_bytes_a_key_at_every_size() {
        let mut index = Index::default();
        let (mut worst, mut best, mut growths, mut bytes) = (0.0f64, f64::MAX, 0, 0);
        for k in 0..300_000u32 {
            let hash = u64::from(k).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            index.insert(hash, loc(k), |_| false).unwrap();
            if index.len() >= 1_000 {
                let per_key = index.bytes() as f64 / index.len() as f64;
                (worst, best) = (worst.max(per_key), best.min(per_key));
                if index.bytes() != bytes {
                    (growths, bytes) = (growths + 1, index.bytes());
                }
            }
        }
        assert!(growths >= 10, "the table grew {growths} times while measured");
        assert!(worst <= 13.8, "{worst:.2} bytes a key just after growing");
        assert!(best >= 9.1, "{best:.2} bytes a key: fuller than 7/8");
    }

    /// The table wraps: keys whose home is the last slot probe on from slot 0, and removing
    /// them shifts the run back across the end.
    #[test]
    fn runs_wrap_around_the_end_of_the_table() {
        let mut index = Index::default();
        let top = (1u64 << TAG_BITS) - 1; // tags whose home is the last slot
        let hash = |k: u32| ((top - u64::from(k % 2)) << (64 - TAG_BITS)) | u64::from(k);
        let is = |k: u32| move |l: Loc| l.offset == (k + 1) * 8;
        for k in 0..10 {
            assert_eq!(index.insert(hash(k), loc(k), is(k)).unwrap(), None);
        }
        assert_eq!(index.slots.len(), 16);
        assert!(index.slots[0] != 0, "the run wrapped to slot 0");
        for k in (0..10).step_by(3) {
            assert_eq!(index.remove(hash(k), is(k)), Some(loc(k)));
        }
        for k in 0..10 {
            let expected = (k % 3 != 0).then(|| loc(k));
            assert_eq!(index.get(hash(k), is(k)), expected, "key {k}");
        }
    }
}
