//! Crash images: damaged segment files, each with its documented outcome (README.md).

mod common;

use common::{open, small_config, value};
use std::fs;
use std::path::{Path, PathBuf};
use storage::{FileVolume, Store, StoreConfig, StoreError};

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

struct Fixture {
    dir: tempfile::TempDir,
    config: StoreConfig,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { dir: tempfile::tempdir().unwrap(), config: small_config() }
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("ep-0")
    }

    fn open(&self) -> (Store, storage::BlobStore, storage::RecoveryReport) {
        let log = Box::new(FileVolume::new(self.log_dir()));
        let blobs = Box::new(FileVolume::new(self.dir.path().join("blobs")));
        open(log, blobs, &self.config)
    }

    fn segment(&self, n: u64) -> PathBuf {
        self.log_dir().join(format!("{n:010}.seg"))
    }

    /// Writes keys `0..n` (one flush each 10) and returns the log end after each key.
    fn write(&self, n: u32) -> Vec<u64> {
        let (mut store, mut blobs, _) = self.open();
        let mut ends = Vec::new();
        for i in 0..n {
            store.put(&mut blobs, &key(i), &value(i.into(), 300), None).unwrap();
            if i % 10 == 9 || i + 1 == n {
                store.flush(&mut blobs).unwrap();
            }
            ends.push(store.stats().log_bytes);
        }
        ends
    }
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn assert_keys(store: &mut Store, blobs: &mut storage::BlobStore, present: std::ops::Range<u32>) {
    for i in present {
        let got = store.get(blobs, &key(i)).unwrap().map(|(v, _)| v.to_vec());
        assert_eq!(got, Some(value(i.into(), 300)), "key {i}");
    }
}

#[test]
fn torn_last_record_is_cut_and_reported() {
    let f = Fixture::new();
    let ends = f.write(20);
    // The last record (key 19) lost its second half.
    let path = f.segment(0);
    let mut bytes = fs::read(&path).unwrap();
    let (start, end) = (ends[18] as usize, ends[19] as usize);
    bytes[start + 40..end].fill(0);
    fs::write(&path, &bytes).unwrap();

    let (mut store, mut blobs, report) = f.open();
    let torn = report.torn_tail.expect("a torn tail is reported");
    assert_eq!(torn.offset, ends[18]);
    assert!(torn.file.ends_with("0000000000.seg"), "{}", torn.file);
    assert_eq!(report.quarantine, None);
    assert_keys(&mut store, &mut blobs, 0..19);
    assert_eq!(store.get(&mut blobs, &key(19)).unwrap(), None);
    // The log goes on from the cut, and what is written there survives.
    let version = store.put(&mut blobs, &key(19), &value(19, 300), None).unwrap();
    assert_eq!(version, 20, "versions continue past the last durable one");
    store.flush(&mut blobs).unwrap();
    drop((store, blobs));
    let (mut store, mut blobs, report) = f.open();
    assert_eq!((report.torn_tail, report.quarantine), (None, None));
    assert_keys(&mut store, &mut blobs, 0..20);
}

#[test]
fn bit_flip_mid_segment_quarantines_and_touches_nothing() {
    let f = Fixture::new();
    let ends = f.write(30);
    let path = f.segment(0);
    let mut bytes = fs::read(&path).unwrap();
    bytes[ends[10] as usize + 100] ^= 0x10; // inside the record of key 11
    fs::write(&path, &bytes).unwrap();
    let before = snapshot(&f.log_dir());

    let (mut store, mut blobs, report) = f.open();
    let corruption = report.quarantine.expect("quarantined");
    assert_eq!(corruption.offset, ends[10]);
    assert!(corruption.file.ends_with("0000000000.seg"));
    assert_eq!(corruption.reason, "checksum mismatch");
    assert_eq!(store.get(&mut blobs, &key(0)), Err(StoreError::Quarantined));
    assert_eq!(store.put(&mut blobs, &key(0), b"x", None), Err(StoreError::Quarantined));
    assert_eq!(store.stats().quarantined, 1);
    drop((store, blobs));
    assert_eq!(snapshot(&f.log_dir()), before, "no file modified");
}

/// Enough keys for several 16 KiB segments.
const MANY: u32 = 200;

#[test]
fn missing_middle_segment_quarantines() {
    let f = Fixture::new();
    f.write(MANY);
    assert!(f.segment(3).exists(), "the test needs several segments");
    fs::remove_file(f.segment(1)).unwrap();
    let before = snapshot(&f.log_dir());
    let (_, _, report) = f.open();
    let corruption = report.quarantine.expect("quarantined");
    assert!(corruption.file.ends_with("0000000001.seg"), "{}", corruption.file);
    assert_eq!(corruption.reason, "segment missing");
    assert_eq!(snapshot(&f.log_dir()), before, "no file modified");
}

#[test]
fn missing_newest_segment_quarantines() {
    let f = Fixture::new();
    f.write(MANY);
    let newest = (0..).take_while(|&n| f.segment(n).exists()).last().unwrap();
    fs::remove_file(f.segment(newest)).unwrap();
    let (_, _, report) = f.open();
    let corruption = report.quarantine.expect("the seal of the previous segment names it");
    assert!(corruption.file.ends_with(&format!("{newest:010}.seg")));
}

#[test]
fn newest_segment_truncated_to_zero_is_an_empty_tail() {
    let f = Fixture::new();
    f.write(MANY);
    let newest = (0..).take_while(|&n| f.segment(n).exists()).last().unwrap();
    fs::File::create(f.segment(newest)).unwrap(); // truncates
    let (mut store, mut blobs, report) = f.open();
    assert_eq!(report.quarantine, None);
    assert_eq!(report.torn_tail.expect("reported").offset, 0);
    // Keys in the older segments are served; the lost ones are absent, never wrong.
    let mut present = 0;
    for i in 0..MANY {
        if let Some((v, _)) = store.get(&mut blobs, &key(i)).unwrap() {
            assert_eq!(v, &value(i.into(), 300)[..]);
            present += 1;
        }
    }
    assert!(present > 0 && present < MANY, "{present}");
    store.put(&mut blobs, &key(0), b"again", None).unwrap();
    store.flush(&mut blobs).unwrap();
}

#[test]
fn older_segment_truncated_to_zero_quarantines() {
    let f = Fixture::new();
    f.write(MANY);
    fs::File::create(f.segment(1)).unwrap();
    let before = snapshot(&f.log_dir());
    let (_, _, report) = f.open();
    let corruption = report.quarantine.expect("quarantined");
    assert!(corruption.file.ends_with("0000000001.seg"));
    assert_eq!((corruption.offset, corruption.reason.as_str()), (0, "bad segment header"));
    assert_eq!(snapshot(&f.log_dir()), before, "no file modified");
}

#[test]
fn an_endpoint_that_never_wrote_has_no_files() {
    let f = Fixture::new();
    let (mut store, mut blobs, report) = f.open();
    assert_eq!(report.segments, 0);
    assert_eq!(store.get(&mut blobs, b"k").unwrap(), None);
    store.flush(&mut blobs).unwrap();
    assert!(!f.log_dir().exists());
}
