//! The blob tier of one core: content-addressed, reference-counted chunks in their own
//! segment files, shared by every endpoint of the core (identical content is stored once).
//!
//! A chunk record is 4 KiB aligned so a freed chunk's blocks can be punched out of the file:
//!
//! ```text
//! 0   u64       checksum: xxh3-64 of bytes 8..len
//! 8   u32       len: 48 + data
//! 12  u32       reserved, 0
//! 16  [u8; 32]  BLAKE3 of the data (the chunk's name)
//! 48  ..        data
//! ```
//!
//! A value's reference (what the endpoint log stores) is its length (u64) and the hashes of
//! its chunks. Refcounts live only in memory: recovery rebuilds them from the endpoint logs.

use crate::device::Volume;
use crate::error::{failure_of, refusal_or_stop, StoreError};
use crate::log::{segment_header, segment_name, segment_number, valid_segment_header};
use std::collections::{BTreeMap, HashMap};
use std::io;
use xxhash_rust::xxh3::xxh3_64;

const CHUNK_HEADER_BYTES: usize = 48;
const BLOCK: u64 = 4096;
/// Bytes of a BLAKE3 hash.
pub const HASH_BYTES: usize = 32;

/// A chunk's name.
pub type Hash = [u8; HASH_BYTES];

#[derive(Clone, Copy, Debug)]
struct Chunk {
    segment: u64,
    offset: u64,
    len: u32,
    /// Live records referring to it. At 0 the chunk is no longer readable by hash.
    refs: u32,
    /// References dropped by records not yet durable: the chunk's blocks are freed once these
    /// are released too (a crash before then replays the old records, which need it).
    detached: u32,
}

#[derive(Debug)]
struct BlobSegment {
    device: Box<dyn crate::device::LogDevice>,
    end: u64,
    chunks: u64,
    synced: bool,
}

/// What opening the blob store found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobReport {
    /// Chunks found.
    pub chunks: u64,
    /// Chunk records dropped because their checksum or hash did not match (their space is
    /// reclaimed; an endpoint referring to one is quarantined).
    pub chunks_dropped: u64,
    /// Segment files without a valid header, left untouched and unused.
    pub segments_ignored: u64,
}

/// The blob store of one core.
#[derive(Debug)]
pub struct BlobStore {
    volume: Box<dyn Volume>,
    chunk_bytes: usize,
    segment_bytes: u64,
    chunks: HashMap<Hash, Chunk>,
    segments: BTreeMap<u64, BlobSegment>,
    scratch: Vec<u8>,
    new_files: bool,
    live_bytes: u64,
    failure: Option<StoreError>,
    /// The segment chunks are appended to: only one created by this process, so recovery
    /// never has to decide where a damaged segment may be written again.
    active: Option<u64>,
    next_number: u64,
}

impl BlobStore {
    /// Opens the blob store on `volume` (its own directory), reading every chunk header.
    /// Refcounts start at zero: open the endpoint stores next, then call
    /// [`BlobStore::reclaim_unreferenced`].
    pub fn open(
        volume: Box<dyn Volume>,
        config: &crate::StoreConfig,
    ) -> io::Result<(BlobStore, BlobReport)> {
        let mut store = BlobStore {
            volume,
            chunk_bytes: config.chunk_bytes,
            segment_bytes: config.blob_segment_bytes,
            chunks: HashMap::new(),
            segments: BTreeMap::new(),
            scratch: Vec::new(),
            new_files: false,
            live_bytes: 0,
            failure: None,
            active: None,
            next_number: 0,
        };
        let mut report = BlobReport::default();
        let mut numbers: Vec<u64> =
            store.volume.list()?.iter().filter_map(|n| segment_number(n)).collect();
        numbers.sort_unstable();
        store.next_number = numbers.last().map_or(0, |n| n + 1);
        for number in numbers {
            store.scan_segment(number, &mut report)?;
        }
        report.chunks = store.chunks.len() as u64;
        Ok((store, report))
    }

