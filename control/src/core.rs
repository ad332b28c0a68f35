//! One serving core: decode, find the endpoint, apply, answer.

use crate::completions::Completions;
use crate::config::{ConfigError, CoreConfig};
use crate::durable::{status_of, CoreStorage, Durability, PendingAck, SyncClock, Syncing};
use crate::read_cache::ReadCache;
use crate::reassembly::Reassemblies;
use crate::replies::Replies;
use crate::routes::{Routes, Slots, Target};
use crate::stats::{CoreCounters, CoreMetrics, LatencyHistogram, NodeStats, OPERATIONS};
use crate::validation::Tokens;
use dataplane::{Handler, Transmit};
use proto::{
    fits_unfragmented, flags, fragment_count, fragment_span, key_hash, BlobReference, HeaderFields,
    Message, Messages, Opcode, PartitionMap, ScanPage, Status, DATAGRAM_BYTES_MAX,
    SCAN_PAGE_BYTES_MAX,
};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use storage::{Shelf, Store, StoreConfig, StoreError, ValueRef};

mod catchup;
mod items;
mod map_change;
mod replica;
mod writes;

pub use items::{ItemPut, ItemSlot, KeyOwner};
pub use map_change::{MapChange, MapInbox, MapOutcome};
pub(crate) use replica::peer_id;
pub use replica::ReplicationConfig;
use replica::{Capture, Held, PeerLink, ReplicaState};

/// Fragments sent per reply or per RANGE request: the receiver pulls the rest.
pub(crate) const FRAGMENT_WINDOW: u32 = 32;

/// Most keys one SCAN page can hold (one-byte keys take three bytes each).
const SCAN_KEYS_MAX: usize = SCAN_PAGE_BYTES_MAX / 3;

/// How often idle reassemblies and expired completion records are swept.
const SWEEP_INTERVAL_NS: u64 = 1_000_000;

/// Most write replies held for one group commit; one more commits at once.
const PENDING_ACKS_MAX: usize = 4096;

/// One replica of one partition: its store. An idle endpoint costs its struct and nothing else
/// (its store opens no file until its first write).
#[derive(Debug)]
struct Endpoint {
    /// The partition it is a replica of.
    partition: u32,
    store: Store,
    /// Written since its last flush (and listed in `Core::dirty`).
    dirty: bool,
    /// The sync ticket its writes handed to the sync thread are durable at (0: none were;
    /// `commit_off_loop`).
    sync_ticket: u64,
    /// Its part in its partition's replication (none: the partition's only replica).
    replica: Option<Box<ReplicaState>>,
    /// Requests it served, published to `NodeStats` by `refresh_sizes` (counting there was
    /// a cache miss per request at 100,000 endpoints).
    requests: u64,
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
    /// The partition map as this core routes by it.
    routes: Routes,
    last_sweep_ns: u64,
    shelf: Shelf,
    /// The slot of each endpoint of the core's log, by the slot its records name (they
    /// differ once a map change dropped endpoints): what cleaning routes records by.
    slot_of: Vec<usize>,
    durability: Durability,
    compaction_step_bytes: u64,
    /// Endpoints written since their last flush.
    dirty: Vec<usize>,
    /// Write replies waiting for the group commit (`Durability::Flushed`).
    pending: Vec<PendingAck>,
    /// Write replies whose records the sync thread is making durable (`commit_off_loop`).
    syncing: Syncing,
    ack_buf: Box<[u8; DATAGRAM_BYTES_MAX]>,
    last_flush_ns: u64,
    /// The sync thread's clock (see `CoreStorage::sync_clock`).
    sync_clock: Option<Arc<SyncClock>>,
    /// The ticket `held_chunks` wait for.
    sync_ticket: Option<u64>,
    /// Blob chunks dropped by writes, freed once `sync_ticket` is reached.
    held_chunks: Vec<storage::Hash>,
    last_sizes_ns: u64,
    /// The pass of `refresh_sizes` under way.
    sizes: writes::Sizes,
    read_cache: ReadCache,
    /// The last burst filled every receive buffer: more datagrams are probably queued.
    burst_full: bool,
    /// When the oldest held write reply was queued.
    pending_since_ns: u64,
    /// The time of the datagram being handled.
    now_ns: u64,
    /// Quarantined endpoints already reported to `stats`.
    quarantines_reported: u64,
    /// What stderr last said of writes refused for a limit, and for space (`refresh_sizes`).
    limit_reported: writes::Reported,
    no_space_reported: writes::Reported,
    /// Writes answered BUSY because the completion table was full of records younger than
    /// the TTL, and what stderr last said of them.
    completions_full: u64,
    completions_full_reported: writes::Reported,
    /// Where map changes come from, if anywhere.
    map_inbox: Option<MapInbox>,
    /// Node-to-node traffic (a cluster member); none on a single node.
    link: Option<PeerLink>,
    /// Partition id → slot of every endpoint here (primaries and backups).
    all_slots: Slots,
    /// Slots of the endpoints with replication state.
    replicated: Vec<usize>,
    /// Replicated primaries with records to forward at the batch's end.
    forward_due: Vec<usize>,
    /// Backups owing their primary an ack at the batch's end.
    acks_due: Vec<usize>,
    /// Probes from a new primary that came before the map naming it: answered once it is
    /// here, not at the probe's resend.
    early_probes: Vec<replica::EarlyProbe>,
    /// Replicated primaries the datagram being handled read or wrote.
    touched: Vec<usize>,
    /// Replies waiting for what they observed to be committed.
    held: Vec<Held>,
    capture: Capture,
    last_replica_scan_ns: u64,
    /// A cluster member's agent (core 0 of a member node only).
    agent: Option<Box<crate::cluster::Agent>>,
    /// A cluster member serves no client until the cluster's first map is installed: its
    /// start-up layout (every partition here, unreplicated) is not the cluster's.
    awaiting_map: bool,
    /// What the datagram being handled may ask for (`crate::auth`; Admin with auth off).
    role: proto::auth::Role,
    /// Latency per operation and replies by status, published every `METRICS_INTERVAL_NS`.
    metrics: Box<CoreMetrics>,
    /// Requests per opcode in the burst being handled (their latency is the burst's).
    burst_ops: [u32; OPERATIONS],
    last_metrics_ns: u64,
}

