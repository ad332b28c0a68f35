//! Why a request failed.

use proto::Status;
use std::fmt;
use std::net::SocketAddr;

/// Why a request failed: it got no answer. Statuses that are answers (NOT_FOUND, a CAS
/// VERSION_MISMATCH) are never errors: they are `Outcome::NotFound` and `Outcome::Mismatch`.
/// A write that failed with `Timeout`, `DeadlineExceeded`, `Cancelled`, `Io` or a `Status`
/// after it was sent may still have been applied (exactly once): only an answer says.
#[derive(Debug)]
pub enum Error {
    /// No reply within the retry budget of every server tried.
    Timeout {
        /// Transmissions counted against the budget, over all servers tried.
        attempts: u32,
        /// The last server tried.
        server: SocketAddr,
    },
    /// The server refused the request with this status (for instance `TooLarge`, `NoSpace`,
    /// or `Busy` when it was still busy at the end of the budget).
    Status(Status),
    /// A key longer than `proto::KEY_BYTES_MAX`; nothing was sent.
    KeyTooLong {
        /// Length of the key.
        len: usize,
    },
    /// `ClientConfig::in_flight_max` requests were already in flight; nothing was sent.
    /// `try_submit` reports it before anything is queued, `capacity` tells it in advance.
    InFlightFull,
    /// The request's deadline (`RequestOptions::deadline`) passed before an answer came.
    DeadlineExceeded,
    /// The caller cancelled the request (`cancel`) before an answer came.
    Cancelled,
    /// A fragmented read was restarted `read_restarts_max` times because the value kept
    /// changing under it.
    ValueKeptChanging {
        /// Restarts made.
        restarts: u32,
    },
    /// A reply that cannot be understood (an undecodable partition map, a bad fragment).
    BadReply(&'static str),
    /// The configuration is inconsistent.
    Config(&'static str),
    /// A server's partition map names another cluster than the one this client already
    /// talks to (two independent nodes, or members of two clusters, in one `--server` list):
    /// nothing is sent to it, so two data sets never mix.
    ForeignCluster {
        /// The server.
        server: SocketAddr,
        /// The cluster its map names.
        cluster: u64,
        /// The cluster of the client's map.
        expected: u64,
    },
    /// The transport failed.
    Io(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout { attempts, server } => {
                write!(f, "timed out after {attempts} attempts on {server}")
            }
            Error::Status(status) => f.write_str(status.describe()),
            Error::KeyTooLong { len } => {
                write!(f, "key too long ({len} bytes, at most {})", proto::KEY_BYTES_MAX)
            }
            Error::InFlightFull => f.write_str("too many requests in flight"),
            Error::DeadlineExceeded => f.write_str("deadline exceeded"),
            Error::Cancelled => f.write_str("cancelled"),
            Error::ValueKeptChanging { restarts } => {
                write!(f, "the value kept changing during the read ({restarts} restarts)")
            }
            Error::BadReply(why) => write!(f, "bad reply: {why}"),
            Error::Config(why) => write!(f, "invalid config: {why}"),
            Error::ForeignCluster { server, cluster, expected } => write!(
                f,
                "server {server} belongs to another cluster ({cluster:#018x}, not \
                 {expected:#018x}): refusing to mix two data sets (list servers of one cluster)"
            ),
            Error::Io(error) => write!(f, "i/o error: {error}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(error) => Some(error),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Error::Io(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_short_and_lower_case() {
        let server = "127.0.0.1:7000".parse().unwrap();
        let timeout = Error::Timeout { attempts: 8, server };
        assert_eq!(timeout.to_string(), "timed out after 8 attempts on 127.0.0.1:7000");
        assert_eq!(Error::Status(Status::NotFound).to_string(), "not found");
        assert_eq!(Error::Status(Status::TooLarge).to_string(), "value too large");
        assert_eq!(Error::DeadlineExceeded.to_string(), "deadline exceeded");
        assert_eq!(
            Error::ValueKeptChanging { restarts: 9 }.to_string(),
            "the value kept changing during the read (9 restarts)"
        );
        assert_eq!(
            Error::KeyTooLong { len: 300 }.to_string(),
            "key too long (300 bytes, at most 250)"
        );
    }
}
