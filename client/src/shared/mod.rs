//! `SharedClient`: the engine on a driver thread of its own, shared by any number of caller
//! threads. Callers submit and send on their own thread (no hand-off before the first
//! transmission); the driver thread receives replies, fires timers and resends, so requests
//! progress whether or not anyone waits for them.

mod driver_thread;
mod ticket;

pub use ticket::{PendingGets, Ticket};

use crate::config::ClientConfig;
use crate::engine::ClientCore;
use crate::error::Error;
use crate::outcome::Outcome;
use crate::request::{CasOutcome, IncrOutcome, Request, RequestId, RequestOptions, Value};
use crate::stats::ClientStats;
use crate::transport::{recv_buffer_bytes_for, UdpTransport};
use proto::PartitionMap;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

/// What receives a request's outcome, called once, on whichever thread completed it (the
/// driver thread, or a caller's for a request that failed at once), outside every lock.
pub(crate) type Sink = Box<dyn FnOnce(Outcome) + Send>;

/// The failure of requests a panicked driver thread left (`Error::Io` of this message).
const DRIVER_PANICKED: &str = "the client's driver thread panicked (a bug in cradle)";

/// A client whose requests progress on a driver thread (`cradle-client`) it starts: sends,
/// resends and replies happen whether or not a caller waits. Cheap to clone; every clone is
/// the same client, usable from any thread. The thread stops when the last clone is dropped,
/// and requests still in flight then complete with `Error::Cancelled`.
///
/// `submit` refuses at once when `in_flight_max` requests are in flight
/// (`Error::InFlightFull`), so a caller sees there is no room before anything is queued;
/// `capacity` tells it in advance. A request is sent by `submit` itself, on the caller's
/// thread; a batch (`submit_batch`, `start_get_many`) is packed into as few datagrams as fit.
///
/// ```no_run
/// use client::{ClientConfig, SharedClient};
///
/// let client = SharedClient::connect(ClientConfig::new(vec!["127.0.0.1:7000".parse()?]))?;
/// let writer = client.clone();
/// let thread = std::thread::spawn(move || writer.put(b"k", b"from another thread"));
/// let version = thread.join().unwrap()?;
/// assert_eq!(client.get(b"k")?.map(|value| value.version), Some(version));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SharedClient {
    inner: Arc<Inner>,
    _stopper: Arc<Stopper>,
}

impl std::fmt::Debug for SharedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedClient").field("in_flight", &self.in_flight()).finish()
    }
}

/// What callers and the driver thread share.
struct Inner {
    state: Mutex<State>,
    socket: UdpSocket,
    /// The socket's own port on loopback: an empty datagram sent there wakes the driver.
    wake_addr: SocketAddr,
    stop: AtomicBool,
    /// The driver thread panicked (a bug): nothing would complete a new request.
    dead: AtomicBool,
    /// What every datagram is sealed with as it leaves (`ClientConfig::key`).
    key: Option<crate::ClientKey>,
}

struct State {
    core: ClientCore,
    sinks: HashMap<RequestId, Sink>,
    /// When the driver thread looks at the timers next: a request whose first timer is due
    /// earlier must wake it.
    driver_wakes_at: Option<Instant>,
}

/// Stops and joins the driver thread when the last `SharedClient` clone goes.
struct Stopper {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        self.inner.wake();
        if let Some(thread) = self.thread.take() {
            // A panic of the driver thread is a bug already reported on stderr.
            let _ = thread.join();
        }
    }
}

impl SharedClient {
    /// A client over UDP, its driver thread started, that fetched the partition map from the
    /// first server that answered (`Error::Timeout` when none did). The socket's receive
    /// buffer is sized for `config.in_flight_max` replies, as `Client::connect`'s is.
    pub fn connect(config: ClientConfig) -> Result<Self, Error> {
        let servers = config.servers.clone();
        let client = SharedClient::start(config)?;
        client.fetch_map(&servers)?;
        Ok(client)
    }

