//! The one setting cradle makes to the process heap (glibc's malloc).
//!
//! glibc maps an allocation of 128 KiB or more on its own and unmaps it when freed, but it
//! raises that threshold to the size of each such block freed (up to 32 MiB), after which
//! blocks of that size come from the heap, and freeing them keeps their pages resident. A
//! node frees megabytes as its tables shrink (the completion table's records, an index
//! replaced by a smaller one), so with the moving threshold its RSS would stay at its peak.
#![allow(unsafe_code)]

/// Fixes the threshold at `bytes`: every allocation of that size or more is mapped on its
/// own and given back to the kernel when freed. Returns whether the allocator took it
/// (always false where the C library is not glibc).
pub fn give_back_frees_of(bytes: usize) -> bool {
    #[cfg(target_env = "gnu")]
    {
        let Ok(bytes) = libc::c_int::try_from(bytes) else { return false };
        // SAFETY: mallopt only changes a tunable of the allocator; any value is accepted or
        // refused (0), and no memory is touched.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = bytes;
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_env = "gnu")]
    fn glibc_takes_the_threshold() {
        assert!(super::give_back_frees_of(128 * 1024));
        assert!(!super::give_back_frees_of(usize::MAX), "too big for a c_int");
    }
}
