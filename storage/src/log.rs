//! A core's append log, shared by all its endpoints: numbered segment files on a volume, a
//! tail buffer, group commit, poisoning. Each record names its endpoint; each endpoint keeps
//! its own logical log (LSNs, index) over it (see `shelf.rs`). The first file is created by
//! the first append, so a core that never wrote costs no file, no map and no descriptor.
//!
//! A segment starts with a 32-byte header (magic, number, reserved, checksum) and holds
//! records (see `record.rs`) up to a zero header. When a segment is full, a marker record
//! naming the next segment ends it ("seal"); compaction writes a marker naming the oldest
//! segment that must still exist. Recovery uses both to tell a missing file from a deleted
//! one.

use crate::device::{LogDevice, Volume};
use crate::error::{failure_of, refusal_or_stop, Corruption, StoreError};
use crate::index::{Loc, SEGMENTS_MAX};
use crate::record::{self, Bad, Kind, Meta, Record, Stamp};
use std::collections::VecDeque;
use std::io;
use xxhash_rust::xxh3::xxh3_64;

pub(crate) const SEGMENT_HEADER_BYTES: u64 = 32;
const MAGIC: &[u8; 8] = b"CRDLSEG3";
/// Room always kept free at the end of a segment for its seal.
const SEAL_BYTES: u64 = record::HEADER_BYTES as u64 + 16;

/// A marker's payload: (oldest segment that must exist, next segment or 0).
pub(crate) fn marker_payload(oldest: u64, next: u64) -> [u8; 16] {
    let mut p = [0; 16];
    p[..8].copy_from_slice(&oldest.to_le_bytes());
    p[8..].copy_from_slice(&next.to_le_bytes());
    p
}

pub(crate) fn parse_marker(payload: &[u8]) -> Option<(u64, u64)> {
    let oldest = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let next = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((oldest, next))
}

pub(crate) fn segment_name(number: u64) -> String {
    format!("{number:010}.seg")
}

pub(crate) fn segment_number(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
}

pub(crate) fn segment_header(number: u64) -> [u8; 32] {
    let mut h = [0; 32];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&number.to_le_bytes());
    // (16..24 reserved, 0: per-endpoint LSN floors are records of their own, `Kind::Floor`.)
    let checksum = xxh3_64(&h[..24]);
    h[24..].copy_from_slice(&checksum.to_le_bytes());
    h
}

/// Whether `h` is a valid header for segment `number`.
pub(crate) fn valid_segment_header(h: &[u8], number: u64) -> bool {
    h.len() >= 32
        && &h[..8] == MAGIC
        && h[8..16] == number.to_le_bytes()
        && h[16..24] == [0; 8]
        && h[24..32] == xxh3_64(&h[..24]).to_le_bytes()
}

/// One open segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) number: u64,
    pub(crate) device: Box<dyn LogDevice>,
    /// Bytes in use (header and records, the tail included).
    pub(crate) end: u64,
    /// Bytes of records nobody points at any more.
    pub(crate) dead: u64,
    /// The latest `Stamp::at_ns` of its records (None: none stamped): compaction leaves the
    /// segment alone while a resend of one of its writes may still come.
    pub(crate) stamped_at_max: Option<u64>,
    /// The wall-clock time by which every value record in it has expired (`u64::MAX`: one
    /// never does; None: it holds none): compaction is due once the store's clock passes it.
    pub(crate) values_expire_by: Option<u64>,
    synced: bool,
}

impl Segment {
    pub(crate) fn new(number: u64, device: Box<dyn LogDevice>, end: u64) -> Segment {
        let values_expire_by = None;
        Segment {
            number,
            device,
            end,
            dead: 0,
            stamped_at_max: None,
            values_expire_by,
            synced: true,
        }
    }

    /// Notes a record of `kind` with `meta` in this segment.
    pub(crate) fn note_expiry(&mut self, kind: Kind, meta: &Meta) {
        if matches!(kind, Kind::Put | Kind::Blob) {
            let by = if meta.expires_at_ns == 0 { u64::MAX } else { meta.expires_at_ns };
            self.values_expire_by = Some(self.values_expire_by.unwrap_or(0).max(by));
        }
    }
}

/// The log of one core.
#[derive(Debug)]
pub(crate) struct Log {
    volume: Box<dyn Volume>,
    segment_bytes: u64,
    tail_bytes_max: usize,
    slots: Vec<Option<Segment>>,
    /// Slots from the oldest segment to the active one.
    order: VecDeque<u16>,
    next_number: u64,
    /// Records appended to the active segment and not yet written to it.
    tail: Vec<u8>,
    tail_start: u64,
    new_files: bool,
    failure: Option<StoreError>,
    /// The number of a zero segment file already on the volume, its entry durable, that the
    /// next roll takes as it is (recovery found it made ahead).
    ahead: Option<u64>,
}

