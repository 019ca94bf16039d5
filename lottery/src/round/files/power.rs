//! Power cuts after every single operation of two short rounds (the first
//! closed by the operator, then moved to `rounds/1/` as the second opens),
//! on a simulated disk that loses what was not synced: whatever the rounds
//! had told their agencies is on the disk after the cut, the rounds reopen,
//! and finish exact when the agencies send everything again.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::bet::BetRef;
use crate::progress::Progress;
use crate::round::rules::{Answer, Committed, FinishOutcome, Request, Round, StoreOutcome};
use crate::round::{CloseReason, EncodedBatch, Shelf};
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

/// Round 1: agency 1 finishes, agency 2 is still uploading when the
/// operator closes the round, and its next batch comes too late.
fn first_round() -> Vec<Vec<Request>> {
    vec![
        vec![store(1, 0, 3), store(2, 0, 2)],
        vec![store(1, 3, 2), Request::Hello { agency: 2 }],
        vec![store(2, 2, 4), Request::Finish { agency: 1, bets: 5 }],
        vec![store(2, 6, 1), Request::Close { reason: CloseReason::Operator }],
        vec![store(2, 7, 1)],
    ]
}

/// Round 2, opened after round 1 drew: both agencies finish.
fn second_round() -> Vec<Vec<Request>> {
    vec![
        vec![store(1, 0, 2), store(2, 0, 1)],
        vec![Request::Finish { agency: 1, bets: 2 }, Request::Finish { agency: 2, bets: 1 }],
    ]
}

/// What each round holds once played whole: each agency's bets, and
/// whether it finished.
const FIRST: [(u64, bool); 2] = [(5, true), (7, false)];
const SECOND: [(u64, bool); 2] = [(2, true), (1, true)];

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

/// What one round told its agencies before the power went out.
#[derive(Debug, Default)]
struct Told {
    acked: [u64; AGENCIES as usize],
    finished: Vec<u32>,
    /// The bets it closed with.
    closed: Option<u64>,
    drawn: bool,
}

impl Told {
    /// Takes in what a group's answers told.
    fn hear(&mut self, group: &[Request], done: &Committed) {
        for (request, answer) in group.iter().zip(&done.answers) {
            match (request, answer) {
                (
                    Request::Store { agency, batch },
                    Answer::Store(StoreOutcome::Stored | StoreOutcome::AlreadyStored),
                ) => {
                    let acked = &mut self.acked[*agency as usize - 1];
                    *acked = (*acked).max(batch.first() + batch.bets());
                }
                (
                    Request::Finish { agency, .. },
                    Answer::Finish(FinishOutcome::Counted | FinishOutcome::AlreadyFinished),
                ) => self.finished.push(*agency),
                _ => {}
            }
        }
        self.closed = self.closed.or(done.closed.map(|(_, bets)| bets));
        self.drawn |= done.drawn;
    }

    /// Holds `state` to what was told (`at`: when the power went out).
    fn check(&self, state: &RoundState, at: u64) {
        let round = state.number();
        for agency in 1..=AGENCIES {
            let held = state.agency(agency).progress;
            let acked = self.acked[agency as usize - 1];
            assert!(
                held.bets() >= acked,
                "cut {at}, round {round}: agency {agency} acked {acked}, holds {held}"
            );
            assert_eq!(
                held,
                prefix(agency, held.bets()),
                "cut {at}, round {round}: agency {agency}'s bets, once each"
            );
        }
        for agency in &self.finished {
            assert!(
                state.agency(*agency).finished,
                "cut {at}, round {round}: agency {agency} was told it finished"
            );
        }
        if let Some(bets) = self.closed {
            assert_eq!(
                (state.is_open(), state.bets()),
                (false, bets),
                "cut {at}, round {round}: the close was told"
            );
        }
        assert!(!self.drawn || state.drawn(), "cut {at}, round {round}: the draw was told");
    }
}

/// Both rounds as far as they were told, and whether round 2 opened.
#[derive(Debug, Default)]
struct Story {
    rounds: [Told; 2],
    second_opened: bool,
}

