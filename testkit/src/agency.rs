//! The real `client` binary, an agency, started the way the tests, the
//! benchmark and the chaos campaign start it.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::credentials;
use crate::process::Process;
use crate::program::Program;

/// The settings an agency needs that no test cares about, when no
/// configuration file gives them: many winners queries, no pause, INFO,
/// batches of the shipped `client/config.yaml`.
const DEFAULTS: [(&str, &str); 4] = [
    ("CLI_LOOP_AMOUNT", "1000"),
    ("CLI_LOOP_PERIOD", "0s"),
    ("CLI_LOG_LEVEL", "INFO"),
    ("CLI_BATCH_MAXAMOUNT", "80"),
];

/// How to start agency K: its server, data file, credentials, an optional
/// configuration file and any other setting of its environment.
///
/// The environment holds `CLI_ID`, `CLI_SERVER_ADDRESS`, the agency's TLS
/// credentials (the tests' shared ones unless [`AgencyBuilder::credentials`]
/// says otherwise) and what the setters add. Without a configuration file
/// it also holds loop, log and batch settings (many queries, no pause,
/// INFO, batches of 80); with one (`--config`), those come from the file
/// unless set here.
#[derive(Debug, Clone)]
pub struct AgencyBuilder {
    program: Program,
    agency: u32,
    address: String,
    config_file: Option<PathBuf>,
}

impl AgencyBuilder {
    /// Agency `agency`, working in `dir`, of the server at `address`
    /// (`host:port`).
    pub fn new(dir: impl AsRef<Path>, agency: u32, address: impl Display) -> AgencyBuilder {
        AgencyBuilder {
            program: Program::new("client", dir.as_ref().to_path_buf()),
            agency,
            address: address.to_string(),
            config_file: None,
        }
    }

    /// Its bets (`CLI_DATA_FILE`); relative to its folder, or absolute.
    pub fn data_file(self, path: impl AsRef<Path>) -> AgencyBuilder {
        self.env("CLI_DATA_FILE", path.as_ref().display())
    }

    pub fn batch_max_amount(self, bets: usize) -> AgencyBuilder {
        self.env("CLI_BATCH_MAXAMOUNT", bets)
    }

    /// Winners queries before it gives up.
    pub fn loop_amount(self, queries: u32) -> AgencyBuilder {
        self.env("CLI_LOOP_AMOUNT", queries)
    }

    /// The pause between two requests, a Go duration (`0s`, `100ms`).
    pub fn loop_period(self, period: &str) -> AgencyBuilder {
        self.env("CLI_LOOP_PERIOD", period)
    }

    pub fn log_level(self, level: &str) -> AgencyBuilder {
        self.env("CLI_LOG_LEVEL", level)
    }

    /// Runs it with `--config path`.
    pub fn config_file(mut self, path: impl AsRef<Path>) -> AgencyBuilder {
        self.config_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// The folder of credentials that `scripts/credentials.sh` made.
    pub fn credentials(mut self, dir: impl AsRef<Path>) -> AgencyBuilder {
        self.program.credentials = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Sets `key` in its environment, replacing what the builder would put
    /// there.
    pub fn env(mut self, key: &str, value: impl Display) -> AgencyBuilder {
        self.program.set(key, value);
        self
    }

    /// The binary to run (default: the project's, see
    /// [`crate::binaries::binary`]).
    pub fn binary(mut self, path: impl AsRef<Path>) -> AgencyBuilder {
        self.program.binary = Some(path.as_ref().to_path_buf());
        self
    }

    pub fn agency(&self) -> u32 {
        self.agency
    }

    /// Its whole environment, in order.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut env = vec![("CLI_ID", self.agency.to_string()), ("CLI_SERVER_ADDRESS", self.address.clone())];
        if self.config_file.is_none() {
            env.extend(DEFAULTS.iter().map(|(k, v)| (*k, v.to_string())));
        }
        env.extend(credentials::client_env(&self.program.credentials_dir(self.agency), self.agency));
        self.program.environment(env)
    }

    /// The command that runs it.
    pub fn command(&self) -> Command {
        let mut command = self.program.command(self.environment());
        if let Some(config) = &self.config_file {
            command.arg("--config").arg(config);
        }
        command
    }

    /// Starts it; its lines are read as they come.
    pub fn start(&self) -> Process {
        Process::spawn(self.command())
    }
}
