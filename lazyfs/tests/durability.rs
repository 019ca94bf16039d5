//! What survives a power cut, one rule of the durability table at a time,
//! through a real mount. After each cut the disk (the backing folder) and
//! the mount must agree.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::{snapshot, Mounted};

/// The disk and the mount show the same tree.
fn assert_mount_shows_disk(m: &Mounted) {
    assert_eq!(snapshot(m.fs.mountpoint()), snapshot(m.fs.backing()));
}

#[test]
fn a_write_without_fsync_is_gone_after_a_cut() {
    let m = Mounted::new();
    m.durable_file("f", b"");
    m.append("f").write_all(b"unsynced").unwrap();
    assert_eq!(fs::read(m.at("f")).unwrap(), b"unsynced", "programs see it at once");
    assert_eq!(fs::read(m.on_disk("f")).unwrap(), b"", "the disk does not");
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("f")).unwrap(), b"");
    assert_mount_shows_disk(&m);
}

#[test]
fn a_write_with_fsync_survives_a_cut_and_the_disk_agrees_byte_for_byte() {
    let m = Mounted::new();
    m.durable_file("f", b"");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut file = m.append("f");
    file.write_all(&bytes).unwrap();
    file.sync_all().unwrap();
    assert_eq!(fs::read(m.on_disk("f")).unwrap(), bytes, "synced bytes are on the disk at once");
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("f")).unwrap(), bytes);
    assert_mount_shows_disk(&m);
}

#[test]
fn a_write_with_fdatasync_survives_a_cut() {
    let m = Mounted::new();
    m.durable_file("f", b"old");
    let file = OpenOptions::new().write(true).open(m.at("f")).unwrap();
    file.write_all_at(b"new bytes", 0).unwrap();
    file.sync_data().unwrap();
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("f")).unwrap(), b"new bytes");
    assert_eq!(fs::read(m.on_disk("f")).unwrap(), b"new bytes");
}

#[test]
fn an_append_after_a_sync_is_cut_back_to_the_synced_length() {
    let m = Mounted::new();
    m.durable_file("journal", b"one\n");
    let mut journal = m.append("journal");
    journal.write_all(b"two\n").unwrap();
    journal.sync_data().unwrap();
    journal.write_all(b"three\n").unwrap();
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("journal")).unwrap(), b"one\ntwo\n");
    assert_mount_shows_disk(&m);
}

#[test]
fn a_created_file_is_gone_after_a_cut_without_a_directory_sync_even_if_fsynced() {
    let m = Mounted::new();
    m.create_synced("f", b"synced bytes");
    assert!(!m.on_disk("f").exists());
    m.fs.power_cut();
    assert!(!m.at("f").exists());
    assert_mount_shows_disk(&m);
}

#[test]
fn a_created_file_survives_with_its_synced_bytes_once_its_directory_is_synced() {
    let m = Mounted::new();
    m.create_synced("f", b"synced");
    m.append("f").write_all(b" and not").unwrap();
    m.sync_dir("");
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("f")).unwrap(), b"synced");
    assert_mount_shows_disk(&m);
}

#[test]
fn a_created_file_never_fsynced_survives_a_directory_sync_empty() {
    let m = Mounted::new();
    File::create(m.at("f")).unwrap().write_all(b"never synced").unwrap();
    m.sync_dir("");
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("f")).unwrap(), b"");
}

#[test]
fn a_rename_without_a_directory_sync_is_undone() {
    let m = Mounted::new();
    m.durable_file("old", b"durable");
    m.append("old").write_all(b", then not").unwrap();
    fs::rename(m.at("old"), m.at("new")).unwrap();
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("old")).unwrap(), b"durable", "the old name is back with its durable bytes");
    assert!(!m.at("new").exists());
    assert_mount_shows_disk(&m);
}

#[test]
fn a_rename_with_a_directory_sync_survives() {
    let m = Mounted::new();
    m.durable_file("old", b"durable");
    fs::rename(m.at("old"), m.at("new")).unwrap();
    m.sync_dir("");
    assert!(!m.on_disk("old").exists());
    m.fs.power_cut();
    assert!(!m.at("old").exists());
    assert_eq!(fs::read(m.at("new")).unwrap(), b"durable");
    assert_mount_shows_disk(&m);
}

#[test]
fn a_rename_over_an_existing_file_replaces_it_only_once_the_directory_is_synced() {
    let m = Mounted::new();
    m.durable_file("target", b"old target");
    m.durable_file("tmp", b"new contents");
    fs::rename(m.at("tmp"), m.at("target")).unwrap();
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("target")).unwrap(), b"old target", "undone without the sync");
    assert_eq!(fs::read(m.at("tmp")).unwrap(), b"new contents");

    fs::rename(m.at("tmp"), m.at("target")).unwrap();
    m.sync_dir("");
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("target")).unwrap(), b"new contents");
    assert!(!m.at("tmp").exists());
    assert_mount_shows_disk(&m);
}

#[test]
fn the_write_sync_rename_sync_idiom_replaces_a_file_atomically() {
    let m = Mounted::new();
    m.durable_file("journal", b"version 1");
    m.create_synced("journal.tmp", b"version 2");
    fs::rename(m.at("journal.tmp"), m.at("journal")).unwrap();
    m.sync_dir("");
    m.fs.power_cut();
    assert_eq!(snapshot(m.fs.backing()), [("journal".to_owned(), b"version 2".to_vec())].into());
}

