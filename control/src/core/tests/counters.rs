//! INCR, expiries (EXPIRES, TOUCH) and CAS's RETURN_VALUE, driven through the real core.

use super::*;
use proto::{decode_count, IncrArgs};

/// The core's wall clock at loop time 0 (`CoreConfig::new` starts it at 0).
const S: u64 = 1_000_000_000;

impl Harness {
    fn incr(&mut self, key: &[u8], delta: i64, floor: Option<i64>) -> HeaderFields {
        let args = IncrArgs { delta, floor }.encode();
        let mut h = self.request(Opcode::Incr, key, &args);
        h.total_len = args.len() as u32;
        h
    }

    /// Sends one message at loop time `now_ns`; its reply and value.
    fn at(
        &mut self,
        now_ns: u64,
        h: HeaderFields,
        key: &[u8],
        value: &[u8],
    ) -> (HeaderFields, Vec<u8>) {
        let mut datagram = vec![0u8; 4096];
        let len = encode_message(&mut datagram, &h, key, value).unwrap();
        let mut wire = Wire::default();
        self.core.handle_datagram(now_ns, CLIENT, &datagram[..len], &mut wire);
        let mut replies = wire.messages();
        assert_eq!(replies.len(), 1, "one reply: {replies:?}");
        replies.remove(0)
    }
}

fn args(delta: i64, floor: Option<i64>) -> [u8; 16] {
    IncrArgs { delta, floor }.encode()
}

fn status(r: &HeaderFields) -> Status {
    Status::from_wire(r.status).unwrap()
}

#[test]
fn incr_counts_from_zero_keeps_its_floor_and_stores_decimal_text() {
    let mut h = Harness::new(1, 0);
    let up = h.incr(b"budget", 10, None);
    let (r, value) = h.one(up, b"budget", &args(10, None));
    assert_eq!((status(&r), decode_count(&value)), (Status::Ok, Some(10)));
    let version = r.version;
    assert!(version > 0);
    let down = h.incr(b"budget", -7, Some(0));
    let (r, value) = h.one(down, b"budget", &args(-7, Some(0)));
    assert_eq!((status(&r), decode_count(&value)), (Status::Ok, Some(3)));
    assert!(r.version > version, "every INCR is a new version");
    // Below the floor: refused, the current count in the reply, nothing written.
    let refused = h.incr(b"budget", -4, Some(0));
    let (r, value) = h.one(refused, b"budget", &args(-4, Some(0)));
    assert_eq!((status(&r), decode_count(&value)), (Status::BelowFloor, Some(3)));
    let exact = h.incr(b"budget", -3, Some(0));
    let (r, value) = h.one(exact, b"budget", &args(-3, Some(0)));
    assert_eq!((status(&r), decode_count(&value)), (Status::Ok, Some(0)), "the floor itself");
    let get = h.request(Opcode::Get, b"budget", b"");
    assert_eq!(h.one(get, b"budget", b"").1, b"0", "decimal ASCII, as memcached keeps it");
    // Without a floor a count goes negative.
    let neg = h.incr(b"budget", -5, None);
    let (r, value) = h.one(neg, b"budget", &args(-5, None));
    assert_eq!((status(&r), decode_count(&value)), (Status::Ok, Some(-5)));
    let get = h.request(Opcode::Get, b"budget", b"");
    assert_eq!(h.one(get, b"budget", b"").1, b"-5");
}

#[test]
fn incr_refuses_values_that_are_not_counts_and_malformed_arguments() {
    let mut h = Harness::new(1, 0);
    let put = h.request(Opcode::Put, b"name", b"alice");
    assert_eq!(h.one(put, b"name", b"alice").0.status, 0);
    let incr = h.incr(b"name", 1, None);
    let (r, value) = h.one(incr, b"name", &args(1, None));
    assert_eq!((status(&r), value.len()), (Status::NotACounter, 0));
    let put = h.request(Opcode::Put, b"max", i64::MAX.to_string().as_bytes());
    h.one(put, b"max", i64::MAX.to_string().as_bytes());
    let incr = h.incr(b"max", 1, None);
    assert_eq!(status(&h.one(incr, b"max", &args(1, None)).0), Status::NotACounter, "overflow");
    let mut short = h.request(Opcode::Incr, b"n", &[1; 8]);
    short.total_len = 8;
    assert_eq!(status(&h.one(short, b"n", &[1; 8]).0), Status::Malformed);
    let get = h.request(Opcode::Get, b"n", b"");
    assert_eq!(status(&h.one(get, b"n", b"").0), Status::NotFound, "nothing applied");
}

