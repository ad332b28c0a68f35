//! What cannot be read is reported, never a crash: malformed files, unknown fields and
//! devices, truncated and garbled JSON, values of every wrong type.

mod support;

use health::{parse_smartctl, Monitor, OwnSignals, Protocol, Sources, Verdict};
use serde_json::{json, Value};
use std::path::Path;
use support::{ata, nvme, write};
use testkit::Rng;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/smartctl");

fn sources(paths: &[&Path], sysfs: &Path) -> Sources {
    Sources {
        smartctl_json: paths.iter().map(|p| p.to_path_buf()).collect(),
        sysfs_root: Some(sysfs.to_owned()),
    }
}

#[test]
fn a_malformed_or_missing_file_is_an_error_naming_it_and_the_rest_is_still_read() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, b"{\"device\": {\"name\": \"/dev/sda\",").expect("written");
    let good = dir.path().join("good.json");
    write(&good, &ata("/dev/sdb", "S2", &[(5, 1)]));
    let missing = dir.path().join("missing.json");
    let readings = health::read(&sources(&[&bad, &good, &missing], dir.path()));
    assert_eq!(readings.devices.len(), 1);
    assert_eq!(readings.errors.len(), 2, "{:?}", readings.errors);
    assert!(
        readings.errors[0].contains("bad.json: not smartctl JSON output"),
        "{:?}",
        readings.errors
    );
    assert!(readings.errors[1].contains("missing.json: cannot read"), "{:?}", readings.errors);
    let report = Monitor::new(3).observe(&readings, &OwnSignals::default());
    assert_eq!(report.verdict, Verdict::Suspect);
    assert!(report.notes.iter().any(|n| n.starts_with("error: ") && n.contains("bad.json")));

    let empty = tempfile::tempdir().expect("a temporary directory");
    let readings = health::read(&sources(&[empty.path()], dir.path()));
    assert!(readings.notes.iter().any(|n| n.contains("no *.json file")), "{:?}", readings.notes);
}

#[test]
fn unknown_fields_and_devices_are_notes() {
    let mut output = ata("/dev/sda", "S1", &[(5, 0)]);
    output["flux_capacitor"] = json!({"charge": 1.21});
    let device = parse_smartctl(output.to_string().as_bytes(), "x.json").expect("parses");
    assert_eq!(device.notes, ["unknown field \"flux_capacitor\" not judged"]);

    output["json_format_version"] = json!([2, 0]);
    let device = parse_smartctl(output.to_string().as_bytes(), "x.json").expect("parses");
    assert!(device.notes.iter().any(|n| n.contains("[2,0] is not 1.x")), "{:?}", device.notes);

    output["device"]["protocol"] = json!("Carrier Pigeon");
    output["smart_status"]["passed"] = json!(false);
    let device = parse_smartctl(output.to_string().as_bytes(), "x.json").expect("parses");
    assert_eq!(device.protocol, Protocol::Other("Carrier Pigeon".to_owned()));
    assert!(
        device.notes.iter().any(|n| n.contains("unknown device protocol")),
        "{:?}",
        device.notes
    );
    let readings = health::Readings { devices: vec![device], ..Default::default() };
    let report = Monitor::new(3).observe(&readings, &OwnSignals::default());
    assert_eq!(report.verdict, Verdict::Failing, "smart_status is judged for any protocol");

    let no_smart = json!({"device": {"name": "/dev/sdz", "protocol": "ATA"},
                          "smart_support": {"available": false}});
    let device = parse_smartctl(no_smart.to_string().as_bytes(), "y.json").expect("parses");
    assert!(device.notes.iter().any(|n| n.contains("has no SMART")), "{:?}", device.notes);
    assert!(parse_smartctl(b"[1, 2]", "z.json").unwrap_err().contains("z.json"));
}

#[test]
fn failed_status_when_failed_and_critical_warnings_are_failing() {
    let mut failed_now = ata("/dev/sda", "S1", &[(5, 0)]);
    failed_now["ata_smart_attributes"]["table"][0]["when_failed"] = json!("now");
    let mut failed_past = ata("/dev/sda", "S1", &[(5, 0)]);
    failed_past["ata_smart_attributes"]["table"][0]["when_failed"] = json!("past");
    let mut status = ata("/dev/sda", "S1", &[(5, 0)]);
    status["smart_status"]["passed"] = json!(false);
    let warning = |bits: u64| {
        nvme(
            "/dev/nvme0",
            "N1",
            json!({"critical_warning": bits, "media_errors": 0,
             "available_spare": 100, "available_spare_threshold": 10, "percentage_used": 1}),
        )
    };
    let worn = nvme("/dev/nvme0", "N1", json!({"critical_warning": 0, "percentage_used": 97}));
    // (output, verdict, a reason it must give)
    let table = [
        (failed_now, Verdict::Failing, "attribute 5 Reallocated_Sector_Ct when_failed now"),
        (failed_past, Verdict::Suspect, "attribute 5 Reallocated_Sector_Ct when_failed past"),
        (status, Verdict::Failing, "smart_status.passed false"),
        (warning(0x01), Verdict::Failing, "available spare below its threshold"),
        (warning(0x02), Verdict::Suspect, "temperature"),
        (warning(0x04), Verdict::Failing, "reliability degraded"),
        (warning(0x08), Verdict::Failing, "read-only"),
        (warning(0x80), Verdict::Failing, "a bit this version does not know"),
        (worn, Verdict::Suspect, "NVMe percentage_used 97% (>= 90"),
    ];
    for (output, verdict, reason) in table {
        let device = parse_smartctl(output.to_string().as_bytes(), "t.json").expect("parses");
        let readings = health::Readings { devices: vec![device], ..Default::default() };
        let report = Monitor::new(3).observe(&readings, &OwnSignals::default());
        let device = &report.devices[0];
        assert_eq!(device.verdict, verdict, "{reason}: {:?}", device.reasons);
        assert!(
            device.reasons.iter().any(|r| r.contains(reason)),
            "{reason:?} in {:?}",
            device.reasons
        );
    }
}

