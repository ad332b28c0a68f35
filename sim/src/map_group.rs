//! The map group simulated: members of `control::map_group` over a seeded network that loses,
//! duplicates and delays messages and cuts links (both ways or one way), members that crash
//! and restart on the disk they had, and clients that propose compare-and-set changes of the
//! map. The clients' history is checked for linearizability (the map is one versioned
//! register: a change is a CAS on its epoch), every member's copy of an epoch must be the same
//! bytes, and once the network heals and every member is up, a change must go through.
//!
//! Every message travels in the authenticated node-to-node envelope (`control::peer`), and an
//! attacker on the network plays delivered datagrams again, flips their bits, and seals its
//! own with another cluster's key: any of those that opens fails the run.

use control::map_group::{MapDisk, MapGroup, MapOutcome, ProposalId};
use control::peer::{ClusterKey, PeerKind, PeerOpener, PeerSealer};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use storage::{MemoryVolume, Volume};
use testkit::linearizability::{self, Answer, Call, Operation, Summary};
use testkit::Rng;

/// What one run of the map group does.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// Members (ids 1..=members).
    pub members: u64,
    /// Clients proposing changes, one at a time each.
    pub clients: u64,
    /// Changes each client proposes.
    pub changes_per_client: u64,
    /// Chance a message is lost.
    pub loss: f64,
    /// Chance a message arrives twice.
    pub duplicate: f64,
    /// One-way delay range, ms.
    pub delay_ms: (u64, u64),
    /// Chance, per 100 ms, that a link between two members is cut (for 0.1–2 s), one way
    /// half the time.
    pub cut: f64,
    /// Chance, per 100 ms, that an up member crashes (down for 10 ms–1 s).
    pub crash: f64,
    /// Chance, per tick, that the attacker sends a forged, replayed or foreign datagram.
    pub attack: f64,
}

