//! The log device: the one narrow trait every byte of the store goes through, a volume
//! (a directory of devices), and the in-memory and fault-injecting implementations.
//! The real one (files + mmap) lives in `file.rs`, which with `heap.rs` holds all the `unsafe`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One file of the store. Reads borrow (the real device lends its mmap), writes copy.
pub trait LogDevice: Debug + Send {
    /// Bytes in the device.
    fn len(&self) -> u64;
    /// Whether the device is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `len` bytes at `offset`, borrowed; past the end is an error, never a panic.
    fn read(&self, offset: u64, len: usize) -> io::Result<&[u8]>;
    /// Writes `bytes` at `offset` (within `len()`).
    fn write(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Grows or shrinks the device; new bytes read as zero.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes every write so far durable (fdatasync).
    fn sync(&mut self) -> io::Result<()>;
    /// Returns the space of a range to the file system; it reads as zero afterwards.
    fn punch(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// The first offset at or after `offset` that is not a hole (`SEEK_DATA`), or `None`
    /// when only holes follow. Scans use it so that reading a sparse file does not touch
    /// (and, on tmpfs, allocate) its holes. Devices without holes answer `offset` itself.
    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        Ok((offset < self.len()).then_some(offset))
    }
}

/// A directory of devices, named by flat file names.
pub trait Volume: Debug + Send {
    /// The names of the devices present (no I/O if the directory was never created).
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens an existing device.
    fn open(&self, name: &str) -> io::Result<Box<dyn LogDevice>>;
    /// Creates a device of `len` zero bytes (an existing one is an error).
    fn create(&self, name: &str, len: u64) -> io::Result<Box<dyn LogDevice>>;
    /// Asks for the device `name` of `len` zero bytes to be made ahead, off the caller's
    /// thread, its directory entry durable, for a later [`Volume::take_prepared`]. A hint: a
    /// volume may do nothing, and one asked while another is pending or unclaimed ignores it.
    fn prepare(&self, _name: &str, _len: u64) {}
    /// The device `name` that [`Volume::prepare`] made, its directory entry already durable;
    /// `None` when it was not asked for or making it failed (the caller creates it). Waits
    /// while it is still being made. An error opening it leaves it for the next call.
    fn take_prepared(&self, _name: &str) -> Option<io::Result<Box<dyn LogDevice>>> {
        None
    }
    /// Removes a device.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations and removals durable (fsync of the directory).
    fn sync(&self) -> io::Result<()>;
    /// Where the volume is, for reports (a path, or a label for memory volumes).
    fn describe(&self, name: &str) -> String;
}

/// Durable images of an in-memory volume: what survives a simulated power cut.
type Images = Arc<Mutex<BTreeMap<String, Arc<Mutex<Vec<u8>>>>>>;

/// A volume in memory. Clones share the files. Each device works on its own copy and
/// `sync` copies it to the shared image, so dropping a store without a flush is a power cut:
/// only synced bytes survive. Tests use it to check what the durability classes promise.
#[derive(Clone, Debug, Default)]
pub struct MemoryVolume {
    label: String,
    images: Images,
}

impl MemoryVolume {
    /// An empty volume named `label` in reports.
    pub fn new(label: &str) -> MemoryVolume {
        MemoryVolume { label: label.to_string(), images: Images::default() }
    }

    /// The durable bytes of a file (for crash-image tests).
    pub fn image(&self, name: &str) -> Option<Vec<u8>> {
        let images = self.images.lock().expect("volume lock");
        images.get(name).map(|i| i.lock().expect("image lock").clone())
    }

    /// Replaces the durable bytes of a file (for crash-image tests).
    pub fn set_image(&self, name: &str, bytes: Vec<u8>) {
        let mut images = self.images.lock().expect("volume lock");
        images.insert(name.to_string(), Arc::new(Mutex::new(bytes)));
    }

    /// Total durable bytes (what a disk would hold).
    pub fn bytes(&self) -> u64 {
        let images = self.images.lock().expect("volume lock");
        images.values().map(|i| i.lock().expect("image lock").len() as u64).sum()
    }
}

impl Volume for MemoryVolume {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.images.lock().expect("volume lock").keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn LogDevice>> {
        let images = self.images.lock().expect("volume lock");
        let image = images.get(name).ok_or(io::ErrorKind::NotFound)?.clone();
        let bytes = image.lock().expect("image lock").clone();
        Ok(Box::new(MemoryDevice { bytes, image }))
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Box<dyn LogDevice>> {
        let mut images = self.images.lock().expect("volume lock");
        if images.contains_key(name) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        // A power cut right after creation leaves an empty file, as on a real file system.
        let image = Arc::new(Mutex::new(Vec::new()));
        images.insert(name.to_string(), image.clone());
        let bytes = vec![0; len as usize];
        Ok(Box::new(MemoryDevice { bytes, image }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut images = self.images.lock().expect("volume lock");
        images.remove(name).map(|_| ()).ok_or(io::ErrorKind::NotFound.into())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("{}:{name}", self.label)
    }
}

/// A device in memory: a working copy plus the durable image it syncs to.
#[derive(Debug)]
struct MemoryDevice {
    bytes: Vec<u8>,
    image: Arc<Mutex<Vec<u8>>>,
}

impl LogDevice for MemoryDevice {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let range = span(offset, len as u64, self.len())?;
        Ok(&self.bytes[range])
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let range = span(offset, bytes.len() as u64, self.len())?;
        self.bytes[range].copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.bytes.resize(len as usize, 0);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut image = self.image.lock().expect("image lock");
        image.clear();
        image.extend_from_slice(&self.bytes);
        Ok(())
    }

    fn punch(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let range = span(offset, len, self.len())?;
        self.bytes[range].fill(0);
        Ok(())
    }
}

/// The byte range `offset..offset + len` if it lies within `size`.
pub(crate) fn span(offset: u64, len: u64, size: u64) -> io::Result<std::ops::Range<usize>> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(offset as usize..end as usize),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("range {offset}+{len} past the end ({size})"),
        )),
    }
}

