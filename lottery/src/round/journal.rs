//! The round's journal: the few facts of a round that `bets.csv` cannot
//! hold, one line each, beside it (`bets.csv.journal`).
//!
//! ```text
//! round format=2 id=5f0c…e1 agencies=5 crc=1a2b3c4d
//! checkpoint bytes=1048602 digest=3f6c…9a crc=76a1b2c3
//! finished agency=3 bets=16014 digest=9d41…07 crc=0badf00d
//! drawn winners=15 crc=c0ffee00
//! ```
//!
//! Each line ends with the CRC-32 of what comes before ` crc=`, so a line
//! torn by a crash, or any other damage, is recognised. Lines are appended
//! in groups and synced before anyone is told about them; like the bets
//! file, the journal is its valid lines from the start, and a torn last
//! line was never synced and is cut. A line whose CRC holds but whose
//! meaning this code does not know, or good lines after a bad one, are not
//! a torn tail: the caller refuses them.

use std::io::{self, Read};
use std::path::Path;

use crate::progress::Progress;
use crate::storage::disk::Disk;
use crate::storage::StorageError;

/// The journal format this code writes and reads. Format 3 numbers rounds
/// and records their opening time and their close; format 2 did not, and
/// format 1 named a checkpoint by its length only: both are refused.
pub const FORMAT: u32 = 3;

/// Why a round closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CloseReason {
    /// Its time was up (`SERVER_ROUND_CLOSE` or `SERVER_ROUND_EVERY`).
    Deadline,
    /// The operator closed it.
    Operator,
    /// Every agency finished.
    AllFinished,
}

impl CloseReason {
    /// The reason as the `cierre` line and the journal write it.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Deadline => "deadline",
            CloseReason::Operator => "operator",
            CloseReason::AllFinished => "all_finished",
        }
    }

    fn parse(text: &str) -> Option<CloseReason> {
        [CloseReason::Deadline, CloseReason::Operator, CloseReason::AllFinished]
            .into_iter()
            .find(|reason| reason.as_str() == text)
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The first line: which round this is (its number in its storage
    /// folder, 1, 2, 3…, and a random id), for how many agencies, and when
    /// it opened (milliseconds since the Unix epoch).
    Round { number: u64, id: u128, agencies: u32, opened: u64 },
    /// Agency `agency` said it finished, holding exactly `progress`.
    Finished { agency: u32, progress: Progress },
    /// The round closed, holding `bets` bets: nothing more is stored.
    Closed { reason: CloseReason, bets: u64 },
    /// The draw ran (its `sorteo` line was logged) and found `winners`.
    Drawn { winners: u64 },
    /// The first `bytes` bytes of the bets file were synced, and their
    /// digest is `digest` (see [`BetsDigest`]): a mark the file can never
    /// again fall below, nor change under.
    Checkpoint { bytes: u64, digest: u64 },
}

impl Entry {
    /// The line of this entry, line end included.
    pub fn line(&self) -> String {
        let text = match self {
            Entry::Round { number, id, agencies, opened } => {
                format!(
                    "round format={FORMAT} number={number} id={id:032x} agencies={agencies} opened={opened}"
                )
            }
            Entry::Closed { reason, bets } => format!("closed reason={reason} bets={bets}"),
            Entry::Finished { agency, progress } => {
                format!("finished agency={agency} bets={} digest={:032x}", progress.bets(), progress.digest())
            }
            Entry::Drawn { winners } => format!("drawn winners={winners}"),
            Entry::Checkpoint { bytes, digest } => format!("checkpoint bytes={bytes} digest={digest:016x}"),
        };
        let line = format!("{text} crc={:08x}\n", crc32fast::hash(text.as_bytes()));
        assert_eq!(line.matches('\n').count(), 1, "an entry is one line");
        // Paired with recovery's reading: what is written reads back.
        debug_assert_eq!(Entry::parse(line.trim_end()), Ok(*self), "an entry's line reads back as it");
        line
    }

    /// Reads a line (without its line end).
    pub fn parse(line: &str) -> Result<Entry, LineError> {
        Entry::from_text(checked(line)?)
    }

    /// Reads the text of a line whose CRC was checked.
    fn from_text(text: &str) -> Result<Entry, LineError> {
        let mut words = text.split(' ');
        let kind = words.next().unwrap_or_default();
        let fields: Vec<(&str, &str)> = words
            .map(|w| w.split_once('=').ok_or_else(|| LineError::NotKeyValue(w.to_owned())))
            .collect::<Result<_, _>>()?;
        let get = |key: &'static str| -> Result<&str, LineError> {
            fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v).ok_or(LineError::Missing(key))
        };
        let number = |key: &'static str| -> Result<u64, LineError> {
            get(key)?.parse().map_err(|_| LineError::NotNumber(key))
        };
        let hex = |key: &'static str| -> Result<u128, LineError> {
            u128::from_str_radix(get(key)?, 16).map_err(|_| LineError::NotHex(key))
        };
        let small = |key: &'static str| -> Result<u32, LineError> {
            u32::try_from(number(key)?).map_err(|_| LineError::TooLarge(key))
        };
        let entry = match kind {
            "round" => {
                let format = small("format")?;
                if format != FORMAT {
                    return Err(LineError::Format(format));
                }
                let round = number("number")?;
                if round == 0 {
                    return Err(LineError::NotNumber("number"));
                }
                Entry::Round {
                    number: round,
                    id: hex("id")?,
                    agencies: small("agencies")?,
                    opened: number("opened")?,
                }
            }
            "finished" => Entry::Finished {
                agency: small("agency")?,
                progress: Progress::new(number("bets")?, hex("digest")?),
            },
            "closed" => Entry::Closed {
                reason: CloseReason::parse(get("reason")?).ok_or(LineError::NotReason)?,
                bets: number("bets")?,
            },
            "drawn" => Entry::Drawn { winners: number("winners")? },
            "checkpoint" => Entry::Checkpoint { bytes: number("bytes")?, digest: hex("digest")? as u64 },
            other => return Err(LineError::Unknown(other.to_owned())),
        };
        Ok(entry)
    }
}

