//! The server's pages over loopback, in process: the status page and
//! `/status.json` as the operator sees the round, `/metrics` read with a
//! Prometheus parser and held to the bets file, `/healthz`, and a flood of
//! HTTP requests during a round that takes nothing from the agencies.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use client::{BetSource, Ending};
use common::{ack, batch, bet, client_config, Raw, TestServer};
use http_body_util::BodyExt;
use protocol::Message;
use server::status::Status;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// `GET path`: the status, the content type and the body.
async fn get(address: SocketAddr, path: &str) -> (u16, String, String) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", address.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let kind =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, kind, String::from_utf8(body.to_vec()).unwrap())
}

/// `/metrics` as Prometheus reads it: each sample's value by name and
/// labels; a histogram's is its `+Inf` bucket, once its buckets are seen
/// to be cumulative and to end with `+Inf`.
async fn metrics(address: SocketAddr) -> HashMap<String, f64> {
    let (status, kind, text) = get(address, "/metrics").await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let mut samples = HashMap::new();
    for sample in scrape.samples {
        let mut labels: Vec<String> = sample.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
                assert!(counts.is_sorted(), "{}: buckets not cumulative: {counts:?}", sample.metric);
                let last = buckets.last().expect("a histogram has buckets");
                assert_eq!(last.less_than, f64::INFINITY, "{}: no +Inf bucket", sample.metric);
                last.count
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        samples.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), value);
    }
    samples
}

#[tokio::test]
async fn the_page_and_status_json_show_the_round_and_no_personal_data() {
    let server = TestServer::start(2).await;
    let http = server.http.unwrap();
    let (mut one, _) = Raw::agency(server.addr, 1).await;
    assert_eq!(one.ask(&batch(0, vec![bet("30904465", 7574), bet("30904466", 1)])).await, ack(0, 2));

    let (status, kind, json) = get(http, "/status.json").await;
    assert_eq!((status, kind.as_str()), (200, "application/json"));
    let status: Status = serde_json::from_str(&json).unwrap();
    assert_eq!((status.round, status.state.as_str(), status.bets, status.expected), (1, "open", 2, 2));
    let agency = &status.agencies[0];
    assert_eq!((agency.stored, agency.finished, agency.connected), (2, false, true));
    assert!(!status.agencies[1].connected);

    let (status, kind, page) = get(http, "/").await;
    assert_eq!((status, kind.as_str()), (200, "text/html; charset=utf-8"));
    assert!(
        page.contains("/status.json") && !page.contains("http://") && !page.contains("https://"),
        "no outside asset"
    );
    for personal in ["30904465", "Santiago", "Lorca", "1999-03-17"] {
        assert!(!page.contains(personal) && !json.contains(personal), "{personal} shown");
    }
    assert_eq!(get(http, "/nowhere").await.0, 404);
    let (status, _, body) = get(http, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "serving\n"));
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_what_the_bets_file_holds() {
    let server = TestServer::start(2).await;
    let http = server.http.unwrap();
    let (mut one, _) = Raw::agency(server.addr, 1).await;
    let (mut two, _) = Raw::agency(server.addr, 2).await;
    assert_eq!(one.ask(&batch(0, vec![bet("1", 7574), bet("2", 1), bet("3", 2)])).await, ack(0, 3));
    assert_eq!(one.ask(&batch(0, vec![bet("1", 7574)])).await, ack(0, 1), "sent again");
    assert_eq!(two.ask(&batch(0, vec![bet("4", 1)])).await, ack(0, 1));
    let invalid = two.ask(&batch(1, vec![bet("not-digits", 1)])).await;
    assert!(matches!(invalid, Message::Error { code: protocol::ErrorCode::InvalidBet, .. }));
    let ahead = two.ask(&batch(5, vec![bet("5", 1)])).await;
    assert!(matches!(ahead, Message::Error { code: protocol::ErrorCode::OutOfSequence, .. }));
    assert_eq!(one.ask(&Message::Finished { bets: 3 }).await, Message::FinishedAck);

    let samples = metrics(http).await;
    let at = |key: &str| samples.get(key).copied().unwrap_or_else(|| panic!("no {key} in {samples:?}"));
    let stored = server.stored();
    for agency in [1, 2] {
        let rows = stored.iter().filter(|b| b.agency == agency).count() as f64;
        assert_eq!(at(&format!("lottery_bets_stored_total{{agency={agency}}}")), rows);
    }
    assert_eq!(at("lottery_batches_total{result=stored}"), 2.0);
    assert_eq!(at("lottery_batches_total{result=already_stored}"), 1.0);
    assert_eq!(at("lottery_batches_total{result=invalid}"), 1.0);
    assert_eq!(at("lottery_batches_total{result=out_of_sequence}"), 1.0);
    assert_eq!(at("lottery_refusals_total{code=invalid_bet}"), 1.0);
    assert_eq!(at("lottery_refusals_total{code=out_of_sequence}"), 1.0);
    assert_eq!(at("lottery_round{}"), 1.0);
    assert_eq!((at("lottery_round_state{state=open}"), at("lottery_round_state{state=drawn}")), (1.0, 0.0));
    assert_eq!(at("lottery_agencies_finished{}"), 1.0);
    assert_eq!(at("lottery_connections{stage=agency}"), 2.0);
    assert!(at("lottery_fsync_seconds_count{}") >= 3.0, "a sync for each group and the journal's");
    assert_eq!(at("lottery_fsync_seconds{}"), at("lottery_fsync_seconds_count{}"), "+Inf holds every sync");
    assert_eq!(at("lottery_log_lines_dropped_total{reason=stdout}"), 0.0);

    assert_eq!(two.ask(&Message::Finished { bets: 1 }).await, Message::FinishedAck);
    let samples = metrics(http).await;
    assert_eq!(samples["lottery_round_state{state=drawn}"], 1.0);
    drop((one, two));
    server.stop().await;
}

