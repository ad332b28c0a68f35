//! The thin readers: saved smartctl JSON files and directories, `smartctl` run on this
//! machine, and the EDAC tree. Blocking; every call reads everything again.

use crate::edac::{self, EdacCounter};
use crate::smartctl::{parse_smartctl, DeviceReading};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where to read from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// smartctl JSON files, or directories whose `*.json` files are read. Empty: run
    /// `smartctl` on this machine's devices.
    pub smartctl_json: Vec<PathBuf>,
    /// The directory the EDAC sysfs tree is under (`None`: `/`).
    pub sysfs_root: Option<PathBuf>,
}

/// Everything one [`read`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readings {
    /// One entry per device read, names and keys unique.
    pub devices: Vec<DeviceReading>,
    /// Every EDAC counter found.
    pub edac: Vec<EdacCounter>,
    /// What could not be read, or is not understood; each of `errors` is here too, first, as
    /// `error: ...`.
    pub notes: Vec<String>,
    /// Sources given explicitly that could not be read or parsed, each naming its path (so a
    /// command line tool can fail on them).
    pub errors: Vec<String>,
}

/// How long one `smartctl` run may take before it is killed (a dying disk can hang a command).
const SMARTCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most devices probed on one machine.
const PROBED_DEVICES_MAX: usize = 256;
/// The most bytes read from one file or one smartctl run.
const OUTPUT_BYTES_MAX: u64 = 16 << 20;

/// Reads every source. Never panics: what fails becomes a note or an error in the result.
pub fn read(sources: &Sources) -> Readings {
    let mut readings = Readings::default();
    if sources.smartctl_json.is_empty() {
        probe(&mut readings);
    } else {
        for path in &sources.smartctl_json {
            read_path(path, &mut readings);
        }
    }
    make_unique(&mut readings.devices);
    let root = sources.sysfs_root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let (counters, notes) = edac::read_edac(&root);
    readings.edac = counters;
    readings.notes.extend(notes);
    let errors = readings.errors.iter().map(|e| format!("error: {e}"));
    readings.notes = errors.chain(std::mem::take(&mut readings.notes)).collect();
    readings
}

