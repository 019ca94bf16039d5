//! One connection, from accept to close.
//!
//! A session reads requests in order and answers them in the same order.
//! Answers that wait on the disk (a batch's ack, a "finished") sit in a
//! queue of pending replies while the session goes on reading, so an agency
//! can keep up to [`WINDOW`] batches in flight and the writer can commit
//! them together. Requests that can be answered at once join the same
//! queue, which keeps the order.
//!
//! A session speaks for at most one agency. It ends when the peer closes,
//! after a protocol error (answered first, where the protocol allows), when
//! the peer stays silent for the idle timeout, or at shutdown; in every
//! case it first sends the replies it owes.

use std::future::{ready, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use lottery::log::Action;
use lottery::Bet;
use protocol::message::WINNERS_HEADER_LEN;
use protocol::{BetRecord, ErrorCode, Message, MessageReader, MessageWriter, MAX_FRAME_LEN};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::agencies::{Agencies, Refusal};
use crate::draw::DrawStatus;

/// Requests of one connection awaiting their reply at most.
pub const WINDOW: usize = 64;

/// The reply to one request: zero or more messages, and whether the
/// connection closes after them.
struct Reply {
    messages: Vec<Message>,
    close: bool,
}

type PendingReply = Pin<Box<dyn Future<Output = Reply> + Send>>;

impl Reply {
    fn now(message: Message) -> PendingReply {
        Box::pin(ready(Reply { messages: vec![message], close: false }))
    }

    /// Use [`Handler::close_with`] inside the handler, so reading stops.
    fn closing(message: Message) -> PendingReply {
        Box::pin(ready(Reply { messages: vec![message], close: true }))
    }
}

/// Longest reason sent in an `Error`; reasons quote what the agency sent,
/// and a reply must stay far inside a frame.
const MAX_REASON_LEN: usize = 512;

fn error_message(code: ErrorCode, seq: u32, bet: Option<u16>, reason: impl ToString) -> Message {
    let mut reason = reason.to_string();
    if reason.len() > MAX_REASON_LEN {
        let mut end = MAX_REASON_LEN;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    Message::Error { code, seq, bet, reason }
}

/// Serves `stream` until it ends; see the module documentation.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    agencies: Arc<Agencies>,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) {
    let (read_half, write_half) = stream.into_split();
    let mut reader = MessageReader::new(read_half, MAX_FRAME_LEN);
    let mut writer = MessageWriter::new(write_half);
    let mut handler = Handler { peer, agencies, agency: None, closing: false };
    let mut pending: FuturesOrdered<PendingReply> = FuturesOrdered::new();
    let mut reading = true;
    let mut why = "peer closed the connection";
    let mut deadline = Instant::now() + idle_timeout;

    loop {
        if !reading && pending.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(reply) = pending.next(), if !pending.is_empty() => {
                let mut close = reply.close;
                reply.messages.iter().for_each(|m| writer.queue(m));
                // Send every reply that is ready with the same write.
                while let Some(Some(reply)) = pending.next().now_or_never() {
                    reply.messages.iter().for_each(|m| writer.queue(m));
                    close |= reply.close;
                }
                if let Err(e) = writer.flush().await {
                    warn!("{}", Action::fail("send_message").field("ip", peer.ip()).field("error", e));
                    why = "the reply could not be sent";
                    break;
                }
                if close {
                    why = "protocol error";
                    break;
                }
            }
            () = shutdown.cancelled(), if reading => {
                reading = false;
                why = "server shutting down";
            }
            read = reader.read(), if reading && pending.len() < WINDOW => {
                deadline = Instant::now() + idle_timeout;
                match read {
                    Ok(Some(message)) => {
                        pending.push_back(handler.handle(message).await);
                        if handler.closing {
                            // Nothing after a protocol error is served.
                            reading = false;
                            why = "protocol error";
                        }
                    }
                    Ok(None) => reading = false,
                    Err(e) => {
                        error!("{}", Action::fail("receive_message").field("ip", peer.ip()).field("error", &e));
                        if let Some(code) = e.code() {
                            pending.push_back(Reply::closing(error_message(code, 0, None, &e)));
                        }
                        reading = false;
                        why = "protocol error";
                    }
                }
            }
            () = sleep_until(deadline), if reading && pending.is_empty() => {
                reading = false;
                why = "idle timeout";
            }
        }
    }
    let _ = writer.shutdown().await;
    let mut line = Action::success("close_connection").field("ip", peer.ip());
    if let Some(agency) = handler.agency {
        line = line.field("agency", agency);
    }
    info!("{}", line.field("reason", why));
}

/// Turns each request into its (possibly pending) reply.
struct Handler {
    peer: SocketAddr,
    agencies: Arc<Agencies>,
    /// The agency this connection speaks for, from its first request on.
    agency: Option<u32>,
    /// A reply that closes the connection was given: read nothing more.
    closing: bool,
}

