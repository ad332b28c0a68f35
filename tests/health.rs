//! `cradle health` as a user runs it: the built binary, over saved smartctl JSON, a fake EDAC
//! tree, a machine without smartctl, and a stand-in `smartctl` on PATH.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/smartctl");

fn cradle_health(args: &[&str], path_env: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cradle"));
    command.arg("health").args(args);
    if let Some(path) = path_env {
        command.env("PATH", path);
    }
    command.output().expect("cradle runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", stdout(output)))
}

#[test]
fn the_fixture_directory_is_one_failing_host_and_exits_zero() {
    let sysfs = tempfile::tempdir().expect("a temporary directory");
    let root = sysfs.path().to_str().expect("a UTF-8 path");
    let output =
        cradle_health(&["--smartctl-json", FIXTURES, "--sysfs-root", root, "--json"], None);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["host"]["verdict"], "failing");
    let reasons = report["host"]["reasons"].as_array().expect("reasons");
    assert!(reasons[0].as_str().expect("a reason").contains("ST3500418AS"), "{reasons:?}");
    let devices = report["devices"].as_array().expect("devices");
    let count = |v: &str| devices.iter().filter(|d| d["verdict"] == v).count();
    assert_eq!((count("healthy"), count("suspect"), count("failing")), (113, 11, 1));
    for device in devices {
        let keys: Vec<&String> = device.as_object().expect("an object").keys().collect();
        assert_eq!(keys, ["name", "reasons", "verdict"]);
        assert!(!device["reasons"].as_array().expect("reasons").is_empty(), "{device}");
    }
}

#[test]
fn plain_text_names_each_device_its_verdict_and_reasons_and_the_edac_counters() {
    let sysfs = tempfile::tempdir().expect("a temporary directory");
    let mc = sysfs.path().join("sys/devices/system/edac/mc/mc0");
    std::fs::create_dir_all(&mc).expect("directories");
    std::fs::write(mc.join("ce_count"), "0\n").expect("written");
    std::fs::write(mc.join("ue_count"), "1\n").expect("written");
    let disk = format!("{FIXTURES}/MB0500EBNCR_13.json");
    let root = sysfs.path().to_str().expect("a UTF-8 path");
    let output = cradle_health(&["--smartctl-json", &disk, "--sysfs-root", root], None);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let expected = "host: failing\n  EDAC mc0 ue_count 1 (> 0)\n\
                    device /dev/sdb (MB0500EBNCR): suspect\n  \
                    attribute 187 Reported_Uncorrect raw 1 (> 0)\n";
    assert!(text.starts_with(expected), "{text}");
}

#[test]
fn an_unreadable_or_malformed_input_fails_naming_it_and_a_usage_error_is_two() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bad = dir.path().join("truncated.json");
    std::fs::write(&bad, br#"{"device": {"protocol": "ATA""#).expect("written");
    for (path, says) in
        [(bad.as_path(), "not smartctl JSON"), (Path::new("/no/such.json"), "cannot read")]
    {
        let path = path.to_str().expect("a UTF-8 path");
        let output = cradle_health(&["--smartctl-json", path, "--sysfs-root", path], None);
        assert_eq!(output.status.code(), Some(1), "{path}");
        let err = stderr(&output);
        assert!(err.contains(path) && err.contains(says), "{path}: {err}");
    }
    let output = cradle_health(&["--smartctl-jsn", "x"], None);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn without_smartctl_on_the_machine_it_says_so_and_still_reports() {
    let empty = tempfile::tempdir().expect("a temporary directory");
    let path = empty.path().to_str().expect("a UTF-8 path");
    let output = cradle_health(&[], Some(path));
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("host: "), "{text}");
    assert!(text.contains("smartctl is not installed"), "{text}");
}

#[test]
fn with_smartctl_it_scans_and_reads_every_device_and_says_which_has_no_smart() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path();
    std::fs::write(
        d.join("scan.json"),
        r#"{"devices": [{"name": "/dev/sda", "type": "sat", "protocol": "ATA"},
                        {"name": "/dev/sdb", "type": "sat", "protocol": "ATA"},
                        {"name": "/dev/sdc", "type": "scsi", "open_error": "Permission denied"},
                        {"name": "/dev/sdd", "type": "sat", "protocol": "ATA"}]}"#,
    )
    .expect("written");
    std::fs::copy(format!("{FIXTURES}/ST3500418AS_11.json"), d.join("sda.json")).expect("copied");
    std::fs::write(
        d.join("sdb.json"),
        r#"{"json_format_version": [1, 0],
            "smartctl": {"exit_status": 4,
                         "messages": [{"string": "Read SMART Data failed", "severity": "error"}]},
            "device": {"name": "/dev/sdb", "type": "sat", "protocol": "ATA"},
            "model_name": "USB BRIDGE", "smart_support": {"available": false}}"#,
    )
    .expect("written");
    std::fs::write(
        d.join("sdd.json"),
        r#"{"smartctl": {"exit_status": 2, "messages": [{"severity": "error",
                "string": "Smartctl open device: /dev/sdd failed: No such device"}]},
            "device": {"name": "/dev/sdd", "type": "sat", "protocol": "ATA"}}"#,
    )
    .expect("written");
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in\n\
         \"--scan-open --json\") exec cat {0}/scan.json ;;\n\
         \"--json -a -d sat /dev/sda\") cat {0}/sda.json; exit 0 ;;\n\
         \"--json -a -d sat /dev/sdb\") cat {0}/sdb.json; exit 4 ;;\n\
         \"--json -a -d sat /dev/sdd\") cat {0}/sdd.json; exit 2 ;;\n\
         esac\necho \"unexpected: $*\" >&2\nexit 1\n",
        d.display()
    );
    let smartctl = d.join("smartctl");
    std::fs::write(&smartctl, script).expect("written");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&smartctl, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let path = format!("{}:/usr/bin:/bin", d.display());
    let root = d.to_str().expect("a UTF-8 path");
    let output = cradle_health(&["--sysfs-root", root, "--json"], Some(&path));
    assert!(output.status.success(), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["host"]["verdict"], "suspect", "{report}");
    let names: Vec<&str> = report["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["/dev/sdb (ST3500418AS)", "/dev/sdb (USB BRIDGE)"], "{report}");
    let notes = report["notes"].to_string();
    assert!(notes.contains("USB BRIDGE): the device has no SMART"), "{notes}");
    assert!(notes.contains("Read SMART Data failed"), "{notes}");
    assert!(notes.contains("smartctl cannot open /dev/sdc: Permission denied"), "{notes}");
    assert!(
        notes.contains("/dev/sdd: smartctl says: Smartctl open device: /dev/sdd failed"),
        "{notes}"
    );
    assert!(!notes.contains("not installed"), "{notes}");
}
