//! The Linux EDAC memory-controller counters, read from a sysfs tree under a root directory
//! (`/` on a real host, a temporary directory in tests).
//!
//! Layout read: `sys/devices/system/edac/mc/mc*/{ce_count,ue_count}`, per DIMM
//! `mc*/dimm*/{dimm_ce_count,dimm_ue_count}` (also `mc*/rank*/...`, its name on rank-based
//! controllers), and the older `mc*/csrow*/{ce_count,ue_count}`. A DIMM's `dimm_label`, when
//! set, is named in reasons so the operator knows which module to pull.

use std::fs;
use std::path::{Path, PathBuf};

/// Corrected or uncorrected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdacKind {
    /// Corrected errors (CE): the data was repaired by ECC.
    Corrected,
    /// Uncorrected errors (UE): the data was wrong.
    Uncorrected,
}

/// One EDAC counter (cumulative since boot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdacCounter {
    /// Its path below the `mc` directory, e.g. `mc0/dimm3/dimm_ce_count`: the key its previous
    /// value is remembered by.
    pub key: String,
    /// How reasons name it, e.g. `EDAC mc0 dimm3 "DIMM_A1" dimm_ce_count`.
    pub label: String,
    /// Corrected or uncorrected.
    pub kind: EdacKind,
    /// The count.
    pub value: u64,
}

const MC_DIR: &str = "sys/devices/system/edac/mc";

/// Reads every EDAC counter under `root`; what could not be read is a note.
pub(crate) fn read_edac(root: &Path) -> (Vec<EdacCounter>, Vec<String>) {
    let mc_dir = root.join(MC_DIR);
    let mut counters = Vec::new();
    let mut notes = Vec::new();
    let controllers = subdirectories(&mc_dir, &["mc"]);
    if controllers.is_empty() {
        let note = format!(
            "no EDAC memory controller under {}: memory errors are not watched (no ECC, the \
             EDAC driver not loaded, or a virtual machine)",
            mc_dir.display()
        );
        return (counters, vec![note]);
    }
    for (mc, mc_path) in controllers {
        read_pair(&mc_path, &mc, ["ce_count", "ue_count"], None, &mut counters, &mut notes);
        for (part, path) in subdirectories(&mc_path, &["dimm", "rank"]) {
            let label = fs::read_to_string(path.join("dimm_label")).ok();
            let label = label.as_deref().map(str::trim).filter(|l| !l.is_empty());
            let files = ["dimm_ce_count", "dimm_ue_count"];
            read_pair(&path, &format!("{mc}/{part}"), files, label, &mut counters, &mut notes);
        }
        for (part, path) in subdirectories(&mc_path, &["csrow"]) {
            let files = ["ce_count", "ue_count"];
            read_pair(&path, &format!("{mc}/{part}"), files, None, &mut counters, &mut notes);
        }
    }
    (counters, notes)
}

fn read_pair(
    dir: &Path,
    key: &str,
    files: [&str; 2],
    dimm_label: Option<&str>,
    counters: &mut Vec<EdacCounter>,
    notes: &mut Vec<String>,
) {
    for (file, kind) in files.into_iter().zip([EdacKind::Corrected, EdacKind::Uncorrected]) {
        let path = dir.join(file);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                notes.push(format!("{}: unreadable: {e}", path.display()));
                continue;
            }
        };
        let Ok(value) = text.trim().parse::<u64>() else {
            notes.push(format!("{}: not a count: {:?}", path.display(), text.trim()));
            continue;
        };
        let place = key.replace('/', " ");
        let label = match dimm_label {
            Some(dimm) => format!("EDAC {place} {dimm:?} {file}"),
            None => format!("EDAC {place} {file}"),
        };
        counters.push(EdacCounter { key: format!("{key}/{file}"), label, kind, value });
    }
}

/// The subdirectories of `dir` named a prefix followed by a number, in numeric order.
fn subdirectories(dir: &Path, prefixes: &[&str]) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let prefix = prefixes.iter().find(|p| name.starts_with(**p))?;
            let number = name[prefix.len()..].parse::<u64>().ok()?;
            entry.path().is_dir().then(|| (number, name, entry.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, name, path)| (name, path)).collect()
}
