//! Durability of a real `cradle node` process over its data directory: `kill -9` under a heavy
//! write load, a full disk (a tmpfs the test mounts), and crash images made by hand (a flipped
//! byte mid-segment, a torn last record).

mod common;

use client::{Client, ClientConfig, Request, RequestId};
use common::{run, signal};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

// ---- A node process on a data directory the test keeps ----

/// A `cradle node` on a directory the test owns (so it can be restarted on it), with its
/// stderr captured line by line (and echoed). Killed (by its PID) when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Time from spawn to the ready line (opening and replaying the data directory).
    startup: Duration,
}

impl Node {
    fn start(data_dir: &Path, cores: u32, partitions: u32, extra: &[&str]) -> Node {
        Node::spawn(common::cradle(), data_dir, cores, partitions, extra)
    }

    /// The same under a soft and hard limit of `files` open files (`ulimit -n`).
    fn start_limited(data_dir: &Path, partitions: u32, files: u32, extra: &[&str]) -> Node {
        let mut shell = Command::new("sh");
        let script = format!("ulimit -n {files} && exec \"$0\" \"$@\"");
        shell.args(["-c", &script, env!("CARGO_BIN_EXE_cradle")]);
        Node::spawn(shell, data_dir, 1, partitions, extra)
    }

    /// Runs `command` (`cradle`, or what execs it) with a node's arguments.
    fn spawn(
        mut command: Command,
        data_dir: &Path,
        cores: u32,
        partitions: u32,
        extra: &[&str],
    ) -> Node {
        let started = Instant::now();
        let mut child = command
            .args(["node", "--listen", "127.0.0.1:0", "--no-pin"])
            .args(["--cores", &cores.to_string(), "--partitions", &partitions.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cradle node");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let lines = stderr.clone();
        let pid = child.id();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[node {pid}] {line}");
                lines.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                signal(child.id(), "KILL");
                let status = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "cradle node printed no ready line ({status:?}); stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
        };
        let startup = started.elapsed();
        // What the node printed on stderr before its ready line is in the pipe: let the
        // reader take it, so checks for the absence of a report see it.
        std::thread::sleep(Duration::from_millis(100));
        assert!(ready.starts_with("cradle ready"), "unexpected first line: {ready}");
        let after = ready.split(" on ").nth(1).expect("address in ready line");
        let addr = after.split("..").next().expect("address").parse().expect("address parses");
        Node { child, addr, stderr, startup }
    }

    fn server(&self) -> String {
        self.addr.to_string()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The stderr so far once it contains `needle` (waiting up to 5 s for the reader thread).
    fn stderr_until(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.stderr_text();
            if text.contains(needle) || Instant::now() >= deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn client(&self) -> Client {
        Client::connect(ClientConfig::new(vec![self.addr])).expect("client connects")
    }

    /// SIGTERM, then wait up to `limit` for the exit.
    fn terminate(&mut self, limit: Duration) -> ExitStatus {
        signal(self.pid(), "TERM");
        self.wait(limit, "SIGTERM")
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) -> ExitStatus {
        signal(self.pid(), "KILL");
        self.wait(Duration::from_secs(10), "SIGKILL")
    }

    fn wait(&mut self, limit: Duration, what: &str) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Let the stderr reader take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(Instant::now() < deadline, "cradle node ignored {what} for {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn status_json(&self) -> serde_json::Value {
        let out = run(&["status", "--server", &self.server(), "--json"], b"");
        assert!(out.status.success(), "status failed: {}", common::stderr_of(&out));
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), "KILL");
            let _ = self.child.wait();
        }
    }
}

fn partition_of(key: &[u8], partitions: u32) -> u32 {
    proto::partition_of(proto::key_hash(key), partitions)
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}

// ---- 1. kill -9 under a heavy write load ----

const WRITERS: u64 = 4;
const LANES: usize = 32;
const KEYS_PER_LANE: usize = 8;
const KEYS_PER_WRITER: usize = LANES * KEYS_PER_LANE;

fn load_key(writer: u64, key: usize) -> Vec<u8> {
    format!("w{writer}-k{key}").into_bytes()
}

/// The value of write `seq` of a key: names itself (`writer/key/seq/`), then deterministic
/// bytes; one in 16 is blob-sized (16 KiB .. 64 KiB), the others 16 B .. 1.4 KiB.
fn load_value(writer: u64, key: usize, seq: u64) -> Vec<u8> {
    let h = mix(writer << 48 ^ (key as u64) << 24 ^ seq);
    let len = if h & 15 == 0 {
        16_384 + (h >> 8) as usize % 49_152
    } else {
        16 + (h >> 8) as usize % 1_400
    };
    let mut value = format!("{writer}/{key}/{seq}/").into_bytes();
    let fill = len.saturating_sub(value.len());
    value.extend_from_slice(&common::bytes(fill, h));
    value
}

/// Which write of the load a stored value is (checking the whole value).
fn which_write(writer: u64, key: usize, value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(&value[..value.len().min(40)]).ok().or_else(|| {
        let end = value.iter().take(40).position(|&b| !b.is_ascii())?;
        std::str::from_utf8(&value[..end]).ok()
    })?;
    let mut parts = text.splitn(4, '/');
    let (w, k, s) = (parts.next()?, parts.next()?, parts.next()?);
    if w.parse::<u64>().ok()? != writer || k.parse::<usize>().ok()? != key {
        return None;
    }
    let seq = s.parse().ok()?;
    (load_value(writer, key, seq) == value).then_some(seq)
}

#[derive(Clone, Debug, Default)]
struct KeyLog {
    /// The latest acknowledged write: (seq, version).
    acked: Option<(u64, u64)>,
    /// Writes sent after it whose outcome is unknown (seq).
    attempted: Vec<u64>,
}

