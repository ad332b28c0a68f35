//! Helpers for whole-binary tests: start `cradle node` as a real process and drive the CLI.
#![allow(dead_code, missing_docs)]

pub(crate) mod history;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub(crate) fn cradle() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cradle"))
}

/// A running `cradle node`; killed (by its PID) when dropped.
pub(crate) struct NodeProcess {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) data_dir: tempfile::TempDir,
    pub(crate) stdout_lines: mpsc::Receiver<String>,
    /// The program and arguments it was started with, for `restart`.
    command: (OsString, Vec<OsString>),
}

impl NodeProcess {
    /// Starts a node on an ephemeral port of 127.0.0.1 and waits for its ready line.
    pub(crate) fn start(cores: u32, partitions: u32, extra: &[&str]) -> NodeProcess {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut command = cradle();
        command
            .args(["node", "--listen", "127.0.0.1:0", "--no-pin"])
            .args(["--cores", &cores.to_string(), "--partitions", &partitions.to_string()])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        NodeProcess::spawn(command, data_dir)
    }

    /// Spawns `command` (a node invocation) and waits for `cradle ready`.
    pub(crate) fn spawn(mut command: Command, data_dir: tempfile::TempDir) -> NodeProcess {
        let program = command.get_program().to_owned();
        let args = command.get_args().map(OsString::from).collect();
        let (child, addr, stdout_lines) = spawn_ready(&mut command);
        NodeProcess { child, addr, data_dir, stdout_lines, command: (program, args) }
    }

    /// SIGKILL (by its PID), then reap: a crash. The data directory stays, for `restart`.
    pub(crate) fn kill(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "KILL");
        self.child.wait().expect("reap the killed node")
    }

    /// Starts the node again (after it exited) with the command it was started with, on the
    /// same data directory and the address it had bound (`--listen` names it, so an ephemeral
    /// port stays the node's), and waits for `cradle ready`.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.try_wait().expect("wait").is_some(), "restart of a running node");
        let (program, mut args) = self.command.clone();
        let listen = args.iter().position(|arg| arg == "--listen").expect("started with --listen");
        args[listen + 1] = self.addr.to_string().into();
        let mut command = Command::new(program);
        command.args(&args).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let (child, addr, stdout_lines) = spawn_ready(&mut command);
        assert_eq!(addr, self.addr, "the restarted node bound another address");
        (self.child, self.stdout_lines) = (child, stdout_lines);
    }

    pub(crate) fn server(&self) -> String {
        self.addr.to_string()
    }

    /// SIGTERM, then wait up to `limit` for a clean exit; returns the exit status.
    pub(crate) fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cradle node ignored SIGTERM for {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Spawns a node and waits for its `cradle ready` line: the process, the address in that
/// line, and the lines of stdout after it.
fn spawn_ready(command: &mut Command) -> (Child, SocketAddr, mpsc::Receiver<String>) {
    let (child, rx) = spawn_lines(command);
    wait_ready(child, rx)
}

/// Spawns `command` with its stdout read line by line on a thread.
fn spawn_lines(command: &mut Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = command.spawn().expect("spawn cradle node");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// A node process started but not yet ready (cluster members become ready together). One
/// dropped before it was ready (a test failing while its cluster starts) is killed.
pub(crate) struct Starting(Option<StartingParts>);

struct StartingParts {
    child: Child,
    rx: mpsc::Receiver<String>,
    data_dir: tempfile::TempDir,
    command: (OsString, Vec<OsString>),
}

impl Starting {
    /// Spawns `command` (a node invocation) without waiting for it.
    pub(crate) fn spawn(mut command: Command, data_dir: tempfile::TempDir) -> Starting {
        let program = command.get_program().to_owned();
        let args = command.get_args().map(OsString::from).collect();
        let (child, rx) = spawn_lines(&mut command);
        Starting(Some(StartingParts { child, rx, data_dir, command: (program, args) }))
    }

    /// Waits for its `cradle ready` line.
    pub(crate) fn ready(mut self) -> NodeProcess {
        let parts = self.0.take().expect("not ready yet");
        let (child, addr, stdout_lines) = wait_ready(parts.child, parts.rx);
        let (data_dir, command) = (parts.data_dir, parts.command);
        NodeProcess { child, addr, data_dir, stdout_lines, command }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(parts) = &mut self.0 {
            if let Ok(None) = parts.child.try_wait() {
                signal(parts.child.id(), "KILL");
                let _ = parts.child.wait();
            }
        }
    }
}

fn wait_ready(
    mut child: Child,
    rx: mpsc::Receiver<String>,
) -> (Child, SocketAddr, mpsc::Receiver<String>) {
    let Ok(ready) = rx.recv_timeout(Duration::from_secs(30)) else {
        signal(child.id(), "KILL");
        let status = child.wait();
        panic!("cradle node printed nothing in 30 s ({status:?})");
    };
    assert!(ready.starts_with("cradle ready"), "unexpected first line: {ready}");
    (child, parse_ready_addr(&ready), rx)
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), "KILL");
            let _ = self.child.wait();
        }
    }
}

