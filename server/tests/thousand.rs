//! A thousand agencies, natively: the real server, started with the
//! default soft limit of open files (1,024), which it raises itself, and
//! 1,000 real agency processes. 999 start at once (the herd), store their
//! bets and wait for the last one on their connections; meanwhile the
//! server must spend under 5 % of one core on them. Then the last agency
//! comes, and every agency gets exactly its own winners.

mod common;

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{Process, ServerBuilder};

const SERVER: &str = env!("CARGO_BIN_EXE_server");
const AGENCIES: u32 = 1000;
/// Bets of each agency's file.
const BETS: u32 = 4;

/// Agency `agency`'s file: its winners are the bets whose number is 7574.
fn write_file(path: &Path, agency: u32) -> usize {
    let winners = (agency % 3) as usize;
    let text: String = (0..BETS as usize)
        .map(|i| format!("Ana,Paz,{agency}{i:02},1999-03-17,{}\n", if i < winners { 7574 } else { 1 }))
        .collect();
    std::fs::write(path, text).unwrap();
    winners
}

/// Starts agency `agency` with its log in `dir/agency-K.log`.
fn start_agency(server: &ServerBuilder, dir: &Path, agency: u32) -> Child {
    let log = File::create(dir.join(format!("agency-{agency}.log"))).unwrap();
    let builder = server.agency(agency).data_file(dir.join(format!("agency-{agency}.csv")));
    let mut command: Command = builder.env("CLI_RETRY_TIMEOUT", "120s").command();
    command.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
    command.spawn().unwrap()
}

/// The server's own process, with a soft limit of 1,024 open files as a
/// machine gives by default.
fn start_server(settings: &ServerBuilder) -> Process {
    let mut command = settings.command();
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = 1024.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = Process::spawn(command);
    server.wait_for("action: accept_connections", testkit::START_WITHIN);
    server
}

#[test]
fn a_thousand_agencies_store_their_bets_once_wait_for_nothing_and_get_their_own_winners() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = testkit::credentials::shared(AGENCIES);
    let settings = ServerBuilder::new(dir.path()).binary(SERVER).agencies(AGENCIES).credentials(&credentials);
    let settings = settings.backlog(1024);
    let winners: Vec<usize> =
        (1..=AGENCIES).map(|k| write_file(&dir.path().join(format!("agency-{k}.csv")), k)).collect();
    let mut server = start_server(&settings);
    let limit = server.wait_for("action: open_files", Duration::from_secs(5));
    let raised: u64 = limit.rsplit("limit: ").next().unwrap().trim().parse().unwrap();
    assert!(raised > u64::from(AGENCIES) + 24, "the server raised its limit of open files: {limit}");

    let herd_started = Instant::now();
    let mut herd: Vec<Child> = (1..AGENCIES).map(|k| start_agency(&settings, dir.path(), k)).collect();
    for _ in 1..AGENCIES {
        let line = server.wait_for("action: agency_finished", Duration::from_secs(120));
        assert!(line.contains("| round: 1 |"), "{line}");
    }
    let herd_in = herd_started.elapsed();

    // 999 agencies wait on their connections: the server should be idle.
    let cpu_before = server.cpu_time().unwrap();
    let window = Duration::from_secs(5);
    std::thread::sleep(window);
    let cpu = server.cpu_time().unwrap() - cpu_before;
    let peak_kib = server.peak_rss_kib().unwrap();
    assert!(cpu < window / 20, "999 waiting agencies cost the server {cpu:?} of CPU in {window:?}");

    let last_started = Instant::now();
    let mut last = start_agency(&settings, dir.path(), AGENCIES);
    server.wait_for("action: sorteo", Duration::from_secs(60));
    let drawn = Instant::now();
    assert!(last.wait().unwrap().success());
    for child in &mut herd {
        assert!(child.wait().unwrap().success());
    }
    let all_winners = drawn.elapsed();
    eprintln!(
        "1000 agencies: the herd of 999 stored and finished in {herd_in:?}; the server spent {cpu:?} of CPU in \
         {window:?} while they waited, peak RSS {peak_kib} KiB; the last agency drew {:?} after it started, \
         and every agency had its winners {all_winners:?} after the draw",
        drawn - last_started
    );

    for (agency, expected) in (1..=AGENCIES).zip(&winners) {
        let log = std::fs::read_to_string(dir.path().join(format!("agency-{agency}.log"))).unwrap();
        let line =
            log.lines().find(|l| l.contains("action: consulta_ganadores")).unwrap_or_else(|| panic!("{log}"));
        assert!(line.ends_with(&format!("cant_ganadores: {expected}")), "agency {agency}: {line}");
        assert!(!log.contains("result: fail"), "agency {agency}: {log}");
    }
    let turned_away = ["pushed out", "no authentication", "no Hello"];
    let away: Vec<&String> =
        server.seen.iter().filter(|l| turned_away.iter().any(|t| l.contains(t))).collect();
    assert!(away.is_empty(), "the herd got in without timeouts: {away:?}");
    server.signal(testkit::Signal::SIGTERM);
    assert!(server.wait_exit(testkit::EXIT_WITHIN).success());
    let stored = common::stored(settings.storage_path());
    assert_eq!(stored.len(), (AGENCIES * BETS) as usize, "every bet once");
    let mut documents: Vec<&str> = stored.iter().map(|b| b.document.as_str()).collect();
    documents.sort_unstable();
    documents.dedup();
    assert_eq!(documents.len(), (AGENCIES * BETS) as usize, "no bet twice");
}
