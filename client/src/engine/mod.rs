//! `ClientCore`: the sans-IO request state machine.

mod inflight;
mod reply;
mod send;
mod timeout;

use crate::config::ClientConfig;
use crate::error::Error;
use crate::outbox::Outbox;
use crate::request::{Reply, Request, RequestId, RequestOptions};
use crate::routing::Router;
use crate::rtt::{RttClass, RttEstimator};
use crate::seed::client_id_from;
use crate::stats::ClientStats;
use crate::timers::Timers;
use crate::write_window::WriteWindow;
use inflight::{InFlight, Phase, ReadState};
use proto::{PartitionMap, HEADER_BYTES, KEY_BYTES_MAX};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

/// The client protocol without I/O or clock: requests in through `submit` (or `try_submit`,
/// which refuses when there is no room), cancellations through `cancel`, datagrams through
/// `handle_datagram`, time through `handle_timeout`; datagrams out through `poll_transmit`,
/// the next wake-up through `poll_timeout`, results through `poll_completion` (as
/// `Result<Reply, Error>`; `Outcome::from` turns one into the drivers' `Outcome`). Every
/// submitted request completes exactly once: answered, failed, past its deadline, or
/// cancelled. A driver calls `handle_timeout` at `poll_timeout` and sends what
/// `poll_transmit` gives after every call that may queue datagrams.
#[derive(Debug)]
pub struct ClientCore {
    config: ClientConfig,
    client_id: u64,
    next_request: u64,
    next_tracking: u64,
    router: Router,
    requests: HashMap<RequestId, InFlight>,
    by_tracking: HashMap<u64, RequestId>,
    timers: Timers,
    outbox: Outbox,
    completions: VecDeque<(RequestId, Result<Reply, Error>)>,
    map_refresh: Option<RequestId>,
    /// While requests wait on servers the map still names (they may have died): when to ask
    /// another node for the map again (`ClientCore::watch_map`), and whose turn it is.
    map_watch_at: Option<Instant>,
    map_watch_turn: usize,
    /// MAP requests asking configured servers which cluster they are of, by server.
    vouching: HashMap<SocketAddr, RequestId>,
    /// Vouches that ended (the server, and whether it is of our cluster: `None` when it did
    /// not answer), for `settle_vouches`.
    vouched: Vec<(SocketAddr, Option<Result<(), Error>>)>,
    stats: ClientStats,
}

