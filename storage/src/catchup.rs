//! What building one replica from another needs of a store (`control::core::replica`'s
//! catch-up): a snapshot of the live records, read a few at a time while the store goes on
//! serving; writes applied out of LSN order, the newest version of a key winning; a store
//! emptied to start again; and, for a replica built on what its own log kept, digests of
//! records to check its copies against and the keys of its own records.

use crate::blob;
use crate::error::StoreError;
use crate::index::{Index, Loc};
use crate::record::{Kind, Meta, Stamp};
use crate::shelf::Shelf;
use crate::store::{key_hash, Applied, Store};

/// The live records of a store when [`Store::snapshot`] took it: their locations (8 bytes a
/// key), read one at a time by [`Store::snapshot_entry`].
#[derive(Debug, Default)]
pub struct Snapshot {
    locs: Vec<Loc>,
    /// `Shelf::retired` when taken: a later deletion may have taken records along.
    retired: u64,
}

impl Snapshot {
    /// Records in it.
    pub fn len(&self) -> usize {
        self.locs.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.locs.is_empty()
    }
}

/// One entry of a snapshot, as [`Store::snapshot_entry`] reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum SnapshotRead<'a> {
    /// The key still holds this record: its key, value and version.
    Live {
        /// The key.
        key: &'a [u8],
        /// Its value (a blob value assembled).
        value: &'a [u8],
        /// Its version (the LSN that wrote it).
        lsn: u64,
        /// Its flags and expiry.
        meta: Meta,
    },
    /// Overwritten, deleted or expired since the snapshot: the writes that did it are newer
    /// than the snapshot, so whoever reads it learns of them another way.
    Superseded,
    /// A segment was deleted since the snapshot (cleaning moved records), or the store was
    /// emptied: its locations may be gone, so it must be taken again. Hold cleaning off while
    /// reading.
    Stale,
}

/// Bytes of a record's digest.
pub const DIGEST_BYTES: usize = 16;

/// The digest two replicas compare a record by: its key, LSN, value and metadata.
pub fn record_digest(key: &[u8], value: &[u8], lsn: u64, meta: &Meta) -> [u8; DIGEST_BYTES] {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&lsn.to_le_bytes());
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(&meta.flags.to_le_bytes());
    hasher.update(&meta.expires_at_ns.to_le_bytes());
    hasher.update(value);
    hasher.digest128().to_le_bytes()
}

impl Store {
    /// The value record of `key` (expired or not): its LSN and digest (`record_digest`).
    /// None: the key holds no value (never written, or deleted).
    pub fn newest_digest(
        &mut self,
        shelf: &mut Shelf,
        key: &[u8],
    ) -> Result<Option<(u64, [u8; DIGEST_BYTES])>, StoreError> {
        self.usable(&shelf.log)?;
        let (loc, kind, lsn, meta) = match self.find(&shelf.log, key) {
            Ok(None) => return Ok(None),
            Ok(Some((loc, r))) => (loc, r.kind, r.lsn, r.meta),
            Err((loc, bad)) => return Err(self.quarantine_at(&shelf.log, loc, bad.describe())),
        };
        let payload = shelf.log.read(loc).expect("read just now").payload;
        let value = match kind {
            Kind::Put => payload,
            Kind::Blob => match shelf.blobs.read(payload) {
                Ok(value) => value,
                Err(_) => {
                    return Err(self.quarantine_at(
                        &shelf.log,
                        loc,
                        "blob chunk missing or corrupt",
                    ))
                }
            },
            _ => return Ok(None), // (only values are indexed)
        };
        Ok(Some((lsn, record_digest(key, value, lsn, &meta))))
    }

    /// The keys whose value (expired or not) was written at or below `lsn`.
    pub fn keys_through(&mut self, shelf: &Shelf, lsn: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        self.usable(&shelf.log)?;
        let (mut keys, mut bad) = (Vec::new(), None);
        for loc in self.index.locations() {
            match shelf.log.read(loc) {
                Ok(r) if matches!(r.kind, Kind::Put | Kind::Blob) && r.lsn <= lsn => {
                    keys.push(r.key.to_vec());
                }
                Ok(_) => {}
                Err(b) => {
                    bad = Some((loc, b));
                    break;
                }
            }
        }
        match bad {
            Some((loc, b)) => Err(self.quarantine_at(&shelf.log, loc, b.describe())),
            None => Ok(keys),
        }
    }

    /// The locations of every live record now. Reading them later is right only as long as
    /// no segment is deleted meanwhile ([`SnapshotRead::Stale`] says when one was).
    pub fn snapshot(&self, shelf: &Shelf) -> Snapshot {
        Snapshot { locs: self.index.locations().collect(), retired: self.retired(shelf) }
    }

    /// Changes when a segment is deleted or this store is emptied.
    fn retired(&self, shelf: &Shelf) -> u64 {
        shelf.retired + self.clears
    }

