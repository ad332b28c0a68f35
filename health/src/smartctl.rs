//! `smartctl --json -a` output parsed into the counters cradle judges (pure: bytes in).

use crate::ata_raw;
use serde_json::{Map, Value};

/// How the device talks, from smartctl's `device.protocol`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// ATA or SATA (smartctl types `ata`, `sat`, ...): the attribute table.
    Ata,
    /// NVMe: the SMART / health information log.
    Nvme,
    /// SCSI or SAS: the grown defect list and the error counter log.
    Scsi,
    /// A protocol this crate does not know: only the overall status is judged.
    Other(String),
}

/// Which counter a [`Counter`] is; each kind has its rule ([`crate::thresholds`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CounterKind {
    /// ATA attribute 5, Reallocated_Sector_Ct.
    Reallocated,
    /// ATA attribute 187, Reported_Uncorrect.
    ReportedUncorrectable,
    /// ATA attribute 188, Command_Timeout.
    CommandTimeout,
    /// ATA attribute 197, Current_Pending_Sector.
    PendingSectors,
    /// ATA attribute 198, Offline_Uncorrectable.
    OfflineUncorrectable,
    /// NVMe `media_errors`: unrecovered data integrity errors.
    MediaErrors,
    /// SCSI `scsi_grown_defect_list`: blocks remapped since manufacture.
    GrownDefects,
    /// SCSI `scsi_error_counter_log.{read,write,verify}.total_uncorrected_errors`.
    Uncorrected,
}

/// One cumulative counter of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    /// What it counts.
    pub kind: CounterKind,
    /// Its name in reasons, unique within its device (e.g. `attribute 5
    /// Reallocated_Sector_Ct raw`); also the key its previous value is remembered by.
    pub label: String,
    /// The count (for ATA, decoded from the packed raw value: see `ata_raw`).
    pub value: u64,
    /// How a packed raw value was unpacked, when it was.
    pub unpacked: Option<String>,
}

/// An ATA attribute whose normalized value is or was at or below its threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedAttribute {
    /// `attribute ID NAME`.
    pub label: String,
    /// `true` for `when_failed: "now"`, `false` for `"past"`.
    pub now: bool,
}

/// The NVMe health log's levels (its counter, `media_errors`, is a [`Counter`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NvmeHealth {
    /// The `critical_warning` bit field (0 when absent).
    pub critical_warning: u64,
    /// `available_spare`, percent.
    pub available_spare: Option<u64>,
    /// `available_spare_threshold`, percent.
    pub available_spare_threshold: Option<u64>,
    /// `percentage_used`: the vendor's estimate of endurance used (may exceed 100).
    pub percentage_used: Option<u64>,
}

/// What one `smartctl --json -a` output says about one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceReading {
    /// How reports name it: `DEVICE (MODEL)`, made unique within a reading by its source.
    pub name: String,
    /// Its identity across readings: `MODEL SERIAL` when smartctl printed a serial number,
    /// else its name (made unique within a reading like the name).
    pub key: String,
    /// Where it was read from: a file's path, or the smartctl command.
    pub source: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// `smart_status.passed`: the drive's own overall verdict, when it gave one.
    pub smart_passed: Option<bool>,
    /// smartctl's exit status, a bit mask (bit 3: the drive says it is failing).
    pub exit_status: Option<u64>,
    /// The counters cradle judges, as found.
    pub counters: Vec<Counter>,
    /// ATA attributes with a `when_failed` of `now` or `past`.
    pub failed_attributes: Vec<FailedAttribute>,
    /// NVMe levels (NVMe devices only).
    pub nvme: Option<NvmeHealth>,
    /// What could not be read or is not understood: unknown fields, missing tables, smartctl's
    /// own error messages.
    pub notes: Vec<String>,
}

/// The ATA attributes cradle judges: Backblaze's five.
const ATA_ATTRIBUTES: [(u64, CounterKind); 5] = [
    (5, CounterKind::Reallocated),
    (187, CounterKind::ReportedUncorrectable),
    (188, CounterKind::CommandTimeout),
    (197, CounterKind::PendingSectors),
    (198, CounterKind::OfflineUncorrectable),
];

/// Top-level fields smartctl prints that cradle knowingly does not judge; fields starting with
/// a protocol's prefix (`ata_`, `nvme_`, `scsi_`, `sata_`) are known too. Anything else is
/// reported as a note.
const KNOWN_FIELDS: &[&str] = &[
    "json_format_version",
    "smartctl",
    "local_time",
    "device",
    "device_type",
    "model_family",
    "model_name",
    "serial_number",
    "wwn",
    "firmware_version",
    "user_capacity",
    "logical_block_size",
    "physical_block_size",
    "logical_unit_id",
    "rotation_rate",
    "form_factor",
    "trim",
    "in_smartctl_database",
    "interface_speed",
    "smart_support",
    "smart_status",
    "temperature",
    "temperature_warning",
    "power_on_time",
    "power_cycle_count",
    "read_lookahead",
    "write_cache",
    "spare_available",
    "endurance_used",
    "seagate_farm_log",
];

