//! The envelope of node-to-node datagrams (map group, replication, heartbeats): a keyed
//! BLAKE3 MAC with the cluster's key, and what keeps a captured datagram from being played
//! again. A datagram that fails any check is dropped and counted before a byte of its payload
//! is parsed (raft-rs's protobuf parser has RUSTSEC-2024-0437: only authenticated bytes reach
//! it). Client datagrams cannot pass: their magic differs and they carry no MAC.
//!
//! Layout, little-endian:
//!
//! ```text
//! 0   u16  magic 0x5063 ("cP"; the client protocol's is 0x5263)
//! 2   u8   version 1
//! 3   u8   kind (1 map group, 2 replication, 3 heartbeat, 4 join, 5 map push)
//! 4   u32  payload length
//! 8   u64  sender node id
//! 16  u64  receiver node id
//! 24  u64  sender incarnation (its wall-clock start time, ns: a restart is a newer one)
//! 32  u64  sequence (per sender incarnation and receiver, from 1)
//! 40  u64  sent at (sender's wall clock, ns)
//! 48  ..   payload
//! end 16   MAC: BLAKE3 keyed with the cluster key over everything before it, first 16 bytes
//! ```
//!
//! Replays: per sender (and receiver id: a joined node answers to the id it asked to join by
//! and to its member id, numbered apart) the receiver keeps the newest incarnation and a
//! window of the last 64 sequence numbers seen in it (IPsec's anti-replay window), so reordering within the window
//! is accepted once and everything older or seen is not. An older incarnation is refused, and
//! so is a datagram sent more than `FRESHNESS_NS` from the receiver's clock: after the
//! receiver itself restarts (and forgot its windows) an old capture is still stale. What is
//! left: a receiver that restarted accepts, once, a datagram captured less than
//! `FRESHNESS_NS` before; the payload protocols take such a duplicate (Raft by term and index,
//! replication by LSN). Closing it needs the receiver's incarnation in the envelope (learnt
//! from its own datagrams); not done yet.

use std::collections::BTreeMap;

/// The first two bytes of every node-to-node datagram (little-endian).
pub const MAGIC: u16 = 0x5063;
const VERSION: u8 = 1;
/// Bytes before the payload.
pub const PEER_HEADER_BYTES: usize = 48;
/// Bytes of the MAC.
pub const MAC_BYTES: usize = 16;
/// How far a datagram's send time may be from the receiver's clock.
pub const FRESHNESS_NS: u64 = 10_000_000_000;
/// Sequence numbers a receiver remembers below the highest it saw.
const WINDOW: u64 = 64;
/// The receiver id of a JOIN: a node that joins does not know the member ids yet, so a member
/// opens a JOIN addressed to any member (and nothing else addressed so).
pub const ANY_MEMBER: u64 = u64::MAX;
/// Shortest key file accepted.
pub const CLUSTER_KEY_FILE_BYTES_MIN: usize = 32;

/// What a node-to-node datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    /// Raft messages of the map group.
    MapGroup = 1,
    /// Forwarded writes and their acknowledgements.
    Replication = 2,
    /// Liveness.
    Heartbeat = 3,
    /// A node asking to join the cluster (sent to any member: see `ANY_MEMBER`).
    Join = 4,
    /// The committed map state, sent by the map group's leader to a node outside the group
    /// (a joined node), or a joiner's refusal.
    MapPush = 5,
}

impl PeerKind {
    fn from_byte(b: u8) -> Option<PeerKind> {
        match b {
            1 => Some(PeerKind::MapGroup),
            2 => Some(PeerKind::Replication),
            3 => Some(PeerKind::Heartbeat),
            4 => Some(PeerKind::Join),
            5 => Some(PeerKind::MapPush),
            _ => None,
        }
    }
}

/// The cluster's shared secret, derived from the key file's bytes.
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)") // never print a secret
    }
}

