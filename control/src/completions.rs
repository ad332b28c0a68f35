//! Completion records: how a resent write is answered without being applied twice (RIFL).
//!
//! Layout: memory follows the records held, and no step costs more than a few records' work.
//!
//! * `chunks`: the records in insertion (= time) order, oldest first, 48 bytes each, in chunks
//!   of [`CHUNK`] records. A chunk emptied at the front is kept as a spare for the next one at
//!   the back, so a steady write rate allocates nothing; a burst allocates chunks and they go
//!   once its records expire.
//! * `index`: an open-addressing table (linear probing, backward-shift deletion), 8 bytes a
//!   slot: 32 bits of the key's hash (so probes and deletions rarely read a record) and the
//!   record's position (its insertion number, 31 bits, with the top bit set so that no slot in
//!   use reads as empty). It is kept between 1/8 and 1/2 full: past either bound a table twice
//!   or half the size replaces it, and the records move over a few per insert or expiry
//!   (`resize_step`), both tables answering meanwhile, so no write waits for a rehash. Keys are
//!   hashed with std's randomly keyed SipHash, so a client cannot choose tracking ids that
//!   collide.
//!
//! Memory: 48 bytes of record + 16 to 64 bytes of index per record held, and 1,024 slots
//! (8 KiB) and a spare chunk (192 KiB) when idle. At most `records_max` records (2^22 per core
//! by default: 256 MiB when all are held). A table or a ring of a MiB or more that is no
//! longer needed is freed on a thread of its own ([`release`]): returning 64 MiB to the kernel
//! takes ≈ 1.5 ms, which the loop does not wait for. (8 of the 48 bytes hold an INCR's count,
//! so a resent INCR is told the count its first answer said, whatever was written since.)
//!
//! A record keeps the request's fingerprint (see [`fingerprint`]): a resend is answered from
//! the record only if it is the same request; a tracking id reused for another request gets
//! ID_REUSED, never the other request's OK.
//!
//! Time is kept per record as a `u32` count of ticks, a power of two of nanoseconds chosen so
//! the TTL is 1,024 to 2,047 ticks (4 ms ticks for the default 5 s; 1 ns for a TTL below
//! 1 µs), compared with wrapping arithmetic. A record is forgotten only once it is certainly
//! older than the TTL (it may live up to two ticks, ≈ 0.2 %, longer). The wrap (after 2^21
//! TTLs) is harmless: every record held is at most TTL + 1 tick older than the newest, and
//! when the newest is older than the TTL the whole table is dropped at once.

use proto::{Opcode, Status};
use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// A request's identity: (client id, tracking id).
pub(crate) type RequestId = (u64, u64);

/// The status a note of a write that changed nothing records (`storage::Store::note`), as
/// its wire number; one this version does not know (a note of a later one) reads as
/// MALFORMED.
pub(crate) fn noted(status: u16) -> Status {
    Status::from_wire(status).unwrap_or(Status::Malformed)
}

/// What a write ended with, and which request it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) status: Status,
    pub(crate) version: u64,
    pub(crate) fingerprint: u64,
}

/// A digest of a write request: its shape (opcode, key, value length, CAS's expected version,
/// the TTL when it has one) in the high 32 bits, its value in the low 32. Fragments of a
/// write each carry the shape, so a resent fragment is compared by [`same_shape`]; a whole
/// request by the full value.
pub(crate) fn fingerprint(
    opcode: Opcode,
    key: &[u8],
    expected: u64,
    value: &[u8],
    ttl_secs: Option<u32>,
) -> u64 {
    let shape = shape(opcode, key, expected, value.len() as u32, ttl_secs);
    u64::from(shape) << 32 | u64::from(xxh3_64(value) as u32)
}

/// The high half of [`fingerprint`], from what every fragment of the write carries. A
/// request without a TTL hashes as it did before TTLs existed (stamps in old logs still
/// match their resends).
pub(crate) fn shape(
    opcode: Opcode,
    key: &[u8],
    expected: u64,
    total_len: u32,
    ttl_secs: Option<u32>,
) -> u32 {
    let expected = if opcode == Opcode::Cas { expected } else { 0 };
    let mut hasher = Xxh3::new();
    hasher.update(&[opcode as u8]);
    hasher.update(&expected.to_le_bytes());
    hasher.update(&total_len.to_le_bytes());
    hasher.update(key);
    if let Some(ttl) = ttl_secs {
        hasher.update(b"ttl");
        hasher.update(&ttl.to_le_bytes());
    }
    hasher.digest() as u32
}

