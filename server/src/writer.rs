//! The one owner of the round's files: a blocking task that stores what
//! every session queues, in queue order, with group commit.
//!
//! It takes every job waiting in the queue (up to [`MAX_GROUP_BETS`] bets),
//! decides each one against the round's state, appends the rows of every
//! accepted batch with one write and one `fdatasync`, then the journal
//! lines of every accepted "finished" with one more, and only then answers
//! each job. Under load many batches share one sync; alone, a batch gets
//! its own. Batches never add a journal line: a round's journal grows by
//! one line per agency and one for the draw.
//!
//! The writer alone decides what is stored, so its rules are the round's:
//! a batch is stored only if it starts exactly where its agency's stored
//! bets end (a batch seen before is acknowledged again, never stored
//! twice); "finished" counts only if the agency says how many bets it has
//! and the server holds exactly those; nothing is stored for an agency
//! after it finished. `Hello` travels through the same queue, so its
//! answer comes after every job queued before it (see
//! [`crate::agencies`]): what it reports is durable and final.
//!
//! When the last expected agency finishes, the writer records the draw
//! with it, logs `sorteo` and publishes the winners it kept as it stored,
//! all before that agency's "finished" is acknowledged.
//!
//! A failed group that leaves the files as they were is answered with
//! `StorageFailure` and may be sent again. A failure that leaves a file in
//! an unknown state, or a failed draw, stops the writer with an error, and
//! the server with it: a restart recovers from what is on disk.

use std::collections::HashMap;
use std::sync::Arc;

use edge::log::Action;
use lottery::round::{Entry, RoundFiles, RoundState};
use lottery::storage::{AppendError, StorageError};
use lottery::{Progress, Share};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::draw::{DrawBarrier, Winners};

/// Most bets and bytes committed with one sync; recovery relies on them
/// (a crash can tear at most one group).
use lottery::round::{MAX_GROUP_BETS, MAX_GROUP_BYTES};
use lottery::storage::row::ROW_BYTES_PER_WIRE_BYTE;

/// Bytes of rows one batch of valid bets can make, at most: twice its
/// frame (see [`ROW_BYTES_PER_WIRE_BYTE`]); `encode` asserts it.
pub const MAX_BATCH_ROW_BYTES: usize = ROW_BYTES_PER_WIRE_BYTE * protocol::MAX_FRAME_LEN;

const _: () = assert!(MAX_BATCH_ROW_BYTES <= MAX_GROUP_BYTES, "a group always takes a batch");
const _: () = assert!(protocol::MAX_FRAME_LEN / 10 <= MAX_GROUP_BETS, "a group always takes a batch");
const _: () = assert!(
    MAX_BATCH_ROW_BYTES <= crate::agencies::QUEUE_BYTES,
    "the writer's queue always has room for a batch"
);

/// A batch's rows, made by the session that received it (validating and
/// encoding run in parallel there; the writer only writes).
#[derive(Debug)]
pub struct EncodedBatch {
    /// Ordinals and digest share of its bets.
    pub share: Share,
    /// Their rows, as they go into `bets.csv`.
    pub rows: Vec<u8>,
    /// Documents of its winning bets, in order.
    pub winners: Vec<String>,
}

/// What a stored batch learns.
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
    /// The disk write failed and nothing of it was kept.
    Failed(Arc<StorageError>),
}

/// What a "finished" learns.
#[derive(Debug, Clone)]
pub enum FinishOutcome {
    /// Recorded durably; the agency counts for the draw.
    Counted,
    /// The agency said it has `claimed` bets; the server holds `stored`.
    OutOfSequence {
        claimed: u64,
        stored: u64,
    },
    AlreadyFinished,
    Failed(Arc<StorageError>),
}

/// What the round holds of an agency, for its `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    pub progress: Progress,
    pub finished: bool,
}

/// Work for the writer.
#[derive(Debug)]
pub enum Job {
    /// A connection now speaks for `agency`: answer with what is stored.
    Hello { agency: u32, done: oneshot::Sender<Welcome> },
    /// Store these (already valid) bets, all or none. The permit holds
    /// their share of the queue's budget until they are written.
    Store {
        agency: u32,
        batch: EncodedBatch,
        done: oneshot::Sender<StoreOutcome>,
        permit: OwnedSemaphorePermit,
    },
    /// The agency has finished, with `bets` bets.
    Finish { agency: u32, bets: u64, done: oneshot::Sender<FinishOutcome> },
}

impl Job {
    fn bets(&self) -> usize {
        match self {
            Job::Store { batch, .. } => batch.share.bets() as usize,
            Job::Hello { .. } | Job::Finish { .. } => 0,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Job::Store { batch, .. } => batch.rows.len(),
            Job::Hello { .. } | Job::Finish { .. } => 0,
        }
    }
}

/// Why the writer stopped before its queue closed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WriterFailed(pub StorageError);

