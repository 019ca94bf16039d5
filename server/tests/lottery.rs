//! The server and the agencies together, over loopback, in one process.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use client::fault::{Fatal, NotItsFile};
use client::{AgencyError, BetSource, Ending};
use common::{ack, batch, bet, client_config, Raw, TestServer};
use protocol::{ErrorCode, Message};
use tokio_util::sync::CancellationToken;

async fn run_agency(config: client::Config) -> Ending {
    let source = BetSource::File(config.data_file.clone());
    client::run(&config, source, CancellationToken::new()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_agencies_uploading_at_once_store_every_bet_once_and_get_only_their_winners() {
    let data = tempfile::tempdir().unwrap();
    // 991 rows with batches of 10 leaves a last batch of one.
    let rows = [3000, 2500, 1601, 920, 991];
    let winners = [3, 0, 1, 5, 2];
    let generated = datagen::generate(data.path(), &rows, &winners, 42).unwrap();
    let server = TestServer::start(5).await;

    let agencies = generated.iter().map(|g| {
        let mut config = client_config(g.agency, server.addr, &g.path);
        config.batch_max_amount = if g.agency == 5 { 10 } else { 80 };
        tokio::spawn(run_agency(config))
    });
    let endings: Vec<Ending> =
        futures_util::future::join_all(agencies).await.into_iter().map(Result::unwrap).collect();

    for (g, ending) in generated.iter().zip(&endings) {
        assert_eq!(
            ending,
            &Ending::Winners { documents: g.winners.clone(), rejected: 0, left_out: None },
            "agency {}",
            g.agency
        );
    }
    let stored = server.stop().await;
    assert_eq!(stored.len(), rows.iter().sum::<usize>());
    let mut per_agency: HashMap<u32, Vec<String>> = HashMap::new();
    for b in &stored {
        per_agency.entry(b.agency).or_default().push(b.document.clone());
    }
    for g in &generated {
        let text = std::fs::read_to_string(&g.path).unwrap();
        let documents: Vec<String> = text.lines().map(|l| l.split(',').nth(2).unwrap().to_owned()).collect();
        // Every bet exactly once, in the agency's own order.
        assert_eq!(per_agency[&g.agency], documents, "agency {}", g.agency);
    }
}

#[tokio::test]
async fn no_query_gets_a_partial_answer_before_the_last_agency_finishes() {
    let server = TestServer::start(2).await;
    let (mut one, _) = Raw::agency(server.addr, 1).await;
    let (mut two, _) = Raw::agency(server.addr, 2).await;

    assert_eq!(one.ask(&batch(0, vec![bet("111", 7574)])).await, ack(0, 1));
    assert_eq!(one.ask(&Message::Finished { bets: 1 }).await, Message::FinishedAck);
    assert_eq!(
        one.ask(&Message::WinnersQuery { wait_ms: 0 }).await,
        Message::NotReady { finished: 1, expected: 2 }
    );
    assert_eq!(two.ask(&batch(0, vec![bet("222", 7574)])).await, ack(0, 1));
    assert_eq!(
        two.ask(&Message::WinnersQuery { wait_ms: 0 }).await,
        Message::NotReady { finished: 1, expected: 2 }
    );
    assert_eq!(two.ask(&Message::Finished { bets: 1 }).await, Message::FinishedAck);

    let only_own = |d: &str| Message::Winners { last: true, documents: vec![d.to_owned()] };
    assert_eq!(one.ask(&Message::WinnersQuery { wait_ms: 0 }).await, only_own("111"));
    assert_eq!(two.ask(&Message::WinnersQuery { wait_ms: 0 }).await, only_own("222"));
    server.stop().await;
}

#[tokio::test]
async fn a_batch_with_one_invalid_bet_is_refused_whole_and_nothing_else_is_disturbed() {
    let server = TestServer::start(2).await;
    let (mut one, _) = Raw::agency(server.addr, 1).await;
    let (mut two, _) = Raw::agency(server.addr, 2).await;

    let mut invalid = vec![bet("1", 1), bet("2", 2), bet("3", 3)];
    invalid[1].birthdate = "1999-02-30".into();
    match one.ask(&batch(0, invalid)).await {
        Message::Error { code: ErrorCode::InvalidBet, first: 0, bet: Some(1), reason } => {
            assert!(reason.contains("1999-02-30"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The same connection goes on, from the same ordinal; so does the other agency.
    assert_eq!(one.ask(&batch(0, vec![bet("4", 4)])).await, ack(0, 1));
    assert_eq!(two.ask(&batch(0, vec![bet("5", 5)])).await, ack(0, 1));

    let stored: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    assert_eq!(stored, ["4", "5"]);
}

#[tokio::test]
async fn every_field_is_validated_by_the_server() {
    let server = TestServer::start(1).await;
    let (mut raw, _) = Raw::agency(server.addr, 1).await;
    type Spoil = fn(&mut protocol::BetRecord);
    let cases: [(&str, Spoil); 5] = [
        ("nombre", |b| b.first_name = " ".into()),
        ("apellido", |b| b.last_name = String::new()),
        ("documento", |b| b.document = "12a".into()),
        ("nacimiento", |b| b.birthdate = "17/03/1999".into()),
        ("numero", |b| b.number = "-1".into()),
    ];
    for (field, spoil) in cases {
        let mut bad = bet("1", 1);
        spoil(&mut bad);
        match raw.ask(&batch(0, vec![bet("9", 9), bad])).await {
            Message::Error { code: ErrorCode::InvalidBet, bet: Some(1), reason, .. } => {
                assert!(reason.contains(field), "{field}: {reason}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(server.stop().await.is_empty());
}

#[tokio::test]
async fn names_are_stored_byte_exact() {
    let server = TestServer::start(1).await;
    let (mut raw, _) = Raw::agency(server.addr, 1).await;
    let mut odd = bet("00012345", 7574);
    odd.first_name = "María  José".into();
    odd.last_name = "Núñez, \"el\" Peña".into();
    assert_eq!(raw.ask(&batch(0, vec![odd.clone()])).await, ack(0, 1));
    let stored = server.stop().await;
    assert_eq!(
        (stored[0].first_name.as_str(), stored[0].last_name.as_str(), stored[0].document.as_str()),
        ("María  José", "Núñez, \"el\" Peña", "00012345")
    );
}

#[tokio::test]
async fn garbage_truncated_and_oversized_frames_close_only_their_connection() {
    let server = TestServer::start(1).await;
    let (mut good, _) = Raw::agency(server.addr, 1).await;
    assert_eq!(good.ask(&batch(0, vec![bet("1", 1)])).await, ack(0, 1));

    let mut garbage = Raw::connect(server.addr).await;
    garbage.send_bytes(b"\x00\x00\x00\x08\x03\x7fGARBAGE!").await;
    assert!(matches!(garbage.recv().await, Some(Message::Error { code: ErrorCode::UnknownMessage, .. })));
    garbage.expect_closed().await;

    let mut oversized = Raw::connect(server.addr).await;
    oversized.send_bytes(&[0xff, 0xff, 0xff, 0xff, 2, 1]).await;
    assert!(matches!(oversized.recv().await, Some(Message::Error { code: ErrorCode::FrameTooLarge, .. })));
    oversized.expect_closed().await;

    let mut old = Raw::connect(server.addr).await;
    old.send_bytes(b"\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01").await;
    assert!(matches!(old.recv().await, Some(Message::Error { code: ErrorCode::UnsupportedVersion, .. })));
    old.expect_closed().await;

    let (mut truncated, _) = Raw::agency(server.addr, 1).await;
    let mut frame = bytes::BytesMut::new();
    batch(1, vec![bet("2", 2)]).encode(&mut frame);
    truncated.send_bytes(&frame[..frame.len() - 3]).await;
    truncated.writer.shutdown().await.unwrap();
    truncated.expect_closed().await;

    let mut bad_utf8 = Raw::connect(server.addr).await;
    let mut frame = bytes::BytesMut::new();
    batch(1, vec![bet("3", 3)]).encode(&mut frame);
    frame[protocol::BATCH_HEADER_LEN + 2] = 0xff;
    bad_utf8.send_bytes(&frame).await;
    assert!(matches!(bad_utf8.recv().await, Some(Message::Error { code: ErrorCode::Malformed, .. })));
    bad_utf8.expect_closed().await;

    // The truncated connection superseded the first one; a new one goes on.
    let (mut good, welcome) = Raw::agency(server.addr, 1).await;
    assert!(matches!(welcome, Message::Welcome { stored: 1, finished: false, .. }), "{welcome:?}");
    assert_eq!(good.ask(&batch(1, vec![bet("4", 4)])).await, ack(1, 1));
    let stored: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    assert_eq!(stored, ["1", "4"]);
}

#[tokio::test]
async fn a_connection_must_say_hello_once_for_its_own_agency_of_the_round() {
    let server = TestServer::start(2).await;
    for request in
        [batch(0, vec![bet("1", 1)]), Message::Finished { bets: 0 }, Message::WinnersQuery { wait_ms: 0 }]
    {
        let (mut unsaid, _) = (Raw::tls(server.addr, Some(1)).await, ());
        match unsaid.ask(&request).await {
            Message::Error { code: ErrorCode::UnexpectedMessage, reason, .. } => {
                assert!(reason.contains("before Hello"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        unsaid.expect_closed().await;
    }
    let mut stranger = Raw::tls(server.addr, Some(3)).await;
    let reply = stranger.ask(&Message::Hello { agency: 3, round: 1, wait_ms: 0 }).await;
    assert!(matches!(reply, Message::Error { code: ErrorCode::UnknownAgency, .. }), "{reply:?}");
    stranger.expect_closed().await;

    let (mut twice, _) = Raw::agency(server.addr, 1).await;
    let reply = twice.ask(&Message::Hello { agency: 1, round: 1, wait_ms: 0 }).await;
    assert!(matches!(reply, Message::Error { code: ErrorCode::UnexpectedMessage, .. }), "{reply:?}");
    twice.expect_closed().await;

    let mut backwards = Raw::tls(server.addr, Some(1)).await;
    let reply = backwards.ask(&ack(0, 1)).await;
    assert!(matches!(reply, Message::Error { code: ErrorCode::UnexpectedMessage, .. }), "{reply:?}");
    backwards.expect_closed().await;
    assert!(server.stop().await.is_empty());
}

#[tokio::test]
async fn a_batch_sent_again_is_acknowledged_again_and_stored_once() {
    let server = TestServer::start(1).await;
    let (mut raw, _) = Raw::agency(server.addr, 1).await;
    let first = vec![bet("1", 1), bet("2", 2)];
    assert_eq!(raw.ask(&batch(0, first.clone())).await, ack(0, 2));
    assert_eq!(raw.ask(&batch(0, first.clone())).await, ack(0, 2), "a replay is acknowledged");
    assert_eq!(raw.ask(&batch(1, vec![bet("2", 2)])).await, ack(1, 1), "so is a part of one");
    assert_eq!(raw.ask(&batch(2, vec![bet("3", 3)])).await, ack(2, 1));
    let stored: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    assert_eq!(stored, ["1", "2", "3"]);
}

#[tokio::test]
async fn a_batch_that_does_not_start_where_the_stored_bets_end_is_refused() {
    let server = TestServer::start(1).await;
    let (mut raw, _) = Raw::agency(server.addr, 1).await;
    assert_eq!(raw.ask(&batch(0, vec![bet("1", 1)])).await, ack(0, 1));
    for first in [2, 7, u64::MAX] {
        match raw.ask(&batch(first, vec![bet("9", 9)])).await {
            Message::Error { code: ErrorCode::OutOfSequence, reason, .. } => assert!(!reason.is_empty()),
            other => panic!("{first}: {other:?}"),
        }
    }
    match raw.ask(&batch(0, vec![bet("1", 1), bet("8", 8)])).await {
        Message::Error { code: ErrorCode::OutOfSequence, reason, .. } => {
            assert!(reason.contains("1 bets stored"), "{reason}")
        }
        other => panic!("an overlap: {other:?}"),
    }
    // The connection stays open and goes on from where the bets end.
    assert_eq!(raw.ask(&batch(1, vec![bet("2", 2)])).await, ack(1, 1));
    let stored: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    assert_eq!(stored, ["1", "2"]);
}

#[tokio::test]
async fn finished_counts_only_with_exactly_the_bets_the_server_holds() {
    let server = TestServer::start(2).await;
    let (mut one, _) = Raw::agency(server.addr, 1).await;
    assert_eq!(one.ask(&batch(0, vec![bet("1", 7574), bet("2", 2)])).await, ack(0, 2));
    for claimed in [0, 1, 3] {
        match one.ask(&Message::Finished { bets: claimed }).await {
            Message::Error { code: ErrorCode::OutOfSequence, reason, .. } => {
                assert!(
                    reason.contains(&format!("says it has {claimed} bets; the server holds 2")),
                    "{reason}"
                )
            }
            other => panic!("{claimed}: {other:?}"),
        }
    }
    assert_eq!(one.ask(&Message::Finished { bets: 2 }).await, Message::FinishedAck);
    let reply = one.ask(&batch(2, vec![bet("3", 3)])).await;
    assert!(matches!(reply, Message::Error { code: ErrorCode::AlreadyFinished, .. }), "{reply:?}");
    one.expect_closed().await;

    let (mut one, welcome) = Raw::agency(server.addr, 1).await;
    assert!(matches!(welcome, Message::Welcome { stored: 2, finished: true, .. }), "{welcome:?}");
    assert_eq!(
        one.ask(&batch(1, vec![bet("2", 2)])).await,
        ack(1, 1),
        "what is stored is still acknowledged"
    );
    let reply = one.ask(&Message::Finished { bets: 2 }).await;
    assert!(matches!(reply, Message::Error { code: ErrorCode::AlreadyFinished, .. }), "{reply:?}");
    one.expect_closed().await;
    assert_eq!(server.stop().await.len(), 2);
}

/// The fencing of an agency's connections: the newer one takes over, the
/// older one is told and closed, and nothing it sends afterwards is stored.
#[tokio::test]
async fn a_newer_connection_of_an_agency_supersedes_the_older_one() {
    let server = TestServer::start(1).await;
    let (mut older, _) = Raw::agency(server.addr, 1).await;
    assert_eq!(older.ask(&batch(0, vec![bet("1", 1)])).await, ack(0, 1));

    let (mut newer, welcome) = Raw::agency(server.addr, 1).await;
    assert!(matches!(welcome, Message::Welcome { stored: 1, finished: false, .. }), "{welcome:?}");
    match older.recv().await {
        Some(Message::Error { code: ErrorCode::Superseded, .. }) => {}
        other => panic!("{other:?}"),
    }
    older.expect_closed().await;

    assert_eq!(newer.ask(&batch(1, vec![bet("2", 2)])).await, ack(1, 1));
    let stored: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    assert_eq!(stored, ["1", "2"]);
}

#[tokio::test]
async fn the_welcome_tells_an_agency_the_progress_of_its_stored_bets() {
    let server = TestServer::start(1).await;
    let (mut raw, welcome) = Raw::agency(server.addr, 1).await;
    assert_eq!(
        welcome,
        Message::Welcome { stored: 0, digest: 0, finished: false, stage: protocol::RoundStage::Open }
    );
    assert_eq!(raw.ask(&batch(0, vec![bet("1", 1), bet("2", 7574)])).await, ack(0, 2));
    drop(raw);
    let (_raw, welcome) = Raw::agency(server.addr, 1).await;
    let mut expected = lottery::Progress::default();
    for b in lottery::storage::load_bets(&server.storage).unwrap() {
        let mut row = Vec::new();
        lottery::storage::store_bets(&mut row, [&b.unwrap()]).unwrap();
        expected.push(&row);
    }
    let Message::Welcome { stored, digest, .. } = welcome else { panic!() };
    assert_eq!(lottery::Progress::new(stored, digest), expected);
    server.stop().await;
}

#[tokio::test]
async fn an_echo_comes_back_byte_identical() {
    let server = TestServer::start(1).await;
    let mut raw = Raw::connect(server.addr).await;
    let mut request = bytes::BytesMut::new();
    Message::Echo(bytes::Bytes::from_static(b"validar-echo-server\n")).encode(&mut request);
    raw.send_bytes(&request).await;
    raw.writer.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut raw.reader_stream(), &mut reply).await.unwrap();
    assert_eq!(reply, request.to_vec());
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_time_out() {
    let server = TestServer::start_with(1, |c| c.idle_timeout = Duration::from_millis(200)).await;
    let (mut idle, _) = Raw::agency(server.addr, 1).await;
    let started = std::time::Instant::now();
    idle.expect_closed().await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_agency_does_not_delay_the_others() {
    let server = TestServer::start(2).await;
    // Agency 1 sends half a frame and stalls.
    let (mut stalled, _) = Raw::agency(server.addr, 1).await;
    let mut frame = bytes::BytesMut::new();
    batch(0, vec![bet("1", 1)]).encode(&mut frame);
    stalled.send_bytes(&frame[..10]).await;

    let (mut other, _) = Raw::agency(server.addr, 2).await;
    let reply = tokio::time::timeout(Duration::from_secs(1), other.ask(&batch(0, vec![bet("2", 2)]))).await;
    assert_eq!(reply.unwrap(), ack(0, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_agencies_than_cores_are_all_served() {
    let agencies = 24;
    let server = TestServer::start(agencies).await;
    let data = tempfile::tempdir().unwrap();
    let generated = datagen::generate(data.path(), &[150; 24], &[1; 24], 7).unwrap();
    let runs =
        generated.iter().map(|g| tokio::spawn(run_agency(client_config(g.agency, server.addr, &g.path))));
    for (g, ending) in generated.iter().zip(futures_util::future::join_all(runs).await) {
        assert_eq!(
            ending.unwrap(),
            Ending::Winners { documents: g.winners.clone(), rejected: 0, left_out: None }
        );
    }
    assert_eq!(server.stop().await.len(), 150 * 24);
}

/// Invalid rows are the agency's own to report: they get no ordinal, and
/// every valid bet of the file is stored, whatever batch it would share.
#[tokio::test]
async fn invalid_rows_are_reported_and_every_valid_bet_is_stored() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("agency-1.csv");
    let mut rows = String::new();
    for i in 0..25 {
        let date = if i == 13 { "1999-02-30" } else { "1999-03-17" };
        rows.push_str(&format!("Ana,Paz,{i},{date},{}\n", if i == 3 { 7574 } else { 1 }));
    }
    rows.push_str("short,row\n");
    std::fs::write(&path, rows).unwrap();
    let server = TestServer::start(1).await;
    let mut config = client_config(1, server.addr, &path);
    config.batch_max_amount = 10;
    let ending = run_agency(config).await;
    // Line 14 (a date that does not exist) and line 26 (two fields) are rejected.
    assert_eq!(ending, Ending::Winners { documents: vec!["3".into()], rejected: 2, left_out: None });
    let stored: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    let expected: Vec<String> = (0..25).filter(|i| *i != 13).map(|i| i.to_string()).collect();
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn nothing_sent_after_a_protocol_error_is_served() {
    let server = TestServer::start(2).await;
    let (mut raw, _) = Raw::agency(server.addr, 1).await;
    // Three requests in one write: the second speaks for another agency.
    raw.writer.queue(&batch(0, vec![bet("1", 1)]));
    raw.writer.queue(&Message::Hello { agency: 2, round: 1, wait_ms: 0 });
    raw.writer.queue(&batch(1, vec![bet("2", 2)]));
    raw.writer.flush().await.unwrap();
    assert_eq!(raw.recv().await, Some(ack(0, 1)));
    assert!(matches!(raw.recv().await, Some(Message::Error { code: ErrorCode::UnexpectedMessage, .. })));
    raw.expect_closed().await;
    let stored: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    assert_eq!(stored, ["1"]);
}

#[tokio::test]
async fn a_restarted_server_resumes_the_round_and_a_drawn_round_serves_the_same_winners() {
    let server = TestServer::start(2).await;
    let (mut one, _) = Raw::agency(server.addr, 1).await;
    assert_eq!(one.ask(&batch(0, vec![bet("11", 7574), bet("12", 1)])).await, ack(0, 2));
    assert_eq!(one.ask(&Message::Finished { bets: 2 }).await, Message::FinishedAck);
    let (mut two, _) = Raw::agency(server.addr, 2).await;
    assert_eq!(two.ask(&batch(0, vec![bet("21", 1)])).await, ack(0, 1));

    let server = server.restart().await;
    let (_, welcome) = Raw::agency(server.addr, 1).await;
    assert!(matches!(welcome, Message::Welcome { stored: 2, finished: true, .. }), "{welcome:?}");
    let (mut two, welcome) = Raw::agency(server.addr, 2).await;
    assert!(matches!(welcome, Message::Welcome { stored: 1, finished: false, .. }), "{welcome:?}");
    assert_eq!(
        two.ask(&Message::WinnersQuery { wait_ms: 0 }).await,
        Message::NotReady { finished: 1, expected: 2 }
    );
    assert_eq!(two.ask(&batch(1, vec![bet("22", 7574)])).await, ack(1, 1));
    assert_eq!(two.ask(&Message::Finished { bets: 2 }).await, Message::FinishedAck);
    let winners = |d: &str| Message::Winners { last: true, documents: vec![d.to_owned()] };
    assert_eq!(two.ask(&Message::WinnersQuery { wait_ms: 0 }).await, winners("22"));

    let server = server.restart().await;
    let (mut one, _) = Raw::agency(server.addr, 1).await;
    assert_eq!(one.ask(&Message::WinnersQuery { wait_ms: 0 }).await, winners("11"));
    let (mut two, _) = Raw::agency(server.addr, 2).await;
    assert_eq!(two.ask(&Message::WinnersQuery { wait_ms: 0 }).await, winners("22"));
    let stored: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    assert_eq!(stored, ["11", "12", "21", "22"]);
}

#[tokio::test]
async fn a_second_server_on_storage_in_use_refuses_to_start() {
    let server = TestServer::start(1).await;
    let (mut raw, _) = Raw::agency(server.addr, 1).await;
    assert_eq!(raw.ask(&batch(0, vec![bet("1", 1)])).await, ack(0, 1));
    let before = std::fs::read(&server.storage).unwrap();
    match server::Server::bind(common::config(1, &server.storage)).await {
        Err(e @ server::StartError::Round(_)) => {
            assert!(e.to_string().contains("another server is using this storage"), "{e}")
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a second server started"),
    }
    assert_eq!(std::fs::read(&server.storage).unwrap(), before);
    assert_eq!(raw.ask(&batch(1, vec![bet("2", 2)])).await, ack(1, 1), "the first one goes on");
    assert_eq!(server.stop().await.len(), 2);
}

/// An agency stopped at a random moment and started again, with another
/// batch size, resumes where the server's stored bets end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_started_again_with_another_batch_size_stores_every_bet_once() {
    let data = tempfile::tempdir().unwrap();
    let generated = datagen::generate(data.path(), &[4000], &[3], 11).unwrap();
    let server = TestServer::start(1).await;
    for (max_amount, stop_after) in [(80, Some(3)), (7, Some(9)), (33, Some(1)), (50, None)] {
        let mut config = client_config(1, server.addr, &generated[0].path);
        config.batch_max_amount = max_amount;
        let stop = CancellationToken::new();
        if let Some(ms) = stop_after {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                stop.cancel();
            });
        }
        let source = BetSource::File(generated[0].path.clone());
        let ending = client::run(&config, source, stop).await.unwrap();
        if stop_after.is_none() {
            assert_eq!(
                ending,
                Ending::Winners { documents: generated[0].winners.clone(), rejected: 0, left_out: None }
            );
        }
    }
    let stored: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    let text = std::fs::read_to_string(&generated[0].path).unwrap();
    let documents: Vec<String> = text.lines().map(|l| l.split(',').nth(2).unwrap().to_owned()).collect();
    assert_eq!(stored, documents);
}

#[tokio::test]
async fn an_agency_whose_file_differs_from_what_the_server_holds_stops_and_stores_nothing() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("agency-1.csv");
    std::fs::write(&path, "Ana,Paz,1,1999-03-17,1\nBeto,Paz,2,1999-03-17,2\n").unwrap();
    let server = TestServer::start(1).await;
    let ending = run_agency(client_config(1, server.addr, &path)).await;
    assert_eq!(ending, Ending::Winners { documents: vec![], rejected: 0, left_out: None });

    for other in ["Ana,Paz,1,1999-03-17,1\nBeto,Paz,3,1999-03-17,2\n", "Ana,Paz,1,1999-03-17,1\n"] {
        std::fs::write(&path, other).unwrap();
        let config = client_config(1, server.addr, &path);
        let outcome = client::run(&config, BetSource::File(path.clone()), CancellationToken::new()).await;
        let err = outcome.unwrap_err();
        let not_its_file = matches!(
            err,
            AgencyError::Fatal(Fatal::NotItsFile(NotItsFile::Differs { .. } | NotItsFile::Shorter { .. }))
        );
        assert!(not_its_file, "{err:?}");
    }
    std::fs::write(&path, "Ana,Paz,1,1999-03-17,1\nBeto,Paz,2,1999-03-17,2\nCarla,Paz,3,1999-03-17,3\n")
        .unwrap();
    let config = client_config(1, server.addr, &path);
    let err =
        client::run(&config, BetSource::File(path.clone()), CancellationToken::new()).await.unwrap_err();
    let longer =
        matches!(err, AgencyError::Fatal(Fatal::NotItsFile(NotItsFile::Longer { agency: 1, held: 2 })));
    assert!(longer, "{err:?}");
    assert_eq!(server.stop().await.len(), 2);
}
