//! Reading `bets.csv` back when a server starts on a round in progress.
//!
//! The server appends whole groups and acknowledges a group only after
//! `fdatasync`. After a crash the file is therefore its acknowledged rows,
//! possibly followed by rows (or part of a row) that were written but
//! never acknowledged. And since a sync makes every earlier byte of the
//! file durable too, anything unreadable means that nothing after it was
//! ever synced. [`scan`] reads the longest run of whole, valid rows from
//! the start, rebuilds each agency's [`Progress`] and winners from it, and
//! says where that run ends: the caller cuts the rest.
//!
//! A row counts only if it is exactly what the server would write for the
//! bet it holds (checked by writing it again), so a row cut short that
//! still parses, `…,1999-03-17,75` for `…,7574`, cannot pass.

use std::borrow::Cow;
use std::io::{self, Read};
use std::path::Path;

use super::disk::Disk;
use super::row::{read_row, write_row, Malformed, ReadRow, FIELDS};
use super::StorageError;
use crate::bet::{BetRef, InvalidBet};
use crate::progress::Progress;
use crate::round::BetsDigest;

/// Longest row the scan waits for; rows the server writes are far shorter
/// (a bet fits in an 8 KiB frame, and quoting at most doubles it).
const MAX_ROW_LEN: usize = 64 * 1024;

/// Bytes read from the file at a time.
const CHUNK: usize = 1024 * 1024;

const _: () = assert!(MAX_ROW_LEN < CHUNK, "a whole row always fits in the buffer");

/// The most bytes after the first bad row that the scan reads to count the
/// valid rows among them; a longer rest is not a torn tail anyway.
pub const MAX_TAIL_LOOKED_AT: u64 = 16 * 1024 * 1024;

/// What the bets file holds.
#[derive(Debug, Default)]
pub struct Scan {
    /// Bytes of whole, valid rows from the start of the file.
    pub valid_len: u64,
    /// Bytes in the file.
    pub file_len: u64,
    /// Why the valid rows end before the file does, when they do.
    pub stopped: Option<RowFault>,
    /// Whole, valid rows found after that point (looked for only when the
    /// rest of the file is at most [`MAX_TAIL_LOOKED_AT`] bytes). A torn
    /// last group may hold a few; many mean the bad bytes sit inside data
    /// that was synced, not at the end of it.
    pub rows_after_stop: usize,
    /// The stored bets of agency K at index K − 1.
    pub agencies: Vec<AgencyBets>,
    /// The digest of every valid row, to be carried on as they are appended.
    pub digest: BetsDigest,
    /// The digest at each checkpoint asked for that is where a valid row ends.
    pub digests: Vec<(u64, u64)>,
    /// Whole, valid rows that start at or after the offset
    /// [`scan_watching`] was given.
    pub late_rows: usize,
}

impl Scan {
    /// Every bet counted, all agencies together.
    pub fn bets(&self) -> u64 {
        self.agencies.iter().map(|a| a.progress.bets()).sum()
    }
}

/// Why the valid rows of the bets file end where they do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("byte {at}: {problem}")]
pub struct RowFault {
    /// The offset where the valid rows end.
    pub at: u64,
    pub problem: RowProblem,
}

/// What is wrong with the bytes after the valid rows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowProblem {
    #[error("the last {0} bytes are not a whole row")]
    Torn(usize),
    #[error("no line end within {MAX_ROW_LEN} bytes")]
    NoLineEnd,
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error("a field is not valid UTF-8")]
    NotUtf8,
    #[error("{0} fields where a row has {FIELDS}")]
    Fields(usize),
    #[error("agency {found:?} is not one of 1..={agencies}")]
    Agency { found: String, agencies: u32 },
    #[error(transparent)]
    Bet(#[from] InvalidBet),
    #[error("the row is not written the way the server writes it")]
    NotAsWritten,
}

/// What one agency has in the file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AgencyBets {
    pub progress: Progress,
    /// Documents of its winning bets, in file order.
    pub winners: Vec<String>,
}