/// The parts of a request every handler needs.
struct Request<'m> {
    peer: SocketAddr,
    message: &'m Message<'m>,
    reply: HeaderFields,
    validated: bool,
}

impl Core {
    /// A core whose endpoints keep their data in memory only (tests, benchmarks).
    /// `map_payload` is the encoded partition map (shared by all cores of the node).
    pub fn new(
        config: CoreConfig,
        stats: Arc<NodeStats>,
        map_payload: Arc<[u8]>,
    ) -> Result<Core, ConfigError> {
        let endpoints = config.layout.endpoints_on(config.core);
        let storage = CoreStorage::in_memory(endpoints, &StoreConfig::default());
        Core::with_storage(config, stats, map_payload, storage)
    }

    /// A core serving from `storage` (one store per endpoint of this core, in slot order).
    pub fn with_storage(
        config: CoreConfig,
        stats: Arc<NodeStats>,
        map_payload: Arc<[u8]>,
        storage: CoreStorage,
    ) -> Result<Core, ConfigError> {
        config.validate()?;
        let layout = &config.layout;
        if storage.stores.len() != layout.endpoints_on(config.core) {
            return Err(ConfigError(format!(
                "{} stores for {} endpoints",
                storage.stores.len(),
                layout.endpoints_on(config.core)
            )));
        }
        let keys = storage.stores.iter().map(|s| s.len() as u64).sum();
        let mut completions =
            Completions::new(config.completion_records_max, config.completion_ttl_ns);
        rebuild_completions(&mut completions, storage.recovered, config.completion_records_max);
        let endpoints: Vec<Endpoint> = layout
            .partitions_on(config.core)
            .zip(storage.stores)
            .map(|(partition, store)| Endpoint::new(partition, store))
            .collect();
        let routes = routes_for(&layout.map(), layout.addr_of(config.core), &endpoints)?;
        let counters = CoreCounters {
            endpoints: layout.endpoints_on(config.core) as u64,
            keys,
            ..CoreCounters::default()
        };
        let me = layout.addr_of(config.core);
        let link =
            config.replication.clone().map(|r| PeerLink::new(r, me, config.wall_clock_start_ns));
        let all_slots = Slots::new(endpoints.iter().map(|e| e.partition));
        Ok(Core {
            link,
            all_slots,
            replicated: Vec::new(),
            forward_due: Vec::new(),
            acks_due: Vec::new(),
            early_probes: Vec::new(),
            touched: Vec::new(),
            held: Vec::new(),
            capture: Capture::default(),
            last_replica_scan_ns: 0,
            agent: None,
            awaiting_map: config.replication.is_some(),
            completions,
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
            routes,
            dirty: Vec::with_capacity(endpoints.len()),
            slot_of: slots_by_record_id(&endpoints),
            endpoints,
            config,
            last_sweep_ns: 0,
            shelf: storage.shelf,
            durability: storage.durability,
            compaction_step_bytes: storage.compaction_step_bytes,
            pending: Vec::with_capacity(PENDING_ACKS_MAX + 1),
            syncing: Syncing::default(),
            ack_buf: Box::new([0; DATAGRAM_BYTES_MAX]),
            last_flush_ns: 0,
            sync_clock: storage.sync_clock,
            sync_ticket: None,
            held_chunks: Vec::with_capacity(4096),
            last_sizes_ns: 0,
            sizes: Default::default(),
            read_cache: ReadCache::default(),
            burst_full: false,
            pending_since_ns: 0,
            now_ns: 0,
            quarantines_reported: 0,
            limit_reported: writes::Reported::default(),
            no_space_reported: writes::Reported::default(),
            completions_full: 0,
            completions_full_reported: writes::Reported::default(),
            map_inbox: None,
            role: proto::auth::Role::Admin,
            metrics: Box::default(),
            burst_ops: [0; OPERATIONS],
            last_metrics_ns: 0,
        })
    }

