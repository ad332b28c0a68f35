//! Node assembly: one UDP port and one pinned loop per core, each running a `control::Core`.

use control::cluster::{Agent, ClusterSpec, ClusterView};
use control::map_group::MapDisk;
use control::{Core, CoreConfig, Durability, NodeLayout, NodeStats, ReplicationConfig, SyncClock};
use dataplane::{RunnerConfig, UdpConfig, UdpPort};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use storage::StoreConfig;

/// What `cradle node` is asked to run.
#[derive(Clone, Debug)]
pub(crate) struct NodeOptions {
    /// Address of core 0; core i listens on port + i.
    pub(crate) listen: SocketAddr,
    /// Serving cores (one loop and one UDP port each).
    pub(crate) cores: u32,
    /// Where endpoint stores keep their files.
    pub(crate) data_dir: PathBuf,
    /// Partitions over all cores.
    pub(crate) partitions: u32,
    /// Busy-poll this long after the last datagram before blocking.
    pub(crate) spin: Duration,
    /// Pin core i's loop to CPU i.
    pub(crate) pin: bool,
    /// Where to serve Prometheus metrics, if anywhere.
    pub(crate) metrics: Option<SocketAddr>,
    /// When writes are acknowledged.
    pub(crate) durability: Durability,
    /// The endpoint and blob stores' settings.
    pub(crate) store: StoreConfig,
    /// Bytes one compaction step may copy per loop iteration (0: no compaction).
    pub(crate) compaction_step_bytes: u64,
    /// `memory` class: how often a background thread syncs the data directory's file system.
    pub(crate) sync_interval: Duration,
    /// Coalesce datagrams with UDP GSO/GRO (see `dataplane::UdpConfig::offload`).
    pub(crate) udp_offload: bool,
    /// Completion records per core (see `control::CoreConfig::completion_records_max`).
    pub(crate) completion_records: usize,
    /// The memcached door's port (on the listen host) and settings, if it is on.
    pub(crate) memcache: Option<(u16, memcache::DoorConfig)>,
    /// Membership of a cluster (none: a single node).
    pub(crate) cluster: Option<ClusterOptions>,
    /// The packet I/O: sockets, DPDK or AF_XDP (`crate::io`).
    pub(crate) io: crate::io::IoOptions,
    /// The hardware-health watch, if on (`crate::health_watch`).
    pub(crate) health: Option<crate::health_watch::HealthOptions>,
    /// The client keys every request must be sealed with (`--auth-keys`); none: no auth.
    pub(crate) auth: Option<Arc<control::KeyTable>>,
}

/// `cradle node --cluster ... --cluster-key ... [--replicas R]`.
#[derive(Clone, Debug)]
pub(crate) struct ClusterOptions {
    /// Core 0 of each bootstrap member (none for a node that joins).
    pub(crate) members: Vec<SocketAddr>,
    /// Join the running cluster through this member's core 0 (`--join`).
    pub(crate) join: Option<SocketAddr>,
    /// The shared secret's file.
    pub(crate) key_file: PathBuf,
    /// Replicas per partition.
    pub(crate) replicas: usize,
    /// A member silent this long is failed over.
    pub(crate) failover_after: Duration,
}

/// What a member node sets up before its loops start.
struct Membership {
    key: control::peer::ClusterKey,
    spec: ClusterSpec,
    /// The map group's journal (none for a node that joins: it holds no seat in the group).
    disk: Option<MapDisk>,
}