fn read_path(path: &Path, readings: &mut Readings) {
    if !path.is_dir() {
        return read_file(path, readings);
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            return readings.errors.push(format!("{}: cannot read directory: {e}", path.display()))
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json") && !p.is_dir())
        .collect();
    files.sort();
    if files.is_empty() {
        readings.notes.push(format!("{}: no *.json file in this directory", path.display()));
    }
    for file in files {
        read_file(&file, readings);
    }
}

fn read_file(path: &Path, readings: &mut Readings) {
    let source = path.display().to_string();
    let bytes = std::fs::File::open(path).and_then(|file| {
        let mut bytes = Vec::new();
        file.take(OUTPUT_BYTES_MAX).read_to_end(&mut bytes).map(|_| bytes)
    });
    match bytes {
        Ok(bytes) => match parse_smartctl(&bytes, &source) {
            Ok(device) => readings.devices.push(device),
            Err(e) => readings.errors.push(e),
        },
        Err(e) => readings.errors.push(format!("{source}: cannot read: {e}")),
    }
}

/// Lists this machine's devices with `smartctl --scan-open` and reads each with
/// `smartctl --json -a`.
fn probe(readings: &mut Readings) {
    let scan = match run_smartctl(&["--scan-open", "--json"]) {
        Ok(output) => output,
        Err(note) => return readings.notes.push(note),
    };
    let devices = match scanned_devices(&scan, &mut readings.notes) {
        Ok(devices) => devices,
        Err(note) => return readings.notes.push(note),
    };
    if devices.is_empty() {
        readings
            .notes
            .push("smartctl --scan-open found no device (not root, or no disks)".to_owned());
    }
    if devices.len() > PROBED_DEVICES_MAX {
        let note =
            format!("{} devices found, only the first {PROBED_DEVICES_MAX} read", devices.len());
        readings.notes.push(note);
    }
    for (name, kind) in devices.into_iter().take(PROBED_DEVICES_MAX) {
        let mut args = vec!["--json", "-a"];
        if let Some(kind) = &kind {
            args.extend(["-d", kind.as_str()]);
        }
        args.push(&name);
        let source = format!("smartctl {}", args.join(" "));
        match run_smartctl(&args).and_then(|out| parse_smartctl(&out, &source)) {
            // Nothing was read from a device smartctl could not open: not a device of this
            // reading, only what smartctl said about it.
            Ok(device) if device.exit_status.is_some_and(|s| s & 0x02 != 0) => {
                let notes = device.notes.iter().map(|n| format!("{name}: {n}"));
                readings.notes.extend(notes);
            }
            Ok(device) => readings.devices.push(device),
            Err(note) => readings.notes.push(note),
        }
    }
}

/// The `(name, type)` of each device in `smartctl --scan-open --json` output; smartctl's
/// messages and the devices it could not open are notes.
fn scanned_devices(
    output: &[u8],
    notes: &mut Vec<String>,
) -> Result<Vec<(String, Option<String>)>, String> {
    let value: Value = serde_json::from_slice(output)
        .map_err(|e| format!("smartctl --scan-open --json: not JSON: {e}"))?;
    let messages = value.get("smartctl").and_then(|s| s.get("messages")).and_then(Value::as_array);
    let texts = messages.into_iter().flatten().filter_map(|m| m.get("string")?.as_str());
    notes.extend(texts.map(|t| format!("smartctl --scan-open says: {t}")));
    let devices = value.get("devices").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut scanned = Vec::new();
    for device in &devices {
        let Some(name) = device.get("name").and_then(Value::as_str) else { continue };
        if let Some(error) = device.get("open_error").and_then(Value::as_str) {
            notes.push(format!("smartctl cannot open {name}: {error}"));
            continue;
        }
        let kind = device.get("type").and_then(Value::as_str).map(str::to_owned);
        scanned.push((name.to_owned(), kind));
    }
    Ok(scanned)
}

/// Runs `smartctl ARGS` and returns its standard output (its exit status is a bit mask of
/// findings, not a failure, so it is not checked here).
fn run_smartctl(args: &[&str]) -> Result<Vec<u8>, String> {
    let command = format!("smartctl {}", args.join(" "));
    let mut child = match Command::new("smartctl")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("smartctl is not installed (not found on PATH): no disk's SMART data \
                        was read; install smartmontools"
                .to_owned())
        }
        Err(e) => return Err(format!("{command}: cannot run: {e}")),
    };
    let stdout = child.stdout.take().expect("stdout was piped");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.take(OUTPUT_BYTES_MAX).read_to_end(&mut bytes).map(|_| bytes)
    });
    let deadline = Instant::now() + SMARTCTL_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{command}: killed after {} s", SMARTCTL_TIMEOUT.as_secs()));
            }
        }
    }
    match reader.join() {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(format!("{command}: reading its output: {e}")),
        Err(_) => Err(format!("{command}: reading its output failed")),
    }
}

/// Two devices with one name or key (saved files of different hosts both `/dev/sda`, serial
/// numbers redacted) get their source appended, so reports and trends tell them apart.
fn make_unique(devices: &mut [DeviceReading]) {
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    for device in devices.iter() {
        *names.entry(device.name.clone()).or_default() += 1;
        *keys.entry(device.key.clone()).or_default() += 1;
    }
    for device in devices.iter_mut() {
        let source = Path::new(&device.source);
        let stem =
            source.file_stem().map_or(device.source.clone(), |s| s.to_string_lossy().into_owned());
        if names[&device.name] > 1 {
            device.name = format!("{} [{stem}]", device.name);
        }
        if keys[&device.key] > 1 {
            device.key = format!("{} [{stem}]", device.key);
        }
    }
}
