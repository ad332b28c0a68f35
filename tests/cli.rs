//! The CLI contract against a real `cradle node` process over real UDP.

mod common;

use common::{bytes, run, stderr_of, NodeProcess};
use std::time::Duration;

#[test]
fn values_of_every_size_round_trip_byte_exact() {
    let node = NodeProcess::start(2, 64, &[]);
    let server = node.server();
    for (i, len) in [0usize, 1, 1400, 64 << 10, 1 << 20, 16 << 20].into_iter().enumerate() {
        let key = format!("value-{len}");
        let value = bytes(len, i as u64 + 1);
        let put = run(&["put", "--server", &server, &key, "-"], &value);
        assert!(put.status.success(), "put {len} B: {}", stderr_of(&put));
        let get = run(&["get", "--server", &server, &key], b"");
        assert!(get.status.success(), "get {len} B: {}", stderr_of(&get));
        assert!(
            get.stdout == value,
            "{len}-byte value came back different ({} bytes)",
            get.stdout.len()
        );
    }
    let too_big = bytes((16 << 20) + 1, 99);
    let put = run(&["put", "--server", &server, "too-big", "-"], &too_big);
    assert!(!put.status.success());
    assert!(stderr_of(&put).contains("too large"), "stderr: {}", stderr_of(&put));
    assert_eq!(stderr_of(&put).lines().count(), 1, "one clear line: {}", stderr_of(&put));
}

#[test]
fn put_get_del_cas_and_status() {
    let mut node = NodeProcess::start(1, 16, &[]);
    let server = node.server();
    let put = run(&["put", "--server", &server, "k", "hello"], b"");
    assert!(put.status.success(), "{}", stderr_of(&put));
    let version: u64 = String::from_utf8(put.stdout).unwrap().trim().parse().unwrap();

    let get = run(&["get", "--server", &server, "k"], b"");
    assert_eq!(get.stdout, b"hello");

    let cas = run(&["cas", "--server", &server, "k", &version.to_string(), "world"], b"");
    assert!(cas.status.success(), "{}", stderr_of(&cas));
    let stale = run(&["cas", "--server", &server, "k", &version.to_string(), "again"], b"");
    assert_eq!(stale.status.code(), Some(1));
    assert!(stderr_of(&stale).contains("version mismatch"));
    assert_eq!(run(&["get", "--server", &server, "k"], b"").stdout, b"world");

    let del = run(&["del", "--server", &server, "k"], b"");
    assert!(del.status.success(), "{}", stderr_of(&del));
    let gone = run(&["get", "--server", &server, "k"], b"");
    assert_eq!(gone.status.code(), Some(1));
    assert_eq!(stderr_of(&gone).trim(), "not found");
    assert!(gone.stdout.is_empty());
    assert_eq!(run(&["del", "--server", &server, "k"], b"").status.code(), Some(1));

    run(&["put", "--server", &server, "a", "1"], b"");
    run(&["put", "--server", &server, "b", "2"], b"");
    let status = run(&["status", "--server", &server, "--json"], b"");
    assert!(status.status.success(), "{}", stderr_of(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("one JSON object");
    assert_eq!(json["endpoints"], 16);
    assert_eq!(json["keys"], 2);
    assert!(json["requests"].as_u64().unwrap() >= 8);
    assert_eq!(json["dropped_malformed"], 0);

    let exit = node.terminate(Duration::from_secs(5));
    assert!(exit.success(), "node exit: {exit:?}");
}

#[test]
fn errors_are_one_line_and_never_a_panic() {
    // Nothing listens on this port: the client gives up after its retry budget.
    let get = run(&["get", "--server", "127.0.0.1:9", "k"], b"");
    assert_eq!(get.status.code(), Some(1));
    let err = stderr_of(&get);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let bad = run(&["get", "--server", "not-an-address", "k"], b"");
    assert!(!bad.status.success());
    assert_eq!(stderr_of(&bad).lines().count(), 1, "{}", stderr_of(&bad));
    let unknown = run(&["frobnicate"], b"");
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(stderr_of(&unknown).lines().count(), 1, "{}", stderr_of(&unknown));
    let busy = NodeProcess::start(1, 4, &[]);
    let clash = run(&["node", "--listen", &busy.server(), "--data-dir", "/tmp", "--no-pin"], b"");
    assert!(!clash.status.success());
    assert!(stderr_of(&clash).contains("cannot listen"), "{}", stderr_of(&clash));
}

#[test]
fn install_script_dry_run_prints_every_step_and_changes_nothing() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh");
    for args in [
        &["--dry-run", "--hugepages", "64", "--no-start"][..],
        &["--uninstall", "--dry-run", "--purge"],
    ] {
        let out = std::process::Command::new("bash").arg(script).args(args).output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.lines().filter(|l| l.starts_with("+ ")).count() >= 2, "{text}");
    }
    let out = std::process::Command::new("bash").arg(script).arg("--dry-run").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("install -m 0755 target/release/cradle /usr/local/bin/cradle"), "{text}");
    assert!(
        text.contains("useradd --system") || text.contains("kept the existing cradle user"),
        "the node's user is made: {text}"
    );
    assert!(text.contains("-o cradle -g cradle /var/lib/cradle"), "it owns its data: {text}");
    assert!(!std::path::Path::new("/etc/cradle/cradle.toml").exists() || text.contains("kept"));
}

