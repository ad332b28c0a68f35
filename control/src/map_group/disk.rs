//! A map-group member's persistent Raft state: raft-rs's `MemStorage` (what raft-rs reads),
//! and a journal on a `storage::LogDevice` that records every change to it, synced before
//! raft-rs may act on it; opening replays the journal. Without a device (the simulation's
//! members that share memory across crashes, tests) it is the `MemStorage` alone.
//!
//! Journal records, little-endian, one after another from offset 0:
//!
//! ```text
//! 0   u32  payload length
//! 4   u8   kind: 1 snapshot, 2 entry, 3 hard state, 4 start (u64 count)
//! 5   ..   payload (protobuf for 1–3)
//! end u64  xxh3-64 of kind and payload
//! ```
//!
//! A zero length ends the journal; a record cut short or failing its checksum with no valid
//! record after it is a torn tail (the write never completed): replay stops there and appends
//! continue there. A bad record with a valid one after it is corruption: the disk does not
//! open (a member that silently forgot entries it acknowledged could break the group's
//! safety); the member is rebuilt from its peers instead.
//! Not yet: compaction (a snapshot record replacing the entries before it); map changes are
//! rare, so a journal grows by a few hundred bytes per change.

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use std::io;
use std::sync::{Arc, Mutex};
use storage::LogDevice;
use xxhash_rust::xxh3::xxh3_64;

const SNAPSHOT: u8 = 1;
const ENTRY: u8 = 2;
const HARD_STATE: u8 = 3;
const START: u8 = 4;

#[derive(Debug)]
struct Journal {
    device: Box<dyn LogDevice>,
    end: u64,
    buf: Vec<u8>,
}

impl Journal {
    fn push(&mut self, kind: u8, payload: &[u8]) {
        self.buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let start = self.buf.len();
        self.buf.push(kind);
        self.buf.extend_from_slice(payload);
        let checksum = xxh3_64(&self.buf[start..]);
        self.buf.extend_from_slice(&checksum.to_le_bytes());
    }

    /// Writes what was pushed and syncs it.
    fn sync(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let needed = self.end + self.buf.len() as u64;
        if needed > self.device.len() {
            self.device.set_len(needed.max(2 * self.device.len()).max(64 << 10))?;
        }
        self.device.write(self.end, &self.buf)?;
        self.device.sync()?;
        self.end = needed;
        self.buf.clear();
        Ok(())
    }
}

/// A member's persistent Raft state, and how many times it started. Clones share it.
#[derive(Clone)]
pub struct MapDisk {
    pub(super) storage: MemStorage,
    starts: Arc<Mutex<u64>>,
    journal: Option<Arc<Mutex<Journal>>>,
}

impl std::fmt::Debug for MapDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.storage.rl();
        f.debug_struct("MapDisk").field("hard_state", state.hard_state()).finish()
    }
}

fn bootstrap(members: &[u64]) -> Snapshot {
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 1;
    snapshot.mut_metadata().term = 1;
    snapshot.mut_metadata().mut_conf_state().voters = members.to_vec();
    snapshot
}

impl MapDisk {
    /// In memory only: the disk of a member of a new group of `members` (node ids, all
    /// voters). Survives the member's crash while the caller keeps a clone.
    pub fn new(members: &[u64]) -> MapDisk {
        let storage = MemStorage::new();
        storage.wl().apply_snapshot(bootstrap(members)).expect("a fresh storage takes a snapshot");
        MapDisk { storage, starts: Default::default(), journal: None }
    }

    /// A new member's disk on an empty `device`, for a group of `members`.
    pub fn create(device: Box<dyn LogDevice>, members: &[u64]) -> io::Result<MapDisk> {
        let snapshot = bootstrap(members);
        let mut journal = Journal { device, end: 0, buf: Vec::new() };
        journal.push(SNAPSHOT, &snapshot.write_to_bytes().expect("a snapshot encodes"));
        journal.sync()?;
        let storage = MemStorage::new();
        storage.wl().apply_snapshot(snapshot).expect("a fresh storage takes a snapshot");
        let journal = Some(Arc::new(Mutex::new(journal)));
        Ok(MapDisk { storage, starts: Default::default(), journal })
    }

