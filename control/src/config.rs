//! Settings of one core, with what each costs.

use crate::completions::RECORDS_MAX;
use crate::layout::NodeLayout;
use std::fmt;
use std::sync::Arc;

/// Settings of one serving core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// This core's index in `layout`.
    pub core: u32,
    /// Which core serves which partition, and their addresses.
    pub layout: Arc<NodeLayout>,
    /// Key of the address-validation tokens; random per node start.
    pub token_secret: [u8; 32],
    /// Completion records kept at most: 48 bytes each plus 16 to 64 of index, allocated as
    /// records are held and given back as they expire (256 MiB when all of the default 2^22
    /// are held; about 200 KiB when none are). When all are
    /// younger than `completion_ttl_ns`, new writes get BUSY, so a core sustains at most
    /// `completion_records_max / completion_ttl` writes per second (≈ 840,000 by default).
    pub completion_records_max: usize,
    /// How long a completion record is kept at least (default 5 s). Must exceed every
    /// client's `resend_window` (default 2 s) plus a network round trip (a fragmented
    /// write's window restarts at its last acknowledged progress), or a late resend could be
    /// applied twice.
    pub completion_ttl_ns: u64,
    /// Fragmented writes being reassembled at once; more get BUSY.
    pub reassemblies_max: usize,
    /// Bytes of fragmented writes being reassembled at once (each takes its full value size).
    pub reassembly_bytes_max: u64,
    /// A reassembly that receives nothing for this long is dropped.
    pub reassembly_timeout_ns: u64,
    /// Wall-clock nanoseconds since the Unix epoch when the loop's clock (`now_ns`) read 0:
    /// writes are stamped with wall-clock times so that a restarted node knows which of its
    /// logged writes may still be resent. 0 in tests that need no real time.
    pub wall_clock_start_ns: u64,
    /// Replication with the other replicas of this core's partitions (a cluster member);
    /// `None` on a single node.
    pub replication: Option<crate::core::ReplicationConfig>,
    /// The client keys every request must be sealed with (`crate::auth`); `None`: no
    /// authentication, every sender may do everything (loopback and development use).
    pub auth: Option<Arc<crate::auth::KeyTable>>,
}

/// Completion records per core unless configured: 2^22 (256 MiB at most, 840,000 writes/s
/// sustained with the 5 s TTL, above what one core serves over kernel UDP).
pub const COMPLETION_RECORDS_DEFAULT: usize = 1 << 22;

/// How long a completion record is kept unless configured: 5 s (clients resend for 2 s).
pub const COMPLETION_TTL_NS_DEFAULT: u64 = 5_000_000_000;

impl CoreConfig {
    /// Defaults for core `core` of `layout`.
    pub fn new(core: u32, layout: Arc<NodeLayout>, token_secret: [u8; 32]) -> CoreConfig {
        CoreConfig {
            core,
            layout,
            token_secret,
            completion_records_max: COMPLETION_RECORDS_DEFAULT,
            completion_ttl_ns: COMPLETION_TTL_NS_DEFAULT,
            reassemblies_max: 64,
            reassembly_bytes_max: 256 << 20,
            reassembly_timeout_ns: 10_000_000_000,
            wall_clock_start_ns: 0,
            replication: None,
            auth: None,
        }
    }

    /// Checks the relations between the fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.core >= self.layout.cores() {
            return Err(ConfigError(format!(
                "core {} is outside the layout's {} cores",
                self.core,
                self.layout.cores()
            )));
        }
        if self.completion_records_max == 0 || self.reassemblies_max == 0 {
            return Err(ConfigError(
                "completion_records_max and reassemblies_max must be > 0".into(),
            ));
        }
        if self.completion_records_max > RECORDS_MAX {
            return Err(ConfigError(format!(
                "completion_records_max {} is above {RECORDS_MAX}",
                self.completion_records_max
            )));
        }
        if self.auth.is_some() && self.completion_ttl_ns <= 2 * crate::auth::AUTH_FRESHNESS_NS {
            // A replayed sealed write must find its completion record (see `crate::auth`).
            return Err(ConfigError(format!(
                "with authentication on, completion_ttl_ns must exceed twice the freshness \
                 window ({} ns), not {}",
                2 * crate::auth::AUTH_FRESHNESS_NS,
                self.completion_ttl_ns
            )));
        }
        if self.reassembly_bytes_max < proto::VALUE_BYTES_MAX as u64 {
            return Err(ConfigError(format!(
                "reassembly_bytes_max {} is below the largest value ({} bytes)",
                self.reassembly_bytes_max,
                proto::VALUE_BYTES_MAX
            )));
        }
        Ok(())
    }
}

/// A configuration that cannot work, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}