/// Sends a signal to one process we started, by PID.
pub(crate) fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

/// "cradle ready: 1 core(s) on 127.0.0.1:41234..41234, ..." -> 127.0.0.1:41234
fn parse_ready_addr(line: &str) -> SocketAddr {
    let after = line.split(" on ").nth(1).expect("address in ready line");
    let addr = after.split("..").next().expect("address");
    addr.parse().unwrap_or_else(|e| panic!("bad address {addr:?} in {line:?}: {e}"))
}

/// Runs the CLI with `stdin` bytes; returns its output.
pub(crate) fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = cradle()
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
    let output = child.wait_with_output().expect("cradle output");
    writer.join().expect("stdin writer");
    output
}

/// Pseudo-random bytes (deterministic per seed).
pub(crate) fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0; len];
    testkit::Rng::from_seed(seed).fill_bytes(&mut bytes);
    bytes
}

pub(crate) fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub(crate) fn data_dir(node: &NodeProcess) -> PathBuf {
    node.data_dir.path().to_path_buf()
}

// ---- Checked write workloads for the network-fault tests (faults_mem, faults_netns) ----

/// A workload of PUT, CAS, DELETE and GET against one client, checked against a model of what
/// was acknowledged. With `single_endpoint` (a node with one partition) every write takes the
/// endpoint's next sequence number as its version, so the versions of acknowledged writes must
/// follow each other exactly: a write applied twice leaves a gap. Checks record violations
/// instead of panicking, so a test can also show that a broken server is caught.
pub(crate) struct Workload {
    /// Acknowledged state: key -> (value, version). Keys whose last write failed are kept in
    /// `uncertain` instead until a read settles them.
    pub(crate) model: std::collections::BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    /// Keys after a failed write, with every value they may hold (`None`: absent).
    pub(crate) uncertain: std::collections::BTreeMap<Vec<u8>, Vec<Option<Vec<u8>>>>,
    single_endpoint: bool,
    /// The endpoint's sequence number lies in `seq_min..=seq_max` (equal unless writes failed).
    seq_min: u64,
    seq_max: u64,
    /// Transmissions a failed request must report (`exact`) or report at least.
    budget: u32,
    budget_exact: bool,
    rng: testkit::Rng,
    pub(crate) violations: Vec<String>,
    pub(crate) acked_writes: u64,
    pub(crate) fragmented_writes: u64,
    pub(crate) cas_mismatches: u64,
    pub(crate) deletes: u64,
    pub(crate) reads: u64,
    pub(crate) timeouts: u64,
}

/// Values of this many bytes travel as fragments (three of them).
pub(crate) const LARGE_VALUE_BYTES: usize = 2_500;

