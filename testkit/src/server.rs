//! The real `server` binary started the way every test, the benchmark and
//! the chaos campaign start it: [`ServerBuilder`] says how, [`RunningServer`]
//! is the process once it listens.
//!
//! ```no_run
//! use testkit::{ServerBuilder, Signal};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut server = ServerBuilder::new(dir.path()).agencies(2).env("SERVER_IDLE_TIMEOUT", "10s").start();
//! let mut agency = server.agency(1).data_file(dir.path().join("agency-1.csv")).start();
//! agency.wait_exit(testkit::EXIT_WITHIN);
//! assert!(server.stop().success());
//! assert!(server.has_action("join_sessions", "success"));
//! ```

use std::cell::Cell;
use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use crate::agency::AgencyBuilder;
use crate::process::{Process, Signal};
use crate::program::Program;
use crate::{credentials, free_port, EXIT_WITHIN, START_WITHIN};

/// How to start the real server: its folder, port, agencies, storage, log
/// level, credentials and any other setting of its environment.
///
/// The environment holds exactly what the builder says: `SERVER_PORT`
/// (a free port, kept once a server listened on it, so that every later
/// start of one builder listens on the same port), `SERVER_LISTEN_BACKLOG`
/// (128), `LOGGING_LEVEL`
/// (INFO), `SERVER_AGENCIES` (the course's five), `SERVER_STORAGE_PATH`
/// (`bets.csv` in the folder), `SERVER_HTTP_ADDRESS` (a free port of
/// `127.0.0.1`), the TLS credentials (the tests' shared ones,
/// [`credentials::shared`]) and what [`ServerBuilder::env`] adds or
/// replaces. Starting twice starts a second server on the same storage:
/// that is how a test restarts one.
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    /// Working where it would find `config.ini`.
    program: Program,
    /// A port chosen here may be taken by the time the server binds it
    /// (another test's connection, another test run): then the first start
    /// takes another one.
    port: Cell<u16>,
    /// The port is the caller's ([`ServerBuilder::port`]), or a server
    /// listened on it: it is kept.
    port_kept: Cell<bool>,
    agencies: u32,
    storage: PathBuf,
    /// False for [`ServerBuilder::bare`]: only what [`ServerBuilder::env`]
    /// sets in the environment.
    settings: bool,
    ready_within: Duration,
}

impl ServerBuilder {
    /// A server working in `dir`, its round in `dir/bets.csv`.
    pub fn new(dir: impl AsRef<Path>) -> ServerBuilder {
        let dir = dir.as_ref().to_path_buf();
        ServerBuilder {
            storage: dir.join("bets.csv"),
            program: Program::new("server", dir),
            port: Cell::new(free_port()),
            port_kept: Cell::new(false),
            agencies: datagen::COURSE_ROWS.len() as u32,
            settings: true,
            ready_within: START_WITHIN,
        }
    }

    /// A server with nothing in its environment but what
    /// [`ServerBuilder::env`] adds: for tests of its configuration (a file
    /// in `dir`, a bad setting).
    pub fn bare(dir: impl AsRef<Path>) -> ServerBuilder {
        ServerBuilder { settings: false, ..ServerBuilder::new(dir) }
    }

    /// The number of agencies that must finish before the draw.
    pub fn agencies(mut self, agencies: u32) -> ServerBuilder {
        self.agencies = agencies;
        self
    }

    pub fn port(self, port: u16) -> ServerBuilder {
        self.port.set(port);
        self.port_kept.set(true);
        self
    }

    pub fn backlog(self, backlog: u32) -> ServerBuilder {
        self.env("SERVER_LISTEN_BACKLOG", backlog)
    }

    /// `LOGGING_LEVEL`; below INFO the server says nothing when it listens,
    /// so [`ServerBuilder::start`] then knows it by connecting.
    pub fn log_level(self, level: &str) -> ServerBuilder {
        self.env("LOGGING_LEVEL", level)
    }

    /// The bets file (the round's other files go beside it).
    pub fn storage(mut self, path: impl AsRef<Path>) -> ServerBuilder {
        self.storage = path.as_ref().to_path_buf();
        self
    }

    /// The folder of credentials that `scripts/credentials.sh` made.
    pub fn credentials(mut self, dir: impl AsRef<Path>) -> ServerBuilder {
        self.program.credentials = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Sets `key` in the server's environment (replacing what the builder
    /// would put there); an empty value is a value, as the server reads it.
    pub fn env(mut self, key: &str, value: impl fmt::Display) -> ServerBuilder {
        self.program.set(key, value);
        self
    }

    /// The binary to run (default: the project's, see
    /// [`crate::binaries::binary`]).
    pub fn binary(mut self, path: impl AsRef<Path>) -> ServerBuilder {
        self.program.binary = Some(path.as_ref().to_path_buf());
        self
    }

    /// How long [`ServerBuilder::start`] waits for the server to listen
    /// (default [`START_WITHIN`]; a large round takes longer to recover).
    pub fn ready_within(mut self, within: Duration) -> ServerBuilder {
        self.ready_within = within;
        self
    }

    pub fn port_number(&self) -> u16 {
        self.port.get()
    }

    /// Where the server listens: `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port.get()))
    }

