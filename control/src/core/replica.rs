//! Replication inside a partition (PacificA's primary-backup): the primary orders the
//! partition's writes by LSN, forwards each write's record (its stamp included, so completion
//! records replicate with the write) to the in-sync backups, and answers a request only once
//! what it observed is *committed*: held by the primary and every in-sync backup under the
//! partition's durability class. Reads are held the same way, so no client ever sees a write
//! that a failover could lose.
//!
//! - **Forward and ack.** New records go out at the end of the batch that made them (many per
//!   datagram, before the primary's own flush); a backup applies them with `Store::apply_at`
//!   in LSN order (a gap waits for the resend) and acks twice: before its flush (renewing the
//!   lease) and after it (the LSN it now holds durably), echoing the forward's send time.
//!   Without new writes the primary sends empty forwards (heartbeats); unacked records are
//!   sent again `resend_ns` after the last progress with that backup.
//! - **Lease.** A primary serves only while every in-sync backup acked a forward it sent less
//!   than `lease_ns` ago (send times on the primary's wall clock, so a restarted primary cannot
//!   take a previous life's echoes for recent ones).
//! - **Becoming primary** (a fresh map, a promotion, even as the sole replica): the new
//!   primary asks every in-sync backup for its LSN (PROBE), pulls the records any of them has
//!   beyond its own (they come from the old primary's sequence, of which every replica holds a
//!   prefix), and serves once `promotion_wait_ns` (more than a lease) has passed since the
//!   last ack any of them (itself included) sent a primary: the old primary's lease, which
//!   needs those acks, has run out by then. A backup answers a probe only once it has the map
//!   that names the asker primary, and from then on takes no forward from the old one; its
//!   answer says how long ago it last acked (`quiet_ns`, on its own clock), so a failover
//!   that took longer than the wait to detect serves as soon as the probes are answered.
//!
//! Not yet: a replica that lags beyond what the primary still holds in memory (`tail`), i.e.
//! catch-up from the store and snapshots for new replicas (learners are not sent to); values
//! whose record does not fit one datagram (refused TOO_LARGE on replicated partitions).

use super::*;
use crate::peer::{ClusterKey, PeerKind, PeerOpener, PeerSealer, MAC_BYTES, PEER_HEADER_BYTES};
use proto::replication::{
    encode_ack, encode_forward_header, encode_probe, set_forward_count, Replication, WriteOp,
    WriteRecord, FORWARD_HEADER_BYTES, RECORD_HEADER_BYTES, RECORD_META_BYTES,
};
use proto::Role;
use storage::{Applied, Stamp};

/// Replication settings of a core (`CoreConfig::replication`; none on a single node).
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// The cluster's shared secret: every replication datagram carries its MAC.
    pub key: ClusterKey,
    /// How long the backups' acks keep a primary serving.
    pub lease_ns: u64,
    /// How often a primary without new writes sends a heartbeat.
    pub heartbeat_ns: u64,
    /// How long a forward or probe waits for its answer before it is sent again.
    pub resend_ns: u64,
    /// How long after the last ack its replicas sent a primary a new primary starts serving:
    /// more than `lease_ns`, so the old primary's lease has run out (1.5 × the lease by
    /// default). Less breaks linearizability when a cut-off primary still serves reads.
    pub promotion_wait_ns: u64,
    /// The cluster's replication factor. Above 1, a `memory`-class primary left without an
    /// in-sync backup commits on its own flush (no other memory holds its writes); at 1 the
    /// class means what it means on a single node.
    pub factor: usize,
}

impl ReplicationConfig {
    /// Defaults: a 50 ms lease, heartbeats every 5 ms, resends after 10 ms (a backup's flush
    /// on a loaded disk takes milliseconds: sooner resends only add work).
    pub fn new(key: ClusterKey) -> ReplicationConfig {
        ReplicationConfig::with_lease(key, LEASE_NS_MAX)
    }

    /// A cluster that fails a member over after `detect_ns` of silence: a lease of half that
    /// (at most the default 50 ms), so a promoted backup's wait is over by the time the map
    /// group has decided, with heartbeats five times a lease (at most every 5 ms).
    pub fn for_detection(key: ClusterKey, detect_ns: u64) -> ReplicationConfig {
        ReplicationConfig::with_lease(key, (detect_ns / 2).min(LEASE_NS_MAX))
    }

    fn with_lease(key: ClusterKey, lease_ns: u64) -> ReplicationConfig {
        ReplicationConfig {
            key,
            lease_ns,
            heartbeat_ns: (lease_ns / 5).clamp(1_000_000, 5_000_000),
            resend_ns: 10_000_000,
            promotion_wait_ns: lease_ns + lease_ns / 2,
            factor: 1,
        }
    }
}

/// The longest lease (the default).
const LEASE_NS_MAX: u64 = 50_000_000;

/// Room for the payload of one replication datagram.
pub(super) const PAYLOAD_BYTES_MAX: usize = DATAGRAM_BYTES_MAX - PEER_HEADER_BYTES - MAC_BYTES;

/// Records a primary holds past its commit point (per partition) before new writes get BUSY;
/// as many again before it for learners.
pub(super) const TAIL_RECORDS_MAX: usize = 4096;

/// Replies held for their commit at once; more requests get BUSY.
const HELD_MAX: usize = 8192;

/// The largest key + value a replicated write may carry (its record fits one datagram, with
/// item metadata too: a later TOUCH or INCR forwards the value with it).
pub(crate) const REPLICATED_VALUE_BYTES_MAX: usize =
    PAYLOAD_BYTES_MAX - FORWARD_HEADER_BYTES - RECORD_HEADER_BYTES - RECORD_META_BYTES;

