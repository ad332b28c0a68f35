//! The rules: one reading (and the reading before it) in, findings out. The thresholds and why
//! they were chosen are in docs/OPERATIONS.md, "Hardware health".

use crate::edac::{EdacCounter, EdacKind};
use crate::own::OwnSignals;
use crate::smartctl::{Counter, CounterKind, DeviceReading, NvmeHealth};
use crate::verdict::{Finding, Verdict};
use std::collections::BTreeMap;

/// A device counter's rule: any non-zero value is suspect (Backblaze); from `failing_at` on it
/// is failing by its level alone; growth between two readings gives `growth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    /// The counter the rule is for.
    pub kind: CounterKind,
    /// The level from which the counter alone makes the device failing (`None`: never).
    pub failing_at: Option<u64>,
    /// The verdict when the counter grew since the previous reading.
    pub growth: Verdict,
}

const fn rule(kind: CounterKind, failing_at: Option<u64>, growth: Verdict) -> Threshold {
    Threshold { kind, failing_at, growth }
}

const THRESHOLDS: [Threshold; 8] = [
    rule(CounterKind::Reallocated, Some(100), Verdict::Failing),
    rule(CounterKind::ReportedUncorrectable, Some(10), Verdict::Failing),
    // Timeouts are also cables, backplanes and controllers: never failing on their own.
    rule(CounterKind::CommandTimeout, None, Verdict::Suspect),
    rule(CounterKind::PendingSectors, Some(10), Verdict::Failing),
    rule(CounterKind::OfflineUncorrectable, Some(10), Verdict::Failing),
    rule(CounterKind::MediaErrors, Some(10), Verdict::Failing),
    rule(CounterKind::GrownDefects, Some(100), Verdict::Failing),
    rule(CounterKind::Uncorrected, Some(10), Verdict::Failing),
];

/// Every device counter's rule.
pub fn thresholds() -> &'static [Threshold] {
    &THRESHOLDS
}

fn threshold(kind: CounterKind) -> Threshold {
    let found = THRESHOLDS.iter().find(|t| t.kind == kind);
    *found.expect("every counter kind has a threshold")
}

/// NVMe `percentage_used` from which a drive is suspect: its rated endurance is nearly spent.
pub(crate) const PERCENTAGE_USED_SUSPECT: u64 = 90;
/// EDAC corrected errors since boot from which a controller or DIMM is suspect (mcelog's
/// trigger is 10 in 24 hours; a count since boot has no window, so this is the stricter use).
pub(crate) const EDAC_CE_SUSPECT: u64 = 10;
/// EDAC corrected errors added between two readings from which it is failing: a DIMM that
/// corrects this many in one interval is in an error storm that precedes uncorrected errors.
pub(crate) const EDAC_CE_GROWTH_FAILING: u64 = 10;

/// The NVMe `critical_warning` bits and the verdict each asks for.
const CRITICAL_WARNING_BITS: [(u64, Verdict, &str); 6] = [
    (0x01, Verdict::Failing, "available spare below its threshold"),
    (0x02, Verdict::Suspect, "temperature outside its limits"),
    (0x04, Verdict::Failing, "NVM subsystem reliability degraded"),
    (0x08, Verdict::Failing, "media in read-only mode"),
    (0x10, Verdict::Failing, "volatile memory backup failed"),
    (0x20, Verdict::Failing, "persistent memory region read-only"),
];

/// The findings about one device; `previous` holds its counters' values at the last reading
/// (by label), if it was seen then.
pub(crate) fn judge_device(
    device: &DeviceReading,
    previous: Option<&BTreeMap<String, u64>>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if device.smart_passed == Some(false) {
        let reason = "SMART overall-health self-assessment failed (smart_status.passed false)";
        findings.push(Finding::new(Verdict::Failing, reason));
    } else if device.exit_status.is_some_and(|s| s & 0x08 != 0) {
        let reason = "smartctl exit status bit 3: the drive reports itself failing";
        findings.push(Finding::new(Verdict::Failing, reason));
    }
    for failed in &device.failed_attributes {
        let (verdict, when) =
            if failed.now { (Verdict::Failing, "now") } else { (Verdict::Suspect, "past") };
        let reason = format!(
            "{} when_failed {when} (normalized value at or below its threshold)",
            failed.label
        );
        findings.push(Finding::new(verdict, reason));
    }
    for counter in &device.counters {
        let before = previous.and_then(|p| p.get(&counter.label)).copied();
        findings.extend(judge_counter(counter, before));
    }
    if let Some(nvme) = &device.nvme {
        findings.extend(judge_nvme(nvme));
    }
    if findings.is_empty() {
        findings.push(Finding::new(Verdict::Healthy, all_clear(device)));
    }
    findings
}

fn judge_counter(counter: &Counter, before: Option<u64>) -> Vec<Finding> {
    let rule = threshold(counter.kind);
    let (label, value) = (&counter.label, counter.value);
    let unpacked = counter.unpacked.as_ref().map(|u| format!("; {u}")).unwrap_or_default();
    let mut findings = Vec::new();
    if let Some(before) = before.filter(|&b| value > b) {
        let reason = format!("{label} grew from {before} to {value} since the last reading");
        findings.push(Finding::new(rule.growth, reason));
    }
    match rule.failing_at {
        _ if value == 0 => {}
        Some(limit) if value >= limit => {
            let reason = format!("{label} {value} (>= {limit}{unpacked})");
            findings.push(Finding::new(Verdict::Failing, reason));
        }
        _ => findings
            .push(Finding::new(Verdict::Suspect, format!("{label} {value} (> 0{unpacked})"))),
    }
    findings
}

