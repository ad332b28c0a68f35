//! The deterministic simulation of cradle: the real sans-IO cores — the server's
//! `control::Core`s and the clients' `client::ClientCore`s — in one thread, over a seeded
//! network (loss, duplication, reordering by random delay), with a simulated clock and disks
//! that keep only what was synced when their node crashes. Clients run a mix of GET, PUT, CAS
//! and DELETE on a few keys with unique values; the history they saw is checked for
//! linearizability (`testkit::linearizability`), which also catches a write applied twice and
//! an acknowledged write lost.
//!
//! One seed, one run: every random choice comes from `testkit::Rng` seeded by it, nothing reads
//! a real clock, and nothing iterates a hash map. A failure prints its seed; the same seed
//! replays it exactly. Today it simulates one node of several cores; the cluster's nodes,
//! replication and the map group join it as they are built (issue #8).
//!
//! It must never use real I/O, real time or unseeded randomness, and never relax the checker.
#![forbid(unsafe_code)]

mod map_group;
mod node;
mod workload;

pub use map_group::{run_group, GroupOptions, GroupReport};

use client::{ClientConfig, ClientCore, Error, Reply, Request, RequestId};
use control::cluster::{ClusterSpec, Health};
use control::ReplicationConfig;
use node::Node;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use testkit::linearizability::{self, Answer, Call, Operation, Summary};
use testkit::Rng;
use workload::Workload;

/// What one simulation runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Serving cores of the node.
    pub cores: u32,
    /// Client processes, each with one operation in flight.
    pub clients: usize,
    /// Keys the clients share.
    pub keys: usize,
    /// Operations each client issues.
    pub operations_per_client: usize,
    /// Chance that a datagram is lost.
    pub loss: f64,
    /// Chance that a datagram arrives twice.
    pub duplicate: f64,
    /// One-way delay range, µs (a datagram delayed more than a later one arrives after it).
    pub delay_us: (u64, u64),
    /// How long the node runs between crashes, ms (none when `None`).
    pub up_ms: Option<(u64, u64)>,
    /// How long a crashed node stays down, ms (a restart inside the clients' resend window
    /// is what tests exactly-once across restarts).
    pub down_ms: (u64, u64),
    /// Rebuild completion records from the log at restart. `false` injects the bug #14 found
    /// (a resend after a restart applied again): the checker must catch it.
    pub rebuild_completions: bool,
    /// Keep completion records only this long (ns), instead of the clients' resend window
    /// and more. `Some(1)` injects a server that forgets every write at once, so a resend
    /// or a duplicated datagram is applied again: the checker must catch it.
    pub completion_ttl_ns: Option<u64>,
    /// Nodes. With more than one they form a cluster, run by its own agents (map group,
    /// heartbeats, failover): every partition has a replica on each of `replicas` nodes, and
    /// a node that fails (crashes, or is cut off from the other nodes but not from the
    /// clients) long enough leaves the map, a backup promoted where it was primary. A node
    /// that restarts or comes back rejoins: a learner its primaries build, then a backup.
    pub nodes: usize,
    /// Replicas per partition (at most `nodes`).
    pub replicas: usize,
    /// Nodes that join the cluster (`--join` through node 0) as it forms: outside the map
    /// group, failing and restarting like the others, given replicas where a partition is
    /// short of them.
    pub joiners: usize,
    /// Chance that a cluster failure cuts the node off instead of crashing it.
    pub isolation: f64,
    /// When the nodes answer writes (a crash of a `memory` node loses what its file had not
    /// synced: its replicas must cover it).
    pub durability: control::Durability,
    /// Primaries keep their lease far longer than a new primary waits before it serves (a
    /// lease that outlives the promotion wait): the injected bug the checker must catch (a
    /// cut-off old primary serves stale reads while the new one takes writes).
    pub stale_lease: bool,
    /// Every so often (ms, at random in the range) one node's health monitor changes its
    /// verdict (healthy, suspect or failing, at random): the leader hands its primaries to
    /// backups, drains it, or holds back (issue #10). None: every node stays healthy.
    pub health_every_ms: Option<(u64, u64)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            cores: 2,
            clients: 4,
            keys: 3,
            operations_per_client: 40,
            loss: 0.05,
            duplicate: 0.02,
            delay_us: (20, 400),
            up_ms: Some((5, 60)),
            down_ms: (1, 300),
            rebuild_completions: true,
            completion_ttl_ns: None,
            nodes: 1,
            replicas: 1,
            joiners: 0,
            isolation: 0.0,
            durability: control::Durability::Flushed,
            stale_lease: false,
            health_every_ms: None,
        }
    }
}

