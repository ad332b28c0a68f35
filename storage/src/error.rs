//! What can go wrong, per operation.

use std::fmt;

/// Why an operation on an endpoint store did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The write cannot be stored: the disk is full, or the endpoint's key or segment limit
    /// is reached. Nothing was changed; the store keeps serving.
    NoSpace,
    /// A write or flush failed earlier; the endpoint stopped writing and does not retry.
    /// Everything acknowledged before the failure is on disk; a restart recovers.
    Poisoned,
    /// The endpoint's log is corrupt (see [`Corruption`]); it serves nothing until an
    /// operator repairs or replaces it.
    Quarantined,
    /// The process ran into a limit of its own or of the system (open files, memory maps,
    /// memory) making a segment file. A write refused at the new segment changed nothing and
    /// the next one tries again; a flush that ran into it stopped the endpoint, as a failed
    /// flush does, until a restart (with a higher limit) recovers everything acknowledged.
    Exhausted(Limit),
}

/// A limit the process ran into (see [`StoreError::Exhausted`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    /// The process's open files (`ulimit -n`, RLIMIT_NOFILE): EMFILE.
    OpenFiles,
    /// The system's open files (`fs.file-max`): ENFILE.
    SystemOpenFiles,
    /// The process's memory maps (`vm.max_map_count`): ENOMEM with the maps at the limit.
    MemoryMaps,
    /// Memory: ENOMEM otherwise.
    Memory,
}

impl Limit {
    /// The limit `e` says was reached, if it is one of these.
    pub fn of(e: &std::io::Error) -> Option<Limit> {
        match e.raw_os_error()? {
            libc::EMFILE => Some(Limit::OpenFiles),
            libc::ENFILE => Some(Limit::SystemOpenFiles),
            libc::ENOMEM => {
                let max = read_number("/proc/sys/vm/max_map_count");
                let maps = std::fs::read_to_string("/proc/self/maps").map(|m| m.lines().count());
                match (max, maps) {
                    // (A map or two may be made and dropped between the failure and this.)
                    (Some(max), Ok(maps)) if maps as u64 + 16 >= max => Some(Limit::MemoryMaps),
                    _ => Some(Limit::Memory),
                }
            }
            _ => None,
        }
    }

    /// The limit in words with its value now, e.g. "open files (ulimit -n is 64)".
    pub fn describe(self) -> String {
        let value = match self {
            Limit::OpenFiles => {
                crate::file::open_files_limit().map(|n| format!("ulimit -n is {n}"))
            }
            Limit::SystemOpenFiles => {
                read_number("/proc/sys/fs/file-max").map(|n| format!("fs.file-max is {n}"))
            }
            Limit::MemoryMaps => read_number("/proc/sys/vm/max_map_count")
                .map(|n| format!("vm.max_map_count is {n}")),
            Limit::Memory => None,
        };
        let what = match self {
            Limit::OpenFiles => "open files",
            Limit::SystemOpenFiles => "the system's open files",
            Limit::MemoryMaps => "memory maps",
            Limit::Memory => "memory",
        };
        match value {
            Some(value) => format!("{what} ({value})"),
            None => what.to_string(),
        }
    }
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreError::NoSpace => "no space",
            StoreError::Poisoned => "log poisoned by an earlier I/O error",
            StoreError::Quarantined => "endpoint quarantined: corrupt log",
            StoreError::Exhausted(limit) => return write!(f, "out of {}", limit.describe()),
        })
    }
}

impl std::error::Error for StoreError {}

/// A corrupt spot found in a log: where and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// The file (a path for file volumes).
    pub file: String,
    /// Byte offset in the file.
    pub offset: u64,
    /// What is wrong there.
    pub reason: String,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}: {}", self.file, self.offset, self.reason)
    }
}

impl std::error::Error for Corruption {}

/// Whether an I/O error says the disk is full.
pub(crate) fn is_no_space(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == std::io::ErrorKind::StorageFull
}

/// What `e` means for an operation that changed nothing yet: a full disk or a limit is a clean
/// refusal (the next operation tries again), anything else also stops the store (`failure`).
pub(crate) fn refusal_or_stop(failure: &mut Option<StoreError>, e: &std::io::Error) -> StoreError {
    let refusal = failure_of(e);
    if refusal == StoreError::Poisoned {
        *failure = Some(refusal);
    }
    refusal
}

/// Classifies an I/O error: a full disk is `NoSpace`, a limit `Exhausted`, anything else
/// `Poisoned`.
pub(crate) fn failure_of(e: &std::io::Error) -> StoreError {
    if is_no_space(e) {
        StoreError::NoSpace
    } else if let Some(limit) = Limit::of(e) {
        StoreError::Exhausted(limit)
    } else {
        StoreError::Poisoned
    }
}
