//! Reading an agency's bets file as a stream of rows.
//!
//! Rows are `nombre,apellido,documento,nacimiento,numero`: no header, LF or
//! CRLF line ends, UTF-8, RFC 4180 quoting. Fields are passed on as text;
//! the server judges them. A row that cannot become a bet at all (wrong
//! number of fields, invalid UTF-8) is reported with its line.
//!
//! The file is read in chunks, each checked for UTF-8 in one pass; a row
//! without quotes (nearly all of them) is then cut at its commas right in
//! the chunk, with no copy. A row with quotes, or with a carriage return
//! inside, goes through the `csv` crate's parser, which reads it exactly
//! as the `csv` crate reads a whole file (a test compares the two).

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use csv_core::ReadRecordResult;
use protocol::BetFields;

/// One row of the file, or why it is unusable, with the line it starts on
/// and the offset of the byte after it. The fields are borrowed from the
/// reader for the visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<'a> {
    pub line: u64,
    /// Bytes of the file up to the end of this row: how far into the file
    /// it is.
    pub end: u64,
    pub bet: Result<BetFields<'a>, RowError>,
}

/// Why a row gives no bet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// This row cannot be a bet.
    #[error(transparent)]
    Unusable(#[from] Unusable),
    /// The file could not be read any further.
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
}

/// Why a row cannot be a bet at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("expected 5 fields, found {0}")]
    Fields(usize),
}

/// Why the file cannot be read any further.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unreadable {
    #[error("{0}")]
    Io(Arc<io::Error>),
    #[error("a row longer than {kib} KiB (a quote left open?)")]
    RowTooLong { kib: usize },
}

/// Two read errors are alike when they are of the same kind.
impl PartialEq for Unreadable {
    fn eq(&self, other: &Unreadable) -> bool {
        match (self, other) {
            (Unreadable::Io(a), Unreadable::Io(b)) => a.kind() == b.kind(),
            (Unreadable::RowTooLong { kib: a }, Unreadable::RowTooLong { kib: b }) => a == b,
            _ => false,
        }
    }
}

impl Eq for Unreadable {}

/// Bytes read at a time; a row must fit in them.
const CHUNK: usize = 256 * 1024;

/// The rows of an agency file, read lazily.
pub struct AgencyFile<R> {
    source: R,
    /// `CHUNK` bytes long (less in tests, to read in many chunks).
    buf: Vec<u8>,
    /// The bytes read and not yet parsed are `buf[pos..end]`.
    pos: usize,
    /// Bytes of the file before `buf[0]`.
    base: u64,
    end: usize,
    /// Whether `source` has no more bytes.
    eof: bool,
    /// Line of the file at `pos`.
    line: u64,
    quoted: Quoted,
}

/// The `csv` crate's parser, for rows with quotes, and where it writes
/// their fields, unquoted.
struct Quoted {
    parser: csv_core::Reader,
    fields: Vec<u8>,
    ends: Vec<usize>,
}

/// What parsing the rows in the buffer came to.
enum Parsed {
    /// The rest of the buffer is not a whole row: read more.
    NeedBytes,
    /// The file is done, or the visitor said stop.
    Done,
}

impl AgencyFile<File> {
    pub fn open(path: &Path) -> io::Result<AgencyFile<File>> {
        Ok(AgencyFile::from_reader(File::open(path)?))
    }
}

impl<R: Read> AgencyFile<R> {
    pub fn from_reader(source: R) -> AgencyFile<R> {
        AgencyFile::with_chunk(source, CHUNK)
    }

    fn with_chunk(source: R, chunk: usize) -> AgencyFile<R> {
        AgencyFile {
            source,
            buf: vec![0; chunk],
            pos: 0,
            base: 0,
            end: 0,
            eof: false,
            line: 1,
            quoted: Quoted { parser: csv_core::Reader::new(), fields: vec![0; 1024], ends: vec![0; 8] },
        }
    }

