//! Two cores on two hosts replicating their partitions (primary on A, backup on B), datagrams
//! carried by hand: a write is answered only once the backup holds it, the backup serves no
//! client, and forged, replayed and foreign node-to-node datagrams are dropped and counted
//! with nothing applied.

use super::*;
use crate::core::replica::ReplicationConfig;
use crate::peer::ClusterKey;
use proto::{MapEntry, Replica, Role};

const A: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 7000);
const B: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)), 7000);

/// What cores sent, with where to.
#[derive(Default)]
struct Net(Vec<(SocketAddr, Vec<u8>)>);

impl Transmit for Net {
    fn send(&mut self, peer: SocketAddr, datagram: &[u8]) -> bool {
        self.0.push((peer, datagram.to_vec()));
        true
    }
}

fn key(secret: u8) -> ClusterKey {
    ClusterKey::from_file_bytes(&[secret; 32]).unwrap()
}

fn core_at(addr: SocketAddr) -> Core {
    core_of_factor(addr, 1)
}

/// A core of a cluster whose replication factor is `factor`.
fn core_of_factor(addr: SocketAddr, factor: usize) -> Core {
    let layout = Arc::new(NodeLayout::new(4, vec![addr]).unwrap());
    let map: Arc<[u8]> = layout.map().encode().into();
    let config = CoreConfig {
        replication: Some(ReplicationConfig { factor, ..ReplicationConfig::new(key(9)) }),
        wall_clock_start_ns: 1_000_000_000_000,
        ..CoreConfig::new(0, layout, [3; 32])
    };
    Core::new(config, Arc::new(NodeStats::new(1)), map).unwrap()
}

/// Every partition primary on A with its backup on B.
fn replicated_map() -> PartitionMap {
    let entries = (0..4)
        .map(|p| {
            let (start, end) = proto::partition_range(p, 4);
            let mut e = MapEntry::single(start, end, p, A);
            e.replicas = vec![Replica { addr: B, role: Role::Backup }];
            e
        })
        .collect();
    PartitionMap { epoch: 2, cluster: 1, entries }
}

struct Pair {
    a: Core,
    b: Core,
    now: u64,
    /// B is cut off: nothing between A and B arrives.
    cut: bool,
    /// Everything A and B sent each other, in order (for replays).
    between: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Pair {
    fn new() -> Pair {
        let (mut a, mut b) = (core_at(A), core_at(B));
        for core in [&mut a, &mut b] {
            let change = MapChange { map: replicated_map(), added: Vec::new() };
            core.handle_map(change, &mut Net::default()).unwrap();
        }
        let mut pair = Pair { a, b, now: 1_000, cut: false, between: Vec::new() };
        // The primary probes its backup and waits out a lease before it serves.
        pair.run(100_000_000);
        pair
    }

    /// Delivers `datagram` from `from` to the core at `to`; returns what went to clients.
    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, datagram: &[u8]) -> Net {
        let mut out = Net::default();
        let core = if to == A { &mut self.a } else { &mut self.b };
        core.handle_datagram(self.now, from, datagram, &mut out);
        core.end_batch(self.now, &mut out);
        self.route(if to == A { A } else { B }, out)
    }

    /// Carries what `from` sent to the other core until nothing moves; returns what went
    /// elsewhere (clients).
    fn route(&mut self, from: SocketAddr, out: Net) -> Net {
        let mut to_clients = Net::default();
        let mut queue: std::collections::VecDeque<(SocketAddr, SocketAddr, Vec<u8>)> =
            out.0.into_iter().map(|(to, d)| (from, to, d)).collect();
        while let Some((from, to, datagram)) = queue.pop_front() {
            if to != A && to != B {
                to_clients.0.push((to, datagram));
                continue;
            }
            if self.cut {
                continue;
            }
            self.between.push((from, to, datagram.clone()));
            let mut out = Net::default();
            let core = if to == A { &mut self.a } else { &mut self.b };
            core.handle_datagram(self.now, from, &datagram, &mut out);
            core.end_batch(self.now, &mut out);
            queue.extend(out.0.into_iter().map(|(t, d)| (to, t, d)));
        }
        to_clients
    }

