//! Where the lottery stands, as one model: the operator's `status` (a
//! table, or JSON with `--json`) and, with it, every other view of the
//! round read the same [`Status`].

use serde::{Deserialize, Serialize};

use lottery::round::Stage;

use crate::agencies::Agencies;

/// The open round (or the last one, drawn, until the next opens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Its number in the storage folder: 1, 2, 3…
    pub round: u64,
    /// `open`, `closed` or `drawn`.
    pub state: String,
    /// Why it closed (`deadline`, `operator`, `all_finished`), once it did.
    pub reason: Option<String>,
    /// When it opened, and when its time is up if it has a deadline (RFC
    /// 3339, UTC).
    pub opened: String,
    pub closes: Option<String>,
    /// Agencies it expects, and how many of them have finished.
    pub expected: u32,
    pub finished: u32,
    /// Bets stored, all agencies together.
    pub bets: u64,
    /// Winners in all, once drawn.
    pub winners: Option<usize>,
    pub agencies: Vec<AgencyStatus>,
}

/// One agency of the round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgencyStatus {
    pub agency: u32,
    pub stored: u64,
    pub finished: bool,
    /// A connection speaks for it now.
    pub connected: bool,
    /// Its winners, once drawn.
    pub winners: Option<usize>,
}

impl Status {
    /// The round as the board and the agencies' connections hold it now.
    pub fn of(agencies: &Agencies) -> Status {
        let board = &agencies.board;
        let view = board.view();
        let connected = agencies.connected();
        let agencies: Vec<AgencyStatus> = (1..=board.expected())
            .zip(connected)
            .map(|(agency, connected)| {
                let (stored, finished) = board.agency(agency);
                let winners = view.winners.as_ref().map(|w| w.of(agency).len());
                AgencyStatus { agency, stored, finished, connected, winners }
            })
            .collect();
        let reason = match view.stage {
            Stage::Open => None,
            Stage::Closed(reason) | Stage::Drawn(reason) => Some(reason.as_str().to_owned()),
        };
        Status {
            round: view.number,
            state: view.stage.as_str().to_owned(),
            reason,
            opened: time(view.opened),
            closes: view.closes.map(time),
            expected: board.expected(),
            finished: board.finished(),
            bets: agencies.iter().map(|a| a.stored).sum(),
            winners: view.winners.as_ref().map(|w| w.count()),
            agencies,
        }
    }

    /// One JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a status always serializes")
    }

    /// A table for people: the round on one line, then one line per agency.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let reason = self.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        let _ = writeln!(out, "round {}: {}{reason}", self.round, self.state);
        let _ = writeln!(out, "opened {}", self.opened);
        if let Some(closes) = &self.closes {
            let _ = writeln!(out, "closes {closes}");
        }
        let winners = self.winners.map(|w| format!(", {w} winners")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{} bets; {}/{} agencies finished{winners}",
            self.bets, self.finished, self.expected
        );
        let _ = writeln!(
            out,
            "{:>8} {:>12} {:>9} {:>10} {:>8}",
            "agency", "stored", "finished", "connected", "winners"
        );
        for a in &self.agencies {
            let winners = a.winners.map_or_else(|| "-".to_owned(), |w| w.to_string());
            let yes = |b: bool| if b { "yes" } else { "no" };
            let (finished, connected) = (yes(a.finished), yes(a.connected));
            let _ = writeln!(
                out,
                "{:>8} {:>12} {:>9} {:>10} {:>8}",
                a.agency, a.stored, finished, connected, winners
            );
        }
        out
    }
}

/// Milliseconds since the Unix epoch as RFC 3339, to the second, in UTC.
fn time(millis: u64) -> String {
    let seconds = i64::try_from(millis / 1000).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_second(seconds) {
        Ok(at) => at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => format!("{millis} ms since the Unix epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
        assert_eq!(time(1_796_393_999_999), "2026-12-04T14:19:59Z");
    }
}