    /// A client with its driver thread started and no partition map yet.
    fn start(config: ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        let mut transport = UdpTransport::for_server(config.servers[0])?;
        transport.set_recv_buffer_bytes(recv_buffer_bytes_for(config.in_flight_max))?;
        let local = transport.local_addr()?;
        let socket = transport.into_socket()?;
        let key = config.key.clone();
        let state =
            State { core: ClientCore::new(config)?, sinks: HashMap::new(), driver_wakes_at: None };
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            socket,
            wake_addr: loopback(local),
            stop: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            key,
        });
        let thread = driver_thread::spawn(inner.clone())?;
        Ok(SharedClient {
            inner: inner.clone(),
            _stopper: Arc::new(Stopper { inner, thread: Some(thread) }),
        })
    }

    /// Starts `request` and returns its ticket, the request already sent;
    /// `Err(Error::InFlightFull)` (or `KeyTooLong`) and nothing sent when it cannot start.
    pub fn submit(&self, request: Request, options: RequestOptions) -> Result<Ticket, Error> {
        let mut tickets = self.submit_batch(vec![request], options)?;
        Ok(tickets.pop().expect("one ticket"))
    }

    /// Starts every request of `requests`, packed into shared datagrams per server; all or
    /// nothing: `Error::InFlightFull` when `capacity()` is below their number, or the first
    /// request's own refusal (`KeyTooLong`), and then none was sent.
    pub fn submit_batch(
        &self,
        requests: Vec<Request>,
        options: RequestOptions,
    ) -> Result<Vec<Ticket>, Error> {
        let (tickets, sinks): (Vec<Ticket>, Vec<Sink>) =
            requests.iter().map(|_| Ticket::new()).unzip();
        let ids = self.submit_sinks(requests.into_iter().zip(sinks).collect(), options)?;
        Ok(tickets.into_iter().zip(ids).map(|(ticket, id)| ticket.with_id(id)).collect())
    }

    /// The core of every submission: all or nothing, each request's outcome to its sink.
    pub(crate) fn submit_sinks(
        &self,
        batch: Vec<(Request, Sink)>,
        options: RequestOptions,
    ) -> Result<Vec<RequestId>, Error> {
        if self.inner.dead.load(Ordering::Acquire) {
            return Err(Error::Io(std::io::Error::other(DRIVER_PANICKED)));
        }
        let now = Instant::now();
        let mut state = self.inner.lock();
        for (request, _) in &batch {
            state.core.check(request)?;
        }
        if state.core.capacity() < batch.len() {
            return Err(Error::InFlightFull);
        }
        let mut ids = Vec::with_capacity(batch.len());
        for (request, sink) in batch {
            let id = state.core.try_submit(now, request, options).expect("checked, with room");
            state.sinks.insert(id, sink);
            ids.push(id);
        }
        let wake = match (state.core.poll_timeout(), state.driver_wakes_at) {
            (Some(timer), Some(wakes_at)) => timer < wakes_at,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let work = state.take_work();
        drop(state);
        self.inner.send_all(&work.datagrams);
        if wake {
            self.inner.wake();
        }
        work.dispatch();
        Ok(ids)
    }

    /// Ends request `id` at once with `Error::Cancelled`; whether it was in flight. A
    /// cancelled write may still have been applied.
    pub fn cancel(&self, id: RequestId) -> bool {
        let mut state = self.inner.lock();
        let cancelled = state.core.cancel(id);
        let work = state.take_work();
        drop(state);
        work.dispatch();
        cancelled
    }

    /// Requests `submit` would accept now.
    pub fn capacity(&self) -> usize {
        self.inner.lock().core.capacity()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().core.in_flight()
    }

    /// Counters since start.
    pub fn client_stats(&self) -> ClientStats {
        self.inner.lock().core.stats()
    }

    /// The receive buffer the kernel granted the socket, in bytes (`connect` asked for
    /// `recv_buffer_bytes_for(in_flight_max)`).
    pub fn recv_buffer_bytes(&self) -> std::io::Result<usize> {
        socket2::SockRef::from(&self.inner.socket).recv_buffer_size()
    }

    /// The partition map in use.
    pub fn known_map(&self) -> Option<PartitionMap> {
        self.inner.lock().core.map().cloned()
    }

    /// The value of `key`, or `None` when it does not exist.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>, Error> {
        self.submit(Request::Get { key: key.to_vec() }, RequestOptions::default())?
            .wait()
            .into_value()
    }

    /// Writes `value` under `key`; returns the version it got.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<u64, Error> {
        let request = Request::Put { key: key.to_vec(), value: value.to_vec() };
        self.submit(request, RequestOptions::default())?.wait().into_version()
    }

    /// Removes `key`; returns whether it existed.
    pub fn delete(&self, key: &[u8]) -> Result<bool, Error> {
        self.submit(Request::Delete { key: key.to_vec() }, RequestOptions::default())?
            .wait()
            .into_deleted()
    }

    /// Writes `value` under `key` if its version is `expected_version` (0: only if absent).
    pub fn cas(
        &self,
        key: &[u8],
        expected_version: u64,
        value: &[u8],
    ) -> Result<CasOutcome, Error> {
        let request = Request::Cas { key: key.to_vec(), expected_version, value: value.to_vec() };
        self.submit(request, RequestOptions::default())?.wait().into_cas()
    }

    /// Adds `by` to the counter at `key` unless the result would be below `floor` (see
    /// `Client::incr`); `ttl_secs` as in `Client::incr_with_ttl`.
    pub fn incr(
        &self,
        key: &[u8],
        by: i64,
        floor: Option<i64>,
        ttl_secs: Option<u32>,
    ) -> Result<IncrOutcome, Error> {
        let request = Request::Incr { key: key.to_vec(), by, floor, ttl_secs };
        self.submit(request, RequestOptions::default())?.wait().into_count()
    }

    /// Starts a GET of every key, packed into shared datagrams, and returns at once; all or
    /// nothing, as `submit_batch`. The driver thread collects the replies meanwhile.
    ///
    /// ```no_run
    /// use client::{ClientConfig, RequestOptions, SharedClient};
    /// use std::time::{Duration, Instant};
    ///
    /// let client = SharedClient::connect(ClientConfig::new(vec!["127.0.0.1:7000".parse()?]))?;
    /// let keys: Vec<String> = (0..16).map(|i| format!("segment:{i}")).collect();
    /// let options = RequestOptions::within(Instant::now(), Duration::from_millis(2));
    /// let pending = client.start_get_many(&keys, options)?;
    /// // ... other work: the replies are received by the driver thread meanwhile ...
    /// let found = pending.wait().into_iter().filter(|value| matches!(value, Ok(Some(_)))).count();
    /// println!("{found} of {} segments", keys.len());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_get_many<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        options: RequestOptions,
    ) -> Result<PendingGets, Error> {
        let requests = keys.iter().map(|key| Request::Get { key: key.as_ref().to_vec() }).collect();
        Ok(PendingGets::new(self.submit_batch(requests, options)?))
    }

    /// The values of `keys`, in order; the first error, if any.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Value>>, Error> {
        self.start_get_many(keys, RequestOptions::default())?.wait().into_iter().collect()
    }

    fn fetch_map(&self, servers: &[SocketAddr]) -> Result<(), Error> {
        let mut last_error = Error::Config("no servers");
        for &server in servers {
            let ticket = self.submit(Request::Map { server }, RequestOptions::default())?;
            match ticket.wait().into_reply() {
                // The engine adopted the map on the way.
                Ok(reply) => {
                    return PartitionMap::decode(&reply.value)
                        .map(drop)
                        .map_err(|_| Error::BadReply("partition map"))
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug in the engine; the state is gone with it.
        self.state.lock().expect("client state poisoned by a panic")
    }

    fn send_all(&self, datagrams: &[(SocketAddr, Vec<u8>)]) {
        let mut failed = 0;
        for (to, datagram) in datagrams {
            let datagram = crate::auth::sealed(self.key.as_ref(), datagram);
            if self.socket.send_to(&datagram, *to).is_err() {
                failed += 1;
            }
        }
        if failed > 0 {
            let mut state = self.lock();
            for _ in 0..failed {
                state.core.note_send_error();
            }
        }
    }

    /// An empty datagram to our own port: the driver's `recv_from` returns. Nothing else
    /// sends empty datagrams (every cradle message has a 72-byte header).
    fn wake(&self) {
        let _ = self.socket.send_to(&[], self.wake_addr);
    }
}

/// Datagrams to send and outcomes to hand out, taken under the lock, acted on after it.
struct Work {
    datagrams: Vec<(SocketAddr, Vec<u8>)>,
    done: Vec<(Sink, Outcome)>,
}

impl Work {
    fn dispatch(self) {
        for (sink, outcome) in self.done {
            sink(outcome);
        }
    }
}

impl State {
    fn take_work(&mut self) -> Work {
        let datagrams = std::iter::from_fn(|| self.core.poll_transmit()).collect();
        let mut done = Vec::new();
        while let Some((id, result)) = self.core.poll_completion() {
            let sink = self.sinks.remove(&id).expect("a sink per submitted request");
            done.push((sink, Outcome::from(result)));
        }
        Work { datagrams, done }
    }
}

/// `local`'s port on the loopback address of its family.
fn loopback(local: SocketAddr) -> SocketAddr {
    match local {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, local.port())),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::LOCALHOST, local.port())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A bug that panics the driver thread (here: a sink that panics) leaves no caller
    /// waiting for ever: waiting tickets fail, and later submissions are refused.
    #[test]
    fn a_panicked_driver_fails_every_waiter_and_refuses_new_requests() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = SharedClient::start(ClientConfig::new(vec![silent.local_addr().unwrap()]));
        let client = client.unwrap();
        let waiting =
            client.submit(Request::Get { key: b"a".to_vec() }, RequestOptions::default()).unwrap();
        let bomb: Sink = Box::new(|_| panic!("a sink that panics, on purpose"));
        let soon = RequestOptions::within(Instant::now(), Duration::from_millis(10));
        client.submit_sinks(vec![(Request::Get { key: b"b".to_vec() }, bomb)], soon).unwrap();
        match waiting.wait() {
            Outcome::Failed(Error::Io(error)) => assert_eq!(error.to_string(), DRIVER_PANICKED),
            other => panic!("expected the driver's failure, got {other:?}"),
        }
        let refused = client.submit(Request::Get { key: b"c".to_vec() }, RequestOptions::default());
        assert!(matches!(refused, Err(Error::Io(_))), "{refused:?}");
    }
}
