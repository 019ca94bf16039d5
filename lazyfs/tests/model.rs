//! Random sequences of file operations, applied through a real mount and
//! to a small reference model of the durability rules; then a cut. The
//! disk, and the mount after the cut, must hold what the model says.
//!
//! The namespace is small on purpose, so that sequences collide: the root
//! and one durable subdirectory `d`, and files `a` and `b` in each.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use common::{snapshot, Mounted};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Root,
    Sub,
}

impl Dir {
    fn index(self) -> usize {
        self as usize
    }

    fn rel(self) -> &'static str {
        match self {
            Dir::Root => "",
            Dir::Sub => "d",
        }
    }

    fn path_of(self, name: &str) -> String {
        match self {
            Dir::Root => name.to_owned(),
            Dir::Sub => format!("d/{name}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Path {
    dir: Dir,
    name: &'static str,
}

impl Path {
    fn rel(self) -> String {
        self.dir.path_of(self.name)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write { path: Path, offset: u64, bytes: Vec<u8> },
    Append { path: Path, bytes: Vec<u8> },
    Truncate { path: Path, len: u64 },
    Create { path: Path },
    Rename { from: Path, to: Path },
    Unlink { path: Path },
    SyncFile { path: Path },
    SyncDir { dir: Dir },
}

fn a_dir() -> impl Strategy<Value = Dir> {
    prop_oneof![Just(Dir::Root), Just(Dir::Sub)]
}

fn a_path() -> impl Strategy<Value = Path> {
    (a_dir(), prop_oneof![Just("a"), Just("b")]).prop_map(|(dir, name)| Path { dir, name })
}

fn some_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..24)
}

fn an_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (a_path(), 0..40u64, some_bytes()).prop_map(|(path, offset, bytes)| Op::Write { path, offset, bytes }),
        2 => (a_path(), some_bytes()).prop_map(|(path, bytes)| Op::Append { path, bytes }),
        1 => (a_path(), 0..40u64).prop_map(|(path, len)| Op::Truncate { path, len }),
        3 => a_path().prop_map(|path| Op::Create { path }),
        2 => (a_path(), a_path()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => a_path().prop_map(|path| Op::Unlink { path }),
        3 => a_path().prop_map(|path| Op::SyncFile { path }),
        3 => a_dir().prop_map(|dir| Op::SyncDir { dir }),
    ]
}

/// The durability rules, for files in two directories, as plainly as they
/// can be said: a file's sync copies its bytes; a directory's sync copies
/// its entries, and a file it names loses any durable name elsewhere.
#[derive(Debug, Default)]
struct Model {
    files: Vec<ModelFile>,
    dirs: [ModelDir; 2],
}

#[derive(Debug, Default)]
struct ModelFile {
    current: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct ModelDir {
    current: BTreeMap<&'static str, usize>,
    synced: BTreeMap<&'static str, usize>,
}

impl Model {
    fn file(&mut self, path: Path) -> Result<&mut ModelFile, i32> {
        let id = *self.dirs[path.dir.index()].current.get(path.name).ok_or(libc::ENOENT)?;
        Ok(&mut self.files[id])
    }

    /// What the operation does to the model: the errno it must fail with, if any.
    fn apply(&mut self, op: &Op) -> Result<(), i32> {
        match op {
            Op::Write { path, offset, bytes } => {
                let file = self.file(*path)?;
                let end = *offset as usize + bytes.len();
                if file.current.len() < end {
                    file.current.resize(end, 0);
                }
                file.current[*offset as usize..end].copy_from_slice(bytes);
            }
            Op::Append { path, bytes } => self.file(*path)?.current.extend_from_slice(bytes),
            Op::Truncate { path, len } => self.file(*path)?.current.resize(*len as usize, 0),
            Op::Create { path } => {
                if self.file(*path).is_err() {
                    self.files.push(ModelFile::default());
                    self.dirs[path.dir.index()].current.insert(path.name, self.files.len() - 1);
                }
            }
            Op::Rename { from, to } => {
                let id = *self.dirs[from.dir.index()].current.get(from.name).ok_or(libc::ENOENT)?;
                self.dirs[from.dir.index()].current.remove(from.name);
                self.dirs[to.dir.index()].current.insert(to.name, id);
            }
            Op::Unlink { path } => {
                self.dirs[path.dir.index()].current.remove(path.name).ok_or(libc::ENOENT)?;
            }
            Op::SyncFile { path } => {
                let file = self.file(*path)?;
                file.synced = file.current.clone();
            }
            Op::SyncDir { dir } => {
                let entries = self.dirs[dir.index()].current.clone();
                let other = &mut self.dirs[1 - dir.index()].synced;
                other.retain(|_, id| !entries.values().any(|named| named == id));
                self.dirs[dir.index()].synced = entries;
            }
        }
        Ok(())
    }

    /// The tree as `snapshot` shows it, now or as the disk holds it.
    fn view(&self, durable: bool) -> BTreeMap<String, Vec<u8>> {
        let mut view = BTreeMap::from([("d/".to_owned(), Vec::new())]);
        for dir in [Dir::Root, Dir::Sub] {
            let entries = &self.dirs[dir.index()];
            for (name, &id) in if durable { &entries.synced } else { &entries.current } {
                let file = &self.files[id];
                view.insert(dir.path_of(name), if durable { &file.synced } else { &file.current }.clone());
            }
        }
        view
    }
}

/// The operation through the mount.
fn run(m: &Mounted, op: &Op) -> io::Result<()> {
    match op {
        Op::Write { path, offset, bytes } => {
            OpenOptions::new().write(true).open(m.at(&path.rel()))?.write_all_at(bytes, *offset)
        }
        Op::Append { path, bytes } => {
            OpenOptions::new().append(true).open(m.at(&path.rel()))?.write_all(bytes)
        }
        Op::Truncate { path, len } => OpenOptions::new().write(true).open(m.at(&path.rel()))?.set_len(*len),
        Op::Create { path } => {
            OpenOptions::new().write(true).create(true).truncate(false).open(m.at(&path.rel())).map(drop)
        }
        Op::Rename { from, to } => fs::rename(m.at(&from.rel()), m.at(&to.rel())),
        Op::Unlink { path } => fs::remove_file(m.at(&path.rel())),
        Op::SyncFile { path } => File::open(m.at(&path.rel()))?.sync_all(),
        Op::SyncDir { dir } => File::open(m.at(dir.rel()))?.sync_all(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_disk_and_the_mount_after_a_cut_hold_what_the_model_made_durable(
        ops in prop::collection::vec(an_op(), 1..30)
    ) {
        let m = Mounted::with_disk(|disk| fs::create_dir(disk.join("d")).unwrap());
        let mut model = Model::default();
        for op in &ops {
            let expected = model.apply(op);
            let got = run(&m, op).map_err(common::errno);
            prop_assert_eq!(got, expected, "{:?}", op);
        }
        prop_assert_eq!(snapshot(m.fs.mountpoint()), model.view(false), "the mount shows the current state");
        prop_assert_eq!(snapshot(m.fs.backing()), model.view(true), "the disk holds the durable state");
        m.fs.power_cut();
        prop_assert_eq!(snapshot(m.fs.backing()), model.view(true), "a cut writes nothing");
        prop_assert_eq!(snapshot(m.fs.mountpoint()), model.view(true), "the mount shows the disk");
    }
}
