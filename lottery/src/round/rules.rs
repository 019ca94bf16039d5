//! The round's rules: what is stored, what counts, when the draw runs.
//!
//! [`Round`] decides every request against the round's state and makes
//! what it accepts durable through its [`Ledger`] before it answers. It
//! takes requests in groups (group commit): every request is decided as if
//! those before it in the group were already stored; the rows of every
//! accepted batch go to the ledger in one append, then the facts of every
//! accepted "finished" (and the draw, with the last one) in one more; only
//! then are the answers given.
//!
//! The rules:
//! - a batch is stored only if it starts exactly where its agency's stored
//!   bets end; a batch stored before is acknowledged again and stores
//!   nothing; any other is out of sequence;
//! - "finished" counts only if the agency says how many bets it has and
//!   the round holds exactly those; nothing is stored for an agency after
//!   it finished;
//! - when the last agency finishes, the draw is recorded with its fact, so
//!   the answer to that agency already finds the winners;
//! - a `Hello` closes its group (nothing comes after it in the group), so
//!   that it is answered with the state right after the requests before
//!   it: what it reports is durable and final;
//! - an append that fails and leaves the ledger as it was refuses what
//!   it carried, which may be sent again; one that leaves the ledger in an
//!   unknown state stops the round ([`Fatal`]).

use std::collections::HashMap;
use std::sync::Arc;

use crate::progress::Progress;
use crate::storage::{AppendError, StorageError};

use super::batch::EncodedBatch;
use super::journal::Entry;
use super::state::RoundState;
use super::{MAX_GROUP_BETS, MAX_GROUP_BYTES};

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
}

/// One request of an agency, as the round sees it.
#[derive(Debug)]
pub enum Request {
    /// A connection now speaks for `agency`: what does the round hold?
    Hello { agency: u32 },
    /// Store these (already valid) bets, all or none.
    Store { agency: u32, batch: EncodedBatch },
    /// The agency finished, with `bets` bets.
    Finish { agency: u32, bets: u64 },
}

impl Request {
    /// The agency it is about.
    pub fn agency(&self) -> u32 {
        match *self {
            Request::Hello { agency } | Request::Store { agency, .. } | Request::Finish { agency, .. } => {
                agency
            }
        }
    }

    /// Bets it would store.
    pub fn bets(&self) -> usize {
        match self {
            Request::Store { batch, .. } => batch.bets() as usize,
            Request::Hello { .. } | Request::Finish { .. } => 0,
        }
    }

    /// Whether nothing may follow it in its group: a `Hello`, whose answer
    /// is the durable state after the requests before it.
    pub fn closes_group(&self) -> bool {
        matches!(self, Request::Hello { .. })
    }

    /// Bytes of rows it would store.
    pub fn bytes(&self) -> usize {
        match self {
            Request::Store { batch, .. } => batch.rows().len(),
            Request::Hello { .. } | Request::Finish { .. } => 0,
        }
    }
}

/// What the round holds of an agency, for its `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    pub progress: Progress,
    pub finished: bool,
}

/// What a batch learns.
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
    /// The append failed and nothing of it was kept.
    Failed(Arc<StorageError>),
}

/// What a "finished" learns.
#[derive(Debug, Clone)]
pub enum FinishOutcome {
    /// Recorded durably; the agency counts for the draw.
    Counted,
    /// The agency said it has `claimed` bets; the round holds `stored`.
    OutOfSequence {
        claimed: u64,
        stored: u64,
    },
    AlreadyFinished,
    Failed(Arc<StorageError>),
}

/// The answer to one request, of the request's own kind.
#[derive(Debug, Clone)]
pub enum Answer {
    Welcome(Welcome),
    Store(StoreOutcome),
    Finish(FinishOutcome),
}

/// What a group changed, besides its answers.
#[derive(Debug, Default)]
pub struct Committed {
    /// One per request, in order.
    pub answers: Vec<Answer>,
    /// Agencies that finished with this group, and their bets.
    pub finished: Vec<(u32, u64)>,
    /// The draw ran with this group.
    pub drawn: bool,
    /// Appends that failed and kept nothing (their requests were refused).
    pub failures: Vec<Arc<StorageError>>,
}

impl Committed {
    /// What an append came to: done, failed for now (the failure is kept,
    /// to be told once), or failed for good.
    fn outcome(&mut self, append: Result<(), AppendError>) -> Result<Result<(), Arc<StorageError>>, Fatal> {
        match append {
            Ok(()) => Ok(Ok(())),
            Err(AppendError::Transient(e)) => {
                let e = Arc::new(e);
                self.failures.push(e.clone());
                Ok(Err(e))
            }
            Err(AppendError::Fatal(e)) => Err(Fatal(e)),
        }
    }
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
    Refuse(StoreOutcome),
    RefuseFinish(FinishOutcome),
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

    /// Records the draw of a round whose agencies have all finished but
    /// whose draw was not recorded (a round of no agencies, or one that
    /// stopped right before): true if it drew now.
    pub fn draw_if_complete(&mut self) -> Result<bool, Fatal> {
        if self.state.drawn() || !self.state.all_finished() {
            return Ok(false);
        }
        let entry = Entry::Drawn { winners: self.state.winners() };
        self.ledger
            .record(&[entry])
            .map_err(|(AppendError::Transient(e) | AppendError::Fatal(e))| Fatal(e))?;
        self.state.draw();
        assert!(self.state.drawn(), "a complete round is drawn");
        Ok(true)
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
        assert!(closing + 1 >= group.len(), "a Hello is the last request of its group");
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
        for request in group {
            let agency = request.agency();
            let state = self.state.agency(agency);
            let (stored, finished) = *ahead.entry(agency).or_insert((state.progress.bets(), state.finished));
            let verdict = match request {
                Request::Hello { .. } => Verdict::Answer,
                Request::Store { batch, .. } => judge_batch(batch, stored, finished),
                Request::Finish { bets, .. } => judge_finish(*bets, stored, finished),
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

    /// Appends the facts of every accepted "finished", and the draw with
    /// the last one; records them in the state once durable. Nothing is
    /// recorded when the group's rows failed.
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
                let agency = request.agency();
                Entry::Finished { agency, progress: self.state.agency(agency).progress }
            })
            .collect();
        let finishing = entries.len();
        let draws = finishing > 0 && self.state.finished() + finishing == self.state.agencies().len();
        if draws {
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
        if draws {
            self.state.draw();
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
                Answer::Welcome(Welcome { progress: state.progress, finished: state.finished })
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

/// A batch against an agency that holds `stored` bets.
fn judge_batch(batch: &EncodedBatch, stored: u64, finished: bool) -> Verdict {
    let (first, bets) = (batch.first(), batch.bets());
    if first.saturating_add(bets) <= stored {
        Verdict::Refuse(StoreOutcome::AlreadyStored)
    } else if finished {
        Verdict::Refuse(StoreOutcome::AlreadyFinished)
    } else if first != stored {
        Verdict::Refuse(StoreOutcome::OutOfSequence { stored })
    } else {
        Verdict::Store
    }
}

/// A "finished" with `claimed` bets against an agency that holds `stored`.
fn judge_finish(claimed: u64, stored: u64, finished: bool) -> Verdict {
    if finished {
        Verdict::RefuseFinish(FinishOutcome::AlreadyFinished)
    } else if claimed != stored {
        Verdict::RefuseFinish(FinishOutcome::OutOfSequence { claimed, stored })
    } else {
        Verdict::Finish
    }
}

#[cfg(test)]
mod tests;
