//! Power cuts around the operator's open and close: once round 1 is drawn,
//! the power goes out while `server admin open` moves it to `rounds/1/`
//! (at random moments of the move) and right after the opening was told;
//! then the agencies upload to round 2, the operator closes it in the
//! middle, and the power goes out right after the close was told.
//!
//! After each cut the server starts again and the disk is held to what
//! was told: round 1 stays whole and drawn, wherever it is (still at the
//! storage path, or in `rounds/1/`); an opening told is round 2 at the
//! storage path; a close told is in round 2's journal with the bets it
//! said, every bet acknowledged in round 2 is there, once, and nothing
//! after the close.

use std::process::{Command, Stdio};
use std::time::Duration;

use lottery::round::{CloseReason, Entry};
use rand::Rng;

use super::{Agencies, Moment, PowerFailure, Round, Told};
use crate::check;
use crate::winners::winners_in;
use crate::EXIT_WITHIN;

/// Cuts while the next round opens, at most this many times before the
/// opening is told.
const OPENING_CUTS: usize = 8;

impl Round {
    /// The phase after round 1: see the module documentation.
    pub(super) fn next_round(&mut self, agencies: &Agencies) -> Result<(), PowerFailure> {
        self.open_under_cuts(agencies)?;
        self.close_under_a_cut(agencies)
    }

