//! Round-trip estimates per class of request, against a server whose reads and writes take
//! different times, on a lossless link, with time driven by hand: every resend counted here
//! is a spurious one.

use super::*;
use proto::{Messages, Opcode, Status};
use std::collections::BTreeMap;
use std::time::Duration;

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// One way across the link.
const ONE_WAY: Duration = Duration::from_micros(10);

/// A server that answers every request message after a service time drawn for its opcode,
/// and a link that loses nothing.
struct Lossless {
    core: ClientCore,
    now: Instant,
    server: SocketAddr,
    /// Replies on their way: when they arrive, and the datagram.
    replies: BTreeMap<(Instant, u64), Vec<u8>>,
    seq: u64,
    rng: u64,
    /// Service time of a read and of a write: the mean, and how far either side of it the
    /// drawn time may fall.
    read: (Duration, Duration),
    write: (Duration, Duration),
}

impl Lossless {
    fn new(config: ClientConfig, read: (Duration, Duration), write: (Duration, Duration)) -> Self {
        let server = config.servers[0];
        let core = ClientCore::new(config).unwrap();
        let (now, replies, seq, rng) = (Instant::now(), BTreeMap::new(), 0, 0x9E37_79B9_7F4A_7C15);
        Lossless { core, now, server, replies, seq, rng, read, write }
    }

    fn draw(&mut self, (mean, spread): (Duration, Duration)) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let span = spread.as_nanos() as u64 * 2 + 1;
        mean - spread + Duration::from_nanos(self.rng % span)
    }

    /// Datagrams the core queued reach the server; each message's reply is scheduled.
    fn transmit(&mut self) {
        while let Some((to, datagram)) = self.core.poll_transmit() {
            assert_eq!(to, self.server);
            for message in Messages::new(&datagram) {
                let header = message.unwrap().header;
                let write = matches!(header.opcode(), Some(Opcode::Put | Opcode::Delete));
                let service = self.draw(if write { self.write } else { self.read });
                let reply = crate::encode::message(&header.reply(Status::Ok), &[], &[]);
                self.seq += 1;
                self.replies.insert((self.now + ONE_WAY * 2 + service, self.seq), reply);
            }
        }
    }

    /// Runs `total` requests from `next`, `in_flight` at a time, until all completed; each
    /// must succeed.
    fn run(&mut self, total: usize, in_flight: usize, next: impl Fn(usize) -> Request) {
        let (mut submitted, mut done) = (0, 0);
        while done < total {
            while submitted < total && self.core.in_flight() < in_flight {
                self.core.submit(self.now, next(submitted));
                submitted += 1;
            }
            self.transmit();
            let arrival = self.replies.keys().next().map(|&(at, _)| at);
            let next_event = match (arrival, self.core.poll_timeout()) {
                (Some(a), Some(t)) => a.min(t),
                (a, t) => a.or(t).expect("something in flight"),
            };
            self.now = self.now.max(next_event);
            if arrival == Some(next_event) {
                let (_, reply) = self.replies.pop_first().unwrap();
                self.core.handle_datagram(self.now, self.server, &reply);
            }
            self.core.handle_timeout(self.now);
            while let Some((_, result)) = self.core.poll_completion() {
                result.expect("a lossless link answers everything");
                done += 1;
            }
        }
    }
}

fn config() -> ClientConfig {
    let mut config = ClientConfig::new(vec![SocketAddr::from(([127, 0, 0, 1], 7000))]);
    config.seed = 1;
    config
}

/// Runs of 150 reads, then 50 requests alternating writes and reads (PUT, GET, DELETE, GET).
fn interleaved(i: usize) -> Request {
    let key = format!("k{}", i % 500).into_bytes();
    match (i % 200 >= 150, i % 4) {
        (true, 0) => Request::Put { key, value: vec![7; 32] },
        (true, 2) => Request::Delete { key },
        _ => Request::Get { key },
    }
}

/// The demo's mix in miniature: reads answered in about 50 µs, writes after a group commit of
/// about 2 ms, runs of reads between runs of writes. One estimator for both is pulled down
/// to about 1 ms by each run of reads and times the writes after it out before their
/// replies, which are then no samples (Karn's rule).
#[test]
fn reads_and_writes_interleaved_are_never_resent_on_a_lossless_link() {
    for in_flight in [1, 16] {
        let mut link = Lossless::new(config(), (us(50), us(20)), (us(2_000), us(500)));
        link.run(4_000, in_flight, interleaved);
        let stats = link.core.stats();
        assert_eq!(stats.completions, 4_000);
        assert_eq!(stats.retransmits, 0, "{in_flight} in flight: {stats:?}");
    }
}

/// Writes that take 30 ms against a first timeout of 5 ms: each is resent before its reply
/// comes, and Karn's rule drops every such reply's sample. Only the backed-off timeout, kept
/// for the next requests until a sample (RFC 6298 rule 5.7), lets one come back in time.
#[test]
fn a_class_slower_than_its_first_timeout_learns_its_round_trip() {
    let config = config();
    assert_eq!(config.rto_initial, Duration::from_millis(5));
    let mut link = Lossless::new(config, (us(50), us(20)), (us(30_000), us(1_000)));
    link.run(10, 1, |i| Request::Put { key: vec![i as u8], value: vec![1] });
    let learning = link.core.stats().retransmits;
    assert!((1..=4).contains(&learning), "{learning} resends while learning");
    link.run(200, 1, |i| Request::Put { key: vec![i as u8], value: vec![1] });
    assert_eq!(link.core.stats().retransmits, learning, "none once learnt");
}

/// 64 writes in flight at 2 ms, then a spell where the server takes 40 ms (its core was
/// descheduled, its disk stalled). Timed each by the timeout it was armed with, all 64 would
/// be resent, several times each; timed by their class's current timeout, which the first
/// expiry backs off, the spell costs a resend per doubling.
#[test]
fn a_slow_spell_costs_a_few_resends_not_one_per_request_in_flight() {
    let put = |i: usize| Request::Put { key: format!("k{i}").into_bytes(), value: vec![1] };
    let mut link = Lossless::new(config(), (us(50), us(20)), (us(2_000), us(500)));
    link.run(2_000, 64, put);
    assert_eq!(link.core.stats().retransmits, 0);
    link.write = (us(40_000), us(1_000));
    link.run(64, 64, put);
    let spell = link.core.stats().retransmits;
    assert!((1..=6).contains(&spell), "{spell} resends for one slow spell");
    link.write = (us(2_000), us(500));
    link.run(2_000, 64, put);
    assert_eq!(link.core.stats().retransmits, spell, "none after it");
}