impl ClientCore {
    /// A core for `config`, after `config.validate()`.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        let fresh = RttEstimator::new(config.rto_initial, config.rto_min, config.rto_max);
        let stats = ClientStats { rto: fresh.rto(), ..ClientStats::default() };
        let outbox = Outbox::with_limit(crate::auth::message_bytes_max(config.key.as_ref()));
        Ok(ClientCore {
            client_id: client_id_from(config.seed),
            router: Router::new(config.servers.clone(), fresh),
            config,
            next_request: 1,
            next_tracking: 1,
            requests: HashMap::new(),
            by_tracking: HashMap::new(),
            timers: Timers::default(),
            outbox,
            completions: VecDeque::new(),
            map_refresh: None,
            map_watch_at: None,
            map_watch_turn: 0,
            vouching: HashMap::new(),
            vouched: Vec::new(),
            stats,
        })
    }

    /// Starts `request`; its result comes out of `poll_completion` under the returned id.
    /// Requests queued before the next `poll_transmit` to one server share datagrams. A
    /// request refused locally (`Error::InFlightFull`, `Error::KeyTooLong`) completes at once
    /// with that error; `try_submit` reports the refusal instead.
    pub fn submit(&mut self, now: Instant, request: Request) -> RequestId {
        self.submit_with(now, request, RequestOptions::default())
    }

    /// `submit` with per-request options (a deadline).
    pub fn submit_with(
        &mut self,
        now: Instant,
        request: Request,
        options: RequestOptions,
    ) -> RequestId {
        match self.try_submit(now, request, options) {
            Ok(id) => id,
            Err(error) => {
                let id = self.new_request_id();
                self.stats.completions += 1;
                self.completions.push_back((id, Err(error)));
                id
            }
        }
    }

    /// Starts `request` if there is room for it: `Err(Error::InFlightFull)` when
    /// `ClientConfig::in_flight_max` requests are in flight (`capacity` is 0), or
    /// `Err(Error::KeyTooLong)`, and then nothing was queued and no completion will come.
    /// A deadline already passed is no refusal: the request completes at once with
    /// `Error::DeadlineExceeded`.
    pub fn try_submit(
        &mut self,
        now: Instant,
        request: Request,
        options: RequestOptions,
    ) -> Result<RequestId, Error> {
        self.admit(&request)?;
        let id = self.new_request_id();
        if options.deadline.is_some_and(|deadline| deadline <= now) {
            self.stats.completions += 1;
            self.stats.deadlines_exceeded += 1;
            self.completions.push_back((id, Err(Error::DeadlineExceeded)));
            return Ok(id);
        }
        self.start(now, id, request, options.deadline, false);
        Ok(id)
    }

    /// Ends request `id` at once with `Error::Cancelled`: nothing more is sent for it and a
    /// late reply is dropped. Returns whether it was in flight (false: unknown, or already
    /// completed, its completion perhaps not yet polled). A cancelled write may still have
    /// been applied: its datagrams may have reached the server.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        match self.requests.get(&id) {
            Some(request) if !request.internal => {
                self.stats.cancelled += 1;
                self.finish(id, Err(Error::Cancelled));
                true
            }
            _ => false,
        }
    }

    /// Requests `try_submit` would accept now: `in_flight_max` less those in flight.
    pub fn capacity(&self) -> usize {
        self.config.in_flight_max.saturating_sub(self.in_flight())
    }

    /// The settings the core was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn new_request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.stats.requests += 1;
        id
    }

    /// The next datagram to send and its destination.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let transmit = self.outbox.pop_datagram();
        if transmit.is_some() {
            self.stats.datagrams_sent += 1;
        }
        transmit
    }

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next(), self.map_watch_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next finished request.
    pub fn poll_completion(&mut self) -> Option<(RequestId, Result<Reply, Error>)> {
        self.completions.pop_front()
    }

    /// Requests submitted and not yet completed (map requests of the core's own excluded).
    pub fn in_flight(&self) -> usize {
        self.requests.len() - usize::from(self.map_refresh.is_some()) - self.vouching.len()
    }

    /// Whether requests may go to `server`: it is known to be of the client's cluster (its
    /// map, or a map of that cluster, says so), or no cluster is known yet.
    pub fn vouched_for(&self, server: SocketAddr) -> bool {
        self.router.vouched_for(server)
    }

    /// Asks `server` for its map to learn its cluster, unless that is under way.
    pub(super) fn vouch(&mut self, now: Instant, server: SocketAddr) {
        if self.vouching.contains_key(&server) {
            return;
        }
        let id = self.new_request_id();
        self.vouching.insert(server, id);
        self.start(now, id, Request::Map { server }, None, true);
    }

    /// Requests waiting for a vouch that ended go on: to the server if it is of our cluster,
    /// on to the next one if it did not answer, or fail with `Error::ForeignCluster`.
    pub(super) fn settle_vouches(&mut self, now: Instant) {
        while let Some((server, verdict)) = self.vouched.pop() {
            let waiting: Vec<RequestId> = self
                .requests
                .iter()
                .filter(|(_, r)| r.awaiting_vouch && r.target == server)
                .map(|(&id, _)| id)
                .collect();
            for id in waiting {
                self.requests.get_mut(&id).expect("in flight").awaiting_vouch = false;
                match &verdict {
                    Some(Ok(())) => self.send_fresh(now, id),
                    Some(Err(Error::ForeignCluster { server, cluster, expected })) => {
                        let error = Error::ForeignCluster {
                            server: *server,
                            cluster: *cluster,
                            expected: *expected,
                        };
                        self.finish(id, Err(error));
                    }
                    _ => self.fail_over(now, id, None),
                }
            }
        }
    }

    /// This client's id on the wire.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The partition map in use, once one is known.
    pub fn map(&self) -> Option<&PartitionMap> {
        self.router.map()
    }

    /// The configured servers, in failover order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.config.servers
    }

    /// Counters since start.
    pub fn stats(&self) -> ClientStats {
        match self.router.latest_estimate() {
            Some(estimate) => {
                ClientStats { srtt: estimate.srtt(), rto: estimate.rto(), ..self.stats }
            }
            None => self.stats,
        }
    }

    /// Counts a datagram the transport failed to send (it is treated as lost).
    pub fn note_send_error(&mut self) {
        self.stats.send_errors += 1;
    }

    /// Whether `request` itself is acceptable (its key's and value's lengths), room aside:
    /// what `try_submit` checks besides `capacity`, for callers submitting all or nothing.
    pub fn check(&self, request: &Request) -> Result<(), Error> {
        let key_len = request.key().len();
        if key_len > KEY_BYTES_MAX {
            return Err(Error::KeyTooLong { len: key_len });
        }
        if u32::try_from(request.value().len()).is_err() {
            return Err(Error::Status(proto::Status::TooLarge));
        }
        Ok(())
    }

    fn admit(&self, request: &Request) -> Result<(), Error> {
        self.check(request)?;
        if self.in_flight() >= self.config.in_flight_max {
            return Err(Error::InFlightFull);
        }
        Ok(())
    }

    fn start(
        &mut self,
        now: Instant,
        id: RequestId,
        request: Request,
        give_up_at: Option<Instant>,
        internal: bool,
    ) {
        let route = self.router.route_request(&request);
        let target = request.server().unwrap_or(route.addr);
        let tracking_id = self.new_tracking_id(id);
        let phase = phase_of(&request, crate::auth::message_bytes_max(self.config.key.as_ref()));
        let class = RttClass::of(&request);
        let rto = self.router.rto(target, class);
        let in_flight = InFlight {
            request,
            tracking_id,
            internal,
            target,
            partition: route.partition,
            tried: Vec::new(),
            attempts_on_server: 1,
            attempts_total: 1,
            redirects: 0,
            restarts: 0,
            token_retry_used: false,
            reroute: false,
            awaiting_vouch: false,
            class,
            rto,
            deadline: None,
            give_up_at,
            sent_at: now,
            first_sent: now,
            window_start: now,
            rtt_sample_open: false,
            progress: false,
            busy: None,
            refused: false,
            last_status: None,
            phase,
        };
        self.requests.insert(id, in_flight);
        self.send_fresh(now, id);
    }

    fn new_tracking_id(&mut self, id: RequestId) -> u64 {
        let tracking_id = self.next_tracking;
        self.next_tracking += 1;
        self.by_tracking.insert(tracking_id, id);
        tracking_id
    }

    /// Asks `server` for the partition map unless a refresh is already under way, or one to
    /// another server that has gone unanswered (it may be the server that died: a refresh
    /// stuck on it for its whole budget would keep every request on the old map).
    pub(super) fn refresh_map(&mut self, now: Instant, server: SocketAddr) {
        if let Some(current) = self.map_refresh {
            let refresh = &self.requests[&current];
            if refresh.target == server || refresh.attempts_on_server <= 1 {
                return;
            }
            self.finish(current, Err(Error::Cancelled)); // (internal: nobody is told)
        }
        let id = self.new_request_id();
        self.map_refresh = Some(id);
        self.start(now, id, Request::Map { server }, None, true);
    }

    /// Ends request `id` with `result`: it leaves every table, and its completion is queued
    /// unless the core issued it.
    fn finish(&mut self, id: RequestId, result: Result<Reply, Error>) {
        let request = self.requests.remove(&id).expect("finishing a request in flight");
        self.by_tracking.remove(&request.tracking_id);
        if let Some(deadline) = request.deadline {
            self.timers.cancel(id, deadline);
        }
        if matches!(result, Err(Error::Timeout { .. })) {
            self.stats.timeouts += 1;
        }
        if request.internal {
            if let Some(server) = request.request.server() {
                if self.vouching.get(&server) == Some(&id) {
                    self.vouching.remove(&server);
                    let verdict = match result {
                        Ok(_) => Some(Ok(())),
                        Err(error @ Error::ForeignCluster { .. }) => Some(Err(error)),
                        Err(_) => None,
                    };
                    self.vouched.push((server, verdict));
                    return;
                }
            }
            self.map_refresh = None;
            return;
        }
        self.stats.completions += 1;
        self.completions.push_back((id, result));
    }
}

/// How `request` is exchanged, when a datagram may carry `datagram_bytes_max` bytes of
/// messages: a write that does not fit one goes in fragments.
fn phase_of(request: &Request, datagram_bytes_max: usize) -> Phase {
    match request {
        Request::Put { key, value }
        | Request::Cas { key, value, .. }
        | Request::PutWith { key, value, .. }
        | Request::CasWith { key, value, .. }
            if HEADER_BYTES + key.len() + value.len() > datagram_bytes_max =>
        {
            Phase::Write(WriteWindow::new(value.len() as u32))
        }
        Request::Get { .. }
        | Request::GetRef { .. }
        | Request::Map { .. }
        | Request::Stats { .. }
        | Request::Chunk { .. }
        | Request::ChunkRange { .. } => Phase::Read(ReadState::default()),
        _ => Phase::Single,
    }
}

#[cfg(test)]
mod class_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;
