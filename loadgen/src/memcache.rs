//! memcached's UDP protocol for the generator: an 8-byte frame header (request id, sequence
//! number, datagram count, reserved; big-endian) and the text protocol. Requests fit one
//! datagram; a reply may span several, and is complete when all of them arrived.

use super::engine::{Codec, Op, Outcome};
use super::workload::{Keys, KEY_BYTES};
use std::net::SocketAddr;

/// Frame header bytes.
const FRAME_BYTES: usize = 8;
/// Where the key starts in both request templates (`get ` and `set ` are 4 bytes).
const KEY_OFFSET: usize = FRAME_BYTES + 4;
/// Largest request the generator sends; memcached reads a UDP request into one datagram.
pub(super) const REQUEST_BYTES_MAX: usize = 65_000;

const NOT_STORED: u16 = 1;
const SERVER_ERROR: u16 = 2;
const CLIENT_ERROR: u16 = 3;
const ERROR: u16 = 4;
const TRUNCATED: u16 = 5;
const OTHER: u16 = 15;

/// Requests and replies of memcached's UDP protocol.
pub(super) struct MemcacheCodec {
    keys: Keys,
    server: SocketAddr,
    get_template: Vec<u8>,
    set_template: Vec<u8>,
}

impl MemcacheCodec {
    /// Templates for `value_bytes`-byte values, sent to `server`.
    pub(super) fn new(
        server: SocketAddr,
        keys: Keys,
        value_bytes: usize,
    ) -> Result<MemcacheCodec, String> {
        let placeholder = "k".repeat(KEY_BYTES);
        let frame = [0u8, 0, 0, 0, 0, 1, 0, 0];
        let mut get_template = frame.to_vec();
        get_template.extend_from_slice(format!("get {placeholder}\r\n").as_bytes());
        let mut set_template = frame.to_vec();
        set_template
            .extend_from_slice(format!("set {placeholder} 0 0 {value_bytes}\r\n").as_bytes());
        set_template.extend((0..value_bytes).map(|i| b'a' + (i % 26) as u8));
        set_template.extend_from_slice(b"\r\n");
        if set_template.len() > REQUEST_BYTES_MAX {
            return Err(format!(
                "--value-bytes {value_bytes}: a memcached UDP request must fit one datagram"
            ));
        }
        Ok(MemcacheCodec { keys, server, get_template, set_template })
    }
}

/// What a single-datagram reply body says.
fn outcome_of(body: &[u8]) -> Outcome {
    if body.starts_with(b"VALUE ") {
        if body.ends_with(b"\r\nEND\r\n") {
            Outcome::Ok
        } else {
            Outcome::Error(TRUNCATED)
        }
    } else if body == b"END\r\n" {
        Outcome::Miss
    } else if body == b"STORED\r\n" {
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

impl Codec for MemcacheCodec {
    fn encode(&self, op: Op, key: u32, id: u64, out: &mut [u8]) -> usize {
        let template = match op {
            Op::Get => &self.get_template,
            Op::Set => &self.set_template,
        };
        let out = &mut out[..template.len()];
        out.copy_from_slice(template);
        out[0..2].copy_from_slice(&(id as u16).to_be_bytes());
        out[KEY_OFFSET..KEY_OFFSET + KEY_BYTES].copy_from_slice(self.keys.get(key));
        template.len()
    }

    fn peer(&self, _key: u32) -> SocketAddr {
        self.server
    }

    fn decode(&self, datagram: &[u8], done: &mut dyn FnMut(u64, Outcome)) -> u64 {
        if datagram.len() < FRAME_BYTES {
            return 1;
        }
        let id = u16::from_be_bytes([datagram[0], datagram[1]]);
        let total = u16::from_be_bytes([datagram[4], datagram[5]]);
        let outcome = match total {
            0 => return 1,
            1 => outcome_of(&datagram[FRAME_BYTES..]),
            total => Outcome::Part { total },
        };
        done(u64::from(id), outcome);
        0
    }

    fn id_mask(&self) -> u64 {
        u64::from(u16::MAX)
    }

    fn request_bytes_max(&self) -> usize {
        self.set_template.len()
    }

    fn error_name(&self, code: u16) -> String {
        match code {
            NOT_STORED => "NOT_STORED",
            SERVER_ERROR => "SERVER_ERROR",
            CLIENT_ERROR => "CLIENT_ERROR",
            ERROR => "ERROR",
            TRUNCATED => "truncated VALUE",
            _ => "unrecognised reply",
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies() {
        let server = "127.0.0.1:11211".parse().unwrap();
        let codec = MemcacheCodec::new(server, Keys::new(3), 4).unwrap();
        let mut buf = [0u8; 128];
        let len = codec.encode(Op::Set, 2, 0x1_0203, &mut buf);
        assert_eq!(&buf[..len], b"\x02\x03\0\0\0\x01\0\0set bench:0000000002 0 0 4\r\nabcd\r\n");
        let len = codec.encode(Op::Get, 1, 7, &mut buf);
        assert_eq!(&buf[..len], b"\0\x07\0\0\0\x01\0\0get bench:0000000001\r\n");
        let mut seen = Vec::new();
        let mut done = |id, outcome| seen.push((id, outcome));
        codec.decode(b"\0\x07\0\0\0\x01\0\0VALUE k 0 4\r\nabcd\r\nEND\r\n", &mut done);
        codec.decode(b"\0\x08\0\0\0\x01\0\0END\r\n", &mut done);
        codec.decode(b"\0\x09\0\0\0\x01\0\0STORED\r\n", &mut done);
        codec.decode(b"\0\x0a\0\x01\0\x03\0\0xyz", &mut done);
        assert_eq!(codec.decode(b"\0\x0a", &mut done), 1);
        assert_eq!(
            seen,
            vec![
                (7, Outcome::Ok),
                (8, Outcome::Miss),
                (9, Outcome::Ok),
                (10, Outcome::Part { total: 3 })
            ]
        );
    }
}
