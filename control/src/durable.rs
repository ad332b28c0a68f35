//! The stores a core serves from, and how writes become durable before they are answered.

use dataplane::Transmit;
use proto::HeaderFields;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use storage::{BlobStore, Hash, MemoryVolume, Shelf, StampedWrite, Store, StoreConfig, StoreError};

/// When a write is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Once applied and copied to the file (the page cache), before the reply: survives a
    /// process crash; a power cut loses what was written since the last sync (a background
    /// thread's, see [`SyncClock`], or the loop's own).
    Memory,
    /// After the batch's group commit (one `fdatasync` of the core's log per loop iteration,
    /// whatever number of endpoints the batch wrote). Survives a power cut. With a sync
    /// clock (a node's core outside a cluster), the sync runs on the core's own sync thread
    /// and the loop serves on meanwhile (`Core::commit_off_loop`).
    #[default]
    Flushed,
}

impl Durability {
    /// Parses `memory` or `flushed`.
    pub fn parse(text: &str) -> Option<Durability> {
        match text {
            "memory" => Some(Durability::Memory),
            "flushed" => Some(Durability::Flushed),
            _ => None,
        }
    }
}

/// A core's stores: one per endpoint, and the log and blob store they share.
#[derive(Debug)]
pub struct CoreStorage {
    /// The core's log and its content-addressed chunks of big values.
    pub shelf: Shelf,
    /// One per endpoint, in slot order.
    pub stores: Vec<Store>,
    /// When writes are answered.
    pub durability: Durability,
    /// Bytes of log one cleaning step may examine (bounded work per loop iteration).
    pub compaction_step_bytes: u64,
    /// Syncs of the files these stores live on by a thread of their own: for the `memory`
    /// class every few milliseconds (without one the loop itself flushes one written
    /// endpoint every few milliseconds), for `flushed` when the loop asks (without one the
    /// loop flushes at each batch end, waiting for the disk).
    pub sync_clock: Option<Arc<SyncClock>>,
    /// Writes replay found that a client may still resend (their stamps are recent, see
    /// [`crate::stamps_kept_since`]): the core rebuilds their completion records, so a
    /// resend after a restart is answered, never applied again.
    pub recovered: Vec<StampedWrite>,
}

/// Durable points made by a thread that syncs the stores' written files in a loop
/// (`storage::SyncSet`), so the `memory` class never waits for a disk on the serving loop. A ticket taken now is
/// reached once a sync that started after now has finished: everything written before the
/// ticket is then durable. One failed sync fails the clock for good: Linux marks pages whose
/// writeback failed clean, so a later sync that succeeds proves nothing about them.
#[derive(Debug, Default)]
pub struct SyncClock {
    started: AtomicU64,
    finished: AtomicU64,
    failed: AtomicBool,
    /// The newest ticket a loop asked to be reached (`request`).
    wanted: AtomicU64,
    /// The syncing thread, woken by `request` once it has said who it is (`serve`).
    syncer: OnceLock<Thread>,
}

impl SyncClock {
    /// A ticket for what has been written so far.
    pub fn ticket(&self) -> u64 {
        // The writes before this ticket (stores into shared maps) come before a sync that
        // starts after it; the syncing thread fences likewise.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.started.load(Ordering::Acquire) + 1
    }

    /// Whether everything written before `ticket` was taken is durable.
    pub fn reached(&self, ticket: u64) -> bool {
        !self.failed() && self.finished.load(Ordering::Acquire) >= ticket
    }

    /// Asks the syncing thread to reach `ticket` soon, waking it if it waits.
    pub fn request(&self, ticket: u64) {
        if self.wanted.fetch_max(ticket, Ordering::AcqRel) < ticket {
            if let Some(syncer) = self.syncer.get() {
                syncer.unpark();
            }
        }
    }

    /// For the syncing thread: whether a loop waits for a ticket not yet reached.
    pub fn requested(&self) -> bool {
        self.wanted.load(Ordering::Acquire) > self.finished.load(Ordering::Acquire)
    }