    /// Lets `ns` pass in 1 ms steps (heartbeats, resends).
    fn run(&mut self, ns: u64) -> Net {
        let mut to_clients = Net::default();
        let end = self.now + ns;
        while self.now < end {
            self.now += 1_000_000;
            for addr in [A, B] {
                let mut out = Net::default();
                let core = if addr == A { &mut self.a } else { &mut self.b };
                core.end_batch(self.now, &mut out);
                to_clients.0.extend(self.route(addr, out).0);
            }
        }
        to_clients
    }
}

fn request(op: Opcode, tracking_id: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
    encoded(
        HeaderFields { opcode: op as u8, client_id: 77, tracking_id, ..Default::default() },
        key,
        value,
    )
}

/// The request of header `h` (its lengths set from `key` and `value`).
fn encoded(h: HeaderFields, key: &[u8], value: &[u8]) -> Vec<u8> {
    let h = HeaderFields { total_len: value.len() as u32, ..h }.with_key_value(key, value);
    let mut d = vec![0u8; HEADER_BYTES + key.len() + value.len()];
    encode_message(&mut d, &h, key, value).unwrap();
    d
}

fn statuses(net: &Net) -> Vec<(u16, u64, Vec<u8>)> {
    net.0
        .iter()
        .flat_map(|(_, d)| Messages::new(d).map(|m| m.unwrap()))
        .map(|m| (m.header.status, m.header.version, m.value.to_vec()))
        .collect()
}

#[test]
fn a_write_is_answered_once_the_backup_holds_it_and_the_backup_serves_no_client() {
    let mut pair = Pair::new();
    assert_eq!(pair.a.counters().promotions, 4, "every partition probed its backup");
    let put = request(Opcode::Put, 1, b"k", b"v1");
    // The put and its forward, the backup's ack and the released reply: one exchange.
    let mut out = Net::default();
    pair.a.handle_datagram(pair.now, CLIENT, &put, &mut out);
    assert!(out.0.is_empty(), "nothing is answered before the backup has the write");
    pair.a.end_batch(pair.now, &mut out);
    assert!(out.0.iter().all(|(to, _)| *to == B), "only the forward goes out");
    let answered = pair.route(A, out);
    assert_eq!(statuses(&answered), vec![(Status::Ok as u16, 1, Vec::new())]);
    assert_eq!(pair.b.counters().replicated_records, 1);
    assert_eq!(pair.b.counters().keys, 1);

    // The backup sends clients to the primary; the primary reads what it wrote.
    let get = request(Opcode::Get, 2, b"k", b"");
    let refused = pair.deliver(CLIENT, B, &get);
    let replies = statuses(&refused);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, Status::WrongOwner as u16);
    assert_eq!(proto::decode_addr(&replies[0].2).unwrap().0, A);
    assert_eq!(statuses(&pair.deliver(CLIENT, A, &get)), vec![(0, 1, b"v1".to_vec())]);

    // A resend is answered from the completion record on either replica's watch.
    assert_eq!(statuses(&pair.deliver(CLIENT, A, &put)), vec![(0, 1, Vec::new())]);
    assert_eq!(pair.a.counters().duplicates_answered, 1);
}

#[test]
fn without_the_backups_acks_a_primary_answers_nothing_and_its_lease_runs_out() {
    let mut pair = Pair::new();
    let put = request(Opcode::Put, 1, b"k", b"v1");
    let mut out = Net::default();
    pair.a.handle_datagram(pair.now, CLIENT, &put, &mut out);
    pair.a.end_batch(pair.now, &mut out);
    // The forward is lost, and so is everything after it: the backup is cut off.
    pair.now += 60_000_000;
    let mut out = Net::default();
    pair.a.end_batch(pair.now, &mut out);
    assert!(out.0.iter().all(|(to, _)| *to == B), "the write is still not answered");
    let get = request(Opcode::Get, 2, b"other", b"");
    let mut out = Net::default();
    pair.a.handle_datagram(pair.now, CLIENT, &get, &mut out);
    let replies: Vec<_> =
        statuses(&Net(out.0.into_iter().filter(|(to, _)| *to == CLIENT).collect()));
    assert_eq!(replies, vec![(Status::Busy as u16, 0, Vec::new())], "no read past the lease");
    assert!(pair.a.counters().replica_not_serving >= 1);
}

