//! SIGTERM and SIGINT in every state, with the real binaries: the server
//! exits 0 with every closing line and every session ended within its
//! grace whatever its peers are doing (uploading, half a frame sent, a
//! winners query or a `Hello` held, the operator connected, a handshake
//! half done, pages being read or half asked, a drawn round waiting for
//! its next slot, a second signal during the shutdown), and an agency
//! exits 0 at once while the server holds its query or its `Hello`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{ack, batch, bet, Raw};
use protocol::{ErrorCode, Message};
use testkit::{AgencyBuilder, Process, RunningServer, ServerBuilder, Signal, EXIT_WITHIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVER: &str = env!("CARGO_BIN_EXE_server");

/// A server working in `dir`: two agencies, INFO, the test credentials,
/// free ports for agencies and pages.
fn server(dir: &Path) -> ServerBuilder {
    ServerBuilder::new(dir).binary(SERVER).agencies(2).credentials(common::credentials())
}

/// Stops `server` with `signal` off the runtime (the check waits).
async fn stop_cleanly(server: RunningServer, signal: Signal) {
    tokio::task::spawn_blocking(move || drop(server.assert_clean_stop(signal))).await.unwrap();
}

/// Reads what the server still says on `raw` until it closes it (within
/// 5 s): the answers a shutdown gives to what it held.
async fn last_words(raw: &mut Raw) -> Vec<Message> {
    let mut said = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), raw.reader.read()).await {
            Ok(Ok(Some(message))) => said.push(message),
            Ok(Ok(None)) | Ok(Err(_)) => return said,
            Err(_) => panic!("the connection is still open 5 s after the signal; it said {said:?}"),
        }
    }
}

#[test]
fn sigterm_while_idle_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    server(dir.path()).start().assert_clean_stop(Signal::SIGTERM);
}

#[test]
fn sigint_works_like_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    server(dir.path()).start().assert_clean_stop(Signal::SIGINT);
}

#[tokio::test]
async fn sigterm_mid_upload_exits_zero_and_keeps_every_acked_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).start();
    let addr = server.addr();
    let (mut agency, _) = Raw::agency(addr, 1).await;
    for first in 0..3 {
        let reply = agency.ask(&batch(first, vec![bet(&(first + 1).to_string(), 1)])).await;
        assert_eq!(reply, ack(first, 1));
    }
    // Half of the next frame, then silence.
    let mut frame = bytes::BytesMut::new();
    batch(3, vec![bet("4", 1)]).encode(&mut frame);
    agency.send_bytes(&frame[..12]).await;
    let mut stalled = Raw::connect(addr).await;
    stalled.send_bytes(&frame[..3]).await;

    stop_cleanly(server, Signal::SIGTERM).await;
    agency.expect_closed().await;
    let stored: Vec<String> =
        common::stored(&dir.path().join("bets.csv")).into_iter().map(|b| b.document).collect();
    assert_eq!(stored, ["1", "2", "3"]);
}

