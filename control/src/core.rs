//! One serving core: decode, find the endpoint, apply, answer.

use crate::completions::{Completions, Record, RequestId};
use crate::config::{ConfigError, CoreConfig};
use crate::reassembly::{Reassemblies, Refused};
use crate::replies::Replies;
use crate::stats::{CoreCounters, LatencyHistogram, NodeStats};
use crate::validation::Tokens;
use dataplane::{Handler, Transmit};
use proto::{
    encode_addr, fits_unfragmented, flags, fragment_count, fragment_span, key_hash, partition_of,
    HeaderFields, Message, Messages, Opcode, Status, VALUE_BYTES_MAX,
};
use std::net::SocketAddr;
use std::sync::Arc;
use storage::{CasOutcome, Store, StoreError};

/// Fragments sent per reply or per RANGE request: the receiver pulls the rest.
pub(crate) const FRAGMENT_WINDOW: u32 = 32;

/// How often idle reassemblies are swept.
const SWEEP_INTERVAL_NS: u64 = 1_000_000;

/// One replica of one partition: its store. An idle endpoint costs its struct and nothing else.
#[derive(Debug, Default)]
struct Endpoint {
    store: Store,
}

/// A serving core: its endpoints and everything a request needs. Sans-IO.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    endpoints: Vec<Endpoint>,
    completions: Completions,
    reassemblies: Reassemblies,
    tokens: Tokens,
    replies: Replies,
    counters: CoreCounters,
    latency: LatencyHistogram,
    stats: Arc<NodeStats>,
    map_payload: Arc<[u8]>,
    /// WRONG_OWNER hints: the encoded address of each core.
    hints: Vec<Vec<u8>>,
    last_sweep_ns: u64,
}

/// The parts of a request every handler needs.
struct Request<'m> {
    message: &'m Message<'m>,
    reply: HeaderFields,
    validated: bool,
}

impl Core {
    /// A core with empty endpoints for its partitions. `map_payload` is the encoded partition
    /// map (shared by all cores of the node).
    pub fn new(
        config: CoreConfig,
        stats: Arc<NodeStats>,
        map_payload: Arc<[u8]>,
    ) -> Result<Core, ConfigError> {
        config.validate()?;
        let layout = &config.layout;
        let endpoints =
            (0..layout.endpoints_on(config.core)).map(|_| Endpoint::default()).collect();
        let hints = (0..layout.cores())
            .map(|core| {
                let mut hint = Vec::new();
                encode_addr(layout.addr_of(core), &mut hint);
                hint
            })
            .collect();
        let counters = CoreCounters {
            endpoints: layout.endpoints_on(config.core) as u64,
            ..CoreCounters::default()
        };
        Ok(Core {
            completions: Completions::new(config.completion_records_max, config.completion_ttl_ns),
            reassemblies: Reassemblies::new(
                config.reassemblies_max,
                config.reassembly_bytes_max,
                config.reassembly_timeout_ns,
            ),
            tokens: Tokens::new(config.token_secret),
            replies: Replies::new(),
            counters,
            latency: LatencyHistogram::default(),
            stats,
            map_payload,
            hints,
            endpoints,
            config,
            last_sweep_ns: 0,
        })
    }

    /// This core's counters as of now.
    pub fn counters(&self) -> CoreCounters {
        let mut c = self.counters;
        c.reply_datagrams = self.replies.datagrams;
        c.retry_token = self.replies.retry_token;
        c.completion_records = self.completions.len() as u64;
        c.reassemblies_active = self.reassemblies.len() as u64;
        c
    }

