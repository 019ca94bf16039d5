//! The real server binary, in its own process, as the benchmark drives it.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The real server binary, in its own process.
pub struct Server {
    child: Child,
    /// The server's `close_file` line, once it has logged it.
    close_line: Arc<Mutex<Option<String>>>,
    /// Its last lines, for when it fails.
    last_lines: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts `binary` on `port` for `agencies` agencies, its round at
    /// `storage`, its credentials in `credentials`, and these other
    /// `settings` in its environment; returns once it listens.
    pub fn start(
        binary: &Path,
        log_level: &str,
        port: u16,
        agencies: usize,
        storage: &Path,
        credentials: &Path,
        settings: &[(&str, String)],
    ) -> anyhow::Result<Server> {
        let child = Command::new(binary)
            .env_clear()
            .env("SERVER_PORT", port.to_string())
            .env("SERVER_LISTEN_BACKLOG", "1024")
            .env("LOGGING_LEVEL", log_level)
            .env("SERVER_AGENCIES", agencies.to_string())
            .env("SERVER_STORAGE_PATH", storage)
            .envs(testkit::credentials::server_env(credentials))
            .envs(settings.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut child = child;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let close_line = Arc::new(Mutex::new(None));
        let last_lines = Arc::new(Mutex::new(VecDeque::new()));
        let (found, last) = (close_line.clone(), last_lines.clone());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("action: close_file") {
                    *found.lock().unwrap() = Some(line.clone());
                }
                let mut last = last.lock().unwrap();
                if last.len() == 20 {
                    last.pop_front();
                }
                last.push_back(line);
            }
        });
        let mut server = Server { child, close_line, last_lines };
        let deadline = Instant::now() + Duration::from_secs(300);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(50));
                let lines: Vec<String> = server.last_lines.lock().unwrap().iter().cloned().collect();
                bail!("the server exited with {status} before it listened:\n{}", lines.join("\n"));
            }
            ensure!(Instant::now() < deadline, "the server did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(server)
    }

    /// Resident memory of the server now.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, key: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {key} in /proc/PID/status"))
    }

    /// Peak resident memory of the server so far.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmHWM:")
    }

    /// User plus system CPU time of the server so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name, which ends with the last ')'.
        let fields: Vec<&str> =
            stat.rsplit_once(')').context("bad /proc/PID/stat")?.1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        Ok(Duration::from_millis(ticks * 10))
    }

    /// Stops the server; returns the syncs of the bets file and of the
    /// journal, from its `close_file` line (`None` when it logs no INFO,
    /// or is a version that did not count them).
    pub fn stop(&mut self) -> anyhow::Result<Option<(u64, u64)>> {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM)?;
        let status = self.child.wait()?;
        ensure!(status.success(), "server exited with {status}");
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(line) = self.close_line.lock().unwrap().as_deref() {
                let action = edge::log::parse_action(line).map_err(anyhow::Error::msg)?;
                let number = |key: &str| action.get(key).and_then(|n| n.parse::<u64>().ok());
                return Ok(number("syncs").zip(number("journal_syncs")));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
