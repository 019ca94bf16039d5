//! The draw's result and the barrier in front of it.
//!
//! [`DrawBarrier`] counts the agencies that have finished and holds the
//! winners once the draw ran. Only the writer moves it forward, and only
//! with what is durable: an agency counts once its "finished" is in the
//! journal, and the winners are published only after the draw is recorded.
//! Sessions read it: before the draw they answer "not ready", so nobody
//! ever sees a partial result; after it, each agency gets its own winners.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

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
}

/// Where the draw stands.
pub enum DrawStatus<'a> {
    Pending { finished: u32, expected: u32 },
    Done(&'a Winners),
}

/// Counts finished agencies and holds the draw's result once there is one.
#[derive(Debug)]
pub struct DrawBarrier {
    expected: u32,
    finished: AtomicU32,
    winners: OnceLock<Winners>,
}

impl DrawBarrier {
    pub fn new(expected: u32) -> DrawBarrier {
        DrawBarrier { expected, finished: AtomicU32::new(0), winners: OnceLock::new() }
    }

    pub fn expected(&self) -> u32 {
        self.expected
    }

    pub fn status(&self) -> DrawStatus<'_> {
        match self.winners.get() {
            Some(winners) => DrawStatus::Done(winners),
            None => DrawStatus::Pending {
                finished: self.finished.load(Ordering::Acquire),
                expected: self.expected,
            },
        }
    }

    /// How many agencies have durably finished.
    pub(crate) fn set_finished(&self, finished: usize) {
        let finished = u32::try_from(finished).expect("at most `expected` agencies finish");
        assert!(finished <= self.expected, "no more agencies finish than are expected");
        let before = self.finished.swap(finished, Ordering::AcqRel);
        assert!(finished >= before, "finished agencies only grow");
    }

    /// Makes the result visible to every session.
    pub(crate) fn publish(&self, winners: Winners) {
        let finished = self.finished.load(Ordering::Acquire);
        assert_eq!(finished, self.expected, "the draw is published once every agency finished");
        assert!(self.winners.set(winners).is_ok(), "the draw is published once");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_shows_only_once_published() {
        let barrier = DrawBarrier::new(2);
        barrier.set_finished(1);
        assert!(matches!(barrier.status(), DrawStatus::Pending { finished: 1, expected: 2 }));
        barrier.set_finished(2);
        assert!(matches!(barrier.status(), DrawStatus::Pending { .. }), "all finished, not yet drawn");
        barrier.publish(Winners::new(HashMap::from([(1, vec!["111".to_owned()])])));
        let DrawStatus::Done(winners) = barrier.status() else { panic!("not done") };
        assert_eq!((winners.of(1), winners.of(2)), (&["111".to_owned()][..], &[][..]));
    }
}
