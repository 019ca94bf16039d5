//! What a round holds: how far each agency has got, which have finished,
//! their winners, and whether the draw ran.
//!
//! The state only moves forward: an agency's bets only grow, and only
//! until it finishes; the draw runs once, after every agency finished.
//! Every change goes through a method here that asserts so: a caller that
//! breaks the round's rules stops the program instead of corrupting it.

use crate::progress::{Progress, Share};

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

/// Everything a round holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundState {
    id: RoundId,
    /// Agency K at index K − 1.
    agencies: Vec<AgencyState>,
    drawn: bool,
}

impl RoundState {
    /// A round with nothing stored yet.
    pub fn new(id: RoundId, agencies: u32) -> RoundState {
        RoundState::resumed(id, vec![AgencyState::default(); agencies as usize])
    }

    /// A round whose agencies hold what recovery found; nobody has
    /// finished yet and nothing is drawn (recovery replays those facts).
    pub fn resumed(id: RoundId, agencies: Vec<AgencyState>) -> RoundState {
        assert!(u32::try_from(agencies.len()).is_ok(), "agencies are numbered by u32");
        assert!(agencies.iter().all(|a| !a.finished), "finishing is replayed from the journal");
        RoundState { id, agencies, drawn: false }
    }

    pub fn id(&self) -> RoundId {
        self.id
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
        assert!(!self.drawn, "nothing is stored after the draw");
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
        assert!(!self.drawn, "nobody finishes after the draw");
        assert!(self.is_agency(agency), "an agency of the round finishes");
        let state = &mut self.agencies[agency as usize - 1];
        assert!(!state.finished, "an agency finishes once");
        state.finished = true;
    }

    /// Records the draw.
    pub fn draw(&mut self) {
        assert!(self.all_finished(), "the draw runs once every agency finished");
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

    fn share(first: u64, rows: &[&[u8]]) -> Share {
        let mut share = Share::starting_at(first);
        rows.iter().for_each(|r| share.push(r));
        share
    }

    #[test]
    fn bets_grow_until_the_agency_finishes_and_the_draw_hands_out_the_winners() {
        let mut state = RoundState::new(RoundId(7), 2);
        state.store(1, &share(0, &[b"a\n", b"b\n"]), &mut vec!["11".into()]);
        state.store(2, &share(0, &[b"c\n"]), &mut vec![]);
        state.finish(1);
        state.finish(2);
        assert_eq!((state.bets(), state.winners(), state.finished()), (3, 1, 2));
        state.draw();
        assert_eq!(state.take_winners(), vec![(1, vec!["11".to_owned()])]);
        assert_eq!(state.winners(), 0);
    }

    #[test]
    #[should_panic(expected = "nothing is stored for an agency after it finished")]
    fn storing_after_finishing_is_a_bug() {
        let mut state = RoundState::new(RoundId(7), 1);
        state.finish(1);
        state.store(1, &share(0, &[b"a\n"]), &mut vec![]);
    }

    #[test]
    #[should_panic(expected = "the draw runs once every agency finished")]
    fn drawing_before_everyone_finished_is_a_bug() {
        let mut state = RoundState::new(RoundId(7), 2);
        state.finish(1);
        state.draw();
    }

    #[test]
    #[should_panic(expected = "a share extends the progress it starts from")]
    fn a_share_that_skips_bets_is_a_bug() {
        let mut state = RoundState::new(RoundId(7), 1);
        state.store(1, &share(3, &[b"a\n"]), &mut vec![]);
    }
}
