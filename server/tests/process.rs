//! The real `server` binary: its log lines, its configuration errors, its
//! listen backlog, and its round across a `kill -9` and a second server on
//! the same storage (its shutdown in every state: `shutdown.rs`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{ack, batch, bet, Raw};
use protocol::Message;
use testkit::{wait_listening, RunningServer, ServerBuilder, Signal, EXIT_WITHIN, START_WITHIN};

const SERVER: &str = env!("CARGO_BIN_EXE_server");

/// A server working in `dir` as these tests start it: two agencies, a
/// listen backlog of 7, INFO, the test credentials, a free port.
fn server(dir: &Path) -> ServerBuilder {
    ServerBuilder::new(dir).binary(SERVER).agencies(2).backlog(7).credentials(common::credentials())
}

/// Waits until the server started by `command` listens (it logs nowhere
/// a test can read); panics if it exits or never does.
fn wait_for_listener(server: &mut std::process::Child, settings: &ServerBuilder) {
    let alive = || matches!(server.try_wait(), Ok(None));
    assert!(wait_listening(settings.addr(), START_WITHIN, alive), "the server never listened");
}

#[test]
fn the_first_lines_are_config_and_accept_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path()).start();
    let config = &server.actions()[0];
    assert_eq!(config.get("listen_backlog"), Some("7"));
    assert_eq!(config.get("logging_level"), Some("INFO"));
    assert!(server.seen[1].ends_with("INFO     action: accept_connections | result: in_progress"));
    let round = server.wait_for("action: new_round", Duration::from_secs(5));
    assert!(round.contains("| agencies: 2"), "{round}");
}

/// Without a revocation list the server still runs, and says at start
/// what that costs.
#[test]
fn no_revocation_list_is_a_warning_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path()).env("SERVER_TLS_CRL", "").start();
    let line = server.wait_for("action: revocation_list", Duration::from_secs(5));
    assert!(line.contains("WARNING") && line.contains("result: fail") && line.contains("revoked"), "{line}");
    let dir = tempfile::tempdir().unwrap();
    let mut server = self::server(dir.path()).start();
    server.wait_for("action: new_round", Duration::from_secs(5));
    server.stop();
    assert!(!server.has_action("revocation_list", "fail"), "{:?}", server.seen);
}

#[test]
fn the_listen_backlog_is_applied_to_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).start();
    let port = server.port();
    // For a listening socket, `ss` shows the backlog as Send-Q.
    let out = std::process::Command::new("ss").args(["-ltnH", &format!("sport = :{port}")]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let send_q: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(send_q.get(2), Some(&"7"), "ss said: {text}");
}

#[test]
fn a_bad_setting_is_one_clear_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    for (env, key) in [
        (vec![("SERVER_PORT", "http".to_string())], "SERVER_PORT"),
        (
            vec![("SERVER_PORT", "1".to_string()), ("LOGGING_LEVEL", "INFO".to_string())],
            "SERVER_LISTEN_BACKLOG",
        ),
        (
            vec![
                ("SERVER_PORT", "1".to_string()),
                ("SERVER_LISTEN_BACKLOG", "1".to_string()),
                ("LOGGING_LEVEL", "LOUD".to_string()),
            ],
            "LOGGING_LEVEL",
        ),
    ] {
        let bare = ServerBuilder::bare(dir.path()).binary(SERVER);
        let mut server = env.iter().fold(bare, |server, (key, value)| server.env(key, value)).spawn();
        let status = server.wait_exit(EXIT_WITHIN);
        let stderr = server.stderr();
        assert!(!status.success());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(key) && !stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn the_config_file_is_read_from_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing in the environment: every setting from the folder.
    let server = ServerBuilder::bare(dir.path()).binary(SERVER);
    let port = server.port_number();
    std::fs::write(
        dir.path().join("config.ini"),
        format!("[DEFAULT]\nSERVER_PORT = {port}\nSERVER_IP = server\nSERVER_LISTEN_BACKLOG = 3\nLOGGING_LEVEL = debug"),
    )
    .unwrap();
    // And the credentials from `.credentials/` there, where the README's
    // native steps make them.
    testkit::credentials::make(&dir.path().join(".credentials"), 1);
    let server = server.start();
    let line = server.seen.iter().find(|l| l.contains("action: config")).expect("a config line");
    assert!(line.ends_with(&format!("port: {port} | listen_backlog: 3 | logging_level: debug")), "{line}");
    server.assert_clean_stop(Signal::SIGTERM);
}

