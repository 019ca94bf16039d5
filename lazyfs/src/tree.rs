//! The mount's state: every node in both of its states, the open handles,
//! and the links between them that must always agree. What programs do to
//! it is in [`posix`](crate::posix); what reaches the disk, in
//! [`sync`](crate::sync).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use fuser::{Errno, FileAttr, FileType, INodeNo};

use crate::backing::{self, Loaded};
use crate::error::Error;
use crate::node::{DirData, FileData, Ino, Kind, Link, Node, ROOT};
use crate::stats::Stats;

/// Handles open at once: a bound on a test that leaks descriptors.
const MAX_HANDLES: usize = 1 << 16;

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

    pub(crate) fn is_dir(&self, ino: Ino) -> Result<bool, Errno> {
        Ok(matches!(self.node(ino)?.kind, Kind::Dir(_)))
    }

    /// A directory that still has a name, so that entries may be added to it.
    pub(crate) fn live_dir(&self, ino: Ino) -> Result<&DirData, Errno> {
        let dir = self.dir(ino)?;
        if ino != ROOT && self.node(ino)?.parent.is_none() {
            return Err(Errno::ENOENT);
        }
        Ok(dir)
    }

    pub(crate) fn child(&self, parent: Ino, name: &OsStr) -> Result<Ino, Errno> {
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

    /// Opens `handle` on its node.
    pub(crate) fn add_handle(&mut self, handle: Handle) -> Result<u64, Errno> {
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