    /// Hosts the node's cluster agent (core 0 of a member node): it gets the map group's and
    /// heartbeat datagrams and runs at each batch boundary.
    pub fn set_agent(&mut self, agent: crate::cluster::Agent) {
        self.agent = Some(Box::new(agent));
    }

    /// The encoded map this core serves by (a MAP reply's value).
    pub fn map_payload(&self) -> &[u8] {
        &self.map_payload
    }

    /// The epoch of the map this core serves by.
    pub fn map_epoch(&self) -> u64 {
        self.routes.epoch()
    }

    /// Whether reading a burst's routes, stores and index slots ahead pays
    /// (`Handler::prefetch`): this core's endpoints and indexes, as the last size refresh
    /// found them, take more than `PREFETCH_ABOVE_BYTES`.
    fn reads_ahead(&self) -> bool {
        let endpoint_bytes = (self.endpoints.len() * std::mem::size_of::<Endpoint>()) as u64;
        self.counters.index_bytes + endpoint_bytes > PREFETCH_ABOVE_BYTES
    }

    /// This core's counters as of now.
    pub fn counters(&self) -> CoreCounters {
        let mut c = self.counters;
        c.reply_datagrams = self.replies.datagrams;
        c.reply_bytes = self.replies.bytes;
        c.retry_token = self.replies.retry_token;
        c.completion_records = self.completions.len() as u64;
        c.reassemblies_active = self.reassemblies.len() as u64;
        c
    }

    /// The version and metadata (flags, expiry) of `key`'s live value here, if any (tests).
    #[cfg(test)]
    pub(crate) fn item_meta(&mut self, key: &[u8]) -> Option<(u64, storage::Meta)> {
        self.endpoints.iter_mut().find_map(|e| {
            let item = e.store.get_item(&mut self.shelf, key).ok().flatten()?;
            Some((item.version, item.meta))
        })
    }

    /// Calls `f` with every live key of this core's endpoints, its value and version.
    pub fn for_each_entry(
        &mut self,
        mut f: impl FnMut(&[u8], &[u8], u64),
    ) -> Result<(), StoreError> {
        for endpoint in &mut self.endpoints {
            endpoint.store.for_each(&mut self.shelf, &mut f)?;
        }
        Ok(())
    }

