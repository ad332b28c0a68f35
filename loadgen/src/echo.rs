//! A protocol with no server logic at all, to measure what the path itself can carry: each
//! request is a magic, its id and a fixed pattern, and an echo server (`examples/echo.rs`)
//! sends it back unchanged; a reply counts as answered only if it is byte-exact.

use super::engine::{Codec, Op, Outcome};
use std::net::SocketAddr;

const MAGIC: &[u8; 8] = b"CRDLECHO";
const ID: std::ops::Range<usize> = 8..16;
/// Error code of an echo that came back changed.
const CHANGED: u16 = 1;

/// Requests of `bytes` bytes each, to one server.
pub(super) struct EchoCodec {
    server: SocketAddr,
    template: Vec<u8>,
}

impl EchoCodec {
    /// Requests the size of a cradle GET reply carrying `value_bytes` (header, key, value).
    pub(super) fn new(server: SocketAddr, value_bytes: usize) -> Result<EchoCodec, String> {
        let bytes = proto::HEADER_BYTES + super::workload::KEY_BYTES + value_bytes;
        if bytes > proto::DATAGRAM_BYTES_MAX {
            return Err(format!("--value-bytes {value_bytes}: an echo must fit one datagram"));
        }
        let mut template = vec![0; bytes];
        template[..MAGIC.len()].copy_from_slice(MAGIC);
        for (i, byte) in template.iter_mut().enumerate().skip(ID.end) {
            *byte = b'a' + (i % 26) as u8;
        }
        Ok(EchoCodec { server, template })
    }
}

impl Codec for EchoCodec {
    fn encode(&self, _: Op, _: &[u32], id: u64, out: &mut [u8]) -> usize {
        let out = &mut out[..self.template.len()];
        out.copy_from_slice(&self.template);
        out[ID].copy_from_slice(&id.to_le_bytes());
        self.template.len()
    }

    fn peer(&self, _: u32) -> SocketAddr {
        self.server
    }

    fn decode(&self, datagram: &[u8], done: &mut dyn FnMut(u64, u32, Outcome)) -> u64 {
        if datagram.len() != self.template.len() || !datagram.starts_with(MAGIC) {
            return 1;
        }
        let id = u64::from_le_bytes(datagram[ID].try_into().expect("8 bytes"));
        let exact = datagram[ID.end..] == self.template[ID.end..];
        done(id, 0, if exact { Outcome::Ok } else { Outcome::Error(CHANGED) });
        0
    }

    fn id_mask(&self) -> u64 {
        u64::MAX
    }

    fn request_bytes_max(&self) -> usize {
        self.template.len()
    }

    fn error_name(&self, code: u16) -> String {
        match code {
            CHANGED => "echo changed".into(),
            _ => format!("code {code}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_echo_is_ok_and_a_changed_one_is_not() {
        let codec = EchoCodec::new("127.0.0.1:9".parse().unwrap(), 32).unwrap();
        let mut buf = vec![0; 2048];
        let len = codec.encode(Op::Get, &[0], 77, &mut buf);
        let mut seen = Vec::new();
        assert_eq!(codec.decode(&buf[..len], &mut |id, _, o| seen.push((id, o))), 0);
        buf[len - 1] ^= 1;
        assert_eq!(codec.decode(&buf[..len], &mut |id, _, o| seen.push((id, o))), 0);
        assert_eq!(seen, [(77, Outcome::Ok), (77, Outcome::Error(CHANGED))]);
        assert_eq!(codec.decode(&buf[..len - 1], &mut |_, _, _| panic!()), 1);
    }
}