    /// For the syncing thread: names the calling thread as the one `request` wakes.
    pub fn serve(&self) {
        let _ = self.syncer.set(std::thread::current());
    }

    /// Whether a sync failed: nothing written since the last good one is known durable.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// For the syncing thread: runs one `sync` and, if it succeeded, moves the clock past
    /// every ticket taken before it started. A failure fails the clock for good.
    pub fn sync_with<E>(&self, sync: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        // Stores into the maps made before a ticket was taken are ordered before this sync.
        std::sync::atomic::fence(Ordering::SeqCst);
        let generation = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        if let Err(e) = sync() {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        self.finished.fetch_max(generation, Ordering::AcqRel);
        Ok(())
    }
}

impl CoreStorage {
    /// Stores in memory volumes (tests, benchmarks, `cradle demo`): nothing survives the
    /// process.
    pub fn in_memory(endpoints: usize, config: &StoreConfig) -> CoreStorage {
        let (blobs, _) = BlobStore::open(Box::new(MemoryVolume::new("blobs")), config)
            .expect("a memory volume cannot fail to open");
        let volume = Box::new(MemoryVolume::new("log"));
        let stamps_since = u64::MAX; // (a new memory volume holds no writes)
        let (shelf, stores, _) = Shelf::open(volume, blobs, config, endpoints as u32, stamps_since)
            .expect("a memory volume cannot fail");
        CoreStorage {
            shelf,
            stores,
            durability: Durability::Memory,
            compaction_step_bytes: 256 << 10,
            sync_clock: None,
            recovered: Vec::new(),
        }
    }
}

/// A write reply held until its endpoint's group commit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingAck {
    pub(crate) peer: SocketAddr,
    pub(crate) reply: HeaderFields,
    pub(crate) slot: usize,
    /// An INCR's count, the reply's value (none once a failed flush changed the status).
    pub(crate) count: Option<i64>,
}

/// Replies held for a sync the core's sync thread runs (`Core::commit_off_loop`): a group
/// per batch end that wrote, released in order as the clock reaches their tickets.
#[derive(Debug, Default)]
pub(crate) struct Syncing {
    pub(crate) groups: VecDeque<SyncGroup>,
    /// Emptied reply lists of answered groups, kept for the next ones (no allocation per
    /// batch once warm).
    pub(crate) spare: Vec<Vec<PendingAck>>,
    /// Replies in `groups`.
    pub(crate) held: usize,
}

/// One batch's replies and the blob chunks its writes dropped, durable at `ticket`.
#[derive(Debug)]
pub(crate) struct SyncGroup {
    pub(crate) ticket: u64,
    pub(crate) acks: Vec<PendingAck>,
    pub(crate) chunks: Vec<Hash>,
}

impl Syncing {
    /// Whether a resend's first reply is held here.
    pub(crate) fn holds(&self, id: (u64, u64)) -> bool {
        let acks = self.groups.iter().flat_map(|g| &g.acks);
        acks.into_iter().any(|a| (a.reply.client_id, a.reply.tracking_id) == id)
    }
}

/// The status a store error is answered with.
pub(crate) fn status_of(error: StoreError) -> proto::Status {
    match error {
        StoreError::NoSpace => proto::Status::NoSpace,
        StoreError::Poisoned | StoreError::Quarantined => proto::Status::Unavailable,
        // (Out of descriptors or maps: another endpoint's file closing, or a restart with a
        // higher limit, lifts it.)
        StoreError::Exhausted(_) => proto::Status::Busy,
    }
}

