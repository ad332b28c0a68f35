//! The command-line tools: each talks to a node through the client library.

use crate::node::{Node, NodeOptions};
use client::{CasOutcome, Client, ClientConfig, IncrOutcome};
use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The servers a tool may talk to.
#[derive(clap::Args, Debug)]
pub(crate) struct Servers {
    /// A node's HOST:PORT; repeat to name several (tried in order on failure).
    #[arg(long = "server", required = true)]
    server: Vec<String>,
    /// Seal every request with the key in this file (one `ID NAME ROLE SECRET` line), for
    /// nodes started with --auth-keys.
    #[arg(long)]
    key_file: Option<std::path::PathBuf>,
}

impl Servers {
    fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        let mut addrs = Vec::new();
        for name in &self.server {
            let resolved = name
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve server {name}: {e}"))?
                .next()
                .ok_or_else(|| format!("server {name} has no address"))?;
            addrs.push(resolved);
        }
        Ok(addrs)
    }

    fn connect(&self) -> Result<Client, String> {
        let mut config = ClientConfig::new(self.resolve()?);
        config.key = self.key_file.as_deref().map(client::ClientKey::load).transpose()?;
        Client::connect(config).map_err(|e| e.to_string())
    }
}

/// A member serves once its cores serve by the cluster's map, which needs a majority of the
/// members up to elect a leader: says so while it waits.
fn wait_for_the_cluster_map(
    view: &control::cluster::ClusterView,
    stop: &AtomicBool,
) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    let began = std::time::Instant::now();
    let mut told = false;
    while view.serving_epoch.load(Ordering::Acquire) < 2 {
        if stop.load(Ordering::Relaxed) {
            return Err("stopped before the cluster's map arrived".into());
        }
        if let Some(why) = view.refused.lock().ok().and_then(|r| r.clone()) {
            return Err(why);
        }
        if !told && began.elapsed() > std::time::Duration::from_secs(2) {
            eprintln!(
                "cradle: waiting for the cluster's map (a majority of the members must be up; \
                 a joining node, for the member it joins through to answer)"
            );
            told = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// `cradle node`: serve until SIGTERM or SIGINT.
pub(crate) fn node(options: &NodeOptions) -> Result<ExitCode, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| format!("cannot handle signal {signal}: {e}"))?;
    }
    if let Some(keys) = &options.auth {
        eprintln!(
            "cradle: client authentication on: {} key(s); unsealed requests get UNAUTHENTICATED",
            keys.len()
        );
    }
    let node = Node::start(options, stop.clone())?;
    if let Some(view) = &node.cluster {
        wait_for_the_cluster_map(view, &stop)?;
        node.serving.store(true, std::sync::atomic::Ordering::Release);
    }
    let first = node.addrs[0];
    let last = node.addrs[node.addrs.len() - 1];
    let door = node.memcache.map(|a| format!(", memcache on {a} (tcp+udp)")).unwrap_or_default();
    println!(
        "cradle ready: {} core(s) on {}..{}, {} partitions, data dir {}{door}",
        node.addrs.len(),
        first,
        last.port(),
        options.partitions,
        options.data_dir.display()
    );
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    node.join()?;
    eprintln!("cradle: stopped");
    Ok(ExitCode::SUCCESS)
}

