//! Unit tests of the core that need no server: packing and local refusals.

use super::*;
use proto::{flags, Messages, Opcode, DATAGRAM_BYTES_MAX};
use std::time::Duration;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn core() -> ClientCore {
    let mut config = ClientConfig::new(vec![addr(7000)]);
    config.seed = 1;
    ClientCore::new(config).unwrap()
}

fn get(key: &str) -> Request {
    Request::Get { key: key.as_bytes().to_vec() }
}

#[test]
fn gets_submitted_together_share_one_datagram() {
    let mut core = core();
    let now = Instant::now();
    let ids: Vec<_> = ["a", "b", "c"].iter().map(|k| core.submit(now, get(k))).collect();
    let (to, datagram) = core.poll_transmit().unwrap();
    assert_eq!(to, addr(7000));
    let messages: Vec<_> = Messages::new(&datagram).map(Result::unwrap).collect();
    let keys: Vec<_> = messages.iter().map(|m| m.key).collect();
    assert_eq!(keys, [b"a", b"b", b"c"]);
    assert!(messages.iter().all(|m| m.opcode() == Opcode::Get && m.header.flags == 0));
    let tracking: std::collections::HashSet<_> =
        messages.iter().map(|m| m.header.tracking_id).collect();
    assert_eq!(tracking.len(), 3, "one tracking id per request");
    assert!(core.poll_transmit().is_none());
    assert_eq!(ids.len(), 3);
    assert_eq!(core.in_flight(), 3);
}

#[test]
fn packed_gets_are_split_at_the_datagram_limit() {
    let mut core = core();
    let now = Instant::now();
    let key = "k".repeat(200);
    for i in 0..20 {
        core.submit(now, get(&format!("{key}{i:02}")));
    }
    let mut messages = 0;
    let mut datagrams = 0;
    while let Some((_, datagram)) = core.poll_transmit() {
        assert!(datagram.len() <= DATAGRAM_BYTES_MAX);
        // 274 bytes each: five fit.
        assert_eq!(Messages::new(&datagram).count(), 5);
        messages += Messages::new(&datagram).filter(Result::is_ok).count();
        datagrams += 1;
    }
    assert_eq!((messages, datagrams), (20, 4));
}

#[test]
fn large_puts_go_as_a_window_of_fragments() {
    let mut core = core();
    let now = Instant::now();
    let value = vec![7u8; 40 * proto::FRAGMENT_BYTES];
    core.submit(now, Request::Put { key: b"big".to_vec(), value });
    let mut indexes = vec![];
    while let Some((_, datagram)) = core.poll_transmit() {
        let message = Messages::new(&datagram).next().unwrap().unwrap();
        assert!(message.header.has(flags::FRAGMENT));
        assert_eq!(message.header.frag_count, 40);
        let ack = message.header.has(flags::ACK_REQUEST);
        assert_eq!(ack, message.header.frag_index == 31, "ACK_REQUEST on the window's last");
        indexes.push(message.header.frag_index);
    }
    assert_eq!(indexes, (0..32).collect::<Vec<_>>());
}

