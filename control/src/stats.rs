//! Counters each core publishes for the rest of the node (STATS replies, `cradle status`).
//! A core counts in plain integers and copies them into its atomic slot once per batch.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use storage::latency::{LogHistogram, LATENCY_BUCKETS};

/// One core's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreCounters {
    /// Endpoints hosted.
    pub endpoints: u64,
    /// Live keys over all endpoints.
    pub keys: u64,
    /// Valid request messages handled.
    pub requests: u64,
    /// Datagrams dropped as malformed (any message in them malformed).
    pub dropped_malformed: u64,
    /// Writes answered from a completion record instead of being applied again.
    pub duplicates_answered: u64,
    /// Replies replaced by RETRY_WITH_TOKEN (amplification limit).
    pub retry_token: u64,
    /// Requests answered BUSY.
    pub busy: u64,
    /// Requests answered WRONG_OWNER.
    pub wrong_owner: u64,
    /// Reply datagrams handed to the port.
    pub reply_datagrams: u64,
    /// Fragmented writes dropped after their idle timeout.
    pub reassemblies_expired: u64,
    /// Completion records held now.
    pub completion_records: u64,
    /// Fragmented writes being reassembled now.
    pub reassemblies_active: u64,
    /// Bytes in the endpoints' log segments (live and dead records).
    pub log_bytes: u64,
    /// Bytes of live keys and values.
    pub live_bytes: u64,
    /// Bytes of blob chunks (each stored once however many keys share it).
    pub blob_bytes: u64,
    /// Blob chunks stored.
    pub blob_chunks: u64,
    /// Bytes of the in-memory indexes.
    pub index_bytes: u64,
    /// Endpoints quarantined for a corrupt log (they answer UNAVAILABLE).
    pub quarantined: u64,
    /// Endpoints whose log stopped after an I/O error (they answer writes UNAVAILABLE).
    pub poisoned: u64,
    /// Writes refused ID_REUSED: their (client id, tracking id) named another request.
    pub id_reused: u64,
    /// Loop iterations whose work took longer than the stall budget (1 ms by default).
    pub loop_stalls: u64,
    /// The longest one loop iteration's work took since the start, in nanoseconds.
    pub loop_iteration_ns_max: u64,
    /// Requests answered BUSY because they named a newer map epoch than this core has.
    pub map_behind: u64,
    /// Requests answered BUSY by a replicated primary that may not serve yet (probing its backups after becoming primary, or its lease ran out).
    pub replica_not_serving: u64,
    /// Node-to-node datagrams dropped for their MAC (forged, damaged, another cluster's key).
    pub dropped_unauthenticated: u64,
    /// Node-to-node datagrams dropped as replays or stale.
    pub dropped_replayed: u64,
    /// Replication messages refused: from a replica that is not this partition's primary by this core's map, or of a newer epoch.
    pub replication_refused: u64,
    /// Writes a backup applied from its primary.
    pub replicated_records: u64,
    /// Write records a primary sent to its backups (resends included).
    pub forwarded_records: u64,
    /// Times a backup lacked records its primary no longer holds in memory (it needs a catch-up from the store).
    pub replica_behind: u64,
    /// Times an endpoint finished becoming primary (probed its backups, took what they had beyond its own).
    pub promotions: u64,
    /// Catch-ups of learners a primary started (a restarted one counts again).
    pub catchups_started: u64,
    /// Catch-ups that cannot finish (a value too large to replicate).
    pub catchups_failed: u64,
    /// Snapshot records a primary sent to its learners (resends included).
    pub snapshot_records: u64,
    /// Learners built here that the map then made in-sync backups.
    pub learners_joined: u64,
    /// GET messages (RANGE pulls and REF_ONLY reads included).
    pub gets: u64,
    /// GETs answered with a value (RANGE pulls not counted).
    pub get_hits: u64,
    /// GETs answered NOT_FOUND.
    pub get_misses: u64,
    /// PUT messages (fragments included).
    pub puts: u64,
    /// DELETE requests.
    pub deletes: u64,
    /// CAS messages (fragments included).
    pub cas: u64,
    /// CAS writes that found another version (VERSION_MISMATCH).
    pub cas_mismatches: u64,
    /// INCR requests.
    pub incrs: u64,
    /// INCRs refused below their floor (BELOW_FLOOR).
    pub incr_below_floor: u64,
    /// TOUCH requests.
    pub touches: u64,
    /// Client datagrams refused UNAUTHENTICATED (auth on: not sealed, unknown key, bad MAC,
    /// stale).
    pub unauthenticated: u64,
    /// Requests refused FORBIDDEN: their key's role may not ask for them.
    pub forbidden: u64,
    /// Datagrams received (client, node-to-node and malformed alike).
    pub datagrams_in: u64,
    /// Bytes of the datagrams received (UDP payloads).
    pub bytes_in: u64,
    /// Bytes of the reply datagrams sent to clients (`reply_datagrams` counts them;
    /// node-to-node datagrams are in neither).
    pub reply_bytes: u64,
    /// Catch-ups a primary started from a learner's own log (it kept its store: only what
    /// it lacks is sent, see `core::catchup`).
    pub catchups_from_own_log: u64,
    /// Snapshot entries a primary sent as a digest (the learner's own copy was checked).
    pub snapshot_digests: u64,
    /// Times a learner found its own log disagreeing with its primary's (a record the primary
    /// never had): its store is emptied and it is built from a whole snapshot.
    pub own_log_refused: u64,
    /// Writes refused BUSY because the process ran into a limit making a segment file (open
    /// files, memory maps, memory); the node's stderr names the limit.
    pub limit_refusals: u64,
    /// Writes refused NO_SPACE by the stores (a full disk, or an endpoint's key or segment
    /// limit); the node's stderr says so.
    pub no_space_refusals: u64,
}

