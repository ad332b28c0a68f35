//! The write path: exactly-once application, group commit before the answer, and the
//! background upkeep of the stores (compaction, sizes) bounded per loop iteration.

use super::*;
use crate::completions::{fingerprint, same_shape, shape, Record, RequestId};
use crate::counter;
use crate::durable::{send_acks, SyncGroup};
use crate::reassembly::Refused;
use proto::{encode_count, IncrArgs, COUNT_BYTES, VALUE_BYTES_MAX};
use storage::{Applied, CasOutcome, Meta, Shelf, Stamp};

/// How often a `Durability::Memory` core without a background sync flushes one endpoint it
/// wrote (oldest first): it frees blob chunks a delete or overwrite released and bounds what a
/// power cut loses, one `fdatasync` at a time so the loop never stalls for all of them at once.
const MEMORY_FLUSH_STEP_NS: u64 = 2_000_000;

/// Longest a write waits for its group commit while full bursts keep arriving: under load one
/// flush then covers several bursts instead of one flush per 32 datagrams.
const GROUP_COMMIT_WAIT_NS: u64 = 1_000_000;

/// How often store sizes are summed for the counters (visits every endpoint).
const SIZES_INTERVAL_NS: u64 = 250_000_000;
/// Endpoints one call of `refresh_sizes` reads.
const SIZES_STEP: usize = 4096;

/// A pass of `refresh_sizes` under way: the endpoint it reads next and the sums so far.
#[derive(Debug, Default)]
pub(super) struct Sizes {
    next: usize,
    live_bytes: u64,
    index_bytes: u64,
    quarantined: u64,
    poisoned: u64,
    limit_refusals: u64,
    no_space_refusals: u64,
    limits: std::collections::BTreeSet<storage::Limit>,
}

/// Held replies of writes that may not be durable: each says so (`status_of(error)`), and so
/// does its completion record, so a resend is not told OK either.
fn fail_acks<'a>(
    acks: impl IntoIterator<Item = &'a mut PendingAck>,
    error: StoreError,
    completions: &mut Completions,
) {
    for ack in acks {
        ack.reply.status = status_of(error) as u16;
        ack.reply.version = 0;
        ack.count = None;
        completions.replace((ack.reply.client_id, ack.reply.tracking_id), status_of(error), 0);
    }
}

/// At most one line on stderr per this long about writes refused for a limit, for space or for
/// a full completion table.
const REFUSALS_LINE_INTERVAL_NS: u64 = 10_000_000_000;

/// A count of refused writes as stderr last gave it, and when.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Reported {
    count: u64,
    at_ns: u64,
}

impl Reported {
    /// Whether a line is due for `count` refusals now: more than last time, and none for
    /// `REFUSALS_LINE_INTERVAL_NS`. Taken as said when it is.
    fn due(&mut self, now_ns: u64, count: u64) -> bool {
        let quiet =
            self.at_ns == 0 || now_ns.saturating_sub(self.at_ns) >= REFUSALS_LINE_INTERVAL_NS;
        if count <= self.count || !quiet {
            return false;
        }
        *self = Reported { count, at_ns: now_ns.max(1) };
        true
    }
}

/// A write as [`Core::apply`] takes it.
struct Write<'a> {
    opcode: Opcode,
    key: &'a [u8],
    value: &'a [u8],
    /// CAS: the version the key must have.
    expected: u64,
    /// The request's TTL (`HeaderFields::ttl_secs`).
    ttl_secs: Option<u32>,
}

impl Write<'_> {
    fn fingerprint(&self) -> u64 {
        fingerprint(self.opcode, self.key, self.expected, self.value, self.ttl_secs)
    }
}

/// What applying a write ended with: its completion record and, for an INCR, the count its
/// reply carries.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    record: Record,
    count: Option<i64>,
}

/// Nanoseconds in a second (TTLs travel in seconds).
const NS_PER_S: u64 = 1_000_000_000;