impl Options {
    /// A 3-node cluster at replication factor 3 with the default network, failures half
    /// crashes and half cut-off nodes.
    pub fn cluster() -> Options {
        Options {
            nodes: 3,
            replicas: 3,
            isolation: 0.5,
            up_ms: Some((80, 250)),
            down_ms: (1, 200),
            operations_per_client: 150,
            ..Options::default()
        }
    }
}

/// What a run did, to show it did something.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// What the checker covered.
    pub checked: Summary,
    /// Crashes (each followed by a restart).
    pub crashes: u64,
    /// Nodes cut off from the other nodes (each healed later).
    pub isolations: u64,
    /// Map changes after the first (each a failover), as the freshest node knows them.
    pub failovers: u64,
    /// Writes the backups still up applied from their primaries.
    pub replicated_records: u64,
    /// Catch-ups of learners that primaries still up began (failed nodes coming back).
    pub catchups: u64,
    /// Learners built on nodes still up that became in-sync backups.
    pub learners_joined: u64,
    /// Of the catch-ups, those built on the learner's own log (digests for what it kept).
    pub catchups_from_own_log: u64,
    /// Snapshot entries sent as digests.
    pub snapshot_digests: u64,
    /// Times a learner's own log disagreed with a digest (emptied, built whole).
    pub own_log_refused: u64,
    /// Endpoints still up that became primary after probing their backups.
    pub promotions: u64,
    /// Health verdicts changed (`Options::health_every_ms`).
    pub health_changes: u64,
    /// Times a failing node held no replica when its verdict changed again (drained, or
    /// failed over and given none back: learners are not placed on unhealthy nodes).
    pub drained: u64,
    /// Operations answered with an outcome.
    pub answered: u64,
    /// Operations that ended without one (counted as possibly applied).
    pub unknown: u64,
    /// Simulated time the run took.
    pub elapsed: Duration,
    /// Joiners the cluster admitted (as its freshest member knows them).
    pub joiners_admitted: u64,
    /// Joiners the freshest map places a replica on at the end.
    pub joiners_holding: u64,
}

/// A datagram in flight.
struct Packet {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

enum Event {
    Deliver(Packet),
    /// A failure of some node (single node: the node crashes).
    Failure,
    /// Node n restarts.
    Restart(usize),
    /// Node n is reachable by the other nodes again.
    Heal(usize),
    /// Some node's health verdict changes.
    Health,
    /// The kernel tells client `client` that `server` refused a datagram (a crashed node's
    /// port is closed: ICMP port unreachable).
    Refused {
        client: usize,
        server: SocketAddr,
    },
    Tick,
}

struct Client {
    core: ClientCore,
    addr: SocketAddr,
    workload: Workload,
    /// The operation in flight: its request id, its history entry so far.
    current: Option<(RequestId, Operation)>,
}

/// The seeds a test runs: the one `SIM_SEED` names (a replay), else `0..SIM_SEEDS`
/// (`default` when unset).
pub fn seeds_from_env(default: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        return vec![seed.parse().expect("SIM_SEED is a number")];
    }
    let count =
        std::env::var("SIM_SEEDS").map_or(default, |n| n.parse().expect("SIM_SEEDS is a number"));
    (0..count).collect()
}

/// Runs the simulation of `seed` and checks its history; the error says why it failed.
pub fn run(seed: u64, options: &Options) -> Result<Report, String> {
    Simulation::new(seed, options.clone()).run()
}

struct Simulation {
    options: Options,
    rng: Rng,
    /// Simulated time since the start, ns.
    now_ns: u64,
    /// What `Instant` the clients see at time 0.
    epoch: Instant,
    events: BTreeMap<(u64, u64), Event>,
    sequence: u64,
    nodes: Vec<Node>,
    /// Cut off from the other nodes (not from the clients).
    isolated: Vec<bool>,
    /// Each node's health verdict.
    health: Vec<Health>,
    clients: Vec<Client>,
    history: Vec<Operation>,
    report: Report,
}

