//! The conformance vectors of wire protocol v1 (`docs/conformance-v1.txt`), checked against the
//! real core: every exchange's replies must be the file's bytes, and each exchange's first reply
//! must have the status its line names. `CONFORMANCE_WRITE=1` writes the file anew from the
//! exchanges below (review the diff: it is the protocol's contract).
//!
//! The node: core 0 of 2 cores (127.0.0.1:7000 and :7001), 16 partitions, token secret
//! `[0x11; 32]`, one sender at 127.0.0.1:40000 with client id `0x0102030405060708`, at most 2
//! keys per endpoint, one reassembly at a time, memory durability, an in-memory disk that
//! fails from the last exchange on.

use control::{Core, CoreConfig, CoreStorage, Durability, NodeLayout, NodeStats};
use dataplane::{Handler, Transmit};
use proto::{
    encode_message, flags, fragment_count, fragment_span, key_hash, partition_of, HeaderFields,
    IncrArgs, Messages, Opcode, Status,
};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use storage::{BlobStore, Faults, FaultyVolume, MemoryVolume, Shelf, StoreConfig};

const CLIENT_ID: u64 = 0x0102_0304_0506_0708;
const PARTITIONS: u32 = 16;

fn sender() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/conformance-v1.txt")
}

#[derive(Default)]
struct Sent(Vec<Vec<u8>>);

impl Transmit for Sent {
    fn send(&mut self, _peer: SocketAddr, datagram: &[u8]) -> bool {
        self.0.push(datagram.to_vec());
        true
    }
}

/// The node under test and the sender's state.
struct Node {
    core: Core,
    faults: Arc<Faults>,
    now_ns: u64,
    token: u64,
    tracking: u64,
}

impl Node {
    fn new() -> Node {
        let addrs = (0..2).map(|i| SocketAddr::from(([127, 0, 0, 1], 7000 + i))).collect();
        let layout = Arc::new(NodeLayout::new(PARTITIONS, addrs).unwrap());
        let map: Arc<[u8]> = layout.map().encode().into();
        let faults = Faults::new();
        let store_config = StoreConfig { keys_max: 2, ..StoreConfig::default() };
        let volume =
            |name: &str| Box::new(FaultyVolume::new(MemoryVolume::new(name), faults.clone()));
        let (blobs, _) = BlobStore::open(volume("blobs"), &store_config).unwrap();
        let endpoints = layout.endpoints_on(0) as u32;
        let (shelf, stores, _) =
            Shelf::open(volume("log"), blobs, &store_config, endpoints, u64::MAX).unwrap();
        let storage = CoreStorage {
            shelf,
            stores,
            durability: Durability::Memory,
            compaction_step_bytes: 256 << 10,
            sync_clock: None,
            recovered: Vec::new(),
        };
        let config = CoreConfig { reassemblies_max: 1, ..CoreConfig::new(0, layout, [0x11; 32]) };
        let core = Core::with_storage(config, Arc::new(NodeStats::new(2)), map, storage).unwrap();
        Node { core, faults, now_ns: 1_000_000, token: 0, tracking: 0 }
    }

    /// A request header from the sender with a new tracking id and its token.
    fn request(&mut self, opcode: Opcode) -> HeaderFields {
        self.tracking += 1;
        HeaderFields {
            opcode: opcode as u8,
            client_id: CLIENT_ID,
            tracking_id: self.tracking,
            token: self.token,
            ..HeaderFields::default()
        }
    }

    /// One datagram in, every datagram out (its replies, then what the batch's end sends).
    fn exchange(&mut self, datagram: &[u8]) -> Vec<Vec<u8>> {
        let mut sent = Sent::default();
        self.now_ns += 1_000_000;
        self.core.handle_datagram(self.now_ns, sender(), datagram, &mut sent);
        self.core.end_batch(self.now_ns, &mut sent);
        sent.0
    }
}

fn datagram(messages: &[(HeaderFields, &[u8], &[u8])]) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    let mut len = 0;
    for (h, key, value) in messages {
        len += encode_message(&mut out[len..], h, key, value).unwrap();
    }
    out.truncate(len);
    out
}

