//! A member node's cluster agent: its seat in the map group (Raft), node-to-node heartbeats,
//! and, on the group's leader, the decisions that change the map: the first placement, and a
//! failover when a node falls silent. Sans-IO like the cores: core 0's loop hands it the
//! node-to-node datagrams of kinds "map group" and "heartbeat" and calls `poll` at each batch
//! boundary; it sends through that loop's port and hands every committed map to each core's
//! inbox (`MapChange`), which the cores take at their own batch boundaries.
//!
//! The map's life cycle, all of it compare-and-set on the epoch through the group:
//! - **placement**: when the group holds no map yet, the leader proposes one: partition p on
//!   core p % cores of every node that holds it, its primary on node p % nodes, its backups on
//!   the next `replicas − 1` nodes (so primaries are spread over nodes and cores);
//! - **failover**: a node the leader has not heard from for `detect_ns` leaves the map: its
//!   replicas are dropped, and where it was primary the first in-sync backup is promoted
//!   (which then probes the others and takes what they hold beyond its own: see
//!   `core::replica`). A node whose removal would leave a partition without a replica stays.
//! - **restart**: a node that starts is *fresh* until the map no longer names it where
//!   another replica could stand in: its heartbeats say so, the leader takes its replicas out
//!   (`shed_member`, a failover where it was primary), and until then its agent hands its
//!   cores no map that names it (its stores may hold what was never committed, or lack what
//!   was, after a power cut). Where it is the only replica left it keeps its place.
//! - **rejoin**: a partition with fewer replicas than the replication factor gets a
//!   *learner* on a live member that holds none of it (the lowest such member), which its
//!   primary builds (`core::catchup`); once the primary reports it built (`MapOutcome::Built`,
//!   relayed in the heartbeats to the leader), the leader makes it a backup.
//!
//! - **health** (`health`): a member whose heartbeats say its hardware is suspect hands its
//!   primaries to backups on healthier members and gets no new replica; one that says it is
//!   failing is drained (learners built elsewhere, then its replicas leave the map), unless
//!   that would leave a partition short of replicas: then the leader holds back and says why.
//!
//! - **join** (`cradle node --join H:P`): a new host asks any member (one that does not lead
//!   relays to the leader); the leader checks it has the cluster's cores, partitions and
//!   replication factor (else it is refused with the reason, which `cradle node` prints and
//!   exits on) and, when no more urgent change waits, admits it: the group's state
//!   (`Committed`) lists the bootstrap members, which are the group's voters, then the nodes
//!   that joined. A joined node holds no seat in the group (the voters stay the bootstrap
//!   list): the leader pushes it the state (`PeerKind::MapPush`) when its heartbeats say it
//!   lags. From then on it is a member like the others for heartbeats, failover, learners
//!   and health; a restarted one asks again and is shed and rebuilt as any restarted member.
//!
//! One change at a time, in that order of urgency. Not yet: the map group's voters are the
//! bootstrap list for good (a dead voter is not replaced), and primaries are not moved back
//! to a node that rejoined.

mod health;

pub use health::{plan as health_plan, Health, MemberState, Plan};

use crate::config::ConfigError;
use crate::core::{MapChange, MapOutcome as CoreOutcome};
use crate::map_group::{MapDisk, MapGroup, ProposalId};
use crate::peer::{ClusterKey, PeerKind, PeerOpener, PeerSealer};
use dataplane::Transmit;
use proto::{partition_range, MapEntry, PartitionMap, Replica, Role};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

/// How a node takes part in its cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Core 0 of each node, in member order (member id = index + 1): the bootstrap members,
    /// then the nodes that joined, in the order the group admitted them (a joiner learns the
    /// list from the map group's state).
    pub members: Vec<SocketAddr>,
    /// How many of `members` (the first ones) are the map group's: the bootstrap members.
    pub voters: usize,
    /// This node's index in `members` (a joiner: once admitted).
    pub me: usize,
    /// A node that joins a running cluster instead of being a bootstrap member.
    pub join: Option<Join>,
    /// Cores per node (the same on every member).
    pub cores: u32,
    /// Partitions of the key space.
    pub partitions: u32,
    /// Replicas per partition (1 to 5, at most the members).
    pub replicas: usize,
    /// The cluster's shared secret.
    pub key: ClusterKey,
    /// Names the cluster in its maps (derived from the key).
    pub cluster_id: u64,
    /// A node silent this long is failed over.
    pub detect_ns: u64,
    /// One tick of the map group's clock (elections take 12 to 29 ticks: see `tick_for`).
    pub tick_ns: u64,
    /// How often members tell each other they live.
    pub heartbeat_ns: u64,
}

/// How a node that is not a bootstrap member joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Join {
    /// Core 0 of a running member (one that does not lead relays the request to the leader).
    pub via: SocketAddr,
    /// This node's core 0.
    pub addr: SocketAddr,
}

impl ClusterSpec {
    /// Checks the spec; the error says what to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.voters;
        if self.join.is_some() {
            // (The members are the group's to say; the leader checks the rest on admission.)
            if self.replicas == 0 || self.replicas > 5 {
                return Err(ConfigError(format!("--replicas {} is not 1 to 5", self.replicas)));
            }
        } else if !(1..=5).contains(&n) || n != self.members.len() {
            return Err(ConfigError(format!("a cluster has 1 to 5 bootstrap members, not {n}")));
        } else if self.me >= n {
            return Err(ConfigError("this node's address is not among the members".into()));
        } else if self.replicas == 0 || self.replicas > n.min(5) {
            return Err(ConfigError(format!(
                "--replicas {} needs as many members ({n} listed; at most 5)",
                self.replicas
            )));
        }
        if self.detect_ns < 5 * self.heartbeat_ns {
            return Err(ConfigError(format!(
                "failing a member over after {} ms of silence would take a few lost heartbeats \
                 (every {} ms) for a death: give at least {} ms",
                self.detect_ns / 1_000_000,
                self.heartbeat_ns / 1_000_000,
                5 * self.heartbeat_ns / 1_000_000
            )));
        }
        if self.partitions < self.cores {
            return Err(ConfigError("fewer partitions than cores".into()));
        }
        Ok(())
    }

    /// The map group's tick for a cluster that fails a member over after `detect_ns` of
    /// silence: a twentieth of it (1 to 5 ms), so a dead leader's successor is elected
    /// before the member is failed over (see `map_group::ELECTION_TICKS`).
    pub fn tick_for(detect_ns: u64) -> u64 {
        (detect_ns / crate::map_group::DETECTION_TICKS).clamp(1_000_000, 5_000_000)
    }

    /// The address of core `core` of member `member`.
    pub fn core_addr(&self, member: usize, core: u32) -> SocketAddr {
        let base = self.members[member];
        SocketAddr::new(base.ip(), base.port() + core as u16)
    }

    /// The member a core address belongs to.
    fn member_of(&self, addr: SocketAddr) -> Option<usize> {
        self.members.iter().position(|m| {
            m.ip() == addr.ip() && (m.port()..m.port() + self.cores as u16).contains(&addr.port())
        })
    }

    /// The first map: see the module comment.
    pub fn initial_map(&self) -> PartitionMap {
        let n = self.voters;
        let entries = (0..self.partitions)
            .map(|p| {
                let (start, end) = partition_range(p, self.partitions);
                let core = p % self.cores;
                let first = p as usize % n;
                let mut entry = MapEntry::single(start, end, p, self.core_addr(first, core));
                entry.replicas = (1..self.replicas)
                    .map(|i| Replica {
                        addr: self.core_addr((first + i) % n, core),
                        role: Role::Backup,
                    })
                    .collect();
                entry
            })
            .collect();
        PartitionMap { epoch: FIRST_EPOCH, cluster: self.cluster_id, entries }
    }
}

