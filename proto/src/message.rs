//! Messages: header + key + value, several per datagram.

use crate::header::{flags, Header, HeaderFields, Opcode, Status, HEADER_BYTES};
use crate::{FRAGMENTS_MAX, FRAGMENT_BYTES, KEY_BYTES_MAX};
use core::fmt;
use core::ops::Range;

/// Why bytes are not a valid message. Receivers count these and drop the rest of the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Fewer bytes than the header or than its lengths announce.
    Truncated,
    /// Not our magic number.
    BadMagic,
    /// A protocol version this build does not speak.
    BadVersion,
    /// Unknown opcode.
    BadOpcode,
    /// Unknown status.
    BadStatus,
    /// Unknown flag bits or a non-zero reserved field.
    BadFlags,
    /// Key longer than `KEY_BYTES_MAX`.
    KeyTooLong,
    /// Fragment fields that contradict each other or the value length.
    BadFragment,
    /// A datagram longer than `DATAGRAM_BYTES_ACCEPTED`.
    Oversized,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The output buffer cannot hold the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall;

/// One checked message borrowed from a datagram.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// The header's fields; `opcode()` and `status()` are known values.
    pub header: HeaderFields,
    /// The key bytes.
    pub key: &'a [u8],
    /// The value bytes this message carries (one fragment, when FRAGMENT is set).
    pub value: &'a [u8],
}

impl<'a> Message<'a> {
    /// Checks and borrows the message at the start of `bytes`; returns it and the bytes after it.
    pub fn parse(bytes: &'a [u8]) -> Result<(Message<'a>, &'a [u8]), Malformed> {
        let header = Header::new_checked(bytes)?;
        if header.reserved() != 0 {
            return Err(Malformed::BadFlags);
        }
        let h = header.fields();
        if h.flags & !flags::KNOWN != 0 {
            return Err(Malformed::BadFlags);
        }
        if Opcode::from_wire(h.opcode).is_none() {
            return Err(Malformed::BadOpcode);
        }
        if Status::from_wire(h.status).is_none() {
            return Err(Malformed::BadStatus);
        }
        let key_len = usize::from(h.key_len);
        if key_len > KEY_BYTES_MAX {
            return Err(Malformed::KeyTooLong);
        }
        let value_len = h.value_len as usize;
        let body = &bytes[HEADER_BYTES..];
        if body.len() < key_len || body.len() - key_len < value_len {
            return Err(Malformed::Truncated);
        }
        check_fragment_fields(&h)?;
        let (key, rest) = body.split_at(key_len);
        let (value, rest) = rest.split_at(value_len);
        Ok((Message { header: h, key, value }, rest))
    }

    /// Encoded length of this message.
    pub fn len(&self) -> usize {
        HEADER_BYTES + self.key.len() + self.value.len()
    }

    /// Never true: a message has at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Typed opcode (checked by `parse`).
    pub fn opcode(&self) -> Opcode {
        Opcode::from_wire(self.header.opcode).unwrap_or(Opcode::Ping)
    }

    /// Typed status (checked by `parse`).
    pub fn status(&self) -> Status {
        Status::from_wire(self.header.status).unwrap_or(Status::Malformed)
    }
}

fn check_fragment_fields(h: &HeaderFields) -> Result<(), Malformed> {
    let fragment = h.has(flags::FRAGMENT);
    let range = h.has(flags::RANGE);
    let partial = h.has(flags::PARTIAL);
    if u8::from(fragment) + u8::from(range) + u8::from(partial) > 1 {
        return Err(Malformed::BadFragment);
    }
    if fragment {
        // total_len may exceed VALUE_BYTES_MAX (the receiver answers TOO_LARGE), but the count
        // must match it, so a huge count cannot come with a small value.
        if h.frag_count != fragment_count(h.total_len) || h.frag_index >= h.frag_count {
            return Err(Malformed::BadFragment);
        }
        let span = fragment_span(h.total_len, h.frag_index);
        if h.value_len as usize != span.len() {
            return Err(Malformed::BadFragment);
        }
    } else if range {
        if h.value_len != 0
            || h.frag_count == 0
            || h.frag_count > FRAGMENTS_MAX
            || h.frag_index >= FRAGMENTS_MAX
        {
            return Err(Malformed::BadFragment);
        }
    } else if partial {
        if h.value_len != 0 || h.frag_index > FRAGMENTS_MAX {
            return Err(Malformed::BadFragment);
        }
    } else if h.total_len != h.value_len || h.frag_index != 0 || h.frag_count != 0 {
        return Err(Malformed::BadFragment);
    }
    Ok(())
}

/// Number of fragments of a `total_len`-byte value (at least 1).
pub fn fragment_count(total_len: u32) -> u32 {
    (total_len as usize).div_ceil(FRAGMENT_BYTES).max(1) as u32
}

/// Byte range of fragment `index` within a `total_len`-byte value (empty past the end).
pub fn fragment_span(total_len: u32, index: u32) -> Range<usize> {
    let total = total_len as usize;
    let start = (index as usize).saturating_mul(FRAGMENT_BYTES).min(total);
    let end = start.saturating_add(FRAGMENT_BYTES).min(total);
    start..end
}

/// Iterates over the messages of a datagram; stops after the first malformed one.
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    rest: &'a [u8],
    /// An error to yield before (instead of) parsing `rest`.
    pending: Option<Malformed>,
}

impl<'a> Messages<'a> {
    /// Messages of `datagram`. An empty or oversized datagram yields one `Err`.
    pub fn new(datagram: &'a [u8]) -> Self {
        let pending = if datagram.is_empty() {
            Some(Malformed::Truncated)
        } else if datagram.len() > crate::DATAGRAM_BYTES_ACCEPTED {
            Some(Malformed::Oversized)
        } else {
            None
        };
        Messages { rest: datagram, pending }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.pending.take() {
            self.rest = &[];
            return Some(Err(error));
        }
        if self.rest.is_empty() {
            return None;
        }
        match Message::parse(self.rest) {
            Ok((message, rest)) => {
                self.rest = rest;
                Some(Ok(message))
            }
            Err(error) => {
                self.rest = &[];
                Some(Err(error))
            }
        }
    }
}

/// Encodes one message into `buf`; `key_len` and `value_len` are taken from the slices, and so
/// is `total_len` for a message that carries a whole value (no FRAGMENT, RANGE or PARTIAL).
/// Returns the bytes written.
pub fn encode_message(
    buf: &mut [u8],
    header: &HeaderFields,
    key: &[u8],
    value: &[u8],
) -> Result<usize, BufferTooSmall> {
    let len = HEADER_BYTES + key.len() + value.len();
    if buf.len() < len || key.len() > usize::from(u16::MAX) || value.len() > u32::MAX as usize {
        return Err(BufferTooSmall);
    }
    let mut h = *header;
    h.key_len = key.len() as u16;
    h.value_len = value.len() as u32;
    if h.flags & (flags::FRAGMENT | flags::RANGE | flags::PARTIAL) == 0 {
        h.total_len = h.value_len;
    }
    h.write(buf);
    buf[HEADER_BYTES..HEADER_BYTES + key.len()].copy_from_slice(key);
    buf[HEADER_BYTES + key.len()..len].copy_from_slice(value);
    Ok(len)
}
