//! memcached's UDP protocol for the generator: an 8-byte frame header (request id, sequence
//! number, datagram count, reserved; big-endian) and the text protocol. Requests fit one
//! datagram (a multi-get is one `get k1 … kN` line); a reply may span several frames, which
//! are put back together in sequence order before it is read, every value byte for byte.

use super::engine::{Codec, Op, Outcome, REMAINING_PARTS};
use super::workload::{Keys, KEY_BYTES};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;

/// Frame header bytes.
const FRAME_BYTES: usize = 8;
/// Where the key starts in the SET template (`set ` is 4 bytes).
const KEY_OFFSET: usize = FRAME_BYTES + 4;
/// Largest request the generator sends; memcached reads a UDP request into one datagram.
pub(super) const REQUEST_BYTES_MAX: usize = 65_000;
/// Replies of several frames being put together at once; a request id maps to entry
/// `id % PARTIALS_MAX` (a reply whose entry is taken by a newer one is lost, and its
/// request times out: ids are consecutive, so that takes this many requests out at once).
const PARTIALS_MAX: usize = 1024;
/// Most frames one reply may have (memcached's frames carry up to 1,400 bytes each: 5.6 MB).
const FRAMES_MAX: u16 = 4096;

const NOT_STORED: u16 = 1;
const SERVER_ERROR: u16 = 2;
const CLIENT_ERROR: u16 = 3;
const ERROR: u16 = 4;
const TRUNCATED: u16 = 5;
const WRONG_VALUE: u16 = 6;
const OTHER: u16 = 15;

/// One reply of several frames, as far as it arrived.
#[derive(Debug, Default)]
struct Partial {
    live: bool,
    id: u16,
    total: u16,
    received: u16,
    /// Per sequence number, the frame's payload (empty until it arrives).
    frames: Vec<Vec<u8>>,
    seen: Vec<bool>,
}

/// The reassembly table, and the buffer a reply is put together in. Buffers are kept and
/// reused: an entry allocates only when it holds more frames or bytes than it did before.
#[derive(Debug)]
struct Reassembly {
    partials: Vec<Partial>,
    body: Vec<u8>,
}

/// Requests and replies of memcached's UDP protocol.
pub(super) struct MemcacheCodec {
    keys: Keys,
    server: SocketAddr,
    /// The value every key is set to (GET replies are checked against it, byte for byte).
    value: Vec<u8>,
    set_template: Vec<u8>,
    keys_per_get: usize,
    /// Per 16-bit request id, the keys its request asked for (a reply lists only those found)
    /// and the values listed so far.
    asked: Vec<Cell<u8>>,
    listed: Vec<Cell<u8>>,
    reassembly: RefCell<Reassembly>,
}

impl MemcacheCodec {
    /// Templates for `value_bytes`-byte values and GETs of up to `keys_per_get` keys, sent
    /// to `server`.
    pub(super) fn new(
        server: SocketAddr,
        keys: Keys,
        value_bytes: usize,
        keys_per_get: usize,
    ) -> Result<MemcacheCodec, String> {
        let placeholder = "k".repeat(KEY_BYTES);
        let frame = [0u8, 0, 0, 0, 0, 1, 0, 0];
        let value: Vec<u8> = (0..value_bytes).map(|i| b'a' + (i % 26) as u8).collect();
        let mut set_template = frame.to_vec();
        set_template
            .extend_from_slice(format!("set {placeholder} 0 0 {value_bytes}\r\n").as_bytes());
        set_template.extend_from_slice(&value);
        set_template.extend_from_slice(b"\r\n");
        if set_template.len() > REQUEST_BYTES_MAX {
            return Err(format!(
                "--value-bytes {value_bytes}: a memcached UDP request must fit one datagram"
            ));
        }
        let partials = (0..PARTIALS_MAX).map(|_| Partial::default()).collect();
        let reassembly = RefCell::new(Reassembly { partials, body: Vec::new() });
        let (asked, listed) = (vec![Cell::new(0); 1 << 16], vec![Cell::new(0); 1 << 16]);
        Ok(MemcacheCodec {
            keys,
            server,
            value,
            set_template,
            keys_per_get,
            asked,
            listed,
            reassembly,
        })
    }

