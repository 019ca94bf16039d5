//! A binary in its own process, its stdout read line by line as the
//! course's suite reads a container's log.

use std::io::{BufRead, BufReader};
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

/// A running binary whose stdout is read line by line.
pub struct Process {
    child: Child,
    lines: Receiver<String>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
}

impl Process {
    /// Starts `binary` in `dir` with exactly `env` as its environment.
    pub fn start(binary: &Path, dir: &Path, env: &[(&str, String)]) -> Process {
        let mut command = Command::new(binary);
        command.current_dir(dir).env_clear().envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        Process::spawn(command)
    }

    /// Starts `command` with its stdout read line by line and its stderr
    /// kept for [`Process::stderr`]; stdin is empty.
    pub fn spawn(mut command: Command) -> Process {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        // A reader of its own: a process must never block on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process { child, lines, seen: Vec::new() }
    }

    /// The process id (of a process that may have exited).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line containing `needle`; panics after `within`.
    pub fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        match self.next_line_with(needle, within) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no line with {needle:?} within {within:?}; seen:\n{}", self.seen.join("\n"))
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("output ended before a line with {needle:?}; seen:\n{}", self.seen.join("\n"))
            }
        }
    }

    /// Like [`Process::wait_for`], but says `false` instead of panicking.
    pub fn wait_for_line(&mut self, needle: &str, within: Duration) -> bool {
        self.next_line_with(needle, within).is_ok()
    }

    /// The next line containing `needle`, every line read on the way kept
    /// in `seen`; `Disconnected` when the output ended first (the process
    /// is exiting).
    pub(crate) fn next_line_with(
        &mut self,
        needle: &str,
        within: Duration,
    ) -> Result<String, RecvTimeoutError> {
        let deadline = Instant::now() + within;
        loop {
            let line = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
            let found = line.contains(needle).then(|| line.clone());
            self.seen.push(line);
            if let Some(line) = found {
                return Ok(line);
            }
        }
    }

    /// Takes every line written so far into `seen`.
    pub fn drain(&mut self) {
        self.seen.extend(self.lines.try_iter());
    }

    /// The last `count` lines written so far, for a failure report.
    pub fn tail(&mut self, count: usize) -> String {
        self.drain();
        self.seen[self.seen.len().saturating_sub(count)..].join("\n")
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

    /// Waits for the exit, at most `within` (past it the process is killed
    /// and this panics); then reads the rest of stdout.
    ///
    /// Give a bound a loaded machine never reaches: how fast a process
    /// stops is for its own lines to show, not for the wall clock.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("still running after {within:?}; seen:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit however long it takes; then reads the rest of
    /// stdout. Returns as soon as the process is gone, for a caller that
    /// times it.
    pub fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.pid()));
        self.seen.extend(self.lines.iter());
        status
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

    /// The first action line named `name`, parsed.
    pub fn action(&self, name: &str) -> Option<ParsedAction> {
        self.actions().into_iter().find(|a| a.name == name)
    }

    /// Resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> std::io::Result<u64> {
        self.status_kib("VmRSS:")
    }

    /// The most resident memory so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> std::io::Result<u64> {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, key: &str) -> std::io::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no {key} in /proc/{}/status", self.pid())))
    }

    /// User plus system CPU time so far, to the kernel's tick (10 ms).
    pub fn cpu_time(&self) -> std::io::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let bad = || std::io::Error::other(format!("bad /proc/{}/stat: {stat}", self.pid()));
        // The fields after the command name, which ends with the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')').ok_or_else(bad)?.1.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).ok_or_else(bad);
        Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
