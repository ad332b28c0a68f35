//! A tiny cradle server for tests: one in-memory store, completion records, fragment
//! reassembly with PARTIAL acknowledgements, RANGE reads, tokens, and switchable faults.

use proto::{
    encode_addr, encode_message, flags, fragment_count, fragment_span, key_hash, partition_of,
    BlobReference, HeaderFields, Messages, Opcode, PartitionMap, ScanPage, Status,
    DATAGRAM_BYTES_MAX, VALUE_BYTES_MAX,
};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Fragments the server volunteers, and the most one RANGE gets.
const BATCH_FRAGMENTS: u32 = 32;

struct Reassembly {
    total_len: u32,
    bytes: Vec<u8>,
    have: Vec<bool>,
}

impl Reassembly {
    fn first_missing(&self) -> u32 {
        self.have.iter().position(|&h| !h).unwrap_or(self.have.len()) as u32
    }
}

pub(crate) struct FakeServer {
    pub(crate) addr: SocketAddr,
    pub(crate) token: u64,
    /// Answer every request without the token RETRY_WITH_TOKEN.
    pub(crate) require_token: bool,
    /// Answer every request RETRY_WITH_TOKEN, token or not.
    pub(crate) refuse_tokens: bool,
    /// Never answer.
    pub(crate) silent: bool,
    /// Answer keyed requests WRONG_OWNER with this owner hint.
    pub(crate) redirect_to: Option<SocketAddr>,
    /// Answer keyed requests BUSY.
    pub(crate) busy: bool,
    /// Drop write fragments from this index on, still answering ACK_REQUEST with the first
    /// missing fragment: a write that stops making progress while the server keeps talking.
    pub(crate) stall_at_fragment: Option<u32>,
    /// Overwrite a fragmented value right after sending its first batch (once).
    pub(crate) change_after_first_batch: bool,
    pub(crate) map: PartitionMap,
    pub(crate) store: HashMap<Vec<u8>, (Vec<u8>, u64)>,
    /// Values of at least this many bytes answer a REF_ONLY GET with a blob reference, their
    /// chunks (of `chunk_bytes`) served by CHUNK.
    pub(crate) blob_threshold: usize,
    pub(crate) chunk_bytes: usize,
    /// Chunks by hash (filled when a reference is handed out).
    pub(crate) chunks: HashMap<[u8; 32], Vec<u8>>,
    /// Corrupt every chunk sent (a wrong byte), to see the client catch it.
    pub(crate) corrupt_chunks: bool,
    /// Keys per SCAN page.
    pub(crate) scan_page_keys: usize,
    next_version: u64,
    completions: HashMap<(u64, u64), (Status, u64)>,
    reassembly: HashMap<(u64, u64), Reassembly>,
    /// Writes applied to the store.
    pub(crate) applied: u64,
    /// Every request message received, in order.
    pub(crate) requests: Vec<HeaderFields>,
    /// Datagrams received.
    pub(crate) datagrams: u64,
}

