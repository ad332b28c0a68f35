//! Kernel UDP sockets: one non-blocking socket per port, `recvmmsg`/`sendmmsg` in bursts of
//! `BATCH`, buffers from a pool filled at bind time.
//!
//! With `UdpConfig::offload` (the default) a burst's runs of datagrams to one peer leave as
//! one segmented message each (UDP GSO: the stack is walked once per run, and the datagrams
//! are cut apart at the end, by the NIC where it can), and coalesced runs from a peer that
//! does the same arrive as one buffer (UDP GRO, see `Buffer::segment_bytes`). On the wire
//! they are ordinary datagrams: a peer without either sees no difference. Where the kernel
//! refuses a segmented send (an old kernel, a path MTU below the datagram size) that run is
//! sent one datagram per message.
//!
//! This is the only module of the crate with `unsafe`: the syscalls, and reading the socket
//! addresses the kernel writes. The message headers, iovecs and address slots are allocated
//! once per port. A send's are aimed at its burst's buffers before the call; a receive's stay
//! aimed at buffers staged for it, and only a slot the kernel filled is aimed at a new one.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::time::Duration;

use crate::pool::{BufferPool, PacketBuf};
use crate::{Buffer, Port, PortCounters, BATCH};

/// Sizes of a `UdpPort`'s memory. Costs `pool_buffers * buf_bytes` of user memory (plus
/// `pool_buffers / 2` buffers of 64 KiB with `offload`) and up to `rcvbuf_bytes +
/// sndbuf_bytes` (doubled by Linux) of kernel memory per port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    /// Bytes per buffer. One more than the largest accepted datagram, so an oversize datagram
    /// arrives with exactly this length (and is counted in `rx_truncated`).
    pub buf_bytes: usize,
    /// Buffers in the pool; at least `2 * BATCH` (a full rx burst plus a full tx burst).
    pub pool_buffers: usize,
    /// Requested `SO_RCVBUF`; Linux caps it at `net.core.rmem_max`.
    pub rcvbuf_bytes: usize,
    /// Requested `SO_SNDBUF`; Linux caps it at `net.core.wmem_max`.
    pub sndbuf_bytes: usize,
    /// Send runs of datagrams to one peer as one segmented message (UDP GSO) and accept
    /// coalesced receives (UDP GRO). Receives then use `pool_buffers / 2` buffers of 64 KiB
    /// of their own (8 MiB by default, touched as datagrams arrive) instead of the pool's.
    pub offload: bool,
}

impl Default for UdpConfig {
    fn default() -> UdpConfig {
        UdpConfig {
            buf_bytes: 2049,
            pool_buffers: 4 * BATCH * 2,
            rcvbuf_bytes: 4 << 20,
            sndbuf_bytes: 4 << 20,
            offload: true,
        }
    }
}

impl UdpConfig {
    /// Checks the fields against each other and against what UDP can carry.
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |what: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if self.buf_bytes == 0 || self.buf_bytes > 65536 {
            return invalid("buf_bytes must be in 1..=65536");
        }
        if self.offload && self.buf_bytes >= GRO_BUF_BYTES {
            // Buffers go back to their pool by size.
            return invalid("buf_bytes must be below 65,536 with offload (GRO buffers are 64 KiB)");
        }
        if self.pool_buffers < 2 * BATCH {
            return invalid("pool_buffers must be at least 2 * BATCH");
        }
        let limit = i32::MAX as usize;
        if !(1..=limit).contains(&self.rcvbuf_bytes) || !(1..=limit).contains(&self.sndbuf_bytes) {
            return invalid("rcvbuf_bytes and sndbuf_bytes must be in 1..=i32::MAX");
        }
        Ok(())
    }
}