const FIELDS: usize = 55;

/// The JSON and metric names of the fields, in `to_array` order.
pub(crate) const NAMES: [&str; FIELDS] = [
    "endpoints",
    "keys",
    "requests",
    "dropped_malformed",
    "duplicates_answered",
    "retry_token",
    "busy",
    "wrong_owner",
    "reply_datagrams",
    "reassemblies_expired",
    "completion_records",
    "reassemblies_active",
    "log_bytes",
    "live_bytes",
    "blob_bytes",
    "blob_chunks",
    "index_bytes",
    "quarantined",
    "poisoned",
    "id_reused",
    "loop_stalls",
    "loop_iteration_ns_max",
    "map_behind",
    "replica_not_serving",
    "dropped_unauthenticated",
    "dropped_replayed",
    "replication_refused",
    "replicated_records",
    "forwarded_records",
    "replica_behind",
    "promotions",
    "catchups_started",
    "catchups_failed",
    "snapshot_records",
    "learners_joined",
    "gets",
    "get_hits",
    "get_misses",
    "puts",
    "deletes",
    "cas",
    "cas_mismatches",
    "incrs",
    "incr_below_floor",
    "touches",
    "unauthenticated",
    "forbidden",
    "datagrams_in",
    "bytes_in",
    "reply_bytes",
    "catchups_from_own_log",
    "snapshot_digests",
    "own_log_refused",
    "limit_refusals",
    "no_space_refusals",
];

impl CoreCounters {
    fn to_array(self) -> [u64; FIELDS] {
        [
            self.endpoints,
            self.keys,
            self.requests,
            self.dropped_malformed,
            self.duplicates_answered,
            self.retry_token,
            self.busy,
            self.wrong_owner,
            self.reply_datagrams,
            self.reassemblies_expired,
            self.completion_records,
            self.reassemblies_active,
            self.log_bytes,
            self.live_bytes,
            self.blob_bytes,
            self.blob_chunks,
            self.index_bytes,
            self.quarantined,
            self.poisoned,
            self.id_reused,
            self.loop_stalls,
            self.loop_iteration_ns_max,
            self.map_behind,
            self.replica_not_serving,
            self.dropped_unauthenticated,
            self.dropped_replayed,
            self.replication_refused,
            self.replicated_records,
            self.forwarded_records,
            self.replica_behind,
            self.promotions,
            self.catchups_started,
            self.catchups_failed,
            self.snapshot_records,
            self.learners_joined,
            self.gets,
            self.get_hits,
            self.get_misses,
            self.puts,
            self.deletes,
            self.cas,
            self.cas_mismatches,
            self.incrs,
            self.incr_below_floor,
            self.touches,
            self.unauthenticated,
            self.forbidden,
            self.datagrams_in,
            self.bytes_in,
            self.reply_bytes,
            self.catchups_from_own_log,
            self.snapshot_digests,
            self.own_log_refused,
            self.limit_refusals,
            self.no_space_refusals,
        ]
    }