/// A replica's identity in the node-to-node envelope: its core's address.
pub(crate) fn peer_id(addr: SocketAddr) -> u64 {
    match addr {
        SocketAddr::V4(v4) => u64::from(u32::from(*v4.ip())) << 16 | u64::from(v4.port()),
        SocketAddr::V6(v6) => {
            let h = blake3::hash(&[&v6.ip().octets()[..], &v6.port().to_le_bytes()].concat());
            u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes")) | 1 << 63
        }
    }
}

/// This core's side of the node-to-node traffic.
#[derive(Debug)]
pub(crate) struct PeerLink {
    pub(super) config: ReplicationConfig,
    sealer: PeerSealer,
    opener: PeerOpener,
    sealed: Vec<u8>,
    pub(super) payload: Vec<u8>,
}

impl PeerLink {
    pub(crate) fn new(config: ReplicationConfig, me: SocketAddr, incarnation_ns: u64) -> PeerLink {
        PeerLink {
            sealer: PeerSealer::new(config.key.clone(), peer_id(me), incarnation_ns),
            opener: PeerOpener::new(config.key.clone(), peer_id(me)),
            config,
            sealed: Vec::with_capacity(DATAGRAM_BYTES_MAX),
            payload: Vec::with_capacity(DATAGRAM_BYTES_MAX),
        }
    }

    /// How long the backups' acks keep a primary serving.
    pub(crate) fn lease_ns(&self) -> u64 {
        self.config.lease_ns
    }

    /// Seals `self.payload` for `to` and sends it.
    pub(super) fn send(&mut self, wall_ns: u64, to: SocketAddr, tx: &mut dyn Transmit) {
        let payload = &self.payload;
        self.sealer.seal(peer_id(to), PeerKind::Replication, wall_ns, payload, &mut self.sealed);
        tx.send(to, &self.sealed);
    }
}

/// Another replica, as a primary tracks it.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) addr: SocketAddr,
    /// Holds every write through this LSN durably (its acks).
    pub(super) acked: u64,
    /// Forwarded through this LSN (resent from `acked` after `resend_ns` without progress).
    pub(super) sent: u64,
    /// The newest send time (the primary's wall clock) of a forward it acked: the lease.
    echo_ns: u64,
    /// When something was last sent to it (probes are paced by it).
    last_send_ns: u64,
    /// When records last went to it or its acks last advanced: unacked records are sent
    /// again `resend_ns` after this (heartbeats do not count, or they would starve resends:
    /// found by the simulation as writes held for good behind one lost forward).
    pub(super) progress_ns: u64,
    /// Its LSN as its probe answer said (becoming primary), if it answered.
    reported: Option<u64>,
    /// Its probe answer's bound on its last ack to a primary, on this core's clock: it has
    /// acked none since (it takes no forward from an old primary once it answers).
    quiet_from_ns: u64,
    /// A learner being built (none: an in-sync backup, which the commit point and the lease
    /// wait for; a learner counts for neither).
    pub(super) catchup: Option<Box<super::catchup::Catchup>>,
}

impl Peer {
    pub(super) fn new(addr: SocketAddr, acked: u64) -> Peer {
        Peer {
            addr,
            acked,
            sent: acked,
            echo_ns: 0,
            last_send_ns: 0,
            progress_ns: 0,
            reported: None,
            quiet_from_ns: 0,
            catchup: None,
        }
    }

    /// Whether the commit point and the lease wait for it.
    fn in_sync(&self) -> bool {
        self.catchup.is_none()
    }

    /// Whether the commit point waits for it: in sync, or a learner joining.
    fn counts_for_commit(&self) -> bool {
        self.catchup.as_deref().is_none_or(super::catchup::Catchup::joining)
    }
}

/// What the endpoint is to its partition.
#[derive(Debug)]
pub(super) enum Part {
    Primary {
        /// The in-sync backups, then the learners.
        peers: Vec<Peer>,
        /// Still finding out what the backups hold (see the module comment).
        probing: bool,
        /// Serves from this time on (after probing: the old primary's lease has run out).
        serving_from_ns: u64,
        last_heartbeat_ns: u64,
    },
    Backup {
        primary: SocketAddr,
    },
    /// Being built from its primary (see `core::catchup`).
    Learner(Box<super::catchup::Building>),
}

/// A PROBE for a map epoch this core does not have yet.
#[derive(Debug)]
pub(crate) struct EarlyProbe {
    from: SocketAddr,
    partition: u32,
    epoch: u64,
    sent_ns: u64,
    first: u64,
}

/// Early probes kept at once (a new primary resends the others).
const EARLY_PROBES_MAX: usize = 1024;

/// A replicated endpoint's replication state.
#[derive(Debug)]
pub(crate) struct ReplicaState {
    pub(super) part: Part,
    /// Encoded records after the commit point, oldest first: what a primary may have to send
    /// again (to a learner: from what it acked), and what a backup may have to hand a new
    /// primary.
    pub(super) tail: VecDeque<(u64, Vec<u8>)>,
    /// Held by every in-sync replica.
    pub(super) committed: u64,
    /// Held by this replica under the class (its own store).
    pub(super) durable: u64,
    /// A backup: the newest send time of its primary's forwards (echoed by its acks).
    pub(super) last_echo: u64,
    /// A backup: the durable LSN its last ack said.
    pub(super) reported: u64,
    /// When (this core's loop clock) it last acked a primary's forward: a primary's lease
    /// needs its backups' acks, so a new primary learns from this how soon the old one's
    /// lease has run out (see `Peer::quiet_from_ns`). Kept across map changes.
    pub(super) acked_ns: u64,
}