    fn scan_segment(&mut self, number: u64, report: &mut BlobReport) -> io::Result<()> {
        let device = self.volume.open(&segment_name(number))?;
        let len = device.len();
        let header_ok =
            device.read(0, 32.min(len as usize)).is_ok_and(|h| valid_segment_header(h, number));
        if !header_ok {
            // Never synced (a chunk is durable only after its segment header is), or
            // damaged: no chunk in it is trusted. Left in place for an operator.
            report.segments_ignored += 1;
            return Ok(());
        }
        let mut segment = BlobSegment { device, end: BLOCK, chunks: 0, synced: true };
        let mut offset = BLOCK;
        while header_ok && offset + CHUNK_HEADER_BYTES as u64 <= len {
            // Skip holes (freed chunks, the unwritten rest of the segment) without reading
            // them: reading a hole through the map allocates a page on tmpfs, and on a full
            // one that is a SIGBUS.
            match segment.device.next_data(offset)? {
                Some(data) => offset = data.max(offset) / BLOCK * BLOCK,
                None => break,
            }
            if offset + CHUNK_HEADER_BYTES as u64 > len {
                break;
            }
            let rest = segment.device.read(offset, (len - offset) as usize)?;
            match check_chunk(rest) {
                Some((hash, chunk_len)) if !self.chunks.contains_key(&hash) => {
                    let chunk = Chunk {
                        segment: number,
                        offset,
                        len: chunk_len as u32,
                        refs: 0,
                        detached: 0,
                    };
                    self.chunks.insert(hash, chunk);
                    self.live_bytes += chunk_len as u64 - CHUNK_HEADER_BYTES as u64;
                    segment.chunks += 1;
                    segment.end = offset + span(chunk_len);
                    offset += span(chunk_len);
                }
                // A duplicate (a crash between two writes of the same content) is garbage.
                Some((_, chunk_len)) => offset += span(chunk_len),
                None => {
                    if rest[..CHUNK_HEADER_BYTES].iter().any(|&b| b != 0) {
                        report.chunks_dropped += 1;
                        segment.end = offset + BLOCK;
                    }
                    offset += BLOCK;
                }
            }
        }
        self.segments.insert(number, segment);
        Ok(())
    }

    /// Takes a reference on each chunk of a recovered value; the first missing chunk is
    /// returned (the endpoint holding the reference is then quarantined).
    pub(crate) fn adopt(&mut self, reference: &[u8]) -> Result<(), Hash> {
        for hash in hashes(reference) {
            match self.chunks.get_mut(&hash) {
                Some(chunk) => chunk.refs += 1,
                None => {
                    return Err(hash);
                }
            }
        }
        Ok(())
    }

    /// Frees every chunk no endpoint refers to. Call once, after every endpoint store of
    /// the core is open, and not at all if one was quarantined (its references are unknown).
    pub fn reclaim_unreferenced(&mut self) -> Result<u64, StoreError> {
        let dead: Vec<Hash> =
            self.chunks.iter().filter(|(_, c)| c.refs + c.detached == 0).map(|(h, _)| *h).collect();
        for hash in &dead {
            self.free(hash)?;
        }
        Ok(dead.len() as u64)
    }

