//! Each request of a connection, turned into its (possibly pending) reply.
//!
//! A batch is checked and encoded here, in the session that received it
//! (in parallel with every other session), then queued for the writer;
//! its reply waits for the writer's answer. An agency's `Hello` and its
//! winners are in `rounds`, the operator's commands in `admin`. Everything
//! else is answered at once, or refused.

use std::net::SocketAddr;
use std::sync::Arc;

use edge::log::Action;
use lottery::round::{BatchError, EncodedBatch, FinishOutcome, StoreOutcome};
use lottery::storage::row::ROW_BYTES_PER_WIRE_BYTE;
use protocol::{Bets, ErrorCode, Message};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, Level};

use tokio_util::sync::CancellationToken;

use super::budget::LogBudget;
use super::reply::{error_message, log_stored, shutting_down, PendingReply, Reply};
use super::Identity;
use crate::agencies::{Agencies, Connection, Refusal};
use crate::penalty::Failures;

/// Turns each request into its (possibly pending) reply.
pub(super) struct Handler {
    pub(super) peer: SocketAddr,
    pub(super) agencies: Arc<Agencies>,
    /// Where a request that needs an agency, from none, counts as a failed
    /// authentication.
    pub(super) failures: Arc<Failures>,
    pub(super) connection: Connection,
    pub(super) identity: Identity,
    /// The agency this connection speaks for, and the round, from its
    /// `Hello` on.
    pub(super) agency: Option<u32>,
    pub(super) round: Option<u64>,
    /// The round of its `Hello` was kept already: nothing is stored.
    pub(super) kept: bool,
    /// The operator has made a request: it is authenticated.
    pub(super) operator: bool,
    /// A `Hello` of its certified agency waited for its round to open: it
    /// is authenticated, and may say `Hello` again.
    pub(super) waited: bool,
    /// A reply that closes the connection was given: read nothing more.
    pub(super) closing: bool,
    /// The peer failed to authenticate: its refusal waits out a penalty.
    pub(super) failed: bool,
    pub(super) budget: LogBudget,
    /// Cancelled at shutdown: a reply that waits (for a round to open, for
    /// the draw) is given at once.
    pub(super) stop: CancellationToken,
}

impl Handler {
    /// Whether the connection has authenticated (its `Hello`, or the
    /// operator's first request): it leaves the gate.
    pub(super) fn authenticated(&self) -> bool {
        self.agency.is_some() || self.operator || self.waited
    }

    /// Only a batch makes this wait: for room in the writer's queue (see
    /// [`Agencies::reserve`]); this session alone waits.
    pub(super) async fn handle(&mut self, message: Message) -> PendingReply {
        if message.is_reply() {
            let reason = format!("{} is a reply, not a request", message.name());
            return self.close_with(error_message(ErrorCode::UnexpectedMessage, 0, None, reason));
        }
        if let Message::Echo(payload) = message {
            let line = Action::success("receive_message").field("ip", self.peer.ip()).quote("msg", &payload);
            self.budget.log(Level::INFO, line);
            return Reply::now(Message::Echo(payload));
        }
        let certified = match (self.identity, message.is_operators()) {
            (Identity::Anonymous, _) => return self.unauthenticated(&message),
            (Identity::Operator, true) => return self.admin(message),
            (Identity::Agency(certified), false) => certified,
            (Identity::Operator, false) => {
                return self.forbidden(format!("{}: the operator's certificate does not bet", message.name()))
            }
            (Identity::Agency(certified), true) => {
                let reason = format!(
                    "{}: agency {certified}'s certificate cannot run the operator's commands",
                    message.name()
                );
                return self.forbidden(reason);
            }
        };
        if let Message::Hello { agency, round, wait_ms } = message {
            return self.hello(agency, round, wait_ms, certified);
        }
        let (Some(agency), Some(round)) = (self.agency, self.round) else {
            let reason = format!(
                "{} before Hello: a connection first says which agency it speaks for",
                message.name()
            );
            return self.close_with(error_message(ErrorCode::UnexpectedMessage, 0, None, reason));
        };
        match message {
            Message::BetBatch { first, bets } => self.batch(agency, round, first, bets).await,
            Message::Finished { bets } => self.finish(agency, round, bets),
            Message::WinnersQuery { wait_ms } => self.winners(agency, round, wait_ms),
            _ => unreachable!("replies, Echo, Hello and the operator's are handled above"),
        }
    }

