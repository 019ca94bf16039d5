//! The mount's state: every node in both of its states, and the open
//! handles. This module gives programs an ordinary POSIX filesystem (the
//! current state); [`sync`](crate::sync) decides what reaches the disk.
//!
//! Errors are the errno values the calling program gets.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileType, INodeNo, RenameFlags, TimeOrNow};

use crate::backing::{self, Loaded};
use crate::error::Error;
use crate::node::{DirData, FileData, Ino, Kind, Link, Meta, Node, ROOT};
use crate::stats::Stats;

/// Handles open at once: a bound on a test that leaks descriptors.
const MAX_HANDLES: usize = 1 << 16;

/// The longest name in a directory, as on ext4.
const MAX_NAME_LEN: usize = 255;

/// Every node of the mount, the open handles, and where the disk is.
#[derive(Debug)]
pub(crate) struct Tree {
    pub(crate) nodes: HashMap<Ino, Node>,
    /// Numbers are never reused while mounted, not even across a cut, so
    /// that the kernel never mistakes a new node for one it still caches.
    pub(crate) next_ino: Ino,
    /// A cut empties this: handles opened before it then fail with EIO.
    pub(crate) handles: HashMap<u64, Handle>,
    next_handle: u64,
    pub(crate) backing: PathBuf,
    pub(crate) stats: Stats,
}

/// What an open file description refers to.
#[derive(Debug)]
pub(crate) enum Handle {
    File {
        ino: Ino,
        append: bool,
    },
    /// The listing is taken at open (and at each rewind), so that the
    /// offsets handed to the kernel stay meaningful while entries change.
    Dir {
        ino: Ino,
        listing: Vec<Listed>,
    },
}

/// One entry of a directory listing.
#[derive(Debug)]
pub(crate) struct Listed {
    pub(crate) ino: Ino,
    pub(crate) kind: FileType,
    pub(crate) name: OsString,
}

impl Tree {
    /// The tree held by the backing folder `backing`, all of it durable.
    pub(crate) fn load(backing: PathBuf) -> Result<Tree, Error> {
        let loaded = backing::load(&backing)?;
        let mut tree = Tree {
            nodes: HashMap::new(),
            next_ino: ROOT,
            handles: HashMap::new(),
            next_handle: 1,
            backing,
            stats: Stats::default(),
        };
        let root = tree.adopt(loaded, None);
        assert_eq!(root, ROOT, "the first node loaded is the root");
        if tree.dir(ROOT).is_err() {
            return Err(Error::NotADirectory { path: tree.backing });
        }
        Ok(tree)
    }

    /// Adds `loaded` and everything under it as durable nodes, the top one
    /// named by `link`.
    fn adopt(&mut self, loaded: Loaded, link: Option<Link>) -> Ino {
        let ino = self.alloc_ino();
        let (kind, meta) = match loaded {
            Loaded::File { meta, bytes } => (Kind::File(FileData::clean(bytes)), meta),
            Loaded::Dir { meta, entries } => {
                let mut dir = DirData::default();
                for (name, loaded) in entries {
                    let child = self.adopt(loaded, Some((ino, name.clone())));
                    dir.current.insert(name.clone(), child);
                    dir.synced.insert(name, child);
                }
                (Kind::Dir(dir), meta)
            }
        };
        let parent = link.as_ref().map(|(dir, _)| *dir);
        self.nodes.insert(ino, Node { kind, meta, parent, durable_link: link, open: 0 });
        ino
    }

