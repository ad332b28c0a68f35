//! Values being read in fragments, kept whole between the receiver's RANGE pulls.
//!
//! A big value lives in the blob tier as chunks; assembling it costs a copy and a hash check
//! of every chunk. A 16 MiB value is pulled in 512 RANGE requests, so without this cache one
//! read would assemble it 512 times. An entry is the live value of (endpoint, key, version)
//! and belongs to the read (client id, tracking id) that assembled it: another reader gets
//! its own. A write to the key forgets its entries at once, and a RANGE pull is checked
//! against the key's live version before the cache is asked, so a copy never outlives the
//! version it holds and an overwritten or deleted value is readable by nobody.

use crate::completions::RequestId;

/// Values kept at once (each up to 16 MiB).
const ENTRIES_MAX: usize = 4;

#[derive(Debug)]
struct Entry {
    slot: usize,
    key: Vec<u8>,
    version: u64,
    reader: RequestId,
    value: Vec<u8>,
    last_used: u64,
}

/// A few big values being pulled.
#[derive(Debug, Default)]
pub(crate) struct ReadCache {
    entries: Vec<Entry>,
    clock: u64,
}

impl ReadCache {
    /// The value of `key` at `version` in endpoint `slot` that `reader` is pulling.
    pub(crate) fn get(
        &mut self,
        slot: usize,
        key: &[u8],
        version: u64,
        reader: RequestId,
    ) -> Option<&[u8]> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.entries.iter_mut().find(|e| {
            e.slot == slot && e.version == version && e.reader == reader && e.key == key
        })?;
        entry.last_used = clock;
        Some(&entry.value)
    }

    /// Keeps a copy of a value `reader` reads in fragments, evicting the least recently used.
    pub(crate) fn insert(
        &mut self,
        slot: usize,
        key: &[u8],
        version: u64,
        reader: RequestId,
        value: &[u8],
    ) {
        if self.get(slot, key, version, reader).is_some() {
            return;
        }
        let entry = Entry {
            slot,
            key: key.to_vec(),
            version,
            reader,
            value: value.to_vec(),
            last_used: self.clock,
        };
        if self.entries.len() < ENTRIES_MAX {
            self.entries.push(entry);
        } else if let Some(oldest) = self.entries.iter_mut().min_by_key(|e| e.last_used) {
            *oldest = entry;
        }
    }

    /// Drops every copy of `key` in endpoint `slot` (it is being written).
    pub(crate) fn forget(&mut self, slot: usize, key: &[u8]) {
        if !self.entries.is_empty() {
            self.entries.retain(|e| e.slot != slot || e.key != key);
        }
    }

    /// Copies held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: RequestId = (1, 1);

    #[test]
    fn hits_only_the_same_version_and_reader_and_evicts_the_least_recent() {
        let mut cache = ReadCache::default();
        cache.insert(0, b"k", 1, R, b"one");
        assert_eq!(cache.get(0, b"k", 1, R), Some(&b"one"[..]));
        assert_eq!(cache.get(0, b"k", 2, R), None);
        assert_eq!(cache.get(1, b"k", 1, R), None);
        assert_eq!(cache.get(0, b"k", 1, (1, 2)), None, "another read");
        assert_eq!(cache.get(0, b"k", 1, (2, 1)), None, "another client");
        for v in 2..=4 {
            cache.insert(0, b"k", v, R, b"x");
        }
        cache.get(0, b"k", 1, R);
        cache.insert(0, b"k", 5, R, b"five");
        assert!(cache.get(0, b"k", 1, R).is_some(), "recently used survives");
        assert!(cache.get(0, b"k", 2, R).is_none(), "least recent evicted");
        assert_eq!(cache.get(0, b"k", 5, R), Some(&b"five"[..]));
    }

    #[test]
    fn a_write_forgets_every_copy_of_its_key() {
        let mut cache = ReadCache::default();
        cache.insert(0, b"k", 1, R, b"one");
        cache.insert(0, b"k", 1, (9, 9), b"one");
        cache.insert(0, b"j", 1, R, b"other key");
        cache.insert(1, b"k", 1, R, b"other endpoint");
        cache.forget(0, b"k");
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(0, b"k", 1, R), None);
        assert!(cache.get(0, b"j", 1, R).is_some() && cache.get(1, b"k", 1, R).is_some());
    }
}
