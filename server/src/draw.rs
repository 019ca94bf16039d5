//! The draw and the barrier in front of it.
//!
//! [`DrawBarrier`] counts the agencies that have finished. Only the writer
//! task moves it forward, and only after every bet queued before an
//! agency's "finished" is on disk, so when the count reaches the number of
//! expected agencies the bets file is complete. The writer then runs
//! [`run_draw`] once and publishes the winners; from then on sessions
//! answer winners queries from that result. Before it, they answer "not
//! ready": nobody ever sees a partial result.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use lottery::storage::{self, StorageError};

/// The winners' DNIs of each agency.
#[derive(Debug, Default)]
pub struct Winners(HashMap<u32, Vec<String>>);

impl Winners {
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

    /// Records one more finished agency (the caller guarantees each agency
    /// counts once). Returns whether every expected agency has finished.
    pub(crate) fn agency_finished(&self) -> bool {
        self.finished.fetch_add(1, Ordering::AcqRel) + 1 >= self.expected
    }

    /// Whether every expected agency has finished.
    pub(crate) fn complete(&self) -> bool {
        self.finished.load(Ordering::Acquire) >= self.expected
    }

    /// Makes the result visible to every session.
    pub(crate) fn publish(&self, winners: Winners) {
        // Only the writer publishes, once: a second call would be a bug
        // that keeps the first result.
        let _ = self.winners.set(winners);
    }
}

/// Reads the bets file back, one bet at a time, and keeps the winners.
pub fn run_draw(path: &Path) -> Result<Winners, StorageError> {
    let mut winners: HashMap<u32, Vec<String>> = HashMap::new();
    for bet in storage::load_bets(path)? {
        let bet = bet?;
        if storage::has_won(&bet) {
            winners.entry(bet.agency).or_default().push(bet.document);
        }
    }
    Ok(Winners(winners))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_barrier_opens_with_the_last_expected_agency() {
        let barrier = DrawBarrier::new(2);
        assert!(!barrier.agency_finished());
        assert!(matches!(barrier.status(), DrawStatus::Pending { finished: 1, expected: 2 }));
        assert!(barrier.agency_finished());
        assert!(matches!(barrier.status(), DrawStatus::Pending { .. }), "open, not yet drawn");
        barrier.publish(Winners::default());
        assert!(matches!(barrier.status(), DrawStatus::Done(_)));
    }

    #[test]
    fn the_draw_groups_winners_by_agency() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(
            &path,
            "1,A,B,111,1990-01-01,7574\n2,A,B,222,1990-01-01,7574\n1,A,B,333,1990-01-01,7575\n1,A,B,0444,1990-01-01,7574\n",
        )
        .unwrap();
        let winners = run_draw(&path).unwrap();
        assert_eq!(winners.of(1), ["111", "0444"]);
        assert_eq!(winners.of(2), ["222"]);
        assert!(winners.of(3).is_empty());
    }
}
