//! How a request ended, in one type.

use crate::error::Error;
use crate::request::{CasOutcome, IncrOutcome, Reply, Value};
use proto::Status;

/// How a request ended: the one place to look. A server's *answers* are variants of their
/// own (a GET of an absent key is `NotFound`, a CAS on a moved version is `Mismatch`), and
/// `Failed` holds only requests that got no answer: refused, timed out, cancelled, past their
/// deadline. No answer status ever hides in `Failed`, and no refusal in `Done`.
///
/// The typed accessors turn it into what an operation returns: `into_value` for a GET,
/// `into_version` for a PUT, `into_deleted` for a DELETE (and a TOUCH), `into_cas` for a CAS,
/// `into_count` for an INCR; each keeps
/// `Failed`'s error as its `Err`.
///
/// ```
/// use client::{Outcome, Value};
///
/// fn describe(outcome: Outcome) -> String {
///     match outcome {
///         Outcome::Done(reply) => format!("{} bytes at version {}", reply.value.len(), reply.version),
///         Outcome::NotFound => "absent".to_string(),
///         Outcome::Mismatch { current_version, .. } => format!("moved on to {current_version}"),
///         Outcome::BelowFloor { count } => format!("refused: the count is {count}"),
///         Outcome::Failed(error) => format!("no answer: {error}"),
///     }
/// }
/// assert_eq!(describe(Outcome::NotFound), "absent");
/// assert_eq!(Outcome::NotFound.into_value().unwrap(), None::<Value>);
/// ```
#[derive(Debug)]
pub enum Outcome {
    /// The server did what was asked. GET: the key exists (`Reply::value`, `Reply::version`);
    /// PUT, CAS: written, `Reply::version` is the new version; DELETE: the key existed and is
    /// gone; PING, MAP, STATS, SCAN, CHUNK: answered (`Reply::value`). `Reply::status` is
    /// always `Status::Ok` here.
    Done(Reply),
    /// GET, DELETE, CHUNK: the key (the chunk) does not exist; nothing changed.
    NotFound,
    /// CAS: the key's version was not the expected one; nothing was written.
    Mismatch {
        /// The key's version now (0: the key is absent).
        current_version: u64,
        /// The key's value now, when the request asked (`Request::CasWith::return_value`)
        /// and it fit one datagram; `None` otherwise.
        current_value: Option<Vec<u8>>,
    },
    /// INCR: the result would have been below the request's floor; nothing was written.
    BelowFloor {
        /// The count now.
        count: i64,
    },
    /// The request got no answer, or was refused: why. A write that failed after it was sent
    /// may still have been applied (once): only an answer tells.
    Failed(Error),
}

impl Outcome {
    /// Whether the server answered (anything but `Failed`).
    pub fn is_answer(&self) -> bool {
        !matches!(self, Outcome::Failed(_))
    }

    /// A GET's result: the value, `None` when the key is absent.
    pub fn into_value(self) -> Result<Option<Value>, Error> {
        match self {
            Outcome::Done(reply) => Ok(Some(Value { bytes: reply.value, version: reply.version })),
            Outcome::NotFound => Ok(None),
            other => other.unexpected(),
        }
    }

    /// A PUT's result: the version the value got.
    pub fn into_version(self) -> Result<u64, Error> {
        match self {
            Outcome::Done(reply) => Ok(reply.version),
            other => other.unexpected(),
        }
    }

    /// A DELETE's result: whether the key existed.
    pub fn into_deleted(self) -> Result<bool, Error> {
        match self {
            Outcome::Done(_) => Ok(true),
            Outcome::NotFound => Ok(false),
            other => other.unexpected(),
        }
    }

    /// A CAS's result: swapped, or the version found instead.
    pub fn into_cas(self) -> Result<CasOutcome, Error> {
        match self {
            Outcome::Done(reply) => Ok(CasOutcome::Swapped { version: reply.version }),
            Outcome::Mismatch { current_version, .. } => {
                Ok(CasOutcome::Mismatch { current_version })
            }
            other => other.unexpected(),
        }
    }

