//! Exactly-once writes over real UDP with real loss and duplication: the `cradle` binary and
//! the client run in a network namespace the test creates, whose loopback has nftables rules
//! that drop 10 % of UDP datagrams and duplicate 10 % (this kernel has no netem). Datagrams
//! overtake each other through resends of pipelined requests.
//!
//! Needs root (network namespaces, nftables), `ip` and `nft` (`scripts/test.sh` installs
//! them); without them each test prints `skipped: <reason>` and passes. The checks are those
//! of `faults_mem` (see `common::Workload`): one partition, so acknowledged versions must be
//! consecutive; every acknowledged write readable once the rules are flushed; failures only as
//! timeouts after the whole retry budget. The last test checks the UDP port's fallback when the
//! kernel refuses a segmented (GSO) send, on a loopback with a small MTU. One test measures a
//! 16 MiB write and read through the CLI on a slow lossy loopback (10 % loss and a 4 MB/s
//! policer): longer than the client's 2 s resend window, which must follow the transfer.

mod common;

use client::{Client, ClientConfig, Error};
use common::{fault_seed, NodeProcess, Workload};
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Loss where datagrams arrive (silent, like a lossy link: a drop on output would fail the
/// sender's `sendmsg` with EPERM instead), duplication where they leave.
const FAULT_RULES: &str = r#"
table ip cradle_faults {
    chain arrive {
        type filter hook prerouting priority 0; policy accept;
        meta l4proto udp numgen random mod 100 < 10 counter drop
    }
    chain leave {
        type filter hook output priority 0; policy accept;
        meta l4proto udp numgen random mod 100 < 10 counter dup to 127.0.0.1 device "lo"
    }
}
"#;

/// Every UDP datagram lost.
const OUTAGE_RULES: &str = r#"
table ip cradle_outage {
    chain arrive {
        type filter hook prerouting priority 0; policy accept;
        meta l4proto udp counter drop
    }
}
"#;

/// 10 % of UDP datagrams lost, and what exceeds 4 MB/s (both directions together, bursts of
/// 64 KiB) dropped: a slow lossy link, on which 16 MiB takes well over 2 s.
const SLOW_LINK_RULES: &str = r#"
table ip cradle_slow {
    chain arrive {
        type filter hook prerouting priority 0; policy accept;
        meta l4proto udp numgen random mod 100 < 10 counter drop
        meta l4proto udp limit rate over 4 mbytes/second burst 64 kbytes counter drop
    }
}
"#;

/// The whole test must finish in this time.
const TEST_TIME_MAX: Duration = Duration::from_secs(60);

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some(format!("not root (euid {euid}): network namespaces and nftables need root"));
    }
    for (tool, flag, package) in [("ip", "-V", "iproute2"), ("nft", "--version", "nftables")] {
        let found = Command::new(tool)
            .arg(flag)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            return Some(format!(
                "`{tool}` not found (install {package}; scripts/test.sh does as root)"
            ));
        }
    }
    None
}

/// Prints why the test skips and returns true when it must.
fn skipped(test: &str) -> bool {
    match skip_reason() {
        Some(reason) => {
            // Straight to the stream, past the harness's capture: a skip must be seen.
            let _ = writeln!(std::io::stderr(), "{test}: skipped: {reason}");
            true
        }
        None => false,
    }
}

