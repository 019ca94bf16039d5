//! Reading a round back when a server starts on it.
//!
//! A crash can leave unfinished only what was never synced, and a group
//! is bounded ([`MAX_GROUP_BETS`], [`MAX_GROUP_BYTES`]), so the rule is:
//! **cut only a torn tail, refuse anything else.** Bytes after the first
//! bad row are cut only if they are at most one group with at most one
//! group's worth of whole rows among them; a damaged journal line is cut
//! only if no good line follows it. Damage inside what was synced makes
//! the round [`Damage`]d: the server refuses to start and changes
//! nothing. Otherwise each agency's count, digest and winners are rebuilt
//! from the bets file, checked against the journal, and only then are the
//! torn tails cut.

use std::path::{Path, PathBuf};

use crate::progress::Progress;
use crate::storage::disk::Disk;
use crate::storage::file::cut;
use crate::storage::scan::{scan_watching, RowFault, Scan};

use super::journal::{BetsDigest, CloseReason, Entry, JournalRead, LineFault};
use super::state::{AgencyState, RoundName, RoundState};
use super::{RoundError, CHECKPOINT_EVERY, MAX_GROUP_BETS, MAX_GROUP_BYTES};

/// How [`super::open`] found the storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Empty storage: a new round.
    New,
    /// A round in progress (or drawn), resumed.
    Resumed {
        /// Bytes cut from the end of the bets file: rows never acknowledged.
        cut_bets: u64,
        /// Bytes cut from the end of the journal: a line never acknowledged.
        cut_journal: u64,
        /// What was cut, and why.
        cuts: Vec<Cut>,
    },
}

/// A torn tail cut from one of the round's files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {why}", .path.display())]
pub struct Cut {
    pub path: PathBuf,
    pub why: CutReason,
}

/// Why a tail was cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CutReason {
    #[error(transparent)]
    Bets(RowFault),
    #[error(transparent)]
    Journal(LineFault),
}

/// Damage inside what was synced: the round is refused, never cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("the journal does not start with its round line, yet the bets file holds bets")]
    NoRoundLine,
    #[error("a line this server does not know (written by a newer one?) at {0}")]
    UnknownLine(LineFault),
    #[error("{lines} good lines follow a damaged one ({fault}): that is damage inside what was synced, not a torn last line")]
    GoodLinesAfterDamage { lines: usize, fault: LineFault },
    #[error("the round's bets file is missing (it is created before its journal)")]
    BetsMissing,
    #[error("{bytes} bytes ({rows} whole rows among them) follow the first bad row ({fault}): more than one group, so not a torn tail")]
    NotATornTail { bytes: u64, rows: usize, fault: RowFault },
    #[error("a second round line")]
    SecondRoundLine,
    #[error("agency {0} finished, but the round has no such agency")]
    NoSuchAgency(u32),
    #[error("agency {0} finished twice")]
    FinishedTwice(u32),
    #[error("agency {agency} finished with {finished}, but the bets file holds {holds} of it: acknowledged bets are missing")]
    FinishedBetsMissing { agency: u32, finished: Progress, holds: Progress },
    #[error("agency {agency} finished with {finished}, but the bets file holds {holds} of it: its bets were changed after it finished")]
    FinishedBetsChanged { agency: u32, finished: Progress, holds: Progress },
    #[error("the first {synced} bytes of the bets file were synced, but only {whole} are whole rows: acknowledged bets are missing")]
    CheckpointMissing { synced: u64, whole: u64 },
    #[error("the first {bytes} bytes of the bets file are not those its journal checkpointed: the journal belongs to another round or another file, or the file was edited")]
    CheckpointDiffers { bytes: u64 },
    #[error("{rows} whole rows ({bytes} bytes) lie past byte {due}, where the journal's next checkpoint was due: more than one group, so the journal is not this file's, or an old copy of it")]
    Unchecked { due: u64, rows: usize, bytes: u64 },
    #[error("the round closed twice")]
    ClosedTwice,
    #[error("the round closed holding {recorded} bets, the bets file holds {found}")]
    ClosedBets { recorded: u64, found: u64 },
    #[error("the round closed as all agencies finished, yet some had not")]
    ClosedUnfinished,
    #[error("agency {0} finished after the round closed")]
    FinishedAfterClose(u32),
    #[error("a draw before the round closed, or a second one")]
    DrawTooEarly,
    #[error("kept as round {number}, its journal names round {found}")]
    KeptAs { number: u64, found: u64 },
    #[error("a kept round that was never drawn")]
    KeptUndrawn,
    #[error("the draw found {recorded} winners, the bets file holds {found}")]
    DrawWinners { recorded: u64, found: u64 },
}

