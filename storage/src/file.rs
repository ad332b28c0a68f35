//! The real log device: a file read and written through one shared mmap (`MAP_SHARED`).
//!
//! A write is a copy into the map: no system call, and the bytes are in the page cache at
//! once, so they survive a process crash (a power cut needs `sync`). But a store into a
//! mapped *sparse* file on a full disk is a SIGBUS, while a full disk must be ENOSPC, which
//! becomes `NO_SPACE`. So before storing, the device allocates the blocks it stores into with
//! `fallocate` (mode 0, inside the file, so the size does not change), where a full disk is
//! an ordinary ENOSPC; see [`RESERVE_STEP`]. On a file system without `fallocate` the device
//! writes with `pwrite` instead, which reports ENOSPC itself.
//!
//! Allocated blocks make a store safe only where they are overwritten in place (ext4, XFS,
//! tmpfs); on a copy-on-write file system (btrfs, ZFS, bcachefs) a store may still need space,
//! so there the device writes with `pwrite` too (`copies_on_write`). A read error while
//! paging in a partly written page is a SIGBUS too, as it is for reads.
//!
//! Reads borrow the map, so a GET of a small value copies nothing. `fdatasync` writes back
//! the pages dirtied through the map like those dirtied by `pwrite`: it is one page cache,
//! and Linux's `msync(MS_SYNC)` is itself `vfs_fsync_range(.., datasync = 1)`, the call
//! `fdatasync` makes for the whole file. This and `heap.rs` (one `mallopt`) are the only
//! modules with `unsafe`.
#![allow(unsafe_code)]

use crate::device::{span, LogDevice, Volume};
use crate::sync_set::{SyncSet, Tracked};
use memmap2::MmapMut;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};

/// A directory of segment files, created on the first write (an idle endpoint has none).
///
/// The store assumes it owns the directory: another process truncating a mapped file would
/// turn a read or a write into a SIGBUS. `cradle` takes one data directory per node.
#[derive(Debug)]
pub struct FileVolume {
    dir: PathBuf,
    /// Where its files and its directory are tracked for a background sync, if anywhere.
    sync_set: Option<Arc<SyncSet>>,
    /// The directory, once it exists, in `sync_set`: raised when a file is created or removed.
    dir_tracked: OnceLock<Arc<Tracked>>,
    /// The thread making files ahead (`Volume::prepare`), if asked for ([`FileVolume::making_ahead`])
    /// and it could be started; without it files are made by `create`.
    maker: Option<Maker>,
}

/// A thread of the volume's own that makes files ahead: creates, sizes and syncs the
/// directory, so the loop that later takes the file does none of it (≈0.4 ms here).
#[derive(Debug)]
struct Maker {
    /// `None` only while dropping.
    asks: Option<mpsc::Sender<(String, u64)>>,
    made: Arc<(Mutex<Made>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Maker {
    /// Waits for a file being made: once the volume is gone, its directory changes no more.
    fn drop(&mut self) {
        self.asks = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join(); // (a panic there was the maker's; the volume is gone)
        }
    }
}

/// The file made ahead, if any.
#[derive(Debug, Default, PartialEq, Eq)]
enum Made {
    #[default]
    Nothing,
    Making(String),
    Ready(String),
}

impl Maker {
    fn start(dir: PathBuf) -> Option<Maker> {
        let (asks, asked) = mpsc::channel::<(String, u64)>();
        let made = Arc::new((Mutex::new(Made::Nothing), Condvar::new()));
        let theirs = made.clone();
        let spawned = std::thread::Builder::new().name("cradle-segments".into()).spawn(move || {
            // Ends when the volume (its sender) is dropped.
            for (name, len) in asked {
                // Not made: `create` makes it on the loop and reports what fails.
                let done = make_durable(&dir, &dir.join(&name), len);
                let (lock, ready) = &*theirs;
                let mut made = lock.lock().expect("maker lock");
                *made = if done.is_ok() { Made::Ready(name) } else { Made::Nothing };
                ready.notify_all();
            }
        });
        let thread = Some(spawned.ok()?);
        Some(Maker { asks: Some(asks), made, thread })
    }
}

/// Creates `path` of `len` zero bytes (sparse) and makes its directory entry durable. A file
/// it made and could not finish goes again; one that was there already is left alone.
fn make_durable(dir: &Path, path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).create_new(true).open(path)?;
    let made = file.set_len(len).and_then(|()| File::open(dir)?.sync_all());
    if made.is_err() {
        let _ = fs::remove_file(path); // (the error that counts is `made`'s)
    }
    made
}

