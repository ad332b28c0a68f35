//! `Client`: a blocking driver that moves datagrams between a `Transport` and a `ClientCore`.

mod ops;

use crate::config::ClientConfig;
use crate::engine::ClientCore;
use crate::error::Error;
use crate::request::{Reply, Request, RequestId};
use crate::stats::ClientStats;
use crate::transport::{Transport, UdpTransport};
use proto::{PartitionMap, DATAGRAM_BYTES_ACCEPTED};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Datagrams taken from the transport per wake-up before timers are looked at again.
const RECV_BATCH: usize = 32;

/// A blocking client. Its convenience methods (`get`, `put`, ...) send one request and wait
/// for its result; `submit` and `wait` keep many requests in flight from one thread.
/// Completions of submitted requests that arrive while a convenience method waits are kept
/// for `wait`.
#[derive(Debug)]
pub struct Client<T: Transport = UdpTransport> {
    core: ClientCore,
    transport: T,
    /// One byte more than a receiver accepts, so an oversized datagram is seen as such.
    recv_buf: Vec<u8>,
    ready: VecDeque<(RequestId, Result<Reply, Error>)>,
}

impl Client<UdpTransport> {
    /// A client over UDP that fetched the partition map from the first server that answered;
    /// `Error::Timeout` when none did.
    pub fn connect(config: ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        let transport = UdpTransport::for_server(config.servers[0])?;
        let mut client = Client::with_transport(config, transport)?;
        client.map()?;
        Ok(client)
    }
}

impl<T: Transport> Client<T> {
    /// A client over `transport`. It knows no map yet: keyed requests go to the first server
    /// until a reply reveals one.
    pub fn with_transport(config: ClientConfig, transport: T) -> Result<Self, Error> {
        Ok(Client {
            core: ClientCore::new(config)?,
            transport,
            recv_buf: vec![0; DATAGRAM_BYTES_ACCEPTED + 1],
            ready: VecDeque::new(),
        })
    }

    /// Starts `request` without waiting; its result comes out of `wait`. Requests submitted
    /// back to back to one server share datagrams when they are sent (at the next `wait` or
    /// `flush`).
    pub fn submit(&mut self, request: Request) -> RequestId {
        self.core.submit(Instant::now(), request)
    }

    /// Sends what is queued.
    pub fn flush(&mut self) {
        while let Some((to, datagram)) = self.core.poll_transmit() {
            if self.transport.send_to(&datagram, to).is_err() {
                self.core.note_send_error();
            }
        }
    }

    /// The next completed request, waiting at most `timeout`; `None` if none completed in time
    /// or nothing is in flight.
    pub fn wait(&mut self, timeout: Duration) -> Option<(RequestId, Result<Reply, Error>)> {
        let limit = Instant::now() + timeout;
        loop {
            if let Some(done) = self.ready.pop_front().or_else(|| self.core.poll_completion()) {
                return Some(done);
            }
            if self.core.in_flight() == 0 || Instant::now() >= limit {
                self.flush();
                return None;
            }
            self.drive(Some(limit));
        }
    }

    /// Requests submitted and not yet returned by `wait`.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight() + self.ready.len()
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

    /// Sends `request` and waits for its result (bounded by the retry budget).
    pub fn call(&mut self, request: Request) -> Result<Reply, Error> {
        let id = self.submit(request);
        self.wait_all(&[id]).pop().expect("one result")
    }

    /// Waits for every request of `ids`; their results in that order.
    fn wait_all(&mut self, ids: &[RequestId]) -> Vec<Result<Reply, Error>> {
        let slots: HashMap<RequestId, usize> =
            ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut results: Vec<Option<Result<Reply, Error>>> = ids.iter().map(|_| None).collect();
        let mut missing = ids.len();
        while missing > 0 {
            while let Some((id, result)) = self.core.poll_completion() {
                match slots.get(&id) {
                    Some(&slot) => {
                        results[slot] = Some(result);
                        missing -= 1;
                    }
                    None => self.ready.push_back((id, result)),
                }
            }
            if missing > 0 {
                self.drive(None);
            }
        }
        results.into_iter().map(|result| result.expect("every id completed")).collect()
    }

    /// One round: send what is queued, wait for datagrams until the next timer (or `limit`),
    /// hand them to the core, fire expired timers.
    fn drive(&mut self, limit: Option<Instant>) {
        self.flush();
        let wake = match (self.core.poll_timeout(), limit) {
            (Some(timer), Some(limit)) => timer.min(limit),
            (timer, limit) => timer.or(limit).unwrap_or_else(Instant::now),
        };
        let mut wait = wake.saturating_duration_since(Instant::now());
        for _ in 0..RECV_BATCH {
            match self.transport.recv_from(&mut self.recv_buf, wait) {
                Ok(Some((len, from))) => {
                    self.core.handle_datagram(Instant::now(), from, &self.recv_buf[..len]);
                }
                Ok(None) | Err(_) => break,
            }
            wait = Duration::ZERO;
        }
        self.core.handle_timeout(Instant::now());
    }
}
