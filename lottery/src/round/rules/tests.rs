//! The round's rules against a model: a ledger in memory that can fail on
//! demand, and per-agency counters that say what every answer must be.

use std::collections::VecDeque;
use std::io;

use proptest::prelude::*;

use super::*;
use crate::round::{RoundId, RoundName, RoundState, Stage};
use crate::storage::StorageError;
use crate::WINNING_NUMBER;

/// What the next append that carries something does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disk {
    Works,
    /// Fails and keeps nothing: may be tried again.
    Full,
    /// Fails and leaves an unknown state.
    Breaks,
}

/// A ledger in memory: the rows and facts it holds durably.
#[derive(Debug, Default)]
struct MemoryLedger {
    rows: Vec<u8>,
    entries: Vec<Entry>,
    /// What the next appends do; an empty plan works.
    plan: VecDeque<Disk>,
}

impl MemoryLedger {
    fn next(&mut self) -> Result<(), AppendError> {
        let error = || StorageError::io(std::path::Path::new("memory"), io::Error::other("planned"));
        match self.plan.pop_front().unwrap_or(Disk::Works) {
            Disk::Works => Ok(()),
            Disk::Full => Err(AppendError::Transient(error())),
            Disk::Breaks => Err(AppendError::Fatal(error())),
        }
    }

    /// The ordinals stored for `agency`, in the order of the ledger.
    fn ordinals(&self, agency: u32) -> Vec<u64> {
        let prefix = format!("{agency},");
        String::from_utf8(self.rows.clone())
            .unwrap()
            .lines()
            .filter(|row| row.starts_with(&prefix))
            .map(|row| row.split(',').nth(3).unwrap()[1..].parse().unwrap())
            .collect()
    }
}

impl Ledger for MemoryLedger {
    fn append_bets(&mut self, rows: &[&[u8]]) -> Result<(), AppendError> {
        if rows.iter().all(|r| r.is_empty()) {
            return Ok(());
        }
        self.next()?;
        rows.iter().for_each(|r| self.rows.extend_from_slice(r));
        Ok(())
    }

    fn record(&mut self, entries: &[Entry]) -> Result<(), AppendError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.next()?;
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    fn open_next(&mut self, _: &RoundState, _: RoundName, _: u32) -> Result<(), crate::round::RoundError> {
        self.rows.clear();
        self.entries.clear();
        Ok(())
    }
}

/// Bet `ordinal` of `agency`: its document is the agency's digit and
/// the ordinal (so it says whose and which), and
/// every fifth bet wins.
fn fields(agency: u32, ordinal: u64) -> [String; 5] {
    let number = if ordinal.is_multiple_of(5) { WINNING_NUMBER } else { 1 };
    ["Ana".into(), "Paz".into(), format!("{agency}{ordinal:06}"), "1999-03-17".into(), number.to_string()]
}

fn batch(agency: u32, first: u64, count: u64) -> EncodedBatch {
    let bets: Vec<[String; 5]> = (first..first + count).map(|o| fields(agency, o)).collect();
    let borrowed = bets.iter().map(|[a, b, c, d, e]| [a.as_str(), b, c, d, e]);
    EncodedBatch::encode(agency, first, borrowed, 4096).unwrap()
}

fn store(agency: u32, first: u64, count: u64) -> Request {
    Request::Store { agency, batch: batch(agency, first, count) }
}

fn round(agencies: u32) -> Round<MemoryLedger> {
    Round::new(
        MemoryLedger::default(),
        RoundState::new(RoundName { number: 1, id: RoundId(1), opened: 0 }, agencies),
    )
}

fn stored(answer: &Answer) -> bool {
    matches!(answer, Answer::Store(StoreOutcome::Stored))
}

#[test]
fn a_batch_that_starts_where_the_agencys_bets_end_is_stored() {
    let mut round = round(1);
    let done = round.commit(&mut [store(1, 0, 3), store(1, 3, 2)]).unwrap();
    assert!(done.answers.iter().all(stored), "{:?}", done.answers);
    assert_eq!(round.ledger().ordinals(1), [0, 1, 2, 3, 4]);
    assert_eq!(round.state().agency(1).progress.bets(), 5);
}