/// Reads the bets file of a round of `agencies` agencies; a missing file
/// holds nothing. `checkpoints` are offsets (ascending) at which the
/// digest of the bytes before is wanted (see [`Scan::digest_at`]).
pub fn scan(disk: &dyn Disk, path: &Path, agencies: u32, checkpoints: &[u64]) -> Result<Scan, StorageError> {
    scan_watching(disk, path, agencies, checkpoints, u64::MAX)
}

/// [`scan`], counting the valid rows that start at or after `late_from`
/// ([`Scan::late_rows`]).
pub fn scan_watching(
    disk: &dyn Disk,
    path: &Path,
    agencies: u32,
    checkpoints: &[u64],
    late_from: u64,
) -> Result<Scan, StorageError> {
    assert!(checkpoints.is_sorted(), "checkpoints come in the order they were made");
    let io_err = |source| StorageError::io(path, source);
    let mut scan = Scan { agencies: vec![AgencyBets::default(); agencies as usize], ..Scan::default() };
    let mut file = match disk.open_read(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(scan),
        Err(e) => return Err(io_err(e)),
    };
    scan.file_len = disk.len(path).map_err(io_err)?;
    let mut reading = Reading { buf: Vec::with_capacity(CHUNK), start: 0, hashed: 0, eof: false };
    let mut checkpoints = checkpoints.iter().copied().peekable();
    let mut again = Vec::with_capacity(512);
    loop {
        // A checkpoint passed inside a row is not where a row ends: it gets
        // no digest, and the caller refuses it.
        while checkpoints.next_if(|&at| at < scan.valid_len).is_some() {}
        if checkpoints.next_if_eq(&scan.valid_len).is_some() {
            reading.hash(&mut scan.digest);
            scan.digests.push((scan.valid_len, scan.digest.digest()));
        }
        let problem = match read_row(&reading.buf[reading.start..]) {
            ReadRow::Row { fields, len } => {
                let raw = &reading.buf[reading.start..reading.start + len];
                match check_row(&fields, raw, agencies, &mut again) {
                    Ok((agency, winner)) => {
                        scan.late_rows += usize::from(scan.valid_len >= late_from);
                        scan.count(agency, raw, winner);
                        reading.start += len;
                        continue;
                    }
                    Err(problem) => problem,
                }
            }
            ReadRow::Incomplete if reading.eof => match reading.buf.len() - reading.start {
                0 => break,
                torn => RowProblem::Torn(torn),
            },
            ReadRow::Incomplete if reading.buf.len() - reading.start > MAX_ROW_LEN => RowProblem::NoLineEnd,
            ReadRow::Incomplete => {
                reading.hash(&mut scan.digest);
                reading.fill(&mut file).map_err(io_err)?;
                continue;
            }
            ReadRow::Malformed(malformed) => malformed.into(),
        };
        scan.stopped = Some(RowFault { at: scan.valid_len, problem });
        break;
    }
    reading.hash(&mut scan.digest);
    if scan.stopped.is_some() && scan.file_len - scan.valid_len <= MAX_TAIL_LOOKED_AT {
        let mut rest = reading.buf.split_off(reading.start);
        file.read_to_end(&mut rest).map_err(io_err)?;
        scan.rows_after_stop = count_rows(&rest, agencies, &mut again);
    }
    assert!(scan.valid_len <= scan.file_len, "the rows read lie inside the file");
    assert_eq!(scan.stopped.is_some(), scan.valid_len < scan.file_len, "rows stop early only with a reason");
    Ok(scan)
}

impl Scan {
    /// Counts one valid row of `agency`.
    fn count(&mut self, agency: u32, raw: &[u8], winner: Option<String>) {
        let bets = &mut self.agencies[agency as usize - 1];
        bets.progress.push(raw);
        if let Some(document) = winner {
            bets.winners.push(document);
        }
        self.valid_len += raw.len() as u64;
    }

    /// The digest of the first `bytes` bytes, if `bytes` was asked for and
    /// is where a valid row ends (or the file starts).
    pub fn digest_at(&self, bytes: u64) -> Option<u64> {
        self.digests.iter().find(|(at, _)| *at == bytes).map(|(_, digest)| *digest)
    }
}

/// The part of the file in memory.
struct Reading {
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts: everything before is valid rows.
    start: usize,
    /// How much of `buf` went into the digest.
    hashed: usize,
    eof: bool,
}