impl FileVolume {
    /// The volume at `dir`; nothing is created until a device is.
    pub fn new(dir: impl Into<PathBuf>) -> FileVolume {
        FileVolume { dir: dir.into(), sync_set: None, dir_tracked: OnceLock::new(), maker: None }
    }

    /// The volume with a thread of its own that makes the files asked for by
    /// [`Volume::prepare`] ahead. Start it from an unpinned thread: the maker inherits the
    /// caller's CPUs, and on a serving loop's CPU it would take that loop's time. Without the
    /// thread (it could not be started), `prepare` does nothing.
    pub fn making_ahead(self) -> FileVolume {
        let maker = Maker::start(self.dir.clone());
        FileVolume { maker, ..self }
    }

    /// The volume at `dir`, whose files (and the directory's entries) `sync_set` syncs once
    /// they are written: the `memory` class's background sync.
    pub fn tracked(dir: impl Into<PathBuf>, sync_set: Arc<SyncSet>) -> FileVolume {
        FileVolume { sync_set: Some(sync_set), ..FileVolume::new(dir) }
    }

    /// The existing file `name` as a device, tracked; `written`: see [`FileDevice::new`].
    fn open_device(&self, name: &str, written: bool) -> io::Result<FileDevice> {
        let file = OpenOptions::new().read(true).write(true).open(self.dir.join(name))?;
        let tracked = self.track(name)?;
        FileDevice::new(file, written, tracked)
    }

    /// Tracks the file `name` in the sync set (a description of its own, see `sync_set`).
    fn track(&self, name: &str) -> io::Result<Option<Arc<Tracked>>> {
        let Some(set) = &self.sync_set else { return Ok(None) };
        Ok(Some(set.track(File::open(self.dir.join(name))?)))
    }

    /// The directory's entries changed (a file created or removed).
    fn note_entries_changed(&self) -> io::Result<()> {
        let Some(set) = &self.sync_set else { return Ok(()) };
        match self.dir_tracked.get() {
            Some(dir) => dir.note_written(),
            None => {
                // Raised from the start: the first round syncs it.
                let dir = set.track(File::open(&self.dir)?);
                let _ = self.dir_tracked.set(dir);
            }
        }
        Ok(())
    }
}

