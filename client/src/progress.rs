//! How far an agency has got, and the `progreso` lines that say so: its
//! bets acknowledged and their share of its file, at most every 10 % of
//! the file and at least every 5 s while it uploads, and once when it
//! starts waiting for the draw.

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
    /// Rows of its file (bets, valid or not): what a share is of.
    rows: u64,
    /// The share (percent) and the time of the last line.
    said: Option<(u64, Instant)>,
    said_waiting: bool,
}

impl Progress {
    pub fn new(id: u32, rows: u64) -> Progress {
        Progress { at: Instant::now(), id, rows: rows.max(1), said: None, said_waiting: false }
    }

    /// The bets up to `acked` are acknowledged.
    pub fn acked(&mut self, acked: u64) {
        let now = Instant::now();
        self.at = now;
        let share = (acked.saturating_mul(100) / self.rows).min(100);
        let due = match self.said {
            None => true,
            Some((said, at)) => share >= said + SAY_EVERY_PERCENT || now - at >= SAY_AT_LEAST_EVERY,
        };
        if due {
            self.said = Some((share, now));
            info!("{}", self.line(acked, share));
        }
    }

    /// It waits for the draw, holding `acked` bets: said once.
    pub fn waiting(&mut self, acked: u64) {
        if !std::mem::replace(&mut self.said_waiting, true) {
            let share = (acked.saturating_mul(100) / self.rows).min(100);
            info!("{}", self.line(acked, share).field("waiting", "the draw"));
        }
    }

    fn line(&self, acked: u64, share: u64) -> Action {
        Action::in_progress("progreso")
            .field("client_id", self.id)
            .field("acked", acked)
            .field("share", format!("{share}%"))
    }
}

/// The rows of the file at `path` (its line ends, and a last line without
/// one): quick, and read before the upload.
pub fn count_rows(path: &std::path::Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    let (mut rows, mut last) = (0u64, b'\n');
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(rows + u64::from(last != b'\n'));
        }
        rows += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        last = buf[n - 1];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_counted_with_or_without_a_last_line_end() {
        let dir = tempfile::tempdir().unwrap();
        for (text, rows) in [("", 0), ("a\n", 1), ("a\nb", 2), ("a\r\nb\r\n", 2)] {
            let path = dir.path().join("f.csv");
            std::fs::write(&path, text).unwrap();
            assert_eq!(count_rows(&path).unwrap(), rows, "{text:?}");
        }
    }

    #[test]
    fn a_line_every_ten_percent_at_most() {
        let mut progress = Progress::new(1, 1000);
        let lines: Vec<bool> = (1..=1000)
            .map(|acked| {
                let before = progress.said;
                progress.acked(acked);
                progress.said != before
            })
            .collect();
        let said = lines.iter().filter(|&&l| l).count();
        assert!((10..=11).contains(&said), "{said} lines for a file, fast");
    }
}
