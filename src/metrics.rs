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
];

/// The metrics page: every counter per core.
pub(crate) fn render(stats: &NodeStats) -> String {
    let snapshot = stats.snapshot();
    let mut page = String::new();
    for (name, help, gauge, read) in METRICS {
        let kind = if *gauge { "gauge" } else { "counter" };
        let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (core, counters) in snapshot.cores.iter().enumerate() {
            let _ = writeln!(page, "{name}{{core=\"{core}\"}} {}", read(counters));
        }
    }
    render_latency(&mut page, &snapshot.latency);
    render_endpoints(&mut page, stats, snapshot.cores.len() as u32);
    page
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

/// Per-endpoint request counters, only for endpoints that served any (10,000 idle endpoints
/// would otherwise be 10,000 lines of zeros).
fn render_endpoints(page: &mut String, stats: &NodeStats, cores: u32) {
    let name = "cradle_endpoint_requests_total";
    let help = "Keyed requests per endpoint (partition), for endpoints that served any.";
    let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} counter");
    for core in 0..cores {
        for (partition, requests) in stats.endpoint_requests(core).into_iter().enumerate() {
            if requests > 0 {
                let labels = format!("core=\"{core}\",partition=\"{partition}\"");
                let _ = writeln!(page, "{name}{{{labels}}} {requests}");
            }
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
                        answer(stream, &stats, healthy)
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))
}

fn answer(mut stream: TcpStream, stats: &NodeStats, healthy: bool) {
    // A scrape is tiny; a slow or silent client must not hold the thread.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut request = [0u8; 1024];
    let n = stream.read(&mut request).unwrap_or(0);
    let request = &request[..n];
    let head = request.starts_with(b"HEAD ");
    let path = request.split(|&b| b == b' ').nth(1).unwrap_or_default();
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let get = request.starts_with(b"GET ") || head;
    let (status, body) = match (get, path) {
        (true, b"/metrics") => ("200 OK", render(stats)),
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
        stats.count_endpoint_request(1, 5);
        let page = render(&stats);
        assert!(page.contains("cradle_requests_total{core=\"1\"} 5\n"), "{page}");
        assert!(page.contains("cradle_keys{core=\"0\"} 0\n"));
        assert!(page.contains("# TYPE cradle_keys gauge"));
        let plain = page.lines().filter(|l| {
            l.starts_with("cradle_") && !l.contains("service") && !l.contains("endpoint_requests")
        });
        assert_eq!(plain.count(), 2 * METRICS.len());
        assert!(page.contains("cradle_service_seconds_bucket{core=\"1\",le=\"0.000002\"} 0\n"));
        assert!(page.contains("cradle_service_seconds_bucket{core=\"1\",le=\"0.000005\"} 4\n"));
        assert!(page.contains("cradle_service_seconds_count{core=\"1\"} 4\n"));
        assert!(page.contains("cradle_endpoint_requests_total{core=\"1\",partition=\"5\"} 1\n"));
    }

    #[test]
    fn serves_over_http_and_stops() {
        let stats = Arc::new(NodeStats::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let serving = Arc::new(AtomicBool::new(false));
        let handle = serve(addr, stats, stop.clone(), serving.clone()).unwrap();
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
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
    }
}