/// Everything a session can be waiting on at once: a winners query held
/// for the draw, a `Hello` held for a round not open yet, the operator's
/// connection between two commands, a TLS handshake half done, a
/// connection that sent nothing. Each ends at the signal: the held ones
/// answered (not ready; shutting down) and closed, none aborted; and a
/// second signal during the shutdown changes nothing.
#[tokio::test]
async fn sigterm_with_queries_hellos_and_the_operator_held_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).start();
    let addr = server.addr();
    let (mut waiting, _) = Raw::agency(addr, 1).await;
    assert_eq!(waiting.ask(&batch(0, vec![bet("1", 7574)])).await, ack(0, 1));
    assert_eq!(waiting.ask(&Message::Finished { bets: 1 }).await, Message::FinishedAck);
    waiting.send(&Message::WinnersQuery { wait_ms: 60_000 }).await;
    let mut early = Raw::tls(addr, Some(2)).await;
    early.send(&Message::Hello { agency: 2, round: 2, wait_ms: 60_000 }).await;
    let operator =
        edge::credentials::client_config(&testkit::credentials::operator(&common::credentials())).unwrap();
    let mut operator = Raw::tls_with(addr, operator).await.unwrap();
    assert!(matches!(operator.ask(&Message::StatusQuery).await, Message::Status { last: true, .. }));
    let mut handshaking = tokio::net::TcpStream::connect(addr).await.unwrap();
    handshaking.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Held, not answered: the server is still waiting on both.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopped = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.signal(Signal::SIGTERM);
        server.wait_for("action: shutdown | result: in_progress", Duration::from_secs(5));
        server.signal(Signal::SIGTERM);
        server.assert_clean_stop(Signal::SIGINT)
    });
    assert!(matches!(last_words(&mut waiting).await[..], [Message::NotReady { .. }]));
    let refused = last_words(&mut early).await;
    assert!(matches!(&refused[..], [Message::Error { code: ErrorCode::ShuttingDown, .. }]), "{refused:?}");
    assert_eq!(last_words(&mut operator).await, []);
    assert_eq!(handshaking.read(&mut [0; 64]).await.unwrap_or(0), 0, "closed");
    let server = stopped.await.unwrap();
    // The five connections, each closed by the shutdown, the held Hello's
    // too (not as a protocol error).
    let closed: Vec<_> = server.actions().into_iter().filter(|a| a.name == "close_connection").collect();
    assert_eq!(closed.len(), 5, "{}", server.seen.join("\n"));
    assert!(closed.iter().all(|a| a.get("reason") == Some("server shutting down")), "{closed:?}");
}

/// A drawn round whose next one waits for its slot (`SERVER_ROUND_EVERY`),
/// its agency connected after its winners: the clock's wait ends too.
#[tokio::test]
async fn sigterm_after_the_draw_while_the_next_round_waits_for_its_slot_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path()).agencies(1).env("SERVER_ROUND_EVERY", "1h").start();
    let (mut agency, _) = Raw::agency(server.addr(), 1).await;
    assert_eq!(agency.ask(&batch(0, vec![bet("1", 7574)])).await, ack(0, 1));
    assert_eq!(agency.ask(&Message::Finished { bets: 1 }).await, Message::FinishedAck);
    let winners = agency.ask(&Message::WinnersQuery { wait_ms: 10_000 }).await;
    assert!(matches!(winners, Message::NotReady { .. } | Message::Winners { .. }), "{winners:?}");
    server.wait_for("action: sorteo | result: success", Duration::from_secs(5));

    stop_cleanly(server, Signal::SIGTERM).await;
    agency.expect_closed().await;
}

/// Pages kept open after a request, requests half sent, and a client
/// asking as fast as it can: none holds the shutdown.
#[tokio::test]
async fn sigterm_while_pages_are_read_and_half_asked_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path()).start();
    let http = server.http_addr().expect("the pages listen");
    let mut kept = Vec::new();
    for path in ["/", "/status.json", "/metrics", "/healthz"] {
        let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "{path}");
        kept.push(stream);
    }
    for _ in 0..8 {
        let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: te").await.unwrap();
        kept.push(stream);
    }
    let flood = tokio::spawn(ask_again_and_again(http));

    stop_cleanly(server, Signal::SIGTERM).await;
    flood.abort();
    for mut stream in kept {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "a page's connection is still open after the shutdown");
    }
}

/// `GET /status.json` on a new connection, again and again, until
/// aborted.
async fn ask_again_and_again(http: SocketAddr) {
    loop {
        let Ok(mut stream) = tokio::net::TcpStream::connect(http).await else {
            tokio::task::yield_now().await;
            continue;
        };
        let _ = stream.write_all(b"GET /status.json HTTP/1.1\r\nhost: test\r\n\r\n").await;
        let _ = stream.read(&mut [0; 512]).await;
    }
}

