//! `cradle node` settings: defaults, an optional TOML file (`--config`), then command-line
//! flags, in that order of precedence; validated as a whole with one clear error.

use crate::node::{ClusterOptions, NodeOptions};
use control::{Durability, COMPLETION_RECORDS_DEFAULT};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use storage::StoreConfig;

/// The file format (see `docs/OPERATIONS.md`). Unknown keys are errors, not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default)]
    node: NodeSection,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    storage: StorageSection,
    #[serde(default)]
    memcache: MemcacheSection,
    #[serde(default)]
    io: IoSection,
    #[serde(default)]
    health: HealthSection,
    #[serde(default)]
    auth: AuthSection,
}

/// `[health]`: the hardware-health watch (on by default; see `crate::health_watch`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthSection {
    enabled: Option<bool>,
    smartctl_json: Option<Vec<PathBuf>>,
    sysfs_root: Option<PathBuf>,
    interval_ms: Option<u64>,
    settle_readings: Option<u32>,
}

/// `[auth]`: client authentication (off unless a key file is given; see `control::auth`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    /// The key file: `ID NAME ROLE SECRET` lines.
    keys: Option<PathBuf>,
}

/// `[io]`: the packet I/O (sockets unless `backend` says otherwise; see `crate::io`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IoSection {
    /// `socket`, `dpdk` or `af-xdp`.
    backend: Option<String>,
    dpdk_eal: Option<String>,
    xdp_ifname: Option<String>,
    xdp_queue: Option<u32>,
}