#[tokio::test]
async fn after_a_kill_9_the_server_resumes_its_round_and_says_what_it_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path()).start();
    let (mut one, _) = Raw::agency(server.addr(), 1).await;
    assert_eq!(one.ask(&batch(0, vec![bet("1", 7574), bet("2", 2)])).await, ack(0, 2));
    assert_eq!(one.ask(&Message::Finished { bets: 2 }).await, Message::FinishedAck);
    let (mut two, _) = Raw::agency(server.addr(), 2).await;
    assert_eq!(two.ask(&batch(0, vec![bet("3", 3)])).await, ack(0, 1));
    server.kill();
    // A torn row, as a crash in the middle of a write leaves it.
    let bets = server.storage().to_path_buf();
    let mut text = std::fs::read(&bets).unwrap();
    text.extend_from_slice("2,Noelia,Ál".as_bytes());
    std::fs::write(&bets, &text).unwrap();

    let mut server = server.restart();
    let line = server.wait_for("action: recover", Duration::from_secs(5));
    for field in ["| round: 1 |", "| state: open |", "| bets: 3 |", "| finished: 1 |", "| cut_bytes: 12 |"] {
        assert!(line.contains(field), "{field} in {line}");
    }
    let (mut two, welcome) = Raw::agency(server.addr(), 2).await;
    assert!(matches!(welcome, Message::Welcome { stored: 1, finished: false, .. }), "{welcome:?}");
    assert_eq!(two.ask(&batch(1, vec![bet("4", 7574)])).await, ack(1, 1));
    assert_eq!(two.ask(&Message::Finished { bets: 2 }).await, Message::FinishedAck);
    let winners = two.ask(&Message::WinnersQuery { wait_ms: 0 }).await;
    assert_eq!(winners, Message::Winners { last: true, documents: vec!["4".into()] });
    server.wait_for("action: sorteo", Duration::from_secs(5));
    let stored: Vec<String> = common::stored(&bets).into_iter().map(|b| b.document).collect();
    assert_eq!(stored, ["1", "2", "3", "4"]);
    tokio::task::spawn_blocking(move || server.assert_clean_stop(Signal::SIGTERM)).await.unwrap();
}

#[test]
fn a_second_server_on_the_same_storage_refuses_with_one_line_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = server(dir.path()).start();
    let files = || -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        files
    };
    let before = files();
    let mut second = server(dir.path()).agencies(3).spawn();
    let status = second.wait_exit(EXIT_WITHIN);
    assert!(!status.success());
    let refusals: Vec<_> = second.actions().into_iter().filter(|a| a.result == "fail").collect();
    assert_eq!(refusals.len(), 1, "{:?}", second.seen);
    assert_eq!(refusals[0].name, "open_round");
    assert!(refusals[0].get("error").unwrap().contains("another server is using this storage"));
    assert!(!second.has_action("accept_connections", "in_progress"), "it never listens");
    assert_eq!(files(), before);
    first.assert_clean_stop(Signal::SIGTERM);
}

/// `chattr` on `path`; false where the filesystem or the user cannot.
fn chattr(flag: &str, path: &Path) -> bool {
    let out = std::process::Command::new("chattr").arg(flag).arg(path).output();
    out.is_ok_and(|o| o.status.success())
}

