//! A round: one draw, and everything the server keeps of it.
//!
//! A round lives in two files in one directory, named after the bets file
//! (`SERVER_STORAGE_PATH`, say `bets.csv`):
//!
//! - `bets.csv`: every stored bet (see [`crate::storage`]), the single
//!   source of truth for what each agency has stored;
//! - `bets.csv.journal`: which round this is and for how many agencies,
//!   how much of the bets file was synced (a checkpoint every
//!   [`CHECKPOINT_EVERY`] bytes), which agencies finished (with their
//!   [`Progress`]), and whether the draw ran (see [`journal`]).
//!
//! The directory itself is locked (`flock`) by the one server that owns the
//! round: the storage directory belongs to one server.
//!
//! [`open`] takes the lock first and touches nothing if another server
//! holds it. Then it starts a new round on empty storage, or resumes the
//! round it finds: it reads both files back, checks them against each
//! other, cuts what a crash left unfinished after their last durable byte
//! (at most one group: anything else is refused, never cut), and returns
//! the state they hold.
//!
//! What reaches the disk, in what order:
//! - a new round: an empty bets file (synced, directory synced), then the
//!   journal's first line (written beside, synced, renamed into place,
//!   directory synced): a journal always has its bets file;
//! - a group of bets: rows appended to `bets.csv`, synced, then acknowledged;
//! - "finished": its bets are durable first (same queue); then the journal
//!   line, synced, then acknowledged; a checkpoint goes with the first
//!   journal append after each [`CHECKPOINT_EVERY`] bytes of bets;
//! - the draw: the `drawn` line, synced, then `sorteo`, then the winners.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

pub mod journal;

pub use journal::Entry;

use crate::progress::Progress;
use crate::storage::file::{cut, sync_dir};
use crate::storage::{scan, AppendError, AppendFile, StorageError};

/// Most bets one group appends: what a crash can leave half-written.
pub const MAX_GROUP_BETS: usize = 8192;

/// Most bytes of rows one group appends (a batch's rows are at most about
/// twice its 8 KiB frame, quotes doubled).
pub const MAX_GROUP_BYTES: usize = 4 * 1024 * 1024;

/// A checkpoint line records the bets file's synced length every this
/// many bytes: recovery refuses a file shorter than the last one.
pub const CHECKPOINT_EVERY: u64 = 1024 * 1024;

const _: () = assert!(MAX_GROUP_BYTES as u64 <= crate::storage::scan::MAX_TAIL_LOOKED_AT);
const _: () =
    assert!(CHECKPOINT_EVERY <= MAX_GROUP_BYTES as u64 * 4, "checkpoints come often enough to matter");

/// A round's identity: random, made when the round starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundId(pub u128);

impl std::fmt::Display for RoundId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Why a round cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error("{dir}: another server is using this storage (it holds the directory's lock); stop it, or give this one another SERVER_STORAGE_PATH")]
    InUse { dir: PathBuf },
    #[error("{journal}: this storage holds a round of {round} agencies, but SERVER_AGENCIES is {configured}; set it to {round} to resume that round, or move the round's files away to start a new one")]
    AgenciesDiffer { journal: PathBuf, round: u32, configured: u32 },
    #[error("{bets}: holds bets but no round journal ({journal}); it is not a round of this server: move it away, or give the server another SERVER_STORAGE_PATH")]
    Foreign { bets: PathBuf, journal: PathBuf },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What the server knows of one agency in the round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgencyState {
    /// Its bets in `bets.csv`.
    pub progress: Progress,
    /// It said it finished; nothing more is stored for it.
    pub finished: bool,
    /// Documents of its winning bets, in the order they were stored.
    pub winners: Vec<String>,
}

/// Everything a round holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundState {
    pub id: RoundId,
    /// Agency K at index K − 1.
    pub agencies: Vec<AgencyState>,
    /// The draw ran.
    pub drawn: bool,
}

impl RoundState {
    pub fn finished(&self) -> usize {
        self.agencies.iter().filter(|a| a.finished).count()
    }

