//! One connection, from accept to close.
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
//! connection of that agency supersedes it (see [`crate::agencies`]). An
//! anonymous session (plain frames) is served `Echo` only. A session
//! validates and encodes each batch it receives (in parallel with every
//! other session), so that the writer only writes.
//!
//! A session ends when the peer closes, after a protocol error (answered
//! first, where the protocol allows), when the peer stays silent for the
//! idle timeout, when a reply cannot be written within the write timeout
//! (the peer stopped reading), when it is superseded, when it has not said
//! `Hello` by the authentication deadline or is pushed out of the gate's
//! pool before (an anonymous session never says it), or at shutdown; in
//! every case it first tries to send the replies it owes.
//!
//! What a session logs is bounded: at most [`LOG_LINES`] lines a peer can
//! cause (echoes, refusals, errors; [`ANONYMOUS_LOG_LINES`] without an
//! agency), then one line saying the rest is not logged; and all sessions
//! together share [`PeerLines`], so that many connections cannot flood the
//! log either. Lines for stored bets are bounded by the bets themselves.

use std::future::{ready, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge::log::Action;
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use lottery::storage::row::ROW_BYTES_PER_WIRE_BYTE;
use lottery::storage::write_row;
use lottery::{BetRef, InvalidBet, Share};
use protocol::message::WINNERS_HEADER_LEN;
use protocol::{Bets, ErrorCode, Message, MessageReader, MessageWriter, MAX_FRAME_LEN};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, enabled, error, info, warn, Level};

use crate::agencies::{Agencies, Connection, Refusal};
use crate::connection::{CloseLine, Context};
use crate::draw::DrawStatus;
use crate::gate::{Failures, Waiting};
use crate::writer::{EncodedBatch, FinishOutcome, StoreOutcome};

/// Requests of one connection awaiting their reply at most.
pub const WINDOW: usize = 64;

/// The reply to one request: zero or more messages, whether the
/// connection closes after them, and the lines that say what happened.
struct Reply {
    messages: Vec<Message>,
    close: bool,
    /// Logged as the reply is sent. Replies go out in the order of their
    /// requests, and so do these lines, while the futures that make the
    /// replies finish in any order.
    lines: Option<Box<dyn FnOnce() + Send>>,
}

type PendingReply = Pin<Box<dyn Future<Output = Reply> + Send>>;

impl Reply {
    fn now(message: Message) -> PendingReply {
        Box::pin(ready(Reply::open(message)))
    }

    fn open(message: Message) -> Reply {
        Reply { messages: vec![message], close: false, lines: None }
    }

    fn last(message: Message) -> Reply {
        Reply { messages: vec![message], close: true, lines: None }
    }

    /// Use [`Handler::close_with`] inside the handler, so reading stops.
    fn closing(message: Message) -> PendingReply {
        Box::pin(ready(Reply::last(message)))
    }

    /// A request of `agency` refused: the error (for the bets from
    /// `first`), logged at WARNING as it is sent.
    fn refused(
        budget: LogBudget,
        agency: u32,
        first: u64,
        code: ErrorCode,
        reason: String,
        close: bool,
    ) -> Reply {
        let line = Action::fail("request").field("agency", agency).field("error", &reason);
        Reply { messages: vec![error_message(code, first, None, reason)], close, lines: None }
            .logging(move || budget.log(Level::WARN, line))
    }

    fn logging(mut self, lines: impl FnOnce() + Send + 'static) -> Reply {
        self.lines = Some(Box::new(lines));
        self
    }

    /// Queues the messages and logs the lines; true if the connection
    /// closes after them.
    fn send<W: AsyncWrite + Unpin>(self, writer: &mut MessageWriter<W>) -> bool {
        self.messages.iter().for_each(|m| writer.queue(m));
        self.log()
    }

    /// Logs the lines (the messages are not sent); true if the connection
    /// closes after them.
    fn log(self) -> bool {
        if let Some(lines) = self.lines {
            lines();
        }
        self.close
    }
}

