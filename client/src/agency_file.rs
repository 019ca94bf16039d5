//! Reading an agency's bets file as a stream of rows.
//!
//! Rows are `nombre,apellido,documento,nacimiento,numero`: no header, LF or
//! CRLF line ends, UTF-8, RFC 4180 quoting. Fields are passed on as text;
//! the server judges them. A row that cannot become a bet at all (wrong
//! number of fields, invalid UTF-8) is reported with its line.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use protocol::BetFields;

/// One row of the file, or why it is unusable, with the line it starts on.
/// The fields are borrowed from the reader until the next row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<'a> {
    pub line: u64,
    pub bet: Result<BetFields<'a>, RowError>,
}

/// Why a row gives no bet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowError {
    /// This row cannot be a bet (wrong number of fields, invalid UTF-8).
    Unusable(String),
    /// The file could not be read any further.
    Unreadable(String),
}

/// The rows of an agency file, read lazily.
pub struct AgencyFile<R> {
    reader: csv::Reader<NewlineIndex<R>>,
    /// Reused for every row.
    record: csv::ByteRecord,
    /// Byte offsets of the line feeds read but not yet passed by a row.
    newlines: Rc<RefCell<VecDeque<u64>>>,
    /// Line of the first byte after the last offset taken off `newlines`.
    line: u64,
}

/// Notes where each line feed is as bytes go through. The `csv` reader
/// counts lines only at `\n` that end a record the way it expects, which
/// goes wrong with CRLF; counting line feeds ourselves is exact.
struct NewlineIndex<R> {
    inner: R,
    offset: u64,
    newlines: Rc<RefCell<VecDeque<u64>>>,
}

impl<R: Read> Read for NewlineIndex<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut newlines = self.newlines.borrow_mut();
        newlines.extend(memchr::memchr_iter(b'\n', &buf[..n]).map(|i| self.offset + i as u64));
        self.offset += n as u64;
        Ok(n)
    }
}

impl AgencyFile<File> {
    pub fn open(path: &Path) -> io::Result<AgencyFile<File>> {
        Ok(AgencyFile::from_reader(File::open(path)?))
    }
}

impl<R: Read> AgencyFile<R> {
    pub fn from_reader(reader: R) -> AgencyFile<R> {
        let newlines = Rc::new(RefCell::new(VecDeque::new()));
        let indexed = NewlineIndex { inner: reader, offset: 0, newlines: newlines.clone() };
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(64 * 1024)
            .from_reader(indexed);
        AgencyFile { reader, record: csv::ByteRecord::new(), newlines, line: 1 }
    }

    /// The line of a record that `csv` says starts at `offset` (offsets
    /// only grow from call to call). After a CRLF, `csv` reports the start
    /// of the next record at the LF itself, hence `<=`: no record really
    /// starts on a line feed.
    fn line_at(&mut self, offset: u64) -> u64 {
        let mut newlines = self.newlines.borrow_mut();
        while newlines.front().is_some_and(|&at| at <= offset) {
            newlines.pop_front();
            self.line += 1;
        }
        self.line
    }

    /// The next row, or `None` at the end of the file.
    pub fn next_row(&mut self) -> Option<Row<'_>> {
        let read = self.reader.read_byte_record(&mut self.record);
        let start = match &read {
            Ok(_) => self.record.position().map_or(0, |p| p.byte()),
            Err(e) => e.position().map_or(0, |p| p.byte()),
        };
        let line = self.line_at(start);
        let bet = match read {
            Ok(false) => return None,
            Ok(true) => match self.record.len() {
                5 => fields(&self.record).ok_or_else(|| RowError::Unusable("not valid UTF-8".to_owned())),
                n => Err(RowError::Unusable(format!("expected 5 fields, found {n}"))),
            },
            Err(e) => Err(match e.kind() {
                csv::ErrorKind::Io(io) => RowError::Unreadable(io.to_string()),
                _ => RowError::Unusable(e.to_string()),
            }),
        };
        Some(Row { line, bet })
    }
}

/// The five fields of `record` as text, if each is UTF-8: the record's
/// bytes are checked in one pass, and a field is UTF-8 exactly when it
/// starts and ends on a character boundary of that whole.
fn fields(record: &csv::ByteRecord) -> Option<BetFields<'_>> {
    let whole = std::str::from_utf8(record.as_slice()).ok()?;
    let field = |i: usize| whole.get(record.range(i)?);
    Some([field(0)?, field(1)?, field(2)?, field(3)?, field(4)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row, with owned fields.
    fn rows(text: &[u8]) -> Vec<(u64, Result<Vec<String>, RowError>)> {
        let mut file = AgencyFile::from_reader(text);
        let mut rows = Vec::new();
        while let Some(row) = file.next_row() {
            rows.push((row.line, row.bet.map(|f| f.iter().map(|s| s.to_string()).collect())));
        }
        rows
    }

    #[test]
    fn reads_lf_crlf_quotes_and_accents() {
        let rows = rows(
            "Ana,Pérez,001,1990-01-01,7574\r\n\"Núñez, José\",\"O\"\"Neil\",2,1990-01-02,1\nLuis,Paz,3,1990-01-03,2".as_bytes(),
        );
        let bets: Vec<Vec<String>> = rows.iter().map(|r| r.1.clone().unwrap()).collect();
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(bets[0][2], "001");
        assert_eq!(bets[1][0], "Núñez, José");
        assert_eq!(bets[1][1], "O\"Neil");
        assert_eq!(bets[2][4], "2");
    }

    #[test]
    fn unusable_rows_are_reported_with_their_line_and_reading_goes_on() {
        let rows = rows(b"a,b,1,1990-01-01,1\na,b,1\n\xff,b,1,1990-01-01,1\nc,d,2,1990-01-01,2\n");
        assert!(rows[0].1.is_ok());
        assert_eq!(rows[1], (2, Err(RowError::Unusable("expected 5 fields, found 3".into()))));
        assert_eq!(rows[2], (3, Err(RowError::Unusable("not valid UTF-8".into()))));
        assert_eq!(rows[3].0, 4);
        assert!(rows[3].1.is_ok());
    }

    #[test]
    fn a_character_cut_in_two_by_a_comma_is_not_utf8() {
        // "é" is C3 A9: each half alone is invalid, together they are not.
        let rows = rows(b"a\xc3,\xa9b,1,1990-01-01,1\n\"a\xc3\xa9\",b,1,1990-01-01,1\n");
        assert_eq!(rows[0], (1, Err(RowError::Unusable("not valid UTF-8".into()))));
        assert_eq!(rows[1].1.clone().unwrap()[0], "aé");
    }
}
