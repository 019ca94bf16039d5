//! The one owner of the rounds' files: a blocking task that takes what
//! every session (and the operator, and the clock) queues, in queue order,
//! to the open round (`lottery::round`), whose rules decide what is stored,
//! and answers each job once it is durable.
//!
//! It takes every job waiting in the queue, up to a group's bound
//! ([`MAX_GROUP_BETS`] bets, [`MAX_GROUP_BYTES`] bytes), and hands them to
//! the round as one group: one append (and one `fdatasync`) for the rows
//! of every accepted batch, one more for the journal lines of every
//! accepted "finished" (and the close and the draw). Under load many
//! batches share one sync; alone, a batch gets its own. A `Hello` or a
//! close ends its group, so that a `Hello`'s answer is the state right
//! after the jobs queued before it (see [`crate::agencies`]) and a close
//! draws over exactly those. Opening the next round is a job of its own.
//!
//! Every job names the round it is for: one for a round that has made way
//! for the next is answered as that round is, closed, without reaching the
//! open one.
//!
//! When the round closes (its last agency finished, its time is up, or the
//! operator said so), the round records the close and the draw together;
//! the writer then logs `cierre` and `sorteo`, waits for those lines to be
//! written out, and only then publishes the winners on the [`Board`], all
//! before any job after the close is answered.
//!
//! A failed append that leaves the files as they were is answered with
//! `StorageFailure`, and may be sent again. A failure that leaves a file in
//! an unknown state, or a failed draw or move, stops the writer with an
//! error, and the server with it: a restart recovers from what is on disk.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use edge::log::{Action, Outcome};
use lottery::round::{
    Answer, CloseOutcome, CloseReason, Committed, EncodedBatch, Fatal, FinishOutcome, Request, Round,
    RoundError, RoundFiles, RoundState, Stage, StoreOutcome, Welcome, MAX_GROUP_BETS, MAX_GROUP_BYTES,
};
use lottery::storage::row::ROW_BYTES_PER_WIRE_BYTE;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::board::{Board, Winners};
use crate::clock::Schedule;
use crate::metrics::{BatchResult, Metrics};

/// Bytes of rows one batch of valid bets can make, at most: twice its
/// frame (see [`ROW_BYTES_PER_WIRE_BYTE`]).
pub const MAX_BATCH_ROW_BYTES: usize = ROW_BYTES_PER_WIRE_BYTE * protocol::MAX_FRAME_LEN;

/// How long the writer waits for the draw's lines to reach stdout before
/// it publishes the winners anyway (a stdout nobody reads must not stop
/// the lottery).
const DRAW_LINES_WAIT: Duration = Duration::from_secs(1);

const _: () = assert!(MAX_BATCH_ROW_BYTES <= MAX_GROUP_BYTES, "a group always takes a batch");
const _: () = assert!(protocol::MAX_FRAME_LEN / 10 <= MAX_GROUP_BETS, "a group always takes a batch");
const _: () = assert!(
    MAX_BATCH_ROW_BYTES <= crate::agencies::QUEUE_BYTES,
    "the writer's queue always has room for a batch"
);

/// Work for the writer.
#[derive(Debug)]
pub enum Job {
    /// A request about round `round`, and where its answer goes.
    Round { round: u64, request: Request, reply: Reply },
    /// Open the round after `after`, once `after` is drawn.
    Open { after: u64, reply: oneshot::Sender<Result<u64, OpenRefused>> },
    /// Check that the round's files are still in place (they are checked
    /// after every write; this finds a round deleted while idle).
    Check,
}

/// Where a job's answer goes, of the job's own kind.
#[derive(Debug)]
pub enum Reply {
    Welcome(oneshot::Sender<Welcome>),
    /// The permit holds the batch's share of the queue's budget until its
    /// rows are written.
    Store(oneshot::Sender<StoreOutcome>, OwnedSemaphorePermit),
    Finish(oneshot::Sender<FinishOutcome>),
    Close(oneshot::Sender<CloseOutcome>),
}

