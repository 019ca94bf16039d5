//! The one owner of the round's files: a blocking task that takes what
//! every session queues, in queue order, to the round (`lottery::round`),
//! whose rules decide what is stored, and answers each job once it is
//! durable.
//!
//! It takes every job waiting in the queue, up to a group's bound
//! ([`MAX_GROUP_BETS`] bets, [`MAX_GROUP_BYTES`] bytes), and hands them to
//! the round as one group: one append (and one `fdatasync`) for the rows
//! of every accepted batch, one more for the journal lines of every
//! accepted "finished". Under load many batches share one sync; alone, a
//! batch gets its own. A `Hello` closes its group, so that its answer is
//! the state right after the jobs queued before it (see
//! [`crate::agencies`]).
//!
//! When the last agency finishes, the round records the draw with it; the
//! writer then logs `sorteo` and publishes the winners, all before that
//! agency's "finished" is acknowledged.
//!
//! A failed append that leaves the files as they were is answered with
//! `StorageFailure`, and may be sent again. A failure that leaves a file in
//! an unknown state, or a failed draw, stops the writer with an error, and
//! the server with it: a restart recovers from what is on disk.

use std::collections::HashMap;
use std::sync::Arc;

use edge::log::{Action, Outcome};
use lottery::round::{
    Answer, Committed, EncodedBatch, Fatal, FinishOutcome, Request, Round, RoundFiles, StoreOutcome, Welcome,
    MAX_GROUP_BETS, MAX_GROUP_BYTES,
};
use lottery::storage::row::ROW_BYTES_PER_WIRE_BYTE;
use lottery::storage::StorageError;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::draw::{DrawBarrier, Winners};

/// Bytes of rows one batch of valid bets can make, at most: twice its
/// frame (see [`ROW_BYTES_PER_WIRE_BYTE`]).
pub const MAX_BATCH_ROW_BYTES: usize = ROW_BYTES_PER_WIRE_BYTE * protocol::MAX_FRAME_LEN;

const _: () = assert!(MAX_BATCH_ROW_BYTES <= MAX_GROUP_BYTES, "a group always takes a batch");
const _: () = assert!(protocol::MAX_FRAME_LEN / 10 <= MAX_GROUP_BETS, "a group always takes a batch");
const _: () = assert!(
    MAX_BATCH_ROW_BYTES <= crate::agencies::QUEUE_BYTES,
    "the writer's queue always has room for a batch"
);

/// Work for the writer: a request of the round, and where its answer goes.
#[derive(Debug)]
pub struct Job {
    request: Request,
    reply: Reply,
}

/// Where a job's answer goes, of the job's own kind.
#[derive(Debug)]
enum Reply {
    Welcome(oneshot::Sender<Welcome>),
    /// The permit holds the batch's share of the queue's budget until its
    /// rows are written.
    Store(oneshot::Sender<StoreOutcome>, OwnedSemaphorePermit),
    Finish(oneshot::Sender<FinishOutcome>),
}

impl Job {
    /// A connection now speaks for `agency`: answer with what is stored.
    pub fn hello(agency: u32) -> (Job, oneshot::Receiver<Welcome>) {
        let (done, answer) = oneshot::channel();
        (Job { request: Request::Hello { agency }, reply: Reply::Welcome(done) }, answer)
    }

    /// Store these (already valid) bets, all or none.
    pub fn store(
        agency: u32,
        batch: EncodedBatch,
        permit: OwnedSemaphorePermit,
    ) -> (Job, oneshot::Receiver<StoreOutcome>) {
        assert!(batch.rows().len() <= permit.num_permits(), "a batch's rows fit the room it reserved");
        let (done, answer) = oneshot::channel();
        (Job { request: Request::Store { agency, batch }, reply: Reply::Store(done, permit) }, answer)
    }

    /// The agency has finished, with `bets` bets.
    pub fn finish(agency: u32, bets: u64) -> (Job, oneshot::Receiver<FinishOutcome>) {
        let (done, answer) = oneshot::channel();
        (Job { request: Request::Finish { agency, bets }, reply: Reply::Finish(done) }, answer)
    }
}

/// Why the writer stopped before its queue closed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WriterFailed(pub StorageError);

impl From<Fatal> for WriterFailed {
    fn from(Fatal(e): Fatal) -> WriterFailed {
        WriterFailed(e)
    }
}