/// A round found on disk, checked and with its torn tails cut.
#[derive(Debug)]
pub struct Recovered {
    pub state: RoundState,
    /// Bytes of the bets file and of the journal after the cuts.
    pub bets_len: u64,
    /// The digest of the bets file's bytes, to be carried on.
    pub digest: BetsDigest,
    pub journal_len: u64,
    /// The bets file's length at the last checkpoint (0 without one).
    pub checkpoint: u64,
    pub opened: Opened,
}

/// Where a round's files are.
#[derive(Debug, Clone, Copy)]
pub struct Place<'p> {
    pub bets: &'p Path,
    pub journal: &'p Path,
    /// Whether the bets file exists.
    pub bets_exist: bool,
}

/// Whether recovery cuts the torn tails it finds, or leaves the files as
/// they are (a kept round, read only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cuts {
    Make,
    Leave,
}

/// Reads back round `name` of `agencies` agencies, whose journal at
/// `place.journal` was read (its first line is the round's) and whose bets
/// file is at `place.bets`.
pub fn recover(
    disk: &dyn Disk,
    name: RoundName,
    agencies: u32,
    place: Place<'_>,
    journal: JournalRead,
    cuts: Cuts,
) -> Result<Recovered, RoundError> {
    let Place { bets, journal: journal_path, bets_exist } = place;
    let damaged = |path: &Path, damage: Damage| RoundError::Damaged { path: path.into(), damage };
    if let Some(unknown) = &journal.unknown {
        return Err(damaged(journal_path, Damage::UnknownLine(unknown.clone())));
    }
    if let Some(fault) = journal.stopped.clone().filter(|_| journal.lines_after_stop > 0) {
        return Err(damaged(
            journal_path,
            Damage::GoodLinesAfterDamage { lines: journal.lines_after_stop, fault },
        ));
    }
    if !bets_exist {
        return Err(damaged(bets, Damage::BetsMissing));
    }
    let checkpoints: Vec<u64> = checkpoints(&journal.entries).map(|(bytes, _)| bytes).collect();
    // The next checkpoint was due here: a group starts before it, so past
    // it lies at most one group (see `RoundFiles::append_bets`).
    let due = checkpoints.last().map_or(1, |last| last + CHECKPOINT_EVERY);
    let found = scan_watching(disk, bets, agencies, &checkpoints, due)?;
    let late_bytes = found.valid_len.saturating_sub(due);
    if found.late_rows > MAX_GROUP_BETS || late_bytes > MAX_GROUP_BYTES as u64 {
        let damage = Damage::Unchecked { due, rows: found.late_rows, bytes: late_bytes };
        return Err(damaged(journal_path, damage));
    }
    let tail = found.file_len - found.valid_len;
    if let Some(fault) = found.stopped.clone() {
        if tail > MAX_GROUP_BYTES as u64 || found.rows_after_stop > MAX_GROUP_BETS {
            let damage = Damage::NotATornTail { bytes: tail, rows: found.rows_after_stop, fault };
            return Err(damaged(bets, damage));
        }
    }
    let state = replay(name, &journal.entries, &found).map_err(|damage| damaged(journal_path, damage))?;

    // Everything checks out: only now cut what was never acknowledged.
    let mut made = Vec::new();
    if let Some(fault) = found.stopped {
        if cuts == Cuts::Make {
            cut(disk, bets, found.valid_len)?;
        }
        made.push(Cut { path: bets.into(), why: CutReason::Bets(fault) });
    }
    if let Some(fault) = journal.stopped {
        if cuts == Cuts::Make {
            cut(disk, journal_path, journal.valid_len)?;
        }
        made.push(Cut { path: journal_path.into(), why: CutReason::Journal(fault) });
    }
    let cut_journal = journal.file_len - journal.valid_len;
    let opened = Opened::Resumed { cut_bets: tail, cut_journal, cuts: made };
    Ok(Recovered {
        state,
        bets_len: found.valid_len,
        digest: found.digest,
        journal_len: journal.valid_len,
        checkpoint: checkpoints.last().copied().unwrap_or(0),
        opened,
    })
}