/// Why the next round did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenRefused {
    #[error("round {0} is open: close it first (server admin close)")]
    Open(u64),
    #[error("round {0} is closed and its draw is being recorded: try again in a moment")]
    Drawing(u64),
    #[error("round {0} has opened since: nothing to do")]
    Moved(u64),
    /// Nothing was moved: the round is still drawn, where it was.
    #[error("{}: holds files that are not this round's; move them away, then open the next round again", .0.display())]
    Kept(std::path::PathBuf),
}

impl Job {
    /// A connection now speaks for `agency` in `round`: answer with what is
    /// stored.
    pub fn hello(round: u64, agency: u32) -> (Job, oneshot::Receiver<Welcome>) {
        let (done, answer) = oneshot::channel();
        (Job::Round { round, request: Request::Hello { agency }, reply: Reply::Welcome(done) }, answer)
    }

    /// Store these (already valid) bets in `round`, all or none.
    pub fn store(
        round: u64,
        agency: u32,
        batch: EncodedBatch,
        permit: OwnedSemaphorePermit,
    ) -> (Job, oneshot::Receiver<StoreOutcome>) {
        assert!(batch.rows().len() <= permit.num_permits(), "a batch's rows fit the room it reserved");
        let (done, answer) = oneshot::channel();
        let request = Request::Store { agency, batch };
        (Job::Round { round, request, reply: Reply::Store(done, permit) }, answer)
    }

    /// The agency has finished `round`, with `bets` bets.
    pub fn finish(round: u64, agency: u32, bets: u64) -> (Job, oneshot::Receiver<FinishOutcome>) {
        let (done, answer) = oneshot::channel();
        (Job::Round { round, request: Request::Finish { agency, bets }, reply: Reply::Finish(done) }, answer)
    }

    /// Close `round` now, for `reason`, if it is still open.
    pub fn close(round: u64, reason: CloseReason) -> (Job, oneshot::Receiver<CloseOutcome>) {
        let (done, answer) = oneshot::channel();
        (Job::Round { round, request: Request::Close { reason }, reply: Reply::Close(done) }, answer)
    }

    /// Open the round after `after`.
    pub fn open(after: u64) -> (Job, oneshot::Receiver<Result<u64, OpenRefused>>) {
        let (done, answer) = oneshot::channel();
        (Job::Open { after, reply: done }, answer)
    }

    /// Whether nothing may follow it in its group.
    fn ends_group(&self) -> bool {
        match self {
            Job::Round { request, .. } => request.closes_group(),
            Job::Open { .. } | Job::Check => true,
        }
    }

    /// Whether it is a group of its own.
    fn alone(&self) -> bool {
        matches!(self, Job::Open { .. } | Job::Check)
    }

    /// Bets and bytes of rows it would store.
    fn size(&self) -> (usize, usize) {
        match self {
            Job::Round { request, .. } => (request.bets(), request.bytes()),
            Job::Open { .. } | Job::Check => (0, 0),
        }
    }
}

/// Why the writer stopped before its queue closed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WriterFailed(pub RoundError);

impl From<Fatal> for WriterFailed {
    fn from(Fatal(e): Fatal) -> WriterFailed {
        WriterFailed(RoundError::Storage(e))
    }
}

