//! The lottery on a single-node Docker Swarm, through `scripts/swarm.sh`
//! (what `make swarm-up` and `make swarm-down` run) and the stack file of
//! `scripts/generar-stack.sh`: a round of 5 agencies on the real-size
//! sample data, then the same with the server's task killed mid-upload.
//! Whatever happens, the stack, its secrets, configs and volume go, and so
//! does the swarm if the test made it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::{busybox_image, run, run_ok, Project};
use testkit::check::{compare, Expected};

const STACK: &str = "lottery-e2e";
const ROWS: [usize; 5] = datagen::COURSE_ROWS;
const LONG: Duration = Duration::from_secs(180);

/// The stack, deployed by `scripts/swarm.sh up`; removed when dropped.
struct Stack<'a> {
    project: &'a Project,
}

impl<'a> Stack<'a> {
    fn up(project: &'a Project) -> Stack<'a> {
        let stack = Stack { project };
        let out = stack.script(&["up", "5"]);
        assert!(out.status.success(), "swarm.sh up: {}", String::from_utf8_lossy(&out.stderr));
        stack
    }

    /// `swarm.sh down`, checked: the stack's services, secrets, configs and
    /// volume are gone.
    fn down(self) {
        let out = self.script(&["down"]);
        assert!(out.status.success(), "swarm.sh down: {}", String::from_utf8_lossy(&out.stderr));
        let label = format!("label=com.docker.stack.namespace={STACK}");
        let dir = self.project.path();
        if swarm_state() == "active" {
            for kind in ["service", "secret", "config"] {
                let left = run_ok("docker", &[kind, "ls", "-q", "--filter", &label], dir);
                assert!(left.trim().is_empty(), "{kind}s left: {left}");
            }
        }
        let volumes = run_ok("docker", &["volume", "ls", "-q"], dir);
        assert!(!volumes.lines().any(|v| v == Stack::service("round")), "the volume is left");
        std::mem::forget(self);
    }

    fn script(&self, args: &[&str]) -> Output {
        let mut all = vec!["scripts/swarm.sh"];
        all.extend(args);
        Command::new("bash").args(&all).env("STACK", STACK).current_dir(self.project.path()).output().unwrap()
    }

    fn service(name: &str) -> String {
        format!("{STACK}_{name}")
    }

    /// The raw log lines of a service, all its tasks.
    fn logs(&self, name: &str) -> String {
        let out = run("docker", &["service", "logs", "--raw", &Stack::service(name)], self.project.path());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The current states of a service's tasks ("Complete 2 seconds ago"...).
    fn states(&self, name: &str) -> Vec<String> {
        let format = "{{.CurrentState}}";
        run_ok("docker", &["service", "ps", "--format", format, &Stack::service(name)], self.project.path())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until every agency has a task that completed.
    fn wait_agencies_complete(&self) {
        let deadline = Instant::now() + LONG;
        for k in 1..=ROWS.len() {
            let agency = format!("agency{k}");
            while !self.states(&agency).iter().any(|s| s.starts_with("Complete")) {
                assert!(
                    Instant::now() < deadline,
                    "{agency} did not complete: {:?}\n{}\nserver:\n{}",
                    self.states(&agency),
                    self.logs(&agency),
                    self.logs("server")
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }

    /// Waits until Docker calls the server's container healthy: Swarm runs
    /// its healthcheck, `server health`, inside the image.
    fn wait_server_healthy(&self) {
        let label = format!("label=com.docker.swarm.service.name={}", Stack::service("server"));
        let deadline = Instant::now() + LONG;
        let mut health = String::new();
        while health != "healthy" {
            assert!(Instant::now() < deadline, "the server is {health:?}, not healthy");
            std::thread::sleep(Duration::from_millis(250));
            let id = run_ok("docker", &["ps", "-q", "--filter", &label], self.project.path());
            let format = "{{.State.Health.Status}}";
            let out = run("docker", &["inspect", "--format", format, id.trim()], self.project.path());
            health = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
    }

    /// The server's bets file, read from its volume.
    fn bets_file(&self) -> Vec<u8> {
        let volume = format!("{}:/data:ro", Stack::service("round"));
        let out = run(
            "docker",
            &["run", "--rm", "-v", &volume, "busybox:latest", "cat", "/data/bets.csv"],
            Path::new("."),
        );
        assert!(out.status.success(), "reading the volume: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// Every agency completed, told its own number of winners, and the
    /// bets file holds each bet once.
    fn check_round(&self, expected: &Expected) {
        self.wait_agencies_complete();
        for (agency, winners) in &expected.winners {
            let line =
                format!("action: consulta_ganadores | result: success | cant_ganadores: {}", winners.len());
            let log = self.logs(&format!("agency{agency}"));
            assert!(log.lines().any(|l| l.ends_with(&line)), "agency {agency}: no \"{line}\" in\n{log}");
        }
        let report = compare(&self.bets_file(), expected);
        assert!(report.exact(), "{report}");
    }
}

fn swarm_state() -> String {
    run_ok("docker", &["info", "--format", "{{.Swarm.LocalNodeState}}"], Path::new(".")).trim().to_owned()
}

impl Drop for Stack<'_> {
    fn drop(&mut self) {
        let out = self.script(&["down"]);
        if !out.status.success() {
            eprintln!("swarm.sh down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

#[test]
fn a_round_on_a_single_node_swarm_then_one_whose_server_is_killed_mid_upload() {
    busybox_image();
    let project = Project::new(5);
    // A different number of winners each: an agency told another's fails.
    let expected = project.sample_files_with_winners(&ROWS, &[1, 2, 3, 4, 5], 75_74);
    // What a run that was killed may have left.
    Stack { project: &project }.down();
    let before = swarm_state();

    let started = Instant::now();
    let stack = Stack::up(&project);
    stack.check_round(&expected);
    stack.wait_server_healthy();
    assert!(!stack.logs("server").contains("result: fail"), "{}", stack.logs("server"));
    stack.down();
    assert_eq!(swarm_state(), before, "the swarm is as it was");
    eprintln!("a round on the swarm, deployed and removed: {:?}", started.elapsed());

    // Agencies pace their batches, so that the kill lands mid-upload.
    project.client_config(3000, "10ms", "INFO", 80);
    let stack = Stack::up(&project);
    let deadline = Instant::now() + LONG;
    while !stack.logs("server").contains("action: apuesta_recibida") {
        assert!(Instant::now() < deadline, "no batch stored:\n{}", stack.logs("server"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let label = format!("label=com.docker.swarm.service.name={}", Stack::service("server"));
    let server = run_ok("docker", &["ps", "-q", "--filter", &label], project.path());
    let server = server.trim();
    assert!(!server.is_empty() && !server.contains('\n'), "one server container: {server:?}");
    run_ok("docker", &["kill", server], project.path());
    stack.check_round(&expected);
    let states = stack.states("server");
    assert!(states.iter().any(|s| s.starts_with("Failed")), "the killed task: {states:?}");
    assert!(states.iter().any(|s| s.starts_with("Running")), "the task Swarm started again: {states:?}");
    // The new task recovered the round and stored the rest of it.
    let restarted = run_ok("docker", &["ps", "-q", "--filter", &label], project.path());
    assert_ne!(restarted.trim(), server, "a new container");
    let log = run_ok("docker", &["logs", restarted.trim()], project.path());
    let recovered = log.find("action: recover").unwrap_or_else(|| panic!("no recover line:\n{log}"));
    assert!(log[recovered..].contains("action: apuesta_recibida"), "killed after the upload:\n{log}");
    stack.down();
    assert_eq!(swarm_state(), before, "the swarm is as it was");
}