    /// Every live key of this core's endpoints, with value and version.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8], u64)> {
        self.endpoints.iter().flat_map(|e| e.store.iter())
    }

    fn handle_message(&mut self, now_ns: u64, token: u64, m: &Message<'_>, tx: &mut dyn Transmit) {
        let h = &m.header;
        if h.has(flags::REPLY) || h.has(flags::PARTIAL) || h.status != 0 {
            // A reply or garbage aimed at us: never answer it (no reflection loops).
            self.counters.dropped_malformed += 1;
            return;
        }
        self.counters.requests += 1;
        let validated = h.token == token;
        let mut reply = h.reply(Status::Ok);
        reply.map_epoch = self.config.layout.epoch();
        if !validated {
            reply.token = token;
        }
        let request = Request { message: m, reply, validated };
        let opcode = m.opcode();
        if !flags_fit(opcode, h) {
            return self.answer(tx, &request, Status::Malformed);
        }
        match opcode {
            Opcode::Ping => self.answer(tx, &request, Status::Ok),
            Opcode::Map => {
                let version = self.config.layout.epoch();
                send_value(&mut self.replies, tx, &request, &self.map_payload, version);
            }
            Opcode::Stats => {
                self.stats.publish(self.config.core, &self.counters(), &self.latency);
                let json = self.stats.snapshot().to_json();
                send_value(&mut self.replies, tx, &request, json.as_bytes(), 0);
            }
            Opcode::Get | Opcode::Put | Opcode::Delete | Opcode::Cas => {
                self.handle_keyed(now_ns, request, tx)
            }
        }
    }

    fn answer(&mut self, tx: &mut dyn Transmit, request: &Request<'_>, status: Status) {
        let mut reply = request.reply;
        reply.status = status as u16;
        self.replies.push(tx, &reply, &[], &[], request.validated);
    }

    fn handle_keyed(&mut self, now_ns: u64, mut request: Request<'_>, tx: &mut dyn Transmit) {
        let m = request.message;
        if m.key.is_empty() {
            return self.answer(tx, &request, Status::Malformed);
        }
        let layout = &self.config.layout;
        let partition = partition_of(key_hash(m.key), layout.partitions());
        request.reply.partition = partition;
        let owner = layout.core_of(partition);
        if owner != self.config.core {
            self.counters.wrong_owner += 1;
            let mut reply = request.reply;
            reply.status = Status::WrongOwner as u16;
            let hint = &self.hints[owner as usize];
            self.replies.push(tx, &reply, &[], hint, request.validated);
            return;
        }
        let slot = layout.slot_of(partition);
        self.stats.count_endpoint_request(self.config.core, slot);
        if m.opcode() == Opcode::Get {
            match self.endpoints[slot].store.get(m.key) {
                Some((value, version)) => {
                    send_value(&mut self.replies, tx, &request, value, version)
                }
                None => self.answer(tx, &request, Status::NotFound),
            }
            return;
        }
        self.handle_write(now_ns, &request, slot, tx);
    }

    fn handle_write(
        &mut self,
        now_ns: u64,
        request: &Request<'_>,
        slot: usize,
        tx: &mut dyn Transmit,
    ) {
        let m = request.message;
        let h = &m.header;
        let id: RequestId = (h.client_id, h.tracking_id);
        if let Some(record) = self.completions.get(id) {
            self.counters.duplicates_answered += 1;
            return self.answer_record(tx, request, record);
        }
        if !self.completions.has_room(now_ns) {
            self.counters.busy += 1;
            return self.answer(tx, request, Status::Busy);
        }
        if !h.has(flags::FRAGMENT) {
            let record = self.apply(slot, m.opcode(), m.key, m.value, h.version);
            self.completions.insert(now_ns, id, record);
            return self.answer_record(tx, request, record);
        }
        if h.total_len as usize > VALUE_BYTES_MAX {
            return self.answer(tx, request, Status::TooLarge);
        }
        match self.reassemblies.add(now_ns, id, h, m.key, m.value) {
            Err(Refused::Busy) => {
                self.counters.busy += 1;
                self.answer(tx, request, Status::Busy)
            }
            Err(Refused::Inconsistent) => self.answer(tx, request, Status::Malformed),
            Ok(r) if !r.is_complete() => {
                if h.has(flags::ACK_REQUEST) {
                    let mut reply = request.reply;
                    reply.flags |= flags::PARTIAL;
                    reply.frag_index = r.first_missing();
                    self.replies.push(tx, &reply, &[], &[], request.validated);
                }
            }
            Ok(_) => {
                let r = self.reassemblies.take(id).expect("complete reassembly exists");
                let opcode = Opcode::from_wire(r.opcode).expect("checked by proto");
                let record = self.apply(slot, opcode, &r.key, &r.value, r.expected_version);
                self.completions.insert(now_ns, id, record);
                self.answer_record(tx, request, record);
            }
        }
    }

    fn answer_record(&mut self, tx: &mut dyn Transmit, request: &Request<'_>, record: Record) {
        let mut reply = request.reply;
        reply.status = record.status as u16;
        reply.version = record.version;
        self.replies.push(tx, &reply, &[], &[], request.validated);
    }

    fn apply(
        &mut self,
        slot: usize,
        opcode: Opcode,
        key: &[u8],
        value: &[u8],
        expected: u64,
    ) -> Record {
        let store = &mut self.endpoints[slot].store;
        let keys_before = store.len() as u64;
        let outcome = match opcode {
            Opcode::Put => store.put(key, value).map(|v| (Status::Ok, v)),
            Opcode::Cas => store.cas(key, expected, value).map(|o| match o {
                CasOutcome::Swapped(v) => (Status::Ok, v),
                CasOutcome::Mismatch(current) => (Status::VersionMismatch, current),
            }),
            Opcode::Delete => store
                .delete(key)
                .map(|existed| (if existed { Status::Ok } else { Status::NotFound }, 0)),
            _ => unreachable!("apply is only called for writes"),
        };
        self.counters.keys = self.counters.keys + store.len() as u64 - keys_before;
        let (status, version) = match outcome {
            Ok(done) => done,
            Err(StoreError::NoSpace) => (Status::NoSpace, 0),
        };
        Record { status, version }
    }
}