#[derive(Default)]
struct WriterLog {
    keys: Vec<KeyLog>,
    acked: u64,
    acked_bytes: u64,
    acked_blobs: u64,
    failed: u64,
    errors_before_kill: Vec<String>,
    errors_before_kill_count: u64,
    violations: Vec<String>,
}

/// One writer: `LANES` writes in flight, one per lane, each lane cycling over its keys (so a
/// key has at most one write in flight), until `stop`; then waits for what is in flight.
fn writer(
    id: u64,
    addr: SocketAddr,
    stop: &AtomicBool,
    killed: &AtomicBool,
    progress: &Progress,
) -> WriterLog {
    let mut client = Client::connect(ClientConfig::new(vec![addr])).expect("writer connects");
    let began = Instant::now();
    let mut log =
        WriterLog { keys: vec![KeyLog::default(); KEYS_PER_WRITER], ..Default::default() };
    let mut next_seq = vec![0u64; KEYS_PER_WRITER];
    let mut rounds = [0usize; LANES];
    let mut pending: HashMap<RequestId, (usize, usize, u64)> = HashMap::new();
    let submit = |client: &mut Client,
                  lane: usize,
                  rounds: &mut [usize; LANES],
                  next_seq: &mut Vec<u64>,
                  pending: &mut HashMap<RequestId, (usize, usize, u64)>| {
        let key = lane + LANES * (rounds[lane] % KEYS_PER_LANE);
        rounds[lane] += 1;
        next_seq[key] += 1;
        let seq = next_seq[key];
        let request = Request::Put { key: load_key(id, key), value: load_value(id, key, seq) };
        pending.insert(client.submit(request), (lane, key, seq));
    };
    for lane in 0..LANES {
        submit(&mut client, lane, &mut rounds, &mut next_seq, &mut pending);
    }
    while !pending.is_empty() {
        let Some((rid, result)) = client.wait(Duration::from_secs(10)) else {
            log.violations.push(format!("writer {id}: {} writes never completed", pending.len()));
            break;
        };
        let (lane, key, seq) = pending.remove(&rid).expect("a write of this writer");
        let entry = &mut log.keys[key];
        match result.into_version() {
            Ok(version) => {
                if let Some((_, previous)) = entry.acked {
                    if version <= previous {
                        log.violations.push(format!(
                            "w{id}-k{key} write {seq} got version {version}, not above {previous}"
                        ));
                    }
                }
                entry.acked = Some((seq, version));
                entry.attempted.clear();
                let len = load_value(id, key, seq).len() as u64;
                log.acked += 1;
                log.acked_bytes += len;
                log.acked_blobs += u64::from(len >= 16_384);
                progress.acked.fetch_add(1, Ordering::SeqCst);
                progress.acked_blobs.fetch_add(u64::from(len >= 16_384), Ordering::SeqCst);
            }
            Err(error) => {
                log.failed += 1;
                if !killed.load(Ordering::SeqCst) {
                    log.errors_before_kill_count += 1;
                }
                if !killed.load(Ordering::SeqCst) && log.errors_before_kill.len() < 5 {
                    log.errors_before_kill.push(format!(
                        "w{id}-k{key} write {seq} ({} bytes) at {:?}: {error}",
                        load_value(id, key, seq).len(),
                        began.elapsed()
                    ));
                }
                entry.attempted.push(seq);
            }
        }
        if !stop.load(Ordering::SeqCst) {
            submit(&mut client, lane, &mut rounds, &mut next_seq, &mut pending);
        }
    }
    log
}

/// Acknowledged writes so far, over all writers: the kill waits for an amount of work, not
/// for a time, so a slow machine kills as far into the load as a fast one.
#[derive(Default)]
struct Progress {
    acked: AtomicU64,
    acked_blobs: AtomicU64,
}

#[test]
fn kill_9_under_write_load_loses_no_acknowledged_write() {
    kill_9_under_write_load(&[]);
}

/// The `memory` class answers once a write is in the file's pages: a killed process (not a
/// power cut) loses none of them either.
#[test]
fn kill_9_under_write_load_loses_no_write_acknowledged_by_the_memory_class() {
    kill_9_under_write_load(&["--durability", "memory"]);
}

