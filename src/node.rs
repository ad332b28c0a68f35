//! Node assembly: one UDP port and one pinned loop per core, each running a `control::Core`.

use control::{Core, CoreConfig, Durability, NodeLayout, NodeStats, SyncClock};
use dataplane::{run, RunnerConfig, UdpConfig, UdpPort};
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
}

/// A running node: its loops, its counters, and the flag that stops it.
pub(crate) struct Node {
    /// The address of each core, in core order.
    pub(crate) addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    loops: Vec<JoinHandle<Result<(), String>>>,
    metrics: Option<JoinHandle<()>>,
    syncer: Option<JoinHandle<()>>,
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
        let udp = UdpConfig { offload: options.udp_offload, ..UdpConfig::default() };
        let ports = bind_ports(options.listen, options.cores, &udp)?;
        let addrs: Vec<SocketAddr> = ports.iter().map(dataplane::Port::local_addr).collect();
        let layout = Arc::new(
            NodeLayout::new(options.partitions, addrs.clone()).map_err(|e| e.to_string())?,
        );
        let lock = crate::recovery::claim(&options.data_dir, &layout)?;
        let (sync_clock, syncer) = match options.durability {
            Durability::Memory => {
                let clock = Arc::new(SyncClock::default());
                let syncer = spawn_syncer(&options.data_dir, options.sync_interval, &clock, &stop)?;
                (Some(clock), Some(syncer))
            }
            Durability::Flushed => (None, None),
        };
        let mut storages = Vec::new();
        for core in 0..options.cores {
            let mut storage =
                crate::recovery::open_core(&options.data_dir, &layout, core, &options.store)?;
            storage.durability = options.durability;
            storage.compaction_step_bytes = options.compaction_step_bytes;
            storage.sync_clock = sync_clock.clone();
            storages.push(storage);
        }
        let map: Arc<[u8]> = layout.map().encode().into();
        let stats = Arc::new(NodeStats::for_layout(&layout));
        let secret = random_secret()?;
        let metrics = match options.metrics {
            Some(listen) => Some(crate::metrics::serve(listen, stats.clone(), stop.clone())?),
            None => None,
        };
        let mut loops = Vec::new();
        for ((core, mut port), storage) in (0u32..).zip(ports).zip(storages) {
            let config = CoreConfig {
                completion_records_max: options.completion_records,
                ..CoreConfig::new(core, layout.clone(), secret)
            };
            let mut handler = Core::with_storage(config, stats.clone(), map.clone(), storage)
                .map_err(|e| e.to_string())?;
            let runner = RunnerConfig {
                core: options.pin.then_some(core as usize),
                spin: options.spin,
                ..RunnerConfig::default()
            };
            let stop = stop.clone();
            let thread = std::thread::Builder::new().name(format!("cradle-core-{core}"));
            let handle = thread
                .spawn(move || {
                    run(&mut port, &mut handler, &runner, &stop)
                        .map(|_| ())
                        .map_err(|e| format!("core {core}: {e}"))
                })
                .map_err(|e| format!("cannot start core {core}: {e}"))?;
            loops.push(handle);
        }
        Ok(Node { addrs, stop, loops, metrics, syncer, _lock: lock })
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
        if let Some(syncer) = self.syncer {
            let _ = syncer.join();
        }
        first_error
    }
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

/// The `memory` class's background sync: `syncfs` of the data directory's file system every
/// `interval`, so the loops hand writes to the kernel and never wait for the disk, and a power
/// cut loses about the last `interval` of acknowledged writes. Each sync moves `clock` on,
/// which lets the loops free the blob chunks their writes dropped. Stops with `stop`.
fn spawn_syncer(
    dir: &std::path::Path,
    interval: Duration,
    clock: &Arc<SyncClock>,
    stop: &Arc<AtomicBool>,
) -> Result<JoinHandle<()>, String> {
    let directory = std::fs::File::open(dir)
        .map_err(|e| format!("cannot open {} for syncing: {e}", dir.display()))?;
    let (clock, stop, shown) = (clock.clone(), stop.clone(), dir.display().to_string());
    let thread = std::thread::Builder::new().name("cradle-sync".into());
    thread
        .spawn(move || {
            let mut failures = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let synced = clock.sync_with(|| storage::sync_file_system(&directory));
                if let Err(e) = synced {
                    failures += 1;
                    // Every failure counts; the first and then one in a hundred are printed.
                    if failures % 100 == 1 {
                        eprintln!(
                            "cradle: background sync of {shown} failed ({failures} so far): {e}; \
                             freed blob space waits for a sync that succeeds"
                        );
                    }
                }
                std::thread::sleep(interval);
            }
        })
        .map_err(|e| format!("cannot start the sync thread: {e}"))
}

fn random_secret() -> Result<[u8; 32], String> {
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .map_err(|e| format!("cannot read /dev/urandom for the token secret: {e}"))?;
    Ok(secret)
}