/// Whether `fingerprint` has the shape `shape`.
pub(crate) fn same_shape(fingerprint: u64, shape: u32) -> bool {
    (fingerprint >> 32) as u32 == shape
}

/// The most records a table may hold. A record's position in the index has 31 bits, so the
/// records held and the stale words of a resize (at most a resize's length older, well under
/// 2^29 positions) must span less than 2^31.
pub(crate) const RECORDS_MAX: usize = 1 << 29;

/// Records per chunk of the ring: 192 KiB.
const CHUNK: usize = 4096;
const CHUNK_BYTES: usize = CHUNK * std::mem::size_of::<Entry>();

/// The smallest index, in slots (8 KiB).
const SLOTS_MIN: usize = 1 << 10;

/// At each insert or expiry a resize reads up to this many slots of the old index, and
/// copies the words of live records it finds there to the new one, up to [`MOVES_PER_STEP`]:
/// reading is cheap (in order), a copy is a cache miss in the new table. Either way the move
/// ends before the new table is 3/10 full.
const SCAN_PER_STEP: usize = 256;
const MOVES_PER_STEP: usize = 8;

/// An index slot that holds no record (a slot in use has bit 31 set).
const EMPTY: u64 = 0;

/// Garbage of at least this many bytes is freed off the caller's thread ([`release`]).
const RELEASE_OFF_LOOP_BYTES: usize = 1 << 20;

/// One held record, 48 bytes.
#[derive(Clone, Copy, Debug)]
struct Entry {
    client_id: u64,
    tracking_id: u64,
    version: u64,
    fingerprint: u64,
    /// An INCR's count, what its reply carries (`counted` says whether there is one).
    count: i64,
    /// When it was recorded, in ticks (truncated to 32 bits).
    at: u32,
    status: Status,
    counted: bool,
}

impl Entry {
    fn id(&self) -> RequestId {
        (self.client_id, self.tracking_id)
    }
}

/// The index slot of the record inserted `position`-th, whose id hashes to `hash`.
fn slot_word(hash: u32, position: u64) -> u64 {
    u64::from(hash) << 32 | (position & 0x7fff_ffff) | 0x8000_0000
}

/// An open-addressing table of slot words (see the module comment), linear probing.
#[derive(Debug)]
struct Index {
    slots: Box<[u64]>,
    mask: usize,
}

impl Index {
    fn new(slots: usize) -> Index {
        debug_assert!(slots.is_power_of_two());
        Index { slots: vec![EMPTY; slots].into_boxed_slice(), mask: slots - 1 }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn home(&self, hash: u32) -> usize {
        hash as usize & self.mask
    }

    /// The slot holding a word with `hash` for which `is` says yes.
    fn find(&self, hash: u32, mut is: impl FnMut(u64) -> bool) -> Option<usize> {
        let mut slot = self.home(hash);
        loop {
            let held = self.slots[slot];
            if held == EMPTY {
                return None;
            }
            if (held >> 32) as u32 == hash && is(held) {
                return Some(slot);
            }
            slot = (slot + 1) & self.mask;
        }
    }

    fn insert(&mut self, word: u64) {
        let mut slot = self.home((word >> 32) as u32);
        while self.slots[slot] != EMPTY {
            slot = (slot + 1) & self.mask;
        }
        self.slots[slot] = word;
    }

    /// Empties slot `hole`, moving back the words after it that probed past it.
    fn remove(&mut self, mut hole: usize) {
        let mut slot = hole;
        loop {
            slot = (slot + 1) & self.mask;
            let held = self.slots[slot];
            if held == EMPTY {
                break;
            }
            let home = self.home((held >> 32) as u32);
            // The word may fill the hole if the hole lies between its home and its slot.
            if (slot.wrapping_sub(home) & self.mask) >= (slot.wrapping_sub(hole) & self.mask) {
                self.slots[hole] = held;
                hole = slot;
            }
        }
        self.slots[hole] = EMPTY;
    }
}

/// Frees `garbage` of `bytes` bytes: at once when small, else on a short-lived thread, so a
/// loop never waits for the kernel to take back megabytes of pages (about 25 µs a MiB here).
fn release<T: Send + 'static>(garbage: T, bytes: usize) {
    if bytes < RELEASE_OFF_LOOP_BYTES {
        return drop(garbage);
    }
    // A failed spawn drops the closure, and the garbage with it, here: a stall, nothing lost.
    let _ = std::thread::Builder::new().name("cradle-free".into()).spawn(move || drop(garbage));
}

