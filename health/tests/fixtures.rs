//! Every saved smartctl output in `../shared/fixtures/smartctl` parses, and gives the verdict
//! this table states, for the reason it states.

use health::{parse_smartctl, Monitor, OwnSignals, Protocol, Sources, Verdict};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use Verdict::{Failing, Healthy, Suspect};

/// The fixtures, beside the workspace (`<workspace>/../shared`), from any clone of it.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/smartctl");

/// Per fixture: the verdict expected and a reason it must give, naming the counter that decided
/// it (for a healthy drive, one of the counters checked). The rules are docs/OPERATIONS.md's.
const EXPECTED: &[(&str, Verdict, &str)] = &[
    ("HGST_HUS724020ALE640_28.json", Healthy, "attribute 5 Reallocated_Sector_Ct raw 0"),
    ("HITACHI_H109060SESUN600G_10.json", Healthy, "SCSI scsi_grown_defect_list 0"),
    ("HITACHI_H109060SESUN600G_9.json", Healthy, "SCSI scsi_grown_defect_list 0"),
    ("Hitachi_HUA722020ALA330_29.json", Healthy, "attribute 5 Reallocated_Sector_Ct raw 0"),
    ("INTEL_SSDPE2KX080T8_1.json", Healthy, "NVMe critical_warning 0x00"),
    ("INTEL_SSDPE2KX080T8_3.json", Healthy, "NVMe critical_warning 0x00"),
    ("INTEL_SSDPE2KX080T8_5.json", Healthy, "NVMe critical_warning 0x00"),
    ("INTEL_SSDPE2KX080T8_6.json", Healthy, "NVMe critical_warning 0x00"),
    ("INTEL_SSDPE2KX080T8_7.json", Healthy, "NVMe critical_warning 0x00"),
    ("KXG60ZNV512G_TOSHIBA_8.json", Healthy, "NVMe critical_warning 0x00"),
    ("MB0500EBNCR_13.json", Suspect, "attribute 187 Reported_Uncorrect raw 1 (> 0)"),
    ("SAMSUNG_MZ7WD240HAFV-00003_21.json", Healthy, "attribute 5 Reallocated_Sector_Ct raw 0"),
    ("SAMSUNG_MZ7WD240HAFV-00003_22.json", Healthy, "attribute 5 Reallocated_Sector_Ct raw 0"),
    ("SAMSUNG_MZQLB1T9HAJR-00007_20.json", Healthy, "NVMe critical_warning 0x00"),
    ("SAMSUNG_MZVL21T0HCLR-00B00_23.json", Healthy, "NVMe critical_warning 0x00"),
    ("SAMSUNG_MZVL21T0HCLR-00B00_24.json", Healthy, "NVMe critical_warning 0x00"),
    ("SEAGATE_ST373453LC_27.json", Healthy, "SCSI scsi_grown_defect_list 0"),
    ("ST3200820AS_15.json", Healthy, "attribute 5 Reallocated_Sector_Ct raw 0"),
    ("ST3200820AS_16.json", Healthy, "attribute 5 Reallocated_Sector_Ct raw 0"),
    ("ST3500418AS_11.json", Suspect, "attribute 5 Reallocated_Sector_Ct raw 1 (> 0)"),
    ("ST3500418AS_12.json", Failing, "attribute 5 Reallocated_Sector_Ct raw 304 (>= 100)"),
    ("WDC_WD20EFRX-68EUZN0_18.json", Healthy, "attribute 5 Reallocated_Sector_Ct raw 0"),
    ("nvme-null-CT250P2SSD8-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-HUSMR7632BHP301-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-INTEL_SSDPE2KE016T8-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-INTEL_SSDPE2KE020T7-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-INTEL_SSDPE2KE032T8-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-INTEL_SSDPE2KX020T7-nvme6.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-INTEL_SSDPE2KX020T8-nvme2.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-INTEL_SSDPE2KX040T8-nvme10.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-INTEL_SSDPEDKE020T7-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-INTEL_SSDPEDMD016T4-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-INTEL_SSDPEDMD400G4-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-INTEL_SSDPEK1A058GA-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-INTEL_SSDPF2KE032T1-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-INTEL_SSDPF2KX038T1-nvme5.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-MTFDHAX1T6MCE-1AN1ZABYY-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-Micron_7300_MTFDHBE1T6TDG-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-Micron_7300_MTFDHBE1T9TDF-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-Micron_7300_MTFDHBE3T8TDF-nvme3.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-Micron_7300_MTFDHBE960TDF-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-Micron_7400_MTFDKCB1T6TFC-nvme2.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-Micron_7400_MTFDKCB3T2TFC-nvme2.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-Micron_7400_MTFDKCB3T8TDZ-nvme3.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-Micron_7450_MTFDKCB3T8TFR-nvme6.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-Micron_7450_MTFDKCC3T8TFR-nvme11.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-Micron_9300_MTFDHAL3T8TDP-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-SAMSUNG_MZPLJ6T4HALA-00007-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-SAMSUNG_MZPLL1T6HEHP-00003-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-SAMSUNG_MZPLL3T2HAJQ-00005-nvme1.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-SAMSUNG_MZPLL3T2HMLS-00003-nvme1.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-SAMSUNG_MZQL23T8HCLS-00A07-nvme9.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-SAMSUNG_MZQL2960HCJR-00A07-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    ("nvme-null-Samsung_SSD_970_EVO_Plus_250GB-nvme0.json", Healthy, "NVMe critical_warning 0x00"),
    (
        "sat-HGST_Ultrastar_7K6000-HGST_HUS726020ALE614-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-HGST_Ultrastar_7K6000-HGST_HUS726040ALA614-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-HGST_Ultrastar_7K6000-HGST_HUS726040ALE614-sdb.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-HGST_Ultrastar_HC310_320-HGST_HUS726T4TALE6L4-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-HGST_Ultrastar_HC310_320-HGST_HUS728T8TALE6L4-sdd.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-HGST_Ultrastar_He10-HGST_HUH721008ALE604-sde.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Hitachi_HGST_Ultrastar_7K2-HGST_HUS722T1TALA604-sdu.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Hitachi_HGST_Ultrastar_7K2-HGST_HUS722T2TALA604-sdc.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Hitachi_HGST_Ultrastar_7K4000-HGST_HUS724020ALA640-sdc.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Hitachi_Ultrastar_A7K2000-Hitachi_HUA722010CLA330-sdr.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_730_and_DC_S35x0_3610_3700_Series_SSDs-INTEL_SSDSC2BB016T4-sdf.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_730_and_DC_S35x0_3610_3700_Series_SSDs-INTEL_SSDSC2BB240G4-sde.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_730_and_DC_S35x0_3610_3700_Series_SSDs-INTEL_SSDSC2BB240G7-sdg.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_730_and_DC_S35x0_3610_3700_Series_SSDs-INTEL_SSDSC2BB480G4-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_730_and_DC_S35x0_3610_3700_Series_SSDs-INTEL_SSDSC2BB480G6-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_730_and_DC_S35x0_3610_3700_Series_SSDs-INTEL_SSDSC2BB800G4-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_730_and_DC_S35x0_3610_3700_Series_SSDs-INTEL_SSDSC2BB800G6-sdb.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_730_and_DC_S35x0_3610_3700_Series_SSDs-INTEL_SSDSC2BB800G7-sdh.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_S3520_Series_SSDs-INTEL_SSDSC2BB016T7-sdc.json",
        Suspect,
        "attribute 5 Reallocated_Sector_Ct raw 1 (> 0)",
    ),
    (
        "sat-Intel_S4510_S4610_S4500_S4600_Series_SSDs-INTEL_SSDSC2KB019T8-sdr.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_S4510_S4610_S4500_S4600_Series_SSDs-INTEL_SSDSC2KB019TZ-sdr.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_S4510_S4610_S4500_S4600_Series_SSDs-INTEL_SSDSC2KB240G7-sdd.json",
        Suspect,
        "attribute 5 Reallocated_Sector_Ct raw 4 (> 0)",
    ),
    (
        "sat-Intel_S4510_S4610_S4500_S4600_Series_SSDs-INTEL_SSDSC2KB240G8-sdc.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_S4510_S4610_S4500_S4600_Series_SSDs-INTEL_SSDSC2KB480G8-sdm.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_S4510_S4610_S4500_S4600_Series_SSDs-INTEL_SSDSC2KB960G7-sdi.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_S4510_S4610_S4500_S4600_Series_SSDs-INTEL_SSDSC2KB960G8-sde.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Intel_S4510_S4610_S4500_S4600_Series_SSDs-INTEL_SSDSCKKB480G8-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Micron_5100_Pro___52x0___5300_SSDs-Micron_5210_MTFDDAK960QDE-sdm.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Micron_5100_Pro___52x0___5300_SSDs-Micron_5300_MTFDDAK240TDS-sda.json",
        Suspect,
        "attribute 188 Command_Timeout raw 10 (> 0)",
    ),
    (
        "sat-Micron_5100_Pro___52x0___5300_SSDs-Micron_5300_MTFDDAK3T8TDS-sdc.json",
        Suspect,
        "attribute 188 Command_Timeout raw 11 (> 0)",
    ),
    (
        "sat-Micron_5100_Pro___52x0___5300_SSDs-Micron_5300_MTFDDAV240TDS-sda.json",
        Suspect,
        "attribute 188 Command_Timeout raw 33 (> 0)",
    ),
    (
        "sat-Micron_5100_Pro___52x0___5300_SSDs-Micron_5300_MTFDDAV480TDS-sda.json",
        Suspect,
        "attribute 188 Command_Timeout raw 12 (> 0)",
    ),
    (
        "sat-Phison_Driven_SSDs-KINGSTON_SA400M8120G-sda.json",
        Healthy,
        "attribute 187 Reported_Uncorrect raw 0",
    ),
    (
        "sat-Phison_Driven_SSDs-KINGSTON_SKC400S371T-sda.json",
        Suspect,
        "attribute 5 Retired_Block_Count raw 1 (> 0)",
    ),
    (
        "sat-Samsung_based_SSDs-SAMSUNG_MZ7LH1T9HMLT-00005-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Samsung_based_SSDs-SAMSUNG_MZ7LH480HAHQ-00005-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Seagate_Constellation_ES.3-ST1000NM0033-9ZM173-sdq.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Seagate_Constellation_ES.3-ST3000NM0033-9ZM178-sdc.json",
        Suspect,
        "attribute 188 Command_Timeout raw 4 (> 0; packed raw 0x400040004, low 16 bits)",
    ),
    (
        "sat-Seagate_Constellation_ES_SATA-ST32000644NS-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Seagate_Constellation_ES_SATA_6Gb_s-ST500NM0011-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Seagate_Enterprise_Capacity_3.5_HDD-ST10000NM0016-1TT101-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Seagate_Enterprise_Capacity_3.5_HDD-ST4000NM0035-1V4107-sdc.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Seagate_Enterprise_Capacity_3.5_HDD-ST8000NM0016-1U3101-sds.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Seagate_Enterprise_Capacity_3.5_HDD-ST8000NM0055-1RM112-sdh.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Seagate_Exos_7E8-ST8000NM000A-2KE101-sdi.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Seagate_Exos_X16-ST16000NM001G-2KK103-sda.json",
        Suspect,
        "attribute 188 Command_Timeout raw 12 (> 0; packed raw 0xc000c000c, low 16 bits)",
    ),
    (
        "sat-Silicon_Motion_based_SSDs-TS32GMTS400-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Toshiba_3.5_HDD_MK.002TSKB-TOSHIBA_MK1002TSKB-sdb.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Toshiba_MG04ACA..._Enterprise_HDD-TOSHIBA_MG04ACA200E-sdd.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Toshiba_MG04ACA..._Enterprise_HDD-TOSHIBA_MG04ACA400E-sdg.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Toshiba_MG05ACA..._Enterprise_Capacity_HDD-TOSHIBA_MG05ACA800E-sdw.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Toshiba_MG06ACA..._Enterprise_Capacity_HDD-TOSHIBA_MG06ACA800E-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Toshiba_MG08ACA..._Enterprise_Capacity_HDD-TOSHIBA_MG08ACA16TE-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Toshiba_MG09ACA..._Enterprise_Capacity_HDD-TOSHIBA_MG09ACA18TE-sdd.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Western_Digital_RE3_Serial_ATA-WDC_WD1002FBYS-02A6B0-sdb.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Western_Digital_RE3_Serial_ATA-WDC_WD5002ABYS-02B1B0-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Western_Digital_RE4-WDC_WD1003FBYX-01Y7B0-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Western_Digital_RE4-WDC_WD2003FYYS-02W0B1-sdi.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Western_Digital_RE4-WDC_WD5003ABYX-01WERA1-sdb.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Western_Digital_RE4-WDC_WD5003ABYZ-011FA0-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Western_Digital_Re-WDC_WD2000FYYZ-01UL1B1-sdj.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Western_Digital_Re-WDC_WD3000FYYZ-01UL1B1-sdc.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Western_Digital_Ultrastar_DC_HC550-WDC__WUH721816ALE6L4-sdx.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Western_Digital_Ultrastar_DC_HC550-WDC__WUH721818ALN604-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-Western_Digital_Ultrastar_DC_HC550-WUH721818ALE6L4-sdd.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    (
        "sat-null-Hitachi_HUA722010CLA630-sda.json",
        Healthy,
        "attribute 5 Reallocated_Sector_Ct raw 0",
    ),
    ("sat-null-ST18000NM000J-2TV103-sda.json", Healthy, "attribute 5 Reallocated_Sector_Ct raw 0"),
    ("sat-null-ST8000NM017B-2TJ103-sda.json", Healthy, "attribute 5 Reallocated_Sector_Ct raw 0"),
    ("sat-null-TOSHIBA_HDWR160-sdc.json", Healthy, "attribute 5 Reallocated_Sector_Ct raw 0"),
    ("sat-null-TOSHIBA_MG08ADA800E-sdo.json", Healthy, "attribute 5 Reallocated_Sector_Ct raw 0"),
    ("sat-null-WDC__WUS721010ALE6L4-sda.json", Healthy, "attribute 5 Reallocated_Sector_Ct raw 0"),
];

fn fixture_files() -> Vec<PathBuf> {
    let dir = Path::new(FIXTURES);
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
        panic!("the fixtures at {} (beside the workspace): {e}", dir.display())
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().expect("a file name").to_string_lossy().into_owned()
}

#[test]
fn every_fixture_parses_with_a_known_protocol_and_its_counters() {
    let files = fixture_files();
    assert!(files.len() >= 100, "only {} fixtures in {FIXTURES}", files.len());
    for path in files {
        let bytes = std::fs::read(&path).expect("a readable fixture");
        let device = parse_smartctl(&bytes, &path.display().to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            !matches!(device.protocol, Protocol::Other(_)),
            "{}: {:?}",
            path.display(),
            device.protocol
        );
        assert_eq!(device.smart_passed, Some(true), "{}", path.display());
        assert!(!device.counters.is_empty(), "{}: no counter read", path.display());
        if device.protocol == Protocol::Nvme {
            assert!(
                device.nvme.as_ref().is_some_and(|n| n.available_spare.is_some()),
                "{}",
                path.display()
            );
        }
        let unknown: Vec<&String> =
            device.notes.iter().filter(|n| n.starts_with("unknown")).collect();
        assert!(unknown.is_empty(), "{}: {unknown:?}", path.display());
    }
}

#[test]
fn every_fixture_has_its_row_and_gets_that_verdict_for_that_reason() {
    let files = fixture_files();
    let names: BTreeSet<String> = files.iter().map(|p| file_name(p)).collect();
    let rows: BTreeSet<String> = EXPECTED.iter().map(|(name, _, _)| name.to_string()).collect();
    let unlisted: Vec<&String> = names.difference(&rows).collect();
    assert!(unlisted.is_empty(), "fixtures without a row in EXPECTED: {unlisted:?}");
    let stale: Vec<&String> = rows.difference(&names).collect();
    assert!(stale.is_empty(), "rows in EXPECTED without a fixture: {stale:?}");
    assert_eq!(rows.len(), EXPECTED.len(), "a fixture has two rows");

    let no_sysfs = tempfile::tempdir().expect("a temporary directory");
    for (name, verdict, reason) in EXPECTED {
        let sources = Sources {
            smartctl_json: vec![Path::new(FIXTURES).join(name)],
            sysfs_root: Some(no_sysfs.path().to_owned()),
        };
        let readings = health::read(&sources);
        assert!(readings.errors.is_empty(), "{name}: {:?}", readings.errors);
        let report = Monitor::new(3).observe(&readings, &OwnSignals::default());
        let device = &report.devices[0];
        assert_eq!(device.verdict, *verdict, "{name}: {:?}", device.reasons);
        assert!(
            device.reasons.iter().any(|r| r.contains(reason)),
            "{name}: no reason with {reason:?} in {:?}",
            device.reasons
        );
        assert_eq!(report.measured, *verdict, "{name}: the host is its one device");
    }
    let count = |v: Verdict| EXPECTED.iter().filter(|(_, verdict, _)| *verdict == v).count();
    assert_eq!((count(Healthy), count(Suspect), count(Failing)), (113, 11, 1));
}

#[test]
fn the_whole_directory_reads_as_one_host_with_unique_names_and_keys() {
    let no_sysfs = tempfile::tempdir().expect("a temporary directory");
    let sources = Sources {
        smartctl_json: vec![PathBuf::from(FIXTURES)],
        sysfs_root: Some(no_sysfs.path().to_owned()),
    };
    let readings = health::read(&sources);
    assert!(readings.errors.is_empty(), "{:?}", readings.errors);
    assert_eq!(readings.devices.len(), fixture_files().len());
    let names: BTreeSet<&str> = readings.devices.iter().map(|d| d.name.as_str()).collect();
    let keys: BTreeSet<&str> = readings.devices.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(names.len(), readings.devices.len(), "names repeat");
    assert_eq!(keys.len(), readings.devices.len(), "keys repeat (serial numbers are redacted)");

    let report = Monitor::new(3).observe(&readings, &OwnSignals::default());
    assert_eq!(report.verdict, Failing);
    assert_eq!(report.reasons.len(), 1, "{:?}", report.reasons);
    let reason = &report.reasons[0];
    assert!(reason.contains("ST3500418AS") && reason.contains("raw 304 (>= 100)"), "{reason}");
}
