//! The real `client` binary against a scripted server: its log lines, how
//! it cuts batches, how it rides out faults, and its exit on SIGTERM in
//! every state.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::{ErrorCode, Message, MessageReader, MessageWriter, MAX_FRAME_LEN};
use testkit::{free_port, AgencyBuilder, Process, Signal, EXIT_WITHIN};
use tokio::net::TcpListener;

const CLIENT: &str = env!("CARGO_BIN_EXE_client");

/// What the scripted server saw.
#[derive(Default)]
struct Seen {
    /// Bets per batch, in arrival order.
    batches: Vec<usize>,
    /// Size on the wire of each batch frame.
    frame_sizes: Vec<usize>,
    hellos: usize,
    queries: usize,
    finished: usize,
}

/// How the scripted server behaves.
#[derive(Clone, Copy)]
struct Script {
    /// Acknowledge batches (else say nothing to them).
    ack_batches: bool,
    /// Answer winners queries with one winner (else "not ready").
    draw_done: bool,
    /// Answer the first this many batches with StorageFailure.
    storage_failures: usize,
    /// Accept connections, read, and never answer anything.
    silent: bool,
}

const HEALTHY: Script = Script { ack_batches: true, draw_done: true, storage_failures: 0, silent: false };

/// A server that speaks the protocol from a script, keeping every bet it
/// acknowledged, as the real one does.
async fn scripted_server(script: Script) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    let stored = Arc::new(Mutex::new(0u64));
    let dir = testkit::credentials::shared(1);
    let tls = edge::credentials::server_config(&testkit::credentials::server(&dir), None).unwrap();
    let acceptor = protocol::tls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (record, stored, acceptor) = (record.clone(), stored.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let (r, w) = tokio::io::split(stream);
                let mut reader = MessageReader::new(r, MAX_FRAME_LEN);
                let mut writer = MessageWriter::new(w);
                while let Ok(Some(message)) = reader.read().await {
                    let reply = {
                        let mut seen = record.lock().unwrap();
                        let mut stored = stored.lock().unwrap();
                        match &message {
                            _ if script.silent => None,
                            Message::Hello { .. } => {
                                seen.hellos += 1;
                                // Digests are the real server's business: this one
                                // is only right for a fresh start.
                                Some(Message::Welcome {
                                    stored: *stored,
                                    digest: 0,
                                    finished: false,
                                    stage: protocol::RoundStage::Open,
                                })
                            }
                            Message::BetBatch { first, bets } => {
                                seen.batches.push(bets.len());
                                seen.frame_sizes.push(message.wire_len());
                                if seen.batches.len() <= script.storage_failures {
                                    Some(Message::Error {
                                        code: ErrorCode::StorageFailure,
                                        first: *first,
                                        bet: None,
                                        reason: "disk full".into(),
                                    })
                                } else if script.ack_batches && *first == *stored {
                                    *stored += bets.len() as u64;
                                    Some(Message::BatchAck { first: *first, count: bets.len() as u16 })
                                } else if script.ack_batches {
                                    Some(Message::Error {
                                        code: ErrorCode::OutOfSequence,
                                        first: *first,
                                        bet: None,
                                        reason: format!("{stored} stored"),
                                    })
                                } else {
                                    None
                                }
                            }
                            Message::Finished { .. } => {
                                seen.finished += 1;
                                Some(Message::FinishedAck)
                            }
                            Message::WinnersQuery { .. } => {
                                seen.queries += 1;
                                Some(if script.draw_done {
                                    Message::Winners { last: true, documents: vec!["30904465".into()] }
                                } else {
                                    Message::NotReady { finished: 0, expected: 1 }
                                })
                            }
                            _ => None,
                        }
                    };
                    if let Some(reply) = reply {
                        if writer.send(&reply).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Agency 1 of the server at `address`, working in `dir`: its bets in
/// `agency-1.csv` there when the test writes one, else the single bet of
/// its environment.
fn agency(dir: &Path, address: impl Display) -> AgencyBuilder {
    AgencyBuilder::new(dir, 1, address)
        .binary(CLIENT)
        .credentials(testkit::credentials::shared(1))
        .loop_amount(50)
        .loop_period("10ms")
        .log_level("INFO")
        .batch_max_amount(10)
        .data_file("agency-1.csv")
        .env("NOMBRE", "Santiago Lionel")
        .env("APELLIDO", "Lorca")
        .env("DOCUMENTO", "30904465")
        .env("NACIMIENTO", "1999-03-17")
        .env("NUMERO", "7574")
}

fn write_rows(dir: &Path, rows: usize, name_len: usize) {
    let name = "ñ".repeat(name_len / 2);
    let text: String = (0..rows).map(|i| format!("{name},Lorca,{i},1999-03-17,{i}\n")).collect();
    std::fs::write(dir.join("agency-1.csv"), text).unwrap();
}

/// Runs the client to its end and returns it with its exit status.
async fn run_to_end(agency: AgencyBuilder) -> (Process, bool) {
    tokio::task::spawn_blocking(move || {
        let mut client = agency.start();
        let status = client.wait_exit(EXIT_WITHIN);
        (client, status.success())
    })
    .await
    .unwrap()
}

/// Starts the client, sends it SIGTERM once `ready`, and checks that it
/// stopped because of the signal: exit 0 with its `shutdown` line, its
/// socket closed, no failure. Every other way for it to end takes longer
/// than the wait (a reply timeout of a minute) or fails.
async fn stop_when(agency: AgencyBuilder, ready: impl Fn() -> bool + Send + 'static) -> Process {
    let agency = agency.env("CLI_REPLY_TIMEOUT", "60s");
    tokio::task::spawn_blocking(move || {
        let mut client = agency.start();
        client.wait_for("action: config", Duration::from_secs(5));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !ready() {
            assert!(std::time::Instant::now() < deadline, "the client never got there");
            std::thread::sleep(Duration::from_millis(10));
        }
        client.signal(Signal::SIGTERM);
        let status = client.wait_exit(EXIT_WITHIN);
        assert!(status.success(), "exit status {status}");
        assert!(client.has_action("shutdown", "success"), "{}", client.seen.join("\n"));
        assert!(client.has_action("signal", "success"));
        assert!(client.has_action("close_connection", "success"));
        assert!(!client.actions().iter().any(|a| a.result == "fail"), "{}", client.seen.join("\n"));
        client
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_single_bet_of_the_environment_goes_through_and_every_line_parses() {
    let (addr, seen) = scripted_server(HEALTHY).await;
    let dir = tempfile::tempdir().unwrap();
    let (client, ok) = run_to_end(agency(dir.path(), addr).loop_period("100ms").log_level("DEBUG")).await;
    assert!(ok, "{}", client.seen.join("\n"));
    let actions = client.actions();
    assert!(client.seen[0].ends_with(&format!(
        "INFO     action: config | result: success | client_id: 1 | server_address: {addr} | loop_amount: 50 | loop_period: 100ms | log_level: DEBUG"
    )), "{}", client.seen[0]);
    let sent = actions.iter().find(|a| a.name == "apuesta_enviada").unwrap();
    assert_eq!((sent.get("dni"), sent.get("numero")), (Some("30904465"), Some("7574")));
    assert!(client
        .seen
        .iter()
        .any(|l| l
            .contains("INFO     action: apuesta_enviada | result: success | dni: 30904465 | numero: 7574")));
    assert!(client
        .seen
        .iter()
        .any(|l| l.ends_with("action: consulta_ganadores | result: success | cant_ganadores: 1")));
    assert!(client.seen.last().unwrap().ends_with("action: loop_finished | result: success | client_id: 1"));
    let seen = seen.lock().unwrap();
    assert_eq!((seen.batches.as_slice(), seen.finished, seen.queries), (&[1][..], 1, 1));
}

#[tokio::test]
async fn every_batch_but_the_last_holds_exactly_max_amount() {
    for (rows, max_amount, expected) in [
        (99, 10, [vec![10; 9], vec![9]].concat()),
        (64, 10, [vec![10; 6], vec![4]].concat()),
        (991, 40, [vec![40; 24], vec![31]].concat()),
    ] {
        let (addr, seen) = scripted_server(HEALTHY).await;
        let dir = tempfile::tempdir().unwrap();
        write_rows(dir.path(), rows, 10);
        let (client, ok) =
            run_to_end(agency(dir.path(), addr).batch_max_amount(max_amount).loop_period("0s")).await;
        assert!(ok, "{}", client.seen.join("\n"));
        assert_eq!(seen.lock().unwrap().batches, expected, "{rows} rows by {max_amount}");
    }
}

#[tokio::test]
async fn batches_are_cut_at_8_kib_when_names_are_long() {
    let (addr, seen) = scripted_server(HEALTHY).await;
    let dir = tempfile::tempdir().unwrap();
    write_rows(dir.path(), 50, 1500);
    let (client, ok) = run_to_end(agency(dir.path(), addr).batch_max_amount(100)).await;
    assert!(ok, "{}", client.seen.join("\n"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.batches.iter().sum::<usize>(), 50);
    assert!(seen.batches.len() > 1);
    assert!(seen.frame_sizes.iter().all(|&size| size <= MAX_FRAME_LEN), "{:?}", seen.frame_sizes);
    // Cut only when the next bet would not fit.
    let bet_size = (seen.frame_sizes[0] - protocol::BATCH_HEADER_LEN) / seen.batches[0];
    assert!(seen.frame_sizes[0] + bet_size > MAX_FRAME_LEN);
}

#[tokio::test]
async fn a_bet_too_large_for_a_packet_is_reported_with_its_line() {
    let (addr, seen) = scripted_server(HEALTHY).await;
    let dir = tempfile::tempdir().unwrap();
    let huge = "x".repeat(9000);
    std::fs::write(
        dir.path().join("agency-1.csv"),
        format!("Ana,Paz,1,1999-03-17,1\n{huge},Paz,2,1999-03-17,2\nLuis,Paz,3,1999-03-17,3\n"),
    )
    .unwrap();
    let (client, ok) = run_to_end(agency(dir.path(), addr)).await;
    assert!(!ok);
    let fail =
        client.actions().into_iter().find(|a| a.name == "apuesta_enviada" && a.result == "fail").unwrap();
    assert_eq!(fail.get("line"), Some("2"));
    let seen = seen.lock().unwrap();
    assert_eq!((seen.batches.as_slice(), seen.finished), (&[2][..], 1), "the rest still goes, then finished");
}

#[tokio::test]
async fn after_loop_amount_queries_the_client_gives_up_with_one_fail_line() {
    let (addr, seen) = scripted_server(Script { draw_done: false, ..HEALTHY }).await;
    let dir = tempfile::tempdir().unwrap();
    let (client, ok) = run_to_end(agency(dir.path(), addr).loop_amount(3)).await;
    assert!(!ok);
    let fails: Vec<_> = client.actions().into_iter().filter(|a| a.result == "fail").collect();
    assert_eq!(fails.len(), 1, "{fails:?}");
    assert_eq!(fails[0].name, "consulta_ganadores");
    assert_eq!(seen.lock().unwrap().queries, 3);
}

#[tokio::test]
async fn a_zero_period_still_paces_the_winners_queries() {
    let (addr, seen) = scripted_server(Script { draw_done: false, ..HEALTHY }).await;
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (_, ok) = run_to_end(agency(dir.path(), addr).loop_amount(21).loop_period("0s")).await;
    assert!(!ok);
    assert_eq!(seen.lock().unwrap().queries, 21);
    assert!(started.elapsed() >= client::MIN_QUERY_INTERVAL * 20);
}

#[tokio::test]
async fn sigterm_while_the_server_is_not_up_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let started = std::time::Instant::now();
    stop_when(agency(dir.path(), address), move || started.elapsed() > Duration::from_millis(300)).await;
}

#[tokio::test]
async fn sigterm_mid_upload_exits_zero() {
    let (addr, seen) = scripted_server(Script { ack_batches: false, draw_done: false, ..HEALTHY }).await;
    let dir = tempfile::tempdir().unwrap();
    write_rows(dir.path(), 5000, 10);
    let client = stop_when(agency(dir.path(), addr).loop_period("0s"), move || {
        !seen.lock().unwrap().batches.is_empty()
    })
    .await;
    assert!(client.has_action("close_file", "success"));
}

#[tokio::test]
async fn sigterm_while_waiting_for_the_draw_exits_zero() {
    let (addr, seen) = scripted_server(Script { draw_done: false, ..HEALTHY }).await;
    let dir = tempfile::tempdir().unwrap();
    stop_when(agency(dir.path(), addr), move || seen.lock().unwrap().queries >= 2).await;
}

#[tokio::test]
async fn a_bad_setting_is_one_clear_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in
        [("CLI_LOOP_PERIOD", "soon"), ("CLI_BATCH_MAXAMOUNT", "-1"), ("CLI_LOG_LEVEL", "LOUD")]
    {
        let (mut client, ok) = run_to_end(agency(dir.path(), "127.0.0.1:1").env(key, value)).await;
        let stderr = client.stderr();
        assert!(!ok);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(key) && !stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn a_storage_failure_is_retried_not_counted_as_rejected() {
    let (addr, seen) = scripted_server(Script { storage_failures: 3, ..HEALTHY }).await;
    let dir = tempfile::tempdir().unwrap();
    write_rows(dir.path(), 95, 10);
    let (client, ok) = run_to_end(agency(dir.path(), addr).loop_period("0s")).await;
    assert!(ok, "{}", client.seen.join("\n"));
    assert!(!client.actions().iter().any(|a| a.result == "fail"), "{}", client.seen.join("\n"));
    assert!(client.has_action("reconnect", "in_progress"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.finished, 1, "finished once, after every bet was stored");
    assert!(seen.hellos >= 2, "it said Hello again to resume");
}

#[tokio::test]
async fn a_server_that_never_answers_costs_the_reply_timeout_then_the_client_gives_up() {
    let (addr, _) = scripted_server(Script { silent: true, ..HEALTHY }).await;
    let dir = tempfile::tempdir().unwrap();
    let agency = agency(dir.path(), addr).env("CLI_REPLY_TIMEOUT", "200ms").env("CLI_RETRY_TIMEOUT", "1s");
    // Within the wait of `run_to_end`, far below the default retry timeout.
    let (client, ok) = run_to_end(agency).await;
    assert!(!ok);
    let fails: Vec<_> = client.actions().into_iter().filter(|a| a.result == "fail").collect();
    assert_eq!(fails.len(), 1, "{fails:?}");
    let error = fails[0].get("error").unwrap();
    assert!(error.contains("giving up") && error.contains("no reply within 200ms"), "{error}");
    assert!(error.contains("no progress for 1s"), "it gave up on its own retry timeout: {error}");
}
