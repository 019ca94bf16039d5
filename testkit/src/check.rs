//! The checker of a round: the bets file against the agencies' files.
//!
//! The expected rows are made from the agency files independently of the
//! agency's own reader: the `csv` crate reads them, the domain's rules
//! validate each bet, and its row is written as the server writes rows.
//! The bets file is cut into rows and compared as a multiset, byte for
//! byte: every valid bet of every file exactly once, and nothing else.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use lottery::storage::row::{read_row, ReadRow};
use lottery::storage::write_row;
use lottery::BetRef;

/// What a round must end with.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    /// Each expected row (line end included) and how many times.
    rows: HashMap<Vec<u8>, usize>,
    /// Every agency's winners, in file order.
    pub winners: BTreeMap<u32, Vec<String>>,
    /// Valid bets in all.
    pub bets: usize,
}

/// Reads the agency files: `(agency, path)`.
pub fn expected(files: &[(u32, &Path)]) -> Expected {
    let mut expected = Expected::default();
    for &(agency, path) in files {
        let winners = expected.winners.entry(agency).or_default();
        each_valid_bet(agency, path, |row, winner| {
            *expected.rows.entry(row).or_default() += 1;
            expected.bets += 1;
            winners.extend(winner);
        });
    }
    expected
}

/// The rows the valid bets of `agency`'s file make, in the file's order
/// (the agency's ordinals), each as the server writes it.
pub fn ordered_rows(agency: u32, path: &Path) -> Vec<Vec<u8>> {
    let mut rows = Vec::new();
    each_valid_bet(agency, path, |row, _| rows.push(row));
    rows
}

/// Calls `visit` with the row of each valid bet of the file, in order, and
/// its document if it wins.
fn each_valid_bet(agency: u32, path: &Path, mut visit: impl FnMut(Vec<u8>, Option<String>)) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for record in reader.records() {
        let Ok(record) = record else { continue };
        let Some(fields) =
            (record.len() == 5).then(|| [&record[0], &record[1], &record[2], &record[3], &record[4]])
        else {
            continue;
        };
        let Ok(bet) = BetRef::parse(fields) else { continue };
        let mut row = Vec::new();
        write_row(&mut row, agency, &bet);
        visit(row, bet.has_won().then(|| bet.document.to_owned()));
    }
}

/// How a bets file compares with what was expected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub expected: usize,
    pub stored: usize,
    /// Expected bets not in the file.
    pub lost: usize,
    /// Copies of expected bets beyond the first.
    pub duplicated: usize,
    /// Rows that are no expected bet at all (or bytes that are no row).
    pub extra: usize,
}

impl Report {
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.extra == 0 && self.stored == self.expected
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bets expected, {} stored: {} lost, {} duplicated, {} extra",
            self.expected, self.stored, self.lost, self.duplicated, self.extra
        )
    }
}

/// Compares the bytes of a bets file with what was expected.
pub fn compare(bets_file: &[u8], expected: &Expected) -> Report {
    let mut stored: HashMap<&[u8], usize> = HashMap::new();
    let mut report = Report { expected: expected.bets, ..Report::default() };
    let mut rest = bets_file;
    while !rest.is_empty() {
        match read_row(rest) {
            ReadRow::Row { len, .. } => {
                *stored.entry(&rest[..len]).or_default() += 1;
                report.stored += 1;
                rest = &rest[len..];
            }
            ReadRow::Incomplete | ReadRow::Malformed(_) => {
                report.extra += 1;
                break;
            }
        }
    }
    for (row, &want) in &expected.rows {
        let have = stored.get(row.as_slice()).copied().unwrap_or(0);
        report.lost += want.saturating_sub(have);
        report.duplicated += have.saturating_sub(want);
    }
    report.extra +=
        stored.iter().filter(|(row, _)| !expected.rows.contains_key(**row)).map(|(_, n)| n).sum::<usize>();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_counts_lost_duplicated_and_extra_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agency-1.csv");
        std::fs::write(
            &path,
            "Ana,Paz,1,1999-03-17,7574\nBeto,Paz,2,1999-03-17,2\nbad,row\nCarla,Paz,3,1999-02-30,3\n",
        )
        .unwrap();
        let expected = expected(&[(1, &path)]);
        assert_eq!((expected.bets, expected.winners[&1].as_slice()), (2, &["1".to_owned()][..]));
        let ana = "1,Ana,Paz,1,1999-03-17,7574\n";
        let beto = "1,Beto,Paz,2,1999-03-17,2\n";
        assert!(compare(format!("{ana}{beto}").as_bytes(), &expected).exact());
        let twice = compare(format!("{ana}{ana}{beto}").as_bytes(), &expected);
        assert_eq!((twice.duplicated, twice.lost, twice.extra), (1, 0, 0));
        let short = compare(ana.as_bytes(), &expected);
        assert_eq!((short.lost, short.exact()), (1, false));
        let other = compare(format!("{ana}{beto}2,Ana,Paz,1,1999-03-17,7574\n1,Torn").as_bytes(), &expected);
        assert_eq!(other.extra, 2);
    }
}
