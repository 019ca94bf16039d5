//! A request's reply: the messages that answer it, whether the connection
//! closes after them, and the lines that say what happened; and the
//! frames a reply is made of (errors, winners).

use std::future::{ready, Future};
use std::pin::Pin;

use edge::log::Action;
use lottery::round::{Stage, Welcome};
use protocol::message::WINNERS_HEADER_LEN;
use protocol::{Bets, ErrorCode, Message, MessageWriter, RoundStage, MAX_FRAME_LEN, STATUS_HEADER_LEN};
use tokio::io::AsyncWrite;
use tracing::{debug, enabled, info, Level};

use super::budget::LogBudget;
use crate::agencies::Refusal;

/// The reply to one request: zero or more messages, whether the
/// connection closes after them, and the lines that say what happened.
pub(super) struct Reply {
    messages: Vec<Message>,
    close: bool,
    /// Logged as the reply is sent. Replies go out in the order of their
    /// requests, and so do these lines, while the futures that make the
    /// replies finish in any order.
    lines: Option<Box<dyn FnOnce() + Send>>,
}

pub(super) type PendingReply = Pin<Box<dyn Future<Output = Reply> + Send>>;

impl Reply {
    pub(super) fn now(message: Message) -> PendingReply {
        Box::pin(ready(Reply::open(message)))
    }

    /// A reply of several messages, ready now.
    pub(super) fn now_all(messages: Vec<Message>) -> PendingReply {
        Box::pin(ready(Reply::many(messages)))
    }

    /// A reply of several messages.
    pub(super) fn many(messages: Vec<Message>) -> Reply {
        Reply { messages, close: false, lines: None }
    }

    pub(super) fn open(message: Message) -> Reply {
        Reply { messages: vec![message], close: false, lines: None }
    }

    pub(super) fn last(message: Message) -> Reply {
        Reply { messages: vec![message], close: true, lines: None }
    }

    /// Use `Handler::close_with` inside the handler, so reading stops.
    pub(super) fn closing(message: Message) -> PendingReply {
        Box::pin(ready(Reply::last(message)))
    }

    /// A request of `agency` refused: the error (for the bets from
    /// `first`), logged at WARNING as it is sent.
    pub(super) fn refused(
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

    pub(super) fn logging(mut self, lines: impl FnOnce() + Send + 'static) -> Reply {
        self.lines = Some(Box::new(lines));
        self
    }

    /// The codes of the refusals among its messages.
    pub(super) fn refusals(&self) -> impl Iterator<Item = ErrorCode> + '_ {
        self.messages.iter().filter_map(|m| match m {
            Message::Error { code, .. } => Some(*code),
            _ => None,
        })
    }

    /// Queues the messages and logs the lines; true if the connection
    /// closes after them.
    pub(super) fn send<W: AsyncWrite + Unpin>(self, writer: &mut MessageWriter<W>) -> bool {
        self.messages.iter().for_each(|m| writer.queue(m));
        self.log()
    }

    /// Logs the lines (the messages are not sent); true if the connection
    /// closes after them.
    pub(super) fn log(self) -> bool {
        if let Some(lines) = self.lines {
            lines();
        }
        self.close
    }
}

/// Longest reason sent in an `Error`; reasons quote what the agency sent,
/// and a reply must stay far inside a frame.
const MAX_REASON_LEN: usize = 512;

pub(super) fn error_message(code: ErrorCode, first: u64, bet: Option<u16>, reason: impl ToString) -> Message {
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

pub(super) fn shutting_down() -> Reply {
    Reply::last(error_message(ErrorCode::ShuttingDown, 0, None, Refusal::ShuttingDown))
}

/// Logs `apuesta_almacenada` per bet: at INFO for a batch of one bet (the
/// single bet an agency sends from its environment), at DEBUG for the bets
/// of a file, which get one INFO `apuesta_recibida` per batch instead.
pub(super) fn log_stored(bets: &Bets) {
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
pub(super) fn winners_frames(documents: &[String]) -> Vec<Message> {
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

/// The `Welcome` that answers a `Hello`.
pub(super) fn welcome(welcome: Welcome) -> Message {
    let stage = match welcome.stage {
        Stage::Open => RoundStage::Open,
        Stage::Closed(_) => RoundStage::Closed,
        Stage::Drawn(_) => RoundStage::Drawn,
    };
    Message::Welcome {
        stored: welcome.progress.bets(),
        digest: welcome.progress.digest(),
        finished: welcome.finished,
        stage,
    }
}

/// Splits `text` into `Status` frames of at most [`MAX_FRAME_LEN`] bytes;
/// the last one says so.
pub(super) fn status_frames(text: &str) -> Vec<Message> {
    let room = MAX_FRAME_LEN - STATUS_HEADER_LEN;
    let mut frames = Vec::new();
    let mut rest = text;
    loop {
        let mut end = rest.len().min(room);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (chunk, after) = rest.split_at(end);
        rest = after;
        frames.push(Message::Status { last: rest.is_empty(), text: chunk.to_owned() });
        if rest.is_empty() {
            return frames;
        }
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
    fn a_long_status_is_split_into_frames_within_the_limit() {
        let text: String = (0..5000).map(|i| format!("{{\"agency\":{i},\"ñ\":1}},")).collect();
        let frames = status_frames(&text);
        assert!(frames.len() > 2);
        let mut joined = String::new();
        for (i, frame) in frames.iter().enumerate() {
            assert!(frame.wire_len() <= MAX_FRAME_LEN);
            let Message::Status { last, text } = frame else { panic!("{frame:?}") };
            assert_eq!(*last, i == frames.len() - 1);
            joined.push_str(text);
        }
        assert_eq!(joined, text);
        assert_eq!(status_frames(""), [Message::Status { last: true, text: String::new() }]);
    }

    #[test]
    fn no_winners_is_one_empty_last_frame() {
        assert_eq!(winners_frames(&[]), vec![Message::Winners { last: true, documents: vec![] }]);
    }
}
