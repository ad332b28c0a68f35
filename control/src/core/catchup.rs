//! Building a new replica while its partition serves ("copy a bit, forward a bit"): the map
//! names a *learner*; its primary takes a snapshot of the partition's live records (their
//! locations, `Store::snapshot`) at LSN `base` and streams it a few datagrams per loop
//! iteration, while every write after `base` goes to the learner as FORWARDs like to a backup.
//! The learner applies both as they come (`Store::install`: the newest version of a key wins,
//! deletes of keys it does not hold are remembered until it is done), so their order does not
//! matter; once it has every entry and every write through the newest LSN it holds, it holds
//! the partition exactly and says so (BUILT, `consistent`).
//!
//! - **Generations.** Each catch-up has its own generation: a learner that hears a new one
//!   empties its store and starts over (its primary restarted the catch-up: a snapshot gone
//!   stale under compaction, the learner fallen behind what the tail keeps, a new primary).
//! - **Its own log.** A learner whose store holds records of its own (a replica that
//!   restarted, or came back from being cut off) keeps them, and tells its primary the LSN L
//!   they go to (a BUILT of generation 0; 0: it holds nothing). Those records are not
//!   trusted (a power cut may have taken answered writes; an old primary's log may hold writes
//!   never committed), so they are checked, not believed: the primary sends each entry at or
//!   below L as a *digest* of its record (key, LSN, value, metadata) instead of the value, and
//!   the entries above L whole. The learner keeps a record of its own only where a digest
//!   vouches for it, and once the snapshot is in, deletes its own records no digest named
//!   (the primary no longer has them). A digest its own copy does not match (a record the
//!   primary never had, or lost) empties the store and starts a whole snapshot over. Only a
//!   store untouched since the learner began qualifies (after any generation it is emptied),
//!   and only if L is not past the primary's LSN at the snapshot: every write after that
//!   comes forwarded with a newer LSN than any of its own, so the newest version still wins.
//! - **Flow.** At most `SNAPSHOT_WINDOW` entries beyond what the learner confirmed are in
//!   flight, at most `SNAPSHOT_BURST` datagrams per learner per scan; entries not confirmed
//!   `resend_ns` after the last progress are sent again. Compaction of the partition waits
//!   while its snapshot is read (a deleted segment would take snapshot records along).
//! - **Joining.** A learner that is consistent is *joining*: the primary's commits wait for
//!   it from then on, as for a backup. Once it acked what was committed before that (so it
//!   lacks no committed write) and its catch-up began at least a completion TTL ago (so every
//!   completion record a client may still resend against came to it with a forwarded write),
//!   it is reported to the cluster agent (`MapOutcome::Built`), whose leader makes it a
//!   backup by a map change (from then on the lease waits for it too).

use super::replica::{Part, Peer, PAYLOAD_BYTES_MAX};
use super::*;
use proto::replication::{
    encode_built, encode_snapshot_header, finish_snapshot, Progress, Records, WriteOp, WriteRecord,
};
use std::collections::{HashMap, HashSet};
use storage::{record_digest, Applied, Shelf, Snapshot, SnapshotRead, StoreError};

