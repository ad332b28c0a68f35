//! Crash images: damaged segment files of a core's log, each with its documented outcome
//! (README.md): a torn tail is cut; a damaged payload under a sound header quarantines its
//! endpoint alone; a damaged header, segment header or a missing segment quarantines every
//! endpoint of the core; no file is touched in any quarantine.

mod common;

use common::{open, open_core, small_config, value};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use storage::{FileVolume, RecoveryReport, Shelf, Store, StoreConfig, StoreError};

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

/// The fields of the record format (`storage/src/record.rs`) these images are cut by.
mod field {
    use std::ops::Range;
    /// xxh3 of the rest of the record: damage here leaves the header sound.
    pub(crate) const CHECKSUM: Range<usize> = 0..4;
    pub(crate) const LEN: Range<usize> = 4..8;
    pub(crate) const KIND: usize = 8;
    pub(crate) const KEY_LEN: Range<usize> = 10..12;
    pub(crate) const LSN: Range<usize> = 12..20;
    pub(crate) const ENDPOINT: Range<usize> = 20..24;
    pub(crate) const HEADER_CHECK: Range<usize> = 24..28;
    pub(crate) const HEADER_BYTES: usize = 28;
    pub(crate) const KIND_PUT: u8 = 1;
}
const SEGMENT_HEADER_BYTES: usize = 32;
const ALIGN: usize = 4;

/// One record found in a segment file by walking the format.
#[derive(Clone, Copy, Debug)]
struct Found {
    offset: usize,
    len: usize,
    kind: u8,
    endpoint: u32,
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().unwrap())
}

/// The records of a segment file, in order, up to its zero header.
fn records(bytes: &[u8]) -> Vec<Found> {
    let mut found = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset + field::HEADER_BYTES <= bytes.len() {
        let header = &bytes[offset..offset + field::HEADER_BYTES];
        let len = le_u32(&header[field::LEN]) as usize;
        if len == 0 {
            break;
        }
        let endpoint = le_u32(&header[field::ENDPOINT]);
        found.push(Found { offset, len, kind: header[field::KIND], endpoint });
        offset += len.next_multiple_of(ALIGN);
    }
    found
}

/// What each endpoint holds: key to (value, version).
type Model = Vec<BTreeMap<Vec<u8>, (Vec<u8>, u64)>>;

