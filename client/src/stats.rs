//! Counters a client keeps about itself.

use std::time::Duration;

/// Counters since the client started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests submitted (internal map refreshes included).
    pub requests: u64,
    /// Requests completed, with a reply or an error.
    pub completions: u64,
    /// Resends after a timer fired.
    pub retransmits: u64,
    /// Requests that failed with `Error::Timeout`.
    pub timeouts: u64,
    /// Requests that failed with `Error::DeadlineExceeded`.
    pub deadlines_exceeded: u64,
    /// Requests the caller cancelled while they were in flight.
    pub cancelled: u64,
    /// Resends answering RETRY_WITH_TOKEN.
    pub token_retries: u64,
    /// WRONG_OWNER redirects followed.
    pub redirects: u64,
    /// Reads restarted because the value changed while its fragments were pulled.
    pub read_restarts: u64,
    /// Datagrams handed to the transport.
    pub datagrams_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Reply messages dropped: malformed, not ours, or for no request in flight (late
    /// duplicates).
    pub replies_ignored: u64,
    /// Servers refused because their map named another cluster (`Error::ForeignCluster`).
    pub foreign_servers: u64,
    /// Sends the transport refused (the driver counts these as losses).
    pub send_errors: u64,
    /// Smoothed round-trip time of the estimator sampled last (one per server and class of
    /// request: reads, writes), once there is a sample.
    pub srtt: Option<Duration>,
    /// Retransmission timeout of the estimator sampled last.
    pub rto: Duration,
}