/// How a learner remembers a key a digest vouched for.
fn key_digest(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

const _: () = assert!(storage::DIGEST_BYTES == proto::replication::DIGEST_BYTES);

/// Snapshot entries sent beyond what the learner confirmed.
const SNAPSHOT_WINDOW: u64 = 512;
/// Snapshot datagrams per learner per replication scan.
const SNAPSHOT_BURST: usize = 16;
/// Snapshot entries one datagram covers at most (most of them may be superseded).
const SNAPSHOT_SPAN: u64 = 256;

/// A primary's catch-up of one learner.
#[derive(Debug, Default)]
pub(crate) struct Catchup {
    /// 0: not started (the next scan takes the snapshot).
    generation: u64,
    base: u64,
    snapshot: Snapshot,
    /// Entries sent so far (from the learner's `entries` again after a stall).
    sent: u64,
    /// Entries the learner applied.
    entries: u64,
    progress_ns: u64,
    /// The learner said it holds the partition exactly.
    consistent: bool,
    /// Once consistent it is counted for the commit point, like a backup, and reported
    /// built once it holds what was committed before (`join_lsn`): when the map makes it a
    /// backup it lacks nothing committed (found by the simulation: a learner reported built,
    /// then cut off, became a backup without the writes committed meanwhile and was
    /// promoted, losing them).
    joining: bool,
    join_lsn: u64,
    started_ns: u64,
    /// The map epoch at which it was last reported joinable (0: never).
    reported_epoch: u64,
    /// What the learner said its own log holds (its LSN; 0: nothing), none: not heard yet.
    heard: Option<u64>,
    /// The learner's own log stands for the entries through this LSN (0: none does).
    own_log: u64,
    /// When the catch-up was first due: the learner's word is awaited a little (`resend_ns`).
    due_ns: u64,
}

impl Catchup {
    /// Whether its snapshot is still being read (compaction of the partition waits).
    fn reading(&self) -> bool {
        self.generation != 0 && self.entries < self.snapshot.len() as u64
    }

    /// Whether it began (its forwards start at its base).
    pub(super) fn started(&self) -> bool {
        self.generation != 0
    }

    /// Starts over at the next scan, from a new snapshot.
    pub(super) fn restart(&mut self) {
        self.generation = 0;
    }

    /// Whether the primary's commits wait for it (see `joining`).
    pub(super) fn joining(&self) -> bool {
        self.joining
    }
}

/// A learner's side of its catch-up.
#[derive(Debug)]
pub(crate) struct Building {
    /// The primary it is built from.
    primary: SocketAddr,
    /// Its store may be built on: emptied, or kept (`kept`). The core sees to it when the
    /// map makes it a learner.
    pub(super) ready: bool,
    /// Its store holds its own records through this LSN, untouched since it became a learner
    /// (see the module comment); none once a catch-up began or the store was emptied.
    pub(super) kept: Option<u64>,
    /// The catch-up it follows counts on its own records through this LSN (0: none).
    own_log: u64,
    /// Its own keys a digest vouched for (hashed), until the snapshot is in.
    vouched: HashSet<u128>,
    /// When it last told its primary what its own log holds (core clock).
    told_ns: u64,
    /// The catch-up it follows (none heard yet).
    generation: Option<u64>,
    /// Forwarded writes applied through this LSN.
    received: u64,
    /// Snapshot entries applied.
    entries: u64,
    snapshot_done: bool,
    consistent: bool,
    /// Deletes of keys it did not hold, until it is consistent: a snapshot entry older than
    /// one of them must not bring the key back.
    deleted: HashMap<Vec<u8>, u64>,
}

impl Building {
    pub(super) fn new(primary: SocketAddr) -> Building {
        Building {
            primary,
            ready: false,
            kept: None,
            own_log: 0,
            vouched: HashSet::new(),
            told_ns: 0,
            generation: None,
            received: 0,
            entries: 0,
            snapshot_done: false,
            consistent: false,
            deleted: HashMap::new(),
        }
    }

    pub(super) fn primary(&self) -> SocketAddr {
        self.primary
    }

    /// Back to a learner that follows no catch-up, its (emptied) store ready to build on.
    fn start_over(&mut self) {
        *self = Building { ready: true, ..Building::new(self.primary) };
    }

    /// Whether it holds the partition exactly (a backup from then on, if the map says so).
    pub(super) fn consistent(&self) -> bool {
        self.consistent
    }

    /// Consistent once it has every snapshot entry and every write through the newest LSN
    /// it holds; its LSN is then the forwarded writes'. Built on its own log, it first drops
    /// its own records no digest vouched for.
    fn check(&mut self, store: &mut Store, shelf: &mut Shelf) -> Result<(), StoreError> {
        if self.consistent || !self.snapshot_done {
            return Ok(());
        }
        if self.own_log > 0 {
            for key in store.keys_through(shelf, self.own_log)? {
                if !self.vouched.contains(&key_digest(&key)) {
                    // (At its own log's end: newer than any record of its own, older than
                    // every write forwarded since the snapshot.)
                    store.install(shelf, self.own_log, Applied::Delete { key: &key }, None)?;
                }
            }
            (self.own_log, self.vouched) = (0, HashSet::new());
        }
        if self.received >= store.last_lsn() {
            store.raise_lsn(shelf, self.received)?;
            self.consistent = true;
            self.deleted = HashMap::new();
        }
        Ok(())
    }
}

/// A learner peer of a primary (its catch-up starts at the next scan).
pub(super) fn learner_peer(addr: SocketAddr) -> Peer {
    let mut peer = Peer::new(addr, 0);
    peer.catchup = Some(Box::default());
    peer
}

/// Whether `endpoint` is a primary reading a snapshot for a learner (no compaction now).
pub(super) fn snapshot_in_progress(endpoint: &Endpoint) -> bool {
    matches!(endpoint.replica.as_deref(), Some(ReplicaState { part: Part::Primary { peers, .. }, .. })
        if peers.iter().any(|p| p.catchup.as_deref().is_some_and(Catchup::reading)))
}

impl Core {
    /// A primary's catch-ups of `slot`'s learners: started, streamed, reported joinable.
    pub(super) fn catch_up(&mut self, slot: usize, now_ns: u64, tx: &mut dyn Transmit) {
        let wall = self.wall_ns();
        let epoch = self.routes.epoch();
        let link = self.link.as_mut().expect("replicated");
        let resend_ns = link.config.resend_ns;
        let ttl_ns = self.config.completion_ttl_ns;
        let endpoint = &mut self.endpoints[slot];
        let partition = endpoint.partition;
        let Some(replica) = endpoint.replica.as_deref_mut() else { return };
        let Part::Primary { peers, probing: false, .. } = &mut replica.part else { return };
        for peer in peers.iter_mut() {
            let Some(catchup) = peer.catchup.as_deref_mut() else { continue };
            if catchup.generation == 0 {
                if catchup.due_ns == 0 {
                    catchup.due_ns = now_ns;
                }
                if catchup.heard.is_none() && now_ns < catchup.due_ns + resend_ns {
                    continue; // (the learner says what its own log holds first)
                }
                // (Unique per core: the wall clock at the start, never 0.)
                let generation = wall.max(1);
                let base = endpoint.store.last_lsn();
                // A learner whose own log runs past this primary's holds writes it never had.
                let own_log = catchup.heard.filter(|&lsn| lsn <= base).unwrap_or(0);
                *catchup = Catchup {
                    generation,
                    base,
                    snapshot: endpoint.store.snapshot(&self.shelf),
                    progress_ns: now_ns,
                    started_ns: now_ns,
                    heard: catchup.heard,
                    own_log,
                    due_ns: catchup.due_ns,
                    ..Catchup::default()
                };
                (peer.sent, peer.acked, peer.progress_ns) = (base, base, now_ns);
                self.counters.catchups_started += 1;
                self.counters.catchups_from_own_log += u64::from(own_log > 0);
            }
            if catchup.entries < catchup.sent && now_ns >= catchup.progress_ns + resend_ns {
                catchup.sent = catchup.entries; // send again what it did not confirm
                catchup.progress_ns = now_ns;
            }
            let len = catchup.snapshot.len() as u64;
            let mut bursts = 0;
            // Entries while the window has room; the last datagram (it may cover no entry)
            // goes again until the learner says it has the whole snapshot.
            let unconfirmed_end = !catchup.consistent && catchup.entries >= len;
            let due = catchup.sent < len || (unconfirmed_end && catchup.sent == len);
            while due
                && bursts < SNAPSHOT_BURST
                && catchup.sent <= catchup.entries + SNAPSHOT_WINDOW
            {
                link.payload.clear();
                let (generation, base, first) = (catchup.generation, catchup.base, catchup.sent);
                let own_log = catchup.own_log;
                encode_snapshot_header(
                    &mut link.payload,
                    partition,
                    epoch,
                    generation,
                    base,
                    (first, own_log),
                );
                let mut count = 0u16;
                let mut next = first;
                let mut stale = false;
                while next < len && next < first + SNAPSHOT_SPAN {
                    let i = next as usize;
                    match endpoint.store.snapshot_entry(&mut self.shelf, &catchup.snapshot, i) {
                        Ok(SnapshotRead::Live { key, value, lsn, meta }) => {
                            // (What the learner's own log may hold goes as its digest.)
                            let digest;
                            let (op, value) = if lsn <= own_log {
                                digest = record_digest(key, value, lsn, &meta);
                                self.counters.snapshot_digests += 1;
                                (WriteOp::Digest, &digest[..])
                            } else {
                                (WriteOp::Put, value)
                            };
                            let record = WriteRecord {
                                lsn,
                                op,
                                client_id: 0,
                                tracking_id: 0,
                                fingerprint: 0,
                                at_ns: 0,
                                key,
                                value,
                                item_flags: meta.flags,
                                expires_at_ns: meta.expires_at_ns,
                            };
                            if link.payload.len() + record.len() > PAYLOAD_BYTES_MAX {
                                if count == 0 {
                                    // Larger than a datagram (values of blob size are not
                                    // replicated yet): this learner cannot be built.
                                    self.counters.catchups_failed += 1;
                                    stale = true;
                                }
                                break;
                            }
                            record.encode(&mut link.payload);
                            count += 1;
                        }
                        Ok(SnapshotRead::Superseded) => {}
                        Ok(SnapshotRead::Stale) | Err(_) => {
                            stale = true;
                            break;
                        }
                    }
                    next += 1;
                }
                if stale {
                    catchup.restart();
                    break;
                }
                finish_snapshot(&mut link.payload, next, next == len, count);
                link.send(wall, peer.addr, tx);
                self.counters.snapshot_records += u64::from(count);
                catchup.sent = next;
                if next == len {
                    catchup.sent = len + 1; // (the end went out; again after a stall)
                    break;
                }
                bursts += 1;
            }
            if catchup.entries >= len && catchup.consistent {
                catchup.snapshot = Snapshot::default(); // (read: its memory goes)
            }
            let joinable = catchup.joining
                && peer.acked >= catchup.join_lsn
                && now_ns >= catchup.started_ns + ttl_ns;
            if joinable && catchup.reported_epoch != epoch {
                catchup.reported_epoch = epoch;
                if let Some(inbox) = &self.map_inbox {
                    let built = MapOutcome::Built { epoch, partition, learner: peer.addr };
                    let _ = inbox.outcomes.send(built); // (the agent gone: the node stops)
                }
            }
        }
    }

    /// A learner's BUILT, at its primary.
    pub(super) fn on_built(&mut self, from: SocketAddr, partition: u32, progress: &Progress) {
        let Some(slot) = self.all_slots.get(partition) else { return };
        let now_ns = self.now_ns;
        let last = self.endpoints[slot].store.last_lsn();
        let Some(replica) = self.endpoints[slot].replica.as_deref_mut() else { return };
        let Part::Primary { peers, .. } = &mut replica.part else { return };
        let Some(peer) = peers.iter_mut().find(|p| p.addr == from) else { return };
        let Some(catchup) = peer.catchup.as_deref_mut() else { return };
        if progress.generation == 0 {
            // It follows no catch-up yet, and its own log holds `lsn` (`tell_primary`): if it
            // said otherwise before, that was an earlier life of it (emptied when the map
            // made it a learner again, in a change this primary did not see), and the
            // catch-up starts over; so it does if it began on another word of its own log
            // (the learner's came late, or it emptied its store since).
            catchup.heard = Some(progress.lsn);
            let behind = catchup.entries > 0 || catchup.consistent || catchup.joining;
            let wanted = if progress.lsn <= catchup.base { progress.lsn } else { 0 };
            if behind || (catchup.started() && catchup.own_log != wanted) {
                catchup.restart();
            }
            return;
        }
        if catchup.generation != progress.generation || progress.lsn > last {
            return;
        }
        peer.sent = peer.sent.max(progress.lsn);
        if progress.durable > peer.acked {
            peer.acked = progress.durable;
            peer.progress_ns = now_ns;
        }
        if progress.entries > catchup.entries {
            catchup.entries = progress.entries;
            catchup.progress_ns = now_ns;
        }
        catchup.consistent = progress.consistent;
        if catchup.consistent && !catchup.joining {
            (catchup.joining, catchup.join_lsn) = (true, replica.committed);
        }
        replica.recompute_committed(); // (the tail may shrink)
    }

    /// Snapshot entries at a learner.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_snapshot(
        &mut self,
        from: SocketAddr,
        partition: u32,
        epoch: u64,
        generation: u64,
        base: u64,
        (first, next, last, own_log): (u64, u64, bool, u64),
        records: Records<'_>,
        tx: &mut dyn Transmit,
    ) {
        let Some(slot) = self.all_slots.get(partition) else { return };
        let endpoint = &mut self.endpoints[slot];
        let Some(replica) = endpoint.replica.as_deref_mut() else { return };
        let Part::Learner(building) = &mut replica.part else { return };
        if building.primary != from || epoch > self.routes.epoch() || !building.ready {
            self.counters.replication_refused += 1;
            return;
        }
        if building.generation != Some(generation) {
            if first > 0 {
                // A catch-up begun with an earlier life of this learner (its primary kept it
                // across map changes it did not see): only one from the start will do.
                return self.ask_restart(slot, tx);
            }
            let own = own_log > 0 && building.kept == Some(own_log);
            let emptied = building.generation.is_none() && building.kept.is_none();
            if !own && !emptied && endpoint.store.clear(&mut self.shelf).is_err() {
                building.ready = false;
                return; // (its store failed: it confirms nothing, its primary notices)
            }
            building.start_over();
            replica.tail.clear();
            replica.durable = 0;
            if own_log > 0 && !own {
                // Its primary counts on an own log it does not hold (any more): it says it
                // holds nothing, and a whole snapshot comes.
                return self.ask_restart(slot, tx);
            }
            (building.generation, building.received, building.own_log) =
                (Some(generation), base, own_log);
            if own {
                self.read_cache = ReadCache::default(); // (its own records may go)
            }
        }
        // Once it has the whole snapshot it takes no entry again: the deletes it remembered
        // are forgotten, and an old entry coming late could bring a key back.
        if building.snapshot_done || first > building.entries {
            return self.ack_later(slot); // (a gap: the resend fills it)
        }
        let store = &mut endpoint.store;
        for record in records {
            let Ok(r) = record else {
                self.counters.dropped_malformed += 1;
                return;
            };
            if building.deleted.get(r.key).is_some_and(|&d| d > r.lsn) {
                continue;
            }
            if r.op == WriteOp::Digest {
                // Its own copy, checked: the same record, or one this catch-up wrote since.
                let own_log = building.own_log;
                let vouched = match store.newest_digest(&mut self.shelf, r.key) {
                    _ if own_log == 0 || r.lsn > own_log => false, // (not one to digest)
                    Ok(Some((lsn, _))) if lsn > own_log => true,
                    Ok(Some((lsn, digest))) => lsn == r.lsn && digest[..] == *r.value,
                    Ok(None) => false,
                    Err(_) => return, // (its store failed: see above)
                };
                if !vouched {
                    // A record its primary never had, or lost: no trusting the rest.
                    self.counters.own_log_refused += 1;
                    if store.clear(&mut self.shelf).is_err() {
                        building.ready = false;
                        return;
                    }
                    self.read_cache = ReadCache::default();
                    building.start_over();
                    replica.tail.clear();
                    replica.durable = 0;
                    return self.ask_restart(slot, tx);
                }
                building.vouched.insert(key_digest(r.key));
                continue;
            }
            self.read_cache.forget(slot, r.key);
            let put =
                Applied::Put { key: r.key, value: r.value, meta: super::replica::meta_of(&r) };
            if store.install(&mut self.shelf, r.lsn, put, None).is_err() {
                return; // (its store failed: see above)
            }
        }
        building.entries = building.entries.max(next);
        building.snapshot_done |= last;
        self.after_learner_writes(slot);
    }

    /// Forwarded writes at a learner: applied in LSN order from its catch-up's base on, each
    /// with its completion record, newest version winning over snapshot entries.
    pub(super) fn learner_forward(
        &mut self,
        slot: usize,
        (sent_ns, committed): (u64, u64),
        records: Records<'_>,
        tx: &mut dyn Transmit,
    ) {
        let now_ns = self.now_ns;
        let endpoint = &mut self.endpoints[slot];
        let Some(replica) = endpoint.replica.as_deref_mut() else { return };
        let Part::Learner(building) = &mut replica.part else { return };
        if building.generation.is_none() {
            // Not started: the catch-up's first snapshot datagram comes (again) soon, unless
            // its primary thinks this learner is further (see `ask_restart`).
            return self.ask_restart(slot, tx);
        }
        let store = &mut endpoint.store;
        for record in records {
            let Some(r) = record.ok().filter(super::replica::is_write) else {
                self.counters.dropped_malformed += 1;
                break;
            };
            if r.lsn <= building.received {
                continue;
            }
            if r.lsn > building.received + 1 {
                break; // a gap: the resend fills it
            }
            let (stamp, applied) = super::replica::decoded(&r);
            self.read_cache.forget(slot, r.key);
            if store.install(&mut self.shelf, r.lsn, applied, Some(&stamp)).is_err() {
                break; // (its store failed: it confirms nothing more)
            }
            if r.op == WriteOp::Delete && !building.consistent {
                let d = building.deleted.entry(r.key.to_vec()).or_insert(0);
                *d = (*d).max(r.lsn);
            }
            building.received = r.lsn;
            self.counters.replicated_records += 1;
            super::replica::remember(&mut self.completions, &mut replica.tail, now_ns, &r);
        }
        let received = building.received;
        replica.heard_from_primary(committed.min(received), sent_ns);
        self.after_learner_writes(slot);
    }

    /// After a learner applied something: its consistency, its flush, its BUILT.
    fn after_learner_writes(&mut self, slot: usize) {
        let memory = self.durability == Durability::Memory;
        let endpoint = &mut self.endpoints[slot];
        let Some(replica) = endpoint.replica.as_deref_mut() else { return };
        let Part::Learner(building) = &mut replica.part else { return };
        if building.check(&mut endpoint.store, &mut self.shelf).is_err() {
            return; // (its store failed: it confirms nothing more)
        }
        if memory && endpoint.store.write_out(&mut self.shelf).is_ok() {
            replica.durable = endpoint.store.last_lsn();
        }
        if !endpoint.store.needs_flush() {
            // Nothing left to flush: the LSNs that changed nothing here (a delete of an
            // absent key) are as durable as the rest, or a joining learner's acks stop short
            // of them and hold its primary's commit point (and every reply) for good.
            replica.durable = replica.durable.max(endpoint.store.last_lsn());
        }
        if endpoint.store.needs_flush() && !endpoint.dirty {
            endpoint.dirty = true;
            self.dirty.push(slot);
        }
        self.ack_later(slot);
    }

    fn ack_later(&mut self, slot: usize) {
        if !self.acks_due.contains(&slot) {
            self.acks_due.push(slot);
        }
    }

    /// A learner that follows no catch-up yet tells its primary what its own log holds,
    /// every `resend_ns` until one begins (the primary waits for it a little).
    pub(super) fn tell_primary(&mut self, slot: usize, now_ns: u64, tx: &mut dyn Transmit) {
        let resend_ns = self.link.as_ref().expect("replicated").config.resend_ns;
        let Some(ReplicaState { part: Part::Learner(building), .. }) =
            self.endpoints[slot].replica.as_deref_mut()
        else {
            return;
        };
        if building.generation.is_some() || !building.ready || now_ns < building.told_ns + resend_ns
        {
            return;
        }
        building.told_ns = now_ns;
        self.ask_restart(slot, tx);
    }

    /// A BUILT of generation 0: this learner holds nothing of any catch-up, only its own log
    /// through `lsn` (0: nothing), and its primary starts over if it thought otherwise.
    fn ask_restart(&mut self, slot: usize, tx: &mut dyn Transmit) {
        let wall = self.wall_ns();
        let epoch = self.routes.epoch();
        let endpoint = &self.endpoints[slot];
        let Some(ReplicaState { part: Part::Learner(building), .. }) = endpoint.replica.as_deref()
        else {
            return;
        };
        let progress = Progress { lsn: building.kept.unwrap_or(0), ..Progress::default() };
        let link = self.link.as_mut().expect("replicated endpoints have a link");
        link.payload.clear();
        encode_built(&mut link.payload, endpoint.partition, epoch, &progress);
        link.send(wall, building.primary, tx);
    }

    /// A learner's BUILT to its primary (none before it heard of a catch-up).
    pub(super) fn send_built(&mut self, slot: usize, tx: &mut dyn Transmit) {
        let wall = self.wall_ns();
        let epoch = self.routes.epoch();
        let endpoint = &mut self.endpoints[slot];
        let partition = endpoint.partition;
        let Some(replica) = endpoint.replica.as_deref_mut() else { return };
        let Part::Learner(building) = &replica.part else { return };
        let Some(generation) = building.generation else { return };
        let progress = Progress {
            echo_ns: replica.last_echo,
            generation,
            lsn: building.received,
            // (Snapshot entries ahead of the forwarded writes make its LSN run ahead.)
            durable: replica.durable.min(building.received),
            entries: building.entries,
            consistent: building.consistent && replica.durable >= building.received,
        };
        let primary = building.primary;
        replica.reported = replica.durable;
        let link = self.link.as_mut().expect("replicated endpoints have a link");
        link.payload.clear();
        encode_built(&mut link.payload, partition, epoch, &progress);
        link.send(wall, primary, tx);
    }
}
