//! Where an agency's bets come from, and the thread that reads them.
//!
//! The reader goes through the agency's bets in order on a blocking thread
//! (the file is read as a stream, never whole) and hands [`Item`]s over a
//! small channel. It validates each row with the server's own rules, so
//! that every valid bet gets an ordinal (0, 1, 2…) that is the same on
//! every read of the same file, whatever the batch size; rows that cannot
//! be sent (invalid, unreadable, too large for a frame) get none, and are
//! reported with their line.
//!
//! A read can resume after the first `resume` valid bets: those are not
//! sent but counted into a [`Progress`], which the upload compares with
//! what the server says it holds before any batch goes out.

use std::io;
use std::path::PathBuf;

use lottery::storage::write_row;
use lottery::{BetRef, InvalidBet, Progress};
use protocol::{BetFields, BetRecord, MAX_FRAME_LEN};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::agency_file::{AgencyFile, RowError, Unreadable, Unusable};
use crate::batch::{fits_a_frame, Batch, BatchCutter};
use crate::config::Config;

/// Where the agency's bets come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BetSource {
    /// The agency's file, one bet per row.
    File(PathBuf),
    /// The single bet of the environment (`NOMBRE` ... `NUMERO`).
    Single(BetRecord),
}

impl BetSource {
    /// The agency file when it exists, else the bet of the environment.
    pub fn choose(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<BetSource, NoBet> {
        if config.data_file.is_file() {
            return Ok(BetSource::File(config.data_file.clone()));
        }
        let field = |name: &'static str| {
            env(name).ok_or_else(|| NoBet { data_file: config.data_file.clone(), missing: name })
        };
        Ok(BetSource::Single(BetRecord {
            first_name: field("NOMBRE")?,
            last_name: field("APELLIDO")?,
            document: field("DOCUMENTO")?,
            birthdate: field("NACIMIENTO")?,
            number: field("NUMERO")?,
        }))
    }
}

/// Neither an agency file nor a bet in the environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no agency file at {} and no bet in the environment ({missing} is not set)", .data_file.display())]
pub struct NoBet {
    pub data_file: PathBuf,
    pub missing: &'static str,
}

/// Why a row of the source is not sent (it gets no ordinal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsendable {
    #[error(transparent)]
    Row(#[from] Unusable),
    #[error("the bet's {bytes} bytes of text do not fit in a {MAX_FRAME_LEN}-byte packet")]
    TooLarge { bytes: usize },
    #[error(transparent)]
    Invalid(#[from] InvalidBet),
}

/// Why the source could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {}: {source}", .path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read {} at line {line}: {error}", .path.display())]
    Read { path: PathBuf, line: u64, error: Unreadable },
}

/// What the reader hands to the upload, in this order: unusable rows as
/// they come, one `Resumed`, the batches, one `End`.
#[derive(Debug)]
pub enum Item {
    /// A row that cannot be sent, with why. Rows up to the line the
    /// reader was told had been reported already are not handed again.
    Unusable {
        line: u64,
        reason: Unsendable,
    },
    /// The bets skipped to resume: their count and digest.
    Resumed(Progress),
    Batch(Batch),
    /// Every row was read: the agency has this many valid bets.
    End {
        bets: u64,
    },
    /// The source could not be read to its end: nothing after this.
    Failed(SourceError),
}

/// Where a read starts and what it leaves out.
#[derive(Debug, Clone, Copy)]
pub struct ReadFrom {
    /// Valid bets to skip (and count) before the first batch.
    pub resume: u64,
    /// Unusable rows up to this line were reported already.
    pub reported_up_to: u64,
}

/// Reads `source` on a blocking thread; see the module documentation. The
/// thread stops at its next hand-over once the receiver is gone.
pub fn spawn_reader(
    source: BetSource,
    agency: u32,
    max_amount: usize,
    from: ReadFrom,
    items: mpsc::Sender<Item>,
) -> JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        let mut reader = Reader::new(agency, max_amount, from, items);
        // `false` once the upload is gone: stop reading.
        let going = match source {
            BetSource::Single(bet) => reader.row(0, 1, Ok(bet.fields())),
            BetSource::File(path) => match AgencyFile::open(&path) {
                Ok(mut file) => {
                    let mut going = true;
                    file.for_each_row(|row| {
                        going = match row.bet {
                            Ok(fields) => reader.row(row.line, row.end, Ok(fields)),
                            Err(RowError::Unusable(reason)) => {
                                reader.row(row.line, row.end, Err(reason.into()))
                            }
                            Err(RowError::Unreadable(error)) => {
                                let (path, line) = (path.clone(), row.line);
                                reader.send(Item::Failed(SourceError::Read { path, line, error }));
                                false
                            }
                        };
                        going
                    });
                    going
                }
                Err(source) => {
                    reader.send(Item::Failed(SourceError::Open { path, source }));
                    false
                }
            },
        };
        if going {
            reader.end();
        }
    })
}

