//! A round: one draw, and everything the server keeps of it.
//!
//! - `rules`: the round's rules ([`Round`]): what is stored, what counts,
//!   when the draw runs, behind the [`Ledger`] seam where bets and facts
//!   are made durable;
//! - `state`: what a round holds ([`RoundState`]);
//! - `batch`: a batch of bets turned into rows ([`EncodedBatch`]);
//! - `files`: the round's files on disk ([`RoundFiles`], a [`Ledger`]),
//!   and [`open`], which starts or resumes the round they hold;
//! - `recovery`: reading a round back after a crash ([`Opened`], [`Damage`]);
//! - `journal`: the facts the bets file cannot hold ([`Entry`]).
//!
//! A round lives in two files in one directory, named after the bets file
//! (`SERVER_STORAGE_PATH`, say `bets.csv`):
//!
//! - `bets.csv`: every stored bet (see [`crate::storage`]), the single
//!   source of truth for what each agency has stored;
//! - `bets.csv.journal`: which round this is and for how many agencies,
//!   how much of the bets file was synced (a checkpoint every
//!   [`CHECKPOINT_EVERY`] bytes), which agencies finished (with their
//!   [`crate::Progress`]), and whether the draw ran.
//!
//! The directory itself is locked (`flock`) by the one server that owns the
//! round: the storage directory belongs to one server.
//!
//! What reaches the disk, in what order:
//! - a new round: an empty bets file (synced, directory synced), then the
//!   journal's first line (written beside, synced, renamed into place,
//!   directory synced): a journal always has its bets file;
//! - a group of bets: rows appended to `bets.csv`, synced, then acknowledged;
//! - "finished": its bets are durable first (same group or an earlier
//!   one); then the journal line, synced, then acknowledged;
//! - a checkpoint line is appended and synced after the group that takes
//!   the bets file past each [`CHECKPOINT_EVERY`] bytes (with that
//!   group's other journal lines, if any);
//! - the draw: the `drawn` line, synced, then `sorteo`, then the winners.

mod archive;
mod batch;
mod files;
mod journal;
mod recovery;
mod rules;
mod state;

use std::path::{Path, PathBuf};

pub use archive::{kept_dir, Shelf, ROUNDS_DIR};
pub use batch::{BatchError, EncodedBatch};
pub use files::{now_millis, open, open_on, RoundFiles};
pub use journal::{BetsDigest, CloseReason, Entry, LineError, LineFault};
pub use recovery::{Cut, CutReason, Damage, Opened};
pub use rules::{
    Answer, CloseOutcome, Committed, Fatal, FinishOutcome, Ledger, Request, Round, StoreOutcome, Welcome,
};
pub use state::{AgencyState, RoundName, RoundState, Stage};

use crate::storage::StorageError;

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
    #[error("{dir}: holds files that are not this round's; move them away, then open the next round again")]
    KeptBefore { dir: PathBuf },
    #[error("{path}: {damage}")]
    Damaged { path: PathBuf, damage: Damage },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// `bets.csv` → `bets.csv<suffix>`, in the same directory.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}