    fn handle_message(
        &mut self,
        now_ns: u64,
        peer: SocketAddr,
        token: u64,
        m: &Message<'_>,
        tx: &mut dyn Transmit,
    ) {
        let h = &m.header;
        if h.has(flags::REPLY) || h.has(flags::PARTIAL) || h.status != 0 {
            // A reply or garbage aimed at us: never answer it (no reflection loops).
            self.counters.dropped_malformed += 1;
            return;
        }
        self.counters.requests += 1;
        let validated = h.token == token;
        let mut reply = h.reply(Status::Ok);
        reply.map_epoch = self.routes.epoch();
        if !validated {
            reply.token = token;
        }
        let request = Request { peer, message: m, reply, validated };
        let opcode = m.opcode();
        if self.role != proto::auth::Role::Admin && !crate::auth::permits(self.role, opcode) {
            self.counters.forbidden += 1;
            return self.answer(tx, &request, Status::Forbidden);
        }
        self.count_operation(opcode);
        if !flags_fit(opcode, h) {
            return self.answer(tx, &request, Status::Malformed);
        }
        if self.awaiting_map && !matches!(opcode, Opcode::Ping | Opcode::Stats) {
            self.counters.busy += 1;
            return self.answer(tx, &request, Status::Busy);
        }
        match opcode {
            Opcode::Ping => self.answer(tx, &request, Status::Ok),
            Opcode::Map => {
                let version = self.routes.epoch();
                send_value(&mut self.replies, tx, &request, &self.map_payload, version);
            }
            Opcode::Stats => {
                self.stats.publish(self.config.core, &self.counters(), &self.latency);
                self.publish_metrics();
                let node = crate::stats::NodeFacts {
                    version: env!("CARGO_PKG_VERSION"),
                    uptime_ns: now_ns,
                    durability: match self.durability {
                        Durability::Memory => "memory",
                        Durability::Flushed => "flushed",
                    },
                };
                let json = self.stats.snapshot().to_json_about(Some(&node));
                send_value(&mut self.replies, tx, &request, json.as_bytes(), 0);
            }
            Opcode::Get
            | Opcode::Put
            | Opcode::Delete
            | Opcode::Cas
            | Opcode::Incr
            | Opcode::Touch => self.handle_keyed(now_ns, request, tx),
            Opcode::Scan => self.handle_scan(request, tx),
            Opcode::Chunk => self.handle_chunk(request, tx),
        }
    }

    fn count_operation(&mut self, opcode: Opcode) {
        self.burst_ops[opcode as usize - 1] += 1;
        let c = &mut self.counters;
        match opcode {
            Opcode::Get => c.gets += 1,
            Opcode::Put => c.puts += 1,
            Opcode::Delete => c.deletes += 1,
            Opcode::Cas => c.cas += 1,
            Opcode::Incr => c.incrs += 1,
            Opcode::Touch => c.touches += 1,
            _ => {}
        }
    }

    fn answer_wrong_owner(&mut self, tx: &mut dyn Transmit, request: &Request<'_>, owner: usize) {
        self.counters.wrong_owner += 1;
        let mut reply = request.reply;
        reply.status = Status::WrongOwner as u16;
        let hint = self.routes.hint(owner);
        self.replies.push(tx, &reply, &[], hint, request.validated);
    }

    /// Whether the sender routed by a newer map than this core has: the core is behind (the
    /// change is on its way to it) and must not serve by its older map. The sender is told
    /// BUSY and tries again; epoch 0 is a sender that has no map yet.
    fn behind_sender(&mut self, tx: &mut dyn Transmit, request: &Request<'_>) -> bool {
        if request.message.header.map_epoch <= self.routes.epoch() {
            return false;
        }
        self.counters.map_behind += 1;
        self.counters.busy += 1;
        self.answer(tx, request, Status::Busy);
        true
    }

    /// A page of the partition's keys after the request's key, in byte order. Visits the whole
    /// endpoint index (endpoints are small; export is not the serving path).
    fn handle_scan(&mut self, mut request: Request<'_>, tx: &mut dyn Transmit) {
        let partition = request.message.header.partition;
        if self.behind_sender(tx, &request) {
            return;
        }
        let slot = match self.routes.partition(partition) {
            None => return self.answer(tx, &request, Status::Malformed),
            Some(Target::Remote(owner)) => {
                request.reply.partition = partition;
                return self.answer_wrong_owner(tx, &request, owner);
            }
            Some(Target::Local(slot)) => slot,
        };
        request.reply.partition = partition;
        if let Some(status) = self.replica_gate(slot, self.now_ns) {
            return self.answer(tx, &request, status);
        }
        if !request.validated {
            // A page costs a walk of the endpoint's index: only for senders with a token.
            self.replies.retry_token += 1;
            return self.answer(tx, &request, Status::RetryWithToken);
        }
        let after = request.message.key;
        // The smallest keys after the cursor: a max-heap holding at most a page's worth.
        let mut smallest = std::collections::BinaryHeap::new();
        let listed = self.endpoints[slot].store.for_each_key(&self.shelf, |key| {
            if key > after
                && (smallest.len() < SCAN_KEYS_MAX
                    || smallest.peek().is_some_and(|top: &Vec<u8>| key < top.as_slice()))
            {
                smallest.push(key.to_vec());
                if smallest.len() > SCAN_KEYS_MAX {
                    smallest.pop();
                }
            }
        });
        if let Err(error) = listed {
            return self.answer(tx, &request, status_of(error));
        }
        let keys = smallest.into_sorted_vec();
        let mut page = ScanPage::new();
        let taken = keys.iter().take_while(|key| page.push(key)).count();
        let mut reply = request.reply;
        reply.version = u64::from(taken == SCAN_KEYS_MAX || taken < keys.len());
        self.replies.push(tx, &reply, &[], page.as_bytes(), request.validated);
    }

