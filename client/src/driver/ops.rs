//! The convenience operations of `Client`: one request each, typed results.

use super::Client;
use crate::error::Error;
use crate::request::{CasOutcome, Reply, Request, RequestId, Value, ValueLocation};
use crate::transport::Transport;
use proto::{decode_scan_page, BlobReference, PartitionMap, Status};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

impl<T: Transport> Client<T> {
    /// The value of `key`, or `None` when it does not exist.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Value>, Error> {
        let reply = self.call(Request::Get { key: key.to_vec() })?;
        value_of(reply)
    }

    /// Writes `value` under `key`; returns the version it got.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<u64, Error> {
        let reply = self.call(Request::Put { key: key.to_vec(), value: value.to_vec() })?;
        ok_version(reply)
    }

    /// Removes `key`; returns whether it existed.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        let reply = self.call(Request::Delete { key: key.to_vec() })?;
        match reply.status {
            Status::Ok => Ok(true),
            Status::NotFound => Ok(false),
            status => Err(Error::Status(status)),
        }
    }

    /// Writes `value` under `key` if its version is `expected_version` (0: if absent).
    pub fn cas(
        &mut self,
        key: &[u8],
        expected_version: u64,
        value: &[u8],
    ) -> Result<CasOutcome, Error> {
        let request = Request::Cas { key: key.to_vec(), expected_version, value: value.to_vec() };
        let reply = self.call(request)?;
        match reply.status {
            Status::Ok => Ok(CasOutcome::Swapped { version: reply.version }),
            Status::VersionMismatch => Ok(CasOutcome::Mismatch { current_version: reply.version }),
            Status::NotFound => Ok(CasOutcome::Mismatch { current_version: 0 }),
            status => Err(Error::Status(status)),
        }
    }

    /// The values of `keys`, in order. GETs to one server travel packed in shared datagrams.
    /// Waits for all of them; the first error, if any, is returned.
    pub fn get_many<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<Vec<Option<Value>>, Error> {
        let ids: Vec<RequestId> = keys
            .iter()
            .map(|key| self.submit(Request::Get { key: key.as_ref().to_vec() }))
            .collect();
        self.wait_all(&ids).into_iter().map(|result| result.and_then(value_of)).collect()
    }

    /// One page of partition `partition`'s keys after `after` (empty: from the first), in byte
    /// order, and whether more may follow.
    pub fn scan(&mut self, partition: u32, after: &[u8]) -> Result<(Vec<Vec<u8>>, bool), Error> {
        let reply = self.call(Request::Scan { partition, after: after.to_vec() })?;
        if reply.status != Status::Ok {
            return Err(Error::Status(reply.status));
        }
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
        let reply = self.call(Request::GetRef { key: key.to_vec() })?;
        location_of(reply)
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
        self.wait_all(&ids).into_iter().map(|result| result.and_then(location_of)).collect()
    }

    /// The chunk named `hash`, from `server`, checked against its hash (`Error::BadReply` when
    /// what arrived does not hash to it; `Error::Status(NotFound)` when no key references it).
    pub fn fetch_chunk(&mut self, server: SocketAddr, hash: &[u8; 32]) -> Result<Vec<u8>, Error> {
        let reply = self.call(Request::Chunk { server, hash: *hash })?;
        checked_chunk(reply, hash)
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
        let reply = self.call(Request::ChunkRange { server, hash: *hash, offset, len })?;
        match reply.status {
            Status::Ok => Ok(reply.value),
            status => Err(Error::Status(status)),
        }
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
            for (result, hash) in self.wait_all(&ids).into_iter().zip(hashes) {
                value.extend_from_slice(&checked_chunk(result?, hash)?);
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
        self.call(Request::Ping { server })?;
        Ok(started.elapsed())
    }

    /// `server`'s counters, a JSON object.
    pub fn stats(&mut self, server: SocketAddr) -> Result<String, Error> {
        let reply = self.call(Request::Stats { server })?;
        String::from_utf8(reply.value).map_err(|_| Error::BadReply("stats are not utf-8"))
    }

    /// Fetches the partition map from the first configured server that answers, and routes by
    /// it from now on.
    pub fn map(&mut self) -> Result<PartitionMap, Error> {
        let servers = self.core.servers().to_vec();
        let mut last_error = Error::Config("no servers");
        for server in servers {
            match self.call(Request::Map { server }) {
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

fn value_of(reply: Reply) -> Result<Option<Value>, Error> {
    match reply.status {
        Status::Ok => Ok(Some(Value { bytes: reply.value, version: reply.version })),
        Status::NotFound => Ok(None),
        status => Err(Error::Status(status)),
    }
}

fn location_of(reply: Reply) -> Result<Option<ValueLocation>, Error> {
    match reply.status {
        Status::Ok if reply.reference => {
            let reference = BlobReference::decode(&reply.value)
                .map_err(|_| Error::BadReply("blob reference"))?;
            Ok(Some(ValueLocation::Blob {
                reference,
                version: reply.version,
                server: reply.server,
            }))
        }
        _ => Ok(value_of(reply)?.map(ValueLocation::Inline)),
    }
}

fn checked_chunk(reply: Reply, hash: &[u8; 32]) -> Result<Vec<u8>, Error> {
    if reply.status != Status::Ok {
        return Err(Error::Status(reply.status));
    }
    if blake3::hash(&reply.value).as_bytes() != hash {
        return Err(Error::BadReply("chunk does not match its hash"));
    }
    Ok(reply.value)
}

fn ok_version(reply: Reply) -> Result<u64, Error> {
    match reply.status {
        Status::Ok => Ok(reply.version),
        status => Err(Error::Status(status)),
    }
}