impl ReplicaState {
    /// Whether this replica may serve its partition now: a primary done probing, its
    /// promotion wait over (`now_ns`, the loop's clock), its lease valid (echoes are of
    /// wall-clock send times, see `forward`).
    fn may_serve(&self, now_ns: u64, wall_ns: u64, lease_ns: u64) -> bool {
        let Part::Primary { peers, probing, serving_from_ns, .. } = &self.part else {
            return false;
        };
        let leased = peers
            .iter()
            .filter(|p| p.in_sync())
            .all(|p| p.echo_ns.saturating_add(lease_ns) > wall_ns);
        !*probing && now_ns >= *serving_from_ns && leased
    }

    /// A backup or learner heard its primary's FORWARD sent at `sent_ns`: committed through
    /// `committed` (of what it holds), which its tail need no longer keep.
    pub(super) fn heard_from_primary(&mut self, committed: u64, sent_ns: u64) {
        self.committed = self.committed.max(committed);
        let c = self.committed;
        while self.tail.front().is_some_and(|(lsn, _)| *lsn <= c) {
            self.tail.pop_front();
        }
        self.last_echo = self.last_echo.max(sent_ns);
    }

    /// A learner (being built).
    pub(super) fn is_learner(&self) -> bool {
        matches!(self.part, Part::Learner(_))
    }

    /// An in-sync backup.
    pub(super) fn is_backup(&self) -> bool {
        matches!(self.part, Part::Backup { .. })
    }

    /// A primary without an in-sync backup.
    fn alone(&self) -> bool {
        matches!(&self.part, Part::Primary { peers, .. } if !peers.iter().any(Peer::in_sync))
    }

    /// A learner's catch-up state.
    pub(super) fn building(&mut self) -> Option<&mut super::catchup::Building> {
        match &mut self.part {
            Part::Learner(b) => Some(b),
            _ => None,
        }
    }

    pub(super) fn recompute_committed(&mut self) {
        let Part::Primary { peers, probing: false, .. } = &self.part else { return };
        let counted = peers.iter().filter(|p| p.counts_for_commit());
        let acked = counted.map(|p| p.acked).min().unwrap_or(u64::MAX);
        let committed = self.durable.min(acked).max(self.committed);
        // Learners may still need what the backups hold: the tail keeps it for them, up to
        // `TAIL_RECORDS_MAX` records past the commit point (one further behind starts over).
        let learners = peers.iter().filter(|p| !p.in_sync()).map(|p| p.acked).min();
        let floor = committed.saturating_sub(TAIL_RECORDS_MAX as u64);
        let keep_from = learners.map_or(committed, |l| l.clamp(floor, committed));
        self.committed = committed;
        while self.tail.front().is_some_and(|(lsn, _)| *lsn <= keep_from) {
            self.tail.pop_front();
        }
    }
}

/// Replies to one datagram, held until what they observed is committed.
#[derive(Debug)]
pub(crate) struct Held {
    /// (slot, LSN) that must be committed first.
    needs: Vec<(usize, u64)>,
    datagrams: Vec<(SocketAddr, Vec<u8>)>,
}

/// Collects the replies to one datagram (replicated primaries hold them).
#[derive(Debug, Default)]
pub(crate) struct Capture {
    datagrams: Vec<(SocketAddr, Vec<u8>)>,
}

impl Transmit for Capture {
    fn send(&mut self, peer: SocketAddr, datagram: &[u8]) -> bool {
        self.datagrams.push((peer, datagram.to_vec()));
        true
    }
}

/// Whether a read of `endpoint` outside the cradle protocol's held replies (a protocol door)
/// may be answered now: not replicated, or a primary that may serve (no probing, its
/// promotion wait over, its lease valid) with nothing uncommitted a read could observe.
pub(super) fn reads_committed_now(
    endpoint: &Endpoint,
    now_ns: u64,
    wall_ns: u64,
    lease_ns: u64,
) -> bool {
    endpoint.replica.as_deref().is_none_or(|replica| {
        replica.may_serve(now_ns, wall_ns, lease_ns)
            && replica.committed >= endpoint.store.last_lsn()
    })
}

/// Whether `endpoint` is a primary with backups (its records must fit a forward).
pub(super) fn has_backups(endpoint: &Endpoint) -> bool {
    matches!(endpoint.replica.as_deref(), Some(ReplicaState { part: Part::Primary { peers, .. }, .. }) if !peers.is_empty())
}

/// Whether `endpoint` is a primary without an in-sync backup, in a cluster whose replication
/// factor `factor` is above 1: in the `memory` class its writes commit only once flushed.
pub(super) fn commits_on_own_flush(endpoint: &Endpoint, factor: usize) -> bool {
    factor > 1 && endpoint.replica.as_deref().is_some_and(ReplicaState::alone)
}

/// `endpoint`'s store is durable through its last LSN (a flush succeeded).
pub(super) fn note_flushed(endpoint: &mut Endpoint) {
    if let Some(replica) = endpoint.replica.as_deref_mut() {
        replica.durable = endpoint.store.last_lsn();
        replica.recompute_committed();
    }
}