impl Core {
    pub(super) fn handle_write(
        &mut self,
        now_ns: u64,
        request: &Request<'_>,
        slot: usize,
        tx: &mut dyn Transmit,
    ) {
        let m = request.message;
        let h = &m.header;
        let id: RequestId = (h.client_id, h.tracking_id);
        let (opcode, ttl) = (m.opcode(), h.ttl_secs());
        if let Some(record) = self.completions.get(id) {
            // The same request again, or another one under a used id (a client bug): that
            // one gets a status of its own and is never applied, nor told the other's OK.
            let same = if h.has(flags::FRAGMENT) {
                same_shape(record.fingerprint, shape(opcode, m.key, h.version, h.total_len, ttl))
            } else {
                record.fingerprint == fingerprint(opcode, m.key, h.version, m.value, ttl)
            };
            if !same {
                self.counters.id_reused += 1;
                return self.answer(tx, request, Status::IdReused);
            }
            self.counters.duplicates_answered += 1;
            let count = self.resent_count(slot, id, opcode, m.key, record);
            let outcome = Outcome { record, count };
            return self.answer_write(tx, request, slot, outcome, true);
        }
        if let Some(status) = self.refusal(slot, m, request.validated) {
            return self.answer(tx, request, status);
        }
        // A write's reply may be held for the group commit, outside this datagram's reply
        // budget: an unvalidated sender pays for it up front, before anything is applied.
        let reply_bytes =
            proto::HEADER_BYTES + if opcode == Opcode::Incr { COUNT_BYTES } else { 0 };
        if !request.validated && !self.replies.reserve(reply_bytes) {
            return self.answer(tx, request, Status::RetryWithToken);
        }
        if !self.completions.has_room(now_ns) {
            self.counters.busy += 1;
            self.completions_full += 1;
            return self.answer(tx, request, Status::Busy);
        }
        let value_len = if h.has(flags::FRAGMENT) { h.total_len as usize } else { m.value.len() };
        if super::replica::has_backups(&self.endpoints[slot])
            && m.key.len() + value_len > super::replica::REPLICATED_VALUE_BYTES_MAX
        {
            // Its record must fit one forward (values of blob size replicate later).
            return self.answer(tx, request, Status::TooLarge);
        }
        if !h.has(flags::FRAGMENT) {
            let write =
                Write { opcode, key: m.key, value: m.value, expected: h.version, ttl_secs: ttl };
            let outcome = self.apply(slot, id, &write);
            self.remember(now_ns, id, &outcome);
            return self.answer_write(tx, request, slot, outcome, false);
        }
        if h.total_len as usize > VALUE_BYTES_MAX {
            return self.answer(tx, request, Status::TooLarge);
        }
        match self.reassemblies.add(now_ns, id, h, m.key, m.value) {
            Err(Refused::Busy) => {
                self.counters.busy += 1;
                self.answer(tx, request, Status::Busy)
            }
            Err(Refused::Inconsistent) => self.answer(tx, request, Status::Malformed),
            Ok(r) if !r.is_complete() => {
                if h.has(flags::ACK_REQUEST) {
                    let mut reply = request.reply;
                    reply.flags |= flags::PARTIAL;
                    reply.frag_index = r.first_missing();
                    self.replies.push(tx, &reply, &[], &[], request.validated);
                }
            }
            Ok(_) => {
                let r = self.reassemblies.take(id).expect("complete reassembly exists");
                let opcode = Opcode::from_wire(r.opcode).expect("checked by proto");
                let write = Write {
                    opcode,
                    key: &r.key,
                    value: &r.value,
                    expected: r.expected_version,
                    ttl_secs: r.ttl_secs,
                };
                let outcome = self.apply(slot, id, &write);
                self.remember(now_ns, id, &outcome);
                self.answer_write(tx, request, slot, outcome, false);
            }
        }
    }

    /// Keeps a write's outcome for its resends, unless it was refused BUSY: the store ran
    /// into a limit and changed nothing (what `apply` gets as `StoreError::Exhausted` is a
    /// refusal before anything was written; a flush that runs into a limit answers the writes
    /// it held through `flush_dirty`, whose records then say BUSY), so a resend must try
    /// again (the limit may have lifted), not be answered BUSY from the record for the TTL.
    fn remember(&mut self, now_ns: u64, id: RequestId, outcome: &Outcome) {
        if outcome.record.status != Status::Busy {
            self.completions.insert_counted(now_ns, id, outcome.record, outcome.count);
        }
    }

    /// Why a new write cannot be taken at all, before anything is reserved or applied: an
    /// INCR whose value is not its arguments, or a TOUCH of a blob value from a sender
    /// without a token (it rewrites the whole value: up to 16 MiB for a forged 72-byte
    /// request).
    fn refusal(&mut self, slot: usize, m: &Message<'_>, validated: bool) -> Option<Status> {
        if m.opcode() == Opcode::Incr && IncrArgs::decode(m.value).is_none() {
            return Some(Status::Malformed);
        }
        if m.opcode() == Opcode::Touch && !validated {
            let store = &mut self.endpoints[slot].store;
            if matches!(store.get_reference(&self.shelf, m.key), Ok(Some((ValueRef::Blob(_), _)))) {
                self.replies.retry_token += 1;
                return Some(Status::RetryWithToken);
            }
        }
        None
    }

