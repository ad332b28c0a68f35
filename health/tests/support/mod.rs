//! Builders of smartctl JSON and EDAC trees for the tests.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::Path;

/// An ATA drive's `smartctl --json -a` output with these attributes' raw values.
pub(crate) fn ata(device: &str, serial: &str, attributes: &[(u64, u64)]) -> Value {
    let names = [
        (5, "Reallocated_Sector_Ct"),
        (187, "Reported_Uncorrect"),
        (188, "Command_Timeout"),
        (197, "Current_Pending_Sector"),
        (198, "Offline_Uncorrectable"),
        (9, "Power_On_Hours"),
    ];
    let table: Vec<Value> = attributes
        .iter()
        .map(|&(id, raw)| {
            let name = names.iter().find(|(n, _)| *n == id).map_or("Unknown_Attribute", |x| x.1);
            json!({"id": id, "name": name, "value": 100, "worst": 100, "thresh": 10,
                   "when_failed": "", "raw": {"value": raw, "string": raw.to_string()}})
        })
        .collect();
    json!({
        "json_format_version": [1, 0],
        "smartctl": {"version": [7, 4], "exit_status": 0},
        "device": {"name": device, "info_name": device, "type": "sat", "protocol": "ATA"},
        "model_name": "TEST HDD",
        "serial_number": serial,
        "smart_status": {"passed": true},
        "ata_smart_attributes": {"revision": 16, "table": table},
    })
}

/// An NVMe drive's output with this health log.
pub(crate) fn nvme(device: &str, serial: &str, log: Value) -> Value {
    json!({
        "json_format_version": [1, 0],
        "smartctl": {"version": [7, 4], "exit_status": 0},
        "device": {"name": device, "info_name": device, "type": "nvme", "protocol": "NVMe"},
        "model_name": "TEST NVME",
        "serial_number": serial,
        "smart_status": {"passed": true, "nvme": {"value": 0}},
        "nvme_smart_health_information_log": log,
    })
}

/// A SAS drive's output with this grown defect list and read uncorrected errors.
pub(crate) fn scsi(device: &str, serial: &str, grown: u64, read_uncorrected: u64) -> Value {
    let direction = |n: u64| json!({"total_errors_corrected": 7, "total_uncorrected_errors": n});
    json!({
        "json_format_version": [1, 0],
        "smartctl": {"version": [7, 4], "exit_status": 0},
        "device": {"name": device, "info_name": device, "type": "scsi", "protocol": "SCSI"},
        "scsi_model_name": "TEST SAS",
        "serial_number": serial,
        "smart_status": {"passed": true},
        "scsi_grown_defect_list": grown,
        "scsi_error_counter_log": {"read": direction(read_uncorrected), "write": direction(0),
                                   "verify": direction(0)},
    })
}

/// Writes `value` as JSON to `path` (replacing what was there).
pub(crate) fn write(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("JSON")).expect("written");
}

/// Writes one EDAC file under `root`'s `sys/devices/system/edac/mc/` (`rel` like
/// `mc0/dimm1/dimm_ce_count`).
pub(crate) fn edac(root: &Path, rel: &str, contents: &str) {
    let path = root.join("sys/devices/system/edac/mc").join(rel);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("directories");
    std::fs::write(path, contents).expect("written");
}