fn checked(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A network namespace of this test, with the node running in it; deleted (node killed first)
/// when dropped, also when the test fails.
struct Netns {
    name: String,
    node: Option<NodeProcess>,
}

impl Netns {
    fn create() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name =
            format!("cradle-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let added = Command::new("ip").args(["netns", "add", &name]).output().expect("run ip");
        checked(added, &format!("ip netns add {name}"));
        let netns = Netns { name, node: None };
        netns.exec(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs a command inside the namespace; its stdout.
    fn exec(&self, args: &[&str]) -> String {
        let output = self.command(args[0]).args(&args[1..]).output();
        checked(output.expect("run ip netns exec"), &args.join(" "))
    }

    /// Loads an nftables script inside the namespace.
    fn nft(&self, script: &str) {
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(script.as_bytes()).expect("nft script");
        drop(stdin);
        checked(child.wait_with_output().expect("nft"), "nft -f");
    }

    /// Packets counted by the rule of `chain` in table `table` whose text contains `action`.
    fn counted(&self, table: &str, action: &str) -> u64 {
        let listing = self.exec(&["nft", "list", "table", "ip", table]);
        let line = listing
            .lines()
            .find(|line| line.contains("counter packets") && line.contains(action))
            .unwrap_or_else(|| panic!("no `{action}` rule with a counter in:\n{listing}"));
        let after = line.split("counter packets ").nth(1).expect("count");
        after
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad counter line {line:?}"))
    }

    /// Runs the CLI inside the namespace with `stdin`; killed if it runs longer than `limit`
    /// (the test then fails). Its output and how long it ran.
    fn run_cli(&self, args: &[&str], stdin: &[u8], limit: Duration) -> (Output, Duration) {
        use std::io::Read;
        let started = Instant::now();
        let mut child = self
            .command(env!("CARGO_BIN_EXE_cradle"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cradle");
        let mut input = child.stdin.take().expect("stdin");
        let bytes = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&bytes);
        });
        let drain = |mut from: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = from.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
        let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for cradle") {
                break status;
            }
            if started.elapsed() > limit {
                // Not reaped yet, so the PID is still this child's.
                let _ = child.kill();
                let _ = child.wait();
                panic!("`cradle {}` ran over {limit:?}", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = started.elapsed();
        writer.join().expect("stdin writer");
        let stdout = stdout.join().expect("stdout reader");
        let stderr = stderr.join().expect("stderr reader");
        (Output { status, stdout, stderr }, elapsed)
    }

    /// Starts `cradle node` (one core, one partition) inside the namespace.
    fn start_node(&mut self) -> SocketAddr {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut command = self.command(env!("CARGO_BIN_EXE_cradle"));
        command
            .args(["node", "--listen", "127.0.0.1:0", "--no-pin"])
            .args(["--cores", "1", "--partitions", "1", "--data-dir"])
            .arg(data_dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // `ip netns exec` execs the program: the child's PID is the node's.
        let node = NodeProcess::spawn(command, data_dir);
        let addr = node.addr;
        self.node = Some(node);
        addr
    }

    /// Runs `f` on a thread that entered the namespace, so sockets it opens live there (they
    /// stay there when used from other threads).
    fn enter<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let path = format!("/var/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let netns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns reads the descriptor, which `netns` keeps open across the call, and
            // changes the network namespace of the calling thread only.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        });
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kills the node by its PID before its namespace goes.
        drop(self.node.take());
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

#[test]
fn writes_are_exactly_once_over_lossy_duplicating_udp() {
    const TEST: &str = "faults_netns";
    if skipped(TEST) {
        return;
    }
    let seed = fault_seed(TEST, 5);
    let started = Instant::now();
    let mut netns = Netns::create();
    netns.nft(FAULT_RULES);
    let server = netns.start_node();
    let mut config = ClientConfig::new(vec![server]);
    config.seed = seed;
    let budget = config.attempts_per_server;
    let mut client = netns.enter(move || Client::connect(config).expect("the map, through faults"));

    let mut workload = Workload::new(seed, true, budget, true);
    workload.run_sequential(&mut client, 3_000, 40);
    workload.run_pipelined(&mut client, 40, 32);
    let client_stats = client.client_stats();
    let dropped = netns.counted("cradle_faults", "drop");
    let duplicated = netns.counted("cradle_faults", "dup to");

    netns.exec(&["nft", "flush", "ruleset"]);
    let keys = workload.verify(&mut client);
    let stats_json = client.stats(server).expect("STATS without faults");
    let stats: serde_json::Value = serde_json::from_str(&stats_json).unwrap();
    let duplicates_answered = stats["duplicates_answered"].as_u64().expect("counter");
    eprintln!(
        "{TEST}: {}; nft dropped {dropped}, duplicated {duplicated}; client retransmits {}, \
         replies ignored {}, datagrams sent {} received {}, timeouts {}; server {stats_json}; \
         {:?}",
        workload.summary(),
        client_stats.retransmits,
        client_stats.replies_ignored,
        client_stats.datagrams_sent,
        client_stats.datagrams_received,
        client_stats.timeouts,
        started.elapsed()
    );
    assert!(workload.violations.is_empty(), "seed {seed}: {:#?}", workload.violations);
    assert!(workload.acked_writes > 2_000 && keys > 40);
    assert!(dropped > 0, "the drop rule never matched");
    assert!(duplicated > 0, "the dup rule never matched");
    assert!(client_stats.retransmits > 0, "{client_stats:?}");
    assert!(
        duplicates_answered > 0,
        "no resent or duplicated write reached the server: {stats_json}"
    );
    assert!(started.elapsed() < TEST_TIME_MAX, "{:?}", started.elapsed());
}

/// An outage shorter than the retry budget costs retransmits, not a failure; a longer one
/// fails with `Timeout` carrying every attempt, not before the backed-off timeouts add up.
#[test]
fn the_client_fails_only_after_its_retry_budget_over_udp() {
    const TEST: &str = "faults_netns retry budget";
    if skipped(TEST) {
        return;
    }
    let seed = fault_seed(TEST, 6);
    let mut netns = Netns::create();
    let server = netns.start_node();
    // Nothing listens there: the budget spans two servers.
    let dead: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let client = move |seed: u64| {
        let mut config = ClientConfig::new(vec![server, dead]);
        config.seed = seed;
        config.rto_initial = Duration::from_millis(50);
        config.rto_min = Duration::from_millis(1);
        config.rto_max = Duration::from_millis(200);
        config.attempts_per_server = 4;
        let transport = client::UdpTransport::for_server(server).expect("socket");
        Client::with_transport(config, transport).expect("config")
    };
    // Sends at 0, 50, 150 and 350 ms, then the next server: 50 + 100 + 200 + 200 ms each.
    // The short outage ends at about 250 ms, between the third and the fourth send.
    let per_server = Duration::from_millis(550);

    netns.nft(OUTAGE_RULES);
    let mut short = netns.enter(move || client(seed));
    let name = netns.name.clone();
    let healer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(250));
        let output = Command::new("ip")
            .args(["netns", "exec", &name, "nft", "delete", "table", "ip"])
            .arg("cradle_outage")
            .output()
            .expect("run nft");
        checked(output, "nft delete table");
    });
    let started = Instant::now();
    let version = short.put(b"outage", b"survived").expect("within the budget");
    let elapsed = started.elapsed();
    healer.join().unwrap();
    let stats = short.client_stats();
    eprintln!("{TEST}: short outage: version {version} after {elapsed:?}, {stats:?}");
    assert_eq!(version, 1, "applied once");
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(stats.retransmits >= 3 && stats.timeouts == 0, "{stats:?}");

    netns.nft(OUTAGE_RULES);
    let mut long = netns.enter(move || client(seed + 1));
    let started = Instant::now();
    let outcome = long.put(b"outage", b"lost");
    let elapsed = started.elapsed();
    let stats = long.client_stats();
    let dropped = netns.counted("cradle_outage", "drop");
    eprintln!(
        "{TEST}: long outage: {outcome:?} after {elapsed:?}, {stats:?}, nft dropped {dropped}"
    );
    match outcome {
        Err(Error::Timeout { attempts, server }) => {
            assert_eq!(attempts, 8, "4 attempts on each of 2 servers");
            assert_eq!(server, dead, "the last server tried");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(elapsed >= 2 * per_server, "failed early: {elapsed:?}");
    assert!(elapsed < 2 * per_server + Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(stats.datagrams_sent, 8, "{stats:?}");
    assert_eq!(dropped, 8, "every attempt was sent and lost");

    netns.exec(&["nft", "flush", "ruleset"]);
    let value = long.get(b"outage").unwrap().expect("the first write");
    assert_eq!((value.bytes.as_slice(), value.version), (&b"survived"[..], 1));
}

/// A segmented send the kernel refuses is sent again one datagram per message: on a loopback
/// whose MTU (1,280) is below the datagram size, a `UDP_SEGMENT` send fails (EMSGSIZE), and the
/// datagrams must still all arrive (fragmented and reassembled by IP).
#[test]
fn segmented_sends_the_kernel_refuses_go_out_one_datagram_per_message() {
    const TEST: &str = "faults_netns segmentation refused";
    if skipped(TEST) {
        return;
    }
    use dataplane::{datagrams, Buffer, Port, UdpConfig, UdpPort};
    let netns = Netns::create();
    netns.exec(&["ip", "link", "set", "lo", "mtu", "1280"]);
    let (sender, receiver) = netns.enter(|| {
        let bind = || {
            let config = UdpConfig { offload: true, ..UdpConfig::default() };
            UdpPort::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).expect("bind")
        };
        (bind(), bind())
    });
    let (mut sender, mut receiver) = (sender, receiver);
    let to = receiver.local_addr();
    let payload = |i: u8| vec![i; if i < 16 { 1400 } else { 500 }];
    let mut send = |range: std::ops::Range<u8>| {
        let mut tx = Vec::new();
        for i in range.clone() {
            let mut buf = sender.alloc_tx().expect("buffer");
            buf.capacity_mut()[..payload(i).len()].copy_from_slice(&payload(i));
            buf.set_len(payload(i).len());
            buf.set_peer(to);
            tx.push(buf);
        }
        assert_eq!(sender.tx_burst(&mut tx).expect("send"), range.len());
        let counters = sender.counters();
        eprintln!("{TEST}: after datagrams {range:?}: {counters:?}");
        (counters.tx_segmented, counters.tx_segmentation_refused)
    };
    assert_eq!(send(0..8), (0, 1), "refused once, then sent one by one");
    assert_eq!(send(8..16), (0, 1), "the refused size is not tried again");
    assert_eq!(send(16..24), (1, 1), "smaller datagrams still go out segmented");

    let (mut got, mut rx) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 24 && Instant::now() < deadline {
        receiver.rx_burst(&mut rx).expect("receive");
        for buf in rx.drain(..) {
            got.extend(datagrams(&buf).map(<[u8]>::to_vec));
            receiver.release(buf);
        }
        receiver.wait_readable(Duration::from_millis(10)).expect("poll");
    }
    assert_eq!(got, (0..24).map(payload).collect::<Vec<_>>(), "every datagram, whole, in order");
}

/// A 16 MiB PUT through the CLI (default client settings: a 2 s resend window) over a link
/// that loses 10 % of datagrams and passes 4 MB/s: it takes several times the window, keeps
/// making progress, and succeeds; the GET reads it back byte for byte over the same link.
#[test]
fn a_16_mib_write_outlasts_the_resend_window_on_a_slow_lossy_link() {
    const TEST: &str = "faults_netns slow link";
    if skipped(TEST) {
        return;
    }
    const VALUE_BYTES: usize = 16 << 20;
    // About 4x what it takes here (6.5 s and 4.4 s).
    let cli_limit = Duration::from_secs(25);
    let started = Instant::now();
    let mut netns = Netns::create();
    let server = netns.start_node().to_string();
    let value = common::bytes(VALUE_BYTES, fault_seed(TEST, 7));
    netns.nft(SLOW_LINK_RULES);

    let (put, put_time) =
        netns.run_cli(&["put", "--server", &server, "big", "-"], &value, cli_limit);
    let (get, get_time) = netns.run_cli(&["get", "--server", &server, "big"], b"", cli_limit);
    let lost = netns.counted("cradle_slow", "numgen");
    let throttled = netns.counted("cradle_slow", "limit rate");
    let outcome = |output: &Output, time: Duration| {
        let mib_per_s = VALUE_BYTES as f64 / f64::from(1 << 20) / time.as_secs_f64();
        match output.status.success() {
            true => format!("{time:.2?}, {mib_per_s:.2} MiB/s"),
            false => format!("failed after {time:.2?}: {}", common::stderr_of(output).trim()),
        }
    };
    eprintln!(
        "{TEST}: 16 MiB put {}, get {}; nft lost {lost}, throttled {throttled}; {:.1?} in all",
        outcome(&put, put_time),
        outcome(&get, get_time),
        started.elapsed()
    );
    if !put.status.success() || !get.status.success() {
        // Seen to fail twice, under load, with no stall of the link's own: the node's
        // counters (loop stalls, reassemblies expired, syncs) say what it went through.
        netns.exec(&["nft", "flush", "ruleset"]);
        let status_limit = Duration::from_secs(5);
        let (status, _) = netns.run_cli(&["status", "--server", &server], b"", status_limit);
        eprintln!("{TEST}: the node afterwards:\n{}", String::from_utf8_lossy(&status.stdout));
    }
    assert!(put.status.success(), "put {}", outcome(&put, put_time));
    assert_eq!(String::from_utf8_lossy(&put.stdout).trim(), "1", "applied once, version 1");
    assert!(get.status.success(), "get {}", outcome(&get, get_time));
    assert!(get.stdout == value, "the value came back different ({} bytes)", get.stdout.len());
    let window = ClientConfig::new(vec![]).resend_window;
    assert!(put_time > window, "the link was not slow enough to test anything: {put_time:?}");
    assert!(lost > 0 && throttled > 0, "lost {lost}, throttled {throttled}");
    netns.exec(&["nft", "flush", "ruleset"]);
    assert!(started.elapsed() < TEST_TIME_MAX, "{:?}", started.elapsed());
}

/// Node-to-node traffic between member 127.0.0.`cut` and the others (port 7000 to port
/// 7000: clients use ephemeral ports, so they still reach every member).
fn partition_rules(cut: u8) -> String {
    format!(
        r#"
table ip cradle_partition {{
    chain arrive {{
        type filter hook prerouting priority 0; policy accept;
        ip saddr 127.0.0.{cut} udp sport 7000 udp dport 7000 counter drop
        ip daddr 127.0.0.{cut} udp sport 7000 udp dport 7000 counter drop
    }}
}}
"#
    )
}

/// Network partition (issue #8): three members in the namespace, six clients recording a
/// history; the member holding the most primaries is cut off from the other members (not
/// from the clients) for 3 s. The others fail it over and go on; the cut-off primary stops
/// serving at the end of its lease (its clients get BUSY, never a stale value), which the
/// linearizability checker over the whole history confirms: no split brain.
#[test]
fn a_primary_cut_off_from_the_other_members_stops_serving_and_no_split_brain_shows() {
    const TEST: &str = "faults_netns partition";
    if skipped(TEST) {
        return;
    }
    use common::history::{check_history, final_reads, run_client, Keys};
    let started = Instant::now();
    let netns = Netns::create();
    let members: Vec<SocketAddr> =
        (1..=3).map(|i| SocketAddr::from(([127, 0, 0, i], 7000))).collect();
    let list = members.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let key = tempfile::tempdir().expect("temp dir");
    let key_file = key.path().join("cluster.key");
    std::fs::write(&key_file, [0x33; 32]).expect("key file");
    let starting: Vec<common::Starting> = members
        .iter()
        .map(|addr| {
            let data_dir = tempfile::tempdir().expect("temp dir");
            let mut command = netns.command(env!("CARGO_BIN_EXE_cradle"));
            command
                .args(["node", "--no-pin", "--cores", "1", "--partitions", "8"])
                .args(["--listen", &addr.to_string(), "--cluster", &list])
                .args(["--failover-after-ms", "300"])
                .arg("--cluster-key")
                .arg(&key_file)
                .arg("--data-dir")
                .arg(data_dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            common::Starting::spawn(command, data_dir)
        })
        .collect();
    let nodes: Vec<NodeProcess> = starting.into_iter().map(common::Starting::ready).collect();
    let seed = fault_seed(TEST, client::random_seed());
    const KEYS: Keys = Keys { prefix: "split", count: 4 };
    let servers = members.clone();
    // The member that is primary for most of the clients' keys, by the map.
    let cut = netns.enter({
        let servers = servers.clone();
        move || {
            let mut client = Client::connect(ClientConfig::new(servers.clone())).expect("client");
            let map = client.map().expect("MAP");
            let mut primaries = [0usize; 3];
            for key in 0..KEYS.count {
                let entry = map.lookup(proto::key_hash(&KEYS.name(key))).expect("covered");
                primaries[servers.iter().position(|m| m.ip() == entry.addr.ip()).unwrap()] += 1;
            }
            (0..3).max_by_key(|&i| primaries[i]).unwrap()
        }
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start = Instant::now();
    let clients = {
        let (servers, stop) = (servers.clone(), stop.clone());
        let path = format!("/var/run/netns/{}", netns.name);
        std::thread::spawn(move || {
            let netns = File::open(&path).expect("open netns");
            // SAFETY: as in `Netns::enter`: setns on this thread, the descriptor kept open.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            // Threads made here are in the namespace too.
            let handles: Vec<_> = (0..6u64)
                .map(|id| {
                    let (servers, stop) = (servers.clone(), stop.clone());
                    std::thread::spawn(move || run_client(id, &servers, &KEYS, seed, start, &stop))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("client")).collect::<Vec<_>>()
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    netns.nft(&partition_rules(cut as u8 + 1));
    std::thread::sleep(Duration::from_secs(3));
    let dropped = netns.counted("cradle_partition", "saddr");
    netns.exec(&["nft", "delete", "table", "ip", "cradle_partition"]);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let logs = clients.join().expect("clients");
    let mut history: Vec<_> = logs.iter().flat_map(|log| log.ops.clone()).collect();
    let finals = netns.enter({
        let servers = servers.clone();
        move || final_reads(&servers, &KEYS, 6, seed, start)
    });
    history.extend(finals);
    // The cut-off member refused clients once its lease ran out, and left the map.
    let stats = netns.enter({
        let (servers, member) = (servers.clone(), members[cut]);
        move || {
            let mut client = Client::connect(ClientConfig::new(servers)).expect("client");
            let stats: serde_json::Value =
                serde_json::from_str(&client.stats(member).expect("STATS")).expect("JSON");
            let map = client.map().expect("MAP");
            (stats, map)
        }
    });
    let (stats, map) = stats;
    let answered =
        history.iter().filter(|op| op.answer != testkit::linearizability::Answer::Unknown);
    eprintln!(
        "{TEST}: cut member {} off for 3 s ({dropped} datagrams dropped), {} operations ({} \
         answered), its replica_not_serving {}, map epoch {} in {:?}",
        cut + 1,
        history.len(),
        answered.count(),
        stats["replica_not_serving"],
        map.epoch,
        started.elapsed()
    );
    assert!(dropped > 0, "the rules cut nothing");
    let refused = stats["replica_not_serving"].as_u64().expect("counter");
    assert!(refused > 0, "the cut-off primary never refused a client past its lease");
    assert!(map.epoch > 2, "the others failed the cut-off member over");
    assert!(map.entries.iter().all(|e| e.addr.ip() != members[cut].ip()));
    check_history(TEST, &format!("CRADLE_FAULT_SEED={seed}"), &history);
    drop(nodes);
}
