//! Prometheus text metrics over HTTP, served by a thread of its own (never by a serving loop).

use control::{CoreCounters, NodeStats, LATENCY_BOUNDS_NS};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Each counter: name, help, whether it is a gauge, and how to read it.
type Metric = (&'static str, &'static str, bool, fn(&CoreCounters) -> u64);

const METRICS: &[Metric] = &[
    ("cradle_requests_total", "Valid request messages handled.", false, |c| c.requests),
    ("cradle_dropped_malformed_total", "Datagrams dropped as malformed.", false, |c| {
        c.dropped_malformed
    }),
    (
        "cradle_duplicates_answered_total",
        "Resent writes answered from a completion record.",
        false,
        |c| c.duplicates_answered,
    ),
    (
        "cradle_id_reused_total",
        "Writes refused because their tracking id named another request.",
        false,
        |c| c.id_reused,
    ),
    ("cradle_retry_token_total", "Replies held back by the amplification limit.", false, |c| {
        c.retry_token
    }),
    ("cradle_busy_total", "Requests answered BUSY.", false, |c| c.busy),
    (
        "cradle_unauthenticated_total",
        "Client datagrams refused UNAUTHENTICATED (auth on: no valid seal).",
        false,
        |c| c.unauthenticated,
    ),
    ("cradle_forbidden_total", "Requests refused FORBIDDEN by their key's role.", false, |c| {
        c.forbidden
    }),
    (
        "cradle_loop_stalls_total",
        "Loop iterations over the stall budget (1 ms): every request behind them waited.",
        false,
        |c| c.loop_stalls,
    ),
    (
        "cradle_loop_iteration_ns_max",
        "The longest loop iteration since the start, in nanoseconds.",
        true,
        |c| c.loop_iteration_ns_max,
    ),
    ("cradle_wrong_owner_total", "Requests answered WRONG_OWNER.", false, |c| c.wrong_owner),
    ("cradle_reply_datagrams_total", "Reply datagrams sent.", false, |c| c.reply_datagrams),
    ("cradle_reply_bytes_total", "Bytes of the reply datagrams sent to clients.", false, |c| {
        c.reply_bytes
    }),
    (
        "cradle_datagrams_received_total",
        "Datagrams received (client, node-to-node, malformed).",
        false,
        |c| c.datagrams_in,
    ),
    ("cradle_received_bytes_total", "Bytes of the datagrams received.", false, |c| c.bytes_in),
    (
        "cradle_reassemblies_expired_total",
        "Fragmented writes abandoned by their sender.",
        false,
        |c| c.reassemblies_expired,
    ),
    ("cradle_endpoints", "Endpoints hosted.", true, |c| c.endpoints),
    ("cradle_keys", "Live keys.", true, |c| c.keys),
    ("cradle_completion_records", "Completion records held.", true, |c| c.completion_records),
    ("cradle_reassemblies_active", "Fragmented writes being received.", true, |c| {
        c.reassemblies_active
    }),
    ("cradle_log_bytes", "Bytes in endpoint log segments, live and dead.", true, |c| c.log_bytes),
    ("cradle_live_bytes", "Bytes of live keys and values.", true, |c| c.live_bytes),
    ("cradle_blob_bytes", "Bytes of blob chunks, each stored once.", true, |c| c.blob_bytes),
    ("cradle_blob_chunks", "Blob chunks stored.", true, |c| c.blob_chunks),
    ("cradle_index_bytes", "Bytes of the in-memory indexes.", true, |c| c.index_bytes),
    ("cradle_quarantined_endpoints", "Endpoints with a corrupt log.", true, |c| c.quarantined),
    ("cradle_poisoned_endpoints", "Endpoints stopped by an I/O error.", true, |c| c.poisoned),
    (
        "cradle_limit_refusals_total",
        "Writes refused BUSY at a process limit (open files, memory maps, memory); stderr names it.",
        false,
        |c| c.limit_refusals,
    ),
    (
        "cradle_no_space_refusals_total",
        "Writes refused NO_SPACE (a full disk, or an endpoint's key or segment limit).",
        false,
        |c| c.no_space_refusals,
    ),
    ("cradle_get_hits_total", "GETs answered with a value.", false, |c| c.get_hits),
    ("cradle_get_misses_total", "GETs answered NOT_FOUND.", false, |c| c.get_misses),
    ("cradle_cas_mismatches_total", "CAS writes that found another version.", false, |c| {
        c.cas_mismatches
    }),
    ("cradle_incr_below_floor_total", "INCRs refused below their floor.", false, |c| {
        c.incr_below_floor
    }),
];