/// Longest reason sent in an `Error`; reasons quote what the agency sent,
/// and a reply must stay far inside a frame.
const MAX_REASON_LEN: usize = 512;

fn error_message(code: ErrorCode, first: u64, bet: Option<u16>, reason: impl ToString) -> Message {
    let mut reason = reason.to_string();
    if reason.len() > MAX_REASON_LEN {
        let mut end = MAX_REASON_LEN;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    Message::Error { code, first, bet, reason }
}

/// Who a session speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// The agency its verified certificate names.
    Agency(u32),
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

/// Lines one agency's session can make the server log, at most (see the
/// module docs).
pub const LOG_LINES: u32 = 16;

/// Lines an anonymous session can make the server log, at most.
pub const ANONYMOUS_LOG_LINES: u32 = 4;

/// Lines all peers together can make the server log per second, over time.
pub const PEER_LINES_PER_SECOND: u32 = 100;

/// Lines all peers together can make the server log at once, after a quiet
/// spell.
pub const PEER_LINES_BURST: u32 = 1000;

const _: () = assert!(ANONYMOUS_LOG_LINES <= LOG_LINES && PEER_LINES_PER_SECOND <= PEER_LINES_BURST);

/// The server's budget of lines caused by peers, all sessions together: a
/// token bucket, so that many connections, each within its own budget,
/// cannot flood the log either. What it holds back is counted and said in
/// one line, at most once a second.
#[derive(Debug, Default)]
pub struct PeerLines(Mutex<Bucket>);

impl PeerLines {
    /// Whether a line a peer causes may be logged now.
    pub fn allow(&self) -> bool {
        let (allowed, held_back) =
            self.0.lock().expect("the bucket never panics").take(std::time::Instant::now());
        if let Some(lines) = held_back {
            warn!(
                "{}",
                Action::in_progress("log_budget")
                    .field("scope", "all peers")
                    .field("lines_per_second", PEER_LINES_PER_SECOND)
                    .field("unlogged_lines", lines)
            );
        }
        allowed
    }
}

/// The state of [`PeerLines`], apart from the clock so that tests can drive it.
#[derive(Debug, Default)]
struct Bucket {
    /// Lines that may be logged now (refilled lazily).
    tokens: f64,
    /// When `tokens` was last refilled; `None` before the first line (full).
    refilled: Option<std::time::Instant>,
    /// Lines held back since the last report of them.
    held_back: u64,
    /// When held-back lines were last reported.
    reported: Option<std::time::Instant>,
}

impl Bucket {
    /// Takes a line at `now`: whether it may be logged, and a count of
    /// held-back lines to report first, if it is time to.
    fn take(&mut self, now: std::time::Instant) -> (bool, Option<u64>) {
        let burst = f64::from(PEER_LINES_BURST);
        self.tokens = match self.refilled {
            None => burst,
            Some(then) => {
                let elapsed = now.saturating_duration_since(then).as_secs_f64();
                (self.tokens + elapsed * f64::from(PEER_LINES_PER_SECOND)).min(burst)
            }
        };
        self.refilled = Some(now);
        let allowed = self.tokens >= 1.0;
        if allowed {
            self.tokens -= 1.0;
        } else {
            self.held_back += 1;
        }
        // Report when logging resumes, or once a second while it is held.
        let due = allowed
            || self.reported.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
        if self.held_back > 0 && due {
            self.reported = Some(now);
            return (allowed, Some(std::mem::take(&mut self.held_back)));
        }
        (allowed, None)
    }
}

/// What is left of a session's log budget; shared with its pending replies.
#[derive(Debug, Clone)]
struct LogBudget {
    limit: u32,
    used: Arc<AtomicU32>,
    unlogged: Arc<AtomicU32>,
    all: Arc<PeerLines>,
}

impl LogBudget {
    fn new(limit: u32, all: Arc<PeerLines>) -> Self {
        LogBudget { limit, used: Arc::default(), unlogged: Arc::default(), all }
    }

    /// Logs `line` at `level` if both this session's budget and the server's
    /// allow; the first line past the session's says that no more will be.
    fn log(&self, level: Level, line: Action) {
        let n = self.used.fetch_add(1, Ordering::Relaxed);
        if n < self.limit && self.all.allow() {
            emit(level, line);
            return;
        }
        if n == self.limit && self.all.allow() {
            warn!(
                "{}",
                Action::in_progress("log_budget").field("lines", self.limit).field("then", "not logged")
            );
        }
        self.unlogged.fetch_add(1, Ordering::Relaxed);
    }

    fn unlogged(&self) -> u32 {
        self.unlogged.load(Ordering::Relaxed)
    }
}

fn emit(level: Level, line: Action) {
    match level {
        Level::ERROR => error!("{line}"),
        Level::WARN => warn!("{line}"),
        Level::INFO => info!("{line}"),
        _ => debug!("{line}"),
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
    let mut reader = MessageReader::new(read_half, MAX_FRAME_LEN);
    let mut writer = MessageWriter::new(write_half);
    let mut limits = limits;
    let connection = Connection { id, superseded: limits.superseded.clone() };
    let limit = match identity {
        Identity::Agency(_) => LOG_LINES,
        Identity::Anonymous => ANONYMOUS_LOG_LINES,
    };
    let budget = LogBudget::new(limit, ctx.peer_lines.clone());
    let mut handler = Handler {
        peer,
        agencies: ctx.agencies.clone(),
        failures: ctx.failures.clone(),
        connection,
        identity,
        agency: None,
        closing: false,
        budget: budget.clone(),
    };
    let mut pending: FuturesOrdered<PendingReply> = FuturesOrdered::new();
    let mut reading = true;
    let mut why = "peer closed the connection".to_owned();
    let mut deadline = Instant::now() + limits.idle;

    loop {
        if !reading && pending.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(reply) = pending.next(), if !pending.is_empty() => {
                let mut close = reply.send(&mut writer);
                // Send every reply that is ready with the same write.
                while let Some(Some(reply)) = pending.next().now_or_never() {
                    close |= reply.send(&mut writer);
                }
                match timeout(limits.write, writer.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        budget.log(Level::WARN, Action::fail("send_message").field("ip", peer.ip()).field("error", e));
                        why = "the reply could not be sent".into();
                        break;
                    }
                    Err(_) => {
                        why = format!(
                            "the peer stopped reading: a reply waited {} to be written",
                            edge::duration::GoDuration(limits.write)
                        );
                        break;
                    }
                }
                if close {
                    why = "protocol error".into();
                    break;
                }
            }
            () = ctx.stop.cancelled(), if reading => {
                reading = false;
                why = "server shutting down".into();
            }
            () = limits.superseded.cancelled(), if reading => {
                reading = false;
                let refusal = Refusal::Superseded(handler.agency.unwrap_or_default());
                pending.push_back(Reply::closing(error_message(refusal.code(), 0, None, &refusal)));
                why = "superseded by a newer connection of its agency".into();
            }
            () = limits.pushed_out(), if reading && limits.before_hello() => {
                reading = false;
                why = "pushed out: too many connections waiting to authenticate".into();
            }
            () = sleep_until(limits.until), if reading && limits.before_hello() => {
                reading = false;
                why = "no Hello within the authentication deadline".into();
            }
            read = reader.read(), if reading && pending.len() < WINDOW => {
                deadline = Instant::now() + limits.idle;
                match read {
                    Ok(Some(message)) => {
                        pending.push_back(handler.handle(message).await);
                        if handler.agency.is_some() {
                            // Hello said: out of the gate's pool, no deadline.
                            limits.waiting = None;
                        }
                        if handler.closing {
                            // Nothing after a protocol error is served.
                            reading = false;
                            why = "protocol error".into();
                        }
                    }
                    Ok(None) => reading = false,
                    Err(e) => {
                        // The peer's fault, not the server's: a warning.
                        budget.log(Level::WARN, Action::fail("receive_message").field("ip", peer.ip()).field("error", &e));
                        if let Some(code) = e.code() {
                            pending.push_back(Reply::closing(error_message(code, 0, None, &e)));
                        }
                        reading = false;
                        why = "protocol error".into();
                    }
                }
            }
            () = sleep_until(deadline), if reading && pending.is_empty() => {
                reading = false;
                why = "idle timeout".into();
            }
        }
    }
    // Replies ready but not sent (the peer is gone) still say what happened:
    // their batches are stored.
    while let Some(Some(reply)) = pending.next().now_or_never() {
        reply.log();
    }
    let _ = timeout(limits.write, writer.shutdown()).await;
    if let Some(agency) = handler.agency {
        handler.agencies.release(agency, &handler.connection);
    }
    close.why = why;
    close.unlogged = budget.unlogged();
}