impl Reading {
    /// Adds the valid rows not digested yet to `digest`.
    fn hash(&mut self, digest: &mut BetsDigest) {
        assert!(self.hashed <= self.start, "only valid rows are digested");
        digest.update(&self.buf[self.hashed..self.start]);
        self.hashed = self.start;
    }

    /// Drops what was read and reads on; the rows read must be digested.
    fn fill(&mut self, file: &mut dyn Read) -> io::Result<()> {
        assert_eq!(self.hashed, self.start, "rows are digested before they are dropped");
        self.buf.drain(..self.start);
        (self.start, self.hashed) = (0, 0);
        let before = self.buf.len();
        self.buf.resize(CHUNK, 0);
        let n = read_some(file, &mut self.buf[before..])?;
        self.buf.truncate(before + n);
        self.eof = n == 0;
        Ok(())
    }
}

/// Whole, valid rows in `rest`, looked for at every line start after its
/// first byte.
fn count_rows(rest: &[u8], agencies: u32, again: &mut Vec<u8>) -> usize {
    let mut rows = 0;
    let mut at = 1;
    while let Some(newline) = rest.get(at..).and_then(|r| r.iter().position(|&b| b == b'\n')) {
        at += newline + 1;
        if let ReadRow::Row { fields, len } = read_row(&rest[at..]) {
            if check_row(&fields, &rest[at..at + len], agencies, again).is_ok() {
                rows += 1;
            }
        }
    }
    rows
}