impl Workload {
    pub(crate) fn new(seed: u64, single_endpoint: bool, budget: u32, budget_exact: bool) -> Self {
        Workload {
            model: Default::default(),
            uncertain: Default::default(),
            single_endpoint,
            seq_min: 0,
            seq_max: 0,
            budget,
            budget_exact,
            rng: testkit::Rng::from_seed(seed),
            violations: Vec::new(),
            acked_writes: 0,
            fragmented_writes: 0,
            cas_mismatches: 0,
            deletes: 0,
            reads: 0,
            timeouts: 0,
        }
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 50 {
            eprintln!("violation: {what}");
            self.violations.push(what);
        }
    }

    /// `ops` sequential operations over `keys` keys; about one PUT in 16 is fragmented.
    pub(crate) fn run_sequential<T: client::Transport>(
        &mut self,
        client: &mut client::Client<T>,
        ops: u64,
        keys: u64,
    ) {
        for i in 0..ops {
            let key = format!("key-{}", self.rng.below(keys)).into_bytes();
            if self.uncertain.contains_key(&key) && !self.settle(client, &key) {
                continue;
            }
            let len = match self.rng.below(16) {
                0 => LARGE_VALUE_BYTES,
                n => 1 + (n as usize * 37),
            };
            let value = bytes(len, i ^ 0x5EED);
            let current = self.model.get(&key).map(|entry| entry.1);
            match self.rng.below(10) {
                0..=3 => self.put(client, &key, value),
                4..=6 => self.cas(client, &key, current, value),
                7 => self.stale_cas(client, &key, current),
                8 => self.delete(client, &key, current),
                _ => self.read(client, &key),
            }
        }
    }

    fn put<T: client::Transport>(
        &mut self,
        client: &mut client::Client<T>,
        key: &[u8],
        value: Vec<u8>,
    ) {
        match client.put(key, &value) {
            Ok(version) => self.applied(key, value, version),
            Err(error) => self.failed("PUT", key, Some(Some(value)), error),
        }
    }

    fn cas<T: client::Transport>(
        &mut self,
        client: &mut client::Client<T>,
        key: &[u8],
        current: Option<u64>,
        value: Vec<u8>,
    ) {
        match client.cas(key, current.unwrap_or(0), &value) {
            Ok(client::CasOutcome::Swapped { version }) => self.applied(key, value, version),
            Ok(client::CasOutcome::Mismatch { current_version }) => self.violation(format!(
                "CAS of {} expecting the acknowledged version {current:?} found version \
                 {current_version}: a write was applied twice or lost",
                show(key)
            )),
            Err(error) => self.failed("CAS", key, Some(Some(value)), error),
        }
    }

    /// A CAS that must not match: absent keys expect a version, present ones an older one.
    fn stale_cas<T: client::Transport>(
        &mut self,
        client: &mut client::Client<T>,
        key: &[u8],
        current: Option<u64>,
    ) {
        let expected = current.map_or(u64::MAX, |version| version - 1);
        match client.cas(key, expected, b"must not be written") {
            Ok(client::CasOutcome::Mismatch { current_version })
                if current_version == current.unwrap_or(0) =>
            {
                self.cas_mismatches += 1
            }
            Err(error) => self.failed("stale CAS", key, None, error),
            outcome => self.violation(format!(
                "CAS of {} expecting stale version {expected} (acknowledged {current:?}) \
                 gave {outcome:?}",
                show(key)
            )),
        }
    }

    fn delete<T: client::Transport>(
        &mut self,
        client: &mut client::Client<T>,
        key: &[u8],
        current: Option<u64>,
    ) {
        match client.delete(key) {
            Ok(existed) if existed == current.is_some() => {
                self.deletes += 1;
                if existed {
                    self.model.remove(key);
                    // A delete takes a sequence number too.
                    self.seq_min += 1;
                    self.seq_max += 1;
                }
            }
            Ok(existed) => self.violation(format!(
                "DELETE of {} answered existed={existed}, acknowledged version {current:?}",
                show(key)
            )),
            Err(error) => self.failed("DELETE", key, Some(None), error),
        }
    }