/// How a page reads one counter of a core.
type ReadCounter = fn(&CoreCounters) -> u64;

/// Request messages per operation, the `op` label of `cradle_operations_total`.
const OPERATIONS: &[(&str, ReadCounter)] = &[
    ("get", |c| c.gets),
    ("put", |c| c.puts),
    ("delete", |c| c.deletes),
    ("cas", |c| c.cas),
    ("incr", |c| c.incrs),
    ("touch", |c| c.touches),
];

/// Per-partition series shown per core: the busiest (a node may host a million endpoints,
/// and a series per endpoint would be as many). The rest are summed in one series.
const ENDPOINT_SERIES_MAX: usize = 64;

/// The metrics page: every counter per core, the node's identity and its process.
pub(crate) fn render(stats: &NodeStats, node: &NodeInfo) -> String {
    let snapshot = stats.snapshot();
    let mut page = String::new();
    for (name, help, gauge, read) in METRICS {
        let kind = if *gauge { "gauge" } else { "counter" };
        let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (core, counters) in snapshot.cores.iter().enumerate() {
            let _ = writeln!(page, "{name}{{core=\"{core}\"}} {}", read(counters));
        }
    }
    let name = "cradle_operations_total";
    let _ = writeln!(page, "# HELP {name} Request messages per operation.\n# TYPE {name} counter");
    for (core, counters) in snapshot.cores.iter().enumerate() {
        for (op, read) in OPERATIONS {
            let _ = writeln!(page, "{name}{{core=\"{core}\",op=\"{op}\"}} {}", read(counters));
        }
    }
    render_latency(&mut page, &snapshot.latency);
    render_health(&mut page, &snapshot);
    render_errors(&mut page, &snapshot.metrics);
    render_operation_latency(&mut page, &snapshot.metrics);
    let help = "fdatasync of core logs, blob files and their directories (loops and sync threads).";
    let syncs = storage::latency::sync_latency();
    render_histogram(&mut page, "cradle_fsync_seconds", help, &[("", syncs)]);
    render_socket_drops(&mut page);
    render_endpoints(&mut page, stats, snapshot.cores.len() as u32);
    render_node(&mut page, node);
    page
}

/// `NotFound` → `not_found`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Reply messages by status other than OK, per core (NOT_FOUND and VERSION_MISMATCH are
/// answers, not failures: they are here for the dashboard to tell apart).
fn render_errors(page: &mut String, metrics: &[control::CoreMetrics]) {
    let name = "cradle_errors_total";
    let help = "Reply messages with a status other than OK, by status.";
    let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} counter");
    for (core, m) in metrics.iter().enumerate() {
        for &status in proto::Status::ALL.iter().filter(|&&s| s != proto::Status::Ok) {
            let label = snake_case(&format!("{status:?}"));
            let count = m.statuses[status as usize];
            let _ = writeln!(page, "{name}{{core=\"{core}\",status=\"{label}\"}} {count}");
        }
    }
}

/// Request latency per operation, summed over cores (a series set per operation, whatever
/// the core count).
fn render_operation_latency(page: &mut String, metrics: &[control::CoreMetrics]) {
    let mut per_op = Vec::new();
    for (op, opcode) in proto::Opcode::ALL.iter().enumerate() {
        let mut sum = storage::latency::LogHistogram::default();
        for m in metrics {
            for (total, count) in sum.counts.iter_mut().zip(m.latency[op].counts) {
                *total += count;
            }
            sum.sum_ns += m.latency[op].sum_ns;
        }
        per_op.push((format!("op=\"{}\"", snake_case(&format!("{opcode:?}"))), sum));
    }
    let per_op: Vec<(&str, _)> = per_op.iter().map(|(l, h)| (l.as_str(), *h)).collect();
    let help = "Request latency by operation: receipt to reply hand-off of the burst it came in \
                (group commit included), per request.";
    render_histogram(page, "cradle_request_duration_seconds", help, &per_op);
}

