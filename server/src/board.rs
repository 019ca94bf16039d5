//! Where the rounds stand, for every session, the operator and the clock.
//!
//! Only the writer moves the [`Board`] forward, and only with what is
//! durable: an agency's stored bets once synced, its "finished" once in the
//! journal, the close and the winners once the draw is recorded (and its
//! `sorteo` line written). Sessions read it: an agency waiting for its
//! winners waits on the board's [`View`], which changes only when the
//! round's stage does (open, closed, drawn, the next round), so a thousand
//! waiting agencies cost nothing until the draw.
//!
//! Kept rounds (`rounds/K/`, see `lottery::round::archive`) are read back
//! from disk the first time an agency asks about one, and then kept in
//! memory (the last [`KEPT_IN_MEMORY`] of them).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lottery::round::{CloseReason, RoundError, RoundState, Shelf, Stage};
use tokio::sync::watch;

/// Kept rounds held in memory at most, once read.
pub const KEPT_IN_MEMORY: usize = 8;

/// The winners' DNIs of each agency.
#[derive(Debug, Default)]
pub struct Winners(HashMap<u32, Vec<String>>);

impl Winners {
    pub fn new(by_agency: HashMap<u32, Vec<String>>) -> Winners {
        Winners(by_agency)
    }

    /// The DNIs of `agency`'s winners, in the order they were stored.
    pub fn of(&self, agency: u32) -> &[String] {
        self.0.get(&agency).map_or(&[], Vec::as_slice)
    }

    /// Winners of every agency together.
    pub fn count(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }
}

/// The open round (or the last one, drawn, until the next opens), as far
/// as is durable.
#[derive(Debug, Clone)]
pub struct View {
    pub number: u64,
    pub stage: Stage,
    /// When it opened and when its time is up (milliseconds since the Unix
    /// epoch), if it has a deadline.
    pub opened: u64,
    pub closes: Option<u64>,
    /// Once drawn.
    pub winners: Option<Arc<Winners>>,
}

impl View {
    /// Whether round `number` is drawn, as far as this view knows: it is
    /// this round, drawn, or an earlier one.
    pub fn drawn(&self, number: u64) -> bool {
        number < self.number || (number == self.number && matches!(self.stage, Stage::Drawn(_)))
    }
}

/// One agency of the open round.
#[derive(Debug, Default)]
struct Agency {
    stored: AtomicU64,
    finished: AtomicBool,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Board {
    /// Agency K at index K − 1.
    agencies: Vec<Agency>,
    finished: AtomicU32,
    view: watch::Sender<View>,
    shelf: Shelf,
    /// Kept rounds read back, the most recent last.
    kept: Mutex<VecDeque<(u64, Arc<RoundState>)>>,
}

impl Board {
    /// The board of round `state`, whose deadline (if any) is `closes`.
    pub fn new(state: &RoundState, closes: Option<u64>, shelf: Shelf) -> Board {
        let agencies = (0..state.expected()).map(|_| Agency::default()).collect();
        let (view, _) = watch::channel(Board::view_of(state, closes, None));
        let board =
            Board { agencies, finished: AtomicU32::new(0), view, shelf, kept: Mutex::new(VecDeque::new()) };
        board.reset(state);
        board
    }

    fn view_of(state: &RoundState, closes: Option<u64>, winners: Option<Arc<Winners>>) -> View {
        let name = state.name();
        View { number: name.number, stage: state.stage(), opened: name.opened, closes, winners }
    }

    /// How many agencies each round expects.
    pub fn expected(&self) -> u32 {
        u32::try_from(self.agencies.len()).expect("agencies are numbered by u32")
    }

