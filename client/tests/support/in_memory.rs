//! A transport wired straight to a fake server, and deterministic test bytes.

use super::fake_server::FakeServer;
use client::Transport;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Each send is answered (by the fake server) before the next receive.
pub(crate) struct InMemory {
    pub(crate) server: FakeServer,
    inbox: VecDeque<Vec<u8>>,
}

impl InMemory {
    pub(crate) fn new(server: FakeServer) -> InMemory {
        InMemory { server, inbox: VecDeque::new() }
    }
}

impl Transport for InMemory {
    fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        assert_eq!(to, self.server.addr);
        self.inbox.extend(self.server.handle(datagram));
        Ok(())
    }

    fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        let Some(datagram) = self.inbox.pop_front() else {
            std::thread::sleep(timeout);
            return Ok(None);
        };
        buf[..datagram.len()].copy_from_slice(&datagram);
        Ok(Some((datagram.len(), self.server.addr)))
    }
}

/// `len` pseudo-random bytes (the same seed gives the same bytes).
pub(crate) fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    testkit::Rng::from_seed(seed).fill_bytes(&mut bytes);
    bytes
}