impl Membership {
    fn prepare(options: &NodeOptions, core0: SocketAddr) -> Result<Option<Membership>, String> {
        let Some(cluster) = &options.cluster else { return Ok(None) };
        let bytes = std::fs::read(&cluster.key_file).map_err(|e| {
            format!("cannot read the cluster key {}: {e}", cluster.key_file.display())
        })?;
        let key = control::peer::ClusterKey::from_file_bytes(&bytes)?;
        let me = match cluster.join {
            Some(_) => 0, // (the group says, once it admits this node)
            None => cluster.members.iter().position(|m| *m == core0).ok_or_else(|| {
                format!(
                    "--listen {core0} is not one of the --cluster members {:?}",
                    cluster.members
                )
            })?,
        };
        let spec = ClusterSpec {
            members: cluster.members.clone(),
            voters: cluster.members.len(),
            me,
            join: cluster.join.map(|via| control::cluster::Join { via, addr: core0 }),
            cores: options.cores,
            partitions: options.partitions,
            replicas: cluster.replicas,
            cluster_id: key.cluster_id(),
            key: key.clone(),
            detect_ns: cluster.failover_after.as_nanos() as u64,
            tick_ns: ClusterSpec::tick_for(cluster.failover_after.as_nanos() as u64),
            heartbeat_ns: 2_000_000,
        };
        spec.validate().map_err(|e| e.to_string())?;
        if spec.join.is_some() {
            return Ok(Some(Membership { key, spec, disk: None }));
        }
        let volume = storage::FileVolume::new(options.data_dir.join("cluster"));
        let ids: Vec<u64> = (1..=cluster.members.len() as u64).collect();
        let disk = match storage::Volume::open(&volume, "map-group") {
            Ok(device) => MapDisk::open(device),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                storage::Volume::create(&volume, "map-group", 64 << 10)
                    .and_then(|device| MapDisk::create(device, &ids))
            }
            Err(e) => Err(e),
        }
        .map_err(|e| format!("the map group's journal in {}: {e}", options.data_dir.display()))?;
        Ok(Some(Membership { key, spec, disk: Some(disk) }))
    }
}

/// A running node: its loops, its counters, and the flag that stops it.
pub(crate) struct Node {
    /// The address of each core, in core order.
    pub(crate) addrs: Vec<SocketAddr>,
    /// The memcached door's address (TCP and UDP), if it is on.
    pub(crate) memcache: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    loops: Vec<JoinHandle<Result<(), String>>>,
    metrics: Option<JoinHandle<()>>,
    syncers: Vec<Syncer>,
    health: Option<crate::health_watch::HealthWatch>,
    /// What a cluster member's agent knows (none on a single node).
    pub(crate) cluster: Option<Arc<ClusterView>>,
    /// Set once the node serves clients (`/healthz` answers 200 while it is set).
    pub(crate) serving: Arc<AtomicBool>,
    /// Holds the data directory's lock while the node runs.
    _lock: std::fs::File,
}