/// Time 0 of the simulation on the wall clock the node stamps writes with.
const WALL_START_NS: u64 = 1_800_000_000_000_000_000;
/// How often an up node runs its batch-end work (group commit, sweeps) without traffic.
const TICK_NS: u64 = 1_000_000;
/// About when a simulated cluster first serves (election, placement, promotion wait).
const CLUSTER_FORMS_NS: u64 = 150_000_000;
/// A cluster's agents fail a member over after this much silence.
const DETECT_NS: u64 = 30_000_000;
/// How long the nodes keep completion records (the default is 5 s): short, so a learner's
/// wait of one TTL before it joins as a backup fits in a run. The clients' resend window
/// stays well inside it, as `ClientConfig::resend_window` requires.
pub(crate) const COMPLETION_TTL_NS: u64 = 400_000_000;
const CLIENT_RESEND_WINDOW: Duration = Duration::from_millis(250);
/// A run that has not finished by then is a liveness bug.
const RUN_NS_MAX: u64 = 600_000_000_000;

impl Simulation {
    fn new(seed: u64, options: Options) -> Simulation {
        let mut rng = Rng::from_seed(seed);
        assert!(options.replicas >= 1 && options.replicas <= options.nodes.min(5));
        let replication = (options.nodes > 1).then(|| {
            let key = control::peer::ClusterKey::from_file_bytes(&[7; 32]).expect("32 bytes");
            let mut config =
                ReplicationConfig { factor: options.replicas, ..ReplicationConfig::new(key) };
            if options.stale_lease {
                config.lease_ns = 100 * config.promotion_wait_ns; // the injected bug
            }
            config
        });
        let spec = |me: usize| {
            let key = control::peer::ClusterKey::from_file_bytes(&[7; 32]).expect("32 bytes");
            let joins = me >= options.nodes;
            let join =
                control::cluster::Join { via: node::core_addr(0, 0), addr: node::core_addr(me, 0) };
            ClusterSpec {
                members: match joins {
                    true => Vec::new(),
                    false => (0..options.nodes).map(|n| node::core_addr(n, 0)).collect(),
                },
                voters: options.nodes,
                me: if joins { 0 } else { me },
                join: joins.then_some(join),
                cores: options.cores,
                partitions: node::PARTITIONS,
                replicas: options.replicas,
                cluster_id: key.cluster_id(),
                key,
                detect_ns: DETECT_NS,
                tick_ns: ClusterSpec::tick_for(DETECT_NS),
                heartbeat_ns: 2_000_000,
            }
        };
        let nodes: Vec<Node> = (0..options.nodes + options.joiners)
            .map(|n| {
                let spec = (options.nodes > 1).then(|| spec(n));
                let mut node = Node::new(
                    n,
                    options.cores,
                    options.rebuild_completions,
                    replication.clone(),
                    spec,
                );
                node.durability = options.durability;
                node.completion_ttl_ns = options.completion_ttl_ns.unwrap_or(COMPLETION_TTL_NS);
                node
            })
            .collect();
        let servers: Vec<SocketAddr> = nodes.iter().flat_map(|n| n.addrs()).collect();
        let epoch = Instant::now(); // only ever offset by simulated time: no real time is read again
        let clients = (0..options.clients)
            .map(|i| {
                let mut config = ClientConfig::new(servers.clone());
                config.seed = rng.next_u64();
                config.resend_window = CLIENT_RESEND_WINDOW;
                Client {
                    core: ClientCore::new(config).expect("a valid client config"),
                    addr: SocketAddr::from(([127, 0, 1, 1 + i as u8], 5000)),
                    workload: Workload::new(
                        i as u64,
                        options.keys,
                        options.operations_per_client,
                        rng.next_u64(),
                    ),
                    current: None,
                }
            })
            .collect();
        let count = options.nodes + options.joiners;
        let mut sim = Simulation {
            options,
            rng,
            now_ns: 0,
            epoch,
            events: BTreeMap::new(),
            sequence: 0,
            nodes,
            isolated: vec![false; count],
            health: vec![Health::Healthy; count],
            clients,
            history: Vec::new(),
            report: Report::default(),
        };
        for n in 0..count {
            sim.nodes[n].start(WALL_START_NS);
        }
        if count > 1 {
            // A cluster serves once its map group elected a leader, placed the map and the
            // primaries waited out a lease: the first failure comes after that.
            sim.now_ns = CLUSTER_FORMS_NS;
            sim.schedule_crash();
            sim.now_ns = 0;
        } else {
            sim.schedule_crash();
        }
        sim.schedule(TICK_NS, Event::Tick);
        sim.schedule_health();
        sim
    }

