//! What the server knows of each agency, and the queue into the writer.
//!
//! One mutex guards both, so that "check the agency's state, then queue
//! its job" is a single step: a batch can never be queued behind its
//! agency's "finished", and no two batches of an agency are accepted with
//! the same sequence number. The lock is held only for those checks and a
//! non-blocking send; the disk work happens in the writer, outside it.

use std::sync::{Arc, Mutex, MutexGuard};

use lottery::Bet;
use protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::draw::DrawBarrier;
use crate::writer::{Job, StoreResult};

/// Why a request about an agency is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("agency {agency} is not one of 1..={expected}")]
    UnknownAgency { agency: u32, expected: u32 },
    #[error("agency {0} has already finished")]
    AlreadyFinished(u32),
    #[error("batch {seq} of agency {agency} is not above its last batch {last}")]
    DuplicateBatch { agency: u32, seq: u32, last: u32 },
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl Refusal {
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::UnknownAgency { .. } => ErrorCode::UnknownAgency,
            Refusal::AlreadyFinished(_) => ErrorCode::AlreadyFinished,
            Refusal::DuplicateBatch { .. } => ErrorCode::DuplicateBatch,
            Refusal::ShuttingDown => ErrorCode::ShuttingDown,
        }
    }

    /// Whether the connection is closed after this refusal. A replayed
    /// batch is only refused; everything else means the peer is confused.
    pub fn closes_connection(&self) -> bool {
        !matches!(self, Refusal::DuplicateBatch { .. })
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct AgencyState {
    /// Sequence number of the last batch accepted for storage.
    last_seq: Option<u32>,
    /// "Finished" was received; no batch is accepted after it.
    finished: bool,
}

#[derive(Debug)]
struct Inner {
    /// Index `K - 1` is agency K.
    agencies: Vec<AgencyState>,
    /// `None` once the server shuts down: the writer then drains and stops.
    jobs: Option<mpsc::UnboundedSender<Job>>,
}

/// Bets queued for the writer at most, all connections together: about
/// 2.5 MiB of bets in memory, however many agencies upload at once.
pub const QUEUE_BUDGET: usize = 16 * 1024;

/// The agencies' state, shared by every session.
#[derive(Debug)]
pub struct Agencies {
    inner: Mutex<Inner>,
    pub barrier: Arc<DrawBarrier>,
    /// One permit per bet from acceptance to disk: a session waits for
    /// permits before it queues a batch, so memory stays flat under load.
    budget: Arc<Semaphore>,
}

impl Agencies {
    pub fn new(jobs: mpsc::UnboundedSender<Job>, barrier: Arc<DrawBarrier>) -> Agencies {
        let agencies = vec![AgencyState::default(); barrier.expected() as usize];
        Agencies {
            inner: Mutex::new(Inner { agencies, jobs: Some(jobs) }),
            barrier,
            budget: Arc::new(Semaphore::new(QUEUE_BUDGET)),
        }
    }

    /// Checks that `agency` is one of the expected ones.
    pub fn check(&self, agency: u32) -> Result<(), Refusal> {
        let expected = self.barrier.expected();
        if (1..=expected).contains(&agency) {
            Ok(())
        } else {
            Err(Refusal::UnknownAgency { agency, expected })
        }
    }

    /// Waits until `bets` more bets fit in the writer's queue.
    pub async fn reserve(&self, bets: usize) -> OwnedSemaphorePermit {
        let bets = bets.clamp(1, QUEUE_BUDGET) as u32;
        self.budget.clone().acquire_many_owned(bets).await.expect("the budget is never closed")
    }

    /// Queues a batch of valid bets for storage. The receiver resolves
    /// once the batch is on disk (or could not be written).
    pub fn submit_batch(
        &self,
        agency: u32,
        seq: u32,
        bets: Vec<Bet>,
        permit: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<StoreResult>, Refusal> {
        self.check(agency)?;
        let mut inner = self.lock();
        let state = inner.agencies[agency as usize - 1];
        if state.finished {
            return Err(Refusal::AlreadyFinished(agency));
        }
        if let Some(last) = state.last_seq.filter(|last| seq <= *last) {
            return Err(Refusal::DuplicateBatch { agency, seq, last });
        }
        let (done, receiver) = oneshot::channel();
        inner.send(Job::Store { bets, done, permit })?;
        inner.agencies[agency as usize - 1].last_seq = Some(seq);
        Ok(receiver)
    }

    /// Records that `agency` has finished. The receiver resolves once every
    /// batch queued before is on disk and the barrier has counted it.
    pub fn finish(&self, agency: u32) -> Result<oneshot::Receiver<()>, Refusal> {
        self.check(agency)?;
        let mut inner = self.lock();
        if inner.agencies[agency as usize - 1].finished {
            return Err(Refusal::AlreadyFinished(agency));
        }
        let (done, receiver) = oneshot::channel();
        inner.send(Job::Finish { agency, done })?;
        inner.agencies[agency as usize - 1].finished = true;
        Ok(receiver)
    }

    /// Stops accepting jobs; the writer finishes the queued ones and stops.
    pub fn close(&self) {
        self.lock().jobs = None;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the state half
        // updated (each update is one assignment), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn send(&self, job: Job) -> Result<(), Refusal> {
        self.jobs.as_ref().and_then(|jobs| jobs.send(job).ok()).ok_or(Refusal::ShuttingDown)
    }
}
