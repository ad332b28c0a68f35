//! `cradle up`: a local cluster of N node processes on 127.0.0.1 … 127.0.0.N (one port),
//! in the foreground until SIGTERM or SIGINT, which it passes on to every node.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `cradle up` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct UpArgs {
    /// Node processes (1 to 5; each its own loopback address).
    #[arg(long)]
    nodes: u8,
    /// Cores per node.
    #[arg(long, default_value_t = 1)]
    cores: u32,
    /// Replicas per partition [default: 3, or the nodes if fewer].
    #[arg(long)]
    replicas: Option<usize>,
    /// Partitions.
    #[arg(long, default_value_t = 64)]
    partitions: u32,
    /// The port every node's core 0 listens on.
    #[arg(long, default_value_t = 7000)]
    port: u16,
    /// When writes are acknowledged, on every node (`flushed` or `memory`) [default: flushed].
    #[arg(long)]
    durability: Option<String>,
    /// A member silent this long is failed over (see `cradle node --failover-after-ms`).
    #[arg(long)]
    failover_after_ms: Option<u64>,
    /// Where the nodes keep their data (node i in DIR/node-i) and the cluster key [default: a
    /// new directory under the system's temp directory].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

struct Running {
    child: Child,
    addr: SocketAddr,
}

/// Starts the nodes, waits until each is ready, prints them, and waits for a signal.
pub(crate) fn run(args: &UpArgs) -> Result<ExitCode, String> {
    if !(1..=5).contains(&args.nodes) {
        return Err(format!("--nodes must be between 1 and 5, not {}", args.nodes));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| format!("cannot handle signal {signal}: {e}"))?;
    }
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("cradle-up-{}", std::process::id())));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let key = cluster_key(&dir)?;
    let members: Vec<SocketAddr> =
        (1..=args.nodes).map(|i| SocketAddr::from(([127, 0, 0, i], args.port))).collect();
    let list = members.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut running = Vec::new();
    let mut readiness = Vec::new();
    for (i, addr) in members.iter().enumerate() {
        let mut command = Command::new(&exe);
        command
            .args(["node", "--no-pin", "--listen", &addr.to_string(), "--cluster", &list])
            .args([
                "--cores",
                &args.cores.to_string(),
                "--partitions",
                &args.partitions.to_string(),
            ])
            .arg("--cluster-key")
            .arg(&key)
            .arg("--data-dir")
            .arg(dir.join(format!("node-{}", i + 1)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(replicas) = args.replicas {
            command.args(["--replicas", &replicas.to_string()]);
        }
        if let Some(durability) = &args.durability {
            command.args(["--durability", durability]);
        }
        if let Some(ms) = args.failover_after_ms {
            command.args(["--failover-after-ms", &ms.to_string()]);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                stop_all(&mut running);
                return Err(format!("cannot start node {}: {e}", i + 1));
            }
        };
        readiness.push(ready_line(child.stdout.take().expect("piped")));
        running.push(Running { child, addr: *addr });
    }
    // Members are ready together: each waits for the cluster's first map.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, ready) in readiness.into_iter().enumerate() {
        while ready.recv_timeout(Duration::from_millis(50)).is_err() {
            if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                stop_all(&mut running);
                return Err(format!("node {} did not become ready", i + 1));
            }
        }
    }
    println!("cradle up: {} nodes, data in {}", running.len(), dir.display());
    for (i, node) in running.iter().enumerate() {
        println!("  node {} at {} pid {}", i + 1, node.addr, node.child.id());
    }
    println!("clients: --server {}", members[0]);
    while !stop.load(Ordering::Relaxed) {
        if let Some(i) = running.iter_mut().position(|n| matches!(n.child.try_wait(), Ok(Some(_))))
        {
            eprintln!("cradle up: node {} ({}) exited; the others go on", i + 1, running[i].addr);
            running.remove(i);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_all(&mut running);
    Ok(ExitCode::SUCCESS)
}

/// The cluster key in `dir` (made on first use, 32 random bytes, readable by the owner only).
fn cluster_key(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("cluster.key");
    if !path.exists() {
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
        std::fs::write(&path, key).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(path)
}

/// Sends once the node printed `cradle ready` (its later lines are passed on).
fn ready_line(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("cradle ready") {
                let _ = tx.send(());
            }
        }
    });
    rx
}

/// SIGTERM to every node (by its PID), then waits for each.
fn stop_all(running: &mut Vec<Running>) {
    for node in running.iter() {
        // (The binary has no unsafe code: kill(1) sends it, to a PID this process spawned.)
        let _ = Command::new("kill").args(["-TERM", &node.child.id().to_string()]).status();
    }
    for node in running.iter_mut() {
        let _ = node.child.wait();
    }
    running.clear();
}