/// Every place taken by connections that sent nothing, or half a request,
/// or stay open after one: the health check still gets in (the oldest
/// goes), as `server health` asks.
#[tokio::test]
async fn connections_left_open_cannot_keep_the_health_check_out() {
    let server = TestServer::start(1).await;
    let http = server.http.unwrap();
    let mut held = Vec::new();
    for at in 0..server::http::MAX_CONNECTIONS + 8 {
        let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
        match at % 3 {
            0 => {}
            1 => stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: te").await.unwrap(),
            _ => {
                stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
                let mut head = [0; 12];
                tokio::io::AsyncReadExt::read_exact(&mut stream, &mut head).await.unwrap();
            }
        }
        held.push(stream);
    }
    for _ in 0..5 {
        server::http::check(http).await.unwrap();
    }
    drop(held);
    server.stop().await;
}

/// A full disk: while the round's writes fail, `/healthz` says so (503,
/// and `server health` fails); once a write succeeds again, it serves.
/// Needs root, to mount a small disk; skipped otherwise.
#[tokio::test]
async fn the_health_check_fails_while_the_storage_does() {
    let Some(disk) = testkit::tmpfs::Tmpfs::mount("256k") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let storage = disk.path().join("round/bets.csv");
    std::fs::create_dir_all(storage.parent().unwrap()).unwrap();
    let server = TestServer::start_with(1, |c| c.storage_path = storage.clone()).await;
    let http = server.http.unwrap();
    let filler = disk.fill_but(0);
    let (mut agency, _) = Raw::agency(server.addr, 1).await;
    let bets: Vec<_> = (0..40).map(|i| bet(&(10_000_000 + i).to_string(), 1)).collect();
    let refused = agency.ask(&batch(0, bets.clone())).await;
    assert!(
        matches!(refused, Message::Error { code: protocol::ErrorCode::StorageFailure, .. }),
        "{refused:?}"
    );
    let failing = server::http::check(http).await.unwrap_err();
    assert!(matches!(failing, server::http::Unhealthy::Status { status, .. } if status == 503), "{failing}");

    std::fs::remove_file(filler).unwrap();
    assert_eq!(agency.ask(&batch(0, bets)).await, ack(0, 40));
    server::http::check(http).await.unwrap();
    drop(agency);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_http_requests_takes_nothing_from_the_agencies() {
    let data = tempfile::tempdir().unwrap();
    let generated = datagen::generate(data.path(), &[3000, 2000, 1000], &[2, 1, 0], 7).unwrap();
    let server = TestServer::start(3).await;
    let http = server.http.unwrap();
    let stop = CancellationToken::new();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..200 {
        let stop = stop.clone();
        flood.spawn(async move {
            let mut answered = 0u64;
            while !stop.is_cancelled() {
                let Ok(mut stream) = tokio::net::TcpStream::connect(http).await else { continue };
                if i % 4 == 0 {
                    // A head that never ends, holding a connection.
                    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await;
                    tokio::select! { () = stop.cancelled() => {}, () = tokio::time::sleep(Duration::from_secs(10)) => {} }
                } else {
                    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
                    let mut sink = Vec::new();
                    let read = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink);
                    if tokio::time::timeout(Duration::from_secs(2), read).await.is_ok() && !sink.is_empty() {
                        answered += 1;
                    }
                }
            }
            answered
        });
    }
    let agencies = generated.iter().map(|g| {
        let config = client_config(g.agency, server.addr, &g.path);
        tokio::spawn(async move {
            let source = BetSource::File(config.data_file.clone());
            client::run(&config, source, CancellationToken::new()).await.unwrap()
        })
    });
    let round = tokio::time::timeout(Duration::from_secs(60), futures_util::future::join_all(agencies)).await;
    stop.cancel();
    let answered: u64 = flood.join_all().await.into_iter().sum();
    let endings: Vec<Ending> =
        round.expect("the round ends under the flood").into_iter().map(Result::unwrap).collect();
    for (g, ending) in generated.iter().zip(&endings) {
        assert_eq!(ending, &Ending::Winners { documents: g.winners.clone(), rejected: 0, left_out: None });
    }
    assert!(answered > 0, "the flood was served, within its bounds");
    assert_eq!(get(http, "/healthz").await.0, 200, "and the pages still answer");
    assert_eq!(server.stop().await.len(), 6000);
}