    /// Opens the disk a member kept on `device`, replaying its journal (a torn tail is cut).
    pub fn open(device: Box<dyn LogDevice>) -> io::Result<MapDisk> {
        let storage = MemStorage::new();
        let mut starts = 0;
        let mut at = 0u64;
        loop {
            let (kind, payload, next) = match record_at(&*device, at)? {
                Read::Record(kind, payload, next) => (kind, payload, next),
                Read::End => break,
                Read::Bad if valid_after(&*device, at)? => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("map group journal corrupt at byte {at}: a valid record follows"),
                    ));
                }
                Read::Bad => break, // a torn tail
            };
            let bad = |e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("journal record at {at}: {e}"))
            };
            let mut core = storage.wl();
            match kind {
                SNAPSHOT => core.apply_snapshot(
                    Snapshot::parse_from_bytes(payload).map_err(|e| bad(e.to_string()))?,
                ),
                ENTRY => core
                    .append(&[Entry::parse_from_bytes(payload).map_err(|e| bad(e.to_string()))?]),
                HARD_STATE => {
                    core.set_hardstate(
                        HardState::parse_from_bytes(payload).map_err(|e| bad(e.to_string()))?,
                    );
                    Ok(())
                }
                START => {
                    starts =
                        u64::from_le_bytes(payload.try_into().map_err(|_| bad("start".into()))?);
                    Ok(())
                }
                _ => return Err(bad(format!("unknown kind {kind}"))),
            }
            .map_err(|e| bad(e.to_string()))?;
            at = next;
        }
        let journal = Journal { device, end: at, buf: Vec::new() };
        let journal = Some(Arc::new(Mutex::new(journal)));
        Ok(MapDisk { storage, starts: Arc::new(Mutex::new(starts)), journal })
    }

    /// Counts a start, durably; returns its number (1 for the first).
    pub(super) fn start(&self) -> io::Result<u64> {
        let mut starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        *starts += 1;
        if let Some(journal) = &self.journal {
            let mut journal = journal.lock().unwrap_or_else(|e| e.into_inner());
            journal.push(START, &starts.to_le_bytes());
            journal.sync()?;
        }
        Ok(*starts)
    }

    /// Persists new entries and the hard state (and nothing is acted on before this
    /// returns: the journal is synced).
    pub(super) fn persist(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> io::Result<()> {
        if let Some(journal) = &self.journal {
            let mut journal = journal.lock().unwrap_or_else(|e| e.into_inner());
            for entry in entries {
                journal.push(ENTRY, &entry.write_to_bytes().expect("an entry encodes"));
            }
            if let Some(hs) = hard_state {
                journal.push(HARD_STATE, &hs.write_to_bytes().expect("a hard state encodes"));
            }
            journal.sync()?;
        }
        let mut core = self.storage.wl();
        core.append(entries).expect("raft-rs hands over entries that fit the log");
        if let Some(hs) = hard_state {
            core.set_hardstate(hs.clone());
        }
        Ok(())
    }

    /// Persists the commit index a light ready reports.
    pub(super) fn persist_commit(&self, commit: u64) -> io::Result<()> {
        let mut hs = self.storage.rl().hard_state().clone();
        hs.set_commit(commit);
        self.persist(&[], Some(&hs))
    }
}

/// What is at an offset of the journal.
enum Read<'a> {
    /// A whole record: kind, payload, where the next starts.
    Record(u8, &'a [u8], u64),
    /// Zeros or the device's end.
    End,
    /// Bytes that are not a whole record.
    Bad,
}

fn record_at(device: &dyn LogDevice, at: u64) -> io::Result<Read<'_>> {
    let len = device.len();
    if at + 5 > len {
        return Ok(if at >= len || device.read(at, (len - at) as usize)?.iter().all(|&b| b == 0) {
            Read::End
        } else {
            Read::Bad
        });
    }
    let header = device.read(at, 5)?;
    if header.iter().all(|&b| b == 0) {
        return Ok(Read::End);
    }
    let payload_len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as u64;
    let total = 4 + 1 + payload_len + 8;
    if at + total > len {
        return Ok(Read::Bad);
    }
    let record = device.read(at, total as usize)?;
    let body = &record[4..record.len() - 8];
    let checksum = u64::from_le_bytes(record[record.len() - 8..].try_into().expect("8 bytes"));
    if xxh3_64(body) != checksum {
        return Ok(Read::Bad);
    }
    Ok(Read::Record(body[0], &body[1..], at + total))
}

