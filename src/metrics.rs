//! Prometheus text metrics over HTTP, served by a thread of its own (never by a serving loop).

use control::{CoreCounters, NodeStats};
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
    (
        "cradle_requests_total",
        "Valid request messages handled.",
        false,
        |c| c.requests,
    ),
    (
        "cradle_dropped_malformed_total",
        "Datagrams dropped as malformed.",
        false,
        |c| c.dropped_malformed,
    ),
    (
        "cradle_duplicates_answered_total",
        "Resent writes answered from a completion record.",
        false,
        |c| c.duplicates_answered,
    ),
    (
        "cradle_retry_token_total",
        "Replies held back by the amplification limit.",
        false,
        |c| c.retry_token,
    ),
    ("cradle_busy_total", "Requests answered BUSY.", false, |c| {
        c.busy
    }),
    (
        "cradle_wrong_owner_total",
        "Requests answered WRONG_OWNER.",
        false,
        |c| c.wrong_owner,
    ),
    (
        "cradle_reply_datagrams_total",
        "Reply datagrams sent.",
        false,
        |c| c.reply_datagrams,
    ),
    (
        "cradle_reassemblies_expired_total",
        "Fragmented writes abandoned by their sender.",
        false,
        |c| c.reassemblies_expired,
    ),
    ("cradle_endpoints", "Endpoints hosted.", true, |c| {
        c.endpoints
    }),
    ("cradle_keys", "Live keys.", true, |c| c.keys),
    (
        "cradle_completion_records",
        "Completion records held.",
        true,
        |c| c.completion_records,
    ),
    (
        "cradle_reassemblies_active",
        "Fragmented writes being received.",
        true,
        |c| c.reassemblies_active,
    ),
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
    page
}

/// Serves `GET /metrics` on `listen` until `stop` is set.
pub(crate) fn serve(
    listen: SocketAddr,
    stats: Arc<NodeStats>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, String> {
    let listener =
        TcpListener::bind(listen).map_err(|e| format!("cannot serve metrics on {listen}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("metrics listener: {e}"))?;
    std::thread::Builder::new()
        .name("cradle-metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => answer(stream, &stats),
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))
}

fn answer(mut stream: TcpStream, stats: &NodeStats) {
    // A scrape is tiny; a slow or silent client must not hold the thread.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut request = [0u8; 1024];
    let n = stream.read(&mut request).unwrap_or(0);
    let (status, body) = if request[..n].starts_with(b"GET /metrics") {
        ("200 OK", render(stats))
    } else {
        ("404 Not Found", "try /metrics\n".to_string())
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_has_every_metric() {
        let stats = NodeStats::new(2);
        stats.publish(
            1,
            &CoreCounters {
                requests: 5,
                keys: 3,
                ..CoreCounters::default()
            },
        );
        let page = render(&stats);
        assert!(
            page.contains("cradle_requests_total{core=\"1\"} 5\n"),
            "{page}"
        );
        assert!(page.contains("cradle_keys{core=\"0\"} 0\n"));
        assert!(page.contains("# TYPE cradle_keys gauge"));
        assert_eq!(
            page.lines().filter(|l| !l.starts_with('#')).count(),
            2 * METRICS.len()
        );
    }

    #[test]
    fn serves_over_http_and_stops() {
        let stats = Arc::new(NodeStats::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let handle = serve(addr, stats, stop.clone()).unwrap();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.contains("cradle_requests_total{core=\"0\"} 0"));
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
    }
}
