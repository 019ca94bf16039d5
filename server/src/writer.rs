//! The one owner of the bets file: a blocking task that appends the bets
//! queued by every session, in queue order, with group commit.
//!
//! It takes every job waiting in the queue at once (up to a bound), writes
//! all their bets with one `write` and makes them durable with one
//! `fdatasync`, then answers each job. Under load many batches share one
//! sync; alone, a batch gets its own. A batch is acknowledged only after
//! its sync; if the write fails, [`BetFile::append`] cuts the file back, so
//! no part of any batch of the group stays behind.
//!
//! "Finished" travels through the same queue, so the writer counts an
//! agency as finished only once every batch queued before it is on disk.
//! When the last expected agency finishes, the writer runs the draw (the
//! file is complete and nobody else touches it) and publishes the result.

use std::sync::Arc;

use lottery::log::Action;
use lottery::storage::{BetFile, StorageError};
use lottery::Bet;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tracing::{debug, enabled, error, info, Level};

use crate::draw::{self, DrawBarrier};

/// Largest number of bets committed with one sync; bounds the buffer.
const MAX_GROUP_BETS: usize = 8192;

/// What a stored batch learns: durable, or why not.
pub type StoreResult = Result<(), Arc<StorageError>>;

/// Work for the writer.
#[derive(Debug)]
pub enum Job {
    /// Store these (already valid) bets, all or none. The permit holds
    /// their share of the queue's budget until they are written.
    Store { bets: Vec<Bet>, done: oneshot::Sender<StoreResult>, permit: OwnedSemaphorePermit },
    /// The agency has finished; count it once what came before is stored.
    Finish { agency: u32, done: oneshot::Sender<()> },
}

/// Starts the writer. It stops when every sender of `jobs` is gone and the
/// queue is empty, after logging that the file is closed.
pub fn spawn(file: BetFile, jobs: mpsc::UnboundedReceiver<Job>, barrier: Arc<DrawBarrier>) -> JoinHandle<()> {
    tokio::task::spawn_blocking(move || run(file, jobs, &barrier))
}

fn run(mut file: BetFile, mut jobs: mpsc::UnboundedReceiver<Job>, barrier: &DrawBarrier) {
    if barrier.complete() {
        // No agency is expected: the draw is over before it starts.
        draw(&file, barrier);
    }
    let mut group = Vec::new();
    while let Some(job) = jobs.blocking_recv() {
        let mut bets = job_bets(&job);
        group.push(job);
        while bets < MAX_GROUP_BETS {
            match jobs.try_recv() {
                Ok(job) => {
                    bets += job_bets(&job);
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        commit(&mut file, group.drain(..), barrier);
    }
    info!("{}", Action::success("close_file").field("path", file.path().display()));
}

fn job_bets(job: &Job) -> usize {
    match job {
        Job::Store { bets, .. } => bets.len(),
        Job::Finish { .. } => 0,
    }
}

fn commit(file: &mut BetFile, group: impl Iterator<Item = Job>, barrier: &DrawBarrier) {
    let (stores, finishes): (Vec<Job>, Vec<Job>) = group.partition(|job| matches!(job, Job::Store { .. }));
    let all_bets = stores.iter().flat_map(|job| match job {
        Job::Store { bets, .. } => bets.as_slice(),
        Job::Finish { .. } => &[],
    });
    let result = file.append(all_bets).map_err(Arc::new);
    if let Err(e) = &result {
        error!("{}", Action::fail("store_bets").field("error", e));
    }
    for job in stores {
        if let Job::Store { bets, done, permit } = job {
            drop(permit);
            if result.is_ok() {
                log_stored(&bets);
            }
            // A session that went away no longer needs the answer.
            let _ = done.send(result.clone());
        }
    }
    for job in finishes {
        if let Job::Finish { agency, done } = job {
            debug!("agency {agency} finished");
            if barrier.agency_finished() {
                draw(file, barrier);
            }
            let _ = done.send(());
        }
    }
}

/// Logs `apuesta_almacenada` per bet: at INFO for a batch of one bet (the
/// single bet an agency sends from its environment), at DEBUG for the bets
/// of a file, which get one INFO `apuesta_recibida` per batch instead.
fn log_stored(bets: &[Bet]) {
    let line = |bet: &Bet| {
        Action::success("apuesta_almacenada").field("dni", &bet.document).field("numero", bet.number)
    };
    match bets {
        [bet] => info!("{}", line(bet)),
        _ if enabled!(Level::DEBUG) => bets.iter().for_each(|bet| debug!("{}", line(bet))),
        _ => {}
    }
}

fn draw(file: &BetFile, barrier: &DrawBarrier) {
    match draw::run_draw(file.path()) {
        Ok(winners) => {
            info!("{}", Action::success("sorteo"));
            barrier.publish(winners);
        }
        Err(e) => error!("{}", Action::fail("sorteo").field("error", e)),
    }
}
