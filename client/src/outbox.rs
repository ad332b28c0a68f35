//! Messages waiting to be sent, queued per destination and packed into datagrams.

use proto::DATAGRAM_BYTES_MAX;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// Encoded messages per destination, in order. Destinations take turns, and each datagram
/// carries as many of one destination's queued messages, back to back, as fit in
/// `DATAGRAM_BYTES_MAX` (several small GETs become one multi-get datagram).
#[derive(Debug)]
pub(crate) struct Outbox {
    queues: HashMap<SocketAddr, VecDeque<Vec<u8>>>,
    turns: VecDeque<SocketAddr>,
    /// Bytes of messages one datagram may carry (less than `DATAGRAM_BYTES_MAX` when the
    /// datagrams are sealed on their way out).
    datagram_bytes_max: usize,
}

impl Default for Outbox {
    fn default() -> Outbox {
        Outbox::with_limit(DATAGRAM_BYTES_MAX)
    }
}

impl Outbox {
    /// An outbox packing at most `datagram_bytes_max` bytes of messages per datagram.
    pub(crate) fn with_limit(datagram_bytes_max: usize) -> Outbox {
        Outbox { queues: HashMap::new(), turns: VecDeque::new(), datagram_bytes_max }
    }

    /// Queues one encoded message (at most the limit) for `to`.
    pub(crate) fn push(&mut self, to: SocketAddr, message: Vec<u8>) {
        assert!(message.len() <= self.datagram_bytes_max, "message of {} bytes", message.len());
        let queue = self.queues.entry(to).or_default();
        if queue.is_empty() {
            self.turns.push_back(to);
        }
        queue.push_back(message);
    }

    /// The next datagram: the first destination's queued messages that fit one datagram.
    pub(crate) fn pop_datagram(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let to = self.turns.pop_front()?;
        let queue = self.queues.get_mut(&to).expect("a turn has a queue");
        let mut datagram = queue.pop_front().expect("a turn has a message");
        while let Some(next) = queue.front() {
            if datagram.len() + next.len() > self.datagram_bytes_max {
                break;
            }
            datagram.extend_from_slice(next);
            queue.pop_front();
        }
        if queue.is_empty() {
            self.queues.remove(&to);
        } else {
            self.turns.push_back(to);
        }
        Some((to, datagram))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn small_messages_to_one_destination_share_a_datagram() {
        let mut outbox = Outbox::default();
        for i in 0..3u8 {
            outbox.push(addr(1), vec![i; 100]);
        }
        outbox.push(addr(2), vec![9; 100]);
        let (to, datagram) = outbox.pop_datagram().unwrap();
        assert_eq!((to, datagram.len()), (addr(1), 300));
        assert_eq!(&datagram[200..], &[2; 100][..]);
        let (to, datagram) = outbox.pop_datagram().unwrap();
        assert_eq!((to, datagram.len()), (addr(2), 100));
        assert!(outbox.pop_datagram().is_none());
    }

    #[test]
    fn datagrams_never_exceed_the_limit_and_destinations_take_turns() {
        let mut outbox = Outbox::default();
        for _ in 0..10 {
            outbox.push(addr(1), vec![1; 400]);
        }
        outbox.push(addr(2), vec![2; DATAGRAM_BYTES_MAX]);
        let sizes: Vec<_> = std::iter::from_fn(|| outbox.pop_datagram())
            .map(|(to, d)| (to.port(), d.len()))
            .collect();
        assert_eq!(sizes, [(1, 1200), (2, DATAGRAM_BYTES_MAX), (1, 1200), (1, 1200), (1, 400)]);
    }
}