    /// `server admin open` with the power cut at a random moment of it,
    /// until one opening is told; then a cut right after it.
    fn open_under_cuts(&mut self, agencies: &Agencies) -> Result<(), PowerFailure> {
        for _ in 0..OPENING_CUTS {
            let mut open = self.admin_command(&["open"]);
            let admin =
                open.stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_micros(self.rng.random_range(0..20_000)));
            self.power_out(Moment::Moving)?;
            let _ = wait_admin(admin);
            self.round_one_kept(agencies)?;
        }
        let opened = self.server.settings().admin(&["open"], &[]);
        let said = String::from_utf8_lossy(&opened.stdout).trim().to_owned();
        if said != "round 2 opened" {
            return Err(format!("open: {said} {}", String::from_utf8_lossy(&opened.stderr)).into());
        }
        self.power_out(Moment::Opened)?;
        self.round_one_kept(agencies)?;
        let journal =
            std::fs::read_to_string(self.disk.join("bets.csv.journal")).map_err(|e| e.to_string())?;
        match journal.lines().next().and_then(|line| Entry::parse(line).ok()) {
            Some(Entry::Round { number: 2, .. }) => Ok(()),
            other => Err(format!("round 2 opened was told; the storage holds {other:?}").into()),
        }
    }

    /// Round 2: the agencies upload, the operator closes it in the middle,
    /// and the power goes out right after the close was told.
    fn close_under_a_cut(&mut self, agencies: &Agencies) -> Result<(), PowerFailure> {
        self.clients = agencies
            .files
            .iter()
            .map(|(agency, path)| {
                let agency = self.server.agency(*agency).data_file(path).batch_max_amount(20);
                let agency = agency.loop_period("2ms").loop_amount(1_000_000).log_level("DEBUG");
                agency
                    .env("CLI_ROUND", 2)
                    .env("CLI_RETRY_TIMEOUT", "120s")
                    .env("CLI_REPLY_TIMEOUT", "5s")
                    .start()
            })
            .collect();
        self.clients[0].wait_for("bets 0..20 acknowledged", Duration::from_secs(30));
        let closed = self.server.settings().admin(&["close"], &[]);
        let said = String::from_utf8_lossy(&closed.stdout).trim().to_owned();
        let bets: u64 = said
            .strip_prefix("round 2 closed (operator): ")
            .and_then(|rest| rest.split(' ').next()?.parse().ok())
            .ok_or_else(|| format!("close: {said} {}", String::from_utf8_lossy(&closed.stderr)))?;
        let mut told = Told::default();
        for (client, (agency, _)) in self.clients.iter_mut().zip(&agencies.files) {
            client.drain();
            told.read(*agency, &client.seen);
        }
        self.power_out(Moment::Closed)?;
        self.round_two_closed(agencies, &told, bets)
    }

    /// Round 2 after its close was told and the power went out: the close
    /// with its bets, every acknowledged bet there once, nothing after;
    /// then every agency ends (left out or finished) with its winners of
    /// round 2, which the server serves the same.
    fn round_two_closed(&mut self, agencies: &Agencies, told: &Told, bets: u64) -> Result<(), PowerFailure> {
        let journal =
            std::fs::read_to_string(self.disk.join("bets.csv.journal")).map_err(|e| e.to_string())?;
        let closed = Entry::Closed { reason: CloseReason::Operator, bets };
        if !journal.lines().filter_map(|line| Entry::parse(line).ok()).any(|e| e == closed) {
            return Err(
                format!("the close of round 2 with {bets} bets was told, and is not in its journal").into()
            );
        }
        let held = self.held(agencies, told)?;
        if held.iter().sum::<u64>() != bets {
            return Err(format!("round 2 closed with {bets} bets; its file holds {held:?}").into());
        }
        let finished: Vec<u32> = journal
            .lines()
            .filter_map(|line| match Entry::parse(line) {
                Ok(Entry::Finished { agency, .. }) => Some(agency),
                _ => None,
            })
            .collect();
        let credentials = self.server.settings().credentials_dir();
        for (client, (agency, path)) in self.clients.iter_mut().zip(&agencies.files) {
            let status = client.wait_exit(EXIT_WITHIN);
            let stored = held[*agency as usize - 1];
            let rows = check::ordered_rows(*agency, path);
            // It fails unless it finished before the close.
            if status.success() != finished.contains(agency) {
                return Err(
                    format!("agency {agency} ({stored} of {} stored) ended {status}", rows.len()).into()
                );
            }
            let expected: Vec<String> =
                rows[..stored as usize].iter().filter_map(|row| winner_of(row)).collect();
            let served = winners_in(self.server.addr(), *agency, 2, &credentials, false)?;
            if served != expected {
                return Err(
                    format!("round 2, agency {agency}: served {served:?}, expected {expected:?}").into()
                );
            }
        }
        Ok(())
    }

    /// Round 1, after a cut while round 2 opened: whole and drawn, where the
    /// restarted server keeps it, and its winners served.
    fn round_one_kept(&mut self, agencies: &Agencies) -> Result<(), PowerFailure> {
        let kept = self.disk.join("rounds/1/bets.csv");
        let bets = if kept.exists() { kept } else { self.disk.join("bets.csv") };
        let bytes = std::fs::read(&bets).map_err(|e| format!("{}: {e}", bets.display()))?;
        let report = check::compare(&bytes, &agencies.expected);
        if !report.exact() {
            return Err(PowerFailure {
                lost: report.lost as u64,
                why: format!("round 1 after a cut: {report}"),
            });
        }
        let credentials = self.server.settings().credentials_dir();
        for (agency, _) in &agencies.files {
            let served = winners_in(self.server.addr(), *agency, 1, &credentials, true)?;
            if Some(&served) != agencies.expected.winners.get(agency) {
                return Err(format!("round 1, agency {agency}: served {served:?} after a cut").into());
            }
        }
        Ok(())
    }

    /// Round 2's bets of each agency on disk, checked against what was
    /// acknowledged and against each agency's first bets.
    fn held(&self, agencies: &Agencies, told: &Told) -> Result<Vec<u64>, PowerFailure> {
        let bets = self.disk.join("bets.csv");
        let found = lottery::storage::scan::scan(
            &lottery::storage::disk::OsDisk,
            &bets,
            agencies.files.len() as u32,
            &[],
        )
        .map_err(|e| e.to_string())?;
        let mut held = Vec::new();
        for (agency, prefixes) in &agencies.prefixes {
            let progress = found.agencies[*agency as usize - 1].progress;
            let acked = told.acked.get(agency).copied().unwrap_or(0);
            if progress.bets() < acked || prefixes.get(progress.bets() as usize) != Some(&progress) {
                return Err(PowerFailure {
                    lost: acked.saturating_sub(progress.bets()),
                    why: format!("round 2, agency {agency}: {acked} acknowledged, disk holds {progress}"),
                });
            }
            held.push(progress.bets());
        }
        Ok(held)
    }

    /// The command `server admin ARGS` of this server, as the operator.
    fn admin_command(&self, args: &[&str]) -> Command {
        let settings = self.server.settings();
        let mut command = Command::new(crate::binaries::binary("server"));
        let dir = settings.credentials_dir();
        command
            .env_clear()
            .env("SERVER_PORT", settings.port_number().to_string())
            .env("SERVER_TLS_CA", dir.join("ca.pem"))
            .env("SERVER_ADMIN_CERT", dir.join("operator.pem"))
            .env("SERVER_ADMIN_KEY", dir.join("operator.key"))
            .arg("admin")
            .args(args);
        command
    }
}

/// The DNI of a stored row if it won.
fn winner_of(row: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(row).ok()?.trim_end();
    let mut fields = text.rsplitn(3, ',');
    let number = fields.next()?;
    let _birthdate = fields.next()?;
    let rest = fields.next()?;
    let document = rest.rsplit(',').next()?;
    (number == lottery::WINNING_NUMBER.to_string()).then(|| document.to_owned())
}

/// Waits for a spawned `server admin` to end, whatever it says.
fn wait_admin(mut admin: std::process::Child) -> Option<std::process::ExitStatus> {
    for _ in 0..200 {
        if let Ok(Some(status)) = admin.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = admin.kill();
    admin.wait().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_winning_row_gives_its_document() {
        assert_eq!(winner_of(b"3,Ana,\"Paz, la\",0123,1999-03-17,7574\n").as_deref(), Some("0123"));
        assert_eq!(winner_of(b"3,Ana,Paz,0123,1999-03-17,7575\n"), None);
    }
}
