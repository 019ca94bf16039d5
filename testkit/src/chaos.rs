//! Rounds under fire: the real `server` and `client` binaries as
//! processes, faults injected at random moments, and the outcome checked
//! against the agencies' files.
//!
//! A round starts the server and every agency but the last. Faults come
//! every few milliseconds, each one drawn from those the plan asks for:
//! the server killed with SIGKILL and started again on the same storage;
//! an agency killed with SIGKILL and started again, with the same or
//! another batch size; every connection cut, or frozen (half-open), by a
//! proxy between the agencies and the server. The first agencies upload,
//! finish and poll for the draw while the faults come; once the plan's
//! counts are reached the last agency starts, and faults go on, half as
//! often, through its upload, the draw and the answers, until every agency
//! has exited or three times the plan's faults are in.
//!
//! Then: every agency must have exited 0 with its expected number of
//! winners; the server is killed once more and the bets file compared
//! byte for byte with the agency files ([`crate::check`]); the server is
//! started again and asked, as each agency, for its winners, which must be
//! exactly the expected ones.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{self, Report};
use crate::proxy::Proxy;
use crate::winners::winners_of;
use crate::{AgencyBuilder, Process, RunningServer, ServerBuilder, Signal, EXIT_WITHIN};

/// Faults of each kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// The server killed with SIGKILL and started again.
    pub server_kills: usize,
    /// An agency killed with SIGKILL and started again.
    pub client_kills: usize,
    /// Every connection closed at once by the proxy.
    pub cuts: usize,
    /// Every connection left open but swallowing bytes.
    pub freezes: usize,
}

impl Faults {
    pub fn total(&self) -> usize {
        self.server_kills + self.client_kills + self.cuts + self.freezes
    }

    fn reached(&self, plan: &Faults) -> bool {
        self.server_kills >= plan.server_kills
            && self.client_kills >= plan.client_kills
            && self.cuts >= plan.cuts
            && self.freezes >= plan.freezes
    }

    fn add(&mut self, other: &Faults) {
        self.server_kills += other.server_kills;
        self.client_kills += other.client_kills;
        self.cuts += other.cuts;
        self.freezes += other.freezes;
    }
}

impl Faults {
    /// `(server kill -9: …, agency kill -9: …, connections cut: …, frozen: …)`
    pub fn breakdown(&self) -> String {
        format!(
            "(server kill -9: {}, agency kill -9: {}, connections cut: {}, frozen: {})",
            self.server_kills, self.client_kills, self.cuts, self.freezes
        )
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} faults {}", self.total(), self.breakdown())
    }
}

/// What a round is made of.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Rows of each agency's file.
    pub rows: Vec<usize>,
    /// Winners in each agency's file.
    pub winners: usize,
    pub seed: u64,
    /// At least these faults before the last agency starts.
    pub faults: Faults,
    /// Milliseconds between two faults, drawn from this range.
    pub interval_ms: (u64, u64),
    /// Where the round's storage goes (default: a temporary folder).
    pub storage_dir: Option<PathBuf>,
    /// Longest a round may take.
    pub timeout: Duration,
}

impl Plan {
    pub fn new(rows: Vec<usize>, faults: Faults, seed: u64) -> Plan {
        Plan {
            rows,
            winners: datagen::COURSE_WINNERS,
            seed,
            faults,
            interval_ms: (20, 120),
            storage_dir: None,
            timeout: Duration::from_secs(120),
        }
    }
}

/// When the server kills of a round came: a kill counts in every phase
/// that some agency was in at that moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KillPhases {
    /// An agency was uploading (or had not said "finished" yet).
    pub upload: usize,
    /// An agency had finished and was waiting for the draw.
    pub waiting: usize,
    /// The draw had run: agencies were getting their winners.
    pub drawn: usize,
}

/// How a round went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kills: KillPhases,
    pub injected: Faults,
    pub report: Report,
    pub elapsed: Duration,
    /// Groups the server could not write (a full disk, say) and refused.
    pub storage_failures: usize,
}