/// The digest of a prefix of the bets file, as checkpoints record it:
/// XXH3-64 of its bytes, streamed as they are appended (and as recovery
/// reads them back). It tells a file apart from another round's, or from
/// an edited copy of itself; it is not a defence against forgery.
#[derive(Clone, Default)]
pub struct BetsDigest(xxhash_rust::xxh3::Xxh3Default);

impl BetsDigest {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of every byte given so far.
    pub fn digest(&self) -> u64 {
        self.0.digest()
    }
}

impl std::fmt::Debug for BetsDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BetsDigest({:016x})", self.digest())
    }
}

/// What is wrong with a journal line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("a line without its end")]
    NoLineEnd,
    #[error("not UTF-8")]
    NotUtf8,
    #[error("no crc")]
    NoCrc,
    #[error("crc {0:?} is not hexadecimal")]
    CrcNotHex(String),
    #[error("the crc does not match")]
    CrcMismatch,
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
    #[error("without {0}")]
    Missing(&'static str),
    #[error("{0} is not a number")]
    NotNumber(&'static str),
    #[error("{0} is not hexadecimal")]
    NotHex(&'static str),
    #[error("{0} is too large")]
    TooLarge(&'static str),
    #[error("reason is none of deadline, operator, all_finished")]
    NotReason,
    #[error("journal format {0}, this server reads format {FORMAT}")]
    Format(u32),
    #[error("unknown entry {0:?}")]
    Unknown(String),
}

impl LineError {
    /// Whether the line's CRC held: then the line is whole and was meant
    /// (a newer format, say), not torn or damaged.
    pub fn crc_held(&self) -> bool {
        !matches!(
            self,
            LineError::NoLineEnd
                | LineError::NotUtf8
                | LineError::NoCrc
                | LineError::CrcNotHex(_)
                | LineError::CrcMismatch
        )
    }
}

/// The text of `line` before its CRC, if the CRC holds.
fn checked(line: &str) -> Result<&str, LineError> {
    let (text, crc) = line.rsplit_once(" crc=").ok_or(LineError::NoCrc)?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| LineError::CrcNotHex(crc.to_owned()))?;
    if crc32fast::hash(text.as_bytes()) != crc {
        return Err(LineError::CrcMismatch);
    }
    Ok(text)
}

/// Where a journal's valid lines end, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("byte {at}: {error}")]
pub struct LineFault {
    /// The offset of the line.
    pub at: u64,
    pub error: LineError,
}

/// What the journal holds.
#[derive(Debug, Default)]
pub struct JournalRead {
    pub entries: Vec<Entry>,
    /// Bytes of whole, valid lines from the start.
    pub valid_len: u64,
    pub file_len: u64,
    /// Why the valid lines end before the file does, when they do.
    pub stopped: Option<LineFault>,
    /// Lines with a good CRC after that point: not a torn tail.
    pub lines_after_stop: usize,
    /// A line whose CRC holds but whose meaning is unknown (a newer
    /// format?), with where it is: never cut, refused.
    pub unknown: Option<LineFault>,
}

/// Reads the journal; a missing one holds nothing.
pub fn read(disk: &dyn Disk, path: &Path) -> Result<Option<JournalRead>, StorageError> {
    let mut bytes = Vec::new();
    match disk.open_read(path) {
        Ok(mut file) => file.read_to_end(&mut bytes).map_err(|e| StorageError::io(path, e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(path, e)),
    };
    let mut read = JournalRead { file_len: bytes.len() as u64, ..JournalRead::default() };
    let mut lines = bytes.split_inclusive(|&b| b == b'\n');
    for line in lines.by_ref() {
        let fault = |error| LineFault { at: read.valid_len, error };
        let Some(text) = line.strip_suffix(b"\n") else {
            read.stopped = Some(fault(LineError::NoLineEnd));
            break;
        };
        match std::str::from_utf8(text).map_err(|_| LineError::NotUtf8).and_then(Entry::parse) {
            Ok(entry) => read.entries.push(entry),
            Err(error) if error.crc_held() => {
                read.unknown = Some(fault(error));
                break;
            }
            Err(error) => {
                read.stopped = Some(fault(error));
                break;
            }
        }
        read.valid_len += line.len() as u64;
    }
    if read.stopped.is_some() {
        read.lines_after_stop = lines
            .filter_map(|l| std::str::from_utf8(l.strip_suffix(b"\n")?).ok())
            .filter(|l| checked(l).is_ok())
            .count();
    }
    assert!(read.valid_len <= read.file_len, "the lines read lie inside the file");
    let stopped_early = read.stopped.is_some() || read.unknown.is_some();
    assert_eq!(stopped_early, read.valid_len < read.file_len, "lines stop early only with a reason");
    Ok(Some(read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::disk::OsDisk;

    fn entries() -> [Entry; 5] {
        [
            Entry::Round {
                number: 3,
                id: 0x5f0c_0000_0000_0000_0000_0000_0000_00e1,
                agencies: 5,
                opened: 1_796_000_000_000,
            },
            Entry::Checkpoint { bytes: 1_048_602, digest: 0x9e37_79b9_7f4a_7c15 },
            Entry::Finished { agency: 3, progress: Progress::new(16014, u128::MAX - 7) },
            Entry::Closed { reason: CloseReason::Deadline, bets: 16014 },
            Entry::Drawn { winners: 15 },
        ]
    }

    #[test]
    fn every_entry_reads_back_from_its_line() {
        for entry in entries() {
            let line = entry.line();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "{line}");
            assert_eq!(Entry::parse(line.trim_end()), Ok(entry));
        }
        assert!(entries()[2].line().starts_with("finished agency=3 bets=16014 digest="));
    }

    #[test]
    fn a_changed_line_fails_its_crc() {
        let line = entries()[2].line().replace("bets=16014", "bets=16015");
        assert_eq!(Entry::parse(line.trim_end()), Err(LineError::CrcMismatch));
    }

    #[test]
    fn a_journal_cut_at_any_byte_keeps_exactly_its_whole_lines() {
        let lines: Vec<String> = entries().iter().map(Entry::line).collect();
        let all = lines.concat();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        for cut in 0..=all.len() {
            std::fs::write(&path, &all.as_bytes()[..cut]).unwrap();
            let read = read(&OsDisk, &path).unwrap().unwrap();
            let ends: Vec<usize> =
                lines.iter().scan(0, |end, l| Some(*end + l.len()).inspect(|e| *end = *e)).collect();
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            let len = if whole == 0 { 0 } else { ends[whole - 1] };
            assert_eq!(read.entries, entries()[..whole].to_vec(), "cut at {cut}");
            assert_eq!((read.valid_len as usize, read.stopped.is_some()), (len, cut != len), "cut at {cut}");
        }
    }

    #[test]
    fn good_lines_after_a_bad_one_and_unknown_lines_are_told_apart_from_a_torn_tail() {
        let lines: Vec<String> = entries().iter().map(Entry::line).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let flipped = lines[1].replace("bytes=1", "bytes=2");
        std::fs::write(&path, [lines[0].clone(), flipped, lines[2].clone(), lines[3].clone()].concat())
            .unwrap();
        let damaged = read(&OsDisk, &path).unwrap().unwrap();
        assert_eq!((damaged.entries.len(), damaged.lines_after_stop), (1, 2));

        let text = "rollback agency=1";
        let unknown = format!("{text} crc={:08x}\n", crc32fast::hash(text.as_bytes()));
        std::fs::write(&path, [lines[0].clone(), unknown].concat()).unwrap();
        let newer = read(&OsDisk, &path).unwrap().unwrap();
        assert_eq!(newer.unknown.unwrap().error, LineError::Unknown("rollback".into()));
    }
}