/// A kernel UDP socket behind the `Port` trait.
#[derive(Debug)]
pub struct UdpPort {
    socket: UdpSocket,
    local: SocketAddr,
    /// An IPv6 socket reaches IPv4 peers through v4-mapped addresses.
    ipv6: bool,
    /// Transmit buffers, and receive buffers unless `gro_pool` is set.
    pool: BufferPool,
    /// Receive buffers big enough for a coalesced run, when UDP GRO is on.
    gro_pool: Option<BufferPool>,
    /// Largest datagram accepted whole (`UdpConfig::buf_bytes` - 1).
    datagram_bytes_max: usize,
    /// Transmit runs of datagrams smaller than this go out segmented: `usize::MAX` at first,
    /// the smallest size the kernel refused (EINVAL: a path MTU below it), 0 once it refused
    /// segmentation itself (off for good).
    segment_below: usize,
    /// Receive buffers aimed at by `rx_scratch`'s first messages, one each, staying put from
    /// one `recvmmsg` to the next (an empty one costs no re-aiming); capacity `BATCH`.
    staged: Vec<PacketBuf>,
    /// Message headers of `recvmmsg` only.
    rx_scratch: Scratch,
    /// Message headers of `sendmmsg`, aimed anew at each burst.
    scratch: Scratch,
    counters: PortCounters,
    rcvbuf_bytes: usize,
    sndbuf_bytes: usize,
}

impl UdpPort {
    /// Binds a non-blocking socket to `addr` and allocates the whole buffer pool.
    pub fn bind(addr: SocketAddr, config: UdpConfig) -> io::Result<UdpPort> {
        config.validate()?;
        UdpPort::from_socket(UdpSocket::bind(addr)?, config)
    }