/// Storage that fails and cannot be cut back to its last durable state
/// (an immutable file: writes and truncation both refused) stops the
/// server with a non-zero exit; a restart recovers what was acknowledged.
/// Both files: the bets file mid-upload, the journal at the draw.
/// A round deleted under the running server (the storage folder removed
/// mid-upload): the server acknowledges nothing more, says in one line
/// that the round's files are gone, and exits 1.
#[tokio::test]
async fn a_round_deleted_under_the_server_stops_it_without_another_ack() {
    let dir = tempfile::tempdir().unwrap();
    let round = dir.path().join("round");
    std::fs::create_dir(&round).unwrap();
    let server = server(dir.path()).agencies(1).storage(round.join("bets.csv")).start();
    let (mut agency, _) = Raw::agency(server.addr(), 1).await;
    assert_eq!(agency.ask(&batch(0, vec![bet("1", 1)])).await, ack(0, 1));
    std::fs::remove_dir_all(&round).unwrap();
    let reply = agency.ask(&batch(1, vec![bet("2", 2)])).await;
    assert!(matches!(reply, Message::Error { code: protocol::ErrorCode::ShuttingDown, .. }), "{reply:?}");
    let server = stops_with_failure(server).await;
    let gone: Vec<&String> = server.seen.iter().filter(|l| l.contains("the round's file is gone")).collect();
    assert_eq!(gone.len(), 1, "{:#?}", server.seen);
    assert!(gone[0].contains("action: store_bets | result: fail"), "{}", gone[0]);
}

/// The journal alone deleted mid-upload: the next batch's rows are synced,
/// but not acknowledged. A round deleted while the server only serves
/// winners: it stops by itself within seconds.
#[tokio::test]
async fn a_journal_deleted_or_a_round_deleted_while_idle_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).agencies(1).start();
    let (mut agency, _) = Raw::agency(server.addr(), 1).await;
    assert_eq!(agency.ask(&batch(0, vec![bet("1", 1)])).await, ack(0, 1));
    std::fs::remove_file(dir.path().join("bets.csv.journal")).unwrap();
    let reply = agency.ask(&batch(1, vec![bet("2", 2)])).await;
    assert!(matches!(reply, Message::Error { code: protocol::ErrorCode::ShuttingDown, .. }), "{reply:?}");
    let server = stops_with_failure(server).await;
    assert!(server.seen.iter().any(|l| l.contains("the round's file is gone") && l.contains("journal")));

    let dir = tempfile::tempdir().unwrap();
    let round = dir.path().join("round");
    std::fs::create_dir(&round).unwrap();
    let server = self::server(dir.path()).agencies(1).storage(round.join("bets.csv")).start();
    let (mut agency, _) = Raw::agency(server.addr(), 1).await;
    assert_eq!(agency.ask(&batch(0, vec![bet("1", 7574)])).await, ack(0, 1));
    assert_eq!(agency.ask(&Message::Finished { bets: 1 }).await, Message::FinishedAck);
    std::fs::remove_dir_all(&round).unwrap();
    let server = stops_with_failure(server).await;
    assert!(server.seen.iter().any(|l| l.contains("the round's file is gone")), "{:#?}", server.seen);
}

/// A journal of another round beside a bets file is refused at start:
/// its checkpoints do not cover these bytes.
#[tokio::test]
async fn a_journal_of_another_round_is_refused_at_start() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for (dir, documents) in dirs.iter().zip([["1", "2"], ["3", "4"]]) {
        let settings = server(dir.path()).agencies(1);
        let mut server = settings.start();
        let (mut agency, _) = Raw::agency(settings.addr(), 1).await;
        let bets = documents.iter().map(|d| bet(d, 7574)).collect();
        assert_eq!(agency.ask(&batch(0, bets)).await, ack(0, 2));
        drop(agency);
        tokio::task::spawn_blocking(move || assert!(server.stop().success())).await.unwrap();
    }
    let journal = |dir: &tempfile::TempDir| dir.path().join("bets.csv.journal");
    std::fs::copy(journal(&dirs[1]), journal(&dirs[0])).unwrap();
    let before = std::fs::read(dirs[0].path().join("bets.csv")).unwrap();
    let mut refused = server(dirs[0].path()).agencies(1).spawn();
    assert!(!refused.wait_exit(EXIT_WITHIN).success());
    let line = refused.action("open_round").expect("an open_round line");
    assert_eq!(line.result, "fail");
    assert!(line.get("error").unwrap().contains("not those its journal checkpointed"), "{line:?}");
    assert_eq!(std::fs::read(dirs[0].path().join("bets.csv")).unwrap(), before, "left as found");
}

