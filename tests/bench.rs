//! `cradle bench --keys-per-request` against real `cradle node` processes: multi-gets of the
//! cradle protocol (to one core and to two, whose keys must not mix in one datagram) and of
//! memcached's UDP protocol (through the node's memcached door), each reply checked by the
//! generator byte for byte; a request counts once all of its keys are answered.

mod common;

use common::{run, NodeProcess};
use std::net::UdpSocket;

/// Runs a short bounded `cradle bench` and returns its JSON report.
fn bench(server: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["bench", "--server", server, "--keys", "500", "--in-flight", "8"];
    args.extend(["--duration", "1", "--warmup", "0.2", "--json", "--quiet"]);
    args.extend(extra);
    let output = run(&args, b"");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{args:?}: {}{stdout}", common::stderr_of(&output));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn count(report: &serde_json::Value, field: &str) -> u64 {
    report[field].as_u64().unwrap_or_else(|| panic!("{field} in {report}"))
}

/// Every request answered in full: N keys each, all found and byte-exact, nothing stray.
fn assert_all_found(report: &serde_json::Value, keys_per_request: u64) {
    let ops = count(report, "ops");
    assert!(ops > 100, "{report}");
    assert_eq!(count(report, "keys_read"), keys_per_request * ops, "{report}");
    for field in ["errors", "key_misses", "misses", "malformed", "late"] {
        assert_eq!(count(report, field), 0, "{field}: {report}");
    }
    let ratio = report["keys_per_sec"].as_f64().unwrap() / report["ops_per_sec"].as_f64().unwrap();
    assert!((ratio - keys_per_request as f64).abs() < 0.01, "{report}");
}

#[test]
fn multi_gets_of_four_keys_are_answered_in_full_on_one_core_and_on_two() {
    for cores in [1, 2] {
        let node = NodeProcess::start(cores, 8, &["--durability", "memory"]);
        // A fresh node: every key of every request is a miss, and still answered.
        let report = bench(&node.server(), &["--keys-per-request", "4", "--no-preload"]);
        let ops = count(&report, "ops");
        assert!(ops > 100, "{report}");
        assert_eq!(count(&report, "misses"), ops, "{report}");
        assert_eq!(count(&report, "key_misses"), 4 * ops, "{report}");
        assert_eq!(count(&report, "errors"), 0, "{report}");
        let report = bench(&node.server(), &["--keys-per-request", "4"]);
        assert_eq!(count(&report, "keys_per_request"), 4);
        assert_all_found(&report, 4);
    }
}

#[test]
fn memcached_multi_gets_through_the_door_are_answered_in_full() {
    let port = loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            break port;
        }
    };
    let node = NodeProcess::start(1, 8, &["--memcache-port", &port.to_string()]);
    let door = format!("127.0.0.1:{port}");
    let report = bench(&door, &["--protocol", "memcache-udp", "--keys-per-request", "4"]);
    assert_all_found(&report, 4);
    drop(node);
}

#[test]
fn more_gets_than_fit_one_datagram_are_refused() {
    let output = run(&["bench", "--server", "127.0.0.1:9", "--keys-per-request", "17"], b"");
    assert!(!output.status.success());
    assert!(common::stderr_of(&output).contains("at most 16"), "{}", common::stderr_of(&output));
}
