//! The course's checks, through Compose and the containers' logs.

use std::collections::HashMap;
use std::time::Duration;

use e2e::{run, Project};

const LONG: Duration = Duration::from_secs(60);

/// Docker's grace in a stop: past it Docker kills the container (exit code
/// 137), so an exit 0 says the program stopped on its own within it. How
/// promptly is for its own lines to say, not for the clock of a loaded
/// machine.
const STOP_GRACE: u32 = 20;

/// `rows` bets for agency files, winners (number 7574) at the given rows.
fn rows(count: usize, winners: &[usize]) -> String {
    (0..count)
        .map(|i| {
            let number = if winners.contains(&i) { 7574 } else { i % 7000 };
            format!("José María,Núñez,{},1990-05-{:02},{number}\n", 20_000_000 + i, 1 + i % 28)
        })
        .collect()
}

#[test]
fn edited_configs_show_in_the_config_lines_without_a_rebuild() {
    let p = Project::new(1);
    p.server_config(12345, 7, "DEBUG");
    p.client_config(7, "150ms", "debug", 10);
    p.up(&[]);
    let config_line = |container: &str, fields: &str| {
        let line = p.wait_for(container, "action: config", LONG);
        let expected = format!("action: config | result: success | {fields}");
        assert!(line.text.ends_with(&expected), "{}", line.text);
    };
    config_line("server", "port: 12345 | listen_backlog: 7 | logging_level: DEBUG");
    config_line(
        "client1",
        "client_id: 1 | server_address: server:12345 | loop_amount: 7 | loop_period: 150ms | log_level: debug",
    );
    let first_two: Vec<String> = p.actions("server").into_iter().take(2).map(|(_, a)| a.name).collect();
    assert_eq!(first_two, ["config", "accept_connections"]);
}

/// Runs `sh validar-echo-server.sh` in the project: (stdout, stderr, exit code).
fn validate(p: &Project) -> (String, String, Option<i32>) {
    let out = run("sh", &["validar-echo-server.sh"], p.path());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out.stdout), text(&out.stderr), out.status.code())
}

const ECHO_SUCCESS: &str = "action: test_echo_server | result: success\n";
const ECHO_FAIL: &str = "action: test_echo_server | result: fail\n";

#[test]
fn the_echo_validation_passes_against_our_server() {
    let p = Project::new(0);
    p.up(&[]);
    p.wait_for("server", "accept_connections", LONG);
    let (stdout, stderr, code) = validate(&p);
    assert_eq!((stdout.as_str(), code), (ECHO_SUCCESS, Some(0)), "{stderr}");
    let line = p.wait_for("server", "action: receive_message", LONG);
    assert!(line.text.contains("| ip: 172.25.125."), "{}", line.text);
}

/// The course's own flow on an engine that has only the images this flow
/// builds: the validation makes its busybox image itself, without a
/// registry, and passes.
#[test]
fn the_course_flow_passes_the_echo_validation_on_an_engine_without_busybox() {
    let p = Project::new(0);
    let _ = run("docker", &["rmi", "-f", "busybox:latest"], p.path());
    let absent = run("docker", &["image", "inspect", "busybox:latest"], p.path());
    assert!(!absent.status.success(), "busybox:latest is still there");

    e2e::run_ok("make", &["build"], &e2e::repo());
    for image in ["server", "client"] {
        let dockerfile = format!("./{image}/Dockerfile");
        let tag = format!("{image}:latest");
        e2e::run_ok("docker", &["build", "-f", &dockerfile, "-t", &tag, "."], &e2e::repo());
    }
    p.up(&[]);
    p.wait_for("server", "accept_connections", LONG);
    let (stdout, stderr, code) = validate(&p);
    assert_eq!((stdout.as_str(), code), (ECHO_SUCCESS, Some(0)), "{stderr}");
    assert!(stderr.contains("made busybox:latest"), "{stderr}");
    let present = run("docker", &["image", "inspect", "busybox:latest"], p.path());
    assert!(present.status.success());
}

