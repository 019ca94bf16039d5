//! One row of `bets.csv`: written by hand, read back by hand.
//!
//! Rows are `agency,first_name,last_name,document,birthdate,number\n`,
//! fields quoted only when they hold a comma, a quote or a line break
//! (quotes inside doubled): byte for byte what the `csv` crate writes with
//! its defaults, which a test checks. Writing by hand keeps the hot path
//! free of a CSV writer per group and lets the server encode a batch's rows
//! in the session that received it. Reading by hand gives recovery the
//! exact byte where each row ends.

use std::borrow::Cow;

use crate::bet::BetRef;

/// Fields per row.
pub const FIELDS: usize = 6;

/// The most bytes of rows a batch of valid bets makes, for every byte its
/// bets take on the wire. A valid bet's row is its agency (at most 10
/// digits), 5 commas, a line end, its three text fields with their quotes
/// doubled and 2 quotes each (2 × their bytes + 6), its date as sent (10
/// bytes) and its number (no longer than sent): at most
/// 2 × (its field bytes) + 14, and on the wire it takes its field bytes
/// plus 10 bytes of lengths, so a row is at most twice the bet's wire size.
pub const ROW_BYTES_PER_WIRE_BYTE: usize = 2;

/// Appends the row of `bet` of `agency` to `out`, line end included.
pub fn write_row(out: &mut Vec<u8>, agency: u32, bet: &BetRef<'_>) {
    let before = out.len();
    // Room for the longest row these fields make: no growth midway.
    out.reserve(34 + 2 * (bet.first_name.len() + bet.last_name.len() + bet.document.len()));
    out.extend_from_slice(itoa::Buffer::new().format(agency).as_bytes());
    for text in [bet.first_name, bet.last_name, bet.document] {
        out.push(b',');
        write_field(out, text);
    }
    out.push(b',');
    out.extend_from_slice(&iso_date(bet.birthdate));
    out.push(b',');
    out.extend_from_slice(itoa::Buffer::new().format(bet.number).as_bytes());
    out.push(b'\n');
    debug_assert!(out.len() - before >= 21, "a row holds at least its separators, date and digits");
    // Paired with recovery's reading: what is written reads back as one row.
    debug_assert!(
        matches!(read_row(&out[before..]), ReadRow::Row { len, .. } if len == out.len() - before),
        "a row written reads back whole"
    );
}

