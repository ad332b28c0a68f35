//! `syncfs(2)` for the `memory` durability class's background sync.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Writes back and flushes everything on the file system `file` (any file or directory on
/// it) lives on: one durable point for every store of a data directory at once.
pub fn sync_file_system(file: &File) -> io::Result<()> {
    // SAFETY: syncfs reads no memory of ours; the descriptor is open for the call.
    if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
