//! The record format of an endpoint log. Little-endian, 4-byte aligned:
//!
//! ```text
//! 0   u32  checksum: the low 32 bits of xxh3-64 of bytes 4..len
//! 4   u32  len: header + key + payload (padding not counted)
//! 8   u8   kind: 1 put, 2 tombstone, 3 blob reference, 4 segment marker, 5 note, 6 floor,
//!          7 drop
//! 9   u8   flags: bit 0 STAMPED (a request stamp follows the header), bit 1 META (item
//!          metadata follows the stamp); other bits 0
//! 10  u16  key length
//! 12  u64  LSN (= the version the write got)
//! 20  u32  endpoint: whose record it is (its slot on the core; `NO_ENDPOINT` for markers)
//! 24  u32  header check: the low 32 bits of xxh3-64 of bytes 4..24, so that a record whose
//!          payload is damaged still tells its extent and its owner (recovery then
//!          quarantines that endpoint alone)
//! 28  ..   if STAMPED: client id u64, tracking id u64, fingerprint u64, applied at u32
//!          (wall-clock seconds, rounded up); then if META: item flags u32, reserved u32 (0),
//!          expires at u64 (wall-clock ns, 0 never); then key, then payload (value, blob
//!          reference, or marker)
//! ```
//!
//! A header of zeros ends a segment (segments are created zero-filled). The header and the
//! stamp are kept short because they are most of a small record's cost: a 16-byte key and a
//! 100-byte value take 172 bytes (1.48x), where 64-bit checksums, a nanosecond time and
//! 8-byte alignment took 184 (1.59x). A 32-bit checksum is what LevelDB, RocksDB and Kafka
//! keep per record; a stamp's time only decides whether its completion record is still
//! needed after a restart, and rounding it up keeps one a second longer at most.

use xxhash_rust::xxh3::xxh3_64;

/// Bytes of the fixed header.
pub(crate) const HEADER_BYTES: usize = 28;
/// The endpoint of a record that belongs to none (a segment marker).
pub(crate) const NO_ENDPOINT: u32 = u32::MAX;
/// Bytes of a request stamp.
pub(crate) const STAMP_BYTES: usize = 28;
/// Bytes of item metadata.
pub(crate) const META_BYTES: usize = 16;
/// Flag: a stamp follows the header.
const STAMPED: u8 = 1;
/// Flag: item metadata follows the header (and the stamp, if any).
const META: u8 = 2;

/// What a value carries besides its bytes: opaque flags and an expiry time. Kept in the
/// value's record (only when not both zero), so it survives restarts and compaction copies
/// it. Protocol-neutral: the memcached door maps its flags and exptime onto it, and cradle's
/// own protocol can give keys a time to live through `expires_at_ns` alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Opaque to the store (memcached's client flags).
    pub flags: u32,
    /// Wall-clock nanoseconds since the Unix epoch from which the value reads as absent;
    /// 0 never expires.
    pub expires_at_ns: u64,
}

impl Meta {
    /// No flags, no expiry: the record carries no metadata.
    pub const NONE: Meta = Meta { flags: 0, expires_at_ns: 0 };

    /// Whether the value has expired at wall-clock time `now_ns`.
    pub fn expired(&self, now_ns: u64) -> bool {
        self.expires_at_ns != 0 && self.expires_at_ns <= now_ns
    }

    fn is_none(&self) -> bool {
        *self == Meta::NONE
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.expires_at_ns.to_le_bytes());
    }

    /// `None` when the reserved field is not zero.
    fn decode(bytes: &[u8]) -> Option<Meta> {
        let flags = u32::from_le_bytes(bytes[0..4].try_into().expect("4"));
        let reserved = u32::from_le_bytes(bytes[4..8].try_into().expect("4"));
        let expires_at_ns = u64::from_le_bytes(bytes[8..16].try_into().expect("8"));
        (reserved == 0).then_some(Meta { flags, expires_at_ns })
    }
}

