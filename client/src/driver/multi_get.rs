//! A multi-get the caller starts, goes on with other work, and collects later.

use super::Client;
use crate::error::Error;
use crate::outcome::Outcome;
use crate::request::{Request, RequestId, RequestOptions, Value};
use crate::transport::Transport;
use proto::KEY_BYTES_MAX;
use std::time::{Duration, Instant};

/// GETs of several keys in flight together, started by `Client::start_get_many`: their
/// values in key order once every one completed. Finish it with `Client::finish_get_many`
/// (or poll it with `Client::poll_get_many`), or abandon it with `Client::cancel_get_many`:
/// until then its completions are kept for it.
#[derive(Debug)]
#[must_use = "a multi-get's completions are kept until it is finished or cancelled"]
pub struct MultiGet {
    ids: Vec<RequestId>,
    results: Vec<Option<Result<Option<Value>, Error>>>,
    missing: usize,
}

impl MultiGet {
    /// Keys asked for.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no key was asked for.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether every GET completed (`Client::poll_get_many` updates it).
    pub fn is_done(&self) -> bool {
        self.missing == 0
    }

    /// Request ids of the GETs, in key order (to `Client::cancel` one).
    pub fn ids(&self) -> &[RequestId] {
        &self.ids
    }
}

impl<T: Transport> Client<T> {
    /// Starts a GET of every key of `keys` and returns at once, the GETs sent (packed into
    /// as few datagrams per server as fit, 16 small keys in one). All or nothing: when there
    /// is no room for all of them (`capacity() < keys.len()`: `Error::InFlightFull`) or a key
    /// is too long (`Error::KeyTooLong`), none is sent.
    ///
    /// ```no_run
    /// use client::{Client, ClientConfig, RequestOptions};
    /// use std::time::{Duration, Instant};
    ///
    /// let mut client = Client::connect(ClientConfig::new(vec!["127.0.0.1:7000".parse()?]))?;
    /// let keys: Vec<String> = (0..16).map(|i| format!("segment:{i}")).collect();
    /// // A 2 ms budget for the whole multi-get: a key not back by then is DeadlineExceeded.
    /// let options = RequestOptions::within(Instant::now(), Duration::from_millis(2));
    /// let mut pending = client.start_get_many(&keys, options)?;
    /// while !client.poll_get_many(&mut pending) {
    ///     // ... other work of this thread: the GETs are on the wire meanwhile ...
    /// }
    /// for (key, value) in keys.iter().zip(client.finish_get_many(pending)) {
    ///     match value {
    ///         Ok(Some(value)) => println!("{key}: {} bytes", value.bytes.len()),
    ///         Ok(None) => println!("{key}: absent"),
    ///         Err(error) => println!("{key}: {error}"),
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_get_many<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
        options: RequestOptions,
    ) -> Result<MultiGet, Error> {
        if let Some(key) = keys.iter().find(|key| key.as_ref().len() > KEY_BYTES_MAX) {
            return Err(Error::KeyTooLong { len: key.as_ref().len() });
        }
        if self.capacity() < keys.len() {
            return Err(Error::InFlightFull);
        }
        let now = Instant::now();
        let mut ids = Vec::with_capacity(keys.len());
        for key in keys {
            let request = Request::Get { key: key.as_ref().to_vec() };
            let id = self.core.try_submit(now, request, options).expect("room checked");
            self.claimed.insert(id);
            ids.push(id);
        }
        self.flush();
        let results = ids.iter().map(|_| None).collect();
        Ok(MultiGet { missing: ids.len(), ids, results })
    }

    /// Makes progress without blocking (`poll`) and takes `multi`'s completions; returns
    /// whether every GET of it completed.
    pub fn poll_get_many(&mut self, multi: &mut MultiGet) -> bool {
        self.poll();
        self.take_parked(multi);
        multi.is_done()
    }

    /// Waits up to `timeout` for `multi` to complete; returns whether it did.
    pub fn wait_get_many(&mut self, multi: &mut MultiGet, timeout: Duration) -> bool {
        let limit = Instant::now() + timeout;
        self.take_parked(multi);
        while !multi.is_done() && Instant::now() < limit {
            self.drive(Some(limit));
            self.take_parked(multi);
        }
        multi.is_done()
    }

    /// Waits for every GET of `multi` (each is bounded by its retry budget and deadline) and
    /// returns each key's value (`None`: absent) or error, in key order.
    pub fn finish_get_many(&mut self, mut multi: MultiGet) -> Vec<Result<Option<Value>, Error>> {
        self.take_parked(&mut multi);
        while !multi.is_done() {
            self.drive(None);
            self.take_parked(&mut multi);
        }
        multi.results.into_iter().map(|result| result.expect("every GET completed")).collect()
    }

    /// Abandons `multi`: its GETs still in flight are cancelled, its completions dropped.
    pub fn cancel_get_many(&mut self, multi: MultiGet) {
        for &id in &multi.ids {
            self.core.cancel(id);
        }
        self.collect();
        for id in &multi.ids {
            self.parked.remove(id);
            self.claimed.remove(id);
        }
    }

    fn take_parked(&mut self, multi: &mut MultiGet) {
        for (slot, id) in multi.ids.iter().enumerate() {
            if multi.results[slot].is_some() {
                continue;
            }
            if let Some(outcome) = self.parked.remove(id) {
                multi.results[slot] = Some(Outcome::into_value(outcome));
                multi.missing -= 1;
            }
        }
    }
}