#[tokio::test]
async fn storage_that_cannot_be_brought_back_stops_the_server_and_a_restart_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let bets = dir.path().join("bets.csv");
    let journal = dir.path().join("bets.csv.journal");
    let settings = server(dir.path()).agencies(1);
    let server = settings.start();
    let (mut agency, _) = Raw::agency(settings.addr(), 1).await;
    assert_eq!(agency.ask(&batch(0, vec![bet("1", 7574)])).await, ack(0, 1));
    if !chattr("+i", &bets) {
        eprintln!("skipped: chattr +i needs root and a filesystem with the immutable flag (ext4, say)");
        return;
    }
    let reply = agency.ask(&batch(1, vec![bet("2", 2)])).await;
    chattr("-i", &bets);
    assert!(matches!(reply, Message::Error { code: protocol::ErrorCode::ShuttingDown, .. }), "{reply:?}");
    let server = stops_with_failure(server).await;
    assert!(server.seen.iter().any(|l| l.contains("action: store_bets | result: fail")), "{:?}", server.seen);

    let server = settings.start();
    let (mut agency, welcome) = Raw::agency(settings.addr(), 1).await;
    assert!(matches!(welcome, Message::Welcome { stored: 1, finished: false, .. }), "{welcome:?}");
    assert_eq!(agency.ask(&batch(1, vec![bet("2", 2)])).await, ack(1, 1));
    assert!(chattr("+i", &journal));
    let reply = agency.ask(&Message::Finished { bets: 2 }).await;
    chattr("-i", &journal);
    assert!(matches!(reply, Message::Error { code: protocol::ErrorCode::ShuttingDown, .. }), "{reply:?}");
    stops_with_failure(server).await;

    let server = settings.start();
    let (mut agency, welcome) = Raw::agency(settings.addr(), 1).await;
    assert!(matches!(welcome, Message::Welcome { stored: 2, finished: false, .. }), "{welcome:?}");
    assert_eq!(agency.ask(&Message::Finished { bets: 2 }).await, Message::FinishedAck);
    let winners = agency.ask(&Message::WinnersQuery { wait_ms: 0 }).await;
    assert_eq!(winners, Message::Winners { last: true, documents: vec!["1".into()] });
    tokio::task::spawn_blocking(move || server.assert_clean_stop(Signal::SIGTERM)).await.unwrap();
}

/// Waits for the server to stop on its own with a failure; returns it.
async fn stops_with_failure(server: RunningServer) -> RunningServer {
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        let status = server.wait_exit(EXIT_WITHIN);
        assert!(!status.success(), "exit status {status}");
        assert!(server.has_action("shutdown", "fail"), "{:?}", server.seen);
        server
    })
    .await
    .unwrap()
}

/// A log that cannot be written (stdout on a full disk) loses lines, never
/// the server: it serves, stores and stops cleanly.
#[tokio::test]
async fn a_stdout_that_fails_every_write_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let settings = server(dir.path()).log_level("DEBUG").agencies(1);
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut server = settings.command().stdout(full.try_clone().unwrap()).stderr(full).spawn().unwrap();
    wait_for_listener(&mut server, &settings);
    let (mut agency, _) = Raw::agency(settings.addr(), 1).await;
    assert_eq!(agency.ask(&batch(0, vec![bet("1", 7574)])).await, ack(0, 1));
    assert_eq!(agency.ask(&Message::Finished { bets: 1 }).await, Message::FinishedAck);
    testkit::send_signal(server.id(), Signal::SIGTERM);
    let status = server.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert_eq!(common::stored(&dir.path().join("bets.csv")).len(), 1);
}

