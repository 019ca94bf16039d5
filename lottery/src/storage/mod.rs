//! The bets file, `bets.csv`.
//!
//! One row per bet, `agency,first_name,last_name,document,birthdate,number`,
//! no header, LF line ends, fields quoted only when they must be (a comma, a
//! quote or a line break inside).
//!
//! - [`store_bets`], [`load_bets`] and [`has_won`]: the course's utilities.
//! - [`row`]: one row, written and read by hand, byte-exact.
//! - [`file`]: an append-only file that takes whole groups, each durable.
//! - [`mod@scan`]: reading the file back after a crash.
//! - [`timing`]: how long syncs take.
//!
//! Nothing here is safe for concurrent use: two writers would interleave
//! rows, and a reader could see half a group. The server gives the file a
//! single owner (its writer task), and a lock keeps a second server away
//! (see [`crate::round`]).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub mod disk;
pub(crate) mod file;
pub mod row;
pub mod scan;
pub mod timing;

pub use crate::bet::has_won;
use crate::bet::{Bet, InvalidBet};
pub use file::{AppendError, AppendFile};
pub use row::write_row;
pub use scan::{scan, AgencyBets, Scan};

/// A problem with the bets file or a file beside it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{path}, line {line}: {problem}")]
    BadRow { path: PathBuf, line: u64, problem: BadRow },
    #[error("{path}: {write}; then cutting back failed: {cut}")]
    CutBack { path: PathBuf, write: io::Error, cut: io::Error },
    #[error("{path}: holds {actual} bytes where {expected} were expected")]
    Length { path: PathBuf, actual: u64, expected: u64 },
    #[error("{path}: the round's file is gone: {why}; the server stops without acknowledging another bet")]
    Gone { path: PathBuf, why: Gone },
}

/// How a round's file left the place where the server keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Gone {
    #[error("it was deleted")]
    Deleted,
    #[error("its path names nothing any more (the file or its folder was moved or deleted)")]
    Missing,
    #[error("its path names another file")]
    Replaced,
}

/// Why a row of the bets file is not a bet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRow {
    #[error("expected 6 fields, found {0}")]
    Fields(usize),
    #[error("agency {0:?} is not a number")]
    Agency(String),
    #[error(transparent)]
    Bet(#[from] InvalidBet),
}

impl StorageError {
    pub fn io(path: &Path, source: io::Error) -> StorageError {
        StorageError::Io { path: path.into(), source }
    }
}

/// Writes `bets` as rows of the bets file to `out`.
pub fn store_bets<'a, W: Write>(mut out: W, bets: impl IntoIterator<Item = &'a Bet>) -> io::Result<()> {
    let mut rows = Vec::new();
    for bet in bets {
        write_row(&mut rows, bet.agency, &bet.as_ref());
    }
    out.write_all(&rows)?;
    out.flush()
}

/// Reads the bets file back, one bet at a time, never holding all of it.
pub fn load_bets(path: &Path) -> Result<BetRows, StorageError> {
    let file = File::open(path).map_err(|source| StorageError::Io { path: path.into(), source })?;
    let reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_reader(file);
    Ok(BetRows { reader, record: csv::StringRecord::new(), path: path.to_path_buf() })
}

/// The bets of the bets file, in order; see [`load_bets`].
pub struct BetRows {
    reader: csv::Reader<File>,
    /// Reused for every row.
    record: csv::StringRecord,
    path: PathBuf,
}

impl Iterator for BetRows {
    type Item = Result<Bet, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.reader.read_record(&mut self.record) {
            Ok(true) => Some(self.bet()),
            Ok(false) => None,
            Err(source) => Some(Err(StorageError::Csv { path: self.path.clone(), source })),
        }
    }
}

impl BetRows {
    fn bet(&self) -> Result<Bet, StorageError> {
        let row = &self.record;
        let bad = |problem: BadRow| StorageError::BadRow {
            path: self.path.clone(),
            line: row.position().map_or(0, |p| p.line()),
            problem,
        };
        if row.len() != 6 {
            return Err(bad(BadRow::Fields(row.len())));
        }
        let agency = row[0].parse().map_err(|_| bad(BadRow::Agency(row[0].to_owned())))?;
        Bet::parse(agency, &row[1], &row[2], &row[3], &row[4], &row[5]).map_err(|e| bad(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bet(agency: u32, first: &str, last: &str, number: u32) -> Bet {
        Bet::parse(agency, first, last, "0012345", "1999-03-17", &number.to_string()).unwrap()
    }

    fn stored(bets: &[Bet]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        store_bets(File::create(&path).unwrap(), bets).unwrap();
        (dir, path)
    }

    #[test]
    fn stored_bets_load_back_in_order() {
        let bets = [
            bet(1, "José María", "Pérez", 7574),
            bet(1, "Ana", "O'Brien", 12),
            bet(2, "Zoë", "Multi\nline", 7574),
        ];
        let (_dir, path) = stored(&bets);
        let loaded: Vec<Bet> = load_bets(&path).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(loaded, bets);
        let winners: Vec<u32> = loaded.iter().filter(|b| has_won(b)).map(|b| b.agency).collect();
        assert_eq!(winners, [1, 2]);
    }

    #[test]
    fn a_corrupt_row_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(&path, "1,A,B,1,1999-03-17,1\n1,A,B,1,1999-02-30,1\n").unwrap();
        let rows: Vec<_> = load_bets(&path).unwrap().collect();
        assert!(rows[0].is_ok());
        let Err(StorageError::BadRow { line, problem, .. }) = &rows[1] else { panic!("{rows:?}") };
        assert_eq!(*line, 2);
        assert_eq!(*problem, BadRow::Bet(InvalidBet::Birthdate("1999-02-30".into())));
    }

    proptest! {
        #[test]
        fn any_valid_names_round_trip_byte_exact(
            first in "[^\u{0}]{1,30}".prop_filter("not blank", |s| !s.trim().is_empty()),
            last in "[ ,\"a-zñáéíóú\r\n]{0,30}".prop_filter("not blank", |s| !s.trim().is_empty()),
        ) {
            let b = bet(7, &first, &last, 42);
            let (_dir, path) = stored(std::slice::from_ref(&b));
            let loaded: Vec<Bet> = load_bets(&path).unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(loaded, vec![b]);
        }
    }
}