    /// The count a resent INCR is answered with: its record's, or, when the record holds none
    /// (a backup's replicated record), the key's value while it is still the one that INCR
    /// wrote. `None` otherwise: the resend is then answered with its status and no count.
    fn resent_count(
        &mut self,
        slot: usize,
        id: RequestId,
        opcode: Opcode,
        key: &[u8],
        record: Record,
    ) -> Option<i64> {
        if opcode != Opcode::Incr || !matches!(record.status, Status::Ok | Status::BelowFloor) {
            return None;
        }
        if let Some(count) = self.completions.count(id) {
            return Some(count);
        }
        match self.endpoints[slot].store.get_reference(&self.shelf, key) {
            Ok(Some((ValueRef::Inline(value), version))) if version == record.version => {
                crate::counter::parse(value).and_then(|n| i64::try_from(n).ok())
            }
            _ => None,
        }
    }

    /// Answers a write now, or, when its endpoint has writes not yet flushed and the class
    /// is `Flushed`, after the batch's group commit. A resend of a write still waiting is
    /// held the same way, so no answer ever runs ahead of the flush. A CAS mismatch asked to
    /// return the current value is answered at once, like the read it is.
    fn answer_write(
        &mut self,
        tx: &mut dyn Transmit,
        request: &Request<'_>,
        slot: usize,
        outcome: Outcome,
        resend: bool,
    ) {
        let Outcome { record, count } = outcome;
        let mut reply = request.reply;
        reply.status = record.status as u16;
        reply.version = record.version;
        if record.status == Status::VersionMismatch
            && request.message.header.has(flags::RETURN_VALUE)
            && self.send_current_value(tx, request, slot)
        {
            return;
        }
        let replicated = self.endpoints[slot].replica.is_some(); // (held by `send_or_hold`)
        if self.durability != Durability::Flushed || !self.awaits_sync(slot) || replicated {
            let value = count.map(encode_count);
            let value = value.as_ref().map_or(&[][..], |v| &v[..]);
            self.replies.push(tx, &reply, &[], value, request.validated);
            return;
        }
        // A resend of a write already waiting gets the one reply the commit sends (only
        // resends look: the scan would make a busy commit quadratic).
        let id = (reply.client_id, reply.tracking_id);
        let waiting = resend
            && (self.pending.iter().any(|a| (a.reply.client_id, a.reply.tracking_id) == id)
                || self.syncing.holds(id));
        if waiting {
            return;
        }
        if self.pending.is_empty() {
            self.pending_since_ns = self.now_ns;
        }
        // Held even when the list is full (it has room for one more): this reply must learn
        // the outcome of the flush like every other.
        self.pending.push(PendingAck { peer: request.peer, reply, slot, count });
        if self.pending.len() > PENDING_ACKS_MAX {
            match self.off_loop() {
                true => self.commit_off_loop(tx),
                false => self.flush_dirty(tx),
            }
        }
    }

    /// A CAS mismatch's reply with the key's live value and version (RETURN_VALUE), when the
    /// key exists, its value is in the log and the reply fits one datagram; returns whether
    /// it was sent. Otherwise the plain mismatch is the answer (and the client reads).
    fn send_current_value(
        &mut self,
        tx: &mut dyn Transmit,
        request: &Request<'_>,
        slot: usize,
    ) -> bool {
        let m = request.message;
        let Ok(Some((ValueRef::Inline(value), version))) =
            self.endpoints[slot].store.get_reference(&self.shelf, m.key)
        else {
            return false;
        };
        if version == m.header.version || !fits_unfragmented(0, value.len()) {
            return false;
        }
        let mut reply = request.reply;
        reply.status = Status::VersionMismatch as u16;
        reply.version = version;
        reply.flags |= flags::RETURN_VALUE;
        self.replies.push(tx, &reply, &[], value, request.validated);
        true
    }

