//! One connection, from its first request to its close.
//!
//! A session reads requests in order and answers them in the same order.
//! Answers that wait on the disk (a batch's ack, a "finished") sit in a
//! queue of pending replies while the session goes on reading, so an agency
//! can keep up to [`WINDOW`] batches in flight and the writer can commit
//! them together. Requests that can be answered at once join the same
//! queue, which keeps the order.
//!
//! A session speaks for at most one agency: the one its certificate names
//! (see [`crate::connection`]), once its `Hello` says so; a newer
//! connection of that agency supersedes it (see [`crate::agencies`]). The
//! operator's certificate runs the operator's commands and nothing else.
//! An anonymous session (plain frames) is served `Echo` only.
//!
//! - [`handler`]: each request turned into its reply;
//! - [`rounds`]: an agency's `Hello` and winners, which may wait for a
//!   round to open or to draw;
//! - [`admin`]: the operator's commands;
//! - [`reply`]: replies and the frames they are made of;
//! - [`budget`]: how much a session, and all of them, may log.
//!
//! A session ends when the peer closes, after a protocol error (answered
//! first, where the protocol allows), when the peer stays silent for the
//! idle timeout, when a reply cannot be written within the write timeout
//! (the peer stopped reading), when it is superseded, when it has not said
//! `Hello` by the authentication deadline or is pushed out of the gate's
//! pool before (an anonymous session never says it), or at shutdown; in
//! every case it first tries to send the replies it owes.

mod admin;
mod budget;
mod handler;
mod reply;
mod rounds;

use std::net::SocketAddr;
use std::time::Duration;

use edge::log::Action;
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use protocol::{Message, MessageReader, MessageWriter, ReadError, MAX_FRAME_LEN};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Level;

pub use budget::{PeerLines, ANONYMOUS_LOG_LINES, LOG_LINES, PEER_LINES_PER_SECOND};

use crate::agencies::{Connection, Refusal};
use crate::connection::{CloseLine, CloseReason, Context};
use crate::gate::Waiting;
use budget::LogBudget;
use handler::Handler;
use reply::{error_message, PendingReply};

/// Requests of one connection awaiting their reply at most.
pub const WINDOW: usize = 64;

/// Who a session speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// The agency its verified certificate names.
    Agency(u32),
    /// The operator, whose certificate says so.
    Operator,
    /// Nobody: plain frames, Echo only.
    Anonymous,
}

/// What ends a session besides its peer.
pub struct Limits {
    /// Silence allowed between two requests.
    idle: Duration,
    /// Longest a reply may take to be written.
    write: Duration,
    /// Until the session has said `Hello` (an anonymous one never does), it
    /// keeps its place in the gate's pool and its authentication deadline:
    /// it ends at `until`, or when newer connections push it out.
    waiting: Option<Waiting>,
    until: Instant,
    /// Fires when a newer connection of the session's agency says `Hello`.
    superseded: CancellationToken,
}

impl Limits {
    /// A session that has not said `Hello` yet: it must before `deadline`.
    pub fn new(ctx: &Context, waiting: Waiting, deadline: Instant) -> Limits {
        Limits {
            idle: ctx.idle_timeout,
            write: ctx.write_timeout,
            waiting: Some(waiting),
            until: deadline,
            superseded: CancellationToken::new(),
        }
    }

    /// Whether the session is still before its `Hello`.
    fn before_hello(&self) -> bool {
        self.waiting.is_some()
    }

    /// Fires when newer connections push this one out of the gate's pool.
    async fn pushed_out(&self) {
        match &self.waiting {
            Some(waiting) => waiting.pushed_out.cancelled().await,
            None => std::future::pending().await,
        }
    }
}

/// Serves `stream` until it ends; see the module documentation. The caller
/// logs the closing line from `close`, which this fills in.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    id: u64,
    identity: Identity,
    ctx: &Context,
    limits: Limits,
    close: &mut CloseLine,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let limit = match identity {
        Identity::Agency(_) | Identity::Operator => LOG_LINES,
        Identity::Anonymous => ANONYMOUS_LOG_LINES,
    };
    let budget = LogBudget::new(peer.ip(), limit, ctx.peer_lines.clone());
    let handler = Handler {
        peer,
        agencies: ctx.agencies.clone(),
        failures: ctx.failures.clone(),
        connection: Connection { id, superseded: limits.superseded.clone() },
        identity,
        agency: None,
        round: None,
        kept: false,
        operator: false,
        waited: false,
        closing: false,
        failed: false,
        budget: budget.clone(),
        stop: ctx.stop.clone(),
    };
    let mut session = Session {
        reader: MessageReader::new(read_half, MAX_FRAME_LEN),
        writer: MessageWriter::new(write_half),
        pending: FuturesOrdered::new(),
        reading: true,
        why: CloseReason::PeerClosed,
        limits,
        handler,
        budget,
        close,
    };
    session.run(ctx).await;
    session.finish().await;
    // Set only now: a session aborted at shutdown keeps the line's own reason.
    session.close.why = std::mem::replace(&mut session.why, CloseReason::PeerClosed);
    session.close.unlogged = session.budget.unlogged();
}