/// Ticks a poll may make up for a late loop (well under an election's, so a leader's message
/// read in the same batch still counts).
const TICKS_CAUGHT_UP_MAX: u64 = crate::map_group::ELECTION_TICKS as u64 / 2;

/// The epoch of the first map (1 is a single node's layout).
const FIRST_EPOCH: u64 = 2;

/// What the map group holds: its members (the voters first, then the nodes that joined) and
/// the partition map. Layout: u8 voters, u16 nodes, each node's core-0 address
/// (`proto::encode_addr`), then the map (`PartitionMap::encode`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// How many of `nodes` are the group's voters.
    pub voters: usize,
    /// Core 0 of each node, in member order.
    pub nodes: Vec<SocketAddr>,
    /// The partition map.
    pub map: PartitionMap,
}

/// Nodes a cluster holds at most (bootstrap members and joined nodes).
pub const NODES_MAX: usize = 64;

impl Committed {
    /// The bytes the group holds.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.voters as u8];
        out.extend_from_slice(&(self.nodes.len() as u16).to_le_bytes());
        for &node in &self.nodes {
            proto::encode_addr(node, &mut out);
        }
        out.extend_from_slice(&self.map.encode());
        out
    }

    /// Reads what `encode` wrote.
    pub fn decode(bytes: &[u8]) -> Result<Committed, proto::Malformed> {
        let truncated = proto::Malformed::Truncated;
        let (&voters, rest) = bytes.split_first().ok_or(truncated)?;
        let count = u16::from_le_bytes(rest.get(..2).ok_or(truncated)?.try_into().expect("2"));
        let mut rest = &rest[2..];
        let mut nodes = Vec::with_capacity(usize::from(count).min(NODES_MAX));
        for _ in 0..count {
            let (node, after) = proto::decode_addr(rest)?;
            nodes.push(node);
            rest = after;
        }
        if usize::from(voters) > nodes.len() || nodes.len() > NODES_MAX {
            return Err(proto::Malformed::BadFlags);
        }
        Ok(Committed { voters: voters.into(), nodes, map: PartitionMap::decode(rest)? })
    }
}

/// A joiner's envelope id until it is admitted (then it is its member id, as everyone's):
/// derived from its address, apart from the small member ids.
pub fn joiner_id(addr: SocketAddr) -> u64 {
    crate::core::peer_id(addr) | 1 << 62
}

/// What a JOIN says: the joiner's core 0, and its cores, partitions and replication factor
/// (which must be the cluster's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct JoinRequest {
    addr: SocketAddr,
    cores: u32,
    partitions: u32,
    replicas: u8,
}

impl JoinRequest {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        proto::encode_addr(self.addr, &mut out);
        out.extend_from_slice(&self.cores.to_le_bytes());
        out.extend_from_slice(&self.partitions.to_le_bytes());
        out.push(self.replicas);
        out
    }

    fn decode(bytes: &[u8]) -> Option<JoinRequest> {
        let (addr, rest) = proto::decode_addr(bytes).ok()?;
        let rest: &[u8; 9] = rest.try_into().ok()?;
        let cores = u32::from_le_bytes(rest[..4].try_into().expect("4"));
        let partitions = u32::from_le_bytes(rest[4..8].try_into().expect("4"));
        Some(JoinRequest { addr, cores, partitions, replicas: rest[8] })
    }
}

/// A MAP PUSH: the group's state at a group epoch (tag 0, u64 epoch, `Committed` bytes), or
/// why a join was refused (tag 1, UTF-8 text).
const PUSH_STATE: u8 = 0;
const PUSH_REFUSED: u8 = 1;

/// How often the leader pushes the state to one node at most, and a joiner asks to join.
const PUSH_EVERY_NS: u64 = 20_000_000;

/// Nodes the leader keeps asking to join at once (more wait for their next request).
const JOINING_MAX: usize = 8;

/// The map without member `gone`'s replicas (a backup promoted where it was primary, not on
/// a member `fresh` says restarted if another will do), or `None` if a partition would be
/// left without any.
pub fn without_member(
    spec: &ClusterSpec,
    map: &PartitionMap,
    gone: usize,
    fresh: &[bool],
) -> Option<PartitionMap> {
    let mut next = map.clone();
    next.epoch += 1;
    for entry in &mut next.entries {
        entry.replicas.retain(|r| spec.member_of(r.addr) != Some(gone));
        if spec.member_of(entry.addr) == Some(gone) {
            let promoted = promotable(spec, entry, fresh)?;
            entry.addr = entry.replicas.remove(promoted).addr;
        }
    }
    Some(next)
}

/// The backup of `entry` to promote: the first one not on a fresh member, else the first.
fn promotable(spec: &ClusterSpec, entry: &MapEntry, fresh: &[bool]) -> Option<usize> {
    let backups = || entry.replicas.iter().enumerate().filter(|(_, r)| r.role == Role::Backup);
    let settled = |r: &Replica| spec.member_of(r.addr).is_none_or(|m| !fresh[m]);
    backups().find(|(_, r)| settled(r)).or_else(|| backups().next()).map(|(i, _)| i)
}

/// The map with restarted member `m`'s replicas taken out wherever a backup can stand in (one
/// promoted where it was primary); `None` if nothing changes.
pub fn shed_member(
    spec: &ClusterSpec,
    map: &PartitionMap,
    m: usize,
    fresh: &[bool],
) -> Option<PartitionMap> {
    let mut next = map.clone();
    next.epoch += 1;
    let mut changed = false;
    for entry in &mut next.entries {
        let before = entry.replicas.len();
        entry.replicas.retain(|r| spec.member_of(r.addr) != Some(m));
        changed |= entry.replicas.len() != before;
        if spec.member_of(entry.addr) == Some(m) {
            if let Some(promoted) = promotable(spec, entry, fresh) {
                entry.addr = entry.replicas.remove(promoted).addr;
                changed = true;
            }
        }
    }
    changed.then_some(next)
}

/// Whether member `m`, fresh from a restart, may serve by `map`: it is named only where no
/// backup could stand in (the primary of a partition with no backup).
fn fresh_may_install(spec: &ClusterSpec, map: &PartitionMap, m: usize) -> bool {
    map.entries.iter().all(|e| {
        let replica = e.replicas.iter().any(|r| spec.member_of(r.addr) == Some(m));
        let primary = spec.member_of(e.addr) == Some(m);
        !replica && (!primary || e.backups().next().is_none())
    })
}