#[test]
fn a_resent_incr_gets_its_first_count_and_is_applied_once() {
    let mut h = Harness::new(1, 0);
    let first = h.incr(b"c", 5, None);
    assert_eq!(decode_count(&h.one(first, b"c", &args(5, None)).1), Some(5));
    let other = h.incr(b"c", 100, None);
    assert_eq!(decode_count(&h.one(other, b"c", &args(100, None)).1), Some(105));
    // The first one's reply was lost: its resend is told 5, not 110, and adds nothing.
    let (r, value) = h.one(first, b"c", &args(5, None));
    assert_eq!((status(&r), decode_count(&value)), (Status::Ok, Some(5)));
    let refused = h.incr(b"c", -1000, Some(0));
    assert_eq!(status(&h.one(refused, b"c", &args(-1000, Some(0))).0), Status::BelowFloor);
    let (r, value) = h.one(refused, b"c", &args(-1000, Some(0)));
    assert_eq!((status(&r), decode_count(&value)), (Status::BelowFloor, Some(105)));
    assert_eq!(h.core.counters().duplicates_answered, 2);
    let get = h.request(Opcode::Get, b"c", b"");
    assert_eq!(h.one(get, b"c", b"").1, b"105");
    // The same id with another amount is another request.
    let mut reused = h.incr(b"c", 6, None);
    reused.tracking_id = first.tracking_id;
    assert_eq!(status(&h.one(reused, b"c", &args(6, None)).0), Status::IdReused);
}

#[test]
fn a_ttl_expires_the_key_at_once_and_touch_moves_it() {
    let mut h = Harness::new(1, 0);
    let mut put = h.request(Opcode::Put, b"imp", b"seen");
    put.set_ttl_secs(Some(2));
    assert_eq!(h.at(0, put, b"imp", b"seen").0.status, 0);
    let get = h.request(Opcode::Get, b"imp", b"");
    assert_eq!(h.at(2 * S - 1, get, b"imp", b"").1, b"seen", "live until its TTL");
    let get = h.request(Opcode::Get, b"imp", b"");
    assert_eq!(status(&h.at(2 * S, get, b"imp", b"").0), Status::NotFound, "gone at once");
    // An INCR of an expired key counts from 0; its TTL is given by the request.
    let mut incr = h.incr(b"imp", 1, None);
    incr.set_ttl_secs(Some(10));
    let (_, value) = h.at(3 * S, incr, b"imp", &args(1, None));
    assert_eq!(decode_count(&value), Some(1));
    // An INCR without EXPIRES keeps the key's expiry.
    let keep = h.incr(b"imp", 1, None);
    assert_eq!(decode_count(&h.at(4 * S, keep, b"imp", &args(1, None)).1), Some(2));
    let get = h.request(Opcode::Get, b"imp", b"");
    assert_eq!(status(&h.at(13 * S, get, b"imp", b"").0), Status::NotFound);
    // TOUCH: a new expiry for a live key, none without EXPIRES; NOT_FOUND when absent.
    let put = h.request(Opcode::Put, b"t", b"v");
    h.at(20 * S, put, b"t", b"v");
    let mut touch = h.request(Opcode::Touch, b"t", b"");
    touch.set_ttl_secs(Some(1));
    assert_eq!(status(&h.at(20 * S, touch, b"t", b"").0), Status::Ok);
    let get = h.request(Opcode::Get, b"t", b"");
    assert_eq!(status(&h.at(21 * S, get, b"t", b"").0), Status::NotFound);
    let touch = h.request(Opcode::Touch, b"t", b"");
    assert_eq!(status(&h.at(22 * S, touch, b"t", b"").0), Status::NotFound);
    let mut put = h.request(Opcode::Put, b"u", b"v");
    put.set_ttl_secs(Some(1));
    h.at(30 * S, put, b"u", b"v");
    let persist = h.request(Opcode::Touch, b"u", b"");
    assert_eq!(status(&h.at(30 * S, persist, b"u", b"").0), Status::Ok);
    let get = h.request(Opcode::Get, b"u", b"");
    assert_eq!(h.at(99 * S, get, b"u", b"").1, b"v", "a TOUCH without EXPIRES: no expiry");
    // A PUT without EXPIRES replaces an expiry with none; a CAS may give one.
    let mut cas = h.request(Opcode::Cas, b"u", b"w");
    cas.version = version_of(&mut h, b"u");
    cas.set_ttl_secs(Some(1));
    assert_eq!(status(&h.at(100 * S, cas, b"u", b"w").0), Status::Ok);
    let get = h.request(Opcode::Get, b"u", b"");
    assert_eq!(status(&h.at(101 * S, get, b"u", b"").0), Status::NotFound);
}

