//! Which packet I/O a core's loop runs on: kernel sockets (the default),
//! DPDK (cargo feature `dpdk`) or AF_XDP (cargo feature `af-xdp`).
//!
//! A backend this build lacks is refused in one line that names the feature to build with. A
//! backend that is built in but refused by the machine (no hugepages, no device, no root, a
//! kernel or driver without AF_XDP) falls back to sockets with a message saying why, so a
//! node always comes up.

use dataplane::{Handler, Port, RunStats, RunnerConfig, UdpPort};
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::AtomicBool;

/// The packet I/O.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum IoBackend {
    /// Kernel UDP sockets (recvmmsg/sendmmsg, GSO/GRO).
    #[default]
    Socket,
    /// DPDK: a polled device, one RX and TX queue per core (`--dpdk-eal`).
    Dpdk,
    /// AF_XDP: one XDP socket per core on a network interface (`--xdp-ifname`).
    AfXdp,
}

impl IoBackend {
    /// Parses the config file's spelling (the flag's).
    pub(crate) fn parse(name: &str) -> Option<IoBackend> {
        match name {
            "socket" => Some(IoBackend::Socket),
            "dpdk" => Some(IoBackend::Dpdk),
            "af-xdp" | "af_xdp" => Some(IoBackend::AfXdp),
            _ => None,
        }
    }
}

/// The backend and its settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IoOptions {
    /// Which backend.
    pub(crate) backend: IoBackend,
    /// DPDK's EAL arguments (`-l 0 --vdev net_memif0 ...`).
    pub(crate) dpdk_eal: Option<String>,
    /// AF_XDP: the interface.
    pub(crate) xdp_ifname: Option<String>,
    /// AF_XDP: the first queue (core i uses queue + i).
    pub(crate) xdp_queue: u32,
}

impl IoOptions {
    /// Checks that the chosen backend has what it needs.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match self.backend {
            IoBackend::Socket => Ok(()),
            IoBackend::Dpdk if !cfg!(feature = "dpdk") => Err(not_built("dpdk", "dpdk")),
            IoBackend::AfXdp if !cfg!(feature = "af-xdp") => Err(not_built("af-xdp", "af-xdp")),
            IoBackend::Dpdk if self.dpdk_eal.is_none() => {
                Err("--io dpdk needs --dpdk-eal \"EAL ARGS\" (e.g. \"-l 0 --no-huge --no-pci \
                     --vdev net_memif0,role=server\")"
                    .into())
            }
            IoBackend::AfXdp if self.xdp_ifname.is_none() => {
                Err("--io af-xdp needs --xdp-ifname IF".into())
            }
            _ => Ok(()),
        }
    }
}

/// One core's port, whichever backend it is.
pub(crate) enum CorePort {
    /// A kernel UDP socket.
    Socket(UdpPort),
    /// A DPDK queue pair.
    #[cfg(feature = "dpdk")]
    Dpdk(dataplane::dpdk::DpdkPort),
    /// An AF_XDP socket.
    #[cfg(feature = "af-xdp")]
    Xdp(dataplane::xdp::XdpPort),
}

impl CorePort {
    /// The address this port serves.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        match self {
            CorePort::Socket(p) => p.local_addr(),
            #[cfg(feature = "dpdk")]
            CorePort::Dpdk(p) => p.local_addr(),
            #[cfg(feature = "af-xdp")]
            CorePort::Xdp(p) => p.local_addr(),
        }
    }

    /// The socket, for what only works on one (the memcached door).
    pub(crate) fn into_socket(self) -> Result<UdpPort, String> {
        match self {
            CorePort::Socket(p) => Ok(p),
            #[allow(unreachable_patterns)]
            _ => Err("the memcached door needs --io socket".into()),
        }
    }

    /// Runs `handler`'s loop on this port (monomorphised per backend: the enum is matched
    /// once, here). A bypass port prints its counters when the loop ends.
    pub(crate) fn run<H: Handler>(
        self,
        handler: &mut H,
        config: &RunnerConfig,
        stop: &AtomicBool,
    ) -> io::Result<RunStats> {
        match self {
            CorePort::Socket(mut p) => dataplane::run(&mut p, handler, config, stop),
            #[cfg(feature = "dpdk")]
            CorePort::Dpdk(mut p) => {
                let ran = dataplane::run(&mut p, handler, config, stop);
                eprintln!("cradle: {}", p.describe());
                ran
            }
            #[cfg(feature = "af-xdp")]
            CorePort::Xdp(mut p) => {
                let ran = dataplane::run(&mut p, handler, config, stop);
                eprintln!("cradle: {}", p.describe());
                ran
            }
        }
    }
}