    fn schedule(&mut self, after_ns: u64, event: Event) {
        self.sequence += 1;
        self.events.insert((self.now_ns + after_ns, self.sequence), event);
    }

    fn between(&mut self, (low, high): (u64, u64)) -> u64 {
        low + self.rng.below(high - low + 1)
    }

    fn schedule_crash(&mut self) {
        if let Some(up) = self.options.up_ms {
            let after = self.between(up) * 1_000_000;
            self.schedule(after, Event::Failure);
        }
    }

    fn schedule_health(&mut self) {
        if let Some(every) = self.options.health_every_ms {
            let after = self.between(every) * 1_000_000;
            self.schedule(after, Event::Health);
        }
    }

    /// One node's verdict changes: half the time back to healthy, else suspect or failing.
    fn change_health(&mut self) {
        let n = self.rng.below(self.nodes.len() as u64) as usize;
        let health = match self.rng.below(4) {
            0 | 1 => Health::Healthy,
            2 => Health::Suspect,
            _ => Health::Failing,
        };
        let holds = self.holders().contains(&n);
        if self.health[n] == Health::Failing && health != Health::Failing && !holds {
            self.report.drained += 1;
        }
        self.health[n] = health;
        self.nodes[n].set_health(health);
        self.report.health_changes += 1;
        self.schedule_health();
    }

