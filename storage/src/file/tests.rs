//! The file device against the files themselves: what it wrote through the map must be in
//! the page cache (what a process crash keeps), its block reservations must cover every
//! store, and a full file system must be ENOSPC, not SIGBUS.

use super::*;
use crate::error::is_no_space;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// A new sparse file of `len` bytes, as `FileVolume::create` makes it.
fn create(path: &Path, len: u64) -> FileDevice {
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(path).unwrap();
    file.set_len(len).unwrap();
    FileDevice::new(file, true, None).unwrap()
}

fn reopen(path: &Path) -> FileDevice {
    FileDevice::new(OpenOptions::new().read(true).write(true).open(path).unwrap(), false, None)
        .unwrap()
}

/// 100 bytes (a typical record) that differ for every `i`.
fn record(i: u64) -> Vec<u8> {
    (0..100u64).map(|j| (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8).collect()
}

fn write(device: &mut FileDevice, model: &mut [u8], offset: u64, bytes: &[u8]) {
    device.write(offset, bytes).unwrap();
    model[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
    assert!(!device.pwrite_only, "this file system has fallocate; the store went to the map");
    let end = offset + bytes.len() as u64;
    assert!(device.reserved_start <= offset && end <= device.reserved_end, "reserved first");
}

/// The device's map and an independent read of the file both hold `model`.
fn check(device: &FileDevice, path: &Path, model: &[u8]) {
    assert!(device.read(0, model.len()).unwrap() == model, "the map differs from the model");
    assert!(fs::read(path).unwrap() == model, "the file differs from the model");
}

/// A file system the test mounted (it runs as root); unmounted when dropped, also when the
/// test fails.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn new(kind: &str, options: &[&str]) -> Result<Mount, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut mount = Command::new("mount");
        mount.args(["-t", kind]);
        for option in options {
            mount.args(["-o", option]);
        }
        let out = mount
            .arg(kind)
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!("mount -t {kind} failed: {}", stderr.trim()));
        }
        Ok(Mount { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(self.dir.path()).output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            // Busy: lazily, so the mount never outlives the test.
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).output();
        }
    }
}

#[test]
fn a_write_through_the_map_reaches_the_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let mut device = create(&path, 1 << 20);
    let mut model = vec![0; 1 << 20];
    write(&mut device, &mut model, 100, &record(1));
    write(&mut device, &mut model, 5_000, &record(2));
    // The blocks were allocated ahead (unwritten extents count in st_blocks), not by the store.
    let allocated = fs::metadata(&path).unwrap().blocks() * 512;
    assert!(allocated >= RESERVE_STEP, "{allocated} bytes allocated");
    // `fs::read` is another descriptor's read(2): it sees what the page cache holds, which is
    // what outlives this process.
    check(&device, &path, &model);
    drop(device);
    assert!(fs::read(&path).unwrap() == model, "the file changed when the map went");
}

#[test]
fn writes_across_a_reserve_step_and_after_a_reopen_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let len = 4 * RESERVE_STEP;
    let mut model = vec![0; len as usize];
    let mut device = create(&path, len);
    // 100-byte appends, as the log makes them: the one at 65_500 spans the first step.
    let across = RESERVE_STEP / 100 * 100;
    assert!(across < RESERVE_STEP && across + 100 > RESERVE_STEP);
    for i in 0..RESERVE_STEP * 3 / 2 / 100 {
        write(&mut device, &mut model, i * 100, &record(i));
        if i * 100 < across {
            assert_eq!((device.reserved_start, device.reserved_end), (0, RESERVE_STEP));
        }
    }
    assert_eq!((device.reserved_start, device.reserved_end), (0, across + RESERVE_STEP));
    // One write longer than a step, over two boundaries: it reserves exactly itself.
    let big: Vec<u8> = (0..RESERVE_STEP + 1_000).map(|i| (i % 251) as u8).collect();
    let at = 2 * RESERVE_STEP - 500;
    write(&mut device, &mut model, at, &big);
    assert_eq!(device.reserved_end, at + big.len() as u64);
    check(&device, &path, &model);
    drop(device);

    // After a reopen nothing is known allocated: the first write reserves from its offset.
    let mut device = reopen(&path);
    assert_eq!((device.reserved_start, device.reserved_end), (0, 0));
    let at = 3 * RESERVE_STEP + 700;
    write(&mut device, &mut model, at, &record(1_000));
    assert_eq!((device.reserved_start, device.reserved_end), (at, len));
    // A write before the known range reserves again, from its own offset.
    write(&mut device, &mut model, at - 300, &record(1_001));
    assert_eq!((device.reserved_start, device.reserved_end), (at - 300, len));
    // A punch deallocates: the range ends where it starts, and a write there reserves again.
    device.punch(at, 100).unwrap();
    model[at as usize..at as usize + 100].fill(0);
    assert_eq!((device.reserved_start, device.reserved_end), (at - 300, at));
    write(&mut device, &mut model, at + 50, &record(1_002));
    assert_eq!((device.reserved_start, device.reserved_end), (at + 50, len));
    check(&device, &path, &model);

    // A truncation deallocates too, and what grows back is a hole until written.
    device.set_len(3 * RESERVE_STEP).unwrap();
    assert_eq!((device.reserved_start, device.reserved_end), (3 * RESERVE_STEP, 3 * RESERVE_STEP));
    device.set_len(len).unwrap();
    model[3 * RESERVE_STEP as usize..].fill(0);
    write(&mut device, &mut model, 3 * RESERVE_STEP + 8, &record(1_003));
    check(&device, &path, &model);
}