/// An echo is logged as a bounded prefix and its length, every character
/// that could break a line escaped: no forged `action:` line, ever.
#[tokio::test]
async fn an_echo_is_logged_bounded_and_escaped_and_cannot_forge_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path()).start();
    let mut payload =
        "a\u{2028}action: forged | result: success\u{0}\n2024-01-01 INFO action: forged".as_bytes().to_vec();
    payload.resize(8000, b'x');
    let mut raw = Raw::connect(server.addr()).await;
    let reply = raw.ask(&Message::Echo(payload.clone().into())).await;
    assert_eq!(reply, Message::Echo(payload.into()));
    let line = server.wait_for("action: receive_message", Duration::from_secs(5));
    assert!(line.len() < 300, "{line}");
    assert!(
        line.contains("\\u{2028}") && line.contains("\\u{0}") && line.ends_with("| bytes: 8000"),
        "{line}"
    );
    assert_eq!(line.matches("action:").count(), 1, "the value's own is escaped: {line}");
    assert!(line.contains("action\\u{3a} forged"), "{line}");
    drop(raw);
    server.stop();
    // Every line parses as the course's suite reads it, and none is forged.
    assert!(server.actions().iter().all(|a| a.name != "forged"), "{:?}", server.seen);
    for l in &server.seen {
        assert!(!l.contains(['\u{2028}', '\u{2029}', '\u{85}', '\u{0}', '\r']), "{l:?}");
    }
}

/// Garbage from many connections is the peers' fault: at ERROR the server
/// says nothing about it, and each connection's lines are bounded anyway.
#[tokio::test]
async fn garbage_from_peers_is_no_error_of_the_server_and_each_connection_logs_little() {
    let dir = tempfile::tempdir().unwrap();
    // At ERROR the server says nothing when it listens: it is known by connecting.
    let mut quiet = server(dir.path()).log_level("ERROR").start();
    for garbage in [
        &b"\x00\x00\x00\x08\x03\x7fGARBAGE!"[..],
        b"\xff\xff\xff\xff",
        b"\x00\x00\x00\x01\x02",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        for _ in 0..50 {
            let mut raw = Raw::connect(quiet.addr()).await;
            raw.send_bytes(garbage).await;
            let _ = raw.reader.read().await;
        }
    }
    quiet.stop();
    assert!(quiet.seen.is_empty(), "{:?}", quiet.seen);

    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path()).start();
    let mut chatty = Raw::connect(server.addr()).await;
    for i in 0..100 {
        let echo = Message::Echo(format!("echo {i}").into_bytes().into());
        assert!(matches!(chatty.ask(&echo).await, Message::Echo(_)));
    }
    drop(chatty);
    let close = server.wait_for("action: close_connection", Duration::from_secs(5));
    // Plain frames are anonymous: the smaller budget.
    let budget = server::ANONYMOUS_LOG_LINES;
    assert!(close.contains(&format!("| unlogged_lines: {} |", 100 - budget)), "{close}");
    let echoes = server.seen.iter().filter(|l| l.contains("action: receive_message")).count();
    assert_eq!(echoes, budget as usize);
    assert!(server.seen.iter().any(|l| l.contains("action: log_budget")));
    tokio::task::spawn_blocking(move || server.assert_clean_stop(Signal::SIGTERM)).await.unwrap();
}

