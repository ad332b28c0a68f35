//! The codes every call returns (`cradle_status` in `cradle.h`, same numbers).

use client::{Error, Status};
use std::ffi::CStr;

/// Done: written, found, deleted, swapped.
pub const CRADLE_OK: i32 = 0;
/// GET, DELETE: the key does not exist (an answer, not a failure).
pub const CRADLE_NOT_FOUND: i32 = 1;
/// CAS: the key's version was not the expected one (an answer, not a failure).
pub const CRADLE_VERSION_MISMATCH: i32 = 2;
/// GET: the value is longer than the buffer; its length was written.
pub const CRADLE_BUFFER_TOO_SMALL: i32 = 3;
/// INCR: the count would have gone below the floor; nothing was written (an answer).
pub const CRADLE_BELOW_FLOOR: i32 = 4;
/// No answer within the retry budget of every server (a write may have been applied).
pub const CRADLE_TIMEOUT: i32 = 10;
/// The call's timeout (`call_timeout_ms`) passed first (a write may have been applied).
pub const CRADLE_DEADLINE_EXCEEDED: i32 = 11;
/// `in_flight_max` requests were in flight (threads sharing a handle); nothing was sent.
pub const CRADLE_IN_FLIGHT_FULL: i32 = 12;
/// The handle was closed under the call.
pub const CRADLE_CANCELLED: i32 = 13;
/// The server refused the request (too large, no space, busy, ...: see `cradle_last_error`).
pub const CRADLE_REFUSED: i32 = 14;
/// The value is over 16 MiB.
pub const CRADLE_TOO_LARGE: i32 = 15;
/// A key over 250 bytes; nothing was sent.
pub const CRADLE_KEY_TOO_LONG: i32 = 16;
/// A NULL pointer, an unparsable server list.
pub const CRADLE_INVALID_ARGUMENT: i32 = 20;
/// The socket failed.
pub const CRADLE_IO: i32 = 21;
/// A reply that could not be understood.
pub const CRADLE_BAD_REPLY: i32 = 22;
/// A bug in cradle, caught at the boundary (a panic): see `cradle_last_error`.
pub const CRADLE_INTERNAL: i32 = 99;

/// The code of a failure.
pub(crate) fn code_of(error: &Error) -> i32 {
    match error {
        Error::Timeout { .. } => CRADLE_TIMEOUT,
        Error::DeadlineExceeded => CRADLE_DEADLINE_EXCEEDED,
        Error::InFlightFull => CRADLE_IN_FLIGHT_FULL,
        Error::Cancelled => CRADLE_CANCELLED,
        Error::Status(Status::TooLarge) => CRADLE_TOO_LARGE,
        Error::Status(_) | Error::ValueKeptChanging { .. } => CRADLE_REFUSED,
        Error::KeyTooLong { .. } => CRADLE_KEY_TOO_LONG,
        // A server list that mixes clusters is a configuration error.
        Error::Config(_) | Error::ForeignCluster { .. } => CRADLE_INVALID_ARGUMENT,
        Error::Io(_) => CRADLE_IO,
        Error::BadReply(_) => CRADLE_BAD_REPLY,
    }
}

/// The name of a code, as a static C string.
pub(crate) fn name_of(code: i32) -> &'static CStr {
    match code {
        CRADLE_OK => c"CRADLE_OK",
        CRADLE_NOT_FOUND => c"CRADLE_NOT_FOUND",
        CRADLE_VERSION_MISMATCH => c"CRADLE_VERSION_MISMATCH",
        CRADLE_BUFFER_TOO_SMALL => c"CRADLE_BUFFER_TOO_SMALL",
        CRADLE_BELOW_FLOOR => c"CRADLE_BELOW_FLOOR",
        CRADLE_TIMEOUT => c"CRADLE_TIMEOUT",
        CRADLE_DEADLINE_EXCEEDED => c"CRADLE_DEADLINE_EXCEEDED",
        CRADLE_IN_FLIGHT_FULL => c"CRADLE_IN_FLIGHT_FULL",
        CRADLE_CANCELLED => c"CRADLE_CANCELLED",
        CRADLE_REFUSED => c"CRADLE_REFUSED",
        CRADLE_TOO_LARGE => c"CRADLE_TOO_LARGE",
        CRADLE_KEY_TOO_LONG => c"CRADLE_KEY_TOO_LONG",
        CRADLE_INVALID_ARGUMENT => c"CRADLE_INVALID_ARGUMENT",
        CRADLE_IO => c"CRADLE_IO",
        CRADLE_BAD_REPLY => c"CRADLE_BAD_REPLY",
        CRADLE_INTERNAL => c"CRADLE_INTERNAL",
        _ => c"CRADLE_UNKNOWN",
    }
}
