//! One endpoint's store: the index over its log, the writes, group commit and compaction.

use crate::blob::{self, BlobStore, Hash};
use crate::error::{Corruption, Limit, StoreError};
use crate::index::{Index, Loc};
use crate::log::{Log, SEGMENT_HEADER_BYTES};
use crate::record::{Bad, Kind, Meta, Record, Stamp};
use crate::StoreConfig;
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
    /// Bytes in use in the log's segments (records and headers, live or dead).
    pub log_bytes: u64,
    /// Bytes of records superseded or deleted, reclaimed by compaction.
    pub dead_bytes: u64,
    /// Bytes of live keys and values (blob values at their full length).
    pub live_bytes: u64,
    /// Bytes of the in-memory index.
    pub index_bytes: u64,
    /// Segment files.
    pub segments: u64,
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

/// One endpoint's keys: an index in memory over an append log on a volume.
#[derive(Debug)]
pub struct Store {
    pub(crate) log: Log,
    pub(crate) index: Index,
    pub(crate) last_version: u64,
    pub(crate) live_bytes: u64,
    pub(crate) quarantine: Option<Corruption>,
    pub(crate) config: StoreConfig,
    /// Blob chunks whose last reference here was dropped; released after the next sync.
    pub(crate) released: Vec<Hash>,
    scratch: Vec<u8>,
    pub(crate) compaction: Option<u64>,
    /// Segments deleted so far (compaction, `clear`): a [`crate::Snapshot`] taken before
    /// one was deleted may name records that are gone.
    pub(crate) segments_retired: u64,
    /// Wall-clock nanoseconds by which expiry is judged (`set_clock`); 0 until set.
    pub(crate) clock_ns: u64,
    /// Writes refused for a limit, and the last limit.
    limit_refusals: u64,
    limit: Option<Limit>,
    no_space_refusals: u64,
}