/// `[memcache]`: the memcached door (off unless a port is given).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemcacheSection {
    port: Option<u16>,
    item_bytes_max: Option<usize>,
    flush_all: Option<bool>,
    udp_allow: Option<Vec<String>>,
    connections_max: Option<usize>,
    /// Serve the door although client authentication is on (it cannot carry a MAC).
    without_auth: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageSection {
    segment_bytes: Option<u64>,
    blob_threshold_bytes: Option<usize>,
    chunk_bytes: Option<usize>,
    dead_ratio: Option<f64>,
    compaction_step_bytes: Option<u64>,
    sync_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSection {
    listen: Option<String>,
    cores: Option<u32>,
    data_dir: Option<PathBuf>,
    partitions: Option<u32>,
    spin_us: Option<u64>,
    pin: Option<bool>,
    durability: Option<String>,
    udp_offload: Option<bool>,
    completion_records: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    listen: Option<String>,
}

/// What the command line said (None: not given; the file or the default decides).
#[derive(Debug, Default, clap::Args)]
pub(crate) struct Flags {
    /// Address of core 0, HOST:PORT (a name resolves at start) [default: 127.0.0.1:7000].
    #[arg(long, value_parser = resolve_addr)]
    pub(crate) listen: Option<SocketAddr>,
    /// Serving cores [default: 1].
    #[arg(long)]
    pub(crate) cores: Option<u32>,
    /// Directory for the endpoints' stores.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Partitions over all cores [default: 256].
    #[arg(long)]
    pub(crate) partitions: Option<u32>,
    /// Busy-poll this many microseconds after the last datagram before blocking [default: 200].
    #[arg(long)]
    pub(crate) spin_us: Option<u64>,
    /// Do not pin core i's loop to CPU i.
    #[arg(long)]
    pub(crate) no_pin: bool,
    /// Serve Prometheus metrics over HTTP on this address (HOST:PORT).
    #[arg(long, value_parser = resolve_addr)]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// When writes are acknowledged: `flushed` (after the batch's fdatasync) or `memory`
    /// [default: flushed].
    #[arg(long)]
    pub(crate) durability: Option<String>,
    /// Send and receive UDP datagrams one per message (no GSO/GRO coalescing).
    #[arg(long)]
    pub(crate) no_udp_offload: bool,
    /// Be a member of the cluster whose bootstrap members listen (core 0) on these
    /// comma-separated addresses; `--listen` must be one of them.
    #[arg(long, value_delimiter = ',', value_parser = resolve_addr)]
    pub(crate) cluster: Vec<SocketAddr>,
    /// Join a running cluster through this member (its core 0: any member; one that does not
    /// lead the map group relays). Give the cluster's `--cores`, `--partitions` and
    /// `--replicas`; the map may then place replicas here.
    #[arg(long, value_parser = resolve_addr, conflicts_with = "cluster")]
    pub(crate) join: Option<SocketAddr>,
    /// The cluster's shared secret (a file of at least 32 bytes, the same on every member).
    #[arg(long)]
    pub(crate) cluster_key: Option<PathBuf>,
    /// Replicas per partition in a cluster [default: 3, or the members if fewer].
    #[arg(long)]
    pub(crate) replicas: Option<usize>,
    /// A member silent this long leaves the map, its primaries handed to backups [default:
    /// 500 ms; shorter fails over sooner, and takes a stalled node (a slow disk's fsync on its
    /// first core) for a dead one sooner, which is costly while a node that left cannot
    /// rejoin].
    #[arg(long)]
    pub(crate) failover_after_ms: Option<u64>,
    /// Serve the memcached protocol on this port (TCP and UDP, on the listen address's host).
    #[arg(long)]
    pub(crate) memcache_port: Option<u16>,
    /// Packet I/O: kernel sockets, DPDK or AF_XDP (the bypass ones need a build with the
    /// cargo feature of that name) [default: socket].
    #[arg(long, value_enum)]
    pub(crate) io: Option<crate::io::IoBackend>,
    /// With `--io dpdk`: DPDK's EAL arguments, e.g. "-l 0 --no-huge --no-pci --vdev
    /// net_memif0,role=server".
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) dpdk_eal: Option<String>,
    /// With `--io af-xdp`: the network interface.
    #[arg(long)]
    pub(crate) xdp_ifname: Option<String>,
    /// With `--io af-xdp`: the queue of core 0 (core i takes queue Q + i) [default: 0].
    #[arg(long)]
    pub(crate) xdp_queue: Option<u32>,
    /// Judge the host's hardware from these saved `smartctl --json -a` files (or every
    /// `*.json` in these directories, read again at every reading) instead of running
    /// smartctl [default: run smartctl on this machine's devices].
    #[arg(long)]
    pub(crate) health_smartctl_json: Vec<PathBuf>,
    /// Read the EDAC counters under this directory instead of / (for tests).
    #[arg(long)]
    pub(crate) health_sysfs_root: Option<PathBuf>,
    /// Time between two hardware-health readings [default: 60,000 ms].
    #[arg(long)]
    pub(crate) health_interval_ms: Option<u64>,
    /// No hardware-health watch (a suspect or failing host is then never drained).
    #[arg(long)]
    pub(crate) no_health: bool,
    /// Require every request to be sealed with a client key of this file (`ID NAME ROLE
    /// SECRET` lines; `cradle keygen` makes one) [default: no authentication].
    #[arg(long)]
    pub(crate) auth_keys: Option<PathBuf>,
    /// With --auth-keys: serve the memcached door anyway (it cannot authenticate: anyone who
    /// reaches its port may read and write everything).
    #[arg(long)]
    pub(crate) memcache_without_auth: bool,
}

/// Most partitions a node accepts (each costs ~100 bytes per core even when empty, and the
/// partition map grows by ~27 bytes each).
const PARTITIONS_MAX: u32 = 1 << 20;