fn kill_9_under_write_load(extra: &[&str]) {
    const PARTITIONS: u32 = 16;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = Node::start(dir.path(), 2, PARTITIONS, extra);
    let addr = node.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            let (stop, killed, progress) = (stop.clone(), killed.clone(), progress.clone());
            std::thread::spawn(move || writer(id, addr, &stop, &killed, &progress))
        })
        .collect();
    // At least 1.5 s of load and 3,000 acknowledged writes (some blob-sized), at most 30 s.
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(30)
        && (began.elapsed() < Duration::from_millis(1_500)
            || progress.acked.load(Ordering::SeqCst) < 3_000
            || progress.acked_blobs.load(Ordering::SeqCst) == 0)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Kill first, then tell the writers: their writes in flight stay in flight across the kill.
    killed.store(true, Ordering::SeqCst);
    let status = node.kill();
    stop.store(true, Ordering::SeqCst);
    eprintln!("killed the node mid-load ({status})");
    let logs: Vec<WriterLog> = writers.into_iter().map(|w| w.join().expect("writer")).collect();
    let acked: u64 = logs.iter().map(|l| l.acked).sum();
    let acked_bytes: u64 = logs.iter().map(|l| l.acked_bytes).sum();
    let acked_blobs: u64 = logs.iter().map(|l| l.acked_blobs).sum();
    let failed: u64 = logs.iter().map(|l| l.failed).sum();
    let mut violations: Vec<String> = logs.iter().flat_map(|l| l.violations.clone()).collect();
    let errors_before_count: u64 = logs.iter().map(|l| l.errors_before_kill_count).sum();
    let errors_before: Vec<String> =
        logs.iter().flat_map(|l| l.errors_before_kill.clone()).collect();
    eprintln!(
        "before the kill: {acked} acknowledged writes ({acked_blobs} blob-sized, {} MiB), \
         {failed} unacknowledged (in flight at the kill or failed); {errors_before_count} \
         failed before the kill, e.g. {errors_before:?}",
        acked_bytes >> 20
    );
    assert!(acked >= 2_000, "the load was not heavy: {acked} acknowledged writes");
    assert!(acked_blobs > 0, "no blob-sized write was acknowledged");
    assert!(failed > 0, "no write was in flight at the kill: the kill was not mid-load");

    let mut node = Node::start(dir.path(), 2, PARTITIONS, extra);
    eprintln!("restart (replay) took {:?}", node.startup);
    let stderr = node.stderr_text();
    assert!(!stderr.contains("QUARANTINED"), "a kill -9 quarantined an endpoint:\n{stderr}");
    assert!(!stderr.contains("panick"), "{stderr}");
    let mut client = node.client();
    // Versions are per endpoint: the highest acknowledged one of each partition.
    let mut partition_max = vec![0u64; PARTITIONS as usize];
    let (mut latest, mut newer, mut absent) = (0u64, 0u64, 0u64);
    for (id, log) in (0u64..).zip(&logs) {
        for (k, entry) in log.keys.iter().enumerate() {
            let key = load_key(id, k);
            let got = client.get(&key).unwrap_or_else(|e| panic!("GET w{id}-k{k} failed: {e}"));
            if let Some((_, version)) = entry.acked {
                let p = partition_of(&key, PARTITIONS) as usize;
                partition_max[p] = partition_max[p].max(version);
            }
            let name = format!("w{id}-k{k}");
            match (entry.acked, got) {
                (None, None) => absent += 1,
                (Some((seq, version)), None) => violations.push(format!(
                    "{name}: write {seq} acknowledged at version {version}, now absent"
                )),
                (acked, Some(value)) => match which_write(id, k, &value.bytes) {
                    None => violations.push(format!(
                        "{name} holds {} bytes that no write of the load sent",
                        value.bytes.len()
                    )),
                    Some(seq) if Some(seq) == acked.map(|a| a.0) => {
                        latest += 1;
                        let version = acked.expect("acked").1;
                        if value.version != version {
                            violations.push(format!(
                                "{name}: write {seq} acknowledged at version {version}, reads \
                                 back at version {}",
                                value.version
                            ));
                        }
                    }
                    Some(seq) if entry.attempted.contains(&seq) => {
                        newer += 1;
                        if let Some((_, version)) = acked {
                            if value.version <= version {
                                violations.push(format!(
                                    "{name}: unacknowledged write {seq} at version {} is not \
                                     above the acknowledged version {version}",
                                    value.version
                                ));
                            }
                        }
                    }
                    Some(seq) => violations.push(format!(
                        "{name} holds write {seq}; acknowledged {acked:?}, attempted after it \
                         {:?}: an acknowledged write was lost",
                        entry.attempted
                    )),
                },
            }
        }
    }
    // A new write must get a version above every acknowledged one of its endpoint.
    let mut rewritten = 0;
    for (id, log) in (0u64..).zip(&logs) {
        for k in (0..log.keys.len()).step_by(7) {
            let key = load_key(id, k);
            let version = client.put(&key, b"after restart").expect("PUT after restart");
            let p = partition_of(&key, PARTITIONS) as usize;
            if version <= partition_max[p] {
                violations.push(format!(
                    "w{id}-k{k}: a new write got version {version}, not above {} acknowledged \
                     before the kill in partition {p}",
                    partition_max[p]
                ));
            }
            rewritten += 1;
        }
    }
    let status = node.status_json();
    eprintln!(
        "after restart: {latest} keys at their latest acknowledged write, {newer} at a newer \
         unacknowledged one, {absent} never acknowledged and absent; {rewritten} new writes; \
         status keys {} log_bytes {} live_bytes {} blob_bytes {} blob_chunks {}",
        status["keys"],
        status["log_bytes"],
        status["live_bytes"],
        status["blob_bytes"],
        status["blob_chunks"]
    );
    assert!(violations.is_empty(), "{} violations:\n{}", violations.len(), violations.join("\n"));
    let exit = node.terminate(Duration::from_secs(10));
    assert!(exit.success(), "node exited with {exit}");
}

// ---- 2. Full disk ----

/// A tmpfs the test mounted; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: cannot mount a tmpfs".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .output()
            .expect("run mount");
        assert!(out.status.success(), "remount: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(self.dir.path()).output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            // Busy (a node still holds files): lazily, so the mount never outlives the test.
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).output();
        }
    }
}

fn disk_value(i: u64) -> Vec<u8> {
    let h = mix(i ^ 0xD15C);
    let len = if h & 7 == 0 {
        16_384 + (h >> 8) as usize % 40_000
    } else {
        200 + (h >> 8) as usize % 3_000
    };
    common::bytes(len, h)
}

