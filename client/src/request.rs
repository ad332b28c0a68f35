//! What callers ask for and what they get back.

use proto::{flags, BlobReference, Opcode, Status};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Names a submitted request in its completion. Unique per `ClientCore`; not the wire tracking
/// id (a restarted read gets a new tracking id but keeps its `RequestId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read a key's value and version.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Write a value unconditionally.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value, up to `proto::VALUE_BYTES_MAX` (larger ones are answered TOO_LARGE).
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Write a value if the key's version is `expected_version` (0: only if absent).
    Cas {
        /// The key.
        key: Vec<u8>,
        /// The version the key must have.
        expected_version: u64,
        /// The new value.
        value: Vec<u8>,
    },
    /// `Put` with a time to live: the key reads as absent `ttl_secs` seconds after the write
    /// is applied (`Some(0)` or `None`: never).
    PutWith {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Seconds the key lives (`None`: no expiry).
        ttl_secs: Option<u32>,
    },
    /// `Cas` with a time to live for the new value and, with `return_value`, the key's
    /// current value in a mismatch's answer (`Outcome::Mismatch::current_value`) when it fits
    /// one datagram, so a retry loop needs no GET.
    CasWith {
        /// The key.
        key: Vec<u8>,
        /// The version the key must have (0: absent).
        expected_version: u64,
        /// The new value.
        value: Vec<u8>,
        /// Seconds the new value lives (`None`: no expiry).
        ttl_secs: Option<u32>,
        /// Ask for the current value on a mismatch.
        return_value: bool,
    },
    /// Add `by` (negative: subtract) to the decimal counter at `key` (absent: 0), unless the
    /// result would be below `floor`: `Outcome::Done` with the new count (`Reply::count`),
    /// or `Outcome::BelowFloor` with the current one. Exactly once, like every write.
    Incr {
        /// The key.
        key: Vec<u8>,
        /// The amount added.
        by: i64,
        /// The lowest count allowed (`None`: none).
        floor: Option<i64>,
        /// `Some`: the key's new expiry, in seconds from now (0: none); `None`: keep it.
        ttl_secs: Option<u32>,
    },
    /// Give the key's live value a new expiry, in seconds from now (`None` or 0: none);
    /// `Outcome::NotFound` when the key is absent.
    Touch {
        /// The key.
        key: Vec<u8>,
        /// Seconds the key lives from now.
        ttl_secs: Option<u32>,
    },
    /// Liveness check of one server.
    Ping {
        /// The server asked.
        server: SocketAddr,
    },
    /// The partition map as one server knows it (`Reply::value` is its encoding).
    Map {
        /// The server asked.
        server: SocketAddr,
    },
    /// One server's counters (`Reply::value` is a JSON object).
    Stats {
        /// The server asked.
        server: SocketAddr,
    },
    /// A page of partition `partition`'s keys after `after` (empty: from the first), routed
    /// to the partition's owner by the map. `Reply::value` is the page (`proto::decode_scan_page`),
    /// `Reply::version` 1 when more keys may follow, 0 on the last page.
    Scan {
        /// The partition listed.
        partition: u32,
        /// The last key already seen (empty to start).
        after: Vec<u8>,
    },
    /// A GET asking for the blob reference of a big value (REF_ONLY): `Reply::reference` tells
    /// whether `Reply::value` is an encoded `BlobReference` or the value itself.
    GetRef {
        /// The key.
        key: Vec<u8>,
    },
    /// The bytes of one blob chunk, by its BLAKE3 hash, from the server that gave the
    /// reference (NOT_FOUND when no key references it any more).
    Chunk {
        /// The server asked (the one that returned the reference).
        server: SocketAddr,
        /// The chunk's hash.
        hash: [u8; 32],
    },
    /// Bytes `[offset, offset + len)` of one blob chunk (clipped to its end), pulled with RANGE
    /// requests for just the fragments covering them. The range must start inside the chunk:
    /// the server sends nothing for fragments past its end, and the request times out.
    ChunkRange {
        /// The server asked (the one that returned the reference).
        server: SocketAddr,
        /// The chunk's hash.
        hash: [u8; 32],
        /// First byte wanted.
        offset: u32,
        /// Bytes wanted.
        len: u32,
    },
}