/// Starts the writer on a round opened beforehand. It stops when every
/// sender of `jobs` is gone and the queue is empty, or at a failure it
/// cannot undo.
pub fn spawn(
    files: RoundFiles,
    state: RoundState,
    jobs: mpsc::UnboundedReceiver<Job>,
    barrier: Arc<DrawBarrier>,
) -> JoinHandle<Result<(), WriterFailed>> {
    tokio::task::spawn_blocking(move || {
        let path = files.bets_path().to_path_buf();
        let mut writer = Writer { files, state, barrier };
        let result = writer.run(jobs);
        if let Err(e) = &result {
            error!("{}", Action::fail("store_bets").field("error", e).field("then", "the server stops"));
        }
        let (bet_syncs, journal_syncs) = writer.files.syncs();
        info!(
            "{}",
            Action::success("close_file")
                .field("path", path.display())
                .field("bytes", writer.files.bets_len())
                .field("syncs", bet_syncs)
                .field("journal_syncs", journal_syncs)
        );
        result
    })
}

struct Writer {
    files: RoundFiles,
    state: RoundState,
    barrier: Arc<DrawBarrier>,
}

/// What the writer decided for one job of a group.
enum Verdict {
    Store,
    Finish,
    Answer,
    Refuse(StoreOutcome),
    RefuseFinish(FinishOutcome),
}

impl Writer {
    fn run(&mut self, mut jobs: mpsc::UnboundedReceiver<Job>) -> Result<(), WriterFailed> {
        self.barrier.set_finished(self.state.finished());
        if self.state.drawn {
            self.publish();
        } else {
            self.draw_if_complete()?;
        }
        let mut group = Vec::new();
        // A job that did not fit in the last group starts the next one.
        let mut carried: Option<Job> = None;
        while let Some(job) = carried.take().or_else(|| jobs.blocking_recv()) {
            // A Hello closes its group, so that its answer is the state
            // right after the jobs queued before it.
            let mut open = !matches!(job, Job::Hello { .. });
            let (mut bets, mut bytes) = (job.bets(), job.bytes());
            group.push(job);
            while open {
                let Ok(job) = jobs.try_recv() else { break };
                if bets + job.bets() > MAX_GROUP_BETS || bytes + job.bytes() > MAX_GROUP_BYTES {
                    carried = Some(job);
                    break;
                }
                open = !matches!(job, Job::Hello { .. });
                bets += job.bets();
                bytes += job.bytes();
                group.push(job);
            }
            assert!(bets <= MAX_GROUP_BETS && bytes <= MAX_GROUP_BYTES, "a crash tears at most one group");
            self.commit(&mut group)?;
        }
        Ok(())
    }

    /// Decides, writes and answers one group; empties it.
    fn commit(&mut self, group: &mut Vec<Job>) -> Result<(), WriterFailed> {
        let verdicts = self.decide(group);

        let rows: Vec<&[u8]> = group
            .iter()
            .zip(&verdicts)
            .filter_map(|(job, verdict)| match (job, verdict) {
                (Job::Store { batch, .. }, Verdict::Store) => Some(batch.rows.as_slice()),
                _ => None,
            })
            .collect();
        let stored = match self.files.append_bets(&rows) {
            Ok(()) => Ok(()),
            Err(AppendError::Transient(e)) => Err(Arc::new(e)),
            Err(AppendError::Fatal(e)) => return Err(WriterFailed(e)),
        };
        if stored.is_ok() {
            for (job, verdict) in group.iter_mut().zip(&verdicts) {
                if let (Job::Store { agency, batch, .. }, Verdict::Store) = (job, verdict) {
                    let state = &mut self.state.agencies[*agency as usize - 1];
                    state.progress.extend(&batch.share);
                    state.winners.append(&mut batch.winners);
                }
            }
        }

        let mut finishing: Vec<Entry> = group
            .iter()
            .zip(&verdicts)
            .filter_map(|(job, verdict)| match (job, verdict) {
                (Job::Finish { agency, .. }, Verdict::Finish) => {
                    let progress = self.state.agencies[*agency as usize - 1].progress;
                    Some(Entry::Finished { agency: *agency, progress })
                }
                _ => None,
            })
            .collect();
        // The draw is recorded with the last "finished", in the same
        // append: the last agency's ack already finds the winners.
        let draws =
            !finishing.is_empty() && self.state.finished() + finishing.len() == self.state.agencies.len();
        if draws {
            finishing.push(Entry::Drawn { winners: self.state.winners() });
        }
        let recorded = match &stored {
            Err(e) => Err(e.clone()),
            Ok(()) if finishing.is_empty() && !self.files.checkpoint_due() => Ok(()),
            Ok(()) => match self.files.record(&finishing) {
                Ok(()) => Ok(()),
                Err(AppendError::Transient(e)) => Err(Arc::new(e)),
                Err(AppendError::Fatal(e)) => return Err(WriterFailed(e)),
            },
        };
        if recorded.is_ok() {
            for entry in &finishing {
                if let Entry::Finished { agency, progress } = entry {
                    info!(
                        "{}",
                        Action::success("agency_finished")
                            .field("agency", agency)
                            .field("bets", progress.bets())
                    );
                    self.state.agencies[*agency as usize - 1].finished = true;
                }
            }
            self.barrier.set_finished(self.state.finished());
            if draws {
                self.state.drawn = true;
                info!("{}", Action::success("sorteo"));
                self.publish();
            }
        }
        for error in [&stored, &recorded].into_iter().filter_map(|r| r.as_ref().err()) {
            error!("{}", Action::fail("store_bets").field("error", error));
        }

        for (job, verdict) in group.drain(..).zip(verdicts) {
            // A session that went away no longer needs its answer.
            match (job, verdict) {
                (Job::Store { done, permit, .. }, Verdict::Store) => {
                    drop(permit);
                    let outcome = stored.clone().map_or_else(StoreOutcome::Failed, |()| StoreOutcome::Stored);
                    let _ = done.send(outcome);
                }
                (Job::Store { done, permit, .. }, Verdict::Refuse(outcome)) => {
                    drop(permit);
                    let _ = done.send(outcome);
                }
                (Job::Finish { done, .. }, Verdict::Finish) => {
                    let outcome =
                        recorded.clone().map_or_else(FinishOutcome::Failed, |()| FinishOutcome::Counted);
                    let _ = done.send(outcome);
                }
                (Job::Finish { done, .. }, Verdict::RefuseFinish(outcome)) => {
                    let _ = done.send(outcome);
                }
                (Job::Hello { agency, done }, Verdict::Answer) => {
                    let state = &self.state.agencies[agency as usize - 1];
                    let _ = done.send(Welcome { progress: state.progress, finished: state.finished });
                }
                _ => unreachable!("every job gets a verdict of its own kind"),
            }
        }
        Ok(())
    }