#[test]
fn a_full_disk_answers_no_space_loses_nothing_and_serves_again_after_space_is_freed() {
    let tmpfs = match Tmpfs::mount("8m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    const PARTITIONS: u32 = 4;
    let data_dir = tmpfs.path().join("data");
    let mut node = Node::start(&data_dir, 1, PARTITIONS, &[]);
    let mut client = node.client();
    // key -> (value index, version)
    let mut acked: BTreeMap<Vec<u8>, (u64, u64)> = BTreeMap::new();
    let mut no_space = 0u64;
    let mut other_errors = Vec::new();
    let started = Instant::now();
    let mut i = 0u64;
    // Fill: new keys only, until a write answers NO_SPACE (then 300 more attempts).
    let mut first_no_space = None;
    while started.elapsed() < Duration::from_secs(60) {
        if first_no_space.is_some_and(|at| i >= at + 300) {
            break;
        }
        let key = format!("fill-{i}").into_bytes();
        match client.put(&key, &disk_value(i)) {
            Ok(version) => {
                acked.insert(key, (i, version));
            }
            Err(client::Error::Status(proto::Status::NoSpace)) => {
                no_space += 1;
                first_no_space.get_or_insert(i);
            }
            Err(e) => {
                other_errors.push(format!("fill-{i}: {e}"));
                if other_errors.len() > 20 {
                    break;
                }
            }
        }
        i += 1;
    }
    eprintln!(
        "full disk: {} writes acknowledged, {no_space} NO_SPACE (first at write {first_no_space:?}) \
         in {:?}, other errors {other_errors:?}",
        acked.len(),
        started.elapsed()
    );
    assert!(first_no_space.is_some(), "8 MiB never filled up after {i} writes");
    assert!(other_errors.is_empty(), "writes failed other than with NO_SPACE: {other_errors:?}");
    assert!(node.alive(), "the node died on a full disk:\n{}", node.stderr_text());
    // A rejected overwrite of an acknowledged key changes nothing.
    let overwritten: Vec<Vec<u8>> = acked.keys().step_by(97).cloned().collect();
    for key in &overwritten {
        match client.put(key, b"rejected?") {
            Err(client::Error::Status(proto::Status::NoSpace)) => {}
            Ok(version) => {
                // Space may remain in another endpoint: then it is an acknowledged write.
                acked.insert(key.clone(), (u64::MAX, version));
            }
            Err(e) => panic!("overwrite on a full disk failed with {e}"),
        }
    }
    // The CLI says so too.
    let out = run(&["put", "--server", &node.server(), "fill-0", "via the cli"], b"");
    if !out.status.success() {
        let text = common::stderr_of(&out);
        assert!(text.contains("no space"), "the CLI's error does not say no space: {text}");
    } else {
        acked.insert(b"fill-0".to_vec(), (u64::MAX - 1, 0));
    }
    let check = |client: &mut Client, acked: &BTreeMap<Vec<u8>, (u64, u64)>, when: &str| {
        for (key, &(index, version)) in acked {
            let name = String::from_utf8_lossy(key);
            let got = client
                .get(key)
                .unwrap_or_else(|e| panic!("{when}: GET {name} failed: {e}"))
                .unwrap_or_else(|| panic!("{when}: acknowledged {name} is gone"));
            let want = match index {
                u64::MAX => b"rejected?".to_vec(),
                i if i == u64::MAX - 1 => b"via the cli".to_vec(),
                i => disk_value(i),
            };
            assert!(
                got.bytes == want,
                "{when}: {name} reads {} bytes, not its acknowledged {} bytes",
                got.bytes.len(),
                want.len()
            );
            if version != 0 {
                assert_eq!(got.version, version, "{when}: version of {name}");
            }
        }
    };
    check(&mut client, &acked, "on the full disk");
    let status = node.status_json();
    eprintln!("status on the full disk: {status}");
    // (The line and the counter come with the next sum of the stores' figures, 250 ms.)
    let stderr = node.stderr_until("writes refused NO_SPACE");
    assert!(stderr.contains("no space: "), "no line on stderr says the disk is full:\n{stderr}");
    let status = node.status_json();
    let counted = status["no_space_refusals"].as_u64().unwrap_or(0);
    assert!(counted > 0, "{no_space} NO_SPACE answers, none counted: {status}");
    assert!(node.alive(), "the node died on a full disk");
    let exit = node.terminate(Duration::from_secs(10));
    let stderr = node.stderr_text();
    assert!(!stderr.contains("panick"), "the node panicked:\n{stderr}");
    eprintln!("stopped on the full disk: {exit}");
    drop(client);

    // Free space: a bigger file system (the restart skips the sparse files' holes, see
    // `a_restart_on_a_small_tmpfs_does_not_die_of_sigbus`).
    tmpfs.resize("64m");
    let mut node = Node::start(&data_dir, 1, PARTITIONS, &[]);
    eprintln!("restart after freeing space took {:?}", node.startup);
    let stderr = node.stderr_text();
    assert!(!stderr.contains("QUARANTINED"), "a full disk quarantined an endpoint:\n{stderr}");
    let mut client = node.client();
    check(&mut client, &acked, "after the restart");
    // New writes work in every partition, including blob-sized ones.
    for j in 0..64u64 {
        let key = format!("after-{j}").into_bytes();
        let value = disk_value(1_000_000 + j);
        let version = client.put(&key, &value).unwrap_or_else(|e| panic!("PUT after-{j}: {e}"));
        acked.insert(key, (1_000_000 + j, version));
    }
    check(&mut client, &acked, "after new writes");
    let status = node.status_json();
    assert_eq!(status["quarantined"], 0, "{status}");
    assert_eq!(status["poisoned"], 0, "{status}");
    let exit = node.terminate(Duration::from_secs(10));
    assert!(exit.success(), "node exited with {exit}");
}

/// A core whose completion table is full of records younger than their TTL answers new
/// writes BUSY, and says so on stderr with the knob that lifts it; every acknowledged write
/// stays, and once the oldest records have lived their TTL the core takes writes again.
#[test]
fn a_full_completion_table_answers_busy_names_it_on_stderr_and_takes_writes_after_the_ttl() {
    const RECORDS: u64 = 1024; // the least `node.completion_records` allows
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = data_dir.path().join("cradle.toml");
    std::fs::write(&config, format!("[node]\ncompletion_records = {RECORDS}\n")).unwrap();
    let data = data_dir.path().join("data");
    let mut node = Node::start(&data, 1, 16, &["--config", config.to_str().unwrap()]);
    let mut client = node.client();
    let mut acked = BTreeMap::new();
    let started = Instant::now();
    let mut refused = None;
    for i in 0..RECORDS + 1 {
        let key = format!("full-{i}").into_bytes();
        match client.put(&key, &key) {
            Ok(version) => {
                acked.insert(key, version);
            }
            Err(client::Error::Status(proto::Status::Busy)) => {
                refused = Some(i);
                break;
            }
            Err(e) => panic!("full-{i}: {e}"),
        }
    }
    // The TTL is 5 s: the whole loop must have run within it for the table to be full.
    assert!(started.elapsed() < Duration::from_secs(4), "too slow: {:?}", started.elapsed());
    assert_eq!(refused, Some(RECORDS), "the write past the table's {RECORDS} records");
    let stderr = node.stderr_until("completion table is full");
    assert!(
        stderr.contains("the completion table is full")
            && stderr.contains("writes refused BUSY")
            && stderr.contains("holds 1024 records for 5.0 s")
            && stderr.contains("raise node.completion_records"),
        "no line on stderr names the full table:\n{stderr}"
    );
    let check = |client: &mut Client, acked: &BTreeMap<Vec<u8>, u64>| {
        for (key, &version) in acked {
            let got = client.get(key).expect("GET").expect("an acknowledged write is there");
            assert_eq!((&got.bytes, got.version), (key, version));
        }
    };
    check(&mut client, &acked);
    // After the TTL the first records are forgotten and the refused write is taken.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(started.elapsed()));
    let key = format!("full-{RECORDS}").into_bytes();
    let deadline = Instant::now() + Duration::from_secs(5);
    let version = loop {
        match client.put(&key, &key) {
            Ok(version) => break version,
            Err(client::Error::Status(proto::Status::Busy)) if Instant::now() < deadline => {}
            Err(e) => panic!("the refused write after the TTL: {e}"),
        }
    };
    acked.insert(key, version);
    check(&mut client, &acked);
    let exit = node.terminate(Duration::from_secs(10));
    assert!(exit.success(), "node exited with {exit}");
}

/// A node under `ulimit -n 64` serves 10,000 endpoints with data: they share the core's log,
/// a descriptor and a map per segment file, not per endpoint. Then it is pushed past the
/// limit (small segments, big values: the log needs more files than 64 descriptors allow):
/// the writes that need a new segment are refused BUSY, one line on stderr names the limit,
/// status counts them, nothing is poisoned and nothing acknowledged is lost; restarted with
/// the normal limit, the node has every acknowledged write and takes the refused ones.
#[test]
fn ten_thousand_endpoints_fit_64_descriptors_and_past_the_limit_busy_names_it_and_loses_nothing() {
    const PARTITIONS: u32 = 10_000;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = data_dir.path().join("cradle.toml");
    std::fs::write(&config, "[storage]\nsegment_bytes = 65536\n").unwrap();
    let config_arg = config.to_str().unwrap();
    let data = data_dir.path().join("data");
    let mut node = Node::start_limited(&data, PARTITIONS, 64, &["--config", config_arg]);
    let mut client = node.client();
    // One key in each endpoint.
    let mut acked = BTreeMap::new();
    let mut filled = vec![false; PARTITIONS as usize];
    let value = |i: u64| format!("value-{i}-{}", "x".repeat(40)).into_bytes();
    let mut i = 0u64;
    while filled.iter().any(|f| !f) {
        let key = format!("limit-{i}").into_bytes();
        let p = partition_of(&key, PARTITIONS) as usize;
        if !filled[p] {
            let version = client.put(&key, &value(i)).unwrap_or_else(|e| panic!("limit-{i}: {e}"));
            acked.insert(key, (i, version));
            filled[p] = true;
        }
        i += 1;
    }
    let fds = std::fs::read_dir(format!("/proc/{}/fd", node.pid())).unwrap().count();
    eprintln!("under ulimit -n 64: {PARTITIONS} endpoints with data, {fds} descriptors open");
    assert!(fds < 64, "{fds} descriptors");
    // Past the limit: 4 KB values fill a 64 KiB segment every 15 writes.
    let big = |i: u64| format!("big-{i}-{}", "y".repeat(4000)).into_bytes();
    let (mut refused, mut other) = (Vec::new(), Vec::new());
    // (The client asks again for a second before it reports BUSY: 8 refusals are enough.)
    for j in i..i + 3000 {
        if refused.len() == 8 {
            break;
        }
        let key = format!("limit-{j}").into_bytes();
        match client.put(&key, &big(j)) {
            Ok(version) => {
                acked.insert(key, (j, version));
            }
            Err(client::Error::Status(proto::Status::Busy)) => refused.push(j),
            Err(e) => other.push(format!("limit-{j}: {e}")),
        }
    }
    eprintln!("then {} refused BUSY", refused.len());
    assert!(other.is_empty(), "writes failed other than BUSY: {other:?}");
    assert!(!refused.is_empty(), "the limit was never reached");
    let first_big = i;
    let value = |j: u64| if j < first_big { value(j) } else { big(j) };
    let stderr = node.stderr_until("out of open files");
    assert!(
        stderr.contains("out of open files (ulimit -n is 64)") && stderr.contains("refused BUSY"),
        "no line on stderr names the limit:\n{stderr}"
    );
    let status = node.status_json();
    assert!(status["limit_refusals"].as_u64().unwrap_or(0) >= refused.len() as u64, "{status}");
    assert_eq!((status["poisoned"].as_u64(), status["quarantined"].as_u64()), (Some(0), Some(0)));
    let check = |client: &mut Client, acked: &BTreeMap<Vec<u8>, (u64, u64)>, when: &str| {
        for (key, &(i, version)) in acked {
            let name = String::from_utf8_lossy(key);
            let got = client.get(key).unwrap_or_else(|e| panic!("{when}: GET {name}: {e}"));
            let got = got.unwrap_or_else(|| panic!("{when}: acknowledged {name} is gone"));
            assert_eq!((got.bytes, got.version), (value(i), version), "{when}: {name}");
        }
    };
    check(&mut client, &acked, "under the limit");
    let exit = node.terminate(Duration::from_secs(10));
    assert!(exit.success(), "node exited with {exit}");
    drop(client);

    let mut node = Node::start(&data, 1, PARTITIONS, &["--config", config_arg]);
    let mut client = node.client();
    check(&mut client, &acked, "after the restart");
    for &i in &refused {
        let key = format!("limit-{i}").into_bytes();
        let version = client.put(&key, &value(i)).unwrap_or_else(|e| panic!("limit-{i}: {e}"));
        acked.insert(key, (i, version));
    }
    check(&mut client, &acked, "after writing the refused keys");
    let status = node.status_json();
    assert_eq!(status["limit_refusals"], 0, "{status}");
    let exit = node.terminate(Duration::from_secs(10));
    assert!(exit.success(), "node exited with {exit}");
}

// ---- 3. Crash images made by hand ----

/// A record of a core's log segment, as the crash-image tests find it.
#[derive(Clone, Debug)]
struct Rec {
    start: usize,
    len: usize,
    /// The endpoint slot it names (with one core: the partition).
    endpoint: u32,
    key: Vec<u8>,
    /// Where its key starts (after the 28-byte header and a stamp, if any).
    key_at: usize,
}

/// Every record of a core's log segment, up to its zero header (markers included). The
/// format is in storage/src/record.rs.
fn records(segment: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut at = 32;
    while at + 28 <= segment.len() {
        let len = u32::from_le_bytes(segment[at + 4..at + 8].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let key_len = u16::from_le_bytes(segment[at + 10..at + 12].try_into().unwrap()) as usize;
        if at + len > segment.len() {
            break;
        }
        let endpoint = u32::from_le_bytes(segment[at + 20..at + 24].try_into().unwrap());
        // A stamped write (flags bit 0) has its 28-byte request stamp before the key, and
        // metadata (bit 1) 16 bytes more.
        let flags = segment[at + 9];
        let key_at =
            at + 28 + if flags & 1 != 0 { 28 } else { 0 } + if flags & 2 != 0 { 16 } else { 0 };
        let key = segment[key_at..key_at + key_len].to_vec();
        out.push(Rec { start: at, len, endpoint, key, key_at });
        at += len.next_multiple_of(4);
    }
    out
}

/// The newest segment of core 0's log with a header (the log makes the one after it ahead,
/// zeros: `storage/src/file.rs`, `Volume::prepare`).
fn newest_segment(data_dir: &Path) -> PathBuf {
    let dir = data_dir.join("core-0");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .filter(|p| std::fs::read(p).unwrap().iter().any(|&b| b != 0))
        .collect();
    segs.sort();
    segs.pop().expect("a segment file")
}

fn image_value(key: &[u8]) -> Vec<u8> {
    let mut value = b"value of ".to_vec();
    value.extend_from_slice(key);
    value.extend_from_slice(&common::bytes(100, proto::key_hash(key)));
    value
}

/// Starts a node and writes `per_partition` keys (each once) to every partition; stops it.
/// Returns the keys by partition.
fn write_image(data_dir: &Path, partitions: u32, per_partition: usize) -> Vec<Vec<Vec<u8>>> {
    let mut keys = vec![Vec::new(); partitions as usize];
    let mut node = Node::start(data_dir, 1, partitions, &[]);
    let mut client = node.client();
    let mut i = 0;
    while keys.iter().any(|k| k.len() < per_partition) {
        let key = format!("image-{i}").into_bytes();
        i += 1;
        let p = partition_of(&key, partitions) as usize;
        if keys[p].len() < per_partition {
            client.put(&key, &image_value(&key)).expect("PUT");
            keys[p].push(key);
        }
    }
    let exit = node.terminate(Duration::from_secs(10));
    assert!(exit.success(), "node exited with {exit}");
    keys
}

fn cli_get(node: &Node, key: &[u8]) -> std::process::Output {
    run(&["get", "--server", &node.server(), std::str::from_utf8(key).unwrap()], b"")
}

#[test]
fn a_flipped_byte_mid_segment_quarantines_only_its_endpoint_and_changes_no_file() {
    const PARTITIONS: u32 = 8;
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = write_image(dir.path(), PARTITIONS, 20);
    let victim = 5u32;
    let path = newest_segment(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let recs: Vec<Rec> = records(&bytes).into_iter().filter(|r| r.endpoint == victim).collect();
    assert_eq!(recs.len(), 20, "records of partition {victim}");
    // The payload of its 8th record (valid records follow it: not a torn tail). Its header
    // is sound, so its extent and its owner are known: only that endpoint is quarantined.
    let Rec { start, len, key, key_at, .. } = recs[7].clone();
    let flip = key_at + key.len() + 10;
    assert!(flip < start + len);
    bytes[flip] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let listing = |p: &Path| -> Vec<(PathBuf, u64)> {
        let mut files: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path(), e.metadata().unwrap().len())
            })
            .collect();
        files.sort();
        files
    };
    let before = listing(&path);

    let mut node = Node::start(dir.path(), 1, PARTITIONS, &[]);
    let stderr = node.stderr_until(&format!("partition {victim} QUARANTINED"));
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("partition {victim} QUARANTINED")))
        .unwrap_or_else(|| panic!("no QUARANTINED line for partition {victim}:\n{stderr}"));
    let path_text = path.display().to_string();
    assert!(line.contains(&path_text), "the line does not name {path_text}: {line}");
    assert!(line.contains(&format!("at byte {start}")), "not at byte {start}: {line}");
    assert_eq!(stderr.matches("QUARANTINED").count(), 1, "{stderr}");
    assert!(!stderr.contains("torn tail"), "{stderr}");
    let status = node.status_json();
    assert_eq!(status["quarantined"], 1, "{status}");
    // `cradle status` names the file and the byte offset too.
    let reported = &status["quarantine"][0];
    assert_eq!(reported["partition"], victim, "{status}");
    let corruption = reported["corruption"].as_str().unwrap_or_default();
    assert!(
        corruption.contains(&path_text) && corruption.contains(&format!("at byte {start}")),
        "{status}"
    );
    // The quarantined endpoint answers an error, by GET and PUT; the others serve.
    for key in &keys[victim as usize][..3] {
        let out = cli_get(&node, key);
        assert!(!out.status.success(), "GET of a quarantined key succeeded");
        eprintln!("GET of a quarantined key: {}", common::stderr_of(&out).trim());
        assert!(common::stderr_of(&out).contains("unavailable"), "{}", common::stderr_of(&out));
    }
    let key = std::str::from_utf8(&keys[victim as usize][0]).unwrap();
    let out = run(&["put", "--server", &node.server(), key, "x"], b"");
    assert!(!out.status.success(), "PUT to a quarantined endpoint succeeded");
    let mut served = 0;
    for (p, partition_keys) in keys.iter().enumerate() {
        if p as u32 == victim {
            continue;
        }
        for key in partition_keys {
            let out = cli_get(&node, key);
            assert!(out.status.success(), "GET failed: {}", common::stderr_of(&out));
            assert_eq!(out.stdout, image_value(key));
            served += 1;
        }
    }
    // Other endpoints still take writes.
    let mut client = node.client();
    let other = keys[(victim as usize + 1) % PARTITIONS as usize][0].clone();
    client.put(&other, b"new value").expect("PUT to a healthy endpoint");
    eprintln!("quarantine at {path_text} byte {start}; {served} keys of other partitions served");
    drop(client);
    // The other endpoints share the file and append after its records; what was written
    // before, the damaged record among it, is never changed (no cut, no cleaning).
    let valid_end = recs.last().map(|r| r.start + r.len.next_multiple_of(4)).unwrap();
    let written = records(&bytes).last().map(|r| r.start + r.len.next_multiple_of(4)).unwrap();
    assert!(valid_end <= written);
    let unchanged = |now: &[u8]| now.len() >= written && now[..written] == bytes[..written];
    assert!(unchanged(&std::fs::read(&path).unwrap()), "the log was changed while served");
    let exit = node.terminate(Duration::from_secs(10));
    assert!(exit.success(), "node exited with {exit}");
    assert!(unchanged(&std::fs::read(&path).unwrap()), "the damaged part of the log was changed");
    assert_eq!(listing(&path).len(), before.len(), "files of the core's log came or went");
    // And again at the next start: the same report, still no change.
    let mut node = Node::start(dir.path(), 1, PARTITIONS, &[]);
    let quarantined = format!("partition {victim} QUARANTINED");
    assert!(node.stderr_until(&quarantined).contains(&quarantined));
    node.terminate(Duration::from_secs(10));
    assert!(unchanged(&std::fs::read(&path).unwrap()), "the damaged part of the log was changed");
}