/// Records of recent writes. Bounded: a record is forgotten only after `ttl_ns`, and when the
/// table holds `records_max` younger ones new writes wait (BUSY).
#[derive(Debug)]
pub(crate) struct Completions {
    /// Records oldest first, [`CHUNK`] per chunk; the oldest is at `skip` in the first chunk.
    chunks: VecDeque<Vec<Entry>>,
    /// An emptied chunk kept for the next one needed at the back.
    spare: Option<Vec<Entry>>,
    skip: usize,
    len: usize,
    /// Chunks allocated so far (a steady rate stops allocating).
    chunks_made: u64,
    /// Records ever inserted: the next one's position. The oldest held is at `inserted - len`.
    inserted: u64,
    index: Index,
    /// While the index is resized, the one it replaces, read from slot `scanned` on: each
    /// word there of a record still held is copied to `index` (those before `scanned` were).
    /// Nothing is removed from it, so its words of records since expired are stale, and a
    /// lookup in it checks that the record is still held (`held`).
    old: Option<Index>,
    scanned: usize,
    /// The largest index: at most half full with `records_max` records.
    slots_max: usize,
    hasher: RandomState,
    records_max: usize,
    /// log2 of the nanoseconds in one tick.
    shift: u32,
    /// The TTL in whole ticks, rounded up (at most 2,048).
    ttl_ticks: u64,
    /// The latest time seen, in ticks (never goes back).
    clock: u64,
    /// When the newest record held was recorded, in ticks.
    newest: u64,
}

impl Completions {
    pub(crate) fn new(records_max: usize, ttl_ns: u64) -> Completions {
        assert!(records_max > 0 && records_max <= RECORDS_MAX, "records_max {records_max}");
        let shift = (63 - ttl_ns.max(1).leading_zeros()).saturating_sub(10);
        let slots_max = (records_max * 2).next_power_of_two();
        Completions {
            chunks: VecDeque::new(),
            spare: None,
            skip: 0,
            len: 0,
            chunks_made: 0,
            inserted: 0,
            index: Index::new(slots_max.min(SLOTS_MIN)),
            old: None,
            scanned: 0,
            slots_max,
            hasher: RandomState::new(),
            records_max,
            shift,
            ttl_ticks: ttl_ns.div_ceil(1 << shift),
            clock: 0,
            newest: 0,
        }
    }

    /// The record of `id`, unless it is absent or expired as of the latest time the table saw.
    pub(crate) fn get(&self, id: RequestId) -> Option<Record> {
        let entry = self.entry(self.find(self.hash(id), id)?);
        if self.expired(entry, self.clock) {
            return None;
        }
        Some(Record {
            status: entry.status,
            version: entry.version,
            fingerprint: entry.fingerprint,
        })
    }

    /// Forgets records older than the TTL as of `now_ns` (a loop calls it now and then, so an
    /// idle table gives its memory back without waiting for the next write).
    pub(crate) fn expire(&mut self, now_ns: u64) {
        self.purge(now_ns);
    }

    /// Forgets records older than the TTL; returns whether one more fits.
    pub(crate) fn has_room(&mut self, now_ns: u64) -> bool {
        self.purge(now_ns);
        self.len < self.records_max
    }

    /// The count an INCR's record holds (its reply's value), if it holds one: records of an
    /// INCR a backup replicated, or rebuilt from a value that is not a count, hold none.
    pub(crate) fn count(&self, id: RequestId) -> Option<i64> {
        let entry = self.entry(self.find(self.hash(id), id)?);
        (entry.counted && !self.expired(entry, self.clock)).then_some(entry.count)
    }

    /// Records a completed write. The caller checked `has_room` and `get` first.
    pub(crate) fn insert(&mut self, now_ns: u64, id: RequestId, record: Record) {
        self.insert_counted(now_ns, id, record, None);
    }

    /// Records a completed write with the count its reply carries (an INCR).
    pub(crate) fn insert_counted(
        &mut self,
        now_ns: u64,
        id: RequestId,
        record: Record,
        count: Option<i64>,
    ) {
        self.purge(now_ns);
        assert!(self.len < self.records_max, "completion table over its bound");
        let hash = self.hash(id);
        assert!(self.find(hash, id).is_none(), "a write completed twice: {id:?}");
        let entry = Entry {
            client_id: id.0,
            tracking_id: id.1,
            version: record.version,
            fingerprint: record.fingerprint,
            count: count.unwrap_or(0),
            at: self.clock as u32,
            status: record.status,
            counted: count.is_some(),
        };
        if self.chunks.back().is_none_or(|c| c.len() == CHUNK) {
            let chunk = self.spare.take().unwrap_or_else(|| {
                self.chunks_made += 1;
                Vec::with_capacity(CHUNK)
            });
            self.chunks.push_back(chunk);
        }
        self.chunks.back_mut().expect("a chunk with room").push(entry);
        self.index.insert(slot_word(hash, self.inserted));
        self.inserted += 1;
        self.len += 1;
        self.newest = self.clock;
        self.resize_step();
    }

