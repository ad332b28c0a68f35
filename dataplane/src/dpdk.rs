//! DPDK behind the `Port` trait (cargo feature `dpdk`): the system DPDK bound with bindgen,
//! its static inline functions (rx/tx burst, mbuf alloc/free, the data pointer) through the
//! C shim in `dpdk/shim.c`.
//!
//! [`DpdkDevice::open`] initialises the EAL once per process from the given arguments, takes
//! one ethdev (by name, or the first one), gives it one RX and one TX queue per core and a
//! mempool per queue, and starts it. [`DpdkDevice::port`] then hands out queue `q` as a
//! [`DpdkPort`], to be polled by one loop only. Received mbufs are lent to the loop as they
//! are (a [`DpdkBuf`] points at the UDP payload inside the mbuf: no copy); transmit buffers
//! are fresh mbufs whose Ethernet/IPv4/UDP headers are written in front of the payload at
//! `tx_burst`. Frames are parsed and built by the safe `frame` module: ARP requests for the
//! port's address are answered from the receive path, peers' Ethernet addresses are learnt
//! from what they send (and asked for by ARP when unknown), anything else is counted in
//! [`FrameCounters`] and dropped. Checksums are computed in software (the virtual devices
//! this was built against offload none).
//!
//! This is the only module of the crate with DPDK's `unsafe`: the FFI calls, and the raw
//! mbuf pointers a `DpdkBuf` owns.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CStr, CString};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::raw::c_char;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::frame::{self, Frame, FrameCounters, Local, Mac, Neighbours, HEADERS_BYTES};
use crate::{Buffer, Port, PortCounters, BATCH};

#[allow(
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unreachable_pub,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]
mod sys {
    include!(concat!(env!("OUT_DIR"), "/dpdk_bindings.rs"));
}

/// Largest UDP payload sent: what fits a 1,500-byte IPv4 packet.
pub const DATAGRAM_BYTES_MAX: usize = 1500 - frame::IPV4_BYTES - frame::UDP_BYTES;

/// How to open a DPDK device. Memory: `mbufs_per_queue` mbufs of about 2.3 KiB per queue (19
/// MiB per queue by default), from hugepages unless the EAL runs with `--no-huge`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpdkConfig {
    /// EAL arguments, as on a DPDK program's command line before `--` (e.g. `-l 0 --no-huge
    /// --no-pci --vdev net_memif0,role=server`). The first EAL of a process is the only one.
    pub eal_args: Vec<String>,
    /// The ethdev to use by name (`net_memif0`); `None`: the first one the EAL found.
    pub device: Option<String>,
    /// RX and TX queues (one per core).
    pub queues: u16,
    /// Descriptors per RX queue.
    pub rx_descriptors: u16,
    /// Descriptors per TX queue.
    pub tx_descriptors: u16,
    /// Mbufs in each queue's pool; at least the RX descriptors plus two bursts.
    pub mbufs_per_queue: u32,
}

impl Default for DpdkConfig {
    fn default() -> DpdkConfig {
        DpdkConfig {
            eal_args: Vec::new(),
            device: None,
            queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            mbufs_per_queue: 8191,
        }
    }
}

impl DpdkConfig {
    /// Checks the sizes against each other.
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |what: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if self.queues == 0 || self.rx_descriptors == 0 || self.tx_descriptors == 0 {
            return invalid("queues and descriptors must be at least 1");
        }
        let needed = u32::from(self.rx_descriptors) + u32::from(self.tx_descriptors);
        if self.mbufs_per_queue < needed + 4 * BATCH as u32 {
            return invalid("mbufs_per_queue must cover the RX and TX descriptors and 4 bursts");
        }
        Ok(())
    }
}

/// Splits an EAL argument string on whitespace (no quoting: EAL arguments have no spaces).
pub fn split_eal_args(args: &str) -> Vec<String> {
    args.split_whitespace().map(str::to_string).collect()
}

/// Whether this process has initialised the EAL (it can only once).
static EAL: Mutex<Option<Result<(), String>>> = Mutex::new(None);

