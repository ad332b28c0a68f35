//! Opening a node's data directory: the layout it was made with, a lock so two nodes never
//! share it, and each core's log, replayed into its endpoints' stores with a report of what
//! was found.

use control::{CoreStorage, Durability, NodeLayout};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::{BlobStore, FileVolume, Shelf, StoreConfig, SyncSet};

/// Names the partition count a data directory was made with: the records of a core's log name
/// their endpoints by slot, and a node with another count would find keys in the wrong ones.
const LAYOUT_FILE: &str = "cradle-layout";

/// Locks `data_dir` for this process (released when the returned file closes) and checks it
/// was made with the same number of partitions and cores.
pub(crate) fn claim(data_dir: &Path, layout: &NodeLayout) -> Result<File, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
    let lock_path = data_dir.join("LOCK");
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.try_lock()
        .map_err(|_| format!("data dir {} is in use by another cradle node", data_dir.display()))?;
    refuse_per_endpoint_layout(data_dir)?;
    refuse_earlier_record_format(data_dir)?;
    let wanted = format!("partitions {}\ncores {}\n", layout.partitions(), layout.cores());
    let path = data_dir.join(LAYOUT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(found) if found == wanted => Ok(lock),
        Ok(found) => Err(format!(
            "data dir {} was made with {}; this node has {} (keep --partitions and --cores)",
            data_dir.display(),
            found.trim().replace('\n', ", "),
            wanted.trim().replace('\n', ", ")
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, wanted)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(lock)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// What a refusal of a data directory an earlier version wrote says to do.
const CARRY_OVER: &str = "this version cannot read them and changed nothing. To carry the data \
    over: start the previous version on it and `cradle export` its keys, then start this version \
    on an empty data dir and `cradle import` them (see docs/OPERATIONS.md)";

/// Refuses a data directory in the layout before one log per core (a directory per
/// partition, `partition-NNNNNNN/`): its records cannot be read by this version, and starting
/// over them would look like an empty node. Says how to carry the data over.
fn refuse_per_endpoint_layout(data_dir: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(data_dir)
        .map_err(|e| format!("cannot list data dir {}: {e}", data_dir.display()))?;
    let old =
        entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("partition-"));
    let count = old.count();
    if count == 0 {
        return Ok(());
    }
    Err(format!(
        "data dir {} holds {count} per-partition directories (partition-NNNNNNN/), the layout of \
         cradle before one log per core; {CARRY_OVER}",
        data_dir.display()
    ))
}

/// Refuses a data directory whose logs are in the record format before this one (segments
/// with magic `CRDLSEG2`): recovery would quarantine every endpoint of their cores, a node
/// that answers UNAVAILABLE for all their keys. Says how to carry the data over.
fn refuse_earlier_record_format(data_dir: &Path) -> Result<(), String> {
    let list = |dir: &Path| {
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))
    };
    let mut earlier = Vec::new();
    for core in list(data_dir)?.flatten() {
        if !core.file_name().to_string_lossy().starts_with("core-") {
            continue;
        }
        for segment in list(&core.path())?.flatten() {
            let path = segment.path();
            if path.extension().is_some_and(|e| e == "seg") && starts_with_earlier_magic(&path)? {
                earlier.push(core.file_name().to_string_lossy().into_owned());
                break;
            }
        }
    }
    if earlier.is_empty() {
        return Ok(());
    }
    earlier.sort();
    Err(format!(
        "data dir {} holds logs in the record format before 28-byte headers ({}: segments with \
         magic CRDLSEG2); {CARRY_OVER}",
        data_dir.display(),
        earlier.join(", ")
    ))
}

fn starts_with_earlier_magic(path: &Path) -> Result<bool, String> {
    let mut magic = [0u8; 8];
    let read = File::open(path).and_then(|mut f| std::io::Read::read(&mut f, &mut magic));
    let read = read.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(read == magic.len() && &magic == storage::EARLIER_SEGMENT_MAGIC)
}

/// The file naming a single node's data set (its partition maps' `cluster`).
const NODE_ID_FILE: &str = "NODE-ID";