impl Log {
    pub(crate) fn new(volume: Box<dyn Volume>, segment_bytes: u64, tail_bytes_max: usize) -> Log {
        Log {
            volume,
            segment_bytes,
            tail_bytes_max,
            slots: Vec::new(),
            order: VecDeque::new(),
            next_number: 0,
            tail: Vec::new(),
            tail_start: 0,
            new_files: false,
            failure: None,
            ahead: None,
        }
    }

    /// Segment `number`, a zero file on the volume with a durable entry, is the next roll's.
    pub(crate) fn set_ahead(&mut self, number: u64) {
        self.ahead = Some(number);
    }

    pub(crate) fn volume(&self) -> &dyn Volume {
        &*self.volume
    }

    /// Adopts a recovered segment (oldest first); the last one adopted is the active one.
    pub(crate) fn adopt(&mut self, segment: Segment) -> u16 {
        self.next_number = segment.number + 1;
        self.tail_start = segment.end;
        let slot = self.free_slot().expect("recovery checks the segment count");
        self.slots[slot as usize] = Some(segment);
        self.order.push_back(slot);
        slot
    }

    pub(crate) fn failure(&self) -> Option<StoreError> {
        self.failure
    }

    /// Stops the log with `failure` (a flush failed elsewhere, e.g. in the blob store).
    pub(crate) fn stop(&mut self, failure: StoreError) {
        self.failure.get_or_insert(failure);
    }

    fn check(&self) -> Result<(), StoreError> {
        self.failure.map_or(Ok(()), Err)
    }

    /// Stops the log for good (until a restart); `e` decides NoSpace, Exhausted or Poisoned.
    fn poison(&mut self, e: &io::Error) -> StoreError {
        let failure = failure_of(e);
        self.failure = Some(failure);
        failure
    }

    pub(crate) fn segment(&self, slot: u16) -> &Segment {
        self.slots[slot as usize].as_ref().expect("live segment slot")
    }

    pub(crate) fn segment_mut(&mut self, slot: u16) -> &mut Segment {
        self.slots[slot as usize].as_mut().expect("live segment slot")
    }

    pub(crate) fn segment_count(&self) -> usize {
        self.order.len()
    }

    /// The oldest segment, if it is not the active one.
    pub(crate) fn oldest_sealed(&self) -> Option<u16> {
        (self.order.len() >= 2).then(|| self.order[0])
    }

    fn active(&self) -> Option<u16> {
        self.order.back().copied()
    }

    /// Appends a record of `endpoint`; it is readable at once and durable after `sync`.
    #[allow(clippy::too_many_arguments)] // (a record's fields)
    pub(crate) fn append(
        &mut self,
        kind: Kind,
        endpoint: u32,
        lsn: u64,
        stamp: Option<&Stamp>,
        meta: &Meta,
        key: &[u8],
        payload: &[u8],
    ) -> Result<Loc, StoreError> {
        self.check()?;
        let span = record::span_of(stamp.is_some(), meta, key.len(), payload.len()) as u64;
        let fits = self
            .active()
            .is_some_and(|a| self.segment(a).end + span + SEAL_BYTES <= self.segment_bytes);
        if !fits {
            self.roll()?;
        }
        Ok(self.push(kind, endpoint, lsn, stamp, meta, key, payload))
    }

    /// Encodes into the tail of the active segment (which has room).
    #[allow(clippy::too_many_arguments)] // (a record's fields)
    fn push(
        &mut self,
        kind: Kind,
        endpoint: u32,
        lsn: u64,
        stamp: Option<&Stamp>,
        meta: &Meta,
        key: &[u8],
        payload: &[u8],
    ) -> Loc {
        let slot = self.active().expect("an active segment");
        let offset = self.segment(slot).end;
        record::encode(&mut self.tail, kind, endpoint, lsn, stamp, meta, key, payload);
        let end = self.tail_start + self.tail.len() as u64;
        assert!(end <= self.segment_bytes, "the caller made room");
        let segment = self.segment_mut(slot);
        segment.end = end;
        // As replay will read it back (rounded up), so cleaning decides alike before and after.
        let at_ns = stamp.map(|s| s.as_recorded().at_ns);
        segment.stamped_at_max = segment.stamped_at_max.max(at_ns);
        segment.note_expiry(kind, meta);
        if self.tail.len() > self.tail_bytes_max {
            // Bounded memory: a failure here poisons, and the next call reports it.
            let _ = self.write_out();
        }
        Loc { segment: slot, offset: offset as u32 }
    }

    fn free_slot(&mut self) -> Option<u16> {
        if let Some(i) = self.slots.iter().position(Option::is_none) {
            return Some(i as u16);
        }
        if self.slots.len() >= SEGMENTS_MAX {
            return None;
        }
        self.slots.push(None);
        Some((self.slots.len() - 1) as u16)
    }

