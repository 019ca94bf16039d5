//! The server's own HTTP listener (`SERVER_HTTP_ADDRESS`), for people and
//! for monitoring, read only: `/` a status page, `/status.json` the same
//! status as `server admin status --json`, `/metrics` for Prometheus,
//! `/healthz` for orchestrators. No endpoint changes anything.
//!
//! It must never take service from the agencies, whatever it is sent: it
//! runs on a thread and a runtime of its own, at the lowest CPU priority
//! (a flood of requests gets what the agencies leave), holds at most
//! [`MAX_CONNECTIONS`] connections, gives a request's head
//! [`HEAD_TIMEOUT`] to arrive and a connection [`CONNECTION_TIMEOUT`] in
//! all, and reads no request body. When it holds as many as it may, a new
//! connection closes the oldest: connections opened and left idle cannot
//! keep out a health check, which asks and is answered at once. HTTP itself
//! is hyper's (with axum's routing), not ours.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::agencies::Agencies;
use crate::metrics::{Exposition, Metrics};
use crate::status::Status;

/// Connections at once, at most.
pub const MAX_CONNECTIONS: usize = 64;

/// Time for a request's head to arrive.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection's whole life, keep-alive included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The status page: one file, its style and script inline, nothing fetched
/// from anywhere but `/status.json`.
const PAGE: &str = include_str!("http/page.html");

/// Whether the server serves its round.
#[derive(Debug)]
pub struct Health {
    state: AtomicU8,
    /// The counters, which also say whether the round's writes fail now.
    metrics: Arc<Metrics>,
}

impl Health {
    const SERVING: u8 = 0;
    const STOPPING: u8 = 1;
    const FAILED: u8 = 2;

    pub fn new(metrics: Arc<Metrics>) -> Health {
        Health { state: AtomicU8::new(Health::SERVING), metrics }
    }

    /// The server is shutting down.
    pub fn stopping(&self) {
        let from = Health::SERVING;
        let _ = self.state.compare_exchange(from, Health::STOPPING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The round's storage failed for good: the server stops.
    pub fn failed(&self) {
        self.state.store(Health::FAILED, Ordering::Release);
    }

    /// Why the server does not serve, if it does not: it stops, or its
    /// storage failed for good, or fails now (a full disk: every batch is
    /// refused until a write succeeds again).
    fn problem(&self) -> Option<&'static str> {
        match self.state.load(Ordering::Acquire) {
            Health::SERVING if self.metrics.storage_failing() => {
                Some("the round's storage fails: bets are refused until a write succeeds")
            }
            Health::SERVING => None,
            Health::STOPPING => Some("shutting down"),
            _ => Some("the round's storage failed"),
        }
    }
}

/// What the pages read.
pub struct Pages {
    agencies: Arc<Agencies>,
    exposition: Exposition,
    health: Arc<Health>,
    status: Shared,
    metrics: Shared,
}

impl Pages {
    pub fn new(agencies: Arc<Agencies>, exposition: Exposition, health: Arc<Health>) -> Pages {
        Pages { agencies, exposition, health, status: Shared::default(), metrics: Shared::default() }
    }
}

/// A body of at least this many bytes (the status of tens of thousands of
/// agencies) is shared: see [`Shared`].
const SHARE_FROM: usize = 1 << 20;

/// How long a shared body is served before it is made again.
const SHARED_FOR: Duration = Duration::from_secs(1);

/// A large body, made at most once every [`SHARED_FOR`] and shared by
/// every request meanwhile: clients that ask and never read hold one copy
/// between them, not one each, and a flood of requests makes it once.
/// A small body is made for each request, as fresh as can be.
#[derive(Default)]
struct Shared(Mutex<Option<(Instant, Bytes)>>);

impl Shared {
    fn get(&self, make: impl FnOnce() -> String) -> Bytes {
        let mut shared = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((made, body)) = shared.as_ref() {
            if made.elapsed() < SHARED_FOR {
                return body.clone();
            }
        }
        let body = Bytes::from(make());
        *shared = (body.len() >= SHARE_FROM).then(|| (Instant::now(), body.clone()));
        body
    }
}

/// Serves the pages on `listener` on a thread of its own until `stop`.
pub fn spawn(
    listener: std::net::TcpListener,
    pages: Arc<Pages>,
    stop: CancellationToken,
) -> io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("http".into()).spawn(move || {
        lowest_priority();
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => return tracing::error!("{}", edge::log::Action::fail("http").field("error", e)),
        };
        runtime.block_on(serve(listener, pages, stop));
    })
}

