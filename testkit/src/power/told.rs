//! What the agencies were told before a power cut: read from their own
//! log lines (at DEBUG, an agency logs each ack and its Finished's).

use std::collections::BTreeMap;

/// What the agencies were told before a cut, from their own log lines.
#[derive(Debug, Default, Clone)]
pub struct Told {
    /// Bets acknowledged, per agency: the ordinal the acks reached.
    pub acked: BTreeMap<u32, u64>,
    /// Agencies whose Finished was acknowledged.
    pub finished: Vec<u32>,
    /// Whether any agency was told its winners.
    pub winners: bool,
}

impl Told {
    /// Reads what `agency` logged (at DEBUG) so far.
    pub fn read(&mut self, agency: u32, lines: &[String]) {
        for line in lines {
            if let Some(end) = acked_up_to(line) {
                let acked = self.acked.entry(agency).or_default();
                *acked = (*acked).max(end);
            } else if line.contains("finished with") && line.ends_with("acknowledged") {
                if !self.finished.contains(&agency) {
                    self.finished.push(agency);
                }
            } else if line.contains("action: consulta_ganadores | result: success") {
                self.winners = true;
            }
        }
    }
}

/// `Y` of a line `… bets X..Y acknowledged`.
fn acked_up_to(line: &str) -> Option<u64> {
    let range = line.strip_suffix(" acknowledged")?.rsplit_once("bets ")?.1;
    range.split_once("..")?.1.parse().ok()
}