/// Turns each request into its (possibly pending) reply.
struct Handler {
    peer: SocketAddr,
    agencies: Arc<Agencies>,
    /// Where a request that needs an agency, from none, counts as a failed
    /// authentication.
    failures: Arc<Failures>,
    connection: Connection,
    identity: Identity,
    /// The agency this connection speaks for, from its `Hello` on.
    agency: Option<u32>,
    /// A reply that closes the connection was given: read nothing more.
    closing: bool,
    budget: LogBudget,
}

impl Handler {
    /// Only a batch makes this wait: for room in the writer's queue (see
    /// [`Agencies::reserve`]); this session alone waits.
    async fn handle(&mut self, message: Message) -> PendingReply {
        if message.is_reply() {
            let reason = format!("{} is a reply, not a request", message.name());
            return self.close_with(error_message(ErrorCode::UnexpectedMessage, 0, None, reason));
        }
        if let Message::Echo(payload) = message {
            let line = Action::success("receive_message").field("ip", self.peer.ip()).quote("msg", &payload);
            self.budget.log(Level::INFO, line);
            return Reply::now(Message::Echo(payload));
        }
        let Identity::Agency(certified) = self.identity else {
            let reason = format!("{} needs an agency's certificate, over TLS", message.name());
            crate::connection::failed(self.peer, &reason, &self.failures, &self.budget.all);
            return self.close_with(error_message(ErrorCode::Unauthenticated, 0, None, reason));
        };
        if let Message::Hello { agency } = message {
            return self.hello(agency, certified);
        }
        let Some(agency) = self.agency else {
            let reason = format!(
                "{} before Hello: a connection first says which agency it speaks for",
                message.name()
            );
            return self.close_with(error_message(ErrorCode::UnexpectedMessage, 0, None, reason));
        };
        match message {
            Message::BetBatch { first, bets } => {
                // Room in the writer's queue for the most rows these bets
                // can make, before they are made: while it waits, a session
                // holds one frame, no more.
                let permit = self.agencies.reserve(max_row_bytes(&bets)).await;
                let batch = match encode(agency, first, &bets, &self.budget) {
                    Ok(batch) => batch,
                    Err(reply) => return reply,
                };
                self.store(agency, batch, bets, permit)
            }
            Message::Finished { bets } => self.finish(agency, bets),
            Message::WinnersQuery => self.winners(agency),
            _ => unreachable!("replies, Echo and Hello are handled above"),
        }
    }