    /// Seals the active segment (if any) and starts the next one.
    fn roll(&mut self) -> Result<(), StoreError> {
        let slot = self.free_slot().ok_or(StoreError::NoSpace)?;
        let number = self.next_number;
        // The new file exists durably before the seal that names it can reach the disk,
        // so recovery may treat a named-but-absent segment as lost data. A core's first
        // segment is named by no seal: its directory entry is made durable with its records
        // (`sync`, or the memory class's background sync), not on the loop here.
        // A full disk or a limit (open files, maps) here changed nothing: the write is
        // refused and the next one tries again. Anything else poisons.
        // Usually the file was made, sized and its directory entry synced ahead, on the
        // volume's own thread (`Volume::prepare`, asked at the previous roll): then the loop
        // only opens and maps it.
        let name = segment_name(number);
        let (made, durable) = if self.ahead == Some(number) {
            (self.open_ahead(&name), true)
        } else if let Some(made) = self.volume.take_prepared(&name) {
            (made, true)
        } else {
            (self.volume.create(&name, self.segment_bytes), false)
        };
        let device = made.map_err(|e| refusal_or_stop(&mut self.failure, &e))?;
        if self.active().is_some() && !durable {
            if let Err(e) = self.volume.sync() {
                let failure = refusal_or_stop(&mut self.failure, &e);
                if failure != StoreError::Poisoned {
                    // (Its directory could not even be opened: the new file goes again.)
                    drop(device);
                    self.volume.remove(&name).map_err(|e| self.poison(&e))?;
                }
                return Err(failure);
            }
        }
        if let Some(active) = self.active() {
            let oldest = self.segment(self.order[0]).number;
            self.push(
                Kind::Marker,
                record::NO_ENDPOINT,
                0,
                None,
                &Meta::NONE,
                &[],
                &marker_payload(oldest, number),
            );
            self.write_out()?;
            self.segment_mut(active).synced = false;
        }
        self.next_number = number + 1;
        let mut segment = Segment::new(number, device, 0);
        segment.synced = false;
        self.slots[slot as usize] = Some(segment);
        self.order.push_back(slot);
        self.new_files |= !durable;
        self.tail_start = 0;
        self.tail.extend_from_slice(&segment_header(number));
        self.segment_mut(slot).end = SEGMENT_HEADER_BYTES;
        // The next one, made ahead: a zero file after the log's end that no seal names, which
        // a restart keeps for its next roll (`Replay::segments`).
        self.volume.prepare(&segment_name(self.next_number), self.segment_bytes);
        Ok(())
    }

    /// The zero file recovery found made ahead, sized as segments are now (it may have been
    /// cut short by a crash while it was made, or made under another `segment_bytes`).
    fn open_ahead(&mut self, name: &str) -> io::Result<Box<dyn LogDevice>> {
        let mut device = self.volume.open(name)?;
        if device.len() != self.segment_bytes {
            device.set_len(self.segment_bytes)?;
        }
        self.ahead = None;
        Ok(device)
    }