/// Who asked for a write and when: kept in the write's record so that the write's completion
/// record (exactly-once answers to resends) is rebuilt on replay, and travels with the write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// The requesting client.
    pub client_id: u64,
    /// The client's tracking id for the request.
    pub tracking_id: u64,
    /// A digest of the request (opcode, key, value, expected version), so a resend that
    /// reuses the id for another request is told apart.
    pub fingerprint: u64,
    /// Wall-clock nanoseconds (since the Unix epoch) when the write was applied. A record
    /// keeps it in whole seconds, rounded up ([`Stamp::as_recorded`]).
    pub at_ns: u64,
}

/// Nanoseconds a second.
const NS_PER_S: u64 = 1_000_000_000;

impl Stamp {
    /// The stamp as its record keeps it: its time rounded up to a whole second (up to the
    /// year 2106), so a completion record rebuilt from it lives at least as long.
    pub fn as_recorded(&self) -> Stamp {
        Stamp { at_ns: u64::from(Self::seconds(self.at_ns)) * NS_PER_S, ..*self }
    }

    fn seconds(at_ns: u64) -> u32 {
        u32::try_from(at_ns.div_ceil(NS_PER_S)).unwrap_or(u32::MAX)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for field in [self.client_id, self.tracking_id, self.fingerprint] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&Self::seconds(self.at_ns).to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Stamp {
        let field = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8"));
        let seconds = u32::from_le_bytes(bytes[24..28].try_into().expect("4"));
        Stamp {
            client_id: field(0),
            tracking_id: field(1),
            fingerprint: field(2),
            at_ns: u64::from(seconds) * NS_PER_S,
        }
    }
}
/// Records start at multiples of this.
pub(crate) const ALIGN: usize = 4;

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A value stored inline.
    Put = 1,
    /// The key was deleted.
    Tombstone = 2,
    /// The payload is a blob reference.
    Blob = 3,
    /// The payload is the number of the oldest segment that must exist (u64).
    Marker = 4,
    /// A write of the key that changed nothing: the payload is how it was answered (its status,
    /// u16, then the version, u64), so its completion record comes back on replay and
    /// reaches the backups like any write's (see [`crate::Store::note`]).
    Note = 5,
    /// The endpoint's LSN was at least this record's (cleaning dropped the record that held
    /// it, or a replica raised it without a record): versions never go back on replay.
    Floor = 6,
    /// The endpoint was emptied here (`Store::clear`): replay forgets its earlier records.
    Drop = 7,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Put),
            2 => Some(Kind::Tombstone),
            3 => Some(Kind::Blob),
            4 => Some(Kind::Marker),
            5 => Some(Kind::Note),
            6 => Some(Kind::Floor),
            7 => Some(Kind::Drop),
            _ => None,
        }
    }
}

/// A record read back and checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record<'a> {
    pub(crate) kind: Kind,
    pub(crate) lsn: u64,
    /// Whose record it is (`NO_ENDPOINT`: a marker's).
    pub(crate) endpoint: u32,
    /// The request stamp's bytes (empty when unstamped; read with `stamp()`, off the read
    /// path: only replay needs it).
    stamp_bytes: &'a [u8],
    /// The value's metadata (`Meta::NONE` when the record has none).
    pub(crate) meta: Meta,
    pub(crate) key: &'a [u8],
    pub(crate) payload: &'a [u8],
    /// Bytes the record takes in the segment, padding included.
    pub(crate) span: usize,
}

impl Record<'_> {
    /// Who asked for this write, if it is stamped.
    pub(crate) fn stamp(&self) -> Option<Stamp> {
        (!self.stamp_bytes.is_empty()).then(|| Stamp::decode(self.stamp_bytes))
    }
}

/// Why bytes are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bad {
    /// Zeros: the written part of the segment ends here.
    End,
    /// The header or the record runs past the end of the segment.
    Truncated,
    /// The length, kind or key length make no sense.
    Malformed,
    /// The checksum does not match.
    Checksum,
}