    pub fn bets(&self) -> u64 {
        self.agencies.iter().map(|a| a.progress.bets()).sum()
    }

    pub fn winners(&self) -> u64 {
        self.agencies.iter().map(|a| a.winners.len() as u64).sum()
    }
}

/// How [`open`] found the storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Empty storage: a new round.
    New,
    /// A round in progress (or drawn), resumed.
    Resumed {
        /// Bytes cut from the end of the bets file: rows never acknowledged.
        cut_bets: u64,
        /// Bytes cut from the end of the journal: a line never acknowledged.
        cut_journal: u64,
        /// Why the cut bytes were cut.
        why: Vec<String>,
    },
}

/// The files of a round, owned by one server.
#[derive(Debug)]
pub struct RoundFiles {
    /// The directory, locked for as long as this value lives; released by
    /// the kernel when the process dies, however it dies.
    _lock: File,
    bets: AppendFile,
    journal: AppendFile,
    /// The bets file's length when the next checkpoint is due.
    next_checkpoint: u64,
}

impl RoundFiles {
    /// Appends rows to the bets file: all durable, or none kept.
    pub fn append_bets(&mut self, rows: &[&[u8]]) -> Result<(), AppendError> {
        self.bets.append(rows)
    }

    /// Appends entries to the journal: all durable, or none kept. A
    /// checkpoint of the bets file goes with them when one is due.
    pub fn record(&mut self, entries: &[Entry]) -> Result<(), AppendError> {
        let checkpoint =
            (self.bets.len() >= self.next_checkpoint).then(|| Entry::Checkpoint { bytes: self.bets.len() });
        let lines: Vec<String> = checkpoint.iter().chain(entries).map(Entry::line).collect();
        let parts: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        self.journal.append(&parts)?;
        if checkpoint.is_some() {
            self.next_checkpoint = self.bets.len() + CHECKPOINT_EVERY;
        }
        Ok(())
    }

    /// Whether a checkpoint is due (see [`RoundFiles::record`]).
    pub fn checkpoint_due(&self) -> bool {
        self.bets.len() >= self.next_checkpoint
    }

    pub fn bets_path(&self) -> &Path {
        self.bets.path()
    }

    /// Bytes of the bets file.
    pub fn bets_len(&self) -> u64 {
        self.bets.len()
    }

    /// Syncs of the bets file and of the journal since the round opened.
    pub fn syncs(&self) -> (u64, u64) {
        (self.bets.syncs(), self.journal.syncs())
    }
}

