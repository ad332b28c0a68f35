//! Trends: a counter that grows between two readings is worse than one that stands still. Each
//! sequence rewrites the files of a directory that is read again for every reading, as the
//! node does.

mod support;

use health::{Monitor, OwnSignals, Readings, Sources, Verdict};
use serde_json::{json, Value};
use std::path::Path;
use support::{ata, edac, nvme, scsi, write};
use Verdict::{Failing as F, Healthy as H, Suspect as S};

fn read_dir(dir: &Path, sysfs: &Path) -> Readings {
    let sources =
        Sources { smartctl_json: vec![dir.to_owned()], sysfs_root: Some(sysfs.to_owned()) };
    let readings = health::read(&sources);
    assert!(readings.errors.is_empty(), "{:?}", readings.errors);
    readings
}

/// Feeds `outputs` one per reading through a file rewritten in a directory, and returns the one
/// device's verdicts and last reasons.
fn device_verdicts(outputs: &[Value]) -> (Vec<Verdict>, Vec<String>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sysfs = tempfile::tempdir().expect("a temporary directory");
    let mut monitor = Monitor::new(3);
    let mut verdicts = Vec::new();
    let mut reasons = Vec::new();
    for output in outputs {
        write(&dir.path().join("sda.json"), output);
        let report = monitor.observe(&read_dir(dir.path(), sysfs.path()), &OwnSignals::default());
        assert_eq!(report.devices.len(), 1);
        verdicts.push(report.devices[0].verdict);
        reasons = report.devices[0].reasons.clone();
    }
    (verdicts, reasons)
}

#[test]
fn ata_counters_growing_are_worse_than_standing_still() {
    // (attribute id, raw values reading by reading, verdicts, a reason of the last reading)
    let table: &[(u64, &[u64], &[Verdict], &str)] = &[
        (5, &[0, 0, 0], &[H, H, H], "attribute 5 Reallocated_Sector_Ct raw 0"),
        (5, &[0, 3, 3, 3], &[H, F, S, S], "attribute 5 Reallocated_Sector_Ct raw 3 (> 0)"),
        (5, &[3, 3], &[S, S], "raw 3 (> 0)"),
        (5, &[1, 2, 5, 5], &[S, F, F, S], "raw 5 (> 0)"),
        (5, &[150, 150], &[F, F], "raw 150 (>= 100)"),
        (187, &[0, 1], &[H, F], "attribute 187 Reported_Uncorrect raw grew from 0 to 1"),
        (
            197,
            &[0, 4, 12],
            &[H, F, F],
            "attribute 197 Current_Pending_Sector raw grew from 4 to 12",
        ),
        // Pending sectors rewritten successfully go away: falling is not growth.
        (197, &[4, 1, 1], &[S, S, S], "raw 1 (> 0)"),
        (198, &[0, 2, 2], &[H, F, S], "attribute 198 Offline_Uncorrectable raw 2 (> 0)"),
        // Command timeouts are suspect whether they grow or not.
        (188, &[0, 2, 2, 9], &[H, S, S, S], "attribute 188 Command_Timeout raw grew from 2 to 9"),
        // An attribute cradle does not judge.
        (9, &[100, 200], &[H, H], "no warning"),
    ];
    for &(id, raws, expected, reason) in table {
        let outputs: Vec<Value> =
            raws.iter().map(|&raw| ata("/dev/sda", "S1", &[(id, raw)])).collect();
        let (verdicts, reasons) = device_verdicts(&outputs);
        assert_eq!(verdicts, expected, "attribute {id} raw {raws:?}: {reasons:?}");
        assert!(reasons.iter().any(|r| r.contains(reason)), "{reason:?} in {reasons:?}");
    }
}

