//! Why a request failed.

use proto::Status;
use std::fmt;
use std::net::SocketAddr;

/// Why a request failed. Statuses that are answers (NOT_FOUND, a CAS VERSION_MISMATCH) are
/// not errors: they arrive as `Reply::status`.
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
    InFlightFull,
    /// A reply that cannot be understood (an undecodable partition map, a bad fragment).
    BadReply(&'static str),
    /// The configuration is inconsistent.
    Config(&'static str),
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
            Error::BadReply(why) => write!(f, "bad reply: {why}"),
            Error::Config(why) => write!(f, "invalid config: {why}"),
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
        assert_eq!(
            Error::KeyTooLong { len: 300 }.to_string(),
            "key too long (300 bytes, at most 250)"
        );
    }
}