/// A session's state while it runs.
struct Session<'c, S> {
    reader: MessageReader<ReadHalf<S>>,
    writer: MessageWriter<WriteHalf<S>>,
    /// Replies to the requests read, in their order.
    pending: FuturesOrdered<PendingReply>,
    /// Still reading requests; once not, the session ends when every
    /// pending reply is sent.
    reading: bool,
    /// Why the session ends, as far as known.
    why: CloseReason,
    limits: Limits,
    handler: Handler,
    budget: LogBudget,
    /// The connection's closing line, which names the agency from its
    /// `Hello` on.
    close: &'c mut CloseLine,
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> Session<'_, S> {
    /// Reads requests and sends replies until the session ends.
    async fn run(&mut self, ctx: &Context) {
        let mut deadline = Instant::now() + self.limits.idle;
        while self.reading || !self.pending.is_empty() {
            tokio::select! {
                biased;
                Some(reply) = self.pending.next(), if !self.pending.is_empty() => {
                    if let Err(why) = self.send(reply).await {
                        self.why = why;
                        return;
                    }
                }
                () = ctx.stop.cancelled(), if self.reading => self.stop_reading(CloseReason::ShuttingDown),
                () = self.limits.superseded.cancelled(), if self.reading => {
                    let refusal = Refusal::Superseded(self.handler.agency.unwrap_or_default());
                    self.pending.push_back(reply::Reply::closing(error_message(refusal.code(), 0, None, &refusal)));
                    self.stop_reading(CloseReason::Superseded);
                }
                // Before Hello, a place in the pool is all a connection
                // has: pushed out or past its deadline, it ends at once,
                // whatever it was waiting for.
                () = self.limits.pushed_out(), if self.limits.before_hello() => {
                    self.why = CloseReason::PushedOut;
                    return;
                }
                () = sleep_until(self.limits.until), if self.limits.before_hello() => {
                    self.why = CloseReason::NoHello;
                    return;
                }
                read = self.reader.read(), if self.reading && self.pending.len() < WINDOW => {
                    deadline = Instant::now() + self.limits.idle;
                    self.received(read).await;
                }
                () = sleep_until(deadline), if self.reading && self.pending.is_empty() => {
                    self.stop_reading(CloseReason::IdleTimeout);
                }
            }
        }
    }

    fn stop_reading(&mut self, why: CloseReason) {
        self.reading = false;
        self.why = why;
    }

    /// Sends `reply`, and every other reply ready now, with one write;
    /// the reason to end the session if it must.
    async fn send(&mut self, reply: reply::Reply) -> Result<(), CloseReason> {
        let metrics = &self.handler.agencies.metrics;
        reply.refusals().for_each(|code| metrics.refused(code));
        let mut close = reply.send(&mut self.writer);
        while let Some(Some(reply)) = self.pending.next().now_or_never() {
            reply.refusals().for_each(|code| metrics.refused(code));
            close |= reply.send(&mut self.writer);
        }
        match timeout(self.limits.write, self.writer.flush()).await {
            // A closing reply at shutdown is the server's own "shutting
            // down", not a peer's fault.
            Ok(Ok(())) if close && self.handler.stop.is_cancelled() => Err(CloseReason::ShuttingDown),
            Ok(Ok(())) if close => Err(CloseReason::ProtocolError),
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let line = Action::fail("send_message").field("ip", self.handler.peer.ip()).field("error", e);
                self.budget.log(Level::WARN, line);
                Err(CloseReason::ReplyNotSent)
            }
            Err(_) => Err(CloseReason::StoppedReading(self.limits.write)),
        }
    }

    /// Handles what a read brought: a request, the end, or an error.
    async fn received(&mut self, read: Result<Option<Message>, ReadError>) {
        match read {
            Ok(Some(message)) => {
                assert!(self.pending.len() < WINDOW, "a request is read only with room for its reply");
                let reply = self.handler.handle(message).await;
                self.pending.push_back(reply);
                if self.handler.authenticated() {
                    // Hello said (or the operator's first request): out of
                    // the gate's pool, no deadline.
                    self.limits.waiting = None;
                    if self.close.agency.is_none() && self.handler.agency.is_some() {
                        self.handler.agencies.metrics.agency_session(1);
                    }
                    self.close.agency = self.handler.agency;
                }
                if let (true, Some(waiting)) = (self.handler.failed, &self.limits.waiting) {
                    waiting.failed();
                }
                if self.handler.closing {
                    // Nothing after a protocol error is served.
                    self.stop_reading(CloseReason::ProtocolError);
                }
            }
            Ok(None) => self.reading = false,
            Err(e) => {
                // The peer's fault, not the server's: a warning.
                let line =
                    Action::fail("receive_message").field("ip", self.handler.peer.ip()).field("error", &e);
                self.budget.log(Level::WARN, line);
                if let Some(code) = e.code() {
                    self.pending.push_back(reply::Reply::closing(error_message(code, 0, None, &e)));
                }
                self.stop_reading(CloseReason::ProtocolError);
            }
        }
    }

    /// Logs the replies that were ready but not sent (the peer is gone:
    /// their batches are stored all the same), closes the stream and gives
    /// up the agency's claim.
    async fn finish(&mut self) {
        while let Some(Some(reply)) = self.pending.next().now_or_never() {
            reply.log();
        }
        let _ = timeout(self.limits.write, self.writer.shutdown()).await;
        if let Some(agency) = self.handler.agency {
            self.handler.agencies.release(agency, &self.handler.connection);
        }
        if self.close.agency.is_some() {
            self.handler.agencies.metrics.agency_session(-1);
        }
    }
}