#[test]
fn a_torn_last_record_is_truncated_and_reported_and_the_rest_is_served() {
    const PARTITIONS: u32 = 8;
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = write_image(dir.path(), PARTITIONS, 20);
    let path = newest_segment(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let recs = records(&bytes);
    // Cut the file in the middle of the log's last record (a write that only partly reached
    // disk), whichever partition it belongs to.
    let Rec { start, len, key: lost_key, endpoint: victim, .. } = recs.last().unwrap().clone();
    assert!(keys[victim as usize].contains(&lost_key));
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((start + len / 2) as u64).unwrap();
    drop(file);

    let mut node = Node::start(dir.path(), 1, PARTITIONS, &[]);
    let stderr = node.stderr_until("core 0: torn tail truncated");
    let line = stderr
        .lines()
        .find(|l| l.contains("core 0: torn tail truncated"))
        .unwrap_or_else(|| panic!("no torn tail line (partition {victim}):\n{stderr}"));
    let path_text = path.display().to_string();
    assert!(line.contains(&path_text), "the line does not name {path_text}: {line}");
    assert!(line.contains(&format!("byte {start} ")), "not at byte {start}: {line}");
    assert!(!stderr.contains("QUARANTINED"), "{stderr}");
    assert_eq!(node.status_json()["quarantined"], 0);
    // The torn record is gone, everything else is served.
    let out = cli_get(&node, &lost_key);
    assert!(!out.status.success(), "the torn record's key is still served");
    assert!(common::stderr_of(&out).contains("not found"), "{}", common::stderr_of(&out));
    let mut served = 0;
    for partition_keys in &keys {
        for key in partition_keys.iter().filter(|k| **k != lost_key) {
            let out = cli_get(&node, key);
            assert!(out.status.success(), "GET failed: {}", common::stderr_of(&out));
            assert_eq!(out.stdout, image_value(key));
            served += 1;
        }
    }
    // The log continues where the valid part ended.
    let mut client = node.client();
    let version = client.put(&lost_key, b"written again").expect("PUT after the cut");
    drop(client);
    node.terminate(Duration::from_secs(10));
    eprintln!("torn tail at {path_text} byte {start} cut; {served} keys served");
    let mut node = Node::start(dir.path(), 1, PARTITIONS, &[]);
    let stderr = node.stderr_text();
    assert!(!stderr.contains("torn tail"), "the cut was not made durable:\n{stderr}");
    let got = node.client().get(&lost_key).expect("GET").expect("the new write is there");
    assert_eq!((got.bytes, got.version), (b"written again".to_vec(), version));
    node.terminate(Duration::from_secs(10));
}

#[test]
fn garbage_after_the_last_record_is_a_torn_tail() {
    const PARTITIONS: u32 = 4;
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = write_image(dir.path(), PARTITIONS, 10);
    let path = newest_segment(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let recs = records(&bytes);
    let Rec { start, len, .. } = recs.last().unwrap().clone();
    let end = start + len.next_multiple_of(4);
    // A record header claiming 200 bytes with a wrong checksum, and half of its body.
    let mut garbage = vec![0u8; 28];
    garbage[0..4].copy_from_slice(&0xDEAD_BEEF_u32.to_le_bytes());
    garbage[4..8].copy_from_slice(&200u32.to_le_bytes());
    garbage[8] = 1;
    garbage[10..12].copy_from_slice(&4u16.to_le_bytes());
    garbage.extend_from_slice(&[0xAB; 72]);
    bytes[end..end + garbage.len()].copy_from_slice(&garbage);
    std::fs::write(&path, &bytes).unwrap();

    let node = Node::start(dir.path(), 1, PARTITIONS, &[]);
    let stderr = node.stderr_until("core 0: torn tail truncated");
    let line = stderr
        .lines()
        .find(|l| l.contains("core 0: torn tail truncated"))
        .unwrap_or_else(|| panic!("no torn tail line:\n{stderr}"));
    assert!(line.contains(&path.display().to_string()) && line.contains(&format!("byte {end} ")));
    for partition_keys in &keys {
        for key in partition_keys {
            let out = cli_get(&node, key);
            assert!(out.status.success(), "GET failed: {}", common::stderr_of(&out));
            assert_eq!(out.stdout, image_value(key));
        }
    }
}

/// A node started on `data_dir`, which an earlier version wrote, refuses to start: its stderr
/// names `what` it found, says it changed nothing and how to export and import.
fn assert_refused_with_how_to_carry_over(data_dir: &Path, what: &str) {
    let data_dir = data_dir.to_str().unwrap();
    let args = ["node", "--listen", "127.0.0.1:0", "--no-pin", "--data-dir", data_dir];
    let out = run(&args, b"");
    let stderr = common::stderr_of(&out);
    assert!(!out.status.success(), "a node started on {what}:\n{stderr}");
    assert!(
        stderr.contains(what)
            && stderr.contains("cradle export")
            && stderr.contains("cradle import")
            && stderr.contains("changed nothing"),
        "{stderr}"
    );
}

/// A data directory in the layout before one log per core (a directory per partition) is
/// refused at start with what to do, and nothing in it is changed.
#[test]
fn a_data_dir_in_the_per_partition_layout_is_refused_with_how_to_carry_it_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old = dir.path().join("partition-0000003");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("0000000000.seg"), b"CRDLSEG1 an old segment").unwrap();
    assert_refused_with_how_to_carry_over(dir.path(), "1 per-partition directories");
    assert_eq!(std::fs::read(old.join("0000000000.seg")).unwrap(), b"CRDLSEG1 an old segment");
    assert!(!dir.path().join("core-0").exists(), "a log was made next to the old layout");
}

