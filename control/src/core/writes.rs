//! The write path: exactly-once application, group commit before the answer, and the
//! background upkeep of the stores (compaction, sizes) bounded per loop iteration.

use super::*;
use crate::completions::{fingerprint, same_shape, shape, Record, RequestId};
use crate::durable::send_acks;
use crate::reassembly::Refused;
use proto::replication::WriteOp;
use proto::VALUE_BYTES_MAX;
use storage::{CasOutcome, Stamp};

/// How often a `Durability::Memory` core without a background sync flushes one endpoint it
/// wrote (oldest first): it frees blob chunks a delete or overwrite released and bounds what a
/// power cut loses, one `fdatasync` at a time so the loop never stalls for all of them at once.
const MEMORY_FLUSH_STEP_NS: u64 = 2_000_000;

/// Longest a write waits for its group commit while full bursts keep arriving: under load one
/// flush then covers several bursts instead of one flush per 32 datagrams.
const GROUP_COMMIT_WAIT_NS: u64 = 1_000_000;

/// How often store sizes are summed for the counters (visits every endpoint).
const SIZES_INTERVAL_NS: u64 = 250_000_000;

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
        if let Some(record) = self.completions.get(id) {
            // The same request again, or another one under a used id (a client bug): that
            // one gets a status of its own and is never applied, nor told the other's OK.
            let same = if h.has(flags::FRAGMENT) {
                same_shape(record.fingerprint, shape(m.opcode(), m.key, h.version, h.total_len))
            } else {
                record.fingerprint == fingerprint(m.opcode(), m.key, h.version, m.value)
            };
            if !same {
                self.counters.id_reused += 1;
                return self.answer(tx, request, Status::IdReused);
            }
            self.counters.duplicates_answered += 1;
            return self.answer_write(tx, request, slot, record, true);
        }
        // A write's reply may be held for the group commit, outside this datagram's reply
        // budget: an unvalidated sender pays for it up front, before anything is applied.
        if !request.validated && !self.replies.reserve(proto::HEADER_BYTES) {
            return self.answer(tx, request, Status::RetryWithToken);
        }
        if !self.completions.has_room(now_ns) {
            self.counters.busy += 1;
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
            let record = self.apply(slot, id, m.opcode(), m.key, m.value, h.version);
            self.completions.insert(now_ns, id, record);
            return self.answer_write(tx, request, slot, record, false);
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
                let record = self.apply(slot, id, opcode, &r.key, &r.value, r.expected_version);
                self.completions.insert(now_ns, id, record);
                self.answer_write(tx, request, slot, record, false);
            }
        }
    }

    /// Answers a write now, or, when its endpoint has writes not yet flushed and the class
    /// is `Flushed`, after the batch's group commit. A resend of a write still waiting is
    /// held the same way, so no answer ever runs ahead of the flush.
    fn answer_write(
        &mut self,
        tx: &mut dyn Transmit,
        request: &Request<'_>,
        slot: usize,
        record: Record,
        resend: bool,
    ) {
        let mut reply = request.reply;
        reply.status = record.status as u16;
        reply.version = record.version;
        let replicated = self.endpoints[slot].replica.is_some(); // (held by `send_or_hold`)
        if self.durability != Durability::Flushed || !self.endpoints[slot].dirty || replicated {
            self.replies.push(tx, &reply, &[], &[], request.validated);
            return;
        }
        // A resend of a write already waiting gets the one reply the commit sends (only
        // resends look: the scan would make a busy commit quadratic).
        let waiting = resend
            && self.pending.iter().any(|a| {
                (a.reply.client_id, a.reply.tracking_id) == (reply.client_id, reply.tracking_id)
            });
        if waiting {
            return;
        }
        if self.pending.is_empty() {
            self.pending_since_ns = self.now_ns;
        }
        // Held even when the list is full (it has room for one more): this reply must learn
        // the outcome of the flush like every other.
        self.pending.push(PendingAck { peer: request.peer, reply, slot });
        if self.pending.len() > PENDING_ACKS_MAX {
            self.flush_dirty(tx);
        }
    }

    /// Applies a write. Its record in the log carries the request's stamp, so its completion
    /// record comes back on replay; a write that changes nothing writes no record.
    fn apply(
        &mut self,
        slot: usize,
        id: RequestId,
        opcode: Opcode,
        key: &[u8],
        value: &[u8],
        expected: u64,
    ) -> Record {
        let stamp = Stamp {
            client_id: id.0,
            tracking_id: id.1,
            fingerprint: fingerprint(opcode, key, expected, value),
            at_ns: self.wall_ns(),
        };
        // A cached copy of the key's old value must not outlive it.
        self.read_cache.forget(slot, key);
        let endpoint = &mut self.endpoints[slot];
        let store = &mut endpoint.store;
        let keys_before = store.len() as u64;
        let blobs = &mut self.blobs;
        let s = Some(&stamp);
        let outcome = match opcode {
            Opcode::Put => store.put(blobs, key, value, s).map(|v| (Status::Ok, v)),
            Opcode::Cas => store.cas(blobs, key, expected, value, s).map(|o| match o {
                CasOutcome::Swapped(v) => (Status::Ok, v),
                CasOutcome::Mismatch(current) => (Status::VersionMismatch, current),
            }),
            Opcode::Delete => store
                .delete(blobs, key, s)
                .map(|existed| (if existed { Status::Ok } else { Status::NotFound }, 0)),
            _ => unreachable!("apply is only called for writes"),
        };
        // `memory`: the record is in the page cache before its reply exists, so an answered
        // write survives a crash of the process. A failure poisons the store and answers
        // this write (the flushed class answers its batch's writes likewise).
        let outcome = match outcome {
            Ok(done) if self.durability == Durability::Memory => store.write_out().map(|()| done),
            other => other,
        };
        self.counters.keys = self.counters.keys + store.len() as u64 - keys_before;
        if store.needs_flush() && !endpoint.dirty {
            endpoint.dirty = true;
            self.dirty.push(slot);
        }
        if store.needs_compaction() && !endpoint.queued_for_compaction {
            endpoint.queued_for_compaction = true;
            self.compaction_queue.push_back(slot);
        }
        let (status, version) = outcome.unwrap_or_else(|error| (status_of(error), 0));
        let written = match (opcode, status) {
            (Opcode::Put | Opcode::Cas, Status::Ok) => Some((WriteOp::Put, value, version)),
            (Opcode::Delete, Status::Ok) => Some((WriteOp::Delete, &[][..], store.last_lsn())),
            _ => None,
        };
        if let Some((op, value, lsn)) = written {
            self.record_applied(slot, lsn, op, key, value, &stamp);
        }
        Record { status, version, fingerprint: stamp.fingerprint }
    }

    /// The group commit at the end of a batch: `Flushed` endpoints flush and their held
    /// replies go out; `Memory` endpoints (written out write by write) are synced in the
    /// background, or flushed one at a time on a timer.
    pub(super) fn commit(&mut self, now_ns: u64, tx: &mut dyn Transmit) {
        let full_burst = std::mem::take(&mut self.burst_full);
        match self.durability {
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
                    if endpoint.store.flush(&mut self.blobs).is_ok() {
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
            if endpoint.store.flush(&mut self.blobs).is_ok() {
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
            let _ = self.blobs.release(&self.held_chunks);
            self.held_chunks.clear();
        }
        if self.dirty.is_empty() {
            return;
        }
        for slot in self.dirty.drain(..) {
            let endpoint = &mut self.endpoints[slot];
            endpoint.dirty = false;
            endpoint.store.take_released(&mut self.held_chunks);
        }
        self.sync_ticket = Some(clock.ticket());
    }

    /// Flushes every dirty endpoint, then sends the replies held for them: the recorded
    /// outcome if its endpoint's flush succeeded, else the flush's error (the write may or may
    /// not have reached the disk, so it must not be acknowledged).
    pub(super) fn flush_dirty(&mut self, tx: &mut dyn Transmit) {
        for slot in self.dirty.drain(..) {
            let endpoint = &mut self.endpoints[slot];
            endpoint.dirty = false;
            let flushed = endpoint.store.flush(&mut self.blobs);
            if flushed.is_ok() {
                super::replica::note_flushed(endpoint);
            }
            if let Err(error) = flushed {
                let status = status_of(error) as u16;
                for ack in self.pending.iter_mut().filter(|a| a.slot == slot) {
                    ack.reply.status = status;
                    ack.reply.version = 0;
                    let id = (ack.reply.client_id, ack.reply.tracking_id);
                    self.completions.replace(id, status_of(error), 0);
                }
            }
        }
        self.replies.datagrams += send_acks(&self.pending, &mut self.ack_buf[..], tx);
        self.pending.clear();
    }

    /// One bounded step of compaction for the endpoint at the head of the queue.
    pub(super) fn compact_step(&mut self) {
        if self.compaction_step_bytes == 0 {
            return; // compaction turned off (`compaction_step_bytes = 0`)
        }
        let Some(&slot) = self.compaction_queue.front() else { return };
        let stamps_before_ns = self.stamps_kept_since();
        let wall_ns = self.wall_ns();
        let endpoint = &mut self.endpoints[slot];
        endpoint.store.set_clock(wall_ns); // expired values are reclaimed, not copied
        if !endpoint.store.needs_compaction() {
            endpoint.queued_for_compaction = false;
            self.compaction_queue.pop_front();
            return;
        }
        if super::catchup::snapshot_in_progress(endpoint) {
            // A learner's snapshot is read from these segments: later.
            return self.compaction_queue.rotate_left(1);
        }
        let budget = self.compaction_step_bytes;
        match endpoint.store.compact_step(&mut self.blobs, budget, stamps_before_ns) {
            // Waiting for its stamps to age: the next endpoint's turn.
            Ok(0) => self.compaction_queue.rotate_left(1),
            Ok(_) => {}
            Err(_) => {
                endpoint.queued_for_compaction = false;
                self.compaction_queue.pop_front();
            }
        }
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

    /// Sums the stores' sizes into the counters, every `SIZES_INTERVAL_NS`.
    pub(super) fn refresh_sizes(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_sizes_ns) < SIZES_INTERVAL_NS && self.last_sizes_ns != 0
        {
            return;
        }
        self.last_sizes_ns = now_ns.max(1);
        let c = &mut self.counters;
        (c.log_bytes, c.live_bytes, c.index_bytes, c.quarantined, c.poisoned) = (0, 0, 0, 0, 0);
        for endpoint in &self.endpoints {
            let s = endpoint.store.stats();
            c.log_bytes += s.log_bytes;
            c.live_bytes += s.live_bytes;
            c.index_bytes += s.index_bytes;
            c.quarantined += s.quarantined;
            c.poisoned += u64::from(endpoint.store.failure() == Some(StoreError::Poisoned));
        }
        c.blob_bytes = self.blobs.blob_bytes();
        c.blob_chunks = self.blobs.blob_chunks();
        if c.quarantined != self.quarantines_reported {
            self.quarantines_reported = c.quarantined;
            for endpoint in &self.endpoints {
                if let Some(corruption) = endpoint.store.quarantine() {
                    self.stats.report_quarantine(endpoint.partition, corruption.to_string());
                }
            }
        }
    }
}