/// One Prometheus histogram of `storage::latency` buckets, one series per `(labels, h)`.
fn render_histogram(
    page: &mut String,
    name: &str,
    help: &str,
    series: &[(&str, storage::latency::LogHistogram)],
) {
    use storage::latency::{bucket_bound_ns, LATENCY_BUCKETS};
    let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, h) in series {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (k, count) in h.counts.iter().enumerate().take(LATENCY_BUCKETS) {
            cumulative += count;
            let le = bucket_bound_ns(k) as f64 / 1e9;
            let _ = writeln!(page, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        cumulative += h.counts[LATENCY_BUCKETS];
        let _ = writeln!(page, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(page, "{name}_sum{braces} {}", h.sum_ns as f64 / 1e9);
        let _ = writeln!(page, "{name}_count{braces} {cumulative}");
    }
}

/// Datagrams the kernel dropped for this process's UDP sockets (a full receive buffer: the
/// loop fell behind), per local port: `/proc/net/udp{,6}`'s `drops` of the sockets whose
/// inodes `/proc/self/fd` holds. Read at scrape time, never by a serving loop.
fn render_socket_drops(page: &mut String) {
    let name = "cradle_socket_drops_total";
    let help = "UDP datagrams the kernel dropped for the node's sockets (receive buffer full).";
    let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} counter");
    for (port, drops) in socket_drops() {
        let _ = writeln!(page, "{name}{{port=\"{port}\"}} {drops}");
    }
}

/// `(local port, drops)` of this process's UDP sockets, by port.
fn socket_drops() -> std::collections::BTreeMap<u16, u64> {
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").into_iter().flatten().flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.insert(inode.to_string());
        }
    }
    let mut drops = std::collections::BTreeMap::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local rem st tx:rx tr:when retr uid timeout inode ref pointer drops
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode), Some(dropped)) =
                (fields.get(1), fields.get(9), fields.get(12))
            else {
                continue;
            };
            let port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if let (Some(port), true, Ok(dropped)) =
                (port, inodes.contains(*inode), dropped.parse::<u64>())
            {
                *drops.entry(port).or_insert(0) += dropped;
            }
        }
    }
    drops
}

/// What the page says about the node itself.
#[derive(Clone, Debug)]
pub(crate) struct NodeInfo {
    /// When the node started.
    pub(crate) started: std::time::Instant,
    /// Seconds since the Unix epoch when it started.
    pub(crate) started_unix_s: f64,
    /// `memory` or `flushed`.
    pub(crate) durability: &'static str,
}

impl NodeInfo {
    pub(crate) fn now(durability: &'static str) -> NodeInfo {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        NodeInfo {
            started: std::time::Instant::now(),
            started_unix_s: since.map_or(0.0, |d| d.as_secs_f64()),
            durability,
        }
    }
}

