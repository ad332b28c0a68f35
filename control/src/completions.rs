//! Completion records: how a resent write is answered without being applied twice (RIFL).
//!
//! Layout, for a bounded table allocated once at start-up and allocation-free afterwards:
//!
//! * `ring`: the records in insertion (= time) order, oldest at `head`, 48 bytes each. The
//!   vector is created with capacity `records_max` and grows by `push` until it wraps, so its
//!   pages are touched only as records arrive.
//! * `index`: an open-addressing table (linear probing, backward-shift deletion), at most half
//!   full, 8 bytes a slot: 32 bits of the key's hash (so probes and deletions rarely read the
//!   ring) and the ring position + 1 (0 is empty). Zero-allocated, so the kernel maps it
//!   lazily too. Keys are hashed with std's randomly keyed SipHash, so a client cannot choose
//!   tracking ids that collide.
//!
//! Memory: 48 bytes of ring + 2 × 8 bytes of index per record, i.e. 64 bytes per record and
//! 256 MiB per core for the default 2^22 records. (8 of the 48 hold an INCR's count, so a
//! resent INCR is told the count its first answer said, whatever was written since.)
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

/// The most records a table may hold (ring positions + 1 fit 32 bits, homes a `u32` hash).
pub(crate) const RECORDS_MAX: usize = 1 << 30;

/// An index slot that holds no record.
const EMPTY: u64 = 0;

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

/// Records of recent writes. Bounded and allocated at start-up: a record is forgotten only
/// after `ttl_ns`, and when the table is full of younger ones new writes wait (BUSY).
#[derive(Debug)]
pub(crate) struct Completions {
    /// Records oldest first from `head`, `len` of them, wrapping at `records_max`.
    ring: Vec<Entry>,
    head: usize,
    len: usize,
    /// `hash << 32 | ring position + 1` of each record, by hash of its id; `EMPTY` where none.
    index: Box<[u64]>,
    mask: usize,
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
        let slots = (records_max * 2).next_power_of_two();
        Completions {
            ring: Vec::with_capacity(records_max),
            head: 0,
            len: 0,
            index: vec![EMPTY; slots].into_boxed_slice(),
            mask: slots - 1,
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
        let (_, pos) = self.find(id)?;
        let entry = &self.ring[pos];
        if self.expired(entry, self.clock) {
            return None;
        }
        Some(Record {
            status: entry.status,
            version: entry.version,
            fingerprint: entry.fingerprint,
        })
    }

    /// Forgets records older than the TTL; returns whether one more fits.
    pub(crate) fn has_room(&mut self, now_ns: u64) -> bool {
        self.purge(now_ns);
        self.len < self.records_max
    }

    /// The count an INCR's record holds (its reply's value), if it holds one: records of an
    /// INCR a backup replicated, or rebuilt from a value that is not a count, hold none.
    pub(crate) fn count(&self, id: RequestId) -> Option<i64> {
        let (_, pos) = self.find(id)?;
        let entry = &self.ring[pos];
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
        assert!(self.find_hashed(hash, id).is_none(), "a write completed twice: {id:?}");
        let mut slot = hash as usize & self.mask;
        while self.index[slot] != EMPTY {
            slot = (slot + 1) & self.mask;
        }
        let pos = (self.head + self.len) % self.records_max;
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
        if pos == self.ring.len() {
            // Within the capacity reserved at start-up: no allocation.
            debug_assert!(self.ring.len() < self.ring.capacity());
            self.ring.push(entry);
        } else {
            self.ring[pos] = entry;
        }
        self.index[slot] = u64::from(hash) << 32 | (pos as u64 + 1);
        self.len += 1;
        self.newest = self.clock;
    }

    /// Replaces the outcome recorded for `id` (e.g. the write was not durable after all);
    /// returns whether `id` had a record. The fingerprint stays.
    pub(crate) fn replace(&mut self, id: RequestId, status: Status, version: u64) -> bool {
        match self.find(id) {
            Some((_, pos)) => {
                let entry = &mut self.ring[pos];
                entry.status = status;
                entry.version = version;
                true
            }
            None => false,
        }
    }