fn init_eal(args: &[String]) -> io::Result<()> {
    let mut eal = EAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(done) = &*eal {
        return done.clone().map_err(io::Error::other);
    }
    let mut argv: Vec<*mut c_char> = Vec::with_capacity(args.len() + 2);
    let program = CString::new("cradle").expect("no NUL");
    argv.push(program.into_raw());
    for arg in args {
        let arg = CString::new(arg.as_str())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in an EAL argument"))?;
        // The EAL may keep pointers into argv for the life of the process: never freed.
        argv.push(arg.into_raw());
    }
    let argc = argv.len() as i32;
    argv.push(std::ptr::null_mut());
    let argv = argv.leak();
    // SAFETY: argv is a NULL-terminated array of `argc` valid NUL-terminated strings that are
    // never freed, as rte_eal_init requires; it is called once per process (the lock above).
    let ret = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
    let outcome = if ret < 0 { Err(format!("EAL init failed: {}", last_error())) } else { Ok(()) };
    *eal = Some(outcome.clone());
    outcome.map_err(io::Error::other)
}

/// DPDK's description of its last error (rte_errno) on this thread.
fn last_error() -> String {
    // SAFETY: both only read the calling thread's rte_errno; rte_strerror returns a pointer
    // to a static or thread-local string that is valid until the next call on this thread.
    unsafe {
        let errno = sys::cradle_errno();
        let text = sys::rte_strerror(errno);
        if text.is_null() {
            format!("rte_errno {errno}")
        } else {
            format!("{} (rte_errno {errno})", CStr::from_ptr(text).to_string_lossy())
        }
    }
}

fn check(what: &str, ret: i32) -> io::Result<()> {
    if ret < 0 {
        let text = std::io::Error::from_raw_os_error(-ret);
        return Err(io::Error::other(format!("{what}: {text}")));
    }
    Ok(())
}

/// One started ethdev with its queues' pools; ports for its queues share it.
#[derive(Debug)]
pub struct DpdkDevice {
    port_id: u16,
    name: String,
    mac: Mac,
    pools: Vec<Pool>,
    /// Queues handed out as ports so far.
    taken: Mutex<Vec<bool>>,
}

#[derive(Debug)]
struct Pool(*mut sys::rte_mempool);

// SAFETY: a mempool is made for use from any thread (its default ops are multi-producer,
// multi-consumer); the pointer is only freed by the device's Drop, after every port is gone.
unsafe impl Send for Pool {}
// SAFETY: as for Send: every mempool operation used is thread-safe.
unsafe impl Sync for Pool {}