    /// Entry `i` of `snapshot` (below its `len`).
    pub fn snapshot_entry<'a>(
        &'a mut self,
        shelf: &'a mut Shelf,
        snapshot: &Snapshot,
        i: usize,
    ) -> Result<SnapshotRead<'a>, StoreError> {
        self.usable(&shelf.log)?;
        if snapshot.retired != self.retired(shelf) {
            return Ok(SnapshotRead::Stale);
        }
        let loc = snapshot.locs[i];
        let (kind, live) = match shelf.log.read(loc) {
            Ok(record) => {
                let current = self.index.get(key_hash(record.key), |l| l == loc).is_some();
                let value = matches!(record.kind, Kind::Put | Kind::Blob);
                (record.kind, current && value && !record.meta.expired(self.clock_ns))
            }
            Err(bad) => return Err(self.quarantine_at(&shelf.log, loc, bad.describe())),
        };
        if !live {
            return Ok(SnapshotRead::Superseded);
        }
        if kind == Kind::Blob {
            let payload = shelf.log.read(loc).expect("read just now").payload;
            if shelf.blobs.read(payload).is_err() {
                return Err(self.quarantine_at(&shelf.log, loc, "blob chunk missing or corrupt"));
            }
        }
        let record = shelf.log.read(loc).expect("read just now");
        if kind == Kind::Put {
            return Ok(SnapshotRead::Live {
                key: record.key,
                value: record.payload,
                lsn: record.lsn,
                meta: record.meta,
            });
        }
        // (The chunks are read twice: the borrow checker cannot end the first borrow on the
        // error path.)
        let value = shelf.blobs.read(record.payload).expect("read just now");
        let meta = shelf.log.read(loc).expect("read just now").meta;
        Ok(SnapshotRead::Live { key: record.key, value, lsn: record.lsn, meta })
    }

    /// Applies a write out of LSN order, as a replica being built does with a snapshot's
    /// records and the writes made meanwhile: only if `lsn` is newer than the key's version.
    /// The store's LSN becomes the highest it has seen. Returns whether the store changed (a
    /// delete of an absent key changes nothing: a caller that may still get an older put of
    /// it remembers the delete itself).
    pub fn install(
        &mut self,
        shelf: &mut Shelf,
        lsn: u64,
        write: Applied<'_>,
        stamp: Option<&Stamp>,
    ) -> Result<bool, StoreError> {
        let key = match write {
            Applied::Put { key, .. } | Applied::Delete { key } => key,
            // (Written like a backup's, so the learner holds its completion record too, and
            // has something to flush for that LSN.)
            Applied::Note { key, status, version } => {
                let last = self.last_version;
                self.note_at(&mut shelf.log, lsn, key, stamp, status, version)?;
                self.last_version = self.last_version.max(last);
                return Ok(false);
            }
        };
        // (Against the newest record, expired or not: an older put of a key whose newer
        // value has expired must not bring it back.)
        let current = self.newest_version(&shelf.log, key)?;
        if current >= lsn {
            return Ok(false);
        }
        let current_live = self.version(shelf, key)?;
        let last = self.last_version;
        let changed = match write {
            Applied::Put { key, value, meta } => {
                self.put_at(shelf, lsn, key, value, &meta, stamp)?;
                true
            }
            Applied::Delete { .. } if current_live == 0 => false,
            Applied::Delete { key } => {
                self.delete_at(shelf, lsn, key, stamp)?;
                true
            }
            Applied::Note { .. } => unreachable!("returned above"),
        };
        self.last_version = self.last_version.max(last);
        Ok(changed)
    }

    /// Raises the store's LSN to `lsn` (a replica that applied every write through it, some
    /// of which changed nothing here), durably: a floor record, so that a restart does not
    /// bring the LSN back below it.
    pub fn raise_lsn(&mut self, shelf: &mut Shelf, lsn: u64) -> Result<(), StoreError> {
        if lsn <= self.last_version {
            return Ok(());
        }
        self.usable(&shelf.log)?;
        self.floor(&mut shelf.log, lsn)?;
        self.last_version = lsn;
        Ok(())
    }

    /// Empties the store: a drop record (replay forgets the endpoint's earlier records, and
    /// cleaning frees them), then the index, the LSN and a quarantine are forgotten; blob
    /// chunks it referred to are freed after the next flush. For a replica about to be built
    /// again from another. No file is deleted: the other endpoints of the core share them.
    pub fn clear(&mut self, shelf: &mut Shelf) -> Result<(), StoreError> {
        if let Some(failure) = shelf.log.failure() {
            return Err(failure);
        }
        let drop = self.append(&mut shelf.log, Kind::Drop, 0, None, &Meta::NONE, &[], &[])?;
        shelf.log.mark_dead_record(drop);
        self.dropped_at = Some(shelf.log.position(drop));
        self.forget(shelf, self.quarantine.is_none());
        self.quarantine = None;
        self.failure = None;
        self.clears += 1;
        Ok(())
    }

    /// Forgets every record of the index (each dead from now on), and with `release`, lets
    /// go of their blob chunks once the next flush makes this durable.
    pub(crate) fn forget(&mut self, shelf: &mut Shelf, release: bool) {
        for loc in self.index.locations() {
            let Ok(record) = shelf.log.read(loc) else { continue };
            if release && record.kind == Kind::Blob {
                shelf.blobs.detach(blob::hashes(record.payload));
                self.released.extend(blob::hashes(record.payload));
            }
            let span = record.span as u64;
            shelf.log.mark_dead(loc, span);
        }
        self.index = Index::default();
        self.last_version = 0;
        self.live_bytes = 0;
    }
}
