//! One simulated node: its serving cores over in-memory disks that outlive the node. A crash
//! drops the cores, and with them everything not synced (the disks are `MemoryVolume`s: a
//! device's unsynced writes are its own and die with it); a start replays the disks.

use control::cluster::{Agent, ClusterSpec, ClusterView, Health};
use control::map_group::MapDisk;
use control::{
    Core, CoreConfig, CoreStorage, Durability, NodeLayout, NodeStats, ReplicationConfig,
};
use dataplane::{Handler, Transmit};
use proto::PartitionMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use storage::{BlobStore, MemoryVolume, Shelf, StoreConfig};

use crate::Packet;

/// Partitions of the simulated node (of the cluster).
pub(crate) const PARTITIONS: u32 = 8;

/// Small segments (memory volumes copy a whole device on sync) so that runs roll, seal and
/// compact them, and a small completion table (a simulation writes a few thousand times).
fn store_config() -> StoreConfig {
    StoreConfig {
        segment_bytes: 64 << 10,
        blob_threshold_bytes: 4 << 10,
        chunk_bytes: 4 << 10,
        blob_segment_bytes: 64 << 10,
        tail_bytes_max: 4 << 10,
        ..StoreConfig::default()
    }
}

/// Collects what a core sends.
struct Outbox<'a> {
    from: SocketAddr,
    packets: &'a mut Vec<Packet>,
}

impl Transmit for Outbox<'_> {
    fn send(&mut self, peer: SocketAddr, datagram: &[u8]) -> bool {
        self.packets.push(Packet { from: self.from, to: peer, bytes: datagram.to_vec() });
        true
    }
}

/// The disks of one core.
struct Disk {
    /// The core's log, shared by its endpoints.
    log: MemoryVolume,
    blobs: MemoryVolume,
}

pub(crate) struct Node {
    layout: Arc<NodeLayout>,
    disks: Vec<Disk>,
    /// The running cores and when each started (its loop clock counts from there), or none.
    cores: Option<Vec<(Core, u64)>>,
    rebuild_completions: bool,
    /// A cluster member's replication settings (none: a single node).
    replication: Option<ReplicationConfig>,
    /// A cluster member's seat: its agent's settings and its map-group disk (which outlives
    /// crashes, as a journal on disk does).
    membership: Option<(ClusterSpec, Option<MapDisk>)>,
    /// When the cores answer writes.
    pub(crate) durability: Durability,
    /// How long its cores keep completion records.
    pub(crate) completion_ttl_ns: u64,
    /// The hardware verdict its health monitor gives (it outlives crashes, as hardware does).
    health: Health,
    /// Its agent's view, while it runs (where the verdict goes).
    view: Option<Arc<ClusterView>>,
}

/// The address of core `core` of node `node`: 127.0.0.(node + 1), port 7000 + core.
pub(crate) fn core_addr(node: usize, core: u32) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1 + node as u8], 7000 + core as u16))
}