/// The state of one read.
struct Reader {
    agency: u32,
    max_amount: usize,
    from: ReadFrom,
    items: mpsc::Sender<Item>,
    /// Valid bets so far.
    ordinal: u64,
    /// Of the skipped bets.
    skipped: Progress,
    /// Once the skipped bets are behind.
    cutter: Option<BatchCutter>,
    /// A row, reused.
    row: Vec<u8>,
}

impl Reader {
    fn new(agency: u32, max_amount: usize, from: ReadFrom, items: mpsc::Sender<Item>) -> Reader {
        Reader {
            agency,
            max_amount,
            from,
            items,
            ordinal: 0,
            skipped: Progress::default(),
            cutter: None,
            row: Vec::with_capacity(256),
        }
    }

    /// Takes one row of the source, which ends `end` bytes into it; false
    /// once the upload is gone.
    fn row(&mut self, line: u64, end: u64, bet: Result<BetFields<'_>, Unsendable>) -> bool {
        let checked = bet.and_then(|fields| {
            if !fits_a_frame(fields) {
                let bytes: usize = fields.iter().map(|f| f.len()).sum();
                return Err(Unsendable::TooLarge { bytes });
            }
            Ok((fields, BetRef::parse(fields)?))
        });
        let (fields, bet) = match checked {
            Ok(valid) => valid,
            Err(reason) if line > self.from.reported_up_to => {
                return self.send(Item::Unusable { line, reason })
            }
            Err(_) => return true,
        };
        let ordinal = self.ordinal;
        self.ordinal += 1;
        if ordinal < self.from.resume {
            self.row.clear();
            write_row(&mut self.row, self.agency, &bet);
            self.skipped.push(&self.row);
            return true;
        }
        if self.cutter.is_none() {
            if !self.send(Item::Resumed(self.skipped)) {
                return false;
            }
            self.cutter = Some(BatchCutter::new(ordinal, self.max_amount));
        }
        let cutter = self.cutter.as_mut().expect("made just above");
        match cutter.push(fields, line, end) {
            Some(batch) => self.send(Item::Batch(batch)),
            None => true,
        }
    }

    /// After the last row.
    fn end(mut self) -> bool {
        let last = match self.cutter.take() {
            None => self.send(Item::Resumed(self.skipped)),
            Some(cutter) => cutter.finish().is_none_or(|batch| self.send(Item::Batch(batch))),
        };
        last && self.send(Item::End { bets: self.ordinal })
    }

    fn send(&self, item: Item) -> bool {
        self.items.blocking_send(item).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, resume: u64, reported_up_to: u64, max_amount: usize) -> Vec<Item> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agency.csv");
        std::fs::write(&path, text).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let (tx, mut rx) = mpsc::channel(4);
            let from = ReadFrom { resume, reported_up_to };
            let reader = spawn_reader(BetSource::File(path), 7, max_amount, from, tx);
            let mut items = Vec::new();
            while let Some(item) = rx.recv().await {
                items.push(item);
            }
            reader.await.unwrap();
            items
        })
    }

    const FILE: &str = "Ana,Paz,1,1990-01-01,7574\nBeto,Paz,2,1990-02-30,1\nCarla,Paz,3,1990-01-03,2\nDiego,Paz,4,1990-01-04,3\n";

    fn shape(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                Item::Unusable { line, .. } => format!("unusable {line}"),
                Item::Resumed(p) => format!("resumed {}", p.bets()),
                Item::Batch(b) => format!("batch {}+{}", b.first, b.lines.len()),
                Item::End { bets } => format!("end {bets}"),
                Item::Failed(error) => format!("failed {error}"),
            })
            .collect()
    }

    #[test]
    fn invalid_rows_get_no_ordinal_and_are_reported_with_their_line() {
        let items = read(FILE, 0, 0, 2);
        assert_eq!(shape(&items), ["resumed 0", "unusable 2", "batch 0+2", "batch 2+1", "end 3"]);
        let Item::Unusable { reason, .. } = &items[1] else { panic!() };
        assert_eq!(*reason, Unsendable::Invalid(InvalidBet::Birthdate("1990-02-30".into())));
    }

    #[test]
    fn a_resumed_read_skips_and_counts_the_bets_the_server_holds() {
        let items = read(FILE, 2, 2, 10);
        assert_eq!(shape(&items), ["resumed 2", "batch 2+1", "end 3"]);
        let Item::Resumed(skipped) = &items[0] else { panic!() };
        let mut expected = Progress::default();
        for fields in [["Ana", "Paz", "1", "1990-01-01", "7574"], ["Carla", "Paz", "3", "1990-01-03", "2"]] {
            let mut row = Vec::new();
            write_row(&mut row, 7, &BetRef::parse(fields).unwrap());
            expected.push(&row);
        }
        assert_eq!(*skipped, expected, "the same digest the server keeps for those rows");
    }

    #[test]
    fn resuming_past_the_end_says_how_many_bets_there_were() {
        assert_eq!(shape(&read(FILE, 5, 0, 10)), ["unusable 2", "resumed 3", "end 3"]);
    }
}