#[test]
fn a_batch_sent_again_is_acknowledged_and_stores_nothing() {
    let mut round = round(1);
    round.commit(&mut [store(1, 0, 3)]).unwrap();
    let done = round.commit(&mut [store(1, 0, 3), store(1, 1, 2), store(1, 3, 1), store(1, 3, 1)]).unwrap();
    let kinds: Vec<&str> = done
        .answers
        .iter()
        .map(|a| match a {
            Answer::Store(StoreOutcome::AlreadyStored) => "again",
            Answer::Store(StoreOutcome::Stored) => "stored",
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["again", "again", "stored", "again"], "within a group, the earlier one counts");
    assert_eq!(round.ledger().ordinals(1), [0, 1, 2, 3]);
}

#[test]
fn a_batch_that_skips_or_overlaps_is_out_of_sequence() {
    let mut round = round(1);
    round.commit(&mut [store(1, 0, 3)]).unwrap();
    let done = round.commit(&mut [store(1, 4, 1), store(1, 2, 3)]).unwrap();
    for answer in &done.answers {
        assert!(matches!(answer, Answer::Store(StoreOutcome::OutOfSequence { stored: 3 })), "{answer:?}");
    }
    assert_eq!(round.ledger().ordinals(1), [0, 1, 2]);
}

#[test]
fn finished_counts_only_with_exactly_the_bets_held_and_nothing_is_stored_after_it() {
    let mut round = round(2);
    let done = round.commit(&mut [store(1, 0, 2), Request::Finish { agency: 1, bets: 3 }]).unwrap();
    assert!(matches!(
        done.answers[1],
        Answer::Finish(FinishOutcome::OutOfSequence { claimed: 3, stored: 2 })
    ));
    let done = round.commit(&mut [Request::Finish { agency: 1, bets: 2 }, store(1, 2, 1)]).unwrap();
    assert!(matches!(done.answers[0], Answer::Finish(FinishOutcome::Counted)));
    assert!(matches!(done.answers[1], Answer::Store(StoreOutcome::AlreadyFinished)));
    assert_eq!(done.finished, [(1, 2)]);
    let done = round.commit(&mut [Request::Finish { agency: 1, bets: 2 }]).unwrap();
    assert!(matches!(done.answers[0], Answer::Finish(FinishOutcome::AlreadyFinished)));
    assert!(!done.drawn && !round.state().drawn());
}

#[test]
fn the_last_finished_draws_in_the_same_append() {
    let mut round = round(2);
    round.commit(&mut [store(1, 0, 6), store(2, 0, 1), Request::Finish { agency: 1, bets: 6 }]).unwrap();
    let appends = round.ledger().entries.len();
    let done = round.commit(&mut [Request::Finish { agency: 2, bets: 1 }]).unwrap();
    assert!(done.drawn);
    let last: Vec<Entry> = round.ledger().entries[appends..].to_vec();
    let closed = Entry::Closed { reason: CloseReason::AllFinished, bets: 7 };
    assert!(
        matches!(last[..], [Entry::Finished { agency: 2, .. }, c, Entry::Drawn { winners: 3 }] if c == closed),
        "{last:?}"
    );
    assert_eq!(done.closed, Some((CloseReason::AllFinished, 7)));
    assert_eq!(
        round.take_winners(),
        [(1, vec!["1000000".to_owned(), "1000005".to_owned()]), (2, vec!["2000000".to_owned()])]
    );
}

#[test]
fn a_hello_answers_with_the_state_right_after_the_requests_before_it() {
    let mut round = round(1);
    let done = round.commit(&mut [store(1, 0, 2), Request::Hello { agency: 1 }]).unwrap();
    let Answer::Welcome(first) = done.answers[1] else { panic!() };
    let done =
        round.commit(&mut [Request::Finish { agency: 1, bets: 2 }, Request::Hello { agency: 1 }]).unwrap();
    let Answer::Welcome(second) = done.answers[1] else { panic!() };
    assert_eq!((first.progress.bets(), first.finished), (2, false));
    assert_eq!((second.progress.bets(), second.finished), (2, true));
}

#[test]
#[should_panic(expected = "a Hello or a Close is the last request of its group")]
fn a_request_after_a_hello_in_its_group_is_a_bug() {
    round(1).commit(&mut [Request::Hello { agency: 1 }, store(1, 0, 1)]).unwrap();
}

#[test]
fn a_full_disk_refuses_the_groups_requests_which_may_be_sent_again() {
    let mut round = round(1);
    round.ledger.plan.push_back(Disk::Full);
    let done = round.commit(&mut [store(1, 0, 2), Request::Finish { agency: 1, bets: 2 }]).unwrap();
    assert!(matches!(done.answers[0], Answer::Store(StoreOutcome::Failed(_))));
    assert!(matches!(done.answers[1], Answer::Finish(FinishOutcome::Failed(_))));
    assert_eq!(done.failures.len(), 1, "one failure, told once");
    assert_eq!(round.state().bets(), 0);
    let done = round.commit(&mut [store(1, 0, 2), Request::Finish { agency: 1, bets: 2 }]).unwrap();
    assert!(stored(&done.answers[0]) && done.drawn);
}

#[test]
fn a_journal_that_fails_after_the_rows_keeps_the_bets_and_refuses_the_finish() {
    let mut round = round(1);
    round.ledger.plan.extend([Disk::Works, Disk::Full]);
    let done = round.commit(&mut [store(1, 0, 2), Request::Finish { agency: 1, bets: 2 }]).unwrap();
    assert!(stored(&done.answers[0]));
    assert!(matches!(done.answers[1], Answer::Finish(FinishOutcome::Failed(_))));
    assert_eq!((round.state().bets(), round.state().finished()), (2, 0));
}

#[test]
fn a_ledger_left_in_an_unknown_state_stops_the_round_unchanged() {
    let mut round = round(1);
    round.ledger.plan.push_back(Disk::Breaks);
    assert!(round.commit(&mut [store(1, 0, 2)]).is_err());
    assert_eq!(round.state().bets(), 0);
}

#[test]
fn a_round_of_no_agencies_draws_as_it_starts() {
    let mut round = round(0);
    let done = round.draw_if_due().unwrap();
    assert_eq!((done.closed, done.drawn), (Some((CloseReason::AllFinished, 0)), true));
    assert!(!round.draw_if_due().unwrap().drawn, "once");
    let closed = Entry::Closed { reason: CloseReason::AllFinished, bets: 0 };
    assert_eq!(round.ledger().entries, [closed, Entry::Drawn { winners: 0 }]);
}

#[test]
fn a_close_draws_over_every_bet_before_it_and_refuses_what_comes_after() {
    let mut round = round(2);
    round.commit(&mut [store(1, 0, 6), Request::Finish { agency: 1, bets: 6 }, store(2, 0, 2)]).unwrap();
    let done = round.commit(&mut [store(2, 2, 4), Request::Close { reason: CloseReason::Operator }]).unwrap();
    assert!(stored(&done.answers[0]));
    assert!(matches!(
        done.answers[1],
        Answer::Close(CloseOutcome::Closed { reason: CloseReason::Operator, bets: 12 })
    ));
    assert_eq!((done.closed, done.drawn), (Some((CloseReason::Operator, 12)), true));
    let tail = &round.ledger().entries[round.ledger().entries.len() - 2..];
    assert_eq!(
        tail,
        [Entry::Closed { reason: CloseReason::Operator, bets: 12 }, Entry::Drawn { winners: 4 }]
    );
    assert_eq!(round.take_winners().len(), 2, "the unfinished agency's winners count too");

    let mut late = [store(2, 6, 1), Request::Finish { agency: 2, bets: 6 }, Request::Hello { agency: 2 }];
    let done = round.commit(&mut late).unwrap();
    assert!(matches!(done.answers[0], Answer::Store(StoreOutcome::RoundClosed)));
    assert!(matches!(done.answers[1], Answer::Finish(FinishOutcome::RoundClosed)));
    let Answer::Welcome(welcome) = done.answers[2] else { panic!() };
    assert_eq!((welcome.progress.bets(), welcome.stage), (6, Stage::Drawn(CloseReason::Operator)));
    let again = round.commit(&mut [store(2, 0, 6)]).unwrap();
    assert!(
        matches!(again.answers[0], Answer::Store(StoreOutcome::AlreadyStored)),
        "a batch sent again is still acked"
    );
    let twice = round.commit(&mut [Request::Close { reason: CloseReason::Deadline }]).unwrap();
    assert!(matches!(twice.answers[0], Answer::Close(CloseOutcome::NotOpen(CloseReason::Operator))));
    assert!(twice.closed.is_none() && !twice.drawn);
}

#[test]
fn a_close_whose_append_fails_leaves_the_round_open() {
    let mut round = round(1);
    round.ledger.plan.push_back(Disk::Full);
    let done = round.commit(&mut [Request::Close { reason: CloseReason::Deadline }]).unwrap();
    assert!(matches!(done.answers[0], Answer::Close(CloseOutcome::Failed(_))));
    assert!(round.state().is_open() && done.closed.is_none());
    let done = round.commit(&mut [Request::Close { reason: CloseReason::Deadline }]).unwrap();
    assert_eq!(done.closed, Some((CloseReason::Deadline, 0)));
}

#[test]
fn a_close_recorded_without_its_draw_is_drawn_when_due() {
    let mut round = round(2);
    round.commit(&mut [store(1, 0, 1)]).unwrap();
    round.ledger.plan.extend([Disk::Works]);
    round.state.close(CloseReason::Deadline);
    let done = round.draw_if_due().unwrap();
    assert_eq!((done.closed, done.drawn), (None, true));
    assert_eq!(round.ledger().entries.last(), Some(&Entry::Drawn { winners: 1 }));
}

/// One request of a random group, relative to where its agency stands.
#[derive(Debug, Clone)]
enum Step {
    Hello(u32),
    /// A batch of `count` bets starting `offset` from the agency's count.
    Store {
        agency: u32,
        offset: i64,
        count: u64,
    },
    /// Finished with the agency's count plus `offset`.
    Finish {
        agency: u32,
        offset: i64,
    },
    /// The operator closes the round.
    Close,
}

fn step() -> impl Strategy<Value = Step> {
    // A close is rare, so that most rounds get somewhere before it.
    prop_oneof![
        10 => (1u32..=3).prop_map(Step::Hello),
        // Mostly in sequence; now and then again, or ahead.
        40 => (1u32..=3, prop_oneof![6 => Just(0i64), 1 => -3i64..0, 1 => 1i64..3], 1u64..5)
            .prop_map(|(agency, offset, count)| Step::Store { agency, offset, count }),
        10 => (1u32..=3, prop_oneof![3 => Just(0i64), 1 => -1i64..=1])
            .prop_map(|(agency, offset)| Step::Finish { agency, offset }),
        1 => Just(Step::Close),
    ]
}

/// What the model says each agency holds: bets, and whether it finished.
#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    stored: u64,
    finished: bool,
}

