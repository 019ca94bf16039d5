//! The durability rules: what an fsync makes durable, and what a power cut
//! keeps.
//!
//! Two invariants hold between requests:
//! - a synced entry `(dir, name) → child` exists exactly when
//!   `child.durable_link == Some((dir, name))`, so a node has at most one
//!   durable name and the durable nodes reachable from the root form a tree;
//! - the backing folder holds exactly that tree, each file with its synced
//!   bytes. Every change to the synced state is written there at once.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use fuser::Errno;

use crate::backing;
use crate::error::Error;
use crate::node::{DirData, FileData, Ino, Kind, Link, Node, ROOT};
use crate::tree::Tree;

/// The write-back unit of a torn cut: the page size.
pub(crate) const TORN_BLOCK: usize = 4096;

/// Directory depth bound for the walks below; deeper means a broken tree.
const MAX_DEPTH: usize = 4096;

impl Tree {
    /// `fsync`/`fdatasync` of a file: its bytes and length become durable.
    /// They reach the backing folder now if the file has a durable path, and
    /// wait in memory otherwise, for a sync of its directory to name it.
    pub(crate) fn sync_file(&mut self, ino: Ino) -> Result<(), Errno> {
        let rel = self.durable_path(ino);
        let Some(node) = self.nodes.get_mut(&ino) else { return Err(Errno::ESTALE) };
        let Kind::File(file) = &mut node.kind else { return self.sync_dir(ino) };
        self.stats.file_syncs += 1;
        let Some(from) = file.unsynced_from() else { return Ok(()) };
        if let Some(rel) = rel {
            let path = self.backing.join(rel);
            if backing::write_range(&path, file.current.len(), from, &file.current[from..]).is_err() {
                self.stats.backing_errors += 1;
                return Err(Errno::EIO);
            }
        }
        file.commit_sync(from);
        Ok(())
    }

    /// `fsync` of a directory: its entries become durable as they are now.
    /// A node newly named here that had a durable name elsewhere (a rename
    /// from another directory) loses that one, since a node has one name.
    pub(crate) fn sync_dir(&mut self, dir: Ino) -> Result<(), Errno> {
        let entries = self.dir(dir)?;
        let gone: Vec<OsString> = entries
            .synced
            .iter()
            .filter(|&(name, child)| entries.current.get(name) != Some(child))
            .map(|(name, _)| name.clone())
            .collect();
        let added: Vec<(OsString, Ino)> = entries
            .current
            .iter()
            .filter(|&(name, child)| entries.synced.get(name) != Some(child))
            .map(|(name, &child)| (name.clone(), child))
            .collect();
        self.stats.dir_syncs += 1;
        let mut unlinked = Vec::new();
        let result = self.apply_dir_sync(dir, gone, added, &mut unlinked);
        for ino in unlinked {
            self.forget_if_unreferenced(ino);
        }
        if cfg!(debug_assertions) {
            self.assert_consistent();
        }
        result.map_err(|_| {
            self.stats.backing_errors += 1;
            Errno::EIO
        })
    }

    fn apply_dir_sync(
        &mut self,
        dir: Ino,
        gone: Vec<OsString>,
        added: Vec<(OsString, Ino)>,
        unlinked: &mut Vec<Ino>,
    ) -> io::Result<()> {
        for name in gone {
            unlinked.push(self.unlink_durable(dir, &name)?);
        }
        for (name, child) in added {
            let old_link = self.nodes.get(&child).and_then(|node| node.durable_link.clone());
            if let Some((old_dir, old_name)) = old_link {
                unlinked.push(self.unlink_durable(old_dir, &old_name)?);
            }
            self.link_durable(dir, name, child)?;
        }
        Ok(())
    }

    /// Removes the synced entry `name` of `dir`, from the backing folder too;
    /// returns the node it named, which is now nameless on the disk.
    fn unlink_durable(&mut self, dir: Ino, name: &OsStr) -> io::Result<Ino> {
        if let Some(rel) = self.durable_path(dir) {
            backing::remove(&self.backing.join(rel).join(name))?;
        }
        let Ok(entries) = self.dir_mut(dir) else {
            panic!("node {dir} has synced entries, so it is a directory")
        };
        let Some(child) = entries.synced.remove(name) else { panic!("{name:?} is a synced entry of {dir}") };
        let Some(node) = self.nodes.get_mut(&child) else { panic!("the synced entry {name:?} names a node") };
        assert_eq!(node.durable_link.as_ref().map(|(d, n)| (*d, n.as_os_str())), Some((dir, name)));
        node.durable_link = None;
        Ok(child)
    }