    /// A request that needs a certificate, from a connection without one.
    fn unauthenticated(&mut self, message: &Message) -> PendingReply {
        let reason = format!("{} needs an agency's certificate, over TLS", message.name());
        let penalty = crate::connection::failed(self.peer, &reason, &self.failures, &self.budget.all);
        self.failed = true;
        self.closing = true;
        // The refusal comes after the penalty (see crate::penalty).
        let refusal = error_message(ErrorCode::Unauthenticated, 0, None, reason);
        Box::pin(async move {
            tokio::time::sleep(penalty).await;
            Reply::last(refusal)
        })
    }

    /// A request this certificate may not make: refused, logged, closed.
    pub(super) fn forbidden(&mut self, reason: String) -> PendingReply {
        let line = Action::fail("request").field("ip", self.peer.ip()).field("error", &reason);
        self.budget.log(Level::WARN, line);
        self.close_with(error_message(ErrorCode::Forbidden, 0, None, reason))
    }

    /// A reply after which the connection closes.
    pub(super) fn close_with(&mut self, message: Message) -> PendingReply {
        self.closing = true;
        Reply::closing(message)
    }

    pub(super) fn refuse(&mut self, refusal: Refusal) -> PendingReply {
        let line = Action::fail("request").field("ip", self.peer.ip()).field("error", &refusal);
        self.budget.log(Level::WARN, line);
        self.close_with(error_message(refusal.code(), 0, None, &refusal))
    }

    /// Checks and encodes a batch, then queues it for the writer.
    async fn batch(&mut self, agency: u32, round: u64, first: u64, bets: Bets) -> PendingReply {
        if self.kept {
            self.agencies.metrics.batch(crate::metrics::BatchResult::RoundClosed);
            return round_closed(self.budget.clone(), agency, round, first);
        }
        // Room in the writer's queue for the most rows these bets can
        // make, before they are made: while it waits, a session holds one
        // frame, no more.
        let max = max_row_bytes(&bets);
        let permit = self.agencies.reserve(max).await;
        match EncodedBatch::encode(agency, first, bets.iter(), max) {
            Ok(batch) => self.store(agency, round, batch, bets, permit),
            Err(error) => self.invalid(agency, first, bets.len(), error),
        }
    }

    /// The reply to a batch that cannot be stored at all.
    fn invalid(&self, agency: u32, first: u64, count: usize, error: BatchError) -> PendingReply {
        let index = match &error {
            // `index` fits in u16: a frame of 8 KiB holds far fewer bets.
            BatchError::Invalid { index, .. } => Some(*index as u16),
            BatchError::Empty => None,
            BatchError::PastLastOrdinal { .. } => {
                return Reply::now(error_message(ErrorCode::OutOfSequence, first, None, error));
            }
        };
        let line = Action::fail("apuesta_recibida")
            .field("cantidad", count)
            .field("agency", agency)
            .field("error", &error);
        self.budget.log(Level::ERROR, line);
        self.agencies.metrics.batch(crate::metrics::BatchResult::Invalid);
        Reply::now(error_message(ErrorCode::InvalidBet, first, index, error))
    }

    fn store(
        &mut self,
        agency: u32,
        round: u64,
        batch: EncodedBatch,
        bets: Bets,
        permit: OwnedSemaphorePermit,
    ) -> PendingReply {
        let first = batch.first();
        let stored = match self.agencies.store(agency, round, &self.connection, batch, permit) {
            Ok(stored) => stored,
            Err(refusal) => return self.refuse(refusal),
        };
        let budget = self.budget.clone();
        Box::pin(async move {
            let Ok(outcome) = stored.await else { return shutting_down() };
            stored_reply(outcome, agency, round, first, bets, budget)
        })
    }