impl FileConfig {
    /// Reads and parses `path`.
    pub(crate) fn load(path: &Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let message = e.message().to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start].matches('\n').count() + 1;
                    format!("config {} line {line}: {message}", path.display())
                }
                None => format!("config {}: {message}", path.display()),
            }
        })
    }

    /// Merges defaults, this file and `flags`; validates the result.
    pub(crate) fn resolve(self, flags: Flags) -> Result<NodeOptions, String> {
        let n = self.node;
        let memcache = memcache_options(&self.memcache, flags.memcache_port)?;
        let io = io_options(self.io, &flags)?;
        let health = health_options(self.health, &flags)?;
        let auth = match flags.auth_keys.as_ref().or(self.auth.keys.as_ref()) {
            None => None,
            Some(path) => Some(std::sync::Arc::new(control::KeyTable::load(path)?)),
        };
        let door_without_auth =
            flags.memcache_without_auth || self.memcache.without_auth.unwrap_or(false);
        if auth.is_some() && memcache.is_some() && !door_without_auth {
            return Err("the memcached door cannot authenticate its clients: with --auth-keys \
                        drop --memcache-port, or give --memcache-without-auth ([memcache] \
                        without_auth = true) and firewall its port"
                .into());
        }
        let options = NodeOptions {
            auth,
            io,
            health,
            memcache,
            listen: match (flags.listen, &n.listen) {
                (Some(addr), _) => addr,
                (None, Some(name)) => {
                    resolve_addr(name).map_err(|e| format!("[node] listen: {e}"))?
                }
                (None, None) => SocketAddr::from(([127, 0, 0, 1], 7000)),
            },
            cores: flags.cores.or(n.cores).unwrap_or(1),
            data_dir: flags
                .data_dir
                .or(n.data_dir)
                .ok_or("no data directory: give --data-dir or data_dir in [node] of the config")?,
            partitions: flags.partitions.or(n.partitions).unwrap_or(256),
            spin: Duration::from_micros(flags.spin_us.or(n.spin_us).unwrap_or(200)),
            pin: !flags.no_pin && n.pin.unwrap_or(true),
            metrics: match (flags.metrics_listen, &self.metrics.listen) {
                (Some(addr), _) => Some(addr),
                (None, Some(name)) => {
                    Some(resolve_addr(name).map_err(|e| format!("[metrics] listen: {e}"))?)
                }
                (None, None) => None,
            },
            store: {
                let st = &self.storage;
                let d = StoreConfig::default();
                StoreConfig {
                    segment_bytes: st.segment_bytes.unwrap_or(d.segment_bytes),
                    blob_threshold_bytes: st.blob_threshold_bytes.unwrap_or(d.blob_threshold_bytes),
                    chunk_bytes: st.chunk_bytes.unwrap_or(d.chunk_bytes),
                    dead_ratio: st.dead_ratio.unwrap_or(d.dead_ratio),
                    ..d
                }
            },
            compaction_step_bytes: self.storage.compaction_step_bytes.unwrap_or(256 << 10),
            sync_interval: Duration::from_millis(self.storage.sync_interval_ms.unwrap_or(100)),
            udp_offload: !flags.no_udp_offload && n.udp_offload.unwrap_or(true),
            completion_records: n.completion_records.unwrap_or(COMPLETION_RECORDS_DEFAULT),
            cluster: match (flags.cluster.is_empty() && flags.join.is_none(), flags.cluster_key) {
                (true, None) => None,
                (true, Some(_)) => return Err("--cluster-key needs --cluster or --join".into()),
                (false, None) => {
                    return Err("--cluster and --join need --cluster-key FILE (the members' \
                                shared secret, at least 32 bytes)"
                        .into())
                }
                (false, Some(key_file)) => Some(ClusterOptions {
                    replicas: flags.replicas.unwrap_or(match flags.join {
                        Some(_) => 3,
                        None => flags.cluster.len().min(3),
                    }),
                    failover_after: Duration::from_millis(flags.failover_after_ms.unwrap_or(500)),
                    members: flags.cluster,
                    join: flags.join,
                    key_file,
                }),
            },
            durability: match flags.durability.or(n.durability) {
                None => Durability::default(),
                Some(name) => Durability::parse(&name).ok_or_else(|| {
                    format!("durability must be \"memory\" or \"flushed\", not {name:?}")
                })?,
            },
        };
        validate(&options, available_cpus())?;
        Ok(options)
    }
}

