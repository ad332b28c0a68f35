//! The datagram transport under the blocking driver: a narrow trait and its UDP socket.

#[cfg(target_os = "linux")]
mod icmp;

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// Refused destinations a `UdpTransport` keeps until `poll_refused` takes them; more are
/// dropped (their requests then run out of budget instead).
const REFUSED_MAX: usize = 64;

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

    /// A destination the system reported refusing a datagram since the last call (an ICMP
    /// port unreachable: nothing listens on that port), or `None`. The driver moves the
    /// requests waiting on it to the next server at once instead of spending their retry
    /// budget. A transport that cannot tell returns `None`, the default: its refusals look
    /// like losses.
    fn poll_refused(&mut self) -> Option<SocketAddr> {
        None
    }
}

/// A UDP socket on an ephemeral port. Its address family is fixed at bind time, so every
/// server it talks to must have that family. On Linux it reports closed ports
/// (`poll_refused`): the socket is not connected (it talks to every server), so it asks for
/// ICMP errors with `IP_RECVERR` and reads them from its error queue.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    /// The wait the socket is configured for (`None`: non-blocking), to skip redundant
    /// system calls.
    wait: Option<Duration>,
    /// Destinations refused since the last `poll_refused`, oldest first.
    refused: VecDeque<SocketAddr>,
}

impl UdpTransport {
    /// Binds `local`. Where ICMP errors cannot be had, refusals look like losses.
    pub fn bind(local: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(local)?;
        socket.set_nonblocking(true)?;
        #[cfg(target_os = "linux")]
        let _ = icmp::enable(&socket, local.is_ipv6());
        Ok(UdpTransport { socket, wait: None, refused: VecDeque::new() })
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

    /// Reads the socket's queued ICMP errors after a call failed with one; returns whether
    /// there were any (the failure was about an earlier datagram, not this call).
    fn take_errors(&mut self) -> bool {
        #[cfg(target_os = "linux")]
        {
            let refused = &mut self.refused;
            icmp::drain(&self.socket, |destination| {
                if refused.len() < REFUSED_MAX && !refused.contains(&destination) {
                    refused.push_back(destination);
                }
            }) > 0
        }
        #[cfg(not(target_os = "linux"))]
        false
    }
}

impl Transport for UdpTransport {
    fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        match self.socket.send_to(datagram, to) {
            Ok(_) => Ok(()),
            // The error of an earlier datagram, perhaps to another server: this one is sent.
            Err(error) if !is_wait(&error) && self.take_errors() => {
                self.socket.send_to(datagram, to).map(drop)
            }
            Err(error) => Err(error),
        }
    }

    fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        self.configure_wait(timeout)?;
        match self.socket.recv_from(buf) {
            Ok(received) => Ok(Some(received)),
            Err(error) if is_wait(&error) => Ok(None),
            // About an earlier datagram: nothing arrived yet.
            Err(error) if self.take_errors() || is_unattributed_refusal(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn poll_refused(&mut self) -> Option<SocketAddr> {
        self.refused.pop_front()
    }
}

/// Errors that only mean "not now": nothing arrived in time, no room to send, a signal.
fn is_wait(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// The ICMP error some systems report for an earlier send to a closed port without saying
/// which (where the error queue is not read): that datagram is lost, the retry timer covers
/// it.
fn is_unattributed_refusal(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset)
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

    /// A loopback port nothing listens on (bound, noted, closed).
    fn closed_port() -> SocketAddr {
        UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_closed_port_is_reported_and_costs_no_other_datagram() {
        let closed = closed_port();
        let mut client = UdpTransport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut live = UdpTransport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut buf = [0u8; 64];
        client.send_to(b"anyone?", closed).unwrap();
        // The port unreachable ends the wait long before its 5 s.
        let started = Instant::now();
        assert!(client.recv_from(&mut buf, Duration::from_secs(5)).unwrap().is_none());
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert_eq!((client.poll_refused(), client.poll_refused()), (Some(closed), None));

        // The error of a datagram to the closed port is pending when one goes to a live
        // address: that send fails with it, and the transport sends again.
        client.send_to(b"anyone?", closed).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        client.send_to(b"hello", live.local_addr().unwrap()).unwrap();
        let (len, _) = live.recv_from(&mut buf, Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(&buf[..len], b"hello");
        let refused = client.poll_refused().or_else(|| {
            let _ = client.recv_from(&mut buf, Duration::from_secs(1));
            client.poll_refused()
        });
        assert_eq!(refused, Some(closed));
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