/// Starts the writer on a round opened beforehand. It stops when every
/// sender of `jobs` is gone and the queue is empty, or at a failure it
/// cannot undo.
pub fn spawn(
    round: Round<RoundFiles>,
    jobs: mpsc::UnboundedReceiver<Job>,
    barrier: Arc<DrawBarrier>,
) -> JoinHandle<Result<(), WriterFailed>> {
    tokio::task::spawn_blocking(move || {
        let mut writer = Writer { round, barrier };
        let result = writer.run(jobs);
        if let Err(e) = &result {
            error!("{}", Action::fail("store_bets").field("error", e).field("then", "the server stops"));
        }
        let files = writer.round.ledger();
        let (bet_syncs, journal_syncs) = files.syncs();
        let line = Action::new("close_file", if result.is_ok() { Outcome::Success } else { Outcome::Fail })
            .field("path", files.bets_path().display())
            .field("bytes", files.bets_len())
            .field("syncs", bet_syncs)
            .field("journal_syncs", journal_syncs);
        match &result {
            Ok(()) => info!("{line}"),
            Err(_) => error!("{line}"),
        }
        result
    })
}

struct Writer {
    round: Round<RoundFiles>,
    barrier: Arc<DrawBarrier>,
}

impl Writer {
    fn run(&mut self, mut jobs: mpsc::UnboundedReceiver<Job>) -> Result<(), WriterFailed> {
        self.barrier.set_finished(self.round.state().finished());
        if self.round.state().drawn() {
            self.publish();
        } else if self.round.draw_if_complete()? {
            info!("{}", Action::success("sorteo"));
            self.publish();
        }
        let mut group = Vec::new();
        // A job that did not fit in the last group starts the next one.
        let mut carried: Option<Job> = None;
        while let Some(job) = carried.take().or_else(|| jobs.blocking_recv()) {
            let mut open = !job.request.closes_group();
            let (mut bets, mut bytes) = (job.request.bets(), job.request.bytes());
            group.push(job);
            while open {
                let Ok(job) = jobs.try_recv() else { break };
                let request = &job.request;
                if bets + request.bets() > MAX_GROUP_BETS || bytes + request.bytes() > MAX_GROUP_BYTES {
                    carried = Some(job);
                    break;
                }
                open = !request.closes_group();
                bets += request.bets();
                bytes += request.bytes();
                group.push(job);
            }
            self.commit(&mut group)?;
            assert!(group.is_empty(), "every job of a group is answered");
        }
        Ok(())
    }

    /// Hands one group to the round, says what it changed, and answers
    /// each job; empties the group.
    fn commit(&mut self, group: &mut Vec<Job>) -> Result<(), WriterFailed> {
        let (mut requests, replies): (Vec<Request>, Vec<Reply>) =
            group.drain(..).map(|job| (job.request, job.reply)).unzip();
        let committed = self.round.commit(&mut requests)?;
        self.report(&committed);
        assert_eq!(committed.answers.len(), replies.len(), "an answer per job");
        // A session that went away no longer needs its answer.
        for (reply, answer) in replies.into_iter().zip(committed.answers) {
            match (reply, answer) {
                (Reply::Welcome(done), Answer::Welcome(welcome)) => drop(done.send(welcome)),
                (Reply::Store(done, permit), Answer::Store(outcome)) => {
                    drop(permit);
                    drop(done.send(outcome));
                }
                (Reply::Finish(done), Answer::Finish(outcome)) => drop(done.send(outcome)),
                (reply, answer) => unreachable!("{answer:?} answers a job of its own kind, not {reply:?}"),
            }
        }
        Ok(())
    }

    /// Logs what a group changed and moves the draw's barrier.
    fn report(&mut self, committed: &Committed) {
        for (agency, bets) in &committed.finished {
            info!("{}", Action::success("agency_finished").field("agency", agency).field("bets", bets));
        }
        self.barrier.set_finished(self.round.state().finished());
        if committed.drawn {
            info!("{}", Action::success("sorteo"));
            self.publish();
        }
        for failure in &committed.failures {
            error!("{}", Action::fail("store_bets").field("error", failure));
        }
    }

    fn publish(&mut self) {
        let winners: HashMap<u32, Vec<String>> = self.round.take_winners().into_iter().collect();
        self.barrier.publish(Winners::new(winners));
    }
}