    /// Names the nameless `child` as `name` in `dir`'s synced entries, and
    /// writes its synced subtree to the backing folder if `dir` is there.
    fn link_durable(&mut self, dir: Ino, name: OsString, child: Ino) -> io::Result<()> {
        let Some(node) = self.nodes.get(&child) else {
            panic!("a current entry names node {child}, which is gone")
        };
        assert!(node.durable_link.is_none(), "a node gets a durable name only when it has none");
        if let Some(rel) = self.durable_path(dir) {
            self.materialize(child, &self.backing.join(rel).join(&name), 0)?;
        }
        let Ok(entries) = self.dir_mut(dir) else { panic!("node {dir} is synced as a directory") };
        let replaced = entries.synced.insert(name.clone(), child);
        assert!(replaced.is_none(), "the old synced entry {name:?} went first");
        if let Some(node) = self.nodes.get_mut(&child) {
            node.durable_link = Some((dir, name));
        }
        Ok(())
    }

    /// Writes the synced state of `ino` and of everything durably under it at `path`.
    fn materialize(&self, ino: Ino, path: &Path, depth: usize) -> io::Result<()> {
        assert!(depth < MAX_DEPTH, "the durable tree under {path:?} is deeper than {MAX_DEPTH}");
        let Some(node) = self.nodes.get(&ino) else {
            panic!("a synced entry names node {ino}, which is gone")
        };
        match &node.kind {
            Kind::File(file) => backing::write_file(path, &file.synced, node.meta.perm),
            Kind::Dir(dir) => {
                backing::make_dir(path, node.meta.perm)?;
                for (name, &child) in &dir.synced {
                    self.materialize(child, &path.join(name), depth + 1)?;
                }
                Ok(())
            }
        }
    }

    /// Where the disk holds `ino`, relative to the backing folder; `None`
    /// while some node on the way up has no durable name.
    pub(crate) fn durable_path(&self, ino: Ino) -> Option<PathBuf> {
        let mut names = Vec::new();
        let mut at = ino;
        // A loop of durable links (possible only among nodes cut off from the
        // root) ends the walk after as many steps as there are nodes.
        for _ in 0..=self.nodes.len() {
            if at == ROOT {
                return Some(names.iter().rev().collect());
            }
            let (dir, name) = self.nodes.get(&at)?.durable_link.as_ref()?;
            names.push(name.as_os_str());
            at = *dir;
        }
        None
    }

    /// The files of the durable tree, with their paths, in name order.
    fn durable_files(&self) -> Vec<(Ino, PathBuf)> {
        let mut files = Vec::new();
        let mut pending = vec![(ROOT, PathBuf::new())];
        while let Some((ino, path)) = pending.pop() {
            match self.nodes.get(&ino).map(|node| &node.kind) {
                Some(Kind::File(_)) => files.push((ino, path)),
                Some(Kind::Dir(dir)) => {
                    pending.extend(dir.synced.iter().rev().map(|(name, &child)| (child, path.join(name))))
                }
                None => panic!("a synced entry names node {ino}, which is gone"),
            }
        }
        files
    }

    /// Discards every change that is not durable: the mount then shows the
    /// durable tree, which the backing folder already holds. Every node gets
    /// a new number and every handle is closed, so that nothing from before
    /// the cut (a descriptor, a kernel cache entry) reaches the new state.
    pub(crate) fn power_cut(&mut self) {
        let mut old = std::mem::take(&mut self.nodes);
        self.handles.clear();
        self.stats.power_cuts += 1;
        let mut pending: Vec<(Ino, Ino, Option<Link>)> = vec![(ROOT, ROOT, None)];
        while let Some((old_ino, ino, link)) = pending.pop() {
            let Some(node) = old.remove(&old_ino) else {
                panic!("the durable tree reaches node {old_ino} twice, or a node that is gone");
            };
            let kind = match node.kind {
                Kind::File(file) => Kind::File(FileData::clean(file.synced)),
                Kind::Dir(dir) => {
                    let mut fresh = DirData::default();
                    for (name, old_child) in dir.synced {
                        let child = self.alloc_ino();
                        fresh.current.insert(name.clone(), child);
                        fresh.synced.insert(name.clone(), child);
                        pending.push((old_child, child, Some((ino, name))));
                    }
                    Kind::Dir(fresh)
                }
            };
            let parent = link.as_ref().map(|(dir, _)| *dir);
            self.nodes.insert(ino, Node { kind, meta: node.meta, parent, durable_link: link, open: 0 });
        }
        self.assert_consistent();
    }

