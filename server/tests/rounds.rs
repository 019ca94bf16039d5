//! Rounds over time, in process over loopback: a round that closes at its
//! deadline with an agency that never came, the operator's close and
//! open, round 2 after round 1 with round 1's winners still served (across
//! a restart too), a `Hello` for a round not open yet, and who may run the
//! operator's commands.

mod common;

use std::time::Duration;

use common::{ack, batch, bet, Raw, TestServer};
use lottery::round::kept_dir;
use protocol::{ErrorCode, Message, RoundStage};
use server::admin::{Admin, AdminError, Command};
use server::status::Status;
use server::Schedule;

/// The operator's command against the server at `server`.
fn operator(server: &TestServer) -> Admin {
    let dir = common::credentials();
    let path = |file: &str| dir.join(file).display().to_string();
    let env = edge::settings::env_of(&[
        ("SERVER_TLS_CA", &path("ca.pem")),
        ("SERVER_ADMIN_CERT", &path("operator.pem")),
        ("SERVER_ADMIN_KEY", &path("operator.key")),
    ]);
    let address = Some(server.addr.to_string());
    Admin::load(std::path::Path::new("/nonexistent/config.ini"), &env, address).unwrap()
}

/// The status, as `server admin status --json` prints it.
async fn status(server: &TestServer) -> Status {
    let json = operator(server).run(Command::Status { json: true }).await.unwrap();
    serde_json::from_str(&json).unwrap()
}

/// A connection of `agency` that said Hello for `round`; its Welcome.
async fn hello(server: &TestServer, agency: u32, round: u64) -> (Raw, Message) {
    let mut raw = Raw::tls(server.addr, Some(agency)).await;
    let welcome = raw.ask(&Message::Hello { agency, round, wait_ms: 0 }).await;
    (raw, welcome)
}

fn refused(reply: &Message, code: ErrorCode) -> bool {
    matches!(reply, Message::Error { code: c, .. } if *c == code)
}

/// Winners of one frame.
fn winners(documents: &[&str]) -> Message {
    Message::Winners { last: true, documents: documents.iter().map(|d| d.to_string()).collect() }
}

#[tokio::test]
async fn a_round_closes_at_its_deadline_and_draws_over_an_agency_that_never_came() {
    let close_after = Duration::from_millis(1500);
    // Before the round opens: its deadline is at least this far from here.
    let before = std::time::Instant::now();
    let server =
        TestServer::start_with(3, |c| c.schedule = Schedule { close_after: Some(close_after), every: None })
            .await;
    let (mut one, _) = hello(&server, 1, 1).await;
    assert_eq!(one.ask(&batch(0, vec![bet("11", 7574), bet("12", 1)])).await, ack(0, 2));
    assert_eq!(one.ask(&Message::Finished { bets: 2 }).await, Message::FinishedAck);
    let (mut two, _) = hello(&server, 2, 1).await;
    assert_eq!(two.ask(&batch(0, vec![bet("21", 7574)])).await, ack(0, 1));
    assert_eq!(status(&server).await.state, "open");

    // Agency 3 never comes: agency 1's query is held until the deadline,
    // then answered "not ready"; asked again, the winners come at once.
    let answer = one.ask(&Message::WinnersQuery { wait_ms: 20_000 }).await;
    // The journal keeps the opening time to the millisecond.
    assert!(before.elapsed() + Duration::from_millis(1) >= close_after, "answered before the deadline");
    assert!(matches!(answer, Message::NotReady { finished: 1, expected: 3 }), "{answer:?}");
    assert!(before.elapsed() < close_after + Duration::from_secs(5), "held until the draw, not longer");
    assert_eq!(one.ask(&Message::WinnersQuery { wait_ms: 20_000 }).await, winners(&["11"]));
    let late = two.ask(&batch(1, vec![bet("22", 7574)])).await;
    assert!(refused(&late, ErrorCode::RoundClosed), "{late:?}");
    assert!(refused(&two.ask(&Message::Finished { bets: 1 }).await, ErrorCode::RoundClosed));
    assert_eq!(
        two.ask(&Message::WinnersQuery { wait_ms: 0 }).await,
        winners(&["21"]),
        "unfinished, yet drawn"
    );
    let (_, never) = hello(&server, 3, 1).await;
    assert!(
        matches!(never, Message::Welcome { stored: 0, finished: false, stage: RoundStage::Drawn, .. }),
        "{never:?}"
    );

    let status = status(&server).await;
    assert_eq!(
        (status.round, status.state.as_str(), status.reason.as_deref()),
        (1, "drawn", Some("deadline"))
    );
    assert_eq!((status.bets, status.finished, status.winners), (3, 1, Some(2)));
    let documents: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    assert_eq!(documents, ["11", "12", "21"], "nothing after the close");
}

