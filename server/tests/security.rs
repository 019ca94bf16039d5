//! The attacks of the security work, each against the real server over
//! loopback: acting as another agency, reading its winners, forging its
//! "finished", credentials from elsewhere or revoked, and connections that
//! try to starve the agencies.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::fault::Fatal;
use client::{AgencyError, BetSource, Ending};
use common::{ack, batch, bet, client_config, Raw, TestServer};
use protocol::tls;
use protocol::{ErrorCode, Message, MAX_FRAME_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn refused(reply: &Message, code: ErrorCode) -> bool {
    matches!(reply, Message::Error { code: c, .. } if *c == code)
}

/// A deadline that no test reaches: set on the server, it rules out that
/// what the test waits for came from that deadline, whatever the load of
/// the machine; the test's own waits are bounded well below it.
const NEVER: Duration = Duration::from_secs(120);

/// How long a test waits for what it checks: generous, and far below
/// [`NEVER`].
const WITHIN: Duration = Duration::from_secs(30);

/// A server for agency 1 whose pool of connections not yet authenticated
/// holds 64, and where those never time out: only the pool makes room.
async fn server_whose_pool_alone_makes_room() -> TestServer {
    TestServer::start_with(1, |c| {
        c.max_unauthenticated = 64;
        c.auth_timeout = NEVER;
    })
    .await
}

/// Asserts that agency 1 gets in at `addr`, says Hello and has a batch
/// stored, within [`WITHIN`]. Getting in at all says it did before its
/// authentication deadline, which closes a connection that has not.
async fn assert_served(addr: SocketAddr) {
    let served = tokio::time::timeout(WITHIN, async {
        let (mut agency, _) = Raw::agency(addr, 1).await;
        agency.ask(&batch(0, vec![bet("1", 1)])).await
    })
    .await;
    assert_eq!(served.expect("the agency was kept out"), ack(0, 1));
}

/// Everything a peer without agency 3's certificate can try, as agency 3.
async fn impersonations(addr: SocketAddr) {
    for request in [
        batch(1_000_000, vec![bet("66666666", 7574)]),
        Message::Finished { bets: 0 },
        Message::WinnersQuery { wait_ms: 0 },
        Message::Hello { agency: 3, round: 1, wait_ms: 0 },
    ] {
        let mut plain = Raw::connect(addr).await;
        let reply = plain.ask(&request).await;
        assert!(refused(&reply, ErrorCode::Unauthenticated), "plain {}: {reply:?}", request.name());
        plain.expect_closed().await;

        let mut anonymous = Raw::tls(addr, None).await;
        let reply = anonymous.ask(&request).await;
        assert!(refused(&reply, ErrorCode::Unauthenticated), "TLS without a certificate: {reply:?}");
        anonymous.expect_closed().await;
    }
    let mut other = Raw::tls(addr, Some(4)).await;
    let reply = other.ask(&Message::Hello { agency: 3, round: 1, wait_ms: 0 }).await;
    assert!(refused(&reply, ErrorCode::Forbidden), "agency 4 as agency 3: {reply:?}");
    other.expect_closed().await;
}

/// The attack of the issue: while agency 3 uploads, others try to store a
/// bet as agency 3, ask for its winners, say it finished. Nothing of it
/// takes: agency 3 stores all its bets and hears only of its own winners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_can_act_as_another_agency_store_for_it_read_its_winners_or_finish_for_it() {
    let data = tempfile::tempdir().unwrap();
    let generated = datagen::generate(data.path(), &[2000, 500, 2000, 500], &[1, 1, 2, 1], 3).unwrap();
    let server = TestServer::start(4).await;
    let mut config = client_config(3, server.addr, &generated[2].path);
    config.batch_max_amount = 10;
    let three = tokio::spawn(async move {
        let source = BetSource::File(config.data_file.clone());
        client::run(&config, source, CancellationToken::new()).await.unwrap()
    });
    impersonations(server.addr).await;
    let others: Vec<_> = [&generated[0], &generated[1], &generated[3]]
        .into_iter()
        .map(|g| {
            let (config, path) = (client_config(g.agency, server.addr, &g.path), g.path.clone());
            tokio::spawn(async move {
                client::run(&config, BetSource::File(path), CancellationToken::new()).await
            })
        })
        .collect();
    for (g, other) in [&generated[0], &generated[1], &generated[3]].into_iter().zip(others) {
        assert_eq!(
            other.await.unwrap().unwrap(),
            Ending::Winners { documents: g.winners.clone(), rejected: 0, left_out: None }
        );
    }
    assert_eq!(
        three.await.unwrap(),
        Ending::Winners { documents: generated[2].winners.clone(), rejected: 0, left_out: None }
    );
    let stored = server.stop().await;
    assert_eq!(stored.len(), 5000);
    assert!(!stored.iter().any(|b| b.document == "66666666"), "the intruder's bet is not stored");
}

