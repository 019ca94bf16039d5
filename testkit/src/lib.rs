//! Running the project's real binaries the way Docker would, reading their
//! logs as the course's suite does, and breaking things on purpose:
//!
//! - [`Process`]: a binary in its own process, its stdout line by line.
//! - [`binaries`]: where the real `server` and `client` are (built if needed).
//! - [`credentials`]: TLS credentials made by the project's own command.
//! - [`check`]: a round's bets file against the agencies' files.
//! - [`proxy`]: a TCP proxy that cuts or freezes connections.
//! - [`chaos`]: whole rounds with faults injected at random moments.

pub mod binaries;
pub mod chaos;
pub mod check;
pub mod credentials;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use edge::log::{parse_action, ParsedAction};
use nix::sys::signal::kill;
pub use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Sends `signal` to the process `pid` (which may have exited already).
pub fn send_signal(pid: u32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running binary whose stdout is read line by line.
pub struct Process {
    child: Child,
    lines: Receiver<String>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
}

impl Process {
    /// Starts `binary` in `dir` with exactly `env` (and PATH) as environment.
    pub fn start(binary: &Path, dir: &Path, env: &[(&str, String)]) -> Process {
        let mut child = Command::new(binary)
            .current_dir(dir)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process { child, lines, seen: Vec::new() }
    }

    /// Waits for a line containing `needle`; panics after `within`.
    pub fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line with {needle:?} within {within:?}; seen:\n{}", self.seen.join("\n"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("output ended before a line with {needle:?}; seen:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    /// Like [`Process::wait_for`], but says `false` instead of panicking.
    pub fn wait_for_line(&mut self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Takes every line written so far into `seen`.
    pub fn drain(&mut self) {
        self.seen.extend(self.lines.try_iter());
    }

    /// Sends `signal`, unless the process has exited: once it is reaped
    /// its pid may belong to another process (another test's server).
    pub fn signal(&mut self, signal: Signal) {
        if self.child.try_wait().unwrap().is_none() {
            send_signal(self.child.id(), signal);
        }
    }

    /// The exit status, if the process has exited; then its whole stdout
    /// is in `seen`.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().unwrap()?;
        self.seen.extend(self.lines.iter());
        Some(status)
    }

    /// Waits for the exit, at most `within`; then reads the rest of stdout.
    pub fn wait_exit(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return (status, started.elapsed());
            }
            if started.elapsed() > within {
                let _ = self.child.kill();
                panic!("still running after {within:?}; seen:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the process wrote on stderr (after it exited).
    pub fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
        }
        text
    }

    /// Every line with `action:`, parsed; panics on one that does not parse.
    pub fn actions(&self) -> Vec<ParsedAction> {
        self.seen
            .iter()
            .filter(|l| l.contains("action:"))
            .map(|l| parse_action(l).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    /// Whether some action line is `name` with `result`.
    pub fn has_action(&self, name: &str, result: &str) -> bool {
        self.actions().iter().any(|a| a.name == name && a.result == result)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