    /// Stores `value` as chunks and writes its reference into `reference`.
    pub(crate) fn put(&mut self, value: &[u8], reference: &mut Vec<u8>) -> Result<(), StoreError> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        reference.clear();
        reference.extend_from_slice(&(value.len() as u64).to_le_bytes());
        for (i, data) in value.chunks(self.chunk_bytes).enumerate() {
            let hash: Hash = blake3::hash(data).into();
            if let Err(e) = self.take(hash, data) {
                // Undo the references taken so far: the value is not stored.
                let taken: Vec<Hash> = hashes(reference).take(i).collect();
                // A failure to free poisons the blob store; the error that matters is `e`.
                let _ = self.drop_refs(&taken);
                return Err(e);
            }
            reference.extend_from_slice(&hash);
        }
        Ok(())
    }

    fn take(&mut self, hash: Hash, data: &[u8]) -> Result<(), StoreError> {
        if let Some(chunk) = self.chunks.get_mut(&hash) {
            chunk.refs += 1;
            return Ok(());
        }
        let len = CHUNK_HEADER_BYTES + data.len();
        let number = self.room_for(span(len))?;
        let segment = self.segments.get_mut(&number).expect("active blob segment");
        let offset = segment.end;
        let mut record = Vec::with_capacity(len);
        record.extend_from_slice(&[0; 8]);
        record.extend_from_slice(&(len as u32).to_le_bytes());
        record.extend_from_slice(&[0; 4]);
        record.extend_from_slice(&hash);
        record.extend_from_slice(data);
        let checksum = xxh3_64(&record[8..]);
        record[..8].copy_from_slice(&checksum.to_le_bytes());
        assert_eq!(check_chunk(&record), Some((hash, len)), "a chunk reads back");
        if let Err(e) = segment.device.write(offset, &record) {
            // Nothing refers to the chunk yet, so ENOSPC is a clean NoSpace; other errors poison.
            return Err(self.fail(&e));
        }
        segment.synced = false;
        segment.end = offset + span(len);
        segment.chunks += 1;
        self.live_bytes += data.len() as u64;
        let chunk = Chunk { segment: number, offset, len: len as u32, refs: 1, detached: 0 };
        self.chunks.insert(hash, chunk);
        Ok(())
    }

    /// A full disk or a limit (open files, maps) is a clean refusal; anything else poisons.
    fn fail(&mut self, e: &io::Error) -> StoreError {
        refusal_or_stop(&mut self.failure, e)
    }

    /// The segment to append `bytes` to, creating one if the last is full.
    fn room_for(&mut self, bytes: u64) -> Result<u64, StoreError> {
        if let Some(number) = self.active {
            if self.segments[&number].end + bytes <= self.segment_bytes {
                return Ok(number);
            }
        }
        let number = self.next_number;
        let size = self.segment_bytes.max(bytes + BLOCK);
        let mut device =
            self.volume.create(&segment_name(number), size).map_err(|e| self.fail(&e))?;
        device.write(0, &segment_header(number)).map_err(|e| self.fail(&e))?;
        self.segments.insert(number, BlobSegment { device, end: BLOCK, chunks: 0, synced: false });
        self.new_files = true;
        self.active = Some(number);
        self.next_number = number + 1;
        Ok(number)
    }

    /// Undoes references taken for a value that was not stored after all (nothing durable
    /// names them): a chunk nobody refers to is freed at once. A failure poisons the store.
    pub(crate) fn drop_refs(&mut self, hashes: &[Hash]) -> Result<(), StoreError> {
        for hash in hashes {
            let chunk = self.chunks.get_mut(hash).expect("a dropped chunk is referenced");
            assert!(chunk.refs > 0, "refcount underflow");
            chunk.refs -= 1;
            if chunk.refs == 0 && chunk.detached == 0 {
                self.free(hash)?;
            }
        }
        Ok(())
    }

    /// A live record stopped referring to these chunks (its key was overwritten or deleted):
    /// a chunk no live record refers to is unreadable from now on ([`BlobStore::chunk`]
    /// answers `None`), and its blocks are freed by [`BlobStore::release`] once the record
    /// that dropped the reference is durable.
    pub(crate) fn detach(&mut self, hashes: impl Iterator<Item = Hash>) {
        for hash in hashes {
            let chunk = self.chunks.get_mut(&hash).expect("a detached chunk is referenced");
            assert!(chunk.refs > 0, "refcount underflow");
            chunk.refs -= 1;
            chunk.detached += 1;
        }
    }

    /// Completes [`BlobStore::detach`]: the record that dropped these references is durable,
    /// so a chunk that no record refers to is freed (its blocks punched out, its segment
    /// deleted when empty). `Store::flush` does this; a caller of `Store::take_released` must.
    /// A failure poisons the blob store.
    pub fn release(&mut self, hashes: &[Hash]) -> Result<(), StoreError> {
        for hash in hashes {
            let chunk = self.chunks.get_mut(hash).expect("a released chunk was detached");
            assert!(chunk.detached > 0, "released more than detached");
            chunk.detached -= 1;
            if chunk.refs == 0 && chunk.detached == 0 {
                self.free(hash)?;
            }
        }
        Ok(())
    }

    fn free(&mut self, hash: &Hash) -> Result<(), StoreError> {
        let chunk = self.chunks.remove(hash).expect("freeing a known chunk");
        self.live_bytes -= u64::from(chunk.len) - CHUNK_HEADER_BYTES as u64;
        let segment = self.segments.get_mut(&chunk.segment).expect("chunk's segment");
        segment.chunks -= 1;
        if segment.chunks == 0 && Some(chunk.segment) != self.active {
            self.segments.remove(&chunk.segment);
            let name = segment_name(chunk.segment);
            return self.volume.remove(&name).map_err(|e| self.fail(&e));
        }
        let bytes = span(chunk.len as usize);
        segment.device.punch(chunk.offset, bytes).map_err(|e| self.fail(&e))
    }

    /// The value behind `reference`, assembled in the store's buffer.
    pub(crate) fn read(&mut self, reference: &[u8]) -> Result<&[u8], Hash> {
        self.scratch.clear();
        for hash in hashes(reference) {
            let chunk = self.chunks.get(&hash).ok_or(hash)?;
            let segment = &self.segments[&chunk.segment];
            let bytes = segment.device.read(chunk.offset, chunk.len as usize).map_err(|_| hash)?;
            // Checked again on the way out: a chunk that changed on disk is never served.
            match check_chunk(bytes) {
                Some((h, len)) if h == hash && len == chunk.len as usize => {
                    self.scratch.extend_from_slice(&bytes[CHUNK_HEADER_BYTES..]);
                }
                _ => return Err(hash),
            }
        }
        assert_eq!(self.scratch.len() as u64, value_len(reference), "reference length");
        Ok(&self.scratch)
    }

    /// The bytes of the chunk named `hash`, checked on the way out (content-addressed access
    /// by hash, for clients that fetch a big value's chunks themselves). A chunk no live
    /// record refers to is not served, even while its blocks wait to be freed.
    pub fn chunk(&mut self, hash: &Hash) -> Option<&[u8]> {
        let chunk = self.chunks.get(hash).filter(|c| c.refs > 0)?;
        let segment = self.segments.get(&chunk.segment)?;
        let bytes = segment.device.read(chunk.offset, chunk.len as usize).ok()?;
        match check_chunk(bytes) {
            Some((h, len)) if h == *hash && len == chunk.len as usize => {
                Some(&bytes[CHUNK_HEADER_BYTES..])
            }
            _ => None,
        }
    }

    /// The chunk size values are cut into.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    /// Makes every chunk written so far durable. Called before an endpoint log sync, so a
    /// durable reference never names a chunk that is not.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        if self.new_files {
            self.volume.sync().map_err(|e| self.poison(&e))?;
            self.new_files = false;
        }
        for segment in self.segments.values_mut().filter(|s| !s.synced) {
            if let Err(e) = segment.device.sync() {
                let failure = failure_of(&e);
                self.failure = Some(failure);
                return Err(failure);
            }
            segment.synced = true;
        }
        Ok(())
    }

    fn poison(&mut self, e: &io::Error) -> StoreError {
        let failure = failure_of(e);
        self.failure = Some(failure);
        failure
    }

    /// Bytes of chunk data stored (each distinct chunk once).
    pub fn blob_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Distinct chunks stored.
    pub fn blob_chunks(&self) -> u64 {
        self.chunks.len() as u64
    }

    /// Bytes of blob segment files (their apparent size).
    pub fn file_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.device.len()).sum()
    }
}