impl Volume for FileVolume {
    fn list(&self) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other?,
        };
        let mut names = Vec::new();
        for entry in entries {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn LogDevice>> {
        Ok(Box::new(self.open_device(name, false)?))
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Box<dyn LogDevice>> {
        fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(name);
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        let made = (|| {
            // Sparse: the blocks are allocated by the writes (`reserve`), where ENOSPC shows.
            file.set_len(len)?;
            let tracked = self.track(name)?;
            self.note_entries_changed()?;
            FileDevice::new(file, true, tracked)
        })();
        match made {
            Ok(device) => Ok(Box::new(device)),
            Err(e) => {
                // Out of maps or descriptors half-way: the file goes, so the next write
                // (after the limit lifts) can create it again.
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }

    fn prepare(&self, name: &str, len: u64) {
        let Some(maker) = &self.maker else { return };
        let mut made = maker.made.0.lock().expect("maker lock");
        let Some(asks) = &maker.asks else { return };
        if *made == Made::Nothing && asks.send((name.to_string(), len)).is_ok() {
            *made = Made::Making(name.to_string());
        }
    }

    fn take_prepared(&self, name: &str) -> Option<io::Result<Box<dyn LogDevice>>> {
        let (lock, ready) = &*self.maker.as_ref()?.made;
        let mut made = lock.lock().expect("maker lock");
        while matches!(&*made, Made::Making(n) if n == name) {
            made = ready.wait(made).expect("maker lock");
        }
        if !matches!(&*made, Made::Ready(n) if n == name) {
            return None;
        }
        Some(self.open_device(name, true).map(|device| {
            *made = Made::Nothing;
            Box::new(device) as Box<dyn LogDevice>
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))?;
        self.note_entries_changed()
    }

    fn sync(&self) -> io::Result<()> {
        match File::open(&self.dir) {
            Ok(dir) => dir.sync_all(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn describe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// The process's soft limit of open files (RLIMIT_NOFILE), read without a descriptor (the
/// moment it matters, none is left to read `/proc/self/limits` with).
pub(crate) fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a writable rlimit that outlives the call.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Bytes of blocks one `fallocate` allocates from a write's offset on (or the write's own
/// length, if longer). A larger step makes fewer system calls (one per 64 KiB of log instead
/// of one `pwrite` per write); it also holds more disk allocated ahead of each file being
/// written (the active segment of every written endpoint, each core's blob segment: up to
/// 64 KiB each, zeros until written), and an endpoint gets `NO_SPACE` while up to that much
/// may still be free.
const RESERVE_STEP: u64 = 64 << 10;

/// Whether `file` lives on a copy-on-write file system (btrfs, ZFS, bcachefs), where an
/// overwrite of allocated blocks still needs new space: a store into the map could then be a
/// SIGBUS on a full disk whatever was reserved, so such files are written with `pwrite`.
fn copies_on_write(file: &File) -> io::Result<bool> {
    const COPY_ON_WRITE: [i64; 3] = [0x9123_683e, 0x2fc1_2fc1, 0xca45_1a4e];
    // SAFETY: all-zero bytes are a valid statfs, which fstatfs fills; the descriptor is open.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `stat` is a writable statfs that outlives the call.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    Ok(COPY_ON_WRITE.contains(&(stat.f_type as i64)))
}

/// One segment file and its shared map.
#[derive(Debug)]
struct FileDevice {
    file: File,
    map: Option<MmapMut>,
    len: u64,
    /// `reserved_start..reserved_end`: blocks this device allocated (`fallocate`) and has
    /// not punched or truncated since; a store into them cannot fault for space. Empty after
    /// opening: which blocks of an existing file are allocated is not known.
    reserved_start: u64,
    reserved_end: u64,
    /// `fallocate` is not supported: every write is a `pwrite` (a store could be a SIGBUS).
    pwrite_only: bool,
    /// The map is advised `MADV_RANDOM`: set for a new file and at the first write into an
    /// opened one (see `advise_random`).
    random: bool,
    /// Raised after every change when a background sync tracks the file.
    tracked: Option<Arc<Tracked>>,
}

impl FileDevice {
    /// `written`: the file is being written (a new one), see `random`.
    fn new(file: File, written: bool, tracked: Option<Arc<Tracked>>) -> io::Result<FileDevice> {
        let mut device = FileDevice {
            file,
            map: None,
            len: 0,
            reserved_start: 0,
            reserved_end: 0,
            pwrite_only: false,
            random: written,
            tracked,
        };
        device.pwrite_only = copies_on_write(&device.file)?;
        device.remap()?;
        Ok(device)
    }

    fn remap(&mut self) -> io::Result<()> {
        self.map = None;
        self.len = self.file.metadata()?.len();
        if self.len > 0 {
            // SAFETY: this process owns the file (see FileVolume) and the store opens one
            // device per file, so only this map changes its bytes. The map is written only by
            // `write` and truncated only by `set_len`, both `&mut self`: no slice `read` lent
            // is alive then, and `set_len` maps again before any access. A store cannot fault
            // for space: `write` allocates the blocks first (see `reserve`).
            self.map = Some(unsafe { MmapMut::map_mut(&self.file)? });
        }
        if self.random {
            self.advise_random()?;
        }
        Ok(())
    }

    /// No read-ahead on faults: a store into a page not yet in memory would otherwise read
    /// (for a sparse file: zero) a whole read-ahead window around it; on a fresh node the
    /// first write of each endpoint did that for its segment, which took the loop a second.
    /// Files only read (a replay, sealed segments) keep the kernel's read-ahead.
    fn advise_random(&mut self) -> io::Result<()> {
        self.random = true;
        match &self.map {
            Some(map) => map.advise(memmap2::Advice::Random),
            None => Ok(()),
        }
    }

    /// Makes sure the blocks of `offset..end` are allocated, taking [`RESERVE_STEP`] bytes
    /// from `offset` on when they are not. The log appends at its tail, so the step ahead is
    /// what the next writes use. A failure (ENOSPC) allocates nothing the device counts on.
    fn reserve(&mut self, offset: u64, end: u64) -> io::Result<()> {
        if self.reserved_start <= offset && end <= self.reserved_end {
            return Ok(());
        }
        let mut reserve_end = end.max(offset.saturating_add(RESERVE_STEP)).min(self.len);
        assert!(offset < end && end <= reserve_end, "a non-empty write within the device");
        if let Err(e) = self.allocate(offset, reserve_end) {
            // The step ahead may not fit where the write itself does: a nearly full disk
            // answers NO_SPACE at the last write that fits, not 64 KiB early.
            if reserve_end == end || e.raw_os_error() != Some(libc::ENOSPC) {
                return Err(e);
            }
            self.allocate(offset, end)?;
            reserve_end = end;
        }
        // Allocated in one piece with the known range, or (after an open, or a write before
        // it) instead of it.
        if !(self.reserved_start..=self.reserved_end).contains(&offset) {
            self.reserved_start = offset;
        }
        self.reserved_end = reserve_end;
        Ok(())
    }

    fn note_written(&self) {
        if let Some(tracked) = &self.tracked {
            tracked.note_written();
        }
    }

    /// `fallocate` of `offset..end` (mode 0: the file size does not change).
    fn allocate(&self, offset: u64, end: u64) -> io::Result<()> {
        let (offset, len) = (offset as libc::off_t, (end - offset) as libc::off_t);
        // SAFETY: fallocate reads no memory of ours; the descriptor is open for the call.
        if unsafe { libc::fallocate(self.file.as_raw_fd(), 0, offset, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl LogDevice for FileDevice {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let range = span(offset, len as u64, self.len)?;
        match &self.map {
            Some(map) => Ok(&map[range]),
            None => Ok(&[]),
        }
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let range = span(offset, bytes.len() as u64, self.len)?;
        if bytes.is_empty() {
            return Ok(());
        }
        if !self.pwrite_only {
            match self.reserve(offset, range.end as u64) {
                // No fallocate here, so nothing makes a store safe; for good, it will not
                // appear later.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => self.pwrite_only = true,
                other => other?,
            }
        }
        if self.pwrite_only {
            self.file.write_all_at(bytes, offset)?;
        } else {
            if !self.random {
                self.advise_random()?;
            }
            // Unmapped with bytes only after a failed `set_len`, which reported its error.
            let map = self.map.as_mut().ok_or_else(|| io::Error::other("segment not mapped"))?;
            map[range].copy_from_slice(bytes);
        }
        self.note_written();
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        // A truncation deallocates everything past the new end.
        self.reserved_end = self.reserved_end.min(len);
        self.reserved_start = self.reserved_start.min(self.reserved_end);
        self.note_written(); // (raised first: a failed call may have changed the size)
        self.file.set_len(len)?;
        self.remap()
    }

    fn sync(&mut self) -> io::Result<()> {
        // Covers the stores through the map as well (see the module comment).
        let began = std::time::Instant::now();
        let synced = self.file.sync_data();
        crate::latency::record_sync(began.elapsed().as_nanos() as u64);
        synced
    }

    fn punch(&mut self, offset: u64, len: u64) -> io::Result<()> {
        span(offset, len, self.len)?;
        // Punched blocks are deallocated: a store there must allocate them again. Lowered
        // before the call, which may fail after punching some.
        if offset < self.reserved_end && offset + len > self.reserved_start {
            self.reserved_end = offset.max(self.reserved_start);
        }
        self.note_written();
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate reads no memory of ours; the descriptor is open for the call.
        let rc = unsafe {
            libc::fallocate(self.file.as_raw_fd(), mode, offset as libc::off_t, len as libc::off_t)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        if offset >= self.len {
            return Ok(None);
        }
        // SAFETY: lseek reads no memory of ours; the descriptor is open for the call. Moving
        // the file position is harmless: every read and write here is positional.
        let at =
            unsafe { libc::lseek(self.file.as_raw_fd(), offset as libc::off_t, libc::SEEK_DATA) };
        if at >= 0 {
            return Ok(Some(at as u64));
        }
        match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            // A file system without SEEK_DATA: every byte counts as data.
            e if e.raw_os_error() == Some(libc::EINVAL) => Ok(Some(offset)),
            e => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