/// The id a single node's maps name it by: random at the data directory's first start, kept
/// in `NODE-ID`, so a restarted node is the same data set to its clients and two nodes are
/// never taken for one (a client refuses a `--server` list that names both). Never 0 (0 is
/// "not named").
pub(crate) fn node_id(data_dir: &Path) -> Result<u64, String> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim().trim_start_matches("0x"), 16)
            .ok()
            .filter(|&id| id != 0)
            .ok_or_else(|| format!("{} does not hold a node id: {text:?}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 8];
            File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
                .map_err(|e| format!("cannot read /dev/urandom for the node id: {e}"))?;
            let id = u64::from_le_bytes(bytes).max(1);
            // Written whole and renamed into place: a crash leaves no half id.
            let partial = data_dir.join(format!("{NODE_ID_FILE}.new"));
            std::fs::write(&partial, format!("{id:#018x}\n"))
                .and_then(|()| File::open(&partial)?.sync_all())
                .and_then(|()| std::fs::rename(&partial, &path))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Opens core `core`'s blob store and its log, replaying it into its endpoints' stores.
/// Prints a line per torn tail and per quarantined endpoint, and progress every second on
/// long replays. Writes stamped since `stamps_since_ns` (wall clock) come back in
/// `recovered`, to rebuild their completion records. With `sync_set`, every file of the core
/// is tracked in it for the `memory` class's background sync.
pub(crate) fn open_core(
    data_dir: &Path,
    layout: &NodeLayout,
    core: u32,
    config: &StoreConfig,
    stamps_since_ns: u64,
    sync_set: Option<&Arc<SyncSet>>,
) -> Result<CoreStorage, String> {
    let volume = |dir: &Path| match sync_set {
        Some(set) => FileVolume::tracked(dir, set.clone()),
        None => FileVolume::new(dir),
    };
    let blobs_dir = data_dir.join(format!("blobs-core-{core}"));
    let (blobs, _) = BlobStore::open(Box::new(volume(&blobs_dir)), config)
        .map_err(|e| format!("cannot open blob store {}: {e}", blobs_dir.display()))?;
    let endpoints = layout.endpoints_on(core);
    let partitions: Vec<u32> = layout.partitions_on(core).collect();
    let started = Instant::now();
    let log_dir = data_dir.join(format!("core-{core}"));
    // Its next segment file is made ahead by a thread of its own (started here, on the
    // unpinned main thread), not on the loop at a roll.
    let log = Box::new(volume(&log_dir).making_ahead());
    let opened = Shelf::open(log, blobs, config, endpoints as u32, stamps_since_ns);
    let (mut shelf, stores, mut report) = opened.map_err(|e| {
        let limit = storage::Limit::of(&e).map_or(String::new(), |limit| {
            format!(
                " (out of {}: the core's log holds a descriptor and a map per segment file; \
                 raise the limit and start again, nothing is lost)",
                limit.describe()
            )
        });
        format!("cannot open core {core}'s log in {}: {e}{limit}", log_dir.display())
    })?;
    if let Some(torn) = &report.torn_tail {
        eprintln!(
            "cradle: core {core}: torn tail truncated at {} byte {} ({})",
            torn.file, torn.offset, torn.reason
        );
    }
    for (slot, corruption) in &report.quarantined {
        let partition = partitions[*slot as usize];
        eprintln!(
            "cradle: partition {partition} QUARANTINED: {corruption}; it answers UNAVAILABLE \
             and no file was changed"
        );
    }
    // Chunks no live key references are garbage only if every endpoint's references were
    // read; a quarantined endpoint's were not.
    if report.quarantined.is_empty() {
        shelf
            .blobs_mut()
            .reclaim_unreferenced()
            .map_err(|e| format!("core {core}: blob reclaim: {e}"))?;
    }
    let recovered = std::mem::take(&mut report.stamps);
    if !recovered.is_empty() {
        eprintln!(
            "cradle: core {core}: {} recent writes found in the log; a resend of one is answered \
             from its rebuilt completion record",
            recovered.len()
        );
    }
    if started.elapsed() >= Duration::from_secs(1) || report.bytes_replayed >= 64 << 20 {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "cradle: core {core}: {endpoints} endpoints open, {} MiB of log replayed in {secs:.1} s \
             ({:.0} MiB/s)",
            report.bytes_replayed >> 20,
            (report.bytes_replayed >> 20) as f64 / secs
        );
    }
    Ok(CoreStorage {
        shelf,
        stores,
        durability: Durability::default(),
        compaction_step_bytes: 256 << 10,
        sync_clock: None,
        recovered,
    })
}
