//! `Client`: a single-threaded driver that moves datagrams between a `Transport` and a
//! `ClientCore`. It makes progress when its caller calls it (`poll`, `wait`, any blocking
//! operation); `SharedClient` (`crate::shared`) makes progress on a thread of its own.

mod multi_get;
mod ops;

pub use multi_get::MultiGet;

use crate::config::ClientConfig;
use crate::engine::ClientCore;
use crate::error::Error;
use crate::outcome::Outcome;
use crate::request::{Request, RequestId, RequestOptions};
use crate::stats::ClientStats;
use crate::transport::{recv_buffer_bytes_for, Transport, UdpTransport};
use proto::{PartitionMap, DATAGRAM_BYTES_ACCEPTED};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Datagrams taken from the transport per wake-up before timers are looked at again.
const RECV_BATCH: usize = 32;

/// Rounds of `RECV_BATCH` one `poll` takes at most, so a flood cannot keep it from returning.
const POLL_ROUNDS_MAX: usize = 8;

/// A client driven by the thread that uses it. Its convenience methods (`get`, `put`, ...)
/// send one request and wait for its result; `submit` and `wait` keep many requests in flight
/// from one thread, `start_get_many` a multi-get that the caller collects later.
///
/// Progress (sends, resends, receiving replies, timers) happens only inside its methods:
/// `submit` queues (so requests submitted back to back share datagrams), and `poll` — which
/// never blocks — or `wait` send and resend. A caller that does other work between calls
/// calls `poll` every millisecond or so; one that cannot, or that wants several threads to
/// share a client, uses `SharedClient`, which runs this same engine on a thread of its own.
///
/// Completions of submitted requests that arrive while a convenience method waits are kept
/// for `wait`; those of a `MultiGet` are kept for it. Kept completions no longer count
/// against `in_flight_max` (their requests are done) but hold their values until taken: a
/// caller that submits must also `wait`, and finish or cancel every `MultiGet` it starts.
///
/// ```no_run
/// use client::{Client, ClientConfig};
///
/// let servers = vec!["127.0.0.1:7000".parse().unwrap()];
/// let mut client = Client::connect(ClientConfig::new(servers))?;
/// let version = client.put(b"greeting", b"hello")?;
/// let value = client.get(b"greeting")?.expect("just written");
/// assert_eq!((value.bytes.as_slice(), value.version), (&b"hello"[..], version));
/// assert!(client.delete(b"greeting")?);
/// assert_eq!(client.get(b"greeting")?, None);
/// # Ok::<(), client::Error>(())
/// ```
#[derive(Debug)]
pub struct Client<T: Transport = UdpTransport> {
    core: ClientCore,
    transport: T,
    /// One byte more than a receiver accepts, so an oversized datagram is seen as such.
    recv_buf: Vec<u8>,
    /// Completions for `wait`.
    ready: VecDeque<(RequestId, Outcome)>,
    /// Requests whose completion a blocking call or a `MultiGet` waits for, not `wait`.
    claimed: HashSet<RequestId>,
    /// Completions of claimed requests, until their owner takes them.
    parked: HashMap<RequestId, Outcome>,
}

impl Client<UdpTransport> {
    /// A client over UDP that fetched the partition map from the first server that answered;
    /// `Error::Timeout` when none did. Its socket's receive buffer is sized for
    /// `config.in_flight_max` replies (`transport::recv_buffer_bytes_for`), as far as the
    /// kernel allows (`UdpTransport::recv_buffer_bytes` tells what it granted).
    pub fn connect(config: ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        let mut transport = UdpTransport::for_server(config.servers[0])?;
        transport.set_recv_buffer_bytes(recv_buffer_bytes_for(config.in_flight_max))?;
        let mut client = Client::with_transport(config, transport)?;
        client.map()?;
        client.check_servers()?;
        Ok(client)
    }
}

/// How long `Client::connect` waits for the other configured servers to say which cluster
/// they are of (a server silent that long is checked when a request first fails over to it).
const SERVER_CHECK_BUDGET: Duration = Duration::from_millis(250);

impl<T: Transport> Client<T> {
    /// Asks every configured server not yet known to be of the client's cluster for its map,
    /// all at once, for at most `SERVER_CHECK_BUDGET`: `Error::ForeignCluster` if one is of
    /// another cluster (two independent nodes, say), so a mixed `--server` list is refused
    /// at once rather than at the first failover.
    pub fn check_servers(&mut self) -> Result<(), Error> {
        let options = RequestOptions::within(Instant::now(), SERVER_CHECK_BUDGET);
        let unknown: Vec<SocketAddr> = self
            .core
            .servers()
            .iter()
            .copied()
            .filter(|&server| !self.core.vouched_for(server))
            .collect();
        let ids: Vec<RequestId> = unknown
            .into_iter()
            .map(|server| self.submit_with(Request::Map { server }, options))
            .collect();
        for outcome in self.wait_all(&ids) {
            if let Outcome::Failed(error @ Error::ForeignCluster { .. }) = outcome {
                return Err(error);
            }
        }
        Ok(())
    }

    /// A client over `transport`. It knows no map yet: keyed requests go to the first server
    /// until a reply reveals one.
    pub fn with_transport(config: ClientConfig, transport: T) -> Result<Self, Error> {
        Ok(Client {
            core: ClientCore::new(config)?,
            transport,
            recv_buf: vec![0; DATAGRAM_BYTES_ACCEPTED + 1],
            ready: VecDeque::new(),
            claimed: HashSet::new(),
            parked: HashMap::new(),
        })
    }

