//! One connection to the server, and what can go wrong with it.
//!
//! Every wait has a bound: connecting and every reply take at most the
//! reply timeout, so a server that accepts and then says nothing (paused,
//! or on the far side of a half-open connection) costs that long, not
//! forever. [`Fault`] sorts what goes wrong into what a new connection may
//! cure and what it cannot.

use std::io;
use std::time::Duration;

use lottery::Progress;
use protocol::{ErrorCode, Message, MessageReader, MessageWriter, ReadError, MAX_FRAME_LEN};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// What went wrong, sorted by what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The connection or the server's storage failed for now: connect
    /// again, say Hello, and resume from what the server holds.
    #[error("{0}")]
    Retry(String),
    /// Nothing a new connection would change.
    #[error("{0}")]
    Fatal(String),
}

impl Fault {
    /// What an unexpected reply means: the server's error codes say
    /// whether trying again can help.
    pub fn from_reply(reply: Message) -> Fault {
        match reply {
            Message::Error { code, reason, .. } => match code {
                ErrorCode::StorageFailure | ErrorCode::OutOfSequence | ErrorCode::ShuttingDown => {
                    Fault::Retry(format!("the server answered {code:?}: {reason}"))
                }
                _ => Fault::Fatal(format!("the server refused the request ({code:?}): {reason}")),
            },
            other => Fault::Fatal(format!("unexpected reply from the server: {}", other.name())),
        }
    }
}

/// What the server holds of the agency, from its `Welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    pub progress: Progress,
    pub finished: bool,
}

/// A connection, split so that sending and reading replies can go on at once.
pub struct Link {
    pub reader: Replies,
    pub writer: MessageWriter<OwnedWriteHalf>,
}

/// The reading half: every reply within the timeout.
pub struct Replies {
    reader: MessageReader<OwnedReadHalf>,
    timeout: Duration,
}

impl Replies {
    /// The next reply, within the timeout.
    pub async fn next(&mut self) -> Result<Message, Fault> {
        match timeout(self.timeout, self.reader.read()).await {
            Err(_) => Err(Fault::Retry(format!("no reply within {:?}", self.timeout))),
            Ok(Ok(Some(message))) => Ok(message),
            Ok(Ok(None)) => Err(Fault::Retry("the server closed the connection".into())),
            Ok(Err(ReadError::Io(e))) => Err(Fault::Retry(format!("connection lost: {e}"))),
            Ok(Err(e @ ReadError::Truncated(_))) => Err(Fault::Retry(e.to_string())),
            Ok(Err(e)) => Err(Fault::Fatal(format!("the server speaks another protocol: {e}"))),
        }
    }
}

impl Link {
    /// One attempt to connect, within `reply_timeout`.
    pub async fn connect(address: &str, reply_timeout: Duration) -> Result<Link, Fault> {
        let stream = match timeout(reply_timeout, TcpStream::connect(address)).await {
            Err(_) => {
                return Err(Fault::Retry(format!("cannot connect to {address} within {reply_timeout:?}")))
            }
            Ok(Err(e)) => return Err(Fault::Retry(format!("cannot connect to {address}: {e}"))),
            Ok(Ok(stream)) => stream,
        };
        stream.set_nodelay(true).map_err(io_fault)?;
        let (read_half, write_half) = stream.into_split();
        Ok(Link {
            reader: Replies { reader: MessageReader::new(read_half, MAX_FRAME_LEN), timeout: reply_timeout },
            writer: MessageWriter::new(write_half),
        })
    }

    /// Sends `message` and waits for the reply.
    pub async fn ask(&mut self, message: &Message) -> Result<Message, Fault> {
        self.writer.send(message).await.map_err(io_fault)?;
        self.reader.next().await
    }

    /// Says which agency this connection speaks for; returns what the
    /// server holds of it.
    pub async fn hello(&mut self, agency: u32) -> Result<Welcome, Fault> {
        match self.ask(&Message::Hello { agency }).await? {
            Message::Welcome { stored, digest, finished } => {
                Ok(Welcome { progress: Progress::new(stored, digest), finished })
            }
            other => Err(Fault::from_reply(other)),
        }
    }
}

/// A failed send: the connection is gone.
pub fn io_fault(e: io::Error) -> Fault {
    Fault::Retry(format!("connection lost: {e}"))
}
