//! Restart: replay an endpoint's segments, rebuild its index, decide what a damaged log
//! means. The outcomes (also in README.md):
//!
//! - torn tail (a bad or partial record in the newest segment with no valid record after
//!   it): the bytes from there on are zeroed, the log continues there, the report says
//!   where and how much;
//! - any other bad record or segment header, a missing segment, a too-short older segment:
//!   the endpoint is quarantined with file and byte offset, and no file is touched;
//! - an empty newest segment (created, never synced): re-initialised and reported as a torn
//!   tail at offset 0.

use crate::blob::{self, BlobStore};
use crate::device::Volume;
use crate::error::Corruption;
use crate::index::{Loc, SEGMENTS_MAX};
use crate::log::{
    parse_marker, parse_segment_header, segment_header, segment_name, segment_number, Log, Segment,
    SEGMENT_HEADER_BYTES,
};
use crate::record::{self, Bad, Kind, Record, Stamp};
use crate::store::{key_hash, Store};
use crate::StoreConfig;
use std::io;

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

/// What opening an endpoint store found and did.
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
    /// Why the endpoint is quarantined, if it is (the store then answers `Quarantined`).
    pub quarantine: Option<Corruption>,
    /// The stamped writes replayed whose stamp is at or after the `stamps_since_ns` given to
    /// [`Store::open`], in log order: the completion records to rebuild.
    pub stamps: Vec<StampedWrite>,
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
    /// The oldest segment a compaction marker says must exist.
    required_oldest: u64,
    /// The segment the newest one's seal names (it must exist).
    sealed_into: Option<u64>,
    /// Newest segment: its slot, where its valid part ends, and whether it was torn.
    torn_at: Option<(u16, u64, Bad)>,
}

impl Store {
    /// Opens the endpoint store on `volume`, replaying its log. An endpoint that never wrote
    /// has no files and opening it costs a directory lookup. Open the core's [`BlobStore`]
    /// first; `config` must have passed [`StoreConfig::validate`]. I/O errors while reading
    /// are returned; corruption is not an error but a quarantined store (see the report).
    /// Writes stamped at or after `stamps_since_ns` (wall clock; `u64::MAX`: none) are
    /// listed in the report's `stamps`.
    pub fn open(
        volume: Box<dyn Volume>,
        config: &StoreConfig,
        blobs: &mut BlobStore,
        stamps_since_ns: u64,
    ) -> io::Result<(Store, RecoveryReport)> {
        assert_eq!(config.validate(), Ok(()), "validated at start-up");
        let mut numbers: Vec<u64> =
            volume.list()?.iter().filter_map(|n| segment_number(n)).collect();
        numbers.sort_unstable();
        let log = Log::new(volume, config.segment_bytes, config.tail_bytes_max);
        let mut store = Store::empty(log, config);
        let mut report = RecoveryReport { segments: numbers.len() as u64, ..Default::default() };
        let outcome = store.replay(&numbers, stamps_since_ns, &mut report);
        let corruption = match outcome {
            Ok(scan) => store.finish(&numbers, scan, &mut report)?.err(),
            Err(e) => Some(e?),
        };
        if let Some(corruption) = corruption {
            return Ok(store.quarantined(corruption, report));
        }
        if let Err(corruption) = store.adopt_blobs(blobs) {
            return Ok(store.quarantined(corruption, report));
        }
        Ok((store, report))
    }

    fn quarantined(
        self,
        corruption: Corruption,
        mut report: RecoveryReport,
    ) -> (Store, RecoveryReport) {
        report.quarantine = Some(corruption.clone());
        let mut store = Store::empty(self.log.into_closed(), &self.config);
        store.quarantine = Some(corruption);
        (store, report)
    }

    fn corruption(&self, number: u64, offset: u64, reason: &str) -> Corruption {
        Corruption {
            file: self.log.volume().describe(&segment_name(number)),
            offset,
            reason: reason.to_string(),
        }
    }