impl Node {
    pub(crate) fn new(
        index: usize,
        cores: u32,
        rebuild_completions: bool,
        replication: Option<ReplicationConfig>,
        spec: Option<ClusterSpec>,
    ) -> Node {
        let addrs = (0..cores).map(|i| core_addr(index, i)).collect();
        let layout = Arc::new(NodeLayout::new(PARTITIONS, addrs).expect("a valid layout"));
        let disks = (0..cores)
            .map(|core| Disk {
                log: MemoryVolume::new(&format!("core-{core}/log")),
                blobs: MemoryVolume::new(&format!("core-{core}/blobs")),
            })
            .collect();
        let membership = spec.map(|spec| {
            // (A joiner holds no seat in the map group: no disk for it.)
            let ids: Vec<u64> = (1..=spec.members.len() as u64).collect();
            let disk = spec.join.is_none().then(|| MapDisk::new(&ids));
            (spec, disk)
        });
        Node {
            layout,
            disks,
            cores: None,
            rebuild_completions,
            replication,
            membership,
            durability: Durability::Flushed,
            completion_ttl_ns: crate::COMPLETION_TTL_NS,
            health: Health::Healthy,
            view: None,
        }
    }

    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        (0..self.layout.cores()).map(|core| self.layout.addr_of(core)).collect()
    }

    /// Starts the node at wall-clock time `wall_ns`: every core replays its disks.
    pub(crate) fn start(&mut self, wall_ns: u64) {
        assert!(self.cores.is_none(), "started twice");
        let map: Arc<[u8]> = self.layout.map().encode().into();
        let stats = Arc::new(NodeStats::for_layout(&self.layout));
        let since = control::stamps_kept_since(wall_ns, crate::COMPLETION_TTL_NS);
        let mut cores = Vec::new();
        for (core, disk) in (0u32..).zip(&self.disks) {
            let config = store_config();
            let (blobs, _) =
                BlobStore::open(Box::new(disk.blobs.clone()), &config).expect("memory opens");
            let endpoints = self.layout.endpoints_on(core) as u32;
            let (mut shelf, stores, report) =
                Shelf::open(Box::new(disk.log.clone()), blobs, &config, endpoints, since)
                    .expect("memory opens");
            assert!(report.quarantined.is_empty(), "{:?}", report.quarantined);
            let mut recovered = report.stamps;
            shelf.blobs_mut().reclaim_unreferenced().expect("memory frees");
            if !self.rebuild_completions {
                recovered.clear(); // the injected bug
            }
            let storage = CoreStorage {
                shelf,
                stores,
                durability: self.durability,
                compaction_step_bytes: 256 << 10,
                sync_clock: None,
                recovered,
            };
            let config = CoreConfig {
                wall_clock_start_ns: wall_ns,
                completion_records_max: 1 << 14,
                completion_ttl_ns: self.completion_ttl_ns,
                replication: self.replication.clone(),
                ..CoreConfig::new(core, self.layout.clone(), [core as u8; 32])
            };
            let core = Core::with_storage(config, stats.clone(), map.clone(), storage)
                .expect("a valid core");
            cores.push((core, wall_ns));
        }
        if let Some((spec, disk)) = &self.membership {
            // As `cradle node` does: every core takes maps from its inbox, core 0 hosts the
            // agent.
            let view = Arc::new(ClusterView::for_spec(spec));
            view.health.store(self.health as u8, Ordering::Relaxed);
            self.view = Some(view.clone());
            let (agent, inboxes) = Agent::with_inboxes(spec.clone(), disk.as_ref(), wall_ns, view)
                .expect("a valid cluster spec");
            for ((core, _), inbox) in cores.iter_mut().zip(inboxes) {
                core.set_map_inbox(inbox);
            }
            cores[0].0.set_agent(agent);
        }
        self.cores = Some(cores);
    }

    /// The map the node's first core serves by (none while down).
    /// The cluster's members as its agent knows them (none while it is down).
    pub(crate) fn members(&self) -> Vec<SocketAddr> {
        let view = self.view.as_ref();
        view.and_then(|v| v.members.lock().ok().map(|m| m.clone())).unwrap_or_default()
    }

    pub(crate) fn map(&self) -> Option<PartitionMap> {
        let (core, _) = self.cores.as_ref()?.first()?;
        PartitionMap::decode(core.map_payload()).ok()
    }

    /// Stops every core at once, as a power cut would.
    pub(crate) fn crash(&mut self) {
        self.cores = None;
        self.view = None;
    }

    /// Whether it runs (not crashed).
    pub(crate) fn is_up(&self) -> bool {
        self.cores.is_some()
    }

    /// Its health monitor's verdict from now on.
    pub(crate) fn set_health(&mut self, health: Health) {
        self.health = health;
        if let Some(view) = &self.view {
            view.health.store(health as u8, Ordering::Relaxed);
        }
    }

    /// A datagram for core address `to` at simulated time `now_ns` (wall-clock offset from the
    /// simulation's start: `wall - start`); lost when the node is down. Returns the replies.
    pub(crate) fn receive(
        &mut self,
        now_ns: u64,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) -> Vec<Packet> {
        let mut packets = Vec::new();
        let Some(i) = self.layout_index(to) else { return packets };
        let Some(cores) = &mut self.cores else { return packets };
        let (core, started) = &mut cores[i];
        let local_ns = loop_clock(now_ns, *started);
        let mut out = Outbox { from: to, packets: &mut packets };
        core.handle_datagram(local_ns, from, bytes, &mut out);
        core.end_batch(local_ns, &mut out);
        packets
    }

    /// Batch-end work of every core without traffic (timers, group commit, sweeps).
    pub(crate) fn tick(&mut self, now_ns: u64) -> Vec<Packet> {
        let mut packets = Vec::new();
        let addrs = self.addrs();
        let Some(cores) = &mut self.cores else { return packets };
        for ((core, started), from) in cores.iter_mut().zip(addrs) {
            let mut out = Outbox { from, packets: &mut packets };
            core.end_batch(loop_clock(now_ns, *started), &mut out);
        }
        packets
    }

    /// The counters of the running cores, summed (none while down).
    pub(crate) fn counters(&self) -> Vec<control::CoreCounters> {
        self.cores.iter().flatten().map(|(core, _)| core.counters()).collect()
    }

    /// Whether one of this node's cores listens on `addr`.
    pub(crate) fn owns(&self, addr: SocketAddr) -> bool {
        self.layout_index(addr).is_some()
    }

    fn layout_index(&self, addr: SocketAddr) -> Option<usize> {
        (0..self.layout.cores()).position(|core| self.layout.addr_of(core) == addr)
    }
}

/// A core's loop clock: nanoseconds since it started, given the simulation's time and the
/// wall-clock time it started at.
fn loop_clock(now_ns: u64, started_wall_ns: u64) -> u64 {
    (crate::WALL_START_NS + now_ns).saturating_sub(started_wall_ns)
}