#[test]
fn the_echo_validation_judges_any_server_named_server_and_says_why_it_fails() {
    let p = Project::new(0);
    e2e::busybox_image();

    let (stdout, stderr, code) = validate(&p);
    assert_eq!((stdout.as_str(), code), (ECHO_FAIL, Some(1)), "no network at all");
    assert!(stderr.contains("cannot probe: there is no network tp0_testing_net"), "{stderr}");

    let net = ["network", "create", "--subnet", "172.25.125.0/24", "tp0_testing_net"];
    e2e::run_ok("docker", &net, p.path());
    let (stdout, stderr, code) = validate(&p);
    assert_eq!((stdout.as_str(), code), (ECHO_FAIL, Some(1)), "no server at all");
    assert!(stderr.contains("did not answer"), "{stderr}");

    for (command, expected, why) in
        [("cat", ECHO_SUCCESS, ""), ("tr a-z A-Z", ECHO_FAIL, "not with the bytes it was sent")]
    {
        let server = [
            "run",
            "-d",
            "--rm",
            "--name",
            "server",
            "--network",
            "tp0_testing_net",
            "busybox:latest",
            "nc",
            "-ll",
            "-p",
            "12345",
            "-e",
            "sh",
            "-c",
            command,
        ];
        e2e::run_ok("docker", &server, p.path());
        std::thread::sleep(Duration::from_millis(500));
        let (stdout, stderr, _) = validate(&p);
        assert_eq!(stdout, expected, "echo server running {command:?}: {stderr}");
        assert!(stderr.contains(why), "{stderr}");
        let _ = run("docker", &["rm", "-f", "server"], p.path());
    }
    let _ = run("docker", &["network", "rm", "tp0_testing_net"], p.path());
}

/// A project whose client1 has stored its bet and now waits, polling every
/// 100 ms, for a draw that needs client2, which is never started.
fn waiting_client() -> Project {
    let p = Project::new(2);
    p.client_config(1000, "100ms", "INFO", 10);
    p.up(&["server", "client1"]);
    p.wait_for("server", "apuesta_almacenada", LONG);
    std::thread::sleep(Duration::from_millis(300));
    p
}

#[test]
fn docker_stop_of_a_waiting_client_exits_zero() {
    let p = waiting_client();
    p.stop("client1", STOP_GRACE);
    assert_eq!(p.wait_exit("client1", LONG), 0, "stopped on its own, within Docker's grace");
    let names: Vec<String> = p.actions("client1").into_iter().map(|(_, a)| a.name).collect();
    for line in ["signal", "close_connection", "shutdown"] {
        assert!(names.iter().any(|n| n == line), "no {line} in {names:?}");
    }
    p.assert_no_fail("client1");
}

/// Stops the server and checks the whole shutdown: exit 0 within Docker's
/// grace, every closing line, and every session ended within the server's
/// own grace (`aborted: no`), which is how it keeps the contract's 2 s.
fn assert_server_stops_cleanly(p: &Project) {
    p.stop("server", STOP_GRACE);
    assert_eq!(p.wait_exit("server", LONG), 0, "stopped on its own, within Docker's grace");
    let actions: Vec<_> = p.actions("server").into_iter().map(|(_, a)| a).collect();
    let names: Vec<&str> = actions.iter().map(|a| a.name.as_str()).collect();
    for line in ["close_listener", "join_sessions", "close_file", "join_writer", "shutdown"] {
        assert!(names.contains(&line), "no {line} in {names:?}");
    }
    let joined = actions.iter().find(|a| a.name == "join_sessions").expect("a join_sessions line");
    assert_eq!(joined.get("aborted"), Some("no"), "{joined:?}");
}

#[test]
fn docker_stop_of_the_server_without_clients_exits_zero() {
    let p = Project::new(0);
    p.up(&[]);
    p.wait_for("server", "accept_connections", LONG);
    assert_server_stops_cleanly(&p);
}

#[test]
fn docker_stop_of_the_server_with_a_client_waiting_exits_zero() {
    let p = waiting_client();
    assert_server_stops_cleanly(&p);
}