/// The packaged unit runs the node as `cradle`, with no capability and the file system
/// read-only but for its data; `systemd-analyze` checks it where it is installed.
#[test]
fn the_systemd_unit_is_unprivileged_and_sandboxed() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/cradle.service");
    let unit = std::fs::read_to_string(path).unwrap();
    let settings: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#')).collect();
    for wanted in [
        "User=cradle",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=cradle",
        "PrivateDevices=yes",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ] {
        assert!(settings.contains(&wanted), "{wanted} missing from {path}");
    }
    let analyze = std::process::Command::new("systemd-analyze").arg("--version").output();
    if analyze.is_err() {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    // Its ExecStart must exist for `verify`: check a copy that runs /bin/true.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("cradle.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/cradle", "/bin/true")).unwrap();
    let verify = std::process::Command::new("systemd-analyze").arg("verify").arg(&copy).output();
    let verify = verify.unwrap();
    assert!(verify.status.success() && verify.stderr.is_empty(), "{}", stderr_of(&verify));
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        security.status.success(),
        "exposure above 2.0: {}",
        String::from_utf8_lossy(&security.stdout)
    );
}

#[test]
fn the_single_node_demo_runs_its_workload_and_checks_it() {
    let out = run(&["demo", "--single-node"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr_of(&out));
    assert!(text.contains("demo: all checks passed"), "{text}");
    assert!(text.contains("\"keys\":4903"), "5,000 puts, 100 deletes, 2 more keys: {text}");
}

#[test]
fn the_demo_kills_a_node_of_its_cluster_checks_every_write_and_rebuilds_it() {
    let out = run(&["demo"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr_of(&out));
    for said in [
        "replication factor 3",
        "kill -9 node",
        "the clients' longest wait across the kill",
        "every acknowledged write is there: 2000 keys",
        "every partition on all three again, none lagging",
        "demo: all checks passed",
    ] {
        assert!(text.contains(said), "no {said:?} in:\n{text}");
    }
    // The restart went through learners (a map with some) to backups only.
    assert!(text.contains(" learners of 12 partitions"), "{text}");
    assert!(text.contains("24 backups and 0 learners of 12 partitions"), "{text}");
}

#[test]
fn node_settings_are_checked_against_the_machine_and_names_resolve() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let out = run(&["node", "--cores", "4096", "--no-pin", "--data-dir", dir], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("cores = 4096 but this process may run on"),
        "{}",
        stderr_of(&out)
    );
    let config = data.path().join("cradle.toml");
    std::fs::write(&config, format!("[node]\ndata_dir = {dir:?}\n[storage]\nchunk_bytes = 3\n"))
        .unwrap();
    let out = run(&["node", "--config", config.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("chunk_bytes must be in 4096..=4194304"),
        "{}",
        stderr_of(&out)
    );
    let out = run(&["node", "--listen", "nowhere.invalid:7000", "--data-dir", dir], b"");
    assert!(
        stderr_of(&out).contains("cannot resolve \"nowhere.invalid:7000\""),
        "{}",
        stderr_of(&out)
    );
    // A name is resolved, not refused as "invalid socket address syntax".
    let mut command = common::cradle();
    command
        .args(["node", "--listen", "localhost:0", "--no-pin", "--data-dir", dir])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let node = NodeProcess::spawn(command, tempfile::tempdir().unwrap());
    assert!(node.addr.ip().is_loopback(), "{}", node.addr);
    let out = run(&["put", "--server", &format!("localhost:{}", node.addr.port()), "a", "b"], b"");
    assert!(out.status.success(), "{}", stderr_of(&out));
}
