//! The cradle protocol for the generator: requests patched from pre-encoded templates, replies
//! read with `proto::Messages`. Routing and the address-validation token are set up once.

use super::engine::{exchange, Codec, Op, Outcome};
use super::workload::{Keys, KEY_BYTES};
use client::{Client, ClientConfig};
use dataplane::Port;
use proto::PartitionMap;
use proto::{
    encode_message, flags, key_hash, HeaderFields, Messages, Opcode, Status, HEADER_BYTES,
};
use std::net::SocketAddr;
use std::time::Duration;

// Header field offsets, as laid out in docs/PROTOCOL.md (checked against `encode_message` by
// the tests below).
const TRACKING_ID: std::ops::Range<usize> = 16..24;
const PARTITION: std::ops::Range<usize> = 32..36;
const TOKEN: std::ops::Range<usize> = 64..72;
/// Error code for a GET whose value has the wrong length (above every `Status`, below
/// `report::ERROR_CODES`).
const WRONG_LENGTH: u16 = 13;
/// Error code for a GET whose value has the right length but other bytes than were set.
const WRONG_VALUE: u16 = 14;

/// Requests and replies of the cradle protocol.
pub(super) struct CradleCodec {
    keys: Keys,
    /// Per key: index into `targets`, and its partition.
    routes: Vec<(u16, u32)>,
    targets: Vec<SocketAddr>,
    /// The address-validation token each target gave this generator's socket.
    tokens: Vec<u64>,
    client_id: u64,
    value_bytes: usize,
    /// The value every key is set to (GET replies are checked against it, byte for byte).
    value: Vec<u8>,
    get_template: Vec<u8>,
    set_template: Vec<u8>,
}

impl CradleCodec {
    /// Fetches the partition map from `server` with the client library, through `port`.
    pub(super) fn fetch_map<P: Port>(
        server: SocketAddr,
        port: &mut P,
    ) -> Result<PartitionMap, String> {
        let transport = super::transport::PortTransport::new(port);
        let mut client = Client::with_transport(ClientConfig::new(vec![server]), transport)
            .map_err(|e| format!("cannot reach {server}: {e}"))?;
        client.map().map_err(|e| format!("cannot fetch the partition map from {server}: {e}"))
    }

    /// Routes every key by `map`. Tokens are filled in by `handshake`.
    pub(super) fn new(
        server: SocketAddr,
        map: &PartitionMap,
        keys: Keys,
        value_bytes: usize,
        client_id: u64,
    ) -> Result<CradleCodec, String> {
        if !proto::fits_unfragmented(KEY_BYTES, value_bytes) {
            return Err(format!(
                "--value-bytes {value_bytes} does not fit one datagram; the generator sends \
                 unfragmented values only (at most {})",
                proto::DATAGRAM_BYTES_MAX - HEADER_BYTES - KEY_BYTES
            ));
        }
        let mut targets: Vec<SocketAddr> = Vec::new();
        let mut routes = Vec::with_capacity(keys.len());
        for i in 0..keys.len() as u32 {
            let entry = map
                .lookup(key_hash(keys.get(i)))
                .ok_or_else(|| format!("the partition map of {server} does not cover key {i}"))?;
            let target = match targets.iter().position(|&t| t == entry.addr) {
                Some(t) => t,
                None => {
                    targets.push(entry.addr);
                    targets.len() - 1
                }
            };
            routes.push((target as u16, entry.partition));
        }
        let header = |opcode: Opcode| HeaderFields {
            opcode: opcode as u8,
            client_id,
            map_epoch: map.epoch,
            ..HeaderFields::default()
        };
        let placeholder = [b'k'; KEY_BYTES];
        let value: Vec<u8> = (0..value_bytes).map(|i| b'a' + (i % 26) as u8).collect();
        let template = |opcode: Opcode, value: &[u8]| {
            let mut out = vec![0; HEADER_BYTES + KEY_BYTES + value.len()];
            let len = encode_message(&mut out, &header(opcode), &placeholder, value)
                .expect("template buffer sized to the message");
            debug_assert_eq!(len, out.len());
            out
        };
        Ok(CradleCodec {
            keys,
            routes,
            tokens: vec![0; targets.len()],
            targets,
            client_id,
            value_bytes,
            get_template: template(Opcode::Get, &[]),
            set_template: template(Opcode::Put, &value),
            value,
        })
    }

