//! Encoding one request message into its own buffer.

use proto::{encode_message, HeaderFields, HEADER_BYTES};

/// `header`, `key` and `value` as one message.
pub(crate) fn message(header: &HeaderFields, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut buf = vec![0; HEADER_BYTES + key.len() + value.len()];
    let len = encode_message(&mut buf, header, key, value).expect("sized for the message");
    debug_assert_eq!(len, buf.len());
    buf
}
