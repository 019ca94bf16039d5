//! The round's journal: the few facts of a round that `bets.csv` cannot
//! hold, one line each, beside it (`bets.csv.journal`).
//!
//! ```text
//! round format=1 id=5f0c…e1 agencies=5 crc=1a2b3c4d
//! checkpoint bytes=1048602 crc=76a1b2c3
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

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::progress::Progress;
use crate::storage::StorageError;

/// The journal format this code writes and reads.
pub const FORMAT: u32 = 1;

/// One line of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The first line: which round this is, for how many agencies.
    Round { id: u128, agencies: u32 },
    /// Agency `agency` said it finished, holding exactly `progress`.
    Finished { agency: u32, progress: Progress },
    /// The draw ran (its `sorteo` line was logged) and found `winners`.
    Drawn { winners: u64 },
    /// The first `bytes` bytes of the bets file were synced: a mark the
    /// file can never again fall below.
    Checkpoint { bytes: u64 },
}

impl Entry {
    /// The line of this entry, line end included.
    pub fn line(&self) -> String {
        let text = match self {
            Entry::Round { id, agencies } => {
                format!("round format={FORMAT} id={id:032x} agencies={agencies}")
            }
            Entry::Finished { agency, progress } => {
                format!("finished agency={agency} bets={} digest={:032x}", progress.bets(), progress.digest())
            }
            Entry::Drawn { winners } => format!("drawn winners={winners}"),
            Entry::Checkpoint { bytes } => format!("checkpoint bytes={bytes}"),
        };
        format!("{text} crc={:08x}\n", crc32fast::hash(text.as_bytes()))
    }

    /// Reads a line (without its line end).
    pub fn parse(line: &str) -> Result<Entry, String> {
        Entry::from_text(checked(line)?)
    }

    /// Reads the text of a line whose CRC was checked.
    fn from_text(text: &str) -> Result<Entry, String> {
        let mut words = text.split(' ');
        let kind = words.next().unwrap_or_default();
        let fields: Vec<(&str, &str)> = words
            .map(|w| w.split_once('=').ok_or(format!("{w:?} is not key=value")))
            .collect::<Result<_, _>>()?;
        let get = |key: &str| -> Result<&str, String> {
            fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v).ok_or(format!("{kind} without {key}"))
        };
        let number = |key: &str| -> Result<u64, String> {
            get(key)?.parse().map_err(|_| format!("{key} is not a number"))
        };
        let hex = |key: &str| -> Result<u128, String> {
            u128::from_str_radix(get(key)?, 16).map_err(|_| format!("{key} is not hexadecimal"))
        };
        let small = |key: &str| -> Result<u32, String> {
            u32::try_from(number(key)?).map_err(|_| format!("{key} is too large"))
        };
        let entry = match kind {
            "round" => {
                let format = small("format")?;
                if format != FORMAT {
                    return Err(format!("journal format {format}, this server reads format {FORMAT}"));
                }
                Entry::Round { id: hex("id")?, agencies: small("agencies")? }
            }
            "finished" => Entry::Finished {
                agency: small("agency")?,
                progress: Progress::new(number("bets")?, hex("digest")?),
            },
            "drawn" => Entry::Drawn { winners: number("winners")? },
            "checkpoint" => Entry::Checkpoint { bytes: number("bytes")? },
            other => return Err(format!("unknown entry {other:?}")),
        };
        Ok(entry)
    }
}

/// The text of `line` before its CRC, if the CRC holds.
fn checked(line: &str) -> Result<&str, String> {
    let (text, crc) = line.rsplit_once(" crc=").ok_or("no crc")?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| format!("crc {crc:?} is not hexadecimal"))?;
    if crc32fast::hash(text.as_bytes()) != crc {
        return Err("the crc does not match".into());
    }
    Ok(text)
}

/// What the journal holds.
#[derive(Debug, Default)]
pub struct JournalRead {
    pub entries: Vec<Entry>,
    /// Bytes of whole, valid lines from the start.
    pub valid_len: u64,
    pub file_len: u64,
    /// Why the valid lines end before the file does, when they do.
    pub stopped: Option<String>,
    /// Lines with a good CRC after that point: not a torn tail.
    pub lines_after_stop: usize,
    /// A line whose CRC holds but whose meaning is unknown (a newer
    /// format?), with where it is: never cut, refused.
    pub unknown: Option<String>,
}

/// Reads the journal; a missing one holds nothing.
pub fn read(path: &Path) -> Result<Option<JournalRead>, StorageError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes).map_err(|e| StorageError::io(path, e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(path, e)),
    };
    let mut read = JournalRead { file_len: bytes.len() as u64, ..JournalRead::default() };
    let mut lines = bytes.split_inclusive(|&b| b == b'\n');
    for line in lines.by_ref() {
        let Some(text) = line.strip_suffix(b"\n") else {
            read.stopped = Some(format!("byte {}: a line without its end", read.valid_len));
            break;
        };
        let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_owned()).and_then(checked);
        match text.map(|text| (text, Entry::from_text(text))) {
            Ok((_, Ok(entry))) => read.entries.push(entry),
            Ok((text, Err(reason))) => {
                read.unknown = Some(format!("byte {}: {text:?}: {reason}", read.valid_len));
                break;
            }
            Err(reason) => {
                read.stopped = Some(format!("byte {}: {reason}", read.valid_len));
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
    Ok(Some(read))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> [Entry; 4] {
        [
            Entry::Round { id: 0x5f0c_0000_0000_0000_0000_0000_0000_00e1, agencies: 5 },
            Entry::Checkpoint { bytes: 1_048_602 },
            Entry::Finished { agency: 3, progress: Progress::new(16014, u128::MAX - 7) },
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
        assert_eq!(Entry::parse(line.trim_end()), Err("the crc does not match".into()));
    }

    #[test]
    fn a_journal_cut_at_any_byte_keeps_exactly_its_whole_lines() {
        let lines: Vec<String> = entries().iter().map(Entry::line).collect();
        let all = lines.concat();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        for cut in 0..=all.len() {
            std::fs::write(&path, &all.as_bytes()[..cut]).unwrap();
            let read = read(&path).unwrap().unwrap();
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
        let damaged = read(&path).unwrap().unwrap();
        assert_eq!((damaged.entries.len(), damaged.lines_after_stop), (1, 2));

        let text = "rollback agency=1";
        let unknown = format!("{text} crc={:08x}\n", crc32fast::hash(text.as_bytes()));
        std::fs::write(&path, [lines[0].clone(), unknown].concat()).unwrap();
        let newer = read(&path).unwrap().unwrap();
        assert!(newer.unknown.unwrap().contains("unknown entry"));
    }
}