/// Starts `agency`, sends it SIGTERM once it has logged `ready`, and
/// checks that it stopped because of the signal: exit 0, its `signal`
/// and `shutdown` lines and its connection closed, no failure. The server
/// holds what the agency waits on longer than the wait for its exit
/// ([`EXIT_WITHIN`]), so any other way to end would fail the check.
async fn stop_agency_once(agency: AgencyBuilder, ready: &'static str) -> Process {
    tokio::task::spawn_blocking(move || {
        let mut client = agency.env("CLI_REPLY_TIMEOUT", "60s").start();
        client.wait_for(ready, Duration::from_secs(10));
        client.signal(Signal::SIGTERM);
        let status = client.wait_exit(EXIT_WITHIN);
        let seen = client.seen.join("\n");
        assert!(status.success(), "exit status {status}:\n{seen}");
        for (name, result) in
            [("signal", "success"), ("close_connection", "success"), ("shutdown", "success")]
        {
            assert!(client.has_action(name, result), "no {name} line:\n{seen}");
        }
        assert!(!client.actions().iter().any(|a| a.result == "fail"), "{seen}");
        client
    })
    .await
    .unwrap()
}

// An agency that ignored the signal would still be waiting, on its query
// or its `Hello` (held for half its reply timeout), when the check gives up.
const _: () = assert!(client::WINNERS_WAIT.as_secs() > EXIT_WITHIN.as_secs());
const _: () = assert!(protocol::HELLO_WAIT.as_secs() > EXIT_WITHIN.as_secs());

/// Writes agency 1's file of `bets` bets into `dir`.
fn agency_file(dir: &Path, bets: usize) -> std::path::PathBuf {
    let path = dir.join("agency-1.csv");
    let rows: String = (0..bets).map(|i| format!("Ana,Paz,{},1999-03-17,{i}\n", 1000 + i)).collect();
    std::fs::write(&path, rows).unwrap();
    path
}

#[tokio::test]
async fn an_agency_whose_winners_query_the_server_holds_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).start();
    let agency = server.agency(1).data_file(agency_file(dir.path(), 10));
    let client = stop_agency_once(agency, "waiting: the draw").await;
    assert!(!client.has_action("consulta_ganadores", "success"));
    stop_cleanly(server, Signal::SIGTERM).await;
}

#[tokio::test]
async fn an_agency_waiting_for_its_round_to_open_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).start();
    let agency = server.agency(1).data_file(agency_file(dir.path(), 10)).env("CLI_ROUND", 2);
    let client = stop_agency_once(agency, "action: esperar_ronda | result: in_progress").await;
    assert!(!client.has_action("apuesta_recibida", "success"));
    stop_cleanly(server, Signal::SIGTERM).await;
}

/// A round large enough that reading it back takes a while: a signal
/// while the server reads it stops the server there, exit 0, without a
/// byte of the round changed, and the next start reads it again.
#[tokio::test]
async fn sigterm_while_the_round_is_read_back_exits_zero_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let settings = server(dir.path()).agencies(1);
    let server = settings.start();
    // Read back in a good part of a second by the tests' build: far
    // longer than the signal takes to come after the `config` line.
    let agency = server.agency(1).data_file(agency_file(dir.path(), 400_000)).batch_max_amount(400);
    let uploaded = tokio::task::spawn_blocking(move || agency.start().wait_exit(Duration::from_secs(120)));
    assert!(uploaded.await.unwrap().success());
    stop_cleanly(server, Signal::SIGTERM).await;
    let bets = settings.storage_path().to_owned();
    let round = move || {
        (std::fs::read(&bets).unwrap(), std::fs::read(lottery::round::beside(&bets, ".journal")).unwrap())
    };
    let before = round();

    let mut reading = settings.spawn();
    reading.wait_for("action: config", Duration::from_secs(10));
    reading.signal(Signal::SIGTERM);
    let status = reading.wait_exit(EXIT_WITHIN);
    let seen = reading.seen.join("\n");
    assert!(status.success(), "{status}:\n{seen}");
    let open =
        reading.action("open_round").unwrap_or_else(|| panic!("read back before the signal came:\n{seen}"));
    assert!(open.result == "fail" && open.get("error").unwrap().contains("shutdown came"), "{seen}");
    assert!(reading.has_action("shutdown", "success"), "{seen}");
    assert!(!reading.has_action("accept_connections", "in_progress"), "{seen}");
    assert!(round() == before, "the round changed");
    let mut again = settings.start();
    assert!(again.wait_for("action: recover", Duration::from_secs(10)).contains("bets: 400000"));
    stop_cleanly(again, Signal::SIGTERM).await;
}