/// Plays round 1, opens round 2 and plays it, on `disk`, until the disk
/// fails; returns what was told.
fn play(disk: &Arc<dyn Disk>, bets: &Path) -> Story {
    let mut story = Story::default();
    let Ok((files, state, _)) = open_on(disk, bets, AGENCIES, 1_000) else { return story };
    let mut round = Round::new(files, state);
    for (script, told) in [first_round(), second_round()].into_iter().zip(0..) {
        if told == 1 {
            let Ok(_) = round.open_next(AGENCIES, 2_000) else { return story };
            story.second_opened = true;
        }
        for mut group in script {
            let Ok(done) = round.commit(&mut group) else { return story };
            story.rounds[told].hear(&group, &done);
        }
    }
    story
}

/// Sends what round `state` still lacks of `whole`, as agencies that
/// reconnect do, and closes it as the script does.
fn complete(mut round: Round<RoundFiles>, whole: [(u64, bool); 2]) -> Round<RoundFiles> {
    round.draw_if_due().unwrap();
    if !round.state().is_open() {
        return round;
    }
    for (agency, (total, finishes)) in (1..).zip(whole) {
        let held = round.state().agency(agency).progress.bets();
        let mut group = vec![];
        if held < total {
            group.push(store(agency, held, total - held));
        }
        if finishes && !round.state().agency(agency).finished {
            group.push(Request::Finish { agency, bets: total });
        }
        round.commit(&mut group).unwrap();
    }
    if round.state().is_open() {
        round.commit(&mut [Request::Close { reason: CloseReason::Operator }]).unwrap();
    }
    round
}

/// Holds `state` to `whole`.
fn exact(state: &RoundState, whole: [(u64, bool); 2], at: u64) {
    assert!(state.drawn(), "cut {at}: round {} drew", state.number());
    for (agency, (total, finished)) in (1..).zip(whole) {
        let held = state.agency(agency);
        assert_eq!(
            (held.progress, held.finished),
            (prefix(agency, total), finished),
            "cut {at}: round {}",
            state.number()
        );
    }
}

#[test]
fn a_power_cut_after_any_operation_loses_nothing_the_rounds_told() {
    let bets = Path::new("/lottery/bets.csv");
    let whole = SimDisk::with_dir(Path::new("/lottery"));
    let story = play(&(Arc::new(whole.clone()) as Arc<dyn Disk>), bets);
    assert!(story.second_opened, "the script opens the second round");
    assert!(story.rounds[1].drawn, "the script draws the second round");
    let operations = whole.operations();
    assert!(operations > 20, "{operations} operations");
    for torn in [false, true] {
        for at in 0..=operations {
            let sim = SimDisk::with_dir(Path::new("/lottery"));
            let disk: Arc<dyn Disk> = Arc::new(sim.clone());
            sim.power_out_after(at);
            let story = play(&disk, bets);
            sim.power_cut(torn);

            let (files, state, _) =
                open_on(&disk, bets, AGENCIES, 3_000).unwrap_or_else(|e| panic!("cut {at}: {e}"));
            let shelf = Shelf::new(disk.clone(), bets);
            match state.number() {
                1 => assert!(!story.second_opened, "cut {at}: round 2 opened, and is gone"),
                2 => {
                    let first =
                        shelf.drawn(1).unwrap_or_else(|e| panic!("cut {at}: {e}")).expect("round 1 kept");
                    story.rounds[0].check(&first, at);
                    exact(&first, FIRST, at);
                }
                other => panic!("cut {at}: round {other}"),
            }
            story.rounds[state.number() as usize - 1].check(&state, at);

            // The agencies resume from what the rounds hold: they end exact.
            let mut round = Round::new(files, state);
            if round.state().number() == 1 {
                round = complete(round, FIRST);
                exact(round.state(), FIRST, at);
                round.open_next(AGENCIES, 4_000).unwrap();
            }
            let round = complete(round, SECOND);
            exact(round.state(), SECOND, at);
            assert_eq!(round.state().winners(), 2, "cut {at}");
            drop(round);
            let first = shelf.drawn(1).unwrap().unwrap();
            exact(&first, FIRST, at);
            assert_eq!((first.winners(), first.closed()), (5, Some(CloseReason::Operator)), "cut {at}");
        }
    }
}