    fn instant(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.now_ns)
    }

    fn run(mut self) -> Result<Report, String> {
        for i in 0..self.clients.len() {
            self.next_operation(i);
        }
        while !self.done() {
            if self.now_ns > RUN_NS_MAX {
                return Err(format!(
                    "not done after {} s of simulated time",
                    RUN_NS_MAX / 1_000_000_000
                ));
            }
            self.step();
        }
        self.read_every_key_quietly()?;
        self.report.elapsed = Duration::from_nanos(self.now_ns);
        for n in 0..self.nodes.len() {
            self.count_node(n);
        }
        // The first cluster map has epoch 2; each failover made one more.
        let freshest = self.nodes.iter().filter_map(|n| n.map()).map(|m| m.epoch).max();
        self.report.failovers = freshest.map_or(0, |epoch| epoch.saturating_sub(2));
        let members = self.nodes.iter().map(Node::members).max_by_key(Vec::len).unwrap_or_default();
        self.report.joiners_admitted = members.len().saturating_sub(self.options.nodes) as u64;
        let holders = self.holders();
        self.report.joiners_holding =
            holders.iter().filter(|&&n| n >= self.options.nodes).count() as u64;
        let checked =
            linearizability::check(&self.history).map_err(|failure| failure.to_string())?;
        self.report.checked = checked;
        Ok(self.report)
    }

    /// No more crashes; once the node is up, one client reads every key: an acknowledged
    /// write lost shows even if no read happened to follow it during the run.
    fn read_every_key_quietly(&mut self) -> Result<(), String> {
        self.options.up_ms = None;
        self.events.retain(|_, event| !matches!(event, Event::Failure | Event::Health));
        while self.events.values().any(|e| matches!(e, Event::Restart(_) | Event::Heal(_))) {
            self.step();
        }
        self.clients[0].workload.read_all();
        self.next_operation(0);
        while !self.done() {
            if self.now_ns > RUN_NS_MAX {
                return Err("the final reads did not finish".into());
            }
            self.step();
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.clients.iter().all(|c| c.current.is_none() && c.workload.finished())
    }

    /// Advances to the next event or client timer and handles it.
    fn step(&mut self) {
        let timer = self
            .clients
            .iter()
            .filter_map(|c| c.core.poll_timeout())
            .min()
            .map(|at| at.saturating_duration_since(self.epoch).as_nanos() as u64);
        let event = self.events.first_key_value().map(|(&(at, _), _)| at);
        match (timer, event) {
            (Some(t), Some(e)) if t < e => self.fire_timers(t),
            (Some(t), None) => self.fire_timers(t),
            (_, Some(_)) => {
                let ((at, _), event) = self.events.pop_first().expect("an event");
                self.now_ns = self.now_ns.max(at);
                self.handle(event);
            }
            (None, None) => unreachable!("a simulation with work left has a timer or an event"),
        }
    }

    fn fire_timers(&mut self, at_ns: u64) {
        self.now_ns = self.now_ns.max(at_ns);
        let now = self.instant();
        for i in 0..self.clients.len() {
            if self.clients[i].core.poll_timeout().is_some_and(|t| t <= now) {
                self.clients[i].core.handle_timeout(now);
                self.after_client(i);
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver(packet) => self.deliver(packet),
            Event::Failure => self.fail_a_node(),
            Event::Restart(n) => {
                self.nodes[n].start(WALL_START_NS + self.now_ns);
                self.schedule_crash();
            }
            Event::Heal(n) => {
                self.isolated[n] = false;
                self.schedule_crash();
            }
            Event::Health => self.change_health(),
            Event::Refused { client, server } => {
                let now = self.instant();
                self.clients[client].core.handle_refused(now, server);
                self.after_client(client);
            }
            Event::Tick => {
                for n in 0..self.nodes.len() {
                    let sent = self.nodes[n].tick(self.now_ns);
                    self.send_all(sent);
                }
                self.schedule(TICK_NS, Event::Tick);
            }
        }
    }

    fn deliver(&mut self, packet: Packet) {
        if let Some(i) = self.clients.iter().position(|c| c.addr == packet.to) {
            let now = self.instant();
            self.clients[i].core.handle_datagram(now, packet.from, &packet.bytes);
            self.after_client(i);
        } else if let Some(n) = self.nodes.iter().position(|node| node.owns(packet.to)) {
            let client = self.clients.iter().position(|c| c.addr == packet.from);
            if let (false, Some(client)) = (self.nodes[n].is_up(), client) {
                // (Like the datagram, the ICMP error may be lost; it takes the way back.)
                if !self.rng.chance(self.options.loss) {
                    let delay = self.between(self.options.delay_us) * 1_000;
                    self.schedule(delay, Event::Refused { client, server: packet.to });
                }
                return;
            }
            let between_nodes = node_of(packet.from).is_some();
            let cut = between_nodes
                && (self.isolated[n] || node_of(packet.from).is_some_and(|m| self.isolated[m]));
            if cut {
                return;
            }
            let sent = self.nodes[n].receive(self.now_ns, packet.from, packet.to, &packet.bytes);
            self.send_all(sent);
        }
    }

    /// Adds what node `n`'s cores counted to the report.
    fn count_node(&mut self, n: usize) {
        for c in self.nodes[n].counters() {
            self.report.replicated_records += c.replicated_records;
            self.report.promotions += c.promotions;
            self.report.catchups += c.catchups_started;
            self.report.learners_joined += c.learners_joined;
            self.report.catchups_from_own_log += c.catchups_from_own_log;
            self.report.snapshot_digests += c.snapshot_digests;
            self.report.own_log_refused += c.own_log_refused;
        }
    }

    /// A single node crashes; in a cluster, a node that holds replicas crashes or is cut off
    /// from the other nodes, unless it is the last one that does.
    fn fail_a_node(&mut self) {
        let down = self.between(self.options.down_ms) * 1_000_000;
        if self.nodes.len() == 1 {
            self.nodes[0].crash();
            self.report.crashes += 1;
            return self.schedule(down, Event::Restart(0));
        }
        // One node fails at a time (the next failure comes after its restart or heal), so
        // the map group keeps a majority; the last node holding replicas never fails.
        let holders = self.holders();
        let n = self.rng.below(self.nodes.len() as u64) as usize;
        if holders.len() <= 1 && holders.contains(&n) {
            return self.schedule_crash();
        }
        if self.rng.chance(self.options.isolation) {
            self.isolated[n] = true;
            self.report.isolations += 1;
            self.schedule(down, Event::Heal(n));
        } else {
            self.count_node(n); // (its counters die with it)
            self.nodes[n].crash();
            self.report.crashes += 1;
            self.schedule(down, Event::Restart(n));
        }
    }

    /// The nodes the freshest map any node serves by places a replica on.
    fn holders(&self) -> Vec<usize> {
        let freshest = self.nodes.iter().filter_map(Node::map).max_by_key(|m| m.epoch);
        (0..self.nodes.len())
            .filter(|&n| {
                freshest.as_ref().is_some_and(|map| {
                    map.entries.iter().any(|e| {
                        node_of(e.addr) == Some(n)
                            || e.replicas.iter().any(|r| node_of(r.addr) == Some(n))
                    })
                })
            })
            .collect()
    }

    /// What a client wants sent, and what it completed.
    fn after_client(&mut self, i: usize) {
        let mut out = Vec::new();
        while let Some((to, bytes)) = self.clients[i].core.poll_transmit() {
            out.push(Packet { from: self.clients[i].addr, to, bytes });
        }
        self.send_all(out);
        while let Some((id, result)) = self.clients[i].core.poll_completion() {
            self.complete(i, id, result);
        }
    }

    fn complete(&mut self, i: usize, id: RequestId, result: Result<Reply, Error>) {
        let client = &mut self.clients[i];
        let Some((current, mut operation)) = client.current.take() else {
            panic!("client {i} completed {id:?} with nothing in flight")
        };
        assert_eq!(current, id, "client {i}: one request in flight");
        operation.returned = Duration::from_nanos(self.now_ns);
        operation.answer = answer_of(&operation.call, result);
        if let Some(version) = version_seen(&operation.answer) {
            client.workload.saw(&operation.key, version);
        }
        if operation.answer == Answer::Unknown {
            self.report.unknown += 1;
        } else {
            self.report.answered += 1;
        }
        self.history.push(operation);
        self.next_operation(i);
    }

    fn next_operation(&mut self, i: usize) {
        let now = self.instant();
        let client = &mut self.clients[i];
        let Some((key, call)) = client.workload.next() else { return };
        let request = match &call {
            Call::Get => Request::Get { key: key.clone() },
            Call::Put { value } => Request::Put { key: key.clone(), value: value.clone() },
            Call::Cas { expected_version, value } => Request::Cas {
                key: key.clone(),
                expected_version: *expected_version,
                value: value.clone(),
            },
            Call::Delete => Request::Delete { key: key.clone() },
        };
        let id = client.core.submit(now, request);
        let invoked = Duration::from_nanos(self.now_ns);
        let operation = Operation {
            client: i as u64,
            key,
            call,
            answer: Answer::Unknown,
            invoked,
            returned: invoked,
        };
        client.current = Some((id, operation));
        self.after_client(i);
    }

    /// Puts datagrams on the network: each may be lost, duplicated, and is delayed at random.
    fn send_all(&mut self, packets: Vec<Packet>) {
        for packet in packets {
            if self.rng.chance(self.options.loss) {
                continue;
            }
            let copies = if self.rng.chance(self.options.duplicate) { 2 } else { 1 };
            for _ in 0..copies {
                let delay = self.between(self.options.delay_us) * 1_000;
                let copy = Packet { from: packet.from, to: packet.to, bytes: packet.bytes.clone() };
                self.schedule(delay, Event::Deliver(copy));
            }
        }
    }
}

/// The node of a core address (127.0.0.(n + 1)); clients live on 127.0.1.x.
fn node_of(addr: SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(v4) if v4.ip().octets()[..3] == [127, 0, 0] => {
            Some(v4.ip().octets()[3] as usize - 1)
        }
        _ => None,
    }
}

