//! Which connection speaks for each agency, and the queue into the writer.
//!
//! A connection claims its agency for the open round only; one about a
//! kept round (its winners) claims nothing, and stores nothing.
//!
//! One mutex guards both, so that "check this connection still speaks for
//! its agency, then queue its job" is a single step. A connection claims
//! its agency with `Hello`; a newer claim of the same agency supersedes the
//! older one (Kafka's producer fencing, with the connection in the role of
//! the producer epoch): the older connection is told to stop, and nothing
//! it sends afterwards is queued. The newer claim's `Hello` is queued under
//! the same lock, behind every job of the older connection, so the writer
//! answers it only once those are settled: an agency that reconnects learns
//! exactly what is durable, with nothing of its old connection still in
//! flight.
//!
//! The lock covers no I/O: checks and a non-blocking send.

use std::sync::{Arc, Mutex, MutexGuard};

use protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use lottery::round::{CloseOutcome, CloseReason, EncodedBatch, FinishOutcome, StoreOutcome, Welcome};

use crate::board::Board;
use crate::metrics::Metrics;
use crate::writer::{Job, OpenRefused};

/// Why a request about an agency is refused before it reaches the writer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("agency {agency} is not one of 1..={expected}")]
    UnknownAgency { agency: u32, expected: u32 },
    #[error("a newer connection of agency {0} took over")]
    Superseded(u32),
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl Refusal {
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::UnknownAgency { .. } => ErrorCode::UnknownAgency,
            Refusal::Superseded(_) => ErrorCode::Superseded,
            Refusal::ShuttingDown => ErrorCode::ShuttingDown,
        }
    }
}

/// Bytes of rows queued for the writer at most, all connections together,
/// however many agencies upload at once: room for many batches per group,
/// and a bound on the memory they take (docs/DESIGN.md).
pub const QUEUE_BYTES: usize = 512 * 1024;

/// A connection, as the registry knows it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Unique for the server's life.
    pub id: u64,
    /// Cancelled when a newer connection claims the same agency.
    pub superseded: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    /// The connection speaking for agency K, at index K − 1.
    claims: Vec<Option<Connection>>,
    /// `None` once the server shuts down: the writer then drains and stops.
    jobs: Option<mpsc::UnboundedSender<Job>>,
}

/// The agencies' connections and the writer's queue, shared by every session.
#[derive(Debug)]
pub struct Agencies {
    inner: Mutex<Inner>,
    pub board: Arc<Board>,
    pub metrics: Arc<Metrics>,
    /// One permit per byte of rows from acceptance to disk: a session
    /// waits for permits before it queues a batch, so memory stays flat
    /// under load.
    budget: Arc<Semaphore>,
}

impl Agencies {
    pub fn new(jobs: mpsc::UnboundedSender<Job>, board: Arc<Board>, metrics: Arc<Metrics>) -> Agencies {
        let claims = vec![None; board.expected() as usize];
        Agencies {
            inner: Mutex::new(Inner { claims, jobs: Some(jobs) }),
            board,
            metrics,
            budget: Arc::new(Semaphore::new(QUEUE_BYTES)),
        }
    }

    /// Checks that `agency` is one of the expected ones.
    pub fn check(&self, agency: u32) -> Result<(), Refusal> {
        let expected = self.board.expected();
        if (1..=expected).contains(&agency) {
            Ok(())
        } else {
            Err(Refusal::UnknownAgency { agency, expected })
        }
    }

    /// Makes `connection` the one that speaks for `agency` in the open
    /// round `round`, superseding any other; the receiver resolves with
    /// what the round holds of it.
    pub fn hello(
        &self,
        agency: u32,
        round: u64,
        connection: &Connection,
    ) -> Result<oneshot::Receiver<Welcome>, Refusal> {
        self.check(agency)?;
        let mut inner = self.lock();
        let (job, welcome) = Job::hello(round, agency);
        inner.send(job)?;
        let claim = &mut inner.claims[agency as usize - 1];
        if let Some(older) = claim.replace(connection.clone()) {
            assert_ne!(older.id, connection.id, "a connection says Hello once");
            older.superseded.cancel();
        }
        Ok(welcome)
    }

    /// Waits until `bytes` more bytes of rows fit in the writer's queue.
    pub async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        assert!(bytes <= QUEUE_BYTES, "a batch's rows always fit in the queue");
        let bytes = u32::try_from(bytes.max(1)).expect("the queue's size fits in u32");
        self.budget.clone().acquire_many_owned(bytes).await.expect("the budget is never closed")
    }

    /// Queues a batch of valid bets of round `round`, encoded, for storage.
    pub fn store(
        &self,
        agency: u32,
        round: u64,
        connection: &Connection,
        batch: EncodedBatch,
        permit: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<StoreOutcome>, Refusal> {
        let inner = self.claimed(agency, connection)?;
        let (job, outcome) = Job::store(round, agency, batch, permit);
        inner.send(job)?;
        Ok(outcome)
    }

    /// Queues the agency's "finished" of round `round`, with the bets it
    /// says it has.
    pub fn finish(
        &self,
        agency: u32,
        round: u64,
        connection: &Connection,
        bets: u64,
    ) -> Result<oneshot::Receiver<FinishOutcome>, Refusal> {
        let inner = self.claimed(agency, connection)?;
        let (job, outcome) = Job::finish(round, agency, bets);
        inner.send(job)?;
        Ok(outcome)
    }

    /// Queues the close of round `round`, if it is still open then.
    pub fn close_round(
        &self,
        round: u64,
        reason: CloseReason,
    ) -> Result<oneshot::Receiver<CloseOutcome>, Refusal> {
        let (job, outcome) = Job::close(round, reason);
        self.lock().send(job)?;
        Ok(outcome)
    }

    /// Whether a connection speaks for each agency now, agency K at K − 1.
    pub fn connected(&self) -> Vec<bool> {
        self.lock().claims.iter().map(Option::is_some).collect()
    }

    /// Queues a check of the round's files.
    pub fn check_files(&self) -> Result<(), Refusal> {
        self.lock().send(Job::Check)
    }

    /// Queues the opening of the round after `after`.
    pub fn open_round(&self, after: u64) -> Result<oneshot::Receiver<Result<u64, OpenRefused>>, Refusal> {
        let (job, opened) = Job::open(after);
        self.lock().send(job)?;
        Ok(opened)
    }

    /// Forgets `connection`'s claim, if it still holds one.
    pub fn release(&self, agency: u32, connection: &Connection) {
        let mut inner = self.lock();
        let claim = &mut inner.claims[agency as usize - 1];
        if claim.as_ref().is_some_and(|c| c.id == connection.id) {
            *claim = None;
        }
    }

    /// Stops accepting jobs; the writer finishes the queued ones and stops.
    pub fn close(&self) {
        self.lock().jobs = None;
    }

    /// The lock, if `connection` still speaks for `agency`.
    fn claimed(&self, agency: u32, connection: &Connection) -> Result<MutexGuard<'_, Inner>, Refusal> {
        self.check(agency)?;
        let inner = self.lock();
        match &inner.claims[agency as usize - 1] {
            Some(claim) if claim.id == connection.id => Ok(inner),
            _ => Err(Refusal::Superseded(agency)),
        }
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