const KNOWN_PREFIXES: [&str; 4] = ["ata_", "nvme_", "scsi_", "sata_"];

/// Parses one `smartctl --json -a` output read from `source` (a path or a command, named in
/// errors and notes). Errors only when the bytes are not a JSON object; anything inside it
/// that is missing, unknown or of the wrong type becomes a note.
pub fn parse_smartctl(bytes: &[u8], source: &str) -> Result<DeviceReading, String> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("{source}: not smartctl JSON output: {e}"))?;
    let Value::Object(top) = value else {
        return Err(format!("{source}: not smartctl JSON output: not a JSON object"));
    };
    let mut reading = identify(&top, source);
    reading.notes.extend(smartctl_messages(&top));
    reading.notes.extend(unknown_fields(&top));
    reading.notes.extend(format_version(&top));
    read_status(&top, &mut reading);
    match reading.protocol {
        Protocol::Ata => read_ata(&top, &mut reading),
        Protocol::Nvme => read_nvme(&top, &mut reading),
        Protocol::Scsi => read_scsi(&top, &mut reading),
        Protocol::Other(ref name) => {
            let note = format!("unknown device protocol {name:?}: only smart_status is judged");
            reading.notes.push(note);
        }
    }
    Ok(reading)
}

fn identify(top: &Map<String, Value>, source: &str) -> DeviceReading {
    let device = top.get("device").and_then(Value::as_object);
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::trim).map(str::to_owned);
    let device_name = text(device.and_then(|d| d.get("name")));
    let model = text(top.get("model_name"))
        .or_else(|| text(top.get("scsi_model_name")))
        .or_else(|| text(top.get("scsi_product")))
        .unwrap_or_else(|| "unknown model".to_owned());
    let name = format!("{} ({model})", device_name.as_deref().unwrap_or(source));
    let key = match text(top.get("serial_number")) {
        Some(serial) if !serial.is_empty() => format!("{model} {serial}"),
        _ => name.clone(),
    };
    let protocol = match text(device.and_then(|d| d.get("protocol"))) {
        Some(p) if p.eq_ignore_ascii_case("ata") => Protocol::Ata,
        Some(p) if p.eq_ignore_ascii_case("nvme") => Protocol::Nvme,
        Some(p) if p.eq_ignore_ascii_case("scsi") => Protocol::Scsi,
        Some(p) => Protocol::Other(p),
        None => Protocol::Other("none given".to_owned()),
    };
    DeviceReading {
        name,
        key,
        source: source.to_owned(),
        protocol,
        smart_passed: None,
        exit_status: None,
        counters: Vec::new(),
        failed_attributes: Vec::new(),
        nvme: None,
        notes: Vec::new(),
    }
}

/// smartctl's own error and warning messages (a device it could not open, a command that
/// failed), as notes.
fn smartctl_messages(top: &Map<String, Value>) -> Vec<String> {
    let messages = top.get("smartctl").and_then(|s| s.get("messages")).and_then(Value::as_array);
    messages
        .into_iter()
        .flatten()
        .filter(|m| m.get("severity").and_then(Value::as_str) != Some("information"))
        .filter_map(|m| m.get("string").and_then(Value::as_str))
        .map(|s| format!("smartctl says: {s}"))
        .collect()
}

fn unknown_fields(top: &Map<String, Value>) -> Vec<String> {
    top.keys()
        .filter(|k| !KNOWN_FIELDS.contains(&k.as_str()))
        .filter(|k| !KNOWN_PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|k| format!("unknown field {k:?} not judged"))
        .collect()
}

/// A note when smartctl's JSON format is not the 1.x this parser was written for.
fn format_version(top: &Map<String, Value>) -> Option<String> {
    let version = top.get("json_format_version")?;
    let major = version.get(0).and_then(Value::as_u64);
    (major != Some(1)).then(|| format!("json_format_version {version} is not 1.x: read as 1.x"))
}

fn read_status(top: &Map<String, Value>, reading: &mut DeviceReading) {
    reading.exit_status = top.get("smartctl").and_then(|s| s.get("exit_status")?.as_u64());
    reading.smart_passed = top.get("smart_status").and_then(|s| s.get("passed")?.as_bool());
    let support = top.get("smart_support");
    if support.and_then(|s| s.get("available")).and_then(Value::as_bool) == Some(false) {
        reading.notes.push("the device has no SMART (smart_support.available false)".to_owned());
    } else if support.and_then(|s| s.get("enabled")).and_then(Value::as_bool) == Some(false) {
        reading
            .notes
            .push("SMART is disabled on the device (smart_support.enabled false)".to_owned());
    }
    let exit_status = reading.exit_status.unwrap_or(0);
    if exit_status & 0x02 != 0 {
        reading.notes.push("smartctl could not open the device (exit status bit 1)".to_owned());
    }
    if exit_status & 0x04 != 0 {
        let note = "a SMART command failed or its data had a bad checksum (exit status bit 2)";
        reading.notes.push(note.to_owned());
    }
    if reading.smart_passed.is_none() {
        reading.notes.push("no overall SMART status (smart_status.passed)".to_owned());
    }
}