impl Bad {
    /// For reports.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Bad::End => "end of log",
            Bad::Truncated => "record runs past the end of the segment",
            Bad::Malformed => "malformed record header",
            Bad::Checksum => "checksum mismatch",
        }
    }
}

/// Bytes a record with this key and payload takes, padding included.
pub(crate) fn span_of(stamped: bool, meta: &Meta, key_len: usize, payload_len: usize) -> usize {
    (extras_len(stamped, meta) + key_len + payload_len).next_multiple_of(ALIGN)
}

/// Bytes of the header, the stamp and the metadata.
fn extras_len(stamped: bool, meta: &Meta) -> usize {
    let stamp = if stamped { STAMP_BYTES } else { 0 };
    let meta = if meta.is_none() { 0 } else { META_BYTES };
    HEADER_BYTES + stamp + meta
}

/// Appends one record (padded) to `out`. Asserts the result reads back.
#[allow(clippy::too_many_arguments)] // (a record's fields, in the order they are laid out)
pub(crate) fn encode(
    out: &mut Vec<u8>,
    kind: Kind,
    endpoint: u32,
    lsn: u64,
    stamp: Option<&Stamp>,
    meta: &Meta,
    key: &[u8],
    payload: &[u8],
) {
    let start = out.len();
    let span = span_of(stamp.is_some(), meta, key.len(), payload.len());
    let len = extras_len(stamp.is_some(), meta) + key.len() + payload.len();
    assert!(key.len() <= u16::MAX as usize, "key length checked by the store");
    assert!(len <= u32::MAX as usize, "record length checked by the store");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    let flags = if stamp.is_some() { STAMPED } else { 0 } | if meta.is_none() { 0 } else { META };
    out.extend_from_slice(&[kind as u8, flags]);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&endpoint.to_le_bytes());
    let check = checksum(&out[start + 4..start + 24]);
    out.extend_from_slice(&check.to_le_bytes());
    if let Some(stamp) = stamp {
        stamp.encode(out);
    }
    if !meta.is_none() {
        meta.encode(out);
    }
    out.extend_from_slice(key);
    out.extend_from_slice(payload);
    let sum = checksum(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&sum.to_le_bytes());
    out.resize(start + span, 0);
    // Paired with the check on every read: a record that cannot be read back is a bug here.
    let back = decode(&out[start..]).expect("an encoded record decodes");
    assert_eq!(back.span, out.len() - start);
    let recorded = stamp.map(Stamp::as_recorded);
    assert_eq!((back.lsn, back.stamp(), &back.meta), (lsn, recorded, meta));
    assert_eq!(back.endpoint, endpoint);
}

/// The record's checksum and its header check: the low 32 bits of xxh3-64.
fn checksum(bytes: &[u8]) -> u32 {
    xxh3_64(bytes) as u32
}

/// The owner and span of the record at the start of `bytes` when its header is sound (its
/// header check matches and it fits in `bytes`), whatever its payload: what recovery needs
/// to quarantine one endpoint for a damaged record and read on past it.
pub(crate) fn owner(bytes: &[u8]) -> Option<(u32, usize)> {
    let header = bytes.get(..HEADER_BYTES)?;
    let check = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes"));
    if checksum(&header[4..24]) != check {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let endpoint = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes"));
    (len >= HEADER_BYTES && len <= bytes.len()).then_some((endpoint, len.next_multiple_of(ALIGN)))
}

/// The record at the start of `bytes` (which may run on to the end of the segment).
pub(crate) fn decode(bytes: &[u8]) -> Result<Record<'_>, Bad> {
    parse(bytes, true)
}

/// `decode` without the checksums, for a record this process has already decoded whole at
/// the same place (recovery's second look at a replayed record): a malformed one still
/// fails to parse, a damaged one is not noticed.
pub(crate) fn decode_unverified(bytes: &[u8]) -> Result<Record<'_>, Bad> {
    parse(bytes, false)
}