    /// A REF_ONLY GET: a blob value's reference (length, chunk size, chunk hashes), or the
    /// value itself when it lives in the log.
    fn handle_get_reference(
        &mut self,
        mut request: Request<'_>,
        slot: usize,
        tx: &mut dyn Transmit,
    ) {
        let key = request.message.key;
        let reference = self.endpoints[slot].store.get_reference(&self.shelf, key);
        count_get(&mut self.counters, request.message, &reference);
        let status = match reference {
            Ok(Some((ValueRef::Inline(value), version))) => {
                return send_value(&mut self.replies, tx, &request, value, version);
            }
            Ok(Some((ValueRef::Blob(stored), version))) => {
                let reference = BlobReference {
                    value_len: u64::from_le_bytes(
                        stored[..8].try_into().expect("reference length"),
                    ),
                    chunk_bytes: self.shelf.blobs().chunk_bytes() as u32,
                    hashes: stored[8..]
                        .chunks_exact(32)
                        .map(|h| h.try_into().expect("32"))
                        .collect(),
                };
                request.reply.flags |= flags::REF_ONLY;
                return send_value(&mut self.replies, tx, &request, &reference.encode(), version);
            }
            Ok(None) => Status::NotFound,
            Err(error) => status_of(error),
        };
        self.answer(tx, &request, status);
    }

    /// A GET from a sender without a valid token: a value in the log is answered (the reply
    /// budget decides), a blob value (at least 16 KiB, always over 3x) is refused before it is
    /// assembled, so a forged 100-byte request cannot make the loop read 16 MiB.
    fn handle_unvalidated_get(&mut self, request: Request<'_>, slot: usize, tx: &mut dyn Transmit) {
        let reference = self.endpoints[slot].store.get_reference(&self.shelf, request.message.key);
        count_get(&mut self.counters, request.message, &reference);
        let status = match reference {
            Ok(Some((ValueRef::Inline(value), version))) => {
                return send_value(&mut self.replies, tx, &request, value, version);
            }
            Ok(Some((ValueRef::Blob(_), _))) => {
                self.replies.retry_token += 1;
                Status::RetryWithToken
            }
            Ok(None) => Status::NotFound,
            Err(error) => status_of(error),
        };
        self.answer(tx, &request, status);
    }