#[test]
fn local_refusals_complete_at_once() {
    let mut core = core();
    let now = Instant::now();
    let id = core.submit(now, get(&"k".repeat(251)));
    let (done, result) = core.poll_completion().unwrap();
    assert_eq!(done, id);
    assert!(matches!(result, Err(Error::KeyTooLong { len: 251 })));
    assert!(core.poll_transmit().is_none());
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn in_flight_limit_refuses_the_excess() {
    let mut config = ClientConfig::new(vec![addr(7000)]);
    config.in_flight_max = 2;
    let mut core = ClientCore::new(config).unwrap();
    let now = Instant::now();
    for key in ["a", "b", "c"] {
        core.submit(now, get(key));
    }
    assert!(matches!(core.poll_completion(), Some((RequestId(3), Err(Error::InFlightFull)))));
    assert_eq!(core.in_flight(), 2);
}

#[test]
fn try_submit_refuses_without_queueing_and_capacity_tells_in_advance() {
    let mut config = ClientConfig::new(vec![addr(7000)]);
    config.in_flight_max = 2;
    let mut core = ClientCore::new(config).unwrap();
    let now = Instant::now();
    assert_eq!(core.capacity(), 2);
    core.try_submit(now, get("a"), RequestOptions::default()).unwrap();
    core.try_submit(now, get("b"), RequestOptions::default()).unwrap();
    assert_eq!(core.capacity(), 0);
    let refused = core.try_submit(now, get("c"), RequestOptions::default());
    assert!(matches!(refused, Err(Error::InFlightFull)), "{refused:?}");
    let too_long = core.try_submit(now, get(&"k".repeat(251)), RequestOptions::default());
    assert!(matches!(too_long, Err(Error::KeyTooLong { len: 251 })));
    assert!(core.poll_completion().is_none(), "a refusal is not a completion");
    assert_eq!(core.in_flight(), 2);
}

#[test]
fn a_deadline_ends_a_request_that_would_still_be_resending() {
    let mut core = core();
    let start = Instant::now();
    let deadline = start + Duration::from_millis(12);
    let id = core.submit_with(start, get("k"), RequestOptions { deadline: Some(deadline) });
    let mut sends = 0;
    let mut now = start;
    while core.poll_completion().is_none() {
        while core.poll_transmit().is_some() {
            sends += 1;
        }
        now = core.poll_timeout().expect("a timer while in flight");
        assert!(now <= deadline, "a timer past the deadline: {:?}", now - start);
        core.handle_timeout(now);
    }
    // The 5 ms first timeout doubles: sends at 0 and 5 ms, the next (15 ms) is past it.
    assert_eq!((sends, now), (2, deadline));
    assert_eq!(core.in_flight(), 0);
    assert_eq!(core.stats().deadlines_exceeded, 1);
    assert_eq!(core.poll_timeout(), None, "no timer left behind");
    let _ = id;
}

#[test]
fn a_passed_deadline_fails_at_once_unsent() {
    let mut core = core();
    let now = Instant::now();
    let id = core.submit_with(now, get("k"), RequestOptions { deadline: Some(now) });
    assert!(
        matches!(core.poll_completion(), Some((done, Err(Error::DeadlineExceeded))) if done == id)
    );
    assert!(core.poll_transmit().is_none());
}

#[test]
fn a_cancelled_request_completes_once_and_its_late_reply_is_dropped() {
    let mut core = core();
    let now = Instant::now();
    let id = core.submit(now, Request::Put { key: b"k".to_vec(), value: b"v".to_vec() });
    let (_, datagram) = core.poll_transmit().unwrap();
    assert!(core.cancel(id));
    assert!(!core.cancel(id), "only once");
    assert!(matches!(core.poll_completion(), Some((done, Err(Error::Cancelled))) if done == id));
    assert_eq!((core.in_flight(), core.poll_timeout()), (0, None));
    // The server's reply to it, late: counted and dropped, no second completion.
    let request = Messages::new(&datagram).next().unwrap().unwrap();
    let reply = proto::HeaderFields {
        flags: flags::REPLY,
        opcode: Opcode::Put as u8,
        client_id: request.header.client_id,
        tracking_id: request.header.tracking_id,
        version: 1,
        ..Default::default()
    };
    core.handle_datagram(now, addr(7000), &crate::encode::message(&reply, b"", b""));
    assert!(core.poll_completion().is_none());
    assert_eq!(core.stats().replies_ignored, 1);
    assert_eq!(core.stats().cancelled, 1);
}

/// A one-partition map owned by `owner`, of cluster `cluster`.
fn map_of(cluster: u64, owner: SocketAddr) -> Vec<u8> {
    let entry = proto::MapEntry::single(0, u64::MAX, 0, owner);
    PartitionMap { epoch: 1, cluster, entries: vec![entry] }.encode()
}

/// The reply to every message of `datagram`, with `value`.
fn reply_to(datagram: &[u8], status: proto::Status, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 8192];
    let mut len = 0;
    for m in Messages::new(datagram).map(Result::unwrap) {
        let mut h = m.header.reply(status);
        h.map_epoch = 1;
        len += proto::encode_message(&mut out[len..], &h, &[], value).unwrap();
    }
    out.truncate(len);
    out
}