    fn hello(&mut self, agency: u32, certified: u32) -> PendingReply {
        if let Some(bound) = self.agency {
            let reason = format!("this connection already speaks for agency {bound}");
            return self.close_with(error_message(ErrorCode::UnexpectedMessage, 0, None, reason));
        }
        if agency != certified {
            let reason = format!("this certificate is agency {certified}'s, not agency {agency}'s");
            self.budget.log(
                Level::WARN,
                Action::fail("request").field("ip", self.peer.ip()).field("error", &reason),
            );
            return self.close_with(error_message(ErrorCode::Forbidden, 0, None, reason));
        }
        let welcome = match self.agencies.hello(agency, &self.connection) {
            Ok(welcome) => welcome,
            Err(refusal) => return self.refuse(refusal),
        };
        self.agency = Some(agency);
        let budget = self.budget.clone();
        Box::pin(async move {
            let Ok(welcome) = welcome.await else { return shutting_down() };
            let line = Action::success("agency_connected")
                .field("agency", agency)
                .field("stored", welcome.progress.bets())
                .field("finished", if welcome.finished { "yes" } else { "no" });
            let level =
                if welcome.progress.bets() > 0 || welcome.finished { Level::INFO } else { Level::DEBUG };
            Reply::open(Message::Welcome {
                stored: welcome.progress.bets(),
                digest: welcome.progress.digest(),
                finished: welcome.finished,
            })
            .logging(move || budget.log(level, line))
        })
    }

