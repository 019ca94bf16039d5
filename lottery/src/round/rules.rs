//! The round's rules: what is stored, what counts, when the round closes
//! and when the draw runs.
//!
//! [`Round`] decides every request against the round's state and makes
//! what it accepts durable through its [`Ledger`] before it answers. It
//! takes requests in groups (group commit): every request is decided as if
//! those before it in the group were already stored; the rows of every
//! accepted batch go to the ledger in one append, then the facts of every
//! accepted "finished" (and the close and the draw, when the group closes
//! the round) in one more; only then are the answers given.
//!
//! The rules:
//! - nothing is stored once the round closed: a batch or a "finished"
//!   that comes after the close is refused as such (a batch all of whose
//!   bets were stored before is still acknowledged);
//! - a batch is stored only if it starts exactly where its agency's stored
//!   bets end; a batch stored before is acknowledged again and stores
//!   nothing; any other is out of sequence;
//! - "finished" counts only if the agency says how many bets it has and
//!   the round holds exactly those; nothing is stored for an agency after
//!   it finished;
//! - the round closes when its last agency finishes, or on a `Close`
//!   (its time is up, or the operator says so): the close and the draw
//!   are recorded together, with the fact of that last "finished" if
//!   there is one, so the answer to that agency already finds the winners;
//! - a `Hello` or a `Close` ends its group (nothing comes after it in the
//!   group): a `Hello` is answered with the state right after the requests
//!   before it, durable and final; a `Close` draws over exactly the
//!   requests queued before it;
//! - an append that fails and leaves the ledger as it was refuses what
//!   it carried, which may be sent again; one that leaves the ledger in an
//!   unknown state stops the round ([`Fatal`]).

use std::collections::HashMap;
use std::sync::Arc;

use crate::storage::{AppendError, StorageError};

pub use requests::{Answer, CloseOutcome, Committed, FinishOutcome, Request, StoreOutcome, Welcome};

use super::batch::EncodedBatch;
use super::journal::{CloseReason, Entry};
use super::state::{RoundName, RoundState, Stage};
use super::{RoundError, RoundId, MAX_GROUP_BETS, MAX_GROUP_BYTES};

/// Where a round's bets and facts are made durable: the round's files
/// today ([`super::RoundFiles`]), a replicated log tomorrow, a model in
/// tests. Each call is all or nothing.
pub trait Ledger {
    /// Appends rows of bets: all durable when it returns `Ok`; on
    /// [`AppendError::Transient`] none of them is kept.
    fn append_bets(&mut self, rows: &[&[u8]]) -> Result<(), AppendError>;

    /// Appends facts of the round, with the same guarantees. Called after
    /// every group, with no entries when the group has none: the ledger
    /// may use it to record its own bookkeeping (a checkpoint).
    fn record(&mut self, entries: &[Entry]) -> Result<(), AppendError>;

    /// Puts the round `drawn` away, kept, and opens round `next` for
    /// `agencies` agencies in its place. [`RoundError::KeptBefore`] changes
    /// nothing; after any other error the ledger is in an unknown state:
    /// nothing more may be written before a recovery.
    fn open_next(&mut self, drawn: &RoundState, next: RoundName, agencies: u32) -> Result<(), RoundError>;
}

/// The ledger failed and could not be brought back to a known state:
/// nothing more may be written before a recovery has read it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub StorageError);

/// A round and its ledger; see the module documentation.
#[derive(Debug)]
pub struct Round<L> {
    ledger: L,
    state: RoundState,
}

/// What the round decided for one request of a group.
#[derive(Debug, Clone)]
enum Verdict {
    Store,
    Finish,
    Answer,
    Close,
    Refuse(StoreOutcome),
    RefuseFinish(FinishOutcome),
    RefuseClose(CloseOutcome),
}

impl<L: Ledger> Round<L> {
    pub fn new(ledger: L, state: RoundState) -> Round<L> {
        Round { ledger, state }
    }