    pub fn storage_path(&self) -> &Path {
        &self.storage
    }

    pub fn dir(&self) -> &Path {
        &self.program.dir
    }

    /// The folder of the credentials the server uses.
    pub fn credentials_dir(&self) -> PathBuf {
        self.program.credentials_dir(self.agencies)
    }

    /// The server's whole environment, in order.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if self.settings {
            env.extend([
                ("SERVER_PORT", self.port.get().to_string()),
                ("SERVER_LISTEN_BACKLOG", "128".to_owned()),
                ("LOGGING_LEVEL", "INFO".to_owned()),
                ("SERVER_AGENCIES", self.agencies.to_string()),
                ("SERVER_STORAGE_PATH", self.storage.display().to_string()),
                // A port of its own: tests run servers side by side.
                ("SERVER_HTTP_ADDRESS", "127.0.0.1:0".to_owned()),
            ]);
            env.extend(credentials::server_env(&self.credentials_dir()));
        }
        self.program.environment(env)
    }

    /// The command that runs the server, for a test that wants its
    /// output elsewhere (a full disk, a pipe nobody reads); then
    /// [`wait_listening`] says when it serves.
    pub fn command(&self) -> Command {
        self.program.command(self.environment())
    }

    /// Runs `server admin ARGS` against this server, as the operator (the
    /// credentials' `operator.pem`), with `env` added or in place; waits
    /// for it to end.
    pub fn admin(&self, args: &[&str], env: &[(&str, String)]) -> std::process::Output {
        let dir = self.credentials_dir();
        let path = |file: &str| dir.join(file).display().to_string();
        let mut all = vec![
            ("SERVER_PORT", self.port.get().to_string()),
            ("SERVER_TLS_CA", path("ca.pem")),
            ("SERVER_ADMIN_CERT", path("operator.pem")),
            ("SERVER_ADMIN_KEY", path("operator.key")),
        ];
        all.retain(|(key, _)| !env.iter().any(|(k, _)| k == key));
        all.extend(env.iter().cloned());
        let mut command = self.program.command(self.program.environment(all));
        command.arg("admin").args(args);
        command.output().expect("server admin runs")
    }

    /// Starts the server without waiting for anything: for one that
    /// should refuse to start.
    pub fn spawn(&self) -> Process {
        Process::spawn(self.command())
    }

    /// Starts the server and returns once it listens: once it logged
    /// `accept_connections`, or, at a level that hides that line, once a
    /// connection to its port succeeds. Says why when it does not within
    /// [`ServerBuilder::ready_within`].
    pub fn try_start(&self) -> Result<RunningServer, StartError> {
        for _ in 1..3 {
            match self.start_once() {
                Err(e) if e.port_taken() && !self.port_kept.get() => self.port.set(free_port()),
                result => return result,
            }
        }
        self.start_once()
    }

    fn start_once(&self) -> Result<RunningServer, StartError> {
        let mut process = self.spawn();
        let listening = if self.says_when_listening() {
            let needle = "action: accept_connections | result: in_progress";
            match process.next_line_with(needle, self.ready_within) {
                Ok(_) => Ready::Listening,
                Err(RecvTimeoutError::Disconnected) => Ready::Exiting,
                Err(RecvTimeoutError::Timeout) => Ready::TimedOut,
            }
        } else {
            match wait_listening(self.addr(), self.ready_within, || process.try_exit().is_none()) {
                true => Ready::Listening,
                false if process.try_exit().is_some() => Ready::Exiting,
                false => Ready::TimedOut,
            }
        };
        let exited = match listening {
            Ready::Listening => {
                self.port_kept.set(true);
                return Ok(RunningServer { process, settings: self.clone() });
            }
            // Its output ends a moment before it can be reaped.
            Ready::Exiting => Some(process.wait_exit(EXIT_WITHIN)),
            Ready::TimedOut => {
                process.signal(Signal::SIGKILL);
                process.wait_exit(EXIT_WITHIN);
                None
            }
        };
        Err(StartError {
            exited,
            within: self.ready_within,
            lines: process.tail(40),
            stderr: process.stderr(),
        })
    }

    /// Like [`ServerBuilder::try_start`], panicking with the reason.
    pub fn start(&self) -> RunningServer {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// An agency of this server: its address and credentials, working in
    /// the server's folder.
    pub fn agency(&self, agency: u32) -> AgencyBuilder {
        AgencyBuilder::new(self.dir(), agency, self.addr()).credentials(self.credentials_dir())
    }

    /// Whether the server logs `accept_connections` at its level.
    fn says_when_listening(&self) -> bool {
        let env = self.environment();
        let level = env.iter().find(|(k, _)| k == "LOGGING_LEVEL").map(|(_, v)| v.to_ascii_uppercase());
        // No level in the environment: one from a config file, which the
        // tests that use it set to INFO or DEBUG.
        level.is_none_or(|l| l == "INFO" || l == "DEBUG")
    }
}