/// `IdReused` as the protocol writes it: `ID_REUSED (10)`.
fn wire_name(status: Status) -> String {
    let mut name = String::new();
    for (i, c) in format!("{status:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    format!("{name} ({})", status as u16)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A key whose partition is served by core `core` of 2, from `stem`.
fn key_on(core: u32, stem: &str) -> Vec<u8> {
    (0..)
        .map(|i| format!("{stem}{i}").into_bytes())
        .find(|k| partition_of(key_hash(k), PARTITIONS) % 2 == core)
        .unwrap()
}

/// Records exchanges as the vector file's text.
struct Recorder {
    node: Node,
    text: String,
    statuses: Vec<Status>,
    opcodes: Vec<Opcode>,
}

impl Recorder {
    /// Sends `request`, records it with what it shows and the status expected of its first
    /// reply (`None`: no reply at all), and returns the replies.
    fn show(&mut self, what: &str, expect: Option<Status>, request: &[u8]) -> Vec<Vec<u8>> {
        let replies = self.node.exchange(request);
        let first = replies.first().and_then(|d| Messages::new(d).next()).map(|m| m.unwrap());
        let status = first.map(|m| m.status());
        assert_eq!(status, expect, "{what}: first reply's status");
        let expect = expect.map_or("no reply".to_string(), wire_name);
        let _ = writeln!(self.text, "\n# {what} => {expect}");
        let _ = writeln!(self.text, "> {}", hex(request));
        for reply in &replies {
            let _ = writeln!(self.text, "< {}", hex(reply));
        }
        for d in &replies {
            self.statuses.extend(Messages::new(d).map(|m| m.unwrap().status()));
        }
        if let Some(m) = Messages::new(request).next().and_then(Result::ok) {
            self.opcodes.push(m.opcode());
        }
        replies
    }
}

/// Every exchange, in order, against one node.
fn record() -> Recorder {
    let mut r =
        Recorder { node: Node::new(), text: String::new(), statuses: vec![], opcodes: vec![] };
    let n = &mut r.node;

    // Address validation first: an unvalidated PING teaches the token.
    let ping = n.request(Opcode::Ping);
    let replies = r.show(
        "PING without a token: OK, the reply carries the sender's token",
        Some(Status::Ok),
        &datagram(&[(ping, b"", b"")]),
    );
    r.node.token = Messages::new(&replies[0]).next().unwrap().unwrap().header.token;

    let n = &mut r.node;
    let ping = n.request(Opcode::Ping);
    r.show(
        "PING with the token (validated from here on)",
        Some(Status::Ok),
        &datagram(&[(ping, b"", b"")]),
    );

    let k = key_on(0, "greeting");
    let mut put = r.node.request(Opcode::Put);
    put.total_len = 5;
    r.show(
        "PUT of a small value: OK with the new version (the endpoint's LSN)",
        Some(Status::Ok),
        &datagram(&[(put, &k, b"hello")]),
    );
    r.show("the same PUT again (same tracking id): answered from its completion record, not applied again", Some(Status::Ok), &datagram(&[(put, &k, b"hello")]));
    let mut reuse = put;
    reuse.total_len = 7;
    r.show(
        "another PUT under a used tracking id: ID_REUSED, not applied",
        Some(Status::IdReused),
        &datagram(&[(reuse, &k, b"goodbye")]),
    );

    let get = r.node.request(Opcode::Get);
    r.show(
        "GET: OK, the value, its version, the key echoed",
        Some(Status::Ok),
        &datagram(&[(get, &k, b"")]),
    );
    let missing = key_on(0, "nobody");
    let get = r.node.request(Opcode::Get);
    r.show(
        "GET of an absent key: NOT_FOUND (no key echoed)",
        Some(Status::NotFound),
        &datagram(&[(get, &missing, b"")]),
    );
    let (g1, g2) = (r.node.request(Opcode::Get), r.node.request(Opcode::Get));
    r.show(
        "multi-get: two GETs in one datagram, two replies in one datagram, in order",
        Some(Status::Ok),
        &datagram(&[(g1, &k, b""), (g2, &missing, b"")]),
    );

    let mut cas = r.node.request(Opcode::Cas);
    (cas.version, cas.total_len) = (99, 3);
    r.show(
        "CAS with a wrong expected version: VERSION_MISMATCH with the current version",
        Some(Status::VersionMismatch),
        &datagram(&[(cas, &k, b"bye")]),
    );
    let mut cas = r.node.request(Opcode::Cas);
    (cas.version, cas.total_len) = (1, 3);
    r.show(
        "CAS with the current version: OK with the new version",
        Some(Status::Ok),
        &datagram(&[(cas, &k, b"bye")]),
    );
    let del = r.node.request(Opcode::Delete);
    r.show("DELETE: OK, version 0", Some(Status::Ok), &datagram(&[(del, &k, b"")]));
    let del = r.node.request(Opcode::Delete);
    r.show(
        "DELETE of an absent key: NOT_FOUND",
        Some(Status::NotFound),
        &datagram(&[(del, &k, b"")]),
    );

    let other = key_on(1, "elsewhere");
    let get = r.node.request(Opcode::Get);
    r.show("GET of a key core 1 serves: WRONG_OWNER, the owner's address in the value (family 4, IP in network order, port LE)", Some(Status::WrongOwner), &datagram(&[(get, &other, b"")]));
    let mut ahead = r.node.request(Opcode::Get);
    ahead.map_epoch = 9;
    r.show(
        "GET naming map epoch 9, newer than the node's 1: BUSY (the node is behind; retry)",
        Some(Status::Busy),
        &datagram(&[(ahead, &missing, b"")]),
    );
    let get = r.node.request(Opcode::Get);
    r.show(
        "GET with an empty key: MALFORMED",
        Some(Status::Malformed),
        &datagram(&[(get, b"", b"")]),
    );
    let mut bad = r.node.request(Opcode::Put);
    (bad.flags, bad.total_len) = (flags::REF_ONLY, 1);
    r.show(
        "a PUT with REF_ONLY set: MALFORMED (flags that do not fit the opcode)",
        Some(Status::Malformed),
        &datagram(&[(bad, b"x", b"v")]),
    );
    let mut garbage = datagram(&[(r.node.request(Opcode::Get), b"x", b"")]);
    garbage[2] = 2;
    r.show(
        "a message of protocol version 2: dropped unanswered (counted in dropped_malformed)",
        None,
        &garbage,
    );

    // A value of 3,000 bytes: three fragments of 1,024, 1,024 and 952 bytes.
    let value: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let big = key_on(0, "big");
    let base = r.node.request(Opcode::Put);
    let fragment = |index: u32, ack: bool| {
        let total = value.len() as u32;
        let mut f = base;
        f.flags = flags::FRAGMENT | if ack { flags::ACK_REQUEST } else { 0 };
        (f.frag_index, f.frag_count, f.total_len) = (index, fragment_count(total), total);
        (f, fragment_span(total, index))
    };
    let (f, span) = fragment(0, false);
    r.show("fragment 0 of 3 of a PUT: no reply", None, &datagram(&[(f, &big, &value[span])]));
    let (f, span) = fragment(2, true);
    r.show(
        "fragment 2 with ACK_REQUEST: PARTIAL, frag_index = 1, the first missing",
        Some(Status::Ok),
        &datagram(&[(f, &big, &value[span])]),
    );
    let other_write = r.node.request(Opcode::Put);
    let mut o = other_write;
    o.flags = flags::FRAGMENT;
    (o.frag_index, o.frag_count, o.total_len) = (0, 2, 2000);
    r.show(
        "a second fragmented write while the one reassembly allowed is busy: BUSY",
        Some(Status::Busy),
        &datagram(&[(o, &big, &[0u8; 1024])]),
    );
    let (f, span) = fragment(1, false);
    r.show(
        "fragment 1 completes the write: OK with its version",
        Some(Status::Ok),
        &datagram(&[(f, &big, &value[span])]),
    );
    let get = r.node.request(Opcode::Get);
    let replies = r.show(
        "GET of the 3,000-byte value: its three fragments (version, total_len, key in each)",
        Some(Status::Ok),
        &datagram(&[(get, &big, b"")]),
    );
    let version = Messages::new(&replies[0]).next().unwrap().unwrap().header.version;
    let range = |version: u64, index: u32| HeaderFields {
        flags: flags::RANGE,
        frag_index: index,
        frag_count: 1,
        version,
        ..get
    };
    r.show(
        "RANGE pull of fragment 2 at that version: the fragment",
        Some(Status::Ok),
        &datagram(&[(range(version, 2), &big, b"")]),
    );
    r.show(
        "RANGE past the last fragment: MALFORMED",
        Some(Status::Malformed),
        &datagram(&[(range(version, 3), &big, b"")]),
    );
    let mut over = r.node.request(Opcode::Put);
    over.total_len = 4;
    r.show("an overwrite of the key", Some(Status::Ok), &datagram(&[(over, &big, b"new!")]));
    r.show(
        "RANGE pull of the old version: VERSION_MISMATCH with the live version, no bytes",
        Some(Status::VersionMismatch),
        &datagram(&[(range(version, 2), &big, b"")]),
    );

    let mut huge = r.node.request(Opcode::Put);
    huge.flags = flags::FRAGMENT;
    let total = (16 << 20) + 1;
    (huge.frag_index, huge.frag_count, huge.total_len) = (5, fragment_count(total), total);
    r.show(
        "a fragment of a write over 16 MiB: TOO_LARGE (every fragment gets it)",
        Some(Status::TooLarge),
        &datagram(&[(huge, &big, &[0u8; 1024])]),
    );

    // keys_max = 2 per endpoint: a third key in one partition finds no room.
    let tag = String::from_utf8(key_on(0, "full")).unwrap();
    for i in 0..3 {
        let mut put = r.node.request(Opcode::Put);
        put.total_len = 1;
        let key = format!("{{{tag}}}{i}");
        let expect = if i < 2 { Status::Ok } else { Status::NoSpace };
        let what = if i < 2 {
            format!("PUT of a key tagged {{{tag}}}")
        } else {
            "a third key in an endpoint full of keys: NO_SPACE".to_string()
        };
        r.show(&what, Some(expect), &datagram(&[(put, key.as_bytes(), b"v")]));
    }

    let scan = r.node.request(Opcode::Scan);
    let tagged = format!("{{{tag}}}0");
    let scan =
        HeaderFields { partition: partition_of(key_hash(tagged.as_bytes()), PARTITIONS), ..scan };
    r.show("SCAN of a partition from the start: the keys as (u16 length, bytes), version 0 = last page", Some(Status::Ok), &datagram(&[(scan, b"", b"")]));
    let scan = HeaderFields { partition: 99, ..r.node.request(Opcode::Scan) };
    r.show(
        "SCAN of a partition that does not exist: MALFORMED",
        Some(Status::Malformed),
        &datagram(&[(scan, b"", b"")]),
    );

    let chunk = r.node.request(Opcode::Chunk);
    r.show(
        "CHUNK of an unknown hash: NOT_FOUND",
        Some(Status::NotFound),
        &datagram(&[(chunk, &[0xab; 32], b"")]),
    );
    let chunk = r.node.request(Opcode::Chunk);
    r.show(
        "CHUNK with a key that is not 32 bytes: MALFORMED",
        Some(Status::Malformed),
        &datagram(&[(chunk, b"short", b"")]),
    );

    let map = r.node.request(Opcode::Map);
    r.show(
        "MAP: epoch, cluster, count, then per partition hash_start, hash_end, partition, primary address, replicas",
        Some(Status::Ok),
        &datagram(&[(map, b"", b"")]),
    );
    let stats = r.node.request(Opcode::Stats);
    r.show("STATS: the node's counters as JSON", Some(Status::Ok), &datagram(&[(stats, b"", b"")]));

    // Unvalidated: a 1,000-byte value to a 73-byte GET would be 14x its bytes.
    let k = key_on(0, "sized");
    let mut put = r.node.request(Opcode::Put);
    put.total_len = 1000;
    r.show("PUT of a 1,000-byte value", Some(Status::Ok), &datagram(&[(put, &k, &[0x5a; 1000])]));
    let mut get = r.node.request(Opcode::Get);
    get.token = 0;
    r.show(
        "GET of it without a token: RETRY_WITH_TOKEN (bare header, the token, no key)",
        Some(Status::RetryWithToken),
        &datagram(&[(get, &k, b"")]),
    );

    counters_and_expiry(&mut r);

    // Last: the disk fails, the endpoint's log stops.
    r.node.faults.fail_after(0);
    let k = key_on(0, "doomed");
    let mut put = r.node.request(Opcode::Put);
    put.total_len = 1;
    r.show(
        "a PUT when the disk fails (EIO): UNAVAILABLE, never OK",
        Some(Status::Unavailable),
        &datagram(&[(put, &k, b"x")]),
    );
    r
}

/// INCR, expiries and CAS's RETURN_VALUE (issue #16).
fn counters_and_expiry(r: &mut Recorder) {
    let counter = key_on(0, "ttl"); // (partition 6: room for a key)
    let incr = |r: &mut Recorder, delta: i64, floor: Option<i64>| {
        let args = IncrArgs { delta, floor }.encode();
        let mut h = r.node.request(Opcode::Incr);
        h.total_len = args.len() as u32;
        (h, args)
    };
    let (h, args) = incr(r, 5, Some(0));
    r.show(
        "INCR of an absent key by 5, floor 0 (value: delta i64, floor i64; i64::MIN = none): OK, the count in the value (i64 LE), the version",
        Some(Status::Ok),
        &datagram(&[(h, &counter, &args)]),
    );
    let (h, args) = incr(r, -7, Some(0));
    r.show(
        "INCR by -7, floor 0: BELOW_FLOOR, nothing written, the current count in the value",
        Some(Status::BelowFloor),
        &datagram(&[(h, &counter, &args)]),
    );
    let get = r.node.request(Opcode::Get);
    r.show(
        "GET of the counter: its count as decimal ASCII (\"5\")",
        Some(Status::Ok),
        &datagram(&[(get, &counter, b"")]),
    );
    let word = key_on(0, "word");
    let mut put = r.node.request(Opcode::Put);
    put.set_ttl_secs(Some(60));
    put.total_len = 5;
    r.show(
        "PUT with EXPIRES, TTL 60 s in the partition field: OK",
        Some(Status::Ok),
        &datagram(&[(put, &word, b"hello")]),
    );
    let (h, args) = incr(r, 1, None);
    r.show(
        "INCR of a value that is not a count: NOT_A_COUNTER",
        Some(Status::NotACounter),
        &datagram(&[(h, &word, &args)]),
    );
    let mut cas = r.node.request(Opcode::Cas);
    (cas.version, cas.total_len, cas.flags) = (99, 3, flags::RETURN_VALUE);
    r.show(
        "CAS with RETURN_VALUE and a wrong version: VERSION_MISMATCH, RETURN_VALUE set, the current version and value",
        Some(Status::VersionMismatch),
        &datagram(&[(cas, &word, b"bye")]),
    );
    let mut touch = r.node.request(Opcode::Touch);
    touch.set_ttl_secs(Some(1));
    r.show(
        "TOUCH with EXPIRES, TTL 1 s: OK with the new version",
        Some(Status::Ok),
        &datagram(&[(touch, &word, b"")]),
    );
    r.node.now_ns += 1_000_000_000;
    let get = r.node.request(Opcode::Get);
    r.show(
        "GET a second later: NOT_FOUND (expired)",
        Some(Status::NotFound),
        &datagram(&[(get, &word, b"")]),
    );
    let touch = r.node.request(Opcode::Touch);
    r.show(
        "TOUCH of an absent key: NOT_FOUND",
        Some(Status::NotFound),
        &datagram(&[(touch, &word, b"")]),
    );
}

/// Statuses no exchange with a single unreplicated node can show, and the test that shows
/// each.
const SHOWN_ELSEWHERE: &[Status] = &[
    // control/src/core/tests/replication.rs: an expiry on a replicated partition.
    Status::Unsupported,
    // control/src/core/tests/auth.rs: a node with client keys (`--auth-keys`); these vectors'
    // node has none, so their datagrams are byte for byte what they were before auth.
    Status::Unauthenticated,
    Status::Forbidden,
];

#[test]
fn the_conformance_vectors_hold() {
    let r = record();
    let shown = (0..=u16::MAX).filter_map(Status::from_wire);
    for status in shown.filter(|s| !SHOWN_ELSEWHERE.contains(s)) {
        assert!(r.statuses.contains(&status), "no vector shows {status:?}");
    }
    for opcode in (0..=u8::MAX).filter_map(Opcode::from_wire) {
        assert!(r.opcodes.contains(&opcode), "no vector sends {opcode:?}");
    }
    let text = format!(
        "# cradle wire protocol v1 conformance vectors (docs/PROTOCOL.md). Generated by\n\
         # control/tests/conformance.rs, which checks them against the real core.\n\
         # One node: core 0 of 2 (127.0.0.1:7000, :7001), 16 partitions, token secret 32 x 0x11,\n\
         # at most 2 keys per endpoint, 1 reassembly at a time; one sender, 127.0.0.1:40000,\n\
         # client id 0x0102030405060708. Exchanges run in order against that one node.\n\
         # '# what => STATUS' says what an exchange shows and its first reply's status;\n\
         # '> hex' is the datagram sent, each '< hex' a datagram the node sends back.\n{}",
        r.text
    );
    let path = vectors_path();
    if std::env::var_os("CONFORMANCE_WRITE").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let file = std::fs::read_to_string(&path)
        .expect("docs/conformance-v1.txt (CONFORMANCE_WRITE=1 makes it)");
    for (line, (want, got)) in file.lines().zip(text.lines()).enumerate() {
        assert_eq!(
            want,
            got,
            "{}:{}: the core no longer answers as the vectors say",
            path.display(),
            line + 1
        );
    }
    assert_eq!(file.lines().count(), text.lines().count(), "vectors added or removed");
}