    /// Reads `id`'s home slot in the index and returns it, so that a later [`get`] or
    /// [`insert`] of `id` finds it in the cache: a burst's read-ahead calls it for each write
    /// (the table is tens of MiB, so a slot is a cache and TLB miss). The caller passes the
    /// value to `black_box`.
    ///
    /// [`get`]: Completions::get
    /// [`insert`]: Completions::insert
    pub(crate) fn warm(&self, id: RequestId) -> u64 {
        self.index[self.hash(id) as usize & self.mask]
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn hash(&self, id: RequestId) -> u32 {
        self.hasher.hash_one(id) as u32
    }

    /// The index slot and ring position of `id`'s record.
    fn find(&self, id: RequestId) -> Option<(usize, usize)> {
        self.find_hashed(self.hash(id), id)
    }

    /// [`Completions::find`] with `id`'s hash already at hand.
    fn find_hashed(&self, hash: u32, id: RequestId) -> Option<(usize, usize)> {
        let mut slot = hash as usize & self.mask;
        loop {
            let held = self.index[slot];
            if held == EMPTY {
                return None;
            }
            let pos = (held as u32) as usize - 1;
            if (held >> 32) as u32 == hash && self.ring[pos].id() == id {
                return Some((slot, pos));
            }
            slot = (slot + 1) & self.mask;
        }
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
        while self.len > 0 && self.expired(&self.ring[self.head], self.clock) {
            self.pop_oldest();
        }
    }

    /// Every record expired (the table was idle for the TTL).
    fn forget_all(&mut self) {
        if self.len > self.index.len() / 64 {
            // Cheaper than removing them one by one.
            self.index.fill(EMPTY);
            self.head = (self.head + self.len) % self.records_max;
            self.len = 0;
        } else {
            while self.len > 0 {
                self.pop_oldest();
            }
        }
    }

    fn pop_oldest(&mut self) {
        let id = self.ring[self.head].id();
        let (slot, pos) = self.find(id).expect("a held record is indexed");
        debug_assert_eq!(pos, self.head);
        self.remove_slot(slot);
        self.head = (self.head + 1) % self.records_max;
        self.len -= 1;
    }

    /// Empties index slot `hole`, moving back the entries after it that probed past it.
    fn remove_slot(&mut self, mut hole: usize) {
        let mut slot = hole;
        loop {
            slot = (slot + 1) & self.mask;
            let held = self.index[slot];
            if held == EMPTY {
                break;
            }
            let home = (held >> 32) as usize & self.mask;
            // The entry may fill the hole if the hole lies between its home and its slot.
            if (slot.wrapping_sub(home) & self.mask) >= (slot.wrapping_sub(hole) & self.mask) {
                self.index[hole] = held;
                hole = slot;
            }
        }
        self.index[hole] = EMPTY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, VecDeque};

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
        let homes =
            ids.iter().filter(|&&id| c.warm(id) as u32 as usize - 1 == c.find(id).unwrap().1);
        assert!(homes.count() > 32, "most of 64 ids in 2,048 slots are at home");
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

    #[test]
    fn the_ring_wraps_without_growing() {
        let mut c = Completions::new(3, TTL);
        let capacity = c.ring.capacity();
        for i in 0..1000u64 {
            let now = i * TTL / 2;
            assert!(c.has_room(now), "at {i}");
            c.insert(now, (2, i), OK);
            assert!(c.len() <= 3);
        }
        assert_eq!(c.ring.capacity(), capacity);
        assert_eq!(c.get((2, 999)), Some(OK));
        assert_eq!(c.get((2, 995)), None);
    }

    #[test]
    fn the_default_table_sustains_its_rate() {
        // 2^20 records over 5 s: 200,000 writes per second never see BUSY.
        let mut c = Completions::new(1 << 20, TTL);
        let capacity = c.ring.capacity();
        for i in 0..3_000_000u64 {
            let now = i * 5_000;
            assert!(c.has_room(now), "write {i}");
            c.insert(now, (i % 7, i), OK);
        }
        assert_eq!(c.ring.capacity(), capacity);
        assert!(c.len() <= 1_000_000 + 1_000, "{}", c.len());
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

    /// Random inserts, lookups and clock steps against a plain model.
    #[test]
    fn matches_a_model() {
        let mut rng = testkit::Rng::from_seed(0x9e37_79b9_7f4a_7c15);
        for round in 0..30 {
            let records_max = 1 + rng.below(300) as usize;
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
                for &(at, id) in order.iter().filter(|_| step % 8 == 0) {
                    if now - at < ttl {
                        assert_eq!(c.get(id), Some(model[&id].1), "round {round} step {step}");
                    }
                }
                assert_eq!(room, c.len() < records_max);
                if room {
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
            }
        }
    }
}