struct Fixture {
    dir: tempfile::TempDir,
    config: StoreConfig,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { dir: tempfile::tempdir().unwrap(), config: small_config() }
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("core-0")
    }

    fn volumes(&self) -> (Box<FileVolume>, Box<FileVolume>) {
        let log = Box::new(FileVolume::new(self.log_dir()).making_ahead());
        (log, Box::new(FileVolume::new(self.dir.path().join("blobs"))))
    }

    fn open(&self) -> (Store, Shelf, RecoveryReport) {
        let (log, blobs) = self.volumes();
        open(log, blobs, &self.config)
    }

    fn open_core(&self, endpoints: u32) -> (Vec<Store>, Shelf, RecoveryReport) {
        let (log, blobs) = self.volumes();
        open_core(log, blobs, &self.config, endpoints)
    }

    fn segment(&self, n: u64) -> PathBuf {
        self.log_dir().join(format!("{n:010}.seg"))
    }

    /// The newest segment with a header (after it, the log makes the next one ahead: zeros).
    fn newest_segment(&self) -> u64 {
        let files = (0..).take_while(|&n| self.segment(n).exists());
        let written = |n: &u64| fs::read(self.segment(*n)).unwrap().iter().any(|&b| b != 0);
        files.filter(written).last().unwrap()
    }

    /// Writes keys `0..n` to one endpoint (one flush each 10) and returns the log end after
    /// each key.
    fn write(&self, n: u32) -> Vec<u64> {
        let (mut store, mut shelf, _) = self.open();
        let mut ends = Vec::new();
        for i in 0..n {
            store.put(&mut shelf, &key(i), &value(i.into(), 300), None).unwrap();
            if i % 10 == 9 || i + 1 == n {
                store.flush(&mut shelf).unwrap();
            }
            ends.push(shelf.stats().log_bytes);
        }
        ends
    }

    /// `writes` puts spread over `endpoints` endpoints sharing the log (overwrites among
    /// them, so versions differ from key numbers), all flushed; returns what each holds.
    fn write_core(&self, endpoints: u32, writes: u32) -> Model {
        let (mut stores, mut shelf, _) = self.open_core(endpoints);
        let mut model: Model = vec![BTreeMap::new(); endpoints as usize];
        for w in 0..writes {
            let endpoint = (w * 7 + w / endpoints) % endpoints;
            let k = key(w % 37);
            let v = value(u64::from(w) << 8 | u64::from(endpoint), 200 + (w % 5) as usize * 40);
            let version = stores[endpoint as usize].put(&mut shelf, &k, &v, None).unwrap();
            model[endpoint as usize].insert(k, (v, version));
            if w % 16 == 15 {
                shelf.sync().unwrap();
            }
        }
        for store in &mut stores {
            store.flush(&mut shelf).unwrap();
        }
        model
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

fn assert_keys(store: &mut Store, shelf: &mut Shelf, present: std::ops::Range<u32>) {
    for i in present {
        let got = store.get(shelf, &key(i)).unwrap().map(|(v, _)| v.to_vec());
        assert_eq!(got, Some(value(i.into(), 300)), "key {i}");
    }
}

/// Every key of the endpoint reads back with its value and version, and nothing else is there.
fn assert_holds(store: &mut Store, shelf: &mut Shelf, want: &BTreeMap<Vec<u8>, (Vec<u8>, u64)>) {
    assert_eq!(store.len(), want.len());
    for (k, (v, version)) in want {
        let got = store.get(shelf, k).unwrap().map(|(v, n)| (v.to_vec(), n));
        assert_eq!(got.as_ref(), Some(&(v.clone(), *version)), "key {k:?}");
    }
}

/// Every endpoint of the core answers `Quarantined` for `corruption`, as the report says.
fn assert_all_quarantined(stores: &mut [Store], shelf: &mut Shelf, report: &RecoveryReport) {
    let corruption = report.quarantine(0).expect("quarantined").clone();
    assert_eq!(report.quarantined.len(), stores.len());
    for (slot, store) in stores.iter_mut().enumerate() {
        assert_eq!(report.quarantine(slot as u32), Some(&corruption), "endpoint {slot}");
        assert_eq!(store.quarantine(), Some(&corruption));
        assert_eq!(store.get(shelf, &key(0)), Err(StoreError::Quarantined));
        assert_eq!(store.put(shelf, &key(0), b"x", None), Err(StoreError::Quarantined));
    }
}

#[test]
fn torn_last_record_is_cut_and_reported() {
    let f = Fixture::new();
    let ends = f.write(20);
    // The last record (key 19) lost everything after its 28-byte header and 8 bytes more.
    let path = f.segment(0);
    let mut bytes = fs::read(&path).unwrap();
    let (start, end) = (ends[18] as usize, ends[19] as usize);
    bytes[start + field::HEADER_BYTES + 8..end].fill(0);
    fs::write(&path, &bytes).unwrap();

    let (mut store, mut shelf, report) = f.open();
    let torn = report.torn_tail.expect("a torn tail is reported");
    assert_eq!(torn.offset, ends[18]);
    assert!(torn.file.ends_with("0000000000.seg"), "{}", torn.file);
    assert_eq!(report.quarantined, vec![]);
    assert_keys(&mut store, &mut shelf, 0..19);
    assert_eq!(store.get(&mut shelf, &key(19)).unwrap(), None);
    // The log goes on from the cut, and what is written there survives.
    let version = store.put(&mut shelf, &key(19), &value(19, 300), None).unwrap();
    assert_eq!(version, 20, "versions continue past the last durable one");
    store.flush(&mut shelf).unwrap();
    drop((store, shelf));
    let (mut store, mut shelf, report) = f.open();
    assert_eq!((report.torn_tail, report.quarantined), (None, vec![]));
    assert_keys(&mut store, &mut shelf, 0..20);
}

#[test]
fn bit_flip_mid_segment_quarantines_and_touches_nothing() {
    let f = Fixture::new();
    let ends = f.write(30);
    let path = f.segment(0);
    let mut bytes = fs::read(&path).unwrap();
    // Inside the payload of key 11's record (past its 28-byte header and 9-byte key): the
    // header is sound, so this quarantines the record's endpoint (the only one here).
    bytes[ends[10] as usize + 100] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    let before = snapshot(&f.log_dir());

    let (mut store, mut shelf, report) = f.open();
    assert_eq!(report.quarantined.len(), 1);
    let corruption = report.quarantine(0).expect("quarantined");
    assert_eq!(corruption.offset, ends[10]);
    assert!(corruption.file.ends_with("0000000000.seg"));
    assert_eq!(corruption.reason, "checksum mismatch");
    assert_eq!(report.torn_tail, None, "valid records follow: not a torn tail");
    assert_eq!(store.get(&mut shelf, &key(0)), Err(StoreError::Quarantined));
    assert_eq!(store.put(&mut shelf, &key(0), b"x", None), Err(StoreError::Quarantined));
    assert_eq!(store.stats().quarantined, 1);
    drop((store, shelf));
    assert_eq!(snapshot(&f.log_dir()), before, "no file modified");
}

/// Endpoints sharing the log in the multi-endpoint images.
const ENDPOINTS: u32 = 6;
/// Writes for several 16 KiB segments.
const WRITES: u32 = 400;

/// A record of `endpoint` (a put, not the last record of its segment) in segment `n`.
fn record_of(f: &Fixture, n: u64, endpoint: u32) -> Found {
    let records = records(&fs::read(f.segment(n)).unwrap());
    let last = records.len() - 1;
    let i = records[..last]
        .iter()
        .position(|r| r.endpoint == endpoint && r.kind == field::KIND_PUT)
        .expect("the endpoint wrote in this segment");
    records[i]
}

#[test]
fn a_damaged_payload_quarantines_its_endpoint_alone_and_touches_nothing() {
    let f = Fixture::new();
    let model = f.write_core(ENDPOINTS, WRITES);
    let newest = f.newest_segment();
    assert!(newest >= 3, "the test needs several segments");
    let victim = 2;
    // In an older segment and in the newest one (mid-segment: valid records follow), in the
    // value or in the checksum field itself: the header check still holds either way.
    for (n, at) in [(1, Some(field::CHECKSUM.start)), (1, None), (newest, None)] {
        let path = f.segment(n);
        let original = fs::read(&path).unwrap();
        let record = record_of(&f, n, victim);
        let byte = record.offset + at.unwrap_or(record.len - 1);
        let mut bytes = original.clone();
        bytes[byte] ^= 0x04;
        fs::write(&path, &bytes).unwrap();
        let before = snapshot(&f.log_dir());

        let (mut stores, mut shelf, report) = f.open_core(ENDPOINTS);
        assert_eq!(report.quarantined.len(), 1, "segment {n}: {:?}", report.quarantined);
        let corruption = report.quarantine(victim).expect("the victim is quarantined");
        assert!(corruption.file.ends_with(&format!("{n:010}.seg")), "{}", corruption.file);
        assert_eq!(corruption.offset, record.offset as u64);
        assert_eq!(corruption.reason, "checksum mismatch");
        assert_eq!(report.torn_tail, None);
        for (slot, store) in stores.iter_mut().enumerate() {
            if slot as u32 == victim {
                assert_eq!(store.get(&mut shelf, &key(0)), Err(StoreError::Quarantined));
                assert_eq!(
                    store.put(&mut shelf, &key(0), b"x", None),
                    Err(StoreError::Quarantined)
                );
                assert_eq!(store.stats().quarantined, 1);
            } else {
                assert_holds(store, &mut shelf, &model[slot]);
                assert_eq!(store.quarantine(), None);
            }
        }
        drop((stores, shelf));
        assert_eq!(snapshot(&f.log_dir()), before, "segment {n}: no file modified");
        fs::write(&path, &original).unwrap();
    }
}

#[test]
fn a_damaged_record_header_quarantines_every_endpoint_and_touches_nothing() {
    let f = Fixture::new();
    f.write_core(ENDPOINTS, WRITES);
    assert!(f.newest_segment() >= 3, "the test needs several segments");
    let path = f.segment(1);
    let original = fs::read(&path).unwrap();
    let record = record_of(&f, 1, 4);
    // Every field under the header check, and the check itself.
    let fields = [
        field::LEN.start,
        field::KIND,
        field::KEY_LEN.start,
        field::LSN.start + 3,
        field::ENDPOINT.start,
        field::HEADER_CHECK.start + 2,
    ];
    for byte in fields {
        let mut bytes = original.clone();
        bytes[record.offset + byte] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let before = snapshot(&f.log_dir());

        let (mut stores, mut shelf, report) = f.open_core(ENDPOINTS);
        let corruption = report.quarantine(0).expect("quarantined").clone();
        assert!(corruption.file.ends_with("0000000001.seg"), "{}", corruption.file);
        assert_eq!(corruption.offset, record.offset as u64, "header byte {byte}");
        assert_eq!(corruption.reason, "malformed record header", "header byte {byte}");
        assert_all_quarantined(&mut stores, &mut shelf, &report);
        drop((stores, shelf));
        assert_eq!(snapshot(&f.log_dir()), before, "header byte {byte}: no file modified");
    }
    // (The checksum field is not under the header check: see the payload test.)
    fs::write(&path, &original).unwrap();
    let (_, _, report) = f.open_core(ENDPOINTS);
    assert_eq!(report.quarantined, vec![], "the original image is sound");
}

#[test]
fn missing_middle_segment_quarantines_every_endpoint() {
    let f = Fixture::new();
    f.write_core(ENDPOINTS, WRITES);
    assert!(f.segment(3).exists(), "the test needs several segments");
    fs::remove_file(f.segment(1)).unwrap();
    let before = snapshot(&f.log_dir());
    let (mut stores, mut shelf, report) = f.open_core(ENDPOINTS);
    let corruption = report.quarantine(0).expect("quarantined").clone();
    assert!(corruption.file.ends_with("0000000001.seg"), "{}", corruption.file);
    assert_eq!(corruption.reason, "segment missing");
    assert_all_quarantined(&mut stores, &mut shelf, &report);
    drop((stores, shelf));
    assert_eq!(snapshot(&f.log_dir()), before, "no file modified");
}

#[test]
fn missing_newest_segment_quarantines_every_endpoint() {
    let f = Fixture::new();
    f.write_core(ENDPOINTS, WRITES);
    let newest = f.newest_segment();
    fs::remove_file(f.segment(newest)).unwrap();
    let (mut stores, mut shelf, report) = f.open_core(ENDPOINTS);
    let corruption = report.quarantine(0).expect("the seal of the previous segment names it");
    assert!(corruption.file.ends_with(&format!("{newest:010}.seg")));
    assert_all_quarantined(&mut stores, &mut shelf, &report);
}

#[test]
fn newest_segment_truncated_to_zero_is_an_empty_tail() {
    let f = Fixture::new();
    let model = f.write_core(ENDPOINTS, WRITES);
    let newest = f.newest_segment();
    fs::File::create(f.segment(newest)).unwrap(); // truncates
    let (mut stores, mut shelf, report) = f.open_core(ENDPOINTS);
    assert_eq!(report.quarantined, vec![]);
    assert_eq!(report.torn_tail.expect("reported").offset, 0);
    // Keys in the older segments are served; the lost ones are absent or older, never wrong.
    let (mut present, mut total) = (0, 0);
    for (slot, store) in stores.iter_mut().enumerate() {
        for (k, (v, version)) in &model[slot] {
            total += 1;
            match store.get(&mut shelf, k).unwrap() {
                Some((got, got_version)) if got_version == *version => {
                    assert_eq!(got, &v[..]);
                    present += 1;
                }
                Some((_, got_version)) => assert!(got_version < *version),
                None => {}
            }
        }
    }
    assert!(present > 0 && present < total, "{present} of {total}");
    stores[0].put(&mut shelf, &key(0), b"again", None).unwrap();
    stores[0].flush(&mut shelf).unwrap();
}

#[test]
fn older_segment_truncated_to_zero_quarantines_every_endpoint() {
    let f = Fixture::new();
    f.write_core(ENDPOINTS, WRITES);
    fs::File::create(f.segment(1)).unwrap();
    let before = snapshot(&f.log_dir());
    let (mut stores, mut shelf, report) = f.open_core(ENDPOINTS);
    let corruption = report.quarantine(0).expect("quarantined").clone();
    assert!(corruption.file.ends_with("0000000001.seg"));
    assert_eq!((corruption.offset, corruption.reason.as_str()), (0, "bad segment header"));
    assert_all_quarantined(&mut stores, &mut shelf, &report);
    drop((stores, shelf));
    assert_eq!(snapshot(&f.log_dir()), before, "no file modified");
}

/// A segment written in the record format before this one (32-byte headers, magic CRDLSEG2)
/// is not called damage: the quarantine says which format it is and how to carry it over.
#[test]
fn a_segment_in_the_earlier_format_is_named_with_how_to_carry_it_over() {
    let f = Fixture::new();
    f.write_core(ENDPOINTS, WRITES);
    let mut bytes = fs::read(f.segment(0)).unwrap();
    bytes[..8].copy_from_slice(b"CRDLSEG2");
    fs::write(f.segment(0), &bytes).unwrap();
    let before = snapshot(&f.log_dir());
    let (mut stores, mut shelf, report) = f.open_core(ENDPOINTS);
    let corruption = report.quarantine(0).expect("quarantined").clone();
    assert!(corruption.file.ends_with("0000000000.seg"));
    assert_eq!(corruption.offset, 0);
    for words in ["CRDLSEG2", "cradle export", "cradle import"] {
        assert!(corruption.reason.contains(words), "{words} not in {}", corruption.reason);
    }
    assert_all_quarantined(&mut stores, &mut shelf, &report);
    drop((stores, shelf));
    assert_eq!(snapshot(&f.log_dir()), before, "no file modified");
}

/// Writes to endpoint 0 until the log rolls into the next segment, flushed, into `model`.
fn write_until_a_roll(stores: &mut [Store], shelf: &mut Shelf, model: &mut Model) {
    let segments = shelf.stats().segments;
    let mut i = 0u64;
    while shelf.stats().segments == segments {
        let (k, v) = (format!("roll-{i}").into_bytes(), value(i, 300));
        let version = stores[0].put(shelf, &k, &v, None).unwrap();
        model[0].insert(k, (v, version));
        i += 1;
    }
    stores[0].flush(shelf).unwrap();
}

/// The core opens again with no torn tail and no quarantine, and every endpoint holds `model`.
fn assert_reopens_whole(f: &Fixture, model: &Model) {
    let (mut stores, mut shelf, report) = f.open_core(ENDPOINTS);
    assert_eq!((&report.torn_tail, &report.quarantined), (&None, &vec![]));
    for (slot, store) in stores.iter_mut().enumerate() {
        assert_holds(store, &mut shelf, &model[slot]);
    }
}

/// The log makes its next segment file ahead (zeros, no seal names it): a restart after a
/// crash keeps it without a report or a change, and the next roll goes into it.
#[test]
fn a_restart_keeps_the_file_made_ahead_and_the_next_roll_takes_it() {
    let f = Fixture::new();
    let mut model = f.write_core(ENDPOINTS, WRITES);
    let newest = f.newest_segment();
    let ahead = fs::read(f.segment(newest + 1)).expect("the next segment was made ahead");
    assert!(ahead.len() as u64 == f.config.segment_bytes && ahead.iter().all(|&b| b == 0));
    let before = snapshot(&f.log_dir());
    let (mut stores, mut shelf, report) = f.open_core(ENDPOINTS);
    assert_eq!((&report.torn_tail, &report.quarantined), (&None, &vec![]));
    assert_eq!(snapshot(&f.log_dir()), before, "no file changed by the restart");
    write_until_a_roll(&mut stores, &mut shelf, &mut model);
    assert_eq!(f.newest_segment(), newest + 1, "the roll went into the file made ahead");
    drop((stores, shelf));
    assert!(f.segment(newest + 2).exists(), "and made the one after it ahead");
    assert_reopens_whole(&f, &model);
}

/// A file made ahead that a crash cut short (created, not yet sized) is sized by the roll
/// that takes it; zero files after it, which the log never makes, are removed.
#[test]
fn a_file_made_ahead_cut_short_is_sized_and_more_zero_files_are_removed() {
    let f = Fixture::new();
    let mut model = f.write_core(ENDPOINTS, WRITES);
    let newest = f.newest_segment();
    fs::File::create(f.segment(newest + 1)).unwrap(); // truncates
    fs::write(f.segment(newest + 2), vec![0; 4096]).unwrap();
    let (mut stores, mut shelf, report) = f.open_core(ENDPOINTS);
    assert_eq!((&report.torn_tail, &report.quarantined), (&None, &vec![]));
    assert!(!f.segment(newest + 2).exists(), "the extra zero file was removed");
    write_until_a_roll(&mut stores, &mut shelf, &mut model);
    assert_eq!(f.newest_segment(), newest + 1);
    let taken = fs::metadata(f.segment(newest + 1)).unwrap().len();
    assert_eq!(taken, f.config.segment_bytes, "sized as a segment");
    drop((stores, shelf));
    assert_reopens_whole(&f, &model);
}

#[test]
fn a_core_that_never_wrote_has_no_files() {
    let f = Fixture::new();
    let (mut stores, mut shelf, report) = f.open_core(ENDPOINTS);
    assert_eq!(report.segments, 0);
    for store in &mut stores {
        assert_eq!(store.get(&mut shelf, b"k").unwrap(), None);
        store.flush(&mut shelf).unwrap();
    }
    assert!(!f.log_dir().exists());
}

/// Once the endpoint is cleared, cleaning meets its old damaged record: it lies before the
/// endpoint's drop record, so it is dead and dropped unread (it once quarantined the fresh
/// endpoint again and stopped cleaning at segment 0 for good).
#[test]
fn cleaning_leaves_a_quarantined_endpoints_segment_alone_until_that_endpoint_is_cleared() {
    let f = Fixture::new();
    let model = f.write_core(ENDPOINTS, WRITES);
    let victim = 1;
    let path = f.segment(0);
    let record = record_of(&f, 0, victim);
    let mut bytes = fs::read(&path).unwrap();
    bytes[record.offset + record.len - 1] ^= 0x80;
    fs::write(&path, &bytes).unwrap();

    let (mut stores, mut shelf, report) = f.open_core(ENDPOINTS);
    assert_eq!(report.quarantined.len(), 1);
    assert!(report.quarantine(victim).is_some());
    // The others overwrite their keys: segment 0 is mostly dead, and due.
    let mut model = model;
    for w in 0..200u32 {
        let slot = (w % ENDPOINTS) as usize;
        if slot as u32 == victim {
            continue;
        }
        let v = value(u64::from(w) << 16, 300);
        let version = stores[slot].put(&mut shelf, &key(w % 37), &v, None).unwrap();
        model[slot].insert(key(w % 37), (v, version));
    }
    stores[0].flush(&mut shelf).unwrap();
    assert!(shelf.needs_cleaning());
    let mut steps = 0;
    while steps < 50 && shelf.clean_step(&mut stores[..], u64::MAX, u64::MAX).unwrap() > 0 {
        steps += 1;
    }
    assert!(steps < 50, "cleaning pauses");
    assert_eq!(fs::read(&path).unwrap(), bytes, "the segment with the damaged record stays");
    assert!(stores[victim as usize].quarantine().is_some());
    for (slot, store) in stores.iter_mut().enumerate() {
        if slot as u32 != victim {
            assert_holds(store, &mut shelf, &model[slot]);
        }
    }

    // Emptied (to be built again from a replica), the endpoint takes writes, and cleaning
    // frees its old records, the damaged one among them, with their segment.
    stores[victim as usize].clear(&mut shelf).unwrap();
    assert_eq!(stores[victim as usize].quarantine(), None);
    let version = stores[victim as usize].put(&mut shelf, b"fresh", b"start", None).unwrap();
    assert_eq!(version, 1);
    stores[0].flush(&mut shelf).unwrap();
    let mut steps = 0;
    while steps < 50 && path.exists() {
        shelf.clean_step(&mut stores[..], u64::MAX, u64::MAX).unwrap();
        steps += 1;
    }
    assert!(!path.exists(), "segment 0 was cleaned away after the clear");
    let store = &mut stores[victim as usize];
    assert_eq!(store.quarantine(), None, "cleaning a cleared endpoint's old record");
    assert_eq!(store.get(&mut shelf, b"fresh").unwrap(), Some((&b"start"[..], 1)));
    for store in &mut stores {
        store.flush(&mut shelf).unwrap();
    }
    drop((stores, shelf));
    let (mut stores, mut shelf, report) = f.open_core(ENDPOINTS);
    assert_eq!(report.quarantined, vec![]);
    let store = &mut stores[victim as usize];
    assert_eq!((store.len(), store.last_lsn()), (1, 1));
    assert_eq!(store.get(&mut shelf, b"fresh").unwrap(), Some((&b"start"[..], 1)));
    for (slot, store) in stores.iter_mut().enumerate() {
        if slot as u32 != victim {
            assert_holds(store, &mut shelf, &model[slot]);
        }
    }
}

/// A segment created and filled with no sync before the log rolls on has no durable header
/// (`Log::roll` syncs the directory, not the segment it seals), so a power cut leaves the
/// newest segments all zeros. Nothing in them was durable: replay ends the log at the last
/// segment with a header, makes the first zero one active again, removes the others, and
/// loses only unflushed writes (it once took them for damage and quarantined the core).
#[test]
fn a_power_cut_before_a_rolled_segment_was_ever_synced_loses_only_unflushed_writes() {
    let config = small_config();
    let (log, blobs) = (storage::MemoryVolume::new("log"), storage::MemoryVolume::new("blobs"));
    let reopen = || open_core(Box::new(log.clone()), Box::new(blobs.clone()), &config, 2);
    let (mut stores, mut shelf, _) = reopen();
    stores[1].put(&mut shelf, b"acked", b"v", None).unwrap();
    stores[1].flush(&mut shelf).unwrap();
    // Two segments' worth, no flush: segment 0 is sealed into 1, segment 1 into 2.
    for i in 0..120 {
        stores[0].put(&mut shelf, &key(i), &value(i.into(), 300), None).unwrap();
    }
    assert!(shelf.stats().segments >= 3);
    drop((stores, shelf)); // a power cut: only what was synced survives

    let (mut stores, mut shelf, report) = reopen();
    assert_eq!(report.quarantined, vec![], "nothing acknowledged was lost");
    assert_eq!(stores[1].get(&mut shelf, b"acked").unwrap(), Some((&b"v"[..], 1)));
    assert_eq!(stores[0].len(), 0, "no write of endpoint 0 was flushed");
}