#[test]
fn a_rename_across_directories_survives_once_the_target_directory_is_synced() {
    let m = Mounted::new();
    fs::create_dir(m.at("a")).unwrap();
    fs::create_dir(m.at("b")).unwrap();
    m.sync_dir("");
    m.durable_file("a/f", b"moving");
    fs::rename(m.at("a/f"), m.at("b/f")).unwrap();
    m.sync_dir("b");
    m.fs.power_cut();
    assert!(!m.at("a/f").exists(), "the old name went with the new one");
    assert_eq!(fs::read(m.at("b/f")).unwrap(), b"moving");
    assert_mount_shows_disk(&m);
}

#[test]
fn an_unlink_without_a_directory_sync_is_undone() {
    let m = Mounted::new();
    m.durable_file("f", b"still here");
    fs::remove_file(m.at("f")).unwrap();
    assert!(m.on_disk("f").exists());
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("f")).unwrap(), b"still here");

    fs::remove_file(m.at("f")).unwrap();
    m.sync_dir("");
    m.fs.power_cut();
    assert!(!m.at("f").exists());
    assert_mount_shows_disk(&m);
}

#[test]
fn an_ftruncate_without_fsync_is_undone() {
    let m = Mounted::new();
    m.durable_file("f", b"0123456789");
    let file = OpenOptions::new().write(true).open(m.at("f")).unwrap();
    file.set_len(3).unwrap();
    assert_eq!(fs::metadata(m.at("f")).unwrap().len(), 3);
    drop(file);
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("f")).unwrap(), b"0123456789");

    let file = OpenOptions::new().write(true).open(m.at("f")).unwrap();
    file.set_len(3).unwrap();
    file.sync_all().unwrap();
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("f")).unwrap(), b"012");
}

#[test]
fn an_open_with_o_trunc_without_fsync_is_undone() {
    let m = Mounted::new();
    m.durable_file("f", b"durable");
    File::create(m.at("f")).unwrap().write_all(b"x").unwrap();
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("f")).unwrap(), b"durable");
}

#[test]
fn a_new_directory_and_its_file_survive_when_synced_from_the_inside_out() {
    let m = Mounted::new();
    fs::create_dir(m.at("dir")).unwrap();
    m.create_synced("dir/f", b"inside");
    m.sync_dir("dir");
    m.sync_dir("");
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("dir/f")).unwrap(), b"inside");
    assert_mount_shows_disk(&m);
}

#[test]
fn a_new_directory_is_gone_after_a_cut_when_its_parent_was_not_synced() {
    let m = Mounted::new();
    fs::create_dir(m.at("dir")).unwrap();
    m.create_synced("dir/f", b"inside");
    m.sync_dir("dir");
    m.fs.power_cut();
    assert!(!m.at("dir").exists());
    assert_mount_shows_disk(&m);
}

#[test]
fn a_removed_directory_is_back_after_a_cut_when_its_parent_was_not_synced() {
    let m = Mounted::new();
    fs::create_dir(m.at("dir")).unwrap();
    m.sync_dir("");
    fs::remove_dir(m.at("dir")).unwrap();
    m.fs.power_cut();
    assert!(m.at("dir").is_dir());
}

#[test]
fn files_already_on_the_disk_are_durable_from_the_start() {
    let m = Mounted::with_disk(|disk| {
        fs::create_dir(disk.join("round")).unwrap();
        fs::write(disk.join("round/bets.csv"), b"1,2,3\n").unwrap();
    });
    m.append("round/bets.csv").write_all(b"4,5,6\n").unwrap();
    fs::remove_file(m.at("round/bets.csv")).unwrap();
    m.fs.power_cut();
    assert_eq!(fs::read(m.at("round/bets.csv")).unwrap(), b"1,2,3\n");
    assert_mount_shows_disk(&m);
}

#[test]
fn a_torn_cut_keeps_a_block_aligned_prefix_of_the_appended_bytes() {
    let m = Mounted::new();
    m.durable_file("log", b"synced\n");
    m.append("log").write_all(&[b'x'; 20_000]).unwrap();
    m.fs.power_cut_torn(3).unwrap();
    let survived = fs::read(m.at("log")).unwrap();
    assert!(survived.starts_with(b"synced\n"));
    let len = survived.len();
    assert!(len == 7 || len == 20_007 || len.is_multiple_of(4096), "cut at a boundary, not at {len}");
    assert_mount_shows_disk(&m);
}

#[test]
fn a_torn_cut_keeps_the_same_bytes_for_the_same_seed() {
    let survivors: Vec<usize> = (0..2)
        .map(|_| {
            let m = Mounted::new();
            m.durable_file("log", b"");
            m.append("log").write_all(&[b'x'; 50_000]).unwrap();
            m.fs.power_cut_torn(11).unwrap();
            fs::read(m.at("log")).unwrap().len()
        })
        .collect();
    assert_eq!(survivors[0], survivors[1]);
}

#[test]
fn the_stats_count_writes_syncs_and_cuts() {
    let m = Mounted::new();
    m.durable_file("f", b"abc");
    m.fs.power_cut();
    let stats = m.fs.stats();
    assert_eq!((stats.file_syncs, stats.dir_syncs, stats.power_cuts), (1, 1, 1));
    assert_eq!(stats.bytes_written, 3);
    assert_eq!(stats.backing_errors, 0);
}