    /// A reply after which the connection closes.
    fn close_with(&mut self, message: Message) -> PendingReply {
        self.closing = true;
        Reply::closing(message)
    }

    fn refuse(&mut self, refusal: Refusal) -> PendingReply {
        self.budget
            .log(Level::WARN, Action::fail("request").field("ip", self.peer.ip()).field("error", &refusal));
        self.close_with(error_message(refusal.code(), 0, None, &refusal))
    }

    fn store(
        &mut self,
        agency: u32,
        batch: EncodedBatch,
        bets: Bets,
        permit: OwnedSemaphorePermit,
    ) -> PendingReply {
        let first = batch.share.first();
        let stored = match self.agencies.store(agency, &self.connection, batch, permit) {
            Ok(stored) => stored,
            Err(refusal) => return self.refuse(refusal),
        };
        let count = bets.len();
        // A pending reply keeps the bets only to log them one by one; else
        // a peer that does not read its replies would keep every frame.
        let to_log = (count == 1 || enabled!(Level::DEBUG)).then_some(bets);
        let budget = self.budget.clone();
        Box::pin(async move {
            let Ok(outcome) = stored.await else { return shutting_down() };
            match outcome {
                StoreOutcome::Stored => Reply::open(Message::BatchAck { first, count: count as u16 })
                    .logging(move || {
                        info!("{}", Action::success("apuesta_recibida").field("cantidad", count));
                        if let Some(bets) = &to_log {
                            log_stored(bets);
                        }
                    }),
                StoreOutcome::AlreadyStored => Reply::open(Message::BatchAck { first, count: count as u16 })
                    .logging(move || {
                        debug!("agency {agency}: bets {first}.. of a batch of {count} were stored before")
                    }),
                StoreOutcome::OutOfSequence { stored } => Reply::refused(
                    budget,
                    agency,
                    first,
                    ErrorCode::OutOfSequence,
                    format!("agency {agency} has {stored} bets stored; this batch starts at bet {first}"),
                    false,
                ),
                StoreOutcome::AlreadyFinished => {
                    let reason = format!("agency {agency} has already finished");
                    Reply::refused(budget, agency, first, ErrorCode::AlreadyFinished, reason, true)
                }
                StoreOutcome::Failed(e) => {
                    let line = Action::fail("apuesta_recibida").field("cantidad", count).field("error", &e);
                    Reply::open(error_message(ErrorCode::StorageFailure, first, None, e))
                        .logging(move || budget.log(Level::ERROR, line))
                }
            }
        })
    }

