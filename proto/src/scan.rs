//! The SCAN reply payload: a page of keys, each as a little-endian u16 length and its bytes.

use crate::Malformed;

/// Most payload bytes of one SCAN page (one datagram with the header and a cursor key).
pub const SCAN_PAGE_BYTES_MAX: usize = 1100;

/// Builds a page of keys: append with `push` until it refuses.
#[derive(Debug, Default)]
pub struct ScanPage {
    bytes: Vec<u8>,
}

impl ScanPage {
    /// An empty page.
    pub fn new() -> ScanPage {
        ScanPage { bytes: Vec::with_capacity(SCAN_PAGE_BYTES_MAX) }
    }

    /// Adds `key` if it fits; false when the page is full.
    pub fn push(&mut self, key: &[u8]) -> bool {
        if self.bytes.len() + 2 + key.len() > SCAN_PAGE_BYTES_MAX {
            return false;
        }
        self.bytes.extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.bytes.extend_from_slice(key);
        true
    }

    /// The encoded page.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The keys of a page, checked.
pub fn decode_scan_page(mut bytes: &[u8]) -> Result<Vec<&[u8]>, Malformed> {
    let mut keys = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 2 {
            return Err(Malformed::Truncated);
        }
        let len = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
        if len > crate::KEY_BYTES_MAX || bytes.len() - 2 < len {
            return Err(Malformed::Truncated);
        }
        keys.push(&bytes[2..2 + len]);
        bytes = &bytes[2 + len..];
    }
    Ok(keys)
}

/// A big value's blob reference, as a REF_ONLY GET returns it: the value's length, the chunk
/// size it was cut in, and each chunk's BLAKE3 hash in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobReference {
    /// Length of the whole value.
    pub value_len: u64,
    /// Every chunk but the last holds this many bytes.
    pub chunk_bytes: u32,
    /// The chunks' hashes, in value order.
    pub hashes: Vec<[u8; 32]>,
}

impl BlobReference {
    /// `value_len u64, chunk_bytes u32`, then the hashes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + 32 * self.hashes.len());
        out.extend_from_slice(&self.value_len.to_le_bytes());
        out.extend_from_slice(&self.chunk_bytes.to_le_bytes());
        for hash in &self.hashes {
            out.extend_from_slice(hash);
        }
        out
    }

    /// Reads and checks a reference: the hash count must match the length and chunk size.
    pub fn decode(bytes: &[u8]) -> Result<BlobReference, Malformed> {
        if bytes.len() < 12 || !(bytes.len() - 12).is_multiple_of(32) {
            return Err(Malformed::Truncated);
        }
        let value_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let chunk_bytes = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let hashes: Vec<[u8; 32]> =
            bytes[12..].chunks_exact(32).map(|h| h.try_into().expect("32 bytes")).collect();
        if chunk_bytes == 0 || value_len.div_ceil(u64::from(chunk_bytes)) != hashes.len() as u64 {
            return Err(Malformed::BadFragment);
        }
        Ok(BlobReference { value_len, chunk_bytes, hashes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_are_checked() {
        let r = BlobReference { value_len: 130_000, chunk_bytes: 65_536, hashes: vec![[7; 32]; 2] };
        assert_eq!(BlobReference::decode(&r.encode()).unwrap(), r);
        let short = BlobReference { hashes: vec![[7; 32]], ..r.clone() };
        assert_eq!(BlobReference::decode(&short.encode()).unwrap_err(), Malformed::BadFragment);
        assert!(BlobReference::decode(&r.encode()[..40]).is_err());
    }

    #[test]
    fn pages_round_trip_and_stop_when_full() {
        let mut page = ScanPage::new();
        let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("key-{i:04}").into_bytes()).collect();
        let taken = keys.iter().take_while(|k| page.push(k)).count();
        assert_eq!(taken, SCAN_PAGE_BYTES_MAX / 10);
        let decoded = decode_scan_page(page.as_bytes()).unwrap();
        assert_eq!(decoded.len(), taken);
        assert_eq!(decoded[3], b"key-0003");
        assert!(decode_scan_page(&page.as_bytes()[..5]).is_err());
        assert!(decode_scan_page(&[]).unwrap().is_empty());
    }
}
