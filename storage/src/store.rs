//! One endpoint's store: its index over the core's log (the records it wrote there), its
//! LSNs, and the writes. The log, the blob tier, group commit and cleaning are the core's
//! [`Shelf`], which every call takes.

use crate::blob::{self, Hash};
use crate::error::{Corruption, Limit, StoreError};
use crate::index::{Index, Loc};
use crate::log::Log;
use crate::record::{Bad, Kind, Meta, Record, Stamp};
use crate::shelf::Shelf;
use proto::replication::NOTE_VALUE_BYTES;
use std::cell::Cell;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Not the partitioning hash (a partition's keys share its top bits): the index needs
/// hashes spread over the whole space.
const INDEX_SEED: u64 = 0x6372_6164_6c65_6978;

pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, INDEX_SEED)
}

/// The outcome of a compare-and-swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// Written; the new version.
    Swapped(u64),
    /// Not written; the current version (0: absent).
    Mismatch(u64),
}

/// A write as a replica applies it (see [`Store::apply_at`]): its effect, decided by the
/// primary (a CAS that swapped is a put).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied<'a> {
    /// `key` now holds `value`.
    Put {
        /// The key.
        key: &'a [u8],
        /// Its new value.
        value: &'a [u8],
        /// Its flags and expiry.
        meta: Meta,
    },
    /// `key` was deleted.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// A write of `key` changed nothing (see [`Store::note`]).
    Note {
        /// The key.
        key: &'a [u8],
        /// How the write was answered: its status (the wire's number).
        status: u16,
        /// The version the answer said.
        version: u64,
    },
}

/// A note's payload (and a replicated note's value): its status, then its version.
pub fn note_payload(status: u16, version: u64) -> [u8; NOTE_VALUE_BYTES] {
    let mut payload = [0; NOTE_VALUE_BYTES];
    payload[..2].copy_from_slice(&status.to_le_bytes());
    payload[2..].copy_from_slice(&version.to_le_bytes());
    payload
}

/// The status and version of a note's payload (another length reads as none).
pub fn parse_note(payload: &[u8]) -> Option<(u16, u64)> {
    let payload: &[u8; NOTE_VALUE_BYTES] = payload.try_into().ok()?;
    let status = u16::from_le_bytes([payload[0], payload[1]]);
    Some((status, u64::from_le_bytes(payload[2..].try_into().expect("8 bytes"))))
}

/// Where a value lives (see [`Store::get_reference`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueRef<'a> {
    /// In the endpoint's log: the value itself.
    Inline(&'a [u8]),
    /// In the blob tier: value length (u64 little-endian), then each chunk's BLAKE3 hash.
    Blob(&'a [u8]),
}

/// Sizes of one endpoint store, for `cradle status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live keys.
    pub keys: u64,
    /// Bytes of live keys and values (blob values at their full length).
    pub live_bytes: u64,
    /// Bytes of the in-memory index.
    pub index_bytes: u64,
    /// 1 if the endpoint is quarantined.
    pub quarantined: u64,
    /// Writes (and failed flushes) refused because the process ran into a limit
    /// ([`StoreError::Exhausted`]).
    pub limit_refusals: u64,
    /// Writes and flushes refused `NoSpace`: a full disk, or the endpoint's key or segment
    /// limit (a flush that failed counts once, whatever number of writes it answered).
    pub no_space_refusals: u64,
}

/// A live value with everything the store keeps of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item<'a> {
    /// The value's bytes (borrowed from the log, or assembled from blob chunks).
    pub value: &'a [u8],
    /// Its version.
    pub version: u64,
    /// Its flags and expiry.
    pub meta: Meta,
}

/// What the previous record of a key was, for accounting.
struct Previous {
    loc: Loc,
    span: u64,
    live: u64,
    blob: bool,
    /// Expired by the store's clock: still in the index, but reads as absent.
    expired: bool,
}

