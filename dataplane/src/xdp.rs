//! AF_XDP behind the `Port` trait (cargo feature `af-xdp`): one XDP socket per queue of a
//! network interface, written against the kernel's interface with `libc` alone.
//!
//! Why no crate: `xsk-rs` builds libxdp and libbpf (it needs clang, m4 and libelf-dev at build
//! time, which the default machine lacks), and `xdpilone` is EUPL-1.2, a copyleft licence in
//! an Apache-2.0 project; neither loads the XDP program that steers frames into the socket,
//! which is the part that needs care. The socket and its four rings are a few setsockopt
//! and mmap calls, and the program is five BPF instructions (`bpf_redirect_map` into an
//! XSKMAP keyed by the receive queue, falling back to the kernel's stack), loaded with
//! `bpf(2)` and attached with a BPF link (Linux 5.9+), so it is detached when the port closes
//! even if the process dies.
//!
//! UMEM frames are lent to the loop: a received [`XdpBuf`] points into the frame the kernel
//! filled (no copy); a transmit buffer is a free frame whose headers are written at
//! `tx_burst`. The fill ring is topped up from the free frames before every receive and the
//! completion ring drained into them, so both stay as full (and as empty) as the frames
//! allow. Frames are parsed and built by the safe `frame` module, as for DPDK. The whole
//! interface queue goes to the socket: give cradle an interface (or a queue steered by the
//! NIC) of its own.
//!
//! This is the only module of the crate with AF_XDP's `unsafe`: the syscalls, the shared
//! rings, and the raw pointers into the UMEM an `XdpBuf` holds.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::frame::{self, Frame, FrameCounters, Local, Mac, Neighbours, HEADERS_BYTES};
use crate::{Buffer, Port, PortCounters, BATCH};

/// How to open an AF_XDP port. Memory: `frames * frame_bytes` of UMEM (8 MiB by default),
/// locked by the kernel while the socket is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpConfig {
    /// The network interface.
    pub ifname: String,
    /// Its receive queue (the socket also transmits on it).
    pub queue: u32,
    /// UMEM frames; a power of two, at least 4 bursts.
    pub frames: u32,
    /// Bytes per frame: 2,048 or 4,096.
    pub frame_bytes: u32,
    /// Descriptors per ring (RX, TX, fill, completion); a power of two.
    pub ring_size: u32,
    /// Attach the program in generic (SKB) mode instead of letting the kernel choose (native
    /// where the driver has it).
    pub generic: bool,
}

impl Default for XdpConfig {
    fn default() -> XdpConfig {
        XdpConfig {
            ifname: String::new(),
            queue: 0,
            frames: 4096,
            frame_bytes: 2048,
            ring_size: 2048,
            generic: false,
        }
    }
}

impl XdpConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |what: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if !self.frames.is_power_of_two() || self.frames < 4 * BATCH as u32 {
            return invalid("frames must be a power of two of at least 4 bursts");
        }
        if self.frame_bytes != 2048 && self.frame_bytes != 4096 {
            return invalid("frame_bytes must be 2048 or 4096");
        }
        if !self.ring_size.is_power_of_two() || self.ring_size < BATCH as u32 {
            return invalid("ring_size must be a power of two of at least one burst");
        }
        if self.ifname.is_empty() || self.ifname.len() >= libc::IFNAMSIZ {
            return invalid("ifname must name an interface");
        }
        Ok(())
    }
}

/// Largest UDP payload sent: what fits a 1,500-byte IPv4 packet.
const DATAGRAM_BYTES_MAX: usize = 1500 - frame::IPV4_BYTES - frame::UDP_BYTES;

fn last_os_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// One side of a shared ring: the producer and consumer indices and the descriptors.
#[derive(Debug)]
struct Ring {
    map: *mut u8,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut u8,
    mask: u32,
}

