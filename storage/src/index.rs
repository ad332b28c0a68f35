//! The index: key hash -> record location, 8 bytes a slot.
//!
//! Open addressing with linear probing over a power-of-two table of `u64` slots:
//!
//! ```text
//! bits 63..38  tag: the top 26 bits of the key's xxh3-64 hash
//! bits 37..26  segment slot (12 bits: up to 4096 live segments per endpoint)
//! bits 25..0   offset in the segment, in 8-byte units (26 bits: segments up to 512 MiB)
//! ```
//!
//! Zero is an empty slot (no record sits at offset 0: the segment header does). The home
//! bucket is the top bits of the tag, so the table grows without reading keys back; that
//! caps it at 2^26 slots (58 million keys per endpoint at the 7/8 load limit). The full key
//! is compared against the log by the caller's `is_key`. An empty index allocates nothing.

const TAG_BITS: u32 = 26;
const SEGMENT_BITS: u32 = 12;
const OFFSET_BITS: u32 = 26;
/// Most slots a table may have.
pub(crate) const SLOTS_MAX: usize = 1 << TAG_BITS;
/// Most segment slots.
pub(crate) const SEGMENTS_MAX: usize = 1 << SEGMENT_BITS;
/// Largest byte offset a location can hold.
pub(crate) const OFFSET_MAX: u64 = ((1 << OFFSET_BITS) - 1) * 8;
const SLOTS_MIN: usize = 16;

/// Where a record is: a segment slot and a byte offset (a multiple of 8, not 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) segment: u16,
    pub(crate) offset: u32,
}

impl Loc {
    fn pack(self, tag: u64) -> u64 {
        let units = u64::from(self.offset) / 8;
        debug_assert!(self.offset.is_multiple_of(8) && units != 0 && units < 1 << OFFSET_BITS);
        debug_assert!(usize::from(self.segment) < SEGMENTS_MAX);
        (tag << (SEGMENT_BITS + OFFSET_BITS)) | (u64::from(self.segment) << OFFSET_BITS) | units
    }

    fn unpack(slot: u64) -> Loc {
        Loc {
            segment: ((slot >> OFFSET_BITS) & ((1 << SEGMENT_BITS) - 1)) as u16,
            offset: ((slot & ((1 << OFFSET_BITS) - 1)) * 8) as u32,
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

    fn home(&self, tag: u64) -> usize {
        let bits = self.slots.len().trailing_zeros();
        (tag >> (TAG_BITS - bits)) as usize
    }

    /// The slot holding the key, found by `is_key` among the slots with its tag.
    fn position(&self, hash: u64, mut is_key: impl FnMut(Loc) -> bool) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let tag = tag_of(hash);
        let mask = self.slots.len() - 1;
        let mut i = self.home(tag);
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            if slot_tag(slot) == tag && is_key(Loc::unpack(slot)) {
                return Some(i);
            }
            i = (i + 1) & mask;
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
        let mask = self.slots.len() - 1;
        let mut i = (hole + 1) & mask;
        while self.slots[i] != 0 {
            let home = self.home(slot_tag(self.slots[i]));
            if (i.wrapping_sub(home) & mask) >= (i.wrapping_sub(hole) & mask) {
                self.slots[hole] = self.slots[i];
                self.slots[i] = 0;
                hole = i;
            }
            i = (i + 1) & mask;
        }
        Some(old)
    }

    fn place(&mut self, packed: u64) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(slot_tag(packed));
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = packed;
    }

    fn grow(&mut self) -> Result<(), IndexFull> {
        let slots = (self.slots.len() * 2).max(SLOTS_MIN);
        if slots > SLOTS_MAX {
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
}