/// Whether a whole record starts anywhere after `at` (then a bad record is not a torn tail).
fn valid_after(device: &dyn LogDevice, at: u64) -> io::Result<bool> {
    for offset in at + 1..device.len() {
        if matches!(record_at(device, offset)?, Read::Record(..)) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::super::{MapGroup, MapOutcome};
    use super::*;
    use storage::{MemoryVolume, Volume};

    /// Delivers every message at once until the members are quiet.
    fn settle(members: &mut [MapGroup]) {
        while let Some((i, to, bytes)) = members
            .iter_mut()
            .enumerate()
            .find_map(|(i, m)| m.poll_transmit().map(|(to, bytes)| (i, to, bytes)))
        {
            let _ = i;
            members[to as usize - 1].handle_message(&bytes).unwrap();
        }
    }

    fn elect(members: &mut [MapGroup]) {
        for _ in 0..super::super::ELECTION_TICKS + 1 {
            members.iter_mut().for_each(MapGroup::tick);
            settle(members);
        }
        assert!(members[0].is_leader());
    }

    #[test]
    fn a_group_on_journals_comes_back_whole_after_every_member_restarts() {
        let ids = [1, 2, 3];
        let volumes: Vec<MemoryVolume> =
            ids.iter().map(|i| MemoryVolume::new(&format!("m{i}"))).collect();
        let disks: Vec<MapDisk> = volumes
            .iter()
            .map(|v| MapDisk::create(v.create("raft.log", 0).unwrap(), &ids).unwrap())
            .collect();
        let mut members: Vec<MapGroup> = ids
            .iter()
            .zip(&disks)
            .map(|(&id, d)| MapGroup::start(id, d, b"m0".to_vec()).unwrap())
            .collect();
        elect(&mut members);
        for epoch in 0..5 {
            let id = members[1].propose(epoch, format!("map {}", epoch + 1).into_bytes()).unwrap();
            settle(&mut members);
            assert_eq!(
                members[1].poll_outcome(),
                Some((id, MapOutcome::Changed { epoch: epoch + 1 }))
            );
        }
        // Every process gone at once: only what the journals synced survives.
        drop((members, disks));
        let disks: Vec<MapDisk> =
            volumes.iter().map(|v| MapDisk::open(v.open("raft.log").unwrap()).unwrap()).collect();
        let mut members: Vec<MapGroup> = ids
            .iter()
            .zip(&disks)
            .map(|(&id, d)| MapGroup::start(id, d, b"m0".to_vec()).unwrap())
            .collect();
        assert!(
            members.iter().all(|m| m.map() == (5, &b"map 5"[..])),
            "replayed from the journals"
        );
        elect(&mut members);
        let id = members[2].propose(5, b"map 6".to_vec()).unwrap();
        settle(&mut members);
        assert_eq!(members[2].poll_outcome(), Some((id, MapOutcome::Changed { epoch: 6 })));
        // Starts are counted durably: proposal ids of the new lives differ from the old.
        assert_eq!(id.incarnation, 2);
    }

    #[test]
    fn a_torn_journal_tail_is_cut_and_the_member_starts_from_what_is_whole() {
        let volume = MemoryVolume::new("m1");
        let disk = MapDisk::create(volume.create("raft.log", 0).unwrap(), &[1]).unwrap();
        let mut member = MapGroup::start(1, &disk, b"m0".to_vec()).unwrap();
        for _ in 0..super::super::ELECTION_TICKS + 1 {
            member.tick();
        }
        assert!(member.is_leader(), "a group of one elects itself");
        let id = member.propose(0, b"m1".to_vec()).unwrap();
        assert_eq!(member.poll_outcome(), Some((id, MapOutcome::Changed { epoch: 1 })));
        drop((member, disk));
        // Cut the journal inside its last record, then flip a byte of the one before that.
        let mut image = volume.image("raft.log").unwrap();
        let end = image.iter().rposition(|&b| b != 0).unwrap() + 1;
        image.truncate(end - 3);
        volume.set_image("raft.log", image);
        let disk = MapDisk::open(volume.open("raft.log").unwrap()).unwrap();
        let member = MapGroup::start(1, &disk, b"m0".to_vec()).unwrap();
        assert!(member.map().0 <= 1, "starts from the whole records");
        drop((member, disk));
        let mut image = volume.image("raft.log").unwrap();
        image[10] ^= 0xff; // inside the bootstrap snapshot record, valid records after it
        volume.set_image("raft.log", image);
        let error = MapDisk::open(volume.open("raft.log").unwrap()).unwrap_err();
        assert!(error.to_string().contains("corrupt at byte 0"), "{error}");
    }
}