    /// One blob chunk by its hash (the key), in fragments like any big value.
    fn handle_chunk(&mut self, request: Request<'_>, tx: &mut dyn Transmit) {
        let Ok(hash) = <[u8; 32]>::try_from(request.message.key) else {
            return self.answer(tx, &request, Status::Malformed);
        };
        match self.shelf.blobs_mut().chunk(&hash) {
            Some(bytes) => send_value(&mut self.replies, tx, &request, bytes, 0),
            None => self.answer(tx, &request, Status::NotFound),
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
        if self.behind_sender(tx, &request) {
            return;
        }
        let (partition, target) = self.routes.route(key_hash(m.key));
        request.reply.partition = partition;
        let slot = match target {
            Target::Local(slot) => slot,
            Target::Remote(owner) => return self.answer_wrong_owner(tx, &request, owner),
        };
        // Values with an expiry (`storage::Meta`) are judged by the wall clock.
        let wall_ns = self.wall_ns();
        let endpoint = &mut self.endpoints[slot];
        endpoint.store.set_clock(wall_ns);
        endpoint.requests += 1;
        // Only a cluster member's endpoints have replicas to gate on; for a single node the
        // out-of-line call was a fixed cost on every key of a multi-get.
        if self.link.is_some() {
            if let Some(status) = self.replica_gate(slot, now_ns) {
                return self.answer(tx, &request, status);
            }
        }
        if m.opcode() != Opcode::Get {
            return self.handle_write(now_ns, &request, slot, tx);
        }
        if m.header.has(flags::REF_ONLY) {
            return self.handle_get_reference(request, slot, tx);
        }
        if !request.validated {
            return self.handle_unvalidated_get(request, slot, tx);
        }
        let reader = (m.header.client_id, m.header.tracking_id);
        if m.header.has(flags::RANGE) {
            // A pull continues a read of one version: if the key has another by now (or
            // none), the read must start again (VERSION_MISMATCH); no copy outlives it.
            let live = match self.endpoints[slot].store.version(&self.shelf, m.key) {
                Ok(live) => live,
                Err(error) => return self.answer(tx, &request, status_of(error)),
            };
            if live != m.header.version {
                return send_value(&mut self.replies, tx, &request, &[], live);
            }
            if let Some(value) = self.read_cache.get(slot, m.key, live, reader) {
                return send_value(&mut self.replies, tx, &request, value, live);
            }
        }
        let ranged = m.header.has(flags::RANGE);
        let status = match self.endpoints[slot].store.get(&mut self.shelf, m.key) {
            Ok(Some((value, version))) => {
                self.counters.get_hits += u64::from(!ranged);
                if !fits_unfragmented(m.key.len(), value.len()) {
                    self.read_cache.insert(slot, m.key, version, reader, value);
                }
                return send_value(&mut self.replies, tx, &request, value, version);
            }
            Ok(None) => {
                self.counters.get_misses += u64::from(!ranged);
                Status::NotFound
            }
            Err(error) => status_of(error),
        };
        self.answer(tx, &request, status);
    }
}

/// The routes of `map` for the core on `me` serving `endpoints`.
fn routes_for(
    map: &PartitionMap,
    me: SocketAddr,
    endpoints: &[Endpoint],
) -> Result<Routes, ConfigError> {
    let slots = Slots::new(endpoints.iter().map(|e| e.partition));
    Routes::new(map, me, |partition| slots.get(partition))
}

/// Rebuilds the completion records of the writes replay found (oldest first; when there are
/// more than the table holds, the newest are kept). They count from the core's start, so
/// each lives at least a whole TTL more.
fn rebuild_completions(
    completions: &mut Completions,
    mut recovered: Vec<storage::StampedWrite>,
    records_max: usize,
) {
    recovered.sort_by_key(|w| w.stamp.at_ns);
    let newest = &recovered[recovered.len().saturating_sub(records_max)..];
    for write in newest {
        let id = (write.stamp.client_id, write.stamp.tracking_id);
        if completions.get(id).is_none() {
            let status = write.status.map_or(Status::Ok, crate::completions::noted);
            let record = crate::completions::Record {
                status,
                version: write.version,
                fingerprint: write.stamp.fingerprint,
            };
            // A short value may be an INCR's count: kept, a resent INCR is told it (any
            // other write never asks for it).
            let count = write.value.and_then(|v| crate::counter::parse(v.as_bytes()));
            let count = count.and_then(|n| i64::try_from(n).ok());
            completions.insert_counted(0, id, record, count);
        }
    }
}

/// Counts a GET's lookup as a hit or a miss (a RANGE pull continues a read already counted).
fn count_get<T>(c: &mut CoreCounters, m: &Message<'_>, found: &Result<Option<T>, StoreError>) {
    if !m.header.has(flags::RANGE) {
        c.get_hits += u64::from(matches!(found, Ok(Some(_))));
        c.get_misses += u64::from(matches!(found, Ok(None)));
    }
}

/// Whether the flags make sense for the opcode.
fn flags_fit(opcode: Opcode, h: &HeaderFields) -> bool {
    let writes_value = matches!(opcode, Opcode::Put | Opcode::Cas);
    let reads_value = matches!(opcode, Opcode::Get | Opcode::Map | Opcode::Stats | Opcode::Chunk);
    let expires = matches!(opcode, Opcode::Put | Opcode::Cas | Opcode::Incr | Opcode::Touch);
    (!h.has(flags::FRAGMENT) || writes_value)
        && (!h.has(flags::ACK_REQUEST) || h.has(flags::FRAGMENT))
        && (!h.has(flags::RANGE) || reads_value)
        && (!h.has(flags::REF_ONLY) || opcode == Opcode::Get)
        && (!h.has(flags::EXPIRES) || expires)
        && (!h.has(flags::RETURN_VALUE) || opcode == Opcode::Cas)
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
    if ranged && h.frag_index >= count {
        reply.status = Status::Malformed as u16;
        replies.push(tx, &reply, key, &[], request.validated);
        return;
    }
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

impl Core {
    fn handle_requests(
        &mut self,
        now_ns: u64,
        peer: SocketAddr,
        datagram: &[u8],
        tx: &mut dyn Transmit,
    ) {
        let mut messages = datagram;
        self.role = proto::auth::Role::Admin;
        if self.config.auth.is_some() || proto::auth::is_sealed(datagram) {
            let wall_ns = self.wall_ns();
            let admitted = crate::auth::admit(self.config.auth.as_deref(), wall_ns, datagram);
            let Ok(admitted) = admitted else {
                return self.refuse_unauthenticated(peer, datagram, tx);
            };
            (self.role, messages) = (admitted.role, admitted.messages);
        }
        self.replies.begin(peer, datagram.len());
        let token = self.tokens.token(peer);
        for message in Messages::new(messages) {
            match message {
                Ok(m) => {
                    self.replies.next_request(m.len());
                    self.handle_message(now_ns, peer, token, &m, tx)
                }
                Err(_) => {
                    self.counters.dropped_malformed += 1;
                    break;
                }
            }
        }
        self.replies.flush(tx);
    }

    /// A datagram auth did not admit: one bare UNAUTHENTICATED header answers its first
    /// request (its ids read from bytes nobody vouched for, only so the sender can match the
    /// answer); nothing else in it is looked at. Within the 3x rule: 72 bytes for at least 72.
    fn refuse_unauthenticated(&mut self, peer: SocketAddr, datagram: &[u8], tx: &mut dyn Transmit) {
        self.counters.unauthenticated += 1;
        let inner = proto::auth::Sealed::parse(datagram).map_or(datagram, |s| s.messages());
        let first = Messages::new(inner).next().and_then(Result::ok);
        let Some(m) = first.filter(|m| !m.header.has(flags::REPLY) && m.header.status == 0) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let mut reply = m.header.reply(Status::Unauthenticated);
        reply.map_epoch = self.routes.epoch();
        self.replies.begin(peer, datagram.len());
        self.replies.next_request(m.len());
        self.replies.push(tx, &reply, &[], &[], false);
        self.replies.flush(tx);
    }
}

impl Core {
    /// Copies the latency histograms and status counts out for STATS and `/metrics`.
    fn publish_metrics(&mut self) {
        self.metrics.statuses = self.replies.statuses;
        self.stats.publish_metrics(self.config.core, &self.metrics);
    }
}

/// The slots of `endpoints` by the slot their records name (`usize::MAX`: none now).
fn slots_by_record_id(endpoints: &[Endpoint]) -> Vec<usize> {
    let ids = endpoints.iter().map(|e| e.store.endpoint() as usize + 1).max().unwrap_or(0);
    let mut slot_of = vec![usize::MAX; ids];
    for (slot, endpoint) in endpoints.iter().enumerate() {
        slot_of[endpoint.store.endpoint() as usize] = slot;
    }
    slot_of
}

/// A core's endpoints as cleaning finds them: by the slot their records name.
struct EndpointStores<'a> {
    endpoints: &'a mut [Endpoint],
    slot_of: &'a [usize],
}

impl storage::Stores for EndpointStores<'_> {
    fn store(&mut self, id: u32) -> Option<&mut Store> {
        let slot = *self.slot_of.get(id as usize)?;
        self.endpoints.get_mut(slot).map(|e| &mut e.store)
    }
}

