//! A core's shelf: the one log its endpoints share (RAMCloud's log-structured memory: each
//! record names its endpoint, each endpoint keeps its own LSNs and index over it) and the
//! blob tier. Every [`Store`] call takes it, so reads borrow the log's maps with no lock and
//! no copy. Group commit and cleaning are per core: one `fdatasync` per batch however many
//! endpoints it wrote, and one cleaner that routes each record of the oldest segment to its
//! endpoint's index to learn whether it is live. Descriptors and maps: one per live segment
//! of the core, whatever the number of endpoints.

use crate::blob::BlobStore;
use crate::error::StoreError;
use crate::index::Loc;
use crate::log::{Log, SEGMENT_HEADER_BYTES};
use crate::record;
use crate::store::Store;
use crate::StoreConfig;

/// The log and blob tier of one core.
#[derive(Debug)]
pub struct Shelf {
    pub(crate) log: Log,
    pub(crate) blobs: BlobStore,
    pub(crate) config: StoreConfig,
    /// Where cleaning of the oldest segment has got to.
    cleaning: Option<u64>,
    /// Segments deleted so far: a [`crate::Snapshot`] taken before one was deleted may name
    /// records that are gone.
    pub(crate) retired: u64,
    /// Wall-clock nanoseconds by which expiry is judged (`set_clock`); 0 until set.
    clock_ns: u64,
    /// Endpoints made on this log: slots 0..endpoints.
    endpoints: u32,
    /// A buffer a store's write or cleaning step borrows (one per core, not per endpoint).
    pub(crate) scratch: Vec<u8>,
}

/// Sizes of a core's log, for `cradle status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShelfStats {
    /// Bytes in use in the log's segments (records and headers, live or dead).
    pub log_bytes: u64,
    /// Bytes of records superseded or deleted, reclaimed by cleaning.
    pub dead_bytes: u64,
    /// Segment files (each one descriptor and one map).
    pub segments: u64,
}

/// The stores of a core's endpoints, found by the slot their records name: what cleaning
/// routes each record to.
pub trait Stores {
    /// The store of endpoint `slot`, if there is one.
    fn store(&mut self, slot: u32) -> Option<&mut Store>;
}

impl Stores for [Store] {
    fn store(&mut self, slot: u32) -> Option<&mut Store> {
        self.get_mut(slot as usize)
    }
}

impl Shelf {
    pub(crate) fn new(log: Log, blobs: BlobStore, config: &StoreConfig) -> Shelf {
        let config = config.clone();
        let (cleaning, retired, clock_ns, endpoints, scratch) = (None, 0, 0, 0, Vec::new());
        Shelf { log, blobs, config, cleaning, retired, clock_ns, endpoints, scratch }
    }

    /// A new, empty endpoint on this log, in the next slot. Not kept across a restart:
    /// [`Shelf::open`] makes the endpoints it is told of, and a log holding records of
    /// another is damaged to it.
    pub fn add_endpoint(&mut self) -> Store {
        let store = Store::empty(self.endpoints);
        self.endpoints += 1;
        store
    }

    /// The blob tier.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The blob tier, to release chunks or reclaim unreferenced ones.
    pub fn blobs_mut(&mut self) -> &mut BlobStore {
        &mut self.blobs
    }