    /// Applies a write. Its record in the log carries the request's stamp, so its completion
    /// record comes back on replay; a write that changes nothing (a delete of an absent key,
    /// a CAS that did not match, an INCR below its floor) writes a note of its answer
    /// (`Store::note`), so that a resend, or a duplicate, after a restart is answered from
    /// it too rather than applied late (a delete answered NOT_FOUND must not delete the key
    /// written since); on a replicated partition the backups get the note like any write, so
    /// a resend that reaches a new primary is answered from it as well.
    fn apply(&mut self, slot: usize, id: RequestId, write: &Write<'_>) -> Outcome {
        let stamp = Stamp {
            client_id: id.0,
            tracking_id: id.1,
            fingerprint: write.fingerprint(),
            at_ns: self.wall_ns(),
        };
        // A cached copy of the key's old value must not outlive it.
        self.read_cache.forget(slot, write.key);
        let expires_at_ns = match write.ttl_secs {
            None | Some(0) => 0,
            Some(ttl) => stamp.at_ns.saturating_add(u64::from(ttl) * NS_PER_S),
        };
        let endpoint = &mut self.endpoints[slot];
        let store = &mut endpoint.store;
        let keys_before = store.len() as u64;
        let shelf = &mut self.shelf;
        let (s, key, value) = (Some(&stamp), write.key, write.value);
        let meta = Meta { flags: 0, expires_at_ns };
        let mut count = None;
        let mut counted = counter::Text::of(0);
        let outcome = match write.opcode {
            Opcode::Put => store.put_with(shelf, key, value, &meta, s).map(|v| (Status::Ok, v)),
            Opcode::Cas => {
                store.cas_with(shelf, key, write.expected, value, &meta, s).map(|o| match o {
                    CasOutcome::Swapped(v) => (Status::Ok, v),
                    CasOutcome::Mismatch(current) => (Status::VersionMismatch, current),
                })
            }
            Opcode::Delete => store
                .delete(shelf, key, s)
                .map(|existed| (if existed { Status::Ok } else { Status::NotFound }, 0)),
            Opcode::Incr => {
                let args = IncrArgs::decode(value).expect("checked by `refusal`");
                incr(store, shelf, key, args, write.ttl_secs.map(|_| expires_at_ns), s).map(
                    |(status, version, n)| {
                        count = n;
                        if status == Status::Ok {
                            counted = counter::Text::of(n.expect("an applied INCR counts").into());
                        }
                        (status, version)
                    },
                )
            }
            Opcode::Touch => touch(store, shelf, key, expires_at_ns, s),
            _ => unreachable!("apply is only called for writes"),
        };
        let replicated = endpoint.replica.is_some();
        let mut noted = None;
        let outcome = match outcome {
            Ok((status, version)) if status != Status::Ok && !replicated => store
                .note_unnumbered(shelf, key, &stamp, status as u16, version)
                .map(|()| (status, version)),
            Ok((status, version)) if status != Status::Ok => {
                store.note(shelf, key, &stamp, status as u16, version).map(|lsn| {
                    noted = Some(lsn);
                    (status, version)
                })
            }
            other => other,
        };
        // `memory`: the record is in the page cache before its reply exists, so an answered
        // write survives a crash of the process. A failure poisons the store and answers
        // this write (the flushed class answers its batch's writes likewise).
        let outcome = match outcome {
            Ok(done) if self.durability == Durability::Memory => {
                store.write_out(shelf).map(|()| done)
            }
            other => other,
        };
        self.counters.keys = self.counters.keys + store.len() as u64 - keys_before;
        if store.needs_flush() && !endpoint.dirty {
            endpoint.dirty = true;
            self.dirty.push(slot);
        }
        let (status, version) = outcome.unwrap_or_else(|error| {
            count = None;
            (status_of(error), 0)
        });
        let c = &mut self.counters;
        c.cas_mismatches += u64::from(status == Status::VersionMismatch);
        c.incr_below_floor += u64::from(status == Status::BelowFloor);
        // A replicated INCR reaches the backups as a PUT of the count it wrote, a TOUCH as a
        // PUT of the value it kept; both with the item's flags and expiry as they are now.
        let mut kept = Vec::new();
        let written = match (write.opcode, status) {
            _ if !replicated => None,
            _ if noted.is_some() => {
                noted.map(|lsn| (lsn, Applied::Note { key, status: status as u16, version }))
            }
            (Opcode::Put | Opcode::Cas, Status::Ok) => {
                Some((version, Applied::Put { key, value, meta }))
            }
            (Opcode::Incr | Opcode::Touch, Status::Ok) => match store.get_item(shelf, key) {
                Ok(Some(item)) => {
                    kept.extend_from_slice(item.value);
                    Some((version, Applied::Put { key, value: &kept[..], meta: item.meta }))
                }
                // Expired as it was written (a TTL of 0), which reads as a delete; or a store
                // failing now, which fails everything after. Either way the backups must get
                // this LSN, or they would wait for it for ever.
                _ => Some((version, Applied::Delete { key })),
            },
            (Opcode::Delete, Status::Ok) => Some((store.last_lsn(), Applied::Delete { key })),
            _ => None,
        };
        if let Some((lsn, applied)) = written {
            self.record_applied(slot, lsn, applied, &stamp);
        }
        Outcome { record: Record { status, version, fingerprint: stamp.fingerprint }, count }
    }

