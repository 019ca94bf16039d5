//! The bets file, `bets.csv`.
//!
//! One row per bet, `agency,first_name,last_name,document,birthdate,number`,
//! no header, LF line ends, fields quoted only when they must be (a comma, a
//! quote or a line break inside).
//!
//! Nothing here is safe for concurrent use: two writers would interleave
//! rows, and a reader could see half a group. The server gives the file a
//! single owner (its writer task) and reads it back only after the draw,
//! when nobody writes any more.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use crate::bet::has_won;
use crate::bet::Bet;

/// A problem with the bets file.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{path}, line {line}: {reason}")]
    BadRow { path: PathBuf, line: u64, reason: String },
}

/// Writes `bets` as rows of the bets file to `out`.
pub fn store_bets<'a, W: Write>(out: W, bets: impl IntoIterator<Item = &'a Bet>) -> io::Result<()> {
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(out);
    // Numbers and dates are formatted on the stack: the writer runs once
    // per stored bet and should not allocate.
    let (mut agency, mut number) = (itoa::Buffer::new(), itoa::Buffer::new());
    for bet in bets {
        writer.write_field(agency.format(bet.agency))?;
        writer.write_field(&bet.first_name)?;
        writer.write_field(&bet.last_name)?;
        writer.write_field(&bet.document)?;
        writer.write_field(iso_date(bet.birthdate))?;
        writer.write_field(number.format(bet.number))?;
        writer.write_record(None::<&[u8]>)?;
    }
    writer.flush()
}

/// `YYYY-MM-DD` of a date whose year has four digits (as every valid bet's).
fn iso_date(date: jiff::civil::Date) -> [u8; 10] {
    let digits = |n: i16| -> [u8; 2] { [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8] };
    let year = date.year();
    let [y1, y2] = digits(year / 100);
    let [y3, y4] = digits(year % 100);
    let [m1, m2] = digits(date.month().into());
    let [d1, d2] = digits(date.day().into());
    [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2]
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
        let bad = |reason: String| StorageError::BadRow {
            path: self.path.clone(),
            line: row.position().map_or(0, |p| p.line()),
            reason,
        };
        if row.len() != 6 {
            return Err(bad(format!("expected 6 fields, found {}", row.len())));
        }
        let agency = row[0].parse().map_err(|_| bad(format!("agency {:?} is not a number", &row[0])))?;
        Bet::parse(agency, &row[1], &row[2], &row[3], &row[4], &row[5]).map_err(|e| bad(e.to_string()))
    }
}

/// The bets file, opened by its one owner for appending.
///
/// [`BetFile::append`] is all or nothing: it writes a group of bets, makes
/// them durable, and on any failure cuts the file back to where it was.
#[derive(Debug)]
pub struct BetFile {
    file: File,
    path: PathBuf,
    /// Length of the file up to the last durable group.
    len: u64,
    /// Rows of the group being written, reused between groups.
    buffer: Vec<u8>,
}

impl BetFile {
    /// Creates the file, or empties it: every run of the server is one draw.
    pub fn create(path: &Path) -> Result<BetFile, StorageError> {
        let io_err = |source| StorageError::Io { path: path.into(), source };
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(path).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        Ok(BetFile { file, path: path.into(), len: 0, buffer: Vec::with_capacity(64 * 1024) })
    }

    /// Appends every bet of `bets`, flushes and syncs them to disk.
    pub fn append<'a>(&mut self, bets: impl IntoIterator<Item = &'a Bet>) -> Result<(), StorageError> {
        self.buffer.clear();
        store_bets(&mut self.buffer, bets).map_err(|e| self.io_error(e))?;
        let written = self.write_durably();
        if let Err(e) = written {
            // Leave no part of the group behind; if even this fails the
            // error below still tells the caller nothing was acknowledged.
            let _ = self.file.set_len(self.len);
            return Err(self.io_error(e));
        }
        self.len += self.buffer.len() as u64;
        Ok(())
    }

    fn write_durably(&mut self) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        self.file.seek(SeekFrom::Start(self.len))?;
        self.file.write_all(&self.buffer)?;
        self.file.sync_data()
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, source: io::Error) -> StorageError {
        StorageError::Io { path: self.path.clone(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bet(agency: u32, first: &str, last: &str, number: u32) -> Bet {
        Bet::parse(agency, first, last, "0012345", "1999-03-17", &number.to_string()).unwrap()
    }

    #[test]
    fn rows_use_minimal_quoting() {
        let mut out = Vec::new();
        store_bets(&mut out, &[bet(1, "Santiago Lionel", "Lorca", 7574), bet(2, "Ana, \"la\"", "Núñez", 3)])
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1,Santiago Lionel,Lorca,0012345,1999-03-17,7574\n2,\"Ana, \"\"la\"\"\",Núñez,0012345,1999-03-17,3\n"
        );
    }

    #[test]
    fn appended_groups_load_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let mut file = BetFile::create(&path).unwrap();
        let first = [bet(1, "José María", "Pérez", 7574), bet(1, "Ana", "O'Brien", 12)];
        let second = [bet(2, "Zoë", "Multi\nline", 7574)];
        file.append(&first).unwrap();
        file.append(&second).unwrap();
        let loaded: Vec<Bet> = load_bets(&path).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(loaded, [first.as_slice(), second.as_slice()].concat());
        let winners: Vec<u32> = loaded.iter().filter(|b| has_won(b)).map(|b| b.agency).collect();
        assert_eq!(winners, [1, 2]);
    }

    #[test]
    fn creating_the_file_starts_a_new_draw() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        BetFile::create(&path).unwrap().append(&[bet(1, "A", "B", 1)]).unwrap();
        BetFile::create(&path).unwrap();
        assert_eq!(load_bets(&path).unwrap().count(), 0);
    }

    #[test]
    fn a_corrupt_row_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(&path, "1,A,B,1,1999-03-17,1\n1,A,B,1,1999-02-30,1\n").unwrap();
        let rows: Vec<_> = load_bets(&path).unwrap().collect();
        assert!(rows[0].is_ok());
        let err = rows[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("1999-02-30"), "{err}");
    }

    proptest! {
        #[test]
        fn any_valid_names_round_trip_byte_exact(
            first in "[^\u{0}]{1,30}".prop_filter("not blank", |s| !s.trim().is_empty()),
            last in "[ ,\"a-zñáéíóú\r\n]{0,30}".prop_filter("not blank", |s| !s.trim().is_empty()),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bets.csv");
            let b = bet(7, &first, &last, 42);
            BetFile::create(&path).unwrap().append([&b]).unwrap();
            let loaded: Vec<Bet> = load_bets(&path).unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(loaded, vec![b]);
        }
    }
}
