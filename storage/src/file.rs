//! The real log device: a file written with `pwrite` and read through a read-only mmap.
//!
//! Writes go through `pwrite`, not the map, because a store into a mapped sparse file on a
//! full disk is a SIGBUS, while `pwrite` returns ENOSPC, which becomes `NO_SPACE`. Reads
//! borrow the map, so a GET of a small value copies nothing. Linux keeps the two coherent
//! (one page cache). This is the only module with `unsafe`.
#![allow(unsafe_code)]

use crate::device::{span, LogDevice, Volume};
use memmap2::Mmap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

/// A directory of segment files, created on the first write (an idle endpoint has none).
///
/// The store assumes it owns the directory: another process truncating a mapped file would
/// turn a read into a SIGBUS. `cradle` takes one data directory per node.
#[derive(Debug)]
pub struct FileVolume {
    dir: PathBuf,
}

impl FileVolume {
    /// The volume at `dir`; nothing is created until a device is.
    pub fn new(dir: impl Into<PathBuf>) -> FileVolume {
        FileVolume { dir: dir.into() }
    }
}

impl Volume for FileVolume {
    fn list(&self) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other?,
        };
        let mut names = Vec::new();
        for entry in entries {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn LogDevice>> {
        let file = OpenOptions::new().read(true).write(true).open(self.dir.join(name))?;
        Ok(Box::new(FileDevice::new(file)?))
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Box<dyn LogDevice>> {
        fs::create_dir_all(&self.dir)?;
        let file =
            OpenOptions::new().read(true).write(true).create_new(true).open(self.dir.join(name))?;
        // Sparse: the blocks are allocated by the writes, which is where ENOSPC shows.
        file.set_len(len)?;
        Ok(Box::new(FileDevice::new(file)?))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))
    }

    fn sync(&self) -> io::Result<()> {
        match File::open(&self.dir) {
            Ok(dir) => dir.sync_all(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn describe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// One segment file and its read-only map.
#[derive(Debug)]
struct FileDevice {
    file: File,
    map: Option<Mmap>,
    len: u64,
}

impl FileDevice {
    fn new(file: File) -> io::Result<FileDevice> {
        let mut device = FileDevice { file, map: None, len: 0 };
        device.remap()?;
        Ok(device)
    }

    fn remap(&mut self) -> io::Result<()> {
        self.map = None;
        self.len = self.file.metadata()?.len();
        if self.len > 0 {
            // SAFETY: the map is read-only and this process owns the file (see FileVolume);
            // the only truncation is `set_len` below, which takes `&mut self` (so no slice
            // borrowed from the old map is alive) and maps again before any read.
            self.map = Some(unsafe { Mmap::map(&self.file)? });
        }
        Ok(())
    }
}

impl LogDevice for FileDevice {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let range = span(offset, len as u64, self.len)?;
        match &self.map {
            Some(map) => Ok(&map[range]),
            None => Ok(&[]),
        }
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        span(offset, bytes.len() as u64, self.len)?;
        self.file.write_all_at(bytes, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.remap()
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn punch(&mut self, offset: u64, len: u64) -> io::Result<()> {
        span(offset, len, self.len)?;
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate reads no memory of ours; the descriptor is open for the call.
        let rc = unsafe {
            libc::fallocate(self.file.as_raw_fd(), mode, offset as libc::off_t, len as libc::off_t)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        if offset >= self.len {
            return Ok(None);
        }
        // SAFETY: lseek reads no memory of ours; the descriptor is open for the call. Moving
        // the file position is harmless: every read and write here is positional.
        let at =
            unsafe { libc::lseek(self.file.as_raw_fd(), offset as libc::off_t, libc::SEEK_DATA) };
        if at >= 0 {
            return Ok(Some(at as u64));
        }
        match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            // A file system without SEEK_DATA: every byte counts as data.
            e if e.raw_os_error() == Some(libc::EINVAL) => Ok(Some(offset)),
            e => Err(e),
        }
    }
}
