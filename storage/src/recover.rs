//! Restart: replay a core's segments once, oldest first, route each record to its endpoint's
//! index, decide what a damaged log means. The outcomes (also in README.md):
//!
//! - torn tail (a bad or partial record in the newest segment with no valid record after
//!   it): the bytes from there on are zeroed, the log continues there, the report says
//!   where and how much;
//! - a record whose payload is damaged under a sound header (its extent and its endpoint
//!   known): that endpoint alone is quarantined, with file and byte offset, and replay reads
//!   on past it; a later drop record of the endpoint (it was emptied) lifts it;
//! - a damaged header or segment header, a missing segment, a too-short older segment:
//!   nothing can say whose records were lost, so every endpoint of the core is quarantined;
//! - no file is touched in any quarantine;
//! - an empty newest segment (created, never synced): re-initialised and reported as a torn
//!   tail at offset 0.

use crate::blob::{self, BlobStore};
use crate::device::Volume;
use crate::error::{Corruption, StoreError};
use crate::index::{Loc, SEGMENTS_MAX};
use crate::log::{
    parse_marker, segment_header, segment_name, segment_number, valid_segment_header, Log, Segment,
    SEGMENT_HEADER_BYTES,
};
use crate::record::{self, Bad, Kind, Record, Stamp};
use crate::shelf::Shelf;
use crate::store::{key_hash, Store};
use crate::StoreConfig;
use std::io;

/// The magic of a segment in the record format before this one (32-byte headers): named when
/// found, so the operator is told to export and import rather than that the log is damaged.
pub const EARLIER_SEGMENT_MAGIC: &[u8; 8] = b"CRDLSEG2";

/// A torn tail that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub file: String,
    /// Where the valid log ends.
    pub offset: u64,
    /// What was wrong at that offset.
    pub reason: String,
}

/// What opening a core's log found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files found.
    pub segments: u64,
    /// Records replayed.
    pub records: u64,
    /// Bytes of segments read.
    pub bytes_replayed: u64,
    /// The torn tail cut off, if any.
    pub torn_tail: Option<TornTail>,
    /// The endpoints quarantined (they answer `Quarantined`), each with why; all of them
    /// when the core's log itself is damaged.
    pub quarantined: Vec<(u32, Corruption)>,
    /// The stamped writes replayed whose stamp is at or after the `stamps_since_ns` given to
    /// [`Shelf::open`], in log order: the completion records to rebuild.
    pub stamps: Vec<StampedWrite>,
}

impl RecoveryReport {
    /// Why endpoint `slot` is quarantined, if it is.
    pub fn quarantine(&self, slot: u32) -> Option<&Corruption> {
        self.quarantined.iter().find(|(s, _)| *s == slot).map(|(_, c)| c)
    }
}

/// A replayed write and who asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StampedWrite {
    /// The request's stamp.
    pub stamp: Stamp,
    /// The version the write got (0 for a delete, as its reply says).
    pub version: u64,
    /// The value it stored, when that is short and kept inline: what a reply that carried
    /// the value said (an INCR's count) can be rebuilt from it. `None` for deletes, blob
    /// values and values over `SHORT_VALUE_BYTES_MAX`.
    pub value: Option<ShortValue>,
    /// How a write that changed nothing was answered (a note's status, see
    /// [`crate::Store::note`]); `None` for a write that changed the store (answered OK).
    pub status: Option<u16>,
}

/// Longest value a [`StampedWrite`] keeps (the text of an i64 count takes at most 20).
pub const SHORT_VALUE_BYTES_MAX: usize = 24;

/// A value of at most `SHORT_VALUE_BYTES_MAX` bytes, kept without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortValue {
    bytes: [u8; SHORT_VALUE_BYTES_MAX],
    len: u8,
}

impl ShortValue {
    /// `value`, if it is short enough.
    pub fn of(value: &[u8]) -> Option<ShortValue> {
        let mut bytes = [0u8; SHORT_VALUE_BYTES_MAX];
        bytes.get_mut(..value.len())?.copy_from_slice(value);
        Some(ShortValue { bytes, len: value.len() as u8 })
    }