impl Request {
    /// The wire opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Get { .. } => Opcode::Get,
            Request::Put { .. } | Request::PutWith { .. } => Opcode::Put,
            Request::CasWith { .. } => Opcode::Cas,
            Request::Incr { .. } => Opcode::Incr,
            Request::Touch { .. } => Opcode::Touch,
            Request::Delete { .. } => Opcode::Delete,
            Request::Cas { .. } => Opcode::Cas,
            Request::Ping { .. } => Opcode::Ping,
            Request::Map { .. } => Opcode::Map,
            Request::Stats { .. } => Opcode::Stats,
            Request::Scan { .. } => Opcode::Scan,
            Request::GetRef { .. } => Opcode::Get,
            Request::Chunk { .. } | Request::ChunkRange { .. } => Opcode::Chunk,
        }
    }

    /// The key (empty for requests about a server).
    pub fn key(&self) -> &[u8] {
        match self {
            Request::Get { key }
            | Request::Put { key, .. }
            | Request::Delete { key }
            | Request::Cas { key, .. }
            | Request::PutWith { key, .. }
            | Request::CasWith { key, .. }
            | Request::Incr { key, .. }
            | Request::Touch { key, .. }
            | Request::GetRef { key } => key,
            Request::Scan { after, .. } => after,
            Request::Chunk { hash, .. } | Request::ChunkRange { hash, .. } => hash,
            Request::Ping { .. } | Request::Map { .. } | Request::Stats { .. } => &[],
        }
    }

    /// The value a write carries (empty otherwise; an INCR's arguments are not a value).
    pub fn value(&self) -> &[u8] {
        match self {
            Request::Put { value, .. }
            | Request::Cas { value, .. }
            | Request::PutWith { value, .. }
            | Request::CasWith { value, .. } => value,
            _ => &[],
        }
    }

    /// The value bytes on the wire: the value, or an INCR's encoded arguments.
    pub(crate) fn wire_value(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Request::Incr { by, floor, .. } => std::borrow::Cow::Owned(
                proto::IncrArgs { delta: *by, floor: *floor }.encode().to_vec(),
            ),
            other => std::borrow::Cow::Borrowed(other.value()),
        }
    }

    /// The time to live the request gives its key (EXPIRES), if any.
    pub(crate) fn ttl_secs(&self) -> Option<u32> {
        match self {
            Request::PutWith { ttl_secs, .. }
            | Request::CasWith { ttl_secs, .. }
            | Request::Incr { ttl_secs, .. } => *ttl_secs,
            // A TOUCH always says what the expiry becomes.
            Request::Touch { ttl_secs, .. } => Some(ttl_secs.unwrap_or(0)),
            _ => None,
        }
    }

    /// The server a request about a server is aimed at; `None` for keyed requests, which are
    /// routed by the partition map.
    pub fn server(&self) -> Option<SocketAddr> {
        match self {
            Request::Ping { server }
            | Request::Map { server }
            | Request::Stats { server }
            | Request::Chunk { server, .. }
            | Request::ChunkRange { server, .. } => Some(*server),
            _ => None,
        }
    }

    /// The partition a SCAN lists (`None` for other requests).
    pub(crate) fn scan_partition(&self) -> Option<u32> {
        match self {
            Request::Scan { partition, .. } => Some(*partition),
            _ => None,
        }
    }

    /// Flags every message of the request carries (REF_ONLY on a reference GET, RANGE pulls
    /// included).
    pub(crate) fn base_flags(&self) -> u16 {
        match self {
            Request::GetRef { .. } => flags::REF_ONLY,
            Request::CasWith { return_value: true, .. } => flags::RETURN_VALUE,
            _ => 0,
        }
    }

    /// The byte range of a ranged chunk read.
    pub(crate) fn byte_range(&self) -> Option<(u32, u32)> {
        match self {
            Request::ChunkRange { offset, len, .. } => Some((*offset, *len)),
            _ => None,
        }
    }

    /// The version field of the request header (CAS: the expected version).
    pub(crate) fn header_version(&self) -> u64 {
        match self {
            Request::Cas { expected_version, .. } | Request::CasWith { expected_version, .. } => {
                *expected_version
            }
            _ => 0,
        }
    }
}