/// One endpoint's keys: an index in memory over its records in the core's log.
#[derive(Debug)]
pub struct Store {
    /// Its slot on the core: what its records are named by.
    pub(crate) endpoint: u32,
    pub(crate) index: Index,
    pub(crate) last_version: u64,
    pub(crate) live_bytes: u64,
    /// Boxed: rare, and a `Store` is kept small (a core may have 100,000 of them, and each
    /// write reads its own at random).
    pub(crate) quarantine: Option<Box<Corruption>>,
    /// Blob chunks whose last reference here was dropped; released after the next sync.
    pub(crate) released: Vec<Hash>,
    /// Appended since its last flush.
    dirty: bool,
    /// Stopped from outside (`stop`), or by a flush that failed.
    pub(crate) failure: Option<StoreError>,
    /// Times it was emptied (`clear`): a snapshot taken before is stale.
    pub(crate) clears: u64,
    /// Where its last drop record is (segment number, offset): its records before it are
    /// dead, whatever they hold (cleaning drops them unread, a damaged one included).
    pub(crate) dropped_at: Option<(u64, u32)>,
    /// Wall-clock nanoseconds by which expiry is judged (`set_clock`); 0 until set.
    pub(crate) clock_ns: u64,
    /// Writes refused for a limit, and the last limit.
    limit_refusals: u64,
    limit: Option<Limit>,
    no_space_refusals: u64,
}

impl Store {
    pub(crate) fn empty(endpoint: u32) -> Store {
        Store {
            endpoint,
            index: Index::default(),
            last_version: 0,
            live_bytes: 0,
            quarantine: None,
            released: Vec::new(),
            dirty: false,
            failure: None,
            clears: 0,
            dropped_at: None,
            clock_ns: 0,
            limit_refusals: 0,
            limit: None,
            no_space_refusals: 0,
        }
    }

    /// Counts a write refused for a limit or for space (`StoreStats::limit_refusals`,
    /// `no_space_refusals`).
    fn counted(&mut self, e: StoreError) -> StoreError {
        match e {
            StoreError::Exhausted(limit) => {
                self.limit_refusals += 1;
                self.limit = Some(limit);
            }
            StoreError::NoSpace => self.no_space_refusals += 1,
            _ => {}
        }
        e
    }

    /// Its slot on the core's log (what its records are named by).
    pub fn endpoint(&self) -> u32 {
        self.endpoint
    }

    /// The limit the last write refused for one ran into (see [`StoreError::Exhausted`]).
    pub fn limit(&self) -> Option<Limit> {
        self.limit
    }

    pub(crate) fn usable(&self, log: &Log) -> Result<(), StoreError> {
        if self.quarantine.is_some() {
            return Err(StoreError::Quarantined);
        }
        self.failure.or(log.failure()).map_or(Ok(()), Err)
    }

    /// Marks the endpoint corrupt at `loc` (a record failed its checks on the way out).
    pub(crate) fn quarantine_at(&mut self, log: &Log, loc: Loc, bad: &str) -> StoreError {
        self.quarantine = Some(Box::new(log.corruption(loc, bad)));
        StoreError::Quarantined
    }

    /// Appends a record of this endpoint to the core's log.
    #[allow(clippy::too_many_arguments)] // (a record's fields)
    pub(crate) fn append(
        &mut self,
        log: &mut Log,
        kind: Kind,
        lsn: u64,
        stamp: Option<&Stamp>,
        meta: &Meta,
        key: &[u8],
        payload: &[u8],
    ) -> Result<Loc, StoreError> {
        let loc = log.append(kind, self.endpoint, lsn, stamp, meta, key, payload);
        let loc = loc.map_err(|e| self.counted(e))?;
        self.dirty = true;
        Ok(loc)
    }

    /// Reads what a request for `key` will read first (this store and its index's home slot
    /// for the key), so that a burst's cache misses overlap when it is called for each
    /// request of the burst before any is served. Returns a value only so the reads are not
    /// optimised away.
    pub fn warm(&self, key: &[u8]) -> u64 {
        self.index.home_slot(key_hash(key)) ^ self.last_version
    }