    /// Reads every segment, oldest first, into the index. Changes no file.
    fn replay(
        &mut self,
        numbers: &[u64],
        stamps_since_ns: u64,
        report: &mut RecoveryReport,
    ) -> Result<Scan, io::Result<Corruption>> {
        if numbers.len() > SEGMENTS_MAX {
            return Err(Ok(self.corruption(
                numbers[0],
                0,
                "more segments than an endpoint may have",
            )));
        }
        let mut scan = Scan::default();
        for (i, &number) in numbers.iter().enumerate() {
            let newest = i + 1 == numbers.len();
            let device = self.log.volume().open(&segment_name(number)).map_err(Err)?;
            let len = device.len();
            report.bytes_replayed += len;
            let header = device.read(0, len.min(SEGMENT_HEADER_BYTES) as usize).map_err(Err)?;
            let floor = match parse_segment_header(header, number) {
                Some(floor) => floor,
                None if newest && header.iter().all(|&b| b == 0) => {
                    let slot =
                        self.log.adopt(Segment::new(number, device, SEGMENT_HEADER_BYTES), 0);
                    scan.torn_at = Some((slot, 0, Bad::End));
                    continue;
                }
                None => return Err(Ok(self.corruption(number, 0, "bad segment header"))),
            };
            self.last_version = self.last_version.max(floor);
            let slot = self.log.adopt(Segment::new(number, device, len), floor);
            let end =
                self.replay_segment(slot, number, newest, stamps_since_ns, &mut scan, report)?;
            self.log.set_end(slot, end);
        }
        Ok(scan)
    }

    /// Replays one segment; returns where its valid records end.
    fn replay_segment(
        &mut self,
        slot: u16,
        number: u64,
        newest: bool,
        stamps_since_ns: u64,
        scan: &mut Scan,
        report: &mut RecoveryReport,
    ) -> Result<u64, io::Result<Corruption>> {
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut sealed_into = None;
        let len = self.log.segment(slot).device.len().min(crate::index::OFFSET_MAX);
        while offset < len {
            let loc = Loc { segment: slot, offset: offset as u32 };
            let record = match self.log.read(loc) {
                Ok(record) => record,
                Err(Bad::End) => break,
                Err(bad) if newest && !self.valid_after(slot, offset, len) => {
                    scan.torn_at = Some((slot, offset, bad));
                    break;
                }
                Err(bad) => return Err(Ok(self.corruption(number, offset, bad.describe()))),
            };
            let (span, kind, lsn, stamp) =
                (record.span as u64, record.kind, record.lsn, record.stamp());
            let meta = record.meta;
            let short = if kind == Kind::Put { ShortValue::of(record.payload) } else { None };
            let note =
                if kind == Kind::Note { crate::store::parse_note(record.payload) } else { None };
            if kind == Kind::Marker {
                let (oldest, next) = parse_marker(record.payload).unwrap_or((0, 0));
                scan.required_oldest = scan.required_oldest.max(oldest);
                sealed_into = (next != 0).then_some(next);
            }
            if let Some(stamp) = stamp {
                let segment = self.log.segment_mut(slot);
                segment.stamped_at_max = segment.stamped_at_max.max(Some(stamp.at_ns));
                if stamp.at_ns >= stamps_since_ns {
                    let version = match kind {
                        Kind::Tombstone => 0,
                        Kind::Note => note.map_or(0, |(_, v)| v),
                        _ => lsn,
                    };
                    let status = note.map(|(s, _)| s);
                    report.stamps.push(StampedWrite { stamp, version, value: short, status });
                }
            }
            self.log.segment_mut(slot).note_expiry(kind, &meta);
            self.apply(loc, span);
            report.records += 1;
            offset += span;
        }
        if newest {
            scan.sealed_into = sealed_into;
        }
        Ok(offset)
    }

    /// Whether any valid record starts after `offset` (then a bad record is not a torn tail).
    fn valid_after(&self, slot: u16, offset: u64, len: u64) -> bool {
        let device = &self.log.segment(slot).device;
        let Ok(rest) = device.read(offset, (len - offset) as usize) else {
            return false;
        };
        (record::ALIGN..rest.len())
            .step_by(record::ALIGN)
            .any(|i| record::decode(&rest[i..]).is_ok())
    }