    /// The group commit at the end of a batch: `Flushed` endpoints flush and their held
    /// replies go out; `Memory` endpoints (written out write by write) are synced in the
    /// background, or flushed one at a time on a timer.
    pub(super) fn commit(&mut self, now_ns: u64, tx: &mut dyn Transmit) {
        let full_burst = std::mem::take(&mut self.burst_full);
        match self.durability {
            Durability::Flushed if self.off_loop() => self.commit_off_loop(tx),
            Durability::Flushed => {
                // More datagrams are queued: let them join this commit, for a while.
                let young = now_ns.saturating_sub(self.pending_since_ns) < GROUP_COMMIT_WAIT_NS;
                if !(full_burst && young) {
                    self.flush_dirty(tx);
                }
            }
            Durability::Memory => {
                self.flush_lone_primaries();
                if self.sync_clock.is_some() {
                    return self.follow_background_sync();
                }
                let due = now_ns.saturating_sub(self.last_flush_ns) >= MEMORY_FLUSH_STEP_NS;
                if due && !self.dirty.is_empty() {
                    self.last_flush_ns = now_ns;
                    let slot = self.dirty.remove(0);
                    let endpoint = &mut self.endpoints[slot];
                    endpoint.dirty = false;
                    // A failure poisons the store, which then answers every write itself.
                    if endpoint.store.flush(&mut self.shelf).is_ok() {
                        super::replica::note_flushed(endpoint);
                    }
                }
            }
        }
    }

    /// The `memory` class where a replicated partition is down to its primary (no in-sync
    /// backup holds its writes in memory): those endpoints commit on their own flush, each
    /// batch, as the
    /// `flushed` class does, so an answered write survives a power cut of the primary too
    /// (found by the simulation: a sole primary lost its last answered writes to a power
    /// cut, came back as the only replica and served without them).
    fn flush_lone_primaries(&mut self) {
        let Some(link) = &self.link else { return };
        let factor = link.config.factor;
        let mut i = 0;
        while i < self.dirty.len() {
            let slot = self.dirty[i];
            let endpoint = &mut self.endpoints[slot];
            if !super::replica::commits_on_own_flush(endpoint, factor) {
                i += 1;
                continue;
            }
            self.dirty.swap_remove(i);
            endpoint.dirty = false;
            // (A failure poisons the store: its held replies are never released.)
            if endpoint.store.flush(&mut self.shelf).is_ok() {
                super::replica::note_flushed(endpoint);
            }
        }
    }

    /// The `memory` class with a background sync: blob chunks the written endpoints dropped
    /// wait for a ticket taken after their records were written out, and are freed once the
    /// sync thread reaches it. The loop never waits for the disk.
    fn follow_background_sync(&mut self) {
        let clock = self.sync_clock.as_ref().expect("called with a clock");
        if clock.failed() {
            // Answered writes may not be durable and nothing can tell which: stop taking new
            // ones, as a failed flush does (reads go on). Held chunks stay until a restart.
            for endpoint in &mut self.endpoints {
                endpoint.store.stop(StoreError::Poisoned);
            }
            self.dirty.clear();
            self.sync_clock = None; // (the timer path then finds every store stopped)
            return;
        }
        if let Some(ticket) = self.sync_ticket {
            if !clock.reached(ticket) {
                return;
            }
            self.sync_ticket = None;
            // A failure poisons the blob store, which then refuses blob writes itself.
            let _ = self.shelf.blobs_mut().release(&self.held_chunks);
            self.held_chunks.clear();
        }
        if self.dirty.is_empty() {
            return;
        }
        for slot in self.dirty.drain(..) {
            let endpoint = &mut self.endpoints[slot];
            endpoint.dirty = false;
            endpoint.store.take_released(&self.shelf, &mut self.held_chunks);
        }
        self.sync_ticket = Some(clock.ticket());
    }

    /// Whether the `flushed` class syncs on the core's sync thread (`commit_off_loop`): a
    /// node's core with a sync clock, outside a cluster (whose replicated commit points
    /// follow each endpoint's own flush, `replica::note_flushed`).
    fn off_loop(&self) -> bool {
        self.durability == Durability::Flushed && self.sync_clock.is_some() && self.link.is_none()
    }

    /// Whether the endpoint's writes so far wait to be durable: not flushed yet, or handed
    /// to the sync thread and not synced yet. A reply that depends on them waits too.
    pub(super) fn awaits_sync(&self, slot: usize) -> bool {
        let endpoint = &self.endpoints[slot];
        let ticket = endpoint.sync_ticket;
        endpoint.dirty
            || ticket != 0 && self.sync_clock.as_ref().is_some_and(|c| !c.reached(ticket))
    }

