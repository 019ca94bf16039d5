//! Driving the system through Docker Compose, the way the course's suite
//! does: a project folder with the generated Compose file, the two config
//! files and `.data/`; `compose up -d`; then the containers' logs, read
//! line by line and parsed as action lines.
//!
//! Each [`Project`] lives in a temporary copy of what Compose needs from
//! the repository, so tests can rewrite configs and agency files freely.
//! Container and network names are fixed (`server`, `clientK`,
//! `tp0_testing_net`), so tests must run one at a time.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use edge::log::{parse_action, ParsedAction};
pub use testkit::repo;

/// Serialises the tests of one binary: they share container names.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a command and returns its output, whatever its exit status.
pub fn run(program: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Makes `busybox:latest` the way the echo validation does, when missing.
pub fn busybox_image() {
    run_ok("sh", &["scripts/busybox-image.sh", "busybox:latest"], &repo());
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(program: &str, args: &[&str], dir: &Path) -> String {
    let out = run(program, args, dir);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker compose` where the v2 plugin exists, else `docker-compose`.
fn compose_command() -> Vec<&'static str> {
    let v2 = Command::new("docker").args(["compose", "version"]).output();
    if v2.is_ok_and(|o| o.status.success()) {
        vec!["docker", "compose"]
    } else {
        vec!["docker-compose"]
    }
}

/// One log line of a container, with Docker's timestamp.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// RFC 3339 with nanoseconds, so that text order is time order.
    pub at: String,
    pub text: String,
}

impl LogLine {
    pub fn action(&self) -> Option<ParsedAction> {
        self.text
            .contains("action:")
            .then(|| parse_action(&self.text).unwrap_or_else(|e| panic!("unparsable action line: {e}")))
    }
}

/// A Compose project of the system in a temporary folder.
pub struct Project {
    dir: tempfile::TempDir,
    _guard: MutexGuard<'static, ()>,
}

impl Project {
    /// A project with the repository's configs and `clients` agencies.
    pub fn new(clients: usize) -> Project {
        let guard = exclusive();
        // A leftover of an aborted run would clash with our names.
        let _ = run(
            "docker",
            &["rm", "-f", "server", "client1", "client2", "client3", "client4", "client5"],
            &repo(),
        );
        let _ = run("docker", &["network", "rm", "tp0_testing_net"], &repo());
        let dir = tempfile::tempdir().unwrap();
        for file in [
            ".env",
            "generar-compose.sh",
            "validar-echo-server.sh",
            "scripts/admin.sh",
            "scripts/busybox-image.sh",
            "scripts/credentials.sh",
            "scripts/generar-stack.sh",
            "scripts/swarm.sh",
            "server/config.ini",
            "client/config.yaml",
        ] {
            let to = dir.path().join(file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(repo().join(file), &to).unwrap();
        }
        std::fs::create_dir(dir.path().join(".data")).unwrap();
        let project = Project { dir, _guard: guard };
        let out = project
            .run_ok("bash", &["./generar-compose.sh", "docker-compose-dev.yaml", &clients.to_string()]);
        assert_eq!(
            out,
            format!(
                "Nombre del archivo de salida: docker-compose-dev.yaml\nCantidad de clientes: {clients}\n"
            )
        );
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run_ok(&self, program: &str, args: &[&str]) -> String {
        run_ok(program, args, self.path())
    }

    /// Runs `docker compose -f docker-compose-dev.yaml ARGS`.
    pub fn compose(&self, args: &[&str]) -> Output {
        let command = compose_command();
        let mut all: Vec<&str> = command[1..].to_vec();
        all.extend(["-f", "docker-compose-dev.yaml"]);
        all.extend(args);
        run(command[0], &all, self.path())
    }

    fn compose_ok(&self, args: &[&str]) {
        let out = self.compose(args);
        assert!(out.status.success(), "compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Rewrites `server/config.ini` the way the course's suite does.
    pub fn server_config(&self, port: u16, backlog: u32, level: &str) {
        let text = format!(
            "[DEFAULT]\nSERVER_PORT = {port}\nSERVER_IP = server\nSERVER_LISTEN_BACKLOG = {backlog}\nLOGGING_LEVEL = {level}"
        );
        std::fs::write(self.path().join("server/config.ini"), text).unwrap();
    }

    /// Rewrites `client/config.yaml` the way the course's suite does.
    pub fn client_config(&self, amount: u32, period: &str, level: &str, max_amount: usize) {
        let text = format!(
            "server:\n  address: \"server:12345\"\nloop:\n  amount: {amount}\n  period: \"{period}\"\nlog:\n  level: \"{level}\"\nbatch:\n  maxAmount: {max_amount}"
        );
        std::fs::write(self.path().join("client/config.yaml"), text).unwrap();
    }

    /// Writes `.data/agency-K.csv`.
    pub fn agency_file(&self, agency: usize, rows: &str) {
        std::fs::write(self.path().join(format!(".data/agency-{agency}.csv")), rows).unwrap();
    }

    /// Writes sample agency files with `rows` bets each and the course's
    /// winners each; returns what the round must end with.
    pub fn sample_files(&self, rows: &[usize], seed: u64) -> testkit::check::Expected {
        self.sample_files_with_winners(rows, &vec![datagen::COURSE_WINNERS; rows.len()], seed)
    }

    /// Writes sample agency files with `rows` bets and `winners` winners
    /// each; returns what the round must end with.
    pub fn sample_files_with_winners(
        &self,
        rows: &[usize],
        winners: &[usize],
        seed: u64,
    ) -> testkit::check::Expected {
        let data = self.path().join(".data");
        let agencies = datagen::generate(&data, rows, winners, seed).unwrap();
        let files: Vec<(u32, &Path)> = agencies.iter().map(|a| (a.agency, a.path.as_path())).collect();
        testkit::check::expected(&files)
    }

    /// The bets file as it is in the server's storage now.
    pub fn bets_file(&self) -> Vec<u8> {
        let to = self.path().join("bets.csv.copy");
        run_ok("docker", &["cp", "server:/data/bets.csv", to.to_str().unwrap()], self.path());
        std::fs::read(&to).unwrap()
    }

    /// `docker inspect -f FORMAT container`, trimmed.
    pub fn inspect(&self, container: &str, format: &str) -> String {
        run_ok("docker", &["inspect", "-f", format, container], self.path()).trim().to_owned()
    }

    /// `compose up -d`, for every service or only those named.
    pub fn up(&self, services: &[&str]) {
        let mut args = vec!["up", "-d"];
        args.extend(services);
        self.compose_ok(&args);
    }

    /// Every stdout line of `container` so far.
    pub fn logs(&self, container: &str) -> Vec<LogLine> {
        let out = run("docker", &["logs", "-t", container], self.path());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(at, text)| LogLine { at: at.to_owned(), text: text.to_owned() })
            .collect()
    }

    /// The parsed action lines of `container`.
    pub fn actions(&self, container: &str) -> Vec<(String, ParsedAction)> {
        self.logs(container).into_iter().filter_map(|l| l.action().map(|a| (l.at, a))).collect()
    }

    /// Waits until `container` logged a line containing `needle`.
    pub fn wait_for(&self, container: &str, needle: &str, within: Duration) -> LogLine {
        self.poll(container, within, &format!("a line with {needle:?}"), || {
            self.logs(container).into_iter().find(|l| l.text.contains(needle))
        })
    }

    /// Waits until `check` says yes; panics with `container`'s log after
    /// `within`.
    pub fn wait_until(&self, container: &str, within: Duration, what: &str, check: impl Fn() -> bool) {
        self.poll(container, within, what, || check().then_some(()))
    }

    /// Waits until `container` has exited; returns its exit code.
    pub fn wait_exit(&self, container: &str, within: Duration) -> i64 {
        self.poll(container, within, "an exit", || {
            let format = "{{.State.Status}} {{.State.ExitCode}}";
            let state = run_ok("docker", &["inspect", "-f", format, container], self.path());
            match state.split_whitespace().collect::<Vec<_>>()[..] {
                ["exited", code] => code.parse().ok(),
                _ => None,
            }
        })
    }

    /// Asks `check` every 100 ms until it answers; panics with `container`'s
    /// log after `within`.
    fn poll<T>(&self, container: &str, within: Duration, what: &str, check: impl Fn() -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = check() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{container}: no {what} within {within:?}:\n{}",
                self.dump(container)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `docker stop -t SECS container`: SIGTERM, and SIGKILL (exit code
    /// 137) if it still runs SECS later.
    pub fn stop(&self, container: &str, secs: u32) {
        run_ok("docker", &["stop", "-t", &secs.to_string(), container], self.path());
    }

    fn dump(&self, container: &str) -> String {
        self.logs(container).into_iter().map(|l| l.text).collect::<Vec<_>>().join("\n")
    }

    /// Asserts no action line of `container` says `result: fail`.
    pub fn assert_no_fail(&self, container: &str) {
        let fails: Vec<_> = self.actions(container).into_iter().filter(|(_, a)| a.result == "fail").collect();
        assert!(fails.is_empty(), "{container}: {fails:?}");
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "-t", "1", "--remove-orphans"]);
    }
}
