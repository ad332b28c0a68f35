//! Kernel UDP sockets: one non-blocking socket per port, `recvmmsg`/`sendmmsg` in bursts of
//! `BATCH`, buffers from a pool filled at bind time.
//!
//! This is the only module of the crate with `unsafe`: the syscalls, and reading the socket
//! addresses the kernel writes. The message headers, iovecs and address slots are allocated
//! once per port and re-aimed at the burst's buffers before every call.

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

/// Sizes of a `UdpPort`'s memory. Costs `pool_buffers * buf_bytes` of user memory plus up to
/// `rcvbuf_bytes + sndbuf_bytes` (doubled by Linux) of kernel memory per port.
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
}

impl Default for UdpConfig {
    fn default() -> UdpConfig {
        UdpConfig {
            buf_bytes: 2049,
            pool_buffers: 4 * BATCH * 2,
            rcvbuf_bytes: 4 << 20,
            sndbuf_bytes: 4 << 20,
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
    pool: BufferPool,
    /// Buffers lent to the kernel for one `recvmmsg`; capacity `BATCH`, never grows.
    staged: Vec<PacketBuf>,
    scratch: Scratch,
    counters: PortCounters,
    rcvbuf_bytes: usize,
    sndbuf_bytes: usize,
}

impl UdpPort {
    /// Binds a non-blocking socket to `addr` and allocates the whole buffer pool.
    pub fn bind(addr: SocketAddr, config: UdpConfig) -> io::Result<UdpPort> {
        config.validate()?;
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        let fd = socket.as_raw_fd();
        let rcvbuf_bytes = set_buffer_bytes(fd, libc::SO_RCVBUF, config.rcvbuf_bytes)?;
        let sndbuf_bytes = set_buffer_bytes(fd, libc::SO_SNDBUF, config.sndbuf_bytes)?;
        let local = socket.local_addr()?;
        Ok(UdpPort {
            socket,
            local,
            ipv6: local.is_ipv6(),
            pool: BufferPool::new(config.pool_buffers, config.buf_bytes),
            staged: Vec::with_capacity(BATCH),
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

    /// Buffers in the pool not lent out.
    pub fn buffers_available(&self) -> usize {
        self.pool.available()
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
        let want = BATCH.saturating_sub(rx.len()).min(self.pool.available());
        if want == 0 {
            if rx.len() < BATCH {
                self.counters.rx_no_buffer += 1;
            }
            return Ok(0);
        }
        // Stage first, aim the iovecs after: the heap bytes stay put, but pointers are only
        // taken once the buffers have stopped moving.
        for _ in 0..want {
            self.staged.push(self.pool.alloc().expect("counted above"));
        }
        for (i, buf) in self.staged.iter_mut().enumerate() {
            let bytes = buf.raw_mut();
            let name_bytes = mem::size_of::<libc::sockaddr_storage>();
            self.scratch.aim(i, bytes.as_mut_ptr(), bytes.len(), name_bytes);
        }
        let fd = self.socket.as_raw_fd();
        // SAFETY: the first `want` headers point at `want` iovecs and address slots owned by
        // `self.scratch`, and each iovec at a distinct staged buffer of the stated length;
        // none of them moves or is touched until the call returns. MSG_DONTWAIT: no blocking.
        let ret = unsafe {
            let headers = self.scratch.headers.as_mut_ptr();
            libc::recvmmsg(fd, headers, want as _, libc::MSG_DONTWAIT, ptr::null_mut())
        };
        let got = if ret >= 0 { ret as usize } else { 0 };
        let err = (ret < 0).then(io::Error::last_os_error);
        for (i, mut buf) in self.staged.drain(..).enumerate() {
            if i >= got {
                self.pool.release(buf);
                continue;
            }
            let header = &self.scratch.headers[i];
            if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.counters.rx_truncated += 1;
            }
            buf.set_len(header.msg_len as usize);
            buf.set_peer(read_sockaddr(&self.scratch.addrs[i]));
            rx.push(buf);
        }
        self.counters.rx += got as u64;
        match err {
            Some(err) if !is_transient(&err) => Err(err),
            _ => Ok(got),
        }
    }

    fn alloc_tx(&mut self) -> Option<PacketBuf> {
        self.pool.alloc()
    }

    fn tx_burst(&mut self, tx: &mut Vec<PacketBuf>) -> io::Result<usize> {
        let fd = self.socket.as_raw_fd();
        let (mut done, mut sent) = (0, 0);
        while done < tx.len() {
            let n = (tx.len() - done).min(BATCH);
            for i in 0..n {
                let buf = &tx[done + i];
                let name_bytes = write_sockaddr(buf.peer(), self.ipv6, &mut self.scratch.addrs[i]);
                let bytes = buf.payload();
                // The kernel only reads through this pointer (sendmmsg).
                self.scratch.aim(i, bytes.as_ptr().cast_mut(), bytes.len(), name_bytes);
            }
            // SAFETY: the first `n` headers point at iovecs and addresses in `self.scratch`
            // and at the payloads of `tx[done..done + n]`, all alive and unmoved until the
            // call returns; sendmmsg only reads them. MSG_DONTWAIT: no blocking.
            let ret = unsafe {
                let headers = self.scratch.headers.as_mut_ptr();
                libc::sendmmsg(fd, headers, n as _, libc::MSG_DONTWAIT)
            };
            if ret > 0 {
                done += ret as usize;
                sent += ret as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            if ret == 0 || is_transient(&err) || err.raw_os_error() == Some(libc::ENOBUFS) {
                // Queue full: the rest stays in `tx` for the caller to retry.
                self.counters.tx_would_block += 1;
                break;
            }
            // A hard error belongs to the datagram at the front (EPERM from a firewall,
            // EMSGSIZE, an address of the wrong family): drop it alone and go on.
            self.counters.tx_dropped += 1;
            done += 1;
        }
        for buf in tx.drain(..done) {
            self.pool.release(buf);
        }
        self.counters.tx += sent as u64;
        Ok(sent)
    }

    fn release(&mut self, buf: PacketBuf) {
        self.pool.release(buf);
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

/// `recvmmsg`/`sendmmsg` arguments for one burst, allocated once per port.
struct Scratch {
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
}

// SAFETY: the raw pointers inside `headers` and `iovecs` only ever point into memory owned by
// the same `UdpPort` (its scratch and its buffers); they are re-aimed before every syscall and
// never dereferenced by Rust code, so moving the port to another thread is sound.
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
        }
    }

    /// Points message `i` at `len` bytes from `base` and at address slot `i`.
    fn aim(&mut self, i: usize, base: *mut u8, len: usize, name_bytes: usize) {
        self.iovecs[i] = libc::iovec { iov_base: base.cast(), iov_len: len };
        let header = &mut self.headers[i];
        header.msg_len = 0;
        let msg = &mut header.msg_hdr;
        msg.msg_name = ptr::addr_of_mut!(self.addrs[i]).cast();
        msg.msg_namelen = name_bytes as libc::socklen_t;
        msg.msg_iov = ptr::addr_of_mut!(self.iovecs[i]);
        msg.msg_iovlen = 1;
        msg.msg_control = ptr::null_mut();
        msg.msg_controllen = 0;
        msg.msg_flags = 0;
    }
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

    #[test]
    fn config_rejects_a_pool_too_small_for_two_bursts() {
        assert!(UdpConfig::default().validate().is_ok());
        let small = UdpConfig { pool_buffers: 2 * BATCH - 1, ..UdpConfig::default() };
        assert_eq!(small.validate().unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let huge = UdpConfig { buf_bytes: 65537, ..UdpConfig::default() };
        assert!(huge.validate().is_err());
    }
}