/// Lowers this thread's CPU priority to the least (nice 19): under a flood
/// of requests the agencies' threads go first.
fn lowest_priority() {
    // SAFETY: gettid and setpriority only read and set this thread's
    // scheduling priority.
    let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if set != 0 {
        tracing::debug!("the HTTP thread keeps its priority: {}", io::Error::last_os_error());
    }
}

/// The connections being served, oldest first: each one's number and
/// what closes it.
type Open = Arc<Mutex<VecDeque<(u64, CancellationToken)>>>;

async fn serve(listener: std::net::TcpListener, pages: Arc<Pages>, stop: CancellationToken) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
    let router = router(pages);
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let open: Open = Arc::default();
    for id in 0u64.. {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let place = match room.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                // Full: the oldest goes, and gives its place up at once.
                let oldest = lock(&open).pop_front();
                if let Some((_, close)) = oldest {
                    close.cancel();
                }
                let Ok(place) = room.clone().acquire_owned().await else { return };
                place
            }
        };
        let close = stop.child_token();
        lock(&open).push_back((id, close.clone()));
        assert!(lock(&open).len() <= MAX_CONNECTIONS, "one entry a place");
        let (service, open) = (TowerToHyperService::new(router.clone()), open.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(8 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => {}
                () = close.cancelled() => {}
            }
            lock(&open).retain(|(other, _)| *other != id);
            drop(place);
        });
    }
}

fn lock(open: &Open) -> std::sync::MutexGuard<'_, VecDeque<(u64, CancellationToken)>> {
    open.lock().unwrap_or_else(|p| p.into_inner())
}

fn router(pages: Arc<Pages>) -> Router {
    let status = pages.clone();
    let metrics = pages.clone();
    let health = pages;
    Router::new()
        .route("/", get(page))
        .route("/status.json", get(move || async move { status_json(&status) }))
        .route("/metrics", get(move || async move { metrics_text(&metrics) }))
        .route("/healthz", get(move || async move { healthz(&health) }))
}

async fn page() -> Response {
    let policy =
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'";
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, policy),
        ],
        PAGE,
    )
        .into_response()
}

fn status_json(pages: &Pages) -> Response {
    let json = pages.status.get(|| Status::of(&pages.agencies).json());
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], json).into_response()
}

fn metrics_text(pages: &Pages) -> Response {
    let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, kind)], pages.metrics.get(|| pages.exposition.encode())).into_response()
}

fn healthz(pages: &Pages) -> Response {
    match pages.health.problem() {
        None => (StatusCode::OK, "serving\n").into_response(),
        Some(problem) => (StatusCode::SERVICE_UNAVAILABLE, format!("{problem}\n")).into_response(),
    }
}

/// Why `server health` says the server is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("cannot connect to {address}: {source}")]
    Connect { address: SocketAddr, source: std::io::Error },
    #[error("{address} does not speak HTTP/1.1: {source}")]
    Http { address: SocketAddr, source: hyper::Error },
    #[error("{address} answers {status}")]
    Status { address: SocketAddr, status: StatusCode },
    #[error("{address}: no answer within {within:?}")]
    Silent { address: SocketAddr, within: Duration },
}

/// How long `server health` waits for the answer: well within the
/// orchestrators' timeout for the check.
const HEALTH_WITHIN: Duration = Duration::from_secs(2);

/// `server health`: asks `/healthz` at `address`; whether it said 200.
pub async fn check(address: SocketAddr) -> Result<(), Unhealthy> {
    let http = |source| Unhealthy::Http { address, source };
    let ask = async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|source| Unhealthy::Connect { address, source })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
        tokio::spawn(connection);
        let request = hyper::Request::get("/healthz")
            .header(header::HOST, address.to_string())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("a request of a path, a host and no body is well formed");
        let response = sender.send_request(request).await.map_err(http)?;
        match response.status() {
            StatusCode::OK => Ok(()),
            status => Err(Unhealthy::Status { address, status }),
        }
    };
    tokio::time::timeout(HEALTH_WITHIN, ask)
        .await
        .map_err(|_| Unhealthy::Silent { address, within: HEALTH_WITHIN })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_large_body_is_made_once_a_second_and_a_small_one_each_time() {
        let (shared, made) = (Shared::default(), Cell::new(0));
        let make = |len: usize| {
            made.set(made.get() + 1);
            "x".repeat(len)
        };
        for _ in 0..3 {
            assert_eq!(shared.get(|| make(10)).len(), 10);
        }
        assert_eq!(made.get(), 3, "small: each time");
        let first = shared.get(|| make(SHARE_FROM));
        let second = shared.get(|| make(SHARE_FROM));
        assert_eq!(made.get(), 4, "large: once");
        assert_eq!(first.as_ptr(), second.as_ptr(), "one copy, shared");
    }
}
