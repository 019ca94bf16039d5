//! The mount as programs see it: an ordinary POSIX filesystem, locks
//! included, and nothing stale after a cut.

mod common;

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{IoSlice, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::process::Command;

use common::{errno, snapshot, Mounted};
use lazyfs::{Error, LazyFs};

#[test]
fn flock_on_a_directory_conflicts_across_two_opens_and_is_released_on_close() {
    let m = Mounted::new();
    fs::create_dir(m.at("storage")).unwrap();
    let first = File::open(m.at("storage")).unwrap();
    let second = File::open(m.at("storage")).unwrap();
    first.try_lock().unwrap();
    assert!(matches!(second.try_lock(), Err(TryLockError::WouldBlock)), "LOCK_EX|LOCK_NB must fail");
    drop(first);
    second.try_lock().unwrap();
}

#[test]
fn flock_on_a_file_conflicts_across_two_opens() {
    let m = Mounted::new();
    File::create(m.at("lock")).unwrap();
    let first = File::open(m.at("lock")).unwrap();
    let second = File::open(m.at("lock")).unwrap();
    first.try_lock().unwrap();
    assert!(matches!(second.try_lock(), Err(TryLockError::WouldBlock)));
    first.unlock().unwrap();
    second.try_lock().unwrap();
}

#[test]
fn after_a_cut_another_process_reads_exactly_the_durable_state() {
    let m = Mounted::new();
    m.durable_file("kept", b"durable\n");
    m.append("kept").write_all(b"lost\n").unwrap();
    File::create(m.at("new")).unwrap().write_all(b"lost too\n").unwrap();
    // Fill every kernel cache there is: entries, attributes, listings, data.
    assert_eq!(fs::read(m.at("kept")).unwrap(), b"durable\nlost\n");
    assert_eq!(fs::metadata(m.at("new")).unwrap().len(), 9);
    assert_eq!(fs::read_dir(m.fs.mountpoint()).unwrap().count(), 2);

    m.fs.power_cut();

    let cat = Command::new("cat").arg(m.at("kept")).output().unwrap();
    assert_eq!(cat.stdout, b"durable\n");
    let ls = Command::new("ls").arg("-A").arg(m.fs.mountpoint()).output().unwrap();
    assert_eq!(String::from_utf8(ls.stdout).unwrap(), "kept\n");
    let stat = Command::new("stat").args(["-c", "%s"]).arg(m.at("kept")).output().unwrap();
    assert_eq!(String::from_utf8(stat.stdout).unwrap(), "8\n");
    assert_eq!(snapshot(m.fs.mountpoint()), snapshot(m.fs.backing()));
}

#[test]
fn descriptors_opened_before_a_cut_fail_with_eio() {
    let m = Mounted::new();
    m.durable_file("f", b"abc");
    let mut file = OpenOptions::new().read(true).write(true).open(m.at("f")).unwrap();
    let dir = File::open(m.fs.mountpoint()).unwrap();
    m.fs.power_cut();
    assert_eq!(errno(file.write_all(b"x").unwrap_err()), libc::EIO);
    assert_eq!(errno(file.read(&mut [0; 8]).unwrap_err()), libc::EIO);
    assert_eq!(errno(file.sync_all().unwrap_err()), libc::EIO);
    assert_eq!(errno(dir.sync_all().unwrap_err()), libc::EIO);
    assert_eq!(errno(file.metadata().unwrap_err()), libc::ESTALE);
    assert_eq!(fs::read(m.at("f")).unwrap(), b"abc", "a fresh open sees the durable state");
}

#[test]
fn a_process_working_inside_a_directory_gets_estale_after_a_cut() {
    let m = Mounted::new();
    fs::create_dir(m.at("dir")).unwrap();
    m.sync_dir("");
    m.durable_file("dir/f", b"abc");
    let script = "read _ && cat f";
    let mut shell = Command::new("sh")
        .args(["-c", script])
        .current_dir(m.at("dir"))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    m.fs.power_cut();
    writeln!(shell.stdin.take().unwrap()).unwrap();
    let output = shell.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Stale file handle"), "{stderr}");
}

#[test]
fn stat_shows_size_links_mode_and_inode_numbers_that_stay_put() {
    let m = Mounted::new();
    fs::create_dir(m.at("dir")).unwrap();
    fs::create_dir(m.at("dir/sub")).unwrap();
    File::create(m.at("dir/f")).unwrap().write_all(b"12345").unwrap();
    fs::set_permissions(m.at("dir/f"), fs::Permissions::from_mode(0o640)).unwrap();

    let file = fs::metadata(m.at("dir/f")).unwrap();
    assert_eq!((file.len(), file.nlink(), file.mode()), (5, 1, libc::S_IFREG | 0o640));
    assert_eq!(fs::metadata(m.at("dir")).unwrap().nlink(), 3, "itself, its entry and sub's ..");

    let ino = file.ino();
    fs::rename(m.at("dir/f"), m.at("g")).unwrap();
    m.append("g").write_all(b"6").unwrap();
    let handle = File::open(m.at("g")).unwrap();
    assert_eq!(handle.metadata().unwrap().ino(), ino, "fstat agrees");
    assert_eq!(fs::metadata(m.at("g")).unwrap().ino(), ino, "renames and writes keep the number");
    assert_eq!(handle.metadata().unwrap().len(), 6);
}

#[test]
fn appends_go_to_the_end_even_after_another_descriptor_grew_the_file() {
    let m = Mounted::new();
    File::create(m.at("f")).unwrap();
    let mut appender = m.append("f");
    let other = OpenOptions::new().write(true).open(m.at("f")).unwrap();
    appender.write_all(b"a").unwrap();
    other.write_all_at(b"XYZ", 1).unwrap();
    appender.write_all(b"b").unwrap();
    assert_eq!(fs::read(m.at("f")).unwrap(), b"aXYZb");
}

#[test]
fn pwrite_and_writev_land_where_asked() {
    let m = Mounted::new();
    let mut file =
        OpenOptions::new().create(true).truncate(true).read(true).write(true).open(m.at("f")).unwrap();
    let written = file.write_vectored(&[IoSlice::new(b"head,"), IoSlice::new(b"tail")]).unwrap();
    assert_eq!(written, 9);
    file.write_all_at(b"!", 12).unwrap();
    assert_eq!(fs::read(m.at("f")).unwrap(), b"head,tail\0\0\0!");
    let mut middle = [0; 4];
    file.read_exact_at(&mut middle, 5).unwrap();
    assert_eq!(&middle, b"tail");
}

#[test]
fn readdir_lists_the_current_entries_of_a_directory() {
    let m = Mounted::new();
    fs::create_dir(m.at("d")).unwrap();
    for name in ["c", "a", "b"] {
        File::create(m.at(&format!("d/{name}"))).unwrap();
    }
    fs::remove_file(m.at("d/b")).unwrap();
    let mut names: Vec<String> =
        fs::read_dir(m.at("d")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["a", "c"]);
}

#[test]
fn a_large_directory_lists_every_entry_once() {
    let m = Mounted::new();
    let names: Vec<String> = (0..600).map(|i| format!("a-rather-long-file-name-{i:04}")).collect();
    for name in &names {
        File::create(m.at(name)).unwrap();
    }
    let mut listed: Vec<String> = fs::read_dir(m.fs.mountpoint())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, names);
}