impl DpdkDevice {
    /// Initialises the EAL (first call in the process), then configures and starts the
    /// device with `config.queues` queue pairs.
    pub fn open(config: &DpdkConfig) -> io::Result<Arc<DpdkDevice>> {
        config.validate()?;
        init_eal(&config.eal_args)?;
        let port_id = find_port(config.device.as_deref())?;
        let name = port_name(port_id);
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: `info` is a valid, writable rte_eth_dev_info; port_id names a device.
        check("rte_eth_dev_info_get", unsafe { sys::rte_eth_dev_info_get(port_id, &mut info) })?;
        if config.queues > info.max_rx_queues || config.queues > info.max_tx_queues {
            return Err(io::Error::other(format!(
                "{name} has at most {} RX and {} TX queues, {} asked for",
                info.max_rx_queues, info.max_tx_queues, config.queues
            )));
        }
        let conf = sys::rte_eth_conf::default();
        let q = config.queues;
        // SAFETY: `conf` is a valid zeroed configuration (no offloads, no RSS) that outlives
        // the call; the device is stopped.
        check("rte_eth_dev_configure", unsafe {
            sys::rte_eth_dev_configure(port_id, q, q, &conf)
        })?;
        // SAFETY: port_id names a device.
        let socket = unsafe { sys::rte_eth_dev_socket_id(port_id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        let mut pools = Vec::new();
        for queue in 0..q {
            let pool = create_pool(port_id, queue, config.mbufs_per_queue, socket as i32)?;
            // SAFETY: the queue index is below the configured count, `pool` is a live mempool
            // that outlives the device (freed in Drop after stop and close); NULL conf asks
            // for the driver's defaults.
            let ret = unsafe {
                sys::rte_eth_rx_queue_setup(
                    port_id,
                    queue,
                    config.rx_descriptors,
                    socket,
                    std::ptr::null(),
                    pool.0,
                )
            };
            check("rte_eth_rx_queue_setup", ret)?;
            // SAFETY: as above, for the TX queue (which takes no pool).
            let ret = unsafe {
                sys::rte_eth_tx_queue_setup(
                    port_id,
                    queue,
                    config.tx_descriptors,
                    socket,
                    std::ptr::null(),
                )
            };
            check("rte_eth_tx_queue_setup", ret)?;
            pools.push(pool);
        }
        // SAFETY: the device is configured with every queue set up.
        check("rte_eth_dev_start", unsafe { sys::rte_eth_dev_start(port_id) })?;
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: `addr` is a valid, writable 6-byte address.
        check("rte_eth_macaddr_get", unsafe { sys::rte_eth_macaddr_get(port_id, &mut addr) })?;
        let mac = Mac(addr.addr_bytes);
        let taken = Mutex::new(vec![false; usize::from(q)]);
        Ok(Arc::new(DpdkDevice { port_id, name, mac, pools, taken }))
    }

    /// The device's Ethernet address.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The ethdev's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the link is up now (a memif link is up once its peer connected).
    pub fn link_up(&self) -> bool {
        let mut link = sys::rte_eth_link::default();
        // SAFETY: `link` is valid and writable; the call does not wait.
        let ret = unsafe { sys::rte_eth_link_get_nowait(self.port_id, &mut link) };
        ret == 0 && link.link_status() != 0
    }

    /// The device's own counters: (received, sent, missed by the device, RX errors).
    pub fn stats(&self) -> (u64, u64, u64, u64) {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: `s` is valid and writable.
        let _ = unsafe { sys::rte_eth_stats_get(self.port_id, &mut s) };
        (s.ipackets, s.opackets, s.imissed, s.ierrors)
    }

    /// Queue `queue` as a port that receives on `local` (this device's address: the IPv4
    /// address and UDP port its frames must be for). Each queue is handed out once.
    pub fn port(self: &Arc<Self>, queue: u16, local: SocketAddrV4) -> io::Result<DpdkPort> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        match taken.get_mut(usize::from(queue)) {
            None => return Err(io::Error::other(format!("{} has no queue {queue}", self.name))),
            Some(true) => return Err(io::Error::other(format!("queue {queue} is already in use"))),
            Some(slot) => *slot = true,
        }
        Ok(DpdkPort {
            pool: self.pools[usize::from(queue)].0,
            device: self.clone(),
            queue,
            local: Local { mac: self.mac, addr: local },
            neighbours: Neighbours::default(),
            counters: PortCounters::default(),
            frames: FrameCounters::default(),
            mbufs: [std::ptr::null_mut(); BATCH],
            ip_id: 0,
            registered: false,
        })
    }
}

impl Drop for DpdkDevice {
    fn drop(&mut self) {
        // SAFETY: the last port of the device is gone (each holds an Arc of it), so no queue
        // is polled any more; stop and close it, so a memif peer sees a clean disconnect. The
        // pools are left for the process's exit: a buffer may outlive its port.
        unsafe {
            sys::rte_eth_dev_stop(self.port_id);
            sys::rte_eth_dev_close(self.port_id);
        }
    }
}

fn find_port(name: Option<&str>) -> io::Result<u16> {
    if let Some(name) = name {
        let c = CString::new(name).map_err(|_| io::Error::other("NUL in the device name"))?;
        let mut id = 0u16;
        // SAFETY: `c` is a valid C string and `id` a writable u16.
        let ret = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        check(&format!("no DPDK device {name}"), ret)?;
        return Ok(id);
    }
    // SAFETY: a plain query of the device table.
    let id = unsafe { sys::rte_eth_find_next(0) };
    if u32::from(id) >= sys::RTE_MAX_ETHPORTS {
        return Err(io::Error::other(
            "the EAL found no network device (give one with --vdev, e.g. net_memif0 or net_null0)",
        ));
    }
    Ok(id)
}

fn port_name(port_id: u16) -> String {
    let mut name = [0 as c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: `name` has RTE_ETH_NAME_MAX_LEN bytes, the most the call writes (NUL included).
    let ret = unsafe { sys::rte_eth_dev_get_name_by_port(port_id, name.as_mut_ptr()) };
    if ret != 0 {
        return format!("port {port_id}");
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned()
}

fn create_pool(port_id: u16, queue: u16, mbufs: u32, socket: i32) -> io::Result<Pool> {
    let name = CString::new(format!("cradle_{port_id}_{queue}")).expect("no NUL");
    let cache = 256.min(mbufs / 8);
    let room = sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;
    // SAFETY: `name` is a valid C string; the other arguments are plain sizes.
    let pool =
        unsafe { sys::rte_pktmbuf_pool_create(name.as_ptr(), mbufs, cache, 0, room, socket) };
    if pool.is_null() {
        return Err(io::Error::other(format!(
            "cannot create a pool of {mbufs} mbufs: {} (hugepages reserved? or --no-huge)",
            last_error()
        )));
    }
    Ok(Pool(pool))
}

/// One queue pair of a DPDK device behind the `Port` trait.
#[derive(Debug)]
pub struct DpdkPort {
    device: Arc<DpdkDevice>,
    queue: u16,
    pool: *mut sys::rte_mempool,
    local: Local,
    neighbours: Neighbours,
    counters: PortCounters,
    frames: FrameCounters,
    /// Staging for one burst's mbuf pointers; never grows.
    mbufs: [*mut sys::rte_mbuf; BATCH],
    ip_id: u16,
    /// Whether the polling thread is registered with the EAL (for the mempool's cache).
    registered: bool,
}

// SAFETY: a port is used by one thread at a time (it moves into its loop's thread before
// the first burst); its queue is touched by that thread only, and its pool's operations are
// thread-safe.
unsafe impl Send for DpdkPort {}

impl DpdkPort {
    /// What this port has done so far.
    pub fn counters(&self) -> PortCounters {
        self.counters
    }

    /// The frames it dropped, by reason, and the ARP requests it answered.
    pub fn frame_counters(&self) -> FrameCounters {
        self.frames
    }

    /// The device this port is a queue of.
    pub fn device(&self) -> &Arc<DpdkDevice> {
        &self.device
    }

    /// One line for logs: device, queue, address and every counter.
    pub fn describe(&self) -> String {
        let (c, f) = (self.counters, self.frames);
        format!(
            "dpdk {} queue {} ({} {}): rx {} tx {} tx_dropped {} tx_would_block {} \
             rx_no_buffer {} | dropped {}: bad_ethernet {} other_mac {} other_ethertype {} \
             bad_ipv4 {} fragments {} not_udp {} bad_udp {} other_address {} arp_other {} | \
             arp_answered {} no_neighbour {}",
            self.device.name,
            self.queue,
            self.local.mac,
            self.local.addr,
            c.rx,
            c.tx,
            c.tx_dropped,
            c.tx_would_block,
            c.rx_no_buffer,
            f.dropped(),
            f.bad_ethernet,
            f.other_mac,
            f.other_ethertype,
            f.bad_ipv4,
            f.fragments,
            f.not_udp,
            f.bad_udp,
            f.other_address,
            f.arp_other,
            f.arp_answered,
            f.no_neighbour,
        )
    }

    /// Tells the peer at `ip` is at `mac` (instead of asking by ARP).
    pub fn add_neighbour(&mut self, ip: Ipv4Addr, mac: Mac) {
        self.neighbours.learn(ip, mac);
    }

    /// Where `ip` is, if it was learnt.
    pub fn neighbour(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.neighbours.lookup(ip)
    }

    /// Sends whole Ethernet frames as they are (tests and tools: malformed ones included),
    /// waiting out a full queue for up to a second at a time; returns how many the device
    /// took. Each must fit an mbuf.
    pub fn send_raw(&mut self, frames: &[&[u8]]) -> usize {
        let mut sent = 0;
        for chunk in frames.chunks(BATCH) {
            let mut bufs = Vec::with_capacity(BATCH);
            for frame in chunk {
                let Some(mut buf) = self.alloc_tx() else { break };
                let room = buf.raw_mut();
                if frame.len() > room.len() {
                    break;
                }
                room[..frame.len()].copy_from_slice(frame);
                buf.set_frame_len(frame.len());
                bufs.push(buf);
            }
            let mut start = 0;
            let mut progress = std::time::Instant::now();
            while start < bufs.len() && progress.elapsed() < Duration::from_secs(1) {
                for (slot, buf) in self.mbufs.iter_mut().zip(&bufs[start..]) {
                    *slot = buf.mbuf;
                }
                let n = (bufs.len() - start) as u16;
                // SAFETY: the first `n` pointers are valid one-segment mbufs owned by
                // `bufs[start..]`; the driver owns the ones it takes, given up below.
                let took = unsafe {
                    sys::cradle_tx_burst(
                        self.device.port_id,
                        self.queue,
                        self.mbufs.as_mut_ptr(),
                        n,
                    )
                };
                for buf in &mut bufs[start..start + usize::from(took)] {
                    buf.mbuf = std::ptr::null_mut();
                }
                start += usize::from(took);
                if took > 0 {
                    progress = std::time::Instant::now();
                }
            }
            sent += start;
            if start < chunk.len() {
                break;
            }
        }
        sent
    }

    fn register_thread(&mut self) {
        if !self.registered {
            // SAFETY: the EAL is initialised (the device exists); registering a non-EAL
            // thread only gives it an lcore id. Failure (no free lcore) leaves the pools
            // working without their per-lcore cache.
            let _ = unsafe { sys::rte_thread_register() };
            self.registered = true;
        }
    }

    /// Sends one frame now (ARP), or frees it if the queue is full.
    fn send_now(&mut self, mut buf: DpdkBuf) {
        let mut one = [buf.mbuf];
        // SAFETY: `one` holds one valid mbuf owned by `buf`; the queue is this port's.
        let sent =
            unsafe { sys::cradle_tx_burst(self.device.port_id, self.queue, one.as_mut_ptr(), 1) };
        if sent == 1 {
            buf.mbuf = std::ptr::null_mut(); // the driver owns it now
        }
    }

    /// Handles one received mbuf: a datagram for us goes to `rx`, the rest is answered or
    /// counted and freed.
    fn receive(&mut self, buf: DpdkBuf, rx: &mut Vec<DpdkBuf>) {
        // SAFETY: `buf` owns the mbuf; its first `room` bytes from the data pointer are the
        // mbuf's (the data) and its length was read from it.
        let segments = unsafe { sys::cradle_mbuf_segments(buf.mbuf) };
        if segments != 1 {
            self.frames.bad_ethernet += 1;
            return;
        }
        let bytes = buf.frame();
        match frame::parse(bytes, &self.local, &mut self.frames) {
            Frame::Udp { src_mac, src, payload: (start, end) } => {
                self.neighbours.learn(*src.ip(), src_mac);
                let mut buf = buf;
                buf.start = start as u16;
                buf.len = (end - start) as u16;
                buf.peer = SocketAddr::V4(src);
                buf.framed = false;
                self.counters.rx += 1;
                rx.push(buf);
            }
            Frame::ArpRequest { sender_mac, sender_ip } => {
                self.neighbours.learn(sender_ip, sender_mac);
                let mut reply = buf;
                let len =
                    frame::write_arp_reply(reply.raw_mut(), &self.local, (sender_mac, sender_ip));
                reply.set_frame_len(len);
                self.send_now(reply);
            }
            Frame::Dropped { arp_sender } => {
                if let Some((ip, mac)) = arp_sender {
                    self.neighbours.learn(ip, mac);
                }
            }
        }
    }

    /// Writes the headers of a datagram to send (or turns it into an ARP request for an
    /// unknown peer); false if it cannot be sent at all.
    fn frame_for_send(&mut self, buf: &mut DpdkBuf) -> bool {
        if buf.framed {
            return true;
        }
        let SocketAddr::V4(peer) = buf.peer else {
            return false;
        };
        let len = usize::from(buf.len);
        if usize::from(buf.start) != HEADERS_BYTES {
            // A received buffer reused for sending: its payload may sit behind IPv4 options.
            let start = usize::from(buf.start);
            buf.raw_mut().copy_within(start..start + len, HEADERS_BYTES);
            buf.start = HEADERS_BYTES as u16;
        }
        let frame_len = match self.neighbours.lookup(*peer.ip()) {
            Some(mac) => {
                self.ip_id = self.ip_id.wrapping_add(1);
                let (src, id) = ((self.local.mac, self.local.addr), self.ip_id);
                frame::write_udp(buf.raw_mut(), src, (mac, peer), len, id)
            }
            None => {
                self.frames.no_neighbour += 1;
                frame::write_arp_request(buf.raw_mut(), &self.local, *peer.ip())
            }
        };
        buf.set_frame_len(frame_len);
        buf.framed = true;
        true
    }
}

impl Port for DpdkPort {
    type Buf = DpdkBuf;

    fn rx_burst(&mut self, rx: &mut Vec<DpdkBuf>) -> io::Result<usize> {
        self.register_thread();
        let want = BATCH.saturating_sub(rx.len());
        if want == 0 {
            return Ok(0);
        }
        let before = rx.len();
        // SAFETY: `self.mbufs` has room for BATCH >= want pointers; the queue is this port's
        // and polled by this thread only.
        let got = unsafe {
            sys::cradle_rx_burst(
                self.device.port_id,
                self.queue,
                self.mbufs.as_mut_ptr(),
                want as u16,
            )
        };
        for i in 0..usize::from(got) {
            let mbuf = self.mbufs[i];
            // SAFETY: the driver handed over `mbuf`, a valid one-or-more-segment mbuf.
            let buf = unsafe { DpdkBuf::from_mbuf(mbuf) };
            self.receive(buf, rx);
        }
        Ok(rx.len() - before)
    }

    fn alloc_tx(&mut self) -> Option<DpdkBuf> {
        // SAFETY: the pool is live for as long as the device (held by this port).
        let mbuf = unsafe { sys::cradle_pktmbuf_alloc(self.pool) };
        if mbuf.is_null() {
            return None;
        }
        // SAFETY: a freshly allocated, valid mbuf, now owned by the buffer.
        let mut buf = unsafe { DpdkBuf::from_mbuf(mbuf) };
        buf.start = HEADERS_BYTES as u16;
        buf.len = 0;
        Some(buf)
    }

    fn tx_burst(&mut self, tx: &mut Vec<DpdkBuf>) -> io::Result<usize> {
        let mut sent_datagrams = 0;
        while !tx.is_empty() {
            let mut i = 0;
            while i < tx.len().min(BATCH) {
                if self.frame_for_send(&mut tx[i]) {
                    i += 1;
                } else {
                    self.counters.tx_dropped += 1;
                    drop(tx.remove(i));
                }
            }
            let n = tx.len().min(BATCH);
            if n == 0 {
                break;
            }
            for (slot, buf) in self.mbufs.iter_mut().zip(&tx[..n]) {
                *slot = buf.mbuf;
            }
            // SAFETY: the first `n` pointers are valid framed mbufs owned by `tx[..n]`; the
            // driver takes ownership of the first `sent`, which are then given up below.
            let sent = unsafe {
                sys::cradle_tx_burst(
                    self.device.port_id,
                    self.queue,
                    self.mbufs.as_mut_ptr(),
                    n as u16,
                )
            };
            let sent = usize::from(sent);
            for mut buf in tx.drain(..sent) {
                if buf.is_arp() {
                    self.counters.tx_dropped += 1;
                } else {
                    sent_datagrams += 1;
                }
                buf.mbuf = std::ptr::null_mut();
            }
            if sent < n {
                self.counters.tx_would_block += 1;
                break;
            }
        }
        self.counters.tx += sent_datagrams as u64;
        Ok(sent_datagrams)
    }

    fn release(&mut self, buf: DpdkBuf) {
        drop(buf);
    }

    fn wait_readable(&mut self, timeout: Duration) -> io::Result<()> {
        // Polled devices have no readiness to wait on: nap briefly so an idle loop that is
        // told to block (spin exhausted) gives the core back without missing much.
        std::thread::sleep(timeout.min(Duration::from_micros(50)));
        Ok(())
    }

    fn local_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.local.addr)
    }
}

/// An mbuf lent by a [`DpdkPort`]: the payload is `start..start + len` of its data. Dropping
/// it frees the mbuf.
#[derive(Debug)]
pub struct DpdkBuf {
    mbuf: *mut sys::rte_mbuf,
    data: *mut u8,
    /// Bytes from `data` to the end of the mbuf's buffer.
    room: u16,
    start: u16,
    len: u16,
    peer: SocketAddr,
    /// Headers written (by `tx_burst`) and the frame length set.
    framed: bool,
}

impl DpdkBuf {
    /// # Safety
    /// `mbuf` is a valid mbuf that nothing else owns; the buffer frees it when dropped.
    unsafe fn from_mbuf(mbuf: *mut sys::rte_mbuf) -> DpdkBuf {
        // SAFETY: per the contract, `mbuf` is valid.
        let (data, room) = unsafe { (sys::cradle_mbuf_data(mbuf), sys::cradle_mbuf_room(mbuf)) };
        DpdkBuf {
            mbuf,
            data,
            room,
            start: 0,
            len: 0,
            peer: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            framed: false,
        }
    }