    /// The `flushed` class with a sync thread: the batch's records go to the kernel (the
    /// page cache), the thread is asked to sync them, and their replies wait in `syncing`
    /// while the loop serves on; a read is never behind a disk. Then the groups whose
    /// ticket the clock reached are answered, in order, and the blob chunks their writes
    /// dropped are freed. A sync that fails answers every held write with the failure and
    /// stops the core's writes, as a failed flush does: they may or may not be on the disk.
    pub(super) fn commit_off_loop(&mut self, tx: &mut dyn Transmit) {
        let clock = self.sync_clock.clone().expect("off the loop only with a clock");
        if !self.pending.is_empty() || !self.dirty.is_empty() {
            if self.shelf.write_out_after_blobs().is_err() {
                return self.flush_dirty(tx); // (the log stopped: it answers with why)
            }
            let ticket = clock.ticket();
            // (Copied out into a list sized by use, so a backlog of groups holds only what
            // it holds.)
            let mut acks = self.syncing.spare.pop().unwrap_or_default();
            acks.append(&mut self.pending);
            self.syncing.held += acks.len();
            let mut chunks = Vec::new();
            for slot in self.dirty.drain(..) {
                let endpoint = &mut self.endpoints[slot];
                endpoint.dirty = false;
                endpoint.sync_ticket = ticket;
                endpoint.store.take_released(&self.shelf, &mut chunks);
            }
            clock.request(ticket);
            self.syncing.groups.push_back(SyncGroup { ticket, acks, chunks });
            if self.syncing.held > PENDING_ACKS_MAX || self.syncing.groups.len() > PENDING_ACKS_MAX
            {
                // The disk is behind: wait for it here, as the loop's own flush would, so
                // what waits stays bounded (and a resend's scan of it short).
                return self.flush_dirty(tx);
            }
        }
        if clock.failed() {
            // (Cleaning must not write on either.)
            self.shelf.stop(StoreError::Poisoned);
            for endpoint in &mut self.endpoints {
                endpoint.store.stop(StoreError::Poisoned);
            }
            self.settle_syncing(Err(StoreError::Poisoned), tx);
            // Once: from now on the loop's own flush answers, and refuses, every write.
            self.sync_clock = None;
            return;
        }
        while self.syncing.groups.front().is_some_and(|g| clock.reached(g.ticket)) {
            let group = self.syncing.groups.pop_front().expect("just seen");
            self.answer_group(group, Ok(()), tx);
        }
    }

    /// Answers every group the sync thread still holds with `outcome`: `Ok` once the loop
    /// synced the log itself, or the failure.
    fn settle_syncing(&mut self, outcome: Result<(), StoreError>, tx: &mut dyn Transmit) {
        while let Some(group) = self.syncing.groups.pop_front() {
            self.answer_group(group, outcome, tx);
        }
    }

    fn answer_group(
        &mut self,
        mut group: SyncGroup,
        outcome: Result<(), StoreError>,
        tx: &mut dyn Transmit,
    ) {
        match outcome {
            // A failure poisons the blob store, which then refuses blob writes itself.
            Ok(()) => drop(self.shelf.blobs_mut().release(&group.chunks)),
            // (The chunks stay: the records that dropped them may be lost.)
            Err(error) => fail_acks(&mut group.acks, error, &mut self.completions),
        }
        self.send_held(&group.acks, tx);
        self.syncing.held -= group.acks.len();
        group.acks.clear();
        self.syncing.spare.push(group.acks);
    }

    fn send_held(&mut self, acks: &[PendingAck], tx: &mut dyn Transmit) {
        let (datagrams, bytes) = send_acks(acks, &mut self.ack_buf[..], tx);
        self.replies.datagrams += datagrams;
        self.replies.bytes += bytes;
        for ack in acks {
            self.replies.count_status(ack.reply.status);
        }
    }

    /// Flushes every dirty endpoint, then sends the replies held for them: the recorded
    /// outcome if its endpoint's flush succeeded, else the flush's error (the write may or may
    /// not have reached the disk, so it must not be acknowledged). Replies waiting for the
    /// sync thread are settled first, by a sync of the log here.
    pub(super) fn flush_dirty(&mut self, tx: &mut dyn Transmit) {
        if !self.syncing.groups.is_empty() {
            let synced = self.shelf.sync();
            self.settle_syncing(synced, tx);
        }
        for slot in self.dirty.drain(..) {
            let endpoint = &mut self.endpoints[slot];
            endpoint.dirty = false;
            let flushed = endpoint.store.flush(&mut self.shelf);
            if flushed.is_ok() {
                super::replica::note_flushed(endpoint);
            }
            if let Err(error) = flushed {
                let acks = self.pending.iter_mut().filter(|a| a.slot == slot);
                fail_acks(acks, error, &mut self.completions);
            }
        }
        let pending = std::mem::take(&mut self.pending);
        self.send_held(&pending, tx);
        self.pending = pending;
        self.pending.clear();
    }