    /// The record at `loc`, checked (checksum and length) again on the way out.
    pub(crate) fn read(&self, loc: Loc) -> Result<Record<'_>, Bad> {
        let offset = u64::from(loc.offset);
        let segment = self.segment(loc.segment);
        if Some(loc.segment) == self.active() && offset >= self.tail_start {
            return record::decode(&self.tail[(offset - self.tail_start) as usize..]);
        }
        let len = segment.device.len().saturating_sub(offset) as usize;
        let bytes = segment.device.read(offset, len).map_err(|_| Bad::Truncated)?;
        record::decode(bytes)
    }

    /// `read` without the checksums (see `record::decode_unverified`).
    pub(crate) fn read_unverified(&self, loc: Loc) -> Result<Record<'_>, Bad> {
        let offset = u64::from(loc.offset);
        if Some(loc.segment) == self.active() && offset >= self.tail_start {
            return record::decode_unverified(&self.tail[(offset - self.tail_start) as usize..]);
        }
        let device = &self.segment(loc.segment).device;
        let len = device.len().saturating_sub(offset) as usize;
        record::decode_unverified(device.read(offset, len).map_err(|_| Bad::Truncated)?)
    }

    /// The owner and span of the record at `loc` if its header is sound, whatever its
    /// payload (see `record::owner`).
    pub(crate) fn owner(&self, loc: Loc) -> Option<(u32, usize)> {
        let offset = u64::from(loc.offset);
        if Some(loc.segment) == self.active() && offset >= self.tail_start {
            return record::owner(&self.tail[(offset - self.tail_start) as usize..]);
        }
        let device = &self.segment(loc.segment).device;
        let len = device.len().saturating_sub(offset) as usize;
        record::owner(device.read(offset, len).ok()?)
    }

    /// Writes the tail to the active file (page cache; durable after `sync`).
    pub(crate) fn write_out(&mut self) -> Result<(), StoreError> {
        self.check()?;
        let Some(slot) = self.active() else {
            return Ok(());
        };
        if self.tail.is_empty() {
            return Ok(());
        }
        let start = self.tail_start;
        let segment = self.slots[slot as usize].as_mut().expect("active segment");
        let result = segment.device.write(start, &self.tail);
        segment.synced = false;
        if let Err(e) = result {
            // Records already applied did not reach the file: never a clean `Exhausted`
            // refusal, which the core answers as a write that changed nothing.
            let failure = match failure_of(&e) {
                StoreError::Exhausted(_) => StoreError::Poisoned,
                other => other,
            };
            self.failure = Some(failure);
            return Err(failure);
        }
        self.tail_start += self.tail.len() as u64;
        self.tail.clear();
        Ok(())
    }

    /// Whether `sync` has anything to do.
    pub(crate) fn needs_sync(&self) -> bool {
        !self.tail.is_empty() || self.slots.iter().flatten().any(|s| !s.synced)
    }

    /// Group commit: every record appended so far is durable when this returns Ok.
    /// A failure poisons the log; it is never retried.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        self.write_out()?;
        if self.new_files {
            self.volume.sync().map_err(|e| self.poison(&e))?;
            self.new_files = false;
        }
        for i in 0..self.slots.len() {
            let Some(segment) = self.slots[i].as_mut().filter(|s| !s.synced) else {
                continue;
            };
            if let Err(e) = segment.device.sync() {
                return Err(self.poison(&e));
            }
            segment.synced = true;
        }
        Ok(())
    }

    /// Marks the whole record at `loc` dead (one dead from birth: a tombstone, a note).
    pub(crate) fn mark_dead_record(&mut self, loc: Loc) {
        let span = self.read(loc).expect("a record just appended reads").span as u64;
        self.mark_dead(loc, span);
    }

    /// Where `loc` is in log order: (segment number, offset).
    pub(crate) fn position(&self, loc: Loc) -> (u64, u32) {
        (self.segment(loc.segment).number, loc.offset)
    }

    /// Where `loc` is, for a report of a damaged record there.
    pub(crate) fn corruption(&self, loc: Loc, reason: &str) -> Corruption {
        let number = self.segment(loc.segment).number;
        Corruption {
            file: self.volume.describe(&segment_name(number)),
            offset: u64::from(loc.offset),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn mark_dead(&mut self, loc: Loc, bytes: u64) {
        let segment = self.segment_mut(loc.segment);
        segment.dead += bytes;
        assert!(segment.dead <= segment.end, "dead bytes exceed the segment");
    }

    /// Bytes in use and dead bytes over all segments.
    pub(crate) fn usage(&self) -> (u64, u64) {
        let segments = self.slots.iter().flatten();
        segments.fold((0, 0), |(used, dead), s| (used + s.end, dead + s.dead))
    }

    /// Sets where a recovered segment's valid records end; appends continue there.
    pub(crate) fn set_end(&mut self, slot: u16, end: u64) {
        self.segment_mut(slot).end = end;
        if self.active() == Some(slot) {
            self.tail_start = end;
        }
    }

    /// The same log with every file closed and appends refused with `failure`, for a core
    /// whose log cannot be trusted (no file is changed).
    pub(crate) fn into_closed(self, failure: StoreError) -> Log {
        let mut log = Log::new(self.volume, self.segment_bytes, self.tail_bytes_max);
        log.failure = Some(failure);
        log
    }

    /// Bytes in use and dead bytes of the active segment.
    pub(crate) fn active_usage(&self) -> (u64, u64) {
        self.active().map_or((0, 0), |a| (self.segment(a).end, self.segment(a).dead))
    }

    /// Deletes the oldest segment, whose live records were copied forward: first a durable
    /// marker saying it may be gone, then the file (its space goes back to the disk).
    pub(crate) fn retire_oldest(&mut self) -> Result<(), StoreError> {
        let slot = self.oldest_sealed().expect("a sealed segment to retire");
        let next_oldest = self.segment(self.order[1]).number;
        self.append(
            Kind::Marker,
            record::NO_ENDPOINT,
            0,
            None,
            &Meta::NONE,
            &[],
            &marker_payload(next_oldest, 0),
        )?;
        self.sync()?;
        let number = self.segment(slot).number;
        self.volume.remove(&segment_name(number)).map_err(|e| self.poison(&e))?;
        self.slots[slot as usize] = None;
        self.order.pop_front();
        Ok(())
    }
}
