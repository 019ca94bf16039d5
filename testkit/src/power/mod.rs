//! Power cuts under the real server.
//!
//! The server's storage lives on a lazy filesystem ([`lazyfs`]) that keeps
//! whatever was not synced in memory; five agencies upload their files
//! over TLS; the power is cut again and again, each time by killing the
//! server with SIGKILL and cutting the filesystem at once, so that only
//! what was synced survives; then the server starts again on what is
//! left, and the agencies, which reconnect and resume, go on.
//!
//! Cuts come at random moments of the upload (in the middle of a group,
//! between a group's sync and its acks), right after the round opens, right
//! after an agency's Finished is recorded, and right after the draw; then,
//! with [`PowerPlan::next_round`], around the operator's opening of round 2
//! and close of it ([`next`]). After
//! each, before the server starts again, the disk is held to what the
//! agencies were told ([`Told`]): every bet acknowledged to an agency is
//! there, exactly once and in its place; every Finished acknowledged is in
//! the journal; a round whose winners were told to anyone is drawn. At the
//! end every agency must have exited 0 with its winners, the bets file
//! must be exactly the agencies' valid bets, and the server, started once
//! more, must serve each agency its winners.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lazyfs::LazyFs;
use lottery::round::Entry;
use lottery::storage::disk::OsDisk;
use lottery::storage::scan::scan;
use lottery::Progress;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{self, Report};

mod next;
mod told;
use crate::{Process, RunningServer, ServerBuilder, EXIT_WITHIN};
pub use told::Told;

/// A round of power cuts.
#[derive(Debug, Clone)]
pub struct PowerPlan {
    /// Rows of each agency's file.
    pub rows: Vec<usize>,
    /// Power cuts to make, at least.
    pub cuts: usize,
    /// The agencies' pause between two batches (`loop.period`): a longer
    /// one stretches the upload over more cuts.
    pub pause: Duration,
    pub seed: u64,
    /// Then round 2, with cuts around its opening and its close
    /// ([`next`]).
    pub next_round: bool,
}

/// When a cut came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Moment {
    /// Right after the round opened (its files just created).
    RoundOpened,
    /// At a random moment while agencies upload.
    Upload,
    /// Right after an agency's Finished was recorded.
    Finished,
    /// Right after the draw.
    Drawn,
    /// At a random moment after the draw, while winners are served.
    AfterDraw,
    /// At a random moment of the operator's `open`: round 1 moving to
    /// `rounds/1/`, round 2 starting.
    Moving,
    /// Right after the opening of round 2 was told.
    Opened,
    /// Right after the operator's close of round 2, in the middle of its
    /// upload, was told.
    Closed,
}

/// How a round of power cuts went.
#[derive(Debug, Clone)]
pub struct PowerOutcome {
    pub cuts: BTreeMap<Moment, usize>,
    pub report: Report,
    pub elapsed: Duration,
}

impl PowerOutcome {
    pub fn total(&self) -> usize {
        self.cuts.values().sum()
    }
}

/// Rounds of power cuts, added up.
#[derive(Debug, Default, Clone)]
pub struct PowerTotals {
    pub rounds: usize,
    pub completed: usize,
    pub cuts: BTreeMap<Moment, usize>,
    /// Acknowledged bets found missing after a cut.
    pub lost: u64,
    pub duplicated: usize,
}

impl PowerTotals {
    pub fn add(&mut self, outcome: &Result<PowerOutcome, PowerFailure>) {
        self.rounds += 1;
        match outcome {
            Ok(outcome) => {
                self.completed += 1;
                self.duplicated += outcome.report.duplicated;
                outcome.cuts.iter().for_each(|(m, n)| *self.cuts.entry(*m).or_default() += n);
            }
            Err(failure) => self.lost += failure.lost,
        }
    }
}

impl fmt::Display for PowerTotals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let moments: Vec<String> = self.cuts.iter().map(|(m, n)| format!("{m:?}: {n}")).collect();
        write!(
            f,
            "power cuts: {} ({}), rounds completed: {}/{}, acknowledged bets lost: {}, bets duplicated: {}",
            self.cuts.values().sum::<usize>(),
            moments.join(", "),
            self.completed,
            self.rounds,
            self.lost,
            self.duplicated
        )
    }
}