    /// Applies one replayed record to the index: the last record of a key in log order is
    /// its current one (compaction copies forward only live records, so this holds).
    fn apply(&mut self, loc: Loc, span: u64) {
        let record = self.log.read(loc).expect("replayed record reads");
        self.last_version = self.last_version.max(record.lsn);
        let kind = record.kind;
        let live = live_of(&record);
        let hash = key_hash(record.key);
        let log = &self.log;
        let is_key = |l: Loc| {
            let other = log.read(l).expect("indexed record reads");
            other.key == log.read(loc).expect("replayed record reads").key
        };
        let old = match kind {
            Kind::Put | Kind::Blob => self.index.insert(hash, loc, is_key).expect("index room"),
            Kind::Tombstone => self.index.remove(hash, is_key),
            Kind::Marker | Kind::Note => None,
        };
        if let Some(old) = old {
            let old_record = self.log.read(old).expect("indexed record reads");
            let (old_span, old_live) = (old_record.span as u64, live_of(&old_record));
            self.live_bytes -= old_live;
            self.log.mark_dead(old, old_span);
        }
        match kind {
            Kind::Put | Kind::Blob => self.live_bytes += live,
            Kind::Tombstone | Kind::Marker | Kind::Note => self.log.mark_dead(loc, span),
        }
    }

    /// Checks the scan for missing segments, then (only if all is well) cuts the torn tail.
    fn finish(
        &mut self,
        numbers: &[u64],
        scan: Scan,
        report: &mut RecoveryReport,
    ) -> io::Result<Result<(), Corruption>> {
        // Compaction may later drop the record holding the highest LSN (a tombstone): the
        // floors it writes must remember it.
        self.log.note_lsn(self.last_version);
        let Some(&newest) = numbers.last() else {
            return Ok(Ok(()));
        };
        let expected_oldest = scan.required_oldest.max(numbers[0]);
        for number in expected_oldest..=newest {
            if numbers.binary_search(&number).is_err() {
                return Ok(Err(self.corruption(number, 0, "segment missing")));
            }
        }
        if let Some(next) = scan.sealed_into {
            return Ok(Err(self.corruption(next, 0, "segment missing (named by a seal)")));
        }
        if let Some((slot, offset, bad)) = scan.torn_at {
            report.torn_tail = Some(TornTail {
                file: self.log.volume().describe(&segment_name(newest)),
                offset,
                reason: bad.describe().to_string(),
            });
            self.cut_tail(slot, newest, offset)?;
        }
        Ok(Ok(()))
    }

    /// Zeroes the newest segment from `offset` (0: re-initialise it) and makes it durable.
    fn cut_tail(&mut self, slot: u16, number: u64, offset: u64) -> io::Result<()> {
        let segment_bytes = self.config.segment_bytes;
        let device = &mut self.log.segment_mut(slot).device;
        if device.len() < segment_bytes {
            device.set_len(segment_bytes)?;
        }
        let from = offset.max(SEGMENT_HEADER_BYTES);
        device.punch(from, device.len() - from)?;
        if offset == 0 {
            device.write(0, &segment_header(number, 0))?;
        }
        device.sync()?;
        self.log.set_end(slot, from);
        Ok(())
    }

    /// Takes the blob references of the live keys.
    fn adopt_blobs(&mut self, blobs: &mut BlobStore) -> Result<(), Corruption> {
        let locations: Vec<Loc> = self.index.locations().collect();
        for loc in locations {
            let record = self.log.read(loc).expect("indexed record reads");
            if record.kind != Kind::Blob {
                continue;
            }
            if !blob::is_reference(record.payload) || blobs.adopt(record.payload).is_err() {
                let number = self.log.segment(loc.segment).number;
                let reason = "blob reference to a missing chunk";
                return Err(self.corruption(number, u64::from(loc.offset), reason));
            }
        }
        Ok(())
    }
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
