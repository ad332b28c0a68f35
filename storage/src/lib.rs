//! The endpoint store: what one endpoint (one replica of one partition) keeps.
//!
//! This is the first, in-memory version: a hash map from key to value and version. Versions
//! are the endpoint's log sequence numbers, strictly increasing and never reused, so CAS has
//! no ABA problem. The durable version (mmap'd append logs, recovery, compaction, blob tier)
//! replaces the inside of `Store` without changing its operations.
//!
//! This crate must never do network I/O and never allocate on a read; an overwrite with a
//! value no larger than the old one reuses its buffer.
#![forbid(unsafe_code)]

use std::collections::HashMap;

/// Why a write was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The store's byte budget is spent.
    NoSpace,
}

/// The outcome of a compare-and-swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// Written; the new version.
    Swapped(u64),
    /// Not written; the current version (0: absent).
    Mismatch(u64),
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    version: u64,
}

/// One endpoint's keys. An empty store does not allocate.
#[derive(Debug, Default)]
pub struct Store {
    entries: HashMap<Box<[u8]>, Entry>,
    last_version: u64,
    live_bytes: u64,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// The value and version of `key`.
    pub fn get(&self, key: &[u8]) -> Option<(&[u8], u64)> {
        self.entries.get(key).map(|e| (e.value.as_slice(), e.version))
    }

    /// The version of `key`, 0 if absent.
    pub fn version(&self, key: &[u8]) -> u64 {
        self.entries.get(key).map_or(0, |e| e.version)
    }

    /// Writes `value` under `key`; returns the new version.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
        self.last_version += 1;
        let version = self.last_version;
        if let Some(entry) = self.entries.get_mut(key) {
            self.live_bytes -= entry.value.len() as u64;
            entry.value.clear();
            entry.value.extend_from_slice(value);
            entry.version = version;
        } else {
            self.live_bytes += key.len() as u64;
            let entry = Entry { value: value.to_vec(), version };
            self.entries.insert(key.into(), entry);
        }
        self.live_bytes += value.len() as u64;
        Ok(version)
    }

    /// Writes `value` if the key's version is `expected` (0: only if absent).
    pub fn cas(
        &mut self,
        key: &[u8],
        expected: u64,
        value: &[u8],
    ) -> Result<CasOutcome, StoreError> {
        let current = self.version(key);
        if current != expected {
            return Ok(CasOutcome::Mismatch(current));
        }
        self.put(key, value).map(CasOutcome::Swapped)
    }

    /// Removes `key`; returns whether it existed.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        match self.entries.remove_entry(key) {
            Some((key, entry)) => {
                self.last_version += 1;
                self.live_bytes -= (key.len() + entry.value.len()) as u64;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no live keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of live keys and values.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Every live key with its value and version, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], u64)> {
        self.entries.iter().map(|(k, e)| (&k[..], e.value.as_slice(), e.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_cas_checks_them() {
        let mut s = Store::new();
        assert_eq!(s.cas(b"k", 0, b"a"), Ok(CasOutcome::Swapped(1)));
        assert_eq!(s.cas(b"k", 0, b"b"), Ok(CasOutcome::Mismatch(1)));
        assert_eq!(s.put(b"k", b"cc"), Ok(2));
        assert_eq!(s.get(b"k"), Some((&b"cc"[..], 2)));
        assert_eq!(s.live_bytes(), 3);
        assert_eq!(s.delete(b"k"), Ok(true));
        assert_eq!(s.delete(b"k"), Ok(false));
        assert_eq!(s.live_bytes(), 0);
        // A re-created key never gets an old version back.
        assert_eq!(s.cas(b"k", 0, b"d"), Ok(CasOutcome::Swapped(4)));
    }
}
