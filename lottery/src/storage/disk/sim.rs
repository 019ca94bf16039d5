//! A simulated disk with a volatile cache, for tests: every write, create,
//! rename, new directory and cut stays in the cache until the file (for
//! its bytes) or its directory (for its names) is synced; a power cut
//! throws the cache away, and with a directory whose name was not durable
//! goes everything in it. The power can be set to go out after any number of operations:
//! from then on every operation fails, as on a machine that went dark.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{DirLock, Disk, DiskFile, FileId, FileStatus};

/// One file: what the disk holds of it, and what the cache does.
#[derive(Debug, Clone, Default)]
struct Node {
    durable: Vec<u8>,
    current: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    nodes: Vec<Node>,
    /// Names as programs see them, and as the disk holds them.
    current: BTreeMap<PathBuf, usize>,
    durable: BTreeMap<PathBuf, usize>,
    /// Directories as programs see them, and as the disk holds them.
    dirs: BTreeSet<PathBuf>,
    durable_dirs: BTreeSet<PathBuf>,
    locked: BTreeSet<PathBuf>,
    /// Operations that change something, so far.
    operations: u64,
    /// The power goes out once this many operations are done.
    power_out_after: Option<u64>,
}

/// A simulated disk; clones share it.
#[derive(Debug, Clone, Default)]
pub struct SimDisk(Arc<Mutex<State>>);

fn power_lost() -> io::Error {
    io::Error::other("the power is out")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} does not exist", path.display()))
}

impl SimDisk {
    /// A disk with the directory `dir` (and its parents), durably.
    pub fn with_dir(dir: &Path) -> SimDisk {
        let disk = SimDisk::default();
        {
            let mut state = disk.lock();
            for dir in dir.ancestors() {
                state.dirs.insert(dir.to_owned());
                state.durable_dirs.insert(dir.to_owned());
            }
        }
        disk
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Operations that changed something, so far.
    pub fn operations(&self) -> u64 {
        self.lock().operations
    }

    /// The power goes out once `operations` operations (in all, since the
    /// disk was made) are done.
    pub fn power_out_after(&self, operations: u64) {
        self.lock().power_out_after = Some(operations);
    }

    /// The power goes out and comes back: the cache is lost (with `torn`,
    /// each file keeps half of the bytes appended since its last sync, as
    /// a cache partly written back would), locks are gone with the
    /// processes that held them, and the disk works again.
    pub fn power_cut(&self, torn: bool) {
        let mut state = self.lock();
        for node in &mut state.nodes {
            let appended = node.current.len() > node.durable.len() && node.current.starts_with(&node.durable);
            if torn && appended {
                let keep = node.durable.len() + (node.current.len() - node.durable.len()) / 2;
                node.durable = node.current[..keep].to_vec();
            }
            node.current = node.durable.clone();
        }
        // A name survives only inside a directory that survives.
        let dirs = state.durable_dirs.clone();
        let kept = |path: &Path| {
            path.ancestors().skip(1).all(|dir| dir.as_os_str().is_empty() || dirs.contains(dir))
        };
        state.durable_dirs.retain(|dir| kept(dir));
        state.durable.retain(|path, _| kept(path));
        state.dirs = state.durable_dirs.clone();
        state.current = state.durable.clone();
        state.locked.clear();
        state.power_out_after = None;
    }

    /// The bytes the file at `path` holds now, if it exists.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        state.current.get(path).map(|&node| state.nodes[node].current.clone())
    }

    /// Writes a file whole and durably, name included (for tests that set
    /// the disk up).
    pub fn put(&self, path: &Path, bytes: &[u8]) {
        let mut state = self.lock();
        let node = state.nodes.len();
        state.nodes.push(Node { durable: bytes.to_vec(), current: bytes.to_vec() });
        state.current.insert(path.to_owned(), node);
        state.durable.insert(path.to_owned(), node);
    }
}

impl State {
    /// Counts one operation that changes something, if the power is on.
    fn operate(&mut self) -> io::Result<()> {
        if self.power_out_after.is_some_and(|after| self.operations >= after) {
            return Err(power_lost());
        }
        self.operations += 1;
        Ok(())
    }

    fn node(&self, path: &Path) -> io::Result<usize> {
        self.current.get(path).copied().ok_or_else(|| not_found(path))
    }

    /// Fails unless the directory `path` would go in exists.
    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(dir) if !self.dirs.contains(dir) => Err(not_found(dir)),
            _ => Ok(()),
        }
    }
}