/// The replication state the map gives the endpoint of `entry` on the core at `me`, from
/// its state before (`old`) and its store's LSN; none outside a cluster (`clustered` false)
/// or where the map does not place the partition on this core.
/// In a cluster every primary has one, even without backups: an endpoint that was not primary
/// must wait out a lease another may still hold (found by the simulation: a backup promoted
/// to sole replica served at once, while the cut-off old primary still answered reads), and
/// its replies wait for its own durability like any committed point.
/// A learner's state says whether its store must be emptied first (`Building::ready`).
pub(crate) fn state_for(
    entry: &proto::MapEntry,
    me: SocketAddr,
    old: Option<Box<ReplicaState>>,
    last_lsn: u64,
    now_ns: u64,
    clustered: bool,
) -> Option<Box<ReplicaState>> {
    if !clustered {
        return None;
    }
    let role = entry.role_of(me);
    // (Without a state before, this life of the core acked no primary for this partition
    // since it was last named: 0, "at the loop clock's start", bounds it.)
    let (tail, committed, acked_ns, old_part) = match old {
        Some(old) => (old.tail, old.committed, old.acked_ns, Some(old.part)),
        None => (VecDeque::new(), 0, 0, None),
    };
    let state = |part, tail, committed| {
        Some(Box::new(ReplicaState {
            part,
            tail,
            committed,
            durable: last_lsn,
            last_echo: 0,
            reported: 0,
            acked_ns,
        }))
    };
    if entry.addr == me {
        let (mut old_peers, was) = match old_part {
            Some(Part::Primary { peers, probing, serving_from_ns, last_heartbeat_ns }) => {
                (peers, Some((probing, serving_from_ns, last_heartbeat_ns)))
            }
            _ => (Vec::new(), None),
        };
        let mut take = |addr: SocketAddr| {
            old_peers.iter().position(|p| p.addr == addr).map(|i| old_peers.swap_remove(i))
        };
        // Backups it knew stay as they were; a learner it built (whose acks its commits
        // already wait for) joins the in-sync set; any other backup is probed like at a
        // promotion.
        let mut peers = Vec::new();
        let mut all_known = true;
        for addr in entry.backups() {
            match take(addr) {
                Some(p) if p.in_sync() => peers.push(p),
                Some(mut p)
                    if p.catchup.as_deref().is_some_and(super::catchup::Catchup::joining) =>
                {
                    p.catchup = None;
                    peers.push(p);
                }
                _ => {
                    all_known = false;
                    peers.push(Peer::new(addr, committed));
                }
            }
        }
        for r in entry.replicas.iter().filter(|r| r.role == Role::Learner) {
            match take(r.addr) {
                Some(p) if !p.in_sync() && was.is_some() => peers.push(p),
                _ => peers.push(super::catchup::learner_peer(r.addr)),
            }
        }
        let part = match was {
            Some((probing, serving_from_ns, last_heartbeat_ns)) => Part::Primary {
                peers,
                probing: probing || !all_known,
                serving_from_ns,
                last_heartbeat_ns,
            },
            None => Part::Primary {
                peers,
                probing: true,
                serving_from_ns: u64::MAX,
                last_heartbeat_ns: now_ns,
            },
        };
        let mut state = state(part, tail, committed)?;
        if was.is_some() {
            state.recompute_committed();
        }
        return Some(state);
    }
    match role {
        Some(Role::Backup) => match old_part {
            // A learner it was built into: a backup from now on.
            Some(Part::Learner(b)) if b.primary() == entry.addr && b.consistent() => {
                state(Part::Backup { primary: entry.addr }, tail, committed)
            }
            // (One the map names a backup before it was built stays a learner: it must not
            // ack what it does not hold.)
            Some(Part::Learner(b)) if b.primary() == entry.addr => {
                state(Part::Learner(b), tail, committed)
            }
            Some(Part::Learner(_)) => None,
            _ => state(Part::Backup { primary: entry.addr }, tail, committed),
        },
        Some(Role::Learner) => match old_part {
            Some(Part::Learner(b)) if b.primary() == entry.addr => {
                state(Part::Learner(b), tail, committed)
            }
            // A new learner holds nothing it may keep.
            _ => state(
                Part::Learner(Box::new(super::catchup::Building::new(entry.addr))),
                VecDeque::new(),
                0,
            ),
        },
        None => None,
    }
}

/// A forwarded record's stamp and effect, as a replica's store applies them.
pub(super) fn decoded<'a>(r: &WriteRecord<'a>) -> (Stamp, Applied<'a>) {
    let stamp = Stamp {
        client_id: r.client_id,
        tracking_id: r.tracking_id,
        fingerprint: r.fingerprint,
        at_ns: r.at_ns,
    };
    let applied = match r.op {
        WriteOp::Put => Applied::Put { key: r.key, value: r.value, meta: meta_of(r) },
        WriteOp::Delete => Applied::Delete { key: r.key },
        WriteOp::Note => {
            let (status, version) = storage::parse_note(r.value).expect("checked by proto");
            Applied::Note { key: r.key, status, version }
        }
        WriteOp::Digest => unreachable!("a digest is a snapshot's only (`is_write`)"),
    };
    (stamp, applied)
}

/// Whether a record received as a write is one (a digest only belongs in a snapshot).
pub(super) fn is_write(r: &WriteRecord<'_>) -> bool {
    r.op != WriteOp::Digest
}

/// A forwarded put's item flags and expiry.
pub(super) fn meta_of(r: &WriteRecord<'_>) -> storage::Meta {
    storage::Meta { flags: r.item_flags, expires_at_ns: r.expires_at_ns }
}

/// After a replica applied forwarded record `r`: its completion record (a resend of the
/// write after a failover is answered as the primary answered it: a put with its LSN, a
/// delete with version 0) and its place in the replica's tail.
pub(super) fn remember(
    completions: &mut crate::completions::Completions,
    tail: &mut VecDeque<(u64, Vec<u8>)>,
    now_ns: u64,
    r: &WriteRecord<'_>,
) {
    let id = (r.client_id, r.tracking_id);
    // (A delete is answered version 0, a note as its primary answered it.)
    let (status, version) = match decoded(r).1 {
        Applied::Put { .. } => (Status::Ok, r.lsn),
        Applied::Delete { .. } => (Status::Ok, 0),
        Applied::Note { status, version, .. } => (crate::completions::noted(status), version),
    };
    if completions.get(id).is_none() && completions.has_room(now_ns) {
        let done = crate::completions::Record { status, version, fingerprint: r.fingerprint };
        completions.insert(now_ns, id, done);
    }
    let mut bytes = Vec::with_capacity(r.len());
    r.encode(&mut bytes);
    tail.push_back((r.lsn, bytes));
}