/// The key's version an answer tells (what a CAS after it should expect).
fn version_seen(answer: &Answer) -> Option<u64> {
    match answer {
        Answer::Read(read) => Some(read.as_ref().map_or(0, |(_, v)| *v)),
        Answer::Written { version } | Answer::Swapped { version } => Some(*version),
        Answer::Mismatch { current_version } => Some(*current_version),
        Answer::Deleted { .. } => Some(0),
        Answer::Unknown => None,
    }
}

/// What a client's result says about its operation. Only an answer that names the outcome
/// counts; any error may hide an applied write (a timeout, a refusal after a retry).
fn answer_of(call: &Call, result: Result<Reply, Error>) -> Answer {
    use proto::Status;
    let Ok(reply) = result else { return Answer::Unknown };
    match (call, reply.status) {
        (Call::Get, Status::Ok) => Answer::Read(Some((reply.value, reply.version))),
        (Call::Get, Status::NotFound) => Answer::Read(None),
        (Call::Put { .. }, Status::Ok) => Answer::Written { version: reply.version },
        (Call::Cas { .. }, Status::Ok) => Answer::Swapped { version: reply.version },
        (Call::Cas { .. }, Status::VersionMismatch) => {
            Answer::Mismatch { current_version: reply.version }
        }
        (Call::Cas { .. }, Status::NotFound) => Answer::Mismatch { current_version: 0 },
        (Call::Delete, Status::Ok) => Answer::Deleted { existed: true },
        (Call::Delete, Status::NotFound) => Answer::Deleted { existed: false },
        _ => Answer::Unknown,
    }
}
