//! What can go wrong when mounting, and when a cut writes to the backing folder.

use std::io;
use std::path::PathBuf;

/// An error of [`LazyFs`](crate::LazyFs): each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backing folder or the mountpoint is missing or is not a directory.
    #[error("{path}: not a directory (lazyfs needs an existing directory there)")]
    NotADirectory { path: PathBuf },
    /// One of the two directories lies inside the other: serving it would
    /// loop through the mount itself.
    #[error(
        "the backing folder {backing} and the mountpoint {mountpoint} overlap; use two separate directories"
    )]
    Overlap { backing: PathBuf, mountpoint: PathBuf },
    /// The backing folder holds something that is neither a regular file nor
    /// a directory (a symlink, a socket...), which lazyfs does not model.
    #[error("{path}: neither a regular file nor a directory; the backing folder may hold only those")]
    Unsupported { path: PathBuf },
    /// A file in the backing folder is larger than a file of the mount may be.
    #[error("{path}: {len} bytes, more than the {max} a file of the mount may hold")]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    /// Reading or writing the backing folder failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The kernel refused the mount.
    #[error("mounting lazyfs on {mountpoint} failed: {source} (it needs /dev/fuse and root, or fusermount3: scripts/host-deps.sh installs fuse3)")]
    Mount {
        mountpoint: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}
