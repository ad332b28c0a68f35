//! Counters, expiry, the health endpoint and mixed-cluster server lists, against real
//! `cradle node` processes over real UDP (issue #16).

mod common;

use client::{Client, ClientConfig, Error, IncrOutcome};
use common::{run, stderr_of, NodeProcess};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn cradle_incr_prints_the_count_and_refuses_below_the_floor() {
    let node = NodeProcess::start(1, 16, &[]);
    let s = node.server();
    let incr = |args: &[&str]| {
        let mut all = vec!["incr", "--server", &s];
        all.extend_from_slice(args);
        run(&all, b"")
    };
    let out = incr(&["budget"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "1", "--by defaults to 1, an absent key counts 0");
    assert_eq!(stdout_of(&incr(&["budget", "--by", "9"])), "10");
    let out = incr(&["budget", "--by", "-10", "--floor", "0"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "0", "down to the floor itself");
    let out = incr(&["budget", "--by", "-1", "--floor", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("below floor"), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty());
    assert_eq!(run(&["get", "--server", &s, "budget"], b"").stdout, b"0", "nothing written");
    assert_eq!(stdout_of(&incr(&["budget", "--by", "-3"])), "-3", "no floor: below 0");
    let out = incr(&["budget", "--by", "1", "--floor", "-2"]);
    assert_eq!(stdout_of(&out), "-2", "a negative floor");
    // A value that is not a count: refused with a clear error, not counted.
    run(&["put", "--server", &s, "name", "alice"], b"");
    let out = incr(&["name"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("not a counter"), "{}", stderr_of(&out));
}

#[test]
fn a_ttl_expires_at_once_and_survives_a_restart() {
    let mut node = NodeProcess::start(1, 16, &["--durability", "flushed"]);
    let s = node.server();
    let put = |key: &str, ttl: &str| run(&["put", "--server", &s, key, "v", "--ttl", ttl], b"");
    let written = Instant::now();
    assert!(put("short", "2").status.success());
    assert!(put("long", "3600").status.success());
    assert!(run(&["put", "--server", &s, "forever", "v"], b"").status.success());
    let counted = run(&["incr", "--server", &s, "cap", "--ttl", "2"], b"");
    assert_eq!(stdout_of(&counted), "1");
    assert_eq!(run(&["get", "--server", &s, "short"], b"").stdout, b"v");
    node.kill();
    node.restart();
    // The expiry is a time on the wall clock kept with the value: a restart neither
    // forgets it nor starts it again.
    while written.elapsed() < Duration::from_millis(2100) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for key in ["short", "cap"] {
        let gone = run(&["get", "--server", &s, key], b"");
        assert_eq!(gone.status.code(), Some(1), "{key} expired");
        assert_eq!(stderr_of(&gone).trim(), "not found");
    }
    for key in ["long", "forever"] {
        assert_eq!(run(&["get", "--server", &s, key], b"").stdout, b"v", "{key} lives");
    }
    // An expired counter counts again from 0.
    assert_eq!(stdout_of(&run(&["incr", "--server", &s, "cap"], b"")), "1");
}

#[test]
fn concurrent_decrements_never_pass_the_floor_and_each_counts_once() {
    let node = NodeProcess::start(2, 16, &[]);
    let server = node.addr;
    let mut setup = Client::connect(ClientConfig::new(vec![server])).unwrap();
    const BUDGET: i64 = 3_000;
    setup.put(b"budget", BUDGET.to_string().as_bytes()).unwrap();
    // 8 clients take 1 at a time until refused: exactly BUDGET are granted.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = Client::connect(ClientConfig::new(vec![server])).unwrap();
                let (mut granted, mut last) = (0i64, i64::MAX);
                loop {
                    match client.incr(b"budget", -1, Some(0)).unwrap() {
                        IncrOutcome::Counted { count } => {
                            assert!(count >= 0 && count < last, "{count} after {last}");
                            (granted, last) = (granted + 1, count);
                        }
                        IncrOutcome::BelowFloor { count } => {
                            assert_eq!(count, 0, "refused only when spent");
                            return granted;
                        }
                    }
                }
            })
        })
        .collect();
    let granted: i64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(granted, BUDGET);
    assert_eq!(setup.get(b"budget").unwrap().unwrap().bytes, b"0");
}

