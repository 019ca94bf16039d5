//! The calls programs make, on the current state: names (create, mkdir,
//! unlink, rmdir, rename) and bytes (open, read, write, truncate, list).
//! None of them makes anything durable; [`sync`](crate::sync) does that.
//!
//! Errors are the errno values the calling program gets.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileType, RenameFlags, TimeOrNow};

use crate::node::{DirData, FileData, Ino, Kind, Meta, Node};
use crate::tree::{Handle, Listed, Tree};

/// The longest name in a directory, as on ext4.
const MAX_NAME_LEN: usize = 255;

/// Who makes a node: its user and group ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner(pub(crate) u32, pub(crate) u32);

impl Tree {
    pub(crate) fn lookup(&self, parent: Ino, name: &OsStr) -> Result<FileAttr, Errno> {
        self.attr(self.child(parent, name)?)
    }

    /// Adds a new node named `name` in `parent`, with no durable name yet.
    fn add_node(&mut self, parent: Ino, name: &OsStr, kind: Kind, meta: Meta) -> Result<Ino, Errno> {
        check_name(name)?;
        if self.live_dir(parent)?.current.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.alloc_ino();
        self.nodes.insert(ino, Node { kind, meta, parent: Some(parent), durable_link: None, open: 0 });
        self.dir_mut(parent)?.current.insert(name.to_owned(), ino);
        self.node_mut(parent)?.meta.touch();
        Ok(ino)
    }