    /// Replaces the outcome recorded for `id` (e.g. the write was not durable after all);
    /// returns whether `id` had a record. The fingerprint stays.
    pub(crate) fn replace(&mut self, id: RequestId, status: Status, version: u64) -> bool {
        match self.find(self.hash(id), id) {
            Some(word) => {
                let entry = self.entry_mut(word);
                entry.status = status;
                entry.version = version;
                true
            }
            None => false,
        }
    }

    /// Reads `id`'s home slot in the index and returns it, so that a later [`get`] or
    /// [`insert`] of `id` finds it in the cache: a burst's read-ahead calls it for each write
    /// (a busy table is tens of MiB, so a slot is a cache and TLB miss). The caller passes the
    /// value to `black_box`.
    ///
    /// [`get`]: Completions::get
    /// [`insert`]: Completions::insert
    pub(crate) fn warm(&self, id: RequestId) -> u64 {
        let hash = self.hash(id);
        let warm = self.index.slots[self.index.home(hash)];
        // (A lookup during a resize reads the old table too: the id is in neither.)
        self.old.as_ref().map_or(warm, |old| warm ^ old.slots[old.home(hash)])
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn hash(&self, id: RequestId) -> u32 {
        self.hasher.hash_one(id) as u32
    }

    /// The position of the oldest record held.
    fn oldest(&self) -> u64 {
        self.inserted - self.len as u64
    }

    /// The slot word of `id`'s record, which hashes to `hash`, in whichever index holds it.
    fn find(&self, hash: u32, id: RequestId) -> Option<u64> {
        let is = |word: u64| self.held(word) && self.entry(word).id() == id;
        if let Some(slot) = self.index.find(hash, is) {
            return Some(self.index.slots[slot]);
        }
        let old = self.old.as_ref()?;
        old.find(hash, is).map(|slot| old.slots[slot])
    }

    /// How many records were inserted before the one a slot word names, since the oldest
    /// held (≥ `len` if it is no longer held).
    fn age(&self, word: u64) -> usize {
        ((word as u32 & 0x7fff_ffff).wrapping_sub(self.oldest() as u32) & 0x7fff_ffff) as usize
    }

    /// Whether the record a slot word names is still held (every word of `index` is; one of
    /// `old` may be stale).
    fn held(&self, word: u64) -> bool {
        self.age(word) < self.len
    }

    /// Where the record a slot word names is in the ring: chunk and place in it.
    fn place(&self, word: u64) -> (usize, usize) {
        let at = self.skip + self.age(word);
        (at / CHUNK, at % CHUNK)
    }

    fn entry(&self, word: u64) -> &Entry {
        let (chunk, at) = self.place(word);
        &self.chunks[chunk][at]
    }

    fn entry_mut(&mut self, word: u64) -> &mut Entry {
        let (chunk, at) = self.place(word);
        &mut self.chunks[chunk][at]
    }

    /// Whether `entry` is certainly older than the TTL at `clock` (ticks). Only meaningful
    /// for records held, whose age is below 2^32 ticks (see the module comment).
    fn expired(&self, entry: &Entry, clock: u64) -> bool {
        if clock.saturating_sub(self.newest) > self.ttl_ticks {
            return true;
        }
        // The truncated tick difference can understate the age by up to one tick (the
        // record's tick started before it, `clock`'s ends after it): demand one more.
        u64::from((clock as u32).wrapping_sub(entry.at)) > self.ttl_ticks
    }

    /// Advances the clock to `now_ns` and forgets every record older than the TTL.
    fn purge(&mut self, now_ns: u64) {
        self.clock = self.clock.max(now_ns >> self.shift);
        if self.len == 0 {
            return;
        }
        if self.clock - self.newest > self.ttl_ticks {
            return self.forget_all();
        }
        let popped = self.len;
        while self.len > 0 && self.expired(&self.chunks[0][self.skip], self.clock) {
            self.pop_oldest();
        }
        if self.len < popped {
            self.resize_step();
        }
    }

    /// Every record expired (the table was idle for the TTL): a new empty index replaces
    /// the index (and any resize), and the ring's chunks go, but for a spare.
    fn forget_all(&mut self) {
        let mut ring = std::mem::take(&mut self.chunks);
        if let Some(chunk) = ring.pop_front() {
            self.retire(chunk);
        }
        let index = std::mem::replace(&mut self.index, Index::new(self.slots_max.min(SLOTS_MIN)));
        let old = self.old.take();
        let bytes =
            ring.len() * CHUNK_BYTES + 8 * (index.len() + old.as_ref().map_or(0, Index::len));
        release((ring, index, old), bytes);
        self.skip = 0;
        self.len = 0;
    }

    fn pop_oldest(&mut self) {
        let position = self.oldest();
        let word = slot_word(self.hash(self.chunks[0][self.skip].id()), position);
        // (A record not yet copied from the old index is only there, and is left stale.)
        match self.index.find((word >> 32) as u32, |held| held == word) {
            Some(slot) => self.index.remove(slot),
            None => debug_assert!(self.old.is_some(), "a held record is indexed"),
        }
        self.len -= 1;
        self.skip += 1;
        if self.skip == CHUNK || self.len == 0 {
            // (An empty ring starts again at the front of a chunk.)
            let chunk = self.chunks.pop_front().expect("the oldest record's chunk");
            self.retire(chunk);
            self.skip = 0;
        }
    }

    /// A chunk out of the ring: kept as the spare if there is none, else freed.
    fn retire(&mut self, mut chunk: Vec<Entry>) {
        chunk.clear();
        match self.spare {
            None => self.spare = Some(chunk),
            Some(_) => release(chunk, CHUNK_BYTES),
        }
    }

    /// Moves a few records to the new index if a resize is under way, and starts one if the
    /// index is over half or under an eighth full.
    fn resize_step(&mut self) {
        let Some(old) = self.old.take() else {
            let slots = self.index.len();
            let size = if self.len * 2 > slots && slots < self.slots_max {
                slots * 2
            } else if self.len * 8 < slots && slots > SLOTS_MIN {
                slots / 2
            } else {
                return;
            };
            self.old = Some(std::mem::replace(&mut self.index, Index::new(size)));
            self.scanned = 0;
            return;
        };
        // Read in slot order, the old table costs no hashing and little cache: the misses
        // are the new table's.
        let end = (self.scanned + SCAN_PER_STEP).min(old.len());
        let mut moves = 0;
        while self.scanned < end && moves < MOVES_PER_STEP {
            let word = old.slots[self.scanned];
            if word != EMPTY && self.held(word) {
                self.index.insert(word);
                moves += 1;
            }
            self.scanned += 1;
        }
        if self.scanned < old.len() {
            self.old = Some(old);
        } else {
            let bytes = 8 * old.len();
            release(old, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet, VecDeque};

    const OK: Record = Record { status: Status::Ok, version: 1, fingerprint: 9 };
    const TTL: u64 = 5_000_000_000;

    fn tick(c: &Completions) -> u64 {
        1 << c.shift
    }

    #[test]
    fn records_are_compact_and_ticks_fine() {
        assert_eq!(std::mem::size_of::<Entry>(), 48);
        let c = Completions::new(1, TTL);
        assert_eq!((tick(&c), c.ttl_ticks), (1 << 22, 1193));
        assert_eq!(Completions::new(1, 1).ttl_ticks, 1);
        assert_eq!(Completions::new(1, 0).ttl_ticks, 0);
        assert_eq!(Completions::new(1, u64::MAX).ttl_ticks, 2048);
    }

    #[test]
    fn records_live_for_the_ttl_and_bound_the_table() {
        let mut c = Completions::new(2, TTL);
        let t = tick(&c);
        assert!(c.has_room(0));
        c.insert(0, (1, 1), OK);
        c.insert(10 * t, (1, 2), OK);
        assert!(!c.has_room(TTL - 1), "full of young records");
        assert!(!c.has_room(TTL), "a record lives at least the ttl");
        assert_eq!(c.get((1, 1)), Some(OK));
        assert!(c.has_room(TTL + 2 * t), "the oldest expired");
        assert_eq!(c.get((1, 1)), None);
        assert_eq!(c.get((1, 2)), Some(OK));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_record_is_never_forgotten_before_the_ttl() {
        // Whatever the phase of the insert and of the check within a tick.
        for ttl in [1, 1023, 1024, 1025, 3 << 20, TTL, 30_000_000_000] {
            let t = tick(&Completions::new(1, ttl));
            for at in [0, 1, t - 1, t, 3 * t + t / 2, 1 << 40] {
                for early in [1, 2, t / 2, t - 1, t, t + 1] {
                    let mut c = Completions::new(4, ttl);
                    c.has_room(at);
                    c.insert(at, (1, 1), OK);
                    let now = at + ttl.saturating_sub(early);
                    c.has_room(now);
                    assert_eq!(c.get((1, 1)), Some(OK), "ttl {ttl} at {at} now {now}");
                    c.has_room(at + ttl + 2 * t);
                    assert_eq!(c.get((1, 1)), None, "ttl {ttl} at {at}");
                }
            }
        }
    }

    #[test]
    fn warm_reads_the_home_slot_of_the_id() {
        let mut c = Completions::new(1 << 10, TTL);
        let ids: Vec<RequestId> = (0..64).map(|t| (7, t)).collect();
        assert!(ids.iter().all(|&id| c.warm(id) == EMPTY), "an empty table");
        for &id in &ids {
            c.insert(0, id, OK);
            // The insert probed from the home slot: it holds this record or an earlier one.
            assert_ne!(c.warm(id), EMPTY, "{id:?}");
        }
        let homes = ids.iter().filter(|&&id| Some(c.warm(id)) == c.find(c.hash(id), id));
        assert!(homes.count() > 32, "most of 64 ids in 1,024 slots are at home");
    }

    #[test]
    fn get_ignores_expired_records_and_replace_updates() {
        let mut c = Completions::new(8, TTL);
        c.insert(0, (1, 1), OK);
        let failed = Record { status: Status::Unavailable, version: 0, fingerprint: 9 };
        assert!(c.replace((1, 1), Status::Unavailable, 0));
        assert!(!c.replace((1, 2), Status::Unavailable, 0));
        assert_eq!(c.get((1, 1)), Some(failed));
        c.insert(TTL / 2, (1, 2), OK);
        assert!(c.has_room(TTL + TTL / 4));
        assert_eq!((c.get((1, 1)), c.get((1, 2))), (None, Some(OK)));
        // An idle table forgets everything on the next look at the clock.
        assert!(c.has_room(10 * TTL));
        assert_eq!((c.get((1, 1)), c.get((1, 2)), c.len()), (None, None, 0));
        c.insert(10 * TTL, (1, 1), OK);
        assert_eq!(c.get((1, 1)), Some(OK));
    }

    #[test]
    fn time_going_back_does_not_expire_anything() {
        let mut c = Completions::new(4, TTL);
        c.insert(50 * TTL, (1, 1), OK);
        assert!(c.has_room(0));
        assert_eq!(c.get((1, 1)), Some(OK));
    }

    #[test]
    fn the_tick_wrap_is_harmless() {
        for ttl in [1, 1000, TTL] {
            let mut c = Completions::new(16, ttl);
            let wrap = (1u64 << 32) << c.shift;
            let step = ttl.div_ceil(4);
            let mut now = wrap - 3 * ttl;
            let mut id = 0;
            while now < wrap + 3 * ttl {
                assert!(c.has_room(now));
                c.insert(now, (7, id), OK);
                assert_eq!(c.get((7, id)), Some(OK));
                id += 1;
                now += step;
            }
            assert!(c.len() <= 8, "{}", c.len());
            // Idle for exactly a wrap: everything is forgotten, nothing looks young.
            assert!(c.has_room(now + wrap));
            assert_eq!(c.len(), 0);
        }
    }

    /// Every record held is indexed once, in the index its position says, and nothing else
    /// is; the index is within its bounds unless a resize is under way.
    fn check(c: &Completions) {
        let words = |slots: &[u64]| -> HashSet<u64> {
            slots.iter().copied().filter(|&w| w != EMPTY && c.held(w)).collect()
        };
        let new = words(&c.index.slots);
        let indexed = c.index.slots.iter().filter(|&&w| w != EMPTY).count();
        assert_eq!(indexed, new.len(), "a stale or doubled word in the index");
        let pending = c.old.as_ref().map_or(HashSet::new(), |old| words(&old.slots[c.scanned..]));
        assert_eq!(new.len() + pending.len(), c.len, "index words");
        for age in 0..c.len {
            let position = c.oldest() + age as u64;
            let at = c.skip + age;
            let id = c.chunks[at / CHUNK][at % CHUNK].id();
            let word = slot_word(c.hash(id), position);
            assert!(new.contains(&word) != pending.contains(&word), "position {position}");
            assert_eq!(c.find(c.hash(id), id), Some(word));
        }
        assert!(c.chunks.len() <= (c.skip + c.len).div_ceil(CHUNK).max(1));
        if c.old.is_none() {
            let slots = c.index.len();
            assert!(c.len * 2 <= slots || slots == c.slots_max, "{} in {slots}", c.len);
            assert!(
                c.len * 8 >= slots || slots == SLOTS_MIN.min(c.slots_max),
                "{} in {slots}",
                c.len
            );
        }
    }

    #[test]
    fn a_tiny_table_keeps_its_bound() {
        let mut c = Completions::new(3, TTL);
        for i in 0..1000u64 {
            let now = i * TTL / 2;
            assert!(c.has_room(now), "at {i}");
            c.insert(now, (2, i), OK);
            assert!(c.len() <= 3);
            check(&c);
        }
        assert_eq!(c.chunks_made, 1);
        assert_eq!(c.get((2, 999)), Some(OK));
        assert_eq!(c.get((2, 995)), None);
    }

    #[test]
    fn the_default_table_sustains_its_rate_and_a_steady_rate_allocates_nothing() {
        // 2^20 records over 5 s: 200,000 writes per second never see BUSY.
        let mut c = Completions::new(1 << 20, TTL);
        let mut made = 0;
        for i in 0..3_000_000u64 {
            let now = i * 5_000;
            assert!(c.has_room(now), "write {i}");
            c.insert(now, (i % 7, i), OK);
            if i == 1_500_000 {
                made = c.chunks_made;
            }
        }
        assert!(c.len() <= 1_000_000 + 1_000, "{}", c.len());
        assert_eq!(c.chunks_made, made, "chunks were made after the first TTL");
        assert!(c.index.len() <= 4 * c.len(), "{} slots", c.index.len());
        check(&c);
    }

    #[test]
    fn the_index_grows_and_shrinks_with_the_records_held_and_an_idle_table_gives_all_back() {
        let mut c = Completions::new(1 << 22, TTL);
        assert_eq!(c.index.len(), SLOTS_MIN);
        // A burst of 300,000 writes within a millisecond.
        for i in 0..300_000u64 {
            c.insert(i, (1, i), OK);
        }
        check(&c);
        assert!((600_000..=1 << 21).contains(&c.index.len()), "{} slots", c.index.len());
        assert!(c.old.is_none(), "the last resize is done");
        // Then one write a millisecond for three TTLs: about 5,000 records held, and the index
        // shrinks a few hundred slots a write.
        let mut now = 1_000_000;
        for i in 0..15_000u64 {
            now += 1_000_000;
            assert!(c.has_room(now));
            c.insert(now, (2, i), OK);
            if i % 500 == 0 {
                check(&c);
            }
        }
        assert_eq!((c.get((1, 299_999)), c.get((2, 14_999))), (None, Some(OK)));
        assert!(c.len() < 5_100, "{}", c.len());
        assert!(c.old.is_none(), "the shrinking is done");
        assert!(c.index.len() <= 8 * 5_100, "{} slots for {}", c.index.len(), c.len());
        assert!(c.chunks.len() <= 3, "{} chunks", c.chunks.len());
        // Idle for a TTL: the next look at the clock forgets all, the sweep's as a write's.
        c.expire(now + 2 * TTL);
        assert_eq!((c.len(), c.index.len(), c.chunks.len()), (0, SLOTS_MIN, 0));
        assert!(c.spare.is_some(), "a chunk kept for the next write");
        check(&c);
    }

    #[test]
    fn a_record_that_expires_before_a_resize_copies_it_is_gone() {
        let ttl = 1 << 20;
        let mut c = Completions::new(1 << 16, ttl);
        let t = tick(&c);
        for i in 0..300 {
            c.insert(0, (1, i), OK);
        }
        // The 513th record starts a resize (to 2,048 slots) with 512 records left to copy.
        for i in 300..513 {
            c.insert(ttl / 2, (1, i), OK);
        }
        assert!(c.old.is_some() && c.scanned == 0);
        // The first 300 expire, most of them before they were copied: their words in the old
        // index are stale.
        assert!(c.has_room(ttl + 2 * t));
        assert_eq!(c.len(), 213);
        assert!(c.old.is_some(), "the resize is still under way");
        for i in 0..300 {
            assert_eq!(c.get((1, i)), None, "{i}");
            assert!(!c.replace((1, i), Status::Unavailable, 0));
        }
        for i in 300..513 {
            assert_eq!(c.get((1, i)), Some(OK), "{i}");
        }
        check(&c);
        for i in 513..1_000 {
            c.insert(ttl + 2 * t, (1, i), OK);
        }
        assert!(c.old.is_none());
        check(&c);
    }

    #[test]
    fn an_idle_table_forgets_a_resize_under_way() {
        let mut c = Completions::new(1 << 16, TTL);
        for i in 0..513 {
            c.insert(0, (1, i), OK);
        }
        assert!(c.old.is_some());
        c.expire(2 * TTL);
        assert!(c.old.is_none() && c.len() == 0 && c.index.len() == SLOTS_MIN);
        c.insert(2 * TTL, (1, 0), OK);
        assert_eq!(c.get((1, 0)), Some(OK));
        check(&c);
    }

    #[test]
    fn positions_past_31_bits_still_name_their_records() {
        let mut c = Completions::new(1 << 12, 1_000);
        c.inserted = (1 << 31) - 5_000;
        for i in 0..20_000u64 {
            assert!(c.has_room(i * 10));
            c.insert(i * 10, (3, i), OK);
            assert_eq!(c.get((3, i)), Some(OK));
        }
        check(&c);
    }

    #[test]
    fn fingerprints_tell_requests_apart_and_fragments_share_the_shape() {
        let put = fingerprint(Opcode::Put, b"k", 0, b"value", None);
        assert_eq!(
            put,
            fingerprint(Opcode::Put, b"k", 7, b"value", None),
            "a PUT ignores the version"
        );
        for other in [
            fingerprint(Opcode::Put, b"k", 0, b"valuf", None),
            fingerprint(Opcode::Put, b"j", 0, b"value", None),
            fingerprint(Opcode::Cas, b"k", 0, b"value", None),
            fingerprint(Opcode::Delete, b"k", 0, b"", None),
        ] {
            assert_ne!(put, other);
        }
        assert_ne!(
            fingerprint(Opcode::Cas, b"k", 1, b"v", None),
            fingerprint(Opcode::Cas, b"k", 2, b"v", None)
        );
        let big = vec![5u8; 3000];
        let whole = fingerprint(Opcode::Cas, b"k", 3, &big, None);
        assert!(same_shape(whole, shape(Opcode::Cas, b"k", 3, 3000, None)));
        assert!(!same_shape(whole, shape(Opcode::Cas, b"k", 3, 3001, None)));
        assert!(!same_shape(whole, shape(Opcode::Put, b"k", 3, 3000, None)));
    }

    /// Random inserts, lookups and clock steps against a plain model; tables large enough to
    /// resize, with quiet phases so that they shrink too.
    #[test]
    fn matches_a_model() {
        let mut rng = testkit::Rng::from_seed(0x9e37_79b9_7f4a_7c15);
        for round in 0..30 {
            let records_max = 1 + rng.below(if round % 2 == 0 { 300 } else { 40_000 }) as usize;
            let ttl_bits = rng.below(34);
            let ttl = 1 + rng.below(1 << ttl_bits);
            let mut c = Completions::new(records_max, ttl);
            let t = tick(&c);
            let mut model: HashMap<RequestId, (u64, Record)> = HashMap::new();
            let mut order: VecDeque<(u64, RequestId)> = VecDeque::new();
            let mut now = 0u64;
            for step in 0..20_000u64 {
                now += rng.below(t + 2 * ttl / records_max as u64 + 1);
                if rng.below(1000) == 0 {
                    now += 2 * ttl + rng.below(1 << 40);
                }
                let quiet = (step / 2_000) % 2 == 1;
                let room = c.has_room(now);
                // The model forgets at ttl + 2 ticks, keeps everything below ttl.
                while let Some(&(at, id)) = order.front() {
                    if now - at < ttl + 2 * t {
                        break;
                    }
                    order.pop_front();
                    model.remove(&id);
                }
                assert!(c.len() <= model.len(), "round {round} step {step}");
                for _ in 0..8.min(order.len()) {
                    let (at, id) = order[rng.below(order.len() as u64) as usize];
                    if now - at < ttl {
                        assert_eq!(c.get(id), Some(model[&id].1), "round {round} step {step}");
                    }
                }
                assert_eq!(room, c.len() < records_max);
                if room && (!quiet || rng.below(16) == 0) {
                    let id = (rng.below(3), step);
                    let record = Record {
                        status: Status::Ok,
                        version: rng.next_u64(),
                        fingerprint: rng.next_u64(),
                    };
                    assert_eq!(c.get(id), None);
                    c.insert(now, id, record);
                    model.insert(id, (now, record));
                    order.push_back((now, id));
                }
                let probe = (rng.below(3), rng.below(step + 1));
                if let Some(record) = c.get(probe) {
                    assert_eq!(Some(&record), model.get(&probe).map(|(_, r)| r));
                }
                if step % 997 == 0 {
                    check(&c);
                }
            }
        }
    }
}