/// `Finished` for every agency, before any of them starts: refused, and
/// the draw waits for the real agencies.
#[tokio::test]
async fn finished_cannot_be_said_for_agencies_that_have_not_said_it() {
    let server = TestServer::start(2).await;
    for _ in 1..=2 {
        let mut plain = Raw::connect(server.addr).await;
        assert!(refused(&plain.ask(&Message::Finished { bets: 0 }).await, ErrorCode::Unauthenticated));
    }
    let (mut one, _) = Raw::agency(server.addr, 1).await;
    assert_eq!(
        one.ask(&Message::WinnersQuery { wait_ms: 0 }).await,
        Message::NotReady { finished: 0, expected: 2 }
    );
    assert_eq!(one.ask(&batch(0, vec![bet("1", 7574)])).await, ack(0, 1));
    assert_eq!(one.ask(&Message::Finished { bets: 1 }).await, Message::FinishedAck);
    assert_eq!(
        one.ask(&Message::WinnersQuery { wait_ms: 0 }).await,
        Message::NotReady { finished: 1, expected: 2 }
    );
    server.stop().await;
}

/// A certificate of another authority, or a revoked one, fails the TLS
/// handshake itself; the agency gets the alert, not a session.
#[tokio::test]
async fn a_certificate_of_another_authority_or_a_revoked_one_is_refused() {
    let elsewhere = tempfile::tempdir().unwrap();
    testkit::credentials::make(elsewhere.path(), 1);
    let own = tempfile::tempdir().unwrap();
    testkit::credentials::make(own.path(), 2);
    testkit::credentials::run_script(&[own.path().to_str().unwrap(), "--revoke", "2"]);
    let server = TestServer::start_with(2, |c| {
        let credentials = testkit::credentials::server(own.path());
        c.tls = edge::credentials::server_config(&credentials, Some(&own.path().join("crl.pem"))).unwrap();
    })
    .await;

    for (dir, agency, alert) in [(elsewhere.path(), 1, "UnknownCA"), (own.path(), 2, "CertificateRevoked")] {
        // The agency trusts the server (our CA); its own certificate is the
        // one in question.
        let credentials = edge::credentials::Credentials {
            ca: own.path().join("ca.pem"),
            ..testkit::credentials::agency(dir, agency)
        };
        let config = edge::credentials::client_config(&credentials).unwrap();
        // TLS 1.3: the client's side of the handshake ends before the server
        // judges its certificate; the refusal comes at the first read.
        let error = match Raw::tls_with(server.addr, config).await {
            Err(e) => e,
            Ok(mut raw) => {
                raw.send(&Message::Hello { agency, round: 1, wait_ms: 0 }).await;
                match raw.reader.read().await {
                    Err(protocol::ReadError::Io(e)) => e,
                    other => panic!("agency {agency} got {other:?}"),
                }
            }
        };
        let tls_error = tls::tls_failure(&error).unwrap_or_else(|| panic!("not a TLS refusal: {error}"));
        assert!(format!("{tls_error:?}").contains(alert), "{tls_error:?}");
    }
    let config = edge::credentials::client_config(&testkit::credentials::agency(own.path(), 1)).unwrap();
    let mut fine = Raw::tls_with(server.addr, config).await.unwrap();
    assert!(matches!(
        fine.ask(&Message::Hello { agency: 1, round: 1, wait_ms: 0 }).await,
        Message::Welcome { .. }
    ));
    server.stop().await;
}

