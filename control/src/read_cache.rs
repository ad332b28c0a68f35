//! Values being read in fragments, kept whole between the receiver's RANGE pulls.
//!
//! A big value lives in the blob tier as chunks; assembling it costs a copy and a hash check
//! of every chunk. A 16 MiB value is pulled in 512 RANGE requests, so without this cache one
//! read would assemble it 512 times. Entries are keyed by (endpoint, key, version): a pull for
//! a version gets exactly that version's bytes (a snapshot as of the read's first fragment),
//! and a newer write simply makes new pulls miss.

/// Values kept at once (each up to 16 MiB).
const ENTRIES_MAX: usize = 4;

#[derive(Debug)]
struct Entry {
    slot: usize,
    key: Vec<u8>,
    version: u64,
    value: Vec<u8>,
    last_used: u64,
}

/// A few recently read big values.
#[derive(Debug, Default)]
pub(crate) struct ReadCache {
    entries: Vec<Entry>,
    clock: u64,
}

impl ReadCache {
    /// The cached value of `key` at `version` in endpoint `slot`.
    pub(crate) fn get(&mut self, slot: usize, key: &[u8], version: u64) -> Option<&[u8]> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.slot == slot && e.version == version && e.key == key)?;
        entry.last_used = clock;
        Some(&entry.value)
    }

    /// Keeps a copy of a value being read in fragments, evicting the least recently used.
    pub(crate) fn insert(&mut self, slot: usize, key: &[u8], version: u64, value: &[u8]) {
        self.clock += 1;
        if self.get(slot, key, version).is_some() {
            return;
        }
        let entry = Entry {
            slot,
            key: key.to_vec(),
            version,
            value: value.to_vec(),
            last_used: self.clock,
        };
        if self.entries.len() < ENTRIES_MAX {
            self.entries.push(entry);
        } else if let Some(oldest) = self.entries.iter_mut().min_by_key(|e| e.last_used) {
            *oldest = entry;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_the_same_version_and_evicts_the_least_recent() {
        let mut cache = ReadCache::default();
        cache.insert(0, b"k", 1, b"one");
        assert_eq!(cache.get(0, b"k", 1), Some(&b"one"[..]));
        assert_eq!(cache.get(0, b"k", 2), None);
        assert_eq!(cache.get(1, b"k", 1), None);
        for v in 2..=4 {
            cache.insert(0, b"k", v, b"x");
        }
        cache.get(0, b"k", 1);
        cache.insert(0, b"k", 5, b"five");
        assert!(cache.get(0, b"k", 1).is_some(), "recently used survives");
        assert!(cache.get(0, b"k", 2).is_none(), "least recent evicted");
        assert_eq!(cache.get(0, b"k", 5), Some(&b"five"[..]));
    }
}
