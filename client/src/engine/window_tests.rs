//! The resend window of fragmented transfers, driven by hand: replies crafted at chosen
//! instants, timers fired through `poll_timeout`/`handle_timeout`, every datagram sent
//! recorded with its instant.

use super::*;
use proto::{encode_addr, flags, HeaderFields, Messages, Status, FRAGMENT_BYTES};
use std::ops::Range;
use std::time::Duration;

const WINDOW: Duration = Duration::from_millis(100);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A core over `servers` (ports 7000, 7001, ...) with a 100 ms resend window and a retry
/// budget the window always ends first.
struct Harness {
    core: ClientCore,
    start: Instant,
    /// The last instant handed to the core, since the start.
    now: Duration,
    /// Every datagram sent: when (since the start), to whom, its first message's header.
    sent: Vec<(Duration, SocketAddr, HeaderFields)>,
}

impl Harness {
    fn new(servers: u16) -> Harness {
        let mut config = ClientConfig::new((0..servers).map(|i| addr(7000 + i)).collect());
        config.seed = 1;
        config.resend_window = WINDOW;
        config.attempts_per_server = 1000;
        let core = ClientCore::new(config).unwrap();
        Harness { core, start: Instant::now(), now: Duration::ZERO, sent: Vec::new() }
    }

    /// Submits `request` now; its id and tracking id.
    fn submit(&mut self, request: Request) -> (RequestId, u64) {
        let before = self.sent.len();
        let id = self.core.submit(self.start + self.now, request);
        self.collect(self.now);
        (id, self.sent[before].2.tracking_id)
    }

    fn put(&mut self, fragments: usize) -> (RequestId, u64) {
        let value = vec![7u8; fragments * FRAGMENT_BYTES];
        self.submit(Request::Put { key: b"big".to_vec(), value })
    }

    fn collect(&mut self, at: Duration) {
        while let Some((to, datagram)) = self.core.poll_transmit() {
            for message in Messages::new(&datagram) {
                self.sent.push((at, to, message.unwrap().header));
            }
        }
    }

    /// Fires every timer due up to `at`, at its instant.
    fn advance(&mut self, at: Duration) {
        while let Some(due) = self.core.poll_timeout() {
            if due > self.start + at {
                break;
            }
            self.fire(due);
        }
    }

    fn fire(&mut self, due: Instant) {
        self.now = due - self.start;
        self.core.handle_timeout(due);
        self.collect(self.now);
    }

    /// Delivers a reply from `from` at `at` (timers due before it fire first).
    fn deliver(&mut self, at: Duration, from: SocketAddr, header: HeaderFields, value: &[u8]) {
        self.advance(at);
        self.now = at;
        let reply = crate::encode::message(&header, &[], value);
        self.core.handle_datagram(self.start + at, from, &reply);
        self.collect(at);
    }

    /// The server at `from` acknowledges fragments below `first_missing` at `at`.
    fn partial(&mut self, at: Duration, from: SocketAddr, tracking_id: u64, first_missing: u32) {
        let header = HeaderFields {
            flags: flags::REPLY | flags::PARTIAL,
            frag_index: first_missing,
            ..self.reply_header(tracking_id, Status::Ok)
        };
        self.deliver(at, from, header, &[]);
    }

    /// The server at `from` sends fragments `range` of a 100-fragment value at `at`.
    fn fragments(&mut self, at: Duration, from: SocketAddr, tracking_id: u64, range: Range<u32>) {
        for index in range {
            let header = HeaderFields {
                flags: flags::REPLY | flags::FRAGMENT,
                frag_index: index,
                frag_count: 100,
                total_len: (100 * FRAGMENT_BYTES) as u32,
                version: 5,
                ..self.reply_header(tracking_id, Status::Ok)
            };
            self.deliver(at, from, header, &[index as u8; FRAGMENT_BYTES]);
        }
    }

    fn wrong_owner(&mut self, at: Duration, from: SocketAddr, tracking_id: u64, owner: u16) {
        let mut hint = Vec::new();
        encode_addr(addr(owner), &mut hint);
        let header = HeaderFields {
            total_len: hint.len() as u32,
            ..self.reply_header(tracking_id, Status::WrongOwner)
        };
        self.deliver(at, from, header, &hint);
    }

    fn reply_header(&self, tracking_id: u64, status: Status) -> HeaderFields {
        let request = self.sent.iter().find(|(_, _, h)| h.tracking_id == tracking_id).unwrap();
        request.2.reply(status)
    }

    /// Fires timers until `id` completes (within 10 s); its result and when.
    fn finish(&mut self, id: RequestId) -> (Duration, Result<Reply, Error>) {
        loop {
            if let Some((done, result)) = self.core.poll_completion() {
                assert_eq!(done, id);
                return (self.now, result);
            }
            let due = self.core.poll_timeout().expect("a timer while in flight");
            assert!(due < self.start + Duration::from_secs(10), "never completed");
            self.fire(due);
        }
    }

    fn sends_of(&self, tracking_id: u64) -> Vec<(Duration, SocketAddr)> {
        self.sent
            .iter()
            .filter(|(_, _, h)| h.tracking_id == tracking_id)
            .map(|&(at, to, _)| (at, to))
            .collect()
    }
}