fn judge_nvme(nvme: &NvmeHealth) -> Vec<Finding> {
    let mut findings = Vec::new();
    let warning = nvme.critical_warning;
    let mut known = 0;
    for (bit, verdict, meaning) in CRITICAL_WARNING_BITS {
        known |= bit;
        if warning & bit != 0 {
            let reason = format!("NVMe critical_warning {warning:#04x}: bit {bit:#04x}, {meaning}");
            findings.push(Finding::new(verdict, reason));
        }
    }
    if warning & !known != 0 {
        let reason =
            format!("NVMe critical_warning {warning:#04x}: a bit this version does not know");
        findings.push(Finding::new(Verdict::Failing, reason));
    }
    if let (Some(spare), Some(limit)) = (nvme.available_spare, nvme.available_spare_threshold) {
        if spare < limit {
            let reason =
                format!("NVMe available_spare {spare}% below available_spare_threshold {limit}%");
            findings.push(Finding::new(Verdict::Failing, reason));
        }
    }
    if let Some(used) = nvme.percentage_used.filter(|&u| u >= PERCENTAGE_USED_SUSPECT) {
        let limit = PERCENTAGE_USED_SUSPECT;
        let reason =
            format!("NVMe percentage_used {used}% (>= {limit}: rated endurance nearly spent)");
        findings.push(Finding::new(Verdict::Suspect, reason));
    }
    findings
}

/// The sentence for a device with nothing against it: what was checked.
fn all_clear(device: &DeviceReading) -> String {
    let mut checked = Vec::new();
    if device.smart_passed == Some(true) {
        checked.push("smart_status passed".to_owned());
    }
    checked.extend(device.counters.iter().map(|c| format!("{} {}", c.label, c.value)));
    if let Some(nvme) = &device.nvme {
        checked.push(format!("NVMe critical_warning {:#04x}", nvme.critical_warning));
        if let (Some(spare), Some(limit)) = (nvme.available_spare, nvme.available_spare_threshold) {
            checked.push(format!("NVMe available_spare {spare}% (threshold {limit}%)"));
        }
        if let Some(used) = nvme.percentage_used {
            checked.push(format!("NVMe percentage_used {used}%"));
        }
    }
    if checked.is_empty() {
        return "nothing to judge: no counter cradle reads was present".to_owned();
    }
    format!("no warning: {}", checked.join(", "))
}

/// The findings about the EDAC counters; `previous` holds their values at the last reading.
pub(crate) fn judge_edac(
    counters: &[EdacCounter],
    previous: &BTreeMap<String, u64>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for counter in counters {
        let (label, value) = (&counter.label, counter.value);
        let grown = previous.get(&counter.key).map_or(0, |&before| value.saturating_sub(before));
        let before = value - grown;
        match counter.kind {
            EdacKind::Uncorrected if grown > 0 => {
                let reason =
                    format!("{label} grew from {before} to {value} since the last reading");
                findings.push(Finding::new(Verdict::Failing, reason));
            }
            EdacKind::Uncorrected if value > 0 => {
                findings.push(Finding::new(Verdict::Failing, format!("{label} {value} (> 0)")));
            }
            EdacKind::Corrected if grown >= EDAC_CE_GROWTH_FAILING => {
                let storm = EDAC_CE_GROWTH_FAILING;
                let reason = format!(
                    "{label} grew from {before} to {value} since the last reading \
                     (>= {storm} at once)"
                );
                findings.push(Finding::new(Verdict::Failing, reason));
            }
            EdacKind::Corrected if grown > 0 => {
                let reason =
                    format!("{label} grew from {before} to {value} since the last reading");
                findings.push(Finding::new(Verdict::Suspect, reason));
            }
            EdacKind::Corrected if value >= EDAC_CE_SUSPECT => {
                let reason = format!("{label} {value} (>= {EDAC_CE_SUSPECT})");
                findings.push(Finding::new(Verdict::Suspect, reason));
            }
            _ => {}
        }
    }
    findings
}

/// The findings about cradle's own counters; `before` is their last reading (all 0 before the
/// first, since they count from the node's start).
pub(crate) fn judge_own(now: &OwnSignals, before: &OwnSignals) -> Vec<Finding> {
    let mut findings = Vec::new();
    for ((name, value), (_, earlier)) in now.fields().into_iter().zip(before.fields()) {
        let label = format!("cradle {name}");
        let outliers = name == "fsync_outliers";
        if value > earlier {
            let verdict = if outliers { Verdict::Suspect } else { Verdict::Failing };
            let reason = format!("{label} grew from {earlier} to {value} since the last reading");
            findings.push(Finding::new(verdict, reason));
        } else if value > 0 && !outliers {
            findings.push(Finding::new(Verdict::Suspect, format!("{label} {value} (> 0)")));
        }
    }
    findings
}
