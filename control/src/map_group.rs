//! The partition map's consensus: a few member nodes (3 or 5) replicate the map through Raft
//! (raft-rs, `tick`/`step`/`ready`/`advance`: sans-IO like the rest of cradle). The replicated
//! state is one versioned value: the encoded map and its epoch. The one command is a
//! compare-and-set on the epoch, so two changes decided from the same map cannot both win.
//!
//! A `MapGroup` is one member. Events in: `tick`, `handle_message`, `propose`; actions out:
//! `poll_transmit` (Raft messages to other members, already encoded), `poll_outcome` (what
//! became of the proposals made here). Its Raft log lives in a `MapDisk` that outlives the
//! member (a crash loses only what raft-rs had not handed over for persisting); the state is
//! rebuilt at start by applying the committed log again.
//!
//! Replays are exact: raft-rs draws election timeouts from `thread_rng` in
//! `[min_election_tick, max_election_tick)`, so each member gets a range one tick wide (its own
//! tick count, `ELECTION_TICKS + 4·(id − 1)`, so members do not time out together), while the
//! base `election_tick` (how long a member that heard a leader refuses to vote) is
//! `ELECTION_TICKS` for all.

use crate::config::ConfigError;
use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, Message};
use raft::storage::MemStorage;

mod disk;
pub use disk::MapDisk;
use raft::{Config, RawNode, StateRole};
use std::collections::{BTreeSet, VecDeque};

/// A proposal's identity: who proposed it, in which of its lives, its number there. The
/// incarnation matters: an entry proposed before a crash may commit after the restart, and
/// must not be taken for a new proposal with the same number (found by the simulation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId {
    /// The proposing member.
    pub member: u64,
    /// Its start count when it proposed (`MapDisk` counts the starts).
    pub incarnation: u64,
    /// Its proposal number in that incarnation.
    pub sequence: u64,
}

/// What became of a proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOutcome {
    /// The map was replaced; its epoch is now this.
    Changed {
        /// The new epoch (the expected one + 1).
        epoch: u64,
    },
    /// The epoch was not the expected one: nothing changed.
    Stale {
        /// The epoch when the proposal was applied.
        epoch: u64,
    },
}

/// One member of the map group.
pub struct MapGroup {
    id: u64,
    incarnation: u64,
    disk: MapDisk,
    node: RawNode<MemStorage>,
    epoch: u64,
    map: Vec<u8>,
    next_proposal: u64,
    /// Proposals made here and not applied yet.
    pending: BTreeSet<ProposalId>,
    outbox: VecDeque<(u64, Vec<u8>)>,
    outcomes: VecDeque<(ProposalId, MapOutcome)>,
}

impl std::fmt::Debug for MapGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapGroup").field("id", &self.id).field("epoch", &self.epoch).finish()
    }
}

/// Ticks without a leader's word before a member campaigns: `ELECTION_TICKS + 4·(id − 1)`
/// (a cluster's tick is a twentieth of its failure detection, see `ClusterSpec::tick_for`:
/// member 2 campaigns after 0.8 of it, so a dead leader is replaced by the time the new
/// one may fail it over; 4 ticks apart, members 2 and 3 did not time out together, while 2
/// ticks apart they sometimes did and split the vote).
pub const ELECTION_TICKS: usize = 12;
/// Ticks in a cluster's failure detection period.
pub const DETECTION_TICKS: u64 = 20;
/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 3;

impl MapGroup {
    /// Starts member `id` on `disk`, replaying its committed log; the map is `initial` at
    /// epoch 0 until a change is applied.
    pub fn start(id: u64, disk: &MapDisk, initial: Vec<u8>) -> Result<MapGroup, ConfigError> {
        let election = ELECTION_TICKS + 4 * (id as usize).saturating_sub(1);
        let config = Config {
            id,
            // Every member's vote is free again ELECTION_TICKS after it last heard the
            // leader (raft-rs's lease under check_quorum), sooner than any member campaigns:
            // the first to campaign after a leader's death wins at once. (With the lease as
            // long as each member's own timeout, member 2's first campaign came before member
            // 3 would vote, and the election took two of member 2's timeouts.)
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            min_election_tick: election,
            max_election_tick: election + 1,
            check_quorum: true,
            pre_vote: true,
            // Fits a datagram with room for the MAC and header (maps travel as few entries).
            max_size_per_msg: 1024,
            max_inflight_msgs: 64,
            applied: 1, // the bootstrap snapshot; the log after it is applied again
            ..Config::default()
        };
        config.validate().map_err(|e| ConfigError(format!("map group member {id}: {e}")))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = RawNode::new(&config, disk.storage.clone(), &logger)
            .map_err(|e| ConfigError(format!("map group member {id}: {e}")))?;
        let incarnation =
            disk.start().map_err(|e| ConfigError(format!("map group member {id}: {e}")))?;
        let mut member = MapGroup {
            id,
            incarnation,
            disk: disk.clone(),
            node,
            epoch: 0,
            map: initial,
            next_proposal: 0,
            pending: BTreeSet::new(),
            outbox: VecDeque::new(),
            outcomes: VecDeque::new(),
        };
        member.on_ready();
        Ok(member)
    }