/// The map with each partition in `built` (partition, learner address) whose learner is
/// still one made a backup; `None` if none is.
pub fn with_backups(map: &PartitionMap, built: &[(u32, SocketAddr)]) -> Option<PartitionMap> {
    let mut next = map.clone();
    next.epoch += 1;
    let mut changed = false;
    for &(partition, learner) in built {
        let Some(entry) = next.entries.iter_mut().find(|e| e.partition == partition) else {
            continue;
        };
        for r in entry.replicas.iter_mut().filter(|r| r.addr == learner) {
            if r.role == Role::Learner {
                r.role = Role::Backup;
                changed = true;
            }
        }
    }
    changed.then_some(next)
}

/// The map with a learner added to each partition that has fewer replicas than the spec's
/// replication factor on `counted` members, on the lowest member `usable` allows that holds
/// none of it (on the partition's core); `None` if no partition gets one.
pub fn with_learners(
    spec: &ClusterSpec,
    map: &PartitionMap,
    usable: impl Fn(usize) -> bool,
    counted: impl Fn(usize) -> bool,
) -> Option<PartitionMap> {
    let mut next = map.clone();
    next.epoch += 1;
    let mut changed = false;
    for entry in &mut next.entries {
        let holds = |m: usize| {
            spec.member_of(entry.addr) == Some(m)
                || entry.replicas.iter().any(|r| spec.member_of(r.addr) == Some(m))
        };
        if (0..spec.members.len()).filter(|&m| counted(m) && holds(m)).count() >= spec.replicas {
            continue;
        }
        let Some(m) = (0..spec.members.len()).find(|&m| usable(m) && !holds(m)) else {
            continue;
        };
        let addr = spec.core_addr(m, entry.partition % spec.cores);
        entry.replicas.push(Replica { addr, role: Role::Learner });
        changed = true;
    }
    changed.then_some(next)
}

/// What the agent knows, for `cradle status` (read by other threads).
#[derive(Debug, Default)]
pub struct ClusterView {
    /// Core 0 of each member, in member order (joined nodes after the group's voters).
    pub members: Mutex<Vec<SocketAddr>>,
    /// How many of `members` are the map group's voters.
    pub voters: AtomicU64,
    /// Why the cluster refused this node's join (it cannot serve: `cradle node` says so).
    pub refused: Mutex<Option<String>>,
    /// A member silent this long is failed over.
    pub detect_ns: u64,
    /// The newest map epoch handed to the cores (0: none yet).
    pub installed_epoch: AtomicU64,
    /// The newest map epoch every core serves by (0: none yet).
    pub serving_epoch: AtomicU64,
    /// The map group's leader as this member knows it (member id, 0: none).
    pub leader: AtomicU64,
    /// Per member: nanoseconds (agent clock) since last heard, `u64::MAX` if never.
    pub silent_ns: Mutex<Vec<u64>>,
    /// This member's hardware verdict (`Health as u8`), set by the node's health monitor; the
    /// agent says it in its heartbeats.
    pub health: AtomicU8,
    /// What the health policy makes of the members, as this one hears them.
    pub health_state: Mutex<HealthState>,
}

/// The health policy as one member sees it (every member hears every other's verdict, so
/// each works out the same plan the leader acts on).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthState {
    /// Each member's verdict, from its heartbeats (this member's own included).
    pub verdicts: Vec<Health>,
    /// Members being drained.
    pub draining: Vec<usize>,
    /// Why a failing member is not drained.
    pub holding_back: Vec<String>,
    /// How long this member took from its failing verdict to holding no replica (ms).
    pub drained_after_ms: Option<u64>,
}

impl ClusterView {
    /// The view of a member of `spec`'s cluster, before its agent published anything.
    pub fn for_spec(spec: &ClusterSpec) -> ClusterView {
        ClusterView {
            members: Mutex::new(spec.members.clone()),
            voters: AtomicU64::new(spec.voters as u64),
            detect_ns: spec.detect_ns,
            ..ClusterView::default()
        }
    }

    /// The `cluster` object of STATS: the map epochs, the map group's leader, and each member
    /// as this one hears it: `alive` (silent for less than half the failover time: a few lost
    /// heartbeats are normal), `suspect` (silent longer, not yet failed over), `dead` (silent
    /// past the failover time, or never heard).
    pub fn to_json(&self) -> serde_json::Value {
        let leader = self.leader.load(Ordering::Relaxed) as usize;
        let silent = self.silent_ns.lock().map(|s| s.clone()).unwrap_or_default();
        let health = self.health_state.lock().map(|h| h.clone()).unwrap_or_default();
        let nodes = self.members.lock().map(|m| m.clone()).unwrap_or_default();
        let voters = self.voters.load(Ordering::Relaxed) as usize;
        let members: Vec<serde_json::Value> = nodes
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let ns = silent.get(i).copied().unwrap_or(u64::MAX);
                let state = if ns < self.detect_ns / 2 {
                    "alive"
                } else if ns < self.detect_ns {
                    "suspect"
                } else {
                    "dead"
                };
                let silent_ms = (ns != u64::MAX).then_some(ns / 1_000_000);
                let verdict = health.verdicts.get(i).copied().unwrap_or_default();
                serde_json::json!({ "member": i + 1, "addr": addr.to_string(), "state": state,
                    "voter": i < voters, "silent_ms": silent_ms, "health": verdict.as_str(),
                    "draining": health.draining.contains(&i) })
            })
            .collect();
        serde_json::json!({
            "epoch": self.installed_epoch.load(Ordering::Acquire),
            "serving_epoch": self.serving_epoch.load(Ordering::Acquire),
            "leader": (leader >= 1).then(|| nodes.get(leader - 1).map(ToString::to_string)).flatten(),
            "members": members,
            "health": {
                "verdict": Health::from_u8(self.health.load(Ordering::Relaxed)).unwrap_or_default().as_str(),
                "holding_back": health.holding_back,
                "drained_after_ms": health.drained_after_ms,
            },
        })
    }
}