    /// PINGs every target from the generator's socket and puts the token each returns into
    /// every request from now on, so all of them are address-validated.
    pub(super) fn handshake<P: Port>(&mut self, port: &mut P) -> Result<(), String> {
        let mut tokens = Vec::new();
        for &target in &self.targets {
            let header = HeaderFields {
                opcode: Opcode::Ping as u8,
                client_id: self.client_id,
                ..HeaderFields::default()
            };
            let mut ping = [0u8; HEADER_BYTES];
            encode_message(&mut ping, &header, &[], &[]).expect("a header fits");
            let mut token = None;
            for _ in 0..10 {
                let Some(reply) = exchange(port, &ping, target, Duration::from_millis(200))? else {
                    continue;
                };
                if let Some(Ok(m)) = Messages::new(&reply).next() {
                    if m.header.has(flags::REPLY) && m.header.token != 0 {
                        token = Some(m.header.token);
                        break;
                    }
                }
            }
            tokens.push(token.ok_or_else(|| format!("no reply to PING from {target}"))?);
        }
        self.tokens = tokens;
        Ok(())
    }
}

impl Codec for CradleCodec {
    fn encode(&self, op: Op, key: u32, id: u64, out: &mut [u8]) -> usize {
        let template = match op {
            Op::Get => &self.get_template,
            Op::Set => &self.set_template,
        };
        let out = &mut out[..template.len()];
        out.copy_from_slice(template);
        let (target, partition) = self.routes[key as usize];
        out[TRACKING_ID].copy_from_slice(&id.to_le_bytes());
        out[PARTITION].copy_from_slice(&partition.to_le_bytes());
        out[TOKEN].copy_from_slice(&self.tokens[usize::from(target)].to_le_bytes());
        out[HEADER_BYTES..HEADER_BYTES + KEY_BYTES].copy_from_slice(self.keys.get(key));
        template.len()
    }

    fn peer(&self, key: u32) -> SocketAddr {
        self.targets[usize::from(self.routes[key as usize].0)]
    }

    fn decode(&self, datagram: &[u8], done: &mut dyn FnMut(u64, Outcome)) -> u64 {
        let mut malformed = 0;
        for message in Messages::new(datagram) {
            let Ok(m) = message else {
                malformed += 1;
                break;
            };
            let h = &m.header;
            if !h.has(flags::REPLY) || h.client_id != self.client_id {
                malformed += 1;
                continue;
            }
            let outcome = match m.status() {
                Status::Ok
                    if h.opcode == Opcode::Get as u8 && m.value.len() != self.value_bytes =>
                {
                    Outcome::Error(WRONG_LENGTH)
                }
                Status::Ok if h.opcode == Opcode::Get as u8 && *m.value != self.value[..] => {
                    Outcome::Error(WRONG_VALUE)
                }
                Status::Ok => Outcome::Ok,
                Status::NotFound => Outcome::Miss,
                other => Outcome::Error(other as u16),
            };
            done(h.tracking_id, outcome);
        }
        malformed
    }

    fn id_mask(&self) -> u64 {
        u64::MAX
    }

    fn request_bytes_max(&self) -> usize {
        self.set_template.len()
    }

    fn error_name(&self, code: u16) -> String {
        match Status::from_wire(code) {
            _ if code == WRONG_LENGTH => "wrong value length".into(),
            _ if code == WRONG_VALUE => "wrong value bytes".into(),
            Some(status) => status.describe().into(),
            None => format!("code {code}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patched_offsets_match_the_encoder() {
        let header = HeaderFields {
            opcode: Opcode::Get as u8,
            tracking_id: 0x0102_0304_0506_0708,
            partition: 0x0a0b_0c0d,
            token: 0x1112_1314_1516_1718,
            ..HeaderFields::default()
        };
        let mut buf = [0u8; HEADER_BYTES];
        encode_message(&mut buf, &header, &[], &[]).unwrap();
        assert_eq!(buf[TRACKING_ID], header.tracking_id.to_le_bytes());
        assert_eq!(buf[PARTITION], header.partition.to_le_bytes());
        assert_eq!(buf[TOKEN], header.token.to_le_bytes());
    }
}
