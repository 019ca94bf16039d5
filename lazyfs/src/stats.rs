//! Counts of what the mount was asked to do, for tests to check against.

/// What the mount has done since it was mounted. Cheap to take: a copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `write` requests served (each `write`, `pwrite` or `writev` call may
    /// arrive as one or several).
    pub writes: u64,
    /// Bytes those requests carried.
    pub bytes_written: u64,
    /// `fsync`/`fdatasync` calls on files.
    pub file_syncs: u64,
    /// `fsync` calls on directories.
    pub dir_syncs: u64,
    /// Power cuts, torn or not.
    pub power_cuts: u64,
    /// Syncs that failed with EIO because the backing folder could not be
    /// written; the backing folder may then lag behind the durable state.
    pub backing_errors: u64,
}