impl FakeServer {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        FakeServer {
            addr,
            token: 0x7070_7070 ^ u64::from(addr.port()),
            require_token: false,
            refuse_tokens: false,
            silent: false,
            redirect_to: None,
            busy: false,
            change_after_first_batch: false,
            stall_at_fragment: None,
            map: PartitionMap::default(),
            store: HashMap::new(),
            blob_threshold: 16 << 10,
            chunk_bytes: 64 << 10,
            chunks: HashMap::new(),
            corrupt_chunks: false,
            scan_page_keys: 100,
            next_version: 1,
            completions: HashMap::new(),
            reassembly: HashMap::new(),
            applied: 0,
            requests: Vec::new(),
            datagrams: 0,
        }
    }

    /// The reply datagrams to one request datagram.
    pub(crate) fn handle(&mut self, datagram: &[u8]) -> Vec<Vec<u8>> {
        self.datagrams += 1;
        let mut replies = Vec::new();
        for message in Messages::new(datagram) {
            let Ok(message) = message else { break };
            replies.extend(self.answer(&message.header, message.key, message.value));
        }
        pack(replies)
    }

    fn answer(&mut self, h: &HeaderFields, key: &[u8], value: &[u8]) -> Vec<Vec<u8>> {
        self.requests.push(*h);
        if self.silent || h.has(flags::REPLY) {
            return vec![];
        }
        if self.refuse_tokens || (self.require_token && h.token != self.token) {
            return vec![self.reply(h, Status::RetryWithToken, 0, &[])];
        }
        let opcode = h.opcode().expect("parsed");
        let keyed = matches!(opcode, Opcode::Get | Opcode::Put | Opcode::Delete | Opcode::Cas);
        if keyed {
            if let Some(owner) = self.redirect_to {
                let mut hint = Vec::new();
                encode_addr(owner, &mut hint);
                let mut reply = self.reply(h, Status::WrongOwner, 0, &hint);
                reply[24..32].copy_from_slice(&self.map.epoch.to_le_bytes());
                return vec![reply];
            }
            if self.busy {
                return vec![self.reply(h, Status::Busy, 0, &[])];
            }
        }
        match opcode {
            Opcode::Ping => vec![self.reply(h, Status::Ok, 0, &[])],
            Opcode::Map => vec![self.reply(h, Status::Ok, 0, &self.map.encode())],
            Opcode::Stats => {
                let json = format!("{{\"keys\":{}}}", self.store.len());
                vec![self.reply(h, Status::Ok, 0, json.as_bytes())]
            }
            Opcode::Get if h.has(flags::REF_ONLY) => self.get_reference(h, key),
            Opcode::Get => self.get(h, key),
            Opcode::Scan => vec![self.scan(h, key)],
            Opcode::Chunk => self.chunk(h, key),
            _ if h.has(flags::FRAGMENT) => self.fragment(h, key, value),
            _ => vec![self.write(h, key, value)],
        }
    }

    fn reply(&self, h: &HeaderFields, status: Status, version: u64, value: &[u8]) -> Vec<u8> {
        let header = HeaderFields {
            version,
            token: self.token,
            total_len: value.len() as u32,
            ..h.reply(status)
        };
        encode(&header, &[], value)
    }

    /// Applies a whole write once per (client, tracking id); resends get the recorded answer.
    fn write(&mut self, h: &HeaderFields, key: &[u8], value: &[u8]) -> Vec<u8> {
        let record = (h.client_id, h.tracking_id);
        let (status, version) = match self.completions.get(&record) {
            Some(&done) => done,
            None => {
                let done = self.apply(h, key, value);
                self.completions.insert(record, done);
                done
            }
        };
        self.reply(h, status, version, &[])
    }

    fn apply(&mut self, h: &HeaderFields, key: &[u8], value: &[u8]) -> (Status, u64) {
        let current = self.store.get(key).map_or(0, |(_, version)| *version);
        match h.opcode().expect("parsed") {
            Opcode::Delete => match self.store.remove(key) {
                Some(_) => {
                    self.applied += 1;
                    (Status::Ok, 0)
                }
                None => (Status::NotFound, 0),
            },
            Opcode::Cas if h.version != current => (Status::VersionMismatch, current),
            _ => {
                self.applied += 1;
                (Status::Ok, self.store_value(key, value.to_vec()))
            }
        }
    }

    pub(crate) fn store_value(&mut self, key: &[u8], value: Vec<u8>) -> u64 {
        let version = self.next_version;
        self.next_version += 1;
        self.store.insert(key.to_vec(), (value, version));
        version
    }

    fn fragment(&mut self, h: &HeaderFields, key: &[u8], value: &[u8]) -> Vec<Vec<u8>> {
        let record = (h.client_id, h.tracking_id);
        if let Some(&(status, version)) = self.completions.get(&record) {
            return vec![self.reply(h, status, version, &[])];
        }
        if h.total_len as usize > VALUE_BYTES_MAX {
            return vec![self.reply(h, Status::TooLarge, 0, &[])];
        }
        let entry = self.reassembly.entry(record).or_insert_with(|| Reassembly {
            total_len: h.total_len,
            bytes: vec![0; h.total_len as usize],
            have: vec![false; fragment_count(h.total_len) as usize],
        });
        assert_eq!(entry.total_len, h.total_len, "fragments of one write agree");
        if !matches!(self.stall_at_fragment, Some(stall) if h.frag_index >= stall) {
            entry.bytes[fragment_span(h.total_len, h.frag_index)].copy_from_slice(value);
            entry.have[h.frag_index as usize] = true;
        }
        let first_missing = entry.first_missing();
        if first_missing as usize == entry.have.len() {
            let whole = self.reassembly.remove(&record).expect("entry").bytes;
            return vec![self.write(h, key, &whole)];
        }
        if !h.has(flags::ACK_REQUEST) {
            return vec![];
        }
        let header = HeaderFields {
            flags: flags::REPLY | flags::PARTIAL,
            frag_index: first_missing,
            token: self.token,
            ..h.reply(Status::Ok)
        };
        vec![encode(&header, &[], &[])]
    }

    /// Partitions of the map (1 without a map).
    fn partitions(&self) -> u32 {
        (self.map.entries.len() as u32).max(1)
    }

    fn scan(&self, h: &HeaderFields, after: &[u8]) -> Vec<u8> {
        if h.partition >= self.partitions() {
            return self.reply(h, Status::Malformed, 0, &[]);
        }
        let mut keys: Vec<&Vec<u8>> = self
            .store
            .keys()
            .filter(|k| k.as_slice() > after)
            .filter(|k| partition_of(key_hash(k), self.partitions()) == h.partition)
            .collect();
        keys.sort();
        let mut page = ScanPage::new();
        let taken = keys.iter().take(self.scan_page_keys).take_while(|key| page.push(key)).count();
        self.reply(h, Status::Ok, u64::from(taken < keys.len()), page.as_bytes())
    }

    fn get_reference(&mut self, h: &HeaderFields, key: &[u8]) -> Vec<Vec<u8>> {
        let Some((value, version)) = self.store.get(key).cloned() else {
            return vec![self.reply(h, Status::NotFound, 0, &[])];
        };
        if value.len() < self.blob_threshold {
            return self.serve(h, &value, version, 0);
        }
        let hashes = value
            .chunks(self.chunk_bytes)
            .map(|chunk| {
                let hash = *blake3::hash(chunk).as_bytes();
                self.chunks.insert(hash, chunk.to_vec());
                hash
            })
            .collect();
        let reference = BlobReference {
            value_len: value.len() as u64,
            chunk_bytes: self.chunk_bytes as u32,
            hashes,
        };
        self.serve(h, &reference.encode(), version, flags::REF_ONLY)
    }

    fn chunk(&mut self, h: &HeaderFields, hash: &[u8]) -> Vec<Vec<u8>> {
        let Some(mut chunk) =
            <[u8; 32]>::try_from(hash).ok().and_then(|h| self.chunks.get(&h)).cloned()
        else {
            return vec![self.reply(h, Status::NotFound, 0, &[])];
        };
        if self.corrupt_chunks {
            chunk[0] ^= 1;
        }
        self.serve(h, &chunk, 0, 0)
    }

    /// A value read: whole, its first batch of fragments, or the RANGE asked for.
    fn serve(&self, h: &HeaderFields, value: &[u8], version: u64, extra: u16) -> Vec<Vec<u8>> {
        let flagged = |mut reply: Vec<u8>| {
            let bits = u16::from_le_bytes([reply[4], reply[5]]) | extra;
            reply[4..6].copy_from_slice(&bits.to_le_bytes());
            reply
        };
        if h.has(flags::RANGE) {
            if h.version != version {
                return vec![self.reply(h, Status::VersionMismatch, version, &[])];
            }
            let count = h.frag_count.min(BATCH_FRAGMENTS);
            return self
                .fragments(h, value, version, h.frag_index, count)
                .into_iter()
                .map(flagged)
                .collect();
        }
        if proto::fits_unfragmented(0, value.len()) {
            return vec![flagged(self.reply(h, Status::Ok, version, value))];
        }
        self.fragments(h, value, version, 0, BATCH_FRAGMENTS).into_iter().map(flagged).collect()
    }

    fn get(&mut self, h: &HeaderFields, key: &[u8]) -> Vec<Vec<u8>> {
        let Some((value, version)) = self.store.get(key) else {
            return vec![self.reply(h, Status::NotFound, 0, &[])];
        };
        if h.has(flags::RANGE) || proto::fits_unfragmented(0, value.len()) {
            return self.serve(h, value, *version, 0);
        }
        let batch = self.fragments(h, value, *version, 0, BATCH_FRAGMENTS);
        if std::mem::take(&mut self.change_after_first_batch) {
            let changed: Vec<u8> = self.store[key].0.iter().map(|b| b.wrapping_add(1)).collect();
            self.store_value(key, changed);
        }
        batch
    }

    fn fragments(
        &self,
        h: &HeaderFields,
        value: &[u8],
        version: u64,
        first: u32,
        count: u32,
    ) -> Vec<Vec<u8>> {
        let total_len = value.len() as u32;
        let end = first.saturating_add(count).min(fragment_count(total_len));
        (first..end)
            .map(|index| {
                let header = HeaderFields {
                    flags: flags::REPLY | flags::FRAGMENT,
                    frag_index: index,
                    frag_count: fragment_count(total_len),
                    total_len,
                    version,
                    token: self.token,
                    ..h.reply(Status::Ok)
                };
                encode(&header, &[], &value[fragment_span(total_len, index)])
            })
            .collect()
    }
}

fn encode(header: &HeaderFields, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut buf = vec![0; proto::HEADER_BYTES + key.len() + value.len()];
    encode_message(&mut buf, header, key, value).expect("sized");
    buf
}

/// Reply messages packed back to back into datagrams of at most `DATAGRAM_BYTES_MAX`.
fn pack(messages: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    for message in messages {
        match datagrams.last_mut() {
            Some(last) if last.len() + message.len() <= DATAGRAM_BYTES_MAX => {
                last.extend_from_slice(&message)
            }
            _ => datagrams.push(message),
        }
    }
    datagrams
}
