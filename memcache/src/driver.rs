//! How a door rides on a core's loop: `DoorPort` wraps the core's cradle port so the loop's
//! idle wait also wakes for the door (its connections, its UDP socket, hand-overs from other
//! cores), and `DoorHandler` runs the door's iteration around the core's end of batch.

use crate::door::Door;
use control::Core;
use dataplane::{Handler, Port, Transmit};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A port whose `wait_readable` returns when either it or the door has something to do, and
/// that keeps the loop spinning for `spin` after the door's last activity, as the loop does
/// after its last datagram (a hand-over between cores then costs no wake-up of a sleeping
/// thread while traffic flows).
#[derive(Debug)]
pub struct DoorPort<P> {
    inner: P,
    waiter: Poll,
    events: Events,
    busy: Arc<AtomicBool>,
    active: Arc<AtomicBool>,
    spin: Duration,
    active_at: Instant,
}

impl<P: Port + AsRawFd> DoorPort<P> {
    /// Wraps `inner` for `door`'s loop, which spins `spin` after activity before it blocks.
    pub fn new(inner: P, door: &Door, spin: Duration) -> io::Result<DoorPort<P>> {
        let waiter = Poll::new()?;
        let port_fd = inner.as_raw_fd();
        let door_fd = door.wait_fd();
        waiter.registry().register(&mut SourceFd(&port_fd), Token(0), Interest::READABLE)?;
        waiter.registry().register(&mut SourceFd(&door_fd), Token(1), Interest::READABLE)?;
        Ok(DoorPort {
            inner,
            waiter,
            events: Events::with_capacity(4),
            busy: door.busy_flag(),
            active: door.active_flag(),
            spin,
            active_at: Instant::now(),
        })
    }
}

impl<P: Port + AsRawFd> Port for DoorPort<P> {
    type Buf = P::Buf;

    fn rx_burst(&mut self, rx: &mut Vec<Self::Buf>) -> io::Result<usize> {
        self.inner.rx_burst(rx)
    }

    fn alloc_tx(&mut self) -> Option<Self::Buf> {
        self.inner.alloc_tx()
    }

    fn tx_burst(&mut self, tx: &mut Vec<Self::Buf>) -> io::Result<usize> {
        self.inner.tx_burst(tx)
    }

    fn release(&mut self, buf: Self::Buf) {
        self.inner.release(buf)
    }

    fn wait_readable(&mut self, timeout: Duration) -> io::Result<()> {
        if self.busy.load(Ordering::Relaxed) {
            return Ok(()); // the door has work left from the last iteration
        }
        if self.active.swap(false, Ordering::Relaxed) {
            self.active_at = Instant::now();
        }
        if self.active_at.elapsed() < self.spin {
            std::hint::spin_loop();
            return Ok(());
        }
        // Edge-triggered: the port was drained (the loop waits only after an empty burst)
        // and the door takes all its events every iteration, so every new arrival is an edge.
        match self.waiter.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        }
    }

    fn wait_writable(&mut self, timeout: Duration) -> io::Result<()> {
        self.inner.wait_writable(timeout)
    }

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }
}

/// A core and its door, as one loop handler.
#[derive(Debug)]
pub struct DoorHandler {
    /// The core (cradle's own protocol goes straight to it).
    pub core: Core,
    /// Its door.
    pub door: Door,
}

impl Handler for DoorHandler {
    fn handle_datagram(
        &mut self,
        now_ns: u64,
        peer: SocketAddr,
        datagram: &[u8],
        tx: &mut dyn Transmit,
    ) {
        self.core.handle_datagram(now_ns, peer, datagram, tx);
    }

    fn burst_received(&mut self, buffers: usize) {
        self.core.burst_received(buffers);
    }

    fn end_batch(&mut self, now_ns: u64, tx: &mut dyn Transmit) {
        // The door's writes join this batch's group commit; their replies follow it.
        self.door.step(now_ns, &mut self.core);
        self.core.end_batch(now_ns, tx);
        self.door.settle(&mut self.core);
    }

    fn burst_done(&mut self, datagrams: usize, service_ns: u64) {
        self.core.burst_done(datagrams, service_ns);
    }

    fn waiting(&self) -> bool {
        self.core.waiting()
    }

    fn iteration_done(&mut self, spent_ns: u64, stalled: bool) {
        self.core.iteration_done(spent_ns, stalled);
    }
}