    /// Bytes of a `get` of `keys` keys: frame, `get`, a space and a key each, CRLF.
    fn get_bytes(keys: usize) -> usize {
        FRAME_BYTES + 3 + keys * (1 + KEY_BYTES) + 2
    }

    /// Reads one reply body of request `id` (one frame, or the frames of one response put
    /// together). memcached 1.6 sends each value of a multi-get as a response of its own
    /// (each frame says "1 of 1"), the last one followed by `END`: the values are counted
    /// across the datagrams of a request, and `END` says the keys not listed were not found.
    fn answer(&self, id: u64, body: &[u8], done: &mut dyn FnMut(u64, u32, Outcome)) {
        if !body.starts_with(b"VALUE ") && body != b"END\r\n" {
            return done(id, REMAINING_PARTS, outcome_of(body));
        }
        let index = id as usize & 0xffff;
        let first = u32::from(self.listed[index].get());
        let found = &mut |part, outcome| done(id, first + part, outcome);
        match read_values(body, &self.value, found) {
            Ok((listed, ended)) => {
                let listed = first + listed;
                self.listed[index].set(listed.min(u32::from(u8::MAX)) as u8);
                if ended && listed < u32::from(self.asked[index].get()) {
                    done(id, REMAINING_PARTS, Outcome::Miss);
                }
            }
            Err(code) => done(id, REMAINING_PARTS, Outcome::Error(code)),
        }
    }
}

/// What a reply body that is not a list of values says.
fn outcome_of(body: &[u8]) -> Outcome {
    if body == b"STORED\r\n" {
        Outcome::Ok
    } else if body.starts_with(b"NOT_STORED") {
        Outcome::Error(NOT_STORED)
    } else if body.starts_with(b"SERVER_ERROR") {
        Outcome::Error(SERVER_ERROR)
    } else if body.starts_with(b"CLIENT_ERROR") {
        Outcome::Error(CLIENT_ERROR)
    } else if body.starts_with(b"ERROR") {
        Outcome::Error(ERROR)
    } else {
        Outcome::Error(OTHER)
    }
}

/// Reads `VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n` items, up to `END\r\n` or the end
/// of `body`, calling `found(i, outcome)` for the i-th: `Ok` if its data is `expected`, an
/// error otherwise. Returns how many it listed and whether `END` closed them, or an error
/// code if an item is cut short or `body` is not such a list.
fn read_values(
    mut body: &[u8],
    expected: &[u8],
    found: &mut dyn FnMut(u32, Outcome),
) -> Result<(u32, bool), u16> {
    let mut part = 0;
    loop {
        if body == b"END\r\n" || body.is_empty() {
            return Ok((part, !body.is_empty()));
        }
        let line_end = body.windows(2).position(|w| w == b"\r\n").ok_or(TRUNCATED)?;
        let line = body.strip_prefix(b"VALUE ").map(|rest| &rest[..line_end - 6]);
        let line = line.ok_or(OTHER)?;
        let bytes = line.split(|&b| b == b' ').nth(2).ok_or(OTHER)?;
        let bytes = std::str::from_utf8(bytes).ok().and_then(|b| b.parse::<usize>().ok());
        let bytes = bytes.ok_or(OTHER)?;
        let data = line_end + 2;
        let end = data.checked_add(bytes).and_then(|end| end.checked_add(2)).ok_or(OTHER)?;
        let item = body.get(data..end).ok_or(TRUNCATED)?;
        if !item.ends_with(b"\r\n") {
            return Err(OTHER);
        }
        let exact = &item[..bytes] == expected;
        found(part, if exact { Outcome::Ok } else { Outcome::Error(WRONG_VALUE) });
        part += 1;
        body = &body[end..];
    }
}