fn read_some(file: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Checks that `raw` is the row the server writes for the bet it holds;
/// returns its agency and, for a winning bet, its document.
fn check_row(
    fields: &[Cow<'_, [u8]>],
    raw: &[u8],
    agencies: u32,
    again: &mut Vec<u8>,
) -> Result<(u32, Option<String>), RowProblem> {
    let fields: Vec<&str> = fields
        .iter()
        .map(|f| std::str::from_utf8(f))
        .collect::<Result<_, _>>()
        .map_err(|_| RowProblem::NotUtf8)?;
    let &[agency, first, last, document, birthdate, number] = fields.as_slice() else {
        return Err(RowProblem::Fields(fields.len()));
    };
    let agency = agency
        .parse::<u32>()
        .ok()
        .filter(|a| (1..=agencies).contains(a))
        .ok_or_else(|| RowProblem::Agency { found: agency.to_owned(), agencies })?;
    let bet = BetRef::parse([first, last, document, birthdate, number])?;
    again.clear();
    write_row(again, agency, &bet);
    if again.as_slice() != raw {
        return Err(RowProblem::NotAsWritten);
    }
    Ok((agency, bet.has_won().then(|| bet.document.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::disk::OsDisk;

    fn row(agency: u32, document: &str, number: u32) -> Vec<u8> {
        let number = number.to_string();
        let bet = BetRef::parse(["Zoë \"la\"", "Pérez, Jr.\nII", document, "1999-03-17", &number]).unwrap();
        let mut out = Vec::new();
        write_row(&mut out, agency, &bet);
        out
    }

    fn file_of(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn whole_rows_rebuild_each_agencys_progress_and_winners() {
        let rows = [row(1, "111", 7574), row(2, "222", 1), row(1, "0333", 7574)];
        let (_dir, path) = file_of(&rows.concat());
        let scan = scan(&OsDisk, &path, 3, &[]).unwrap();
        assert_eq!((scan.valid_len, scan.stopped.as_ref()), (scan.file_len, None));
        let mut one = Progress::default();
        one.push(&rows[0]);
        one.push(&rows[2]);
        assert_eq!(
            scan.agencies[0],
            AgencyBets { progress: one, winners: vec!["111".into(), "0333".into()] }
        );
        assert_eq!(scan.agencies[1].progress.bets(), 1);
        assert_eq!(scan.agencies[2], AgencyBets::default());
        assert_eq!(scan.bets(), 3);
    }

    /// A crash can cut the last group at any byte: the scan keeps exactly
    /// the rows that are whole and stops at the first byte of the rest.
    #[test]
    fn a_file_cut_at_any_byte_keeps_exactly_its_whole_rows() {
        let rows = [row(1, "1", 7574), row(2, "22", 3), row(3, "333", 7574)];
        let all = rows.concat();
        let ends: Vec<usize> =
            rows.iter().scan(0, |end, r| Some(*end + r.len()).inspect(|e| *end = *e)).collect();
        for cut in 0..=all.len() {
            let (_dir, path) = file_of(&all[..cut]);
            let scan = scan(&OsDisk, &path, 3, &[]).unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            let expected_len = if whole == 0 { 0 } else { ends[whole - 1] };
            assert_eq!(scan.valid_len as usize, expected_len, "cut at {cut}");
            assert_eq!(scan.bets() as usize, whole, "cut at {cut}");
            assert_eq!(scan.stopped.is_some(), cut != expected_len, "cut at {cut}");
        }
    }

    #[test]
    fn the_rows_stop_at_the_first_that_is_not_the_servers_own() {
        for bad in [
            &b"1,A,B,1,1999-03-17,75"[..],  // torn: no line end
            b"\0\0\0\0\0\0\0\0\n",          // zeros of a block never written
            b"4,A,B,1,1999-03-17,1\n",      // no agency 4
            b"1,A,B,1,1999-02-30,1\n",      // no such date
            b"1,A,B,1,1999-03-17,007574\n", // not how the server writes numbers
            b"1,\"A\",B,1,1999-03-17,1\n",  // needless quotes
            b"1,A,B,1,1999-03-17\n",        // five fields
        ] {
            let good = row(1, "1", 1);
            let (_dir, path) = file_of(&[good.as_slice(), bad, &row(2, "2", 2)].concat());
            let scan = scan(&OsDisk, &path, 3, &[]).unwrap();
            assert_eq!(scan.valid_len as usize, good.len(), "{:?}", String::from_utf8_lossy(bad));
            assert!(scan.stopped.is_some());
            assert_eq!(scan.bets(), 1, "nothing after a bad row counts");
        }
    }

    #[test]
    fn valid_rows_after_a_bad_one_are_counted() {
        let good = row(1, "1", 1);
        let (_dir, path) = file_of(&[good.as_slice(), b"1,A,\0\n", &good, &good, b"1,torn"].concat());
        let scan = scan(&OsDisk, &path, 1, &[]).unwrap();
        assert_eq!((scan.bets(), scan.rows_after_stop), (1, 2));
    }

    #[test]
    fn checkpoints_where_rows_end_get_the_digest_of_the_bytes_before() {
        let rows = [row(1, "1", 7574), row(2, "22", 3), row(3, "333", 7574)];
        let all = rows.concat();
        let (_dir, path) = file_of(&all);
        let ends = [rows[0].len() as u64, (rows[0].len() + rows[1].len()) as u64, all.len() as u64];
        // One inside the second row: no digest, and the later ones still come.
        let asked = [ends[0], ends[0] + 3, ends[1], ends[2]];
        let scan = scan(&OsDisk, &path, 3, &asked).unwrap();
        let digest_of = |bytes: &[u8]| {
            let mut digest = BetsDigest::default();
            digest.update(bytes);
            digest.digest()
        };
        for end in ends {
            assert_eq!(scan.digest_at(end), Some(digest_of(&all[..end as usize])), "at {end}");
        }
        assert_eq!(scan.digest_at(ends[0] + 3), None);
        assert_eq!(scan.digest.digest(), digest_of(&all));
    }

    #[test]
    fn a_missing_file_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let scan = scan(&OsDisk, &dir.path().join("none.csv"), 2, &[]).unwrap();
        assert_eq!((scan.file_len, scan.bets(), scan.agencies.len()), (0, 0, 2));
    }

    #[test]
    fn rows_across_read_chunks_are_read_whole() {
        let one = row(1, "123", 5);
        let count = CHUNK / one.len() * 3 + 7;
        let (_dir, path) = file_of(&one.repeat(count));
        let scan = scan(&OsDisk, &path, 1, &[]).unwrap();
        assert_eq!((scan.bets() as usize, scan.stopped.as_ref()), (count, None));
    }
}