/// Why a round of power cuts failed.
#[derive(Debug, Clone)]
pub struct PowerFailure {
    /// Acknowledged bets missing after a cut (0 for other failures).
    pub lost: u64,
    pub why: String,
}

impl From<String> for PowerFailure {
    fn from(why: String) -> PowerFailure {
        PowerFailure { lost: 0, why }
    }
}

impl fmt::Display for PowerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

impl fmt::Display for PowerOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let moments: Vec<String> = self.cuts.iter().map(|(m, n)| format!("{m:?}: {n}")).collect();
        write!(
            f,
            "{} power cuts ({}) in {:.1} s; {}",
            self.total(),
            moments.join(", "),
            self.elapsed.as_secs_f64(),
            self.report
        )
    }
}

/// The agencies' files and what their bets are, in order.
struct Agencies {
    files: Vec<(u32, PathBuf)>,
    /// The progress of the first k bets of each agency, for every k.
    prefixes: BTreeMap<u32, Vec<Progress>>,
    expected: check::Expected,
}

impl Agencies {
    fn generate(data: &Path, plan: &PowerPlan) -> Result<Agencies, String> {
        let winners = vec![3; plan.rows.len()];
        let made = datagen::generate(data, &plan.rows, &winners, plan.seed).map_err(|e| e.to_string())?;
        let files: Vec<(u32, PathBuf)> = made.iter().map(|a| (a.agency, a.path.clone())).collect();
        let mut prefixes = BTreeMap::new();
        for (agency, path) in &files {
            let mut progress = Progress::default();
            let mut all = vec![progress];
            for row in check::ordered_rows(*agency, path) {
                progress.push(&row);
                all.push(progress);
            }
            prefixes.insert(*agency, all);
        }
        let paths: Vec<(u32, &Path)> = files.iter().map(|(a, p)| (*a, p.as_path())).collect();
        Ok(Agencies { expected: check::expected(&paths), files, prefixes })
    }
}

/// Runs one round of power cuts in `work` (a fresh folder).
pub fn run_power_round(plan: &PowerPlan, work: &Path) -> Result<PowerOutcome, PowerFailure> {
    let started = Instant::now();
    let (data, disk, mnt) = (work.join("data"), work.join("disk"), work.join("mnt"));
    for dir in [&data, &disk, &mnt] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let agencies = Agencies::generate(&data, plan)?;
    let fs = LazyFs::mount(&disk, &mnt).map_err(|e| format!("cannot mount the lazy filesystem: {e}"))?;
    let settings = ServerBuilder::new(work)
        .agencies(agencies.files.len() as u32)
        .storage(mnt.join("bets.csv"))
        .env("SERVER_IDLE_TIMEOUT", "10s");
    let mut round = Round {
        rng: ChaCha8Rng::seed_from_u64(plan.seed),
        server: settings.try_start().map_err(|e| e.to_string())?,
        clients: Vec::new(),
        fs,
        disk,
        cuts: BTreeMap::new(),
    };
    // Right after the round opens: its files were just created.
    round.cut(Moment::RoundOpened, &agencies)?;
    round.clients = agencies
        .files
        .iter()
        .map(|(agency, path)| {
            round
                .server
                .agency(*agency)
                .data_file(path)
                .batch_max_amount(80)
                .loop_period(&edge::duration::GoDuration(plan.pause).to_string())
                .loop_amount(1_000_000)
                .log_level("DEBUG")
                .env("CLI_RETRY_TIMEOUT", "120s")
                .env("CLI_REPLY_TIMEOUT", "5s")
                .start()
        })
        .collect();
    while round.total() < plan.cuts || !round.cuts.contains_key(&Moment::Drawn) {
        let moment = round.next_moment(agencies.files.len());
        round.cut(moment, &agencies)?;
        if round.total() > 4 * plan.cuts {
            let tails: Vec<String> = round.clients.iter_mut().map(|c| c.tail(6)).collect();
            return Err(PowerFailure::from(format!(
                "{} cuts and the round has not drawn yet; the server:\n{}\nthe agencies:\n{}",
                round.total(),
                round.server.tail(10),
                tails.join("\n--\n")
            )));
        }
    }
    round.finish(&agencies)?;
    let report = round.report(&agencies)?;
    if plan.next_round {
        round.next_round(&agencies)?;
    }
    round.server.stop();
    Ok(PowerOutcome { report, cuts: round.cuts.clone(), elapsed: started.elapsed() })
}