    fn from_array(a: [u64; FIELDS]) -> CoreCounters {
        CoreCounters {
            endpoints: a[0],
            keys: a[1],
            requests: a[2],
            dropped_malformed: a[3],
            duplicates_answered: a[4],
            retry_token: a[5],
            busy: a[6],
            wrong_owner: a[7],
            reply_datagrams: a[8],
            reassemblies_expired: a[9],
            completion_records: a[10],
            reassemblies_active: a[11],
            log_bytes: a[12],
            live_bytes: a[13],
            blob_bytes: a[14],
            blob_chunks: a[15],
            index_bytes: a[16],
            quarantined: a[17],
            poisoned: a[18],
            id_reused: a[19],
            loop_stalls: a[20],
            loop_iteration_ns_max: a[21],
            map_behind: a[22],
            replica_not_serving: a[23],
            dropped_unauthenticated: a[24],
            dropped_replayed: a[25],
            replication_refused: a[26],
            replicated_records: a[27],
            forwarded_records: a[28],
            replica_behind: a[29],
            promotions: a[30],
            catchups_started: a[31],
            catchups_failed: a[32],
            snapshot_records: a[33],
            learners_joined: a[34],
            gets: a[35],
            get_hits: a[36],
            get_misses: a[37],
            puts: a[38],
            deletes: a[39],
            cas: a[40],
            cas_mismatches: a[41],
            incrs: a[42],
            incr_below_floor: a[43],
            touches: a[44],
            unauthenticated: a[45],
            forbidden: a[46],
            datagrams_in: a[47],
            bytes_in: a[48],
            reply_bytes: a[49],
            catchups_from_own_log: a[50],
            snapshot_digests: a[51],
            own_log_refused: a[52],
            limit_refusals: a[53],
            no_space_refusals: a[54],
        }
    }

    /// Adds `other`'s counters (the node's figure of a maximum is the largest core's).
    fn add(&mut self, other: &CoreCounters) {
        let max = self.loop_iteration_ns_max.max(other.loop_iteration_ns_max);
        let mut sum = self.to_array();
        for (s, o) in sum.iter_mut().zip(other.to_array()) {
            *s += o;
        }
        *self = CoreCounters { loop_iteration_ns_max: max, ..CoreCounters::from_array(sum) };
    }
}

/// What a STATS reply says about the node besides its counters.
#[derive(Clone, Copy, Debug)]
pub struct NodeFacts {
    /// The build's version.
    pub version: &'static str,
    /// Nanoseconds the answering core has run (its loop clock).
    pub uptime_ns: u64,
    /// `memory` or `flushed`.
    pub durability: &'static str,
}

/// Upper bounds (ns) of the burst service-time histogram buckets; a last bucket takes the rest.
pub const LATENCY_BOUNDS_NS: [u64; 13] = [
    1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000,
    5_000_000, 10_000_000,
];
const BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// How long datagrams waited in a core's loop, from receipt to their replies' hand-off to the
/// port (per burst, so an upper bound for each datagram of the burst).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Datagrams per bucket (not cumulative); the last bucket is above every bound.
    pub counts: [u64; BUCKETS],
    /// Sum of service time over datagrams, in ns.
    pub sum_ns: u64,
}

impl LatencyHistogram {
    /// Counts `datagrams` that each waited at most `service_ns`.
    pub fn record(&mut self, datagrams: u64, service_ns: u64) {
        let bucket = LATENCY_BOUNDS_NS.partition_point(|&bound| bound < service_ns);
        self.counts[bucket] += datagrams;
        self.sum_ns += datagrams * service_ns;
    }
}

/// Reply messages counted by status: index = the status's wire number.
pub const STATUS_SLOTS: usize = 16;