/// Build info, uptime and the process's own metrics (Prometheus's `process_` names, read
/// from `/proc/self`; a figure `/proc` does not give is left out).
fn render_node(page: &mut String, node: &NodeInfo) {
    let version = env!("CARGO_PKG_VERSION");
    let durability = node.durability;
    let _ = writeln!(
        page,
        "# HELP cradle_build_info The running build (always 1).\n# TYPE cradle_build_info gauge\n\
         cradle_build_info{{version=\"{version}\",durability=\"{durability}\"}} 1"
    );
    let uptime = node.started.elapsed().as_secs_f64();
    gauge(page, "cradle_uptime_seconds", "Seconds since the node started.", uptime);
    let start = node.started_unix_s;
    gauge(page, "process_start_time_seconds", "Start time, seconds since the Unix epoch.", start);
    if let Some(cpu) = process_cpu_seconds() {
        let name = "process_cpu_seconds_total";
        let _ = writeln!(
            page,
            "# HELP {name} User and system CPU time spent.\n# TYPE {name} counter\n{name} {cpu}"
        );
    }
    if let Some(rss) = process_resident_bytes() {
        gauge(page, "process_resident_memory_bytes", "Resident memory size.", rss as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(page, "process_open_fds", "Open file descriptors.", fds.count() as f64);
    }
}

/// The host's hardware verdict, and in a cluster each member's and whether it is draining
/// (absent before the first reading, or with `--no-health`).
fn render_health(page: &mut String, snapshot: &control::StatsSnapshot) {
    let level = |verdict: &serde_json::Value| match verdict.as_str() {
        Some("healthy") => Some(0),
        Some("suspect") => Some(1),
        Some("failing") => Some(2),
        _ => None,
    };
    let host = snapshot.health.as_ref().and_then(|h| level(&h["host"]["verdict"]));
    if let Some(host) = host {
        let help = "This host's hardware verdict: 0 healthy, 1 suspect, 2 failing.";
        gauge(page, "cradle_health_verdict", help, f64::from(host));
    }
    let members = snapshot.cluster.as_ref().and_then(|c| c["members"].as_array().cloned());
    let Some(members) = members else { return };
    let name = "cradle_cluster_member_health_verdict";
    let _ = writeln!(
        page,
        "# HELP {name} Each member's hardware verdict as its heartbeats say: 0 healthy, 1 \
         suspect, 2 failing.\n# TYPE {name} gauge"
    );
    for m in &members {
        if let Some(v) = level(&m["health"]) {
            let _ = writeln!(page, "{name}{{member=\"{}\"}} {v}", m["member"]);
        }
    }
    let name = "cradle_cluster_member_draining";
    let _ = writeln!(
        page,
        "# HELP {name} 1 while the member is being drained for failing hardware.\n# TYPE \
         {name} gauge"
    );
    for m in &members {
        let draining = u8::from(m["draining"] == true);
        let _ = writeln!(page, "{name}{{member=\"{}\"}} {draining}", m["member"]);
    }
}

fn gauge(page: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

/// utime + stime of `/proc/self/stat`, in USER_HZ ticks (100 a second on Linux).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// `VmRSS` of `/proc/self/status`.
fn process_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn render_latency(page: &mut String, latency: &[control::LatencyHistogram]) {
    let name = "cradle_service_seconds";
    let help = "Time from a burst's receipt to its replies' hand-off, per datagram.";
    let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (core, h) in latency.iter().enumerate() {
        let mut cumulative = 0;
        for (bound_ns, count) in LATENCY_BOUNDS_NS.iter().zip(h.counts) {
            cumulative += count;
            let le = *bound_ns as f64 / 1e9;
            let _ = writeln!(page, "{name}_bucket{{core=\"{core}\",le=\"{le}\"}} {cumulative}");
        }
        cumulative += h.counts[LATENCY_BOUNDS_NS.len()];
        let _ = writeln!(page, "{name}_bucket{{core=\"{core}\",le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(page, "{name}_sum{{core=\"{core}\"}} {}", h.sum_ns as f64 / 1e9);
        let _ = writeln!(page, "{name}_count{{core=\"{core}\"}} {cumulative}");
    }
}

/// Per-endpoint request counters: per core the `ENDPOINT_SERIES_MAX` busiest endpoints that
/// served any, and the rest summed under `partition="other"` (10,000 idle endpoints would
/// otherwise be 10,000 lines of zeros, a million busy ones a million series).
fn render_endpoints(page: &mut String, stats: &NodeStats, cores: u32) {
    let name = "cradle_endpoint_requests_total";
    let help = "Keyed requests per endpoint (partition): each core's busiest, the rest summed as partition=\"other\".";
    let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} counter");
    for core in 0..cores {
        let mut busy: Vec<(u64, usize)> = (stats.endpoint_requests(core).into_iter().enumerate())
            .filter(|&(_, requests)| requests > 0)
            .map(|(partition, requests)| (requests, partition))
            .collect();
        busy.sort_unstable_by(|a, b| b.cmp(a));
        let rest: u64 = busy.iter().skip(ENDPOINT_SERIES_MAX).map(|&(requests, _)| requests).sum();
        busy.truncate(ENDPOINT_SERIES_MAX);
        busy.sort_unstable_by_key(|&(_, partition)| partition);
        for (requests, partition) in busy {
            let labels = format!("core=\"{core}\",partition=\"{partition}\"");
            let _ = writeln!(page, "{name}{{{labels}}} {requests}");
        }
        if rest > 0 {
            let _ = writeln!(page, "{name}{{core=\"{core}\",partition=\"other\"}} {rest}");
        }
    }
}

/// Serves `GET /metrics` and `GET`/`HEAD /healthz` on `listen` until `stop` is set.
/// `/healthz` is 200 while `serving` is set and `stop` is not, else 503.
pub(crate) fn serve(
    listen: SocketAddr,
    stats: Arc<NodeStats>,
    stop: Arc<AtomicBool>,
    serving: Arc<AtomicBool>,
    node: NodeInfo,
) -> Result<JoinHandle<()>, String> {
    let listener =
        TcpListener::bind(listen).map_err(|e| format!("cannot serve metrics on {listen}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| format!("metrics listener: {e}"))?;
    std::thread::Builder::new()
        .name("cradle-metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let healthy =
                            serving.load(Ordering::Acquire) && !stop.load(Ordering::Relaxed);
                        answer(stream, &stats, &node, healthy, &stop)
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))
}

/// How long a connection may take to send its request (a scrape is tiny).
const REQUEST_WAIT_MAX: Duration = Duration::from_secs(1);
/// How often a wait for a request looks at the stop flag: a silent connection must not hold
/// up the node's stop (it used to, for its whole second).
const STOP_POLL: Duration = Duration::from_millis(20);

fn answer(
    mut stream: TcpStream,
    stats: &NodeStats,
    node: &NodeInfo,
    healthy: bool,
    stop: &AtomicBool,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(STOP_POLL));
    let mut request = [0u8; 1024];
    let began = std::time::Instant::now();
    let n = loop {
        match stream.read(&mut request) {
            Ok(n) => break n,
            Err(_) if stop.load(Ordering::Relaxed) || began.elapsed() >= REQUEST_WAIT_MAX => return,
            Err(_) => continue,
        }
    };
    let request = &request[..n];
    let head = request.starts_with(b"HEAD ");
    let path = request.split(|&b| b == b' ').nth(1).unwrap_or_default();
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let get = request.starts_with(b"GET ") || head;
    let (status, body) = match (get, path) {
        (true, b"/metrics") => ("200 OK", render(stats, node)),
        (true, b"/healthz") if healthy => ("200 OK", "serving\n".to_string()),
        (true, b"/healthz") => ("503 Service Unavailable", "not serving\n".to_string()),
        _ => ("404 Not Found", "try /metrics or /healthz\n".to_string()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if head { "" } else { &body }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_has_every_metric() {
        let addrs = vec!["127.0.0.1:7000".parse().unwrap(), "127.0.0.1:7001".parse().unwrap()];
        let stats = NodeStats::for_layout(&control::NodeLayout::new(8, addrs).unwrap());
        let mut latency = control::LatencyHistogram::default();
        latency.record(4, 3_000);
        let counters = CoreCounters { requests: 5, keys: 3, ..CoreCounters::default() };
        stats.publish(1, &counters, &latency);
        stats.set_endpoint_requests(1, 5, 1);
        let page = render(&stats, &NodeInfo::now("memory"));
        assert!(page.contains("cradle_requests_total{core=\"1\"} 5\n"), "{page}");
        assert!(page.contains("cradle_keys{core=\"0\"} 0\n"));
        assert!(page.contains("# TYPE cradle_keys gauge"));
        let labelled = [
            "service",
            "endpoint_requests",
            "operations",
            "build_info",
            "uptime",
            "errors_total",
            "request_duration",
            "fsync_seconds",
            "socket_drops",
        ];
        let plain = page
            .lines()
            .filter(|l| l.starts_with("cradle_") && !labelled.iter().any(|name| l.contains(name)));
        assert_eq!(plain.count(), 2 * METRICS.len());
        assert!(page.contains("cradle_service_seconds_bucket{core=\"1\",le=\"0.000002\"} 0\n"));
        assert!(page.contains("cradle_service_seconds_bucket{core=\"1\",le=\"0.000005\"} 4\n"));
        assert!(page.contains("cradle_service_seconds_count{core=\"1\"} 4\n"));
        assert!(page.contains("cradle_endpoint_requests_total{core=\"1\",partition=\"5\"} 1\n"));
        assert!(page.contains("cradle_operations_total{core=\"0\",op=\"incr\"} 0\n"));
        assert!(page.contains("cradle_build_info{version=\""), "{page}");
    }

    /// The page as a real Prometheus parser reads it: every family typed, counters named
    /// `_total`, every sample of a `cradle_` or `process_` family.
    #[test]
    fn a_prometheus_parser_reads_the_page() {
        let addrs = vec!["127.0.0.1:7000".parse().unwrap()];
        let stats = NodeStats::for_layout(&control::NodeLayout::new(4, addrs).unwrap());
        let counters = CoreCounters { gets: 7, get_hits: 5, get_misses: 2, ..Default::default() };
        stats.publish(0, &counters, &control::LatencyHistogram::default());
        let mut metrics = control::CoreMetrics::default();
        metrics.latency[proto::Opcode::Get as usize - 1].record(7, 3_000);
        metrics.statuses[proto::Status::NotFound as usize] = 2;
        stats.publish_metrics(0, &metrics);
        stats.set_endpoint_requests(0, 2, 1);
        stats.set_health(serde_json::json!({"host": {"verdict": "suspect", "reasons": ["x"]}}));
        let page = render(&stats, &NodeInfo::now("flushed"));
        let lines = page.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("the page parses");
        assert!(scrape.samples.len() > METRICS.len(), "{} samples", scrape.samples.len());
        for sample in &scrape.samples {
            let family = sample.metric.trim_end_matches("_bucket").trim_end_matches("_sum");
            let family = family.trim_end_matches("_count");
            assert!(
                family.starts_with("cradle_") || family.starts_with("process_"),
                "{}",
                sample.metric
            );
            let counter = matches!(sample.value, prometheus_parse::Value::Counter(_));
            assert_eq!(counter, sample.metric.ends_with("_total"), "{}", sample.metric);
            // (The parser folds a histogram's buckets into one sample and leaves its `_sum`
            // and `_count` untyped; the page types their family `histogram`.)
            let histogram_part =
                family != sample.metric && page.contains(&format!("# TYPE {family} histogram\n"));
            assert!(
                histogram_part || !matches!(sample.value, prometheus_parse::Value::Untyped(_)),
                "{} has no TYPE",
                sample.metric
            );
        }
        let find = |name: &str, label: Option<(&str, &str)>| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        };
        let hits = find("cradle_get_hits_total", None).expect("hits");
        assert!(matches!(hits.value, prometheus_parse::Value::Counter(5.0)));
        let gets = find("cradle_operations_total", Some(("op", "get"))).expect("gets");
        assert!(matches!(gets.value, prometheus_parse::Value::Counter(7.0)));
        let info = find("cradle_build_info", None).expect("build info");
        assert_eq!(info.labels.get("durability"), Some("flushed"));
        assert!(find("process_resident_memory_bytes", None).is_some());
        assert!(find("cradle_service_seconds", None).is_some(), "the histogram");
        let health = find("cradle_health_verdict", None).expect("the health verdict");
        assert!(matches!(health.value, prometheus_parse::Value::Gauge(1.0)));
        let misses = find("cradle_errors_total", Some(("status", "not_found"))).expect("errors");
        assert!(matches!(misses.value, prometheus_parse::Value::Counter(2.0)));
        assert!(find("cradle_errors_total", Some(("status", "ok"))).is_none(), "OK is no error");
        let gets = find("cradle_request_duration_seconds", Some(("op", "get"))).expect("latency");
        let prometheus_parse::Value::Histogram(buckets) = &gets.value else {
            panic!("{:?}", gets.value)
        };
        let at = |le: f64| buckets.iter().find(|b| b.less_than == le).map(|b| b.count);
        assert_eq!(
            (at(0.000002), at(0.000004), at(f64::INFINITY)),
            (Some(0.0), Some(7.0), Some(7.0))
        );
        let count = find("cradle_request_duration_seconds_count", Some(("op", "get")));
        assert!(count.is_some_and(|c| matches!(c.value, prometheus_parse::Value::Untyped(7.0))));
        assert!(page.contains("# TYPE cradle_request_duration_seconds histogram\n"));
        assert!(page.contains(
            "# TYPE cradle_fsync_seconds histogram\ncradle_fsync_seconds_bucket{le=\"0.000001\"}"
        ));
        assert!(page.contains("# TYPE cradle_socket_drops_total counter\n"));
        assert!(find("cradle_datagrams_received_total", None).is_some());
    }

    /// A UDP socket of this process that the kernel dropped datagrams for shows them.
    #[test]
    fn socket_drops_are_read_for_this_process_sockets() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Nobody reads: the default receive buffer (at most a few MiB) overflows.
        for _ in 0..20_000 {
            let _ = sender.send_to(&[0u8; 1400], ("127.0.0.1", port));
        }
        let drops = socket_drops();
        assert!(drops.get(&port).is_some_and(|&d| d > 0), "{drops:?} for port {port}");
        let quiet = sender.local_addr().unwrap().port();
        assert_eq!(drops.get(&quiet).copied().unwrap_or(0), 0, "the sender dropped nothing");
    }

    #[test]
    fn per_partition_series_are_capped_per_core() {
        let addrs = vec!["127.0.0.1:7000".parse().unwrap()];
        let stats = NodeStats::for_layout(&control::NodeLayout::new(256, addrs).unwrap());
        for partition in 0..200u32 {
            stats.set_endpoint_requests(0, partition, u64::from(partition) + 1);
        }
        let page = render(&stats, &NodeInfo::now("memory"));
        let series: Vec<&str> =
            page.lines().filter(|l| l.starts_with("cradle_endpoint_requests_total{")).collect();
        assert_eq!(series.len(), ENDPOINT_SERIES_MAX + 1, "the busiest and the rest");
        assert!(page.contains("partition=\"199\"} 200\n"), "the busiest is kept");
        assert!(!page.contains("partition=\"0\"}"), "the idlest is summed");
        // 136 partitions (0..=135) of 1..=136 requests are summed.
        let rest: u64 = (1..=136).sum();
        assert!(page.contains(&format!("partition=\"other\"}} {rest}\n")), "{page}");
    }

    #[test]
    fn serves_over_http_and_stops() {
        let stats = Arc::new(NodeStats::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let serving = Arc::new(AtomicBool::new(false));
        let node = NodeInfo::now("memory");
        let handle = serve(addr, stats, stop.clone(), serving.clone(), node).unwrap();
        let ask = |request: &str| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        };
        let response = ask("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.contains("cradle_requests_total{core=\"0\"} 0"));
        let starting = ask("GET /healthz HTTP/1.1\r\n\r\n");
        assert!(starting.starts_with("HTTP/1.1 503 "), "not serving yet: {starting}");
        serving.store(true, Ordering::Release);
        let up = ask("GET /healthz HTTP/1.1\r\n\r\n");
        assert!(up.starts_with("HTTP/1.1 200 OK") && up.ends_with("\r\n\r\nserving\n"), "{up}");
        let head = ask("HEAD /healthz HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"), "{head}");
        assert!(head.contains("Content-Length: 8\r\n"), "the GET's length, no body: {head}");
        assert!(ask("GET /nothing HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        // A connection that never sends its request does not hold up the stop.
        let _silent = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(100)); // accepted, waiting for a request
        stop.store(true, Ordering::Relaxed);
        let stopping = std::time::Instant::now();
        handle.join().unwrap();
        assert!(stopping.elapsed() < Duration::from_millis(500), "{:?}", stopping.elapsed());
    }
}
