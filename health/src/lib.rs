//! Hardware health for a cradle host: is this machine healthy, suspect or failing, and which
//! counters say so.
//!
//! Three kinds of evidence are read: each disk's SMART data as `smartctl --json -a` prints it
//! (ATA, NVMe and SCSI/SAS), the Linux EDAC memory-controller counters in sysfs, and cradle's
//! own error counters ([`OwnSignals`], filled by the node). [`read`] gathers the first two
//! into [`Readings`]; a [`Monitor`] judges each reading against the one before (a counter that
//! grows is worse than one that stands still) and holds a host's verdict for a few readings
//! before letting it get better, so a host does not flap. The rules are written down in
//! `docs/OPERATIONS.md`, "Hardware health".
//!
//! The core is sans-IO: parsing ([`parse_smartctl`]) and judging ([`Monitor::observe`]) are
//! pure functions of bytes and values, and read no clock. Only [`read`] touches files or runs
//! `smartctl`, and it is meant for a thread off the serving loop.
//!
//! This crate must never panic on what it reads (a malformed file or an unknown device is a
//! note, never a crash), never write to a device, and never decide what the cluster does about
//! a verdict: that is the node's policy.
#![forbid(unsafe_code)]

mod ata_raw;
mod edac;
mod monitor;
mod own;
mod read;
mod rules;
mod settle;
mod smartctl;
mod verdict;

pub use edac::{EdacCounter, EdacKind};
pub use monitor::{DeviceReport, HostReport, Monitor, SETTLE_READINGS_DEFAULT};
pub use own::OwnSignals;
pub use read::{read, Readings, Sources};
pub use rules::{thresholds, Threshold};
pub use settle::Settle;
pub use smartctl::{
    parse_smartctl, Counter, CounterKind, DeviceReading, FailedAttribute, NvmeHealth, Protocol,
};
pub use verdict::Verdict;