#[tokio::test]
async fn round_two_follows_round_one_whose_winners_stay_served_across_a_restart() {
    let server = TestServer::start(2).await;
    let admin = operator(&server);
    let (mut one, _) = hello(&server, 1, 1).await;
    assert_eq!(one.ask(&batch(0, vec![bet("11", 7574)])).await, ack(0, 1));
    let Err(AdminError::Refused { code: ErrorCode::RoundOpen, reason }) = admin.run(Command::Open).await
    else {
        panic!("open while round 1 is open")
    };
    assert!(reason.contains("round 1 is open"), "{reason}");
    let closed = admin.run(Command::Close).await.unwrap();
    assert_eq!(closed, "round 1 closed (operator): 1 bets, 1 winners");
    let Err(AdminError::Refused { code: ErrorCode::RoundNotOpen, .. }) = admin.run(Command::Close).await
    else {
        panic!("a second close")
    };
    assert!(refused(&one.ask(&batch(1, vec![bet("12", 1)])).await, ErrorCode::RoundClosed));

    assert_eq!(admin.run(Command::Open).await.unwrap(), "round 2 opened");
    let after = one.ask(&Message::Finished { bets: 1 }).await;
    assert!(refused(&after, ErrorCode::RoundClosed), "round 1 is over: {after:?}");
    for kept in ["bets.csv", "bets.csv.journal"] {
        assert!(kept_dir(&server.storage, 1).join(kept).is_file(), "rounds/1/{kept}");
    }
    let (mut next, welcome) = hello(&server, 1, 2).await;
    assert!(matches!(welcome, Message::Welcome { stored: 0, stage: RoundStage::Open, .. }), "{welcome:?}");
    assert_eq!(next.ask(&batch(0, vec![bet("13", 7574)])).await, ack(0, 1));
    let superseded = one.ask(&Message::Finished { bets: 1 }).await;
    assert!(
        refused(&superseded, ErrorCode::Superseded),
        "agency 1 speaks on its newer connection: {superseded:?}"
    );
    let (mut old, welcome) = hello(&server, 1, 1).await;
    assert!(matches!(welcome, Message::Welcome { stored: 1, stage: RoundStage::Drawn, .. }), "{welcome:?}");
    assert_eq!(old.ask(&Message::WinnersQuery { wait_ms: 0 }).await, winners(&["11"]));
    assert!(refused(&old.ask(&batch(1, vec![bet("12", 1)])).await, ErrorCode::RoundClosed));

    let server = server.restart().await;
    let (mut old, _) = hello(&server, 1, 1).await;
    assert_eq!(
        old.ask(&Message::WinnersQuery { wait_ms: 0 }).await,
        winners(&["11"]),
        "read back from rounds/1"
    );
    let (mut two, _) = hello(&server, 2, 2).await;
    assert_eq!(two.ask(&Message::Finished { bets: 0 }).await, Message::FinishedAck);
    let (mut one, welcome) = hello(&server, 1, 2).await;
    assert!(matches!(welcome, Message::Welcome { stored: 1, .. }), "round 2 resumed: {welcome:?}");
    assert_eq!(one.ask(&Message::Finished { bets: 1 }).await, Message::FinishedAck);
    assert_eq!(one.ask(&Message::WinnersQuery { wait_ms: 0 }).await, winners(&["13"]));
    let (_, unknown) = hello(&server, 1, 0).await;
    assert!(refused(&unknown, ErrorCode::UnknownRound), "{unknown:?}");
    let status = status(&server).await;
    assert_eq!(
        (status.round, status.state.as_str(), status.reason.as_deref()),
        (2, "drawn", Some("all_finished"))
    );
    let documents: Vec<String> = server.stop().await.into_iter().map(|b| b.document).collect();
    assert_eq!(documents, ["13"], "the open round's file holds round 2 only");
}

#[tokio::test]
async fn a_hello_for_a_round_not_open_yet_waits_for_it_on_the_same_connection() {
    let server = TestServer::start(1).await;
    let mut early = Raw::tls(server.addr, Some(1)).await;
    let asked = std::time::Instant::now();
    let reply = early.ask(&Message::Hello { agency: 1, round: 2, wait_ms: 300 }).await;
    assert!(
        refused(&reply, ErrorCode::RoundNotOpen) && asked.elapsed() >= Duration::from_millis(300),
        "{reply:?}"
    );

    early.send(&Message::Hello { agency: 1, round: 2, wait_ms: 20_000 }).await;
    let admin = operator(&server);
    admin.run(Command::Close).await.unwrap();
    admin.run(Command::Open).await.unwrap();
    let reply = early.recv().await.unwrap();
    assert!(refused(&reply, ErrorCode::RoundNotOpen), "answered as it opens: {reply:?}");
    assert!(asked.elapsed() < Duration::from_secs(10));
    let welcome = early.ask(&Message::Hello { agency: 1, round: 2, wait_ms: 0 }).await;
    assert!(matches!(welcome, Message::Welcome { stage: RoundStage::Open, .. }), "{welcome:?}");
    assert_eq!(early.ask(&batch(0, vec![bet("1", 1)])).await, ack(0, 1));
    server.stop().await;
}