#[test]
fn a_full_file_system_is_enospc_not_sigbus() {
    let mount = match Mount::new("tmpfs", &["size=1m"]) {
        Ok(mount) => mount,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let path = mount.path().join("segment");
    // Sparse and 4 times the file system: the stores would run out of blocks mid-map.
    let len = 4 << 20;
    let mut device = create(&path, len);
    let batch: Vec<u8> = (0..32).flat_map(record).collect();
    let mut offset = 0;
    let error = loop {
        assert!(offset + batch.len() as u64 <= len, "a 1 MiB file system took {offset} bytes");
        match device.write(offset, &batch) {
            Ok(()) => offset += batch.len() as u64,
            Err(e) => break e,
        }
    };
    assert!(is_no_space(&error), "not ENOSPC: {error}");
    assert!(!device.pwrite_only, "tmpfs has fallocate; the stores went to the map");
    // The step ahead is given up before the write is: the file system fills to the last page.
    let batch_pages = (batch.len() as u64).div_ceil(4096) * 4096;
    assert!(offset + batch_pages + 4096 >= 1 << 20, "ENOSPC after {offset} bytes of 1 MiB");
    // Everything before the failed write is in the file, and the failed one copied nothing.
    // (read(2) of a tmpfs hole allocates nothing; a load from one through the map would.)
    let file = fs::read(&path).unwrap();
    for start in (0..offset as usize).step_by(batch.len()) {
        assert!(file[start..start + batch.len()] == batch[..], "batch at {start} lost");
    }
    assert!(file[offset as usize..].iter().all(|&b| b == 0), "the failed write left bytes");
    assert!(device.read(0, offset as usize).unwrap() == &file[..offset as usize]);
    let again = device.write(offset, &batch).unwrap_err();
    assert_eq!(again.raw_os_error(), Some(libc::ENOSPC), "{again}");
    drop(device);
}

#[test]
fn without_fallocate_the_device_writes_with_pwrite() {
    // ramfs has no fallocate (EOPNOTSUPP), and no size limit to hit.
    let mount = match Mount::new("ramfs", &[]) {
        Ok(mount) => mount,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let path = mount.path().join("segment");
    let mut device = create(&path, 1 << 20);
    let mut model = vec![0; 1 << 20];
    for (i, offset) in [4_096u64, 100, 70_000].into_iter().enumerate() {
        device.write(offset, &record(i as u64)).unwrap();
        model[offset as usize..offset as usize + 100].copy_from_slice(&record(i as u64));
        assert!(device.pwrite_only, "fell back to pwrite for good");
        assert_eq!((device.reserved_start, device.reserved_end), (0, 0));
    }
    check(&device, &path, &model);
    drop(device);
}

/// Pages of `device`'s file that are in memory (`mincore` over its map).
fn resident_pages(device: &FileDevice) -> usize {
    let map = device.map.as_ref().expect("mapped");
    let pages = map.len().div_ceil(4096);
    let mut resident = vec![0u8; pages];
    // SAFETY: the map is `map.len()` bytes at a page-aligned address and `resident` has one
    // byte per page of it, which is what mincore writes.
    let rc = unsafe {
        libc::mincore(map.as_ptr() as *mut libc::c_void, map.len(), resident.as_mut_ptr())
    };
    assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
    resident.iter().filter(|&&page| page & 1 != 0).count()
}

#[test]
fn a_first_write_reads_no_read_ahead_window_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut device = create(&dir.path().join("segment"), 8 << 20);
    assert!(device.random, "a new file is advised MADV_RANDOM");
    device.write(0, &record(0)).unwrap();
    device.write(100, &record(1)).unwrap();
    // One page written; read-ahead would have brought in (and zeroed) a whole window.
    let resident = resident_pages(&device);
    assert!(resident <= 2, "{resident} pages resident after writing one");
    drop(device);
    let mut device = reopen(&dir.path().join("segment"));
    assert!(!device.random, "a file opened to be read keeps read-ahead (replay)");
    device.write(200, &record(2)).unwrap();
    assert!(device.random, "and loses it once written to");
}

/// The background sync's set follows exactly the files a tracked volume writes: a created
/// file and its directory are raised, a round clears them, a write or a removal raises only
/// what it changed, and a file no device uses leaves the set once clean.
#[test]
fn a_tracked_volume_raises_what_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let set = Arc::new(SyncSet::default());
    let volume = FileVolume::tracked(dir.path().join("endpoint"), set.clone());
    let untracked = FileVolume::new(dir.path().join("other"));
    let mut other = untracked.create("b", 1 << 16).unwrap();
    other.write(8, b"not ours").unwrap();
    assert_eq!((set.len(), set.pending()), (0, 0), "an untracked volume adds nothing");

    let mut device = volume.create("a", 1 << 16).unwrap();
    assert_eq!((set.len(), set.pending()), (2, 2), "the new file and its directory");
    set.sync().unwrap();
    assert_eq!(set.pending(), 0);
    set.sync().unwrap();
    assert_eq!(set.len(), 2, "both still in use");

    device.write(64, &record(1)).unwrap();
    assert_eq!(set.pending(), 1, "the written file only");
    set.sync().unwrap();
    device.punch(0, 4096).unwrap();
    assert_eq!(set.pending(), 1, "a punch changes the file too");
    set.sync().unwrap();
    device.set_len(1 << 15).unwrap();
    assert_eq!(set.pending(), 1, "so does a truncation");
    set.sync().unwrap();

    drop(device);
    volume.remove("a").unwrap();
    assert_eq!(set.pending(), 1, "the removal raises the directory");
    set.sync().unwrap();
    assert_eq!((set.len(), set.pending()), (1, 0), "the file left, the directory stays");

    let reopened = FileVolume::tracked(dir.path().join("other"), set.clone());
    let mut device = reopened.open("b").unwrap();
    assert_eq!(set.pending(), 1, "an opened file is tracked from its opening");
    assert_eq!(device.read(8, 8).unwrap(), b"not ours");
    set.sync().unwrap();
    device.write(16, b"ours now").unwrap();
    assert_eq!(set.pending(), 1);
}