/// `HOST:PORT` as an address: an IP address as written, or a name resolved now (the first
/// IPv4 address it has, else its first address), so `localhost:7000` works.
pub(crate) fn resolve_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    if !text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    {
        return Err(format!("{text:?} is not HOST:PORT (e.g. 127.0.0.1:7000 or localhost:7000)"));
    }
    let addrs: Vec<SocketAddr> =
        text.to_socket_addrs().map_err(|e| format!("cannot resolve {text:?}: {e}"))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// CPUs this process may run on (the machine, its affinity mask and cgroup quota); `None`
/// when the system does not say.
fn available_cpus() -> Option<usize> {
    std::thread::available_parallelism().ok().map(usize::from)
}

/// The door's port and settings, if it is on (a port from the flag or the file).
fn memcache_options(
    m: &MemcacheSection,
    flag_port: Option<u16>,
) -> Result<Option<(u16, memcache::DoorConfig)>, String> {
    let Some(port) = flag_port.or(m.port) else { return Ok(None) };
    let d = memcache::DoorConfig::default();
    let udp_allow = match &m.udp_allow {
        None => d.udp_allow.clone(),
        Some(list) => list
            .iter()
            .map(|n| n.parse().map_err(|e| format!("memcache udp_allow: {e}")))
            .collect::<Result<_, String>>()?,
    };
    let config = memcache::DoorConfig {
        item_bytes_max: m.item_bytes_max.unwrap_or(d.item_bytes_max),
        flush_all: m.flush_all.unwrap_or(d.flush_all),
        connections_max: m.connections_max.unwrap_or(d.connections_max),
        udp_allow,
        ..d
    };
    config.validate()?;
    Ok(Some((port, config)))
}

/// The flags' health settings over the file's (`None`: no watch).
fn health_options(
    file: HealthSection,
    flags: &Flags,
) -> Result<Option<crate::health_watch::HealthOptions>, String> {
    if flags.no_health || file.enabled == Some(false) {
        return Ok(None);
    }
    let interval_ms = flags.health_interval_ms.or(file.interval_ms).unwrap_or(60_000);
    if !(100..=86_400_000).contains(&interval_ms) {
        return Err(format!(
            "the health interval must be between 100 ms and a day, not {interval_ms} ms"
        ));
    }
    let smartctl_json = match flags.health_smartctl_json.is_empty() {
        true => file.smartctl_json.unwrap_or_default(),
        false => flags.health_smartctl_json.clone(),
    };
    Ok(Some(crate::health_watch::HealthOptions {
        sources: health::Sources {
            smartctl_json,
            sysfs_root: flags.health_sysfs_root.clone().or(file.sysfs_root),
        },
        interval: Duration::from_millis(interval_ms),
        settle_readings: file.settle_readings.unwrap_or(health::SETTLE_READINGS_DEFAULT),
    }))
}

/// The flags' packet I/O settings over the file's.
fn io_options(file: IoSection, flags: &Flags) -> Result<crate::io::IoOptions, String> {
    let backend = match (flags.io, file.backend) {
        (Some(backend), _) => backend,
        (None, None) => crate::io::IoBackend::default(),
        (None, Some(name)) => crate::io::IoBackend::parse(&name).ok_or_else(|| {
            format!("[io] backend must be \"socket\", \"dpdk\" or \"af-xdp\", not {name:?}")
        })?,
    };
    let io = crate::io::IoOptions {
        backend,
        dpdk_eal: flags.dpdk_eal.clone().or(file.dpdk_eal),
        xdp_ifname: flags.xdp_ifname.clone().or(file.xdp_ifname),
        xdp_queue: flags.xdp_queue.or(file.xdp_queue).unwrap_or(0),
    };
    io.validate()?;
    Ok(io)
}