/// The agent of one member node.
pub struct Agent {
    spec: ClusterSpec,
    /// This node's seat in the map group (none on a joined node: the leader pushes it the
    /// group's state instead, `pushed`).
    group: Option<MapGroup>,
    /// A node outside the group: the newest state the leader pushed (group epoch, bytes).
    pushed: Option<(u64, Vec<u8>)>,
    /// The push being reassembled: (sender, message number, pieces).
    push_assembling: (u64, Pieces),
    /// The leader: nodes that asked to join, not admitted yet.
    joining: Vec<SocketAddr>,
    /// The leader: when it last pushed the state to each member (agent clock).
    pushed_ns: Vec<u64>,
    /// The leader: the group epoch whose state went to every member outside the group.
    pushed_epoch: u64,
    /// A joiner: when it last asked to join (agent clock).
    asked_ns: Option<u64>,
    sealer: PeerSealer,
    opener: PeerOpener,
    last_heard: Vec<Option<u64>>,
    /// The committed map this member installed (decoded).
    map: Option<PartitionMap>,
    cores: Vec<Sender<MapChange>>,
    outcomes: Receiver<CoreOutcome>,
    proposal: Option<(ProposalId, u64)>,
    /// Cores that applied each epoch handed out.
    applied: std::collections::BTreeMap<u64, usize>,
    last_tick_ns: u64,
    last_heartbeat_ns: u64,
    was_leader: bool,
    view: Arc<ClusterView>,
    sealed: Vec<u8>,
    /// Per member, the Raft message being reassembled from pieces.
    assembling: Vec<Pieces>,
    next_message: u64,
    /// Datagrams refused by the envelope (MAC, replay, staleness).
    pub dropped: u64,
    /// This member started and has not yet installed a map (see the module comment).
    fresh: bool,
    /// Per member, what its last heartbeat said: fresh, and the learners its primaries built
    /// at a map epoch (this member's own: from its cores).
    heard: Vec<Heard>,
    /// Since when (agent clock) this member's verdict has been failing while it held replicas.
    failing_since_ns: Option<u64>,
    /// How long it then took until it held none (ms), once it does.
    drained_after_ms: Option<u64>,
    /// When `follow_health` last ran (agent clock).
    health_viewed_ns: u64,
    /// The health policy's hold-backs last said on stderr.
    held_back: Vec<String>,
}

/// A message being reassembled from its pieces: (message number, pieces so far).
type Pieces = (u64, Vec<Option<Vec<u8>>>);

/// What a member's heartbeat says besides that it lives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Heard {
    fresh: bool,
    /// The newest map epoch it installed (the leader pushes a newer one to a joined node).
    map: u64,
    /// Its hardware verdict.
    health: Health,
    /// The map epoch its cores served when they built `built`.
    epoch: u64,
    /// (partition, learner address) its primaries built.
    built: Vec<(u32, SocketAddr)>,
}

/// How often a member works out the health policy for its status (it walks the whole map:
/// not at every heartbeat, on the loop).
const HEALTH_VIEW_NS: u64 = 100_000_000;

/// Learners a heartbeat reports at most (the rest wait for the next change).
const HEARD_BUILT_MAX: usize = 48;

impl Heard {
    fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(u8::from(self.fresh) | (self.health as u8) << 1);
        out.extend_from_slice(&self.map.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        let built = &self.built[..self.built.len().min(HEARD_BUILT_MAX)];
        out.extend_from_slice(&(built.len() as u16).to_le_bytes());
        for &(partition, addr) in built {
            out.extend_from_slice(&partition.to_le_bytes());
            proto::encode_addr(addr, out);
        }
    }

    fn decode(bytes: &[u8]) -> Option<Heard> {
        let health = Health::from_u8(bytes.first()? >> 1)?;
        if bytes.len() < 19 {
            return None;
        }
        let map = u64::from_le_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let epoch = u64::from_le_bytes(bytes[9..17].try_into().expect("8 bytes"));
        let count = u16::from_le_bytes([bytes[17], bytes[18]]) as usize;
        let mut rest = &bytes[19..];
        let mut built = Vec::with_capacity(count.min(HEARD_BUILT_MAX));
        for _ in 0..count {
            let partition = u32::from_le_bytes(rest.get(..4)?.try_into().expect("4 bytes"));
            let (addr, after) = proto::decode_addr(&rest[4..]).ok()?;
            built.push((partition, addr));
            rest = after;
        }
        rest.is_empty().then_some(Heard { fresh: bytes[0] & 1 == 1, map, health, epoch, built })
    }
}

/// Raft message bytes per datagram: a message longer than this (an entry holding a big map)
/// travels in pieces, each sealed on its own, reassembled by the receiver (a lost piece loses
/// the message, which Raft sends again).
const PIECE_BYTES: usize = 1200;

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("me", &self.spec.me)
            .field("map", &self.map.as_ref().map(|m| m.epoch))
            .finish()
    }
}

/// Member ids in the envelope: small numbers, apart from the cores' (address-derived) ids.
fn member_id(index: usize) -> u64 {
    index as u64 + 1
}

impl Agent {
    /// The agent of `spec.me` on its map-group disk (none for a joiner: it holds no seat in
    /// the group), and the inbox of each of the node's `spec.cores` cores (in core order:
    /// give each to its core, `Core::set_map_inbox`; the agent goes to core 0,
    /// `Core::set_agent`).
    pub fn with_inboxes(
        spec: ClusterSpec,
        disk: Option<&MapDisk>,
        wall_start_ns: u64,
        view: Arc<ClusterView>,
    ) -> Result<(Agent, Vec<crate::MapInbox>), ConfigError> {
        let (outcomes, outcomes_rx) = std::sync::mpsc::channel();
        let (mut inboxes, mut senders) = (Vec::new(), Vec::new());
        for _ in 0..spec.cores {
            let (sender, changes) = std::sync::mpsc::channel();
            inboxes.push(crate::MapInbox { changes, outcomes: outcomes.clone() });
            senders.push(sender);
        }
        let agent = Agent::new(spec, disk, senders, outcomes_rx, wall_start_ns, view)?;
        Ok((agent, inboxes))
    }

    /// The agent of `spec.me`, on its map-group disk, handing maps to `cores` (one sender
    /// per core's inbox; their outcomes come back on `outcomes`).
    fn new(
        spec: ClusterSpec,
        disk: Option<&MapDisk>,
        cores: Vec<Sender<MapChange>>,
        outcomes: Receiver<CoreOutcome>,
        wall_start_ns: u64,
        view: Arc<ClusterView>,
    ) -> Result<Agent, ConfigError> {
        spec.validate()?;
        let (me, group) = match (spec.join, disk) {
            (Some(join), _) => (joiner_id(join.addr), None),
            (None, Some(disk)) => {
                let me = member_id(spec.me);
                (me, Some(MapGroup::start(me, disk, Vec::new())?))
            }
            (None, None) => {
                return Err(ConfigError("a bootstrap member needs its map disk".into()))
            }
        };
        // A member is fresh when it lived in the cluster before (its disk has a map): its
        // stores are not trusted. One that never did is placed by the first map, or fresh
        // too if its first map is a later one (a member whose disk was replaced, a joiner).
        let fresh = group.as_ref().is_some_and(|g| g.map().0 != 0);
        let n = spec.members.len();
        Ok(Agent {
            sealer: PeerSealer::new(spec.key.clone(), me, wall_start_ns),
            opener: PeerOpener::new(spec.key.clone(), me),
            pushed: None,
            push_assembling: (0, (0, Vec::new())),
            joining: Vec::new(),
            pushed_ns: vec![0; n],
            pushed_epoch: 0,
            asked_ns: None,
            last_heard: vec![None; n],
            map: None,
            cores,
            outcomes,
            proposal: None,
            applied: Default::default(),
            last_tick_ns: 0,
            last_heartbeat_ns: 0,
            was_leader: false,
            view,
            sealed: Vec::new(),
            assembling: vec![(0, Vec::new()); n],
            next_message: 0,
            dropped: 0,
            fresh,
            heard: vec![Heard::default(); n],
            failing_since_ns: None,
            drained_after_ms: None,
            health_viewed_ns: 0,
            held_back: Vec::new(),
            spec,
            group,
        })
    }