impl ClusterKey {
    /// The key of a cluster whose key file holds `bytes` (at least 32 of them).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<ClusterKey, String> {
        if bytes.len() < CLUSTER_KEY_FILE_BYTES_MIN {
            return Err(format!(
                "the cluster key file holds {} bytes; it needs at least {CLUSTER_KEY_FILE_BYTES_MIN} \
                 (e.g. `head -c 32 /dev/urandom > cluster.key`)",
                bytes.len()
            ));
        }
        Ok(ClusterKey(blake3::derive_key("cradle 2026 cluster key v1", bytes)))
    }

    /// The cluster's name in its maps: derived from the key, so nodes sharing a key name the
    /// same cluster, and a client can tell two clusters apart without learning the key.
    pub fn cluster_id(&self) -> u64 {
        let id = blake3::keyed_hash(&self.0, b"cradle cluster id");
        u64::from_le_bytes(id.as_bytes()[..8].try_into().expect("8 bytes")) | 1
    }

    fn mac(&self, bytes: &[u8]) -> [u8; MAC_BYTES] {
        // The client envelope's MAC too (`proto::auth`), with a client's key.
        proto::auth::mac16(&self.0, bytes)
    }
}

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a node-to-node datagram of this version, cut short, or not for this node.
    Malformed,
    /// The MAC does not match: forged, damaged, or of another cluster.
    Unauthenticated,
    /// Seen before, or older than what this node has seen of its sender.
    Replayed,
    /// Sent too far from this node's clock.
    Stale,
}

/// An authenticated datagram's contents.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    /// What it carries.
    pub kind: PeerKind,
    /// Who sent it.
    pub from: u64,
    /// The payload, authenticated.
    pub payload: &'a [u8],
}

/// Counts of what `PeerOpener` refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// Datagrams accepted.
    pub accepted: u64,
    /// Refused as malformed or misdirected.
    pub dropped_malformed: u64,
    /// Refused for their MAC (`dropped_unauthenticated` in status).
    pub dropped_unauthenticated: u64,
    /// Refused as replays.
    pub dropped_replayed: u64,
    /// Refused as stale.
    pub dropped_stale: u64,
}

/// Seals this node's datagrams to its peers.
#[derive(Debug)]
pub struct PeerSealer {
    key: ClusterKey,
    me: u64,
    incarnation: u64,
    next: BTreeMap<u64, u64>,
}

impl PeerSealer {
    /// Node `me`, started at wall-clock `incarnation_ns` (later at every start).
    pub fn new(key: ClusterKey, me: u64, incarnation_ns: u64) -> PeerSealer {
        PeerSealer { key, me, incarnation: incarnation_ns, next: BTreeMap::new() }
    }

    /// Seals as node `me` from now on (a joined node, once it has its member id).
    pub fn rename(&mut self, me: u64) {
        self.me = me;
    }

    /// The datagram carrying `payload` to node `to`, sent at wall-clock `now_ns`, into `out`.
    pub fn seal(
        &mut self,
        to: u64,
        kind: PeerKind,
        now_ns: u64,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let sequence = self.next.entry(to).or_insert(0);
        *sequence += 1;
        out.clear();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[VERSION, kind as u8]);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        for field in [self.me, to, self.incarnation, *sequence, now_ns] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(payload);
        let mac = self.key.mac(out);
        out.extend_from_slice(&mac);
    }
}

/// The newest incarnation seen of a sender and its window of sequence numbers.
#[derive(Clone, Copy, Debug)]
struct Window {
    incarnation: u64,
    highest: u64,
    /// Bit i: sequence `highest - i` was seen.
    seen: u64,
}

impl Window {
    /// Whether (incarnation, sequence) is new; records it if so.
    fn admit(&mut self, incarnation: u64, sequence: u64) -> bool {
        if incarnation < self.incarnation {
            return false;
        }
        if incarnation > self.incarnation {
            *self = Window { incarnation, highest: sequence, seen: 1 };
            return true;
        }
        if sequence > self.highest {
            let shift = sequence - self.highest;
            self.seen = if shift >= WINDOW { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = sequence;
            return true;
        }
        let age = self.highest - sequence;
        if age >= WINDOW || self.seen & (1 << age) != 0 {
            return false;
        }
        self.seen |= 1 << age;
        true
    }
}

/// Checks datagrams from this node's peers.
#[derive(Debug)]
pub struct PeerOpener {
    key: ClusterKey,
    me: u64,
    /// Another id this node answers to (a joined node: the one it asked to join by).
    alias: Option<u64>,
    /// Per (sender, receiver id): a sender numbers its datagrams per receiver id, and a
    /// renamed node answers to two.
    windows: BTreeMap<(u64, u64), Window>,
    counters: PeerCounters,
}

impl PeerOpener {
    /// Node `me` of the cluster keyed `key`.
    pub fn new(key: ClusterKey, me: u64) -> PeerOpener {
        let counters = PeerCounters::default();
        PeerOpener { key, me, alias: None, windows: BTreeMap::new(), counters }
    }