impl Node {
    /// Binds every core's port (so a busy port is reported before anything serves), then
    /// starts the loops.
    pub(crate) fn start(options: &NodeOptions, stop: Arc<AtomicBool>) -> Result<Node, String> {
        if options.cores == 0 {
            return Err("--cores must be at least 1".into());
        }
        // Memory given back by shrinking tables must leave the process (`storage::heap`;
        // false only off glibc, where there is no such knob to set).
        let _ = storage::heap::give_back_frees_of(128 * 1024);
        let ports = match crate::io::open_node_ports(&options.io, options.listen, options.cores)? {
            Some(bypass) => bypass,
            None => {
                let udp = UdpConfig { offload: options.udp_offload, ..UdpConfig::default() };
                let ports = bind_ports(options.listen, options.cores, &udp)?;
                ports.into_iter().map(crate::io::CorePort::Socket).collect()
            }
        };
        let addrs: Vec<SocketAddr> = ports.iter().map(crate::io::CorePort::local_addr).collect();
        let layout = Arc::new(
            NodeLayout::new(options.partitions, addrs.clone()).map_err(|e| e.to_string())?,
        );
        let lock = crate::recovery::claim(&options.data_dir, &layout)?;
        let background_sync = options.durability == Durability::Memory;
        let sync_clock = background_sync.then(|| Arc::new(SyncClock::default()));
        let sync_set = background_sync.then(|| Arc::new(storage::SyncSet::default()));
        // `flushed`: each core's files, synced by a thread of the core's own when its loop
        // asks, so the loop never waits for the disk; a cluster member's cores flush on
        // their loops (`Core::commit_off_loop`).
        let mut flushers = Vec::new();
        let mut storages = Vec::new();
        // Writes a client may still resend across this restart: their completion records
        // are rebuilt from the log, so a resend is answered and never applied twice.
        let stamps_since =
            control::stamps_kept_since(wall_clock_ns(), control::COMPLETION_TTL_NS_DEFAULT);
        for core in 0..options.cores {
            let (set, clock) = match options.durability {
                Durability::Memory => (sync_set.clone(), sync_clock.clone()),
                Durability::Flushed if options.cluster.is_some() => (None, None),
                Durability::Flushed => {
                    let (set, clock) =
                        (Arc::new(storage::SyncSet::default()), Arc::new(SyncClock::default()));
                    flushers.push((set.clone(), clock.clone()));
                    (Some(set), Some(clock))
                }
            };
            let mut storage = crate::recovery::open_core(
                &options.data_dir,
                &layout,
                core,
                &options.store,
                stamps_since,
                set.as_ref(),
            )?;
            storage.durability = options.durability;
            storage.compaction_step_bytes = options.compaction_step_bytes;
            storage.sync_clock = clock;
            storages.push(storage);
        }
        let stats = Arc::new(NodeStats::for_layout(&layout));
        let secret = random_secret()?;
        let serving = Arc::new(AtomicBool::new(false));
        let membership = Membership::prepare(options, addrs[0])?;
        // A member's maps name its cluster; a single node's name its own data set.
        let mut start_map = layout.map();
        start_map.cluster = match &membership {
            Some(m) => m.spec.cluster_id,
            None => crate::recovery::node_id(&options.data_dir)?,
        };
        let map: Arc<[u8]> = start_map.encode().into();
        let metrics = match options.metrics {
            Some(listen) => {
                let durability = match options.durability {
                    Durability::Memory => "memory",
                    Durability::Flushed => "flushed",
                };
                let node = crate::metrics::NodeInfo::now(durability);
                Some(crate::metrics::serve(
                    listen,
                    stats.clone(),
                    stop.clone(),
                    serving.clone(),
                    node,
                )?)
            }
            None => None,
        };
        let view = membership.as_ref().map(|m| Arc::new(ClusterView::for_spec(&m.spec)));
        if let Some(view) = &view {
            stats.set_cluster(view.clone());
        }
        // A member's cores take the cluster's maps from their inboxes; core 0 hosts the agent.
        let (mut agent, mut inboxes) = match (&membership, &view) {
            (Some(m), Some(view)) => {
                let (agent, inboxes) = Agent::with_inboxes(
                    m.spec.clone(),
                    m.disk.as_ref(),
                    wall_clock_ns(),
                    view.clone(),
                )
                .map_err(|e| e.to_string())?;
                (Some(agent), inboxes.into_iter().map(Some).collect())
            }
            _ => (None, Vec::new()),
        };
        let mut doors = memcache_doors(options, &stats)?;
        let memcache = doors.first().map(memcache::Door::local_addr).transpose();
        let memcache = memcache.map_err(|e| format!("memcache door: {e}"))?;
        let mut loops = Vec::new();
        for ((core, port), storage) in (0u32..).zip(ports).zip(storages) {
            let config = CoreConfig {
                completion_records_max: options.completion_records,
                completion_ttl_ns: control::COMPLETION_TTL_NS_DEFAULT,
                // The loop's clock starts just after this (the slack in the stamps covers it).
                wall_clock_start_ns: wall_clock_ns(),
                replication: membership.as_ref().map(|m| ReplicationConfig {
                    factor: m.spec.replicas,
                    ..ReplicationConfig::for_detection(m.key.clone(), m.spec.detect_ns)
                }),
                auth: options.auth.clone(),
                ..CoreConfig::new(core, layout.clone(), secret)
            };
            let mut handler = Core::with_storage(config, stats.clone(), map.clone(), storage)
                .map_err(|e| e.to_string())?;
            if membership.is_some() {
                handler.set_map_inbox(inboxes[core as usize].take().expect("one per core"));
                if core == 0 {
                    handler.set_agent(agent.take().expect("made for a member"));
                }
            }
            let mut runner = RunnerConfig {
                core: options.pin.then_some(core as usize),
                spin: options.spin,
                ..RunnerConfig::default()
            };
            if let Some(m) = &membership {
                // An idle member's loop still keeps the map group's clock and its leases.
                runner.block_max = runner.block_max.min(Duration::from_nanos(m.spec.tick_ns));
            }
            let stop = stop.clone();
            let thread = std::thread::Builder::new().name(format!("cradle-core-{core}"));
            let door = (!doors.is_empty()).then(|| doors.remove(0));
            let handle = thread
                .spawn(move || {
                    let ran = match door {
                        None => port.run(&mut handler, &runner, &stop),
                        Some(door) => port
                            .into_socket()
                            .map_err(std::io::Error::other)
                            .and_then(|port| memcache::DoorPort::new(port, &door, runner.spin))
                            .and_then(|mut port| {
                                let mut handler = memcache::DoorHandler { core: handler, door };
                                dataplane::run(&mut port, &mut handler, &runner, &stop)
                            }),
                    };
                    ran.map(|_| ()).map_err(|e| format!("core {core}: {e}"))
                })
                .map_err(|e| format!("cannot start core {core}: {e}"))?;
            loops.push(handle);
        }
        // Last, so that no error above leaves them running; if one cannot start, the loops
        // stop.
        let mut syncers = Vec::new();
        let memory =
            sync_clock.zip(sync_set).map(|(clock, set)| (set, clock, options.sync_interval));
        let flushed = flushers.into_iter().map(|(set, clock)| (set, clock, FLUSHER_IDLE));
        for (set, clock, interval) in memory.into_iter().chain(flushed) {
            match Syncer::spawn(set, interval, &clock) {
                Ok(syncer) => syncers.push(syncer),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        // (A host whose health cannot be watched still serves: it says so.)
        let health = options.health.clone().and_then(|o| {
            crate::health_watch::HealthWatch::spawn(o, stats.clone(), view.clone())
                .map_err(|e| eprintln!("cradle: {e}: the host's hardware is not watched"))
                .ok()
        });
        if view.is_none() {
            serving.store(true, Ordering::Release); // (a member: once the cluster's map is in)
        }
        Ok(Node {
            addrs,
            memcache,
            stop,
            loops,
            metrics,
            syncers,
            health,
            cluster: view,
            serving,
            _lock: lock,
        })
    }

    /// Asks every loop to stop and waits for them.
    pub(crate) fn stop(self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits for every loop to end (after the stop flag is set elsewhere).
    pub(crate) fn join(self) -> Result<(), String> {
        let mut first_error = Ok(());
        for handle in self.loops {
            let outcome = handle.join().unwrap_or_else(|_| Err("a core's loop panicked".into()));
            if first_error.is_ok() {
                first_error = outcome;
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(metrics) = self.metrics {
            let _ = metrics.join();
        }
        if let Some(health) = self.health {
            health.finish();
        }
        for syncer in self.syncers {
            // After the loops: its last sync covers their last writes.
            syncer.finish();
        }
        first_error
    }
}

/// The memcached door of each core, if it is on: TCP and UDP on the listen host.
fn memcache_doors(
    options: &NodeOptions,
    stats: &Arc<NodeStats>,
) -> Result<Vec<memcache::Door>, String> {
    let Some((port, config)) = &options.memcache else { return Ok(Vec::new()) };
    let addr = SocketAddr::new(options.listen.ip(), *port);
    let (doors, _) = memcache::doors(addr, options.cores, config, stats.clone())
        .map_err(|e| format!("memcache door: {e}"))?;
    Ok(doors)
}

/// Binds core i to `listen` port + i. With port 0, core 0 takes an ephemeral port and the
/// others follow it (retrying a few times if a neighbour is taken).
fn bind_ports(listen: SocketAddr, cores: u32, udp: &UdpConfig) -> Result<Vec<UdpPort>, String> {
    let attempts = if listen.port() == 0 { 20 } else { 1 };
    let mut last_error = String::new();
    for _ in 0..attempts {
        let first = UdpPort::bind(listen, udp.clone())
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let base = dataplane::Port::local_addr(&first);
        let mut ports = vec![first];
        for core in 1..cores {
            let Some(port) = base.port().checked_add(core as u16) else {
                return Err(format!("port {} + {core} is beyond 65535", base.port()));
            };
            let addr = SocketAddr::new(base.ip(), port);
            match UdpPort::bind(addr, udp.clone()) {
                Ok(p) => ports.push(p),
                Err(e) => {
                    last_error = format!("cannot listen on {addr} for core {core}: {e}");
                    break;
                }
            }
        }
        if ports.len() == cores as usize {
            return Ok(ports);
        }
    }
    Err(last_error)
}

/// How often a `flushed` core's sync thread looks for files to sync when no loop asked (it
/// finds none: the loop asks at each batch end that wrote).
const FLUSHER_IDLE: Duration = Duration::from_millis(100);

/// A thread that `fdatasync`s the stores' files written since its last round
/// (`storage::SyncSet`) every `interval`, and at once when a loop asks
/// (`SyncClock::request`), so the loops hand writes to the kernel and never wait for the
/// disk. The `memory` class has one for the node, every `sync_interval`: a power cut loses
/// about the last interval of acknowledged writes. The `flushed` class has one per core,
/// asked at each batch end that wrote: its loop answers those writes once the sync is done.
/// Each sync moves the `SyncClock` on, which lets the loops answer held writes and free the
/// blob chunks their writes dropped; a failed one fails the clock, and the loops then
/// refuse writes.
struct Syncer {
    thread: JoinHandle<()>,
    finish: Arc<AtomicBool>,
}

impl Syncer {
    fn spawn(
        files: Arc<storage::SyncSet>,
        interval: Duration,
        clock: &Arc<SyncClock>,
    ) -> Result<Syncer, String> {
        let finish = Arc::new(AtomicBool::new(false));
        let (clock, last) = (clock.clone(), finish.clone());
        let thread = std::thread::Builder::new().name("cradle-sync".into());
        let thread = thread
            .spawn(move || {
                clock.serve();
                loop {
                    let finishing = last.load(Ordering::Acquire);
                    if let Err(e) = clock.sync_with(|| files.sync()) {
                        eprintln!(
                            "cradle: sync of the data files failed: {e}; writes since the last \
                             good sync may not survive a power cut (`memory`: some were \
                             acknowledged; `flushed`: those waiting are answered UNAVAILABLE), \
                             so writes are refused from now on (restart after fixing the disk)"
                        );
                        return;
                    }
                    if finishing {
                        return;
                    }
                    if !clock.requested() {
                        std::thread::park_timeout(interval);
                    }
                }
            })
            .map_err(|e| format!("cannot start the sync thread: {e}"))?;
        Ok(Syncer { thread, finish })
    }

    /// Runs one last sync and ends the thread.
    fn finish(self) {
        self.finish.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

/// Nanoseconds since the Unix epoch.
fn wall_clock_ns() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_nanos() as u64)
}

fn random_secret() -> Result<[u8; 32], String> {
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .map_err(|e| format!("cannot read /dev/urandom for the token secret: {e}"))?;
    Ok(secret)
}