#[test]
fn errors_are_the_posix_ones() {
    let m = Mounted::new();
    fs::create_dir_all(m.at("d/e")).unwrap();
    File::create(m.at("f")).unwrap();
    assert_eq!(errno(fs::remove_dir(m.at("d")).unwrap_err()), libc::ENOTEMPTY);
    assert_eq!(errno(fs::remove_file(m.at("missing")).unwrap_err()), libc::ENOENT);
    assert_eq!(errno(fs::rename(m.at("d"), m.at("d/e/d")).unwrap_err()), libc::EINVAL);
    assert_eq!(errno(fs::rename(m.at("f"), m.at("d")).unwrap_err()), libc::EISDIR);
    assert_eq!(errno(fs::create_dir(m.at("d")).unwrap_err()), libc::EEXIST);
    let exclusive = OpenOptions::new().write(true).create_new(true).open(m.at("f"));
    assert_eq!(errno(exclusive.unwrap_err()), libc::EEXIST);
    assert_eq!(errno(std::os::unix::fs::symlink("f", m.at("link")).unwrap_err()), libc::EPERM);
}

#[test]
fn an_unlinked_open_file_stays_readable_and_writable() {
    let m = Mounted::new();
    let mut file =
        OpenOptions::new().create(true).truncate(true).read(true).write(true).open(m.at("f")).unwrap();
    file.write_all(b"before").unwrap();
    fs::remove_file(m.at("f")).unwrap();
    file.write_all(b", after").unwrap();
    let mut bytes = Vec::new();
    std::io::Seek::rewind(&mut file).unwrap();
    file.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b"before, after");
    assert_eq!(file.metadata().unwrap().nlink(), 0);
}

#[test]
fn dropping_the_mount_while_a_file_is_open_detaches_it() {
    let m = Mounted::new();
    let mountpoint = m.fs.mountpoint().to_owned();
    let file = File::create(m.at("f")).unwrap();
    drop(m);
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&format!(" {} ", mountpoint.display())), "no mount left at {mountpoint:?}");
    drop(file);
}

#[test]
fn a_mount_refuses_a_mountpoint_inside_the_backing_folder() {
    let disk = tempfile::tempdir().unwrap();
    fs::create_dir(disk.path().join("mnt")).unwrap();
    let refused = LazyFs::mount(disk.path(), &disk.path().join("mnt"));
    assert!(matches!(refused, Err(Error::Overlap { .. })), "{refused:?}");
}

#[test]
fn a_mount_refuses_a_backing_folder_that_holds_a_symlink() {
    let disk = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("elsewhere", disk.path().join("link")).unwrap();
    let refused = LazyFs::mount(disk.path(), mnt.path());
    assert!(matches!(refused, Err(Error::Unsupported { .. })), "{refused:?}");
}