/// A PUT whose server (A) went silent fails over to B, a configured server that is not
/// listed in A's map: B is asked for its map first, and gets the PUT only if that names A's
/// cluster.
fn fail_over_to(b_cluster: u64) -> (Result<Reply, Error>, usize) {
    let (a, b) = (addr(7000), addr(7001));
    let mut config = ClientConfig::new(vec![a, b]);
    config.seed = 1;
    let mut core = ClientCore::new(config).unwrap();
    let mut now = Instant::now();
    let map = core.submit(now, Request::Map { server: a });
    let (_, request) = core.poll_transmit().unwrap();
    core.handle_datagram(now, a, &reply_to(&request, proto::Status::Ok, &map_of(1, a)));
    assert_eq!(core.poll_completion().unwrap().0, map);
    core.submit(now, Request::Put { key: b"k".to_vec(), value: b"v".to_vec() });
    let mut puts_to_b = 0;
    loop {
        while let Some((to, datagram)) = core.poll_transmit() {
            // (One datagram may carry a MAP and the PUT: each gets its own answer.)
            let messages: Vec<_> = Messages::new(&datagram).map(Result::unwrap).collect();
            for m in messages {
                let value = match (to == b, m.opcode()) {
                    (true, Opcode::Map) => map_of(b_cluster, b),
                    (true, Opcode::Put) => {
                        puts_to_b += 1;
                        Vec::new()
                    }
                    _ => continue, // A is silent
                };
                let mut h = m.header.reply(proto::Status::Ok);
                h.map_epoch = 1;
                let mut reply = vec![0u8; 8192];
                let len = proto::encode_message(&mut reply, &h, &[], &value).unwrap();
                core.handle_datagram(now, b, &reply[..len]);
            }
        }
        if let Some((_, result)) = core.poll_completion() {
            return (result, puts_to_b);
        }
        now = core.poll_timeout().expect("a timer while the PUT is in flight");
        core.handle_timeout(now);
    }
}

#[test]
fn a_failover_never_sends_a_write_to_a_server_of_another_cluster() {
    let (result, puts_to_b) = fail_over_to(2);
    assert_eq!(puts_to_b, 0, "B is of another data set");
    match result {
        Err(Error::ForeignCluster { server, cluster: 2, expected: 1 }) => {
            assert_eq!(server, addr(7001))
        }
        other => panic!("expected ForeignCluster, got {other:?}"),
    }
    let (result, puts_to_b) = fail_over_to(1);
    assert_eq!(puts_to_b, 1, "B is of the same cluster: it gets the write: {result:?}");
    assert!(result.is_ok(), "{result:?}");
}

