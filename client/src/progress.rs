//! How far an agency has got, and the `progreso` lines that say so: its
//! bets acknowledged and their share of its file (the bytes up to the last
//! bet acknowledged: nothing is read twice to count rows), at most every
//! 10 % of the file and at least every 5 s while it uploads, and once when
//! it starts waiting for the draw.

use std::time::{Duration, Instant};

use edge::log::Action;
use tracing::info;

/// A `progreso` line at least this often while bets are acknowledged.
pub const SAY_AT_LEAST_EVERY: Duration = Duration::from_secs(5);

/// Percentage points of the file between two `progreso` lines, at most.
pub const SAY_EVERY_PERCENT: u64 = 10;

/// How far an agency has got.
#[derive(Debug)]
pub struct Progress {
    /// The last sign of progress: an ack, a "finished", a winners answer.
    pub at: Instant,
    id: u32,
    /// Bytes of its file: what a share is of.
    size: u64,
    /// Bytes of its file up to the last bet acknowledged.
    end: u64,
    /// The share (percent) and the time of the last line.
    said: Option<(u64, Instant)>,
    said_waiting: bool,
}

impl Progress {
    /// The progress of agency `id`, whose file holds `size` bytes.
    pub fn new(id: u32, size: u64) -> Progress {
        Progress { at: Instant::now(), id, size: size.max(1), end: 0, said: None, said_waiting: false }
    }

    /// The bets up to `acked` are acknowledged, the last of them on a row
    /// that ends `end` bytes into the file.
    pub fn acked(&mut self, acked: u64, end: u64) {
        let now = Instant::now();
        self.at = now;
        self.end = self.end.max(end);
        let share = self.share();
        let due = match self.said {
            None => true,
            Some((said, at)) => share >= said + SAY_EVERY_PERCENT || now - at >= SAY_AT_LEAST_EVERY,
        };
        if due {
            self.said = Some((share, now));
            info!("{}", self.line(acked, share));
        }
    }

    /// It waits for the draw, holding `acked` bets: said once. Once it
    /// has `finished`, all of its file is behind it.
    pub fn waiting(&mut self, acked: u64, finished: bool) {
        if !std::mem::replace(&mut self.said_waiting, true) {
            let share = if finished { 100 } else { self.share() };
            info!("{}", self.line(acked, share).field("waiting", "the draw"));
        }
    }

    /// Percent of the file up to the last bet acknowledged.
    fn share(&self) -> u64 {
        (self.end.saturating_mul(100) / self.size).min(100)
    }

    fn line(&self, acked: u64, share: u64) -> Action {
        Action::in_progress("progreso")
            .field("client_id", self.id)
            .field("acked", acked)
            .field("share", format!("{share}%"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_every_ten_percent_at_most() {
        // A thousand rows of 45 bytes.
        let mut progress = Progress::new(1, 45_000);
        let lines: Vec<bool> = (1..=1000)
            .map(|acked| {
                let before = progress.said;
                progress.acked(acked, acked * 45);
                progress.said != before
            })
            .collect();
        let said = lines.iter().filter(|&&l| l).count();
        assert!((10..=11).contains(&said), "{said} lines for a file, fast");
    }

    #[test]
    fn the_share_is_of_the_files_bytes_and_full_once_finished() {
        let mut progress = Progress::new(1, 1000);
        progress.acked(10, 250);
        assert_eq!(progress.share(), 25);
        progress.acked(12, 200);
        assert_eq!(progress.share(), 25, "never backwards");
        progress.acked(40, 1000);
        assert_eq!(progress.share(), 100);
        assert_eq!(Progress::new(1, 0).share(), 0, "an empty file is no division by zero");
    }
}
