//! The "disk": the backing folder, which holds exactly the durable state.
//! Only this module touches it; the durability rules decide when.
//!
//! The backing folder is not itself synced to the real disk: it stands for
//! the disk of a simulated machine, and the host does not lose power.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::error::Error;
use crate::node::{Meta, MAX_FILE_SIZE};

/// A file or directory read from the backing folder at mount.
#[derive(Debug)]
pub(crate) enum Loaded {
    File { meta: Meta, bytes: Vec<u8> },
    Dir { meta: Meta, entries: Vec<(OsString, Loaded)> },
}

/// Reads the tree under `dir` (a directory), entries in name order.
pub(crate) fn load(dir: &Path) -> Result<Loaded, Error> {
    let metadata = fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
    let meta = meta_of(&metadata);
    if metadata.is_file() {
        if metadata.len() > MAX_FILE_SIZE {
            return Err(Error::TooLarge { path: dir.into(), len: metadata.len(), max: MAX_FILE_SIZE });
        }
        let bytes = fs::read(dir).map_err(|e| Error::io(dir, e))?;
        return Ok(Loaded::File { meta, bytes });
    }
    if !metadata.is_dir() {
        return Err(Error::Unsupported { path: dir.into() });
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        entries.push((entry.file_name(), load(&entry.path())?));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Loaded::Dir { meta, entries })
}

fn meta_of(metadata: &fs::Metadata) -> Meta {
    let time = |secs: i64, nanos: i64| {
        let since_epoch = Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
        UNIX_EPOCH + since_epoch
    };
    Meta {
        perm: (metadata.mode() & 0o7777) as u16,
        uid: metadata.uid(),
        gid: metadata.gid(),
        atime: time(metadata.atime(), metadata.atime_nsec()),
        mtime: time(metadata.mtime(), metadata.mtime_nsec()),
        ctime: time(metadata.ctime(), metadata.ctime_nsec()),
    }
}

/// Makes the file at `path` `len` bytes long with `bytes` at `offset`,
/// creating it if needed. The bytes before `offset` are left as they are.
pub(crate) fn write_range(path: &Path, len: usize, offset: usize, bytes: &[u8]) -> io::Result<()> {
    assert!(offset + bytes.len() <= len, "the bytes written lie inside the new length");
    let file = OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    file.set_len(len as u64)?;
    file.write_all_at(bytes, offset as u64)
}

/// Writes a whole new file at `path`, replacing whatever was there.
pub(crate) fn write_file(path: &Path, bytes: &[u8], perm: u16) -> io::Result<()> {
    remove(path)?;
    write_range(path, bytes.len(), 0, bytes)?;
    fs::set_permissions(path, fs::Permissions::from_mode(u32::from(perm)))
}

/// Makes a new, empty directory at `path`, replacing whatever was there.
pub(crate) fn make_dir(path: &Path, perm: u16) -> io::Result<()> {
    remove(path)?;
    fs::create_dir(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(u32::from(perm)))
}

/// Removes the file or directory tree at `path`, if there is one.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
