//! The listener and the life of the server: accept, serve, shut down.
//!
//! [`Server::bind`] opens the round first (see `lottery::round`): it takes
//! the storage's lock, then starts a new round or resumes the one it finds,
//! before it listens; a second server on the same storage stops there.
//!
//! Shutdown reaches every task through one [`CancellationToken`]: the
//! accept loop stops and closes the listener; each session stops reading,
//! sends the replies it owes and closes its socket; once every session has
//! ended (or after [`SESSION_GRACE`], when the rest are aborted) the job
//! queue closes and the writer drains it, syncs and closes the file. If the
//! writer stops on its own (storage it cannot bring back to a known
//! state), the server shuts down the same way and reports the failure.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use edge::log::{Action, Outcome};
use lottery::round::{self, Opened, Round, RoundError, RoundFiles, RoundState, Shelf};
use lottery::storage::disk::OsDisk;
use protocol::tls::TlsAcceptor;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::agencies::Agencies;
use crate::board::Board;
use crate::clock;
use crate::config::Config;
use crate::connection::{self, Context};
use crate::gate::Gate;
use crate::http::{self, Health, Pages};
use crate::metrics::{Exposition, Metrics};
use crate::session::PeerLines;
use crate::writer;
use crate::writer::WriterFailed;

/// How long sessions get to finish their replies at shutdown.
pub const SESSION_GRACE: Duration = Duration::from_millis(1000);

/// A problem starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on port {port}: {source}")]
    Listen { port: u16, source: io::Error },
    #[error("cannot listen for HTTP on {address} (SERVER_HTTP_ADDRESS): {source}")]
    ListenHttp { address: SocketAddr, source: io::Error },
    #[error(transparent)]
    Round(#[from] RoundError),
    #[error("cannot start the thread that opens the round: {0}")]
    Thread(io::Error),
}

/// A server that listens and owns its round, ready to run.
pub struct Server {
    listener: TcpListener,
    /// The pages' listener, when they are on.
    http: Option<std::net::TcpListener>,
    config: Config,
    files: RoundFiles,
    state: RoundState,
    opened: Opened,
}

impl Server {
    /// Opens the round at the configured storage path, then listens on
    /// `0.0.0.0:port` with the configured backlog.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let opened = round::open(&config.storage_path, config.agencies)?;
        Server::with_round(config, opened)
    }

    /// Like [`Server::bind`], heeding `shutdown` while the round is read
    /// back (a large round takes seconds, and a signal must not wait for
    /// it): the round is opened on a thread of its own, left to the
    /// process's exit if the shutdown comes first (`None`). That exit is a
    /// crash during recovery, which the recovery is made for: it cuts only
    /// what was never acknowledged, and does it again at the next start.
    pub async fn bind_unless(
        config: Config,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Option<Server>, StartError> {
        let (path, agencies) = (config.storage_path.clone(), config.agencies);
        let (done, opened) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("open-round".into())
            .spawn(move || {
                let _ = done.send(round::open(&path, agencies));
            })
            .map_err(StartError::Thread)?;
        let opened = tokio::select! {
            opened = opened => match opened {
                Ok(opened) => opened?,
                // It dropped its sender unsent: it panicked, on a broken
                // invariant. Pass it on.
                Err(_) => std::panic::resume_unwind(thread.join().expect_err("the thread ended unanswered")),
            },
            () = shutdown => return Ok(None),
        };
        Server::with_round(config, opened).map(Some)
    }

    /// Listens on `0.0.0.0:port` (and for the pages) with the round opened.
    fn with_round(
        config: Config,
        (files, state, opened): (RoundFiles, RoundState, Opened),
    ) -> Result<Server, StartError> {
        let listener = listen(config.port, config.listen_backlog)
            .map_err(|source| StartError::Listen { port: config.port, source })?;
        let http = match config.http_address {
            None => None,
            Some(address) => Some(
                std::net::TcpListener::bind(address)
                    .map_err(|source| StartError::ListenHttp { address, source })?,
            ),
        };
        Ok(Server { listener, http, config, files, state, opened })
    }

    /// Where the pages listen, if they do (tests bind port 0 and ask).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Logs what [`Server::bind`] found in the storage: one line.
    pub fn log_round(&self) {
        let state = &self.state;
        match &self.opened {
            Opened::New => {
                let closes = self.config.schedule.closes(state.name().opened);
                self.config.schedule.log_opened(state, closes);
            }
            Opened::Resumed { cut_bets, cut_journal, cuts } => {
                let line = Action::success("recover")
                    .field("round", state.number())
                    .field("state", state.stage().as_str())
                    .field("bets", state.bets())
                    .field("finished", state.finished())
                    .field("agencies", state.expected())
                    .field("cut_bytes", cut_bets + cut_journal);
                if cuts.is_empty() {
                    info!("{line}");
                } else {
                    // Bytes a crash left unfinished: nothing acknowledged,
                    // but worth an operator's eye.
                    let why: Vec<String> = cuts.iter().map(ToString::to_string).collect();
                    warn!("{}", line.field("cut_because", why.join("; ")));
                }
            }
        }
    }

    /// Where the server listens (tests bind port 0 and ask).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then closes everything. Fails if
    /// the writer stopped on a storage failure.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), WriterFailed> {
        let Server { listener, http, config, files, state, opened: _ } = self;
        let shelf = Shelf::new(Arc::new(OsDisk), &config.storage_path);
        let board = Arc::new(Board::new(&state, config.schedule.closes(state.name().opened), shelf));
        let metrics = Arc::new(Metrics::new(config.agencies, files.sync_times()));
        let (jobs, queue) = mpsc::unbounded_channel();
        let agencies = Arc::new(Agencies::new(jobs, board.clone(), metrics.clone()));
        let mut writer =
            writer::spawn(Round::new(files, state), queue, board.clone(), metrics.clone(), config.schedule);
        let gate = Gate::new(config.max_unauthenticated);
        let peer_lines: Arc<PeerLines> = Arc::default();
        let health = Arc::new(Health::new(metrics.clone()));
        let pages = http.map(|listener| {
            let exposition = Exposition::new(metrics, board, gate.clone(), peer_lines.clone());
            let pages = Arc::new(Pages::new(agencies.clone(), exposition, health.clone()));
            (listener, pages)
        });
        let http_stop = CancellationToken::new();
        let http = pages.map(|(listener, pages)| {
            let address = listener.local_addr().ok();
            (address, http::spawn(listener, pages, http_stop.clone()))
        });
        let ctx = Arc::new(Context {
            agencies: agencies.clone(),
            gate,
            failures: Arc::default(),
            acceptor: TlsAcceptor::from(config.tls.clone()),
            auth_timeout: config.auth_timeout,
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
            peer_lines,
            stop: CancellationToken::new(),
        });
        let mut sessions = JoinSet::new();
        let writer_stopped = tokio::select! {
            () = shutdown => None,
            result = &mut writer => Some(result),
            () = accept(&listener, &ctx, &mut sessions) => unreachable!("the accept loop ends only with the server"),
            () = every_second(&ctx.peer_lines, &agencies) => unreachable!("the ticker goes on with the server"),
            () = clock::run(agencies.clone(), config.schedule) => unreachable!("the clock goes on while jobs are taken"),
        };

        health.stopping();
        if matches!(writer_stopped, Some(Ok(Err(_)))) {
            health.failed();
        }
        info!("{}", Action::in_progress("shutdown"));
        drop(listener);
        info!("{}", Action::success("close_listener").field("port", config.port));
        http_stop.cancel();
        join_http(http).await;
        ctx.stop.cancel();
        join_sessions(sessions).await;
        ctx.peer_lines.report();
        agencies.close();
        let result = match writer_stopped {
            Some(result) => result,
            None => writer.await,
        };
        let result = match result {
            Ok(result) => {
                info!("{}", Action::success("join_writer"));
                result
            }
            // The writer panics only on a broken invariant: pass it on.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        match &result {
            Ok(()) => info!("{}", Action::success("shutdown")),
            // The writer's store_bets line said what failed.
            Err(_) => error!("{}", Action::fail("shutdown").field("error", "the round's storage failed")),
        }
        result
    }
}

