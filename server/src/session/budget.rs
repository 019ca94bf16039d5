//! What a session may make the server log.
//!
//! A peer decides what a connection sends, and so what the server would
//! log about it: echoes, refusals, errors. Each session may log at most
//! [`LOG_LINES`] lines its peer causes ([`ANONYMOUS_LOG_LINES`] without an
//! agency), then one line saying the rest is not logged; and all sessions
//! together share [`PeerLines`], so that many connections cannot flood the
//! log either. Lines for stored bets are bounded by the bets themselves.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge::log::Action;
use tracing::{debug, error, info, warn, Level};

/// Lines one agency's session can make the server log, at most (see the
/// module docs).
pub const LOG_LINES: u32 = 16;

/// Lines an anonymous session can make the server log, at most.
pub const ANONYMOUS_LOG_LINES: u32 = 4;

/// Lines all peers together can make the server log per second, over time.
pub const PEER_LINES_PER_SECOND: u32 = 100;

/// Lines all peers together can make the server log at once, after a quiet
/// spell.
pub const PEER_LINES_BURST: u32 = 1000;

const _: () =
    assert!(ANONYMOUS_LOG_LINES <= LOG_LINES, "an anonymous peer gets no more lines than an agency");
const _: () = assert!(PEER_LINES_PER_SECOND <= PEER_LINES_BURST, "a burst holds at least a second of lines");

/// The server's budget of lines caused by peers, all sessions together: a
/// token bucket, so that many connections, each within its own budget,
/// cannot flood the log either. What it holds back is counted and said in
/// one line, at most once a second.
#[derive(Debug, Default)]
pub struct PeerLines(Mutex<Bucket>);

impl PeerLines {
    /// Whether a line a peer causes may be logged now.
    pub fn allow(&self) -> bool {
        let (allowed, held_back) =
            self.0.lock().expect("the bucket never panics").take(std::time::Instant::now());
        if let Some(lines) = held_back {
            warn!(
                "{}",
                Action::in_progress("log_budget")
                    .field("scope", "all peers")
                    .field("lines_per_second", PEER_LINES_PER_SECOND)
                    .field("unlogged_lines", lines)
            );
        }
        allowed
    }
}

/// The state of [`PeerLines`], apart from the clock so that tests can drive it.
#[derive(Debug, Default)]
struct Bucket {
    /// Lines that may be logged now (refilled lazily).
    tokens: f64,
    /// When `tokens` was last refilled; `None` before the first line (full).
    refilled: Option<std::time::Instant>,
    /// Lines held back since the last report of them.
    held_back: u64,
    /// When held-back lines were last reported.
    reported: Option<std::time::Instant>,
}

impl Bucket {
    /// Takes a line at `now`: whether it may be logged, and a count of
    /// held-back lines to report first, if it is time to.
    fn take(&mut self, now: std::time::Instant) -> (bool, Option<u64>) {
        let burst = f64::from(PEER_LINES_BURST);
        self.tokens = match self.refilled {
            None => burst,
            Some(then) => {
                let elapsed = now.saturating_duration_since(then).as_secs_f64();
                (self.tokens + elapsed * f64::from(PEER_LINES_PER_SECOND)).min(burst)
            }
        };
        self.refilled = Some(now);
        assert!(self.tokens >= 0.0, "a bucket never owes lines");
        assert!(self.tokens <= burst, "a bucket holds at most a burst");
        let allowed = self.tokens >= 1.0;
        if allowed {
            self.tokens -= 1.0;
        } else {
            self.held_back += 1;
        }
        // Report when logging resumes, or once a second while it is held.
        let due = allowed
            || self.reported.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
        if self.held_back > 0 && due {
            self.reported = Some(now);
            return (allowed, Some(std::mem::take(&mut self.held_back)));
        }
        (allowed, None)
    }
}

/// What is left of a session's log budget; shared with its pending replies.
#[derive(Debug, Clone)]
pub(super) struct LogBudget {
    limit: u32,
    used: Arc<AtomicU32>,
    unlogged: Arc<AtomicU32>,
    pub(super) all: Arc<PeerLines>,
}

impl LogBudget {
    pub(super) fn new(limit: u32, all: Arc<PeerLines>) -> Self {
        LogBudget { limit, used: Arc::default(), unlogged: Arc::default(), all }
    }

    /// Logs `line` at `level` if both this session's budget and the server's
    /// allow; the first line past the session's says that no more will be.
    pub(super) fn log(&self, level: Level, line: Action) {
        let n = self.used.fetch_add(1, Ordering::Relaxed);
        if n < self.limit && self.all.allow() {
            emit(level, line);
            return;
        }
        if n == self.limit && self.all.allow() {
            warn!(
                "{}",
                Action::in_progress("log_budget").field("lines", self.limit).field("then", "not logged")
            );
        }
        self.unlogged.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn unlogged(&self) -> u32 {
        self.unlogged.load(Ordering::Relaxed)
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
    fn the_server_wide_budget_holds_a_flood_back_and_says_how_much_it_held() {
        let start = std::time::Instant::now();
        let mut bucket = Bucket::default();
        let burst = (0..PEER_LINES_BURST).map(|_| bucket.take(start)).filter(|&(allowed, _)| allowed).count();
        assert_eq!(burst, PEER_LINES_BURST as usize);
        // Past the burst, lines are held back and reported once a second.
        assert_eq!(bucket.take(start), (false, Some(1)));
        assert_eq!(bucket.take(start), (false, None));
        let later = start + Duration::from_millis(5);
        assert_eq!(bucket.take(later), (false, None), "half a token is not a line");
        // A second later the bucket has refilled at the stated rate.
        let second = start + Duration::from_secs(1);
        let (allowed, held) = bucket.take(second);
        assert!(allowed);
        assert_eq!(held, Some(2), "the lines held since the last report");
        let allowed =
            (1..PEER_LINES_PER_SECOND).map(|_| bucket.take(second)).filter(|&(allowed, _)| allowed).count();
        assert_eq!(allowed, PEER_LINES_PER_SECOND as usize - 1);
        assert!(!bucket.take(second).0);
        // A long quiet spell refills no more than the burst.
        let quiet = second + Duration::from_secs(3600);
        let (_, held) = bucket.take(quiet);
        assert_eq!(held, Some(1));
        let allowed =
            (1..2 * PEER_LINES_BURST).map(|_| bucket.take(quiet)).filter(|&(allowed, _)| allowed).count();
        assert_eq!(allowed, PEER_LINES_BURST as usize - 1);
    }
}
