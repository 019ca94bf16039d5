//! Power cuts after every single operation of a short round, on a
//! simulated disk that loses what was not synced: whatever the round had
//! told its agencies is on the disk after the cut, the round reopens, and
//! finishes exact when the agencies send everything again.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::bet::BetRef;
use crate::progress::Progress;
use crate::round::rules::{Answer, FinishOutcome, Request, Round, StoreOutcome};
use crate::round::EncodedBatch;
use crate::storage::disk::sim::SimDisk;
use crate::storage::write_row;

const AGENCIES: u32 = 2;

/// Bet `ordinal` of `agency`, every third one a winner.
fn fields(agency: u32, ordinal: u64) -> [String; 5] {
    let number = if ordinal.is_multiple_of(3) { 7574 } else { ordinal };
    ["Ana".into(), "Paz".into(), format!("{agency}{ordinal:04}"), "1999-03-17".into(), number.to_string()]
}

fn store(agency: u32, first: u64, count: u64) -> Request {
    let bets: Vec<[String; 5]> = (first..first + count).map(|o| fields(agency, o)).collect();
    let borrowed = bets.iter().map(|[a, b, c, d, e]| [a.as_str(), b, c, d, e]);
    Request::Store { agency, batch: EncodedBatch::encode(agency, first, borrowed, 1024).unwrap() }
}

/// The round the agencies play: groups of requests, the draw at the end.
fn script() -> Vec<Vec<Request>> {
    vec![
        vec![store(1, 0, 3), store(2, 0, 2)],
        vec![store(1, 3, 2), Request::Hello { agency: 2 }],
        vec![store(2, 2, 4), Request::Finish { agency: 1, bets: 5 }],
        vec![store(2, 6, 1)],
        vec![Request::Finish { agency: 2, bets: 7 }],
    ]
}

/// The progress of the first `bets` bets of `agency`.
fn prefix(agency: u32, bets: u64) -> Progress {
    let mut progress = Progress::default();
    for ordinal in 0..bets {
        let [first, last, document, birthdate, number] = fields(agency, ordinal);
        let bet = BetRef::parse([&first, &last, &document, &birthdate, &number]).unwrap();
        let mut row = Vec::new();
        write_row(&mut row, agency, &bet);
        progress.push(&row);
    }
    progress
}

/// What the round told its agencies before the power went out.
#[derive(Debug, Default)]
struct Told {
    acked: [u64; AGENCIES as usize],
    finished: Vec<u32>,
    drawn: bool,
}

/// Plays the script on `disk` until it ends or the disk fails; returns
/// what was told.
fn play(disk: &Arc<dyn Disk>, bets: &Path) -> Told {
    let mut told = Told::default();
    let Ok((files, state, _)) = open_on(disk, bets, AGENCIES) else { return told };
    let mut round = Round::new(files, state);
    if round.draw_if_complete().is_err() {
        return told;
    }
    for mut group in script() {
        let Ok(done) = round.commit(&mut group) else { return told };
        for (request, answer) in group.iter().zip(&done.answers) {
            let agency = request.agency();
            match answer {
                Answer::Store(StoreOutcome::Stored | StoreOutcome::AlreadyStored) => {
                    let end = match request {
                        Request::Store { batch, .. } => batch.first() + batch.bets(),
                        _ => unreachable!("a store's answer"),
                    };
                    let acked = &mut told.acked[agency as usize - 1];
                    *acked = (*acked).max(end);
                }
                Answer::Finish(FinishOutcome::Counted | FinishOutcome::AlreadyFinished) => {
                    told.finished.push(agency)
                }
                _ => {}
            }
        }
        told.drawn |= done.drawn;
    }
    told
}

/// Every agency resumes where the round's bets of it end, sends the rest
/// and finishes, as agencies do when they reconnect.
fn resume(disk: &Arc<dyn Disk>, bets: &Path) {
    let (files, state, _) = open_on(disk, bets, AGENCIES).unwrap();
    let mut round = Round::new(files, state);
    round.draw_if_complete().unwrap();
    for (agency, total) in [(1, 5), (2, 7)] {
        let held = round.state().agency(agency).progress.bets();
        let mut group = vec![];
        if held < total {
            group.push(store(agency, held, total - held));
        }
        group.push(Request::Finish { agency, bets: total });
        round.commit(&mut group).unwrap();
    }
}

/// Reopens the round on `disk` after a cut and holds it to `told`.
fn check(disk: &Arc<dyn Disk>, bets: &Path, told: &Told, at: u64) {
    let (files, state, _) =
        open_on(disk, bets, AGENCIES).unwrap_or_else(|e| panic!("after {at} operations: {e}"));
    for agency in 1..=AGENCIES {
        let held = state.agency(agency).progress;
        let acked = told.acked[agency as usize - 1];
        assert!(held.bets() >= acked, "after {at} operations: agency {agency} acked {acked}, holds {held}");
        assert_eq!(
            held,
            prefix(agency, held.bets()),
            "after {at} operations: agency {agency}'s first bets, once each"
        );
    }
    for agency in &told.finished {
        assert!(
            state.agency(*agency).finished,
            "after {at} operations: agency {agency} was told it finished"
        );
    }
    assert!(!told.drawn || state.drawn(), "after {at} operations: the draw was told");
    drop(files);
}

#[test]
fn a_power_cut_after_any_operation_loses_nothing_the_round_told() {
    let bets = Path::new("/round/bets.csv");
    let whole = SimDisk::default();
    let told = play(&(Arc::new(whole.clone()) as Arc<dyn Disk>), bets);
    assert!(told.drawn, "the script plays a whole round");
    let operations = whole.operations();
    assert!(operations > 10, "{operations} operations");
    for torn in [false, true] {
        for at in 0..=operations {
            let sim = SimDisk::default();
            let disk: Arc<dyn Disk> = Arc::new(sim.clone());
            sim.power_out_after(at);
            let told = play(&disk, bets);
            sim.power_cut(torn);
            check(&disk, bets, &told, at);
            // The agencies resume from what the round holds: it ends exact.
            resume(&disk, bets);
            let (_, state, _) = open_on(&disk, bets, AGENCIES).unwrap();
            assert!(state.drawn(), "after {at} operations the round still draws");
            assert_eq!(state.agency(1).progress, prefix(1, 5), "after {at} operations");
            assert_eq!(state.agency(2).progress, prefix(2, 7), "after {at} operations");
            assert_eq!(state.winners(), 5, "after {at} operations");
        }
    }
}
