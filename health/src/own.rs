//! cradle's own evidence about its host, counted by the node.

/// The node's own error counters, cumulative since the node started (so their value before
/// the first reading is 0). Filled by the node from its stores and loops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnSignals {
    /// Reads and writes that the operating system failed.
    pub io_errors: u64,
    /// Records read back whose checksum did not match.
    pub checksum_failures: u64,
    /// Logs that stopped after a failed write or flush.
    pub poisoned_logs: u64,
    /// fsyncs that took far longer than usual.
    pub fsync_outliers: u64,
}

impl OwnSignals {
    /// Each counter with its name.
    pub(crate) fn fields(&self) -> [(&'static str, u64); 4] {
        [
            ("io_errors", self.io_errors),
            ("checksum_failures", self.checksum_failures),
            ("poisoned_logs", self.poisoned_logs),
            ("fsync_outliers", self.fsync_outliers),
        ]
    }
}