fn write_field(out: &mut Vec<u8>, text: &str) {
    // Every byte is looked at (no early exit), which the compiler turns
    // into a few wide compares for a field this short.
    let special = text.bytes().fold(false, |found, b| found | matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if !special {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    out.push(b'"');
    for b in text.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// `YYYY-MM-DD` of a date whose year has four digits (as every valid bet's).
fn iso_date(date: jiff::civil::Date) -> [u8; 10] {
    let digits = |n: i16| -> [u8; 2] { [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8] };
    let year = date.year();
    assert!((0..=9999).contains(&year), "a valid bet's year has four digits");
    let [y1, y2] = digits(year / 100);
    let [y3, y4] = digits(year % 100);
    let [m1, m2] = digits(date.month().into());
    let [d1, d2] = digits(date.day().into());
    [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2]
}

/// What [`read_row`] finds at the front of some bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadRow<'a> {
    /// A whole row of `len` bytes (line end included) and its fields.
    Row { fields: Vec<Cow<'a, [u8]>>, len: usize },
    /// The bytes end before the row does.
    Incomplete,
    /// Not a row this module writes.
    Malformed(Malformed),
}

/// How bytes fail to be a row as [`write_row`] writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("a field ends in something else than a comma or a line end")]
    FieldEnd,
}

/// Reads the row at the front of `bytes`, the way [`write_row`] writes
/// it: fields separated by commas, quoted fields with doubled quotes, a
/// line feed at the end.
pub fn read_row(bytes: &[u8]) -> ReadRow<'_> {
    let mut fields = Vec::with_capacity(FIELDS);
    let mut at = 0;
    loop {
        let (field, end) = if bytes.get(at) == Some(&b'"') {
            match quoted(&bytes[at + 1..]) {
                Ok((field, used)) => (field, at + 1 + used),
                Err(read) => return read,
            }
        } else {
            let len = bytes[at..].iter().position(|&b| matches!(b, b',' | b'\n' | b'"' | b'\r'));
            match len {
                Some(len) => (Cow::Borrowed(&bytes[at..at + len]), at + len),
                None => return ReadRow::Incomplete,
            }
        };
        fields.push(field);
        match bytes.get(end) {
            Some(b',') => at = end + 1,
            Some(b'\n') => return ReadRow::Row { fields, len: end + 1 },
            Some(_) => return ReadRow::Malformed(Malformed::FieldEnd),
            None => return ReadRow::Incomplete,
        }
    }
}

/// The field inside quotes that start just before `bytes`; returns it and
/// how many bytes it took, closing quote included.
fn quoted(bytes: &[u8]) -> Result<(Cow<'_, [u8]>, usize), ReadRow<'_>> {
    let mut field = Vec::new();
    let mut at = 0;
    loop {
        let Some(quote) = bytes[at..].iter().position(|&b| b == b'"') else {
            return Err(ReadRow::Incomplete);
        };
        field.extend_from_slice(&bytes[at..at + quote]);
        at += quote + 1;
        match bytes.get(at) {
            Some(b'"') => {
                field.push(b'"');
                at += 1;
            }
            Some(_) => return Ok((Cow::Owned(field), at)),
            None => return Err(ReadRow::Incomplete),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bet::BetRef;
    use proptest::prelude::*;

    fn bet<'a>(first: &'a str, last: &'a str) -> BetRef<'a> {
        BetRef::parse([first, last, "0012345", "1999-03-17", "07574"]).unwrap()
    }

    fn csv_crate_row(agency: u32, bet: &BetRef<'_>) -> Vec<u8> {
        let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        let date = String::from_utf8(iso_date(bet.birthdate).to_vec()).unwrap();
        let record = [
            agency.to_string(),
            bet.first_name.into(),
            bet.last_name.into(),
            bet.document.into(),
            date,
            bet.number.to_string(),
        ];
        writer.write_record(&record).unwrap();
        writer.into_inner().unwrap()
    }

    #[test]
    fn rows_use_minimal_quoting_and_canonical_numbers() {
        let mut out = Vec::new();
        write_row(&mut out, 1, &bet("Santiago Lionel", "Lorca"));
        write_row(&mut out, 2, &bet("Ana, \"la\"", "Núñez"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1,Santiago Lionel,Lorca,0012345,1999-03-17,7574\n2,\"Ana, \"\"la\"\"\",Núñez,0012345,1999-03-17,7574\n"
        );
    }

    #[test]
    fn a_row_cut_anywhere_is_incomplete_never_a_shorter_row() {
        let mut row = Vec::new();
        write_row(&mut row, 12, &bet("Multi\nline \"quoted\"", "a,b"));
        for cut in 0..row.len() {
            assert_eq!(read_row(&row[..cut]), ReadRow::Incomplete, "cut at {cut}");
        }
        assert!(matches!(read_row(&row), ReadRow::Row { len, .. } if len == row.len()));
    }

    #[test]
    fn a_stray_quote_or_carriage_return_is_malformed() {
        assert_eq!(read_row(b"1,a\"b,c\n"), ReadRow::Malformed(Malformed::FieldEnd));
        assert_eq!(read_row(b"1,\"a\"b,c\n"), ReadRow::Malformed(Malformed::FieldEnd));
        assert_eq!(read_row(b"1,a\r\n"), ReadRow::Malformed(Malformed::FieldEnd));
    }

    proptest! {
        #[test]
        fn a_valid_bets_row_is_at_most_twice_its_wire_size(
            agency in any::<u32>(),
            first in "[\"\n,a]{1,40}".prop_filter("not blank", |s| !s.trim().is_empty()),
            last in "\"{1,40}",
            document in "[0-9]{1,12}",
            number in "0{0,5}[0-9]{1,5}",
        ) {
            let b = BetRef::parse([&first, &last, &document, "1999-03-17", &number]).unwrap();
            let mut row = Vec::new();
            write_row(&mut row, agency, &b);
            let wire: usize = 10 + [&first, &last, &document, "1999-03-17", &number].iter().map(|f| f.len()).sum::<usize>();
            prop_assert!(row.len() <= ROW_BYTES_PER_WIRE_BYTE * wire, "{} bytes of row for {} on the wire", row.len(), wire);
        }

        #[test]
        fn rows_are_what_the_csv_crate_writes_and_read_back_to_the_same_fields(
            agency in 1u32..1_000_000,
            first in "[^\u{0}]{1,30}".prop_filter("not blank", |s| !s.trim().is_empty()),
            last in "[ ,\"a-zñáéíóú\r\n]{0,30}".prop_filter("not blank", |s| !s.trim().is_empty()),
        ) {
            let b = bet(&first, &last);
            let mut row = Vec::new();
            write_row(&mut row, agency, &b);
            prop_assert_eq!(&row, &csv_crate_row(agency, &b));
            let ReadRow::Row { fields, len } = read_row(&row) else { panic!("not read back") };
            prop_assert_eq!(len, row.len());
            let agency_text = agency.to_string();
            let expected: [&[u8]; FIELDS] = [
                agency_text.as_bytes(), first.as_bytes(), last.as_bytes(), b"0012345", b"1999-03-17", b"7574",
            ];
            prop_assert_eq!(fields.iter().map(|f| f.as_ref()).collect::<Vec<_>>(), expected.to_vec());
        }
    }
}