    /// The value's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// What the scan of the segments learnt, before anything is changed.
#[derive(Default)]
struct Scan {
    /// The oldest segment a marker says must exist.
    required_oldest: u64,
    /// The segment the newest one's seal names (it must exist).
    sealed_into: Option<u64>,
    /// The newest segment replayed: its slot, number, where its valid part ends, and
    /// whether it was torn.
    torn_at: Option<(u16, u64, u64, Bad)>,
    /// The first of the newest segments that were never synced (zeros, header included):
    /// its slot and number; it is made the active one again.
    never_synced: Option<(u16, u64)>,
    /// The never-synced segments after it, removed.
    removed: Vec<u64>,
    /// A zero file after the newest segment that no seal names: made ahead for the next roll
    /// (kept for it), with `removed` the zero files after it (removed without a report).
    made_ahead: Option<u64>,
}

/// A core's log being replayed into its endpoints' stores.
struct Replay {
    shelf: Shelf,
    stores: Vec<Store>,
    stamps_since_ns: u64,
    report: RecoveryReport,
    /// Per endpoint, whether any blob reference was replayed into its index: only those
    /// endpoints' keys are read again to adopt their chunks (reading every key of a core
    /// once more, in index order, was most of a replay of small values).
    has_blobs: Vec<bool>,
}

/// Replay found the core's log itself damaged (or reading it failed).
type Stop = io::Result<Corruption>;

impl Shelf {
    /// Opens core's log on `volume` and replays it into one store per endpoint (`endpoints`
    /// of them, by slot). A core that never wrote has no files and opening it costs a
    /// directory listing. Open the core's [`BlobStore`] first; `config` must have passed
    /// [`StoreConfig::validate`]. I/O errors while reading are returned; corruption is not an
    /// error but quarantined stores (see the report). Writes stamped at or after
    /// `stamps_since_ns` (wall clock; `u64::MAX`: none) are listed in the report's `stamps`.
    /// Call [`BlobStore::reclaim_unreferenced`] afterwards if no endpoint was quarantined.
    pub fn open(
        volume: Box<dyn Volume>,
        blobs: BlobStore,
        config: &StoreConfig,
        endpoints: u32,
        stamps_since_ns: u64,
    ) -> io::Result<(Shelf, Vec<Store>, RecoveryReport)> {
        assert_eq!(config.validate(), Ok(()), "validated at start-up");
        assert!(endpoints < record::NO_ENDPOINT, "endpoint slots fit a record");
        let mut numbers: Vec<u64> =
            volume.list()?.iter().filter_map(|n| segment_number(n)).collect();
        numbers.sort_unstable();
        let log = Log::new(volume, config.segment_bytes, config.tail_bytes_max);
        let mut replay = Replay {
            shelf: Shelf::new(log, blobs, config),
            stores: (0..endpoints).map(Store::empty).collect(),
            stamps_since_ns,
            report: RecoveryReport { segments: numbers.len() as u64, ..Default::default() },
            has_blobs: vec![false; endpoints as usize],
        };
        let outcome = match replay.segments(&numbers) {
            Ok(scan) => replay.finish(&numbers, scan)?,
            Err(stop) => Err(stop?),
        };
        if let Err(corruption) = outcome {
            return Ok(replay.quarantine_core(corruption));
        }
        replay.adopt_blobs();
        let Replay { mut shelf, stores, mut report, .. } = replay;
        shelf.set_endpoints(endpoints);
        report.quarantined =
            stores.iter().filter_map(|s| Some((s.endpoint, *s.quarantine.clone()?))).collect();
        Ok((shelf, stores, report))
    }
}

impl Replay {
    fn corruption(&self, number: u64, offset: u64, reason: &str) -> Corruption {
        Corruption {
            file: self.shelf.log.volume().describe(&segment_name(number)),
            offset,
            reason: reason.to_string(),
        }
    }

    /// Every endpoint quarantined for damage to the core's log, and the log closed.
    fn quarantine_core(self, corruption: Corruption) -> (Shelf, Vec<Store>, RecoveryReport) {
        let Replay { shelf, stores, mut report, .. } = self;
        let config = shelf.config.clone();
        let log = shelf.log.into_closed(StoreError::Quarantined);
        let mut shelf = Shelf::new(log, shelf.blobs, &config);
        shelf.set_endpoints(stores.len() as u32);
        let stores: Vec<Store> = (0..stores.len() as u32)
            .map(|slot| {
                let mut store = Store::empty(slot);
                store.quarantine = Some(Box::new(corruption.clone()));
                store
            })
            .collect();
        report.quarantined = stores.iter().map(|s| (s.endpoint, corruption.clone())).collect();
        (shelf, stores, report)
    }