#[test]
fn forged_replayed_and_foreign_node_datagrams_are_dropped_and_counted_and_nothing_applies() {
    let mut pair = Pair::new();
    // Capture a real forward from A to B.
    let put = request(Opcode::Put, 1, b"k", b"v1");
    let mut out = Net::default();
    pair.a.handle_datagram(pair.now, CLIENT, &put, &mut out);
    pair.a.end_batch(pair.now, &mut out);
    let (_, forward) = out.0.iter().find(|(to, _)| *to == B).cloned().unwrap();
    let keys_before = pair.b.counters().keys;

    // Every bit flipped in turn: the MAC (or the framing) refuses each.
    for bit in 0..forward.len() * 8 {
        let mut forged = forward.clone();
        forged[bit / 8] ^= 1 << (bit % 8);
        pair.b.handle_datagram(pair.now, A, &forged, &mut Net::default());
    }
    let c = pair.b.counters();
    assert_eq!(c.keys, keys_before, "nothing forged applied");
    assert!(c.dropped_unauthenticated > forward.len() as u64 * 8 / 2, "{c:?}");
    // The same write sealed with another cluster's key.
    let mut foreign = crate::peer::PeerSealer::new(key(1), super::replica::peer_id(A), 5);
    let mut sealed = Vec::new();
    foreign.seal(
        super::replica::peer_id(B),
        crate::peer::PeerKind::Replication,
        pair.b.wall_ns(),
        &forward[crate::peer::PEER_HEADER_BYTES..forward.len() - crate::peer::MAC_BYTES],
        &mut sealed,
    );
    let before = pair.b.counters().dropped_unauthenticated;
    pair.b.handle_datagram(pair.now, A, &sealed, &mut Net::default());
    assert_eq!(pair.b.counters().dropped_unauthenticated, before + 1);
    assert_eq!(pair.b.counters().keys, keys_before);

    // The real one applies once; played again, it is a replay.
    pair.b.handle_datagram(pair.now, A, &forward, &mut Net::default());
    assert_eq!(pair.b.counters().keys, keys_before + 1);
    let replayed = pair.b.counters().dropped_replayed;
    pair.b.handle_datagram(pair.now, A, &forward, &mut Net::default());
    assert_eq!(pair.b.counters().dropped_replayed, replayed + 1);
    assert_eq!(pair.b.counters().replicated_records, 1);

    // A client cannot reach the replication path: a forward from a client's address is
    // refused even with a valid MAC (the sender must be the partition's primary).
    let mut from_client = Vec::new();
    let mut sealer = crate::peer::PeerSealer::new(key(9), super::replica::peer_id(CLIENT), 6);
    sealer.seal(
        super::replica::peer_id(B),
        crate::peer::PeerKind::Replication,
        pair.b.wall_ns(),
        &forward[crate::peer::PEER_HEADER_BYTES..forward.len() - crate::peer::MAC_BYTES],
        &mut from_client,
    );
    let refused = pair.b.counters().replication_refused;
    pair.b.handle_datagram(pair.now, CLIENT, &from_client, &mut Net::default());
    assert_eq!(pair.b.counters().replication_refused, refused + 1);
}

#[test]
fn a_sole_replica_in_a_cluster_answers_after_the_promotion_wait_then_at_once_or_after_its_flush() {
    // Found by the RF 1 benchmark: in the memory class a sole replica's writes were never
    // counted as committed, so every reply was held for good. At replication factor 1 the
    // class is what it is on a single node (answered once in the file); a partition of a
    // larger factor left alone commits on its own flush, at the batch's end (found by the
    // simulation: such a primary lost its last answers to a power cut).
    for factor in [1, 3] {
        let mut a = core_of_factor(A, factor);
        let entries = (0..4)
            .map(|p| {
                let (start, end) = proto::partition_range(p, 4);
                MapEntry::single(start, end, p, A)
            })
            .collect();
        let map = PartitionMap { epoch: 2, cluster: 1, entries };
        a.handle_map(MapChange { map, added: Vec::new() }, &mut Net::default()).unwrap();
        let put = request(Opcode::Put, 1, b"k", b"v1");
        let mut out = Net::default();
        a.handle_datagram(1_000, CLIENT, &put, &mut out);
        let busy = vec![(Status::Busy as u16, 0, Vec::new())];
        assert_eq!(statuses(&out), busy, "factor {factor}: waits out a lease");
        let mut now = 1_000;
        while now < 100_000_000 {
            now += 1_000_000;
            a.end_batch(now, &mut Net::default());
        }
        let mut out = Net::default();
        a.handle_datagram(now, CLIENT, &put, &mut out);
        let ok = vec![(Status::Ok as u16, 1, Vec::new())];
        if factor == 1 {
            assert_eq!(statuses(&out), ok, "factor 1: answered at once");
            continue;
        }
        assert!(statuses(&out).is_empty(), "factor {factor}: held for the flush");
        a.end_batch(now, &mut out);
        assert_eq!(statuses(&out), ok, "factor {factor}: answered in its batch");
    }
}

