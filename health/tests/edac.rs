//! EDAC counters read from a fake sysfs tree in a temporary directory, and judged.

mod support;

use health::{EdacKind, Monitor, OwnSignals, Readings, Sources, Verdict};
use std::path::Path;
use support::{ata, edac, write};

/// Reads `root`'s EDAC tree with one healthy disk (so no smartctl runs).
fn read(root: &Path) -> Readings {
    let disk = root.join("disk.json");
    if !disk.exists() {
        write(&disk, &ata("/dev/sda", "S1", &[(5, 0)]));
    }
    let sources = Sources { smartctl_json: vec![disk], sysfs_root: Some(root.to_owned()) };
    health::read(&sources)
}

fn a_tree(root: &Path) {
    edac(root, "mc0/ce_count", "3\n");
    edac(root, "mc0/ue_count", "0\n");
    edac(root, "mc0/dimm0/dimm_ce_count", "3\n");
    edac(root, "mc0/dimm0/dimm_ue_count", "0\n");
    edac(root, "mc0/dimm0/dimm_label", "CPU_SrcID#0_MC#0_Chan#0_DIMM#0\n");
    edac(root, "mc0/dimm1/dimm_ce_count", "0\n");
    edac(root, "mc1/ce_count", "0\n");
    edac(root, "mc1/ue_count", "0\n");
    edac(root, "mc1/rank2/dimm_ce_count", "0\n");
    edac(root, "mc1/csrow0/ce_count", "0\n");
    edac(root, "mc1/csrow0/ue_count", "0\n");
    // Not counters: ignored.
    edac(root, "mc0/size_mb", "32768\n");
    edac(root, "mc0/power/control", "auto\n");
}

#[test]
fn every_counter_of_the_layouts_is_read_with_its_key_and_dimm_label() {
    let root = tempfile::tempdir().expect("a temporary directory");
    a_tree(root.path());
    let readings = read(root.path());
    let keys: Vec<&str> = readings.edac.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "mc0/ce_count",
            "mc0/ue_count",
            "mc0/dimm0/dimm_ce_count",
            "mc0/dimm0/dimm_ue_count",
            "mc0/dimm1/dimm_ce_count",
            "mc1/ce_count",
            "mc1/ue_count",
            "mc1/rank2/dimm_ce_count",
            "mc1/csrow0/ce_count",
            "mc1/csrow0/ue_count",
        ]
    );
    let dimm0 = &readings.edac[2];
    assert_eq!((dimm0.kind, dimm0.value), (EdacKind::Corrected, 3));
    assert!(dimm0.label.contains("CPU_SrcID#0_MC#0_Chan#0_DIMM#0"), "{}", dimm0.label);
    assert!(readings.notes.is_empty(), "{:?}", readings.notes);
    let report = Monitor::new(3).observe(&readings, &OwnSignals::default());
    assert_eq!(
        report.verdict,
        Verdict::Healthy,
        "3 corrected errors since boot: {:?}",
        report.reasons
    );
}

#[test]
fn levels_of_corrected_and_uncorrected_errors_decide_the_host() {
    // (mc0 ce_count, mc0 ue_count, verdict, a reason it must give)
    let table = [
        ("0", "0", Verdict::Healthy, "no warning"),
        ("9", "0", Verdict::Healthy, "no warning"),
        ("10", "0", Verdict::Suspect, "EDAC mc0 ce_count 10 (>= 10)"),
        ("0", "1", Verdict::Failing, "EDAC mc0 ue_count 1 (> 0)"),
        ("500", "2", Verdict::Failing, "EDAC mc0 ue_count 2 (> 0)"),
    ];
    for (ce, ue, verdict, reason) in table {
        let root = tempfile::tempdir().expect("a temporary directory");
        edac(root.path(), "mc0/ce_count", ce);
        edac(root.path(), "mc0/ue_count", ue);
        let report = Monitor::new(3).observe(&read(root.path()), &OwnSignals::default());
        assert_eq!(report.verdict, verdict, "ce {ce} ue {ue}: {:?}", report.reasons);
        assert!(
            report.reasons.iter().any(|r| r.contains(reason)),
            "{reason:?} in {:?}",
            report.reasons
        );
    }
}

#[test]
fn no_edac_and_unreadable_counts_are_notes() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let readings = read(root.path());
    assert!(readings.edac.is_empty());
    assert!(
        readings.notes.iter().any(|n| n.contains("no EDAC memory controller")),
        "{:?}",
        readings.notes
    );

    edac(root.path(), "mc0/ce_count", "many\n");
    edac(root.path(), "mc0/ue_count", "0\n");
    let readings = read(root.path());
    assert_eq!(readings.edac.len(), 1);
    assert!(
        readings.notes.iter().any(|n| n.contains("ce_count: not a count")),
        "{:?}",
        readings.notes
    );
}