/// Each of `waits`, the time a failure took to be refused, is at least its
/// penalty: 100 ms, doubling with each failure.
fn assert_penalties(waits: &[Duration]) {
    for (failure, wait) in waits.iter().enumerate() {
        let penalty = Duration::from_millis(100 << failure);
        assert!(*wait >= penalty, "failure {} waits out {penalty:?}: {waits:?}", failure + 1);
    }
}

/// A failed authentication is refused only after a penalty, which doubles
/// with each recent failure of its address.
#[tokio::test]
async fn repeated_failures_are_refused_ever_more_slowly() {
    let server = TestServer::start(1).await;
    let mut waits = Vec::new();
    for _ in 0..4 {
        let mut anonymous = Raw::tls(server.addr, None).await;
        let started = Instant::now();
        assert!(refused(
            &anonymous.ask(&Message::Hello { agency: 1, round: 1, wait_ms: 0 }).await,
            ErrorCode::Unauthenticated
        ));
        waits.push(started.elapsed());
    }
    assert_penalties(&waits);
    server.stop().await;
}

/// However many failures its address has, an agency with its certificate
/// is not penalised: its authentication deadline, far shorter than the
/// address's penalty by now, is never reached.
#[tokio::test]
async fn an_agency_behind_a_failing_address_is_not_penalised() {
    let deadline = Duration::from_millis(500);
    let server = TestServer::start_with(1, |c| c.auth_timeout = deadline).await;
    for _ in 0..6 {
        let mut anonymous = Raw::tls(server.addr, None).await;
        anonymous.send(&Message::Hello { agency: 1, round: 1, wait_ms: 0 }).await;
    }
    // Six failures: the address's penalty is now 2 s, four deadlines.
    let (mut agency, welcome) = Raw::agency(server.addr, 1).await;
    assert!(matches!(welcome, Message::Welcome { .. }), "{welcome:?}");
    assert_eq!(agency.ask(&batch(0, vec![bet("1", 1)])).await, ack(0, 1));
    server.stop().await;
}

/// Plain frames asking for what needs an agency are failed
/// authentications too: their refusal waits out the same penalty.
#[tokio::test]
async fn plain_requests_for_an_agency_are_failures_too() {
    let server = TestServer::start(1).await;
    let mut waits = Vec::new();
    for _ in 0..4 {
        let mut plain = Raw::connect(server.addr).await;
        let started = Instant::now();
        assert!(refused(
            &plain.ask(&Message::Hello { agency: 1, round: 1, wait_ms: 0 }).await,
            ErrorCode::Unauthenticated
        ));
        waits.push(started.elapsed());
    }
    assert_penalties(&waits);
    server.stop().await;
}

/// Connections that never authenticate, far more than the pool of them
/// holds: an agency still connects and is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_keep_an_agency_out() {
    let server = server_whose_pool_alone_makes_room().await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    assert_served(server.addr).await;
    drop(idle);
    server.stop().await;
}