#[test]
fn compose_stop_stops_everything_with_exit_zero() {
    let p = waiting_client();
    let out = p.compose(&["stop", "-t", "10"]);
    assert!(out.status.success());
    assert_eq!(p.wait_exit("server", LONG), 0);
    assert_eq!(p.wait_exit("client1", LONG), 0);
    p.assert_no_fail("client1");
    p.assert_no_fail("server");
}

#[test]
fn the_single_bet_of_the_environment_is_stored() {
    let p = Project::new(1);
    p.client_config(100, "100ms", "INFO", 10);
    p.up(&[]);
    assert_eq!(p.wait_exit("client1", LONG), 0);
    let sent = p.wait_for("client1", "action: apuesta_enviada", LONG).action().unwrap();
    let stored = p.wait_for("server", "action: apuesta_almacenada", LONG).action().unwrap();
    assert_eq!(sent.get("dni"), Some("30904465"));
    assert_eq!((sent.get("dni"), sent.get("numero")), (stored.get("dni"), stored.get("numero")));
    p.assert_no_fail("client1");
    p.assert_no_fail("server");
}

#[test]
fn batches_hold_max_amount_bets_but_the_last() {
    for count in [64, 99] {
        let p = Project::new(1);
        p.client_config(100, "10ms", "INFO", 10);
        p.agency_file(1, &rows(count, &[]));
        p.up(&[]);
        assert_eq!(p.wait_exit("client1", LONG), 0);
        let sizes: Vec<usize> = p
            .actions("server")
            .into_iter()
            .filter(|(_, a)| a.name == "apuesta_recibida")
            .map(|(_, a)| {
                assert_eq!(a.result, "success");
                a.get("cantidad").unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), count, "{sizes:?}");
        let (last, rest) = sizes.split_last().unwrap();
        assert!(rest.iter().all(|&s| s == 10) && *last <= 10, "{sizes:?}");
        p.assert_no_fail("server");
    }
}

/// Runs one agency file per client and checks each agency's winners count
/// and that the draw sits between every upload and every answer.
fn check_draw(files: &[String], expected: &[usize]) {
    let p = Project::new(files.len());
    p.client_config(1000, "50ms", "INFO", 10);
    for (i, file) in files.iter().enumerate() {
        p.agency_file(i + 1, file);
    }
    p.up(&[]);
    let server_at = |name: &str| -> Vec<String> {
        p.actions("server").into_iter().filter(|(_, a)| a.name == name).map(|(at, _)| at).collect()
    };
    let mut counts = HashMap::new();
    for k in 1..=files.len() {
        let client = format!("client{k}");
        assert_eq!(p.wait_exit(&client, LONG), 0);
        let (at, line) = p
            .actions(&client)
            .into_iter()
            .find(|(_, a)| a.name == "consulta_ganadores")
            .unwrap_or_else(|| panic!("{client} logged no consulta_ganadores"));
        assert_eq!(line.result, "success");
        counts.insert(k, (at, line.get("cant_ganadores").unwrap().parse::<usize>().unwrap()));
        p.assert_no_fail(&client);
    }
    let sorteo = server_at("sorteo");
    assert_eq!(sorteo.len(), 1, "exactly one draw");
    assert!(server_at("apuesta_recibida").iter().all(|at| *at < sorteo[0]));
    for (k, expected) in expected.iter().enumerate() {
        let (at, count) = &counts[&(k + 1)];
        assert_eq!(count, expected, "agency {}", k + 1);
        assert!(*at > sorteo[0], "client{} answered before the draw", k + 1);
    }
    p.assert_no_fail("server");
}

#[test]
fn three_agencies_get_two_one_and_zero_winners() {
    check_draw(&[rows(100, &[0, 99]), rows(100, &[50]), rows(100, &[])], &[2, 1, 0]);
}

#[test]
fn five_agencies_get_one_to_five_winners() {
    let files: Vec<String> = (1..=5).map(|w| rows(60, &(0..w).map(|i| i * 11).collect::<Vec<_>>())).collect();
    check_draw(&files, &[1, 2, 3, 4, 5]);
}