    /// Whether `datagram` is for the agent (a map-group, heartbeat, join or map-push node
    /// datagram).
    pub fn claims(datagram: &[u8]) -> bool {
        use PeerKind::{Heartbeat, Join, MapGroup, MapPush};
        let kinds = [MapGroup, Heartbeat, Join, MapPush];
        datagram.starts_with(&crate::peer::MAGIC.to_le_bytes())
            && matches!(datagram.get(3), Some(&k) if kinds.iter().any(|&kind| k == kind as u8))
    }

    /// A datagram `claims` took: authenticated, then handed to the group, noted as a sign
    /// of life, or taken as a join or as the group's state.
    pub fn handle_datagram(
        &mut self,
        now_ns: u64,
        wall_ns: u64,
        datagram: &[u8],
        tx: &mut dyn Transmit,
    ) {
        let opened = match self.opener.open(wall_ns, datagram) {
            Ok(opened) => opened,
            Err(_) => {
                self.dropped += 1;
                return;
            }
        };
        match opened.kind {
            PeerKind::Join => {
                // From the joiner itself (not a member yet) or relayed by a member.
                match JoinRequest::decode(opened.payload) {
                    Some(request) => self.handle_join(now_ns, wall_ns, request, tx),
                    None => self.dropped += 1,
                }
                return;
            }
            PeerKind::MapPush => {
                let (from, payload) = (opened.from, opened.payload.to_vec());
                self.handle_push(from, &payload);
                return;
            }
            _ => {}
        }
        let Some(from) =
            (opened.from as usize).checked_sub(1).filter(|&i| i < self.spec.members.len())
        else {
            self.dropped += 1;
            return;
        };
        self.last_heard[from] = Some(now_ns);
        if opened.kind == PeerKind::Heartbeat {
            match Heard::decode(opened.payload) {
                Some(heard) => {
                    let behind = self.map.as_ref().is_some_and(|m| heard.map < m.epoch);
                    self.heard[from] = heard;
                    if behind && from >= self.spec.voters {
                        self.push(now_ns, wall_ns, from, member_id(from), tx);
                    }
                }
                None => self.dropped += 1,
            }
        }
        if opened.kind == PeerKind::MapGroup {
            let payload = opened.payload.to_vec();
            let message = reassemble(&mut self.assembling[from], &payload);
            match (message, &mut self.group) {
                // Authenticated bytes only reach raft-rs's parser.
                (Ok(Some(message)), Some(group)) => {
                    if group.handle_message(&message).is_err() {
                        self.dropped += 1;
                    }
                }
                (Ok(_), _) => {}
                (Err(()), _) => self.dropped += 1,
            }
        }
        self.flush(wall_ns, tx);
    }

    /// A node asks to join: the leader admits it (a change of the group's state, `decide`)
    /// or, once it is a member, pushes it the state; a member that does not lead relays the
    /// request to the leader.
    fn handle_join(
        &mut self,
        now_ns: u64,
        wall_ns: u64,
        request: JoinRequest,
        tx: &mut dyn Transmit,
    ) {
        let Some(group) = &self.group else { return };
        if !group.is_leader() {
            let Some(leader) = group.leader().filter(|&l| l != member_id(self.spec.me)) else {
                return; // (no leader known: the joiner asks again)
            };
            let Some(&addr) = self.spec.members.get(leader as usize - 1) else { return };
            self.send_sealed((leader, addr), PeerKind::Join, &request.encode(), wall_ns, tx);
            return;
        }
        if let Some(why) = self.refusal(&request) {
            let mut payload = vec![PUSH_REFUSED];
            payload.extend_from_slice(format!("the cluster refused the join: {why}").as_bytes());
            let to = (joiner_id(request.addr), request.addr);
            self.send_pieces(to, PeerKind::MapPush, &payload, wall_ns, tx);
            return;
        }
        match self.spec.members.iter().position(|&m| m == request.addr) {
            Some(m) => self.push(now_ns, wall_ns, m, joiner_id(request.addr), tx),
            None if !self.joining.contains(&request.addr) && self.joining.len() < JOINING_MAX => {
                self.joining.push(request.addr);
            }
            None => {}
        }
    }

    /// Why the leader does not admit `request`'s node, if it does not.
    fn refusal(&self, request: &JoinRequest) -> Option<String> {
        let spec = &self.spec;
        let unlike = |what: &str, theirs: u64, ours: u64| {
            (theirs != ours)
                .then(|| format!("its {what} ({theirs}) are not the cluster's ({ours})"))
        };
        let overlap = |m: &SocketAddr| {
            *m != request.addr
                && m.ip() == request.addr.ip()
                && m.port().abs_diff(request.addr.port()) < spec.cores as u16
        };
        unlike("cores", request.cores.into(), spec.cores.into())
            .or_else(|| unlike("partitions", request.partitions.into(), spec.partitions.into()))
            .or_else(|| unlike("replicas", request.replicas.into(), spec.replicas as u64))
            .or_else(|| {
                spec.members
                    .iter()
                    .any(overlap)
                    .then(|| "its cores' ports overlap a member's".to_string())
            })
            .or_else(|| {
                spec.members[..spec.voters].contains(&request.addr).then(|| {
                    "it is a bootstrap member: start it with --cluster, as before".to_string()
                })
            })
            .or_else(|| {
                (spec.members.len() >= NODES_MAX && !spec.members.contains(&request.addr))
                    .then(|| format!("the cluster has its {NODES_MAX} nodes"))
            })
    }

    /// The leader: the group's state to member `m` (outside the group), sealed to `to`, when
    /// asked for (a lagging heartbeat, a JOIN), at most every `PUSH_EVERY_NS`.
    fn push(&mut self, now_ns: u64, wall_ns: u64, m: usize, to: u64, tx: &mut dyn Transmit) {
        if self.pushed_ns[m] == 0 || now_ns >= self.pushed_ns[m] + PUSH_EVERY_NS {
            self.send_state(now_ns, wall_ns, m, to, tx);
        }
    }

    /// The leader: the group's state to member `m`, sealed to `to`, now.
    fn send_state(&mut self, now_ns: u64, wall_ns: u64, m: usize, to: u64, tx: &mut dyn Transmit) {
        let Some(group) = self.group.as_ref().filter(|g| g.is_leader()) else { return };
        self.pushed_ns[m] = now_ns;
        let (epoch, bytes) = group.map();
        let mut payload = vec![PUSH_STATE];
        payload.extend_from_slice(&epoch.to_le_bytes());
        payload.extend_from_slice(bytes);
        let addr = self.spec.members[m];
        self.send_pieces((to, addr), PeerKind::MapPush, &payload, wall_ns, tx);
    }

