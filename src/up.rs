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

/// A local cluster: node processes on 127.0.0.1 … 127.0.0.N (one port), each started, killed
/// and restarted by this process (by PID). Stopped (SIGTERM) when dropped.
pub(crate) struct LocalCluster {
    /// Core 0 of each member.
    pub(crate) members: Vec<SocketAddr>,
    /// The running node of each member (none while it is down).
    nodes: Vec<Option<Child>>,
    /// How each member is started.
    commands: Vec<Vec<String>>,
    exe: PathBuf,
}

/// What a local cluster is made of.
pub(crate) struct Spec<'a> {
    pub(crate) nodes: u8,
    pub(crate) cores: u32,
    pub(crate) partitions: u32,
    pub(crate) port: u16,
    /// More `cradle node` flags for every member.
    pub(crate) extra: Vec<String>,
    pub(crate) dir: &'a Path,
}

impl LocalCluster {
    /// Starts every member and waits until each is ready (`stop` cuts the wait short).
    pub(crate) fn start(spec: &Spec<'_>, stop: &AtomicBool) -> Result<LocalCluster, String> {
        let dir = spec.dir.to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let key = cluster_key(&dir)?;
        let members: Vec<SocketAddr> =
            (1..=spec.nodes).map(|i| SocketAddr::from(([127, 0, 0, i], spec.port))).collect();
        let list = members.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let commands = members
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let data_dir = dir.join(format!("node-{}", i + 1));
                let mut args: Vec<String> =
                    ["node", "--no-pin", "--listen"].map(String::from).into();
                args.extend([addr.to_string(), "--cluster".into(), list.clone()]);
                args.extend(["--cores".into(), spec.cores.to_string()]);
                args.extend(["--partitions".into(), spec.partitions.to_string()]);
                args.extend(["--cluster-key".into(), key.display().to_string()]);
                args.extend(["--data-dir".into(), data_dir.display().to_string()]);
                args.extend(spec.extra.iter().cloned());
                args
            })
            .collect();
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let nodes = (0..spec.nodes).map(|_| None).collect();
        let mut cluster = LocalCluster { nodes, members, commands, exe };
        let mut readiness = Vec::new();
        for i in 0..cluster.members.len() {
            readiness.push(cluster.spawn(i)?);
        }
        // Members are ready together: each waits for the cluster's first map.
        for (i, ready) in readiness.into_iter().enumerate() {
            cluster.wait_ready(i, &ready, stop)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<std::sync::mpsc::Receiver<()>, String> {
        let mut command = Command::new(&self.exe);
        command.args(&self.commands[i]).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = command.spawn().map_err(|e| format!("cannot start node {}: {e}", i + 1))?;
        let ready = ready_line(child.stdout.take().expect("piped"));
        self.nodes[i] = Some(child);
        Ok(ready)
    }

    fn wait_ready(
        &mut self,
        i: usize,
        ready: &std::sync::mpsc::Receiver<()>,
        stop: &AtomicBool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while ready.recv_timeout(Duration::from_millis(50)).is_err() {
            let exited =
                self.nodes[i].as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if stop.load(Ordering::Relaxed) || exited || Instant::now() > deadline {
                return Err(format!("node {} did not become ready", i + 1));
            }
        }
        Ok(())
    }

    /// Member `i`'s PID, if it runs.
    pub(crate) fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].as_ref().map(Child::id)
    }

    /// SIGKILL to member `i` (a crash: its data stays), then reaps it.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].take() {
            let _ = Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data and waits until it is ready.
    pub(crate) fn restart(&mut self, i: usize, stop: &AtomicBool) -> Result<(), String> {
        assert!(self.nodes[i].is_none(), "restart of a running member");
        let ready = self.spawn(i)?;
        self.wait_ready(i, &ready, stop)
    }

    /// The first member whose process exited by itself, if one did (it is reaped).
    fn exited(&mut self) -> Option<usize> {
        let i = self
            .nodes
            .iter_mut()
            .position(|n| n.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))))?;
        self.nodes[i] = None;
        Some(i)
    }

    /// SIGTERM to every member (by its PID), then waits for each.
    pub(crate) fn stop(&mut self) {
        for child in self.nodes.iter().flatten() {
            // (The binary has no unsafe code: kill(1) sends it, to a PID this process spawned.)
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
        for child in self.nodes.iter_mut().flatten() {
            let _ = child.wait();
        }
        self.nodes.iter_mut().for_each(|n| *n = None);
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
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
    let mut extra = Vec::new();
    if let Some(replicas) = args.replicas {
        extra.extend(["--replicas".into(), replicas.to_string()]);
    }
    if let Some(durability) = &args.durability {
        extra.extend(["--durability".into(), durability.clone()]);
    }
    if let Some(ms) = args.failover_after_ms {
        extra.extend(["--failover-after-ms".into(), ms.to_string()]);
    }
    let spec = Spec {
        nodes: args.nodes,
        cores: args.cores,
        partitions: args.partitions,
        port: args.port,
        extra,
        dir: &dir,
    };
    let mut cluster = LocalCluster::start(&spec, &stop)?;
    println!("cradle up: {} nodes, data in {}", cluster.members.len(), dir.display());
    for (i, addr) in cluster.members.iter().enumerate() {
        println!("  node {} at {} pid {}", i + 1, addr, cluster.pid(i).expect("started"));
    }
    println!("clients: --server {}", cluster.members[0]);
    while !stop.load(Ordering::Relaxed) {
        if let Some(i) = cluster.exited() {
            eprintln!(
                "cradle up: node {} ({}) exited; the others go on",
                i + 1,
                cluster.members[i]
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.stop();
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