    pub fn state(&self) -> &RoundState {
        &self.state
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// The ledger, and the state it reached.
    pub fn into_parts(self) -> (L, RoundState) {
        (self.ledger, self.state)
    }

    /// Closes and draws a round that is due but was not closed or drawn
    /// (a round of no agencies, or one whose last append was cut short:
    /// every agency finished but the close is missing, or the close is
    /// there but the draw is not). Says what it did, like a group.
    pub fn draw_if_due(&mut self) -> Result<Committed, Fatal> {
        let mut committed = Committed::default();
        let close = match self.state.stage() {
            Stage::Drawn(_) => return Ok(committed),
            Stage::Open if !self.state.all_finished() => return Ok(committed),
            Stage::Open => Some(CloseReason::AllFinished),
            Stage::Closed(_) => None,
        };
        let mut entries: Vec<Entry> =
            close.iter().map(|&reason| Entry::Closed { reason, bets: self.state.bets() }).collect();
        entries.push(Entry::Drawn { winners: self.state.winners() });
        self.ledger
            .record(&entries)
            .map_err(|(AppendError::Transient(e) | AppendError::Fatal(e))| Fatal(e))?;
        if let Some(reason) = close {
            self.state.close(reason);
            committed.closed = Some((reason, self.state.bets()));
        }
        self.state.draw();
        committed.drawn = true;
        Ok(committed)
    }

    /// Opens the round after this drawn one, at `now` (milliseconds since
    /// the Unix epoch), for `agencies` agencies; returns the drawn round.
    pub fn open_next(&mut self, agencies: u32, now: u64) -> Result<RoundState, RoundError> {
        assert!(self.state.drawn(), "the next round opens once this one is drawn");
        let next = RoundName { number: self.state.number() + 1, id: RoundId(rand::random()), opened: now };
        self.ledger.open_next(&self.state, next, agencies)?;
        let drawn = std::mem::replace(&mut self.state, RoundState::new(next, agencies));
        assert!(drawn.drawn(), "the round moved to its folder is drawn");
        assert!(self.state.is_open(), "the next round is open");
        Ok(drawn)
    }

    /// Every agency's winners, once drawn (see [`RoundState::take_winners`]).
    pub fn take_winners(&mut self) -> Vec<(u32, Vec<String>)> {
        self.state.take_winners()
    }

    /// Decides, stores and answers one group of requests (see the module
    /// documentation). The requests' batches give up their winners.
    pub fn commit(&mut self, group: &mut [Request]) -> Result<Committed, Fatal> {
        let bets: usize = group.iter().map(Request::bets).sum();
        let bytes: usize = group.iter().map(Request::bytes).sum();
        assert!(bets <= MAX_GROUP_BETS, "a group stores at most MAX_GROUP_BETS bets");
        assert!(bytes <= MAX_GROUP_BYTES, "a group stores at most MAX_GROUP_BYTES bytes");
        let closing = group.iter().position(Request::closes_group).unwrap_or(group.len());
        assert!(closing + 1 >= group.len(), "a Hello or a Close is the last request of its group");
        let (bets_before, finished_before) = (self.state.bets(), self.state.finished());

        let verdicts = self.decide(group);
        let mut committed = Committed::default();
        let stored = self.store(group, &verdicts, &mut committed)?;
        let recorded = self.record(group, &verdicts, stored.as_ref().err(), &mut committed)?;
        committed.answers = verdicts
            .into_iter()
            .zip(group.iter())
            .map(|(verdict, request)| self.answer(verdict, request, &stored, &recorded))
            .collect();

        assert_eq!(committed.answers.len(), group.len(), "every request gets an answer");
        assert!(self.state.bets() >= bets_before, "bets only grow");
        assert!(self.state.finished() >= finished_before, "finished agencies only grow");
        Ok(committed)
    }

    /// Decides each request of a group against the state, as if the
    /// requests before it in the group were already stored.
    fn decide(&self, group: &[Request]) -> Vec<Verdict> {
        // Bets and "finished" of the agencies this group changes.
        let mut ahead: HashMap<u32, (u64, bool)> = HashMap::new();
        let mut verdicts = Vec::with_capacity(group.len());
        let open = self.state.is_open();
        for request in group {
            let Some(agency) = request.agency() else {
                verdicts.push(match self.state.closed() {
                    None => Verdict::Close,
                    Some(reason) => Verdict::RefuseClose(CloseOutcome::NotOpen(reason)),
                });
                continue;
            };
            let state = self.state.agency(agency);
            let (stored, finished) = *ahead.entry(agency).or_insert((state.progress.bets(), state.finished));
            let verdict = match request {
                Request::Hello { .. } => Verdict::Answer,
                Request::Store { batch, .. } => judge_batch(batch, stored, finished, open),
                Request::Finish { bets, .. } => judge_finish(*bets, stored, finished, open),
                Request::Close { .. } => unreachable!("a close is about no agency"),
            };
            match verdict {
                Verdict::Store => ahead.insert(agency, (stored + request.bets() as u64, finished)),
                Verdict::Finish => ahead.insert(agency, (stored, true)),
                _ => None,
            };
            verdicts.push(verdict);
        }
        verdicts
    }

    /// Appends the rows of every accepted batch; counts them once durable.
    fn store(
        &mut self,
        group: &mut [Request],
        verdicts: &[Verdict],
        committed: &mut Committed,
    ) -> Result<Result<(), Arc<StorageError>>, Fatal> {
        let rows: Vec<&[u8]> = accepted(group, verdicts, Verdict::is_store)
            .filter_map(|request| match request {
                Request::Store { batch, .. } => Some(batch.rows()),
                _ => None,
            })
            .collect();
        if let Err(e) = committed.outcome(self.ledger.append_bets(&rows))? {
            return Ok(Err(e));
        }
        for (request, verdict) in group.iter_mut().zip(verdicts) {
            if let (Request::Store { agency, batch }, Verdict::Store) = (request, verdict) {
                let mut winners = batch.take_winners();
                self.state.store(*agency, batch.share(), &mut winners);
            }
        }
        Ok(Ok(()))
    }

    /// Appends the facts of every accepted "finished", and the close and
    /// the draw when the last agency finished or a `Close` was accepted;
    /// records them in the state once durable. Nothing is recorded when
    /// the group's rows failed.
    fn record(
        &mut self,
        group: &[Request],
        verdicts: &[Verdict],
        rows_failed: Option<&Arc<StorageError>>,
        committed: &mut Committed,
    ) -> Result<Result<(), Arc<StorageError>>, Fatal> {
        if let Some(e) = rows_failed {
            return Ok(Err(e.clone()));
        }
        let mut entries: Vec<Entry> = accepted(group, verdicts, Verdict::is_finish)
            .map(|request| {
                let agency = request.agency().expect("a finish is an agency's");
                Entry::Finished { agency, progress: self.state.agency(agency).progress }
            })
            .collect();
        let finishing = entries.len();
        let all_finish = finishing > 0 && self.state.finished() + finishing == self.state.agencies().len();
        let asked = verdicts.iter().any(|v| matches!(v, Verdict::Close));
        let close = match group.last() {
            _ if all_finish => Some(CloseReason::AllFinished),
            Some(Request::Close { reason }) if asked => Some(*reason),
            _ => None,
        };
        if let Some(reason) = close {
            entries.push(Entry::Closed { reason, bets: self.state.bets() });
            entries.push(Entry::Drawn { winners: self.state.winners() });
        }
        if let Err(e) = committed.outcome(self.ledger.record(&entries))? {
            return Ok(Err(e));
        }
        for entry in &entries[..finishing] {
            let Entry::Finished { agency, progress } = *entry else {
                unreachable!("finishing entries come first")
            };
            self.state.finish(agency);
            committed.finished.push((agency, progress.bets()));
        }
        if let Some(reason) = close {
            self.state.close(reason);
            self.state.draw();
            committed.closed = Some((reason, self.state.bets()));
            committed.drawn = true;
        }
        Ok(Ok(()))
    }

    fn answer(
        &self,
        verdict: Verdict,
        request: &Request,
        stored: &Result<(), Arc<StorageError>>,
        recorded: &Result<(), Arc<StorageError>>,
    ) -> Answer {
        match (verdict, request) {
            (Verdict::Answer, Request::Hello { agency }) => {
                let state = self.state.agency(*agency);
                let stage = self.state.stage();
                Answer::Welcome(Welcome { progress: state.progress, finished: state.finished, stage })
            }
            (Verdict::Store, Request::Store { .. }) => Answer::Store(match stored {
                Ok(()) => StoreOutcome::Stored,
                Err(e) => StoreOutcome::Failed(e.clone()),
            }),
            (Verdict::Refuse(outcome), Request::Store { .. }) => Answer::Store(outcome),
            (Verdict::Finish, Request::Finish { .. }) => Answer::Finish(match recorded {
                Ok(()) => FinishOutcome::Counted,
                Err(e) => FinishOutcome::Failed(e.clone()),
            }),
            (Verdict::RefuseFinish(outcome), Request::Finish { .. }) => Answer::Finish(outcome),
            (Verdict::Close, Request::Close { .. }) => Answer::Close(match (recorded, self.state.closed()) {
                (Ok(()), Some(reason)) => CloseOutcome::Closed { reason, bets: self.state.bets() },
                (Ok(()), None) => unreachable!("an accepted close that was recorded closed the round"),
                (Err(e), _) => CloseOutcome::Failed(e.clone()),
            }),
            (Verdict::RefuseClose(outcome), Request::Close { .. }) => Answer::Close(outcome),
            (verdict, request) => unreachable!("{verdict:?} is not a verdict on {request:?}"),
        }
    }
}

impl Verdict {
    fn is_store(&self) -> bool {
        matches!(self, Verdict::Store)
    }