impl Reassembly {
    /// Keeps one frame of a reply of several; returns the whole body once every frame is in.
    fn add(&mut self, id: u16, sequence: u16, total: u16, payload: &[u8]) -> Option<&[u8]> {
        let partial = &mut self.partials[usize::from(id) % PARTIALS_MAX];
        if !partial.live || partial.id != id || partial.total != total {
            partial.live = true;
            partial.id = id;
            partial.total = total;
            partial.received = 0;
            partial.frames.resize_with(usize::from(total), Vec::new);
            partial.seen.clear();
            partial.seen.resize(usize::from(total), false);
        }
        let sequence = usize::from(sequence);
        if partial.seen[sequence] {
            return None;
        }
        partial.seen[sequence] = true;
        partial.frames[sequence].clear();
        partial.frames[sequence].extend_from_slice(payload);
        partial.received += 1;
        if partial.received < total {
            return None;
        }
        partial.live = false;
        self.body.clear();
        for frame in &partial.frames[..usize::from(total)] {
            self.body.extend_from_slice(frame);
        }
        Some(&self.body)
    }
}

impl Codec for MemcacheCodec {
    fn encode(&self, op: Op, keys: &[u32], id: u64, out: &mut [u8]) -> usize {
        let frame = [0, 0, 0, 0, 0, 1, 0, 0];
        self.asked[id as usize & 0xffff].set(keys.len() as u8);
        self.listed[id as usize & 0xffff].set(0);
        if op == Op::Set {
            assert_eq!(keys.len(), 1, "a SET is of one key");
            let out = &mut out[..self.set_template.len()];
            out.copy_from_slice(&self.set_template);
            out[0..2].copy_from_slice(&(id as u16).to_be_bytes());
            out[KEY_OFFSET..KEY_OFFSET + KEY_BYTES].copy_from_slice(self.keys.get(keys[0]));
            return out.len();
        }
        let len = Self::get_bytes(keys.len());
        let out = &mut out[..len];
        out[..FRAME_BYTES].copy_from_slice(&frame);
        out[0..2].copy_from_slice(&(id as u16).to_be_bytes());
        out[FRAME_BYTES..FRAME_BYTES + 3].copy_from_slice(b"get");
        let mut at = FRAME_BYTES + 3;
        for &key in keys {
            out[at] = b' ';
            out[at + 1..at + 1 + KEY_BYTES].copy_from_slice(self.keys.get(key));
            at += 1 + KEY_BYTES;
        }
        out[at..].copy_from_slice(b"\r\n");
        len
    }

    fn peer(&self, _key: u32) -> SocketAddr {
        self.server
    }

    fn decode(&self, datagram: &[u8], done: &mut dyn FnMut(u64, u32, Outcome)) -> u64 {
        if datagram.len() < FRAME_BYTES {
            return 1;
        }
        let id = u16::from_be_bytes([datagram[0], datagram[1]]);
        let sequence = u16::from_be_bytes([datagram[2], datagram[3]]);
        let total = u16::from_be_bytes([datagram[4], datagram[5]]);
        if total == 0 || total > FRAMES_MAX || sequence >= total {
            return 1;
        }
        let payload = &datagram[FRAME_BYTES..];
        if total == 1 {
            self.answer(u64::from(id), payload, done);
            return 0;
        }
        let mut reassembly = self.reassembly.borrow_mut();
        if let Some(body) = reassembly.add(id, sequence, total, payload) {
            self.answer(u64::from(id), body, done);
        }
        0
    }

    fn id_mask(&self) -> u64 {
        u64::from(u16::MAX)
    }

    fn request_bytes_max(&self) -> usize {
        self.set_template.len().max(Self::get_bytes(self.keys_per_get))
    }