/// A PUT whose primary (A) went silent: the client asks another node (B) for the map every
/// `MAP_WATCH` while the map still names A, so once the map names the new owner (C) the PUT
/// goes there within one poll, not after A's backed-off timer and B's budget.
#[test]
fn a_request_on_a_silent_server_moves_within_a_map_poll_of_the_failover() {
    for failover_ms in [60, 300, 900] {
        let (a, b, c) = (addr(7000), SocketAddr::from(([127, 0, 0, 2], 7000)), addr(7002));
        let mut config = ClientConfig::new(vec![a, b, c]);
        config.seed = 1;
        let mut core = ClientCore::new(config).unwrap();
        let start = Instant::now();
        let mut now = start;
        let map_at = |epoch: u64, owner: SocketAddr| {
            let entry = proto::MapEntry::single(0, u64::MAX, 0, owner);
            PartitionMap { epoch, cluster: 1, entries: vec![entry] }.encode()
        };
        core.submit(now, Request::Map { server: a });
        let (_, request) = core.poll_transmit().unwrap();
        core.handle_datagram(now, a, &reply_to(&request, proto::Status::Ok, &map_at(1, a)));
        assert!(core.poll_completion().unwrap().1.is_ok());
        core.submit(now, Request::Put { key: b"k".to_vec(), value: b"v".to_vec() });
        // B's map names A until the failover, then C. A is silent; B answers only maps.
        let failover = start + Duration::from_millis(failover_ms);
        let (mut polls, mut arrived) = (0, None);
        while arrived.is_none() {
            while let Some((to, datagram)) = core.poll_transmit() {
                for m in Messages::new(&datagram).map(Result::unwrap).collect::<Vec<_>>() {
                    if to == c && m.opcode() == Opcode::Put {
                        arrived = Some(now);
                    }
                    if to != b || m.opcode() != Opcode::Map {
                        continue;
                    }
                    polls += 1;
                    let value = if now < failover { map_at(1, a) } else { map_at(2, c) };
                    let mut h = m.header.reply(proto::Status::Ok);
                    h.map_epoch = 1;
                    let mut reply = vec![0u8; 8192];
                    let len = proto::encode_message(&mut reply, &h, &[], &value).unwrap();
                    core.handle_datagram(now, b, &reply[..len]);
                }
            }
            if arrived.is_some() {
                break;
            }
            assert!(core.poll_completion().is_none(), "the PUT ended before reaching C");
            now = core.poll_timeout().expect("a timer while the PUT is in flight");
            core.handle_timeout(now);
        }
        let late = arrived.unwrap().saturating_duration_since(failover);
        assert!(
            late <= super::timeout::MAP_WATCH,
            "failover at {failover_ms} ms: the PUT reached C {late:?} after it"
        );
        // Polled about every MAP_WATCH from the second lost attempt on, not more often.
        let most = failover_ms as usize / super::timeout::MAP_WATCH.as_millis() as usize + 2;
        assert!(polls <= most, "{polls} map polls in {failover_ms} ms");
    }
}

/// With a key, datagrams leave packed to 1,440 bytes so that sealed they stay within
/// `DATAGRAM_BYTES_MAX`, and a PUT that fits 1,472 bytes but not 1,440 goes in fragments.
#[test]
fn with_a_key_every_sealed_datagram_stays_within_the_limit() {
    let line = format!("4 app write {}", "ab".repeat(32));
    let mut config = ClientConfig::new(vec![addr(7000)]);
    config.key = Some(crate::ClientKey::parse(&line).unwrap());
    let key = config.key.clone();
    let mut core = ClientCore::new(config).unwrap();
    let now = Instant::now();
    let long = "k".repeat(200);
    for i in 0..20 {
        core.submit(now, get(&format!("{long}{i:02}")));
    }
    let value = vec![1u8; DATAGRAM_BYTES_MAX - HEADER_BYTES - 3 - 10];
    core.submit(now, Request::Put { key: b"put".to_vec(), value });
    let mut fragments = 0;
    while let Some((_, datagram)) = core.poll_transmit() {
        let sealed = crate::auth::sealed(key.as_ref(), &datagram);
        assert!(sealed.len() <= DATAGRAM_BYTES_MAX, "{} bytes sealed", sealed.len());
        assert_eq!(sealed.len(), datagram.len() + proto::auth::AUTH_OVERHEAD_BYTES);
        let first = Messages::new(&datagram).next().unwrap().unwrap();
        fragments += usize::from(first.header.has(flags::FRAGMENT));
    }
    assert_eq!(fragments, 2, "the PUT of 1,387 value bytes went as two fragments");
}
