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
            Request::Put { .. } => Opcode::Put,
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
            | Request::GetRef { key } => key,
            Request::Scan { after, .. } => after,
            Request::Chunk { hash, .. } | Request::ChunkRange { hash, .. } => hash,
            Request::Ping { .. } | Request::Map { .. } | Request::Stats { .. } => &[],
        }
    }

    /// The value a write carries (empty otherwise).
    pub fn value(&self) -> &[u8] {
        match self {
            Request::Put { value, .. } | Request::Cas { value, .. } => value,
            _ => &[],
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
            Request::Cas { expected_version, .. } => *expected_version,
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