    /// One bounded step of cleaning of the core's log, when it is due (its records are
    /// routed to their endpoints, which copy the live ones forward).
    pub(super) fn compact_step(&mut self) {
        if self.compaction_step_bytes == 0 {
            return; // cleaning turned off (`compaction_step_bytes = 0`)
        }
        let wall_ns = self.wall_ns();
        self.shelf.set_clock(wall_ns); // expired values are reclaimed, not copied
        if !self.shelf.needs_cleaning() {
            return;
        }
        let endpoints = &self.endpoints;
        if self
            .replicated
            .iter()
            .any(|&slot| super::catchup::snapshot_in_progress(&endpoints[slot]))
        {
            return; // a learner's snapshot is read from these segments: later
        }
        let stamps_before_ns = self.stamps_kept_since();
        let mut stores = EndpointStores { endpoints: &mut self.endpoints, slot_of: &self.slot_of };
        // (A failure stops the log, and every endpoint then answers it itself.)
        let _ = self.shelf.clean_step(&mut stores, self.compaction_step_bytes, stamps_before_ns);
    }

    /// Wall-clock nanoseconds now (the loop's clock plus where it started).
    pub(super) fn wall_ns(&self) -> u64 {
        self.config.wall_clock_start_ns + self.now_ns
    }

    /// Writes stamped since this wall-clock time may still be resent (see
    /// [`crate::stamps_kept_since`]).
    fn stamps_kept_since(&self) -> u64 {
        crate::stamps_kept_since(self.wall_ns(), self.config.completion_ttl_ns)
    }

    /// Sums the stores' sizes into the counters: a pass starts every `SIZES_INTERVAL_NS`
    /// and reads at most `SIZES_STEP` endpoints per call, so a core of 100,000 endpoints
    /// never stalls its loop for all of them at once (a cache miss or two each: about 10 ms,
    /// every 250 ms, before), and the counters are those of the last whole pass.
    pub(super) fn refresh_sizes(&mut self, now_ns: u64) {
        let sizes = &mut self.sizes;
        if sizes.next == 0 {
            let due = now_ns.saturating_sub(self.last_sizes_ns) >= SIZES_INTERVAL_NS;
            if !due && self.last_sizes_ns != 0 {
                return;
            }
            self.last_sizes_ns = now_ns.max(1);
            *sizes = Sizes::default();
        }
        // (A map change may have dropped endpoints since the pass began.)
        let start = sizes.next.min(self.endpoints.len());
        let end = (start + SIZES_STEP).min(self.endpoints.len());
        for endpoint in &self.endpoints[start..end] {
            let (core, partition) = (self.config.core, endpoint.partition);
            self.stats.set_endpoint_requests(core, partition, endpoint.requests);
            let s = endpoint.store.stats();
            sizes.live_bytes += s.live_bytes;
            sizes.index_bytes += s.index_bytes;
            sizes.quarantined += s.quarantined;
            sizes.poisoned +=
                u64::from(endpoint.store.failure(&self.shelf) == Some(StoreError::Poisoned));
            sizes.limit_refusals += s.limit_refusals;
            sizes.no_space_refusals += s.no_space_refusals;
            sizes.limits.extend(endpoint.store.limit());
        }
        sizes.next = end;
        if end < self.endpoints.len() {
            return;
        }
        sizes.next = 0;
        let sizes = std::mem::take(&mut self.sizes);
        let c = &mut self.counters;
        (c.live_bytes, c.index_bytes, c.quarantined, c.poisoned) =
            (sizes.live_bytes, sizes.index_bytes, sizes.quarantined, sizes.poisoned);
        (c.limit_refusals, c.no_space_refusals) = (sizes.limit_refusals, sizes.no_space_refusals);
        c.log_bytes = self.shelf.stats().log_bytes;
        c.blob_bytes = self.shelf.blobs().blob_bytes();
        c.blob_chunks = self.shelf.blobs().blob_chunks();
        self.report_limits(now_ns, &sizes.limits);
        let c = &self.counters;
        if c.quarantined != self.quarantines_reported {
            self.quarantines_reported = c.quarantined;
            for endpoint in &self.endpoints {
                if let Some(corruption) = endpoint.store.quarantine() {
                    self.stats.report_quarantine(endpoint.partition, corruption.to_string());
                }
            }
        }
    }

