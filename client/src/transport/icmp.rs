//! Datagrams refused at their destination port, as an unconnected UDP socket learns of them
//! on Linux. The kernel keeps an ICMP error for such a socket only with `IP_RECVERR` (or
//! `IPV6_RECVERR`): it then fails the socket's next send or receive once with the error's
//! errno, and queues the error with the destination of the datagram it answers, to be read
//! with `MSG_ERRQUEUE`. Without the option a closed port looks like a lost datagram.
//!
//! This is the only module of the crate with `unsafe`: `setsockopt`, `recvmsg` of the error
//! queue, and reading the control message and the address the kernel wrote.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;

/// Queued errors read per `drain`; the kernel bounds the queue by the receive buffer, and what
/// is left stays for the next call.
const ERRORS_PER_DRAIN_MAX: usize = 64;

/// Room for the `IP_RECVERR` control message: a `sock_extended_err` and the address of the
/// host that sent the ICMP error (`CMSG_SPACE(16 + 28)` is 64 on 64-bit Linux).
const CONTROL_BYTES: usize = 128;

/// A control buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; CONTROL_BYTES]);

/// Asks the kernel to queue ICMP errors for `socket`, whose family is IPv6 when `ipv6`.
pub(super) fn enable(socket: &UdpSocket, ipv6: bool) -> io::Result<()> {
    let (level, name) = match ipv6 {
        true => (libc::IPPROTO_IPV6, libc::IPV6_RECVERR),
        false => (libc::IPPROTO_IP, libc::IP_RECVERR),
    };
    let value: libc::c_int = 1;
    let size = mem::size_of::<libc::c_int>() as libc::socklen_t;
    let fd = socket.as_raw_fd();
    // SAFETY: `value` is a live c_int and `size` its exact size.
    let ret = unsafe { libc::setsockopt(fd, level, name, ptr::addr_of!(value).cast(), size) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads `socket`'s queued errors (at most `ERRORS_PER_DRAIN_MAX`) and hands `refused` the
/// destination of each datagram refused at its port (ECONNREFUSED from an ICMP or ICMPv6
/// port unreachable). Returns how many errors were read: other errors (a host unreachable, a
/// message too big for the path) are read too, which clears them, and otherwise ignored.
pub(super) fn drain(socket: &UdpSocket, mut refused: impl FnMut(SocketAddr)) -> usize {
    let fd = socket.as_raw_fd();
    let mut read = 0;
    while read < ERRORS_PER_DRAIN_MAX {
        let Some(queued) = recv_error(fd) else { break };
        read += 1;
        if let (true, Some(destination)) = (queued.port_unreachable, queued.destination) {
            refused(destination);
        }
    }
    read
}

/// One error of the queue.
struct Queued {
    /// An ICMP error saying nothing listens at the destination port.
    port_unreachable: bool,
    /// Where the datagram it answers was sent.
    destination: Option<SocketAddr>,
}

/// The next queued error, or `None` when the queue is empty.
fn recv_error(fd: RawFd) -> Option<Queued> {
    // SAFETY: all-zero bytes are a valid sockaddr_storage and a valid msghdr (null pointers,
    // zero lengths).
    let (mut name, mut msg): (libc::sockaddr_storage, libc::msghdr) =
        unsafe { (mem::zeroed(), mem::zeroed()) };
    // The refused datagram's first bytes come along; only the control message matters.
    let mut payload = [0u8; 64];
    let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
    let mut control = Control([0; CONTROL_BYTES]);
    msg.msg_name = ptr::addr_of_mut!(name).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = CONTROL_BYTES as _;
    // SAFETY: `msg` points at `name`, `iov` (which points at `payload`) and `control`, all
    // live for the call and as long as the lengths in `msg` say.
    let ret = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if ret < 0 {
        return None; // EAGAIN: nothing queued
    }
    let destination = (msg.msg_namelen > 0).then(|| read_sockaddr(&name)).flatten();
    Some(Queued { port_unreachable: is_port_unreachable(&msg), destination })
}

/// Whether the error's control message says ECONNREFUSED from an ICMP or ICMPv6 message.
fn is_port_unreachable(msg: &libc::msghdr) -> bool {
    // SAFETY: after recvmsg, msg_control/msg_controllen describe the control bytes the kernel
    // wrote into our buffer; CMSG_FIRSTHDR/CMSG_NXTHDR stay within them (returning null at the
    // end), and an IP_RECVERR/IPV6_RECVERR message carries a sock_extended_err, read
    // unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            let recverr = (level == libc::SOL_IP && kind == libc::IP_RECVERR)
                || (level == libc::SOL_IPV6 && kind == libc::IPV6_RECVERR);
            if recverr {
                let error: libc::sock_extended_err =
                    ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let icmp =
                    matches!(error.ee_origin, libc::SO_EE_ORIGIN_ICMP | libc::SO_EE_ORIGIN_ICMP6);
                return icmp && error.ee_errno == libc::ECONNREFUSED as u32;
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    false
}

/// The address the kernel wrote, as written (a v4-mapped IPv6 address stays one: it is what
/// an IPv6 socket sent to).
fn read_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the kernel wrote a sockaddr_in, which fits in (and is
            // aligned within) sockaddr_storage.
            let sin = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the kernel wrote a sockaddr_in6, which fits in (and is
            // aligned within) sockaddr_storage.
            let sin6 = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            let flowinfo = u32::from_be(sin6.sin6_flowinfo);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, port, flowinfo, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}