fn version_of(h: &mut Harness, key: &[u8]) -> u64 {
    let get = h.request(Opcode::Get, key, b"");
    h.one(get, key, b"").0.version
}

#[test]
fn a_ttl_is_part_of_the_request_a_resend_must_match() {
    let mut h = Harness::new(1, 0);
    let mut put = h.request(Opcode::Put, b"k", b"v");
    put.set_ttl_secs(Some(5));
    assert_eq!(h.one(put, b"k", b"v").0.status, 0);
    assert_eq!(h.one(put, b"k", b"v").0.status, 0, "the same resend");
    let mut other = put;
    other.set_ttl_secs(Some(6));
    assert_eq!(status(&h.one(other, b"k", b"v").0), Status::IdReused);
    other.set_ttl_secs(None);
    assert_eq!(status(&h.one(other, b"k", b"v").0), Status::IdReused);
}

#[test]
fn flags_that_do_not_fit_the_opcode_are_malformed() {
    let mut h = Harness::new(1, 0);
    let mut get = h.request(Opcode::Get, b"k", b"");
    get.set_ttl_secs(Some(5));
    assert_eq!(status(&h.one(get, b"k", b"").0), Status::Malformed);
    let mut put = h.request(Opcode::Put, b"k", b"v");
    put.flags |= flags::RETURN_VALUE;
    assert_eq!(status(&h.one(put, b"k", b"v").0), Status::Malformed);
}

#[test]
fn a_cas_mismatch_returns_the_current_value_when_asked() {
    let mut h = Harness::new(1, 0);
    let put = h.request(Opcode::Put, b"k", b"current");
    let version = h.one(put, b"k", b"current").0.version;
    let mut cas = h.request(Opcode::Cas, b"k", b"new");
    (cas.version, cas.flags) = (version + 100, flags::RETURN_VALUE);
    let (r, value) = h.one(cas, b"k", b"new");
    assert_eq!(status(&r), Status::VersionMismatch);
    assert!(r.has(flags::RETURN_VALUE));
    assert_eq!((r.version, value.as_slice()), (version, &b"current"[..]));
    // Without the flag: the version only, as before.
    let mut cas = h.request(Opcode::Cas, b"k", b"new");
    cas.version = version + 100;
    let (r, value) = h.one(cas, b"k", b"new");
    assert_eq!((status(&r), r.version, value.len()), (Status::VersionMismatch, version, 0));
    assert!(!r.has(flags::RETURN_VALUE));
    // An absent key: a mismatch at version 0 with no value.
    let mut cas = h.request(Opcode::Cas, b"absent", b"new");
    (cas.version, cas.flags) = (3, flags::RETURN_VALUE);
    let (r, value) = h.one(cas, b"absent", b"new");
    assert_eq!((status(&r), r.version, value.len()), (Status::VersionMismatch, 0, 0));
    assert!(!r.has(flags::RETURN_VALUE));
    // A value too big for one datagram is not returned (the client reads it).
    let big = vec![7u8; 1401];
    let put = h.request(Opcode::Put, b"big", &big);
    h.one(put, b"big", &big);
    let mut cas = h.request(Opcode::Cas, b"big", b"x");
    (cas.version, cas.flags) = (999, flags::RETURN_VALUE);
    let (r, value) = h.one(cas, b"big", b"x");
    assert_eq!((status(&r), value.len()), (Status::VersionMismatch, 0));
    assert!(!r.has(flags::RETURN_VALUE));
}