/// Request opcodes, index = wire number − 1 (`Opcode::ALL` order).
pub const OPERATIONS: usize = proto::Opcode::ALL.len();

/// A core's per-operation latency (`storage::latency` buckets) and replies by status: what
/// it publishes besides `CoreCounters`, at most every `METRICS_INTERVAL_NS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreMetrics {
    /// Per opcode (wire number − 1): requests by the service time of the burst they came in
    /// (receipt to the replies' hand-off, the group commit included: an upper bound for each).
    pub latency: [LogHistogram; OPERATIONS],
    /// Reply messages by status (wire number).
    pub statuses: [u64; STATUS_SLOTS],
}

/// How often a core copies its `CoreMetrics` out (besides every STATS request).
pub(crate) const METRICS_INTERVAL_NS: u64 = 1_000_000;

const METRIC_SLOTS: usize = OPERATIONS * (LATENCY_BUCKETS + 2) + STATUS_SLOTS;

impl CoreMetrics {
    fn to_slots(&self) -> impl Iterator<Item = u64> + '_ {
        let latency = self.latency.iter().flat_map(|h| h.counts.iter().copied().chain([h.sum_ns]));
        latency.chain(self.statuses.iter().copied())
    }

    fn from_slots(slots: &[AtomicU64]) -> CoreMetrics {
        let at = |i: usize| slots[i].load(Relaxed);
        let per_op = LATENCY_BUCKETS + 2;
        CoreMetrics {
            latency: std::array::from_fn(|op| LogHistogram {
                counts: std::array::from_fn(|k| at(op * per_op + k)),
                sum_ns: at(op * per_op + LATENCY_BUCKETS + 1),
            }),
            statuses: std::array::from_fn(|s| at(OPERATIONS * per_op + s)),
        }
    }
}

/// The node's counters: one slot per core, and a request counter per endpoint.
#[derive(Debug)]
pub struct NodeStats {
    slots: Vec<[AtomicU64; FIELDS]>,
    metrics: Vec<Box<[AtomicU64]>>,
    latency: Vec<[AtomicU64; BUCKETS + 1]>,
    endpoint_requests: Vec<Box<[AtomicU64]>>,
    /// Quarantined partitions and where their logs are corrupt (file, byte offset, reason).
    /// Written only when a core finds a new one, never on the request path.
    quarantines: std::sync::Mutex<std::collections::BTreeMap<u32, String>>,
    /// Per core: the replicas its primaries wait for that lag, as (partition, replica, LSNs
    /// behind), republished every `LAG_INTERVAL_NS`; a replica not listed is caught up.
    lagging: Vec<std::sync::Mutex<Vec<(u32, std::net::SocketAddr, u64)>>>,
    /// A cluster member's agent's view (`set_cluster`), for STATS' `cluster` object.
    cluster: std::sync::OnceLock<std::sync::Arc<crate::cluster::ClusterView>>,
    /// The health monitor's last report (`set_health`), for STATS' `health` object.
    health: std::sync::Mutex<Option<serde_json::Value>>,
}

/// One replica behind its primary (see [`NodeStats::publish_lag`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lagging {
    /// The partition.
    pub partition: u32,
    /// The replica's core.
    pub addr: std::net::SocketAddr,
    /// Writes it has not acknowledged.
    pub lag: u64,
}

/// A copy of every core's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Per core, in core order.
    pub cores: Vec<CoreCounters>,
    /// Per core, in core order.
    pub latency: Vec<LatencyHistogram>,
    /// Quarantined partitions: where their logs are corrupt.
    pub quarantines: std::collections::BTreeMap<u32, String>,
    /// Replicas behind their primaries here.
    pub lagging: Vec<Lagging>,
    /// A cluster member's view of its cluster (`ClusterView::to_json`).
    pub cluster: Option<serde_json::Value>,
    /// The hardware health monitor's last report (`health::HostReport::to_json`).
    pub health: Option<serde_json::Value>,
    /// Per core, in core order: latency per operation and replies by status.
    pub metrics: Vec<CoreMetrics>,
}

