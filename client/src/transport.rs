//! The datagram transport under the blocking driver: a narrow trait and its UDP socket.

use nix::libc;
use nix::sys::socket::{setsockopt, sockopt};
use proto::DATAGRAM_BYTES_MAX;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// `SO_RCVBUF` asked per request that may be in flight: room for one full reply datagram
/// each. Linux doubles what is asked to cover its per-datagram bookkeeping (a 1,472-byte
/// datagram on loopback is charged about 2.3 KiB), so this many bytes asked per request hold
/// one whole reply per request. Asking less lost replies: 17,000 requests in flight over the
/// 208 KiB default buffer gave 9,700 timeouts on loopback (#16).
pub const RECV_BUFFER_BYTES_PER_REQUEST: usize = DATAGRAM_BYTES_MAX;

/// The `SO_RCVBUF` to ask for when up to `in_flight_max` replies may arrive at once.
pub fn recv_buffer_bytes_for(in_flight_max: usize) -> usize {
    in_flight_max.saturating_mul(RECV_BUFFER_BYTES_PER_REQUEST).min(i32::MAX as usize / 2)
}

/// Sends and receives whole datagrams. `Client` drives one; tests substitute their own.
pub trait Transport {
    /// Sends `datagram` to `to`. An error counts as a lost datagram.
    fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()>;

    /// Waits at most `timeout` (zero: not at all) for one datagram, writes it into `buf` and
    /// returns its length and sender; `None` when none came in time.
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>>;

    /// A server that refused a datagram sent to it (ICMP port or host unreachable) since the
    /// last call, if the transport learns of such things (the default does not).
    fn take_refused(&mut self) -> Option<SocketAddr> {
        None
    }
}

/// A UDP socket on an ephemeral port. Its address family is fixed at bind time, so every
/// server it talks to must have that family.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    /// The wait the socket is configured for (`None`: non-blocking), to skip redundant
    /// system calls.
    wait: Option<Duration>,
    /// Destinations the kernel said refused a datagram, not yet taken (`take_refused`).
    refused: Vec<SocketAddr>,
}

impl UdpTransport {
    /// Binds `local`.
    pub fn bind(local: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(local)?;
        socket.set_nonblocking(true)?;
        // ICMP errors for our sends go to the socket's error queue, naming the destination
        // (Linux's IP_RECVERR; an unconnected socket hears of none otherwise). Where the
        // option is refused, refusals are timeouts as before.
        let _ = match local {
            SocketAddr::V4(_) => setsockopt(&socket, sockopt::Ipv4RecvErr, &true),
            SocketAddr::V6(_) => setsockopt(&socket, sockopt::Ipv6RecvErr, &true),
        };
        Ok(UdpTransport { socket, wait: None, refused: Vec::new() })
    }

