//! Client settings and the relations between them.

use crate::error::Error;
use crate::seed::random_seed;
use std::net::SocketAddr;
use std::time::Duration;

/// Settings of a client. `validate` checks them; `ClientCore::new` refuses invalid ones.
/// `ClientConfig::new` gives the defaults each field names, made for loopback and LAN
/// servers: a request to a silent server is resent 8 times, at 5, 10, 20, ... ms capped at
/// 200 ms, before the next server is tried (about 0.7 s per server), and fails after at most
/// `resend_window` (2 s) without progress.
///
/// ```
/// use client::ClientConfig;
/// use std::time::Duration;
///
/// let mut config = ClientConfig::new(vec!["127.0.0.1:7000".parse().unwrap()]);
/// assert_eq!(config.in_flight_max, 4096);
/// config.in_flight_max = 20_000; // a deep pipeline: its socket buffer is sized to match
/// config.rto_max = Duration::from_millis(50);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Servers to bootstrap from (the first is asked until a partition map is known) and to
    /// fail over to, in order. At least one. No default.
    pub servers: Vec<SocketAddr>,
    /// Seeds the client id. Two live clients with one seed share an id, and servers would take
    /// their writes for resends of each other's: use `random_seed()` outside tests.
    /// Default: `random_seed()`.
    pub seed: u64,
    /// Retransmission timeout of a class of requests (reads, writes) to a server before any
    /// round-trip sample of that class from it, or the timeout of the server's sampled classes
    /// when that is longer. Default 5 ms.
    pub rto_initial: Duration,
    /// Floor of the retransmission timeout. Default 1 ms.
    pub rto_min: Duration,
    /// Ceiling of the retransmission timeout, also after exponential backoff. Default 200 ms.
    pub rto_max: Duration,
    /// Transmissions of a request to one server before the next server is tried. Default 8.
    pub attempts_per_server: u32,
    /// How long a request may go without progress and still be (re)sent: no datagram
    /// carrying its tracking id (retransmission, fragment, probe, failover to another server)
    /// leaves later than this after its first transmission or, for a fragmented transfer,
    /// after its last progress: a write's PARTIAL acknowledgement whose first missing
    /// fragment advanced, a read's new fragment. At the first timeout after the window the
    /// request fails with `Error::Timeout`, so a request completes within
    /// `resend_window + rto_max` of its last progress (of its submission if it has none). A
    /// big transfer is therefore bounded by how long it stalls, not by its size: there is no
    /// speed floor. A write that goes back to a server it left keeps only its first window.
    ///
    /// Servers answer a resent write from a completion record kept for their
    /// `completion_ttl` (default 5 s) and may forget it afterwards. The record is created when
    /// the write completes, after every progress acknowledgement was sent, so every datagram
    /// of a write reaches the server within this window plus a round trip (the last
    /// acknowledgement's way back, the last datagram's way out, queues included) of the
    /// record's creation: that must stay below the TTL, or a late resend could be applied
    /// twice. Default 2 s.
    pub resend_window: Duration,
    /// WRONG_OWNER redirects one request may follow before it fails. Default 8.
    pub redirects_max: u32,
    /// Restarts of a fragmented read whose value changed meanwhile before it fails
    /// (`Error::ValueKeptChanging`). Default 8.
    pub read_restarts_max: u32,
    /// Requests in flight at once (the client's own partition-map refresh aside). Beyond it
    /// `submit` completes at once with `Error::InFlightFull` and `try_submit` refuses;
    /// `capacity` tells the room left. Each request holds its key and value, and a fragmented
    /// read holds the whole value while assembling it (up to 16 MiB). `connect` asks for a
    /// socket receive buffer of `RECV_BUFFER_BYTES_PER_REQUEST` (1,472 bytes) per request
    /// (Linux caps it at twice `net.core.rmem_max`). Default 4,096.
    pub in_flight_max: usize,
    /// The key every datagram is sealed with, for nodes that require authentication
    /// (`cradle node --auth-keys`); a node without keys serves sealed datagrams too. Sealing
    /// adds 32 bytes to each datagram and one BLAKE3 pass over it; a request packs into
    /// 1,440 bytes instead of 1,472 (bigger values are sent in fragments). Replies are not
    /// authenticated. Default: none.
    pub key: Option<crate::ClientKey>,
}

impl ClientConfig {
    /// Defaults for loopback and LAN servers, with a random seed.
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        ClientConfig {
            servers,
            seed: random_seed(),
            rto_initial: Duration::from_millis(5),
            rto_min: Duration::from_millis(1),
            rto_max: Duration::from_millis(200),
            attempts_per_server: 8,
            resend_window: Duration::from_secs(2),
            redirects_max: 8,
            read_restarts_max: 8,
            in_flight_max: 4096,
            key: None,
        }
    }

    /// Checks the relations between the fields.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |why| Err(Error::Config(why));
        if self.servers.is_empty() {
            return fail("no servers");
        }
        if self.rto_min.is_zero() || self.rto_min > self.rto_max {
            return fail("rto_min must be positive and at most rto_max");
        }
        if self.rto_initial < self.rto_min || self.rto_initial > self.rto_max {
            return fail("rto_initial must lie within [rto_min, rto_max]");
        }
        if self.attempts_per_server == 0 {
            return fail("attempts_per_server must be positive");
        }
        if self.resend_window.is_zero() {
            return fail("resend_window must be positive");
        }
        if self.in_flight_max == 0 {
            return fail("in_flight_max must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_relations_do_not() {
        let config = ClientConfig::new(vec!["127.0.0.1:7000".parse().unwrap()]);
        assert!(config.validate().is_ok());
        let mut bad = config.clone();
        bad.servers.clear();
        assert!(bad.validate().is_err());
        let mut bad = config.clone();
        bad.rto_min = Duration::from_secs(1);
        assert!(bad.validate().is_err());
        let mut bad = config.clone();
        bad.attempts_per_server = 0;
        assert!(bad.validate().is_err());
        let mut bad = config;
        bad.resend_window = Duration::ZERO;
        assert!(bad.validate().is_err());
    }
}