    /// A piece of a push from the leader: on a node outside the group, the newest state is
    /// kept for `install`, or the refusal of its join published.
    fn handle_push(&mut self, from: u64, piece: &[u8]) {
        if self.group.is_some() {
            self.dropped += 1; // (a member has the group's own state)
            return;
        }
        let (sender, pieces) = &mut self.push_assembling;
        if *sender != from {
            (*sender, *pieces) = (from, (0, Vec::new()));
        }
        let payload = match reassemble(pieces, piece) {
            Ok(Some(payload)) => payload,
            Ok(None) => return,
            Err(()) => {
                self.dropped += 1;
                return;
            }
        };
        match payload.split_first() {
            Some((&PUSH_STATE, rest)) if rest.len() >= 8 => {
                let epoch = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
                if self.pushed.as_ref().is_none_or(|(e, _)| epoch > *e) {
                    self.pushed = Some((epoch, rest[8..].to_vec()));
                }
            }
            Some((&PUSH_REFUSED, why)) => {
                let why = String::from_utf8_lossy(why).into_owned();
                if let Ok(mut refused) = self.view.refused.lock() {
                    refused.get_or_insert(why);
                }
            }
            _ => self.dropped += 1,
        }
    }

    /// Timers, the leader's decisions, and installing what the group committed.
    pub fn poll(&mut self, now_ns: u64, wall_ns: u64, tx: &mut dyn Transmit) {
        // Ticks keep to the clock, not to when the loop came by (late ticks made elections
        // take a third longer), but a stalled loop's lost time is not made up at once: the
        // leader's messages it just read would count for nothing.
        let behind = now_ns.saturating_sub(self.last_tick_ns) / self.spec.tick_ns;
        for _ in 0..behind.min(TICKS_CAUGHT_UP_MAX) {
            self.group.as_mut().map(MapGroup::tick);
        }
        if behind > TICKS_CAUGHT_UP_MAX {
            self.last_tick_ns = now_ns;
        } else {
            self.last_tick_ns += behind * self.spec.tick_ns;
        }
        if !self.admitted() {
            // A joiner asks until the leader's push names it a member.
            if let Some(join) = self
                .spec
                .join
                .filter(|_| self.asked_ns.is_none_or(|at| now_ns >= at + PUSH_EVERY_NS))
            {
                self.asked_ns = Some(now_ns);
                let request = JoinRequest {
                    addr: join.addr,
                    cores: self.spec.cores,
                    partitions: self.spec.partitions,
                    replicas: self.spec.replicas as u8,
                };
                let to = (crate::peer::ANY_MEMBER, join.via);
                self.send_sealed(to, PeerKind::Join, &request.encode(), wall_ns, tx);
            }
            self.install();
            self.publish(now_ns);
            return;
        }
        if now_ns >= self.last_heartbeat_ns + self.spec.heartbeat_ns {
            self.last_heartbeat_ns = now_ns;
            let me = self.spec.me;
            self.heard[me].fresh = self.fresh;
            self.heard[me].map = self.map.as_ref().map_or(0, |m| m.epoch);
            self.heard[me].health =
                Health::from_u8(self.view.health.load(Ordering::Relaxed)).unwrap_or_default();
            if now_ns >= self.health_viewed_ns + HEALTH_VIEW_NS {
                self.health_viewed_ns = now_ns;
                self.follow_health(now_ns);
            }
            let mut payload = Vec::new();
            self.heard[me].encode(&mut payload);
            for m in (0..self.spec.members.len()).filter(|&m| m != me) {
                let to = (member_id(m), self.spec.members[m]);
                self.send_sealed(to, PeerKind::Heartbeat, &payload, wall_ns, tx);
            }
        }
        self.last_heard[self.spec.me] = Some(now_ns);
        while let Some((id, _outcome)) = self.group.as_mut().and_then(MapGroup::poll_outcome) {
            if self.proposal.is_some_and(|(p, _)| p == id) {
                self.proposal = None;
            }
        }
        while let Ok(outcome) = self.outcomes.try_recv() {
            match outcome {
                CoreOutcome::Refused(why) => {
                    eprintln!("cradle: a core refused the cluster map: {why}")
                }
                CoreOutcome::Built { epoch, partition, learner } => {
                    let own = &mut self.heard[self.spec.me];
                    if epoch > own.epoch {
                        (own.epoch, own.built) = (epoch, Vec::new());
                    }
                    if epoch == own.epoch && !own.built.contains(&(partition, learner)) {
                        own.built.push((partition, learner));
                    }
                }
                CoreOutcome::Applied { epoch, .. } => {
                    let applied = self.applied.entry(epoch).or_insert(0);
                    *applied += 1;
                    if *applied == self.cores.len() {
                        self.view.serving_epoch.fetch_max(epoch, Ordering::AcqRel);
                        self.applied.retain(|&e, _| e > epoch);
                    }
                }
            }
        }
        self.install();
        let leader = self.is_leader();
        if leader && self.pushed_epoch < self.committed().0 {
            // A new state goes to the members outside the group as it commits (they would
            // ask with their next heartbeat).
            for m in self.spec.voters..self.spec.members.len() {
                self.send_state(now_ns, wall_ns, m, member_id(m), tx);
            }
            self.pushed_epoch = self.committed().0;
        }
        if leader && !self.was_leader {
            // A new leader gives a member it never heard from a detection period before
            // judging it; one it heard from (every member heartbeats every other) it judges by
            // that, so the death that cost the old leader is failed over without more delay.
            for heard in &mut self.last_heard {
                heard.get_or_insert(now_ns);
            }
        }
        self.was_leader = leader;
        if leader {
            self.decide(now_ns);
        }
        self.flush(wall_ns, tx);
        self.publish(now_ns);
    }

    /// Whether this node leads the map group.
    fn is_leader(&self) -> bool {
        self.group.as_ref().is_some_and(MapGroup::is_leader)
    }

    /// Whether this node is a member (a joiner: once the group's state names it).
    fn admitted(&self) -> bool {
        self.spec.join.is_none_or(|join| self.spec.members.get(self.spec.me) == Some(&join.addr))
    }

    /// The group's state: its epoch (0: none yet) and bytes; a node outside the group has
    /// the newest the leader pushed it.
    fn committed(&self) -> (u64, &[u8]) {
        match (&self.group, &self.pushed) {
            (Some(group), _) => group.map(),
            (None, Some((epoch, bytes))) => (*epoch, bytes),
            (None, None) => (0, &[]),
        }
    }

