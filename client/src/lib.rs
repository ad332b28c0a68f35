//! The cradle client: sends requests to cradle servers over UDP and turns their replies into
//! typed results.
//!
//! It routes each key to the partition owner named by the server's partition map, resends lost
//! requests with the same tracking id (so servers apply a write exactly once) on an adaptive
//! RFC 6298 timer with a bounded retry budget, splits large values into fragment windows and
//! pulls large replies with RANGE requests, and answers address-validation challenges. The
//! protocol state machine, `ClientCore`, is sans-IO: it never reads the clock, never touches a
//! socket and never draws unseeded randomness; `Client` is a thin blocking driver over a
//! `Transport`. The client must never report a failure before its retry budget is spent or its
//! resend window is over, never change a write's tracking id on resend, never send a datagram
//! carrying a tracking id later than `ClientConfig::resend_window` after that tracking id was
//! first sent or last acknowledged progress (servers may forget its completion record after
//! their `completion_ttl`), and never send a datagram over `proto::DATAGRAM_BYTES_MAX`.
#![forbid(unsafe_code)]

mod assembly;
#[cfg(feature = "tokio")]
mod async_client;
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
pub use config::ClientConfig;

pub use driver::{Client, MultiGet};
pub use engine::ClientCore;
pub use error::Error;
pub use outcome::Outcome;
pub use proto::{BlobReference, MapEntry, PartitionMap, Status};
pub use request::{CasOutcome, Reply, Request, RequestId, RequestOptions, Value, ValueLocation};
pub use seed::random_seed;
pub use shared::{PendingGets, SharedClient, Ticket};
pub use stats::ClientStats;
pub use transport::{
    recv_buffer_bytes_for, Transport, UdpTransport, RECV_BUFFER_BYTES_PER_REQUEST,
};
