//! Any bytes as a datagram, a partition map, an address and INCR arguments: nothing may
//! panic, and every message (and INCR argument block) that parses re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::{decode_addr, encode_message, IncrArgs, Messages, PartitionMap};

fuzz_target!(|data: &[u8]| {
    let mut offset = 0;
    for message in Messages::new(data) {
        let Ok(m) = message else { break };
        let mut buf = vec![0u8; m.len()];
        let len = encode_message(&mut buf, &m.header, m.key, m.value).expect("fits");
        assert_eq!(&buf[..len], &data[offset..offset + len]);
        offset += len;
    }
    if let Ok(map) = PartitionMap::decode(data) {
        assert_eq!(map.encode(), data);
    }
    let _ = decode_addr(data);
    if let Some(args) = IncrArgs::decode(data) {
        assert_eq!(&args.encode()[..], data);
    }
});