impl Endpoint {
    fn new(partition: u32, store: Store) -> Endpoint {
        Endpoint { partition, store, dirty: false, sync_ticket: 0, replica: None, requests: 0 }
    }
}

/// Requests of a datagram read ahead (`Handler::prefetch`): a multi-get's first few.
const PREFETCH_REQUESTS_MAX: usize = 4;

/// A core reads a burst's routes, stores and index slots ahead only once its endpoints and
/// indexes take more than this: below it they stay in the core's cache (L2 is 1 to 4 MiB on
/// today's server cores), and reading ahead costs a second parse, route and hash of every
/// request for nothing (measured: 7 % of the loop with 10,000 keys on 256 endpoints).
const PREFETCH_ABOVE_BYTES: u64 = 1 << 20;

impl Handler for Core {
    fn handle_datagram(
        &mut self,
        now_ns: u64,
        peer: SocketAddr,
        datagram: &[u8],
        tx: &mut dyn Transmit,
    ) {
        self.now_ns = now_ns;
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += datagram.len() as u64;
        if crate::cluster::Agent::claims(datagram) {
            let wall = self.wall_ns();
            match self.agent.as_deref_mut() {
                Some(agent) => agent.handle_datagram(now_ns, wall, datagram, tx),
                None => self.counters.dropped_malformed += 1,
            }
            return;
        }
        if datagram.starts_with(&crate::peer::MAGIC.to_le_bytes()) {
            return self.handle_peer(peer, datagram, tx);
        }
        if self.link.is_none() {
            return self.handle_requests(now_ns, peer, datagram, tx);
        }
        // A cluster member: replies that observed a replicated write wait for its commit.
        let mut capture = std::mem::take(&mut self.capture);
        self.handle_requests(now_ns, peer, datagram, &mut capture);
        self.send_or_hold(capture, tx);
    }

