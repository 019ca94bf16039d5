//! The round's files on disk: the bets file and its journal in one locked
//! directory (see the [module documentation](super)); [`open`], which
//! starts a new round on empty storage or resumes the one it finds; and
//! how a drawn round makes way for the next ([`Ledger::open_next`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::storage::disk::{DirLock, Disk, OsDisk};
use crate::storage::timing::SyncTimes;
use crate::storage::{AppendError, AppendFile, StorageError};

use super::archive;
use super::journal::{self, BetsDigest, Entry};
use super::recovery::{recover, Cuts, Damage, Opened, Place};
use super::rules::Ledger;
use super::state::{RoundName, RoundState};
use super::{beside, RoundError, RoundId, CHECKPOINT_EVERY};

/// The files of a round, owned by one server.
#[derive(Debug)]
pub struct RoundFiles {
    /// The directory, locked for as long as this value (and the files of
    /// the rounds that follow it) lives; released by the kernel when the
    /// process dies, however it dies.
    _lock: Arc<DirLock>,
    disk: Arc<dyn Disk>,
    bets: AppendFile,
    /// The digest of every byte of the bets file.
    digest: BetsDigest,
    journal: AppendFile,
    /// The bets file's length at the last checkpoint.
    checkpointed: u64,
    /// The bets file's length when the next checkpoint is due.
    next_checkpoint: u64,
    /// Bytes of bets between two checkpoints, at most.
    checkpoint_every: u64,
    /// How long both files' syncs take, across the rounds that follow.
    sync_times: Arc<SyncTimes>,
}

impl Ledger for RoundFiles {
    /// Appends rows after the checkpoint that was due before them, if one
    /// was (a journal that failed to take it has it written first): so
    /// past a due checkpoint lies at most one group, which recovery checks.
    fn append_bets(&mut self, rows: &[&[u8]]) -> Result<(), AppendError> {
        if self.bets.len() >= self.next_checkpoint {
            self.record(&[])?;
        }
        assert!(self.bets.len() < self.next_checkpoint, "no group starts past a due checkpoint");
        let before = self.bets.len();
        self.bets.append(rows)?;
        rows.iter().for_each(|r| self.digest.update(r));
        let appended: usize = rows.iter().map(|r| r.len()).sum();
        assert_eq!(self.bets.len(), before + appended as u64, "the bets file grew by the rows");
        // The rows are durable; without their journal beside them they
        // would not be a round's: none is acknowledged then.
        if appended > 0 {
            self.journal.check_in_place().map_err(AppendError::Fatal)?;
        }
        Ok(())
    }

    /// Appends entries to the journal: all durable, or none kept. A
    /// checkpoint of the bets file goes with every append of entries, and
    /// alone once one is due (after the round's first bets, then every
    /// `checkpoint_every` bytes); with no entries and none due, nothing is
    /// written.
    fn record(&mut self, entries: &[Entry]) -> Result<(), AppendError> {
        let grew = self.bets.len() > self.checkpointed;
        let due = grew && (self.bets.len() >= self.next_checkpoint || !entries.is_empty());
        if entries.is_empty() && !due {
            return Ok(());
        }
        let checkpoint =
            due.then(|| Entry::Checkpoint { bytes: self.bets.len(), digest: self.digest.digest() });
        let lines: Vec<String> = checkpoint.iter().chain(entries).map(Entry::line).collect();
        let parts: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        let before = self.journal.len();
        self.journal.append(&parts)?;
        let appended: usize = lines.iter().map(String::len).sum();
        assert_eq!(self.journal.len(), before + appended as u64, "the journal grew by the lines");
        if due {
            self.checkpointed = self.bets.len();
            self.next_checkpoint = self.bets.len() + self.checkpoint_every;
        }
        assert!(self.next_checkpoint > self.bets.len(), "a checkpoint is never overdue after a record");
        Ok(())
    }

    /// Moves the drawn round's files to `rounds/K/` (see
    /// [`super::archive`]), then starts round `next` where they were. The
    /// directory stays locked throughout. An error may leave the move half
    /// done: a restart finishes it.
    fn open_next(&mut self, drawn: &RoundState, next: RoundName, agencies: u32) -> Result<(), RoundError> {
        let bets = self.bets.path().to_owned();
        assert_eq!(self.journal.path(), beside(&bets, ".journal"), "a journal is named after its bets file");
        archive::shelve(self.disk.as_ref(), &bets, drawn.number())?;
        let (files, _) = start(&self.disk, self._lock.clone(), &bets, next, agencies)?;
        *self = files.time_syncs_in(self.sync_times.clone());
        Ok(())
    }
}

impl RoundFiles {
    /// How long the syncs of the round's files take (this round's and the
    /// next ones').
    pub fn sync_times(&self) -> Arc<SyncTimes> {
        self.sync_times.clone()
    }

    /// Has both files record their syncs in `times`.
    fn time_syncs_in(mut self, times: Arc<SyncTimes>) -> RoundFiles {
        self.bets.time_syncs_in(times.clone());
        self.journal.time_syncs_in(times.clone());
        self.sync_times = times;
        self
    }