    fn finish(&mut self, agency: u32, bets: u64) -> PendingReply {
        let counted = match self.agencies.finish(agency, &self.connection, bets) {
            Ok(counted) => counted,
            Err(refusal) => return self.refuse(refusal),
        };
        let budget = self.budget.clone();
        Box::pin(async move {
            let Ok(outcome) = counted.await else { return shutting_down() };
            match outcome {
                FinishOutcome::Counted => Reply::open(Message::FinishedAck),
                FinishOutcome::OutOfSequence { claimed, stored } => Reply::refused(
                    budget,
                    agency,
                    0,
                    ErrorCode::OutOfSequence,
                    format!("agency {agency} says it has {claimed} bets; the server holds {stored}"),
                    false,
                ),
                FinishOutcome::AlreadyFinished => {
                    let reason = format!("agency {agency} has already finished");
                    Reply::refused(budget, agency, 0, ErrorCode::AlreadyFinished, reason, true)
                }
                FinishOutcome::Failed(e) => {
                    let line = Action::fail("finish").field("agency", agency).field("error", &e);
                    Reply::open(error_message(ErrorCode::StorageFailure, 0, None, e))
                        .logging(move || budget.log(Level::ERROR, line))
                }
            }
        })
    }

    fn winners(&self, agency: u32) -> PendingReply {
        let messages = match self.agencies.barrier.status() {
            DrawStatus::Pending { finished, expected } => {
                debug!("agency {agency} asked for its winners before the draw ({finished}/{expected})");
                vec![Message::NotReady { finished, expected }]
            }
            DrawStatus::Done(winners) => winners_frames(winners.of(agency)),
        };
        Box::pin(ready(Reply { messages, close: false, lines: None }))
    }
}

fn shutting_down() -> Reply {
    Reply::last(error_message(ErrorCode::ShuttingDown, 0, None, Refusal::ShuttingDown))
}

/// Validates every bet of a batch and writes their rows: the batch the
/// writer stores, or the reply that refuses it (nothing of it is stored).
/// The most bytes of rows `bets` can make if they are valid: what the
/// writer's queue reserves for them, and all the memory their rows take.
fn max_row_bytes(bets: &Bets) -> usize {
    let max = ROW_BYTES_PER_WIRE_BYTE * bets.wire_len();
    assert!(max <= crate::writer::MAX_BATCH_ROW_BYTES, "a frame's bets make at most a batch's rows");
    max
}

fn encode(agency: u32, first: u64, bets: &Bets, budget: &LogBudget) -> Result<EncodedBatch, PendingReply> {
    let invalid = |index: Option<u16>, reason: String| {
        let line = Action::fail("apuesta_recibida")
            .field("cantidad", bets.len())
            .field("agency", agency)
            .field("error", &reason);
        budget.log(Level::ERROR, line);
        Reply::now(error_message(ErrorCode::InvalidBet, first, index, reason))
    };
    if bets.is_empty() {
        return Err(invalid(None, "a batch holds at least one bet".into()));
    }
    if first.checked_add(bets.len() as u64).is_none() {
        let reason = format!("a batch starting at bet {first} would end past the last ordinal");
        return Err(Reply::now(error_message(ErrorCode::OutOfSequence, first, None, reason)));
    }
    let mut batch = EncodedBatch {
        share: Share::starting_at(first),
        rows: Vec::with_capacity(max_row_bytes(bets)),
        winners: Vec::new(),
    };
    for (index, fields) in bets.iter().enumerate() {
        let bet = BetRef::parse(fields).map_err(|e: InvalidBet| {
            // `index` fits in u16: a frame of 8 KiB holds far fewer bets.
            let index = index as u16;
            invalid(Some(index), format!("bet {index}: {e}"))
        })?;
        let start = batch.rows.len();
        write_row(&mut batch.rows, agency, &bet);
        batch.share.push(&batch.rows[start..]);
        if bet.has_won() {
            batch.winners.push(bet.document.to_owned());
        }
    }
    assert_eq!(batch.share.bets(), bets.len() as u64, "every bet of the batch is in its share");
    assert_eq!(batch.rows.capacity(), max_row_bytes(bets), "rows take the memory reserved for them, no more");
    Ok(batch)
}