/// Every datagram of `tracking_id` left within the window of the last progress before it
/// (or of the first send): `progress` lists those instants.
fn assert_sent_within_windows(sends: &[(Duration, SocketAddr)], progress: &[Duration]) {
    for &(at, to) in sends {
        let opened = progress.iter().filter(|&&p| p <= at).max().copied().unwrap_or_default();
        assert!(at < opened + WINDOW, "sent to {to} at {at:?}, window opened at {opened:?}");
    }
}

#[test]
fn progress_acknowledgements_carry_a_write_past_its_window() {
    let mut h = Harness::new(1);
    let server = addr(7000);
    let (id, tracking) = h.put(200);
    let acks = [80, 160, 240, 320, 400, 480].map(ms);
    for (i, &at) in acks.iter().enumerate() {
        h.partial(at, server, tracking, 32 * (i as u32 + 1));
    }
    let done = HeaderFields { version: 9, ..h.reply_header(tracking, Status::Ok) };
    h.deliver(ms(560), server, done, &[]);
    let (at, result) = h.finish(id);
    assert_eq!((at, result.unwrap().version), (ms(560), 9), "five windows long, and OK");
    let sends = h.sends_of(tracking);
    assert!(sends.contains(&(ms(480), server)), "the last window left at the last ack");
    assert_sent_within_windows(&sends, &acks);
}

#[test]
fn a_write_fails_one_window_after_its_last_progress() {
    let mut h = Harness::new(1);
    let server = addr(7000);
    let (id, tracking) = h.put(200);
    h.partial(ms(80), server, tracking, 32);
    h.partial(ms(160), server, tracking, 64);
    // The server keeps answering probes without taking anything new: no progress.
    h.partial(ms(200), server, tracking, 64);
    h.partial(ms(250), server, tracking, 64);
    let (at, result) = h.finish(id);
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    let deadline = ms(160) + WINDOW;
    let rto_max = h.core.config.rto_max;
    assert!(at >= deadline && at <= deadline + rto_max, "failed at {at:?}");
    let sends = h.sends_of(tracking);
    assert!(sends.iter().all(|&(t, _)| t < deadline), "sent after {deadline:?}: {sends:?}");
    assert!(sends.contains(&(ms(250), server)), "a repeat answering a probe resends");
    assert!(h.core.poll_transmit().is_none() && h.core.poll_timeout().is_none());
}

#[test]
fn a_read_stays_alive_while_its_fragments_arrive_and_no_longer() {
    let server = addr(7000);
    let get = || Request::Get { key: b"big".to_vec() };
    let mut h = Harness::new(1);
    let (id, tracking) = h.submit(get());
    let arrivals = [80, 160, 240, 320].map(ms);
    for (i, &at) in arrivals.iter().enumerate() {
        let first = 32 * i as u32;
        h.fragments(at, server, tracking, first..(first + 32).min(100));
    }
    let (at, result) = h.finish(id);
    let value = result.unwrap().value;
    assert_eq!((at, value.len()), (ms(320), 100 * FRAGMENT_BYTES));
    assert_sent_within_windows(&h.sends_of(tracking), &arrivals);

    let mut h = Harness::new(1);
    let (id, tracking) = h.submit(get());
    h.fragments(ms(80), server, tracking, 0..32);
    h.fragments(ms(160), server, tracking, 32..64);
    // A duplicate is no progress.
    h.fragments(ms(200), server, tracking, 40..41);
    let (at, result) = h.finish(id);
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert!(at >= ms(260) && at <= ms(260) + h.core.config.rto_max, "failed at {at:?}");
    let sends = h.sends_of(tracking);
    assert!(sends.iter().any(|&(t, _)| t > WINDOW), "{sends:?}");
    assert_sent_within_windows(&sends, &[ms(80), ms(160)]);
}

#[test]
fn a_write_goes_back_to_a_server_it_left_only_within_its_first_window() {
    let (a, b, c) = (addr(7000), addr(7001), addr(7002));
    // Redirected from A to B at once, B acknowledges progress past the first window, then
    // points back to A: A may hold a record as old as the first send, so the write ends.
    let mut h = Harness::new(3);
    let (id, tracking) = h.put(200);
    h.wrong_owner(ms(1), a, tracking, 7001);
    h.partial(ms(80), b, tracking, 32);
    h.partial(ms(160), b, tracking, 64);
    h.wrong_owner(ms(170), b, tracking, 7000);
    let (at, result) = h.finish(id);
    match result {
        Err(Error::Timeout { server, .. }) => assert_eq!((at, server), (ms(170), b)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let sends = h.sends_of(tracking);
    assert!(sends.iter().all(|&(t, to)| to != a || t < WINDOW), "{sends:?}");
    assert!(sends.iter().all(|&(t, _)| t <= ms(170)), "{sends:?}");

    // Pointed on to C instead, which never saw the write: the window B's progress opened
    // still covers it.
    let mut h = Harness::new(3);
    let (id, tracking) = h.put(200);
    h.wrong_owner(ms(1), a, tracking, 7001);
    h.partial(ms(80), b, tracking, 32);
    h.partial(ms(160), b, tracking, 64);
    h.wrong_owner(ms(170), b, tracking, 7002);
    assert!(h.sends_of(tracking).contains(&(ms(170), c)), "{:?}", h.sends_of(tracking));
    let done = HeaderFields { version: 3, ..h.reply_header(tracking, Status::Ok) };
    h.deliver(ms(230), c, done, &[]);
    let (at, result) = h.finish(id);
    assert_eq!((at, result.unwrap().server), (ms(230), c));
}