/// Runs one round of `plan`; an error says what went wrong, with logs.
pub fn run_round(plan: &Plan) -> Result<Outcome, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data = work.path().join("data");
    std::fs::create_dir(&data).map_err(|e| e.to_string())?;
    let winners = vec![plan.winners; plan.rows.len()];
    let agencies = datagen::generate(&data, &plan.rows, &winners, plan.seed).map_err(|e| e.to_string())?;
    let files: Vec<(u32, &Path)> = agencies.iter().map(|a| (a.agency, a.path.as_path())).collect();
    let expected = check::expected(&files);
    let storage_dir = plan.storage_dir.clone().unwrap_or_else(|| work.path().join("round"));
    std::fs::create_dir_all(&storage_dir).map_err(|e| e.to_string())?;

    let mut round = Round {
        server_settings: ServerBuilder::new(work.path())
            .agencies(agencies.len() as u32)
            .storage(storage_dir.join("bets.csv"))
            .env("SERVER_IDLE_TIMEOUT", "10s"),
        rng: ChaCha8Rng::seed_from_u64(plan.seed),
        work: work.path().to_path_buf(),
        server: None,
        proxy: None,
        clients: Vec::new(),
        storage_failures: 0,
        finished: std::collections::BTreeSet::new(),
        drawn: false,
        kills: KillPhases::default(),
    };
    round.start_server()?;
    if plan.faults.cuts + plan.faults.freezes > 0 {
        round.proxy = Some(Proxy::start(round.server_settings.addr()));
    }
    let started = Instant::now();
    for agency in &agencies[..agencies.len() - 1] {
        round.start_client(agency.agency, &agency.path, None)?;
    }
    let mut injected = Faults::default();
    let mut last_started = false;
    loop {
        if !last_started && injected.reached(&plan.faults) {
            let last = &agencies[agencies.len() - 1];
            round.start_client(last.agency, &last.path, None)?;
            last_started = true;
        }
        if last_started && round.clients.iter_mut().all(|c| c.process.try_exit().is_some()) {
            break;
        }
        if started.elapsed() > plan.timeout {
            return Err(format!(
                "the round did not end within {:?} ({injected}):\n{}",
                plan.timeout,
                round.logs()
            ));
        }
        // Once the last agency runs, faults come half as often, and stop at
        // three times the plan's: the round must also get to its end.
        let slower = if last_started { 2 } else { 1 };
        let pause = round.rng.random_range(plan.interval_ms.0..=plan.interval_ms.1) * slower;
        std::thread::sleep(Duration::from_millis(pause));
        if !last_started || injected.total() < 3 * plan.faults.total() {
            round.inject(&plan.faults, &mut injected, last_started)?;
        }
    }
    let elapsed = started.elapsed();
    let report = round.check(&expected)?;
    Ok(Outcome { kills: round.kills, injected, report, elapsed, storage_failures: round.storage_failures })
}

impl Round {
    /// Every agency exited 0 with its winners; after a last crash the bets
    /// file is exact, and the server, started again, serves each agency
    /// its winners.
    fn check(&mut self, expected: &check::Expected) -> Result<Report, String> {
        for client in &mut self.clients {
            let status = client.process.try_exit().expect("every agency has exited");
            let want = expected.winners[&client.agency].len().to_string();
            let got = client.process.actions().into_iter().find(|a| a.name == "consulta_ganadores");
            if !status.success() || got.as_ref().and_then(|a| a.get("cant_ganadores")) != Some(want.as_str())
            {
                let agency = client.agency;
                return Err(format!(
                    "agency {agency} exited with {status} and {got:?}, {want} winners expected:\n{}",
                    self.logs()
                ));
            }
        }
        // A last crash, then the file as it is on disk.
        self.kill_server();
        let bytes = std::fs::read(self.server_settings.storage_path()).map_err(|e| e.to_string())?;
        let report = check::compare(&bytes, expected);
        if !report.exact() {
            return Err(format!("the bets file is not exact: {report}"));
        }
        self.start_server()?;
        let credentials = self.server_settings.credentials_dir();
        for (&agency, documents) in &expected.winners {
            let address = self.server_settings.addr();
            let got =
                winners_of(address, agency, &credentials).map_err(|e| format!("agency {agency}: {e}"))?;
            if &got != documents {
                return Err(format!("agency {agency} is told {got:?}; its winners are {documents:?}"));
            }
        }
        self.stop_server()?;
        Ok(report)
    }
}

/// A campaign: several rounds, their faults and outcome added up.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub rounds: usize,
    pub completed: usize,
    pub faults: Faults,
    pub lost: usize,
    pub duplicated: usize,
}

impl Totals {
    pub fn add(&mut self, outcome: &Result<Outcome, String>) {
        self.rounds += 1;
        if let Ok(outcome) = outcome {
            self.completed += 1;
            self.faults.add(&outcome.injected);
            self.lost += outcome.report.lost;
            self.duplicated += outcome.report.duplicated;
        }
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "faults injected: {} {}, rounds completed: {}/{}, bets lost: {}, bets duplicated: {}",
            self.faults.total(),
            self.faults.breakdown(),
            self.completed,
            self.rounds,
            self.lost,
            self.duplicated
        )
    }
}

struct Client {
    agency: u32,
    data: PathBuf,
    process: Process,
}

/// The processes of a round.
struct Round {
    /// How the server starts, every time on the same port and storage.
    server_settings: ServerBuilder,
    rng: ChaCha8Rng,
    work: PathBuf,
    server: Option<RunningServer>,
    proxy: Option<Proxy>,
    /// The latest process of each agency started so far.
    clients: Vec<Client>,
    /// `store_bets | result: fail` lines of the servers gone so far.
    storage_failures: usize,
    /// Agencies whose "finished" the server recorded, from its log.
    finished: std::collections::BTreeSet<String>,
    /// The server logged its draw.
    drawn: bool,
    kills: KillPhases,
}