/// A round of power cuts under way.
struct Round {
    rng: ChaCha8Rng,
    server: RunningServer,
    clients: Vec<Process>,
    fs: LazyFs,
    disk: PathBuf,
    cuts: BTreeMap<Moment, usize>,
}

impl Round {
    fn total(&self) -> usize {
        self.cuts.values().sum()
    }

    /// Waits for the moment of the next cut, and says which it is: right
    /// after the draw once the last agencies are about to finish (or when a
    /// server drew as it started), right after a Finished now and then,
    /// else a random moment.
    fn next_moment(&mut self, agencies: usize) -> Moment {
        let (finished, drawn) = self.progress();
        let drew_at_start = self.server.seen.iter().any(|l| l.contains("action: sorteo"));
        if drew_at_start && !self.cuts.contains_key(&Moment::Drawn) {
            return Moment::Drawn;
        }
        let event = if drawn {
            None
        } else if finished + 2 >= agencies && !self.cuts.contains_key(&Moment::Drawn) {
            // The last two may finish in one group: wait for the draw itself.
            Some(("action: sorteo", Moment::Drawn, Duration::from_secs(5)))
        } else if self.rng.random_ratio(1, 5) {
            Some(("action: agency_finished", Moment::Finished, Duration::from_millis(500)))
        } else {
            None
        };
        if let Some((line, moment, within)) = event {
            if self.server.wait_for_line(line, within) {
                return moment;
            }
        }
        std::thread::sleep(Duration::from_millis(self.rng.random_range(2..60)));
        if self.progress().1 {
            Moment::AfterDraw
        } else {
            Moment::Upload
        }
    }

    /// How many agencies have finished, and whether the round is drawn, as
    /// the running server has said.
    fn progress(&mut self) -> (usize, bool) {
        self.server.drain();
        let recovered = self.server.action("recover");
        let mut finished: usize =
            recovered.as_ref().and_then(|r| r.get("finished")?.parse().ok()).unwrap_or(0);
        let mut drawn = recovered.as_ref().is_some_and(|r| r.get("state") == Some("drawn"));
        for line in &self.server.seen {
            finished += usize::from(line.contains("action: agency_finished"));
            drawn |= line.contains("action: sorteo");
        }
        (finished, drawn)
    }

    /// Cuts the power now (the server killed, the filesystem cut), holds
    /// the disk to what the agencies were told, and starts the server
    /// again on what survived.
    fn cut(&mut self, moment: Moment, agencies: &Agencies) -> Result<(), PowerFailure> {
        self.power_off(moment);
        let mut told = Told::default();
        for (client, (agency, _)) in self.clients.iter_mut().zip(&agencies.files) {
            client.drain();
            told.read(*agency, &client.seen);
        }
        let total = self.total();
        self.check_disk(&told, agencies).map_err(|e| PowerFailure {
            lost: e.lost,
            why: format!("after cut {total} ({moment:?}): {}", e.why),
        })?;
        self.power_on(moment)
    }

    /// Cuts the power now: the server killed, the filesystem cut.
    fn power_off(&mut self, moment: Moment) {
        self.server.kill();
        self.fs.power_cut();
        *self.cuts.entry(moment).or_default() += 1;
    }

    /// Starts the server again on what survived the cut at `moment`.
    fn power_on(&mut self, moment: Moment) -> Result<(), PowerFailure> {
        let settings = self.server.settings().clone();
        self.server =
            settings.try_start().map_err(|e| format!("after cut {} ({moment:?}): {e}", self.total()))?;
        Ok(())
    }