    /// Opens datagrams to `me` from now on, and to the id it had before.
    pub fn rename(&mut self, me: u64) {
        if me != self.me {
            self.alias = Some(self.me);
            self.me = me;
        }
    }

    /// What this opener accepted and refused.
    pub fn counters(&self) -> PeerCounters {
        self.counters
    }

    /// Checks `datagram` at wall-clock `now_ns`: its payload if it is authentic, for this node,
    /// fresh and not seen before; else why not (and it is counted).
    pub fn open<'a>(&mut self, now_ns: u64, datagram: &'a [u8]) -> Result<Opened<'a>, Refused> {
        let result = self.check(now_ns, datagram);
        let c = &mut self.counters;
        match result {
            Ok(_) => c.accepted += 1,
            Err(Refused::Malformed) => c.dropped_malformed += 1,
            Err(Refused::Unauthenticated) => c.dropped_unauthenticated += 1,
            Err(Refused::Replayed) => c.dropped_replayed += 1,
            Err(Refused::Stale) => c.dropped_stale += 1,
        }
        result
    }

    fn check<'a>(&mut self, now_ns: u64, datagram: &'a [u8]) -> Result<Opened<'a>, Refused> {
        let Some(body_len) = datagram.len().checked_sub(MAC_BYTES) else {
            return Err(Refused::Malformed);
        };
        let (body, mac) = datagram.split_at(body_len);
        let field = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        if body.len() < PEER_HEADER_BYTES
            || body[..2] != MAGIC.to_le_bytes()
            || body[2] != VERSION
            || u32::from_le_bytes(body[4..8].try_into().expect("4")) as usize
                != body.len() - PEER_HEADER_BYTES
        {
            return Err(Refused::Malformed);
        }
        // The MAC before anything is believed; compared in constant time.
        let expected = self.key.mac(body);
        if !proto::auth::macs_equal(&expected, mac) {
            return Err(Refused::Unauthenticated);
        }
        let kind = PeerKind::from_byte(body[3]).ok_or(Refused::Malformed)?;
        let (from, to, incarnation, sequence, sent) =
            (field(8), field(16), field(24), field(32), field(40));
        let any = to == ANY_MEMBER && kind == PeerKind::Join;
        if to != self.me && Some(to) != self.alias && !any {
            return Err(Refused::Malformed);
        }
        if now_ns.abs_diff(sent) > FRESHNESS_NS {
            return Err(Refused::Stale);
        }
        let window = self.windows.entry((from, to)).or_insert(Window {
            incarnation: 0,
            highest: 0,
            seen: 0,
        });
        if !window.admit(incarnation, sequence) {
            return Err(Refused::Replayed);
        }
        Ok(Opened { kind, from, payload: &body[PEER_HEADER_BYTES..] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000_000_000_000;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_file_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn an_authentic_datagram_opens_once_and_every_forgery_is_dropped_and_counted() {
        let mut alice = PeerSealer::new(key(1), 1, T);
        let mut bob = PeerOpener::new(key(1), 2);
        let mut datagram = Vec::new();
        alice.seal(2, PeerKind::MapGroup, T + 5, b"raft bytes", &mut datagram);
        let opened = bob.open(T + 9, &datagram).unwrap();
        assert_eq!(
            opened,
            Opened { kind: PeerKind::MapGroup, from: 1, payload: &b"raft bytes"[..] }
        );
        assert_eq!(bob.open(T + 9, &datagram), Err(Refused::Replayed), "played again");
        // Every single bit flipped: refused, nothing opened.
        for bit in 0..datagram.len() * 8 {
            let mut forged = datagram.clone();
            forged[bit / 8] ^= 1 << (bit % 8);
            assert!(bob.open(T + 9, &forged).is_err(), "bit {bit}");
        }
        // Another cluster's key, another receiver, a key file too short.
        let mut foreign = PeerSealer::new(key(2), 1, T);
        foreign.seal(2, PeerKind::MapGroup, T, b"x", &mut datagram);
        assert_eq!(bob.open(T, &datagram), Err(Refused::Unauthenticated));
        alice.seal(3, PeerKind::Heartbeat, T, b"", &mut datagram);
        assert_eq!(bob.open(T, &datagram), Err(Refused::Malformed), "not for bob");
        assert!(ClusterKey::from_file_bytes(&[0; 31]).is_err());
        let c = bob.counters();
        assert_eq!((c.accepted, c.dropped_replayed), (1, 1));
        assert!(c.dropped_unauthenticated >= 1 && c.dropped_malformed >= 1);
        // A client datagram (magic 0x5263) never passes.
        assert_eq!(bob.open(T, &[0x63, 0x52, 1, 1, 0, 0, 0, 0]), Err(Refused::Malformed));
    }

    #[test]
    fn only_a_join_opens_addressed_to_any_member_and_a_renamed_node_opens_both_ids() {
        let mut joiner = PeerSealer::new(key(1), 99, T);
        let mut member = PeerOpener::new(key(1), 1);
        let mut datagram = Vec::new();
        joiner.seal(ANY_MEMBER, PeerKind::Join, T, b"join", &mut datagram);
        assert_eq!(member.open(T, &datagram).map(|o| o.from), Ok(99));
        for kind in [PeerKind::MapGroup, PeerKind::Heartbeat, PeerKind::MapPush] {
            joiner.seal(ANY_MEMBER, kind, T, b"x", &mut datagram);
            assert_eq!(member.open(T, &datagram), Err(Refused::Malformed), "{kind:?}");
        }
        // Admitted as member 4: datagrams to its old id and to 4 open; to others not.
        let mut leader = PeerSealer::new(key(1), 1, T);
        let mut joined = PeerOpener::new(key(1), 99);
        joined.rename(4);
        for (to, opens) in [(99, true), (4, true), (5, false)] {
            leader.seal(to, PeerKind::MapPush, T, b"state", &mut datagram);
            assert_eq!(joined.open(T, &datagram).is_ok(), opens, "to {to}");
        }
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once_older_and_stale_are_not() {
        let mut alice = PeerSealer::new(key(1), 1, T);
        let mut bob = PeerOpener::new(key(1), 2);
        let sealed: Vec<Vec<u8>> = (0..100)
            .map(|i| {
                let mut d = Vec::new();
                alice.seal(2, PeerKind::Replication, T + i, &[i as u8], &mut d);
                d
            })
            .collect();
        // Arrive 99, then 40..99 backwards (within 64 of 99), then 10 (too old).
        assert!(bob.open(T, &sealed[99]).is_ok());
        for i in (40..99).rev() {
            assert!(bob.open(T, &sealed[i]).is_ok(), "{i}");
            assert_eq!(bob.open(T, &sealed[i]), Err(Refused::Replayed), "{i} twice");
        }
        assert_eq!(bob.open(T, &sealed[10]), Err(Refused::Replayed), "below the window");
        // A restarted sender (newer incarnation) starts over; its old datagrams are refused.
        let mut restarted = PeerSealer::new(key(1), 1, T + 1_000);
        let mut d = Vec::new();
        restarted.seal(2, PeerKind::Replication, T, b"again", &mut d);
        assert!(bob.open(T, &d).is_ok());
        assert_eq!(bob.open(T, &sealed[98]), Err(Refused::Replayed), "an older incarnation");
        // A receiver that restarted forgot its windows: a capture is refused for its age.
        let mut forgetful = PeerOpener::new(key(1), 2);
        assert_eq!(forgetful.open(T + FRESHNESS_NS + 100, &sealed[0]), Err(Refused::Stale));
        assert_eq!(forgetful.counters().dropped_stale, 1);
    }
}
