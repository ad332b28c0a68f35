//! Where replies go: a TCP connection or one UDP request. Replies leave in the order of the
//! commands; a part that waits for another core or for the group commit holds back the parts
//! after it, which are queued until it is filled.

use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::SocketAddr;

/// What a sink is.
#[derive(Debug, Default)]
pub(crate) enum SinkKind {
    /// A free slot.
    #[default]
    Closed,
    /// A connection.
    Tcp(TcpStream),
    /// One request datagram; `trusted`: its sender's network is in `udp_allow`.
    Udp { peer: SocketAddr, request_id: u16, request_bytes: usize, trusted: bool },
}

/// One part of the replies, after the first waiting one.
#[derive(Debug)]
enum Part {
    Waiting,
    Ready(Vec<u8>),
}

/// A reply destination and its ordered parts.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub(crate) kind: SinkKind,
    /// Bumped when the slot is reused, so late replies to a closed sink are dropped.
    pub(crate) generation: u32,
    /// TCP: bytes received and not yet used.
    pub(crate) input: Vec<u8>,
    /// Replies ready to send, from `out_at` on.
    pub(crate) out: Vec<u8>,
    out_at: usize,
    /// Parts from the first waiting one on; `first_seq` numbers the front.
    parts: VecDeque<Part>,
    first_seq: u64,
    /// Bytes of input to drop (a refused data block); `usize::MAX`: through the next newline.
    pub(crate) swallow: usize,
    /// `quit` was read: no more input is served, the connection closes once replies are out.
    pub(crate) quitting: bool,
    /// Not read while its replies drain.
    pub(crate) blocked: bool,
    /// Nothing parsed yet (the first byte tells the binary protocol apart).
    pub(crate) fresh: bool,
    /// The peer's FIN or an error was reported: reads go on to EOF or EAGAIN.
    pub(crate) hangup: bool,
    /// UDP: the reply is already known to be over the sender's budget (`SERVER_ERROR use TCP`).
    pub(crate) refused: bool,
    /// Bytes of ready parts queued behind a waiting one.
    queued_bytes: usize,
}

impl Sink {
    pub(crate) fn open(&mut self, kind: SinkKind) {
        self.kind = kind;
        self.input.clear();
        self.out.clear();
        self.out_at = 0;
        self.parts.clear();
        self.queued_bytes = 0;
        self.swallow = 0;
        self.quitting = false;
        self.blocked = false;
        self.fresh = true;
        self.hangup = false;
        self.refused = false;
    }

    pub(crate) fn close(&mut self) {
        self.kind = SinkKind::Closed;
        self.generation = self.generation.wrapping_add(1);
        self.parts.clear();
        self.queued_bytes = 0;
        self.input = Vec::new();
        self.out.clear();
        self.out_at = 0;
    }

    /// Parts still waiting (or queued behind one).
    pub(crate) fn parts_waiting(&self) -> usize {
        self.parts.len()
    }

    /// Whether every part is in `out` (a UDP reply can be sent).
    pub(crate) fn is_whole(&self) -> bool {
        self.parts.is_empty()
    }

    /// Bytes ready and not yet sent, plus those queued.
    pub(crate) fn pending_out(&self) -> usize {
        self.out.len() - self.out_at
    }

    /// Reply bytes held here: unsent, and queued behind a waiting part.
    pub(crate) fn held_bytes(&self) -> usize {
        self.pending_out() + self.queued_bytes
    }

    pub(crate) fn has_output(&self) -> bool {
        self.out.len() > self.out_at
    }

    #[cfg(test)]
    fn unsent(&self) -> &[u8] {
        &self.out[self.out_at..]
    }

    /// Appends a reply that is ready now.
    pub(crate) fn push_ready(&mut self, bytes: &[u8]) {
        if self.parts.is_empty() {
            self.out.extend_from_slice(bytes);
        } else if !bytes.is_empty() {
            self.queued_bytes += bytes.len();
            self.parts.push_back(Part::Ready(bytes.to_vec()));
        }
    }

    /// Reserves the place of a reply that comes later; returns its number.
    pub(crate) fn push_waiting(&mut self) -> u64 {
        if self.parts.is_empty() {
            self.first_seq = self.first_seq.wrapping_add(1);
        }
        let seq = self.first_seq.wrapping_add(self.parts.len() as u64);
        self.parts.push_back(Part::Waiting);
        seq
    }

    /// Fills a waiting part; moves every ready part at the front into `out`.
    pub(crate) fn fill(&mut self, seq: u64, bytes: Vec<u8>) {
        let index = seq.wrapping_sub(self.first_seq) as usize;
        match self.parts.get_mut(index) {
            Some(part @ Part::Waiting) => {
                self.queued_bytes += bytes.len();
                *part = Part::Ready(bytes);
            }
            _ => return, // not a waiting part of this sink: a stale reply
        }
        while let Some(Part::Ready(_)) = self.parts.front() {
            let Some(Part::Ready(bytes)) = self.parts.pop_front() else { unreachable!() };
            self.queued_bytes -= bytes.len();
            self.out.extend_from_slice(&bytes);
            self.first_seq = self.first_seq.wrapping_add(1);
        }
    }

    /// Writes ready replies to the connection until it would block; returns the bytes
    /// written, or `Err` when the connection failed or closed.
    pub(crate) fn write_out(&mut self) -> Result<usize, ()> {
        let SinkKind::Tcp(stream) = &mut self.kind else { return Ok(0) };
        let mut written = 0;
        while self.out_at < self.out.len() {
            match stream.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    written += n;
                    self.out_at += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        Ok(written)
    }

    /// Drops swallowed input from the start of `input`; returns the bytes dropped.
    pub(crate) fn swallow_from(&mut self, input: &[u8]) -> usize {
        if self.swallow == usize::MAX {
            return match input.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.swallow = 0;
                    i + 1
                }
                None => input.len(),
            };
        }
        let n = self.swallow.min(input.len());
        self.swallow -= n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_leave_in_order_whatever_order_they_are_filled_in() {
        let mut sink = Sink::default();
        sink.push_ready(b"a");
        let first = sink.push_waiting();
        sink.push_ready(b"c");
        let second = sink.push_waiting();
        sink.push_ready(b"e");
        assert_eq!(sink.unsent(), b"a");
        sink.fill(second, b"d".to_vec());
        assert_eq!(sink.unsent(), b"a", "d waits for b");
        sink.fill(second, b"x".to_vec());
        sink.fill(first, b"b".to_vec());
        assert_eq!(sink.unsent(), b"abcde");
        assert!(sink.is_whole());
        // A stale number (already filled) changes nothing.
        sink.fill(first, b"late".to_vec());
        assert_eq!(sink.unsent(), b"abcde");
        let third = sink.push_waiting();
        assert_ne!(third, first);
        sink.fill(third, b"f".to_vec());
        assert_eq!(sink.unsent(), b"abcdef");
    }

    #[test]
    fn swallowing_counts_bytes_or_runs_to_a_newline() {
        let mut sink = Sink { swallow: 5, ..Sink::default() };
        assert_eq!(sink.swallow_from(b"abc"), 3);
        assert_eq!(sink.swallow_from(b"defgh"), 2);
        assert_eq!(sink.swallow, 0);
        sink.swallow = usize::MAX;
        assert_eq!(sink.swallow_from(b"xxxx"), 4);
        assert_eq!(sink.swallow_from(b"yy\nget"), 3);
        assert_eq!(sink.swallow, 0);
    }
}
