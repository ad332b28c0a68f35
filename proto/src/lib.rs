//! The cradle wire format, version 1: views over bytes and encoders, nothing else.
//!
//! A datagram is a sequence of *messages*; each message is a fixed 72-byte little-endian
//! header followed by its key and its value bytes (see `docs/PROTOCOL.md`). Requests and
//! replies share the layout. This crate must never do I/O, read a clock, or allocate on the
//! decode/encode path: every accessor of a checked view is infallible, and a view over any
//! byte slice either checks or returns an error, never panics.
#![forbid(unsafe_code)]

pub mod auth;
mod header;
mod incr;
mod map;
mod message;
pub mod replication;
mod scan;

pub use header::{flags, Header, HeaderFields, Opcode, Status, HEADER_BYTES, MAGIC, VERSION};
pub use incr::{decode_count, encode_count, IncrArgs, COUNT_BYTES, INCR_ARGS_BYTES};
pub use map::{
    decode_addr, encode_addr, partition_of, partition_range, MapEntry, PartitionMap, Replica, Role,
    ADDR_BYTES_MAX, REPLICAS_MAX,
};
pub use message::{
    encode_message, fragment_count, fragment_span, BufferTooSmall, Malformed, Message, Messages,
};
pub use scan::{decode_scan_page, BlobReference, ScanPage, SCAN_PAGE_BYTES_MAX};

/// Longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 250;
/// Longest value, in bytes (16 MiB).
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Value bytes carried by each fragment but the last of a fragmented value.
pub const FRAGMENT_BYTES: usize = 1024;
/// Most fragments a value can have.
pub const FRAGMENTS_MAX: u32 = VALUE_BYTES_MAX.div_ceil(FRAGMENT_BYTES) as u32;
/// Largest datagram either side sends (IPv4 path MTU 1500 less IP and UDP headers).
pub const DATAGRAM_BYTES_MAX: usize = 1472;
/// Largest datagram a receiver accepts; anything longer is malformed.
pub const DATAGRAM_BYTES_ACCEPTED: usize = 2048;

// A fragment with the longest key fits one datagram.
const _: () = assert!(HEADER_BYTES + KEY_BYTES_MAX + FRAGMENT_BYTES <= DATAGRAM_BYTES_MAX);

/// The 64-bit hash of a key: xxh3-64 of the key, or of its `{tag}` when it has a non-empty one
/// (the bytes between the first `{` and the first `}` after it), so tagged keys live together.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(hash_tag(key))
}

/// The part of `key` that is hashed: its `{tag}` if it has a non-empty one, else all of it.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// Whether a value of `value_len` bytes with `key_len` key bytes fits one unfragmented message
/// in one datagram.
pub fn fits_unfragmented(key_len: usize, value_len: usize) -> bool {
    HEADER_BYTES + key_len + value_len <= DATAGRAM_BYTES_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_selects_the_hashed_part() {
        assert_eq!(hash_tag(b"{user1}.cart"), b"user1");
        assert_eq!(hash_tag(b"a{b}c{d}"), b"b");
        assert_eq!(hash_tag(b"{}x"), b"{}x");
        assert_eq!(hash_tag(b"{open"), b"{open");
        assert_eq!(hash_tag(b""), b"");
        assert_eq!(key_hash(b"{u}.a"), key_hash(b"{u}.b"));
        assert_ne!(key_hash(b"u.a"), key_hash(b"u.b"));
    }

    #[test]
    fn fragment_limits_are_consistent() {
        assert_eq!(FRAGMENTS_MAX, 16384);
        assert!(fits_unfragmented(KEY_BYTES_MAX, 0));
    }
}
