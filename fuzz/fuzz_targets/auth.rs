//! Any bytes as a sealed client datagram and as a key file: nothing may panic, an envelope
//! that parses seals again (same key id, time and messages) into the same layout, and a key
//! file that parses names what it says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::auth::{parse_key_file, seal, ClientSecret, Sealed, AUTH_OVERHEAD_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Some(sealed) = Sealed::parse(data) {
        let secret = ClientSecret::from_bytes(&[7; 32]);
        let mut again = Vec::new();
        seal(sealed.key_id(), &secret, sealed.sent_at_ns(), sealed.messages(), &mut again);
        assert_eq!(again.len(), data.len());
        assert_eq!(again[..again.len() - 16], data[..data.len() - 16]);
        let view = Sealed::parse(&again).expect("a fresh seal parses");
        assert!(view.verify(&secret));
        assert!(data.len() >= AUTH_OVERHEAD_BYTES);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(entries) = parse_key_file(text) {
            for entry in entries {
                assert!(!entry.name.is_empty() && !entry.name.contains(char::is_whitespace));
            }
        }
    }
});