    /// The index entry of `key` and its record; a record that fails its checks is an error.
    pub(crate) fn find<'a>(
        &self,
        log: &'a Log,
        key: &[u8],
    ) -> Result<Option<(Loc, Record<'a>)>, (Loc, Bad)> {
        let (bad, found) = (Cell::new(None), Cell::new(None));
        self.index.get(key_hash(key), |loc| match log.read(loc) {
            Ok(r) if r.key == key => {
                found.set(Some((loc, r)));
                true
            }
            Ok(_) => false,
            Err(b) => {
                bad.set(Some((loc, b)));
                false
            }
        });
        match bad.get() {
            Some(bad) => Err(bad),
            None => Ok(found.get()),
        }
    }

    /// Moves the store's clock on to `now_ns` (wall-clock nanoseconds since the Unix epoch):
    /// values whose `Meta::expires_at_ns` is at or before it read as absent from then on. The
    /// store reads no clock itself; the caller sets it before the requests it serves. It
    /// never goes back (a clock stepped backwards does not bring expired values back).
    pub fn set_clock(&mut self, now_ns: u64) {
        self.clock_ns = self.clock_ns.max(now_ns);
    }

    fn previous(&mut self, log: &Log, key: &[u8]) -> Result<Option<Previous>, StoreError> {
        self.usable(log).map_err(|e| self.counted(e))?;
        let now = self.clock_ns;
        match self.find(log, key) {
            Ok(found) => Ok(found.map(|(loc, r)| previous_of(loc, &r, now))),
            Err((loc, bad)) => Err(self.quarantine_at(log, loc, bad.describe())),
        }
    }

    /// The live record of `key` and where it is (an expired one is absent), read and checked
    /// once; a record that fails its checks quarantines the endpoint.
    fn locate<'a>(
        &mut self,
        log: &'a Log,
        key: &[u8],
    ) -> Result<Option<(Loc, Record<'a>)>, StoreError> {
        if self.quarantine.is_some() {
            return Err(StoreError::Quarantined);
        }
        let now = self.clock_ns;
        match self.find(log, key) {
            Ok(found) => Ok(found.filter(|(_, r)| !r.meta.expired(now))),
            Err((loc, bad)) => Err(self.quarantine_at(log, loc, bad.describe())),
        }
    }

    /// The value and version of `key`. A small value is borrowed from the log (no copy, no
    /// allocation); a blob value is assembled in the blob store's buffer.
    pub fn get<'a>(
        &mut self,
        shelf: &'a mut Shelf,
        key: &[u8],
    ) -> Result<Option<(&'a [u8], u64)>, StoreError> {
        Ok(self.get_item(shelf, key)?.map(|item| (item.value, item.version)))
    }

    /// The value of `key` with its version and metadata (flags, expiry).
    pub fn get_item<'a>(
        &mut self,
        shelf: &'a mut Shelf,
        key: &[u8],
    ) -> Result<Option<Item<'a>>, StoreError> {
        let Some((loc, record)) = self.locate(&shelf.log, key)? else { return Ok(None) };
        let (version, meta) = (record.lsn, record.meta);
        if record.kind == Kind::Put {
            return Ok(Some(Item { value: record.payload, version, meta }));
        }
        match shelf.blobs.read(record.payload) {
            Ok(value) => Ok(Some(Item { value, version, meta })),
            Err(_) => Err(self.quarantine_at(&shelf.log, loc, "blob chunk missing or corrupt")),
        }
    }

    /// Where the value of `key` lives, without assembling a blob: its bytes when it is in
    /// the log, or the blob reference (value length u64, then the chunk hashes).
    pub fn get_reference<'a>(
        &mut self,
        shelf: &'a Shelf,
        key: &[u8],
    ) -> Result<Option<(ValueRef<'a>, u64)>, StoreError> {
        let Some((_, record)) = self.locate(&shelf.log, key)? else { return Ok(None) };
        let value = match record.kind {
            Kind::Put => ValueRef::Inline(record.payload),
            _ => ValueRef::Blob(record.payload),
        };
        Ok(Some((value, record.lsn)))
    }

    /// The version of `key`, 0 if absent.
    pub fn version(&mut self, shelf: &Shelf, key: &[u8]) -> Result<u64, StoreError> {
        Ok(self.locate(&shelf.log, key)?.map_or(0, |(_, r)| r.lsn))
    }

    /// The version of the newest record of `key`, expired or not (0: none; a delete's
    /// tombstone counts): what a replica applying writes out of order compares with.
    pub(crate) fn newest_version(&mut self, log: &Log, key: &[u8]) -> Result<u64, StoreError> {
        if self.quarantine.is_some() {
            return Err(StoreError::Quarantined);
        }
        match self.find(log, key) {
            Ok(found) => Ok(found.map_or(0, |(_, r)| r.lsn)),
            Err((loc, bad)) => Err(self.quarantine_at(log, loc, bad.describe())),
        }
    }

    /// Writes `value` under `key`; returns the new version. Applied (readable) at once;
    /// durable after the next successful [`Store::flush`]. `stamp` (who asked, kept in the
    /// record) comes back from replay in [`crate::RecoveryReport::stamps`].
    pub fn put(
        &mut self,
        shelf: &mut Shelf,
        key: &[u8],
        value: &[u8],
        stamp: Option<&Stamp>,
    ) -> Result<u64, StoreError> {
        self.put_with(shelf, key, value, &Meta::NONE, stamp)
    }

    /// [`Store::put`] with metadata (flags, expiry) kept in the value's record.
    pub fn put_with(
        &mut self,
        shelf: &mut Shelf,
        key: &[u8],
        value: &[u8],
        meta: &Meta,
        stamp: Option<&Stamp>,
    ) -> Result<u64, StoreError> {
        self.put_at(shelf, self.last_version + 1, key, value, meta, stamp)
    }

    /// A replica applies, in order, what its primary wrote: the write at `lsn` (the version
    /// the primary gave it), which must be the next one here ([`Store::last_lsn`] + 1).
    /// Returns the version, as [`Store::put`] and [`Store::delete`] do.
    pub fn apply_at(
        &mut self,
        shelf: &mut Shelf,
        lsn: u64,
        write: Applied<'_>,
        stamp: Option<&Stamp>,
    ) -> Result<u64, StoreError> {
        assert_eq!(lsn, self.last_version + 1, "writes apply in LSN order");
        match write {
            Applied::Put { key, value, meta } => self.put_at(shelf, lsn, key, value, &meta, stamp),
            Applied::Delete { key } => self.delete_at(shelf, lsn, key, stamp).map(|_| lsn),
            Applied::Note { key, status, version } => {
                self.note_at(&mut shelf.log, lsn, key, stamp, status, version).map(|()| lsn)
            }
        }
    }

    /// Records, at the next LSN, that a write of `key` stamped `stamp` changed nothing and
    /// was answered `status` (its wire number) with `version`: a delete of an absent key, a
    /// CAS that did not match. A replicated partition writes one, so that its backups hold
    /// the write's completion record too: a resend that reaches a new primary after a
    /// failover is answered as the first attempt was, not applied (found by the simulation:
    /// a delayed copy of a delete answered "not found" deleted the key written since). The
    /// record is garbage from birth, like a tombstone. Returns its LSN.
    pub fn note(
        &mut self,
        shelf: &mut Shelf,
        key: &[u8],
        stamp: &Stamp,
        status: u16,
        version: u64,
    ) -> Result<u64, StoreError> {
        let lsn = self.last_version + 1;
        self.note_at(&mut shelf.log, lsn, key, Some(stamp), status, version)?;
        Ok(lsn)
    }

    /// The same for an endpoint with no replicas, where the note only has to bring its
    /// completion record back on replay (a resend or duplicate after a restart is answered,
    /// not applied): it takes no LSN (it carries the last one again), so the versions a
    /// client sees do not move for writes that changed nothing.
    pub fn note_unnumbered(
        &mut self,
        shelf: &mut Shelf,
        key: &[u8],
        stamp: &Stamp,
        status: u16,
        version: u64,
    ) -> Result<(), StoreError> {
        self.note_at(&mut shelf.log, self.last_version, key, Some(stamp), status, version)
    }

    pub(crate) fn note_at(
        &mut self,
        log: &mut Log,
        lsn: u64,
        key: &[u8],
        stamp: Option<&Stamp>,
        status: u16,
        version: u64,
    ) -> Result<(), StoreError> {
        self.usable(log).map_err(|e| self.counted(e))?;
        let payload = note_payload(status, version);
        let loc = self.append(log, Kind::Note, lsn, stamp, &Meta::NONE, key, &payload)?;
        self.last_version = lsn;
        log.mark_dead_record(loc);
        Ok(())
    }

    /// Writes a floor: replay raises the endpoint's LSN to at least `lsn`. It is counted
    /// live, never dead (cleaning carries it forward while it still holds the LSN, so a log
    /// of floors alone must not look like garbage to clean again and again).
    pub(crate) fn floor(&mut self, log: &mut Log, lsn: u64) -> Result<(), StoreError> {
        self.append(log, Kind::Floor, lsn, None, &Meta::NONE, &[], &[]).map(drop)
    }

    /// The LSN of the last write (every record written takes the next one; 0: none yet).
    pub fn last_lsn(&self) -> u64 {
        self.last_version
    }

    pub(crate) fn put_at(
        &mut self,
        shelf: &mut Shelf,
        version: u64,
        key: &[u8],
        value: &[u8],
        meta: &Meta,
        stamp: Option<&Stamp>,
    ) -> Result<u64, StoreError> {
        assert!(key.len() <= proto::KEY_BYTES_MAX, "proto bounds keys");
        let previous = self.previous(&shelf.log, key)?;
        if previous.is_none() && self.index.len() >= shelf.config.keys_max {
            return Err(self.counted(StoreError::NoSpace));
        }
        let mut reference = std::mem::take(&mut shelf.scratch);
        let blob = value.len() >= shelf.config.blob_threshold_bytes;
        let appended = if blob {
            match shelf.blobs.put(value, &mut reference) {
                Ok(()) => {
                    let log = &mut shelf.log;
                    let appended =
                        self.append(log, Kind::Blob, version, stamp, meta, key, &reference);
                    if appended.is_err() {
                        let taken: Vec<Hash> = blob::hashes(&reference).collect();
                        shelf.blobs.drop_refs(&taken).map_err(|e| self.counted(e))?;
                    }
                    appended
                }
                Err(e) => Err(self.counted(e)),
            }
        } else {
            self.append(&mut shelf.log, Kind::Put, version, stamp, meta, key, value)
        };
        shelf.scratch = reference;
        let loc = appended?;
        self.last_version = version;
        self.link(shelf, key, loc, previous);
        self.live_bytes += (key.len() + value.len()) as u64;
        Ok(version)
    }

    /// Points the index at a new record and retires the previous one, which `find` located:
    /// the key's slot is the one holding that location (none if there was none), so no
    /// record is read again.
    fn link(&mut self, shelf: &mut Shelf, key: &[u8], loc: Loc, previous: Option<Previous>) {
        let old = previous.as_ref().map(|p| p.loc);
        let replaced = self
            .index
            .insert(key_hash(key), loc, |l| Some(l) == old)
            .expect("keys_max keeps the index below its limit");
        assert_eq!(replaced, previous.as_ref().map(|p| p.loc));
        if let Some(p) = previous {
            self.retire(shelf, p);
        }
    }

    /// The previous record of a key is dead: its blob chunks stop being readable at once and
    /// are freed once this write is durable.
    fn retire(&mut self, shelf: &mut Shelf, previous: Previous) {
        shelf.log.mark_dead(previous.loc, previous.span);
        self.live_bytes -= previous.live;
        if previous.blob {
            let record = shelf.log.read(previous.loc).expect("a live record reads");
            shelf.blobs.detach(blob::hashes(record.payload));
            self.released.extend(blob::hashes(record.payload));
        }
    }

    /// Writes `value` if the key's version is `expected` (0: only if absent). A mismatch
    /// writes nothing (and keeps no stamp: it changed nothing, so doing it again is harmless).
    pub fn cas(
        &mut self,
        shelf: &mut Shelf,
        key: &[u8],
        expected: u64,
        value: &[u8],
        stamp: Option<&Stamp>,
    ) -> Result<CasOutcome, StoreError> {
        self.cas_with(shelf, key, expected, value, &Meta::NONE, stamp)
    }

    /// [`Store::cas`] with metadata for the new value. An expired value has version 0.
    pub fn cas_with(
        &mut self,
        shelf: &mut Shelf,
        key: &[u8],
        expected: u64,
        value: &[u8],
        meta: &Meta,
        stamp: Option<&Stamp>,
    ) -> Result<CasOutcome, StoreError> {
        self.usable(&shelf.log).map_err(|e| self.counted(e))?;
        let current = self.version(shelf, key)?;
        if current != expected {
            return Ok(CasOutcome::Mismatch(current));
        }
        self.put_with(shelf, key, value, meta, stamp).map(CasOutcome::Swapped)
    }

    /// Gives the live value of `key` new metadata (its bytes unchanged, a new version):
    /// memcached's `touch`. Returns the new version, or `None` when the key is absent.
    pub fn rewrite_meta(
        &mut self,
        shelf: &mut Shelf,
        key: &[u8],
        meta: &Meta,
        stamp: Option<&Stamp>,
    ) -> Result<Option<u64>, StoreError> {
        self.usable(&shelf.log).map_err(|e| self.counted(e))?;
        let mut copy = Vec::new();
        match self.get(shelf, key)? {
            Some((value, _)) => copy.extend_from_slice(value),
            None => return Ok(None),
        }
        self.put_with(shelf, key, &copy, meta, stamp).map(Some)
    }

    /// Removes `key`; returns whether it existed. The tombstone takes a version, so a key
    /// created again never gets an old version back. A blob value's chunks are unreadable at
    /// once. Deleting an absent key writes nothing (and keeps no stamp).
    pub fn delete(
        &mut self,
        shelf: &mut Shelf,
        key: &[u8],
        stamp: Option<&Stamp>,
    ) -> Result<bool, StoreError> {
        if self.previous(&shelf.log, key)?.is_none() {
            return Ok(false);
        }
        self.delete_at(shelf, self.last_version + 1, key, stamp)
    }

    /// Writes the tombstone of `key` at `version`, even when the key is absent (a replica
    /// applying its primary's write keeps the LSN sequence whole); returns whether it existed
    /// (an expired value did not: it was absent already, and its tombstone reclaims it).
    pub(crate) fn delete_at(
        &mut self,
        shelf: &mut Shelf,
        version: u64,
        key: &[u8],
        stamp: Option<&Stamp>,
    ) -> Result<bool, StoreError> {
        let previous = self.previous(&shelf.log, key)?;
        let log = &mut shelf.log;
        let loc = self.append(log, Kind::Tombstone, version, stamp, &Meta::NONE, key, &[])?;
        self.last_version = version;
        let existed = previous.as_ref().is_some_and(|p| !p.expired);
        if let Some(previous) = previous {
            let log = &shelf.log;
            let removed =
                self.index.remove(key_hash(key), |l| log.read(l).is_ok_and(|r| r.key == key));
            assert_eq!(removed, Some(previous.loc));
            self.retire(shelf, previous);
        }
        // A tombstone is garbage from birth: cleaning drops it with its segment.
        shelf.log.mark_dead_record(loc);
        Ok(existed)
    }

    /// Group commit for the `flushed` class: makes every write so far durable (blob chunks
    /// first, then the core's log), then frees blob chunks this endpoint stopped referring
    /// to. Call once per loop iteration for each endpoint that `needs_flush`, and answer its
    /// writes only after this returns Ok: the first such call of a batch syncs the core's
    /// log, whatever number of endpoints wrote to it, and the others find nothing left to
    /// do. A failure stops the log: later writes on the core fail too.
    pub fn flush(&mut self, shelf: &mut Shelf) -> Result<(), StoreError> {
        self.usable(&shelf.log)?;
        let result = shelf.sync();
        let result = result.and_then(|()| shelf.blobs.release(&std::mem::take(&mut self.released)));
        match result {
            Ok(()) => self.dirty = false,
            Err(e) => {
                // Whatever failed, this endpoint's writes were not made durable: stop it.
                self.failure.get_or_insert(e);
                self.counted(e);
            }
        }
        result
    }

    /// Moves the blob chunks this endpoint stopped referring to into `out`, for a caller that
    /// makes the records durable another way (a file-system-wide sync in the background, the
    /// `memory` class) and then gives them back with [`crate::BlobStore::release`]. A store
    /// that stopped hands nothing back: the record that dropped a chunk may never have been
    /// written, and the chunk is reclaimed at the next start if nothing refers to it.
    pub fn take_released(&mut self, shelf: &Shelf, out: &mut Vec<Hash>) {
        if self.usable(&shelf.log).is_ok() {
            out.append(&mut self.released);
        }
        self.dirty = false;
    }

    /// Stops the store for good (until a restart): writes are refused with `failure`, reads
    /// still served. For a durability failure found outside the store (a background sync).
    pub fn stop(&mut self, failure: StoreError) {
        self.failure.get_or_insert(failure);
    }

    /// Whether [`Store::flush`] has work to do.
    pub fn needs_flush(&self) -> bool {
        self.dirty || !self.released.is_empty()
    }

    /// Hands appended records to the kernel without waiting for the disk: what the `memory`
    /// class does at the end of a batch (they survive a process crash, not a power cut).
    pub fn write_out(&mut self, shelf: &mut Shelf) -> Result<(), StoreError> {
        self.usable(&shelf.log)?;
        shelf.log.write_out()
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no live keys.
    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// Bytes of live keys and values.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The corruption that quarantined this endpoint, if any.
    pub fn quarantine(&self) -> Option<&Corruption> {
        self.quarantine.as_deref()
    }

    /// The failure that stopped this endpoint's writes (`NoSpace`, `Exhausted` or
    /// `Poisoned`; its own, or the core log's), if any.
    pub fn failure(&self, shelf: &Shelf) -> Option<StoreError> {
        self.failure.or(shelf.log.failure())
    }

    /// Sizes, for `cradle status` (the log's are the core's: [`Shelf::stats`]).
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.index.len() as u64,
            live_bytes: self.live_bytes,
            index_bytes: self.index.bytes() as u64,
            quarantined: u64::from(self.quarantine.is_some()),
            limit_refusals: self.limit_refusals,
            no_space_refusals: self.no_space_refusals,
        }
    }

    /// Calls `f` with every live key, value and version (export, snapshots). Not for the
    /// serving path: it collects the index locations first.
    pub fn for_each(
        &mut self,
        shelf: &mut Shelf,
        mut f: impl FnMut(&[u8], &[u8], u64),
    ) -> Result<(), StoreError> {
        if self.quarantine.is_some() {
            return Err(StoreError::Quarantined);
        }
        let locations: Vec<Loc> = self.index.locations().collect();
        for loc in locations {
            let record = match shelf.log.read(loc) {
                Ok(r) => r,
                Err(bad) => return Err(self.quarantine_at(&shelf.log, loc, bad.describe())),
            };
            if record.meta.expired(self.clock_ns) {
                continue;
            }
            if record.kind == Kind::Put {
                f(record.key, record.payload, record.lsn);
                continue;
            }
            match shelf.blobs.read(record.payload) {
                Ok(value) => f(record.key, value, record.lsn),
                Err(_) => {
                    return Err(self.quarantine_at(
                        &shelf.log,
                        loc,
                        "blob chunk missing or corrupt",
                    ))
                }
            }
        }
        Ok(())
    }

    /// Calls `f` with every live key (SCAN pages, export). Reads no blob chunk. Not for the
    /// serving path of busy endpoints: it visits the whole index.
    pub fn for_each_key(
        &mut self,
        shelf: &Shelf,
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), StoreError> {
        if self.quarantine.is_some() {
            return Err(StoreError::Quarantined);
        }
        let mut bad = None;
        for loc in self.index.locations() {
            match shelf.log.read(loc) {
                Ok(record) if record.meta.expired(self.clock_ns) => {}
                Ok(record) => f(record.key),
                Err(b) => {
                    bad = Some((loc, b));
                    break;
                }
            }
        }
        match bad {
            Some((loc, b)) => Err(self.quarantine_at(&shelf.log, loc, b.describe())),
            None => Ok(()),
        }
    }

    /// Cleaning met `loc`, a record of this endpoint in the oldest segment: copies it to the
    /// head if the index still points at it (or reclaims it if it has expired), and when it
    /// is dead but held the endpoint's LSN, writes a floor so that the LSN survives it.
    pub(crate) fn clean_record(&mut self, shelf: &mut Shelf, loc: Loc) -> Result<(), StoreError> {
        let record = match shelf.log.read(loc) {
            Ok(r) => r,
            Err(bad) => return Err(self.quarantine_at(&shelf.log, loc, bad.describe())),
        };
        let hash = key_hash(record.key);
        let live = matches!(record.kind, Kind::Put | Kind::Blob)
            && self.index.get(hash, |l| l == loc).is_some();
        if !live {
            if record.lsn == self.last_version && record.lsn != 0 {
                let lsn = record.lsn;
                self.floor(&mut shelf.log, lsn)?;
            }
            return Ok(());
        }
        let (kind, lsn, meta) = (record.kind, record.lsn, record.meta);
        let mut copy = std::mem::take(&mut shelf.scratch);
        copy.clear();
        copy.extend_from_slice(record.key);
        copy.extend_from_slice(record.payload);
        let key_len = record.key.len();
        if meta.expired(self.clock_ns) {
            // Reclaimed instead of copied: a tombstone (durable before any blob chunk it
            // frees), so a replay of the older segments cannot bring the value back.
            let deleted = self.delete(shelf, &copy[..key_len], None);
            shelf.scratch = copy;
            return deleted.map(drop);
        }
        let log = &mut shelf.log;
        let appended = self.append(log, kind, lsn, None, &meta, &copy[..key_len], &copy[key_len..]);
        shelf.scratch = copy;
        let moved = appended?;
        self.index.insert(hash, moved, |l| l == loc).expect("replacing an entry needs no room");
        Ok(())
    }
}

fn previous_of(loc: Loc, record: &Record<'_>, now_ns: u64) -> Previous {
    let blob = record.kind == Kind::Blob;
    let value_len =
        if blob { blob::value_len(record.payload) } else { record.payload.len() as u64 };
    let live = record.key.len() as u64 + value_len;
    let expired = record.meta.expired(now_ns);
    Previous { loc, span: record.span as u64, live, blob, expired }
}
#[cfg(test)]
mod tests {
    /// A core may hold 100,000 endpoints and a write reads its endpoint's `Store` at random:
    /// it stays within a few cache lines (the configuration and the write buffer are the
    /// shelf's, one per core; a quarantine is boxed).
    #[test]
    fn a_store_is_a_few_cache_lines() {
        assert!(
            std::mem::size_of::<super::Store>() <= 160,
            "{}",
            std::mem::size_of::<super::Store>()
        );
    }
}