    /// Decides each job of a group against the state, as if the jobs
    /// before it in the group were already stored.
    fn decide(&self, group: &[Job]) -> Vec<Verdict> {
        // Bets and "finished" of the agencies this group changes.
        let mut ahead: HashMap<u32, (u64, bool)> = HashMap::new();
        group
            .iter()
            .map(|job| match job {
                Job::Hello { .. } => Verdict::Answer,
                Job::Store { agency, batch, .. } => {
                    let state = &self.state.agencies[*agency as usize - 1];
                    let (stored, finished) =
                        ahead.entry(*agency).or_insert((state.progress.bets(), state.finished));
                    let (first, bets) = (batch.share.first(), batch.share.bets());
                    if first.saturating_add(bets) <= *stored {
                        Verdict::Refuse(StoreOutcome::AlreadyStored)
                    } else if *finished {
                        Verdict::Refuse(StoreOutcome::AlreadyFinished)
                    } else if first != *stored {
                        Verdict::Refuse(StoreOutcome::OutOfSequence { stored: *stored })
                    } else {
                        *stored += bets;
                        Verdict::Store
                    }
                }
                Job::Finish { agency, bets, .. } => {
                    let state = &self.state.agencies[*agency as usize - 1];
                    let (stored, finished) =
                        ahead.entry(*agency).or_insert((state.progress.bets(), state.finished));
                    if *finished {
                        Verdict::RefuseFinish(FinishOutcome::AlreadyFinished)
                    } else if *bets != *stored {
                        Verdict::RefuseFinish(FinishOutcome::OutOfSequence {
                            claimed: *bets,
                            stored: *stored,
                        })
                    } else {
                        *finished = true;
                        Verdict::Finish
                    }
                }
            })
            .collect()
    }

    /// Runs the draw of a round whose agencies have all finished but whose
    /// draw was not recorded: one of no agencies, or one that crashed right
    /// before. Records it, logs `sorteo`, publishes the winners.
    fn draw_if_complete(&mut self) -> Result<(), WriterFailed> {
        if self.state.drawn || self.state.finished() < self.state.agencies.len() {
            return Ok(());
        }
        let entry = Entry::Drawn { winners: self.state.winners() };
        match self.files.record(&[entry]) {
            Ok(()) => {}
            Err(AppendError::Transient(e) | AppendError::Fatal(e)) => return Err(WriterFailed(e)),
        }
        self.state.drawn = true;
        info!("{}", Action::success("sorteo"));
        self.publish();
        Ok(())
    }

    fn publish(&mut self) {
        assert!(self.state.drawn, "winners are published only after the draw");
        let winners: HashMap<u32, Vec<String>> = self
            .state
            .agencies
            .iter_mut()
            .enumerate()
            .filter(|(_, a)| !a.winners.is_empty())
            .map(|(i, a)| (i as u32 + 1, std::mem::take(&mut a.winners)))
            .collect();
        self.barrier.publish(Winners::new(winners));
    }
}