#[tokio::test]
async fn an_agency_cannot_run_the_operators_commands_and_the_operator_cannot_bet() {
    let server = TestServer::start(1).await;
    for request in [Message::StatusQuery, Message::CloseRound, Message::OpenRound] {
        let mut agency = Raw::tls(server.addr, Some(1)).await;
        assert!(refused(&agency.ask(&request).await, ErrorCode::Forbidden), "{request:?}");
        agency.expect_closed().await;
    }
    let config =
        edge::credentials::client_config(&testkit::credentials::operator(&common::credentials())).unwrap();
    for request in [
        Message::Hello { agency: 1, round: 1, wait_ms: 0 },
        batch(0, vec![bet("1", 1)]),
        Message::Finished { bets: 0 },
        Message::WinnersQuery { wait_ms: 0 },
    ] {
        let mut operator = Raw::tls_with(server.addr, config.clone()).await.unwrap();
        assert!(refused(&operator.ask(&request).await, ErrorCode::Forbidden), "{request:?}");
        operator.expect_closed().await;
    }
    let mut operator = Raw::tls_with(server.addr, config).await.unwrap();
    assert!(matches!(operator.ask(&Message::StatusQuery).await, Message::Status { last: true, .. }));
    assert!(server.stop().await.is_empty());
}

#[tokio::test]
async fn with_a_round_every_second_rounds_follow_each_other_each_in_its_slot() {
    let every = Duration::from_secs(1);
    let server =
        TestServer::start_with(1, |c| c.schedule = Schedule { close_after: None, every: Some(every) }).await;
    let started = std::time::Instant::now();
    let (mut one, _) = hello(&server, 1, 1).await;
    assert_eq!(one.ask(&batch(0, vec![bet("1", 7574)])).await, ack(0, 1));
    assert_eq!(one.ask(&Message::Finished { bets: 1 }).await, Message::FinishedAck);
    assert_eq!(one.ask(&Message::WinnersQuery { wait_ms: 0 }).await, winners(&["1"]), "drawn early");
    assert_eq!(status(&server).await.round, 1, "round 2 waits for its slot");

    for round in [2, 3] {
        let mut next = Raw::tls(server.addr, Some(1)).await;
        let reply = next.ask(&Message::Hello { agency: 1, round, wait_ms: 10_000 }).await;
        assert!(refused(&reply, ErrorCode::RoundNotOpen), "{reply:?}");
        let slot = every * (round as u32 - 1);
        assert!(started.elapsed() >= slot - Duration::from_millis(200), "round {round} opened early");
        let welcome = next.ask(&Message::Hello { agency: 1, round, wait_ms: 0 }).await;
        assert!(matches!(welcome, Message::Welcome { stage: RoundStage::Open, .. }), "{welcome:?}");
    }
    assert!(
        kept_dir(&server.storage, 2).join("bets.csv.journal").is_file(),
        "round 2 closed at its deadline"
    );
    let (_, two) = hello(&server, 1, 2).await;
    assert!(matches!(two, Message::Welcome { stored: 0, stage: RoundStage::Drawn, .. }), "{two:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_open_that_finds_rounds_k_taken_is_refused_and_changes_nothing() {
    let server = TestServer::start(1).await;
    let admin = operator(&server);
    admin.run(Command::Close).await.unwrap();
    std::fs::create_dir_all(kept_dir(&server.storage, 1)).unwrap();
    std::fs::write(kept_dir(&server.storage, 1).join("notes.txt"), "mine").unwrap();
    let refused = admin.run(Command::Open).await;
    let Err(AdminError::Refused { code: ErrorCode::RoundOpen, reason }) = refused else {
        panic!("an open into a taken rounds/1: {refused:?}")
    };
    assert!(reason.contains("not this round's"), "{reason}");
    let status = status(&server).await;
    assert_eq!((status.round, status.state.as_str()), (1, "drawn"), "still serving round 1");
    std::fs::remove_file(kept_dir(&server.storage, 1).join("notes.txt")).unwrap();
    assert_eq!(admin.run(Command::Open).await.unwrap(), "round 2 opened");
    server.stop().await;
}
