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
//!   A learner empties its store when it becomes one too: what it held before (a replica of a
//!   previous life, perhaps with writes the others never committed) is not trusted.
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
use std::collections::HashMap;
use storage::{Applied, Snapshot, SnapshotRead};

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
    /// Its store was emptied for this (the core does it when the map makes it a learner).
    pub(super) cleared: bool,
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
            cleared: false,
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

    /// Whether it holds the partition exactly (a backup from then on, if the map says so).
    pub(super) fn consistent(&self) -> bool {
        self.consistent
    }

    /// Consistent once it has every snapshot entry and every write through the newest LSN
    /// it holds; its LSN is then the forwarded writes'.
    fn check(&mut self, store: &mut Store) {
        if !self.consistent && self.snapshot_done && self.received >= store.last_lsn() {
            store.raise_lsn(self.received);
            self.consistent = true;
            self.deleted = HashMap::new();
        }
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
                // (Unique per core: the wall clock at the start, never 0.)
                let generation = wall.max(1);
                let base = endpoint.store.last_lsn();
                *catchup = Catchup {
                    generation,
                    base,
                    snapshot: endpoint.store.snapshot(),
                    progress_ns: now_ns,
                    started_ns: now_ns,
                    ..Catchup::default()
                };
                (peer.sent, peer.acked, peer.progress_ns) = (base, base, now_ns);
                self.counters.catchups_started += 1;
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
                encode_snapshot_header(
                    &mut link.payload,
                    partition,
                    epoch,
                    generation,
                    base,
                    first,
                );
                let mut count = 0u16;
                let mut next = first;
                let mut stale = false;
                while next < len && next < first + SNAPSHOT_SPAN {
                    let i = next as usize;
                    match endpoint.store.snapshot_entry(&mut self.blobs, &catchup.snapshot, i) {
                        Ok(SnapshotRead::Live { key, value, lsn, meta }) => {
                            let record = WriteRecord {
                                lsn,
                                op: WriteOp::Put,
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
            // It holds nothing (`ask_restart`): if it said otherwise before, that was an
            // earlier life of it (emptied when the map made it a learner again, in a change
            // this primary did not see), and the catch-up starts over.
            if catchup.entries > 0 || catchup.consistent || catchup.joining {
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
        (first, next, last): (u64, u64, bool),
        records: Records<'_>,
        tx: &mut dyn Transmit,
    ) {
        let Some(slot) = self.all_slots.get(partition) else { return };
        let endpoint = &mut self.endpoints[slot];
        let Some(replica) = endpoint.replica.as_deref_mut() else { return };
        let Part::Learner(building) = &mut replica.part else { return };
        if building.primary != from || epoch > self.routes.epoch() || !building.cleared {
            self.counters.replication_refused += 1;
            return;
        }
        if building.generation != Some(generation) {
            if first > 0 {
                // A catch-up begun with an earlier life of this learner (its primary kept it
                // across map changes it did not see): only one from the start will do.
                return self.ask_restart(slot, tx);
            }
            if building.generation.is_some() && endpoint.store.clear(&mut self.blobs).is_err() {
                return; // (its store failed: it confirms nothing, its primary notices)
            }
            let primary = building.primary;
            **building = Building::new(primary);
            (building.cleared, building.generation, building.received) =
                (true, Some(generation), base);
            replica.tail.clear();
            replica.durable = 0;
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
            self.read_cache.forget(slot, r.key);
            let put =
                Applied::Put { key: r.key, value: r.value, meta: super::replica::meta_of(&r) };
            if store.install(&mut self.blobs, r.lsn, put, None).is_err() {
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
            let Ok(r) = record else {
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
            if store.install(&mut self.blobs, r.lsn, applied, Some(&stamp)).is_err() {
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
        building.check(&mut endpoint.store);
        if memory && endpoint.store.write_out().is_ok() {
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

    /// A BUILT of generation 0: this learner holds nothing of any catch-up, and its primary
    /// starts over if it thought otherwise.
    fn ask_restart(&mut self, slot: usize, tx: &mut dyn Transmit) {
        let wall = self.wall_ns();
        let epoch = self.routes.epoch();
        let endpoint = &self.endpoints[slot];
        let Some(ReplicaState { part: Part::Learner(building), .. }) = endpoint.replica.as_deref()
        else {
            return;
        };
        let progress = Progress::default();
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