/// What a [`FaultyVolume`] does wrong; shared by every device it made, changed by the test.
#[derive(Debug, Default)]
pub struct Faults {
    /// Operations (write, set_len, sync, create, remove) left before each one fails with EIO;
    /// negative: no countdown.
    countdown: AtomicI64,
    /// Bytes that may still be written or allocated before ENOSPC; `u64::MAX`: unlimited.
    space_bytes: AtomicU64,
    /// When the countdown fires on a write, the first half of it lands anyway (a torn write).
    torn: AtomicU64,
    /// An OS error every `create` fails with while set (0: none), e.g. EMFILE.
    create_error: AtomicI64,
}

impl Faults {
    /// No faults.
    pub fn new() -> Arc<Faults> {
        let faults = Faults::default();
        faults.countdown.store(-1, Ordering::Relaxed);
        faults.space_bytes.store(u64::MAX, Ordering::Relaxed);
        Arc::new(faults)
    }

    /// The `n`th mutating operation from now fails with EIO, and every one after it.
    pub fn fail_after(&self, n: u64) {
        self.countdown.store(n as i64, Ordering::Relaxed);
    }

    /// A write hit by the countdown lands half of its bytes first.
    pub fn tear_writes(&self, torn: bool) {
        self.torn.store(torn as u64, Ordering::Relaxed);
    }

    /// Only `bytes` more may be written or allocated; then ENOSPC.
    pub fn limit_space(&self, bytes: u64) {
        self.space_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Every `create` fails with OS error `errno` (e.g. `libc::EMFILE`: out of descriptors)
    /// until healed; nothing else fails.
    pub fn refuse_creates(&self, errno: i32) {
        self.create_error.store(i64::from(errno), Ordering::Relaxed);
    }

    /// Clears every fault.
    pub fn heal(&self) {
        self.countdown.store(-1, Ordering::Relaxed);
        self.space_bytes.store(u64::MAX, Ordering::Relaxed);
        self.create_error.store(0, Ordering::Relaxed);
    }

    fn tick(&self) -> io::Result<()> {
        let left = self.countdown.load(Ordering::Relaxed);
        if left < 0 {
            return Ok(());
        }
        if left == 0 {
            return Err(io::Error::other("injected I/O error"));
        }
        self.countdown.store(left - 1, Ordering::Relaxed);
        Ok(())
    }

    fn spend(&self, bytes: u64) -> io::Result<()> {
        let left = self.space_bytes.load(Ordering::Relaxed);
        if left == u64::MAX {
            return Ok(());
        }
        if bytes > left {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.space_bytes.store(left - bytes, Ordering::Relaxed);
        Ok(())
    }
}

/// A volume that injects the faults of a shared [`Faults`] into another volume.
#[derive(Debug)]
pub struct FaultyVolume<V> {
    inner: V,
    faults: Arc<Faults>,
}

impl<V: Volume> FaultyVolume<V> {
    /// Wraps `inner`.
    pub fn new(inner: V, faults: Arc<Faults>) -> FaultyVolume<V> {
        FaultyVolume { inner, faults }
    }
}

impl<V: Volume> Volume for FaultyVolume<V> {
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn LogDevice>> {
        let inner = self.inner.open(name)?;
        let faults = self.faults.clone();
        Ok(Box::new(FaultyDevice { inner, faults }))
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Box<dyn LogDevice>> {
        match self.faults.create_error.load(Ordering::Relaxed) {
            0 => {}
            errno => return Err(io::Error::from_raw_os_error(errno as i32)),
        }
        self.faults.tick()?;
        let inner = self.inner.create(name, len)?;
        let faults = self.faults.clone();
        Ok(Box::new(FaultyDevice { inner, faults }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.faults.tick()?;
        self.inner.remove(name)
    }

    fn sync(&self) -> io::Result<()> {
        self.faults.tick()?;
        self.inner.sync()
    }

    fn describe(&self, name: &str) -> String {
        self.inner.describe(name)
    }
}

#[derive(Debug)]
struct FaultyDevice {
    inner: Box<dyn LogDevice>,
    faults: Arc<Faults>,
}

impl LogDevice for FaultyDevice {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<&[u8]> {
        self.inner.read(offset, len)
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.faults.tick() {
            if self.faults.torn.load(Ordering::Relaxed) != 0 {
                let half = &bytes[..bytes.len() / 2];
                self.inner.write(offset, half)?;
            }
            return Err(e);
        }
        self.faults.spend(bytes.len() as u64)?;
        self.inner.write(offset, bytes)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.faults.tick()?;
        self.inner.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.faults.tick()?;
        self.inner.sync()
    }

    fn punch(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.faults.tick()?;
        self.inner.punch(offset, len)
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        self.inner.next_data(offset)
    }
}
