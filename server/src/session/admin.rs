//! The operator's commands, over a connection whose certificate is the
//! operator's: `StatusQuery`, `CloseRound`, `OpenRound`. Each is answered
//! with the status after it (see [`crate::status`]), or an error that
//! says why not.

use edge::log::Action;
use lottery::round::{CloseOutcome, CloseReason, Stage};
use protocol::{ErrorCode, Message};
use tracing::Level;

use super::handler::Handler;
use super::reply::{error_message, shutting_down, status_frames, PendingReply, Reply};
use crate::status::Status;
use crate::writer::OpenRefused;

impl Handler {
    pub(super) fn admin(&mut self, message: Message) -> PendingReply {
        self.operator = true;
        let agencies = self.agencies.clone();
        let view = agencies.board.view();
        let round = view.number;
        let budget = self.budget.clone();
        let done = move |command: &'static str, round: u64| {
            let line = Action::success("admin").field("command", command).field("round", round);
            move || budget.log(Level::INFO, line)
        };
        match message {
            Message::StatusQuery => Reply::now_all(status_frames(&Status::of(&agencies).json())),
            Message::CloseRound => {
                if let Stage::Closed(reason) | Stage::Drawn(reason) = view.stage {
                    return not_open(round, reason);
                }
                let closed = match agencies.close_round(round, CloseReason::Operator) {
                    Ok(closed) => closed,
                    Err(refusal) => return self.refuse(refusal),
                };
                Box::pin(async move {
                    let Ok(outcome) = closed.await else { return shutting_down() };
                    match outcome {
                        CloseOutcome::Closed { .. } => {
                            let status = Status::of(&agencies).json();
                            Reply::many(status_frames(&status)).logging(done("close", round))
                        }
                        CloseOutcome::NotOpen(reason) => Reply::open(not_open_message(round, reason)),
                        CloseOutcome::Failed(e) => {
                            Reply::open(error_message(ErrorCode::StorageFailure, 0, None, e))
                        }
                    }
                })
            }
            Message::OpenRound => {
                let opened = match agencies.open_round(round) {
                    Ok(opened) => opened,
                    Err(refusal) => return self.refuse(refusal),
                };
                Box::pin(async move {
                    match opened.await {
                        Ok(Ok(next)) => {
                            let status = Status::of(&agencies).json();
                            Reply::many(status_frames(&status)).logging(done("open", next))
                        }
                        Ok(Err(refused)) => Reply::open(open_refused(&refused)),
                        Err(_) => shutting_down(),
                    }
                })
            }
            other => unreachable!("{} is not the operator's", other.name()),
        }
    }
}

fn not_open(round: u64, reason: CloseReason) -> PendingReply {
    Reply::now(not_open_message(round, reason))
}

fn not_open_message(round: u64, reason: CloseReason) -> Message {
    let reason = format!("round {round} is not open: it closed ({reason}); open the next one first");
    error_message(ErrorCode::RoundNotOpen, 0, None, reason)
}

fn open_refused(refused: &OpenRefused) -> Message {
    error_message(ErrorCode::RoundOpen, 0, None, refused)
}
