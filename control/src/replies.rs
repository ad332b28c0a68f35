//! Packs reply messages into as few datagrams as fit, and enforces the amplification limit.
//!
//! Every request gets an answer, and the replies to an unvalidated datagram stay within 3x
//! its bytes: while a request is answered, the budget keeps back as many bytes as the
//! datagram's requests after it take. Each of those is at least a 72-byte header, and its
//! answer needs at most a 72-byte RETRY_WITH_TOKEN, so the bytes kept back always suffice.

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
    /// Bytes of the datagram's requests after the one being answered (kept back for them).
    rest: usize,
    pub(crate) datagrams: u64,
    pub(crate) retry_token: u64,
    /// Bytes of the datagrams sent.
    pub(crate) bytes: u64,
    /// Reply messages by status (`crate::stats::STATUS_SLOTS`).
    pub(crate) statuses: [u64; crate::stats::STATUS_SLOTS],
}

impl Replies {
    pub(crate) fn new() -> Replies {
        Replies {
            buf: Box::new([0; DATAGRAM_BYTES_MAX]),
            len: 0,
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            budget: 0,
            rest: 0,
            datagrams: 0,
            retry_token: 0,
            bytes: 0,
            statuses: [0; crate::stats::STATUS_SLOTS],
        }
    }

    /// Starts the replies to a `request_bytes`-long datagram from `peer`.
    pub(crate) fn begin(&mut self, peer: SocketAddr, request_bytes: usize) {
        debug_assert_eq!(self.len, 0, "finish() was not called");
        self.peer = peer;
        self.budget = AMPLIFICATION_FACTOR * request_bytes;
        self.rest = request_bytes;
    }

    /// The next request of the datagram is `bytes` long (the ones after it take the rest).
    pub(crate) fn next_request(&mut self, bytes: usize) {
        self.rest = self.rest.saturating_sub(bytes);
    }

    /// Bytes the current request's replies may take now.
    fn room(&self) -> usize {
        self.budget.saturating_sub(self.rest)
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
        if !validated && len > self.room() {
            let mut bare = *header;
            bare.status = Status::RetryWithToken as u16;
            bare.flags = proto::flags::REPLY;
            bare.version = 0;
            (bare.frag_index, bare.frag_count, bare.total_len) = (0, 0, 0);
            // Always fits for a request's first answer (see the module comment); after some
            // fragments of a reply, the request has its answer already.
            if HEADER_BYTES <= self.room() {
                self.retry_token += 1;
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
        self.count_status(header.status);
    }

    /// Counts one reply message of status `status` (a wire number; the parser knows < 16).
    pub(crate) fn count_status(&mut self, status: u16) {
        self.statuses[usize::from(status) % crate::stats::STATUS_SLOTS] += 1;
    }

    /// Takes `bytes` from an unvalidated sender's budget for a reply sent later (a write's
    /// reply held for the group commit); false if they do not fit (never, for a request's
    /// one 72-byte reply: see the module comment).
    pub(crate) fn reserve(&mut self, bytes: usize) -> bool {
        let fits = bytes <= self.room();
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
            self.bytes += self.len as u64;
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
        r.next_request(120);
        assert!(r.push(&mut sent, &ok(), b"k", &[0; 200], false), "273 <= 360");
        assert!(!r.push(&mut sent, &ok(), b"k", &[0; 200], false), "over the budget");
        r.flush(&mut sent);
        assert_eq!(sent.0[0].len(), 273 + 72);
        let statuses: Vec<u16> =
            Messages::new(&sent.0[0]).map(|m| m.unwrap().header.status).collect();
        assert_eq!(statuses, vec![Status::Ok as u16, Status::RetryWithToken as u16]);
        assert_eq!(r.retry_token, 1);
    }

    /// Any mix of requests in one unvalidated datagram: each gets an answer, all answers fit
    /// 3x the datagram.
    #[test]
    fn every_request_is_answered_within_three_times_the_datagram() {
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let mut rng = testkit::Rng::from_seed(0x2545_f491_4f6c_dd1d);
        for _ in 0..2000 {
            let requests = 1 + rng.below(20) as usize;
            // Request sizes of at least a header, replies of any size (several for some).
            let sizes: Vec<usize> = (0..requests).map(|_| 72 + rng.below(40) as usize).collect();
            let datagram: usize = sizes.iter().sum();
            let mut sent = Sent::default();
            let mut r = Replies::new();
            r.begin(peer, datagram);
            for (i, &size) in sizes.iter().enumerate() {
                r.next_request(size);
                let replies = 1 + rng.below(3);
                let value = vec![0; rng.below(400) as usize];
                let header = HeaderFields { tracking_id: i as u64, ..ok() };
                for _ in 0..replies {
                    if !r.push(&mut sent, &header, b"", &value, false) {
                        break;
                    }
                }
            }
            r.flush(&mut sent);
            let bytes: usize = sent.0.iter().map(Vec::len).sum();
            assert!(bytes <= 3 * datagram, "{bytes} > 3 x {datagram}");
            let mut answered: Vec<u64> = sent
                .0
                .iter()
                .flat_map(|d| Messages::new(d).map(|m| m.unwrap().header.tracking_id))
                .collect();
            answered.dedup();
            assert_eq!(answered, (0..requests as u64).collect::<Vec<_>>(), "sizes {sizes:?}");
        }
    }
}