fn not_built(backend: &str, feature: &str) -> String {
    format!(
        "--io {backend}: this cradle was built without it; build with `cargo build --release \
         --features {feature}`"
    )
}

fn ipv4_listen(listen: SocketAddr, backend: &str) -> Result<SocketAddrV4, String> {
    match listen {
        SocketAddr::V4(v4) if !v4.ip().is_unspecified() && v4.port() != 0 => Ok(v4),
        _ => Err(format!(
            "--io {backend} serves one IPv4 address of its own: give --listen a concrete \
             IPv4 address and port, not {listen}"
        )),
    }
}

/// The node's bypass ports, one per core (core i on `listen` port + i), or `None` for
/// sockets: asked for, or the fallback when the machine refuses the backend.
pub(crate) fn open_node_ports(
    io: &IoOptions,
    listen: SocketAddr,
    cores: u32,
) -> Result<Option<Vec<CorePort>>, String> {
    io.validate()?;
    let opened = match io.backend {
        IoBackend::Socket => return Ok(None),
        IoBackend::Dpdk => open_dpdk(io, ipv4_listen(listen, "dpdk")?, cores),
        IoBackend::AfXdp => open_xdp(io, ipv4_listen(listen, "af-xdp")?, cores),
    };
    match opened {
        Ok(ports) => Ok(Some(ports)),
        Err(Refusal::NotBuilt(message)) => Err(message),
        Err(Refusal::Machine(message)) => {
            eprintln!("cradle: {message}; falling back to kernel sockets");
            Ok(None)
        }
    }
}

/// Why a backend is not used.
enum Refusal {
    /// This build lacks it: an error.
    #[cfg_attr(all(feature = "dpdk", feature = "af-xdp"), allow(dead_code))]
    NotBuilt(String),
    /// The machine said no: fall back.
    #[cfg_attr(not(any(feature = "dpdk", feature = "af-xdp")), allow(dead_code))]
    Machine(String),
}

#[cfg(not(feature = "dpdk"))]
fn open_dpdk(_: &IoOptions, _: SocketAddrV4, _: u32) -> Result<Vec<CorePort>, Refusal> {
    Err(Refusal::NotBuilt(not_built("dpdk", "dpdk")))
}

#[cfg(feature = "dpdk")]
fn open_dpdk(io: &IoOptions, listen: SocketAddrV4, cores: u32) -> Result<Vec<CorePort>, Refusal> {
    use dataplane::dpdk::{split_eal_args, DpdkConfig, DpdkDevice};
    let config = DpdkConfig {
        eal_args: split_eal_args(io.dpdk_eal.as_deref().unwrap_or_default()),
        queues: cores as u16,
        ..DpdkConfig::default()
    };
    let machine = |e: io::Error| Refusal::Machine(format!("--io dpdk unavailable: {e}"));
    let device = DpdkDevice::open(&config).map_err(machine)?;
    let mut ports = Vec::new();
    for core in 0..cores {
        let addr = SocketAddrV4::new(*listen.ip(), listen.port() + core as u16);
        ports.push(CorePort::Dpdk(device.port(core as u16, addr).map_err(machine)?));
    }
    eprintln!(
        "cradle: dpdk {} ({}) serving {listen} on {cores} queue(s), link {}",
        device.name(),
        device.mac(),
        if device.link_up() { "up" } else { "down (waiting for the peer)" }
    );
    Ok(ports)
}

#[cfg(not(feature = "af-xdp"))]
fn open_xdp(_: &IoOptions, _: SocketAddrV4, _: u32) -> Result<Vec<CorePort>, Refusal> {
    Err(Refusal::NotBuilt(not_built("af-xdp", "af-xdp")))
}

#[cfg(feature = "af-xdp")]
fn open_xdp(io: &IoOptions, listen: SocketAddrV4, cores: u32) -> Result<Vec<CorePort>, Refusal> {
    use dataplane::xdp::{XdpConfig, XdpPort};
    let ifname = io.xdp_ifname.clone().unwrap_or_default();
    let mut ports = Vec::new();
    for core in 0..cores {
        let config = XdpConfig {
            ifname: ifname.clone(),
            queue: io.xdp_queue + core,
            ..XdpConfig::default()
        };
        let addr = SocketAddrV4::new(*listen.ip(), listen.port() + core as u16);
        let port = XdpPort::open(&config, addr)
            .map_err(|e| Refusal::Machine(format!("--io af-xdp unavailable on {ifname}: {e}")))?;
        eprintln!("cradle: {}", port.describe());
        ports.push(CorePort::Xdp(port));
    }
    Ok(ports)
}
