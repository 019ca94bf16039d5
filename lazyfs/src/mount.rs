//! [`LazyFs`]: a mounted lazy filesystem, its power switch, and its unmount.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use fuser::{BackgroundSession, Config, MountOption};

use crate::error::Error;
use crate::fuse::LazyFuse;
use crate::stats::Stats;
use crate::tree::Tree;

/// A lazy filesystem mounted at [`mountpoint`](LazyFs::mountpoint) over the
/// backing folder [`backing`](LazyFs::backing), served on a background
/// thread. Dropping it unmounts, lazily if the mount is still in use.
pub struct LazyFs {
    /// Shared with the serving thread, which takes it for every request;
    /// a power cut takes it too, so it falls between two requests.
    tree: Arc<Mutex<Tree>>,
    session: Option<BackgroundSession>,
    backing: PathBuf,
    mountpoint: PathBuf,
}

impl LazyFs {
    /// Mounts a lazy filesystem at `mountpoint` showing the files of
    /// `backing`, all of them durable. Both must be existing directories,
    /// neither inside the other. Only the mounting user may use the mount.
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<LazyFs, Error> {
        let backing = existing_dir(backing)?;
        let mountpoint = existing_dir(mountpoint)?;
        if backing.starts_with(&mountpoint) || mountpoint.starts_with(&backing) {
            return Err(Error::Overlap { backing, mountpoint });
        }
        let tree = Arc::new(Mutex::new(Tree::load(backing.clone())?));
        let mut config = Config::default();
        config.mount_options =
            vec![MountOption::FSName("lazyfs".into()), MountOption::NoDev, MountOption::NoSuid];
        let session = fuser::spawn_mount(LazyFuse::new(Arc::clone(&tree)), &mountpoint, &config)
            .map_err(|source| Error::Mount { mountpoint: mountpoint.clone(), source })?;
        Ok(LazyFs { tree, session: Some(session), backing, mountpoint })
    }

    /// Where programs use the filesystem.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The "disk": at any moment it holds exactly the durable state.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Loses power, now: everything not durable is discarded, and the mount
    /// shows what the backing folder holds. Descriptors opened before fail
    /// with EIO; paths resolve afresh.
    pub fn power_cut(&self) {
        self.tree().power_cut();
    }

    /// Loses power during write-back: each durable file first keeps a
    /// prefix of its unsynced appended bytes, ending on a 4 KiB boundary (or
    /// at its end) picked by `seed`, then everything else not durable goes,
    /// as in [`power_cut`](LazyFs::power_cut). The same seed over the same
    /// state keeps the same bytes.
    pub fn power_cut_torn(&self, seed: u64) -> Result<(), Error> {
        self.tree().power_cut_torn(seed)
    }

    /// What the mount has done so far.
    pub fn stats(&self) -> Stats {
        self.tree().stats
    }

    /// The tree; a poisoned lock means an invariant failed in the serving
    /// thread, and a test must not go on as if the disk were sound.
    fn tree(&self) -> MutexGuard<'_, Tree> {
        match self.tree.lock() {
            Ok(tree) => tree,
            Err(_) => panic!(
                "lazyfs at {} broke an invariant earlier (see the panic above)",
                self.mountpoint.display()
            ),
        }
    }
}

impl fmt::Debug for LazyFs {
    /// The two places, not the tree: it holds every file's bytes twice.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyFs")
            .field("backing", &self.backing)
            .field("mountpoint", &self.mountpoint)
            .finish()
    }
}

impl Drop for LazyFs {
    /// Unmounts and waits for the serving thread; when programs still use
    /// the mount, detaches it instead (it goes when they let go) and leaves
    /// the thread to serve them until then.
    fn drop(&mut self) {
        let Some(session) = self.session.take() else { return };
        match unmount(&self.mountpoint, 0) {
            Ok(()) => {
                // The kernel ended the connection: the thread ends at once. It
                // reports nothing a test could act on, so the result is dropped.
                let _ = session.join();
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let _ = unmount(&self.mountpoint, libc::MNT_DETACH);
                drop(session);
            }
            // Not root (fuser's own unmount then goes through fusermount3),
            // or unmounted already by someone else.
            Err(_) => drop(session),
        }
    }
}

fn unmount(mountpoint: &Path, flags: libc::c_int) -> io::Result<()> {
    let path = CString::new(mountpoint.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(path.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `path` made absolute and free of symlinks, if it is a directory.
fn existing_dir(path: &Path) -> Result<PathBuf, Error> {
    match path.canonicalize() {
        Ok(path) if path.is_dir() => Ok(path),
        _ => Err(Error::NotADirectory { path: path.to_owned() }),
    }
}