    /// A port over a socket bound elsewhere (with options of the caller's, such as
    /// `SO_REUSEPORT` for one port served by several cores).
    pub fn from_socket(socket: UdpSocket, config: UdpConfig) -> io::Result<UdpPort> {
        config.validate()?;
        socket.set_nonblocking(true)?;
        let fd = socket.as_raw_fd();
        let rcvbuf_bytes = set_buffer_bytes(fd, libc::SO_RCVBUF, config.rcvbuf_bytes)?;
        let sndbuf_bytes = set_buffer_bytes(fd, libc::SO_SNDBUF, config.sndbuf_bytes)?;
        let local = socket.local_addr()?;
        // A kernel without UDP GRO (before 5.0) refuses the option: receive uncoalesced.
        let gro = config.offload && set_int_option(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        Ok(UdpPort {
            socket,
            local,
            ipv6: local.is_ipv6(),
            pool: BufferPool::new(config.pool_buffers, config.buf_bytes),
            gro_pool: gro.then(|| BufferPool::new(config.pool_buffers / 2, GRO_BUF_BYTES)),
            datagram_bytes_max: config.buf_bytes - 1,
            segment_below: if config.offload { usize::MAX } else { 0 },
            staged: Vec::with_capacity(BATCH),
            rx_scratch: Scratch::new(),
            scratch: Scratch::new(),
            counters: PortCounters::default(),
            rcvbuf_bytes,
            sndbuf_bytes,
        })
    }

    /// What this port has done so far.
    pub fn counters(&self) -> PortCounters {
        self.counters
    }

    /// `SO_RCVBUF` and `SO_SNDBUF` as the kernel reports them (Linux doubles the request and
    /// caps it at `net.core.{r,w}mem_max`).
    pub fn socket_buffer_bytes(&self) -> (usize, usize) {
        (self.rcvbuf_bytes, self.sndbuf_bytes)
    }

    /// Buffers not lent out: in the pool, or staged for the next receive.
    pub fn buffers_available(&self) -> usize {
        let pooled =
            self.pool.available() + self.gro_pool.as_ref().map_or(0, BufferPool::available);
        pooled + self.staged.len()
    }

    /// Stages receive buffers from the pool, each aimed at its message, until `want` are
    /// (or the pool is out).
    fn stage(&mut self, want: usize) {
        let gro = self.gro_pool.is_some();
        let pool = self.gro_pool.as_mut().unwrap_or(&mut self.pool);
        while self.staged.len() < want {
            let Some(mut buf) = pool.alloc() else { break };
            self.rx_scratch.aim_rx(self.staged.len(), &mut buf, gro);
            self.staged.push(buf);
        }
    }

    /// Whether coalesced receives (UDP GRO) are on.
    pub fn receives_coalesced(&self) -> bool {
        self.gro_pool.is_some()
    }

    fn poll(&self, events: libc::c_short, timeout: Duration) -> io::Result<()> {
        let mut fds = libc::pollfd { fd: self.socket.as_raw_fd(), events, revents: 0 };
        // Round up so a 100 µs wait does not become a busy spin.
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `fds` is one valid, initialised pollfd that outlives the call.
        let ret = unsafe { libc::poll(&mut fds, 1, ms) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        Ok(())
    }
}

impl Port for UdpPort {
    type Buf = PacketBuf;

    fn rx_burst(&mut self, rx: &mut Vec<PacketBuf>) -> io::Result<usize> {
        let want = BATCH.saturating_sub(rx.len());
        self.stage(want);
        let want = want.min(self.staged.len());
        if want == 0 {
            if rx.len() < BATCH {
                self.counters.rx_no_buffer += 1;
            }
            return Ok(0);
        }
        // recvmmsg writes into the messages it fills and no others (their lengths, sizes of
        // address and control data, flags), and each filled one is aimed anew below: the
        // rest are still as `stage` left them.
        let gro = self.gro_pool.is_some();
        let fd = self.socket.as_raw_fd();
        // SAFETY: the first `want` headers of `rx_scratch` point at `want` iovecs, address
        // slots and control buffers owned by it, and each iovec at a distinct staged buffer's
        // heap bytes of the stated length (`stage`); none of them moves or is touched until
        // the call returns. MSG_DONTWAIT: no blocking.
        let ret = unsafe {
            let headers = self.rx_scratch.headers.as_mut_ptr();
            libc::recvmmsg(fd, headers, want as _, libc::MSG_DONTWAIT, ptr::null_mut())
        };
        let got = if ret >= 0 { ret as usize } else { 0 };
        let err = (ret < 0).then(io::Error::last_os_error);
        let limit = self.datagram_bytes_max;
        let pool = self.gro_pool.as_mut().unwrap_or(&mut self.pool);
        if pool.available() >= got {
            // Each filled slot takes a fresh buffer in place, so the others stay aimed.
            for i in 0..got {
                let fresh = pool.alloc().expect("counted above");
                let mut buf = mem::replace(&mut self.staged[i], fresh);
                self.rx_scratch.receive(i, &mut buf, gro, limit, &mut self.counters);
                self.rx_scratch.aim_rx(i, &mut self.staged[i], gro);
                rx.push(buf);
            }
        } else if got > 0 {
            // Short of buffers: the filled ones leave the front, the rest are aimed again.
            for (i, mut buf) in self.staged.drain(..got).enumerate() {
                self.rx_scratch.receive(i, &mut buf, gro, limit, &mut self.counters);
                rx.push(buf);
            }
            for (i, buf) in self.staged.iter_mut().enumerate() {
                self.rx_scratch.aim_rx(i, buf, gro);
            }
        }
        match err {
            Some(err) if !is_transient(&err) => Err(err),
            _ => Ok(got),
        }
    }

    fn alloc_tx(&mut self) -> Option<PacketBuf> {
        if let Some(buf) = self.pool.alloc() {
            return Some(buf);
        }
        // Sharing its pool with receives (no GRO), a send may take the last staged buffer:
        // the messages before it stay aimed.
        let mut buf = self.gro_pool.is_none().then(|| self.staged.pop()).flatten()?;
        buf.set_len(0);
        buf.set_segment_bytes(0);
        Some(buf)
    }

    fn tx_burst(&mut self, tx: &mut Vec<PacketBuf>) -> io::Result<usize> {
        let fd = self.socket.as_raw_fd();
        let (mut done, mut sent) = (0, 0);
        // Cleared for one call after a segmented message failed.
        let mut segment_below = self.segment_below;
        while done < tx.len() {
            let n = (tx.len() - done).min(BATCH);
            let messages = self.scratch.aim_tx(&tx[done..done + n], self.ipv6, segment_below);
            // SAFETY: the first `messages` headers point at iovecs, addresses and control
            // buffers in `self.scratch` and the iovecs at the payloads of `tx[done..done + n]`,
            // all alive and unmoved until the call returns; sendmmsg only reads them.
            // MSG_DONTWAIT: no blocking.
            let ret = unsafe {
                let headers = self.scratch.headers.as_mut_ptr();
                libc::sendmmsg(fd, headers, messages as _, libc::MSG_DONTWAIT)
            };
            segment_below = self.segment_below;
            if ret > 0 {
                let runs = &self.scratch.runs[..ret as usize];
                let datagrams: usize = runs.iter().sum();
                self.counters.tx_segmented += runs.iter().filter(|&&run| run > 1).count() as u64;
                done += datagrams;
                sent += datagrams;
                continue;
            }
            let err = io::Error::last_os_error();
            if ret == 0 || is_transient(&err) || err.raw_os_error() == Some(libc::ENOBUFS) {
                // Queue full: the rest stays in `tx` for the caller to retry.
                self.counters.tx_would_block += 1;
                break;
            }
            if self.scratch.runs[0] > 1 {
                // The segmented message at the front failed: send it again unsegmented, which
                // also pins any other error (EPERM from a firewall, say) on one datagram. The
                // kernel refuses segmentation with EIO, ENOPROTOOPT or EOPNOTSUPP where the
                // device or kernel cannot do it (off for good) and with EMSGSIZE or EINVAL
                // where the path MTU is below the datagram size (off for runs this large).
                let size = tx[done].payload().len();
                match err.raw_os_error() {
                    Some(libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP) => {
                        self.segment_below = 0
                    }
                    Some(libc::EMSGSIZE | libc::EINVAL) => {
                        self.segment_below = self.segment_below.min(size);
                    }
                    _ => {}
                }
                self.counters.tx_segmentation_refused += u64::from(self.segment_below <= size);
                segment_below = 0;
                continue;
            }
            // A hard error belongs to the datagram at the front (EPERM from a firewall,
            // EMSGSIZE, an address of the wrong family): drop it alone and go on.
            self.counters.tx_dropped += 1;
            done += 1;
        }
        for buf in tx.drain(..done) {
            // A receive buffer may have been reused to answer in place.
            Port::release(self, buf);
        }
        self.counters.tx += sent as u64;
        Ok(sent)
    }

    fn release(&mut self, buf: PacketBuf) {
        match &mut self.gro_pool {
            Some(gro) if gro.fits(&buf) => gro.release(buf),
            _ => self.pool.release(buf),
        }
    }

    fn wait_readable(&mut self, timeout: Duration) -> io::Result<()> {
        self.poll(libc::POLLIN, timeout)
    }

    fn wait_writable(&mut self, timeout: Duration) -> io::Result<()> {
        self.poll(libc::POLLOUT, timeout)
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl AsRawFd for UdpPort {
    /// The socket, for a caller that waits on it together with other descriptors.
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Receive buffer size with UDP GRO: a coalesced run is at most one UDP payload.
const GRO_BUF_BYTES: usize = 65536;
/// Most datagrams in one segmented send (the kernel's `UDP_MAX_SEGMENTS` is 64 or more).
const GSO_SEGMENTS_MAX: usize = 64;
/// Most bytes in one segmented send: below 65,535 less the IPv4 and UDP headers.
const GSO_BYTES_MAX: usize = 65_000;
/// Room for one control message carrying an int (`CMSG_SPACE(4)` is 24 on 64-bit Linux).
const CONTROL_BYTES: usize = 32;
/// Room for a sender's address in a receive message.
const NAME_BYTES: libc::socklen_t = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

/// One message's control buffer, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; CONTROL_BYTES]);

/// `recvmmsg`/`sendmmsg` arguments for one burst, allocated once per port.
struct Scratch {
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    controls: Vec<Control>,
    /// Datagrams in each message of the last `aim_tx`.
    runs: Vec<usize>,
}

// SAFETY: the raw pointers inside `headers` and `iovecs` only ever point into heap memory owned
// by the same `UdpPort` (its scratches' vectors and its buffers' bytes), which stays where it
// is when the port moves; a receive message is aimed again whenever its buffer changes, and
// Rust code never dereferences them, so moving the port to another thread is sound.
unsafe impl Send for Scratch {}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scratch")
    }
}

impl Scratch {
    fn new() -> Scratch {
        // SAFETY: mmsghdr, iovec and sockaddr_storage are plain C structs of integers and
        // pointers, for which all-zero bytes are a valid (empty) value.
        let (header, iovec, addr) = unsafe { (mem::zeroed(), mem::zeroed(), mem::zeroed()) };
        Scratch {
            headers: vec![header; BATCH],
            iovecs: vec![iovec; BATCH],
            addrs: vec![addr; BATCH],
            controls: vec![Control([0; CONTROL_BYTES]); BATCH],
            runs: vec![0; BATCH],
        }
    }

    /// Aims receive message `i` at `buf`'s bytes and address slot `i`, with room for UDP
    /// GRO's control message when `gro`.
    fn aim_rx(&mut self, i: usize, buf: &mut PacketBuf, gro: bool) {
        let bytes = buf.raw_mut();
        self.iovecs[i] = libc::iovec { iov_base: bytes.as_mut_ptr().cast(), iov_len: bytes.len() };
        self.aim_message(i, i, 1, NAME_BYTES as usize);
        if gro {
            let msg = &mut self.headers[i].msg_hdr;
            msg.msg_control = self.controls[i].0.as_mut_ptr().cast();
            msg.msg_controllen = CONTROL_BYTES;
        }
    }

    /// Fills in `buf` from what the kernel wrote in receive message `i`: its length, its
    /// segment size (coalesced runs), its sender; counts it (and a truncation).
    fn receive(
        &self,
        i: usize,
        buf: &mut PacketBuf,
        gro: bool,
        datagram_bytes_max: usize,
        counters: &mut PortCounters,
    ) {
        let header = &self.headers[i];
        let mut len = header.msg_len as usize;
        let mut segment = if gro { gro_segment_bytes(&header.msg_hdr) } else { 0 };
        if segment >= len {
            segment = 0;
        }
        let datagrams = if segment == 0 { 1 } else { len.div_ceil(segment) as u64 };
        counters.rx += datagrams;
        // A datagram longer than the largest accepted is cut to one byte more than that,
        // as an ordinary buffer would cut it. Of a coalesced run of them only the first is
        // delivered (cut); every one counts as truncated.
        let oversize = if segment == 0 { len } else { segment };
        if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || oversize > datagram_bytes_max {
            counters.rx_truncated += datagrams;
            (len, segment) = (len.min(datagram_bytes_max + 1), 0);
        }
        buf.set_len(len);
        buf.set_segment_bytes(segment);
        buf.set_peer(read_sockaddr(&self.addrs[i]));
    }

    /// Aims one message per run of `bufs`: consecutive datagrams to one peer of one size
    /// below `segment_below` (the last may be shorter) form a run sent with `UDP_SEGMENT`;
    /// every other datagram is its own message. Returns the number of messages (see `runs`).
    fn aim_tx(&mut self, bufs: &[PacketBuf], ipv6: bool, segment_below: usize) -> usize {
        let (mut messages, mut i) = (0, 0);
        while i < bufs.len() {
            let first = &bufs[i];
            let size = first.payload().len();
            let mut run = 1;
            if size > 0 && size < segment_below {
                let mut bytes = size;
                while let Some(next) = bufs.get(i + run) {
                    let len = next.payload().len();
                    let fits = len > 0 && len <= size && bytes + len <= GSO_BYTES_MAX;
                    if run == GSO_SEGMENTS_MAX || !fits || next.peer() != first.peer() {
                        break;
                    }
                    run += 1;
                    bytes += len;
                    if len < size {
                        break; // only the last segment may be shorter
                    }
                }
            }
            for (iovec, buf) in self.iovecs[i..i + run].iter_mut().zip(&bufs[i..i + run]) {
                let bytes = buf.payload();
                // The kernel only reads through this pointer (sendmmsg).
                *iovec = libc::iovec {
                    iov_base: bytes.as_ptr().cast_mut().cast(),
                    iov_len: bytes.len(),
                };
            }
            let name_bytes = write_sockaddr(first.peer(), ipv6, &mut self.addrs[messages]);
            self.aim_message(messages, i, run, name_bytes);
            if run > 1 {
                let msg = &mut self.headers[messages].msg_hdr;
                write_segment_control(msg, &mut self.controls[messages], size as u16);
            }
            self.runs[messages] = run;
            messages += 1;
            i += run;
        }
        messages
    }

    /// Points message `m` at `count` iovecs from `first` on and at address slot `m`, with no
    /// control data.
    fn aim_message(&mut self, m: usize, first: usize, count: usize, name_bytes: usize) {
        let header = &mut self.headers[m];
        header.msg_len = 0;
        let msg = &mut header.msg_hdr;
        msg.msg_name = ptr::addr_of_mut!(self.addrs[m]).cast();
        msg.msg_namelen = name_bytes as libc::socklen_t;
        msg.msg_iov = ptr::addr_of_mut!(self.iovecs[first]);
        msg.msg_iovlen = count;
        msg.msg_control = ptr::null_mut();
        msg.msg_controllen = 0;
        msg.msg_flags = 0;
    }
}

/// Points `msg` at `control` holding one `UDP_SEGMENT` message: cut into `size`-byte datagrams.
fn write_segment_control(msg: &mut libc::msghdr, control: &mut Control, size: u16) {
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic. `control` is aligned for cmsghdr and
    // CONTROL_BYTES >= CMSG_SPACE(2), so the first header and its 2 data bytes lie inside it;
    // CMSG_FIRSTHDR is non-null because msg_controllen covers a cmsghdr.
    unsafe {
        let data_bytes = mem::size_of::<u16>() as libc::c_uint;
        msg.msg_controllen = libc::CMSG_SPACE(data_bytes) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(data_bytes) as usize;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
    }
}

/// The datagram size of a coalesced receive (UDP GRO's control message), or 0.
fn gro_segment_bytes(msg: &libc::msghdr) -> usize {
    // SAFETY: after recvmmsg, msg_control/msg_controllen describe the control bytes the
    // kernel wrote into our buffer; CMSG_FIRSTHDR/CMSG_NXTHDR stay within them (returning null
    // at the end) and the UDP_GRO message carries one int.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                let size = ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return size.max(0) as usize;
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    0
}

/// Sets an integer socket option.
fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let size = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a live c_int and `size` its exact size.
    let ret = unsafe { libc::setsockopt(fd, level, name, ptr::addr_of!(value).cast(), size) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Would-block and interrupted calls are "nothing now", not failures.
fn is_transient(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

/// Sets a socket buffer size and returns what the kernel actually granted.
fn set_buffer_bytes(fd: RawFd, option: libc::c_int, bytes: usize) -> io::Result<usize> {
    let value = bytes as libc::c_int; // validated <= i32::MAX
    let size = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // With CAP_NET_ADMIN the *FORCE variant is not capped by net.core.[rw]mem_max (212,992
    // bytes on a fresh machine: a burst of a few hundred datagrams would overflow it); without
    // it, fall back to the capped option.
    let forced = match option {
        libc::SO_RCVBUF => libc::SO_RCVBUFFORCE,
        libc::SO_SNDBUF => libc::SO_SNDBUFFORCE,
        other => other,
    };
    // SAFETY: `value` is a live c_int and `size` its exact size.
    let mut ret = unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, forced, ptr::addr_of!(value).cast(), size)
    };
    if ret != 0 {
        // SAFETY: as above.
        ret = unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, option, ptr::addr_of!(value).cast(), size)
        };
    }
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    let (mut granted, mut granted_size): (libc::c_int, libc::socklen_t) = (0, size);
    // SAFETY: `granted` is a writable c_int and `granted_size` holds its size.
    let ret = unsafe {
        let out = ptr::addr_of_mut!(granted).cast();
        libc::getsockopt(fd, libc::SOL_SOCKET, option, out, &mut granted_size)
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(granted.max(0) as usize)
}

/// Encodes `addr` for a socket of the given family; returns the address length. An IPv4 peer
/// of an IPv6 socket becomes v4-mapped; an IPv6 peer of an IPv4 socket is left for the kernel
/// to refuse (EAFNOSUPPORT), which drops that one datagram.
fn write_sockaddr(addr: SocketAddr, ipv6_socket: bool, out: &mut libc::sockaddr_storage) -> usize {
    let addr = match addr {
        SocketAddr::V4(v4) if ipv6_socket => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        other => other,
    };
    match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
            unsafe { ptr::write(ptr::from_mut(out).cast::<libc::sockaddr_in>(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo().to_be(),
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
            unsafe { ptr::write(ptr::from_mut(out).cast::<libc::sockaddr_in6>(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    }
}

/// Decodes a source address written by the kernel. A v4-mapped IPv6 source is reported as
/// IPv4, so one peer has one address whichever family the socket is.
fn read_sockaddr(storage: &libc::sockaddr_storage) -> SocketAddr {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the kernel wrote a sockaddr_in, which fits in (and is
            // aligned within) sockaddr_storage.
            let sin = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the kernel wrote a sockaddr_in6, which fits in (and is
            // aligned within) sockaddr_storage.
            let sin6 = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    u32::from_be(sin6.sin6_flowinfo),
                    sin6.sin6_scope_id,
                )),
            }
        }
        // UDP sockets only report IPv4 and IPv6 sources.
        family => unreachable!("unexpected address family {family}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_round_trip() {
        let cases: [(SocketAddr, bool, SocketAddr); 4] = [
            ("10.1.2.3:4567".parse().unwrap(), false, "10.1.2.3:4567".parse().unwrap()),
            ("[fe80::1%3]:9".parse().unwrap(), true, "[fe80::1%3]:9".parse().unwrap()),
            // An IPv4 peer of an IPv6 socket travels v4-mapped and comes back as IPv4.
            ("10.1.2.3:4567".parse().unwrap(), true, "10.1.2.3:4567".parse().unwrap()),
            ("[::1]:80".parse().unwrap(), true, "[::1]:80".parse().unwrap()),
        ];
        for (addr, ipv6_socket, expected) in cases {
            // SAFETY: all-zero bytes are a valid sockaddr_storage.
            let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
            let len = write_sockaddr(addr, ipv6_socket, &mut storage);
            let family = libc::c_int::from(storage.ss_family);
            assert_eq!(family == libc::AF_INET6, ipv6_socket || addr.is_ipv6(), "{addr}");
            assert!(len <= mem::size_of::<libc::sockaddr_storage>());
            assert_eq!(read_sockaddr(&storage), expected);
        }
    }

    fn port(offload: bool) -> UdpPort {
        let config = UdpConfig { offload, ..UdpConfig::default() };
        UdpPort::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).unwrap()
    }

    /// Sends one datagram per payload from `from` to `to`, all in one `tx_burst`.
    fn send_all(from: &mut UdpPort, datagrams: &[(SocketAddr, Vec<u8>)]) {
        let mut tx = Vec::new();
        for (to, payload) in datagrams {
            let mut buf = from.alloc_tx().unwrap();
            buf.capacity_mut()[..payload.len()].copy_from_slice(payload);
            buf.set_len(payload.len());
            buf.set_peer(*to);
            tx.push(buf);
        }
        assert_eq!(from.tx_burst(&mut tx).unwrap(), datagrams.len());
        assert!(tx.is_empty());
    }

    /// Receives until `want` datagrams arrived (2 s at most); returns them and the number of
    /// buffers they came in.
    fn receive(port: &mut UdpPort, want: usize) -> (Vec<Vec<u8>>, usize) {
        let (mut got, mut buffers, mut rx) = (Vec::new(), 0, Vec::new());
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while got.len() < want && std::time::Instant::now() < deadline {
            port.rx_burst(&mut rx).unwrap();
            for buf in rx.drain(..) {
                buffers += 1;
                got.extend(crate::datagrams(&buf).map(<[u8]>::to_vec));
                port.release(buf);
            }
            port.wait_readable(Duration::from_millis(10)).unwrap();
        }
        (got, buffers)
    }

    #[test]
    fn runs_to_one_peer_leave_segmented_and_arrive_in_order() {
        let (mut sender, mut coalescing, mut plain) = (port(true), port(true), port(false));
        let (b, c) = (coalescing.local_addr(), plain.local_addr());
        let payload = |i: usize, len: usize| (0..len).map(|j| (i * 7 + j) as u8).collect();
        // A run of 20 to b ending in a shorter datagram, 3 to c, an empty one and 2 more to b.
        let mut out: Vec<(SocketAddr, Vec<u8>)> = (0..20).map(|i| (b, payload(i, 100))).collect();
        out.push((b, payload(20, 40)));
        out.extend((21..24).map(|i| (c, payload(i, 100))));
        out.push((b, Vec::new()));
        out.extend((25..27).map(|i| (b, payload(i, 100))));
        send_all(&mut sender, &out);

        let (to_b, b_buffers) = receive(&mut coalescing, 24);
        let want_b: Vec<Vec<u8>> = out.iter().filter(|d| d.0 == b).map(|d| d.1.clone()).collect();
        assert_eq!(to_b, want_b, "every datagram, whole and in order");
        assert_eq!(coalescing.counters().rx, 24);
        let (to_c, c_buffers) = receive(&mut plain, 3);
        let want_c: Vec<Vec<u8>> = out.iter().filter(|d| d.0 == c).map(|d| d.1.clone()).collect();
        assert_eq!((to_c, c_buffers), (want_c, 3), "a port without GRO gets one per buffer");

        let sent = sender.counters();
        assert_eq!(sent.tx, out.len() as u64);
        if sent.tx_segmentation_refused == 0 {
            // Runs: 21 to b, 3 to c, (empty to b alone), 2 to b.
            assert_eq!(sent.tx_segmented, 3);
            if coalescing.receives_coalesced() {
                assert!(b_buffers < 24, "GRO kept runs together: {b_buffers} buffers");
            }
        } else {
            eprintln!("this kernel refused UDP GSO; checked the unsegmented fallback only");
        }
    }

    #[test]
    fn an_oversize_datagram_is_cut_and_counted_with_gro_too() {
        for offload in [true, false] {
            let (sender, mut receiver) = (port(offload), port(offload));
            let to = receiver.local_addr();
            let (big, limit) = (vec![7u8; 3000], UdpConfig::default().buf_bytes);
            // The pool's buffers are too small to send it: use the socket directly.
            assert!(big.len() > limit);
            sender.socket.send_to(&big, to).unwrap();
            let (got, _) = receive(&mut receiver, 1);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].len(), limit, "offload {offload}: cut to one past the largest");
            assert_eq!(receiver.counters().rx_truncated, 1);
        }
    }

    #[test]
    fn config_rejects_a_pool_too_small_for_two_bursts() {
        assert!(UdpConfig::default().validate().is_ok());
        let small = UdpConfig { pool_buffers: 2 * BATCH - 1, ..UdpConfig::default() };
        assert_eq!(small.validate().unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let huge = UdpConfig { buf_bytes: 65537, ..UdpConfig::default() };
        assert!(huge.validate().is_err());
    }
}