#[test]
fn nvme_and_scsi_counters_growing_are_worse_than_standing_still() {
    let log = |media_errors: u64, spare: u64| {
        json!({"critical_warning": 0, "media_errors": media_errors, "available_spare": spare,
               "available_spare_threshold": 10, "percentage_used": 3})
    };
    let table: Vec<(Vec<Value>, &[Verdict], &str)> = vec![
        (vec![nvme("/dev/nvme0", "N1", log(0, 100)); 2], &[H, H], "NVMe critical_warning 0x00"),
        (
            [0, 1, 1].iter().map(|&m| nvme("/dev/nvme0", "N1", log(m, 100))).collect(),
            &[H, F, S],
            "NVMe media_errors 1 (> 0)",
        ),
        (
            [100, 50, 9].iter().map(|&s| nvme("/dev/nvme0", "N1", log(0, s))).collect(),
            &[H, H, F],
            "NVMe available_spare 9% below available_spare_threshold 10%",
        ),
        (
            [0, 5, 5].iter().map(|&g| scsi("/dev/sdb", "Z1", g, 0)).collect(),
            &[H, F, S],
            "SCSI scsi_grown_defect_list 5 (> 0)",
        ),
        (
            [0, 0, 2].iter().map(|&u| scsi("/dev/sdb", "Z1", 0, u)).collect(),
            &[H, H, F],
            "SCSI read total_uncorrected_errors grew from 0 to 2",
        ),
    ];
    for (outputs, expected, reason) in table {
        let (verdicts, reasons) = device_verdicts(&outputs);
        assert_eq!(verdicts, expected, "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains(reason)), "{reason:?} in {reasons:?}");
    }
}

#[test]
fn a_device_is_followed_by_its_serial_number_when_its_name_changes() {
    let outputs = [ata("/dev/sda", "S1", &[(5, 2)]), ata("/dev/sdb", "S1", &[(5, 5)])];
    let (verdicts, reasons) = device_verdicts(&outputs);
    assert_eq!(verdicts, [S, F], "the same drive, its 2 grew to 5: {reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("grew from 2 to 5")), "{reasons:?}");
}

#[test]
fn own_signals_growing_are_failing_and_fsync_outliers_suspect() {
    let own = |io: u64, checksum: u64, poisoned: u64, fsync: u64| OwnSignals {
        io_errors: io,
        checksum_failures: checksum,
        poisoned_logs: poisoned,
        fsync_outliers: fsync,
    };
    // (own signals reading by reading, the host's measured verdicts, a reason of the last)
    let table: &[(&[OwnSignals], &[Verdict], &str)] = &[
        (&[own(0, 0, 0, 0), own(0, 0, 0, 0)], &[H, H], "no warning"),
        // Cumulative since the node started: a first non-zero reading is growth.
        (&[own(1, 0, 0, 0)], &[F], "cradle io_errors grew from 0 to 1"),
        (
            &[own(0, 0, 0, 0), own(2, 0, 0, 0), own(2, 0, 0, 0)],
            &[H, F, S],
            "cradle io_errors 2 (> 0)",
        ),
        (&[own(0, 3, 0, 0), own(0, 3, 0, 0)], &[F, S], "cradle checksum_failures 3 (> 0)"),
        (&[own(0, 0, 0, 0), own(0, 0, 1, 0)], &[H, F], "cradle poisoned_logs grew from 0 to 1"),
        (
            &[own(0, 0, 0, 5), own(0, 0, 0, 5), own(0, 0, 0, 7)],
            &[S, H, S],
            "cradle fsync_outliers grew from 5 to 7",
        ),
    ];
    for &(signals, expected, reason) in table {
        let dir = tempfile::tempdir().expect("a temporary directory");
        write(&dir.path().join("sda.json"), &ata("/dev/sda", "S1", &[(5, 0)]));
        let mut monitor = Monitor::new(3);
        let mut measured = Vec::new();
        let mut reasons = Vec::new();
        for signal in signals {
            let report = monitor.observe(&read_dir(dir.path(), dir.path()), signal);
            measured.push(report.measured);
            reasons = report.reasons;
        }
        assert_eq!(measured, expected, "{signals:?}: {reasons:?}");
        assert!(reasons.iter().any(|r| r.contains(reason)), "{reason:?} in {reasons:?}");
    }
}

/// (mc0 ce_count reading by reading, mc0 ue_count likewise, measured verdicts, last reason)
type EdacRow = (&'static [u64], &'static [u64], &'static [Verdict], &'static str);

#[test]
fn edac_counts_growing_are_worse_than_standing_still() {
    let table: &[EdacRow] = &[
        (&[0, 1, 1], &[0, 0, 0], &[H, S, H], "no warning"),
        (&[0, 5, 11, 11], &[0; 4], &[H, S, S, S], "EDAC mc0 ce_count 11 (>= 10)"),
        (&[0, 12, 12], &[0, 0, 0], &[H, F, S], "EDAC mc0 ce_count 12 (>= 10)"),
        (&[0, 0, 0], &[0, 1, 1], &[H, F, F], "EDAC mc0 ue_count 1 (> 0)"),
        (&[0, 0], &[1, 2], &[F, F], "EDAC mc0 ue_count grew from 1 to 2"),
    ];
    for &(ce, ue, expected, reason) in table {
        let dir = tempfile::tempdir().expect("a temporary directory");
        write(&dir.path().join("sda.json"), &ata("/dev/sda", "S1", &[(5, 0)]));
        let mut monitor = Monitor::new(3);
        let mut measured = Vec::new();
        let mut reasons = Vec::new();
        for (ce, ue) in ce.iter().zip(ue) {
            edac(dir.path(), "mc0/ce_count", &ce.to_string());
            edac(dir.path(), "mc0/ue_count", &ue.to_string());
            let report = monitor.observe(&read_dir(dir.path(), dir.path()), &OwnSignals::default());
            measured.push(report.measured);
            reasons = report.reasons;
        }
        assert_eq!(measured, expected, "ce {ce:?} ue {ue:?}: {reasons:?}");
        assert!(reasons.iter().any(|r| r.contains(reason)), "{reason:?} in {reasons:?}");
    }
}

#[test]
fn a_degrading_host_gets_worse_at_once_and_better_only_after_settling() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sysfs = tempfile::tempdir().expect("a temporary directory");
    // (attribute 188 raw, attribute 5 raw of sda; the host's measured and published verdicts)
    let steps: &[(u64, u64, Verdict, Verdict)] = &[
        (0, 0, H, H),
        (3, 0, S, S),
        (3, 0, S, S),
        (3, 8, F, F),
        (3, 8, S, F),
        (3, 8, S, F),
        (3, 8, S, S),
        (3, 8, S, S),
        (3, 40, F, F),
    ];
    write(&dir.path().join("sdb.json"), &ata("/dev/sdb", "S2", &[(5, 0)]));
    let mut monitor = Monitor::new(3);
    for (i, &(timeouts, reallocated, measured, published)) in steps.iter().enumerate() {
        write(
            &dir.path().join("sda.json"),
            &ata("/dev/sda", "S1", &[(5, reallocated), (188, timeouts)]),
        );
        let report = monitor.observe(&read_dir(dir.path(), sysfs.path()), &OwnSignals::default());
        assert_eq!(
            (report.measured, report.verdict),
            (measured, published),
            "step {i}: {:?}",
            report.reasons
        );
        assert_eq!(report.devices.len(), 2);
        assert_eq!(report.devices[1].verdict, H, "sdb stays healthy");
        if measured < published {
            assert!(
                report.reasons[0].starts_with("held at failing: better for"),
                "{:?}",
                report.reasons
            );
        }
        assert!(report.reasons.iter().all(|r| !r.contains("sdb")), "{:?}", report.reasons);
    }
}

#[test]
fn a_device_that_vanishes_is_suspect_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sysfs = tempfile::tempdir().expect("a temporary directory");
    write(&dir.path().join("sda.json"), &ata("/dev/sda", "S1", &[(5, 0)]));
    write(&dir.path().join("sdb.json"), &ata("/dev/sdb", "S2", &[(5, 0)]));
    let mut monitor = Monitor::new(1);
    let first = monitor.observe(&read_dir(dir.path(), sysfs.path()), &OwnSignals::default());
    assert_eq!(first.verdict, H);
    std::fs::remove_file(dir.path().join("sdb.json")).expect("removed");
    let second = monitor.observe(&read_dir(dir.path(), sysfs.path()), &OwnSignals::default());
    assert_eq!(second.verdict, S, "{:?}", second.reasons);
    assert!(second.reasons.iter().any(|r| r.contains("TEST HDD S2") && r.contains("missing")));
    let third = monitor.observe(&read_dir(dir.path(), sysfs.path()), &OwnSignals::default());
    assert_eq!(third.verdict, H, "{:?}", third.reasons);
}