impl Ring {
    /// Maps the ring of `size` entries of `entry_bytes` at page offset `pgoff` of `fd`.
    fn map(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        entry_bytes: usize,
        pgoff: u64,
    ) -> io::Result<Ring> {
        let map_len = off.desc as usize + size as usize * entry_bytes;
        // SAFETY: a fresh shared mapping of the socket's ring; the kernel sized it at the
        // setsockopt that created the ring, and the offsets come from XDP_MMAP_OFFSETS.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(last_os_error("mmap of an XDP ring"));
        }
        let map = map.cast::<u8>();
        // SAFETY: the offsets lie inside the mapping (the kernel's layout), and the index
        // words are 4-byte aligned u32s that the kernel also accesses atomically.
        unsafe {
            Ok(Ring {
                map,
                map_len,
                producer: map.add(off.producer as usize).cast(),
                consumer: map.add(off.consumer as usize).cast(),
                flags: map.add(off.flags as usize).cast(),
                desc: map.add(off.desc as usize),
                mask: size - 1,
            })
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping (unmapped only in Drop).
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.consumer }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        unsafe { &*self.flags }.load(Ordering::Acquire) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Pointer to entry `index` (taken modulo the size).
    fn entry<T>(&self, index: u32) -> *mut T {
        let bytes = std::mem::size_of::<T>();
        // SAFETY: (index & mask) < size, so the entry lies inside the descriptor array.
        unsafe { self.desc.add((index & self.mask) as usize * bytes).cast() }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, no longer referenced (the port is going).
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

/// The XDP program and its map, attached to the interface while this lives.
#[derive(Debug)]
struct Program {
    _map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_PASS: i32 = 2;
/// `union bpf_attr` as a zeroed byte buffer (the kernel accepts a longer one if the tail is
/// zero); fields are written at their offsets.
type BpfAttr = [u8; 128];

fn put_u32(attr: &mut BpfAttr, offset: usize, value: u32) {
    attr[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
}

fn put_u64(attr: &mut BpfAttr, offset: usize, value: u64) {
    attr[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
}

fn bpf(cmd: libc::c_long, attr: &mut BpfAttr, what: &str) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, writable bpf_attr-sized buffer for the length given; any
    // pointers in it point at memory the caller keeps alive across the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if ret < 0 {
        return Err(last_os_error(what));
    }
    Ok(ret)
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// One BPF instruction: opcode, registers (dst low nibble, src high), offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[0] = code;
    out[1] = dst | (src << 4);
    out[2..4].copy_from_slice(&off.to_ne_bytes());
    out[4..8].copy_from_slice(&imm.to_ne_bytes());
    out
}

impl Program {
    /// Loads `redirect every frame of queue q to the socket in slot q, else pass` and
    /// attaches it to `ifindex`, with `xsk` in the slot of `queue`.
    fn attach(ifindex: u32, queue: u32, xsk: RawFd, generic: bool) -> io::Result<Program> {
        let mut attr: BpfAttr = [0; 128];
        put_u32(&mut attr, 0, BPF_MAP_TYPE_XSKMAP);
        put_u32(&mut attr, 4, 4); // key: the queue index
        put_u32(&mut attr, 8, 4); // value: the socket's fd
        put_u32(&mut attr, 12, queue + 1);
        let map = owned(bpf(BPF_MAP_CREATE, &mut attr, "BPF_MAP_CREATE (XSKMAP)")?);
        let (key, value) = (queue, xsk as u32);
        let mut attr: BpfAttr = [0; 128];
        put_u32(&mut attr, 0, map.as_raw_fd() as u32);
        put_u64(&mut attr, 8, &key as *const u32 as u64);
        put_u64(&mut attr, 16, &value as *const u32 as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr, "BPF_MAP_UPDATE_ELEM (XSKMAP)")?;
        let program: Vec<u8> = [
            insn(0x61, 2, 1, 16, 0), // r2 = ctx->rx_queue_index (u32 at offset 16 of xdp_md)
            insn(0x18, 1, 1, 0, map.as_raw_fd()), // r1 = the map (ld_imm64, BPF_PSEUDO_MAP_FD)
            insn(0, 0, 0, 0, 0),
            insn(0xb7, 3, 0, 0, XDP_PASS), // r3 = XDP_PASS: the action when the slot is empty
            insn(0x85, 0, 0, 0, 51),       // call bpf_redirect_map
            insn(0x95, 0, 0, 0, 0),        // exit
        ]
        .concat();
        let license = CString::new("Apache-2.0").expect("no NUL");
        let mut log = vec![0u8; 4096];
        let mut attr: BpfAttr = [0; 128];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP);
        put_u32(&mut attr, 4, (program.len() / 8) as u32);
        put_u64(&mut attr, 8, program.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        put_u32(&mut attr, 24, 1); // log level
        put_u32(&mut attr, 28, log.len() as u32);
        put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
        let prog = bpf(BPF_PROG_LOAD, &mut attr, "BPF_PROG_LOAD (XDP)").map_err(|e| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(0);
            io::Error::new(e.kind(), format!("{e} {}", String::from_utf8_lossy(&log[..end])))
        })?;
        let prog = owned(prog);
        let mut attr: BpfAttr = [0; 128];
        put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
        put_u32(&mut attr, 4, ifindex);
        put_u32(&mut attr, 8, BPF_XDP);
        put_u32(&mut attr, 12, if generic { XDP_FLAGS_SKB_MODE } else { 0 });
        let link = owned(bpf(BPF_LINK_CREATE, &mut attr, "BPF_LINK_CREATE (XDP)")?);
        Ok(Program { _map: map, _prog: prog, _link: link })
    }
}

/// An AF_XDP socket on one interface queue, behind the `Port` trait.
#[derive(Debug)]
pub struct XdpPort {
    // Field order is drop order: the program goes first (no more frames redirected), then
    // the rings, then the socket.
    _program: Program,
    rx: Ring,
    tx: Ring,
    fill: Ring,
    completion: Ring,
    socket: OwnedFd,
    /// The UMEM; never unmapped (see `Drop`), so no buffer can dangle.
    umem: *mut u8,
    frame_bytes: u32,
    /// Frames neither in a ring nor lent out; capacity `frames`, never grows.
    free: Vec<u64>,
    ifname: String,
    queue: u32,
    local: Local,
    neighbours: Neighbours,
    counters: PortCounters,
    frames: FrameCounters,
    ip_id: u16,
}

// SAFETY: the port is used by one thread at a time (moved into its loop's thread); its rings
// and UMEM are shared with the kernel only.
unsafe impl Send for XdpPort {}

fn interface(name: &str) -> io::Result<(u32, Mac)> {
    let c = CString::new(name).map_err(|_| io::Error::other("NUL in the interface name"))?;
    // SAFETY: `c` is a valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(last_os_error(&format!("no interface {name}")));
    }
    let path = format!("/sys/class/net/{name}/address");
    let text = std::fs::read_to_string(&path)?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(io::Error::other(format!("{path}: not an Ethernet address")));
    }
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte =
            u8::from_str_radix(part, 16).map_err(|e| io::Error::other(format!("{path}: {e}")))?;
    }
    Ok((index, Mac(mac)))
}

