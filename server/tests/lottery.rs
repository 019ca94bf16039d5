//! The server and the agencies together, over loopback, in one process.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use client::{BetSource, Ending};
use common::{batch, bet, client_config, Raw, TestServer};
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
    let generated = lottery::sample::generate(data.path(), &rows, &winners, 42).unwrap();
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
            &Ending::Winners { documents: g.winners.clone(), rejected: 0 },
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
    let mut one = Raw::connect(server.addr).await;
    let mut two = Raw::connect(server.addr).await;

    assert_eq!(one.ask(&batch(1, 1, vec![bet("111", 7574)])).await, Message::BatchAck { seq: 1, count: 1 });
    assert_eq!(one.ask(&Message::Finished { agency: 1 }).await, Message::FinishedAck);
    assert_eq!(
        one.ask(&Message::WinnersQuery { agency: 1 }).await,
        Message::NotReady { finished: 1, expected: 2 }
    );
    assert_eq!(two.ask(&batch(2, 1, vec![bet("222", 7574)])).await, Message::BatchAck { seq: 1, count: 1 });
    assert_eq!(
        two.ask(&Message::WinnersQuery { agency: 2 }).await,
        Message::NotReady { finished: 1, expected: 2 }
    );
    assert_eq!(two.ask(&Message::Finished { agency: 2 }).await, Message::FinishedAck);

    let only_own = |d: &str| Message::Winners { last: true, documents: vec![d.to_owned()] };
    assert_eq!(one.ask(&Message::WinnersQuery { agency: 1 }).await, only_own("111"));
    assert_eq!(two.ask(&Message::WinnersQuery { agency: 2 }).await, only_own("222"));
    server.stop().await;
}