impl Disk for SimDisk {
    fn open_file(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>> {
        let mut state = self.lock();
        let node = match (state.current.get(path).copied(), create) {
            (Some(node), _) => node,
            (None, false) => return Err(not_found(path)),
            (None, true) => {
                state.parent_exists(path)?;
                state.operate()?;
                let node = state.nodes.len();
                state.nodes.push(Node::default());
                state.current.insert(path.to_owned(), node);
                node
            }
        };
        Ok(Box::new(SimFile { disk: self.clone(), node }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        let state = self.lock();
        let node = state.node(path)?;
        Ok(Box::new(io::Cursor::new(state.nodes[node].current.clone())))
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        let state = self.lock();
        Ok(state.nodes[state.node(path)?].current.len() as u64)
    }

    fn id(&self, path: &Path) -> io::Result<FileId> {
        let node = self.lock().node(path)?;
        Ok(FileId { device: 0, inode: node as u64 })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let node = state.node(from)?;
        state.parent_exists(to)?;
        state.operate()?;
        state.current.remove(from);
        state.current.insert(to.to_owned(), node);
        Ok(())
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.parent_exists(dir)?;
        if state.dirs.contains(dir) || state.current.contains_key(dir) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", dir.display())));
        }
        state.operate()?;
        state.dirs.insert(dir.to_owned());
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        let state = self.lock();
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let inside = |path: &&PathBuf| path.parent() == Some(dir);
        let files = state.current.keys().filter(inside);
        let dirs = state.dirs.iter().filter(inside);
        Ok(files.chain(dirs).filter_map(|path| path.file_name()).map(ToOwned::to_owned).collect())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.lock();
        Ok(state.current.contains_key(path) || state.dirs.contains(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        state.operate()?;
        let inside = |path: &Path| path.parent() == Some(dir);
        state.durable.retain(|path, _| !inside(path));
        let names: Vec<(PathBuf, usize)> =
            state.current.iter().filter(|(path, _)| inside(path)).map(|(p, n)| (p.clone(), *n)).collect();
        state.durable.extend(names);
        state.durable_dirs.retain(|path| !inside(path));
        let dirs: Vec<PathBuf> = state.dirs.iter().filter(|path| inside(path)).cloned().collect();
        state.durable_dirs.extend(dirs);
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Option<DirLock>> {
        let mut state = self.lock();
        if !state.locked.insert(dir.to_owned()) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock { disk: self.clone(), dir: dir.to_owned() })))
    }
}

/// A directory's lock, given up when dropped.
struct SimLock {
    disk: SimDisk,
    dir: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.disk.lock().locked.remove(&self.dir);
    }
}

/// A file of the simulated disk, open for writing.
#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    node: usize,
}

impl DiskFile for SimFile {
    fn write_all(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.operate()?;
        parts.iter().for_each(|part| state.nodes[self.node].current.extend_from_slice(part));
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.operate()?;
        let node = &mut state.nodes[self.node];
        node.durable = node.current.clone();
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.operate()?;
        state.nodes[self.node].current.truncate(len as usize);
        Ok(())
    }

    fn status(&self) -> io::Result<FileStatus> {
        let state = self.disk.lock();
        let links = state.current.values().filter(|&&n| n == self.node).count() as u64;
        let len = state.nodes[self.node].current.len() as u64;
        Ok(FileStatus { len, links, id: FileId { device: 0, inode: self.node as u64 } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_was_synced_survives_a_cut() {
        let disk = SimDisk::with_dir(Path::new("/r"));
        let (dir, path) = (Path::new("/r"), Path::new("/r/f"));
        let mut file = disk.open_file(path, true).unwrap();
        file.write_all(&[b"synced"]).unwrap();
        file.sync().unwrap();
        disk.sync_dir(dir).unwrap();
        file.write_all(&[b" and not"]).unwrap();
        disk.rename(path, Path::new("/r/g")).unwrap();
        disk.power_cut(false);
        assert_eq!(disk.read(path).as_deref(), Some(&b"synced"[..]));
        assert_eq!(disk.read(Path::new("/r/g")), None, "the rename was never synced");
    }

    #[test]
    fn a_file_whose_name_was_never_synced_is_gone() {
        let disk = SimDisk::with_dir(Path::new("/r"));
        let mut file = disk.open_file(Path::new("/r/f"), true).unwrap();
        file.write_all(&[b"bytes"]).unwrap();
        file.sync().unwrap();
        disk.power_cut(false);
        assert_eq!(disk.read(Path::new("/r/f")), None);
    }

    #[test]
    fn once_the_power_is_out_nothing_more_happens() {
        let disk = SimDisk::with_dir(Path::new("/r"));
        let mut file = disk.open_file(Path::new("/r/f"), true).unwrap();
        disk.power_out_after(disk.operations() + 1);
        file.write_all(&[b"one"]).unwrap();
        assert!(file.write_all(&[b"two"]).is_err());
        assert!(file.sync().is_err());
        assert_eq!(disk.read(Path::new("/r/f")).as_deref(), Some(&b"one"[..]));
    }

    #[test]
    fn a_directory_whose_name_was_never_synced_is_gone_with_what_it_holds() {
        let disk = SimDisk::with_dir(Path::new("/r"));
        let (dir, path) = (Path::new("/r/d"), Path::new("/r/d/f"));
        assert!(disk.open_file(path, true).is_err(), "no file in a directory that is not there");
        disk.create_dir(dir).unwrap();
        assert_eq!(disk.create_dir(dir).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        let mut file = disk.open_file(path, true).unwrap();
        file.write_all(&[b"bytes"]).unwrap();
        file.sync().unwrap();
        disk.sync_dir(dir).unwrap();
        assert_eq!(disk.list_dir(Path::new("/r")).unwrap(), ["d"]);
        disk.power_cut(false);
        assert!(!disk.exists(dir).unwrap() && !disk.exists(path).unwrap());

        disk.create_dir(dir).unwrap();
        disk.sync_dir(Path::new("/r")).unwrap();
        disk.open_file(path, true).unwrap();
        disk.sync_dir(dir).unwrap();
        disk.power_cut(false);
        assert!(disk.exists(path).unwrap(), "both names were synced");
    }
}