/// How a start ended.
enum Ready {
    Listening,
    /// It exited (or is exiting) before it listened.
    Exiting,
    TimedOut,
}

/// Waits until something listens at `addr`, at most `within`, while
/// `alive` says the process that should is still running.
pub fn wait_listening(addr: SocketAddr, within: Duration, mut alive: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        if !alive() || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Why a server did not start.
#[derive(Debug)]
pub struct StartError {
    /// How it ended, if it did.
    pub exited: Option<ExitStatus>,
    pub within: Duration,
    /// Its last lines.
    pub lines: String,
    pub stderr: String,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.exited {
            Some(status) => write!(f, "the server exited with {status} before it listened")?,
            None => write!(f, "the server did not listen within {:?}", self.within)?,
        }
        write!(f, "; its last lines:\n{}\nits stderr:\n{}", self.lines, self.stderr)
    }
}

impl std::error::Error for StartError {}

impl StartError {
    /// Whether the server could not listen because its port was in use.
    fn port_taken(&self) -> bool {
        self.exited.is_some() && self.lines.contains("Address already in use")
    }
}

/// The real server, listening; a [`Process`] (its lines, signals, memory
/// and CPU) that knows where it listens and how it was started.
pub struct RunningServer {
    process: Process,
    settings: ServerBuilder,
}

impl RunningServer {
    /// Where it listens: `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.settings.addr()
    }

    pub fn port(&self) -> u16 {
        self.settings.port_number()
    }

    /// Where its pages listen, as its `http` line says (waiting for it at
    /// most 5 s); `None` if it has none.
    pub fn http_addr(&mut self) -> Option<SocketAddr> {
        let find = |seen: &[String]| seen.iter().find(|l| l.contains("action: http |")).cloned();
        let line = match find(&self.process.seen) {
            Some(line) => line,
            None if self.process.wait_for_line("action: http |", Duration::from_secs(5)) => {
                find(&self.process.seen)?
            }
            None => return None,
        };
        edge::log::parse_action(&line).ok()?.get("address")?.parse().ok()
    }

    /// Its bets file.
    pub fn storage(&self) -> &Path {
        &self.settings.storage
    }

    /// How it was started.
    pub fn settings(&self) -> &ServerBuilder {
        &self.settings
    }

    /// SIGTERM, then its exit status, waiting at most [`EXIT_WITHIN`].
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with(Signal::SIGTERM)
    }

    /// `signal`, then its exit status, waiting at most [`EXIT_WITHIN`].
    pub fn stop_with(&mut self, signal: Signal) -> ExitStatus {
        self.process.signal(signal);
        self.process.wait_exit(EXIT_WITHIN)
    }

    /// Stops it with `signal` and checks the whole shutdown: exit 0, every
    /// closing line (its pages' too, if it has any), and every session
    /// ended within the server's grace (`aborted: no`): the contract's 2 s
    /// are the server's own budget, so its lines, not the wall clock of a
    /// loaded machine, say it kept them. Returns it, stopped, for its lines.
    pub fn assert_clean_stop(mut self, signal: Signal) -> RunningServer {
        let status = self.stop_with(signal);
        let seen = self.process.seen.join("\n");
        assert!(status.success(), "exit status {status}:\n{seen}");
        let actions = self.process.actions();
        assert_eq!(
            (actions[0].name.as_str(), actions[1].name.as_str(), actions[1].result.as_str()),
            ("config", "accept_connections", "in_progress")
        );
        let mut closed = vec!["close_listener", "join_sessions", "close_file", "join_writer", "shutdown"];
        if self.process.has_action("http", "success") {
            closed.push("close_http");
        }
        for name in closed {
            assert!(self.process.has_action(name, "success"), "no {name} line:\n{seen}");
        }
        let joined = self.process.action("join_sessions").expect("a join_sessions line");
        assert_eq!(joined.get("aborted"), Some("no"), "{seen}");
        self
    }

    /// A crash: SIGKILL, and the process reaped.
    pub fn kill(&mut self) -> ExitStatus {
        self.stop_with(Signal::SIGKILL)
    }

    /// A server started again as this one was (same port, same storage),
    /// once this one is gone: killed now if it still runs.
    pub fn restart(mut self) -> RunningServer {
        if self.process.try_exit().is_none() {
            self.kill();
        }
        self.settings.start()
    }

    /// An agency of this server (see [`ServerBuilder::agency`]).
    pub fn agency(&self, agency: u32) -> AgencyBuilder {
        self.settings.agency(agency)
    }

    pub fn into_process(self) -> Process {
        self.process
    }
}

impl Deref for RunningServer {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl DerefMut for RunningServer {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}