    /// One tick of the group's clock (the caller decides how long one is).
    pub fn tick(&mut self) {
        self.node.tick();
        self.on_ready();
    }

    /// A Raft message from another member. A datagram that does not decode is an error and
    /// changes nothing (the transport authenticates datagrams before this parses them).
    pub fn handle_message(&mut self, bytes: &[u8]) -> Result<(), ConfigError> {
        let message = Message::parse_from_bytes(bytes)
            .map_err(|e| ConfigError(format!("undecodable map group message: {e}")))?;
        // An error here is a message raft-rs refuses (stale, or from a removed member).
        let _ = self.node.step(message);
        self.on_ready();
        Ok(())
    }

    /// Proposes replacing the map with `map` if its epoch is still `expected_epoch`. The
    /// outcome comes from `poll_outcome` once the change is applied here; a proposal may also
    /// be lost (no leader, a crash): then no outcome comes and it may or may not be applied.
    pub fn propose(
        &mut self,
        expected_epoch: u64,
        map: Vec<u8>,
    ) -> Result<ProposalId, ConfigError> {
        self.next_proposal += 1;
        let id = ProposalId {
            member: self.id,
            incarnation: self.incarnation,
            sequence: self.next_proposal,
        };
        let command = encode_command(id, expected_epoch, &map);
        self.node
            .propose(Vec::new(), command)
            .map_err(|e| ConfigError(format!("map change not proposed: {e}")))?;
        self.pending.insert(id);
        self.on_ready();
        Ok(id)
    }

    /// The next Raft message to send: (member id, bytes).
    pub fn poll_transmit(&mut self) -> Option<(u64, Vec<u8>)> {
        self.outbox.pop_front()
    }

    /// The next outcome of a proposal made here.
    pub fn poll_outcome(&mut self) -> Option<(ProposalId, MapOutcome)> {
        self.outcomes.pop_front()
    }

    /// This member's copy of the map and its epoch (may lag the group's).
    pub fn map(&self) -> (u64, &[u8]) {
        (self.epoch, &self.map)
    }

    /// The leader this member knows of.
    pub fn leader(&self) -> Option<u64> {
        let leader = self.node.raft.leader_id;
        (leader != raft::INVALID_ID).then_some(leader)
    }

    /// Whether this member leads.
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// Handles what raft-rs is ready with, in the order its docs demand (tikv/raft-rs#392,
    /// #506): messages a leader may send before persisting; committed entries; persisting new
    /// entries and the hard state; messages that had to wait for the persist; then the light
    /// ready's commit index, messages and committed entries.
    fn on_ready(&mut self) {
        while self.node.has_ready() {
            let mut ready = self.node.ready();
            self.send(ready.take_messages());
            assert!(ready.snapshot().is_empty(), "the map group sends no snapshots yet");
            self.apply(ready.take_committed_entries());
            self.durable(self.disk.persist(ready.entries(), ready.hs()));
            self.send(ready.take_persisted_messages());
            let mut light = self.node.advance(ready);
            if let Some(commit) = light.commit_index() {
                self.durable(self.disk.persist_commit(commit));
            }
            self.send(light.take_messages());
            self.apply(light.take_committed_entries());
            self.node.advance_apply();
        }
    }