fn read_value(value: &str) -> Result<Vec<u8>, String> {
    if value != "-" {
        return Ok(value.as_bytes().to_vec());
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the value from stdin: {e}"))?;
    Ok(bytes)
}

/// `cradle put`.
pub(crate) fn put(
    servers: &Servers,
    key: &str,
    value: &str,
    ttl_secs: Option<u32>,
) -> Result<ExitCode, String> {
    let value = read_value(value)?;
    let mut client = servers.connect()?;
    let version = match ttl_secs {
        Some(ttl) => client.put_with_ttl(key.as_bytes(), &value, ttl),
        None => client.put(key.as_bytes(), &value),
    };
    println!("{}", version.map_err(|e| e.to_string())?);
    Ok(ExitCode::SUCCESS)
}

/// `cradle incr`: the new count on stdout; below the floor, `below floor` on stderr, exit 1.
pub(crate) fn incr(
    servers: &Servers,
    key: &str,
    by: i64,
    floor: Option<i64>,
    ttl_secs: Option<u32>,
) -> Result<ExitCode, String> {
    let mut client = servers.connect()?;
    let outcome = client.incr_with_ttl(key.as_bytes(), by, floor, ttl_secs);
    match outcome.map_err(|e| e.to_string())? {
        IncrOutcome::Counted { count } => {
            println!("{count}");
            Ok(ExitCode::SUCCESS)
        }
        IncrOutcome::BelowFloor { count } => {
            eprintln!("below floor: the count is {count}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `cradle get`.
pub(crate) fn get(servers: &Servers, key: &str) -> Result<ExitCode, String> {
    match servers.connect()?.get(key.as_bytes()).map_err(|e| e.to_string())? {
        Some(value) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&value.bytes).and_then(|()| out.flush()).map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("not found");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `cradle del`.
pub(crate) fn del(servers: &Servers, key: &str) -> Result<ExitCode, String> {
    if servers.connect()?.delete(key.as_bytes()).map_err(|e| e.to_string())? {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("not found");
        Ok(ExitCode::FAILURE)
    }
}

/// `cradle cas`.
pub(crate) fn cas(
    servers: &Servers,
    key: &str,
    expected: u64,
    value: &str,
) -> Result<ExitCode, String> {
    let value = read_value(value)?;
    match servers.connect()?.cas(key.as_bytes(), expected, &value).map_err(|e| e.to_string())? {
        CasOutcome::Swapped { version } => {
            println!("{version}");
            Ok(ExitCode::SUCCESS)
        }
        CasOutcome::Mismatch { current_version } => {
            eprintln!("version mismatch: the key's version is {current_version}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `cradle status`.
pub(crate) fn status(servers: &Servers, json: bool) -> Result<ExitCode, String> {
    let addrs = servers.resolve()?;
    let mut client = servers.connect()?;
    let text = client.stats(addrs[0]).map_err(|e| e.to_string())?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("the node sent unreadable stats: {e}"))?;
    // A cluster member: its partitions too, each replica with its role and lag.
    let map = match value.get("cluster") {
        Some(_) => Some(MapView::gather(&mut client)?),
        None => None,
    };
    if json {
        if let (Some(map), Some(object)) = (&map, value.as_object_mut()) {
            object.insert("map".into(), map.json());
        }
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    let object = value.as_object().ok_or("the node's stats are not a JSON object")?;
    let about = |name: &str| object.get(name).map(|v| v.to_string().replace('"', ""));
    match (about("version"), about("uptime_s"), about("durability")) {
        (Some(version), Some(uptime), Some(durability)) => {
            println!("node {}: cradle {version}, up {uptime} s, durability {durability}", addrs[0])
        }
        _ => println!("node {}", addrs[0]),
    }
    for (name, value) in
        object.iter().filter(|(name, _)| !["cluster", "health"].contains(&name.as_str()))
    {
        println!("  {name:<22} {value}");
    }
    if let Some(health) = object.get("health") {
        let host = &health["host"];
        println!("hardware health: {}", host["verdict"].as_str().unwrap_or("?"));
        for reason in host["reasons"].as_array().into_iter().flatten() {
            println!("  {}", reason.as_str().unwrap_or("?"));
        }
        for note in health["notes"].as_array().into_iter().flatten() {
            println!("  note: {}", note.as_str().unwrap_or("?"));
        }
    }
    if let (Some(cluster), Some(map)) = (object.get("cluster"), &map) {
        let leader = cluster["leader"].as_str().unwrap_or("none");
        println!(
            "cluster: map epoch {} (serving {}), map group leader {leader}",
            cluster["epoch"], cluster["serving_epoch"]
        );
        for m in cluster["members"].as_array().into_iter().flatten() {
            let silent = m["silent_ms"]
                .as_u64()
                .map_or("never heard".into(), |ms| format!("silent {ms} ms"));
            let draining = if m["draining"] == true { ", draining" } else { "" };
            println!(
                "  member {} {} {} ({silent}), hardware {}{draining}",
                m["member"],
                m["addr"].as_str().unwrap_or("?"),
                m["state"].as_str().unwrap_or("?"),
                m["health"].as_str().unwrap_or("?"),
            );
        }
        let policy = &cluster["health"];
        for why in policy["holding_back"].as_array().into_iter().flatten() {
            println!("  holding back: {}", why.as_str().unwrap_or("?"));
        }
        if let Some(ms) = policy["drained_after_ms"].as_u64() {
            println!("  this member is failing and holds no replica: drained in {ms} ms");
        }
        map.print();
    }
    Ok(ExitCode::SUCCESS)
}

/// The partition map with each replica's lag as its primary's node reports it (writes not
/// yet acknowledged; 0 for a caught-up replica, none where the primary's node did not answer).
struct MapView {
    map: proto::PartitionMap,
    lagging: std::collections::BTreeMap<(u32, SocketAddr), u64>,
    answered: Vec<std::net::IpAddr>,
}

impl MapView {
    fn gather(client: &mut Client) -> Result<MapView, String> {
        let map = client.map().map_err(|e| e.to_string())?;
        // Each primary's node says which of its replicas lag (one STATS per node).
        let mut view = MapView { map, lagging: Default::default(), answered: Vec::new() };
        let mut asked: Vec<SocketAddr> = Vec::new();
        for entry in &view.map.entries {
            if asked.contains(&entry.addr) || view.answered.contains(&entry.addr.ip()) {
                continue;
            }
            asked.push(entry.addr);
            let Ok(text) = client.stats(entry.addr) else { continue };
            let Ok(stats) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            view.answered.push(entry.addr.ip());
            for l in stats["lagging"].as_array().into_iter().flatten() {
                let (Some(p), Some(addr), Some(lag)) = (
                    l["partition"].as_u64(),
                    l["addr"].as_str().and_then(|a| a.parse().ok()),
                    l["lag"].as_u64(),
                ) else {
                    continue;
                };
                view.lagging.insert((p as u32, addr), lag);
            }
        }
        Ok(view)
    }

    fn lag_of(&self, partition: u32, primary: SocketAddr, replica: SocketAddr) -> Option<u64> {
        self.answered
            .contains(&primary.ip())
            .then(|| self.lagging.get(&(partition, replica)).copied().unwrap_or(0))
    }

    fn json(&self) -> serde_json::Value {
        let partitions: Vec<serde_json::Value> = self
            .map
            .entries
            .iter()
            .map(|e| {
                let mut replicas = vec![
                    serde_json::json!({ "addr": e.addr.to_string(), "role": "primary", "lag": 0 }),
                ];
                replicas.extend(e.replicas.iter().map(|r| {
                    serde_json::json!({
                        "addr": r.addr.to_string(),
                        "role": role_name(r.role),
                        "lag": self.lag_of(e.partition, e.addr, r.addr),
                    })
                }));
                serde_json::json!({
                    "id": e.partition,
                    "range": [e.hash_start, e.hash_end],
                    "replicas": replicas,
                })
            })
            .collect();
        let map = &self.map;
        serde_json::json!({ "epoch": map.epoch, "cluster": map.cluster, "partitions": partitions })
    }

    fn print(&self) {
        let map = &self.map;
        println!(
            "map epoch {}, {} partitions, cluster {:#x}",
            map.epoch,
            map.entries.len(),
            map.cluster
        );
        for e in &map.entries {
            let mut line = format!(
                "  {:>6} {:#018x}..{:#018x} primary {}",
                e.partition, e.hash_start, e.hash_end, e.addr
            );
            for r in &e.replicas {
                let lag = self.lag_of(e.partition, e.addr, r.addr);
                let lag = lag.map_or("?".into(), |l| l.to_string());
                line.push_str(&format!(", {} {} (lag {lag})", role_name(r.role), r.addr));
            }
            println!("{line}");
        }
    }
}

fn role_name(role: proto::Role) -> &'static str {
    match role {
        proto::Role::Backup => "backup",
        proto::Role::Learner => "learner",
    }
}

/// `cradle map`: the partition map, with each replica's lag (see `MapView`).
pub(crate) fn map(servers: &Servers, json: bool) -> Result<ExitCode, String> {
    let mut client = servers.connect()?;
    let view = MapView::gather(&mut client)?;
    if json {
        println!("{}", view.json());
    } else {
        view.print();
    }
    Ok(ExitCode::SUCCESS)
}

/// `cradle import`: JSON lines from stdin; progress and the summary on stderr.
pub(crate) fn import(servers: &Servers) -> Result<ExitCode, String> {
    let mut client = servers.connect()?;
    let summary = crate::bulk::import(&mut client, std::io::stdin().lock())?;
    eprintln!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// `cradle export`: JSON lines on stdout; progress and the summary on stderr.
pub(crate) fn export(servers: &Servers) -> Result<ExitCode, String> {
    let mut client = servers.connect()?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let summary = crate::bulk::export(&mut client, &mut out)?;
    eprintln!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// `cradle keygen`: a key file line with a fresh secret from the system's random source.
pub(crate) fn keygen(id: u32, name: &str, role: &str) -> Result<ExitCode, String> {
    if proto::auth::Role::parse(role).is_none() {
        return Err(format!("role {role:?} is not one of read, write, admin"));
    }
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('#') {
        return Err(format!("the name {name:?} must be one word without '#'"));
    }
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut secret))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    println!("{id} {name} {role} {hex}");
    Ok(ExitCode::SUCCESS)
}