/// Starts the writer on a round opened beforehand. It stops when every
/// sender of `jobs` is gone and the queue is empty, or at a failure it
/// cannot undo.
pub fn spawn(
    round: Round<RoundFiles>,
    jobs: mpsc::UnboundedReceiver<Job>,
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    schedule: Schedule,
) -> JoinHandle<Result<(), WriterFailed>> {
    tokio::task::spawn_blocking(move || {
        let mut writer = Writer { round, board, metrics, schedule, previous: None };
        // Whatever the queue said last, the files must still be there.
        let result = writer.run(jobs).and_then(|()| {
            writer.round.ledger().check_in_place().map_err(|e| WriterFailed(RoundError::Storage(e)))
        });
        if let Err(e) = &result {
            error!("{}", Action::fail("store_bets").field("error", e).field("then", "the server stops"));
        }
        let files = writer.round.ledger();
        let (bet_syncs, journal_syncs) = files.syncs();
        let line = Action::new("close_file", if result.is_ok() { Outcome::Success } else { Outcome::Fail })
            .field("path", files.bets_path().display())
            .field("round", writer.round.state().number())
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
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    schedule: Schedule,
    /// The round before the open one, once it made way: jobs still queued
    /// for it are answered from it.
    previous: Option<RoundState>,
}

impl Writer {
    fn run(&mut self, mut jobs: mpsc::UnboundedReceiver<Job>) -> Result<(), WriterFailed> {
        if self.round.state().drawn() {
            // Drawn before a restart: its sorteo was logged then.
            self.publish(false);
        } else {
            let committed = self.round.draw_if_due()?;
            self.report(&committed);
        }
        let mut group = Vec::new();
        // A job that did not fit in the last group starts the next one.
        let mut carried: Option<Job> = None;
        while let Some(job) = carried.take().or_else(|| jobs.blocking_recv()) {
            let mut open = !job.ends_group();
            let (mut bets, mut bytes) = job.size();
            group.push(job);
            while open {
                let Ok(job) = jobs.try_recv() else { break };
                let (more_bets, more_bytes) = job.size();
                let too_big = bets + more_bets > MAX_GROUP_BETS || bytes + more_bytes > MAX_GROUP_BYTES;
                if too_big || job.alone() {
                    carried = Some(job);
                    break;
                }
                open = !job.ends_group();
                bets += more_bets;
                bytes += more_bytes;
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
        let open = self.round.state().number();
        let mut requests = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        for job in group.drain(..) {
            match job {
                Job::Open { after, reply } => {
                    assert!(requests.is_empty(), "opening the next round is a group of its own");
                    let opened = self.open_next(after)?;
                    drop(reply.send(opened));
                }
                Job::Check => {
                    assert!(requests.is_empty(), "a check is a group of its own");
                    let files = self.round.ledger();
                    files.check_in_place().map_err(|e| WriterFailed(RoundError::Storage(e)))?;
                }
                Job::Round { round, request, reply } if round == open => {
                    requests.push(request);
                    replies.push(reply);
                }
                Job::Round { round, request, reply } => self.answer_earlier(round, request, reply),
            }
        }
        if requests.is_empty() {
            return Ok(());
        }
        let committed = self.round.commit(&mut requests)?;
        self.report(&committed);
        self.count(&requests, &committed);
        assert_eq!(committed.answers.len(), replies.len(), "an answer per job");
        for (reply, answer) in replies.into_iter().zip(committed.answers) {
            answer_with(reply, answer);
        }
        Ok(())
    }

    /// Answers a job for round `round`, which has made way for the open
    /// one: closed, and drawn.
    fn answer_earlier(&self, round: u64, request: Request, reply: Reply) {
        let open = self.round.state().number();
        assert!(round < open, "a job names the open round or an earlier one");
        let answer = match request {
            Request::Hello { agency } => {
                let earlier = match &self.previous {
                    Some(previous) if previous.number() == round => Some(previous.clone()),
                    _ => self.board.kept(round).ok().flatten().map(|kept| (*kept).clone()),
                };
                let Some(earlier) = earlier else {
                    // Gone from the disk while its Hello was queued: the
                    // session finds out when it asks the board.
                    return;
                };
                let held = earlier.agency(agency);
                Answer::Welcome(Welcome {
                    progress: held.progress,
                    finished: held.finished,
                    stage: earlier.stage(),
                })
            }
            Request::Store { .. } => {
                self.metrics.batch(BatchResult::RoundClosed);
                Answer::Store(StoreOutcome::RoundClosed)
            }
            Request::Finish { .. } => Answer::Finish(FinishOutcome::RoundClosed),
            Request::Close { .. } => {
                let reason = match self.previous.as_ref().map(RoundState::stage) {
                    Some(Stage::Drawn(reason)) => reason,
                    _ => CloseReason::Operator,
                };
                Answer::Close(CloseOutcome::NotOpen(reason))
            }
        };
        answer_with(reply, answer);
    }

    /// Opens the round after `after`, if `after` is the open round and is
    /// drawn: moves its files away, starts the next, says so.
    fn open_next(&mut self, after: u64) -> Result<Result<u64, OpenRefused>, WriterFailed> {
        let state = self.round.state();
        if state.number() != after {
            return Ok(Err(OpenRefused::Moved(state.number())));
        }
        match state.stage() {
            Stage::Open => return Ok(Err(OpenRefused::Open(after))),
            Stage::Closed(_) => return Ok(Err(OpenRefused::Drawing(after))),
            Stage::Drawn(_) => {}
        }
        let drawn = match self.round.open_next(self.board.expected(), lottery::round::now_millis()) {
            Ok(drawn) => drawn,
            // Nothing was moved: the round stays drawn where it was.
            Err(RoundError::KeptBefore { dir }) => {
                let refused = OpenRefused::Kept(dir);
                error!("{}", Action::fail("new_round").field("round", after + 1).field("error", &refused));
                return Ok(Err(refused));
            }
            Err(e) => return Err(WriterFailed(e)),
        };
        self.previous = Some(drawn);
        let state = self.round.state();
        let closes = self.schedule.closes(state.name().opened);
        self.board.opened(state, closes);
        self.schedule.log_opened(state, closes);
        Ok(Ok(state.number()))
    }

    /// Moves the board's counters and the metrics by what a group stored;
    /// a group that wrote says whether the storage works.
    fn count(&self, requests: &[Request], committed: &Committed) {
        let wrote = committed.answers.iter().any(|a| matches!(a, Answer::Store(StoreOutcome::Stored)));
        if !committed.failures.is_empty() {
            self.metrics.storage_wrote(true);
        } else if wrote || !committed.finished.is_empty() || committed.drawn {
            self.metrics.storage_wrote(false);
        }
        for (request, answer) in requests.iter().zip(&committed.answers) {
            let (Request::Store { agency, .. }, Answer::Store(outcome)) = (request, answer) else { continue };
            let result = match outcome {
                StoreOutcome::Stored => {
                    self.board.stored(*agency, self.round.state().agency(*agency).progress.bets());
                    self.metrics.stored(*agency, request.bets() as u64);
                    BatchResult::Stored
                }
                StoreOutcome::AlreadyStored => BatchResult::AlreadyStored,
                StoreOutcome::OutOfSequence { .. } => BatchResult::OutOfSequence,
                StoreOutcome::AlreadyFinished => BatchResult::AfterFinished,
                StoreOutcome::RoundClosed => BatchResult::RoundClosed,
                StoreOutcome::Failed(_) => BatchResult::StorageFailure,
            };
            self.metrics.batch(result);
        }
    }

    /// Logs what a group changed and moves the board.
    fn report(&mut self, committed: &Committed) {
        let round = self.round.state().number();
        for (agency, bets) in &committed.finished {
            let line = Action::success("agency_finished").field("round", round).field("agency", agency);
            info!("{}", line.field("bets", bets));
            self.board.finish(*agency);
        }
        if let Some((reason, bets)) = committed.closed {
            let line = Action::success("cierre").field("round", round).field("reason", reason);
            info!("{}", line.field("bets", bets));
            self.board.close(reason);
        }
        if committed.drawn {
            self.publish(true);
        }
        for failure in &committed.failures {
            error!("{}", Action::fail("store_bets").field("round", round).field("error", failure));
        }
    }

    /// Logs `sorteo` (for a draw that just ran), waits for it to be
    /// written out, and publishes the winners.
    fn publish(&mut self, just_drawn: bool) {
        let round = self.round.state().number();
        let winners: HashMap<u32, Vec<String>> = self.round.take_winners().into_iter().collect();
        let winners = Winners::new(winners);
        if just_drawn {
            info!("{}", Action::success("sorteo").field("round", round).field("winners", winners.count()));
            edge::log::wait_written(DRAW_LINES_WAIT);
        }
        self.board.drawn(winners);
    }
}

/// Sends `answer` where `reply` says; a session that went away no longer
/// needs it.
fn answer_with(reply: Reply, answer: Answer) {
    match (reply, answer) {
        (Reply::Welcome(done), Answer::Welcome(welcome)) => drop(done.send(welcome)),
        (Reply::Store(done, permit), Answer::Store(outcome)) => {
            drop(permit);
            drop(done.send(outcome));
        }
        (Reply::Finish(done), Answer::Finish(outcome)) => drop(done.send(outcome)),
        (Reply::Close(done), Answer::Close(outcome)) => drop(done.send(outcome)),
        (reply, answer) => unreachable!("{answer:?} answers a job of its own kind, not {reply:?}"),
    }
}
