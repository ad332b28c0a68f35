//! `cradle health`: one reading of this machine's (or saved) SMART data and EDAC counters,
//! judged by the `health` crate and printed. A report, so every verdict exits 0; only input
//! that cannot be read fails.

use ::health::{HostReport, Monitor, OwnSignals, Sources};
use std::path::PathBuf;
use std::process::ExitCode;

/// `cradle health` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct HealthArgs {
    /// A saved `smartctl --json -a` output, or a directory of them (every `*.json`); may be
    /// repeated. Without it, smartctl is run on this machine's devices.
    #[arg(long = "smartctl-json", value_name = "FILE|DIR")]
    smartctl_json: Vec<PathBuf>,
    /// The directory holding the EDAC sysfs tree (`sys/devices/system/edac`).
    #[arg(long, value_name = "DIR", default_value = "/")]
    sysfs_root: PathBuf,
    /// One JSON object: `host`: {`verdict`, `reasons`}, `devices`: [{`name`, `verdict`,
    /// `reasons`}], `notes`.
    #[arg(long)]
    json: bool,
}

/// Reads, judges and prints; exits 1 (after the report) when a given file could not be read.
pub(crate) fn run(args: &HealthArgs) -> Result<ExitCode, String> {
    let sources = Sources {
        smartctl_json: args.smartctl_json.clone(),
        sysfs_root: Some(args.sysfs_root.clone()),
    };
    let readings = ::health::read(&sources);
    let mut report = Monitor::new(1).observe(&readings, &OwnSignals::default());
    report.notes.push("cradle's own error counters are judged by a running node, not here".into());
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", plain(&report));
    }
    for error in &readings.errors {
        eprintln!("cradle: {error}");
    }
    Ok(if readings.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn plain(report: &HostReport) -> String {
    let mut text = format!("host: {}\n", report.verdict);
    for reason in &report.reasons {
        text += &format!("  {reason}\n");
    }
    for device in &report.devices {
        text += &format!("device {}: {}\n", device.name, device.verdict);
        for reason in &device.reasons {
            text += &format!("  {reason}\n");
        }
    }
    let notes = report.all_notes();
    if !notes.is_empty() {
        text += "notes:\n";
        for note in notes {
            text += &format!("  {note}\n");
        }
    }
    text
}