    /// One line on stderr, at most every `REFUSALS_LINE_INTERVAL_NS` for each, when writes
    /// were refused for a limit, for space, or for a full completion table since the last
    /// one: which limit, how many, and what lifts it. Running out of descriptors, maps, disk
    /// or completion records is an operating error the operator must see, not only a BUSY or
    /// NO_SPACE a client gets.
    fn report_limits(&mut self, now_ns: u64, limits: &std::collections::BTreeSet<storage::Limit>) {
        let (core, c) = (self.config.core, &self.counters);
        if self.limit_reported.due(now_ns, c.limit_refusals) {
            let names: Vec<String> = limits.iter().map(|l| l.describe()).collect();
            eprintln!(
                "cradle: core {core}: out of {}: {} writes refused BUSY so far; nothing \
                 acknowledged is lost. Each endpoint with data holds a descriptor and a map per \
                 segment file: raise the limit and restart, or use fewer partitions",
                names.join(" and "),
                c.limit_refusals,
            );
        }
        if self.no_space_reported.due(now_ns, c.no_space_refusals) {
            eprintln!(
                "cradle: core {core}: no space: {} writes refused NO_SPACE so far (the disk under \
                 the data directory is full, or an endpoint reached its key or segment limit); \
                 nothing acknowledged is lost. Free space and the writes are taken again (a \
                 store stopped by a failed flush needs a restart)",
                c.no_space_refusals,
            );
        }
        if self.completions_full_reported.due(now_ns, self.completions_full) {
            let records = self.config.completion_records_max as u64;
            let ttl_ns = self.config.completion_ttl_ns.max(1);
            eprintln!(
                "cradle: core {core}: the completion table is full: {} writes refused BUSY so \
                 far; nothing acknowledged is lost. It holds {records} records for {:.1} s, so \
                 a core takes at most {} writes/s: raise node.completion_records (each \
                 held record takes 64 to 112 bytes) for more",
                self.completions_full,
                ttl_ns as f64 / 1e9,
                u128::from(records) * 1_000_000_000 / u128::from(ttl_ns),
            );
        }
    }
}

/// INCR on one store: the status, the key's version after it, and the count its reply
/// carries (the new one; the current one when refused below the floor). The new count keeps
/// the key's flags and expiry, unless the request gave an expiry (`expires_at_ns`).
fn incr(
    store: &mut Store,
    shelf: &mut Shelf,
    key: &[u8],
    args: IncrArgs,
    expires_at_ns: Option<u64>,
    stamp: Option<&Stamp>,
) -> Result<(Status, u64, Option<i64>), StoreError> {
    if let Some((ValueRef::Blob(_), version)) = store.get_reference(shelf, key)? {
        // A blob value (16 KiB or more) is no count: refused without reading its chunks.
        return Ok((Status::NotACounter, version, None));
    }
    let (step, version, mut meta) = match store.get_item(shelf, key)? {
        Some(item) => (counter::step(Some(item.value), args), item.version, item.meta),
        None => (counter::step(None, args), 0, Meta::NONE),
    };
    let next = match step {
        Ok(next) => next,
        Err(counter::Refused::BelowFloor(count)) => {
            return Ok((Status::BelowFloor, version, Some(count)))
        }
        Err(counter::Refused::NotACounter) => return Ok((Status::NotACounter, version, None)),
    };
    if let Some(expires_at_ns) = expires_at_ns {
        meta.expires_at_ns = expires_at_ns;
    }
    let text = counter::Text::of(next.into());
    let version = store.put_with(shelf, key, text.as_bytes(), &meta, stamp)?;
    Ok((Status::Ok, version, Some(next)))
}

/// TOUCH on one store: the key's live value gets the expiry `expires_at_ns` (0: none) and
/// keeps its flags; NOT_FOUND when absent.
fn touch(
    store: &mut Store,
    shelf: &mut Shelf,
    key: &[u8],
    expires_at_ns: u64,
    stamp: Option<&Stamp>,
) -> Result<(Status, u64), StoreError> {
    let Some(item) = store.get_item(shelf, key)? else { return Ok((Status::NotFound, 0)) };
    let meta = Meta { expires_at_ns, ..item.meta };
    Ok(match store.rewrite_meta(shelf, key, &meta, stamp)? {
        Some(version) => (Status::Ok, version),
        None => (Status::NotFound, 0),
    })
}
