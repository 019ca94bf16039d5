//! An agency's round: its `Hello` (about the open round, a kept one, or
//! one not open yet, which is held until it opens for as long as the
//! agency asks) and its winners (held until the draw, the same way).
//!
//! Waiting costs nothing while it waits: a session waits on the board's
//! view (see [`crate::board`]), which changes only when a round's stage
//! does, not on a timer.

use std::sync::Arc;
use std::time::Duration;

use edge::log::Action;
use lottery::round::{RoundState, Stage, Welcome};
use protocol::{ErrorCode, Message, HELLO_WAIT, MAX_WINNERS_WAIT};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, Level};

use super::handler::Handler;
use super::reply::{error_message, shutting_down, welcome, winners_frames, PendingReply, Reply};
use crate::agencies::Refusal;
use crate::board::{Board, View};

impl Handler {
    pub(super) fn hello(&mut self, agency: u32, round: u64, wait_ms: u32, certified: u32) -> PendingReply {
        if let Some(bound) = self.agency {
            let reason = format!("this connection already speaks for agency {bound}");
            return self.close_with(error_message(ErrorCode::UnexpectedMessage, 0, None, reason));
        }
        if agency != certified {
            return self
                .forbidden(format!("this certificate is agency {certified}'s, not agency {agency}'s"));
        }
        if let Err(refusal) = self.agencies.check(agency) {
            return self.refuse(refusal);
        }
        if round == 0 {
            let reason = "rounds are numbered from 1";
            return self.close_with(error_message(ErrorCode::UnknownRound, 0, None, reason));
        }
        let view = self.agencies.board.view();
        if round > view.number {
            // Not open yet: the connection stays, and says Hello again.
            self.waited = true;
            let wait = Duration::from_millis(wait_ms.into()).min(HELLO_WAIT);
            return Box::pin(not_open_yet(self.agencies.board.clone(), round, wait, self.stop.clone()));
        }
        self.agency = Some(agency);
        self.round = Some(round);
        if round == view.number {
            return match self.agencies.hello(agency, round, &self.connection) {
                Ok(answer) => Box::pin(welcomed(answer, agency, round, self.budget.clone())),
                Err(refusal) => self.refuse(refusal),
            };
        }
        self.kept = true;
        let board = self.agencies.board.clone();
        Box::pin(async move { kept_welcome(&board, agency, round).await })
    }

    /// The agency's winners of `round`: at once once drawn; before, held
    /// for the draw at most `wait_ms` (and [`MAX_WINNERS_WAIT`]), then
    /// "not ready", the draw come or not.
    pub(super) fn winners(&self, agency: u32, round: u64, wait_ms: u32) -> PendingReply {
        let wait = Duration::from_millis(wait_ms.into()).min(MAX_WINNERS_WAIT);
        let (board, stop) = (self.agencies.board.clone(), self.stop.clone());
        Box::pin(async move {
            let mut watch = board.watch();
            // A query held for the draw is answered "not ready" when the
            // draw comes: the agency asks again after its `loop.period`, as
            // the course's agencies do, and its winners come at its own pace
            // after the `sorteo` line, not in the same millisecond.
            let held = !wait.is_zero() && !watch.borrow().drawn(round);
            if held {
                tokio::select! {
                    _ = tokio::time::timeout(wait, watch.wait_for(|v| v.drawn(round))) => {}
                    () = stop.cancelled() => {}
                }
            }
            let view = board.view();
            if held || !view.drawn(round) {
                let (finished, expected) = (board.finished(), board.expected());
                debug!("agency {agency} asked for its winners of round {round} before the draw ({finished}/{expected})");
                return Reply::open(Message::NotReady { finished, expected });
            }
            match drawn_winners(&board, &view, agency, round).await {
                Ok(documents) => Reply::many(winners_frames(&documents)),
                Err(refusal) => refusal,
            }
        })
    }
}

/// The answer to a `Hello` about a round after the open one: once it
/// opens, or after `wait` (or at shutdown), `RoundNotOpen`, and the agency
/// says `Hello` again.
async fn not_open_yet(board: Arc<Board>, round: u64, wait: Duration, stop: CancellationToken) -> Reply {
    let mut watch = board.watch();
    tokio::select! {
        _ = tokio::time::timeout(wait, watch.wait_for(|v| v.number >= round)) => {}
        () = stop.cancelled() => return shutting_down(),
    }
    let now = board.view().number;
    let reason = if now >= round {
        format!("round {round} has opened: say Hello again")
    } else {
        format!("round {round} is not open yet (round {now} is): say Hello again")
    };
    Reply::open(error_message(ErrorCode::RoundNotOpen, 0, None, reason))
}

/// The `Welcome` the writer answers a `Hello` with, logged.
async fn welcomed(
    answer: oneshot::Receiver<Welcome>,
    agency: u32,
    round: u64,
    budget: super::budget::LogBudget,
) -> Reply {
    let Ok(held) = answer.await else { return shutting_down() };
    let line = Action::success("agency_connected")
        .field("round", round)
        .field("agency", agency)
        .field("stored", held.progress.bets())
        .field("finished", if held.finished { "yes" } else { "no" })
        .field("state", held.stage.as_str());
    let level = if held.progress.bets() > 0 || held.finished { Level::INFO } else { Level::DEBUG };
    Reply::open(welcome(held)).logging(move || budget.log(level, line))
}

/// The `Welcome` of an agency in kept round `round`, read from disk.
async fn kept_welcome(board: &Arc<Board>, agency: u32, round: u64) -> Reply {
    match kept(board, round).await {
        Ok(state) => {
            let held = state.agency(agency);
            let stage = state.stage();
            Reply::open(welcome(Welcome { progress: held.progress, finished: held.finished, stage }))
        }
        Err(refusal) => refusal,
    }
}

/// The DNIs of `agency`'s winners of drawn round `round`.
async fn drawn_winners(
    board: &Arc<Board>,
    view: &View,
    agency: u32,
    round: u64,
) -> Result<Vec<String>, Reply> {
    if round == view.number {
        let winners = view.winners.as_ref().expect("a drawn round's winners are published with it");
        return Ok(winners.of(agency).to_vec());
    }
    Ok(kept(board, round).await?.agency(agency).winners.clone())
}

/// Kept round `round`, read from disk (off the runtime's threads), or the
/// reply that says why it cannot be.
async fn kept(board: &Arc<Board>, round: u64) -> Result<Arc<RoundState>, Reply> {
    let reading = board.clone();
    let read = tokio::task::spawn_blocking(move || reading.kept(round)).await;
    match read {
        Ok(Ok(Some(state))) => {
            assert!(matches!(state.stage(), Stage::Drawn(_)), "a kept round is drawn");
            Ok(state)
        }
        Ok(Ok(None)) => {
            let reason = format!("round {round} is neither open nor kept by this server");
            Err(Reply::last(error_message(ErrorCode::UnknownRound, 0, None, reason)))
        }
        Ok(Err(e)) => {
            error!("{}", Action::fail("read_round").field("round", round).field("error", &e));
            Err(Reply::last(error_message(ErrorCode::StorageFailure, 0, None, e)))
        }
        Err(_) => Err(Reply::last(error_message(ErrorCode::ShuttingDown, 0, None, Refusal::ShuttingDown))),
    }
}