    /// An INCR's result: the new count, or the current one when refused below the floor.
    pub fn into_count(self) -> Result<IncrOutcome, Error> {
        match self {
            Outcome::Done(reply) => match reply.count() {
                Some(count) => Ok(IncrOutcome::Counted { count }),
                // A resend answered after a failover by a replica that no longer knows it.
                None => Err(Error::BadReply("an INCR answered without its count")),
            },
            Outcome::BelowFloor { count } => Ok(IncrOutcome::BelowFloor { count }),
            other => other.unexpected(),
        }
    }

    /// The reply of a request that must succeed (MAP, STATS, PING, SCAN, CHUNK): `NotFound`
    /// becomes `Error::Status(NotFound)` (a chunk no key references any more).
    pub fn into_reply(self) -> Result<Reply, Error> {
        match self {
            Outcome::Done(reply) => Ok(reply),
            Outcome::NotFound => Err(Error::Status(Status::NotFound)),
            other => other.unexpected(),
        }
    }

    /// `Failed`'s error; an outcome the operation cannot have (a GET's outcome read as a CAS
    /// result) is `Error::BadReply`.
    fn unexpected<T>(self) -> Result<T, Error> {
        match self {
            Outcome::Failed(error) => Err(error),
            _ => Err(Error::BadReply("an outcome this operation cannot have")),
        }
    }
}

impl From<Result<Reply, Error>> for Outcome {
    /// The engine's completion (`ClientCore::poll_completion`) as an outcome.
    fn from(result: Result<Reply, Error>) -> Self {
        match result {
            Ok(reply) => match reply.status {
                Status::Ok => Outcome::Done(reply),
                Status::NotFound => Outcome::NotFound,
                Status::VersionMismatch => Outcome::Mismatch {
                    current_version: reply.version,
                    current_value: reply.current_value.then_some(reply.value),
                },
                Status::BelowFloor => match reply.count() {
                    Some(count) => Outcome::BelowFloor { count },
                    None => Outcome::Failed(Error::BadReply("BELOW_FLOOR without the count")),
                },
                // The engine completes with no other status (`is_answer` in engine/reply.rs).
                status => Outcome::Failed(Error::Status(status)),
            },
            Err(error) => Outcome::Failed(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: Status, version: u64) -> Reply {
        Reply {
            status,
            value: b"v".to_vec(),
            version,
            reference: false,
            current_value: false,
            server: "127.0.0.1:7000".parse().unwrap(),
        }
    }

    #[test]
    fn answers_and_failures_have_one_place_each() {
        assert!(matches!(Outcome::from(Ok(reply(Status::Ok, 3))), Outcome::Done(_)));
        assert!(matches!(Outcome::from(Ok(reply(Status::NotFound, 0))), Outcome::NotFound));
        assert!(matches!(
            Outcome::from(Ok(reply(Status::VersionMismatch, 9))),
            Outcome::Mismatch { current_version: 9, current_value: None }
        ));
        assert!(matches!(Outcome::from(Err(Error::Cancelled)), Outcome::Failed(Error::Cancelled)));
    }

    #[test]
    fn typed_accessors_give_each_operation_its_result() {
        let done = || Outcome::Done(reply(Status::Ok, 4));
        assert_eq!(done().into_value().unwrap(), Some(Value { bytes: b"v".to_vec(), version: 4 }));
        assert_eq!(done().into_version().unwrap(), 4);
        assert!(done().into_deleted().unwrap());
        assert!(!Outcome::NotFound.into_deleted().unwrap());
        assert_eq!(done().into_cas().unwrap(), CasOutcome::Swapped { version: 4 });
        let mismatch = Outcome::Mismatch { current_version: 2, current_value: None };
        assert_eq!(mismatch.into_cas().unwrap(), CasOutcome::Mismatch { current_version: 2 });
        assert!(matches!(
            Outcome::Failed(Error::DeadlineExceeded).into_value(),
            Err(Error::DeadlineExceeded)
        ));
        assert!(matches!(Outcome::NotFound.into_version(), Err(Error::BadReply(_))));
        assert!(matches!(Outcome::NotFound.into_reply(), Err(Error::Status(Status::NotFound))));
    }
}
