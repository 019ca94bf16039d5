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

use protocol::BetRecord;

/// One row of the file, or why it is unusable, with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub line: u64,
    pub bet: Result<BetRecord, String>,
}

/// The rows of an agency file, read lazily.
pub struct AgencyFile<R> {
    records: csv::StringRecordsIntoIter<NewlineIndex<R>>,
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
        for (i, _) in buf[..n].iter().enumerate().filter(|(_, b)| **b == b'\n') {
            newlines.push_back(self.offset + i as u64);
        }
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
        let records = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(64 * 1024)
            .from_reader(indexed)
            .into_records();
        AgencyFile { records, newlines, line: 1 }
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
}

impl<R: Read> Iterator for AgencyFile<R> {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        let record = self.records.next()?;
        let start = match &record {
            Ok(r) => r.position().map_or(0, |p| p.byte()),
            Err(e) => e.position().map_or(0, |p| p.byte()),
        };
        let line = self.line_at(start);
        let bet = match record {
            Ok(r) if r.len() == 5 => Ok(BetRecord {
                first_name: r[0].to_owned(),
                last_name: r[1].to_owned(),
                document: r[2].to_owned(),
                birthdate: r[3].to_owned(),
                number: r[4].to_owned(),
            }),
            Ok(r) => Err(format!("expected 5 fields, found {}", r.len())),
            Err(e) => Err(match e.kind() {
                csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
                _ => e.to_string(),
            }),
        };
        Some(Row { line, bet })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &[u8]) -> Vec<Row> {
        AgencyFile::from_reader(text).collect()
    }

    #[test]
    fn reads_lf_crlf_quotes_and_accents() {
        let rows = rows(
            "Ana,Pérez,001,1990-01-01,7574\r\n\"Núñez, José\",\"O\"\"Neil\",2,1990-01-02,1\nLuis,Paz,3,1990-01-03,2".as_bytes(),
        );
        let bets: Vec<BetRecord> = rows.iter().map(|r| r.bet.clone().unwrap()).collect();
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(bets[0].document, "001");
        assert_eq!(bets[1].first_name, "Núñez, José");
        assert_eq!(bets[1].last_name, "O\"Neil");
        assert_eq!(bets[2].number, "2");
    }

    #[test]
    fn unusable_rows_are_reported_with_their_line_and_reading_goes_on() {
        let rows = rows(b"a,b,1,1990-01-01,1\na,b,1\n\xff,b,1,1990-01-01,1\nc,d,2,1990-01-01,2\n");
        assert!(rows[0].bet.is_ok());
        assert_eq!((rows[1].line, rows[1].bet.clone()), (2, Err("expected 5 fields, found 3".into())));
        assert_eq!((rows[2].line, rows[2].bet.clone()), (3, Err("not valid UTF-8".into())));
        assert_eq!(rows[3].line, 4);
        assert!(rows[3].bet.is_ok());
    }
}
