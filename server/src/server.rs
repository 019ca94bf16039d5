//! The listener and the life of the server: accept, serve, shut down.
//!
//! Shutdown reaches every task through one [`CancellationToken`]: the
//! accept loop stops and closes the listener; each session stops reading,
//! sends the replies it owes and closes its socket; once every session has
//! ended (or after [`SESSION_GRACE`], when the rest are aborted) the job
//! queue closes and the writer drains it, syncs and closes the file.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use lottery::log::Action;
use lottery::storage::{BetFile, StorageError};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::agencies::Agencies;
use crate::config::Config;
use crate::draw::DrawBarrier;
use crate::{session, writer};

/// How long sessions get to finish their replies at shutdown.
pub const SESSION_GRACE: Duration = Duration::from_millis(1000);

/// A problem starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on port {port}: {source}")]
    Listen { port: u16, source: io::Error },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A server that listens and has its bets file, ready to run.
pub struct Server {
    listener: TcpListener,
    config: Config,
    file: BetFile,
}

impl Server {
    /// Opens the bets file and listens on `0.0.0.0:port` with the
    /// configured backlog.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let file = BetFile::create(&config.storage_path)?;
        let listener = listen(config.port, config.listen_backlog)
            .map_err(|source| StartError::Listen { port: config.port, source })?;
        Ok(Server { listener, config, file })
    }

    /// Where the server listens (tests bind port 0 and ask).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then closes everything.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { listener, config, file } = self;
        let barrier = Arc::new(DrawBarrier::new(config.agencies));
        let (jobs, queue) = mpsc::unbounded_channel();
        let agencies = Arc::new(Agencies::new(jobs, barrier.clone()));
        let writer = writer::spawn(file, queue, barrier);
        let stop = CancellationToken::new();
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let mut sessions = JoinSet::new();

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = sessions.join_next() => {}
                accepted = accept(&listener, &limit) => match accepted {
                    Ok((stream, peer, permit)) => {
                        let agencies = agencies.clone();
                        let stop = stop.clone();
                        let idle = config.idle_timeout;
                        sessions.spawn(async move {
                            session::serve(stream, peer, agencies, idle, stop).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        error!("{}", Action::fail("accept_connections").field("error", &e));
                        // Out of file descriptors and the like: let it pass.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }

        info!("{}", Action::in_progress("shutdown"));
        drop(listener);
        info!("{}", Action::success("close_listener").field("port", config.port));
        stop.cancel();
        let open = sessions.len();
        let drained =
            tokio::time::timeout(SESSION_GRACE, async { while sessions.join_next().await.is_some() {} })
                .await;
        if drained.is_err() {
            sessions.shutdown().await;
        }
        info!(
            "{}",
            Action::success("join_sessions")
                .field("sessions", open)
                .field("aborted", if drained.is_err() { "yes" } else { "no" })
        );
        agencies.close();
        match writer.await {
            Ok(()) => info!("{}", Action::success("join_writer")),
            Err(e) => error!("{}", Action::fail("join_writer").field("error", e)),
        }
        info!("{}", Action::success("shutdown"));
    }
}

fn listen(port: u16, backlog: u32) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
    socket.listen(backlog)
}

/// Waits for a free connection slot, then for a connection.
async fn accept(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
) -> io::Result<(tokio::net::TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    let permit = limit.clone().acquire_owned().await.map_err(io::Error::other)?;
    let (stream, peer) = listener.accept().await?;
    stream.set_nodelay(true)?;
    Ok((stream, peer, permit))
}