#[test]
fn the_metrics_port_answers_healthz_while_the_node_serves() {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut node = NodeProcess::start(1, 16, &["--metrics-listen", &metrics.to_string()]);
    let ask = |request: &str| {
        let mut stream = std::net::TcpStream::connect(metrics).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let get = ask("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
    let head = ask("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
    // What a dashboard reads, through a real Prometheus parser.
    let s = node.server();
    for _ in 0..3 {
        run(&["incr", "--server", &s, "n", "--by", "-1", "--floor", "-2"], b"");
    }
    run(&["get", "--server", &s, "n"], b"");
    run(&["get", "--server", &s, "absent"], b"");
    let page = ask("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let body = page.split_once("\r\n\r\n").expect("a body").1;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("the page parses");
    let value = |name: &str, label: Option<(&str, &str)>| {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)));
        match sample.map(|s| &s.value) {
            Some(prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v)) => *v,
            other => panic!("{name}: {other:?}"),
        }
    };
    // (A resend of an INCR whose reply waited for its fdatasync longer than the client's
    // timeout is counted again, and as a duplicate answered: the INCR ran once.)
    let resent = value("cradle_duplicates_answered_total", None);
    assert_eq!(value("cradle_operations_total", Some(("op", "incr"))) - resent, 3.0);
    assert_eq!(value("cradle_incr_below_floor_total", None), 1.0, "-3 is below -2");
    assert_eq!(value("cradle_get_hits_total", None), 1.0);
    assert_eq!(value("cradle_get_misses_total", None), 1.0);
    assert!(value("cradle_uptime_seconds", None) > 0.0);
    assert!(value("process_resident_memory_bytes", None) > 1e6);
    // #16 point 9's rest: errors by status, latency per operation and of fdatasync, bytes
    // in and out, socket drops (none here), each of its Prometheus type.
    assert!(value("cradle_errors_total", Some(("status", "not_found"))) >= 1.0, "the absent GET");
    assert!(value("cradle_errors_total", Some(("status", "below_floor"))) >= 1.0);
    assert!(value("cradle_datagrams_received_total", None) >= 5.0);
    assert!(value("cradle_received_bytes_total", None) >= 5.0 * 72.0);
    assert!(value("cradle_reply_bytes_total", None) >= 5.0 * 72.0);
    let histogram = |name: &str, label: Option<(&str, &str)>| {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)));
        match sample.map(|s| &s.value) {
            Some(prometheus_parse::Value::Histogram(buckets)) => {
                buckets.iter().find(|b| b.less_than.is_infinite()).map_or(0.0, |b| b.count)
            }
            other => panic!("{name}: {other:?}"),
        }
    };
    let incrs = histogram("cradle_request_duration_seconds", Some(("op", "incr")));
    assert_eq!(incrs - resent, 3.0);
    assert!(histogram("cradle_request_duration_seconds", Some(("op", "get"))) >= 2.0);
    assert!(histogram("cradle_fsync_seconds", None) >= 1.0, "flushed: the INCRs were synced");
    let port = node.addr.port().to_string();
    assert_eq!(value("cradle_socket_drops_total", Some(("port", &port))), 0.0);
    let status = run(&["status", "--server", &s], b"");
    let first = String::from_utf8_lossy(&status.stdout).lines().next().unwrap_or("").to_string();
    let version = env!("CARGO_PKG_VERSION");
    assert!(first.contains(&format!("cradle {version}, up ")), "{first}");
    assert!(first.ends_with("durability flushed"), "{first}");
    node.terminate(Duration::from_secs(10));
    assert!(std::net::TcpStream::connect(metrics).is_err(), "gone with the node");
}

#[test]
fn a_server_list_of_two_independent_nodes_is_refused() {
    let (a, b) = (NodeProcess::start(1, 16, &[]), NodeProcess::start(1, 16, &[]));
    // The CLI: a clear error, nothing written to either.
    let out = run(&["incr", "--server", &a.server(), "--server", &b.server(), "n"], b"");
    assert_eq!(out.status.code(), Some(1));
    let message = stderr_of(&out);
    assert!(message.contains("another cluster") && message.contains(&b.server()), "{message}");
    for node in [&a, &b] {
        let get = run(&["get", "--server", &node.server(), "n"], b"");
        assert_eq!(get.status.code(), Some(1), "nothing counted on {}", node.server());
    }
    // The library, too, and each node alone is fine.
    let both = Client::connect(ClientConfig::new(vec![a.addr, b.addr]));
    assert!(matches!(both, Err(Error::ForeignCluster { server, .. }) if server == b.addr));
    assert!(Client::connect(ClientConfig::new(vec![a.addr])).is_ok());
    // A node keeps its identity across a restart: listed twice (its own address and
    // another name for it, the same node), it is one data set.
    let mut a = a;
    a.kill();
    a.restart();
    let mut again = Client::connect(ClientConfig::new(vec![a.addr])).unwrap();
    again.put(b"k", b"v").unwrap();
}

#[test]
fn a_failover_to_a_node_of_another_data_set_is_refused() {
    let a = NodeProcess::start(1, 16, &[]);
    let mut b = NodeProcess::start(1, 16, &[]);
    let b_addr = b.addr;
    b.kill(); // silent when the client connects: it cannot tell yet
    let mut config = ClientConfig::new(vec![a.addr, b_addr]);
    config.rto_initial = Duration::from_millis(20);
    let mut client = Client::connect(config).unwrap();
    client.put(b"k", b"on a").unwrap();
    b.restart();
    let mut a = a;
    a.kill();
    // Failing over from the dead A, the client asks B which data set it is before it
    // sends it anything, and refuses.
    match client.put(b"k", b"lost?") {
        Err(Error::ForeignCluster { server, .. }) => assert_eq!(server, b_addr),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let get = run(&["get", "--server", &b_addr.to_string(), "k"], b"");
    assert_eq!(get.status.code(), Some(1), "nothing was written to B");
}