    fn is_finish(&self) -> bool {
        matches!(self, Verdict::Finish)
    }
}

/// The requests of `group` whose verdict passes `keep`.
fn accepted<'g>(
    group: &'g [Request],
    verdicts: &'g [Verdict],
    keep: fn(&Verdict) -> bool,
) -> impl Iterator<Item = &'g Request> {
    assert_eq!(group.len(), verdicts.len(), "a verdict per request");
    group.iter().zip(verdicts).filter(move |(_, v)| keep(v)).map(|(request, _)| request)
}

/// A batch against an agency that holds `stored` bets, in a round `open`
/// or closed.
fn judge_batch(batch: &EncodedBatch, stored: u64, finished: bool, open: bool) -> Verdict {
    let (first, bets) = (batch.first(), batch.bets());
    if first.saturating_add(bets) <= stored {
        Verdict::Refuse(StoreOutcome::AlreadyStored)
    } else if finished {
        Verdict::Refuse(StoreOutcome::AlreadyFinished)
    } else if !open {
        Verdict::Refuse(StoreOutcome::RoundClosed)
    } else if first != stored {
        Verdict::Refuse(StoreOutcome::OutOfSequence { stored })
    } else {
        Verdict::Store
    }
}

/// A "finished" with `claimed` bets against an agency that holds `stored`.
fn judge_finish(claimed: u64, stored: u64, finished: bool, open: bool) -> Verdict {
    if finished {
        Verdict::RefuseFinish(FinishOutcome::AlreadyFinished)
    } else if !open {
        Verdict::RefuseFinish(FinishOutcome::RoundClosed)
    } else if claimed != stored {
        Verdict::RefuseFinish(FinishOutcome::OutOfSequence { claimed, stored })
    } else {
        Verdict::Finish
    }
}

mod requests;
#[cfg(test)]
mod tests;