    /// Reads every segment, oldest first, into the indexes. Changes no file.
    ///
    /// A roll makes the next segment before the one it seals is synced, and the log makes the
    /// one after it ahead (`Volume::prepare`), so after a power cut the newest segments may be
    /// zeros, headers included. Nothing in them was durable (a sync makes a segment's header
    /// durable with its first records): the log ends at the last segment with a header. If
    /// its seal names the next one, that one is made the active one again (a torn tail) and
    /// the others are removed; if no seal names any, the first is kept for the next roll and
    /// any others are removed, all without a report (files made ahead). A zero header before
    /// a valid one is damage.
    fn segments(&mut self, numbers: &[u64]) -> Result<Scan, Stop> {
        if numbers.len() > SEGMENTS_MAX {
            let reason = "more segments than a core's log may have";
            return Err(Ok(self.corruption(numbers[0], 0, reason)));
        }
        let mut devices = Vec::with_capacity(numbers.len());
        for &number in numbers {
            let device = self.shelf.log.volume().open(&segment_name(number)).map_err(Err)?;
            let len = device.len();
            let header = device.read(0, len.min(SEGMENT_HEADER_BYTES) as usize).map_err(Err)?;
            let (valid, zero) =
                (valid_segment_header(header, number), header.iter().all(|&b| b == 0));
            let earlier = header.starts_with(EARLIER_SEGMENT_MAGIC);
            self.report.bytes_replayed += len;
            devices.push((device, valid, zero, earlier));
        }
        let synced =
            devices.iter().rposition(|(_, valid, zero, _)| *valid || !*zero).map_or(0, |i| i + 1);
        let mut scan = Scan::default();
        let mut devices = devices.into_iter();
        for (i, &number) in numbers[..synced].iter().enumerate() {
            let (device, valid, _, earlier) = devices.next().expect("one per number");
            if !valid {
                let reason = if earlier {
                    "segment in the record format before 28-byte headers (magic CRDLSEG2), \
                     which this version cannot read: `cradle export` its keys with the version \
                     that wrote it and `cradle import` them into an empty data dir"
                } else {
                    "bad segment header"
                };
                return Err(Ok(self.corruption(number, 0, reason)));
            }
            let len = device.len();
            let slot = self.shelf.log.adopt(Segment::new(number, device, len));
            let end = self.segment(slot, number, i + 1 == synced, &mut scan)?;
            self.shelf.log.set_end(slot, end);
        }
        if synced > 0 && scan.sealed_into.is_none() && synced < numbers.len() {
            // Zero files that no seal names: made ahead for the next roll (`Volume::prepare`),
            // or made by a roll whose seal never reached the disk. Nothing in them was
            // durable; the newest segment with a header stays the active one, and the next
            // roll takes the first zero file as it is.
            scan.made_ahead = Some(numbers[synced]);
            scan.removed = numbers[synced + 1..].to_vec();
        } else if let Some((device, _, _, _)) = devices.next() {
            let number = numbers[synced];
            let slot = self.shelf.log.adopt(Segment::new(number, device, SEGMENT_HEADER_BYTES));
            scan.never_synced = Some((slot, number));
            scan.removed = numbers[synced + 1..].to_vec();
        }
        Ok(scan)
    }

