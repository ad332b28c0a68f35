//! The files the `memory` class's background sync flushes: every segment file and directory
//! a [`FileVolume`](crate::FileVolume) tracked by a [`SyncSet`] opens or creates, each with a
//! flag its device raises when it writes. A sync round `fdatasync`s the files raised since
//! the last round and nothing else on the file system (`syncfs` flushed every file on it,
//! another program's too, and reported writeback errors only from Linux 5.8 on).
//!
//! Errors: each tracked file is synced through its own open file description, opened when
//! the device was (before its first write), so `fdatasync` reports every writeback error on
//! that file since then (errseq, Linux 4.13 on), whoever else syncs the file.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The tracked files of a node's stores; shared by their volumes and the syncing thread.
#[derive(Debug, Default)]
pub struct SyncSet {
    /// Taken when a file is created or opened and by each sync round, never per write.
    files: Mutex<Vec<Arc<Tracked>>>,
}

/// One tracked file: a description of its own, and whether it was written since it was
/// last synced.
#[derive(Debug)]
pub(crate) struct Tracked {
    file: File,
    dirty: AtomicBool,
}

impl Tracked {
    /// Called after every change to the file (a store into its map, a `pwrite`, a size
    /// change, a punch): a plain store, the syncing thread clears it.
    pub(crate) fn note_written(&self) {
        // Release: the change is before the flag; the sync that clears the flag (Acquire)
        // therefore flushes it, or the flag stays raised for the next round.
        self.dirty.store(true, Ordering::Release);
    }
}

impl SyncSet {
    /// Starts tracking `file` (a description opened for this set alone), raised: a file
    /// being created or opened for writing is synced by the next round.
    pub(crate) fn track(&self, file: File) -> Arc<Tracked> {
        let tracked = Arc::new(Tracked { file, dirty: AtomicBool::new(true) });
        self.files.lock().expect("sync set lock").push(tracked.clone());
        tracked
    }

    /// Files tracked (still in use or not yet synced since their last write).
    pub fn len(&self) -> usize {
        self.files.lock().expect("sync set lock").len()
    }

    /// Whether no file is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Files written since they were last synced (what the next round syncs).
    pub fn pending(&self) -> usize {
        let files = self.files.lock().expect("sync set lock");
        files.iter().filter(|t| t.dirty.load(Ordering::Acquire)).count()
    }

    /// One round: `fdatasync` of every file written since the last round. The first error
    /// ends the round and is returned (the caller fails its clock for good: pages whose
    /// writeback failed are marked clean, so no later sync can prove them durable). A file
    /// no device uses any more is dropped once it is clean.
    pub fn sync(&self) -> io::Result<()> {
        let files: Vec<Arc<Tracked>> = self.files.lock().expect("sync set lock").clone();
        for tracked in &files {
            if tracked.dirty.swap(false, Ordering::AcqRel) {
                let began = std::time::Instant::now();
                let synced = tracked.file.sync_data();
                crate::latency::record_sync(began.elapsed().as_nanos() as u64);
                if let Err(e) = synced {
                    tracked.dirty.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }
        drop(files);
        let mut files = self.files.lock().expect("sync set lock");
        // Only this list holds it (its device is gone) and it is clean: nothing left to do.
        files.retain(|t| Arc::strong_count(t) > 1 || t.dirty.load(Ordering::Acquire));
        Ok(())
    }
}