impl Round {
    fn start_server(&mut self) -> Result<(), String> {
        let server = self.server_settings.try_start().map_err(|e| e.to_string())?;
        self.server = Some(server);
        Ok(())
    }

    fn kill_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill();
            self.count_failures(&server);
        }
    }

    fn stop_server(&mut self) -> Result<(), String> {
        let mut server = self.server.take().expect("a server runs");
        let status = server.stop();
        self.count_failures(&server);
        status.success().then_some(()).ok_or_else(|| format!("the server exited with {status}"))
    }

    /// Counts the coming server kill in the phases the agencies are in.
    fn note_phase(&mut self) {
        let Some(server) = &mut self.server else { return };
        server.drain();
        for action in server.actions() {
            match action.name.as_str() {
                "agency_finished" => {
                    self.finished.insert(action.get("agency").unwrap_or_default().to_owned());
                }
                "sorteo" => self.drawn = true,
                _ => {}
            }
        }
        let started = self.clients.len();
        self.kills.upload += usize::from(started > self.finished.len());
        self.kills.waiting += usize::from(!self.finished.is_empty() && !self.drawn);
        self.kills.drawn += usize::from(self.drawn);
    }

    fn count_failures(&mut self, server: &Process) {
        self.storage_failures +=
            server.seen.iter().filter(|l| l.contains("action: store_bets | result: fail")).count();
    }

    fn address(&self) -> SocketAddr {
        match &self.proxy {
            Some(proxy) => proxy.addr,
            None => self.server_settings.addr(),
        }
    }

    /// Starts agency `agency` (again), with `max_amount` bets per batch or
    /// a random number of them.
    fn start_client(&mut self, agency: u32, data: &Path, max_amount: Option<usize>) -> Result<(), String> {
        let max_amount = max_amount.unwrap_or_else(|| self.rng.random_range(1..=120));
        let process = AgencyBuilder::new(&self.work, agency, self.address())
            .credentials(self.server_settings.credentials_dir())
            .loop_amount(100_000)
            .loop_period("0s")
            .log_level("INFO")
            .batch_max_amount(max_amount)
            .data_file(data)
            .env("CLI_REPLY_TIMEOUT", "1s")
            .env("CLI_RETRY_TIMEOUT", "60s")
            .start();
        let client = Client { agency, data: data.to_path_buf(), process };
        match self.clients.iter_mut().find(|c| c.agency == agency) {
            Some(old) => *old = client,
            None => self.clients.push(client),
        }
        Ok(())
    }

    /// One fault of a kind the plan asks for: until the last agency starts,
    /// only of a kind still short of the plan's count.
    fn inject(&mut self, plan: &Faults, injected: &mut Faults, any: bool) -> Result<(), String> {
        let wanted = [plan.server_kills, plan.client_kills, plan.cuts, plan.freezes];
        let done = [injected.server_kills, injected.client_kills, injected.cuts, injected.freezes];
        let kinds: Vec<u8> = (0..wanted.len())
            .filter(|&k| wanted[k] > 0 && (any || done[k] < wanted[k]))
            .map(|k| k as u8)
            .collect();
        if kinds.is_empty() {
            return Ok(());
        }
        match kinds[self.rng.random_range(0..kinds.len())] {
            0 => {
                self.note_phase();
                self.kill_server();
                let down = self.rng.random_range(0..30);
                std::thread::sleep(Duration::from_millis(down));
                self.start_server()?;
                injected.server_kills += 1;
            }
            1 => {
                let running: Vec<usize> = (0..self.clients.len())
                    .filter(|&i| self.clients[i].process.try_exit().is_none())
                    .collect();
                let Some(&i) = running.get(self.rng.random_range(0..running.len().max(1))) else {
                    return Ok(());
                };
                self.clients[i].process.signal(Signal::SIGKILL);
                self.clients[i].process.wait_exit(EXIT_WITHIN);
                let (agency, data) = (self.clients[i].agency, self.clients[i].data.clone());
                self.start_client(agency, &data, None)?;
                injected.client_kills += 1;
            }
            2 => {
                self.proxy.as_ref().expect("a proxy for cuts").cut_all();
                injected.cuts += 1;
            }
            _ => {
                self.proxy.as_ref().expect("a proxy for freezes").freeze_all();
                injected.freezes += 1;
            }
        }
        Ok(())
    }

    /// The server's and every agency's last lines, for a failure report;
    /// and how the server ended, if it has.
    fn logs(&mut self) -> String {
        let mut out = String::new();
        if let Some(server) = &mut self.server {
            let exited = server.try_exit();
            let lines = server.tail(15);
            out += &format!("--- server\n{lines}\n");
            if let Some(status) = exited {
                out += &format!("--- the server exited ({status}); its stderr:\n{}\n", server.stderr());
            }
        }
        for client in &mut self.clients {
            out += &format!("--- agency {}\n{}\n", client.agency, client.process.tail(15));
        }
        out
    }
}
