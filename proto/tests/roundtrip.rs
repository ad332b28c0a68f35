//! Round trips and robustness of the wire format, by property.

use proptest::prelude::*;
use proto::*;

fn whole_value_header() -> impl Strategy<Value = HeaderFields> {
    (
        prop::sample::select(Opcode::ALL),
        prop::sample::select(Status::ALL),
        any::<bool>(),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>(), any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(
                op,
                status,
                reply,
                (client_id, tracking_id, map_epoch, partition, version, token),
            )| {
                HeaderFields {
                    opcode: op as u8,
                    flags: if reply { flags::REPLY } else { 0 },
                    status: status as u16,
                    client_id,
                    tracking_id,
                    map_epoch,
                    partition,
                    version,
                    token,
                    ..HeaderFields::default()
                }
            },
        )
}

proptest! {
    #[test]
    fn messages_round_trip(
        parts in prop::collection::vec(
            (whole_value_header(), prop::collection::vec(any::<u8>(), 0..=KEY_BYTES_MAX),
             prop::collection::vec(any::<u8>(), 0..600)),
            1..4),
    ) {
        let mut datagram = vec![0u8; 8192];
        let mut len = 0;
        for (h, k, v) in &parts {
            len += encode_message(&mut datagram[len..], h, k, v).unwrap();
        }
        let datagram = &datagram[..len];
        if len > DATAGRAM_BYTES_ACCEPTED {
            prop_assert_eq!(Messages::new(datagram).next().unwrap().unwrap_err(), Malformed::Oversized);
            return Ok(());
        }
        let decoded: Vec<Message<'_>> = Messages::new(datagram).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(decoded.len(), parts.len());
        for (m, (h, k, v)) in decoded.iter().zip(&parts) {
            let mut expected = *h;
            expected.key_len = k.len() as u16;
            expected.value_len = v.len() as u32;
            expected.total_len = v.len() as u32;
            prop_assert_eq!(m.header, expected);
            prop_assert_eq!(m.key, &k[..]);
            prop_assert_eq!(m.value, &v[..]);
        }
    }

    #[test]
    fn fragments_round_trip(total in 0u32..(64 * 1024), index_seed in any::<u32>()) {
        let count = fragment_count(total);
        let index = index_seed % count;
        let span = fragment_span(total, index);
        let value = vec![0xAB; span.len()];
        let h = HeaderFields {
            opcode: Opcode::Put as u8,
            flags: flags::FRAGMENT,
            frag_index: index,
            frag_count: count,
            total_len: total,
            ..HeaderFields::default()
        };
        let mut buf = vec![0u8; 2048];
        let len = encode_message(&mut buf, &h, b"key", &value).unwrap();
        let (m, rest) = Message::parse(&buf[..len]).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert_eq!(m.header.frag_index, index);
        prop_assert_eq!(m.value.len(), span.len());
        // The same fragment claiming another count is refused.
        let mut lie = h;
        lie.frag_count = count + 1;
        let len = encode_message(&mut buf, &lie, b"key", &value).unwrap();
        prop_assert_eq!(Message::parse(&buf[..len]).unwrap_err(), Malformed::BadFragment);
    }

    #[test]
    fn incr_args_and_ttls_round_trip(delta in any::<i64>(), floor in any::<Option<i64>>(), ttl in any::<Option<u32>>()) {
        let args = IncrArgs { delta, floor: floor.filter(|&f| f != i64::MIN) };
        prop_assert_eq!(IncrArgs::decode(&args.encode()), Some(args));
        prop_assert_eq!(decode_count(&encode_count(delta)), Some(delta));
        let mut h = HeaderFields { opcode: Opcode::Incr as u8, ..HeaderFields::default() };
        h.set_ttl_secs(ttl);
        let mut buf = vec![0u8; 256];
        let len = encode_message(&mut buf, &h, b"k", &args.encode()).unwrap();
        let (m, _) = Message::parse(&buf[..len]).unwrap();
        prop_assert_eq!(m.header.ttl_secs(), ttl);
        prop_assert_eq!(IncrArgs::decode(m.value), Some(args));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        for m in Messages::new(&bytes).flatten() {
            prop_assert!(m.len() <= bytes.len());
        }
        let _ = PartitionMap::decode(&bytes);
        let _ = decode_addr(&bytes);
        if let Some(args) = IncrArgs::decode(&bytes) {
            prop_assert_eq!(&args.encode()[..], &bytes[..]);
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        value in prop::collection::vec(any::<u8>(), 0..200),
        flips in prop::collection::vec((0usize..300, any::<u8>()), 1..8),
        cut in 0usize..400,
    ) {
        let h = HeaderFields { opcode: Opcode::Put as u8, ..HeaderFields::default() };
        let mut buf = vec![0u8; 400];
        let len = encode_message(&mut buf, &h, b"some-key", &value).unwrap();
        buf.truncate(len);
        for (at, byte) in flips {
            if at < buf.len() { buf[at] ^= byte; }
        }
        buf.truncate(cut.min(buf.len()));
        let parsed: Vec<_> = Messages::new(&buf).collect();
        prop_assert!(parsed.len() <= 2);
    }
}

#[test]
fn truncation_at_every_byte_is_reported() {
    let h = HeaderFields { opcode: Opcode::Get as u8, ..HeaderFields::default() };
    let mut buf = vec![0u8; 200];
    let len = encode_message(&mut buf, &h, b"key", b"value").unwrap();
    for cut in 0..len {
        let first = Messages::new(&buf[..cut]).next().unwrap();
        assert_eq!(first.unwrap_err(), Malformed::Truncated, "cut at {cut}");
    }
    let mut bad = buf[..len].to_vec();
    bad[0] ^= 1;
    assert_eq!(Messages::new(&bad).next().unwrap().unwrap_err(), Malformed::BadMagic);
    assert_eq!(Messages::new(&[0u8; 3000]).next().unwrap().unwrap_err(), Malformed::Oversized);
}
