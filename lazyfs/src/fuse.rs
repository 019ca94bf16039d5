//! The kernel's side: FUSE requests turned into calls on the shared
//! [`Tree`], and their answers turned back into replies.
//!
//! The kernel must never answer from a cache, or a program would see state
//! that a cut has discarded: entries and attributes are given a time to
//! live of zero, files are opened with direct I/O (no page cache) and
//! writeback caching is never requested. Locks (`flock`, `fcntl`) are left
//! to the kernel, which keeps them per open file description.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::posix::Owner;
use crate::tree::Tree;

/// No kernel cache of entries or attributes outlives the request.
const TTL: Duration = Duration::ZERO;

/// Inode numbers are never reused while mounted, so one generation does.
const GENERATION: Generation = Generation(0);

/// The filesystem the FUSE session serves; [`LazyFs`](crate::LazyFs) holds the same tree.
pub(crate) struct LazyFuse {
    tree: Arc<Mutex<Tree>>,
}

impl LazyFuse {
    pub(crate) fn new(tree: Arc<Mutex<Tree>>) -> LazyFuse {
        LazyFuse { tree }
    }

    /// The tree, or EIO if an invariant broke while it was held (the panic
    /// said which); the disk then counts as failed.
    fn tree(&self) -> Result<MutexGuard<'_, Tree>, Errno> {
        self.tree.lock().map_err(|_| Errno::EIO)
    }

    fn release_handle(&self, fh: FileHandle, reply: ReplyEmpty) {
        match self.tree() {
            Ok(mut tree) => {
                tree.release(fh.0);
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn with<T>(&self, op: impl FnOnce(&mut Tree) -> Result<T, Errno>) -> Result<T, Errno> {
        op(&mut *self.tree()?)
    }
}

fn entry(reply: ReplyEntry, result: Result<fuser::FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, GENERATION),
        Err(e) => reply.error(e),
    }
}

fn attr(reply: ReplyAttr, result: Result<fuser::FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.attr(&TTL, &attr),
        Err(e) => reply.error(e),
    }
}

fn empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for LazyFuse {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(reply, self.with(|tree| tree.lookup(parent.0, name)));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        attr(reply, self.with(|tree| tree.attr(ino.0)));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fh = fh.map(|fh| fh.0);
        attr(reply, self.with(|tree| tree.setattr(ino.0, fh, size, mode, uid, gid, atime, mtime)));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        entry(reply, self.with(|tree| tree.make(parent.0, name, mode & !umask, Owner(req.uid(), req.gid()))));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        entry(
            reply,
            self.with(|tree| {
                tree.make(parent.0, name, (mode & !umask) | libc::S_IFDIR, Owner(req.uid(), req.gid()))
            }),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.with(|tree| tree.unlink(parent.0, name)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.with(|tree| tree.rmdir(parent.0, name)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.with(|tree| tree.rename(parent.0, name, newparent.0, newname, flags)));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|tree| tree.open(ino.0, flags.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.with(|tree| tree.create(parent.0, name, mode & !umask, flags, req.uid(), req.gid())) {
            Ok((attr, fh)) => {
                reply.created(&TTL, &attr, GENERATION, FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let tree = match self.tree() {
            Ok(tree) => tree,
            Err(e) => return reply.error(e),
        };
        match tree.read(fh.0, offset, size) {
            Ok(bytes) => reply.data(bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.with(|tree| tree.write(fh.0, offset, data)) {
            Ok(written) => reply.written(written),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _owner: LockOwner, reply: ReplyEmpty) {
        // close() makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_handle(fh, reply);
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // fdatasync makes as much durable as fsync: the model has no metadata apart from the bytes.
        empty(reply, self.with(|tree| tree.handle_ino(fh.0).and_then(|ino| tree.sync_file(ino))));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|tree| tree.opendir(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut tree = match self.tree() {
            Ok(tree) => tree,
            Err(e) => return reply.error(e),
        };
        match tree.readdir(fh.0, offset) {
            Ok(entries) => {
                for (next, listed) in (offset + 1..).zip(entries) {
                    if reply.add(INodeNo(listed.ino), next, listed.kind, &listed.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.release_handle(fh, reply);
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        empty(reply, self.with(|tree| tree.handle_ino(fh.0).and_then(|ino| tree.sync_dir(ino))));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Memory is the limit, not blocks: report a roomy, fixed disk.
        const BLOCKS: u64 = 1 << 24;
        reply.statfs(BLOCKS, BLOCKS, BLOCKS, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Only the mounting user may use the mount, and it may do anything.
        empty(reply, self.with(|tree| tree.node(ino.0).map(|_| ())));
    }
}