/// The images hold their binary and nothing else: no credential, no data.
#[test]
fn the_images_hold_their_binary_and_no_credential() {
    let _only = e2e::exclusive();
    let dir = tempfile::tempdir().unwrap();
    for image in ["server", "client"] {
        let container = e2e::run_ok("docker", &["create", &format!("{image}:latest")], dir.path());
        let container = container.trim();
        let tar = dir.path().join(format!("{image}.tar"));
        e2e::run_ok("docker", &["export", "-o", tar.to_str().unwrap(), container], dir.path());
        let _ = run("docker", &["rm", container], dir.path());
        let files = e2e::run_ok("tar", &["-tf", tar.to_str().unwrap()], dir.path());
        let files: Vec<&str> = files.lines().filter(|f| !f.ends_with('/')).collect();
        // Docker adds its own empty files for the container's /etc and /.dockerenv.
        let ours: Vec<&str> = files
            .into_iter()
            .filter(|f| {
                !f.starts_with("etc/")
                    && !f.starts_with(".dockerenv")
                    && !f.starts_with("dev/")
                    && !f.starts_with("proc/")
                    && !f.starts_with("sys/")
            })
            .collect();
        assert_eq!(ours, [image], "{image}:latest holds {ours:?}");
    }
}

/// The operator closes a round in Compose, from a throwaway container on
/// the project's network (`scripts/admin.sh`, `make admin`): the server's
/// port is published nowhere.
#[test]
fn the_operator_closes_a_round_in_compose_without_a_published_port() {
    let p = Project::new(2);
    p.client_config(1000, "0s", "INFO", 10);
    p.agency_file(1, &rows(30, &[3, 17]));
    p.up(&["server", "client1"]);
    p.wait_for("server", "action: agency_finished", LONG);
    let admin = |args: &[&str]| {
        let mut all = vec!["scripts/admin.sh"];
        all.extend(args);
        let out = run("sh", &all, p.path());
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, said, why) = admin(&["open"]);
    assert!(!ok && said.is_empty() && why.contains("round 1 is open"), "{said} {why}");
    let (ok, said, why) = admin(&["close"]);
    assert!(ok && said == "round 1 closed (operator): 30 bets, 2 winners", "{said} {why}");
    assert_eq!(p.wait_exit("client1", LONG), 0, "client1 gets its winners at the close");
    let winners = p.wait_for("client1", "action: consulta_ganadores", LONG);
    assert!(winners.text.ends_with("cant_ganadores: 2"), "{}", winners.text);
    let cierre = p.wait_for("server", "action: cierre", LONG);
    assert!(cierre.text.ends_with("round: 1 | reason: operator | bets: 30"), "{}", cierre.text);
    let (ok, json, why) = admin(&["status", "--json"]);
    let status: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json} {why}"));
    assert!(ok);
    assert_eq!((status["state"].as_str(), status["winners"].as_u64()), (Some("drawn"), Some(2)));
    let ports = p.inspect("server", "{{json .NetworkSettings.Ports}}");
    assert!(!ports.contains("12345/tcp\":[{"), "the agencies' port is published nowhere: {ports}");
}

/// The server's health check is its own binary's (`server health`), and
/// its status page is published on the host's loopback only.
#[test]
fn compose_sees_the_server_healthy_and_the_page_on_the_hosts_loopback() {
    let p = Project::new(1);
    p.client_config(1000, "0s", "INFO", 10);
    p.agency_file(1, &rows(20, &[3]));
    p.up(&[]);
    p.wait_until("server", LONG, "a healthy server", || {
        p.inspect("server", "{{.State.Health.Status}}") == "healthy"
    });
    let ports = p.inspect("server", "{{json .NetworkSettings.Ports}}");
    assert!(ports.contains("\"8074/tcp\":[{\"HostIp\":\"127.0.0.1\""), "{ports}");
    let ask = |path: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", 8074)).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let health = ask("/healthz");
    assert!(
        health.starts_with("HTTP/1.") && health.contains(" 200 ") && health.ends_with("serving\n"),
        "{health}"
    );
    assert_eq!(p.wait_exit("client1", LONG), 0);
    let status = ask("/status.json");
    assert!(status.contains("\"state\":\"drawn\""), "{status}");
    assert!(ask("/metrics").contains("lottery_bets_stored_total{agency=\"1\"} 20"));
}
