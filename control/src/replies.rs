//! Packs reply messages into as few datagrams as fit, and enforces the amplification limit.

use crate::validation::AMPLIFICATION_FACTOR;
use dataplane::Transmit;
use proto::{encode_message, HeaderFields, Status, DATAGRAM_BYTES_MAX, HEADER_BYTES};
use std::net::SocketAddr;

/// The replies to one received datagram.
#[derive(Debug)]
pub(crate) struct Replies {
    buf: Box<[u8; DATAGRAM_BYTES_MAX]>,
    len: usize,
    peer: SocketAddr,
    /// Bytes the replies to unvalidated requests of this datagram may still take.
    budget: usize,
    pub(crate) datagrams: u64,
    pub(crate) retry_token: u64,
}

impl Replies {
    pub(crate) fn new() -> Replies {
        Replies {
            buf: Box::new([0; DATAGRAM_BYTES_MAX]),
            len: 0,
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            budget: 0,
            datagrams: 0,
            retry_token: 0,
        }
    }

    /// Starts the replies to a `request_bytes`-long datagram from `peer`.
    pub(crate) fn begin(&mut self, peer: SocketAddr, request_bytes: usize) {
        debug_assert_eq!(self.len, 0, "finish() was not called");
        self.peer = peer;
        self.budget = AMPLIFICATION_FACTOR * request_bytes;
    }

    /// Queues one reply message. Replies to a request without a valid token (`validated`
    /// false) that would exceed the budget become a bare RETRY_WITH_TOKEN header; returns
    /// false then, so the caller stops sending more for that request.
    pub(crate) fn push(
        &mut self,
        tx: &mut dyn Transmit,
        header: &HeaderFields,
        key: &[u8],
        value: &[u8],
        validated: bool,
    ) -> bool {
        let len = HEADER_BYTES + key.len() + value.len();
        if !validated && len > self.budget {
            self.retry_token += 1;
            let mut bare = *header;
            bare.status = Status::RetryWithToken as u16;
            bare.flags = proto::flags::REPLY;
            bare.version = 0;
            (bare.frag_index, bare.frag_count, bare.total_len) = (0, 0, 0);
            if HEADER_BYTES <= self.budget {
                self.budget -= HEADER_BYTES;
                self.append(tx, &bare, &[], &[]);
            }
            return false;
        }
        if !validated {
            self.budget -= len;
        }
        self.append(tx, header, key, value);
        true
    }

    fn append(&mut self, tx: &mut dyn Transmit, header: &HeaderFields, key: &[u8], value: &[u8]) {
        let len = HEADER_BYTES + key.len() + value.len();
        assert!(len <= DATAGRAM_BYTES_MAX, "reply message of {len} bytes cannot be sent");
        if self.len + len > DATAGRAM_BYTES_MAX {
            self.flush(tx);
        }
        let written = encode_message(&mut self.buf[self.len..], header, key, value)
            .expect("space checked above");
        self.len += written;
    }

    /// Takes `bytes` from an unvalidated sender's budget for a reply sent later (a write's
    /// reply held for the group commit); false if they do not fit.
    pub(crate) fn reserve(&mut self, bytes: usize) -> bool {
        let fits = bytes <= self.budget;
        if fits {
            self.budget -= bytes;
        }
        fits
    }

    /// Sends what is packed.
    pub(crate) fn flush(&mut self, tx: &mut dyn Transmit) {
        if self.len > 0 {
            tx.send(self.peer, &self.buf[..self.len]);
            self.datagrams += 1;
            self.len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Messages, Opcode};

    #[derive(Default)]
    struct Sent(Vec<Vec<u8>>);
    impl Transmit for Sent {
        fn send(&mut self, _peer: SocketAddr, datagram: &[u8]) -> bool {
            self.0.push(datagram.to_vec());
            true
        }
    }

    fn ok() -> HeaderFields {
        HeaderFields { opcode: Opcode::Get as u8, ..HeaderFields::default() }.reply(Status::Ok)
    }

    #[test]
    fn packs_until_full_and_limits_unvalidated_bytes() {
        let mut sent = Sent::default();
        let mut r = Replies::new();
        r.begin(SocketAddr::from(([127, 0, 0, 1], 1)), 1000);
        for _ in 0..20 {
            assert!(r.push(&mut sent, &ok(), b"key", &[7; 100], true));
        }
        r.flush(&mut sent);
        let counts: Vec<usize> = sent.0.iter().map(|d| Messages::new(d).count()).collect();
        assert_eq!(counts, vec![8, 8, 4], "175-byte messages, 8 per 1472-byte datagram");
        assert!(sent.0.iter().all(|d| d.len() <= DATAGRAM_BYTES_MAX));

        let mut sent = Sent::default();
        r.begin(SocketAddr::from(([127, 0, 0, 1], 1)), 120);
        assert!(r.push(&mut sent, &ok(), b"k", &[0; 200], false), "273 <= 360");
        assert!(!r.push(&mut sent, &ok(), b"k", &[0; 200], false), "over the budget");
        r.flush(&mut sent);
        assert_eq!(sent.0[0].len(), 273 + 72);
        let statuses: Vec<u16> =
            Messages::new(&sent.0[0]).map(|m| m.unwrap().header.status).collect();
        assert_eq!(statuses, vec![Status::Ok as u16, Status::RetryWithToken as u16]);
        assert_eq!(r.retry_token, 1);
    }
}
