//! Drawn rounds, kept: when the next round opens, the drawn round's files
//! move together to `rounds/K/` beside the open round's (`rounds/1/bets.csv`,
//! `rounds/1/bets.csv.journal`), and are never written again; [`Shelf`]
//! reads them back, for the agencies that ask for their winners.
//!
//! The move, in order (each name durable before the next step):
//! 1. `rounds/` and `rounds/K/` are made, and their names synced;
//! 2. the journal moves into `rounds/K/`; both directories are synced;
//! 3. the bets file follows; both directories are synced again;
//! 4. the next round starts where they were.
//!
//! A power cut can stop it between any two steps. Before step 2 the drawn
//! round is still where it was (and an empty `rounds/K/` waits for it).
//! Between steps 2 and 3 the storage holds a bets file without a journal
//! and `rounds/K/` a journal without its bets file: [`finish_move`], run
//! when the storage is opened, moves the bets file on. After step 3 the
//! storage is empty and the next round starts after the last one kept.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::disk::Disk;
use crate::storage::StorageError;

use super::files::dir_of;
use super::journal::{self, Entry};
use super::recovery::{recover, Cuts, Damage, Place};
use super::state::{RoundName, RoundState};
use super::{beside, RoundError, RoundId};

/// The directory of kept rounds, beside the open round's files.
pub const ROUNDS_DIR: &str = "rounds";

/// Where round `number` is kept, for the open round's bets file `bets`.
pub fn kept_dir(bets: &Path, number: u64) -> PathBuf {
    dir_of(bets).join(ROUNDS_DIR).join(number.to_string())
}

/// What turns an I/O error about `path` into a storage error.
fn io(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |e| StorageError::io(path, e)
}

/// The same file name, in `dir`.
fn moved(path: &Path, dir: &Path) -> PathBuf {
    dir.join(path.file_name().expect("a round's files have names"))
}

/// The highest number of a round kept beside `bets`; 0 when none is.
pub(super) fn last_number(disk: &dyn Disk, bets: &Path) -> Result<u64, StorageError> {
    let rounds = dir_of(bets).join(ROUNDS_DIR);
    let names = match disk.list_dir(&rounds) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StorageError::io(&rounds, e)),
    };
    let numbers = names.iter().filter_map(|name| name.to_str()?.parse::<u64>().ok());
    Ok(numbers.max().unwrap_or(0))
}

/// Moves drawn round `number`'s files from `bets` (and its journal) to
/// `rounds/number/`; see the module documentation for the order.
pub(super) fn shelve(disk: &dyn Disk, bets: &Path, number: u64) -> Result<(), RoundError> {
    let (dir, journal) = (dir_of(bets), beside(bets, ".journal"));
    let rounds = dir.join(ROUNDS_DIR);
    let kept = kept_dir(bets, number);
    for made in [&rounds, &kept] {
        match disk.create_dir(made) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(StorageError::io(made, e).into())
            }
            _ => {}
        }
    }
    // A cut can leave a name in `rounds/K/` durable while its old name
    // stays too (each directory is synced on its own): such a copy is
    // replaced by the move; anything else there is not this round's.
    for name in disk.list_dir(&kept).map_err(io(&kept))? {
        let source = [&journal, bets].into_iter().find(|file| file.file_name() == Some(&name));
        let copy = match source {
            Some(source) => same_bytes(disk, source, &kept.join(&name))?,
            None => false,
        };
        if !copy {
            return Err(RoundError::KeptBefore { dir: kept });
        }
    }
    for synced in [dir, rounds.as_path()] {
        disk.sync_dir(synced).map_err(io(synced))?;
    }
    for file in [&journal, bets] {
        let to = moved(file, &kept);
        disk.rename(file, &to).map_err(io(&to))?;
        for synced in [kept.as_path(), dir] {
            disk.sync_dir(synced).map_err(io(synced))?;
        }
    }
    Ok(())
}

/// Whether the files `a` and `b` hold the same bytes.
fn same_bytes(disk: &dyn Disk, a: &Path, b: &Path) -> Result<bool, StorageError> {
    let read = |path: &Path| -> Result<Vec<u8>, StorageError> {
        let mut bytes = Vec::new();
        disk.open_read(path).and_then(|mut file| file.read_to_end(&mut bytes)).map_err(io(path))?;
        Ok(bytes)
    };
    Ok(disk.len(a).map_err(io(a))? == disk.len(b).map_err(io(b))? && read(a)? == read(b)?)
}

/// Finishes a move cut short between its journal and its bets file (see
/// the module documentation): the bets file is moved on if the last kept
/// round lacks it, or holds a copy of it that a cut left under both names.
/// The number of the round it moved, if any.
pub(super) fn finish_move(disk: &dyn Disk, bets: &Path) -> Result<Option<u64>, RoundError> {
    let journal = beside(bets, ".journal");
    if disk.exists(&journal).map_err(io(&journal))? || !disk.exists(bets).map_err(io(bets))? {
        return Ok(None);
    }
    let last = last_number(disk, bets)?;
    let kept = kept_dir(bets, last);
    let (kept_journal, kept_bets) = (moved(&journal, &kept), moved(bets, &kept));
    let half_moved = last > 0
        && disk.exists(&kept_journal).map_err(io(&kept_journal))?
        && (!disk.exists(&kept_bets).map_err(io(&kept_bets))? || same_bytes(disk, bets, &kept_bets)?);
    if !half_moved {
        return Ok(None);
    }
    disk.rename(bets, &kept_bets).map_err(io(&kept_bets))?;
    for synced in [kept.as_path(), dir_of(bets)] {
        disk.sync_dir(synced).map_err(io(synced))?;
    }
    Ok(Some(last))
}

