//! Client authentication (`crate::auth`) through the real core: nothing in a datagram the
//! key table does not admit is done, roles are enforced per request, replays are harmless.

use super::*;
use crate::auth::{KeyTable, AUTH_FRESHNESS_NS};
use proto::auth::{parse_key_file, seal};

/// The core's wall clock when the loop's reads 0.
const WALL: u64 = 1_800_000_000_000_000_000;
/// The loop time `Harness::send` hands the core.
const NOW: u64 = 1_000;

fn secret_hex(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

fn keys() -> String {
    format!(
        "1 reader read {}\n2 writer write {}\n3 ops admin {}\n",
        secret_hex(1),
        secret_hex(2),
        secret_hex(3)
    )
}

impl Harness {
    /// One core of one with the key table `keys()`.
    fn with_auth() -> Harness {
        let addrs = vec![SocketAddr::from(([127, 0, 0, 1], 7000))];
        let layout = Arc::new(NodeLayout::new(16, addrs).unwrap());
        let map: Arc<[u8]> = layout.map().encode().into();
        let config = CoreConfig {
            wall_clock_start_ns: WALL,
            auth: Some(Arc::new(KeyTable::parse(&keys()).unwrap())),
            ..CoreConfig::new(0, layout, [5; 32])
        };
        let core = Core::new(config, Arc::new(NodeStats::new(1)), map).unwrap();
        let mut h = Harness { core, token: 0, tracking: 0 };
        h.token = h.core.tokens.token(CLIENT);
        h
    }

    /// `parts` sealed with key `id` of secret byte `secret` at wall time `at`.
    fn sealed(id: u32, secret: u8, at: u64, parts: &[(HeaderFields, &[u8], &[u8])]) -> Vec<u8> {
        let entry = &parse_key_file(&format!("{id} x read {}", secret_hex(secret))).unwrap()[0];
        let mut plain = vec![0u8; 4096];
        let mut len = 0;
        for (h, k, v) in parts {
            len += encode_message(&mut plain[len..], h, k, v).unwrap();
        }
        let mut out = Vec::new();
        seal(id, &entry.secret, at, &plain[..len], &mut out);
        out
    }

    fn raw(&mut self, datagram: &[u8]) -> Vec<Vec<u8>> {
        let mut wire = Wire::default();
        self.core.handle_datagram(NOW, CLIENT, datagram, &mut wire);
        wire.0
    }

    /// Sends `parts` sealed with key `id` (its right secret) now; the replies' statuses.
    fn as_key(&mut self, id: u32, parts: &[(HeaderFields, &[u8], &[u8])]) -> Vec<u16> {
        let datagram = Harness::sealed(id, id as u8, WALL + NOW, parts);
        let mut wire = Wire(self.raw(&datagram));
        wire.0.retain(|d| !d.is_empty());
        wire.messages().into_iter().map(|(h, _)| h.status).collect()
    }
}

const UNAUTHENTICATED: u16 = Status::Unauthenticated as u16;
const FORBIDDEN: u16 = Status::Forbidden as u16;

#[test]
fn without_a_valid_seal_only_one_bare_unauthenticated_header_comes_back_and_nothing_is_done() {
    let mut h = Harness::with_auth();
    let put = h.request(Opcode::Put, b"k", b"v");
    let get = h.request(Opcode::Get, b"k", b"");
    let parts = [(put, &b"k"[..], &b"v"[..]), (get, b"k", b"")];
    let mut plain = vec![0u8; 512];
    let len = encode_message(&mut plain, &put, b"k", b"v").unwrap();
    let len = len + encode_message(&mut plain[len..], &get, b"k", b"").unwrap();
    let tampered = {
        let mut d = Harness::sealed(2, 2, WALL + NOW, &parts);
        let key_at = proto::auth::AUTH_HEADER_BYTES + HEADER_BYTES;
        d[key_at] ^= 1; // the key's one byte, after the MAC was made
        d
    };
    let refused = [
        plain[..len].to_vec(),                     // no envelope
        Harness::sealed(2, 9, WALL + NOW, &parts), // the wrong secret
        Harness::sealed(7, 2, WALL + NOW, &parts), // an unknown key id
        Harness::sealed(2, 2, WALL + NOW - AUTH_FRESHNESS_NS - 1, &parts), // a stale capture
        tampered,
    ];
    for (i, datagram) in refused.iter().enumerate() {
        let replies = h.raw(datagram);
        assert_eq!(replies.len(), 1, "case {i}: one datagram");
        assert_eq!(replies[0].len(), HEADER_BYTES, "case {i}: one bare header");
        let (reply, _) = Message::parse(&replies[0]).unwrap();
        assert_eq!(reply.header.status, UNAUTHENTICATED, "case {i}");
        assert_eq!(reply.header.tracking_id, put.tracking_id, "case {i}: the first request's");
        assert!(replies[0].len() <= 3 * datagram.len());
    }
    let c = h.core.counters();
    assert_eq!((c.unauthenticated, c.puts, c.gets, c.keys, c.requests), (5, 0, 0, 0, 0));
    // The same datagram sealed right is served.
    assert_eq!(h.as_key(2, &parts), [0, 0]);
    assert_eq!(h.core.counters().keys, 1);
}

#[test]
fn each_role_may_do_what_it_names_and_no_more() {
    let mut h = Harness::with_auth();
    let put = |h: &mut Harness| (h.request(Opcode::Put, b"k", b"v"), &b"k"[..], &b"v"[..]);
    let get = |h: &mut Harness| (h.request(Opcode::Get, b"k", b""), &b"k"[..], &b""[..]);
    let scan = |h: &mut Harness| {
        let mut s = h.request(Opcode::Scan, b"", b"");
        s.partition = partition_of(key_hash(b"k"), 16);
        (s, &b""[..], &b""[..])
    };
    let ping = |h: &mut Harness| (h.request(Opcode::Ping, b"", b""), &b""[..], &b""[..]);
    let p = put(&mut h);
    assert_eq!(h.as_key(1, &[p]), [FORBIDDEN], "a read key may not PUT");
    assert_eq!(h.core.counters().keys, 0, "and nothing was written");
    let p = put(&mut h);
    assert_eq!(h.as_key(2, &[p]), [0], "a write key may");
    let g = get(&mut h);
    assert_eq!(h.as_key(1, &[g]), [0], "a read key may GET");
    let (g, pi) = (get(&mut h), ping(&mut h));
    assert_eq!(h.as_key(1, &[g, pi]), [0, 0]);
    let s = scan(&mut h);
    assert_eq!(h.as_key(2, &[s]), [FORBIDDEN], "a write key may not list a partition");
    let s = scan(&mut h);
    assert_eq!(h.as_key(3, &[s]), [0], "an admin key may");
    let d = (h.request(Opcode::Delete, b"k", b""), &b"k"[..], &b""[..]);
    assert_eq!(h.as_key(3, &[d]), [0]);
    assert_eq!(h.core.counters().forbidden, 2);
}

#[test]
fn a_replayed_sealed_write_is_answered_from_its_record_and_never_applied_again() {
    let mut h = Harness::with_auth();
    let incr = {
        let args = proto::IncrArgs { delta: 1, floor: None }.encode();
        let mut i = h.request(Opcode::Incr, b"n", &args);
        i.total_len = args.len() as u32;
        (i, args)
    };
    let datagram = Harness::sealed(2, 2, WALL + NOW, &[(incr.0, b"n", &incr.1)]);
    for _ in 0..3 {
        let replies = Wire(h.raw(&datagram)).messages();
        assert_eq!(replies.len(), 1);
        assert_eq!((replies[0].0.status, proto::decode_count(&replies[0].1)), (0, Some(1)));
    }
    assert_eq!(h.core.counters().duplicates_answered, 2);
    let get = h.request(Opcode::Get, b"n", b"");
    let replies = Wire(h.raw(&Harness::sealed(1, 1, WALL + NOW, &[(get, b"n", b"")]))).messages();
    assert_eq!(replies[0].1, b"1", "counted once");
}

#[test]
fn a_node_without_keys_serves_sealed_and_plain_datagrams_alike() {
    let mut h = Harness::new(1, 0);
    let put = h.request(Opcode::Put, b"k", b"v");
    let sealed = Harness::sealed(5, 5, 0, &[(put, b"k", b"v")]);
    let replies = Wire(h.raw(&sealed)).messages();
    assert_eq!((replies.len(), replies[0].0.status), (1, 0));
    let get = h.request(Opcode::Get, b"k", b"");
    assert_eq!(h.one(get, b"k", b"").1, b"v");
}

#[test]
fn auth_needs_a_completion_ttl_above_twice_the_freshness_window() {
    let addrs = vec![SocketAddr::from(([127, 0, 0, 1], 7000))];
    let layout = Arc::new(NodeLayout::new(16, addrs).unwrap());
    let config = CoreConfig {
        completion_ttl_ns: 2 * AUTH_FRESHNESS_NS,
        auth: Some(Arc::new(KeyTable::parse(&keys()).unwrap())),
        ..CoreConfig::new(0, layout, [5; 32])
    };
    assert!(config.validate().unwrap_err().0.contains("freshness"));
}
