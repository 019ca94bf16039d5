//! The few file operations a round's storage makes, behind a seam.
//!
//! Every byte of a round reaches the disk through [`Disk`] and
//! [`DiskFile`]: [`OsDisk`] is the real filesystem; a simulated disk
//! (`sim`, in the tests) keeps what was not synced apart and can lose
//! power after any single operation, so that the order of writes and syncs
//! is checked at every step of a round, in seconds.
//!
//! What each operation promises is POSIX's, no more: a file's bytes and
//! length are durable once [`DiskFile::sync`] returns; a name (a file
//! created or renamed) once its directory is synced with
//! [`Disk::sync_dir`].

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Which file a name names: a file replaced under its name gets another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub device: u64,
    pub inode: u64,
}

/// What an open file is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStatus {
    pub len: u64,
    /// Names it has; 0 once deleted.
    pub links: u64,
    pub id: FileId,
}

/// A directory locked by this process; unlocked when dropped, or when the
/// process dies, however it dies.
pub type DirLock = Box<dyn std::any::Any + Send + Sync>;

/// The filesystem a round lives on.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Opens a file for writing at its end; with `create`, an empty one is
    /// made if there is none.
    fn open_file(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>>;
    /// Opens a file for reading from its start (`NotFound` when missing).
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>>;
    /// The length of the file `path` names (`NotFound` when missing).
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Which file `path` names (`NotFound` when missing).
    fn id(&self, path: &Path) -> io::Result<FileId>;
    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory `dir` (`AlreadyExists` if there is one); its
    /// name is durable once its parent is synced.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// The names in `dir` (`NotFound` when missing).
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<std::ffi::OsString>>;
    /// Whether `path` names a file or a directory.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Makes the names in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Locks `dir` for this process; `None` if another holds it.
    fn lock_dir(&self, dir: &Path) -> io::Result<Option<DirLock>>;
}

/// A file open for writing, by its one owner.
pub trait DiskFile: Send + fmt::Debug {
    /// Writes all of `parts` at the end (an error may leave part of them).
    fn write_all(&mut self, parts: &[&[u8]]) -> io::Result<()>;
    /// Makes the file's bytes and length durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes; the next write goes there.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// What the file is now (`fstat`).
    fn status(&self) -> io::Result<FileStatus>;
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsDisk;

/// `dir`, or the working directory when it is the empty path.
fn dir_or_here(dir: &Path) -> &Path {
    if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }
}

impl Disk for OsDisk {
    fn open_file(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>> {
        let mut file = OpenOptions::new().create(create).truncate(false).write(true).open(path)?;
        file.seek(SeekFrom::End(0))?;
        Ok(Box::new(OsFile(file)))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(path)?))
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn id(&self, path: &Path) -> io::Result<FileId> {
        let meta = std::fs::metadata(path)?;
        Ok(FileId { device: meta.dev(), inode: meta.ino() })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        std::fs::read_dir(dir_or_here(dir))?.map(|entry| Ok(entry?.file_name())).collect()
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        std::fs::exists(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir_or_here(dir))?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Option<DirLock>> {
        let file = File::open(dir_or_here(dir))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

/// A file of the real filesystem.
#[derive(Debug)]
struct OsFile(File);

impl DiskFile for OsFile {
    fn write_all(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match self.0.write_vectored(slices) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the file took no bytes")),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        let at = self.0.seek(SeekFrom::Start(len))?;
        assert_eq!(at, len, "the next write goes where the file was cut");
        Ok(())
    }

    fn status(&self) -> io::Result<FileStatus> {
        let meta = self.0.metadata()?;
        Ok(FileStatus {
            len: meta.len(),
            links: meta.nlink(),
            id: FileId { device: meta.dev(), inode: meta.ino() },
        })
    }
}

#[cfg(test)]
pub mod sim;