impl Core {
    /// Whether a replicated primary may serve now; the status to answer if not.
    pub(super) fn replica_gate(&mut self, slot: usize, now_ns: u64) -> Option<Status> {
        let lease_ns = self.link.as_ref()?.config.lease_ns;
        let wall = self.wall_ns();
        let replica = self.endpoints[slot].replica.as_deref()?;
        // (Routes send clients only to primaries: a backup here answers BUSY too.)
        if !replica.may_serve(now_ns, wall, lease_ns) || self.held.len() >= HELD_MAX {
            self.counters.busy += 1;
            self.counters.replica_not_serving += 1;
            return Some(Status::Busy);
        }
        let uncommitted = self.endpoints[slot].store.last_lsn().saturating_sub(replica.committed);
        if uncommitted >= TAIL_RECORDS_MAX as u64 {
            self.counters.busy += 1;
            return Some(Status::Busy);
        }
        self.touched.push(slot);
        None
    }

    /// A write the primary applied at `lsn`: into its tail, to be forwarded at the batch's end.
    pub(super) fn record_applied(
        &mut self,
        slot: usize,
        lsn: u64,
        write: Applied<'_>,
        stamp: &Stamp,
    ) {
        let Some(replica) = self.endpoints[slot].replica.as_deref_mut() else { return };
        let answer;
        let (op, key, value, meta) = match write {
            Applied::Put { key, value, meta } => (WriteOp::Put, key, value, meta),
            Applied::Delete { key } => (WriteOp::Delete, key, &[][..], storage::Meta::NONE),
            Applied::Note { key, status, version } => {
                answer = storage::note_payload(status, version);
                (WriteOp::Note, key, &answer[..], storage::Meta::NONE)
            }
        };
        let record = WriteRecord {
            lsn,
            op,
            client_id: stamp.client_id,
            tracking_id: stamp.tracking_id,
            fingerprint: stamp.fingerprint,
            at_ns: stamp.at_ns,
            key,
            value,
            item_flags: meta.flags,
            expires_at_ns: meta.expires_at_ns,
        };
        let mut bytes = Vec::with_capacity(record.len());
        record.encode(&mut bytes);
        replica.tail.push_back((lsn, bytes));
        let factor = self.link.as_ref().map_or(1, |l| l.config.factor);
        if self.durability == Durability::Memory && !(factor > 1 && replica.alone()) {
            // In the file already, and in an in-sync backup's memory once it acks: that is
            // the class. A primary alone commits on its flush (`flush_lone_primaries`).
            replica.durable = lsn;
            replica.recompute_committed();
        }
        if !self.forward_due.contains(&slot) {
            self.forward_due.push(slot);
        }
    }

    /// Sends the replies to one datagram now, or holds them until what they observed (the
    /// LSN of each replicated primary the datagram touched) is committed.
    pub(super) fn send_or_hold(&mut self, mut capture: Capture, tx: &mut dyn Transmit) {
        let mut needs = Vec::new();
        for slot in self.touched.drain(..) {
            let endpoint = &self.endpoints[slot];
            let lsn = endpoint.store.last_lsn();
            let committed = endpoint.replica.as_deref().map_or(u64::MAX, |r| r.committed);
            if lsn > committed && !needs.iter().any(|&(s, _)| s == slot) {
                needs.push((slot, lsn));
            }
        }
        if needs.is_empty() {
            for (peer, bytes) in capture.datagrams.drain(..) {
                tx.send(peer, &bytes);
            }
        } else {
            self.held.push(Held { needs, datagrams: std::mem::take(&mut capture.datagrams) });
        }
        self.capture = capture;
    }

    /// Sends every held reply whose needs are now committed.
    fn release_held(&mut self, tx: &mut dyn Transmit) {
        let endpoints = &self.endpoints;
        let ready = |held: &Held| {
            held.needs.iter().all(|&(slot, lsn)| {
                endpoints[slot].replica.as_deref().is_none_or(|r| r.committed >= lsn)
            })
        };
        let mut i = 0;
        while i < self.held.len() {
            if ready(&self.held[i]) {
                let held = self.held.remove(i);
                for (peer, bytes) in held.datagrams {
                    tx.send(peer, &bytes);
                    self.replies.datagrams += 1;
                }
            } else {
                i += 1;
            }
        }
    }

    /// A node-to-node datagram: authenticated before anything reads its payload.
    pub(super) fn handle_peer(&mut self, from: SocketAddr, datagram: &[u8], tx: &mut dyn Transmit) {
        let wall = self.wall_ns();
        let Some(link) = self.link.as_mut() else {
            self.counters.dropped_malformed += 1; // (not a protocol this core speaks)
            return;
        };
        let payload = match link.opener.open(wall, datagram) {
            Ok(opened) if opened.kind == PeerKind::Replication && opened.from == peer_id(from) => {
                opened.payload.to_vec()
            }
            Ok(_) => {
                self.counters.dropped_malformed += 1;
                return;
            }
            Err(crate::peer::Refused::Unauthenticated) => {
                self.counters.dropped_unauthenticated += 1;
                return;
            }
            Err(_) => {
                self.counters.dropped_replayed += 1;
                return;
            }
        };
        let Ok(message) = Replication::decode(&payload) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        match message {
            Replication::Forward { partition, epoch, sent_ns, committed, records } => {
                self.on_forward(from, partition, epoch, sent_ns, committed, records, false, tx)
            }
            Replication::Pulled { partition, epoch, records, .. } => {
                self.on_forward(from, partition, epoch, 0, 0, records, true, tx)
            }
            Replication::Ack { partition, echo_ns, lsn, quiet_ns, .. } => {
                self.on_ack(from, partition, echo_ns, lsn, quiet_ns)
            }
            Replication::Probe { partition, epoch, sent_ns, from: first } => {
                self.on_probe(from, partition, epoch, sent_ns, first, tx)
            }
            Replication::Snapshot {
                partition,
                epoch,
                generation,
                base,
                first,
                next,
                last,
                own_log,
                records,
            } => {
                let range = (first, next, last, own_log);
                self.on_snapshot(from, partition, epoch, generation, base, range, records, tx)
            }
            Replication::Built { partition, progress, .. } => {
                self.on_built(from, partition, &progress)
            }
        }
        self.release_held(tx);
    }