    /// The group's members as `state` lists them: nodes that joined get their place in
    /// every per-member table (and a joiner its member id).
    fn adopt_members(&mut self, state: &Committed) {
        let spec = &mut self.spec;
        if state.nodes.len() <= spec.members.len() && state.voters == spec.voters {
            return; // (members are only ever added)
        }
        spec.members.clone_from(&state.nodes);
        spec.voters = state.voters;
        let n = spec.members.len();
        self.last_heard.resize(n, None);
        self.heard.resize(n, Heard::default());
        self.assembling.resize(n, (0, Vec::new()));
        self.pushed_ns.resize(n, 0);
        self.joining.retain(|a| !state.nodes.contains(a));
        if let Some(join) = spec.join {
            if let Some(me) = spec.members.iter().position(|&m| m == join.addr) {
                spec.me = me;
                self.sealer.rename(member_id(me));
                self.opener.rename(member_id(me));
            }
        }
        if let Ok(mut members) = self.view.members.lock() {
            members.clone_from(&spec.members);
        }
        self.view.voters.store(spec.voters as u64, Ordering::Relaxed);
    }

    /// The group's map, if newer than the one installed: to every core.
    fn install(&mut self) {
        let (group_epoch, bytes) = self.committed();
        if group_epoch == 0 || self.map.as_ref().is_some_and(|m| m.epoch > group_epoch) {
            return;
        }
        let state = match Committed::decode(bytes) {
            Ok(state) => state,
            Err(e) => panic!("the map group committed an undecodable state: {e:?}"),
        };
        self.adopt_members(&state);
        if !self.admitted() {
            return;
        }
        let map = state.map;
        let first = self.map.is_none();
        if first && map.epoch > FIRST_EPOCH {
            self.fresh = true;
        }
        if self.fresh && !fresh_may_install(&self.spec, &map, self.spec.me) {
            // Not yet: the leader takes this member's replicas out first (`decide`).
            self.map = Some(map);
            return;
        }
        self.fresh = false;
        for core in &self.cores {
            // A core gone (the node stopping) takes nothing more.
            let _ = core.send(MapChange { map: map.clone(), added: Vec::new() });
        }
        self.view.installed_epoch.store(map.epoch, Ordering::Release);
        self.map = Some(map);
    }

    /// The leader's decisions: the first map, then failovers and the rest (`change`), then
    /// admitting a node that asked to join (one proposal at a time).
    fn decide(&mut self, now_ns: u64) {
        if let Some((_, at)) = self.proposal {
            if now_ns < at + 20 * self.spec.tick_ns {
                return; // (a lost proposal is given up after a while and decided again)
            }
            self.proposal = None;
        }
        let Some(group) = &self.group else { return };
        let (group_epoch, _) = group.map();
        let mut nodes = self.spec.members.clone();
        let next = match &self.map {
            None if group_epoch == 0 => Some(self.spec.initial_map()),
            None => None, // committed but not installed yet: next poll
            Some(map) => self.change(map, now_ns).or_else(|| {
                let joiner = *self.joining.first()?;
                eprintln!("cradle: node {joiner} joins the cluster as member {}", nodes.len() + 1);
                nodes.push(joiner);
                Some(map.clone())
            }),
        };
        let Some(mut next) = next else { return };
        next.epoch = group_epoch + 2; // (map epochs run one ahead of the group's: 1 is the layout)
        let state = Committed { voters: self.spec.voters, nodes, map: next };
        let group = self.group.as_mut().expect("a member leads");
        if let Ok(id) = group.propose(group_epoch, state.encode()) {
            self.proposal = Some((id, now_ns));
        }
    }

    /// The most urgent change of `map`, if any (see the module comment), said on stderr.
    fn change(&self, map: &PartitionMap, now_ns: u64) -> Option<PartitionMap> {
        let spec = &self.spec;
        let members = 0..spec.members.len();
        let silent_for = |m: usize| self.last_heard[m].map_or(u64::MAX, |t| now_ns - t);
        let alive = |m: usize| m == spec.me || silent_for(m) < spec.detect_ns;
        let fresh: Vec<bool> = self.heard.iter().map(|h| h.fresh).collect();
        let say = |what: String, next: &PartitionMap| {
            eprintln!("cradle: {what} (epoch {})", next.epoch);
        };
        let name = |m: usize| format!("member {} ({})", m + 1, spec.members[m]);
        let silent = members.clone().filter(|&m| m != spec.me && health::holds_any(spec, map, m));
        for m in silent.filter(|&m| !alive(m)) {
            if let Some(next) = without_member(spec, map, m, &fresh) {
                let ms = silent_for(m).checked_div(1_000_000);
                let ms = ms
                    .filter(|_| silent_for(m) != u64::MAX)
                    .map_or("ever".into(), |ms| ms.to_string());
                say(format!("{} silent for {ms} ms: its replicas leave the map", name(m)), &next);
                return Some(next);
            }
        }
        for m in members.clone().filter(|&m| fresh[m] && alive(m)) {
            if let Some(next) = shed_member(spec, map, m, &fresh) {
                say(format!("{} restarted: its replicas leave the map, to rejoin", name(m)), &next);
                return Some(next);
            }
        }
        let built: Vec<(u32, SocketAddr)> = self
            .heard
            .iter()
            .filter(|h| h.epoch == map.epoch)
            .flat_map(|h| h.built.iter().copied())
            .collect();
        if let Some(next) = with_backups(map, &built) {
            let names: Vec<String> = built.iter().map(|(p, a)| format!("{p}@{a}")).collect();
            say(format!("learners built, now backups: {}", names.join(" ")), &next);
            return Some(next);
        }
        let members = self.member_states(now_ns);
        let plan = health::plan(spec, map, &members);
        if let Some((next, why)) = plan.change {
            say(why, &next);
            return Some(next);
        }
        let next =
            with_learners(spec, map, |m| members[m].placeable(), |m| !plan.draining.contains(&m))?;
        say("partitions short of replicas get learners".into(), &next);
        Some(next)
    }

    /// Each member as the health policy sees it.
    fn member_states(&self, now_ns: u64) -> Vec<MemberState> {
        let alive = |m: usize| {
            m == self.spec.me
                || self.last_heard[m].is_some_and(|t| now_ns - t < self.spec.detect_ns)
        };
        let heard = self.heard.iter().enumerate();
        heard
            .map(|(m, h)| MemberState { alive: alive(m), fresh: h.fresh, health: h.health })
            .collect()
    }

    /// Every `HEALTH_VIEW_NS`, at a heartbeat: the health policy as this member sees it, for
    /// `cradle status` and stderr (what it holds back, and, on a failing member, when it
    /// holds nothing more).
    fn follow_health(&mut self, now_ns: u64) {
        let Some(map) = &self.map else { return };
        let members = self.member_states(now_ns);
        let plan = health::plan(&self.spec, map, &members);
        if plan.holding_back != self.held_back && self.is_leader() {
            for why in plan.holding_back.iter().filter(|w| !self.held_back.contains(w)) {
                eprintln!("cradle: {why}");
            }
        }
        self.held_back.clone_from(&plan.holding_back);
        let me = self.spec.me;
        if members[me].health != Health::Failing {
            (self.failing_since_ns, self.drained_after_ms) = (None, None);
        } else if health::holds_any(&self.spec, map, me) {
            self.failing_since_ns.get_or_insert(now_ns);
            self.drained_after_ms = None;
        } else if self.drained_after_ms.is_none() {
            let since = *self.failing_since_ns.get_or_insert(now_ns);
            let ms = (now_ns - since) / 1_000_000;
            eprintln!(
                "cradle: this member is failing and holds no replica now: drained in {ms} ms"
            );
            self.drained_after_ms = Some(ms);
        }
        // Never waits on the loop: a reader holding the lock skips one publication.
        if let Ok(mut state) = self.view.health_state.try_lock() {
            *state = HealthState {
                verdicts: members.iter().map(|s| s.health).collect(),
                draining: plan.draining,
                holding_back: plan.holding_back,
                drained_after_ms: self.drained_after_ms,
            };
        }
    }

