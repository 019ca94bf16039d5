//! A FUSE filesystem that loses power on demand.
//!
//! `kill -9` leaves the page cache intact, so a crash test that only kills
//! processes never loses an unsynced write. [`LazyFs`] mounts a directory
//! whose changes stay in memory until they are synced, as a disk with a
//! volatile cache would hold them, and [`LazyFs::power_cut`] throws away
//! everything that was not. The *backing folder* is the disk: at every
//! moment it holds exactly the durable state, and a test reads it with
//! `std::fs` to see what survived.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::fs::{self, File};
//! use std::io::Write;
//!
//! let disk = tempfile::tempdir()?;
//! let mnt = tempfile::tempdir()?;
//! let fs = lazyfs::LazyFs::mount(disk.path(), mnt.path())?;
//!
//! let mut bets = File::create(fs.mountpoint().join("bets.csv"))?;
//! bets.write_all(b"1,2,3\n")?;
//! bets.sync_all()?; // the bytes are durable,
//! File::open(fs.mountpoint())?.sync_all()?; // and so is the name
//! bets.write_all(b"4,5,6\n")?; // but not these bytes
//!
//! fs.power_cut();
//! assert_eq!(fs::read(disk.path().join("bets.csv"))?, b"1,2,3\n");
//! assert_eq!(fs::read(fs.mountpoint().join("bets.csv"))?, b"1,2,3\n");
//! # Ok(()) }
//! ```
//!
//! # What becomes durable
//!
//! Programs using the mount see an ordinary POSIX filesystem of regular
//! files and directories: every call takes effect at once for every
//! reader. What survives a cut follows strict POSIX, as on a disk with a
//! volatile write cache and no journal ordering to lean on:
//!
//! | syscall | what becomes durable |
//! |---|---|
//! | `write`, `pwrite`, `writev`, writes with `O_APPEND` | nothing, until the file is synced |
//! | `ftruncate`, `truncate`, `open(O_TRUNC)` | nothing, until the file is synced |
//! | `fsync`, `fdatasync` on a file (any descriptor of it) | the file's bytes and length, all of them (`fdatasync` is as strong as `fsync`). Not its name |
//! | `creat`, `open(O_CREAT)`, `mkdir` | nothing, until the parent directory is synced; a file named that way holds only what was synced of it (nothing if never synced, so it is empty) |
//! | `unlink`, `rmdir` | nothing, until the parent directory is synced; until then a cut brings the name back with its durable bytes |
//! | `rename` in one directory, also over an existing name | nothing, until the directory is synced; then the new name (replacing the old target) and the loss of the old name, together |
//! | `rename` from directory A to directory B | syncing B makes the new name durable and takes the old durable name away with it (a file has one durable name); syncing only A takes the old name away, so the file has no durable name (and a cut loses it) until B is synced |
//! | `fsync` on a directory | its entries as they are now: every name added, removed or renamed in or out; each name brings the durable state of what it names (a file's synced bytes, a subdirectory's synced entries) |
//! | `close` | nothing |
//! | `sync`, `syncfs` | nothing: FUSE does not pass them on, so only `fsync` makes anything durable |
//! | `chmod`, `chown`, `utimens` | not modelled: they show while mounted; the disk has the bits a node had when its name was last written there |
//! | `flock`, `fcntl` locks | not state: the kernel keeps them per open file description |
//! | [`LazyFs::power_cut`] | the mount shows exactly the backing folder; everything else is gone |
//!
//! A file synced while it has no durable name (created or renamed into a
//! directory not synced since) keeps its synced bytes in memory; a later
//! sync of its directory writes them under the name. If the cut comes
//! first, the file is gone. The same holds for a directory and its synced
//! entries. Nothing of this is kept in the backing folder, which has no
//! hidden area: it holds the durable tree and nothing else.
//!
//! # What a cut does to programs
//!
//! A cut is atomic with respect to every request: it falls between two.
//! Afterwards every descriptor opened before it fails with EIO (reads,
//! writes, syncs, listings; `fstat` gives ESTALE), so a process that
//! survives a cut cannot write into the new state by mistake; a process
//! should be killed with the power anyway. Paths resolve afresh against
//! the durable state, and no kernel cache can show the old one: entries
//! and attributes live for zero seconds, files are opened with direct I/O,
//! writeback caching is off, and every node except the root gets a new
//! inode number (a process whose working directory was inside the mount
//! gets ESTALE). Locks held through old descriptors stay with them, as the
//! kernel keeps them: on the root directory they still conflict with new
//! ones until released.
//!
//! [`LazyFs::power_cut_torn`] cuts while the cache is being written back:
//! each file keeps a prefix of the bytes appended past its synced length,
//! ending on a 4 KiB boundary or at the file's end, chosen by a seed.
//!
//! # Limits
//!
//! Only regular files and directories exist: symlinks, hard links and
//! special files are refused (EPERM), and so is a backing folder holding
//! them. There are no extended attributes, no `fallocate`, no shared `mmap`
//! (the files are opened with direct I/O), no `RENAME_EXCHANGE`.
//! Permissions are not checked: only the mounting user may use the mount.
//! Every file is in memory twice (as programs see it, and as last synced),
//! up to 1 GiB each. The backing folder itself is never fsynced: it stands
//! for a disk, and the host does not lose power.
//!
//! Dropping the [`LazyFs`] unmounts, lazily if the mount is still in use.
//! A test process killed outright (SIGKILL, abort) leaves its mount behind,
//! answering ENOTCONN, until `umount -l`; fusermount3's `auto_unmount`
//! does not undo mounts in our containers, so it is not used.

mod backing;
mod error;
mod fuse;
mod mount;
mod node;
mod posix;
mod stats;
mod sync;
mod tree;

pub use error::Error;
pub use mount::LazyFs;
pub use stats::Stats;