impl Handler {
    /// Only a batch makes this wait: for room in the writer's queue (see
    /// [`Agencies::reserve`]); this session alone waits.
    async fn handle(&mut self, message: Message) -> PendingReply {
        match message {
            Message::Echo(payload) => {
                let text = String::from_utf8_lossy(&payload);
                info!(
                    "{}",
                    Action::success("receive_message")
                        .field("ip", self.peer.ip())
                        .field("msg", text.trim_end())
                );
                Reply::now(Message::Echo(payload))
            }
            Message::BetBatch { agency, seq, bets } => match self.claim(agency, seq) {
                Ok(()) => {
                    let permit = self.agencies.reserve(bets.len()).await;
                    self.batch(agency, seq, bets, permit)
                }
                Err(reply) => reply,
            },
            Message::Finished { agency } => match self.claim(agency, 0) {
                Ok(()) => self.finish(agency),
                Err(reply) => reply,
            },
            Message::WinnersQuery { agency } => match self.claim(agency, 0) {
                Ok(()) => self.winners(agency),
                Err(reply) => reply,
            },
            other => self.close_with(error_message(
                ErrorCode::UnexpectedMessage,
                0,
                None,
                format!("{} is a reply, not a request", kind_name(&other)),
            )),
        }
    }

    /// Binds the connection to `agency`, or says why it cannot speak for it.
    fn claim(&mut self, agency: u32, seq: u32) -> Result<(), PendingReply> {
        if let Err(refusal) = self.agencies.check(agency) {
            return Err(self.refuse(refusal, seq));
        }
        match self.agency {
            Some(bound) if bound != agency => Err(self.close_with(error_message(
                ErrorCode::UnexpectedMessage,
                seq,
                None,
                format!("this connection speaks for agency {bound}, not {agency}"),
            ))),
            _ => {
                self.agency = Some(agency);
                Ok(())
            }
        }
    }

    /// A reply after which the connection closes.
    fn close_with(&mut self, message: Message) -> PendingReply {
        self.closing = true;
        Reply::closing(message)
    }

    fn refuse(&mut self, refusal: Refusal, seq: u32) -> PendingReply {
        warn!("{}", Action::fail("request").field("ip", self.peer.ip()).field("error", &refusal));
        let message = error_message(refusal.code(), seq, None, &refusal);
        if refusal.closes_connection() {
            self.close_with(message)
        } else {
            Reply::now(message)
        }
    }

    fn batch(
        &mut self,
        agency: u32,
        seq: u32,
        records: Vec<BetRecord>,
        permit: OwnedSemaphorePermit,
    ) -> PendingReply {
        let count = records.len();
        let rejected = |index: Option<u16>, code: ErrorCode, reason: String| {
            error!(
                "{}",
                Action::fail("apuesta_recibida")
                    .field("cantidad", count)
                    .field("agency", agency)
                    .field("error", &reason)
            );
            Reply::now(error_message(code, seq, index, reason))
        };
        if count == 0 {
            return rejected(None, ErrorCode::InvalidBet, "a batch holds at least one bet".into());
        }
        let mut bets = Vec::with_capacity(count);
        for (index, r) in records.into_iter().enumerate() {
            match Bet::from_fields(agency, r.first_name, r.last_name, r.document, &r.birthdate, &r.number) {
                Ok(bet) => bets.push(bet),
                Err(e) => {
                    // `count` fits in u16: a frame of 8 KiB holds far fewer bets.
                    let index = index as u16;
                    return rejected(Some(index), ErrorCode::InvalidBet, format!("bet {index}: {e}"));
                }
            }
        }
        let stored = match self.agencies.submit_batch(agency, seq, bets, permit) {
            Ok(stored) => stored,
            Err(refusal) => return self.refuse(refusal, seq),
        };
        Box::pin(async move {
            match stored.await {
                Ok(Ok(())) => {
                    info!("{}", Action::success("apuesta_recibida").field("cantidad", count));
                    Reply { messages: vec![Message::BatchAck { seq, count: count as u16 }], close: false }
                }
                Ok(Err(e)) => {
                    error!(
                        "{}",
                        Action::fail("apuesta_recibida").field("cantidad", count).field("error", &e)
                    );
                    Reply {
                        messages: vec![error_message(ErrorCode::StorageFailure, seq, None, e)],
                        close: false,
                    }
                }
                Err(_) => Reply {
                    messages: vec![error_message(ErrorCode::ShuttingDown, seq, None, Refusal::ShuttingDown)],
                    close: true,
                },
            }
        })
    }

    fn finish(&mut self, agency: u32) -> PendingReply {
        match self.agencies.finish(agency) {
            Ok(counted) => Box::pin(async move {
                match counted.await {
                    Ok(()) => Reply { messages: vec![Message::FinishedAck], close: false },
                    Err(_) => Reply {
                        messages: vec![error_message(
                            ErrorCode::ShuttingDown,
                            0,
                            None,
                            Refusal::ShuttingDown,
                        )],
                        close: true,
                    },
                }
            }),
            Err(refusal) => self.refuse(refusal, 0),
        }
    }

    fn winners(&self, agency: u32) -> PendingReply {
        let messages = match self.agencies.barrier.status() {
            DrawStatus::Pending { finished, expected } => {
                debug!("agency {agency} asked for its winners before the draw ({finished}/{expected})");
                vec![Message::NotReady { finished, expected }]
            }
            DrawStatus::Done(winners) => winners_frames(winners.of(agency)),
        };
        Box::pin(ready(Reply { messages, close: false }))
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

fn kind_name(message: &Message) -> &'static str {
    match message {
        Message::BatchAck { .. } => "BatchAck",
        Message::Error { .. } => "Error",
        Message::FinishedAck => "FinishedAck",
        Message::Winners { .. } => "Winners",
        Message::NotReady { .. } => "NotReady",
        _ => "request",
    }
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
}