    /// `mknod` and `mkdir`: a regular file or a directory, as `mode`'s
    /// type says; no other kind of node exists on this filesystem.
    pub(crate) fn make(
        &mut self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        owner: Owner,
    ) -> Result<FileAttr, Errno> {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File(FileData::default()),
            libc::S_IFDIR => Kind::Dir(DirData::default()),
            _ => return Err(Errno::EPERM),
        };
        let ino = self.add_node(parent, name, kind, Meta::new(perm_of(mode), owner.0, owner.1))?;
        self.attr(ino)
    }

    /// `open(O_CREAT)`: creates the file, or opens it if it exists and
    /// `O_EXCL` was not given.
    pub(crate) fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
        uid: u32,
        gid: u32,
    ) -> Result<(FileAttr, u64), Errno> {
        let ino = match self.dir(parent)?.current.get(name).copied() {
            Some(_) if flags & libc::O_EXCL != 0 => return Err(Errno::EEXIST),
            Some(existing) => existing,
            None => {
                let meta = Meta::new(perm_of(mode), uid, gid);
                self.add_node(parent, name, Kind::File(FileData::default()), meta)?
            }
        };
        let fh = self.open(ino, flags)?;
        Ok((self.attr(ino)?, fh))
    }

    pub(crate) fn open(&mut self, ino: Ino, flags: i32) -> Result<u64, Errno> {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let file = self.file_mut(ino)?;
        if flags & libc::O_TRUNC != 0 && writable {
            file.set_len(0)?;
            self.node_mut(ino)?.meta.touch();
        }
        self.add_handle(Handle::File { ino, append: flags & libc::O_APPEND != 0 })
    }

    pub(crate) fn opendir(&mut self, ino: Ino) -> Result<u64, Errno> {
        let listing = self.listing(ino)?;
        self.add_handle(Handle::Dir { ino, listing })
    }

    fn listing(&self, ino: Ino) -> Result<Vec<Listed>, Errno> {
        let node = self.node(ino)?;
        let dir = self.dir(ino)?;
        let parent = node.parent.unwrap_or(ino);
        let mut listing = vec![
            Listed { ino, kind: FileType::Directory, name: ".".into() },
            Listed { ino: parent, kind: FileType::Directory, name: "..".into() },
        ];
        for (name, &child) in &dir.current {
            let kind = if self.is_dir(child)? { FileType::Directory } else { FileType::RegularFile };
            listing.push(Listed { ino: child, kind, name: name.clone() });
        }
        Ok(listing)
    }

    /// The entries of an open directory from `offset` on; offset 0 (a
    /// rewind) takes the listing afresh.
    pub(crate) fn readdir(&mut self, fh: u64, offset: u64) -> Result<&[Listed], Errno> {
        let ino = self.handle_ino(fh)?;
        let fresh = if offset == 0 { Some(self.listing(ino)?) } else { None };
        let Some(Handle::Dir { listing, .. }) = self.handles.get_mut(&fh) else {
            return Err(Errno::ENOTDIR);
        };
        if let Some(fresh) = fresh {
            *listing = fresh;
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(listing.len());
        Ok(&listing[start..])
    }

    pub(crate) fn read(&self, fh: u64, offset: u64, size: u32) -> Result<&[u8], Errno> {
        let ino = self.handle_ino(fh)?;
        match &self.node(ino)?.kind {
            Kind::File(file) => Ok(file.read(offset, size)),
            Kind::Dir(_) => Err(Errno::EISDIR),
        }
    }

    /// Writes at `offset`, or at the end for a handle opened with `O_APPEND`.
    pub(crate) fn write(&mut self, fh: u64, offset: u64, bytes: &[u8]) -> Result<u32, Errno> {
        let Some(&Handle::File { ino, append }) = self.handles.get(&fh) else {
            return Err(if self.handles.contains_key(&fh) { Errno::EISDIR } else { Errno::EIO });
        };
        let written = u32::try_from(bytes.len()).map_err(|_| Errno::EINVAL)?;
        let file = self.file_mut(ino)?;
        let offset = if append { file.current.len() as u64 } else { offset };
        file.write(offset, bytes)?;
        self.node_mut(ino)?.meta.touch();
        self.stats.writes += 1;
        self.stats.bytes_written += u64::from(written);
        Ok(written)
    }

    /// `truncate`, `chmod`, `chown` and `utimens`, as the kernel sends them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn setattr(
        &mut self,
        ino: Ino,
        fh: Option<u64>,
        size: Option<u64>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Result<FileAttr, Errno> {
        if let Some(fh) = fh {
            self.handle_ino(fh)?;
        }
        if let Some(size) = size {
            self.file_mut(ino)?.set_len(size)?;
            self.node_mut(ino)?.meta.touch();
        }
        let meta = &mut self.node_mut(ino)?.meta;
        let now = SystemTime::now();
        let time = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => now,
        };
        if let Some(mode) = mode {
            meta.perm = perm_of(mode);
        }
        meta.uid = uid.unwrap_or(meta.uid);
        meta.gid = gid.unwrap_or(meta.gid);
        meta.atime = atime.map_or(meta.atime, time);
        meta.mtime = mtime.map_or(meta.mtime, time);
        meta.ctime = now;
        self.attr(ino)
    }

    pub(crate) fn unlink(&mut self, parent: Ino, name: &OsStr) -> Result<(), Errno> {
        let child = self.child(parent, name)?;
        if self.is_dir(child)? {
            return Err(Errno::EISDIR);
        }
        self.detach(parent, name, child)
    }

    pub(crate) fn rmdir(&mut self, parent: Ino, name: &OsStr) -> Result<(), Errno> {
        let child = self.child(parent, name)?;
        if !self.dir(child)?.current.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        self.detach(parent, name, child)
    }

    /// Removes the current entry `name` of `parent`, which names `child`.
    fn detach(&mut self, parent: Ino, name: &OsStr, child: Ino) -> Result<(), Errno> {
        let removed = self.dir_mut(parent)?.current.remove(name);
        assert_eq!(removed, Some(child), "the entry detached names the child");
        self.node_mut(parent)?.meta.touch();
        let node = self.node_mut(child)?;
        node.parent = None;
        node.meta.ctime = SystemTime::now();
        self.forget_if_unreferenced(child);
        Ok(())
    }

    pub(crate) fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return Err(Errno::EINVAL);
        }
        check_name(new_name)?;
        let source = self.child(parent, name)?;
        self.live_dir(new_parent)?;
        let source_is_dir = self.is_dir(source)?;
        if source_is_dir && self.is_ancestor_or_self(source, new_parent) {
            return Err(Errno::EINVAL);
        }
        let target = self.dir(new_parent)?.current.get(new_name).copied();
        if let Some(target) = target {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            if target == source {
                return Ok(());
            }
            match (source_is_dir, self.is_dir(target)?) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !self.dir(target)?.current.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
            self.detach(new_parent, new_name, target)?;
        }
        let removed = self.dir_mut(parent)?.current.remove(name);
        assert_eq!(removed, Some(source), "the entry renamed names the source");
        self.dir_mut(new_parent)?.current.insert(new_name.to_owned(), source);
        self.node_mut(source)?.parent = Some(new_parent);
        self.node_mut(source)?.meta.ctime = SystemTime::now();
        self.node_mut(parent)?.meta.touch();
        self.node_mut(new_parent)?.meta.touch();
        Ok(())
    }

    /// Whether `ancestor` is `dir` or one of the directories above it now.
    fn is_ancestor_or_self(&self, ancestor: Ino, dir: Ino) -> bool {
        let mut at = Some(dir);
        for _ in 0..=self.nodes.len() {
            match at {
                Some(ino) if ino == ancestor => return true,
                Some(ino) => at = self.nodes.get(&ino).and_then(|node| node.parent),
                None => return false,
            }
        }
        panic!("the current parents of {dir} loop");
    }
}

/// The permission bits of a `mode`.
fn perm_of(mode: u32) -> u16 {
    (mode & 0o7777) as u16
}

fn check_name(name: &OsStr) -> Result<(), Errno> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    if bytes.len() > MAX_NAME_LEN {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}