    /// A cut, and the server started again at once.
    fn power_out(&mut self, moment: Moment) -> Result<(), PowerFailure> {
        self.power_off(moment);
        self.power_on(moment)
    }

    /// What survived on the disk against what the agencies were told.
    fn check_disk(&self, told: &Told, agencies: &Agencies) -> Result<(), PowerFailure> {
        let bets = self.disk.join("bets.csv");
        let journal = self.disk.join("bets.csv.journal");
        if !journal.exists() {
            let lost: u64 = told.acked.values().sum();
            return match lost {
                0 => Ok(()),
                lost => {
                    Err(PowerFailure { lost, why: "bets were acknowledged, and no round survived".into() })
                }
            };
        }
        let found = scan(&OsDisk, &bets, agencies.files.len() as u32, &[]).map_err(|e| e.to_string())?;
        for (agency, prefixes) in &agencies.prefixes {
            let held = found.agencies[*agency as usize - 1].progress;
            let acked = told.acked.get(agency).copied().unwrap_or(0);
            if held.bets() < acked {
                let why = format!("agency {agency}: {acked} bets acknowledged, {} on disk", held.bets());
                return Err(PowerFailure { lost: acked - held.bets(), why });
            }
            if prefixes.get(held.bets() as usize) != Some(&held) {
                return Err(format!(
                    "agency {agency}: the {} bets on disk are not its first ones, once each",
                    held.bets()
                )
                .into());
            }
        }
        let text = std::fs::read_to_string(&journal).map_err(|e| e.to_string())?;
        let entries: Vec<Entry> = text.lines().filter_map(|line| Entry::parse(line).ok()).collect();
        for agency in &told.finished {
            if !entries.iter().any(|e| matches!(e, Entry::Finished { agency: a, .. } if a == agency)) {
                return Err(format!(
                    "agency {agency}'s Finished was acknowledged, and is not in the journal"
                )
                .into());
            }
        }
        if told.winners && !entries.iter().any(|e| matches!(e, Entry::Drawn { .. })) {
            return Err(String::from("winners were told, and the draw is not in the journal").into());
        }
        Ok(())
    }

    /// Lets the agencies finish: each must exit 0 with its winners.
    fn finish(&mut self, agencies: &Agencies) -> Result<(), PowerFailure> {
        for (client, (agency, _)) in self.clients.iter_mut().zip(&agencies.files) {
            let deadline = Instant::now() + EXIT_WITHIN;
            let status = loop {
                if let Some(status) = client.try_exit() {
                    break status;
                }
                if Instant::now() > deadline {
                    return Err(format!("agency {agency} still runs:\n{}", client.tail(20)).into());
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let told =
                client.action("consulta_ganadores").and_then(|a| a.get("cant_ganadores").map(str::to_owned));
            let winners = agencies.expected.winners.get(agency).map_or(0, Vec::len).to_string();
            if !status.success() || told.as_deref() != Some(winners.as_str()) {
                return Err(format!("agency {agency} ended with {status}:\n{}", client.tail(20)).into());
            }
        }
        Ok(())
    }

    /// The bets file against the agencies' files, and the winners the
    /// server serves, after one last cut.
    fn report(&mut self, agencies: &Agencies) -> Result<Report, PowerFailure> {
        self.cut(Moment::AfterDraw, agencies)?;
        let bets = std::fs::read(self.disk.join("bets.csv")).map_err(|e| e.to_string())?;
        let report = check::compare(&bets, &agencies.expected);
        if !report.exact() {
            return Err(PowerFailure { lost: report.lost as u64, why: report.to_string() });
        }
        let credentials = self.server.settings().credentials_dir();
        for (agency, _) in &agencies.files {
            let served = crate::winners::winners_of(self.server.addr(), *agency, &credentials)?;
            let expected = agencies.expected.winners.get(agency).cloned().unwrap_or_default();
            if served != expected {
                return Err(format!("agency {agency}: served {served:?}, expected {expected:?}").into());
            }
        }
        Ok(report)
    }
}