fn set_option<T>(fd: RawFd, name: libc::c_int, value: &T, what: &str) -> io::Result<()> {
    // SAFETY: `value` is a valid T for its size, read by the kernel during the call only.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(last_os_error(what));
    }
    Ok(())
}

impl XdpPort {
    /// Opens an XDP socket on `config.ifname` queue `config.queue`, with its UMEM, rings and
    /// program, that serves `local` (the IPv4 address and UDP port its frames must be for).
    /// Needs root (CAP_NET_ADMIN, CAP_BPF) and Linux 5.9+.
    pub fn open(config: &XdpConfig, local: SocketAddrV4) -> io::Result<XdpPort> {
        config.validate()?;
        let (ifindex, mac) = interface(&config.ifname)?;
        let umem_bytes = config.frames as usize * config.frame_bytes as usize;
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let umem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                umem_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if umem == libc::MAP_FAILED {
            return Err(last_os_error("mmap of the UMEM"));
        }
        let umem = umem.cast::<u8>();
        // SAFETY: plain socket creation.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(last_os_error("socket(AF_XDP)"));
        }
        // SAFETY: `fd` is a new socket owned by nobody else.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let reg = libc::xdp_umem_reg_v1 {
            addr: umem as u64,
            len: umem_bytes as u64,
            chunk_size: config.frame_bytes,
            headroom: 0,
        };
        set_option(fd, libc::XDP_UMEM_REG, &reg, "XDP_UMEM_REG")?;
        let size = config.ring_size;
        set_option(fd, libc::XDP_UMEM_FILL_RING, &size, "XDP_UMEM_FILL_RING")?;
        set_option(fd, libc::XDP_UMEM_COMPLETION_RING, &size, "XDP_UMEM_COMPLETION_RING")?;
        set_option(fd, libc::XDP_RX_RING, &size, "XDP_RX_RING")?;
        set_option(fd, libc::XDP_TX_RING, &size, "XDP_TX_RING")?;
        // SAFETY: all-zero is a valid xdp_mmap_offsets (plain integers).
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` and `len` are valid and writable; the kernel writes at most `len`.
        let ret = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        if ret != 0 {
            return Err(last_os_error("XDP_MMAP_OFFSETS"));
        }
        let desc = std::mem::size_of::<libc::xdp_desc>();
        let rx = Ring::map(fd, &off.rx, size, desc, libc::XDP_PGOFF_RX_RING as u64)?;
        let tx = Ring::map(fd, &off.tx, size, desc, libc::XDP_PGOFF_TX_RING as u64)?;
        let fill = Ring::map(fd, &off.fr, size, 8, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let completion = Ring::map(fd, &off.cr, size, 8, libc::XDP_UMEM_PGOFF_COMPLETION_RING)?;
        // SAFETY: all-zero is a valid sockaddr_xdp; the fields are then set.
        let mut addr: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
        addr.sxdp_family = libc::AF_XDP as u16;
        addr.sxdp_flags = libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP;
        addr.sxdp_ifindex = ifindex;
        addr.sxdp_queue_id = config.queue;
        // SAFETY: `addr` is a valid sockaddr_xdp of the stated length.
        let ret = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if ret != 0 {
            return Err(last_os_error(&format!(
                "bind to {} queue {}",
                config.ifname, config.queue
            )));
        }
        let program = Program::attach(ifindex, config.queue, fd, config.generic)?;
        let mut free = Vec::with_capacity(config.frames as usize);
        free.extend((0..u64::from(config.frames)).rev().map(|i| i * u64::from(config.frame_bytes)));
        let mut port = XdpPort {
            _program: program,
            rx,
            tx,
            fill,
            completion,
            socket,
            umem,
            frame_bytes: config.frame_bytes,
            free,
            ifname: config.ifname.clone(),
            queue: config.queue,
            local: Local { mac, addr: local },
            neighbours: Neighbours::default(),
            counters: PortCounters::default(),
            frames: FrameCounters::default(),
            ip_id: 0,
        };
        port.refill(config.frames as usize / 2);
        Ok(port)
    }

    /// What this port has done so far.
    pub fn counters(&self) -> PortCounters {
        self.counters
    }

    /// The frames it dropped, by reason, and the ARP requests it answered.
    pub fn frame_counters(&self) -> FrameCounters {
        self.frames
    }

    /// One line for logs: interface, queue, address and every counter.
    pub fn describe(&self) -> String {
        let (c, f) = (self.counters, self.frames);
        format!(
            "af-xdp {} queue {} ({} {}): rx {} tx {} tx_dropped {} tx_would_block {} \
             rx_no_buffer {} | dropped {}: bad_ethernet {} other_mac {} other_ethertype {} \
             bad_ipv4 {} fragments {} not_udp {} bad_udp {} other_address {} arp_other {} | \
             arp_answered {} no_neighbour {}",
            self.ifname,
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

    /// Gives up to `most` free frames to the kernel to receive into.
    fn refill(&mut self, most: usize) {
        let producer = self.fill.producer().load(Ordering::Relaxed);
        let consumer = self.fill.consumer().load(Ordering::Acquire);
        let room = (self.fill.mask + 1) - producer.wrapping_sub(consumer);
        let n = (room as usize).min(most).min(self.free.len());
        for i in 0..n as u32 {
            let frame = self.free.pop().expect("counted above");
            // SAFETY: the entry lies in the fill ring, in the part the kernel has consumed
            // (room counted from its consumer index), so only this thread writes it.
            unsafe { self.fill.entry::<u64>(producer.wrapping_add(i)).write(frame) };
        }
        if n > 0 {
            self.fill.producer().store(producer.wrapping_add(n as u32), Ordering::Release);
        }
    }

    /// Takes the frames the kernel finished sending back into the free list.
    fn reap_completions(&mut self) {
        let consumer = self.completion.consumer().load(Ordering::Relaxed);
        let producer = self.completion.producer().load(Ordering::Acquire);
        let n = producer.wrapping_sub(consumer);
        for i in 0..n {
            // SAFETY: entries between the consumer and the producer index were written by
            // the kernel (made visible by the Acquire load) and are ours to read.
            let addr = unsafe { self.completion.entry::<u64>(consumer.wrapping_add(i)).read() };
            self.free.push(self.frame_of(addr));
        }
        if n > 0 {
            self.completion.consumer().store(producer, Ordering::Release);
        }
    }

    fn frame_of(&self, addr: u64) -> u64 {
        addr & !u64::from(self.frame_bytes - 1)
    }

    fn buf(&self, frame: u64, start: usize, len: usize) -> XdpBuf {
        XdpBuf {
            frame,
            // SAFETY: `frame` is a frame offset inside the UMEM mapping.
            data: unsafe { self.umem.add(frame as usize) },
            room: self.frame_bytes as u16,
            start: start as u16,
            len: len as u16,
            peer: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            framed: false,
        }
    }

    fn kick_tx(&self) {
        // SAFETY: a zero-length send on our own socket: it only asks the kernel to process
        // the TX ring.
        unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
    }

    /// Puts a received frame's payload to use: a datagram for us is lent out, an ARP request
    /// answered in place, the rest freed.
    fn receive(&mut self, frame: u64, offset: usize, len: usize, rx: &mut Vec<XdpBuf>) {
        let mut buf = self.buf(frame, offset, len);
        let bytes = &buf.raw()[offset..offset + len];
        match frame::parse(bytes, &self.local, &mut self.frames) {
            Frame::Udp { src_mac, src, payload: (start, end) } => {
                self.neighbours.learn(*src.ip(), src_mac);
                buf.start = (offset + start) as u16;
                buf.len = (end - start) as u16;
                buf.peer = SocketAddr::V4(src);
                self.counters.rx += 1;
                rx.push(buf);
            }
            Frame::ArpRequest { sender_mac, sender_ip } => {
                self.neighbours.learn(sender_ip, sender_mac);
                let mut reply = self.buf(frame, 0, 0);
                let len =
                    frame::write_arp_reply(reply.raw_mut(), &self.local, (sender_mac, sender_ip));
                reply.len = len as u16;
                reply.framed = true;
                let mut one = vec![reply];
                self.send_framed(&mut one);
                for unsent in one {
                    self.free.push(unsent.frame);
                }
            }
            Frame::Dropped { arp_sender } => {
                if let Some((ip, mac)) = arp_sender {
                    self.neighbours.learn(ip, mac);
                }
                self.free.push(frame);
            }
        }
    }

    /// Writes headers (or an ARP request for an unknown peer); false if it cannot be sent.
    fn frame_for_send(&mut self, buf: &mut XdpBuf) -> bool {
        if buf.framed {
            return true;
        }
        let SocketAddr::V4(peer) = buf.peer else { return false };
        let len = usize::from(buf.len);
        if usize::from(buf.start) != HEADERS_BYTES {
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
        // From here `start..start + len` of a framed buffer is the whole frame.
        buf.start = 0;
        buf.len = frame_len as u16;
        buf.framed = true;
        true
    }

    /// Queues framed buffers from the front of `tx` on the TX ring; returns how many.
    fn send_framed(&mut self, tx: &mut Vec<XdpBuf>) -> usize {
        let producer = self.tx.producer().load(Ordering::Relaxed);
        let consumer = self.tx.consumer().load(Ordering::Acquire);
        let room = (self.tx.mask + 1) - producer.wrapping_sub(consumer);
        let n = (room as usize).min(tx.len());
        for (i, buf) in tx.iter().take(n).enumerate() {
            let desc = libc::xdp_desc { addr: buf.frame, len: u32::from(buf.len), options: 0 };
            // SAFETY: the entry is in the free part of the TX ring (room counted from the
            // kernel's consumer index), written by this thread only.
            unsafe { self.tx.entry::<libc::xdp_desc>(producer.wrapping_add(i as u32)).write(desc) };
        }
        if n > 0 {
            self.tx.producer().store(producer.wrapping_add(n as u32), Ordering::Release);
            // Copy mode needs a kick for every batch (need_wakeup is set for it).
            if self.tx.needs_wakeup() {
                self.kick_tx();
            }
        }
        tx.drain(..n);
        n
    }
}

impl Drop for XdpPort {
    fn drop(&mut self) {
        // The UMEM stays mapped until the process exits: a buffer may outlive its port, and
        // its pointer must stay valid. (The socket, rings and program are released by their
        // own Drops, in field order, after this.)
    }
}

impl Port for XdpPort {
    type Buf = XdpBuf;

    fn rx_burst(&mut self, rx: &mut Vec<XdpBuf>) -> io::Result<usize> {
        self.reap_completions();
        self.refill(usize::MAX);
        if self.fill.needs_wakeup() {
            // SAFETY: a zero-length, non-blocking receive on our own socket: it only wakes
            // the kernel to use the fill ring.
            unsafe {
                libc::recvfrom(
                    self.socket.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
        let want = BATCH.saturating_sub(rx.len()) as u32;
        let consumer = self.rx.consumer().load(Ordering::Relaxed);
        let producer = self.rx.producer().load(Ordering::Acquire);
        let n = producer.wrapping_sub(consumer).min(want);
        let before = rx.len();
        for i in 0..n {
            // SAFETY: entries between the consumer and producer indices were written by the
            // kernel (visible after the Acquire load) and are ours to read.
            let desc = unsafe { self.rx.entry::<libc::xdp_desc>(consumer.wrapping_add(i)).read() };
            let frame = self.frame_of(desc.addr);
            let offset = (desc.addr - frame) as usize;
            let len = (desc.len as usize).min(self.frame_bytes as usize - offset);
            self.receive(frame, offset, len, rx);
        }
        if n > 0 {
            self.rx.consumer().store(consumer.wrapping_add(n), Ordering::Release);
        }
        Ok(rx.len() - before)
    }

    fn alloc_tx(&mut self) -> Option<XdpBuf> {
        if self.free.is_empty() {
            self.reap_completions();
        }
        let frame = self.free.pop()?;
        Some(self.buf(frame, HEADERS_BYTES, 0))
    }

    fn tx_burst(&mut self, tx: &mut Vec<XdpBuf>) -> io::Result<usize> {
        self.reap_completions();
        let mut i = 0;
        while i < tx.len() {
            if self.frame_for_send(&mut tx[i]) {
                i += 1;
            } else {
                self.counters.tx_dropped += 1;
                let buf = tx.remove(i);
                self.free.push(buf.frame);
            }
        }
        let arp = tx.iter().filter(|b| b.is_arp()).count();
        let total = tx.len();
        let sent = self.send_framed(tx);
        if sent < total {
            self.counters.tx_would_block += 1;
        }
        // Counted as dropped datagrams: the ARP requests sent in their place.
        let arp_sent = arp.min(sent);
        self.counters.tx_dropped += arp_sent as u64;
        self.counters.tx += (sent - arp_sent) as u64;
        Ok(sent - arp_sent)
    }

    fn release(&mut self, buf: XdpBuf) {
        self.free.push(buf.frame);
    }

    fn wait_readable(&mut self, timeout: Duration) -> io::Result<()> {
        let mut fds =
            libc::pollfd { fd: self.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd that outlives the call.
        unsafe { libc::poll(&mut fds, 1, ms) };
        Ok(())
    }

    fn wait_writable(&mut self, timeout: Duration) -> io::Result<()> {
        self.kick_tx();
        std::thread::sleep(timeout.min(Duration::from_micros(20)));
        self.reap_completions();
        Ok(())
    }

    fn local_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.local.addr)
    }
}

/// A UMEM frame lent by an [`XdpPort`]: the payload is `start..start + len` of the frame.
/// Given back with `Port::release` (a buffer dropped otherwise leaves its frame unused).
#[derive(Debug)]
pub struct XdpBuf {
    frame: u64,
    data: *mut u8,
    room: u16,
    start: u16,
    len: u16,
    peer: SocketAddr,
    /// Headers written (by `tx_burst`): `start..start + len` is then the whole frame.
    framed: bool,
}

impl XdpBuf {
    fn raw(&self) -> &[u8] {
        // SAFETY: `data` points at a frame of `room` bytes inside the UMEM, which is never
        // unmapped; while lent this frame is in no ring, so the kernel does not write it.
        unsafe { std::slice::from_raw_parts(self.data, usize::from(self.room)) }
    }

    fn raw_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `raw`; `&mut self` makes this the only reference to the frame.
        unsafe { std::slice::from_raw_parts_mut(self.data, usize::from(self.room)) }
    }

    fn is_arp(&self) -> bool {
        self.framed && self.raw()[12..14] == [0x08, 0x06]
    }

    fn capacity(&self) -> usize {
        (usize::from(self.room) - HEADERS_BYTES).min(DATAGRAM_BYTES_MAX)
    }
}

impl Buffer for XdpBuf {
    fn payload(&self) -> &[u8] {
        let start = usize::from(self.start);
        &self.raw()[start..start + usize::from(self.len)]
    }

    fn capacity_mut(&mut self) -> &mut [u8] {
        if self.framed || usize::from(self.start) != HEADERS_BYTES {
            // Built anew from here: the payload goes right behind the headers.
            self.start = HEADERS_BYTES as u16;
            self.len = 0;
            self.framed = false;
        }
        let capacity = self.capacity();
        &mut self.raw_mut()[HEADERS_BYTES..HEADERS_BYTES + capacity]
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