#[test]
fn a_file_made_ahead_is_taken_sized_and_zero_once_and_only_by_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let volume = FileVolume::new(dir.path()).making_ahead();
    assert!(volume.take_prepared("0000000001.seg").is_none(), "nothing was asked for");
    volume.prepare("0000000001.seg", 64 * 1024);
    // A second ask while one is pending is a hint dropped: only the first is made.
    volume.prepare("0000000002.seg", 64 * 1024);
    assert!(volume.take_prepared("0000000002.seg").is_none(), "another name is not taken");
    let mut device = volume.take_prepared("0000000001.seg").expect("asked for").unwrap();
    assert_eq!(device.len(), 64 * 1024);
    assert!(device.read(0, 64 * 1024).unwrap().iter().all(|&b| b == 0));
    device.write(0, b"written").unwrap();
    assert_eq!(fs::read(dir.path().join("0000000001.seg")).unwrap()[..7], *b"written");
    assert!(volume.take_prepared("0000000001.seg").is_none(), "taken once");
    assert!(!dir.path().join("0000000002.seg").exists());
    // A name that exists already is not made (nor clobbered): the ask is dropped.
    volume.prepare("0000000001.seg", 64 * 1024);
    assert!(volume.take_prepared("0000000001.seg").is_none());
    assert_eq!(fs::read(dir.path().join("0000000001.seg")).unwrap()[..7], *b"written");
    // Without the thread, asking does nothing.
    let plain = FileVolume::new(dir.path().join("plain"));
    plain.prepare("0000000001.seg", 4096);
    assert!(plain.take_prepared("0000000001.seg").is_none());
    assert!(!dir.path().join("plain").exists());
}