/// The checkpoints of a journal: bytes and digest, in order.
fn checkpoints(entries: &[Entry]) -> impl Iterator<Item = (u64, u64)> + '_ {
    entries.iter().filter_map(|e| match *e {
        Entry::Checkpoint { bytes, digest } => Some((bytes, digest)),
        _ => None,
    })
}

/// The state of a round from its journal and what the bets file holds,
/// checked against each other.
fn replay(name: RoundName, entries: &[Entry], found: &Scan) -> Result<RoundState, Damage> {
    let agencies = found
        .agencies
        .iter()
        .map(|a| AgencyState { progress: a.progress, finished: false, winners: a.winners.clone() })
        .collect();
    let mut state = RoundState::resumed(name, agencies);
    assert!(matches!(entries.first(), Some(Entry::Round { .. })), "a journal starts with its round");
    for entry in &entries[1..] {
        match *entry {
            Entry::Round { .. } => return Err(Damage::SecondRoundLine),
            Entry::Finished { agency, progress } => {
                check_finished(&state, agency, progress)?;
                state.finish(agency);
            }
            Entry::Checkpoint { bytes, digest } => {
                if found.valid_len < bytes {
                    return Err(Damage::CheckpointMissing { synced: bytes, whole: found.valid_len });
                }
                if found.digest_at(bytes) != Some(digest) {
                    return Err(Damage::CheckpointDiffers { bytes });
                }
            }
            Entry::Closed { reason, bets } => {
                check_closed(&state, reason, bets).map(|()| state.close(reason))?
            }
            Entry::Drawn { winners } => {
                if state.is_open() || state.drawn() {
                    return Err(Damage::DrawTooEarly);
                }
                if winners != state.winners() {
                    return Err(Damage::DrawWinners { recorded: winners, found: state.winners() });
                }
                state.draw();
            }
        }
    }
    Ok(state)
}

/// Whether `agency` may have finished with `finished`, given the state.
fn check_finished(state: &RoundState, agency: u32, finished: Progress) -> Result<(), Damage> {
    if !state.is_agency(agency) {
        return Err(Damage::NoSuchAgency(agency));
    }
    let holds = state.agency(agency);
    if holds.finished {
        return Err(Damage::FinishedTwice(agency));
    }
    if !state.is_open() {
        return Err(Damage::FinishedAfterClose(agency));
    }
    if holds.progress.bets() < finished.bets() {
        return Err(Damage::FinishedBetsMissing { agency, finished, holds: holds.progress });
    }
    if holds.progress != finished {
        return Err(Damage::FinishedBetsChanged { agency, finished, holds: holds.progress });
    }
    Ok(())
}