#[test]
fn an_incr_replicates_as_a_put_of_its_count_and_expiries_replicate_with_their_writes() {
    let mut pair = Pair::new();
    let args = proto::IncrArgs { delta: -3, floor: None }.encode();
    let incr = request(Opcode::Incr, 1, b"budget", &args);
    let answered = pair.deliver(CLIENT, A, &incr);
    let replies = statuses(&answered);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].0, Status::Ok as u16);
    assert_eq!(proto::decode_count(&replies[0].2), Some(-3));
    let mut on_backup = Vec::new();
    pair.b
        .for_each_entry(|k, v, version| on_backup.push((k.to_vec(), v.to_vec(), version)))
        .unwrap();
    assert_eq!(on_backup, vec![(b"budget".to_vec(), b"-3".to_vec(), replies[0].1)]);
    // A TTL travels with its write: the backup's copy expires when the primary's does, so
    // a failover brings no expired key back. A TOUCH replicates as a put of the value kept.
    let with_ttl = |opcode: Opcode, tracking_id: u64, key: &[u8], value: &[u8], ttl| {
        let mut h = HeaderFields {
            opcode: opcode as u8,
            client_id: 77,
            tracking_id,
            total_len: value.len() as u32,
            ..HeaderFields::default()
        };
        h.set_ttl_secs(ttl);
        let mut d = vec![0u8; HEADER_BYTES + key.len() + value.len()];
        encode_message(&mut d, &h, key, value).unwrap();
        d
    };
    let same_on_both = |pair: &mut Pair, key: &[u8]| {
        let (on_a, on_b) = (pair.a.item_meta(key), pair.b.item_meta(key));
        assert_eq!(on_a, on_b, "primary and backup");
        on_a.expect("present")
    };
    let put = with_ttl(Opcode::Put, 2, b"k", b"v", Some(60));
    assert_eq!(statuses(&pair.deliver(CLIENT, A, &put))[0].0, Status::Ok as u16);
    let (_, meta) = same_on_both(&mut pair, b"k");
    assert!(meta.expires_at_ns > 0, "{meta:?}");
    let touch = with_ttl(Opcode::Touch, 3, b"k", b"", None);
    assert_eq!(statuses(&pair.deliver(CLIENT, A, &touch))[0].0, Status::Ok as u16);
    assert_eq!(same_on_both(&mut pair, b"k").1.expires_at_ns, 0, "TOUCH without a TTL");
    let touch = with_ttl(Opcode::Touch, 4, b"budget", b"", Some(5));
    assert_eq!(statuses(&pair.deliver(CLIENT, A, &touch))[0].0, Status::Ok as u16);
    let (version, meta) = same_on_both(&mut pair, b"budget");
    assert!(meta.expires_at_ns > 0 && version > replies[0].1, "{meta:?} at {version}");
    // An INCR keeps the key's expiry, on the backup too.
    let incr = request(Opcode::Incr, 5, b"budget", &args);
    assert_eq!(statuses(&pair.deliver(CLIENT, A, &incr))[0].0, Status::Ok as u16);
    assert_eq!(same_on_both(&mut pair, b"budget").1, meta);
}