fn validate(o: &NodeOptions, cpus: Option<usize>) -> Result<(), String> {
    if let Some(cpus) = cpus.filter(|&cpus| o.cores as usize > cpus) {
        // Each core is a loop that spins `spin_us` and is pinned to its own CPU: more loops
        // than CPUs only take turns on them (and pinning to a CPU that is not there fails).
        return Err(format!(
            "cores = {} but this process may run on {cpus} CPU(s) (the machine, its affinity \
             mask and cgroup quota): give at most {cpus}",
            o.cores
        ));
    }
    if o.memcache.is_some() && o.io.backend != crate::io::IoBackend::Socket {
        return Err("the memcached door runs on kernel sockets: drop --memcache-port or use \
                    --io socket"
            .into());
    }
    if o.cores == 0 {
        return Err("cores must be at least 1".into());
    }
    if o.partitions < o.cores || o.partitions > PARTITIONS_MAX {
        return Err(format!(
            "partitions must be between cores ({}) and {PARTITIONS_MAX}, not {}",
            o.cores, o.partitions
        ));
    }
    if o.listen.port() != 0 && u32::from(o.listen.port()) + o.cores - 1 > u32::from(u16::MAX) {
        return Err(format!(
            "ports {}..{} do not all exist",
            o.listen.port(),
            u32::from(o.listen.port()) + o.cores - 1
        ));
    }
    if o.spin > Duration::from_secs(1) {
        return Err("spin_us above 1,000,000 would keep a core busy for nothing".into());
    }
    if !(1024..=1 << 28).contains(&o.completion_records) {
        return Err(format!(
            "completion_records must be between 1,024 and 268,435,456, not {}",
            o.completion_records
        ));
    }
    if o.sync_interval.is_zero() || o.sync_interval > Duration::from_secs(60) {
        return Err("sync_interval_ms must be between 1 and 60,000".into());
    }
    o.store.validate().map_err(|e| e.to_string())?;
    if o.data_dir.as_os_str().is_empty() {
        return Err("data_dir is empty".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cradle.toml");
        std::fs::write(&path, text).unwrap();
        FileConfig::load(&path)
    }

    #[test]
    fn file_then_flags_then_validation() {
        let file = parse("[node]\nlisten = \"127.0.0.1:9000\"\ncores = 2\ndata_dir = \"/d\"\n[metrics]\nlisten = \"127.0.0.1:9100\"\n").unwrap();
        let o = file.resolve(Flags { cores: Some(1), ..Flags::default() }).unwrap();
        assert_eq!((o.listen.port(), o.cores, o.partitions), (9000, 1, 256));
        assert_eq!(o.metrics, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(o.pin);
        assert_eq!(o.durability, Durability::Flushed);
    }

    #[test]
    fn the_packaged_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/cradle.toml");
        let o = FileConfig::load(&path).unwrap().resolve(Flags::default()).unwrap();
        assert_eq!((o.listen.port(), o.cores, o.partitions), (7000, 1, 256));
        assert!(o.metrics.is_some());
        assert!(o.udp_offload);
        assert_eq!(o.completion_records, COMPLETION_RECORDS_DEFAULT);
        assert_eq!(
            (o.sync_interval, o.spin),
            (Duration::from_millis(100), Duration::from_micros(200))
        );
    }

    #[test]
    fn offload_records_and_sync_interval_are_set_and_checked() {
        let text = "[node]\ndata_dir = \"/d\"\nudp_offload = false\ncompletion_records = 65536\n\
                    [storage]\nsync_interval_ms = 20\n";
        let o = parse(text).unwrap().resolve(Flags::default()).unwrap();
        assert!(!o.udp_offload);
        assert_eq!((o.completion_records, o.sync_interval), (65536, Duration::from_millis(20)));
        let flags = Flags { no_udp_offload: true, data_dir: Some("/d".into()), ..Flags::default() };
        assert!(!FileConfig::default().resolve(flags).unwrap().udp_offload);
        let e = parse("[node]\ndata_dir = \"/d\"\ncompletion_records = 10\n").unwrap();
        assert!(e.resolve(Flags::default()).unwrap_err().contains("completion_records"));
        let e = parse("[node]\ndata_dir = \"/d\"\n[storage]\nsync_interval_ms = 0\n").unwrap();
        assert!(e.resolve(Flags::default()).unwrap_err().contains("sync_interval_ms"));
    }

    #[test]
    fn the_memcache_door_is_off_unless_a_port_is_given() {
        let o = parse("[node]\ndata_dir = \"/d\"\n").unwrap().resolve(Flags::default()).unwrap();
        assert!(o.memcache.is_none());
        let text = "[node]\ndata_dir = \"/d\"\n[memcache]\nport = 11211\nflush_all = true\n\
                    item_bytes_max = 2097152\nudp_allow = [\"10.0.0.0/8\"]\n";
        let (port, door) =
            parse(text).unwrap().resolve(Flags::default()).unwrap().memcache.unwrap();
        assert_eq!((port, door.flush_all, door.item_bytes_max), (11211, true, 2 << 20));
        assert_eq!(door.udp_allow, vec!["10.0.0.0/8".parse().unwrap()]);
        let flags = Flags { memcache_port: Some(5), ..Flags::default() };
        let (port, door) = parse(text).unwrap().resolve(flags).unwrap().memcache.unwrap();
        assert_eq!((port, door.flush_all), (5, true), "the flag wins, the file's settings stay");
        let bad = "[node]\ndata_dir = \"/d\"\n[memcache]\nport = 1\nitem_bytes_max = 99999999\n";
        assert!(parse(bad)
            .unwrap()
            .resolve(Flags::default())
            .unwrap_err()
            .contains("item_bytes_max"));
        let bad = "[node]\ndata_dir = \"/d\"\n[memcache]\nport = 1\nudp_allow = [\"x\"]\n";
        assert!(parse(bad).unwrap().resolve(Flags::default()).unwrap_err().contains("udp_allow"));
    }

    #[test]
    fn the_io_backend_comes_from_the_flags_then_the_file() {
        use crate::io::IoBackend;
        let o = parse("[node]\ndata_dir = \"/d\"\n").unwrap().resolve(Flags::default()).unwrap();
        assert_eq!(o.io.backend, IoBackend::Socket);
        let dpdk = "[node]\ndata_dir = \"/d\"\n[io]\nbackend = \"dpdk\"\ndpdk_eal = \"-l 0\"\n";
        match (cfg!(feature = "dpdk"), parse(dpdk).unwrap().resolve(Flags::default())) {
            (true, Ok(o)) => {
                assert_eq!(
                    (o.io.backend, o.io.dpdk_eal.as_deref()),
                    (IoBackend::Dpdk, Some("-l 0"))
                )
            }
            // A build without the backend says so, in one line naming the feature.
            (false, Err(e)) => assert!(e.contains("--features dpdk"), "{e}"),
            (built, other) => panic!("built with dpdk: {built}; {other:?}"),
        }
        let flags = Flags { io: Some(IoBackend::Socket), ..Flags::default() };
        assert_eq!(parse(dpdk).unwrap().resolve(flags).unwrap().io.backend, IoBackend::Socket);
        if cfg!(feature = "dpdk") {
            let e = parse("[node]\ndata_dir = \"/d\"\n[io]\nbackend = \"dpdk\"\n").unwrap();
            assert!(e.resolve(Flags::default()).unwrap_err().contains("--dpdk-eal"));
        }
        let e = parse("[node]\ndata_dir = \"/d\"\n[io]\nbackend = \"rdma\"\n").unwrap();
        assert!(e.resolve(Flags::default()).unwrap_err().contains("backend"));
        let xdp = "[node]\ndata_dir = \"/d\"\n[io]\nbackend = \"af-xdp\"\nxdp_ifname = \"veth0\"\n\
                   xdp_queue = 2\n";
        match (cfg!(feature = "af-xdp"), parse(xdp).unwrap().resolve(Flags::default())) {
            (true, Ok(o)) => {
                assert_eq!((o.io.xdp_ifname.as_deref(), o.io.xdp_queue), (Some("veth0"), 2))
            }
            (false, Err(e)) => assert!(e.contains("--features af-xdp"), "{e}"),
            (built, other) => panic!("built with af-xdp: {built}; {other:?}"),
        }
        // The memcached door needs sockets (or, in a build without AF_XDP, the backend is
        // refused first).
        let door = format!("{xdp}[memcache]\nport = 11211\n");
        let e = parse(&door).unwrap().resolve(Flags::default()).unwrap_err();
        assert!(e.contains("memcached door") || e.contains("--features af-xdp"), "{e}");
    }

    #[test]
    fn auth_is_off_unless_a_key_file_is_given_in_the_file_or_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("node.keys");
        std::fs::write(
            &keys,
            format!("1 app read {}\n2 ops admin {}\n", "1".repeat(64), "2".repeat(64)),
        )
        .unwrap();
        let o = parse("[node]\ndata_dir = \"/d\"\n").unwrap().resolve(Flags::default()).unwrap();
        assert!(o.auth.is_none());
        let text = format!("[node]\ndata_dir = \"/d\"\n[auth]\nkeys = {:?}\n", keys.display());
        let o = parse(&text).unwrap().resolve(Flags::default()).unwrap();
        assert_eq!(o.auth.map(|t| t.len()), Some(2));
        let flags = Flags {
            auth_keys: Some(dir.path().join("missing")),
            data_dir: Some("/d".into()),
            ..Flags::default()
        };
        let e = FileConfig::default().resolve(flags).unwrap_err();
        assert!(e.contains("cannot read the key file"), "{e}");
        let door = format!("{text}[memcache]\nport = 11211\n");
        let e = parse(&door).unwrap().resolve(Flags::default()).unwrap_err();
        assert!(e.contains("memcached door cannot authenticate"), "{e}");
        let allowed = format!("{door}without_auth = true\n");
        let o = parse(&allowed).unwrap().resolve(Flags::default()).unwrap();
        assert!(o.auth.is_some() && o.memcache.is_some());
    }

    #[test]
    fn cores_beyond_the_cpus_are_refused() {
        let flags = |cores| Flags {
            data_dir: Some("/d".into()),
            cores: Some(cores),
            partitions: Some(64),
            ..Flags::default()
        };
        let o = FileConfig::default().resolve(flags(1)).unwrap();
        assert!(validate(&o, Some(1)).is_ok());
        let o = NodeOptions { cores: 64, ..o };
        let e = validate(&o, Some(2)).unwrap_err();
        assert!(
            e.contains("cores = 64") && e.contains("2 CPU(s)") && e.contains("at most 2"),
            "{e}"
        );
        assert!(validate(&o, None).is_ok(), "unknown CPUs: not refused");
        let e = FileConfig::default().resolve(flags(4096)).unwrap_err();
        assert!(e.contains("cores = 4096"), "the machine's own count: {e}");
    }

    #[test]
    fn names_resolve_and_bad_addresses_say_what_is_wanted() {
        assert_eq!(
            resolve_addr("127.0.0.1:7000").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 7000))
        );
        let local = resolve_addr("localhost:7000").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 7000, "{local}");
        assert!(local.is_ipv4(), "IPv4 first: {local}");
        assert_eq!(resolve_addr("[::1]:9").unwrap().port(), 9);
        assert!(resolve_addr("localhost").unwrap_err().contains("HOST:PORT"));
        assert!(resolve_addr("localhost:99999").unwrap_err().contains("HOST:PORT"));
        assert!(resolve_addr("no-such-host.invalid:7000").unwrap_err().contains("cannot resolve"));
        let text = "[node]\nlisten = \"localhost:7100\"\ndata_dir = \"/d\"\n[metrics]\nlisten = \"localhost:9100\"\n";
        let o = parse(text).unwrap().resolve(Flags::default()).unwrap();
        assert_eq!(
            (o.listen, o.metrics),
            (
                SocketAddr::from(([127, 0, 0, 1], 7100)),
                Some(SocketAddr::from(([127, 0, 0, 1], 9100)))
            )
        );
        let e = parse("[node]\nlisten = \"nowhere\"\ndata_dir = \"/d\"\n").unwrap();
        assert!(e.resolve(Flags::default()).unwrap_err().contains("[node] listen"));
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            flags: Flags,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "localhost:7200",
            "--cluster",
            "localhost:1,127.0.0.2:2",
        ])
        .unwrap();
        assert_eq!(cli.flags.listen, Some(SocketAddr::from(([127, 0, 0, 1], 7200))));
        assert_eq!(cli.flags.cluster[0], SocketAddr::from(([127, 0, 0, 1], 1)));
    }

    #[test]
    fn nonsensical_store_sizes_are_refused_with_the_allowed_range() {
        let e = parse("[node]\ndata_dir = \"/d\"\n[storage]\nchunk_bytes = 3\n").unwrap();
        let e = e.resolve(Flags::default()).unwrap_err();
        assert!(e.contains("chunk_bytes must be in 4096..=4194304") && e.contains("not 3"), "{e}");
        let e = parse("[node]\ndata_dir = \"/d\"\n[storage]\nblob_threshold_bytes = 0\n").unwrap();
        assert!(e
            .resolve(Flags::default())
            .unwrap_err()
            .contains("blob_threshold_bytes must be in 1.."));
        let e = parse("[node]\ndata_dir = \"/d\"\n[storage]\nsegment_bytes = 3\n").unwrap();
        assert!(e.resolve(Flags::default()).unwrap_err().contains("16 KiB..256 MiB"));
        let ok = parse("[node]\ndata_dir = \"/d\"\n[storage]\nchunk_bytes = 4096\n").unwrap();
        assert!(ok.resolve(Flags::default()).is_ok());
    }

    #[test]
    fn mistakes_get_one_clear_error() {
        let e = parse("[node]\ncorez = 2\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("unknown field `corez`"), "{e}");
        let e = parse("[node]\ndurability = \"fast\"\ndata_dir = \"/d\"\n").unwrap();
        assert!(e.resolve(Flags::default()).unwrap_err().contains("durability"));
        let e = parse("[storage]\nsegment_bytes = 1000\n[node]\ndata_dir = \"/d\"").unwrap();
        assert!(e.resolve(Flags::default()).unwrap_err().contains("segment_bytes"));
        let e = parse("[node]\ncores = \"two\"\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = FileConfig::default().resolve(Flags::default()).unwrap_err();
        assert!(e.contains("data"), "{e}");
        // Four cores, on a machine said to have as many CPUs as asked (None).
        let flags = Flags { data_dir: Some("/d".into()), ..Flags::default() };
        let o = NodeOptions { cores: 4, ..FileConfig::default().resolve(flags).unwrap() };
        let with = |partitions| NodeOptions { partitions, ..o.clone() };
        assert!(validate(&with(3), None).unwrap_err().contains("partitions"));
        assert!(validate(&with(4), None).is_ok());
        let high_port = NodeOptions { listen: "127.0.0.1:65535".parse().unwrap(), ..with(4) };
        assert!(validate(&high_port, None).unwrap_err().contains("ports"));
        assert!(FileConfig::load(Path::new("/nonexistent/cradle.toml"))
            .unwrap_err()
            .contains("cannot read"));
    }
}
