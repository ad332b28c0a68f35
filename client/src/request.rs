//! What callers ask for and what they get back.

use proto::{Opcode, Status};
use std::net::SocketAddr;

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
        }
    }

    /// The key (empty for requests about a server).
    pub fn key(&self) -> &[u8] {
        match self {
            Request::Get { key }
            | Request::Put { key, .. }
            | Request::Delete { key }
            | Request::Cas { key, .. } => key,
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
            Request::Ping { server } | Request::Map { server } | Request::Stats { server } => {
                Some(*server)
            }
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
    /// `Ok`, `NotFound` (GET, DELETE) or `VersionMismatch` (CAS); other statuses are errors.
    pub status: Status,
    /// GET: the value; MAP: the encoded partition map; STATS: JSON. Empty otherwise.
    pub value: Vec<u8>,
    /// GET, PUT, CAS: the key's version (CAS mismatch: the current one, 0 when absent).
    pub version: u64,
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