fn read_ata(top: &Map<String, Value>, reading: &mut DeviceReading) {
    let table = top.get("ata_smart_attributes").and_then(|a| a.get("table"));
    let Some(table) = table.and_then(Value::as_array) else {
        reading.notes.push("no ATA SMART attribute table (ata_smart_attributes.table)".to_owned());
        return;
    };
    for attribute in table {
        read_attribute(attribute, reading);
    }
}

fn read_attribute(attribute: &Value, reading: &mut DeviceReading) {
    let Some(id) = attribute.get("id").and_then(Value::as_u64) else {
        reading.notes.push("an ATA attribute without a numeric id was skipped".to_owned());
        return;
    };
    let name = attribute.get("name").and_then(Value::as_str).unwrap_or("unnamed");
    let label = format!("attribute {id} {name}");
    match attribute.get("when_failed").and_then(Value::as_str) {
        Some("now") => {
            reading.failed_attributes.push(FailedAttribute { label: label.clone(), now: true })
        }
        Some("past") => {
            reading.failed_attributes.push(FailedAttribute { label: label.clone(), now: false })
        }
        _ => {}
    }
    let Some(&(_, kind)) = ATA_ATTRIBUTES.iter().find(|(known, _)| *known == id) else {
        return;
    };
    let raw = attribute.get("raw");
    let raw_value = raw.and_then(|r| r.get("value")).and_then(Value::as_u64);
    let raw_string = raw.and_then(|r| r.get("string")).and_then(Value::as_str);
    match ata_raw::decode(id, raw_value, raw_string) {
        Some(decoded) => reading.counters.push(Counter {
            kind,
            label: format!("{label} raw"),
            value: decoded.value,
            unpacked: decoded.unpacked,
        }),
        None => reading.notes.push(format!("{label}: no raw value that is a count")),
    }
}

fn read_nvme(top: &Map<String, Value>, reading: &mut DeviceReading) {
    let Some(log) = top.get("nvme_smart_health_information_log").and_then(Value::as_object) else {
        let note = "no NVMe health log (nvme_smart_health_information_log)";
        reading.notes.push(note.to_owned());
        return;
    };
    let mut count = |field: &str| -> Option<u64> {
        let value = log.get(field)?;
        let count = value.as_u64();
        if count.is_none() {
            reading.notes.push(format!("NVMe {field} is not a count: {value}"));
        }
        count
    };
    let health = NvmeHealth {
        critical_warning: count("critical_warning").unwrap_or(0),
        available_spare: count("available_spare"),
        available_spare_threshold: count("available_spare_threshold"),
        percentage_used: count("percentage_used"),
    };
    if let Some(value) = count("media_errors") {
        let label = "NVMe media_errors".to_owned();
        reading.counters.push(Counter {
            kind: CounterKind::MediaErrors,
            label,
            value,
            unpacked: None,
        });
    }
    reading.nvme = Some(health);
}

fn read_scsi(top: &Map<String, Value>, reading: &mut DeviceReading) {
    match top.get("scsi_grown_defect_list") {
        Some(value) => match value.as_u64() {
            Some(value) => reading.counters.push(Counter {
                kind: CounterKind::GrownDefects,
                label: "SCSI scsi_grown_defect_list".to_owned(),
                value,
                unpacked: None,
            }),
            None => {
                reading.notes.push(format!("SCSI scsi_grown_defect_list is not a count: {value}"))
            }
        },
        None => reading.notes.push("no SCSI grown defect list (scsi_grown_defect_list)".to_owned()),
    }
    let Some(log) = top.get("scsi_error_counter_log").and_then(Value::as_object) else {
        reading.notes.push("no SCSI error counter log (scsi_error_counter_log)".to_owned());
        return;
    };
    for direction in ["read", "write", "verify"] {
        let Some(value) = log.get(direction).and_then(|d| d.get("total_uncorrected_errors")) else {
            continue;
        };
        let label = format!("SCSI {direction} total_uncorrected_errors");
        match value.as_u64() {
            Some(value) => reading.counters.push(Counter {
                kind: CounterKind::Uncorrected,
                label,
                value,
                unpacked: None,
            }),
            None => reading.notes.push(format!("{label} is not a count: {value}")),
        }
    }
}