    fn read<T: client::Transport>(&mut self, client: &mut client::Client<T>, key: &[u8]) {
        match client.get(key) {
            Ok(got) => {
                self.reads += 1;
                let got = got.map(|value| (value.bytes, value.version));
                let want = self.model.get(key).cloned();
                if got != want {
                    self.violation(format!(
                        "GET of {} gave {:?}, acknowledged {:?}",
                        show(key),
                        brief(&got),
                        brief(&want)
                    ));
                }
            }
            Err(error) => self.failed("GET", key, None, error),
        }
    }

    /// An acknowledged write of `value` got `version`.
    fn applied(&mut self, key: &[u8], value: Vec<u8>, version: u64) {
        let previous = self.model.get(key).map_or(0, |entry| entry.1);
        if version <= previous {
            self.violation(format!(
                "{} got version {version}, not above its previous {previous}",
                show(key)
            ));
        }
        if self.single_endpoint && !(self.seq_min < version && version <= self.seq_max + 1) {
            self.violation(format!(
                "write of {} got version {version}; the next sequence number is {}..={}: \
                 a write was applied twice",
                show(key),
                self.seq_min + 1,
                self.seq_max + 1
            ));
        }
        self.seq_min = self.seq_min.max(version);
        self.seq_max = self.seq_max.max(version);
        self.acked_writes += 1;
        self.fragmented_writes += u64::from(value.len() >= LARGE_VALUE_BYTES);
        self.model.insert(key.to_vec(), (value, version));
    }

    /// A request failed: only a timeout after the whole retry budget is acceptable. A failed
    /// write (`attempted`: what it would have left) may or may not have been applied.
    fn failed(
        &mut self,
        what: &str,
        key: &[u8],
        attempted: Option<Option<Vec<u8>>>,
        error: client::Error,
    ) {
        self.timeouts += 1;
        match error {
            client::Error::Timeout { attempts, .. }
                if attempts == self.budget || (!self.budget_exact && attempts > self.budget) => {}
            other => self.violation(format!(
                "{what} of {} failed with `{other}` ({other:?}); only a timeout after {} \
                 attempts is acceptable",
                show(key),
                self.budget
            )),
        }
        let Some(attempted) = attempted else {
            return;
        };
        self.seq_max += 1;
        let before = self.model.remove(key).map(|entry| entry.0);
        let candidates = self.uncertain.entry(key.to_vec()).or_insert_with(|| vec![before]);
        candidates.push(attempted);
    }

    /// Reads a key whose last write failed; its value must be one it may hold. Returns
    /// whether the key is settled.
    fn settle<T: client::Transport>(&mut self, client: &mut client::Client<T>, key: &[u8]) -> bool {
        match client.get(key) {
            Ok(got) => {
                let candidates = self.uncertain.remove(key).expect("uncertain key");
                let bytes = got.as_ref().map(|value| value.bytes.clone());
                if !candidates.contains(&bytes) {
                    self.violation(format!(
                        "{} holds {:?}, none of the values its writes could leave",
                        show(key),
                        bytes.as_ref().map(Vec::len)
                    ));
                }
                if let Some(value) = got {
                    self.model.insert(key.to_vec(), (value.bytes, value.version));
                }
                true
            }
            Err(error) => {
                self.failed("GET", key, None, error);
                false
            }
        }
    }

    /// `rounds` rounds of `width` PUTs in flight at once (to `width` keys), so that requests
    /// and their resends overtake each other. With one endpoint the versions of each round
    /// must be exactly the next `width` sequence numbers.
    pub(crate) fn run_pipelined<T: client::Transport>(
        &mut self,
        client: &mut client::Client<T>,
        rounds: u64,
        width: u64,
    ) {
        for round in 0..rounds {
            let mut pending = std::collections::HashMap::new();
            for lane in 0..width {
                let key = format!("lane-{lane}").into_bytes();
                let value = bytes(1 + (lane as usize * 13) % 600, round << 16 | lane);
                let id =
                    client.submit(client::Request::Put { key: key.clone(), value: value.clone() });
                pending.insert(id, (key, value));
            }
            let mut versions = Vec::new();
            let (seq_min, seq_max) = (self.seq_min, self.seq_max);
            while let Some((id, result)) = client.wait(Duration::from_secs(30)) {
                let (key, value) = pending.remove(&id).expect("a request of this round");
                self.uncertain.remove(&key);
                match result.into_version() {
                    Ok(version) => {
                        versions.push(version);
                        self.acked_writes += 1;
                        self.model.insert(key, (value, version));
                    }
                    Err(error) => self.failed("pipelined PUT", &key, Some(Some(value)), error),
                }
            }
            if !pending.is_empty() {
                self.violation(format!("{} pipelined PUTs never completed", pending.len()));
            }
            self.check_round(seq_min, seq_max, width, versions);
        }
    }

