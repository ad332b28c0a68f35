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
/// Low bits of a message's tracking id: the key's index in its request, so the GETs of one
/// multi-get (one request of the generator's) have distinct tracking ids, as the client
/// library's have.
const PART_BITS: u32 = 5;
const _: () = assert!(1 << PART_BITS == super::engine::KEYS_PER_REQUEST_MAX);

/// Requests and replies of the cradle protocol.
pub(super) struct CradleCodec {
    keys: Keys,
    /// Per key: index into `targets`, and its partition.
    routes: Vec<(u16, u32)>,
    targets: Vec<SocketAddr>,
    /// Per target: the keys it owns (the keys a multi-get to it may read).
    keys_of_target: Vec<Vec<u32>>,
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

    /// Most GETs of `KEY_BYTES`-byte keys that fit one datagram, back to back.
    pub(super) const GETS_PER_DATAGRAM_MAX: usize =
        proto::DATAGRAM_BYTES_MAX / (HEADER_BYTES + KEY_BYTES);

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
        let mut keys_of_target = vec![Vec::new(); targets.len()];
        for (i, &(target, _)) in routes.iter().enumerate() {
            keys_of_target[usize::from(target)].push(i as u32);
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
            keys_of_target,
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
    /// One message per key, back to back in one datagram, as the client library packs the
    /// GETs of a multi-get (`client::Outbox`): each a whole message with its own header.
    fn encode(&self, op: Op, keys: &[u32], id: u64, out: &mut [u8]) -> usize {
        let template = match op {
            Op::Get => &self.get_template,
            Op::Set => &self.set_template,
        };
        assert!(keys.len() <= Self::GETS_PER_DATAGRAM_MAX && (op == Op::Get || keys.len() == 1));
        let mut len = 0;
        for (part, &key) in keys.iter().enumerate() {
            let message = &mut out[len..len + template.len()];
            message.copy_from_slice(template);
            let (target, partition) = self.routes[key as usize];
            let tracking_id = id << PART_BITS | part as u64;
            message[TRACKING_ID].copy_from_slice(&tracking_id.to_le_bytes());
            message[PARTITION].copy_from_slice(&partition.to_le_bytes());
            message[TOKEN].copy_from_slice(&self.tokens[usize::from(target)].to_le_bytes());
            message[HEADER_BYTES..HEADER_BYTES + KEY_BYTES].copy_from_slice(self.keys.get(key));
            len += template.len();
        }
        len
    }

    fn same_peer_key(&self, first: u32, key: u32) -> u32 {
        let target = self.routes[first as usize].0;
        if self.routes[key as usize].0 == target {
            return key;
        }
        let owned = &self.keys_of_target[usize::from(target)];
        owned[key as usize % owned.len()]
    }

    fn peer(&self, key: u32) -> SocketAddr {
        self.targets[usize::from(self.routes[key as usize].0)]
    }

    fn decode(&self, datagram: &[u8], done: &mut dyn FnMut(u64, u32, Outcome)) -> u64 {
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
            let part = (h.tracking_id & ((1 << PART_BITS) - 1)) as u32;
            done(h.tracking_id >> PART_BITS, part, outcome);
        }
        malformed
    }

    fn id_mask(&self) -> u64 {
        u64::MAX >> PART_BITS
    }

    fn request_bytes_max(&self) -> usize {
        self.set_template.len().max(self.get_template.len() * Self::GETS_PER_DATAGRAM_MAX)
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
    use proto::{MapEntry, Message};

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

    fn two_core_codec() -> CradleCodec {
        let a: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let half = u64::MAX / 2;
        let entries =
            vec![MapEntry::single(0, half, 0, a), MapEntry::single(half + 1, u64::MAX, 1, b)];
        let map = PartitionMap::new(3, entries);
        let mut codec = CradleCodec::new(a, &map, Keys::new(100), 8, 42).unwrap();
        codec.tokens = vec![0x7070, 0x7171];
        codec
    }

    fn reply(request: &Message<'_>, status: Status, value: &[u8]) -> Vec<u8> {
        let header = HeaderFields { flags: flags::REPLY, status: status as u16, ..request.header };
        let mut out = vec![0; HEADER_BYTES + request.key.len() + value.len()];
        encode_message(&mut out, &header, request.key, value).unwrap();
        out
    }

    #[test]
    fn a_multi_get_is_one_message_per_key_and_its_replies_name_their_keys() {
        let codec = two_core_codec();
        // Keys of one datagram all go to the first key's core.
        let first = 0;
        let target = codec.routes[first as usize].0;
        let keys: Vec<u32> =
            [first, 1, 2, 3].iter().map(|&k| codec.same_peer_key(first, k)).collect();
        assert!(keys.iter().all(|&k| codec.routes[k as usize].0 == target), "{keys:?}");
        assert!((0..100).any(|k| codec.routes[k as usize].0 != target), "both cores own keys");
        let mut out = vec![0; codec.request_bytes_max()];
        let len = codec.encode(Op::Get, &keys, 9, &mut out);
        assert_eq!(len, 4 * (HEADER_BYTES + KEY_BYTES));
        let messages: Vec<_> = Messages::new(&out[..len]).map(|m| m.unwrap()).collect();
        assert_eq!(messages.len(), 4);
        for (part, (m, &key)) in messages.iter().zip(&keys).enumerate() {
            assert_eq!(m.opcode(), Opcode::Get);
            assert_eq!(m.key, codec.keys.get(key));
            assert_eq!(m.header.tracking_id, 9 << PART_BITS | part as u64);
            assert_eq!(m.header.client_id, 42);
            assert_eq!(m.header.partition, codec.routes[key as usize].1);
            assert_eq!(m.header.token, codec.tokens[usize::from(target)]);
        }
        // The replies, in two datagrams, out of order, one key missing and one wrong.
        let mut first_datagram = reply(&messages[2], Status::Ok, &codec.value);
        first_datagram.extend(reply(&messages[0], Status::NotFound, &[]));
        let mut second_datagram = reply(&messages[1], Status::Ok, b"abcdefgX");
        second_datagram.extend(reply(&messages[3], Status::Ok, &codec.value));
        let mut seen = Vec::new();
        let mut done = |id, part, outcome| seen.push((id, part, outcome));
        assert_eq!(codec.decode(&first_datagram, &mut done), 0);
        assert_eq!(codec.decode(&second_datagram, &mut done), 0);
        assert_eq!(
            seen,
            [
                (9, 2, Outcome::Ok),
                (9, 0, Outcome::Miss),
                (9, 1, Outcome::Error(WRONG_VALUE)),
                (9, 3, Outcome::Ok)
            ]
        );
    }

    #[test]
    fn sixteen_gets_fit_one_datagram() {
        let codec = two_core_codec();
        assert_eq!(CradleCodec::GETS_PER_DATAGRAM_MAX, 16);
        let keys = [0u32; 16];
        let mut out = vec![0; codec.request_bytes_max()];
        let len = codec.encode(Op::Get, &keys, 1, &mut out);
        assert!(len <= proto::DATAGRAM_BYTES_MAX);
        assert_eq!(Messages::new(&out[..len]).filter(|m| m.is_ok()).count(), 16);
    }
}