impl Store {
    pub(crate) fn empty(log: Log, config: &StoreConfig) -> Store {
        Store {
            log,
            index: Index::default(),
            last_version: 0,
            live_bytes: 0,
            quarantine: None,
            config: config.clone(),
            released: Vec::new(),
            scratch: Vec::new(),
            compaction: None,
            segments_retired: 0,
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

    /// The limit the last write refused for one ran into (see [`StoreError::Exhausted`]).
    pub fn limit(&self) -> Option<Limit> {
        self.limit
    }

    pub(crate) fn usable(&self) -> Result<(), StoreError> {
        if self.quarantine.is_some() {
            return Err(StoreError::Quarantined);
        }
        self.log.failure().map_or(Ok(()), Err)
    }

    /// Marks the endpoint corrupt at `loc` (a record failed its checks on the way out).
    pub(crate) fn quarantine_at(&mut self, loc: Loc, bad: &str) -> StoreError {
        let number = self.log.segment(loc.segment).number;
        self.quarantine = Some(Corruption {
            file: self.log.volume().describe(&crate::log::segment_name(number)),
            offset: u64::from(loc.offset),
            reason: bad.to_string(),
        });
        StoreError::Quarantined
    }

    /// The index entry of `key` and its record; a record that fails its checks is an error.
    pub(crate) fn find(&self, key: &[u8]) -> Result<Option<(Loc, Record<'_>)>, (Loc, Bad)> {
        let (bad, found) = (Cell::new(None), Cell::new(None));
        self.index.get(key_hash(key), |loc| match self.log.read(loc) {
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

    fn previous(&mut self, key: &[u8]) -> Result<Option<Previous>, StoreError> {
        self.usable().map_err(|e| self.counted(e))?;
        let now = self.clock_ns;
        match self.find(key) {
            Ok(found) => Ok(found.map(|(loc, r)| previous_of(loc, &r, now))),
            Err((loc, bad)) => Err(self.quarantine_at(loc, bad.describe())),
        }
    }

    /// Where the live record of `key` is, its kind and version (an expired one is absent); a
    /// record that fails its checks quarantines the endpoint.
    fn locate(&mut self, key: &[u8]) -> Result<Option<(Loc, Kind, u64)>, StoreError> {
        if self.quarantine.is_some() {
            return Err(StoreError::Quarantined);
        }
        let now = self.clock_ns;
        match self.find(key) {
            Ok(found) => {
                Ok(found.filter(|(_, r)| !r.meta.expired(now)).map(|(loc, r)| (loc, r.kind, r.lsn)))
            }
            Err((loc, bad)) => Err(self.quarantine_at(loc, bad.describe())),
        }
    }

    /// The value and version of `key`. A small value is borrowed from the log (no copy, no
    /// allocation); a blob value is assembled in the blob store's buffer.
    pub fn get<'a>(
        &'a mut self,
        blobs: &'a mut BlobStore,
        key: &[u8],
    ) -> Result<Option<(&'a [u8], u64)>, StoreError> {
        let Some((loc, kind, lsn)) = self.locate(key)? else { return Ok(None) };
        if kind == Kind::Put {
            let record = self.log.read(loc).expect("read just now");
            return Ok(Some((record.payload, lsn)));
        }
        let record = self.log.read(loc).expect("read just now");
        match blobs.read(record.payload) {
            Ok(value) => Ok(Some((value, lsn))),
            Err(_) => Err(self.quarantine_at(loc, "blob chunk missing or corrupt")),
        }
    }

    /// The value of `key` with its version and metadata (flags, expiry).
    pub fn get_item<'a>(
        &'a mut self,
        blobs: &'a mut BlobStore,
        key: &[u8],
    ) -> Result<Option<Item<'a>>, StoreError> {
        let Some((loc, kind, version)) = self.locate(key)? else { return Ok(None) };
        if kind == Kind::Put {
            let record = self.log.read(loc).expect("read just now");
            return Ok(Some(Item { value: record.payload, version, meta: record.meta }));
        }
        let record = self.log.read(loc).expect("read just now");
        let meta = record.meta;
        match blobs.read(record.payload) {
            Ok(value) => Ok(Some(Item { value, version, meta })),
            Err(_) => Err(self.quarantine_at(loc, "blob chunk missing or corrupt")),
        }
    }

    /// Where the value of `key` lives, without assembling a blob: its bytes when it is in
    /// the log, or the blob reference (value length u64, then the chunk hashes).
    pub fn get_reference(&mut self, key: &[u8]) -> Result<Option<(ValueRef<'_>, u64)>, StoreError> {
        let Some((loc, kind, lsn)) = self.locate(key)? else { return Ok(None) };
        let record = self.log.read(loc).expect("read just now");
        let value = match kind {
            Kind::Put => ValueRef::Inline(record.payload),
            _ => ValueRef::Blob(record.payload),
        };
        Ok(Some((value, lsn)))
    }

    /// The version of `key`, 0 if absent.
    pub fn version(&mut self, key: &[u8]) -> Result<u64, StoreError> {
        Ok(self.locate(key)?.map_or(0, |(_, _, lsn)| lsn))
    }

    /// The version of the newest record of `key`, expired or not (0: none; a delete's
    /// tombstone counts): what a replica applying writes out of order compares with.
    pub(crate) fn newest_version(&mut self, key: &[u8]) -> Result<u64, StoreError> {
        if self.quarantine.is_some() {
            return Err(StoreError::Quarantined);
        }
        match self.find(key) {
            Ok(found) => Ok(found.map_or(0, |(_, r)| r.lsn)),
            Err((loc, bad)) => Err(self.quarantine_at(loc, bad.describe())),
        }
    }
    /// Writes `value` under `key`; returns the new version. Applied (readable) at once;
    /// durable after the next successful [`Store::flush`]. `stamp` (who asked, kept in the
    /// record) comes back from replay in [`crate::RecoveryReport::stamps`].
    pub fn put(
        &mut self,
        blobs: &mut BlobStore,
        key: &[u8],
        value: &[u8],
        stamp: Option<&Stamp>,
    ) -> Result<u64, StoreError> {
        self.put_with(blobs, key, value, &Meta::NONE, stamp)
    }

    /// [`Store::put`] with metadata (flags, expiry) kept in the value's record.
    pub fn put_with(
        &mut self,
        blobs: &mut BlobStore,
        key: &[u8],
        value: &[u8],
        meta: &Meta,
        stamp: Option<&Stamp>,
    ) -> Result<u64, StoreError> {
        self.put_at(blobs, self.last_version + 1, key, value, meta, stamp)
    }

    /// A replica applies, in order, what its primary wrote: the write at `lsn` (the version
    /// the primary gave it), which must be the next one here ([`Store::last_lsn`] + 1).
    /// Returns the version, as [`Store::put`] and [`Store::delete`] do.
    pub fn apply_at(
        &mut self,
        blobs: &mut BlobStore,
        lsn: u64,
        write: Applied<'_>,
        stamp: Option<&Stamp>,
    ) -> Result<u64, StoreError> {
        assert_eq!(lsn, self.last_version + 1, "writes apply in LSN order");
        match write {
            Applied::Put { key, value, meta } => self.put_at(blobs, lsn, key, value, &meta, stamp),
            Applied::Delete { key } => self.delete_at(blobs, lsn, key, stamp).map(|_| lsn),
            Applied::Note { key, status, version } => {
                self.note_at(lsn, key, stamp, status, version).map(|()| lsn)
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
        key: &[u8],
        stamp: &Stamp,
        status: u16,
        version: u64,
    ) -> Result<u64, StoreError> {
        let lsn = self.last_version + 1;
        self.note_at(lsn, key, Some(stamp), status, version)?;
        Ok(lsn)
    }

    /// The same for an endpoint with no replicas, where the note only has to bring its
    /// completion record back on replay (a resend or duplicate after a restart is answered,
    /// not applied): it takes no LSN (it carries the last one again), so the versions a
    /// client sees do not move for writes that changed nothing.
    pub fn note_unnumbered(
        &mut self,
        key: &[u8],
        stamp: &Stamp,
        status: u16,
        version: u64,
    ) -> Result<(), StoreError> {
        self.note_at(self.last_version, key, Some(stamp), status, version)
    }

    pub(crate) fn note_at(
        &mut self,
        lsn: u64,
        key: &[u8],
        stamp: Option<&Stamp>,
        status: u16,
        version: u64,
    ) -> Result<(), StoreError> {
        let payload = note_payload(status, version);
        let appended = self.log.append(Kind::Note, lsn, stamp, &Meta::NONE, key, &payload);
        let loc = appended.map_err(|e| self.counted(e))?;
        self.last_version = lsn;
        let span = self.log.read(loc).expect("just appended").span as u64;
        self.log.mark_dead(loc, span);
        Ok(())
    }

    /// The LSN of the last write (every record written takes the next one; 0: none yet).
    pub fn last_lsn(&self) -> u64 {
        self.last_version
    }

    pub(crate) fn put_at(
        &mut self,
        blobs: &mut BlobStore,
        version: u64,
        key: &[u8],
        value: &[u8],
        meta: &Meta,
        stamp: Option<&Stamp>,
    ) -> Result<u64, StoreError> {
        assert!(key.len() <= proto::KEY_BYTES_MAX, "proto bounds keys");
        let previous = self.previous(key)?;
        if previous.is_none() && self.index.len() >= self.config.keys_max {
            return Err(self.counted(StoreError::NoSpace));
        }
        let mut reference = std::mem::take(&mut self.scratch);
        let blob = value.len() >= self.config.blob_threshold_bytes;
        let appended = if blob {
            blobs.put(value, &mut reference).and_then(|()| {
                let appended = self.log.append(Kind::Blob, version, stamp, meta, key, &reference);
                if appended.is_err() {
                    let taken: Vec<Hash> = blob::hashes(&reference).collect();
                    blobs.drop_refs(&taken)?;
                }
                appended
            })
        } else {
            self.log.append(Kind::Put, version, stamp, meta, key, value)
        };
        self.scratch = reference;
        let loc = appended.map_err(|e| self.counted(e))?;
        self.last_version = version;
        self.link(blobs, key, loc, previous);
        self.live_bytes += (key.len() + value.len()) as u64;
        Ok(version)
    }

    /// Points the index at a new record and retires the previous one, which `find` located:
    /// the key's slot is the one holding that location (none if there was none), so no
    /// record is read again.
    fn link(&mut self, blobs: &mut BlobStore, key: &[u8], loc: Loc, previous: Option<Previous>) {
        let old = previous.as_ref().map(|p| p.loc);
        let replaced = self
            .index
            .insert(key_hash(key), loc, |l| Some(l) == old)
            .expect("keys_max keeps the index below its limit");
        assert_eq!(replaced, previous.as_ref().map(|p| p.loc));
        if let Some(p) = previous {
            self.retire(blobs, p);
        }
    }

    /// The previous record of a key is dead: its blob chunks stop being readable at once and
    /// are freed once this write is durable.
    fn retire(&mut self, blobs: &mut BlobStore, previous: Previous) {
        self.log.mark_dead(previous.loc, previous.span);
        self.live_bytes -= previous.live;
        if previous.blob {
            let record = self.log.read(previous.loc).expect("a live record reads");
            blobs.detach(blob::hashes(record.payload));
            self.released.extend(blob::hashes(record.payload));
        }
    }

    /// Writes `value` if the key's version is `expected` (0: only if absent). A mismatch
    /// writes nothing (and keeps no stamp: it changed nothing, so doing it again is harmless).
    pub fn cas(
        &mut self,
        blobs: &mut BlobStore,
        key: &[u8],
        expected: u64,
        value: &[u8],
        stamp: Option<&Stamp>,
    ) -> Result<CasOutcome, StoreError> {
        self.cas_with(blobs, key, expected, value, &Meta::NONE, stamp)
    }

    /// [`Store::cas`] with metadata for the new value. An expired value has version 0.
    pub fn cas_with(
        &mut self,
        blobs: &mut BlobStore,
        key: &[u8],
        expected: u64,
        value: &[u8],
        meta: &Meta,
        stamp: Option<&Stamp>,
    ) -> Result<CasOutcome, StoreError> {
        self.usable().map_err(|e| self.counted(e))?;
        let current = self.version(key)?;
        if current != expected {
            return Ok(CasOutcome::Mismatch(current));
        }
        self.put_with(blobs, key, value, meta, stamp).map(CasOutcome::Swapped)
    }

    /// Gives the live value of `key` new metadata (its bytes unchanged, a new version):
    /// memcached's `touch`. Returns the new version, or `None` when the key is absent.
    pub fn rewrite_meta(
        &mut self,
        blobs: &mut BlobStore,
        key: &[u8],
        meta: &Meta,
        stamp: Option<&Stamp>,
    ) -> Result<Option<u64>, StoreError> {
        self.usable().map_err(|e| self.counted(e))?;
        let mut copy = Vec::new();
        match self.get(blobs, key)? {
            Some((value, _)) => copy.extend_from_slice(value),
            None => return Ok(None),
        }
        self.put_with(blobs, key, &copy, meta, stamp).map(Some)
    }

    /// Removes `key`; returns whether it existed. The tombstone takes a version, so a key
    /// created again never gets an old version back. A blob value's chunks are unreadable at
    /// once. Deleting an absent key writes nothing (and keeps no stamp).
    pub fn delete(
        &mut self,
        blobs: &mut BlobStore,
        key: &[u8],
        stamp: Option<&Stamp>,
    ) -> Result<bool, StoreError> {
        if self.previous(key)?.is_none() {
            return Ok(false);
        }
        self.delete_at(blobs, self.last_version + 1, key, stamp)
    }

    /// Writes the tombstone of `key` at `version`, even when the key is absent (a replica
    /// applying its primary's write keeps the LSN sequence whole); returns whether it existed
    /// (an expired value did not: it was absent already, and its tombstone reclaims it).
    pub(crate) fn delete_at(
        &mut self,
        blobs: &mut BlobStore,
        version: u64,
        key: &[u8],
        stamp: Option<&Stamp>,
    ) -> Result<bool, StoreError> {
        let previous = self.previous(key)?;
        let appended = self.log.append(Kind::Tombstone, version, stamp, &Meta::NONE, key, &[]);
        let loc = appended.map_err(|e| self.counted(e))?;
        self.last_version = version;
        let existed = previous.as_ref().is_some_and(|p| !p.expired);
        if let Some(previous) = previous {
            let log = &self.log;
            let removed =
                self.index.remove(key_hash(key), |l| log.read(l).is_ok_and(|r| r.key == key));
            assert_eq!(removed, Some(previous.loc));
            self.retire(blobs, previous);
        }
        // A tombstone is garbage from birth: compaction drops it with its segment.
        let span = self.log.read(loc).expect("just appended").span as u64;
        self.log.mark_dead(loc, span);
        Ok(existed)
    }

    /// Group commit for the `flushed` class: makes every write so far durable (blob chunks
    /// first, then the log), then frees blob chunks this endpoint stopped referring to.
    /// Call once per loop iteration for each endpoint that `needs_flush`, and answer its
    /// writes only after this returns Ok. A failure poisons the log: later calls fail too.
    pub fn flush(&mut self, blobs: &mut BlobStore) -> Result<(), StoreError> {
        self.usable()?;
        let result = blobs.sync().and_then(|()| self.log.sync());
        let result = result.and_then(|()| blobs.release(&std::mem::take(&mut self.released)));
        if let Err(e) = result {
            // Whatever failed, this endpoint's writes were not made durable: stop it.
            self.log.stop(e);
            self.counted(e);
        }
        result
    }

    /// Moves the blob chunks this endpoint stopped referring to into `out`, for a caller that
    /// makes the records durable another way (a file-system-wide sync in the background, the
    /// `memory` class) and then gives them back with [`BlobStore::release`]. A store that
    /// stopped hands nothing back: the record that dropped a chunk may never have been
    /// written, and the chunk is reclaimed at the next start if nothing refers to it.
    pub fn take_released(&mut self, out: &mut Vec<Hash>) {
        if self.usable().is_ok() {
            out.append(&mut self.released);
        }
    }

    /// Stops the store for good (until a restart): writes are refused with `failure`, reads
    /// still served. For a durability failure found outside the store (a background sync).
    pub fn stop(&mut self, failure: StoreError) {
        self.log.stop(failure);
    }

    /// Whether [`Store::flush`] has work to do.
    pub fn needs_flush(&self) -> bool {
        self.log.needs_sync() || !self.released.is_empty()
    }

    /// Hands appended records to the kernel without waiting for the disk: what the `memory`
    /// class does at the end of a batch (they survive a process crash, not a power cut).
    pub fn write_out(&mut self) -> Result<(), StoreError> {
        self.usable()?;
        self.log.write_out()
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
        self.quarantine.as_ref()
    }

    /// The failure that stopped the log (`NoSpace`, `Exhausted` or `Poisoned`), if any.
    pub fn failure(&self) -> Option<StoreError> {
        self.log.failure()
    }

    /// Sizes, for `cradle status`.
    pub fn stats(&self) -> StoreStats {
        let (log_bytes, dead_bytes) = self.log.usage();
        StoreStats {
            keys: self.index.len() as u64,
            log_bytes,
            dead_bytes,
            live_bytes: self.live_bytes,
            index_bytes: self.index.bytes() as u64,
            segments: self.log.segment_count() as u64,
            quarantined: u64::from(self.quarantine.is_some()),
            limit_refusals: self.limit_refusals,
            no_space_refusals: self.no_space_refusals,
        }
    }

    /// Calls `f` with every live key, value and version (export, snapshots). Not for the
    /// serving path: it collects the index locations first.
    pub fn for_each(
        &mut self,
        blobs: &mut BlobStore,
        mut f: impl FnMut(&[u8], &[u8], u64),
    ) -> Result<(), StoreError> {
        if self.quarantine.is_some() {
            return Err(StoreError::Quarantined);
        }
        let locations: Vec<Loc> = self.index.locations().collect();
        for loc in locations {
            let record = match self.log.read(loc) {
                Ok(r) => r,
                Err(bad) => return Err(self.quarantine_at(loc, bad.describe())),
            };
            if record.meta.expired(self.clock_ns) {
                continue;
            }
            if record.kind == Kind::Put {
                f(record.key, record.payload, record.lsn);
                continue;
            }
            match blobs.read(record.payload) {
                Ok(value) => f(record.key, value, record.lsn),
                Err(_) => return Err(self.quarantine_at(loc, "blob chunk missing or corrupt")),
            }
        }
        Ok(())
    }

    /// Calls `f` with every live key (SCAN pages, export). Reads no blob chunk. Not for the
    /// serving path of busy endpoints: it visits the whole index.
    pub fn for_each_key(&mut self, mut f: impl FnMut(&[u8])) -> Result<(), StoreError> {
        if self.quarantine.is_some() {
            return Err(StoreError::Quarantined);
        }
        let mut bad = None;
        for loc in self.index.locations() {
            match self.log.read(loc) {
                Ok(record) if record.meta.expired(self.clock_ns) => {}
                Ok(record) => f(record.key),
                Err(b) => {
                    bad = Some((loc, b));
                    break;
                }
            }
        }
        match bad {
            Some((loc, b)) => Err(self.quarantine_at(loc, b.describe())),
            None => Ok(()),
        }
    }

    /// Whether dead bytes in sealed segments passed `dead_ratio` (compaction is due).
    pub fn needs_compaction(&self) -> bool {
        if self.quarantine.is_some() || self.log.failure().is_some() {
            return false;
        }
        self.compaction.is_some()
            || self.sealed_dead_share() > self.config.dead_ratio
            || self.oldest_sealed_expired()
    }

    /// Whether every value in the oldest sealed segment has expired by the store's clock
    /// (a cache of values with a time to live is reclaimed even when nothing is overwritten).
    fn oldest_sealed_expired(&self) -> bool {
        let Some(slot) = self.log.oldest_sealed() else { return false };
        self.log.segment(slot).values_expire_by.is_some_and(|by| by <= self.clock_ns)
    }

    fn sealed_dead_share(&self) -> f64 {
        if self.log.oldest_sealed().is_none() {
            return 0.0;
        }
        let (used, dead) = self.log.usage();
        let active = self.log.active_usage();
        let (used, dead) = (used - active.0, dead - active.1);
        if used == 0 {
            return 0.0;
        }
        dead as f64 / used as f64
    }

    /// One bounded step of compaction: copies the live records of the oldest segment forward,
    /// at most about `budget_bytes` of it, and deletes the segment when it is done.
    /// Returns the bytes examined (0: nothing to do, or not yet).
    /// Deleting the segment syncs the log, so blob chunks are synced first.
    ///
    /// A segment holding a write stamped at or after `stamps_before_ns` (wall clock) is left
    /// alone for now: its records rebuild completion records on replay, and a resend of that
    /// write may still come. Copies made later carry no stamp.
    pub fn compact_step(
        &mut self,
        blobs: &mut BlobStore,
        budget_bytes: u64,
        stamps_before_ns: u64,
    ) -> Result<u64, StoreError> {
        self.usable()?;
        let Some(slot) = self.log.oldest_sealed() else {
            return Ok(0);
        };
        if self.log.segment(slot).stamped_at_max.is_some_and(|at| at >= stamps_before_ns) {
            return Ok(0);
        }
        let end = self.log.segment(slot).end;
        let mut cursor = self.compaction.unwrap_or(SEGMENT_HEADER_BYTES);
        let start = cursor;
        while cursor < end && cursor - start < budget_bytes {
            let loc = Loc { segment: slot, offset: cursor as u32 };
            cursor += self.compact_record(blobs, loc)?;
        }
        if cursor < end {
            self.compaction = Some(cursor);
            return Ok(cursor - start);
        }
        self.compaction = None;
        blobs.sync()?;
        self.log.retire_oldest()?;
        self.segments_retired += 1;
        Ok(cursor - start)
    }

    /// Copies one record forward if the index still points at it (or reclaims it if it has
    /// expired); returns its span.
    fn compact_record(&mut self, blobs: &mut BlobStore, loc: Loc) -> Result<u64, StoreError> {
        let record = match self.log.read(loc) {
            Ok(r) => r,
            Err(bad) => return Err(self.quarantine_at(loc, bad.describe())),
        };
        let span = record.span as u64;
        let hash = key_hash(record.key);
        let live = matches!(record.kind, Kind::Put | Kind::Blob)
            && self.index.get(hash, |l| l == loc).is_some();
        if !live {
            return Ok(span);
        }
        let (kind, lsn, meta) = (record.kind, record.lsn, record.meta);
        let mut copy = std::mem::take(&mut self.scratch);
        copy.clear();
        copy.extend_from_slice(record.key);
        copy.extend_from_slice(record.payload);
        let key_len = record.key.len();
        if meta.expired(self.clock_ns) {
            // Reclaimed instead of copied: a tombstone (durable before any blob chunk it
            // frees), so a replay of the older segments cannot bring the value back.
            let deleted = self.delete(blobs, &copy[..key_len], None);
            self.scratch = copy;
            deleted?;
            return Ok(span);
        }
        let appended = self.log.append(kind, lsn, None, &meta, &copy[..key_len], &copy[key_len..]);
        self.scratch = copy;
        let moved = appended?;
        self.index.insert(hash, moved, |l| l == loc).expect("replacing an entry needs no room");
        Ok(span)
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
