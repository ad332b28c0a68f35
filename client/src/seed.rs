//! Seeds and the deterministic generator the core derives its client id from.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// A seed that differs between processes and between calls: the standard library's randomly
/// keyed hasher over the process id and the wall clock. For `ClientConfig::seed`.
pub fn random_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since_epoch) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since_epoch.as_nanos());
    }
    hasher.finish()
}

/// One step of SplitMix64: a well-mixed 64-bit output per state increment.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The client id for a seed: never 0, which would read as "no client".
pub(crate) fn client_id_from(seed: u64) -> u64 {
    let mut state = seed;
    splitmix64(&mut state).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_the_seed_only() {
        assert_eq!(client_id_from(7), client_id_from(7));
        assert_ne!(client_id_from(7), client_id_from(8));
        assert_ne!(random_seed(), random_seed());
    }
}
