//! The door's settings (`[memcache]` in the node's TOML, `--memcache-port`).

use crate::frame::Network;

/// cradle's largest value.
pub const ITEM_BYTES_LIMIT: usize = proto::VALUE_BYTES_MAX;

/// How the door serves. Memory: per core, `connections_max` connections of up to
/// `item_bytes_max` + 64 KiB of input and a reply buffer each (allocated as used), and
/// `rings * ring_jobs_max` ring slots of 8 bytes plus the jobs in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoorConfig {
    /// Largest value accepted (memcached's `-I`); default 1 MiB, at most 16 MiB.
    pub item_bytes_max: usize,
    /// Whether `flush_all` deletes everything (off: `CLIENT_ERROR flush_all not allowed`).
    pub flush_all: bool,
    /// Networks whose UDP senders may get replies larger than 3x their requests.
    pub udp_allow: Vec<Network>,
    /// TCP connections per core; one more is accepted and closed at once.
    pub connections_max: usize,
    /// Jobs in flight from one core to another; a full ring answers `SERVER_ERROR busy`.
    pub ring_jobs_max: usize,
}

impl Default for DoorConfig {
    fn default() -> DoorConfig {
        DoorConfig {
            item_bytes_max: 1 << 20,
            flush_all: false,
            udp_allow: vec!["127.0.0.0/8".parse().expect("valid"), "::1".parse().expect("valid")],
            connections_max: 1024,
            ring_jobs_max: 4096,
        }
    }
}

impl DoorConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.item_bytes_max == 0 || self.item_bytes_max > ITEM_BYTES_LIMIT {
            return Err(format!("memcache item_bytes_max must be in 1..={ITEM_BYTES_LIMIT}"));
        }
        if self.connections_max == 0 {
            return Err("memcache connections_max must be at least 1".into());
        }
        if !(16..=1 << 20).contains(&self.ring_jobs_max) {
            return Err("memcache ring_jobs_max must be in 16..=1048576".into());
        }
        Ok(())
    }
}