    /// Replays one segment; returns where its valid records end.
    fn segment(
        &mut self,
        slot: u16,
        number: u64,
        newest: bool,
        scan: &mut Scan,
    ) -> Result<u64, Stop> {
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut sealed_into = None;
        let len = self.shelf.log.segment(slot).device.len().min(crate::index::OFFSET_MAX);
        while offset < len {
            let loc = Loc { segment: slot, offset: offset as u32 };
            let record = match self.shelf.log.read(loc) {
                Ok(record) => record,
                Err(Bad::End) => break,
                Err(bad) if newest && !self.valid_after(slot, offset, len) => {
                    scan.torn_at = Some((slot, number, offset, bad));
                    break;
                }
                Err(bad) => match self.shelf.log.owner(loc) {
                    // A damaged payload under a sound header: its endpoint alone.
                    Some((owner, span)) if owner < self.stores.len() as u32 => {
                        let corruption = self.corruption(number, offset, bad.describe());
                        let store = &mut self.stores[owner as usize];
                        store.quarantine.get_or_insert(Box::new(corruption));
                        offset += span as u64;
                        continue;
                    }
                    _ => return Err(Ok(self.corruption(number, offset, bad.describe()))),
                },
            };
            let span = record.span as u64;
            if record.kind == Kind::Marker {
                let (oldest, next) = parse_marker(record.payload).unwrap_or((0, 0));
                scan.required_oldest = scan.required_oldest.max(oldest);
                sealed_into = (next != 0).then_some(next);
                self.shelf.log.mark_dead(loc, span);
            } else if record.endpoint >= self.stores.len() as u32 {
                let reason = "record of an endpoint this core does not have";
                return Err(Ok(self.corruption(number, offset, reason)));
            } else {
                let (kind, meta) = (record.kind, record.meta);
                let stamp = record.stamp().map(|s| (s, stamped_write(&record, s)));
                let segment = self.shelf.log.segment_mut(slot);
                segment.note_expiry(kind, &meta);
                if let Some((stamp, write)) = stamp {
                    segment.stamped_at_max = segment.stamped_at_max.max(Some(stamp.at_ns));
                    if stamp.at_ns >= self.stamps_since_ns {
                        self.report.stamps.push(write);
                    }
                }
                self.apply(loc, span);
            }
            self.report.records += 1;
            offset += span;
        }
        if newest {
            scan.sealed_into = sealed_into;
        }
        Ok(offset)
    }

    /// Whether any valid record starts after `offset` (then a bad record is not a torn tail).
    fn valid_after(&self, slot: u16, offset: u64, len: u64) -> bool {
        let device = &self.shelf.log.segment(slot).device;
        let Ok(rest) = device.read(offset, (len - offset) as usize) else {
            return false;
        };
        (record::ALIGN..rest.len())
            .step_by(record::ALIGN)
            .any(|i| record::decode(&rest[i..]).is_ok())
    }

    /// Applies one replayed record to its endpoint's index: the last record of a key in log
    /// order is its current one (cleaning copies forward only live records, so this holds).
    fn apply(&mut self, loc: Loc, span: u64) {
        // (`segment` decoded this record whole just now, and every indexed one before it.)
        let log = &self.shelf.log;
        let record = log.read_unverified(loc).expect("replayed record reads");
        let (kind, endpoint) = (record.kind, record.endpoint as usize);
        if kind == Kind::Drop {
            // (Its blob references were never adopted: nothing to release.)
            let store = &mut self.stores[endpoint];
            store.forget(&mut self.shelf, false);
            store.quarantine = None;
            store.dropped_at = Some(self.shelf.log.position(loc));
            self.shelf.log.mark_dead(loc, span);
            return;
        }
        self.has_blobs[endpoint] |= kind == Kind::Blob;
        let store = &mut self.stores[endpoint];
        store.last_version = store.last_version.max(record.lsn);
        let live = live_of(&record);
        let hash = key_hash(record.key);
        let is_key =
            |l: Loc| log.read_unverified(l).expect("indexed record reads").key == record.key;
        let old = match kind {
            Kind::Put | Kind::Blob => store.index.insert(hash, loc, is_key).expect("index room"),
            Kind::Tombstone => store.index.remove(hash, is_key),
            Kind::Marker | Kind::Note | Kind::Floor | Kind::Drop => None,
        };
        let old = old.map(|old| {
            let old_record = log.read_unverified(old).expect("indexed record reads");
            (old, old_record.span as u64, live_of(&old_record))
        });
        if let Some((old, old_span, old_live)) = old {
            store.live_bytes -= old_live;
            self.shelf.log.mark_dead(old, old_span);
        }
        match kind {
            Kind::Put | Kind::Blob => store.live_bytes += live,
            Kind::Tombstone | Kind::Marker | Kind::Note | Kind::Drop => {
                self.shelf.log.mark_dead(loc, span);
            }
            Kind::Floor => {} // (counted live: see `Store::floor`)
        }
    }

