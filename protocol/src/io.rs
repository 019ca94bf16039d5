//! Whole messages over an async byte stream.
//!
//! [`MessageReader`] keeps the bytes that arrived so far in a buffer, so a
//! short read never shows: it returns whole messages or an error.
//! [`MessageWriter`] encodes into a buffer and writes all of it, so a short
//! write never shows either. Both are cancel-safe: dropping a pending
//! `read` loses no bytes, which lets callers `select!` over it.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{Frame, FrameError};
use crate::message::{DecodeError, ErrorCode, Message};

/// Why no message could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("connection closed in the middle of a frame ({0} bytes received)")]
    Truncated(usize),
}

impl ReadError {
    /// The error code to answer the peer with, when the peer is at fault.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ReadError::Io(_) | ReadError::Truncated(_) => None,
            ReadError::Frame(FrameError::TooLarge { .. }) => Some(ErrorCode::FrameTooLarge),
            ReadError::Frame(FrameError::TooShort { .. }) => Some(ErrorCode::Malformed),
            ReadError::Decode(e) => Some(e.code()),
        }
    }
}

/// Reads whole messages from `R`.
#[derive(Debug)]
pub struct MessageReader<R> {
    inner: R,
    buffer: BytesMut,
    max_frame_len: usize,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// A reader that refuses frames over `max_frame_len` bytes.
    pub fn new(inner: R, max_frame_len: usize) -> Self {
        MessageReader { inner, buffer: BytesMut::with_capacity(4096), max_frame_len }
    }

    /// The next message, or `None` when the peer closed between two frames.
    ///
    /// A TLS peer that closes without `close_notify` (TLS's own end of
    /// stream) counts as closed like a TCP peer: between two frames our
    /// framing already knows that nothing was cut short.
    pub async fn read(&mut self) -> Result<Option<Message>, ReadError> {
        loop {
            if let Some(frame) = Frame::parse(&mut self.buffer, self.max_frame_len)? {
                return Ok(Some(Message::from_frame(frame)?));
            }
            let read = match self.inner.read_buf(&mut self.buffer).await {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                read => read?,
            };
            if read == 0 {
                return match self.buffer.len() {
                    0 => Ok(None),
                    n => Err(ReadError::Truncated(n)),
                };
            }
        }
    }

    /// The underlying stream. Bytes already buffered are not in it.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The underlying stream back; bytes already buffered are dropped.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Writes whole messages to `W`.
#[derive(Debug)]
pub struct MessageWriter<W> {
    inner: W,
    buffer: BytesMut,
}

impl<W: AsyncWrite + Unpin> MessageWriter<W> {
    pub fn new(inner: W) -> Self {
        // Grows as replies need it: most are a few bytes, and a server holds
        // one writer per connection.
        MessageWriter { inner, buffer: BytesMut::new() }
    }

    /// Queues `message`; nothing is sent before [`MessageWriter::flush`].
    pub fn queue(&mut self, message: &Message) {
        message.encode(&mut self.buffer);
    }

    /// Queues a frame encoded beforehand (see [`crate::BetBatchBuilder`]).
    pub fn queue_frame(&mut self, frame: &[u8]) {
        self.buffer.extend_from_slice(frame);
    }

    /// Bytes queued and not sent yet.
    pub fn queued(&self) -> usize {
        self.buffer.len()
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.inner.write_all(&self.buffer).await?;
        self.buffer.clear();
        self.inner.flush().await
    }

    /// Queues `message` and sends it.
    pub async fn send(&mut self, message: &Message) -> io::Result<()> {
        self.queue(message);
        self.flush().await
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The underlying stream back; anything queued and not sent is dropped.
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// Closes the write side (TCP FIN) after sending what is queued.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MAX_FRAME_LEN;

    #[tokio::test]
    async fn messages_cross_a_stream_delivered_one_byte_at_a_time() {
        let messages = vec![
            Message::Finished { bets: 4 },
            Message::Echo(bytes::Bytes::from_static(b"hello")),
            Message::NotReady { finished: 1, expected: 5 },
        ];
        let mut bytes = BytesMut::new();
        messages.iter().for_each(|m| m.encode(&mut bytes));
        let mut mock = tokio_test_stream(&bytes);
        let mut reader = MessageReader::new(&mut mock, MAX_FRAME_LEN);
        for expected in &messages {
            assert_eq!(reader.read().await.unwrap().as_ref(), Some(expected));
        }
        assert!(reader.read().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_stream_closed_mid_frame_is_an_error() {
        let mut bytes = BytesMut::new();
        Message::Finished { bets: 4 }.encode(&mut bytes);
        let mut mock = tokio_test_stream(&bytes[..7]);
        let mut reader = MessageReader::new(&mut mock, MAX_FRAME_LEN);
        assert!(matches!(reader.read().await, Err(ReadError::Truncated(7))));
    }

    /// A reader that hands out one byte per read call.
    fn tokio_test_stream(bytes: &[u8]) -> impl AsyncRead + Unpin {
        struct Trickle(std::collections::VecDeque<u8>);
        impl AsyncRead for Trickle {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                if let Some(b) = self.0.pop_front() {
                    buf.put_slice(&[b]);
                }
                std::task::Poll::Ready(Ok(()))
            }
        }
        Trickle(bytes.iter().copied().collect())
    }
}