/// Whether the round may have closed for `reason` holding `bets` bets.
fn check_closed(state: &RoundState, reason: CloseReason, bets: u64) -> Result<(), Damage> {
    if !state.is_open() {
        return Err(Damage::ClosedTwice);
    }
    if bets != state.bets() {
        return Err(Damage::ClosedBets { recorded: bets, found: state.bets() });
    }
    if reason == CloseReason::AllFinished && !state.all_finished() {
        return Err(Damage::ClosedUnfinished);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bet::BetRef;
    use crate::round::journal::LineError;
    use crate::round::CHECKPOINT_EVERY;
    use crate::round::{beside, open, Entry, Ledger, RoundError};
    use crate::storage::scan::RowProblem;
    use crate::storage::write_row;
    use proptest::strategy::Strategy;
    use std::path::PathBuf;

    fn row(agency: u32, number: u32) -> Vec<u8> {
        let number = number.to_string();
        let mut out = Vec::new();
        write_row(&mut out, agency, &BetRef::parse(["Ana", "Paz", "123", "1999-03-17", &number]).unwrap());
        out
    }

    fn storage() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        (dir, path)
    }

    #[test]
    fn empty_storage_starts_a_new_round_and_reopening_resumes_it() {
        let (_dir, path) = storage();
        let (mut files, state, opened) = open(&path, 2).unwrap();
        assert_eq!((opened, state.bets(), state.finished()), (Opened::New, 0, 0));
        let rows = [row(1, 7574), row(2, 5)];
        files.append_bets(&[&rows[0], &rows[1]]).unwrap();
        let mut one = Progress::default();
        one.push(&rows[0]);
        files.record(&[Entry::Finished { agency: 1, progress: one }]).unwrap();
        drop(files);

        let (_files, again, opened) = open(&path, 2).unwrap();
        assert_eq!(opened, Opened::Resumed { cut_bets: 0, cut_journal: 0, cuts: vec![] });
        assert_eq!(again.id(), state.id());
        assert_eq!(
            *again.agency(1),
            AgencyState { progress: one, finished: true, winners: vec!["123".into()] }
        );
        assert_eq!((again.agency(2).progress.bets(), again.agency(2).finished), (1, false));
        assert!(!again.drawn());
    }

    #[test]
    fn a_second_owner_is_refused_and_touches_nothing_even_without_a_lock_file() {
        let (_dir, path) = storage();
        let (mut files, _, _) = open(&path, 1).unwrap();
        files.append_bets(&[&row(1, 1)]).unwrap();
        let before = std::fs::read(&path).unwrap();
        let journal = std::fs::read(beside(&path, ".journal")).unwrap();
        assert!(matches!(open(&path, 1), Err(RoundError::InUse { .. })));
        assert!(matches!(open(&path, 3), Err(RoundError::InUse { .. })), "the lock comes before any check");
        let files_in_dir = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(files_in_dir, 2, "the directory itself is the lock: nothing to delete to get past it");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(std::fs::read(beside(&path, ".journal")).unwrap(), journal);
        drop(files);
        assert!(open(&path, 1).is_ok(), "free again once its owner is gone");
    }

    #[test]
    fn a_torn_tail_of_both_files_is_cut_and_said() {
        let (_dir, path) = storage();
        let (mut files, _, _) = open(&path, 1).unwrap();
        files.append_bets(&[&row(1, 1)]).unwrap();
        drop(files);
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, [good.as_slice(), b"1,Noelia,\xc3"].concat()).unwrap();
        let journal = beside(&path, ".journal");
        let mut text = std::fs::read(&journal).unwrap();
        text.extend_from_slice(b"finished agency=1 bets=");
        std::fs::write(&journal, &text).unwrap();

        let (_files, state, opened) = open(&path, 1).unwrap();
        let Opened::Resumed { cut_bets, cut_journal, cuts } = opened else { panic!() };
        assert_eq!((cut_bets, cut_journal), (10, 23));
        let reasons: Vec<&CutReason> = cuts.iter().map(|c| &c.why).collect();
        let torn_row = RowFault { at: good.len() as u64, problem: RowProblem::Torn(10) };
        let torn_line = LineFault { at: text.len() as u64 - 23, error: LineError::NoLineEnd };
        assert_eq!(reasons, [&CutReason::Bets(torn_row), &CutReason::Journal(torn_line)]);
        assert_eq!(std::fs::read(&path).unwrap(), good);
        assert_eq!((state.bets(), state.finished()), (1, 0));
    }

    #[test]
    fn a_close_that_does_not_fit_the_round_is_damage() {
        let one = {
            let mut p = Progress::default();
            p.push(&row(1, 1));
            p
        };
        type Case<'a> = (&'a [Entry], fn(&Damage) -> bool);
        let cases: [Case<'_>; 4] = [
            (&[Entry::Closed { reason: CloseReason::Deadline, bets: 2 }], |d| {
                matches!(d, Damage::ClosedBets { recorded: 2, found: 1 })
            }),
            (&[Entry::Closed { reason: CloseReason::AllFinished, bets: 1 }], |d| {
                matches!(d, Damage::ClosedUnfinished)
            }),
            (
                &[
                    Entry::Closed { reason: CloseReason::Operator, bets: 1 },
                    Entry::Finished { agency: 1, progress: one },
                ],
                |d| matches!(d, Damage::FinishedAfterClose(1)),
            ),
            (&[Entry::Drawn { winners: 0 }], |d| matches!(d, Damage::DrawTooEarly)),
        ];
        for (entries, is) in cases {
            let (_dir, path) = storage();
            let (mut files, _, _) = open(&path, 1).unwrap();
            files.append_bets(&[&row(1, 1)]).unwrap();
            files.record(entries).unwrap();
            drop(files);
            match open(&path, 1) {
                Err(RoundError::Damaged { damage, .. }) => assert!(is(&damage), "{entries:?}: {damage}"),
                other => panic!("{entries:?}: {other:?}"),
            }
        }
    }

    /// A round whose bets file and journal can be damaged by hand.
    fn round_with_rows(rows: usize) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let (dir, path) = storage();
        let (mut files, _, _) = open(&path, 1).unwrap();
        let all: Vec<Vec<u8>> = (0..rows).map(|i| row(1, i as u32)).collect();
        for chunk in all.chunks(100) {
            let parts: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            files.append_bets(&parts).unwrap();
            files.record(&[]).unwrap();
        }
        drop(files);
        let bytes = std::fs::read(&path).unwrap();
        (dir, path, bytes)
    }

    #[test]
    fn a_journal_that_checkpointed_far_less_than_the_file_holds_is_not_its_journal() {
        // More than a mebibyte and a group of rows past the first checkpoint.
        let (_dir, path, bytes) = round_with_rows(60_000);
        let row_len = bytes.len() as u64 / 60_000;
        assert!(bytes.len() as u64 > CHECKPOINT_EVERY + (MAX_GROUP_BETS as u64 + 200) * row_len);
        let journal = beside(&path, ".journal");
        let lines: Vec<String> =
            std::fs::read_to_string(&journal).unwrap().lines().map(|l| format!("{l}\n")).collect();
        assert!(lines.len() > 2, "the round checkpointed more than once");
        for kept in [2, 1] {
            // An old copy of its own journal (its round and first
            // checkpoint), then a new round's journal (no checkpoint).
            std::fs::write(&journal, lines[..kept].concat()).unwrap();
            refused_untouched(&path, 1, |d| matches!(d, Damage::Unchecked { .. }));
        }
        std::fs::write(&journal, lines.concat()).unwrap();
        let (_, state, _) = open(&path, 1).unwrap();
        assert_eq!(state.bets(), 60_000, "its own journal, whole, is accepted");
    }

    /// Opening the round at `path` is refused for damage that `is`, and
    /// leaves both files as they were.
    fn refused_untouched(path: &Path, agencies: u32, is: impl Fn(&Damage) -> bool) {
        let before = std::fs::read(path).unwrap();
        let journal = std::fs::read(beside(path, ".journal")).ok();
        match open(path, agencies) {
            Err(RoundError::Damaged { damage, .. }) => assert!(is(&damage), "{damage:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(path).unwrap(), before, "the bets file is left as found");
        assert_eq!(std::fs::read(beside(path, ".journal")).ok(), journal, "the journal is left as found");
    }

    #[test]
    fn damage_with_whole_rows_after_it_is_refused_not_cut() {
        let (_dir, path, mut bytes) = round_with_rows(20_000);
        // Two rows in the middle run into one.
        let at = bytes.len() / 2 + bytes[bytes.len() / 2..].iter().position(|&b| b == b'\n').unwrap();
        bytes[at] = b'X';
        std::fs::write(&path, &bytes).unwrap();
        refused_untouched(&path, 1, |d| matches!(d, Damage::NotATornTail { .. }));
    }

    #[test]
    fn a_bets_file_shorter_than_its_last_checkpoint_is_refused() {
        let (_dir, path, bytes) = round_with_rows(40_000);
        assert!(bytes.len() as u64 > CHECKPOINT_EVERY, "the round has a checkpoint");
        let journal = std::fs::read_to_string(beside(&path, ".journal")).unwrap();
        assert!(journal.contains("checkpoint bytes="), "{journal}");
        let mut whole_rows = bytes[..CHECKPOINT_EVERY as usize / 2].to_vec();
        whole_rows.truncate(whole_rows.iter().rposition(|&b| b == b'\n').unwrap() + 1);
        std::fs::write(&path, &whole_rows).unwrap();
        refused_untouched(&path, 1, |d| matches!(d, Damage::CheckpointMissing { .. }));
    }

    #[test]
    fn a_missing_bets_file_is_refused() {
        let (_dir, path, _) = round_with_rows(10);
        std::fs::remove_file(&path).unwrap();
        let err = open(&path, 1).unwrap_err();
        assert!(matches!(err, RoundError::Damaged { damage: Damage::BetsMissing, .. }), "{err:?}");
        assert!(!path.exists());
    }

    /// A round of `agencies` whose rows are `rows`, each `(agency, row)`,
    /// and in which each agency of `finished` finished with its rows.
    fn round_of(agencies: u32, rows: &[(u32, Vec<u8>)], finished: &[u32]) -> (tempfile::TempDir, PathBuf) {
        let (dir, path) = storage();
        let (mut files, _, _) = open(&path, agencies).unwrap();
        files.append_bets(&rows.iter().map(|(_, row)| row.as_slice()).collect::<Vec<_>>()).unwrap();
        for &agency in finished {
            let mut progress = Progress::default();
            rows.iter().filter(|(a, _)| *a == agency).for_each(|(_, row)| progress.push(row));
            files.record(&[Entry::Finished { agency, progress }]).unwrap();
        }
        (dir, path)
    }

    #[test]
    fn journal_damage_before_good_lines_and_lines_of_unknown_meaning_are_refused() {
        let (_dir, path) = round_of(3, &[(1, row(1, 1)), (2, row(2, 2))], &[1, 2]);
        let journal = beside(&path, ".journal");
        let text = std::fs::read_to_string(&journal).unwrap();
        std::fs::write(&journal, text.replacen("finished agency=1", "finished agency=9", 1)).unwrap();
        refused_untouched(&path, 3, |d| matches!(d, Damage::GoodLinesAfterDamage { lines: 1, .. }));

        let line = "forget agency=2";
        std::fs::write(&journal, format!("{text}{line} crc={:08x}\n", crc32fast::hash(line.as_bytes())))
            .unwrap();
        refused_untouched(&path, 3, |d| matches!(d, Damage::UnknownLine(_)));
    }

    #[test]
    fn another_number_of_agencies_is_refused_without_touching_the_round() {
        let (_dir, path) = storage();
        drop(open(&path, 5).unwrap());
        let err = open(&path, 3).unwrap_err();
        assert!(matches!(err, RoundError::AgenciesDiffer { round: 5, configured: 3, .. }), "{err}");
        assert!(open(&path, 5).is_ok());
    }

    #[test]
    fn bets_without_a_journal_are_not_taken_over() {
        let (_dir, path) = storage();
        std::fs::write(&path, row(1, 1)).unwrap();
        assert!(matches!(open(&path, 1), Err(RoundError::Foreign { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), row(1, 1));
        std::fs::write(&path, b"").unwrap();
        drop(open(&path, 1).unwrap());
        assert!(beside(&path, ".journal").exists(), "an empty bets file is empty storage");
    }

    #[test]
    fn a_finished_agency_whose_bets_are_missing_is_corruption_not_a_cut() {
        let rows = [row(1, 1), row(1, 2)];
        let (_dir, path) = round_of(1, &[(1, rows[0].clone()), (1, rows[1].clone())], &[1]);
        std::fs::write(&path, &rows[0]).unwrap();
        let err = open(&path, 1).unwrap_err();
        // The checkpoint that goes with the finished line says it first.
        let missing = matches!(
            err,
            RoundError::Damaged {
                damage: Damage::CheckpointMissing { .. } | Damage::FinishedBetsMissing { agency: 1, .. },
                ..
            }
        );
        assert!(missing, "{err:?}");
        assert_eq!(std::fs::read(&path).unwrap(), rows[0], "left as found");
    }

    #[test]
    fn a_drawn_round_comes_back_drawn_with_its_winners() {
        let (_dir, path) = storage();
        let (mut files, _, _) = open(&path, 1).unwrap();
        let rows = [row(1, 7574)];
        files.append_bets(&[&rows[0]]).unwrap();
        let mut p = Progress::default();
        p.push(&rows[0]);
        let closed = Entry::Closed { reason: CloseReason::AllFinished, bets: 1 };
        files
            .record(&[Entry::Finished { agency: 1, progress: p }, closed, Entry::Drawn { winners: 1 }])
            .unwrap();
        drop(files);
        let (_, state, _) = open(&path, 1).unwrap();
        assert!(state.drawn());
        assert_eq!(state.agency(1).winners, ["123"]);
    }

    /// A round of two agencies whose rows come in `groups` (each a number
    /// of rows, alternating agencies), checkpointed every `every` bytes;
    /// `seed` makes its rows differ from another round's.
    fn checkpointed_round(groups: &[usize], every: u64, seed: u32) -> (tempfile::TempDir, PathBuf, u64) {
        let (dir, path) = storage();
        let (mut files, _, _) = open(&path, 2).unwrap();
        files.checkpoint_every(every);
        let mut number = seed;
        for (i, &count) in groups.iter().enumerate() {
            let rows: Vec<Vec<u8>> = (0..count)
                .map(|_| {
                    number = number.wrapping_mul(7).wrapping_add(1) % 10_000;
                    row(i as u32 % 2 + 1, number)
                })
                .collect();
            files.append_bets(&rows.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap();
            files.record(&[]).unwrap();
        }
        drop(files);
        let journal = std::fs::read_to_string(beside(&path, ".journal")).unwrap();
        let last = journal
            .lines()
            .filter_map(|l| match Entry::parse(l).unwrap() {
                Entry::Checkpoint { bytes, .. } => Some(bytes),
                _ => None,
            })
            .next_back()
            .unwrap_or(0);
        (dir, path, last)
    }

    /// What a mutation of a round's files does.
    #[derive(Debug, Clone)]
    enum Mutation {
        /// The journal of another round beside this bets file.
        Swap { seed: u32 },
        /// The bets file cut to this share of its length.
        Cut(f64),
        /// One byte of the bets file changed, at this share of its length.
        Edit(f64),
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Damage inside what a checkpoint covers (another round's journal,
        /// bytes cut or changed) is refused and left as found; a cut after
        /// the last checkpoint is a torn tail, and recovers.
        #[test]
        fn a_journal_binds_to_the_bytes_it_checkpointed(
            groups in proptest::collection::vec(1usize..12, 2..12),
            every in 64u64..600,
            mutation in proptest::prop_oneof![
                (1u32..1000).prop_map(|seed| Mutation::Swap { seed }),
                (0.0f64..1.0).prop_map(Mutation::Cut),
                (0.0f64..1.0).prop_map(Mutation::Edit),
            ],
        ) {
            let (_dir, path, last) = checkpointed_round(&groups, every, 0);
            proptest::prop_assume!(last > 0);
            let bytes = std::fs::read(&path).unwrap();
            let at = |share: f64| ((bytes.len() as f64 * share) as usize).min(bytes.len() - 1);
            let inside = match mutation {
                Mutation::Swap { seed } => {
                    let (_other_dir, other, _) = checkpointed_round(&groups, every, seed);
                    let foreign = std::fs::read(beside(&other, ".journal")).unwrap();
                    std::fs::write(beside(&path, ".journal"), foreign).unwrap();
                    true
                }
                Mutation::Cut(share) => {
                    std::fs::write(&path, &bytes[..at(share)]).unwrap();
                    (at(share) as u64) < last
                }
                Mutation::Edit(share) => {
                    let mut edited = bytes.clone();
                    edited[at(share)] = if edited[at(share)] == b'7' { b'8' } else { b'7' };
                    std::fs::write(&path, &edited).unwrap();
                    (at(share) as u64) < last
                }
            };
            if inside {
                refused_untouched(&path, 2, |_| true);
            } else if let Mutation::Cut(share) = mutation {
                let (_files, state, _) = open(&path, 2).unwrap();
                let whole = bytes[..at(share)].iter().filter(|&&b| b == b'\n').count();
                proptest::prop_assert_eq!(state.bets(), whole as u64);
            }
        }
    }
}
