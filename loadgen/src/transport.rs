//! The client library's `Transport` over any dataplane `Port`, so the generator fetches the
//! partition map through the same port (a DPDK queue, say) that carries its load.

use client::Transport;
use dataplane::{Buffer, Port, BATCH};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Borrows a port for a few setup exchanges (allocates per datagram: not for the load).
pub(super) struct PortTransport<'p, P: Port> {
    port: &'p mut P,
    received: VecDeque<(Vec<u8>, SocketAddr)>,
    rx: Vec<P::Buf>,
}

impl<'p, P: Port> PortTransport<'p, P> {
    pub(super) fn new(port: &'p mut P) -> PortTransport<'p, P> {
        PortTransport { port, received: VecDeque::new(), rx: Vec::with_capacity(BATCH) }
    }

    fn receive(&mut self) -> io::Result<()> {
        self.port.rx_burst(&mut self.rx)?;
        for buf in self.rx.drain(..) {
            for datagram in dataplane::datagrams(&buf) {
                self.received.push_back((datagram.to_vec(), buf.peer()));
            }
            self.port.release(buf);
        }
        Ok(())
    }
}

impl<P: Port> Transport for PortTransport<'_, P> {
    fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        let mut buf = self.port.alloc_tx().ok_or_else(|| io::Error::other("no free buffer"))?;
        let room = buf.capacity_mut();
        if room.len() < datagram.len() {
            self.port.release(buf);
            return Err(io::Error::other("datagram larger than a port buffer"));
        }
        room[..datagram.len()].copy_from_slice(datagram);
        buf.set_len(datagram.len());
        buf.set_peer(to);
        let mut tx = vec![buf];
        for _ in 0..3 {
            self.port.tx_burst(&mut tx)?;
            if tx.is_empty() {
                break;
            }
            self.port.wait_writable(Duration::from_millis(1))?;
        }
        for unsent in tx.drain(..) {
            self.port.release(unsent);
        }
        Ok(())
    }

    fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((datagram, from)) = self.received.pop_front() {
                let len = datagram.len().min(buf.len());
                buf[..len].copy_from_slice(&datagram[..len]);
                return Ok(Some((len, from)));
            }
            self.receive()?;
            if !self.received.is_empty() {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.port.wait_readable(left.min(Duration::from_millis(1)))?;
        }
    }
}
