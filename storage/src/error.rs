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
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreError::NoSpace => "no space",
            StoreError::Poisoned => "log poisoned by an earlier I/O error",
            StoreError::Quarantined => "endpoint quarantined: corrupt log",
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

/// Classifies an I/O error from a write: a full disk is `NoSpace`, anything else poisons.
pub(crate) fn is_no_space(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == std::io::ErrorKind::StorageFull
}