    fn flush(&mut self, wall_ns: u64, tx: &mut dyn Transmit) {
        while let Some((to, bytes)) = self.group.as_mut().and_then(MapGroup::poll_transmit) {
            let Some(&addr) = (to as usize).checked_sub(1).and_then(|i| self.spec.members.get(i))
            else {
                continue;
            };
            self.send_pieces((to, addr), PeerKind::MapGroup, &bytes, wall_ns, tx);
        }
    }

    /// `bytes` to node (id, address) in pieces of at most `PIECE_BYTES`, each sealed.
    fn send_pieces(
        &mut self,
        (to, addr): (u64, SocketAddr),
        kind: PeerKind,
        bytes: &[u8],
        wall_ns: u64,
        tx: &mut dyn Transmit,
    ) {
        self.next_message += 1;
        let count = bytes.len().div_ceil(PIECE_BYTES).max(1);
        let mut piece = Vec::with_capacity(12 + PIECE_BYTES);
        for index in 0..count {
            piece.clear();
            piece.extend_from_slice(&self.next_message.to_le_bytes());
            piece.extend_from_slice(&(index as u16).to_le_bytes());
            piece.extend_from_slice(&(count as u16).to_le_bytes());
            let end = ((index + 1) * PIECE_BYTES).min(bytes.len());
            piece.extend_from_slice(&bytes[index * PIECE_BYTES..end]);
            self.send_sealed((to, addr), kind, &piece, wall_ns, tx);
        }
    }

    /// `payload` sealed for node id `to` and sent to `addr`.
    fn send_sealed(
        &mut self,
        (to, addr): (u64, SocketAddr),
        kind: PeerKind,
        payload: &[u8],
        wall_ns: u64,
        tx: &mut dyn Transmit,
    ) {
        self.sealer.seal(to, kind, wall_ns, payload, &mut self.sealed);
        tx.send(addr, &self.sealed);
    }

    fn publish(&self, now_ns: u64) {
        // (A node outside the group knows the leader by its pushes.)
        let leader = self.group.as_ref().map_or(Some(self.push_assembling.0), MapGroup::leader);
        let leader = leader.unwrap_or(0);
        self.view.leader.store(leader, Ordering::Relaxed);
        // Never waits on the loop: a reader holding the lock skips one publication.
        if let Ok(mut silent) = self.view.silent_ns.try_lock() {
            *silent = self
                .last_heard
                .iter()
                .map(|t| t.map_or(u64::MAX, |t| now_ns.saturating_sub(t)))
                .collect();
        }
    }
}

/// A piece of a message (message u64, index u16, count u16, bytes) into `slot`: the whole
/// message once every piece is in; `Err` for a piece that cannot be one.
fn reassemble(slot: &mut Pieces, piece: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    if piece.len() < 12 {
        return Err(());
    }
    let message = u64::from_le_bytes(piece[..8].try_into().expect("8 bytes"));
    let index = u16::from_le_bytes([piece[8], piece[9]]) as usize;
    let count = u16::from_le_bytes([piece[10], piece[11]]) as usize;
    if count == 0 || index >= count {
        return Err(());
    }
    let (current, pieces) = slot;
    if *current != message || pieces.len() != count {
        // A newer message replaces one left incomplete.
        (*current, *pieces) = (message, vec![None; count]);
    }
    pieces[index] = Some(piece[12..].to_vec());
    if pieces.iter().any(Option::is_none) {
        return Ok(None);
    }
    Ok(Some(pieces.drain(..).flatten().flatten().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The health tests' cluster, on 2 cores with 4 partitions.
    fn spec(members: usize) -> ClusterSpec {
        ClusterSpec { cores: 2, partitions: 4, ..health::tests::spec(members, members.min(3)) }
    }

    #[test]
    fn the_groups_state_round_trips_and_every_cut_of_it_is_refused() {
        let spec = spec(3);
        let mut nodes = spec.members.clone();
        nodes.push("[::1]:7000".parse().unwrap());
        let state = Committed { voters: 3, nodes, map: spec.initial_map() };
        let bytes = state.encode();
        assert_eq!(Committed::decode(&bytes), Ok(state));
        for cut in 0..bytes.len() {
            assert!(Committed::decode(&bytes[..cut]).is_err(), "cut at {cut} decoded");
        }
        let mut more_voters = bytes.clone();
        more_voters[0] = 5; // (4 nodes)
        assert!(Committed::decode(&more_voters).is_err());
    }

    #[test]
    fn a_join_request_round_trips_and_a_longer_or_shorter_one_is_refused() {
        let request = JoinRequest {
            addr: "127.0.0.9:7000".parse().unwrap(),
            cores: 2,
            partitions: 64,
            replicas: 3,
        };
        let bytes = request.encode();
        assert_eq!(JoinRequest::decode(&bytes), Some(request));
        assert_eq!(JoinRequest::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(JoinRequest::decode(&[&bytes[..], &[0]].concat()), None);
    }

    #[test]
    fn a_joiner_outside_the_group_is_placed_where_a_partition_is_short() {
        // Members 1-3 hold every partition at RF 3; member 3 leaves; the joined member 4 is
        // the one that gets the learners.
        let mut spec = spec(3);
        let map = spec.initial_map();
        spec.members.push(SocketAddr::from(([127, 0, 0, 4], 7000)));
        let fresh = vec![false; 4];
        let without = without_member(&spec, &map, 2, &fresh).expect("a map without member 3");
        let next = with_learners(&spec, &without, |m| m != 2, |m| m != 2).expect("learners");
        for entry in &next.entries {
            let learner = entry.replicas.iter().find(|r| r.role == Role::Learner);
            let core = entry.partition % spec.cores;
            assert_eq!(learner.map(|r| r.addr), Some(spec.core_addr(3, core)), "{entry:?}");
        }
    }

    #[test]
    fn a_joiner_spec_needs_no_members_but_a_member_spec_needs_itself_among_them() {
        let mut joiner = spec(0);
        joiner.replicas = 3;
        joiner.join = Some(Join {
            via: "127.0.0.1:7000".parse().unwrap(),
            addr: "127.0.0.4:7000".parse().unwrap(),
        });
        assert!(joiner.validate().is_ok());
        let mut member = spec(3);
        member.me = 3;
        assert!(member.validate().is_err());
    }
}