/// The model's answer to a request, before the disk has its say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Welcome { stored: u64, finished: bool },
    Stored,
    Again,
    OutOfSequence,
    AfterFinish,
    AfterClose,
    Counted,
    FinishMismatch,
    FinishedBefore,
    FinishAfterClose,
    Closes,
    NotOpen,
}

/// What the model says the round holds.
#[derive(Debug, Clone, Copy, Default)]
struct Model {
    agencies: [Counter; 3],
    closed: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Whatever agencies send, in whatever groups, whenever the operator
    /// closes the round, and whatever the disk does (full now and then):
    /// the answers are the model's, every agency's bets in the ledger are
    /// its first bets in order, each once, and the round closes and draws
    /// exactly once: when the last agency finished or at the close.
    #[test]
    fn the_round_follows_a_model_of_per_agency_counters(
        steps in proptest::collection::vec(step(), 1..120),
        sizes in proptest::collection::vec(1usize..6, 120),
        disk in proptest::collection::vec(prop_oneof![9 => Just(Disk::Works), 1 => Just(Disk::Full)], 0..80),
    ) {
        let mut round = round(3);
        round.ledger.plan = disk.into();
        let mut model = Model::default();
        for steps in groups(&steps, &sizes) {
            let before = round.ledger.plan.clone();
            let (mut group, expected) = plan_group(&steps, &model);
            let done = round.commit(&mut group).unwrap();
            let rows_failed = group_writes_rows(&expected) && before.front() == Some(&Disk::Full);
            check_answers(&done, &expected, rows_failed);
            apply(&mut model, &group, &done);
            for agency in 1..=3u32 {
                let counter = model.agencies[agency as usize - 1];
                let ordinals: Vec<u64> = (0..counter.stored).collect();
                prop_assert_eq!(round.ledger().ordinals(agency), ordinals);
                prop_assert_eq!(round.state().agency(agency).progress.bets(), counter.stored);
                prop_assert_eq!(round.state().agency(agency).finished, counter.finished);
            }
            prop_assert_eq!(round.state().drawn(), model.closed);
            prop_assert_eq!(!round.state().is_open(), model.closed);
            let count = |closes: fn(&Entry) -> bool| round.ledger().entries.iter().filter(|e| closes(e)).count();
            prop_assert_eq!(count(|e| matches!(e, Entry::Closed { .. })), usize::from(model.closed));
            prop_assert_eq!(count(|e| matches!(e, Entry::Drawn { .. })), usize::from(model.closed));
        }
    }
}