    /// Shows `visit` every row, in order, until it returns false or the
    /// file ends; an error reading the file is its last row.
    pub fn for_each_row(&mut self, mut visit: impl FnMut(Row<'_>) -> bool) {
        let mut first = true;
        loop {
            if let Err(e) = self.fill() {
                visit(Row {
                    line: self.line,
                    end: self.offset(),
                    bet: Err(Unreadable::Io(Arc::new(e)).into()),
                });
                return;
            }
            if first && self.buf[self.pos..self.end].starts_with(b"\xef\xbb\xbf") {
                self.pos += 3; // a byte order mark, as the csv crate skips it
            }
            first = false;
            let pos_before = self.pos;
            match self.rows(&mut visit) {
                Parsed::Done => return,
                Parsed::NeedBytes if self.pos == pos_before && self.end - self.pos == self.buf.len() => {
                    let too_long = Unreadable::RowTooLong { kib: self.buf.len() / 1024 };
                    visit(Row { line: self.line, end: self.offset(), bet: Err(too_long.into()) });
                    return;
                }
                Parsed::NeedBytes => {}
            }
        }
    }

    /// Moves what is left to the front and reads until the buffer is full
    /// or the file ends.
    fn fill(&mut self) -> io::Result<()> {
        self.base += self.pos as u64;
        self.buf.copy_within(self.pos..self.end, 0);
        self.end -= self.pos;
        self.pos = 0;
        while !self.eof && self.end < self.buf.len() {
            match self.source.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Bytes of the file before `buf[pos]`.
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Visits every whole row in the buffer.
    fn rows(&mut self, visit: &mut impl FnMut(Row<'_>) -> bool) -> Parsed {
        let bytes = &self.buf[..self.end];
        // The text checked so far: `bytes[text_at..text_at + text.len()]`.
        let (mut text_at, mut text) = (self.pos, "");
        loop {
            let rest = &bytes[self.pos..];
            // Line ends with no row before them are blank lines, no rows.
            let blank = rest.iter().take_while(|&&b| b == b'\n' || b == b'\r').count();
            if blank > 0 {
                self.pos += blank;
                self.line += memchr::memchr_iter(b'\n', &rest[..blank]).count() as u64;
                continue;
            }
            if rest.is_empty() {
                return if self.eof { Parsed::Done } else { Parsed::NeedBytes };
            }
            let (line_len, ends_line) = match memchr::memchr(b'\n', rest) {
                Some(at) => (at, true),
                None if self.eof => (rest.len(), false),
                None => return Parsed::NeedBytes,
            };
            let line = &rest[..line_len];
            let line = if line.last() == Some(&b'\r') { &line[..line.len() - 1] } else { line };
            let row_line = self.line;
            let scan = scan(line);
            let going = if !scan.special {
                let at = self.pos;
                self.pos += line_len + usize::from(ends_line);
                self.line += u64::from(ends_line);
                if at + line.len() > text_at + text.len() {
                    (text_at, text) = (at, checked_prefix(&bytes[at..]));
                }
                let bet = match (scan.count + 1, text.get(at - text_at..at - text_at + line.len())) {
                    (5, Some(row)) => Ok(split(row, scan.commas)),
                    (5, None) => Err(Unusable::NotUtf8.into()),
                    (n, _) => Err(Unusable::Fields(n).into()),
                };
                visit(Row { line: row_line, end: self.offset(), bet })
            } else {
                let Some((len, count)) = self.quoted.row(rest, self.eof) else { return Parsed::NeedBytes };
                self.pos += len;
                self.line += memchr::memchr_iter(b'\n', &rest[..len]).count() as u64;
                let bet = match count {
                    None => continue, // only blank lines, to the end of the file
                    Some(5) => quoted_fields(&self.quoted.fields, &self.quoted.ends[..5]),
                    Some(n) => Err(Unusable::Fields(n).into()),
                };
                visit(Row { line: row_line, end: self.offset(), bet })
            };
            if !going {
                return Parsed::Done;
            }
        }
    }
}

impl Quoted {
    /// Parses the row at the front of `rest`; returns the bytes it took and
    /// its number of fields (`None` if there was no row, only blank lines),
    /// or `None` if it goes on past `rest` and the file does too.
    fn row(&mut self, rest: &[u8], eof: bool) -> Option<(usize, Option<usize>)> {
        self.parser.reset();
        let (mut read, mut written, mut count) = (0, 0, 0);
        loop {
            let (result, nin, nout, nend) =
                self.parser.read_record(&rest[read..], &mut self.fields[written..], &mut self.ends[count..]);
            (read, written, count) = (read + nin, written + nout, count + nend);
            match result {
                ReadRecordResult::Record => return Some((read, Some(count))),
                ReadRecordResult::End => return Some((read, None)),
                ReadRecordResult::OutputFull => self.fields.resize(self.fields.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                // Its end is past the buffer: read more, then parse it again.
                ReadRecordResult::InputEmpty if !eof => return None,
                // At the end of the file, empty input ends the record.
                ReadRecordResult::InputEmpty => {}
            }
        }
    }
}

/// The longest prefix of `bytes` that is UTF-8, checked in one pass.
fn checked_prefix(bytes: &[u8]) -> &str {
    match simdutf8::compat::from_utf8(bytes) {
        Ok(text) => text,
        // A chunk often ends inside a character: the prefix is checked
        // again, as fast (the standard library's check is far slower).
        Err(e) => simdutf8::basic::from_utf8(&bytes[..e.valid_up_to()]).expect("valid up to there"),
    }
}

/// What one pass over a row finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scan {
    /// Where its first four commas are (0 past the last one).
    commas: [usize; 4],
    /// How many commas it has.
    count: usize,
    /// Whether it holds a quote or a carriage return: then it is no row
    /// to cut at its commas.
    special: bool,
}

/// Scans a row eight bytes at a time: each word gives the bytes that are
/// commas, quotes or carriage returns as bit masks, and only the commas
/// are visited one by one.
fn scan(row: &[u8]) -> Scan {
    let mut scan = Scan { commas: [0; 4], count: 0, special: false };
    let mut special = 0;
    let mut take = |word: u64, word_at: usize| {
        special |= equal_bytes(word, b'"') | equal_bytes(word, b'\r');
        let mut commas = equal_bytes(word, b',');
        while commas != 0 {
            if let Some(slot) = scan.commas.get_mut(scan.count) {
                *slot = word_at + commas.trailing_zeros() as usize / 8;
            }
            scan.count += 1;
            commas &= commas - 1;
        }
    };
    let word = |at: usize| u64::from_le_bytes(row[at..at + 8].try_into().expect("eight bytes"));
    let whole = row.len() / 8 * 8;
    for at in (0..whole).step_by(8) {
        take(word(at), at);
    }
    let rest = row.len() - whole;
    if rest > 0 && row.len() >= 8 {
        // The last eight bytes, shifted so that the ones already taken
        // fall off: zeros come in, and a zero is none of the three.
        take(word(row.len() - 8) >> (8 * (8 - rest)), whole);
    } else if rest > 0 {
        let mut last = [0; 8];
        last[..rest].copy_from_slice(&row[whole..]);
        take(u64::from_le_bytes(last), whole);
    }
    scan.special = special != 0;
    scan
}

/// The high bit of every byte of `word` that is `byte`, and no other bit.
/// (Bit 7 of `(x & 0x7f) + 0x7f | x` is set exactly when the byte `x` is
/// not zero, and no carry crosses into the next byte.)
fn equal_bytes(word: u64, byte: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ (u64::from_ne_bytes([byte; 8]));
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// The fields of a row without quotes, cut at its four commas (ASCII, so
/// every cut is on a character boundary).
fn split(row: &str, [a, b, c, d]: [usize; 4]) -> BetFields<'_> {
    [&row[..a], &row[a + 1..b], &row[b + 1..c], &row[c + 1..d], &row[d + 1..]]
}

/// The five fields the `csv` parser wrote, back to back, if each is UTF-8:
/// they are checked in one pass, and a field is UTF-8 exactly when it
/// starts and ends on a character boundary of that whole.
fn quoted_fields<'a>(fields: &'a [u8], ends: &[usize]) -> Result<BetFields<'a>, RowError> {
    let not_utf8 = || RowError::Unusable(Unusable::NotUtf8);
    let whole = std::str::from_utf8(&fields[..ends[4]]).map_err(|_| not_utf8())?;
    let range = |i: usize| -> Range<usize> {
        if i == 0 {
            0..ends[0]
        } else {
            ends[i - 1]..ends[i]
        }
    };
    let field = |i: usize| whole.get(range(i)).ok_or_else(not_utf8);
    Ok([field(0)?, field(1)?, field(2)?, field(3)?, field(4)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every row, with owned fields.
    fn rows(text: &[u8]) -> Vec<(u64, Result<Vec<String>, RowError>)> {
        let mut rows = Vec::new();
        AgencyFile::from_reader(text).for_each_row(|row| {
            rows.push((row.line, row.bet.map(|f| f.iter().map(|s| s.to_string()).collect())));
            true
        });
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
        assert_eq!(rows[1], (2, Err(RowError::Unusable(Unusable::Fields(3)))));
        assert_eq!(rows[2], (3, Err(RowError::Unusable(Unusable::NotUtf8))));
        assert_eq!(rows[3].0, 4);
        assert!(rows[3].1.is_ok());
    }

    /// What the `csv` crate reads in `text`: each record's line, and its
    /// five fields if it has five and each is UTF-8.
    fn csv_crate_rows(text: &[u8]) -> Vec<(u64, Result<Vec<String>, RowError>)> {
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text);
        let mut record = csv::ByteRecord::new();
        let mut rows = Vec::new();
        while reader.read_byte_record(&mut record).unwrap() {
            // The record's position is where the csv crate started to look
            // for it: blank lines before it are not its lines.
            let start = record.position().unwrap().byte() as usize;
            let start = start + text[start..].iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
            let line = 1 + memchr::memchr_iter(b'\n', &text[..start]).count() as u64;
            let fields: Vec<_> = record.iter().map(|f| std::str::from_utf8(f).map(str::to_owned)).collect();
            let bet = match fields.len() {
                5 => fields
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| RowError::Unusable(Unusable::NotUtf8)),
                n => Err(RowError::Unusable(Unusable::Fields(n))),
            };
            rows.push((line, bet));
        }
        rows
    }

    /// Rows of fields from a small alphabet: quotes, commas, line ends
    /// and bytes that are not UTF-8 come often.
    fn file() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop::sample::select(vec![
            b"a".to_vec(),
            b"1".to_vec(),
            b",".to_vec(),
            b"\"".to_vec(),
            b"\r".to_vec(),
            b"\n".to_vec(),
            "ñ".as_bytes().to_vec(),
            vec![0xc3],
            vec![0xff],
            b" ".to_vec(),
        ]);
        let row = prop::collection::vec(byte, 0..24).prop_map(|parts| parts.concat());
        let ending = prop::sample::select(vec!["\n", "\r\n", ""]);
        prop::collection::vec((row, ending), 0..12).prop_map(|rows| {
            rows.into_iter().flat_map(|(r, e)| [r, e.as_bytes().to_vec()]).flatten().collect()
        })
    }

    /// Where each row of `text` ends, read in chunks of `chunk` bytes, up
    /// to a row longer than a chunk (which stops the reading).
    fn ends(text: &[u8], chunk: usize) -> Vec<u64> {
        let mut ends = Vec::new();
        AgencyFile::with_chunk(text, chunk).for_each_row(|row| {
            if !matches!(row.bet, Err(RowError::Unreadable(_))) {
                ends.push(row.end);
            }
            true
        });
        ends
    }

    #[test]
    fn a_row_ends_after_its_line_end_and_blank_lines_are_no_row() {
        let text = b"\xef\xbb\xbfA,B,1,1999-03-17,1\r\n\nC,D,2,1999-03-17,2\n\"E\",F,3,1999-03-17,3";
        assert_eq!(ends(text, 4096), [23, 43, text.len() as u64]);
        assert_eq!(ends(text, 64), [23, 43, text.len() as u64]);
    }

    proptest::proptest! {
        #[test]
        fn rows_end_on_line_ends_in_order_in_any_chunks(text in file(), chunk in 64usize..200) {
            let whole = ends(&text, 4096);
            let chunked = ends(&text, chunk);
            prop_assert_eq!(&chunked[..], &whole[..chunked.len()]);
            prop_assert!(whole.windows(2).all(|w| w[0] < w[1]), "{:?}", whole);
            for &end in &whole {
                let end = end as usize;
                // The csv crate's rule, for rows with quotes: a lone
                // carriage return ends a row too.
                let line_end = end == text.len() || matches!(text[end - 1], b'\n' | b'\r');
                prop_assert!(line_end, "{} of {}", end, text.len());
            }
        }

        #[test]
        fn rows_are_what_the_csv_crate_reads_in_any_chunks(text in file(), chunk in 64usize..200) {
            let mut rows = Vec::new();
            AgencyFile::with_chunk(text.as_slice(), chunk).for_each_row(|row| {
                rows.push((row.line, row.bet.map(|f| f.iter().map(|s| s.to_string()).collect())));
                true
            });
            let expected = csv_crate_rows(&text);
            match rows.last() {
                // A record longer than the buffer (an open quote runs to
                // the end) stops the reading; what came before is right.
                Some((_, Err(RowError::Unreadable(e)))) => {
                    prop_assert!(matches!(e, Unreadable::RowTooLong { .. }), "{}", e);
                    prop_assert!(text.len() >= chunk);
                    prop_assert_eq!(&rows[..rows.len() - 1], &expected[..rows.len() - 1]);
                }
                _ => prop_assert_eq!(rows, expected),
            }
        }

        #[test]
        fn a_scan_finds_what_a_walk_over_every_byte_finds(
            row in prop::collection::vec(prop::sample::select(b",\"\r\n\0a\xac\x2b\x2d".to_vec()), 0..70),
        ) {
            let commas: Vec<usize> = (0..row.len()).filter(|&i| row[i] == b',').collect();
            let mut first = [0; 4];
            for (slot, &at) in first.iter_mut().zip(&commas) {
                *slot = at;
            }
            let special = row.iter().any(|&b| b == b'"' || b == b'\r');
            prop_assert_eq!(scan(&row), Scan { commas: first, count: commas.len(), special });
        }
    }

    #[test]
    fn a_row_longer_than_the_buffer_is_an_error_that_names_its_line() {
        let text = format!("a,b,1,1990-01-01,1\n\"{}\n", "x".repeat(300));
        let rows = {
            let mut rows = Vec::new();
            AgencyFile::with_chunk(text.as_bytes(), 128).for_each_row(|row| {
                rows.push((row.line, row.bet.map(|f| f.len())));
                true
            });
            rows
        };
        assert_eq!(rows[0], (1, Ok(5)));
        assert!(
            matches!(&rows[1], (2, Err(RowError::Unreadable(Unreadable::RowTooLong { .. })))),
            "{rows:?}"
        );
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn a_byte_order_mark_at_the_start_is_skipped() {
        let rows = rows("\u{feff}Ana,Paz,1,1990-01-01,1\n".as_bytes());
        assert_eq!(rows[0].1.clone().unwrap()[0], "Ana");
    }

    #[test]
    fn a_character_cut_in_two_by_a_comma_is_not_utf8() {
        // "é" is C3 A9: each half alone is invalid, together they are not.
        let rows = rows(b"a\xc3,\xa9b,1,1990-01-01,1\n\"a\xc3\xa9\",b,1,1990-01-01,1\n");
        assert_eq!(rows[0], (1, Err(RowError::Unusable(Unusable::NotUtf8))));
        assert_eq!(rows[1].1.clone().unwrap()[0], "aé");
    }
}