/// Reads kept rounds; clones share the disk.
#[derive(Debug, Clone)]
pub struct Shelf {
    disk: Arc<dyn Disk>,
    /// The open round's bets file: kept rounds are beside it.
    bets: PathBuf,
}

impl Shelf {
    pub fn new(disk: Arc<dyn Disk>, bets: &Path) -> Shelf {
        Shelf { disk, bets: bets.to_owned() }
    }

    /// Round `number` as kept, checked as a recovery checks a round, and
    /// changing nothing; `None` if it is not kept (never drawn here, or
    /// its files were taken away).
    pub fn drawn(&self, number: u64) -> Result<Option<RoundState>, RoundError> {
        let kept = kept_dir(&self.bets, number);
        let (bets, journal_path) = (moved(&self.bets, &kept), beside(&moved(&self.bets, &kept), ".journal"));
        let Some(journal) = journal::read(self.disk.as_ref(), &journal_path)? else { return Ok(None) };
        let damaged = |damage| RoundError::Damaged { path: journal_path.clone(), damage };
        let Some(&Entry::Round { number: found, id, agencies, opened }) = journal.entries.first() else {
            return Err(damaged(Damage::NoRoundLine));
        };
        if found != number {
            return Err(damaged(Damage::KeptAs { number, found }));
        }
        let bets_exist = self.disk.exists(&bets).map_err(|e| StorageError::io(&bets, e))?;
        let name = RoundName { number, id: RoundId(id), opened };
        let place = Place { bets: &bets, journal: &journal_path, bets_exist };
        let state = recover(self.disk.as_ref(), name, agencies, place, journal, Cuts::Leave)?.state;
        if !state.drawn() {
            return Err(damaged(Damage::KeptUndrawn));
        }
        Ok(Some(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::{open, CloseReason, EncodedBatch, Request, Round, RoundFiles};

    /// Plays a round: one bet of agency 1, then the operator's close.
    fn play_one(round: &mut Round<RoundFiles>) {
        let bet = [["Ana", "Paz", "123", "1999-03-17", "7574"]];
        let batch = EncodedBatch::encode(1, 0, bet.into_iter(), 1024).unwrap();
        round.commit(&mut [Request::Store { agency: 1, batch }]).unwrap();
        round.commit(&mut [Request::Close { reason: CloseReason::Operator }]).unwrap();
        assert_eq!((round.state().bets(), round.state().winners()), (1, 1));
    }

    #[test]
    fn drawn_rounds_are_kept_by_number_and_read_back_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let bets = dir.path().join("bets.csv");
        let (files, state, _) = open(&bets, 1).unwrap();
        assert_eq!(state.number(), 1);
        let mut round = Round::new(files, state);
        round.commit(&mut [Request::Close { reason: CloseReason::Operator }]).unwrap();
        let first = round.open_next(1, 7).unwrap();
        let second = round.state().clone();
        assert_eq!((second.number(), second.name().opened, second.is_open()), (2, 7, true));
        assert!(
            kept_dir(&bets, 1).join("bets.csv").exists()
                && kept_dir(&bets, 1).join("bets.csv.journal").exists()
        );
        drop(round);

        let (files, again, _) = open(&bets, 1).unwrap();
        assert_eq!(again.name(), second.name(), "round 2 resumes where round 1 was");
        let shelf = Shelf::new(Arc::new(crate::storage::disk::OsDisk), &bets);
        let kept = shelf.drawn(1).unwrap().expect("round 1 is kept");
        assert_eq!(
            (kept.name(), kept.closed(), kept.drawn()),
            (first.name(), Some(CloseReason::Operator), true)
        );
        assert!(shelf.drawn(2).unwrap().is_none() && shelf.drawn(9).unwrap().is_none());

        std::fs::rename(kept_dir(&bets, 1), kept_dir(&bets, 9)).unwrap();
        let err = shelf.drawn(9).unwrap_err();
        assert!(
            matches!(err, RoundError::Damaged { damage: Damage::KeptAs { number: 9, found: 1 }, .. }),
            "{err}"
        );
        drop(files);
        std::fs::remove_dir_all(kept_dir(&bets, 9)).unwrap();
        let (files, state, _) = open(&bets, 1).unwrap();
        assert_eq!(state.number(), 2, "the open round keeps its number whatever is kept");
        let mut round = Round::new(files, state);
        play_one(&mut round);
        std::fs::create_dir_all(kept_dir(&bets, 2)).unwrap();
        std::fs::write(kept_dir(&bets, 2).join("notes.txt"), "mine").unwrap();
        let err = round.open_next(1, 8).unwrap_err();
        assert!(matches!(err, RoundError::KeptBefore { .. }), "{err}");
        assert!(bets.exists(), "nothing moved");
    }

    #[test]
    fn a_new_round_on_empty_storage_follows_the_last_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let bets = dir.path().join("bets.csv");
        std::fs::create_dir_all(kept_dir(&bets, 41)).unwrap();
        std::fs::create_dir_all(dir.path().join(ROUNDS_DIR).join("not-a-round")).unwrap();
        let (_files, state, _) = open(&bets, 1).unwrap();
        assert_eq!(state.number(), 42);
    }
}
