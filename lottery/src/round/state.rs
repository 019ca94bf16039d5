//! What a round holds: its number and when it opened, how far each agency
//! has got, which have finished, their winners, whether it closed and
//! whether the draw ran.
//!
//! The state only moves forward: an agency's bets only grow, and only
//! until it finishes or the round closes; the round closes once (when its
//! time is up, when the operator says so, or when every agency finished);
//! the draw runs once, after the close.
//! Every change goes through a method here that asserts so: a caller that
//! breaks the round's rules stops the program instead of corrupting it.

use crate::progress::{Progress, Share};

use super::journal::CloseReason;
use super::RoundId;

/// What the round knows of one agency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgencyState {
    /// Its bets in the bets file.
    pub progress: Progress,
    /// It said it finished; nothing more is stored for it.
    pub finished: bool,
    /// Documents of its winning bets, in the order they were stored;
    /// handed to the draw's result once the round is drawn.
    pub winners: Vec<String>,
}

/// Where a round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Bets are stored.
    Open,
    /// Closed, for this reason; the draw is still to be recorded.
    Closed(CloseReason),
    /// Closed, for this reason, and drawn.
    Drawn(CloseReason),
}

impl Stage {
    /// `open`, `closed` or `drawn`, as the status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Open => "open",
            Stage::Closed(_) => "closed",
            Stage::Drawn(_) => "drawn",
        }
    }
}

/// Which round: its number in its storage folder and its random id, and
/// when it opened (milliseconds since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundName {
    pub number: u64,
    pub id: RoundId,
    pub opened: u64,
}

/// Everything a round holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundState {
    name: RoundName,
    /// Agency K at index K − 1.
    agencies: Vec<AgencyState>,
    closed: Option<CloseReason>,
    drawn: bool,
}

impl RoundState {
    /// A round with nothing stored yet.
    pub fn new(name: RoundName, agencies: u32) -> RoundState {
        RoundState::resumed(name, vec![AgencyState::default(); agencies as usize])
    }

    /// A round whose agencies hold what recovery found; nobody has
    /// finished yet, it is open and nothing is drawn (recovery replays
    /// those facts).
    pub fn resumed(name: RoundName, agencies: Vec<AgencyState>) -> RoundState {
        assert!(name.number > 0, "rounds are numbered from 1");
        assert!(u32::try_from(agencies.len()).is_ok(), "agencies are numbered by u32");
        assert!(agencies.iter().all(|a| !a.finished), "finishing is replayed from the journal");
        RoundState { name, agencies, closed: None, drawn: false }
    }

    pub fn name(&self) -> RoundName {
        self.name
    }

    pub fn id(&self) -> RoundId {
        self.name.id
    }

    /// The round's number in its storage folder: 1, 2, 3…
    pub fn number(&self) -> u64 {
        self.name.number
    }

    /// Why it closed, once it did.
    pub fn closed(&self) -> Option<CloseReason> {
        self.closed
    }

    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    pub fn stage(&self) -> Stage {
        match (self.closed, self.drawn) {
            (None, drawn) => {
                assert!(!drawn, "a round draws only once closed");
                Stage::Open
            }
            (Some(reason), false) => Stage::Closed(reason),
            (Some(reason), true) => Stage::Drawn(reason),
        }
    }

    /// How many agencies the round expects.
    pub fn expected(&self) -> u32 {
        self.agencies.len() as u32
    }

    /// Agency `agency` of 1..=expected.
    pub fn agency(&self, agency: u32) -> &AgencyState {
        assert!(self.is_agency(agency), "agency {agency} is one of the round's");
        &self.agencies[agency as usize - 1]
    }

    /// Every agency, agency K at index K − 1.
    pub fn agencies(&self) -> &[AgencyState] {
        &self.agencies
    }

    pub fn is_agency(&self, agency: u32) -> bool {
        (1..=self.expected()).contains(&agency)
    }

    pub fn drawn(&self) -> bool {
        self.drawn
    }

    pub fn finished(&self) -> usize {
        self.agencies.iter().filter(|a| a.finished).count()
    }

    pub fn all_finished(&self) -> bool {
        self.finished() == self.agencies.len()
    }

    pub fn bets(&self) -> u64 {
        self.agencies.iter().map(|a| a.progress.bets()).sum()
    }

    pub fn winners(&self) -> u64 {
        self.agencies.iter().map(|a| a.winners.len() as u64).sum()
    }