    fn prefetch(&mut self, datagram: &[u8]) {
        // Only a single node's plain requests: a sealed, peer or cluster datagram is read
        // as it is handled.
        if !self.reads_ahead()
            || self.link.is_some()
            || self.config.auth.is_some()
            || proto::auth::is_sealed(datagram)
        {
            return;
        }
        let mut warm = 0;
        for message in Messages::new(datagram).take(PREFETCH_REQUESTS_MAX) {
            let Ok(m) = message else { break };
            if m.key.is_empty() {
                continue;
            }
            if let (_, Target::Local(slot)) = self.routes.route(key_hash(m.key)) {
                warm ^= self.endpoints[slot].store.warm(m.key);
                if m.opcode() != Opcode::Get {
                    warm ^= self.completions.warm((m.header.client_id, m.header.tracking_id));
                }
            }
        }
        std::hint::black_box(warm);
    }

    fn burst_received(&mut self, buffers: usize) {
        self.burst_full = buffers >= dataplane::BATCH;
    }

    fn waiting(&self) -> bool {
        !self.syncing.groups.is_empty()
    }

    fn end_batch(&mut self, now_ns: u64, tx: &mut dyn Transmit) {
        self.now_ns = now_ns;
        self.replicate_before_commit(now_ns, tx);
        self.commit(now_ns, tx);
        self.replicate(now_ns, tx);
        if let Some(agent) = self.agent.as_deref_mut() {
            let wall = self.config.wall_clock_start_ns + now_ns;
            agent.poll(now_ns, wall, tx);
        }
        self.take_map_changes(tx);
        self.compact_step();
        if now_ns.saturating_sub(self.last_sweep_ns) >= SWEEP_INTERVAL_NS {
            self.last_sweep_ns = now_ns;
            self.counters.reassemblies_expired += self.reassemblies.expire(now_ns) as u64;
            self.completions.expire(now_ns);
        }
        self.refresh_sizes(now_ns);
        self.stats.publish(self.config.core, &self.counters(), &self.latency);
        if now_ns.saturating_sub(self.last_metrics_ns) >= crate::stats::METRICS_INTERVAL_NS {
            self.last_metrics_ns = now_ns;
            self.publish_metrics();
        }
    }

    fn burst_done(&mut self, datagrams: usize, service_ns: u64) {
        self.latency.record(datagrams as u64, service_ns);
        for (op, requests) in self.burst_ops.iter_mut().enumerate() {
            if *requests > 0 {
                self.metrics.latency[op].record(u64::from(*requests), service_ns);
                *requests = 0;
            }
        }
    }

    fn iteration_done(&mut self, spent_ns: u64, stalled: bool) {
        let c = &mut self.counters;
        c.loop_stalls += u64::from(stalled);
        c.loop_iteration_ns_max = c.loop_iteration_ns_max.max(spent_ns);
    }
}

#[cfg(test)]
mod tests;