#[test]
fn the_largest_replicated_write_fits_its_datagram_with_an_expiry_and_one_byte_more_is_refused() {
    let mut pair = Pair::new();
    let max = crate::core::replica::REPLICATED_VALUE_BYTES_MAX;
    let put = |tracking_id: u64, value: &[u8]| {
        let mut h = HeaderFields {
            opcode: Opcode::Put as u8,
            client_id: 77,
            tracking_id,
            total_len: value.len() as u32,
            ..HeaderFields::default()
        };
        h.set_ttl_secs(Some(60));
        let mut d = vec![0u8; HEADER_BYTES + 1 + value.len()];
        encode_message(&mut d, &h, b"k", value).unwrap();
        d
    };
    let fits = vec![7u8; max - 1];
    assert_eq!(statuses(&pair.deliver(CLIENT, A, &put(1, &fits)))[0].0, Status::Ok as u16);
    let mut on_backup = Vec::new();
    pair.b.for_each_entry(|k, v, _| on_backup.push((k.to_vec(), v.len()))).unwrap();
    assert_eq!(on_backup, vec![(b"k".to_vec(), max - 1)], "forwarded, metadata and all");
    assert_eq!(pair.a.item_meta(b"k"), pair.b.item_meta(b"k"));
    let over = vec![7u8; max];
    let refused = statuses(&pair.deliver(CLIENT, A, &put(2, &over)));
    assert_eq!(refused[0].0, Status::TooLarge as u16, "{refused:?}");
}

#[test]
fn a_write_that_changed_nothing_replicates_its_answer_so_a_resend_after_a_failover_is_not_applied()
{
    let mut pair = Pair::new();
    let delete = request(Opcode::Delete, 1, b"gone", b"");
    assert_eq!(
        statuses(&pair.deliver(CLIENT, A, &delete)),
        vec![(Status::NotFound as u16, 0, vec![])]
    );
    let put = request(Opcode::Put, 2, b"k", b"v1");
    let put = statuses(&pair.deliver(CLIENT, A, &put));
    assert_eq!(put[0].0, Status::Ok as u16);
    let h = HeaderFields {
        opcode: Opcode::Cas as u8,
        client_id: 77,
        tracking_id: 3,
        version: 99,
        ..Default::default()
    };
    let cas = encoded(h, b"k", b"v2");
    let mismatch = statuses(&pair.deliver(CLIENT, A, &cas));
    assert_eq!(mismatch, vec![(Status::VersionMismatch as u16, put[0].1, vec![])]);
    // Both answers reached the backup as notes: they took LSNs and changed no key.
    assert_eq!(pair.b.counters().replicated_records, 3);
    assert_eq!(pair.b.counters().keys, 1);

    // The primary dies: B alone serves, and the key deleted-when-absent is written anew.
    pair.b.handle_map(b_alone(3), &mut Net::default()).unwrap();
    let mut waited = Net::default();
    for _ in 0..100 {
        pair.now += 1_000_000;
        pair.b.end_batch(pair.now, &mut waited);
    }
    let other = HeaderFields {
        opcode: Opcode::Put as u8,
        client_id: 78,
        tracking_id: 1,
        ..Default::default()
    };
    let put = encoded(other, b"gone", b"v9");
    assert_eq!(statuses(&pair.deliver(CLIENT, B, &put))[0].0, Status::Ok as u16);
    // Late copies of the first two requests are answered as they were, and applied never.
    assert_eq!(
        statuses(&pair.deliver(CLIENT, B, &delete)),
        vec![(Status::NotFound as u16, 0, vec![])]
    );
    assert_eq!(statuses(&pair.deliver(CLIENT, B, &cas)), mismatch);
    assert_eq!(pair.b.counters().duplicates_answered, 2);
    let get = request(Opcode::Get, 4, b"gone", b"");
    assert_eq!(statuses(&pair.deliver(CLIENT, B, &get))[0].2, b"v9".to_vec());
}

/// The map that makes B the sole replica of every partition (A has failed).
fn b_alone(epoch: u64) -> MapChange {
    let entries = (0..4)
        .map(|p| {
            let (start, end) = proto::partition_range(p, 4);
            MapEntry::single(start, end, p, B)
        })
        .collect();
    MapChange { map: PartitionMap { epoch, cluster: 1, entries }, added: Vec::new() }
}

#[test]
fn a_promoted_backup_waits_out_the_old_lease_from_its_last_ack_not_from_its_promotion() {
    let wait = ReplicationConfig::new(key(9)).promotion_wait_ns;
    // Promoted just after it acked A: it serves only a promotion wait later.
    let mut pair = Pair::new();
    pair.b.handle_map(b_alone(3), &mut Net::default()).unwrap();
    pair.run(3_000_000); // (its probing ends at its next scan of its replicas)
    let get = request(Opcode::Get, 1, b"k", b"");
    assert_eq!(statuses(&pair.deliver(CLIENT, B, &get))[0].0, Status::Busy as u16);
    pair.now += wait;
    assert_eq!(statuses(&pair.deliver(CLIENT, B, &get))[0].0, Status::NotFound as u16);

    // Cut off from A for longer than the wait before the map comes (a failover takes its
    // detection): it serves at once.
    let mut pair = Pair::new();
    let mut ignored = Net::default();
    for _ in 0..(wait / 1_000_000 + 1) {
        pair.now += 1_000_000;
        pair.b.end_batch(pair.now, &mut ignored);
    }
    pair.b.handle_map(b_alone(3), &mut Net::default()).unwrap();
    pair.run(3_000_000);
    assert_eq!(statuses(&pair.deliver(CLIENT, B, &get))[0].0, Status::NotFound as u16);
}