/// Whether the flags make sense for the opcode.
fn flags_fit(opcode: Opcode, h: &HeaderFields) -> bool {
    let writes_value = matches!(opcode, Opcode::Put | Opcode::Cas);
    let reads_value = matches!(opcode, Opcode::Get | Opcode::Map | Opcode::Stats);
    (!h.has(flags::FRAGMENT) || writes_value)
        && (!h.has(flags::ACK_REQUEST) || h.has(flags::FRAGMENT))
        && (!h.has(flags::RANGE) || reads_value)
}

/// Sends `value` as one message when it fits, else as a window of fragments (or the window a
/// RANGE request asked for, if `version` is still the one it assembles).
fn send_value(
    replies: &mut Replies,
    tx: &mut dyn Transmit,
    request: &Request<'_>,
    value: &[u8],
    version: u64,
) {
    let h = &request.message.header;
    let key = request.message.key;
    let mut reply = request.reply;
    reply.version = version;
    let ranged = h.has(flags::RANGE);
    if !ranged && fits_unfragmented(key.len(), value.len()) {
        reply.total_len = value.len() as u32;
        replies.push(tx, &reply, key, value, request.validated);
        return;
    }
    if ranged && h.version != version {
        reply.status = Status::VersionMismatch as u16;
        replies.push(tx, &reply, key, &[], request.validated);
        return;
    }
    let total = value.len() as u32;
    let count = fragment_count(total);
    let (first, wanted) = if ranged {
        (h.frag_index, h.frag_count.min(FRAGMENT_WINDOW))
    } else {
        (0, FRAGMENT_WINDOW)
    };
    reply.flags |= flags::FRAGMENT;
    reply.frag_count = count;
    reply.total_len = total;
    for index in first..first.saturating_add(wanted).min(count) {
        reply.frag_index = index;
        let span = fragment_span(total, index);
        if !replies.push(tx, &reply, key, &value[span], request.validated) {
            break;
        }
    }
}

impl Handler for Core {
    fn handle_datagram(
        &mut self,
        now_ns: u64,
        peer: SocketAddr,
        datagram: &[u8],
        tx: &mut dyn Transmit,
    ) {
        self.replies.begin(peer, datagram.len());
        let token = self.tokens.token(peer);
        for message in Messages::new(datagram) {
            match message {
                Ok(m) => self.handle_message(now_ns, token, &m, tx),
                Err(_) => {
                    self.counters.dropped_malformed += 1;
                    break;
                }
            }
        }
        self.replies.flush(tx);
    }

    fn end_batch(&mut self, now_ns: u64, _tx: &mut dyn Transmit) {
        if now_ns.saturating_sub(self.last_sweep_ns) >= SWEEP_INTERVAL_NS {
            self.last_sweep_ns = now_ns;
            self.counters.reassemblies_expired += self.reassemblies.expire(now_ns) as u64;
        }
        self.stats.publish(self.config.core, &self.counters(), &self.latency);
    }

    fn burst_done(&mut self, datagrams: usize, service_ns: u64) {
        self.latency.record(datagrams as u64, service_ns);
    }
}

#[cfg(test)]
mod tests;