    fn check_round(&mut self, seq_min: u64, seq_max: u64, width: u64, mut versions: Vec<u64>) {
        if !self.single_endpoint {
            // Versions are per endpoint: the final reads check these writes.
            return;
        }
        versions.sort_unstable();
        let distinct = versions.windows(2).all(|pair| pair[0] < pair[1]);
        if !distinct {
            self.violation(format!("one version acknowledged twice: {versions:?}"));
        }
        let exact = seq_min == seq_max && versions.len() as u64 == width;
        let expected: Vec<u64> = (seq_min + 1..=seq_min + width).collect();
        let in_range =
            versions.iter().all(|&version| seq_min < version && version <= seq_max + width);
        if (exact && versions != expected) || !in_range {
            self.violation(format!(
                "a round of {width} PUTs after sequence {seq_min}..={seq_max} got versions \
                 {versions:?}: a write was applied twice"
            ));
        }
        let last = versions.last().copied().unwrap_or(seq_min);
        self.seq_min = last.max(seq_min + versions.len() as u64);
        self.seq_max = self.seq_max.max(last).max(self.seq_min);
    }

    /// Reads every key the workload touched (call with faults off): each acknowledged write
    /// must still be there, with its version; keys after a failed write must hold a value one
    /// of their writes could leave. Returns how many keys were read.
    pub(crate) fn verify<T: client::Transport>(&mut self, client: &mut client::Client<T>) -> usize {
        let uncertain: Vec<Vec<u8>> = self.uncertain.keys().cloned().collect();
        for key in &uncertain {
            self.settle(client, key);
        }
        let keys: Vec<Vec<u8>> = self.model.keys().cloned().collect();
        for key in &keys {
            self.read(client, key);
        }
        keys.len()
    }

    /// Compares the server's own dump of its stores with the model: same keys, values and
    /// versions (call after `verify`).
    pub(crate) fn compare_entries<'a>(
        &mut self,
        entries: impl Iterator<Item = (&'a [u8], &'a [u8], u64)>,
    ) {
        let mut seen = 0;
        for (key, value, version) in entries {
            seen += 1;
            match self.model.get(key) {
                Some((want, want_version)) if want == value && *want_version == version => {}
                want => self.violation(format!(
                    "server holds {} = {} bytes at version {version}; acknowledged {:?}",
                    show(key),
                    value.len(),
                    want.map(|(bytes, version)| (bytes.len(), version))
                )),
            }
        }
        if seen != self.model.len() {
            self.violation(format!("server holds {seen} keys, {} acknowledged", self.model.len()));
        }
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "{} acknowledged writes ({} fragmented), {} deletes, {} CAS mismatches, {} reads, \
             {} timeouts, {} keys, last sequence {}..={}",
            self.acked_writes,
            self.fragmented_writes,
            self.deletes,
            self.cas_mismatches,
            self.reads,
            self.timeouts,
            self.model.len(),
            self.seq_min,
            self.seq_max
        )
    }
}

fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

fn brief(entry: &Option<(Vec<u8>, u64)>) -> Option<(usize, u64)> {
    entry.as_ref().map(|(bytes, version)| (bytes.len(), *version))
}

/// The seed for a fault test: `CRADLE_FAULT_SEED` when set (to replay), else `default`.
pub(crate) fn fault_seed(test: &str, default: u64) -> u64 {
    let seed =
        std::env::var("CRADLE_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    eprintln!("{test}: seed {seed} (set CRADLE_FAULT_SEED to replay)");
    seed
}