    /// Makes every record written so far durable (blob chunks first): the core's group
    /// commit. Cheap when nothing was written since the last one. A failure stops the log
    /// for good (until a restart): every endpoint of the core then refuses writes.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(failure) = self.log.failure() {
            return Err(failure);
        }
        let result = self.blobs.sync().and_then(|()| self.log.sync());
        if let Err(e) = result {
            self.log.stop(e);
        }
        result
    }

    /// Whether [`Shelf::sync`] has records to make durable.
    pub fn needs_sync(&self) -> bool {
        self.log.needs_sync()
    }

    /// Hands appended records to the kernel without waiting for the disk (the `memory`
    /// class, at the end of a batch).
    pub fn write_out(&mut self) -> Result<(), StoreError> {
        self.log.write_out()
    }

    /// Hands the log's records to the kernel for a sync another thread makes (the `flushed`
    /// class off the loop), after making the blob chunks they name durable here: a chunk
    /// must reach the disk before a record naming it, and that thread's round keeps no order
    /// between files. Costs no sync when no big value was written since the last one.
    pub fn write_out_after_blobs(&mut self) -> Result<(), StoreError> {
        if let Err(e) = self.blobs.sync() {
            self.log.stop(e);
            return Err(e);
        }
        self.log.write_out()
    }

    /// The failure that stopped the core's log, if any.
    pub fn failure(&self) -> Option<StoreError> {
        self.log.failure()
    }

    /// Stops the core's log for good (until a restart): a durability failure found outside
    /// the store (a background sync).
    pub fn stop(&mut self, failure: StoreError) {
        self.log.stop(failure);
    }

    /// Sizes of the log.
    pub fn stats(&self) -> ShelfStats {
        let (log_bytes, dead_bytes) = self.log.usage();
        ShelfStats { log_bytes, dead_bytes, segments: self.log.segment_count() as u64 }
    }

    /// Moves the cleaner's clock on (wall-clock nanoseconds): a sealed segment whose values
    /// have all expired by it is due for cleaning. Never goes back.
    pub fn set_clock(&mut self, now_ns: u64) {
        self.clock_ns = self.clock_ns.max(now_ns);
    }

    /// Whether cleaning is due: dead bytes in sealed segments passed `dead_ratio`, every
    /// value in the oldest sealed segment has expired, or a pass is under way.
    pub fn needs_cleaning(&self) -> bool {
        if self.log.failure().is_some() {
            return false;
        }
        self.cleaning.is_some() || self.sealed_dead_share() > self.config.dead_ratio || {
            let oldest = self.log.oldest_sealed();
            oldest.is_some_and(|slot| {
                self.log.segment(slot).values_expire_by.is_some_and(|by| by <= self.clock_ns)
            })
        }
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

    /// One bounded step of cleaning: routes the records of the oldest segment, at most about
    /// `budget_bytes` of it, to their endpoints, which copy the live ones to the head, and
    /// deletes the segment when it is done. Returns the bytes examined (0: nothing to do, or
    /// not yet). Deleting the segment syncs the log, so blob chunks are synced first.
    ///
    /// A segment holding a write stamped at or after `stamps_before_ns` (wall clock) is left
    /// alone for now: its records rebuild completion records on replay, and a resend of that
    /// write may still come. Copies made later carry no stamp. A segment holding a record of
    /// a quarantined endpoint is left alone until that endpoint is emptied: nothing can say
    /// which of its records are live, and no file of a quarantined endpoint is changed.
    /// Hold cleaning off while a snapshot of an endpoint of the core is being read.
    pub fn clean_step<S: Stores + ?Sized>(
        &mut self,
        stores: &mut S,
        budget_bytes: u64,
        stamps_before_ns: u64,
    ) -> Result<u64, StoreError> {
        if let Some(failure) = self.log.failure() {
            return Err(failure);
        }
        let Some(slot) = self.log.oldest_sealed() else {
            return Ok(0);
        };
        if self.log.segment(slot).stamped_at_max.is_some_and(|at| at >= stamps_before_ns) {
            return Ok(0);
        }
        let end = self.log.segment(slot).end;
        let mut cursor = self.cleaning.unwrap_or(SEGMENT_HEADER_BYTES);
        let start = cursor;
        while cursor < end && cursor - start < budget_bytes {
            let loc = Loc { segment: slot, offset: cursor as u32 };
            let (owner, span) = match self.log.read(loc) {
                Ok(r) => (r.endpoint, r.span as u64),
                Err(_) => match self.log.owner(loc) {
                    Some((owner, span)) => (owner, span as u64),
                    // (Replay read this segment whole: its bytes changed since.)
                    None => return Err(self.stop_for(StoreError::Poisoned)),
                },
            };
            if owner != record::NO_ENDPOINT {
                // (None: an endpoint dropped since; its records are dead.)
                let Some(store) = stores.store(owner) else {
                    cursor += span;
                    continue;
                };
                if store.dropped_at.is_some_and(|at| self.log.position(loc) < at) {
                    cursor += span; // (emptied since: dead, damaged or not)
                    continue;
                }
                if store.quarantine.is_some() {
                    break;
                }
                store.set_clock(self.clock_ns);
                if let Err(e) = store.clean_record(self, loc) {
                    self.cleaning = Some(cursor);
                    return match e {
                        StoreError::Quarantined => Ok(cursor - start),
                        e => Err(e),
                    };
                }
            }
            cursor += span;
        }
        if cursor < end {
            self.cleaning = Some(cursor);
            return Ok(cursor - start);
        }
        self.cleaning = None;
        self.sync()?;
        self.log.retire_oldest()?;
        self.retired += 1;
        Ok((cursor - start).max(1)) // (a segment with no records was examined too)
    }

    fn stop_for(&mut self, failure: StoreError) -> StoreError {
        self.log.stop(failure);
        failure
    }

    pub(crate) fn set_endpoints(&mut self, endpoints: u32) {
        self.endpoints = endpoints;
    }
}