#[tokio::test]
async fn a_batch_with_one_invalid_bet_is_refused_whole_and_nothing_else_is_disturbed() {
    let server = TestServer::start(2).await;
    let mut one = Raw::connect(server.addr).await;
    let mut two = Raw::connect(server.addr).await;

    let mut invalid = vec![bet("1", 1), bet("2", 2), bet("3", 3)];
    invalid[1].birthdate = "1999-02-30".into();
    match one.ask(&batch(1, 1, invalid)).await {
        Message::Error { code: ErrorCode::InvalidBet, seq: 1, bet: Some(1), reason } => {
            assert!(reason.contains("1999-02-30"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The same connection goes on; so does the other agency.
    assert_eq!(one.ask(&batch(1, 2, vec![bet("4", 4)])).await, Message::BatchAck { seq: 2, count: 1 });
    assert_eq!(two.ask(&batch(2, 1, vec![bet("5", 5)])).await, Message::BatchAck { seq: 1, count: 1 });

    let stored: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    assert_eq!(stored, ["4", "5"]);
}

#[tokio::test]
async fn every_field_is_validated_by_the_server() {
    let server = TestServer::start(1).await;
    let mut raw = Raw::connect(server.addr).await;
    type Spoil = fn(&mut protocol::BetRecord);
    let cases: [(&str, Spoil); 5] = [
        ("nombre", |b| b.first_name = " ".into()),
        ("apellido", |b| b.last_name = String::new()),
        ("documento", |b| b.document = "12a".into()),
        ("nacimiento", |b| b.birthdate = "17/03/1999".into()),
        ("numero", |b| b.number = "-1".into()),
    ];
    for (seq, (field, spoil)) in (1..).zip(cases) {
        let mut bad = bet("1", 1);
        spoil(&mut bad);
        match raw.ask(&batch(1, seq, vec![bet("9", 9), bad])).await {
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
    let mut raw = Raw::connect(server.addr).await;
    let mut odd = bet("00012345", 7574);
    odd.first_name = "María  José".into();
    odd.last_name = "Núñez, \"el\" Peña".into();
    assert_eq!(raw.ask(&batch(1, 1, vec![odd.clone()])).await, Message::BatchAck { seq: 1, count: 1 });
    let stored = server.stop().await;
    assert_eq!(
        (stored[0].first_name.as_str(), stored[0].last_name.as_str(), stored[0].document.as_str()),
        ("María  José", "Núñez, \"el\" Peña", "00012345")
    );
}

#[tokio::test]
async fn garbage_truncated_and_oversized_frames_close_only_their_connection() {
    let server = TestServer::start(1).await;
    let mut good = Raw::connect(server.addr).await;
    assert_eq!(good.ask(&batch(1, 1, vec![bet("1", 1)])).await, Message::BatchAck { seq: 1, count: 1 });

    let mut garbage = Raw::connect(server.addr).await;
    garbage.send_bytes(b"\x00\x00\x00\x08\x01\x7fGARBAGE!").await;
    assert!(matches!(garbage.recv().await, Some(Message::Error { code: ErrorCode::UnknownMessage, .. })));
    garbage.expect_closed().await;

    let mut oversized = Raw::connect(server.addr).await;
    oversized.send_bytes(&[0xff, 0xff, 0xff, 0xff, 1, 1]).await;
    assert!(matches!(oversized.recv().await, Some(Message::Error { code: ErrorCode::FrameTooLarge, .. })));
    oversized.expect_closed().await;

    let mut truncated = Raw::connect(server.addr).await;
    let mut frame = bytes::BytesMut::new();
    batch(1, 2, vec![bet("2", 2)]).encode(&mut frame);
    truncated.send_bytes(&frame[..frame.len() - 3]).await;
    truncated.writer.shutdown().await.unwrap();
    truncated.expect_closed().await;

    let mut bad_utf8 = Raw::connect(server.addr).await;
    let mut frame = bytes::BytesMut::new();
    batch(1, 3, vec![bet("3", 3)]).encode(&mut frame);
    frame[protocol::BATCH_HEADER_LEN + 2] = 0xff;
    bad_utf8.send_bytes(&frame).await;
    assert!(matches!(bad_utf8.recv().await, Some(Message::Error { code: ErrorCode::Malformed, .. })));
    bad_utf8.expect_closed().await;

    // The first connection never noticed.
    assert_eq!(good.ask(&batch(1, 4, vec![bet("4", 4)])).await, Message::BatchAck { seq: 4, count: 1 });
    let stored: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    assert_eq!(stored, ["1", "4"]);
}

#[tokio::test]
async fn protocol_misuse_is_refused() {
    let server = TestServer::start(2).await;

    let mut stranger = Raw::connect(server.addr).await;
    assert!(matches!(
        stranger.ask(&Message::WinnersQuery { agency: 3 }).await,
        Message::Error { code: ErrorCode::UnknownAgency, .. }
    ));
    stranger.expect_closed().await;

    let mut zero = Raw::connect(server.addr).await;
    assert!(matches!(
        zero.ask(&batch(0, 1, vec![bet("1", 1)])).await,
        Message::Error { code: ErrorCode::UnknownAgency, .. }
    ));
    zero.expect_closed().await;

    let mut twice = Raw::connect(server.addr).await;
    assert_eq!(twice.ask(&Message::Finished { agency: 1 }).await, Message::FinishedAck);
    assert!(matches!(
        twice.ask(&Message::Finished { agency: 1 }).await,
        Message::Error { code: ErrorCode::AlreadyFinished, .. }
    ));
    twice.expect_closed().await;

    let mut late = Raw::connect(server.addr).await;
    assert!(matches!(
        late.ask(&batch(1, 9, vec![bet("1", 1)])).await,
        Message::Error { code: ErrorCode::AlreadyFinished, .. }
    ));

    let mut replay = Raw::connect(server.addr).await;
    assert_eq!(replay.ask(&batch(2, 5, vec![bet("5", 5)])).await, Message::BatchAck { seq: 5, count: 1 });
    assert!(matches!(
        replay.ask(&batch(2, 5, vec![bet("5", 5)])).await,
        Message::Error { code: ErrorCode::DuplicateBatch, seq: 5, .. }
    ));
    assert!(matches!(
        replay.ask(&batch(1, 1, vec![bet("6", 6)])).await,
        Message::Error { code: ErrorCode::UnexpectedMessage, .. }
    ));
    replay.expect_closed().await;

    let mut backwards = Raw::connect(server.addr).await;
    assert!(matches!(
        backwards.ask(&Message::BatchAck { seq: 1, count: 1 }).await,
        Message::Error { code: ErrorCode::UnexpectedMessage, .. }
    ));
    backwards.expect_closed().await;

    let stored: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    assert_eq!(stored, ["5"]);
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
    let mut idle = Raw::connect(server.addr).await;
    let started = std::time::Instant::now();
    idle.expect_closed().await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_agency_does_not_delay_the_others() {
    let server = TestServer::start(2).await;
    // Agency 1 sends half a frame and stalls.
    let mut stalled = Raw::connect(server.addr).await;
    let mut frame = bytes::BytesMut::new();
    batch(1, 1, vec![bet("1", 1)]).encode(&mut frame);
    stalled.send_bytes(&frame[..10]).await;

    let mut other = Raw::connect(server.addr).await;
    let reply =
        tokio::time::timeout(Duration::from_secs(1), other.ask(&batch(2, 1, vec![bet("2", 2)]))).await;
    assert_eq!(reply.unwrap(), Message::BatchAck { seq: 1, count: 1 });
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_agencies_than_cores_are_all_served() {
    let agencies = 24;
    let server = TestServer::start(agencies).await;
    let data = tempfile::tempdir().unwrap();
    let generated = lottery::sample::generate(data.path(), &[150; 24], &[1; 24], 7).unwrap();
    let runs =
        generated.iter().map(|g| tokio::spawn(run_agency(client_config(g.agency, server.addr, &g.path))));
    for (g, ending) in generated.iter().zip(futures_util::future::join_all(runs).await) {
        assert_eq!(ending.unwrap(), Ending::Winners { documents: g.winners.clone(), rejected: 0 });
    }
    assert_eq!(server.stop().await.len(), 150 * 24);
}

#[tokio::test]
async fn an_agency_that_reconnects_does_not_disturb_the_others() {
    let server = TestServer::start(2).await;
    let mut steady = Raw::connect(server.addr).await;
    assert_eq!(steady.ask(&batch(2, 1, vec![bet("20", 1)])).await, Message::BatchAck { seq: 1, count: 1 });

    let mut flaky = Raw::connect(server.addr).await;
    assert_eq!(flaky.ask(&batch(1, 1, vec![bet("10", 1)])).await, Message::BatchAck { seq: 1, count: 1 });
    drop(flaky);
    let mut flaky = Raw::connect(server.addr).await;
    assert_eq!(flaky.ask(&batch(1, 2, vec![bet("11", 1)])).await, Message::BatchAck { seq: 2, count: 1 });

    assert_eq!(steady.ask(&batch(2, 2, vec![bet("21", 1)])).await, Message::BatchAck { seq: 2, count: 1 });
    assert_eq!(server.stop().await.len(), 4);
}

#[tokio::test]
async fn rejected_batches_still_end_in_finished_and_the_draw() {
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
    // The batch of lines 11-20 and the short row at line 26 are rejected.
    assert_eq!(ending, Ending::Winners { documents: vec!["3".into()], rejected: 2 });
    assert_eq!(server.stop().await.len(), 15);
}

#[tokio::test]
async fn nothing_sent_after_a_protocol_error_is_served() {
    let server = TestServer::start(2).await;
    let mut raw = Raw::connect(server.addr).await;
    // Three requests in one write: the second speaks for another agency.
    raw.writer.queue(&batch(1, 1, vec![bet("1", 1)]));
    raw.writer.queue(&Message::Finished { agency: 2 });
    raw.writer.queue(&batch(1, 2, vec![bet("2", 2)]));
    raw.writer.flush().await.unwrap();
    assert_eq!(raw.recv().await, Some(Message::BatchAck { seq: 1, count: 1 }));
    assert!(matches!(raw.recv().await, Some(Message::Error { code: ErrorCode::UnexpectedMessage, .. })));
    raw.expect_closed().await;
    let stored: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    assert_eq!(stored, ["1"]);
}