impl NodeStats {
    /// Zeroed slots for `cores` cores, without per-endpoint counters.
    pub fn new(cores: u32) -> NodeStats {
        NodeStats {
            slots: (0..cores).map(|_| std::array::from_fn(|_| AtomicU64::new(0))).collect(),
            metrics: (0..cores)
                .map(|_| (0..METRIC_SLOTS).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            latency: (0..cores).map(|_| Default::default()).collect(),
            endpoint_requests: (0..cores).map(|_| Box::default()).collect(),
            quarantines: Default::default(),
            lagging: (0..cores).map(|_| Default::default()).collect(),
            cluster: std::sync::OnceLock::new(),
            health: std::sync::Mutex::new(None),
        }
    }

    /// The health monitor's latest report, for STATS (written every reading, off the loop).
    pub fn set_health(&self, report: serde_json::Value) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }

    /// Adds the cluster agent's view to STATS (a cluster member; set once).
    pub fn set_cluster(&self, view: std::sync::Arc<crate::cluster::ClusterView>) {
        let _ = self.cluster.set(view);
    }

    /// Core `core`'s lagging replicas as of now (skipped if a reader holds them: the loop
    /// never waits).
    pub fn publish_lag(&self, core: u32, lagging: &mut Vec<(u32, std::net::SocketAddr, u64)>) {
        if let Ok(mut slot) = self.lagging[core as usize].try_lock() {
            std::mem::swap(&mut *slot, lagging);
        }
    }

    /// Records why `partition` is quarantined (for STATS and `cradle status`).
    pub fn report_quarantine(&self, partition: u32, corruption: String) {
        let mut quarantines = self.quarantines.lock().unwrap_or_else(|e| e.into_inner());
        quarantines.insert(partition, corruption);
    }

    /// Zeroed per-endpoint counters for every core and partition id of `layout`, so a
    /// partition counts on whichever core the map moves it to (8 bytes per partition and core).
    pub fn for_layout(layout: &crate::NodeLayout) -> NodeStats {
        let mut stats = NodeStats::new(layout.cores());
        stats.endpoint_requests = (0..layout.cores())
            .map(|_| (0..layout.partitions()).map(|_| AtomicU64::new(0)).collect())
            .collect();
        stats
    }

    /// Core `core` publishes its counters.
    pub fn publish(&self, core: u32, counters: &CoreCounters, latency: &LatencyHistogram) {
        for (slot, value) in self.slots[core as usize].iter().zip(counters.to_array()) {
            slot.store(value, Relaxed);
        }
        let values = latency.counts.iter().copied().chain([latency.sum_ns]);
        for (slot, value) in self.latency[core as usize].iter().zip(values) {
            slot.store(value, Relaxed);
        }
    }

    /// Core `core` publishes its latency histograms and status counts.
    pub fn publish_metrics(&self, core: u32, metrics: &CoreMetrics) {
        for (slot, value) in self.metrics[core as usize].iter().zip(metrics.to_slots()) {
            slot.store(value, Relaxed);
        }
    }

    /// Publishes the requests core `core`'s endpoint of `partition` has served. Only that
    /// core calls this, every pass of its size refresh (about every 250 ms).
    pub fn set_endpoint_requests(&self, core: u32, partition: u32, requests: u64) {
        if let Some(counter) = self.endpoint_requests[core as usize].get(partition as usize) {
            counter.store(requests, Relaxed);
        }
    }

    /// Requests per partition id on core `core` (empty without `for_layout`).
    pub fn endpoint_requests(&self, core: u32) -> Vec<u64> {
        self.endpoint_requests[core as usize].iter().map(|c| c.load(Relaxed)).collect()
    }

    /// Reads every slot.
    pub fn snapshot(&self) -> StatsSnapshot {
        let cores = self
            .slots
            .iter()
            .map(|slot| CoreCounters::from_array(std::array::from_fn(|i| slot[i].load(Relaxed))))
            .collect();
        let latency = self
            .latency
            .iter()
            .map(|slot| LatencyHistogram {
                counts: std::array::from_fn(|i| slot[i].load(Relaxed)),
                sum_ns: slot[BUCKETS].load(Relaxed),
            })
            .collect();
        let quarantines = self.quarantines.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let lagging = self
            .lagging
            .iter()
            .flat_map(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .map(|(partition, addr, lag)| Lagging { partition, addr, lag })
            .collect();
        let cluster = self.cluster.get().map(|view| view.to_json());
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let metrics = self.metrics.iter().map(|slots| CoreMetrics::from_slots(slots)).collect();
        StatsSnapshot { cores, latency, quarantines, lagging, cluster, health, metrics }
    }
}

impl StatsSnapshot {
    /// Sum over cores.
    pub fn total(&self) -> CoreCounters {
        let mut total = CoreCounters::default();
        for c in &self.cores {
            total.add(c);
        }
        total
    }