/// A flood of every kind of connection a peer without a certificate can
/// make (echoes, requests that need an agency, TLS without a
/// certificate, silence), from many connections at once for 10 s: all the
/// lines peers cause together stay within the stated rate, and what was
/// left out is counted at most once a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_peers_cannot_flood_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = self::server(dir.path()).agencies(8).env("SERVER_AUTH_TIMEOUT", "1s").start();
    let (addr, from) = (server.addr(), std::net::IpAddr::from([127, 0, 0, 3]));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..40 {
        let stop = stop.clone();
        flood.spawn(async move {
            while !stop.is_cancelled() {
                let Ok(stream) = common::connect_from(from, addr).await else { continue };
                tokio::select! {
                    () = flood_with(i % 5, 1 + i as u32 / 5, stream, addr) => {}
                    () = stop.cancelled() => {}
                }
            }
        });
    }
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.cancel();
    flood.join_all().await;
    let server = tokio::task::spawn_blocking(move || {
        assert!(server.stop().success());
        server
    })
    .await
    .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let caused = server.seen.iter().filter(|l| l.contains("| ip: 127.0.0.3")).count();
    let bound = (elapsed + 1.0) * f64::from(server::PEER_LINES_PER_SECOND);
    assert!((caused as f64) <= bound, "{caused} lines peers caused in {elapsed:.1} s");
    let reports: Vec<&String> = server.seen.iter().filter(|l| l.contains("scope: all peers")).collect();
    assert!(!reports.is_empty(), "the lines left out are counted");
    assert!(reports.len() as f64 <= elapsed + 2.0, "{} reports in {elapsed:.1} s", reports.len());
    let left_out = |line: &&String| -> u64 {
        edge::log::parse_action(line).unwrap().get("unlogged_lines").unwrap().parse().unwrap()
    };
    let unlogged: u64 = reports.iter().map(left_out).sum();
    assert!(unlogged > 0, "the flood caused more than the budget: {caused} logged, {unlogged} left out");
}

/// One connection of a flood, of kind `kind`, until the server closes it:
/// echoes, Hello over plain TCP, Hello over TLS without a certificate, a
/// silent connection, and a stolen certificate's (`agency`'s) Hello, then
/// close.
async fn flood_with(kind: usize, agency: u32, stream: tokio::net::TcpStream, addr: std::net::SocketAddr) {
    use protocol::{MessageReader, MessageWriter, MAX_FRAME_LEN};
    let stream: Box<dyn common::Io> = match kind {
        2 | 4 => {
            let config = match kind {
                2 => common::anonymous_tls(&common::credentials()),
                _ => edge::credentials::client_config(&testkit::credentials::agency(
                    &common::credentials(),
                    agency,
                ))
                .unwrap(),
            };
            let name = protocol::tls::server_name(&addr.to_string()).unwrap();
            match protocol::tls::TlsConnector::from(config).connect(name, stream).await {
                Ok(tls) => Box::new(tls),
                Err(_) => return,
            }
        }
        _ => Box::new(stream),
    };
    let (read, write) = tokio::io::split(stream);
    let (mut reader, mut writer) = (MessageReader::new(read, MAX_FRAME_LEN), MessageWriter::new(write));
    let request = match kind {
        0 => Message::Echo(b"flood".to_vec().into()),
        1 | 2 => Message::Hello { agency: 1, round: 1, wait_ms: 0 },
        4 => {
            let _ = writer.send(&Message::Hello { agency, round: 1, wait_ms: 0 }).await;
            let _ = reader.read().await;
            return;
        }
        _ => return drop(reader.read().await),
    };
    while writer.send(&request).await.is_ok() {
        if !matches!(reader.read().await, Ok(Some(Message::Echo(_)))) {
            return;
        }
    }
}

/// A reader of the log that stalls (stdout a pipe nobody reads) costs
/// lines, never service: an upload that logs a line per bet completes, and
/// the lines dropped are counted at exit.
#[tokio::test]
async fn a_stalled_log_costs_lines_not_service() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let settings = server(dir.path()).log_level("DEBUG");
    let mut server = settings
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_listener(&mut server, &settings);
    // A line per bet, far more than the pipe and the log's buffer hold.
    let (mut agency, _) = Raw::agency(settings.addr(), 1).await;
    let per_batch = 50;
    // (A line per bet is longer than 64 bytes.)
    let batches = 2 * (edge::log::BUFFERED_BYTES / 64) / per_batch;
    let upload = async {
        for b in 0..batches {
            let first = (b * per_batch) as u64;
            let bets = (0..per_batch).map(|i| bet(&(first as usize + i).to_string(), 1)).collect();
            assert_eq!(agency.ask(&batch(first, bets)).await, ack(first, per_batch as u16));
        }
    };
    tokio::time::timeout(Duration::from_secs(30), upload).await.expect("the upload waited on the log");
    drop(agency);
    // Now read the log, and stop the server.
    let mut stdout = server.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        stdout.read_to_string(&mut log).unwrap();
        log
    });
    std::thread::sleep(Duration::from_millis(200));
    testkit::send_signal(server.id(), Signal::SIGTERM);
    assert!(server.wait().unwrap().success());
    let log = reader.join().unwrap();
    let dropped =
        log.lines().find(|l| l.contains("action: log | result: fail")).expect("the count of dropped lines");
    let count: usize =
        dropped.split("| dropped_lines: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let kept = log.lines().filter(|l| l.contains("action: apuesta_almacenada")).count();
    assert!(count > 0 && kept + count >= batches * per_batch, "{kept} kept, {count} dropped");
    assert_eq!(common::stored(&dir.path().join("bets.csv")).len(), batches * per_batch);
}