    /// Checks the scan for missing segments, then (only if all is well) cuts the torn tail.
    fn finish(&mut self, numbers: &[u64], scan: Scan) -> io::Result<Result<(), Corruption>> {
        let kept = &numbers[..numbers.len() - scan.removed.len()];
        let Some(&newest) = kept.last() else {
            return Ok(Ok(()));
        };
        let expected_oldest = scan.required_oldest.max(kept[0]);
        for number in expected_oldest..=newest {
            if kept.binary_search(&number).is_err() {
                return Ok(Err(self.corruption(number, 0, "segment missing")));
            }
        }
        if let Some(next) = scan.sealed_into.filter(|next| kept.binary_search(next).is_err()) {
            return Ok(Err(self.corruption(next, 0, "segment missing (named by a seal)")));
        }
        if let Some((slot, number, offset, bad)) = scan.torn_at {
            self.report.torn_tail = Some(TornTail {
                file: self.shelf.log.volume().describe(&segment_name(number)),
                offset,
                reason: bad.describe().to_string(),
            });
            self.cut_tail(slot, number, offset)?;
        }
        if let Some((slot, number)) = scan.never_synced {
            let removed = scan.removed.len();
            self.report.torn_tail.get_or_insert_with(|| TornTail {
                file: self.shelf.log.volume().describe(&segment_name(number)),
                offset: 0,
                reason: format!(
                    "never synced ({removed} newer segments, never synced either, removed)"
                ),
            });
            self.cut_tail(slot, number, 0)?;
        }
        if scan.never_synced.is_some() || scan.made_ahead.is_some() {
            for &number in &scan.removed {
                self.shelf.log.volume().remove(&segment_name(number))?;
            }
            // Also makes a file made ahead durable (it may have been made just before a
            // crash) before the log's next roll writes a seal naming it.
            self.shelf.log.volume().sync()?;
        }
        if let Some(ahead) = scan.made_ahead {
            self.shelf.log.set_ahead(ahead);
        }
        Ok(Ok(()))
    }

    /// Zeroes the newest segment from `offset` (0: re-initialise it) and makes it durable.
    fn cut_tail(&mut self, slot: u16, number: u64, offset: u64) -> io::Result<()> {
        let segment_bytes = self.shelf.config.segment_bytes;
        let device = &mut self.shelf.log.segment_mut(slot).device;
        if device.len() < segment_bytes {
            device.set_len(segment_bytes)?;
        }
        let from = offset.max(SEGMENT_HEADER_BYTES);
        device.punch(from, device.len() - from)?;
        if offset == 0 {
            device.write(0, &segment_header(number))?;
        }
        device.sync()?;
        self.shelf.log.set_end(slot, from);
        Ok(())
    }

    /// Takes the blob references of each endpoint's live keys; one naming a missing chunk
    /// quarantines its endpoint. A quarantined endpoint's index is emptied (reads answer
    /// `Quarantined` anyway, and cleaning leaves its records alone).
    fn adopt_blobs(&mut self) {
        let (log, blobs) = (&self.shelf.log, &mut self.shelf.blobs);
        for (store, &has_blobs) in self.stores.iter_mut().zip(&self.has_blobs) {
            if store.quarantine.is_some() {
                store.index = Default::default();
                store.live_bytes = 0;
                continue;
            }
            if !has_blobs {
                continue;
            }
            for loc in store.index.locations() {
                let record = log.read(loc).expect("indexed record reads");
                if record.kind != Kind::Blob {
                    continue;
                }
                if !blob::is_reference(record.payload) || blobs.adopt(record.payload).is_err() {
                    let corruption = log.corruption(loc, "blob reference to a missing chunk");
                    store.quarantine = Some(Box::new(corruption));
                    break;
                }
            }
            if store.quarantine.is_some() {
                store.index = Default::default();
                store.live_bytes = 0;
            }
        }
    }
}

/// The completion record a stamped record rebuilds.
fn stamped_write(record: &Record<'_>, stamp: Stamp) -> StampedWrite {
    let note = match record.kind {
        Kind::Note => crate::store::parse_note(record.payload),
        _ => None,
    };
    let version = match record.kind {
        Kind::Tombstone => 0,
        Kind::Note => note.map_or(0, |(_, v)| v),
        _ => record.lsn,
    };
    let value = if record.kind == Kind::Put { ShortValue::of(record.payload) } else { None };
    StampedWrite { stamp, version, value, status: note.map(|(s, _)| s) }
}

/// Bytes of key and value a record keeps alive.
fn live_of(record: &Record<'_>) -> u64 {
    let value = match record.kind {
        Kind::Put => record.payload.len() as u64,
        Kind::Blob if blob::is_reference(record.payload) => blob::value_len(record.payload),
        _ => 0,
    };
    match record.kind {
        Kind::Put | Kind::Blob => record.key.len() as u64 + value,
        _ => 0,
    }
}