#[test]
fn the_json_report_has_exactly_its_documented_shape() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    write(&dir.path().join("sda.json"), &ata("/dev/sda", "S1", &[(5, 24)]));
    let readings = health::read(&sources(&[dir.path()], dir.path()));
    let report = Monitor::new(3).observe(&readings, &OwnSignals::default());
    let value = report.to_json();
    let keys = |v: &Value| v.as_object().expect("an object").keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&value), ["devices", "host", "notes"]);
    assert_eq!(keys(&value["host"]), ["reasons", "verdict"]);
    assert_eq!(value["host"]["verdict"], "suspect");
    assert_eq!(
        value["devices"],
        json!([{"name": "/dev/sda (TEST HDD)", "verdict": "suspect",
                "reasons": ["attribute 5 Reallocated_Sector_Ct raw 24 (> 0)"]}])
    );
    assert_eq!(
        value["host"]["reasons"],
        json!(["/dev/sda (TEST HDD): attribute 5 Reallocated_Sector_Ct raw 24 (> 0)"])
    );
    assert!(value["notes"][0].as_str().expect("a note").contains("no EDAC memory controller"));
}

/// Every way of breaking a fixture: cut short, bytes flipped, values replaced by ones of other
/// types and sizes. Nothing may panic; a result is an error or a reading.
#[test]
fn truncated_garbled_and_random_json_never_panics() {
    let seed = 0x5eed_4ea1;
    let mut rng = Rng::from_seed(seed);
    let mut fixtures: Vec<Vec<u8>> = std::fs::read_dir(FIXTURES)
        .expect("the fixtures")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| std::fs::read(p).expect("a fixture"))
        .collect();
    fixtures.sort();
    let mut parsed = 0;
    for round in 0..3_000 {
        let base = &fixtures[rng.below(fixtures.len() as u64) as usize];
        let bytes = match round % 3 {
            0 => base[..rng.below(base.len() as u64 + 1) as usize].to_vec(),
            1 => flip_bytes(base, &mut rng),
            _ => replace_values(base, &mut rng),
        };
        match parse_smartctl(&bytes, "fuzzed.json") {
            Ok(device) => {
                parsed += 1;
                let readings = health::Readings { devices: vec![device], ..Default::default() };
                let mut monitor = Monitor::new(2);
                monitor.observe(&readings, &OwnSignals::default());
                monitor.observe(&readings, &OwnSignals::default()).to_json();
            }
            Err(e) => assert!(e.starts_with("fuzzed.json: "), "seed {seed:#x} round {round}: {e}"),
        }
    }
    assert!(
        parsed > 500,
        "seed {seed:#x}: only {parsed} of the inputs parsed: the mutations are too coarse"
    );
}

fn flip_bytes(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() as u64) as usize;
        bytes[at] = rng.below(256) as u8;
    }
    bytes
}

/// The fixture with some of its values (at any depth) replaced by random ones.
fn replace_values(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(base).expect("a fixture is JSON");
    mutate(&mut value, rng, 0);
    serde_json::to_vec(&value).expect("JSON")
}

fn mutate(value: &mut Value, rng: &mut Rng, depth: u32) {
    if rng.chance(0.08) || (depth > 0 && !value.is_object() && !value.is_array() && rng.chance(0.3))
    {
        *value = random_value(rng);
        return;
    }
    match value {
        Value::Object(map) => map.values_mut().for_each(|v| mutate(v, rng, depth + 1)),
        Value::Array(items) => items.iter_mut().for_each(|v| mutate(v, rng, depth + 1)),
        _ => {}
    }
}

fn random_value(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => Value::Null,
        1 => json!(rng.chance(0.5)),
        2 => json!(rng.next_u64()),
        3 => json!(-(rng.below(1 << 40) as i64)),
        4 => json!(rng.below(1_000_000) as f64 / 7.0),
        5 => json!(
            ["now", "past", "", "0 0 0", "0x", "12 (Min/Max 0/0)", "\u{0}"][rng.below(7) as usize]
        ),
        6 => json!([rng.below(100), "x"]),
        7 => json!({"value": rng.next_u64(), "string": rng.next_u64().to_string()}),
        _ => json!(u64::MAX),
    }
}
