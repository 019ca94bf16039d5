//! The rounds' clock: it closes the open round when its time is up
//! (`SERVER_ROUND_CLOSE`, or `SERVER_ROUND_EVERY`), and with
//! `SERVER_ROUND_EVERY` opens the next round at its slot, right after the
//! draw or, for a round drawn early (every agency finished), once its time
//! is up. Both go through the writer's queue like any request: a close
//! draws over exactly the bets queued before it.
//!
//! Times are the wall clock's (milliseconds since the Unix epoch, as the
//! journal records when a round opened), so a restart keeps the deadline
//! of the round it resumes. The clock looks again at least every
//! [`LOOK_AGAIN`], so that a wall clock set forward or back is followed.

use std::sync::Arc;
use std::time::Duration;

use edge::duration::GoDuration;
use edge::log::Action;
use lottery::round::{now_millis, CloseOutcome, CloseReason, RoundState, Stage};
use tracing::{info, warn};

use crate::agencies::Agencies;
use crate::board::View;

/// The longest the clock sleeps before it looks at the time again.
const LOOK_AGAIN: Duration = Duration::from_secs(60);

/// How long the clock waits before it tries a close or an opening that
/// failed (a full disk) again.
const RETRY: Duration = Duration::from_secs(1);

/// When rounds close and open by themselves; by default never (the
/// course's round: it draws when every agency has finished).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Schedule {
    /// A round closes this long after it opened.
    pub close_after: Option<Duration>,
    /// A round opens this long after the one before opened (and closes
    /// then, unless `close_after` says earlier).
    pub every: Option<Duration>,
}

impl Schedule {
    /// When a round opened at `opened` closes by itself, if it does.
    pub fn closes(&self, opened: u64) -> Option<u64> {
        self.close_after.or(self.every).map(|after| opened.saturating_add(millis(after)))
    }

    /// When the round after one opened at `opened` opens by itself.
    pub fn next_opens(&self, opened: u64) -> Option<u64> {
        self.every.map(|every| opened.saturating_add(millis(every)))
    }

    /// The line that says round `state` opened.
    pub fn log_opened(&self, state: &RoundState, closes: Option<u64>) {
        let mut line =
            Action::success("new_round").field("round", state.number()).field("agencies", state.expected());
        if let Some(closes) = closes {
            let after = Duration::from_millis(closes.saturating_sub(state.name().opened));
            line = line.field("closes_in", GoDuration(after));
        }
        info!("{line}");
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What the clock does next.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// Close round `round` at `at`.
    Close { round: u64, at: u64 },
    /// Open the round after `after` at `at`.
    Open { after: u64, at: u64 },
}

/// Runs the clock until the server stops taking jobs.
pub async fn run(agencies: Arc<Agencies>, schedule: Schedule) {
    if schedule == Schedule::default() {
        return std::future::pending().await;
    }
    let mut watch = agencies.board.watch();
    loop {
        let due = due(&watch.borrow_and_update(), &schedule);
        let Some(due) = due else {
            if watch.changed().await.is_err() {
                return;
            }
            continue;
        };
        let at = match due {
            Due::Close { at, .. } | Due::Open { at, .. } => at,
        };
        let wait = Duration::from_millis(at.saturating_sub(now_millis()));
        if !wait.is_zero() {
            tokio::select! {
                changed = watch.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(wait.min(LOOK_AGAIN)) => {}
            }
            continue;
        }
        let done = match due {
            Due::Close { round, .. } => close(&agencies, round).await,
            Due::Open { after, .. } => open(&agencies, after).await,
        };
        match done {
            Some(true) => {}
            Some(false) => tokio::time::sleep(RETRY).await,
            None => return,
        }
    }
}

/// What is due after `view`, under `schedule`.
fn due(view: &View, schedule: &Schedule) -> Option<Due> {
    match view.stage {
        Stage::Open => view.closes.map(|at| Due::Close { round: view.number, at }),
        Stage::Closed(_) => None,
        Stage::Drawn(_) => schedule.next_opens(view.opened).map(|at| Due::Open { after: view.number, at }),
    }
}

/// Closes round `round`: whether it is closed now (`None`: the server
/// stops).
async fn close(agencies: &Agencies, round: u64) -> Option<bool> {
    let outcome = agencies.close_round(round, CloseReason::Deadline).ok()?.await.ok()?;
    match outcome {
        CloseOutcome::Closed { .. } | CloseOutcome::NotOpen(_) => Some(true),
        CloseOutcome::Failed(e) => {
            warn!(
                "{}",
                Action::fail("cierre")
                    .field("round", round)
                    .field("error", e)
                    .field("then", "tried again in 1s")
            );
            Some(false)
        }
    }
}

/// Opens the round after `after`: whether it opened (`None`: the server
/// stops).
async fn open(agencies: &Agencies, after: u64) -> Option<bool> {
    Some(agencies.open_round(after).ok()?.await.ok()?.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_closes_at_its_deadline_and_the_next_opens_at_its_slot() {
        let minute = Duration::from_secs(60);
        let every = Schedule { close_after: None, every: Some(10 * minute) };
        assert_eq!(every.closes(1_000), Some(601_000));
        assert_eq!(every.next_opens(1_000), Some(601_000));
        let both = Schedule { close_after: Some(minute), every: Some(10 * minute) };
        assert_eq!((both.closes(0), both.next_opens(0)), (Some(60_000), Some(600_000)));
        let course = Schedule::default();
        assert_eq!((course.closes(0), course.next_opens(0)), (None, None));
        let close = Schedule { close_after: Some(minute), every: None };
        assert_eq!((close.closes(0), close.next_opens(0)), (Some(60_000), None));
    }
}