/// `bets.csv` → `bets.csv<suffix>`, in the same directory.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Opens the round kept at `bets` (see the module documentation).
pub fn open(bets: &Path, agencies: u32) -> Result<(RoundFiles, RoundState, Opened), RoundError> {
    let journal_path = beside(bets, ".journal");
    let lock = lock(bets.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;

    let journal = journal::read(&journal_path)?;
    let bets_len = match std::fs::metadata(bets) {
        Ok(meta) => Some(meta.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StorageError::io(bets, e).into()),
    };
    let corrupt = |path: &Path, reason: String| {
        RoundError::Storage(StorageError::Corrupt { path: path.into(), reason })
    };
    let header = journal.as_ref().and_then(|j| j.entries.first().copied());
    let Some(Entry::Round { id, agencies: round_agencies }) = header else {
        if bets_len.unwrap_or(0) > 0 {
            if journal.is_none() {
                return Err(RoundError::Foreign { bets: bets.into(), journal: journal_path });
            }
            let reason =
                "the journal does not start with its round line, yet the bets file holds bets".into();
            return Err(corrupt(&journal_path, reason));
        }
        return start(lock, bets, &journal_path, agencies);
    };
    if round_agencies != agencies {
        return Err(RoundError::AgenciesDiffer {
            journal: journal_path,
            round: round_agencies,
            configured: agencies,
        });
    }
    let journal = journal.expect("a header comes from a journal");
    if let Some(unknown) = &journal.unknown {
        return Err(corrupt(
            &journal_path,
            format!("a line this server does not know (written by a newer one?) at {unknown}"),
        ));
    }
    if journal.lines_after_stop > 0 {
        let reason = format!(
            "{} good lines follow a damaged one ({}): that is damage inside what was synced, not a torn last line",
            journal.lines_after_stop,
            journal.stopped.as_deref().unwrap_or_default()
        );
        return Err(corrupt(&journal_path, reason));
    }
    if bets_len.is_none() {
        let reason = "the round's bets file is missing (it is created before its journal)".into();
        return Err(corrupt(bets, reason));
    }
    let found = scan(bets, agencies)?;
    let tail = found.file_len - found.valid_len;
    if tail > MAX_GROUP_BYTES as u64 || found.rows_after_stop > MAX_GROUP_BETS {
        let reason = format!(
            "{tail} bytes ({} whole rows among them) follow the first bad row ({}): more than one group, so not a torn tail",
            found.rows_after_stop,
            found.stopped.as_deref().unwrap_or_default()
        );
        return Err(corrupt(bets, reason));
    }
    let state = replay(RoundId(id), &journal.entries, &found, &journal_path)?;

    // Everything checks out: only now cut what was never acknowledged.
    let mut why = Vec::new();
    if found.valid_len < found.file_len {
        cut(bets, found.valid_len)?;
        why.extend(found.stopped.clone().map(|s| format!("{}: {s}", bets.display())));
    }
    if journal.valid_len < journal.file_len {
        cut(&journal_path, journal.valid_len)?;
        why.extend(journal.stopped.clone().map(|s| format!("{}: {s}", journal_path.display())));
    }
    let checkpoint = last_checkpoint(&journal.entries);
    let files = RoundFiles {
        _lock: lock,
        bets: AppendFile::open(bets, found.valid_len)?,
        journal: AppendFile::open(&journal_path, journal.valid_len)?,
        next_checkpoint: checkpoint + CHECKPOINT_EVERY,
    };
    let opened = Opened::Resumed { cut_bets: tail, cut_journal: journal.file_len - journal.valid_len, why };
    Ok((files, state, opened))
}

/// The bets file's length at the last checkpoint (0 without one).
fn last_checkpoint(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .filter_map(|e| if let Entry::Checkpoint { bytes } = e { Some(*bytes) } else { None })
        .max()
        .unwrap_or(0)
}

/// Locks the storage directory, or says another server has it.
fn lock(dir: &Path) -> Result<File, RoundError> {
    let file = File::open(dir).map_err(|e| StorageError::io(dir, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(RoundError::InUse { dir: dir.into() }),
        Err(TryLockError::Error(e)) => Err(StorageError::io(dir, e).into()),
    }
}

/// Starts a new round on empty storage.
fn start(
    lock: File,
    bets: &Path,
    journal_path: &Path,
    agencies: u32,
) -> Result<(RoundFiles, RoundState, Opened), RoundError> {
    create_empty(bets)?;
    let id = RoundId(rand::random());
    let header = Entry::Round { id: id.0, agencies }.line();
    let fresh = beside(journal_path, ".new");
    let written = File::create(&fresh).and_then(|mut file| {
        file.write_all(header.as_bytes())?;
        file.sync_all()
    });
    written.map_err(|e| StorageError::io(&fresh, e))?;
    std::fs::rename(&fresh, journal_path).map_err(|e| StorageError::io(journal_path, e))?;
    let dir = journal_path.parent().unwrap_or(Path::new("."));
    sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    let files = RoundFiles {
        _lock: lock,
        bets: AppendFile::open(bets, 0)?,
        journal: AppendFile::open(journal_path, header.len() as u64)?,
        next_checkpoint: CHECKPOINT_EVERY,
    };
    let state = RoundState { id, agencies: vec![AgencyState::default(); agencies as usize], drawn: false };
    Ok((files, state, Opened::New))
}

/// Creates the bets file (or keeps an empty one), durably.
fn create_empty(bets: &Path) -> Result<(), StorageError> {
    let io_err = |e| StorageError::io(bets, e);
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(bets).map_err(io_err)?;
    assert_eq!(file.metadata().map_err(io_err)?.len(), 0, "only an empty bets file is created");
    file.sync_all().map_err(io_err)?;
    let dir = bets.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    sync_dir(dir).map_err(|e| StorageError::io(dir, e))
}

/// The state of a round from its journal and what the bets file holds,
/// checked against each other.
fn replay(
    id: RoundId,
    entries: &[Entry],
    found: &scan::Scan,
    journal_path: &Path,
) -> Result<RoundState, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt { path: journal_path.into(), reason };
    let mut state = RoundState {
        id,
        agencies: found
            .agencies
            .iter()
            .map(|a| AgencyState { progress: a.progress, finished: false, winners: a.winners.clone() })
            .collect(),
        drawn: false,
    };
    for entry in &entries[1..] {
        match *entry {
            Entry::Round { .. } => return Err(corrupt("a second round line".into())),
            Entry::Finished { agency, progress } => {
                let Some(a) = agency.checked_sub(1).and_then(|i| state.agencies.get_mut(i as usize)) else {
                    return Err(corrupt(format!(
                        "agency {agency} finished, but the round has no such agency"
                    )));
                };
                if a.finished {
                    return Err(corrupt(format!("agency {agency} finished twice")));
                }
                if a.progress.bets() < progress.bets() {
                    return Err(corrupt(format!(
                        "agency {agency} finished with {progress}, but the bets file holds {} of it: acknowledged bets are missing",
                        a.progress
                    )));
                }
                if a.progress != progress {
                    return Err(corrupt(format!(
                        "agency {agency} finished with {progress}, but the bets file holds {} of it: its bets were changed after it finished",
                        a.progress
                    )));
                }
                a.finished = true;
            }
            Entry::Checkpoint { bytes } => {
                if found.valid_len < bytes {
                    return Err(corrupt(format!(
                        "the first {bytes} bytes of the bets file were synced, but only {} are whole rows: acknowledged bets are missing",
                        found.valid_len
                    )));
                }
            }
            Entry::Drawn { winners } => {
                if state.finished() != state.agencies.len() || state.drawn {
                    return Err(corrupt("a draw before every agency finished, or a second one".into()));
                }
                if winners != state.winners() {
                    return Err(corrupt(format!(
                        "the draw found {winners} winners, the bets file holds {}",
                        state.winners()
                    )));
                }
                state.drawn = true;
            }
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bet::BetRef;
    use crate::storage::write_row;

    fn row(agency: u32, number: u32) -> Vec<u8> {
        let number = number.to_string();
        let mut out = Vec::new();
        write_row(&mut out, agency, &BetRef::parse(["Ana", "Paz", "123", "1999-03-17", &number]).unwrap());
        out
    }

    fn storage() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        (dir, path)
    }

    #[test]
    fn empty_storage_starts_a_new_round_and_reopening_resumes_it() {
        let (_dir, path) = storage();
        let (mut files, state, opened) = open(&path, 2).unwrap();
        assert_eq!((opened, state.bets(), state.finished()), (Opened::New, 0, 0));
        let rows = [row(1, 7574), row(2, 5)];
        files.append_bets(&[&rows[0], &rows[1]]).unwrap();
        let mut one = Progress::default();
        one.push(&rows[0]);
        files.record(&[Entry::Finished { agency: 1, progress: one }]).unwrap();
        drop(files);

        let (_files, again, opened) = open(&path, 2).unwrap();
        assert_eq!(opened, Opened::Resumed { cut_bets: 0, cut_journal: 0, why: vec![] });
        assert_eq!(again.id, state.id);
        assert_eq!(
            again.agencies[0],
            AgencyState { progress: one, finished: true, winners: vec!["123".into()] }
        );
        assert_eq!((again.agencies[1].progress.bets(), again.agencies[1].finished), (1, false));
        assert!(!again.drawn);
    }

    #[test]
    fn a_second_owner_is_refused_and_touches_nothing_even_without_a_lock_file() {
        let (_dir, path) = storage();
        let (mut files, _, _) = open(&path, 1).unwrap();
        files.append_bets(&[&row(1, 1)]).unwrap();
        let before = std::fs::read(&path).unwrap();
        let journal = std::fs::read(beside(&path, ".journal")).unwrap();
        assert!(matches!(open(&path, 1), Err(RoundError::InUse { .. })));
        assert!(matches!(open(&path, 3), Err(RoundError::InUse { .. })), "the lock comes before any check");
        let files_in_dir = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(files_in_dir, 2, "the directory itself is the lock: nothing to delete to get past it");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(std::fs::read(beside(&path, ".journal")).unwrap(), journal);
        drop(files);
        assert!(open(&path, 1).is_ok(), "free again once its owner is gone");
    }

    #[test]
    fn a_torn_tail_of_both_files_is_cut_and_said() {
        let (_dir, path) = storage();
        let (mut files, _, _) = open(&path, 1).unwrap();
        files.append_bets(&[&row(1, 1)]).unwrap();
        drop(files);
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, [good.as_slice(), b"1,Noelia,\xc3"].concat()).unwrap();
        let journal = beside(&path, ".journal");
        let mut text = std::fs::read(&journal).unwrap();
        text.extend_from_slice(b"finished agency=1 bets=");
        std::fs::write(&journal, &text).unwrap();

        let (_files, state, opened) = open(&path, 1).unwrap();
        let Opened::Resumed { cut_bets, cut_journal, why } = opened else { panic!() };
        assert_eq!((cut_bets, cut_journal, why.len()), (10, 23, 2));
        assert_eq!(std::fs::read(&path).unwrap(), good);
        assert_eq!((state.bets(), state.finished()), (1, 0));
    }

    /// A round whose bets file and journal can be damaged by hand.
    fn round_with_rows(rows: usize) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let (dir, path) = storage();
        let (mut files, _, _) = open(&path, 1).unwrap();
        let all: Vec<Vec<u8>> = (0..rows).map(|i| row(1, i as u32)).collect();
        for chunk in all.chunks(100) {
            let parts: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            files.append_bets(&parts).unwrap();
            files.record(&[]).unwrap();
        }
        drop(files);
        let bytes = std::fs::read(&path).unwrap();
        (dir, path, bytes)
    }

    fn refused_untouched(path: &Path, agencies: u32, because: &str) {
        let before = std::fs::read(path).unwrap();
        let journal = std::fs::read(beside(path, ".journal")).ok();
        let err = open(path, agencies).unwrap_err().to_string();
        assert!(err.contains(because), "{err}");
        assert_eq!(std::fs::read(path).unwrap(), before, "the bets file is left as found");
        assert_eq!(std::fs::read(beside(path, ".journal")).ok(), journal, "the journal is left as found");
    }

    #[test]
    fn damage_with_whole_rows_after_it_is_refused_not_cut() {
        let (_dir, path, mut bytes) = round_with_rows(20_000);
        // Two rows in the middle run into one.
        let at = bytes.len() / 2 + bytes[bytes.len() / 2..].iter().position(|&b| b == b'\n').unwrap();
        bytes[at] = b'X';
        std::fs::write(&path, &bytes).unwrap();
        refused_untouched(&path, 1, "not a torn tail");
    }

    #[test]
    fn a_bets_file_shorter_than_its_last_checkpoint_is_refused() {
        let (_dir, path, bytes) = round_with_rows(40_000);
        assert!(bytes.len() as u64 > CHECKPOINT_EVERY, "the round has a checkpoint");
        let journal = std::fs::read_to_string(beside(&path, ".journal")).unwrap();
        assert!(journal.contains("checkpoint bytes="), "{journal}");
        let mut whole_rows = bytes[..CHECKPOINT_EVERY as usize / 2].to_vec();
        whole_rows.truncate(whole_rows.iter().rposition(|&b| b == b'\n').unwrap() + 1);
        std::fs::write(&path, &whole_rows).unwrap();
        refused_untouched(&path, 1, "acknowledged bets are missing");
    }

    #[test]
    fn a_missing_bets_file_is_refused() {
        let (_dir, path, _) = round_with_rows(10);
        std::fs::remove_file(&path).unwrap();
        let err = open(&path, 1).unwrap_err().to_string();
        assert!(err.contains("bets file is missing"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn journal_damage_before_good_lines_and_lines_of_unknown_meaning_are_refused() {
        let (_dir, path) = storage();
        let (mut files, _, _) = open(&path, 3).unwrap();
        let rows = [row(1, 1), row(2, 2)];
        files.append_bets(&[&rows[0], &rows[1]]).unwrap();
        for (agency, r) in [(1, &rows[0]), (2, &rows[1])] {
            let mut p = Progress::default();
            p.push(r);
            files.record(&[Entry::Finished { agency, progress: p }]).unwrap();
        }
        drop(files);
        let journal = beside(&path, ".journal");
        let text = std::fs::read_to_string(&journal).unwrap();
        std::fs::write(&journal, text.replacen("finished agency=1", "finished agency=9", 1)).unwrap();
        refused_untouched(&path, 3, "good lines follow a damaged one");

        let line = "forget agency=2";
        std::fs::write(&journal, format!("{text}{line} crc={:08x}\n", crc32fast::hash(line.as_bytes())))
            .unwrap();
        refused_untouched(&path, 3, "a line this server does not know");
    }

    #[test]
    fn another_number_of_agencies_is_refused_without_touching_the_round() {
        let (_dir, path) = storage();
        drop(open(&path, 5).unwrap());
        let err = open(&path, 3).unwrap_err();
        assert!(matches!(err, RoundError::AgenciesDiffer { round: 5, configured: 3, .. }), "{err}");
        assert!(open(&path, 5).is_ok());
    }

    #[test]
    fn bets_without_a_journal_are_not_taken_over() {
        let (_dir, path) = storage();
        std::fs::write(&path, row(1, 1)).unwrap();
        assert!(matches!(open(&path, 1), Err(RoundError::Foreign { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), row(1, 1));
        std::fs::write(&path, b"").unwrap();
        drop(open(&path, 1).unwrap());
        assert!(beside(&path, ".journal").exists(), "an empty bets file is empty storage");
    }

    #[test]
    fn a_finished_agency_whose_bets_are_missing_is_corruption_not_a_cut() {
        let (_dir, path) = storage();
        let (mut files, _, _) = open(&path, 1).unwrap();
        let rows = [row(1, 1), row(1, 2)];
        files.append_bets(&[&rows[0], &rows[1]]).unwrap();
        let mut both = Progress::default();
        rows.iter().for_each(|r| both.push(r));
        files.record(&[Entry::Finished { agency: 1, progress: both }]).unwrap();
        drop(files);
        std::fs::write(&path, &rows[0]).unwrap();
        let err = open(&path, 1).unwrap_err();
        assert!(err.to_string().contains("acknowledged bets are missing"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), rows[0], "left as found");
    }

    #[test]
    fn a_drawn_round_comes_back_drawn_with_its_winners() {
        let (_dir, path) = storage();
        let (mut files, _, _) = open(&path, 1).unwrap();
        let rows = [row(1, 7574)];
        files.append_bets(&[&rows[0]]).unwrap();
        let mut p = Progress::default();
        p.push(&rows[0]);
        files.record(&[Entry::Finished { agency: 1, progress: p }, Entry::Drawn { winners: 1 }]).unwrap();
        drop(files);
        let (_, state, _) = open(&path, 1).unwrap();
        assert!(state.drawn);
        assert_eq!(state.agencies[0].winners, ["123"]);
    }
}