/// A server's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// `Ok`, `NotFound` (GET, DELETE, CHUNK) or `VersionMismatch` (CAS); other statuses are
    /// errors.
    pub status: Status,
    /// GET: the value; MAP: the encoded partition map; STATS: JSON; SCAN: a page of keys;
    /// CHUNK: the chunk's bytes; a reference GET: the reference or the value. Empty otherwise.
    pub value: Vec<u8>,
    /// GET, PUT, CAS: the key's version (CAS mismatch: the current one, 0 when absent). SCAN: 1
    /// when more keys may follow.
    pub version: u64,
    /// A reference GET answered with a blob reference (the reply carried REF_ONLY).
    pub reference: bool,
    /// A CAS mismatch carried the key's current value in `value` (the reply set
    /// RETURN_VALUE: the request asked, and the value fit one datagram).
    pub current_value: bool,
    /// The server the request was last sent to: the one that answered it.
    pub server: SocketAddr,
}

/// Where a value is, as a reference GET tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueLocation {
    /// A value kept in the log came back whole.
    Inline(Value),
    /// A blob-tier value: its chunks are fetched by hash from `server`.
    Blob {
        /// The value's length, chunk size and chunk hashes.
        reference: BlobReference,
        /// The key's version.
        version: u64,
        /// The server holding the chunks (the one that answered).
        server: SocketAddr,
    },
}

/// A stored value and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    /// The value bytes.
    pub bytes: Vec<u8>,
    /// The version the write that stored them got.
    pub version: u64,
}

/// How a compare-and-swap ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value was written and got this version.
    Swapped {
        /// The new version.
        version: u64,
    },
    /// The key's version was not the expected one; nothing was written.
    Mismatch {
        /// The key's version now (0: the key is absent).
        current_version: u64,
    },
}

impl Reply {
    /// An INCR's count: the new one (`Outcome::Done`) or the current one (BELOW_FLOOR).
    pub fn count(&self) -> Option<i64> {
        proto::decode_count(&self.value)
    }
}

/// How an INCR ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncrOutcome {
    /// Counted: the new count.
    Counted {
        /// The count after the INCR.
        count: i64,
    },
    /// Refused: the result would have been below the floor; nothing was written.
    BelowFloor {
        /// The count now.
        count: i64,
    },
}

/// Per-request settings beyond the request itself. `Default`: no deadline (the retry budget
/// and `ClientConfig::resend_window` alone bound the request).
///
/// ```
/// use client::RequestOptions;
/// use std::time::{Duration, Instant};
///
/// let options = RequestOptions::within(Instant::now(), Duration::from_millis(5));
/// assert!(options.deadline.is_some());
/// assert_eq!(RequestOptions::default().deadline, None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// When the caller stops caring: at this instant a request still in flight completes
    /// with `Error::DeadlineExceeded` and nothing more is sent for it. A write may have been
    /// applied all the same (its datagrams may already be on their way). A deadline at or
    /// before the submission fails it at once, unsent. `None`: no deadline.
    pub deadline: Option<Instant>,
}

impl RequestOptions {
    /// A deadline `budget` after `now`.
    pub fn within(now: Instant, budget: Duration) -> Self {
        RequestOptions { deadline: Some(now + budget) }
    }
}