impl Default for GroupOptions {
    fn default() -> GroupOptions {
        GroupOptions {
            members: 3,
            clients: 3,
            changes_per_client: 8,
            loss: 0.05,
            duplicate: 0.02,
            delay_ms: (1, 8),
            cut: 0.05,
            crash: 0.03,
            attack: 0.2,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupReport {
    /// What the checker covered.
    pub checked: Summary,
    /// Changes applied (the final epoch).
    pub epoch: u64,
    /// Member crashes.
    pub crashes: u64,
    /// Links cut.
    pub cuts: u64,
    /// Datagrams the attacker delivered (every one refused, or the run fails).
    pub attacks: u64,
}

const TICK_MS: u64 = 10;
/// How long a client waits for an outcome before it counts its change as unknown.
const PATIENCE_MS: u64 = 1_500;
/// Simulated time after which the network heals for good and everyone comes back.
const CHAOS_MS: u64 = 20_000;
/// After healing, the group must make a change within this.
const RECOVERY_MS: u64 = 10_000;

/// What the attacker sent, and so what the receiver must do with it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// Not an attack.
    None,
    /// Forged or foreign: must be refused.
    Forged,
    /// A delivered datagram again: refused unless the receiver restarted since the start
    /// recorded here (then its windows are gone; see `control::peer`).
    Replay { receiver_start: u64 },
}

enum Event {
    /// A datagram arrives.
    Deliver {
        to: u64,
        bytes: Vec<u8>,
        attack: Attack,
    },
    Restart(u64),
    Heal(u64, u64),
}

struct Client {
    /// The change in flight: proposed at this member, its id there, its history entry, and
    /// when it was proposed (ms).
    current: Option<(u64, ProposalId, Operation, u64)>,
    issued: u64,
}

/// Runs seed `seed` of the map group; the error says what failed.
pub fn run_group(seed: u64, options: &GroupOptions) -> Result<GroupReport, String> {
    GroupSim::new(seed, options.clone()).run().map_err(|why| format!("seed {seed}: {why}"))
}

struct GroupSim {
    options: GroupOptions,
    rng: Rng,
    now_us: u64,
    /// Each member's volume: its Raft journal there survives a crash as far as it was synced.
    volumes: Vec<MemoryVolume>,
    /// Each member, with its envelope (a restart forgets the opener's windows).
    members: Vec<Option<(MapGroup, PeerSealer, PeerOpener)>>,
    /// Datagrams delivered and opened, (receiver, its start then, bytes): what the attacker
    /// replays.
    captured: Vec<(u64, u64, Vec<u8>)>,
    /// When each member last started (wall clock, ns).
    started: Vec<u64>,
    /// Links cut, (from, to).
    cut: BTreeSet<(u64, u64)>,
    events: BTreeMap<(u64, u64), Event>,
    sequence: u64,
    clients: Vec<Client>,
    history: Vec<Operation>,
    /// The map of every epoch any member applied: all copies must agree.
    applied: BTreeMap<u64, Vec<u8>>,
    report: GroupReport,
}

impl GroupSim {
    fn new(seed: u64, options: GroupOptions) -> GroupSim {
        let ids: Vec<u64> = (1..=options.members).collect();
        let volumes: Vec<MemoryVolume> =
            ids.iter().map(|id| MemoryVolume::new(&format!("member-{id}"))).collect();
        for volume in &volumes {
            let device = volume.create(JOURNAL, 0).expect("memory creates");
            MapDisk::create(device, &ids).expect("memory writes");
        }
        let clients = (0..options.clients).map(|_| Client { current: None, issued: 0 }).collect();
        let mut sim = GroupSim {
            rng: Rng::from_seed(seed),
            now_us: 0,
            members: ids.iter().map(|_| None).collect(),
            volumes,
            cut: BTreeSet::new(),
            captured: Vec::new(),
            started: Vec::new(),
            events: BTreeMap::new(),
            sequence: 0,
            clients,
            history: Vec::new(),
            applied: BTreeMap::new(),
            report: GroupReport::default(),
            options,
        };
        for id in ids {
            sim.start(id).expect("a fresh member starts");
        }
        sim
    }

    fn start(&mut self, id: u64) -> Result<(), String> {
        let volume = &self.volumes[id as usize - 1];
        let device = volume.open(JOURNAL).map_err(|e| e.to_string())?;
        let disk = MapDisk::open(device).map_err(|e| format!("member {id}'s journal: {e}"))?;
        let member = MapGroup::start(id, &disk, b"initial".to_vec()).map_err(|e| e.to_string())?;
        let incarnation = self.wall_ns();
        self.started.resize(self.options.members as usize, 0);
        self.started[id as usize - 1] = incarnation;
        let sealer = PeerSealer::new(cluster_key(), id, incarnation);
        let opener = PeerOpener::new(cluster_key(), id);
        self.members[id as usize - 1] = Some((member, sealer, opener));
        Ok(())
    }

    /// The wall clock the envelopes carry.
    fn wall_ns(&self) -> u64 {
        WALL_START_NS + self.now_us * 1000
    }

    /// Opens a datagram for member `to` and hands its payload to the member.
    fn arrive(&mut self, to: u64, bytes: Vec<u8>, attack: Attack) -> Result<(), String> {
        let now = self.wall_ns();
        let must_refuse = match attack {
            Attack::None => false,
            Attack::Forged => true,
            Attack::Replay { receiver_start } => receiver_start == self.started[to as usize - 1],
        };
        let Some((member, _, opener)) = &mut self.members[to as usize - 1] else { return Ok(()) };
        match opener.open(now, &bytes) {
            Ok(_) if must_refuse => Err(format!("member {to} accepted an attacker's datagram")),
            Ok(opened) => {
                if opened.kind != PeerKind::MapGroup {
                    return Err("a datagram of the wrong kind".into());
                }
                member.handle_message(opened.payload).map_err(|e| e.to_string())?;
                let capture = (to, self.started[to as usize - 1], bytes);
                if self.captured.len() < 256 {
                    self.captured.push(capture);
                } else {
                    let i = self.rng.below(256) as usize;
                    self.captured[i] = capture;
                }
                Ok(())
            }
            Err(_) => Ok(()), // counted by the opener
        }
    }

    /// The attacker's move: a delivered datagram again, one with a bit flipped, or one sealed
    /// with another cluster's key, to a member.
    fn attack(&mut self) {
        if self.captured.is_empty() || !self.rng.chance(self.options.attack) {
            return;
        }
        let pick = self.rng.below(self.captured.len() as u64) as usize;
        let (to, receiver_start, mut bytes) = self.captured[pick].clone();
        let mut attack = Attack::Forged;
        match self.rng.below(3) {
            // A receiver that restarted since forgot its windows: a capture younger than the
            // envelope's freshness bound opens once more there (documented in
            // `control::peer`); the payload protocols take a duplicate.
            0 => attack = Attack::Replay { receiver_start },
            1 => {
                let bit = self.rng.below(bytes.len() as u64 * 8);
                bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
            }
            _ => {
                let foreign = ClusterKey::from_file_bytes(&[0xee; 32]).expect("32 bytes");
                let from = 1 + (to % self.options.members);
                let mut sealer = PeerSealer::new(foreign, from, self.wall_ns());
                sealer.seal(to, PeerKind::MapGroup, self.wall_ns(), b"forged", &mut bytes);
            }
        }
        self.report.attacks += 1;
        let at = self.now_us + 500;
        self.schedule(at, Event::Deliver { to, bytes, attack });
    }

    fn schedule(&mut self, at_us: u64, event: Event) {
        self.sequence += 1;
        self.events.insert((at_us, self.sequence), event);
    }

    fn run(mut self) -> Result<GroupReport, String> {
        loop {
            let next_tick = (self.now_us / 1000 / TICK_MS + 1) * TICK_MS * 1000;
            self.deliver_until(next_tick)?;
            self.now_us = next_tick;
            let now_ms = self.now_us / 1000;
            if now_ms == CHAOS_MS {
                self.heal()?;
            }
            if now_ms > CHAOS_MS + RECOVERY_MS {
                return Err(format!("no change went through {RECOVERY_MS} ms after healing"));
            }
            for (member, _, _) in self.members.iter_mut().flatten() {
                member.tick();
            }
            self.attack();
            if now_ms < CHAOS_MS && now_ms.is_multiple_of(100) {
                self.strike();
            }
            for c in 0..self.clients.len() {
                self.client_step(c);
            }
            self.check_copies()?;
            self.transmit();
            let settled = self.clients.iter().all(|c| c.current.is_none());
            if now_ms > CHAOS_MS && settled && change_after(&self.history, CHAOS_MS) {
                break;
            }
        }
        self.report.checked = linearizability::check(&self.history).map_err(|f| f.to_string())?;
        Ok(self.report)
    }

    /// Handles the events due before `until_us` (members take no time argument: arrival order
    /// is what the delays decide).
    fn deliver_until(&mut self, until_us: u64) -> Result<(), String> {
        while let Some(entry) = self.events.first_entry() {
            if entry.key().0 >= until_us {
                return Ok(());
            }
            match entry.remove() {
                Event::Deliver { to, bytes, attack } => self.arrive(to, bytes, attack)?,
                Event::Restart(id) => self.start(id)?,
                Event::Heal(a, b) => {
                    self.cut.remove(&(a, b));
                }
            }
        }
        Ok(())
    }

    /// The network heals for good and every member comes back.
    fn heal(&mut self) -> Result<(), String> {
        self.cut.clear();
        for id in 1..=self.options.members {
            if self.members[id as usize - 1].is_none() {
                self.start(id)?;
            }
        }
        Ok(())
    }

    /// Cuts links and crashes members at random.
    fn strike(&mut self) {
        let members = self.options.members;
        for a in 1..=members {
            for b in (1..=members).filter(|&b| b != a) {
                if self.rng.chance(self.options.cut) {
                    self.report.cuts += 1;
                    let heal = self.now_us + (100 + self.rng.below(1_900)) * 1000;
                    let mut links = vec![(a, b)];
                    if self.rng.chance(0.5) {
                        links.push((b, a));
                    }
                    for (from, to) in links {
                        self.cut.insert((from, to));
                        self.schedule(heal, Event::Heal(from, to));
                    }
                }
            }
            if self.members[a as usize - 1].is_some() && self.rng.chance(self.options.crash) {
                self.report.crashes += 1;
                self.members[a as usize - 1] = None;
                let back = self.now_us + (10 + self.rng.below(990)) * 1000;
                self.schedule(back, Event::Restart(a));
            }
        }
    }

    /// A client collects its change's outcome or gives up on it, then may propose another:
    /// during the chaos its share, after it until one change invoked after the healing won.
    fn client_step(&mut self, c: usize) {
        let now_ms = self.now_us / 1000;
        if let Some((at, id, mut op, since_ms)) = self.clients[c].current.take() {
            op.returned = Duration::from_micros(self.now_us);
            op.answer = match self.outcome_of(at, id) {
                Some(MapOutcome::Changed { epoch }) => Answer::Swapped { version: epoch },
                Some(MapOutcome::Stale { epoch }) => Answer::Mismatch { current_version: epoch },
                None if now_ms - since_ms < PATIENCE_MS => {
                    self.clients[c].current = Some((at, id, op, since_ms));
                    return;
                }
                None => Answer::Unknown,
            };
            self.history.push(op);
        }
        let chaos = now_ms < CHAOS_MS;
        let share_left = chaos && self.clients[c].issued < self.options.changes_per_client;
        let recovering = !chaos && !change_after(&self.history, CHAOS_MS);
        if share_left || recovering {
            self.propose(c);
        }
    }

    /// The outcome member `at` holds for proposal `id` (other outcomes are dropped: only the
    /// client that proposed there waits, one change at a time).
    fn outcome_of(&mut self, at: u64, id: ProposalId) -> Option<MapOutcome> {
        let (member, _, _) = self.members[at as usize - 1].as_mut()?;
        let mut found = None;
        while let Some((got, outcome)) = member.poll_outcome() {
            if got == id {
                found = Some(outcome);
            }
        }
        found
    }

    /// Proposes a change decided from a random member's copy (possibly stale), at that member.
    fn propose(&mut self, c: usize) {
        let at = 1 + self.rng.below(self.options.members);
        let Some((member, _, _)) = self.members[at as usize - 1].as_mut() else { return };
        let seen = member.map().0;
        let value = format!("client {c} change {}", self.clients[c].issued).into_bytes();
        let Ok(id) = member.propose(seen, value.clone()) else { return };
        self.clients[c].issued += 1;
        let now = Duration::from_micros(self.now_us);
        let op = Operation {
            client: c as u64,
            key: b"map".to_vec(),
            call: Call::Cas { expected_version: seen, value },
            answer: Answer::Unknown,
            invoked: now,
            returned: now,
        };
        self.clients[c].current = Some((at, id, op, self.now_us / 1000));
    }

    /// Every copy of an epoch must be the same map.
    fn check_copies(&mut self) -> Result<(), String> {
        for (member, _, _) in self.members.iter().flatten() {
            let (epoch, map) = member.map();
            if epoch > 0 {
                let first = self.applied.entry(epoch).or_insert_with(|| map.to_vec());
                if first != map {
                    return Err(format!("two maps at epoch {epoch}"));
                }
            }
        }
        self.report.epoch = self.applied.keys().next_back().copied().unwrap_or(0);
        Ok(())
    }

    /// The members' messages, through the network: cut links and losses drop them, some
    /// arrive twice, each after a random delay.
    fn transmit(&mut self) {
        let mut out = Vec::new();
        let now = WALL_START_NS + self.now_us * 1000;
        for (from, member) in (1u64..).zip(&mut self.members) {
            let Some((member, sealer, _)) = member else { continue };
            while let Some((to, payload)) = member.poll_transmit() {
                let mut bytes = Vec::new();
                sealer.seal(to, PeerKind::MapGroup, now, &payload, &mut bytes);
                out.push((from, to, bytes));
            }
        }
        let (low, high) = self.options.delay_ms;
        for (from, to, bytes) in out {
            if self.cut.contains(&(from, to)) || self.rng.chance(self.options.loss) {
                continue;
            }
            let copies = if self.rng.chance(self.options.duplicate) { 2 } else { 1 };
            for _ in 0..copies {
                let delay_us = (low + self.rng.below(high - low + 1)) * 1000 + self.rng.below(1000);
                let bytes = bytes.clone();
                self.schedule(
                    self.now_us + delay_us,
                    Event::Deliver { to, bytes, attack: Attack::None },
                );
            }
        }
    }
}

/// The member's Raft journal on its volume.
const JOURNAL: &str = "map-group.journal";

/// Wall-clock time at the simulation's start (envelopes carry wall-clock times).
const WALL_START_NS: u64 = 1_800_000_000_000_000_000;

fn cluster_key() -> ClusterKey {
    ClusterKey::from_file_bytes(b"the simulated cluster's 32-byte key file").expect("long enough")
}

/// Whether a change invoked after `ms` went through (liveness once healed).
fn change_after(history: &[Operation], ms: u64) -> bool {
    history.iter().any(|op| {
        op.invoked >= Duration::from_millis(ms) && matches!(op.answer, Answer::Swapped { .. })
    })
}
