//! Whole rounds of the real binaries under faults, each checked against
//! the agencies' files: 0 bets lost, 0 duplicated, 0 extra, and every
//! agency told exactly its winners. `make chaos` runs the same with many
//! more faults.

use std::time::Duration;

use testkit::chaos::{run_round, Faults, Outcome, Plan};
use testkit::tmpfs::{free_bytes, Tmpfs};

/// Five agencies, the last (started once the first faults are in) small.
const ROWS: [usize; 5] = [6000, 5000, 4000, 3000, 600];

fn assert_exact(plan: &Plan) -> Outcome {
    match run_round(plan) {
        Ok(outcome) => {
            assert!(outcome.injected.total() >= plan.faults.total());
            eprintln!(
                "{} in {:?}: {}; {:?}",
                outcome.injected, outcome.elapsed, outcome.report, outcome.kills
            );
            outcome
        }
        Err(why) => panic!("{why}"),
    }
}

#[test]
fn twenty_server_kills_at_random_moments_lose_and_duplicate_nothing() {
    let faults = Faults { server_kills: 20, ..Faults::default() };
    let outcome = assert_exact(&Plan::new(ROWS.to_vec(), faults, 1));
    assert!(outcome.injected.server_kills >= 20);
    let kills = outcome.kills;
    assert!(kills.upload > 0 && kills.waiting > 0, "kills during uploads and while agencies wait: {kills:?}");
}

#[test]
fn agencies_killed_and_started_again_with_other_batch_sizes_store_every_bet_once() {
    let faults = Faults { client_kills: 15, ..Faults::default() };
    assert_exact(&Plan::new(ROWS.to_vec(), faults, 2));
}

#[test]
fn connections_cut_or_left_half_open_lose_and_duplicate_nothing() {
    let faults = Faults { cuts: 12, freezes: 4, ..Faults::default() };
    assert_exact(&Plan { interval_ms: (40, 160), ..Plan::new(ROWS.to_vec(), faults, 3) });
}

#[test]
fn every_fault_at_once() {
    let faults = Faults { server_kills: 8, client_kills: 8, cuts: 6, freezes: 2 };
    assert_exact(&Plan::new(ROWS.to_vec(), faults, 4));
}

/// A full disk: the server's storage on a small tmpfs, filled up while the
/// agencies upload, then freed. Needs root (to mount); skipped otherwise.
#[test]
fn a_full_disk_that_frees_up_loses_and_duplicates_nothing() {
    let Some(disk) = Tmpfs::mount("1m") else {
        eprintln!("skipped: mounting a tmpfs needs root (run the tests as root to check a full disk)");
        return;
    };
    // Leave 96 KiB free: room for the round to start and for a few
    // batches, far from room for the ~1 MiB of bets.
    let filler = disk.fill_but(96 * 1024);
    // Once the bets have filled the disk, leave it full for a second
    // (the agencies keep retrying), then free it.
    let freeing = {
        let (filler, mount) = (filler.clone(), disk.path().to_owned());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while free_bytes(&mount) > 8 * 1024 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_secs(1));
            std::fs::remove_file(&filler).unwrap();
        })
    };
    let mut plan = Plan::new(vec![3000, 3000, 3000, 3000, 600], Faults::default(), 5);
    plan.storage_dir = Some(disk.path().join("round"));
    let outcome = run_round(&plan);
    freeing.join().unwrap();
    match outcome {
        Ok(outcome) => {
            assert!(outcome.storage_failures > 0, "the disk never filled up");
            eprintln!("{} groups refused on a full disk: {}", outcome.storage_failures, outcome.report);
        }
        Err(why) => panic!("{why}"),
    }
}