    /// Counts the bets of `share` (now durable) for `agency`, and their
    /// winners.
    pub fn store(&mut self, agency: u32, share: &Share, winners: &mut Vec<String>) {
        assert!(self.is_open(), "nothing is stored once the round closed");
        assert!(self.is_agency(agency), "bets are stored for an agency of the round");
        let state = &mut self.agencies[agency as usize - 1];
        assert!(!state.finished, "nothing is stored for an agency after it finished");
        let before = state.progress.bets();
        state.progress.extend(share);
        assert_eq!(state.progress.bets(), before + share.bets(), "an agency's bets only grow, by the share");
        state.winners.append(winners);
    }

    /// Records that `agency` finished with the bets it holds.
    pub fn finish(&mut self, agency: u32) {
        assert!(self.is_open(), "nobody finishes once the round closed");
        assert!(self.is_agency(agency), "an agency of the round finishes");
        let state = &mut self.agencies[agency as usize - 1];
        assert!(!state.finished, "an agency finishes once");
        state.finished = true;
    }

    /// Records the close: nothing more is stored.
    pub fn close(&mut self, reason: CloseReason) {
        assert!(self.is_open(), "a round closes once");
        assert!(
            reason != CloseReason::AllFinished || self.all_finished(),
            "it closes as all finished only then"
        );
        self.closed = Some(reason);
    }

    /// Records the draw.
    pub fn draw(&mut self) {
        assert!(!self.is_open(), "the draw runs once the round closed");
        assert!(!self.drawn, "the draw runs once");
        self.drawn = true;
    }

    /// Every agency's winners, taken out for the draw's result: agency K
    /// with its documents, for every agency that has some.
    pub fn take_winners(&mut self) -> Vec<(u32, Vec<String>)> {
        assert!(self.drawn, "winners are handed out only after the draw");
        let winners: Vec<(u32, Vec<String>)> = self
            .agencies
            .iter_mut()
            .enumerate()
            .filter(|(_, a)| !a.winners.is_empty())
            .map(|(i, a)| (i as u32 + 1, std::mem::take(&mut a.winners)))
            .collect();
        assert!(self.agencies.iter().all(|a| a.winners.is_empty()), "winners are handed out once");
        winners
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> RoundName {
        RoundName { number: 1, id: RoundId(7), opened: 0 }
    }

    fn share(first: u64, rows: &[&[u8]]) -> Share {
        let mut share = Share::starting_at(first);
        rows.iter().for_each(|r| share.push(r));
        share
    }

    #[test]
    fn bets_grow_until_the_agency_finishes_and_the_draw_hands_out_the_winners() {
        let mut state = RoundState::new(name(), 2);
        state.store(1, &share(0, &[b"a\n", b"b\n"]), &mut vec!["11".into()]);
        state.store(2, &share(0, &[b"c\n"]), &mut vec![]);
        state.finish(1);
        state.finish(2);
        assert_eq!((state.bets(), state.winners(), state.finished()), (3, 1, 2));
        state.close(CloseReason::AllFinished);
        state.draw();
        assert_eq!(state.take_winners(), vec![(1, vec!["11".to_owned()])]);
        assert_eq!(state.winners(), 0);
    }

    #[test]
    #[should_panic(expected = "nothing is stored for an agency after it finished")]
    fn storing_after_finishing_is_a_bug() {
        let mut state = RoundState::new(name(), 1);
        state.finish(1);
        state.store(1, &share(0, &[b"a\n"]), &mut vec![]);
    }

    #[test]
    #[should_panic(expected = "the draw runs once the round closed")]
    fn drawing_an_open_round_is_a_bug() {
        let mut state = RoundState::new(name(), 2);
        state.finish(1);
        state.draw();
    }

    #[test]
    fn a_round_closed_by_its_deadline_draws_over_finished_and_unfinished_agencies() {
        let mut state = RoundState::new(name(), 2);
        state.store(1, &share(0, &[b"a\n"]), &mut vec!["11".into()]);
        state.store(2, &share(0, &[b"b\n"]), &mut vec!["22".into()]);
        state.finish(1);
        state.close(CloseReason::Deadline);
        state.draw();
        assert_eq!(state.take_winners().len(), 2);
    }

    #[test]
    #[should_panic(expected = "nothing is stored once the round closed")]
    fn storing_after_the_close_is_a_bug() {
        let mut state = RoundState::new(name(), 1);
        state.close(CloseReason::Operator);
        state.store(1, &share(0, &[b"a\n"]), &mut vec![]);
    }

    #[test]
    #[should_panic(expected = "a share extends the progress it starts from")]
    fn a_share_that_skips_bets_is_a_bug() {
        let mut state = RoundState::new(name(), 1);
        state.store(1, &share(3, &[b"a\n"]), &mut vec![]);
    }
}