    /// Checks that both files are still where the round keeps them (see
    /// [`AppendFile::check_in_place`]).
    pub fn check_in_place(&self) -> Result<(), StorageError> {
        self.bets.check_in_place()?;
        self.journal.check_in_place()
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

    /// Checkpoints every `bytes` bytes of bets from now on (tests make
    /// many checkpoints in small files).
    #[cfg(test)]
    pub(crate) fn checkpoint_every(&mut self, bytes: u64) {
        self.checkpoint_every = bytes;
        self.next_checkpoint = self.next_checkpoint.min(self.checkpointed + bytes);
    }
}

/// Opens the round kept at `bets` on the real filesystem, now (see
/// [`open_on`]).
pub fn open(bets: &Path, agencies: u32) -> Result<(RoundFiles, RoundState, Opened), RoundError> {
    open_on(&(Arc::new(OsDisk) as Arc<dyn Disk>), bets, agencies, now_millis())
}

/// Milliseconds since the Unix epoch: when a round opens.
pub fn now_millis() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Opens the round kept at `bets` on `disk`: takes the directory's lock
/// first (and touches nothing if another server holds it), finishes the
/// move of a drawn round that a crash interrupted (see
/// [`super::archive`]), then resumes the round it finds or, on empty
/// storage, starts the round after the last one kept, opened at `now`
/// (see [`Opened`](super::Opened) and [`Damage`](super::Damage)).
pub fn open_on(
    disk: &Arc<dyn Disk>,
    bets: &Path,
    agencies: u32,
    now: u64,
) -> Result<(RoundFiles, RoundState, Opened), RoundError> {
    let journal_path = beside(bets, ".journal");
    let dir = dir_of(bets);
    let lock = match disk.lock_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        Some(lock) => lock,
        None => return Err(RoundError::InUse { dir: dir.into() }),
    };
    archive::finish_move(disk.as_ref(), bets)?;
    let journal = journal::read(disk.as_ref(), &journal_path)?;
    let bets_len = match disk.len(bets) {
        Ok(len) => Some(len),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StorageError::io(bets, e).into()),
    };
    let header = journal.as_ref().and_then(|j| j.entries.first().copied());
    let Some(Entry::Round { number, id, agencies: round_agencies, opened }) = header else {
        if bets_len.unwrap_or(0) == 0 {
            let number = archive::last_number(disk.as_ref(), bets)? + 1;
            let name = RoundName { number, id: RoundId(rand::random()), opened: now };
            let (files, state) = start(disk, Arc::new(lock), bets, name, agencies)?;
            return Ok((files, state, Opened::New));
        }
        if journal.is_none() {
            return Err(RoundError::Foreign { bets: bets.into(), journal: journal_path });
        }
        return Err(RoundError::Damaged { path: journal_path, damage: Damage::NoRoundLine });
    };
    if round_agencies != agencies {
        return Err(RoundError::AgenciesDiffer {
            journal: journal_path,
            round: round_agencies,
            configured: agencies,
        });
    }
    let journal = journal.expect("a header comes from a journal");
    let name = RoundName { number, id: RoundId(id), opened };
    let place = Place { bets, journal: &journal_path, bets_exist: bets_len.is_some() };
    let found = recover(disk.as_ref(), name, agencies, place, journal, Cuts::Make)?;
    // A round without a checkpoint yet (its first bets were never
    // checkpointed) gets one with its next group.
    let next_checkpoint = if found.checkpoint == 0 { 1 } else { found.checkpoint + CHECKPOINT_EVERY };
    let files = RoundFiles {
        _lock: Arc::new(lock),
        disk: disk.clone(),
        bets: AppendFile::open(disk, bets, found.bets_len)?,
        digest: found.digest,
        journal: AppendFile::open(disk, &journal_path, found.journal_len)?,
        checkpointed: found.checkpoint,
        next_checkpoint,
        checkpoint_every: CHECKPOINT_EVERY,
        sync_times: Arc::default(),
    };
    Ok((files.time_syncs_in(Arc::default()), found.state, found.opened))
}

/// The directory a round's file is in.
pub(super) fn dir_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Starts round `name` on empty storage: the bets file first (empty), then
/// the journal's first line, written beside and synced, renamed into
/// place; one sync of the directory then makes both names durable at
/// once, so that a journal never survives without its bets file.
fn start(
    disk: &Arc<dyn Disk>,
    lock: Arc<DirLock>,
    bets: &Path,
    name: RoundName,
    agencies: u32,
) -> Result<(RoundFiles, RoundState), RoundError> {
    let journal_path = beside(bets, ".journal");
    create_empty(disk.as_ref(), bets)?;
    let header = Entry::Round { number: name.number, id: name.id.0, agencies, opened: name.opened }.line();
    let fresh = beside(&journal_path, ".new");
    let written = disk.open_file(&fresh, true).and_then(|mut file| {
        file.truncate(0)?;
        file.write_all(&[header.as_bytes()])?;
        file.sync()
    });
    written.map_err(|e| StorageError::io(&fresh, e))?;
    disk.rename(&fresh, &journal_path).map_err(|e| StorageError::io(&journal_path, e))?;
    let dir = dir_of(&journal_path);
    disk.sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    let files = RoundFiles {
        _lock: lock,
        disk: disk.clone(),
        bets: AppendFile::open(disk, bets, 0)?,
        digest: BetsDigest::default(),
        journal: AppendFile::open(disk, &journal_path, header.len() as u64)?,
        checkpointed: 0,
        // The round's first bets are checkpointed at once: from then on
        // the journal is bound to this bets file.
        next_checkpoint: 1,
        checkpoint_every: CHECKPOINT_EVERY,
        sync_times: Arc::default(),
    };
    Ok((files.time_syncs_in(Arc::default()), RoundState::new(name, agencies)))
}

/// Creates the bets file (or keeps an empty one); its name becomes
/// durable with the journal's (see `start`).
fn create_empty(disk: &dyn Disk, bets: &Path) -> Result<(), StorageError> {
    let io_err = |e| StorageError::io(bets, e);
    let file = disk.open_file(bets, true).map_err(io_err)?;
    assert_eq!(file.status().map_err(io_err)?.len, 0, "only an empty bets file is created");
    Ok(())
}

#[cfg(test)]
mod power;