#[test]
fn values_that_expire_are_reclaimed_without_another_write() {
    let config = StoreConfig {
        segment_bytes: 16 << 10,
        blob_threshold_bytes: 4 << 10,
        ..StoreConfig::default()
    };
    let layout =
        Arc::new(NodeLayout::new(16, vec![SocketAddr::from(([127, 0, 0, 1], 7000))]).unwrap());
    let map: Arc<[u8]> = layout.map().encode().into();
    let storage = CoreStorage::in_memory(layout.endpoints_on(0), &config);
    let core_config = CoreConfig::new(0, layout, [5; 32]);
    let core = Core::with_storage(core_config, Arc::new(NodeStats::new(1)), map, storage).unwrap();
    let mut h = Harness { core, token: 0, tracking: 0 };
    h.token = h.core.tokens.token(CLIENT);
    // 64 KiB of impressions in one endpoint (one tag), each to live 1 s.
    let value = [b'i'; 200];
    for i in 0..320 {
        let key = format!("{{imp}}{i}");
        let mut put = h.request(Opcode::Put, key.as_bytes(), &value);
        put.set_ttl_secs(Some(1));
        assert_eq!(h.at(i * 1_000, put, key.as_bytes(), &value).0.status, 0);
    }
    let log_bytes = |h: &mut Harness, now_ns| {
        h.core.end_batch(now_ns, &mut Wire::default());
        h.core.counters().log_bytes
    };
    let written = log_bytes(&mut h, 300 * S / 1000);
    assert!(written > 64 << 10, "{written}");
    // After the TTL and the completion records' lifetime (the segments hold stamps a resend
    // may still need), compaction drops the sealed segments: nothing wrote to them since.
    let mut now = 10 * S;
    for _ in 0..200 {
        now += 300_000_000;
        log_bytes(&mut h, now);
    }
    let left = log_bytes(&mut h, now + 300_000_000);
    assert!(left < 20 << 10, "{written} bytes written, {left} left");
    assert_eq!(h.core.counters().live_bytes, 0, "{:?}", h.core.counters());
}

#[test]
fn blob_values_are_not_counted_nor_touched_for_a_sender_without_a_token() {
    let mut h = Harness::new(1, 0);
    let big = vec![b'7'; 20 << 10]; // digits, but in the blob tier
    let mut put = h.request(Opcode::Put, b"big", &big);
    put.flags = flags::FRAGMENT;
    let total = big.len() as u32;
    for index in 0..proto::fragment_count(total) {
        let mut f = put;
        (f.frag_index, f.frag_count, f.total_len) = (index, proto::fragment_count(total), total);
        let span = proto::fragment_span(total, index);
        h.send(&[(f, b"big", &big[span])]);
    }
    let incr = h.incr(b"big", 1, None);
    assert_eq!(status(&h.one(incr, b"big", &args(1, None)).0), Status::NotACounter);
    let mut touch = h.request(Opcode::Touch, b"big", b"");
    (touch.token, touch.flags, touch.partition) = (0, flags::EXPIRES, 5);
    assert_eq!(status(&h.one(touch, b"big", b"").0), Status::RetryWithToken);
    let mut touch = h.request(Opcode::Touch, b"big", b"");
    touch.set_ttl_secs(Some(5));
    assert_eq!(status(&h.one(touch, b"big", b"").0), Status::Ok, "with the token");
}