    /// The view now.
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// A receiver that sees every change of the view from now on.
    pub fn watch(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    /// Agencies of the open round that have durably finished.
    pub fn finished(&self) -> u32 {
        self.finished.load(Ordering::Acquire)
    }

    /// Bets stored and whether it finished, for `agency` of the open round.
    pub fn agency(&self, agency: u32) -> (u64, bool) {
        let state = &self.agencies[agency as usize - 1];
        (state.stored.load(Ordering::Acquire), state.finished.load(Ordering::Acquire))
    }

    /// Every counter from `state` (a round opened or resumed).
    fn reset(&self, state: &RoundState) {
        assert_eq!(state.expected() as usize, self.agencies.len(), "every round has the configured agencies");
        for (k, agency) in (1..).zip(&self.agencies) {
            let held = state.agency(k);
            agency.stored.store(held.progress.bets(), Ordering::Release);
            agency.finished.store(held.finished, Ordering::Release);
        }
        let finished = u32::try_from(state.finished()).expect("agencies are numbered by u32");
        self.finished.store(finished, Ordering::Release);
    }

    /// The writer's: `agency` holds `stored` bets now.
    pub(crate) fn stored(&self, agency: u32, stored: u64) {
        let before = self.agencies[agency as usize - 1].stored.swap(stored, Ordering::AcqRel);
        assert!(stored >= before, "an agency's bets only grow");
    }

    /// The writer's: `agency` finished.
    pub(crate) fn finish(&self, agency: u32) {
        let before = self.agencies[agency as usize - 1].finished.swap(true, Ordering::AcqRel);
        assert!(!before, "an agency finishes once");
        let finished = self.finished.fetch_add(1, Ordering::AcqRel) + 1;
        assert!(finished <= self.expected(), "no more agencies finish than are expected");
    }

    /// The writer's: the round closed (not drawn yet).
    pub(crate) fn close(&self, reason: CloseReason) {
        self.view.send_modify(|view| {
            assert_eq!(view.stage, Stage::Open, "a round closes once");
            view.stage = Stage::Closed(reason);
        });
    }

    /// The writer's: the draw is recorded (now, or before a restart) and
    /// `sorteo` written; the winners are everyone's to see.
    pub(crate) fn drawn(&self, winners: Winners) {
        self.view.send_modify(|view| {
            let (Stage::Closed(reason) | Stage::Drawn(reason)) = view.stage else {
                panic!("a round draws after its close")
            };
            assert!(view.winners.is_none(), "a round's winners are published once");
            view.stage = Stage::Drawn(reason);
            view.winners = Some(Arc::new(winners));
        });
    }

    /// The writer's: round `state` opened, with its deadline.
    pub(crate) fn opened(&self, state: &RoundState, closes: Option<u64>) {
        self.reset(state);
        self.view.send_modify(|view| {
            assert!(view.drawn(view.number), "the next round opens after the draw");
            assert_eq!(state.number(), view.number + 1, "rounds follow each other");
            *view = Board::view_of(state, closes, None);
        });
    }

    /// Kept round `number` as read from disk (blocking: call it off the
    /// runtime's threads), `None` if it is not kept.
    pub fn kept(&self, number: u64) -> Result<Option<Arc<RoundState>>, RoundError> {
        if let Some((_, state)) = self.lock_kept().iter().find(|(n, _)| *n == number) {
            return Ok(Some(state.clone()));
        }
        let Some(state) = self.shelf.drawn(number)? else { return Ok(None) };
        let state = Arc::new(state);
        let mut kept = self.lock_kept();
        if !kept.iter().any(|(n, _)| *n == number) {
            if kept.len() == KEPT_IN_MEMORY {
                kept.pop_front();
            }
            kept.push_back((number, state.clone()));
        }
        Ok(Some(state))
    }

    fn lock_kept(&self) -> MutexGuard<'_, VecDeque<(u64, Arc<RoundState>)>> {
        // Each change is one push or pop: a panic cannot leave it half made.
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lottery::round::{RoundId, RoundName};

    fn state(number: u64) -> RoundState {
        RoundState::new(RoundName { number, id: RoundId(1), opened: 5 }, 2)
    }

    fn board() -> Board {
        let shelf = Shelf::new(
            Arc::new(lottery::storage::disk::OsDisk),
            std::path::Path::new("/nonexistent/bets.csv"),
        );
        Board::new(&state(1), Some(9), shelf)
    }

    #[test]
    fn the_view_changes_only_with_the_stage_and_shows_winners_once_drawn() {
        let board = board();
        let mut watch = board.watch();
        board.stored(1, 3);
        board.finish(1);
        assert!(!watch.has_changed().unwrap(), "bets and finished agencies do not wake the waiting");
        assert_eq!((board.agency(1), board.finished()), ((3, true), 1));
        board.close(CloseReason::Deadline);
        assert!(watch.has_changed().unwrap());
        assert!(!watch.borrow_and_update().drawn(1));
        board.drawn(Winners::new(HashMap::from([(1, vec!["11".to_owned()])])));
        let view = watch.borrow_and_update().clone();
        assert!(view.drawn(1) && !view.drawn(2));
        assert_eq!(view.winners.unwrap().of(1), ["11".to_owned()]);

        board.opened(&state(2), None);
        let view = board.view();
        assert_eq!((view.number, view.stage, view.closes, board.finished()), (2, Stage::Open, None, 0));
        assert!(view.drawn(1) && view.winners.is_none());
        assert_eq!(board.agency(1), (0, false));
    }

    #[test]
    #[should_panic(expected = "the next round opens after the draw")]
    fn opening_over_an_open_round_is_a_bug() {
        board().opened(&state(2), None);
    }
}
