//! The convenience operations of `Client`: one request each, typed results.

use super::Client;
use crate::error::Error;
use crate::outcome::Outcome;
use crate::request::{CasOutcome, IncrOutcome, Reply, Request, RequestId, Value, ValueLocation};
use crate::transport::Transport;
use proto::{decode_scan_page, BlobReference, PartitionMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

impl<T: Transport> Client<T> {
    /// The value of `key`, or `None` when it does not exist.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Value>, Error> {
        self.call(Request::Get { key: key.to_vec() }).into_value()
    }

    /// Writes `value` under `key`; returns the version it got.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<u64, Error> {
        self.call(Request::Put { key: key.to_vec(), value: value.to_vec() }).into_version()
    }

    /// Removes `key`; returns whether it existed.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        self.call(Request::Delete { key: key.to_vec() }).into_deleted()
    }

    /// Writes `value` under `key` if its version is `expected_version` (0: only if absent).
    ///
    /// A counter as a CAS loop, for comparison (`incr` does it in one round trip, and the
    /// server never lets the count below the floor, whoever counts at once):
    ///
    /// ```no_run
    /// use client::{CasOutcome, Client, ClientConfig};
    ///
    /// /// Adds `by` to the decimal counter at `key` unless it would drop below `floor`;
    /// /// returns the new value, or `None` when refused.
    /// fn add(client: &mut Client, key: &[u8], by: i64, floor: i64) -> Result<Option<i64>, client::Error> {
    ///     let (mut current, mut version) = match client.get(key)? {
    ///         Some(value) => (parse(&value.bytes), value.version),
    ///         None => (0, 0), // expected version 0: "only if still absent"
    ///     };
    ///     loop {
    ///         let next = current + by;
    ///         if next < floor {
    ///             return Ok(None);
    ///         }
    ///         match client.cas(key, version, next.to_string().as_bytes())? {
    ///             CasOutcome::Swapped { .. } => return Ok(Some(next)),
    ///             // Someone else won: read again and retry.
    ///             CasOutcome::Mismatch { .. } => match client.get(key)? {
    ///                 Some(value) => (current, version) = (parse(&value.bytes), value.version),
    ///                 None => (current, version) = (0, 0),
    ///             },
    ///         }
    ///     }
    /// }
    ///
    /// fn parse(bytes: &[u8]) -> i64 {
    ///     std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
    /// }
    ///
    /// let mut client = Client::connect(ClientConfig::new(vec!["127.0.0.1:7000".parse()?]))?;
    /// client.put(b"budget", b"100")?;
    /// assert_eq!(add(&mut client, b"budget", -30, 0)?, Some(70));
    /// assert_eq!(add(&mut client, b"budget", -80, 0)?, None, "would go below the floor");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cas(
        &mut self,
        key: &[u8],
        expected_version: u64,
        value: &[u8],
    ) -> Result<CasOutcome, Error> {
        let request = Request::Cas { key: key.to_vec(), expected_version, value: value.to_vec() };
        self.call(request).into_cas()
    }

    /// Writes `value` under `key` to live `ttl_secs` seconds (0: for good); returns the
    /// version it got. The key reads as absent from then on, and its space is reclaimed.
    pub fn put_with_ttl(&mut self, key: &[u8], value: &[u8], ttl_secs: u32) -> Result<u64, Error> {
        let request =
            Request::PutWith { key: key.to_vec(), value: value.to_vec(), ttl_secs: Some(ttl_secs) };
        self.call(request).into_version()
    }

    /// `cas` that, on a mismatch, also returns the key's current value (when it fits one
    /// datagram), so a retry needs no GET: `Ok(Err((current_version, current_value)))`.
    ///
    /// ```no_run
    /// use client::{Client, ClientConfig};
    ///
    /// let mut client = Client::connect(ClientConfig::new(vec!["127.0.0.1:7000".parse()?]))?;
    /// // Append to a list kept as one value: one round trip per try.
    /// let (mut list, mut version) = match client.get(b"list")? {
    ///     Some(value) => (value.bytes, value.version),
    ///     None => (Vec::new(), 0),
    /// };
    /// loop {
    ///     let mut next = list.clone();
    ///     next.extend_from_slice(b"item;");
    ///     match client.cas_or_current(b"list", version, &next)? {
    ///         Ok(_) => break,
    ///         Err((current, value)) => {
    ///             version = current;
    ///             list = match value {
    ///                 Some(value) => value,
    ///                 None if current == 0 => Vec::new(), // deleted meanwhile
    ///                 None => client.get(b"list")?.map(|v| v.bytes).unwrap_or_default(),
    ///             };
    ///         }
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn cas_or_current(
        &mut self,
        key: &[u8],
        expected_version: u64,
        value: &[u8],
    ) -> Result<Result<u64, (u64, Option<Vec<u8>>)>, Error> {
        let request = Request::CasWith {
            key: key.to_vec(),
            expected_version,
            value: value.to_vec(),
            ttl_secs: None,
            return_value: true,
        };
        match self.call(request) {
            Outcome::Done(reply) => Ok(Ok(reply.version)),
            Outcome::Mismatch { current_version, current_value } => {
                Ok(Err((current_version, current_value)))
            }
            other => other.into_version().map(Ok),
        }
    }

    /// Adds `by` (negative: subtracts) to the decimal counter at `key` (an absent key counts
    /// 0), unless the result would be below `floor`: one round trip, exactly once, however
    /// many clients count at once.
    ///
    /// ```no_run
    /// use client::{Client, ClientConfig, IncrOutcome};
    ///
    /// let mut client = Client::connect(ClientConfig::new(vec!["127.0.0.1:7000".parse()?]))?;
    /// client.put(b"budget", b"100")?;
    /// assert_eq!(client.incr(b"budget", -30, Some(0))?, IncrOutcome::Counted { count: 70 });
    /// // Would go below the floor: refused, nothing written, the count as it is.
    /// assert_eq!(client.incr(b"budget", -80, Some(0))?, IncrOutcome::BelowFloor { count: 70 });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn incr(&mut self, key: &[u8], by: i64, floor: Option<i64>) -> Result<IncrOutcome, Error> {
        self.incr_with_ttl(key, by, floor, None)
    }

    /// `incr` that also sets the key's expiry to `ttl_secs` from now (`Some(0)`: none;
    /// `None`: keep the key's expiry, as `incr` does).
    pub fn incr_with_ttl(
        &mut self,
        key: &[u8],
        by: i64,
        floor: Option<i64>,
        ttl_secs: Option<u32>,
    ) -> Result<IncrOutcome, Error> {
        self.call(Request::Incr { key: key.to_vec(), by, floor, ttl_secs }).into_count()
    }

    /// Gives `key` a new expiry, `ttl_secs` from now (0: none); returns whether it existed.
    pub fn touch(&mut self, key: &[u8], ttl_secs: u32) -> Result<bool, Error> {
        self.call(Request::Touch { key: key.to_vec(), ttl_secs: Some(ttl_secs) }).into_deleted()
    }

    /// The values of `keys`, in order, waiting for all of them; the first error, if any, is
    /// returned. GETs to one server travel packed in shared datagrams. `start_get_many` is the
    /// same without blocking, with a deadline and each key's error.
    pub fn get_many<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<Vec<Option<Value>>, Error> {
        let ids: Vec<RequestId> = keys
            .iter()
            .map(|key| self.submit(Request::Get { key: key.as_ref().to_vec() }))
            .collect();
        self.wait_all(&ids).into_iter().map(Outcome::into_value).collect()
    }

    /// One page of partition `partition`'s keys after `after` (empty: from the first), in byte
    /// order, and whether more may follow.
    pub fn scan(&mut self, partition: u32, after: &[u8]) -> Result<(Vec<Vec<u8>>, bool), Error> {
        let reply = self.call(Request::Scan { partition, after: after.to_vec() }).into_reply()?;
        let keys = decode_scan_page(&reply.value).map_err(|_| Error::BadReply("scan page"))?;
        Ok((keys.into_iter().map(<[u8]>::to_vec).collect(), reply.version != 0))
    }

    /// Every key of partition `partition`, in byte order, page after page. A key live during
    /// the whole listing is listed exactly once; keys written or deleted meanwhile may or may
    /// not be.
    pub fn keys(&mut self, partition: u32) -> Result<Vec<Vec<u8>>, Error> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        loop {
            let after = keys.last().map_or(&[][..], Vec::as_slice);
            let (page, more) = self.scan(partition, after)?;
            let empty = page.is_empty();
            keys.extend(page);
            if !more || empty {
                return Ok(keys);
            }
        }
    }

    /// Where `key`'s value is: the value itself when it is kept in the log, or the blob
    /// reference of a big value and the server to fetch its chunks from; `None` when absent.
    pub fn get_reference(&mut self, key: &[u8]) -> Result<Option<ValueLocation>, Error> {
        location_of(self.call(Request::GetRef { key: key.to_vec() }))
    }

    /// `get_reference` of every key of `keys`, in order, the requests in flight together.
    /// Waits for all of them; the first error, if any, is returned.
    pub fn get_references<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
    ) -> Result<Vec<Option<ValueLocation>>, Error> {
        let ids: Vec<RequestId> = keys
            .iter()
            .map(|key| self.submit(Request::GetRef { key: key.as_ref().to_vec() }))
            .collect();
        self.wait_all(&ids).into_iter().map(location_of).collect()
    }

    /// The chunk named `hash`, from `server`, checked against its hash (`Error::BadReply` when
    /// what arrived does not hash to it; `Error::Status(NotFound)` when no key references it).
    pub fn fetch_chunk(&mut self, server: SocketAddr, hash: &[u8; 32]) -> Result<Vec<u8>, Error> {
        checked_chunk(self.call(Request::Chunk { server, hash: *hash }), hash)
    }

    /// Bytes `[offset, offset + len)` of the chunk named `hash` (clipped to its end), pulling
    /// only the fragments covering them. Unlike `fetch_chunk` the bytes cannot be checked
    /// against the hash (that takes the whole chunk). `offset` must lie inside the chunk.
    pub fn fetch_chunk_range(
        &mut self,
        server: SocketAddr,
        hash: &[u8; 32],
        offset: u32,
        len: u32,
    ) -> Result<Vec<u8>, Error> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let request = Request::ChunkRange { server, hash: *hash, offset, len };
        Ok(self.call(request).into_reply()?.value)
    }

    /// A whole blob value from its reference: every chunk fetched from `server` (several in
    /// flight), each checked against its hash, and the length checked.
    pub fn fetch_blob(
        &mut self,
        server: SocketAddr,
        reference: &BlobReference,
    ) -> Result<Vec<u8>, Error> {
        const CHUNKS_IN_FLIGHT: usize = 8;
        let mut value = Vec::with_capacity(reference.value_len as usize);
        for hashes in reference.hashes.chunks(CHUNKS_IN_FLIGHT) {
            let ids: Vec<RequestId> = hashes
                .iter()
                .map(|hash| self.submit(Request::Chunk { server, hash: *hash }))
                .collect();
            for (outcome, hash) in self.wait_all(&ids).into_iter().zip(hashes) {
                value.extend_from_slice(&checked_chunk(outcome, hash)?);
            }
        }
        if value.len() as u64 != reference.value_len {
            return Err(Error::BadReply("blob chunks do not add up to the value's length"));
        }
        Ok(value)
    }

    /// Checks that `server` answers; returns the time the exchange took, resends included.
    pub fn ping(&mut self, server: SocketAddr) -> Result<Duration, Error> {
        let started = Instant::now();
        self.call(Request::Ping { server }).into_reply()?;
        Ok(started.elapsed())
    }

    /// `server`'s counters, a JSON object.
    pub fn stats(&mut self, server: SocketAddr) -> Result<String, Error> {
        let reply = self.call(Request::Stats { server }).into_reply()?;
        String::from_utf8(reply.value).map_err(|_| Error::BadReply("stats are not utf-8"))
    }

    /// Fetches the partition map from the first configured server that answers, and routes by
    /// it from now on.
    pub fn map(&mut self) -> Result<PartitionMap, Error> {
        let servers = self.core.servers().to_vec();
        let mut last_error = Error::Config("no servers");
        for server in servers {
            match self.call(Request::Map { server }).into_reply() {
                Ok(reply) => {
                    return PartitionMap::decode(&reply.value)
                        .map_err(|_| Error::BadReply("partition map"));
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }
}

fn location_of(outcome: Outcome) -> Result<Option<ValueLocation>, Error> {
    match outcome {
        Outcome::Done(reply) if reply.reference => {
            let reference = BlobReference::decode(&reply.value)
                .map_err(|_| Error::BadReply("blob reference"))?;
            Ok(Some(ValueLocation::Blob {
                reference,
                version: reply.version,
                server: reply.server,
            }))
        }
        other => Ok(other.into_value()?.map(ValueLocation::Inline)),
    }
}

fn checked_chunk(outcome: Outcome, hash: &[u8; 32]) -> Result<Vec<u8>, Error> {
    let reply: Reply = outcome.into_reply()?;
    if blake3::hash(&reply.value).as_bytes() != hash {
        return Err(Error::BadReply("chunk does not match its hash"));
    }
    Ok(reply.value)
}
