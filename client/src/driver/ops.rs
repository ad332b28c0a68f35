//! The convenience operations of `Client`: one request each, typed results.

use super::Client;
use crate::error::Error;
use crate::request::{CasOutcome, Reply, Request, RequestId, Value};
use crate::transport::Transport;
use proto::{PartitionMap, Status};
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

fn ok_version(reply: Reply) -> Result<u64, Error> {
    match reply.status {
        Status::Ok => Ok(reply.version),
        status => Err(Error::Status(status)),
    }
}
