//! The operator and rounds over time with the real binaries: `server
//! admin` (its output, its refusals, who may run it), the operator's close
//! in the middle of an agency's upload (every acknowledged bet drawn,
//! nothing after the close), a `kill -9` right after a close, and an
//! agency that waits for its round to open.

mod common;

use std::path::Path;
use std::time::Duration;

use testkit::{RunningServer, ServerBuilder, EXIT_WITHIN};

const SERVER: &str = env!("CARGO_BIN_EXE_server");

fn server(dir: &Path, agencies: u32) -> ServerBuilder {
    ServerBuilder::new(dir).binary(SERVER).agencies(agencies).credentials(common::credentials())
}

/// `server admin ARGS` as the operator: exit success, stdout, stderr.
fn admin(server: &RunningServer, args: &[&str]) -> (bool, String, String) {
    admin_with(server, args, &[])
}

fn admin_with(server: &RunningServer, args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let out = server.settings().admin(args, env);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim_end().to_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `rows` valid bets for agency file `path`, every tenth a winner.
fn write_rows(path: &Path, rows: usize) {
    let text: String = (0..rows)
        .map(|i| format!("Ana,Paz,{},1999-03-17,{}\n", 1000 + i, if i % 10 == 0 { 7574 } else { i }))
        .collect();
    std::fs::write(path, text).unwrap();
}

/// The highest bet an agency's DEBUG lines say was acknowledged.
fn acknowledged(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|line| line.split("bets ").nth(1)?.strip_suffix(" acknowledged"))
        .filter_map(|range| range.split("..").nth(1)?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn the_admin_command_shows_closes_and_opens_and_says_why_not_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path(), 2).start();
    let (ok, table, _) = admin(&server, &["status"]);
    assert!(ok && table.starts_with("round 1: open") && table.contains("0/2 agencies finished"), "{table}");
    let (ok, json, _) = admin(&server, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(ok && json.lines().count() == 1);
    assert_eq!((status["round"].as_u64(), status["state"].as_str()), (Some(1), Some("open")));
    assert_eq!(
        status["agencies"][1],
        serde_json::json!({"agency": 2, "stored": 0, "finished": false, "connected": false, "winners": null})
    );
    assert!(status["winners"].is_null());

    let (ok, _, why) = admin(&server, &["open"]);
    assert!(!ok && why.lines().count() == 1 && why.contains("round 1 is open"), "{why}");
    let (ok, said, _) = admin(&server, &["close"]);
    assert!(ok && said == "round 1 closed (operator): 0 bets, 0 winners", "{said}");
    let cierre = server.wait_for("action: cierre", Duration::from_secs(5));
    assert!(
        cierre.ends_with("action: cierre | result: success | round: 1 | reason: operator | bets: 0"),
        "{cierre}"
    );
    let sorteo = server.wait_for("action: sorteo", Duration::from_secs(5));
    assert!(sorteo.contains("| round: 1"), "{sorteo}");
    let (ok, said, _) = admin(&server, &["open"]);
    assert!(ok && said == "round 2 opened", "{said}");
    server.wait_for("action: new_round | result: success | round: 2", Duration::from_secs(5));

    let credentials = server.settings().credentials_dir();
    let as_agency = [
        ("SERVER_ADMIN_CERT", credentials.join("agency-1.pem").display().to_string()),
        ("SERVER_ADMIN_KEY", credentials.join("agency-1.key").display().to_string()),
    ];
    let (ok, _, why) = admin_with(&server, &["close"], &as_agency);
    assert!(!ok && why.lines().count() == 1 && why.contains("cannot run the operator's commands"), "{why}");
    let (_, table, _) = admin(&server, &["status"]);
    assert!(table.starts_with("round 2: open"), "an agency's certificate changed nothing: {table}");
    server.stop();

    let (ok, _, why) = admin(&server, &["status"]);
    assert!(!ok && why.lines().count() == 1 && why.contains("cannot reach the server"), "{why}");
    let (ok, _, why) = admin_with(&server, &["status"], &[("SERVER_ADMIN_CERT", "/no/such.pem".into())]);
    assert!(!ok && why.contains("SERVER_ADMIN_CERT") && why.contains("/no/such.pem"), "{why}");
}

#[test]
fn the_operators_close_mid_upload_draws_every_acknowledged_bet_and_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path(), 2).start();
    let file = dir.path().join("agency-1.csv");
    write_rows(&file, 4000);
    // One bet a batch, a pause between batches: the upload takes a while.
    let agency = server.agency(1).data_file(&file).log_level("DEBUG").batch_max_amount(1).loop_period("2ms");
    let mut agency = agency.start();
    agency.wait_for("bets 40..41 acknowledged", Duration::from_secs(20));
    let (ok, said, _) = admin(&server, &["close"]);
    assert!(ok, "{said}");

    let status = agency.wait_exit(EXIT_WITHIN);
    assert!(!status.success(), "an agency whose round closed under it fails");
    server.wait_for("action: cierre", Duration::from_secs(5));
    let cierre = server.action("cierre").expect("a cierre line");
    let stored: u64 = cierre.get("bets").unwrap().parse().unwrap();
    let left = agency.action("ronda_cerrada").expect("the agency says its bets were left out");
    assert_eq!(left.get("left_out"), Some((4000 - stored).to_string().as_str()), "{:?}", agency.seen);
    assert_eq!(left.get("stored"), Some(stored.to_string().as_str()));
    let winners = agency.action("consulta_ganadores").expect("it still gets its winners");
    assert!(agency.has_action("loop_finished", "fail"));
    assert!(acknowledged(&agency.seen) <= stored, "every acknowledged bet is in the draw");

    server.stop();
    let bets = common::stored(server.storage());
    assert_eq!(bets.len() as u64, stored, "nothing stored after the close");
    let documents: Vec<String> = bets.iter().map(|b| b.document.clone()).collect();
    let first: Vec<String> = (0..stored).map(|i| (1000 + i).to_string()).collect();
    assert_eq!(documents, first, "the file's first bets, once each");
    let won = bets.iter().filter(|b| b.number == 7574).count();
    assert_eq!(winners.get("cant_ganadores"), Some(won.to_string().as_str()));
}