    fn finish(&mut self, agency: u32, round: u64, bets: u64) -> PendingReply {
        if self.kept {
            return round_closed(self.budget.clone(), agency, round, 0);
        }
        let counted = match self.agencies.finish(agency, round, &self.connection, bets) {
            Ok(counted) => counted,
            Err(refusal) => return self.refuse(refusal),
        };
        let budget = self.budget.clone();
        Box::pin(async move {
            let Ok(outcome) = counted.await else { return shutting_down() };
            match outcome {
                FinishOutcome::Counted => Reply::open(Message::FinishedAck),
                FinishOutcome::OutOfSequence { claimed, stored } => {
                    let reason =
                        format!("agency {agency} says it has {claimed} bets; the server holds {stored}");
                    Reply::refused(budget, agency, 0, ErrorCode::OutOfSequence, reason, false)
                }
                FinishOutcome::AlreadyFinished => {
                    let reason = format!("agency {agency} has already finished");
                    Reply::refused(budget, agency, 0, ErrorCode::AlreadyFinished, reason, true)
                }
                FinishOutcome::RoundClosed => round_closed_reply(budget, agency, round, 0),
                FinishOutcome::Failed(e) => {
                    let line = Action::fail("finish").field("agency", agency).field("error", &e);
                    Reply::open(error_message(ErrorCode::StorageFailure, 0, None, e))
                        .logging(move || budget.log(Level::ERROR, line))
                }
            }
        })
    }
}

/// A batch or "finished" that came after its round closed: refused, and
/// the agency asks for its winners.
fn round_closed(budget: LogBudget, agency: u32, round: u64, first: u64) -> PendingReply {
    Box::pin(std::future::ready(round_closed_reply(budget, agency, round, first)))
}

fn round_closed_reply(budget: LogBudget, agency: u32, round: u64, first: u64) -> Reply {
    let reason = format!("round {round} is closed: nothing more is stored; ask for your winners");
    Reply::refused(budget, agency, first, ErrorCode::RoundClosed, reason, false)
}

/// The reply to a batch the writer decided on.
fn stored_reply(
    outcome: StoreOutcome,
    agency: u32,
    round: u64,
    first: u64,
    bets: Bets,
    budget: LogBudget,
) -> Reply {
    let count = bets.len();
    // A reply keeps the bets only to log them one by one; else a peer
    // that does not read its replies would keep every frame.
    let to_log = (count == 1 || tracing::enabled!(Level::DEBUG)).then_some(bets);
    let ack = Message::BatchAck { first, count: count as u16 };
    match outcome {
        StoreOutcome::Stored => Reply::open(ack).logging(move || {
            info!("{}", Action::success("apuesta_recibida").field("cantidad", count));
            if let Some(bets) = &to_log {
                log_stored(bets);
            }
        }),
        StoreOutcome::AlreadyStored => Reply::open(ack).logging(move || {
            debug!("agency {agency}: bets {first}.. of a batch of {count} were stored before")
        }),
        StoreOutcome::OutOfSequence { stored } => {
            let reason =
                format!("agency {agency} has {stored} bets stored; this batch starts at bet {first}");
            Reply::refused(budget, agency, first, ErrorCode::OutOfSequence, reason, false)
        }
        StoreOutcome::AlreadyFinished => {
            let reason = format!("agency {agency} has already finished");
            Reply::refused(budget, agency, first, ErrorCode::AlreadyFinished, reason, true)
        }
        StoreOutcome::RoundClosed => round_closed_reply(budget, agency, round, first),
        StoreOutcome::Failed(e) => {
            let line = Action::fail("apuesta_recibida").field("cantidad", count).field("error", &e);
            Reply::open(error_message(ErrorCode::StorageFailure, first, None, e))
                .logging(move || budget.log(Level::ERROR, line))
        }
    }
}

/// The most bytes of rows `bets` can make if they are valid: what the
/// writer's queue reserves for them, and all the memory their rows take.
fn max_row_bytes(bets: &Bets) -> usize {
    let max = ROW_BYTES_PER_WIRE_BYTE * bets.wire_len();
    assert!(max <= crate::writer::MAX_BATCH_ROW_BYTES, "a frame's bets make at most a batch's rows");
    max
}