    pub(crate) fn alloc_ino(&mut self) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    pub(crate) fn node(&self, ino: Ino) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ESTALE)
    }

    pub(crate) fn node_mut(&mut self, ino: Ino) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ESTALE)
    }

    pub(crate) fn dir(&self, ino: Ino) -> Result<&DirData, Errno> {
        match &self.node(ino)?.kind {
            Kind::Dir(dir) => Ok(dir),
            Kind::File(_) => Err(Errno::ENOTDIR),
        }
    }

    pub(crate) fn dir_mut(&mut self, ino: Ino) -> Result<&mut DirData, Errno> {
        match &mut self.node_mut(ino)?.kind {
            Kind::Dir(dir) => Ok(dir),
            Kind::File(_) => Err(Errno::ENOTDIR),
        }
    }

    pub(crate) fn file_mut(&mut self, ino: Ino) -> Result<&mut FileData, Errno> {
        match &mut self.node_mut(ino)?.kind {
            Kind::File(file) => Ok(file),
            Kind::Dir(_) => Err(Errno::EISDIR),
        }
    }

    fn is_dir(&self, ino: Ino) -> Result<bool, Errno> {
        Ok(matches!(self.node(ino)?.kind, Kind::Dir(_)))
    }

    /// A directory that still has a name, so that entries may be added to it.
    fn live_dir(&self, ino: Ino) -> Result<&DirData, Errno> {
        let dir = self.dir(ino)?;
        if ino != ROOT && self.node(ino)?.parent.is_none() {
            return Err(Errno::ENOENT);
        }
        Ok(dir)
    }

    fn child(&self, parent: Ino, name: &OsStr) -> Result<Ino, Errno> {
        self.dir(parent)?.current.get(name).copied().ok_or(Errno::ENOENT)
    }

    /// What `stat` shows of `ino`.
    pub(crate) fn attr(&self, ino: Ino) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let named = ino == ROOT || node.parent.is_some();
        let (kind, size, nlink) = match &node.kind {
            Kind::File(file) => (FileType::RegularFile, file.current.len() as u64, u32::from(named)),
            Kind::Dir(dir) => {
                let subdirs = dir.current.values().filter(|&&child| self.is_dir(child) == Ok(true)).count();
                let nlink = if named { 2 + subdirs as u32 } else { 0 };
                (FileType::Directory, 4096, nlink)
            }
        };
        let meta = &node.meta;
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: meta.atime,
            mtime: meta.mtime,
            ctime: meta.ctime,
            crtime: meta.ctime,
            kind,
            perm: meta.perm,
            nlink,
            uid: meta.uid,
            gid: meta.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

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

    /// `mknod`: only regular files exist on this filesystem.
    pub(crate) fn mknod(
        &mut self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, Errno> {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::EPERM);
        }
        let meta = Meta::new(perm_of(mode), uid, gid);
        let ino = self.add_node(parent, name, Kind::File(FileData::default()), meta)?;
        self.attr(ino)
    }

    pub(crate) fn mkdir(
        &mut self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, Errno> {
        let meta = Meta::new(perm_of(mode), uid, gid);
        let ino = self.add_node(parent, name, Kind::Dir(DirData::default()), meta)?;
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

    fn add_handle(&mut self, handle: Handle) -> Result<u64, Errno> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(Errno::ENFILE);
        }
        let ino = match handle {
            Handle::File { ino, .. } | Handle::Dir { ino, .. } => ino,
        };
        self.node_mut(ino)?.open += 1;
        let fh = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(fh, handle);
        Ok(fh)
    }

    /// The node an open handle refers to; EIO for a handle opened before a cut.
    pub(crate) fn handle_ino(&self, fh: u64) -> Result<Ino, Errno> {
        match self.handles.get(&fh) {
            Some(Handle::File { ino, .. } | Handle::Dir { ino, .. }) => Ok(*ino),
            None => Err(Errno::EIO),
        }
    }

    /// Closes a handle; a handle from before a cut is already gone.
    pub(crate) fn release(&mut self, fh: u64) {
        let Some(handle) = self.handles.remove(&fh) else { return };
        let ino = match handle {
            Handle::File { ino, .. } | Handle::Dir { ino, .. } => ino,
        };
        if let Some(node) = self.nodes.get_mut(&ino) {
            assert!(node.open > 0, "a node is open at least as often as its handles say");
            node.open -= 1;
        }
        self.forget_if_unreferenced(ino);
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

    /// Drops `ino` once nothing can reach it any more: no current name, no
    /// open handle, no durable name. A dropped directory's synced entries
    /// go with it, so its children may follow.
    pub(crate) fn forget_if_unreferenced(&mut self, ino: Ino) {
        let mut pending = vec![ino];
        while let Some(ino) = pending.pop() {
            let Some(node) = self.nodes.get(&ino) else { continue };
            if ino == ROOT || node.parent.is_some() || node.open > 0 || node.durable_link.is_some() {
                continue;
            }
            let Some(Node { kind: Kind::Dir(dir), .. }) = self.nodes.remove(&ino) else { continue };
            assert!(dir.current.is_empty(), "a directory with entries has a name");
            for (name, child) in dir.synced {
                let Some(child_node) = self.nodes.get_mut(&child) else {
                    panic!("a synced entry names node {child}, which is gone");
                };
                assert_eq!(child_node.durable_link, Some((ino, name)), "synced entries and links agree");
                child_node.durable_link = None;
                pending.push(child);
            }
        }
    }
}

impl Tree {
    /// Panics unless the links between nodes agree both ways: current
    /// entries with parents, synced entries with durable links, handles with
    /// open counts; and unless every node is still reachable somehow.
    pub(crate) fn assert_consistent(&self) {
        assert!(self.dir(ROOT).is_ok(), "the root is a directory");
        let mut open: HashMap<Ino, u32> = HashMap::new();
        for handle in self.handles.values() {
            let (Handle::File { ino, .. } | Handle::Dir { ino, .. }) = handle;
            *open.entry(*ino).or_default() += 1;
        }
        for (&ino, node) in &self.nodes {
            assert_eq!(node.open, open.get(&ino).copied().unwrap_or(0), "node {ino}: open count");
            if let Some(parent) = node.parent {
                let names =
                    self.dir(parent).map_or(0, |dir| dir.current.values().filter(|&&c| c == ino).count());
                assert_eq!(names, 1, "node {ino} has one name in its parent {parent}");
            }
            if let Some((dir, name)) = &node.durable_link {
                let named = self.dir(*dir).ok().and_then(|dir| dir.synced.get(name));
                assert_eq!(named, Some(&ino), "node {ino}'s durable link is a synced entry");
            }
            if let Kind::Dir(dir) = &node.kind {
                for (name, child) in &dir.current {
                    let parent = self.nodes.get(child).and_then(|child| child.parent);
                    assert_eq!(parent, Some(ino), "{name:?} in {ino} names a child of {ino}");
                }
                for (name, child) in &dir.synced {
                    let link = self.nodes.get(child).and_then(|child| child.durable_link.as_ref());
                    assert_eq!(
                        link,
                        Some(&(ino, name.clone())),
                        "synced {name:?} in {ino} is a durable link"
                    );
                }
            }
            let referenced =
                ino == ROOT || node.parent.is_some() || node.open > 0 || node.durable_link.is_some();
            assert!(referenced, "node {ino} is reachable, or it would have been forgotten");
        }
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
