//! Faults only Compose shows, each followed by the byte-exact check of the
//! bets file against the agency files: the restart policy after a crash,
//! `docker kill` and `docker start`, a paused server, an agency cut off
//! the network, and the lifecycle of a round (restart resumes it, `stop`
//! is final, `down` and `up` start a new one).

use std::time::Duration;

use e2e::{run, run_ok, Project};
use testkit::check::{compare, Expected};

const LONG: Duration = Duration::from_secs(90);

/// Five agencies pacing their batches (20 ms apart, 20 bets each), so that
/// their uploads last a few seconds: faults land in the middle of them.
fn slow_round(p: &Project) -> Expected {
    p.client_config(3000, "20ms", "INFO", 20);
    p.sample_files(&[3000, 2500, 2000, 1500, 500], 75)
}

/// Waits for every agency to exit 0 with its winners, then checks the
/// bets file and the single draw.
fn assert_round_exact(p: &Project, expected: &Expected) {
    for (agency, winners) in &expected.winners {
        let client = format!("client{agency}");
        assert_eq!(p.wait_exit(&client, LONG), 0, "{client}");
        let answer = p.actions(&client).into_iter().find(|(_, a)| a.name == "consulta_ganadores");
        let count = answer.as_ref().and_then(|(_, a)| a.get("cant_ganadores").map(str::to_owned));
        assert_eq!(count, Some(winners.len().to_string()), "{client}");
    }
    let report = compare(&p.bets_file(), expected);
    assert!(report.exact(), "{report}");
    let draws = p.actions("server").into_iter().filter(|(_, a)| a.name == "sorteo").count();
    assert_eq!(draws, 1, "one draw, whatever happened");
}

fn wait_uploading(p: &Project) {
    p.wait_for("server", "action: apuesta_recibida", LONG);
}

fn restarts(p: &Project) -> u32 {
    p.inspect("server", "{{.RestartCount}}").parse().unwrap()
}

#[test]
fn the_server_killed_from_the_host_mid_upload_comes_back_by_itself_and_the_round_is_exact() {
    let p = Project::new(5);
    let expected = slow_round(&p);
    p.up(&[]);
    wait_uploading(&p);
    let recovered = || p.actions("server").into_iter().filter(|(_, a)| a.name == "recover").count();
    for kill in 1..=3 {
        std::thread::sleep(Duration::from_millis(400));
        let pid = p.inspect("server", "{{.State.Pid}}");
        run_ok("kill", &["-9", &pid], p.path());
        // Back and serving again: Docker says Running while it waits to
        // restart, so wait for the new server's own line.
        p.wait_until("server", LONG, "a restart", || restarts(&p) == kill && recovered() == kill as usize);
    }
    assert_round_exact(&p, &expected);
    assert_eq!(recovered(), 3, "one recover line per restart");
}

#[test]
fn docker_kill_leaves_the_server_down_and_docker_start_resumes_the_round() {
    let p = Project::new(5);
    let expected = slow_round(&p);
    p.up(&[]);
    wait_uploading(&p);
    run_ok("docker", &["kill", "server"], p.path());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(p.inspect("server", "{{.State.Status}}"), "exited", "a manual kill is not undone");
    run_ok("docker", &["start", "server"], p.path());
    p.wait_for("server", "action: recover", LONG);
    assert_round_exact(&p, &expected);
}

#[test]
fn a_paused_server_costs_time_not_bets() {
    let p = Project::new(5);
    let expected = slow_round(&p);
    p.up(&[]);
    wait_uploading(&p);
    run_ok("docker", &["pause", "server"], p.path());
    std::thread::sleep(Duration::from_secs(3));
    run_ok("docker", &["unpause", "server"], p.path());
    assert_round_exact(&p, &expected);
}

#[test]
fn an_agency_cut_off_the_network_rides_it_out() {
    let p = Project::new(5);
    let expected = slow_round(&p);
    p.up(&[]);
    p.wait_for("client1", "action: config", LONG);
    wait_uploading(&p);
    run_ok("docker", &["network", "disconnect", "tp0_testing_net", "client1"], p.path());
    // Longer than the agency's reply timeout (10 s): it gives up on that
    // connection, retries while the network is gone, and resumes.
    std::thread::sleep(Duration::from_secs(12));
    run_ok("docker", &["network", "connect", "tp0_testing_net", "client1"], p.path());
    assert_round_exact(&p, &expected);
    let resumed = p.actions("client1").into_iter().any(|(_, a)| a.name == "reconnect");
    assert!(resumed, "client1 lost its connection and came back");
}

#[test]
fn a_restart_resumes_the_round_stop_is_final_and_down_then_up_starts_a_new_one() {
    let p = Project::new(2);
    p.client_config(100, "10ms", "INFO", 10);
    let expected = p.sample_files(&[50, 40], 9);
    p.up(&[]);
    assert_round_exact(&p, &expected);

    run_ok("docker", &["restart", "server"], p.path());
    let line = p.wait_for("server", "action: recover", LONG).action().unwrap();
    assert_eq!(
        (line.get("round"), line.get("bets"), line.get("finished"), line.get("state")),
        (Some("1"), Some("90"), Some("2"), Some("drawn"))
    );

    let out = p.compose(&["stop", "-t", "10"]);
    assert!(out.status.success());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        p.inspect("server", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 0",
        "stop is not undone"
    );

    // The course's suite between two tests: down without -v, then up.
    let old =
        p.inspect("server", r#"{{range .Mounts}}{{if eq .Destination "/data"}}{{.Name}}{{end}}{{end}}"#);
    let out = p.compose(&["down"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    p.up(&["server"]);
    let fresh = p.wait_for("server", "action: new_round", LONG);
    assert!(fresh.text.contains("| agencies: 2"), "{}", fresh.text);
    assert!(p.bets_file().is_empty(), "a new round starts empty");
    // Nothing was deleted: the old round is still in its volume.
    let kept = run("docker", &["volume", "inspect", &old], p.path());
    assert!(kept.status.success(), "the volume {old} of the old round is gone");
    let _ = run("docker", &["volume", "rm", &old], p.path());
}
