//! A real `cradle node` process under hostile and idle conditions, over real UDP on 127.0.0.1.

mod common;

use common::{run, NodeProcess};
use proto::{encode_message, flags, HeaderFields, Messages, Opcode, Status, HEADER_BYTES};
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use testkit::Rng;

fn encode(h: &HeaderFields, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_BYTES + key.len() + value.len()];
    let len = encode_message(&mut buf, h, key, value).unwrap();
    buf.truncate(len);
    buf
}

fn request(op: Opcode, tracking_id: u64, token: u64, key: &[u8]) -> Vec<u8> {
    let h = HeaderFields {
        opcode: op as u8,
        client_id: 77,
        tracking_id,
        token,
        ..HeaderFields::default()
    };
    encode(&h, key, b"")
}

fn status_json(node: &NodeProcess) -> serde_json::Value {
    let out = run(&["status", "--server", &node.server(), "--json"], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A datagram that is malformed for certain (checked with `proto` itself).
fn garbage(rng: &mut Rng) -> Vec<u8> {
    loop {
        let mut d = request(Opcode::Get, rng.next_u64(), 0, b"some-key");
        match rng.below(6) {
            0 => d = (0..rng.below(1600)).map(|_| rng.next_u64() as u8).collect(),
            1 => d.truncate(rng.below(HEADER_BYTES as u64) as usize),
            2 => d[0] ^= 0x5A,                                       // magic
            3 => d[40..44].copy_from_slice(&9_999u32.to_le_bytes()), // value_len past the end
            4 => {
                // A fragment claiming four billion fragments.
                d[4..6].copy_from_slice(&flags::FRAGMENT.to_le_bytes());
                d[48..52].copy_from_slice(&u32::MAX.to_le_bytes());
            }
            _ => d[36..38].copy_from_slice(&4_000u16.to_le_bytes()), // key_len
        }
        if Messages::new(&d).any(|m| m.is_err()) {
            return d;
        }
    }
}

#[test]
fn a_million_malformed_datagrams_are_counted_while_valid_requests_are_served() {
    let node = NodeProcess::start(1, 64, &[]);
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sync = UdpSocket::bind("127.0.0.1:0").unwrap();
    sync.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut client = client::Client::connect(client::ClientConfig::new(vec![node.addr])).unwrap();
    let mut rng = Rng::from_seed(0x5EED);
    let mut buf = [0u8; 2048];
    const DATAGRAMS: u64 = 1_000_000;
    const BETWEEN_SYNCS: u64 = 4_000;
    let started = Instant::now();
    for round in 0..DATAGRAMS / BETWEEN_SYNCS {
        for _ in 0..BETWEEN_SYNCS {
            flood.send_to(&garbage(&mut rng), node.addr).unwrap();
        }
        // The node's queue is FIFO: once this PING is answered, every datagram before it was
        // handled, so the socket buffer never overflows and the count can be exact.
        sync.send_to(&request(Opcode::Ping, round, 0, b""), node.addr).unwrap();
        let (n, _) = sync.recv_from(&mut buf).expect("the node answers a PING during the flood");
        assert_eq!(Messages::new(&buf[..n]).next().unwrap().unwrap().header.tracking_id, round);
        // And real work goes on meanwhile.
        let key = format!("during-{round}");
        let version = client.put(key.as_bytes(), b"v").unwrap();
        assert_eq!(client.get(key.as_bytes()).unwrap().unwrap().version, version);
    }
    let elapsed = started.elapsed();
    let stats = status_json(&node);
    assert_eq!(stats["dropped_malformed"].as_u64(), Some(DATAGRAMS), "{stats}");
    assert_eq!(stats["keys"].as_u64(), Some(DATAGRAMS / BETWEEN_SYNCS));
    eprintln!("{DATAGRAMS} malformed datagrams in {elapsed:?}; node stats {stats}");
}

#[test]
fn an_unvalidated_sender_never_gets_more_than_three_times_its_bytes() {
    let node = NodeProcess::start(1, 64, &[]);
    let mut client = client::Client::connect(client::ClientConfig::new(vec![node.addr])).unwrap();
    let big = common::bytes(1 << 20, 5);
    client.put(b"big", &big).unwrap();
    client.put(b"medium", &[1; 1300]).unwrap();

    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut sent = 0;
    let mut received = 0;
    let mut token = 0;
    let mut buf = [0u8; 2048];
    let probes: Vec<Vec<u8>> = vec![
        request(Opcode::Get, 1, 0, b"big"),
        request(Opcode::Get, 2, 0, b"medium"),
        request(Opcode::Map, 3, 0, b""),
        request(Opcode::Stats, 4, 0, b""),
        request(Opcode::Get, 5, 0xDEAD_BEEF, b"big"), // a guessed token
        [request(Opcode::Get, 6, 0, b"big"), request(Opcode::Get, 7, 0, b"medium")].concat(),
    ];
    for probe in &probes {
        attacker.send_to(probe, node.addr).unwrap();
        sent += probe.len();
        while let Ok((n, _)) = attacker.recv_from(&mut buf) {
            received += n;
            for m in Messages::new(&buf[..n]) {
                token = m.unwrap().header.token;
            }
        }
        assert!(received <= 3 * sent, "{received} bytes back for {sent} sent");
    }
    assert_ne!(token, 0, "replies teach the token");
    // With the token, the same request is answered in full (the first window of fragments).
    attacker.send_to(&request(Opcode::Get, 8, token, b"big"), node.addr).unwrap();
    let mut fragments = 0;
    while let Ok((n, _)) = attacker.recv_from(&mut buf) {
        let m = Messages::new(&buf[..n]).next().unwrap().unwrap();
        assert_eq!(m.header.status, Status::Ok as u16);
        fragments += 1;
    }
    assert_eq!(fragments, 32, "a validated sender gets the first window of fragments");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap() // utime + stime
}

/// Start time, memory per empty endpoint and idle CPU with 10,000 endpoints on one core.
/// The figures are printed (docs/BENCHMARKS.md records them); the bounds are loose on purpose,
/// they catch a busy idle loop or a per-endpoint allocation, not noise.
#[test]
fn ten_thousand_endpoints_on_one_core_cost_little_when_idle() {
    let started = Instant::now();
    let one = NodeProcess::start(1, 1, &[]);
    let ready_one = started.elapsed();
    let started = Instant::now();
    let many = NodeProcess::start(1, 10_000, &[]);
    let ready_many = started.elapsed();
    let stats = status_json(&many);
    assert_eq!(stats["endpoints"].as_u64(), Some(10_000));

    std::thread::sleep(Duration::from_millis(300));
    let (rss_one, rss_many) = (rss_kib(one.child.id()), rss_kib(many.child.id()));
    let per_endpoint = (rss_many.saturating_sub(rss_one) * 1024) as f64 / 10_000.0;

    let ticks_before = cpu_ticks(many.child.id());
    let idle = Duration::from_secs(3);
    std::thread::sleep(idle);
    let ticks = cpu_ticks(many.child.id()) - ticks_before;
    // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ) on x86_64.
    let cpu_percent = ticks as f64 / 100.0 / idle.as_secs_f64() * 100.0;

    eprintln!(
        "10,000 endpoints: ready in {ready_many:?} (1 endpoint: {ready_one:?}); RSS {rss_many} KiB \
         vs {rss_one} KiB => {per_endpoint:.0} bytes per empty endpoint; idle CPU {cpu_percent:.1} % of a core"
    );
    assert!(ready_many < Duration::from_secs(5), "start took {ready_many:?}");
    assert!(per_endpoint < 1024.0, "{per_endpoint} bytes per empty endpoint");
    assert!(cpu_percent < 10.0, "idle node uses {cpu_percent} % CPU");
}

#[test]
fn a_config_file_starts_a_node_with_metrics() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = dir.path().join("cradle.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nlisten = \"127.0.0.1:0\"\ncores = 2\npartitions = 32\npin = false\n\
             data_dir = \"{}\"\n[metrics]\nlisten = \"{metrics_port}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut command = common::cradle();
    command.arg("node").arg("--config").arg(&config).stdout(std::process::Stdio::piped());
    let node = NodeProcess::spawn(command, dir);
    for key in ["a", "b", "c"] {
        assert!(run(&["put", "--server", &node.server(), key, "v"], b"").status.success());
    }
    let mut stream = std::net::TcpStream::connect(metrics_port).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    let keys: u64 = page
        .lines()
        .filter(|l| l.starts_with("cradle_keys{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(keys, 3, "{page}");
    assert!(page.contains("cradle_endpoints{core=\"1\"} 16"), "{page}");

    let bad = dir_with("[node]\ncorez = 2\n");
    let out = run(&["node", "--config", bad.1.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("corez"), "{err}");
}

fn dir_with(config: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cradle.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}
