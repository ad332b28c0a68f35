//! Fixed-size packet buffers and the pool that lends them, shared by the software backends.
//!
//! Every buffer is allocated once, when the pool is built; lending and taking back move a
//! `PacketBuf` (a pointer and two words) in and out of a `Vec` whose capacity never grows.

use std::net::{Ipv4Addr, SocketAddr};

use crate::Buffer;

/// One datagram's worth of memory, lent by a port.
#[derive(Debug)]
pub struct PacketBuf {
    data: Box<[u8]>,
    len: usize,
    peer: SocketAddr,
    /// See `Buffer::segment_bytes`.
    segment: usize,
}

impl PacketBuf {
    fn new(bytes: usize) -> PacketBuf {
        PacketBuf {
            data: vec![0; bytes].into_boxed_slice(),
            len: 0,
            peer: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            segment: 0,
        }
    }

    /// Marks a received buffer as holding datagrams of `bytes` each (0: one datagram).
    pub(crate) fn set_segment_bytes(&mut self, bytes: usize) {
        self.segment = bytes;
    }

    /// The allocated size in bytes; a received datagram of exactly this length may have been
    /// truncated.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// The whole buffer, for a backend that fills it (the kernel, the in-memory network).
    pub(crate) fn raw_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl Buffer for PacketBuf {
    fn payload(&self) -> &[u8] {
        &self.data[..self.len]
    }

    fn capacity_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    fn set_len(&mut self, len: usize) {
        assert!(len <= self.data.len(), "len {len} > capacity {}", self.data.len());
        self.len = len;
    }

    fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = peer;
    }

    fn segment_bytes(&self) -> usize {
        self.segment
    }
}

/// A free list of `PacketBuf`s of one size, filled at start-up.
#[derive(Debug)]
pub(crate) struct BufferPool {
    free: Vec<PacketBuf>,
    buf_bytes: usize,
    buffers: usize,
}

impl BufferPool {
    /// Allocates `buffers * buf_bytes` bytes now; nothing later.
    pub(crate) fn new(buffers: usize, buf_bytes: usize) -> BufferPool {
        assert!(buffers > 0 && buf_bytes > 0);
        let free = (0..buffers).map(|_| PacketBuf::new(buf_bytes)).collect();
        BufferPool { free, buf_bytes, buffers }
    }

    /// Lends an empty buffer, or `None` when all are out.
    pub(crate) fn alloc(&mut self) -> Option<PacketBuf> {
        let mut buf = self.free.pop()?;
        buf.len = 0;
        buf.segment = 0;
        Some(buf)
    }

    /// Takes a buffer back. A buffer from another pool, or one given back twice, is a bug.
    pub(crate) fn release(&mut self, buf: PacketBuf) {
        assert_eq!(buf.capacity(), self.buf_bytes, "buffer from another pool");
        assert!(self.free.len() < self.buffers, "more buffers released than lent");
        self.free.push(buf);
    }

    /// Buffers ready to lend.
    pub(crate) fn available(&self) -> usize {
        self.free.len()
    }

    /// Whether `buf` is of this pool's size (so it may be released here).
    pub(crate) fn fits(&self, buf: &PacketBuf) -> bool {
        buf.capacity() == self.buf_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_lends_and_takes_back_without_growing() {
        let mut pool = BufferPool::new(2, 16);
        let mut a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        assert!(pool.alloc().is_none());
        a.capacity_mut()[..3].copy_from_slice(b"abc");
        a.set_len(3);
        assert_eq!(a.payload(), b"abc");
        pool.release(a);
        pool.release(b);
        assert_eq!(pool.available(), 2);
        assert_eq!(pool.alloc().unwrap().payload(), b"", "a lent buffer starts empty");
    }

    #[test]
    #[should_panic(expected = "more buffers released")]
    fn releasing_a_stranger_is_a_bug() {
        let mut pool = BufferPool::new(1, 16);
        pool.release(PacketBuf::new(16));
    }
}