#[test]
fn a_kill_9_right_after_a_close_resumes_the_round_closed_and_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path(), 2).start();
    let file = dir.path().join("agency-1.csv");
    write_rows(&file, 30);
    let mut agency = server.agency(1).data_file(&file).start();
    server.wait_for("action: agency_finished", Duration::from_secs(10));
    let (ok, said, _) = admin(&server, &["close"]);
    assert!(ok, "{said}");
    server.kill();

    let mut server = server.restart();
    assert!(agency.wait_exit(EXIT_WITHIN).success(), "it gets its winners, across the restart");
    let line = server.wait_for("action: recover", Duration::from_secs(5));
    for field in ["| round: 1 |", "| state: drawn |", "| bets: 30 |", "| finished: 1 |"] {
        assert!(line.contains(field), "{field} in {line}");
    }
    let late = server.agency(2).env("NOMBRE", "Eva").env("APELLIDO", "Sol").env("DOCUMENTO", "9");
    let mut late = late.env("NACIMIENTO", "2000-01-01").env("NUMERO", "7574").start();
    assert!(!late.wait_exit(EXIT_WITHIN).success(), "its round closed before it came");
    let left = late.action("ronda_cerrada").expect("a ronda_cerrada line");
    assert_eq!((left.get("stored"), left.get("left_out")), (Some("0"), Some("1")));
    assert_eq!(late.action("consulta_ganadores").unwrap().get("cant_ganadores"), Some("0"));
    let mut again = server.agency(1).data_file(&file).start();
    assert!(again.wait_exit(EXIT_WITHIN).success(), "a finished agency gets its winners again");
    assert_eq!(again.action("consulta_ganadores").unwrap().get("cant_ganadores"), Some("3"));
    server.stop();
    assert!(!server.has_action("sorteo", "success"), "the draw before the kill is not run again");
    assert_eq!(common::stored(server.storage()).len(), 30);
}

#[test]
fn an_agency_of_the_next_round_waits_for_it_then_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path(), 1).start();
    let file = dir.path().join("agency-1.csv");
    write_rows(&file, 20);
    let mut early =
        server.agency(1).data_file(&file).env("CLI_ROUND", 2).env("CLI_REPLY_TIMEOUT", "1s").start();
    early.wait_for("action: esperar_ronda | result: in_progress", Duration::from_secs(10));
    assert!(admin(&server, &["close"]).0 && admin(&server, &["open"]).0);
    assert!(early.wait_exit(EXIT_WITHIN).success(), "{}", early.seen.join("\n"));
    assert_eq!(early.action("consulta_ganadores").unwrap().get("cant_ganadores"), Some("2"));
    assert_eq!(early.seen.iter().filter(|l| l.contains("esperar_ronda")).count(), 1, "said once");
    let finished = server.wait_for("action: agency_finished", Duration::from_secs(5));
    assert!(finished.contains("| round: 2 |"), "{finished}");
    server.stop();
    assert_eq!(common::stored(server.storage()).len(), 20, "round 2's bets where round 1's were");
}