    /// The received frame, as long as the mbuf says.
    fn frame(&self) -> &[u8] {
        // SAFETY: this buffer owns the mbuf, whose data_len bytes from `data` are initialised
        // frame bytes (data_len <= room).
        unsafe {
            let len = sys::cradle_mbuf_data_len(self.mbuf).min(self.room);
            std::slice::from_raw_parts(self.data, usize::from(len))
        }
    }

    /// The mbuf's whole data room, for writing a frame.
    fn raw_mut(&mut self) -> &mut [u8] {
        // SAFETY: this buffer owns the mbuf exclusively; `room` bytes from `data` lie in its
        // buffer, memory the EAL mapped (zero-filled by the kernel, since only ever written
        // with frame bytes), so every byte is initialised.
        unsafe { std::slice::from_raw_parts_mut(self.data, usize::from(self.room)) }
    }

    fn set_frame_len(&mut self, len: usize) {
        debug_assert!(len <= usize::from(self.room));
        // SAFETY: this buffer owns the one-segment mbuf; len fits its room.
        unsafe { sys::cradle_mbuf_set_len(self.mbuf, len as u16) };
    }

    fn is_arp(&self) -> bool {
        let f = self.frame();
        f.len() >= frame::ETHERNET_BYTES && f[12..14] == [0x08, 0x06]
    }

    fn capacity(&self) -> usize {
        (usize::from(self.room) - usize::from(self.start)).min(DATAGRAM_BYTES_MAX)
    }
}

impl Drop for DpdkBuf {
    fn drop(&mut self) {
        if !self.mbuf.is_null() {
            // SAFETY: the buffer still owns the mbuf (it was not handed to the driver).
            unsafe { sys::cradle_pktmbuf_free(self.mbuf) };
        }
    }
}

impl Buffer for DpdkBuf {
    fn payload(&self) -> &[u8] {
        // SAFETY: this buffer owns the mbuf; start + len <= room, within its data room, and
        // those bytes were written (received, or by `capacity_mut`'s caller before set_len).
        unsafe {
            std::slice::from_raw_parts(
                self.data.add(usize::from(self.start)),
                usize::from(self.len),
            )
        }
    }

    fn capacity_mut(&mut self) -> &mut [u8] {
        let (start, capacity) = (usize::from(self.start), self.capacity());
        self.framed = false;
        &mut self.raw_mut()[start..start + capacity]
    }

    fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "len {len} > capacity {}", self.capacity());
        self.len = len as u16;
        self.framed = false;
    }

    fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = peer;
        self.framed = false;
    }
}