/// Every partition on A, with B in `b` (none: not in the map).
fn a_with(epoch: u64, b: Option<Role>) -> MapChange {
    let mut map = replicated_map();
    map.epoch = epoch;
    for entry in &mut map.entries {
        entry.replicas = b.map(|role| vec![Replica { addr: B, role }]).unwrap_or_default();
    }
    MapChange { map, added: Vec::new() }
}

/// The value `core`'s store holds for `key`.
fn stored(core: &mut Core, key: &[u8]) -> Option<Vec<u8>> {
    let slot = core.all_slots.get(partition_of(key_hash(key), 4)).expect("an endpoint");
    let value = core.endpoints[slot].store.get(&mut core.shelf, key).expect("readable");
    value.map(|(v, _)| v.to_vec())
}

#[test]
fn a_learner_is_built_on_its_own_log_where_digests_vouch_for_it_and_emptied_where_not() {
    let keys: Vec<Vec<u8>> = (0..48).map(|i| format!("key-{i}").into_bytes()).collect();
    let mut pair = Pair::new();
    let mut tracking = 0;
    let mut write = |pair: &mut Pair, op: Opcode, key: &[u8], value: &[u8]| {
        tracking += 1;
        let answered = statuses(&pair.deliver(CLIENT, A, &request(op, tracking, key, value)));
        pair.run(2_000_000);
        answered
    };
    for key in &keys[..40] {
        assert_eq!(write(&mut pair, Opcode::Put, key, b"first")[0].0, 0);
    }
    // B is cut off (it keeps its store, as a restart would); A goes on alone: overwrites,
    // deletes and new keys, while 15 keys keep the records B has too.
    pair.cut = true;
    pair.a.handle_map(a_with(3, None), &mut Net::default()).unwrap();
    pair.run(100_000_000); // (alone, it waits out the old lease)
    for key in &keys[..20] {
        assert_eq!(write(&mut pair, Opcode::Put, key, b"second")[0].0, 0);
    }
    for key in &keys[20..25] {
        assert_eq!(write(&mut pair, Opcode::Delete, key, b"")[0].0, 0);
    }
    for key in &keys[40..] {
        assert_eq!(write(&mut pair, Opcode::Put, key, b"new")[0].0, 0);
    }
    // B's own log holds one write A never had (an old primary's uncommitted write).
    let slot = pair.b.all_slots.get(partition_of(key_hash(&keys[30]), 4)).unwrap();
    let b = &mut pair.b;
    b.endpoints[slot].store.put(&mut b.shelf, &keys[30], b"never committed", None).unwrap();

    // B comes back as A's learner.
    pair.cut = false;
    for core in [&mut pair.a, &mut pair.b] {
        core.handle_map(a_with(4, Some(Role::Learner)), &mut Net::default()).unwrap();
    }
    pair.run(200_000_000);
    let (a, b) = (pair.a.counters(), pair.b.counters());
    assert_eq!(a.catchups_from_own_log, 4, "every partition built on B's own log first");
    assert!(a.snapshot_digests >= 10, "{} entries sent as digests", a.snapshot_digests);
    assert_eq!(b.own_log_refused, 1, "the partition with the write A never had");
    assert_eq!(a.catchups_started, 5, "that one again, whole");
    for key in &keys {
        let (on_a, on_b) = (stored(&mut pair.a, key), stored(&mut pair.b, key));
        assert_eq!(on_a, on_b, "{}", String::from_utf8_lossy(key));
    }
    assert_eq!(stored(&mut pair.b, &keys[21]), None, "deleted while B was away");
    assert_eq!(stored(&mut pair.b, &keys[30]), Some(b"first".to_vec()), "A's, not B's own");
}
