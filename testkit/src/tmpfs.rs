//! A small tmpfs of a test's own: a disk that fills up. Mounting needs
//! root; a test without it says so and skips.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a folder of its own, unmounted when dropped.
pub struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// A tmpfs of `size` (as `mount -o size=` takes it: `1m`, `256k`);
    /// `None` where mounting is not allowed (not root).
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .is_ok_and(|o| o.status.success());
        mounted.then_some(Tmpfs { path, _dir: dir })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes free on it.
    pub fn free_bytes(&self) -> u64 {
        free_bytes(&self.path)
    }

    /// Fills it with a file `filler` but for `free` bytes; returns the
    /// file's path (remove it to free the disk).
    pub fn fill_but(&self, free: u64) -> PathBuf {
        let filler = self.path.join("filler");
        std::fs::write(&filler, vec![0u8; self.free_bytes().saturating_sub(free) as usize]).unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Bytes free on the filesystem of `path`.
pub fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df").args(["-B1", "--output=avail"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
}