/// Each connection's lines come out in the order of its requests: three
/// agencies pipeline their batches at once, and each one's bets are logged
/// in the order they are stored (the replies' futures finish in any order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connections_lines_keep_the_order_of_its_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path()).agencies(3).log_level("DEBUG").start();
    let addr = server.addr();
    let (batches, per_batch) = (60u64, 20u64);
    let document = |agency: u32, bet: u64| format!("{agency}{bet:06}");
    let uploads = (1..=3).map(|agency| {
        tokio::spawn(async move {
            let (mut raw, _) = Raw::agency(addr, agency).await;
            for b in 0..batches {
                let first = b * per_batch;
                let bets = (first..first + per_batch).map(|i| bet(&document(agency, i), 1)).collect();
                raw.send(&batch(first, bets)).await;
            }
            for b in 0..batches {
                assert_eq!(raw.recv().await, Some(ack(b * per_batch, per_batch as u16)));
            }
        })
    });
    for upload in uploads.collect::<Vec<_>>() {
        upload.await.unwrap();
    }
    server.stop();
    let actions = server.actions();
    for agency in 1..=3 {
        let logged: Vec<String> = actions
            .iter()
            .filter(|a| a.name == "apuesta_almacenada")
            .filter_map(|a| a.get("dni").filter(|d| d.starts_with(&agency.to_string())).map(str::to_owned))
            .collect();
        let stored: Vec<String> = (0..batches * per_batch).map(|i| document(agency, i)).collect();
        assert_eq!(logged, stored, "agency {agency}'s bets, logged in the order they were stored");
    }
}

/// Every connection gets its `close_connection` line, the ones the
/// shutdown has to abort (a peer that never reads) included.
#[tokio::test]
async fn every_closed_connection_gets_its_line_aborted_ones_included() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path()).start();
    let addr = server.addr();
    let (mut greedy, _) = Raw::agency(addr, 1).await;
    let mut frame = bytes::BytesMut::new();
    Message::Echo(vec![b'x'; 8000].into()).encode(&mut frame);
    let flood = tokio::spawn(async move {
        // Never reads: the server's replies back up, its writes block.
        while tokio::io::AsyncWriteExt::write_all(greedy.writer.get_mut(), &frame).await.is_ok() {}
    });
    let (_uploading, _) = Raw::agency(addr, 2).await;
    let _idle = Raw::connect(addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = tokio::task::spawn_blocking(move || {
        let status = server.stop();
        assert!(status.success(), "exit status {status}");
        // The peer that never reads cannot be waited for: the server kept
        // its budget by aborting it once its grace was over.
        let joined = server.action("join_sessions").expect("a join_sessions line");
        assert_eq!(joined.get("aborted"), Some("yes"), "{}", server.seen.join("\n"));
        server
    })
    .await
    .unwrap();
    flood.abort();
    let closes: Vec<&String> =
        server.seen.iter().filter(|l| l.contains("action: close_connection")).collect();
    assert_eq!(closes.len(), 3, "{closes:#?}");
    assert!(closes.iter().any(|l| l.contains("reason: aborted at shutdown")), "{closes:#?}");
}