/// Accepts connections, each served by a task of `sessions`, forever.
async fn accept(listener: &TcpListener, ctx: &Arc<Context>, sessions: &mut JoinSet<()>) {
    let mut connections: u64 = 0;
    loop {
        tokio::select! {
            Some(_) = sessions.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections += 1;
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!("{peer}: no TCP_NODELAY: {e}");
                    }
                    sessions.spawn(connection::handle(stream, peer, connections, ctx.clone()));
                }
                Err(e) => {
                    error!("{}", Action::fail("accept_connections").field("error", &e));
                    // Out of file descriptors and the like: let it pass.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Once a second: says how many lines peers caused that their budget held
/// back, if any, and has the writer check that the round's files are still
/// in place (a round deleted while nothing is written stops the server).
async fn every_second(peer_lines: &PeerLines, agencies: &Agencies) {
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every_second.tick().await;
        peer_lines.report();
        // Refused only once the server shuts down.
        let _ = agencies.check_files();
    }
}

/// Waits for the pages' thread to end (it stops at once when told).
async fn join_http(http: Option<(Option<SocketAddr>, io::Result<std::thread::JoinHandle<()>>)>) {
    let Some((address, thread)) = http else { return };
    let address = address.map(|a| a.to_string()).unwrap_or_default();
    match thread {
        Ok(thread) => {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            let outcome = if matches!(joined, Ok(Ok(()))) { Outcome::Success } else { Outcome::Fail };
            info!("{}", Action::new("close_http", outcome).field("address", address));
        }
        Err(e) => error!("{}", Action::fail("close_http").field("address", address).field("error", e)),
    }
}

/// Waits for every session to end, at most [`SESSION_GRACE`]; aborts the
/// rest.
async fn join_sessions(mut sessions: JoinSet<()>) {
    let open = sessions.len();
    let drained =
        tokio::time::timeout(SESSION_GRACE, async { while sessions.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        sessions.shutdown().await;
    }
    assert!(sessions.is_empty(), "every session has ended");
    info!(
        "{}",
        Action::success("join_sessions")
            .field("sessions", open)
            .field("aborted", if drained.is_err() { "yes" } else { "no" })
    );
}

/// Raises the process's soft limit of open files to its hard limit: each
/// agency holds a connection, and the default soft limit (1,024) is below
/// a thousand agencies and the server's own files. Returns the limit now.
pub fn raise_open_files() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

fn listen(port: u16, backlog: u32) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
    socket.listen(backlog)
}