    /// A member whose Raft state cannot be made durable must not go on (it could forget a
    /// vote or an entry it acknowledged): a panic, as a failed log sync is in the stores.
    fn durable(&self, result: std::io::Result<()>) {
        if let Err(e) = result {
            panic!("map group member {}: its Raft state is not durable: {e}", self.id);
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            let bytes = message.write_to_bytes().expect("a raft message encodes");
            self.outbox.push_back((message.to, bytes));
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            if entry.data.is_empty() || entry.get_entry_type() != EntryType::EntryNormal {
                continue; // a new leader's empty entry
            }
            let (id, expected, map) =
                decode_command(&entry.data).expect("a committed command decodes");
            let outcome = if expected == self.epoch {
                self.epoch += 1;
                self.map = map.to_vec();
                MapOutcome::Changed { epoch: self.epoch }
            } else {
                MapOutcome::Stale { epoch: self.epoch }
            };
            if self.pending.remove(&id) {
                self.outcomes.push_back((id, outcome));
            }
        }
    }
}

/// A command: member, incarnation, sequence, expected epoch (u64 each, little-endian), then
/// the map.
fn encode_command(id: ProposalId, expected_epoch: u64, map: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + map.len());
    for field in [id.member, id.incarnation, id.sequence, expected_epoch] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(map);
    out
}

fn decode_command(bytes: &[u8]) -> Option<(ProposalId, u64, &[u8])> {
    let field = |i: usize| Some(u64::from_le_bytes(bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?));
    let id = ProposalId { member: field(0)?, incarnation: field(1)?, sequence: field(2)? };
    Some((id, field(3)?, bytes.get(32..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three members wired directly, delivering every message at once.
    fn settle(members: &mut [MapGroup]) {
        loop {
            let mut moved = false;
            for i in 0..members.len() {
                while let Some((to, bytes)) = members[i].poll_transmit() {
                    moved = true;
                    members[to as usize - 1].handle_message(&bytes).unwrap();
                }
            }
            if !moved {
                return;
            }
        }
    }

    #[test]
    fn three_members_elect_a_leader_and_apply_compare_and_set_changes_in_order() {
        let ids = [1, 2, 3];
        let disks: Vec<MapDisk> = ids.iter().map(|_| MapDisk::new(&ids)).collect();
        let mut members: Vec<MapGroup> = ids
            .iter()
            .zip(&disks)
            .map(|(&id, d)| MapGroup::start(id, d, b"m0".to_vec()).unwrap())
            .collect();
        for _ in 0..ELECTION_TICKS + 1 {
            for m in &mut members {
                m.tick();
            }
            settle(&mut members);
        }
        assert!(members[0].is_leader(), "member 1 has the shortest election timeout");
        assert!(members.iter().all(|m| m.leader() == Some(1)));
        // Two changes decided from epoch 0, proposed at followers (forwarded to the leader):
        // one wins, the other finds epoch 1, and every copy holds the winner.
        let a = members[2].propose(0, b"m1".to_vec()).unwrap();
        let b = members[1].propose(0, b"m1-other".to_vec()).unwrap();
        settle(&mut members);
        let (a_outcome, b_outcome) = (members[2].poll_outcome(), members[1].poll_outcome());
        let winner: &[u8] = match (a_outcome, b_outcome) {
            (
                Some((ia, MapOutcome::Changed { epoch: 1 })),
                Some((ib, MapOutcome::Stale { epoch: 1 })),
            ) => {
                assert_eq!((ia, ib), (a, b));
                b"m1"
            }
            (
                Some((ia, MapOutcome::Stale { epoch: 1 })),
                Some((ib, MapOutcome::Changed { epoch: 1 })),
            ) => {
                assert_eq!((ia, ib), (a, b));
                b"m1-other"
            }
            other => panic!("not one winner: {other:?}"),
        };
        assert!(members.iter().all(|m| m.map() == (1, winner)));

        // Member 3 crashes and comes back on its disk: it replays the committed change.
        drop(members.remove(2));
        let mut back = MapGroup::start(3, &disks[2], b"m0".to_vec()).unwrap();
        assert_eq!(back.map(), (1, winner), "replayed from its log");
        back.tick();
        members.push(back);
        let third = members[0].propose(1, b"m2".to_vec()).unwrap();
        settle(&mut members);
        assert_eq!(members[0].poll_outcome(), Some((third, MapOutcome::Changed { epoch: 2 })));
        assert!(members.iter().all(|m| m.map() == (2, &b"m2"[..])));
        assert!(members[0].handle_message(b"\xff\xff garbage").is_err());
    }
}
