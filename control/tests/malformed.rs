//! 10^6 random and mutated datagrams through a core: none panics it, each malformed one is
//! counted in `dropped_malformed`, and valid requests mixed in are served meanwhile.

use control::{Core, CoreConfig, NodeLayout, NodeStats};
use dataplane::{Handler, Transmit};
use proto::{encode_message, flags, HeaderFields, Messages, Opcode, Status, HEADER_BYTES};
use std::net::SocketAddr;
use std::sync::Arc;
use testkit::Rng;

struct Replies(Vec<Vec<u8>>);

impl Transmit for Replies {
    fn send(&mut self, _peer: SocketAddr, datagram: &[u8]) -> bool {
        self.0.push(datagram.to_vec());
        true
    }
}

fn valid(op: Opcode, tracking_id: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
    let h = HeaderFields { opcode: op as u8, client_id: 9, tracking_id, ..HeaderFields::default() };
    let mut buf = vec![0u8; HEADER_BYTES + key.len() + value.len()];
    encode_message(&mut buf, &h, key, value).unwrap();
    buf
}

/// A datagram built to be malformed in one of the ways attackers and bugs produce.
fn garbage(rng: &mut Rng) -> Vec<u8> {
    let mut d = valid(Opcode::ALL[rng.below(7) as usize], rng.next_u64(), b"victim", &[1; 40]);
    let put_u32 =
        |d: &mut Vec<u8>, at: usize, v: u32| d[at..at + 4].copy_from_slice(&v.to_le_bytes());
    match rng.below(8) {
        0 => d = (0..rng.below(2100)).map(|_| rng.next_u64() as u8).collect(),
        1 => d.truncate(rng.below(HEADER_BYTES as u64) as usize),
        2 => d.truncate(HEADER_BYTES + rng.below(46) as usize),
        3 => d[0] ^= 1 + rng.below(255) as u8,
        4 => put_u32(&mut d, 40, 41 + rng.below(u32::MAX as u64 - 41) as u32), // value_len
        5 => {
            // A fragment claiming a huge count.
            d[4..6].copy_from_slice(&flags::FRAGMENT.to_le_bytes());
            put_u32(&mut d, 48, u32::MAX - rng.below(1000) as u32);
            put_u32(&mut d, 52, 40);
        }
        6 => d[36..38].copy_from_slice(&(251 + rng.below(1000) as u16).to_le_bytes()), // key_len
        _ => {
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                let at = rng.below(d.len() as u64) as usize;
                d[at] ^= 1 << rng.below(8);
            }
        }
    }
    d
}

/// What the core must count for this datagram: a parse error anywhere, or a message that is
/// a reply or carries a status (never answered, so no reflection loops).
fn expected_drops(d: &[u8]) -> u64 {
    let mut drops = 0;
    for m in Messages::new(d) {
        match m {
            Ok(m)
                if m.header.has(flags::REPLY)
                    || m.header.has(flags::PARTIAL)
                    || m.header.status != 0 =>
            {
                drops += 1
            }
            Ok(_) => {}
            Err(_) => return drops + 1,
        }
    }
    drops
}

#[test]
fn a_million_bad_datagrams_are_counted_while_good_ones_are_served() {
    let layout =
        Arc::new(NodeLayout::new(64, vec![SocketAddr::from(([127, 0, 0, 1], 7000))]).unwrap());
    let map: Arc<[u8]> = layout.map().encode().into();
    let mut core =
        Core::new(CoreConfig::new(0, layout, [1; 32]), Arc::new(NodeStats::new(1)), map).unwrap();
    let peer = SocketAddr::from(([127, 0, 0, 1], 50000));
    let mut rng = Rng::from_seed(0xC0FFEE);
    let mut expected = 0;
    let mut served = 0;
    const DATAGRAMS: u64 = 1_000_000;
    for i in 0..DATAGRAMS {
        let d = garbage(&mut rng);
        expected += expected_drops(&d);
        let mut sink = Replies(Vec::new());
        core.handle_datagram(i, peer, &d, &mut sink);
        if i % 1000 == 0 {
            // A valid write and read of a key nobody else touches, answered correctly.
            let key = format!("good-{i}");
            let mut sink = Replies(Vec::new());
            core.handle_datagram(
                i,
                peer,
                &valid(Opcode::Put, u64::MAX - i, key.as_bytes(), b"ok"),
                &mut sink,
            );
            core.handle_datagram(
                i,
                peer,
                &valid(Opcode::Get, u64::MAX - i - 1, key.as_bytes(), b""),
                &mut sink,
            );
            let replies: Vec<_> = sink
                .0
                .iter()
                .flat_map(|d| Messages::new(d).map(|m| m.unwrap()))
                .map(|m| (m.header.status, m.value.to_vec()))
                .collect();
            assert_eq!(
                replies,
                vec![(Status::Ok as u16, Vec::new()), (Status::Ok as u16, b"ok".to_vec())]
            );
            served += 1;
        }
    }
    let counters = core.counters();
    assert!(
        expected > DATAGRAMS * 9 / 10,
        "the generator makes mostly malformed datagrams: {expected}"
    );
    assert_eq!(counters.dropped_malformed, expected);
    assert_eq!(served, DATAGRAMS / 1000);
}