fn span(len: usize) -> u64 {
    (len as u64).next_multiple_of(BLOCK)
}

/// The hash and length of a valid chunk record at the start of `bytes`.
fn check_chunk(bytes: &[u8]) -> Option<(Hash, usize)> {
    let header = bytes.get(..CHUNK_HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
    let body = bytes.get(..len).filter(|_| len >= CHUNK_HEADER_BYTES)?;
    let checksum = u64::from_le_bytes(header[..8].try_into().ok()?);
    if xxh3_64(&body[8..]) != checksum || header[12..16] != [0; 4] {
        return None;
    }
    Some((header[16..48].try_into().ok()?, len))
}

/// The length of the value a reference names.
pub(crate) fn value_len(reference: &[u8]) -> u64 {
    u64::from_le_bytes(reference[..8].try_into().expect("reference length"))
}

/// The chunk hashes of a reference.
pub(crate) fn hashes(reference: &[u8]) -> impl Iterator<Item = Hash> + '_ {
    reference[8..].chunks_exact(HASH_BYTES).map(|h| h.try_into().expect("32 bytes"))
}

/// Whether a payload is shaped like a reference.
pub(crate) fn is_reference(payload: &[u8]) -> bool {
    payload.len() >= 8 && (payload.len() - 8).is_multiple_of(HASH_BYTES)
}
