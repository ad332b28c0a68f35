//! The monitor: each reading judged against the one before it, and the host's verdict settled.

use crate::own::OwnSignals;
use crate::read::Readings;
use crate::rules;
use crate::settle::Settle;
use crate::verdict::{worst, Finding, Verdict};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One device's verdict in a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceReport {
    /// The device's name (`DEVICE (MODEL)`).
    pub name: String,
    /// Its identity across readings (model and serial number, or name).
    pub key: String,
    /// Its verdict at this reading (no hysteresis: that is the host's).
    pub verdict: Verdict,
    /// The sentences that decided it, each naming a counter and its value.
    pub reasons: Vec<String>,
    /// What could not be read or is not understood about it.
    pub notes: Vec<String>,
}

/// The host's verdict and its devices' at one reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostReport {
    /// The published verdict: worse at once, better only after settling.
    pub verdict: Verdict,
    /// The sentences that decided it, each naming its device or counter.
    pub reasons: Vec<String>,
    /// Every device read.
    pub devices: Vec<DeviceReport>,
    /// The verdict this reading alone gives (before hysteresis).
    pub measured: Verdict,
    /// What could not be read: missing tools, unreadable files, absent EDAC, unknown fields.
    pub notes: Vec<String>,
}

impl HostReport {
    /// `{"host": {"verdict", "reasons"}, "devices": [{"name", "verdict", "reasons"}],
    /// "notes": [...]}`; a device's notes are among `notes`, prefixed with its name.
    pub fn to_json(&self) -> Value {
        let devices: Vec<Value> = self
            .devices
            .iter()
            .map(|d| json!({"name": d.name, "verdict": d.verdict.as_str(), "reasons": d.reasons}))
            .collect();
        json!({
            "host": {"verdict": self.verdict.as_str(), "reasons": self.reasons},
            "devices": devices,
            "notes": self.all_notes(),
        })
    }

    /// The host's notes, then each device's prefixed with its name.
    pub fn all_notes(&self) -> Vec<String> {
        let devices = self.devices.iter();
        let device_notes =
            devices.flat_map(|d| d.notes.iter().map(move |n| format!("{}: {n}", d.name)));
        self.notes.iter().cloned().chain(device_notes).collect()
    }
}

/// A host's verdict gets better after this many consecutive better readings unless the caller
/// chooses otherwise: long enough that one quiet reading between two bad ones does not count.
pub const SETTLE_READINGS_DEFAULT: u32 = 3;

/// Remembers the previous reading of every device (by its key: model and serial number, or
/// name) and every EDAC counter, and settles the host's verdict.
#[derive(Clone, Debug)]
pub struct Monitor {
    settle: Settle,
    devices: BTreeMap<String, BTreeMap<String, u64>>,
    edac: BTreeMap<String, u64>,
    own: OwnSignals,
}

impl Monitor {
    /// A monitor whose host verdict gets better only after `settle_readings` consecutive
    /// better readings (0 counts as 1).
    pub fn new(settle_readings: u32) -> Monitor {
        Monitor {
            settle: Settle::new(settle_readings),
            devices: BTreeMap::new(),
            edac: BTreeMap::new(),
            own: OwnSignals::default(),
        }
    }

    /// Judges one reading, with cradle's own counters at the same time, and remembers it for
    /// the next.
    pub fn observe(&mut self, readings: &Readings, own: &OwnSignals) -> HostReport {
        let mut host: Vec<Finding> = Vec::new();
        let mut devices = Vec::new();
        for device in &readings.devices {
            let findings = rules::judge_device(device, self.devices.get(&device.key));
            let verdict = worst(&findings);
            let prefixed = findings.iter().filter(|f| f.verdict > Verdict::Healthy);
            host.extend(
                prefixed.map(|f| Finding::new(f.verdict, format!("{}: {}", device.name, f.reason))),
            );
            let reasons = findings.into_iter().map(|f| f.reason).collect();
            let notes = device.notes.clone();
            let (name, key) = (device.name.clone(), device.key.clone());
            devices.push(DeviceReport { name, key, verdict, reasons, notes });
        }
        host.extend(self.vanished(readings));
        host.extend(rules::judge_edac(&readings.edac, &self.edac));
        host.extend(rules::judge_own(own, &self.own));
        self.remember(readings, own);

        let measured = worst(&host);
        let verdict = self.settle.step(measured);
        let mut reasons: Vec<String> =
            host.into_iter().filter(|f| f.verdict == measured).map(|f| f.reason).collect();
        if measured == Verdict::Healthy {
            reasons.push(all_clear(readings));
        }
        if let Some((seen, needed)) = self.settle.waiting() {
            reasons.insert(
                0,
                format!("held at {verdict}: better for {seen} of the {needed} readings needed"),
            );
        }
        let notes = readings.notes.clone();
        HostReport { verdict, reasons, devices, measured, notes }
    }

    /// A device read last time and missing now: a disk that died may drop off the bus.
    fn vanished(&self, readings: &Readings) -> Vec<Finding> {
        let present: Vec<&str> = readings.devices.iter().map(|d| d.key.as_str()).collect();
        let missing = self.devices.keys().filter(|k| !present.contains(&k.as_str()));
        let reason =
            |k: &String| format!("device {k} was in the last reading and is missing from this one");
        missing.map(|k| Finding::new(Verdict::Suspect, reason(k))).collect()
    }

    fn remember(&mut self, readings: &Readings, own: &OwnSignals) {
        self.devices = readings
            .devices
            .iter()
            .map(|d| {
                (d.key.clone(), d.counters.iter().map(|c| (c.label.clone(), c.value)).collect())
            })
            .collect();
        self.edac = readings.edac.iter().map(|c| (c.key.clone(), c.value)).collect();
        self.own = *own;
    }
}

fn all_clear(readings: &Readings) -> String {
    if readings.devices.is_empty() && readings.edac.is_empty() {
        return "no warning, but no evidence either: no device and no EDAC counter could be read \
                (see the notes)"
            .to_owned();
    }
    let edac = match readings.edac.len() {
        0 => "no EDAC counters".to_owned(),
        n => format!("{n} EDAC counters below their limits"),
    };
    format!(
        "no warning: {} devices healthy, {edac}, cradle's own error counters 0 and its fsync \
         outliers not growing",
        readings.devices.len()
    )
}