/// Logs `apuesta_almacenada` per bet: at INFO for a batch of one bet (the
/// single bet an agency sends from its environment), at DEBUG for the bets
/// of a file, which get one INFO `apuesta_recibida` per batch instead.
fn log_stored(bets: &Bets) {
    let line = |[.., document, _, number]: protocol::BetFields<'_>| {
        Action::success("apuesta_almacenada").field("dni", document).field("numero", number)
    };
    match bets.len() {
        1 => bets.iter().for_each(|bet| info!("{}", line(bet))),
        _ if enabled!(Level::DEBUG) => bets.iter().for_each(|bet| debug!("{}", line(bet))),
        _ => {}
    }
}

/// Splits `documents` into `Winners` frames of at most [`MAX_FRAME_LEN`]
/// bytes; the last one says so.
fn winners_frames(documents: &[String]) -> Vec<Message> {
    let mut frames = Vec::new();
    let mut current = Vec::new();
    let mut len = WINNERS_HEADER_LEN;
    for document in documents {
        let size = 2 + document.len();
        if len + size > MAX_FRAME_LEN && !current.is_empty() {
            frames.push(Message::Winners { last: false, documents: std::mem::take(&mut current) });
            len = WINNERS_HEADER_LEN;
        }
        current.push(document.clone());
        len += size;
    }
    frames.push(Message::Winners { last: true, documents: current });
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winners_are_split_into_frames_within_the_limit() {
        let documents: Vec<String> = (0..3000).map(|i| format!("{:08}", i)).collect();
        let frames = winners_frames(&documents);
        assert!(frames.len() > 1);
        let mut seen = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            assert!(frame.wire_len() <= MAX_FRAME_LEN);
            let Message::Winners { last, documents } = frame else { panic!("{frame:?}") };
            assert_eq!(*last, i == frames.len() - 1);
            seen.extend(documents.iter().cloned());
        }
        assert_eq!(seen, documents);
    }

    #[test]
    fn long_reasons_are_cut_to_fit_a_frame() {
        let reason = format!("documento {:?} is not all digits", "ñ".repeat(4000));
        let message = error_message(ErrorCode::InvalidBet, 1, Some(0), reason);
        assert!(message.wire_len() < MAX_FRAME_LEN / 8);
        let Message::Error { reason, .. } = message else { panic!() };
        assert!(reason.ends_with('…'));
    }

    #[test]
    fn no_winners_is_one_empty_last_frame() {
        assert_eq!(winners_frames(&[]), vec![Message::Winners { last: true, documents: vec![] }]);
    }

    #[test]
    fn the_server_wide_budget_holds_a_flood_back_and_says_how_much_it_held() {
        let start = std::time::Instant::now();
        let mut bucket = Bucket::default();
        let burst = (0..PEER_LINES_BURST).map(|_| bucket.take(start)).filter(|&(allowed, _)| allowed).count();
        assert_eq!(burst, PEER_LINES_BURST as usize);
        // Past the burst, lines are held back and reported once a second.
        assert_eq!(bucket.take(start), (false, Some(1)));
        assert_eq!(bucket.take(start), (false, None));
        let later = start + Duration::from_millis(5);
        assert_eq!(bucket.take(later), (false, None), "half a token is not a line");
        // A second later the bucket has refilled at the stated rate.
        let second = start + Duration::from_secs(1);
        let (allowed, held) = bucket.take(second);
        assert!(allowed);
        assert_eq!(held, Some(2), "the lines held since the last report");
        let allowed =
            (1..PEER_LINES_PER_SECOND).map(|_| bucket.take(second)).filter(|&(allowed, _)| allowed).count();
        assert_eq!(allowed, PEER_LINES_PER_SECOND as usize - 1);
        assert!(!bucket.take(second).0);
        // A long quiet spell refills no more than the burst.
        let quiet = second + Duration::from_secs(3600);
        let (_, held) = bucket.take(quiet);
        assert_eq!(held, Some(1));
        let allowed =
            (1..2 * PEER_LINES_BURST).map(|_| bucket.take(quiet)).filter(|&(allowed, _)| allowed).count();
        assert_eq!(allowed, PEER_LINES_BURST as usize - 1);
    }
}
