//! `AsyncClient`: the operations as futures, for tokio applications (cargo feature `tokio`).

use crate::config::ClientConfig;
use crate::error::Error;
use crate::outcome::Outcome;
use crate::request::{CasOutcome, IncrOutcome, Request, RequestId, RequestOptions, Value};
use crate::shared::{SharedClient, Sink};
use tokio::sync::oneshot;

/// A `SharedClient` whose operations are futures. The requests progress on the shared
/// client's driver thread, not on a runtime task, so they never wait for the runtime to be
/// polled, and the futures only wait for their outcome (a oneshot channel). Dropping a future
/// before it completes cancels its requests (a write may still have been applied). Clones
/// share one client.
///
/// ```no_run
/// # async fn run() -> Result<(), client::Error> {
/// use client::{AsyncClient, ClientConfig, RequestOptions};
///
/// let servers = vec!["127.0.0.1:7000".parse().unwrap()];
/// let client = AsyncClient::connect(ClientConfig::new(servers)).await?;
/// let version = client.put(b"k", b"v").await?;
/// assert_eq!(client.get(b"k").await?.map(|value| value.version), Some(version));
/// let keys = ["a", "b", "k"];
/// let values = client.get_many(&keys, RequestOptions::default()).await?;
/// assert!(matches!(values[2], Ok(Some(_))));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AsyncClient {
    shared: SharedClient,
}

impl AsyncClient {
    /// `SharedClient::connect` on a blocking-pool thread (it waits for the partition map).
    pub async fn connect(config: ClientConfig) -> Result<Self, Error> {
        let connect = tokio::task::spawn_blocking(move || SharedClient::connect(config));
        match connect.await {
            Ok(shared) => Ok(AsyncClient { shared: shared? }),
            Err(join_error) if join_error.is_panic() => {
                std::panic::resume_unwind(join_error.into_panic())
            }
            Err(_) => Err(Error::Cancelled),
        }
    }

    /// An async face of `shared` (which stays usable, blocking, too).
    pub fn from_shared(shared: SharedClient) -> Self {
        AsyncClient { shared }
    }

    /// The shared client underneath (capacity, stats, blocking calls).
    pub fn shared(&self) -> &SharedClient {
        &self.shared
    }

    /// `request`'s outcome. No room (`Error::InFlightFull`) and local refusals come as
    /// `Outcome::Failed` at once.
    pub async fn call(&self, request: Request, options: RequestOptions) -> Outcome {
        match self.outcomes(vec![request], options).await {
            Ok(mut outcomes) => outcomes.pop().expect("one outcome"),
            Err(error) => Outcome::Failed(error),
        }
    }

    /// The value of `key`, or `None` when it does not exist.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Value>, Error> {
        let request = Request::Get { key: key.to_vec() };
        self.call(request, RequestOptions::default()).await.into_value()
    }

    /// Writes `value` under `key`; returns the version it got.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<u64, Error> {
        let request = Request::Put { key: key.to_vec(), value: value.to_vec() };
        self.call(request, RequestOptions::default()).await.into_version()
    }

    /// Removes `key`; returns whether it existed.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, Error> {
        let request = Request::Delete { key: key.to_vec() };
        self.call(request, RequestOptions::default()).await.into_deleted()
    }

    /// Writes `value` under `key` if its version is `expected_version` (0: only if absent).
    pub async fn cas(
        &self,
        key: &[u8],
        expected_version: u64,
        value: &[u8],
    ) -> Result<CasOutcome, Error> {
        let request = Request::Cas { key: key.to_vec(), expected_version, value: value.to_vec() };
        self.call(request, RequestOptions::default()).await.into_cas()
    }

    /// Adds `by` to the counter at `key` unless the result would be below `floor` (see
    /// `Client::incr`); `ttl_secs` as in `Client::incr_with_ttl`.
    pub async fn incr(
        &self,
        key: &[u8],
        by: i64,
        floor: Option<i64>,
        ttl_secs: Option<u32>,
    ) -> Result<IncrOutcome, Error> {
        let request = Request::Incr { key: key.to_vec(), by, floor, ttl_secs };
        self.call(request, RequestOptions::default()).await.into_count()
    }

    /// A GET of every key, packed into shared datagrams: each key's value or error, in key
    /// order. `Err` only when none could start (no room for all: `Error::InFlightFull`).
    pub async fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        options: RequestOptions,
    ) -> Result<Vec<Result<Option<Value>, Error>>, Error> {
        let requests = keys.iter().map(|key| Request::Get { key: key.as_ref().to_vec() }).collect();
        let outcomes = self.outcomes(requests, options).await?;
        Ok(outcomes.into_iter().map(Outcome::into_value).collect())
    }

    /// Submits `requests` together and waits for their outcomes; cancels those still in
    /// flight if dropped first.
    async fn outcomes(
        &self,
        requests: Vec<Request>,
        options: RequestOptions,
    ) -> Result<Vec<Outcome>, Error> {
        let mut receivers = Vec::with_capacity(requests.len());
        let batch = requests
            .into_iter()
            .map(|request| {
                let (sender, receiver) = oneshot::channel();
                receivers.push(receiver);
                let sink: Sink = Box::new(move |outcome| {
                    // The future was dropped: nobody wants the outcome any more.
                    let _ = sender.send(outcome);
                });
                (request, sink)
            })
            .collect();
        let ids = self.shared.submit_sinks(batch, options)?;
        let mut guard = CancelOnDrop { shared: &self.shared, ids };
        let mut outcomes = Vec::with_capacity(receivers.len());
        for receiver in receivers {
            // A sink dropped unfilled means the client went away under the request.
            outcomes.push(receiver.await.unwrap_or(Outcome::Failed(Error::Cancelled)));
        }
        guard.ids.clear();
        Ok(outcomes)
    }
}

/// Cancels requests whose future was dropped before they completed.
struct CancelOnDrop<'a> {
    shared: &'a SharedClient,
    ids: Vec<RequestId>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        for &id in &self.ids {
            self.shared.cancel(id);
        }
    }
}