/// Cuts `steps` into groups of the given sizes, a `Hello` or a `Close`
/// ending its group the way the server's writer ends it.
fn groups(steps: &[Step], sizes: &[usize]) -> Vec<Vec<Step>> {
    let mut groups = Vec::new();
    let mut sizes = sizes.iter().cycle();
    let mut current = Vec::new();
    let mut size = *sizes.next().unwrap();
    for step in steps {
        current.push(step.clone());
        if current.len() == size || matches!(step, Step::Hello(_) | Step::Close) {
            groups.push(std::mem::take(&mut current));
            size = *sizes.next().unwrap();
        }
    }
    groups.extend((!current.is_empty()).then_some(current));
    groups
}

/// The requests of a group of steps, and what the model expects of each.
fn plan_group(steps: &[Step], model: &Model) -> (Vec<Request>, Vec<Expect>) {
    let closed = model.closed;
    let mut ahead = model.agencies;
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for step in steps {
        let (request, expect) = match *step {
            Step::Hello(agency) => {
                let c = ahead[agency as usize - 1];
                (Request::Hello { agency }, Expect::Welcome { stored: c.stored, finished: c.finished })
            }
            Step::Store { agency, offset, count } => {
                let c = &mut ahead[agency as usize - 1];
                let first = c.stored.saturating_add_signed(offset);
                let expect = if first + count <= c.stored {
                    Expect::Again
                } else if c.finished {
                    Expect::AfterFinish
                } else if closed {
                    Expect::AfterClose
                } else if first != c.stored {
                    Expect::OutOfSequence
                } else {
                    c.stored += count;
                    Expect::Stored
                };
                (store(agency, first, count), expect)
            }
            Step::Finish { agency, offset } => {
                let c = &mut ahead[agency as usize - 1];
                let bets = c.stored.saturating_add_signed(offset);
                let expect = if c.finished {
                    Expect::FinishedBefore
                } else if closed {
                    Expect::FinishAfterClose
                } else if bets != c.stored {
                    Expect::FinishMismatch
                } else {
                    c.finished = true;
                    Expect::Counted
                };
                (Request::Finish { agency, bets }, expect)
            }
            Step::Close => {
                let expect = if closed { Expect::NotOpen } else { Expect::Closes };
                (Request::Close { reason: CloseReason::Operator }, expect)
            }
        };
        requests.push(request);
        expected.push(expect);
    }
    (requests, expected)
}