    /// A cut during write-back: first each durable file keeps a prefix of
    /// the bytes appended past its synced length, ending on a 4 KiB boundary
    /// or at the file's end, chosen by `seed`; then everything else goes.
    pub(crate) fn power_cut_torn(&mut self, seed: u64) -> Result<(), Error> {
        let mut rolls = SplitMix64(seed);
        for (ino, rel) in self.durable_files() {
            let Some(Node { kind: Kind::File(file), .. }) = self.nodes.get_mut(&ino) else { continue };
            let (synced, current) = (file.synced.len(), file.current.len());
            if current <= synced {
                continue;
            }
            let end = torn_length(synced, current, rolls.next());
            if end > synced {
                let path = self.backing.join(rel);
                backing::write_range(&path, end, synced, &file.current[synced..end])
                    .map_err(|e| Error::io(path, e))?;
                file.commit_tail(end);
            }
        }
        self.power_cut();
        Ok(())
    }
}

/// How much of a file with `synced` durable bytes and `current` bytes in
/// all survives a torn cut: `synced`, a 4 KiB boundary between the two, or
/// `current`, picked by `roll`.
pub(crate) fn torn_length(synced: usize, current: usize, roll: u64) -> usize {
    assert!(synced < current, "a torn cut applies to a file with unsynced appended bytes");
    let first_boundary = (synced / TORN_BLOCK + 1) * TORN_BLOCK;
    let boundaries =
        if first_boundary < current { (current - 1 - first_boundary) / TORN_BLOCK + 1 } else { 0 };
    let choice = (roll % (boundaries as u64 + 2)) as usize;
    let end = match choice {
        0 => synced,
        c if c <= boundaries => first_boundary + (c - 1) * TORN_BLOCK,
        _ => current,
    };
    assert!(synced <= end, "a torn length keeps the synced bytes");
    assert!(end <= current, "a torn length keeps no more than the current bytes");
    end
}