    /// The STATS reply: node totals as one JSON object (plus `cores`, the core count).
    pub fn to_json(&self) -> String {
        self.to_json_about(None)
    }

    /// `to_json` with what the answering core knows of the node: the build's version, how
    /// long it has served, its durability class.
    pub fn to_json_about(&self, node: Option<&NodeFacts>) -> String {
        let mut object = serde_json::Map::new();
        if let Some(node) = node {
            object.insert("version".into(), node.version.into());
            object.insert("uptime_s".into(), (node.uptime_ns / 1_000_000_000).into());
            object.insert("durability".into(), node.durability.into());
        }
        object.insert("cores".into(), self.cores.len().into());
        for (name, value) in NAMES.iter().zip(self.total().to_array()) {
            object.insert((*name).into(), value.into());
        }
        let quarantines = self
            .quarantines
            .iter()
            .map(|(partition, corruption)| {
                serde_json::json!({ "partition": partition, "corruption": corruption })
            })
            .collect();
        object.insert("quarantine".into(), serde_json::Value::Array(quarantines));
        let lagging = self
            .lagging
            .iter()
            .map(|l| serde_json::json!({ "partition": l.partition, "addr": l.addr.to_string(), "lag": l.lag }))
            .collect();
        object.insert("lagging".into(), serde_json::Value::Array(lagging));
        if let Some(cluster) = &self.cluster {
            object.insert("cluster".into(), cluster.clone());
        }
        if let Some(health) = &self.health {
            object.insert("health".into(), health.clone());
        }
        serde_json::Value::Object(object).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_json_is_valid_and_sums_cores() {
        let stats = NodeStats::new(2);
        let h = LatencyHistogram::default();
        let core0 = CoreCounters {
            keys: 2,
            requests: 10,
            loop_stalls: 1,
            loop_iteration_ns_max: 3_000_000,
            ..CoreCounters::default()
        };
        stats.publish(0, &core0, &h);
        stats.publish(
            1,
            &CoreCounters {
                keys: 3,
                dropped_malformed: 1,
                loop_stalls: 2,
                loop_iteration_ns_max: 2_000_000,
                ..CoreCounters::default()
            },
            &h,
        );
        let json: serde_json::Value = serde_json::from_str(&stats.snapshot().to_json()).unwrap();
        assert_eq!((json["keys"].as_u64(), json["requests"].as_u64()), (Some(5), Some(10)));
        assert_eq!(json["loop_stalls"], 3, "stalls add up");
        assert_eq!(json["loop_iteration_ns_max"], 3_000_000, "the longest core's, not a sum");
        assert_eq!(
            (json["cores"].as_u64(), json["dropped_malformed"].as_u64()),
            (Some(2), Some(1))
        );
    }

    #[test]
    fn core_metrics_round_trip_through_the_published_slots() {
        let stats = NodeStats::new(2);
        let mut m = CoreMetrics::default();
        m.latency[0].record(5, 3_000);
        m.latency[proto::Opcode::Touch as usize - 1].record(2, 9_000_000_000_000);
        m.statuses[proto::Status::Forbidden as usize] = 7;
        stats.publish_metrics(1, &m);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.metrics[1], m);
        assert_eq!(snapshot.metrics[0], CoreMetrics::default());
    }

    #[test]
    fn latency_buckets_are_upper_bounds() {
        let mut h = LatencyHistogram::default();
        h.record(3, 1_000);
        h.record(1, 1_001);
        h.record(2, 60_000_000);
        assert_eq!((h.counts[0], h.counts[1], h.counts[BUCKETS - 1]), (3, 1, 2));
        assert_eq!(h.sum_ns, 3_000 + 1_001 + 120_000_000);
    }
}