    /// Starts `request` without waiting; its outcome comes out of `wait`. It is queued, and
    /// sent at the next `poll`, `flush` or `wait`: requests submitted back to back to one
    /// server share datagrams. A request refused locally (no room: `Error::InFlightFull`)
    /// completes at once with that error; `try_submit` reports it instead.
    pub fn submit(&mut self, request: Request) -> RequestId {
        self.core.submit(Instant::now(), request)
    }

    /// `submit` with per-request options (a deadline).
    pub fn submit_with(&mut self, request: Request, options: RequestOptions) -> RequestId {
        self.core.submit_with(Instant::now(), request, options)
    }

    /// `submit` if there is room: `Err(Error::InFlightFull)` when `in_flight_max` requests
    /// are in flight, and nothing was queued (no completion will come for it).
    pub fn try_submit(
        &mut self,
        request: Request,
        options: RequestOptions,
    ) -> Result<RequestId, Error> {
        self.core.try_submit(Instant::now(), request, options)
    }

    /// Requests `try_submit` would accept now.
    pub fn capacity(&self) -> usize {
        self.core.capacity()
    }

    /// Ends request `id` at once: its outcome is `Outcome::Failed(Error::Cancelled)` (for
    /// `wait`, or its `MultiGet`). Returns whether it was in flight. A cancelled write may
    /// still have been applied.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        let cancelled = self.core.cancel(id);
        self.collect();
        cancelled
    }

    /// Sends what is queued.
    pub fn flush(&mut self) {
        while let Some((to, datagram)) = self.core.poll_transmit() {
            let datagram = crate::auth::sealed(self.core.config().key.as_ref(), &datagram);
            if self.transport.send_to(&datagram, to).is_err() {
                self.core.note_send_error();
            }
        }
    }

    /// Makes progress without blocking: sends what is queued, takes the datagrams that have
    /// arrived, resends what timed out. Returns the completions ready for `wait`.
    pub fn poll(&mut self) -> usize {
        for _ in 0..POLL_ROUNDS_MAX {
            if self.drive(Some(Instant::now())) < RECV_BATCH {
                break;
            }
        }
        self.flush();
        self.ready.len()
    }

    /// The next completed request (not one a `MultiGet` or a blocking call waits for),
    /// waiting at most `timeout`; `None` if none completed in time or nothing is in flight.
    pub fn wait(&mut self, timeout: Duration) -> Option<(RequestId, Outcome)> {
        let limit = Instant::now() + timeout;
        loop {
            self.collect();
            if let Some(done) = self.ready.pop_front() {
                return Some(done);
            }
            let unclaimed = self.core.in_flight().saturating_sub(self.claimed.len());
            if unclaimed == 0 || Instant::now() >= limit {
                self.flush();
                return None;
            }
            self.drive(Some(limit));
        }
    }

    /// Requests submitted and not yet returned by `wait` or their `MultiGet`.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight() + self.ready.len() + self.parked.len()
    }

    /// The partition map in use, once one is known.
    pub fn known_map(&self) -> Option<&PartitionMap> {
        self.core.map()
    }

    /// Counters since start.
    pub fn client_stats(&self) -> ClientStats {
        self.core.stats()
    }

    /// The protocol core.
    pub fn core(&self) -> &ClientCore {
        &self.core
    }

    /// The transport.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Sends `request` and waits for its outcome (bounded by the retry budget).
    pub fn call(&mut self, request: Request) -> Outcome {
        self.call_with(request, RequestOptions::default())
    }

    /// `call` with per-request options (a deadline).
    pub fn call_with(&mut self, request: Request, options: RequestOptions) -> Outcome {
        let id = self.submit_with(request, options);
        self.wait_all(&[id]).pop().expect("one outcome")
    }

    /// Waits for every request of `ids`; their outcomes in that order.
    fn wait_all(&mut self, ids: &[RequestId]) -> Vec<Outcome> {
        self.claimed.extend(ids.iter().copied());
        self.collect();
        while ids.iter().any(|id| !self.parked.contains_key(id)) {
            self.drive(None);
        }
        ids.iter().map(|id| self.parked.remove(id).expect("parked")).collect()
    }

    /// Moves the core's completions to `ready`, or to `parked` when claimed.
    fn collect(&mut self) {
        while let Some((id, result)) = self.core.poll_completion() {
            let outcome = Outcome::from(result);
            if self.claimed.remove(&id) {
                self.parked.insert(id, outcome);
            } else {
                self.ready.push_back((id, outcome));
            }
        }
    }

    /// One round: send what is queued, wait for datagrams until the next timer (or `limit`),
    /// hand them to the core, fire expired timers. Returns the datagrams received.
    fn drive(&mut self, limit: Option<Instant>) -> usize {
        self.flush();
        let wake = match (self.core.poll_timeout(), limit) {
            (Some(timer), Some(limit)) => timer.min(limit),
            (timer, limit) => timer.or(limit).unwrap_or_else(Instant::now),
        };
        let mut wait = wake.saturating_duration_since(Instant::now());
        let mut received = 0;
        while received < RECV_BATCH {
            match self.transport.recv_from(&mut self.recv_buf, wait) {
                Ok(Some((len, from))) => {
                    self.core.handle_datagram(Instant::now(), from, &self.recv_buf[..len]);
                    received += 1;
                }
                Ok(None) | Err(_) => break,
            }
            wait = Duration::ZERO;
        }
        while let Some(server) = self.transport.take_refused() {
            self.core.handle_refused(Instant::now(), server);
        }
        self.core.handle_timeout(Instant::now());
        self.collect();
        received
    }
}