    /// Records from a primary (or, `pulled`, from a backup this primary probed): applied in
    /// LSN order, each with its completion record.
    #[allow(clippy::too_many_arguments)]
    fn on_forward(
        &mut self,
        from: SocketAddr,
        partition: u32,
        epoch: u64,
        sent_ns: u64,
        committed: u64,
        records: proto::replication::Records<'_>,
        pulled: bool,
        tx: &mut dyn Transmit,
    ) {
        let Some(slot) = self.all_slots.get(partition) else { return };
        let now_ns = self.now_ns;
        let endpoint = &mut self.endpoints[slot];
        let Some(replica) = endpoint.replica.as_deref_mut() else { return };
        let accepted = match &replica.part {
            Part::Backup { primary } => !pulled && *primary == from && epoch <= self.routes.epoch(),
            Part::Primary { probing, peers, .. } => {
                pulled && *probing && peers.iter().any(|p| p.addr == from && p.in_sync())
            }
            Part::Learner(b) => !pulled && b.primary() == from && epoch <= self.routes.epoch(),
        };
        if !accepted {
            self.counters.replication_refused += 1;
            return;
        }
        if matches!(replica.part, Part::Learner(_)) {
            return self.learner_forward(slot, (sent_ns, committed), records, tx);
        }
        let store = &mut endpoint.store;
        for record in records {
            let Some(r) = record.ok().filter(is_write) else {
                self.counters.dropped_malformed += 1;
                break;
            };
            let last = store.last_lsn();
            if r.lsn <= last {
                continue; // had it
            }
            if r.lsn > last + 1 {
                break; // a gap: the resend fills it
            }
            let (stamp, applied) = decoded(&r);
            let keys_before = store.len() as u64;
            self.read_cache.forget(slot, r.key);
            let result = store.apply_at(&mut self.shelf, r.lsn, applied, Some(&stamp));
            let result = match result {
                Ok(_) if self.durability == Durability::Memory => store.write_out(&mut self.shelf),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            if result.is_err() {
                break; // the store is stopped: it acks nothing more, its primary notices
            }
            self.counters.keys = self.counters.keys + store.len() as u64 - keys_before;
            self.counters.replicated_records += 1;
            remember(&mut self.completions, &mut replica.tail, now_ns, &r);
            if self.durability == Durability::Memory {
                replica.durable = r.lsn;
            }
        }
        if store.needs_flush() && !endpoint.dirty {
            endpoint.dirty = true;
            self.dirty.push(slot);
        }
        if pulled {
            self.last_replica_scan_ns = 0; // (as for a probe's answer)
            return;
        }
        replica.heard_from_primary(committed.min(store.last_lsn()), sent_ns);
        if !self.acks_due.contains(&slot) {
            self.acks_due.push(slot);
        }
    }

    /// A backup's ack (while probing: its probe answer, which says how long ago it last
    /// acked a primary): its LSN and the send time it echoes.
    fn on_ack(&mut self, from: SocketAddr, partition: u32, echo_ns: u64, lsn: u64, quiet_ns: u64) {
        let Some(slot) = self.all_slots.get(partition) else { return };
        let now_ns = self.now_ns;
        let last = self.endpoints[slot].store.last_lsn();
        let Some(replica) = self.endpoints[slot].replica.as_deref_mut() else { return };
        let Part::Primary { peers, probing, .. } = &mut replica.part else { return };
        let Some(peer) = peers.iter_mut().find(|p| p.addr == from) else { return };
        if *probing {
            // While probing, an ack answers a probe: its LSN is what the backup holds. It was
            // sent before now, so its last ack to a primary was before `now − quiet`. It
            // renews no lease: only acks of forwards do, which are what the backup's
            // `acked_ns` (and so a later primary's wait) counts.
            peer.reported = Some(lsn);
            peer.quiet_from_ns = now_ns.saturating_sub(quiet_ns);
            self.last_replica_scan_ns = 0; // (the promotion may go on at this batch's end)
        } else {
            if lsn <= last {
                if lsn > peer.acked {
                    peer.acked = lsn;
                    peer.progress_ns = now_ns;
                }
                peer.sent = peer.sent.max(lsn);
            }
            peer.echo_ns = peer.echo_ns.max(echo_ns);
        }
        replica.recompute_committed();
    }

    /// A new primary asks for this backup's LSN, or for its records from `first` on.
    fn on_probe(
        &mut self,
        from: SocketAddr,
        partition: u32,
        epoch: u64,
        sent_ns: u64,
        first: u64,
        tx: &mut dyn Transmit,
    ) {
        let my_epoch = self.routes.epoch();
        if epoch > my_epoch {
            // Its map is on the way (the asker's agent and this one install it about at
            // once): answered when it lands.
            let probe = EarlyProbe { from, partition, epoch, sent_ns, first };
            let same = |p: &EarlyProbe| p.from == from && p.partition == partition;
            let kept = &mut self.early_probes;
            match kept.iter().position(same) {
                Some(i) => kept[i] = probe,
                None if kept.len() < EARLY_PROBES_MAX => kept.push(probe),
                None => {}
            }
            return;
        }
        let Some(slot) = self.all_slots.get(partition) else { return };
        let wall = self.wall_ns();
        let endpoint = &self.endpoints[slot];
        let Some(replica) = endpoint.replica.as_deref() else { return };
        // Only once this core's map names the asker primary: from then on it takes nothing
        // from the old one.
        let Part::Backup { primary } = &replica.part else { return };
        if *primary != from {
            return;
        }
        let link = self.link.as_mut().expect("replicated endpoints have a link");
        link.payload.clear();
        if first == 0 {
            let quiet_ns = self.now_ns.saturating_sub(replica.acked_ns);
            let lsn = endpoint.store.last_lsn();
            encode_ack(&mut link.payload, partition, my_epoch, sent_ns, lsn, quiet_ns);
        } else {
            encode_forward_header(&mut link.payload, true, partition, my_epoch, sent_ns, 0, 0);
            let mut count = 0u16;
            for (lsn, bytes) in &replica.tail {
                if *lsn < first {
                    continue;
                }
                if link.payload.len() + bytes.len() > PAYLOAD_BYTES_MAX {
                    break;
                }
                link.payload.extend_from_slice(bytes);
                count += 1;
            }
            set_forward_count(&mut link.payload, count);
        }
        link.send(wall, from, tx);
    }

    /// After a map change: the probes that came before it, answered if it is the map they
    /// wanted (a later one may still be on the way: those wait on).
    pub(super) fn answer_early_probes(&mut self, tx: &mut dyn Transmit) {
        let epoch = self.routes.epoch();
        if self.early_probes.iter().all(|p| p.epoch > epoch) {
            return;
        }
        for p in std::mem::take(&mut self.early_probes) {
            self.on_probe(p.from, p.partition, p.epoch, p.sent_ns, p.first, tx);
        }
    }

    /// The batch's replication work before its group commit: new records go out now, so the
    /// backups' flushes overlap the primary's; acks go out now too, so the lease they renew
    /// does not wait for this replica's flush (those that the flush advances go again after).
    pub(super) fn replicate_before_commit(&mut self, now_ns: u64, tx: &mut dyn Transmit) {
        if self.link.is_none() {
            return;
        }
        let due: Vec<usize> = std::mem::take(&mut self.forward_due);
        for slot in due {
            self.forward(slot, now_ns, false, tx);
        }
        let mut acks = std::mem::take(&mut self.acks_due);
        for &slot in &acks {
            self.send_ack(slot, tx);
        }
        // Those with writes still to flush are acked again once the flush made them durable.
        acks.retain(|&slot| {
            let endpoint = &self.endpoints[slot];
            endpoint.replica.as_deref().is_some_and(|r| r.durable < endpoint.store.last_lsn())
        });
        self.acks_due = acks;
    }

    /// The rest, after the group commit: acks the flush advanced, replies it committed, and,
    /// every so often, heartbeats, resends and the probing of new primaries.
    pub(super) fn replicate(&mut self, now_ns: u64, tx: &mut dyn Transmit) {
        if self.link.is_none() {
            return;
        }
        for slot in std::mem::take(&mut self.acks_due) {
            let advanced =
                self.endpoints[slot].replica.as_deref().is_some_and(|r| r.durable > r.reported);
            if advanced {
                self.send_ack(slot, tx);
            }
        }
        self.release_held(tx); // (a flush may have committed some)
        let heartbeat_ns = self.link.as_ref().expect("checked").config.heartbeat_ns;
        if now_ns.saturating_sub(self.last_replica_scan_ns) < heartbeat_ns / 2 {
            return;
        }
        self.scan_replicas(now_ns, tx);
    }

    /// Every replicated endpoint's upkeep (see `upkeep`); at least every half heartbeat, and
    /// at once where a promotion waits for it (a map change, a probe answered).
    pub(super) fn scan_replicas(&mut self, now_ns: u64, tx: &mut dyn Transmit) {
        self.last_replica_scan_ns = now_ns;
        for i in 0..self.replicated.len() {
            let slot = self.replicated[i];
            self.upkeep(slot, now_ns, tx);
        }
        self.publish_lag();
    }

    /// Publishes which replicas this core's primaries wait for (every heartbeat scan).
    pub(super) fn publish_lag(&mut self) {
        let mut lagging = Vec::new();
        for &slot in &self.replicated {
            let endpoint = &self.endpoints[slot];
            let Some(ReplicaState { part: Part::Primary { peers, .. }, .. }) =
                endpoint.replica.as_deref()
            else {
                continue;
            };
            let last = endpoint.store.last_lsn();
            for peer in peers.iter().filter(|p| p.acked < last) {
                lagging.push((endpoint.partition, peer.addr, last - peer.acked));
            }
        }
        self.stats.publish_lag(self.config.core, &mut lagging);
    }

    fn send_ack(&mut self, slot: usize, tx: &mut dyn Transmit) {
        let wall = self.wall_ns();
        let epoch = self.routes.epoch();
        let endpoint = &mut self.endpoints[slot];
        let partition = endpoint.partition;
        let Some(replica) = endpoint.replica.as_deref_mut() else { return };
        if matches!(replica.part, Part::Learner(_)) {
            return self.send_built(slot, tx);
        }
        let Part::Backup { primary } = replica.part else { return };
        replica.reported = replica.durable;
        replica.acked_ns = self.now_ns;
        let link = self.link.as_mut().expect("replicated endpoints have a link");
        link.payload.clear();
        encode_ack(&mut link.payload, partition, epoch, replica.last_echo, replica.durable, 0);
        link.send(wall, primary, tx);
    }

    /// Sends each peer the records it has not been sent (`again`: from what it acked).
    fn forward(&mut self, slot: usize, now_ns: u64, heartbeat: bool, tx: &mut dyn Transmit) {
        let wall = self.wall_ns();
        let epoch = self.routes.epoch();
        let resend_ns = self.link.as_ref().expect("replicated").config.resend_ns;
        let endpoint = &mut self.endpoints[slot];
        let partition = endpoint.partition;
        let last = endpoint.store.last_lsn();
        let Some(replica) = endpoint.replica.as_deref_mut() else { return };
        let committed = replica.committed;
        let Part::Primary { peers, probing: false, last_heartbeat_ns, .. } = &mut replica.part
        else {
            return;
        };
        let link = self.link.as_mut().expect("replicated");
        for peer in peers.iter_mut() {
            if peer.catchup.as_deref().is_some_and(|c| !c.started()) {
                continue; // (its forwards start with its catch-up, at its base)
            }
            let stalled = peer.acked < peer.sent && now_ns >= peer.progress_ns + resend_ns;
            if stalled {
                peer.sent = peer.acked; // send again what it has not acked
            }
            if peer.sent >= last && !heartbeat && !stalled {
                continue;
            }
            // One datagram at least (a heartbeat when there is nothing new), then as many as
            // the new records need.
            loop {
                link.payload.clear();
                // Sent at the wall clock, not the loop's: an echo of a previous life of this
                // core (whose loop clock started over) must not read as a recent one.
                encode_forward_header(
                    &mut link.payload,
                    false,
                    partition,
                    epoch,
                    wall,
                    committed,
                    0,
                );
                let mut count = 0u16;
                for (lsn, bytes) in &replica.tail {
                    if *lsn <= peer.sent {
                        continue;
                    }
                    if link.payload.len() + bytes.len() > PAYLOAD_BYTES_MAX {
                        break;
                    }
                    link.payload.extend_from_slice(bytes);
                    peer.sent = *lsn;
                    count += 1;
                }
                if peer.sent < last
                    && count == 0
                    && replica.tail.front().is_none_or(|f| f.0 > peer.sent + 1)
                {
                    // What it lacks is no longer in memory: a learner starts over (a new
                    // snapshot), a backup needs a catch-up from the store (not yet).
                    self.counters.replica_behind += 1;
                    if let Some(catchup) = peer.catchup.as_deref_mut() {
                        catchup.restart();
                        break;
                    }
                }
                set_forward_count(&mut link.payload, count);
                link.send(wall, peer.addr, tx);
                self.counters.forwarded_records += u64::from(count);
                peer.last_send_ns = now_ns;
                if count > 0 {
                    peer.progress_ns = now_ns;
                }
                if count == 0 || peer.sent >= last {
                    break;
                }
            }
        }
        *last_heartbeat_ns = now_ns;
    }

    /// Heartbeats and resends of a primary; the probing of a new one.
    fn upkeep(&mut self, slot: usize, now_ns: u64, tx: &mut dyn Transmit) {
        let link = self.link.as_ref().expect("replicated");
        let (heartbeat_ns, resend_ns, wait_ns) =
            (link.config.heartbeat_ns, link.config.resend_ns, link.config.promotion_wait_ns);
        let wall = self.wall_ns();
        let epoch = self.routes.epoch();
        let endpoint = &mut self.endpoints[slot];
        let partition = endpoint.partition;
        let last = endpoint.store.last_lsn();
        let Some(replica) = endpoint.replica.as_deref_mut() else { return };
        if replica.is_learner() {
            return self.tell_primary(slot, now_ns, tx);
        }
        let Part::Primary { peers, probing, serving_from_ns, last_heartbeat_ns } =
            &mut replica.part
        else {
            return;
        };
        if !*probing {
            let stalled =
                peers.iter().any(|p| p.acked < p.sent && now_ns >= p.progress_ns + resend_ns);
            let quiet = now_ns >= *last_heartbeat_ns + heartbeat_ns;
            let learners = peers.iter().any(|p| !p.in_sync());
            if stalled || quiet {
                self.forward(slot, now_ns, quiet, tx);
            }
            if learners {
                self.catch_up(slot, now_ns, tx);
            }
            return;
        }
        // Probing: every backup's LSN, then the records the highest holds beyond ours.
        let link = self.link.as_mut().expect("replicated");
        let answered = peers.iter().filter(|p| p.in_sync()).all(|p| p.reported.is_some());
        let highest = peers.iter().filter_map(|p| p.reported).max().unwrap_or(0);
        if answered && last >= highest {
            // The old primary's lease needed acks of these replicas (this one too, if it was
            // a backup), none of which acked it since `quiet`: it has run out `wait_ns`
            // after that (a lease and a margin).
            let mut quiet = replica.acked_ns;
            for peer in peers.iter_mut().filter(|p| p.in_sync()) {
                peer.sent = peer.reported.take().expect("answered");
                peer.acked = peer.acked.min(peer.sent);
                quiet = quiet.max(peer.quiet_from_ns);
            }
            *probing = false;
            *serving_from_ns = quiet + wait_ns;
            *last_heartbeat_ns = 0;
            replica.tail.retain(|(lsn, _)| *lsn <= last);
            replica.recompute_committed();
            self.counters.promotions += 1;
            return self.forward(slot, now_ns, true, tx);
        }
        for peer in peers.iter_mut().filter(|p| p.in_sync()) {
            if now_ns < peer.last_send_ns + resend_ns {
                continue;
            }
            let first = match peer.reported {
                None => 0,
                Some(lsn) if answered && lsn == highest => last + 1,
                Some(_) => continue,
            };
            link.payload.clear();
            encode_probe(&mut link.payload, partition, epoch, wall, first);
            link.send(wall, peer.addr, tx);
            peer.last_send_ns = now_ns;
        }
    }
}
