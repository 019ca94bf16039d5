//! What the round is asked and what it answers: the requests of a group,
//! each one's answer, and what a group changed besides.

use std::sync::Arc;

use crate::progress::Progress;
use crate::storage::{AppendError, StorageError};

use super::super::batch::EncodedBatch;
use super::super::journal::CloseReason;
use super::super::state::Stage;
use super::Fatal;

/// One request of an agency, as the round sees it.
#[derive(Debug)]
pub enum Request {
    /// A connection now speaks for `agency`: what does the round hold?
    Hello { agency: u32 },
    /// Store these (already valid) bets, all or none.
    Store { agency: u32, batch: EncodedBatch },
    /// The agency finished, with `bets` bets.
    Finish { agency: u32, bets: u64 },
    /// Close the round now, and draw.
    Close { reason: CloseReason },
}

impl Request {
    /// The agency it is about, if any.
    pub fn agency(&self) -> Option<u32> {
        match *self {
            Request::Hello { agency } | Request::Store { agency, .. } | Request::Finish { agency, .. } => {
                Some(agency)
            }
            Request::Close { .. } => None,
        }
    }

    /// Bets it would store.
    pub fn bets(&self) -> usize {
        match self {
            Request::Store { batch, .. } => batch.bets() as usize,
            _ => 0,
        }
    }

    /// Whether nothing may follow it in its group: a `Hello`, whose answer
    /// is the durable state after the requests before it, or a `Close`,
    /// after which nothing is stored.
    pub fn closes_group(&self) -> bool {
        matches!(self, Request::Hello { .. } | Request::Close { .. })
    }

    /// Bytes of rows it would store.
    pub fn bytes(&self) -> usize {
        match self {
            Request::Store { batch, .. } => batch.rows().len(),
            _ => 0,
        }
    }
}

/// What the round holds of an agency, for its `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    pub progress: Progress,
    pub finished: bool,
    /// Where the round stands.
    pub stage: Stage,
}

/// What a batch learns.
#[derive(Debug, Clone)]
pub enum StoreOutcome {
    /// Its bets are durable now.
    Stored,
    /// Every bet of it was stored before; nothing was written.
    AlreadyStored,
    /// It does not start where the agency's stored bets end.
    OutOfSequence { stored: u64 },
    /// The agency has finished: nothing more is stored for it.
    AlreadyFinished,
    /// The round closed before this batch: nothing more is stored.
    RoundClosed,
    /// The append failed and nothing of it was kept.
    Failed(Arc<StorageError>),
}

/// What a "finished" learns.
#[derive(Debug, Clone)]
pub enum FinishOutcome {
    /// Recorded durably; the agency counts for the draw.
    Counted,
    /// The agency said it has `claimed` bets; the round holds `stored`.
    OutOfSequence {
        claimed: u64,
        stored: u64,
    },
    AlreadyFinished,
    /// The round closed before the agency finished.
    RoundClosed,
    Failed(Arc<StorageError>),
}

/// What a `Close` learns.
#[derive(Debug, Clone)]
pub enum CloseOutcome {
    /// The round is closed now, and drawn, holding `bets` bets (for
    /// `reason`: the last agency may have finished in the same group).
    Closed {
        reason: CloseReason,
        bets: u64,
    },
    /// It had closed before, for `reason`.
    NotOpen(CloseReason),
    Failed(Arc<StorageError>),
}

/// The answer to one request, of the request's own kind.
#[derive(Debug, Clone)]
pub enum Answer {
    Welcome(Welcome),
    Store(StoreOutcome),
    Finish(FinishOutcome),
    Close(CloseOutcome),
}

/// What a group changed, besides its answers.
#[derive(Debug, Default)]
pub struct Committed {
    /// One per request, in order.
    pub answers: Vec<Answer>,
    /// Agencies that finished with this group, and their bets.
    pub finished: Vec<(u32, u64)>,
    /// The round closed with this group, why, and holding how many bets.
    pub closed: Option<(CloseReason, u64)>,
    /// The draw ran with this group.
    pub drawn: bool,
    /// Appends that failed and kept nothing (their requests were refused).
    pub failures: Vec<Arc<StorageError>>,
}

impl Committed {
    /// What an append came to: done, failed for now (the failure is kept,
    /// to be told once), or failed for good.
    pub(super) fn outcome(
        &mut self,
        append: Result<(), AppendError>,
    ) -> Result<Result<(), Arc<StorageError>>, Fatal> {
        match append {
            Ok(()) => Ok(Ok(())),
            Err(AppendError::Transient(e)) => {
                let e = Arc::new(e);
                self.failures.push(e.clone());
                Ok(Err(e))
            }
            Err(AppendError::Fatal(e)) => Err(Fatal(e)),
        }
    }
}
