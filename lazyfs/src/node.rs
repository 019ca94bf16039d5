//! One file or directory of the mount, in its two states: what programs see
//! now (`current`) and what the disk holds (`synced`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::SystemTime;

use fuser::Errno;

/// A node's number: the FUSE node id and the `st_ino` programs see.
pub(crate) type Ino = u64;

/// A directory entry: the directory and the name in it.
pub(crate) type Link = (Ino, OsString);

/// The root directory's number, fixed by FUSE.
pub(crate) const ROOT: Ino = 1;

/// The largest file the mount holds. Every file is in memory twice (as
/// programs see it and as last synced), so this bounds what a runaway test
/// can take; ours write tens of MiB at most.
pub(crate) const MAX_FILE_SIZE: u64 = 1 << 30;

/// A file or a directory, with the directory entry that names it in each state.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    pub(crate) meta: Meta,
    /// The directory whose current entries name this node; `None` for the
    /// root and for a node that was unlinked (it lives on while open).
    pub(crate) parent: Option<Ino>,
    /// The synced entry `(directory, name)` that names this node on the disk;
    /// `None` while the node has no durable name. A node has at most one.
    pub(crate) durable_link: Option<Link>,
    /// Open descriptions (file or directory handles) of this node.
    pub(crate) open: u32,
}

#[derive(Debug)]
pub(crate) enum Kind {
    File(FileData),
    Dir(DirData),
}

/// Permission bits, owner and times: kept for `stat`, not part of the
/// durability model.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub(crate) perm: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) atime: SystemTime,
    pub(crate) mtime: SystemTime,
    pub(crate) ctime: SystemTime,
}

impl Meta {
    pub(crate) fn new(perm: u16, uid: u32, gid: u32) -> Meta {
        let now = SystemTime::now();
        Meta { perm, uid, gid, atime: now, mtime: now, ctime: now }
    }

    /// The contents changed: `mtime` and `ctime` move.
    pub(crate) fn touch(&mut self) {
        let now = SystemTime::now();
        self.mtime = now;
        self.ctime = now;
    }
}

/// A regular file's bytes as programs see them and as last synced.
#[derive(Debug, Default)]
pub(crate) struct FileData {
    pub(crate) current: Vec<u8>,
    pub(crate) synced: Vec<u8>,
    /// Before this offset `current` and `synced` hold the same bytes; `None`
    /// when they are equal. A sync copies only from here on, so that an
    /// append-only file costs its new bytes, not its whole length.
    dirty_from: Option<usize>,
}

impl FileData {
    /// A file whose bytes are all durable.
    pub(crate) fn clean(bytes: Vec<u8>) -> FileData {
        FileData { current: bytes.clone(), synced: bytes, dirty_from: None }
    }

    /// Up to `size` bytes from `offset`; fewer at the end of the file.
    pub(crate) fn read(&self, offset: u64, size: u32) -> &[u8] {
        let len = self.current.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(size as usize).min(len);
        &self.current[start..end]
    }

    /// Writes `bytes` at `offset`, filling any gap with zeros. Writing
    /// nothing changes nothing, even past the end.
    pub(crate) fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Errno> {
        if bytes.is_empty() {
            return Ok(());
        }
        let end = offset.checked_add(bytes.len() as u64).ok_or(Errno::EFBIG)?;
        if end > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let (offset, end) = (offset as usize, end as usize);
        self.mark_dirty(offset.min(self.current.len()));
        if self.current.len() < end {
            self.current.resize(end, 0);
        }
        self.current[offset..end].copy_from_slice(bytes);
        Ok(())
    }

    /// Cuts or extends (with zeros) the file to `len` bytes.
    pub(crate) fn set_len(&mut self, len: u64) -> Result<(), Errno> {
        if len > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let len = len as usize;
        self.mark_dirty(len.min(self.current.len()));
        self.current.resize(len, 0);
        Ok(())
    }

    fn mark_dirty(&mut self, from: usize) {
        self.dirty_from = Some(self.dirty_from.map_or(from, |dirty| dirty.min(from)));
    }

    /// The offset from which a sync must write `current` (`None`: nothing to write).
    pub(crate) fn unsynced_from(&self) -> Option<usize> {
        let dirty = self.dirty_from?;
        Some(dirty.min(self.current.len()).min(self.synced.len()))
    }

    /// Records that the disk now holds `current`, rewritten from `from` on.
    pub(crate) fn commit_sync(&mut self, from: usize) {
        assert!(from <= self.synced.len(), "a sync starts inside the synced state");
        assert!(from <= self.current.len(), "a sync starts inside the current state");
        self.synced.truncate(from);
        self.synced.extend_from_slice(&self.current[from..]);
        self.dirty_from = None;
        debug_assert_eq!(self.synced, self.current);
    }

    /// Records that the disk now also holds `current[synced.len()..end]`: a
    /// partial write-back of appended bytes (a torn cut).
    pub(crate) fn commit_tail(&mut self, end: usize) {
        let start = self.synced.len();
        assert!(start <= end, "a torn tail lies past the synced bytes");
        assert!(end <= self.current.len(), "a torn tail lies within the current bytes");
        self.synced.extend_from_slice(&self.current[start..end]);
    }
}

/// A directory's entries as programs see them and as last synced.
#[derive(Debug, Default)]
pub(crate) struct DirData {
    pub(crate) current: BTreeMap<OsString, Ino>,
    pub(crate) synced: BTreeMap<OsString, Ino>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_is_synced_from_the_old_end() {
        let mut file = FileData::clean(b"abc".to_vec());
        file.write(3, b"def").unwrap();
        assert_eq!(file.unsynced_from(), Some(3));
        file.commit_sync(3);
        assert_eq!(file.synced, b"abcdef");
        assert_eq!(file.unsynced_from(), None);
    }

    #[test]
    fn a_write_past_the_end_fills_the_gap_with_zeros() {
        let mut file = FileData::default();
        file.write(2, b"x").unwrap();
        assert_eq!(file.current, b"\0\0x");
        assert_eq!(file.unsynced_from(), Some(0));
    }

    #[test]
    fn a_truncate_then_regrow_is_synced_from_the_cut() {
        let mut file = FileData::clean(b"abcdef".to_vec());
        file.set_len(2).unwrap();
        file.write(4, b"zz").unwrap();
        assert_eq!(file.unsynced_from(), Some(2));
        file.commit_sync(2);
        assert_eq!(file.synced, b"ab\0\0zz");
    }

    #[test]
    fn an_empty_write_past_the_end_does_not_grow_the_file() {
        let mut file = FileData::clean(b"ab".to_vec());
        file.write(10, b"").unwrap();
        assert_eq!(file.current, b"ab");
        assert_eq!(file.unsynced_from(), None);
    }

    #[test]
    fn a_file_may_not_grow_past_the_limit() {
        let mut file = FileData::default();
        assert_eq!(file.write(MAX_FILE_SIZE, b"x"), Err(Errno::EFBIG));
        assert_eq!(file.set_len(MAX_FILE_SIZE + 1), Err(Errno::EFBIG));
        assert_eq!(file.write(u64::MAX, b"x"), Err(Errno::EFBIG));
    }

    #[test]
    fn a_torn_tail_keeps_the_synced_prefix() {
        let mut file = FileData::clean(b"ab".to_vec());
        file.write(0, b"XYcdef").unwrap();
        file.commit_tail(4);
        assert_eq!(file.synced, b"abcd");
    }
}