/// Whether the group has rows to append (then the disk's next answer
/// concerns them).
fn group_writes_rows(expected: &[Expect]) -> bool {
    expected.contains(&Expect::Stored)
}

fn check_answers(done: &Committed, expected: &[Expect], rows_failed: bool) {
    assert_eq!(done.answers.len(), expected.len());
    for (answer, expect) in done.answers.iter().zip(expected) {
        let ok = match (answer, expect) {
            (Answer::Welcome(w), Expect::Welcome { stored, finished }) => {
                // A welcome in a group whose append failed reports what
                // is durable, which the model's optimistic count may exceed.
                let durable = !done.failures.is_empty();
                durable || (w.progress.bets() == *stored && w.finished == *finished)
            }
            (Answer::Store(StoreOutcome::Stored), Expect::Stored) => !rows_failed,
            (Answer::Store(StoreOutcome::Failed(_)), Expect::Stored) => rows_failed,
            (Answer::Store(StoreOutcome::AlreadyStored), Expect::Again) => true,
            (Answer::Store(StoreOutcome::OutOfSequence { .. }), Expect::OutOfSequence) => true,
            (Answer::Store(StoreOutcome::AlreadyFinished), Expect::AfterFinish) => true,
            (Answer::Finish(FinishOutcome::Counted | FinishOutcome::Failed(_)), Expect::Counted) => true,
            (Answer::Finish(FinishOutcome::OutOfSequence { .. }), Expect::FinishMismatch) => true,
            (Answer::Finish(FinishOutcome::AlreadyFinished), Expect::FinishedBefore) => true,
            (Answer::Store(StoreOutcome::RoundClosed), Expect::AfterClose) => true,
            (Answer::Finish(FinishOutcome::RoundClosed), Expect::FinishAfterClose) => true,
            (Answer::Close(CloseOutcome::Closed { .. } | CloseOutcome::Failed(_)), Expect::Closes) => true,
            (Answer::Close(CloseOutcome::NotOpen(_)), Expect::NotOpen) => true,
            _ => false,
        };
        assert!(ok, "{answer:?} where the model expects {expect:?}");
    }
}

/// Moves the model forward by what the round says became durable.
fn apply(model: &mut Model, group: &[Request], done: &Committed) {
    model.closed |= done.closed.is_some();
    for (request, answer) in group.iter().zip(&done.answers) {
        let Some(agency) = request.agency() else { continue };
        let counter = &mut model.agencies[agency as usize - 1];
        match answer {
            Answer::Store(StoreOutcome::Stored) => counter.stored += request.bets() as u64,
            Answer::Finish(FinishOutcome::Counted) => counter.finished = true,
            _ => {}
        }
    }
}
