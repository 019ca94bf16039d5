//! A file that only grows, by whole groups, each durable before it counts.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::disk::{Disk, DiskFile};
use super::timing::SyncTimes;
use super::{Gone, StorageError};

/// Why a group could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Nothing of the group is in the file, which is as it was before: the
    /// same group may be tried again later (a full disk, say).
    #[error("{0} (nothing of it was kept; it may be tried again)")]
    Transient(StorageError),
    /// The group failed and the file could not be cut back to where it
    /// was, or the file is no longer where it belongs: what the file holds
    /// is unknown, and nobody may write to it again before a recovery has
    /// read it.
    #[error("{0}")]
    Fatal(StorageError),
}

/// An append-only file with a single owner: each [`AppendFile::append`]
/// writes a group of byte slices and makes it durable, or leaves the file
/// exactly as it was.
#[derive(Debug)]
pub struct AppendFile {
    disk: Arc<dyn Disk>,
    file: Box<dyn DiskFile>,
    path: PathBuf,
    /// Bytes up to the end of the last durable group: the file's length.
    len: u64,
    /// Syncs made so far, one per group.
    syncs: u64,
    /// Where each sync's time goes.
    times: Arc<SyncTimes>,
}

impl AppendFile {
    /// Opens an existing file whose `len` bytes are all durable and wanted
    /// (a caller that found more cut them beforehand).
    pub fn open(disk: &Arc<dyn Disk>, path: &Path, len: u64) -> Result<AppendFile, StorageError> {
        let io_err = |source| StorageError::io(path, source);
        let file = disk.open_file(path, false).map_err(io_err)?;
        let actual = file.status().map_err(io_err)?.len;
        if actual != len {
            return Err(StorageError::Length { path: path.into(), actual, expected: len });
        }
        Ok(AppendFile { disk: disk.clone(), file, path: path.into(), len, syncs: 0, times: Arc::default() })
    }

    /// Appends `parts` as one group: written, then synced to disk. On
    /// failure the file is cut back to its previous length.
    pub fn append(&mut self, parts: &[&[u8]]) -> Result<(), AppendError> {
        let group: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if group == 0 {
            return Ok(());
        }
        self.syncs += 1;
        if let Err(e) = self.write_durably(parts) {
            return match self.cut_back() {
                Ok(()) => Err(AppendError::Transient(StorageError::io(&self.path, e))),
                Err(cut) => {
                    Err(AppendError::Fatal(StorageError::CutBack { path: self.path.clone(), write: e, cut }))
                }
            };
        }
        let before = self.len;
        self.len += group;
        assert!(self.len > before, "a group that is appended makes the file longer");
        // After the sync, before anyone is told: no group written into a
        // file that was deleted or replaced meanwhile is acknowledged.
        self.check_in_place().map_err(AppendError::Fatal)
    }

    /// Checks that the file is still the one its path names, linked, and
    /// as long as written: a round whose files were deleted or replaced
    /// under the server must not take one more bet.
    pub fn check_in_place(&self) -> Result<(), StorageError> {
        let len = self.len;
        let gone = |why| StorageError::Gone { path: self.path.clone(), why };
        let open = self.file.status().map_err(|e| StorageError::io(&self.path, e))?;
        if open.links == 0 {
            return Err(gone(Gone::Deleted));
        }
        let named = match self.disk.id(&self.path) {
            Ok(named) => named,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone(Gone::Missing)),
            Err(e) => return Err(StorageError::io(&self.path, e)),
        };
        if named != open.id {
            return Err(gone(Gone::Replaced));
        }
        if open.len != len {
            return Err(StorageError::Length { path: self.path.clone(), actual: open.len, expected: len });
        }
        Ok(())
    }

    fn write_durably(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        self.file.write_all(parts)?;
        let started = Instant::now();
        self.file.sync()?;
        self.times.record(started.elapsed());
        Ok(())
    }

    /// Records this file's sync times in `times` from now on.
    pub fn time_syncs_in(&mut self, times: Arc<SyncTimes>) {
        self.times = times;
    }

    /// Brings the file back to its last durable length, durably.
    fn cut_back(&mut self) -> io::Result<()> {
        self.file.truncate(self.len)?;
        self.file.sync()
    }

    /// Groups appended (and synced) so far.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Bytes in the file, all durable.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Cuts `path` to its first `len` bytes, durably.
pub fn cut(disk: &dyn Disk, path: &Path, len: u64) -> Result<(), StorageError> {
    let io_err = |source| StorageError::io(path, source);
    let mut file = disk.open_file(path, false).map_err(io_err)?;
    file.truncate(len).map_err(io_err)?;
    file.sync().map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::disk::OsDisk;

    fn os() -> Arc<dyn Disk> {
        Arc::new(OsDisk)
    }

    #[test]
    fn groups_append_in_order_and_count_only_once_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let mut file = AppendFile::open(&os(), &path, 0).unwrap();
        file.append(&[b"ab", b"", b"c"]).unwrap();
        file.append(&[b"de"]).unwrap();
        assert_eq!(file.len(), 5);
        assert_eq!(std::fs::read(&path).unwrap(), b"abcde");
    }

    #[test]
    fn opening_a_file_of_another_length_than_expected_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert!(matches!(
            AppendFile::open(&os(), &path, 2),
            Err(StorageError::Length { actual: 3, expected: 2, .. })
        ));
        assert!(AppendFile::open(&os(), &path, 3).is_ok());
    }

    #[test]
    fn a_file_deleted_replaced_or_moved_away_takes_no_more_groups() {
        use super::super::Gone;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let gone = |file: &mut AppendFile| match file.append(&[b"more"]) {
            Err(AppendError::Fatal(StorageError::Gone { why, .. })) => why,
            other => panic!("{other:?}"),
        };

        std::fs::write(&path, b"").unwrap();
        let mut file = AppendFile::open(&os(), &path, 0).unwrap();
        file.append(&[b"ab"]).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(gone(&mut file), Gone::Deleted);

        // Replaced while still linked elsewhere (a rename over it alone
        // unlinks it: deleted).
        std::fs::write(&path, b"").unwrap();
        let mut file = AppendFile::open(&os(), &path, 0).unwrap();
        std::fs::hard_link(&path, dir.path().join("kept")).unwrap();
        std::fs::write(dir.path().join("other"), b"").unwrap();
        std::fs::rename(dir.path().join("other"), &path).unwrap();
        assert_eq!(gone(&mut file), Gone::Replaced);

        let mut file = AppendFile::open(&os(), &path, 0).unwrap();
        std::fs::rename(&path, dir.path().join("moved")).unwrap();
        assert_eq!(gone(&mut file), Gone::Missing);
    }

    /// /dev/full takes no byte (every write fails with "no space left") and
    /// cannot be cut: a failure whose clean-up fails too is fatal.
    #[test]
    fn a_failed_group_that_cannot_be_cut_back_is_fatal() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            eprintln!("skipped: no /dev/full here");
            return;
        }
        let mut file = AppendFile::open(&os(), full, 0).unwrap();
        match file.append(&[b"abc"]) {
            Err(AppendError::Fatal(StorageError::CutBack { write, .. })) => {
                assert_eq!(write.raw_os_error(), Some(28), "no space left on device: {write}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(file.len(), 0);
    }
}