/// A data directory whose log is in the record format before this one (magic CRDLSEG2) is
/// refused at start with what to do, and nothing in it is changed.
#[test]
fn a_data_dir_in_the_earlier_record_format_is_refused_with_how_to_carry_it_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old = dir.path().join("core-0");
    std::fs::create_dir_all(&old).unwrap();
    let segment = old.join("0000000000.seg");
    std::fs::write(&segment, b"CRDLSEG2 a segment of 32-byte headers").unwrap();
    assert_refused_with_how_to_carry_over(dir.path(), "core-0: segments with magic CRDLSEG2");
    assert_eq!(std::fs::read(&segment).unwrap(), b"CRDLSEG2 a segment of 32-byte headers");
    assert_eq!(std::fs::read_dir(&old).unwrap().count(), 1, "a file was added to the old log");
}

/// Known bug (ignored until fixed): `BlobStore::open` scans every 4 KiB block of the whole
/// preallocated blob segment (64 MiB) through the read-only map, holes included. On tmpfs each
/// touched hole is allocated, so a restart after storing one 30 KB value needs 64 MiB free,
/// and with less the node dies of SIGBUS at start (no message).
#[test]
fn a_restart_on_a_small_tmpfs_does_not_die_of_sigbus() {
    let tmpfs = match Tmpfs::mount("48m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let data_dir = tmpfs.path().join("data");
    let value = common::bytes(30_000, 7);
    let mut node = Node::start(&data_dir, 1, 4, &[]);
    node.client().put(b"big", &value).expect("PUT");
    node.terminate(Duration::from_secs(10));
    let mut child = common::cradle()
        .args(["node", "--listen", "127.0.0.1:0", "--no-pin", "--partitions", "4", "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let exited = child.try_wait().unwrap();
    signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert!(line.starts_with("cradle ready"), "no ready line ({exited:?}, {status}): {line:?}");
}

/// Regression: with `--durability flushed`, fragmented PUTs of more than 32 KiB, 32 in flight
/// from one client, once failed with `Timeout` (every burst paid a flush, and each resend of
/// a waiting write got a reply of its own); fixed by the group commit across full bursts.
#[test]
fn concurrent_large_puts_under_flushed_durability_all_succeed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(dir.path(), 1, 16, &[]);
    // The flushes of the tests running beside this one can hold an fsync on this node's loop
    // for longer than the default 8 attempts (about 260 ms once the timeout has samples):
    // the client here waits out its whole resend window, so what fails is the server.
    let mut config = ClientConfig::new(vec![node.addr]);
    config.attempts_per_server = 32;
    let mut client = Client::connect(config).expect("client connects");
    let (began, mut failed) = (Instant::now(), Vec::new());
    for round in 0..10 {
        for lane in 0..32 {
            let value = common::bytes(40_000, round * 100 + lane);
            client.submit(Request::Put { key: format!("k{lane}").into_bytes(), value });
        }
        while let Some((_, result)) = client.wait(Duration::from_secs(10)) {
            if let Err(e) = result.into_version() {
                failed.push(format!("at {:?}: {e}", began.elapsed()));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 320 PUTs failed: {:?}",
        failed.len(),
        &failed[..3.min(failed.len())]
    );
}
