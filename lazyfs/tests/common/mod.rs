//! A lazy filesystem mounted over a fresh disk, both in temporary
//! directories that go away with it, even when the test fails.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use lazyfs::LazyFs;
use tempfile::TempDir;

/// A mount and its disk. Fields drop in order: the mount goes before the
/// directories are removed.
pub struct Mounted {
    pub fs: LazyFs,
    disk: TempDir,
    mnt: TempDir,
}

impl Mounted {
    /// An empty disk, mounted.
    pub fn new() -> Mounted {
        Mounted::with_disk(|_| {})
    }

    /// A disk laid out by `prepare` before the mount, mounted.
    pub fn with_disk(prepare: impl FnOnce(&Path)) -> Mounted {
        let disk = tempfile::tempdir().unwrap();
        let mnt = tempfile::tempdir().unwrap();
        prepare(disk.path());
        let fs = LazyFs::mount(disk.path(), mnt.path()).unwrap();
        Mounted { fs, disk, mnt }
    }

    /// `rel` in the mount, as programs see it.
    pub fn at(&self, rel: &str) -> PathBuf {
        self.fs.mountpoint().join(rel)
    }

    /// `rel` on the disk, as it would be found after the power came back.
    pub fn on_disk(&self, rel: &str) -> PathBuf {
        self.fs.backing().join(rel)
    }

    /// Writes a new file in the mount and fsyncs it (but not its directory).
    pub fn create_synced(&self, rel: &str, bytes: &[u8]) {
        let mut file = File::create(self.at(rel)).unwrap();
        file.write_all(bytes).unwrap();
        file.sync_all().unwrap();
    }

    /// fsync on the directory `rel` of the mount ("" for the root).
    pub fn sync_dir(&self, rel: &str) {
        File::open(self.at(rel)).unwrap().sync_all().unwrap();
    }

    /// A file, its bytes and its name all durable.
    pub fn durable_file(&self, rel: &str, bytes: &[u8]) {
        self.create_synced(rel, bytes);
        let parent = Path::new(rel).parent().map_or(String::new(), |p| p.to_string_lossy().into_owned());
        self.sync_dir(&parent);
    }

    /// Opens `rel` in the mount for appending.
    pub fn append(&self, rel: &str) -> File {
        OpenOptions::new().append(true).open(self.at(rel)).unwrap()
    }
}

/// Every file under `root`, by relative path, with its bytes; directories
/// appear as paths ending in `/`.
pub fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    walk(root, root, &mut found).unwrap();
    found
}

fn walk(root: &Path, dir: &Path, found: &mut BTreeMap<String, Vec<u8>>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            found.insert(format!("{rel}/"), Vec::new());
            walk(root, &path, found)?;
        } else {
            found.insert(rel, fs::read(&path)?);
        }
    }
    Ok(())
}

/// The errno of an I/O error, for errors the kernel passes on.
pub fn errno(error: io::Error) -> i32 {
    error.raw_os_error().unwrap_or_else(|| panic!("not an OS error: {error}"))
}
