//! The cradle client: sends requests to cradle servers over UDP and turns their replies into
//! typed results.
//!
//! It routes each key to the partition owner named by the server's partition map, resends lost
//! requests with the same tracking id (so servers apply a write exactly once) on an adaptive
//! RFC 6298 timer with a bounded retry budget, splits large values into fragment windows and
//! pulls large replies with RANGE requests, and answers address-validation challenges. The
//! protocol state machine, `ClientCore`, is sans-IO: it never reads the clock, never touches a
//! socket and never draws unseeded randomness. Three drivers run it:
//!
//! - `Client`: on the caller's thread; progress happens inside its calls (`poll` never
//!   blocks, `wait` and the convenience operations do).
//! - `SharedClient`: on a driver thread of its own, shared by any number of threads; requests
//!   are sent by `submit` on the caller's thread and resent by the driver whether or not
//!   anyone waits.
//! - `AsyncClient` (cargo feature `tokio`): futures over a `SharedClient`.
//!
//! Every request ends in one `Outcome`: `Done`, `NotFound`, `Mismatch` (the server's answers)
//! or `Failed(Error)` (no answer). The convenience operations return each operation's own
//! result: `get` → `Option<Value>`, `put` → the new version, `delete` → whether the key
//! existed, `cas` → `CasOutcome`, with `Error` only for failures. Defaults are in
//! `ClientConfig`'s documentation; the patterns have examples: get/put on `Client`, a
//! pipelined multi-get on `Client::start_get_many` and `SharedClient::start_get_many`, a
//! counter with a floor on `Client::incr` (and the CAS loop it replaces on `Client::cas`), a
//! CAS retry loop that needs no GET on `Client::cas_or_current`, a TTL on
//! `Client::put_with_ttl`, and this read-modify-write loop:
//!
//! ```no_run
//! use client::{CasOutcome, Client, ClientConfig};
//!
//! let mut client = Client::connect(ClientConfig::new(vec!["127.0.0.1:7000".parse()?]))?;
//! // Append to a list kept as one value, whoever else appends meanwhile.
//! loop {
//!     let (mut list, version) = match client.get(b"impressions")? {
//!         Some(value) => (value.bytes, value.version),
//!         None => (Vec::new(), 0),
//!     };
//!     list.extend_from_slice(b"bid-42;");
//!     match client.cas(b"impressions", version, &list)? {
//!         CasOutcome::Swapped { .. } => break,
//!         CasOutcome::Mismatch { .. } => continue, // another writer won: read again
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The client must never report a failure before its retry budget is spent, its resend
//! window is over, its deadline passed or its caller cancelled it, never change a write's
//! tracking id on resend, never send a datagram carrying a tracking id later than
//! `ClientConfig::resend_window` after that tracking id was first sent or last acknowledged
//! progress (servers may forget its completion record after their `completion_ttl`), and
//! never send a datagram over `proto::DATAGRAM_BYTES_MAX`.
#![forbid(unsafe_code)]

mod assembly;
#[cfg(feature = "tokio")]
mod async_client;
mod auth;
mod config;
mod driver;
mod encode;
mod engine;
mod error;
mod outbox;
mod outcome;
mod request;
mod routing;
mod rtt;
mod seed;
mod shared;
mod stats;
mod timers;
mod transport;
mod write_window;

#[cfg(feature = "tokio")]
pub use async_client::AsyncClient;
pub use auth::ClientKey;
pub use config::ClientConfig;

pub use driver::{Client, MultiGet};
pub use engine::ClientCore;
pub use error::Error;
pub use outcome::Outcome;
pub use proto::{BlobReference, MapEntry, PartitionMap, Status};
pub use request::{
    CasOutcome, IncrOutcome, Reply, Request, RequestId, RequestOptions, Value, ValueLocation,
};
pub use seed::random_seed;
pub use shared::{PendingGets, SharedClient, Ticket};
pub use stats::ClientStats;
pub use transport::{
    recv_buffer_bytes_for, Transport, UdpTransport, RECV_BUFFER_BYTES_PER_REQUEST,
};