    /// Reads the socket's error queue: each ICMP "port unreachable" or "host unreachable"
    /// for a datagram we sent names its destination (the error queue's `msg_name`).
    fn read_errors(&mut self) {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
        for _ in 0..64 {
            let mut payload = [0u8; 64];
            let mut iov = [std::io::IoSliceMut::new(&mut payload)];
            let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
            let flags = MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&self.socket);
            let Ok(message) = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), flags)
            else {
                return; // (empty)
            };
            let refusal = |e: &libc::sock_extended_err| {
                matches!(e.ee_origin, libc::SO_EE_ORIGIN_ICMP | libc::SO_EE_ORIGIN_ICMP6)
                    && matches!(e.ee_errno as i32, libc::ECONNREFUSED | libc::EHOSTUNREACH)
            };
            let refused = message.cmsgs().into_iter().flatten().any(|c| match c {
                ControlMessageOwned::Ipv4RecvErr(e, _) | ControlMessageOwned::Ipv6RecvErr(e, _) => {
                    refusal(&e)
                }
                _ => false,
            });
            let to = message.address.as_ref().and_then(|a| {
                match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                    (Some(v4), _) => Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4))),
                    (_, Some(v6)) => Some(SocketAddr::from(std::net::SocketAddrV6::from(*v6))),
                    _ => None,
                }
            });
            if let (true, Some(to)) = (refused, to) {
                if !self.refused.contains(&to) {
                    self.refused.push(to);
                }
            }
        }
    }

    /// Binds an ephemeral port on the wildcard address of `server`'s family
    /// (`0.0.0.0:0` or `[::]:0`).
    pub fn for_server(server: SocketAddr) -> io::Result<Self> {
        let local = match server {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        Self::bind(local)
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Asks for a receive buffer of `bytes` (`SO_RCVBUF`) and returns what the kernel
    /// granted: Linux doubles the request and caps it at twice `net.core.rmem_max` (208 KiB by
    /// default; raise it with `sysctl -w net.core.rmem_max=...` for deep pipelines).
    pub fn set_recv_buffer_bytes(&mut self, bytes: usize) -> io::Result<usize> {
        let socket = socket2::SockRef::from(&self.socket);
        socket.set_recv_buffer_size(bytes)?;
        socket.recv_buffer_size()
    }

    /// The receive buffer the kernel granted, in bytes.
    pub fn recv_buffer_bytes(&self) -> io::Result<usize> {
        socket2::SockRef::from(&self.socket).recv_buffer_size()
    }

    /// The socket, to share between threads (`SharedClient` sends from its callers' threads
    /// and receives on its own), back in blocking mode.
    pub(crate) fn into_socket(self) -> io::Result<UdpSocket> {
        self.socket.set_nonblocking(false)?;
        Ok(self.socket)
    }

    fn configure_wait(&mut self, timeout: Duration) -> io::Result<()> {
        let wait = (!timeout.is_zero()).then_some(timeout);
        if wait == self.wait {
            return Ok(());
        }
        match wait {
            None => self.socket.set_nonblocking(true)?,
            Some(timeout) => {
                if self.wait.is_none() {
                    self.socket.set_nonblocking(false)?;
                }
                self.socket.set_read_timeout(Some(timeout))?;
            }
        }
        self.wait = wait;
        Ok(())
    }
}

impl Transport for UdpTransport {
    fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        // A pending refusal (of an earlier send, to any destination) fails the next send
        // unsent: read it, and send again.
        for _ in 0..REFUSALS_PER_RECEIVE_MAX {
            match self.socket.send_to(datagram, to) {
                Err(error) if is_refusal(&error) => self.read_errors(),
                sent => return sent.map(drop),
            }
        }
        self.socket.send_to(datagram, to).map(drop)
    }

    fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        self.configure_wait(timeout)?;
        // A refusal is reported once per ICMP error, ahead of the datagrams queued: it must
        // not hide them (a client polling a dead node would read no reply at all).
        for _ in 0..REFUSALS_PER_RECEIVE_MAX {
            match self.socket.recv_from(buf) {
                Ok(received) => return Ok(Some(received)),
                Err(error) if is_refusal(&error) => self.read_errors(),
                Err(error) if is_no_datagram(&error) => return Ok(None),
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    fn take_refused(&mut self) -> Option<SocketAddr> {
        self.refused.pop()
    }
}

/// Refusals one `recv_from` reads past before it says nothing came (or one `send_to` before
/// it gives up).
const REFUSALS_PER_RECEIVE_MAX: usize = 64;

/// The error a receive returns once an ICMP error for an earlier send arrived.
fn is_refusal(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::HostUnreachable)
        || error.raw_os_error() == Some(libc::EHOSTUNREACH)
}

/// Errors that only mean "nothing arrived": a timeout, or an ICMP error some systems report
/// for an earlier send to a closed port (that datagram is lost; the retry timer covers it).
fn is_no_datagram(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn loopback_round_trip_and_bounded_wait() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let started = Instant::now();
        assert!(b.recv_from(&mut buf, Duration::from_millis(20)).unwrap().is_none());
        assert!(started.elapsed() >= Duration::from_millis(15));
        assert!(b.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
        a.send_to(b"hello", b.local_addr().unwrap()).unwrap();
        let (len, from) = b.recv_from(&mut buf, Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!((&buf[..len], from), (&b"hello"[..], a.local_addr().unwrap()));
    }

    /// Sends to closed ports are refused (ICMP port unreachable, named by the error queue),
    /// and the refusals never hide a datagram queued behind them (found by the failover
    /// benchmark: a client polling a dead node for maps read no reply at all).
    #[test]
    fn refusals_are_named_and_do_not_hide_datagrams() {
        let closed: Vec<SocketAddr> =
            (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()).collect(); // (each socket dropped: its port is closed)
        let mut client = UdpTransport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut server = UdpTransport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        for &to in &closed {
            client.send_to(b"anyone?", to).unwrap();
        }
        server.send_to(b"reply", client.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(20)); // (the ICMP errors come back)
        let mut buf = [0u8; 64];
        let (len, from) = client.recv_from(&mut buf, Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!((&buf[..len], from), (&b"reply"[..], server.local_addr().unwrap()));
        assert!(client.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
        let mut refused: Vec<SocketAddr> = std::iter::from_fn(|| client.take_refused()).collect();
        refused.sort();
        let mut expected = closed.clone();
        expected.sort();
        assert_eq!(refused, expected);
    }

    /// The buffer sized for `n` requests in flight holds `n` full reply datagrams sent while
    /// nobody reads: none is dropped.
    #[test]
    fn a_buffer_sized_for_the_pipeline_holds_a_full_reply_per_request() {
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(212_992);
        // As many requests as the host lets one socket buffer, at most 2,000.
        let in_flight = (rmem_max / RECV_BUFFER_BYTES_PER_REQUEST).min(2_000);
        let mut receiver = UdpTransport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let granted = receiver.set_recv_buffer_bytes(recv_buffer_bytes_for(in_flight)).unwrap();
        assert!(granted >= recv_buffer_bytes_for(in_flight), "{granted} bytes granted");
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        for i in 0..in_flight {
            sender.send_to(&[i as u8; DATAGRAM_BYTES_MAX], to).unwrap();
        }
        let mut buf = [0u8; DATAGRAM_BYTES_MAX + 1];
        let mut received = 0;
        while let Some((len, _)) = receiver.recv_from(&mut buf, Duration::ZERO).unwrap() {
            assert_eq!(len, DATAGRAM_BYTES_MAX);
            received += 1;
        }
        assert_eq!(received, in_flight, "of {in_flight} datagrams in a {granted}-byte buffer");
    }

    #[test]
    fn binds_the_family_of_the_server() {
        let v4 = UdpTransport::for_server("127.0.0.1:7000".parse().unwrap()).unwrap();
        assert!(v4.local_addr().unwrap().is_ipv4());
        if let Ok(v6) = UdpTransport::for_server("[::1]:7000".parse().unwrap()) {
            assert!(v6.local_addr().unwrap().is_ipv6());
        } else {
            eprintln!("skipped the IPv6 half: no IPv6 on this host");
        }
    }
}
