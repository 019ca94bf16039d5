//! What peers may make the server log.
//!
//! A peer decides what a connection sends, and so what the server would
//! log about it: echoes, refusals, errors, failed authentications, the
//! closing lines of connections that never became an agency's. All of
//! them together share one budget, [`PeerLines`]: at most
//! [`PEER_LINES_PER_SECOND`] lines a second. What it holds back is counted
//! and said in one line, at most once a second ([`PeerLines::report`]).
//! Within it, each session may log at most [`LOG_LINES`] lines its peer
//! causes ([`ANONYMOUS_LOG_LINES`] without an agency), then one line
//! saying the rest is not logged, so that one peer cannot take the budget
//! from the others. Lines for stored bets are bounded by the bets; the
//! closing lines of the connections the server closes at shutdown are
//! always logged; every other closing line, an agency's too, is within the
//! budget (a stolen certificate that says Hello in a loop must not flood
//! the log).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use edge::log::Action;
use tracing::{debug, error, info, warn, Level};

/// Lines one agency's session can make the server log, at most (see the
/// module docs).
pub const LOG_LINES: u32 = 16;

/// Lines an anonymous session can make the server log, at most.
pub const ANONYMOUS_LOG_LINES: u32 = 4;

/// Lines all peers together can make the server log in a second, at most.
pub const PEER_LINES_PER_SECOND: u32 = 100;

const _: () =
    assert!(ANONYMOUS_LOG_LINES <= LOG_LINES, "an anonymous peer gets no more lines than an agency");
const _: () = assert!(LOG_LINES < PEER_LINES_PER_SECOND, "one connection cannot take a second's budget");

/// The server's budget of lines caused by peers, all sessions together: a
/// token bucket of a second's lines, refilled as time goes.
#[derive(Debug, Default)]
pub struct PeerLines(Mutex<Bucket>);

impl PeerLines {
    /// Whether a line a peer causes may be logged now; if not, it is
    /// counted.
    pub fn allow(&self) -> bool {
        self.lock().take(Instant::now())
    }

    /// Logs how many lines were held back since the last report, if any:
    /// the server calls it once a second.
    pub fn report(&self) {
        let held_back = self.lock().take_held_back();
        if held_back > 0 {
            warn!(
                "{}",
                Action::in_progress("log_budget")
                    .field("scope", "all peers")
                    .field("lines_per_second", PEER_LINES_PER_SECOND)
                    .field("unlogged_lines", held_back)
            );
        }
    }

    /// Lines held back since the server started.
    pub fn held_back_in_all(&self) -> u64 {
        self.lock().held_back_in_all
    }

    fn lock(&self) -> MutexGuard<'_, Bucket> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The state of [`PeerLines`], apart from the clock so that tests can drive
/// it: when the lines of the last second were logged, so that no window of
/// one second, wherever it starts, holds more than
/// [`PEER_LINES_PER_SECOND`] of them (a token bucket that starts full lets
/// twice as many through in a flood's first second).
#[derive(Debug, Default)]
struct Bucket {
    /// When each line logged within the last second was, oldest first.
    recent: VecDeque<Instant>,
    /// Lines held back since the last report of them, and in all.
    held_back: u64,
    held_back_in_all: u64,
}

impl Bucket {
    /// Takes a line at `now`: whether it may be logged.
    fn take(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        let allowed = self.recent.len() < PEER_LINES_PER_SECOND as usize;
        if allowed {
            self.recent.push_back(now);
        } else {
            self.held_back += 1;
            self.held_back_in_all += 1;
        }
        assert!(self.recent.len() <= PEER_LINES_PER_SECOND as usize, "a second holds at most its lines");
        allowed
    }

    /// The lines held back since the last call.
    fn take_held_back(&mut self) -> u64 {
        std::mem::take(&mut self.held_back)
    }
}

/// What is left of a session's log budget; shared with its pending replies.
#[derive(Debug, Clone)]
pub(super) struct LogBudget {
    /// Whose lines these are.
    ip: IpAddr,
    limit: u32,
    used: Arc<AtomicU32>,
    unlogged: Arc<AtomicU32>,
    pub(super) all: Arc<PeerLines>,
}

impl LogBudget {
    pub(super) fn new(ip: IpAddr, limit: u32, all: Arc<PeerLines>) -> Self {
        LogBudget { ip, limit, used: Arc::default(), unlogged: Arc::default(), all }
    }

    /// Logs `line` at `level` if both this session's budget and the server's
    /// allow; the first line past the session's says that no more will be.
    /// A line below the log's level costs nothing and is not counted.
    pub(super) fn log(&self, level: Level, line: Action) {
        if !enabled(level) {
            return;
        }
        let n = self.used.fetch_add(1, Ordering::Relaxed);
        if n < self.limit && self.all.allow() {
            emit(level, line);
            return;
        }
        if n == self.limit && self.all.allow() {
            warn!(
                "{}",
                Action::in_progress("log_budget")
                    .field("ip", self.ip)
                    .field("lines", self.limit)
                    .field("then", "not logged")
            );
        }
        self.unlogged.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn unlogged(&self) -> u32 {
        self.unlogged.load(Ordering::Relaxed)
    }
}

/// Whether lines at `level` are logged at all.
fn enabled(level: Level) -> bool {
    match level {
        Level::ERROR => tracing::enabled!(Level::ERROR),
        Level::WARN => tracing::enabled!(Level::WARN),
        Level::INFO => tracing::enabled!(Level::INFO),
        Level::DEBUG => tracing::enabled!(Level::DEBUG),
        _ => tracing::enabled!(Level::TRACE),
    }
}

fn emit(level: Level, line: Action) {
    match level {
        Level::ERROR => error!("{line}"),
        Level::WARN => warn!("{line}"),
        Level::INFO => info!("{line}"),
        _ => debug!("{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_peers_together_get_a_seconds_lines_and_the_rest_is_counted() {
        let start = Instant::now();
        let mut bucket = Bucket::default();
        let rate = PEER_LINES_PER_SECOND as usize;
        let allowed = (0..3 * rate).filter(|_| bucket.take(start)).count();
        assert_eq!(allowed, rate, "a second's lines at once, no more");
        assert_eq!(bucket.take_held_back(), 2 * rate as u64);
        assert_eq!(bucket.take_held_back(), 0, "each held-back line is told once");
        let later = start + Duration::from_millis(5);
        assert!(!bucket.take(later), "the second has not passed");
        // A second later, a second's lines again; a long quiet spell gives
        // no more than that.
        let second = start + Duration::from_secs(1);
        assert_eq!((0..2 * rate).filter(|_| bucket.take(second)).count(), rate);
        let quiet = second + Duration::from_secs(3600);
        assert_eq!((0..2 * rate).filter(|_| bucket.take(quiet)).count(), rate);
    }

    proptest::proptest! {
        /// Whenever lines come, no window of one second holds more than a
        /// second's lines (a flood's first second included).
        #[test]
        fn no_second_anywhere_holds_more_than_its_lines(
            gaps in proptest::collection::vec(0u64..30, 1..800),
        ) {
            let start = Instant::now();
            let mut bucket = Bucket::default();
            let mut at = start;
            let mut logged = Vec::new();
            for gap in gaps {
                at += Duration::from_millis(gap);
                if bucket.take(at) {
                    logged.push(at);
                }
            }
            for (i, &from) in logged.iter().enumerate() {
                let within = logged[i..].iter().take_while(|&&t| t - from < Duration::from_secs(1)).count();
                proptest::prop_assert!(within <= PEER_LINES_PER_SECOND as usize, "{} lines in a second", within);
            }
        }
    }
}