/// Connections that keep sending Echo every few milliseconds never
/// authenticate, so they cannot hold a place: an agency is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoing_connections_do_not_keep_an_agency_out() {
    let server = server_whose_pool_alone_makes_room().await;
    let stop = CancellationToken::new();
    // Connections that have had an echo answered, or were pushed out.
    let settled = Arc::new(AtomicUsize::new(0));
    let mut chatter = Vec::new();
    for _ in 0..256 {
        let (addr, stop, settled) = (server.addr, stop.clone(), settled.clone());
        chatter.push(tokio::spawn(async move {
            let mut raw = Raw::connect(addr).await;
            let mut first = true;
            while !stop.is_cancelled() {
                let echo = Message::Echo(bytes::Bytes::from_static(b"keepalive"));
                let answered = raw.writer.send(&echo).await.is_ok() && raw.reader.read().await.is_ok();
                if std::mem::replace(&mut first, false) {
                    settled.fetch_add(1, Ordering::Relaxed);
                }
                if !answered {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    // The agency comes once the chatter fills the pool, not among its
    // connections still arriving.
    while settled.load(Ordering::Relaxed) < chatter.len() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_served(server.addr).await;
    stop.cancel();
    for task in chatter {
        let _ = task.await;
    }
    server.stop().await;
}

/// A connection that never authenticates is dropped at the deadline,
/// whatever it sends.
#[tokio::test]
async fn a_connection_that_does_not_authenticate_is_dropped_at_the_deadline() {
    // Nothing but the authentication deadline can close them here.
    let server = TestServer::start_with(1, |c| {
        c.auth_timeout = Duration::from_millis(300);
        c.idle_timeout = NEVER;
    })
    .await;
    let started = Instant::now();
    let mut silent = Raw::connect(server.addr).await;
    let mut echoing = Raw::connect(server.addr).await;
    // A certificate is not enough: authenticating ends with Hello.
    let mut certified = Raw::tls(server.addr, Some(1)).await;
    let echo = Message::Echo(bytes::Bytes::from_static(b"hola"));
    assert!(matches!(echoing.ask(&echo).await, Message::Echo(_)));
    assert!(matches!(certified.ask(&echo).await, Message::Echo(_)));
    silent.expect_closed().await;
    echoing.expect_closed().await;
    certified.expect_closed().await;
    assert!(started.elapsed() < NEVER, "closed at the deadline, not by the idle timeout");
    server.stop().await;
}

/// Before its `Hello` a connection may send only so much, whatever it is:
/// plain frames, a certified connection's frames, or a TLS handshake
/// message that would have rustls buffer 64 KiB. Past the limit it is
/// closed at once, not at the deadline; after `Hello` there is no limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_may_send_only_so_much_before_hello() {
    let server = TestServer::start_with(1, |c| c.auth_timeout = NEVER).await;
    let started = Instant::now();
    let echo = Message::Echo(bytes::Bytes::from(vec![b'x'; MAX_FRAME_LEN - 64]));
    let mut plain = Raw::connect(server.addr).await;
    let mut certified = Raw::tls(server.addr, Some(1)).await;
    for raw in [&mut plain, &mut certified] {
        assert!(matches!(raw.ask(&echo).await, Message::Echo(_)), "one frame of the largest size fits");
        raw.send(&echo).await;
        raw.expect_closed().await;
    }
    // One handshake message of 64 KiB, over records of 16 KiB.
    let mut message = vec![1, 0x00, 0xfd, 0xe8];
    message.resize(4 + 65_000, 0x5a);
    let mut handshake = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    for part in message.chunks(16 * 1024) {
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend_from_slice(&(part.len() as u16).to_be_bytes());
        record.extend_from_slice(part);
        if handshake.write_all(&record).await.is_err() {
            break;
        }
    }
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), handshake.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the handshake connection is still open after 5 s");
    assert!(started.elapsed() < NEVER, "closed at the limit, not at the deadline");
    // An agency that has said Hello sends far more over one connection.
    let (mut agency, _) = Raw::agency(server.addr, 1).await;
    for first in 0..8 {
        let bets = (0..60).map(|i| bet(&format!("{}", first * 60 + i), 1)).collect();
        assert_eq!(agency.ask(&batch(first * 60, bets)).await, ack(first * 60, 60));
    }
    server.stop().await;
}

/// A peer that sends requests and never reads the replies: once a reply
/// cannot be written within the write timeout, the server closes the
/// connection, freeing its place; everyone else is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_closed_by_the_write_timeout() {
    // No other timeout can close the connection within the test's wait.
    let server = TestServer::start_with(2, |c| {
        c.write_timeout = Duration::from_millis(300);
        c.idle_timeout = NEVER;
    })
    .await;
    let (mut greedy, _) = Raw::agency(server.addr, 1).await;
    let flood = tokio::spawn(async move {
        let mut frame = bytes::BytesMut::new();
        Message::Echo(vec![b'x'; 8000].into()).encode(&mut frame);
        let started = Instant::now();
        // Writing fails once the server has closed the connection.
        while started.elapsed() < WITHIN {
            if greedy.writer.get_mut().write_all(&frame).await.is_err() {
                return started.elapsed();
            }
        }
        panic!("still connected after {WITHIN:?} of never reading");
    });
    let (mut other, _) = Raw::agency(server.addr, 2).await;
    assert_eq!(other.ask(&batch(0, vec![bet("2", 2)])).await, ack(0, 1));
    let closed_after = flood.await.unwrap();
    assert!(closed_after < NEVER, "closed by the write timeout: {closed_after:?}");
    server.stop().await;
}

/// An agency whose certificate the server refuses stops at once with a
/// clear error: trying again would not change the certificate.
#[tokio::test]
async fn an_agency_with_a_refused_certificate_stops_at_once_saying_why() {
    let elsewhere = tempfile::tempdir().unwrap();
    testkit::credentials::make(elsewhere.path(), 1);
    let server = TestServer::start(1).await;
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("agency-1.csv");
    std::fs::write(&path, "Ana,Paz,1,1999-03-17,1\n").unwrap();
    let mut config = client_config(1, server.addr, &path);
    let credentials = edge::credentials::Credentials {
        ca: common::credentials().join("ca.pem"),
        ..testkit::credentials::agency(elsewhere.path(), 1)
    };
    config.tls = edge::credentials::client_config(&credentials).unwrap();
    // Fatal, not given up after the retry timeout: it did not try again.
    let outcome = client::run(&config, BetSource::File(path.clone()), CancellationToken::new()).await;
    let err = outcome.unwrap_err();
    assert!(matches!(err, AgencyError::Fatal(Fatal::CertificateRefused { .. })), "{err:?}");

    // And an agency that does not trust the server's certificate stops too.
    let mut config = client_config(1, server.addr, &path);
    config.tls =
        edge::credentials::client_config(&testkit::credentials::agency(elsewhere.path(), 1)).unwrap();
    let err = client::run(&config, BetSource::File(path), CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, AgencyError::Fatal(Fatal::ServerRefused { .. })), "{err:?}");
    assert!(server.stop().await.is_empty());
}

/// A proxy that delays everything by `delay` each way: an agency far away.
async fn far_away(upstream: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((near, _)) = listener.accept().await {
            let Ok(far) = tokio::net::TcpStream::connect(upstream).await else { continue };
            let (near_read, near_write) = near.into_split();
            let (far_read, far_write) = far.into_split();
            for (mut from, mut to) in [(near_read, far_write), (far_read, near_write)] {
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        if to.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    addr
}

/// The attack the oldest-first pool lost to: idle connections from other
/// addresses, far faster than an agency 100 ms away can finish its
/// handshake and Hello. The flood only pushes out its own places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_other_addresses_does_not_keep_a_far_away_agency_out() {
    let server = TestServer::start_with(1, |c| c.max_unauthenticated = 64).await;
    let stop = CancellationToken::new();
    let mut flood = Vec::new();
    for source in 2..12u8 {
        let (addr, stop) = (server.addr, stop.clone());
        flood.push(tokio::spawn(async move {
            let mut open = std::collections::VecDeque::new();
            while !stop.is_cancelled() {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::from(([127, 0, 0, source], 0))).unwrap();
                if let Ok(stream) = socket.connect(addr).await {
                    open.push_back(stream);
                }
                if open.len() > 20 {
                    open.pop_front();
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let far = far_away(server.addr, Duration::from_millis(50)).await;
    assert_served(far).await;
    stop.cancel();
    for task in flood {
        let _ = task.await;
    }
    server.stop().await;
}