    fn error_name(&self, code: u16) -> String {
        match code {
            NOT_STORED => "NOT_STORED",
            SERVER_ERROR => "SERVER_ERROR",
            CLIENT_ERROR => "CLIENT_ERROR",
            ERROR => "ERROR",
            TRUNCATED => "truncated VALUE",
            WRONG_VALUE => "wrong value bytes",
            _ => "unrecognised reply",
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> MemcacheCodec {
        let server = "127.0.0.1:11211".parse().unwrap();
        MemcacheCodec::new(server, Keys::new(40), 4, 3).unwrap()
    }

    fn answers(codec: &MemcacheCodec, datagrams: &[&[u8]]) -> Vec<(u64, u32, Outcome)> {
        let mut seen = Vec::new();
        for datagram in datagrams {
            assert_eq!(codec.decode(datagram, &mut |id, part, o| seen.push((id, part, o))), 0);
        }
        seen
    }

    #[test]
    fn requests_and_single_key_replies() {
        let codec = codec();
        let mut buf = [0u8; 128];
        let len = codec.encode(Op::Set, &[2], 0x1_0203, &mut buf);
        assert_eq!(&buf[..len], b"\x02\x03\0\0\0\x01\0\0set bench:0000000002 0 0 4\r\nabcd\r\n");
        let len = codec.encode(Op::Get, &[1], 7, &mut buf);
        assert_eq!(&buf[..len], b"\0\x07\0\0\0\x01\0\0get bench:0000000001\r\n");
        codec.encode(Op::Get, &[1], 8, &mut buf);
        codec.encode(Op::Get, &[1], 9, &mut buf);
        let seen = answers(
            &codec,
            &[
                b"\0\x07\0\0\0\x01\0\0VALUE k 0 4\r\nabcd\r\nEND\r\n",
                b"\0\x08\0\0\0\x01\0\0END\r\n",
                b"\0\x09\0\0\0\x01\0\0VALUE k 0 4\r\nabcX\r\nEND\r\n",
                b"\0\x02\0\0\0\x01\0\0STORED\r\n",
            ],
        );
        assert_eq!(
            seen,
            [
                (7, 0, Outcome::Ok),
                (8, REMAINING_PARTS, Outcome::Miss),
                (9, 0, Outcome::Error(WRONG_VALUE)),
                (2, REMAINING_PARTS, Outcome::Ok),
            ]
        );
        assert_eq!(codec.decode(b"\0\x0a", &mut |_, _, _| panic!()), 1);
        assert_eq!(codec.decode(b"\0\x0a\0\x03\0\x03\0\0", &mut |_, _, _| panic!()), 1);
    }

    #[test]
    fn a_multi_get_is_one_line_and_a_missing_key_is_a_miss() {
        let codec = codec();
        let mut buf = [0u8; 128];
        let len = codec.encode(Op::Get, &[1, 22, 3], 5, &mut buf);
        assert_eq!(
            &buf[..len],
            b"\0\x05\0\0\0\x01\0\0get bench:0000000001 bench:0000000022 bench:0000000003\r\n"
        );
        assert_eq!(len, codec.request_bytes_max());
        // Key 22 is not there: the reply lists the other two.
        let reply = b"\0\x05\0\0\0\x01\0\0VALUE bench:0000000001 0 4\r\nabcd\r\n\
            VALUE bench:0000000003 0 4 99\r\nabcd\r\nEND\r\n";
        assert_eq!(
            answers(&codec, &[reply]),
            [(5, 0, Outcome::Ok), (5, 1, Outcome::Ok), (5, REMAINING_PARTS, Outcome::Miss)]
        );
    }

    #[test]
    fn a_multi_get_answered_one_datagram_per_value_as_memcached_does() {
        let codec = codec();
        let mut buf = [0u8; 128];
        codec.encode(Op::Get, &[1, 2, 3], 6, &mut buf);
        let seen = answers(
            &codec,
            &[
                b"\0\x06\0\0\0\x01\0\0VALUE bench:0000000001 0 4\r\nabcd\r\n",
                b"\0\x06\0\0\0\x01\0\0VALUE bench:0000000003 0 4\r\nabcd\r\nEND\r\n",
            ],
        );
        assert_eq!(
            seen,
            [(6, 0, Outcome::Ok), (6, 1, Outcome::Ok), (6, REMAINING_PARTS, Outcome::Miss)]
        );
        // All three found: END adds nothing.
        codec.encode(Op::Get, &[1, 2, 3], 7, &mut buf);
        let value = b"\0\x07\0\0\0\x01\0\0VALUE bench:0000000001 0 4\r\nabcd\r\n";
        let seen = answers(&codec, &[value, value, value, b"\0\x07\0\0\0\x01\0\0END\r\n"]);
        assert_eq!(seen, [(7, 0, Outcome::Ok), (7, 1, Outcome::Ok), (7, 2, Outcome::Ok)]);
    }

    #[test]
    fn a_reply_split_over_frames_is_read_once_all_arrived_in_any_order() {
        let codec = codec();
        let mut buf = [0u8; 128];
        codec.encode(Op::Get, &[1, 2, 3], 0x0102, &mut buf);
        let body = b"VALUE bench:0000000001 0 4\r\nabcd\r\nVALUE bench:0000000002 0 4\r\nab\
            cd\r\nVALUE bench:0000000003 0 4\r\nabcd\r\nEND\r\n";
        // Three frames, cut inside a value and inside a header line.
        let cuts = [0, 30, 70, body.len()];
        let frames: Vec<Vec<u8>> = (0..3)
            .map(|i| {
                let mut frame = vec![1, 2, 0, i as u8, 0, 3, 0, 0];
                frame.extend_from_slice(&body[cuts[i]..cuts[i + 1]]);
                frame
            })
            .collect();
        // Another reply's frame in between, and a duplicate: neither disturbs it.
        let other = b"\x01\x03\0\0\0\x02\0\0VALUE bench:00";
        let seen = answers(&codec, &[&frames[2], other, &frames[0], &frames[0]]);
        assert!(seen.is_empty(), "{seen:?}");
        let seen = answers(&codec, &[&frames[1]]);
        assert_eq!(
            seen,
            [(0x0102, 0, Outcome::Ok), (0x0102, 1, Outcome::Ok), (0x0102, 2, Outcome::Ok)]
        );
    }

    #[test]
    fn cut_or_garbled_values_are_errors() {
        let found = |body: &[u8]| {
            let mut seen = Vec::new();
            let listed = read_values(body, b"abcd", &mut |part, o| seen.push((part, o)));
            (listed, seen)
        };
        assert_eq!(found(b"END\r\n"), (Ok((0, true)), vec![]));
        assert_eq!(found(b"VALUE k 0 4\r\nabcd\r\n"), (Ok((1, false)), vec![(0, Outcome::Ok)]));
        assert_eq!(found(b"VALUE k 0 4\r\nabcd\r\nEN"), (Err(TRUNCATED), vec![(0, Outcome::Ok)]));
        assert_eq!(found(b"VALUE k 0 40\r\nabcd\r\nEND\r\n"), (Err(TRUNCATED), vec![]));
        assert_eq!(found(b"VALUE k 0 3\r\nabcd\r\nEND\r\n").0, Err(OTHER));
        assert_eq!(found(b"VALUE k 0 x\r\nabcd\r\nEND\r\n").0, Err(OTHER));
        assert_eq!(found(b"VALUE k 0 99999999999999999999999\r\n").0, Err(OTHER));
        assert_eq!(found(b"VALUE k 0 18446744073709551615\r\nab").0, Err(OTHER));
        assert_eq!(found(b"VALUE k\r\n").0, Err(OTHER));
    }
}