/// Sends held replies, packing consecutive ones to the same peer into one datagram; returns
/// the datagrams sent.
/// Sends the held write replies `acks`, packed per peer; the datagrams and bytes sent.
pub(crate) fn send_acks(acks: &[PendingAck], buf: &mut [u8], tx: &mut dyn Transmit) -> (u64, u64) {
    let mut len = 0;
    let mut peer = None;
    let mut datagrams = 0;
    let mut bytes = 0;
    for ack in acks {
        let count = ack.count.map(proto::encode_count);
        let value = count.as_ref().map_or(&[][..], |c| &c[..]);
        let full = len + proto::HEADER_BYTES + value.len() > proto::DATAGRAM_BYTES_MAX;
        if len > 0 && (peer != Some(ack.peer) || full) {
            tx.send(peer.expect("set with len"), &buf[..len]);
            datagrams += 1;
            bytes += len as u64;
            len = 0;
        }
        peer = Some(ack.peer);
        len += proto::encode_message(&mut buf[len..], &ack.reply, &[], value).expect("fits");
    }
    if let (Some(peer), true) = (peer, len > 0) {
        tx.send(peer, &buf[..len]);
        datagrams += 1;
        bytes += len as u64;
    }
    (datagrams, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Wire(Vec<(SocketAddr, usize)>);

    impl Transmit for Wire {
        fn send(&mut self, peer: SocketAddr, datagram: &[u8]) -> bool {
            let messages = proto::Messages::new(datagram).filter(|m| m.is_ok()).count();
            self.0.push((peer, messages));
            true
        }
    }

    #[test]
    fn a_ticket_is_reached_only_by_a_later_sync_and_never_after_a_failure() {
        let clock = SyncClock::default();
        let first = clock.ticket();
        assert!(!clock.reached(first));
        // A write made while a sync runs may have missed it: its ticket waits for the next.
        let mut during = 0;
        clock
            .sync_with(|| -> Result<(), ()> {
                during = clock.ticket();
                Ok(())
            })
            .unwrap();
        assert!(clock.reached(first));
        assert!(!clock.reached(during));
        clock.sync_with(|| Ok::<(), ()>(())).unwrap();
        assert!(clock.reached(during));
        let after = clock.ticket();
        assert_eq!(clock.sync_with(|| Err("EIO")), Err("EIO"));
        assert!(!clock.reached(after), "a failed sync reaches nothing");
        clock.sync_with(|| Ok::<(), ()>(())).unwrap();
        assert!(!clock.reached(after) && !clock.reached(first), "nor does any sync after it");
        assert!(clock.failed());
    }

    #[test]
    fn a_request_wakes_the_syncing_thread_which_then_reaches_the_ticket() {
        let clock = Arc::new(SyncClock::default());
        let (served, syncer) = (Arc::new(AtomicBool::new(false)), clock.clone());
        let flag = served.clone();
        let thread = std::thread::spawn(move || {
            syncer.serve();
            flag.store(true, Ordering::Release);
            // (Parks with no timeout: only `request` can wake it for good.)
            while !syncer.requested() {
                std::thread::park();
            }
            syncer.sync_with(|| Ok::<(), ()>(())).unwrap();
        });
        while !served.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let ticket = clock.ticket();
        assert!(!clock.requested());
        clock.request(ticket);
        thread.join().unwrap();
        assert!(clock.reached(ticket) && !clock.requested());
    }

    #[test]
    fn held_replies_share_datagrams_per_peer_in_order() {
        let (a, b) = (SocketAddr::from(([127, 0, 0, 1], 1)), SocketAddr::from(([127, 0, 0, 1], 2)));
        let put = HeaderFields { opcode: proto::Opcode::Put as u8, ..HeaderFields::default() };
        let ack =
            |peer| PendingAck { peer, reply: put.reply(proto::Status::Ok), slot: 0, count: None };
        let acks: Vec<PendingAck> = [a, a, a, b, a, a].into_iter().map(ack).collect();
        let mut wire = Wire(Vec::new());
        let mut buf = [0u8; proto::DATAGRAM_BYTES_MAX];
        assert_eq!(send_acks(&acks, &mut buf, &mut wire).0, 3);
        assert_eq!(wire.0, vec![(a, 3), (b, 1), (a, 2)]);
        // 20 headers of 72 bytes fit one 1,472-byte datagram; the 21st starts another.
        let many: Vec<PendingAck> = (0..21).map(|_| ack(a)).collect();
        let mut wire = Wire(Vec::new());
        assert_eq!(send_acks(&many, &mut buf, &mut wire).0, 2);
        assert_eq!(wire.0, vec![(a, 20), (a, 1)]);
    }
}