/// A small, fixed pseudo-random sequence (SplitMix64), so that a seed picks
/// the same torn lengths on every machine and with every dependency version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use fuser::RenameFlags;

    use crate::posix::Owner;

    use super::*;

    const FILE: u32 = libc::S_IFREG | 0o644;

    fn tree() -> (tempfile::TempDir, Tree) {
        let disk = tempfile::tempdir().unwrap();
        let tree = Tree::load(disk.path().to_owned()).unwrap();
        (disk, tree)
    }

    fn new_file(tree: &mut Tree, dir: Ino, name: &str, bytes: &[u8]) -> (Ino, u64) {
        let (attr, fh) = tree.create(dir, name.as_ref(), FILE, libc::O_RDWR, 0, 0).unwrap();
        tree.write(fh, 0, bytes).unwrap();
        (attr.ino.0, fh)
    }

    fn read_all(tree: &mut Tree, dir: Ino, name: &str) -> Vec<u8> {
        let ino = tree.lookup(dir, name.as_ref()).unwrap().ino.0;
        let fh = tree.open(ino, libc::O_RDONLY).unwrap();
        let bytes = tree.read(fh, 0, u32::MAX).unwrap().to_vec();
        tree.release(fh);
        bytes
    }

    #[test]
    fn a_file_synced_while_nameless_is_named_with_its_synced_bytes() {
        let (disk, mut tree) = tree();
        let (ino, fh) = new_file(&mut tree, ROOT, "a", b"first");
        tree.sync_file(ino).unwrap();
        tree.write(fh, 0, b"FIRST, then more").unwrap();
        assert!(!disk.path().join("a").exists(), "no durable name yet");
        tree.sync_dir(ROOT).unwrap();
        assert_eq!(fs::read(disk.path().join("a")).unwrap(), b"first");
        tree.power_cut();
        assert_eq!(read_all(&mut tree, ROOT, "a"), b"first");
        tree.assert_consistent();
    }

    /// A file `from/f`, durable, renamed to `to/g` with nothing synced
    /// since.
    fn renamed_across() -> (tempfile::TempDir, Tree, Ino, Ino) {
        let (disk, mut tree) = tree();
        let from = tree.make(ROOT, "from".as_ref(), libc::S_IFDIR | 0o755, Owner(0, 0)).unwrap().ino.0;
        let to = tree.make(ROOT, "to".as_ref(), libc::S_IFDIR | 0o755, Owner(0, 0)).unwrap().ino.0;
        let (ino, _) = new_file(&mut tree, from, "f", b"bytes");
        tree.sync_file(ino).unwrap();
        tree.sync_dir(from).unwrap();
        tree.sync_dir(ROOT).unwrap();
        tree.rename(from, "f".as_ref(), to, "g".as_ref(), RenameFlags::empty()).unwrap();
        (disk, tree, from, to)
    }

    #[test]
    fn a_rename_across_directories_is_durable_once_the_target_is_synced() {
        let (disk, mut tree, _, to) = renamed_across();
        tree.sync_dir(to).unwrap();
        assert!(!disk.path().join("from/f").exists(), "the old name went with the new one");
        assert_eq!(fs::read(disk.path().join("to/g")).unwrap(), b"bytes");
        tree.assert_consistent();
    }

    #[test]
    fn a_rename_across_directories_with_only_the_source_synced_leaves_no_name() {
        let (disk, mut tree, from, to) = renamed_across();
        tree.sync_dir(from).unwrap();
        assert!(!disk.path().join("from/f").exists());
        assert!(!disk.path().join("to/g").exists());
        tree.sync_dir(to).unwrap();
        assert_eq!(fs::read(disk.path().join("to/g")).unwrap(), b"bytes", "the file was kept, nameless");
        tree.assert_consistent();
    }

    #[test]
    fn a_directory_moved_into_its_sibling_and_back_out_stays_consistent() {
        let (disk, mut tree) = tree();
        let a = tree.make(ROOT, "a".as_ref(), libc::S_IFDIR | 0o755, Owner(0, 0)).unwrap().ino.0;
        let b = tree.make(a, "b".as_ref(), libc::S_IFDIR | 0o755, Owner(0, 0)).unwrap().ino.0;
        tree.sync_dir(a).unwrap();
        tree.sync_dir(ROOT).unwrap();
        // Now b moves up and a moves under b: syncing b alone cuts both off the disk.
        tree.rename(a, "b".as_ref(), ROOT, "b".as_ref(), RenameFlags::empty()).unwrap();
        tree.rename(ROOT, "a".as_ref(), b, "a".as_ref(), RenameFlags::empty()).unwrap();
        tree.sync_dir(b).unwrap();
        assert!(fs::read_dir(disk.path()).unwrap().next().is_none(), "a left the root's synced entries");
        tree.sync_dir(ROOT).unwrap();
        assert!(disk.path().join("b/a").is_dir());
        tree.power_cut();
        let b = tree.lookup(ROOT, "b".as_ref()).unwrap().ino.0;
        assert!(tree.lookup(b, "a".as_ref()).is_ok());
        tree.assert_consistent();
    }

    #[test]
    fn a_torn_cut_keeps_a_block_aligned_prefix_of_the_appended_bytes() {
        let (disk, mut tree) = tree();
        let (ino, fh) = new_file(&mut tree, ROOT, "log", &[1; 100]);
        tree.sync_file(ino).unwrap();
        tree.sync_dir(ROOT).unwrap();
        tree.write(fh, 100, &[2; 3 * TORN_BLOCK]).unwrap();
        tree.power_cut_torn(7).unwrap();
        let survived = fs::read(disk.path().join("log")).unwrap();
        let end = torn_length(100, 100 + 3 * TORN_BLOCK, SplitMix64(7).next());
        assert_eq!(survived.len(), end);
        assert_eq!(read_all(&mut tree, ROOT, "log"), survived);
        tree.assert_consistent();
    }

    #[test]
    fn torn_lengths_are_the_synced_end_the_boundaries_or_the_current_end() {
        let ends: std::collections::BTreeSet<usize> =
            (0..64).map(|roll| torn_length(100, 9000, roll)).collect();
        assert_eq!(ends.into_iter().collect::<Vec<_>>(), [100, 4096, 8192, 9000]);
        assert_eq!(torn_length(4096, 4097, 1), 4097);
        assert_eq!(torn_length(0, 4096, 1), 4096);
    }

    #[test]
    fn handles_from_before_a_cut_fail_with_eio() {
        let (_disk, mut tree) = tree();
        let (_, fh) = new_file(&mut tree, ROOT, "a", b"x");
        tree.power_cut();
        assert_eq!(tree.write(fh, 0, b"y"), Err(Errno::EIO));
        assert_eq!(tree.read(fh, 0, 1).map(<[u8]>::to_vec), Err(Errno::EIO));
        tree.release(fh);
        tree.assert_consistent();
    }

    #[test]
    fn an_unlinked_closed_file_is_forgotten_once_its_directory_is_synced() {
        let (_disk, mut tree) = tree();
        let (ino, fh) = new_file(&mut tree, ROOT, "a", b"x");
        tree.sync_dir(ROOT).unwrap();
        tree.unlink(ROOT, "a".as_ref()).unwrap();
        tree.release(fh);
        assert!(tree.node(ino).is_ok(), "still durably named");
        tree.sync_dir(ROOT).unwrap();
        assert_eq!(tree.node(ino).err(), Some(Errno::ESTALE));
        tree.assert_consistent();
    }
}