fn parse(bytes: &[u8], verify: bool) -> Result<Record<'_>, Bad> {
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return if bytes.iter().all(|&b| b == 0) { Err(Bad::End) } else { Err(Bad::Truncated) };
    };
    let sum = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    if sum == 0 && len == 0 {
        return Err(Bad::End);
    }
    let key_len = u16::from_le_bytes(header[10..12].try_into().expect("2 bytes")) as usize;
    let kind = Kind::from_byte(header[8]);
    let flags = header[9];
    let stamp_len = if flags & STAMPED != 0 { STAMP_BYTES } else { 0 };
    let meta_len = if flags & META != 0 { META_BYTES } else { 0 };
    let meta_at = HEADER_BYTES + stamp_len;
    let key_at = meta_at + meta_len;
    let check = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes"));
    let malformed = len < key_at + key_len || flags & !(STAMPED | META) != 0 || kind.is_none();
    if malformed || verify && checksum(&header[4..24]) != check {
        return Err(Bad::Malformed);
    }
    let Some(body) = bytes.get(..len) else {
        return Err(Bad::Truncated);
    };
    if verify && checksum(&body[4..]) != sum {
        return Err(Bad::Checksum);
    }
    let meta = match meta_len {
        0 => Meta::NONE,
        _ => Meta::decode(&body[meta_at..key_at]).ok_or(Bad::Malformed)?,
    };
    Ok(Record {
        kind: kind.expect("checked above"),
        lsn: u64::from_le_bytes(header[12..20].try_into().expect("8 bytes")),
        endpoint: u32::from_le_bytes(header[20..24].try_into().expect("4 bytes")),
        stamp_bytes: &body[HEADER_BYTES..meta_at],
        meta,
        key: &body[key_at..key_at + key_len],
        payload: &body[key_at + key_len..],
        span: len.next_multiple_of(ALIGN),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flip_is_caught() {
        let mut out = Vec::new();
        encode(&mut out, Kind::Put, 3, 7, None, &Meta::NONE, b"key", b"value");
        assert_eq!(out.len() % ALIGN, 0);
        let r = decode(&out).unwrap();
        assert_eq!((r.kind, r.lsn, r.key, r.payload), (Kind::Put, 7, &b"key"[..], &b"value"[..]));
        assert_eq!(r.stamp(), None);
        let len = HEADER_BYTES + 8;
        for bit in 0..len * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad).is_err(), "flip of bit {bit} went unnoticed");
        }
        assert_eq!(r.endpoint, 3);
        assert_eq!(decode(&[0; 40]).unwrap_err(), Bad::End);
        assert_eq!(decode(&out[..20]).unwrap_err(), Bad::Truncated);
        assert_eq!(decode(&out[..HEADER_BYTES + 4]).unwrap_err(), Bad::Truncated);
    }

    #[test]
    fn a_damaged_payload_still_names_its_owner_and_extent_and_a_damaged_header_does_not() {
        let mut out = Vec::new();
        encode(&mut out, Kind::Put, 41, 7, None, &Meta::NONE, b"key", b"value");
        encode(&mut out, Kind::Put, 42, 8, None, &Meta::NONE, b"key", b"value");
        let first = span_of(false, &Meta::NONE, 3, 5);
        assert_eq!(owner(&out), Some((41, first)));
        let mut payload = out.clone();
        payload[HEADER_BYTES + 4] ^= 1;
        assert_eq!(decode(&payload).unwrap_err(), Bad::Checksum);
        assert_eq!(owner(&payload), Some((41, first)));
        assert_eq!(decode(&payload[first..]).unwrap().endpoint, 42);
        for byte in 4..HEADER_BYTES {
            let mut header = out.clone();
            header[byte] ^= 1;
            assert!(decode(&header).is_err());
            assert_eq!(owner(&header), None, "a flip in header byte {byte} went unnoticed");
        }
    }

    #[test]
    fn a_stamp_round_trips_and_is_checksummed() {
        let stamp = Stamp { client_id: 1, tracking_id: 2, fingerprint: 3, at_ns: 4 * NS_PER_S };
        let mut out = Vec::new();
        encode(&mut out, Kind::Tombstone, 0, 9, Some(&stamp), &Meta::NONE, b"k", b"");
        assert_eq!(out.len(), span_of(true, &Meta::NONE, 1, 0));
        assert_eq!(out.len(), (HEADER_BYTES + STAMP_BYTES + 1).next_multiple_of(ALIGN));
        let r = decode(&out).unwrap();
        assert_eq!((r.kind, r.lsn, r.stamp(), r.key), (Kind::Tombstone, 9, Some(stamp), &b"k"[..]));
        for bit in 0..(HEADER_BYTES + STAMP_BYTES + 1) * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad).is_err(), "flip of bit {bit} went unnoticed");
        }
        // An unknown flag bit is malformed, not a record.
        let mut unknown = out.clone();
        unknown[9] |= 4;
        let check = checksum(&unknown[4..24]);
        unknown[24..28].copy_from_slice(&check.to_le_bytes());
        assert_eq!(decode(&unknown).unwrap_err(), Bad::Malformed);
    }

    #[test]
    fn a_stamps_time_is_kept_in_seconds_rounded_up() {
        let at = |at_ns| Stamp { client_id: 1, tracking_id: 2, fingerprint: 3, at_ns };
        for (applied, recorded) in [
            (0, 0),
            (1, NS_PER_S),
            (4 * NS_PER_S, 4 * NS_PER_S),
            (4 * NS_PER_S + 1, 5 * NS_PER_S),
            (u64::MAX, u64::from(u32::MAX) * NS_PER_S),
        ] {
            let mut out = Vec::new();
            encode(&mut out, Kind::Put, 0, 9, Some(&at(applied)), &Meta::NONE, b"k", b"v");
            assert_eq!(decode(&out).unwrap().stamp(), Some(at(recorded)), "applied at {applied}");
            assert_eq!(at(applied).as_recorded(), at(recorded));
        }
    }

    #[test]
    fn metadata_round_trips_with_and_without_a_stamp_and_is_checksummed() {
        let stamp = Stamp { client_id: 1, tracking_id: 2, fingerprint: 3, at_ns: 4 * NS_PER_S };
        let meta = Meta { flags: 0xdead_beef, expires_at_ns: 1_700_000_000_000_000_000 };
        for stamp in [None, Some(&stamp)] {
            let mut out = Vec::new();
            encode(&mut out, Kind::Put, 1, 5, stamp, &meta, b"key", b"value");
            assert_eq!(out.len(), span_of(stamp.is_some(), &meta, 3, 5));
            let r = decode(&out).unwrap();
            assert_eq!(
                (r.meta, r.stamp().as_ref(), r.key, r.payload),
                (meta, stamp, &b"key"[..], &b"value"[..])
            );
            let len = extras_len(stamp.is_some(), &meta) + 8;
            for bit in 0..len * 8 {
                let mut bad = out.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(decode(&bad).is_err(), "flip of bit {bit} went unnoticed");
            }
        }
        // Metadata of zeros is not written at all: a record without it reads as Meta::NONE.
        let mut plain = Vec::new();
        encode(&mut plain, Kind::Put, 1, 5, None, &Meta::NONE, b"key", b"value");
        assert_eq!(plain[9], 0);
        assert_eq!(plain.len(), span_of(false, &Meta::NONE, 3, 5));
    }

    #[test]
    fn expiry_is_inclusive_and_zero_never_expires() {
        let meta = Meta { flags: 0, expires_at_ns: 100 };
        assert!(!meta.expired(99));
        assert!(meta.expired(100));
        assert!(!Meta::NONE.expired(u64::MAX));
    }
}
